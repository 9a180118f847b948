"""The gradient truth benchmark: every estimator of :mod:`jaxqueue.estimators` against the truth
of ``scripts/gradient_truth.py``, at equal simulation budgets.

    python scripts/gradient_bench.py --case qwen-gated-20              # resumable
    python scripts/gradient_bench.py --all
    python scripts/gradient_bench.py --report [--markdown]
    python scripts/gradient_bench.py --case qwen-gated-20 --estimator fd --estimates 16 --json FILE

Each estimator makes ``--estimates`` (32) estimates with fresh keys at the case's point, each
from about 256 replications x 1,000 s (warm-up 200 s): ``score`` and ``pathwise`` run 256
replications once; ``spsa`` 128 replications on each side of one direction; ``fd`` splits the 256
over its ``2p + 1`` configurations (``fd-h2`` the same at half the difference steps);
``score-16`` is ``score`` at a tuning step's 16 replications, to show what one step of
``jaxqueue tune`` sees. Every estimate is written to
``STORE/gradient_bench/CASE/ESTIMATOR.npz`` as soon as it is made (``--store``, ``results`` by
default; the truths are read from ``STORE/gradient_truth``).

Reported per estimator, in natural coordinates (each coordinate times its natural step,
:func:`jaxqueue.objective.natural_steps`, so that a coordinate's entry is the objective's change
per step of one to two jobs or GPUs): the cosine of the mean estimate with the truth, the median
cosine of one estimate, the relative bias ``|mean - truth| / |truth|`` (with the part of it that
the mean's own noise gives, and a test of whether the rest is bias: :func:`bias_test`), the share
of coordinates with ``|truth_i| > 3 se_i`` whose sign one estimate gets right (averaged over
estimates), events and wall seconds per estimate, and the events per-coordinate differences would
need for the same mean squared error (from the truth runs' per-replication variances); and the
same cosines on the gate's coordinates alone (targets and offset), where the dominant share does
not help.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import gradient_truth  # noqa: E402
from gradient_truth import (  # noqa: E402
    CASES,
    case_problem,
    configurations,
    coordinate_names,
    load,
    step_scale,
)

from jaxqueue.estimators import estimate  # noqa: E402
from jaxqueue.objective import natural_steps, to_free  # noqa: E402

OUT = ROOT / "results" / "gradient_bench"
BUDGET = 256  # replications x 1,000 s per estimate

ESTIMATORS = {
    "score": dict(estimator="score"),  # W = jaxqueue.estimators.default_discount
    "score-W30": dict(estimator="score", discount=30.0),
    # At a tuning step's size (jaxqueue tune's default 16 replications), not the bench's budget.
    "score-16": dict(estimator="score", reps=16),
    "pathwise": dict(estimator="pathwise", relaxation=0.1),
    "spsa": dict(estimator="spsa"),
    "fd": dict(estimator="fd"),
    # Half the difference steps: where the objective bends within a step (n = 100), less bias
    # for four times the variance.
    "fd-h2": dict(estimator="fd", step_scale=0.5),
    # A quarter of them: where the gate target of a class with about two jobs in its plan bends
    # within half a step (the gated family at n = 100)
    "fd-h4": dict(estimator="fd", step_scale=0.25),
    # The gate's steps capped by its temperature (difference_steps(..., gate=True)), the rest
    # natural
    "fd-gate": dict(estimator="fd", gate_steps=True),
}


def use_store(store: str | Path) -> None:
    """Keep the estimates under ``store/gradient_bench`` and read the truths from
    ``store/gradient_truth``."""
    global OUT
    OUT = Path(store).resolve() / "gradient_bench"
    gradient_truth.use_store(store)


def reps_for(name: str, p: int) -> int:
    if "reps" in ESTIMATORS[name]:
        return ESTIMATORS[name]["reps"]
    kind = ESTIMATORS[name]["estimator"]
    if kind == "spsa":
        return BUDGET // 2
    if kind == "fd":
        return max(2, round(BUDGET / (2 * p + 1)))
    return BUDGET


def run(case: str, name: str, estimates: int) -> None:
    problem, params = case_problem(case)
    meta = gradient_truth.OUT / case / "meta.json"
    grown = json.loads(meta.read_text()).get("capacity") if meta.exists() else None
    if grown:  # the truth's runs at this point grew the rings: start there (the same paths)
        problem = dataclasses.replace(problem, capacity=int(grown))
    free = to_free(jax.tree.map(jnp.asarray, params))
    p = ravel_pytree(free)[0].size
    folder = OUT / case
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npz"
    store = dict(np.load(path)) if path.exists() else {"grad": np.zeros((0, p)),
                                                       "events": np.zeros(0),
                                                       "seconds": np.zeros(0)}
    options = {k: v for k, v in ESTIMATORS[name].items() if k not in ("estimator", "reps")}
    kind = ESTIMATORS[name]["estimator"]
    reps = reps_for(name, p)
    while len(store["events"]) < estimates:
        k = len(store["events"])
        start = time.perf_counter()
        try:
            e = estimate(problem, kind, free, jax.random.fold_in(jax.random.key(7), k),
                         reps=reps, **options)
        except ValueError as err:  # an estimator that cannot take this family says so
            print(f"{case} {name}: {err}", flush=True)
            return
        store = {"grad": np.vstack([store["grad"], e.grad]),
                 "events": np.append(store["events"], e.events),
                 "seconds": np.append(store["seconds"], time.perf_counter() - start)}
        np.savez(folder / f"{name}.tmp.npz", **store)
        (folder / f"{name}.tmp.npz").rename(path)
        print(f"{case} {name}: estimate {k + 1}/{estimates} ({store['seconds'][-1]:.0f} s)",
              flush=True)


def metrics(case: str, name: str, limit: int | None = None) -> dict | None:
    """The estimator's figures against the truth, from its first ``limit`` estimates (all
    stored ones by default)."""
    truth_file = gradient_truth.OUT / case / "truth.json"
    path = OUT / case / f"{name}.npz"
    if not (truth_file.exists() and path.exists()):
        return None
    truth = json.loads(truth_file.read_text())
    problem, params = case_problem(case)
    h = np.asarray(ravel_pytree(natural_steps(problem, params))[0])
    g, se = np.asarray(truth["grad"]) * h, np.asarray(truth["se"]) * h
    store = np.load(path)
    est = store["grad"][:limit] * h
    mean = est.mean(0)

    def cos(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")

    sure = np.abs(g) > 3 * se
    signs = (np.sign(est[:, sure]) == np.sign(g[sure])).mean() if sure.any() else float("nan")
    mse = float(np.mean(np.sum((est - g) ** 2, axis=1)))
    # Per-coordinate differences with R replications per configuration have MSE sum(var_i)/R.
    values, _ = load(case)
    points, widths, _ = configurations(problem, params, step_scale(case))
    var = np.array([np.var((values[1 + 4 * i] - values[2 + 4 * i]) / widths[i, 0], ddof=1)
                    for i in range(len(g))]) * h**2
    per_rep = truth["events"] / (values.shape[1] * len(points))
    fd_events = (2 * len(g) + 1) * (var.sum() / mse) * per_rep
    bias = bias_test(est, g, se)
    names = [f.name for f in __import__("dataclasses").fields(params)]
    sizes = [np.size(getattr(params, k)) for k in names]
    gate = np.concatenate([[k in ("targets", "offset")] * s for k, s in zip(names, sizes,
                                                                            strict=True)])
    return {"estimates": len(est), "cos_mean": cos(mean, g),
            "median_cos": float(np.median([cos(e, g) for e in est])),
            "rel_bias": float(np.linalg.norm(mean - g) / np.linalg.norm(g)), **bias,
            "sign_agreement": float(signs), "coords_sure": int(sure.sum()),
            "events": float(store["events"][:limit].mean()),
            "seconds": float(store["seconds"][:limit].mean()),
            "fd_events_same_mse": float(fd_events),
            "gate_cos_mean": cos(mean[gate], g[gate]),
            "gate_median_cos": float(np.median([cos(e[gate], g[gate]) for e in est]))}


def bias_test(est: np.ndarray, g: np.ndarray, se: np.ndarray) -> dict:
    """Whether the mean of the estimates ``(K, p)`` differs from the truth ``g`` (standard errors
    ``se``) by more than their noise. The relative bias of a mean of K estimates holds the mean's
    own noise as well as any bias; this separates the two.

    ``rel_noise``: what that noise alone gives the relative bias, ``sqrt(sum_i var(mean_i)) /
    |g|``. ``bias_z``: the largest ``|mean_i - g_i| / sqrt(se(mean_i)^2 + se_i^2)`` over the
    coordinates that vary, and ``bias_p``: its Bonferroni p-value over those coordinates (each
    z read as Student's t with K - 1 degrees of freedom), valid however the coordinates'
    errors are correlated. A small ``bias_p`` is evidence of bias; a large one says the relative
    bias is what K estimates' noise gives."""
    k = est.shape[0]
    mean, sem = est.mean(0), est.std(0, ddof=1) / np.sqrt(k)
    norm = np.linalg.norm(g)
    out = {"rel_noise": float(np.sqrt(np.sum(sem**2)) / norm) if norm > 0 else float("nan"),
           "bias_z": float("nan"), "bias_coordinate": None, "bias_p": float("nan")}
    scale = np.sqrt(sem**2 + se**2)
    varies = scale > 0
    if k < 2 or not varies.any():
        return out
    z = np.abs(mean - g)[varies] / scale[varies]
    worst = int(np.argmax(z))
    p = min(1.0, 2 * float(sps.t.sf(z[worst], k - 1)) * int(varies.sum()))
    return {**out, "bias_z": float(z[worst]),
            "bias_coordinate": int(np.flatnonzero(varies)[worst]), "bias_p": p}


def report(markdown: bool) -> None:
    rows = []
    for case in CASES:
        for name in ESTIMATORS:
            m = metrics(case, name)
            if m is not None:
                rows.append((case, name, m))
    if markdown:
        print("| case | estimator | cos(mean, truth) | median cos | rel. bias | signs | "
              "events/estimate | fd events, same MSE | s/estimate | gate: cos(mean) | "
              "gate: median cos |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case, name, m in rows:
        cells = [case, name, f"{m['cos_mean']:.3f}", f"{m['median_cos']:.3f}",
                 f"{m['rel_bias']:.3f}", f"{m['sign_agreement']:.2f} ({m['coords_sure']})",
                 f"{m['events']:.3g}", f"{m['fd_events_same_mse']:.3g}", f"{m['seconds']:.0f}",
                 f"{m['gate_cos_mean']:.3f}", f"{m['gate_median_cos']:.3f}"]
        print(("| " + " | ".join(cells) + " |") if markdown else "  ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", action="append", choices=list(CASES))
    p.add_argument("--all", action="store_true")
    p.add_argument("--estimator", action="append", choices=list(ESTIMATORS),
                   help="estimators to run (default all)")
    p.add_argument("--estimates", type=int, default=32)
    p.add_argument("--report", action="store_true")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", metavar="FILE", help="write the figures of the cases and "
                   "estimators run (their first --estimates estimates) to FILE")
    p.add_argument("--store", metavar="DIR", default=str(ROOT / "results"),
                   help="where the estimates live, under DIR/gradient_bench (default: results)")
    a = p.parse_args()
    use_store(a.store)
    if a.report:
        report(a.markdown)
        return
    cases = list(CASES) if a.all else (a.case or [])
    if not cases:
        p.error("give --case NAME, --all or --report")
    for case in cases:
        for name in a.estimator or list(ESTIMATORS):
            run(case, name, a.estimates)
    if a.json:
        out = {case: {"coordinates": coordinate_names(case_problem(case)[1]),
                      "estimators": {name: metrics(case, name, a.estimates)
                                     for name in a.estimator or list(ESTIMATORS)}}
               for case in cases}
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
