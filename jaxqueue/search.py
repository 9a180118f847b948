"""Derivative-free searches of a tuning problem, for comparison with the gradient tuner.

Both work in the natural coordinates of :mod:`jaxqueue.tune` (each free coordinate over its
natural step, about one to two jobs or GPUs) and compare points with common random numbers: the
points of one comparison see the same key, so their difference is sharp.

- :func:`pattern_search`: compass search. Each sweep evaluates the current point and the point
  moved by +-delta along every tuned coordinate, all in one vmapped batch on one fresh key, and
  moves to the best if it beats the current point by more than its paired standard error;
  otherwise delta is halved. The reference search of the tuning benchmark.
- :func:`evolution_strategy`: a (1+1)-evolution strategy: each iteration draws one candidate
  ``y + sigma * N(0, I)`` and keeps it if it beats the parent on a fresh common key; sigma follows
  the one-fifth success rule (Rechenberg; Beyer & Schwefel, Natural Computing 2002), damped by
  ``sqrt(p)``.

Each returns a :class:`SearchResult` with the best point, the events it simulated and its path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .objective import Problem, from_free, mask, measure, natural_steps, to_free
from .sweep import simulate_many

__all__ = ["SearchResult", "evolution_strategy", "pattern_search"]


@dataclasses.dataclass
class SearchResult:
    """What a search found.

    Attributes:
        params: the final (best accepted) parameters.
        events: events simulated.
        history: per iteration ``{"value", "events", "step"}``: the accepted point's mean
            objective on that iteration's key, the events so far, and the step size.
    """

    params: object
    events: int
    history: list[dict]


class _Space:
    """Natural coordinates of a problem around a starting point (see :mod:`jaxqueue.tune`)."""

    def __init__(self, problem: Problem, start, only):
        free = to_free(jax.tree.map(jnp.asarray, start))
        flat, self.unravel = ravel_pytree(free)
        self.h = np.asarray(ravel_pytree(natural_steps(problem, jax.tree.map(np.asarray,
                                                                                 start)))[0])
        self.on = np.asarray(ravel_pytree(mask(free, only))[0]) > 0
        self.y0 = np.asarray(flat, np.float64) / self.h
        self.problem = problem

    def params(self, y):
        return jax.tree.map(np.asarray, from_free(self.unravel(jnp.asarray(y * self.h))))

    def project(self, y):
        flat = np.asarray(ravel_pytree(to_free(from_free(self.unravel(jnp.asarray(
            y * self.h)))))[0]) / self.h
        return np.where(self.on, flat, self.y0)

    def values(self, points, key, reps):
        """Per-replication objectives ``(len(points), reps)`` on one common key, and events."""
        p = self.problem
        systems = [p.system(self.params(y)) for y in points]
        runs = simulate_many(key, systems, reps=reps, horizon=p.horizon, warmup=p.warmup)
        out = np.stack([measure(r, p.model, p.n, p.pricing, p.sli)["objective"] for r in runs])
        grown = max((r.buffer_capacity for r in runs if r.buffer_capacity is not None),
                    default=None)
        if grown is not None and grown != p.capacity:  # later points start with rings that fit
            self.problem = dataclasses.replace(p, capacity=grown)
        return out, sum(r.events for r in runs)


def pattern_search(problem: Problem, start, *, budget: float, delta: float = 2.0,
                   min_delta: float = 0.25, reps: int | None = None, seed: int = 0,
                   only: Sequence[str] | None = None) -> SearchResult:
    """Compass search from ``start`` until ``budget`` events are spent or delta falls below
    ``min_delta`` (both in natural steps; see the module docstring)."""
    space = _Space(problem, start, only)
    reps = reps or problem.reps
    y, events, history, sweep = space.y0.copy(), 0, [], 0
    picked = np.flatnonzero(space.on)
    while events < budget and delta >= min_delta:
        points = [y]
        for j in picked:
            for sign in (1.0, -1.0):
                z = y.copy()
                z[j] += sign * delta
                points.append(space.project(z))
        values, spent = space.values(points, jax.random.fold_in(jax.random.key(seed), sweep),
                                     reps)
        events += spent
        diffs = values[1:] - values[0]
        gain = diffs.mean(1)
        se = diffs.std(1, ddof=1) / np.sqrt(reps)
        best = int(np.argmax(gain))
        moved = gain[best] > se[best]
        if moved:
            y = points[1 + best]
        else:
            delta /= 2
        history.append({"value": float(values[1 + best if moved else 0].mean()),
                        "events": events, "step": delta})
        sweep += 1
    return SearchResult(params=space.params(y), events=events, history=history)


def evolution_strategy(problem: Problem, start, *, budget: float, sigma: float = 1.0,
                       reps: int | None = None, seed: int = 0,
                       only: Sequence[str] | None = None) -> SearchResult:
    """A (1+1)-evolution strategy from ``start`` until ``budget`` events are spent (``sigma`` in
    natural steps; see the module docstring)."""
    space = _Space(problem, start, only)
    reps = reps or problem.reps
    rng_key = jax.random.key(seed)
    y, events, history, k = space.y0.copy(), 0, [], 0
    while events < budget:
        noise = np.asarray(jax.random.normal(jax.random.fold_in(rng_key, 2 * k), y.shape))
        candidate = space.project(y + sigma * noise * space.on)
        values, spent = space.values([y, candidate], jax.random.fold_in(rng_key, 2 * k + 1),
                                     reps)
        events += spent
        better = values[1].mean() > values[0].mean()
        if better:
            y = candidate
        sigma *= np.exp((float(better) - 0.2) / 0.8 / np.sqrt(max(space.on.sum(), 1)))
        history.append({"value": float(values[int(better)].mean()), "events": events,
                        "step": float(sigma)})
        k += 1
    return SearchResult(params=space.params(y), events=events, history=history)
