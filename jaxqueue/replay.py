"""Replaying a trace's arrivals: the requests arrive at the trace's times instead of as Poisson
streams.

A request trace with arrival times (:func:`jaxqueue.workload.read_trace`) gives each request an
arrival time and its prompt and output lengths. :func:`from_trace` assigns each request to the
scenario's class nearest to its lengths (in ``(ln prompt, ln output)``, to the class means
``(P_i, D_i)``: the distance of the workload's k-means) and returns an :class:`ArrivalTrace`
and the scenario with each class's arrival rate per GPU set to the trace's (its requests over
the trace's period, divided by n), which the LP plan and the report use.

The engine replays the arrival times exactly; the lengths enter only through the request's
class, whose service times keep the scenario's laws (the pooled engine counts jobs per class
and never follows one request's own lengths). The trace repeats with period ``N / (N - 1)``
times its span (``N`` requests), so that the gap from its last request to the first of the next
cycle is its mean gap. Each replication starts at its own uniformly random point of the cycle
(a uniform from its own key): replications then see different stretches of the trace, and their
spread, hence the confidence intervals, includes the trace's own variability over stretches as
long as the horizon.

Exactness: between two scheduled arrivals the other events are exponential races; a step draws
the time of the next of them and, when a scheduled arrival comes first, fires that arrival at
its time instead (the exponential clocks are memoryless, so discarding the draw leaves the law
of the rest of the path unchanged).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .model import Model

__all__ = ["ArrivalTrace", "from_trace", "nearest_class"]


class ArrivalTrace(eqx.Module):
    """Arrival times and classes, replayed cyclically (see the module docstring).

    Attributes:
        times: arrival times within the cycle, non-decreasing, in ``[0, period)`` (seconds).
        gaps: time from each arrival to the next, the last wrapping to the next cycle's first.
        classes: each arrival's class.
        period: the cycle's length (seconds).
    """

    times: Float[Array, " N"]
    gaps: Float[Array, " N"]
    classes: Int[Array, " N"]
    period: Float[Array, ""]

    @classmethod
    def make(cls, times, classes, speed: float = 1.0) -> ArrivalTrace:
        """From arrival times (seconds, any order and origin) and classes; ``speed`` > 0 divides
        every time (2: the same requests arriving twice as fast)."""
        times = np.asarray(times, np.float64)
        classes = np.asarray(classes)
        if times.ndim != 1 or times.size < 2 or classes.shape != times.shape:
            raise ValueError(f"arrival times ({times.shape}) and classes ({classes.shape}) are "
                             "invalid: need two or more arrivals, one class each")
        if not np.all(np.isfinite(times)):
            raise ValueError("arrival times are invalid: every time must be finite")
        if not (np.isfinite(speed) and speed > 0):
            raise ValueError(f"speed = {speed!r} is invalid: must be > 0")
        order = np.argsort(times, kind="stable")
        t = (times[order] - times[order[0]]) / speed
        span = t[-1]
        if span <= 0:
            raise ValueError("arrival times are invalid: they must not all be equal")
        period = span * t.size / (t.size - 1)
        gaps = np.diff(np.append(t, period))
        return cls(times=jnp.asarray(t, jnp.float32), gaps=jnp.asarray(gaps, jnp.float32),
                   classes=jnp.asarray(classes[order], jnp.int32),
                   period=jnp.asarray(period, jnp.float32))

    @property
    def size(self) -> int:
        return self.times.shape[0]

    def rates(self, num_classes: int) -> np.ndarray:
        """Each class's arrival rate over the cycle (requests per second, all GPUs)."""
        counts = np.bincount(np.asarray(self.classes), minlength=num_classes)
        return counts / float(self.period)


def nearest_class(prompt, output, P, D) -> np.ndarray:
    """Each request's class: the one whose mean lengths ``(P_i, D_i)`` are nearest to its own in
    ``(ln prompt, ln output)`` (ties to the lower index)."""
    x = np.stack([np.log(np.asarray(prompt, np.float64)),
                  np.log(np.asarray(output, np.float64))], axis=1)
    c = np.stack([np.log(np.asarray(P, np.float64)), np.log(np.asarray(D, np.float64))], axis=1)
    return np.argmin(((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2), axis=1)


def from_trace(model: Model, trace, gpus: int, speed: float = 1.0
               ) -> tuple[Model, ArrivalTrace]:
    """The scenario with the trace's arrival rates per GPU, and the arrivals to replay.

    ``trace`` is a :class:`jaxqueue.workload.Trace` with arrival times."""
    if trace.arrivals is None:
        raise ValueError(f"{trace.source}: no arrival-time column, which a replay needs "
                         "(looked for arrived_at, arrival_time, ...)")
    classes = nearest_class(trace.prompt, trace.output, model.P, model.D)
    arrivals = ArrivalTrace.make(trace.arrivals, classes, speed)
    lam = arrivals.rates(model.num_classes) / gpus
    return model.replace(lambda_=lam), arrivals
