"""The ``jaxqueue`` command line: fluid LPs, simulation, validation.

Human-readable tables by default; ``--json`` prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _enable_cache() -> None:
    """Persistent XLA compilation cache for the CLI (the library itself never sets flags)."""
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


def _emit(obj: dict[str, Any], as_json: bool, human) -> None:
    if as_json:
        json.dump(obj, sys.stdout, indent=2, allow_nan=True)
        sys.stdout.write("\n")
    else:
        human(obj)


def _fmt(entry: dict[str, float], digits: int = 4) -> str:
    return f"{entry['mean']:.{digits}g} ± {entry['ci95']:.2g}"


# ---- lp ---------------------------------------------------------------------------------------
def plan_summary(model, plan) -> dict[str, Any]:
    """The JSON object of ``jaxqueue lp``: plain Python floats, per-class rows by name."""
    if plan.x.shape != (model.num_classes,):
        raise ValueError(f"plan has {plan.x.size} classes but model {model.name!r} has "
                         f"{model.num_classes}")

    rows = zip(model.class_names, plan.x, plan.y_m, plan.y_s, plan.q_p, plan.q_d, strict=True)
    keys = ("x", "y_mixed", "y_solo", "q_prefill", "q_decode")
    return {
        "pricing": plan.pricing, "revenue": float(plan.revenue),
        "mixed_fraction": plan.sum_x, "solo_efficient": bool(plan.solo_efficient),
        "classes": [{"name": name, **{k: float(v) for k, v in zip(keys, values, strict=True)}}
                    for name, *values in rows],
        "sli": {k: float(v) for k, v in plan.sli.items()},
        "duals": {k: float(v) for k, v in plan.duals.items()},
    }


def _cmd_lp(args) -> None:
    from . import fluid, scenarios

    model = scenarios.load(args.scenario)
    plan = fluid.solve(model, args.pricing, sli=_sli(args))
    out = plan_summary(model, plan)

    def human(o):
        print(f"{model.name}: {o['pricing']} fluid LP, revenue per GPU R* = {o['revenue']:.6f}")
        print(f"mixed fraction sum x = {o['mixed_fraction']:.6f}, "
              f"solo efficient (Prop. 3.2) = {o['solo_efficient']}")
        print(f"{'class':>24} {'x':>10} {'y_mixed':>10} {'y_solo':>10} {'q_prefill':>10} "
              f"{'q_decode':>10}")
        for c in o["classes"]:
            print(f"{c['name']:>24} {c['x']:10.5f} {c['y_mixed']:10.5f} {c['y_solo']:10.5f} "
                  f"{c['q_prefill']:10.5f} {c['q_decode']:10.5f}")
        print("SLIs at the optimum: " + ", ".join(f"{k} = {v:.6g}" for k, v in o["sli"].items()))
    _emit(out, args.json, human)


def _cmd_frontier(args) -> None:
    from . import fluid, scenarios

    model = scenarios.load(args.scenario)
    name = args.sli.replace("-", "_")
    rows = fluid.frontier(model, name, args.values)
    out = {"scenario": model.name, "sli": name, "unconstrained_revenue":
           fluid.solve(model, "bundled").revenue, "points": rows}

    def human(o):
        print(f"{o['scenario']}: bundled LP revenue against the {o['sli']} target "
              f"(unconstrained R* = {o['unconstrained_revenue']:.4f})")
        print(f"{'target':>12} {'revenue':>12} {'shadow price':>14}")
        for r in o["points"]:
            print(f"{r['value']:>12.6g} {r['revenue']:>12.4f} {r['shadow_price']:>14.6g}")
    _emit(out, args.json, human)


# ---- simulate ---------------------------------------------------------------------------------
def _cmd_simulate(args) -> None:
    import jax

    from . import policies, scenarios, stats
    from .driver import simulate

    model = scenarios.load(args.scenario)
    system, plan = policies.build(args.policy, model, args.gpus, capacity=args.buffer_capacity,
                                  engine=args.engine, speed_rule=args.speed_rule, sli=_sli(args))
    devices = _devices(args.devices)
    run = simulate(jax.random.key(args.seed), system, reps=args.reps, horizon=args.horizon,
                   warmup=args.warmup, chunk_events=args.chunk_events,
                   progress=not args.json and sys.stderr.isatty(), devices=devices,
                   checkpoint=args.checkpoint)
    summary = stats.summarize_pooled(run, model, args.gpus)
    out = {
        "scenario": model.name,
        "policy": policies.resolve(args.policy).name,
        "engine": policies.engine_of(system),
        "gpus": args.gpus,
        "mixed_gpus": int(system.M),
        "reps": args.reps,
        "horizon": args.horizon,
        "warmup": args.warmup,
        "seed": args.seed,
        "revenue_per_gpu": summary["revenue_per_gpu"],
        "lp_revenue": plan.revenue,
        "lp_pricing": plan.pricing,
        "classes": summary["classes"],
        "events": run.events,
        "wall_seconds": run.wall_seconds,
        "compile_seconds": run.compile_seconds,
        "events_per_second": run.events_per_second,
        "devices": len(devices),
        "interrupted": run.interrupted,
    }

    def human(o):
        if o["interrupted"]:
            print("interrupted: results cover the part simulated")
        print(f"{o['scenario']} / {o['policy']}: n = {o['gpus']} GPUs ({o['mixed_gpus']} mixed), "
              f"{o['reps']} replications, horizon {o['horizon']:g} s (warm-up {o['warmup']:g} s)")
        r = o["revenue_per_gpu"]
        print(f"revenue per GPU: bundled {_fmt(r['bundled'], 6)}, separate "
              f"{_fmt(r['separate'], 6)}; LP bound ({o['lp_pricing']}) {o['lp_revenue']:.4f}")
        keys = ("x", "y_mixed", "y_solo", "q_prefill", "q_decode", "completion_rate",
                "prefill_abandonment_rate", "decode_abandonment_rate")
        print(f"{'class':>16} " + " ".join(f"{k:>22}" for k in keys))
        for c in o["classes"]:
            print(f"{c['name']:>16} " + " ".join(f"{_fmt(c[k]):>22}" for k in keys))
        print(f"{o['events']:,} events in {o['wall_seconds']:.2f} s "
              f"({o['events_per_second']:,.0f} events/s; compile {o['compile_seconds']:.2f} s)")
    _emit(out, args.json, human)


# ---- validate ---------------------------------------------------------------------------------
def _print_checks(title: str, rows: list[tuple[str, dict]]) -> None:
    print(title)
    print(f"{'quantity':>40} {'simulated':>24} {'exact':>12} {'z':>7}  verdict")
    for label, r in rows:
        print(f"{label:>40} {r['mean']:>12.6g} ± {r['ci95']:<9.2g} {r['exact']:>12.6g} "
              f"{r['z']:>7.2f}  {'agree' if r['agree'] else 'DISAGREE'}")


def _cmd_validate(args) -> None:
    from . import validate

    which = args.check
    out: dict[str, Any] = {}
    if which in ("erlang-a", "all"):
        out["erlang_a"] = validate.erlang_a_check(
            args.servers, args.arrival_rate, args.service_rate, args.patience_rate,
            reps=args.reps, horizon=args.horizon, warmup=args.warmup, seed=args.seed,
            devices=_devices("all"))
    if which in ("small", "all"):
        out["small"] = validate.small_system_check(
            args.policy, reps=args.reps, horizon=args.horizon, warmup=args.warmup, seed=args.seed,
            devices=_devices("all"))
    if which in ("convergence", "all"):
        out["convergence"] = validate.convergence_check(
            args.scenario, args.gpus_list, policy=args.policy, reps=min(args.reps, 64),
            horizon=args.horizon, warmup=args.warmup, seed=args.seed, devices=_devices("all"))
    if which == "erlang-a":
        out = out["erlang_a"]

    def human(o):
        ea = o if which == "erlang-a" else o.get("erlang_a")
        if ea:
            s = ea["system"]
            _print_checks(
                f"(a) Erlang-A M/M/{s['servers']}+M, lambda={s['arrival_rate']}, "
                f"mu={s['service_rate']}, theta={s['patience_rate']}",
                [(k, {**ea["simulated"][k], "exact": ea["exact"][k], "z": ea["z"][k],
                      "agree": abs(ea["z"][k]) <= 3}) for k in ea["simulated"]])
            print(f"    verdict: {ea['verdict']}; {ea['events']:,} events, "
                  f"{ea['events_per_second']:,.0f} events/s")
        sm = o.get("small") if which != "erlang-a" else None
        if sm:
            _print_checks(
                f"(b) {sm['policy']} on n={sm['n']} GPUs (M={sm['M']}), exact generator with "
                f"{sm['num_states']} states (truncation mass {sm['truncation_mass']:.1e})",
                [(f"{r['quantity']}[{r['class']}]", r) for r in sm["checks"]])
            print(f"    verdict: {sm['verdict']}")
        cv = o.get("convergence") if which != "erlang-a" else None
        if cv:
            _print_convergence(cv)
    _emit(out, args.json, human)
    verdicts = [v.get("verdict") for v in ([out] if which == "erlang-a" else out.values())]
    if "disagree" in verdicts:
        sys.exit(1)


def _print_convergence(cv: dict[str, Any]) -> None:
    print(f"(c) {cv['scenario']} / {cv['policy']}: per-GPU {cv['pricing']} revenue vs the LP "
          f"bound ({cv['reps']} reps, horizon {cv['horizon']:g} s, warm-up {cv['warmup']:g} s)")
    print(f"{'n':>6} {'M':>5} {'simulated':>22} {'LP R*':>10} {'gap':>9} {'gap %':>7}")
    for r in cv["rows"]:
        print(f"{r['gpus']:>6} {r['mixed_gpus']:>5} {_fmt(r['revenue'], 6):>22} "
              f"{r['lp_revenue']:>10.3f} {r['gap']:>9.3f} {100 * r['relative_gap']:>6.2f}%")


def _cmd_convergence(args) -> None:
    from . import validate

    out = validate.convergence_check(args.scenario, args.gpus_list, policy=args.policy,
                                     reps=args.reps, horizon=args.horizon, warmup=args.warmup,
                                     seed=args.seed, devices=_devices("all"))
    _emit(out, args.json, _print_convergence)


def _cmd_policies(args) -> None:
    from . import policies

    out = {p.name: {"aliases": list(p.aliases), "pricing": p.pricing, "engines": list(p.engines),
                    "description": p.description} for p in policies.POLICIES.values()}

    def human(o):
        for name, p in o.items():
            alias = f" (alias {', '.join(p['aliases'])})" if p["aliases"] else ""
            print(f"{name}{alias} [{', '.join(p['engines'])}]: {p['description']}")
    _emit(out, args.json, human)


def _cmd_scenarios(args) -> None:
    from . import scenarios

    out = {name: scenarios.load(name).to_dict() for name in scenarios.names()}

    def human(o):
        for name, d in o.items():
            print(f"{name}: {len(d['classes'])} classes, B={d['gpu']['batch']}, "
                  f"C={d['gpu']['chunk']:g}, alpha={d['gpu']['alpha']}, beta={d['gpu']['beta']}, "
                  f"gamma={d['gpu']['gamma']:.4g}")
    _emit(out, args.json, human)


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
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxqueue", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def sli_options(q):
        q.add_argument("--prefill-fairness", type=_number("prefill-fairness"), default=None,
                       metavar="ETA1", help="max_ij (x_i - x_j) <= ETA1 (MODEL.md Sec. 6)")
        q.add_argument("--decode-fairness", type=_number("decode-fairness"), default=None,
                       metavar="ETA2", help="max_ij (y_s,i - y_s,j) <= ETA2")
        q.add_argument("--tpot", type=_number("tpot", strict=True), default=None, metavar="ETA3",
                       help="average time per output token <= ETA3 seconds")
        q.add_argument("--penalty", action="store_true",
                       help="penalize SLI violations linearly instead of imposing them")
        q.add_argument("--penalty-weight", type=_number("penalty-weight"), default=1.0)

    lp = sub.add_parser("lp", help="solve the fluid LP of a scenario")
    lp.add_argument("scenario", help="built-in name or path to a scenario TOML file")
    lp.add_argument("--pricing", choices=("bundled", "separate"), default="bundled")
    sli_options(lp)
    lp.add_argument("--json", action="store_true")
    lp.set_defaults(func=_cmd_lp)

    fr = sub.add_parser("frontier", help="LP revenue and shadow price along one SLI target")
    fr.add_argument("scenario")
    fr.add_argument("--sli", required=True, choices=("prefill-fairness", "decode-fairness", "tpot"))
    fr.add_argument("--values", required=True, nargs="+", type=_number("values"))
    fr.add_argument("--json", action="store_true")
    fr.set_defaults(func=_cmd_frontier)

    def run_options(q, reps=256, horizon=2000.0, warmup=500.0):
        q.add_argument("--reps", type=_positive_int("reps"), default=reps)
        q.add_argument("--horizon", type=_number("horizon", strict=True), default=horizon,
                       help="simulated time, model seconds")
        q.add_argument("--warmup", type=_number("warmup"), default=warmup,
                       help="discarded initial time, model seconds")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", action="store_true")

    sim = sub.add_parser("simulate", help="simulate a policy, many replications at once")
    sim.add_argument("scenario")
    sim.add_argument("--policy", default="gate-and-route",
                     help="a policy name (see `jaxqueue policies`)")
    sim.add_argument("--engine", choices=("pooled", "per-gpu"), default=None,
                     help="engine for policies that run on both (default: the policy's first)")
    sim.add_argument("--speed-rule", choices=("paper", "idle-solo"), default="paper",
                     help="per-GPU engine: decode speed of a mixed GPU whose prefill slot idles")
    sim.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="save progress to PATH (.npz) every minute and on Ctrl-C; rerunning "
                          "the same command resumes from it")
    sli_options(sim)
    sim.add_argument("--gpus", type=_positive_int("gpus"), default=50)
    sim.add_argument("--buffer-capacity", type=_positive_int("buffer-capacity"), default=None,
                     help="slots of each FCFS buffer (default: a power of two >= 2n, "
                          "at least 256)")
    sim.add_argument("--chunk-events", type=_positive_int("chunk-events"), default=1024)
    sim.add_argument("--devices", default="all",
                     help="shard replications over 'all' devices or the first N (default all; "
                          "on a CPU, one device per core)")
    run_options(sim)
    sim.set_defaults(func=_cmd_simulate)

    val = sub.add_parser("validate", help="check the simulator against exact answers")
    val.add_argument("check", nargs="?", default="all",
                     choices=("all", "erlang-a", "small", "convergence"))
    val.add_argument("--servers", type=_positive_int("servers"), default=20)
    val.add_argument("--arrival-rate", type=_number("arrival-rate"), default=20.0)
    val.add_argument("--service-rate", type=_number("service-rate", strict=True), default=1.0)
    val.add_argument("--patience-rate", type=_number("patience-rate"), default=0.5)
    val.add_argument("--policy", default="gate-and-route")
    val.add_argument("--scenario", default="paper-qwen8b")
    val.add_argument("--gpus-list", type=_positive_int("gpus"), nargs="+", default=[5, 20, 50])
    run_options(val, reps=256, horizon=1000.0, warmup=200.0)
    val.set_defaults(func=_cmd_validate)

    conv = sub.add_parser("convergence",
                          help="the paper instance at growing n: simulated revenue vs LP bound")
    conv.add_argument("scenario", nargs="?", default="paper-qwen8b")
    conv.add_argument("--policy", default="gate-and-route")
    conv.add_argument("--gpus-list", type=_positive_int("gpus"), nargs="+",
                      default=[5, 20, 50, 200])
    run_options(conv, reps=64, horizon=1000.0, warmup=300.0)
    conv.set_defaults(func=_cmd_convergence)

    pol = sub.add_parser("policies", help="list the policies")
    pol.add_argument("--json", action="store_true")
    pol.set_defaults(func=_cmd_policies)

    sc = sub.add_parser("scenarios", help="list the built-in scenarios")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=_cmd_scenarios)

    rep = sub.add_parser("reproduce", help="run the paper's figures and write REPORT.md with a "
                                           "verdict on each claim")
    rep.add_argument("--quick", action="store_true", help="small sizes (minutes on a CPU)")
    rep.add_argument("--only", nargs="+", default=None, metavar="NAME",
                     choices=("fig2", "fig4-6", "fig7", "fig8", "fig9-10", "table1"),
                     help="run only these experiments (the report covers every complete one)")
    rep.add_argument("--out", default="results", help="results folder (resumes what is there)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--force", action="store_true", help="rerun experiments already complete")
    rep.set_defaults(func=_cmd_reproduce)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``jaxqueue`` command."""
    args = _parser().parse_args(argv)
    if getattr(args, "warmup", None) is not None and getattr(args, "horizon", None) is not None:
        if args.warmup >= args.horizon:
            _parser().error(f"warmup = {args.warmup:g}: must be < horizon = {args.horizon:g}")
    _use_all_cores()
    _enable_cache()
    from .fluid import FluidError
    from .kernel import SimulationError
    from .model import ModelError

    try:
        args.func(args)
    except (ModelError, FluidError, SimulationError, ValueError) as err:
        print(f"jaxqueue: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
