"""Capacity planning: the searches, the targets' parsing and refusals, and one small answer."""

import json

import jax
import numpy as np
import pytest

from jaxqueue import capacity, scenarios
from jaxqueue.cli import main

PAPER = scenarios.load("paper-qwen8b")


# Settings of an answer that a target refuses before any simulation.
REFUSED_AT_ONCE = dict(policy="gate-and-route", max_abandon=None, reps=2, horizon=50.0,
                       warmup=10.0, seed=0)

def _fake(threshold):
    calls = []

    def check(x):
        calls.append(x)
        return capacity.Point(n=x, mixed=1, planned_mixed=1, ok=x >= threshold, failing=[],
                              metrics={}, abandon={}, revenue={}, events=0, seconds=0.0)

    return check, calls


@pytest.mark.parametrize("threshold", [1, 2, 3, 37, 64, 65, 1000])
def test_search_finds_the_smallest_passing_size_in_log_steps(threshold):
    check, calls = _fake(threshold)
    best, seen = capacity.search(check, low_end=1, high_end=100_000)
    assert best == threshold and set(seen) == set(calls) and len(calls) == len(set(calls))
    assert len(calls) <= 2 * np.log2(threshold) + 3
    with pytest.raises(ValueError, match="not met even at 500"):
        capacity.search(_fake(1000)[0], low_end=3, high_end=500)


def test_targets_are_parsed_and_impossible_ones_refused():
    assert capacity.parse_slo("ttft_p99=2") == ("ttft_p99", 2.0)
    assert capacity.parse_slo(" decode_wait_p50 = 0.5 ") == ("decode_wait_p50", 0.5)
    for bad in ("ttft_p95=2", "ttft_p99", "ttft_p99=-1", "ttft_p99=abc", "latency=2"):
        with pytest.raises(ValueError, match="slo = .* is invalid"):
            capacity.parse_slo(bad)
    # The TTFT floor: the p99 of the prefill time alone, a mixture of exponentials.
    floor = capacity.ttft_floor(PAPER, "ttft_p99")
    w = np.asarray(PAPER.lambda_) / np.sum(PAPER.lambda_)
    assert float(w @ -np.expm1(-np.asarray(PAPER.mu_p) * floor)) == pytest.approx(0.99)
    assert capacity.ttft_floor(PAPER, "wait_p99") is None
    kw = REFUSED_AT_ONCE
    with pytest.raises(ValueError, match="cannot be met with any capacity"):
        capacity.answer(PAPER, 10.0, slos={"ttft_p99": 0.9 * floor}, **kw)
    with pytest.raises(ValueError, match="no target"):
        capacity.answer(PAPER, 10.0, slos={}, **kw)
    with pytest.raises(ValueError, match="policy = 'fi-wsp' is invalid for capacity"):
        capacity.answer(PAPER, 10.0, slos={"wait_p90": 1.0}, **{**kw, "policy": "fi-wsp"})


def test_targets_for_one_class_are_parsed_and_read_from_that_class():
    names = PAPER.class_names
    assert capacity.parse_slo("ttft_p99@prefill-heavy=3", names) == ("ttft_p99@prefill-heavy",
                                                                     3.0)
    with pytest.raises(ValueError, match="class 'chat' is not one of the scenario's classes"):
        capacity.parse_slo("ttft_p99@chat=3", names)
    # A class's TTFT floor is its own prefill time's percentile: Exp(mu_p,i).
    for i, name in enumerate(names):
        floor = capacity.ttft_floor(PAPER, f"ttft_p90@{name}")
        assert floor == pytest.approx(np.log(10) / PAPER.mu_p[i], rel=1e-9)
    # With prefill slots to spare no request waits, so each class's TTFT is its own prefill
    # time: its median is ln 2 / mu_p,i (the two classes' differ tenfold, so reading the other
    # class's column, or all classes', fails).
    # With decode slots to spare too (320 solo slots for about 90 decodes), every decode runs
    # on a solo GPU at once: each class's end-to-end latency is its prefill plus a solo
    # decode, whose median is the e2e floor's, and every time per output token is 1 / gamma.
    slos = {f"{what}_p50@{name}": 100.0 for name in names for what in ("ttft", "e2e")}
    slos["tpot_p99"] = 1.0
    point = capacity.evaluate(jax.random.key(0), PAPER, 4.0, 40, 20, policy="gate-and-route",
                              slos=slos, max_abandon=None, reps=8, horizon=300.0, warmup=50.0,
                              devices=jax.devices()[:1])
    for i, name in enumerate(names):
        m = point.metrics[f"ttft_p50@{name}"]
        exact = np.log(2) / PAPER.mu_p[i]
        assert m["low"] <= exact <= m["high"], (name, m, exact)
        assert m["high"] < 1.3 * exact and m["low"] > exact / 1.3
        m = point.metrics[f"e2e_p50@{name}"]
        exact = capacity.latency_floor(PAPER, f"e2e_p50@{name}")
        assert m["low"] <= exact <= m["high"], (name, m, exact)
        assert m["high"] < 1.2 * exact and m["low"] > exact / 1.2
    solo = 1.0 / PAPER.gamma
    assert point.metrics["tpot_p99"] == pytest.approx({"value": solo, "low": solo, "high": solo})


def test_end_to_end_and_tpot_targets_are_parsed_and_their_floors_are_exact():
    assert capacity.parse_slo("e2e_p90=60") == ("e2e_p90", 60.0)
    assert capacity.parse_slo("tpot_p99@decode-heavy=0.03", PAPER.class_names) == (
        "tpot_p99@decode-heavy", 0.03)
    for bad in ("e2e_p95=2", "tpot=0.1", "e2e_p99=0"):
        with pytest.raises(ValueError, match="slo = .* is invalid"):
            capacity.parse_slo(bad)
    # The e2e floor: prefill plus a solo decode (the faster on the paper's hardware), checked
    # against a numerical convolution of the two exponential densities.
    from scipy import integrate

    mu_p, mu_s = np.asarray(PAPER.mu_p), np.asarray(PAPER.mu_s)
    assert np.all(mu_s > np.asarray(PAPER.mu_m))
    w = np.asarray(PAPER.lambda_) / np.sum(PAPER.lambda_)
    floor = capacity.latency_floor(PAPER, "e2e_p90")

    def cdf(i, t):
        return integrate.quad(lambda s: mu_p[i] * np.exp(-mu_p[i] * s)
                              * -np.expm1(-mu_s[i] * (t - s)), 0, t)[0]

    assert sum(w[i] * cdf(i, floor) for i in range(2)) == pytest.approx(0.9, abs=1e-6)
    assert capacity.latency_floor(PAPER, "tpot_p50") == pytest.approx(1 / PAPER.gamma)
    assert capacity.latency_floor(PAPER, "decode_wait_p50") is None
    kw = REFUSED_AT_ONCE
    with pytest.raises(ValueError, match="e2e_p90 .* cannot be met .* prefill plus a decode"):
        capacity.answer(PAPER, 10.0, slos={"e2e_p90": 0.99 * floor}, **kw)
    with pytest.raises(ValueError, match="no decode emits a token faster"):
        capacity.answer(PAPER, 10.0, slos={"tpot_p50": 0.9 / PAPER.gamma}, **kw)


CAPACITY = ["capacity", "paper-qwen8b", "--traffic", "10", "--slo", "ttft_p99=2", "--max-abandon",
            "0.05", "--reps", "8", "--horizon", "400", "--warmup", "100", "--devices", "1"]


@pytest.mark.slow  # two more policies' programs to compile
def test_capacity_compare_runs_the_other_policies_at_the_answer(capsys):
    main([*CAPACITY, "--compare", "--json"])
    out = json.loads(capsys.readouterr().out)
    # The other pooled policies ran on the answer's GPUs against the same targets.
    assert set(out["others"]) == {"fg-sp", "prioritize-and-route"}
    for p in out["others"].values():
        assert (p["n"], p["mixed"]) == (out["gpus"], out["mixed_gpus"])
        assert p["ok"] == (p["metrics"]["ttft_p99"]["high"] <= 2.0
                           and p["abandon"]["high"] <= 0.05)


def test_capacity_command_answers_and_confirms(capsys, tmp_path):
    main([*CAPACITY, "--plot", str(tmp_path / "cost.png"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert (tmp_path / "cost.png").stat().st_size > 10_000
    n, m = out["gpus"], out["mixed_gpus"]
    assert m >= out["planned_mixed_gpus"] and n >= m
    # The answer met every target in its search; one GPU fewer, if run, did not.
    at = {p["n"]: p for p in out["gpu_points"]}
    assert at[n]["ok"] and (n - 1 not in at or not at[n - 1]["ok"])
    assert at[n]["metrics"]["ttft_p99"]["high"] <= 2.0 and at[n]["abandon"]["high"] <= 0.05
    assert set(out["confirmation"]) >= {"answer"}
    assert isinstance(out["confirmed"], bool)


def test_capacity_without_an_abandonment_bound_says_how_many_abandon(capsys):
    main(["capacity", "paper-qwen8b", "--traffic", "10", "--slo", "ttft_p99=2", "--reps", "8",
          "--horizon", "400", "--warmup", "100", "--devices", "1"])
    text = capsys.readouterr().out
    assert "abandon at this answer" in text and "--max-abandon" in text
