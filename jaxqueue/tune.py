"""Tuning the continuous parameters of a policy family (:mod:`jaxqueue.policies.tunable`).

The objective is the long-run revenue per GPU per second of the exact system, minus optional
SLI penalties (``Problem.sli``): ``weight_k * max(0, indicator_k - eta_k)`` for each SLI with a
target, the indicators measured on each replication as :mod:`jaxqueue.stats` reports them
(prefill and decode fairness spreads of the time-average occupancies; the paper's TPOT at the
simulated prefill occupancy). Four gradient estimators of it, each with common random numbers
(both sides of a difference see the same key):

- ``pathwise``: the derivative of a relaxed sample path (:class:`jaxqueue.relax.Relaxed`,
  straight-through), by forward-mode differentiation (one ``jvp`` per parameter, constant
  memory); biased, low variance; pooled families only;
- ``score``: the score-function (likelihood-ratio) estimator ``mean((R - b) d log p)`` of a
  randomised policy, with a leave-one-out baseline ``b``; unbiased, variance growing with the
  horizon; needs randomised decisions (``gated`` with a gate temperature, or ``sli-gated``,
  whose router draws the side);
- ``fd``: central finite differences on the exact simulator, one pair of runs per parameter;
- ``spsa``: simultaneous perturbation: one pair of runs along a random +-1 direction for all
  parameters at once.

:func:`tune` runs optax's Adam on the chosen estimator in an unconstrained parametrisation
(log targets; other parameters projected onto their ranges), evaluates the current point on
the exact simulator with fresh keys every few steps, and returns the best evaluation. For the
``gated`` family it can first take ``fluid_steps`` Adam steps on the deterministic fluid
surrogate (:mod:`jaxqueue.surrogate`, exact gradients by reverse mode, about a second
each); the point it reaches is evaluated on the exact simulator like any other, and the
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

from . import fluid, kernel, stats, surrogate
from .decisions import ScoreFunction
from .driver import simulate
from .model import Model
from .policies import tunable
from .relax import Relaxed

__all__ = ["ESTIMATORS", "Problem", "TuneResult", "evaluate", "gradient", "mask", "measure",
           "sli_penalty", "tune"]

ESTIMATORS = ("pathwise", "score", "fd", "spsa")


@dataclasses.dataclass(frozen=True)
class Problem:
    """What to tune: a family on a scenario, and how its revenue is measured.

    Attributes:
        family: a family of :data:`jaxqueue.policies.tunable.FAMILIES`.
        model: the scenario.
        n: number of GPUs.
        plan: the fluid plan the family starts from (bundled LP).
        pricing: ``"bundled"`` or ``"separate"``.
        horizon, warmup: simulated seconds of each evaluation and its discarded start.
        reps: replications per evaluation (per side of a difference).
        gate_temperature: for the ``score`` estimator: the gate draws classes with probabilities
            ``softmax(-xi / temperature)`` (a randomised policy); None: the exact argmin.
        sli: SLI targets whose excesses are subtracted from revenue, each times its weight
            (:class:`jaxqueue.fluid.SLI`; its ``penalty`` flag only shapes the plan).
    """

    family: str
    model: Model
    n: int
    plan: fluid.Plan
    pricing: str = "bundled"
    horizon: float = 800.0
    warmup: float = 200.0
    reps: int = 16
    gate_temperature: float | None = None
    sli: fluid.SLI | None = None

    def system(self, params=None, decide=None):
        return tunable.build_family(self.family, self.model, self.n, plan=self.plan,
                                    params=params, decide=decide,
                                    gate_temperature=self.gate_temperature)[0]

    def initial(self):
        return tunable.initial_params(self.family, self.model, self.n, self.plan)


# ---- the unconstrained parametrisation -----------------------------------------------------------
def to_free(params):
    """Free coordinates: log targets, the rest as they are."""
    return dataclasses.replace(params, targets=jnp.log(jnp.asarray(params.targets)))


def from_free(free):
    """Parameters from free coordinates, projected onto their ranges (see ``tunable``)."""
    p = dataclasses.replace(free, targets=jnp.exp(free.targets))
    clip = {"offset": (0.0, None), "share": (0.0, 1.0), "slack": (0.0, None),
            "caps": (0.0, None), "cap": (0.0, 1.0), "split": (0.0, 1.0)}
    for name, (low, high) in clip.items():
        if hasattr(p, name):
            p = dataclasses.replace(p, **{name: jnp.clip(getattr(p, name), low, high)})
    return p


# ---- the objective -------------------------------------------------------------------------------
def sli_penalty(model: Model, sli: fluid.SLI | None, x, y_s):
    """Per replication, ``sum_k weight_k max(0, indicator_k - eta_k)`` over the SLIs of ``sli``
    with a target, from per-GPU time-average occupancies ``x`` and ``y_s`` of shape ``(R, I)``
    (numpy or traced arrays); zeros without targets."""
    x, y_s = jnp.asarray(x), jnp.asarray(y_s)
    total = jnp.zeros(x.shape[:-1], x.dtype)
    if sli is None:
        return total
    indicators = {"prefill_fairness": lambda: jnp.ptp(x, axis=-1),
                  "decode_fairness": lambda: jnp.ptp(y_s, axis=-1),
                  "tpot": lambda: model.tpot(jnp.sum(x, axis=-1))}
    for name, eta in sli.targets.items():
        total = total + sli.weight(name) * jnp.maximum(indicators[name]() - eta, 0.0)
    return total


# ---- evaluation --------------------------------------------------------------------------------
def measure(run, model: Model, n: int, pricing: str = "bundled",
            sli: fluid.SLI | None = None) -> dict[str, np.ndarray]:
    """Per-replication ``objective`` (revenue minus SLI penalties), ``revenue`` (per GPU per
    second under ``pricing``) and the indicators of :data:`jaxqueue.stats.SLI_KEYS` of a run of
    a pooled-type system (any policy, not only a family)."""
    q = stats.per_gpu(run, model, n)
    revenue = q[f"revenue_{pricing}"]
    penalty = np.asarray(sli_penalty(model, sli, q["x"], q["y_solo"]), np.float64)
    return {"objective": revenue - penalty, "revenue": revenue, **stats.achieved_sli(q, model)}


def evaluate(problem: Problem, params, key, reps: int | None = None, *,
             detail: bool = False):
    """The objective (revenue per GPU per second minus SLI penalties) of each replication on the
    exact simulator; with ``detail``, :func:`measure`'s dict."""
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    system = problem.system(params)
    run = simulate(key, system, reps=reps or problem.reps, horizon=problem.horizon,
                   warmup=problem.warmup)
    out = measure(run, problem.model, problem.n, problem.pricing, problem.sli)
    return out if detail else out["objective"]


def _relaxed_objective(problem: Problem, decide, key, steps: int):
    """A traceable function of free coordinates: the mean objective per GPU of ``problem.reps``
    replications of ``steps`` events after ``problem.warmup`` seconds (ratios of integrals to
    the time covered), and the rollout with the per-replication objective."""
    template = problem.system(decide=decide)

    def f(free):
        system = tunable.with_params(template, from_free(free))
        out = kernel.rollout(key, system, steps=steps, reps=problem.reps,
                             window=(problem.warmup, jnp.inf))
        scale = 1.0 / (jnp.maximum(out.time - problem.warmup, 1e-9) * problem.n)
        objective = getattr(out.summary.revenue, f"{problem.pricing}_integral") * scale
        if problem.sli is not None:
            per_gpu = out.summary.integrals.reshape(problem.reps, len(system.level_names),
                                                    -1) * scale[:, None, None]
            names = list(system.level_names)
            objective = objective - sli_penalty(problem.model, problem.sli,
                                                per_gpu[:, names.index("x")],
                                                per_gpu[:, names.index("y_s")])
        return jnp.mean(objective), (out, objective)

    return f


def steps_for(problem: Problem) -> int:
    """Events to cover the warm-up and horizon: rates at a full system, with 20% to spare."""
    m = problem.model
    per_second = problem.n * float(np.sum(m.lambda_)) * 3.0  # arrivals, prefills, decodes
    return int(1.2 * per_second * problem.horizon) + 64


def mask(free, only: Sequence[str] | None):
    """Ones on the coordinates of the fields named in ``only`` (all fields if None), zeros
    elsewhere, in the structure of ``free``.

    Raises:
        ValueError: a name in ``only`` is not a parameter of the family.
    """
    names = [f.name for f in dataclasses.fields(free)]
    if only is not None:
        unknown = [k for k in only if k not in names]
        if unknown or not only:
            raise ValueError(f"only = {list(only)!r} is invalid: must name one or more of "
                             f"{names}")
    return dataclasses.replace(free, **{k: jnp.full(jnp.shape(getattr(free, k)),
                                                    float(only is None or k in only))
                                        for k in names})


def gradient(problem: Problem, estimator: str, free, key, *, temperature: float = 0.2,
             perturbation: float = 0.1, only: Sequence[str] | None = None) -> tuple[Any, dict]:
    """An estimate of d(mean revenue per GPU)/d(free coordinates), and what it cost.

    ``only`` names the parameters tuned (default all): the others get a zero gradient, and
    finite differences and SPSA perturb only the named ones.

    Returns the gradient (same structure as ``free``) and ``{"replications": ..., "value": ...}``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator = {estimator!r} is unknown: must be one of {ESTIMATORS}")
    flat, unravel = ravel_pytree(free)
    on = ravel_pytree(mask(free, only))[0].astype(flat.dtype)
    if estimator in ("fd", "spsa"):
        crn, direction = jax.random.split(key)
        if estimator == "spsa":
            delta = jax.random.rademacher(direction, flat.shape, dtype=flat.dtype) * on
            dirs = [delta]
        else:
            dirs = [e for e, m in zip(jnp.eye(flat.shape[0], dtype=flat.dtype), np.asarray(on),
                                      strict=True) if m]
        grads, events, values = [], 0, []
        for d in dirs:
            up = evaluate(problem, from_free(unravel(flat + perturbation * d)), crn)
            down = evaluate(problem, from_free(unravel(flat - perturbation * d)), crn)
            values += [up.mean(), down.mean()]
            grads.append((up.mean() - down.mean()) / (2 * perturbation))
            events += 2 * problem.reps
        g = (grads[0] * dirs[0] if estimator == "spsa"
             else jnp.zeros_like(flat).at[np.flatnonzero(np.asarray(on))].set(
                 jnp.asarray(grads, flat.dtype)))
        return unravel(g), {"replications": events, "value": float(np.mean(values))}
    if tunable.engine(problem.family) != "pooled":
        raise ValueError(f"estimator {estimator!r} needs a pooled family; {problem.family!r} "
                         "runs on the per-GPU engine (exact decisions only): use fd or spsa")
    steps = steps_for(problem)
    if estimator == "pathwise":
        f = _relaxed_objective(problem, Relaxed(temperature=temperature,
                                              decision_temperature=max(temperature, 0.05)),
                             key, steps)
        value, jac = jax.jit(lambda x: _jacfwd(lambda y: f(unravel(y))[0], x, on))(flat)
        return unravel(jac), {"replications": problem.reps, "value": float(value)}
    # score: grad of mean((R - b) log p) with R fixed and b the leave-one-out mean.
    f = _relaxed_objective(problem, ScoreFunction(), key, steps)

    def surrogate(y):
        _, (out, objective) = f(unravel(y))
        r = jax.lax.stop_gradient(objective)
        baseline = (jnp.sum(r) - r) / jnp.maximum(r.shape[0] - 1, 1)
        return jnp.mean((r - baseline) * out.summary.logp), jnp.mean(r)

    (_, value), g = jax.jit(jax.value_and_grad(surrogate, has_aux=True))(flat)
    return unravel(g * on), {"replications": problem.reps, "value": float(value)}


def _jacfwd(f: Callable, x, on):
    """(f(x), df/dx) by forward mode, one jvp per coordinate where ``on`` is one (constant
    memory); zeros elsewhere."""
    picked = np.flatnonzero(np.asarray(on))
    basis = jnp.eye(x.shape[0], dtype=x.dtype)[picked]
    value = f(x)
    partial = jax.lax.map(lambda v: jax.jvp(f, (x,), (v,))[1], basis)
    return value, jnp.zeros_like(x).at[picked].set(partial)


# ---- the fluid first stage -----------------------------------------------------------------------
def _fluid_stage(problem: Problem, free, steps: int, learning_rate: float, only):
    """Adam (step size decaying to 0 on a cosine) on the fluid surrogate's objective from
    ``free``; the surrogate is deterministic, so the best point seen is returned, with the
    surrogate's value at each step (the last entry: at the returned point)."""
    flat, unravel = ravel_pytree(free)
    on = ravel_pytree(mask(free, only))[0].astype(flat.dtype)
    horizon = max(problem.horizon, 300.0)

    def objective(y):
        return surrogate.revenue(problem.model, from_free(unravel(y)), n=problem.n,
                                 sli=problem.sli, pricing=problem.pricing, horizon=horizon,
                                 warmup=min(problem.warmup, horizon / 2))

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    state = opt.init(flat)
    values, best = [], (-np.inf, flat)
    for step in range(steps):
        value, g = value_and_grad(flat)
        if not (np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(g)))):
            raise FloatingPointError(
                f"the fluid surrogate's value or gradient is not finite at its step {step + 1} "
                f"(parameters {jax.tree.map(np.asarray, from_free(unravel(flat)))}): tune "
                "without the fluid stage (fluid_steps = 0)")
        values.append(float(value))
        if values[-1] > best[0]:
            best = (values[-1], flat)
        updates, state = opt.update(-g * on, state, flat)
        flat = ravel_pytree(to_free(from_free(unravel(optax.apply_updates(flat, updates)))))[0]
    value = float(value_and_grad(flat)[0])
    if value > best[0]:
        best = (value, flat)
    values.append(best[0])
    return unravel(best[1]), values


# ---- the optimizer loop ------------------------------------------------------------------------
@dataclasses.dataclass
class TuneResult:
    """The outcome of :func:`tune`.

    Attributes:
        family: the family tuned.
        initial: the starting parameters (the paper's policy) and their exact revenue.
        best: the best parameters found and their exact revenue (fresh keys).
        history: per optimizer step: the estimator's value, and per evaluation the exact
            revenue ``{"step", "mean", "ci95", "params"}``; ``skipped``: the steps whose
            gradient estimate was not finite (no update was made).
        replications: replications simulated by the estimator (without the evaluations).
        wall_seconds: wall time.
    """

    family: str
    initial: dict
    best: dict
    history: dict
    replications: int
    wall_seconds: float


def _summary(params, revenues) -> dict:
    mean, ci = stats.mean_ci(np.asarray(revenues))
    return {"params": {k: np.asarray(v).tolist() for k, v in
                       dataclasses.asdict(params).items()} if dataclasses.is_dataclass(params)
            else params, "mean": float(mean), "ci95": float(ci)}


def tune(problem: Problem, *, steps: int = 30, estimator: str = "spsa", learning_rate: float = 0.05,
         perturbation: float = 0.15, temperature: float = 0.3, eval_every: int = 5,
         eval_reps: int | None = None, seed: int = 0, only: Sequence[str] | None = None,
         initial: Any = None, fluid_steps: int = 0,
         progress: Callable[[int, dict], None] | None = None) -> TuneResult:
    """Adam on ``estimator``'s gradient from ``initial`` (default: the paper's policy, the
    family's LP point); returns the best exact evaluation (each on fresh keys, ``eval_reps``
    replications). ``only`` names the parameters tuned (default all; the others stay at their
    starting values). ``fluid_steps`` (``gated`` only) first takes that many steps on the fluid
    surrogate; its end point is evaluated as step 0 (``history["fluid"]`` holds the
    surrogate's values)."""
    if isinstance(steps, bool) or int(steps) < 1:
        raise ValueError(f"steps = {steps!r} is invalid: must be an integer >= 1")
    if isinstance(fluid_steps, bool) or int(fluid_steps) != fluid_steps or fluid_steps < 0:
        raise ValueError(f"fluid_steps = {fluid_steps!r} is invalid: must be an integer >= 0")
    if fluid_steps and problem.family != "gated":
        raise ValueError(f"fluid_steps needs the gated family (the surrogate models it), not "
                         f"{problem.family!r}")
    start = time.perf_counter()
    eval_reps = eval_reps or problem.reps
    key = jax.random.key(seed)
    p0 = problem.initial() if initial is None else initial
    tunable.check_params(problem.family, p0, problem.model)
    free = to_free(jax.tree.map(jnp.asarray, p0))
    mask(free, only)  # names checked before any simulation
    opt = optax.adam(learning_rate)
    state = opt.init(free)
    history = {"value": [], "evaluations": [], "skipped": []}
    used = 0

    def assess(step, params):
        k = jax.random.fold_in(key, 1_000_000 + step)
        out = {"step": step, **_summary(params, evaluate(problem, params, k, eval_reps))}
        history["evaluations"].append(out)
        return out

    initial = assess(0, p0)
    best = initial
    if fluid_steps:
        free, history["fluid"] = _fluid_stage(problem, free, int(fluid_steps), learning_rate,
                                              only)
        staged = assess(0, jax.tree.map(np.asarray, from_free(free)))
        staged["stage"] = "fluid"
        if staged["mean"] > best["mean"]:
            best = staged
    for step in range(1, steps + 1):
        decay = 1.0 / (1.0 + 0.5 * step / steps)  # temperature and perturbation shrink slowly
        g, info = gradient(problem, estimator, free, jax.random.fold_in(key, step),
                           temperature=temperature * decay, perturbation=perturbation * decay,
                           only=only)
        used += info["replications"]
        history["value"].append(info["value"])
        if all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g)):
            updates, state = opt.update(jax.tree.map(lambda a: -a, g), state, free)
            free = optax.apply_updates(free, updates)
            free = to_free(from_free(free))  # keep the projection in the free coordinates
        else:  # a relaxed path can blow up (see the diagnostics): no step on a broken estimate
            history["skipped"].append(step)
        if step % eval_every == 0 or step == steps:
            now = assess(step, jax.tree.map(np.asarray, from_free(free)))
            if now["mean"] > best["mean"]:
                best = now
        if progress:
            progress(step, {"value": info["value"], "best": best["mean"]})
    return TuneResult(family=problem.family, initial=initial, best=best, history=history,
                      replications=used, wall_seconds=time.perf_counter() - start)

