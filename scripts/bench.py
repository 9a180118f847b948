"""Events per second of jaxqueue's engines on this machine (compile time reported apart).

    python scripts/bench.py                  # one device: pooled Gate-and-Route (paper-qwen8b,
                                             # n = 500, 1,024 reps), Erlang-A, per-GPU FI-WSP
    python scripts/bench.py --devices all    # shard replications over every device (on a CPU,
                                             # one device per core)
    python scripts/bench.py --reps 4096 --devices all
    python scripts/bench.py --quick          # a smaller smoke run
    python scripts/bench.py --only classes --classes 2 8 32   # pooled cost per event against
                                             # the number of classes
    python scripts/bench.py --only phases --gpus 100 --horizon 500 --phases 4
                                             # pooled Gate-and-Route with Erlang-4 prefill and
                                             # decode times against exponential ones
    python scripts/bench.py --only latency --gpus 20 --reps 64 --horizon 200
                                             # pooled Gate-and-Route without and with the
                                             # latency counters of simulate --latency
    python scripts/bench.py --only patience --gpus 100 --reps 256 --horizon 20
                                             # pooled Gate-and-Route under lognormal (cv 2)
                                             # and fixed patience (per-class rings of jobs)
    python scripts/bench.py --only patience --policy gi-wsp --gpus 20 --reps 16 --horizon 300
                                             # the same for another policy

Prints one line per benchmark: the engine, its size, events simulated (all replications), wall
seconds (compilation excluded), events per second and compile seconds. Numbers depend on the
machine: report them with its description (the script prints it and the JAX devices).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--gpus", type=int, default=500)
    p.add_argument("--reps", type=int, default=1024)
    p.add_argument("--per-gpu-reps", type=int, default=256)
    p.add_argument("--horizon", type=float, default=None, help="model seconds per replication")
    p.add_argument("--chunk-events", type=int, default=None,
                   help="steps per compiled chunk (default: the one jaxqueue.simulate picks)")
    p.add_argument("--devices", default="1", help="'all' or a count: shard replications")
    p.add_argument("--only", default=None,
                   choices=("pooled", "erlang", "per-gpu", "classes", "phases", "latency",
                            "patience"))
    p.add_argument("--classes", type=int, nargs="+", default=[2, 8, 32],
                   help="with --only classes: class counts of the synthetic instances")
    p.add_argument("--phases", type=int, default=4,
                   help="with --only phases: Erlang phases of the prefill and decode times")
    p.add_argument("--policy", default="gate-and-route",
                   help="with --only patience: the policy (any of `jaxqueue policies`)")
    p.add_argument("--xla-flags", default="", metavar="FLAGS",
                   help="more XLA flags, set before JAX starts (write --xla-flags='--a --b')")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


ARGS = _args()
if ARGS.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + ARGS.xla_flags).strip()
if ARGS.devices != "1" and "xla_force_host_platform_device_count" not in os.environ.get(
        "XLA_FLAGS", ""):
    # One CPU device per core, set before JAX starts (it affects only the CPU platform).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={os.cpu_count()}")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from instances import many_classes  # noqa: E402

from jaxqueue import (  # noqa: E402
    policies,
    scenarios,
    simulate,  # noqa: E402
)
from jaxqueue.policies.erlang import ErlangA  # noqa: E402


def _devices():
    if ARGS.devices == "1":
        return None
    devs = jax.devices()
    return devs if ARGS.devices == "all" else devs[:int(ARGS.devices)]


def kernels(system, reps: int, chunk: int) -> dict:
    """What XLA compiles for one step of ``system`` (one device): in the optimised HLO of a
    chunk, the scan's body (the largest while body), its fusions (each one kernel on the CPU),
    copies (loop-carried state XLA could not update in place), nested while loops (rolled
    Threefry rounds) and all its instructions."""
    import inspect
    import re

    import jax.numpy as jnp

    from jaxqueue import kernel, rng

    ids = jnp.arange(reps, dtype=jnp.uint32)
    state = kernel.initial_state(system, jax.random.key(0), ids)
    real = rng.real_dtype()
    # The stream's position: two words (low, high); a chunk index before 2026-12-06, so that
    # scripts/bench_ab.py can run this script against an older revision's kernel.
    words = 2 if "hi" in inspect.signature(kernel._rollout).parameters else 1
    try:
        text = kernel._rollout_jit.lower(
            jax.random.key(0), system, ids, state, jnp.zeros((reps,), real),
            jnp.full((reps,), jnp.inf, real), *[jnp.zeros((reps,), jnp.uint32)] * words,
            steps=chunk, clock_dtype=real, close=False).compile().as_text()
    except TypeError:  # an older revision's rollout, called otherwise: no counts for it
        return None
    # Each computation's instructions by opcode; the scan's body is the largest while body.
    comps: dict[str, list[str]] = {}
    bodies: list[str] = []
    name = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            name = line.split()[1] if line.startswith("ENTRY") else line.split()[0]
            comps[name.lstrip("%")] = []
        elif name is not None and " = " in line:
            rhs = line.split(" = ", 1)[1]
            found = re.search(r"\s([a-z][\w-]*)\(", rhs)
            comps[name.lstrip("%")].append(found.group(1) if found else "?")
            bodies += [b.lstrip("%") for b in re.findall(r"body=(%?[\w.-]+)", rhs)]
    step = max(bodies, key=lambda b: len(comps.get(b, [])))
    ops = comps[step]
    return {"fusions": ops.count("fusion"), "copies": ops.count("copy"),
            "while_loops": ops.count("while"), "instructions": len(ops)}


def _measure(name: str, system, reps: int, horizon: float, chunk: int | None, **extra) -> dict:
    """One benchmark row: ``system`` simulated from key 0 (no warm-up), its size and speed;
    ``chunk=None`` runs at the chunk length ``simulate`` picks (an older revision that took no
    ``None`` there, when ``scripts/bench_ab.py`` runs it, at its default)."""
    if chunk is None:
        chunk = inspect.signature(simulate).parameters["chunk_events"].default
    run = simulate(jax.random.key(0), system, reps=reps, horizon=horizon, warmup=0.0,
                   chunk_events=chunk, devices=_devices())
    chunk = getattr(run, "chunk_events", 0) or chunk
    return {"benchmark": name, **extra, "reps": reps, "horizon": horizon, "chunk_events": chunk,
            "events": run.events, "wall_seconds": run.wall_seconds,
            "events_per_second": run.events_per_second, "compile_seconds": run.compile_seconds}


def bench_pooled(gpus: int, reps: int, horizon: float, chunk: int, model=None,
                 name: str = "pooled gate-and-route paper-qwen8b") -> dict:
    model = scenarios.load("paper-qwen8b") if model is None else model
    system, _ = policies.build("gate-and-route", model, gpus)
    return _measure(name, system, reps, horizon, chunk, gpus=gpus,
                    kernels=kernels(system, reps, chunk or 1024))


def bench_phases(gpus: int, reps: int, horizon: float, chunk: int, k: int) -> list[dict]:
    """Pooled Gate-and-Route on ``paper-qwen8b``, exponential service times, then Erlang-k
    prefill and decode times (jaxqueue.service): the same run shape, k times the service
    events per job and 6 I (k - 1) more event rates per step."""
    from jaxqueue.service import Service

    model = scenarios.load("paper-qwen8b")
    erlang = {"law": "erlang", "phases": k}
    phased = model.replace(service=Service.make(model.num_classes, prefill=erlang,
                                                decode=erlang))
    rows = [bench_pooled(gpus, reps, horizon, chunk),
            bench_pooled(gpus, reps, horizon, chunk, phased,
                         f"pooled gate-and-route, Erlang-{k} service")]
    rows[1]["events_per_second_vs_exponential"] = (rows[1]["events_per_second"]
                                                   / rows[0]["events_per_second"])
    return rows


def bench_patience(gpus: int, reps: int, horizon: float, chunk: int,
                   policy: str = "gate-and-route") -> list[dict]:
    """``policy`` on ``paper-qwen8b`` with exponential patience, then lognormal (cv 2) and
    deterministic patience of the same means: each class waits in a ring of jobs with their own
    deadlines, whose live counts the policy reads in every step."""
    from jaxqueue.patience import Patience

    model = scenarios.load("paper-qwen8b")
    rows = []
    for law, cv in (("exponential", None), ("lognormal", 2.0), ("deterministic", None)):
        other = (model if law == "exponential"
                 else model.replace(patience=Patience.make(law, model.num_classes, cv=cv)))
        if policy == "gate-and-route":
            rows.append(bench_pooled(gpus, reps, horizon, chunk, other,
                                     f"pooled gate-and-route, {law} patience"))
        else:
            system, _ = policies.build(policy, other, gpus)
            rows.append(_measure(f"{policy}, {law} patience", system, reps, horizon, chunk,
                                 gpus=gpus))
        rows[-1].update(policy=policy, law=law)
        rows[-1]["events_per_second_vs_exponential"] = (rows[-1]["events_per_second"]
                                                        / rows[0]["events_per_second"])
    return rows


def bench_classes(gpus: int, reps: int, horizon: float, chunk: int, k: int) -> dict:
    system, _ = policies.build("gate-and-route", many_classes(k), gpus)
    return _measure(f"pooled gate-and-route {k} classes", system, reps, horizon, chunk,
                    gpus=gpus, classes=k)


def bench_erlang(servers: int, reps: int, horizon: float, chunk: int) -> dict:
    system = ErlangA(servers=np.int32(servers), arrival_rate=np.float32(0.96 * servers),
                     service_rate=np.float32(1.0), patience_rate=np.float32(0.5))
    return _measure("erlang-a M/M/N+M", system, reps, horizon, chunk, servers=servers)


def bench_per_gpu(gpus: int, reps: int, horizon: float, chunk: int,
                  policy: str = "fi-wsp") -> dict:
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build(policy, model, gpus, engine="per-gpu")
    return _measure(f"per-gpu {policy} paper-qwen8b", system, reps, horizon, chunk, gpus=gpus,
                    kernels=kernels(system, reps, chunk or 1024))


def bench_latency(gpus: int, reps: int, horizon: float, chunk: int) -> list[dict]:
    """Pooled Gate-and-Route on ``paper-qwen8b`` without latency counters, with the prefill
    and decode-buffer ones (``end_to_end=False``: what ``compare --latency`` runs) and with
    the end-to-end ones too (``simulate --latency``), on the CLI's grid of latency times."""
    import dataclasses

    from jaxqueue.stats import LATENCY_GRID

    model = scenarios.load("paper-qwen8b")
    plain, _ = policies.build("gate-and-route", model, gpus)
    rows = []
    for name, system in [
            ("pooled gate-and-route, no latency counters", plain),
            ("pooled gate-and-route, prefill and decode-wait counters",
             dataclasses.replace(plain, wait_grid=LATENCY_GRID, end_to_end=False)),
            ("pooled gate-and-route, every latency counter",
             dataclasses.replace(plain, wait_grid=LATENCY_GRID, end_to_end=True))]:
        rows.append(_measure(name, system, reps, horizon, chunk, gpus=gpus))
    for r in rows[1:]:
        r["events_per_second_vs_first"] = r["events_per_second"] / rows[0]["events_per_second"]
    return rows


def main() -> None:
    a = ARGS
    reps = 64 if a.quick else a.reps
    horizon = a.horizon or (1.0 if a.quick else 4.0)
    rows = []
    if a.only in (None, "pooled"):
        rows.append(bench_pooled(a.gpus, reps, horizon, a.chunk_events))
    if a.only in (None, "erlang"):
        rows.append(bench_erlang(50, reps, horizon * 100, a.chunk_events))
    if a.only in (None, "per-gpu"):
        rows.append(bench_per_gpu(a.gpus, 16 if a.quick else a.per_gpu_reps, horizon,
                                  a.chunk_events))
    if a.only == "phases":
        rows += bench_phases(a.gpus, reps, horizon, a.chunk_events, a.phases)
    if a.only == "latency":
        rows += bench_latency(a.gpus, reps, horizon, a.chunk_events)
    if a.only == "patience":
        rows += bench_patience(a.gpus, reps, horizon, a.chunk_events, a.policy)
    if a.only == "classes":
        rows += [bench_classes(a.gpus, reps, horizon, a.chunk_events, k) for k in a.classes]
        base = rows[0]["events_per_second"]
        for r in rows:
            r["cost_per_event_vs_first"] = base / r["events_per_second"]
    used = _devices() or jax.devices()[:1]
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "cpus": os.cpu_count(), "devices": [str(d) for d in used],
               "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if a.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"machine: {machine['platform']}, {machine['cpus']} CPUs; JAX {machine['jax']} on "
          f"{len(used)} device(s) {machine['devices']}")
    for r in rows:
        size = ", ".join(f"{k}={r[k]}" for k in ("gpus", "servers", "reps", "horizon",
                                                  "chunk_events", "classes") if k in r)
        print(f"{r['benchmark']:<36} {size:<50} {r['events']:>13,} events "
              f"{r['wall_seconds']:7.2f} s {r['events_per_second']:>14,.0f} events/s "
              f"(compile {r['compile_seconds']:.2f} s)")
        if "events_per_second_vs_exponential" in r:
            print(f"{'':<36} events per second: {r['events_per_second_vs_exponential']:.2f}x "
                  "the exponential law's")
        if "events_per_second_vs_first" in r:
            print(f"{'':<36} events per second: {r['events_per_second_vs_first']:.2f}x "
                  "those without latency counters")
        if "cost_per_event_vs_first" in r:
            print(f"{'':<36} cost per event: {r['cost_per_event_vs_first']:.2f}x the "
                  f"{rows[0]['classes']}-class instance's")
        if r.get("kernels"):
            k = r["kernels"]
            print(f"{'':<36} compiled step (the scan's body): {k['fusions']} fusions, "
                  f"{k['copies']} copies, {k['while_loops']} nested while loops, "
                  f"{k['instructions']} instructions")


if __name__ == "__main__":
    main()
