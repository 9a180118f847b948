"""The jaxqueue command line: fluid LPs, simulation, validation.

Human-readable tables by default (``jaxqueue.report``); --json prints one JSON object on stdout.
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
from typing import Any

__all__ = ["main"]

#: Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Runs estimated to take longer than this (seconds) print their estimate first.
ANNOUNCE_AFTER = 10.0
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


def _devices(spec: str):
    """``all`` or a count N: the first N devices of the default backend."""
    import jax

    available = jax.devices()
    if spec == "all":
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


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} = {text!r}: must be an integer >= 1") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} = {value}: must be an integer >= 1")
        return value
    return parse


def _number(name: str, low: float = 0.0, strict: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} = {text!r}: must be a number") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"{name} = {text}: must be finite and {'>' if strict else '>='} {low:g}")
        return value
    return parse


def _say(message: str) -> None:
    """One notice on stderr."""
    print(f"jaxqueue: {message}", file=sys.stderr, flush=True)


def _bars(args) -> bool:
    """Whether to show progress bars: on a terminal, without --json."""
    return not args.json and sys.stderr.isatty()


def _progress(args, label: str, announced: bool = False):
    """A progress bar label when stderr is a terminal and the output is not JSON; otherwise, for
    a run whose estimate was announced, one line when the first chunk is done (the run is
    compiled and going), else nothing."""
    if _bars(args):
        return label
    if not announced:
        return False
    started = []

    def once(fraction: float) -> None:
        if not started:
            started.append(fraction)
            _say("compiled; simulating (no progress bar: stderr is not a terminal or --json)")
    return once


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
    if policy.router == "sli":
        if sli is None:
            return (f"the bundled LP without SLI targets (none given), R* = {plan.revenue:.4f}: "
                    "the plan of gate-and-route; only the router differs")
        kind = "penalties" if sli.penalty else "hard targets"
        targets = ", ".join(f"{k} <= {v:g}{' s' if k == 'tpot' else ''}"
                            for k, v in sli.targets.items())
        return f"SLI-aware LP with {targets} ({kind}), revenue {plan.revenue:.4f}"
    return f"the {plan.pricing} LP (R* = {plan.revenue:.4f})"


def _announce(est, devices, args) -> None:
    from .budget import human_bytes, human_seconds

    seconds = est.seconds
    if seconds is None or (seconds < ANNOUNCE_AFTER and not args.estimate):
        return False
    _say(f"estimated run time {human_seconds(seconds)} (at most {est.events:.3g} events at an "
         f"assumed {est.events_per_second:.3g} events/s on {len(devices)} device"
         f"{'s' if len(devices) != 1 else ''}, compilation excluded); memory "
         f"{human_bytes(est.device_bytes_per_rep)} per replication. Ctrl-C stops the run and "
         "reports what was simulated")
    return True


def _cmd_simulate(args) -> int:
    import jax
    import numpy as np

    from . import budget, fluid, policies, scenarios, stats
    from .driver import GROWTH, BufferOverflowError, simulate
    from .tables import simulate_lines

    model = scenarios.load(args.scenario)
    if args.params is not None:
        return _simulate_tuned(args, model)
    policy = policies.resolve(args.policy)
    sli = _sli(args)
    if sli is not None and policy.router != "sli":
        raise ValueError(f"--prefill-fairness, --decode-fairness and --tpot plan from the "
                         f"SLI-aware LP, which only sli-gate-and-route follows: policy "
                         f"{policy.name!r} would take that plan without its router; use "
                         "--policy sli-gate-and-route")
    system, plan = policies.build(policy.name, model, args.gpus, capacity=args.buffer_capacity,
                                  engine=args.engine, speed_rule=args.speed_rule, sli=sli)
    devices = _devices(args.devices)
    est = budget.estimate(system, reps=args.reps, horizon=args.horizon,
                          chunk_events=args.chunk_events, devices=devices)
    budget.check_fits(system, est, args.reps)
    announced = _announce(est, devices, args)
    if args.estimate:
        return 0
    try:
        run = simulate(jax.random.key(args.seed), system, reps=args.reps, horizon=args.horizon,
                       warmup=args.warmup, chunk_events=args.chunk_events,
                       progress=_progress(args, f"n = {args.gpus}", announced),
                       devices=devices,
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
    planned = getattr(system, "layout", "planned") == "planned"
    out: dict[str, Any] = {
        "scenario": model.name, "policy": policy.name, "engine": policies.engine_of(system),
        "gpus": args.gpus, "mixed_gpus": int(system.M) if planned else None,
        "static_planning": planned, "coupled": bool(getattr(system, "coupled", False)),
        "reps": args.reps, "horizon": args.horizon, "warmup": args.warmup, "seed": args.seed,
        "plan": _plan_text(policy, sli, plan), "lp_revenue": plan.revenue,
        "lp_pricing": plan.pricing,
        "unconstrained_lp_revenue": (fluid.solve(model, "bundled").revenue
                                     if sli is not None else None),
        "interrupted": run.interrupted,
        "time_reached": {"min": float(run.time.min()), "mean": float(run.time.mean()),
                         "max": float(run.time.max())},
        "replications_with_statistics": int(np.sum(run.collected)),
        "buffer_capacity": run.buffer_capacity, "buffers_regrown": run.regrown,
        "resumed": run.resumed,
        "events": run.events, "wall_seconds": run.wall_seconds,
        "compile_seconds": run.compile_seconds, "events_per_second": run.events_per_second,
        "devices": len(devices),
    }
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
    else:
        out.update(revenue_per_gpu=None, sli=None, classes=None)
    _emit(out, args.json, lambda o: simulate_lines(o, details=args.details))
    if run.interrupted:
        _say("interrupted: the results above cover the part simulated"
             + (f"; rerun the same command to resume from {args.checkpoint}"
                if args.checkpoint else ""))
        return INTERRUPTED
    return 0


def _simulate_tuned(args, model) -> int:
    """``simulate --params FILE``: a tuned member of a policy family, on fresh seeds."""
    import jax

    from . import fluid, stats
    from .policies import tunable

    family, params, meta = tunable.load_params(args.params, model)
    sli = meta.get("sli")  # tuned under SLI targets: the same SLI-aware plan
    if sli:
        try:
            sli = fluid.SLI(**sli["targets"], penalty=bool(sli.get("penalty")),
                            weights=sli.get("weights", {}))
        except (TypeError, KeyError, AttributeError):
            raise ValueError(f"params file {args.params}: key 'sli' must hold 'targets' (SLI "
                             "name -> target), 'penalty' and 'weights', as jaxqueue tune writes "
                             "it") from None
    plan = fluid.solve(model, "bundled", sli=sli or None)
    system, params = tunable.build_family(family, model, args.gpus, plan=plan, params=params,
                                          capacity=args.buffer_capacity)
    run = jq_simulate(jax.random.key(args.seed), system, reps=args.reps, horizon=args.horizon,
                      warmup=args.warmup, chunk_events=args.chunk_events,
                      progress=_progress(args, f"tuned {family}, n = {args.gpus}"),
                      devices=_devices(args.devices))
    summary = stats.summarize_pooled(run, model, args.gpus)
    out = {"scenario": model.name, "family": family, "params_file": str(args.params),
           "params": {k: v for k, v in meta["params"].items()},
           "tuned_for": {k: meta.get(k) for k in ("scenario", "gpus")},
           "gpus": args.gpus, "reps": args.reps, "horizon": args.horizon, "warmup": args.warmup,
           "seed": args.seed, "lp_revenue": plan.revenue,
           "revenue_per_gpu": summary["revenue_per_gpu"], "classes": summary["classes"],
           "interrupted": run.interrupted, "events": run.events,
           "wall_seconds": run.wall_seconds}

    def lines(o):
        r = o["revenue_per_gpu"]
        yield (f"{o['scenario']} / tuned {o['family']} ({o['params_file']}): n = {o['gpus']} "
               f"GPUs, {o['reps']} replications, horizon {o['horizon']:g} s "
               f"(warm-up {o['warmup']:g} s), seed {o['seed']}")
        yield ("revenue per GPU per second: bundled "
               f"{r['bundled']['mean']:.4f} ± {r['bundled']['ci95']:.2g}, separate "
               f"{r['separate']['mean']:.4f} ± {r['separate']['ci95']:.2g} (LP bound, bundled: "
               f"{o['lp_revenue']:.4f})")
        yield "parameters: " + ", ".join(f"{k} = {v}" for k, v in o["params"].items())
    _emit(out, args.json, lines)
    return INTERRUPTED if run.interrupted else 0


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
                    "description": p.description} for p in policies.POLICIES.values()}

    def lines(o):
        return [f"{name}{' (alias ' + ', '.join(p['aliases']) + ')' if p['aliases'] else ''} "
                f"[{', '.join(p['engines'])}]: {p['description']}" for name, p in o.items()]
    _emit(out, args.json, lines)


def _cmd_scenarios(args) -> None:
    from . import scenarios

    out = {name: scenarios.load(name).to_dict() for name in scenarios.names()}

    def lines(o):
        return [f"{name}: {len(d['classes'])} classes, B={d['gpu']['batch']}, "
                f"C={d['gpu']['chunk']:g}, alpha={d['gpu']['alpha']}, beta={d['gpu']['beta']}, "
                f"gamma={d['gpu']['gamma']:.4g}" for name, d in o.items()]
    _emit(out, args.json, lines)


def _cmd_reproduce(args) -> None:
    """Runs the repository's experiments/ (the paper's figures) and writes REPORT.md. They live
    in the source tree, next to this package, not in the installed package (they import
    matplotlib); JAXQUEUE_EXPERIMENTS may point at another checkout's experiments/ folder."""
    import importlib
    from pathlib import Path

    folder = Path(os.environ.get("JAXQUEUE_EXPERIMENTS")
                  or Path(__file__).resolve().parent.parent / "experiments")
    if not (folder / "reproduce.py").is_file():
        raise ValueError(f"experiments folder {folder} not found: `jaxqueue reproduce` runs the "
                         "repository's experiments/, so install from a clone (pip install -e .) "
                         "or set JAXQUEUE_EXPERIMENTS=/path/to/jaxqueue/experiments")
    sys.path.insert(0, str(folder.resolve().parent))
    runner = importlib.import_module("experiments.reproduce")
    out = runner.main(out=args.out, quick=args.quick, only=args.only, seed=args.seed,
                      force=args.force)
    print(f"{out['report']}")
    for c in out["claims"]:
        print(f"{c.verdict:>15}  {c.figure:<16} {c.statement}")


# ---- parser -----------------------------------------------------------------------------------
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, and strips reStructuredText double back-quotes."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        return text.replace("``", "") if text else text

    def _format_text(self, text):
        return super()._format_text(text.replace("``", ""))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxqueue", description=__doc__.replace("``", ""),
                                formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, summary, **kw):
        return sub.add_parser(name, help=summary, description=summary, formatter_class=_Help,
                              **kw)

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
    sim.add_argument("--chunk-events", type=_positive_int("chunk-events"), default=1024,
                     help="events per compiled scan chunk")
    sim.add_argument("--devices", default="all",
                     help="shard replications over 'all' devices or the first N (on a CPU, one "
                          "device per core)")
    sim.add_argument("--details", action="store_true",
                     help="also print each class's occupancies and rates next to the LP plan")
    sim.add_argument("--estimate", action="store_true",
                     help="print the memory and run-time estimate and stop")
    sim.add_argument("--params", default=None, metavar="FILE",
                     help="simulate tuned parameters saved by jaxqueue tune --save (the file "
                          "names the policy family; --policy is then ignored)")
    run_options(sim)
    sim.set_defaults(func=_cmd_simulate)

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

    sc = command("scenarios", "list the built-in scenarios")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    sc.set_defaults(func=_cmd_scenarios)

    rep = command("reproduce", "run the paper's figures and write REPORT.md with a verdict on "
                  "each claim")
    rep.add_argument("--quick", action="store_true", help="small sizes (minutes on a CPU)")
    rep.add_argument("--only", nargs="+", default=None, metavar="NAME",
                     choices=("fig2", "fig4-6", "fig7", "fig8", "fig9-10", "table1"),
                     help="run only these experiments (the report covers every complete one)")
    rep.add_argument("--out", default="results", help="results folder (resumes what is there)")
    rep.add_argument("--seed", type=int, default=0, help="random seed of every experiment")
    rep.add_argument("--force", action="store_true", help="rerun experiments already complete")
    rep.set_defaults(func=_cmd_reproduce)
    from .tune_cli import add_tune_command
    add_tune_command(command, run_options, sli_options, _cmd_tune_entry)

    return p


def _cmd_tune_entry(args) -> int:
    from .tune_cli import run_tune
    return run_tune(args, say=_say, bars=_bars(args), emit=_emit)


def jq_simulate(*args, **kwargs):
    from .driver import simulate
    return simulate(*args, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``jaxqueue`` command. Exits with 0 on success, 1 when a validation
    disagrees, 2 on bad input, 130 when interrupted (Ctrl-C)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "warmup", None) is not None and getattr(args, "horizon", None) is not None:
        if args.warmup >= args.horizon:
            parser.error(f"warmup = {args.warmup:g}: must be < horizon = {args.horizon:g}")
    with _restored_environment():
        code = _run(args)
    if code:
        sys.exit(code)


def _run(args) -> int:
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
