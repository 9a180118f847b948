"""Per-request latency: the prefill wait and the time to first token of the requests a pooled
system serves, against the exact laws of the M/M/N+M queue."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue import simulate, stats, theory
from jaxqueue.model import Model
from jaxqueue.policies.pooled import Pooled

GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def _mmnm(gate: str, reps=32, horizon=600.0):
    """An M/M/2+M queue inside the pooled engine (as in test_patience): one class, 4 arrivals/s,
    M = 2 prefill slots of rate 2/s, patience Exp(1), decode slots that never fill."""
    model = Model(lambda_=[1.0], theta=[1.0], P=[512.0], D=[1.0], alpha=0.5, beta=0.0,
                  gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0)
    system = Pooled(model=model, n=jnp.int32(4), M=jnp.int32(2), x_star=jnp.full(1, 0.5),
                    q_star=jnp.zeros(1), gate=gate, capacity=512, wait_grid=GRID)
    assert system.per_job == (gate != "fcfs")  # the count queues become rings for the waits
    return simulate(jax.random.key(7), system, reps=reps, horizon=horizon, warmup=60.0)


def test_served_probability_is_one_minus_the_abandonment():
    exact = theory.erlang_a_latency(3, 5.0, 1.5, 0.7, [0.0, 1.0])
    assert exact["served_probability"] == pytest.approx(
        1.0 - theory.erlang_a(3, 5.0, 1.5, 0.7)["abandon_probability"], rel=1e-10)
    # No waiting at all without load: the wait is 0, the TTFT the service alone.
    idle = theory.erlang_a_latency(50, 1e-6, 1.0, 1.0, [0.0, 1.0])
    np.testing.assert_allclose(idle["wait_cdf"], [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(idle["ttft_cdf"], [0.0, 1.0 - np.exp(-1.0)], atol=1e-6)


@pytest.mark.parametrize("gate", ["fcfs", "deviation"])
def test_wait_and_ttft_laws_match_erlang_a(gate):
    run = _mmnm(gate)
    exact = theory.erlang_a_latency(2, 4.0, 2.0, 1.0, GRID)
    out = stats.latency(run, GRID)
    for what in ("wait", "ttft"):
        cdf, se = out[what]["cdf"][:, 0], out[what]["se"][:, 0]
        truth = exact[f"{what}_cdf"]
        inside = (truth > 1e-3) & (truth < 1 - 1e-3)  # where the estimate has a spread
        z = (cdf[inside] - truth[inside]) / se[inside]
        assert np.max(np.abs(z)) < 4.0, (what, z)
    # Quantiles come with an interval that holds the exact one.
    q = out["ttft"]["quantiles"][0.5]
    exact_median = np.interp(0.5, exact["ttft_cdf"], GRID)
    assert q["low"][0] <= exact_median <= q["high"][0]


def test_bad_wait_grid_is_named():
    model = Model(lambda_=[1.0], theta=[1.0], P=[512.0], D=[1.0], alpha=0.5, beta=0.0,
                  gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0)
    with pytest.raises(ValueError, match="wait_grid"):
        Pooled(model=model, n=jnp.int32(4), M=jnp.int32(2), x_star=jnp.full(1, 0.5),
               q_star=jnp.zeros(1), gate="fcfs", capacity=64, wait_grid=(1.0, 0.5))


def test_decode_wait_law_matches_erlang_a():
    # The decode side as an M/M/3+M queue: prefills all but instantaneous (rate 5e5/s), mixed
    # and solo decodes at the same rate 1/s (gamma tau = 1), 2 solo slots + 1 mixed slot, 3
    # arrivals/s, patience Exp(1) in the decode buffer.
    model = Model(lambda_=[1.5], theta=[1.0], P=[1.0], D=[1000.0], alpha=0.001, beta=0.0,
                  gamma=1000.0, C=512.0, B=2, c_p=1.0, c_d=1.0)
    np.testing.assert_allclose([model.mu_m[0], model.mu_s[0]], [1.0, 1.0])
    system = Pooled(model=model, n=jnp.int32(2), M=jnp.int32(1), x_star=jnp.full(1, 0.5),
                    q_star=jnp.zeros(1), gate="fcfs", capacity=512, wait_grid=GRID)
    run = simulate(jax.random.key(8), system, reps=32, horizon=600.0, warmup=60.0)
    exact = theory.erlang_a_latency(3, 3.0, 1.0, 1.0, GRID)
    out = stats.latency(run, GRID)["decode_wait"]
    truth = exact["wait_cdf"]
    inside = (truth > 1e-3) & (truth < 1 - 1e-3)
    z = (out["cdf"][inside, 0] - truth[inside]) / out["se"][inside, 0]
    assert np.max(np.abs(z)) < 4.0, z


def test_quantile_reading_and_its_interval_ends():
    from jaxqueue.stats import _crossing

    grid = np.array([0.0, 1.0, 2.0, 4.0])
    cdf = np.array([[0.2, np.nan, 0.0], [0.6, np.nan, 0.1], [0.9, np.nan, 0.2],
                    [1.0, np.nan, 0.3]])
    # Interpolated between the grid times around the crossing; the interval's ends are grid
    # times; NaN without requests; +inf when the grid never reaches the level.
    np.testing.assert_allclose(_crossing(grid, cdf, 0.5), [0.75, np.nan, np.inf])
    np.testing.assert_allclose(_crossing(grid, cdf, 0.5, side="below"), [0.0, np.nan, np.inf])
    np.testing.assert_allclose(_crossing(grid, cdf, 0.5, side="above"), [1.0, np.nan, np.inf])
    np.testing.assert_allclose(_crossing(grid, cdf, 0.1), [0.0, np.nan, 1.0])
