"""The paper's Sec. 6.3 comparison on one instance: GG-SP against FI-WSP, GI-WSP, GF-WSP and
FG-SP, per-GPU bundled revenue with 95% confidence intervals, common random numbers.

    python experiments/sec63_policies.py                       # paper-qwen8b, n = 500
    python experiments/sec63_policies.py --gpus 100 --reps 4 --horizon 800 --warmup 200

Shards replications over every CPU core (one host device per core). Prints a table and, with
--json PATH, writes the numbers. The paper's Fig. 7 ranges over a grid of instances; this runs
one instance at a time. Expect about 6 minutes on 2 CPU cores with the defaults (the per-GPU
engine costs O(n) per event).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={os.cpu_count()}")

import jax  # noqa: E402

from jaxqueue import (  # noqa: E402
    policies,
    scenarios,
    simulate,  # noqa: E402
    stats,
)

POLICIES = ("fi-wsp", "gi-wsp", "gf-wsp", "fg-sp", "gate-and-route")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="paper-qwen8b",
                   help="built-in scenario or TOML file (default: %(default)s)")
    p.add_argument("--gpus", type=int, default=500, help="number of GPUs n (default: %(default)s)")
    p.add_argument("--reps", type=int, default=8,
                   help="replications per policy, common random numbers (default: %(default)s)")
    p.add_argument("--horizon", type=float, default=1500.0,
                   help="simulated time per replication, model seconds (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=500.0,
                   help="discarded initial time, model seconds (default: %(default)s)")
    p.add_argument("--engine", default="per-gpu", choices=("per-gpu", "pooled"),
                   help="engine for fg-sp and gate-and-route; the others need per-gpu "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the results to PATH as JSON (default: no file)")
    a = p.parse_args()
    model = scenarios.load(a.scenario)
    rows = []
    for name in POLICIES:
        engine = a.engine if len(policies.resolve(name).engines) > 1 else None
        system, plan = policies.build(name, model, a.gpus, engine=engine)
        start = time.perf_counter()
        run = simulate(jax.random.key(a.seed), system, reps=a.reps, horizon=a.horizon,
                       warmup=a.warmup, devices=jax.devices(),
                       progress=name if sys.stderr.isatty() else False)
        rev = stats.summarize_pooled(run, model, a.gpus)["revenue_per_gpu"]["bundled"]
        rows.append({"policy": name, "engine": engine or "per-gpu", "revenue": rev,
                     "lp_revenue": plan.revenue, "wall_seconds": time.perf_counter() - start})
        ci = "" if rev["ci95"] is None else f" ± {rev['ci95']:.3f}"
        print(f"{name:>16} {rows[-1]['engine']:>8}  {rev['mean']:9.3f}{ci}  "
              f"({rows[-1]['wall_seconds']:.0f} s)", flush=True)
    print(f"LP bound R* = {rows[0]['lp_revenue']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"scenario": a.scenario, "gpus": a.gpus, "reps": a.reps,
                       "horizon": a.horizon, "warmup": a.warmup, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
