"""Where the asymptotics bite: a finite-n map of the gap to the LP bound over Fig. 9's grid.

The paper proves Gate-and-Route optimal as n -> infinity; clusters run n = 50-500 GPUs. Along
each parameter of Fig. 9 (B, alpha, beta, gamma, one at a time around ``paper-qwen8b``, at a
subset of the points of ``fig9_10_sensitivity``'s grid), at n = 100 and 500, this simulates
Gate-and-Route, the other policies of the paper (FI-WSP, GI-WSP, GF-WSP, FG-SP of Sec. 6.3 and
the SLI-aware router of Sec. 5.1 without targets; Prioritize-and-Route is planned for separate
pricing and left out) and jaxqueue's offset-1 coupled gate (``gi-wsp-after``: the GI-WSP gate
ranking classes by their occupancy after admission, the tuner's best start), all with the same
key at a point (common random numbers). Written: each policy's relative gap 1 - revenue / R*
(R* the bundled LP optimum at that point) with its 95% interval, the best of the other paper
policies at each point, and how fast Gate-and-Route's gap closes in n: the ratio of its gaps
at the largest and the smallest n with the rate it implies, and the fitted limit
(``report.fit_limit``) where four sizes or more are run; the figure is one policy x grid-point
heat map of the gap per parameter and n.

Gate-and-Route, FG-SP and the SLI-aware router run on the pooled engine (cost per event
independent of n); FI-WSP, GI-WSP, GF-WSP and the coupled gate need the per-GPU engine
(``per_gpu_up_to``: the other per-GPU policies run only up to that n; the JSON's ``skipped``
lists what a run left out). Each (n, policy) is one vmapped program over the grid points,
stored as it finishes (``parts/``), so an interrupted run resumes.

    PYTHONPATH=. python experiments/gap_map.py [--quick] [--out results]
"""

from __future__ import annotations

import math
import os

import numpy as np

from experiments import common
from experiments import fig9_10_sensitivity as fig9
from experiments.common import plt
from jaxqueue import fluid, policies, report, scenarios

NAME = "gap_map"
FIGURE = "gap map (beyond the paper)"
TITLE = "Where the asymptotics bite: the gap to R* at finite n over Fig. 9's grid"
OUTPUTS = (f"{NAME}.json", f"{NAME}.png")
SCENARIO = fig9.SCENARIO
POLICY = "gate-and-route"
#: jaxqueue's own policy compared: the coupled gate at offset 1 (``jaxqueue policies``).
COUPLED = "gi-wsp-after"
#: The other paper policies that earn bundled revenue (planned from the bundled LP).
OTHERS = ("fi-wsp", "gi-wsp", "gf-wsp", "fg-sp", "sli-gate-and-route")
# 600 s with 150 s of warm-up: a run at a tenth of 2,000 s (50 s of warm-up) gave the same
# gaps as the full 2,000 s within their intervals (B = 6 / 8 / 12 at n = 100: 38.0 / 29.8 /
# 15.9 against 38.2 / 29.7 / 16.4), and only the distance to 5% needs the precision.
#: Grid points per parameter: values of ``fig9_10_sensitivity``'s grid (each value is snapped
#: to the nearest grid point, and one farther than 2% from every grid point is an error).
FULL = {"gpus": [100, 500], "reps": 8, "horizon": 600.0, "warmup": 150.0,
        # FI-WSP and GF-WSP only at n = 100: there they never beat GI-WSP beyond noise where
        # another policy was not far better (GF-WSP's 50% against GI-WSP's 62% at gamma = 10,
        # where the SLI-aware router's gap is 4%), and at n = 500 each would cost about as much as
        # the rest of the run.
        "others": list(OTHERS), "per_gpu_up_to": 100, "per_gpu_always": ["gi-wsp"],
        "points": {"B": [2, 4, 6, 8, 12, 16, 24, 32, 48],
                   "alpha": [0.01, 0.014, 0.018, 0.022, 0.026, 0.03],
                   "beta": [1e-5, 1.585e-5, 2.512e-5, 3.981e-5, 6.31e-5, 1e-4, 1.585e-4,
                            2.512e-4, 3.981e-4, 6.31e-4, 1e-3],
                   "gamma": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]}}
QUICK = {"gpus": [20, 50], "reps": 4, "horizon": 400.0, "warmup": 100.0,
         "others": ["gi-wsp", "fg-sp"], "per_gpu_up_to": 50, "per_gpu_always": [],
         "points": {"B": [4, 8, 16, 32], "alpha": [0.01, 0.03],
                    "beta": [1e-5, 1e-4, 6.31e-4, 1e-3], "gamma": [10.0, 60.0]}}
LABELS = {**common.LABELS, COUPLED: "coupled gate, offset 1 (jaxqueue)"}
SHORT = {"gate-and-route": "GG-SP (G&R)", "fi-wsp": "FI-WSP", "gi-wsp": "GI-WSP",
         "gf-wsp": "GF-WSP", "fg-sp": "FG-SP", "sli-gate-and-route": "SLI-router G&R",
         COUPLED: "coupled gate, offset 1"}


def grid_points(points: dict[str, list[float]]) -> list[tuple[str, float]]:
    """``(parameter, value)`` for each requested value, snapped onto Fig. 9's grid of that
    parameter (``fig9_10_sensitivity._grid``).

    Raises:
        ValueError: an unknown parameter, or a value more than 2% from every grid point.
    """
    out = []
    for name, values in points.items():
        if name not in fig9.PARAMS:
            raise ValueError(f"points: parameter {name!r} is unknown: must be one of "
                             f"{', '.join(fig9.PARAMS)}")
        grid = np.asarray(fig9._grid(name), np.float64)
        for v in values:
            k = int(np.argmin(np.abs(grid - float(v))))
            if abs(grid[k] - float(v)) > 0.02 * abs(grid[k]):
                raise ValueError(f"points: {name} = {v} is not on Fig. 9's grid "
                                 f"({grid.min():g} .. {grid.max():g}, {grid.size} points)")
            out.append((name, int(grid[k]) if name == "B" else float(grid[k])))
    return out


def run_policies(s: dict, n: int) -> tuple[list[str], list[str]]:
    """The policies run at n GPUs, and the per-GPU ones left out there (above
    ``per_gpu_up_to``, unless named in ``per_gpu_always``): Gate-and-Route, the other paper
    policies, the coupled gate. The coupled gate runs at every n (it exists on the per-GPU
    engine only)."""
    run, skipped = [POLICY], []
    always = {policies.resolve(p).name for p in s.get("per_gpu_always", [])}
    for p in s["others"]:
        spec = policies.resolve(p)
        if (spec.engines[0] == "per-gpu" and n > int(s["per_gpu_up_to"])
                and spec.name not in always):
            skipped.append(p)
        else:
            run.append(spec.name)
    return [*run, COUPLED], skipped


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs the gap map and writes ``gap_map.json`` and ``gap_map.png`` into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    for p in s["others"]:
        spec = policies.resolve(p)
        if spec.name in (POLICY, COUPLED) or spec.pricing != "bundled" or spec.origin != "paper":
            raise ValueError(f"others: {p!r} is not another bundled-pricing paper policy")
    base = scenarios.load(SCENARIO)
    where = grid_points(s["points"])
    models = [base.replace(**{name: v}) for name, v in where]
    plans = [fluid.solve(m, "bundled") for m in models]
    rstar = np.array([p.revenue for p in plans])
    gpus = [int(n) for n in s["gpus"]]
    sims, skipped, engines = {}, {}, {}
    for n in gpus:
        names, skipped[str(n)] = run_policies(s, n)
        capacity = common.capacity_for(n, plans)
        for policy in names:
            def simulate(policy=policy, n=n, capacity=capacity):
                runs, _ = common.run_systems(
                    f"{NAME} {policy} n={n}",
                    lambda c: [common.engine_build(policy, m, n, plan=p, capacity=c)[0]
                               for m, p in zip(models, plans, strict=True)],
                    seed=seed, reps=s["reps"], horizon=s["horizon"], warmup=s["warmup"],
                    capacity=capacity)
                return {"revenue_reps": [common.per_gpu_summary(r, m, n)["revenue_bundled_reps"]
                                         for r, m in zip(runs, models, strict=True)],
                        "rerun_reps": [list(r.rerun_reps) for r in runs],
                        "events": sum(r.events for r in runs)}

            settings = {"seed": seed, "policy": policy, "n": n, "points": where,
                        **{k: s[k] for k in ("reps", "horizon", "warmup")}}
            sims[(n, policy)] = common.cached(out, f"{NAME}_{policy}_n{n}", settings, simulate)
            engines[policy] = policies.resolve(policy).engines[0]
    points = [_point(k, name, v, plans[k], models[k], gpus, sims)
              for k, (name, v) in enumerate(where)]
    ran = {str(n): [p for (m, p) in sims if m == n] for n in gpus}
    pooled_only = sorted({p for n in gpus for p in skipped[str(n)]})
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=SCENARIO, policies_=[POLICY, *s["others"], COUPLED]),
              "class_names": list(base.class_names), "paper_values":
                  {k: float(np.asarray(getattr(base, k))) for k in fig9.PARAMS},
              "gpus": gpus, "policies_run": ran, "engines": engines, "skipped": skipped,
              "margin": report.GAP_MARGIN, "points": points, "lp_revenue": rstar,
              "notes": _notes(s, gpus, pooled_only)}
    result = common.jsonable(result)
    result["key_numbers"] = _key_numbers(result)
    _plot(result, os.path.join(out, OUTPUTS[1]))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _point(k: int, name: str, value, plan, model, gpus: list[int], sims: dict) -> dict:
    """One grid point: per n and policy, revenue and relative gap (mean, 95% interval), the
    best other paper policy, the coupled gate minus Gate-and-Route (paired by replication),
    and the rate of Gate-and-Route's gap in n."""
    rstar = plan.revenue
    runs, best = {}, {}
    for n in gpus:
        row = {}
        for (m, policy), sim in sims.items():
            if m != n:
                continue
            rev = np.asarray(sim["revenue_reps"][k], np.float64)
            row[policy] = {"revenue": common.pack(rev), "gap": common.pack(1.0 - rev / rstar),
                           "rerun_reps": sim["rerun_reps"][k]}
        others = [p for p in row if p not in (POLICY, COUPLED)]
        best[str(n)] = (max(others, key=lambda p: row[p]["revenue"]["mean"]) if others
                        else None)
        gg = np.asarray(sims[(n, POLICY)]["revenue_reps"][k], np.float64)
        cg = np.asarray(sims[(n, COUPLED)]["revenue_reps"][k], np.float64)
        row["coupled_minus_gate_and_route"] = common.pack((cg - gg) / rstar)
        runs[str(n)] = row
    gaps = [runs[str(n)][POLICY]["gap"] for n in gpus]
    mean = [float(g["mean"]) for g in gaps]
    se = [float(g["sd"]) / math.sqrt(g["n"]) if g["n"] > 1 else float("nan") for g in gaps]
    fit = report.fit_limit(gpus, mean, se, min_n=report.TREND_MIN_N)
    ratio = report.gap_ratio(gpus[0], mean[0], se[0], gpus[-1], mean[-1], se[-1])
    return {"parameter": name, "value": value, "lp_revenue": rstar,
            "lp_tpot": plan.sli["tpot"], "mixed_fraction": plan.sum_x,
            "solo_efficient": bool(model.solo_efficient),
            "lp_decode_queue": float(np.sum(plan.q_d)),
            "served": plan.completion_rate(model) / np.asarray(model.lambda_, np.float64),
            "runs": runs, "best_other": best,
            "rate": {"gpus": gpus, "gap": mean, "se": se, "fit": fit,
                     "verdict": report.trend_verdict(fit, report.LIMIT_REVENUE),
                     "ratio": ratio}}


def _notes(s: dict, gpus: list[int], pooled_only: list[str]) -> str:
    text = ("Gap = 1 - simulated bundled revenue per GPU / R*, R* the bundled LP optimum at "
            "the point (a policy beats the fluid bound only by noise); 95% t-intervals over "
            f"{s['reps']} replications, the same key for every policy at a point. Gate-and-"
            "Route, FG-SP and the SLI-aware router ran on the pooled engine, the coupled "
            "policies on the per-GPU engine. 'Best other' is the other paper policy with the "
            "highest mean at that point (a maximum of means: slightly optimistic).")
    if pooled_only:
        text += (f" Above n = {s['per_gpu_up_to']} the per-GPU policies "
                 f"{', '.join(pooled_only)} were not run (too expensive at that size), so "
                 "there 'best other' is the best of the pooled ones.")
    if len(gpus) < 4:
        text += (f" {len(gpus)} sizes: the rate of Gate-and-Route's gap is the ratio "
                 "gap(largest n) / gap(smallest n) and the exponent it implies if gap = b n^-c "
                 "(no test of that form; the fitted limit needs four sizes or more).")
    return text


def _pct(pack) -> str:
    if pack["mean"] is None:
        return "-"
    ci = pack["ci95"]
    return f"{100 * pack['mean']:.1f} ± {100 * ci:.1f}" if ci is not None else \
        f"{100 * pack['mean']:.1f}"


def _fmt_value(name: str, v) -> str:
    """``6.31e-4`` for beta, ``0.014`` or ``8`` for the others."""
    return f"{v:.2e}".replace("e-0", "e-") if name == "beta" else f"{v:g}"


def _key_numbers(result) -> list[dict]:
    gpus = result["gpus"]
    rows = []
    for p in result["points"]:
        for n in gpus:
            run = p["runs"][str(n)]
            best = p["best_other"][str(n)]
            rows.append([p["parameter"], _fmt_value(p["parameter"], p["value"]), n,
                         f"{p['lp_revenue']:.1f}", _pct(run[POLICY]["gap"]),
                         "-" if best is None else f"{SHORT[best]}: {_pct(run[best]['gap'])}",
                         _pct(run[COUPLED]["gap"]),
                         report.gap_flag(run[POLICY]["gap"]["mean"],
                                         run[POLICY]["gap"]["ci95"])])
    rates = []
    for p in result["points"]:
        r = p["rate"]
        ratio = r["ratio"]
        rates.append([p["parameter"], _fmt_value(p["parameter"], p["value"]),
                      " / ".join(f"{100 * g:.2f}" for g in r["gap"]),
                      report.fmt_ratio(ratio), report.fmt_limit(r["fit"]), r["verdict"]])
    n_text = " and ".join(str(n) for n in gpus)
    return [{"title": f"Gap to R* (%, 95% CI) at n = {n_text}: Gate-and-Route, the best other "
                      "paper policy at the point, and the offset-1 coupled gate; 'G&R vs 5%': "
                      "whether Gate-and-Route's gap interval lies above, below or across "
                      f"{report.GAP_MARGIN:.0%}",
             "columns": ["parameter", "value", "n", "R*", "GG-SP gap", "best other: gap",
                         "coupled gate gap", "G&R vs 5%"], "rows": rows},
            {"title": f"How fast Gate-and-Route's gap closes: gaps at n = {n_text} (%), the "
                      "ratio of the last to the first with the rate c it implies if gap = b "
                      "n^-c, and the fitted limit (four sizes or more)",
             "columns": ["parameter", "value", "gaps (%)", "ratio, rate", "fitted limit",
                         "verdict (gap -> 0)"], "rows": rates}]


def _policies_run(result) -> list[str]:
    """Every policy run at some n, in the order run."""
    return list(dict.fromkeys(p for n in result["gpus"] for p in result["policies_run"][str(n)]))


def _plot(result, path) -> None:
    """Per parameter (columns) and n (rows): a policy x grid-point heat map of the gap (%)."""
    gpus = result["gpus"]
    params = [p for p in fig9.PARAMS if any(q["parameter"] == p for q in result["points"])]
    widths = [max(2, sum(q["parameter"] == p for q in result["points"])) for p in params]
    rows = len(_policies_run(result))
    size = (3.0 + 0.72 * sum(widths), 1.2 + len(gpus) * (1.0 + 0.42 * rows))
    fig, axes = plt.subplots(len(gpus), len(params), squeeze=False, layout="constrained",
                             figsize=size, gridspec_kw={"width_ratios": widths})
    top = max([100 * r[p]["gap"]["mean"] for q in result["points"] for r in q["runs"].values()
               for p in r if p != "coupled_minus_gate_and_route"] + [10.0])
    image = None
    for i, n in enumerate(gpus):
        names = result["policies_run"][str(n)]
        for j, param in enumerate(params):
            ax = axes[i, j]
            pts = [q for q in result["points"] if q["parameter"] == param]
            gap = np.array([[100 * q["runs"][str(n)][p]["gap"]["mean"] for q in pts]
                            for p in names])
            # Negative gaps (noise: no policy beats the fluid bound) show as zero.
            image = ax.imshow(gap, cmap="YlOrRd", vmin=0.0, vmax=top, aspect="auto")
            for a in range(len(names)):
                for b, q in enumerate(pts):
                    g = q["runs"][str(n)][names[a]]["gap"]
                    above = report.gap_flag(g["mean"], g["ci95"]) == "above"
                    star = "*" if names[a] == q["best_other"][str(n)] else ""
                    ax.text(b, a, f"{100 * g['mean']:.1f}{star}\n±{100 * (g['ci95'] or 0):.1f}",
                            ha="center", va="center", fontsize=6.5,
                            color="white" if gap[a, b] > 0.7 * top else "black",
                            fontweight="bold" if above else "normal")
            ax.set_xticks(range(len(pts)), [_fmt_value(param, q["value"]) for q in pts],
                          rotation=45 if param == "beta" else 0)
            ax.set_yticks(range(len(names)), [SHORT[p] for p in names] if j == 0 else [])
            ax.set_title(f"{param}, n = {n}")
            if i == len(gpus) - 1:
                ax.set_xlabel(fig9.UNITS[param])
    fig.colorbar(image, ax=axes, label="gap 1 - revenue / R* (%)", shrink=0.8, pad=0.01)
    fig.suptitle(f"Gap to the bundled LP bound R* along Fig. 9's parameters ({SCENARIO}; "
                 f"bold: 95% interval above {report.GAP_MARGIN:.0%}; *: best other paper "
                 "policy at the point)")
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
