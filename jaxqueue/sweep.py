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
run with a single batch: replication ``r`` of every point draws its random numbers from
``fold_in(fold_in(key, r), chunk)`` (common random numbers across the points), and the event
counts are bit-identical (a test checks this).

Points run in lockstep, so a chunk costs as much for every point: stack points whose event rates
are similar (one n, comparable loads). Points with very different n (convergence in n) are
better simulated one by one with :func:`jaxqueue.simulate`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from . import kernel, rng
from .checkpoint import Batch
from .driver import Run, _capacity, _check_window, _merge, _shard
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
def _many(key, systems, rep_ids, states, w0, w1, chunk, *, steps, clock_dtype):
    def one(system, state, a, b):
        # A vmapped early stop would select over every state leaf per block: scan instead.
        return kernel._rollout(key, system, rep_ids, state, a, b, chunk, steps=steps,
                               clock_dtype=clock_dtype, close=False, stop_early=False)
    return jax.vmap(one)(systems, states, w0, w1)


_many_jit = jax.jit(_many, static_argnames=("steps", "clock_dtype"))


@jax.jit
def _close_many(systems, states, w0):
    def one(system, state, a):
        return kernel._close(system, state, a.astype(rng.real_dtype()), kernel.rep_axes(system))
    return jax.vmap(one)(systems, states, w0)


@jax.jit
def _init_many(key, systems, rep_ids):
    return jax.vmap(lambda s: kernel.initial_state(s, key, rep_ids))(systems)


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

    Returns:
        One :class:`jaxqueue.Run` per system, in the order given. Each point's
        ``wall_seconds`` and ``compile_seconds`` are its group's, shared equally among the
        group's points.

    Raises:
        SimulationError: a fixed-capacity buffer overflowed at some point (the message names the
            points).
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
        for k, run in zip(members, _run_group(key, group, int(reps), float(horizon),
                                              float(warmup), int(chunk_events), clock_dtype,
                                              sub, devices, max_chunks), strict=True):
            runs[k] = run
        done_points += len(members)
    return runs  # type: ignore[return-value]


def _run_group(key, systems, reps, horizon, warmup, chunk_events, clock_dtype, report, devices,
               max_chunks) -> list[Run]:
    """The host loop of :func:`jaxqueue.driver._run_batch`, with a leading axis over points.

    Each point keeps its own phase (warm-up, then window) exactly as when run alone; chunks a
    point no longer needs are no-ops for it (every replication already sits at its stop time).
    """
    template = systems[0]
    stacked = stack(systems)
    num = len(systems)
    per = len(devices) if devices else 1
    padded = -(-reps // per) * per  # shards need equal sizes: extra replications are dropped
    axes = jax.tree.map(lambda a: a + 1 if a == 0 else a, kernel.rep_axes(template))
    rep_ids = _shard(jnp.arange(padded, dtype=jnp.uint32), -1, devices)
    states = _shard(_init_many(key, stacked, jnp.arange(padded, dtype=jnp.uint32)), axes, devices)
    levels = len(template.level_names) * template.num_classes
    tallies_n = len(template.tally_names) * template.num_classes
    t_now = np.zeros((num, padded))
    integrals = np.zeros((num, padded, levels))
    tallies = np.zeros((num, padded, tallies_n), np.int64)
    stock_start = np.zeros((num, padded, levels), np.int64)
    events = np.zeros(num, np.int64)
    needed = np.zeros(num, np.int64)  # chunks each point needed (as if run alone)
    wall = compile_s = 0.0
    chunks = 0

    def call(w0, w1):
        return _many_jit(key, stacked, rep_ids, states, w0, w1, jnp.uint32(chunks),
                         steps=chunk_events, clock_dtype=clock_dtype)

    before = compile_count()
    while not np.all(t_now >= horizon):
        needed += ~np.all(t_now >= horizon, axis=1)
        stop = np.where(np.any(t_now < warmup, axis=1), warmup, horizon)  # per point
        first_window = np.all(t_now == warmup, axis=1)
        w0 = _shard(jnp.asarray(warmup - t_now, clock_dtype), -1, devices)
        w1 = _shard(jnp.asarray(stop[:, None] - t_now, clock_dtype), -1, devices)
        start = time.perf_counter()
        out = call(w0, w1)
        finished = np.asarray(out.done)  # blocks until the chunk is computed
        elapsed = time.perf_counter() - start
        if compile_count() > before:  # the call compiled: time an identical call apart
            before = compile_count()
            start = time.perf_counter()
            jax.block_until_ready(call(w0, w1))
            run_time = time.perf_counter() - start
            compile_s += max(elapsed - run_time, 0.0)
            elapsed = run_time
        overflow = np.asarray(out.overflow)
        if np.any(overflow):
            bad = np.flatnonzero(np.any(overflow, axis=1)).tolist()
            raise SimulationError(f"points {bad}: {template.overflow_message()}")
        s = out.summary
        t_now = np.where(finished, stop[:, None], t_now + np.asarray(out.time, np.float64))
        integrals += np.asarray(s.integrals, np.float64)
        tallies += np.asarray(s.counts, np.int64)
        stock_start = np.where(first_window[:, None, None], np.asarray(s.stock_start, np.int64),
                               stock_start)
        events += np.asarray(s.events, np.int64).sum(axis=1)
        wall += elapsed
        chunks += 1
        states = out.state
        if report:
            report(float(np.mean(np.minimum(t_now, horizon))) / horizon)
        if max_chunks is not None and chunks >= max_chunks:
            break
    # What jobs still held by lazy buffers owe, and the end census (as driver._close).
    w0 = _shard(jnp.asarray(warmup - t_now, rng.real_dtype()), -1, devices)
    flow, stock = _close_many(stacked, states, w0)
    tallies += np.swapaxes(np.asarray(flow.counts, np.int64), 1, 2)
    integrals += np.swapaxes(np.asarray(flow.waits, np.float64), 1, 2)
    stock_end = np.swapaxes(np.asarray(stock, np.int64), 1, 2)
    runs = []
    for p, system in enumerate(systems):
        batch = Batch(integrals=integrals[p, :reps], tallies=tallies[p, :reps],
                      time=t_now[p, :reps], stock_start=stock_start[p, :reps],
                      stock_end=stock_end[p, :reps], events=int(events[p]), wall=wall / num,
                      compile=compile_s / num, chunks=int(needed[p]))
        runs.append(_merge([batch], reps, horizon, warmup, system))
    return runs

