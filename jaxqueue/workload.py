"""Workload classes from a request trace: classes, rates, length laws, burstiness, a scenario.

A trace is a CSV file with one request a row: prompt tokens, output tokens and, optionally, an
arrival time in seconds. :func:`read_trace` finds the columns (or takes the names the user
gives), :func:`build` turns the trace into a :class:`Workload`, and :func:`to_model` into the
paper's model, which :func:`scenario_toml` writes in the scenario-file layout that
``jaxqueue lp`` and ``jaxqueue simulate`` load.

Method (docs/workloads.md):
- Classes: k-means on ``(ln prompt, ln output)`` (natural-log tokens, unscaled, so a distance
  is a ratio of lengths), started deterministically from the means of K equal-count groups of
  the requests sorted along the first principal axis, run by ``scipy.cluster.vq.kmeans2``.
  Classes are ordered by mean prompt length.
- Rates: with arrival times, the trace's rate ``(N - 1) / (t_last - t_first)`` split by the
  classes' shares of requests; without them, a total rate the user gives.
- Lengths: mean, coefficient of variation, and three laws matched to the mean and variance
  (exponential: the mean only; lognormal; gamma), each with its Kolmogorov-Smirnov statistic
  against the class's lengths (``scipy.stats.kstest``), as EC 14 of the paper tests exponential
  output lengths on Dolly-15k.
- Burstiness: the index of dispersion of arrival counts in windows of fixed width (1 for a
  Poisson process), with its standard error under Poisson arrivals.
- Scenario: class i's mean prompt and output lengths are the model's P_i and D_i; its rates
  follow from them (Eq. 4: ``mu_p = C / (P tau)``, ``mu_m = 1 / (D tau)``, ``mu_s = gamma / D``,
  ``tau = alpha + beta C``), as in the built-in scenarios.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path

import numpy as np
from scipy import cluster, stats

from .csvfile import Table, TableError
from .model import Model
from .scenarios import toml_value

__all__ = ["WorkloadError", "Trace", "LawFit", "LengthFit", "Dispersion", "Burstiness",
           "WorkloadClass", "Workload", "read_trace", "fit_lengths", "dispersion_index",
           "burstiness", "classify", "build", "to_model", "scenario_toml", "WINDOWS"]

PROMPT_COLUMNS = ("num_prefill_tokens", "prompt_tokens", "num_prompt_tokens", "prompt_len",
                  "prompt_length", "input_tokens", "input_length", "context_tokens")
OUTPUT_COLUMNS = ("num_decode_tokens", "output_tokens", "num_output_tokens", "output_len",
                  "output_length", "completion_tokens", "generated_tokens", "decode_tokens")
ARRIVAL_COLUMNS = ("arrived_at", "arrival_time", "arrival_s", "arrival", "timestamp_s")
#: Window widths (seconds) of the dispersion index by default.
WINDOWS = (1.0, 10.0, 60.0)
#: Fewest windows a dispersion index is computed from.
MIN_WINDOWS = 10
#: |z| above which a dispersion index is "far from Poisson".
FAR = 3.0


class WorkloadError(ValueError):
    """Bad trace or option: the message names the field and its allowed range."""


@dataclasses.dataclass(frozen=True)
class Trace:
    """Requests of one trace, in file order.

    Attributes:
        source: the file.
        prompt: prompt tokens per request, shape ``(N,)``.
        output: output tokens per request, shape ``(N,)``.
        arrivals: arrival times in seconds, shape ``(N,)``, or None.
        columns: the column used for each of ``prompt``, ``output``, ``arrivals`` (None: absent).
    """

    source: str
    prompt: np.ndarray
    output: np.ndarray
    arrivals: np.ndarray | None
    columns: dict[str, str | None]


def read_trace(path: str | Path, *, prompt_column: str | None = None,
               output_column: str | None = None, arrival_column: str | None = None,
               arrivals: bool = True) -> Trace:
    """Reads a request trace; ``arrivals=False`` ignores any arrival-time column.

    Raises:
        WorkloadError: empty file, a missing or ambiguous column, a cell that is not a finite
            number, a length <= 0.
    """
    try:
        table = Table(path)
        cols = {
            "prompt": table.find(prompt_column, PROMPT_COLUMNS, "prompt-length",
                                 "--prompt-column"),
            "output": table.find(output_column, OUTPUT_COLUMNS, "output-length",
                                 "--output-column"),
            "arrivals": table.find(arrival_column, ARRIVAL_COLUMNS, "arrival-time",
                                   "--arrival-column") if arrivals else None,
        }
        for field, option in (("prompt", "--prompt-column"), ("output", "--output-column")):
            if cols[field] is None:
                raise WorkloadError(
                    f"{table.source}: no {field}-length column (looked for "
                    f"{', '.join((PROMPT_COLUMNS if field == 'prompt' else OUTPUT_COLUMNS)[:4])}"
                    f", ...); the columns are {', '.join(table.columns)}: name one with {option}")
        values = {k: table.numbers(c) for k, c in cols.items() if c is not None}
    except TableError as err:
        raise WorkloadError(str(err)) from None
    for field in ("prompt", "output"):
        bad = np.flatnonzero(values[field] <= 0)
        if bad.size:
            raise WorkloadError(f"{table.source}: column {cols[field]} ({field} tokens), data row "
                                f"{bad[0] + 1}: {values[field][bad[0]]:g} is invalid: must be "
                                f"> 0 ({bad.size} such rows)")
    return Trace(table.source, values["prompt"], values["output"], values.get("arrivals"), cols)


# ---- length laws ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LawFit:
    """One law matched to a sample's moments, with its Kolmogorov-Smirnov statistic ``ks``
    (sup distance of the CDFs) and p-value (tiny for any visible misfit at trace sizes)."""

    law: str
    params: dict[str, float]
    ks: float
    p_value: float

    def frozen(self):
        """The fitted law as a ``scipy.stats`` distribution."""
        p = self.params
        if self.law == "exponential":
            return stats.expon(scale=p["mean"])
        if self.law == "lognormal":
            return stats.lognorm(s=p["sigma"], scale=math.exp(p["mu"]))
        return stats.gamma(a=p["shape"], scale=p["scale"])


@dataclasses.dataclass(frozen=True)
class LengthFit:
    """Summary and fitted laws of one sample of token counts."""

    mean: float
    cv: float
    median: float
    p99: float
    laws: tuple[LawFit, ...]

    @property
    def best(self) -> LawFit:
        """The law with the smallest KS statistic."""
        return min(self.laws, key=lambda f: f.ks)

    @property
    def ks_exponential(self) -> float:
        return next(f.ks for f in self.laws if f.law == "exponential")


def fit_lengths(x: np.ndarray) -> LengthFit:
    """Exponential (same mean), lognormal and gamma (same mean and variance) laws for lengths
    ``x``, each with its KS statistic against ``x``. The lengths are integers and the laws
    continuous, so ties add up to half the largest point mass to every statistic."""
    x = np.asarray(x, np.float64)
    mean = float(x.mean())
    cv = float(x.std(ddof=1) / mean) if x.size > 1 else 0.0
    laws = [("exponential", {"mean": mean})]
    if cv > 0:
        s2 = math.log1p(cv * cv)
        laws.append(("lognormal", {"mu": math.log(mean) - s2 / 2, "sigma": math.sqrt(s2)}))
        laws.append(("gamma", {"shape": 1 / (cv * cv), "scale": mean * cv * cv}))
    fits = []
    for law, params in laws:
        dist = LawFit(law, params, 0.0, 0.0).frozen()
        res = stats.kstest(x, dist.cdf)
        fits.append(LawFit(law, params, float(res.statistic), float(res.pvalue)))
    return LengthFit(mean, cv, float(np.median(x)), float(np.quantile(x, 0.99)), tuple(fits))


# ---- burstiness -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Dispersion:
    """Index of dispersion ``Var/mean`` of arrival counts in ``windows`` windows of ``width``
    seconds; ``z = (index - 1) / sqrt(2 / (windows - 1))``, its distance from Poisson's 1 in
    standard errors (the delta method gives that standard error for Poisson counts)."""

    width: float
    windows: int
    mean_count: float
    index: float
    z: float


@dataclasses.dataclass(frozen=True)
class Burstiness:
    """Arrival-process statistics: the coefficient of variation of the gaps between arrivals (1
    for Poisson) and the dispersion index at each window width; ``verdict`` in words."""

    interarrival_cv: float
    dispersion: tuple[Dispersion, ...]
    verdict: str

    @property
    def poisson_like(self) -> bool:
        return all(abs(d.z) <= FAR for d in self.dispersion)


def dispersion_index(arrivals: np.ndarray, width: float) -> Dispersion:
    """The dispersion index of arrival counts in consecutive windows of ``width`` seconds from
    the first arrival (the incomplete last window is dropped)."""
    t = np.sort(np.asarray(arrivals, np.float64))
    m = int((t[-1] - t[0]) // width)
    if m < MIN_WINDOWS:
        raise WorkloadError(f"window = {width:g} s is invalid: must leave at least {MIN_WINDOWS} "
                            f"windows in the trace's {t[-1] - t[0]:g} s")
    counts, _ = np.histogram(t, bins=t[0] + width * np.arange(m + 1))
    mean = float(counts.mean())
    index = float(counts.var(ddof=1) / mean) if mean > 0 else math.nan
    return Dispersion(width, m, mean, index, (index - 1.0) / math.sqrt(2.0 / (m - 1)))


def burstiness(arrivals: np.ndarray, windows=WINDOWS) -> Burstiness:
    """Dispersion at each window width that leaves at least :data:`MIN_WINDOWS` windows."""
    t = np.sort(np.asarray(arrivals, np.float64))
    span = t[-1] - t[0]
    gaps = np.diff(t)
    cv = float(gaps.std(ddof=1) / gaps.mean()) if gaps.size > 1 and gaps.mean() > 0 else math.nan
    rows = tuple(dispersion_index(t, w) for w in windows if span // w >= MIN_WINDOWS)
    far = [d for d in rows if abs(d.z) > FAR]
    if not rows:
        verdict = f"trace too short ({span:g} s) for windows of {', '.join(map(str, windows))} s"
    elif not far:
        verdict = ("consistent with Poisson arrivals (every dispersion index within "
                   f"{FAR:g} standard errors of 1)")
    else:
        worst = max(far, key=lambda d: abs(d.z))
        kind = "bursty (overdispersed)" if worst.index > 1 else "more regular than Poisson"
        verdict = (f"far from Poisson: {kind}, dispersion index {worst.index:.3g} in "
                   f"{worst.width:g} s windows ({worst.z:+.0f} standard errors from 1)")
    return Burstiness(cv, rows, verdict)


# ---- classes ----------------------------------------------------------------------------------
def classify(prompt: np.ndarray, output: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
    """Class labels ``0..k-1`` (ordered by mean prompt length) from k-means on
    ``(ln prompt, ln output)`` with the deterministic start of the module docstring; and whether
    Lloyd's iterations converged (one more leaves every label unchanged)."""
    n = len(prompt)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise WorkloadError(f"classes = {k!r} is invalid: must be an integer in [1, {n}] (the "
                            "number of requests)")
    data = np.column_stack([np.log(prompt), np.log(output)])
    centered = data - data.mean(axis=0)
    axis = np.linalg.svd(centered, full_matrices=False)[2][0]
    order = np.argsort(centered @ axis, kind="stable")
    start = np.array([data[g].mean(axis=0) for g in np.array_split(order, k)])
    try:
        centroids, labels = cluster.vq.kmeans2(data, start, iter=300, minit="matrix",
                                               missing="raise")
    except cluster.vq.ClusterError:
        distinct = len(np.unique(data, axis=0))
        raise WorkloadError(f"classes = {k} is invalid: k-means left a class empty (the trace "
                            f"has {distinct} distinct (prompt, output) pairs): use fewer "
                            "classes") from None
    converged = bool(np.array_equal(cluster.vq.vq(data, centroids)[0], labels))
    rank = np.argsort([prompt[labels == j].mean() for j in range(k)], kind="stable")
    relabel = np.empty(k, np.int64)
    relabel[rank] = np.arange(k)
    return relabel[labels], converged


@dataclasses.dataclass(frozen=True)
class WorkloadClass:
    """One class: its requests' count and share, arrival rate (requests per second, the whole
    trace), and prompt and output length fits."""

    name: str
    count: int
    share: float
    rate: float
    prompt: LengthFit
    output: LengthFit


@dataclasses.dataclass(frozen=True)
class Workload:
    """A trace grouped into classes.

    Attributes:
        source: the trace file; columns: the columns used (see :class:`Trace`).
        method: how the classes were formed, in words.
        requests: number of requests N.
        rate: total arrival rate, requests per second; rate_from: where it came from.
        span: seconds from the first arrival to the last (None without arrival times).
        classes: the classes, by mean prompt length.
        burstiness: arrival statistics (None without arrival times).
        converged: whether k-means converged.
        labels: each request's class, shape ``(N,)``.
    """

    source: str
    columns: dict[str, str | None]
    method: str
    requests: int
    rate: float
    rate_from: str
    span: float | None
    classes: tuple[WorkloadClass, ...]
    burstiness: Burstiness | None
    converged: bool
    labels: np.ndarray


METHOD = ("k-means on (ln prompt, ln output), started from K equal-count groups along the first "
          "principal axis (deterministic); classes ordered by mean prompt length")


def build(trace: Trace, k: int, *, rate: float | None = None, windows=WINDOWS) -> Workload:
    """Groups ``trace`` into ``k`` classes. ``rate`` (total requests per second) is required
    when the trace has no arrival times, and replaces the trace's rate when it has them."""
    n = len(trace.prompt)
    span = None
    if trace.arrivals is not None:
        span = float(trace.arrivals.max() - trace.arrivals.min())
        if n < 2 or span <= 0:
            raise WorkloadError(f"{trace.source}: column {trace.columns['arrivals']}: arrival "
                                "times must span a positive time (at least two distinct "
                                "values); ignore them with --no-arrivals and give --rate")
    if rate is not None:
        if not (math.isfinite(rate) and rate > 0):
            raise WorkloadError(f"rate = {rate!r} is invalid: must be a finite number > 0 "
                                "(requests per second)")
        rate_from = "given (--rate)"
    elif span is not None:
        rate, rate_from = (n - 1) / span, f"arrival times ({trace.columns['arrivals']})"
    else:
        raise WorkloadError(f"{trace.source}: has no arrival-time column (looked for "
                            f"{', '.join(ARRIVAL_COLUMNS)}): give the total arrival rate with "
                            "--rate (requests per second), or name the column with "
                            "--arrival-column")
    labels, converged = classify(trace.prompt, trace.output, k)
    classes = []
    for j in range(k):
        mask = labels == j
        count = int(mask.sum())
        p, d = fit_lengths(trace.prompt[mask]), fit_lengths(trace.output[mask])
        classes.append(WorkloadClass(f"p{p.mean:.0f}-d{d.mean:.0f}", count, count / n,
                                     rate * count / n, p, d))
    names = [c.name for c in classes]
    classes = [dataclasses.replace(c, name=f"{c.name}-{j + 1}") if names.count(c.name) > 1
               else c for j, c in enumerate(classes)]
    bursts = burstiness(trace.arrivals, windows) if span is not None else None
    return Workload(trace.source, trace.columns, METHOD, n, float(rate), rate_from, span,
                    tuple(classes), bursts, converged, labels)


# ---- scenario ---------------------------------------------------------------------------------
def to_model(workload: Workload, *, gpus: float, alpha: float, beta: float, gamma: float,
             chunk: int, batch: int, theta: float, c_p: float, c_d: float,
             name: str = "workload", service: str = "exponential") -> Model:
    """The paper's model of ``workload``: class i's mean lengths are P_i and D_i, its per-GPU
    arrival rate is its trace rate divided by ``gpus`` (``jaxqueue simulate --gpus n`` then
    offers n times that), and every class gets patience rate ``theta`` (a trace records no
    abandonments).

    ``service = "fit"`` also gives the prefill and decode times the spread of the lengths: a
    prefill lasts P / (C tau) and a decode D tau (Eq. 4 for one request), so each time's
    coefficient of variation is its length's, and :func:`jaxqueue.service.fit` matches it with a
    phase-type law (Tijms' two-moment fit). The default keeps the paper's exponential times."""
    from .service import Service

    if not (math.isfinite(gpus) and gpus > 0):
        raise WorkloadError(f"gpus = {gpus!r} is invalid: must be a number > 0")
    if service not in ("exponential", "fit"):
        raise WorkloadError(f"service = {service!r} is invalid: must be 'exponential' or 'fit'")
    cs = workload.classes
    laws = None
    if service == "fit":
        laws = Service.make(len(cs), prefill={"law": "fit", "cv": [c.prompt.cv for c in cs]},
                            decode={"law": "fit", "cv": [c.output.cv for c in cs]})
    return Model(name=name, class_names=[c.name for c in cs],
                 lambda_=[c.rate / gpus for c in cs], theta=[theta] * len(cs),
                 P=[c.prompt.mean for c in cs], D=[c.output.mean for c in cs],
                 alpha=alpha, beta=beta, gamma=gamma, C=chunk, B=batch, c_p=c_p, c_d=c_d,
                 service=laws)


def scenario_toml(model: Model, workload: Workload, *, gpus: float, command: str = "") -> str:
    """The scenario file of ``model`` (the layout :meth:`Model.from_dict` reads), with comments
    saying where each number comes from."""
    q = json.dumps  # a TOML basic string, for ASCII names
    lines = [f"# Scenario built from the request trace {workload.source}" + (
        f"\n# by: {command}" if command else ""),
        f"# {workload.requests} requests; columns: " + ", ".join(
            f"{k} = {v}" for k, v in workload.columns.items() if v is not None),
        f"# Classes: {workload.method}.",
        f"# Arrival rates: {workload.rate:.6g} requests/s in all, from {workload.rate_from}, split "
        f"by class shares; per GPU: total / {gpus:g} (--gpus).",
        "# Service rates follow from the lengths as in every scenario (docs/model.md, Eq. 4):",
        "# tau = alpha + beta*chunk, mu_p = chunk/(P tau), mu_m = 1/(D tau), mu_s = gamma/D.",
        "# patience_rate is an assumption: a trace records no abandonments.",
        "", f"name = {q(model.name)}", "", "[gpu]"]
    gpu = model.to_dict()["gpu"]
    lines += [f"{k} = {v!r}" for k, v in gpu.items()]
    lines += ["", "[pricing]", f"prefill = {float(model.c_p)!r}", f"decode = {float(model.c_d)!r}"]
    for c, row in zip(workload.classes, model.to_dict()["classes"], strict=True):
        lines += ["", f"# {c.count} requests ({100 * c.share:.1f}%); prompt CV {c.prompt.cv:.2f}, "
                  f"output CV {c.output.cv:.2f}; KS vs exponential: prompt "
                  f"{c.prompt.ks_exponential:.3f}, output {c.output.ks_exponential:.3f}",
                  "[[classes]]", f"name = {q(row['name'])}"]
        lines += [f"{k} = {row[k]!r}" for k in ("arrival_rate", "patience_rate", "prompt_tokens",
                                                "output_tokens")]
    table = model.to_dict().get("service")
    if table:
        lines += ["", "# Service laws: each class's prefill and decode times have its prompt and "
                  "output lengths' CV (a time is proportional to its length), fitted as "
                  "phase-type laws (--service fit).", "[service]"]
        lines += [f"{side} = {toml_value(law)}" for side, law in table.items()]
    wrapped = []
    for line in lines:
        wrapped += textwrap.wrap(line, 100, subsequent_indent="#   ", break_on_hyphens=False,
                                 break_long_words=False) if line.startswith("#") else [line]
    return "\n".join(wrapped) + "\n"
