"""Checkpoints of long simulations: progress in one ``.npz`` file, written atomically.

A checkpoint holds the finished batches of replications (their float64 sums) and, for the batch
in progress, everything needed to continue it exactly: the states, the absolute clock of each
replication, the sums so far, the chunks each replication drew random numbers in (the index of
its next chunk) and whether it has zero-time bookkeeping left. A digest of everything that
determines the path (system, key, replications, horizon, warm-up, chunking, batching) guards
against resuming a different run, and a format number against a file of another layout. The
file also records the capacity of the FCFS buffers the run uses (larger than the system's if a
buffer overflowed and was grown) and whether the run finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import jax
import numpy as np

from . import kernel
from .kernel import SimulationError

__all__ = ["Batch", "Checkpoint", "CheckpointError", "Progress", "Saved", "fingerprint"]

#: Version of the file's layout. Format 1 (no ``format`` entry) numbered chunks per batch and
#: format 2 each replication's chunks; format 3 keeps each replication's position in its random
#: stream (the steps it took), which the earlier formats' paths cannot be continued from.
FORMAT = 3


class CheckpointError(SimulationError):
    """A checkpoint file that cannot be used for this run."""


@dataclasses.dataclass
class Batch:
    """Sums over the statistics window of a batch of replications (host float64/int64).

    Attributes:
        integrals: time integral of each level, ``(R, L)``.
        tallies: events of each counter, ``(R, T)``.
        time: absolute simulated time reached, ``(R,)``.
        stock_start: census of the levels at the window's start, ``(R, L)``.
        stock_end: census at the end (zero until the batch is closed), ``(R, L)``.
        events: random events simulated, warm-up included.
        wall: wall seconds of simulation, compilation excluded.
        compile: wall seconds spent compiling.
        chunks: chunks run.
    """

    integrals: np.ndarray
    tallies: np.ndarray
    time: np.ndarray
    stock_start: np.ndarray
    stock_end: np.ndarray
    events: int = 0
    wall: float = 0.0
    compile: float = 0.0
    chunks: int = 0

    @classmethod
    def zeros(cls, reps: int, levels: int, tallies: int) -> Batch:
        return cls(integrals=np.zeros((reps, levels)), tallies=np.zeros((reps, tallies), np.int64),
                   time=np.zeros(reps), stock_start=np.zeros((reps, levels), np.int64),
                   stock_end=np.zeros((reps, levels), np.int64))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{f.name}": np.asarray(getattr(self, f.name))
                for f in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, data, prefix: str) -> Batch:
        values = {}
        for f in dataclasses.fields(cls):
            a = data[f"{prefix}{f.name}"]
            values[f.name] = a if f.default is dataclasses.MISSING else type(f.default)(a)
        return cls(**values)


@dataclasses.dataclass
class Progress:
    """The batch in progress: its sums and what continues it exactly.

    Attributes:
        batch: the sums so far.
        leaves: the kernel states.
        rep_steps: steps each replication took (its position in its random stream), ``(R,)``.
        pending: whether each replication has zero-time bookkeeping left, ``(R,)``.
    """

    batch: Batch
    leaves: list[np.ndarray]
    rep_steps: np.ndarray
    pending: np.ndarray


@dataclasses.dataclass
class Saved:
    """What a checkpoint file holds.

    Attributes:
        done: the finished batches.
        current: the batch in progress, or None.
        capacity: the FCFS buffers' capacity the run had reached (None: the system's own).
        finished: whether the whole run finished.
    """

    done: list[Batch]
    current: Progress | None
    capacity: int | None = None
    finished: bool = False


def fingerprint(system, key, *settings) -> str:
    """A digest of everything that determines a run's path."""
    digest = hashlib.sha256()
    digest.update(repr(jax.tree.structure(system)).encode())
    for leaf in jax.tree.leaves(system):
        a = np.asarray(leaf)
        digest.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    # The saved states' layout: where they keep their replication axis, and each leaf's dtype
    # and shape (the kernel's layout may change between versions; such a file is refused).
    digest.update(repr(jax.tree.leaves(kernel.rep_axes(system))).encode())
    digest.update(repr([(str(a.dtype), a.shape)
                        for a in jax.tree.leaves(jax.eval_shape(system.init))]).encode())
    digest.update(np.asarray(jax.random.key_data(key)).tobytes())
    digest.update(repr([str(x) for x in settings]).encode())
    return digest.hexdigest()


class Checkpoint:
    """Progress of a run in one ``.npz`` file, written atomically (temporary file + rename)."""

    def __init__(self, path, fingerprint: str, every: float):
        if not (isinstance(every, (int, float)) and every > 0):
            raise ValueError(f"checkpoint_every = {every!r} is invalid: must be > 0 seconds")
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.every = float(every)

    def load(self) -> Saved | None:
        """What was saved so far (None when there is no file)."""
        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as f:
            version = int(f["format"]) if "format" in f else 1
            if version != FORMAT:
                raise CheckpointError(
                    f"checkpoint {self.path} has format {version}, written by another version "
                    f"of jaxqueue; this one reads format {FORMAT} (earlier formats numbered "
                    "chunks, not the steps each replication took: their paths cannot be "
                    "continued): remove it or choose another path")
            if str(f["fingerprint"]) != self.fingerprint:
                raise CheckpointError(
                    f"checkpoint {self.path} was written by a different run (system, key, "
                    "replications, horizon, warm-up or chunking differ): remove it or choose "
                    "another path")
            done = [Batch.from_arrays(f, f"b{k}_") for k in range(int(f["num_batches"]))]
            current = None
            if bool(f["has_current"]):
                current = Progress(batch=Batch.from_arrays(f, "c_"),
                                   leaves=[f[f"leaf{k}"] for k in range(int(f["num_leaves"]))],
                                   rep_steps=f["rep_steps"], pending=f["pending"])
            capacity = int(f["capacity"]) if "capacity" in f and int(f["capacity"]) > 0 else None
            finished = bool(f["finished"]) if "finished" in f else False
        return Saved(done=done, current=current, capacity=capacity, finished=finished)

    def stored_run(self) -> tuple[str, int] | None:
        """The fingerprint in the file and the replications of its first batch (every batch
        but a run's last has the run's batch size), without checking either; None when there
        is no file or it is of another format."""
        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as f:
            if ("format" not in f or int(f["format"]) != FORMAT
                    or not (int(f["num_batches"]) or bool(f["has_current"]))):
                return None
            first = f["b0_time"] if int(f["num_batches"]) else f["c_time"]
            return str(f["fingerprint"]), int(first.shape[0])

    def save(self, done: list[Batch], current: Progress | None, *, capacity: int | None = None,
             finished: bool = False) -> None:
        """Writes the finished batches, the batch in progress, the buffers' capacity and whether
        the run finished (atomically: a reader never sees half a file)."""
        data = {"format": FORMAT, "fingerprint": np.asarray(self.fingerprint),
                "num_batches": len(done),
                "has_current": current is not None, "capacity": int(capacity or 0),
                "finished": bool(finished)}
        for k, batch in enumerate(done):
            data.update(batch.arrays(f"b{k}_"))
        if current is not None:
            data.update(current.batch.arrays("c_"))
            data.update({f"leaf{k}": a for k, a in enumerate(current.leaves)})
            data["num_leaves"] = len(current.leaves)
            data.update(rep_steps=current.rep_steps, pending=current.pending)
        tmp = self.path + ".tmp.npz"
        np.savez(tmp, **data)
        os.replace(tmp, self.path)
