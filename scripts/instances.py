"""Synthetic scenarios that ``scripts/bench.py`` and ``scripts/tuning_bench.py`` share.

Kept with the scripts, not in the package, so that ``scripts/bench_ab.py`` can run today's
``bench.py`` against an older revision's package.
"""

from __future__ import annotations

import numpy as np

from jaxqueue import scenarios


def many_classes(k: int, base: str = "paper-qwen8b"):
    """A k-class variant of a two-class scenario: its two classes alternately, the j-th pair's
    prompt and output lengths stretched by 5% j (so no two classes are alike), the same total
    arrival rate per GPU split evenly."""
    model = scenarios.load(base)
    j = np.arange(k)
    stretch = 1.0 + 0.05 * (j // 2)
    return model.replace(lambda_=np.full(k, float(np.sum(model.lambda_)) / k),
                         theta=np.resize(model.theta, k), P=np.resize(model.P, k) * stretch,
                         D=np.resize(model.D, k) * stretch,
                         class_names=tuple(f"class-{i}" for i in range(k)),
                         name=f"{base}-{k}-classes")
