"""Per-request latency: the prefill wait, the time to first token, the decode buffer's wait, the
end-to-end latency and the time per output token of the requests a pooled system serves,
against the exact laws of the M/M/N+M queue (and of ordered hunting, Erlang B, for the side a
decode runs on)."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue import simulate, stats, theory
from jaxqueue.driver import BufferOverflowError, SimulationWarning
from jaxqueue.kernel import Event
from jaxqueue.model import Model
from jaxqueue.policies.pooled import Pooled
from jaxqueue.service import Service

GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def _z(cdf, se, truth):
    """The z-scores where the exact distribution function has a spread."""
    inside = (truth > 1e-3) & (truth < 1 - 1e-3)
    return (cdf[inside] - truth[inside]) / se[inside]


def _plus_exponential(times, cdf_of, rate, step=1e-2):
    """P(L + S <= t) at ``times`` for S ~ Exp(rate) independent of L, whose distribution
    function ``cdf_of`` is given on a fine grid: G(t) = int_0^t F(u) rate e^{-rate (t - u)} du,
    by the trapezoid rule (error O(step^2), far below the tests' standard errors)."""
    fine = np.arange(0.0, max(times) + step / 2, step)
    F = cdf_of(fine)
    G = np.zeros_like(fine)
    d = math.exp(-rate * step)
    for k in range(1, fine.size):  # G' = rate (F - G), exact over each step where F is linear
        a, slope = F[k - 1], (F[k] - F[k - 1]) / step
        G[k] = G[k - 1] * d + a * (1 - d) + slope * (step - (1 - d) / rate)
    return np.interp(times, fine, G)


def _mmnm(gate: str, reps=32, horizon=600.0):
    """An M/M/2+M queue inside the pooled engine (as in test_patience): one class, 4 arrivals/s,
    M = 2 prefill slots of rate 2/s, patience Exp(1), then a decode of rate 1/s on a solo slot
    (128 of them: they never fill, and no decode waits)."""
    model = Model(lambda_=[1.0], theta=[1.0], P=[512.0], D=[1000.0], alpha=0.5, beta=0.0,
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
def test_wait_ttft_and_e2e_laws_match_erlang_a(gate):
    run = _mmnm(gate)
    exact = theory.erlang_a_latency(2, 4.0, 2.0, 1.0, GRID)
    out = stats.latency(run, GRID)
    # No decode waits: the end-to-end latency is the TTFT plus an Exp(1) decode.
    exact["e2e_cdf"] = _plus_exponential(
        GRID, lambda t: theory.erlang_a_latency(2, 4.0, 2.0, 1.0, t)["ttft_cdf"], 1.0)
    for what in ("wait", "ttft", "e2e"):
        z = _z(out[what]["cdf"][:, 0], out[what]["se"][:, 0], exact[f"{what}_cdf"])
        assert np.max(np.abs(z)) < 4.0, (what, z)
    # Every request that started a prefill was served, and decodes at once on a solo slot.
    decodes = run.count("decode_start")[run.collected].sum()
    assert decodes == run.count("decode_start_solo")[run.collected].sum()
    assert abs(decodes / out["started"][0] - 1) < 1e-3
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
    out = stats.latency(run, GRID)
    z = _z(out["decode_wait"]["cdf"][:, 0], out["decode_wait"]["se"][:, 0], exact["wait_cdf"])
    assert np.max(np.abs(z)) < 4.0, z
    # The end-to-end latency is the decode buffer's wait plus the decode (the prefill's 2
    # microseconds aside): the queue's wait plus its service, Erlang-A's "TTFT" law. The
    # arrival time travels through the prefill table and the decode buffer.
    z = _z(out["e2e"]["cdf"][:, 0], out["e2e"]["se"][:, 0], exact["ttft_cdf"])
    assert np.max(np.abs(z)) < 4.0, z


def _erlang_b(servers: int, load: float) -> float:
    """The blocking probability of the M/M/N/N queue (Erlang B), by its recursion."""
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def _coxian_cdf(law, mean: float, times) -> np.ndarray:
    """The distribution function of a one-class Coxian shape ``law`` scaled to ``mean``, from
    its phase-type generator (start in phase 1; phase k ends at rate r_k / mean, then continues
    to k + 1 with probability p_k)."""
    from scipy.linalg import expm

    r = np.asarray(law.rates, np.float64)[0] / mean
    p = np.asarray(law.cont, np.float64)[0]
    T = np.diag(-r) + np.diag((r * p)[:-1], 1)
    return np.array([1.0 - expm(T * t)[0].sum() for t in times])


# Each decode law compiles its own program: the exponential one by default, the phase-type
# laws with -m slow.
@pytest.mark.parametrize("decode", [
    None, pytest.param({"law": "erlang", "phases": 3}, marks=pytest.mark.slow),
    pytest.param({"law": "fit", "cv": 2.0}, marks=pytest.mark.slow)])
def test_decode_side_and_tpot_follow_ordered_hunting(decode):
    # Prefills all but instantaneous, 2 decodes/s, 4 solo slots of mean time 1 s tried first
    # (they form an Erlang loss system: ordered hunting), 6 mixed slots of mean time 2 s that
    # take the overflow and never fill. A decode runs on a mixed GPU with the probability
    # Erlang B(4, 2) (PASTA; insensitive to the decode law), at 2 ms per token, else at 1 ms;
    # its end-to-end latency is a decode time of mean 1 s or 2 s, whose law the counter draws
    # afresh (a phase-type one from uniforms it derives).
    model = Model(lambda_=[2.0 / 3.0], theta=[1.0], P=[1.0], D=[1000.0], alpha=0.002,
                  beta=0.0, gamma=1000.0, C=512.0, B=4, c_p=1.0, c_d=1.0)
    if decode is not None:
        model = model.replace(service=Service.make(1, decode=decode))
    np.testing.assert_allclose([model.mu_m[0], model.mu_s[0]], [0.5, 1.0])
    system = Pooled(model=model, n=jnp.int32(3), M=jnp.int32(2), x_star=jnp.full(1, 0.5),
                    q_star=jnp.zeros(1), gate="deviation", capacity=64, wait_grid=GRID)
    run = simulate(jax.random.key(9), system, reps=32, horizon=600.0, warmup=60.0)
    out = stats.latency(run, GRID, per_token=stats.per_token_times(model))
    mixed = _erlang_b(4, 2.0)
    t = out["tpot"]
    np.testing.assert_allclose(t["times"], [1e-3, 2e-3])
    z = (1 - t["cdf"][0, 0] - mixed) / t["se"][0, 0]
    assert abs(z) < 4.0, z
    # The quantiles are atoms: p50 at 1 ms, p99 at 2 ms (both far from the level), intervals
    # included.
    for q, atom in ((0.5, 1e-3), (0.99, 2e-3)):
        got = t["quantiles"][q]
        np.testing.assert_allclose([got["value"][0], got["low"][0], got["high"][0]], [atom] * 3)
    grid = np.asarray(GRID)
    if decode is None:
        truth = 1 - (1 - mixed) * np.exp(-grid) - mixed * np.exp(-0.5 * grid)
    else:
        law = model.service.decode
        truth = (1 - mixed) * _coxian_cdf(law, 1.0, grid) + mixed * _coxian_cdf(law, 2.0, grid)
    z = _z(out["e2e"]["cdf"][:, 0], out["e2e"]["se"][:, 0], truth)
    assert np.max(np.abs(z)) < 4.0, z


@pytest.mark.parametrize("gate", ["fcfs", pytest.param("priority", marks=pytest.mark.slow)])
def test_end_to_end_counters_change_no_path(gate):
    # The prefill table and the origin column change nothing the chain does: every other
    # counter and integral is the same, bit for bit, with and without them.
    model = Model(lambda_=[0.6, 0.5], theta=[0.5, 1.0], P=[300.0, 900.0], D=[40.0, 20.0],
                  alpha=0.02, beta=1e-4, gamma=40.0, C=256.0, B=3, c_p=1.0, c_d=1.0)
    base = Pooled(model=model, n=jnp.int32(4), M=jnp.int32(2), x_star=jnp.full(2, 0.25),
                  q_star=jnp.zeros(2), gate=gate, capacity=64, wait_grid=GRID,
                  end_to_end=False)
    runs = [simulate(jax.random.key(3), s, reps=4, horizon=200.0, warmup=20.0)
            for s in (base, base.__class__(**{**vars(base), "end_to_end": True}))]
    old, new = runs
    assert "e2e_le_0" not in old.tally_names and "e2e_le_0" in new.tally_names
    assert new.tally_names[:len(old.tally_names)] == old.tally_names
    np.testing.assert_array_equal(new.tallies[:, :old.tallies.shape[1]], old.tallies)
    np.testing.assert_array_equal(new.level_integrals, old.level_integrals)
    # Every decode started is counted once by the end-to-end counters' last grid time
    # or beyond it, and on one side.
    assert np.all(new.count(f"e2e_le_{len(GRID) - 1}") <= new.count("decode_start"))
    assert np.all(new.count("decode_start_solo") <= new.count("decode_start"))


def _three_slots(capacity):
    """3 prefill slots with a table (and rings) of ``capacity``: with 2, the table of one
    class's prefills in service can overflow while the rings do not."""
    model = Model(lambda_=[1.0], theta=[1.0], P=[512.0], D=[1000.0], alpha=0.5, beta=0.0,
                  gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0)
    return Pooled(model=model, n=jnp.int32(4), M=jnp.int32(3), x_star=jnp.full(1, 0.75),
                  q_star=jnp.zeros(1), gate="deviation", capacity=capacity, wait_grid=GRID)


def test_prefill_table_overflow_is_never_silent():
    # A fixed capacity that overflows is an error (a grown one: the slow test below).
    system = _three_slots

    # One step of a class whose table is full (2 prefills, capacity 2) admitting a third: the
    # write is dropped and the state says so, while no ring overflowed.
    small = system(2)
    state = eqx.tree_at(lambda s: s.X, small.init(), jnp.array([2], jnp.int32))
    arrival = Event(index=jnp.int32(0), hot=jnp.zeros(5, jnp.int32).at[0].set(1))
    # Jitted: op by op, the one step took 6 s.
    after, _ = eqx.filter_jit(small.fire)(state, arrival, jnp.float32(1.0),
                                          jnp.full(2, 0.5, jnp.float32),
                                          (jnp.float32(0.0), jnp.float32(10.0)))
    assert int(after.X[0]) == 3 and bool(after.origins_full)
    assert not bool(after.decode_ring.overflow | jnp.any(after.class_rings.overflow))
    assert bool(small.overflow(after))
    with pytest.raises(BufferOverflowError, match="prefills in service"):
        simulate(jax.random.key(4), system(2), reps=2, horizon=100.0, warmup=10.0,
                 grow_buffers=False)


@pytest.mark.slow
def test_a_prefill_table_that_overflows_grows_and_gives_the_large_table_result():
    system = _three_slots

    with pytest.warns(SimulationWarning, match="rerunning them with buffers"):
        grown = simulate(jax.random.key(4), system(2), reps=2, horizon=100.0, warmup=10.0)
    ample = simulate(jax.random.key(4), system(64), reps=2, horizon=100.0, warmup=10.0)
    assert grown.regrown >= 1
    np.testing.assert_array_equal(grown.tallies, ample.tallies)


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


def test_goodput_matches_erlang_a():
    """The share of arrivals whose time to first token is at most s is P(served) F(s), with F
    the TTFT's law among the requests served; the goodput is that share of the arrival rate."""
    run = _mmnm("deviation")
    exact = theory.erlang_a_latency(2, 4.0, 2.0, 1.0, [0.5, 1.0, 2.0])
    truth = exact["served_probability"] * np.asarray(exact["ttft_cdf"])
    for k, s in enumerate((0.5, 1.0, 2.0)):
        out = stats.goodput(run, GRID, {"ttft": s, "wait": s}, gpus=4)
        share = out["ttft"]["share"]
        z = (share["mean"][0] - truth[k]) / (share["ci95"][0] / 1.96)
        assert abs(z) < 4.0, (s, share, truth[k])
        assert share["mean"][-1] == share["mean"][0]  # one class: "all" is that class
        rate = out["ttft"]["per_gpu_per_second"]
        z = (rate["mean"][0] - truth[k] * 4.0 / 4) / (rate["ci95"][0] / 1.96)
        assert abs(z) < 4.0, (s, rate)
        # The wait is part of the TTFT: more requests meet the same bound on it.
        assert out["wait"]["share"]["mean"][0] > share["mean"][0]
    with pytest.raises(ValueError, match="not one of the run's grid times"):
        stats.goodput(run, GRID, {"ttft": 0.6}, gpus=4)
    with pytest.raises(ValueError, match="must be one of"):
        stats.goodput(run, GRID, {"latency": 1.0}, gpus=4)


@pytest.mark.parametrize("table", [{"law": "erlang", "phases": 2}, {"law": "fit", "cv": 2.0}])
def test_ttft_counters_under_a_phase_type_prefill_follow_its_law(table):
    # Eight prefill slots of mean rate 2/s and one arrival a second (Erlang B: a wait with
    # probability 6e-8): the time to first token is the prefill time, whose law is the
    # Coxian's. The counters draw it from the law; the exact distribution function is the
    # matrix exponential of its phases (no sampling code shared).
    model = Model(lambda_=[0.125], theta=[1.0], P=[512.0], D=[1000.0], alpha=0.5, beta=0.0,
                  gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0,
                  service=Service.make(1, prefill=table))
    system = Pooled(model=model, n=jnp.int32(8), M=jnp.int32(8), x_star=jnp.full(1, 1.0),
                    q_star=jnp.zeros(1), gate="fcfs", capacity=64, wait_grid=GRID,
                    end_to_end=False)
    run = simulate(jax.random.key(11), system, reps=16, horizon=400.0, warmup=20.0)
    out = stats.latency(run, GRID)
    assert "e2e" not in out and out["started"][0] > 5000
    np.testing.assert_array_equal(out["wait"]["cdf"][:, 0], 1.0)  # nobody waits
    exact = _coxian_cdf(model.service.prefill, 0.5, GRID)  # mean 1 / mu_p
    z = _z(out["ttft"]["cdf"][:, 0], out["ttft"]["se"][:, 0], exact)
    assert np.max(np.abs(z)) < 4.0, z
    # The test can fail: the exponential law of the same mean is far off.
    z_exp = _z(out["ttft"]["cdf"][:, 0], out["ttft"]["se"][:, 0], 1 - np.exp(-2.0 * np.array(GRID)))
    assert np.max(np.abs(z_exp)) > 8.0, z_exp
    # The end-to-end counters need an exponential prefill: refused with a clear error.
    with pytest.raises(ValueError, match="end-to-end latency counters"):
        dataclasses.replace(system, end_to_end=True)
