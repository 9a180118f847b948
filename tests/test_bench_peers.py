"""Tests of scripts/bench_peers.py: jaxqueue, Ciw and SimPy estimate the same Erlang-A system.

Skipped when the benchmark-only dependencies (``pip install ciw simpy``) are absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ciw")
pytest.importorskip("simpy")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # jaxqueue from this checkout when it is not installed
    sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "scripts" / "bench_peers.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

PARAMS = bench.Params(servers=50, arrival_rate=48.0, service_rate=1.0, patience_rate=0.5,
                      horizon=300.0, warmup=30.0)
# Standard deviation of ONE replication's estimate (abandonments / arrivals in [30, 300]) at
# PARAMS: measured 0.0043 over 40 SimPy and 0.0046 over 20 Ciw replications; rounded up. A fixed
# value, not the sample s.d. of a few replications: with 4 replications a t-statistic exceeds 5
# about 1.5% of the time, so a tolerance from the sample s.d. would be flaky.
SD_ONE = 0.005


def _check(row: dict, reps: int, exact: float) -> None:
    assert row["replications"] == reps
    # Each arrival in [0, T] is one event and (nearly all) leave by T: about 2 lam T per rep.
    per_rep = row["events"] / reps
    expected = 2 * PARAMS.arrival_rate * PARAMS.horizon
    assert 0.9 * expected < per_rep < 1.05 * expected, per_rep
    assert row["wall_seconds"] > 0 and row["events_per_second"] > 0
    est = row["abandon_probability"]["mean"]
    assert abs(est - exact) < 5 * SD_ONE / math.sqrt(reps), (row["simulator"], est, exact)


def test_exact_value_matches_direct_sum():
    p = bench.Params(3, 2.0, 1.0, 0.5, 1.0, 0.0)
    weights, w = [1.0], 1.0
    for k in range(1, 200):
        w *= p.arrival_rate / (p.service_rate * min(k, 3) + p.patience_rate * max(k - 3, 0))
        weights.append(w)
    queue = sum(max(k - 3, 0) * x for k, x in enumerate(weights)) / sum(weights)
    assert bench.exact_abandon_probability(p) == pytest.approx(0.5 * queue / 2.0, abs=1e-12)
    assert bench.exact_abandon_probability(PARAMS) == pytest.approx(0.030912249, abs=1e-8)


@pytest.mark.parametrize("runner", [bench.run_ciw, bench.run_simpy])
def test_peer_estimates_exact_abandonment(runner):
    _check(runner(PARAMS, 4, 0), 4, bench.exact_abandon_probability(PARAMS))


def test_jaxqueue_estimates_exact_abandonment():
    row = bench.run_jaxqueue(PARAMS, 256, 0)
    _check(row, 256, bench.exact_abandon_probability(PARAMS))
    assert row["devices"] == 1


@pytest.mark.parametrize("devices", ["0", "two", "-1"])
def test_bad_devices_are_refused(devices, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--devices", devices])
    assert "--devices" in capsys.readouterr().err


@pytest.mark.slow  # about 6-9 s: a whole --quick run in a subprocess
def test_quick_cli_run_under_a_minute():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_peers.py"), "--quick",
                          "--json"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert elapsed < 60, elapsed
    report = json.loads(out.stdout)
    assert [r["simulator"] for r in report["results"]] == ["jaxqueue", "Ciw", "SimPy"]
    assert report["results"][0]["speedup_of_jaxqueue"] == 1.0
    assert all(r["events"] > 0 for r in report["results"])
