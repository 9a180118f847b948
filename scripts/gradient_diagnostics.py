"""Bias, variance and cosine similarity of jaxqueue's gradient estimators against the exact
gradient of a small system, at equal simulation budgets.

    python scripts/gradient_diagnostics.py            # the full table (about 15-30 min, 2 cores)
    python scripts/gradient_diagnostics.py --quick    # fewer repeats (a few minutes)
    python scripts/gradient_diagnostics.py --only pathwise=0.1 pathwise=1  # some rows

The system: two classes on n = 2 GPUs (one mixed), B = 2, a randomised gate (temperature
``--gate-tau``) over the ``gated`` family's targets and offset, so that revenue is smooth in
them. Its exact stationary revenue is solved from the generator
(:mod:`jaxqueue.exact_gradient`) and differentiated by central differences in float64: the
ground truth. Each estimator gets the same simulated replication-seconds per estimate (finite
differences split them over 2 x 3 runs, SPSA over 2); each is repeated ``--repeats`` times with
fresh keys. Reported per estimator (on the log-target and offset coordinates): the relative
bias ``|mean - exact| / |exact|``, the total variance of one estimate relative to ``|exact|^2``,
the cosine similarity of the mean estimate with the exact gradient, and the mean cosine of
single estimates. Pathwise estimates are shown at the relaxation temperatures 0.01, 0.1, 0.5
and 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxqueue import fluid  # noqa: E402
from jaxqueue.exact_gradient import gated_revenue, revenue_gradient  # noqa: E402
from jaxqueue.model import Model  # noqa: E402
from jaxqueue.policies import tunable  # noqa: E402
from jaxqueue.tune import Problem, gradient, to_free  # noqa: E402


def diag_model() -> Model:
    """tau = alpha = 1, C = 1: mu_p = 1/P = (2, 1), mu_m = 1/D = (0.5, 0.5), mu_s = 0.75;
    w = c_p P + c_d D = (1.5, 2): class 2 pays more per job but takes twice the prefill time,
    so which class the gate admits moves revenue."""
    return Model(lambda_=(0.8, 0.5), theta=(2.0, 1.5), P=(0.5, 1.0), D=(2.0, 2.0), alpha=1.0,
                 beta=0.0, gamma=1.5, C=1.0, B=2, c_p=1.0, c_d=0.5, name="diagnostics")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 repeats instead of 12, shorter runs")
    p.add_argument("--repeats", type=int, default=None, help="estimates per estimator")
    p.add_argument("--gate-tau", type=float, default=1.0, help="the gate's randomisation")
    p.add_argument("--horizon", type=float, default=None, help="seconds per estimate's budget")
    p.add_argument("--only", nargs="+", default=None, metavar="ROW",
                   help="rows to run: fd, spsa, score, pathwise=T (T one of 0.01 0.1 0.5 1)")
    a = p.parse_args()
    cases = [("fd", dict(perturbation=0.05), 6), ("spsa", dict(perturbation=0.05), 2),
             ("score", {}, 1)] + [("pathwise", dict(temperature=t), 1)
                                  for t in (0.01, 0.1, 0.5, 1.0)]
    rows = {name if name != "pathwise" else f"pathwise={kw['temperature']:g}": (name, kw, runs)
            for name, kw, runs in cases}
    if a.only is not None:
        unknown = [r for r in a.only if r not in rows]
        if unknown:
            p.error(f"--only {' '.join(unknown)}: must be among {' '.join(rows)}")
        cases = [rows[r] for r in dict.fromkeys(a.only)]
    repeats = a.repeats or (4 if a.quick else 12)
    horizon = a.horizon or (1500.0 if a.quick else 4000.0)
    jax.config.update("jax_enable_x64", True)

    model, n, M = diag_model(), 2, 1
    plan = fluid.solve(model, "bundled")
    targets, offset = np.array([0.3, 0.15]), 0.5
    params = tunable.GatedParams(targets=targets, offset=np.float64(offset),
                                 share=np.float64(M / n), slack=np.float64(2.0),
                                 caps=np.full(2, 2.0))
    t0 = time.perf_counter()
    limits = dict(max_queue=8, max_buffer=5)
    exact = gated_revenue(model, n, M, targets, offset, a.gate_tau, **limits)
    grad = revenue_gradient(model, n, M, targets, offset, a.gate_tau, **limits)
    print(f"exact chain: {exact['num_states']} states, truncation {exact['truncation']:.1e}, "
          f"revenue {exact['revenue']:.5f}, gradient (log t1, log t2, offset) "
          f"{np.round(grad, 5).tolist()} ({time.perf_counter() - t0:.0f} s)")
    free = to_free(jax.tree.map(np.asarray, params))
    reps = 16
    budget = reps * horizon  # replication-seconds per estimate

    def problem(runs: int) -> Problem:
        # The same budget, split over `runs` runs of `reps` replications.
        return Problem(family="gated", model=model, n=n, plan=plan, horizon=budget / runs / reps,
                       warmup=50.0, reps=reps, gate_temperature=a.gate_tau)

    print(f"budget per estimate: {budget:.0f} replication-seconds; {repeats} estimates each")
    print(f"{'estimator':<22} {'rel. bias':>10} {'rel. var':>10} {'cos(mean)':>10} "
          f"{'mean cos':>9} {'seconds':>8}")
    for name, kw, runs in cases:
        start = time.perf_counter()
        est = []
        for r in range(repeats):
            g, _ = gradient(problem(runs), name, free, jax.random.key(1000 + r), **kw)
            est.append(np.concatenate([np.asarray(g.targets), [float(g.offset)]]))
        est = np.array(est)
        mean = est.mean(0)
        norm = np.linalg.norm(grad)
        bias = np.linalg.norm(mean - grad) / norm
        var = np.trace(np.cov(est.T)) / norm**2 if repeats > 1 else float("nan")

        def cos(v, norm=norm):
            return float(v @ grad / (np.linalg.norm(v) * norm + 1e-300))

        label = name if name != "pathwise" else f"pathwise T={kw['temperature']}"
        print(f"{label:<22} {bias:>10.3f} {var:>10.3f} {cos(mean):>10.3f} "
              f"{np.mean([cos(e) for e in est]):>9.3f} {time.perf_counter() - start:>8.0f}")


if __name__ == "__main__":
    main()
