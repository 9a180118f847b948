"""Two ways to spread replications over a CPU's cores: one process with one device per core (what
``--devices all`` does) against one process per core, each pinned to its core with an equal
share of the replications.

    python scripts/bench_processes.py                       # pooled Gate-and-Route, n = 500
    python scripts/bench_processes.py --policy fi-wsp --reps 512 --json

Every configuration runs in fresh worker processes that build the system, compile and warm up
first, then wait until all of them are ready and start the timed run together, so that the
pinned processes' runs overlap. Events per second of the pinned processes is the sum of theirs.
The configurations alternate (one process, pinned processes, one process, ...) and the ratio is
taken pair by pair, so a machine whose speed drifts still gives a meaningful ratio. The
replications' paths are the same in both ways (a replication's random numbers depend only on
the key and its id); only the speed is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="gate-and-route",
                   help="a policy name (pooled engine unless it runs only per GPU)")
    p.add_argument("--scenario", default="paper-qwen8b")
    p.add_argument("--gpus", type=int, default=500)
    p.add_argument("--reps", type=int, default=4096, help="replications in all")
    p.add_argument("--horizon", type=float, default=16.0, help="model seconds per replication")
    p.add_argument("--pairs", type=int, default=2, help="alternations of the two ways (>= 1)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", nargs=2, type=int, metavar=("FIRST", "COUNT"),
                   help=argparse.SUPPRESS)  # internal: run replications FIRST .. FIRST+COUNT-1
    a = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    for name, value, low in (("gpus", a.gpus, 1), ("pairs", a.pairs, 1)):
        if value < low:
            p.error(f"--{name} = {value} is invalid: must be >= {low}")
    if a.worker is None and (a.reps < cores or a.reps % cores):
        p.error(f"--reps = {a.reps} is invalid: must be a positive multiple of the {cores} "
                "cores this process may use")
    if not a.horizon > 0:
        p.error(f"--horizon = {a.horizon} is invalid: must be > 0")
    if a.worker is None:  # say what is wrong here, not in a worker's traceback
        from jaxqueue import policies, scenarios

        try:
            policies.resolve(a.policy)
            scenarios.load(a.scenario)
        except (ValueError, OSError) as err:
            p.error(str(err))
    return a


def _worker(a: argparse.Namespace) -> None:
    """Builds, compiles and warms up, says it is ready, waits for a line on stdin, runs."""
    import jax

    from jaxqueue import policies, scenarios, simulate

    first, count = a.worker
    model = scenarios.load(a.scenario)
    system, _ = policies.build(a.policy, model, a.gpus)
    devices = jax.devices()
    simulate(jax.random.key(0), system, reps=count, first_rep=first, horizon=a.horizon / 8,
             warmup=0.0, devices=devices)
    print("ready", flush=True)
    sys.stdin.readline()
    run = simulate(jax.random.key(0), system, reps=count, first_rep=first, horizon=a.horizon,
                   warmup=0.0, devices=devices)
    print(json.dumps({"events": int(run.events), "wall_seconds": run.wall_seconds,
                      "devices": len(devices)}), flush=True)


def _run(a: argparse.Namespace, shares: list[tuple[int, int, int | None]]) -> list[dict]:
    """Starts one worker per ``(first, count, core)`` (core None: not pinned, one device per
    core), waits until all are ready, starts them together and returns their reports."""
    here = os.path.abspath(__file__)
    procs = []
    for first, count, core in shares:
        env = dict(os.environ)
        if core is None:
            flag = f"--xla_force_host_platform_device_count={len(os.sched_getaffinity(0))}"
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()

        def pin(core=core):
            if core is not None:
                os.sched_setaffinity(0, {core})

        cmd = [sys.executable, here, "--policy", a.policy, "--scenario", a.scenario,
               "--gpus", str(a.gpus), "--horizon", str(a.horizon), "--worker", str(first),
               str(count)]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, env=env, preexec_fn=pin))
    try:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a worker failed before its run: {line!r}")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p in procs:
            report, _ = p.communicate()
            if p.returncode:
                raise RuntimeError(f"a worker exited with {p.returncode}")
            out.append(json.loads(report.strip().splitlines()[-1]))
        return out
    finally:  # a worker left waiting for its start (another failed) is stopped
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main(argv=None) -> None:
    a = _args(argv)
    if a.worker is not None:
        _worker(a)
        return
    cores = sorted(os.sched_getaffinity(0))
    share = a.reps // len(cores)
    pairs = []
    for _ in range(a.pairs):
        (one,) = _run(a, [(0, a.reps, None)])
        pinned = _run(a, [(k * share, share, core) for k, core in enumerate(cores)])
        rate_one = one["events"] / one["wall_seconds"]
        rate_pinned = sum(r["events"] / r["wall_seconds"] for r in pinned)
        pairs.append({"one_process": rate_one, "pinned_processes": rate_pinned,
                      "ratio": rate_pinned / rate_one,
                      "pinned_walls": [r["wall_seconds"] for r in pinned]})
    summary = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "cores_used": len(cores)},
        "settings": {"policy": a.policy, "scenario": a.scenario, "gpus": a.gpus,
                     "reps": a.reps, "horizon": a.horizon},
        "pairs": pairs,
        "one_process_median": statistics.median(p["one_process"] for p in pairs),
        "pinned_processes_median": statistics.median(p["pinned_processes"] for p in pairs),
        "ratio_median": statistics.median(p["ratio"] for p in pairs),
    }
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{a.policy} on {a.scenario}, n = {a.gpus}, {a.reps:,} replications x "
          f"{a.horizon:g} s over {len(cores)} cores")
    for p in pairs:
        print(f"  one process, one device per core {p['one_process']:14,.0f} events/s   "
              f"one pinned process per core {p['pinned_processes']:14,.0f} events/s   "
              f"ratio {p['ratio']:.2f}x")
    print(f"median: {summary['one_process_median']:,.0f} against "
          f"{summary['pinned_processes_median']:,.0f} events/s ({summary['ratio_median']:.2f}x)")


if __name__ == "__main__":
    main()
