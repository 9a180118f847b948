"""The aggregation tree against flat computations over all items: root sums and minima, the
integer inverse-CDF draw, and a refresh after one item changes, for several shapes of tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue import tree


@pytest.mark.parametrize("size,largest", [(1, 16), (2, 16), (8, 16), (64, 4), (512, 16),
                                          (8192, 16), (8192, 32)])
def test_fanouts_multiply_to_size_within_the_limit(size, largest):
    fan = tree.fanouts(size, largest)
    assert int(np.prod(fan)) == size and max(fan) <= max(largest, 1)
    assert list(fan) == sorted(fan, reverse=True)  # the leaf level has the smallest fanout


@pytest.mark.parametrize("size", [0, 3, 12, -4])
def test_fanouts_refuse_a_size_that_is_not_a_power_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        tree.fanouts(size)


def _records(table):
    def records(start, size):
        return jax.lax.dynamic_slice_in_dim(table, start, size, axis=0)
    return records


@pytest.mark.parametrize("size,largest", [(1, 16), (8, 16), (64, 4), (512, 16), (2048, 16)])
def test_root_draw_and_refresh_match_flat_computations(size, largest):
    rng = np.random.default_rng(size)
    sums = 2
    weights = rng.integers(0, 5, (size, sums))
    weights[rng.random(size) < 0.5, 0] = 0  # many empty items: the draw must skip them
    keys = rng.integers(0, 1000, (size, 1)) * size + np.arange(size)[:, None]
    table = jnp.asarray(np.concatenate([weights, keys], axis=1), jnp.int32)
    t = tree.build(_records(table), size, sums=sums, largest=largest)
    top = np.asarray(tree.root(t))
    np.testing.assert_array_equal(top[:sums], weights.sum(0))
    assert top[sums] == keys.min()

    u = jnp.asarray(rng.random(200), jnp.float32)
    for column in range(sums):
        got = np.asarray(jax.vmap(lambda x, c=column: tree.draw(t, _records(table), c, x))(u))
        w = weights[:, column]
        if w.sum() == 0:
            continue
        j = np.minimum((np.asarray(u) * np.float32(w.sum())).astype(np.int64), w.sum() - 1)
        want = np.searchsorted(np.cumsum(w), j, side="right")  # first item whose sum exceeds j
        np.testing.assert_array_equal(got, want)
        assert np.all(w[got] > 0)

    # Change one item, refresh its path: the same tree as building from scratch.
    item = int(rng.integers(size))
    table2 = table.at[item].set(jnp.asarray([7, 1, -1], jnp.int32))
    fresh = tree.build(_records(table2), size, sums=sums, largest=largest)
    moved = tree.refresh(t, _records(table2), jnp.int32(item))
    for a, b in zip(moved.levels, fresh.levels, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # An index outside [0, size) leaves the tree as it is.
    same = tree.refresh(t, _records(table2), jnp.int32(size))
    for a, b in zip(same.levels, t.levels, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
