"""Replayed arrivals (jaxqueue.replay): the pooled engine fed a trace's arrival times, against
the exact law of the D/M/1 queue, the trace's own counts, and the command line."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

from jaxqueue import replay, simulate, stats
from jaxqueue.cli import main
from jaxqueue.model import Model
from jaxqueue.policies.pooled import GatedParams, Pooled

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "vidur" / "processed_traces"
GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
GAP, MU = 0.6, 2.0  # one arrival every 0.6 s into one prefill slot of rate 2/s

# One class; prefill rate C / (P tau) = 2/s on M = 1 slot, no abandonment, and decodes on 192
# solo slots that never fill: the prefill queue is a D/M/1 queue.
ONE = Model(lambda_=[1.0], theta=[0.0], P=[512.0], D=[1000.0], alpha=0.5, beta=0.0,
            gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0)


def _dm1(reps=32, horizon=600.0, **kw):
    trace = replay.ArrivalTrace.make(np.arange(100) * GAP, np.zeros(100, int))
    system = Pooled(model=ONE, n=jnp.int32(4), M=jnp.int32(1), x_star=jnp.full(1, 0.25),
                    q_star=jnp.zeros(1), gate="fcfs", capacity=512, wait_grid=GRID,
                    arrivals=trace, **kw)
    return simulate(jax.random.key(3), system, reps=reps, horizon=horizon, warmup=60.0)


def test_evenly_spaced_arrivals_wait_as_in_the_d_m_1_queue():
    """D/M/1: P(W > w) = sigma exp(-mu (1 - sigma) w), sigma the root in (0, 1) of
    sigma = exp(-mu a (1 - sigma)) (the GI/M/1 queue with deterministic gaps a)."""
    run = _dm1()
    sigma = brentq(lambda s: s - math.exp(-MU * GAP * (1 - s)), 1e-9, 1 - 1e-12)
    truth = 1 - sigma * np.exp(-MU * (1 - sigma) * np.asarray(GRID))
    out = stats.latency(run, GRID)
    z = (out["wait"]["cdf"][:, 0] - truth) / out["wait"]["se"][:, 0]
    assert np.max(np.abs(z)) < 4.0, z
    # The arrivals are the trace's: each window of 540 s holds 540 / 0.6 of them, give or take
    # the one at its edge.
    counts = run.count("arrivals")[:, 0]
    assert np.all(np.abs(counts - run.window / GAP) <= 1), counts


def test_trace_cycle_rates_and_nearest_class():
    trace = replay.ArrivalTrace.make([5.0, 1.0, 3.0, 2.0], [1, 0, 0, 1], speed=2.0)
    # Sorted, from 0, halved; the period adds the mean gap (span 2 s over 3 gaps).
    np.testing.assert_allclose(trace.times, [0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(trace.gaps, [0.5, 0.5, 1.0, 2.0 / 3.0], rtol=1e-6)
    assert float(trace.period) == pytest.approx(8.0 / 3.0)
    np.testing.assert_array_equal(trace.classes, [0, 1, 0, 1])
    np.testing.assert_allclose(trace.rates(2), [2 / (8 / 3)] * 2)
    # Nearest in log lengths: (300, 1000) and (3000, 400) as in paper-qwen8b.
    cls = replay.nearest_class([250, 5000, 1000, 900], [2000, 300, 900, 400],
                               [300.0, 3000.0], [1000.0, 400.0])
    np.testing.assert_array_equal(cls, [0, 1, 0, 1])
    for times, classes, says in (([1.0], [0], "two or more"), ([1.0, 1.0], [0, 0], "all be equal"),
                                 ([0.0, np.nan], [0, 0], "finite")):
        with pytest.raises(ValueError, match=says):
            replay.ArrivalTrace.make(times, classes)
    with pytest.raises(ValueError, match="speed"):
        replay.ArrivalTrace.make([0.0, 1.0], [0, 0], speed=0.0)


def test_replay_is_refused_where_it_is_not_exact_or_not_built():
    trace = replay.ArrivalTrace.make([0.0, 1.0], [0, 3])
    with pytest.raises(ValueError, match="class 3 is not one of"):
        Pooled(model=ONE, n=jnp.int32(4), M=jnp.int32(1), x_star=jnp.full(1, 0.25),
               q_star=jnp.zeros(1), gate="fcfs", capacity=64, arrivals=trace)
    knobs = GatedParams(targets=jnp.full(1, 0.25), offset=jnp.float32(0), share=jnp.float32(0.25),
                        slack=jnp.float32(1), caps=jnp.full(1, 1.0))
    with pytest.raises(ValueError, match="not the gated family"):
        Pooled(model=ONE, n=jnp.int32(4), M=jnp.int32(1), x_star=jnp.full(1, 0.25),
               q_star=jnp.zeros(1), gate="deviation", capacity=64, params=knobs,
               arrivals=replay.ArrivalTrace.make([0.0, 1.0], [0, 0]))


def _write(path, rows, header="arrived_at,num_prefill_tokens,num_decode_tokens"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return str(path)


def test_simulate_replay_runs_and_reports_the_trace(tmp_path, capsys):
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(0.1, 400))
    long_prompt = rng.random(400) < 0.5
    rows = [(f"{t:.4f}", 3000 if p else 300, 400 if p else 1000)
            for t, p in zip(times, long_prompt, strict=True)]
    path = _write(tmp_path / "trace.csv", rows)
    base = ["simulate", "paper-qwen8b", "--gpus", "5", "--reps", "4", "--horizon", "200",
            "--warmup", "20", "--devices", "1", "--replay", path]
    main([*base, "--json"])
    out = json.loads(capsys.readouterr().out)
    r = out["replay"]
    assert r["requests"] == 400 and r["requests_per_class"] == [int((~long_prompt).sum()),
                                                                 int(long_prompt.sum())]
    np.testing.assert_allclose(r["arrival_rate_per_gpu"],
                               np.asarray(r["requests_per_class"]) / r["period_seconds"] / 5,
                               rtol=1e-6)
    # Each replication counts the trace's arrivals in its window (from its own point of the
    # cycle): about the trace's rate, far from the scenario's own 0.5 per class per GPU.
    for c, name in enumerate(("decode-heavy", "prefill-heavy")):
        arrived = out["classes"][c]["arrival_rate"]["mean"]
        assert arrived == pytest.approx(r["arrival_rate_per_gpu"][c], rel=0.1), name
    main([*base[:-2], "--replay", path, "--replay-speed", "2"])
    text = " ".join(capsys.readouterr().out.split())  # lines wrap where the file's path ends
    assert "replayed from" in text and "at 2x speed" in text
    # The control: Poisson arrivals at the replay's class rates (the same plan and rates).
    main([*base, "--replay-poisson", "--json"])
    poisson = json.loads(capsys.readouterr().out)
    assert poisson["replay"]["poisson"] and poisson["replay"]["requests_per_class"] == \
        r["requests_per_class"]
    np.testing.assert_allclose(poisson["replay"]["arrival_rate_per_gpu"],
                               r["arrival_rate_per_gpu"])
    assert poisson["lp_revenue"] == out["lp_revenue"]
    for c, name in enumerate(("decode-heavy", "prefill-heavy")):
        arrived = poisson["classes"][c]["arrival_rate"]["mean"]
        assert arrived == pytest.approx(r["arrival_rate_per_gpu"][c], rel=0.15), name
    for extra, says in ((["--policy", "fi-wsp"], "--replay is supported by the pooled"),
                        (["--replay-speed", "0"], "replay-speed")):
        with pytest.raises(SystemExit):
            main([*base, *extra])
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base[:-2], "--replay-poisson"])
    assert "--replay-poisson goes with --replay FILE" in capsys.readouterr().err
    no_times = _write(tmp_path / "lengths.csv", [(300, 1000), (3000, 400)],
                      header="num_prefill_tokens,num_decode_tokens")
    with pytest.raises(SystemExit):
        main([*base[:-2], "--replay", no_times])
    assert "no arrival-time column" in capsys.readouterr().err


@pytest.mark.slow  # the synthetic trace above runs the same path in the default suite
@pytest.mark.skipif(not (TRACES / "splitwise_conv.csv").exists(),
                    reason="the Azure conversation trace (shared data) is not on this machine")
def test_azure_conversation_trace_replays(capsys):
    main(["simulate", "paper-qwen8b", "--gpus", "20", "--reps", "4", "--horizon", "300",
          "--warmup", "50", "--devices", "1", "--replay", str(TRACES / "splitwise_conv.csv"),
          "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["replay"]["requests"] > 1000
    assert out["revenue_per_gpu"]["bundled"]["mean"] > 0


@pytest.mark.slow  # the replay's path runs by default in the CLI's simulate test
def test_capacity_replays_the_trace_at_every_size(tmp_path, capsys):
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.exponential(0.25, 300))  # about 4 requests/s
    long_prompt = rng.random(300) < 0.5
    rows = [(f"{t:.4f}", 3000 if p else 300, 400 if p else 1000)
            for t, p in zip(times, long_prompt, strict=True)]
    path = _write(tmp_path / "trace.csv", rows)
    base = ["capacity", "paper-qwen8b", "--replay", path, "--max-abandon", "0.05", "--reps", "4",
            "--horizon", "200", "--warmup", "20", "--devices", "1"]
    main([*base, "--json"])
    out = json.loads(capsys.readouterr().out)
    trace = replay.ArrivalTrace.make(times, long_prompt.astype(int))
    assert out["traffic"] == pytest.approx(300 / float(trace.period), rel=1e-5)
    assert out["replay"]["requests"] == 300
    assert out["confirmation"]["answer"]["ok"] and out["gpus"] >= 1
    # --traffic scales the trace: twice its own traffic needs at least as many GPUs.
    main([*base, "--traffic", str(2 * out["traffic"]), "--json"])
    double = json.loads(capsys.readouterr().out)
    assert double["traffic"] == pytest.approx(2 * out["traffic"], rel=1e-5)
    assert double["gpus"] >= out["gpus"]
    with pytest.raises(SystemExit):
        main(["capacity", "paper-qwen8b", "--max-abandon", "0.05"])
    assert "--traffic is required" in capsys.readouterr().err
    # The control: Poisson arrivals at the trace's rates, planned the same way.
    main([*base, "--replay-poisson", "--json"])
    poisson = json.loads(capsys.readouterr().out)
    assert poisson["replay"]["poisson"] and not out["replay"]["poisson"]
    assert poisson["traffic"] == pytest.approx(out["traffic"], rel=1e-6)
    assert poisson["confirmation"]["answer"]["ok"] and poisson["gpus"] >= 1
    with pytest.raises(SystemExit):
        main(["capacity", "paper-qwen8b", "--traffic", "5", "--replay-poisson"])
    assert "--replay-poisson goes with --replay FILE" in capsys.readouterr().err
