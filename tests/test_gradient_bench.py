"""Tests of scripts/gradient_bench.py's bias test: its false-alarm rate is the one its
Bonferroni bound gives, and a bias of a few standard errors is found."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
_spec = importlib.util.spec_from_file_location("gradient_bench", ROOT / "scripts" /
                                               "gradient_bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

K, P, TRIALS = 16, 10, 2000


def _rejections(shift: np.ndarray, seed: int) -> np.ndarray:
    """Whether each trial's bias test rejects at 5%: K estimates of P coordinates, standard
    normal noise around a truth of 1 (known exactly: its standard error is 0), plus ``shift``."""
    rng = np.random.default_rng(seed)
    g, se = np.ones(P), np.zeros(P)
    out = np.empty(TRIALS, bool)
    for i in range(TRIALS):
        est = g + shift + rng.standard_normal((K, P))
        out[i] = bench.bias_test(est, g, se)["bias_p"] <= 0.05
    return out


def test_an_unbiased_estimator_is_flagged_as_often_as_bonferroni_says():
    # With independent coordinates each z is |Student t| with K - 1 degrees of freedom, so the
    # test rejects exactly when some coordinate's two-sided p is <= 0.05 / P:
    # 1 - (1 - 0.05 / P)^P.
    exact = 1 - (1 - 0.05 / P) ** P
    rate = _rejections(np.zeros(P), seed=0).mean()
    assert abs(rate - exact) <= 3 * np.sqrt(exact * (1 - exact) / TRIALS)


def test_a_bias_of_six_standard_errors_on_one_coordinate_is_found():
    shift = np.zeros(P)
    shift[3] = 6 / np.sqrt(K)  # six standard errors of the mean of K estimates
    assert _rejections(shift, seed=1).mean() > 0.8


def test_the_noise_part_is_what_the_mean_of_the_estimates_carries():
    rng = np.random.default_rng(2)
    g = np.full(P, 3.0)
    est = g + rng.standard_normal((K, P)) * 2.0
    out = bench.bias_test(est, g, np.zeros(P))
    sem = est.std(0, ddof=1) / np.sqrt(K)
    assert np.isclose(out["rel_noise"], np.sqrt(np.sum(sem**2)) / np.linalg.norm(g))
    # A coordinate that never varies (an exact 0, like a cap that never binds) is left out.
    est[:, 5], g[5] = 0.0, 0.0
    assert bench.bias_test(est, g, np.zeros(P))["bias_coordinate"] != 5
