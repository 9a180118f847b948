"""What a tuner optimises: a policy family on a scenario, its objective, and its coordinates.

A :class:`Problem` names a family of :mod:`jaxqueue.policies.tunable`, the scenario, n and how
the objective is measured: the long-run revenue per GPU per second of the exact system, minus
optional SLI penalties ``weight_k * max(0, indicator_k - eta_k)`` (each indicator measured per
replication as :mod:`jaxqueue.stats` reports it). With a ``gate_temperature`` the family is
*smoothed* (every decision randomised: :func:`jaxqueue.policies.tunable.build_family`), so its
expected objective is differentiable in every parameter.

Coordinates. Estimators and optimizers work on *free coordinates*: log targets, the other
parameters as they are (:func:`to_free`, :func:`from_free`, which projects onto the allowed
ranges). Each free coordinate has a *natural step* (:func:`natural_steps`), the size of change
that moves about one to two jobs or GPUs, so that finite differences and optimizer steps mean the
same thing at n = 20 and at n = 500:

- a log target: ``1.5 / (n target)``, so ``n target`` (planned prefills of the class) moves by
  1.5 jobs (at most 0.5, a factor 1.65, for a class with less than three planned prefills);
- the mixed share, the slack, the caps and the coupled families' cap: ``1.5 / n`` (1.5 GPUs or
  jobs);
- the gate offset: 0.25 (in jobs added to a class's occupancy);
- a router split: 0.05 (in probability).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import fluid, stats
from .driver import simulate
from .model import Model
from .policies import tunable

__all__ = ["ROUNDED", "Problem", "difference_steps", "evaluate", "from_free", "mask",
           "measure", "natural_steps", "sli_penalty", "steps_for", "to_free"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """What to tune: a family on a scenario, and how its objective is measured.

    Attributes:
        family: a family of :data:`jaxqueue.policies.tunable.FAMILIES`.
        model: the scenario.
        n: number of GPUs.
        plan: the fluid plan the family starts from (bundled LP).
        pricing: ``"bundled"`` or ``"separate"``.
        horizon, warmup: simulated seconds of each evaluation and its discarded start.
        reps: replications per evaluation (per side of a difference).
        gate_temperature: None (the family's deterministic gate), or the temperature of the
            smoothed family (``gated``, ``sli-gated``): the gate draws classes with
            probabilities ``softmax(-xi / temperature)`` and thresholds are dithered.
        sli: SLI targets whose excesses are subtracted from revenue, each times its weight
            (:class:`jaxqueue.fluid.SLI`; its ``penalty`` flag only shapes the plan).
        capacity: slots of the FCFS rings, or None to size them for n. A run whose ring
            overflows is rerun with larger ones on the same key either way; :func:`tune`
            keeps the size its first evaluation needed, so that its steps do not rerun.
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
    capacity: int | None = None

    def system(self, params=None, decide=None):
        return tunable.build_family(self.family, self.model, self.n, plan=self.plan,
                                    params=params, decide=decide, capacity=self.capacity,
                                    gate_temperature=self.gate_temperature)[0]

    def initial(self):
        return tunable.initial_params(self.family, self.model, self.n, self.plan)


# ---- the unconstrained parametrisation ----------------------------------------------------------
_RANGES = {"offset": (0.0, None), "share": (0.0, 1.0), "slack": (0.0, None), "caps": (0.0, None),
           "cap": (0.0, 1.0), "split": (0.0, 1.0)}


def to_free(params):
    """Free coordinates: log targets, the rest as they are."""
    return dataclasses.replace(params, targets=jnp.log(jnp.asarray(params.targets)))


def from_free(free):
    """Parameters from free coordinates, projected onto their ranges (see ``tunable``)."""
    p = dataclasses.replace(free, targets=jnp.exp(free.targets))
    for name, (low, high) in _RANGES.items():
        if hasattr(p, name):
            p = dataclasses.replace(p, **{name: jnp.clip(getattr(p, name), low, high)})
    return p


def natural_steps(problem: Problem, params):
    """The natural step of every free coordinate at ``params`` (see the module docstring), in
    the structure of :func:`to_free`'s output (NumPy float64)."""
    n = problem.n
    steps = {}
    for f in dataclasses.fields(params):
        value = np.asarray(getattr(params, f.name), np.float64)
        if f.name == "targets":
            steps[f.name] = np.minimum(1.5 / (n * np.maximum(value, 1e-12)), 0.5)
        elif f.name == "offset":
            steps[f.name] = np.full(value.shape, 0.25)
        elif f.name == "split":
            steps[f.name] = np.full(value.shape, 0.05)
        else:  # share, slack, caps, cap: per GPU
            steps[f.name] = np.full(value.shape, 1.5 / n)
    return dataclasses.replace(params, **steps)


#: Parameters a replication rounds once (to mixed GPUs or jobs).
ROUNDED = ("share", "slack", "caps", "cap")


#: With ``gate=True``, the largest change of a class's gate logit ``-xi_i / T`` that one
#: difference step of its target or of the offset makes (:func:`difference_steps`).
GATE_LOGIT_STEP = 0.5


def difference_steps(problem: Problem, params, *, gate: bool = False):
    """The steps of central differences: the natural steps, except half a GPU or job (``0.5 /
    n``) for the parameters a replication rounds (:data:`ROUNDED`). Rounded with the triangular
    dither the expected objective is quadratic in ``n * share`` between half-integers, and with
    plain randomised rounding linear between integers, so a half step is exact at the
    paper's integer points, where a larger one averages the slope over kinks (measured on
    ``paper-qwen8b`` at n = 20: 516 per unit share with 1.5 GPUs against 351 with 0.75).

    With ``gate`` (a smoothed gate only: ``problem.gate_temperature``), the steps of the gate
    targets and of the offset are also capped so that one step moves a class's gate logit by at
    most :data:`GATE_LOGIT_STEP` at the planned occupancy: the gate key ``xi_i = (X_i + offset)
    / t_i - n`` moves by ``(X_i + offset)`` per unit of ``log t_i`` and by ``1 / t_i`` per unit
    of offset, against the temperature ``T``. A class whose plan holds two jobs at n = 100 has a
    natural step of 0.5 in log target, which moves its key by about 110 against T = 20: the
    expected objective bends well within that step.

    Raises:
        ValueError: ``gate`` without a gate temperature.
    """
    steps = natural_steps(problem, params)
    steps = dataclasses.replace(steps, **{
        f.name: np.full(np.shape(getattr(steps, f.name)), 0.5 / problem.n)
        for f in dataclasses.fields(steps) if f.name in ROUNDED})
    if not gate:
        return steps
    if problem.gate_temperature is None:
        raise ValueError("gate = True is invalid without a gate temperature: the steps follow "
                         "the smoothed gate's logits (give the problem a gate_temperature)")
    names = {f.name for f in dataclasses.fields(params)}
    if "targets" not in names:
        return steps
    t = np.asarray(params.targets, np.float64)
    # a class the plan does not serve keeps the paper's key whatever its target (tunable.FLOOR)
    served = np.asarray(problem.plan.x) > 0
    offset = float(np.asarray(params.offset)) if "offset" in names else 0.0
    scale = GATE_LOGIT_STEP * float(problem.gate_temperature)
    cap = np.where(served, scale * t / np.maximum(problem.n * t + offset, 1e-12), np.inf)
    out = {"targets": np.minimum(steps.targets, cap)}
    if "offset" in names and np.any(served):
        out["offset"] = np.minimum(steps.offset, scale * np.min(t[served]))
    return dataclasses.replace(steps, **out)


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


# ---- the objective ------------------------------------------------------------------------------
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
             detail: bool = False, smoothed: bool = True):
    """The objective (revenue per GPU per second minus SLI penalties) of each replication on the
    exact simulator; with ``detail``, :func:`measure`'s dict and ``"events"`` (events simulated,
    warm-up included). ``smoothed = False`` evaluates the
    deterministic policy at ``params`` (no gate temperature) even for a smoothed problem."""
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    if not smoothed:
        problem = dataclasses.replace(problem, gate_temperature=None)
    system = problem.system(params)
    run = simulate(key, system, reps=reps or problem.reps, horizon=problem.horizon,
                   warmup=problem.warmup)
    out = measure(run, problem.model, problem.n, problem.pricing, problem.sli)
    return ({**out, "events": int(run.events), "capacity": run.buffer_capacity} if detail
            else out["objective"])


def steps_for(problem: Problem, horizon: float | None = None) -> int:
    """Events to cover the horizon (default ``problem.horizon``) from an empty system: rates
    at a full system, with 20% to spare."""
    m = problem.model
    per_second = problem.n * float(np.sum(m.lambda_)) * 3.0  # arrivals, prefills, decodes
    return int(1.2 * per_second * (problem.horizon if horizon is None else horizon)) + 64
