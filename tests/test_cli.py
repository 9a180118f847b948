"""The command line: JSON keys of each command, errors naming the field."""

import json

import pytest

from jaxqueue.cli import main


def run_json(capsys, *argv):
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_lp_reproduces_the_papers_values(capsys):
    bundled = run_json(capsys, "lp", "paper-qwen8b")
    separate = run_json(capsys, "lp", "paper-qwen8b", "--pricing", "separate")
    # MODEL.md Sec. 7 (independent solve): bundled R* = 297.716, separate R* = 298.598.
    assert bundled["revenue"] == pytest.approx(297.716, abs=5e-4)
    assert separate["revenue"] == pytest.approx(298.598, abs=5e-4)
    assert set(bundled) >= {"pricing", "revenue", "mixed_fraction", "solo_efficient", "classes"}
    assert [c["x"] for c in bundled["classes"]] == pytest.approx([0.01826, 0.19495], abs=5e-6)
    assert [c["q_decode"] for c in separate["classes"]] == pytest.approx([0, 0.8003], abs=5e-5)
    assert set(bundled["classes"][0]) == {"name", "x", "y_mixed", "y_solo", "q_prefill",
                                          "q_decode"}


def test_lp_with_sli_and_frontier(capsys):
    out = run_json(capsys, "lp", "paper-qwen8b", "--tpot", "0.023")
    assert out["sli"]["tpot"] == pytest.approx(0.023, rel=1e-6)
    assert out["revenue"] < 297.716
    fr = run_json(capsys, "frontier", "paper-qwen8b", "--sli", "tpot", "--values", "0.0221",
                  "0.025")
    first, last = fr["points"]
    assert first["revenue"] < last["revenue"] and first["shadow_price"] > last["shadow_price"]


def test_simulate_json_keys(capsys):
    out = run_json(capsys, "simulate", "paper-qwen8b", "--policy", "gg-sp", "--gpus", "5",
                   "--reps", "4", "--horizon", "20", "--warmup", "5", "--devices", "1")
    assert out["policy"] == "gate-and-route" and out["mixed_gpus"] == 2
    for k in ("bundled", "separate"):
        assert set(out["revenue_per_gpu"][k]) == {"mean", "ci95"}
    keys = {"x", "y_mixed", "y_solo", "q_prefill", "q_decode", "completion_rate",
            "prefill_abandonment_rate", "decode_abandonment_rate"}
    for c in out["classes"]:
        assert keys <= set(c)
        assert set(c["x"]) == {"mean", "ci95"}
    assert out["events"] > 0 and out["events_per_second"] > 0 and out["compile_seconds"] >= 0
    assert out["lp_revenue"] == pytest.approx(297.716, abs=5e-4)


def test_validate_erlang_a_json(capsys):
    out = run_json(capsys, "validate", "erlang-a", "--servers", "5", "--arrival-rate", "4",
                   "--service-rate", "1", "--patience-rate", "0.5", "--reps", "32",
                   "--horizon", "300", "--warmup", "30")
    for k in ("abandon_probability", "mean_queue", "mean_busy"):
        assert set(out["simulated"][k]) == {"mean", "ci95"}
        assert isinstance(out["exact"][k], float)
    assert out["events"] > 0 and out["events_per_second"] > 0


@pytest.mark.parametrize("argv, message", [
    (["simulate", "paper-qwen8b", "--gpus", "0"], "gpus"),
    (["simulate", "paper-qwen8b", "--horizon", "10", "--warmup", "20"], "warmup"),
    (["simulate", "paper-qwen8b", "--policy", "nope"], "policy"),
    (["lp", "nope"], "neither a built-in name"),
    (["lp", "paper-qwen8b", "--tpot", "0.02"], "smallest feasible value is 0.022"),
])
def test_bad_input_names_the_field(capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err
