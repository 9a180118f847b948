"""Events per second of jaxqueue's engines on this machine (compile time reported apart).

    python scripts/bench.py            # pooled Gate-and-Route, paper-qwen8b, n = 500, 1,024 reps
    python scripts/bench.py --quick    # a smaller smoke run

Prints one line per benchmark: the engine, its size, events simulated, wall seconds (compilation
excluded), events per second and compile seconds. Numbers depend on the machine: report them
with its description (the script prints the JAX devices).
"""

from __future__ import annotations

import argparse
import json
import platform

import jax
import numpy as np

from jaxqueue import policies, scenarios
from jaxqueue.policies.erlang import ErlangA
from jaxqueue.simulate import simulate


def _row(name: str, run, extra: dict) -> dict:
    return {"benchmark": name, **extra, "events": run.events, "wall_seconds": run.wall_seconds,
            "events_per_second": run.events_per_second,
            "compile_seconds": run.compile_seconds}


def bench_pooled(gpus: int, reps: int, horizon: float, chunk: int) -> dict:
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build("gate-and-route", model, gpus)
    run = simulate(jax.random.key(0), system, reps=reps, horizon=horizon, warmup=0.0,
                   chunk_events=chunk)
    return _row("pooled gate-and-route paper-qwen8b", run,
                {"gpus": gpus, "reps": reps, "horizon": horizon, "chunk_events": chunk})


def bench_erlang(servers: int, reps: int, horizon: float, chunk: int) -> dict:
    system = ErlangA(servers=np.int32(servers), arrival_rate=np.float32(0.96 * servers),
                     service_rate=np.float32(1.0), patience_rate=np.float32(0.5))
    run = simulate(jax.random.key(0), system, reps=reps, horizon=horizon, warmup=0.0,
                   chunk_events=chunk)
    return _row("erlang-a M/M/N+M", run, {"servers": servers, "reps": reps, "horizon": horizon,
                                          "chunk_events": chunk})


def bench_per_gpu(gpus: int, reps: int, horizon: float, chunk: int,
                  policy: str = "fi-wsp") -> dict:
    from jaxqueue.policies.per_gpu import build_per_gpu

    model = scenarios.load("paper-qwen8b")
    system, _ = build_per_gpu(policy, model, gpus)
    run = simulate(jax.random.key(0), system, reps=reps, horizon=horizon, warmup=0.0,
                   chunk_events=chunk)
    return _row(f"per-gpu {policy} paper-qwen8b", run,
                {"gpus": gpus, "reps": reps, "horizon": horizon, "chunk_events": chunk})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--gpus", type=int, default=500)
    p.add_argument("--reps", type=int, default=1024)
    p.add_argument("--horizon", type=float, default=None, help="model seconds per replication")
    p.add_argument("--chunk-events", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    reps = 64 if a.quick else a.reps
    horizon = a.horizon or (1.0 if a.quick else 4.0)
    rows = [bench_pooled(a.gpus, reps, horizon, a.chunk_events),
            bench_erlang(50, reps, horizon * 100, a.chunk_events),
            bench_per_gpu(a.gpus, min(reps, 256), horizon, a.chunk_events)]
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}
    if a.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"machine: {machine['platform']}; JAX {machine['jax']} on {machine['devices']}")
    for r in rows:
        size = ", ".join(f"{k}={r[k]}" for k in ("gpus", "servers", "reps", "horizon",
                                                  "chunk_events") if k in r)
        print(f"{r['benchmark']:<38} {size:<52} {r['events']:>13,} events "
              f"{r['wall_seconds']:7.2f} s {r['events_per_second']:>14,.0f} events/s "
              f"(compile {r['compile_seconds']:.2f} s)")


if __name__ == "__main__":
    main()
