"""Events per second of jaxqueue's engines against the number of replications, on an accelerator.

    python scripts/gpu_bench.py                       # reps 1e3, 1e4, 1e5 on the first device
    python scripts/gpu_bench.py --json results.jsonl  # also one JSON object per line
    python scripts/gpu_bench.py --quick               # tiny sizes, a smoke run on a CPU

Measures, on one device (compilation excluded and printed apart):

- pooled Gate-and-Route (``paper-qwen8b``, n = 500) and per-GPU FI-WSP (same instance), and
  the Erlang-A M/M/50+M chain, each at 1,000, 10,000 and 100,000 replications;
- pooled Gate-and-Route with 2, 8 and 32 classes (``scripts/bench_scaling.py``'s synthetic
  at 10,000 replications: the cost per event against the number of classes;
- per-GPU FI-WSP with 5 replications: the latency-bound shape (model seconds per wall second).

Each run's horizon is sized from the last measured rate so that it takes about ``--target``
seconds; a run predicted to pass the overall ``--deadline`` is skipped and says so. Rows are
printed (and written) as they finish, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

from jaxqueue import policies, scenarios, simulate
from jaxqueue.policies.erlang import ErlangA

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_scaling import synthetic  # noqa: E402


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    p.add_argument("--gpus", type=int, default=500)
    p.add_argument("--target", type=float, default=8.0, help="wall seconds wanted per run")
    p.add_argument("--deadline", type=float, default=400.0,
                   help="wall seconds for the whole script; later runs are skipped")
    p.add_argument("--reps", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                   help="replication counts of the engines' sweep")
    p.add_argument("--sweep-only", action="store_true",
                   help="only the engines' sweep (no class runs, no few-replication run)")
    p.add_argument("--json", default=None, help="append one JSON object per row to this file")
    return p.parse_args()


def system_for(kind: str, gpus: int, classes: int = 2):
    if kind == "erlang":
        return ErlangA(servers=np.int32(50), arrival_rate=np.float32(48.0),
                       service_rate=np.float32(1.0), patience_rate=np.float32(0.5))
    model = scenarios.load("paper-qwen8b") if classes == 2 else synthetic(classes)
    if kind == "pooled":
        return policies.build("gate-and-route", model, gpus)[0]
    return policies.build("fi-wsp", model, gpus, engine="per-gpu")[0]


def main() -> None:
    a = _args()
    start = time.perf_counter()
    dev = jax.devices()[0]
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; JAX {jax.__version__}; "
          f"device {dev} ({getattr(dev, 'device_kind', '?')})", flush=True)
    reps_grid = [16, 64] if a.quick else a.reps
    class_reps = 16 if a.quick else 10_000
    gpus = 20 if a.quick else a.gpus
    plan = [(kind, r, 2) for kind in ("pooled", "per-gpu", "erlang") for r in reps_grid]
    if not a.sweep_only:
        plan += [("pooled", class_reps, k) for k in (2, 8, 32)]
        plan += [("per-gpu", 5, 2)]
    # Events per replication and model second (from a short probe per instance) turn a wanted
    # event count into a horizon; the probe also compiles.
    per_rep_rate: dict[tuple, float] = {}
    rows = []
    for kind, reps, classes in plan:
        system = system_for(kind, gpus, classes)
        key = (kind, classes)
        # The last rate measured for this instance at no more replications than this run's
        # (events per second only grow with the replications), else a 1-second probe's.
        done = [r for r in rows if (r["engine"], r["classes"]) == key and r["reps"] <= reps]
        if done:
            last_eps = max(done, key=lambda r: r["reps"])["events_per_second"]
        else:
            unit = 10.0 if kind == "erlang" else 1.0
            probe = simulate(jax.random.key(1), system, reps=reps, horizon=unit, warmup=0.0)
            per_rep_rate[key] = probe.events / reps / unit
            last_eps = probe.events_per_second
        # Events wanted: target seconds at the last rate (which underestimates the new one, as
        # more replications run faster per event), at least 200 events per replication.
        events = max(a.target * last_eps, 200.0 * reps)
        horizon = events / reps / per_rep_rate[key]
        predicted = events / last_eps
        left = a.deadline - (time.perf_counter() - start)
        if predicted + 30.0 > left:
            print(f"skipped {kind} reps={reps} classes={classes}: predicted {predicted:.0f} s, "
                  f"{left:.0f} s left", flush=True)
            continue
        run = simulate(jax.random.key(0), system, reps=reps, horizon=float(horizon), warmup=0.0)
        row = {"engine": kind, "classes": classes, "gpus": 50 if kind == "erlang" else gpus,
               "reps": reps, "horizon": float(horizon), "events": int(run.events),
               "wall_seconds": run.wall_seconds, "events_per_second": run.events_per_second,
               "compile_seconds": run.compile_seconds, "device": str(dev),
               "jax": jax.__version__}
        rows.append(row)
        print(f"{kind:<8} classes={classes:<3} n={row['gpus']:<4} reps={reps:<7} "
              f"horizon={horizon:9.3f} {row['events']:>14,} events {run.wall_seconds:7.2f} s "
              f"{run.events_per_second:>15,.0f} events/s (compile {run.compile_seconds:.1f} s)",
              flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
