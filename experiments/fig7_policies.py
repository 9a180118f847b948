"""Fig. 7: the five policies of Sec. 6.3 on a grid of random instances.

Instances are drawn from the paper's ranges with ``jax.random.key(grid_seed)`` (recorded in the
output): alpha ~ U(0.015, 0.02) s, beta ~ log-uniform(1e-5, 1e-3) s/token (the range spans two
decades), gamma ~ U(10, 50) tok/s, P_i and D_i ~ U(200, 3000) tokens (rounded), lambda_i ~
U(0.25, 0.5) per GPU, two classes; theta = 0.1, B = 16, C = 256, c_p = 0.1 and c_d = 0.2 as in
the paper's instance (the paper's ranges leave them fixed). The paper's own instance
(paper-qwen8b) runs alongside, reported apart from the grid statistics.

All five policies (FI-WSP, GI-WSP, GF-WSP, FG-SP, GG-SP = Gate-and-Route) run on the per-GPU
engine, a like-for-like comparison (the coupled ones need it), each as one vmapped program over
the instances, with the same key for every policy (common random numbers). Revenue is
normalised by each instance's bundled LP bound R*. Written: normalised revenue per policy
(mean and spread over instances and seeds), and how often each policy wins and by how much, at
n = 500 and n = 50.

    PYTHONPATH=. python experiments/fig7_policies.py [--quick] [--out results]
"""

from __future__ import annotations

import os

import jax
import numpy as np

from experiments import common
from experiments.common import plt
from jaxqueue import fluid, report, scenarios, sweep
from jaxqueue.model import Model

NAME = "fig7_policies"
FIGURE = "Fig. 7"
TITLE = "Five policies on a grid of random instances (normalised revenue)"
OUTPUTS = (f"{NAME}.json", f"{NAME}.png")
POLICIES = ("fi-wsp", "gi-wsp", "gf-wsp", "fg-sp", "gate-and-route")
RANGES = {"alpha": (0.015, 0.02), "beta": (1e-5, 1e-3), "gamma": (10.0, 50.0),
          "P": (200.0, 3000.0), "D": (200.0, 3000.0), "lambda_": (0.25, 0.5)}
FIXED = {"theta": 0.1, "B": 16, "C": 256, "c_p": 0.1, "c_d": 0.2}
# Every claim of Fig. 7 is judged over the instances (their spread is what the intervals
# measure), so 2 replications of 1,000 s per instance are enough.
FULL = {"instances": 24, "gpus": [500, 50], "reps": 2, "horizon": 1000.0, "warmup": 250.0,
        "grid_seed": 2026}
QUICK = {"instances": 3, "gpus": [500, 50], "reps": 2, "horizon": 200.0, "warmup": 80.0,
         "grid_seed": 2026}


def draw_instances(grid_seed: int, count: int, classes: int = 2) -> list[dict]:
    """``count`` random instances from the paper's ranges (module docstring), as model fields."""
    if count < 1:
        raise ValueError(f"instances = {count!r} is invalid: must be an integer >= 1")
    k = jax.random.split(jax.random.key(grid_seed), 6)

    def uniform(key, shape, lo, hi):
        return np.asarray(jax.random.uniform(key, shape, minval=lo, maxval=hi), np.float64)

    alpha = uniform(k[0], (count,), *RANGES["alpha"])
    beta = 10.0 ** uniform(k[1], (count,), *np.log10(RANGES["beta"]))
    gamma = uniform(k[2], (count,), *RANGES["gamma"])
    P = np.round(uniform(k[3], (count, classes), *RANGES["P"]))
    D = np.round(uniform(k[4], (count, classes), *RANGES["D"]))
    lam = uniform(k[5], (count, classes), *RANGES["lambda_"])
    return [{"alpha": round(float(alpha[j]), 6), "beta": float(f"{beta[j]:.4g}"),
             "gamma": round(float(gamma[j]), 3), "P": P[j].tolist(), "D": D[j].tolist(),
             "lambda_": np.round(lam[j], 4).tolist()} for j in range(count)]


def instance_model(fields: dict) -> Model:
    """The model of one grid instance (one name and class names for all: one structure)."""
    classes = len(fields["P"])
    return Model(name="fig7-grid", class_names=tuple(f"class-{i + 1}" for i in range(classes)),
                 theta=[FIXED["theta"]] * classes, B=FIXED["B"], C=FIXED["C"],
                 c_p=FIXED["c_p"], c_d=FIXED["c_d"], **fields)


def main(out: str = "results", quick: bool = False, seed: int = 0, **given) -> dict:
    """Runs Fig. 7 and writes ``fig7_policies.json`` and ``fig7_policies.png`` into ``out``."""
    timer = common.Timer()
    s = common.sizes(quick, FULL, QUICK, given)
    os.makedirs(out, exist_ok=True)
    fields = draw_instances(int(s["grid_seed"]), int(s["instances"]))
    paper = scenarios.load("paper-qwen8b")
    models = [instance_model(f) for f in fields]
    paper_fields = {k: np.asarray(getattr(paper, k)).tolist()
                    for k in ("alpha", "beta", "gamma", "P", "D", "lambda_")}
    models.append(instance_model(paper_fields))  # the last point: the paper's instance
    plans = [fluid.solve(m, "bundled") for m in models]
    rstar = np.array([p.revenue for p in plans])
    instances = [{**f, "lp_revenue": float(p.revenue), "mixed_fraction": p.sum_x,
                  "kappa": float(m.kappa), "solo_efficient": bool(m.solo_efficient),
                  "lp_decode_queue": float(np.sum(p.q_d))}
                 for f, p, m in zip([*fields, paper_fields], plans, models, strict=True)]
    grids = []
    for n in s["gpus"]:
        n = int(n)
        per_policy = {}
        for policy in POLICIES:
            def simulate(policy=policy, n=n):
                runs = _simulate(f"{NAME} {policy} n={n}", policy, n, models, plans, seed, s)
                sums = [common.per_gpu_summary(r, m, n) for r, m in zip(runs, models,
                                                                        strict=True)]
                return {"capacity": max(r.buffer_capacity or 0 for r in runs) or None,
                        "rerun_reps": [list(r.rerun_reps) for r in runs],
                        "revenue_reps": [q["revenue_bundled_reps"] for q in sums],
                        # What explains a collapse: prefills in service and the decode backlog
                        # per GPU (means over replications), against the plan's sum x* and q_d*.
                        "x_total": [float(np.sum(q["x"]["mean"])) for q in sums],
                        "q_decode_total": [float(np.sum(q["q_decode"]["mean"])) for q in sums],
                        "events": sum(r.events for r in runs)}

            settings = {"seed": seed, "policy": policy, "n": n, "fields": fields,
                        **{k: s[k] for k in ("reps", "horizon", "warmup")}}
            per_policy[policy] = common.cached(out, f"{NAME}_{policy}_{n}", settings, simulate)
        grids.append(_grid_summary(n, per_policy, rstar))
    result = {**common.meta(NAME, FIGURE, TITLE, quick=quick, seed=seed, settings=s,
                            scenario=None, policies_=POLICIES),
              "engine": "per-gpu", "ranges": RANGES, "fixed": FIXED,
              "instances": instances[:-1], "paper_instance": instances[-1], "grids": grids,
              "notes": "Grid instances drawn with jax.random.key(grid_seed); the same key "
                       "(seed) for every policy: common random numbers. Normalised revenue = "
                       "simulated bundled revenue per GPU / the instance's LP bound R*. "
                       "The paper's instance is reported apart from the grid statistics."}
    result = common.jsonable(result)
    result["key_numbers"] = _key_numbers(result)
    _plot(result, os.path.join(out, f"{NAME}.png"))
    return common.finish(out, NAME, OUTPUTS, result, timer)


def _simulate(label: str, policy: str, n: int, models, plans, seed: int, s: dict) -> list:
    """The instances under one policy at n GPUs, one vmapped program, the seed's key for every
    instance (common random numbers). A FCFS ring that overflows reruns only the replications
    that overflowed, with a larger ring (``simulate_many``), and says so on stderr."""
    timer = common.Timer()
    capacity = common.capacity_for(n, plans)
    systems = [common.engine_build(policy, m, n, engine="per-gpu", plan=p, capacity=capacity)[0]
               for m, p in zip(models, plans, strict=True)]
    runs = sweep.simulate_many(jax.random.key(seed), systems, reps=s["reps"],
                               horizon=s["horizon"], warmup=s["warmup"], devices=jax.devices(),
                               notify=lambda line: common.log(f"    {label}: {line}"))
    rerun = sum(len(r.rerun_reps) for r in runs)
    common.log(f"    {label}: {len(systems)} point(s) x {s['reps']} reps, "
               f"{sum(r.events for r in runs):,} events, {timer():.0f} s"
               + (f" ({rerun} replication(s) rerun after a ring overflow)" if rerun else ""))
    return runs


def _grid_summary(n: int, per_policy: dict, rstar: np.ndarray) -> dict:
    policies_out = {}
    for policy, sim in per_policy.items():
        norm = np.asarray(sim["revenue_reps"], np.float64) / rstar[:, None]  # (K+1, R)
        grid, paper = norm[:-1], norm[-1]
        policies_out[policy] = {
            "instance_mean": grid.mean(axis=1), "instance_sd": grid.std(axis=1, ddof=1)
            if grid.shape[1] > 1 else np.full(grid.shape[0], np.nan),
            "normalised_reps": grid, "paper_instance": common.pack(paper),
            "capacity": sim["capacity"], "events": sim["events"],
            # Replications rerun after a FCFS ring overflow, per grid instance (None: a part
            # cached before reruns were recorded).
            "rerun_reps": sim.get("rerun_reps", [None] * (len(rstar)))[:-1],
            "paper_instance_rerun_reps": sim.get("rerun_reps", [None])[-1],
            # Per instance, means over seeds (None: a part cached before they were recorded).
            "x_total": sim.get("x_total", [None] * len(rstar))[:-1],
            "q_decode_total": sim.get("q_decode_total", [None] * len(rstar))[:-1]}
    table = report.policy_table({p: v["instance_mean"] for p, v in policies_out.items()})
    gg = np.asarray(policies_out["gate-and-route"]["instance_mean"])
    for p, v in policies_out.items():
        diff = np.asarray(v["instance_mean"]) - gg
        table[p]["minus_gg_sp"] = float(diff.mean())
        table[p]["seed_sd"] = float(np.nanmean(v["instance_sd"]))
    return {"gpus": n, "policies": policies_out, "table": table}


def _key_numbers(result) -> list[dict]:
    tables = []
    for grid in result["grids"]:
        rows = []
        for p, v in grid["table"].items():
            paper = grid["policies"][p]["paper_instance"]
            rows.append([common.LABELS[p], f"{v['mean']:.4f}", f"{v['sd']:.4f}",
                         f"{v['seed_sd']:.4f}", f"{v['min']:.4f}", v["wins"],
                         "-" if v["win_margin"] is None else f"{v['win_margin']:.4f}",
                         f"{v['minus_gg_sp']:+.4f}",
                         f"{paper['mean']:.4f} ± {paper['ci95'] or float('nan'):.4f}"])
        k = len(result["instances"])
        tables.append({
            "title": f"n = {grid['gpus']}: normalised revenue (revenue / R*) over {k} random "
                     "instances; wins = instances where the policy has the highest mean",
            "columns": ["policy", "grid mean", "sd over instances", "mean sd over seeds",
                        "worst instance", "wins", "mean margin when winning", "minus GG-SP",
                        "paper instance (95% CI)"],
            "rows": rows})
    return tables


def _plot(result, path):
    grids = result["grids"]
    fig, axes = plt.subplots(1, len(grids), figsize=(6.2 * len(grids), 4.4), squeeze=False)
    for ax, grid in zip(axes[0], grids, strict=True):
        names = list(grid["policies"])
        data = [np.asarray(grid["policies"][p]["instance_mean"]) for p in names]
        xs = np.arange(len(names))
        # Quartile boxes, whiskers at the 5% and 95% quantiles: inside the instances' range.
        box = ax.boxplot(data, positions=xs, widths=0.5, showfliers=False, patch_artist=True,
                         whis=(5, 95))
        for patch, p in zip(box["boxes"], names, strict=True):
            patch.set_facecolor(common.COLORS[p])
            patch.set_alpha(0.35)
        for j, (p, d) in enumerate(zip(names, data, strict=True)):
            jitter = np.linspace(-0.12, 0.12, len(d)) if len(d) > 1 else np.zeros(1)
            ax.scatter(j + jitter, d, s=12, color=common.COLORS[p], zorder=3,
                       label="instances (mean over seeds)" if j == 0 else None)
            # The mean as a point: a mean +- sd bar can leave [0, 1] of R* on a skewed grid
            # (one collapsed instance); the box and whiskers are quantiles of the instances.
            ax.scatter(j + 0.32, d.mean(), marker="D", s=20, color="k", zorder=4,
                       label="grid mean" if j == 0 else None)
            paper = grid["policies"][p]["paper_instance"]["mean"]
            ax.scatter(j, paper, marker="*", s=90, color="k", zorder=4,
                       label="paper's instance" if j == 0 else None)
        ax.set_xticks(xs, [common.LABELS[p].split(" ")[0] for p in names])
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_ylabel("normalised revenue (revenue per GPU / LP bound R*)")
        ax.set_title(f"n = {grid['gpus']} GPUs, {len(result['instances'])} random instances, "
                     f"{result['settings']['reps']} seeds\n(boxes: quartiles; whiskers: 5% and "
                     "95% quantiles over instances)")
        ax.legend(loc="lower left")
    fig.suptitle("Fig. 7: FI-WSP, GI-WSP, GF-WSP, FG-SP and GG-SP (Gate-and-Route), per-GPU "
                 "engine, common random numbers")
    fig.tight_layout()
    common.save_png(fig, path)


if __name__ == "__main__":
    common.command_line(__doc__, main)
