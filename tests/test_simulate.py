"""The simulator against exact answers, its invariants and its transform invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import z_scores

import jaxqueue as jq
from jaxqueue import fluid, policies, scenarios, theory
from jaxqueue.policies.erlang import ErlangA
from jaxqueue.policies.pooled import Pooled


def erlang(N=10, lam=9.0, mu=1.0, theta=0.5):
    return ErlangA(servers=np.int32(N), arrival_rate=np.float32(lam),
                   service_rate=np.float32(mu), patience_rate=np.float32(theta))


def test_erlang_a_matches_birth_death():
    exact = theory.erlang_a(10, 9.0, 1.0, 0.5)
    run = jq.simulate(jax.random.key(1), erlang(), reps=128, horizon=1000.0, warmup=100.0)
    abandon = run.count("abandonments")[:, 0] / run.count("arrivals")[:, 0]
    # 4 standard errors: a wrong engine (e.g. an off-by-one in the window, a biased clock)
    # moves these by tens of standard errors at this sample size.
    assert abs(z_scores(abandon, exact["abandon_probability"])) < 4
    assert abs(z_scores(run.level("queue")[:, 0], exact["mean_queue"])) < 4
    assert abs(z_scores(run.level("busy")[:, 0], exact["mean_busy"])) < 4


def small_model():
    from jaxqueue.validate import small_model
    return small_model()


def pooled(model, n, M, gate, plan=None, capacity=256):
    plan = plan or fluid.solve(model, "bundled")
    return Pooled(model=model, n=np.int32(n), M=np.int32(M), x_star=plan.x, q_star=plan.q_p,
                  gate=gate, capacity=capacity)


@pytest.mark.parametrize("gate", ["deviation", "fcfs", "priority"])
def test_invariants_on_every_event(gate):
    model = scenarios.load("paper-qwen8b")
    n, M = 20, 5
    system = pooled(model, n, M, gate, capacity=256)
    states, times, tallies = jq.trajectory(jax.random.key(3), system, 20_000)
    X, Ym, Ys, Qp = (np.asarray(a) for a in (states.X, states.Ym, states.Ys, states.Qp))
    B = int(model.B)
    for a in (X, Ym, Ys, Qp):
        assert a.min() >= 0
    assert X.sum(1).max() <= M
    assert Ym.sum(1).max() <= (B - 1) * M
    assert Ys.sum(1).max() <= B * (n - M)
    # The paper's capacity constraints were reached: the check is not vacuous.
    assert Ys.sum(1).max() == B * (n - M) and X.sum(1).max() == M
    assert np.all(np.diff(np.asarray(times)) >= 0)
    held = np.asarray(states.decode_ring.size)
    if states.prefill_ring is not None:
        held = held + np.asarray(states.prefill_ring.size)
    # Conservation: arrivals = in service + waiting (incl. not-yet-discarded) + completed + gone.
    t = np.asarray(tallies).reshape(len(times), -1, model.num_classes).sum(-1)[:, :6]
    arrivals, _, mixed, solo, p_gone, d_gone = t.T
    in_system = X.sum(1) + Ym.sum(1) + Ys.sum(1) + Qp.sum(1) + held
    np.testing.assert_array_equal(arrivals, in_system + mixed + solo + p_gone + d_gone)
    # Work conservation of the gate: an idle prefill slot never coexists with a per-class queue.
    assert not np.any((X.sum(1) < M) & (Qp.sum(1) > 0))


def _rollout_case():
    return pooled(small_model(), 2, 1, "fcfs", capacity=256), jax.random.key(7), dict(
        steps=6, window=(0.0, 50.0))


@pytest.mark.slow  # op by op, every primitive compiles its own program: 20 s for six steps
def test_jit_matches_eager():
    system, key, kw = _rollout_case()
    batched = jq.rollout(key, system, reps=3, **kw)
    with jax.disable_jit():
        eager = jq.rollout(key, system, reps=3, **kw)
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(eager), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b)  # the same events, counts and decisions
        else:  # XLA may fuse float arithmetic differently from op-by-op execution
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_vmap_matches_loop():
    system, key, kw = _rollout_case()
    batched = jq.rollout(key, system, reps=3, **kw)
    for r in range(3):
        one = jq.rollout(key, system, rep_ids=jnp.asarray([r], jnp.uint32), **kw)
        for a, b in zip(jax.tree.leaves(batched.summary), jax.tree.leaves(one.summary),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a)[r], np.asarray(b)[0])
        np.testing.assert_array_equal(np.asarray(batched.time)[r], np.asarray(one.time)[0])


def test_replication_independent_of_replication_count():
    system = erlang()
    few = jq.simulate(jax.random.key(2), system, reps=3, horizon=50.0, warmup=5.0)
    many = jq.simulate(jax.random.key(2), system, reps=8, horizon=50.0, warmup=5.0)
    np.testing.assert_array_equal(few.tallies, many.tallies[:3])
    np.testing.assert_array_equal(few.level_integrals, many.level_integrals[:3])


def test_compiled_once_across_parameter_changes():
    model = scenarios.load("paper-qwen8b")
    plan = fluid.solve(model, "bundled")
    system, _ = policies.build("gate-and-route", model, 40, plan=plan, capacity=512)
    jq.simulate(jax.random.key(0), system, reps=4, horizon=5.0)
    before = jq.kernel.compile_count()
    other = model.replace(lambda_=(0.3, 0.7), gamma=40.0, c_p=0.3, B=8, C=128)
    for m, n in ((other, 50), (model, 45)):
        s, _ = policies.build("gate-and-route", m, n, capacity=512)
        jq.simulate(jax.random.key(1), s, reps=4, horizon=5.0)
    assert jq.kernel.compile_count() == before


@pytest.mark.parametrize("servers, events", [
    (2, 1e6),  # a slow system: the clock reaches t = 1.3e5 in a million events
    pytest.param(20, 1e7, marks=pytest.mark.slow),  # the same horizon in ten million events
])
def test_float32_clock_agrees_with_float64_far_from_zero(servers, events):
    # Two replications reaching t = 1.3e5: a float32 clock summed naively near t = 1e5 resolves
    # only ~0.008 s and drifts; chunked accumulation must not.
    system = erlang(N=servers, lam=float(servers), mu=1.0, theta=0.5)
    horizon = 130_000.0
    r32 = jq.simulate(jax.random.key(4), system, reps=2, horizon=horizon, warmup=1000.0,
                       chunk_events=4096)
    with jax.enable_x64(True):
        r64 = jq.simulate(jax.random.key(4), system, reps=2, horizon=horizon, warmup=1000.0,
                           chunk_events=4096, clock_dtype=jnp.float64)
    assert r32.events > 0.9 * events
    # The float32 and float64 runs take the same path (same events, same choices); only an event
    # within float32 resolution of the horizon may fall on the other side of it ...
    assert np.abs(r32.tallies - r64.tallies).max() <= 1
    # ... and their time integrals agree to float32 resolution of one chunk.
    np.testing.assert_allclose(r32.level_integrals, r64.level_integrals, rtol=2e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="reps"):
        jq.simulate(jax.random.key(0), erlang(), reps=0, horizon=1.0)
    with pytest.raises(ValueError, match="warmup"):
        jq.simulate(jax.random.key(0), erlang(), reps=1, horizon=1.0, warmup=2.0)
    with pytest.raises(ValueError, match="horizon"):
        jq.simulate(jax.random.key(0), erlang(), reps=1, horizon=float("nan"))
    with pytest.raises(ValueError, match="policy"):
        policies.build("no-such", scenarios.load("paper-qwen8b"), 5)


def test_overflow_of_a_fixed_capacity_is_an_error_not_a_silent_clip():
    model = scenarios.load("paper-qwen8b")
    system = pooled(model, 200, 1, "fcfs", capacity=256)  # one prefill slot: the queue explodes
    # A capacity the user fixed is not grown: the error says what to use instead.
    with pytest.raises(jq.SimulationError, match="capacity of 256 .* use 1,024 or more"):
        jq.simulate(jax.random.key(0), system, reps=2, horizon=50.0, grow_buffers=False)


@pytest.mark.parametrize("policy", [
    "gate-and-route",
    "prioritize-and-route",
    # ~20 s of CPU, all but ~1 s compiling and simulating (its 12,474-state chain); the FCFS
    # rings under load are checked in the default suite by tests/test_exact_fcfs.py.
    pytest.param("fg-sp", marks=pytest.mark.slow),
])
def test_small_system_matches_exact_generator(policy):
    from jaxqueue.validate import small_system_check

    out = small_system_check(policy, reps=256, horizon=1500.0, warmup=100.0, seed=11)
    # The exact chain is truncated at 4 waiting jobs per buffer; its lost mass must be far below
    # what the comparison can resolve.
    assert out["truncation_mass"] < 1e-3
    worst = max(abs(r["z"]) for r in out["checks"])
    assert worst < 4.0, [(r["quantity"], r["class"], r["z"]) for r in out["checks"]]


@pytest.mark.slow
def test_gate_and_route_revenue_rises_towards_the_lp_bound():
    # Theorem 4.1: R^n -> R* as n grows (no rate). Measured (2026-11): gap 3.3% at n = 50 and
    # 2.5% at n = 500, so the difference is about 2.4 revenue units, many standard errors here.
    from jaxqueue import stats

    model = scenarios.load("paper-qwen8b")
    revenue = {}
    for n in (50, 500):
        system, plan = policies.build("gate-and-route", model, n)
        run = jq.simulate(jax.random.key(5), system, reps=16, horizon=1500.0, warmup=500.0)
        revenue[n] = stats.per_gpu(run, model, n)["revenue_bundled"]
    lo, hi = revenue[50], revenue[500]
    se = np.sqrt(lo.var(ddof=1) / lo.size + hi.var(ddof=1) / hi.size)
    assert hi.mean() - lo.mean() > 4 * se
    assert hi.mean() < plan.revenue  # the LP value bounds the policy
    assert (plan.revenue - hi.mean()) / plan.revenue < 0.04


def test_checkpoint_resumes_to_the_uninterrupted_result(tmp_path):
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build("gate-and-route", model, 10)
    kw = dict(reps=4, horizon=60.0, warmup=10.0, chunk_events=256)
    whole = jq.simulate(jax.random.key(12), system, **kw)
    path = tmp_path / "run.npz"
    # Stop after 3 chunks (as a kill would), then resume from the file to the end.
    part = jq.simulate(jax.random.key(12), system, checkpoint=path, max_chunks=3, **kw)
    assert part.interrupted and path.exists() and part.resumed == 0
    said = []
    resumed = jq.simulate(jax.random.key(12), system, checkpoint=path, notify=said.append, **kw)
    assert not resumed.interrupted
    np.testing.assert_array_equal(whole.tallies, resumed.tallies)
    np.testing.assert_allclose(whole.level_integrals, resumed.level_integrals, rtol=1e-12)
    assert resumed.events == whole.events
    # The resumed run says so, and how much it found done; the finished run marks its file.
    done = float(np.mean(part.time)) / kw["horizon"]
    assert resumed.resumed == pytest.approx(done, rel=1e-9) and 0 < done < 1
    assert said[0].startswith(f"resumed from checkpoint {path}: {100 * done:.0f}%")
    assert "marked finished" in said[-1]
    again = jq.simulate(jax.random.key(12), system, checkpoint=path, notify=said.append, **kw)
    assert again.resumed == 1.0 and "finished: results read from it" in said[-1]
    np.testing.assert_array_equal(again.tallies, whole.tallies)
    # A checkpoint of another run is refused, not silently mixed in.
    other, _ = policies.build("gate-and-route", model, 11)
    with pytest.raises(jq.SimulationError, match="different run"):
        jq.simulate(jax.random.key(12), other, checkpoint=path, **kw)


def test_a_checkpoint_goes_on_in_its_own_batches_when_the_default_batch_changed(tmp_path):
    # A run checkpointed in batches of 4 (another version's default) resumes under today's
    # default batch (all 8 at once here) in its own batches, to the uninterrupted result; a
    # batch the caller sets is part of the run, and another one is refused.
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build("gate-and-route", model, 10)
    kw = dict(reps=8, horizon=40.0, warmup=10.0, chunk_events=256)
    whole = jq.simulate(jax.random.key(3), system, max_batch=4, **kw)
    path = tmp_path / "run.npz"
    part = jq.simulate(jax.random.key(3), system, checkpoint=path, max_batch=4, max_chunks=2,
                       **kw)
    assert part.interrupted
    with pytest.raises(jq.SimulationError, match="different run"):
        jq.simulate(jax.random.key(3), system, checkpoint=path, max_batch=8, **kw)
    resumed = jq.simulate(jax.random.key(3), system, checkpoint=path, **kw)
    assert not resumed.interrupted and resumed.resumed > 0
    np.testing.assert_array_equal(whole.tallies, resumed.tallies)
    np.testing.assert_allclose(whole.level_integrals, resumed.level_integrals, rtol=1e-12)


def test_a_checkpoint_goes_on_in_its_own_chunks_when_the_default_chunk_changed(tmp_path):
    # A run checkpointed in chunks of 1,024 steps (another version's default) resumes under
    # today's default chunk in its own chunks, to the uninterrupted result; a chunk length the
    # caller sets is part of the run, and another one is refused.
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build("gate-and-route", model, 10)
    kw = dict(reps=4, horizon=400.0, warmup=50.0)
    whole = jq.simulate(jax.random.key(5), system, chunk_events=1024, **kw)
    path = tmp_path / "run.npz"
    part = jq.simulate(jax.random.key(5), system, checkpoint=path, chunk_events=1024,
                       max_chunks=2, **kw)
    assert part.interrupted
    with pytest.raises(jq.SimulationError, match="different run"):
        jq.simulate(jax.random.key(5), system, checkpoint=path, chunk_events=2048, **kw)
    resumed = jq.simulate(jax.random.key(5), system, checkpoint=path, **kw)
    assert not resumed.interrupted and resumed.resumed > 0 and resumed.chunk_events == 1024
    np.testing.assert_array_equal(whole.tallies, resumed.tallies)
    np.testing.assert_allclose(whole.level_integrals, resumed.level_integrals, rtol=1e-12)


def test_the_default_chunk_follows_the_replications_a_device_runs_at_once():
    # A few replications get long chunks, a CPU device's full batch 8,192 steps; the run says
    # which it used, and its result is the same path as at another length (up to float32
    # rounding of the clock, which a run this short does not meet).
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build("gate-and-route", model, 10)
    kw = dict(reps=3, horizon=60.0, warmup=10.0)
    run = jq.simulate(jax.random.key(6), system, **kw)
    assert run.chunk_events == jq.driver.chunk_events_for(3) == jq.driver.CHUNK_BOUNDS[1]
    short = jq.simulate(jax.random.key(6), system, chunk_events=256, **kw)
    assert short.chunk_events == 256
    np.testing.assert_array_equal(run.tallies, short.tallies)
    np.testing.assert_allclose(run.level_integrals, short.level_integrals, rtol=1e-4)
    assert jq.driver.chunk_events_for(jq.driver.CPU_BATCH_PER_DEVICE) == 8192
    assert jq.driver.chunk_events_for(10**6) == jq.driver.CHUNK_BOUNDS[0]
    assert jq.driver.default_chunks()[0] == 1024 and jq.driver.default_chunks()[-1] == 32768
