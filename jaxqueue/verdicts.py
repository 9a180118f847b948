"""How a claim's verdict is decided: the verdicts, the thresholds, and the trend fits behind them.

A :class:`Claim` is one of the paper's claims with its verdict (``holds``, ``does not hold``,
``inconclusive`` or ``not comparable``), the rule applied (its thresholds, stated) and the
evidence (the numbers it used). This module holds the rules every judge
(:mod:`jaxqueue.paper_claims`, :mod:`jaxqueue.gap_claims`) shares. Two kinds:

- a claim about a *planned quantity* (x, y, q of the fluid LP) is judged by the distance of the
  simulated value to the LP's optimal set (:func:`jaxqueue.fluid.face`: the range of every
  variable over all optimal plans, zero inside it), not to the one vertex the solver returned
  (:func:`face_deviation`);
- a claim about a *limit in n* ("converges", "persists", "vanishes") is judged by a trend fitted
  over n (:func:`fit_limit`): the deviation's limit as n -> infinity with a 95% interval, which
  decides *holds*, *does not hold* or *inconclusive* (:func:`trend_verdict`).

Thresholds are fixed here (``TOL_*``, ``LIMIT_*`` and the rules' constants), chosen from what
the claim says, not from the numbers a run produced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _st

from .fluid import distance_to_range

__all__ = ["FAILS", "HOLDS", "INCONCLUSIVE", "LIMIT_LEVEL", "LIMIT_REVENUE", "NOT_COMPARABLE",
           "RATES", "TOL_REVENUE", "TOL_TARGET", "TREND_MIN_N", "VERDICTS", "Z95", "Claim",
           "face_deviation", "fit_limit", "fit_power_law", "fmt_limit", "make_claim",
           "trend_rule", "trend_verdict"]

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_COMPARABLE = "not comparable"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE)

#: Relative L1 distance from an LP target within which a simulated quantity "is at the target".
TOL_TARGET = 0.10
#: Relative gap to R* within which a simulated revenue "attains the LP value".
TOL_REVENUE = 0.03
#: The margin of a limit claim on revenue: a gap whose limit in n is below 1% of R* "tends to
#: zero"; one whose limit is above it tends to a positive value.
LIMIT_REVENUE = 0.01
#: The margin of a limit claim on a level (queue, occupancy, distance to the optimal set), as a
#: fraction of the claim's scale (stated with each claim).
LIMIT_LEVEL = 0.10
#: Rates c of the trend ``d(n) = a + b n^-c`` that :func:`fit_limit` considers: from n^-1/4
#: (slower rates cannot be told from a positive limit over any practical range of n) to n^-1
#: (a bias of order 1/n); the diffusion scale n^-1/2 of many-server queues lies inside.
RATES = tuple(np.round(np.arange(0.25, 1.0001, 0.01), 2))
#: Smallest n a limit claim's trend is fitted on: a + b n^-c describes large systems, and below
#: 20 GPUs the plan's integer rounding dominates (paper-qwen8b: M = 2 mixed GPUs at n = 5), so
#: one curve cannot fit both regimes. Smaller n are shown in the evidence, not fitted.
TREND_MIN_N = 20


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper and its verdict.

    Attributes:
        id: a short identifier (``fig7-gate``).
        figure: the figure or table it belongs to.
        statement: the claim, as the paper makes it.
        verdict: :data:`HOLDS`, :data:`FAILS` or :data:`NOT_COMPARABLE`.
        rule: how the verdict is decided (thresholds).
        evidence: the numbers the rule was applied to.
    """

    id: str
    figure: str
    statement: str
    verdict: str
    rule: str
    evidence: str


def make_claim(id_, figure, statement, ok: bool | str | None, rule, evidence) -> Claim:
    """``ok``: True (holds), False (does not hold), None (not comparable) or a verdict."""
    if isinstance(ok, str):
        verdict = ok
    else:
        verdict = NOT_COMPARABLE if ok is None else (HOLDS if ok else FAILS)
    return Claim(id_, figure, statement, verdict, rule, evidence)


# ---- trends in n and distances to the optimal face --------------------------------------------
def fit_power_law(n: Sequence[float], gap: Sequence[float],
                  se: Sequence[float] | None = None) -> dict[str, Any]:
    """Fits ``gap ~ a n^b`` by weighted least squares of ``log gap`` on ``log n``.

    Only points whose gap is positive by more than two standard errors enter the fit (a log needs
    a positive gap). Weights are ``(gap / se)^2`` (the delta method for ``log gap``); the slope's
    95% interval uses Student's t with ``k - 2`` degrees of freedom and the residual scatter when
    it exceeds the sampling error (a misfit widens the interval, never narrows it).

    Returns:
        ``slope``, ``low``, ``high`` (95% interval), ``intercept`` (log a), ``points`` used, or
        ``slope: None`` with a ``note`` when fewer than three points qualify.
    """
    n, gap = np.asarray(n, np.float64), np.asarray(gap, np.float64)
    se = np.zeros_like(gap) if se is None else np.asarray(se, np.float64)
    se = np.where(np.isfinite(se), se, 0.0)
    use = gap > 2 * se
    if np.sum(use) < 3:
        return {"slope": None, "points": int(np.sum(use)),
                "note": "fewer than 3 n with a gap > 2 standard errors"}
    x, y = np.log(n[use]), np.log(gap[use])
    rel = se[use] / gap[use]
    w = 1.0 / np.maximum(rel, 1e-6) ** 2 if np.all(rel > 0) else np.ones_like(x)
    design = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    coef = cov @ design.T @ (w * y)
    k = len(x)
    resid = y - design @ coef
    scale = max(1.0, float(np.sum(w * resid**2)) / (k - 2)) if k > 2 else 1.0
    half = float(_st.t.ppf(0.975, k - 2) * math.sqrt(cov[1, 1] * scale)) if k > 2 else math.inf
    return {"slope": float(coef[1]), "low": float(coef[1] - half), "high": float(coef[1] + half),
            "intercept": float(coef[0]), "points": int(k)}


#: 95% point of the chi-square distribution with one degree of freedom (a profile interval).
_CHI2_1 = float(_st.chi2.ppf(0.95, 1))
#: 97.5% point of the standard normal distribution (a two-sided 95% interval).
Z95 = float(_st.norm.ppf(0.975))


def fit_limit(n: Sequence[float], d: Sequence[float], se: Sequence[float],
              rates: Sequence[float] = RATES, *, min_n: float = 0) -> dict[str, Any]:
    """The limit as n -> infinity of a deviation ``d(n)`` measured with standard errors ``se``,
    with a 95% interval that covers the unknown rate too.

    Model ``d(n) = a + b n^-c``: ``a`` is the limit. For each rate ``c`` in ``rates``, ``(a, b)``
    are fitted by weighted least squares (weights ``1/se^2``), giving a chi-square. The rates the
    data do not reject are those within the profile bound ``chi2(c) <= min chi2 + 3.84 s^2``;
    the limit's interval is the union, over them, of the 95% intervals of ``a``. A misfit widens
    it: with ``k > 3`` points, when ``min chi2 / (k - 3) = s^2 > 1`` every variance is scaled by
    ``s^2`` (Birge's ratio) and the quantile is Student's t with ``k - 3`` degrees of freedom,
    the normal one otherwise. A standard error of zero is raised to 1e-3 of the largest one (a
    point measured without noise would take all the weight). Sizes below ``min_n`` are left out.

    Returns:
        ``limit`` (``a`` at the best rate), ``low`` and ``high`` (the interval), ``rate`` (the
        best ``c``) and ``rates`` (the smallest and largest ``c`` not rejected), ``b``,
        ``chi2``, ``dof``, ``scale`` (``s^2``) and ``points``; or ``limit: None`` with a
        ``note`` when fewer than three n (at least ``min_n``, with finite values) are given.
    """
    n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
    se = np.asarray(se, np.float64)
    ok = np.isfinite(d) & np.isfinite(se) & (n > 0) & (n >= min_n)
    n, d, se = n[ok], d[ok], se[ok]
    k = int(n.size)
    if k < 3 or np.unique(n).size < 3:
        return {"limit": None, "points": k, "note": "fewer than 3 sizes n: no trend"}
    top = float(np.max(se)) if np.any(se > 0) else 1e-9 * max(1.0, float(np.max(np.abs(d))))
    se = np.maximum(se, 1e-3 * top)
    w = 1.0 / se**2
    fits = []
    for c in rates:
        design = np.stack([np.ones(k), n ** -float(c)], axis=1)
        cov = np.linalg.inv(design.T @ (w[:, None] * design))
        coef = cov @ design.T @ (w * d)
        chi2 = float(np.sum(w * (d - design @ coef) ** 2))
        fits.append((float(c), float(coef[0]), float(coef[1]), float(cov[0, 0]), chi2))
    chi2_min = min(f[4] for f in fits)
    dof = k - 3 if len(rates) > 1 else k - 2
    scale = max(1.0, chi2_min / dof) if dof > 0 else 1.0
    crit = float(_st.t.ppf(0.975, dof)) if scale > 1.0 else Z95
    kept = [f for f in fits if f[4] <= chi2_min + _CHI2_1 * scale]
    best = min(fits, key=lambda f: f[4])
    half = [crit * math.sqrt(scale * f[3]) for f in kept]
    return {"limit": best[1], "low": min(f[1] - h for f, h in zip(kept, half, strict=True)),
            "high": max(f[1] + h for f, h in zip(kept, half, strict=True)), "rate": best[0],
            "rates": [min(f[0] for f in kept), max(f[0] for f in kept)], "b": best[2],
            "chi2": chi2_min, "dof": dof, "scale": scale, "points": k}


def trend_verdict(fit: dict[str, Any], margin: float, expect: str = "zero") -> str:
    """The verdict on a limit claim from :func:`fit_limit`'s interval ``[low, high]``.

    ``expect="zero"`` (the deviation vanishes as n grows): *holds* when ``high < margin``,
    *does not hold* (it tends to a positive value) when ``low > margin``, *inconclusive*
    otherwise (the interval contains the margin: the sizes run cannot decide).
    ``expect="positive"`` (it persists): the same with holds and does not hold exchanged.
    Three sizes are always *inconclusive*: the curve's three unknowns (a, b, c) then pass
    through every point, so nothing tests whether the form fits (with one rate ``c`` fixed
    the fit has a degree of freedom and decides).
    """
    if expect not in ("zero", "positive"):
        raise ValueError(f"expect = {expect!r} is invalid: must be 'zero' or 'positive'")
    if fit.get("limit") is None or fit["dof"] < 1:
        return INCONCLUSIVE
    if fit["high"] < margin:
        return HOLDS if expect == "zero" else FAILS
    if fit["low"] > margin:
        return FAILS if expect == "zero" else HOLDS
    return INCONCLUSIVE


def trend_rule(quantity: str, margin: str, expect: str = "zero") -> str:
    """The text of a limit rule (:func:`fit_limit`, :func:`trend_verdict`)."""
    lead = (f"{quantity} fitted over the sizes n >= {TREND_MIN_N} as a + b n^-c (weighted "
            "least squares, every "
            f"rate c in [{RATES[0]:g}, {RATES[-1]:g}] the data do not reject kept), the limit a "
            f"with a 95% interval [lo, hi]; margin m = {margin}")
    if expect == "zero":
        return (f"{lead}: holds (tends to zero) if hi < m, does not hold (tends to a positive "
                "value) if lo > m, inconclusive otherwise or with fewer than 4 sizes")
    return (f"{lead}: holds (persists) if lo > m, does not hold (tends to zero) if hi < m, "
            "inconclusive otherwise or with fewer than 4 sizes")


def fmt_limit(fit: dict[str, Any], digits: int = 3) -> str:
    """``limit a = .. [95%: lo, hi], best rate n^-c`` (or why there is no fit)."""
    if fit.get("limit") is None:
        return "no trend (" + fit.get("note", "") + ")"
    lo, hi = fit["rates"]
    rates = f"n^-{fit['rate']:g}" + (f" (rates n^-{lo:g} to n^-{hi:g} kept)" if lo < hi else "")
    return (f"limit {fit['limit']:.{digits}f} [95%: {fit['low']:.{digits}f}, "
            f"{fit['high']:.{digits}f}], best fit {rates}")


def face_deviation(mean, se, low, high, scale: float) -> tuple[float, float]:
    """Distance of simulated means (with standard errors) to an optimal range, summed over the
    entries and divided by ``scale``; and its standard error.

    Each entry's distance to ``[low, high]`` is zero inside (:func:`jaxqueue.fluid.
    distance_to_range`). The ranges are those of each variable over the LP's optimal face, so
    the sum is the L1 distance to the face's bounding box, a lower bound on the distance to the
    face itself. The distance is 1-Lipschitz in each mean, so its standard error is at most the
    root sum of squares of the means' standard errors (used as is).
    """
    mean, se = np.ravel(np.asarray(mean, np.float64)), np.ravel(np.asarray(se, np.float64))
    r = distance_to_range(mean, np.ravel(low), np.ravel(high))
    return (float(np.sum(r.distance) / scale),
            float(np.sqrt(np.sum(np.nan_to_num(se) ** 2)) / scale))

