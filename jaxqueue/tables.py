"""Text tables of the command line, from the JSON objects its commands print with ``--json``.

Every function takes such an object and returns lines no wider than :data:`WIDTH` (a summary
that reads in a 100-column terminal), with units on every number: revenue per GPU per second,
jobs per GPU, seconds, percentages.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["WIDTH", "compare_lines", "convergence_lines", "exact_check_lines", "fmt", "lp_lines",
           "simulate_lines"]

WIDTH = 100

_NAMES = {
    "tpot_formula": ("TPOT, paper's formula at X", "s"),
    "tpot_experienced": ("TPOT that decodes see", "s"),
    "prefill_fairness": ("prefill fairness", "jobs/GPU"),
    "decode_fairness": ("decode fairness", "jobs/GPU"),
}


def _clean(v: float) -> float:
    """LP round-off such as -1e-17 prints as 0, never as -0.00000."""
    return 0.0 if abs(v) < 1e-9 else v


def _ci_text(ci: float, mean: float) -> str:
    """A half-width with two significant digits; one at round-off level prints as 0: below
    1e-6 of the mean (the simulator integrates each chunk in float32, about 6e-8 relative: a
    quantity equal in every replication, such as the TPOT decodes see while every decode slot
    stays full, varies that much) or below 1e-12."""
    if abs(ci) <= max(1e-6 * abs(mean), 1e-12):
        return "0"
    text = f"{ci:.2g}"
    return f"{ci:.0f}" if "e+" in text else text  # 110, not 1.1e+02


def fmt(entry: dict[str, Any] | None, digits: int = 4, scale: float = 1.0) -> str:
    """``mean ± ci95`` (``mean`` alone when there is no interval, ``n/a`` without a mean; an
    interval of zero width, up to round-off, as ``± 0``)."""
    if entry is None or entry.get("mean") is None:
        return "n/a"
    mean = _clean(entry["mean"] * scale)
    if entry.get("ci95") is None:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {_ci_text(entry['ci95'] * scale, mean)}"


# ---- simulate ---------------------------------------------------------------------------------
def _layout_line(o: dict[str, Any]) -> str:
    n = o["gpus"]
    if isinstance(o["mixed_gpus"], float):  # a tuned share: M rounded at random
        m = o["mixed_gpus"]
        if m.is_integer():
            return f"planned mixed GPUs: M = n x share = {m:.0f} of {n}; solo GPUs: {n - m:.0f}"
        return (f"planned mixed GPUs: n x share = {m:.4g} of {n}, rounded at random per "
                f"replication (to {int(m)} or {int(m) + 1}); solo GPUs: the rest")
    if o["mixed_gpus"] is not None:
        return (f"planned mixed GPUs: M = {o['mixed_gpus']} of {n} (a reserved prefill slot and "
                f"B-1 decode slots each); solo GPUs: {n - o['mixed_gpus']}")
    if o.get("coupled"):
        return ("planned mixed GPUs: none (coupled: any GPU prefills, one job at a time,\n"
                "    and its decodes run at mixed speed meanwhile)")
    return ("planned mixed GPUs: none (no static planning: any GPU may run one prefill at a\n"
            "    time, and its decodes run at mixed speed meanwhile)")


def _interrupted_line(o: dict[str, Any]) -> str:
    t = o["time_reached"]
    reach = (f"t = {t['max']:g} s" if t["min"] == t["max"]
             else f"t = {t['min']:g} s to {t['max']:g} s")
    return (f"INTERRUPTED at {reach} of {o['horizon']:g} s: the results cover the part "
            f"simulated\n  ({o['replications_with_statistics']} of {o['reps']} replications "
            "collected statistics)")


def _service_lines(service: dict[str, Any]) -> list[str]:
    """The service laws a run used (``jaxqueue.service.Service.describe``), one line."""
    def side(name):
        law = service[name]
        if law["law"] == "exponential":
            return f"{name} exponential"
        cv = ", ".join(f"{c:.3g}" for c in law["cv"])
        phases = ", ".join(str(k) for k in law["phases"])
        what = {"fit": "fitted to cv", "samples": "fitted to samples"}.get(law["law"], law["law"])
        return f"{name} {what} (cv {cv}; phases {phases})"
    return _wrap(f"  service: {side('prefill')}; {side('decode')} (phase-type, means from the "
                 "model: the only part of the laws the LP sees)")


def simulate_lines(o: dict[str, Any], details: bool = False) -> list[str]:
    """The ``jaxqueue simulate`` summary (and with ``details`` the per-class tables)."""
    reps = f"{o['reps']} replication{'s' if o['reps'] != 1 else ''}"
    policy = o["policy"] + (f" ({o['params_file']})" if o.get("params_file") else "")
    lines = [*_wrap(f"{o['scenario']} / {policy} ({o['engine']} engine): n = {o['gpus']} GPUs, "
                    f"{reps}, seed {o['seed']}"),
             f"  model time: horizon {o['horizon']:g} s, warm-up {o['warmup']:g} s "
             f"(statistics over the last {o['horizon'] - o['warmup']:g} s)",
             *(w for part in f"  {_layout_line(o)}".split("\n") for w in _wrap(part)),
             *_wrap(f"  plan: {o['plan']}")]
    if o.get("patience") and o["patience"]["law"] != "exponential":
        cv = ", ".join(f"{c:g}" for c in o["patience"]["cv"])
        lines += _wrap(f"  patience: {o['patience']['law']} (coefficient of variation {cv}; "
                       "mean 1/theta, the only part of the law the LP sees)")
    if o.get("replay"):
        r = o["replay"]
        speed = "" if r["speed"] == 1.0 else f" at {r['speed']:g}x speed"
        per = ", ".join(f"{k:,}" for k in r["requests_per_class"])
        rate = ", ".join(f"{v:.4g}" for v in r["arrival_rate_per_gpu"])
        if r.get("poisson"):
            lines += _wrap(f"  arrivals: Poisson, at the class rates of {r['file']}{speed} "
                           f"({r['requests']:,} requests, per class {per}, in "
                           f"{r['period_seconds']:g} s): {rate} /s per GPU (the plan's too)")
        else:
            lines += _wrap(f"  arrivals: replayed from {r['file']}{speed}: {r['requests']:,} "
                           f"requests (per class {per}) in a cycle of {r['period_seconds']:g} s, "
                           "each replication from its own random point of it; arrival rates "
                           f"per GPU {rate} /s (the plan's too)")
    if o.get("service"):
        lines += _service_lines(o["service"])
    if o.get("params") is not None:
        lines += _params_lines(o)
    if o["interrupted"]:
        lines += _interrupted_line(o).split("\n")
    if o["replications_with_statistics"] == 0:
        t = o["time_reached"]["max"]
        lines.append(f"no statistics were collected: the run stopped at t = {t:g} s, inside the "
                     f"{o['warmup']:g} s warm-up")
        return lines + [_events_line(o)]
    pricing = o["lp_pricing"]
    rev = o["revenue_per_gpu"]
    lines.append(f"revenue per GPU per second ({pricing} pricing): {fmt(rev[pricing], 6)}")
    bound = o["lp_revenue"]
    gap = bound - rev[pricing]["mean"]
    below = " (diagnosis below)" if o.get("diagnosis") else ""
    sli_plan = o.get("unconstrained_lp_revenue") is not None
    if sli_plan:
        lines.append(f"  SLI-aware LP value {bound:.4f}: a bound only for policies that meet "
                     f"its targets{below}")
        lines.append(f"  LP bound without targets R* = {o['unconstrained_lp_revenue']:.4f}")
    else:
        lines.append(f"  LP bound R* = {bound:.4f}: gap {gap:.4g} ({100 * gap / bound:.2f}%)"
                     f"{below}")
    other = "separate" if pricing == "bundled" else "bundled"
    own = o.get("other_lp_revenue")
    lines.append(f"  under {other} pricing: {fmt(rev[other], 6)}"
                 + ("" if own is None else f" (its own LP bound: R* = {own:.4f})"))
    if o["replications_with_statistics"] < 2:
        lines.append("  one replication: no confidence intervals (run --reps 2 or more for them)")
    else:
        lines.append("  ± is the half-width of a 95% confidence interval over replications")
    lines += _class_table(o) + _sli_table(o) + _latency_table(o) + _goodput_table(o)
    if details:
        lines += _details(o)
    if o.get("diagnosis"):
        from .diagnose import diagnosis_lines

        lines += [""] + diagnosis_lines(
            o["diagnosis"], bound_name="SLI-aware LP's value" if sli_plan else "LP bound")
    return lines + [_events_line(o)]


def _quantile_cell(q: dict[str, Any], missing: str) -> str:
    """A latency quantile ``{value, low, high}`` as ``value [low,high]``; ``missing`` when the
    grid never reached it (``high`` None: an open interval)."""
    if q["value"] is None:
        return missing
    hi = "inf" if q["high"] is None else f"{q['high']:.3g}"
    return f"{q['value']:.3g} [{q['low']:.3g},{hi}]"


def _goodput_table(o: dict[str, Any]) -> list[str]:
    """``simulate --slo``: per target and class, the share of arrivals meeting it and their
    rate per GPU, with 95% intervals."""
    good = o.get("goodput")
    if not good:
        return []
    label = {"wait": "wait", "ttft": "TTFT", "decode_wait": "decode wait", "e2e": "E2E",
             "tpot": "TPOT"}
    w = max(14, *(len(k) for g in good.values() for k in g["classes"]))
    lines = ["", f"{'goodput':<{w}} {'target':<20} {'share of arrivals':>22} "
                 f"{'meeting it (/s per GPU)':>26}"]

    def cell(v, digits):
        if v["mean"] is None:
            return "-"
        half = "" if v["ci95"] is None else f" ± {v['ci95']:.2g}"
        return f"{v['mean']:.{digits}g}{half}"

    for metric, g in good.items():
        target = f"{label[metric]} <= {g['target']:g} s"
        for k, (name, c) in enumerate(g["classes"].items()):
            lines.append(f"{name[:w]:<{w}} {target if k == 0 else '':<20} "
                         f"{cell(c['share'], 4):>22} {cell(c['per_gpu_per_second'], 4):>26}")
    lines += _wrap("  each target on its own (a request meeting two is not counted apart); a "
                   "request that abandons meets none")
    return lines


def _latency_table(o: dict[str, Any]) -> list[str]:
    """``simulate --latency``: per class, the requests started in the window and the p50, p90
    and p99 of their prefill wait, time to first token and decode wait, with 95% intervals."""
    lat = o.get("latency")
    if not lat:
        return []

    def cell(q):
        return _quantile_cell(q, "beyond 1000 s")

    w = min(max(12, *(len(k) for k in lat)), 14)
    lines = ["", f"{'latency (s)':<{w}} {'requests':>9} {'':4} {'p50 [95% CI]':>22} "
                 f"{'p90 [95% CI]':>22} {'p99 [95% CI]':>22}"]
    kinds = [(k, label) for k, label in (("wait", "wait"), ("ttft", "TTFT"),
                                         ("decode_wait", "dec."), ("e2e", "E2E"),
                                         ("tpot", "TPOT")) if k in next(iter(lat.values()))]
    for name, row in lat.items():
        for what, label in kinds:
            first = name[:w] if what == "wait" else ""
            count = f"{row['started']:>9,}" if what == "wait" else " " * 9
            on_decodes = what not in ("wait", "ttft")
            none = row["decodes_started" if on_decodes else "started"] == 0
            lines.append(f"{first:<{w}} {count} {label:<4} "
                         + " ".join(f"{'-' if none else cell(row[what][p]):>22}"
                                    for p in ("p50", "p90", "p99")))
    note = ("  wait: for a prefill slot; TTFT: that wait plus the prefill (requests whose "
            "prefill started in the window); dec.: the wait in the decode buffer (decodes "
            "started in the window)")
    if any(k == "e2e" for k, _ in kinds):
        note += ("; E2E: from arrival to the end of the decode (decodes started in the window; "
                 "abandoned requests have none)")
    else:
        note += ("; the end-to-end latency and TPOT are not measured under a phase-type "
                 "prefill (their counters need exponential prefill times)")
    if any(k == "tpot" for k, _ in kinds):
        atoms = lat["all"]["tpot"]["atoms"] if "all" in lat else []
        shares = ", ".join(f"{a['share']:.3g} at {1e3 * a['seconds']:.3g} ms"
                           for a in atoms if a["share"] is not None)
        note += ("; TPOT: the per-token time of the GPU a request decodes on (mixed or solo), "
                 "so only two values occur" + (f" (all classes: {shares})" if shares else ""))
    lines += _wrap(note)
    return lines


def _params_lines(o: dict[str, Any]) -> list[str]:
    """A tuned family's parameters, four significant digits."""
    import textwrap

    def number(v):
        return f"[{', '.join(map(number, v))}]" if isinstance(v, list) else f"{v:.4g}"

    parts = [f"{k} = {number(v)}" for k, v in o["params"].items()]
    made = o.get("tuned_for") or {}
    where = ("" if not made.get("scenario") else
             f" (tuned for {made['scenario']}, n = {made.get('gpus')})")
    return textwrap.wrap(f"parameters{where}: " + ", ".join(parts), WIDTH,
                         initial_indent="  ", subsequent_indent="    ")


def _name_width(o: dict[str, Any]) -> int:
    return min(max(12, *(len(c["name"]) for c in o["classes"])), 22)


def _class_table(o: dict[str, Any]) -> list[str]:
    w = _name_width(o)
    cols = (("throughput", "jobs/s per GPU", "completion_rate", 1.0),
            ("abandoned", "% of arrivals", "abandonment", 100.0),
            ("prefill wait", "s, mean", "prefill_wait", 1.0),
            ("decode wait", "s, mean", "decode_wait", 1.0))
    lines = ["", f"{'class':<{w}}" + "".join(f"{c[0]:>18}" for c in cols),
             f"{'':<{w}}" + "".join(f"{c[1]:>18}" for c in cols)]
    for c in o["classes"]:
        lines.append(f"{c['name'][:w]:<{w}}"
                     + "".join(f"{fmt(c[key], 4, scale):>18}" for _, _, key, scale in cols))
    lines.append("waits: mean time a job spends in each buffer (Little's law), abandoning jobs "
                 "included")
    return lines


def _verdict(entry, target) -> str:
    if target is None or entry is None or entry.get("mean") is None:
        return ""
    mean, ci = entry["mean"], entry.get("ci95") or 0.0
    if mean - ci > target:
        return "MISSED"
    if mean + ci <= target:
        return "met"
    return "met?" if mean <= target else "missed?"


def _sli_table(o: dict[str, Any]) -> list[str]:
    lines = ["", f"{'service levels (paper Sec. 5)':<34}{'achieved':>20}{'LP plan':>12}"
                 f"{'target':>10}  verdict"]
    for key, entry in o["sli"].items():
        label, unit = _NAMES[key]
        target = entry.get("target")
        plan = entry.get("plan")
        lines.append(f"{label + ' (' + unit + ')':<34}{fmt(entry, 4):>20}"
                     f"{'-' if plan is None else f'{_clean(plan):.4g}':>12}"
                     f"{'-' if target is None else f'{target:.4g}':>10}  "
                     f"{_verdict(entry, target)}")
    lines.append("X = sum_i x_i (prefills in service per GPU); fairness = largest difference "
                 "between classes")
    if any(e.get("target") is not None for e in o["sli"].values()):
        lines.append("verdict: met / MISSED beyond the 95% interval; met? / missed? within it")
    return lines


def _details(o: dict[str, Any]) -> list[str]:
    rows = (("prefills in service x", "jobs/GPU", "x", "x"),
            ("decodes at mixed speed y_mixed", "jobs/GPU", "y_mixed", "y_mixed"),
            ("decodes at solo speed y_solo", "jobs/GPU", "y_solo", "y_solo"),
            ("waiting for prefill q_prefill", "jobs/GPU", "q_prefill", "q_prefill"),
            ("waiting for decode q_decode", "jobs/GPU", "q_decode", "q_decode"),
            ("arrivals", "/s per GPU", "arrival_rate", None),
            ("prefills completed", "/s per GPU", "prefill_completion_rate", None),
            ("decodes completed", "/s per GPU", "completion_rate", "completion_rate"),
            ("prefill abandonments", "/s per GPU", "prefill_abandonment_rate", None),
            ("decode abandonments", "/s per GPU", "decode_abandonment_rate", None))
    lines = []
    for c in o["classes"]:
        lines += ["", f"{c['name'] + ' (time averages)':<44}{'simulated':>24}{'LP plan':>14}"]
        for label, unit, key, plan_key in rows:
            plan = c.get("plan", {}).get(plan_key) if plan_key else None
            lines.append(f"  {label + ' (' + unit + ')':<42}{fmt(c[key], 5):>24}"
                         f"{'-' if plan is None else f'{_clean(plan):.5g}':>14}")
    return lines


def _events_line(o: dict[str, Any]) -> str:
    rate = o["events_per_second"]
    rate_text = "" if rate is None or not math.isfinite(rate) else f"{rate / 1e6:.3g} M/s; "
    chunks = f", chunks of {o['chunk_events']:,} steps" if o.get("chunk_events") else ""
    return (f"events: {o['events']:,} in {o['wall_seconds']:.1f} s ({rate_text}"
            f"compilation {o['compile_seconds']:.1f} s; {o['devices']} device"
            f"{'s' if o['devices'] != 1 else ''}{chunks})")


# ---- lp ---------------------------------------------------------------------------------------
def lp_lines(o: dict[str, Any]) -> list[str]:
    """The ``jaxqueue lp`` tables."""
    lines = [f"{o['scenario']}: {o['pricing']} fluid LP, per GPU (rates per second)",
             f"revenue per GPU per second R* = {_clean(o['revenue']):.6f}"]
    if o.get("penalties"):
        lines.append(f"penalized objective = revenue - penalty = {_clean(o['revenue']):.6f} - "
                     f"{_clean(o['penalty']):.6g} = {_clean(o['objective']):.6f}")
        for name, p in o["penalties"].items():
            unit = "s" if name == "tpot" else "jobs/GPU"
            lines.append(f"  {name}: {p['value']:.6g} {unit} at the optimum, target "
                         f"{p['target']:.6g} {unit}: excess {p['excess']:.3g} x weight "
                         f"{p['weight']:g} = penalty {p['penalty']:.6g}")
            if p.get("smallest") is not None and p["smallest"] > p["target"]:
                lines.append(f"    no plan meets this target: the smallest {name} any plan can "
                             f"give is {p['smallest']:.6g} {unit}")
            elif p["excess"] > 0:
                lines.append("    violated: at this weight, meeting the target would cost more "
                             "revenue than the penalty it saves")
        lines.append("  a weight is revenue per GPU per second per unit of excess")
        lines.append("  (per second of TPOT, per job per GPU of fairness)")
    lines.append(f"prefill occupancy sum x = {_clean(o['mixed_fraction']):.6f} (mixed GPUs "
                 f"M = ceil(n sum x))")
    lines.append(f"solo decoding efficient (Prop. 3.2, gamma tau >= (B-1)/B): "
                 f"{'yes' if o['solo_efficient'] else 'no'}")
    w = min(max(12, *(len(c["name"]) for c in o["classes"])), 22)
    keys = ("x", "y_mixed", "y_solo", "q_prefill", "q_decode")
    lines.append(f"{'class (jobs per GPU)':<{max(w, 20)}}" + "".join(f"{k:>12}" for k in keys))
    for c in o["classes"]:
        lines.append(f"{c['name'][:w]:<{max(w, 20)}}"
                     + "".join(f"{_clean(c[k]):>12.5f}" for k in keys))
    s = o["sli"]
    lines.append(f"SLIs at the optimum: prefill fairness {_clean(s['prefill_fairness']):.6g} "
                 f"jobs/GPU, decode fairness {_clean(s['decode_fairness']):.6g} jobs/GPU,")
    lines.append(f"  TPOT {s['tpot']:.6g} s")
    if o.get("unique") is False:
        lines.append(f"the LP optimum is not unique: plans that earn the same (within "
                     f"{o['optimum_tolerance']:.1g}) differ in")
        for k, per in o["alternative_optima"].items():
            for name, (lo, hi) in per.items():
                lines.append(f"  {k}[{name}] from {_clean(lo):.5f} to {_clean(hi):.5f}")
        lines.append("  the table shows the one HiGHS returned; the policies follow that one")
    elif o.get("unique"):
        lines.append("the LP optimum is unique (checked: every quantity has one optimal value)")
    return lines


# ---- validate -----------------------------------------------------------------------------------
def exact_check_lines(title: str, rows: list[tuple[str, dict[str, Any]]], verdict: str,
                      criterion: str) -> list[str]:
    """A table of simulated values against exact ones, and its verdict with the criterion."""
    lines = [*title.split("\n"), f"{'quantity':<36}{'simulated':>24}{'exact':>14}{'z':>8}  verdict"]
    for label, r in rows:
        lines.append(f"{label:<36}{fmt(r, 6):>24}{r['exact']:>14.6g}{r['z']:>8.2f}  "
                     f"{'agree' if r['agree'] else 'DISAGREE'}")
    return lines + [f"verdict: {verdict.upper()} ({criterion})"]


def convergence_lines(cv: dict[str, Any], prefix: str = "") -> list[str]:
    """The convergence table (``jaxqueue convergence``, ``jaxqueue validate convergence``) and
    its verdict."""
    lines = [f"{prefix}{cv['scenario']} / {cv['policy']}: {cv['pricing']} revenue per GPU per "
             f"second against the LP bound",
             f"  {cv['reps']} replications, horizon {cv['horizon']:g} s, warm-up "
             f"{cv['warmup']:g} s; ± is a 95% confidence interval",
             f"{'n':>6}{'M (mixed)':>11}{'simulated':>24}{'LP R*':>11}{'gap':>9}{'gap %':>8}"
             f"{'wall s':>9}"]
    for r in cv["rows"]:
        lines.append(f"{r['gpus']:>6}{r['mixed_gpus']:>11}{fmt(r['revenue'], 6):>24}"
                     f"{r['lp_revenue']:>11.3f}{r['gap']:>9.3f}{100 * r['relative_gap']:>7.2f}%"
                     f"{r['wall_seconds']:>9.1f}")
    bound, trend = cv.get("bound"), cv.get("trend")
    checks = []
    if bound is not None:
        worst = max((r["z_above_bound"] for r in cv["rows"] if r["z_above_bound"] is not None),
                    default=None)
        checks.append(f"(1) bound: {'yes' if bound else 'NO'}, no revenue above R* by more "
                      f"than 3 standard errors (largest z = "
                      f"{'n/a' if worst is None else f'{worst:.2f}'})")
    else:
        checks.append("(1) bound: not checked (solo decoding is not the more efficient mode, "
                      "Prop. 3.2)")
    if trend is None:
        checks.append("(2) trend: not checked (needs two n or more and two replications)")
    else:
        checks.append(f"(2) trend: {'yes' if trend else 'NO'}, the revenue at n = "
                      f"{cv['rows'][-1]['gpus']} exceeds that at n = {cv['rows'][0]['gpus']} by "
                      f"{cv['trend_z']:.1f} standard errors (needs > 3)")
    lines.append(f"verdict: {cv['verdict'].upper()}")
    lines += [f"  {c}" for c in checks]
    return lines


# ---- compare ------------------------------------------------------------------------------------
def _signed(entry: dict[str, Any] | None) -> str:
    """``+1.23 ± 0.45`` (a paired difference)."""
    if entry is None or entry.get("mean") is None:
        return "n/a"
    mean = _clean(entry["mean"])
    if entry.get("ci95") is None:
        return f"{mean:+.2f}"
    return f"{mean:+.2f} ± {_ci_text(entry['ci95'], mean)}"


def compare_lines(o: dict[str, Any]) -> list[str]:
    """The ``jaxqueue compare`` tables: the ranking with paired differences and each policy's gap
    to its own pricing's LP bound, abandonment by class, achieved SLIs, and the diagnoses."""
    from .diagnose import diagnosis_lines

    pricing = o["pricing"]
    rows = o["policies"]
    lines = [f"{o['scenario']}, n = {o['gpus']} GPUs: policies on common random numbers "
             f"(replication r of every policy",
             f"  draws from fold_in(key({o.get('seed', 0)}), r)); horizon {o['horizon']:g} s, "
             f"warm-up {o['warmup']:g} s; {o['reps']} replications pooled, "
             f"{o['per_gpu_reps']} per-GPU",
             f"  LP bounds R*: bundled {o['lp_bound']['bundled']:.2f}, separate "
             f"{o['lp_bound']['separate']:.2f}; ranked by {pricing} revenue per GPU per second"]
    if o["interrupted"]:
        lines.append(f"INTERRUPTED: the {len(rows)} policies below finished; the rest did not "
                     "run")
    if not rows:
        return lines
    w = _policy_width(rows)
    lines += ["", f"{'rank':<5}{'policy':<{w}} {'engine':<8}{'reps':>4}{pricing + ' revenue':>18}"
                  f"{'- best, paired':>16}  {'own LP bound':<15}{'gap':>7}"]
    for r in rows:
        own = r["revenue"][r["pricing"]]
        diff = "best" if r["difference_to_best"] is None else _signed(r["difference_to_best"])
        mark = "" if r["origin"] == "paper" else "*"
        lines.append(f"{r['rank']:>3}  {(r['name'] + mark)[:w]:<{w}} {r['engine']:<8}"
                     f"{r['reps']:>4}{' ' + fmt(r['revenue'][pricing], 5):>18}{' ' + diff:>16}  "
                     f"{r['lp_bound']:>6.2f} {r['pricing']:<8}{100 * r['relative_gap']:>6.1f}%")
        if r["pricing"] != pricing:
            lines.append(f"{'':5}{'':<{w}} its {r['pricing']} revenue: {fmt(own, 5)}, "
                         f"{100 * r['relative_gap']:.1f}% below its own LP bound")
    both = (f" (the first {o['per_gpu_reps']} when either is per-GPU)"
            if o["per_gpu_reps"] < o["reps"] else "")
    lines += _wrap(f"  ± : 95% intervals. - best: the per-replication difference to the best, "
                   f"paired on common random numbers over the replications both ran{both}. "
                   "gap: below the LP bound of the policy's own pricing, under that pricing "
                   "(separate pricing: the separate LP)", hang=0)
    if any(r["origin"] != "paper" for r in rows):
        lines.append("  * not one of the paper's policies: jaxqueue's own (jaxqueue policies) "
                     "or a tuned file")
    lines += _compare_abandonment(rows, w) + _compare_sli(rows, w) + _compare_latency(rows, w)
    diagnosed = [r for r in rows if r.get("diagnosis")]
    suggestions: list[str] = []
    for r in diagnosed:
        lines += ["", f"{r['name']}:"] + diagnosis_lines(
            r["diagnosis"], indent="  ", bound_name=f"{r['pricing']} LP bound",
            suggestions=False)
        for t in r["diagnosis"]["suggestions"]:
            head = t.split(" (")[0]
            if not t.startswith("jaxqueue compare") and all(
                    u.split(" (")[0] != head for u in suggestions):
                suggestions.append(t)
    suggestions.sort(key=lambda t: (t.startswith("more GPUs"), t.startswith("jaxqueue tune")))
    if diagnosed:
        best = rows[0]
        lines += ["", f"what to try for the {len(diagnosed)} polic"
                      f"{'y' if len(diagnosed) == 1 else 'ies'} more than 5% below "
                      f"{'its' if len(diagnosed) == 1 else 'their'} bound:",
                  *(ln for t in [f"the best here: {best['name']} "
                                 f"({100 * best['relative_gap']:.1f}% below its bound)",
                                 *suggestions]
                    for ln in _wrap(f"  - {t}"))]
    lines += ["", *_wrap(f"wall time {o['wall_seconds']:.0f} s, "
                         f"{sum(r['compile_seconds'] for r in rows):.0f} s of it compiling; "
                         f"sizing: {o['sizing_rule']}")]
    return lines


def _policy_width(rows) -> int:
    return min(max(12, *(len(r["name"]) + 1 for r in rows)), 22)


def _wrap(line: str, hang: int = 2) -> list[str]:
    """A line of at most :data:`WIDTH` columns, or several, continued ``hang`` columns further
    in than it starts."""
    import textwrap

    if len(line) <= WIDTH:
        return [line]
    indent = len(line) - len(line.lstrip())
    return textwrap.wrap(line.lstrip(), WIDTH, initial_indent=" " * indent,
                         subsequent_indent=" " * (indent + hang), break_on_hyphens=False,
                         break_long_words=False)


def _compare_abandonment(rows, w) -> list[str]:
    names = [c["name"] for c in rows[0]["classes"]]
    col = max(9, min(16, (WIDTH - w - 5) // max(len(names), 1)))
    short = all(len(n) <= col - 1 for n in names)
    heads = names if short else [f"class {i}" for i in range(1, len(names) + 1)]
    lines = ["", *_wrap("abandoned, % of arrivals: waiting for a prefill + waiting for a decode"
                        + ("" if short else " (classes: " + ", ".join(
                            f"{i} = {n}" for i, n in enumerate(names, start=1)) + ")")),
             f"{'rank':<5}{'policy':<{w}}" + "".join(f"{h[:col - 1]:>{col}}" for h in heads)]

    def cell(c):
        p, d = c["prefill_abandonment"]["mean"], c["decode_abandonment"]["mean"]
        if p is None or d is None:
            return "n/a"
        return f"{100 * p:.0f} + {100 * d:.0f}"
    for r in rows:
        lines.append(f"{r['rank']:>3}  {r['name'][:w]:<{w}}"
                     + "".join(f"{cell(c):>{col}}" for c in r["classes"]))
    return lines


def _compare_sli(rows, w) -> list[str]:
    keys = (("tpot_formula", "TPOT(X) ms", 1e3), ("tpot_experienced", "TPOT seen ms", 1e3),
            ("prefill_fairness", "prefill fair.", 1.0), ("decode_fairness", "decode fair.", 1.0))
    col = (WIDTH - 5 - w) // len(keys)
    lines = ["", "service levels achieved (docs/model.md Sec. 7): TPOT in milliseconds, "
                 "fairness in jobs per GPU",
             f"{'rank':<5}{'policy':<{w}}" + "".join(f"{h:>{col}}" for _, h, _ in keys)]
    for r in rows:
        lines.append(f"{r['rank']:>3}  {r['name'][:w]:<{w}}"
                     + "".join(f"{' ' + fmt(r['sli'][k], 4, scale):>{col}}"
                               for k, _, scale in keys))
    return lines


def _compare_latency(rows, w) -> list[str]:
    """``compare --latency``: each policy's time to first token over all classes."""
    if not any("latency" in r for r in rows):
        return []

    def cell(q):
        return _quantile_cell(q, "-")

    lines = ["", f"{'TTFT, all classes (s)':<{w + 5}}{'p50 [95% CI]':>22} {'p90 [95% CI]':>22} "
                 f"{'p99 [95% CI]':>22}"]
    for r in rows:
        lat = r.get("latency")
        if lat is None:
            lines.append(f"{'':5}{r['name'][:w]:<{w}} not measured (measured: pooled "
                         "gate-and-route, fg-sp, prioritize-and-route)")
            continue
        t = lat["all"]["ttft"]
        lines.append(f"{'':5}{r['name'][:w]:<{w}}"
                     + " ".join(f"{cell(t[p]):>22}" for p in ("p50", "p90", "p99")))
    return lines


def capacity_lines(o: dict[str, Any]) -> list[str]:
    """``jaxqueue capacity``: the answer, what binds, the points each search ran, and the
    confirmation on a fresh key."""
    targets = [f"{k} <= {v:g} s" for k, v in o["slos"].items()]
    if o["max_abandon"] is not None:
        targets.append(f"abandonment <= {100 * o['max_abandon']:g}%")
    lines = [*_wrap(f"{o['scenario']} / {o['policy']}: {o['traffic']:g} requests/s; targets "
                    f"{', '.join(targets)} (over all classes unless @CLASS, met with 95% "
                    "confidence); "
                    f"{o['reps']} replications x {o['horizon']:g} s (warm-up {o['warmup']:g} s) "
                    f"per point, seed {o['seed']}"), ""]
    extra = o["mixed_gpus"] - o["planned_mixed_gpus"]
    lines += _wrap(f"answer: n* = {o['gpus']} GPUs, {o['mixed_gpus']} of them mixed (prefill) "
                   + (f"GPUs, {extra} more than the static plan's {o['planned_mixed_gpus']}"
                      if extra > 0 else "GPUs, the static plan's number"))
    if o["binding_at_one_gpu_fewer"]:
        lines.append(f"  with one GPU fewer it fails: {', '.join(o['binding_at_one_gpu_fewer'])}")
    at = next(p for p in o["gpu_points"] if p["n"] == o["gpus"])
    if o["max_abandon"] is None and at["abandon"]["mean"] > 0.01:
        lines += _wrap(f"  note: {100 * at['abandon']['mean']:.1f}% of the requests abandon at "
                       "this answer (the latency targets count the requests served only): "
                       "bound it with --max-abandon")
    names = list(o["slos"])

    def cell(m):
        if m["value"] is None:
            return "-"
        hi = "inf" if m["high"] is None else f"{m['high']:.3g}"
        return f"{m['value']:.3g} (<={hi})"

    width = {k: max(16, len(k)) for k in names}
    head = (f"{'n':>7} {'mixed':>6} {'meets':>5} {'revenue/GPU':>15} {'abandon %':>15} "
            + " ".join(f"{k:>{width[k]}}" for k in names))
    for title, points, side in (
            ("prefill slots (the prefill-side targets only; abandon %: while waiting for "
             "prefill)", o["slot_points"], "prefill_"),
            ("GPUs (every target)", o["gpu_points"], "")):
        if not points:
            continue
        lines += [""] + _wrap(f"search over {title}:") + [head]
        for p in points:
            rev = p["revenue"]
            ci = "" if rev["ci95"] is None else f" ± {rev['ci95']:.2g}"
            ab = p["abandon"]
            mean, high = ab.get(f"{side}mean", ab["mean"]), ab.get(f"{side}high", ab["high"])
            lines.append(f"{p['n']:>7} {p['mixed']:>6} {('yes' if p['ok'] else 'no'):>5} "
                         f"{rev['mean']:>8.2f}{ci:<7} "
                         f"{100 * mean:>6.2f} (<={100 * high:.2f}) "
                         + " ".join(f"{cell(p['metrics'][k]):>{width[k]}}" for k in names))
    lines.append("  latencies: estimate (upper end of its 95% interval), seconds")
    conf = o["confirmation"]
    said = {"answer": "the answer", "one_gpu_fewer": "one GPU fewer",
            "one_mixed_fewer": "one mixed GPU fewer"}
    parts = [f"{said[k]}: {'meets' if v['ok'] else 'fails'}" for k, v in conf.items()]
    verdict = ("confirmed" if o["confirmed"] else
               "NOT confirmed: the answer is within noise of the targets (more --reps)")
    lines += _wrap(f"on a fresh key (seed {o['seed'] + 1}): {'; '.join(parts)}: {verdict}")
    others = o.get("others") or {}
    if others:
        lines += ["", f"the other pooled policies on the answer's GPUs ({o['gpus']}, "
                      f"{o['mixed_gpus']} mixed), same fresh key:"]
        for name, p in others.items():
            rev = p["revenue"]
            ci = "" if rev["ci95"] is None else f" ± {rev['ci95']:.2g}"
            said = "meets every target" if p["ok"] else "fails " + ", ".join(p["failing"])
            lines.append(f"  {name:<22} {said}; revenue/GPU {rev['mean']:.2f}{ci}")
    if o.get("plot"):
        lines.append(f"cost curve: {o['plot']}")
    return lines
