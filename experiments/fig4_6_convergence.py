"""Figs. 4-6: convergence of Gate-and-Route to the fluid optimum as n grows (paper-qwen8b).

For each n, Gate-and-Route with the greedy router (Figs. 4-5) and with the SLI-aware router
(``sli-gate-and-route`` without SLI targets, Fig. 6) run on the pooled engine, both planned from
the bundled LP. Written: per-GPU revenue with 95% intervals against R* and the rate at which the
gap shrinks (a log-log fit with its interval: the paper gives no rate), the normalised queues
against the fluid targets (Fig. 4), and the normalised occupancies x, y_m, y_s against x*, y*
under each router (Figs. 5 and 6). Planned quantities are compared with their ranges over the
LP's optimal face (the bundled LP leaves y_m and y_s per class free within ranges), and every
deviation's limit as n grows is fitted over the sizes run (``report.fit_limit``).

Sizes above ``reps_up_to`` GPUs run fewer replications (``common.reps_at``): a per-GPU average
over n GPUs is as precise with proportionally fewer, and the pooled engine's cost per event does
not grow with n, so the full run reaches n = 10,000.

Each n is its own run (the points are not stacked: event rates grow with n, so a stack would
spend the largest n's events on every point); nearby n share one compiled program.

    PYTHONPATH=. python experiments/fig4_6_convergence.py [--quick] [--out results]
"""

from __future__ import annotations

import os

import numpy as np

from experiments import common
from experiments.common import plt
from jaxqueue import fluid, report, scenarios
from jaxqueue.policies.common import default_capacity

NAME = "fig4_6_convergence"
FIGURE = "Figs. 4-6"
TITLE = "Convergence to the fluid optimum: revenue, queues and occupancies against n"
OUTPUTS = (f"{NAME}.json", "fig4_revenue_queues.png", "fig5_greedy_router.png",
           "fig6_sli_router.png")
SCENARIO = "paper-qwen8b"
POLICIES = ("gate-and-route", "sli-gate-and-route")
# 1,000 s with 200 s of warm-up. Even a tenth of the former 2,500 s (50 s of warm-up, 200 s
# counted) gave Gate-and-Route's revenue at n = 5 ... 2,000 within the intervals of 64
# replications x 2,500 s (docs/results.md), so warm-up bias is below the noise. The sizes above
# 500 run few replications, whose steps are latency-bound: the horizon sets the run's time.
FULL = {"gpus": [5, 20, 50, 200, 500, 2000, 5000, 10000], "reps": 32, "horizon": 1000.0,
        "warmup": 200.0, "reps_up_to": 500}
QUICK = {"gpus": [5, 20, 50, 200], "reps": 16, "horizon": 800.0, "warmup": 200.0,
         "reps_up_to": None}
LEVELS = ("x", "y_mixed", "y_solo", "q_prefill", "q_decode")


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs Figs. 4-6 and writes their JSON and three PNGs into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    model = scenarios.load(SCENARIO)
    plan = fluid.solve(model, "bundled")
    face = common.face_dict(model, "bundled")
    lp = common.jsonable(common.plan_dict(plan))
    sizes = [int(n) for n in s["gpus"]]
    reps_of = {n: common.reps_at(n, s["reps"], s["reps_up_to"]) for n in sizes}

    def part(policy: str, n: int):
        reps = reps_of[n]

        def simulate():
            runs, _ = common.run_systems(
                f"{NAME} {policy} n={n}",
                lambda c: [common.engine_build(policy, model, n, plan=plan, capacity=c)[0]],
                seed=seed, reps=reps, horizon=s["horizon"], warmup=s["warmup"],
                capacity=default_capacity(n))
            return common.per_gpu_summary(runs[0], model, n)

        settings = {"seed": seed, "policy": policy, "n": n, "reps": reps,
                    **{k: s[k] for k in ("horizon", "warmup")}}
        return common.cached(out, f"{NAME}_{policy}_{n}", settings, simulate)

    # Every (policy, n) side by side, one device each, the costliest (n x reps) first: the
    # sizes above 500 run few replications, latency-bound, and gain little from sharding.
    order = sorted(((p, n) for p in POLICIES for n in sizes), key=lambda k: -k[1] * reps_of[k[1]])
    parts = dict(zip(order, common.side_by_side([lambda k=k: part(*k) for k in order]),
                     strict=True))
    series = {}
    for policy in POLICIES:
        rows = []
        for n in sizes:
            reps, r = reps_of[n], parts[policy, n]
            rows.append({"gpus": n, "reps": reps, "mixed_gpus": plan.mixed_gpus(n), **r,
                         **_deviations(r, face, lp, model.class_names)})
        gaps = [plan.revenue - r["revenue_bundled"]["mean"] for r in rows]
        ses = [r["revenue_bundled"]["sd"] / np.sqrt(r["revenue_bundled"]["n"]) for r in rows]
        gpus = [r["gpus"] for r in rows]
        fit = report.fit_power_law(gpus, gaps, ses)
        least = report.TREND_MIN_N  # the sizes the report's limit claims are fitted on
        limits = {"gap": report.fit_limit(gpus, gaps, ses, min_n=least)}
        for key in ("x", "y", "queue", "decode"):
            limits[key] = report.fit_limit(gpus, [r[f"{key}_distance"] for r in rows],
                                           [r[f"{key}_distance_se"] for r in rows], min_n=least)
        series[policy] = {"rows": rows, "gap_fit": fit, "limits": limits}
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=SCENARIO, policies_=POLICIES),
              "class_names": list(model.class_names), "lp": lp, "face": face,
              "series": series}
    result = common.jsonable(result)
    result["key_numbers"] = _key_numbers(result)
    _plot_revenue(result, os.path.join(out, OUTPUTS[1]))
    _plot_occupancy(result, "gate-and-route", "Fig. 5: greedy router",
                    os.path.join(out, OUTPUTS[2]))
    _plot_occupancy(result, "sli-gate-and-route", "Fig. 6: SLI-aware router",
                    os.path.join(out, OUTPUTS[3]))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _deviations(r, face, lp, class_names) -> dict[str, float]:
    """Distances of the simulated per-GPU levels to their ranges over the LP's optimal face
    (``report.level_deviations``: x, y = (y_m, y_s) and the queues relative to the plan's
    totals; ``decode``: the total decode queue per GPU), each with its standard error, and the
    total queues."""
    dev = report.level_deviations(r, face, lp, class_names)
    out = {}
    for key, (d, se) in dev.items():
        out[f"{key}_distance"], out[f"{key}_distance_se"] = d, se
    q_p, q_d = (float(np.sum(r[k]["mean"])) for k in ("q_prefill", "q_decode"))
    return {**out, "queue_total": q_p + q_d, "decode_queue_total": q_d,
            "prefill_queue_total": q_p}


def _key_numbers(result) -> list[dict]:
    rstar = result["lp"]["revenue"]
    tables = []
    for policy, ser in result["series"].items():
        rows = [[r["gpus"], r["reps"], r["mixed_gpus"],
                 f"{r['revenue_bundled']['mean']:.3f} ± {r['revenue_bundled']['ci95'] or 0:.3f}",
                 f"{rstar - r['revenue_bundled']['mean']:.3f}",
                 f"{100 * (rstar - r['revenue_bundled']['mean']) / rstar:.2f}%",
                 *(f"{r[f'{k}_distance']:.3f} ± {1.96 * r[f'{k}_distance_se']:.3f}"
                   for k in ("x", "y", "queue")),
                 f"{r['prefill_queue_total']:.3f}",
                 f"{r['decode_queue_total']:.3f} ± {1.96 * r['decode_distance_se']:.3f}"]
                for r in ser["rows"]]
        lim = ser["limits"]
        tables.append({
            "title": f"{common.LABELS[policy]}: per-GPU bundled revenue against R* = {rstar:.3f};"
                     f" gap ~ n^b with b = {_fmt_fit(ser['gap_fit'])}. Distances to the ranges "
                     "over the LP's optimal face (zero inside; relative L1, ± 1.96 se). Fitted "
                     "limits as n grows (d = a + b n^-c): "
                     + "; ".join(f"{k} {report.fmt_limit(lim[k])}"
                                 for k in ("gap", "x", "y", "queue", "decode")),
            "columns": ["n", "reps", "M", "revenue (95% CI)", "gap", "gap %",
                        "x dist. to face", "y dist. to face", "queue dist. to face",
                        "q_p per GPU", "q_d per GPU"],
            "rows": rows})
    return tables


def _fmt_fit(fit) -> str:
    if fit.get("slope") is None:
        return "n/a (" + fit.get("note", "") + ")"
    return f"{fit['slope']:.3f} [{fit['low']:.3f}, {fit['high']:.3f}] (95%, {fit['points']} n)"


def _plot_revenue(result, path):
    rstar = result["lp"]["revenue"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2))
    for k, (policy, ser) in enumerate(result["series"].items()):
        n = np.array([r["gpus"] for r in ser["rows"]], float)
        mean = np.array([r["revenue_bundled"]["mean"] for r in ser["rows"]])
        ci = np.array([r["revenue_bundled"]["ci95"] for r in ser["rows"]])
        shift = 1.0 + 0.04 * (k - 0.5)  # side by side on the log axis
        ax1.errorbar(n * shift, mean, yerr=ci, marker="o", ms=4, capsize=3,
                     color=common.COLORS[policy], label=f"{common.LABELS[policy]} (95% CI)")
        gap = rstar - mean
        ok = gap > 0
        ax2.plot(n[ok], gap[ok], "o", color=common.COLORS[policy],
                 label=f"{common.LABELS[policy]}: b = {_fmt_fit(ser['gap_fit']).split(' (')[0]}")
        fit = ser["gap_fit"]
        if fit.get("slope") is not None:
            grid = np.geomspace(n.min(), n.max(), 50)
            ax2.plot(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], "--",
                     color=common.COLORS[policy], lw=1)
    ax1.axhline(rstar, color="k", ls="--", lw=1, label=f"fluid LP bound R* = {rstar:.2f}")
    ax1.set_xscale("log")
    ax1.set_xlabel("number of GPUs n")
    ax1.set_ylabel("bundled revenue per GPU per second")
    ax1.set_title("(a) revenue per GPU against n")
    ax1.legend(loc="lower right")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    common.plain_ticks(ax2)
    ax2.set_xlabel("number of GPUs n")
    ax2.set_ylabel("gap R* - revenue per GPU")
    ax2.set_title("(b) gap to R*, fit gap ~ a n^b")
    ax2.legend(loc="upper right")
    ser = result["series"]["gate-and-route"]
    n = np.array([r["gpus"] for r in ser["rows"]], float)
    lp = result["lp"]
    names = result["class_names"]
    styles = (("q_prefill", "q_p", "-", "o"), ("q_decode", "q_d", ":", "s"))
    for i, cname in enumerate(names):
        color = ("#4c72b0", "#dd8452")[i % 2]
        for key, lp_key, ls, marker in styles:
            mean = np.array([r[key]["mean"][i] for r in ser["rows"]])
            ci = np.array([r[key]["ci95"][i] for r in ser["rows"]])
            ax3.errorbar(n, mean, yerr=ci, ls=ls, marker=marker, ms=4, capsize=2, color=color,
                         label=f"{lp_key},{i + 1} ({cname})")
            common.target_line(ax3, n, lp[lp_key][i], color=color, lw=0.8, alpha=0.7)
    ax3.set_xscale("log")
    ax3.set_xlabel("number of GPUs n")
    ax3.set_ylabel("jobs waiting per GPU (Q/n)")
    ax3.set_title("(c) GG-SP queues per GPU (dashed: LP targets)")
    ax3.legend(loc="upper right", ncol=1)
    fig.suptitle(f"Fig. 4, {SCENARIO}: convergence of Gate-and-Route to the fluid optimum "
                 f"({result['settings']['reps']} replications per n)")
    fig.tight_layout()
    common.save_png(fig, path)


def _plot_occupancy(result, policy, title, path):
    ser = result["series"][policy]
    lp = result["lp"]
    n = np.array([r["gpus"] for r in ser["rows"]], float)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    panels = (("x", "x", "prefills in service per GPU, x_i = X_i/n", True),
              ("y_mixed", "y_m", "decodes on mixed GPUs per GPU, y_m,i", False),
              ("y_solo", "y_s", "decodes on solo GPUs per GPU, y_s,i", False))
    for ax, (key, lp_key, label, log_y) in zip(axes, panels, strict=True):
        for i, cname in enumerate(result["class_names"]):
            color = ("#4c72b0", "#dd8452")[i % 2]
            mean = np.array([r[key]["mean"][i] for r in ser["rows"]])
            ci = np.array([r[key]["ci95"][i] for r in ser["rows"]])
            ax.errorbar(n, mean, yerr=ci, marker="o", ms=4, capsize=2, color=color,
                        label=f"class {i + 1} ({cname}), simulated")
            lo, hi = report.face_bounds(result["face"], lp_key, result["class_names"])
            if hi[i] - lo[i] > 1e-6:  # several optimal values: the range, not one vertex
                ax.fill_between([n.min(), n.max()], lo[i], hi[i], color=color, alpha=0.15,
                                label=f"class {i + 1}, LP optimal range [{lo[i]:.3g}, "
                                      f"{hi[i]:.3g}]")
            else:
                common.target_line(ax, n, lp[lp_key][i], color=color, lw=1,
                                   label=f"class {i + 1}, LP target {lp[lp_key][i]:.4g}")
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
            common.plain_ticks(ax)
        ax.set_xlabel("number of GPUs n")
        ax.set_ylabel(label)
        ax.legend(loc="best")
    axes[0].set_title("(a) prefill occupancy")
    axes[1].set_title("(b) mixed decode occupancy")
    axes[2].set_title("(c) solo decode occupancy")
    fig.suptitle(f"{title} ({common.LABELS[policy]}, {SCENARIO}): occupancies against the LP "
                 "plan")
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
