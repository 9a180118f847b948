"""Sensitivities of a policy's long-run revenue to the model's parameters, and the value of a GPU.

For capacity planning: the derivative of a policy's simulated long-run revenue per GPU per second
``R`` with respect to each model parameter, with a 95% interval, next to the derivative of the fluid
LP's optimal value ``R*``, and what one more and one fewer GPU are worth.

**Parameters.** Per class ``i`` the arrival rate ``lambda_i`` and the patience rate ``theta_i``; the
iteration-time law's ``alpha``, ``beta`` (``tau = alpha + beta C``) and ``gamma``; the prices
``c_p`` and ``c_d``. Every service rate (``mu_p``, ``mu_m``, ``mu_s``) and the bundled price ``w``
are derived from these (:class:`jaxqueue.Model`), so a perturbed parameter moves all of them.

**Prices: exact, no perturbation.** The policy's dynamics never read the prices (its plan is fixed,
below), so a sample path does not depend on them, and both revenue estimators are linear in them:
bundled ``R = sum_i (c_p P_i + c_d D_i) r_i`` and separate ``R = sum_i c_p P_i p_i + c_d D_i r_i``
(``r_i`` decode completions, ``p_i`` prefill completions per GPU per second). So ``dR/dc_p`` and
``dR/dc_d`` are the same run's token rates, obtained by evaluating the estimator with the prices (1,
0) and (0, 1): exact on every replication, with the identity ``R = c_p dR/dc_p + c_d dR/dc_d``.

**Other parameters: common-random-number central differences.** For each parameter ``p`` with value
``v`` the model is perturbed to ``v + h`` and ``v - h`` with ``h = rel_step |v|``; the base system,
every perturbed system and the systems on ``n - 1`` and ``n + 1`` GPUs are simulated in ONE
:func:`jaxqueue.simulate_many` call, which vmaps one program over the stacked systems and gives
replication ``r`` of every point the same random numbers (``fold_in(key, r)``). Replication ``r``'s
estimate is ``(R_r(v + h) - R_r(v - h)) / (2h)``; the reported derivative is the mean of these
paired differences over replications with a 95% t-interval (:func:`jaxqueue.stats.mean_ci`), which
is honest however well the common random numbers couple the paths. The same run's one-sided
differences ``(R(v + h) - R(v)) / h`` and ``(R(v) - R(v - h)) / h`` are reported too: where they
differ, the policy's revenue bends or has a kink at ``v``. A parameter that is 0 cannot go below 0:
it gets an absolute step ``h = rel_step * ref`` (``ref``: the mean of its family for ``lambda`` and
``theta``, falling back to 1 per second; ``tau`` for ``alpha``; ``tau / C`` for ``beta``) and a
forward difference ``(R(h) - R(0)) / h``; the row says so (``difference``).

**The plan is fixed.** The policy is built once, on the base model and its LP plan (Gate-and-
Route's ``x*``, ``q_p*`` and ``M = ceil(n sum x*)``), and each perturbed point runs that same
deployed policy in a world whose parameter changed (``eqx.tree_at`` replaces the system's model).
The derivative is that of the policy as deployed, not of re-planning. ``replan=True`` instead
re-solves the LP at every perturbed point and builds the policy from it (``M = ceil(n sum x*)`` then
follows the perturbed plan). The prices' derivatives are at the fixed plan in both cases (a unique
LP optimum does not move under a small change of its objective).

**The LP's derivatives.** ``R*(p)`` is re-solved (:func:`jaxqueue.fluid.solve`, HiGHS, float64) at
``v +- h_lp`` with ``h_lp = 1e-4 |v|`` (:data:`LP_STEP`): the central difference is reported, and
both one-sided differences where they differ by more than 1% (a kink of the piecewise-smooth value
function: a degenerate LP); the secant over the simulation's own step ``+-h`` is given too (what the
simulated central difference estimates in the fluid limit). Next to it, ``duals``: the derivative
the envelope theorem gives from the LP's optimal primal ``z*`` and duals ``y*``, ``d/dp [c(p) z* +
y*_arr (lambda - mu_p x - theta q_p) + y*_dec (mu_p x - mu_m y_m - mu_s y_s - theta q_d)]`` at fixed
``z*, y*``; for ``lambda_i`` that is ``plan.flow_duals["arrival"][i]``, for the prices the plan's
token rates. It equals the re-solved derivative at a nondegenerate optimum (unique primal and dual);
where they differ the LP is degenerate.

**Comparing derivatives of different units.** Each row also has a ``scale``: ``|v|``, or ``ref`` for
a parameter that is 0. ``scale * dR/dp`` is the revenue per GPU per second gained per 100% change of
the parameter, comparable across parameters; a row's ``gap`` is ``(simulated - LP) * scale`` divided
by the largest ``|LP| * scale`` over the rows.

**The value of a GPU.** The same call simulates the policy, planned from the base LP, on ``n - 1``
and ``n + 1`` GPUs (the deployed policy at that n: Gate-and-Route's ``M = ceil(n sum x*)`` changes
with n). The total revenue per second is ``n R(n)``; ``one_more = (n+1) R(n+1) - n R(n)`` and
``one_fewer = n R(n) - (n-1) R(n-1)`` (what removing a GPU loses), each a mean of per-replication
paired differences with a 95% interval. The fluid LP values every GPU at ``R*``.

All statistics are float64 host arithmetic.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import numpy as np
from scipy import stats as _st

from . import budget, fluid, policies, stats
from .model import Model

__all__ = ["LP_STEP", "PRICES", "SIMULATED", "estimate", "lines", "lp_derivatives",
           "parameters", "sensitivities"]

#: Parameters whose derivative is simulated by central differences, in the order reported
#: (per-class ones expand to one row per class).
SIMULATED = ("lambda_", "theta", "alpha", "beta", "gamma")
#: Parameters whose derivative is read exactly from the base run (revenue is linear in them).
PRICES = ("c_p", "c_d")
#: Relative step of the LP's finite differences (float64 HiGHS solves, tolerances 1e-10).
LP_STEP = 1e-4
#: One-sided LP differences that differ by more than this share mark a kink.
KINK = 0.01
#: Default relative step of the simulated central differences.
REL_STEP = 0.05


# ---- parameters -------------------------------------------------------------------------------
def _family_ref(model: Model, field: str) -> float:
    """The reference magnitude of a parameter that is 0 (its absolute step is rel_step times
    this): see the module docstring."""
    if field in ("lambda_", "theta"):
        values = np.asarray(getattr(model, field), np.float64)
        if np.any(values > 0):
            return float(np.mean(values[values > 0]))
        lam = np.asarray(model.lambda_, np.float64)
        return float(np.mean(lam[lam > 0])) if np.any(lam > 0) else 1.0
    if field == "alpha":
        return float(model.tau)
    if field == "beta":
        return float(model.tau) / float(model.C)
    return 1.0


def parameters(model: Model, rel_step: float = REL_STEP) -> list[dict[str, Any]]:
    """The parameters, one entry per row: ``name`` (``lambda_1``, ``theta_2``, ``alpha``, ...,
    classes numbered from 1 as in the paper), ``field`` (the :class:`Model` field), ``index``
    (the class, or None), ``class`` (its name, or None), ``value``, ``scale`` (``|value|``, or
    the reference magnitude when the value is 0), ``step`` (the simulation's ``h``; None for a
    price), ``step_kind`` (``relative``, ``absolute`` or ``exact``) and ``difference``
    (``central``, ``forward`` or ``exact``)."""
    rows = []
    for field in (*SIMULATED, *PRICES):
        values = np.atleast_1d(np.asarray(getattr(model, field), np.float64))
        per_class = field in ("lambda_", "theta")
        for k, v in enumerate(values):
            v = float(v)
            price = field in PRICES
            zero = v == 0.0
            scale = _family_ref(model, field) if zero else abs(v)
            rows.append({
                "name": f"{field.rstrip('_')}_{k + 1}" if per_class else field,
                "field": field, "index": k if per_class else None,
                "class": model.class_names[k] if per_class else None,
                "value": v, "scale": scale,
                "step": None if price else rel_step * scale,
                "step_kind": "exact" if price else ("absolute" if zero else "relative"),
                "difference": "exact" if price else ("forward" if zero else "central"),
            })
    return rows


def _perturbed(model: Model, row: dict[str, Any], delta: float) -> Model:
    """``model`` with the row's parameter moved by ``delta``."""
    field, k = row["field"], row["index"]
    if k is None:
        return model.replace(**{field: row["value"] + delta})
    values = np.array(getattr(model, field), np.float64)
    values[k] += delta
    return model.replace(**{field: values})


# ---- checks -----------------------------------------------------------------------------------
def _check(n, reps, horizon, warmup, rel_step) -> tuple[int, int, float, float, float]:
    """The arguments as numbers, or a ValueError naming the field and its allowed range."""
    def integer(field, value, low, why):
        try:
            ok = (not isinstance(value, bool) and float(value).is_integer()
                  and int(value) >= low)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"{field} = {value!r} is invalid: must be an integer >= {low} "
                             f"({why})")
        return int(value)

    n = integer("gpus", n, 2, "the value of one fewer GPU needs n - 1 >= 1")
    reps = integer("reps", reps, 2, "a 95% interval needs two replications")
    try:
        horizon, warmup, rel_step = float(horizon), float(warmup), float(rel_step)
    except (TypeError, ValueError):
        raise ValueError(f"horizon = {horizon!r}, warmup = {warmup!r} and rel_step = "
                         f"{rel_step!r} must be numbers") from None
    if not (math.isfinite(warmup) and warmup >= 0):
        raise ValueError(f"warmup = {warmup!r} is invalid: must be finite and >= 0")
    if not (math.isfinite(horizon) and horizon > warmup):
        raise ValueError(f"horizon = {horizon!r} is invalid: must be finite and > warmup = "
                         f"{warmup!r}")
    if not (0 < rel_step <= 0.5):
        raise ValueError(f"rel_step = {rel_step!r} is invalid: must be in (0, 0.5] (a share "
                         "of the parameter's value)")
    return n, reps, horizon, warmup, rel_step


# ---- the LP -----------------------------------------------------------------------------------
def _lagrangian(model: Model, plan: fluid.Plan, pricing: str) -> float:
    """The LP's Lagrangian at the plan's primal and dual solution, for ``model``'s coefficients
    (the capacity rows depend on none of the parameters)."""
    x, y_m, y_s, q_p, q_d = (np.asarray(a, np.float64)
                             for a in (plan.x, plan.y_m, plan.y_s, plan.q_p, plan.q_d))
    mu_p, mu_m, mu_s = (np.asarray(a, np.float64) for a in (model.mu_p, model.mu_m, model.mu_s))
    P, D, lambda_, theta = (np.asarray(a, np.float64)
                            for a in (model.P, model.D, model.lambda_, model.theta))
    c_p, c_d = float(model.c_p), float(model.c_d)
    decoded = mu_m * y_m + mu_s * y_s
    if pricing == "bundled":
        objective = float((c_p * P + c_d * D) @ decoded)
    else:
        objective = float((c_p * P) @ (mu_p * x) + (c_d * D) @ decoded)
    arrival = float(plan.flow_duals["arrival"] @ (lambda_ - mu_p * x - theta * q_p))
    decode = float(plan.flow_duals["decode"] @ (mu_p * x - decoded - theta * q_d))
    return objective + arrival + decode


def lp_derivatives(model: Model, pricing: str = "bundled", *, rel_step: float = REL_STEP,
                   rows: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Derivatives of the fluid LP's optimal value ``R*`` (per GPU per second) with respect to
    every parameter of :func:`parameters`.

    Args:
        model: the scenario.
        pricing: the LP, ``"bundled"`` (Eq. 40) or ``"separate"`` (Eq. 42).
        rel_step: the simulation's relative step (for the ``secant`` entry).
        rows: the parameters (default :func:`parameters` of ``model``).

    Returns:
        Per parameter name: ``central``, ``left`` and ``right`` (differences at the relative step
        :data:`LP_STEP`; at a parameter that is 0, ``left`` is None and ``central`` is the right
        difference), ``kink`` (the one-sided differences differ by more than 1%), ``secant``
        (the difference over the simulation's step, central or forward as the simulation) and
        ``duals`` (the envelope theorem's derivative from the optimal primal and dual solution;
        see the module docstring).
    """
    rows = parameters(model, rel_step) if rows is None else rows
    plan = fluid.solve(model, pricing)
    base = plan.revenue
    largest = max(abs(base), 1e-12)

    def value(row, delta):
        return fluid.solve(_perturbed(model, row, delta), pricing).revenue

    out = {}
    for row in rows:
        h = LP_STEP * row["scale"]
        right = (value(row, h) - base) / h
        at_bound = row["value"] == 0.0  # every parameter here is >= 0
        left = None if at_bound else (base - value(row, -h)) / h
        central = right if left is None else (right + left) / 2
        kink = left is not None and abs(right - left) > KINK * max(abs(right), abs(left)) and (
            abs(right - left) * row["scale"] > 1e-7 * largest)
        step = row["step"] if row["step"] is not None else rel_step * row["scale"]
        if row["difference"] == "forward" or at_bound:
            secant = (value(row, step) - base) / step
        else:
            secant = (value(row, step) - value(row, -step)) / (2 * step)
        eps = 1e-6 * row["scale"]
        duals = ((_lagrangian(_perturbed(model, row, eps), plan, pricing)
                  - _lagrangian(model if at_bound else _perturbed(model, row, -eps), plan,
                                pricing)) / (eps if at_bound else 2 * eps))
        out[row["name"]] = {"central": central, "left": left, "right": right, "kink": bool(kink),
                            "secant": secant, "duals": duals}
    return out


# ---- the simulation ---------------------------------------------------------------------------
def _points(model: Model, n: int, policy: str, engine: str | None, rel_step: float,
            replan: bool) -> tuple[list[tuple[str, Any]], list[Any], fluid.Plan,
                                   list[dict[str, Any]]]:
    """The systems of the sweep, labelled: ``("base", None)``, ``("up", row)``, ``("down",
    row)``, ``("gpus", n - 1)``, ``("gpus", n + 1)``."""
    spec = policies.resolve(policy)
    plan = fluid.solve(model, spec.pricing)
    base, _ = policies.build(spec.name, model, n, engine=engine, plan=plan)
    rows = parameters(model, rel_step)
    labels: list[tuple[str, Any]] = [("base", None)]
    systems = [base]

    def deployed(world: Model):
        if replan:
            return policies.build(spec.name, world, n, engine=engine)[0]
        return eqx.tree_at(lambda s: s.model, base, world)

    for row in rows:
        if row["field"] in PRICES:
            continue
        labels.append(("up", row["name"]))
        systems.append(deployed(_perturbed(model, row, row["step"])))
        if row["difference"] == "central":
            labels.append(("down", row["name"]))
            systems.append(deployed(_perturbed(model, row, -row["step"])))
    for m in (n - 1, n + 1):
        labels.append(("gpus", m))
        systems.append(policies.build(spec.name, model, m, engine=engine, plan=plan)[0])
    return labels, systems, plan, rows


def estimate(model: Model, n: int, *, policy: str = "gate-and-route", engine: str | None = None,
             reps: int = 64, horizon: float = 1200.0, rel_step: float = REL_STEP,
             replan: bool = False, chunk_events: int = 1024,
             devices: Sequence[Any] | None = None) -> tuple[budget.Estimate, int]:
    """The time and memory estimate of :func:`sensitivities` (all its systems' replications run
    side by side) and the number of systems.

    Raises:
        ValueError: an argument out of range (named, with the allowed range).
        jaxqueue.budget.ResourceError: the sweep does not fit in memory (says what would fit).
    """
    n, reps, horizon, _, rel_step = _check(n, reps, horizon, 0.0, rel_step)
    _, systems, _, _ = _points(model, n, policy, engine, rel_step, replan)
    est = _estimate(systems, reps, horizon, chunk_events, devices)
    return est, len(systems)


def _estimate(systems, reps, horizon, chunk_events, devices) -> budget.Estimate:
    """One estimate for the whole sweep (``reps`` replications of each system at once), after
    checking that it fits on the devices and the host."""
    lanes = reps * len(systems)
    base = systems[0]
    est = budget.estimate(base, reps=lanes, horizon=horizon, chunk_events=chunk_events,
                          devices=devices)
    per_rep = max(budget.device_bytes_per_rep(s, chunk_events) for s in systems)
    est = dataclasses.replace(est, device_bytes_per_rep=per_rep)
    budget.check_fits(base, est, lanes)
    count = len(devices) if devices else 1
    per_device = -(-lanes // count)
    if per_device * per_rep > est.device_bytes:
        fit = est.device_bytes // (per_rep * len(systems)) * count
        raise budget.ResourceError(
            f"reps = {reps:,} replications of each of the {len(systems)} systems need "
            f"{budget.human_bytes(per_device * per_rep)} per device at once, more than the "
            f"{budget.human_bytes(est.device_bytes)} a device can give: at most about "
            f"{max(int(fit), 0):,} replications fit")
    return est


def _progress(progress) -> tuple[Callable[[float], None] | None, Any]:
    """A callable for :func:`jaxqueue.simulate_many` and the bar to close (or None)."""
    if progress is True or isinstance(progress, str):
        from .driver import _Bar

        bar = _Bar("sensitivities" if progress is True else progress)
        return bar, bar
    return (progress or None), None


def _mean_ci(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, np.float64)
    mean, ci = stats.mean_ci(values)
    se = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else math.nan
    return {"mean": float(mean), "ci95": float(ci), "se": se}


def sensitivities(key, model: Model, n: int, *, policy: str = "gate-and-route",
                  reps: int = 64, horizon: float = 1200.0, warmup: float = 200.0,
                  rel_step: float = REL_STEP, replan: bool = False, engine: str | None = None,
                  chunk_events: int = 1024, devices: Sequence[Any] | None = None,
                  progress: bool | str | Callable[[float], None] | None = None
                  ) -> dict[str, Any]:
    """Derivatives of a policy's simulated revenue per GPU per second with respect to every
    parameter, next to the fluid LP's, and the value of one more and one fewer GPU (see the
    module docstring for the method).

    Args:
        key: a ``jax.random.key``; replication ``r`` of every system uses ``fold_in(key, r)``.
        model: the scenario.
        n: number of GPUs, an integer >= 2 (n - 1 is simulated too).
        policy: a policy name (:data:`jaxqueue.policies.POLICIES`); its revenue is measured
            under the pricing of the LP it is planned from.
        reps: replications of every system, >= 2.
        horizon: simulated time, model seconds (> warmup).
        warmup: discarded initial time, model seconds (>= 0).
        rel_step: the relative step ``h / |value|`` of the central differences, in (0, 0.5].
        replan: re-solve the LP at every perturbed point instead of keeping the base plan.
        engine: ``"pooled"`` or ``"per-gpu"`` (default: the policy's first).
        chunk_events: events per compiled scan chunk.
        devices: devices to shard the replications over (None: the default device).
        progress: False/None, True or a label for a progress bar on stderr, or a callable
            receiving the fraction done.

    Returns:
        A dict (plain floats; NaN where undefined): the run's settings, ``lp_revenue`` (R*),
        ``revenue_per_gpu`` (R at n, ``{mean, ci95, se}``), ``parameters`` (one row per
        parameter: :func:`parameters`' fields; ``simulated``, ``{mean, ci95, se}``;
        ``simulated_one_sided``, the same run's one-sided differences ``left`` and ``right``
        and ``right_minus_left``, None where not simulated; ``lp``, :func:`lp_derivatives`'
        entry; ``gap``; ``z``, ``(simulated - LP) / se``), ``largest_lp`` (the row whose
        ``|LP| * scale`` is largest, and that value), ``gpu_value`` (``per_gpu`` at n - 1, n,
        n + 1, ``one_more``, ``one_fewer``, ``mixed_gpus`` at each n, None without static
        planning, and ``lp``, R*) and the cost (``systems``, ``events``,
        ``simulation_seconds``, ``compile_seconds``, ``wall_seconds``).

    Raises:
        ValueError: an argument out of range (named, with the allowed range).
        jaxqueue.budget.ResourceError: the sweep does not fit in memory.
        SimulationError: a FCFS buffer overflowed even after growing it (``simulate_many``).
    """
    from .sweep import simulate_many

    start = time.perf_counter()
    n, reps, horizon, warmup, rel_step = _check(n, reps, horizon, warmup, rel_step)
    spec = policies.resolve(policy)
    labels, systems, plan, rows = _points(model, n, spec.name, engine, rel_step, replan)
    _estimate(systems, reps, horizon, chunk_events, devices)
    report, bar = _progress(progress)
    try:
        # simulate_many reruns only the replications whose FCFS ring overflowed, with a larger
        # ring, and gives the result a large enough ring gives.
        runs = simulate_many(key, systems, reps=reps, horizon=horizon, warmup=warmup,
                             chunk_events=chunk_events, devices=devices, progress=report)
    finally:
        if bar is not None:
            bar.close()
    regrown = max(r.regrown for r in runs)
    pricing = spec.pricing
    revenue = {}
    for label, run, system in zip(labels, runs, systems, strict=True):
        m = int(np.asarray(system.n))
        revenue[label[0], label[1]] = stats.per_gpu(run, system.model, m)[f"revenue_{pricing}"]
    base_run = runs[0]
    price_rate = {
        "c_p": stats.per_gpu(base_run, model.replace(c_p=1.0, c_d=0.0), n)[f"revenue_{pricing}"],
        "c_d": stats.per_gpu(base_run, model.replace(c_p=0.0, c_d=1.0), n)[f"revenue_{pricing}"],
    }
    lp = lp_derivatives(model, pricing, rel_step=rel_step, rows=rows)
    out_rows = []
    for row in rows:
        name = row["name"]
        sides = {"left": None, "right": None, "right_minus_left": None}
        if row["field"] in PRICES:
            per_rep = price_rate[row["field"]]
        else:
            h = row["step"]
            right = (revenue["up", name] - revenue["base", None]) / h
            sides["right"] = _mean_ci(right)
            per_rep = right
            if row["difference"] == "central":
                left = (revenue["base", None] - revenue["down", name]) / h
                sides["left"] = _mean_ci(left)
                sides["right_minus_left"] = _mean_ci(right - left)
                per_rep = (right + left) / 2
        out_rows.append({**row, "simulated": _mean_ci(per_rep), "simulated_one_sided": sides,
                         "lp": lp[name]})
    scaled = [abs(r["lp"]["central"]) * r["scale"] for r in out_rows]
    top = int(np.argmax(scaled))
    largest = scaled[top]
    for r in out_rows:
        diff = r["simulated"]["mean"] - r["lp"]["central"]
        r["gap"] = diff * r["scale"] / largest if largest > 0 else math.nan
        se = r["simulated"]["se"]
        r["z"] = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    at_n = {n - 1: ("gpus", n - 1), n: ("base", None), n + 1: ("gpus", n + 1)}
    total = {m: m * revenue[label] for m, label in at_n.items()}
    planned = getattr(systems[0], "layout", "planned") == "planned"
    mixed = {m: int(np.asarray(systems[labels.index(label)].M)) if planned else None
             for m, label in at_n.items()}
    gpu_value = {
        "per_gpu": {str(m): _mean_ci(total[m] / m) for m in (n - 1, n, n + 1)},
        "mixed_gpus": {str(m): mixed[m] for m in (n - 1, n, n + 1)},
        "one_more": _mean_ci(total[n + 1] - total[n]),
        "one_fewer": _mean_ci(total[n] - total[n - 1]),
        "lp": plan.revenue,
    }
    return {
        "scenario": model.name, "policy": spec.name, "pricing": pricing,
        "engine": policies.engine_of(systems[0]), "gpus": n, "mixed_gpus": mixed[n],
        "classes": list(model.class_names),
        "plan": ("re-solved at every perturbed point" if replan else "fixed at the base LP's")
        + ("" if planned else " (gate targets only: this policy has no static planning)"),
        "replan": bool(replan), "reps": reps, "horizon": horizon, "warmup": warmup,
        "rel_step": rel_step, "lp_step": LP_STEP, "lp_revenue": plan.revenue,
        "revenue_per_gpu": _mean_ci(revenue["base", None]),
        "parameters": out_rows,
        "largest_lp": {"name": out_rows[top]["name"], "value": largest},
        "gpu_value": gpu_value,
        "systems": len(systems), "buffer_capacity": getattr(systems[0], "capacity", None),
        "buffers_regrown": regrown,
        "events": int(sum(r.events for r in runs)),
        "simulation_seconds": float(sum(r.wall_seconds for r in runs)),
        "compile_seconds": float(sum(r.compile_seconds for r in runs)),
        "wall_seconds": time.perf_counter() - start,
    }


# ---- the table --------------------------------------------------------------------------------
def _g(v, digits: int = 5) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}g}"


def lines(out: dict[str, Any]) -> list[str]:
    """The human-readable summary of :func:`sensitivities` (fits 100 columns)."""
    classes = ", ".join(f"{k + 1} = {c}" for k, c in enumerate(out["classes"]))
    mixed = "" if out["mixed_gpus"] is None else f", M = {out['mixed_gpus']} mixed"
    text = [
        f"{out['scenario']} / {out['policy']} on n = {out['gpus']} GPUs ({out['engine']} "
        f"engine{mixed})",
        f"  plan {out['plan']}; central differences with common random numbers",
        f"  d R / d p: R = {out['pricing']} revenue per GPU per second = "
        f"{_g(out['revenue_per_gpu']['mean'], 6)} ± {_g(out['revenue_per_gpu']['ci95'], 2)} "
        f"(LP R* = {_g(out['lp_revenue'], 6)})",
        f"  {out['reps']} replications, horizon {out['horizon']:g} s, warm-up "
        f"{out['warmup']:g} s; ± is a 95% interval over replications",
        f"  classes: {classes}",
        f"{'parameter':<10}{'value':>11}  {'step':<7}{'simulated dR/dp':>24}{'LP dR*/dp':>13}"
        f"{'LP duals':>13}{'gap':>8}",
    ]
    notes = []
    for r in out["parameters"]:
        step = {"relative": f"±{100 * out['rel_step']:g}%", "absolute": f"+{_g(r['step'], 2)}",
                "exact": "exact"}[r["step_kind"]]
        if r["difference"] == "forward":
            notes.append(f"{r['name']} is 0: forward difference over an absolute step of "
                         f"{_g(r['step'], 3)}")
        sim = r["simulated"]
        cell = f"{_g(sim['mean'])} ± {_g(sim['ci95'], 2)}"
        lp = r["lp"]
        mark = "*" if lp["kink"] else " "
        if lp["kink"]:
            notes.append(f"{r['name']}: the LP has a kink (degenerate): left {_g(lp['left'])}, "
                         f"right {_g(lp['right'])}; the LP column is their mean")
        bend = r["simulated_one_sided"]["right_minus_left"]
        if bend is not None and abs(bend["mean"]) > bend["se"] * _st.t.ppf(0.9995,
                                                                           out["reps"] - 1):
            sides = r["simulated_one_sided"]
            notes.append(f"{r['name']}: one-sided simulated d/dp differ (p < 0.001): left "
                         f"{_g(sides['left']['mean'], 4)} ± {_g(sides['left']['ci95'], 2)}, "
                         f"right {_g(sides['right']['mean'], 4)} ± "
                         f"{_g(sides['right']['ci95'], 2)}")
        gap = r["gap"]
        text.append(f"{r['name']:<10}{_g(r['value']):>11}  {step:<7}{cell:>24}"
                    f"{_g(lp['central']):>12}{mark}{_g(lp['duals']):>13}"
                    f"{'-' if not math.isfinite(gap) else f'{100 * gap:+.1f}%':>8}")
    text.append(f"gap: (simulated - LP) x scale (|value|), in % of the largest |LP| x scale "
                f"({_g(out['largest_lp']['value'])}, {out['largest_lp']['name']})")
    text += [f"  {note}" for note in notes]
    gv = out["gpu_value"]
    n = out["gpus"]
    text.append("value of a GPU: total revenue per second (paired differences over "
                "replications)")
    for m in (n - 1, n, n + 1):
        r = gv["per_gpu"][str(m)]
        mixed = gv["mixed_gpus"][str(m)]
        text.append(f"  n = {m}{f' (M = {mixed})' if mixed is not None else ''}: revenue per "
                    f"GPU {_g(r['mean'], 6)} ± {_g(r['ci95'], 2)}, total "
                    f"{m * r['mean']:,.1f} per second")
    more, fewer = gv["one_more"], gv["one_fewer"]
    text.append(f"  one more GPU  ({n} -> {n + 1}): {more['mean']:+.5g} ± {_g(more['ci95'], 2)} "
                "per second")
    text.append(f"  one fewer GPU ({n} -> {n - 1}): {-fewer['mean']:+.5g} ± "
                f"{_g(fewer['ci95'], 2)} per second")
    text.append(f"  fluid LP: every GPU adds R* = {_g(gv['lp'], 6)} per second")
    text.append(f"{out['systems']} systems simulated together, {out['events']:,} events; "
                f"{out['wall_seconds']:.0f} s wall ({out['compile_seconds']:.0f} s compiling)")
    wrapped = []
    for line in text:  # prose longer than 100 columns continues on indented lines
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        wrapped += textwrap.wrap(line, 100, subsequent_indent=indent,
                                 break_on_hyphens=False) if len(line) > 100 else [line]
    return wrapped
