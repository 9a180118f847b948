"""Every gradient estimator against the exact gradient of a small chain, at equal budgets: a
check of direction, bias and variance that runs in minutes.

    python scripts/gradient_diagnostics.py                 # 8 estimates per estimator
    python scripts/gradient_diagnostics.py --estimates 16 --only score fd
    python scripts/gradient_diagnostics.py --json FILE     # the table's figures as JSON too

The chain (the instance of ``tests/test_estimators.py``): two classes on n = 4 GPUs, the smoothed
``gated`` family (gate temperature 1, triangular dither, so 1, 2 or 3 mixed GPUs), class 1 paying
twice as much per second of prefill as class 2. Its exact gradient in the gate's two log targets,
its offset and the share comes from one generator solve per rounding outcome
(:func:`jaxqueue.exact_gradient.gated_gradient`); with two or more mixed GPUs it has independent
components (with one, every gate decision happens at X = 0 and every gradient is a multiple of one
vector, which made an earlier version of this table a sign test).

Each estimate gets about 256 replications x 1,000 s: ``score`` and ``pathwise`` in one run,
``spsa`` 128 replications on each side of one direction, ``fd`` 28 replications for each of its 9
configurations. Reported in natural coordinates (each coordinate times its natural step): the
cosine of the mean estimate with the exact gradient, the median cosine of one estimate, the
relative bias of the mean, the mean squared error of one estimate relative to ``|g|^2``, the two
cosines on the gate's coordinates alone (the share dominates ``|g|``), and seconds per
estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_estimators import TEMPERATURE, N, exact, params, problem  # noqa: E402

from jaxqueue.estimators import estimate  # noqa: E402
from jaxqueue.objective import natural_steps, to_free  # noqa: E402

ROWS = {"score": dict(discount=10.0), "fd": dict(step_scale=0.5),
        "spsa": dict(step_scale=0.5), "pathwise": dict(relaxation=0.1)}
ONLY = ["targets", "offset", "share"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimates", type=int, default=8)
    p.add_argument("--only", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    a = p.parse_args()
    start = time.perf_counter()
    truth = exact()["free"]
    print(f"exact gradient (log t1, log t2, offset, share) at n = {N}, T = {TEMPERATURE}: "
          f"{np.round(truth, 5).tolist()} ({time.perf_counter() - start:.0f} s)")
    free = to_free(jax.tree.map(jnp.asarray, params()))
    h = np.asarray(ravel_pytree(natural_steps(problem(1), params()))[0])[:4]
    g = truth * h
    out = {"n": N, "temperature": TEMPERATURE, "exact": truth.tolist(),
           "coordinates": ["log t1", "log t2", "offset", "share"], "estimates": a.estimates,
           "rows": {}}
    print(f"{'estimator':<10} {'cos(mean)':>10} {'median cos':>11} {'rel. bias':>10} "
          f"{'rel. MSE':>9} {'gate cos(mean)':>15} {'gate median cos':>16} {'s/estimate':>11}")
    for name in a.only:
        reps = {"score": 256, "pathwise": 256, "spsa": 128, "fd": 28}[name]
        est, seconds = [], []
        for k in range(a.estimates):
            t = time.perf_counter()
            e = estimate(problem(reps), name, free, jax.random.key(100 + k), only=ONLY,
                         **ROWS[name])
            est.append(e.grad[:4] * h)
            seconds.append(time.perf_counter() - t)
        est = np.asarray(est)
        mean = est.mean(0)

        def cos(v, w=g):
            return float(v @ w / (np.linalg.norm(v) * np.linalg.norm(w) + 1e-300))

        gate = slice(0, 3)  # the share dominates |g|: the gate's coordinates on their own
        row = {"cos_mean": cos(mean), "median_cos": float(np.median([cos(e) for e in est])),
               "rel_bias": float(np.linalg.norm(mean - g) / np.linalg.norm(g)),
               "rel_mse": float(np.mean(np.sum((est - g) ** 2, 1)) / np.sum(g ** 2)),
               "gate_cos_mean": cos(mean[gate], g[gate]),
               "gate_median_cos": float(np.median([cos(e[gate], g[gate]) for e in est])),
               "seconds": float(np.median(seconds)), "reps": reps}
        out["rows"][name] = row
        print(f"{name:<10} {row['cos_mean']:>10.3f} {row['median_cos']:>11.3f} "
              f"{row['rel_bias']:>10.3f} {row['rel_mse']:>9.3f} {row['gate_cos_mean']:>15.3f} "
              f"{row['gate_median_cos']:>16.3f} {row['seconds']:>11.1f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
