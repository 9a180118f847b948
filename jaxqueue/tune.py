"""Tuning the continuous parameters of a policy family (:mod:`jaxqueue.policies.tunable`).

:func:`tune` runs optax's Adam on a gradient estimator (:mod:`jaxqueue.estimators`: ``fd``,
``spsa``, ``score``, ``pathwise``) of a :class:`~jaxqueue.objective.Problem`'s objective, in
*natural coordinates*: each free coordinate divided by its natural step
(:func:`jaxqueue.objective.natural_steps`: about one to two jobs or GPUs), so that one unit of
the learning rate means the same move at n = 20 and at n = 500. Every few steps the current point
is evaluated on the exact simulator, always on the same key (common random numbers: the
replications of every evaluation share their ids, so two evaluations differ by what their
parameters change, not by their luck); the best evaluation wins. The starting point's
evaluation is kept apart (:attr:`TuneResult.initial`), so what the steps gained is visible next
to what the start gave.

For the ``gated`` family :func:`tune` can first take ``fluid_steps`` Adam steps on the
deterministic fluid surrogate (:mod:`jaxqueue.surrogate`, exact gradients by reverse mode, about
a second each); the point it reaches is evaluated on the exact simulator like any other, and the
stochastic stage continues from it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import stats, surrogate
from .estimators import ESTIMATORS, Estimate, estimate
from .objective import (
    Problem,
    evaluate,
    from_free,
    mask,
    measure,
    natural_steps,
    sli_penalty,
    steps_for,
    to_free,
)
from .policies import tunable

__all__ = ["ESTIMATORS", "RETURNS", "RULES", "Estimate", "Problem", "TuneResult", "evaluate",
           "from_free", "gated_step", "gradient", "mask", "measure", "natural_steps", "rprop_step",
           "sli_penalty", "steps_for", "to_free", "tune"]


def gradient(problem: Problem, estimator: str, free, key, *, only: Sequence[str] | None = None,
             **options) -> tuple[Any, dict]:
    """:func:`jaxqueue.estimators.estimate` in the structure of ``free``: the gradient of the
    mean objective per GPU with respect to the free coordinates, and ``{"value", "events",
    "se", "seconds"}`` (``se`` in the structure of ``free`` too)."""
    out = estimate(problem, estimator, free, key, only=only, **options)
    unravel = ravel_pytree(free)[1]
    return unravel(jnp.asarray(out.grad)), {
        "value": out.value, "events": out.events, "seconds": out.seconds,
        "se": unravel(jnp.asarray(out.se))}


# ---- natural coordinates -------------------------------------------------------------------------
class _Coordinates:
    """Free coordinates over natural steps, and back: ``y = free / h`` with ``h`` the natural
    steps at the starting point (fixed for the run)."""

    def __init__(self, problem: Problem, start, only):
        free = to_free(jax.tree.map(jnp.asarray, start))
        flat, self.unravel = ravel_pytree(free)
        self.h = jnp.asarray(ravel_pytree(natural_steps(problem, jax.tree.map(np.asarray, start))
                                          )[0], flat.dtype)
        self.on = ravel_pytree(mask(free, only))[0].astype(flat.dtype)
        self.y0 = flat / self.h

    def free(self, y):
        return self.unravel(y * self.h)

    def params(self, y):
        return jax.tree.map(np.asarray, from_free(self.free(y)))

    def project(self, y):
        """``y`` with its parameters projected onto their ranges; fixed coordinates reset."""
        flat = ravel_pytree(to_free(from_free(self.free(y))))[0] / self.h
        return jnp.where(self.on > 0, flat, self.y0)


# ---- the fluid first stage -----------------------------------------------------------------------
def _fluid_stage(problem: Problem, coords: _Coordinates, y, steps: int, learning_rate: float):
    """Adam (step size decaying to 0 on a cosine) on the fluid surrogate's objective from ``y``
    (natural coordinates); the surrogate is deterministic, so the best point seen is returned,
    with the surrogate's value at each step (the last entry: at the returned point)."""
    horizon = max(problem.horizon, 300.0)

    def objective(y):
        return surrogate.revenue(problem.model, from_free(coords.free(y)), n=problem.n,
                                 sli=problem.sli, pricing=problem.pricing, horizon=horizon,
                                 warmup=min(problem.warmup, horizon / 2))

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    @jax.jit
    def run(y):  # every step in one program: no op-by-op dispatch (or compiles) per step
        def step(carry, _):
            y, state = carry
            value, g = jax.value_and_grad(objective)(y)
            updates, state = opt.update(-g * coords.on, state, y)
            finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(g))
            return (coords.project(optax.apply_updates(y, updates)), state), (value, y, finite)

        (end, _), path = jax.lax.scan(step, (y, opt.init(y)), None, length=steps)
        return path, end, objective(end)

    (values, ys, finite), end, last = run(y)
    values, finite = np.asarray(values, np.float64), np.asarray(finite)
    if not finite.all():
        step = int(np.argmin(finite))
        raise FloatingPointError(
            f"the fluid surrogate's value or gradient is not finite at its step {step + 1} "
            f"(parameters {coords.params(ys[step])}): tune without the fluid stage "
            "(fluid_steps = 0)")
    k = int(np.argmax(values))  # the earliest of equal values
    values, best = values.tolist(), (float(values[k]), ys[k])
    if float(last) > best[0]:
        best = (float(last), end)
    values.append(best[0])
    return best[1], values


# ---- the optimizer loop --------------------------------------------------------------------------
@dataclasses.dataclass
class TuneResult:
    """The outcome of :func:`tune`.

    Attributes:
        family: the family tuned.
        initial: the starting parameters and their exact objective (the evaluation key), as
            ``{"step": 0, "params", "mean", "ci95"}``.
        best: the point returned and its exact objective on the evaluation key, with
            ``gain``: its paired difference to the start on that key, ``{"mean", "ci95"}``.
            With ``returned = "best"`` the best evaluation (the start's if no step beat it);
            with ``"average"`` the averaged iterate's, marked ``averaged: [first, last]``
            (the steps averaged).
        history: ``value`` (the estimator's objective at each step, from its own runs),
            ``events`` (events each step's estimate simulated), ``evaluations`` (each exact
            evaluation ``{"step", "mean", "ci95", "params"}``), ``skipped`` (steps whose
            estimate was not finite: no update was made), ``moves`` (per step, each free
            coordinate's move in natural steps, after projection onto the family's ranges),
            ``z`` (per step, each free coordinate's estimate over its standard error; infinite
            or NaN where the standard error is 0 or unknown), ``fluid`` (the surrogate's
            values, with ``fluid_steps``).
        events: events simulated by the estimator (without the evaluations).
        evaluation_events: events simulated by the evaluations.
        replications: replication-runs simulated by the estimator (per configuration).
        wall_seconds: wall time.
    """

    family: str
    initial: dict
    best: dict
    history: dict
    events: int
    replications: int
    wall_seconds: float
    evaluation_events: int = 0


def _summary(params, values) -> dict:
    mean, ci = stats.mean_ci(np.asarray(values))
    return {"params": {k: np.asarray(v).tolist() for k, v in
                       dataclasses.asdict(params).items()} if dataclasses.is_dataclass(params)
            else params, "mean": float(mean), "ci95": float(ci)}


#: How ``tune`` turns a gradient estimate into a step (see :func:`tune`).
RULES = ("adam", "gated", "rprop")
#: Which point ``tune`` returns (see :func:`tune`).
RETURNS = ("best", "average")


def gated_step(g, se, learning_rate: float, z: float = 2.0):
    """The ``gated`` rule's step in natural coordinates: each coordinate moves
    ``learning_rate * sign(g) * max(0, 1 - (z se / g)^2)``. A coordinate whose estimate is
    within ``z`` standard errors of 0 stays where it is; one far outside moves a full
    ``learning_rate``; where the standard error is unknown (not finite) it moves a full step.
    Unlike Adam, which divides each coordinate by its own running scale, an estimate made of
    noise does not move its coordinate a full step: the parameters do not random-walk when the
    replications per estimate are few."""
    g, se = jnp.asarray(g), jnp.asarray(se)
    ratio = jnp.where(jnp.isfinite(se) & (g != 0), z * se / jnp.where(g != 0, g, 1.0), 0.0)
    return learning_rate * jnp.sign(g) * jnp.maximum(0.0, 1.0 - ratio ** 2)


def rprop_step(g, se, size, last, *, z: float = 2.0, grow: float = 1.2, shrink: float = 0.5,
               smallest: float = 0.0625, largest: float = 8.0):
    """The ``rprop`` rule's step in natural coordinates (resilient propagation, iRprop-:
    Riedmiller & Braun, ICNN 1993; Igel & Huesken, 2000), on estimates: each coordinate moves by
    its own step size in its estimate's direction, and only if the estimate is more than ``z``
    standard errors from 0. The size grows by ``grow`` while the direction holds and shrinks by
    ``shrink`` when it turns, that step moving nothing; it stays within ``[smallest,
    largest]``. So a coordinate moves far where the objective keeps rising, and stops
    oscillating across a kink, such as a penalty's threshold, instead of swinging a full step
    each way.

    Returns ``(move, size, last)``: the move, and the sizes and directions for the next step
    (``last`` is 0 where the coordinate did not move)."""
    g, se, size, last = (jnp.asarray(v) for v in (g, se, size, last))
    sure = jnp.where(jnp.isfinite(se), jnp.abs(g) > z * se, g != 0)
    direction = jnp.where(sure, jnp.sign(g), 0.0)
    agree = direction * last
    size = jnp.where(agree > 0, jnp.minimum(size * grow, largest),
                     jnp.where(agree < 0, jnp.maximum(size * shrink, smallest), size))
    direction = jnp.where(agree < 0, 0.0, direction)
    return direction * size, size, direction


def tune(problem: Problem, *, steps: int = 30, estimator: str = "spsa",
         learning_rate: float = 0.3, step_scale: float = 1.0, eval_every: int = 5,
         eval_reps: int | None = None, seed: int = 0, only: Sequence[str] | None = None,
         initial: Any = None, fluid_steps: int = 0, options: dict | None = None,
         progress: Callable[[int, dict], None] | None = None, rule: str = "adam",
         confirm: int = 0, returned: str = "best") -> TuneResult:
    """Adam (or the ``gated`` rule) on ``estimator``'s gradient from ``initial`` (default: the
    family's LP point, the paper's policy); returns the best exact evaluation (all on one key,
    ``eval_reps`` replications, so the choice among them is paired), or with ``returned =
    "average"`` the mean of the last half's iterates.

    Args:
        problem: what to tune.
        steps: optimizer steps.
        estimator: one of :data:`ESTIMATORS`.
        learning_rate: the step size in natural steps (0.3: about half a job or GPU).
        step_scale: ``fd``/``spsa`` perturbations, in natural steps.
        eval_every: evaluate the current point every this many steps (and at the last).
        eval_reps: replications of each evaluation (default ``problem.reps``).
        seed: the run's key.
        only: the parameters tuned (default all; the others stay at their starting values).
        initial: the starting parameters.
        fluid_steps: (``gated`` only) first take that many steps on the fluid surrogate; its
            end point is evaluated as step 0 (``history["fluid"]`` holds the surrogate's
            values).
        options: further keyword arguments of :func:`jaxqueue.estimators.estimate` (e.g.
            ``discount`` for ``score``, ``directions`` for ``spsa``).
        progress: called after every step with ``(step, {"value", "best"})``.
        rule: ``"adam"`` (Adam on the estimate in natural coordinates), ``"gated"`` (each
            coordinate steps ``learning_rate`` in the estimate's direction, shrunk to nothing
            as the estimate falls within two of its standard errors of 0: :func:`gated_step`)
            or ``"rprop"`` (each coordinate's own step, from ``learning_rate``, grown while its
            significant direction holds and halved when it turns: :func:`rprop_step`).
        confirm: 0 (default: return the best evaluation), or k >= 1: a best point other than
            the start is evaluated again beside the start on a fresh key with k times
            ``eval_reps`` replications, and returned only if it beats the start there by more
            than 2 paired standard errors; else the start is returned. The choice among a few
            noisy evaluations on one key favours whichever was luckiest: on a plateau that can
            be a point worse than the start. ``history["confirmation"]`` records the check and
            the point checked.
        returned: ``"best"`` (default: the best of the exact evaluations, the start's
            included) or ``"average"``: the mean of the iterates of the last half of the steps
            (steps ``steps // 2 + 1`` to ``steps``, in natural coordinates; Polyak & Juditsky,
            SIAM J. Control Optim. 1992), evaluated on the evaluation key and returned whatever
            that evaluation says. No choice is made among noisy evaluations, so none favours a
            lucky one; the periodic evaluations are still made and recorded. Not with
            ``confirm``. For rules whose steps stop on noise (``rprop``, ``gated``): Adam moves
            every coordinate about a full step each step, so on SPSA estimates the average
            lands far from the start (measured on ``dolly-tpot-100``: losses of 2 to 16 in
            eight seeds of ten, where the score tuner with the rprop rule gained as much as with
            ``"best"``; docs/gradients.md).
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps = {steps!r} is invalid: must be an integer >= 1")
    if isinstance(fluid_steps, bool) or int(fluid_steps) != fluid_steps or fluid_steps < 0:
        raise ValueError(f"fluid_steps = {fluid_steps!r} is invalid: must be an integer >= 0")
    if fluid_steps and problem.family != "gated":
        raise ValueError(f"fluid_steps needs the gated family (the surrogate models it), not "
                         f"{problem.family!r}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate = {learning_rate!r} is invalid: must be finite and > 0")
    if rule not in RULES:
        raise ValueError(f"rule = {rule!r} is invalid: must be one of {RULES}")
    if isinstance(confirm, bool) or int(confirm) != confirm or confirm < 0:
        raise ValueError(f"confirm = {confirm!r} is invalid: must be an integer >= 0")
    if returned not in RETURNS:
        raise ValueError(f"returned = {returned!r} is invalid: must be one of {RETURNS}")
    if returned == "average" and confirm:
        raise ValueError("returned = 'average' returns the averaged point without a choice: "
                         "give confirm = 0 with it")
    start = time.perf_counter()
    eval_reps = eval_reps or problem.reps
    key = jax.random.key(seed)
    p0 = problem.initial() if initial is None else initial
    tunable.check_params(problem.family, p0, problem.model)
    coords = _Coordinates(problem, p0, only)
    y = coords.y0
    opt = optax.adam(learning_rate)
    state = opt.init(y)
    sizes, last = jnp.full_like(y, learning_rate), jnp.zeros_like(y)  # the rprop rule's state
    history = {"value": [], "events": [], "evaluations": [], "skipped": [], "moves": [],
               "z": []}
    events = replications = 0
    options = dict(options or {})

    eval_key = jax.random.fold_in(key, 1_000_000)  # one key for every evaluation (CRN)
    spent = {"events": 0, "start": None, "capacity": None}

    def assess(step, params):
        d = evaluate(problem, params, eval_key, eval_reps, detail=True)
        spent["events"] += d["events"]
        spent["capacity"] = d["capacity"]
        values = np.asarray(d["objective"])
        if spent["start"] is None:
            spent["start"] = values
        mean, ci = stats.mean_ci(values - spent["start"])
        out = {"step": step, **_summary(params, values),
               "gain": {"mean": float(mean), "ci95": float(ci)}}
        history["evaluations"].append(out)
        return out

    initial_eval = assess(0, jax.tree.map(np.asarray, p0))
    best_point = p0
    if spent["capacity"] is not None and spent["capacity"] != problem.capacity:
        # The start's evaluation grew the rings: every later run starts at that size instead
        # of overflowing and rerunning (the results are those of large enough rings either way).
        problem = dataclasses.replace(problem, capacity=spent["capacity"])
    best = initial_eval
    if fluid_steps:
        y, history["fluid"] = _fluid_stage(problem, coords, y, int(fluid_steps),
                                           learning_rate)
        staged = assess(0, coords.params(y))
        staged["stage"] = "fluid"
        if staged["mean"] > best["mean"]:
            best, best_point = staged, coords.params(y)
    free_at = np.flatnonzero(np.asarray(coords.on))  # the coordinates the history records
    averaged, total = steps // 2 + 1, jnp.zeros_like(y)  # returned = "average": its steps, sum
    for step in range(1, steps + 1):
        free = coords.free(y)
        g, info = gradient(problem, estimator, free, jax.random.fold_in(key, step), only=only,
                           **({"step_scale": step_scale} if estimator in ("fd", "spsa") else {}),
                           **options)
        events += info["events"]
        replications += problem.reps
        history["value"].append(info["value"])
        history["events"].append(info["events"])
        g_y = ravel_pytree(g)[0] * coords.h  # d objective / d natural coordinate
        se_y = ravel_pytree(info["se"])[0] * coords.h
        with np.errstate(divide="ignore", invalid="ignore"):
            history["z"].append([float(v) for v in (np.asarray(g_y) / np.asarray(se_y))[free_at]])
        before = y
        if bool(jnp.all(jnp.isfinite(g_y))):
            if rule == "gated":
                y = coords.project(y + gated_step(g_y, se_y, learning_rate) * coords.on)
            elif rule == "rprop":
                move, sizes, last = rprop_step(g_y, se_y, sizes, last)
                y = coords.project(y + move * coords.on)
            else:
                updates, state = opt.update(-g_y * coords.on, state, y)
                y = coords.project(optax.apply_updates(y, updates))
        else:  # a relaxed path can blow up: no step on a broken estimate
            history["skipped"].append(step)
        history["moves"].append([float(v) for v in np.asarray(y - before)[free_at]])
        if step >= averaged:
            total = total + y
        if step % eval_every == 0 or step == steps:
            now = assess(step, coords.params(y))
            if now["mean"] > best["mean"]:
                best, best_point = now, coords.params(y)
        if progress:
            progress(step, {"value": info["value"], "best": best["mean"]})
    if returned == "average":
        mean_y = coords.project(total / (steps - averaged + 1))
        best = assess(steps, coords.params(mean_y))
        best["averaged"] = [averaged, steps]
    if confirm and best is not initial_eval:
        check_key, check_reps = jax.random.fold_in(key, 2_000_000), int(confirm) * eval_reps
        runs = [evaluate(problem, point, check_key, check_reps, detail=True)
                for point in (p0, best_point)]
        spent["events"] += sum(r["events"] for r in runs)
        diff = np.asarray(runs[1]["objective"]) - np.asarray(runs[0]["objective"])
        gain, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))
        kept = gain > 2.0 * se
        history["confirmation"] = {"step": best["step"], "gain": gain, "se": se,
                                   "reps": check_reps, "kept": bool(kept),
                                   "params": best["params"]}
        if not kept:
            best = initial_eval
    return TuneResult(family=problem.family, initial=initial_eval, best=best, history=history,
                      events=events, replications=replications,
                      wall_seconds=time.perf_counter() - start,
                      evaluation_events=spent["events"])
