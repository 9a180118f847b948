"""Tests of scripts/gradient_bench.py's bias test (its false-alarm rate is the one its
Bonferroni bound gives, and a bias of a few standard errors is found) and of the truth cases'
configurations."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from jaxqueue.objective import difference_steps

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


def test_the_finer_truth_cases_rerun_the_coarser_cases_configurations():
    # The truths at n = 100 share key and replications, so a configuration that two cases run
    # gives the same objectives (docs/gradients.md relies on it): the -fine case's +-h/2 must
    # be the base case's +-h/2 and the -finer case's +-h/4 the -fine case's +-h/4, exactly.
    truth = bench.gradient_truth
    problem, params = truth.case_problem("qwen-sli-100")
    assert [truth.step_scale(c) for c in ("qwen-sli-100", "qwen-sli-100-fine",
                                          "qwen-sli-100-finer")] == [1.0, 0.5, 0.25]
    base, fine, finer = (truth.configurations(problem, params, s)[0] for s in (1.0, 0.5, 0.25))
    assert np.array_equal(base[0], fine[0]) and np.array_equal(base[0], finer[0])
    for i in range(len(base[0])):
        for sign in (0, 1):
            assert np.array_equal(base[3 + 4 * i + sign], fine[1 + 4 * i + sign])
            assert np.array_equal(fine[3 + 4 * i + sign], finer[1 + 4 * i + sign])
            assert not np.array_equal(finer[1 + 4 * i + sign], finer[3 + 4 * i + sign])


def test_a_step_per_field_scales_only_the_coordinates_it_names():
    # The -coord case of the gated family takes its own steps for the gate targets (one per
    # class) and the offset and keeps h for the rest: those configurations must be the base
    # case's exactly, and a named coordinate's widths its fraction of the base case's.
    truth = bench.gradient_truth
    scale = truth.step_scale("qwen-gated-100-coord")
    assert isinstance(scale, dict) and set(scale) == {"targets", "offset"}
    problem, params = truth.case_problem("qwen-gated-100")
    coord, w_coord, _ = truth.configurations(problem, params, scale)
    base, w_base, _ = truth.configurations(problem, params, 1.0)
    assert np.array_equal(coord[0], base[0])
    expected = {"log t1": scale["targets"][0], "log t2": scale["targets"][1],
                "offset": scale["offset"]}
    for i, name in enumerate(truth.coordinate_names(params)):
        same = all(np.array_equal(coord[k], base[k]) for k in range(1 + 4 * i, 5 + 4 * i))
        if name in expected:
            assert not same
            # (the points pass through float32 parameters: widths agree to about 1e-6)
            assert np.allclose(w_coord[i], expected[name] * w_base[i], rtol=1e-4)
        else:
            assert same and np.array_equal(w_coord[i], w_base[i])


def test_the_gate_truth_case_takes_the_gate_capped_steps():
    # The -gate case's steps are difference_steps(gate=True): the gate targets' and offset's
    # capped (each smaller than its natural step here), every other coordinate's as the base
    # case's, exactly.
    truth = bench.gradient_truth
    assert truth.step_scale("dolly-gated-100-gate") == "gate"
    problem, params = truth.case_problem("dolly-gated-100")
    gate, w_gate, _ = truth.configurations(problem, params, "gate")
    base, w_base, _ = truth.configurations(problem, params, 1.0)
    capped = np.concatenate([np.ravel(difference_steps(problem, params, gate=True).targets),
                             np.ravel(difference_steps(problem, params, gate=True).offset)])
    for i, name in enumerate(truth.coordinate_names(params)):
        same = all(np.array_equal(gate[k], base[k]) for k in range(1 + 4 * i, 5 + 4 * i))
        if name.startswith("log t") or name == "offset":
            assert not same and np.all(w_gate[i] < w_base[i])
            # the free coordinates are log targets and the offset itself: widths 2h and h
            np.testing.assert_allclose(w_gate[i], [2 * capped[i], capped[i]], rtol=1e-4)
        else:
            assert same and np.array_equal(w_gate[i], w_base[i])


def test_every_truth_case_builds_its_configurations():
    # A case whose steps do not fit its family's parameters would fail only when run (hours in,
    # or on a device): build every listed case's configurations here.
    truth = bench.gradient_truth
    for name in truth.CASES:
        problem, params = truth.case_problem(name)
        points, widths, _ = truth.configurations(problem, params, truth.step_scale(name))
        p = len(truth.coordinate_names(params))
        assert len(points) == 1 + 4 * p and widths.shape == (p, 2)
        assert np.all(widths > 0)


def test_truth_batches_of_different_sizes_join_with_keys_of_their_own(tmp_path, monkeypatch):
    # A case begun in small batches on a CPU goes on in a GPU's large ones: each batch runs on
    # its own index's key, and the stored replications add up across sizes.
    truth = bench.gradient_truth
    monkeypatch.setattr(truth, "OUT", tmp_path)
    ran = []

    def fake_batch(problem, points, unravel, batch, reps):
        ran.append((batch, reps))
        values = np.random.default_rng(batch).normal(280.0, 1.0, (len(points), reps))
        return values, 10 * reps, 0

    monkeypatch.setattr(truth, "run_batch", fake_batch)
    name = "qwen-sli-20"
    stored = 0
    for size in (2, 3, 2):  # each call runs one batch: it stops at max_reps
        stored += size
        truth.run_case(name, size, min_reps=stored, max_reps=stored)
    values, _ = truth.load(name)
    # no batch index (no key) used twice, every replication stored
    assert ran == [(0, 2), (1, 3), (2, 2)] and values.shape[1] == 7
