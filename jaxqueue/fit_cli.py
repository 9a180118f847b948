"""``jaxqueue workload`` and ``jaxqueue calibrate``: scenarios and GPU profiles from measurements.

The work is done by :mod:`jaxqueue.workload` and :mod:`jaxqueue.calibrate`; this module holds the
options, the JSON objects, the text tables and the plots (docs/workloads.md).
"""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Any

from .argtypes import number, positive_int

__all__ = ["add_fit_commands", "workload_summary", "calibration_summary"]


def _positive(name: str, kind=float):
    return positive_int(name) if kind is int else number(name, strict=True)


def _nonnegative(name: str):
    return number(name)


def add_fit_commands(command, emit) -> None:
    """Registers ``workload`` and ``calibrate`` with the CLI's ``command`` factory; ``emit``
    prints a JSON object or its text lines."""
    from .scenarios import CALIBRATIONS

    wl = command("workload", "classes, rates, length laws and burstiness of a request trace "
                 "(CSV), and a scenario file built from them (docs/workloads.md)")
    wl.add_argument("file", help="CSV trace: one request a row, prompt and output token counts, "
                    "optional arrival times in seconds")
    wl.add_argument("--classes", type=_positive("classes", int), required=True, metavar="K",
                    help="number of classes (k-means on log prompt and log output lengths)")
    wl.add_argument("--out", default=None, metavar="TOML",
                    help="write the scenario file here (for jaxqueue lp / simulate)")
    wl.add_argument("--plot", default=None, metavar="PNG",
                    help="write the classes and each class's length laws to this image")
    wl.add_argument("--json", action="store_true", help="print one JSON object")
    wl.add_argument("--prompt-column", default=None, metavar="NAME",
                    help="column of prompt tokens (default: found by name, e.g. "
                         "num_prefill_tokens, prompt_tokens)")
    wl.add_argument("--output-column", default=None, metavar="NAME",
                    help="column of output tokens (default: found by name, e.g. "
                         "num_decode_tokens, output_tokens)")
    wl.add_argument("--arrival-column", default=None, metavar="NAME",
                    help="column of arrival times in seconds (default: found by name, e.g. "
                         "arrived_at, arrival_time)")
    wl.add_argument("--no-arrivals", action="store_true",
                    help="ignore any arrival-time column (then --rate is required)")
    wl.add_argument("--rate", type=_positive("rate"), default=None, metavar="R",
                    help="total arrival rate, requests per second: required when the trace has "
                         "no arrival times; otherwise it replaces the trace's rate")
    wl.add_argument("--gpus", type=_positive("gpus"), default=1.0, metavar="N",
                    help="GPUs the trace's traffic is shared by: the scenario's per-GPU rates "
                         "are the trace's rates / N (default 1)")
    wl.add_argument("--windows", type=_positive("windows"), nargs="+", default=None,
                    metavar="S", help="window widths in seconds of the dispersion index "
                                      "(default 1 10 60)")
    wl.add_argument("--calibration", choices=sorted(CALIBRATIONS), default="qwen-8b",
                    help="iteration-time law of the scenario (the paper's Sec. 6.1)")
    wl.add_argument("--alpha", type=_nonnegative("alpha"), default=None,
                    help="replace the calibration's alpha, seconds (e.g. from jaxqueue calibrate)")
    wl.add_argument("--beta", type=_nonnegative("beta"), default=None,
                    help="replace the calibration's beta, seconds per chunk token")
    wl.add_argument("--gamma", type=_positive("gamma"), default=None,
                    help="replace the calibration's gamma, solo decode tokens per second")
    wl.add_argument("--chunk", type=_positive("chunk", int), default=256,
                    help="prefill chunk size C, tokens")
    wl.add_argument("--batch", type=_positive("batch", int), default=16,
                    help="batch slots per GPU B")
    wl.add_argument("--patience-rate", type=_nonnegative("patience-rate"), default=0.1,
                    help="abandonment rate theta of every class, per second (a trace records "
                         "none; the paper's 0.1 by default)")
    wl.add_argument("--price-prefill", type=_nonnegative("price-prefill"), default=0.1,
                    help="price c_p per prompt token (the paper's 0.1)")
    wl.add_argument("--price-decode", type=_nonnegative("price-decode"), default=0.2,
                    help="price c_d per output token (the paper's 0.2)")
    wl.add_argument("--service", choices=("exponential", "fit"), default="exponential",
                    help="prefill and decode time laws of the scenario: the paper's exponential "
                         "ones, or each class's prompt and output length spread (a time is "
                         "proportional to its length), as a phase-type law fitted to its CV")
    wl.add_argument("--name", default=None, help="scenario name (default: the file's stem and K)")
    wl.set_defaults(func=functools.partial(_cmd_workload, emit=emit))

    ca = command("calibrate", "fit the iteration-time law tau = alpha + beta*C and the solo "
                 "decode time to iteration measurements (CSV), with R^2 and residuals "
                 "(docs/workloads.md)")
    ca.add_argument("file", help="CSV: one iteration a row (prefill_tokens, time_s or time_ms; "
                    "prefill_tokens 0 for a decode-only iteration), or a Vidur profile mlp.csv")
    ca.add_argument("--tokens-column", default=None, metavar="NAME",
                    help="column of prefill-chunk tokens C (default: found by name)")
    ca.add_argument("--time-column", default=None, metavar="NAME",
                    help="column of iteration times (default: found by name)")
    ca.add_argument("--time-unit", choices=("s", "ms"), default=None,
                    help="unit of the times (default: ms for a column name ending in ms, else s)")
    ca.add_argument("--min-tokens", type=_nonnegative("min-tokens"), default=None,
                    help="fit only iterations with C >= this")
    ca.add_argument("--max-tokens", type=_nonnegative("max-tokens"), default=None,
                    help="fit only iterations with C <= this")
    ca.add_argument("--batch", type=_positive("batch", int), default=16,
                    help="Vidur profiles: batch slots B (a mixed iteration holds C + B - 1 tokens)")
    ca.add_argument("--layers", type=_positive("layers", int), default=None,
                    help="Vidur profiles: transformer layers (default: per-layer times; 32 for "
                         "Llama-2-7B and Llama-3-8B)")
    ca.add_argument("--tensor-parallel", type=_positive("tensor-parallel", int), default=1,
                    help="Vidur profiles: rows with this many tensor-parallel workers")
    ca.add_argument("--scenario", default=None,
                    help="compare with this scenario (name or TOML) and check its chunk lies in "
                         "the measured range")
    ca.add_argument("--chunk", type=_positive("chunk"), default=None,
                    help="check this chunk size C instead (default: the scenario's, else 256)")
    ca.add_argument("--plot", default=None, metavar="PNG",
                    help="write the fit and its residuals to this image")
    ca.add_argument("--json", action="store_true", help="print one JSON object")
    ca.set_defaults(func=functools.partial(_cmd_calibrate, emit=emit))


# ---- workload ---------------------------------------------------------------------------------
def _length(fit) -> dict[str, Any]:
    return {"mean": fit.mean, "cv": fit.cv, "median": fit.median, "p99": fit.p99,
            "best": fit.best.law,
            "laws": {f.law: {"params": f.params, "ks": f.ks, "p_value": f.p_value}
                     for f in fit.laws}}


def workload_summary(w, model, gpus: float, out: str | None) -> dict[str, Any]:
    """The JSON object of ``jaxqueue workload``."""
    b = w.burstiness
    return {
        "source": w.source, "requests": w.requests, "columns": w.columns, "method": w.method,
        "converged": w.converged,
        "rate": {"total": w.rate, "from": w.rate_from, "gpus": gpus, "span_s": w.span},
        "classes": [{"name": c.name, "count": c.count, "share": c.share, "rate": c.rate,
                     "arrival_rate_per_gpu": c.rate / gpus, "prompt": _length(c.prompt),
                     "output": _length(c.output)} for c in w.classes],
        "burstiness": None if b is None else {
            "interarrival_cv": b.interarrival_cv, "poisson_like": b.poisson_like,
            "verdict": b.verdict,
            "dispersion": [{"window_s": d.width, "windows": d.windows,
                            "mean_count": d.mean_count, "index": d.index, "z": d.z}
                           for d in b.dispersion]},
        "scenario": {"file": out, **model.to_dict()},
    }


def workload_lines(o: dict[str, Any]) -> list[str]:
    r = o["rate"]
    wid = max([14] + [len(c["name"]) + 2 for c in o["classes"]])
    lines = [f"trace: {o['source']}, {o['requests']} requests",
             "columns: " + ", ".join(f"{k} = {v}" for k, v in o["columns"].items() if v),
             f"classes: {o['method']}" + ("" if o["converged"] else " (NOT converged)"),
             f"arrival rate: {r['total']:.4g} requests/s in all, from {r['from']}; per GPU: "
             f"total / {r['gpus']:g} (--gpus)", "",
             f"{'class':<{wid}}{'share':>7}{'rate/s':>8}{'/GPU':>8}{'P mean':>7}{'P cv':>6}"
             f"{'D mean':>7}{'D cv':>6}{'KS P':>7}{'KS D':>7}  best law for D (KS)"]
    for c in o["classes"]:
        p, d = c["prompt"], c["output"]
        lines.append(f"{c['name']:<{wid}}{100 * c['share']:>6.1f}%{c['rate']:>8.4g}"
                     f"{c['arrival_rate_per_gpu']:>8.4g}{p['mean']:>7.0f}{p['cv']:>6.2f}"
                     f"{d['mean']:>7.0f}{d['cv']:>6.2f}{p['laws']['exponential']['ks']:>7.3f}"
                     f"{d['laws']['exponential']['ks']:>7.3f}  {d['best']} "
                     f"{d['laws'][d['best']]['ks']:.3f}")
    lines += ["rate/s: requests per second in the trace; /GPU: the scenario's arrival rate "
              "per GPU; P, D: prompt and output tokens (mean, coefficient of variation).",
              "KS P, KS D: Kolmogorov-Smirnov distance (0 = same law) between a class's lengths "
              "and the exponential law with their mean (the model's assumption); the lognormal "
              "and gamma laws match mean and variance. An exponential law has CV 1; token "
              "counts are integers, which adds ties to every KS value."]
    b = o["burstiness"]
    if b is not None:
        lines += ["", f"arrivals: inter-arrival CV {b['interarrival_cv']:.3g} (Poisson: 1)",
                  f"{'window':>8}{'windows':>9}{'mean count':>12}{'dispersion':>12}"
                  f"{'z':>8}   (Poisson: dispersion 1, |z| <= 3)"]
        lines += [f"{d['window_s']:>6g} s{d['windows']:>9}{d['mean_count']:>12.4g}"
                  f"{d['index']:>12.4g}{d['z']:>+8.1f}" for d in b["dispersion"]]
        lines.append(f"verdict: {b['verdict']}")
    s = o["scenario"]
    g = s["gpu"]
    lines += ["", f"scenario {s['name']!r}: alpha {g['alpha']:g} s, beta {g['beta']:g} s/token, "
              f"gamma {g['gamma']:.4g} tok/s, C {g['chunk']}, B {g['batch']}; prices "
              f"{s['pricing']['prefill']:g}/{s['pricing']['decode']:g} per prompt/output token; "
              f"patience rate {s['classes'][0]['patience_rate']:g}/s"]
    if s["file"]:
        lines.append(f"written to {s['file']}: jaxqueue lp {s['file']}; jaxqueue simulate "
                     f"{s['file']} --gpus 20")
    return _wrap(lines)


def _wrap(lines: list[str]) -> list[str]:
    """Lines longer than the tables' width, wrapped with an indent."""
    import textwrap

    from .tables import WIDTH

    out = []
    for line in lines:
        out += textwrap.wrap(line, WIDTH, subsequent_indent="  ", break_on_hyphens=False,
                             break_long_words=False) or [""]
    return out


def _cmd_workload(args, emit) -> int:
    from . import scenarios, workload

    trace = workload.read_trace(args.file, prompt_column=args.prompt_column,
                                output_column=args.output_column,
                                arrival_column=args.arrival_column,
                                arrivals=not args.no_arrivals)
    w = workload.build(trace, args.classes, rate=args.rate,
                       windows=tuple(args.windows) if args.windows else workload.WINDOWS)
    gpu = dict(scenarios.CALIBRATIONS[args.calibration])
    gpu.update({k: getattr(args, k) for k in ("alpha", "beta", "gamma")
                if getattr(args, k) is not None})
    name = args.name or f"{Path(args.file).stem}-{args.classes}class"
    model = workload.to_model(w, gpus=args.gpus, chunk=args.chunk, batch=args.batch,
                              theta=args.patience_rate, c_p=args.price_prefill,
                              c_d=args.price_decode, name=name, service=args.service, **gpu)
    if args.out:
        command = (f"jaxqueue workload {shlex.quote(args.file)} --classes {args.classes} "
                   f"--gpus {args.gpus:g}" + (f" --rate {args.rate:g}" if args.rate else "")
                   + (f" --service {args.service}" if args.service != "exponential" else ""))
        Path(args.out).write_text(workload.scenario_toml(model, w, gpus=args.gpus,
                                                         command=command))
        scenarios.load(args.out)  # the file reads back as a scenario
    if args.plot:
        _plot_workload(args.plot, w, trace)
    emit(workload_summary(w, model, args.gpus, args.out), args.json, workload_lines)
    return 0


def _plot_workload(path, w, trace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(w.classes)
    fig, axes = plt.subplots(2, k + 1, figsize=(3.2 * (k + 1), 6.0), squeeze=False)
    ax = axes[0, 0]
    for j, c in enumerate(w.classes):
        m = w.labels == j
        ax.scatter(trace.prompt[m], trace.output[m], s=2, alpha=0.3, color=f"C{j}", label=c.name)
    ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="output tokens",
           title="classes")
    ax.legend(fontsize=7, markerscale=4)
    ax = axes[1, 0]
    if w.burstiness is not None and w.burstiness.dispersion:
        d = w.burstiness.dispersion
        ax.plot([x.width for x in d], [x.index for x in d], "o-", label="trace")
        ax.axhline(1.0, color="k", ls="--", lw=1, label="Poisson")
        ax.set(xscale="log", yscale="log", xlabel="window, s", ylabel="dispersion index",
               title="burstiness")
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no arrival times", ha="center", va="center")
    for j, c in enumerate(w.classes):
        m = w.labels == j
        for row, (x, fit, label) in enumerate(((trace.prompt[m], c.prompt, "prompt"),
                                               (trace.output[m], c.output, "output"))):
            ax = axes[row, j + 1]
            xs = np.sort(x)
            surv = 1.0 - np.arange(1, xs.size + 1) / xs.size
            ax.step(xs, surv, where="post", color="k", lw=1, label="trace")
            grid = np.linspace(0, xs[-1], 200)
            for f in fit.laws:
                ax.plot(grid, f.frozen().sf(grid), lw=1, label=f"{f.law} KS {f.ks:.2f}")
            ax.set(yscale="log", ylim=(max(0.5 / xs.size, 1e-4), 1.05),
                   xlabel=f"{label} tokens", title=f"{c.name}: {label}")
            ax.legend(fontsize=6)
    fig.suptitle(f"{Path(w.source).name}: {w.requests} requests, {k} classes "
                 "(survival functions of lengths against fitted laws)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- calibrate --------------------------------------------------------------------------------
def calibration_summary(cal, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON object of ``jaxqueue calibrate``."""
    import numpy as np

    m = cal.measurements
    resid = cal.residuals()
    edges = np.quantile(m.tokens, np.linspace(0, 1, 6))
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (m.tokens >= lo) & (m.tokens <= hi)
        if sel.any():
            bins.append({"tokens": [float(lo), float(hi)], "points": int(sel.sum()),
                         "mean_residual_s": float(resid[sel].mean()),
                         "max_abs_residual_s": float(np.abs(resid[sel]).max())})
    return {
        "source": m.source, "kind": m.kind, "columns": m.columns, "notes": list(m.notes),
        "caveat": m.caveat, "alpha": cal.alpha, "beta": cal.beta, "alpha_se": cal.alpha_se,
        "beta_se": cal.beta_se, "r2": cal.r2, "points": cal.points,
        "tokens_range": list(cal.tokens_range), "residual_std_s": cal.residual_std,
        "residual_max_s": cal.residual_max, "residuals_by_tokens": bins,
        "tau_solo": cal.tau_solo, "tau_solo_se": cal.tau_solo_se, "gamma": cal.gamma,
        "solo_points": cal.solo_points, "checks": checks,
    }


def calibration_lines(o: dict[str, Any]) -> list[str]:
    lines = [f"measurements: {o['source']} ({o['kind']}); {o['columns']}",
             *(f"  {n}" for n in o["notes"]),
             f"tau = alpha + beta*C:  alpha = {o['alpha']:.5g} s (SE {o['alpha_se']:.2g}),  "
             f"beta = {o['beta']:.4g} s/token (SE {o['beta_se']:.2g}),  R^2 = {o['r2']:.5f}",
             f"fitted on {o['points']} mixed iterations with C in [{o['tokens_range'][0]:g}, "
             f"{o['tokens_range'][1]:g}] tokens; residuals: std {1e3 * o['residual_std_s']:.3g} "
             f"ms, largest {1e3 * o['residual_max_s']:.3g} ms",
             f"{'C from':>10}{'to':>8}{'points':>8}{'mean residual':>15}{'largest':>10}"]
    lines += [f"{b['tokens'][0]:>10g}{b['tokens'][1]:>8g}{b['points']:>8}"
              f"{1e3 * b['mean_residual_s']:>12.3g} ms{1e3 * b['max_abs_residual_s']:>7.3g} ms"
              for b in o["residuals_by_tokens"]]
    if o["tau_solo"] is None:
        lines.append("solo decode time: no decode-only iterations measured (rows with C = 0)")
    else:
        se = f" (SE {o['tau_solo_se']:.2g})" if o["solo_points"] > 1 else ""
        lines.append(f"solo decode: tau_solo = {o['tau_solo']:.5g} s{se} from "
                     f"{o['solo_points']} point{'s' if o['solo_points'] != 1 else ''}, gamma = "
                     f"1/tau_solo = {o['gamma']:.4g} tokens/s")
    for c in o["checks"]:
        lines.append(f"{c['label']}: C = {c['chunk']:g}, fitted tau = {c['tau_fitted']:.5g} s"
                     + (f" (scenario: {c['tau_scenario']:.5g} s, gamma {c['gamma_scenario']:.4g})"
                        if c.get("tau_scenario") is not None else "")
                     + (f"; WARNING: {c['warning']}" if c["warning"] else "; within the "
                        "measured range"))
    if o["caveat"]:
        lines.append(f"CAVEAT: {o['caveat']}")
    lines.append("use: jaxqueue workload TRACE --classes K --alpha A --beta B --gamma G")
    return _wrap(lines)


def _cmd_calibrate(args, emit) -> int:
    from . import calibrate, scenarios

    m = calibrate.read(args.file, tokens_column=args.tokens_column, time_column=args.time_column,
                       time_unit=args.time_unit, batch=args.batch, layers=args.layers,
                       tensor_parallel=args.tensor_parallel)
    cal = calibrate.fit(m, min_tokens=args.min_tokens, max_tokens=args.max_tokens)
    checks = []
    if args.scenario is not None:
        model = scenarios.load(args.scenario)
        chunk = float(model.C) if args.chunk is None else args.chunk
        checks.append({"label": f"scenario {model.name}", "chunk": chunk,
                       "tau_fitted": float(cal.tau(chunk)), "tau_scenario": float(model.tau),
                       "gamma_scenario": float(model.gamma), "warning": cal.extrapolates(chunk)})
    else:
        chunk = 256.0 if args.chunk is None else args.chunk
        checks.append({"label": "chunk", "chunk": chunk, "tau_fitted": float(cal.tau(chunk)),
                       "warning": cal.extrapolates(chunk)})
    if args.plot:
        _plot_calibration(args.plot, cal)
    emit(calibration_summary(cal, checks), args.json, calibration_lines)
    if cal.measurements.caveat and args.json:
        print(f"jaxqueue: caveat: {cal.measurements.caveat}", file=sys.stderr)
    return 0


def _plot_calibration(path, cal) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = cal.measurements
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6.0), sharex=True,
                                      gridspec_kw={"height_ratios": (2, 1)})
    top.plot(m.tokens, 1e3 * m.times, ".", ms=3, label="measured")
    grid = np.linspace(0, m.tokens.max(), 100)
    top.plot(grid, 1e3 * cal.tau(grid), "-", lw=1,
             label=f"alpha + beta C: {1e3 * cal.alpha:.3g} ms + {1e6 * cal.beta:.3g} us C, "
                   f"R^2 {cal.r2:.4f}")
    if cal.tau_solo is not None:
        top.plot([0], [1e3 * cal.tau_solo], "s", label=f"solo {1e3 * cal.tau_solo:.3g} ms")
    top.set(ylabel="iteration time, ms", title=Path(m.source).name
            + (" (token-linear operators only)" if m.caveat else ""))
    top.legend(fontsize=7)
    bottom.plot(m.tokens, 1e3 * cal.residuals(), ".", ms=3)
    bottom.axhline(0.0, color="k", lw=1)
    bottom.set(xlabel="prefill chunk tokens C", ylabel="residual, ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
