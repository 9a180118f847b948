"""Every experiment of the paper in a tiny mode: it runs, writes the promised files and keys, and
the report judges every claim; a second run resumes (skips what is complete)."""

import json
import os

import pytest
from helpers import host_devices

from experiments import reproduce
from jaxqueue import report
from jaxqueue.cli import main as cli_main

#: Tiny sizes: seconds per experiment (compilation dominates).
TINY = {
    "fig2": {"gpus": [5, 6, 8], "reps": 2, "horizon": 40.0, "warmup": 10.0},
    "fig4-6": {"gpus": [5, 10, 20], "reps": 2, "horizon": 40.0, "warmup": 10.0},
    "fig7": {"instances": 2, "gpus": [8], "reps": 2, "horizon": 30.0, "warmup": 10.0},
    "fig8": {"gpus": 10, "reps": 2, "horizon": 40.0, "warmup": 10.0,
             "prefill_fairness": [0.1], "decode_fairness": [4.0], "tpot": [0.024]},
    "fig9-10": {"gpus": 10, "reps": 2, "horizon": 40.0, "warmup": 10.0,
                "points": [["beta", 1e-4]]},
    "table1": {"gpus": 5, "reps": 2, "horizon": 40.0, "warmup": 10.0},
    # GI-WSP runs at n = 5 only (per_gpu_up_to): the skip is exercised too.
    "gap": {"gpus": [5, 8], "reps": 2, "horizon": 40.0, "warmup": 10.0, "others": ["gi-wsp"],
            "per_gpu_up_to": 5, "points": {"B": [8], "beta": [1e-4]}},
}
META = {"experiment", "figure", "title", "quick", "seed", "settings", "scenario", "policies",
        "jaxqueue_version", "jax_version", "outputs", "key_numbers", "wall_seconds", "complete"}
KEYS = {
    "fig2": {"rows", "class_names", "gpus", "points", "faces", "backlog_fits"},
    "fig4-6": {"series", "lp", "class_names"},
    "fig7": {"instances", "paper_instance", "grids", "ranges", "fixed", "engine"},
    "fig8": {"curves", "points", "lp_revenue", "inv_gamma", "unconstrained_point"},
    "fig9-10": {"lines", "paper_range_sensitivity", "heatmap_B_beta", "heatmap_prices",
                "price_lines", "sim_points"},
    "table1": {"classes", "lp", "simulated", "gpus"},
    "gap": {"points", "gpus", "policies_run", "engines", "skipped", "lp_revenue", "margin"},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("reproduce"))
    first = reproduce.main(out=out, quick=True, seed=1, sizes=TINY)
    return out, first


@pytest.mark.parametrize("name", list(reproduce.EXPERIMENTS))
def test_experiment_writes_its_outputs(results, name):
    out, _ = results
    mod = reproduce.module(name)
    with open(os.path.join(out, f"{mod.NAME}.json")) as f:
        data = json.load(f)
    assert META | KEYS[name] <= set(data)
    assert data["complete"] and data["seed"] == 1 and data["quick"]
    for o in mod.OUTPUTS:
        assert os.path.getsize(os.path.join(out, o)) > 1000, o
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # atomic writes leave nothing
    for table in data["key_numbers"]:
        assert all(len(row) == len(table["columns"]) for row in table["rows"])


def test_fig7_details(results):
    out, _ = results
    with open(os.path.join(out, "fig7_policies.json")) as f:
        data = json.load(f)
    assert data["settings"]["grid_seed"] == 2026 and len(data["instances"]) == 2
    lo, hi = data["ranges"]["beta"]
    assert all(lo <= i["beta"] <= hi for i in data["instances"])
    (grid,) = data["grids"]
    assert set(grid["policies"]) == {"fi-wsp", "gi-wsp", "gf-wsp", "fg-sp", "gate-and-route"}
    assert set(grid["table"]["gi-wsp"]) >= {"mean", "sd", "wins", "win_margin", "minus_gg_sp"}
    assert sum(v["wins"] for v in grid["table"].values()) == 2


def test_gap_map_details(results):
    out, _ = results
    with open(os.path.join(out, "gap_map.json")) as f:
        data = json.load(f)
    assert data["policies_run"] == {"5": ["gate-and-route", "gi-wsp", "gi-wsp-after"],
                                    "8": ["gate-and-route", "gi-wsp-after"]}
    assert data["skipped"] == {"5": [], "8": ["gi-wsp"]} and "were not run" in data["notes"]
    assert [p["parameter"] for p in data["points"]] == ["B", "beta"]
    assert [p["value"] for p in data["points"]] == [8, pytest.approx(1e-4)]
    for p in data["points"]:
        assert p["best_other"] == {"5": "gi-wsp", "8": None}
        gap, rev = p["runs"]["5"]["gi-wsp"]["gap"], p["runs"]["5"]["gi-wsp"]["revenue"]
        assert gap["mean"] == pytest.approx(1 - rev["mean"] / p["lp_revenue"])
        assert gap["ci95"] == pytest.approx(rev["ci95"] / p["lp_revenue"])
        assert p["rate"]["fit"]["limit"] is None  # n < report.TREND_MIN_N: no trend
        assert p["rate"]["verdict"] == report.INCONCLUSIVE


def test_gap_map_grid_is_fig9s():
    from experiments import fig9_10_sensitivity as fig9
    from experiments import gap_map

    # Values are snapped onto Fig. 9's grid: 1.585e-5 is its geomspace point 10^-4.8.
    got = gap_map.grid_points({"B": [8], "beta": [1.585e-5], "gamma": [35]})
    assert got == [("B", 8), ("beta", fig9._grid("beta")[2]), ("gamma", 35.0)]
    assert isinstance(got[0][1], int)
    with pytest.raises(ValueError, match="not on Fig. 9's grid"):
        gap_map.grid_points({"beta": [1.2e-5]})  # 1e-5 and 1.26e-5 are the grid's nearest
    with pytest.raises(ValueError, match="parameter 'C' is unknown"):
        gap_map.grid_points({"C": [256]})


def test_report_and_resume(results):
    out, first = results
    assert first["skipped"] == [] and set(first["timings"]) == set(reproduce.EXPERIMENTS)
    with open(first["report"]) as f:
        text = f.read()
    ids = {c.id for c in first["claims"]}
    assert {"fig2-separate-backlog", "fig2-bundled-backlog", "fig4-revenue", "fig6-sli-router",
            "fig7-best-n8", "fig8-tpot", "fig9-beta", "fig10-ratio", "table1-fit",
            "gap-within-n5", "gap-within-n8", "gap-limit"} <= ids
    for c in first["claims"]:
        assert c.id in text and c.verdict in report.VERDICTS
    assert "![fig7_policies.png](fig7_policies.png)" in text
    assert "![gap_map.png](gap_map.png)" in text and "**n = 8.** Gate-and-Route is" in text
    # Fig. 9's TPOT along beta explained from the LP (LP only: the same as on a full run).
    assert "TPOT peaks at 157.7 ms at beta = 6.31e-4" in text and "drops to 79.7 ms" in text
    assert verdict_of(first, "gap-limit") == report.INCONCLUSIVE  # sizes below 20: no trend
    # LP-only claims do not depend on the tiny simulation: they are decided as on a full run.
    verdict = {c.id: c.verdict for c in first["claims"]}
    assert verdict["fig8-prefill"] == report.HOLDS and verdict["fig8-decode"] == report.FAILS
    assert verdict["fig8-tpot"] == report.HOLDS and verdict["fig10-ratio"] == report.HOLDS
    assert verdict["table1-fit"] == report.NOT_COMPARABLE
    again = reproduce.main(out=out, quick=True, seed=1, sizes=TINY, only=["fig2", "table1"])
    assert again["skipped"] == ["fig2", "table1"] and again["timings"] == {}
    # Other sizes are another run: not skipped.
    assert not reproduce.complete(reproduce.module("fig2"), out, True, 1, {"gpus": [6]})


def verdict_of(out, claim_id):
    return next(c.verdict for c in out["claims"] if c.id == claim_id)


def test_reproduce_command_takes_sizes_and_prints_json(results, capsys):
    # The tiny table1 run of the fixture, named by --set on the command line: it is found
    # complete (same sizes), skipped, and the verdicts are printed as JSON.
    out, _ = results
    sets = [a for k, v in TINY["table1"].items() for a in ("--set", f"table1.{k}={v}")]
    cli_main(["reproduce", "--quick", "--seed", "1", "--only", "table1", "--out", out, *sets,
              "--json"])
    got = json.loads(capsys.readouterr().out)
    assert got["skipped"] == ["table1"] and got["sizes"] == {"table1": TINY["table1"]}
    verdicts = {c["id"]: c["verdict"] for c in got["claims"]}
    assert verdicts["table1-fit"] == report.NOT_COMPARABLE and "fig8-tpot" in verdicts
    for bad, says in (("table1.nope=1", "table1's sizes are"), ("fig3.gpus=5", "NAME one of"),
                      ("table1.gpus", "NAME.KEY=VALUE")):
        with pytest.raises(SystemExit):
            cli_main(["reproduce", "--quick", "--out", out, "--set", bad])
        assert says in capsys.readouterr().err


def test_reproduce_bad_input(capsys, monkeypatch):
    with pytest.raises(SystemExit) as err:
        cli_main(["reproduce", "--only", "fig3"])
    assert err.value.code == 2 and "fig3" in capsys.readouterr().err
    monkeypatch.setenv("JAXQUEUE_EXPERIMENTS", "/nonexistent/experiments")
    with pytest.raises(SystemExit) as err:
        cli_main(["reproduce", "--quick"])
    assert err.value.code == 2 and "experiments folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="experiment 'nope' is unknown"):
        reproduce.module("nope")
    with pytest.raises(TypeError, match="unknown size"):
        reproduce.module("fig2").main(out="/tmp", quick=True, nope=1)


@pytest.mark.slow
def test_tune_gap_writes_its_comparisons(tmp_path):
    # Tuning against the baselines at one tiny n (minutes: a dozen compiled programs).
    from experiments import tune_gap

    out = str(tmp_path)
    result = tune_gap.main(out=out, quick=True, gpus=[4], scenarios=["paper-qwen8b"], steps=2,
                           reps=2, eval_reps=3, horizon=40.0, warmup=10.0)
    assert result["complete"] and len(result["points"]) == 1
    (row,) = result["points"]
    assert row["gpus"] == 4 and row["best_baseline"] in {
        "fi-wsp", "gi-wsp", "gf-wsp", "fg-sp", "gate-and-route", "gate-and-route, best M on a grid"}
    assert os.path.getsize(os.path.join(out, "tune_gap.png")) > 1000
    again = tune_gap.main(out=out, quick=True, gpus=[4], scenarios=["paper-qwen8b"], steps=2,
                          reps=2, eval_reps=3, horizon=40.0, warmup=10.0)
    assert again["comparisons"] == result["comparisons"]  # resumed from its parts


SIDE_BY_SIDE = """
import jax, numpy as np
from experiments import common
from jaxqueue import scenarios
assert len(jax.devices()) == 2
model = scenarios.load("paper-qwen8b")

def task(n):
    def run():
        (r,), _ = common.run_systems(
            "t", lambda c: [common.engine_build("gate-and-route", model, n, capacity=c)[0]],
            seed=3, reps=3, horizon=30.0, warmup=5.0)
        return len(common.run_devices()), r.tallies, r.level_integrals, r.events
    return run

side = common.side_by_side([task(5), task(6), task(7)])
alone = [task(n)() for n in (5, 6, 7)]
assert [s[0] for s in side] == [1, 1, 1] and [a[0] for a in alone] == [2, 2, 2]
for s, a in zip(side, alone, strict=True):
    np.testing.assert_array_equal(s[1], a[1])
    np.testing.assert_array_equal(s[2], a[2])
    assert s[3] == a[3], (s[3], a[3])  # 3 replications: the 4th padding two devices not counted
print("identical")
"""


def test_runs_side_by_side_use_one_device_each_and_change_no_number():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, XLA_FLAGS=host_devices(2),
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE], env=env, capture_output=True,
                         text=True, timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "identical" in out.stdout
