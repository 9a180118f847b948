"""``jaxqueue compare`` and the diagnosis of a policy far below its LP bound.

The comparison: every policy on one key (common random numbers), ranked, paired differences to
the best over the replications both ran, each policy against its own pricing's bound. The
diagnosis: a run more than 5% below its bound says where its revenue goes, from its own flows;
a healthy run says nothing. Checked on the paper's instance with ``batch = 8``, where
Gate-and-Route over-admits the decode-heavy class and loses half of each class in the decode
buffer, which the plan keeps empty (issue 20).
"""

import json

import jax
import numpy as np
import pytest

import jaxqueue as jq
from jaxqueue import budget, compare, diagnose, fluid, policies, scenarios, stats
from jaxqueue.cli import main
from jaxqueue.tables import WIDTH, compare_lines

PAPER = scenarios.load("paper-qwen8b")
BATCH8 = PAPER.replace(B=8)

# The paper's instance with batch = 8, as a user writes it.
BATCH8_TOML = """
name = "paper-qwen8b-batch8"
[gpu]
alpha = 0.0174
beta = 6.2e-05
gamma = 45.45454545454546
chunk = 256
batch = 8
[pricing]
prefill = 0.1
decode = 0.2
[[classes]]
name = "decode-heavy"
arrival_rate = 0.5
patience_rate = 0.1
prompt_tokens = 300
output_tokens = 1000
[[classes]]
name = "prefill-heavy"
arrival_rate = 0.5
patience_rate = 0.1
prompt_tokens = 3000
output_tokens = 400
"""


def _classes(model, **per_class):
    """A run's per-class summary with the given means (``{mean, ci95}`` entries)."""
    keys = ("arrival_rate", "x", "q_decode", "completion_rate", "prefill_completion_rate",
            "prefill_abandonment_rate", "decode_abandonment_rate")
    return [{"name": name, **{k: {"mean": float(per_class[k][i]), "ci95": 0.01} for k in keys}}
            for i, name in enumerate(model.class_names)]


def _lp_flows(model, plan):
    """The LP's own flows as a run's summary: a run that follows the plan exactly."""
    theta = np.asarray(model.theta)
    return dict(arrival_rate=np.asarray(model.lambda_), x=plan.x, q_decode=plan.q_d,
                completion_rate=plan.completion_rate(model),
                prefill_completion_rate=np.asarray(model.mu_p) * plan.x,
                prefill_abandonment_rate=theta * plan.q_p,
                decode_abandonment_rate=theta * plan.q_d)


def test_diagnosis_says_nothing_within_5_percent_and_splits_the_loss_exactly():
    plan = fluid.solve(BATCH8, "bundled")
    flows = _lp_flows(BATCH8, plan)
    healthy = _classes(BATCH8, **flows)
    assert diagnose.diagnose(BATCH8, plan, healthy, 0.96 * plan.revenue) is None
    # The Gate-and-Route at n = 100: the decode-heavy class admitted at 3x its plan,
    # half of each class abandoning in the decode buffer the plan keeps empty.
    lam = np.asarray(BATCH8.lambda_)
    bad = dict(flows, x=np.array([0.0158, 0.1909]), q_decode=np.array([1.84, 2.16]),
               prefill_completion_rate=np.array([0.406, 0.489]),
               prefill_abandonment_rate=np.array([0.094, 0.011]),
               decode_abandonment_rate=np.array([0.184, 0.216]))
    bad["completion_rate"] = lam - bad["prefill_abandonment_rate"] - bad["decode_abandonment_rate"]
    d = diagnose.diagnose(BATCH8, plan, _classes(BATCH8, **bad), 154.7, gpus=100)
    assert d["relative_gap"] == pytest.approx(1 - 154.7 / plan.revenue)
    assert [f["where"] for f in d["findings"]] == ["decode buffer", "prefill admission",
                                                   "prefill queue"]
    assert d["findings"][1]["class"] == "decode-heavy"
    # Flow balance: what each class earns against the LP is minus what it loses in each buffer.
    w = np.asarray(BATCH8.w)
    by_class = sum(c["revenue_against_lp"] for c in d["classes"])
    assert by_class == pytest.approx(-(d["lost"]["decode_buffer"] + d["lost"]["prefill_queue"]
                                       + d["lost"]["arrivals"]), rel=1e-9)
    assert d["lost"]["in_system"] == pytest.approx(0.0, abs=1e-9)  # these flows balance
    assert d["lost"]["decode_buffer"] == pytest.approx(float(w @ bad["decode_abandonment_rate"]))
    text = "\n".join(diagnose.diagnosis_lines(d))
    assert "decode buffer" in text and "the LP: none" in text and "3.0x the LP's 0.0052" in text
    assert "gi-wsp" in text and "jaxqueue tune" in text
    assert max(map(len, text.splitlines())) <= WIDTH
    with pytest.raises(ValueError, match="threshold = 1.5 is invalid"):
        diagnose.diagnose(BATCH8, plan, healthy, 100.0, threshold=1.5)


def _run_summary(model, n, reps=4, horizon=300.0, warmup=100.0):
    system, plan = policies.build("gate-and-route", model, n)
    run = jq.simulate(jax.random.key(0), system, reps=reps, horizon=horizon, warmup=warmup)
    summary = stats.summarize_pooled(run, model, n)
    return plan, summary, run, system


def test_batch8_gate_and_route_is_diagnosed_and_the_paper_instance_is_not():
    # batch = 8 at n = 30: about 35% below R* = 220.6 (measured: 143.2 +- 3.4).
    plan, summary, _, _ = _run_summary(BATCH8, 30)
    revenue = summary["revenue_per_gpu"]["bundled"]["mean"]
    d = diagnose.diagnose(BATCH8, plan, summary["classes"], revenue, gpus=30)
    assert d is not None and d["relative_gap"] > 0.2
    first, second = d["findings"][:2]
    assert first["where"] == "decode buffer" and first["lost"] > 0.5 * d["gap"]
    assert second["where"] == "prefill admission" and second["class"] == "decode-heavy"
    decode_heavy = d["classes"][0]
    assert decode_heavy["x"] > 2 * decode_heavy["x_lp"] and decode_heavy["q_decode_lp"] == 0
    # The paper's instance at n = 50 is within 5% of its bound (measured 3.3% below): nothing.
    plan, summary, run, system = _run_summary(PAPER, 50)
    revenue = summary["revenue_per_gpu"]["bundled"]["mean"]
    assert revenue > 0.95 * plan.revenue
    assert diagnose.diagnose(PAPER, plan, summary["classes"], revenue) is None
    # The time estimate's 3 steps per job bound the events (up to the arrivals' noise).
    est = budget.estimate(system, reps=4, horizon=300.0)
    assert 0.8 * est.events < run.events <= 1.05 * est.events


def test_simulate_on_a_toml_scenario_prints_the_diagnosis(tmp_path, capsys):
    path = tmp_path / "batch8.toml"
    path.write_text(BATCH8_TOML)
    argv = ["simulate", str(path), "--gpus", "30", "--reps", "4", "--horizon", "300",
            "--warmup", "100"]
    main([*argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["diagnosis"]["findings"][0]["where"] == "decode buffer"
    main(argv)
    text = capsys.readouterr().out
    assert "(diagnosis below)" in text and "decode buffer:" in text
    assert "decode-heavy admitted at x = " in text
    assert f"jaxqueue tune {path} --gpus 30" in " ".join(text.split())  # the path, unbroken
    assert max(len(line) for line in text.splitlines() if str(path) not in line) <= WIDTH


def test_per_gpu_sizing_rule_and_paired_differences():
    assert compare.per_gpu_reps(64) == 16 and compare.per_gpu_reps(64, 3) == 18
    assert compare.per_gpu_reps(100) == 25 and compare.per_gpu_reps(100, 2) == 26
    assert compare.per_gpu_reps(10) == 8 and compare.per_gpu_reps(4) == 4
    assert compare.per_gpu_reps(1) == 1
    with pytest.raises(ValueError, match="reps = 0 is invalid"):
        compare.per_gpu_reps(0)
    a, b = np.array([3.0, 5.0, 4.0, 9.0]), np.array([1.0, 2.0, 2.0])
    d = compare.paired(a, b)
    assert d["pairs"] == 3 and d["mean"] == pytest.approx(7 / 3)
    assert compare.paired(b, b) == {"mean": 0.0, "ci95": 0.0, "pairs": 3}


def test_entries_cover_every_policy_with_its_own_bound():
    items = compare.entries(PAPER, 5)
    names = [e.name for e in items]
    assert names[:7] == list(compare.PAPER_ORDER) and "gi-wsp-after" in names
    by = {e.name: e for e in items}
    assert by["prioritize-and-route"].pricing == "separate"
    assert by["prioritize-and-route"].plan.revenue == pytest.approx(298.598, abs=5e-4)
    assert by["gi-wsp"].engine == "per-gpu" and by["gate-and-route"].engine == "pooled"
    assert by["gi-wsp-after"].origin == "jaxqueue" and by["fi-wsp"].plans == "nothing"
    with pytest.raises(ValueError, match="more than once"):
        compare.entries(PAPER, 5, names=["gg-sp", "gate-and-route"])
    with pytest.raises(ValueError, match="policy = 'nope' is unknown"):
        compare.entries(PAPER, 5, names=["nope"])


def test_compare_command_ranks_on_common_random_numbers(tmp_path, capsys):
    from jaxqueue.policies import tunable

    saved = tmp_path / "after.json"  # a tuned file: the coupled family at offset 1
    plan = fluid.solve(PAPER, "bundled")
    tunable.save_params(saved, "coupled", tunable.starting_points("coupled", PAPER, 5, plan)[
        "LP point, rank after admission"], scenario="paper-qwen8b", gpus=5)
    argv = ["compare", "paper-qwen8b", "--gpus", "5", "--reps", "4", "--horizon", "40",
            "--warmup", "10", "--devices", "1",
            "--policies", "prioritize-and-route,gi-wsp-after",
            "--params", str(saved)]
    main([*argv, "--json", "--plot", str(tmp_path / "c.png")])
    out = json.loads(capsys.readouterr().out)
    rows = out["policies"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    means = [r["revenue"]["bundled"]["mean"] for r in rows]
    assert means == sorted(means, reverse=True) and out["best"] == rows[0]["name"]
    assert rows[0]["difference_to_best"] is None
    by = {r["name"]: r for r in rows}
    # The tuned file is the named policy: the same system on the same key, the same revenue.
    tuned = by["coupled (after.json)"]
    assert tuned["revenue"] == by["gi-wsp-after"]["revenue"] and tuned["origin"] == "tuned"
    assert by["gi-wsp-after"]["reps"] == out["per_gpu_reps"] == 4
    for r in rows[1:]:
        d = r["difference_to_best"]
        assert d["pairs"] == 4
        assert d["mean"] == pytest.approx(r["revenue"]["bundled"]["mean"] - means[0])
    pr = by["prioritize-and-route"]
    assert pr["pricing"] == "separate" and pr["lp_bound"] == pytest.approx(298.598, abs=5e-4)
    assert pr["relative_gap"] == pytest.approx(
        1 - pr["revenue"]["separate"]["mean"] / pr["lp_bound"])
    assert set(rows[0]["sli"]) == set(stats.SLI_KEYS)
    assert (tmp_path / "c.png").stat().st_size > 1000
    lines = compare_lines(out)
    assert max(map(len, lines)) <= WIDTH
    text = "\n".join(lines)
    assert "its separate revenue" in text and "- best, paired" in text
    main([*argv, "--estimate"])
    printed = capsys.readouterr()
    assert printed.out == "" and "estimated run time" in printed.err


def test_gi_wsp_after_is_listed_apart_from_the_papers(capsys):
    main(["policies"])
    out = capsys.readouterr().out
    paper, own = out.split("jaxqueue's own")
    assert "gi-wsp-after" in own and "gi-wsp-after" not in paper and "gi-wsp " in paper
    main(["policies", "--json"])
    js = json.loads(capsys.readouterr().out)
    assert js["gi-wsp-after"]["origin"] == "jaxqueue" and js["gi-wsp"]["origin"] == "paper"


@pytest.mark.slow
def test_compare_latency_measures_the_pooled_policies_only(capsys):
    argv = ["compare", "paper-qwen8b", "--gpus", "5", "--reps", "4", "--horizon", "40",
            "--warmup", "10", "--devices", "1", "--policies", "gate-and-route,fi-wsp",
            "--latency"]
    main([*argv, "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["policies"]}
    assert rows["fi-wsp"]["latency"] is None
    lat = rows["gate-and-route"]["latency"]["all"]
    assert lat["started"] > 0
    assert lat["ttft"]["p50"]["value"] <= lat["ttft"]["p99"]["value"]
    main(argv)
    text = capsys.readouterr().out
    assert "TTFT, all classes (s)" in text and "not measured" in text
    block = text[text.index("TTFT, all classes (s)"):].split("\n\n")[0]
    assert max(len(line) for line in block.splitlines()) <= WIDTH
