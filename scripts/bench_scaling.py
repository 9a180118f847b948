"""Events per second of the pooled Gate-and-Route engine against the number of replications and
the number of classes, on this machine (compilation excluded and printed apart).

    python scripts/bench_scaling.py                 # reps 1..16384 at n=500, classes 2..32
    python scripts/bench_scaling.py --quick         # a smoke run
    python scripts/bench_scaling.py --devices all   # shard over every device
    (on a CPU, first export XLA_FLAGS=--xla_force_host_platform_device_count=<cores>)

The class sweep uses a synthetic workload (docs/model.md Sec. 1-3 with the Qwen-8B calibration):
I classes with prompt lengths spread over 100-3000 tokens and output lengths over 100-1500, the
paper's total load of 1 request/s per GPU split evenly, theta = 0.1.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from jaxqueue import policies, scenarios, simulate
from jaxqueue.model import Model


def synthetic(num_classes: int) -> Model:
    base = scenarios.load("paper-qwen8b")
    return base.replace(
        name=f"synthetic-{num_classes}",
        class_names=tuple(f"c{i}" for i in range(num_classes)),
        lambda_=np.full(num_classes, 1.0 / num_classes),
        theta=np.full(num_classes, 0.1),
        P=np.linspace(100, 3000, num_classes),
        D=np.linspace(1500, 100, num_classes),
    )


def measure(model: Model, gpus: int, reps: int, horizon: float, devices) -> dict:
    system, _ = policies.build("gate-and-route", model, gpus)
    run = simulate(jax.random.key(0), system, reps=reps, horizon=horizon, warmup=0.0,
                   devices=devices)
    return {"classes": model.num_classes, "gpus": gpus, "reps": reps, "events": run.events,
            "wall_seconds": run.wall_seconds, "events_per_second": run.events_per_second,
            "compile_seconds": run.compile_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--gpus", type=int, default=500)
    p.add_argument("--devices", default=None, help="'all' to shard over every device")
    p.add_argument("--events-per-rep", type=float, default=6000.0,
                   help="approximate events simulated per replication and point")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    devices = jax.devices() if a.devices == "all" else None
    rep_grid = [1, 16, 256, 1024] if a.quick else [1, 4, 16, 64, 256, 1024, 4096, 16384]
    class_grid = [2, 4] if a.quick else [2, 4, 8, 16, 32]
    rate = 3.2 * a.gpus  # events per model second at n GPUs on the paper's load (measured)
    rows = []
    for reps in rep_grid:
        horizon = max(a.events_per_rep / rate, 0.05) * (4 if reps < 64 else 1)
        rows.append(measure(scenarios.load("paper-qwen8b"), a.gpus, reps, horizon, devices))
    for num in class_grid:
        rows.append(measure(synthetic(num), a.gpus, 1024 if not a.quick else 64,
                            a.events_per_rep / rate, devices))
    if a.json:
        print(json.dumps({"devices": [str(d) for d in (devices or jax.devices()[:1])],
                          "rows": rows}, indent=2))
        return
    print(f"devices: {[str(d) for d in (devices or jax.devices()[:1])]}")
    print(f"{'classes':>8} {'gpus':>6} {'reps':>7} {'events':>13} {'wall s':>8} "
          f"{'events/s':>14} {'compile s':>10}")
    for r in rows:
        print(f"{r['classes']:>8} {r['gpus']:>6} {r['reps']:>7} {r['events']:>13,} "
              f"{r['wall_seconds']:>8.2f} {r['events_per_second']:>14,.0f} "
              f"{r['compile_seconds']:>10.2f}")


if __name__ == "__main__":
    main()
