"""The measured tables of ``docs/``, written from the JSON output of the commands that measure them.

Each generated table lives in a page between two markers::

    <!-- generated: NAME -->
    ...
    <!-- end: NAME -->

and its numbers come from ``docs/data/NAME.json``, which holds the commands that were run, their
JSON output, the date and the machine. So no table can go stale by hand: the test suite checks
that every block is what its data renders to.

    python scripts/docs_tables.py                 # rewrite every block from docs/data/*.json
    python scripts/docs_tables.py --check         # exit 1, naming the blocks that differ
    python scripts/docs_tables.py --list          # the tables, their pages and commands
    python scripts/docs_tables.py --run NAME ...  # run NAME's commands (minutes to tens of
                                                  # minutes each), save their output, rewrite

A table's commands are CLI commands printing one JSON object (``--json``) or scripts writing
it to the path ``{json}`` stands for; ``{tmp}`` is a folder the table's commands share (run in
order), ``{data}`` the folder of the measured traces (``JAXQUEUE_DATA``, by default
``shared/data`` beside the project: Microsoft's Vidur data under ``vidur/``). Numbers are
rounded here, for reading; the JSON keeps them in full.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"


@dataclasses.dataclass(frozen=True)
class Table:
    """One generated block: where it lives, what measures it, how it is written."""

    page: str
    commands: dict[str, str]
    render: Callable[[dict], str]
    about: str


def _pm(stat: dict, digits: int = 2) -> str:
    """``mean ± ci95``."""
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def _provenance(data: dict) -> str:
    cmds = "; ".join(f"`{c}`" for c in data["commands"].values())
    load = f", {data['load']}" if data.get("load") else ""
    return (f"Made by {cmds} on {data['date']} ({data['machine']}{load}); "
            f"`python scripts/docs_tables.py --run {data['name']}` reruns it.")


# ---- renderers --------------------------------------------------------------------------------
def _lp(data: dict) -> str:
    b, s = data["outputs"]["bundled"], data["outputs"]["separate"]
    x = ", ".join(f"{c['x']:.5f}" for c in b["classes"])
    qd = ", ".join(f"{c['q_decode']:.4g}" for c in b["classes"])
    sqd = ", ".join(f"{c['q_decode']:.4g}" for c in s["classes"])
    lines = [
        f"Bundled pricing: R* = {b['revenue']:.6f} per GPU with x* = ({x}) and q_d* = ({qd}); "
        f"solo decoding is {'efficient' if b['solo_efficient'] else 'not efficient'} "
        "(Proposition 3.2's condition). "
        f"Separate pricing: R* = {s['revenue']:.6f}, at the vertex HiGHS returns q_d* = ({sqd}).",
    ]
    spans = s.get("alternative_optima", {}).get("q_decode")
    if spans:
        ranges = ", ".join(f"[{lo:.3f}, {hi:.3f}]" for lo, hi in spans.values())
        lines.append(f"Over the separate LP's optimal set q_d ranges over {ranges} (cf. Fig. 2).")
    return "\n".join(lines) + "\n\n" + _provenance(data)


def _frontier(data: dict) -> str:
    out = data["outputs"]
    tpot, pf, df = out["tpot"], out["prefill-fairness"], out["decode-fairness"]
    head = "| TPOT target eta_3 (s) | " + " | ".join(f"{p['value']:g}" for p in tpot["points"])
    rows = [head + " |", "|---" + "|---:" * len(tpot["points"]) + "|",
            "| revenue | " + " | ".join(f"{p['revenue']:.2f}" for p in tpot["points"]) + " |",
            "| shadow price | " + " | ".join(f"{p['shadow_price']:,.0f}" for p in tpot["points"])
            + " |", ""]
    pairs = list(zip(pf["points"], df["points"], strict=True))
    rows += ["| fairness target eta (prefill / decode) | "
             + " | ".join(f"{a['value']:g} / {b['value']:g}" for a, b in pairs) + " |",
             "|---" + "|---:" * len(pairs) + "|",
             "| revenue, prefill fairness eta_1 | "
             + " | ".join(f"{a['revenue']:.2f}" for a, _ in pairs) + " |",
             "| revenue, decode fairness eta_2 | "
             + " | ".join(f"{b['revenue']:.2f}" for _, b in pairs) + " |"]
    top = pf["unconstrained_revenue"]
    zero_p, zero_d = pf["points"][0], df["points"][0]
    rows += ["", f"At a fairness target of 0 the shadow price is {zero_p['shadow_price']:.1f} "
             f"per unit of eta_1 (prefill) and {zero_d['shadow_price']:.1f} per unit of "
             f"eta_2 (decode), and the revenue lost is {top - zero_p['revenue']:.1f} and "
             f"{top - zero_d['revenue']:.1f} (unconstrained R* = {top:.2f})."]
    return "\n".join(rows) + "\n\n" + _provenance(data)


def _convergence(data: dict) -> str:
    c = data["outputs"]["convergence"]
    rows = [f"{c['reps']} independent replications per n, horizon {c['horizon']:g} s, warm-up "
            f"{c['warmup']:g} s; ± is the 95% t-interval half-width. The LP bound is "
            f"R* = {c['rows'][0]['lp_revenue']:.3f}. Verdict: **{c['verdict']}** "
            f"({c['criterion']}).", "",
            "| n | M (mixed) | simulated revenue per GPU | gap to R* | gap % |",
            "|---:|---:|---:|---:|---:|"]
    for r in c["rows"]:
        digits = 3 if r["revenue"]["ci95"] < 0.1 else 2
        rows.append(f"| {r['gpus']} | {r['mixed_gpus']} | {r['revenue']['mean']:.3f} ± "
                    f"{r['revenue']['ci95']:.{digits}f} | {r['gap']:.2f} | "
                    f"{100 * r['relative_gap']:.2f}% |")
    return "\n".join(rows) + "\n\n" + _provenance(data)


def _diagnosis(data: dict) -> str:
    s = data["outputs"]["simulate"]
    lp = {c["name"]: c for c in data["outputs"]["lp"]["classes"]}
    rows = [f"n = {s['gpus']} ({s['mixed_gpus']} mixed), {s['reps']} replications x "
            f"{s['horizon']:g} s (warm-up {s['warmup']:g} s): revenue per GPU "
            f"{_pm(s['revenue_per_gpu']['bundled'], 3)} against R* = {s['lp_revenue']:.3f}.", "",
            "| class | x (prefills per GPU) | x* | q_p | q_p* | q_d | q_d* | abandoned |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in s["classes"]:
        p = lp[c["name"]]
        rows.append(f"| {c['name']} | {c['x']['mean']:.4f} | {p['x']:.4f} | "
                    f"{c['q_prefill']['mean']:.3f} | {p['q_prefill']:.3f} | "
                    f"{c['q_decode']['mean']:.3f} | {p['q_decode']:.3f} | "
                    f"{100 * c['abandonment']['mean']:.1f}% |")
    return "\n".join(rows) + "\n\n" + _provenance(data)


def _sec63(data: dict) -> str:
    out = data["outputs"]["sec63"]
    order = ["fi-wsp", "gi-wsp", "gf-wsp", "fg-sp", "gate-and-route"]
    names = {"gate-and-route": "GG-SP (Gate-and-Route)"}
    res = {r["policy"]: r for r in out["rows"]}
    bound = res["gate-and-route"]["lp_revenue"]
    best = max(order, key=lambda p: res[p]["revenue"]["mean"])
    cells = []
    for p in order:
        text = _pm(res[p]["revenue"])
        cells.append(f"**{text}**" if p == best else text)

    def diff(a, b):
        return f"{res[a]['revenue']['mean'] - res[b]['revenue']['mean']:+.2f}"

    walls = [r["wall_seconds"] for r in out["rows"]]
    rows = [f"{out['reps']} replications with common random numbers, horizon {out['horizon']:g} s, "
            f"warm-up {out['warmup']:g} s, n = {out['gpus']}, every policy on the per-GPU engine "
            f"({min(walls):.0f}-{max(walls):.0f} s each); per-GPU bundled revenue with 95% "
            f"intervals; R* = {bound:.3f}.", "",
            "| " + " | ".join(names.get(p, p.upper()) for p in order) + " |",
            "|" + "---:|" * len(order), "| " + " | ".join(cells) + " |", "",
            f"Best here: {names.get(best, best.upper())}. GI-WSP - FI-WSP = "
            f"{diff('gi-wsp', 'fi-wsp')} (the gate alone), FG-SP - FI-WSP = "
            f"{diff('fg-sp', 'fi-wsp')} (static planning alone); Gate-and-Route is "
            f"{100 * (1 - res['gate-and-route']['revenue']['mean'] / bound):.1f}% below R*."]
    return "\n".join(rows) + "\n\n" + _provenance(data)


def _patience(data: dict) -> str:
    rows = []
    for out in data["outputs"].values():
        if "rows" not in out:  # the scenario-building step
            continue
        if not rows:
            rows = [f"{out['policy']}, {out['reps']} replications x {out['horizon']:g} s "
                    f"(warm-up {out['warmup']:g} s); every law has the exponential law's mean "
                    "and is paired with it on the same key.", "",
                    "| n | law | revenue per GPU | minus exponential (paired) | "
                    "abandon | wall | events/s |", "|---:|---|---:|---:|---:|---:|---:|"]
        for r in out["rows"]:
            diff = "-" if r["minus_exponential"] is None else \
                f"{r['minus_exponential']['mean']:+.2f} ± {r['minus_exponential']['ci95']:.2f}"
            rows.append(f"| {r['gpus']} | {r['label']} | {_pm(r['revenue'])} | {diff} | "
                        f"{100 * r['abandon']:.1f}% | {r['wall_seconds']:.0f} s | "
                        f"{r['events'] / r['wall_seconds']:.3g} |")
    return "\n".join(rows) + "\n\n" + _provenance(data)


TRACES = "{data}/vidur/processed_traces"
PROFILES = "{data}/vidur/profiling/compute"


def _trace_table(w: dict, with_rate: bool) -> list[str]:
    head = "| class | share | " + ("rate/s | " if with_rate else "") + \
        "P mean, CV | D mean, CV | KS exp P | KS exp D | best D law (KS) |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in w["classes"]:
        p, d = c["prompt"], c["output"]
        best, exp_p, exp_d = d["best"], p["laws"]["exponential"], d["laws"]["exponential"]
        rows.append(f"| {c['name']} | {100 * c['share']:.1f}% | "
                    + (f"{c['rate']:.3f} | " if with_rate else "")
                    + f"{p['mean']:.0f}, {p['cv']:.2f} | {d['mean']:.0f}, {d['cv']:.2f} | "
                    f"{exp_p['ks']:.3f} | {exp_d['ks']:.3f} | "
                    f"{best} {d['laws'][best]['ks']:.3f} |")
    return rows


def _bursts(w: dict) -> str:
    b = w["burstiness"]
    disp = ", ".join(f"{x['index']:.3g} ({x['window_s']:g} s windows, z = {x['z']:+.0f})"
                     for x in b["dispersion"])
    return (f"Arrivals: inter-arrival CV {b['interarrival_cv']:.2f} (Poisson: 1); index of "
            f"dispersion {disp}; verdict: {b['verdict']}.")


def _traces(data: dict) -> str:
    out = data["outputs"]
    rows = []
    for label, title in (("conv", "Azure conversation trace"), ("code", "Azure code trace")):
        w = out[label]
        rows += [f"{title} (`{Path(w['source']).name}`, {w['requests']:,} requests over "
                 f"{w['rate']['span_s']:,.0f} s, {w['rate']['total']:.2f} requests/s):", ""]
        rows += _trace_table(w, True) + ["", _bursts(w), ""]
    w = out["arxiv"]
    rows += [f"arXiv summarization (`{Path(w['source']).name}`, {w['requests']:,} requests, no "
             "arrival times: run with `--rate 1`):", ""]
    rows += _trace_table(w, False) + [""]
    (one,) = out["conv1"]["classes"]
    d = one["output"]
    ks = ", ".join(f"{k} {v['ks']:.3f}" for k, v in d["laws"].items())
    rows.append(f"The conversation trace pooled into one class (`--classes 1`): output CV "
                f"{d['cv']:.2f}, KS {ks}.")
    return "\n".join(rows) + "\n\n" + _provenance(data)


def _trace_lp(data: dict) -> str:
    out = data["outputs"]
    s = out["simulate"]
    rev = s["revenue_per_gpu"]["bundled"]
    gap = 100 * (1 - rev["mean"] / s["lp_revenue"])
    return (f"With the Qwen-8B calibration and the trace's traffic on one GPU (`--gpus 1`), "
            f"`jaxqueue lp` gives R* = {out['lp_conv']['revenue']:.1f} per GPU per second on the "
            f"conversation scenario and {out['lp_code']['revenue']:.1f} on the code scenario; "
            f"`jaxqueue simulate` of the conversation scenario at n = {s['gpus']} "
            f"({s['reps']} replications x {s['horizon']:g} s, warm-up {s['warmup']:g} s) gives "
            f"{_pm(rev, 1)} per GPU per second with Gate-and-Route, {gap:.0f}% below the bound."
            "\n\n" + _provenance(data))


def _calibrate(data: dict) -> str:
    rows = ["| profile | range of C | alpha | beta | R^2 | residual sd | tau_solo (gamma) |",
            "|---|---|---|---|---|---|---|"]
    names = {"a100-4096": "Llama-3-8B, A100", "a100": "Llama-3-8B, A100",
             "h100": "Llama-2-7B, H100"}
    for label, c in data["outputs"].items():
        lo, hi = c["tokens_range"]
        rows.append(f"| {names[label]} | {lo:.0f}-{hi:.0f} | {1e3 * c['alpha']:.2f} ms | "
                    f"{c['beta']:.3g} s/token | {c['r2']:.4f} | {1e3 * c['residual_std_s']:.1f} ms"
                    f" | {1e3 * c['tau_solo']:.1f} ms ({c['gamma']:.1f} tok/s) |")
    return "\n".join(rows) + "\n\n" + _provenance(data)


def _surrogate(data: dict) -> str:
    out = data["outputs"]["surrogate"]
    sim = {r["gpus"]: r["revenue"] for r in load("convergence")["outputs"]["convergence"]["rows"]}
    ns = [r["gpus"] for r in out["rows"]]
    rows = ["| n | " + " | ".join(str(n) for n in ns) + " |", "|---" + "|---:" * len(ns) + "|",
            f"| surrogate (`{out['scenario']}`) | "
            + " | ".join(f"{r['surrogate_revenue']:.2f}" for r in out["rows"]) + " |",
            f"| simulated (`{out['scenario']}`) | "
            + " | ".join(f"{sim[n]['mean']:.2f}" if n in sim else "" for n in ns) + " |"]
    worst = max(abs(r["surrogate_revenue"] / sim[r["gpus"]]["mean"] - 1) for r in out["rows"]
                if r["gpus"] in sim)
    return ("\n".join(rows) + f"\n\nThe largest relative difference is {100 * worst:.1f}%. The "
            "simulated row is the convergence table of [results.md](results.md) "
            "(`docs/data/convergence.json`).\n\n" + _provenance(data))


TABLES: dict[str, Table] = {
    "lp": Table(
        "docs/results.md",
        {"bundled": "jaxqueue lp paper-qwen8b --json",
         "separate": "jaxqueue lp paper-qwen8b --pricing separate --json"},
        _lp, "the fluid LP's optimum under both pricings"),
    "frontier": Table(
        "docs/results.md",
        {"tpot": "jaxqueue frontier paper-qwen8b --sli tpot --values 0.0221 0.0225 0.023 0.024 "
                 "0.025 --json",
         "prefill-fairness": "jaxqueue frontier paper-qwen8b --sli prefill-fairness --values 0 "
                             "0.05 0.1 0.15 0.2 --json",
         "decode-fairness": "jaxqueue frontier paper-qwen8b --sli decode-fairness --values 0 1 2 "
                            "3 4 --json"},
        _frontier, "the SLI-aware LP's revenue and shadow price along each target"),
    "convergence": Table(
        "docs/results.md",
        {"convergence": "jaxqueue convergence --gpus-list 5 20 50 200 500 2000 --reps 64 "
                        "--horizon 2500 --warmup 500 --json"},
        _convergence, "Gate-and-Route's revenue against the LP bound as n grows"),
    "diagnosis500": Table(
        "docs/results.md",
        {"simulate": "jaxqueue simulate paper-qwen8b --gpus 500 --reps 16 --horizon 2500 "
                     "--warmup 500 --json",
         "lp": "jaxqueue lp paper-qwen8b --json"},
        _diagnosis, "where Gate-and-Route's revenue goes at n = 500, against the plan"),
    "sec63": Table(
        "docs/results.md",
        {"sec63": "python experiments/sec63_policies.py --json {json}"},
        _sec63, "the Sec. 6.3 policies at n = 500 on the per-GPU engine"),
    "patience_paper": Table(
        "docs/scenarios.md",
        {"n20-100": "python scripts/patience_table.py --gpus 20 100 --json {json}",
         "n500": "python scripts/patience_table.py --gpus 500 --laws exponential,deterministic "
                 "--json {json}"},
        _patience, "Gate-and-Route's revenue under other patience laws, paper-qwen8b"),
    "patience_trace": Table(
        "docs/scenarios.md",
        {"workload": "jaxqueue workload {data}/vidur/processed_traces/splitwise_conv.csv "
                     "--classes 3 --gpus 2 --out {tmp}/conv2.toml --json",
         "table": "python scripts/patience_table.py --scenario {tmp}/conv2.toml --gpus 20 100 "
                  "--reps 32 --laws exponential,deterministic,lognormal --json {json}"},
        _patience, "the same on a scenario built from the Azure conversation trace"),
    "service_paper": Table(
        "docs/scenarios.md",
        {"table": "python scripts/patience_table.py --gpus 20 100 --laws exponential "
                  "--service-laws erlang-4,cv-2 --warmup 500 --json {json}"},
        _patience, "Gate-and-Route's revenue under other prefill and decode time laws"),
    "surrogate": Table(
        "docs/tuning.md",
        {"surrogate": "python scripts/surrogate_table.py --json {json}"},
        _surrogate, "the fluid surrogate against the exact simulator at the LP point"),
    "traces": Table(
        "docs/workloads.md",
        {"conv": f"jaxqueue workload {TRACES}/splitwise_conv.csv --classes 3 --json",
         "code": f"jaxqueue workload {TRACES}/splitwise_code.csv --classes 3 --json",
         "arxiv": f"jaxqueue workload {TRACES}/"
                  "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv --classes 3 "
                  "--rate 1 --json",
         "conv1": f"jaxqueue workload {TRACES}/splitwise_conv.csv --classes 1 --json"},
        _traces, "the test traces in three classes: length laws and burstiness"),
    "trace_lp": Table(
        "docs/workloads.md",
        {"conv": f"jaxqueue workload {TRACES}/splitwise_conv.csv --classes 3 "
                 "--out {tmp}/conv.toml --json",
         "code": f"jaxqueue workload {TRACES}/splitwise_code.csv --classes 3 "
                 "--out {tmp}/code.toml --json",
         "lp_conv": "jaxqueue lp {tmp}/conv.toml --json",
         "lp_code": "jaxqueue lp {tmp}/code.toml --json",
         "simulate": "jaxqueue simulate {tmp}/conv.toml --gpus 20 --reps 8 --horizon 300 "
                     "--warmup 100 --json"},
        _trace_lp, "the trace-built scenarios' LP bounds and a simulation"),
    "calibrate": Table(
        "docs/workloads.md",
        {"a100-4096": f"jaxqueue calibrate {PROFILES}/a100/meta-llama/Meta-Llama-3-8B/mlp.csv "
                      "--layers 32 --max-tokens 4096 --json",
         "a100": f"jaxqueue calibrate {PROFILES}/a100/meta-llama/Meta-Llama-3-8B/mlp.csv "
                 "--layers 32 --json",
         "h100": f"jaxqueue calibrate {PROFILES}/h100/meta-llama/Llama-2-7b-hf/mlp.csv "
                 "--layers 32 --json"},
        _calibrate, "the iteration-time law fitted to Vidur's operator profiles"),
}


# ---- blocks in pages --------------------------------------------------------------------------
def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {re.escape(name)} -->\n)(.*?)(<!-- end: "
                      rf"{re.escape(name)} -->)", re.S)


def load(name: str) -> dict:
    path = DATA / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path.relative_to(ROOT)} is missing: run `python "
                                f"scripts/docs_tables.py --run {name}`")
    return json.loads(path.read_text())


def _wrapped(text: str, width: int = 100) -> str:
    """Prose lines wrapped at ``width`` (table rows are left whole)."""
    out = []
    for line in text.split("\n"):
        out.extend([line] if line.startswith("|") or len(line) <= width
                   else textwrap.wrap(line, width, break_on_hyphens=False))
    return "\n".join(out)


def rendered(name: str) -> str:
    return _wrapped(TABLES[name].render(load(name)).rstrip("\n")) + "\n"


def stale(root: Path = ROOT) -> list[str]:
    """The blocks whose text differs from what their data renders to, or that are missing,
    as ``"NAME (page): why"``."""
    found = []
    for name, table in TABLES.items():
        text = (root / table.page).read_text()
        match = _pattern(name).search(text)
        if not (DATA / f"{name}.json").exists():
            found.append(f"{name} ({table.page}): no docs/data/{name}.json")
        elif match is None:
            found.append(f"{name} ({table.page}): no block")
        elif match.group(2) != rendered(name):
            found.append(f"{name} ({table.page}): differs from docs/data/{name}.json")
    return found


def write(names=None) -> None:
    """Rewrites the blocks of ``names`` (default: every table with data)."""
    for name in names or [n for n in TABLES if (DATA / f"{n}.json").exists()]:
        page = ROOT / TABLES[name].page
        text = page.read_text()
        body = rendered(name)
        new, count = _pattern(name).subn(lambda m, b=body: m.group(1) + b + m.group(3), text)
        if count != 1:
            raise SystemExit(f"{TABLES[name].page} has {count} blocks named {name!r}; add one: "
                             f"<!-- generated: {name} --> ... <!-- end: {name} -->")
        page.write_text(new)


def machine() -> str:
    import jax

    cores = os.cpu_count()
    kinds = sorted({d.device_kind for d in jax.devices()})
    return (f"{platform.machine()}, {cores} cores, {', '.join(kinds)}, JAX {jax.__version__}")


def data_root() -> Path:
    """Where the measured traces and profiles live (``{data}`` in a command): the folder
    ``JAXQUEUE_DATA`` names, else ``shared/data`` beside the project's folder."""
    return Path(os.environ.get("JAXQUEUE_DATA", ROOT.parent / "shared" / "data"))


def run(name: str) -> None:
    table = TABLES[name]
    outputs = {}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for label, command in table.commands.items():
            target = Path(tmp) / f"{label}.json"
            argv = [a.replace("{json}", str(target)).replace("{tmp}", tmp)
                    .replace("{data}", str(data_root())) for a in shlex.split(command)]
            if argv[0] == "python":
                argv[0] = sys.executable
            elif argv[0] == "jaxqueue":
                argv = [sys.executable, "-m", "jaxqueue.cli"] + argv[1:]
            print(f"[{name}] {command}", file=sys.stderr, flush=True)
            done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, check=True,
                                  text=True)
            text = target.read_text() if "{json}" in command else done.stdout
            # Machine-specific folders are kept as their placeholders.
            text = text.replace(json.dumps(str(data_root()))[1:-1], "{data}")
            outputs[label] = json.loads(text.replace(json.dumps(tmp)[1:-1], "{tmp}"))
            loads.append(os.getloadavg()[0])
    # Wall times depend on what else ran: the load average (1 min) before and after each
    # command says how busy the machine was.
    data = {"name": name, "about": table.about, "commands": table.commands,
            "date": datetime.date.today().isoformat(), "machine": machine(),
            "load": f"load average {min(loads):.1f}-{max(loads):.1f}", "outputs": outputs}
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    write([name])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    p.add_argument("--list", action="store_true", help="list the tables")
    p.add_argument("--run", nargs="+", metavar="NAME", choices=sorted(TABLES),
                   help="run these tables' commands and rewrite their blocks")
    a = p.parse_args()
    if a.list:
        for name, t in TABLES.items():
            print(f"{name:14s} {t.page:22s} {t.about}")
            for c in t.commands.values():
                print(f"{'':14s}   {c}")
        return
    if a.run:
        for name in a.run:
            run(name)
        return
    if a.check:
        bad = stale()
        print("\n".join(bad) if bad else f"all {len(TABLES)} generated blocks are up to date")
        raise SystemExit(1 if bad else 0)
    write()


if __name__ == "__main__":
    main()
