"""Fig. 8: revenue against each SLI target, LP curves and simulated SLI-aware Gate-and-Route.

For each SLI alone (prefill fairness eta_1, decode fairness eta_2, average time per output token
eta_3; Sec. 5) the SLI-aware LP's revenue and shadow price along a grid of targets
(:func:`jaxqueue.fluid.frontier`), and at a few targets SLI-aware Gate-and-Route simulated on the
pooled engine, all targets as one vmapped program. The achieved SLIs are computed from the
simulated per-GPU occupancies: prefill fairness max_ij (x_i - x_j), decode fairness
max_ij (y_s,i - y_s,j), and TPOT by the Sec. 5 formula at the simulated X = sum_i x_i.

    PYTHONPATH=. python experiments/fig8_sli.py [--quick] [--out results]
"""

from __future__ import annotations

import os

import numpy as np

from experiments import common
from experiments.common import plt
from jaxqueue import fluid, scenarios

NAME = "fig8_sli"
FIGURE = "Fig. 8"
TITLE = "Revenue against each SLI target: LP frontier and simulated SLI-aware Gate-and-Route"
OUTPUTS = (f"{NAME}.json", f"{NAME}.png")
SCENARIO = "paper-qwen8b"
POLICY = "sli-gate-and-route"
SLIS = ("prefill_fairness", "decode_fairness", "tpot")
FULL = {"gpus": 500, "reps": 16, "horizon": 2000.0, "warmup": 500.0,
        "prefill_fairness": [0.0, 0.05, 0.1, 0.15], "decode_fairness": [0.0, 2.0, 4.0, 6.0],
        "tpot": [0.0223, 0.023, 0.024]}
QUICK = {"gpus": 200, "reps": 4, "horizon": 500.0, "warmup": 150.0,
         "prefill_fairness": [0.05, 0.15], "decode_fairness": [0.0, 4.0], "tpot": [0.023, 0.024]}
LABEL = {"prefill_fairness": "prefill fairness target eta_1 (prefills per GPU)",
         "decode_fairness": "decode fairness target eta_2 (solo decodes per GPU)",
         "tpot": "TPOT target eta_3 (ms per output token)"}


def achieved(model, x, y_s) -> dict[str, float]:
    """The SLIs of per-GPU occupancies (class vectors)."""
    x, y_s = np.asarray(x, np.float64), np.asarray(y_s, np.float64)
    return {"prefill_fairness": float(np.ptp(x)), "decode_fairness": float(np.ptp(y_s)),
            "tpot": fluid.tpot(model, float(np.sum(x)))}


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs Fig. 8 and writes ``fig8_sli.json`` and ``fig8_sli.png`` into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    model = scenarios.load(SCENARIO)
    base = fluid.solve(model, "bundled")
    inv_gamma = 1.0 / float(model.gamma)
    grids = {"prefill_fairness": np.linspace(0.0, 0.2, 41),
             "decode_fairness": np.linspace(0.0, 9.0, 37),
             "tpot": inv_gamma * (1.0 + np.geomspace(0.005, 0.2, 32))}
    curves = {}
    for name in SLIS:
        rows = fluid.frontier(model, name, grids[name])
        curves[name] = {"values": [r["value"] for r in rows],
                        "revenue": [r["revenue"] for r in rows],
                        "shadow_price": [r["shadow_price"] for r in rows]}
    # The range of each SLI: from its smallest feasible value to its value at the optimum.
    smallest = {"prefill_fairness": 0.0, "decode_fairness": 0.0, "tpot": inv_gamma}
    sli_range = {k: base.sli[k] - smallest[k] for k in SLIS}
    targets = [(None, None)] + [(k, float(v)) for k in SLIS for v in s[k]]
    plans = [base if k is None else fluid.solve(model, sli=fluid.SLI(**{k: v}))
             for k, v in targets]
    n = int(s["gpus"])

    def simulate():
        runs, _ = common.run_systems(
            f"{NAME} n={n}",
            lambda c: [common.engine_build(POLICY, model, n, plan=p)[0] for p in plans],
            seed=seed, reps=s["reps"], horizon=s["horizon"], warmup=s["warmup"])
        return [common.per_gpu_summary(r, model, n) for r in runs]

    sims = common.cached(out, f"{NAME}_sim", {"seed": seed, **s}, simulate)
    points = []
    for (k, v), plan, sim in zip(targets, plans, sims, strict=True):
        got = achieved(model, sim["x"]["mean"], sim["y_solo"]["mean"])
        points.append({
            "sli": k or "none", "target": float("nan") if k is None else v,
            "revenue_lp": plan.revenue, "revenue_sim": sim["revenue_bundled"]["mean"],
            "revenue_ci95": sim["revenue_bundled"]["ci95"],
            "achieved": float("nan") if k is None else got[k], "achieved_all": got,
            "lp_sli": plan.sli, "sli_range": float("nan") if k is None else sli_range[k],
            "mixed_gpus": plan.mixed_gpus(n)})
    constrained = [p for p in points if p["sli"] != "none"]
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=SCENARIO, policies_=(POLICY,)),
              "lp_revenue": base.revenue, "inv_gamma": inv_gamma, "lp_sli": base.sli,
              "sli_range": sli_range, "curves": curves, "points": constrained,
              "unconstrained_point": [p for p in points if p["sli"] == "none"][0]}
    result = common.jsonable(result)
    result["key_numbers"] = _key_numbers(result)
    _plot(result, model, os.path.join(out, f"{NAME}.png"))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _key_numbers(result) -> list[dict]:
    rstar = result["lp_revenue"]
    lp_rows = []
    for name, c in result["curves"].items():
        vals, rev, sh = (np.asarray(c[k], float) for k in ("values", "revenue", "shadow_price"))
        k = int(np.argmin(vals))
        lp_rows.append([name, f"{vals[k]:.5g}", f"{rev[k]:.2f}",
                        f"{(rstar - rev[k]) / rstar:.1%}", f"{sh[k]:.4g}",
                        f"{result['lp_sli'][name]:.5g}"])
    sim_rows = [[p["sli"], f"{p['target']:.5g}", f"{p['revenue_lp']:.2f}",
                 f"{p['revenue_sim']:.2f} ± {p['revenue_ci95']:.2f}", f"{p['achieved']:.5g}"]
                for p in result["points"]]
    u = result["unconstrained_point"]
    sim_rows.append(["none", "-", f"{u['revenue_lp']:.2f}",
                     f"{u['revenue_sim']:.2f} ± {u['revenue_ci95']:.2f}",
                     ", ".join(f"{k} {v:.4g}" for k, v in u["achieved_all"].items())])
    return [{"title": f"LP at the tightest target of each SLI (R* = {rstar:.3f})",
             "columns": ["SLI", "tightest target", "LP revenue", "loss vs R*", "shadow price",
                         "value at the unconstrained optimum"], "rows": lp_rows},
            {"title": f"Simulated SLI-aware Gate-and-Route, n = {result['settings']['gpus']}",
             "columns": ["SLI", "target", "LP revenue", "simulated revenue (95% CI)",
                         "achieved SLI"], "rows": sim_rows}]


def _plot(result, model, path):
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    rstar = result["lp_revenue"]
    for ax, name in zip(axes, SLIS, strict=True):
        c = result["curves"][name]
        scale = 1000.0 if name == "tpot" else 1.0
        vals = np.asarray(c["values"]) * scale
        ax.plot(vals, c["revenue"], "-", color="k", lw=1.5, label="LP frontier")
        pts = [p for p in result["points"] if p["sli"] == name]
        if pts:
            tx = np.array([p["target"] for p in pts]) * scale
            ax.errorbar(np.array([p["achieved"] for p in pts]) * scale,
                        [p["revenue_sim"] for p in pts],
                        yerr=[p["revenue_ci95"] for p in pts], fmt="o", capsize=3,
                        color=common.COLORS[POLICY],
                        label=f"simulated, n = {result['settings']['gpus']} (at achieved SLI)")
            ax.scatter(tx, [p["revenue_lp"] for p in pts], marker="x", color="k", zorder=3,
                       label="LP at the simulated targets")
        ax.axhline(rstar, color="grey", ls=":", lw=1, label=f"unconstrained R* = {rstar:.1f}")
        if name == "tpot":
            ax.axvline(result["inv_gamma"] * scale, color="r", ls="--", lw=1,
                       label=f"1/gamma = {result['inv_gamma'] * scale:.1f} ms")
        ax.set_xlabel(LABEL[name])
        ax.set_ylabel("revenue per GPU per second")
        ax.legend(loc="lower right")
    axes[0].set_title("(a) prefill fairness")
    axes[1].set_title("(b) decode fairness")
    axes[2].set_title("(c) time per output token")
    fig.suptitle(f"Fig. 8, {SCENARIO}: revenue against each SLI target (SLI-aware LP, q_d = 0)")
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
