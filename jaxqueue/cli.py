"""The jaxqueue command line: fluid LPs, simulation, validation.

Human-readable tables by default (``jaxqueue.tables``); --json prints one JSON object on stdout.
Progress bars, estimates and notices go to stderr (no bars under --json or when stderr is not a
terminal). A Ctrl-C stops a simulation, prints what was simulated and exits with code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .argtypes import number as _number
from .argtypes import positive_int as _positive_int

__all__ = ["main"]

#: Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Runs estimated to simulate longer than this (seconds) print their estimate first.
ANNOUNCE_AFTER = 10.0
#: Seconds a simulating command takes besides simulating, in its estimate: starting Python and
#: JAX (2.1 s), solving the LPs, compiling. Measured on the quiet 2-core machine (2026-12-05),
#: whole commands at n = 50, 64 replications x 2,000 s, whose simulation takes 2-3 s: pooled
#: Gate-and-Route 7.9 s with an empty compilation cache and 6.7-7.0 s with it, per-GPU FI-WSP
#: 12.5 s and 9.8-10.2 s; on 2 busy cores the start took 10-17 s without the cache.
STARTUP = 6.0
#: Seconds to compile one policy's program in ``jaxqueue compare``'s estimate (measured on the
#: quiet 2-core machine with an empty compilation cache, 2026-12-04: 2-3 s a policy at n = 20,
#: 4-7 s at n = 100, simulation included; about twice that on busy cores).
COMPILE_EACH = 3.0
#: The jax options the command changes, restored when it returns.
_JAX_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                "jax_persistent_cache_min_entry_size_bytes")


def _enable_cache() -> None:
    """Persistent XLA compilation cache for the command (the library itself never sets flags;
    :func:`main` restores the options when it returns)."""
    import jax

    path = os.environ.get("JAXQUEUE_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                          "jaxqueue", "xla"))
    if path:
        try:
            jax.config.update("jax_compilation_cache_dir", path)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        except Exception:  # noqa: BLE001 - a cache is an optimization, never a failure
            pass


def _one_core_for_few_replications(args) -> None:
    """Before JAX starts, in a process of its own: a per-GPU ``simulate`` of fewer replications
    than two CPU devices would each keep (it runs on one device) runs every thread of the
    process on one core. XLA's CPU runtime sizes its thread pool by the cores the process may
    use, and for so few replications its second thread only waits for the first: ``jaxqueue
    simulate paper-qwen8b --policy fi-wsp --gpus 500 --reps 5 --horizon 2000 --warmup 500`` took
    29.7 s on one core against 36.3 s on two (medians of three paired runs, 2-core machine,
    2026-12-05), at half the CPU time. A process whose backend already started (a test calling
    :func:`main`) is left alone: pinning its threads afterwards made the same run slower."""
    if getattr(args, "command", None) != "simulate" or args.params is not None:
        return
    if args.devices not in ("all", "1") or args.reps >= 2 * MIN_PER_GPU_REPS_PER_CPU_DEVICE:
        return
    from . import policies

    try:
        engine = args.engine or policies.resolve(args.policy).engines[0]
    except ValueError:
        return  # the command itself reports the bad name
    if engine != "per-gpu" or not hasattr(os, "sched_setaffinity"):
        return
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return
        cores = os.sched_getaffinity(0)
        if len(cores) > 1:
            os.sched_setaffinity(0, {min(cores)})
            _say(f"{args.reps} replications of a per-GPU policy run on one device and one core "
                 "(faster than on more for so few replications)")
    except Exception:  # noqa: BLE001 - an optimization, never a failure
        return


def _use_all_cores() -> None:
    """Before JAX starts: expose one CPU device per core, so that sharding the replications over
    ``--devices all`` runs them on every core (XLA runs a small kernel on one thread). Affects
    only the CPU platform; an explicit setting in ``XLA_FLAGS`` wins."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count or 1}"


@contextlib.contextmanager
def _restored_environment():
    """Puts back ``XLA_FLAGS``, the jax options the command sets and jax's compilation cache,
    whether the command returns or raises: running :func:`main` in a process (a test, a
    notebook) leaves nothing behind."""
    import jax  # importing reads no flag: XLA_FLAGS counts when a backend starts

    flags = os.environ.get("XLA_FLAGS")
    before = {k: getattr(jax.config, k) for k in _JAX_OPTIONS}
    try:
        yield
    finally:
        if flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = flags
        try:
            from jax.experimental.compilation_cache import compilation_cache

            for key, value in before.items():
                jax.config.update(key, value)
            compilation_cache.reset_cache()
        except Exception:  # noqa: BLE001 - restoring must never mask the command's error
            pass


#: On CPU devices (one per core) ``--devices all`` shards a per-GPU run's replications only while
#: each device keeps at least this many: below that the cores' contention costs more than the
#: parallelism gives (FI-WSP, n = 500, 2 cores: 2 replications 0.87x the events/s on two
#: devices as on one, 8 replications 0.99x, 16 1.23x; 5 replications, 2,000 s: 31 s on one
#: device, 62 s on two, where one of the two also runs a padding replication).
MIN_PER_GPU_REPS_PER_CPU_DEVICE = 8


#: Rings of per-class queues at least this long run on one CPU device, with their deadline
#: index, rather than sharded over several with a pass over each ring (see
#: :func:`_one_device_for_the_index`).
INDEX_ONE_DEVICE_CAPACITY = 2048


def _one_device_for_the_index(system, available) -> bool:
    """Whether ``system`` runs faster on one CPU device than on all of ``available``: its
    per-class queues are rings of :data:`INDEX_ONE_DEVICE_CAPACITY` slots or more under a
    patience law other than the fixed one. Sharded, the rings count their live jobs by a pass
    over every slot (:func:`jaxqueue.simulate` turns their index off there); on one device the
    index counts them in about ``sqrt(capacity)`` reads. Measured with ``scripts/bench.py
    --only patience --gpus 500 --reps 256 --horizon 4`` (2-core machine, 2026-12-05): under a
    lognormal patience 0.89 M events/s on one device against 0.044 M on two; with a fixed
    patience, whose pass is a binary search, 1.3 M against 1.56 M; the latency counters at
    n = 20 (256-slot rings) ran faster on two (1.53 M against 0.95 M)."""
    if system is None or len(available) < 2 or not getattr(system, "ring_index", False):
        return False
    if not all(d.platform == "cpu" for d in available) or not getattr(system, "per_job", False):
        return False
    law = getattr(system.model.patience, "law", "exponential")
    return (system.capacity or 0) >= INDEX_ONE_DEVICE_CAPACITY and law != "deterministic"


def _devices(spec: str, system=None, reps: int | None = None):
    """``all`` or a count N: the first N devices of the default backend. With ``all``, a
    per-GPU ``system`` and ``reps`` on CPU devices, only as many devices as keep
    :data:`MIN_PER_GPU_REPS_PER_CPU_DEVICE` replications each (at least one)."""
    import jax

    available = jax.devices()
    if spec == "all" and _one_device_for_the_index(system, available):
        _say(f"the per-class queues are rings of {system.capacity:,} slots: one device counts "
             "their live jobs from an index, faster than a pass over every slot on each of "
             f"the {len(available)} CPU devices (--devices {len(available)} to share them)")
        return available[:1]
    if spec == "all":
        from .policies.per_gpu import PerGpu

        if (isinstance(system, PerGpu) and reps is not None
                and all(d.platform == "cpu" for d in available)):
            count = max(1, min(len(available), reps // MIN_PER_GPU_REPS_PER_CPU_DEVICE))
            if count < len(available):
                _say(f"{reps} replications of a per-GPU policy run on {count} of the "
                     f"{len(available)} CPU devices (faster with fewer than "
                     f"{MIN_PER_GPU_REPS_PER_CPU_DEVICE} replications per device)")
            return available[:count]
        return available
    try:
        count = int(spec)
    except ValueError:
        raise ValueError(f"devices = {spec!r} is invalid: must be 'all' or an integer "
                         f"in [1, {len(available)}]") from None
    if not 1 <= count <= len(available):
        raise ValueError(f"devices = {count} is invalid: must be 'all' or an integer in "
                         f"[1, {len(available)}] (available: {len(available)})")
    return available[:count]


def _say(message: str) -> None:
    """One notice on stderr."""
    print(f"jaxqueue: {message}", file=sys.stderr, flush=True)


def _bars(args) -> bool:
    """Whether to show progress bars: on a terminal, without --json."""
    return not args.json and sys.stderr.isatty()


#: Without a progress bar (stderr not a terminal, or --json), a line every this many seconds.
PROGRESS_EVERY = 30.0


class _Lines:
    """Progress as sparse lines on stderr, for logs and CI: one when the run is compiled and
    going (for a run whose estimate was announced), then one every :data:`PROGRESS_EVERY`
    seconds with the share done and the time left."""

    def __init__(self, label: str, announced: bool):
        self.label, self.announced = label, announced
        self.first = self.last = None

    def __call__(self, fraction: float) -> None:
        import time

        from .budget import human_seconds

        now = time.monotonic()
        if self.first is None:  # the first chunk is done: compiled, and the clock starts
            self.first, self.last = (now, fraction), now
            if self.announced:
                _say(f"{self.label}: compiled; simulating (progress every "
                     f"{PROGRESS_EVERY:g} s: stderr is not a terminal or --json)")
            return
        if now - self.last < PROGRESS_EVERY or fraction >= 1.0:
            return
        self.last = now
        (t0, f0), elapsed = self.first, now - self.first[0]
        rate = (fraction - f0) / elapsed if elapsed > 0 else 0.0
        left = f", about {human_seconds((1.0 - fraction) / rate)} left" if rate > 0 else ""
        _say(f"{self.label}: {100 * fraction:.0f}% simulated, {human_seconds(now - t0)} "
             f"elapsed{left}")


def _progress(args, label: str, announced: bool = False):
    """A progress bar label when stderr is a terminal and the output is not JSON; otherwise
    sparse progress lines (:class:`_Lines`)."""
    if _bars(args):
        return label
    return _Lines(label, announced)


def _json_ready(obj):
    """NaN and infinity become null: the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return obj


def _emit(obj: dict[str, Any], as_json: bool, lines) -> None:
    if as_json:
        json.dump(_json_ready(obj), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print("\n".join(line.rstrip() for line in lines(obj)))


def _sli(args):
    """The SLI targets given on the command line (None when there are none)."""
    from . import fluid

    targets = {"prefill_fairness": args.prefill_fairness, "decode_fairness": args.decode_fairness,
               "tpot": args.tpot}
    if all(v is None for v in targets.values()):
        if args.penalty:
            raise ValueError("--penalty needs at least one SLI target (--prefill-fairness, "
                             "--decode-fairness or --tpot)")
        return None
    weights = {k: args.penalty_weight for k, v in targets.items() if v is not None}
    return fluid.SLI(**targets, penalty=args.penalty, weights=weights)


# ---- lp ---------------------------------------------------------------------------------------
def plan_summary(model, plan) -> dict[str, Any]:
    """The JSON object of ``jaxqueue lp``: plain Python floats, per-class rows by name."""
    if plan.x.shape != (model.num_classes,):
        raise ValueError(f"plan has {plan.x.size} classes but model {model.name!r} has "
                         f"{model.num_classes}")

    rows = zip(model.class_names, plan.x, plan.y_m, plan.y_s, plan.q_p, plan.q_d, strict=True)
    keys = ("x", "y_mixed", "y_solo", "q_prefill", "q_decode")
    return {
        "scenario": model.name,
        "pricing": plan.pricing, "revenue": float(plan.revenue),
        "objective": float(plan.objective), "penalty": float(plan.penalty),
        "mixed_fraction": plan.sum_x, "solo_efficient": bool(plan.solo_efficient),
        "classes": [{"name": name, **{k: float(v) for k, v in zip(keys, values, strict=True)}}
                    for name, *values in rows],
        "sli": {k: float(v) for k, v in plan.sli.items()},
        "duals": {k: float(v) for k, v in plan.duals.items()},
    }


_PLAN_KEYS = {"x": "x", "y_m": "y_mixed", "y_s": "y_solo", "q_p": "q_prefill", "q_d": "q_decode"}


def _cmd_lp(args) -> None:
    from . import fluid, scenarios

    model = scenarios.load(args.scenario)
    sli = _sli(args)
    plan = fluid.solve(model, args.pricing, sli=sli)
    out = plan_summary(model, plan)
    if sli is not None:
        out["penalties"] = fluid.penalty_terms(plan, sli) if sli.penalty else {}
        for name, term in out["penalties"].items():
            if term["excess"] > 0:
                term["smallest"] = fluid.smallest(model, name)
    optima = fluid.optima(model, args.pricing, sli=sli)
    out["unique"] = optima.unique()
    out["optimum_tolerance"] = optima.tolerance
    out["alternative_optima"] = {}
    for k, key in _PLAN_KEYS.items():
        spread = optima.spread(k)
        wide = {name: [float(optima.low[k][i]), float(optima.high[k][i])]
                for i, name in enumerate(model.class_names) if spread[i] > 1e-6}
        if wide:
            out["alternative_optima"][key] = wide
    from .tables import lp_lines

    _emit(out, args.json, lp_lines)


def _cmd_frontier(args) -> None:
    from . import fluid, scenarios

    model = scenarios.load(args.scenario)
    name = args.sli.replace("-", "_")
    rows = fluid.frontier(model, name, args.values)
    out = {"scenario": model.name, "sli": name, "unconstrained_revenue":
           fluid.solve(model, "bundled").revenue, "points": rows}
    unit = "s" if name == "tpot" else "jobs/GPU"

    def lines(o):
        return [f"{o['scenario']}: bundled LP revenue per GPU per second against the {o['sli']} "
                f"target (unconstrained R* = {o['unconstrained_revenue']:.4f})",
                f"{'target (' + unit + ')':>16} {'revenue':>12} {'shadow price':>14}",
                *(f"{r['value']:>16.6g} {r['revenue']:>12.4f} {r['shadow_price']:>14.6g}"
                  for r in o["points"]),
                "shadow price: revenue per GPU per second gained per unit of target"]
    _emit(out, args.json, lines)


# ---- simulate ---------------------------------------------------------------------------------
def _plan_text(policy, sli, plan) -> str:
    """What the policy takes from its LP, for the ``plan:`` line."""
    if policy.router == "sli":
        if sli is None:
            return (f"the bundled LP without SLI targets (none given), R* = {plan.revenue:.4f}: "
                    "the plan of gate-and-route; only the router differs")
        kind = "penalties" if sli.penalty else "hard targets"
        targets = ", ".join(f"{k} <= {v:g}{' s' if k == 'tpot' else ''}"
                            for k, v in sli.targets.items())
        return f"SLI-aware LP with {targets} ({kind}), revenue {plan.revenue:.4f}"
    if policy.plans == "nothing":
        return (f"none (no static planning, FCFS admission); the {plan.pricing} LP bounds its "
                f"revenue: R* = {plan.revenue:.4f}")
    if policy.plans == "targets":
        return (f"the gate's targets x* from the {plan.pricing} LP (R* = {plan.revenue:.4f}); "
                "no static planning")
    return f"the {plan.pricing} LP (R* = {plan.revenue:.4f})"


def _announce(est, devices, args) -> bool:
    from .budget import human_bytes, human_seconds

    seconds = est.seconds
    if seconds is None or (seconds < ANNOUNCE_AFTER and not args.estimate):
        return False
    _say(f"estimated run time {human_seconds(seconds + STARTUP)}: {human_seconds(seconds)} of "
         f"simulation (about {est.events:.3g} events at an assumed "
         f"{est.events_per_second:.3g} events/s on {len(devices)} device"
         f"{'s' if len(devices) != 1 else ''}) and about {STARTUP:g} s starting and compiling; "
         f"memory {human_bytes(est.device_bytes_per_rep)} per replication. Ctrl-C stops the run "
         "and reports what was simulated")
    return True


def _cmd_simulate(args) -> int:
    import jax

    from . import budget, policies, scenarios
    from .compare import tuned_system
    from .driver import CHUNK_BOUNDS, GROWTH, BufferOverflowError, simulate

    model = scenarios.load(args.scenario)
    arrivals = None
    if args.replay is not None:
        from . import replay, workload

        model, arrivals = replay.from_trace(model, workload.read_trace(args.replay), args.gpus,
                                            args.replay_speed)
        if args.replay_poisson:  # the trace's class rates and plan, Poisson arrival times
            args.replayed, arrivals = arrivals, None
    elif args.replay_speed != 1.0 or args.replay_poisson:
        raise ValueError(("--replay-speed" if args.replay_speed != 1.0 else "--replay-poisson")
                         + " goes with --replay FILE")
    tuned = None
    if args.params is not None:
        system, plan, family, params, sli, meta = tuned_system(
            args.params, model, args.gpus, capacity=args.buffer_capacity)
        tuned = {"family": family, "file": str(args.params), "params": params,
                 "tuned_for": {k: meta.get(k) for k in ("scenario", "gpus")}}
        label = f"tuned {family}, n = {args.gpus}"
    else:
        policy = policies.resolve(args.policy)
        sli = _sli(args)
        if sli is not None and policy.router != "sli":
            raise ValueError(f"--prefill-fairness, --decode-fairness and --tpot plan from the "
                             f"SLI-aware LP, which only sli-gate-and-route follows: policy "
                             f"{policy.name!r} would take that plan without its router; use "
                             "--policy sli-gate-and-route")
        system, plan = policies.build(policy.name, model, args.gpus,
                                      capacity=args.buffer_capacity, engine=args.engine,
                                      speed_rule=args.speed_rule, sli=sli)
        label = f"n = {args.gpus}"
    if arrivals is not None:
        system = _with_arrivals(system, None if tuned else policy, arrivals)
    targets = _goodput_targets(args.slo)
    if args.latency or targets:
        system = _with_latency(system, None if tuned else policy, tuple(targets.values()))
        needs_e2e = sorted(m for m in targets if m in ("e2e", "tpot"))
        if needs_e2e and not system.end_to_end:
            raise ValueError(f"--slo {needs_e2e[0]}=... is not available under a phase-type "
                             "prefill (the scenario's service.prefill law): the end-to-end "
                             "counters need exponential prefill times; the wait and ttft "
                             "targets are")
    devices = _devices(args.devices, system, args.reps)
    est = budget.estimate(system, reps=args.reps, horizon=args.horizon,
                          chunk_events=args.chunk_events or CHUNK_BOUNDS[0], devices=devices)
    budget.check_fits(system, est, args.reps)
    announced = _announce(est, devices, args)
    if args.estimate:
        return 0
    try:
        run = simulate(jax.random.key(args.seed), system, reps=args.reps, horizon=args.horizon,
                       warmup=args.warmup, chunk_events=args.chunk_events,
                       progress=_progress(args, label, announced), devices=devices,
                       checkpoint=args.checkpoint, grow_buffers=args.buffer_capacity is None,
                       notify=_say)
    except BufferOverflowError as err:
        if args.buffer_capacity is None or err.capacity is None:
            raise
        raise BufferOverflowError(
            f"a FCFS buffer overflowed its fixed capacity of {err.capacity:,} jobs "
            f"(--buffer-capacity): rerun with --buffer-capacity {GROWTH * err.capacity} or "
            "more, or without it (jaxqueue then sizes the buffers from the scenario and grows "
            "them as needed)", capacity=err.capacity) from None
    if tuned is None:
        out = _simulation_out(args, model, system, plan, run, devices, policy=policy, sli=sli)
    else:
        out = _simulation_out(args, model, system, plan, run, devices, sli=sli, tuned=tuned)
    from .tables import simulate_lines

    _emit(out, args.json, lambda o: simulate_lines(o, details=args.details))
    if run.interrupted:
        _say("interrupted: the results above cover the part simulated"
             + (f"; rerun the same command to resume from {args.checkpoint}"
                if args.checkpoint else ""))
        return INTERRUPTED
    return 0


def _with_arrivals(system, policy, arrivals):
    """``system`` replaying ``arrivals`` (:mod:`jaxqueue.replay`); the paper's pooled policies
    only."""
    import dataclasses

    from .policies.pooled import Pooled

    if type(system) is not Pooled or system.params is not None:
        name = policy.name if policy is not None else "a tuned family"
        raise ValueError(f"--replay is supported by the pooled gate-and-route, fg-sp and "
                         f"prioritize-and-route, not by {name} on the "
                         f"{type(system).__name__} system")
    return dataclasses.replace(system, arrivals=arrivals)


def _goodput_targets(texts) -> dict[str, float]:
    """``--slo`` values (``METRIC=SECONDS``) as ``{metric: seconds}``, a clear error naming the
    value otherwise."""
    import math

    from .stats import GOODPUT_METRICS

    targets: dict[str, float] = {}
    for text in texts or ():
        metric, _, value = text.partition("=")
        metric = metric.strip()
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if metric not in GOODPUT_METRICS or not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"--slo {text!r} is invalid: must be METRIC=SECONDS, METRIC one of "
                             f"{', '.join(GOODPUT_METRICS)} and SECONDS a number > 0")
        if metric in targets:
            raise ValueError(f"--slo {text!r} is invalid: {metric} already has a target "
                             f"({targets[metric]:g} s); give one per metric")
        targets[metric] = seconds
    return targets


def _with_latency(system, policy, extra=()):
    """``system`` counting its requests' latencies (:func:`jaxqueue.stats.latency`) on the CLI's
    grid of times and the times ``extra`` (goodput targets, counted exactly); pooled
    Gate-and-Route, FG-SP and Prioritize-and-Route only."""
    import dataclasses

    from .policies.pooled import Pooled
    from .stats import LATENCY_GRID

    if type(system) is not Pooled:
        name = policy.name if policy is not None else "a tuned family"
        raise ValueError(f"--latency and --slo are supported by the pooled gate-and-route, "
                         f"fg-sp and prioritize-and-route, not by {name} on the "
                         f"{type(system).__name__} system")
    grid = tuple(sorted(set(LATENCY_GRID) | {float(t) for t in extra}))
    # The end-to-end counters need exponential prefill times (Pooled.tracks_origin); under a
    # phase-type prefill the others run: waits, time to first token, decode waits.
    return dataclasses.replace(system, wait_grid=grid, end_to_end=system.prefill_law is None)


def _simulation_out(args, model, system, plan, run, devices, *, policy=None, sli=None,
                    tuned=None) -> dict[str, Any]:
    """The JSON object of ``jaxqueue simulate`` (a named policy, or with ``tuned`` a tuned
    member of a family: ``{family, file, params, tuned_for}``)."""
    import dataclasses

    import numpy as np

    from . import diagnose, fluid, policies, stats

    planned = getattr(system, "layout", "planned") == "planned"
    if tuned is not None and tuned["family"] == "gated":
        # M = n * share, rounded at random per replication
        mixed = float(args.gpus * np.asarray(tuned["params"].share))
    else:
        mixed = int(system.M) if planned else None
    other = "separate" if plan.pricing == "bundled" else "bundled"
    out: dict[str, Any] = {
        "scenario": model.name, "engine": policies.engine_of(system), "gpus": args.gpus,
        "mixed_gpus": mixed, "static_planning": planned,
        "coupled": bool(getattr(system, "coupled", False)),
        "reps": args.reps, "horizon": args.horizon, "warmup": args.warmup, "seed": args.seed,
        "lp_revenue": plan.revenue, "lp_pricing": plan.pricing,
        "other_lp_revenue": fluid.solve(model, other).revenue,
        "unconstrained_lp_revenue": (fluid.solve(model, "bundled").revenue
                                     if sli is not None else None),
        "patience": None if model.patience is None else {
            "law": model.patience.law, "cv": np.asarray(model.patience.cv).tolist()},
        "service": None if model.service is None else model.service.describe(),
        "replay": _replay_out(args, system, model),
    }
    if tuned is None:
        out.update(policy=policy.name, plan=_plan_text(policy, sli, plan))
    else:
        params = {f.name: np.asarray(getattr(tuned["params"], f.name)).tolist()
                  for f in dataclasses.fields(tuned["params"])}
        out.update(policy=f"tuned {tuned['family']}", family=tuned["family"],
                   params_file=tuned["file"], params=params, tuned_for=tuned["tuned_for"],
                   plan=f"tuned from the point of the {plan.pricing} LP (R* = "
                        f"{plan.revenue:.4f}) where the family is the paper's policy")
    out.update({
        "interrupted": run.interrupted,
        "time_reached": {"min": float(run.time.min()), "mean": float(run.time.mean()),
                         "max": float(run.time.max())},
        "replications_with_statistics": int(np.sum(run.collected)),
        "buffer_capacity": run.buffer_capacity, "buffers_regrown": run.regrown,
        "resumed": run.resumed,
        "events": run.events, "wall_seconds": run.wall_seconds,
        "compile_seconds": run.compile_seconds, "events_per_second": run.events_per_second,
        "devices": len(devices), "chunk_events": run.chunk_events,
    })
    if np.any(run.collected):
        summary = stats.summarize_pooled(run, model, args.gpus)
        out["revenue_per_gpu"] = summary["revenue_per_gpu"]
        out["sli"] = _sli_report(summary["sli"], model, plan, sli)
        for c, i in zip(summary["classes"], range(model.num_classes), strict=True):
            c["plan"] = {"x": float(plan.x[i]), "y_mixed": float(plan.y_m[i]),
                         "y_solo": float(plan.y_s[i]), "q_prefill": float(plan.q_p[i]),
                         "q_decode": float(plan.q_d[i]),
                         "completion_rate": float(plan.completion_rate(model)[i])}
        out["classes"] = summary["classes"]
        revenue = summary["revenue_per_gpu"][plan.pricing]["mean"]
        out["diagnosis"] = diagnose.diagnose(model, plan, summary["classes"], revenue,
                                             gpus=args.gpus, scenario=args.scenario)
        if getattr(system, "wait_grid", ()):
            from .compare import latency_summary

            out["latency"] = latency_summary(stats.latency(
                run, system.wait_grid, per_token=stats.per_token_times(model)), model)
            targets = _goodput_targets(getattr(args, "slo", None))
            if targets:
                from .compare import goodput_summary

                out["goodput"] = goodput_summary(stats.goodput(
                    run, system.wait_grid, targets, args.gpus,
                    per_token=stats.per_token_times(model)), model)
    else:
        out.update(revenue_per_gpu=None, sli=None, classes=None, diagnosis=None)
    return out


def _replay_out(args, system, model) -> dict[str, Any] | None:
    """What ``--replay`` replays: the file, its requests, the cycle and the rates it gives."""
    import numpy as np

    arrivals = getattr(system, "arrivals", None)
    if arrivals is None:
        arrivals = getattr(args, "replayed", None)  # --replay-poisson: its rates only
    if arrivals is None:
        return None
    counts = np.bincount(np.asarray(arrivals.classes), minlength=model.num_classes)
    return {"file": str(args.replay), "requests": int(arrivals.size), "speed": args.replay_speed,
            "poisson": bool(getattr(args, "replay_poisson", False)),
            "period_seconds": float(arrivals.period),
            "requests_per_class": counts.tolist(),
            "arrival_rate_per_gpu": np.asarray(model.lambda_, np.float64).tolist()}


def _sli_report(achieved, model, plan, sli) -> dict[str, Any]:
    """Achieved SLIs with the plan's values and the targets (the formula's target also applies,
    for reading, to the TPOT that decodes see)."""
    import numpy as np

    from .stats import tpot

    decoding = float(np.sum(plan.y_m + plan.y_s))
    seen = (float(np.sum(plan.y_m) * model.tau + np.sum(plan.y_s) / model.gamma) / decoding
            if decoding > 0 else None)
    plans = {"tpot_formula": float(tpot(model, plan.sum_x)), "tpot_experienced": seen,
             "prefill_fairness": float(np.ptp(plan.x)), "decode_fairness": float(np.ptp(plan.y_s))}
    targets = sli.targets if sli is not None else {}
    target_of = {"tpot_formula": targets.get("tpot"), "tpot_experienced": targets.get("tpot"),
                 "prefill_fairness": targets.get("prefill_fairness"),
                 "decode_fairness": targets.get("decode_fairness")}
    return {k: {**v, "plan": plans[k], "target": target_of[k]} for k, v in achieved.items()}


# ---- sensitivity ------------------------------------------------------------------------------
def _cmd_sensitivity(args) -> int:
    import jax

    from . import scenarios, sensitivity
    from .budget import human_bytes, human_seconds

    model = scenarios.load(args.scenario)
    devices = _devices(args.devices)
    options = dict(policy=args.policy, engine=args.engine, reps=args.reps, horizon=args.horizon,
                   rel_step=args.rel_step, replan=args.replan, devices=devices)
    est, systems = sensitivity.estimate(model, args.gpus, **options)
    announced = est.seconds is not None and (est.seconds >= ANNOUNCE_AFTER or args.estimate)
    if announced:
        _say(f"estimated run time {human_seconds(est.seconds)} ({systems} systems x "
             f"{args.reps} replications side by side: at most {est.events:.3g} events at an "
             f"assumed {est.events_per_second:.3g} events/s on {len(devices)} device"
             f"{'s' if len(devices) != 1 else ''}, compilation excluded); memory "
             f"{human_bytes(est.device_bytes_per_rep)} per replication. Ctrl-C stops it "
             "without a result")
    if args.estimate:
        return 0
    out = sensitivity.sensitivities(
        jax.random.key(args.seed), model, args.gpus, warmup=args.warmup,
        progress=_progress(args, f"n = {args.gpus}, {systems} systems", announced), **options)
    out["seed"] = args.seed
    _emit(out, args.json, sensitivity.lines)
    return 0


# ---- validate ---------------------------------------------------------------------------------
def _cmd_validate(args) -> int:
    from . import validate
    from .tables import convergence_lines, exact_check_lines

    which = args.check
    out: dict[str, Any] = {}
    if which in ("erlang-a", "all"):
        out["erlang_a"] = validate.erlang_a_check(
            args.servers, args.arrival_rate, args.service_rate, args.patience_rate,
            reps=args.reps, horizon=args.horizon, warmup=args.warmup, seed=args.seed,
            devices=_devices("all"), progress=_progress(args, "Erlang-A"))
    if which in ("small", "all"):
        out["small"] = validate.small_system_check(
            args.policy, reps=args.reps, horizon=args.horizon, warmup=args.warmup, seed=args.seed,
            devices=_devices("all"), progress=_progress(args, "small system"))
    if which in ("convergence", "all"):
        out["convergence"] = validate.convergence_check(
            args.scenario, args.gpus_list, policy=args.policy, reps=min(args.reps, 64),
            horizon=args.horizon, warmup=args.warmup, seed=args.seed, devices=_devices("all"),
            progress=_bars(args), notify=_say)
    if which != "all":
        out = out[which.replace("-", "_")]

    def lines(o):
        part = (lambda key: o.get(key)) if which == "all" else (
            lambda key: o if key == which.replace("-", "_") else None)
        label = (lambda letter: f"({letter}) ") if which == "all" else (lambda letter: "")
        text: list[str] = []
        ea = part("erlang_a")
        if ea:
            s = ea["system"]
            rows = [(k, {**ea["simulated"][k], "exact": ea["exact"][k], "z": ea["z"][k],
                         "agree": abs(ea["z"][k]) <= 3}) for k in ea["simulated"]]
            text += exact_check_lines(
                f"{label('a')}Erlang-A M/M/{s['servers']}+M (lambda = {s['arrival_rate']:g}/s, "
                f"mu = {s['service_rate']:g}/s, theta = {s['patience_rate']:g}/s), "
                f"{ea['reps']} replications", rows, ea["verdict"], ea["criterion"])
            text.append(f"  {ea['events']:,} events, {ea['events_per_second']:,.0f} events/s")
        sm = part("small")
        if sm:
            text += exact_check_lines(
                f"{label('b')}{sm['policy']} on n = {sm['n']} GPUs (M = {sm['M']}) against the "
                f"exact law of its generator\n  ({sm['num_states']} states, truncation mass "
                f"{sm['truncation_mass']:.1e}; {sm['reps']} replications)",
                [(f"{r['quantity']}[{r['class']}]", r) for r in sm["checks"]], sm["verdict"],
                sm["criterion"])
        cv = part("convergence")
        if cv:
            text += convergence_lines(cv, prefix=label("c"))
        return text

    _emit(out, args.json, lines)
    verdicts = [v.get("verdict") for v in ([out] if which != "all" else out.values())]
    if "interrupted" in verdicts:
        return INTERRUPTED
    return 1 if "disagree" in verdicts else 0


def _cmd_convergence(args) -> int:
    from . import validate
    from .tables import convergence_lines

    out = validate.convergence_check(args.scenario, args.gpus_list, policy=args.policy,
                                     reps=args.reps, horizon=args.horizon, warmup=args.warmup,
                                     seed=args.seed, devices=_devices("all"),
                                     progress=_bars(args), notify=_say)
    _emit(out, args.json, convergence_lines)
    if out["verdict"] == "interrupted":
        _say("interrupted: the rows above cover the n simulated; no verdict")
        return INTERRUPTED
    return 1 if out["verdict"] == "disagree" else 0


def _cmd_policies(args) -> None:
    from . import policies

    out = {p.name: {"aliases": list(p.aliases), "pricing": p.pricing, "engines": list(p.engines),
                    "origin": p.origin, "description": p.description}
           for p in policies.POLICIES.values()}

    def lines(o):
        import textwrap

        heads = {"paper": "the paper's policies (Lin, Han, Ding & Zhang, arXiv 2602.02987):",
                 "jaxqueue": "jaxqueue's own:"}
        for origin, head in heads.items():
            yield head
            for name, p in o.items():
                if p["origin"] != origin:
                    continue
                alias = f" (alias {', '.join(p['aliases'])})" if p["aliases"] else ""
                yield from textwrap.wrap(
                    f"{name}{alias} [{', '.join(p['engines'])}]: {p['description']}", 100,
                    initial_indent="  ", subsequent_indent="    ")
    _emit(out, args.json, lines)


def _cmd_scenarios(args) -> None:
    from . import scenarios

    if args.out and args.json:
        raise ValueError("--out writes the scenario file and --json prints JSON: give one of them")
    if args.show is None and (args.set or args.out):
        raise ValueError(f"{'--set' if args.set else '--out'} needs --show SCENARIO (the "
                         "scenario to change or write)")
    if args.show is not None:
        model = scenarios.changed(scenarios.load(args.show), args.set)
        if args.set and not any(s.partition("=")[0].strip() == "name" for s in args.set):
            # a changed scenario does not keep its source's name, which every output prints
            model = model.replace(name=f"{model.name} ({', '.join(args.set)})")
        if args.json:
            _emit(model.to_dict(), True, lambda o: [])
            return
        text = scenarios.to_toml(model, header=f"Scenario {args.show}" + "".join(
            f", {s}" for s in args.set) + "\nwritten by: jaxqueue scenarios --show "
            + " ".join([args.show, *(f"--set {s}" for s in args.set)]))
        if args.out is None:
            print(text, end="")
        else:
            Path(args.out).write_text(text)
            print(f"wrote {args.out}", file=sys.stderr)
        return
    out = {name: scenarios.load(name).to_dict() for name in scenarios.names()}

    def lines(o):
        return [f"{name}: {len(d['classes'])} classes, B={d['gpu']['batch']}, "
                f"C={d['gpu']['chunk']:g}, alpha={d['gpu']['alpha']}, beta={d['gpu']['beta']}, "
                f"gamma={d['gpu']['gamma']:.4g}" for name, d in o.items()]
    _emit(out, args.json, lines)


def _find_experiments(env: str | None, package: Path, cwd: Path) -> Path | None:
    """The experiments/ folder ``jaxqueue reproduce`` runs: ``JAXQUEUE_EXPERIMENTS`` if set;
    else the one next to the package (a clone installed with ``pip install -e .``); else the
    one of the clone the command runs in (the current folder or one above it, holding
    ``experiments/reproduce.py`` and jaxqueue's ``pyproject.toml``), which is how ``pip install
    .`` finds it: the experiments are not part of the installed package (they are scripts that
    write figures and a report, not library code). None when there is none."""
    if env:
        folder = Path(env)
        return folder if (folder / "reproduce.py").is_file() else None

    def clone(root: Path) -> bool:
        try:
            return 'name = "jaxqueue"' in (root / "pyproject.toml").read_text()
        except OSError:
            return False
    for root in (package.parent, cwd, *cwd.parents):
        if (root / "experiments" / "reproduce.py").is_file() and (
                root == package.parent or clone(root)):
            return root / "experiments"
    return None


def _cmd_reproduce(args) -> None:
    """Runs the repository's experiments/ (the paper's figures) and writes REPORT.md (see
    :func:`_find_experiments` for where they are found)."""
    import importlib

    env = os.environ.get("JAXQUEUE_EXPERIMENTS")
    folder = _find_experiments(env, Path(__file__).resolve().parent, Path.cwd())
    if folder is None:
        if env:
            raise ValueError(f"experiments folder {env} not found (JAXQUEUE_EXPERIMENTS): it "
                             "must hold the repository's experiments/reproduce.py")
        raise ValueError("experiments folder not found: jaxqueue reproduce runs the "
                         "experiments/ of a clone of the repository, which pip install does not "
                         "install; run it inside the clone (cd path/to/jaxqueue), or set "
                         "JAXQUEUE_EXPERIMENTS=path/to/jaxqueue/experiments")
    root = str(folder.resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    runner = importlib.import_module("experiments.reproduce")
    sizes = _reproduce_sizes(args.set or (), runner)
    out = runner.main(out=args.out, quick=args.quick, only=args.only, seed=args.seed,
                      force=args.force, sizes=sizes)
    if args.json:
        _emit({"report": out["report"], "out": args.out, "quick": args.quick, "seed": args.seed,
               "sizes": sizes, "timings": out["timings"], "skipped": out["skipped"],
               "claims": [{"id": c.id, "figure": c.figure, "statement": c.statement,
                           "verdict": c.verdict, "evidence": c.evidence}
                          for c in out["claims"]]}, True, None)
        return
    print(f"{out['report']}")
    for c in out["claims"]:
        print(f"{c.verdict:>15}  {c.figure:<16} {c.statement}")


def _reproduce_sizes(items, runner) -> dict[str, dict]:
    """``--set NAME.KEY=VALUE`` items as ``{NAME: {KEY: VALUE}}``, checked against each
    experiment's own sizes (VALUE read as JSON where it parses, else as text)."""
    sizes: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        name, dot, key = target.rpartition(".")
        if not sep or not dot or name not in runner.EXPERIMENTS:
            raise ValueError(f"--set {item!r} is invalid: must be NAME.KEY=VALUE with NAME one "
                             f"of {', '.join(runner.EXPERIMENTS)}")
        allowed = runner.module(name).FULL
        if key not in allowed:
            raise ValueError(f"--set {item!r} is invalid: {name}'s sizes are "
                             f"{', '.join(allowed)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        sizes.setdefault(name, {})[key] = value
    return sizes


# ---- capacity ---------------------------------------------------------------------------------
def _cmd_capacity(args) -> int:
    import numpy as np

    from . import capacity, policies, scenarios
    from .tables import capacity_lines

    model = scenarios.load(args.scenario)
    slos = dict(capacity.parse_slo(t, model.class_names) for t in args.slo or ())
    traffic, arrivals = args.traffic, None
    if args.replay is not None:
        from . import replay, workload

        trace = workload.read_trace(args.replay)
        # The trace's classes at its own speed, then scaled to the traffic asked for.
        model, arrivals = replay.from_trace(model, trace, 1)
        own = float(np.sum(model.lambda_))
        if traffic is not None:
            model, arrivals = replay.from_trace(model, trace, 1, speed=traffic / own)
        traffic = float(np.sum(model.lambda_))
        replayed = {"file": str(args.replay), "requests": int(arrivals.size),
                    "period_seconds": float(arrivals.period), "poisson": args.replay_poisson}
        if args.replay_poisson:
            arrivals = None
    elif traffic is None:
        raise ValueError("--traffic is required (requests per second in all), unless --replay "
                         "gives a trace's")
    elif args.replay_poisson:
        raise ValueError("--replay-poisson goes with --replay FILE")
    out = capacity.answer(model, traffic, policy=policies.resolve(args.policy).name,
                          slos=slos, max_abandon=args.max_abandon, reps=args.reps,
                          horizon=args.horizon, warmup=args.warmup, seed=args.seed,
                          n_max=args.max_gpus, devices=_devices(args.devices),
                          compare=args.compare, notify=_say, arrivals=arrivals)
    if args.replay is not None:
        out["replay"] = replayed
    if args.plot:
        capacity.plot(args.plot, out)
        out["plot"] = args.plot
    _emit(out, args.json, capacity_lines)
    return 0


# ---- compare ----------------------------------------------------------------------------------
def _cmd_compare(args) -> int:
    import jax

    from . import compare, scenarios
    from .budget import human_seconds
    from .tables import compare_lines

    model = scenarios.load(args.scenario)
    text = args.policies.strip()
    names = "all" if text == "all" else [k.strip() for k in text.split(",") if k.strip()]
    items = compare.entries(model, args.gpus, names=names, params=args.params)
    devices = _devices(args.devices)
    gpu_reps = args.gpu_reps or compare.per_gpu_reps(args.reps, len(devices))
    est = compare.estimate(items, reps=args.reps, gpu_reps=gpu_reps, horizon=args.horizon,
                           chunk_events=args.chunk_events, devices=devices)
    pooled = sum(e.engine == "pooled" for e in items)
    per_gpu = len(items) - pooled
    compiling = STARTUP + COMPILE_EACH * len(items)
    _say(f"estimated run time {human_seconds(est['seconds'] + compiling)} for {len(items)} "
         f"policies: {human_seconds(est['seconds'])} of simulation ({pooled} pooled x {args.reps} "
         f"replications, {per_gpu} per-GPU x {gpu_reps}; horizon {args.horizon:g} s, n = "
         f"{args.gpus}) and about {human_seconds(compiling)} starting and compiling (2-8 s a "
         "policy on a CPU, less with the compilation cache). Ctrl-C stops it and reports the "
         "policies done")
    if args.estimate:
        return 0
    out = compare.compare(jax.random.key(args.seed), model, args.gpus, items, reps=args.reps,
                          gpu_reps=gpu_reps, horizon=args.horizon, warmup=args.warmup,
                          pricing=args.pricing, devices=devices, chunk_events=args.chunk_events,
                          progress=lambda label: _progress(args, label), notify=_say,
                          scenario=args.scenario, latency=args.latency)
    out.update(seed=args.seed, estimate_seconds=est["seconds"])
    if args.plot and out["policies"]:
        compare.plot(args.plot, out)
        out["plot"] = args.plot
        _say(f"figure written to {args.plot}")
    _emit(out, args.json, compare_lines)
    if out["interrupted"]:
        _say("interrupted: the table covers the policies that finished")
        return INTERRUPTED
    return 0


# ---- parser -----------------------------------------------------------------------------------
class _Help(argparse.HelpFormatter):
    """Shows an option's default once, where it has one (not for flags, required options, or
    options whose help already says what the default is), and strips reStructuredText double
    back-quotes."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = (action.default is not None and action.default is not False
                 and action.default != [] and action.default != ()
                 and action.default is not argparse.SUPPRESS and not action.required
                 and "default" not in text and "%(default)" not in text
                 and (action.option_strings or action.nargs in (argparse.OPTIONAL,
                                                                argparse.ZERO_OR_MORE)))
        if shown:
            text += " (default: %(default)s)"
        return text.replace("``", "")

    def _format_text(self, text):
        return super()._format_text(text.replace("``", ""))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are two lines: a short usage and the error, naming the
    command (``jaxqueue simulate: error: ...``); ``--help`` still shows every option."""

    def format_usage(self) -> str:
        positionals = [a for a in self._actions if not a.option_strings
                       and a.help is not argparse.SUPPRESS]
        words = []
        for a in positionals:
            name = a.metavar or (a.dest.upper() if a.dest != "command" else "COMMAND")
            if isinstance(a, argparse._SubParsersAction):
                name = "COMMAND"
            words.append(f"[{name}]" if a.nargs == argparse.OPTIONAL else name)
        return (f"usage: {self.prog} {' '.join([*words, '[options]'])}   "
                f"(options: {self.prog} --help)\n")

    def error(self, message: str):
        self.exit(2, f"{self.format_usage()}{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxqueue", description=__doc__.replace("``", ""), formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = sub.choices  # name -> parser: errors found after parsing name their command

    def command(name, summary, **kw):  # help is %-formatted, the description is not
        return sub.add_parser(name, help=summary.replace("%", "%%"), description=summary,
                              formatter_class=_Help, **kw)

    def sli_options(q):
        q.add_argument("--prefill-fairness", type=_number("prefill-fairness"), default=None,
                       metavar="ETA1", help="target: max_ij (x_i - x_j) <= ETA1 prefills per GPU "
                       "(docs/model.md, SLIs)")
        q.add_argument("--decode-fairness", type=_number("decode-fairness"), default=None,
                       metavar="ETA2", help="target: max_ij (y_s,i - y_s,j) <= ETA2 solo decodes "
                       "per GPU")
        q.add_argument("--tpot", type=_number("tpot", strict=True), default=None, metavar="ETA3",
                       help="target: the paper's average time per output token <= ETA3 seconds")
        q.add_argument("--penalty", action="store_true",
                       help="penalize SLI violations linearly instead of imposing them")
        q.add_argument("--penalty-weight", type=_number("penalty-weight"), default=1.0,
                       metavar="W", help="weight of each SLI's excess with --penalty: revenue "
                       "per GPU per second per unit of excess (per second of TPOT, per job per "
                       "GPU of fairness); TPOT excesses are milliseconds, so a weight that "
                       "matters is large (~1e5 on paper-qwen8b)")

    lp = command("lp", "solve the fluid LP of a scenario")
    lp.add_argument("scenario", help="built-in name (jaxqueue scenarios) or path to a TOML file")
    lp.add_argument("--pricing", choices=("bundled", "separate"), default="bundled",
                    help="bundled (Eq. 40) or separate (Eq. 42) pricing")
    sli_options(lp)
    lp.add_argument("--json", action="store_true", help="print one JSON object")
    lp.set_defaults(func=_cmd_lp)

    fr = command("frontier", "LP revenue and shadow price along one SLI target")
    fr.add_argument("scenario", help="built-in name or path to a TOML file")
    fr.add_argument("--sli", required=True, choices=("prefill-fairness", "decode-fairness", "tpot"),
                    help="the SLI whose target varies")
    fr.add_argument("--values", required=True, nargs="+", type=_number("values"),
                    help="the targets (seconds for tpot, jobs per GPU for fairness)")
    fr.add_argument("--json", action="store_true", help="print one JSON object")
    fr.set_defaults(func=_cmd_frontier)

    def run_options(q, reps=256, horizon=2000.0, warmup=500.0):
        q.add_argument("--reps", type=_positive_int("reps"), default=reps,
                       help="independent replications (a 95%% interval needs 2 or more)")
        q.add_argument("--horizon", type=_number("horizon", strict=True), default=horizon,
                       help="simulated time, model seconds")
        q.add_argument("--warmup", type=_number("warmup"), default=warmup,
                       help="discarded initial time, model seconds")
        q.add_argument("--seed", type=int, default=0, help="random seed (replication r uses "
                       "fold_in(key(seed), r))")
        q.add_argument("--json", action="store_true", help="print one JSON object")

    sim = command("simulate", "simulate a policy, many replications at once")
    sim.add_argument("scenario", help="built-in name or path to a TOML file")
    sim.add_argument("--policy", default="gate-and-route",
                     help="a policy name (see jaxqueue policies)")
    sim.add_argument("--engine", choices=("pooled", "per-gpu"), default=None,
                     help="engine for policies that run on both (default: the policy's first)")
    sim.add_argument("--speed-rule", choices=("paper", "idle-solo"), default="paper",
                     help="per-GPU engine: decode speed of a mixed GPU whose prefill slot idles")
    sim.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="save progress to PATH (.npz) every minute and on Ctrl-C; rerunning "
                          "the same command resumes from it, or reads the result of a finished "
                          "run")
    sli_options(sim)
    sim.add_argument("--gpus", type=_positive_int("gpus"), default=50, help="number of GPUs n")
    sim.add_argument("--buffer-capacity", type=_positive_int("buffer-capacity"), default=None,
                     help="fixed slots of each FCFS buffer (an overflow is then an error); by "
                          "default sized from n and the plan and grown if it overflows")
    sim.add_argument("--chunk-events", type=_positive_int("chunk-events"), default=None,
                     help="steps per compiled chunk (default: chosen from the replications "
                          "each device runs at once: 8,192 for a CPU device's 1,024, 32,768 "
                          "below 256, down to 1,024 for a GPU's many; a path does not depend "
                          "on it)")
    sim.add_argument("--devices", default="all",
                     help="shard replications over 'all' devices or the first N (on a CPU, one "
                          "device per core)")
    sim.add_argument("--details", action="store_true",
                     help="also print each class's occupancies and rates next to the LP plan")
    sim.add_argument("--estimate", action="store_true",
                     help="print the memory and run-time estimate and stop")
    sim.add_argument("--latency", action="store_true",
                     help="also measure each request's latency (the wait for prefill, the time "
                          "to first token, the decode buffer's wait, the end-to-end latency, "
                          "the time per output token): p50, p90, p99 per class with 95%% "
                          "intervals (pooled policies; keeps each waiting request's arrival "
                          "time, so slower)")
    sim.add_argument("--slo", action="append", metavar="METRIC=SECONDS",
                     help="a latency target (repeatable; implies --latency): the share of "
                          "requests that meet it and their rate per GPU (goodput), per class, "
                          "with 95%% intervals; METRIC one of wait, ttft, decode_wait, e2e, "
                          "tpot")
    sim.add_argument("--replay", default=None, metavar="TRACE",
                     help="replay a request trace's arrivals (CSV with arrival times and prompt "
                          "and output lengths) instead of Poisson arrivals: each request joins "
                          "the scenario's class nearest to its lengths, and the classes' rates "
                          "become the trace's, for the plan too (pooled paper policies)")
    sim.add_argument("--replay-speed", type=_number("replay-speed", strict=True), default=1.0,
                     help="with --replay: divide the trace's times by this (2: twice the traffic)")
    sim.add_argument("--replay-poisson", action="store_true",
                     help="with --replay: Poisson arrivals at the replayed classes' rates instead "
                          "of the trace's times (what the trace's burstiness costs is the "
                          "difference)")
    sim.add_argument("--params", default=None, metavar="FILE",
                     help="simulate tuned parameters saved by jaxqueue tune --save (the file "
                          "names the policy family; --policy is then ignored)")
    run_options(sim)
    sim.set_defaults(func=_cmd_simulate)

    cap = command("capacity", "the fewest GPUs, and mixed (prefill) GPUs among them, that serve "
                  "a traffic within latency and abandonment targets, with 95% confidence")
    cap.add_argument("scenario", help="built-in name or path to a TOML file (its arrival rates "
                     "give the mix of classes)")
    cap.add_argument("--traffic", type=_number("traffic", strict=True), default=None,
                     help="requests per second in all, in the scenario's mix (required without "
                          "--replay; with it, the trace's times are scaled to this traffic)")
    cap.add_argument("--replay", default=None, metavar="TRACE",
                     help="replay a request trace's arrivals at every n, as simulate --replay "
                          "does: its classes' mix and, without --traffic, its traffic")
    cap.add_argument("--replay-poisson", action="store_true",
                     help="with --replay: Poisson arrivals at the replayed classes' rates "
                          "instead of the trace's times (the control)")
    cap.add_argument("--slo", action="append", metavar="METRIC[@CLASS]=SECONDS",
                     help="a latency target (repeatable), over all classes or, with @CLASS, "
                          "for the class of that name; METRIC one of wait_p50/p90/p99 (prefill "
                          "wait), ttft_p50/p90/p99, decode_wait_p50/p90/p99, e2e_p50/p90/p99 "
                          "(arrival to end of decode), tpot_p50/p90/p99 (time per output "
                          "token)")
    cap.add_argument("--max-abandon", type=_number("max-abandon", strict=True), default=None,
                     metavar="SHARE", help="the largest share of requests that may abandon")
    cap.add_argument("--policy", default="gate-and-route",
                     help="a pooled policy: gate-and-route, fg-sp or prioritize-and-route")
    cap.add_argument("--max-gpus", type=_positive_int("max-gpus"), default=100_000,
                     help="give up beyond this many GPUs")
    cap.add_argument("--devices", default="all",
                     help="shard replications over 'all' devices or the first N")
    cap.add_argument("--compare", action="store_true",
                     help="also run the other pooled policies on the answer's GPUs (on the "
                          "confirmation's fresh key) and say which meet the targets")
    cap.add_argument("--plot", metavar="FILE",
                     help="draw the cost curve (revenue, each target and abandonment against n) "
                          "into FILE")
    run_options(cap, reps=32, horizon=1000.0, warmup=200.0)
    cap.set_defaults(func=_cmd_capacity)

    cmp = command("compare", "every applicable policy on common random numbers: ranked "
                  "revenue with intervals, paired differences to the best, gaps to each "
                  "pricing's LP bound, abandonment, service levels, and a diagnosis of any "
                  "policy more than 5% below its bound")
    cmp.add_argument("scenario", help="built-in name or path to a TOML file")
    cmp.add_argument("--gpus", type=_positive_int("gpus"), required=True,
                     help="number of GPUs n")
    cmp.add_argument("--policies", default="all", metavar="all|P,...",
                     help="'all' (the paper's policies and jaxqueue's own, see jaxqueue "
                          "policies) or comma-separated policy names")
    cmp.add_argument("--params", nargs="+", action="extend", default=[], metavar="FILE",
                     help="also compare tuned parameters saved by jaxqueue tune --save")
    cmp.add_argument("--pricing", choices=("bundled", "separate"), default="bundled",
                     help="the revenue policies are ranked by (each is also measured under "
                          "its own pricing against its own LP bound)")
    cmp.add_argument("--gpu-reps", type=_positive_int("gpu-reps"), default=None, metavar="R",
                     help="replications of each per-GPU policy, the first R of the pooled "
                          "ones' (by default a quarter of --reps, at least min(reps, 8): a "
                          "per-GPU event costs about 4x a pooled one)")
    cmp.add_argument("--chunk-events", type=_positive_int("chunk-events"), default=None,
                     help="steps per compiled chunk (default: chosen from the replications "
                          "each device runs at once, as for simulate)")
    cmp.add_argument("--devices", default="all",
                     help="shard replications over 'all' devices or the first N")
    cmp.add_argument("--estimate", action="store_true",
                     help="print the run-time estimate and stop")
    cmp.add_argument("--latency", action="store_true",
                     help="also compare the pooled policies' time to first token and waits "
                          "(p50, p90, p99 over all classes, with 95%% intervals; slower)")
    cmp.add_argument("--plot", default=None, metavar="PNG",
                     help="also write a bar chart of the ranked revenues to this file")
    run_options(cmp, reps=64, horizon=800.0, warmup=200.0)
    cmp.set_defaults(func=_cmd_compare)

    sens = command("sensitivity", "derivatives of a policy's simulated revenue per GPU per "
                   "second with respect to every model parameter (95% intervals, common random "
                   "numbers), next to the fluid LP's, and the value of one more and one fewer "
                   "GPU (docs/sensitivity.md)")
    sens.add_argument("scenario", help="built-in name or path to a TOML file")
    sens.add_argument("--gpus", type=_positive_int("gpus"), required=True,
                      help="number of GPUs n (>= 2: n - 1 and n + 1 are simulated too)")
    sens.add_argument("--policy", default="gate-and-route",
                      help="a policy name (see jaxqueue policies)")
    sens.add_argument("--engine", choices=("pooled", "per-gpu"), default=None,
                      help="engine for policies that run on both (default: the policy's first)")
    sens.add_argument("--rel-step", type=_number("rel-step", strict=True), default=0.05,
                      help="relative step h/|value| of the central differences, in (0, 0.5]")
    sens.add_argument("--replan", action="store_true",
                      help="re-solve the LP plan at every perturbed point instead of keeping "
                           "the base model's plan (the policy as deployed)")
    sens.add_argument("--devices", default="all",
                      help="shard replications over 'all' devices or the first N")
    sens.add_argument("--estimate", action="store_true",
                      help="print the memory and run-time estimate and stop")
    run_options(sens, reps=64, horizon=1200.0, warmup=200.0)
    sens.set_defaults(func=_cmd_sensitivity)

    val = command("validate", "check the simulator against exact answers, with a verdict "
                  "(exit code 1 on disagreement)")
    val.add_argument("check", nargs="?", default="all",
                     choices=("all", "erlang-a", "small", "convergence"),
                     help="which check: all, Erlang-A, the small exact chain, or convergence to "
                          "the LP bound")
    val.add_argument("--servers", type=_positive_int("servers"), default=20,
                     help="Erlang-A: servers N")
    val.add_argument("--arrival-rate", type=_number("arrival-rate"), default=20.0,
                     help="Erlang-A: arrivals per second")
    val.add_argument("--service-rate", type=_number("service-rate", strict=True), default=1.0,
                     help="Erlang-A: services per second per server")
    val.add_argument("--patience-rate", type=_number("patience-rate"), default=0.5,
                     help="Erlang-A: abandonment rate per waiting job, per second")
    val.add_argument("--policy", default="gate-and-route",
                     help="policy of the small-system and convergence checks")
    val.add_argument("--scenario", default="paper-qwen8b", help="scenario of the convergence check")
    val.add_argument("--gpus-list", type=_positive_int("gpus"), nargs="+", default=[5, 20, 50],
                     help="n of the convergence check")
    run_options(val, reps=256, horizon=1000.0, warmup=200.0)
    val.set_defaults(func=_cmd_validate)

    conv = command("convergence", "the paper instance at growing n: simulated revenue against "
                   "the LP bound, with a verdict")
    conv.add_argument("scenario", nargs="?", default="paper-qwen8b",
                      help="built-in name or path to a TOML file")
    conv.add_argument("--policy", default="gate-and-route", help="a policy name")
    conv.add_argument("--gpus-list", type=_positive_int("gpus"), nargs="+",
                      default=[5, 20, 50, 200], help="the numbers of GPUs n")
    run_options(conv, reps=64, horizon=1000.0, warmup=300.0)
    conv.set_defaults(func=_cmd_convergence)

    pol = command("policies", "list the policies")
    pol.add_argument("--json", action="store_true", help="print one JSON object")
    pol.set_defaults(func=_cmd_policies)

    sc = command("scenarios", "list the built-in scenarios, or write one as a scenario file, "
                 "changed with --set")
    sc.add_argument("--show", metavar="SCENARIO", default=None,
                    help="print this scenario (a built-in name or a file) as a scenario file")
    sc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --show: change a number (a [gpu] or [pricing] key, a per-class "
                    "key with one value or one per class separated by commas, or name); "
                    "repeatable, e.g. --set gamma=10 --set arrival_rate=0.6,0.4")
    sc.add_argument("--out", metavar="FILE", default=None,
                    help="with --show: write the file here instead of printing it")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    sc.set_defaults(func=_cmd_scenarios)

    rep = command("reproduce", "run the paper's figures and write REPORT.md with a verdict on "
                  "each claim")
    rep.add_argument("--quick", action="store_true", help="small sizes (minutes on a CPU)")
    rep.add_argument("--only", nargs="+", default=None, metavar="NAME",
                     choices=("fig2", "fig4-6", "fig7", "fig8", "fig9-10", "table1",
                              "gap"),
                     help="run only these experiments, of %(choices)s (the report covers "
                          "every complete one)")
    rep.add_argument("--out", default="results", help="results folder (resumes what is there)")
    rep.add_argument("--seed", type=int, default=0, help="random seed of every experiment")
    rep.add_argument("--force", action="store_true", help="rerun experiments already complete")
    rep.add_argument("--set", action="append", metavar="NAME.KEY=VALUE",
                     help="override one size of an experiment (repeatable), e.g. "
                          "fig4-6.horizon=2500; a run with other sizes is another run, not "
                          "resumed from one with the defaults")
    rep.add_argument("--json", action="store_true",
                     help="print the report's path, timings and every claim's verdict as JSON")
    rep.set_defaults(func=_cmd_reproduce)
    from .tune_cli import add_tune_command
    add_tune_command(command, run_options, sli_options, _cmd_tune_entry)
    from .fit_cli import add_fit_commands
    add_fit_commands(command, _emit)

    return p


def _cmd_tune_entry(args) -> int:
    from .tune_cli import run_tune
    return run_tune(args, say=_say, bars=_bars(args), emit=_emit, sli=_sli(args))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``jaxqueue`` command. Exits with 0 on success, 1 when a validation
    disagrees, 2 on bad input, 130 when interrupted (Ctrl-C)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "warmup", None) is not None and getattr(args, "horizon", None) is not None:
        if args.warmup >= args.horizon:
            parser.commands[args.command].error(
                f"warmup = {args.warmup:g}: must be < horizon = {args.horizon:g}")
    with _restored_environment():
        code = _run(args, own_process=argv is None)
    if code:
        sys.exit(code)


def _run(args, own_process: bool = False) -> int:
    if own_process:
        _one_core_for_few_replications(args)
    _use_all_cores()
    _enable_cache()
    from .fluid import FluidError
    from .kernel import SimulationError
    from .model import ModelError

    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        _say("interrupted before any result was ready")
        return INTERRUPTED
    except BrokenPipeError:  # stdout closed early (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ModelError, FluidError, SimulationError, ValueError) as err:
        print(f"jaxqueue: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    main()
