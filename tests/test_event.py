"""The exact event draw: the inverse CDF of the rates, in one level and in two."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue.decisions import _ONE_LEVEL_EVENTS, Exact, _inverse_cdf, hot_index


@pytest.mark.parametrize("num", [5, 40, _ONE_LEVEL_EVENTS, _ONE_LEVEL_EVENTS + 1, 65, 160, 320])
def test_event_is_the_inverse_cdf_and_never_a_zero_rate(num):
    rng = np.random.default_rng(num)
    rates = rng.exponential(size=num) * rng.choice([0.0, 1.0, 1e-3, 50.0], size=num)
    rates[-1] = 0.0  # a zero rate last: round-off past the total must not land on it
    rates[rng.integers(num)] = 2.0  # at least one positive rate
    u = np.concatenate([rng.random(20_000), 1.0 - 2.0 ** -np.arange(1, 25)]).astype(np.float32)
    index = np.asarray(jax.jit(jax.vmap(Exact().event, in_axes=(None, 0)))(
        jnp.asarray(rates, jnp.float32), jnp.asarray(u)))
    assert np.all(rates[index] > 0), "a zero-rate event was chosen"
    # The same draw in float64; the two disagree only where u * total is within float32
    # round-off of a boundary of the cumulative sum.
    cum = np.cumsum(rates)
    exact = np.minimum(np.searchsorted(cum, u * cum[-1], side="right"),
                       np.flatnonzero(rates > 0)[-1])
    boundary = np.min(np.abs(cum[None, :] - (u * cum[-1])[:, None]), axis=1)
    clear = boundary > 1e-5 * cum[-1]
    assert np.array_equal(index[clear], exact[clear])
    assert clear.mean() > 0.99


def test_a_target_below_zero_lands_on_the_first_positive_rate():
    rates = jnp.asarray([0.0, 0.0, 3.0, 0.0, 1.0], jnp.float32)
    for target in (-1e-6, 0.0):
        assert int(_inverse_cdf(rates, jnp.float32(target))) == 2


def test_a_target_on_a_block_edge_never_draws_a_zero_rate():
    # Eight classes (40 events, the two-level sum): met in a run of the smoothed gated family
    # on dolly-8class, whose clock then went backwards. u * total falls on the lower edge of
    # the second block (prefill ends; only class 8's rate is positive), and XLA computed the
    # sums behind the target and the edge in different orders, so the target sat a few ulps
    # below the edge and the block's first event, of rate 0, was drawn (a prefill ending in a
    # class holding none).
    hexes = ["0x1.4p+2"] * 8 + ["0x0p+0"] * 7 + ["0x1.a25fbap+3"] + ["0x0p+0"] * 8 + [
        "0x1.ec2c24p+0", "0x1.334c6p+2", "0x1.3fae28p+2", "0x1.96f46cp-1", "0x1.c9b95cp+1",
        "0x1.0a6678p+2", "0x0p+0", "0x1.32ec24p+2", "0x1.2ccccep+2", "0x1.666666p+0",
        "0x1.99999ap-4", "0x1.333334p+2", "0x1.8p+0", "0x0p+0", "0x1.4ccccep+2", "0x0p+0"]
    rates = np.asarray([float.fromhex(h) for h in hexes], np.float32)
    u = np.float32(float.fromhex("0x1.ab754cp-2"))
    assert float(np.float32(u * rates.sum())) == pytest.approx(40.0, rel=1e-6)  # the edge
    for draw in (jax.jit(Exact().event), Exact().event):
        index = int(draw(jnp.asarray(rates), jnp.asarray(u)))
        assert index in (7, 15), index  # the last event below the edge or the first above


def test_event_without_positive_rate_is_none():
    rates = jnp.zeros(40, jnp.float32)
    assert int(Exact().event(rates, jnp.float32(0.3))) == 40
    assert int(Exact().event(jnp.zeros(5, jnp.float32), jnp.float32(0.3))) == 5


@pytest.mark.parametrize("size", [2, 8, 32])
def test_lexmin_is_the_first_eligible_entry_in_lexicographic_order(size):
    # Against a sort of (key 0, key 1, index) over the eligible entries, keys with many ties;
    # none eligible gives 0 (what the policies rely on when no class may be admitted).
    rng = np.random.default_rng(size)
    pick = jax.jit(jax.vmap(lambda a, b, e: Exact().lexmin((a, b), e)))
    k0 = rng.integers(0, 3, size=(4000, size)).astype(np.float32)
    k1 = rng.integers(0, 3, size=(4000, size)).astype(np.float32)
    eligible = (rng.random((4000, size)) < 0.5).astype(np.int32)
    eligible[:50] = 0
    got = np.asarray(pick(jnp.asarray(k0), jnp.asarray(k1), jnp.asarray(eligible)))
    for r in range(4000):
        cands = [(k0[r, j], k1[r, j], j) for j in range(size) if eligible[r, j]]
        assert got[r] == (min(cands)[2] if cands else 0)


def test_hot_index_is_argmax_of_a_one_hot():
    # The engines' one-hots (the class of an event, of an admission): the index of the one
    # nonzero entry, 0 when none, as jnp.argmax gives it; float (relaxed) vectors by argmax.
    for size in (2, 8, 32):
        for k in range(size):
            hot = jnp.zeros(size, jnp.int32).at[k].set(1)
            assert int(hot_index(hot)) == k == int(jnp.argmax(hot))
            assert int(jax.jit(hot_index)(hot.astype(bool))) == k
        assert int(hot_index(jnp.zeros(size, jnp.int32))) == 0
    soft = jnp.asarray([0.1, 0.7, 0.2], jnp.float32)
    assert int(hot_index(soft)) == 1
    batch = jnp.eye(32, dtype=jnp.int32)[jnp.asarray([3, 31, 0, 17])]
    assert np.array_equal(np.asarray(jax.vmap(hot_index)(batch)), [3, 31, 0, 17])
