"""Verdict logic on synthetic numbers, every way: the trend fit of a limit in n (known limits,
coverage of its interval), the three verdicts, distances to the LP's optimal set, and the
power-law fit."""

import jax
import numpy as np
import pytest

from jaxqueue import report
from jaxqueue.report import FAILS, HOLDS, INCONCLUSIVE, NOT_COMPARABLE

N = np.array([5, 20, 50, 200, 500, 2000], float)


def test_fit_limit_recovers_a_known_limit_and_rate():
    # Exact data d = a + 2 n^-1/2 with small standard errors: the limit is a, the rate 1/2, and
    # only rates near it are kept.
    for a in (0.0, 0.05, 0.5):
        fit = report.fit_limit(N, a + 2.0 * N**-0.5, np.full(6, 0.01))
        assert fit["limit"] == pytest.approx(a, abs=1e-9) and fit["rate"] == 0.5
        assert 0.4 < fit["rates"][0] < 0.5 < fit["rates"][1] < 0.6
        assert fit["points"] == 6 and fit["scale"] == 1.0
        assert fit["low"] < a < fit["high"] < a + 0.05
    # A rate between the grid's (n^-1/3; the grid steps by 0.01): the interval still covers 0.
    fit = report.fit_limit(N, N ** -(1 / 3), np.full(6, 1e-3))
    assert fit["low"] <= 0.0 <= fit["high"] and fit["rates"][0] <= 1 / 3 <= fit["rates"][1]
    # Fewer than three sizes: no trend.
    few = report.fit_limit(N[:2], [1.0, 0.5], [0.1, 0.1])
    assert few["limit"] is None and "fewer than 3" in few["note"]
    assert report.trend_verdict(few, 0.1) == INCONCLUSIVE
    # Three sizes: a + b n^-c passes through all of them, nothing tests the form.
    three = report.fit_limit(N[:3], 0.5 + 2.0 * N[:3] ** -0.5, np.full(3, 1e-3))
    assert three["dof"] == 0 and report.trend_verdict(three, 0.1) == INCONCLUSIVE
    four = report.fit_limit(N[:4], 0.5 + 2.0 * N[:4] ** -0.5, np.full(4, 1e-3))
    assert report.trend_verdict(four, 0.1) == FAILS


def test_trend_verdicts_three_ways():
    se = np.full(6, 0.01)
    vanishes = report.fit_limit(N, 2.0 * N**-0.5, se)
    persists = report.fit_limit(N, 0.5 + 2.0 * N**-0.5, se)
    # Too noisy to tell a limit of 0.1 from 0 or 0.2 at these sizes.
    noisy = report.fit_limit(N[:4], 0.1 + 2.0 * N[:4] ** -0.5, np.full(4, 0.2))
    assert report.trend_verdict(vanishes, 0.1) == HOLDS
    assert report.trend_verdict(persists, 0.1) == FAILS
    assert report.trend_verdict(noisy, 0.1) == INCONCLUSIVE
    assert report.trend_verdict(vanishes, 0.1, "positive") == FAILS
    assert report.trend_verdict(persists, 0.1, "positive") == HOLDS
    assert report.trend_verdict(noisy, 0.1, "positive") == INCONCLUSIVE
    with pytest.raises(ValueError, match="expect"):
        report.trend_verdict(vanishes, 0.1, "negative")


def test_fit_limit_interval_covers_the_true_limit():
    # 200 noisy data sets d = 0.3 + 2 n^-1/2 + N(0, se^2): the 95% interval of the limit (the
    # union over the rates kept, so conservative) covers 0.3 in at least 95% of them; 92% is
    # 2 binomial standard errors (sqrt(0.95 * 0.05 / 200) = 0.015) below 95%.
    se = 0.02 * np.ones(6)
    noise = np.asarray(jax.random.normal(jax.random.key(19), (200, 6)), np.float64)
    fits = [report.fit_limit(N, d, se) for d in 0.3 + 2.0 * N**-0.5 + se * noise]
    assert np.mean([f["low"] <= 0.3 <= f["high"] for f in fits]) >= 0.92
    # It decides when the margin is clear of the truth (interval widths are about 0.15 here):
    # "persists" past a margin of 0.1 in nearly all, "vanishes" below 0.5 in nearly all.
    assert np.mean([report.trend_verdict(f, 0.1, "positive") == HOLDS for f in fits]) >= 0.9
    assert np.mean([report.trend_verdict(f, 0.5) == HOLDS for f in fits]) >= 0.9


def test_face_deviation_and_cells_by_hand():
    # Ranges [0, 1] for both entries; values 0.5 (inside) and 2.0 (1.0 above):
    # distance (0 + 1) / scale 2 = 0.5; se sqrt(0.1^2 + 0.2^2) / 2.
    d, se = report.face_deviation([0.5, 2.0], [0.1, 0.2], [0.0, 0.0], [1.0, 1.0], 2.0)
    assert d == pytest.approx(0.5) and se == pytest.approx(np.sqrt(0.05) / 2)
    # Per class: 0.198 +- 1.96 * 0.05 inside [0, 0.8] (the prefill-heavy backlog
    # against the separate LP's face); 1.0 +- 0.098 above it, distance 0.2 in [0.102, 0.298];
    # -0.2 +- 0.098 below [0, 0.8], distance 0.2.
    cells = report.face_cells([0.198, 1.0, -0.2], [0, 0, 0], [0.8, 0.8, 0.8], [0.05] * 3)
    assert [c[3] for c in cells] == ["inside", "above", "below"]
    assert cells[0][2] == "0.000 [0.000, 0.000]" and cells[1][2] == "0.200 [0.102, 0.298]"
    assert cells[0][1] == "[0.000, 0.800]"


def test_fit_power_law_recovers_a_known_rate():
    n = np.array([5, 20, 50, 200, 500, 2000], float)
    gap = 40.0 * n ** -0.5
    fit = report.fit_power_law(n, gap, 0.01 * gap)
    assert fit["slope"] == pytest.approx(-0.5, abs=1e-9)
    assert fit["low"] <= -0.5 <= fit["high"] and fit["points"] == 6
    # Gaps within two standard errors of zero cannot be logged: they are left out.
    few = report.fit_power_law(n[:3], [1.0, 0.5, 0.01], [0.1, 0.1, 0.1])
    assert few["slope"] is None and "fewer than 3" in few["note"]


def test_convergence_and_bands_every_way():
    n = [20, 50, 200, 1000]
    se = [0.3] * 4
    shrinking = [30 * k**-0.5 for k in n]  # gap -> 0
    assert report.judge_convergence(n, shrinking, se, 297.7).verdict == HOLDS
    flat = [8 + 5 * k**-0.5 for k in n]  # a gap of 8 (2.7% of R*) that stays
    assert report.judge_convergence(n, flat, se, 297.7).verdict == FAILS
    noisy = [30 * k**-0.5 for k in n]
    assert report.judge_convergence(n, noisy, [5.0] * 4, 297.7).verdict == INCONCLUSIVE
    assert report.judge_bands(n, [2.0, 1.0, 0.6, 0.3]).verdict == HOLDS
    assert report.judge_bands(n, [2.0, 1.9, 1.8, 1.5]).verdict == FAILS


def test_queues_decode_and_occupancy_every_way():
    # n = 5 is shown but not fitted (report.TREND_MIN_N = 20): its value does not matter.
    n = [5, 20, 50, 200, 500]
    se = [0.005] * 5
    gone = [0.5 * k**-0.5 for k in n]  # -> 0
    stays = [0.3 + 0.5 * k**-0.5 for k in n]  # -> 0.3
    assert report.judge_queues(n, gone, se).verdict == HOLDS
    assert report.judge_queues(n, stays, se).verdict == FAILS
    assert report.judge_queues(n, gone, [0.5] * 5).verdict == INCONCLUSIVE
    # Margin 10% of the planned queue 0.317: 0.0317.
    assert report.judge_decode_buffer(n, [0.1 * k**-0.5 for k in n], se, 0.317).verdict == HOLDS
    bad = report.judge_decode_buffer(n, [0.27] * 5, se, 0.317)
    assert bad.verdict == FAILS and "0.0317" in bad.rule
    x_ok, y_off = report.judge_occupancy("Fig. 5", "greedy", n, gone, se, stays, se,
                                         expect_y=False)
    assert (x_ok.verdict, y_off.verdict) == (HOLDS, HOLDS)
    x_bad, y_on = report.judge_occupancy("Fig. 5", "greedy", n, stays, se, gone, se,
                                         expect_y=False)
    odd = report.judge_queues(n, [9.0, *gone[1:]], se)  # a wild n = 5 is left out of the fit
    assert odd.verdict == HOLDS and "(n = 5)" in odd.evidence
    assert (x_bad.verdict, y_on.verdict) == (FAILS, FAILS)
    (sli,) = report.judge_occupancy("Fig. 6", "SLI", n, gone, se, gone, se, expect_y=True)
    assert sli.verdict == HOLDS
    (sli,) = report.judge_occupancy("Fig. 6", "SLI", n, gone, se, stays, se, expect_y=True)
    assert sli.verdict == FAILS
    (sli,) = report.judge_occupancy("Fig. 6", "SLI", n, gone, se, gone, [1.0] * 5,
                                    expect_y=True)
    assert sli.verdict == INCONCLUSIVE


def test_backlog_every_way():
    # Margin 10% of the separate LP's least backlog 0.32: 0.032 per GPU.
    n = [20, 50, 200, 1000]
    se = [0.003] * 4
    persists = [0.3 + 0.5 * k**-0.5 for k in n]
    vanishes = [0.5 * k**-0.5 for k in n]
    sep, bun = report.judge_backlog(n, persists, se, n, vanishes, se, 0.32)
    assert (sep.id, sep.verdict, bun.id, bun.verdict) == (
        "fig2-separate-backlog", HOLDS, "fig2-bundled-backlog", HOLDS)
    assert "0.0320" in sep.rule and "persists" in sep.rule
    sep, bun = report.judge_backlog(n, vanishes, se, n, persists, se, 0.32)
    assert (sep.verdict, bun.verdict) == (FAILS, FAILS)
    sep, bun = report.judge_backlog(n[:2], persists[:2], se[:2], n, persists, [0.3] * 4, 0.32)
    assert (sep.verdict, bun.verdict) == (INCONCLUSIVE, INCONCLUSIVE)


def test_level_deviations_against_a_face():
    # Two classes; x unique at (0.1, 0.2); y_m free in [0, 3] each, y_s unique (1, 1); q_p
    # (0.3, 0), q_d (0, 0). Simulated: x (0.1, 0.25) -> 0.05 / 0.3; y_m (2, 2.5) inside, y_s
    # (1, 1.5) -> 0.5 / sum(y_m* + y_s*) = 0.5 / 5; queues (0.3, 0.1 | 0, 0.2) -> 0.3 / 0.3.
    names = ["a", "b"]
    ranges = {"x": [[0.1, 0.1], [0.2, 0.2]], "y_m": [[0, 3], [0, 3]],
              "y_s": [[1, 1], [1, 1]], "q_p": [[0.3, 0.3], [0, 0]], "q_d": [[0, 0], [0, 0]]}
    face = {"ranges": {k: dict(zip(names, v, strict=True)) for k, v in ranges.items()}}
    lp = {"x": [0.1, 0.2], "y_m": [3, 0], "y_s": [1, 1], "q_p": [0.3, 0], "q_d": [0, 0]}

    def pack(mean):
        return {"mean": mean, "sd": [0.0, None], "n": 4}

    row = {"x": pack([0.1, 0.25]), "y_mixed": pack([2, 2.5]), "y_solo": pack([1, 1.5]),
           "q_prefill": pack([0.3, 0.1]), "q_decode": pack([0, 0.2]),
           "q_decode_total": {"mean": 0.2, "sd": 0.4, "n": 4}}
    dev = report.level_deviations(row, face, lp, names)
    assert dev["x"][0] == pytest.approx(0.05 / 0.3)
    assert dev["y"][0] == pytest.approx(0.1)
    assert dev["queue"][0] == pytest.approx(1.0)
    assert dev["decode"] == pytest.approx((0.2, 0.2))  # se = 0.4 / sqrt(4)


def test_collapses_listed_with_what_explains_them():
    grid = {"gpus": 500, "policies": {
        "gf-wsp": {"instance_mean": [0.97, 0.2], "x_total": [0.1, 0.96],
                   "q_decode_total": [0.0, 6.2], "rerun_reps": [[], [0, 1]]},
        "gate-and-route": {"instance_mean": [0.98, 0.89]}}}
    r = {"grids": [grid], "instances": [{"beta": 1e-5, "mixed_fraction": 0.14},
                                        {"beta": 6.289e-4, "mixed_fraction": 0.35,
                                         "lp_decode_queue": 0.0}]}
    (row,) = report.collapse_rows(r)
    assert row == [500, "gf-wsp", 1, "0.000629", "0.200", "0.960", "0.350", "6.200", "0.000",
                   "0, 1"]
    text = "\n".join(report._collapse_section(r))
    assert "policy's behaviour, not a defect" in text and "test_sweep_overflow" in text
    grid["policies"]["gf-wsp"]["instance_mean"] = [0.97, 0.6]
    assert report.collapse_rows(r) == []


def test_policies_both_ways():
    # Three instances; GG-SP best and steadiest, the gate helps, FG-SP hurts on one instance.
    good = {"fi-wsp": [0.95, 0.96, 0.94], "gi-wsp": [0.97, 0.975, 0.96],
            "gf-wsp": [0.95, 0.955, 0.95], "fg-sp": [0.93, 0.96, 0.945],
            "gate-and-route": [0.985, 0.986, 0.984]}
    verdicts = [c.verdict for c in report.judge_policies(500, good)]
    assert verdicts == [HOLDS, HOLDS, HOLDS]
    # A paper-instance-like situation: GI-WSP best, FG-SP level with FI-WSP.
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
    assert "0 hold, 0 do not hold, 0 inconclusive" in text and "not run" in text
    # Each verdict's rule is next to it.
    c = report.judge_decode_buffer([20, 50, 200, 500], [0.3] * 4, [0.01] * 4, 0.317)
    line = next(x for x in report.render({}, [c]).splitlines() if x.startswith("| fig4-decode"))
    assert "*inconclusive*" not in line and "**does not hold**" in line and c.rule in line


def _gap_point(param, value, gaps, ci=0.01, coupled=None):
    """A gap-map point with Gate-and-Route's relative gaps ``gaps`` ({n: gap}) and a 95%
    half-width ``ci``; the coupled gate earns 2% of R* more (or ``coupled``)."""
    runs = {}
    for n, g in gaps.items():
        runs[str(n)] = {
            "gate-and-route": {"gap": {"mean": g, "ci95": ci},
                               "revenue": {"mean": 100 * (1 - g), "ci95": 100 * ci}},
            "gi-wsp-after": {"gap": {"mean": g - 0.02, "ci95": ci},
                             "revenue": {"mean": 100 * (1 - g + 0.02), "ci95": 100 * ci}},
            "coupled_minus_gate_and_route": coupled or {"mean": 0.02, "ci95": 0.005}}
    return {"parameter": param, "value": value, "runs": runs,
            "rate": {"verdict": INCONCLUSIVE, "ratio": {"ratio": None}}}


def test_gap_flags_and_regions_by_hand():
    # 0.08 ± 0.02 lies above 5%, 0.03 ± 0.01 below, 0.05 ± 0.01 across; no interval: across.
    assert report.gap_flag(0.08, 0.02) == "above" and report.gap_flag(0.03, 0.01) == "below"
    assert report.gap_flag(0.05, 0.01) == "across" and report.gap_flag(0.08, None) == "across"
    assert report.gap_flag(0.05, 0.0) == "below"  # at the margin exactly: within it
    # Runs over the values in increasing order, whatever order they come in.
    assert report.flagged_runs([8, 2, 4, 16, 32], [True, True, True, False, True]) == [
        (2.0, 8.0), (32.0, 32.0)]
    assert report.flagged_runs([1, 2], [False, False]) == []
    assert report.fmt_runs("B", [(2.0, 8.0), (32.0, 32.0)]) == "B 2-8, 32"
    assert report.fmt_runs("beta", [(3.981e-4, 1e-3)]) == "beta 3.98e-4-0.001"
    # B = 4 and 8 more than 5% below R* at n = 100, B = 16 within, beta = 1e-3 undecided.
    points = [_gap_point("B", 4, {100: 0.20}), _gap_point("B", 8, {100: 0.30}),
              _gap_point("B", 16, {100: 0.02}), _gap_point("beta", 1e-3, {100: 0.05})]
    reg = report.gap_regions(points, 100, "gate-and-route")
    assert reg == {"above": "B 4-8", "below": "B 16", "across": "beta 0.001"}
    # The best policy at each point is the coupled gate, 2% better: 0.18, 0.28, 0.00, 0.03.
    best = report.gap_regions(points, 100, None)
    assert best == {"above": "B 4-8", "below": "B 16; beta 0.001", "across": ""}
    claim = report.judge_gap_within(100, points)
    assert claim.id == "gap-within-n100" and claim.verdict == FAILS
    assert "B 4-8" in claim.evidence and "largest gap 30.0% ± 1.0% at B = 8" in claim.evidence
    within = [_gap_point("B", 16, {100: 0.02}), _gap_point("B", 32, {100: 0.01})]
    assert report.judge_gap_within(100, within).verdict == HOLDS
    unsure = [*within, _gap_point("beta", 1e-3, {100: 0.05})]
    assert report.judge_gap_within(100, unsure).verdict == INCONCLUSIVE
    text = "\n".join(report._gap_section({"gpus": [100], "points": points}))
    assert "more than 5% below R* (95% interval above 5%) at B 4-8" in text
    assert "at 4 of 4 points" in text  # the coupled gate's paired difference 0.02 ± 0.005


def test_gap_ratio_by_hand():
    # gap 0.10 ± 0.005 (se) at n = 100, 0.05 ± 0.0025 at n = 500: ratio 1/2, rate
    # c = log 2 / log 5 = 0.4307; se of log ratio sqrt(0.05^2 + 0.05^2) = 0.0707, so the
    # ratio's interval is 0.5 exp(-+1.96 * 0.0707) = 0.5 * [0.8706, 1.1487] = [0.4353, 0.5743].
    r = report.gap_ratio(100, 0.10, 0.005, 500, 0.05, 0.0025)
    assert r["ratio"] == pytest.approx(0.5)
    assert r["rate"] == pytest.approx(np.log(2) / np.log(5))
    assert r["low"] == pytest.approx(0.4353, abs=1e-4)
    assert r["high"] == pytest.approx(0.5743, abs=1e-4)
    assert r["rate_low"] < r["rate"] < r["rate_high"]
    assert r["rate_low"] == pytest.approx(-np.log(r["high"]) / np.log(5))
    assert "two sizes" in r["note"] and "c = 0.43 [" in report.fmt_ratio(r)
    # A gap within two standard errors of zero has no meaningful log: no ratio.
    none = report.gap_ratio(100, 0.10, 0.005, 500, 0.004, 0.0025)
    assert none["ratio"] is None and "two standard errors" in report.fmt_ratio(none)
    assert report.gap_ratio(500, 0.1, 0.01, 100, 0.2, 0.01)["ratio"] is None


def test_gap_limit_needs_sizes():
    pts = [_gap_point("B", 8, {100: 0.3, 500: 0.15})]
    pts[0]["rate"] = {"verdict": INCONCLUSIVE,
                      "ratio": report.gap_ratio(100, 0.3, 0.005, 500, 0.15, 0.005)}
    claim = report.judge_gap_limit(pts, [100, 500])
    assert claim.verdict == INCONCLUSIVE and "2 sizes: no test of the form" in claim.evidence
    pts[0]["rate"]["verdict"] = FAILS
    assert report.judge_gap_limit(pts, [20, 50, 100, 500]).verdict == FAILS


def test_beta_tpot_text_from_a_hand_made_line():
    # Two classes; TPOT rises while the LP sheds class a and keeps b, peaks at beta = 3e-4,
    # then falls when the LP swaps which class it serves.
    line = {"values": [1e-5, 1e-4, 3e-4, 5e-4], "tpot": [0.020, 0.050, 0.150, 0.080],
            "mixed_fraction": [0.1, 0.4, 0.9, 0.3],
            "served": [[1.0, 1.0], [0.5, 1.0], [0.0, 0.8], [1.0, 0.1]],
            "binding": [[], ["mixed", "solo"], ["mixed", "solo"], ["solo"]]}
    classes = {"names": ["a", "b"], "P": [300, 3000], "D": [1000, 400], "w": [230, 380]}
    text = report.beta_tpot_text(line, classes)
    assert "sheds the a class (w/D = 0.23 per output token against 0.95" in text
    assert "From beta = 1.00e-4 the capacity rows bind (mixed, solo" in text
    assert "TPOT peaks at 150.0 ms at beta = 3.00e-4" in text
    assert "serves the a class 100% (w/P = 0.77" in text and "drops to 80.0 ms" in text
    assert report.beta_tpot_text({**line, "tpot": [0.02, 0.03, 0.04, 0.05]}, classes) == ""
    assert report.beta_tpot_text({"values": [1], "tpot": [1]}, classes) == ""


def test_planned_decode_backlog_points_are_named_with_the_gaps_of_both_routers():
    def point(param, value, backlog, efficient, gaps):
        runs = {n: {k: {"gap": {"mean": g, "ci95": 0.01}} for k, g in by.items()}
                for n, by in gaps.items()}
        return {"parameter": param, "value": value, "lp_decode_queue": backlog,
                "solo_efficient": efficient, "served": [0.045, 1.0], "runs": runs}

    plain = point("B", 8, 0.0, True, {"100": {"gate-and-route": 0.3}})
    assert report.backlog_lines([plain], [100]) == []
    slow = point("beta", 1e-5, 0.0, False, {"100": {"gate-and-route": 0.016}})
    backlog = point("gamma", 10.0, 4.776, False,
                    {"100": {"gate-and-route": 0.501, "sli-gate-and-route": 0.042}})
    (text, blank) = report.backlog_lines([plain, slow, backlog], [100])
    assert blank == ""
    assert "gamma = 10 (backlog 4.78 per GPU; the plan serves 4%, 100%" in text
    assert "Gate-and-Route's gap 50.1% at n = 100; the SLI-aware router's 4.2% at n = 100" in text
    assert "slower mode at beta = 1.00e-5 too, but the plan keeps no backlog" in text
    assert "B = 8" not in text
