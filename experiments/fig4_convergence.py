"""Fig. 4 of the paper: per-GPU revenue of Gate-and-Route against n with 95% intervals, next to
the fluid LP bound R*.

    python experiments/fig4_convergence.py                 # n = 5 ... 500: fig4.png, fig4.json
    python experiments/fig4_convergence.py --gpus 5 20 50 --reps 16 --out quick.png

Shards replications over every CPU core. Writes the figure (--out) and the numbers as JSON
next to it (the same name ending in .json), and prints both paths.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={os.cpu_count()}")

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxqueue.validate import convergence_check  # noqa: E402


def plot(out: dict, scenario: str, policy: str):
    """The figure of a :func:`jaxqueue.validate.convergence_check` result: revenue against n
    (log scale, every n labelled) with 95% intervals, and the LP bound."""
    rows = out["rows"]
    n = [r["gpus"] for r in rows]
    mean = [r["revenue"]["mean"] for r in rows]
    ci = [r["revenue"]["ci95"] or 0.0 for r in rows]  # None: one replication, no interval
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(n, mean, yerr=ci, marker="o", capsize=3, label=f"{policy} (simulated, 95% CI)")
    ax.axhline(rows[0]["lp_revenue"], color="k", linestyle="--",
               label=f"fluid LP bound R* = {rows[0]['lp_revenue']:.2f}")
    ax.set_xscale("log")
    ax.set_xticks(n, [str(k) for k in n])  # label every n plotted, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("number of GPUs n")
    ax.set_ylabel(f"{out['pricing']} revenue per GPU")
    ax.set_title(f"{scenario}: convergence to the fluid bound")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="paper-qwen8b",
                   help="built-in scenario or TOML file (default: %(default)s)")
    p.add_argument("--policy", default="gate-and-route", help="policy (default: %(default)s)")
    p.add_argument("--gpus", type=int, nargs="+", default=[5, 20, 50, 200, 500],
                   help="numbers of GPUs n (default: %(default)s)")
    p.add_argument("--reps", type=int, default=64,
                   help="replications per n (default: %(default)s)")
    p.add_argument("--horizon", type=float, default=2500.0,
                   help="simulated time per replication, model seconds (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=500.0,
                   help="discarded initial time, model seconds (default: %(default)s)")
    p.add_argument("--out", default="fig4.png",
                   help="the figure (PNG); the numbers go to the same name with .json "
                        "(default: %(default)s)")
    a = p.parse_args()
    out = convergence_check(a.scenario, a.gpus, policy=a.policy, reps=a.reps, horizon=a.horizon,
                            warmup=a.warmup, devices=jax.devices(), progress=sys.stderr.isatty())
    fig = plot(out, a.scenario, a.policy)
    fig.savefig(a.out, dpi=150)
    numbers = os.path.splitext(a.out)[0] + ".json"
    with open(numbers, "w") as f:
        json.dump(out, f, indent=2)
    for r in out["rows"]:
        ci = r["revenue"]["ci95"]
        print(f"n = {r['gpus']:>5}: {r['revenue']['mean']:.3f}"
              f"{'' if ci is None else f' ± {ci:.3f}'} (gap {100 * r['relative_gap']:.2f}%)")
    print(f"wrote {a.out} (figure) and {numbers} (numbers)")


if __name__ == "__main__":
    main()
