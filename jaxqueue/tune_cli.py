"""``jaxqueue tune``: tune a policy family's parameters, compare with baselines, save them."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

__all__ = ["add_tune_command", "run_tune"]

PAPER_POLICIES = (("fi-wsp", "per-gpu"), ("gi-wsp", "per-gpu"), ("gf-wsp", "per-gpu"),
                  ("fg-sp", "pooled"), ("gate-and-route", "pooled"))


def add_tune_command(command, run_options, sli_options, handler) -> None:
    from .policies.tunable import FAMILIES
    from .tune import ESTIMATORS

    tu = command("tune", "tune a policy family's parameters from the LP plan, against baselines")
    tu.add_argument("scenario", help="built-in name or path to a TOML file")
    tu.add_argument("--gpus", type=int, required=True, help="number of GPUs n")
    tu.add_argument("--family", default="auto", choices=("auto", *FAMILIES),
                    help="policy family; auto evaluates every family's starting points (its LP "
                         "point and, with a gate, the LP point ranking classes after admission) "
                         "and tunes from the best (" + "; ".join(f"{k}: {v[1]} [{v[0]}]" for k, v in
                                                FAMILIES.items()) + ")")
    tu.add_argument("--estimator", default="auto", choices=("auto", *ESTIMATORS),
                    help="gradient estimator (auto: fd, common-random-number central "
                         "differences on the exact simulator in natural steps, the most accurate "
                         "for its events on every case measured; score: per-decision likelihood "
                         "ratios, one run per estimate whatever the number of parameters, for a "
                         "family smoothed by --temperature; pathwise is biased; see "
                         "docs/gradients.md)")
    tu.add_argument("--temperature", type=float, default=None, metavar="T",
                    help="smooth the gated and sli-gated families: the gate draws classes with "
                         "probabilities softmax(-xi / T) and the share, slack and caps are "
                         "rounded with a triangular dither, so the expected objective is "
                         "differentiable in every parameter (needed by --estimator score); the "
                         "tuned point is also reported for the deterministic policy")
    tu.add_argument("--only", default=None, metavar="NAMES",
                    help="comma-separated parameters to tune, the others staying at the LP point "
                         "(gated: targets, offset, share, slack, caps; coupled families: targets, "
                         "offset, cap; sli-gated: targets, split); default all")
    tu.add_argument("--discount", type=float, default=None, metavar="W",
                    help="the score estimator's credit window in seconds (default: three times "
                         "the longest mean time a job spends in one stage)")
    tu.add_argument("--start", choices=("best", "lp"), default="best",
                    help="best: tune from the best starting point; lp: from the family's LP "
                         "point (the paper's policy)")
    tu.add_argument("--steps", type=int, default=30, help="optimizer steps")
    tu.add_argument("--rule", choices=("auto", "adam", "gated", "rprop"), default="auto",
                    help="how an estimate becomes a step: auto (rprop for the score estimator, "
                         "adam otherwise: what gained most in the tuning benchmark), "
                         "adam (Adam in natural steps), "
                         "gated (each parameter moves --learning-rate natural steps in its "
                         "estimate's direction, nothing while the estimate is within two "
                         "standard errors of 0: for noisy estimates, few replications per step), "
                         "or rprop (as gated, but each parameter's step starts at "
                         "--learning-rate, grows 1.2x while its direction holds and halves when "
                         "it turns, between 1/16 and 8 natural steps)")
    tu.add_argument("--fluid-steps", type=int, default=0, metavar="K",
                    help="gated family: first K Adam steps on the deterministic fluid surrogate "
                         "(exact gradients, about a second each on a 2-core CPU; blind to finite-n "
                         "fluctuations beyond a smoothing at scale 1/sqrt(n)), then the "
                         "estimator's steps from there")
    tu.add_argument("--learning-rate", type=float, default=0.3,
                    help="the step size in natural steps (one natural step moves about 1.5 "
                         "jobs or GPUs: 1.5/n in share, slack and caps, 1.5 planned prefills in a "
                         "target, 0.25 in the offset, 0.05 in a split)")
    tu.add_argument("--step-scale", type=float, default=None, metavar="S",
                    help="fd and spsa (the SPSA baseline too): perturb by S difference steps "
                         "(default 1). Where the expected objective bends within one step, "
                         "as the smoothed families' does at n = 100, 0.5 trades bias for noise "
                         "better (docs/gradients.md)")
    tu.add_argument("--gate-steps", action="store_true",
                    help="fd and spsa on a smoothed family (needs --temperature): cap the gate "
                         "targets' and offset's difference steps so that one moves a class's "
                         "gate logit by a bounded amount at the temperature (the SPSA baseline "
                         "keeps the natural steps)")
    tu.add_argument("--confirm", type=int, default=0, metavar="K",
                    help="return the best point the steps reached only if it beats the start "
                         "by 2 paired standard errors on a fresh key of K times --eval-reps "
                         "replications, else the start (default 0: the best of the tuner's "
                         "evaluations, which on a flat objective can be a lucky worse point)")
    tu.add_argument("--returned", choices=("best", "average"), default="best",
                    help="the point returned: the best of the tuner's evaluations (default) or "
                         "the mean of the iterates of its last half of the steps, evaluated but "
                         "not chosen by that evaluation (no choice among noisy evaluations; "
                         "not with --confirm). For the rprop and gated rules: Adam's steps "
                         "random-walk on noise, and their mean with them (docs/gradients.md). "
                         "The SPSA baseline keeps the best evaluation")
    tu.add_argument("--pricing", choices=("bundled", "separate"), default="bundled",
                    help="the revenue tuned for")
    tu.add_argument("--eval-every", type=int, default=5,
                    help="evaluate on the exact simulator every K steps (one key for all: "
                         "common random numbers)")
    tu.add_argument("--eval-reps", type=int, default=32,
                    help="replications of each exact evaluation")
    tu.add_argument("--save", default=None, metavar="FILE",
                    help="write the tuned parameters (JSON) for jaxqueue simulate --params")
    tu.add_argument("--plot", default=None, metavar="PNG",
                    help="write the training curve to this file")
    tu.add_argument("--no-baselines", action="store_true",
                    help="skip the baselines (grid over M, SPSA, the paper's five policies)")
    sli_options(tu)
    tu.epilog = ("SLI targets (--prefill-fairness, --decode-fairness, --tpot) enter the tuned "
                 "objective as penalties: revenue minus W * max(0, indicator - target) per SLI, "
                 "W = --penalty-weight, measured on every replication; the starting plan is the "
                 "SLI-aware LP (soft with --penalty). The revenue, the objective and the achieved "
                 "SLIs are all reported.")
    run_options(tu, reps=16, horizon=600.0, warmup=150.0)
    tu.set_defaults(func=handler)


def _pack(values) -> dict[str, float]:
    from .stats import mean_ci

    mean, ci = mean_ci(values)
    return {"mean": float(mean), "ci95": float(ci)}


def _pack_measured(d: dict, sli) -> dict[str, Any]:
    """``{mean, ci95}`` of the objective; with SLI targets also the revenue and the achieved
    SLIs (means) beside it."""
    import numpy as np

    out = _pack(d["objective"])
    if sli is not None:
        out["revenue"] = _pack(d["revenue"])
        out["sli"] = {k: float(np.nanmean(v)) for k, v in d.items()
                      if k not in ("objective", "revenue", "events", "capacity")}
    return out


def run_tune(args, *, say, bars: bool, emit, sli=None) -> int:
    """The ``tune`` command: ``sli`` holds the SLI targets of the command line (the caller
    parses them, so this module does not import the CLI's)."""
    from . import scenarios

    if args.gpus < 1:
        raise ValueError(f"gpus = {args.gpus}: must be an integer >= 1")

    only = None if args.only is None else [k.strip() for k in args.only.split(",") if k.strip()]
    out, history, family, best_params = compare(
        scenarios.load(args.scenario), args.gpus, family=args.family, estimator=args.estimator,
        steps=args.steps, learning_rate=args.learning_rate, pricing=args.pricing,
        eval_every=args.eval_every, eval_reps=args.eval_reps, reps=args.reps,
        horizon=args.horizon, warmup=args.warmup, seed=args.seed, only=only,
        baselines=not args.no_baselines, say=say, bars=bars, start=args.start, sli=sli,
        fluid_steps=args.fluid_steps, temperature=args.temperature, discount=args.discount,
        rule=args.rule, step_scale=args.step_scale, gate_steps=args.gate_steps,
        confirm=args.confirm, returned=args.returned)
    if args.save:
        from .policies import tunable

        tunable.save_params(args.save, family, best_params, scenario=out["scenario"],
                            gpus=args.gpus, revenue=out["tuned"]["revenue"],
                            pricing=args.pricing, sli=out["sli"],
                            temperature=out["temperature"] if family in ("gated", "sli-gated")
                            else None)
        say(f"tuned parameters written to {args.save} (jaxqueue simulate {args.scenario} "
            f"--gpus {args.gpus} --params {args.save})")
    if args.plot:
        _plot(args.plot, out, history)
        out["plot"] = args.plot
        say(f"training curve written to {args.plot}")
    emit(out, args.json, _lines)
    return 0


def compare(model, n: int, *, family: str = "auto", estimator: str = "auto", steps: int = 30,
            learning_rate: float = 0.3, pricing: str = "bundled", eval_every: int = 5,
            eval_reps: int = 32, reps: int = 16, horizon: float = 600.0, warmup: float = 150.0,
            seed: int = 0, only=None, baselines: bool = True, say=lambda line: None,
            bars: bool = False, start: str = "best", sli=None, fluid_steps: int = 0,
            temperature: float | None = None, discount: float | None = None,
            rule: str = "auto", step_scale: float | None = None, gate_steps: bool = False,
            confirm: int = 0, returned: str = "best"):
    """Tunes on ``n`` GPUs of ``model`` and compares, as ``jaxqueue tune`` does. ``sli``
    (:class:`jaxqueue.fluid.SLI`) subtracts SLI penalties from the objective and plans from the
    SLI-aware LP; ``temperature`` smooths the ``gated`` and ``sli-gated`` families.

    Returns the command's JSON object, the tuning history, the family tuned and its best
    parameters.
    """
    import jax
    import numpy as np

    from . import fluid, policies
    from .driver import simulate
    from .policies import tunable
    from .tune import ESTIMATORS, RULES, Problem, evaluate, measure, tune

    if family != "auto" and family not in tunable.FAMILIES:
        raise ValueError(f"family = {family!r} is unknown: must be auto or one of "
                         f"{list(tunable.FAMILIES)}")
    if estimator != "auto" and estimator not in ESTIMATORS:
        raise ValueError(f"estimator = {estimator!r} is unknown: must be auto or one of "
                         f"{list(ESTIMATORS)}")
    if estimator == "auto":
        # Central differences: in the gradient benchmark (docs/gradients.md) the most accurate
        # estimator for its events on every case, smoothed families and 19 parameters included.
        estimator = "fd"
    for name, value in (("steps", steps), ("eval_every", eval_every), ("eval_reps", eval_reps),
                        ("reps", reps)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name.replace('_', '-')} = {value}: must be an integer >= 1")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning-rate = {learning_rate}: must be finite and > 0")
    if start not in ("best", "lp"):
        raise ValueError(f"start = {start!r} is invalid: must be 'best' or 'lp'")
    if rule != "auto" and rule not in RULES:
        raise ValueError(f"rule = {rule!r} is invalid: must be auto or one of {list(RULES)}")
    if rule == "auto":
        # Adam normalises each coordinate, so a score estimate's noisy gate entries move every
        # parameter a full step at random: measured on dolly-tpot-100 it returned its start,
        # where the gated rule gained in every seed. The rprop rule, whose steps shrink where
        # the direction turns, gained more than the gated rule in every one of five seeds, both
        # before and after the family's LP point there became the paper's policy (0.69-0.80
        # against -0.06-0.71 after); Adam was not rerun after. On fd estimates Adam gained most.
        rule = "rprop" if estimator == "score" else "adam"
    if discount is not None:
        if not (math.isfinite(discount) and discount > 0):
            raise ValueError(f"discount = {discount}: must be finite and > 0 (seconds)")
        if estimator != "score":
            raise ValueError(f"discount is the score estimator's credit window: give "
                             f"--estimator score, or no --discount with {estimator!r}")
    if isinstance(fluid_steps, bool) or int(fluid_steps) != fluid_steps or fluid_steps < 0:
        raise ValueError(f"fluid-steps = {fluid_steps}: must be an integer >= 0")
    if fluid_steps and family not in ("auto", "gated"):
        raise ValueError(f"fluid-steps needs --family gated (the surrogate models it), not "
                         f"{family!r}")
    if temperature is not None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature = {temperature}: must be finite and > 0")
        if family not in ("auto", "gated", "sli-gated"):
            raise ValueError(f"temperature smooths the gated and sli-gated families, not "
                             f"{family!r}")
    if step_scale is not None:
        if not (math.isfinite(step_scale) and step_scale > 0):
            raise ValueError(f"step-scale = {step_scale}: must be finite and > 0")
        if estimator not in ("fd", "spsa"):
            raise ValueError(f"step-scale is for --estimator fd or spsa (perturbations), not "
                             f"{estimator!r}")
    if gate_steps:
        if temperature is None:
            raise ValueError("gate-steps needs --temperature: the steps follow the smoothed "
                             "gate's logits")
        if estimator not in ("fd", "spsa"):
            raise ValueError(f"gate-steps is for --estimator fd or spsa (perturbations), not "
                             f"{estimator!r}")
    step_scale = 1.0 if step_scale is None else float(step_scale)
    began = time.perf_counter()
    plan = fluid.solve(model, "bundled", sli=sli)
    key = jax.random.key(seed)
    eval_key = jax.random.fold_in(key, 7)  # the same key for every comparison (CRN)

    def problem(f):
        smooth = temperature if f in ("gated", "sli-gated") else None
        return Problem(family=f, model=model, n=n, plan=plan, pricing=pricing,
                       horizon=horizon, warmup=warmup, reps=reps, sli=sli,
                       gate_temperature=smooth)

    if family != "auto":
        families = [family]
    elif fluid_steps:
        families = ["gated"]
    elif temperature is not None or estimator in ("score", "pathwise"):
        families = ["gated", "sli-gated"]  # the families these estimators can differentiate
    else:
        families = list(tunable.FAMILIES)
    say(f"evaluating the starting points ({eval_reps} replications each)")
    starts, points = {}, {}
    for f in families:
        p = problem(f)
        candidates = tunable.starting_points(f, model, n, plan)
        if start == "lp":
            candidates = {"LP point": candidates["LP point"]}
        for label, params in candidates.items():
            starts[f"{f}: {label}"] = _pack(evaluate(p, params, eval_key, eval_reps))
            points[f"{f}: {label}"] = (f, params)
    chosen = max(starts, key=lambda k: starts[k]["mean"])
    family, start_params = points[chosen]
    say("starting points: " + ", ".join(f"{k} {v['mean']:.2f}" for k, v in starts.items())
        + f"; tuning from {chosen}")
    prob = problem(family)
    bar = None
    if bars:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=f"tuning {family} ({estimator})", file=sys.stderr,
                   unit="step")

    def progress(step, info):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best=f"{info['best']:.2f}", refresh=False)
    options = {"discount": discount} if discount is not None else {}
    if gate_steps:
        options["gate_steps"] = True
    result = tune(prob, steps=steps, estimator=estimator,
                  learning_rate=learning_rate, eval_every=eval_every,
                  eval_reps=eval_reps, seed=seed, only=only, initial=start_params,
                  fluid_steps=fluid_steps, options=options, progress=progress, rule=rule,
                  step_scale=step_scale, confirm=confirm, returned=returned)
    if bar is not None:
        bar.close()
    # Report the best point and the LP point on one more fresh key (no winner's curse).
    final_key = jax.random.fold_in(key, 11)
    best_params = _params(tunable, family, result.best["params"])
    objectives = {}

    def assessed(params, name):
        d = evaluate(prob, params, final_key, eval_reps, detail=True)
        objectives[name] = d["objective"]
        if sli is None:
            return {"revenue": _pack(d["revenue"])}
        packed = _pack_measured(d, sli)
        return {"revenue": packed.pop("revenue"), "objective": packed}

    tuned = {"params": result.best["params"], **assessed(best_params, "tuned")}
    if prob.gate_temperature is not None:  # the deterministic policy at the tuned point
        plain = dataclasses.replace(prob, gate_temperature=None)
        d = evaluate(plain, best_params, final_key, eval_reps, detail=True)
        tuned["deterministic"] = ({"revenue": _pack(d["revenue"])} if sli is None else
                                  {"revenue": _pack(d["revenue"]),
                                   "objective": _pack_measured(d, sli)})
    # The chosen start on the same key: what the steps gained, apart from what the start gave.
    started = {"name": chosen, "params": _summary_params(start_params),
               **assessed(start_params, "start")}
    # Paired over the replications of the final key (common random numbers).
    started["steps_gained"] = _pack(objectives["tuned"] - objectives["start"])
    lp = {"params": _summary_params(prob.initial()), **assessed(prob.initial(), "lp")}
    compared: dict[str, Any] = {}
    if baselines:
        say("baselines on the same fresh key: the paper's policies, a grid over M, SPSA")
        paper = [*PAPER_POLICIES, *([("sli-gate-and-route", "pooled")] if sli else [])]
        for name, engine in paper:
            system, _ = policies.build(name, model, n, engine=engine, plan=plan)
            run = simulate(final_key, system, reps=eval_reps, horizon=horizon,
                           warmup=warmup)
            compared[name] = _pack_measured(measure(run, model, n, pricing, sli), sli)
        gated = problem("gated")
        p0 = gated.initial()
        m0 = int(round(float(p0.share) * n))
        grid = {}
        for M in range(max(0, m0 - 2), min(n, m0 + 2) + 1):
            p = dataclasses.replace(p0, share=np.float64(M / n))
            grid[M] = _pack_measured(evaluate(gated, p, final_key, eval_reps, detail=True),
                                     sli)
        best_M = max(grid, key=lambda M: grid[M]["mean"])
        compared["gate-and-route, best M on a grid"] = {**grid[best_M], "M": best_M,
                                                         "grid": {str(k): v for k, v in
                                                                  grid.items()}}
        if estimator != "spsa":
            spsa_steps = max(1, result.replications // (2 * reps))  # equal replication-runs
            spsa = tune(prob, steps=spsa_steps, estimator="spsa",
                        learning_rate=learning_rate, eval_every=max(1, spsa_steps // 4),
                        eval_reps=eval_reps, seed=seed + 1, only=only,
                        initial=start_params, step_scale=step_scale)
            sp = _params(tunable, family, spsa.best["params"])
            compared[f"spsa, same budget ({spsa_steps} steps)"] = _pack_measured(
                evaluate(prob, sp, final_key, eval_reps, detail=True), sli)
    out = {"scenario": model.name, "gpus": n, "family": family, "estimator": estimator,
           "rule": rule, "step_scale": step_scale, "gate_steps": gate_steps,
           "confirmation": result.history.get("confirmation"), "returned": returned,
           "averaged": result.best.get("averaged"),
           "pricing": pricing, "lp_bound": plan.revenue, "lp": lp, "started": started,
           "tuned": tuned, "temperature": temperature,
           "baselines": compared, "starts": starts, "start": chosen, "steps": steps,
           "replications_used": result.replications, "events_used": result.events,
           "evaluations": result.history["evaluations"],
           "skipped_steps": result.history["skipped"],
           "fluid_stage": None if not fluid_steps else {
               "steps": fluid_steps, "surrogate": result.history["fluid"],
               "exact": next(e for e in result.history["evaluations"]
                             if e.get("stage") == "fluid")},
           "wall_seconds": time.perf_counter() - began, "seed": seed,
           "sli": None if sli is None else {"targets": sli.targets, "penalty": sli.penalty,
                                            "weights": {k: sli.weight(k) for k in sli.targets}}}
    return out, result.history, family, best_params


def _summary_params(params) -> dict:
    import numpy as np

    return {f.name: np.asarray(getattr(params, f.name)).tolist()
            for f in dataclasses.fields(params)}


def _params(tunable, family, values: dict):
    import numpy as np

    kind = tunable.PARAMS[family]
    return kind(**{k: np.asarray(v, np.float64) for k, v in values.items()})


def _lines(o):
    def rev(r):
        return f"{r['mean']:.3f} ± {r['ci95']:.2g}"

    sli = o.get("sli")
    what = "revenue" if sli is None else "objective (revenue - SLI penalties)"

    def row(name, r, revenue=None):
        line = f"  {name:<46} {rev(r)}"
        if sli is not None:
            achieved = ", ".join(f"{k} {r['sli'][k]:.4g}" for k in
                                 ("prefill_fairness", "decode_fairness", "tpot_formula"))
            line += f"  (revenue {rev(revenue or r['revenue'])}; {achieved})"
        return line

    rule = {"gated": " (gated steps)", "rprop": " (rprop steps)"}.get(o.get("rule"), "")
    if o.get("gate_steps"):
        rule += " (gate-capped difference steps)"
    yield (f"{o['scenario']}, n = {o['gpus']}: family {o['family']} tuned by {o['estimator']}"
           f"{rule} ({o['steps']} steps, {o['wall_seconds']:.0f} s); {o['pricing']} {what} per GPU "
           f"per second, LP bound {o['lp_bound']:.3f}")
    if o.get("averaged"):
        first, last = o["averaged"]
        yield (f"tuned: the mean of the iterates of steps {first}-{last}, returned whatever its "
               "evaluation says")
    check = o.get("confirmation")
    if check is not None:
        yield (f"confirmation on a fresh key ({check['reps']} replications): the point of step "
               f"{check['step']} {'kept' if check['kept'] else 'not kept, the start returned'}"
               f" (gain {check['gain']:+.3f}, SE {check['se']:.3f})")
    if sli is not None:
        yield ("SLI targets " + ", ".join(f"{k} <= {v:g} (weight {sli['weights'][k]:g})"
                                          for k, v in sli["targets"].items()))
    for name, entry in (("LP point (the paper policy of the family)", o["lp"]),
                        (f"start ({o['started']['name']})", o["started"]),
                        ("tuned", o["tuned"])):
        yield row(name, entry.get("objective", entry["revenue"]), entry["revenue"])
    gain = o["started"]["steps_gained"]
    yield (f"  {'what the steps gained over the start (paired)':<46} {gain['mean']:+.3f} ± "
           f"{gain['ci95']:.2g}")
    if "deterministic" in o["tuned"]:
        d = o["tuned"]["deterministic"]
        yield row("tuned point, deterministic policy", d.get("objective", d["revenue"]),
                  d["revenue"])
    for name, r in o["baselines"].items():
        yield row(name, r)
    if o.get("skipped_steps"):
        yield (f"warning: {len(o['skipped_steps'])} step(s) skipped, the {o['estimator']} estimate "
               f"was not finite (steps {o['skipped_steps']})")
    stage = o.get("fluid_stage")
    if stage:
        yield (f"fluid first stage ({stage['steps']} steps): surrogate "
               f"{stage['surrogate'][0]:.3f} -> {stage['surrogate'][-1]:.3f}; its end point on "
               f"the exact simulator {rev(stage['exact'])}, share = "
               f"{stage['exact']['params']['share']:.4f}")
    yield f"tuned from {o['start']}; parameters: " + ", ".join(
        f"{k} = {[round(x, 4) for x in v] if isinstance(v, list) else round(v, 4)}"
        for k, v in o["tuned"]["params"].items())


def _plot(path, out, history) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = range(1, len(history["value"]) + 1)
    ax.plot(steps, history["value"], color="0.6", lw=1, label="estimator's value (CRN runs)")
    ev = history["evaluations"]
    ax.errorbar([e["step"] for e in ev], [e["mean"] for e in ev], [e["ci95"] for e in ev],
                fmt="o-", color="C0", capsize=3, label="exact evaluation, one key (95% CI)")
    ax.axhline(out["lp_bound"], color="k", ls="--", lw=1, label=f"LP bound {out['lp_bound']:.2f}")
    if out["baselines"]:
        name, best = max(out["baselines"].items(), key=lambda kv: kv[1]["mean"])
        ax.axhline(best["mean"], color="C3", ls=":", lw=1.5, label=f"best baseline: {name}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{out['pricing']} revenue per GPU per second"
                  + (" minus SLI penalties" if out.get("sli") else ""))
    ax.set_title(f"{out['scenario']}, n = {out['gpus']}: tuning {out['family']}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
