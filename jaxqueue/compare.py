"""Every applicable policy on one scenario, on common random numbers, ranked (``jaxqueue compare``).

Each policy runs with the same key, so replication ``r`` of every policy draws from
``fold_in(key, r)``: the per-replication differences between two policies pair runs that share
their random numbers, and their interval (:func:`paired`) is the honest one for a difference.

What runs (:func:`entries`): the paper's policies, each on its first engine (Gate-and-Route and
FG-SP on the pooled engine, the coupled baselines FI-WSP, GI-WSP and GF-WSP on the per-GPU
engine, Prioritize-and-Route planned from the separate LP, the SLI-aware policy from the bundled
LP without SLI targets), jaxqueue's own policies (:data:`jaxqueue.policies.POLICIES`, ``origin =
"jaxqueue"``), and tuned parameter files written by ``jaxqueue tune --save``.

**Sizing rule.** Per-GPU policies run a quarter of the replications of the pooled ones (at
least ``min(reps, 8)``): the *first* ones, so every pair of policies still shares its random
numbers over the replications both ran, and paired differences use those. A per-GPU event costs
more than a pooled one (measured at n = 100 on 2 busy cores, 64 pooled and 32 per-GPU
replications: 0.94 M pooled events/s against 0.23 M per-GPU; more beyond n = 500, where the
tree of GPUs deepens), and its program takes longer to compile: at a quarter of the
replications a per-GPU policy takes about as long as a pooled one, and its interval is about
twice as wide.

Each policy is measured under its own pricing against its own LP bound (Prioritize-and-Route
under separate pricing against the separate LP), and all are ranked by revenue under one pricing
(bundled by default). A policy more than :data:`jaxqueue.diagnose.THRESHOLD` below its bound is
diagnosed (:func:`jaxqueue.diagnose.diagnose`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import budget, diagnose, fluid, policies, stats
from .driver import CHUNK_BOUNDS, simulate
from .model import Model
from .policies.pooled import Pooled

__all__ = ["Entry", "compare", "entries", "estimate", "paired", "per_gpu_reps", "plot",
           "tuned_system"]

#: The order of the paper's policies in :func:`entries` (Sec. 6.3's five, then Sec. 4.2.1, 5.1).
PAPER_ORDER = ("gate-and-route", "fg-sp", "fi-wsp", "gi-wsp", "gf-wsp", "prioritize-and-route",
               "sli-gate-and-route")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One policy of a comparison.

    Attributes:
        name: its label (a policy name, or ``family (file)`` for a tuned file).
        system: the system to simulate.
        plan: the LP its bound comes from (the plan it follows, if it plans).
        pricing: the pricing it is planned for and measured under against ``plan``.
        engine: ``"pooled"`` or ``"per-gpu"``.
        origin: ``"paper"``, ``"jaxqueue"`` or ``"tuned"``.
        plans: what it takes from its LP (``"layout"``, ``"targets"`` or ``"nothing"``).
    """

    name: str
    system: Any
    plan: fluid.Plan
    pricing: str
    engine: str
    origin: str
    plans: str


def tuned_system(path, model: Model, n: int, capacity: int | None = None):
    """A tuned member of a policy family from a file of ``jaxqueue tune --save``.

    Returns:
        ``(system, plan, family, params, sli, meta)``: the system on ``n`` GPUs, the LP it is
        planned from (SLI-aware when it was tuned under SLI targets), the family, its
        parameters, the SLI targets (:class:`jaxqueue.fluid.SLI`, or None) and the whole file.
    """
    from .policies import tunable

    family, params, meta = tunable.load_params(path, model)
    sli = meta.get("sli")  # tuned under SLI targets: the same SLI-aware plan
    if sli:
        try:
            sli = fluid.SLI(**sli["targets"], penalty=bool(sli.get("penalty")),
                            weights=sli.get("weights", {}))
        except (TypeError, KeyError, AttributeError):
            raise ValueError(f"params file {path}: key 'sli' must hold 'targets' (SLI name -> "
                             "target), 'penalty' and 'weights', as jaxqueue tune writes it"
                             ) from None
    sli = sli or None
    plan = fluid.solve(model, "bundled", sli=sli)
    # Tuned in the smoothed form (jaxqueue tune --temperature): the same randomised policy.
    temperature = meta.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float))
                                        and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"params file {path}: temperature = {temperature!r} is invalid: must "
                         "be a number > 0, or absent")
    system, params = tunable.build_family(family, model, n, plan=plan, params=params,
                                          capacity=capacity, gate_temperature=temperature)
    return system, plan, family, params, sli, meta


def entries(model: Model, n: int, *, names: str | Sequence[str] = "all",
            params: Sequence[str | os.PathLike] = ()) -> list[Entry]:
    """The policies to compare on ``n`` GPUs of ``model``.

    Args:
        model: the scenario.
        n: number of GPUs.
        names: ``"all"`` (every policy of :data:`jaxqueue.policies.POLICIES`), or policy names
            or aliases (each once).
        params: files of ``jaxqueue tune --save`` to compare too.

    Raises:
        ValueError: an unknown or repeated policy name, or a bad parameter file.
    """
    if isinstance(names, str) and names == "all":
        chosen = [*PAPER_ORDER, *(p.name for p in policies.POLICIES.values()
                                  if p.name not in PAPER_ORDER)]
    else:
        chosen = [policies.resolve(k).name for k in ([names] if isinstance(names, str)
                                                      else names)]
        repeated = sorted({k for k in chosen if chosen.count(k) > 1})
        if repeated:
            raise ValueError(f"policies lists {', '.join(repeated)} more than once")
        if not chosen and not params:
            raise ValueError("policies is empty: give 'all', policy names or --params files")
    plans = {p: fluid.solve(model, p) for p in ("bundled", "separate")}
    out = []
    for name in chosen:
        spec = policies.resolve(name)
        system, plan = policies.build(name, model, n, plan=plans[spec.pricing])
        out.append(Entry(name=name, system=system, plan=plan, pricing=spec.pricing,
                         engine=policies.engine_of(system), origin=spec.origin,
                         plans=spec.plans))
    for path in params:
        system, _, family, _, _, meta = tuned_system(path, model, n)
        label = f"{family} ({Path(path).name})"
        pricing = meta.get("pricing", "bundled")
        if pricing not in ("bundled", "separate"):
            pricing = "bundled"
        # Bounded by its pricing's LP (a plan under SLI targets bounds only what meets them).
        out.append(Entry(name=label, system=system, plan=plans[pricing], pricing=pricing,
                         engine=policies.engine_of(system), origin="tuned", plans="targets"))
    labels = [e.name for e in out]
    if len(set(labels)) != len(labels):
        raise ValueError("two --params files have the same family and file name: rename one")
    return out


def per_gpu_reps(reps: int, devices: int = 1) -> int:
    """Replications of a per-GPU policy when pooled ones run ``reps`` (the module's sizing
    rule): a quarter, at least ``min(reps, 8)``, rounded up to a multiple of the devices."""
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps = {reps!r} is invalid: must be an integer >= 1")
    quarter = max(-(-reps // 4), min(reps, 8))
    return int(min(reps, -(-quarter // devices) * devices))


def estimate(items: Sequence[Entry], *, reps: int, gpu_reps: int, horizon: float,
             chunk_events: int | None = None, devices=None) -> dict[str, Any]:
    """The run-time estimate of a comparison (:mod:`jaxqueue.budget`, compilation excluded):
    ``seconds`` in all, ``per_policy`` seconds, and whether every policy fits in memory (raises
    :class:`jaxqueue.budget.ResourceError` otherwise)."""
    per = {}
    for e in items:
        r = gpu_reps if e.engine == "per-gpu" else reps
        est = budget.estimate(e.system, reps=r, horizon=horizon,
                              chunk_events=chunk_events or CHUNK_BOUNDS[0], devices=devices)
        budget.check_fits(e.system, est, r)
        per[e.name] = est.seconds or 0.0
    return {"seconds": float(sum(per.values())), "per_policy": per}


def latency_summary(lat: dict[str, Any], model: Model) -> dict[str, Any]:
    """:func:`jaxqueue.stats.latency` as JSON: per class and for all (``"all"``), the prefills
    and decodes started and the p50, p90 and p99 of the prefill wait, the time to first token
    and the decode buffer's wait (seconds) with 95% intervals; with end-to-end counters, of the
    end-to-end latency (``e2e``) and of the time per output token (``tpot``, whose ``atoms``
    also give the share of requests at each per-token time and at most it, with the
    half-widths of their 95% intervals). Null where the grid's last time is not reached, or
    where no request of the class started."""
    def num(v):
        return float(v) if np.isfinite(v) else None

    def quantiles(what, c):
        return {f"p{round(100 * q)}": {"value": num(v["value"][c]), "low": num(v["low"][c]),
                                       "high": num(v["high"][c])}
                for q, v in lat[what]["quantiles"].items()}

    def atoms(c):
        t = lat["tpot"]
        cdf, se = t["cdf"][:, c], t["se"][:, c]
        share = np.diff(np.concatenate([[0.0], cdf]))
        return [{"seconds": float(s), "share": num(p), "at_most": num(f),
                 "ci95": num(1.96 * e)}
                for s, p, f, e in zip(t["times"], share, cdf, se, strict=True)]

    names = [*model.class_names, "all"]
    kinds = [w for w in ("wait", "ttft", "decode_wait", "e2e") if w in lat]
    out = {}
    for c, name in enumerate(names):
        row = {"started": int(lat["started"][c]),
               "decodes_started": int(lat["decodes_started"][c]),
               **{what: quantiles(what, c) for what in kinds}}
        if "tpot" in lat:
            row["tpot"] = {**quantiles("tpot", c), "atoms": atoms(c)}
        out[name] = row
    return out


def goodput_summary(good: dict[str, Any], model: Model) -> dict[str, Any]:
    """:func:`jaxqueue.stats.goodput` as JSON: per metric, its target (seconds) and per class
    and for all (``"all"``) the share of arrivals meeting it and their rate per GPU per second,
    each ``{mean, ci95}`` (null where no request arrived)."""
    def num(v):
        return float(v) if np.isfinite(v) else None

    names = [*model.class_names, "all"]
    return {metric: {"target": g["target"], "classes": {
        name: {k: {"mean": num(g[k]["mean"][c]), "ci95": num(g[k]["ci95"][c])}
               for k in ("share", "per_gpu_per_second")}
        for c, name in enumerate(names)}} for metric, g in good.items()}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """``{mean, ci95, pairs}`` of ``a[r] - b[r]`` over the replications both ran (the first
    ``min(len(a), len(b))``: replication r of each shares its random numbers)."""
    k = min(len(a), len(b))
    d = np.asarray(a[:k], np.float64) - np.asarray(b[:k], np.float64)
    mean, ci = stats.mean_ci(d)
    return {"mean": float(mean), "ci95": float(ci) if np.isfinite(ci) else None, "pairs": int(k)}


def compare(key, model: Model, n: int, items: Sequence[Entry], *, reps: int = 64,
            gpu_reps: int | None = None, horizon: float = 800.0, warmup: float = 200.0,
            pricing: str = "bundled", devices=None, chunk_events: int | None = None,
            progress: Callable[[str], Any] | None = None,
            notify: Callable[[str], None] | None = None, scenario: str | None = None,
            latency: bool = False) -> dict[str, Any]:
    """Simulates every entry with the same ``key`` and ranks them.

    Args:
        key: a ``jax.random.key``, shared by every policy (common random numbers).
        model: the scenario.
        n: number of GPUs.
        items: the policies (:func:`entries`).
        reps: replications of each pooled policy (>= 2 for intervals).
        gpu_reps: replications of each per-GPU policy (default :func:`per_gpu_reps`).
        horizon, warmup: the simulated time and the discarded initial time, model seconds.
        pricing: ``"bundled"`` or ``"separate"``: the revenue the policies are ranked by.
        devices: devices to shard replications over (see :func:`jaxqueue.simulate`).
        chunk_events: steps per compiled chunk (``None``: chosen per run, as by
            :func:`jaxqueue.simulate`).
        progress: called with a label for each policy, returns what ``simulate`` takes as
            ``progress`` (a bar label, a callable, or False).
        notify: receives notices as lines: a buffer grown, and each policy's revenue when it
            is done.
        scenario: the scenario as the user named it, for the diagnoses' suggested commands.
        latency: also measure the pooled policies' prefill wait, time to first token and
            decode wait (:func:`jaxqueue.stats.latency`; their per-class queues keep each
            request's arrival time, which changes their sample paths, not their laws); the
            per-GPU policies' rows say it was not measured.

    Returns:
        A JSON-ready dict: the settings, the LP bounds, one row per policy (ranked: revenue
        under both pricings, its own bound and gap, the paired difference to the best,
        abandonment by class, achieved SLIs, a diagnosis when it is more than 5% below its
        bound), ``best``, and ``interrupted`` (a Ctrl-C stops the comparison after the policies
        finished so far).
    """
    if pricing not in ("bundled", "separate"):
        raise ValueError(f"pricing = {pricing!r} is invalid: must be 'bundled' or 'separate'")
    ndev = len(devices) if devices else 1
    gpu_reps = per_gpu_reps(reps, ndev) if gpu_reps is None else int(gpu_reps)
    began = time.perf_counter()
    lp = {p: fluid.solve(model, p).revenue for p in ("bundled", "separate")}
    rows, samples, interrupted = [], {}, False
    for k, e in enumerate(items, start=1):
        r = gpu_reps if e.engine == "per-gpu" else reps
        label = f"[{k}/{len(items)}] {e.name}"
        start = time.perf_counter()
        system = e.system
        measured = latency and type(system) is Pooled
        if measured:
            # Only the time to first token is shown: no end-to-end counters (a cheaper step).
            system = dataclasses.replace(system, wait_grid=stats.LATENCY_GRID, end_to_end=False)
        run = simulate(key, system, reps=r, horizon=horizon, warmup=warmup,
                       chunk_events=chunk_events, devices=devices, notify=notify,
                       progress=progress(label) if progress else False)
        if run.interrupted:
            interrupted = True
            break
        q = stats.per_gpu(run, model, n)
        summary = stats.summarize_pooled(run, model, n)
        samples[e.name] = {p: q[f"revenue_{p}"] for p in ("bundled", "separate")}
        own = summary["revenue_per_gpu"][e.pricing]
        bound = float(e.plan.revenue)
        rows.append({
            "name": e.name, "origin": e.origin, "engine": e.engine, "pricing": e.pricing,
            "plans": e.plans, "reps": r,
            "mixed_gpus": int(e.system.M) if e.plans == "layout" else None,
            "revenue": summary["revenue_per_gpu"], "lp_bound": bound,
            "gap": bound - own["mean"], "relative_gap": (bound - own["mean"]) / bound,
            "classes": [{"name": c["name"], "abandonment": c["abandonment"],
                         "prefill_abandonment": _share(c, "prefill_abandonment_rate"),
                         "decode_abandonment": _share(c, "decode_abandonment_rate")}
                        for c in summary["classes"]],
            "sli": summary["sli"],
            "diagnosis": diagnose.diagnose(model, e.plan, summary["classes"], own["mean"],
                                           pricing=e.pricing, bound=bound, gpus=n,
                                           scenario=scenario),
            "events": run.events, "wall_seconds": time.perf_counter() - start,
            "compile_seconds": run.compile_seconds,
        })
        if latency:
            rows[-1]["latency"] = (latency_summary(stats.latency(run, stats.LATENCY_GRID),
                                                   model) if measured else None)
        if notify is not None:
            rev = summary["revenue_per_gpu"][pricing]
            ci = "" if rev["ci95"] is None else f" ± {rev['ci95']:.2g}"
            notify(f"{label}: {pricing} revenue {rev['mean']:.2f}{ci} per GPU per second "
                   f"({rows[-1]['wall_seconds']:.0f} s)")
    rows.sort(key=lambda row: -row["revenue"][pricing]["mean"])
    best = rows[0]["name"] if rows else None
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        row["difference_to_best"] = (None if row["name"] == best else paired(
            samples[row["name"]][pricing], samples[best][pricing]))
    return {"scenario": scenario or model.name, "gpus": int(n), "pricing": pricing,
            "reps": int(reps), "per_gpu_reps": int(gpu_reps), "horizon": float(horizon),
            "warmup": float(warmup), "lp_bound": lp, "devices": ndev,
            "sizing_rule": "per-GPU policies run a quarter of the replications (at least "
                           "min(reps, 8)), the first ones: a per-GPU event costs about 4x a "
                           "pooled one; paired differences use the replications both ran",
            "policies": rows, "best": best, "interrupted": interrupted,
            "wall_seconds": time.perf_counter() - began}


def _share(c: dict[str, Any], key: str) -> dict[str, Any]:
    """A per-GPU abandonment rate as a share of the class's arrivals (means only)."""
    lam = c["arrival_rate"]["mean"]
    rate = c[key]["mean"]
    return {"mean": None if not lam or rate is None else rate / lam}


def plot(path, o: dict[str, Any]) -> None:
    """A bar chart of the ranked revenues with their 95% intervals and the LP bounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = o["policies"][::-1]
    pricing = o["pricing"]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    means = [r["revenue"][pricing]["mean"] for r in rows]
    errors = [r["revenue"][pricing]["ci95"] or 0.0 for r in rows]
    colors = ["C1" if r["origin"] != "paper" else "C0" for r in rows]
    ax.barh(range(len(rows)), means, xerr=errors, color=colors, capsize=3)
    ax.set_yticks(range(len(rows)), [f"{r['name']} ({r['engine']})" for r in rows], fontsize=8)
    ax.axvline(o["lp_bound"][pricing], color="k", ls="--", lw=1,
               label=f"{pricing} LP bound {o['lp_bound'][pricing]:.2f}")
    low = min(m - e for m, e in zip(means, errors, strict=True))
    ax.set_xlim(max(0.0, low - 0.1 * (o["lp_bound"][pricing] - low)),
                o["lp_bound"][pricing] * 1.01)
    ax.set_xlabel(f"{pricing} revenue per GPU per second (95% interval)")
    ax.set_title(f"{o['scenario']}, n = {o['gpus']}: policies on common random numbers",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
