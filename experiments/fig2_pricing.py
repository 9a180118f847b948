"""Fig. 2: bundled against separate pricing on the paper's instance, as n grows.

Gate-and-Route is planned from the bundled LP (Eq. 40) and Prioritize-and-Route from the
separate LP (Eq. 42); both run on the pooled engine with common random numbers, at several n.
For each, the per-GPU revenue under both pricings and the per-class prefill and decode queues
next to their ranges over the LP's optimal face (the separate LP leaves the split of its decode
backlog between the classes free: per class [0, 0.32] and [0, 0.80] jobs per GPU, at least 0.32
in total), and the total decode backlog per GPU against n with its fitted limit: the paper says
it persists under separate pricing and vanishes under bundled pricing.

Sizes above ``reps_up_to`` GPUs run fewer replications (``common.reps_at``): a per-GPU average
over n GPUs is as precise with proportionally fewer.

    PYTHONPATH=. python experiments/fig2_pricing.py [--quick] [--out results]
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.patches import Patch
from scipy import stats as st

from experiments import common
from experiments.common import plt
from jaxqueue import fluid, report, scenarios

NAME = "fig2_pricing"
FIGURE = "Fig. 2"
TITLE = "Bundled vs separate pricing: revenue, per-class queues and the decode backlog in n"
OUTPUTS = (f"{NAME}.json", f"{NAME}.png")
SCENARIO = "paper-qwen8b"
POLICIES = ("gate-and-route", "prioritize-and-route")
# 600 s with 150 s of warm-up: Figs. 4-6's comment says why a short warm-up is enough; the
# two largest sizes run 4 replications each, latency-bound, and set this experiment's time.
FULL = {"gpus": [50, 200, 1000, 5000, 10000], "reps": 32, "horizon": 600.0, "warmup": 150.0,
        "reps_up_to": 200}
QUICK = {"gpus": [20, 50, 200], "reps": 8, "horizon": 600.0, "warmup": 200.0,
         "reps_up_to": None}


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs Fig. 2 and writes ``fig2_pricing.json`` and ``fig2_pricing.png`` into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    if np.ndim(s["gpus"]) == 0:
        s["gpus"] = [s["gpus"]]
    os.makedirs(out, exist_ok=True)
    model = scenarios.load(SCENARIO)
    plans = {p: fluid.solve(model, "bundled" if p == "gate-and-route" else "separate")
             for p in POLICIES}
    faces = {p: common.face_dict(model, plans[p].pricing) for p in POLICIES}
    sizes = sorted(int(v) for v in s["gpus"])
    reps_of = {n: common.reps_at(n, s["reps"], s["reps_up_to"]) for n in sizes}

    def part(n: int):
        reps = reps_of[n]

        def simulate():
            runs, cap = common.run_systems(
                f"{NAME} n={n}",
                lambda c: [common.engine_build(p, model, n, plan=plans[p], capacity=c)[0]
                           for p in POLICIES],
                seed=seed, reps=reps, horizon=s["horizon"], warmup=s["warmup"],
                capacity=common.capacity_for(n, list(plans.values())))
            return {"capacity": cap, "runs": {p: common.per_gpu_summary(r, model, n)
                                              for p, r in zip(POLICIES, runs, strict=True)}}

        settings = {"seed": seed, "n": n, "reps": reps, "horizon": s["horizon"],
                    "warmup": s["warmup"]}
        return common.cached(out, f"{NAME}_sim_{n}", settings, simulate)

    # The sizes side by side, one device each, the costliest (n x reps) first.
    order = sorted(sizes, key=lambda n: -n * reps_of[n])
    sims = dict(zip(order, common.side_by_side([lambda n=n: part(n) for n in order]),
                    strict=True))
    points = []
    for n in sizes:
        reps, sim = reps_of[n], sims[n]
        rows = [{"policy": p, "pricing": plans[p].pricing, "lp": common.plan_dict(plans[p]),
                 "simulated": sim["runs"][p]} for p in POLICIES]
        points.append({"gpus": n, "reps": reps, "capacity": sim["capacity"], "rows": rows})
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=SCENARIO, policies_=POLICIES),
              "class_names": list(model.class_names), "gpus": [p["gpus"] for p in points],
              "points": points, "rows": points[-1]["rows"], "faces": faces}
    result = common.jsonable(result)
    result["backlog_fits"] = {p: report.fit_limit(*report.backlog_series(result, p),
                                                min_n=report.TREND_MIN_N)
                              for p in POLICIES}
    result["key_numbers"] = _key_numbers(result, model)
    _plot(result, model, os.path.join(out, f"{NAME}.png"))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _se_crit(pack) -> tuple[np.ndarray, float]:
    """Standard errors of a pack's mean and the t quantile of its 95% interval."""
    k = int(pack["n"])
    sd = np.asarray([np.nan if v is None else v for v in np.ravel(pack["sd"])], np.float64)
    return sd / np.sqrt(k), float(st.t.ppf(0.975, max(k - 1, 1)))


def _key_numbers(result, model) -> list[dict]:
    rows, n = result["rows"], result["gpus"][-1]
    names = list(model.class_names)
    table = []
    for r in rows:
        sim, face = r["simulated"], result["faces"][r["policy"]]
        qp_lo, qp_hi = report.face_bounds(face, "q_p", names)
        qd_lo, qd_hi = report.face_bounds(face, "q_d", names)
        qp = report.face_cells(sim["q_prefill"]["mean"], qp_lo, qp_hi,
                               *_se_crit(sim["q_prefill"]))
        qd = report.face_cells(sim["q_decode"]["mean"], qd_lo, qd_hi,
                               *_se_crit(sim["q_decode"]))
        for i, name in enumerate(names):
            table.append([common.LABELS[r["policy"]], name, qp[i][0], qp[i][1], *qd[i],
                          f"{r['lp']['q_d'][i]:.3f}"])
    revenue = [[common.LABELS[r["policy"]], r["pricing"],
                f"{r['simulated']['revenue_bundled']['mean']:.2f} ± "
                f"{r['simulated']['revenue_bundled']['ci95']:.2f}",
                f"{r['simulated']['revenue_separate']['mean']:.2f} ± "
                f"{r['simulated']['revenue_separate']['ci95']:.2f}", f"{r['lp']['revenue']:.2f}"]
               for r in rows]
    trend = []
    for point in result["points"]:
        cells = [point["gpus"], point["reps"]]
        for p in POLICIES:
            row = next(x for x in point["rows"] if x["policy"] == p)["simulated"]
            tot = row.get("q_decode_total")
            cells.append("-" if tot is None else f"{tot['mean']:.3f} ± {tot['ci95'] or 0:.3f}")
        trend.append(cells)
    fits = "; ".join(f"{common.LABELS[p]}: {report.fmt_limit(result['backlog_fits'][p])}"
                     for p in POLICIES)
    least = result["faces"]["prioritize-and-route"]["totals"]["q_d"]
    return [{"title": f"Per-GPU revenue at n = {n} (simulated, 95% CI) and the LP bound of the "
                      "policy's pricing",
             "columns": ["policy", "planned for", "bundled revenue", "separate revenue",
                         "LP R*"], "rows": revenue},
            {"title": f"Per-class queues per GPU at n = {n}: simulated (95% CI) against the "
                      "range over the policy's LP's optimal face; the decode backlog's "
                      "distance to that range (zero inside) with its 95% interval, and the "
                      "vertex the solver returns (one optimum among many)",
             "columns": ["policy", "class", "q_p sim", "q_p* range", "q_d sim",
                         "q_d* range (optimal face)", "q_d distance [95%]", "q_d position",
                         "q_d* at the solver's vertex"], "rows": table},
            {"title": f"Total decode backlog per GPU against n (95% CI); the separate LP's "
                      f"optima hold {least[0]:.3f} to {least[1]:.3f} in total, the bundled "
                      f"LP's none. Fitted limits: {fits}",
             "columns": ["n", "reps", *(f"{common.LABELS[p]} q_d" for p in POLICIES)],
             "rows": trend}]


def _plot(result, model, path):
    rows, n = result["rows"], result["gpus"][-1]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.35
    names = [common.LABELS[r["policy"]] for r in rows]
    xs = np.arange(len(rows))
    for k, pricing in enumerate(("bundled", "separate")):
        mean = [r["simulated"][f"revenue_{pricing}"]["mean"] for r in rows]
        ci = [r["simulated"][f"revenue_{pricing}"]["ci95"] or 0.0 for r in rows]
        ax1.bar(xs + (k - 0.5) * width, mean, width, yerr=ci, capsize=3,
                label=f"simulated, {pricing} pricing", color=("#4c72b0", "#dd8452")[k])
    for j, r in enumerate(rows):  # the bound over the bar of the pricing the policy plans for
        k = 0 if r["pricing"] == "bundled" else 1
        ax1.plot([j + (k - 1) * width, j + k * width], [r["lp"]["revenue"]] * 2, "k--", lw=1.5,
                 label="LP bound R* of the policy's own pricing" if j == 0 else None)
    ax1.set_xticks(xs, names)
    low = min(min(r["simulated"][f"revenue_{p}"]["mean"] for p in ("bundled", "separate"))
              for r in rows)
    ax1.set_ylim(0.9 * low, 1.04 * max(r["lp"]["revenue"] for r in rows))
    ax1.set_ylabel("revenue per GPU per second")
    ax1.set_title(f"(a) revenue, n = {n} GPUs")
    ax1.legend(loc="lower right")
    # (b) queues per class: q_p and q_d, simulated bars and the LP's optimal ranges.
    labels, sim, ci, lo, hi, colors = [], [], [], [], [], []
    for r in rows:
        short = "G&R" if r["policy"] == "gate-and-route" else "P&R"
        face = result["faces"][r["policy"]]
        for key, lp_key, tag in (("q_prefill", "q_p", "q_p"), ("q_decode", "q_d", "q_d")):
            bounds = report.face_bounds(face, lp_key, model.class_names)
            for i in range(model.num_classes):
                labels.append(f"{short}\n{tag},{i + 1}")
                sim.append(r["simulated"][key]["mean"][i])
                ci.append(r["simulated"][key]["ci95"][i] or 0.0)
                lo.append(bounds[0][i])
                hi.append(bounds[1][i])
                colors.append(("#4c72b0", "#dd8452")[i])
    xs = np.arange(len(labels))
    ax2.bar(xs, sim, 0.7, yerr=ci, capsize=3, color=colors)
    for x, a, b in zip(xs, lo, hi, strict=True):  # a range, or a point where it is unique
        ax2.plot([x + 0.42] * 2, [a, max(b, a + 0.004)], color="k", lw=3, solid_capstyle="butt")
    handles = [Patch(color=("#4c72b0", "#dd8452")[i], label=f"class {i + 1}: {name}")
               for i, name in enumerate(model.class_names)]
    handles.append(ax2.plot([], [], color="k", lw=3,
                            label="range over the LP's optimal plans")[0])
    ax2.set_xticks(xs, labels)
    ax2.set_ylim(bottom=-0.03)
    ax2.set_ylabel("jobs waiting per GPU")
    ax2.set_title(f"(b) prefill (q_p) and decode (q_d) queues per class, n = {n}")
    ax2.legend(handles=handles, loc="upper left")
    # (c) the total decode backlog against n, with the fitted trend and its limit.
    for k, p in enumerate(POLICIES):
        gpus, q, se = report.backlog_series(result, p)
        g = np.asarray(gpus, float) * (1.0 + 0.04 * (k - 0.5))  # side by side on the log axis
        color = common.COLORS[p]
        ax3.errorbar(g, q, yerr=1.96 * np.asarray(se), marker="o", ms=4, capsize=3, ls="none",
                     color=color, label=f"{common.LABELS[p]} (95% CI)")
        fit = result["backlog_fits"][p]
        if fit.get("limit") is not None:
            grid = np.geomspace(min(gpus), max(gpus), 50)
            ax3.plot(grid, fit["limit"] + fit["b"] * grid ** -fit["rate"], "--", lw=1,
                     color=color, label=f"fit a + b n^-{fit['rate']:g}: limit "
                                        f"[{fit['low']:.3f}, {fit['high']:.3f}]")
    least = result["faces"]["prioritize-and-route"]["totals"]["q_d"][0]
    ax3.axhline(least, color="k", lw=0.8, ls=":",
                label=f"least backlog of a separate-LP optimum ({least:.3f})")
    ax3.axhline(report.LIMIT_LEVEL * least, color="0.5", lw=0.8, ls="-.",
                label=f"verdict margin ({report.LIMIT_LEVEL:.0%} of it)")
    ax3.set_xscale("log")
    ax3.set_xlabel("number of GPUs n")
    ax3.set_ylabel("decode jobs waiting per GPU (both classes)")
    ax3.set_title("(c) total decode backlog against n")
    ax3.legend(loc="best")
    fig.suptitle(f"{SCENARIO}: Gate-and-Route (bundled LP) vs Prioritize-and-Route "
                 "(separate LP)")
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
