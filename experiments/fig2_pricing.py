"""Fig. 2: bundled against separate pricing on the paper's instance.

Gate-and-Route is planned from the bundled LP (Eq. 40) and Prioritize-and-Route from the
separate LP (Eq. 42); both run on the pooled engine with common random numbers. For each, the
per-GPU revenue under both pricings and the per-class prefill and decode queues, next to the LP
targets: the separate plan keeps a persistent decode backlog of the prefill-heavy class
(q_d* = 0.80 per GPU), the bundled plan none.

    PYTHONPATH=. python experiments/fig2_pricing.py [--quick] [--out results]
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.patches import Patch

from experiments import common
from experiments.common import plt
from jaxqueue import fluid, scenarios

NAME = "fig2_pricing"
FIGURE = "Fig. 2"
TITLE = "Bundled vs separate pricing: revenue and per-class queues"
OUTPUTS = (f"{NAME}.json", f"{NAME}.png")
SCENARIO = "paper-qwen8b"
POLICIES = ("gate-and-route", "prioritize-and-route")
FULL = {"gpus": 200, "reps": 32, "horizon": 2000.0, "warmup": 500.0}
QUICK = {"gpus": 50, "reps": 8, "horizon": 600.0, "warmup": 200.0}


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs Fig. 2 and writes ``fig2_pricing.json`` and ``fig2_pricing.png`` into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    model = scenarios.load(SCENARIO)
    n = int(s["gpus"])
    plans = {p: fluid.solve(model, "bundled" if p == "gate-and-route" else "separate")
             for p in POLICIES}

    def simulate():
        runs, cap = common.run_systems(
            f"{NAME} n={n}",
            lambda c: [common.engine_build(p, model, n, plan=plans[p], capacity=c)[0]
                       for p in POLICIES],
            seed=seed, reps=s["reps"], horizon=s["horizon"], warmup=s["warmup"],
            capacity=common.capacity_for(n, list(plans.values())))
        return {"capacity": cap, "runs": {p: common.per_gpu_summary(r, model, n)
                                          for p, r in zip(POLICIES, runs, strict=True)}}

    sim = common.cached(out, f"{NAME}_sim", {"seed": seed, **s}, simulate)
    rows = []
    for p in POLICIES:
        r, plan = sim["runs"][p], plans[p]
        rows.append({"policy": p, "pricing": plan.pricing, "lp": common.plan_dict(plan),
                     "simulated": r})
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=SCENARIO, policies_=POLICIES),
              "class_names": list(model.class_names), "gpus": n, "capacity": sim["capacity"],
              "rows": rows, "key_numbers": _key_numbers(rows, model)}
    _plot(rows, model, n, os.path.join(out, f"{NAME}.png"))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _key_numbers(rows, model) -> list[dict]:
    table = []
    for r in rows:
        sim = r["simulated"]
        for i, name in enumerate(model.class_names):
            table.append([common.LABELS[r["policy"]], name,
                          f"{sim['q_prefill']['mean'][i]:.3f}", f"{r['lp']['q_p'][i]:.3f}",
                          f"{sim['q_decode']['mean'][i]:.3f}", f"{r['lp']['q_d'][i]:.3f}"])
    revenue = [[common.LABELS[r["policy"]], r["pricing"],
                f"{r['simulated']['revenue_bundled']['mean']:.2f} ± "
                f"{r['simulated']['revenue_bundled']['ci95']:.2f}",
                f"{r['simulated']['revenue_separate']['mean']:.2f} ± "
                f"{r['simulated']['revenue_separate']['ci95']:.2f}", f"{r['lp']['revenue']:.2f}"]
               for r in rows]
    return [{"title": "Per-GPU revenue (simulated, 95% CI) and the LP bound of the policy's "
                      "pricing",
             "columns": ["policy", "planned for", "bundled revenue", "separate revenue",
                         "LP R*"], "rows": revenue},
            {"title": "Per-class queues per GPU: simulated mean and LP target",
             "columns": ["policy", "class", "q_p sim", "q_p* LP", "q_d sim", "q_d* LP"],
             "rows": table}]


def _plot(rows, model, n, path):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.0))
    width = 0.35
    names = [common.LABELS[r["policy"]] for r in rows]
    xs = np.arange(len(rows))
    for k, pricing in enumerate(("bundled", "separate")):
        mean = [r["simulated"][f"revenue_{pricing}"]["mean"] for r in rows]
        ci = [r["simulated"][f"revenue_{pricing}"]["ci95"] for r in rows]
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
    # (b) queues per class: q_p and q_d, simulated bars and LP markers.
    labels, sim, ci, lp, colors = [], [], [], [], []
    for r in rows:
        short = "G&R" if r["policy"] == "gate-and-route" else "P&R"
        for key, lp_key, tag in (("q_prefill", "q_p", "q_p"), ("q_decode", "q_d", "q_d")):
            for i in range(model.num_classes):
                labels.append(f"{short}\n{tag},{i + 1}")
                sim.append(r["simulated"][key]["mean"][i])
                ci.append(r["simulated"][key]["ci95"][i])
                lp.append(r["lp"][lp_key][i])
                colors.append(("#4c72b0", "#dd8452")[i])
    xs = np.arange(len(labels))
    ax2.bar(xs, sim, 0.7, yerr=ci, capsize=3, color=colors)
    ax2.scatter(xs, lp, marker="_", s=300, color="k", zorder=3)
    handles = [Patch(color=("#4c72b0", "#dd8452")[i], label=f"class {i + 1}: {name}")
               for i, name in enumerate(model.class_names)]
    handles.append(ax2.scatter([], [], marker="_", s=300, color="k", label="LP target"))
    ax2.set_xticks(xs, labels)
    ax2.set_ylim(bottom=-0.03)
    ax2.set_ylabel("jobs waiting per GPU")
    ax2.set_title("(b) prefill (q_p) and decode (q_d) queues per class")
    ax2.legend(handles=handles, loc="upper left")
    fig.suptitle(f"{SCENARIO}: Gate-and-Route (bundled LP) vs Prioritize-and-Route "
                 "(separate LP)")
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
