"""Fig. 4 of the paper: per-GPU revenue of Gate-and-Route against n, with 95% intervals, next to
the fluid LP bound R*.

    python experiments/fig4_convergence.py                      # n = 5 ... 500, writes fig4.png
    python experiments/fig4_convergence.py --gpus 5 20 50 --reps 16 --out quick.png

Shards replications over every CPU core. Writes the figure and a JSON file of the numbers next
to it.
"""

from __future__ import annotations

import argparse
import json
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={os.cpu_count()}")

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxqueue.validate import convergence_check  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="paper-qwen8b")
    p.add_argument("--policy", default="gate-and-route")
    p.add_argument("--gpus", type=int, nargs="+", default=[5, 20, 50, 200, 500])
    p.add_argument("--reps", type=int, default=64)
    p.add_argument("--horizon", type=float, default=2500.0)
    p.add_argument("--warmup", type=float, default=500.0)
    p.add_argument("--out", default="fig4.png")
    a = p.parse_args()
    out = convergence_check(a.scenario, a.gpus, policy=a.policy, reps=a.reps, horizon=a.horizon,
                            warmup=a.warmup, devices=jax.devices())
    rows = out["rows"]
    n = [r["gpus"] for r in rows]
    mean = [r["revenue"]["mean"] for r in rows]
    ci = [r["revenue"]["ci95"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(n, mean, yerr=ci, marker="o", capsize=3, label=f"{a.policy} (simulated, 95% CI)")
    ax.axhline(rows[0]["lp_revenue"], color="k", linestyle="--",
               label=f"fluid LP bound R* = {rows[0]['lp_revenue']:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("number of GPUs n")
    ax.set_ylabel(f"{out['pricing']} revenue per GPU")
    ax.set_title(f"{a.scenario}: convergence to the fluid bound")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=150)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(out, f, indent=2)
    for r in rows:
        print(f"n = {r['gpus']:>5}: {r['revenue']['mean']:.3f} ± {r['revenue']['ci95']:.3f} "
              f"(gap {100 * r['relative_gap']:.2f}%)")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
