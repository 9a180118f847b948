"""Table 1 / EC 14: the eight Dolly-15k categories, their LP plan and simulated revenue.

Scenario ``dolly-8class``: the category means of Table 1 as classes (0.25 requests/s per GPU
each, theta = 0.1, Qwen-8B calibration). Written: the bundled LP's plan per class (occupancies,
queues, the share of arrivals it serves) and Gate-and-Route simulated on the pooled engine, per
class completion rates against the plan and the revenue against R*. EC 14's exponential fit of
output lengths needs per-request data, which jaxqueue does not ship: that claim is reported as
not comparable.

    PYTHONPATH=. python experiments/table1_dolly.py [--quick] [--out results]
"""

from __future__ import annotations

import os

import numpy as np

from experiments import common
from experiments.common import plt
from jaxqueue import fluid, scenarios

NAME = "table1_dolly"
FIGURE = "Table 1 / EC 14"
TITLE = "Eight Dolly-15k classes: LP plan and simulated Gate-and-Route"
OUTPUTS = (f"{NAME}.json", f"{NAME}.png")
SCENARIO = "dolly-8class"
POLICY = "gate-and-route"
FULL = {"gpus": 500, "reps": 16, "horizon": 2000.0, "warmup": 500.0}
QUICK = {"gpus": 50, "reps": 8, "horizon": 500.0, "warmup": 150.0}


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs Table 1 and writes ``table1_dolly.json`` and ``table1_dolly.png`` into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    model = scenarios.load(SCENARIO)
    plan = fluid.solve(model, "bundled")
    n = int(s["gpus"])

    def simulate():
        runs, cap = common.run_systems(
            f"{NAME} n={n}",
            lambda c: [common.engine_build(POLICY, model, n, plan=plan, capacity=c)[0]],
            seed=seed, reps=s["reps"], horizon=s["horizon"], warmup=s["warmup"],
            capacity=common.capacity_for(n, [plan]))
        return common.per_gpu_summary(runs[0], model, n)

    sim = common.cached(out, f"{NAME}_sim", {"seed": seed, **s}, simulate)
    lam = np.asarray(model.lambda_, np.float64)
    served = np.asarray(model.mu_p * plan.x, np.float64) / lam
    classes = [{"name": c, "P": float(model.P[i]), "D": float(model.D[i]),
                "arrival_rate": float(lam[i]), "price": float(model.w[i]),
                "x": float(plan.x[i]), "y_m": float(plan.y_m[i]), "y_s": float(plan.y_s[i]),
                "q_p": float(plan.q_p[i]), "q_d": float(plan.q_d[i]),
                "served_share": float(served[i]),
                "lp_completion_rate": float(plan.completion_rate(model)[i]),
                "sim_completion_rate": sim["completion_rate"]["mean"][i],
                "sim_completion_ci95": sim["completion_rate"]["ci95"][i]}
               for i, c in enumerate(model.class_names)]
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=SCENARIO, policies_=(POLICY,)),
              "gpus": n, "lp": common.plan_dict(plan), "classes": classes, "simulated": sim}
    result = common.jsonable(result)
    result["key_numbers"] = _key_numbers(result)
    _plot(result, os.path.join(out, f"{NAME}.png"))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _key_numbers(result) -> list[dict]:
    rows = [[c["name"], f"{c['P']:g}", f"{c['D']:g}", f"{c['price']:.1f}", f"{c['x']:.4f}",
             f"{c['y_m']:.3f}", f"{c['y_s']:.3f}", f"{c['q_p']:.3f}", f"{c['served_share']:.1%}",
             f"{c['lp_completion_rate']:.4f}",
             f"{c['sim_completion_rate']:.4f} ± {c['sim_completion_ci95']:.4f}"]
            for c in result["classes"]]
    rev = result["simulated"]["revenue_bundled"]
    return [{"title": f"Bundled LP plan per class (R* = {result['lp']['revenue']:.3f}); "
                      f"simulated Gate-and-Route at n = {result['gpus']}: revenue "
                      f"{rev['mean']:.3f} ± {rev['ci95']:.3f}",
             "columns": ["class", "P", "D", "w = c_p P + c_d D", "x*", "y_m*", "y_s*", "q_p*",
                         "arrivals served (LP)", "LP completions/s", "simulated (95% CI)"],
             "rows": rows}]


def _plot(result, path):
    classes = result["classes"]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    xs = np.arange(len(classes))
    ax.bar(xs - 0.27, [c["arrival_rate"] for c in classes], 0.27, color="#c7c7c7",
           label="arrival rate lambda_i")
    ax.bar(xs, [c["lp_completion_rate"] for c in classes], 0.27, color="#4c72b0",
           label="LP completion rate")
    ax.bar(xs + 0.27, [c["sim_completion_rate"] for c in classes], 0.27,
           yerr=[c["sim_completion_ci95"] for c in classes], capsize=3, color="#d62728",
           label=f"Gate-and-Route simulated, n = {result['gpus']} (95% CI)")
    ax.set_xticks(xs, [f"{c['name']}\nP={c['P']:g}, D={c['D']:g}" for c in classes])
    ax.set_ylabel("requests per GPU per second")
    rev = result["simulated"]["revenue_bundled"]
    ax.set_title(f"Table 1 / EC 14, {SCENARIO}: per-class throughput; revenue per GPU "
                 f"{rev['mean']:.1f} (simulated) vs R* = {result['lp']['revenue']:.1f} (LP)")
    ax.legend(loc="upper right")
    ax.set_ylim(0, 1.35 * max(c["arrival_rate"] for c in classes))
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
