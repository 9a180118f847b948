"""The gap map's judges: where, over Fig. 9's grid, a simulated policy earns less than R*.

Beyond the paper: ``experiments/gap_map.py`` simulates Gate-and-Route and the other policies at
each grid point and a few sizes n, and records each one's relative gap ``1 - revenue / R*``.
Here the gap is placed against :data:`GAP_MARGIN` (:func:`gap_flag`), grouped into regions of
the grid (:func:`gap_regions`), its shrinking between two sizes measured (:func:`gap_ratio`),
and two claims judged: Gate-and-Route within the margin at a size n (:func:`judge_gap_within`)
and its gap tending to zero at every point (:func:`judge_gap_limit`, Theorem 4.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    LIMIT_REVENUE,
    VERDICTS,
    Z95,
    Claim,
    make_claim,
    trend_rule,
)

__all__ = ["GAP_MARGIN", "flagged_runs", "fmt_num", "fmt_ratio", "fmt_runs", "gap_flag",
           "gap_ratio", "gap_regions", "judge_gap_limit", "judge_gap_within", "worst_gap"]

#: A policy is "more than GAP_MARGIN below R*" at a grid point when the 95% interval of its
#: relative gap 1 - revenue / R* lies above GAP_MARGIN, "within" when it lies below; there the
#: LP's sensitivity curves (Fig. 9) predict what a simulated cluster earns to within the margin.
GAP_MARGIN = 0.05


def gap_flag(mean, ci, margin: float = GAP_MARGIN) -> str:
    """Where a relative gap with a 95% half-width ``ci`` lies against ``margin``: ``"above"``
    (``mean - ci > margin``), ``"below"`` (``mean + ci <= margin``) or ``"across"`` (the
    interval contains the margin; also without an interval, ``ci`` None or NaN)."""
    if mean is None:
        return "across"
    ci = float("nan") if ci is None else float(ci)
    if not math.isfinite(ci):
        return "across"
    if mean - ci > margin:
        return "above"
    return "below" if mean + ci <= margin else "across"


def flagged_runs(values: Sequence[float], flags: Sequence[bool]) -> list[tuple[float, float]]:
    """The maximal runs of consecutive grid points (in increasing value) whose flag is set, each
    as ``(first value, last value)``; a run of one point has equal ends."""
    order = np.argsort(np.asarray(values, np.float64), kind="stable")
    runs, start, last = [], None, None
    for k in order:
        v = float(values[k])
        if flags[k]:
            start = v if start is None else start
            last = v
        elif start is not None:
            runs.append((start, last))
            start = None
    if start is not None:
        runs.append((start, last))
    return runs


def fmt_num(v: float) -> str:
    """``6.31e-4`` below 0.001, three significant digits otherwise."""
    v = float(v)
    return f"{v:.2e}".replace("e-0", "e-") if v != 0 and abs(v) < 1e-3 else f"{v:.3g}"


def fmt_runs(name: str, runs: Sequence[tuple[float, float]]) -> str:
    """``B 2-8, 32`` (each run as its ends, a single point as itself); empty without runs."""
    if not runs:
        return ""
    return f"{name} " + ", ".join(fmt_num(a) if a == b else f"{fmt_num(a)}-{fmt_num(b)}"
                                  for a, b in runs)


def gap_regions(points: Sequence[dict], n: int, policy: str | None,
                margin: float = GAP_MARGIN) -> dict[str, str]:
    """Per flag (``above``, ``below``, ``across``; :func:`gap_flag`), the grid regions where
    ``policy``'s gap at n GPUs has it, as text (``B 2-8; beta 0.000398-0.001``). ``policy``
    None: the best simulated policy at each point (the highest mean revenue of all run)."""
    by_param: dict[str, list] = {}
    for p in points:
        run = p["runs"][str(n)]
        if policy is None:
            name = max((k for k in run if "revenue" in run[k]),
                       key=lambda k: run[k]["revenue"]["mean"])
        else:
            name = policy
        g = run[name]["gap"]
        by_param.setdefault(p["parameter"], []).append((p["value"], gap_flag(g["mean"],
                                                                            g["ci95"], margin)))
    out = {}
    for flag in ("above", "below", "across"):
        parts = [fmt_runs(param, flagged_runs([v for v, _ in rows], [f == flag for _, f in rows]))
                 for param, rows in by_param.items()]
        out[flag] = "; ".join(x for x in parts if x)
    return out


def gap_ratio(n1: float, g1: float, se1: float, n2: float, g2: float,
              se2: float) -> dict[str, Any]:
    """How much a gap shrinks from n1 to n2 GPUs: ``ratio = g2 / g1`` with a 95% interval (the
    delta method on ``log ratio``, the two gaps independent) and the rate ``c`` it implies if
    ``gap = b n^-c`` (``c = -log ratio / log(n2 / n1)``), with the interval that maps onto.

    Two sizes test no form: ``c`` assumes a limit of zero, and a positive limit would show as a
    slower rate. Returns ``ratio: None`` with a ``note`` when a gap is not above twice its
    standard error (its log is undefined or meaningless) or ``n2 <= n1``.
    """
    out = {"n": [n1, n2], "ratio": None, "note": "two sizes: no test of the form gap = b n^-c"}
    if not n2 > n1:
        return {**out, "note": "needs two sizes n2 > n1"}
    if not (g1 > 2 * se1 and g2 > 2 * se2):
        return {**out, "note": f"a gap within two standard errors of zero (n = {n1}: "
                               f"{g1:.4f} ± {se1:.4f}, n = {n2}: {g2:.4f} ± {se2:.4f})"}
    log_r = math.log(g2 / g1)
    half = Z95 * math.hypot(se1 / g1, se2 / g2)
    span = math.log(n2 / n1)
    return {**out, "ratio": math.exp(log_r), "low": math.exp(log_r - half),
            "high": math.exp(log_r + half), "rate": -log_r / span,
            "rate_low": -(log_r + half) / span, "rate_high": -(log_r - half) / span}


def fmt_ratio(r: dict[str, Any]) -> str:
    """``0.52 [0.48, 0.56], c = 0.41 [0.36, 0.46]`` or the note."""
    if r.get("ratio") is None:
        return r.get("note", "-")
    return (f"{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}], c = {r['rate']:.2f} "
            f"[{r['rate_low']:.2f}, {r['rate_high']:.2f}]")


def worst_gap(points, n, policy) -> str:
    """``largest gap 7.2% ± 0.4% at beta = 0.001``: ``policy``'s largest gap at n GPUs."""
    p = max(points, key=lambda q: q["runs"][str(n)][policy]["gap"]["mean"])
    g = p["runs"][str(n)][policy]["gap"]
    return (f"largest gap {100 * g['mean']:.1f}% ± {100 * (g['ci95'] or 0):.1f}% at "
            f"{p['parameter']} = {fmt_num(p['value'])}")


def judge_gap_within(n: int, points: Sequence[dict], policy: str = "gate-and-route") -> Claim:
    """The gap map at n GPUs: Gate-and-Route within ``GAP_MARGIN`` of R* over the whole grid
    (so the LP's sensitivity curves predict what it earns there)."""
    flags = [gap_flag(p["runs"][str(n)][policy]["gap"]["mean"],
                      p["runs"][str(n)][policy]["gap"]["ci95"]) for p in points]
    ok = (FAILS if "above" in flags else HOLDS if all(f == "below" for f in flags)
          else INCONCLUSIVE)
    reg = gap_regions(points, n, policy)
    return make_claim(
        f"gap-within-n{n}", "gap map",
        f"At n = {n} Gate-and-Route earns within {GAP_MARGIN:.0%} of R* at every point of "
        "Fig. 9's grid, so the LP's sensitivity curves predict what a simulated cluster earns "
        "(a jaxqueue check at finite n; the paper's Theorem 4.1 is a limit).", ok,
        f"per point, the 95% interval of 1 - revenue / R*: holds if every interval lies below "
        f"{GAP_MARGIN:.0%}, does not hold if any lies above it, inconclusive otherwise",
        f"{len(points)} points; more than {GAP_MARGIN:.0%} below R* at: "
        f"{reg['above'] or 'none'}; within at: {reg['below'] or 'none'}; undecided at: "
        f"{reg['across'] or 'none'}; {worst_gap(points, n, policy)}")


def judge_gap_limit(points: Sequence[dict], gpus: Sequence[int]) -> Claim:
    """Theorem 4.1 on the grid: Gate-and-Route's gap tends to zero at every point
    (:func:`fit_limit` per point; two or three sizes are inconclusive)."""
    verdicts = [p["rate"]["verdict"] for p in points]
    ok = (FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts)
          else INCONCLUSIVE)
    ratios = [p["rate"]["ratio"] for p in points if p["rate"]["ratio"].get("ratio") is not None]
    if ratios:
        rates = [r["rate"] for r in ratios]
        spread = (f"gap(n = {gpus[-1]}) / gap(n = {gpus[0]}) over the {len(ratios)} points "
                  f"with both gaps positive: {min(r['ratio'] for r in ratios):.2f} to "
                  f"{max(r['ratio'] for r in ratios):.2f} (median "
                  f"{float(np.median([r['ratio'] for r in ratios])):.2f}), implied rates "
                  f"n^-c with c from {min(rates):.2f} to {max(rates):.2f}")
    else:
        spread = "no point with both gaps above two standard errors"
    remark = (f"{len(gpus)} sizes: no test of the form a + b n^-c, so no verdict; "
              if len(gpus) < 4 else "")
    return make_claim(
        "gap-limit", "gap map",
        "Gate-and-Route's gap to R* closes as n grows at every point of Fig. 9's grid "
        "(Theorem 4.1).", ok,
        trend_rule(f"at each point, the relative gap 1 - revenue / R* over n = "
                   f"{', '.join(map(str, gpus))}", f"{LIMIT_REVENUE:.0%}")
        + "; holds if it holds at every point, does not hold if it does not at any",
        remark + spread + "; verdicts per point: " + ", ".join(
            f"{verdicts.count(v)} {v}" for v in VERDICTS if v in verdicts))
