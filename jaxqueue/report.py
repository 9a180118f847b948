"""The reproduction report: the paper's claims judged from computed numbers, as ``REPORT.md``.

``jaxqueue reproduce`` runs the experiments (``experiments/``), each writing a JSON file of its
numbers; :func:`write` turns a folder of them into ``REPORT.md`` (:func:`render`): the verdict
of every claim with its rule and evidence, then per experiment its settings, figures, key
numbers, the text that explains them (Fig. 7's collapses, the gap map's regions, Fig. 9's TPOT
along beta) and its claims. The verdicts come from these modules, read in this order:

- :mod:`jaxqueue.verdicts`: the verdicts, the thresholds and the trend fits every rule uses;
- :mod:`jaxqueue.paper_claims`: the judges of the paper's figures and of Table 1;
- :mod:`jaxqueue.gap_claims`: the judges of the finite-n gap map (beyond the paper);
- :mod:`jaxqueue.results`: the experiments' JSON read and judged (:func:`judge_all`).

Their public names are re-exported here, so ``from jaxqueue import report`` gives them all
(``report.fit_limit``, ``report.judge_all``, ...). Nothing here runs a simulation or imports
matplotlib: the report can be rebuilt from the JSON files alone.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .gap_claims import (
    GAP_MARGIN,
    flagged_runs,
    fmt_num,
    fmt_ratio,
    fmt_runs,
    gap_flag,
    gap_ratio,
    gap_regions,
    judge_gap_limit,
    judge_gap_within,
    worst_gap,
)
from .paper_claims import (
    COLLAPSE,
    collapse_rows,
    face_cells,
    judge_backlog,
    judge_bands,
    judge_batch,
    judge_beta,
    judge_convergence,
    judge_decode_buffer,
    judge_dolly,
    judge_fairness,
    judge_occupancy,
    judge_policies,
    judge_price_ratio,
    judge_queues,
    judge_sli_points,
    judge_tpot,
    policy_table,
)
from .results import (
    backlog_series,
    claims_of,
    face_bounds,
    judge_all,
    level_deviations,
    load_results,
)
from .verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    LIMIT_LEVEL,
    LIMIT_REVENUE,
    NOT_COMPARABLE,
    RATES,
    TOL_REVENUE,
    TOL_TARGET,
    TREND_MIN_N,
    VERDICTS,
    Claim,
    face_deviation,
    fit_limit,
    fit_power_law,
    fmt_limit,
    trend_rule,
    trend_verdict,
)

__all__ = [
    # REPORT.md (this module)
    "backlog_lines", "beta_tpot_text", "render", "write",
    # verdicts
    "FAILS", "HOLDS", "INCONCLUSIVE", "LIMIT_LEVEL", "LIMIT_REVENUE", "NOT_COMPARABLE", "RATES",
    "TOL_REVENUE", "TOL_TARGET", "TREND_MIN_N", "VERDICTS", "Claim", "face_deviation",
    "fit_limit", "fit_power_law", "fmt_limit", "trend_rule", "trend_verdict",
    # paper_claims
    "COLLAPSE", "collapse_rows", "face_cells", "judge_backlog", "judge_bands", "judge_batch",
    "judge_beta", "judge_convergence", "judge_decode_buffer", "judge_dolly", "judge_fairness",
    "judge_occupancy", "judge_policies", "judge_price_ratio", "judge_queues",
    "judge_sli_points", "judge_tpot", "policy_table",
    # gap_claims
    "GAP_MARGIN", "flagged_runs", "fmt_ratio", "fmt_runs", "gap_flag", "gap_ratio",
    "gap_regions", "judge_gap_limit", "judge_gap_within",
    # results
    "backlog_series", "claims_of", "face_bounds", "judge_all", "level_deviations",
    "load_results",
]


# ---- Fig. 7's collapses -----------------------------------------------------------------------
_GF_WSP_WHY = (
    "GF-WSP's collapses are the policy's behaviour, not a defect of the simulator. GF-WSP has no "
    "static planning and routes prefill-first: every GPU may run a prefill, and a GPU whose "
    "prefill finishes admits the next prefill before that request's decode is placed. On a "
    "high-beta instance a step with a prefill is long (tau = alpha + beta C) and every decode on "
    "a GPU running a prefill is slow (mu_m = 1/(D tau)); the policy nevertheless keeps far more "
    "prefills in service than the plan (x per GPU against sum x* in the table), so almost every "
    "GPU decodes at the mixed speed, decodes pile up in the FCFS decode buffer (q_d per GPU; the "
    "plan holds none) and abandon. The checks: its FCFS ring overflowed and the replications "
    "that overflowed were rerun with a larger ring, and a rerun gives bit for bit what a ring "
    "large enough from the start gives (tests/test_sweep_overflow.py checks this replication "
    "by replication; for the quick grid's high-beta instance at n = 500, a run with a ring four "
    "times larger from the start gave the same tallies bit for bit, 0.20 of R*), so the "
    "overflow does not cause the collapse; and the admitted prefills (0.96 per GPU against "
    "0.35 planned) and the decode backlog (about 6.2 per GPU) are what the policy's rules "
    "produce on that instance.")


def _collapse_section(r: dict) -> list[str]:
    """Fig. 7's instances below :data:`COLLAPSE` of R* as a table, with why GF-WSP collapses."""
    rows = collapse_rows(r)
    if not rows:
        return [f"No grid instance falls below {COLLAPSE:g} of R* under any policy.", ""]
    out = [f"**Instances below {COLLAPSE:g} of R*** (means over seeds; x and q_d per GPU)", "",
           _table(["n", "policy", "instance", "beta", "revenue / R*", "x sim", "sum x* (LP)",
                   "q_d sim", "q_d* (LP)", "replications rerun after a ring overflow"], rows),
           ""]
    if any(row[1] == "gf-wsp" for row in rows):
        out += [_GF_WSP_WHY, ""]
    return out


# ---- the gap map's regions --------------------------------------------------------------------
def _gap_section(r: dict) -> list[str]:
    """The gap map's regions in words: where Gate-and-Route (and the best simulated policy) is
    more than the margin below R*, what that says of the LP's sensitivity curves, and where the
    coupled gate beats Gate-and-Route."""
    points, lines = r["points"], []
    for n in r["gpus"]:
        gg = gap_regions(points, n, "gate-and-route")
        best = gap_regions(points, n, None)
        text = (f"**n = {n}.** Gate-and-Route is more than {GAP_MARGIN:.0%} below R* (95% "
                f"interval above {GAP_MARGIN:.0%}) at {gg['above'] or 'no point'}"
                + (f" ({worst_gap(points, n, 'gate-and-route')})" if gg["above"] else "")
                + f"; within {GAP_MARGIN:.0%} at {gg['below'] or 'no point'}"
                + (f"; undecided at {gg['across']}" if gg["across"] else "") + ". ")
        text += ("So the LP's sensitivity curves (Fig. 9) predict what a simulated "
                 f"Gate-and-Route cluster of {n} GPUs earns, to within {GAP_MARGIN:.0%}, at "
                 f"{gg['below'] or 'no point of the grid'}, and overstate it by more than "
                 f"{GAP_MARGIN:.0%} at {gg['above'] or 'no point'}. ")
        text += (f"Even the best policy simulated at a point (the coupled gate included) is "
                 f"more than {GAP_MARGIN:.0%} below R* at {best['above']}: there no policy run "
                 "reaches the LP's curve at this size." if best["above"] else
                 f"At every point some simulated policy (the coupled gate included) is within "
                 f"{GAP_MARGIN:.0%} of R* or cannot be told from it.")
        wins, losses = [], []
        for p in points:
            d = p["runs"][str(n)].get("coupled_minus_gate_and_route")
            if d is None or d["ci95"] is None:
                continue
            if d["mean"] - d["ci95"] > 0:
                wins.append(p)
            elif d["mean"] + d["ci95"] < 0:
                losses.append(p)

        def where(ps):
            by: dict[str, list] = {}
            for p in ps:
                by.setdefault(p["parameter"], []).append(p["value"])
            return "; ".join(f"{k} " + ", ".join(fmt_num(v) for v in vs) for k, vs in by.items())
        text += (f" The offset-1 coupled gate (jaxqueue's `gi-wsp-after`) earns more than "
                 f"Gate-and-Route (paired 95% interval above 0) at {len(wins)} of "
                 f"{len(points)} points{' (' + where(wins) + ')' if wins else ''} and less at "
                 f"{len(losses)}{' (' + where(losses) + ')' if losses else ''}.")
        lines += [text, ""]
    lines += backlog_lines(points, r["gpus"])
    return lines


def backlog_lines(points: Sequence[dict], gpus: Sequence[int]) -> list[str]:
    """The gap map's points where the LP plans a decode backlog (``lp_decode_queue`` > 0,
    possible only where solo decoding is the slower mode: Proposition 3.2), with the share of
    each class the plan serves and the gaps of Gate-and-Route and, where run, the SLI-aware
    router; and why the two differ there. Empty without such points."""
    def gaps(p, policy):
        out = [f"{100 * p['runs'][str(n)][policy]['gap']['mean']:.1f}% at n = {n}"
               for n in gpus if policy in p["runs"].get(str(n), {})]
        return ", ".join(out)

    backlog = [p for p in points if p.get("lp_decode_queue", 0.0) > 1e-9]
    if not backlog:
        return []
    slow = [p for p in points if p.get("solo_efficient") is False and p not in backlog]

    def at(p):
        served = ", ".join(f"{100 * v:.0f}%" for v in p.get("served", []))
        sli = gaps(p, "sli-gate-and-route")
        return (f"{p['parameter']} = {fmt_num(p['value'])} (backlog "
                f"{p['lp_decode_queue']:.2f} per GPU; "
                + (f"the plan serves {served} of the classes' arrivals; " if served else "")
                + f"Gate-and-Route's gap {gaps(p, 'gate-and-route')}"
                + (f"; the SLI-aware router's {sli}" if sli else "") + ")")
    lines = [
        "The LP plans a decode backlog (solo decoding is the slower mode there: gamma tau < "
        "(B-1)/B, so Proposition 3.2 does not rule one out) at " + "; ".join(map(at, backlog))
        + ". Such a plan splits by class: the jobs of the class it does not serve in full wait "
        "in the decode buffer after their prefill and abandon there, while the others are "
        "served. Gate-and-Route's greedy router keeps one decode buffer, first-come-first-served "
        "across classes, so every class abandons there alike; the SLI-aware router (the paper's "
        "router for a planned backlog: a buffer per side, a freed slot picking a class in "
        "proportion to its planned completions) follows the split, and the coupled "
        "architecture has no decode buffer at all. `jaxqueue compare` at such a point shows "
        "the abandonments by class."]
    if slow:
        lines[0] += (" Solo decoding is the slower mode at " + ", ".join(
            f"{q['parameter']} = {fmt_num(q['value'])}" for q in slow)
            + " too, but the plan keeps no backlog there.")
    return lines + [""]


# ---- Fig. 9's TPOT against beta ---------------------------------------------------------------
def beta_tpot_text(line: dict, classes: dict) -> str:
    """Why the LP's TPOT along beta rises, peaks and falls, from the LP's solutions along the
    line (``fig9_10_sensitivity``'s ``lines["beta"]`` with ``mixed_fraction``, ``served`` per
    class and ``binding`` rows; ``classes`` with ``names``, ``P``, ``D``, ``w``). Empty when the
    line lacks them or TPOT does not turn."""
    if not all(k in line for k in ("mixed_fraction", "served", "binding")):
        return ""
    beta = np.asarray(line["values"], np.float64)
    tpot = 1000 * np.asarray(line["tpot"], np.float64)
    big_x = np.asarray(line["mixed_fraction"], np.float64)
    served = np.asarray(line["served"], np.float64)  # (values, classes)
    k = int(np.argmax(tpot))
    if k in (0, beta.size - 1) or served.shape[1] < 2:
        return ""
    names = list(classes["names"])
    w, P, D = (np.asarray(classes[key], np.float64) for key in ("w", "P", "D"))
    shed = int(np.argmin(served[k]))        # the class the LP drops on the way up
    kept = int(np.argmax(served[k]))
    first = int(np.argmax(served[:, shed] < 0.99)) if np.any(served[:k + 1, shed] < 0.99) else k
    after = k + 1
    binds = sorted({b for rows in line["binding"][first:k + 1] for b in rows})

    def pct(v):
        return f"{100 * v:.0f}%"
    return (
        "**Why the LP's TPOT rises and then falls with beta (Fig. 9, panel d).** TPOT is the "
        "slot-weighted mean of tau = alpha + beta C over the (B-1) X mixed decode slots and "
        "1/gamma over the B (1-X) solo ones, so it follows X = sum x, the share of GPUs running "
        "a prefill. A GPU gives the classes two resources in different proportions: prefill "
        "time (P_i tau / C GPU-seconds per class-i job, growing with beta; a GPU running a "
        "prefill gives up B solo decode slots for B - 1 slow mixed ones) and decode slots "
        f"(D_i / gamma slot-seconds on a solo GPU). At beta = {fmt_num(beta[0])} the LP serves "
        f"{', '.join(f'{nm} {pct(s)}' for nm, s in zip(names, served[0], strict=True))} with "
        f"X = {big_x[0]:.2f} and TPOT {tpot[0]:.1f} ms. From beta = {fmt_num(beta[first])} the "
        f"capacity rows bind ({', '.join(binds) or 'none'} with a positive dual) and the LP "
        f"sheds the {names[shed]} class (w/D = {w[shed] / D[shed]:.2f} per output token against "
        f"{w[kept] / D[kept]:.2f} for {names[kept]}: it earns least per decode slot), served "
        f"{pct(served[first, shed])} there and {pct(served[k, shed])} at the peak, while it "
        f"keeps the {names[kept]} class ({pct(served[k, kept])} served at the peak), whose "
        f"prefills take ever longer as beta grows, so X climbs to {big_x[k]:.2f} and almost "
        f"every decode runs at the mixed speed: TPOT peaks at {tpot[k]:.1f} ms at beta = "
        f"{fmt_num(beta[k])}. By beta = {fmt_num(beta[after])} those prefills cost so much GPU "
        f"time that the optimum moves to another vertex: it serves the {names[shed]} class "
        f"{pct(served[after, shed])} (w/P = {w[shed] / P[shed]:.2f} per prompt token against "
        f"{w[kept] / P[kept]:.2f}: it earns more per second of prefill) and the {names[kept]} "
        f"class only {pct(served[after, kept])}; X falls to {big_x[after]:.2f}, most decodes "
        f"run solo at 1/gamma, and TPOT drops to {tpot[after]:.1f} ms ({tpot[-1]:.1f} ms at "
        f"beta = {fmt_num(beta[-1])}).")


# ---- REPORT.md --------------------------------------------------------------------------------
def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


_MARK = {HOLDS: "**holds**", FAILS: "**does not hold**", INCONCLUSIVE: "*inconclusive*",
         NOT_COMPARABLE: "*not comparable*"}


def render(results: dict[str, dict], claims: Sequence[Claim], *,
           timings: dict[str, float] | None = None) -> str:
    """The Markdown of ``REPORT.md``."""
    any_r = next(iter(results.values()), {})
    modes = sorted({"quick" if r.get("quick") else "full" for r in results.values()})
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    parts = [
        "# Reproduction report: Lin, Han, Ding & Zhang, arXiv 2602.02987",
        "",
        f"Generated {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')} by "
        f"`jaxqueue reproduce` (jaxqueue {any_r.get('jaxqueue_version', '?')}, JAX "
        f"{any_r.get('jax_version', '?')}, backend {any_r.get('backend', '?')} with "
        f"{any_r.get('devices', '?')} device(s)); run mode: {', '.join(modes) or 'none'}.",
        "",
        "Every verdict below is computed by jaxqueue (the rules in `jaxqueue/verdicts.py`, the "
        "judges in `jaxqueue/paper_claims.py` and `jaxqueue/gap_claims.py`) from the numbers in "
        "the JSON files next to this report, with the rule shown next to it; none is written by "
        "hand. "
        "*holds*: the numbers meet the rule; *does not hold*: they meet its opposite (a result, "
        "not an error); *inconclusive*: the data cannot decide (an interval straddles the "
        "rule's margin); *not comparable*: the claim cannot be checked with what jaxqueue "
        "computes, or the experiment was not run.",
        "",
        "A claim about a planned quantity (x, y, q) is judged against the LP's whole optimal "
        "set, not against the one optimal vertex the solver returns: the distance of the "
        "simulated value to the range the quantity takes over all optimal plans (zero inside), "
        "with its interval. A claim about a limit as n grows is judged by a trend fitted over "
        f"the sizes run from n = {TREND_MIN_N}: the deviation modelled as a + b n^-c, "
        "the limit a with a 95% interval "
        "over every rate c in [1/4, 1] the data do not reject; it holds or does not hold only "
        "when that interval lies on one side of the claim's margin, and is inconclusive "
        "otherwise." + (" Quick mode runs small sizes and few n: expect inconclusive limits, "
                        "and read its verdicts on simulated claims as indicative only."
                        if "quick" in modes else ""),
        "",
        f"**{counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[INCONCLUSIVE]} "
        f"inconclusive, {counts[NOT_COMPARABLE]} not comparable.**",
        "",
        "## Verdicts",
        "",
        _table(["claim", "figure", "statement", "verdict", "rule", "evidence"],
               [[c.id, c.figure, c.statement, _MARK[c.verdict], c.rule, c.evidence]
                for c in claims]),
        "",
    ]
    for name, r in results.items():
        s = r.get("settings", {})
        parts += [f"## {r.get('figure', '')}: {r.get('title', name)}", "",
                  f"`{name}` — scenario {r.get('scenario') or 'random grid'}; policies "
                  f"{', '.join(r.get('policies', []))}; seed {r.get('seed')}; "
                  + ", ".join(f"{k} = {v}" for k, v in s.items())
                  + f"; {'quick' if r.get('quick') else 'full'} mode; "
                  f"{r.get('wall_seconds', float('nan')):.0f} s.", ""]
        if r.get("notes"):
            parts += [r["notes"], ""]
        for png in r.get("outputs", []):
            if png.endswith(".png"):
                parts += [f"![{png}]({png})", ""]
        if name == "fig9_10_sensitivity" and "classes" in r:
            why = beta_tpot_text(r["lines"]["beta"], r["classes"])
            parts += [why, ""] if why else []
        if name == "gap_map":
            parts += _gap_section(r)
        for t in r.get("key_numbers", []):
            parts += [f"**{t['title']}**", "", _table(t["columns"], t["rows"]), ""]
        if name == "fig7_policies":
            parts += _collapse_section(r)
        mine = [c for c in claims if c.id in {x.id for x in claims_of(name, r)}]
        if mine:
            parts += ["Claims:", ""]
            parts += [f"- {c.statement} — {_MARK[c.verdict]}. Rule: {c.rule}. Evidence: "
                      f"{c.evidence}." for c in mine]
            parts.append("")
    if timings:
        parts += ["## Wall time of this invocation", "",
                  _table(["experiment", "seconds"],
                         [[k, f"{v:.0f}"] for k, v in timings.items()]), ""]
    return "\n".join(parts)


def write(out: str, timings: dict[str, float] | None = None) -> tuple[str, list[Claim]]:
    """Judges every claim from the outputs in ``out`` and writes ``out/REPORT.md`` atomically.
    Returns its path and the claims."""
    results = load_results(out)
    claims = judge_all(results)
    path = os.path.join(out, "REPORT.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(render(results, claims, timings=timings))
    os.replace(tmp, path)
    return path, claims
