"""simulate_many: a stack of systems as one vmapped program equals a loop of simulate calls."""

import jax
import numpy as np
import pytest

import jaxqueue as jq
from jaxqueue import policies, scenarios, sweep

MODEL = scenarios.load("paper-qwen8b")


def test_simulate_many_equals_a_loop_of_simulate():
    # Two structures (pooled gate-and-route, per-GPU FI-WSP), points with different rates and n:
    # each group is one program, and every point is the run it would be alone.
    systems = [policies.build("gate-and-route", MODEL.replace(lambda_=lam), n)[0]
               for lam, n in (([0.5, 0.5], 20), ([0.3, 0.4], 20), ([0.45, 0.2], 12))]
    systems.insert(1, policies.build("fi-wsp", MODEL.replace(lambda_=[0.3, 0.3]), 8)[0])
    key = jax.random.key(3)
    before = sweep.compile_count()
    runs = sweep.simulate_many(key, systems, reps=3, horizon=150.0, warmup=50.0,
                               chunk_events=256)
    assert sweep.compile_count() - before <= 2  # one program per structure
    for system, many in zip(systems, runs, strict=True):
        one = jq.simulate(key, system, reps=3, horizon=150.0, warmup=50.0, chunk_events=256,
                          max_batch=3)
        np.testing.assert_array_equal(many.tallies, one.tallies)
        np.testing.assert_array_equal(many.stock_start, one.stock_start)
        np.testing.assert_array_equal(many.stock_end, one.stock_end)
        np.testing.assert_allclose(many.level_integrals, one.level_integrals, rtol=1e-6)
        np.testing.assert_array_equal(many.window, one.window)
        assert many.events == one.events and many.chunks == one.chunks
        assert many.tallies.sum() > 0
        # Usable by stats like any Run.
        n = int(system.n)
        rev = jq.stats.per_gpu(many, system.model, n)["revenue_bundled"]
        assert rev.shape == (3,) and np.all(rev > 0)


def test_stack_names_what_differs():
    a = policies.build("gate-and-route", MODEL, 20)[0]
    b = policies.build("fg-sp", MODEL, 20)[0]
    with pytest.raises(ValueError, match=r"systems\[1\] has a different structure"):
        sweep.stack([a, b])
    with pytest.raises(ValueError, match="systems is empty"):
        sweep.stack([])
    with pytest.raises(ValueError, match="reps"):
        sweep.simulate_many(jax.random.key(0), [a], reps=0, horizon=10.0)
    stacked = sweep.stack([a, a])
    assert np.shape(stacked.model.lambda_) == (2, 2) and np.shape(stacked.n) == (2,)


@pytest.mark.slow
def test_points_that_draw_their_setup_at_random_match_simulate():
    # The gated family rounds n * share to M at random per replication (its setup stream):
    # a sweep must draw exactly the M that simulate draws.
    from jaxqueue.policies import tunable

    base, params = tunable.build_family("gated", MODEL, 12)
    systems = [tunable.with_params(base, eqx_replace(params, share=s)) for s in (0.31, 0.47)]
    key = jax.random.key(5)
    runs = sweep.simulate_many(key, systems, reps=6, horizon=60.0, warmup=10.0)
    for system, many in zip(systems, runs, strict=True):
        one = jq.simulate(key, system, reps=6, horizon=60.0, warmup=10.0, max_batch=6)
        np.testing.assert_array_equal(many.tallies, one.tallies)


def eqx_replace(params, **kw):
    import dataclasses

    return dataclasses.replace(params, **{k: np.float64(v) for k, v in kw.items()})
