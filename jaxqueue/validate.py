"""Checks a user can run: the simulator against exact answers.

- :func:`erlang_a_check`: the engine on an M/M/N+M queue against its birth-death solution;
- :func:`small_system_check`: a small prefill/decode system against the exact stationary law of
  its generator (:func:`jaxqueue.theory.pooled_stationary`);
- :func:`convergence_check`: the paper's instance at growing n against the fluid LP bound.

``devices`` shards the replications (see :func:`jaxqueue.simulate`). Each returns a
JSON-ready dict with simulated ``{mean, ci95}`` next to the exact value, a verdict and the
criterion it used (``criterion``):

- against exact answers, ``agree`` when every exact value lies within 3 standard errors of the
  simulated mean (``|z| <= 3``, z = (simulated - exact) / standard error over replications);
- against the LP bound, ``agree`` when (1) no simulated revenue exceeds R* by more than 3
  standard errors (``z <= 3``): in steady state the expected occupancies of any policy satisfy
  the LP's flow balances, and, when solo decoding is the more efficient mode
  (``gamma tau >= (B-1)/B``, Prop. 3.2), its capacities after moving the decodes that idle
  prefill slots leave on mixed GPUs to solo speed, so R* bounds the expected revenue at every
  n, not only in the limit; and (2) with two n or more, the revenue at the largest n exceeds
  that at the smallest by more than 3 standard errors of the difference (the gap shrinks). The
  paper proves convergence without a rate, so no tolerance on the gap itself is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from . import fluid, policies, scenarios, stats, theory
from .driver import simulate
from .policies.erlang import ErlangA

__all__ = ["EXACT_CRITERION", "convergence_check", "convergence_verdict", "erlang_a_check",
           "small_system_check"]

_Z = 3.0  # standard errors allowed between a simulated mean and an exact value
#: The criterion of the checks against exact answers, as printed.
EXACT_CRITERION = "agree when every |z| <= 3 (z = (simulated - exact) / standard error)"


def _compare(values: np.ndarray, exact: float) -> dict[str, Any]:
    values = np.asarray(values, np.float64)
    mean, ci = stats.mean_ci(values)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
    z = (float(mean) - exact) / se if se > 0 else (0.0 if float(mean) == exact else np.inf)
    return {"mean": float(mean), "ci95": float(ci), "exact": float(exact), "z": float(z),
            "agree": bool(abs(z) <= _Z)}


def erlang_a_check(servers: int, arrival_rate: float, service_rate: float, patience_rate: float,
                   *, reps: int = 256, horizon: float = 2000.0, warmup: float = 200.0,
                   seed: int = 0, progress: bool | str = False, devices=None) -> dict[str, Any]:
    """Simulates M/M/N+M and compares with the exact stationary values.

    Raises:
        KeyboardInterrupt: the simulation was interrupted (a partial run gives no verdict).
    """
    exact = theory.erlang_a(servers, arrival_rate, service_rate, patience_rate)
    system = ErlangA(servers=np.int32(servers), arrival_rate=np.float32(arrival_rate),
                     service_rate=np.float32(service_rate),
                     patience_rate=np.float32(patience_rate))
    run = simulate(jax.random.key(seed), system, reps=reps, horizon=horizon, warmup=warmup,
                   progress="Erlang-A" if progress is True else progress, devices=devices)
    if run.interrupted:  # a part of a run is no test: no verdict
        raise KeyboardInterrupt
    arrivals = run.count("arrivals")[:, 0]
    # Abandonments per arrival in the window: P(abandon) by the ratio of long-run rates.
    with np.errstate(divide="ignore", invalid="ignore"):
        abandon = run.count("abandonments")[:, 0] / arrivals
    checks = {
        "abandon_probability": _compare(abandon, exact["abandon_probability"]),
        "mean_queue": _compare(run.level("queue")[:, 0], exact["mean_queue"]),
        "mean_busy": _compare(run.level("busy")[:, 0], exact["mean_busy"]),
    }
    return {
        "system": {"servers": servers, "arrival_rate": arrival_rate, "service_rate": service_rate,
                   "patience_rate": patience_rate},
        "simulated": {k: {"mean": v["mean"], "ci95": v["ci95"]} for k, v in checks.items()},
        "exact": {k: exact[k] for k in checks},
        "z": {k: v["z"] for k, v in checks.items()},
        "verdict": "agree" if all(v["agree"] for v in checks.values()) else "disagree",
        "criterion": EXACT_CRITERION,
        "reps": reps, "horizon": horizon, "warmup": warmup,
        "events": run.events, "events_per_second": run.events_per_second,
        "wall_seconds": run.wall_seconds, "compile_seconds": run.compile_seconds,
    }


def small_model():
    """A small two-class instance: the paper's GPU law with B = 2, short outputs and impatient
    users, so that the exact chain on 2 GPUs truncated at 4 waiting jobs per buffer has a few
    thousand states and loses under 1e-3 of its probability mass to the truncation."""
    from .model import Model

    return Model(name="small-2class", class_names=("short", "long"), lambda_=(1.2, 0.8),
                 theta=(2.0, 3.0), P=(300, 900), D=(12, 8), alpha=0.0174, beta=6.2e-5,
                 gamma=1 / 0.022, C=256, B=2, c_p=0.1, c_d=0.2)


def small_system_check(policy: str = "gate-and-route", *, n: int = 2, M: int = 1,
                       reps: int = 256, horizon: float = 2000.0, warmup: float = 100.0,
                       seed: int = 0, max_queue: int = 4,
                       progress: bool | str = False, devices=None) -> dict[str, Any]:
    """A two-class, two-GPU system against the exact stationary law of its generator.

    Raises:
        KeyboardInterrupt: the simulation was interrupted (a partial run gives no verdict).
    """
    model = small_model()
    spec = policies.resolve(policy)
    plan = fluid.solve(model, spec.pricing)
    exact = theory.pooled_stationary(model, n, M, spec.name, x_star=plan.x, q_p_star=plan.q_p,
                                     max_queue=max_queue)
    system, _ = policies.build(spec.name, model, n, plan=plan)
    system = system.__class__(model=model, n=np.int32(n), M=np.int32(M), x_star=plan.x,
                              q_star=plan.q_p, gate=system.gate, capacity=system.capacity)
    run = simulate(jax.random.key(seed), system, reps=reps, horizon=horizon, warmup=warmup,
                   progress="small system" if progress is True else progress, devices=devices)
    if run.interrupted:  # a part of a run is no test: no verdict
        raise KeyboardInterrupt
    q = stats.per_gpu(run, model, n)
    keys = {"x": "x", "y_m": "y_mixed", "y_s": "y_solo", "q_p": "q_prefill", "q_d": "q_decode",
            "completion_rate": "completion_rate",
            "prefill_abandonment_rate": "prefill_abandonment_rate",
            "decode_abandonment_rate": "decode_abandonment_rate"}
    rows = []
    for ek, sk in keys.items():
        for i, name in enumerate(model.class_names):
            row = _compare(q[sk][:, i], float(np.asarray(exact[ek])[i]))
            rows.append({"quantity": sk, "class": name, **row})
    return {
        "policy": spec.name, "n": n, "M": M, "reps": reps, "horizon": horizon,
        "truncation_mass": float(exact["truncation_mass"]), "num_states": int(exact["num_states"]),
        "checks": rows,
        "verdict": "agree" if all(r["agree"] for r in rows) else "disagree",
        "criterion": EXACT_CRITERION,
        "events": run.events, "events_per_second": run.events_per_second,
    }


def convergence_check(scenario: str = "paper-qwen8b", gpus: Sequence[int] = (5, 20, 50),
                      *, policy: str = "gate-and-route", reps: int = 64, horizon: float = 1000.0,
                      warmup: float = 200.0, seed: int = 0,
                      progress: bool | str = False, devices=None,
                      notify=None) -> dict[str, Any]:
    """Per-GPU revenue of a policy (under its LP's pricing) at growing n next to the LP bound
    R*, with a verdict (:func:`convergence_verdict`). An interrupted simulation ends the check
    with the rows done so far (``interrupted``). ``progress=True`` shows one bar per n."""
    model = scenarios.load(scenario)
    spec = policies.resolve(policy)
    plan = fluid.solve(model, spec.pricing)
    rows = []
    samples = {}
    interrupted = False
    for n in gpus:
        system, _ = policies.build(spec.name, model, n, plan=plan)
        run = simulate(jax.random.key(seed), system, reps=reps, horizon=horizon, warmup=warmup,
                       progress=f"n = {n}" if progress is True else progress, devices=devices,
                       notify=notify)
        interrupted = interrupted or run.interrupted
        if not np.any(run.collected):
            break
        values = stats.per_gpu(run, model, n)[f"revenue_{spec.pricing}"][run.collected]
        samples[n] = values
        mean, ci = stats.mean_ci(values)
        se = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else np.nan
        rows.append({
            "gpus": int(n), "mixed_gpus": int(system.M),
            "revenue": {"mean": float(mean), "ci95": float(ci) if np.isfinite(ci) else None},
            "lp_revenue": plan.revenue, "gap": plan.revenue - float(mean),
            "relative_gap": (plan.revenue - float(mean)) / plan.revenue,
            "z_above_bound": float((mean - plan.revenue) / se) if se > 0 else None,
            "replications": int(values.size), "events": run.events,
            "wall_seconds": run.wall_seconds,
        })
        if run.interrupted:
            break
    out = {"scenario": scenario, "policy": spec.name, "pricing": spec.pricing, "reps": reps,
           "horizon": horizon, "warmup": warmup, "rows": rows, "interrupted": interrupted,
           "solo_efficient": model.solo_efficient}
    out.update(convergence_verdict(rows, samples, model.solo_efficient))
    if interrupted:
        out["verdict"] = "interrupted"
    return out


def convergence_verdict(rows: list[dict[str, Any]], samples: dict[int, np.ndarray],
                        solo_efficient: bool = True) -> dict[str, Any]:
    """The verdict of :func:`convergence_check` from its rows and per-replication revenues
    (criteria in the module docstring): ``verdict``, ``criterion``, and the two parts,
    ``bound`` (True/False) and ``trend`` (True/False, None with fewer than two n or one
    replication), with ``trend_z``, the standard errors by which the revenue at the largest n
    exceeds that at the smallest."""
    criterion = ("agree when (1) no simulated revenue exceeds R* by more than 3 standard errors "
                 "(z <= 3) and (2) the revenue at the largest n exceeds that at the smallest by "
                 "more than 3 standard errors of the difference")
    if not rows:
        return {"verdict": "no data", "criterion": criterion, "bound": None, "trend": None,
                "trend_z": None}
    zs = [r["z_above_bound"] for r in rows]
    bound = all(z is None or z <= _Z for z in zs) if solo_efficient else None
    trend = trend_z = None
    if len(rows) >= 2:
        lo, hi = samples[rows[0]["gpus"]], samples[rows[-1]["gpus"]]
        if lo.size > 1 and hi.size > 1:
            se = np.sqrt(lo.var(ddof=1) / lo.size + hi.var(ddof=1) / hi.size)
            diff = hi.mean() - lo.mean()
            trend_z = float(diff / se) if se > 0 else (0.0 if diff == 0 else float(np.inf))
            trend = trend_z > _Z
    parts = [p for p in (bound, trend) if p is not None]
    verdict = "agree" if parts and all(parts) else ("disagree" if parts else "no data")
    return {"verdict": verdict, "criterion": criterion, "bound": bound, "trend": trend,
            "trend_z": trend_z}
