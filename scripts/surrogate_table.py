"""The fluid surrogate's revenue per GPU at the LP point of the ``gated`` family (Gate-and-Route's
plan), against n: what `jaxqueue tune --fluid-steps` optimises, to set beside the exact
simulator's revenue at the same points (`jaxqueue convergence`).

    python scripts/surrogate_table.py [--scenario paper-qwen8b] [--gpus 5 20 50 200 500 2000]
                                      [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxqueue import fluid, scenarios, surrogate  # noqa: E402
from jaxqueue.tune import Problem  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="paper-qwen8b")
    p.add_argument("--gpus", type=int, nargs="+", default=[5, 20, 50, 200, 500, 2000])
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the rows to PATH as JSON (default: no file)")
    a = p.parse_args()
    model = scenarios.load(a.scenario)
    plan = fluid.solve(model, "bundled")
    rows = []
    for n in a.gpus:
        params = Problem(family="gated", model=model, n=n, plan=plan).initial()
        value = float(surrogate.revenue(model, params, n=n))
        rows.append({"gpus": n, "surrogate_revenue": value})
        print(f"n = {n:5d}: surrogate revenue per GPU {value:.2f} (LP bound {plan.revenue:.2f})",
              flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"scenario": a.scenario, "lp_revenue": plan.revenue, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
