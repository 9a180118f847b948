"""Every job accounted for: results must not depend on how a run is cut into scan chunks.

Lazy FCFS buffers credit a job's wait and its abandonment when it leaves, possibly many chunks
after it entered; a window rebased per chunk must still see the whole wait. A quantity that moves
with the chunk length is a bug (it did: decode-buffer abandonments and ``q_d`` came out low with
short chunks before the window start stopped being clipped at each chunk's start).
"""

import jax
import numpy as np
import pytest
from helpers import ALL_CASES, two_sample_z

import jaxqueue as jq
from jaxqueue import policies, scenarios

#: One case per way of holding jobs runs by default: the FCFS prefill ring (fg-sp, on the
#: counting engine, where it costs least), the counting engine's counted prefill queues and decode
#: buffer (gate-and-route), and the per-GPU engine's decode buffer (gi-wsp). The others share
#: those mechanics (one ring type; one engine's step: Prioritize-and-Route differs from
#: Gate-and-Route by its gate's keys only) and run with ``-m slow``.
DEFAULT = {("fg-sp", "pooled"), ("gate-and-route", "pooled"), ("gi-wsp", "per-gpu")}
CASES = [case if case in DEFAULT else pytest.param(*case, marks=pytest.mark.slow)
         for case in ALL_CASES]


def check_flow_balance(run, policy, engine):
    """Integer-exact flow balance per replication and class over the statistics window, for
    each stage: jobs in = jobs out + (present at the end - present at the start)."""
    c = run.count

    def change(*names):
        return sum(run.stock(k, "end") - run.stock(k, "start") for k in names)

    np.testing.assert_array_equal(
        c("arrivals"), c("prefill_start") + c("prefill_abandon") + change("q_p"))
    np.testing.assert_array_equal(c("prefill_start"), c("prefill_done") + change("x"))
    np.testing.assert_array_equal(
        c("prefill_done"), c("decode_start") + c("decode_abandon") + change("q_d"))
    np.testing.assert_array_equal(
        c("decode_start"), c("mixed_done") + c("solo_done") + change("y_m", "y_s"))
    # Not vacuous: every stage saw traffic and jobs waited at the window's boundaries.
    for name in ("arrivals", "prefill_start", "prefill_done", "decode_start", "prefill_abandon"):
        assert c(name).sum() > 0, name
    if not policies.resolve(policy).coupled or engine == "pooled":  # coupled: no decode buffer
        assert c("decode_abandon").sum() > 0
    assert run.stock("q_p", "start").sum() > 0 and run.stock("q_p", "end").sum() > 0


@pytest.mark.parametrize("policy, engine", CASES)
def test_every_job_accounted_for_whatever_the_chunk_length(policy, engine):
    model = scenarios.load("paper-qwen8b")
    # n = 6 with 64-event chunks: a chunk spans about 3.5 model seconds while a waiting job's
    # patience averages 10 s, so most buffered jobs span several chunks. On the per-GPU engine
    # n = 6 pads to 8 GPU slots (two stay empty), a program that compiles in about half the
    # time of n = 20's 32 slots.
    system, _ = policies.build(policy, model, 6, engine=engine)
    kw = dict(reps=32, horizon=250.0, warmup=50.0)
    short = jq.simulate(jax.random.key(1), system, chunk_events=64, **kw)
    long = jq.simulate(jax.random.key(2), system, chunk_events=4096, **kw)
    # Exact accounting, across many chunk boundaries and after a warm-up, where lazily
    # discarded jobs and waits that began before the window are the easy things to get wrong.
    check_flow_balance(short, policy, engine)
    check_flow_balance(long, policy, engine)
    # Nothing moves with the chunk length.
    z = {}
    for name in short.level_names:
        z[name] = two_sample_z(short.level(name), long.level(name))
    for name in short.tally_names:
        z[name] = two_sample_z(short.rate(name), long.rate(name))
    worst = max(float(np.max(np.abs(v))) for v in z.values())
    # About 20 quantities per case: |z| < 4.5 for all of them has a false-alarm rate near 1e-4.
    assert worst < 4.5, {k: np.round(v, 2).tolist() for k, v in z.items()}


@pytest.mark.parametrize("policy", ["gate-and-route",
                                    pytest.param("fg-sp", marks=pytest.mark.slow)])
def test_sparse_counters_are_the_dense_ones(policy, monkeypatch):
    # The pooled engine's exact steps pass their counters as one index per kind of count, and
    # the waits they credit as (index, amount) entries; the dense vectors (what relaxed
    # decisions still use) must give the same integers, and the same integrals bit for bit, on
    # an eight-class instance with abandonment.
    from jaxqueue.policies.pooled import Pooled
    model = scenarios.load("dolly-8class")
    system, _ = policies.build(policy, model, 20)
    assert system.sparse_counts
    kwargs = dict(reps=4, horizon=300.0, warmup=50.0)
    sparse = jq.simulate(jax.random.key(3), system, **kwargs)
    monkeypatch.setattr(Pooled, "sparse_counts", property(lambda self: False))
    jax.clear_caches()  # the compiled step is keyed on the system, not on this switch
    dense = jq.simulate(jax.random.key(3), system, **kwargs)
    assert sparse.tallies.sum() > 1000
    np.testing.assert_array_equal(sparse.tallies, dense.tallies)
    np.testing.assert_array_equal(sparse.level_integrals, dense.level_integrals)
    monkeypatch.undo()
    jax.clear_caches()  # later tests in this worker get the sparse program again
