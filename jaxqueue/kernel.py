"""The pure simulation kernel: a jitted ``lax.scan`` over CTMC events, vmapped over replications.

A *system* (:class:`AbstractSystem`) is a PyTree holding a policy's structure (static fields:
number of classes, buffer capacities, gate kind), its parameters (array leaves: rates, n, the
plan; they may be tracers) and its decisions (:mod:`jaxqueue.decisions`). One step

1. asks the system for its event rates, or whether it owes a zero-time bookkeeping step first
   (:meth:`AbstractSystem.pending`: discarding an abandoned job at the head of a lazy FCFS
   buffer, :mod:`jaxqueue.buffer`),
2. draws the holding time ``Exp(total rate)`` and, with one uniform, the event (the system's
   ``decide.event``),
3. credits the time integrals of the system's levels and the event counters, restricted to the
   statistics window, and
4. lets the system apply the event and its policy's decisions (:meth:`AbstractSystem.fire`).

:func:`rollout` runs a fixed number of steps for a batch of replications entirely on the device
and returns a :class:`Rollout`: the final states and a :class:`Summary` (time integrals, event
counts, revenue, the jobs present at the window's start and end). It does no host work, so it
composes with ``jit``, ``vmap`` over parameters and, with differentiable decisions, ``grad``.
Long runs are a host loop over rollouts (:func:`jaxqueue.simulate`): each rollout's
clock starts at zero (stored times are rebased at its end), so a float32 clock keeps its
resolution on long horizons.
"""

from __future__ import annotations

import abc
import contextlib
import functools
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Real, UInt32

from . import rng
from .decisions import AbstractDecisions, Exact, _fenced, fence, guard

__all__ = ["AbstractSystem", "Event", "Flow", "Revenue", "Rollout", "SimulationError", "Summary",
           "close", "compile_count", "initial_state", "rep_axes", "replicate", "rollout",
           "trajectory"]


class SimulationError(RuntimeError):
    """A simulation that cannot produce a valid result (e.g. a buffer's capacity exceeded)."""


class Event(eqx.Module):
    """The event a step applies.

    Attributes:
        index: index into the system's rates; ``E`` (one past the last) for no random event
            (a bookkeeping step when :meth:`AbstractSystem.pending`, else nothing).
        hot: the same as a one-hot row over the ``E`` events (all zero for no event), from the
            system's decisions (exact 0/1, or relaxed).
    """

    index: Int[Array, ""]
    hot: Real[Array, " E"]


class Flow(eqx.Module):
    """What one step adds to the statistics besides the time integrals of the levels.

    Attributes:
        counts: counter increments, already restricted to the statistics window: of every
            counter ``(T * I,)``, or of all but the last
            :attr:`~AbstractSystem.num_hit_tallies`, which come as ``hits``.
        waits: time-integral increments credited directly ``(L * I,)``, e.g. a lazily buffered
            job's wait, credited when it leaves, over the part inside the window; None when
            the step gives them as ``credits`` only.
        logp: log-probability of the step's randomised policy decisions (for the
            score-function estimator; 0 for deterministic decisions).
        hits: None, or the counters among the last ``num_hit_tallies`` that this step
            increases by one each, as indices into the whole ``(T * I,)``; an index past the
            end increases nothing. For many counters of which a step touches a few (a
            histogram's bins, or the pooled engine's 8I counters under exact decisions):
            adding a dense vector of hundreds of them in every step cost several times what
            the rest of the step did.
        credits: None, or time-integral increments as entries ``(indices, amounts)`` into the
            whole ``(L * I,)``, each ``(C,)``; an index past the end adds nothing, and so does
            one outside the last :attr:`~AbstractSystem.num_credited_levels` when the system
            has any (there the step adds credits to those levels only). For a step
            that credits a job's wait or two: added densely, the chain of decisions that
            decides each amount was recomputed for every integral (XLA fused it into the
            add), which cost a fifth of the pooled step at 32 classes.
    """

    counts: Int[Array, " T"]
    waits: Float[Array, " L"] | None
    logp: Float[Array, ""] = 0.0
    hits: Int[Array, " H"] | None = None
    credits: tuple[Int[Array, " C"], Float[Array, " C"]] | None = None


class Revenue(eqx.Module):
    """Revenue earned in the statistics window (not yet divided by its length or by n).

    ``counted`` sums the prices of the completions counted; ``integral`` integrates the
    completion *rate* of the jobs in service over time (sum over classes and speeds of price x
    service rate x decodes in service). Both estimate the same long-run revenue; the integral
    has the lower variance and is smooth in the parameters.

    Attributes:
        bundled_counted, bundled_integral: bundled pricing (Eq. 21-22): w_i per decode
            completion.
        separate_counted, separate_integral: separate pricing (Eq. 23): c_p P_i per prefill
            completion, c_d D_i per decode completion.
    """

    bundled_counted: Float[Array, "..."]
    bundled_integral: Float[Array, "..."]
    separate_counted: Float[Array, "..."]
    separate_integral: Float[Array, "..."]


class Summary(eqx.Module):
    """Statistics of a rollout, per replication (leading axis ``R``).

    Attributes:
        integrals: time integral of each level over the statistics window, ``(R, L * I)``
            (name-major: level ``k`` of class ``i`` at ``k * I + i``).
        counts: events of each counter inside the window, ``(R, T * I)``.
        stock_start: census of the rollout's starting state: jobs present in each level,
            ``(R, L * I)``. With a window that starts with the rollout (the default, and every
            statistics chunk of :func:`jaxqueue.simulate`), every job is accounted for:
            ``counted in = counted out + stock_end - stock_start`` per stage and class.
        stock_end: census at the end (filled when the rollout is closed; zero before).
        events: random events simulated (the warm-up included), ``(R,)``.
        logp: log-likelihood of the randomised policy decisions of the whole rollout, ``(R,)``
            (see :class:`jaxqueue.decisions.ScoreFunction`).
        revenue: the revenue in the window (:class:`Revenue`), or None for systems without
            prices.
    """

    integrals: Float[Array, "R L"]
    counts: Int[Array, "R T"]
    stock_start: Int[Array, "R L"]
    stock_end: Int[Array, "R L"]
    events: Int[Array, " R"]
    logp: Float[Array, " R"]
    revenue: Revenue | None


class Rollout(eqx.Module):
    """Result of :func:`rollout`.

    Attributes:
        state: the final states, in the kernel's layout (:func:`rep_axes`), times rebased so
            that the clock of a following rollout starts at zero.
        time: clock reached by each replication (the window's end once ``done``), ``(R,)``.
        done: whether each replication reached the window's end, ``(R,)``.
        steps: the steps each replication took, ``(R,)``: those it began with its clock
            before the window's end or zero-time bookkeeping pending (so the step whose holding
            time crossed the window's end counts; the steps after it drew nothing and left the
            state unchanged). A driver that continues the run passes each replication's total
            as the next rollout's ``first_step``, so its path does not depend on how the run is
            cut into rollouts.
        pending: whether each replication ended with zero-time bookkeeping left (its steps ran
            out first), ``(R,)``: one that ended at the window's end with some still has work
            there.
        overflow: whether a fixed-capacity buffer overflowed (the run is then invalid), ``(R,)``.
        invalid: whether an event rate was below 0 or not a number in a state the rollout
            checked (every :data:`STOP_BLOCK` steps of an exact rollout, and its last state): a
            count or parameter out of its range, so the run is not the model's, ``(R,)``.
        summary: the statistics (:class:`Summary`).
    """

    state: Any
    time: Float[Array, " R"]
    done: Bool[Array, " R"]
    steps: Int[Array, " R"]
    pending: Bool[Array, " R"]
    overflow: Bool[Array, " R"]
    invalid: Bool[Array, " R"]
    summary: Summary


class AbstractSystem(eqx.Module):
    """A continuous-time Markov chain with a policy: what one simulator step needs.

    Subclasses set ``level_names`` (quantities whose time integral is recorded, one per class,
    name-major), ``tally_names`` (event counters, one per class), and ``num_random`` (extra
    uniform words a step may use, e.g. to draw a patience), and implement the methods below.
    All methods are pure and traceable. ``decide`` takes every discrete decision
    (:mod:`jaxqueue.decisions`).
    """

    decide: AbstractDecisions = eqx.field(default_factory=Exact, kw_only=True)

    level_names: ClassVar[tuple[str, ...]]
    tally_names: ClassVar[tuple[str, ...]]
    num_random: ClassVar[int] = 0
    #: Uniform words :meth:`randomize` uses once per replication (0: it is not called).
    num_init_random: ClassVar[int] = 0

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of job classes; levels and tallies hold one entry per name and class."""

    @abc.abstractmethod
    def init(self) -> Any:
        """The state at time zero (an empty system)."""

    def randomize(self, state: Any, u: Float[Array, " K"]) -> Any:
        """A replication's own starting state from ``num_init_random`` uniforms (e.g. the
        randomised rounding of a fractional number of servers); the identity by default."""
        return state

    @abc.abstractmethod
    def rates(self, state: Any) -> Float[Array, " E"]:
        """Rates of the exponential events in ``state``."""

    @property
    def scheduled(self) -> bool:
        """Whether some events happen at scheduled times (:meth:`next_scheduled`) besides the
        exponential ones (static; False by default)."""
        return False

    def next_scheduled(self, state: Any) -> tuple[Float[Array, ""], Int[Array, ""]]:
        """The time (on the rollout's clock) and the event index of the next scheduled event,
        for a system with :attr:`scheduled`. A step fires it when it comes before the next
        exponential event (whose draw is then discarded: the exponential clocks are
        memoryless); :meth:`fire` must move the schedule on."""
        raise NotImplementedError

    def pending(self, state: Any) -> Bool[Array, ""]:
        """Whether ``state`` needs a zero-time bookkeeping step before the next random event
        (e.g. discarding an abandoned job at the head of a lazy buffer, :mod:`jaxqueue.buffer`)."""
        return jnp.bool_(False)

    @abc.abstractmethod
    def fire(self, state: Any, event: Event, t: Float[Array, ""], u: Float[Array, " U"],
             window: tuple[Float[Array, ""], Float[Array, ""]]) -> tuple[Any, Flow]:
        """Applies ``event`` at time ``t`` and the policy's decisions.

        ``window`` is the statistics window ``(start, end]`` on this rollout's clock (its start
        may be negative: it began in an earlier rollout). Returns the new state and its
        :class:`Flow`.
        """

    def close(self, state: Any, window: tuple[Float[Array, ""], Float[Array, ""]]) -> Flow:
        """What jobs still held at the end of a run owe: abandonments from lazy buffers whose
        deadline passed inside the window, and their waits inside it. ``window`` ends now."""
        num = len(self.level_names) * self.num_classes
        return Flow(counts=jnp.zeros(len(self.tally_names) * self.num_classes, jnp.int32),
                    waits=jnp.zeros(num, rng.real_dtype()))

    @property
    def num_hit_tallies(self) -> int:
        """How many of the last counters steps report as ``hits`` (:class:`Flow`) instead of
        in ``counts``; 0 by default."""
        return 0

    @property
    def num_credited_levels(self) -> int:
        """How many of the last levels :meth:`levels` always gives as 0, because :meth:`fire`
        credits their time integrals job by job (``credits`` or ``waits``, see :class:`Flow`):
        the step leaves them out of its dense ``weight * levels`` add, and adds ``credits``
        to them only. 0 by default."""
        return 0

    def tallied(self, counts: Int[Array, "... T"]) -> Int[Array, "... T"]:
        """The counters as :attr:`tally_names` define them, from what the steps added up (the
        last axis): the identity, unless a system counts some of them as a histogram's bins
        (``hits``, see :class:`Flow`) and turns those into the named counters here, e.g. into
        cumulative counts. Linear, so it may be applied to sums over rollouts."""
        return counts

    def census(self, state: Any, now: Float[Array, ""]) -> Int[Array, " L"]:
        """Jobs present in each level at time ``now`` (lazily buffered jobs whose deadline has
        passed are not present). Called once per rollout, so it may scan a whole buffer."""
        return jnp.round(self.levels(state)).astype(jnp.int32)

    @abc.abstractmethod
    def levels(self, state: Any) -> Float[Array, " L"]:
        """Quantities integrated over time, ``(len(level_names) * num_classes,)``."""

    def dense_levels(self, state: Any) -> tuple[Array, ...]:
        """The levels the step integrates (all but the last :attr:`num_credited_levels`), as
        consecutive blocks: by default one, sliced from :meth:`levels`. A system whose levels
        are a concatenation gives its parts, which the step adds each to its own integrals:
        the concatenation was a copy of every level in every step (the pooled engine's
        blocks made its step 1.12x faster at 2 classes, 1.19x at 8, 1.00x at 32)."""
        levels = self.levels(state)
        return (levels[:levels.shape[0] - self.num_credited_levels],)

    def revenue(self, integrals: Float[Array, " L"], counts: Int[Array, " T"]) -> Revenue | None:
        """Revenue in the window from the integrals and counts (None: the system has no prices)."""
        return None

    def rebase(self, state: Any, elapsed: Float[Array, ""]) -> Any:
        """Shifts stored times by ``elapsed`` (start of the next rollout's clock)."""
        return state

    def overflow(self, state: Any) -> Bool[Array, ""]:
        """Whether a fixed-capacity structure overflowed (the run is then invalid)."""
        return jnp.bool_(False)

    def overflow_message(self) -> str:
        return "a fixed-capacity buffer overflowed"


# ---- one step ---------------------------------------------------------------------------------
class _Acc(eqx.Module):
    integrals: tuple[Float[Array, " B"], ...]  # AbstractSystem.dense_levels' blocks
    counts: Int[Array, " T"]  # the leading counters, added densely
    events: Int[Array, ""]
    logp: Float[Array, ""]
    taken: Int[Array, ""]  # steps begun before the window's end or with bookkeeping pending
    bins: Int[Array, " H"] | None = None  # the trailing AbstractSystem.num_hit_tallies
    # The trailing AbstractSystem.num_credited_levels, kept apart: in one vector with the
    # others, a step sliced them off and concatenated them back (a copy of every integral).
    credited: Float[Array, " C"] | None = None


#: Up to this many hit counters a step adds its hits by comparing each with every counter, past
#: it by a scatter. Measured on the pooled engine (n = 500, 1,024 replications, one core, steps
#: per second against the scatter): 1.14x at 2 classes (16 counters), 0.97x at 3 (24), 1.05x at
#: 4 (32), 0.98x at 8 (64), 0.91x at 32 (256); the scatter's loop costs about 2 ns a hit.
_DENSE_HITS = 16


def _zero_acc(system: AbstractSystem, batch: tuple[int, ...], clock_dtype, count_dtype) -> _Acc:
    """Empty accumulators (with a leading ``batch`` shape)."""
    num_counts = len(system.tally_names) * system.num_classes
    hit = system.num_hit_tallies
    credited = system.num_credited_levels
    blocks = jax.eval_shape(system.dense_levels, jax.eval_shape(system.init))
    return _Acc(
        integrals=tuple(jnp.zeros((*batch, *b.shape), clock_dtype) for b in blocks),
        counts=jnp.zeros((*batch, num_counts - hit), count_dtype),
        events=jnp.zeros(batch, jnp.int32),
        logp=jnp.zeros(batch, rng.real_dtype()),
        taken=jnp.zeros(batch, jnp.int32),
        bins=jnp.zeros((*batch, hit), count_dtype) if hit else None,
        credited=jnp.zeros((*batch, credited), clock_dtype) if credited else None,
    )


def _integrals(acc: _Acc) -> Float[Array, "... L"]:
    """Every level's time integral."""
    return jnp.concatenate([*acc.integrals]
                           + ([] if acc.credited is None else [acc.credited]), axis=-1)


def _counts(acc: _Acc) -> Int[Array, "... T"]:
    """Every counter as the steps added them up (before :meth:`AbstractSystem.tallied`)."""
    if acc.bins is None:
        return acc.counts
    return jnp.concatenate([acc.counts, acc.bins], axis=-1)


def _step(system: AbstractSystem, carry, b: UInt32[Array, " W"], w0, w1, clock_dtype: Any):
    """One event (or one zero-time bookkeeping step) of one replication (vmapped by the caller).

    The state is constant on ``[t, t_new)``: its levels are integrated over that interval's part
    inside the window.
    """
    state, t, acc = carry
    decide = system.decide
    rates = system.rates(state)
    num_events = rates.shape[0]
    total = jnp.sum(rates)
    dt = rng.exponential(b[0]) / total  # +inf when nothing can happen
    pending = system.pending(state)
    t_new = jnp.where(pending, t, t + dt.astype(clock_dtype))
    if system.scheduled:  # a scheduled event that comes first fires instead, at its time
        at, which = system.next_scheduled(state)
        first = ~pending & (at.astype(clock_dtype) < t_new)
        t_new = jnp.where(first, at.astype(clock_dtype), t_new)
    # A replication that has reached the window's end takes no more random events in this
    # rollout (only zero-time bookkeeping): a holding time below half a float ulp of the clock
    # would otherwise land an event exactly on the end.
    live = (t_new <= w1) & (pending | (t < w1))
    random = live & ~pending
    index = jnp.where(random, decide.event(rates, rng.uniform(b[1])), num_events)
    if system.scheduled:
        index = jnp.where(random & first, which, index)
    index, t_new, live, random = fence((index, t_new, live, random))
    extra = 2 + system.num_random
    noise = rng.uniform(b[extra:]) if b.shape[0] > extra else None
    event = Event(index=index, hot=decide.event_hot(rates, index, noise))
    weight = jnp.maximum(jnp.minimum(t_new, w1) - jnp.maximum(t, w0), 0)
    real = rng.real_dtype()
    window = (w0.astype(real), w1.astype(real))
    levels = system.dense_levels(state)
    new_state, flow = system.fire(state, event, t_new.astype(real), rng.uniform(b[2:extra]),
                                  window)
    # Keep the carry's dtypes (under x64, sums of int32 counts promote to int64).
    new_state = jax.tree.map(lambda a, b: a.astype(b.dtype), new_state, state)
    bins = acc.bins
    if bins is not None:  # hits past the dense counters (an index past the end is none)
        at = flow.hits - acc.counts.shape[0]
        if bins.shape[0] <= _DENSE_HITS:
            hit = at[:, None] == jnp.arange(bins.shape[0])
            bins = bins + jnp.sum(hit, axis=0, dtype=bins.dtype)
        else:
            bins = bins.at[at].add(jnp.ones((), bins.dtype), mode="drop")
    integrals = [a + weight * v.astype(clock_dtype) for a, v in zip(acc.integrals, levels,
                                                                     strict=True)]
    ends = np.cumsum([a.shape[0] for a in integrals])
    dense = int(ends[-1])
    credited = acc.credited
    if flow.waits is not None:
        waits = flow.waits.astype(clock_dtype)
        integrals = [a + waits[end - a.shape[0]:end] for a, end in zip(integrals, ends,
                                                                      strict=True)]
        if credited is not None:
            credited = credited + waits[dense:]
    if flow.credits is not None:  # where no entry falls this adds nothing, as 0.0 would
        where, amount = flow.credits
        amount = amount.astype(clock_dtype)
        if credited is not None:  # credits fall in the credited levels (num_credited_levels)
            at = jnp.where(where >= dense, where - dense, credited.shape[0])
            credited = credited.at[at].add(amount, mode="drop")
        elif len(integrals) == 1:
            integrals = [integrals[0].at[where].add(amount, mode="drop")]
        else:
            raise ValueError("Flow.credits from a system whose dense_levels are several "
                             "blocks: its num_credited_levels must say where they fall")
    acc = _Acc(
        integrals=tuple(integrals),
        credited=credited,
        counts=acc.counts + flow.counts.astype(acc.counts.dtype),
        bins=bins,
        events=acc.events + random.astype(jnp.int32),
        logp=acc.logp + jnp.asarray(flow.logp, acc.logp.dtype),
        taken=acc.taken + (pending | (t < w1)).astype(jnp.int32),
    )
    return (new_state, jnp.where(live, t_new, w1), acc)


# ---- layout -----------------------------------------------------------------------------------
#: Per-replication vectors at least this long keep the replication axis first (see rep_axes).
_LONG = 128


def _rep_axis(shape: tuple[int, ...]) -> int:
    return 0 if len(shape) >= 2 or (len(shape) == 1 and shape[0] >= _LONG) else -1


def rep_axes(system: AbstractSystem) -> Any:
    """Where each state leaf keeps its replication axis: first for long per-replication vectors
    and for every array of two or more axes (buffers and trees written at a per-replication
    slot, which XLA then updates in place; with the axis last, the per-GPU engine's small tree
    levels were transposed twice per step), last for scalars and per-class vectors (so the
    step's arithmetic runs along contiguous replication vectors, what the CPU's SIMD units and
    a GPU's warps want)."""
    return jax.tree.map(lambda a: _rep_axis(a.shape), jax.eval_shape(system.init))


#: The stream whose random words set up replications (:meth:`AbstractSystem.randomize`).
INIT_STREAM = 0xFFFFFFFF


def initial_state(system: AbstractSystem, key: PRNGKeyArray, rep_ids: UInt32[Array, " R"]) -> Any:
    """Every replication's starting state in the kernel's layout: :meth:`AbstractSystem.init`,
    then :meth:`AbstractSystem.randomize` with the replication's own uniforms (drawn from
    ``fold_in(fold_in(key, r), INIT_STREAM)``, a stream no step uses)."""
    reps = rep_ids.shape[0]
    state = replicate(system.init(), reps)
    if not system.num_init_random:
        return state
    width = system.num_init_random
    u = jax.vmap(lambda r: rng.uniform(rng.step_bits(rng.rep_key(key, r, INIT_STREAM), 0, width)),
                 out_axes=-1)(rep_ids)
    axes = rep_axes(system)
    return jax.vmap(system.randomize, in_axes=(axes, -1), out_axes=axes)(state, u)


#: :func:`initial_state` as one compiled program (op by op it would compile dozens of tiny ones).
initial_state_jit = jax.jit(initial_state)


def replicate(state: Any, reps: int) -> Any:
    """``reps`` copies of a state in the kernel's layout (see :func:`rep_axes`)."""
    def copies(a):
        a = jnp.asarray(a)
        if _rep_axis(a.shape) == 0:
            return jnp.broadcast_to(a[None], (reps, *a.shape))
        return jnp.broadcast_to(a[..., None], (*a.shape, reps))
    return jax.tree.map(copies, state)


# ---- the kernel -------------------------------------------------------------------------------
#: Steps between two checks of whether a rollout may stop early, and whose random words are
#: hashed together (exact decisions only).
STOP_BLOCK = 64


def _rollout(key, system, rep_ids, state, w0, w1, lo, hi, *, steps: int, clock_dtype: Any,
             close: bool, remat: int | None = None, stop_early: bool = True) -> Rollout:
    if not system.decide.differentiable:
        system = guard(system)
    width = words_per_step(system)
    reps = rep_ids.shape[0]
    axes = rep_axes(system)
    if state is None:
        state = initial_state(system, key, rep_ids)
    # Each replication's position in its stream: the steps it took in earlier rollouts.
    lo = jnp.broadcast_to(jnp.asarray(lo, jnp.uint32), (reps,))
    hi = jnp.broadcast_to(jnp.asarray(hi, jnp.uint32), (reps,))
    words = jax.vmap(lambda r: rng.rep_key(key, r), out_axes=-1)(rep_ids)  # (2, R)
    # A counter rises by at most one per step: int16 halves their memory traffic per step.
    count_dtype = jnp.int16 if steps < 2**15 else jnp.int32
    acc0 = _zero_acc(system, (reps,), clock_dtype, count_dtype)
    real = rng.real_dtype()
    stock_start = jax.vmap(lambda s: system.census(s, jnp.zeros((), real)), in_axes=(axes,),
                           out_axes=-1)(state)
    w0 = jnp.broadcast_to(jnp.asarray(w0, clock_dtype), (reps,))
    w1 = jnp.broadcast_to(jnp.asarray(w1, clock_dtype), (reps,))
    pending = jax.vmap(system.pending, in_axes=(axes,))
    # In a valid state every event rate is >= 0 (NaN fails the test too). Checked once per
    # block of steps, to keep it off the step's own path: a count that a wrong event took below
    # 0 stays there until its class's next entry, most often for many steps.
    # Relaxed rollouts (pathwise gradients) are not checked: their counts are not the chain's.
    invalid = jax.vmap(lambda s: ~(jnp.min(system.rates(s)) >= 0)
                       & (not system.decide.differentiable), in_axes=(axes,))
    # Accumulators with the replication axis first: the step writes a per-replication row of
    # levels and counters, which with the axis last XLA transposed on every step.
    carry_axes = (axes, -1, 0)
    # The window is closed over, not carried: loop-invariant inputs cost no copies per step.
    # Decisions computed once per step (see fence), in exact steps only: the predicate is true,
    # from an input XLA cannot see through.
    if system.decide.differentiable:
        fencing = contextlib.nullcontext
    else:
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        key_word = jnp.ravel(jax.random.key_data(key) if typed else key)[0].astype(jnp.float32)
        fencing = functools.partial(_fenced, ~jnp.isnan(key_word))

    def one_step(c, b, a, z):
        with fencing():
            return _step(system, c, b, a, z, clock_dtype)

    step = jax.vmap(one_step, in_axes=(carry_axes, -1, -1, -1), out_axes=carry_axes)
    step_words = jax.vmap(rng.step_bits, in_axes=(-1, None, None, -1, -1), out_axes=-1)  # (W, R)
    carry = (state, jnp.zeros((reps,), clock_dtype), acc0)

    def body(c, s):
        return step(c, step_words(words, s, width, lo, hi), w0, w1), None

    def run_block(c, start, length: int):
        # The block's random words are hashed before its steps, all at once: inside the step,
        # XLA recomputed each hash in every kernel that read one of its words.
        bits = rng.block_words(words, start, length, width, lo, hi)
        return jax.lax.scan(lambda c, b: (step(c, jnp.stack(b), w0, w1), None), c, bits)[0]

    if remat is None and stop_early and not system.decide.differentiable:
        # Blocks of steps while some replication can still change: once every replication has
        # reached the window's end with no bookkeeping left, the remaining steps would change
        # nothing (the result is the same as scanning them, bit for bit).
        block = min(steps, STOP_BLOCK)
        head = steps % block
        if head:
            carry = run_block(carry, jnp.uint32(0), head)

        def more(c):
            (state, t, _), start, _ = c
            return (start < steps) & ~jnp.all((t >= w1) & ~pending(state))

        def run(c):
            carry, start, bad = c
            carry = run_block(carry, start, block)
            return carry, start + jnp.uint32(block), bad | invalid(carry[0])

        (state, t, acc), _, bad = jax.lax.while_loop(
            more, run, (carry, jnp.uint32(head), invalid(carry[0])))
    elif remat is None:
        (state, t, acc), _ = jax.lax.scan(body, carry, jnp.arange(steps, dtype=jnp.uint32))
        bad = invalid(state)
    else:
        # Reverse-mode memory: keep the carry only every `remat` steps, recompute in between.
        @jax.checkpoint
        def block(c, start):
            return jax.lax.scan(body, c, start + jnp.arange(remat, dtype=jnp.uint32))[0], None

        starts = jnp.arange(steps // remat, dtype=jnp.uint32) * jnp.uint32(remat)
        (state, t, acc), _ = jax.lax.scan(block, carry, starts)
        bad = invalid(state)
    done = t >= w1
    left = pending(state)
    overflow = jax.vmap(system.overflow, in_axes=(axes,))(state)
    state = jax.vmap(system.rebase, in_axes=(axes, -1), out_axes=axes)(state, t.astype(real))
    integrals, counts = _integrals(acc).T, system.tallied(_counts(acc).astype(jnp.int32)).T
    stock_end = jnp.zeros_like(stock_start)
    if close:  # on the rebased clock the run ends at 0
        flow, stock_end = _close(system, state, (w0 - t).astype(real), axes)
        integrals = integrals + flow.waits.astype(clock_dtype)
        counts = counts + flow.counts
    revenue = jax.vmap(system.revenue, in_axes=(-1, -1))(integrals, counts)
    summary = Summary(integrals=integrals.T, counts=counts.T, stock_start=stock_start.T,
                      stock_end=stock_end.T, events=acc.events, logp=acc.logp,
                      revenue=revenue)
    return Rollout(state=state, time=t, done=done, steps=acc.taken, pending=left,
                   overflow=overflow, invalid=bad, summary=summary)


_rollout_jit = jax.jit(_rollout, static_argnames=("steps", "clock_dtype", "close", "remat",
                                                  "stop_early"))


def rollout(key: PRNGKeyArray, system: AbstractSystem, *, steps: int, reps: int | None = None,
            rep_ids: UInt32[Array, " R"] | None = None, state: Any = None,
            window: tuple[Any, Any] = (0.0, jnp.inf), first_step: Any = 0,
            clock_dtype: Any = None, close: bool = True, remat: int | None = None,
            stop_early: bool = True) -> Rollout:
    """Runs ``steps`` events of each replication from ``state`` on the device.

    Pure and jitted (one program per system structure, ``steps`` and ``reps``): composes with
    ``jax.jit`` and ``jax.vmap`` over the system's parameters. Replication ``r`` draws its random
    numbers from its own stream, ``fold_in(fold_in(key, r), 0)``, step ``first_step + s`` of it
    in the rollout's step ``s``: its path depends only on ``(key, r)``, and a run cut into
    several rollouts (each from the last one's state, ``first_step`` advanced by its
    :attr:`Rollout.steps`) follows the same path however it is cut. With
    :class:`~jaxqueue.decisions.Exact` decisions, differentiating through the parameters raises
    :class:`~jaxqueue.decisions.NotDifferentiableError`.

    Args:
        key: a ``jax.random.key``.
        system: the policy and parameters to simulate.
        steps: scan steps (static): random events plus zero-time bookkeeping steps; a
            replication that reaches the window's end stops there.
        reps: number of replications, with ids ``0 .. reps - 1`` (or give ``rep_ids``).
        rep_ids: replication ids, ``(R,)`` uint32.
        state: starting states in the kernel's layout (:func:`replicate`; a previous
            :attr:`Rollout.state`); default: every replication empty.
        window: statistics window ``(start, end]`` on this rollout's clock (scalars or ``(R,)``
            arrays); the default ``(0, inf)`` counts everything.
        first_step: each replication's position in its stream: the steps it took in the
            run's earlier rollouts (the sum of their :attr:`Rollout.steps`), one for every
            replication or each its own, ``(R,)``; integers >= 0 (64-bit on the host).
        clock_dtype: dtype of the clock and the time integrals (default: float32, or float64
            under ``jax.enable_x64``).
        close: settle what jobs still held owe at the end (:meth:`AbstractSystem.close`) and
            take the end census; a driver that continues the run passes False.
        remat: for reverse-mode gradients through relaxed decisions: keep the scan's carry
            only every ``remat`` steps and recompute the others (memory ``O(steps / remat +
            remat)`` carries instead of ``O(steps)``); ``steps`` must be a multiple of it.
        stop_early: with exact decisions, stop (checking every :data:`STOP_BLOCK` steps) once
            every replication has reached the window's end with no bookkeeping left; the
            result is the same bit for bit as running all ``steps`` (False does that).

    Returns:
        The :class:`Rollout`.
    """
    if (reps is None) == (rep_ids is None):
        raise ValueError("give exactly one of reps (ids 0 .. reps-1) and rep_ids")
    if rep_ids is None:
        if isinstance(reps, bool) or int(reps) != reps or reps < 1:
            raise ValueError(f"reps = {reps!r} is invalid: must be an integer >= 1")
        rep_ids = jnp.arange(int(reps), dtype=jnp.uint32)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps = {steps!r} is invalid: must be an integer >= 1")
    if remat is not None and (int(remat) < 1 or steps % int(remat)):
        raise ValueError(f"remat = {remat!r} is invalid: must be an integer >= 1 dividing "
                         f"steps = {steps}")
    clock_dtype = rng.real_dtype() if clock_dtype is None else jnp.dtype(clock_dtype)
    lo, hi = rng.split_position(first_step)
    return _rollout_jit(key, system, jnp.asarray(rep_ids, jnp.uint32), state, window[0],
                        window[1], lo, hi, steps=int(steps),
                        clock_dtype=clock_dtype, close=bool(close),
                        remat=None if remat is None else int(remat), stop_early=bool(stop_early))


def _close(system, state, w0, axes):
    """Residual flows and the end census of every replication (state rebased to end at 0)."""
    def one(s, a):
        now = jnp.zeros((), a.dtype)
        return system.close(s, (a, now)), system.census(s, now)
    return jax.vmap(one, in_axes=(axes, -1), out_axes=-1)(state, w0)


def close(system: AbstractSystem, state: Any, window_start: Any) -> tuple[Flow, Int[Array, "L R"]]:
    """What the jobs still held in ``state`` owe at the end of a run, and the end census.

    ``state`` is in the kernel's layout with its clock rebased to the end of the run (a
    :attr:`Rollout.state`); ``window_start`` is where the statistics window began on that clock
    (``<= 0``), per replication. Arrays keep the replication axis last.
    """
    return _close_jit(system, state, jnp.asarray(window_start))


@jax.jit
def _close_jit(system, state, w0):
    return _close(system, state, w0.astype(rng.real_dtype()), rep_axes(system))


def compile_count() -> int:
    """Number of programs compiled for the kernel in this process (for tests)."""
    return _rollout_jit._cache_size()


def trajectory(key: PRNGKeyArray, system: AbstractSystem, num_events: int, *, rep: int = 0,
               every: int = 1) -> tuple[Any, Float[Array, " N"], Int[Array, "N T"]]:
    """The path of replication ``rep`` over its first ``num_events`` steps (opt-in, for checks
    and plots): states and times after each step, and cumulative counters (no window).

    Uses the same starting state, step and random numbers as a rollout from the start. ``every``
    keeps one step in ``every``.
    """
    state = system.init()
    if system.num_init_random:  # the replication's own starting state (AbstractSystem.randomize)
        batch = initial_state(system, key, jnp.asarray([rep], jnp.uint32))
        state = jax.tree.map(lambda a, axis: jnp.take(a, 0, axis=axis), batch, rep_axes(system))
    bits = rng.chunk_words(key, jnp.asarray([rep], jnp.uint32), num_events,
                           words_per_step(system))[..., 0]
    real = rng.real_dtype()
    acc0 = _zero_acc(system, (), real, jnp.int32)
    w0, w1 = jnp.asarray(-1.0, real), jnp.asarray(jnp.inf, real)

    def run(system, carry, bits):
        def body(carry, b):
            carry = _step(system, carry, b, w0, w1, real)
            return carry, (carry[0], carry[1], _counts(carry[2]))
        return jax.lax.scan(body, carry, bits)[1]

    carry = (state, jnp.asarray(0.0, real), acc0)
    states, times, tallies = jax.jit(run)(system, carry, bits)
    tallies = system.tallied(tallies)
    return jax.tree.map(lambda a: a[::every], states), times[::every], tallies[::every]


def words_per_step(system: AbstractSystem) -> int:
    """Random words one step uses: two for the holding time and the event, the system's own,
    and any noise its decisions need (:meth:`~jaxqueue.decisions.AbstractDecisions.noise_words`)."""
    num_events = jax.eval_shape(lambda: system.rates(system.init())).shape[0]
    return 2 + system.num_random + system.decide.noise_words(num_events)
