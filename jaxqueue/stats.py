"""Summaries of simulated replications: means with 95% confidence half-widths, per-GPU metrics.

Confidence intervals use Student's t quantile over replications (independent by construction),
so they stay honest for a handful of seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as _st

from .driver import Run
from .model import Model

__all__ = ["mean_ci", "summarize_pooled"]


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean over replications and the half-width of its 95% t-interval (NaN for one value)."""
    values = np.asarray(values, np.float64)
    r = values.shape[axis]
    mean = values.mean(axis=axis)
    if r < 2:
        return mean, np.full_like(mean, np.nan)
    sem = values.std(axis=axis, ddof=1) / np.sqrt(r)
    return mean, _st.t.ppf(0.975, r - 1) * sem


def _pack(values: np.ndarray) -> dict[str, float] | list[dict[str, float]]:
    mean, ci = mean_ci(values)
    if np.ndim(mean) == 0:
        return {"mean": float(mean), "ci95": float(ci)}
    return [{"mean": float(m), "ci95": float(c)} for m, c in zip(mean, ci, strict=True)]


def per_gpu(run: Run, model: Model, n: int) -> dict[str, np.ndarray]:
    """Per-replication, per-GPU quantities ``(R, I)`` and revenues ``(R,)`` of a pooled-type run."""
    completion = (run.count("mixed_done") + run.count("solo_done")) / run.window[:, None] / n
    prefill = run.rate("prefill_done") / n
    out = {
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
    mu_p, mu_m, mu_s = (np.asarray(a, np.float64) for a in (model.mu_p, model.mu_m, model.mu_s))
    decode_rate = out["y_mixed"] * mu_m + out["y_solo"] * mu_s
    out["revenue_bundled_counted"] = completion @ w
    out["revenue_bundled_integral"] = decode_rate @ w
    out["revenue_separate_counted"] = prefill @ prompt + completion @ output
    out["revenue_separate_integral"] = (out["x"] * mu_p) @ prompt + decode_rate @ output
    out["revenue_bundled"] = out["revenue_bundled_integral"]
    out["revenue_separate"] = prefill @ prompt + decode_rate @ output
    # Little's law: mean wait = mean queue / rate into the queue.
    with np.errstate(divide="ignore", invalid="ignore"):
        out["prefill_wait"] = out["q_prefill"] / np.asarray(model.lambda_)
        out["decode_wait"] = np.where(prefill > 0, out["q_decode"] / prefill, np.nan)
    return out


CLASS_KEYS = ("arrival_rate", "x", "y_mixed", "y_solo", "q_prefill", "q_decode", "completion_rate",
              "prefill_completion_rate", "prefill_abandonment_rate", "decode_abandonment_rate",
              "prefill_wait", "decode_wait")


def summarize_pooled(run: Run, model: Model, n: int) -> dict[str, Any]:
    """``revenue_per_gpu`` (bundled and separate, the headline estimators), every revenue
    estimator in ``revenue_estimators``, and per-class ``{mean, ci95}`` entries."""
    q = per_gpu(run, model, n)
    classes = []
    packed = {k: _pack(q[k]) for k in CLASS_KEYS}
    for i, name in enumerate(model.class_names):
        entry: dict[str, Any] = {"name": name}
        entry.update({k: packed[k][i] for k in CLASS_KEYS})
        classes.append(entry)
    return {
        "revenue_per_gpu": {"bundled": _pack(q["revenue_bundled"]),
                            "separate": _pack(q["revenue_separate"])},
        "revenue_estimators": {
            f"{pricing}_{kind}": _pack(q[f"revenue_{pricing}_{kind}"])
            for pricing in ("bundled", "separate") for kind in ("counted", "integral")},
        "classes": classes,
    }
