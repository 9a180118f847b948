"""Calibration of the iteration-time law ``tau = alpha + beta*C`` from measurements.

The model (docs/model.md, Sec. 1) runs a mixed iteration (one prefill chunk of C tokens and up
to B - 1 decodes) in ``tau = alpha + beta*C`` seconds and a decode-only (solo) iteration in
``tau_solo = 1/gamma`` seconds. :func:`fit` estimates alpha and beta by ordinary least squares
(``scipy.stats.linregress``) with standard errors, R^2 and residuals, and tau_solo as the mean
time of the decode-only iterations. Two file layouts are read (:func:`read`):

- **iterations**: one measured iteration a row, a column of prefill-chunk tokens C (0 for a
  decode-only iteration) and a column of iteration times (seconds, or milliseconds for a name
  ending in ``_ms``).
- **vidur profile** (``profiling/compute/<device>/<model>/mlp.csv`` of Microsoft's Vidur):
  per-layer times in milliseconds of the token-parallel operators (``time_stats.<op>.mean``)
  against ``num_tokens``. Their sum, times ``layers``, is the time of the token-linear part of
  an iteration of ``num_tokens`` tokens; a mixed iteration holds ``C + B - 1`` tokens (the chunk
  and B - 1 decodes), so ``alpha = a + b (B - 1)``, ``beta = b`` for the fitted line
  ``a + b * num_tokens``, and tau_solo is the measured time at B tokens (interpolated).
  Attention, KV-cache reads, sampling and scheduling are not in these files: a fit from them
  covers the token-linear operators only and underestimates alpha and tau_solo
  (:data:`PROFILE_CAVEAT`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy import stats

from .csvfile import Table, TableError, normalize

__all__ = ["CalibrationError", "Measurements", "Calibration", "read", "fit", "PROFILE_CAVEAT"]

TOKEN_COLUMNS = ("prefill_tokens", "chunk_tokens", "num_prefill_tokens", "chunk", "c")
TIME_COLUMNS = ("time_s", "iteration_time_s", "time", "iteration_time", "latency_s",
                "duration_s", "time_ms", "iteration_time_ms", "latency_ms", "duration_ms")
PROFILE_CAVEAT = ("these profiles time the token-linear operators only (embedding, norms, "
                  "projections, MLP, rope, add); attention, KV-cache reads, sampling and "
                  "scheduling are not measured, so alpha and the solo time are underestimates and "
                  "beta misses attention's growth with the chunk")


class CalibrationError(ValueError):
    """Bad measurements or options: the message names the field and its allowed range."""


@dataclasses.dataclass(frozen=True)
class Measurements:
    """Iteration times against prefill-chunk tokens, from one file.

    Attributes:
        source: the file; kind: ``"iterations"`` or ``"vidur-profile"``.
        tokens: prefill-chunk tokens C of each mixed iteration, shape ``(M,)``.
        times: their iteration times in seconds, shape ``(M,)``.
        solo_times: times of decode-only iterations, seconds (empty if none were measured).
        columns: the columns used, in words.
        notes: what the reader assumed (units, layers, rows kept).
        caveat: what the measurements leave out (None for whole iterations).
    """

    source: str
    kind: str
    tokens: np.ndarray
    times: np.ndarray
    solo_times: np.ndarray
    columns: str
    notes: tuple[str, ...]
    caveat: str | None


def read(path: str | Path, *, tokens_column: str | None = None, time_column: str | None = None,
         time_unit: str | None = None, batch: int = 16, layers: int | None = None,
         tensor_parallel: int = 1) -> Measurements:
    """Reads measurements in either layout of the module docstring (a Vidur profile is
    recognized by its ``num_tokens`` and ``time_stats.*.mean`` columns).

    Args:
        tokens_column, time_column: column names (default: found by name).
        time_unit: ``"s"`` or ``"ms"`` (default: ms for a name ending in ``ms``, else s).
        batch: B, the batch slots of a GPU (Vidur profiles: a mixed iteration holds C + B - 1
            tokens, a solo one B).
        layers: Vidur profiles: transformer layers (default 1: times per layer).
        tensor_parallel: Vidur profiles: keep the rows with this many tensor-parallel workers.
    """
    try:
        table = Table(path)
        means = [c for c in table.columns if c.startswith("time_stats.") and c.endswith(".mean")]
        if means and tokens_column is None and time_column is None and any(
                normalize(c) == "numtokens" for c in table.columns):
            return _read_profile(table, means, batch, layers, tensor_parallel)
        tok = table.find(tokens_column, TOKEN_COLUMNS, "prefill-token", "--tokens-column")
        tim = table.find(time_column, TIME_COLUMNS, "iteration-time", "--time-column")
        for col, field, option, names in ((tok, "prefill-token", "--tokens-column",
                                           TOKEN_COLUMNS),
                                          (tim, "iteration-time", "--time-column", TIME_COLUMNS)):
            if col is None:
                raise CalibrationError(
                    f"{table.source}: no {field} column (looked for {', '.join(names[:5])}, ...); "
                    f"the columns are {', '.join(table.columns)}: name one with {option}")
        tokens, times = table.numbers(tok), table.numbers(tim)
    except TableError as err:
        raise CalibrationError(str(err)) from None
    unit = time_unit or ("ms" if normalize(tim).endswith("ms") else "s")
    if unit not in ("s", "ms"):
        raise CalibrationError(f"time_unit = {unit!r} is invalid: must be 's' or 'ms'")
    times = times / (1000.0 if unit == "ms" else 1.0)
    for name, values, low in ((tok, tokens, ">= 0"), (tim, times, "> 0")):
        bad = np.flatnonzero(values < 0) if low == ">= 0" else np.flatnonzero(values <= 0)
        if bad.size:
            raise CalibrationError(f"{table.source}: column {name}, data row {bad[0] + 1}: "
                                   f"{values[bad[0]]:g} is invalid: must be {low}")
    solo = tokens == 0
    return Measurements(table.source, "iterations", tokens[~solo], times[~solo], times[solo],
                        f"C = {tok}, time = {tim} ({unit})",
                        (f"{int(solo.sum())} decode-only rows ({tok} = 0) give the solo time",),
                        None)


def _read_profile(table: Table, means, batch, layers, tensor_parallel) -> Measurements:
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise CalibrationError(f"batch = {batch!r} is invalid: must be an integer >= 1")
    if layers is not None and (int(layers) != layers or layers < 1):
        raise CalibrationError(f"layers = {layers!r} is invalid: must be an integer >= 1")
    tok = next(c for c in table.columns if normalize(c) == "numtokens")
    tokens = table.numbers(tok)
    keep = np.ones(tokens.shape, bool)
    notes = []
    tp_col = next((c for c in table.columns if normalize(c) == "numtensorparallelworkers"), None)
    if tp_col is not None:
        tp = table.numbers(tp_col)
        keep = tp == tensor_parallel
        if not keep.any():
            found = sorted(set(tp.astype(int).tolist()))
            raise CalibrationError(f"{table.source}: tensor_parallel = {tensor_parallel} is "
                                   f"invalid: must be one of {found}")
        notes.append(f"rows with {tp_col} = {tensor_parallel} ({int(keep.sum())} of {len(tp)})")
    per_layer = sum(table.numbers(c) for c in means)[keep] / 1000.0
    scale = 1 if layers is None else int(layers)
    notes.append(f"sum of {len(means)} operators' mean times (ms) x {scale} layer"
                 f"{'s' if scale > 1 else ''}" + (" (per layer: give --layers for a whole model)"
                                                  if layers is None else ""))
    notes.append(f"a mixed iteration holds C + {int(batch) - 1} tokens (B = {int(batch)}); the "
                 f"solo time is the measured time at {int(batch)} tokens")
    tokens, times = tokens[keep], per_layer * scale
    order = np.argsort(tokens, kind="stable")
    tokens, times = tokens[order], times[order]
    solo = np.array([np.interp(batch, tokens, times)])
    mixed = tokens >= batch  # at least a one-token chunk next to B - 1 decodes
    notes.append(f"{int((~mixed).sum())} rows below {int(batch)} tokens hold no chunk and are "
                 "left out of the line")
    return Measurements(table.source, "vidur-profile", tokens[mixed] - (batch - 1),
                        times[mixed], solo,
                        f"C = {tok} - {int(batch) - 1}, time = sum of time_stats.*.mean",
                        tuple(notes), PROFILE_CAVEAT)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A fitted iteration-time law.

    Attributes:
        alpha, beta: ``tau = alpha + beta*C`` (seconds, seconds per token), with standard
            errors alpha_se, beta_se.
        r2: coefficient of determination of the fit.
        residual_std, residual_max: of the mixed times, seconds.
        tau_solo: solo (decode-only) iteration time, seconds, and its standard error (None when
            no solo iteration was measured); gamma = 1/tau_solo, tokens per second per stream.
        tokens_range: smallest and largest C fitted.
        points: mixed iterations fitted; solo_points: solo iterations averaged.
        measurements: the data (for residuals and plots).
    """

    alpha: float
    beta: float
    alpha_se: float
    beta_se: float
    r2: float
    residual_std: float
    residual_max: float
    tau_solo: float | None
    tau_solo_se: float | None
    tokens_range: tuple[float, float]
    points: int
    solo_points: int
    measurements: Measurements

    @property
    def gamma(self) -> float | None:
        return None if self.tau_solo is None else 1.0 / self.tau_solo

    def tau(self, chunk):
        """Fitted mixed iteration time at chunk ``chunk`` tokens, seconds."""
        return self.alpha + self.beta * np.asarray(chunk, np.float64)

    def residuals(self) -> np.ndarray:
        """Measured minus fitted mixed times, seconds, in the order of the measurements."""
        return self.measurements.times - self.tau(self.measurements.tokens)

    def extrapolates(self, chunk: float) -> str | None:
        """A warning when chunk size ``chunk`` lies outside the fitted range, else None."""
        lo, hi = self.tokens_range
        if lo <= chunk <= hi:
            return None
        return (f"chunk C = {chunk:g} tokens lies outside the measured range [{lo:g}, {hi:g}]: "
                "tau there is an extrapolation of the fitted line")


def fit(m: Measurements, *, min_tokens: float | None = None,
        max_tokens: float | None = None) -> Calibration:
    """Least-squares fit of ``tau = alpha + beta*C`` to the mixed iterations with C in
    ``[min_tokens, max_tokens]`` (default: all), and the solo time from the solo iterations."""
    keep = np.ones(m.tokens.shape, bool)
    if min_tokens is not None:
        keep &= m.tokens >= min_tokens
    if max_tokens is not None:
        keep &= m.tokens <= max_tokens
    c, t = m.tokens[keep], m.times[keep]
    if len(np.unique(c)) < 2:
        raise CalibrationError(
            f"{m.source}: {int(keep.sum())} mixed iterations with C in [{min_tokens or 0:g}, "
            f"{max_tokens if max_tokens is not None else math.inf:g}] and "
            f"{len(np.unique(c))} distinct C: a line needs at least two distinct prefill-token "
            "counts (C > 0)")
    res = stats.linregress(c, t)
    resid = t - (res.intercept + res.slope * c)
    solo = m.solo_times
    tau_solo = float(solo.mean()) if solo.size else None
    solo_se = float(solo.std(ddof=1) / math.sqrt(solo.size)) if solo.size > 1 else (
        None if tau_solo is None else 0.0)
    dof = max(len(c) - 2, 1)
    return Calibration(
        alpha=float(res.intercept), beta=float(res.slope),
        alpha_se=float(res.intercept_stderr), beta_se=float(res.stderr),
        r2=float(res.rvalue ** 2), residual_std=float(math.sqrt(resid @ resid / dof)),
        residual_max=float(np.abs(resid).max()), tau_solo=tau_solo, tau_solo_se=solo_se,
        tokens_range=(float(c.min()), float(c.max())), points=int(len(c)),
        solo_points=int(solo.size), measurements=dataclasses.replace(m, tokens=c, times=t))
