"""The pure kernel: jit/vmap over parameters, the gradient contract, dtypes, revenue."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import z_scores

import jaxqueue as jq
from jaxqueue import policies, scenarios
from jaxqueue.decisions import NotDifferentiableError

MODEL = scenarios.load("paper-qwen8b")


def with_lambda(system, lam):
    return eqx.tree_at(lambda s: s.model, system, system.model.replace(lambda_=lam))


def test_rollout_jits_and_vmaps_over_arrival_rates():
    system, _ = policies.build("gate-and-route", MODEL, 20)
    key = jax.random.key(0)
    lams = jnp.asarray([[0.3, 0.3], [0.5, 0.5], [0.7, 0.4]])

    @jax.jit
    @jax.vmap
    def revenue(lam):
        out = jq.rollout(key, with_lambda(system, lam), steps=3072, reps=4)
        return out.summary.revenue.bundled_integral, out.summary.counts

    rev, counts = revenue(lams)
    assert rev.shape == (3, 4) and np.all(np.asarray(rev) > 0)
    for k in range(3):  # the same as one call per parameter value
        one = jq.rollout(key, with_lambda(system, lams[k]), steps=3072, reps=4)
        np.testing.assert_array_equal(np.asarray(counts[k]), np.asarray(one.summary.counts))
        np.testing.assert_allclose(np.asarray(rev[k]),
                                   np.asarray(one.summary.revenue.bundled_integral), rtol=1e-5)
    # More arrivals, more arrival events in the same number of steps.
    arrivals = np.asarray(counts)[:, :, :2].sum(-1).mean(-1)
    assert arrivals[1] > arrivals[0]


@pytest.mark.parametrize("what", ["lambda", "x_star"])
def test_gradients_of_the_exact_engine_raise(what):
    system, _ = policies.build("gate-and-route", MODEL, 20)
    key = jax.random.key(1)

    def objective(p):
        s = (with_lambda(system, p) if what == "lambda"
             else eqx.tree_at(lambda s: s.x_star, system, p))
        return jnp.sum(jq.rollout(key, s, steps=200, reps=2).summary.integrals)

    p = jnp.asarray([0.5, 0.5]) if what == "lambda" else jnp.asarray(system.x_star)
    with pytest.raises(NotDifferentiableError, match="not differentiable"):
        jax.grad(objective)(p)
    with pytest.raises(NotDifferentiableError):
        jax.jvp(objective, (p,), (jnp.ones_like(p),))
    assert np.isfinite(float(objective(p)))  # without differentiation it just runs


def test_x64_runs_the_step_in_float64():
    system, _ = policies.build("fg-sp", MODEL, 10)  # a ring: its times follow the dtype too
    with jax.enable_x64(True):
        out = jq.rollout(jax.random.key(2), system, steps=512, reps=2)
        assert out.summary.integrals.dtype == jnp.float64
        assert out.state.decode_ring.data.dtype == jnp.float64
        assert system.rates(system.init()).dtype == jnp.float64
    out32 = jq.rollout(jax.random.key(2), system, steps=512, reps=2)
    assert out32.summary.integrals.dtype == jnp.float32
    assert out32.state.decode_ring.data.dtype == jnp.float32


def test_counted_and_integrated_revenue_agree():
    # Two estimators of the same long-run revenue on the same paths over a fixed window: the
    # mean of their difference per replication is zero (completions minus the integral of the
    # completion rate is a martingale). For decode completions (bundled pricing) the integral
    # has the smaller variance; for prefill completions it need not (measured: it has not).
    system, plan = policies.build("gate-and-route", MODEL, 20)
    out = jq.rollout(jax.random.key(3), system, steps=90_000, reps=48, window=(100.0, 1100.0))
    assert np.all(np.asarray(out.done))
    r = out.summary.revenue
    for pricing in ("bundled", "separate"):
        counted = np.asarray(getattr(r, f"{pricing}_counted"), np.float64) / 1000.0 / 20
        integral = np.asarray(getattr(r, f"{pricing}_integral"), np.float64) / 1000.0 / 20
        assert abs(z_scores(counted - integral, 0.0)) < 4
        if pricing == "bundled":
            assert integral.var() < counted.var()
        assert 0.9 * plan.revenue < integral.mean() < 1.01 * plan.revenue


def test_rollout_continues_a_run():
    # Two rollouts of 384 steps, the second from the first's state with the window moved back
    # to the first's start, are the two chunks of a driver run stopped after two chunks.
    system, _ = policies.build("fg-sp", MODEL, 10)
    key = jax.random.key(4)
    first = jq.rollout(key, system, steps=384, reps=3, close=False)
    second = jq.rollout(key, system, steps=384, reps=3, state=first.state,
                        first_step=np.asarray(first.steps), window=(-first.time, jnp.inf))
    run = jq.simulate(key, system, reps=3, chunk_events=384, max_chunks=2, horizon=1e6)
    np.testing.assert_array_equal(
        np.asarray(first.summary.counts) + np.asarray(second.summary.counts), run.tallies)
    np.testing.assert_array_equal(np.asarray(second.summary.stock_end), run.stock_end)
    np.testing.assert_allclose(
        np.asarray(first.summary.integrals) + np.asarray(second.summary.integrals),
        run.level_integrals, rtol=1e-5)


def test_bad_kernel_arguments_raise():
    system, _ = policies.build("gate-and-route", MODEL, 5)
    with pytest.raises(ValueError, match="steps"):
        jq.rollout(jax.random.key(0), system, steps=0, reps=2)
    with pytest.raises(ValueError, match="exactly one of reps"):
        jq.rollout(jax.random.key(0), system, steps=10)


def test_threefry_written_out_is_the_primitive():
    # The step hashes its counters with rng.threefry2x32 (plain integer arithmetic, fused by
    # XLA); it must be jax's Threefry-2x32 bit for bit, so paths and streams are unchanged.
    from jax.extend.random import threefry2x32_p

    from jaxqueue import rng

    words = np.random.default_rng(0).integers(0, 2**32, size=(4, 4096), dtype=np.uint64)
    k0, k1, x0, x1 = (jnp.asarray(w.astype(np.uint32)) for w in words)
    want = threefry2x32_p.bind(k0, k1, x0, x1)
    got = jax.jit(rng.threefry2x32)(k0, k1, x0, x1)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_step_positions_past_32_bits_get_their_own_words():
    # A step's counter is its position in the replication's stream: (low word, j + 256 x high
    # word). Below 2^32 steps it is (position, j); the carry out of the low word moves to the
    # high one, so position 2^32 + s is neither position s nor a repeat of any other.
    from jaxqueue import rng

    words = jnp.asarray([[12345, 999], [678, 4242]], jnp.uint32)  # (2, R): two replications
    lo, hi = rng.split_position(np.asarray([2**32 - 2, 5], np.int64))
    assert np.asarray(hi).tolist() == [0, 0] and np.asarray(lo).tolist() == [2**32 - 2, 5]
    block = np.asarray(rng.block_words(words, 0, 4, 3, lo, hi))  # (W, N, R)
    for r, start in ((0, 2**32 - 2), (1, 5)):
        for s in range(4):
            p = start + s
            low, high = rng.split_position(np.asarray(p, np.int64))
            one = np.asarray(rng.step_bits(words[:, r], 0, 3, low, high))
            np.testing.assert_array_equal(block[:, s, r], one)
            if p < 2**32:  # the plain counter (p, j)
                y = rng.threefry2x32(words[0, r], words[1, r], jnp.uint32(p), jnp.uint32(0))
                np.testing.assert_array_equal(one[:2], np.asarray(y))
    # Position 2^32 (step 2 of replication 0) has high word 1: other words than position 0.
    np.testing.assert_array_equal(
        np.asarray(rng.step_bits(words[:, 0], 0, 3, 0, 1)), block[:, 2, 0])
    assert not np.array_equal(np.asarray(rng.step_bits(words[:, 0], 0, 3)), block[:, 2, 0])
    with pytest.raises(ValueError, match="first_step"):
        rng.split_position(np.asarray([-1]))


@pytest.mark.parametrize("policy, gpus", [("fg-sp", 8), ("fi-wsp", 8)])
def test_a_path_does_not_depend_on_the_chunk_length(policy, gpus):
    # Each replication continues its own stream from the steps it took, so cutting a run into
    # chunks of 128 or 1,000 steps gives the same path. With a float64 clock bit for bit: with
    # float32, each chunk restarts its clock, so an event within rounding of the warm-up's end
    # or the horizon can fall on either side of it.
    system, _ = policies.build(policy, MODEL, gpus)
    with jax.enable_x64(True):
        runs = [jq.simulate(jax.random.key(5), system, reps=3, horizon=150.0, warmup=40.0,
                            chunk_events=c) for c in (128, 1000)]
    assert runs[0].chunks > 3 * runs[1].chunks
    np.testing.assert_array_equal(runs[0].tallies, runs[1].tallies)
    np.testing.assert_array_equal(runs[0].stock_end, runs[1].stock_end)
    np.testing.assert_allclose(runs[0].level_integrals, runs[1].level_integrals, rtol=1e-12)


# The early stop is the kernel's, the same for every policy: FG-SP's case runs with -m slow.
@pytest.mark.parametrize("policy", [pytest.param("fg-sp", marks=pytest.mark.slow),
                                    "gate-and-route"])
def test_stopping_early_changes_nothing(policy):
    # A window that every replication reaches long before the last step: the rollout that stops
    # once all are done equals, leaf for leaf, the one that scans every step.
    system, _ = policies.build(policy, MODEL, 10)
    key = jax.random.key(7)
    runs = [jq.rollout(key, system, steps=1536, reps=6, window=(0.0, 3.0), stop_early=s)
            for s in (True, False)]
    assert bool(np.all(np.asarray(runs[0].done)))
    assert int(np.min(np.asarray(runs[0].summary.events))) < 1000  # done well before the end
    for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_replication_at_the_window_end_takes_no_event():
    # Random words of zero give a zero holding time: at the window's end the old step applied
    # (and counted) an event there, again and again while the rollout went on.
    from jaxqueue import kernel

    system, _ = policies.build("gate-and-route", MODEL, 10)
    state = system.init()
    acc = kernel._zero_acc(system, (), jnp.float32, jnp.int32)
    end = jnp.float32(2.0)
    bits = jnp.zeros(kernel.words_per_step(system), jnp.uint32)
    for t, fires in ((end, False), (end - 1, True)):
        new_state, t_new, out = kernel._step(system, (state, t, acc), bits, jnp.float32(0),
                                             end, jnp.float32)
        assert int(out.events) == int(fires)
        counts = kernel._counts(out)  # dense and hit counters alike
        assert int(np.sum(np.asarray(counts))) == (2 if fires else 0)  # arrival + start
        assert float(t_new) == float(t)


def test_block_words_are_the_step_words():
    # A stopping rollout hashes a block of steps at once; the words must be step_bits' words.
    from jaxqueue import rng

    words = jax.vmap(lambda r: rng.rep_key(jax.random.key(3), r, 5), out_axes=-1)(
        jnp.arange(7, dtype=jnp.uint32))
    block = rng.block_words(words, 40, 9, 3)
    assert len(block) == 3 and block[0].shape == (9, 7)
    for s in range(9):
        for r in range(7):
            want = rng.step_bits(words[:, r], 40 + s, 3)
            got = [int(block[j][s, r]) for j in range(3)]
            assert got == [int(w) for w in want]
