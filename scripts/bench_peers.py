"""Erlang-A (M/M/N+M) benchmark: jaxqueue's engine against Ciw and SimPy, in one run.

All three simulate the same system over the same horizon ``[0, T]`` from an empty system:

* events = arrivals + service completions + abandonments occurring in ``[0, T]``, warm-up included;
* P(abandon) estimate, per replication = abandonments / arrivals in the window ``[W, T]``, both
  counted by the time of the event (an arrival at its arrival time, an abandonment at the time
  the customer leaves the queue); the table gives the mean over replications +- a 95% t-interval;
* wall time covers the simulation only (model construction, record extraction and, for
  jaxqueue, XLA compilation excluded; compilation is reported in its own column).

jaxqueue runs its replications at once (vectorised); Ciw and SimPy run theirs one after the other.
Ciw and SimPy are benchmark-only dependencies (``pip install ciw simpy``, or the project extra
``pip install -e .[bench]``); the library never imports them.

Usage: ``python scripts/bench_peers.py [--quick] [--json]`` (jaxqueue from this checkout).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import random
import sys
import time
from typing import NamedTuple

import numpy as np
from scipy import stats

MISSING = ("{name} is not installed: `pip install ciw simpy` "
           "(or the project extra `pip install -e .[bench]`)")


class Params(NamedTuple):
    """The M/M/N+M system and the simulated window."""

    servers: int
    arrival_rate: float
    service_rate: float
    patience_rate: float
    horizon: float
    warmup: float


def exact_abandon_probability(p: Params, tol: float = 1e-14) -> float:
    """P(abandon) = theta E[(K-N)^+] / lam from the birth-death stationary law of K.

    Log-space weights; stops at the first level past which the remaining mass and the remaining
    ``(K-N)^+`` mass are below ``tol`` (geometric bound: the death rates do not decrease). If
    :func:`jaxqueue.theory.erlang_a` imports, checks that it agrees to 1e-10.

    Args:
        p: the system (horizon and warm-up unused).
        tol: bound on the neglected tail mass.

    Returns:
        The stationary probability that an arrival abandons.
    """
    n, lam, mu, theta = p.servers, p.arrival_rate, p.service_rate, p.patience_rate
    if theta == 0 and lam >= n * mu:
        raise ValueError("patience_rate = 0 needs arrival_rate < servers * service_rate")
    logw, k = [0.0], 0
    while True:
        k += 1
        logw.append(logw[-1] + math.log(lam) - math.log(mu * min(k, n) + theta * max(k - n, 0)))
        r = lam / (mu * n + theta * (k + 1 - n))  # bounds every later ratio p_{j+1} / p_j
        if k >= n and r < 1:
            tail = math.exp(logw[-1] - np.logaddexp.reduce(logw))
            if tail * (r / (1 - r) * (1 + k - n) + r / (1 - r) ** 2) < tol:
                break
    w = np.exp(np.asarray(logw) - np.logaddexp.reduce(logw))
    value = theta * float(w @ np.maximum(np.arange(w.size) - n, 0)) / lam
    try:
        from jaxqueue.theory import erlang_a
    except ImportError:
        return value
    oracle = erlang_a(n, lam, p.service_rate, theta)["abandon_probability"]
    assert abs(oracle - value) <= 1e-10, f"jaxqueue.theory.erlang_a {oracle} != inline {value}"
    return value


def summarise(name: str, reps: int, events: int, wall: float, estimates, *, compile_s: float = 0.0,
              mean: float | None = None, ci95: float | None = None) -> dict:
    """One simulator's row of the report.

    Args:
        name, reps, events, wall: simulator, replications, events in [0, T], simulation seconds.
        estimates: per-replication P(abandon) estimates (ignored when ``mean`` is given).
        compile_s: compilation seconds (jaxqueue only).
        mean, ci95: a ready estimate and its 95% half-width, instead of ``estimates``.

    Returns:
        A JSON-ready dict; ``ci95`` is None for a single replication.
    """
    x = np.asarray(estimates, np.float64)
    if mean is None:
        mean = float(x.mean())
        ci95 = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)) \
            if x.size > 1 else None
    if ci95 is not None and not math.isfinite(ci95):
        ci95 = None
    return {"simulator": name, "replications": reps, "events": int(events),
            "wall_seconds": wall, "wall_seconds_per_replication": wall / reps,
            "compile_seconds": compile_s, "events_per_second": events / wall,
            "abandon_probability": {"mean": mean, "ci95": ci95}}


def run_ciw(p: Params, reps: int, seed: int) -> dict:
    """Ciw's ``simulate_until_max_time(T)``, one replication after the other.

    Args:
        p: the system and window.
        reps: replications; replication r uses ``ciw.seed(seed + r)``.
        seed: base seed.

    Returns:
        The simulator's row (see :func:`summarise`).
    """
    try:
        import ciw
    except ImportError:
        sys.exit(MISSING.format(name="ciw"))
    events, wall, estimates = 0, 0.0, []
    for r in range(reps):
        ciw.seed(seed + r)
        network = ciw.create_network(
            arrival_distributions=[ciw.dists.Exponential(rate=p.arrival_rate)],
            service_distributions=[ciw.dists.Exponential(rate=p.service_rate)],
            number_of_servers=[p.servers],
            reneging_time_distributions=[ciw.dists.Exponential(rate=p.patience_rate)]
            if p.patience_rate > 0 else None)
        sim = ciw.Simulation(network)
        start = time.perf_counter()
        sim.simulate_until_max_time(p.horizon)  # processes the events dated before T
        wall += time.perf_counter() - start
        records = sim.get_all_records(only=["service", "renege"])  # one per departure
        present = sim.nodes[1].all_individuals  # still in the system at T (arrived, not left)
        events += 2 * len(records) + len(present)  # arrivals + departures
        arrived = sum(x.arrival_date >= p.warmup for x in records) \
            + sum(c.arrival_date >= p.warmup for c in present)
        left = sum(x.record_type == "renege" and x.exit_date >= p.warmup for x in records)
        estimates.append(left / arrived)
    return summarise("Ciw", reps, events, wall, estimates)


def simpy_replication(p: Params, seed: int) -> tuple[int, float, float]:
    """One SimPy replication: (events in [0, T], wall seconds, P(abandon) estimate)."""
    import simpy

    rng = random.Random(seed)
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=p.servers)
    n = {"arrivals": 0, "services": 0, "abandonments": 0, "w_arrivals": 0, "w_abandonments": 0}

    def customer():
        with servers.request() as req:
            if p.patience_rate > 0:
                fired = yield req | env.timeout(rng.expovariate(p.patience_rate))
            else:
                fired = yield req
            if req in fired:
                yield env.timeout(rng.expovariate(p.service_rate))
                n["services"] += 1
            else:  # leaving the `with` block withdraws the request from the queue
                n["abandonments"] += 1
                n["w_abandonments"] += env.now >= p.warmup

    def source():
        while True:
            yield env.timeout(rng.expovariate(p.arrival_rate))
            n["arrivals"] += 1
            n["w_arrivals"] += env.now >= p.warmup
            env.process(customer())

    env.process(source())
    start = time.perf_counter()
    env.run(until=p.horizon)
    wall = time.perf_counter() - start
    events = n["arrivals"] + n["services"] + n["abandonments"]
    return events, wall, n["w_abandonments"] / n["w_arrivals"]


def run_simpy(p: Params, reps: int, seed: int) -> dict:
    """SimPy replications one after the other; arguments and result as :func:`run_ciw`."""
    try:
        import simpy  # noqa: F401
    except ImportError:
        sys.exit(MISSING.format(name="simpy"))
    results = [simpy_replication(p, seed + r) for r in range(reps)]
    return summarise("SimPy", reps, sum(e for e, _, _ in results), sum(w for _, w, _ in results),
                     [a for _, _, a in results])


def run_jaxqueue(p: Params, reps: int, seed: int, chunk_events: int | None = None,
                 devices: str = "1") -> dict:
    """jaxqueue, all replications at once: ``validate.erlang_a_check``, else ``simulate``.

    Args:
        p, reps, seed: as :func:`run_ciw` (the seed is the ``jax.random.key``).
        chunk_events: events per scan chunk (None: the engine's default); ``simulate`` is used
            when given and ``erlang_a_check`` does not take it.
        devices: ``"1"`` (one device), ``"all"`` or a count: replications sharded over that
            many JAX devices (on a CPU, one per core when XLA_FLAGS asks for them).

    Returns:
        The simulator's row, with ``via`` naming the function used.
    """
    check = None
    try:
        from jaxqueue.validate import erlang_a_check as check
    except ImportError as err:
        print(f"note: jaxqueue.validate.erlang_a_check unavailable ({err}); "
              "using jaxqueue.simulate.simulate directly", file=sys.stderr)
    if check and chunk_events and "chunk_events" not in inspect.signature(check).parameters:
        print("note: erlang_a_check takes no chunk_events; using jaxqueue.simulate.simulate",
              file=sys.stderr)
        check = None
    used = None
    if devices != "1":
        import jax

        used = jax.devices() if devices == "all" else jax.devices()[:int(devices)]
    if check is not None:
        extra = {"chunk_events": chunk_events} if chunk_events else {}
        if used is not None:
            extra["devices"] = used
        out = check(p.servers, p.arrival_rate, p.service_rate, p.patience_rate,
                    reps=reps, horizon=p.horizon, warmup=p.warmup, seed=seed, **extra)
        ab = out["simulated"]["abandon_probability"]
        return {**summarise("jaxqueue", reps, out["events"], out["wall_seconds"], [],
                            compile_s=out["compile_seconds"], mean=ab["mean"], ci95=ab["ci95"]),
                "via": "jaxqueue.validate.erlang_a_check", "devices": len(used or [0])}
    try:
        import jax

        from jaxqueue import simulate
        from jaxqueue.policies.erlang import ErlangA
    except ImportError as err:
        sys.exit(f"cannot import jaxqueue ({err}): run from the repository root with PYTHONPATH=.")
    system = ErlangA(servers=np.int32(p.servers), arrival_rate=np.float32(p.arrival_rate),
                     service_rate=np.float32(p.service_rate),
                     patience_rate=np.float32(p.patience_rate))
    extra = {"chunk_events": chunk_events} if chunk_events else {}
    if used is not None:
        extra["devices"] = used
    run = simulate(jax.random.key(seed), system, reps=reps, horizon=p.horizon, warmup=p.warmup,
                   **extra)
    estimates = run.count("abandonments")[:, 0] / run.count("arrivals")[:, 0]
    return {**summarise("jaxqueue", reps, run.events, run.wall_seconds, estimates,
                        compile_s=run.compile_seconds), "via": "jaxqueue.simulate.simulate",
            "devices": len(used or [0])}


def machine() -> dict:
    """Where the benchmark ran."""
    info = {"platform": platform.platform(), "processor": platform.processor() or "unknown",
            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            info["processor"] = next(ln.split(":", 1)[1].strip() for ln in f
                                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import jax

        info["jax_devices"] = [str(d) for d in jax.devices()]
    except ImportError:
        pass
    return info


def table(p: Params, exact: float, rows: list[dict]) -> str:
    """The plain-text report."""
    head = (f"M/M/N+M: N={p.servers} lam={p.arrival_rate:g} mu={p.service_rate:g} "
            f"theta={p.patience_rate:g} T={p.horizon:g} W={p.warmup:g}; "
            f"exact P(abandon)={exact:.6f}")
    cols = f"{'simulator':<9} {'reps':>5} {'events':>11} {'wall s':>8} {'s/rep':>9} " \
           f"{'compile s':>9} {'events/s':>10} {'P(abandon) +- 95%':>21} {'jaxqueue x':>10}"
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        ab = r["abandon_probability"]
        ci = f"{ab['ci95']:.5f}" if ab["ci95"] is not None else "n/a"
        lines.append(f"{r['simulator']:<9} {r['replications']:>5} {r['events']:>11,} "
                     f"{r['wall_seconds']:>8.2f} {r['wall_seconds_per_replication']:>9.4f} "
                     f"{r['compile_seconds']:>9.2f} {r['events_per_second']:>10.3g} "
                     f"{ab['mean']:>.6f} +- {ci:>7}  {r['speedup_of_jaxqueue']:>10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Runs the three simulators, prints the table (or JSON) and returns the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=50)
    ap.add_argument("--arrival-rate", type=float, default=48.0)
    ap.add_argument("--service-rate", type=float, default=1.0)
    ap.add_argument("--patience-rate", type=float, default=0.5)
    ap.add_argument("--horizon", type=float, default=None, help="T (default 2000; 200 if --quick)")
    ap.add_argument("--warmup", type=float, default=None, help="W (default T / 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jax-reps", type=int, default=1024)
    ap.add_argument("--ciw-reps", type=int, default=3)
    ap.add_argument("--simpy-reps", type=int, default=3)
    ap.add_argument("--chunk-events", type=int, default=None,
                    help="events per jaxqueue scan chunk (default: the engine's)")
    ap.add_argument("--devices", default="1",
                    help="jaxqueue's devices: 1 (default), 'all' or a count; on a CPU 'all' is one "
                         "device per core (Ciw and SimPy run on one core either way)")
    ap.add_argument("--quick", action="store_true", help="short horizon, a smoke run")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    a = ap.parse_args(argv)
    if a.devices not in ("1", "all") and not (a.devices.isdigit() and int(a.devices) >= 1):
        ap.error(f"--devices = {a.devices!r} is invalid: must be 'all' or an integer >= 1")
    if a.devices != "1" and "xla_force_host_platform_device_count" not in os.environ.get(
            "XLA_FLAGS", ""):
        # One CPU device per core, set before JAX starts (it affects only the CPU platform).
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={os.cpu_count()}")
    horizon = a.horizon if a.horizon is not None else (200.0 if a.quick else 2000.0)
    warmup = a.warmup if a.warmup is not None else horizon / 10
    p = Params(a.servers, a.arrival_rate, a.service_rate, a.patience_rate, horizon, warmup)
    exact = exact_abandon_probability(p)
    for name in ("ciw", "simpy"):  # fail before the long runs, not between them
        try:
            __import__(name)
        except ImportError:
            sys.exit(MISSING.format(name=name))
    rows = [run_jaxqueue(p, a.jax_reps, a.seed, a.chunk_events, a.devices),
            run_ciw(p, a.ciw_reps, a.seed), run_simpy(p, a.simpy_reps, a.seed)]
    for r in rows:
        r["speedup_of_jaxqueue"] = rows[0]["events_per_second"] / r["events_per_second"]
    report = {"params": p._asdict(), "exact_abandon_probability": exact, "machine": machine(),
              "results": rows}
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        m = report["machine"]
        print(f"machine: {m['processor']}, {m['cpus']} CPUs, {m.get('jax_devices', '')}; "
              f"jaxqueue on {rows[0]['devices']} device(s)")
        print(table(p, exact, rows))
    return report


if __name__ == "__main__":
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo
    main()
