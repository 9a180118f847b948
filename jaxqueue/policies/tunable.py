"""Tunable policy families: the paper's policies as points of continuous parameter spaces.

A family is a system whose continuous parameters are one PyTree leaf group (``params``), so a
tuner can differentiate, perturb or vmap over them; :func:`initial_params` sets them from the
LP plan, where the family reproduces the paper's policy.

``gated`` (pooled engine): Gate-and-Route with four kinds of knobs.

- ``targets`` (per class, prefills per GPU): the gate admits the waiting class with the smallest
  ``X_i / target_i - n`` (Sec. 4.1's deviation with the plan's x* replaced by free targets);
  ties to the larger ``Q_p,i - n q_p,i*``, then the lower index.
- ``offset`` (>= 0): the gate ranks by ``(X_i + offset) / target_i - n``; 0 is the paper's rule,
  1 ranks by the occupancy after admitting the job. With the paper's rule a class with no
  prefill running has the smallest deviation whatever its target, so a class the plan sheds
  (small x*) wins almost every time it has none running; at n = 20 on the paper's instance
  this costs about 11 per GPU on the coupled architecture (measured).
- ``share`` (mixed GPUs per GPU): ``M = n * share`` mixed GPUs, rounded at random between the two
  nearest integers once per replication (up with probability equal to the fractional part), so
  revenue is continuous in the share.
- ``slack`` (decode-congestion admission, per GPU): a prefill is admitted only while the prefills
  in service are fewer than the free decode slots plus ``slack * n`` (a slot the decode buffer's
  head is about to take does not count as free). The paper's gate is work
  conserving and fills every idle prefill slot; when decode slots are saturated the prefilled
  jobs then wait and abandon in the decode buffer, losing their whole price. A small slack
  idles prefill slots instead, so the wait happens in the prefill queue, before any work is
  spent. Large slack is the paper's gate.
- ``caps`` (per class, prefills per GPU): class i is admitted only while ``X_i < caps_i * n``.

The family is not a second implementation: it is :class:`~jaxqueue.policies.pooled.Pooled`
with these knobs as its ``params``. At ``targets = x*``, ``offset = 0``, ``share = ceil(n sum
x*) / n``, ``slack >= 1`` and ``caps > 1`` it is the paper's Gate-and-Route (GG-SP), sample path
for sample path. The decode side is the greedy router with the FCFS decode buffer. Every
decision goes through ``decide``, so :class:`jaxqueue.relax.Relaxed` gives pathwise gradients
for all four knobs.

``coupled`` and ``coupled-fcfs`` (per-GPU engine): the dynamic mixed/solo architecture of the
Sec. 6.3 baselines. Any GPU may run one prefill, in mixed mode while it runs; a finished prefill
decodes in its own slot (immediate coupling), so no prefill is ever wasted and the number of GPUs
in mixed mode moves with demand. Knobs:

- ``targets`` and ``offset`` (``coupled`` only): the deviation gate's targets and offset, as
  above (GI-WSP at x* and offset 0);
- ``cap`` (prefills per GPU): at most ``K = n * cap`` prefills run at once (rounded at random
  per replication); ``cap = 1`` never binds (GI-WSP, or FI-WSP for ``coupled-fcfs``, whose
  admission is first-come-first-served across classes).

The per-GPU engine takes exact decisions only: these families are tuned with the exact
simulator's estimators (finite differences and SPSA with common random numbers), not pathwise.

``sli-gated`` (pooled engine): SLI-aware Gate-and-Route
(:class:`~jaxqueue.policies.sli.SLIGateAndRoute`, Sec. 5.1) with free knobs:

- ``targets``: the deviation gate's targets, as above (offset 0);
- ``split`` (per class, in ``[0, 1]``): the probability that the router sends a finished class-i
  prefill to the solo side. The paper's ``p_s,i`` is the plan's share of class-i decode
  completions on solo GPUs; moving it trades per-class solo occupancy (decode fairness) and
  time per output token against revenue.

The number of mixed GPUs stays the plan's ``ceil(n sum x*)``. At ``targets = x*`` and
``split = p_s`` the family is the paper's SLI-aware policy, path for path. Its random decision is
the router's draw, so every estimator applies: ``score`` differentiates the draw's
log-probability (the split; the gate is exact), ``pathwise`` relaxes both.

A class the plan does not serve (``x_i* = 0``, as an SLI-constrained plan may decide) has, in the
paper's gate, the key +inf: it is admitted only when no other class waits. Targets are tuned in
log space and so stay positive: such a class's target is the small :data:`FLOOR`, and every
family keeps the paper's key for it whatever its target (its target changes nothing). Taken as
a target, ``0 / FLOOR - n`` would tie the class with every other idle class at ``-n`` and, its
queue being long, admit it nearly every time it had none running.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import fluid
from ..model import Model
from .common import (
    checked_capacity,
    checked_gpus,
    per_job_queue,
    rounded,
    rounding_logp,
    smallest_rounded,
)
from .per_gpu import PerGpu, counts_dtype, gpu_slots
from .pooled import GatedParams, Pooled
from .sli import SLIGateAndRoute, build_sli

__all__ = ["FAMILIES", "CoupledParams", "GatedParams", "SLIParams", "build_family",
           "check_params", "engine", "get_params", "initial_params", "is_gated", "load_params",
           "rounded", "rounding_logp", "save_params", "smallest_rounded", "starting_points",
           "with_params"]

#: The gate target a family's parameters give a class that its plan does not serve (targets
#: are tuned in log space, so they stay > 0). Such a class keeps the paper's gate key of +inf
#: whatever its target: its target does not change the policy.
FLOOR = 1e-6

#: Family name -> (engine, one line).
FAMILIES = {
    "gated": ("pooled", "Gate-and-Route with free gate targets, mixed share, decode-congestion "
                        "slack and per-class caps (GG-SP at the LP point)"),
    "coupled": ("per-gpu", "the gate on the coupled dynamic architecture with free targets and "
                           "a cap on concurrent prefills (GI-WSP at the LP point)"),
    "coupled-fcfs": ("per-gpu", "FCFS admission on the coupled dynamic architecture with a cap "
                                "on concurrent prefills (FI-WSP at cap 1)"),
    "sli-gated": ("pooled", "SLI-aware Gate-and-Route with free gate targets and router splits "
                            "(the paper's SLI-aware policy at the LP point)"),
}


class CoupledParams(eqx.Module):
    """The continuous parameters of the ``coupled`` families.

    Attributes:
        targets: gate targets, prefills per GPU per class (> 0; unused by ``coupled-fcfs``).
        cap: concurrent prefills per GPU at most, in ``[0, 1]``.
    """

    targets: Float[Array, " I"]
    offset: Float[Array, ""]
    cap: Float[Array, ""]


class SLIParams(eqx.Module):
    """The continuous parameters of the ``sli-gated`` family.

    Attributes:
        targets: gate targets, prefills per GPU per class (> 0).
        split: per class, the probability of routing a finished prefill to the solo side.
    """

    targets: Float[Array, " I"]
    split: Float[Array, " I"]


#: Family name -> its parameters' class.
PARAMS = {"gated": GatedParams, "coupled": CoupledParams, "coupled-fcfs": CoupledParams,
          "sli-gated": SLIParams}


# ---- parameters ------------------------------------------------------------------------------
def engine(family: str) -> str:
    """The engine a family runs on."""
    _check_family(family)
    return FAMILIES[family][0]


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family = {family!r} is unknown: must be one of {', '.join(FAMILIES)}")


def initial_params(family: str, model: Model, n: int, plan: fluid.Plan):
    """The family's parameters at which it is the paper's policy planned by ``plan``."""
    from ..decisions import ceil_count

    _check_family(family)
    n = checked_gpus(n)
    x = np.maximum(np.asarray(plan.x, np.float64), 0.0)
    targets = np.where(x > 0, x, FLOOR)
    if family == "gated":
        M = min(max(ceil_count(n * float(np.sum(x))), 0), n)
        return GatedParams(targets=targets, offset=np.float64(0.0), share=np.float64(M / n),
                           slack=np.float64(2.0), caps=np.full(model.num_classes, 2.0))
    if family == "sli-gated":
        system, _ = build_sli(model, n, plan=plan)
        return SLIParams(targets=targets, split=np.asarray(system.p_solo, np.float64))
    return CoupledParams(targets=targets, offset=np.float64(0.0), cap=np.float64(1.0))


def starting_points(family: str, model: Model, n: int, plan: fluid.Plan) -> dict[str, Any]:
    """Where tuning may start: the LP point (the paper's policy) and, for the families with a
    gate, the same point ranking classes by their occupancy after admission (``offset = 1``),
    a structural change gradients do not find from the LP point (the gate's ranking is
    piecewise constant in the offset). Keys are short descriptions."""
    p0 = initial_params(family, model, n, plan)
    points = {"LP point": p0}
    if family in ("gated", "coupled"):
        points["LP point, rank after admission"] = dataclasses.replace(p0, offset=np.float64(1.0))
    return points


_RANGES = {"targets": ("> 0", lambda a: np.all(a > 0)),
           "offset": (">= 0", lambda a: np.all(a >= 0)),
           "share": ("in [0, 1]", lambda a: np.all((a >= 0) & (a <= 1))),
           "slack": (">= 0", lambda a: np.all(a >= 0)),
           "caps": (">= 0", lambda a: np.all(a >= 0)),
           "cap": ("in [0, 1]", lambda a: np.all((a >= 0) & (a <= 1))),
           "split": ("in [0, 1]", lambda a: np.all((a >= 0) & (a <= 1)))}


def check_params(family: str, params, model: Model) -> None:
    """Raises ValueError naming the parameter and its allowed range."""
    _check_family(family)
    want = PARAMS[family]
    if not isinstance(params, want):
        raise TypeError(f"params for family {family!r} must be a {want.__name__}, "
                        f"not {type(params).__name__}")
    for f in dataclasses.fields(params):
        a = np.asarray(getattr(params, f.name), np.float64)
        shape = (model.num_classes,) if f.name in ("targets", "caps", "split") else ()
        allowed, ok = _RANGES[f.name]
        if a.shape != shape or not np.all(np.isfinite(a)) or not ok(a):
            raise ValueError(f"params.{f.name} = {a.tolist()} is invalid: must be finite and "
                             f"{allowed}, with shape {shape}")


def build_family(family: str, model: Model, n: int, *, plan: fluid.Plan | None = None,
                 params=None, capacity: int | None = None, decide=None,
                 gate_temperature: float | None = None):
    """A system of the tunable family ``family`` on ``n`` GPUs at ``params`` (default: the point
    that reproduces the paper's policy under ``plan``, the bundled LP by default).

    ``gate_temperature`` (``gated`` and ``sli-gated``) makes the family *smoothed*: the gate
    admits class j with probability proportional to ``exp(-xi_j / gate_temperature)`` among the
    eligible classes, and (``gated``) the share, slack and caps are rounded with the triangular
    dither (:func:`rounded`), so the expected objective is continuously differentiable in every
    parameter; as the temperature goes to 0 the gate becomes the deterministic one.

    Returns:
        The system and its parameters (float64 host arrays).
    """
    from ..decisions import Exact, ceil_count

    _check_family(family)
    n = checked_gpus(n)
    plan = plan if plan is not None else fluid.solve(model, "bundled")
    params = params if params is not None else initial_params(family, model, n, plan)
    check_params(family, params, model)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    decide = Exact() if decide is None else decide
    # Rings (the FCFS buffers; under a non-exponential patience law the per-class queues too)
    # sized for n, and with such a law for every arrival of a mean patience waiting.
    per_class = family != "coupled-fcfs" and family != "gated"  # rings of one class each
    capacity = checked_capacity(capacity, n,
                                per_job_queue(model, 0.0, per_class=per_class) or None)
    if gate_temperature is not None:
        if family not in ("gated", "sli-gated"):
            raise ValueError(f"gate_temperature is for the gated and sli-gated families only, "
                             f"not {family!r}")
        if not (np.isfinite(gate_temperature) and gate_temperature > 0):
            raise ValueError(f"gate_temperature = {gate_temperature!r} is invalid: must be "
                             "finite and > 0")
        gate_temperature = np.float64(gate_temperature)
    if family == "gated":
        M = min(max(ceil_count(n * float(np.sum(np.maximum(plan.x, 0.0)))), 0), n)
        system = Pooled(model=model, n=np.int32(n), M=np.int32(M),
                        x_star=np.asarray(plan.x, np.float64),
                        q_star=np.asarray(plan.q_p, np.float64), gate="deviation",
                        capacity=capacity, params=params, gate_temperature=gate_temperature,
                        decide=decide)
    elif family == "sli-gated":
        system, _ = build_sli(model, n, plan=plan, decide=decide, capacity=capacity)
        system = dataclasses.replace(system, x_star=_served(plan, params.targets),
                                     split=params.split, gate_temperature=gate_temperature)
    else:
        if decide.differentiable:
            raise ValueError(f"family {family!r} runs on the per-GPU engine, which takes exact "
                             "decisions only: tune it with the exact simulator's estimators")
        system = PerGpu(model=model, n=np.int32(n), M=np.int32(0),
                        x_star=_served(plan, params.targets),
                        q_star=np.asarray(plan.q_p, np.float64), gpus=gpu_slots(n),
                        layout="shared", coupled=True,
                        gate="deviation" if family == "coupled" else "fcfs",
                        capacity=capacity, counts=counts_dtype(model), prefill_cap=params.cap,
                        gate_offset=params.offset, decide=decide)
    return system, params


def _served(plan: fluid.Plan, targets) -> np.ndarray:
    """The gate targets of a ``coupled`` or ``sli-gated`` system: ``targets``, except 0 (the
    paper's key of +inf) for a class the plan does not serve (the module docstring). The
    ``gated`` family keeps the plan beside its knobs and masks in its gate instead."""
    return np.where(np.asarray(plan.x) > 0, np.asarray(targets, np.float64), 0.0)


def _where(cond, a, b):
    """``np.where`` on host arrays (keeping float64), ``jnp.where`` when any is traced."""
    if any(isinstance(v, jax.Array) for v in (cond, a, b)):
        return jnp.where(cond, a, b)
    return np.where(cond, a, b)


def is_gated(system) -> bool:
    """Whether ``system`` is a member of the ``gated`` family (a pooled system with knobs)."""
    return isinstance(system, Pooled) and system.params is not None


def get_params(system):
    """The tunable parameters of a system built by :func:`build_family`."""
    if is_gated(system):
        return system.params
    # a class the plan does not serve has the gate target 0 in the system (see _served), and
    # the family's floor in its parameters
    targets = _where(system.x_star > 0, system.x_star, FLOOR)
    if isinstance(system, SLIGateAndRoute):
        return SLIParams(targets=targets, split=system.split)
    return CoupledParams(targets=targets, offset=system.gate_offset, cap=system.prefill_cap)


def with_params(system, params):
    """``system`` with its tunable parameters replaced (traceable: ``params`` may hold
    tracers; validate concrete values with :func:`check_params` first)."""
    if is_gated(system):
        return eqx.tree_at(lambda s: s.params, system, params)
    # a class whose target is 0 (not served by the plan: see _served) stays at 0
    targets = _where(system.x_star > 0, params.targets, 0.0)
    if isinstance(system, SLIGateAndRoute):
        return eqx.tree_at(lambda s: (s.x_star, s.split), system, (targets, params.split))
    return eqx.tree_at(lambda s: (s.x_star, s.gate_offset, s.prefill_cap), system,
                       (targets, params.offset, params.cap))


# ---- parameter files -------------------------------------------------------------------------
PARAMS_FORMAT = "jaxqueue-params"


def save_params(path, family: str, params, **meta) -> None:
    """Writes ``params`` of ``family`` (and ``meta``: scenario, gpus, revenue...) as JSON, so
    that ``jaxqueue simulate SCENARIO --gpus N --params FILE`` re-evaluates them."""
    import json
    import os

    _check_family(family)
    data = {"format": PARAMS_FORMAT, "version": 1, "family": family,
            "params": {f.name: np.asarray(getattr(params, f.name), np.float64).tolist()
                       for f in dataclasses.fields(params)}, **meta}
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def load_params(path, model: Model):
    """(family, params, the whole file as a dict) from a file written by :func:`save_params`;
    a ValueError names what is wrong (file, key, allowed values)."""
    import json

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"params file {path}: cannot be read as JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != PARAMS_FORMAT:
        raise ValueError(f"params file {path}: not a jaxqueue parameter file (key 'format' must "
                         f"be {PARAMS_FORMAT!r}; write one with jaxqueue tune --save)")
    family = data.get("family")
    if family not in FAMILIES:
        raise ValueError(f"params file {path}: family = {family!r} is invalid: must be one of "
                         f"{', '.join(FAMILIES)}")
    kind = PARAMS[family]
    names = [f.name for f in dataclasses.fields(kind)]
    given = data.get("params")
    if not isinstance(given, dict) or sorted(given) != sorted(names):
        raise ValueError(f"params file {path}: key 'params' must hold exactly {names} for "
                         f"family {family!r}")
    try:
        params = kind(**{k: np.asarray(given[k], np.float64) for k in names})
    except (TypeError, ValueError):
        raise ValueError(f"params file {path}: 'params' values must be numbers") from None
    check_params(family, params, model)
    return family, params, data
