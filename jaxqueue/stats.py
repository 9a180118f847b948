"""Summaries of simulated replications: means with 95% confidence half-widths, per-GPU metrics.

Confidence intervals use Student's t quantile over replications (independent by construction),
so they stay honest for a handful of seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as _st

from .model import Model
from .simulate import Run

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
    w = np.asarray(model.w, np.float64)
    out["revenue_bundled"] = completion @ w
    out["revenue_separate"] = prefill @ (float(model.c_p) * np.asarray(model.P)) + completion @ (
        float(model.c_d) * np.asarray(model.D))
    # Little's law: mean wait = mean queue / rate into the queue.
    with np.errstate(divide="ignore", invalid="ignore"):
        out["prefill_wait"] = out["q_prefill"] / np.asarray(model.lambda_)
        out["decode_wait"] = np.where(prefill > 0, out["q_decode"] / prefill, np.nan)
    return out


CLASS_KEYS = ("x", "y_mixed", "y_solo", "q_prefill", "q_decode", "completion_rate",
              "prefill_completion_rate", "prefill_abandonment_rate", "decode_abandonment_rate",
              "prefill_wait", "decode_wait")


def summarize_pooled(run: Run, model: Model, n: int) -> dict[str, Any]:
    """``revenue_per_gpu`` (bundled and separate) and per-class ``{mean, ci95}`` entries."""
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
        "classes": classes,
    }
