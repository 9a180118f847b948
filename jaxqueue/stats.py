"""Summaries of simulated replications: means with 95% confidence half-widths, per-GPU metrics.

Confidence intervals use Student's t quantile over replications (independent by construction),
so they stay honest for a handful of seeds. One replication has no interval: its ``ci95`` is
None in the summaries (NaN from :func:`mean_ci`). Only replications that collected statistics
(an interrupted run may stop some inside the warm-up) enter a summary.

The achieved service-level indicators (SLIs, paper Sec. 5) of each replication are computed from
its time averages, and summarized like every other quantity:

- ``tpot_formula``: the paper's slot-weighted time per output token
  ``TPOT(X) = [tau (B-1) X + (1/gamma) B (1-X)] / [(B-1) X + B (1-X)]`` at the simulated prefill
  occupancy ``X = sum_i x_i`` per GPU: what the SLI-aware LP constrains;
- ``tpot_experienced``: the seconds per output token of the decodes actually in service,
  weighted by their occupancy, ``sum_i (y_m,i tau + y_s,i / gamma) / sum_i (y_m,i + y_s,i)``;
- ``prefill_fairness``: ``max_ij (x_i - x_j)``; ``decode_fairness``: ``max_ij (y_s,i - y_s,j)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats as _st

from .driver import Run
from .model import Model

__all__ = ["GOODPUT_METRICS", "LATENCY_GRID", "SLI_KEYS", "achieved_sli", "goodput", "latency",
           "mean_ci", "per_token_times", "ratio_estimate", "summarize_pooled", "tpot"]


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean over replications and the half-width of its 95% t-interval (NaN for one value; exactly
    0 where every replication has the same value, which a standard deviation computed in
    floating point may leave at round-off level, e.g. 2.8e-19)."""
    values = np.asarray(values, np.float64)
    r = values.shape[axis]
    mean = values.mean(axis=axis)
    if r < 2:
        return mean, np.full_like(mean, np.nan)
    sem = values.std(axis=axis, ddof=1) / np.sqrt(r)
    same = np.ptp(values, axis=axis) == 0
    return mean, np.where(same, 0.0, _st.t.ppf(0.975, r - 1) * sem)


def _number(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _pack(values: np.ndarray) -> dict[str, float | None] | list[dict[str, float | None]]:
    """``{mean, ci95}`` over replications (axis 0); None where undefined (one replication has
    no interval; a rate of nothing has no mean)."""
    values = np.asarray(values, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if values.shape[0] >= 2 and np.all(np.isfinite(values)):
            mean, ci = mean_ci(values)
        else:  # NaN replications (e.g. a wait with no job) are left out, quietly
            mean, ci = _nan_mean_ci(values)
    if np.ndim(mean) == 0:
        return {"mean": _number(mean), "ci95": _number(ci)}
    return [{"mean": _number(m), "ci95": _number(c)} for m, c in zip(mean, ci, strict=True)]


def _nan_mean_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mean_ci` over the finite entries of each column (NaN where fewer than 1 or 2)."""
    flat = values.reshape(values.shape[0], -1)
    means, cis = [], []
    for column in flat.T:
        finite = column[np.isfinite(column)]
        if finite.size == 0:
            means.append(np.nan)
            cis.append(np.nan)
        else:
            m, c = mean_ci(finite)
            means.append(float(m))
            cis.append(float(c))
    shape = values.shape[1:]
    return np.asarray(means).reshape(shape), np.asarray(cis).reshape(shape)


def tpot(model: Model, mixed_fraction):
    """The paper's slot-weighted time per output token (Sec. 5) at prefill occupancy
    ``X = sum_i x_i`` per GPU, in seconds (:meth:`jaxqueue.Model.tpot`), as a float64 array."""
    return np.asarray(model.tpot(np.asarray(mixed_fraction, np.float64)), np.float64)


#: The achieved SLIs (see the module docstring), in the order they are reported.
SLI_KEYS = ("tpot_formula", "tpot_experienced", "prefill_fairness", "decode_fairness")


def achieved_sli(q: dict[str, np.ndarray], model: Model) -> dict[str, np.ndarray]:
    """Per-replication achieved SLIs ``(R,)`` from :func:`per_gpu`'s time averages."""
    x, y_m, y_s = q["x"], q["y_mixed"], q["y_solo"]
    decoding = np.sum(y_m + y_s, axis=1)
    seconds = np.sum(y_m * float(model.tau) + y_s / float(model.gamma), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        experienced = np.where(decoding > 0, seconds / decoding, np.nan)
    return {
        "tpot_formula": tpot(model, np.sum(x, axis=1)),
        "tpot_experienced": experienced,
        "prefill_fairness": np.ptp(x, axis=1),
        "decode_fairness": np.ptp(y_s, axis=1),
    }


def per_gpu(run: Run, model: Model, n: int) -> dict[str, np.ndarray]:
    """Per-replication, per-GPU quantities ``(R, I)`` and revenues ``(R,)`` of a pooled-type run."""
    completion = (run.count("mixed_done") + run.count("solo_done")) / run.window[:, None] / n
    prefill = run.rate("prefill_done") / n
    with np.errstate(divide="ignore", invalid="ignore"):
        abandoned = ((run.count("prefill_abandon") + run.count("decode_abandon"))
                     / run.count("arrivals"))
    out = {
        "abandonment": abandoned,
        "x": run.level("x") / n,
        "y_mixed": run.level("y_m") / n,
        "y_solo": run.level("y_s") / n,
        "q_prefill": run.level("q_p") / n,
        "q_decode": run.level("q_d") / n,
        "arrival_rate": run.rate("arrivals") / n,
        "completion_rate": completion,
        "prefill_completion_rate": prefill,
        "prefill_abandonment_rate": run.rate("prefill_abandon") / n,
        "decode_abandonment_rate": run.rate("decode_abandon") / n,
    }
    # Revenue per GPU per second (paper Eq. 21-23), two estimators of each: the prices of the
    # completions counted, or the time integral of the completion rate of the jobs in service.
    # Both are consistent; the integral of the *decode* completion rate has much the smaller
    # variance (measured: 3-10x smaller sd), while for prefill completions the counts do
    # slightly better. The headline estimators use the better part of each.
    w, prompt, output = (np.asarray(a, np.float64) for a in (
        model.w, float(model.c_p) * np.asarray(model.P), float(model.c_d) * np.asarray(model.D)))
    # With phase-type service laws the rate at which services end is mu times the exit levels
    # (jaxqueue.policies.common.EXIT_LEVELS), not mu times the occupancy.
    mu_p, mu_m, mu_s = (np.asarray(a, np.float64) for a in (model.mu_p, model.mu_m, model.mu_s))

    def ending(name, occupancy):
        return run.level(f"{name}_exit") / n if f"{name}_exit" in run.level_names else occupancy

    decode_rate = ending("y_m", out["y_mixed"]) * mu_m + ending("y_s", out["y_solo"]) * mu_s
    out["revenue_bundled_counted"] = completion @ w
    out["revenue_bundled_integral"] = decode_rate @ w
    out["revenue_separate_counted"] = prefill @ prompt + completion @ output
    out["revenue_separate_integral"] = ((ending("x", out["x"]) * mu_p) @ prompt
                                        + decode_rate @ output)
    out["revenue_bundled"] = out["revenue_bundled_integral"]
    out["revenue_separate"] = prefill @ prompt + decode_rate @ output
    # Little's law: mean wait = mean queue / rate into the queue.
    with np.errstate(divide="ignore", invalid="ignore"):
        out["prefill_wait"] = out["q_prefill"] / np.asarray(model.lambda_)
        out["decode_wait"] = np.where(prefill > 0, out["q_decode"] / prefill, np.nan)
    return out


CLASS_KEYS = ("arrival_rate", "abandonment", "x", "y_mixed", "y_solo", "q_prefill", "q_decode",
              "completion_rate", "prefill_completion_rate", "prefill_abandonment_rate",
              "decode_abandonment_rate", "prefill_wait", "decode_wait")


def summarize_pooled(run: Run, model: Model, n: int) -> dict[str, Any]:
    """``revenue_per_gpu`` (bundled and separate, the headline estimators), every revenue
    estimator in ``revenue_estimators``, the achieved SLIs in ``sli``, per-class
    ``{mean, ci95}`` entries, and ``replications``, the number summarized (those that collected
    statistics).

    Raises:
        ValueError: no replication collected statistics (a run interrupted in its warm-up).
    """
    keep = run.collected
    if not np.any(keep):
        raise ValueError("no statistics were collected: every replication stopped before the "
                         "end of its warm-up")
    if not np.all(keep):
        run = dataclasses.replace(run, **{f: getattr(run, f)[keep] for f in (
            "level_integrals", "tallies", "window", "time", "stock_start", "stock_end")})
    q = per_gpu(run, model, n)
    classes = []
    packed = {k: _pack(q[k]) for k in CLASS_KEYS}
    for i, name in enumerate(model.class_names):
        entry: dict[str, Any] = {"name": name}
        entry.update({k: packed[k][i] for k in CLASS_KEYS})
        classes.append(entry)
    sli = achieved_sli(q, model)
    return {
        "replications": int(run.window.shape[0]),
        "sli": {k: _pack(sli[k]) for k in SLI_KEYS},
        "revenue_per_gpu": {"bundled": _pack(q["revenue_bundled"]),
                            "separate": _pack(q["revenue_separate"])},
        "revenue_estimators": {
            f"{pricing}_{kind}": _pack(q[f"revenue_{pricing}_{kind}"])
            for pricing in ("bundled", "separate") for kind in ("counted", "integral")},
        "classes": classes,
    }


#: The times at which ``simulate --latency`` and ``capacity`` count requests: 0, then 145 times
#: from 1 ms to 1,000 s a factor of about 1.10 apart (a quantile's interval spans at least one
#: step; 72 times, a factor 1.21, ran 1.4x faster with intervals about twice as wide).
LATENCY_GRID = (0.0, *(1e-3 * 10.0 ** (6.0 * i / 144) for i in range(145)))


def latency(run: Run, grid, quantiles=(0.5, 0.9, 0.99), per_token=None) -> dict[str, Any]:
    """The laws of the prefill wait and of the time to first token (TTFT) of the requests
    started in the statistics window, and of the decode buffer's wait, from a run of a system
    with a ``wait_grid`` (``grid``, the same times): per class and for all classes together
    (the last column). With end-to-end counters (a pooled system with ``end_to_end``), also
    the law of the end-to-end latency of the decodes started in the window, and with
    ``per_token`` (the seconds per output token on a mixed and on a solo GPU, ``(tau, 1 /
    gamma)``: :func:`per_token_times`) that of their time per output token.

    At each grid time the distribution function is a ratio over replications (requests whose
    latency was at most t, over requests started), with the delta-method standard error of a
    ratio estimator. A quantile's estimate interpolates linearly between the two grid times
    where the estimate crosses the level. Its 95% interval inverts the pointwise 95% bands at
    the grid times themselves: from the last grid time where the upper band is still below the
    level to the first where the lower band reaches it. The interval therefore spans at least
    one grid step; no interpolation enters it. A quantile the grid does not reach is +inf.

    A request's time per output token is its GPU's per-token time, ``tau`` on a mixed GPU and
    ``1 / gamma`` on a solo one (a decode emits one token per iteration there): its law has
    those two atoms only, weighted by the shares of decodes started on each side. Its
    distribution function is read at those two times (same ratio estimator), and a quantile is
    the generalized inverse, the first atom where the function reaches the level, with no
    interpolation (there is no mass between the atoms); its interval's ends are the atoms where
    the upper and the lower pointwise 95% bands first reach it.

    Returns:
        ``{"wait": ..., "ttft": ..., "decode_wait": ...}`` (the last: the wait in the decode
        buffer of the decodes started), each ``{"cdf", "se"}`` of shape ``(K, I + 1)`` and
        ``quantiles`` ``{q: {"value", "low", "high"}}`` (arrays of length ``I + 1``), and
        ``started`` and ``decodes_started``, the prefills and decodes started per class and in
        all. With end-to-end counters, ``"e2e"`` alike, and with ``per_token``, ``"tpot"``
        alike with ``times``, the two per-token times in increasing order, in place of the
        grid (``cdf`` and ``se`` of shape ``(2, I + 1)``).
    """
    grid = np.asarray(grid, np.float64)
    if "prefill_wait_le_0" not in run.tally_names:
        raise ValueError("this run has no latency counters: simulate a pooled system built with "
                         "a wait_grid (jaxqueue simulate --latency)")
    live = run.collected

    def by_class(name):
        a = np.asarray(run.count(name), np.float64)[live]
        return np.concatenate([a, a.sum(axis=1, keepdims=True)], axis=1)  # (R, I + 1)

    def law(hits, started):
        """Distribution function and standard error at each time, from the hits ``(K, R, I+1)``
        of the requests ``started`` ``(R, I+1)``."""
        return ratio_estimate(hits, started)

    kinds = [("wait", "prefill_wait_le", "prefill_start"), ("ttft", "ttft_le", "prefill_start"),
             ("decode_wait", "decode_wait_le", "decode_start")]
    if "e2e_le_0" in run.tally_names:
        kinds.append(("e2e", "e2e_le", "decode_start"))
    out: dict[str, Any] = {}
    for what, prefix, denominator in kinds:
        started = by_class(denominator)
        out["started" if denominator == "prefill_start" else "decodes_started"] = started.sum(0)
        hits = np.stack([by_class(f"{prefix}_{k}") for k in range(grid.size)])  # (K, R, I+1)
        cdf, se = law(hits, started)
        qs = {}
        for q in quantiles:
            qs[q] = {"value": _crossing(grid, cdf, q),
                     "low": _crossing(grid, cdf + 1.96 * se, q, side="below"),
                     "high": _crossing(grid, cdf - 1.96 * se, q, side="above")}
        out[what] = {"cdf": cdf, "se": se, "quantiles": qs}
    if per_token is not None and "decode_start_solo" in run.tally_names:
        started = by_class("decode_start")
        solo = by_class("decode_start_solo")
        mixed_time, solo_time = (float(v) for v in per_token)
        times = np.array(sorted({mixed_time, solo_time}))
        # Requests whose per-token time is at most each atom: the side(s) at or below it.
        hits = np.stack([solo * (solo_time <= a) + (started - solo) * (mixed_time <= a)
                         for a in times])
        cdf, se = law(hits, started)
        qs = {}
        for q in quantiles:
            qs[q] = {"value": _crossing(times, cdf, q, side="above"),
                     "low": _crossing(times, cdf + 1.96 * se, q, side="above"),
                     "high": _crossing(times, cdf - 1.96 * se, q, side="above")}
        out["tpot"] = {"times": times, "cdf": cdf, "se": se, "quantiles": qs}
    return out


#: What a ``goodput`` target may bound: the prefill wait, the time to first token, the decode
#: buffer's wait, the end-to-end latency (their counter prefixes) and the time per output token.
GOODPUT_METRICS = {"wait": "prefill_wait_le", "ttft": "ttft_le", "decode_wait": "decode_wait_le",
                   "e2e": "e2e_le", "tpot": None}


def goodput(run: Run, grid, targets: dict[str, float], gpus: int, per_token=None
            ) -> dict[str, Any]:
    """The requests that meet each latency target: their share of the requests that arrived in
    the statistics window, and their rate (per GPU per second), per class and for all classes
    (the last column), from a run of a system with a ``wait_grid`` (``grid``) holding every
    target's time, so that the count at the target is exact, not read between grid times.

    A request meets ``ttft <= s`` when its prefill started within ``s`` seconds of its arrival
    plus its prefill (counted when the prefill starts), ``e2e <= s`` when its decode ends within
    ``s`` of its arrival, ``tpot <= s`` when the GPU it decodes on makes a token every ``s``
    seconds or faster (``per_token``: :func:`per_token_times`; counted at the decode's start),
    and likewise ``wait`` and ``decode_wait``. A request that abandons meets none. The share
    is a ratio estimator over replications (requests meeting the target over arrivals, both in
    the window; in a long window the requests still in the system at its ends are a vanishing
    part of either) with its delta-method standard error; the rate is a mean over replications.
    Each target is counted on its own: the share meeting two targets at once is not measured
    (the counters do not follow one request from its first token to its last).

    Returns:
        ``{metric: {"target", "share": {"mean", "ci95"}, "per_gpu_per_second": {"mean",
        "ci95"}}}``, arrays of length ``I + 1``.
    """
    grid = np.asarray(grid, np.float64)
    live = run.collected

    def by_class(name):
        a = np.asarray(run.count(name), np.float64)[live]
        return np.concatenate([a, a.sum(axis=1, keepdims=True)], axis=1)  # (R, I + 1)

    arrivals = by_class("arrivals")
    window = np.asarray(run.window, np.float64)[live][:, None]
    out: dict[str, Any] = {}
    for metric, seconds in targets.items():
        if metric not in GOODPUT_METRICS:
            raise ValueError(f"goodput metric {metric!r} is invalid: must be one of "
                             f"{', '.join(GOODPUT_METRICS)}")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"goodput target {metric} = {seconds!r} is invalid: must be a "
                             "number of seconds > 0")
        prefix = GOODPUT_METRICS[metric]
        if prefix is None:
            if per_token is None or "decode_start_solo" not in run.tally_names:
                raise ValueError("a tpot target needs the end-to-end counters (a pooled system "
                                 "with end_to_end) and per_token")
            mixed_time, solo_time = (float(v) for v in per_token)
            solo, started = by_class("decode_start_solo"), by_class("decode_start")
            meeting = solo * (solo_time <= seconds) + (started - solo) * (mixed_time <= seconds)
        else:
            if f"{prefix}_0" not in run.tally_names:
                raise ValueError(f"this run has no {metric} counters: simulate a pooled system "
                                 "with a wait_grid (and end_to_end for e2e)")
            at = np.flatnonzero(grid == seconds)
            if at.size == 0:
                raise ValueError(f"goodput target {metric} = {seconds} s is not one of the run's "
                                 "grid times: add it to the wait_grid, so that it is counted "
                                 "exactly")
            meeting = by_class(f"{prefix}_{int(at[0])}")
        share, se = ratio_estimate(meeting, arrivals)
        rate, half = mean_ci(meeting / window / gpus)
        out[metric] = {"target": float(seconds), "share": {"mean": share, "ci95": 1.96 * se},
                       "per_gpu_per_second": {"mean": rate, "ci95": half}}
    return out


def ratio_estimate(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ratio estimator over replications, ``sum_r num / sum_r den``, and its delta-method
    standard error. ``den`` is ``(R, C)``; ``num`` is ``(..., R, C)`` (several numerators over
    one denominator); both results are ``(..., C)`` (NaN where ``den`` sums to 0)."""
    total = den.sum(axis=0)
    reps = den.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = num.sum(axis=-2) / total
        resid = num - ratio[..., None, :] * den
        se = np.sqrt((resid ** 2).sum(axis=-2) * reps / max(reps - 1, 1)) / total
    return ratio, se


def per_token_times(model) -> tuple[float, float]:
    """The seconds per output token of a decode on a mixed GPU (``tau``, one token per mixed
    iteration) and on a solo GPU (``1 / gamma``), as :func:`latency`'s ``per_token``."""
    return float(model.tau), 1.0 / float(model.gamma)


def _crossing(grid: np.ndarray, cdf: np.ndarray, level: float, side: str = "interpolate"
              ) -> np.ndarray:
    """Per column of ``cdf`` (K, C), where it first reaches ``level``: interpolated linearly
    from the grid time below, or that grid time (``side="below"``; 0 when the first grid time
    already reaches it), or the first grid time that reaches it (``side="above"``); +inf when
    it never does; NaN for a column with no requests."""
    out = np.full(cdf.shape[1], np.inf)
    for c in range(cdf.shape[1]):
        if np.all(np.isnan(cdf[:, c])):  # no request of this column started: no law
            out[c] = np.nan
            continue
        f = np.maximum.accumulate(np.nan_to_num(cdf[:, c], nan=0.0))
        if not np.any(f >= level):
            continue
        k = int(np.argmax(f >= level))
        if side == "above" or (k == 0 and side == "interpolate"):
            out[c] = grid[k]
        elif side == "below":
            out[c] = grid[k - 1] if k > 0 else 0.0
        else:
            f0, f1 = f[k - 1], f[k]
            out[c] = grid[k - 1] + (grid[k] - grid[k - 1]) * (level - f0) / (f1 - f0)
    return out
