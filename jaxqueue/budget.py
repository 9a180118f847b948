"""What a simulation will cost before it starts: memory per replication and a run-time estimate.

Memory is exact up to XLA's temporaries: the state of one replication is read from the
system's ``init`` without allocating it (``jax.eval_shape``); a chunk holds it about three times
over (inputs, outputs, temporaries), plus its random words. Pooled systems hold counts and
buffers whose size follows n; per-GPU systems hold arrays of length O(n) per replication. The
host keeps float64 sums per replication (a few hundred bytes each).

Time is an estimate. Every job causes one arrival, one prefill end (its completion, or its
abandonment while waiting) and, once prefilled, one decode end: a job abandoning in a lazy FCFS
buffer is discarded in one zero-time step instead of an abandonment event. So a replication
takes about ``3 * n * sum_i lambda_i * horizon`` steps, an upper bound up to the arrivals' noise
(measured: 2.94 per arrival for Gate-and-Route on ``paper-qwen8b`` at n = 50 and 200; 2.5 at
``B = 8``, where many jobs abandon before their prefill); systems that admit in bookkeeping
steps (the tunable ``gated`` family) take up to one more per job. With phase-type service laws
(:mod:`jaxqueue.service`) a prefill or decode ends after a step per phase it passes through, so
a job takes one plus the mean phases of its prefill and of its decode.

The rate assumed for one device running ``k`` replications of a two-class pooled system is
``RATE_SCALE * k ** RATE_EXPONENT`` events per second, at most ``RATE_CAP`` (the constants below
say where they were measured), scaled by ``2 / classes`` beyond two classes. The per-GPU engine
has constants of its own up to 512 GPU slots, and its cost per event grows as the square of its
tree's depth, ``log2`` of the slots, beyond (measured from n = 500 to n = 5,000, depth 9 to 13:
1.1-1.6x on one device, 1.8-1.9x on two, against an assumed 2.1x). The rates are of a quiet
machine: on a busy one runs take longer than estimated (with earlier, lower constants, up to
2.5x under a load average of 8).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from .kernel import SimulationError

__all__ = ["Estimate", "ResourceError", "device_memory", "estimate", "host_memory",
           "human_bytes", "human_seconds"]

#: Share of a device's memory one batch of replications may take (the rest is XLA's and ours).
DEVICE_SHARE = 0.25
#: Share of the host's physical memory the per-replication results may take.
HOST_SHARE = 0.5


class ResourceError(SimulationError):
    """A run that cannot fit in memory; the message says what would fit."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a run needs.

    Attributes:
        device_bytes_per_rep: device memory one replication needs during a chunk.
        device_bytes: memory one device can give a batch (``DEVICE_SHARE`` of it).
        host_bytes_per_rep: host memory of one replication's results.
        host_bytes: host memory the results may take (``HOST_SHARE`` of it).
        events: estimated steps of the whole run (three per job: see the module docstring),
            or None when the system does not say its arrival rates.
        events_per_second: the rate assumed for this engine, replications and devices.
    """

    device_bytes_per_rep: int
    device_bytes: int
    host_bytes_per_rep: int
    host_bytes: int
    events: float | None
    events_per_second: float

    @property
    def seconds(self) -> float | None:
        """Estimated wall seconds of simulation (compilation excluded)."""
        return None if self.events is None else self.events / self.events_per_second

    @property
    def max_reps_device(self) -> int:
        """Replications one device can run at once."""
        return int(self.device_bytes // self.device_bytes_per_rep)

    @property
    def max_reps_host(self) -> int:
        """Replications whose results fit in the host's memory."""
        return int(self.host_bytes // self.host_bytes_per_rep)


def state_bytes(system) -> int:
    """Bytes of one replication's state (from ``system.init``, nothing allocated)."""
    state = jax.eval_shape(system.init)
    return int(sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(state)))


def device_bytes_per_rep(system, chunk_events: int) -> int:
    """Device memory of one replication in a chunk: its state three times over (inputs, outputs
    and temporaries) and its random words."""
    return 3 * state_bytes(system) + chunk_events * (2 + system.num_random) * 4 * 2 + 4096


def host_bytes_per_rep(system) -> int:
    """Host memory of one replication's results: its float64 sums (integrals, counters, time,
    censuses at the window's ends) twice over (batches and their concatenation), and the
    per-GPU summaries of :mod:`jaxqueue.stats`."""
    levels = len(system.level_names) * system.num_classes
    tallies = len(system.tally_names) * system.num_classes
    return 8 * (2 * (3 * levels + tallies + 1) + 30 * system.num_classes)


def device_memory(devices: Sequence[Any] | None = None) -> list[int]:
    """Memory of each device in bytes: its allocator's limit, or for CPU devices the host's
    physical memory shared among them."""
    devs = list(devices) if devices else [jax.devices()[0]]
    out = []
    for d in devs:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        limit = (stats or {}).get("bytes_limit")
        if limit is None:
            limit = host_memory() // len(devs)
        out.append(int(limit))
    return out


def host_memory() -> int:
    """The host's physical memory in bytes (4 GiB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


#: Steps per job: its arrival, its prefill's end and its decode's end (see the module docstring).
STEPS_PER_JOB = 3
#: The assumed events per second of one device running k replications of a two-class pooled
#: system: ``RATE_SCALE * k ** RATE_EXPONENT``, at most ``RATE_CAP``. Gate-and-Route at n = 500
#: on one core of the 2-core machine: 3.7e5 events/s with 2 replications, 1.0e6 with 8, 5.4e6
#: with 32, 7.8e6 with 128 (2026-12-04); 7.4e5, 2.2e6, 7.0e6, 1.3e7 and 1.5e7 with 1,024 on a
#: faster day, in the default chunks (2026-12-07). The constants fit the geometric means of the
#: two days: each measured rate is within 1.8x of the assumed one (the furthest: 8 replications
#: on 2026-12-04).
RATE_SCALE, RATE_EXPONENT, RATE_CAP = 2.8e5, 0.89, 1.2e7
#: The same for the per-GPU engine at n <= 512 (FI-WSP at n = 500 on one core of the 2-core
#: machine: 3.3e5 events/s with 2 replications, 5.6e5 with 5, 1.05e6 with 8, 1.4e6 from 16 on,
#: 2026-12-04; 4.4e5, 9.5e5 and 1.8e6 with 2, 5 and 16 on 2026-12-07; the geometric means
#: again), scaled by ``(9 / log2 n)^2`` beyond.
PER_GPU_RATE_SCALE, PER_GPU_RATE_EXPONENT, PER_GPU_RATE_CAP = 2.4e5, 0.69, 1.6e6


#: The events per second of a pooled step that follows service phases (jaxqueue.service),
#: relative to the exponential step's: 0.25 with Erlang-4 prefill and decode times on
#: ``paper-qwen8b`` at n = 100 and 1,024 replications (``scripts/bench.py --only phases``),
#: 0.28-0.34 with one phase, 0.19-0.20 at four on a busier machine.
PHASED_RATE = 0.25


def _steps_per_time(system) -> float | None:
    """The steps per model second of one replication (see the module docstring), or None for a
    system that does not expose its arrival rates."""
    model = getattr(system, "model", None)
    if model is not None:
        lam = np.asarray(model.lambda_, np.float64)
        arrivals = float(np.asarray(system.n)) * float(np.sum(lam))
        service = getattr(model, "service", None)
        if service is not None:  # a step per phase of each service (jaxqueue.service)
            return service.steps_per_job(lam) * arrivals
        return STEPS_PER_JOB * arrivals
    rate = getattr(system, "arrival_rate", None)
    if rate is not None:  # M/M/N+M: an arrival and a departure (service or abandonment) per job
        return 2.0 * float(np.asarray(rate))
    return None


def _rate_per_device(system, reps_per_device: int) -> float:
    """Events per second assumed for one device running ``reps_per_device`` replications."""
    k = max(int(reps_per_device), 1)
    classes = 2.0 / max(system.num_classes, 2)
    base = min(RATE_SCALE * k ** RATE_EXPONENT, RATE_CAP) * classes
    gpus = getattr(system, "gpus", None)
    if gpus is not None:  # per-GPU engine: O(log n) per event over a tree of the GPUs
        depth = max(math.log2(gpus), 9.0)
        base = (min(PER_GPU_RATE_SCALE * k ** PER_GPU_RATE_EXPONENT, PER_GPU_RATE_CAP)
                * classes * (9.0 / depth) ** 2)
    elif getattr(system, "model", None) is None:  # Erlang-A: a handful of scalars per step
        base *= 10.0
    if getattr(system, "phased", False):
        base *= PHASED_RATE
    return base


def estimate(system, *, reps: int, horizon: float, chunk_events: int = 1024,
             devices: Sequence[Any] | None = None) -> Estimate:
    """The memory and time a run of ``reps`` replications over ``[0, horizon]`` needs."""
    memory = device_memory(devices)
    per = len(memory)
    events = None
    steps = _steps_per_time(system)
    if steps is not None:
        events = steps * float(horizon) * reps
    per_device = -(-reps // per)
    return Estimate(
        device_bytes_per_rep=device_bytes_per_rep(system, chunk_events),
        device_bytes=int(DEVICE_SHARE * min(memory)),
        host_bytes_per_rep=host_bytes_per_rep(system),
        host_bytes=int(HOST_SHARE * host_memory()),
        events=events,
        events_per_second=per * _rate_per_device(system, per_device),
    )


def check_fits(system, est: Estimate, reps: int) -> None:
    """Raises :class:`ResourceError` (one line that says what would fit) when one replication
    does not fit on a device or the results of ``reps`` do not fit in the host's memory."""
    if est.device_bytes_per_rep > est.device_bytes:
        share = est.device_bytes / est.device_bytes_per_rep
        what = "this system"
        fit = ""
        n = getattr(system, "n", None)
        if n is not None:  # the state grows in proportion to n (buffers, per-GPU arrays)
            n = int(np.asarray(n))
            what = f"n = {n:,} GPUs"
            fit = f": at most about n = {max(1, int(n * share)):,} GPUs fit"
        raise ResourceError(
            f"{what} need {human_bytes(est.device_bytes_per_rep)} of memory per replication, "
            f"more than the {human_bytes(est.device_bytes)} a device can give{fit}")
    if reps * est.host_bytes_per_rep > est.host_bytes:
        raise ResourceError(
            f"reps = {reps:,} need {human_bytes(reps * est.host_bytes_per_rep)} of host memory "
            f"for their results ({est.host_bytes_per_rep} bytes each), more than "
            f"{human_bytes(est.host_bytes)}: at most about {est.max_reps_host:,} replications "
            "fit")


def human_bytes(size: float) -> str:
    """``1.5 GB``-style sizes (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1000
    raise AssertionError  # unreachable


def human_seconds(seconds: float) -> str:
    """``3 min``-style durations."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / (365 * 86400):.2g} years"
