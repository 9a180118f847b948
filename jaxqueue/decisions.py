"""The one seam for every discrete decision a simulator step takes.

A step of the exact simulator makes discrete choices: which event happens (from the rates),
threshold tests (is a slot free, has a waiting job's patience run out), argmins with
tie-breaking (the gate's class, the GPU a job goes to), categorical and Bernoulli draws (the SLI
router), and rounding a real number to an integer (the number of mixed GPUs). Every policy asks a
:class:`AbstractDecisions` object, which the system holds as its ``decide`` field, for each of
these, and never decides inline. :class:`Exact` takes the decisions exactly (indicators are 0/1
integers, selections are exact indices); a relaxation (:mod:`jaxqueue.relax`) replaces this one
object to make a step differentiable, without touching the policies.

Conventions shared by every implementation:

- an *indicator* is a 0-d array that is 1 where a condition holds and 0 where not; policies
  combine indicators with arithmetic (``a * b`` for "and", ``1 - a`` for "not") so that a
  relaxation may return values in [0, 1] carrying gradients;
- a *selection* returns an index (an integer array), used where the state is indexed (rings,
  per-GPU arrays); :meth:`AbstractDecisions.one_hot` turns it into counts to add.

The exact engine's sample paths are piecewise constant in the parameters, so their pathwise
derivative is zero almost everywhere and says nothing about the derivative of an expectation.
:func:`guard` makes differentiating the exact engine an error (:class:`NotDifferentiableError`)
instead of a silently wrong number.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import math
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

__all__ = ["AbstractDecisions", "Exact", "NotDifferentiableError", "ScoreFunction", "ceil_count",
           "fence", "guard", "hot_index"]


# ---- fences ----------------------------------------------------------------------------------
#: While a rollout's step is traced: a scalar that is true at run time but not known to XLA.
_FENCE: contextvars.ContextVar = contextvars.ContextVar("jaxqueue_fence", default=None)


def fence(values: Any) -> Any:
    """``values`` computed once per step and read from memory by every later use.

    XLA's CPU backend fuses a chain of cheap elementwise operations into each kernel that reads
    its result, so a decision that many updates depend on (the event drawn, the GPU it
    happens on) is recomputed in each of them: in an exact step most of the arithmetic was such
    copies. Passed through a conditional whose predicate XLA cannot evaluate at compile time
    (the branch taken returns ``values`` unchanged), the decision becomes one kernel's output
    that the others read. Values and sample paths are unchanged; outside a rollout's exact
    step (a trajectory, a relaxed rollout, a policy's method called alone) it returns
    ``values`` as they are.

    Only on the CPU (a GPU would decide each conditional on the host), and meant for a few
    scalars per replication: fencing a vector (the event's one-hot row, the running sum of the
    rates) made the pooled step slower, not faster."""
    when = _FENCE.get()
    if when is None:
        return values

    def fenced(v):
        # The other branch is never taken; it must differ from the first, or XLA drops the
        # conditional.
        return jax.lax.cond(when, lambda v: v, lambda v: jax.tree.map(jnp.zeros_like, v), v)

    # CPU only: a GPU decides a conditional's branch on the host, a round trip per step.
    return jax.lax.platform_dependent(values, cpu=fenced, default=lambda v: v)


@contextlib.contextmanager
def _fenced(when):
    token = _FENCE.set(when)
    try:
        yield
    finally:
        _FENCE.reset(token)


class NotDifferentiableError(TypeError):
    """Raised when a gradient is taken through the exact engine's parameters."""


_GUARD_MESSAGE = (
    "the exact simulator is not differentiable: its sample paths are piecewise constant in the "
    "parameters, so a pathwise derivative would be zero or meaningless. For gradients use "
    "relaxed decisions (jaxqueue.relax.Relaxed, a biased pathwise estimator), or the "
    "score-function and finite-difference estimators of jaxqueue.tune on the exact engine")


@jax.custom_jvp
def _exact_leaf(x):
    return x


@_exact_leaf.defjvp
def _exact_leaf_jvp(primals, tangents):
    raise NotDifferentiableError(_GUARD_MESSAGE)


def guard(tree):
    """``tree`` with every floating leaf passed through an identity that raises
    :class:`NotDifferentiableError` if it is differentiated (forward or reverse mode). Leaves not
    being differentiated cost nothing (JAX does not call the rule for zero tangents)."""
    return jax.tree.map(lambda a: _exact_leaf(a) if eqx.is_inexact_array(a) else a, tree)


def ceil_count(value, rtol: float = 1e-9):
    """``ceil(value)`` for a nonnegative count computed in floating point, where a value within
    ``rtol`` (relative) of an integer counts as that integer (LP round-off such as
    ``106.0000000001`` is not rounded up). Works on host numbers and traced arrays."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        near = round(v)
        return int(near if abs(v - near) <= rtol * max(1.0, abs(v)) else math.ceil(v))
    value = jnp.asarray(value)
    near = jnp.round(value)
    close = jnp.abs(value - near) <= rtol * jnp.maximum(1.0, jnp.abs(value))
    return jnp.where(close, near, jnp.ceil(value)).astype(jnp.int32)


class AbstractDecisions(eqx.Module):
    """Every discrete choice of a simulator step (see the module docstring).

    ``differentiable`` says whether gradients through a step carry information; when False the
    simulator wraps the parameters with :func:`guard`.
    """

    differentiable: ClassVar[bool] = False

    @property
    def count_dtype(self):
        """The dtype of the state's counts: int32 when exact, floating when gradients must flow
        through them."""
        return jnp.int32

    def noise_words(self, num_events: int) -> int:
        """Extra uniform words per step :meth:`event_hot` needs (beyond the event's own)."""
        return 0

    # ---- the event -----------------------------------------------------------------------
    @abc.abstractmethod
    def event(self, rates: Float[Array, " E"], u: Float[Array, ""]) -> Int[Array, ""]:
        """The next event of the chain: index ``k`` with probability ``rates[k] / sum(rates)``,
        ``E`` when every rate is zero."""

    @abc.abstractmethod
    def event_hot(self, rates: Float[Array, " E"], index: Int[Array, ""],
                  noise: Float[Array, " N"] | None = None) -> Real[Array, " E"]:
        """The chosen event as a one-hot row over the ``E`` events (all zero for ``index = E``:
        no event), in :attr:`count_dtype`; ``noise`` holds :meth:`noise_words` uniforms."""

    # ---- indicators ------------------------------------------------------------------------
    @abc.abstractmethod
    def greater(self, a: ArrayLike, b: ArrayLike) -> Real[Array, "..."]:
        """Indicator of ``a > b`` for integer-valued counts (a capacity test: ``capacity > in
        use``; a relaxation centres its transition between ``b`` and ``b + 1``)."""

    @abc.abstractmethod
    def at_least(self, a: ArrayLike, b: ArrayLike) -> Real[Array, "..."]:
        """Indicator of ``a >= b`` (a deadline test: ``now >= deadline``)."""

    @abc.abstractmethod
    def bernoulli(self, p: ArrayLike, u: Float[Array, ""]) -> Real[Array, ""]:
        """Indicator that is 1 with probability ``p``, from the uniform ``u``."""

    @abc.abstractmethod
    def select(self, c: Real[Array, "..."], a: ArrayLike, b: ArrayLike) -> Array:
        """``a`` where the indicator ``c`` is 1, ``b`` where it is 0."""

    # ---- selections ------------------------------------------------------------------------
    @abc.abstractmethod
    def lexmin(self, keys: tuple[Float[Array, " K"], ...], eligible: Real[Array, " K"]
               ) -> Int[Array, ""]:
        """Among the eligible entries, the one with the smallest ``keys[0]``, ties broken by the
        smallest ``keys[1]``, and so on, then by the lowest index (0 when none is eligible)."""

    @abc.abstractmethod
    def choose(self, keys: tuple[Float[Array, " K"], ...], eligible: Real[Array, " K"],
               on: Real[Array, ""] | int = 1) -> tuple[Int[Array, ""], Real[Array, " K"]]:
        """:meth:`lexmin` as an index and as counts to add: ``on`` at the chosen entry (a
        relaxation spreads the gradient over the entries by their first key)."""

    @abc.abstractmethod
    def draw_hot(self, weights: Real[Array, " K"], u: Float[Array, ""],
                 on: Real[Array, ""] | int = 1) -> tuple[Int[Array, ""], Real[Array, " K"]]:
        """:meth:`draw` as an index and as counts to add (``on`` at the drawn entry)."""

    @abc.abstractmethod
    def first_min(self, score: Int[Array, " G"]) -> Int[Array, ""]:
        """``argmin`` of small nonnegative integer scores, ties to the lowest index."""

    @abc.abstractmethod
    def draw(self, weights: Real[Array, " K"], u: Float[Array, ""]) -> Int[Array, ""]:
        """Index ``k`` with probability ``weights[k] / sum(weights)`` from one uniform; any index
        when every weight is zero."""

    @abc.abstractmethod
    def descend(self, tree, records, column: Int[Array, ""], u: Float[Array, ""]
                ) -> Int[Array, ""]:
        """An item of a :class:`jaxqueue.tree.Tree` with probability proportional to its weight
        in ``column``, from one uniform (the same law as :meth:`draw` over all items)."""

    @abc.abstractmethod
    def one_hot(self, index: Int[Array, ""], size: int, on: Real[Array, ""] | int = 1
                ) -> Real[Array, " K"]:
        """``on`` at ``index``, 0 elsewhere, in the dtype the state's counts use."""

    # ---- rounding --------------------------------------------------------------------------
    @abc.abstractmethod
    def count(self, value: Float[ArrayLike, "..."], u: Float[Array, ""] | None = None):
        """An integer number of servers from a real one (e.g. ``n sum x*`` mixed GPUs): rounded
        up when ``u`` is None (Sec. 4.1), else randomised rounding between the two nearest
        integers, up with probability equal to the fractional part."""


#: Up to this many events :meth:`Exact.event` sums the rates in one written-out chain, past it
#: in two levels (:func:`_block_width`). XLA's CPU backend fuses a written-out chain into each of
#: its uses, so one level costs O(E^2). On the pooled engine (steps per second of rollouts of
#: `scripts/bench.py`'s synthetic instances, one core of the 2-core CPU) one level was faster up
#: to 4 classes (20 events), as fast at 5 and slower from 6 on (0.90x at 6, 0.71x at 8); two
#: classes keep their paths.
_ONE_LEVEL_EVENTS = 25


def _block_width(num: int) -> int:
    """Width of the blocks of the two-level sum over ``num`` events. The engines' ``5 I``
    events make 5 rows of I (one per kind of event): 1.10x the steps per second of 8 blocks of
    5 at 8 classes, 1.08x that of 16 blocks of 10 at 32 (XLA's reductions over a few long rows
    beat many short ones). Otherwise ``ceil(sqrt(num))``, the last block padded with zero
    rates."""
    return num // 5 if num % 5 == 0 else math.isqrt(num - 1) + 1


def _running_sum(x: Float[Array, " K"]) -> Float[Array, " K"]:
    running = [x[0]]
    for k in range(1, x.shape[0]):
        running.append(running[-1] + x[k])
    return jnp.stack(running)


def _tree_min(values: list) -> Array:
    """The minimum of ``values``, taken in pairs."""
    while len(values) > 1:
        values = [jnp.minimum(*values[k:k + 2]) if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


# XLA's CPU argmax over a short axis is a variadic reduction (value and index), several times
# slower than an integer minimum of indices: at 32 classes the gate's was the largest kernel of
# the pooled step.
def _first_true(mask: Bool[Array, " K"]) -> Int[Array, ""]:
    """The index of the first true entry, 0 when none is (``jnp.argmax(mask)``)."""
    num = mask.shape[0]
    first = jnp.min(jnp.where(mask, jnp.arange(num, dtype=jnp.int32), num))
    return jnp.where(first < num, first, 0)


def hot_index(hot: Array) -> Int[Array, ""]:
    """The index of a vector's one nonzero entry, 0 when it has none (``jnp.argmax``): an
    integer vector (exact decisions: a one-hot, or none) by :func:`_first_true`, a float one
    (relaxed decisions) by ``argmax``."""
    if jnp.issubdtype(hot.dtype, jnp.integer) or hot.dtype == jnp.bool_:
        return _first_true(hot != 0)
    return jnp.argmax(hot)


def _last_true(mask: Bool[Array, " K"]) -> Int[Array, ""]:
    """The index of the last true entry, ``K - 1`` when none is."""
    num = mask.shape[0]
    last = jnp.max(jnp.where(mask, jnp.arange(num, dtype=jnp.int32), -1))
    return jnp.where(last >= 0, last, num - 1)


def _inverse_cdf(rates: Float[Array, " K"], target: Float[Array, ""],
                 running: Float[Array, " K"] | None = None) -> Int[Array, ""]:
    """The first index whose running sum of ``rates`` exceeds ``target``, never one of rate
    zero (a target at or past the total lands on the last positive rate, a target below 0 on
    the first)."""
    cum = _running_sum(rates) if running is None else running
    # A negative target counts as 0: the leading zero rates (running sum 0) are then passed.
    index = jnp.sum(cum <= jnp.maximum(target, 0)).astype(jnp.int32)
    positive = rates > 0
    last_positive = _last_true(positive)
    return jnp.minimum(index, last_positive)


#: Rows wider than :data:`_ONE_LEVEL_ROW` are drawn from in parts of :data:`_ROW_PART` entries.
#: At 32 classes (rows of 32; the pooled engine, 1,024 replications, one core of the 2-core
#: CPU, best of 5 chunks of 2,048 steps): 823 us a step in parts of 8, against 952 in parts of
#: 6, 1,000-1,110 in parts of 16 and 1,085-1,110 in one level. Up to :data:`_FLAT_PARTS` parts
#: in all, the draw's first level picks among the parts of every row (:func:`_parts`), past it
#: a row first, then one of its parts (:func:`_draw_in_row`). Parts in one level, events per
#: second against a row first (`scripts/bench_ab.py`, both cores, 1,024 replications): 32
#: classes (20 parts) 1.06x and 1.08x (5 and 3 pairs), 16 classes (10) about 1.0x, 48 classes
#: (30) about 0.92x, 64 classes (40) 0.85x (3 pairs). XLA fused the choice of a row into each
#: slice of its parts; a long first level costs its written-out running sum.
_ONE_LEVEL_ROW = 12
_ROW_PART = 8
_FLAT_PARTS = 20


def _split(x: Float[Array, " K"], width: int) -> list[Float[Array, " W"]]:
    """``x`` in consecutive slices of ``width``, the last padded with zeros. Slices of the
    vector, not a reshaped table: vmapped, a table was laid out replication-major, a
    transposing copy of every rate per step."""
    count = -(-x.shape[0] // width)
    padded = jnp.pad(x, (0, count * width - x.shape[0]))
    return [padded[k * width:(k + 1) * width] for k in range(count)]


def _descend(parts, totals, below, target, draw_in=None, starts=None) -> Int[Array, ""]:
    """The index whose running sum passes ``target``, in two levels: the part (of positive
    total, by :func:`_inverse_cdf`; ``below`` the running sum of the parts' ``totals``), then
    ``draw_in(part, target - its start)`` within it (default :func:`_inverse_cdf`). ``starts``:
    each part's first index (default: part k starts at k times the parts' width)."""
    width = parts[0].shape[0]
    part = _inverse_cdf(totals, target, below)
    start = jnp.where(part > 0, below[jnp.maximum(part - 1, 0)], 0)
    # XLA may compute the sums behind `target` and `below` once per use, in different orders:
    # `target - start` can then be a few ulps below 0 when the target falls on the part's lower
    # edge, which `_inverse_cdf` reads as the part's first positive rate (a zero-rate event
    # there would empty a class that holds no job).
    chosen = parts[0]
    for k in range(1, len(parts)):
        chosen = jnp.where(part == k, parts[k], chosen)
    first = part * width if starts is None else starts(part)
    return first + (draw_in or _inverse_cdf)(chosen, target - start)


def _draw_in_row(row: Float[Array, " W"], target: Float[Array, ""]) -> Int[Array, ""]:
    """:func:`_inverse_cdf` of a row wider than :data:`_ONE_LEVEL_ROW`, in its parts."""
    parts = _split(row, _ROW_PART)
    totals = jnp.stack([jnp.sum(q) for q in parts])
    return _descend(parts, totals, _running_sum(totals), target)


def _parts(rates: Float[Array, " E"]) -> tuple[list, Any, Any]:
    """The first level of the two-level draw: its parts of ``rates``, how to draw within one
    (None: :func:`_inverse_cdf`) and where each starts (None: at k times their width). Blocks
    of about sqrt(E) (:func:`_block_width`); blocks wider than :data:`_ONE_LEVEL_ROW` cut in
    parts of :data:`_ROW_PART` (the last of a block padded with zeros) while those number at
    most :data:`_FLAT_PARTS`, drawn from in their parts otherwise."""
    width = _block_width(rates.shape[0])
    rows = _split(rates, width)
    if width <= _ONE_LEVEL_ROW:
        return rows, None, None
    per_row = -(-width // _ROW_PART)
    if len(rows) * per_row > _FLAT_PARTS:
        return rows, _draw_in_row, None
    parts = [part for row in rows for part in _split(row, _ROW_PART)]
    return parts, None, lambda k: (k // per_row) * width + (k % per_row) * _ROW_PART


class Exact(AbstractDecisions):
    """Exact decisions: the continuous-time Markov chain itself, bit for bit.

    Indicators are int32 0/1, selections are exact indices, and :meth:`count` rounds up
    (Sec. 4.1: ``M = ceil(n sum x*)``), ignoring LP round-off below a relative 1e-9.
    """

    differentiable: ClassVar[bool] = False


    def event(self, rates, u):
        # Inverse CDF with one uniform; a zero-rate event is never chosen (round-off that would
        # land past the last positive rate is sent back to it). The running sum is written out
        # (XLA's CPU cumsum is a reduce-window, slow inside a scan step); past
        # `_ONE_LEVEL_EVENTS` events, in two levels (blocks of about sqrt(E), a wide block cut
        # in parts: `_parts`): XLA fuses a long written-out chain into each of its uses, so
        # one level costs O(E^2) (160 events, 1,024 replications: 3.4 ms a step alone against
        # 0.35 ms in two levels).
        num = rates.shape[0]
        if num <= _ONE_LEVEL_EVENTS:
            cum = _running_sum(rates)
            return jnp.where(jnp.any(rates > 0), _inverse_cdf(rates, u * cum[-1], cum), num)
        parts, draw_in, starts = _parts(rates)
        totals = jnp.stack([jnp.sum(p) for p in parts])
        below = _running_sum(totals)
        index = _descend(parts, totals, below, u * below[-1], draw_in, starts)
        # Rates are >= 0: some is positive exactly when their sum is (a test of every rate
        # was a pass of its own over the event vector).
        return jnp.where(below[-1] > 0, index, num)

    def event_hot(self, rates, index, noise=None):
        return (jnp.arange(rates.shape[0]) == index).astype(jnp.int32)

    def greater(self, a, b):
        return (jnp.asarray(a) > jnp.asarray(b)).astype(jnp.int32)

    def at_least(self, a, b):
        return (jnp.asarray(a) >= jnp.asarray(b)).astype(jnp.int32)

    def bernoulli(self, p, u):
        return (u < p).astype(jnp.int32)

    def select(self, c, a, b):
        return jnp.where(jnp.asarray(c) > 0, a, b)

    def lexmin(self, keys, eligible):
        chosen = jnp.asarray(eligible) > 0
        for key in keys:
            # The smallest key among the chosen, written out entry by entry: a float reduction
            # over a short axis is handed by XLA's CPU backend to a library kernel that cost
            # a quarter of the pooled step (two classes, 2,048 replications).
            # In pairs, a tree of depth log2(K): as one chain, each replication's 31 minimums at
            # 32 classes waited on one another, the largest kernel of that step. (The minimum
            # is exact in any order, so the choice is the same.)
            masked = jnp.where(chosen, key, jnp.inf)
            smallest = _tree_min([masked[k] for k in range(key.shape[0])])
            chosen = chosen & (key == smallest)
        return _first_true(chosen)

    def choose(self, keys, eligible, on=1):
        index = self.lexmin(keys, eligible)
        return index, self.one_hot(index, keys[0].shape[0], on)

    def draw_hot(self, weights, u, on=1):
        index = self.draw(weights, u)
        return index, self.one_hot(index, weights.shape[0], on)

    def first_min(self, score):
        # One integer min over ``score * G + index`` (XLA's CPU argmin, a variadic reduction, is
        # several times slower); exact while ``(max score + 1) * G < 2^31``.
        G = score.shape[0]
        return jnp.min(score * G + jnp.arange(G, dtype=score.dtype)) % G

    def draw(self, weights, u):
        if jnp.issubdtype(weights.dtype, jnp.integer):
            return _draw_count(weights, u)
        return jnp.minimum(self.event(weights, u), weights.shape[0] - 1)

    def descend(self, tree, records, column, u):
        from .tree import draw  # the tree's exact integer inverse CDF

        return draw(tree, records, column, u)

    def one_hot(self, index, size, on=1):
        return (jnp.arange(size) == index).astype(jnp.int32) * on

    def count(self, value, u=None):
        if u is None:
            return ceil_count(value)
        value = jnp.asarray(value)
        near = jnp.round(value)  # an integer up to round-off stays that integer
        value = jnp.where(jnp.abs(value - near) <= 1e-6 * jnp.maximum(1.0, jnp.abs(value)),
                          near, value)
        low = jnp.floor(value)
        return (low + (u < value - low)).astype(jnp.int32)


class ScoreFunction(Exact):
    """Exact decisions for the score-function (likelihood-ratio) estimator.

    The sample path is the exact chain's, so it carries no pathwise gradient; what a policy's
    randomised decisions contribute to the path's log-likelihood (``Flow.logp``, summed in
    :attr:`jaxqueue.kernel.Summary.logp`) is differentiable in the policy's parameters. The
    gradient of ``E[R]`` is then ``E[(R - b) d logp]`` for any baseline ``b`` independent of the
    path: unbiased, with a variance that grows with the horizon. Differentiating anything but
    the log-likelihood gives zero (every other output is piecewise constant in the parameters).
    """

    differentiable: ClassVar[bool] = True


def _draw_count(weight: Int[Array, " G"], u: Float[Array, ""]) -> Int[Array, ""]:
    """Index g with probability ``weight[g] / sum(weight)`` for integer weights (any value when
    every weight is zero).

    Integer inverse CDF: ``j = floor(u * total)`` and the first g whose running sum exceeds j,
    so a zero weight is never chosen. The running sum is taken in two levels (blocks of about
    sqrt(G)): a cumulative sum over all G entries costs O(G^2) work on XLA's CPU backend.
    """
    G = weight.shape[0]
    k = 1 << ((max(G, 1) - 1).bit_length() + 1) // 2  # block length, a power of two
    if G % k:
        k = G
    blocks = weight.reshape(G // k, k)
    sums = jnp.sum(blocks, axis=1)
    cum = jnp.cumsum(sums)
    total = cum[-1]
    draw = jnp.minimum((u * total.astype(u.dtype)).astype(weight.dtype), total - 1)
    b = jnp.minimum(jnp.sum(cum <= draw), G // k - 1)
    rest = draw - (cum[b] - sums[b])
    inner = jnp.cumsum(blocks[b])
    return b * k + jnp.minimum(jnp.sum(inner <= rest), k - 1)

