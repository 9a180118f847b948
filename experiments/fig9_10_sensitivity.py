"""Figs. 9-10: sensitivity of revenue and TPOT to B, alpha, beta, gamma and the prices.

Fig. 9: the bundled LP's revenue and its TPOT (Sec. 5 formula at the optimum's X = sum x)
along one parameter at a time around the paper's instance, with Gate-and-Route simulated on the
pooled engine at a few points (all points one vmapped program). Fig. 10: LP revenue heatmaps over
(B, beta) and (c_p, c_d), and the revenue along lines c_p + c_d = k against the ratio c_p/c_d,
to check whether the best ratio is the same for every k.

    PYTHONPATH=. python experiments/fig9_10_sensitivity.py [--quick] [--out results]
"""

from __future__ import annotations

import os

import numpy as np

from experiments import common
from experiments.common import plt
from jaxqueue import fluid, scenarios

NAME = "fig9_10_sensitivity"
FIGURE = "Figs. 9-10"
TITLE = "Sensitivity of revenue and TPOT to B, alpha, beta, gamma and the prices"
OUTPUTS = (f"{NAME}.json", "fig9_sensitivity.png", "fig10_heatmaps.png")
SCENARIO = "paper-qwen8b"
POLICY = "gate-and-route"
PARAMS = ("B", "alpha", "beta", "gamma")
#: Simulated points: (parameter, value) changed from the paper's instance.
FULL = {"gpus": 500, "reps": 8, "horizon": 2000.0, "warmup": 500.0,
        "points": [["B", 8], ["B", 24], ["alpha", 0.015], ["alpha", 0.02], ["beta", 1e-5],
                   ["beta", 3e-4], ["gamma", 20.0], ["gamma", 50.0]]}
QUICK = {"gpus": 100, "reps": 4, "horizon": 500.0, "warmup": 150.0,
         "points": [["B", 8], ["beta", 1e-5], ["beta", 3e-4], ["gamma", 20.0]]}
#: The parameter ranges of the paper's Sec. 6.3 grid (for "very sensitive to beta").
PAPER_RANGES = {"alpha": (0.015, 0.02), "beta": (1e-5, 1e-3), "gamma": (10.0, 50.0)}
UNITS = {"B": "batch slots B", "alpha": "alpha (s)", "beta": "beta (s per prefill token)",
         "gamma": "gamma (decode tokens per s)"}


def _grid(name: str, lo=None, hi=None, num=None) -> np.ndarray:
    if name == "B":
        return np.arange(1, 49)
    lo, hi = (lo, hi) if lo is not None else {"alpha": (0.01, 0.03), "beta": (1e-5, 1e-3),
                                              "gamma": (10.0, 60.0)}[name]
    num = num or 21
    return np.geomspace(lo, hi, num) if name == "beta" else np.linspace(lo, hi, num)


def _lp(model, **change):
    plan = fluid.solve(model.replace(**change), "bundled")
    return plan.revenue, plan.sli["tpot"]


def _solution(model, **change) -> dict:
    """What explains a point of a line: the share of GPUs running a prefill (X = sum x), the
    fraction of each class's arrivals the plan serves, and the capacity rows with a positive
    dual (binding)."""
    m = model.replace(**change)
    plan = fluid.solve(m, "bundled")
    return {"mixed_fraction": plan.sum_x,
            "served": plan.completion_rate(m) / np.asarray(m.lambda_, np.float64),
            "binding": [k for k, v in plan.duals.items() if v > 1e-9]}


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs Figs. 9-10 and writes their JSON and two PNGs into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    model = scenarios.load(SCENARIO)
    base = fluid.solve(model, "bundled")
    lines = {}
    for name in PARAMS:
        values = _grid(name)
        rev, tp = zip(*(_lp(model, **{name: v}) for v in values), strict=True)
        why = [_solution(model, **{name: v}) for v in values]
        lines[name] = {"values": values, "revenue": rev, "tpot": tp,
                       "paper_value": float(np.asarray(getattr(model, name))),
                       **{k: [w[k] for w in why] for k in why[0]}}
    ranges = {}
    for name, (lo, hi) in PAPER_RANGES.items():
        rev = [_lp(model, **{name: v})[0] for v in _grid(name, lo, hi, 21)]
        ranges[name] = (max(rev) - min(rev)) / max(rev)
    heat_B, heat_beta = np.arange(2, 33, 2), np.geomspace(1e-5, 1e-3, 13)
    heat_bb = np.array([[_lp(model, B=int(b), beta=be)[0] for be in heat_beta] for b in heat_B])
    prices = np.round(np.linspace(0.05, 0.5, 10), 4)
    heat_cc = np.array([[_lp(model, c_p=cp, c_d=cd)[0] for cd in prices] for cp in prices])
    ks, ratios = [0.15, 0.3, 0.45, 0.6], np.geomspace(0.05, 20.0, 41)
    line_rev = np.array([[_lp(model, c_p=k * r / (1 + r), c_d=k / (1 + r))[0] for r in ratios]
                         for k in ks])
    best_ratio = ratios[np.argmax(line_rev, axis=1)]

    points = [(None, None)] + [(p, v) for p, v in s["points"]]
    models = [model if p is None else model.replace(**{p: v}) for p, v in points]
    plans = [fluid.solve(m, "bundled") for m in models]
    n = int(s["gpus"])

    def simulate():
        runs, cap = common.run_systems(
            f"{NAME} n={n}",
            lambda c: [common.engine_build(POLICY, m, n, plan=p, capacity=c)[0]
                       for m, p in zip(models, plans, strict=True)],
            seed=seed, reps=s["reps"], horizon=s["horizon"], warmup=s["warmup"],
            capacity=common.capacity_for(n, plans))
        return [common.per_gpu_summary(r, m, n) for r, m in zip(runs, models, strict=True)]

    sims = common.cached(out, f"{NAME}_sim", {"seed": seed, **s}, simulate)
    sim_points = []
    for (p, v), m, plan, sim in zip(points, models, plans, sims, strict=True):
        x = np.asarray(sim["x"]["mean"], np.float64)
        sim_points.append({"parameter": p or "paper", "value": v, "lp_revenue": plan.revenue,
                           "lp_tpot": plan.sli["tpot"],
                           "revenue_sim": sim["revenue_bundled"]["mean"],
                           "revenue_ci95": sim["revenue_bundled"]["ci95"],
                           "tpot_sim": fluid.tpot(m, float(np.sum(x)))})
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=SCENARIO, policies_=(POLICY,)),
              "lp_revenue": base.revenue, "lines": lines,
              "classes": {"names": list(model.class_names), "P": model.P, "D": model.D,
                          "w": model.w}, "paper_range_sensitivity": ranges,
              "heatmap_B_beta": {"B": heat_B, "beta": heat_beta, "revenue": heat_bb},
              "heatmap_prices": {"c_p": prices, "c_d": prices, "revenue": heat_cc},
              "price_lines": {"k": ks, "ratio": ratios, "revenue": line_rev,
                              "best_ratio": best_ratio},
              "sim_points": sim_points,
              "notes": "Prices enter the LP only through its objective and demand does not "
                       "respond to them, so along c_p + c_d = k revenue is k times a function "
                       "of the ratio: the best ratio cannot depend on k, and it sits at the "
                       "end of the ratio grid that weights the token type the plan serves "
                       "most."}
    result = common.jsonable(result)
    result["key_numbers"] = _key_numbers(result)
    _plot_lines(result, os.path.join(out, OUTPUTS[1]))
    _plot_heatmaps(result, os.path.join(out, OUTPUTS[2]))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _key_numbers(result) -> list[dict]:
    rows = []
    for name, line in result["lines"].items():
        v, r, t = (np.asarray(line[k], float) for k in ("values", "revenue", "tpot"))
        rows.append([name, f"{v.min():.4g} .. {v.max():.4g}", f"{r.min():.2f} .. {r.max():.2f}",
                     f"{1000 * t.min():.2f} .. {1000 * t.max():.2f}",
                     f"{result['paper_range_sensitivity'].get(name, float('nan')):.1%}"
                     if name in result["paper_range_sensitivity"] else "-"])
    sims = [[p["parameter"], "-" if p["value"] is None else f"{p['value']:g}",
             f"{p['lp_revenue']:.2f}", f"{p['revenue_sim']:.2f} ± {p['revenue_ci95']:.2f}",
             f"{1000 * p['lp_tpot']:.2f}", f"{1000 * p['tpot_sim']:.2f}"]
            for p in result["sim_points"]]
    pl = result["price_lines"]
    return [{"title": "LP revenue and TPOT along each parameter (the others at the paper's "
                      "instance); range = (max - min)/max of revenue over the paper's Sec. 6.3 "
                      "range",
             "columns": ["parameter", "grid", "LP revenue", "TPOT (ms)",
                         "revenue range over the paper's range"], "rows": rows},
            {"title": f"Simulated Gate-and-Route, n = {result['settings']['gpus']}",
             "columns": ["changed", "value", "LP revenue", "simulated revenue (95% CI)",
                         "LP TPOT (ms)", "simulated TPOT (ms)"], "rows": sims},
            {"title": "Best c_p/c_d on each line c_p + c_d = k",
             "columns": ["k", "best c_p/c_d", "revenue there"],
             "rows": [[k, f"{r:.4g}", f"{max(rev):.2f}"] for k, r, rev in
                      zip(pl["k"], pl["best_ratio"], pl["revenue"], strict=True)]}]


def _plot_lines(result, path):
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.4), sharex="col")
    sims = result["sim_points"]
    for j, name in enumerate(PARAMS):
        line = result["lines"][name]
        v = np.asarray(line["values"], float)
        top, bottom = axes[0, j], axes[1, j]
        top.plot(v, line["revenue"], "k-", lw=1.5, label="LP")
        bottom.plot(v, 1000 * np.asarray(line["tpot"]), "k-", lw=1.5, label="LP optimum")
        pts = [p for p in sims if p["parameter"] in (name, "paper")]
        if pts:
            pv = [p["value"] if p["value"] is not None else line["paper_value"] for p in pts]
            top.errorbar(pv, [p["revenue_sim"] for p in pts],
                         yerr=[p["revenue_ci95"] for p in pts], fmt="o", capsize=3,
                         color=common.COLORS[POLICY],
                         label=f"GG-SP simulated, n = {result['settings']['gpus']}")
            bottom.plot(pv, [1000 * p["tpot_sim"] for p in pts], "o",
                        color=common.COLORS[POLICY], label="GG-SP simulated (at its X)")
        for ax in (top, bottom):
            ax.axvline(line["paper_value"], color="grey", ls=":", lw=1,
                       label="paper's instance")
            if name == "beta":
                ax.set_xscale("log")
        top.set_ylabel("revenue per GPU per second")
        bottom.set_ylabel("time per output token (ms)")
        if j == 0:
            bottom.legend(loc="lower right")
        bottom.set_xlabel(UNITS[name])
        top.set_title(f"({'abcd'[j]}) {name}")
        top.legend(loc="best")
    fig.suptitle(f"Fig. 9, {SCENARIO}: sensitivity of revenue and TPOT to one parameter at a "
                 "time")
    fig.tight_layout()
    common.save_png(fig, path)


def _plot_heatmaps(result, path):
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.4))
    h = result["heatmap_B_beta"]
    beta = np.asarray(h["beta"])
    im = a1.pcolormesh(beta, h["B"], np.asarray(h["revenue"]), shading="nearest",
                       cmap="viridis")
    a1.set_xscale("log")
    a1.set_xlabel("beta (s per prefill token)")
    a1.set_ylabel("batch slots B")
    a1.set_title("(a) LP revenue over (B, beta)")
    fig.colorbar(im, ax=a1, label="revenue per GPU per second")
    h = result["heatmap_prices"]
    im = a2.pcolormesh(h["c_d"], h["c_p"], np.asarray(h["revenue"]), shading="nearest",
                       cmap="viridis")
    a2.set_xlabel("c_d (price per output token)")
    a2.set_ylabel("c_p (price per prompt token)")
    a2.set_title("(b) LP revenue over (c_p, c_d)")
    fig.colorbar(im, ax=a2, label="revenue per GPU per second")
    pl = result["price_lines"]
    ratio = np.asarray(pl["ratio"])
    styles = ("-", "--", "-.", ":")
    for j, (k, rev, best) in enumerate(zip(pl["k"], pl["revenue"], pl["best_ratio"],
                                           strict=True)):
        rev = np.asarray(rev)  # the curves coincide when revenue scales with k: dash them
        (ln,) = a3.plot(ratio, rev / rev.max(), styles[j % 4], lw=3.0 - 0.6 * j,
                        label=f"k = {k:g}, best c_p/c_d = {best:.3g}")
        a3.plot(best, 1.0, "v", color=ln.get_color(), ms=9 - 1.5 * j)
    a3.set_xscale("log")
    common.plain_ticks(a3, "x")
    a3.set_xlabel("price ratio c_p / c_d")
    a3.set_ylabel("LP revenue / its maximum on the line")
    a3.set_title("(c) lines c_p + c_d = k (markers: best ratio)")
    a3.legend(loc="lower right")
    fig.suptitle(f"Fig. 10, {SCENARIO}: LP revenue heatmaps and the best price ratio")
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
