"""The judges of the paper's own claims: Figs. 2, 4-6, 7, 8, 9-10 and Table 1 (Sec. 6, EC 14).

Each judge is a function of plain numbers (the series an experiment measured, the LP values it
solved) that returns one or more :class:`~jaxqueue.verdicts.Claim`, with the rule of
:mod:`jaxqueue.verdicts` it applied and the evidence. Reading the numbers out of the
experiments' JSON is :mod:`jaxqueue.results`' job; a few helpers here (:func:`face_cells`,
:func:`policy_table`, :func:`collapse_rows`) are shared with the experiments' tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

from .fluid import distance_to_range
from .verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    LIMIT_LEVEL,
    LIMIT_REVENUE,
    TOL_REVENUE,
    TREND_MIN_N,
    Z95,
    Claim,
    fit_limit,
    fmt_limit,
    make_claim,
    trend_rule,
    trend_verdict,
)

__all__ = ["COLLAPSE", "collapse_rows", "face_cells", "judge_backlog", "judge_bands",
           "judge_batch", "judge_beta", "judge_convergence", "judge_decode_buffer",
           "judge_dolly", "judge_fairness", "judge_occupancy", "judge_policies",
           "judge_price_ratio", "judge_queues", "judge_sli_points", "judge_tpot", "policy_table"]


# ---- Fig. 2 -----------------------------------------------------------------------------------
def judge_backlog(gpus_sep, backlog_sep, se_sep, gpus_bun, backlog_bun, se_bun,
                  least_backlog: float) -> list[Claim]:
    """Fig. 2 as the paper states it: under separate pricing with Prioritize-and-Route the decode
    backlog persists as n grows; under bundled pricing with Gate-and-Route it vanishes.

    Each is a limit claim on the total decode queue per GPU (both classes), judged by its trend
    over n (:func:`fit_limit`). The margin is ``LIMIT_LEVEL`` times ``least_backlog``, the
    smallest total decode backlog over the separate LP's optimal face (every separate optimum
    holds at least that much).
    """
    margin = LIMIT_LEVEL * least_backlog
    where = (f"{margin:.4f} ({LIMIT_LEVEL:.0%} of {least_backlog:.3f}, the least total decode "
             "backlog per GPU of any optimum of the separate LP)")
    out = []
    for id_, policy, gpus, q, se, expect, statement in (
            ("fig2-separate-backlog", "Prioritize-and-Route", gpus_sep, backlog_sep, se_sep,
             "positive", "Under separate pricing, Prioritize-and-Route keeps a decode backlog "
             "that persists as n grows."),
            ("fig2-bundled-backlog", "Gate-and-Route", gpus_bun, backlog_bun, se_bun, "zero",
             "Under bundled pricing, Gate-and-Route's decode backlog vanishes as n grows.")):
        fit = fit_limit(gpus, q, se, min_n=TREND_MIN_N)
        out.append(make_claim(
            id_, "Fig. 2", statement, trend_verdict(fit, margin, expect),
            trend_rule(f"{policy}'s total decode queue per GPU q_d(n)", where, expect),
            "q_d per GPU " + ", ".join(f"{v:.3f} ± {Z95 * e:.3f} (n = {n})"
                                       for n, v, e in zip(gpus, q, se, strict=True))
            + f"; {fmt_limit(fit)}"))
    return out


def face_cells(mean, low, high, se, crit: float = Z95) -> list[list[str]]:
    """Per class: the simulated value with its interval (``crit * se``), its range over the
    optimal face, the distance to that range (zero inside) with its interval
    (:func:`jaxqueue.fluid.distance_to_range`), and where the value lies (``inside``: its
    interval meets the range; ``above``, ``below``)."""
    mean, se = np.asarray(mean, np.float64), np.asarray(se, np.float64)
    r = distance_to_range(mean, low, high, np.nan_to_num(se), crit=crit)
    return [[f"{mean[i]:.3f} ± {crit * se[i]:.3f}", f"[{r.low[i]:.3f}, {r.high[i]:.3f}]",
             f"{r.distance[i]:.3f} [{r.ci[0][i]:.3f}, {r.ci[1][i]:.3f}]",
             "inside" if r.consistent[i] else ("above" if r.signed[i] > 0 else "below")]
            for i in range(mean.size)]


# ---- Figs. 4-6 --------------------------------------------------------------------------------
def judge_convergence(gpus, gaps, ses, rstar) -> Claim:
    """Fig. 4: revenue per GPU converges to R* (the gap's limit in n is below 1% of R*)."""
    fit = fit_limit(gpus, gaps, ses, min_n=TREND_MIN_N)
    return make_claim(
        "fig4-revenue", "Fig. 4",
        "Per-GPU revenue of Gate-and-Route converges to the LP bound R* as n grows.",
        trend_verdict(fit, LIMIT_REVENUE * rstar),
        trend_rule("the gap R* - revenue per GPU", f"{LIMIT_REVENUE * rstar:.3f} "
                   f"({LIMIT_REVENUE:.0%} of R*)"),
        f"R* = {rstar:.3f}; gap {gaps[0]:.2f} at n = {gpus[0]} -> {gaps[-1]:.2f} at n = "
        f"{gpus[-1]} ({100 * gaps[-1] / rstar:.2f}% of R*); {fmt_limit(fit)}")


def judge_bands(gpus, ci) -> Claim:
    """Fig. 4: the confidence bands narrow with n."""
    ok = bool(ci[-1] <= 0.5 * ci[0])
    return make_claim(
        "fig4-bands", "Fig. 4", "The revenue bands (across seeds) narrow as n grows.", ok,
        "95% half-width at the largest n at most half that at the smallest n",
        f"half-width {ci[0]:.3f} at n = {gpus[0]} -> {ci[-1]:.3f} at n = {gpus[-1]}")


def _series(gpus, dev, se) -> str:
    return ", ".join(f"{d:.3f} ± {Z95 * e:.3f} (n = {n})"
                     for n, d, e in zip(gpus, dev, se, strict=True))


def judge_queues(gpus, queue_dev, queue_se) -> Claim:
    """Fig. 4: the normalised queues settle in the fluid LP's optimal set."""
    fit = fit_limit(gpus, queue_dev, queue_se, min_n=TREND_MIN_N)
    return make_claim(
        "fig4-queues", "Fig. 4",
        "Normalised queues (Q/n) settle at the fluid targets.", trend_verdict(fit, LIMIT_LEVEL),
        trend_rule("the L1 distance of (q_p, q_d) per class to their ranges over the bundled "
                   "LP's optimal face, over the total planned queue,", f"{LIMIT_LEVEL:.0%}"),
        f"distance {_series(gpus, queue_dev, queue_se)}; {fmt_limit(fit)}")


def judge_decode_buffer(gpus, decode_queue, decode_se, planned_queue) -> Claim:
    """Fig. 4: the decode buffer is negligible (its limit in n is at most 10% of the planned
    queue)."""
    fit = fit_limit(gpus, decode_queue, decode_se, min_n=TREND_MIN_N)
    margin = LIMIT_LEVEL * planned_queue
    return make_claim(
        "fig4-decode", "Fig. 4", "The decode buffer is negligible (q_d ~ 0, as planned).",
        trend_verdict(fit, margin),
        trend_rule("the simulated decode queue per GPU", f"{margin:.4f} ({LIMIT_LEVEL:.0%} of "
                   "the planned queue sum(q_p* + q_d*))"),
        f"q_d per GPU {_series(gpus, decode_queue, decode_se)}; {fmt_limit(fit)}")


def judge_occupancy(figure, router, gpus, x_dev, x_se, y_dev, y_se,
                    expect_y: bool) -> list[Claim]:
    """Figs. 5-6: x tends to the LP's optimal x (both routers); the per-class decode
    occupancies (y_m, y_s) tend to their optimal ranges only with the SLI router. Distances are
    to the ranges over the optimal face (the LP leaves the split of y between classes free)."""
    x_fit = fit_limit(gpus, x_dev, x_se, min_n=TREND_MIN_N)
    y_fit = fit_limit(gpus, y_dev, y_se, min_n=TREND_MIN_N)
    x_verdict = trend_verdict(x_fit, LIMIT_LEVEL)
    y_name = ("the L1 distance of (y_m, y_s) per class to their ranges over the optimal face, "
              "over sum(y_m* + y_s*),")
    x_name = "the L1 distance of x to x* (unique on the optimal face), over sum(x*),"
    if expect_y:
        y_verdict = trend_verdict(y_fit, LIMIT_LEVEL)
        both = (HOLDS if x_verdict == y_verdict == HOLDS else
                FAILS if FAILS in (x_verdict, y_verdict) else INCONCLUSIVE)
        return [make_claim(
            "fig6-sli-router", figure,
            "With the SLI-aware router both the prefill occupancy x and the per-class decode "
            "occupancies (y_m, y_s) converge to the LP plan.", both,
            "both of: " + trend_rule(x_name, f"{LIMIT_LEVEL:.0%}") + "; and the same for "
            + y_name + " (holds if both hold, does not hold if either does not)",
            f"x distance {_series(gpus, x_dev, x_se)}; {fmt_limit(x_fit)} ({x_verdict}); "
            f"y distance {_series(gpus, y_dev, y_se)}; {fmt_limit(y_fit)} "
            f"({trend_verdict(y_fit, LIMIT_LEVEL)})")]
    return [
        make_claim(
            "fig5-x", figure, f"With the {router} router the prefill occupancy X_i/n "
            "converges to x_i*.", x_verdict, trend_rule(x_name, f"{LIMIT_LEVEL:.0%}"),
            f"x distance {_series(gpus, x_dev, x_se)}; {fmt_limit(x_fit)}"),
        make_claim(
            "fig5-y", figure, f"With the {router} router the per-class decode occupancy does "
            "not match the LP split (y_m, y_s).",
            trend_verdict(y_fit, LIMIT_LEVEL, "positive"),
            trend_rule(y_name, f"{LIMIT_LEVEL:.0%}", "positive"),
            f"y distance {_series(gpus, y_dev, y_se)}; {fmt_limit(y_fit)}")]


# ---- Fig. 7 -----------------------------------------------------------------------------------
def policy_table(norm: dict[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Per policy: grid mean and sd over instances of the normalised revenue, instances won
    (highest mean), and the mean margin over the runner-up where it wins."""
    names = list(norm)
    mat = np.array([norm[p] for p in names], np.float64)  # (policies, instances)
    best = np.argmax(mat, axis=0)
    ordered = np.sort(mat, axis=0)
    margin = ordered[-1] - ordered[-2] if len(names) > 1 else np.zeros(mat.shape[1])
    out = {}
    for k, p in enumerate(names):
        won = best == k
        out[p] = {"mean": float(mat[k].mean()),
                  "sd": float(mat[k].std(ddof=1)) if mat.shape[1] > 1 else float("nan"),
                  "min": float(mat[k].min()), "wins": int(won.sum()),
                  "win_margin": float(margin[won].mean()) if won.any() else float("nan")}
    return out


def _mean_ci(values) -> tuple[float, float]:
    """The mean and the half-width of its 95% t-interval (NaN with one value)."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(np.mean(values)), float("nan")
    return (float(values.mean()),
            float(_st.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)))


def judge_policies(n: int, norm: dict[str, Sequence[float]]) -> list[Claim]:
    """Fig. 7 at n GPUs, from each policy's per-instance mean normalised revenue (same
    instances, common random numbers)."""
    fig = "Fig. 7"
    fi, gi = np.asarray(norm["fi-wsp"]), np.asarray(norm["gi-wsp"])
    fg, gg = np.asarray(norm["fg-sp"]), np.asarray(norm["gate-and-route"])
    k = fi.size
    mean, ci = _mean_ci(gi - fi)
    gate = make_claim(
        f"fig7-gate-n{n}", fig, f"The gate alone helps: GI-WSP earns more than FI-WSP (n = {n}).",
        bool(mean - ci > 0) if k > 1 else None,
        "mean over instances of GI-WSP - FI-WSP (normalised revenue) has a 95% t-interval "
        "above 0",
        f"{k} instances: GI - FI = {mean:+.4f} ± {ci:.4f}; GI ahead on "
        f"{int(np.sum(gi > fi))}/{k}")
    hurt = fg - fi < -0.01
    planning = make_claim(
        f"fig7-planning-n{n}", fig,
        f"Static planning alone can hurt: FG-SP is below FI-WSP on some instances (n = {n}).",
        bool(hurt.sum() >= max(1, math.ceil(0.1 * k))),
        "FG-SP below FI-WSP by more than 0.01 of R* on at least 10% of the instances",
        f"FG below FI by > 0.01 on {int(hurt.sum())}/{k} instances; mean FG - FI = "
        f"{float(np.mean(fg - fi)):+.4f}")
    table = policy_table(norm)
    others = max(v["mean"] for p, v in table.items() if p != "gate-and-route")
    top = max(table, key=lambda p: table[p]["mean"])
    calm = min(table, key=lambda p: table[p]["sd"])
    best = make_claim(
        f"fig7-best-n{n}", fig,
        f"GG-SP (Gate-and-Route) is the best policy, with the lowest spread (n = {n}).",
        bool(top == "gate-and-route" and calm == "gate-and-route") if k > 1 else None,
        "GG-SP has the highest mean normalised revenue over the grid and the smallest standard "
        "deviation over instances",
        "; ".join(f"{p}: {v['mean']:.4f} (sd {v['sd']:.4f}, wins {v['wins']})"
                  for p, v in table.items())
        + f"; GG-SP - best other = {float(np.mean(gg)) - others:+.4f}")
    return [gate, planning, best]


#: A grid instance where a policy earns less than this fraction of R* "collapses"; the report
#: lists each one with the numbers that explain it.
COLLAPSE = 0.5


def collapse_rows(r: dict, threshold: float = COLLAPSE) -> list[list[str]]:
    """Fig. 7's grid instances where a policy earns less than ``threshold`` of R*, with the
    numbers that explain it: the instance's beta, prefills in service and decode backlog per
    GPU against the plan, and the replications rerun after a FCFS ring overflow."""
    rows = []
    for grid in r["grids"]:
        for policy, v in grid["policies"].items():
            for k, value in enumerate(v["instance_mean"]):
                if value is None or value >= threshold:
                    continue
                inst = r["instances"][k]
                x = (v.get("x_total") or [None] * (k + 1))[k]
                qd = (v.get("q_decode_total") or [None] * (k + 1))[k]
                rerun = (v.get("rerun_reps") or [None] * (k + 1))[k]
                rows.append([grid["gpus"], policy, k, f"{inst['beta']:.3g}", f"{value:.3f}",
                             "-" if x is None else f"{x:.3f}", f"{inst['mixed_fraction']:.3f}",
                             "-" if qd is None else f"{qd:.3f}",
                             f"{inst.get('lp_decode_queue', 0.0):.3f}",
                             "-" if rerun is None else (", ".join(map(str, rerun)) or "none")])
    return rows


# ---- Fig. 8 -----------------------------------------------------------------------------------
def judge_fairness(kind: str, values, revenue, rstar) -> Claim:
    """Fig. 8: prefill fairness is steep (loss at eta = 0 >= 20% of R*); decode fairness is
    nearly flat (loss at eta = 0 <= 5%)."""
    values, revenue = np.asarray(values, float), np.asarray(revenue, float)
    loss = (rstar - revenue[np.argmin(values)]) / rstar
    if kind == "prefill_fairness":
        return make_claim(
            "fig8-prefill", "Fig. 8", "Revenue falls steeply as prefill fairness tightens.",
            bool(loss >= 0.20), "LP revenue at eta_1 = 0 at least 20% below R*",
            f"R* = {rstar:.2f}; revenue {revenue[np.argmin(values)]:.2f} at eta_1 = "
            f"{values.min():g} (loss {loss:.1%})")
    return make_claim(
        "fig8-decode", "Fig. 8", "Revenue is nearly flat in the decode-fairness target.",
        bool(loss <= 0.05), "LP revenue at eta_2 = 0 at most 5% below R*",
        f"R* = {rstar:.2f}; revenue {revenue[np.argmin(values)]:.2f} at eta_2 = "
        f"{values.min():g} (loss {loss:.1%})")


def judge_tpot(values, revenue, shadow, rstar, inv_gamma) -> Claim:
    """Fig. 8: the TPOT cost explodes as eta_3 -> 1/gamma."""
    values, revenue, shadow = (np.asarray(a, float) for a in (values, revenue, shadow))
    k = int(np.argmin(values))
    binding = revenue < rstar * (1 - 1e-6)
    typical = float(np.median(shadow[binding])) if binding.any() else float("nan")
    ok = bool(revenue[k] <= 0.5 * rstar and values[k] <= 1.01 * inv_gamma
              and shadow[k] >= 3 * typical)
    return make_claim(
        "fig8-tpot", "Fig. 8", "The revenue cost of the TPOT target explodes as eta_3 -> 1/gamma.",
        ok, "within 1% above 1/gamma the LP revenue is at most half of R* and the shadow price "
        "at least 3x its median over the binding targets",
        f"1/gamma = {inv_gamma:.5f} s; at eta_3 = {values[k]:.5f}: revenue {revenue[k]:.2f} "
        f"({revenue[k] / rstar:.1%} of R*), shadow price {shadow[k]:.4g} vs median "
        f"{typical:.4g}")


def judge_sli_points(points: Sequence[dict]) -> Claim:
    """Fig. 8: simulated SLI-aware Gate-and-Route points lie on the LP curves and meet their
    targets."""
    bad = []
    for p in points:
        rel = abs(p["revenue_sim"] - p["revenue_lp"]) / p["revenue_lp"]
        slack = p["target"] + 0.05 * p["sli_range"]
        if rel > TOL_REVENUE or p["achieved"] > slack:
            bad.append(f"{p['sli']} = {p['target']:g}: revenue {p['revenue_sim']:.1f} vs LP "
                       f"{p['revenue_lp']:.1f}, achieved {p['achieved']:.4g}")
    worst = max(abs(p["revenue_sim"] - p["revenue_lp"]) / p["revenue_lp"] for p in points)
    return make_claim(
        "fig8-simulated", "Fig. 8",
        "Simulated SLI-aware Gate-and-Route lies on the LP curves and meets the SLI targets.",
        not bad, f"every simulated point within {TOL_REVENUE:.0%} of the LP revenue at its "
        "target, and its achieved SLI at most the target plus 5% of that SLI's range",
        f"{len(points)} points, largest revenue gap {worst:.1%}"
        + ("; off: " + "; ".join(bad) if bad else ""))


# ---- Figs. 9-10 -------------------------------------------------------------------------------
def judge_batch(B, revenue) -> Claim:
    B, revenue = np.asarray(B, float), np.asarray(revenue, float)
    sat = float(B[np.argmax(revenue >= 0.99 * revenue.max())])
    return make_claim(
        "fig9-batch", "Fig. 9", "Revenue saturates near B = 16.", bool(12 <= sat <= 24),
        "the smallest B reaching 99% of the largest LP revenue over the B grid lies in [12, 24]",
        f"B grid {int(B.min())}..{int(B.max())}; 99% reached at B = {sat:g}; revenue at B = 16 "
        f"{float(np.interp(16, B, revenue)):.2f}, max {revenue.max():.2f}")


def judge_beta(ranges: dict[str, float]) -> Claim:
    """``ranges``: relative revenue range (max - min) / max of each parameter over the paper's
    Sec. 6.3 ranges."""
    top = max(ranges, key=ranges.get)
    return make_claim(
        "fig9-beta", "Fig. 9", "Revenue is very sensitive to beta.",
        bool(top == "beta" and ranges["beta"] >= 0.20),
        "over the paper's parameter ranges (alpha 0.015-0.02, beta 1e-5-1e-3, gamma 10-50), "
        "beta moves the LP revenue the most, by at least 20%",
        ", ".join(f"{k}: {v:.1%}" for k, v in ranges.items()))


def judge_price_ratio(ks, best_ratios) -> Claim:
    same = len({round(float(r), 12) for r in best_ratios}) == 1
    return make_claim(
        "fig10-ratio", "Fig. 10", "On every line c_p + c_d = k the best c_p/c_d is the same.",
        bool(same), "the LP-revenue-maximising ratio on a common ratio grid is equal for every k",
        ", ".join(f"k = {k:g}: best c_p/c_d = {r:.4g}" for k, r in zip(ks, best_ratios,
                                                                        strict=True)))


# ---- Table 1 ----------------------------------------------------------------------------------
def judge_dolly(rstar, revenue, ci, n) -> list[Claim]:
    gap = (rstar - revenue) / rstar
    return [
        make_claim(
            "table1-fit", "Table 1 / EC 14",
            "Exponential output lengths fit most Dolly categories well, poorly in the tail for "
            "creative writing and information extraction.", None,
            "needs per-request Dolly-15k lengths", "jaxqueue ships only the category means "
            "(Table 1), so the fit cannot be checked here"),
        make_claim(
            "table1-gr", "Table 1 / EC 14",
            "Gate-and-Route attains the LP bound on the eight-class Dolly workload "
            "(Theorem 4.1 on a larger instance; a jaxqueue check, not a figure of the paper).",
            bool(gap <= TOL_REVENUE),
            f"simulated revenue within {TOL_REVENUE:.0%} of R* at the simulated n",
            f"n = {n}: {revenue:.2f} ± {ci:.2f} vs R* = {rstar:.2f} (gap {gap:.2%})"),
    ]


