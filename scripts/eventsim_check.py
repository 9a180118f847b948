"""The event-list simulator (scripts/eventsim.py) against jaxqueue's Gate-and-Route.

    python scripts/eventsim_check.py [--scenario paper-qwen8b] [--gpus 20 5] [--reps 64]
                                     [--jax-reps 64] [--horizon 2000] [--warmup 300]

For each n and patience law (exponential, deterministic, lognormal of cv 2; exponential
service), prints each simulator's revenue per GPU (bundled pricing, the time-integral
estimator, mean +- 95% t-interval over replications), their difference and its z-score
(difference over the root sum of the squared standard errors); then the same for the counted
estimator and the abandonment share; each class's mean occupancies (x, q_p, y_m, y_s, q_d per
GPU); and (``--ttft-gpus``) the distribution function of the time to first token at a few
times. If both simulators are right, each |z| is below 3 but for about 1 comparison in 370
(marked ``**``); with a hundred comparisons, a few between 2 and 3 are expected, and the
comparisons of one row are correlated (they share the replications, and the same seed is used
for every law).

Then the event-list simulator under other service laws (deterministic and Erlang-20 prefill
and decode times, exponential patience), and jaxqueue with its Erlang-K ones (counted by phase,
an exact chain) against the event list with the same law and with deterministic times: Erlang-20
(cv 0.22) comes close to the fixed times of a fixed number of iterations.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import eventsim  # noqa: E402

PATIENCE = {"exponential": None, "deterministic": None, "lognormal:2": 2.0}
# The event-list simulator's occupancy levels (per GPU, per class) and jaxqueue's names.
LEVELS = {"x": "x", "q_p": "q_prefill", "y_m": "y_mixed", "y_s": "y_solo", "q_d": "q_decode"}


def jax_run(model, n: int, *, law: str, reps: int, horizon: float, warmup: float, seed: int,
            ttft_grid=None, service: str | None = None):
    """Per-replication revenue (integral, counted) and abandonment share of jaxqueue's
    Gate-and-Route, and the wall time; with ``ttft_grid``, its TTFT distribution function at
    those times (``{"cdf", "se"}``, shape ``(K, I + 1)``, from ``jaxqueue.stats.latency``);
    with ``service`` (``"erlang:K"``), Erlang-K prefill and decode times."""
    import dataclasses

    import jax

    import jaxqueue as jq
    from jaxqueue.patience import Patience
    from jaxqueue.service import Service

    name, _, cv = law.partition(":")
    if name != "exponential":
        model = model.replace(patience=Patience.make(name, model.num_classes,
                                                     cv=float(cv) if cv else None))
    if service is not None:
        kind, _, phases = service.partition(":")
        if kind != "erlang":
            raise SystemExit(f"jaxqueue runs phase-type service laws only, not {service!r}")
        erlang = {"law": "erlang", "phases": int(phases)}
        model = model.replace(service=Service.make(model.num_classes, prefill=erlang,
                                                   decode=erlang))
    system, _ = jq.build("gate-and-route", model, n)
    if ttft_grid is not None:
        system = dataclasses.replace(system, wait_grid=tuple(ttft_grid))
    t = time.perf_counter()
    run = jq.simulate(jax.random.key(seed), system, reps=reps, horizon=horizon, warmup=warmup,
                      notify=lambda _: None)
    wall = time.perf_counter() - t
    q = jq.stats.per_gpu(run, model, n)
    arrivals = run.count("arrivals").sum(axis=1)
    abandoned = (run.count("prefill_abandon") + run.count("decode_abandon")).sum(axis=1)
    levels = {ours: q[theirs] for ours, theirs in LEVELS.items()}
    ttft = None
    if ttft_grid is not None:
        lat = jq.stats.latency(run, tuple(ttft_grid))["ttft"]
        ttft = {"cdf": np.asarray(lat["cdf"]), "se": np.asarray(lat["se"])}
    return {"integral": q["revenue_bundled_integral"], "counted": q["revenue_bundled_counted"],
            "abandon": abandoned / arrivals, "wall": wall, "levels": levels, "ttft": ttft}


def event_run(cl, *, law: str, reps: int, horizon: float, warmup: float, seed: int,
              prefill="exponential", decode="exponential"):
    res = eventsim.replicate(cl, reps=reps, horizon=horizon, warmup=warmup, seed=seed,
                             patience=eventsim.parse_law(law),
                             prefill=eventsim.parse_law(prefill),
                             decode=eventsim.parse_law(decode), ttft=False)
    arrivals = res.per_rep("arrivals").sum(axis=1)
    abandoned = (res.per_rep("abandon_prefill") + res.per_rep("abandon_decode")).sum(axis=1)
    return {"integral": res.per_rep("revenue_integral"),
            "counted": res.per_rep("revenue_counted"), "abandon": abandoned / arrivals,
            "wall": res.wall, "events": res.events,
            "levels": {k: res.per_rep(k) for k in LEVELS}}


def ttft_cdf(res, grid):
    """The event-list simulator's TTFT distribution function at the grid times, per class and
    for all classes (last column), as a ratio over replications (requests with TTFT <= t over
    requests recorded) with its delta-method standard error: ``(cdf, se)``, ``(K, I + 1)``."""
    num_classes = res.cluster.num_classes
    cdf = np.zeros((len(grid), num_classes + 1))
    se = np.zeros_like(cdf)
    for j in range(num_classes + 1):
        per_rep = [r.ttft[j] if j < num_classes else np.concatenate(r.ttft) for r in res.reps]
        b = np.asarray([v.size for v in per_rep], np.float64)
        for k, t in enumerate(grid):
            a = np.asarray([np.count_nonzero(v <= t) for v in per_rep], np.float64)
            ratio = a.sum() / b.sum()
            cdf[k, j] = ratio
            r = b.size
            se[k, j] = math.sqrt(np.sum((a - ratio * b) ** 2) / (r * (r - 1))) / b.mean()
    return cdf, se


def mean_se(v):
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def fmt(v, digits=2):
    s = _pack(v)
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"


def compare(a, b):
    ma, sa = mean_se(a)
    mb, sb = mean_se(b)
    d = ma - mb
    return d, d / math.hypot(sa, sb)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="paper-qwen8b")
    p.add_argument("--gpus", type=int, nargs="+", default=[20, 5])
    p.add_argument("--reps", type=int, default=64, help="event-list replications")
    p.add_argument("--jax-reps", type=int, default=64, help="jaxqueue replications")
    p.add_argument("--horizon", type=float, default=2000.0)
    p.add_argument("--warmup", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--laws", default=",".join(PATIENCE), help="patience laws, comma-separated")
    p.add_argument("--ttft-gpus", type=int, nargs="*", default=[20],
                   help="n at which to compare the TTFT laws (none: skip)")
    p.add_argument("--ttft-laws", default="exponential,deterministic",
                   help="patience laws of the TTFT comparison")
    p.add_argument("--service-laws", default="deterministic,erlang:20",
                   help="prefill and decode laws to show ('' for none); jaxqueue runs the "
                   "erlang:K ones too, compared with the event list's and its deterministic law")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the service-law tables as JSON to PATH")
    a = p.parse_args()
    record = {"settings": {k: v for k, v in vars(a).items() if k != "json"}, "service": [],
              "phased": []}
    try:
        _main(a, record)
    finally:
        if a.json:
            Path(a.json).write_text(json.dumps(record, indent=2))


def _pack(v) -> dict:
    m, h = eventsim.mean_ci(np.asarray(v, np.float64))
    return {"mean": float(m), "ci95": float(h)}


def _main(a, record: dict) -> None:

    from jaxqueue import scenarios

    model = scenarios.load(a.scenario)
    laws = [s.strip() for s in a.laws.split(",") if s.strip()]
    print(f"Gate-and-Route on {a.scenario}: event-list simulator ({a.reps} reps) vs jaxqueue "
          f"({a.jax_reps} reps), {a.horizon:g} s, warm-up {a.warmup:g} s, exponential service\n")
    print("| n | M | patience | estimator | event-list | jaxqueue | difference | z |")
    print("|---:|---:|---|---|---:|---:|---:|---:|")
    walls, details = [], []
    for n in a.gpus:
        cl = eventsim.cluster_from_model(model, n)
        for law in laws:
            ev = event_run(cl, law=law, reps=a.reps, horizon=a.horizon, warmup=a.warmup,
                           seed=a.seed)
            jx = jax_run(model, n, law=law, reps=a.jax_reps, horizon=a.horizon,
                         warmup=a.warmup, seed=a.seed)
            walls.append((n, law, ev["wall"], ev["events"], jx["wall"]))
            details.append((n, law, ev, jx))
            for key, label, digits in (("integral", "revenue (integral)", 2),
                                       ("counted", "revenue (counted)", 2),
                                       ("abandon", "abandon share", 4)):
                d, z = compare(ev[key], jx[key])
                flag = "" if abs(z) < 3 else " **"
                print(f"| {n} | {cl.M} | {law} | {label} | {fmt(ev[key], digits)} | "
                      f"{fmt(jx[key], digits)} | {d:+.{digits}f} | {z:+.2f}{flag} |",
                      flush=True)
    print("\nPer-class mean occupancies per GPU, event-list vs jaxqueue (z of the difference):\n")
    names = model.class_names
    print("| n | patience | class | " + " | ".join(LEVELS) + " |")
    print("|---:|---|---|" + "---:|" * len(LEVELS))
    for n, law, ev, jx in details:
        for i, name in enumerate(names):
            cells = []
            for k in LEVELS:
                mine, theirs = ev["levels"][k][:, i], jx["levels"][k][:, i]
                if np.ptp(mine) == 0 and np.ptp(theirs) == 0:
                    cells.append(f"{mine.mean():.3f} / {theirs.mean():.3f}")
                    continue
                _, z = compare(mine, theirs)
                flag = "" if abs(z) < 3 else " **"
                cells.append(f"{mine.mean():.3f} / {theirs.mean():.3f} (z {z:+.1f}){flag}")
            print(f"| {n} | {law} | {name} | " + " | ".join(cells) + " |")
    print("\n| n | patience | event-list wall | events | events/s | jaxqueue wall |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, law, w, e, jw in walls:
        print(f"| {n} | {law} | {w:.1f} s | {e:,} | {e / w:.3g} | {jw:.1f} s |")

    grid = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)
    ttft_laws = [s.strip() for s in a.ttft_laws.split(",") if s.strip()]
    if a.ttft_gpus and ttft_laws:
        print(f"\nTTFT (arrival to end of prefill) distribution function P(TTFT <= t), "
              f"event-list / jaxqueue (z), same replications as above; jaxqueue with "
              f"wait_grid = {grid}:\n")
        print("| n | patience | class | " + " | ".join(f"t = {t:g} s" for t in grid) + " |")
        print("|---:|---|---|" + "---:|" * len(grid))
    for n in a.ttft_gpus if ttft_laws else ():
        cl = eventsim.cluster_from_model(model, n)
        for law in ttft_laws:
            res = eventsim.replicate(cl, reps=a.reps, horizon=a.horizon, warmup=a.warmup,
                                     seed=a.seed, patience=eventsim.parse_law(law))
            mine, mine_se = ttft_cdf(res, grid)
            jx = jax_run(model, n, law=law, reps=a.jax_reps, horizon=a.horizon,
                         warmup=a.warmup, seed=a.seed, ttft_grid=grid)["ttft"]
            for j, name in enumerate((*model.class_names, "all")):
                cells = []
                for k in range(len(grid)):
                    d = mine[k, j] - jx["cdf"][k, j]
                    spread = math.hypot(mine_se[k, j], jx["se"][k, j])
                    z = d / spread if spread > 0 else (0.0 if d == 0 else math.inf)
                    flag = "" if abs(z) < 3 else " **"
                    cells.append(f"{mine[k, j]:.4f} / {jx['cdf'][k, j]:.4f} ({z:+.1f}){flag}")
                print(f"| {n} | {law} | {name} | " + " | ".join(cells) + " |", flush=True)

    service = [s.strip() for s in a.service_laws.split(",") if s.strip()]
    if not service:
        return
    print(f"\nEvent-list simulator alone ({a.reps} reps), exponential patience; prefill and "
          "decode times of the given law (model means):\n")
    print("| n | M | service law | revenue (integral) | revenue (counted) | abandon share | "
          "minus exponential service |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    runs = {}
    for n in a.gpus:
        cl = eventsim.cluster_from_model(model, n)
        base = None
        for law in ["exponential", *service]:
            ev = event_run(cl, law="exponential", reps=a.reps, horizon=a.horizon,
                           warmup=a.warmup, seed=a.seed, prefill=law, decode=law)
            if base is None:
                base, diff = ev, "-"
            else:
                d, z = compare(ev["integral"], base["integral"])
                diff = f"{d:+.2f} (z {z:+.1f})"
            print(f"| {n} | {cl.M} | {law} | {fmt(ev['integral'])} | {fmt(ev['counted'])} | "
                  f"{fmt(ev['abandon'], 4)} | {diff} |", flush=True)
            record["service"].append({"gpus": n, "law": law, "revenue": _pack(ev["integral"]),
                                      "abandon": _pack(ev["abandon"])})
            runs[n, law] = ev
    phased = [law for law in service if law.startswith("erlang:")]
    if not phased:
        return
    print(f"\njaxqueue ({a.jax_reps} reps) with Erlang-k prefill and decode times (phases "
          "counted per class, an exact chain) against the event-list simulator with the same "
          "law and with deterministic times, exponential patience:\n")
    print("| n | service law | jaxqueue revenue (integral) | event-list, same law | z | "
          "event-list, deterministic | z |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in a.gpus:
        cl = eventsim.cluster_from_model(model, n)
        det = runs.get((n, "deterministic"))
        if det is None:
            det = event_run(cl, law="exponential", reps=a.reps, horizon=a.horizon,
                            warmup=a.warmup, seed=a.seed, prefill="deterministic",
                            decode="deterministic")
        for law in phased:
            jx = jax_run(model, n, law="exponential", reps=a.jax_reps, horizon=a.horizon,
                         warmup=a.warmup, seed=a.seed, service=law)
            _, z_same = compare(runs[n, law]["integral"], jx["integral"])
            _, z_det = compare(det["integral"], jx["integral"])
            print(f"| {n} | {law} | {fmt(jx['integral'])} | {fmt(runs[n, law]['integral'])} | "
                  f"{z_same:+.2f} | {fmt(det['integral'])} | {z_det:+.2f} |", flush=True)
            record["phased"].append({"gpus": n, "law": law, "jaxqueue": _pack(jx["integral"]),
                                     "event_list": _pack(runs[n, law]["integral"]),
                                     "z": z_same, "deterministic": _pack(det["integral"]),
                                     "z_deterministic": z_det})


if __name__ == "__main__":
    main()
