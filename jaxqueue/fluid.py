"""Fluid (steady-state) LPs of the paper (Eq. 40 and 42) and its SLI-aware LP (Sec. 5).

Each LP is solved on the host in float64 with SciPy's HiGHS. Variables are per-GPU fluid
quantities of each class: prefills in service ``x``, decodes in service on mixed GPUs ``y_m``
and on solo GPUs ``y_s``, and the prefill and decode queues ``q_p`` and ``q_d``. The result is a
frozen :class:`Plan` that the policies consume as arrays (static planning, Sec. 4).

Dual values are reported as shadow prices: revenue per GPU per second gained per unit of extra
right-hand side, so every capacity or SLI shadow price is nonnegative.

An optimum need not be unique (on the paper's instance the split of decodes between mixed and
solo slots is free, and under separate pricing so is the decode backlog of each class).
:func:`face` returns the whole optimal set as a :class:`Face`: the range of every quantity of
every class over the optimal plans, and the distance of a simulated value to that range
(:meth:`Face.distance`, zero inside it), which is what a simulation should be judged by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from .model import Model

__all__ = ["PRICINGS", "SLI", "SLI_NAMES", "UNIQUE_ATOL", "VARIABLES", "Face", "FluidError",
           "Optima", "Plan", "RangeDistance", "distance_to_range", "face", "frontier", "optima",
           "penalty_terms", "smallest", "solve", "solve_bundled", "solve_separate", "tpot"]

PRICINGS = ("bundled", "separate")
SLI_NAMES = ("prefill_fairness", "decode_fairness", "tpot")
_VARS = ("x", "y_m", "y_s", "q_p", "q_d")
#: The plan quantities, per class: prefills in service, decodes in service on mixed and on solo
#: GPUs, prefill and decode queues (per GPU).
VARIABLES = _VARS
_HIGHS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


class FluidError(ValueError):
    """A fluid LP that cannot be solved: infeasible, unbounded, or a HiGHS failure.

    Attributes:
        constraint: the SLI whose target cannot be met (``None`` for other failures).
        smallest: the smallest feasible value of that SLI under the other constraints.
    """

    def __init__(self, message: str, *, constraint: str | None = None,
                 smallest: float | None = None):
        super().__init__(message)
        self.constraint = constraint
        self.smallest = smallest


class _Infeasible(FluidError):
    """An infeasible LP (HiGHS status 2)."""


def _check_number(field_name: str, v) -> None:
    try:
        ok = not isinstance(v, bool) and math.isfinite(float(v)) and float(v) >= 0.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{field_name} = {v!r} is invalid: must be a finite number >= 0")


@dataclass(frozen=True)
class SLI:
    """Service-level targets of the SLI-aware LP (Sec. 5); ``None`` leaves an SLI free.

    Attributes:
        prefill_fairness: eta_1, bound on ``max_{i,j} (x_i - x_j)`` (prefills per GPU).
        decode_fairness: eta_2, bound on ``max_{i,j} (y_s,i - y_s,j)`` (solo decodes per GPU).
        tpot: eta_3, bound on the slot-weighted average time per output token, seconds.
        penalty: if True the targets are soft: the objective subtracts
            ``weights[k] * max(0, indicator_k - eta_k)`` instead of imposing them.
        weights: penalty weight per SLI name, default 1.0 each, in revenue per GPU per second
            per unit of excess: per second of TPOT above eta_3, per prefill (resp. solo decode)
            per GPU of fairness spread above eta_1 (resp. eta_2).
    """

    prefill_fairness: float | None = None
    decode_fairness: float | None = None
    tpot: float | None = None
    penalty: bool = False
    weights: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        for name in SLI_NAMES:
            if getattr(self, name) is not None:
                _check_number(f"SLI {name}", getattr(self, name))
        if not isinstance(self.penalty, bool):
            raise TypeError(f"SLI penalty = {self.penalty!r} is invalid: must be True or False")
        for k, v in dict(self.weights).items():
            if k not in SLI_NAMES:
                raise ValueError(f"SLI weights key {k!r} is invalid: allowed keys are {SLI_NAMES}")
            _check_number(f"SLI weights[{k!r}]", v)

    @property
    def targets(self) -> dict[str, float]:
        """The SLIs that carry a target, name -> eta."""
        return {k: float(getattr(self, k)) for k in SLI_NAMES if getattr(self, k) is not None}

    def weight(self, name: str) -> float:
        """Penalty weight of one SLI (1.0 unless given)."""
        return float(self.weights.get(name, 1.0))


@dataclass(frozen=True, eq=False)
class Plan:
    """An optimal solution of a fluid LP (per-GPU quantities; arrays have shape ``(I,)``).

    Attributes:
        pricing: ``"bundled"`` (Eq. 40) or ``"separate"`` (Eq. 42); SLI solves are bundled.
        x: prefills in service per GPU.
        y_m: decodes in service on mixed GPUs, per GPU.
        y_s: decodes in service on solo GPUs, per GPU.
        q_p: prefill queue per GPU.
        q_d: decode queue per GPU.
        revenue: revenue per GPU per second at the optimum (before any SLI penalty).
        objective: optimal LP objective (revenue minus SLI penalties; equals revenue otherwise).
        duals: shadow prices of the capacities ``"prefill"`` (sum x <= 1), ``"mixed"``
            (sum y_m <= (B-1) sum x) and ``"solo"`` (sum y_s <= B (1 - sum x)); >= 0.
        flow_duals: per-class shadow prices of the balance equations: ``"arrival"``, value of
            one more class-i arrival per second (lambda_i = mu_p x + theta q_p); ``"decode"``,
            value of one more class-i job per second entering the decode buffer.
        solo_efficient: Prop. 3.2's condition ``gamma*tau >= (B-1)/B``.
        sli: value of each SLI at the optimum (prefill/decode fairness, TPOT in seconds).
        sli_duals: for SLI solves, the shadow price of each hard SLI target (revenue per unit
            of eta, >= 0; 0 when the target does not bind); empty otherwise.
    """

    pricing: str
    x: np.ndarray
    y_m: np.ndarray
    y_s: np.ndarray
    q_p: np.ndarray
    q_d: np.ndarray
    revenue: float
    objective: float
    duals: dict[str, float]
    flow_duals: dict[str, np.ndarray]
    solo_efficient: bool
    sli: dict[str, float]
    sli_duals: dict[str, float] = field(default_factory=dict)

    @property
    def penalty(self) -> float:
        """SLI penalty subtracted from the revenue at the optimum (0 without penalties)."""
        return self.revenue - self.objective

    @property
    def sum_x(self) -> float:
        """Fraction of GPUs that must be mixed, ``sum_i x_i``."""
        return float(np.sum(self.x))

    def mixed_gpus(self, n: int) -> int:
        """Number of mixed GPUs ``M = ceil(n * sum_i x_i)`` for n GPUs (Sec. 4.1), the rounding
        of :class:`jaxqueue.decisions.Exact` (LP round-off such as ``106.0000000001`` is not
        rounded up), kept in ``[0, n]``.

        Raises:
            ValueError: n is not an integer >= 1.
        """
        from .decisions import ceil_count  # the one rounding rule; imported late (jax)

        try:
            ok = not isinstance(n, bool) and float(n).is_integer() and n >= 1
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"n = {n!r} is invalid: must be an integer >= 1")
        return int(min(max(ceil_count(int(n) * self.sum_x), 0), int(n)))

    def completion_rate(self, model: Model) -> np.ndarray:
        """Decode completions per GPU per second of each class, ``mu_m y_m + mu_s y_s``."""
        return np.asarray(model.mu_m * self.y_m + model.mu_s * self.y_s, dtype=np.float64)


# ---- LP assembly ---------------------------------------------------------------------------------
class _LP:
    """A small LP in maximization form, with named variable blocks and named rows."""

    def __init__(self, num: int):
        self.cols: dict[str, slice] = {}
        self.bounds: list[tuple[float, float | None]] = []
        self.ub: list[tuple[str, np.ndarray, float]] = []
        self.eq: list[tuple[str, np.ndarray, float]] = []
        for name in _VARS:
            self.var(name, num)

    def var(self, name: str, size: int = 1) -> None:
        start = len(self.bounds)
        self.cols[name] = slice(start, start + size)
        self.bounds += [(0.0, None)] * size

    def row(self, kind: str, name: str, coef: Mapping[str, object], rhs: float) -> None:
        a = np.zeros(len(self.bounds))
        for var, c in coef.items():
            a[self.cols[var]] += c
        (self.ub if kind == "<=" else self.eq).append((name, a, float(rhs)))

    def solve(self, objective: Mapping[str, object], what: str):
        """Maximizes ``objective``; returns (value, solution, {row name: shadow price})."""
        n = len(self.bounds)
        c = np.zeros(n)
        for var, v in objective.items():
            c[self.cols[var]] += v

        def mat(rows):  # rows added before later auxiliaries are padded with zeros
            return np.array([np.pad(a, (0, n - a.size)) for _, a, _ in rows])

        res = linprog(-c, A_ub=mat(self.ub), b_ub=[b for *_, b in self.ub], A_eq=mat(self.eq),
                      b_eq=[b for *_, b in self.eq], bounds=self.bounds, method="highs",
                      options=_HIGHS)
        if res.status == 2:
            raise _Infeasible(f"{what} is infeasible")
        if res.status == 3:
            raise FluidError(f"{what} is unbounded")
        if res.status != 0:
            raise FluidError(f"{what}: HiGHS failed (status {res.status}): {res.message}")
        # HiGHS marginals are d(min objective)/d(rhs) of the minimization of -c: negate them.
        duals = {name: -float(m)
                 for (name, _, _), m in zip(self.ub, res.ineqlin.marginals, strict=True)}
        duals.update({name: -float(m)
                      for (name, _, _), m in zip(self.eq, res.eqlin.marginals, strict=True)})
        return -float(res.fun), res.x, duals


def _base(model: Model, q_d_zero: bool = False) -> _LP:
    """Constraints of Eq. (40) and (42): capacities (Eq. 12-14 per GPU) and flow balance."""
    num, big_b = model.num_classes, float(model.B)
    lp = _LP(num)
    if q_d_zero:  # Sec. 5: the SLI-aware LP keeps no decode backlog.
        lp.bounds[lp.cols["q_d"]] = [(0.0, 0.0)] * num
    ones = np.ones(num)
    lp.row("<=", "prefill", {"x": ones}, 1.0)                                # sum x <= 1
    lp.row("<=", "mixed", {"y_m": ones, "x": -(big_b - 1.0) * ones}, 0.0)    # sum y_m <= (B-1) X
    lp.row("<=", "solo", {"y_s": ones, "x": big_b * ones}, big_b)            # sum y_s <= B (1-X)
    for i in range(num):
        e = np.eye(num)[i]
        # lambda_i - theta_i q_p,i = mu_p,i x_i
        lp.row("=", f"arrival{i}", {"x": model.mu_p[i] * e, "q_p": model.theta[i] * e},
               model.lambda_[i])
        # mu_p,i x_i - theta_i q_d,i = mu_m,i y_m,i + mu_s,i y_s,i (rhs = exogenous decode inflow)
        lp.row("=", f"decode{i}", {"y_m": model.mu_m[i] * e, "y_s": model.mu_s[i] * e,
                                   "q_d": model.theta[i] * e, "x": -model.mu_p[i] * e}, 0.0)
    return lp


def _objective(model: Model, pricing: str) -> dict[str, object]:
    if pricing == "bundled":  # Eq. (40): w_i per decode completion
        return {"y_m": model.w * model.mu_m, "y_s": model.w * model.mu_s}
    ones = np.ones(model.num_classes)  # Eq. (42): per prefill token and per output token
    return {"x": model.c_p * model.C / model.tau * ones, "y_m": model.c_d / model.tau * ones,
            "y_s": model.c_d * model.gamma * ones}


def _tpot(model: Model, big_x: float) -> float:
    """Slot-weighted time per output token (Sec. 5) at mixed fraction X, seconds."""
    return float(model.tpot(float(big_x)))


def tpot(model: Model, mixed_fraction: float) -> float:
    """Average time per output token (Sec. 5), seconds, when a fraction ``mixed_fraction``
    (X = sum_i x_i, prefills in service per GPU) of the GPUs runs a prefill: the slot-weighted
    mean of tau over the (B-1) X mixed decode slots and 1/gamma over the B (1-X) solo ones."""
    return _tpot(model, float(mixed_fraction))


def _tpot_slope(model: Model, big_x: float) -> float:
    """dTPOT/dX: TPOT(X) = k / (B - X) + const with k = B (B-1) (tau - 1/gamma)."""
    b = float(model.B)
    k = b * (b - 1.0) * float(model.tau - 1.0 / model.gamma)
    return k / (b - big_x) ** 2 if k != 0.0 else 0.0


def _add_spread(lp: _LP, model: Model, name: str) -> None:
    """Auxiliaries ``lo <= v_i <= hi`` for a fairness SLI, so ``hi - lo >= max_ij (v_i - v_j)``."""
    var = "x" if name == "prefill_fairness" else "y_s"
    lp.var(f"{name}_hi")
    lp.var(f"{name}_lo")
    for i in range(model.num_classes):
        e = np.eye(model.num_classes)[i]
        lp.row("<=", f"{name}_hi{i}", {var: e, f"{name}_hi": -1.0}, 0.0)
        lp.row("<=", f"{name}_lo{i}", {var: -e, f"{name}_lo": 1.0}, 0.0)


def _add_sli(lp: _LP, model: Model, targets: Mapping[str, float], soft: bool) -> None:
    """Adds one row per SLI target (Sec. 5); soft targets get an excess variable instead."""
    for name in ("prefill_fairness", "decode_fairness"):
        if name not in targets:
            continue
        _add_spread(lp, model, name)
        coef = {f"{name}_hi": 1.0, f"{name}_lo": -1.0}
        if soft:
            lp.var(f"{name}_excess")
            coef[f"{name}_excess"] = -1.0
        lp.row("<=", name, coef, targets[name])  # max_ij (v_i - v_j) (- excess) <= eta
    if "tpot" in targets and not soft:  # a soft TPOT is handled by _soft_tpot
        # TPOT <= eta times its denominator B - X > 0:
        # [tau (B-1) - B/gamma + eta] X <= B (eta - 1/gamma).
        eta, b, inv_gamma = targets["tpot"], float(model.B), 1.0 / float(model.gamma)
        coef = float(model.tau) * (b - 1.0) - b * inv_gamma + eta
        lp.row("<=", "tpot", {"x": coef * np.ones(model.num_classes)}, b * (eta - inv_gamma))


def _plan(model: Model, pricing: str, lp: _LP, value: float, sol, duals, sli: SLI | None) -> Plan:
    parts = {k: np.asarray(sol[lp.cols[k]], dtype=np.float64) for k in _VARS}
    obj = _objective(model, pricing)
    revenue = float(sum(np.sum(np.asarray(c) * parts[k]) for k, c in obj.items()))
    num = model.num_classes
    sli_duals = {}
    if sli is not None and not sli.penalty:
        for name in sli.targets:
            d = duals[name]
            if name == "tpot":  # envelope theorem on coef(eta) X <= rhs(eta): d/deta = B - X
                d *= float(model.B) - float(np.sum(parts["x"]))
            sli_duals[name] = max(d, 0.0)
    return Plan(
        pricing=pricing, revenue=revenue, objective=value, **parts,
        duals={k: duals[k] for k in ("prefill", "mixed", "solo")},
        flow_duals={k: np.array([duals[f"{k}{i}"] for i in range(num)])
                    for k in ("arrival", "decode")},
        solo_efficient=model.solo_efficient,
        sli={"prefill_fairness": float(np.ptp(parts["x"])),
             "decode_fairness": float(np.ptp(parts["y_s"])),
             "tpot": _tpot(model, float(np.sum(parts["x"])))},
        sli_duals=sli_duals)


# ---- public solvers ------------------------------------------------------------------------------
def _solve_plain(model: Model, pricing: str) -> Plan:
    lp = _base(model)
    return _plan(model, pricing, lp, *lp.solve(_objective(model, pricing), f"{pricing} LP"), None)


def solve_bundled(model: Model) -> Plan:
    """Solves the bundled-pricing LP (Eq. 40): revenue w_i per decode completion."""
    return _solve_plain(model, "bundled")


def solve_separate(model: Model) -> Plan:
    """Solves the separate-pricing LP (Eq. 42): c_p per prompt token, c_d per output token."""
    return _solve_plain(model, "separate")


def solve(model: Model, pricing: str = "bundled", *, sli: SLI | None = None) -> Plan:
    """Solves a fluid LP.

    Args:
        model: the scenario.
        pricing: ``"bundled"`` (Eq. 40) or ``"separate"`` (Eq. 42).
        sli: SLI targets (Sec. 5). SLI solves use bundled pricing and impose q_d = 0, as the
            paper does; ``SLI()`` with no target gives the bundled LP restricted to q_d = 0.

    Raises:
        ValueError: unknown pricing, or SLI targets with separate pricing.
        FluidError: infeasible or unbounded LP, HiGHS failure, or an unreachable hard SLI target
            (the message names it and gives its smallest feasible value).
    """
    if pricing not in PRICINGS:
        raise ValueError(f"pricing = {pricing!r} is invalid: allowed values are {PRICINGS}")
    if sli is None:
        return _solve_plain(model, pricing)
    if not isinstance(sli, SLI):
        raise TypeError(f"sli = {sli!r} is invalid: must be an SLI or None")
    if pricing != "bundled":
        raise ValueError(f"pricing = {pricing!r} is invalid with SLI targets: the SLI-aware LP "
                         "(Sec. 5) uses bundled pricing")
    return _solve_sli(model, sli)


def _solve_sli(model: Model, sli: SLI) -> Plan:
    targets = sli.targets
    lp = _base(model, q_d_zero=True)
    _add_sli(lp, model, targets, sli.penalty)
    obj = _objective(model, "bundled")
    if sli.penalty:
        obj.update({f"{k}_excess": -sli.weight(k) for k in targets if k != "tpot"})
        if "tpot" in targets:
            return _plan(model, "bundled", lp, *_soft_tpot(model, lp, obj, sli), sli)
    try:
        result = lp.solve(obj, "SLI-aware LP")
    except _Infeasible:
        _diagnose(model, targets)
        raise
    return _plan(model, "bundled", lp, *result, sli)


def _soft_tpot(model: Model, lp: _LP, obj, sli: SLI):
    """Maximizes ``V(X) - weight * max(0, TPOT(X) - eta)`` over the mixed fraction X.

    V(X), the LP value with ``sum x = X`` fixed, is concave and piecewise linear, and TPOT(X) is
    convex when gamma*tau >= 1, so the objective is concave in X: bisection on the sign of its
    supergradient (the dual of ``sum x = X`` minus the penalty's slope) finds the maximizer to
    round-off. The returned duals are those of the LP with X fixed at the optimum.
    """
    if model.kappa < 1.0:
        raise FluidError("a tpot penalty needs gamma*tau >= 1 (TPOT convex in the mixed "
                         "fraction); use a hard tpot target for this model")
    eta, weight, ones = float(sli.tpot), sli.weight("tpot"), np.ones(model.num_classes)
    lo = -lp.solve({"x": -ones}, "SLI-aware LP")[0]
    hi = lp.solve({"x": ones}, "SLI-aware LP")[0]
    lp.row("=", "mixed_fraction", {"x": ones}, lo)

    def at(big_x: float):
        lp.eq[-1] = (*lp.eq[-1][:2], big_x)
        return lp.solve(obj, "SLI-aware LP")

    while hi - lo > 1e-13:
        mid = 0.5 * (lo + hi)
        slope = _tpot_slope(model, mid) if _tpot(model, mid) > eta else 0.0
        if at(mid)[2]["mixed_fraction"] - weight * slope > 0.0:
            lo = mid
        else:
            hi = mid
    big_x = 0.5 * (lo + hi)
    value, sol, duals = at(big_x)
    return value - weight * max(0.0, _tpot(model, big_x) - eta), sol, duals


def smallest(model: Model, name: str, others: Mapping[str, float] | None = None) -> float:
    """Smallest value any plan can give one SLI (under the LP's constraints with q_d = 0 and the
    hard targets ``others``), e.g. 1/gamma for TPOT without other targets."""
    if name not in SLI_NAMES:
        raise ValueError(f"name = {name!r} is invalid: allowed values are {SLI_NAMES}")
    return _smallest(model, name, dict(others or {}))


def _smallest(model: Model, name: str, others: Mapping[str, float]) -> float:
    """Smallest value of one SLI under the base LP (q_d = 0) and the other hard targets."""
    lp = _base(model, q_d_zero=True)
    _add_sli(lp, model, others, soft=False)
    if name != "tpot":
        _add_spread(lp, model, name)
        return -lp.solve({f"{name}_hi": -1.0, f"{name}_lo": 1.0}, f"minimizing {name}")[0]
    # TPOT is monotone in X (Sec. 5): its minimum sits at the smallest or the largest X.
    ones = np.ones(model.num_classes)
    ends = [lp.solve({"x": s * ones}, "minimizing tpot")[0] * s for s in (-1.0, 1.0)]
    return min(_tpot(model, e) for e in ends)


def _diagnose(model: Model, targets: Mapping[str, float]) -> None:
    """Raises a FluidError naming the hard SLI target that makes the LP infeasible."""
    _base(model, q_d_zero=True).solve(_objective(model, "bundled"), "fluid LP with q_d = 0")
    for name, eta in targets.items():
        others = {k: v for k, v in targets.items() if k != name}
        try:
            low = _smallest(model, name, others)
        except FluidError:
            continue
        if low > eta:
            raise FluidError(f"{name} target {eta:g} cannot be met: the smallest feasible value "
                             f"is {low:.6g}", constraint=name, smallest=low)
    raise FluidError(f"SLI targets {dict(targets)} cannot be met together")


def frontier(model: Model, sli_name: str, values: Sequence[float]) -> list[dict[str, float]]:
    """Revenue against one hard SLI target (Fig. 8), one dict per value.

    Each dict holds ``value`` (eta), ``revenue`` (per GPU per second) and ``shadow_price``
    (revenue per unit of eta: the dual of that SLI constraint). A value below the smallest
    feasible one raises :class:`FluidError`; an unknown name or invalid value, ValueError.
    """
    if sli_name not in SLI_NAMES:
        raise ValueError(f"sli_name = {sli_name!r} is invalid: allowed values are {SLI_NAMES}")
    out = []
    for v in values:
        plan = solve(model, sli=SLI(**{sli_name: v}))
        out.append({"value": float(v), "revenue": plan.revenue,
                    "shadow_price": plan.sli_duals[sli_name]})
    return out


# ---- reading an optimum ------------------------------------------------------------------------
def penalty_terms(plan: Plan, sli: SLI) -> dict[str, dict[str, float]]:
    """Each SLI target of ``sli`` at ``plan``'s optimum: ``value`` (the indicator), ``target``
    (eta), ``excess`` (``max(0, value - target)``), ``weight`` and ``penalty``
    (``weight * excess`` for soft targets, 0 for hard ones, whose excess is round-off)."""
    out = {}
    for name, eta in sli.targets.items():
        value = float(plan.sli[name])
        excess = max(0.0, value - eta)
        if excess < 1e-12 * max(1.0, abs(eta)):
            excess = 0.0
        weight = sli.weight(name) if sli.penalty else math.inf
        out[name] = {"value": value, "target": eta, "excess": excess,
                     "weight": weight if sli.penalty else None,
                     "penalty": weight * excess if sli.penalty else 0.0}
    return out


@dataclass(frozen=True)
class Optima:
    """The set of optimal solutions of a fluid LP, per plan quantity.

    Attributes:
        low, high: smallest and largest value of each quantity (``"x"``, ``"y_m"``, ``"y_s"``,
            ``"q_p"``, ``"q_d"``: arrays ``(I,)``; ``"sum_x"``: a float) over the solutions whose
            objective is within ``tolerance`` of the optimum.
        tolerance: the objective's slack that defines "optimal".
    """

    low: dict[str, np.ndarray | float]
    high: dict[str, np.ndarray | float]
    tolerance: float

    def spread(self, name: str):
        return np.asarray(self.high[name]) - np.asarray(self.low[name])

    def unique(self, atol: float = 1e-6) -> bool:
        """Whether every quantity is the same in all optimal solutions, up to ``atol``."""
        return all(float(np.max(self.spread(k))) <= atol for k in self.low)


def _check_pricing(pricing: str, sli: SLI | None) -> None:
    if pricing not in PRICINGS:
        raise ValueError(f"pricing = {pricing!r} is invalid: allowed values are {PRICINGS}")
    if sli is not None and not isinstance(sli, SLI):
        raise TypeError(f"sli = {sli!r} is invalid: must be an SLI or None")
    if sli is not None and pricing != "bundled":
        raise ValueError(f"pricing = {pricing!r} is invalid with SLI targets: the SLI-aware LP "
                         "(Sec. 5) uses bundled pricing")


def optima(model: Model, pricing: str = "bundled", *, sli: SLI | None = None,
           rel_tol: float = 1e-10) -> Optima:
    """Whether the optimum of :func:`solve` is unique, checked rather than guessed.

    Solves the LP, adds the row "objective >= optimum - tol" (``tol = rel_tol * max(1,
    |optimum|)``) and minimizes and maximizes every plan quantity over it (2 x 5I LPs). A
    quantity whose range is wider than round-off has alternative optimal values: the plan
    HiGHS returns is then one vertex among several that earn the same, and another solver, a
    perturbed input or a different penalty weight may return another. A soft TPOT target is not
    linear in the mixed fraction X; see the comment in the code for how it is handled exactly.
    :func:`face` gives the same ranges with more (totals, revenue, distances to them).
    """
    _check_pricing(pricing, sli)
    _, low, high, tol = _optimal_set(model, pricing, sli, rel_tol, extra=False)
    return Optima(low=low, high=high, tolerance=tol)


def _optimal_set(model: Model, pricing: str, sli: SLI | None, rel_tol: float, *, extra: bool):
    """(plan, low, high, tolerance) of the optimal set; ``extra`` adds the ranges of each
    quantity's total over the classes (``"total_<name>"``) and of the revenue (``"revenue"``,
    only where SLI penalties make it differ from the objective)."""

    def build():
        if sli is None:
            return _base(model), _objective(model, pricing)
        lp = _base(model, q_d_zero=True)
        _add_sli(lp, model, sli.targets, sli.penalty)
        obj = _objective(model, "bundled")
        if sli.penalty:
            obj.update({f"{k}_excess": -sli.weight(k) for k in sli.targets if k != "tpot"})
        return lp, obj

    plan = solve(model, pricing, sli=sli)
    tol = rel_tol * max(1.0, abs(plan.objective))
    ones = np.ones(model.num_classes)
    more = []
    if extra:
        more = [(f"total_{k}", {k: ones}) for k in _VARS if k != "x"]
        if sli is not None and sli.penalty:
            more.append(("revenue", _objective(model, "bundled")))
    if sli is None or not (sli.penalty and "tpot" in sli.targets):
        lp, obj = build()
        low, high = _face(lp, obj, plan.objective - tol, model.num_classes, more)
        return plan, low, high, tol

    # TPOT(X) = k / (B - X) + const is strictly convex for k > 0: where its penalty is active
    # the penalized objective is strictly concave, so the optimal X is unique and the other
    # quantities range over the LP with X fixed. Where it is not active, the optimum is that of
    # the LP with the (linear) hard TPOT row, whose optimal face holds every optimal plan.
    eta, weight = float(sli.tpot), sli.weight("tpot")
    b = float(model.B)
    k = b * (b - 1.0) * float(model.tau - 1.0 / model.gamma)
    lp, obj = build()
    active = _tpot(model, plan.sum_x) > eta * (1.0 + 1e-9)
    if weight > 0 and active and k > 0:
        lp.row("=", "mixed_fraction", {"x": ones}, plan.sum_x)
        value = plan.objective + weight * (_tpot(model, plan.sum_x) - eta)
        low, high = _face(lp, obj, value - tol, model.num_classes, more)
        low["sum_x"] = high["sum_x"] = plan.sum_x
    else:
        if weight > 0:
            _add_sli(lp, model, {"tpot": eta}, soft=False)
        low, high = _face(lp, obj, plan.objective - tol, model.num_classes, more)
    return plan, low, high, tol


def _face(lp: _LP, obj, floor: float, num: int, extra=()):
    """Ranges of the plan quantities (and of the linear functions ``extra``, pairs of a name
    and coefficients) over ``{feasible, objective >= floor}``."""
    lp.row("<=", "optimal", {k: -np.asarray(c, dtype=np.float64) for k, c in obj.items()}, -floor)
    low, high = {}, {}
    for k in _VARS:
        lo, hi = np.zeros(num), np.zeros(num)
        for i in range(num):
            e = np.eye(num)[i]
            hi[i] = lp.solve({k: e}, "range of the optimum")[0]
            lo[i] = -lp.solve({k: -e}, "range of the optimum")[0]
        low[k], high[k] = lo, hi
    ones = np.ones(num)
    low["sum_x"] = -lp.solve({"x": -ones}, "range of the optimum")[0]
    high["sum_x"] = lp.solve({"x": ones}, "range of the optimum")[0]
    for name, coef in extra:
        neg = {k: -np.asarray(c, dtype=np.float64) for k, c in coef.items()}
        low[name] = -lp.solve(neg, "range of the optimum")[0]
        high[name] = lp.solve(coef, "range of the optimum")[0]
    lp.ub.pop()
    return low, high


# ---- the optimal face as a result --------------------------------------------------------------
#: Widest range (per GPU) that still counts as one optimal value in :attr:`Face.unique` and
#: :meth:`Face.free` (the same threshold as ``jaxqueue lp``).
UNIQUE_ATOL = 1e-6
#: Two-sided 95% normal quantile, the default ``crit`` of :func:`distance_to_range`.
Z95 = 1.959963984540054
#: The names :func:`jaxqueue.stats.per_gpu` and ``jaxqueue lp --json`` give the plan quantities.
ALIASES = {"y_mixed": "y_m", "y_solo": "y_s", "q_prefill": "q_p", "q_decode": "q_d"}


@dataclass(frozen=True)
class RangeDistance:
    """How far simulated values lie from an optimal range ``[low, high]`` (per class).

    Attributes:
        value: the simulated values.
        low, high: the range (from :class:`Face`), so ``low <= high``.
        distance: ``max(low - value, 0, value - high)``, 0 inside the range.
        signed: ``value`` minus the nearest point of the range: < 0 below it, > 0 above it.
        inside: whether ``value`` lies in the range (``distance == 0``).
        se: the standard errors given, or None.
        z: ``distance / se`` (0 inside; inf for a positive distance with ``se == 0``), or None.
        ci: the interval ``(lower, upper)`` of the distance of the *true* mean to the range:
            the image of ``value +- crit * se`` under the distance (its lower end is 0 when that
            interval meets the range), so it covers at least as often as the interval of the
            value does. None without ``se``.
        consistent: whether the interval of the value meets the range (``ci[0] == 0``): the data
            cannot tell the value from some optimal plan. None without ``se``.
    """

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    distance: np.ndarray
    signed: np.ndarray
    inside: np.ndarray
    se: np.ndarray | None = None
    z: np.ndarray | None = None
    ci: tuple[np.ndarray, np.ndarray] | None = None
    consistent: np.ndarray | None = None


def distance_to_range(value, low, high, se=None, *, crit: float = Z95) -> RangeDistance:
    """Distance of ``value`` (optionally with its standard error ``se``) to ``[low, high]``,
    element by element (NumPy broadcasting); zero inside the range. ``crit`` sets the interval
    of the value, ``value +- crit * se`` (default: 95% normal; pass a t quantile for a
    t-interval). See :class:`RangeDistance`.

    Raises:
        ValueError: ``low > high`` somewhere, a negative ``se`` or ``crit``, or a non-finite
            bound.
    """
    v = np.asarray(value, np.float64)
    lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("low and high must be finite")
    if np.any(lo > hi):
        raise ValueError(f"low = {lo} and high = {hi} are invalid: need low <= high")

    def dist(u):
        return np.maximum(np.maximum(lo - u, u - hi), 0.0)

    d = dist(v)
    signed = v - np.clip(v, lo, hi)
    if se is None:
        return RangeDistance(value=v, low=lo, high=hi, distance=d, signed=signed,
                             inside=d == 0.0)
    s = np.asarray(se, np.float64)
    if np.any(s < 0) or not (math.isfinite(crit) and crit >= 0):
        raise ValueError(f"se = {se!r} and crit = {crit!r} are invalid: must be >= 0")
    a, b = v - crit * s, v + crit * s
    lower = np.maximum(np.maximum(lo - b, a - hi), 0.0)  # interval-to-range distance
    upper = np.maximum(dist(a), dist(b))  # the distance is convex: largest at an end
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(d == 0.0, 0.0, d / s)
    return RangeDistance(value=v, low=lo, high=hi, distance=d, signed=signed, inside=d == 0.0,
                         se=s, z=z, ci=(lower, upper), consistent=lower == 0.0)


@dataclass(frozen=True, eq=False)
class Face:
    """The optimal face of a fluid LP: every plan that earns the optimum, per quantity.

    A fluid LP can have many optimal solutions; :func:`solve` returns one vertex of them, which
    no policy has reason to track. A simulated quantity is judged against the whole set: its
    distance to the range ``[low, high]`` the quantity takes over the optimal plans
    (:meth:`distance`), zero inside it.

    Attributes:
        pricing: ``"bundled"`` or ``"separate"``.
        sli: the SLI targets of the LP (None for the plain LPs).
        objective: the optimal value (revenue minus SLI penalties; the revenue without them).
        revenue: ``(smallest, largest)`` revenue per GPU per second over the optimal plans
            (equal ends unless soft SLI targets trade revenue against their penalty).
        low, high: per quantity (:data:`VARIABLES`; arrays ``(I,)``), the smallest and largest
            value of each class over the optimal plans; ``"sum_x"`` (the mixed fraction) too.
        totals: per quantity, ``(smallest, largest)`` of its sum over the classes (the total
            is not the sum of the per-class ends when classes trade off).
        tolerance: the objective's slack that defines "optimal" (``rel_tol * max(1,
            |objective|)``): ranges are exact up to it over the quantity's rate of change.
        vertex: the plan :func:`solve` returns (one point of the face).
        class_names: the classes, in order.
        unique: whether every quantity has one optimal value (every range narrower than
            :data:`UNIQUE_ATOL`).
    """

    pricing: str
    sli: SLI | None
    objective: float
    revenue: tuple[float, float]
    low: Mapping[str, np.ndarray]
    high: Mapping[str, np.ndarray]
    totals: Mapping[str, tuple[float, float]]
    tolerance: float
    vertex: Plan
    class_names: tuple[str, ...]
    unique: bool

    @staticmethod
    def _name(name: str) -> str:
        key = ALIASES.get(name, name)
        if key not in _VARS and key != "sum_x":
            raise ValueError(f"name = {name!r} is invalid: allowed values are "
                             f"{(*_VARS, 'sum_x', *ALIASES)}")
        return key

    def bounds(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of one quantity per class (``"x"``, ``"y_m"`` or ``"y_mixed"``, ...;
        ``"sum_x"`` gives floats)."""
        key = self._name(name)
        return self.low[key], self.high[key]

    def width(self, name: str) -> np.ndarray:
        """``high - low`` of one quantity per class: 0 (up to round-off) where it is unique."""
        lo, hi = self.bounds(name)
        return np.asarray(hi) - np.asarray(lo)

    def total(self, name: str) -> tuple[float, float]:
        """``(smallest, largest)`` of one quantity summed over the classes."""
        key = self._name(name)
        return self.totals["x" if key == "sum_x" else key]

    def free(self, atol: float = UNIQUE_ATOL) -> dict[str, tuple[str, ...]]:
        """The quantities with several optimal values: name -> the classes whose range is wider
        than ``atol``."""
        out = {}
        for k in _VARS:
            wide = tuple(c for c, w in zip(self.class_names, self.width(k), strict=True)
                         if w > atol)
            if wide:
                out[k] = wide
        return out

    def distance(self, name: str, value, se=None, *, crit: float = Z95) -> RangeDistance:
        """Distance of simulated per-class values of one quantity (with their standard errors,
        optionally) to its optimal range, zero inside it: :func:`distance_to_range`."""
        lo, hi = self.bounds(name)
        return distance_to_range(value, lo, hi, se, crit=crit)

    def as_dict(self) -> dict:
        """A JSON-ready summary: per quantity and class ``[low, high]``, the totals, the
        objective, the revenue range, ``unique`` and ``tolerance``."""
        return {"pricing": self.pricing, "objective": self.objective,
                "revenue": list(self.revenue), "unique": self.unique,
                "tolerance": self.tolerance,
                "ranges": {k: {c: [float(self.low[k][i]), float(self.high[k][i])]
                               for i, c in enumerate(self.class_names)} for k in _VARS},
                "sum_x": [float(self.low["sum_x"]), float(self.high["sum_x"])],
                "totals": {k: list(v) for k, v in self.totals.items()}}


def face(model: Model, pricing: str = "bundled", *, sli: SLI | None = None,
         rel_tol: float = 1e-10) -> Face:
    """The optimal face of the LP :func:`solve` solves with the same arguments (bundled,
    separate, or SLI-aware with hard or soft targets).

    Every plan quantity of every class is minimized and maximized over the feasible plans whose
    objective is within ``tol = rel_tol * max(1, |optimum|)`` of the optimum, as are the totals
    over the classes and, with soft SLI targets, the revenue (about 14 + 10I small LPs). A soft
    TPOT target makes the objective concave rather than linear in the mixed fraction; where its
    penalty is active the optimal mixed fraction is unique and the face is that of the LP with
    it fixed (see :func:`optima`).

    Raises:
        ValueError, FluidError: as :func:`solve`.
    """
    _check_pricing(pricing, sli)
    plan, low, high, tol = _optimal_set(model, pricing, sli, rel_tol, extra=True)
    # Round-off can leave the ends of a unique quantity a hair apart in the wrong order.
    ends = {k: (np.minimum(low[k], high[k]), np.maximum(low[k], high[k])) for k in low}
    lo = {k: _frozen(ends[k][0]) for k in _VARS}
    hi = {k: _frozen(ends[k][1]) for k in _VARS}
    lo["sum_x"], hi["sum_x"] = (float(e) for e in ends["sum_x"])
    totals = {"x": (lo["sum_x"], hi["sum_x"])}
    totals.update({k: tuple(float(e) for e in ends[f"total_{k}"]) for k in _VARS if k != "x"})
    revenue = (tuple(float(e) for e in ends["revenue"]) if "revenue" in ends
               else (plan.revenue, plan.revenue))
    unique = all(float(np.max(np.asarray(hi[k]) - np.asarray(lo[k]))) <= UNIQUE_ATOL
                 for k in (*_VARS, "sum_x"))
    return Face(pricing=plan.pricing, sli=sli, objective=plan.objective, revenue=revenue,
                low=lo, high=hi, totals=totals, tolerance=tol, vertex=plan,
                class_names=tuple(model.class_names), unique=unique)


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a
