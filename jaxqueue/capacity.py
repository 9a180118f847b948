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
targets (``wait_*``, ``ttft_*``, and the share abandoning while waiting for prefill within
``max_abandon``), never fewer than the plan's M, then the fewest GPUs n* >= m*
that meet every target with M = m* (the decode side's ``decode_wait_*``, and the end-to-end
latency ``e2e_*`` and time per output token ``tpot_*``, which need both sides). The policy at
the answer is the chosen policy with m* mixed GPUs (the plan's M when m* equals it).

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

__all__ = ["METRICS", "POLICIES", "Point", "answer", "evaluate", "latency_floor", "parse_slo",
           "plot", "search", "traffic_model", "ttft_floor"]

#: Latency targets over all classes: the prefill side's ``wait_*`` and ``ttft_*``, the decode
#: buffer's ``decode_wait_*``, the end-to-end latency's ``e2e_*`` and the time per output
#: token's ``tpot_*``.
METRICS = tuple(f"{what}_p{q}" for what in ("wait", "ttft", "decode_wait", "e2e", "tpot")
                for q in (50, 90, 99))
PREFILL_SIDE = ("wait", "ttft")
#: The targets read from the end-to-end counters (``Pooled.end_to_end``), run only for them.
END_TO_END = ("e2e", "tpot")
#: The policies with latency counters (pooled, per-class or FCFS prefill rings).
POLICIES = ("gate-and-route", "fg-sp", "prioritize-and-route")


def parse_slo(text: str, class_names: tuple[str, ...] = ()) -> tuple[str, float]:
    """``"ttft_p99=2"`` -> ``("ttft_p99", 2.0)``, a target over all classes;
    ``"ttft_p99@decode-heavy=2"`` -> ``("ttft_p99@decode-heavy", 2.0)``, a target for one class
    (by its name in ``class_names``). A clear error names the allowed metrics and classes."""
    m = re.fullmatch(r"\s*([a-z0-9_]+)(?:@([^=]+?))?\s*=\s*([^\s]+)\s*", text)
    if not m or m.group(1) not in METRICS:
        raise ValueError(f"slo = {text!r} is invalid: must be METRIC=SECONDS or "
                         f"METRIC@CLASS=SECONDS with METRIC one of {', '.join(METRICS)}")
    cls = m.group(2)
    if cls is not None and cls not in class_names:
        raise ValueError(f"slo = {text!r} is invalid: class {cls!r} is not one of the "
                         f"scenario's classes ({', '.join(class_names)})")
    try:
        value = float(m.group(3))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"slo = {text!r} is invalid: the target must be a number of seconds "
                         "> 0")
    return (m.group(1) if cls is None else f"{m.group(1)}@{cls}"), value


def _target(name: str) -> tuple[str, int, str | None]:
    """``"ttft_p99@decode-heavy"`` -> ``("ttft", 99, "decode-heavy")``."""
    metric, _, cls = name.partition("@")
    what, q = metric.rsplit("_p", 1)
    return what, int(q), cls or None


def _column(model: Model, cls: str | None) -> int:
    """The column of :func:`jaxqueue.stats.latency`'s arrays for a class (-1: all classes)."""
    return -1 if cls is None else model.class_names.index(cls)


def traffic_model(model: Model, traffic: float, n: int) -> Model:
    """``model`` at n GPUs carrying ``traffic`` requests per second in all, in its mix."""
    lam = np.asarray(model.lambda_, np.float64)
    return model.replace(lambda_=traffic * lam / lam.sum() / n)


def ttft_floor(model: Model, metric: str) -> float | None:
    """For a ``ttft_pQ`` metric, :func:`latency_floor`; None for the other metrics."""
    return latency_floor(model, metric) if _target(metric)[0] == "ttft" else None


def latency_floor(model: Model, metric: str) -> float | None:
    """The limit of a metric's percentile as the waits vanish, below which no capacity meets a
    target on it (over all classes, classes in their arrival shares; ``@CLASS``: that
    class's):

    - ``ttft_pQ``: the Q-th percentile of the prefill time alone (exponential of rate
      ``mu_p,i`` for a class-i request);
    - ``e2e_pQ``: that of the prefill plus a decode on the faster side (rate ``max(mu_s,i,
      mu_m,i)``), the two independent;
    - ``tpot_pQ``: the smaller per-token time, ``min(tau, 1 / gamma)`` (a target below it is
      unmet; equal to it, met once enough decodes run on the faster side).

    None for the other metrics (whose limit is 0)."""
    what, q, cls = _target(metric)
    if what == "tpot":
        return min(float(model.tau), 1.0 / float(model.gamma))
    if what not in ("ttft", "e2e"):
        return None
    lam = np.asarray(model.lambda_, np.float64)
    w, mu = lam / lam.sum(), np.asarray(model.mu_p, np.float64)
    nu = np.maximum(np.asarray(model.mu_s, np.float64), np.asarray(model.mu_m, np.float64))
    if cls is not None:
        w = (np.arange(w.size) == _column(model, cls)).astype(np.float64)
    level = q / 100

    def cdf(t):
        if what == "ttft":
            return float(w @ -np.expm1(-mu * t))
        # Exp(mu) + Exp(nu): 1 - (nu e^{-mu t} - mu e^{-nu t}) / (nu - mu), or the Erlang-2
        # law when the rates are equal.
        same = np.isclose(mu, nu)
        gap = np.where(same, 1.0, nu - mu)
        apart = 1.0 - (nu * np.exp(-mu * t) - mu * np.exp(-nu * t)) / gap
        erlang = 1.0 - np.exp(-mu * t) * (1.0 + mu * t)
        return float(w @ np.where(same, erlang, apart))

    low, high = 0.0, 1.0
    while cdf(high) < level:
        if high > 1e12:  # no mass (cannot happen with rates > 0): never loop forever
            raise ValueError(f"the floor's p{q} is not finite for {metric}")
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
             warmup: float, devices=None, only_prefill: bool = False, arrivals=None) -> Point:
    """Simulates ``policy`` at n GPUs, ``mixed`` of them mixed (the plan's M when None), with
    latency counters, and checks the targets (with ``only_prefill``, the prefill side's). With
    ``arrivals`` (a :class:`jaxqueue.replay.ArrivalTrace` carrying ``traffic`` in the model's
    mix) the requests arrive at its times instead of as Poisson streams."""
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
    end_to_end = any(_target(k)[0] in END_TO_END for k in slos)
    system = dataclasses.replace(system, wait_grid=LATENCY_GRID, end_to_end=end_to_end,
                                 arrivals=arrivals)
    run = simulate(key, system, reps=reps, horizon=horizon, warmup=warmup, devices=devices)
    lat = stats.latency(run, LATENCY_GRID, per_token=stats.per_token_times(m))
    metrics, failing = {}, []
    for name in sorted(slos):
        what, q, cls = _target(name)
        quant = lat[what]["quantiles"][q / 100]
        col = _column(model, cls)
        row = {k: (float(v[col]) if np.isfinite(v[col]) else None) for k, v in quant.items()}
        metrics[name] = row
        if only_prefill and what not in PREFILL_SIDE:
            continue
        if row["high"] is None or row["high"] > slos[name]:
            failing.append(name)
    keep = run.collected
    came = run.count("arrivals")[keep].sum(axis=1).astype(np.float64)

    def shared(gone):
        """The share of arrivals that ``gone`` counts, and the upper end of its 95% interval."""
        share, se = stats.ratio_estimate(gone[:, None], came[:, None])
        return float(share[0]), float(share[0] + 1.96 * se[0])

    mean, high = shared((run.count("prefill_abandon") + run.count("decode_abandon"))[keep]
                        .sum(axis=1))
    prefill_mean, prefill_high = shared(run.count("prefill_abandon")[keep].sum(axis=1))
    abandon = {"mean": mean, "high": high, "prefill_mean": prefill_mean,
               "prefill_high": prefill_high}
    # The prefill side alone is checked against the prefill queue's share: it depends on the
    # mixed GPUs only, and the whole share is at least it.
    reach = abandon["prefill_high" if only_prefill else "high"]
    if max_abandon is not None and reach > max_abandon:
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
           n_max: int = 100_000, devices=None, compare: bool = False,
           notify: Callable[[str], None] | None = None, arrivals=None) -> dict[str, Any]:
    """The two searches (on key ``seed``), then the answer simulated again on a fresh key
    (``seed + 1``) with one mixed GPU fewer and one GPU fewer, each of which should fail. With
    ``compare``, the other pooled policies run on the answer's GPUs (n* of them, m* mixed) on the
    fresh key too, each checked against the same targets. With ``arrivals``, every point replays
    them (``traffic`` and the model's mix must be theirs: :func:`jaxqueue.replay.from_trace`
    with one GPU)."""
    import jax

    if not slos and max_abandon is None:
        raise ValueError("no target: give at least one --slo or --max-abandon")
    if not (math.isfinite(traffic) and traffic > 0):
        raise ValueError(f"traffic = {traffic!r} is invalid: must be requests per second > 0")
    if max_abandon is not None and not 0 < max_abandon < 1:
        raise ValueError(f"max_abandon = {max_abandon!r} is invalid: must be in (0, 1)")
    for name, target in slos.items():
        what, q, cls = _target(name)
        floor = latency_floor(model, name)
        if floor is None or (target > floor if what != "tpot" else target >= floor):
            continue
        where = (f"for class {cls}" if cls else "in this mix") + f" (scenario {model.name})"
        if what == "tpot":
            raise ValueError(f"slo {name} = {target:g} s cannot be met with any capacity: no "
                             f"decode emits a token faster than every {floor:.4g} s (the "
                             f"faster GPUs' time per output token, scenario {model.name})")
        limit = ("the time to first token tends to the prefill alone" if what == "ttft" else
                 "the end-to-end latency tends to the prefill plus a decode on the faster "
                 "GPUs")
        raise ValueError(f"slo {name} = {target:g} s cannot be met with any capacity: as the "
                         f"waits vanish {limit}, whose p{q} is {floor:.4g} s {where}")
    kw = dict(policy=policy, slos=slos, max_abandon=max_abandon, reps=reps, horizon=horizon,
              warmup=warmup, devices=devices, arrivals=arrivals)
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
    prefill_side = any(_target(k)[0] in PREFILL_SIDE for k in slos) or max_abandon is not None
    if prefill_side:
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
    if prefill_side and mixed > max(planned, 1):
        confirm["one_mixed_fewer"] = evaluate(fresh, model, traffic, best, mixed - 1, **kw)
    others = {}
    if compare:
        for other in POLICIES:
            if other != policy:
                others[other] = say(evaluate(fresh, model, traffic, best, mixed,
                                             **{**kw, "policy": other}))
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
        "others": {k: dataclasses.asdict(v) for k, v in others.items()},
    }


def plot(path, o: dict[str, Any]) -> None:
    """The cost curve of the search over GPUs (m* mixed): revenue per GPU, each latency target's
    quantile and the abandoned share against n, with their 95% intervals and the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = o["gpu_points"]
    n = np.array([p["n"] for p in points])
    panels = ["revenue", *o["slos"], "abandon"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        if name == "revenue":
            mean = np.array([p["revenue"]["mean"] for p in points])
            err = np.array([p["revenue"]["ci95"] or 0.0 for p in points])
            ax.errorbar(n, mean, yerr=err, fmt="o-", ms=3, capsize=2)
            ax.set_ylabel("bundled revenue per GPU per second")
        elif name == "abandon":
            mean = np.array([100 * p["abandon"]["mean"] for p in points])
            high = np.array([100 * p["abandon"]["high"] for p in points])
            ax.errorbar(n, mean, yerr=[np.zeros_like(mean), high - mean], fmt="o-", ms=3,
                        capsize=2)
            if o["max_abandon"] is not None:
                ax.axhline(100 * o["max_abandon"], color="k", ls="--", lw=1, label="target")
                ax.legend(fontsize=7)
            ax.set_ylabel("abandoned, % of arrivals (upper 95%)")
        else:
            rows = [p["metrics"][name] for p in points]
            value = np.array([np.nan if r["value"] is None else r["value"] for r in rows])
            low = np.array([np.nan if r["low"] is None else r["low"] for r in rows])
            high = np.array([np.inf if r["high"] is None else r["high"] for r in rows])
            top = np.where(np.isfinite(high), high, np.nanmax(np.r_[value, o["slos"][name]]) * 2)
            ax.errorbar(n, value, yerr=[np.nan_to_num(value - low), top - value], fmt="o-",
                        ms=3, capsize=2)
            ax.axhline(o["slos"][name], color="k", ls="--", lw=1, label="target")
            ax.set_ylim(bottom=0)
            ax.set_ylabel(f"{name} (s)")
            ax.legend(fontsize=7)
        ax.axvline(o["gpus"], color="C3", lw=1, alpha=0.6)
        ax.set_xlabel(f"GPUs n ({o['mixed_gpus']} mixed)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{o['scenario']} / {o['policy']}, {o['traffic']:g} requests/s: answer "
                 f"n* = {o['gpus']} (red)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
