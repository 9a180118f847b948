"""How much the exponential patience of the paper's model matters: Gate-and-Route's revenue and
abandonment on a scenario under other patience laws of the same mean, paired with the
exponential law on the same key (the replications share their random-number streams).

    python scripts/patience_table.py [--scenario paper-qwen8b] [--gpus 20 100] [--reps 64]
    python scripts/patience_table.py --service-laws erlang-4,decode-cv-2 --latency

Prints a markdown table: revenue per GPU (95% interval), its difference to the exponential law
(paired), the share of jobs that abandon, and the run's wall time and events per second; with
``--latency`` also the time to first token's and the end-to-end latency's p50, p90 and p99 over
all classes (95% intervals; the end-to-end counters need an exponential prefill time: a row
with a phase-type prefill has the time to first token only); with ``--json PATH`` also writes
them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxqueue import policies, scenarios, simulate, stats  # noqa: E402
from jaxqueue.patience import Patience  # noqa: E402
from jaxqueue.service import Service  # noqa: E402

LAWS = {"exponential": None, "deterministic": None, "gamma": 0.5, "lognormal": 2.0}
#: Service laws (``--service-laws``), for prefill and decode times alike, exponential patience.
SERVICE = {"erlang-4": {"law": "erlang", "phases": 4}, "erlang-20": {"law": "erlang", "phases": 20},
           "cv-2": {"law": "fit", "cv": 2.0}}
#: ``decode-LAW``: the law for decode times only, prefill times exponential (latency measurable).
SERVICE |= {f"decode-{k}": v for k, v in list(SERVICE.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="paper-qwen8b")
    p.add_argument("--policy", default="gate-and-route")
    p.add_argument("--gpus", type=int, nargs="+", default=[20, 100])
    p.add_argument("--reps", type=int, default=64)
    p.add_argument("--horizon", type=float, default=2000.0)
    p.add_argument("--warmup", type=float, default=300.0)
    p.add_argument("--laws", default=",".join(LAWS), help="comma-separated, of " + ", ".join(LAWS))
    p.add_argument("--service-laws", default="", help="comma-separated, of " + ", ".join(SERVICE)
                   + ": rows with these prefill and decode time laws (same means, exponential "
                   "patience), paired with the exponential row too")
    p.add_argument("--latency", action="store_true",
                   help="also measure TTFT and end-to-end latency quantiles (slower runs)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the rows to PATH as JSON (default: no file)")
    a = p.parse_args()
    base = scenarios.load(a.scenario)
    laws = [s.strip() for s in a.laws.split(",") if s.strip()]
    unknown = sorted(set(laws) - set(LAWS))
    if unknown:
        p.error(f"--laws: unknown {', '.join(unknown)}; choose from {', '.join(LAWS)}")
    service = [s.strip() for s in a.service_laws.split(",") if s.strip()]
    unknown = sorted(set(service) - set(SERVICE))
    if unknown:
        p.error(f"--service-laws: unknown {', '.join(unknown)}; choose from {', '.join(SERVICE)}")
    print(f"{a.policy} on {a.scenario}, {a.reps} replications x {a.horizon:g} s (warm-up "
          f"{a.warmup:g} s); every law has the exponential law's mean patience\n")
    print("| n | patience law | revenue per GPU | minus exponential (paired) | abandon | wall | "
          "events/s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    rows = []
    for n in a.gpus:
        reference = None
        cases = [("patience", x) for x in ["exponential", *[x for x in laws if x != "exponential"]]]
        for kind, law in cases + [("service", x) for x in service]:
            cv = LAWS[law] if kind == "patience" else None
            if kind == "service":
                decode_only = law.startswith("decode-")
                model = base.replace(service=Service.make(
                    base.num_classes, prefill=None if decode_only else SERVICE[law],
                    decode=SERVICE[law]))
            else:
                model = base if law == "exponential" else base.replace(
                    patience=Patience.make(law, base.num_classes, cv=cv))
            system, _ = policies.build(a.policy, model, n)
            timed = a.latency
            # The end-to-end counters need an exponential prefill; under a phase-type one the
            # time to first token is still counted.
            e2e = getattr(system, "prefill_law", None) is None
            if timed:
                system = dataclasses.replace(system, wait_grid=stats.LATENCY_GRID,
                                             end_to_end=e2e)
            t = time.perf_counter()
            run = simulate(jax.random.key(1), system, reps=a.reps, horizon=a.horizon,
                           warmup=a.warmup, notify=lambda _: None)
            wall = time.perf_counter() - t
            q = stats.per_gpu(run, model, n)
            revenue = np.asarray(q["revenue_bundled"])
            abandon = float(np.nanmean(q["abandonment"] @ np.asarray(model.lambda_)
                                       / np.sum(model.lambda_)))
            mean, ci = stats.mean_ci(revenue)
            if reference is None:
                reference, diff, paired = revenue, "-", None
            else:
                dm, dci = stats.mean_ci(revenue - reference)
                diff = f"{float(dm):+.2f} ± {float(dci):.2f}"
                paired = {"mean": float(dm), "ci95": float(dci)}
            name = (law if cv is None else f"{law} (cv {cv:g})") if kind == "patience" else \
                f"exponential; service {law}"
            latency = None
            if timed:
                lat = stats.latency(run, stats.LATENCY_GRID)
                latency = {what: {str(q): {k: float(v[-1]) for k, v in lat[what]["quantiles"][q]
                                           .items()} for q in lat[what]["quantiles"]}
                           for what in ("ttft", "e2e") if what in lat}
                shown = f"{name}; TTFT p99 {_quantile(latency['ttft']['0.99'])}" + (
                    f", E2E p99 {_quantile(latency['e2e']['0.99'])}" if "e2e" in latency else "")
            else:
                shown = name
            print(f"| {n} | {shown} | {float(mean):.2f} ± {float(ci):.2f} | {diff} | "
                  f"{abandon:.1%} | {wall:.0f} s | {run.events / wall:.3g} |", flush=True)
            rows.append({"gpus": n, "kind": kind, "law": law, "cv": cv, "label": name,
                         "revenue": {"mean": float(mean), "ci95": float(ci)},
                         "minus_exponential": paired, "abandon": abandon, "latency": latency,
                         "wall_seconds": wall, "events": int(run.events)})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"scenario": a.scenario, "policy": a.policy, "reps": a.reps,
                       "horizon": a.horizon, "warmup": a.warmup, "rows": rows}, f, indent=1)


def _quantile(q: dict) -> str:
    return f"{q['value']:.3g} s [{q['low']:.3g}, {q['high']:.3g}]"


if __name__ == "__main__":
    main()
