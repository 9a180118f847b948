"""Verdict logic on synthetic numbers, both ways, and the power-law fit."""

import numpy as np
import pytest

from jaxqueue import report
from jaxqueue.report import FAILS, HOLDS, NOT_COMPARABLE


def test_fit_power_law_recovers_a_known_rate():
    n = np.array([5, 20, 50, 200, 500, 2000], float)
    gap = 40.0 * n ** -0.5
    fit = report.fit_power_law(n, gap, 0.01 * gap)
    assert fit["slope"] == pytest.approx(-0.5, abs=1e-9)
    assert fit["low"] <= -0.5 <= fit["high"] and fit["points"] == 6
    # Gaps within two standard errors of zero cannot be logged: they are left out.
    few = report.fit_power_law(n[:3], [1.0, 0.5, 0.01], [0.1, 0.1, 0.1])
    assert few["slope"] is None and "fewer than 3" in few["note"]


def test_convergence_and_bands_both_ways():
    n = [5, 20, 50, 200]
    shrinking = report.fit_power_law(n, [30, 15, 9, 5], [0.5] * 4)
    assert report.judge_convergence(n, [30, 15, 9, 5], shrinking, 297.7).verdict == HOLDS
    flat = report.fit_power_law(n, [8, 7.5, 8.2, 7.9], [0.5] * 4)
    assert report.judge_convergence(n, [8, 7.5, 8.2, 7.9], flat, 297.7).verdict == FAILS
    assert report.judge_bands(n, [2.0, 1.0, 0.6, 0.3]).verdict == HOLDS
    assert report.judge_bands(n, [2.0, 1.9, 1.8, 1.5]).verdict == FAILS


def test_queues_decode_and_occupancy_both_ways():
    n = [5, 500]
    assert report.judge_queues(n, [2.0, 0.05]).verdict == HOLDS
    assert report.judge_queues(n, [2.0, 0.5]).verdict == FAILS
    assert report.judge_decode_buffer(n, [1.0, 0.01], 0.317).verdict == HOLDS
    assert report.judge_decode_buffer(n, [1.0, 0.3], 0.317).verdict == FAILS
    x_ok, y_off = report.judge_occupancy("Fig. 5", "greedy", n, [0.1, 0.02], [0.6, 0.45],
                                         expect_y=False)
    assert (x_ok.verdict, y_off.verdict) == (HOLDS, HOLDS)
    x_bad, y_on = report.judge_occupancy("Fig. 5", "greedy", n, [0.1, 0.3], [0.6, 0.02],
                                         expect_y=False)
    assert (x_bad.verdict, y_on.verdict) == (FAILS, FAILS)
    (sli,) = report.judge_occupancy("Fig. 6", "SLI", n, [0.1, 0.02], [0.2, 0.03],
                                    expect_y=True)
    assert sli.verdict == HOLDS
    (sli,) = report.judge_occupancy("Fig. 6", "SLI", n, [0.1, 0.02], [0.2, 0.3], expect_y=True)
    assert sli.verdict == FAILS


def test_backlog_both_ways():
    names = ["decode-heavy", "prefill-heavy"]
    ok = report.judge_backlog(names, [0, 0.8], [0.01, 0.7], [0, 0], [0.01, 0.05])
    assert ok.verdict == HOLDS and "prefill-heavy" in ok.evidence
    weak = report.judge_backlog(names, [0, 0.8], [0.2, 0.18], [0, 0], [0.13, 0.13])
    assert weak.verdict == FAILS


def test_policies_both_ways():
    # Three instances; GG-SP best and steadiest, the gate helps, FG-SP hurts on one instance.
    good = {"fi-wsp": [0.95, 0.96, 0.94], "gi-wsp": [0.97, 0.975, 0.96],
            "gf-wsp": [0.95, 0.955, 0.95], "fg-sp": [0.93, 0.96, 0.945],
            "gate-and-route": [0.985, 0.986, 0.984]}
    verdicts = [c.verdict for c in report.judge_policies(500, good)]
    assert verdicts == [HOLDS, HOLDS, HOLDS]
    # The README's paper-instance situation: GI-WSP best, FG-SP level with FI-WSP.
    bad = {"fi-wsp": [0.978, 0.97, 0.975], "gi-wsp": [0.96, 0.99, 0.96],
           "gf-wsp": [0.977, 0.97, 0.975], "fg-sp": [0.977, 0.971, 0.975],
           "gate-and-route": [0.974, 0.95, 0.99]}
    verdicts = [c.verdict for c in report.judge_policies(500, bad)]
    assert verdicts == [FAILS, FAILS, FAILS]
    table = report.policy_table(good)
    assert table["gate-and-route"]["wins"] == 3 and table["fi-wsp"]["wins"] == 0
    assert table["gate-and-route"]["win_margin"] == pytest.approx(np.mean([0.015, 0.011, 0.024]))


def test_sli_judges_both_ways():
    rstar = 297.7
    steep = report.judge_fairness("prefill_fairness", [0, 0.1, 0.2], [134, 231, 297.7], rstar)
    assert steep.verdict == HOLDS
    assert report.judge_fairness("prefill_fairness", [0, 0.2], [290, 297.7],
                                 rstar).verdict == FAILS
    assert report.judge_fairness("decode_fairness", [0, 4], [290, 297.7], rstar).verdict == HOLDS
    flat = report.judge_fairness("decode_fairness", [0, 4], [257.4, 297.7], rstar)
    assert flat.verdict == FAILS and "13.5%" in flat.evidence
    vals, inv_g = [0.0221, 0.0225, 0.023, 0.024, 0.025], 0.022
    boom = report.judge_tpot(vals, [55.8, 142, 187.7, 278.3, 297.7],
                             [557547, 91683, 91144, 90082, 0], rstar, inv_g)
    assert boom.verdict == HOLDS
    calm = report.judge_tpot(vals, [250, 260, 270, 280, 297.7], [2e4, 2e4, 2e4, 2e4, 0], rstar,
                             inv_g)
    assert calm.verdict == FAILS
    on = [{"sli": "tpot", "target": 0.023, "revenue_lp": 187.7, "revenue_sim": 185.0,
           "achieved": 0.0231, "sli_range": 0.0023}]
    assert report.judge_sli_points(on).verdict == HOLDS
    off = [{**on[0], "revenue_sim": 170.0}]
    assert report.judge_sli_points(off).verdict == FAILS
    missed = [{**on[0], "achieved": 0.0235}]
    assert report.judge_sli_points(missed).verdict == FAILS


def test_sensitivity_judges_both_ways():
    B = np.arange(1, 49)
    assert report.judge_batch(B, np.minimum(B * 19.0, 305.0)).verdict == HOLDS
    assert report.judge_batch(B, np.minimum(B * 5.0, 200.0)).verdict == FAILS  # B = 40
    assert report.judge_beta({"alpha": 0.02, "beta": 0.56, "gamma": 0.36}).verdict == HOLDS
    assert report.judge_beta({"alpha": 0.02, "beta": 0.1, "gamma": 0.36}).verdict == FAILS
    assert report.judge_price_ratio([0.15, 0.3], [20.0, 20.0]).verdict == HOLDS
    assert report.judge_price_ratio([0.15, 0.3], [1.0, 20.0]).verdict == FAILS


def test_dolly_judges_and_missing_experiments():
    fit, gr = report.judge_dolly(230.36, 228.0, 0.5, 500)
    assert fit.verdict == NOT_COMPARABLE and gr.verdict == HOLDS
    assert report.judge_dolly(230.36, 200.0, 0.5, 500)[1].verdict == FAILS
    claims = report.judge_all({})
    assert claims and all(c.verdict == NOT_COMPARABLE for c in claims)
    text = report.render({}, claims)
    assert "0 hold, 0 do not hold" in text and "not run" in text
