"""Derivative-free searches of a tuning problem, for comparison with the gradient tuner.

Both work in the natural coordinates of :mod:`jaxqueue.tune` (each free coordinate over its
natural step, about one to two jobs or GPUs) and compare points with common random numbers: the
points of one comparison see the same key, so their difference is sharp.

- :func:`pattern_search`: compass search. Each sweep evaluates the current point and the point
  moved by +-delta along every tuned coordinate, all in one vmapped batch on one fresh key, and
  moves to the best if it beats the current point by more than its paired standard error;
  otherwise delta is halved. With ``pairs`` it also polls every move of two coordinates at once;
  with ``confirm`` a move is taken only if it wins again on a fresh key. Both together are the
  reference search of the tuning benchmark.
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
                   only: Sequence[str] | None = None, pairs: bool = False, confirm: int = 0,
                   confirm_reps: int | None = None, z: float = 2.0) -> SearchResult:
    """A pattern search from ``start`` until ``budget`` events are spent or delta falls below
    ``min_delta`` (both in natural steps).

    With the defaults, the compass search of the module docstring. ``pairs=True`` also polls
    every move of two coordinates at once by (+-delta, +-delta), so that a ridge along which no
    single coordinate improves is climbed. ``confirm=k`` re-evaluates the poll's ``k`` best
    points, with the current point, on a fresh key of ``confirm_reps`` replications (default
    ``4 reps``) and moves only if the best of them beats the current point there by more than
    ``z`` paired standard errors: the largest of many noisy differences overstates its point's
    gain, a fresh key does not.
    """
    space = _Space(problem, start, only)
    reps = reps or problem.reps
    y, events, history = _poll_search(
        space.values, space.y0, np.flatnonzero(space.on), space.project, budget=budget,
        delta=delta, min_delta=min_delta, reps=reps, seed=seed, pairs=pairs, confirm=confirm,
        confirm_reps=confirm_reps or 4 * reps, z=z)
    return SearchResult(params=space.params(y), events=events, history=history)


def _poll_points(y, picked, delta, pairs, project):
    """The points a poll evaluates besides ``y`` (projected; :func:`_distinct` drops repeats):
    every coordinate of ``picked`` moved by +-delta, and with ``pairs`` every two of them moved
    together."""
    moves = []
    for j in picked:
        for s in (1.0, -1.0):
            moves.append({j: s})
    if pairs:
        for a, i in enumerate(picked):
            for j in picked[a + 1:]:
                for si in (1.0, -1.0):
                    for sj in (1.0, -1.0):
                        moves.append({i: si, j: sj})
    points = []
    for move in moves:
        z = y.copy()
        for j, s in move.items():
            z[j] += s * delta
        points.append(project(z))
    return points


def _distinct(y, points):
    """``points`` without those equal to ``y`` or to an earlier one (moves clipped at a bound)."""
    kept = []
    for p in points:
        if not np.array_equal(p, y) and not any(np.array_equal(p, q) for q in kept):
            kept.append(p)
    return kept


def _paired_gain(values):
    """Each row after the first minus the first: mean over replications and its standard error."""
    diffs = values[1:] - values[0]
    return diffs.mean(1), diffs.std(1, ddof=1) / np.sqrt(diffs.shape[1])


def _poll_search(evaluate, y0, picked, project, *, budget, delta, min_delta, reps, seed, pairs,
                 confirm, confirm_reps, z):
    """The loop of :func:`pattern_search` in natural coordinates. ``evaluate(points, key, reps)``
    returns the per-replication objectives ``(len(points), reps)`` on one common key and the
    events it simulated; ``project`` maps a point to the nearest valid one."""
    key = jax.random.key(seed)
    y, events, history, calls = np.asarray(y0, np.float64).copy(), 0, [], 0
    while events < budget and delta >= min_delta:
        points = _distinct(y, _poll_points(y, picked, delta, pairs, project))
        if not points:  # every move leaves the valid set
            delta /= 2
            continue
        values, spent = evaluate([y, *points], jax.random.fold_in(key, calls), reps)
        calls += 1
        events += spent
        gain, se = _paired_gain(values)
        value = float(values[0].mean())
        if confirm:
            best = [int(i) for i in np.argsort(-gain)[:confirm] if gain[i] > 0]
            moved = False
            if best:
                candidates = [points[i] for i in best]
                values, spent = evaluate([y, *candidates], jax.random.fold_in(key, calls),
                                         confirm_reps)
                calls += 1
                events += spent
                gain, se = _paired_gain(values)
                b = int(np.argmax(gain))
                moved, new = bool(gain[b] > z * se[b]), candidates[b]
                value = float(values[1 + b if moved else 0].mean())
        else:
            b = int(np.argmax(gain))
            moved, new = bool(gain[b] > se[b]), points[b]
            if moved:
                value = float(values[1 + b].mean())
        if moved:
            y = new
        else:
            delta /= 2
        history.append({"value": value, "events": events, "step": delta})
    return y, events, history


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
