"""Tuned policies against the LP plan and the paper's policies, and their gap to the LP bound.

For each scenario (``paper-qwen8b``, ``dolly-8class``) and each n, ``jaxqueue tune``'s
comparison (:func:`jaxqueue.tune_cli.compare`): the starting points of every tunable family are
evaluated, the best is tuned (Adam on SPSA or pathwise gradients), and the tuned parameters, the
LP-planned Gate-and-Route, the paper's five policies and a grid over the number of mixed GPUs
are all evaluated on the exact simulator with one fresh key (common random numbers). Written:
``tune_gap.json`` (every comparison, with 95% intervals) and ``tune_gap.png`` (gap to the
bundled LP bound R* against n: LP-planned Gate-and-Route, the best baseline, the tuned policy).

Each (scenario, n) is stored as it finishes (``parts/``), so an interrupted run resumes. The
full sizes take hours on a 2-core CPU (the per-GPU engine at n = 500 dominates); ``--quick``
runs n = 5 and 20 with short horizons in minutes.

    PYTHONPATH=. python experiments/tune_gap.py [--quick] [--out results] [--seed 0]
"""

from __future__ import annotations

import os

import numpy as np

from experiments import common
from experiments.common import plt
from jaxqueue import scenarios
from jaxqueue.tune_cli import compare

NAME = "tune_gap"
FIGURE = "tuning (beyond the paper)"
TITLE = "Tuned policy families against the LP plan and the paper's policies"
OUTPUTS = (f"{NAME}.json", f"{NAME}.png")
FULL = {"scenarios": ["paper-qwen8b", "dolly-8class"], "gpus": [5, 20, 50, 100, 200, 500],
        "steps": 30, "reps": 16, "eval_reps": 32, "horizon": 600.0, "warmup": 150.0}
QUICK = {"scenarios": ["paper-qwen8b", "dolly-8class"], "gpus": [5, 20], "steps": 6, "reps": 4,
         "eval_reps": 8, "horizon": 200.0, "warmup": 50.0}


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs every comparison and writes ``tune_gap.json`` and ``tune_gap.png`` into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    points = []
    for name in s["scenarios"]:
        model = scenarios.load(name)
        for n in s["gpus"]:
            settings = {"seed": seed, "scenario": name, "gpus": int(n),
                        **{k: s[k] for k in ("steps", "reps", "eval_reps", "horizon",
                                             "warmup")}}

            def run(model=model, n=int(n), name=name):
                common.log(f"  {NAME}: {name}, n = {n}")
                result, *_ = compare(model, n, steps=s["steps"], reps=s["reps"],
                                     eval_reps=s["eval_reps"], horizon=s["horizon"],
                                     warmup=s["warmup"], seed=seed, say=common.log)
                return result

            points.append(common.cached(out, f"{NAME}_{name}_n{n}", settings, run))
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=None, policies_=("tuned", "gate-and-route")),
              "points": [_row(p) for p in points], "comparisons": points}
    result = common.jsonable(result)
    result["key_numbers"] = _key_numbers(result)
    _plot(result, os.path.join(out, f"{NAME}.png"))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _row(p: dict) -> dict:
    """One comparison reduced to what the table and the figure show."""
    paper = {k: v for k, v in p["baselines"].items() if "spsa" not in k}
    best = max(paper, key=lambda k: paper[k]["mean"]) if paper else None
    z = None
    gg = p["baselines"].get("gate-and-route")
    if gg:
        se = np.hypot(p["tuned"]["revenue"]["ci95"], gg["ci95"]) / 1.96
        z = (p["tuned"]["revenue"]["mean"] - gg["mean"]) / se if se > 0 else None
    return {"scenario": p["scenario"], "gpus": p["gpus"], "lp_bound": p["lp_bound"],
            "family": p["family"], "start": p["start"], "tuned": p["tuned"]["revenue"],
            "gate_and_route": gg, "best_baseline": best,
            "best_baseline_revenue": paper[best] if best else None,
            "tuned_minus_gate_and_route_z": z, "wall_seconds": p["wall_seconds"]}


def _key_numbers(result) -> list[dict]:
    def rev(r):
        return "-" if r is None else f"{r['mean']:.2f} ± {r['ci95']:.2f}"
    rows = [[r["scenario"], str(r["gpus"]), f"{r['lp_bound']:.2f}", rev(r["gate_and_route"]),
             f"{r['best_baseline']}: {rev(r['best_baseline_revenue'])}", rev(r["tuned"]),
             r["family"], "-" if r["tuned_minus_gate_and_route_z"] is None
             else f"{r['tuned_minus_gate_and_route_z']:.1f}"]
            for r in result["points"]]
    return [{"title": "Revenue per GPU per second (bundled), exact simulator, one fresh key",
             "columns": ["scenario", "n", "LP bound", "GG-SP (LP plan)", "best baseline",
                         "tuned", "family", "z vs GG-SP"], "rows": rows}]


def _plot(result, path) -> None:
    names = sorted({r["scenario"] for r in result["points"]})
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = sorted((r for r in result["points"] if r["scenario"] == name),
                      key=lambda r: r["gpus"])
        ns = [r["gpus"] for r in rows]
        for label, get, color in (
                ("GG-SP (LP plan)", lambda r: r["gate_and_route"], common.COLORS["gate-and-route"]),
                ("best baseline", lambda r: r["best_baseline_revenue"], "0.4"),
                ("tuned", lambda r: r["tuned"], "#1f77b4")):
            vals = [get(r) for r in rows]
            keep = [(n, v, r["lp_bound"]) for n, v, r in zip(ns, vals, rows, strict=True) if v]
            if not keep:
                continue
            ax.errorbar([k[0] for k in keep], [100 * (1 - k[1]["mean"] / k[2]) for k in keep],
                        [100 * k[1]["ci95"] / k[2] for k in keep], fmt="o-", capsize=3,
                        color=color, label=label)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("GPUs n")
        ax.set_ylabel("gap to the LP bound R* (%)")
        ax.set_title(name)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.legend()
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
