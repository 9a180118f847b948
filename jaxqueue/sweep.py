"""Sweeps: many systems of one structure simulated together as one vmapped program.

A grid of instances (rates, lengths, prices, plans, n, B: any array leaf of a system) is
simulated by stacking the systems along a leading axis (:func:`stack`) and ``jax.vmap``-ing the
kernel's rollout over that axis: one compiled program per *structure* (policy kind, engine,
number of classes, per-GPU array length: the static fields), not one compiled call per point.
Points that differ only in FCFS buffer capacity share a program: each group runs with its largest
capacity (a capacity changes what fits, never a sample path). :func:`simulate_many` is
:func:`jaxqueue.simulate` for such a stack: the same host loop of chunks (warm-up first, then the
window; float64 sums on the host), run in lockstep over the points, each point following exactly
the schedule of chunks it would follow alone.

So point ``p`` of ``simulate_many(key, systems, ...)`` equals ``simulate(key, systems[p], ...)``
run with a single batch (its results, those of any batching): replication ``r`` of every point
draws its ``p``-th step's random numbers from position ``p`` of its stream ``fold_in(fold_in(key,
r), 0)``, counting only the steps it took (common random numbers across the points), and the
event counts are bit-identical (a test checks this).

A FCFS ring that overflows costs a replication, not the sweep: the group runs to its end, then
only the replications that overflowed are rerun, with rings four times larger, on the same
random numbers and the same schedule of chunks as their point (they get what a large enough
ring gives from the start). A replication's path does not depend on the others of its point
(the steps it waits through, at the warm-up, draw nothing), but the point's schedule does: its
statistics window starts at the chunk after the slowest of them finishes its warm-up, and
``Run.chunks`` counts the chunks to the end. An overflow inside the warm-up can move that
chunk; the rerun measures where the replication really finishes its warm-up, and if the
window's start moves, the point's other replications are rerun too, so that the point's
schedule (``Run.chunks``) is that of a large enough ring. Each :class:`Run` says
which replications were rerun (``rerun_reps``), how many rounds touched it (``regrown``) and
the capacity its results hold for (``buffer_capacity``); each round is reported (``notify``, or a
:class:`jaxqueue.driver.SimulationWarning`).

Points run in lockstep, so a chunk costs as much for every point: stack points whose event rates
are similar (one n, comparable loads). Points with very different n (convergence in n) are
better simulated one by one with :func:`jaxqueue.simulate`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from . import kernel, rng
from .checkpoint import Batch
from .driver import (
    BufferOverflowError,
    Run,
    SimulationWarning,
    _capacity,
    _check_chunk,
    _check_window,
    _merge,
    _regrow,
    _shard,
)
from .kernel import AbstractSystem, SimulationError

__all__ = ["simulate_many", "stack", "structure"]


def _with_capacity(system: AbstractSystem, capacity: int) -> AbstractSystem:
    """``system`` with ``capacity`` FCFS slots (unchanged when it has no FCFS buffers)."""
    if _capacity(system) is None:
        return system
    return dataclasses.replace(system, capacity=int(capacity))


def structure(system: AbstractSystem) -> tuple[Any, tuple[tuple[tuple[int, ...], str], ...]]:
    """What must agree for two systems to be stacked: the PyTree structure (with every static
    field: policy kind, capacities, class names) and each leaf's shape and dtype."""
    leaves, treedef = jax.tree.flatten(system)
    return treedef, tuple((np.shape(a), str(np.asarray(a).dtype)) for a in leaves)


def stack(systems: Sequence[AbstractSystem]) -> AbstractSystem:
    """One system whose array leaves carry a leading axis over ``systems`` (host NumPy arrays, so
    float64 inputs keep their precision until the program converts them, as for one system).

    Raises:
        ValueError: ``systems`` is empty, or two systems differ in structure (the message says
            which point and what differs).
    """
    systems = list(systems)
    if not systems:
        raise ValueError("systems is empty: give at least one system")
    first = structure(systems[0])
    for k, s in enumerate(systems[1:], start=1):
        other = structure(s)
        if other[0] != first[0]:
            raise ValueError(f"systems[{k}] has a different structure from systems[0] (policy, "
                             f"engine, capacity, classes or other static fields): {other[0]} "
                             f"vs {first[0]}")
        if other[1] != first[1]:
            raise ValueError(f"systems[{k}] has leaves of different shapes or dtypes from "
                             f"systems[0]: {other[1]} vs {first[1]}")
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *systems)


# ---- the vmapped kernel -----------------------------------------------------------------------
def _many(key, systems, rep_ids, states, w0, w1, lo, hi, *, steps, clock_dtype):
    # rep_ids, lo, hi: (points, R), each point's own replication ids (the same row for a whole
    # grid) and each replication's own position in its stream (low and high words).
    def one(system, ids, state, a, b, low, high):
        # A vmapped early stop would select over every state leaf per block: scan instead.
        return kernel._rollout(key, system, ids, state, a, b, low, high, steps=steps,
                               clock_dtype=clock_dtype, close=False, stop_early=False)
    return jax.vmap(one)(systems, rep_ids, states, w0, w1, lo, hi)


_many_jit = jax.jit(_many, static_argnames=("steps", "clock_dtype"))


@jax.jit
def _close_many(systems, states, w0):
    def one(system, state, a):
        return kernel._close(system, state, a.astype(rng.real_dtype()), kernel.rep_axes(system))
    return jax.vmap(one)(systems, states, w0)


@jax.jit
def _init_many(key, systems, rep_ids):
    return jax.vmap(lambda s, ids: kernel.initial_state(s, key, ids))(systems, rep_ids)


def compile_count() -> int:
    """Programs compiled for the vmapped chunk in this process (for tests)."""
    return _many_jit._cache_size()


# ---- the driver -------------------------------------------------------------------------------
def simulate_many(
    key: PRNGKeyArray,
    systems: Sequence[AbstractSystem],
    *,
    reps: int,
    horizon: float,
    warmup: float = 0.0,
    chunk_events: int = 1024,
    clock_dtype: Any = None,
    progress: Callable[[float], None] | None = None,
    devices: Sequence[Any] | None = None,
    max_chunks: int | None = None,
    grow_buffers: bool = True,
    notify: Callable[[str], None] | None = None,
) -> list[Run]:
    """Simulates ``reps`` replications of each system over ``[0, horizon]``, one vmapped program
    per group of systems with the same structure.

    Args:
        key: a ``jax.random.key``; replication ``r`` of every point uses ``fold_in(key, r)``
            (common random numbers across the points).
        systems: the points (any mix of structures; each group of equal structure, see
            :func:`structure`, runs as one program, in the order of first appearance).
        reps, horizon, warmup, chunk_events, clock_dtype, devices, max_chunks: as in
            :func:`jaxqueue.simulate` (replications are sharded over ``devices``).
        progress: a callable receiving the fraction of the whole sweep done.
        grow_buffers: when a FCFS ring overflows in some replications, rerun only those (see
            the module docstring) with rings four times larger, until none overflows; the
            results are those of rings large enough from the start. False raises
            :class:`jaxqueue.driver.BufferOverflowError` instead.
        notify: receives one line per round of reruns (which points and replications, the new
            capacity). ``None``: each round is a :class:`jaxqueue.driver.SimulationWarning`.

    Returns:
        One :class:`jaxqueue.Run` per system, in the order given. Each point's
        ``wall_seconds`` and ``compile_seconds`` are its group's (reruns included), shared
        equally among the group's points; ``rerun_reps``, ``regrown`` and ``buffer_capacity``
        say what was rerun for that point.

    Raises:
        jaxqueue.driver.BufferOverflowError: a ring overflowed and could not be grown
            (``grow_buffers=False``, a system without a capacity, or memory); the message names
            the points.
        jaxqueue.SimulationError: a replication met an event rate below 0 or NaN (a count or
            parameter out of its range), whose results would be wrong; or its clock went
            backwards, which would otherwise never end.
    """
    _check_window(reps, horizon, warmup, chunk_events)
    systems = list(systems)
    if not systems:
        raise ValueError("systems is empty: give at least one system")
    clock_dtype = rng.real_dtype() if clock_dtype is None else np.dtype(clock_dtype)
    if clock_dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("clock_dtype = float64 needs jax.enable_x64(True)")
    devices = list(devices) if devices is not None else None
    if devices is not None and len(devices) == 0:
        raise ValueError("devices is empty: give at least one device, or None")
    tell = notify if notify is not None else _warn
    groups: dict[Any, list[int]] = {}
    for k, s in enumerate(systems):
        groups.setdefault(structure(_with_capacity(s, 1)), []).append(k)
    runs: list[Run | None] = [None] * len(systems)
    done_points = 0
    for members in groups.values():
        size = len(members)

        def sub(f, base=done_points, size=size):
            if progress:
                progress((base + f * size) / len(systems))
        group = [systems[k] for k in members]
        largest = max((_capacity(s) or 0) for s in group)
        if largest:
            group = [_with_capacity(s, largest) for s in group]
        for k, run in zip(members, _run_group(key, group, members, int(reps), float(horizon),
                                              float(warmup), int(chunk_events), clock_dtype,
                                              sub, devices, max_chunks, bool(grow_buffers),
                                              tell), strict=True):
            runs[k] = run
        done_points += len(members)
    return runs  # type: ignore[return-value]


def _warn(message: str) -> None:
    warnings.warn(message, SimulationWarning, stacklevel=4)  # the caller of simulate_many


#: Most rounds of reruns of one group (a safety net: growth is bounded by memory, and a moved
#: window start is fixed in the round after every warm-up is known).
_MAX_ROUNDS = 16
#: A chunk index no rollout reaches ("never" for the chunk a replication finished a phase in).
_NEVER = np.iinfo(np.int64).max


@dataclasses.dataclass
class _Stack:
    """What :func:`_run_stack` returns, per point and replication column (host arrays)."""

    integrals: np.ndarray  # (P, R, L)
    tallies: np.ndarray  # (P, R, T), closed
    time: np.ndarray  # (P, R)
    stock_start: np.ndarray  # (P, R, L)
    stock_end: np.ndarray  # (P, R, L)
    events: np.ndarray  # (P, R)
    warm: np.ndarray  # (P, R): chunk in which the warm-up ended (-1: at the start; _NEVER)
    end: np.ndarray  # (P, R): chunk in which the horizon was reached (else the last chunk)
    over: np.ndarray  # (P, R): first chunk after which a ring had overflowed, -1 if none
    start: np.ndarray  # (P,): chunk at which the point's statistics window started (-1: not)
    wall: float
    compile: float


def _run_stack(key, systems, rep_ids, floors, horizon, warmup, chunk_events, clock_dtype, report,
               devices, max_chunks) -> _Stack:
    """The host loop of :func:`jaxqueue.driver._run_batch`, with a leading axis over points.

    Point ``p`` runs replications ``rep_ids[p]`` and keeps its own phase exactly as when run
    alone: the warm-up until every one of its replications reached it with no bookkeeping left
    *and* the chunk index reached ``floors[p]`` (0 for a fresh run; a rerun passes the chunk
    its point's window started at), then the window. A replication with nothing left to do in a
    chunk (it sits at its stop time) draws nothing and keeps its step count. An overflow does
    not stop the loop: it is recorded per replication (that replication's results are then
    invalid).
    """
    template = systems[0]
    stacked = stack(systems)
    num, width = rep_ids.shape
    axes = jax.tree.map(lambda a: a + 1 if a == 0 else a, kernel.rep_axes(template))
    ids = jnp.asarray(rep_ids, jnp.uint32)
    states = _shard(_init_many(key, stacked, ids), axes, devices)
    ids = _shard(ids, -1, devices)
    floors = np.asarray(floors, np.int64)
    levels = len(template.level_names) * template.num_classes
    tallies_n = len(template.tally_names) * template.num_classes
    t_now = np.zeros((num, width))
    integrals = np.zeros((num, width, levels))
    tallies = np.zeros((num, width, tallies_n), np.int64)
    stock_start = np.zeros((num, width, levels), np.int64)
    events = np.zeros((num, width), np.int64)
    taken = np.zeros((num, width), np.int64)  # each replication's steps, as in _run_batch
    pending = np.zeros((num, width), bool)
    warm = np.where(t_now >= warmup, -1, _NEVER)
    end = np.full((num, width), _NEVER)
    over = np.full((num, width), -1)
    start_chunk = np.full(num, -1)
    wall = compile_s = 0.0
    chunks = 0

    def call(w0, w1):
        lo, hi = rng.split_position(taken)
        return _many_jit(key, stacked, ids, states, w0, w1, _shard(lo, -1, devices),
                         _shard(hi, -1, devices), steps=chunk_events, clock_dtype=clock_dtype)

    before = compile_count()
    while np.any(t_now < horizon) or np.any(pending):
        warming = (chunks < floors) | (np.all(t_now <= warmup, axis=1)
                                       & np.any((t_now < warmup) | pending, axis=1))
        stop = np.where(warming, warmup, horizon)  # per point
        first_window = ~warming & np.all(t_now == warmup, axis=1)
        start_chunk = np.where(first_window & (start_chunk < 0), chunks, start_chunk)
        w0 = _shard(jnp.asarray(warmup - t_now, clock_dtype), -1, devices)
        w1 = _shard(jnp.asarray(stop[:, None] - t_now, clock_dtype), -1, devices)
        begin = time.perf_counter()
        out = call(w0, w1)
        finished = np.asarray(out.done)  # blocks until the chunk is computed
        elapsed = time.perf_counter() - begin
        if compile_count() > before:  # the call compiled: time an identical call apart
            before = compile_count()
            begin = time.perf_counter()
            jax.block_until_ready(call(w0, w1))
            run_time = time.perf_counter() - begin
            compile_s += max(elapsed - run_time, 0.0)
            elapsed = run_time
        over = np.where((over < 0) & np.asarray(out.overflow), chunks, over)
        _check_chunk(np.asarray(out.time), np.asarray(rep_ids), np.asarray(out.invalid))
        s = out.summary
        t_now = np.where(finished, stop[:, None], t_now + np.asarray(out.time, np.float64))
        taken += np.asarray(out.steps)
        pending = np.asarray(out.pending)
        warm = np.where((warm == _NEVER) & (t_now >= warmup) & ~pending, chunks, warm)
        end = np.where((end == _NEVER) & (t_now >= horizon) & ~pending, chunks, end)
        integrals += np.asarray(s.integrals, np.float64)
        tallies += np.asarray(s.counts, np.int64)
        stock_start = np.where(first_window[:, None, None], np.asarray(s.stock_start, np.int64),
                               stock_start)
        events += np.asarray(s.events, np.int64)
        wall += elapsed
        chunks += 1
        states = out.state
        if report:
            report(float(np.mean(np.minimum(t_now, horizon))) / horizon)
        if max_chunks is not None and chunks >= max_chunks:
            break
    end = np.where(end == _NEVER, chunks - 1, end)
    # What jobs still held by lazy buffers owe, and the end census (as driver._close).
    w0 = _shard(jnp.asarray(warmup - t_now, rng.real_dtype()), -1, devices)
    flow, stock = _close_many(stacked, states, w0)
    tallies += np.swapaxes(np.asarray(flow.counts, np.int64), 1, 2)
    integrals += np.swapaxes(np.asarray(flow.waits, np.float64), 1, 2)
    stock_end = np.swapaxes(np.asarray(stock, np.int64), 1, 2)
    return _Stack(integrals=integrals, tallies=tallies, time=t_now, stock_start=stock_start,
                  stock_end=stock_end, events=events, warm=warm, end=end, over=over,
                  start=start_chunk, wall=wall, compile=compile_s)


_FIELDS = ("integrals", "tallies", "time", "stock_start", "stock_end", "events", "end")


def _run_group(key, systems, labels, reps, horizon, warmup, chunk_events, clock_dtype, report,
               devices, max_chunks, grow, tell) -> list[Run]:
    """Simulates one group (one structure, one capacity) and reruns what overflowed.

    Every replication column ``r`` of point ``p`` ends with the results a large enough ring
    gives: those of a run in which it did not overflow and its point's window started where it
    starts when no replication overflows, ``max_r warm[p, r] + 1`` (``warm``: the chunk each
    replication finishes its warm-up in, which does not depend on the others; it is known for a
    replication that did not overflow before that). Rounds rerun the ``pending`` columns (those
    that overflowed, with a ring ``GROWTH`` times larger, and those whose window start turned
    out wrong) until none is left.
    """
    num = len(systems)
    per = len(devices) if devices else 1
    padded = -(-reps // per) * per  # shards need equal sizes: extra replications are dropped
    first = _run_stack(key, systems, np.broadcast_to(np.arange(padded), (num, padded)),
                       np.zeros(num, np.int64), horizon, warmup, chunk_events, clock_dtype,
                       report, devices, max_chunks)
    res = {f: getattr(first, f).copy() for f in _FIELDS}
    wall, compile_s = first.wall, first.compile
    capacity = _capacity(systems[0])
    capacities = np.full(num, capacity or 0)
    regrown = np.zeros(num, np.int64)
    rerun: list[set[int]] = [set() for _ in range(num)]
    # The window start each stored result ran with, and what is known of each warm-up.
    started = np.broadcast_to(first.start[:, None], (num, padded)).copy()
    known = _warm_known(first.warm, first.over)
    warm = np.where(known, first.warm, -1)
    bad = first.over >= 0
    pending = bad.copy()
    pending |= _stale(started, warm, known, pending, labels, tell)
    overflowed = bool(bad.any())
    rounds = 0
    while pending.any():
        rounds += 1
        if rounds > _MAX_ROUNDS:  # cannot happen (each round grows or fixes a window start)
            raise SimulationError(f"points {[labels[p] for p in np.flatnonzero(pending.any(1))]}"
                                  f": still not settled after {_MAX_ROUNDS} rounds of reruns")
        points = np.flatnonzero(pending.any(axis=1))
        cols = [np.flatnonzero(pending[p]) for p in points]
        width = -(-max(len(c) for c in cols) // per) * per
        # Each row repeats its last replication to fill the width: duplicates change nothing.
        ids = np.stack([np.concatenate([c, np.full(width - len(c), c[-1])]) for c in cols])
        if overflowed:
            where = np.flatnonzero(bad.any(axis=1))
            try:
                grown = _regrow(_with_capacity(systems[0], capacity) if capacity else systems[0],
                                grow, chunk_events, len(points) * width // per, devices)
            except BufferOverflowError as err:
                raise BufferOverflowError(f"points {[labels[p] for p in where]}: {err}",
                                          capacity=err.capacity) from None
            capacity = _capacity(grown)
            tell(f"a FCFS buffer overflowed in {_describe(bad, labels, reps)}: rerunning only "
                 f"those replications with buffers of {capacity:,} jobs (same random numbers "
                 "and chunks: the result is that of a large enough buffer)")
        floors = np.where(known[points], warm[points] + 1, 0).max(axis=1)
        sub = _run_stack(key, [_with_capacity(systems[p], capacity) if capacity else systems[p]
                               for p in points], ids, floors, horizon, warmup, chunk_events,
                         clock_dtype, None, devices, max_chunks)
        wall, compile_s = wall + sub.wall, compile_s + sub.compile
        bad = np.zeros_like(bad)
        for j, (p, c) in enumerate(zip(points, cols, strict=True)):
            m = len(c)
            now_known = _warm_known(sub.warm[j, :m], sub.over[j, :m])
            warm[p, c[now_known]] = sub.warm[j, :m][now_known]
            known[p, c[now_known]] = True
            good = sub.over[j, :m] < 0
            for f in _FIELDS:
                res[f][p, c[good]] = getattr(sub, f)[j, :m][good]
            started[p, c[good]] = sub.start[j]
            pending[p, c[good]] = False
            bad[p, c[~good]] = True
            regrown[p] += 1
            capacities[p] = capacity or 0
            rerun[p].update(int(r) for r in c if r < reps)
        pending |= _stale(started, warm, known, pending, labels, tell)
        overflowed = bool(bad.any())
    runs = []
    for p, system in enumerate(systems):
        batch = Batch(integrals=res["integrals"][p, :reps], tallies=res["tallies"][p, :reps],
                      time=res["time"][p, :reps], stock_start=res["stock_start"][p, :reps],
                      stock_end=res["stock_end"][p, :reps],
                      # The replications kept: not those padding the devices' shards.
                      events=int(res["events"][p, :reps].sum()),
                      wall=wall / num, compile=compile_s / num,
                      chunks=int(res["end"][p].max()) + 1)
        run = _merge([batch], reps, horizon, warmup, system)
        runs.append(dataclasses.replace(
            run, regrown=int(regrown[p]), rerun_reps=tuple(sorted(rerun[p])),
            buffer_capacity=int(capacities[p]) if capacities[p] else run.buffer_capacity))
    return runs


def _warm_known(warm: np.ndarray, over: np.ndarray) -> np.ndarray:
    """Whether the chunk a replication finished its warm-up in is that of a large enough ring:
    it finished it, strictly before the chunk that overflowed (if any)."""
    return (warm != _NEVER) & ((over < 0) | (warm < over))


def _stale(started, warm, known, pending, labels, tell) -> np.ndarray:
    """The stored results of points whose every warm-up is known and whose window started at
    another chunk than ``max warm + 1`` (an overflow in the warm-up moved it): to rerun.
    ``tell`` receives a line per such point (``_warn`` is told from one frame deeper)."""
    say = (lambda m: warnings.warn(m, SimulationWarning, stacklevel=5)) if tell is _warn else tell
    stale = np.zeros_like(pending)
    for p in np.flatnonzero(known.all(axis=1)):
        target = int(warm[p].max()) + 1
        # A replication cut by max_chunks before any window started (started < 0) is left:
        # rerunning it would be cut at the same place.
        redo = ~pending[p] & (started[p] >= 0) & (started[p] != target)
        if redo.any():
            stale[p] = redo
            say(f"point {labels[p]}: an overflow in the warm-up moved the start of its "
                f"statistics window (chunk {int(started[p][redo].max())} instead of {target}): "
                f"rerunning its other {int(redo.sum())} replication(s) with the right one")
    return stale


def _describe(bad: np.ndarray, labels, reps: int) -> str:
    """``"2 replications of points 0 (replication 1), 3 (replication 0)"``."""
    parts = []
    for p in np.flatnonzero(bad.any(axis=1)):
        r = [int(i) for i in np.flatnonzero(bad[p])]
        shown = ", ".join(str(i) if i < reps else f"{i} (padding)" for i in r[:8])
        more = f", ... ({len(r)} in all)" if len(r) > 8 else ""
        parts.append(f"{labels[p]} (replication{'s' if len(r) > 1 else ''} {shown}{more})")
    total = int(bad.sum())
    return (f"{total} replication{'s' if total > 1 else ''} of point"
            f"{'s' if len(parts) > 1 else ''} {', '.join(parts)}")
