"""The tuning benchmark: what a tuner's steps gain over its best start, against derivative-free
searches at equal budget and a reference search with ten times the budget.

    python scripts/tuning_bench.py --problem tpot-50 [--seeds 5]    # resumable
    python scripts/tuning_bench.py --all
    python scripts/tuning_bench.py --report [--markdown]

Problems (``--list``):

- ``tpot-50``: ``paper-qwen8b``, n = 50, TPOT target 0.023 s as a penalty of weight 1e5 per
  second of excess (the plan: the soft SLI-aware LP);
- ``fairness-200``: ``paper-qwen8b``, n = 200, decode fairness 2 as a penalty of weight 5;
- ``dolly-tpot-100``: ``dolly-8class`` (19 parameters), n = 100, TPOT target 0.023 s, weight 1e5;
- ``dolly-200``: ``dolly-8class``, n = 200, revenue only: a control, where a tuner should at
  least lose nothing;
- ``many16-tpot-100``: a 16-class variant of ``paper-qwen8b`` (35 parameters; the two classes
  alternately, the j-th pair's lengths stretched by 5% j, as in ``scripts/bench.py``'s classes
  benchmark), n = 100, TPOT target 0.023 s, weight 1e5;
- ``dolly-fairness-200`` and ``many16-fairness-100``: the decode-fairness penalty of
  ``fairness-200`` on ``dolly-8class`` (n = 200, 19 parameters) and on the 16-class variant
  (n = 100, 35 parameters), run as one-seed pilots (not part of ``--all``).

Each problem: the starting points of the ``gated`` family (its LP point, and the same ranking
classes after admission), the best of them on a common key; then, from that start, with common
random numbers throughout, for every seed: the gradient tuner (``--estimator``, default ``fd``:
Adam in natural steps on common-random-number central differences), SPSA in natural steps at the
same budget, a (1+1)-evolution strategy at the same budget, and (seed 0 only) the reference
pattern search with ten times that budget (first step 8 natural steps, halved down to a quarter
step; each poll moves one or two coordinates at once, and a move is taken only if it wins again
on a fresh key). Every method's end point is evaluated on 512 fresh
replications x 2,000 s (warm-up 300 s), paired with the start on the same key, so each gain over
the start has its own interval. Last, the recovery check: the gradient method's tuned point
(seed 0) moved 30% along a random direction, then 20 gradient steps; the share of the lost
objective they recover. Results are written to ``results/tuning_bench/PROBLEM.json`` after
every method and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxqueue import fluid, scenarios, stats  # noqa: E402
from jaxqueue.objective import Problem, evaluate  # noqa: E402
from jaxqueue.policies import tunable  # noqa: E402
from jaxqueue.search import evolution_strategy, pattern_search  # noqa: E402
from jaxqueue.tune import RETURNS, RULES, tune  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from instances import many_classes  # noqa: E402

OUT = ROOT / "results" / "tuning_bench"

PROBLEMS = {
    "tpot-50": ("paper-qwen8b", 50, dict(tpot=0.023, weights={"tpot": 1e5})),
    "fairness-200": ("paper-qwen8b", 200, dict(decode_fairness=2.0,
                                               weights={"decode_fairness": 5.0})),
    "dolly-tpot-100": ("dolly-8class", 100, dict(tpot=0.023, weights={"tpot": 1e5})),
    "dolly-200": ("dolly-8class", 200, None),
    # 35 parameters (16 gate targets and caps): where gradients should pay most against
    # SPSA and the evolution strategy, whose progress per event falls with the dimension.
    "many16-tpot-100": ("many-classes-16", 100, dict(tpot=0.023, weights={"tpot": 1e5})),
    # Trade-offs with many parameters: the fairness penalty of fairness-200 on 8 and 16 classes.
    "dolly-fairness-200": ("dolly-8class", 200, dict(decode_fairness=2.0,
                                                     weights={"decode_fairness": 5.0})),
    "many16-fairness-100": ("many-classes-16", 100, dict(decode_fairness=2.0,
                                                         weights={"decode_fairness": 5.0})),
}
#: Problems run as one-seed pilots only (not part of --all).
PILOTS = ("dolly-fairness-200", "many16-fairness-100")
#: The problems' scenarios that are not built in (scripts/instances.py).
SYNTHETIC = {"many-classes-16": lambda: many_classes(16)}
EVAL_REPS, EVAL_HORIZON, EVAL_WARMUP = 512, 2000.0, 300.0
METHODS = ("gradient", "spsa", "es", "reference", "recovery")
#: The gradient tuner's and SPSA's learning rate, in natural steps (tune's default).
LEARNING_RATE = 0.3
#: Settings of stores made before they were choices: their values then.
SETTINGS_THEN = {"rule": "adam", "learning_rate": LEARNING_RATE, "step_scale": 1.0,
                 "gate_steps": False, "confirm": 0, "returned": "best"}
#: The reference search (:func:`jaxqueue.search.pattern_search`): its first step, in natural
#: steps (each about one to two jobs or GPUs), coarse so that it can cross a plateau of the
#: deterministic gate (whose targets matter only through the integers they round to), halved down
#: to 0.25; polls that move one or two coordinates at once (a combination such as one target down
#: with the offset up, where neither alone wins, is found); and each move confirmed on a fresh key
#: of four times the replications, by 2 paired standard errors, among the poll's 3 best points.
REFERENCE = {"delta": 8.0, "pairs": True, "confirm": 3}


def reference_setup(entry: dict) -> dict:
    """The settings of a stored reference search. Stored before they were recorded: the
    compass search (one coordinate at a time, no confirmation), first step 2."""
    return {"delta": entry.get("delta", 2.0), "pairs": entry.get("pairs", False),
            "confirm": entry.get("confirm", 0)}


def problem_of(name: str, reps: int, horizon: float, warmup: float,
               temperature: float | None = None) -> Problem:
    scenario, n, sli_kw = PROBLEMS[name]
    model = SYNTHETIC[scenario]() if scenario in SYNTHETIC else scenarios.load(scenario)
    sli = None if sli_kw is None else fluid.SLI(penalty=True, **sli_kw)
    plan = fluid.solve(model, "bundled", sli=sli)
    return Problem(family="gated", model=model, n=n, plan=plan, horizon=horizon,
                   warmup=warmup, reps=reps, sli=sli, gate_temperature=temperature)


def params_dict(params) -> dict:
    return {k: np.asarray(v).tolist() for k, v in dataclasses.asdict(params).items()}


def from_dict(values: dict):
    return tunable.GatedParams(**{k: np.asarray(v, np.float64) for k, v in values.items()})


def run(name: str, seeds: int, steps: int, estimator: str, reps: int, horizon: float,
        warmup: float, out: Path = OUT, eval_reps: int = EVAL_REPS,
        eval_horizon: float = EVAL_HORIZON, temperature: float | None = None,
        methods: tuple[str, ...] = METHODS, rule: str = "adam",
        learning_rate: float = LEARNING_RATE, step_scale: float = 1.0,
        gate_steps: bool = False, confirm: int = 0, first_seed: int = 0,
        returned: str = "best") -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    store = json.loads(path.read_text()) if path.exists() else {
        "problem": name, "methods": {}, "temperature": temperature, "estimator": estimator,
        "steps": steps, "reps": reps, "horizon": horizon, "warmup": warmup, "rule": rule,
        "learning_rate": learning_rate, "step_scale": step_scale, "gate_steps": gate_steps,
        "confirm": confirm, "returned": returned}
    if store.get("temperature") != temperature:
        raise SystemExit(f"{path} was made with temperature {store.get('temperature')}: give "
                         "the same --temperature or another --out")
    # A store made before a setting was a choice was made with its value then (SETTINGS_THEN);
    # one that predates the evaluation settings takes the ones given.
    for key, value in (("rule", rule), ("learning_rate", learning_rate),
                       ("step_scale", step_scale), ("gate_steps", gate_steps),
                       ("confirm", confirm), ("returned", returned),
                       ("eval_reps", eval_reps), ("eval_horizon", eval_horizon)):
        if store.setdefault(key, SETTINGS_THEN.get(key, value)) != value:
            raise SystemExit(f"{path} was made with --{key.replace('_', '-')} {store[key]}: "
                             "give the same or another --out")

    def save():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(store, indent=1))
        tmp.replace(path)

    problem = problem_of(name, reps, horizon, warmup, temperature)
    # fd and SPSA perturb by step_scale difference steps (tune's step_scale; other estimators
    # have no steps, and the tuner refuses one for them)
    scaled = {} if step_scale == 1.0 else {"step_scale": step_scale}
    # The gradient method's differences with the gate's steps capped by its temperature
    # (estimate(gate_steps=True)); SPSA, the baseline, keeps the natural steps.
    gated = {"options": {"gate_steps": True}} if gate_steps else {}
    final = dataclasses.replace(problem, horizon=eval_horizon,
                                warmup=min(EVAL_WARMUP, eval_horizon / 4))
    final_key = jax.random.key(999)
    if "start" not in store:
        points = tunable.starting_points("gated", problem.model, problem.n, problem.plan)
        key = jax.random.key(5)
        scored = {k: float(np.mean(evaluate(problem, p, key, 64))) for k, p in points.items()}
        chosen = max(scored, key=scored.get)
        values = evaluate(final, points[chosen], final_key, eval_reps)
        store["start"] = {"name": chosen, "scores": scored, "params": params_dict(points[chosen]),
                          "final": stats_pack(values), "values": values.tolist()}
        save()
    start = from_dict(store["start"]["params"])
    base = np.asarray(store["start"]["values"])
    # With a gate temperature, every point is also evaluated as the deterministic policy (the
    # gate's temperature to 0, no dithering) on the same key: what a deployment would run.
    if temperature is not None and "deterministic_values" not in store["start"]:
        plain = evaluate(final, start, final_key, eval_reps, smoothed=False)
        store["start"].update(deterministic=stats_pack(plain),
                              deterministic_values=plain.tolist())
        save()

    def as_deterministic(point) -> tuple[np.ndarray, dict]:
        """The deterministic policy at ``point`` on the final key, and its gain over the
        start's."""
        plain = evaluate(final, point, final_key, eval_reps, smoothed=False)
        return plain, stats_pack(plain - np.asarray(store["start"]["deterministic_values"]))

    def deterministic(entry: dict) -> None:
        plain, gain = as_deterministic(from_dict(entry["params"]))
        entry.update(deterministic=stats_pack(plain), deterministic_gain=gain,
                     deterministic_values=plain.tolist())

    if temperature is not None:  # results recorded before the deterministic evaluations
        for runs in store["methods"].values():
            for entry in runs.values():
                if "deterministic_values" not in entry:
                    deterministic(entry)
                    save()

    def record(method: str, seed: int, params, events: int, seconds: float, extra=None):
        values = evaluate(final, params, final_key, eval_reps)
        entry = {"params": params_dict(params), "events": int(events), "seconds": seconds,
                 "final": stats_pack(values), "gain": stats_pack(values - base),
                 "final_values": values.tolist(), **(extra or {})}
        if temperature is not None:
            deterministic(entry)
        store["methods"].setdefault(method, {})[str(seed)] = entry
        save()
        print(f"{name} {method} seed {seed}: gain {entry['gain']['mean']:+.3f} ± "
              f"{entry['gain']['ci95']:.2g} ({events:.3g} events, {seconds:.0f} s)", flush=True)

    for seed in range(first_seed, first_seed + seeds):
        if str(seed) not in store["methods"].get(estimator, {}):
            t = time.perf_counter()
            result = tune(problem, steps=steps, estimator=estimator, eval_every=max(1, steps // 4),
                          eval_reps=problem.reps, seed=seed, initial=start, rule=rule,
                          learning_rate=learning_rate, confirm=confirm, returned=returned,
                          **scaled, **gated)
            best = from_dict(result.best["params"])
            record(estimator, seed, best, result.events, time.perf_counter() - t,
                   {"curve": [e["mean"] for e in result.history["evaluations"]],
                    "evaluation_events": result.evaluation_events,
                    "chosen_step": result.best["step"],
                    "events_per_step": float(np.mean(result.history["events"])),
                    # Per step: each free coordinate's move (natural steps) and estimate / SE.
                    "moves": result.history["moves"], "z": result.history["z"],
                    **({"confirmation": result.history["confirmation"]}
                       if "confirmation" in result.history else {})})
        entry = store["methods"][estimator][str(seed)]
        check = entry.get("confirmation")
        if check is not None and not check["kept"] and "unconfirmed" not in entry:
            # What the check turned down, evaluated on the final key.
            point = from_dict(check["params"])
            values = evaluate(final, point, final_key, eval_reps)
            entry["unconfirmed"] = {
                "step": check["step"], "gain": stats_pack(values - base),
                "deterministic_gain": (as_deterministic(point)[1] if temperature is not None
                                       else None)}
            save()
        budget = entry["events"]
        if "spsa" in methods and str(seed) not in store["methods"].get("spsa", {}):
            t = time.perf_counter()
            # SPSA at the same event budget: each of its steps runs 2 configurations (plain
            # runs of the problem's size). A step of fd runs 2p + 1 of them; a score step runs
            # one longer one (its credit window past the horizon) with more work per event, so
            # a plain run's events are read off the tuner's evaluations, which are such runs.
            gradient_run = store["methods"][estimator][str(seed)]
            if estimator == "fd":
                configs = 2 * len(np.concatenate([np.ravel(v) for v in
                                                  store["start"]["params"].values()])) + 1
                per_config = gradient_run["events_per_step"] / configs
            else:
                per_config = gradient_run["evaluation_events"] / len(gradient_run["curve"])
            k = max(1, int(round(budget / (2 * per_config))))
            result = tune(problem, steps=k, estimator="spsa", seed=seed, initial=start,
                          eval_every=max(1, k // 4), eval_reps=problem.reps,
                          learning_rate=learning_rate, returned=returned, **scaled)
            record("spsa", seed, from_dict(result.best["params"]), result.events,
                   time.perf_counter() - t, {"evaluation_events": result.evaluation_events,
                                             "chosen_step": result.best["step"]})
        if "es" in methods and str(seed) not in store["methods"].get("es", {}):
            t = time.perf_counter()
            result = evolution_strategy(problem, start, budget=budget, seed=seed)
            record("es", seed, result.params, result.events, time.perf_counter() - t)
    # The reference (REFERENCE). One stored with other settings is run again.
    stored = store["methods"].get("reference", {}).get("0")
    if "reference" in methods and (stored is None or reference_setup(stored) != REFERENCE):
        budget = 10 * store["methods"][estimator]["0"]["events"]
        t = time.perf_counter()
        result = pattern_search(problem, start, budget=budget, reps=problem.reps, **REFERENCE)
        record("reference", 0, result.params, result.events, time.perf_counter() - t,
               {**REFERENCE, "budget": budget, "path": result.history})
    # Recovery: from the gradient method's tuned point (seed 0) moved 30% along a random
    # direction (each parameter's value times 1 + 0.3 d_i, |d| = 1 over the tuned ones), 20
    # steps; what share of the lost objective comes back.
    if "recovery" in methods and "recovery" not in store:
        tuned = from_dict(store["methods"][estimator]["0"]["params"])
        names = [f.name for f in dataclasses.fields(tuned)]
        sizes = [np.size(getattr(tuned, k)) for k in names]
        d = np.array(jax.random.normal(jax.random.key(31), (sum(sizes),)), np.float64)
        d /= np.linalg.norm(d)
        parts = np.split(d, np.cumsum(sizes)[:-1])
        moved = dataclasses.replace(tuned, **{
            k: np.asarray(getattr(tuned, k)) * (1 + 0.3 * part.reshape(np.shape(getattr(tuned,
                                                                                   k))))
            for k, part in zip(names, parts, strict=True)})
        moved = dataclasses.replace(moved, share=np.clip(moved.share, 0.0, 1.0),
                                    offset=np.maximum(moved.offset, 0.0))
        t = time.perf_counter()
        result = tune(problem, steps=20, estimator=estimator, eval_every=5,
                      eval_reps=problem.reps, seed=100, initial=moved, rule=rule,
                      learning_rate=learning_rate, returned=returned, **scaled, **gated)
        v_tuned = np.asarray(store["methods"][estimator]["0"]["final_values"])
        v_moved = evaluate(final, moved, final_key, eval_reps)
        v_back = evaluate(final, from_dict(result.best["params"]), final_key, eval_reps)
        lost = v_tuned - v_moved
        store["recovery"] = {"moved": params_dict(moved), "lost": stats_pack(lost),
                             "recovered": stats_pack(v_back - v_moved),
                             "fraction": float((v_back - v_moved).mean() / lost.mean()),
                             "events": result.events, "seconds": time.perf_counter() - t}
        save()
        print(f"{name} recovery: {store['recovery']['fraction']:.2f} of "
              f"{lost.mean():.3f} lost", flush=True)


def stats_pack(values) -> dict:
    mean, ci = stats.mean_ci(np.asarray(values))
    return {"mean": float(mean), "ci95": float(ci)}


def summary(out: Path = OUT) -> dict:
    """Every problem's results as JSON (``--report --json``): the start, and per method its
    seeds' gains over the start (95% intervals, paired on the final key), their mean and
    standard error over seeds, its events and seconds; the gradient method's paired difference
    to each other method per seed (same seed, same final key) with the pooled standard error
    over seeds; the recovery check. Per-replication values are left out."""
    problems = {}
    for name, store in _stores(out):
        grad = store["estimator"]
        methods = {}
        for method, runs in store["methods"].items():
            gains = [r["gain"] for r in runs.values()]
            methods[method] = {
                "seeds": {k: {"gain": r["gain"], "events": r["events"],
                              "seconds": r["seconds"], "chosen_step": r.get("chosen_step"),
                              "curve": r.get("curve"), "params": r["params"],
                              "deterministic_gain": r.get("deterministic_gain"),
                              "reference": (reference_setup(r) if method == "reference"
                                            else None),
                              **({"confirmation": {k2: v for k2, v in
                                                   r["confirmation"].items() if k2 != "params"},
                                  "unconfirmed": r.get("unconfirmed")}
                                 if "confirmation" in r else {})}
                          for k, r in runs.items()},
                "mean_gain": _over_seeds([g["mean"] for g in gains]),
                "events": float(np.mean([r["events"] for r in runs.values()]))}
        versus = {}
        for other in methods:
            if other in (grad, "reference"):
                continue
            seeds = sorted(set(store["methods"][grad]) & set(store["methods"][other]), key=int)
            if not seeds:
                continue
            versus[other] = _paired(store["methods"][grad], store["methods"][other], seeds,
                                    "final_values")
            if all("deterministic_values" in store["methods"][m][k] for m in (grad, other)
                   for k in seeds):
                # The same comparison between the deterministic policies at the end points.
                versus[other]["deterministic"] = _paired(
                    store["methods"][grad], store["methods"][other], seeds,
                    "deterministic_values")
        entry = {"start": {k: store["start"].get(k) for k in ("name", "scores", "params", "final",
                                                               "deterministic")},
                 "settings": {k: store.get(k, SETTINGS_THEN.get(k)) for k in (
                     "estimator", "rule", "learning_rate", "step_scale", "gate_steps",
                     "temperature", "steps", "reps", "horizon", "warmup", "eval_reps",
                     "eval_horizon", "confirm", "returned")},
                 "methods": methods, "gradient_versus": versus}
        ref = methods.get("reference", {}).get("seeds", {}).get("0")
        if ref is not None:
            entry["reference_gain"] = ref["gain"]
            entry["fraction_of_reference"] = {
                k: r["gain"]["mean"] / ref["gain"]["mean"]
                for k, r in methods[grad]["seeds"].items()} if ref["gain"]["mean"] > 0 else None
        if "recovery" in store:
            entry["recovery"] = store["recovery"]
        problems[name] = entry
    return {"problems": problems}


def _paired(runs: dict, others: dict, seeds: list[str], values: str) -> dict:
    """``runs`` minus ``others`` on the stored per-replication ``values`` of each seed (same
    final key), their mean over seeds and its standard error (with one seed, that of the paired
    evaluation), and ``z``: the mean over it.

    The seeds share the final key, so their spread leaves out that key's own noise: how far
    the replications' differences, averaged over seeds, scatter about their mean. ``se_key`` is
    that standard error, ``se_pooled`` both together (root sum of squares) and ``z_pooled`` the
    mean over it: the benchmark's bar ("by 3 pooled standard errors") is read on this one."""
    table = np.asarray([np.asarray(runs[k][values]) - np.asarray(others[k][values])
                        for k in seeds], np.float64)  # seeds x replications
    diffs = {k: stats_pack(row) for k, row in zip(seeds, table, strict=True)}
    means = [d["mean"] for d in diffs.values()]
    pooled = _over_seeds(means)
    if len(seeds) == 1:  # one seed: the paired interval of the evaluation alone
        pooled = {"mean": means[0], "se": diffs[seeds[0]]["ci95"] / 1.96}
    across = table.mean(axis=0)
    se_key = float(across.std(ddof=1) / np.sqrt(across.size))
    se_pooled = (pooled["se"] if len(seeds) == 1 or pooled["se"] is None
                 else float(np.hypot(pooled["se"], se_key)))
    return {**pooled, "seeds": diffs,  # per seed (pooled's "seeds" is their count)
            "z": pooled["mean"] / pooled["se"] if pooled["se"] else None,
            "se_key": se_key, "se_pooled": se_pooled,
            "z_pooled": pooled["mean"] / se_pooled if se_pooled else None}


def _over_seeds(values) -> dict:
    v = np.asarray(values, np.float64)
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None
    return {"mean": float(v.mean()), "se": se, "seeds": int(v.size)}


def _stores(out: Path):
    """``(problem, its stored results)`` for every problem with results under ``out``."""
    for name in PROBLEMS:
        path = out / f"{name}.json"
        if path.exists():
            yield name, json.loads(path.read_text())


def report(markdown: bool, out: Path = OUT) -> None:
    for name, store in _stores(out):
        s = store["start"]
        print(f"\n{name}: start {s['name']}, objective {s['final']['mean']:.3f} ± "
              f"{s['final']['ci95']:.2g} (final evaluation)")
        if markdown:
            print("| method | seeds | gain over the start, each seed (± 95%) | mean events |")
            print("|---|---:|---|---:|")
        for method, runs in store["methods"].items():
            gains = "; ".join(f"{r['gain']['mean']:+.2f} ± {r['gain']['ci95']:.2g}"
                              for r in runs.values())
            events = np.mean([r["events"] for r in runs.values()])
            cells = [method, str(len(runs)), gains, f"{events:.3g}"]
            print(("| " + " | ".join(cells) + " |") if markdown else "  ".join(cells))
        r = store.get("recovery")
        if r:
            print(f"recovery: moved 30% away, it lost {r['lost']['mean']:.3f} ± "
                  f"{r['lost']['ci95']:.2g}; 20 steps recovered {r['recovered']['mean']:.3f} ± "
                  f"{r['recovered']['ci95']:.2g} ({r['fraction']:.0%})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", action="append", choices=list(PROBLEMS))
    p.add_argument("--all", action="store_true", help="every problem but the pilots")
    p.add_argument("--list", action="store_true")
    p.add_argument("--report", action="store_true")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="with --report: write the results as JSON here ('-': print them)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="gradient steps per tuning run")
    p.add_argument("--estimator", default="fd")
    p.add_argument("--rule", default="adam", choices=list(RULES),
                   help="how the gradient tuner steps (jaxqueue.tune.tune's rule)")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                   help="the gradient tuner's and SPSA's step, in natural steps")
    p.add_argument("--step-scale", type=float, default=1.0,
                   help="fd's and SPSA's perturbations in difference steps (tune --step-scale)")
    p.add_argument("--gate-steps", action="store_true",
                   help="fd's differences with the gate targets' and offset's steps capped by "
                        "the gate temperature (estimate's gate_steps; needs --temperature); "
                        "SPSA keeps the natural steps")
    p.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="the gradient tuner returns its best point only if it beats the start "
                        "by 2 paired standard errors on a fresh key of K times its evaluations' "
                        "replications (tune's confirm; default 0: its best evaluation)")
    p.add_argument("--returned", default="best", choices=list(RETURNS),
                   help="the point the gradient tuner and SPSA return (tune's returned): the "
                        "best of their evaluations (default) or the mean of the last half of "
                        "their iterates")
    p.add_argument("--first-seed", type=int, default=0,
                   help="run seeds FIRST .. FIRST + SEEDS - 1 (fresh seeds for a new setting)")
    p.add_argument("--reps", type=int, default=16, help="replications per configuration")
    p.add_argument("--horizon", type=float, default=600.0)
    p.add_argument("--warmup", type=float, default=150.0)
    p.add_argument("--out", type=Path, default=OUT, help="where results are written")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="which to run, comma-separated, of " + ", ".join(METHODS) +
                        " (the gradient tuner always runs: the others' budgets are its)")
    p.add_argument("--eval-reps", type=int, default=EVAL_REPS,
                   help="replications of each final evaluation")
    p.add_argument("--eval-horizon", type=float, default=EVAL_HORIZON)
    p.add_argument("--temperature", type=float, default=None,
                   help="tune (and search, and evaluate) the smoothed family at this gate "
                        "temperature; needed by --estimator score")
    a = p.parse_args()
    if a.list:
        for k, v in PROBLEMS.items():
            print(k, *v)
        return
    if a.report:
        if a.json:
            text = json.dumps(summary(a.out), indent=1)
            if a.json == "-":
                print(text)
            else:
                Path(a.json).write_text(text + "\n")
        else:
            report(a.markdown, a.out)
        return
    names = [k for k in PROBLEMS if k not in PILOTS] if a.all else (a.problem or [])
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not names:
        p.error("give --problem NAME, --all, --list or --report")
    if a.gate_steps and (a.temperature is None or a.estimator != "fd"):
        p.error("--gate-steps needs --estimator fd and a --temperature (the steps follow the "
                "smoothed gate's logits)")
    for flag, value, least in (("--seeds", a.seeds, 1), ("--first-seed", a.first_seed, 0),
                               ("--confirm", a.confirm, 0)):
        if value < least:
            p.error(f"{flag} = {value} is invalid: must be >= {least}")
    for name in names:
        run(name, a.seeds, a.steps, a.estimator, a.reps, a.horizon, a.warmup, a.out,
            a.eval_reps, a.eval_horizon, a.temperature, methods, a.rule, a.learning_rate,
            a.step_scale, a.gate_steps, a.confirm, a.first_seed, a.returned)


if __name__ == "__main__":
    main()
