"""Where a policy's revenue goes when it is far below its LP bound, read from the run's own flows.

Every class-i job ends in one of three ways, per GPU per second: ``lambda_i = c_i + a_p,i +
a_d,i``, where ``c_i`` are its decode completions, ``a_p,i`` its abandonments waiting for a
prefill and ``a_d,i`` its abandonments waiting for a decode (after its prefill). The LP's optimum
(the plan a policy follows, or for a policy without planning the bundled LP that bounds it) has
the same balance with its own flows (``a_p,i* = theta_i q_p,i*``, ``a_d,i* = theta_i q_d,i*``),
so the revenue a run earns below the LP's splits exactly, class by class, into what more (or
fewer) jobs than the LP's lost in each buffer:

- bundled pricing (``w_i`` per decode completion): ``w_i (c_i - c_i*) = w_i (lambda_i -
  lambda_i*) - w_i (a_p,i - a_p,i*) - w_i (a_d,i - a_d,i*)``;
- separate pricing (``c_p P_i`` per prefill, ``c_d D_i`` per decode): a prefill abandonment costs
  ``w_i``, a decode abandonment ``c_d D_i`` (its prefill was paid).

The first term is the arrivals' noise; over a short window, jobs still in the system when it
closes hold back the rest. :func:`diagnose` turns this into findings: the decode buffer (jobs
prefilled, then lost, where the LP keeps none), a class admitted to prefill far above or below
the LP's ``x_i*``, the prefill queue, jobs still in the system, and what to try. Flows are
counted events (the headline revenue integrates completion rates instead: the two differ by
noise only). Nothing is said when the run is within :data:`THRESHOLD` of its bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import fluid
from .model import Model

__all__ = ["THRESHOLD", "diagnose", "diagnosis_lines"]

#: A policy more than this share below its LP bound is diagnosed.
THRESHOLD = 0.05
#: Admission against the LP's: a class is over- (under-) admitted when its prefill completions
#: exceed (fall short of) the LP's by this share of its arrivals and its occupancy x by
#: :data:`ADMISSION_RATIO` (or its inverse).
ADMISSION_FLOW = 0.05
ADMISSION_RATIO = 1.25
#: A buffer is named when the revenue it loses beyond the LP's is at least this share of the gap.
MATERIAL = 0.2


def _mean(entry) -> float:
    if isinstance(entry, dict):
        entry = entry.get("mean")
    return float("nan") if entry is None else float(entry)


def _class_flows(model: Model, plan: fluid.Plan, classes: list[dict[str, Any]]):
    """Per-class simulated flows (means) and the LP's, as float arrays of shape ``(I,)``."""
    def sim(key):
        return np.asarray([_mean(c[key]) for c in classes], np.float64)

    theta, mu_p = np.asarray(model.theta, np.float64), np.asarray(model.mu_p, np.float64)
    lam = np.asarray(model.lambda_, np.float64)
    planned = {"arrivals": lam, "x": np.maximum(np.asarray(plan.x, np.float64), 0.0),
               "q_d": np.maximum(np.asarray(plan.q_d, np.float64), 0.0),
               "prefill_abandon": theta * np.maximum(np.asarray(plan.q_p, np.float64), 0.0),
               "decode_abandon": theta * np.maximum(np.asarray(plan.q_d, np.float64), 0.0),
               "completions": plan.completion_rate(model)}
    planned["prefills"] = mu_p * planned["x"]
    simulated = {"arrivals": sim("arrival_rate"), "x": sim("x"), "q_d": sim("q_decode"),
                 "prefill_abandon": sim("prefill_abandonment_rate"),
                 "decode_abandon": sim("decode_abandonment_rate"),
                 "completions": sim("completion_rate"), "prefills": sim("prefill_completion_rate")}
    return simulated, planned


def diagnose(model: Model, plan: fluid.Plan, classes: list[dict[str, Any]], revenue: float, *,
             pricing: str | None = None, bound: float | None = None, gpus: int | None = None,
             scenario: str | None = None, threshold: float = THRESHOLD) -> dict[str, Any] | None:
    """Where the revenue goes when a run is more than ``threshold`` below its LP bound.

    Args:
        model: the scenario.
        plan: the LP the bound comes from (the policy's plan; for a policy that does not plan,
            the LP of its pricing).
        classes: the run's per-class summary (:func:`jaxqueue.stats.summarize_pooled`'s
            ``classes``: ``{mean, ci95}`` entries of ``arrival_rate``, ``x``, ``q_decode``,
            ``completion_rate``, ``prefill_completion_rate``, ``prefill_abandonment_rate`` and
            ``decode_abandonment_rate``, per GPU).
        revenue: the run's mean revenue per GPU per second under ``pricing``.
        pricing: ``"bundled"`` or ``"separate"`` (default: the plan's).
        bound: the LP value to compare with (default ``plan.revenue``).
        gpus: n, for the suggestions.
        scenario: the scenario as the user named it (a built-in name or a TOML path), for the
            suggested commands (default: the model's name).
        threshold: the share below the bound from which a run is diagnosed, in ``[0, 1)``.

    Returns:
        None when ``revenue >= (1 - threshold) * bound``; otherwise a JSON-ready dict: the gap
        (``gap``, ``relative_gap``), per-class flows against the LP's (``classes``), the revenue
        lost beyond the LP's in each buffer (``lost``), ``findings`` (each ``{where, text}``,
        largest loss first) and ``suggestions``.
    """
    pricing = plan.pricing if pricing is None else pricing
    if pricing not in ("bundled", "separate"):
        raise ValueError(f"pricing = {pricing!r} is invalid: must be 'bundled' or 'separate'")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold = {threshold!r} is invalid: must be in [0, 1)")
    if len(classes) != model.num_classes:
        raise ValueError(f"classes has {len(classes)} entries but model {model.name!r} has "
                         f"{model.num_classes} classes")
    bound = float(plan.revenue if bound is None else bound)
    revenue = float(revenue)
    if not (np.isfinite(revenue) and bound > 0) or revenue >= (1 - threshold) * bound:
        return None
    sim, lp = _class_flows(model, plan, classes)
    prompt = float(model.c_p) * np.asarray(model.P, np.float64)
    output = float(model.c_d) * np.asarray(model.D, np.float64)
    whole = prompt + output
    per_decode_loss = whole if pricing == "bundled" else output
    lost = {"decode_buffer": (sim["decode_abandon"] - lp["decode_abandon"]) * per_decode_loss,
            "prefill_queue": (sim["prefill_abandon"] - lp["prefill_abandon"]) * whole,
            "arrivals": -(sim["arrivals"] - lp["arrivals"]) * whole}
    if pricing == "bundled":
        earned = whole * (sim["completions"] - lp["completions"])
    else:
        earned = (prompt * (sim["prefills"] - lp["prefills"])
                  + output * (sim["completions"] - lp["completions"]))
    # What the flow balance leaves over: jobs that entered and had not left when the window
    # closed (a stock still growing: a short window), valued as the revenue they hold back.
    lost["in_system"] = -(earned + lost["decode_buffer"] + lost["prefill_queue"]
                          + lost["arrivals"])
    names = list(model.class_names)
    gap = bound - revenue
    rows = []
    for i, name in enumerate(names):
        lam = sim["arrivals"][i] if sim["arrivals"][i] > 0 else float(model.lambda_[i])
        rows.append({
            "name": name, "revenue_against_lp": float(earned[i]),
            "x": sim["x"][i], "x_lp": lp["x"][i],
            "prefills": sim["prefills"][i], "prefills_lp": lp["prefills"][i],
            "q_decode": sim["q_d"][i], "q_decode_lp": lp["q_d"][i],
            "prefill_abandon_share": sim["prefill_abandon"][i] / lam,
            "prefill_abandon_share_lp": lp["prefill_abandon"][i] / float(model.lambda_[i]),
            "decode_abandon_share": sim["decode_abandon"][i] / lam,
            "decode_abandon_share_lp": lp["decode_abandon"][i] / float(model.lambda_[i]),
            "decode_lost": float(lost["decode_buffer"][i]),
            "prefill_lost": float(lost["prefill_queue"][i]),
        })
    findings = []
    decode_lost = float(np.sum(lost["decode_buffer"]))
    over, under = _admission(model, sim, lp, names)
    if decode_lost >= MATERIAL * gap:
        findings.append({"where": "decode buffer", "lost": decode_lost,
                         "text": _decode_text(sim, lp, names, decode_lost, pricing)})
    for i in over:
        findings.append({"where": "prefill admission", "class": names[i],
                         "lost": max(float(-earned[i]), 0.0),
                         "text": _over_text(model, sim, lp, names, i,
                                            decode_lost >= MATERIAL * gap)})
    prefill_lost = float(np.sum(lost["prefill_queue"]))
    if prefill_lost >= MATERIAL * gap or under:
        findings.append({"where": "prefill queue", "lost": prefill_lost,
                         "text": _prefill_text(sim, lp, names, prefill_lost, under)})
    elif prefill_lost <= -MATERIAL * gap:
        findings.append({"where": "prefill queue", "lost": prefill_lost,
                         "text": _prefill_text(sim, lp, names, prefill_lost, under)})
    held = float(np.sum(lost["in_system"]))
    if held >= MATERIAL * gap:
        findings.append({"where": "still in the system", "lost": held, "text": (
            f"still in the system: the jobs present grew during the window, holding back "
            f"{held:.1f} of revenue per GPU per second: the run is too short to reach the "
            "steady state (a longer --warmup and --horizon)")})
    if not findings:
        findings.append({"where": "nowhere in particular", "lost": gap, "text": (
            "no buffer loses much more than the LP's: the flows are close to the LP's, and the "
            "gap is the cost of finite n (random arrivals and services around the fluid "
            "optimum)")})
    order = {"decode buffer": 0, "prefill admission": 1}
    findings.sort(key=lambda f: (order.get(f["where"], 2), -f["lost"]))
    return {
        "pricing": pricing, "revenue": revenue, "bound": bound, "gap": gap,
        "relative_gap": gap / bound, "threshold": threshold,
        "classes": rows, "lost": {k: float(np.sum(v)) for k, v in lost.items()},
        "findings": findings,
        "suggestions": _suggestions(findings, scenario or model.name, gpus),
    }


def _admission(model, sim, lp, names):
    """Classes admitted to prefill far above and far below the LP's x*."""
    lam = np.asarray(model.lambda_, np.float64)
    over, under = [], []
    for i in range(len(names)):
        extra = sim["prefills"][i] - lp["prefills"][i]
        if extra >= ADMISSION_FLOW * lam[i] and sim["x"][i] >= ADMISSION_RATIO * lp["x"][i]:
            over.append(i)
        elif extra <= -ADMISSION_FLOW * lam[i] and sim["x"][i] * ADMISSION_RATIO <= lp["x"][i]:
            under.append(i)
    return over, under


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _decode_text(sim, lp, names, lost, pricing) -> str:
    lam = sim["arrivals"]
    shares = [f"{_pct(sim['decode_abandon'][i] / lam[i])} of {name}"
              for i, name in enumerate(names) if sim["decode_abandon"][i] > 0.005 * lam[i]]
    planned_none = bool(np.all(lp["decode_abandon"] <= 1e-12))
    lp_flow = ("the LP: none" if planned_none
               else f"the LP: {np.sum(lp['decode_abandon']):.2f}")
    waits = _listing([f"{q:.2f}" for q in sim["q_d"]])
    lp_q = "none" if np.all(lp["q_d"] <= 1e-12) else _listing([f"{q:.2f}" for q in lp["q_d"]])
    wasted = ("prefill work included" if pricing == "bundled"
              else "their prefills were paid, their decodes are lost")
    return (f"decode buffer: {np.sum(sim['decode_abandon']):.2f} jobs/s per GPU abandon "
            f"waiting for a decode slot after their prefill ("
            f"{_listing(shares) + ' arrivals' if shares else 'none'}; "
            f"{lp_flow}); {waits} jobs per GPU wait there (the LP: {lp_q}): {lost:.1f} of "
            f"revenue per GPU per second lost, {wasted}")


def _over_text(model, sim, lp, names, i, decode_congested: bool) -> str:
    if lp["x"][i] > 0:
        text = (f"prefill admission: {names[i]} admitted at x = {sim['x'][i]:.3g} per GPU, "
                f"{sim['x'][i] / lp['x'][i]:.1f}x the LP's {lp['x'][i]:.2g} "
                f"({sim['prefills'][i]:.2g} prefills/s per GPU against {lp['prefills'][i]:.2g})")
    else:
        text = (f"prefill admission: {names[i]} admitted at x = {sim['x'][i]:.3g} per GPU "
                f"({sim['prefills'][i]:.2g} prefills/s per GPU) where the LP admits none")
    if decode_congested:
        others = [n for j, n in enumerate(names) if j != i]
        text += (f": its decodes (D = {float(model.D[i]):g} tokens) take decode slots the LP "
                 f"keeps for {_listing(others) if others else 'others'}")
    return text


def _prefill_text(sim, lp, names, lost, under) -> str:
    lam = sim["arrivals"]
    rows = [f"{name} {_pct(sim['prefill_abandon'][i] / lam[i])} against the LP's "
            f"{_pct(lp['prefill_abandon'][i] / lam[i])}" for i, name in enumerate(names)
            if abs(sim["prefill_abandon"][i] - lp["prefill_abandon"][i]) > 0.01 * lam[i]]
    if lost < 0:
        return (f"prefill queue: fewer abandon waiting for a prefill than the LP plans "
                f"({_listing(rows or ['every class close to the LP'])}): {-lost:.1f} gained")
    text = (f"prefill queue: {_listing(rows or ['every class close to the LP'])} abandon "
            f"waiting for a prefill: {lost:.1f} lost")
    if under:
        text += "; " + _listing([f"{names[i]} admitted at x = {sim['x'][i]:.3g} per GPU, "
                                 f"{sim['x'][i] / lp['x'][i]:.2f}x the LP's {lp['x'][i]:.2g}"
                                 for i in under])
    return text


def _suggestions(findings, scenario, gpus) -> list[str]:
    where = {f["where"] for f in findings}
    n = "N" if gpus is None else str(gpus)
    name = scenario or "SCENARIO"
    out = []
    if "still in the system" in where:
        out.append("a longer run: a warm-up several times the longest decode (D / gamma "
                   "seconds) and a horizon several times that")
    if "decode buffer" in where:
        out.append("a policy that never prefills a job it cannot decode: gi-wsp or "
                   "gi-wsp-after (a decode stays in its prefill's slot: no decode buffer)")
        out.append(f"jaxqueue tune {name} --gpus {n} (the gated family's slack and caps hold "
                   "prefills back while decode slots are full)")
    elif "prefill admission" in where or "prefill queue" in where:
        out.append(f"jaxqueue tune {name} --gpus {n} (gate targets and caps move admission "
                   "between classes)")
    out.append(f"jaxqueue compare {name} --gpus {n} (every policy on common random numbers)")
    out.append("more GPUs: the gap to the fluid bound shrinks as n grows, slowly")
    return out


def diagnosis_lines(d: dict[str, Any] | None, indent: str = "", bound_name: str = "LP bound",
                    suggestions: bool = True) -> list[str]:
    """The diagnosis as text lines of at most 100 columns (none for None), with what to try
    unless ``suggestions`` is False."""
    import textwrap

    if d is None:
        return []
    width = 100 - len(indent)

    def wrap(text, first="  - ", rest="    "):
        return [indent + line for line in textwrap.wrap(
            text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False,
            break_long_words=False)]  # never split a class name or a path

    out = wrap(f"diagnosis: {100 * d['relative_gap']:.1f}% below the {bound_name} "
               f"({d['revenue']:.2f} against {d['bound']:.2f}). Where the revenue goes (flows "
               f"per GPU per second against the LP's, {d['pricing']} pricing, counted events):",
               first="", rest="")
    for f in d["findings"]:
        out += wrap(f["text"])
    against = ", ".join(f"{c['name']} {c['revenue_against_lp']:+.1f}" for c in d["classes"])
    out += wrap(f"revenue by class against the LP's: {against}", first="  ")
    if suggestions:
        out.append(f"{indent}  what to try:")
        for s in d["suggestions"]:
            out += wrap(s)
    return out
