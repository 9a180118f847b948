"""The host driver of long simulations: chunks of the pure kernel, float64 sums, sharding,
batching, progress, interrupts and checkpoints.

:func:`simulate` runs ``reps`` replications over ``[0, horizon]`` as a loop over
:func:`jaxqueue.kernel.rollout` calls of ``chunk_events`` steps each. It does no model work: each
chunk's statistics come back from the device and are summed on the host in float64, and the
next chunk starts from the returned states on a fresh clock (so a float32 clock never loses
resolution). The warm-up runs first: every replication stops exactly at ``warmup`` (an event
that would cross it is not applied; by memorylessness the next chunk's fresh holding time has
the same law), the census of that moment starts the statistics, and the run goes on to
``horizon``. So every job is accounted for exactly: per stage and class, what came in equals what
went out plus the change in the census between the window's start and its end.

Each replication counts its own steps: replication ``r``'s ``p``-th step draws its random
numbers from position ``p`` of its stream ``fold_in(fold_in(key, r), 0)`` (:mod:`jaxqueue.rng`).
A step it has nothing to do in (it waits at the warm-up for others of its batch, or at the end)
draws nothing and does not count; the step whose holding time crossed its stop time counts (its
numbers are not used again); a chunk whose steps ran out while it still had zero-time
bookkeeping to do at its stop time is followed by another of the same phase, whatever the others
do. So its path does not depend on how many replications run, on how they are sharded or
batched, on how many steps a chunk runs (``chunk_events``), or on where a checkpoint cut the run
(the checkpoint keeps each replication's count), up to float32 rounding: each chunk restarts the
clock, so an event within rounding of the warm-up's end or the horizon may fall on either side
of it for another chunk length, and a longer chunk reaches later clock times, whose coarser
rounding can tip a comparison of two nearly equal times the other way (Gate-and-Route at n =
100, 16 replications x 1,000 s: the same 16 paths in chunks of 1,024 and 8,192 steps, 11 of 16
in chunks of 32,768, about 110 s of model time each; a path that tips is another exact sample
of the chain, not a biased one); and XLA may compile two batch widths into arithmetic that rounds
differently, which moves the time integrals in their last digits and, rarely, such an event
(one batch of 16,384 replications of Gate-and-Route at n = 500 over 5 s against batches of
2,048: integrals within 6e-6 relative, three replications one event apart). The same holds for
the capacity of the FCFS buffers: it does not change a path unless it overflows, so a batch whose
buffer overflowed is rerun from its start with a larger buffer (``grow_buffers``) and gives what
a large enough buffer gives from the start.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from . import budget, kernel, rng
from .checkpoint import Batch, Checkpoint, Progress, fingerprint
from .kernel import AbstractSystem, SimulationError

__all__ = ["BufferOverflowError", "Run", "SimulationError", "SimulationWarning",
           "chunk_events_for", "default_chunks", "max_batch_for", "simulate"]


class SimulationWarning(UserWarning):
    """Something the user of :func:`simulate` should know that does not invalidate the result,
    e.g. a batch rerun with larger FCFS buffers."""


class BufferOverflowError(SimulationError):
    """A FCFS buffer overflowed and could not be grown (fixed capacity, or memory).

    Attributes:
        capacity: the capacity that overflowed.
    """

    def __init__(self, message: str, capacity: int | None = None):
        super().__init__(message)
        self.capacity = capacity


@dataclasses.dataclass
class Run:
    """Per-replication results of :func:`simulate` (float64/int64 NumPy arrays).

    Attributes:
        level_integrals: time integral of each level over the window, ``(R, L)``.
        tallies: event counts inside the window, ``(R, T)``.
        window: length of each replication's statistics window (``horizon - warmup`` unless
            interrupted), ``(R,)``.
        time: simulated time each replication reached (``horizon`` unless interrupted), ``(R,)``.
        stock_start: census of each level at the window's start, ``(R, L)``.
        stock_end: census of each level at the end, ``(R, L)``.
        events: events simulated over all replications, warm-up included.
        wall_seconds: wall time of the simulation, compilation excluded.
        compile_seconds: wall time spent compiling (0 when the program was cached).
        chunks: number of chunks run.
        interrupted: whether the run was stopped before the horizon (results cover the part done;
            replications whose ``window`` is 0 collected no statistics).
        level_names, tally_names, num_classes: the layout of the arrays (name-major).
        horizon, warmup: the requested end of the run and start of the statistics window.
        buffer_capacity: slots of each FCFS buffer the results were computed with (larger than
            the system's if it overflowed and was grown), or None for a system without one.
        regrown: how many times a batch was rerun with larger FCFS buffers after an overflow.
        rerun_reps: the replications (rows of these arrays) whose results come from a rerun
            after an overflow: :func:`simulate` reruns every replication of an overflowed batch,
            :func:`jaxqueue.simulate_many` only those that overflowed (and, when an overflow in
            the warm-up moved the start of a point's statistics window, that point's others).
        resumed: share of the run (in replication-time) read from a checkpoint instead of
            simulated now: 0 for a fresh run, 1 when the checkpoint held the finished run.
        chunk_events: the steps of each compiled chunk (0 where the run did not record it).
    """

    level_integrals: np.ndarray
    tallies: np.ndarray
    window: np.ndarray
    time: np.ndarray
    stock_start: np.ndarray
    stock_end: np.ndarray
    events: int
    wall_seconds: float
    compile_seconds: float
    chunks: int
    interrupted: bool = False
    level_names: tuple[str, ...] = ()
    tally_names: tuple[str, ...] = ()
    num_classes: int = 1
    horizon: float = math.nan
    warmup: float = 0.0
    buffer_capacity: int | None = None
    regrown: int = 0
    resumed: float = 0.0
    rerun_reps: tuple[int, ...] = ()
    chunk_events: int = 0

    @property
    def collected(self) -> np.ndarray:
        """Which replications collected statistics (their window is longer than 0), ``(R,)``."""
        return self.window > 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def _slice(self, names: tuple[str, ...], name: str) -> slice:
        k = names.index(name)
        return slice(k * self.num_classes, (k + 1) * self.num_classes)

    def level(self, name: str) -> np.ndarray:
        """Time average of a level per replication and class, ``(R, I)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.level_integrals[:, self._slice(self.level_names, name)]
                    / self.window[:, None])

    def count(self, name: str) -> np.ndarray:
        """Events of one counter per replication and class inside the window, ``(R, I)``."""
        return self.tallies[:, self._slice(self.tally_names, name)]

    def rate(self, name: str) -> np.ndarray:
        """Events of one counter per unit time per replication and class, ``(R, I)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.count(name) / self.window[:, None]

    def stock(self, name: str, when: str = "end") -> np.ndarray:
        """Jobs in one level per replication and class at the window's ``"start"`` or ``"end"``,
        ``(R, I)``."""
        table = {"start": self.stock_start, "end": self.stock_end}[when]
        return table[:, self._slice(self.level_names, name)]


def _check_window(reps, horizon, warmup, chunk_events) -> None:
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
    chunk_events: int | None = None,
    clock_dtype: Any = None,
    progress: bool | str | Callable[[float], None] = False,
    max_chunks: int | None = None,
    devices: Sequence[Any] | None = None,
    max_batch: int | None = None,
    first_rep: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 60.0,
    grow_buffers: bool = True,
    notify: Callable[[str], None] | None = None,
) -> Run:
    """Simulates ``reps`` independent replications of ``system`` over ``[0, horizon]``.

    Statistics cover ``[warmup, horizon]`` (model seconds). A Ctrl-C stops the run cleanly: the
    result covers the part simulated, says ``interrupted``, and ``Run.time`` holds the time each
    replication reached (a replication stopped inside the warm-up collected no statistics:
    ``Run.collected``).

    Before starting, the memory the run needs is estimated (:mod:`jaxqueue.budget`): a run whose
    single replication does not fit on a device, or whose results do not fit in the host's
    memory, raises :class:`jaxqueue.budget.ResourceError` (a :class:`SimulationError`) saying
    what would fit, instead of failing inside XLA.

    Args:
        key: a ``jax.random.key``; replication ``r`` uses ``fold_in(key, r)``.
        system: the policy and parameters to simulate.
        reps: number of replications.
        horizon: end of the simulated time.
        warmup: start of the statistics window.
        chunk_events: steps per compiled chunk (static: changing it recompiles). ``None`` (the
            default) picks it from the replications each device runs at once
            (:func:`chunk_events_for`); a path does not depend on it, up to float32 rounding
            (the module docstring; ``Run.chunk_events`` says which ran).
        clock_dtype: dtype of the clock and time integrals (default: float32, or float64 under
            ``jax.enable_x64``).
        progress: False (quiet, the default), True for a progress bar with the time left on
            stderr, a string for such a bar with that label, or a callable receiving the
            fraction done after each chunk.
        max_chunks: stop after this many chunks of a batch, as an interrupt would (a safety net
            and a way to test interrupted runs; ``None`` for no limit).
        devices: devices to shard the replications over (one program, ``jax.sharding``);
            ``None`` runs on the default device. The paths are the same either way (up to
            float32 rounding, as for batches: the module docstring).
        max_batch: most replications run at once; more run in successive batches (the same
            paths, up to float32 rounding: the module docstring). ``None`` picks the largest
            batch that fits in memory (:func:`max_batch_for`), and on CPU devices at most
            :data:`CPU_BATCH_PER_DEVICE` replications per device.
        first_rep: id of the first replication (replications ``first_rep .. first_rep + reps
            - 1`` run). Several processes (e.g. one per host under ``jax.distributed``) can
            split one experiment into disjoint id ranges and concatenate their results: each
            replication's path depends only on ``(key, id)``.
        checkpoint: a file (``.npz``) where the run saves its progress every
            ``checkpoint_every`` wall seconds, when interrupted and when done. If the file exists
            and was written by the same run (same system, key, replications, horizon, warm-up,
            chunk length, batching), the run resumes from it (``Run.resumed``), so a killed or
            interrupted run loses at most ``checkpoint_every`` seconds of work; the result is
            identical to an uninterrupted run. A finished run marks its file finished; running
            it again reads the result from the file. With ``max_batch`` left to its default, a
            file written in batches of another size (the default of another version) goes on
            in its own batches where they fit.
        checkpoint_every: wall seconds between checkpoints.
        grow_buffers: when a FCFS buffer of a system with a ``capacity`` overflows, rerun the
            batch from its start with four times the capacity (the paths are the same, so the
            result is exactly that of a large enough buffer), and report it (``notify``,
            ``Run.regrown``, ``Run.buffer_capacity``). False raises
            :class:`BufferOverflowError` instead (for a capacity the user fixed).
        notify: receives one line for each thing the user should know (a batch rerun with
            larger buffers, a resumed or finished checkpoint). ``None``: a rerun raises a
            :class:`SimulationWarning`; the rest is only in the returned fields.

    Raises:
        ValueError: invalid arguments.
        jaxqueue.budget.ResourceError: the run does not fit in memory.
        BufferOverflowError: an overflow that could not be grown.
        SimulationError: a replication met an event rate below 0 or NaN (a count or parameter
            out of its range), whose results would be wrong; or its clock went backwards, which
            would otherwise never end.
    """
    chunk_given = chunk_events is not None
    # Memory is checked at the shortest default chunk (the batch then picks its length).
    probe = chunk_events if chunk_given else CHUNK_BOUNDS[0]
    _check_window(reps, horizon, warmup, probe)
    clock_dtype = rng.real_dtype() if clock_dtype is None else np.dtype(clock_dtype)
    if clock_dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("clock_dtype = float64 needs jax.enable_x64(True)")
    devices = list(devices) if devices is not None else None
    if devices is not None and len(devices) == 0:
        raise ValueError("devices is empty: give at least one device, or None")
    per = len(devices) if devices else 1
    if per > 1 and getattr(system, "ring_index", False):
        # The rings' deadline index loops over blocks in each step; with the batch sharded over
        # several devices every pass of that loop waits for all of them (a lognormal-patience
        # run at n = 4-11 on two CPU devices took 4-5x the pass's time): the pass, the same
        # counts, runs instead.
        system = dataclasses.replace(system, ring_index=False)
    budget.check_fits(system, budget.estimate(system, reps=reps, horizon=horizon,
                                              chunk_events=probe, devices=devices), reps)
    chosen = max_batch is not None
    if max_batch is None:
        max_batch = max_batch_for(system, probe, devices)
        if _on_cpu(devices):
            max_batch = min(max_batch, CPU_BATCH_PER_DEVICE * per)
    elif isinstance(max_batch, bool) or int(max_batch) < 1:
        raise ValueError(f"max_batch = {max_batch!r} is invalid: must be an integer >= 1")
    if isinstance(first_rep, bool) or int(first_rep) != first_rep or first_rep < 0:
        raise ValueError(f"first_rep = {first_rep!r} is invalid: must be an integer >= 0")
    batch = max(per, (min(int(max_batch), reps) // per) * per)
    if not chunk_given:
        chunk_events = chunk_events_for(batch // per)
    if devices is not None and len(devices) == 1 and devices[0] == jax.devices()[0]:
        # The default device alone: placing each chunk's inputs there by a sharding cost about
        # 0.3 ms a chunk on the host, for nothing (the arrays land there anyway).
        devices = None
    bar = _Bar("simulating" if progress is True else progress) \
        if progress is True or isinstance(progress, str) else None
    report = bar or (progress or None)
    tell = notify if notify is not None else _warn_growth
    store = None
    if checkpoint is not None:
        def run_id(size, chunk):
            return fingerprint(system, key, reps, horizon, warmup, chunk, clock_dtype,
                               first_rep, size)

        store = Checkpoint(checkpoint, run_id(batch, chunk_events), checkpoint_every)
        stored = None if chosen and chunk_given else store.stored_run()
        if stored is not None and stored[0] != store.fingerprint:
            # The same run under the defaults of the version that wrote it (the default batch
            # and chunk length change with versions): go on in its batches and chunks, the same
            # paths, where its batches fit.
            sizes = [batch] if chosen or stored[1] % per or \
                stored[1] > max_batch_for(system, probe, devices) else [batch, stored[1]]
            chunks = [chunk_events] if chunk_given else default_chunks()
            match = next(((b, c) for b in sizes for c in chunks
                          if run_id(b, c) == stored[0]), None)
            if match is not None:
                batch, chunk_events = match
                store = Checkpoint(checkpoint, stored[0], checkpoint_every)
    saved = store.load() if store else None
    done, current = (saved.done, saved.current) if saved else ([], None)
    if saved and saved.capacity is not None and saved.capacity != _capacity(system):
        system = _with_capacity(system, saved.capacity)  # grown before the checkpoint was saved
    resumed = 0.0
    if saved and (done or current):
        resumed = (sum(min(p.time.size, reps) for p in done) * horizon
                   + (float(np.sum(current.batch.time)) if current else 0.0)) / (reps * horizon)
        if saved.finished:
            _say(notify, f"checkpoint {store.path} holds this run, finished: results read from "
                         "it, nothing simulated")
        else:
            _say(notify, f"resumed from checkpoint {store.path}: {100 * resumed:.0f}% of the run "
                         "was already simulated")
    interrupted = False
    regrown = 0
    rerun: set[int] = set()
    try:
        for start in range(len(done) * batch, reps, batch):
            size = min(batch, reps - start)
            padded = -(-size // per) * per  # shards need equal sizes: extra replications dropped

            def sub_report(f, start=start, size=size):
                report((start + f * size) / reps)

            while True:
                def save(progress_now, done=done, system=system):
                    store.save(done, progress_now, capacity=_capacity(system))

                try:
                    part, interrupted = _run_batch(
                        system, key, first_rep + start, padded, horizon, warmup,
                        int(chunk_events), clock_dtype, sub_report if report else None,
                        max_chunks, devices, resume=current, save=save if store else None,
                        every=store.every if store else math.inf, counted=size)
                    break
                except _Overflow:
                    system = _regrow(system, grow_buffers, chunk_events, padded // per, devices)
                    current = None
                    regrown += 1
                    rerun.update(range(start, start + size))
                    tell(f"a FCFS buffer overflowed in replications {first_rep + start}-"
                         f"{first_rep + start + size - 1}: rerunning them with buffers of "
                         f"{_capacity(system):,} jobs (same random numbers: the result is that "
                         "of a large enough buffer)")
            current = None
            part = dataclasses.replace(part, **{f: getattr(part, f)[:size]
                                                for f in ("integrals", "tallies", "time",
                                                          "stock_start", "stock_end")})
            done = [*done, part]
            if store and not interrupted:
                store.save(done, None, capacity=_capacity(system))
            if interrupted:
                break
    finally:
        if bar is not None:
            bar.close()
    if store and not interrupted and not (saved and saved.finished):
        store.save(done, None, capacity=_capacity(system), finished=True)
        _say(notify, f"checkpoint {store.path} marked finished: the same command reads the "
                     "result from it")
    run = _merge(done, reps, horizon, warmup, system, regrown=regrown, resumed=resumed)
    return dataclasses.replace(run, rerun_reps=tuple(sorted(rerun)), chunk_events=chunk_events)


def _say(notify, message: str) -> None:
    if notify is not None:
        notify(message)


def _warn_growth(message: str) -> None:
    warnings.warn(message, SimulationWarning, stacklevel=3)


def _capacity(system) -> int | None:
    """The FCFS buffers' capacity of a system that has one (a static int field), else None."""
    capacity = getattr(system, "capacity", None)
    return capacity if isinstance(capacity, int) and not isinstance(capacity, bool) else None


def _with_capacity(system, capacity: int):
    """``system`` with FCFS buffers of ``capacity`` slots (a static field: this recompiles)."""
    return dataclasses.replace(system, capacity=int(capacity))


class _Overflow(SimulationError):
    """Raised by :func:`_run_batch` when a buffer overflowed in a chunk."""


#: Factor by which an overflowing FCFS buffer grows before its batch is rerun.
GROWTH = 4


def _regrow(system, grow: bool, chunk_events: int, reps_per_device: int, devices):
    """The system with larger FCFS buffers, or :class:`BufferOverflowError` saying why not."""
    capacity = _capacity(system)
    message = system.overflow_message()
    if capacity is None:
        raise BufferOverflowError(message)
    if not grow:
        raise BufferOverflowError(
            f"{message}; its capacity was fixed (grow_buffers=False): use {GROWTH * capacity:,} "
            "or more, or let jaxqueue size and grow it", capacity=capacity)
    bigger = _with_capacity(system, GROWTH * capacity)
    need = budget.device_bytes_per_rep(bigger, chunk_events) * reps_per_device
    room = 2 * budget.DEVICE_SHARE * min(budget.device_memory(devices))
    if need > room:
        raise BufferOverflowError(
            f"{message}; growing it to {GROWTH * capacity:,} jobs would not fit in memory "
            f"({budget.human_bytes(need)} per device): the buffer's queue does not stay bounded "
            "(an overloaded class that never abandons, patience_rate = 0?)", capacity=capacity)
    return bigger


class _Bar:
    """A tqdm progress bar on stderr, with the time left; created at the first report, so that
    compilation does not distort its rate."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def __call__(self, fraction: float) -> None:
        k = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=1000, initial=k, desc=self.label, file=sys.stderr, smoothing=0,
                            dynamic_ncols=True, mininterval=0.5,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                                       "{elapsed} elapsed, {remaining} left")
        elif k < self.bar.n:  # a batch rerun with larger buffers
            self.bar.reset(total=1000)
            self.bar.update(k)
        else:
            self.bar.update(k - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _merge(parts: list[Batch], reps: int, horizon: float, warmup: float, system, *,
           regrown: int = 0, resumed: float = 0.0) -> Run:
    """One :class:`Run` from the batches (replications never started count zero time)."""
    num_levels = len(system.level_names) * system.num_classes
    parts = parts or [Batch.zeros(0, num_levels, len(system.tally_names) * system.num_classes)]
    cat = {f: np.concatenate([getattr(p, f) for p in parts])
           for f in ("integrals", "tallies", "time", "stock_start", "stock_end")}
    missing = reps - cat["time"].shape[0]
    if missing > 0:  # interrupted before some batches started
        cat = {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)])
               for k, v in cat.items()}
    return Run(
        level_integrals=cat["integrals"], tallies=cat["tallies"],
        window=np.clip(cat["time"], warmup, horizon) - warmup, time=cat["time"],
        stock_start=cat["stock_start"], stock_end=cat["stock_end"],
        events=sum(p.events for p in parts), wall_seconds=sum(p.wall for p in parts),
        compile_seconds=sum(p.compile for p in parts), chunks=sum(p.chunks for p in parts),
        interrupted=bool(np.any(cat["time"] < horizon)),
        level_names=tuple(system.level_names), tally_names=tuple(system.tally_names),
        num_classes=system.num_classes, horizon=float(horizon), warmup=float(warmup),
        buffer_capacity=_capacity(system), regrown=regrown, resumed=resumed)


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


class _CtrlC:
    """Whether Ctrl-C was pressed while a batch ran (see :func:`_ctrl_c_at_chunk_ends`)."""

    pressed = False


@contextmanager
def _ctrl_c_at_chunk_ends() -> Iterator[_CtrlC]:
    """Ctrl-C is noted and honoured at the next chunk's end; a second Ctrl-C raises at once.

    A ``KeyboardInterrupt`` raised where the signal lands can be lost: inside JAX's dispatch
    an exception from Python code called by C++ may be caught there, and the run then goes on
    as if Ctrl-C had not been pressed (1 of 55 presses in one trial of a CPU run of 6 ms
    chunks).
    A flag read between chunks cannot be lost. Only Python's own handler is replaced, only in
    the main thread, and it is put back on the way out; elsewhere (a thread, a handler of the
    caller's own) the interrupt is whatever it was.
    """
    state = _CtrlC()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield state
        return

    def note(signum, frame):
        if state.pressed:  # the second press: do not wait for the chunk
            raise KeyboardInterrupt
        state.pressed = True

    signal.signal(signal.SIGINT, note)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_batch(system, key, first, reps, horizon, warmup, chunk_events, clock_dtype, report,
               max_chunks, devices, resume: Progress | None = None, save=None,
               every: float = math.inf, counted: int | None = None) -> tuple[Batch, bool]:
    """The host loop over chunks for replications ``first .. first + reps - 1``, whose first
    ``counted`` (all by default; the rest pad the batch to a multiple of the devices) count in
    the events simulated.

    Returns the batch's sums, closed (what jobs still held owe is settled), and whether it was
    interrupted. ``save`` is called with a :class:`Progress` every ``every`` seconds and when
    interrupted.
    """
    axes = kernel.rep_axes(system)
    rep_ids = _shard(jnp.arange(first, first + reps, dtype=jnp.uint32), -1, devices)
    num_levels = len(system.level_names) * system.num_classes
    if resume is not None:
        treedef = jax.tree.structure(
            jax.eval_shape(lambda: kernel.replicate(system.init(), reps)))
        states = _shard(jax.tree.unflatten(treedef, [jnp.asarray(a) for a in resume.leaves]),
                        axes, devices)
        sums = resume.batch
        taken, pending = resume.rep_steps.astype(np.int64), resume.pending.astype(bool)
    else:
        states = _shard(kernel.initial_state_jit(
            system, key, jnp.arange(first, first + reps, dtype=jnp.uint32)), axes, devices)
        sums = Batch.zeros(reps, num_levels, len(system.tally_names) * system.num_classes)
        taken, pending = np.zeros(reps, np.int64), np.zeros(reps, bool)
    interrupted = False

    def progress_now() -> Progress:
        return Progress(batch=sums, leaves=[np.asarray(a) for a in jax.tree.leaves(states)],
                        rep_steps=taken, pending=pending)

    def chunk_call(w0, w1):
        # Each replication's position in its random stream: the steps it took so far.
        lo, hi = rng.split_position(taken)
        return kernel._rollout_jit(key, system, rep_ids, states, w0, w1, _shard(lo, -1, devices),
                                   _shard(hi, -1, devices), steps=chunk_events,
                                   clock_dtype=clock_dtype, close=False)

    before = kernel.compile_count()
    last_save = time.perf_counter()
    try:
        with _ctrl_c_at_chunk_ends() as ctrl_c:
            # A replication is through a phase once it reached its end with no bookkeeping left.
            while (np.any(sums.time < horizon) or np.any(pending)) and not ctrl_c.pressed:
                # Warm-up first: every replication stops at the warm-up, then all go on to the end.
                warming = np.all(sums.time <= warmup) and np.any((sums.time < warmup) | pending)
                stop = warmup if warming else horizon
                first_window_chunk = not warming and bool(np.all(sums.time == warmup))
                # The window on this chunk's clock; its start may be negative (an earlier chunk).
                w0 = _shard(jnp.asarray(warmup - sums.time, clock_dtype), -1, devices)
                w1 = _shard(jnp.asarray(stop - sums.time, clock_dtype), -1, devices)
                start = time.perf_counter()
                out = chunk_call(w0, w1)
                done = np.asarray(out.done)  # blocks until the chunk is computed
                elapsed = time.perf_counter() - start
                if kernel.compile_count() > before:
                    # The call compiled: time a second, identical call to separate the two.
                    before = kernel.compile_count()
                    start = time.perf_counter()
                    jax.block_until_ready(chunk_call(w0, w1))
                    run_time = time.perf_counter() - start
                    sums.compile += max(elapsed - run_time, 0.0)
                    elapsed = run_time
                if np.any(np.asarray(out.overflow)):
                    raise _Overflow(system.overflow_message())
                _check_chunk(np.asarray(out.time), np.arange(first, first + reps),
                             np.asarray(out.invalid))
                # Commit the chunk only once it is complete (an interrupt above loses nothing),
                # in one assignment (a second Ctrl-C raises at once: never between its parts).
                summary = out.summary
                new_sums = dataclasses.replace(
                    sums,
                    time=np.where(done, stop, sums.time + np.asarray(out.time, np.float64)),
                    integrals=sums.integrals + np.asarray(summary.integrals, np.float64),
                    tallies=sums.tallies + np.asarray(summary.counts, np.int64),
                    stock_start=(np.asarray(summary.stock_start, np.int64) if first_window_chunk
                                 else sums.stock_start),
                    events=sums.events + int(np.sum(np.asarray(summary.events,
                                                               np.int64)[:counted])),
                    wall=sums.wall + elapsed, chunks=sums.chunks + 1)
                new_taken, new_pending = taken + np.asarray(out.steps), np.asarray(out.pending)
                sums, taken, pending, states = new_sums, new_taken, new_pending, out.state
                if report:
                    report(float(np.mean(sums.time)) / horizon)
                if save and time.perf_counter() - last_save >= every:
                    save(progress_now())
                    last_save = time.perf_counter()
                if max_chunks is not None and sums.chunks >= max_chunks:
                    break
    except KeyboardInterrupt:  # a second Ctrl-C, or one under a handler of the caller's
        interrupted = True
    interrupted = interrupted or not np.all(sums.time >= horizon)
    if save and interrupted:
        save(progress_now())
    return _close(system, states, sums, warmup, devices), interrupted


def _check_chunk(elapsed: np.ndarray, ids: np.ndarray, invalid: np.ndarray | None = None) -> None:
    """A chunk's model time is >= 0 and finite, and no exact step of it met an event rate below
    0 or not a number, in every replication (``elapsed``, ``invalid``: ``(R,)``, or
    ``(points, R)`` in a sweep; ``ids``: the replications' ids, the same shape). Else some count
    or parameter is out of its range: the results would be wrong, and with the clock going
    backwards the run would go on forever. Raises :class:`SimulationError` naming the
    replications."""
    backwards = ~(np.isfinite(elapsed) & (elapsed >= 0))
    bad = np.argwhere(backwards | (False if invalid is None else invalid))
    if bad.size:
        names = [str(ids[tuple(at)]) + (f" (point {at[0]} of its group)" if len(at) == 2 else "")
                 for at in bad[:5].tolist()]
        what = ("the clock went backwards or became NaN in a chunk (a negative or non-finite "
                "event rate, " if backwards.any() else
                "an event rate went below 0 or became NaN in a chunk (")
        raise SimulationError(
            f"replication(s) {', '.join(names)}{' ...' if len(bad) > 5 else ''}: {what}so some "
            "count or parameter is out of its range); the run stopped instead of returning "
            "wrong results or going on forever. This is a bug of the simulator or of a custom "
            "system: please report it with the command that ran.")


def _close(system, states, sums: Batch, warmup: float, devices) -> Batch:
    """A batch's sums plus what jobs still held by lazy buffers owe, and the end census."""
    if sums.chunks == 0:
        return sums
    w0 = _shard(jnp.asarray(warmup - sums.time, rng.real_dtype()), -1, devices)
    flow, stock = kernel.close(system, states, w0)
    return dataclasses.replace(
        sums,
        tallies=sums.tallies + np.asarray(flow.counts, np.int64).T,
        integrals=sums.integrals + np.asarray(flow.waits, np.float64).T,
        stock_end=np.asarray(stock, np.int64).T)


#: Replication-steps per chunk that :func:`chunk_events_for` aims at, and its bounds.
CHUNK_WORK = 2**23
CHUNK_BOUNDS = (1024, 32768)


def chunk_events_for(reps_per_device: int) -> int:
    """A chunk length for ``reps_per_device`` replications on each device at once: about
    :data:`CHUNK_WORK` replication-steps per chunk, a power of two within
    :data:`CHUNK_BOUNDS` (8,192 for a CPU device's batch of 1,024; 1,024 from 8,192 replications
    up; 32,768 below 256).

    Each chunk costs a dispatch, the devices' wait for each other at its end, the census of the
    buffers and a sum of its results on the host, which short chunks do not hide. Since a
    replication's path does not depend on the chunk length (up to float32 rounding, which a
    long chunk's later clock times make coarser: the module docstring), the length is free to
    follow the run's shape.
    Measured on the 2-core development machine: ``jaxqueue simulate paper-qwen8b --policy
    fi-wsp --gpus 500 --reps 5 --horizon 2000 --warmup 500`` simulated for 26.4-27.0 s in chunks
    of 1,024 steps and 24.0-24.1 s in chunks of 32,768 (two runs each, one core, 2026-12-06);
    pooled Gate-and-Route at n = 500, 4,096 replications over 100 s on both cores (batches of
    1,024 per device) ran at 26.0 M events/s in chunks of 1,024, 27.6 M in 4,096, 29.7 M in
    8,192, 30.1 M in 16,384 and 29.6 M in 32,768 (one run each, 2026-12-07)."""
    if isinstance(reps_per_device, bool) or int(reps_per_device) < 1:
        raise ValueError(f"reps_per_device = {reps_per_device!r} is invalid: must be >= 1")
    low, high = CHUNK_BOUNDS
    target = CHUNK_WORK / int(reps_per_device)
    return int(min(high, max(low, 2 ** math.ceil(math.log2(target)))))


def default_chunks() -> list[int]:
    """Every chunk length :func:`chunk_events_for` may pick (a checkpoint written under another
    version's default is matched against each)."""
    low, high = CHUNK_BOUNDS
    return [2**k for k in range(int(math.log2(low)), int(math.log2(high)) + 1)]


#: Most replications a CPU device runs at once by default (more run in successive batches: the same
#: paths, up to float32 rounding, see the module docstring). A step touches every replication's
#: vectors of rates, counts and integrals; past about a thousand replications they no longer stay in
#: a core's cache between the step's kernels. Pooled Gate-and-Route on ``paper-qwen8b``, 4,096
#: replications on one pinned core of the 2-core development machine, three alternations in one
#: process (2026-12-06): at n = 500, 8.3-8.6 M events/s in one batch against 9.6-11.0 M in batches
#: of 1,024 and 9.7-12.0 M in batches of 512; at n = 20, 10.5-10.9 M against 11.8-12.3 M (1,024).
#: Over both cores (a device each), 16,384 replications at n = 500: 10.6-14.0 M against 13.7-15.2 M
#: (1,024 per device). The per-GPU engine's speed does not change (FI-WSP at n = 500, 1,024
#: replications: 1.9-2.1 M in one batch, 1.8-2.2 M in batches of 128 to 512), nor, within the noise,
#: that of 4,096 replications over both cores (one batch, 2,048 per device: 15.5-17.7 M; batches of
#: 1,024 per device: 16.5-18.4 M). Whole command, ``jaxqueue simulate paper-qwen8b --gpus 500 --reps
#: 8192 --horizon 40 --warmup 10`` (both cores, three pairs): 0.90x the wall time (0.85-0.92x). A
#: GPU wants the widest batch: no cap there.
CPU_BATCH_PER_DEVICE = 1024


def _on_cpu(devices: Sequence[Any] | None) -> bool:
    """Whether the run's devices (the default device for ``None``) are CPU devices."""
    return all(d.platform == "cpu" for d in (devices or jax.devices()[:1]))


def max_batch_for(system: AbstractSystem, chunk_events: int,
                  devices: Sequence[Any] | None = None,
                  fraction: float = budget.DEVICE_SHARE) -> int:
    """The most replications to run at once: ``fraction`` of the memory of the devices used
    (the host's physical memory for CPU devices) over the bytes one replication needs
    (:func:`jaxqueue.budget.device_bytes_per_rep`)."""
    per_rep = budget.device_bytes_per_rep(system, chunk_events)
    total = sum(budget.device_memory(devices))
    return max(1, int(fraction * total // per_rep))
