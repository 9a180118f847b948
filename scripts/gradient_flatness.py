"""The deterministic ``gated`` family is flat where it is tuned: small moves of its gate
parameters change no decision on any replication (common random numbers), so its expected
objective has no gradient there and the smoothed family is what gradients can tune.

    python scripts/gradient_flatness.py [--gpus 20] [--reps 128]

Prints, for each move from the LP point of ``paper-qwen8b``, the mean objective and how many
replications are bit-identical to the LP point's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxqueue import fluid, scenarios  # noqa: E402
from jaxqueue.objective import Problem, evaluate  # noqa: E402
from jaxqueue.policies import tunable  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, default=20)
    p.add_argument("--reps", type=int, default=128)
    a = p.parse_args()
    model = scenarios.load("paper-qwen8b")
    plan = fluid.solve(model, "bundled")
    problem = Problem(family="gated", model=model, n=a.gpus, plan=plan, horizon=1000.0,
                      warmup=200.0, reps=a.reps)
    p0 = tunable.initial_params("gated", model, a.gpus, plan)
    key = jax.random.key(8)
    base = evaluate(problem, p0, key)
    print(f"LP point: {base.mean():.4f} ({a.reps} replications x 1,000 s, warm-up 200 s)")
    moves = {"target 1 x 1.15": dataclasses.replace(p0, targets=p0.targets * [1.15, 1]),
             "target 1 / 1.15": dataclasses.replace(p0, targets=p0.targets / [1.15, 1]),
             "target 2 x 1.15": dataclasses.replace(p0, targets=p0.targets * [1, 1.15]),
             "target 2 / 1.15": dataclasses.replace(p0, targets=p0.targets / [1, 1.15]),
             "offset 0 -> 0.25": dataclasses.replace(p0, offset=np.float64(0.25)),
             "slack 2 -> 1.5": dataclasses.replace(p0, slack=np.float64(1.5)),
             "share + 1 GPU": dataclasses.replace(p0, share=p0.share + 1.0 / a.gpus)}
    for name, params in moves.items():
        v = evaluate(problem, params, key)
        print(f"{name:<18} {v.mean():.4f}  identical replications: {int(np.sum(v == base))} "
              f"of {a.reps}")


if __name__ == "__main__":
    main()
