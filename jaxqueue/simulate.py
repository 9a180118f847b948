"""The exact event-by-event simulator: a jitted ``lax.scan`` over CTMC events, vmapped over
replications, driven by a host loop over fixed-length chunks.

A *system* (:class:`AbstractSystem`) is a PyTree holding a policy's structure (static fields:
number of classes, buffer capacities, gate kind) and its parameters (array leaves: rates, n, the
plan). One step of the simulator

1. asks the system for its event rates, or whether it owes a zero-time bookkeeping step first
   (:meth:`AbstractSystem.pending`: discarding an abandoned job at the head of a lazy FCFS
   buffer, :mod:`jaxqueue.buffer`),
2. draws the holding time ``Exp(total rate)`` and, with one uniform, the event
   (:func:`choose_event`, the one place a differentiable relaxation replaces),
3. credits the time integrals of the system's levels and the event counters, restricted to the
   statistics window ``[warmup, horizon]``, and
4. lets the system apply the event and its policy's decisions (:meth:`AbstractSystem.fire`).

Time keeps its precision on long runs: the clock restarts at zero in every chunk (stored times
are rebased), integrals and counters are reset per chunk and summed on the host in float64.

Replication ``r`` draws chunk ``c``'s random words from ``fold_in(fold_in(key, r), c)``, so its
path does not depend on how many replications run, on how they are sharded or batched, or on the
chunk count of a longer horizon.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, UInt32

__all__ = [
    "AbstractSystem",
    "Run",
    "SimulationError",
    "choose_event",
    "exponential",
    "simulate",
    "uniform",
]


class SimulationError(RuntimeError):
    """A simulation that cannot produce a valid result (e.g. a buffer's capacity exceeded)."""


class AbstractSystem(eqx.Module):
    """A continuous-time Markov chain with a policy: what one simulator step needs.

    Subclasses set ``level_names`` (quantities whose time integral is recorded, one per class,
    name-major), ``tally_names`` (event counters, one per class), and ``num_random`` (extra
    uniform words a step may use, e.g. to draw a
    patience), and implement the methods below. All methods are pure and traceable.
    """

    level_names: ClassVar[tuple[str, ...]]
    tally_names: ClassVar[tuple[str, ...]]
    num_random: ClassVar[int] = 0

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of job classes; levels and tallies hold one entry per name and class."""

    @abc.abstractmethod
    def init(self) -> Any:
        """The state at time zero (an empty system)."""

    @abc.abstractmethod
    def rates(self, state: Any) -> Float[Array, " E"]:
        """Rates of the exponential events in ``state``."""

    def pending(self, state: Any) -> Bool[Array, ""]:
        """Whether ``state`` needs a zero-time bookkeeping step before the next random event
        (e.g. discarding an abandoned job at the head of a lazy buffer, :mod:`jaxqueue.buffer`)."""
        return jnp.bool_(False)

    @abc.abstractmethod
    def fire(self, state: Any, event: Int[Array, ""], t: Float[Array, ""],
             u: Float[Array, " U"], window: tuple[Float[Array, ""], Float[Array, ""]]
             ) -> tuple[Any, Int[Array, " T"], Float[Array, " L"]]:
        """Applies exponential event ``event`` at time ``t`` (``E`` means none: a bookkeeping
        step when :meth:`pending`, else nothing) and the policy's decisions.

        ``window`` is the chunk-relative statistics window ``(start, end]``. Returns the new
        state, the counter increments (``(T * I,)``, already restricted to the window) and
        time-integral increments credited directly (``(L * I,)``; e.g. a buffered job's wait when
        it leaves), added to the integrals of :meth:`levels`.
        """

    def finalize(self, state: Any, window: tuple[Float[Array, ""], Float[Array, ""]]
                 ) -> tuple[Int[Array, " T"], Float[Array, " L"]]:
        """Counter and integral increments owed by jobs still held at the end of a run."""
        return (jnp.zeros(len(self.tally_names) * self.num_classes, jnp.int32),
                jnp.zeros(len(self.level_names) * self.num_classes, jnp.float32))

    @abc.abstractmethod
    def levels(self, state: Any) -> Float[Array, " L"]:
        """Quantities integrated over time, shape ``(len(level_names),)``."""

    def rebase(self, state: Any, elapsed: Float[Array, ""]) -> Any:
        """Shifts stored chunk-relative times by ``elapsed`` (start of the next chunk)."""
        return state

    def overflow(self, state: Any) -> Bool[Array, ""]:
        """Whether a fixed-capacity structure overflowed (the run is then invalid)."""
        return jnp.bool_(False)

    def overflow_message(self) -> str:
        return "a fixed-capacity buffer overflowed"


# ---- random numbers ---------------------------------------------------------------------------
def uniform(bits: UInt32[Array, "..."]) -> Float[Array, "..."]:
    """Uniform in [0, 1) from the top 24 bits of ``bits`` (exact in float32)."""
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def exponential(bits: UInt32[Array, "..."]) -> Float[Array, "..."]:
    """Standard exponential from ``bits``: ``-log(1 - U)``, finite since ``1 - U >= 2^-24``."""
    return -jnp.log1p(-uniform(bits))


def choose_event(rates: Float[Array, " E"], u: Float[Array, ""]) -> Int[Array, ""]:
    """The next event of a CTMC: index ``k`` with probability ``rates[k] / sum(rates)``.

    Inverse-CDF sampling with one uniform. A zero-rate event is never chosen (round-off that
    would land past the last positive rate is sent back to it). Returns ``E`` when every rate is
    zero. This is the one discrete choice of a step: a relaxation replaces this function.
    """
    # A running sum written out (XLA's CPU cumsum is a reduce-window, slow inside a scan step).
    running = [rates[0]]
    for k in range(1, rates.shape[0]):
        running.append(running[-1] + rates[k])
    cum = jnp.stack(running)
    index = jnp.sum(cum <= u * cum[-1]).astype(jnp.int32)
    positive = rates > 0
    num = rates.shape[0]
    last_positive = num - 1 - jnp.argmax(positive[::-1]).astype(jnp.int32)
    return jnp.where(jnp.any(positive), jnp.minimum(index, last_positive), num)


# ---- one chunk --------------------------------------------------------------------------------
class _Acc(eqx.Module):
    levels: Float[Array, " L"]
    tally: Int[Array, " T"]
    events_window: Int[Array, ""]
    events: Int[Array, ""]


def _step(system: AbstractSystem, carry, b: UInt32[Array, " W"], clock_dtype: Any):
    """One event (or one zero-time bookkeeping step) of one replication.

    Vmapped over replications by the caller.
    """
    state, t, acc, w0, w1 = carry
    rates = system.rates(state)
    num_events = rates.shape[0]
    total = jnp.sum(rates)
    dt = exponential(b[0]) / total  # +inf when nothing can happen
    pending = system.pending(state)
    t_new = jnp.where(pending, t, t + dt.astype(clock_dtype))
    live = t_new <= w1
    random = live & ~pending
    event = jnp.where(random, choose_event(rates, uniform(b[1])), num_events)
    weight = jnp.maximum(jnp.minimum(t_new, w1) - jnp.maximum(t, w0), 0)
    window = (w0.astype(jnp.float32), w1.astype(jnp.float32))
    new_state, tally, credit = system.fire(state, event, t_new.astype(jnp.float32),
                                           uniform(b[2:]), window)
    acc = _Acc(
        levels=acc.levels + weight * system.levels(state).astype(clock_dtype)
        + credit.astype(clock_dtype),
        tally=acc.tally + tally,
        events_window=acc.events_window + (random & (t_new > w0)).astype(jnp.int32),
        events=acc.events + random.astype(jnp.int32),
    )
    return (new_state, jnp.where(live, t_new, w1), acc, w0, w1)


def _rep_key(key, rep, chunk_index) -> UInt32[Array, " 2"]:
    """Key words of replication ``rep`` in chunk ``chunk_index``: ``fold_in(fold_in(key, rep),
    chunk)``. A replication's numbers depend on nothing but ``(key, rep, chunk)``, so its path is
    the same whatever the number of replications, and a longer horizon extends the same path."""
    return jax.random.key_data(jax.random.fold_in(jax.random.fold_in(key, rep), chunk_index))


def _step_bits(words: UInt32[Array, " 2"], step, width: int) -> UInt32[Array, " W"]:
    """The ``width`` random words of one step: Threefry-2x32 of the counter ``(step, j)`` under
    the replication's chunk key, computed inside the step (no per-chunk buffer of random words
    to stream through memory)."""
    step = jnp.asarray(step, jnp.uint32)
    out = []
    for j in range((width + 1) // 2):
        y0, y1 = threefry2x32_p.bind(words[0], words[1], step, jnp.uint32(j))
        out += [y0, y1]
    return jnp.stack(out[:width])


def _chunk_bits(key, rep_ids, chunk_index, length: int, width: int) -> UInt32[Array, "N W R"]:
    """All random words of one chunk, ``(length, width, R)`` (for :func:`trajectory`)."""
    words = jax.vmap(lambda r: _rep_key(key, r, chunk_index))(rep_ids)  # (R, 2)
    reps = rep_ids.shape[0]
    # Every (step, replication) pair batched alike: the Threefry primitive's batching rule wants
    # its key and counter batched together.
    words = jnp.broadcast_to(words[None], (length, reps, 2)).reshape(-1, 2)
    steps = jnp.broadcast_to(jnp.arange(length, dtype=jnp.uint32)[:, None], (length, reps))
    flat = jax.vmap(lambda w, l: _step_bits(w, l, width))(words, steps.reshape(-1))
    return jnp.moveaxis(flat.reshape(length, reps, width), 1, -1)


def _chunk_many(system, key, rep_ids, chunk_index, states, window_start, window_end, *,
                length: int, clock_dtype: Any):
    """All replications for one chunk of ``length`` events.

    Layout: every per-replication array keeps the replication axis *last*, and the scan's step
    is ``vmap(step, in_axes=-1, out_axes=-1)``: the step's elementwise arithmetic then runs along
    contiguous replication vectors (what the CPU's SIMD units and a GPU's warps want), and its
    small reductions over classes become elementwise operations between rows.
    """
    width = 2 + system.num_random
    words = jax.vmap(lambda r: _rep_key(key, r, chunk_index), out_axes=-1)(rep_ids)  # (2, R)
    reps = rep_ids.shape[0]
    acc0 = _Acc(
        levels=jnp.zeros((len(system.level_names) * system.num_classes, reps), clock_dtype),
        tally=jnp.zeros((len(system.tally_names) * system.num_classes, reps), jnp.int32),
        events_window=jnp.zeros((reps,), jnp.int32),
        events=jnp.zeros((reps,), jnp.int32),
    )
    w0 = window_start.astype(clock_dtype)
    w1 = window_end.astype(clock_dtype)
    axes = _rep_axes(system)
    carry_axes = (axes, -1, -1, -1, -1)
    step = jax.vmap(lambda c, w, l: _step(system, c, _step_bits(w, l, width), clock_dtype),
                    in_axes=(carry_axes, -1, None), out_axes=carry_axes)
    carry = (states, jnp.zeros((reps,), clock_dtype), acc0, w0, w1)
    (states, t, acc, _, _), _ = jax.lax.scan(lambda c, l: (step(c, words, l), None), carry,
                                             jnp.arange(length, dtype=jnp.uint32))
    done = t >= w1
    states = jax.vmap(system.rebase, in_axes=(axes, -1), out_axes=axes)(states,
                                                                        t.astype(jnp.float32))
    overflow = jax.vmap(system.overflow, in_axes=(axes,))(states)
    return states, t, acc, done, overflow


_chunk_jit = jax.jit(_chunk_many, static_argnames=("length", "clock_dtype"))


@jax.jit
def _finalize_jit(system, states, window_start):
    """Residual accounting at the end of a run; the clock's zero is the end of the run."""
    return jax.vmap(lambda s, w0: system.finalize(s, (w0, jnp.float32(0.0))),
                    in_axes=(_rep_axes(system), 0), out_axes=-1)(states, window_start)


def compile_count() -> int:
    """Number of programs compiled for the chunk kernel in this process (for tests)."""
    return _chunk_jit._cache_size()


# ---- the host loop ----------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """Raw per-replication results of :func:`simulate` (float64/int64 NumPy arrays).

    Attributes:
        level_integrals: time integral of each level over the window, ``(R, L)``.
        tallies: event counts inside the window, ``(R, T)``.
        window: length of each replication's statistics window (``horizon - warmup`` unless
            interrupted), ``(R,)``.
        events: events simulated over all replications, warm-up included.
        wall_seconds: wall time of the simulation, compilation excluded.
        compile_seconds: wall time spent compiling (0 when the program was cached).
        chunks: number of chunks run.
        interrupted: whether the run was stopped before the horizon (results cover the part done).
    """

    level_integrals: np.ndarray
    tallies: np.ndarray
    window: np.ndarray
    events: int
    wall_seconds: float
    compile_seconds: float
    chunks: int
    interrupted: bool = False
    level_names: tuple[str, ...] = ()
    tally_names: tuple[str, ...] = ()
    num_classes: int = 1

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def _slice(self, names: tuple[str, ...], name: str) -> slice:
        k = names.index(name)
        return slice(k * self.num_classes, (k + 1) * self.num_classes)

    def level(self, name: str) -> np.ndarray:
        """Time average of a level per replication and class, ``(R, I)``."""
        return self.level_integrals[:, self._slice(self.level_names, name)] / self.window[:, None]

    def count(self, name: str) -> np.ndarray:
        """Events of one counter per replication and class inside the window, ``(R, I)``."""
        return self.tallies[:, self._slice(self.tally_names, name)]

    def rate(self, name: str) -> np.ndarray:
        """Events of one counter per unit time per replication and class, ``(R, I)``."""
        return self.count(name) / self.window[:, None]


def _check_window(reps: int, horizon: float, warmup: float, chunk_events: int) -> None:
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps = {reps!r} is invalid: must be an integer >= 1")
    if not (isinstance(horizon, (int, float)) and math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon = {horizon!r} is invalid: must be finite and > 0")
    if not (isinstance(warmup, (int, float)) and math.isfinite(warmup) and 0 <= warmup < horizon):
        raise ValueError(f"warmup = {warmup!r} is invalid: must be in [0, horizon={horizon})")
    if not (isinstance(chunk_events, (int, np.integer)) and chunk_events >= 1):
        raise ValueError(f"chunk_events = {chunk_events!r} is invalid: must be an integer >= 1")


def simulate(
    key: PRNGKeyArray,
    system: AbstractSystem,
    *,
    reps: int,
    horizon: float,
    warmup: float = 0.0,
    chunk_events: int = 1024,
    clock_dtype: Any = jnp.float32,
    progress: bool | Callable[[float], None] = False,
    max_chunks: int | None = None,
    devices: Sequence[Any] | None = None,
    max_batch: int | None = None,
    first_rep: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 60.0,
) -> Run:
    """Simulates ``reps`` independent replications of ``system`` over ``[0, horizon]``.

    Statistics cover ``[warmup, horizon]`` (model seconds). A Ctrl-C between chunks stops the
    run cleanly: the result covers the part simulated and says ``interrupted``.

    Args:
        key: a ``jax.random.key``; replication ``r`` uses ``fold_in(key, r)``.
        system: the policy and parameters to simulate.
        reps: number of replications.
        horizon: end of the simulated time.
        warmup: start of the statistics window.
        chunk_events: events per scan chunk (static: changing it recompiles).
        clock_dtype: dtype of the clock and time integrals (``jnp.float64`` needs x64 enabled;
            used by tests to check the float32 clock).
        progress: True for a progress bar on stderr, or a callable receiving the fraction done.
        max_chunks: stop after this many chunks (a safety net; ``None`` for no limit).
        devices: devices to shard the replications over (one program, ``jax.sharding``);
            ``None`` runs on the default device. Results are identical either way.
        max_batch: most replications run at once; more run in successive batches (same
            results). ``None`` picks the largest batch that fits in memory
            (:func:`max_batch_for`).
        first_rep: id of the first replication (replications ``first_rep .. first_rep + reps
            - 1`` run). Several processes (e.g. one per host under ``jax.distributed``) can
            split one experiment into disjoint id ranges and concatenate their results: each
            replication's path depends only on ``(key, id)``.
        checkpoint: a file (``.npz``) where the run saves its progress every
            ``checkpoint_every`` wall seconds, when interrupted and when done. If the file exists
            and was written by the same run (same system, key, replications, horizon, warm-up,
            chunk length, batching), the run resumes from it, so a killed or interrupted run
            loses at most ``checkpoint_every`` seconds of work; the result is identical to an
            uninterrupted run.
        checkpoint_every: wall seconds between checkpoints.
    """
    _check_window(reps, horizon, warmup, chunk_events)
    if np.dtype(clock_dtype) == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("clock_dtype = float64 needs jax.enable_x64(True)")
    devices = list(devices) if devices is not None else None
    if devices is not None and len(devices) == 0:
        raise ValueError("devices is empty: give at least one device, or None")
    per = len(devices) if devices else 1
    if max_batch is None:
        max_batch = max_batch_for(system, chunk_events, devices)
    elif isinstance(max_batch, bool) or int(max_batch) < 1:
        raise ValueError(f"max_batch = {max_batch!r} is invalid: must be an integer >= 1")
    if isinstance(first_rep, bool) or int(first_rep) != first_rep or first_rep < 0:
        raise ValueError(f"first_rep = {first_rep!r} is invalid: must be an integer >= 0")
    batch = max(per, (min(int(max_batch), reps) // per) * per)
    report = _progress_bar if progress is True else (progress or None)
    store = _Checkpoint(checkpoint, _fingerprint(system, key, reps, horizon, warmup, chunk_events,
                                                 clock_dtype, first_rep, batch),
                        checkpoint_every) if checkpoint is not None else None
    parts, current = store.load() if store else ([], None)
    for start in range(0, reps, batch):
        if start < sum(p[0][0].shape[0] for p in parts):
            continue  # finished before a restart
        size = min(batch, reps - start)
        padded = -(-size // per) * per  # shards need equal sizes: extra replications are dropped

        def sub_report(f, start=start, size=size):
            if report:
                report((start + f * size) / reps)

        save = None
        if store:
            def save(state, parts=parts):
                store.save(parts, state)
            save.every = store.every

        raw = _run_batch(system, key, first_rep + start, padded, horizon, warmup,
                         int(chunk_events), clock_dtype, sub_report if report else None,
                         max_chunks, devices, resume=current, save=save)
        current = None
        part = _finish_batch(system, raw, warmup, devices)
        interrupted = raw["interrupted"]
        if not interrupted:
            parts.append((tuple(a[:size] for a in part[0]), *part[1:]))
            if store:
                store.save(parts, None)
        else:
            # Report what was simulated; the checkpoint keeps the raw state to resume from.
            parts = [*parts, (tuple(a[:size] for a in part[0]), *part[1:])]
            break
    if report is _progress_bar:
        sys.stderr.write("\n")
    level_sum = np.concatenate([p[0][0] for p in parts])
    tally_sum = np.concatenate([p[0][1] for p in parts])
    t_abs = np.concatenate([p[0][2] for p in parts])
    done_reps = t_abs.shape[0]
    if done_reps < reps:  # interrupted before some batches started
        level_sum = np.concatenate([level_sum, np.zeros((reps - done_reps, level_sum.shape[1]))])
        tally_sum = np.concatenate([tally_sum, np.zeros((reps - done_reps, tally_sum.shape[1]),
                                                        np.int64)])
        t_abs = np.concatenate([t_abs, np.zeros(reps - done_reps)])
    window = np.clip(t_abs, warmup, horizon) - warmup
    return Run(
        level_integrals=level_sum,
        tallies=tally_sum,
        window=window,
        events=sum(p[1] for p in parts),
        wall_seconds=sum(p[2] for p in parts),
        compile_seconds=sum(p[3] for p in parts),
        chunks=sum(p[4] for p in parts),
        interrupted=bool(np.any(t_abs < horizon)),
        level_names=tuple(system.level_names),
        tally_names=tuple(system.tally_names),
        num_classes=system.num_classes,
    )


def _shard(tree: Any, axes: Any, devices: list[Any] | None) -> Any:
    """Places each leaf's replication axis (``axes``: 0 or -1 per leaf) across ``devices``."""
    if devices is None:
        return tree
    mesh = jax.sharding.Mesh(np.asarray(devices), ("reps",))

    def put(a, axis):
        spec = [None] * a.ndim
        spec[axis] = "reps"
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        return jax.device_put(a, sharding)

    return jax.tree.map(put, tree, axes)


def _run_batch(system, key, first, reps, horizon, warmup, chunk_events, clock_dtype, report,
               max_chunks, devices, resume=None, save=None):
    """The host loop over chunks for replications ``first .. first + reps - 1``.

    Returns the raw accumulators (before the residual accounting of :func:`_finish_batch`) and
    the state, so that a checkpoint can resume exactly. ``resume`` is such a dict; ``save`` is
    called with it now and then.
    """
    state0 = system.init()
    axes = _rep_axes(system)
    fresh = lambda: _shard(_replicate(state0, reps), axes, devices)  # noqa: E731
    rep_ids = _shard(jnp.arange(first, first + reps, dtype=jnp.uint32), -1, devices)
    if resume is not None:
        treedef = jax.tree.structure(jax.eval_shape(lambda: _replicate(state0, reps)))
        states = _shard(jax.tree.unflatten(treedef, [jnp.asarray(a) for a in resume["leaves"]]),
                        axes, devices)
        t_abs, level_sum, tally_sum = resume["t_abs"], resume["levels"], resume["tallies"]
        events, wall, chunk = int(resume["events"]), float(resume["wall"]), int(resume["chunk"])
        compile_seconds = float(resume["compile"])
    else:
        states = fresh()
        t_abs = np.zeros(reps)
        level_sum = np.zeros((reps, len(system.level_names) * system.num_classes))
        tally_sum = np.zeros((reps, len(system.tally_names) * system.num_classes), np.int64)
        events, compile_seconds, wall, chunk = 0, 0.0, 0.0, 0
    interrupted = False

    def raw():
        return {"leaves": [np.asarray(a) for a in jax.tree.leaves(states)], "t_abs": t_abs,
                "levels": level_sum, "tallies": tally_sum, "events": events, "wall": wall,
                "compile": compile_seconds, "chunk": chunk, "states": states,
                "interrupted": interrupted}

    def windows():
        w0 = warmup - t_abs  # may be < 0: lazy buffers credit waits begun in earlier chunks
        return (_shard(jnp.asarray(w0, jnp.float32), -1, devices),
                _shard(jnp.asarray(horizon - t_abs, jnp.float32), -1, devices))

    before = compile_count()
    last_save = time.perf_counter()
    try:
        while not np.all(t_abs >= horizon):
            w0, w1 = windows()
            start = time.perf_counter()
            out = _chunk_jit(system, key, rep_ids, jnp.uint32(chunk), states, w0, w1,
                             length=chunk_events, clock_dtype=clock_dtype)
            new_states, t_end, acc, done, overflow = out
            done = np.asarray(done)  # blocks until the chunk is computed
            elapsed = time.perf_counter() - start
            if compile_count() > before:
                # The call compiled: time a second, identical call to separate the two.
                before = compile_count()
                start = time.perf_counter()
                jax.block_until_ready(_chunk_jit(system, key, rep_ids, jnp.uint32(chunk), states,
                                                 w0, w1, length=chunk_events,
                                                 clock_dtype=clock_dtype))
                run_time = time.perf_counter() - start
                compile_seconds += max(elapsed - run_time, 0.0)
                elapsed = run_time
            if np.any(np.asarray(overflow)):
                raise SimulationError(system.overflow_message())
            # Commit the chunk only once it is complete (an interrupt above loses nothing).
            states = new_states
            wall += elapsed
            t_abs = np.where(done, horizon, t_abs + np.asarray(t_end, np.float64))
            level_sum = level_sum + np.asarray(acc.levels, np.float64).T
            tally_sum = tally_sum + np.asarray(acc.tally, np.int64).T
            events += int(np.sum(np.asarray(acc.events, np.int64)))
            chunk += 1
            if report:
                report(float(np.mean(t_abs)) / horizon)
            if save and time.perf_counter() - last_save >= save_every(save):
                save(raw())
                last_save = time.perf_counter()
            if max_chunks is not None and chunk >= max_chunks:
                break
    except KeyboardInterrupt:
        interrupted = True
    interrupted = interrupted or not np.all(t_abs >= horizon)
    if save and interrupted:
        save(raw())
    return raw()


def save_every(save) -> float:
    """Seconds between checkpoints of a save callback (its ``every`` attribute, default 60)."""
    return getattr(save, "every", 60.0)


def _finish_batch(system, raw, warmup, devices):
    """A batch's results: its raw sums plus what jobs still held by lazy buffers owe."""
    level_sum, tally_sum, t_abs = raw["levels"], raw["tallies"], raw["t_abs"]
    if raw["chunk"] > 0:
        fin_tally, fin_levels = _finalize_jit(system, raw["states"],
                                              jnp.asarray(warmup - t_abs, jnp.float32))
        tally_sum = tally_sum + np.asarray(fin_tally, np.int64).T
        level_sum = level_sum + np.asarray(fin_levels, np.float64).T
    return ((level_sum, tally_sum, t_abs), raw["events"], raw["wall"], raw["compile"],
            raw["chunk"], raw["interrupted"])


def _fingerprint(system, key, *settings) -> str:
    """A digest of everything that determines a run's path (for checkpoints)."""
    digest = hashlib.sha256()
    digest.update(repr(jax.tree.structure(system)).encode())
    for leaf in jax.tree.leaves(system):
        a = np.asarray(leaf)
        digest.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    digest.update(np.asarray(jax.random.key_data(key)).tobytes())
    digest.update(repr([str(x) for x in settings]).encode())
    return digest.hexdigest()


class _Checkpoint:
    """Progress of a run in one ``.npz`` file, written atomically (temporary file + rename)."""

    def __init__(self, path, fingerprint: str, every: float):
        if not (isinstance(every, (int, float)) and every > 0):
            raise ValueError(f"checkpoint_every = {every!r} is invalid: must be > 0 seconds")
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.every = float(every)

    def load(self):
        """(finished batches, raw state of the batch in progress or None)."""
        if not os.path.exists(self.path):
            return [], None
        with np.load(self.path, allow_pickle=False) as f:
            if str(f["fingerprint"]) != self.fingerprint:
                raise SimulationError(
                    f"checkpoint {self.path} was written by a different run (system, key, "
                    "replications, horizon, warm-up or chunking differ): remove it or choose "
                    "another path")
            parts = []
            for b in range(int(f["num_parts"])):
                parts.append(((f[f"p{b}_levels"], f[f"p{b}_tallies"], f[f"p{b}_t_abs"]),
                              int(f[f"p{b}_events"]), float(f[f"p{b}_wall"]),
                              float(f[f"p{b}_compile"]), int(f[f"p{b}_chunk"]), False))
            current = None
            if bool(f["has_current"]):
                current = {"leaves": [f[f"leaf{k}"] for k in range(int(f["num_leaves"]))],
                           "t_abs": f["c_t_abs"], "levels": f["c_levels"],
                           "tallies": f["c_tallies"], "events": int(f["c_events"]),
                           "wall": float(f["c_wall"]), "compile": float(f["c_compile"]),
                           "chunk": int(f["c_chunk"])}
        return parts, current

    def save(self, parts, current) -> None:
        data = {"fingerprint": np.asarray(self.fingerprint), "num_parts": len(parts),
                "has_current": current is not None}
        for b, ((lv, tl, ta), ev, wall, comp, chunk, _) in enumerate(parts):
            data.update({f"p{b}_levels": lv, f"p{b}_tallies": tl, f"p{b}_t_abs": ta,
                         f"p{b}_events": ev, f"p{b}_wall": wall, f"p{b}_compile": comp,
                         f"p{b}_chunk": chunk})
        if current is not None:
            data.update({f"leaf{k}": a for k, a in enumerate(current["leaves"])})
            data.update({"num_leaves": len(current["leaves"]), "c_t_abs": current["t_abs"],
                         "c_levels": current["levels"], "c_tallies": current["tallies"],
                         "c_events": current["events"], "c_wall": current["wall"],
                         "c_compile": current["compile"], "c_chunk": current["chunk"]})
        tmp = self.path + ".tmp.npz"
        np.savez(tmp, **data)
        os.replace(tmp, self.path)


def max_batch_for(system: AbstractSystem, chunk_events: int,
                  devices: Sequence[Any] | None = None, fraction: float = 0.25) -> int:
    """The most replications to run at once: ``fraction`` of the memory of the devices used
    (the host's physical memory for CPU devices) over the bytes one replication needs (its state
    three times over for the chunk's inputs, outputs and temporaries, plus its random words)."""
    state = jax.eval_shape(system.init)
    state_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(state))
    per_rep = 3 * state_bytes + chunk_events * (2 + system.num_random) * 4 * 2 + 4096
    devs = list(devices) if devices else [jax.devices()[0]]
    total = 0
    for d in devs:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        limit = (stats or {}).get("bytes_limit")
        if limit is None:
            try:
                limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // len(devs)
            except (ValueError, OSError, AttributeError):
                limit = 4 << 30
        total += limit
    return max(1, int(fraction * total // per_rep))


#: Per-replication arrays at least this long keep the replication axis first (see _rep_axes).
_LONG = 128


def _rep_axis(shape: tuple[int, ...]) -> int:
    return 0 if len(shape) >= 1 and shape[0] >= _LONG else -1


def _rep_axes(system: AbstractSystem) -> Any:
    """Where each state leaf keeps its replication axis: first for long per-replication arrays
    (buffers written at a per-replication slot, which XLA then updates in place), last for
    scalars and per-class vectors (so arithmetic runs along contiguous replication vectors)."""
    return jax.tree.map(lambda a: _rep_axis(a.shape), jax.eval_shape(system.init))


def _replicate(state: Any, reps: int) -> Any:
    """``reps`` copies of a state in the kernel's layout (see :func:`_rep_axes`)."""
    def copies(a):
        a = jnp.asarray(a)
        if _rep_axis(a.shape) == 0:
            return jnp.broadcast_to(a[None], (reps, *a.shape))
        return jnp.broadcast_to(a[..., None], (*a.shape, reps))
    return jax.tree.map(copies, state)


def _progress_bar(fraction: float) -> None:
    width = 30
    filled = int(round(width * min(fraction, 1.0)))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}%")
    sys.stderr.flush()


def trajectory(key: PRNGKeyArray, system: AbstractSystem, num_events: int, *, rep: int = 0,
               every: int = 1) -> tuple[Any, Float[Array, " N"], Int[Array, "N T"]]:
    """The path of replication ``rep`` over its first ``num_events`` steps (opt-in, for checks
    and plots): states and times after each step, and cumulative counters (no window).

    Uses the same step and random numbers as :func:`simulate`'s first chunk. ``every`` keeps one
    step in ``every``.
    """
    state = system.init()
    bits = _chunk_bits(key, jnp.asarray([rep], jnp.uint32), jnp.uint32(0), num_events,
                       2 + system.num_random)[..., 0]
    acc0 = _Acc(
        levels=jnp.zeros(len(system.level_names) * system.num_classes, jnp.float32),
        tally=jnp.zeros(len(system.tally_names) * system.num_classes, jnp.int32),
        events_window=jnp.int32(0),
        events=jnp.int32(0),
    )
    window = (jnp.float32(-1.0), jnp.float32(jnp.inf))

    def run(system, carry, bits):
        def body(carry, b):
            carry = _step(system, carry, b, jnp.float32)
            return carry, (carry[0], carry[1], carry[2].tally)
        return jax.lax.scan(body, carry, bits)[1]

    carry = (state, jnp.float32(0.0), acc0, *window)
    states, times, tallies = jax.jit(run)(system, carry, bits)
    return jax.tree.map(lambda a: a[::every], states), times[::every], tallies[::every]
