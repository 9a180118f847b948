"""Capacity planning: the fewest GPUs, and of them the fewest mixed (prefill) GPUs, that serve a
given traffic within latency and abandonment targets, with 95% confidence.

The scenario's per-GPU arrival rates give the traffic's mix of classes; ``traffic`` (requests
per second in all) its size. At n GPUs each class arrives at ``traffic * lambda_i / sum(lambda)
/ n`` per GPU and the policy is planned from that model's LP.

Why two numbers: with a fixed traffic the static plan's mixed GPUs, ``M = ceil(n sum x*)``, stop
growing with n once the LP admits every request (``n sum x* = sum_i traffic_i / mu_p,i``), so
more GPUs never shorten the wait for a prefill slot. The prefill side is a many-server queue
whose servers are the M prefill slots, whatever n: its waits, and the time to first token,
depend on M alone. The decode side (decode slots, the decode buffer's waits and abandonments)
depends on n given M. So the search finds the fewest prefill slots m* that meet the prefill-side
targets (``wait_*``, ``ttft_*``), never fewer than the plan's M, then the fewest GPUs n* >= m*
that meet every target with M = m*. The policy at the answer is the chosen policy with m* mixed
GPUs (the plan's M when m* equals it).

Every point is simulated on the same key (common random numbers) with latency counters
(:func:`jaxqueue.stats.latency`). A target counts as met only when its whole 95% interval is
inside it: a quantile's interval at most the target, the abandoned share's upper bound at most
its maximum. Each search doubles, then bisects: about ``2 log2`` of its answer runs. It assumes
that more slots or GPUs never make a target worse (the many-server regime), which it does not
check between the points it runs; the points are returned, so the curve can be read. The answer
is then simulated again on a fresh key, with one slot and one GPU fewer, to confirm it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .model import Model
from .stats import LATENCY_GRID

__all__ = ["METRICS", "Point", "answer", "evaluate", "parse_slo", "search", "traffic_model",
           "ttft_floor"]

#: Latency targets over all classes: the prefill side's ``wait_*`` and ``ttft_*``, the decode
#: buffer's ``decode_wait_*``.
METRICS = tuple(f"{what}_p{q}" for what in ("wait", "ttft", "decode_wait") for q in (50, 90, 99))
PREFILL_SIDE = ("wait", "ttft")


def parse_slo(text: str) -> tuple[str, float]:
    """``"ttft_p99=2"`` -> ``("ttft_p99", 2.0)``; a clear error naming the allowed metrics."""
    m = re.fullmatch(r"\s*([a-z0-9_]+)\s*=\s*([^\s]+)\s*", text)
    if not m or m.group(1) not in METRICS:
        raise ValueError(f"slo = {text!r} is invalid: must be METRIC=SECONDS with METRIC one "
                         f"of {', '.join(METRICS)}")
    try:
        value = float(m.group(2))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"slo = {text!r} is invalid: the target must be a number of seconds "
                         "> 0")
    return m.group(1), value


def traffic_model(model: Model, traffic: float, n: int) -> Model:
    """``model`` at n GPUs carrying ``traffic`` requests per second in all, in its mix."""
    lam = np.asarray(model.lambda_, np.float64)
    return model.replace(lambda_=traffic * lam / lam.sum() / n)


def ttft_floor(model: Model, metric: str) -> float | None:
    """For a ``ttft_pQ`` metric, the Q-th percentile of the prefill time alone (exponential of
    rate ``mu_p,i`` for a class-i request, classes in their arrival shares): the limit of the
    time to first token as the waits vanish, below which no capacity meets the target. None for
    the other metrics (whose limit is 0)."""
    what, q = metric.rsplit("_p", 1)
    if what != "ttft":
        return None
    lam = np.asarray(model.lambda_, np.float64)
    w, mu = lam / lam.sum(), np.asarray(model.mu_p, np.float64)
    level = int(q) / 100

    def cdf(t):
        return float(w @ -np.expm1(-mu * t))

    low, high = 0.0, 1.0
    while cdf(high) < level:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < level else (low, mid)
    return high


@dataclasses.dataclass
class Point:
    """One evaluated (n, m): whether the targets checked are met, and what was measured
    (``metrics``: each target's quantile ``{value, low, high}`` in seconds; ``abandon``: the
    share of arrivals that abandoned, ``{mean, high}``; ``revenue``: bundled revenue per GPU
    per second ``{mean, ci95}``; ``planned_mixed``: the plan's M at this n)."""

    n: int
    mixed: int
    planned_mixed: int
    ok: bool
    failing: list[str]
    metrics: dict[str, dict[str, float | None]]
    abandon: dict[str, float]
    revenue: dict[str, float | None]
    events: int
    seconds: float


def evaluate(key, model: Model, traffic: float, n: int, mixed: int | None, *, policy: str,
             slos: dict[str, float], max_abandon: float | None, reps: int, horizon: float,
             warmup: float, devices=None, only_prefill: bool = False) -> Point:
    """Simulates ``policy`` at n GPUs, ``mixed`` of them mixed (the plan's M when None), with
    latency counters, and checks the targets (with ``only_prefill``, the prefill side's)."""
    import equinox as eqx
    import jax.numpy as jnp

    from . import policies, stats
    from .driver import simulate
    from .policies.pooled import Pooled

    m = traffic_model(model, traffic, n)
    system, _ = policies.build(policy, m, n)
    if type(system) is not Pooled:
        raise ValueError(f"policy = {policy!r} is invalid for capacity: must be a pooled policy "
                         "with latency counters (gate-and-route, fg-sp, prioritize-and-route)")
    planned = int(system.M)
    mixed = planned if mixed is None else int(mixed)
    system = eqx.tree_at(lambda s: s.M, system, jnp.asarray(mixed, system.M.dtype))
    system = dataclasses.replace(system, wait_grid=LATENCY_GRID)
    run = simulate(key, system, reps=reps, horizon=horizon, warmup=warmup, devices=devices)
    lat = stats.latency(run, LATENCY_GRID)
    metrics, failing = {}, []
    for name in sorted(slos):
        what, q = name.rsplit("_p", 1)
        quant = lat[what]["quantiles"][int(q) / 100]
        row = {k: (float(v[-1]) if np.isfinite(v[-1]) else None) for k, v in quant.items()}
        metrics[name] = row
        if only_prefill and what not in PREFILL_SIDE:
            continue
        if row["high"] is None or row["high"] > slos[name]:
            failing.append(name)
    keep = run.collected
    gone = (run.count("prefill_abandon") + run.count("decode_abandon"))[keep].sum(axis=1)
    came = run.count("arrivals")[keep].sum(axis=1).astype(np.float64)
    share = gone.sum() / came.sum()
    resid = gone - share * came
    se = math.sqrt((resid ** 2).sum() * len(came) / max(len(came) - 1, 1)) / came.sum()
    abandon = {"mean": float(share), "high": float(share + 1.96 * se)}
    if not only_prefill and max_abandon is not None and abandon["high"] > max_abandon:
        failing.append("abandon")
    rev = stats.summarize_pooled(run, m, n)["revenue_per_gpu"]["bundled"]
    return Point(n=n, mixed=mixed, planned_mixed=planned, ok=not failing, failing=failing,
                 metrics=metrics, abandon=abandon,
                 revenue={"mean": rev["mean"], "ci95": rev["ci95"]}, events=int(run.events),
                 seconds=float(run.wall_seconds + run.compile_seconds))


def search(check: Callable[[int], Point], *, low_end: int, high_end: int
           ) -> tuple[int, dict[int, Point]]:
    """The smallest x in ``[low_end, high_end]`` with ``check(x).ok``, by doubling from
    ``low_end`` then bisection, and every point evaluated. Raises when even ``high_end``
    fails."""
    if not 1 <= low_end <= high_end:
        raise ValueError(f"the search range [{low_end}, {high_end}] is empty")
    seen: dict[int, Point] = {}

    def ok(x: int) -> bool:
        if x not in seen:
            seen[x] = check(x)
        return seen[x].ok

    low, high = low_end - 1, low_end  # low: the largest x known to fail (none yet)
    while not ok(high):
        if high >= high_end:
            raise ValueError(f"the targets are not met even at {high_end} (failing: "
                             f"{', '.join(seen[high].failing)}): raise --max-gpus, or loosen "
                             "the targets")
        low, high = high, min(2 * high, high_end)
    while high - low > 1:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid
    return high, seen


def answer(model: Model, traffic: float, *, policy: str, slos: dict[str, float],
           max_abandon: float | None, reps: int, horizon: float, warmup: float, seed: int,
           n_max: int = 100_000, devices=None,
           notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The two searches (on key ``seed``), then the answer simulated again on a fresh key
    (``seed + 1``) with one mixed GPU fewer and one GPU fewer, each of which should fail."""
    import jax

    if not slos and max_abandon is None:
        raise ValueError("no target: give at least one --slo or --max-abandon")
    if not (math.isfinite(traffic) and traffic > 0):
        raise ValueError(f"traffic = {traffic!r} is invalid: must be requests per second > 0")
    if max_abandon is not None and not 0 < max_abandon < 1:
        raise ValueError(f"max_abandon = {max_abandon!r} is invalid: must be in (0, 1)")
    for name, target in slos.items():
        floor = ttft_floor(model, name)
        if floor is not None and target <= floor:
            raise ValueError(f"slo {name} = {target:g} s cannot be met with any capacity: as "
                             f"the waits vanish the time to first token tends to the prefill "
                             f"alone, whose p{name.rsplit('_p', 1)[1]} is {floor:.4g} s in "
                             f"this mix (scenario {model.name})")
    kw = dict(policy=policy, slos=slos, max_abandon=max_abandon, reps=reps, horizon=horizon,
              warmup=warmup, devices=devices)
    key = jax.random.key(seed)

    def say(point: Point) -> Point:
        if notify:
            verdict = "meets" if point.ok else "fails " + ", ".join(point.failing)
            notify(f"n = {point.n}, mixed = {point.mixed}: {verdict} ({point.seconds:.0f} s)")
        return point

    # The prefill side, at a size whose plan admits everything (the plan's M stops growing):
    # the fewest slots from the plan's M up.
    from . import policies

    planned = int(policies.build(policy, traffic_model(model, traffic, n_max), n_max)[0].M)
    prefill_slos = any(k.rsplit("_p", 1)[0] in PREFILL_SIDE for k in slos)
    if prefill_slos:
        mixed, slot_points = search(
            lambda m: say(evaluate(key, model, traffic, max(m, 1) * 4 + 8, m, only_prefill=True,
                                   **kw)), low_end=max(planned, 1), high_end=n_max)
    else:
        mixed, slot_points = planned, {}
    # The decode side: the fewest GPUs with that many mixed.
    best, gpu_points = search(lambda n: say(evaluate(key, model, traffic, n, mixed, **kw)),
                              low_end=mixed, high_end=n_max)
    fresh = jax.random.key(seed + 1)
    confirm = {"answer": evaluate(fresh, model, traffic, best, mixed, **kw)}
    if best > mixed:
        confirm["one_gpu_fewer"] = evaluate(fresh, model, traffic, best - 1, mixed, **kw)
    if prefill_slos and mixed > max(planned, 1):
        confirm["one_mixed_fewer"] = evaluate(fresh, model, traffic, best, mixed - 1, **kw)
    below = gpu_points.get(best - 1)
    return {
        "scenario": model.name, "policy": policy, "traffic": traffic, "slos": slos,
        "max_abandon": max_abandon, "reps": reps, "horizon": horizon, "warmup": warmup,
        "seed": seed, "gpus": best, "mixed_gpus": mixed, "planned_mixed_gpus": planned,
        "binding_at_one_gpu_fewer": below.failing if below is not None else [],
        "slot_points": [dataclasses.asdict(slot_points[m]) for m in sorted(slot_points)],
        "gpu_points": [dataclasses.asdict(gpu_points[n]) for n in sorted(gpu_points)],
        "confirmation": {k: dataclasses.asdict(v) for k, v in confirm.items()},
        "confirmed": confirm["answer"].ok and all(
            not v.ok for k, v in confirm.items() if k != "answer"),
    }
