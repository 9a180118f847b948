"""A static-shape aggregation tree over per-item integer records: O(log n) updates and draws.

The per-GPU engine needs, at every event, sums over all GPUs (prefills and decodes per class and
speed), the GPU with the smallest key (where a prefill or a decode goes) and a GPU drawn with
probability proportional to its weight (where a completion happens). Recomputing these over all
n GPUs costs O(n) per event. A :class:`Tree` keeps them for every block of GPUs: a leaf record
is a row of ``C`` integers per item (its weights, then its keys); each node stores the column
sums of its children's weight columns and the column minima of their key columns. An event
changes one or two items, so only the nodes on their paths to the root are recomputed:
``O(F log_F n)`` work, with fanouts ``F <= 16``, and a handful of array operations whatever n.

Leaves are not stored: their records are computed from the owner's state by a function
``records(start, size)`` for the ``size`` items from ``start`` (a contiguous block). The number
of items is a power of two; the fanouts multiply to it.

Selections are exact: the root's minimum key identifies its item when keys are built as
``score * size + index`` (ties go to the lowest index), and :func:`draw` is the integer inverse
CDF over the items in index order, item ``g`` with probability ``weight[g] / total``: the same
item a flat cumulative sum would pick for the same draw.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

__all__ = ["INF", "Tree", "build", "draw", "fanouts", "refresh", "root"]

#: The key of an item that is not eligible (larger than any real key).
INF = jnp.iinfo(jnp.int32).max

Records = Callable[[Array, int], Int[Array, "F C"]]


def fanouts(size: int, largest: int = 16) -> tuple[int, ...]:
    """Fanouts of the levels below the root, top first, each a power of two ``<= largest``,
    as even as possible, multiplying to ``size`` (a power of two); the smallest last.

    The last level is the costliest per child: its children are items whose records are
    computed from the owner's state (gathers from large per-item arrays), where the levels above
    read stored node rows. On the development CPU, 8,192 items as ``(16, 8, 8, 8)`` stepped in
    0.90x the time of ``(8, 8, 8, 16)``."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"size = {size}: must be a power of two >= 1")
    bits, top = size.bit_length() - 1, largest.bit_length() - 1
    depth = max(1, -(-bits // top))
    each = [bits // depth + (k < bits % depth) for k in range(depth)]
    return tuple(1 << b for b in sorted(each, reverse=True))


class Tree(eqx.Module):
    """Aggregates of a block of items per node, level by level from the root.

    Attributes:
        levels: ``levels[k]`` holds the nodes at depth k, ``(nodes_k, C)``: ``nodes_0 = 1``
            (the root) and ``nodes_{k+1} = nodes_k * fan[k]``; the leaves below the last level
            are the items themselves (not stored).
        fan: fanout of each level, top first (static); the product is the number of items.
        sums: the first ``sums`` columns are summed, the others take the minimum (static).
    """

    levels: tuple[Int[Array, "N C"], ...]
    fan: tuple[int, ...] = eqx.field(static=True)
    sums: int = eqx.field(static=True)


def _reduce(block: Int[Array, "F C"], sums: int) -> Int[Array, " C"]:
    return jnp.concatenate([jnp.sum(block[:, :sums], axis=0), jnp.min(block[:, sums:], axis=0)])


def build(records: Records, size: int, sums: int, largest: int = 16) -> Tree:
    """The tree over ``size`` items whose records ``records(0, size)`` gives (O(size), once)."""
    fan = fanouts(size, largest)
    rows = records(jnp.int32(0), size)
    levels = []
    for f in reversed(fan):
        rows = jax.vmap(lambda b: _reduce(b, sums))(rows.reshape(-1, f, rows.shape[-1]))
        levels.append(rows)
    return Tree(levels=tuple(reversed(levels)), fan=fan, sums=sums)


def root(tree: Tree) -> Int[Array, " C"]:
    """The aggregates over all items: column sums, then column minima."""
    return tree.levels[0][0]


def refresh(tree: Tree, records: Records, item: Int[Array, ""]) -> Tree:
    """The tree after item ``item``'s record changed: the nodes on its path recomputed.

    ``item`` outside ``[0, size)`` leaves the tree as it is (a masked update).
    """
    size = _size(tree)
    valid = (item >= 0) & (item < size)
    item = jnp.clip(item, 0, size - 1)
    f = tree.fan[-1]
    node = item // f
    value = _reduce(records(node * f, f), tree.sums)
    levels = list(tree.levels)
    for k in range(len(levels) - 1, -1, -1):
        old = levels[k][node]
        levels[k] = levels[k].at[node].set(jnp.where(valid, value, old))
        if k == 0:
            break
        f = tree.fan[k - 1]
        parent = node // f
        block = jax.lax.dynamic_slice_in_dim(levels[k], parent * f, f, axis=0)
        value = _reduce(block, tree.sums)
        node = parent
    return Tree(levels=tuple(levels), fan=tree.fan, sums=tree.sums)


def draw(tree: Tree, records: Records, column: Int[Array, ""], u) -> Int[Array, ""]:
    """An item with probability ``weight[item] / total`` for the weight column ``column`` (a
    traced index among the summed columns), from the uniform ``u``: the integer inverse CDF
    ``j = floor(u * total)``, descending to the child whose running sum first exceeds ``j``.
    Any item when the total is zero."""
    total = root(tree)[column]
    j = jnp.minimum((u * total.astype(u.dtype)).astype(total.dtype), total - 1)
    node = jnp.int32(0)
    for k, f in enumerate(tree.fan):
        if k + 1 < len(tree.levels):
            block = jax.lax.dynamic_slice_in_dim(tree.levels[k + 1], node * f, f, axis=0)
        else:
            block = records(node * f, f)
        weights = jnp.take(block, column, axis=1)
        running = [weights[0]]
        for w in range(1, f):
            running.append(running[-1] + weights[w])
        cum = jnp.stack(running)
        child = jnp.minimum(jnp.sum(cum <= j), f - 1)
        j = j - (cum[child] - weights[child])
        node = node * f + child
    return node


def _size(tree: Tree) -> int:
    size = 1
    for f in tree.fan:
        size *= f
    return size
