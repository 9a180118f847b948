"""Calibration of tau = alpha + beta*C (jaxqueue.calibrate, ``jaxqueue calibrate``): exact
recovery of a noiseless law, a noisy one within the least-squares standard errors, the Vidur
profile layout (layers, B - 1 decode tokens, the token-linear caveat), range checks and errors."""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxqueue import calibrate
from jaxqueue.calibrate import CalibrationError
from jaxqueue.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT.parent / "shared" / "data" / "vidur" / "profiling" / "compute"
A100 = PROFILES / "a100" / "meta-llama" / "Meta-Llama-3-8B" / "mlp.csv"


def write_csv(path, columns: dict) -> Path:
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    path.write_text(",".join(names) + "\n" + "".join(
        ",".join(repr(v) for v in row) + "\n" for row in rows))
    return path


def iterations(tmp_path, noise=0.0, key=0, name="time_s", scale=1.0):
    """The paper's Qwen-8B law tau = 0.0174 + 6.2e-5 C at C = 16, 32, ..., 2048 and ten solo
    iterations of 0.022 s, with Gaussian noise of sd ``noise`` seconds."""
    c = np.arange(16, 2049, 16, dtype=np.float64)
    tokens = np.concatenate([c, np.zeros(10)])
    times = np.concatenate([0.0174 + 6.2e-5 * c, np.full(10, 0.022)])
    times = times + noise * np.asarray(jax.random.normal(jax.random.key(key), times.shape),
                                       np.float64)
    return write_csv(tmp_path / "it.csv", {"prefill_tokens": tokens.tolist(),
                                           name: (times * scale).tolist()}), c


def test_noiseless_law_is_recovered_exactly(tmp_path):
    path, c = iterations(tmp_path)
    cal = calibrate.fit(calibrate.read(path))
    assert cal.alpha == pytest.approx(0.0174, rel=1e-10)
    assert cal.beta == pytest.approx(6.2e-5, rel=1e-10)
    assert cal.r2 == pytest.approx(1.0, abs=1e-12) and cal.residual_max < 1e-12
    assert cal.tau_solo == pytest.approx(0.022) and cal.gamma == pytest.approx(1 / 0.022)
    assert cal.points == len(c) and cal.solo_points == 10 and cal.tokens_range == (16, 2048)
    assert cal.measurements.caveat is None
    # Milliseconds in a column named *_ms are converted.
    ms, _ = iterations(tmp_path, name="time_ms", scale=1000.0)
    assert calibrate.fit(calibrate.read(ms)).beta == pytest.approx(6.2e-5, rel=1e-10)


def test_noisy_law_within_its_standard_errors(tmp_path):
    sigma = 1e-3
    path, c = iterations(tmp_path, noise=sigma, key=7)
    cal = calibrate.fit(calibrate.read(path))
    # Ordinary least squares with noise sd sigma: SE(beta) = sigma / sqrt(Sxx),
    # SE(alpha) = sigma sqrt(1/n + mean(C)^2 / Sxx).
    sxx = float(((c - c.mean()) ** 2).sum())
    se_beta = sigma / math.sqrt(sxx)
    se_alpha = sigma * math.sqrt(1 / len(c) + c.mean() ** 2 / sxx)
    assert abs(cal.beta - 6.2e-5) <= 3 * se_beta
    assert abs(cal.alpha - 0.0174) <= 3 * se_alpha
    # The reported standard errors estimate these (sd of a sample sd with 126 dof: ~6%).
    assert cal.beta_se == pytest.approx(se_beta, rel=0.2)
    assert cal.alpha_se == pytest.approx(se_alpha, rel=0.2)
    assert cal.residual_std == pytest.approx(sigma, rel=0.2)
    assert abs(cal.tau_solo - 0.022) <= 3 * sigma / math.sqrt(10)
    assert cal.extrapolates(256) is None
    assert "outside the measured range [16, 2048]" in cal.extrapolates(4096)


def test_profile_layout_by_hand(tmp_path):
    # Two operators of 0.1 + 0.001 t ms and 0.05 ms per layer at t tokens; 2 layers, B = 4:
    # iteration 2 (0.15 + 0.001 t) ms; a mixed one holds t = C + 3 tokens, so
    # alpha = 2 * 0.153 ms = 3.06e-4 s, beta = 2e-6 s/token; solo (t = 4): 2 * 0.154 ms.
    t = [1.0, 2.0, 4.0, 8.0, 64.0, 512.0] * 2
    tp = [1] * 6 + [2] * 6
    path = write_csv(tmp_path / "mlp.csv", {
        "time_stats.a.mean": [0.1 + 0.001 * x for x in t], "time_stats.a.std": [0.0] * 12,
        "time_stats.b.mean": [0.05] * 12, "num_tokens": t, "num_tensor_parallel_workers": tp})
    m = calibrate.read(path, batch=4, layers=2)
    assert m.kind == "vidur-profile" and "token-linear" in m.caveat
    assert m.tokens.tolist() == [1.0, 5.0, 61.0, 509.0]  # t >= B, C = t - 3
    cal = calibrate.fit(m)
    assert cal.alpha == pytest.approx(3.06e-4, rel=1e-9)
    assert cal.beta == pytest.approx(2e-6, rel=1e-9)
    assert cal.tau_solo == pytest.approx(3.08e-4, rel=1e-9)
    with pytest.raises(CalibrationError, match=r"tensor_parallel = 3 is invalid.*\[1, 2\]"):
        calibrate.read(path, tensor_parallel=3)


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("prefill_tokens,foo\n1,2\n", "no iteration-time column.*--time-column"),
    ("prefill_tokens,time_s\n16,0.02\n16,-1\n", r"time_s, data row 2: -1 is invalid: must be > 0"),
    ("prefill_tokens,time_s\n16,0.02\n16,0.03\n0,0.02\n", "at least two distinct"),
])
def test_bad_measurements_name_the_field(tmp_path, text, match):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=match):
        calibrate.fit(calibrate.read(path))


def test_cli_json_text_and_plot(tmp_path, capsys):
    path, _ = iterations(tmp_path, noise=1e-3)
    main(["calibrate", str(path), "--scenario", "paper-qwen8b", "--json"])
    o = json.loads(capsys.readouterr().out)
    assert o["checks"][0]["warning"] is None and o["checks"][0]["tau_scenario"] == pytest.approx(
        0.0174 + 6.2e-5 * 256)
    assert o["r2"] > 0.99 and len(o["residuals_by_tokens"]) == 5 and o["caveat"] is None
    png = tmp_path / "c.png"
    main(["calibrate", str(path), "--chunk", "4096", "--plot", str(png)])
    text = capsys.readouterr().out
    assert "WARNING: chunk C = 4096 tokens lies outside" in text and png.stat().st_size > 0
    assert max(len(line) for line in text.splitlines()) <= 100


def test_vidur_profile_says_token_linear_only(capsys):
    if not A100.is_file():
        pytest.skip(f"the profile {A100} is absent (the shared data is not checked out)")
    main(["calibrate", str(A100), "--layers", "32", "--max-tokens", "4096"])
    out = capsys.readouterr().out
    assert "CAVEAT: these profiles time the token-linear operators only" in out
    cal = calibrate.fit(calibrate.read(A100, layers=32), max_tokens=4096)
    # Llama-3-8B on one A100: the MLP-side slope is close to the paper's Qwen-8B beta (6.2e-5).
    assert cal.r2 > 0.99 and 5e-5 < cal.beta < 9e-5 and cal.tokens_range == (1, 4081)
