"""Verdicts on the paper's claims, decided from computed numbers, and the reproduction report.

Each claim of the paper's experiments (Sec. 6 and EC 14) has one *judge*: a function of plain
numbers that returns a :class:`Claim` with the verdict (``holds``, ``does not hold`` or
``not comparable``), the rule it applied (its thresholds, stated) and the evidence (the numbers
it used). :func:`judge_all` reads the experiments' JSON outputs and applies every judge;
:func:`render` and :func:`write` turn the outputs and the verdicts into ``REPORT.md``. Nothing
here runs a simulation or imports matplotlib: the report can be rebuilt from the JSON files
alone.

Thresholds are fixed in this module (``TOL_*`` and the rules' constants), chosen from what the
claim says, not from the numbers a run produced.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = ["FAILS", "HOLDS", "NOT_COMPARABLE", "Claim", "fit_power_law", "judge_all",
           "load_results", "render", "write"]

HOLDS = "holds"
FAILS = "does not hold"
NOT_COMPARABLE = "not comparable"

#: Relative L1 distance from an LP target within which a simulated quantity "is at the target".
TOL_TARGET = 0.10
#: Relative gap to R* within which a simulated revenue "attains the LP value".
TOL_REVENUE = 0.03


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


def _claim(id_, figure, statement, ok: bool | None, rule, evidence) -> Claim:
    verdict = NOT_COMPARABLE if ok is None else (HOLDS if ok else FAILS)
    return Claim(id_, figure, statement, verdict, rule, evidence)


# ---- statistics -------------------------------------------------------------------------------
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


def _mean_ci(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(np.mean(values)), float("nan")
    return (float(values.mean()),
            float(_st.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)))


# ---- Fig. 2 -----------------------------------------------------------------------------------
def judge_backlog(class_names, separate_lp_qd, separate_sim_qd, bundled_lp_qd,
                  bundled_sim_qd) -> Claim:
    """Fig. 2: separate pricing keeps a persistent decode backlog of one class, bundled none."""
    sep_lp, sep_sim = np.asarray(separate_lp_qd, float), np.asarray(separate_sim_qd, float)
    bun_lp, bun_sim = np.asarray(bundled_lp_qd, float), np.asarray(bundled_sim_qd, float)
    k = int(np.argmax(sep_lp))
    ok = bool(sep_lp[k] > 0.1 and np.all(bun_lp < 1e-6) and sep_sim[k] >= 0.5 * sep_lp[k]
              and sep_sim[k] >= 2.0 * bun_sim[k])
    return _claim(
        "fig2-backlog", "Fig. 2",
        "Separate pricing builds a persistent decode backlog of one class (in the LP, the "
        "prefill-heavy one); bundled pricing does not.", ok,
        "the separate LP plans q_d > 0.1 per GPU for some class k and the bundled LP none, and "
        "under Prioritize-and-Route the simulated q_d,k is at least half its LP target and at "
        "least twice Gate-and-Route's",
        f"class k = {class_names[k]}: separate LP q_d* = {sep_lp[k]:.3f}, simulated "
        f"(Prioritize-and-Route) {sep_sim[k]:.3f}; bundled LP q_d* = {np.max(bun_lp):.3f}, "
        f"simulated (Gate-and-Route) {bun_sim[k]:.3f}")


# ---- Figs. 4-6 --------------------------------------------------------------------------------
def judge_convergence(gpus, gaps, fit, rstar) -> Claim:
    """Fig. 4: revenue per GPU converges to R* (the gap shrinks with n)."""
    ok = (fit.get("slope") is not None and fit["high"] < 0 and gaps[-1] <= 0.5 * gaps[0])
    slope = ("no fit" if fit.get("slope") is None else
             f"gap ~ n^b, b = {fit['slope']:.3f} [95%: {fit['low']:.3f}, {fit['high']:.3f}]")
    return _claim(
        "fig4-revenue", "Fig. 4",
        "Per-GPU revenue of Gate-and-Route converges to the LP bound R* as n grows.", ok,
        "the fitted log-log slope of the gap R* - revenue against n has a 95% interval below 0 "
        "and the gap at the largest n is at most half the gap at the smallest n",
        f"R* = {rstar:.3f}; gap {gaps[0]:.2f} at n = {gpus[0]} -> {gaps[-1]:.2f} at n = "
        f"{gpus[-1]} ({100 * gaps[-1] / rstar:.2f}% of R*); {slope}")


def judge_bands(gpus, ci) -> Claim:
    """Fig. 4: the confidence bands narrow with n."""
    ok = bool(ci[-1] <= 0.5 * ci[0])
    return _claim(
        "fig4-bands", "Fig. 4", "The revenue bands (across seeds) narrow as n grows.", ok,
        "95% half-width at the largest n at most half that at the smallest n (same replications)",
        f"half-width {ci[0]:.3f} at n = {gpus[0]} -> {ci[-1]:.3f} at n = {gpus[-1]}")


def judge_queues(gpus, queue_dev) -> Claim:
    """Fig. 4: the normalised queues settle at the fluid targets."""
    ok = bool(queue_dev[-1] <= TOL_TARGET)
    return _claim(
        "fig4-queues", "Fig. 4", "Normalised queues (Q/n) settle at the fluid targets.", ok,
        f"relative L1 distance of (q_p, q_d) per class from (q_p*, q_d*) at the largest n "
        f"<= {TOL_TARGET:.0%} of the total planned queue",
        "distance " + ", ".join(f"{d:.2f} (n = {n})" for n, d in zip(gpus, queue_dev,
                                                                         strict=True)))


def judge_decode_buffer(gpus, decode_queue, planned_queue) -> Claim:
    """Fig. 4: the decode buffer is negligible."""
    ok = bool(decode_queue[-1] <= TOL_TARGET * planned_queue)
    return _claim(
        "fig4-decode", "Fig. 4", "The decode buffer is negligible (q_d ~ 0, as planned).", ok,
        f"simulated decode queue per GPU at the largest n <= {TOL_TARGET:.0%} of the total "
        "planned queue sum(q_p* + q_d*)",
        f"q_d per GPU {decode_queue[0]:.3f} (n = {gpus[0]}) -> {decode_queue[-1]:.3f} "
        f"(n = {gpus[-1]}); 10% of the planned queue = {TOL_TARGET * planned_queue:.3f}")


def judge_occupancy(figure, router, gpus, x_dev, y_dev, expect_y: bool) -> list[Claim]:
    """Figs. 5-6: x converges to x* (both routers); y converges only with the SLI router."""
    x_ok = bool(x_dev[-1] <= TOL_TARGET)
    y_close = bool(y_dev[-1] <= TOL_TARGET)
    xs = ", ".join(f"{d:.3f}" for d in x_dev)
    ys = ", ".join(f"{d:.3f}" for d in y_dev)
    out = []
    if expect_y:
        out.append(_claim(
            "fig6-sli-router", figure,
            "With the SLI-aware router both the prefill occupancy x and the per-class decode "
            "occupancies (y_m, y_s) converge to the LP plan.", x_ok and y_close,
            f"relative L1 distances of x from x* and of (y_m, y_s) from (y_m*, y_s*) at the "
            f"largest n both <= {TOL_TARGET:.0%}",
            f"n = {list(gpus)}: x distance {xs}; y distance {ys}"))
    else:
        out.append(_claim(
            "fig5-x", figure, f"With the {router} router the prefill occupancy X_i/n converges "
            "to x_i*.", x_ok,
            f"relative L1 distance of x from x* at the largest n <= {TOL_TARGET:.0%}",
            f"n = {list(gpus)}: x distance {xs}"))
        out.append(_claim(
            "fig5-y", figure, f"With the {router} router the per-class decode occupancy does "
            "not match the LP split (y_m, y_s).", not y_close,
            f"relative L1 distance of (y_m, y_s) from (y_m*, y_s*) at the largest n "
            f"> {TOL_TARGET:.0%}",
            f"n = {list(gpus)}: y distance {ys}"))
    return out


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


def judge_policies(n: int, norm: dict[str, Sequence[float]]) -> list[Claim]:
    """Fig. 7 at n GPUs, from each policy's per-instance mean normalised revenue (same
    instances, common random numbers)."""
    fig = "Fig. 7"
    fi, gi = np.asarray(norm["fi-wsp"]), np.asarray(norm["gi-wsp"])
    fg, gg = np.asarray(norm["fg-sp"]), np.asarray(norm["gate-and-route"])
    k = fi.size
    mean, ci = _mean_ci(gi - fi)
    gate = _claim(
        f"fig7-gate-n{n}", fig, f"The gate alone helps: GI-WSP earns more than FI-WSP (n = {n}).",
        bool(mean - ci > 0) if k > 1 else None,
        "mean over instances of GI-WSP - FI-WSP (normalised revenue) has a 95% t-interval "
        "above 0",
        f"{k} instances: GI - FI = {mean:+.4f} ± {ci:.4f}; GI ahead on "
        f"{int(np.sum(gi > fi))}/{k}")
    hurt = fg - fi < -0.01
    planning = _claim(
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
    best = _claim(
        f"fig7-best-n{n}", fig,
        f"GG-SP (Gate-and-Route) is the best policy, with the lowest spread (n = {n}).",
        bool(top == "gate-and-route" and calm == "gate-and-route") if k > 1 else None,
        "GG-SP has the highest mean normalised revenue over the grid and the smallest standard "
        "deviation over instances",
        "; ".join(f"{p}: {v['mean']:.4f} (sd {v['sd']:.4f}, wins {v['wins']})"
                  for p, v in table.items())
        + f"; GG-SP - best other = {float(np.mean(gg)) - others:+.4f}")
    return [gate, planning, best]


# ---- Fig. 8 -----------------------------------------------------------------------------------
def judge_fairness(kind: str, values, revenue, rstar) -> Claim:
    """Fig. 8: prefill fairness is steep (loss at eta = 0 >= 20% of R*); decode fairness is
    nearly flat (loss at eta = 0 <= 5%)."""
    values, revenue = np.asarray(values, float), np.asarray(revenue, float)
    loss = (rstar - revenue[np.argmin(values)]) / rstar
    if kind == "prefill_fairness":
        return _claim(
            "fig8-prefill", "Fig. 8", "Revenue falls steeply as prefill fairness tightens.",
            bool(loss >= 0.20), "LP revenue at eta_1 = 0 at least 20% below R*",
            f"R* = {rstar:.2f}; revenue {revenue[np.argmin(values)]:.2f} at eta_1 = "
            f"{values.min():g} (loss {loss:.1%})")
    return _claim(
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
    return _claim(
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
    return _claim(
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
    return _claim(
        "fig9-batch", "Fig. 9", "Revenue saturates near B = 16.", bool(12 <= sat <= 24),
        "the smallest B reaching 99% of the largest LP revenue over the B grid lies in [12, 24]",
        f"B grid {int(B.min())}..{int(B.max())}; 99% reached at B = {sat:g}; revenue at B = 16 "
        f"{float(np.interp(16, B, revenue)):.2f}, max {revenue.max():.2f}")


def judge_beta(ranges: dict[str, float]) -> Claim:
    """``ranges``: relative revenue range (max - min) / max of each parameter over the paper's
    Sec. 6.3 ranges."""
    top = max(ranges, key=ranges.get)
    return _claim(
        "fig9-beta", "Fig. 9", "Revenue is very sensitive to beta.",
        bool(top == "beta" and ranges["beta"] >= 0.20),
        "over the paper's parameter ranges (alpha 0.015-0.02, beta 1e-5-1e-3, gamma 10-50), "
        "beta moves the LP revenue the most, by at least 20%",
        ", ".join(f"{k}: {v:.1%}" for k, v in ranges.items()))


def judge_price_ratio(ks, best_ratios) -> Claim:
    same = len({round(float(r), 12) for r in best_ratios}) == 1
    return _claim(
        "fig10-ratio", "Fig. 10", "On every line c_p + c_d = k the best c_p/c_d is the same.",
        bool(same), "the LP-revenue-maximising ratio on a common ratio grid is equal for every k",
        ", ".join(f"k = {k:g}: best c_p/c_d = {r:.4g}" for k, r in zip(ks, best_ratios,
                                                                        strict=True)))


# ---- Table 1 ----------------------------------------------------------------------------------
def judge_dolly(rstar, revenue, ci, n) -> list[Claim]:
    gap = (rstar - revenue) / rstar
    return [
        _claim("table1-fit", "Table 1 / EC 14",
               "Exponential output lengths fit most Dolly categories well, poorly in the tail for "
               "creative writing and information extraction.", None,
               "needs per-request Dolly-15k lengths", "jaxqueue ships only the category means "
               "(Table 1), so the fit cannot be checked here"),
        _claim("table1-gr", "Table 1 / EC 14",
               "Gate-and-Route attains the LP bound on the eight-class Dolly workload "
               "(Theorem 4.1 on a larger instance; a jaxqueue check, not a figure of the paper).",
               bool(gap <= TOL_REVENUE),
               f"simulated revenue within {TOL_REVENUE:.0%} of R* at the simulated n",
               f"n = {n}: {revenue:.2f} ± {ci:.2f} vs R* = {rstar:.2f} (gap {gap:.2%})"),
    ]


# ---- from the experiments' outputs ------------------------------------------------------------
def load_results(out: str) -> dict[str, dict]:
    """Every complete experiment output (``*.json`` with ``complete: true``) in ``out``."""
    results = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("complete") and "experiment" in data:
            results[data["experiment"]] = data
    return results


def _missing(ids_statements: Sequence[tuple[str, str, str]], why: str) -> list[Claim]:
    return [Claim(i, f, s, NOT_COMPARABLE, "-", why) for i, f, s in ids_statements]


_PLACEHOLDERS = {
    "fig2_pricing": [("fig2-backlog", "Fig. 2", "Separate pricing builds a persistent decode "
                      "backlog; bundled pricing does not.")],
    "fig4_6_convergence": [
        ("fig4-revenue", "Fig. 4", "Revenue converges to R*."),
        ("fig4-bands", "Fig. 4", "Bands narrow with n."),
        ("fig4-queues", "Fig. 4", "Queues settle at the fluid targets."),
        ("fig4-decode", "Fig. 4", "Decode buffer negligible."),
        ("fig5-x", "Fig. 5", "Greedy router: x converges."),
        ("fig5-y", "Fig. 5", "Greedy router: the y split does not."),
        ("fig6-sli-router", "Fig. 6", "SLI router: x and y converge.")],
    "fig7_policies": [("fig7-gate", "Fig. 7", "The gate alone helps."),
                      ("fig7-planning", "Fig. 7", "Static planning alone can hurt."),
                      ("fig7-best", "Fig. 7", "GG-SP is best with the lowest spread.")],
    "fig8_sli": [("fig8-prefill", "Fig. 8", "Prefill fairness is steep."),
                 ("fig8-decode", "Fig. 8", "Decode fairness is nearly flat."),
                 ("fig8-tpot", "Fig. 8", "TPOT cost explodes as eta_3 -> 1/gamma."),
                 ("fig8-simulated", "Fig. 8", "Simulated points lie on the LP curves.")],
    "fig9_10_sensitivity": [("fig9-batch", "Fig. 9", "Revenue saturates near B = 16."),
                            ("fig9-beta", "Fig. 9", "Revenue is very sensitive to beta."),
                            ("fig10-ratio", "Fig. 10", "Best c_p/c_d the same for every k.")],
    "table1_dolly": [("table1-fit", "Table 1 / EC 14", "Exponential fit of output lengths."),
                     ("table1-gr", "Table 1 / EC 14", "Gate-and-Route attains R* on Dolly.")],
}


def claims_of(name: str, r: dict) -> list[Claim]:
    """The claims judged from one experiment's output."""
    if name == "fig2_pricing":
        rows = {row["policy"]: row for row in r["rows"]}
        sep, bun = rows["prioritize-and-route"], rows["gate-and-route"]
        return [judge_backlog(r["class_names"], sep["lp"]["q_d"],
                              sep["simulated"]["q_decode"]["mean"], bun["lp"]["q_d"],
                              bun["simulated"]["q_decode"]["mean"])]
    if name == "fig4_6_convergence":
        rstar = r["lp"]["revenue"]
        planned = float(np.sum(r["lp"]["q_p"]) + np.sum(r["lp"]["q_d"]))
        greedy = r["series"]["gate-and-route"]
        rows = greedy["rows"]
        gpus = [row["gpus"] for row in rows]
        gaps = [rstar - row["revenue_bundled"]["mean"] for row in rows]
        out = [judge_convergence(gpus, gaps, greedy["gap_fit"], rstar),
               judge_bands(gpus, [row["revenue_bundled"]["ci95"] for row in rows]),
               judge_queues(gpus, [row["queue_deviation"] for row in rows]),
               judge_decode_buffer(gpus, [row["decode_queue_total"] for row in rows], planned)]
        out += judge_occupancy("Fig. 5", "greedy", gpus, [row["x_deviation"] for row in rows],
                               [row["y_deviation"] for row in rows], expect_y=False)
        sli = r["series"]["sli-gate-and-route"]["rows"]
        out += judge_occupancy("Fig. 6", "SLI-aware", [row["gpus"] for row in sli],
                               [row["x_deviation"] for row in sli],
                               [row["y_deviation"] for row in sli], expect_y=True)
        return out
    if name == "fig7_policies":
        out = []
        for grid in r["grids"]:
            out += judge_policies(grid["gpus"], {p: v["instance_mean"]
                                                 for p, v in grid["policies"].items()})
        return out
    if name == "fig8_sli":
        rstar = r["lp_revenue"]
        curves = r["curves"]
        out = [judge_fairness(k, curves[k]["values"], curves[k]["revenue"], rstar)
               for k in ("prefill_fairness", "decode_fairness")]
        t = curves["tpot"]
        out.append(judge_tpot(t["values"], t["revenue"], t["shadow_price"], rstar,
                              r["inv_gamma"]))
        out.append(judge_sli_points(r["points"]))
        return out
    if name == "fig9_10_sensitivity":
        lines = r["price_lines"]
        return [judge_batch(r["lines"]["B"]["values"], r["lines"]["B"]["revenue"]),
                judge_beta(r["paper_range_sensitivity"]),
                judge_price_ratio(lines["k"], lines["best_ratio"])]
    if name == "table1_dolly":
        sim = r["simulated"]["revenue_bundled"]
        return judge_dolly(r["lp"]["revenue"], sim["mean"], sim["ci95"], r["gpus"])
    raise KeyError(f"no judge for experiment {name!r}")


def judge_all(results: dict[str, dict]) -> list[Claim]:
    """Every claim, in the order of the paper's figures; claims of experiments without an output
    are ``not comparable`` (not run)."""
    claims = []
    for name, placeholders in _PLACEHOLDERS.items():
        if name in results:
            claims += claims_of(name, results[name])
        else:
            claims += _missing(placeholders, "not run: no complete output of this experiment")
    return claims


# ---- REPORT.md --------------------------------------------------------------------------------
def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


_MARK = {HOLDS: "**holds**", FAILS: "**does not hold**", NOT_COMPARABLE: "*not comparable*"}


def render(results: dict[str, dict], claims: Sequence[Claim], *,
           timings: dict[str, float] | None = None) -> str:
    """The Markdown of ``REPORT.md``."""
    any_r = next(iter(results.values()), {})
    modes = sorted({"quick" if r.get("quick") else "full" for r in results.values()})
    counts = {v: sum(c.verdict == v for c in claims) for v in (HOLDS, FAILS, NOT_COMPARABLE)}
    parts = [
        "# Reproduction report: Lin, Han, Ding & Zhang, arXiv 2602.02987",
        "",
        f"Generated {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')} by "
        f"`jaxqueue reproduce` (jaxqueue {any_r.get('jaxqueue_version', '?')}, JAX "
        f"{any_r.get('jax_version', '?')}, backend {any_r.get('backend', '?')} with "
        f"{any_r.get('devices', '?')} device(s)); run mode: {', '.join(modes) or 'none'}.",
        "",
        "Every verdict below is computed by `jaxqueue/report.py` from the numbers in the JSON "
        "files next to this report, with the rule shown; none is written by hand. *holds*: "
        "the numbers meet the rule; *does not hold*: they do not (a result, not an error); "
        "*not comparable*: the claim cannot be checked with what jaxqueue computes, or the "
        "experiment was not run." + (" Quick mode runs small sizes: its verdicts on "
                                     "simulated claims are indicative only." if "quick" in modes
                                     else ""),
        "",
        f"**{counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[NOT_COMPARABLE]} not "
        "comparable.**",
        "",
        "## Verdicts",
        "",
        _table(["claim", "figure", "statement", "verdict", "evidence"],
               [[c.id, c.figure, c.statement, _MARK[c.verdict], c.evidence] for c in claims]),
        "",
    ]
    for name, r in results.items():
        s = r.get("settings", {})
        parts += [f"## {r.get('figure', '')}: {r.get('title', name)}", "",
                  f"`{name}` — scenario {r.get('scenario') or 'random grid'}; policies "
                  f"{', '.join(r.get('policies', []))}; seed {r.get('seed')}; "
                  + ", ".join(f"{k} = {v}" for k, v in s.items())
                  + f"; {'quick' if r.get('quick') else 'full'} mode; "
                  f"{r.get('wall_seconds', float('nan')):.0f} s.", ""]
        if r.get("notes"):
            parts += [r["notes"], ""]
        for png in r.get("outputs", []):
            if png.endswith(".png"):
                parts += [f"![{png}]({png})", ""]
        for t in r.get("key_numbers", []):
            parts += [f"**{t['title']}**", "", _table(t["columns"], t["rows"]), ""]
        mine = [c for c in claims if c.id in {x.id for x in claims_of(name, r)}]
        if mine:
            parts += ["Claims:", ""]
            parts += [f"- {c.statement} — {_MARK[c.verdict]}. Rule: {c.rule}. Evidence: "
                      f"{c.evidence}." for c in mine]
            parts.append("")
    if timings:
        parts += ["## Wall time of this invocation", "",
                  _table(["experiment", "seconds"],
                         [[k, f"{v:.0f}"] for k, v in timings.items()]), ""]
    return "\n".join(parts)


def write(out: str, timings: dict[str, float] | None = None) -> tuple[str, list[Claim]]:
    """Judges every claim from the outputs in ``out`` and writes ``out/REPORT.md`` atomically.
    Returns its path and the claims."""
    results = load_results(out)
    claims = judge_all(results)
    path = os.path.join(out, "REPORT.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(render(results, claims, timings=timings))
    os.replace(tmp, path)
    return path, claims
