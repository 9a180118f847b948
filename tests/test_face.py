"""The optimal face of the fluid LPs (jaxqueue.fluid.face): hand-solved degenerate LPs, every
LP kind (bundled, separate, SLI hard and soft), the paper's instance, and the distance of a
simulated value to an optimal range."""

import numpy as np
import pytest

from jaxqueue import fluid, scenarios
from jaxqueue.fluid import SLI
from jaxqueue.model import Model

EXACT = 1e-7  # the LPs are solved in float64 to 1e-10; ranges are checked to this


def one_class(lam: float = 2.0, **changes) -> Model:
    """One class with round rates: tau = 0.5 s, mu_p = 2, mu_m = 1, mu_s = 2, theta = 1, B = 2.

    tau = alpha + beta*C = 0.5; mu_p = C/(P tau) = 2; mu_m = 1/(D tau) = 1; mu_s = gamma/D = 2.
    Prices c_p = 3, c_d = 1: separate pricing pays c_p C/tau = 6 per unit of x, c_d/tau = 2 per
    unit of y_m and c_d gamma = 4 per unit of y_s; bundled pricing pays w = c_p P + c_d D = 5 per
    decode completion.
    """
    params = {"lambda_": [lam], "theta": [1.0], "P": [1.0], "D": [2.0], "alpha": 0.5,
              "beta": 0.0, "C": 1.0, "gamma": 4.0, "B": 2, "c_p": 3.0, "c_d": 1.0}
    return Model(**{**params, **changes})


def two_class(**changes) -> Model:
    """Two classes at light load: tau = 1, mu_p = (1, 1), mu_m = (1, 0.5), mu_s = (2, 1),
    w = c_p P + c_d D = (2, 3), lambda = (0.2, 0.2), theta = 1, B = 3, kappa = 2."""
    params = {"lambda_": [0.2, 0.2], "theta": [1.0, 1.0], "P": [1.0, 1.0], "D": [1.0, 2.0],
              "alpha": 1.0, "beta": 0.0, "C": 1.0, "gamma": 2.0, "B": 3, "c_p": 1.0,
              "c_d": 1.0}
    return Model(**{**params, **changes})


def fairness_model() -> Model:
    """test_fluid.two_class: tau = 1, mu_p = (1, 0.5), mu_m = (1, 1), mu_s = (2, 2),
    w = (2, 3), lambda = (10, 10), B = 11: only the prefill capacity binds."""
    return Model(lambda_=[10.0, 10.0], theta=[1.0, 1.0], P=[1.0, 2.0], D=[1.0, 1.0], alpha=1.0,
                 beta=0.0, C=1.0, gamma=2.0, B=11, c_p=1.0, c_d=1.0)


def heavy_one_class() -> Model:
    """test_fluid.tiny(10): one_class with lambda = 10 and c_p = c_d = 1 (w = 3)."""
    return one_class(10.0, c_p=1.0)


def assert_ranges(face: fluid.Face, expected: dict) -> None:
    for name, (lo, hi) in expected.items():
        got_lo, got_hi = face.bounds(name)
        np.testing.assert_allclose(got_lo, lo, rtol=0, atol=EXACT, err_msg=f"low of {name}")
        np.testing.assert_allclose(got_hi, hi, rtol=0, atol=EXACT, err_msg=f"high of {name}")


def test_separate_pricing_one_class_decode_backlog_is_free():
    # Separate pricing, lambda = 2. Revenue 6x + 2 y_m + 4 y_s with y_m <= x, y_s <= 2(1 - x)
    # and decode completions y_m + 2 y_s <= 2x (prefill completions; the rest abandon from the
    # decode buffer: q_d = 2x - y_m - 2 y_s, theta = 1).
    # - x <= 0.8: slots are not short (x + 4(1-x) >= 2x), every prefill is decoded: revenue
    #   6x + 4x (2x jobs of D = 2 tokens at c_d = 1) = 10x <= 8.
    # - x >= 0.8: the slots bind, y_m = x, y_s = 2(1 - x) (the only way to fill them), and
    #   revenue = 6x + 2x + 8(1 - x) = 8 whatever x: a prefill earns as much (c_p P = 3) as the
    #   decode tokens it pushes off the solo slots.
    # So R* = 8 on the segment x in [0.8, 1] (x <= lambda/mu_p = 1): y_m = x in [0.8, 1],
    # y_s = 2(1-x) in [0, 0.4], q_p = 2 - 2x in [0, 0.4], q_d = 5x - 4 in [0, 1].
    face = fluid.face(one_class(), "separate")
    assert face.pricing == "separate" and face.sli is None
    assert face.objective == pytest.approx(8.0, abs=EXACT)
    assert face.revenue == pytest.approx((8.0, 8.0), abs=EXACT)
    assert not face.unique
    assert_ranges(face, {"x": ([0.8], [1.0]), "y_m": ([0.8], [1.0]), "y_s": ([0.0], [0.4]),
                         "q_p": ([0.0], [0.4]), "q_d": ([0.0], [1.0]), "sum_x": (0.8, 1.0)})
    assert face.total("q_d") == pytest.approx((0.0, 1.0), abs=EXACT)
    assert set(face.free()) == {"x", "y_m", "y_s", "q_p", "q_d"}
    # The vertex solve() returns is one point of the face.
    plan = face.vertex
    for k in fluid.VARIABLES:
        lo, hi = face.bounds(k)
        assert np.all(lo - EXACT <= getattr(plan, k)) and np.all(getattr(plan, k) <= hi + EXACT)


def test_bundled_pricing_one_class_unique_optimum_has_zero_width():
    # Bundled pricing of the same model: revenue 5 (y_m + 2 y_s), completions at most
    # min(2x, x + 4(1 - x)), largest (1.6) only at x = 0.8, where y_m <= 0.8 and y_s <= 0.4
    # leave one way to complete 1.6 per second: x = 0.8, y_m = 0.8, y_s = 0.4, q_p = 2 - 1.6,
    # q_d = 0. R* = 8, a unique optimum.
    face = fluid.face(one_class(), "bundled")
    assert face.unique and face.free() == {}
    assert face.objective == pytest.approx(8.0, abs=EXACT)
    assert_ranges(face, {"x": ([0.8], [0.8]), "y_m": ([0.8], [0.8]), "y_s": ([0.4], [0.4]),
                         "q_p": ([0.4], [0.4]), "q_d": ([0.0], [0.0]), "sum_x": (0.8, 0.8)})
    for k in (*fluid.VARIABLES, "sum_x"):
        assert np.all(face.width(k) <= EXACT), k


def test_bundled_two_classes_mixed_and_solo_decodes_trade_off():
    # Light load: revenue sum_i w_i (mu_m,i y_m,i + mu_s,i y_s,i) <= sum_i w_i mu_p,i x_i
    # <= sum_i w_i lambda_i = 2*0.2 + 3*0.2 = 1, reached only with q_p = q_d = 0 and
    # x = lambda / mu_p = (0.2, 0.2) (unique). The decode balances then fix completions:
    # class 1: y_m1 + 2 y_s1 = 0.2, so y_m1 in [0, 0.2] and y_s1 = (0.2 - y_m1)/2 in [0, 0.1];
    # class 2: 0.5 y_m2 + y_s2 = 0.2, so y_m2 in [0, 0.4] and y_s2 in [0, 0.2].
    # The capacities never bind (y_m <= 0.6 <= (B-1) X = 0.8; y_s <= 0.3 <= B (1-X) = 1.8),
    # so every such split earns R* = 1.
    face = fluid.face(two_class(), "bundled")
    assert face.objective == pytest.approx(1.0, abs=EXACT) and not face.unique
    assert_ranges(face, {"x": ([0.2, 0.2], [0.2, 0.2]), "y_m": ([0.0, 0.0], [0.2, 0.4]),
                         "y_s": ([0.0, 0.0], [0.1, 0.2]), "q_p": ([0.0, 0.0], [0.0, 0.0]),
                         "q_d": ([0.0, 0.0], [0.0, 0.0]), "sum_x": (0.4, 0.4)})
    assert face.total("y_m") == pytest.approx((0.0, 0.6), abs=EXACT)
    assert face.total("y_s") == pytest.approx((0.0, 0.3), abs=EXACT)
    assert face.free() == {"y_m": ("class-1", "class-2"), "y_s": ("class-1", "class-2")}
    # The names of jaxqueue.stats.per_gpu are accepted.
    np.testing.assert_array_equal(face.bounds("y_mixed")[1], face.bounds("y_m")[1])
    with pytest.raises(ValueError, match="name"):
        face.bounds("z")


def test_hard_sli_face_two_classes():
    # Decode fairness eta_2 = 0 (hard) forces y_s1 = y_s2 = s; with the balances above,
    # s in [0, 0.1] (y_s1 <= 0.1), y_m1 = 0.2 - 2s in [0, 0.2], y_m2 = 0.4 - 2s in [0.2, 0.4];
    # R* stays 1 (q_d = 0 is optimal anyway). Totals: y_s = 2s in [0, 0.2], y_m in [0.2, 0.6].
    sli = SLI(decode_fairness=0.0)
    face = fluid.face(two_class(), sli=sli)
    assert face.sli == sli and face.objective == pytest.approx(1.0, abs=EXACT)
    assert_ranges(face, {"x": ([0.2, 0.2], [0.2, 0.2]), "y_m": ([0.0, 0.2], [0.2, 0.4]),
                         "y_s": ([0.0, 0.0], [0.1, 0.1]), "q_d": ([0.0, 0.0], [0.0, 0.0])})
    assert face.total("y_s") == pytest.approx((0.0, 0.2), abs=EXACT)
    assert face.total("y_m") == pytest.approx((0.2, 0.6), abs=EXACT)


def test_soft_sli_face_trades_revenue_for_penalty():
    # fairness_model(): lambda = (10, 10), mu_p = (1, 0.5), mu_m = 1, w mu_p = (2, 1.5) per
    # unit of x, only the prefill capacity binds. Soft prefill fairness eta_1 = 0.5 with
    # weight 0.25. At X = x1 + x2 = 1 (a lower X is never optimal: one more unit of x2 earns
    # 1.5 and narrows the spread), revenue 1.5 + 0.5 x1 and spread 2 x1 - 1, so the objective is
    # 1.5 + 0.5 x1 - 0.25 max(0, 2 x1 - 1.5): 1.875 for every x1 in [0.75, 1], less below.
    # With X = 1 there are no solo slots: y_s = 0, y_m = mu_p x / mu_m = (x1, 0.5 x2);
    # q_p = lambda - mu_p x = (10 - x1, 10 - 0.5 x2); q_d = 0. Revenue in [1.875, 2].
    sli = SLI(prefill_fairness=0.5, penalty=True, weights={"prefill_fairness": 0.25})
    face = fluid.face(fairness_model(), sli=sli)
    assert face.objective == pytest.approx(1.875, abs=EXACT)
    assert face.revenue == pytest.approx((1.875, 2.0), abs=EXACT)
    assert_ranges(face, {"x": ([0.75, 0.0], [1.0, 0.25]), "sum_x": (1.0, 1.0),
                         "y_m": ([0.75, 0.0], [1.0, 0.125]), "y_s": ([0.0, 0.0], [0.0, 0.0]),
                         "q_p": ([9.0, 9.875], [9.25, 10.0]), "q_d": ([0.0, 0.0], [0.0, 0.0])})


def test_soft_tpot_face_fixes_the_mixed_fraction():
    # heavy_one_class(): objective 6X - 27 max(0, 0.5/(2 - X) - 0.3125) (TPOT = 0.5/(2 - X)),
    # maximal where 6 = 13.5/(2 - X)^2: X = 0.5, objective 3 - 27/48 = 2.4375, revenue 3. The
    # decodes 2X = 1 per second split freely: y_m in [0, 0.5], y_s = (1 - y_m)/2 in [0.25, 0.5].
    sli = SLI(tpot=0.3125, penalty=True, weights={"tpot": 27.0})
    face = fluid.face(heavy_one_class(), sli=sli)
    assert face.objective == pytest.approx(2.4375, abs=1e-9)
    assert face.revenue == pytest.approx((3.0, 3.0), abs=EXACT)
    assert_ranges(face, {"sum_x": (0.5, 0.5), "x": ([0.5], [0.5]), "y_m": ([0.0], [0.5]),
                         "y_s": ([0.25], [0.5])})


def test_paper_instance_ranges_quoted_in_issue_19():
    m = scenarios.load("paper-qwen8b")
    sep = fluid.face(m, "separate")
    assert sep.objective == pytest.approx(298.598, abs=5e-4)
    assert sep.low["q_d"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert sep.high["q_d"] == pytest.approx([0.320, 0.800], abs=5e-4)
    assert sep.total("q_d")[0] == pytest.approx(0.320, abs=5e-4)  # every optimum has a backlog
    bun = fluid.face(m, "bundled")
    assert bun.low["y_m"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert bun.high["y_m"] == pytest.approx([3.198, 3.198], abs=5e-4)
    assert bun.low["y_s"] == pytest.approx([8.19, 2.29], abs=5e-3)
    assert bun.high["y_s"] == pytest.approx([10.30, 4.40], abs=5e-3)
    for k in ("x", "q_p"):
        assert np.all(bun.width(k) < 1e-6) and np.all(sep.width(k) < 1e-6)
    assert set(bun.free()) == {"y_m", "y_s"}
    # The CLI's ranges (fluid.optima) are the same numbers.
    old = fluid.optima(m, "bundled")
    for k in fluid.VARIABLES:
        np.testing.assert_allclose(bun.low[k], old.low[k], atol=1e-9)
        np.testing.assert_allclose(bun.high[k], old.high[k], atol=1e-9)
    js = bun.as_dict()
    assert js["ranges"]["y_m"]["decode-heavy"] == pytest.approx([0.0, 3.198], abs=5e-4)


def test_distance_to_range_hand_checked():
    d = fluid.distance_to_range([0.5, 1.5, 3.0, 2.3], 1.0, 2.0)
    np.testing.assert_allclose(d.distance, [0.5, 0.0, 1.0, 0.3])
    np.testing.assert_allclose(d.signed, [-0.5, 0.0, 1.0, 0.3])
    assert d.inside.tolist() == [False, True, False, False] and d.ci is None
    # value 3 +- 2*0.25 = [2.5, 3.5]: distance 1, interval [0.5, 1.5], z = 4, not consistent;
    # value 2.3 +- 0.5 = [1.8, 2.8] meets [1, 2]: interval [0, 0.8], consistent;
    # value 1.5 +- 0.5 inside: interval [0, 0], z = 0.
    d = fluid.distance_to_range([3.0, 2.3, 1.5], 1.0, 2.0, se=0.25, crit=2.0)
    np.testing.assert_allclose(d.distance, [1.0, 0.3, 0.0])
    np.testing.assert_allclose(d.z, [4.0, 1.2, 0.0])
    np.testing.assert_allclose(d.ci[0], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(d.ci[1], [1.5, 0.8, 0.0])
    assert d.consistent.tolist() == [False, True, True]
    # A positive distance with no error is infinitely many standard errors.
    assert fluid.distance_to_range(3.0, 1.0, 2.0, se=0.0).z == np.inf
    with pytest.raises(ValueError, match="low <= high"):
        fluid.distance_to_range(1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="se"):
        fluid.distance_to_range(1.0, 0.0, 2.0, se=-1.0)


def test_face_distance_of_a_simulated_value():
    # One class, separate pricing: q_d in [0, 1]. A simulated backlog 0.3 +- 0.05 is on the
    # face; 1.2 +- 0.05 is 0.2 above it, 4 standard errors.
    face = fluid.face(one_class(), "separate")
    d = face.distance("q_decode", [0.3], [0.05])
    assert d.distance[0] == pytest.approx(0.0) and d.consistent[0]
    d = face.distance("q_d", [1.2], [0.05])
    assert d.distance[0] == pytest.approx(0.2, abs=EXACT)
    assert d.z[0] == pytest.approx(4.0, abs=1e-5) and not d.consistent[0]
    # Against the one vertex HiGHS returns, the same backlog could look far off.
    assert face.vertex.q_d[0] in (pytest.approx(0.0, abs=EXACT), pytest.approx(1.0, abs=EXACT))
