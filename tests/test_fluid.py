"""Tests of the fluid LPs (jaxqueue.fluid): paper values, hand-solved cases, duality and SLIs."""

import dataclasses
import json

import numpy as np
import pytest

from jaxqueue import fluid, scenarios
from jaxqueue.cli import plan_summary
from jaxqueue.fluid import SLI, FluidError
from jaxqueue.model import Model


def reference_model() -> Model:
    """The Sec. 6.2 instance as the independent solve of docs/model.md Sec. 8 used it.

    That solve's numbers (R* = 297.716, 298.598, q_d* = (0, 0.8003)) come out with
    gamma = 1/tau_solo = 1/0.022 = 45.4545 tok/s; with the paper's rounded gamma = 45.45 the
    bundled optimum is 297.7032 (4e-5 lower), outside the 6 significant digits quoted.
    """
    return scenarios.load("paper-qwen8b").replace(gamma=1.0 / 0.022)


def tiny(lam: float, **changes) -> Model:
    """One class with round rates: tau = 0.5 s, mu_p = 2, mu_m = 1, mu_s = 2, w = 3, theta = 1.

    tau = alpha + beta*C = 0.5; mu_p = C/(P tau) = 1/(1*0.5) = 2; mu_m = 1/(D tau) = 1/(2*0.5)
    = 1; mu_s = gamma/D = 4/2 = 2; w = c_p P + c_d D = 1 + 2 = 3; kappa = 2 >= (B-1)/B = 1/2.
    """
    params = {"lambda_": [lam], "theta": [1.0], "P": [1.0], "D": [2.0], "alpha": 0.5,
              "beta": 0.0, "C": 1.0, "gamma": 4.0, "B": 2, "c_p": 1.0, "c_d": 1.0}
    return Model(**{**params, **changes})


def two_class(**changes) -> Model:
    """Two classes where only the prefill capacity binds (hand-solvable with fairness).

    tau = 1; mu_p = C/(P tau) = (1, 0.5); mu_m = (1, 1); mu_s = (2, 2); w = P + D = (2, 3);
    revenue per unit of x (all prefilled jobs get decoded): w mu_p = (2, 1.5). B = 11 leaves
    10 X + 22 (1 - X) >= 10 decode completions per second of room, far above the <= 1 needed.
    """
    params = {"lambda_": [10.0, 10.0], "theta": [1.0, 1.0], "P": [1.0, 2.0], "D": [1.0, 1.0],
              "alpha": 1.0, "beta": 0.0, "C": 1.0, "gamma": 2.0, "B": 11, "c_p": 1.0, "c_d": 1.0}
    return Model(**{**params, **changes})


def assert_feasible(model: Model, plan: fluid.Plan, tol: float = 1e-9) -> None:
    """Every constraint of Eq. (40)/(42) holds to tol."""
    big_b = float(model.B)
    for v in (plan.x, plan.y_m, plan.y_s, plan.q_p, plan.q_d):
        assert np.all(v >= -tol)
    assert plan.sum_x <= 1.0 + tol
    assert plan.y_m.sum() <= (big_b - 1.0) * plan.sum_x + tol
    assert plan.y_s.sum() <= big_b * (1.0 - plan.sum_x) + tol
    np.testing.assert_allclose(model.lambda_ - model.theta * plan.q_p, model.mu_p * plan.x,
                               rtol=0, atol=tol)
    np.testing.assert_allclose(model.mu_p * plan.x - model.theta * plan.q_d,
                               plan.completion_rate(model), rtol=0, atol=tol)


def assert_dual_optimal(model: Model, plan: fluid.Plan, tol: float = 1e-7) -> None:
    """Strong duality, dual feasibility and complementary slackness from the returned duals."""
    big_b = float(model.B)
    a, u, v = plan.duals, plan.flow_duals["arrival"], plan.flow_duals["decode"]
    assert min(a.values()) >= -tol
    # Dual objective b'y with b = (1, 0, B) for the capacities and (lambda, 0) for the flows.
    dual_objective = a["prefill"] * 1.0 + a["solo"] * big_b + u @ model.lambda_
    assert dual_objective == pytest.approx(plan.revenue, rel=1e-9)
    ones = np.ones(model.num_classes)
    if plan.pricing == "bundled":
        c_x, c_ym, c_ys = 0.0 * ones, model.w * model.mu_m, model.w * model.mu_s
    else:
        c_x = model.c_p * model.C / model.tau * ones
        c_ym, c_ys = model.c_d / model.tau * ones, model.c_d * model.gamma * ones
    # Columns in max form: A'y >= c, with equality on every positive variable.
    columns = {
        "x": (a["prefill"] - (big_b - 1.0) * a["mixed"] + big_b * a["solo"]
              + model.mu_p * (u - v), c_x, plan.x),
        "y_m": (a["mixed"] + model.mu_m * v, c_ym, plan.y_m),
        "y_s": (a["solo"] + model.mu_s * v, c_ys, plan.y_s),
        "q_p": (model.theta * u, 0.0 * ones, plan.q_p),
        "q_d": (model.theta * v, 0.0 * ones, plan.q_d),
    }
    for name, (lhs, c, value) in columns.items():
        reduced = lhs - c
        assert np.all(reduced >= -tol * (1 + np.abs(c))), name
        assert np.all(np.abs(reduced[value > 1e-9]) <= tol * (1 + np.abs(c[value > 1e-9]))), name
    slack = {"prefill": 1.0 - plan.sum_x, "mixed": (big_b - 1.0) * plan.sum_x - plan.y_m.sum(),
             "solo": big_b * (1.0 - plan.sum_x) - plan.y_s.sum()}
    for k, room in slack.items():
        assert abs(room * a[k]) <= 1e-7


# ---- paper reference values (docs/model.md Sec. 8) ----------------------------------------------
def bundled_closed_form(m: Model) -> float:
    """The bundled optimum of the paper instance in closed form (active set read off the LP).

    Class 2 (prefill-heavy, w2 = 380) is fully admitted, x2 = lambda2/mu_p2 = 0.5*3000*tau/256,
    and takes all (B-1) X mixed slots; class 1 (w1 = 230) gets solo slots only; q_d = 0. With
    r1 = mu_p1 x1 the class-1 throughput, the solo capacity binds:
        r1/mu_s1 + (lambda2 - mu_m2 (B-1) X)/mu_s2 = B (1 - X),  X = r1/mu_p1 + x2,
    so r1 (1/mu_s1 + k/mu_p1) = B - lambda2/mu_s2 - k x2 with k = B - (B-1)/kappa, and
    R* = w1 r1 + w2 lambda2.
    """
    big_b, lam2 = float(m.B), m.lambda_[1]
    x2 = lam2 / m.mu_p[1]
    k = big_b - (big_b - 1.0) / m.kappa
    r1 = (big_b - lam2 / m.mu_s[1] - k * x2) / (1.0 / m.mu_s[0] + k / m.mu_p[0])
    return float(m.w[0] * r1 + m.w[1] * lam2)


def test_bundled_reference_values():
    m = reference_model()
    plan = fluid.solve(m, "bundled")
    # By hand (gamma = 1/0.022, tau = 0.0174 + 6.2e-5*256 = 0.033272):
    #   x2 = 1500*0.033272/256 = 0.194953125; k = 16 - 15/(0.033272/0.022) = 6.0817504;
    #   1/mu_s1 = 22, lambda2/mu_s2 = 0.5*8.8 = 4.4, mu_p1 = 256/(300*0.033272) = 25.647191;
    #   r1 = (16 - 4.4 - 6.0817504*0.194953125) / (22 + 6.0817504/25.647191)
    #      = 10.4143438 / 22.2371312 = 0.46833126;  x1 = r1/mu_p1 = 0.01826053;
    #   R* = 230*0.46833126 + 380*0.5 = 107.716190 + 190 = 297.716190.
    assert abs(plan.revenue - 297.716) < 5e-4
    assert plan.revenue == pytest.approx(bundled_closed_form(m), rel=1e-9)
    np.testing.assert_allclose(plan.x, [0.01826, 0.19495], rtol=0, atol=5e-6)
    np.testing.assert_allclose(plan.x, [0.46833126 / 25.647191, 0.194953125], rtol=1e-6)
    assert plan.pricing == "bundled"


def test_bundled_closed_form_on_the_shipped_scenario():
    m = scenarios.load("paper-qwen8b")
    assert fluid.solve_bundled(m).revenue == pytest.approx(bundled_closed_form(m), rel=1e-9)


def test_separate_reference_values():
    m = reference_model()
    plan = fluid.solve_separate(m)
    big_b, x_all = 16.0, m.lambda_ / m.mu_p
    # Every arrival is prefilled (x = lambda/mu_p, X = 0.01949531 + 0.19495313 = 0.21444844), so
    # prefill revenue is c_p (P1 + P2) 0.5 = 0.1*3300*0.5 = 165; decode runs at token capacity
    # 15 X/tau + 16 (1-X) gamma = 96.6807 + 571.3092 = 667.9899 tok/s, paid c_d = 0.2:
    # R* = 165 + 133.5980 = 298.5980. Demand is 0.5*1000 + 0.5*400 = 700 tok/s, so 32.0101
    # tok/s abandon from the decode buffer: theta q_d . D = 32.0101 (q_d2 = 0.80025 if class 2).
    tokens = (big_b - 1) * x_all.sum() / m.tau + big_b * (1 - x_all.sum()) * m.gamma
    assert abs(plan.revenue - 298.598) < 5e-4
    assert plan.revenue == pytest.approx(165.0 + 0.2 * tokens, rel=1e-9)
    np.testing.assert_allclose(plan.x, x_all, rtol=1e-9)
    assert (m.theta * plan.q_d) @ m.D == pytest.approx(700.0 - tokens, rel=1e-8)
    # Which class abandons is not unique under class-free token prices; HiGHS picks the same
    # vertex as the independent solve.
    np.testing.assert_allclose(plan.q_d, [0.0, 0.8003], rtol=0, atol=5e-5)


def test_prop_3_2_bundled_keeps_no_decode_backlog():
    m = reference_model()
    bundled, separate = fluid.solve_bundled(m), fluid.solve_separate(m)
    assert bundled.solo_efficient and m.kappa >= 15 / 16
    np.testing.assert_array_equal(bundled.q_d, 0.0)
    assert separate.q_d.sum() > 0.5  # separate pricing keeps a decode backlog (Fig. 2)
    assert separate.revenue > bundled.revenue


@pytest.mark.parametrize("pricing", fluid.PRICINGS)
@pytest.mark.parametrize("make", [reference_model, lambda: scenarios.load("paper-qwen8b"),
                                  lambda: scenarios.load("dolly-8class"), lambda: tiny(1.0),
                                  lambda: tiny(10.0), two_class])
def test_plans_are_feasible_and_dual_optimal(make, pricing):
    m = make()
    plan = fluid.solve(m, pricing)
    assert_feasible(m, plan)
    assert_dual_optimal(m, plan)
    assert plan.objective == pytest.approx(plan.revenue, rel=1e-12)
    assert plan.sli_duals == {}


# ---- hand-solved one-class cases ----------------------------------------------------------------
def test_tiny_light_load_serves_everything():
    # LP: max 3 (y_m + 2 y_s) s.t. x <= 1, y_m <= x, y_s <= 2 (1-x), 1 - q_p = 2x,
    # 2x - q_d = y_m + 2 y_s. Revenue = 3 (2x - q_d) = 3 (1 - q_p - q_d) <= 3 = w lambda, reached
    # with q_p = q_d = 0, x = 0.5 (room: y_m + 2 y_s <= 0.5 + 2 = 2.5 >= 1).
    plan = fluid.solve_bundled(tiny(1.0))
    assert plan.revenue == pytest.approx(3.0, rel=1e-12)
    assert plan.x == pytest.approx([0.5], rel=1e-12)
    np.testing.assert_allclose([plan.q_p[0], plan.q_d[0]], 0.0, atol=1e-12)
    assert plan.completion_rate(tiny(1.0)) == pytest.approx([1.0], rel=1e-12)


def test_tiny_heavy_load_binds_capacity():
    # lambda = 10: throughput r = y_m + 2 y_s <= x + 4 (1-x) = 4 - 3x and r <= 2x (prefill), so
    # 2x = 4 - 3x: x = 0.8, r = 1.6, R = 3*1.6 = 4.8, y_m = 0.8, y_s = 0.4, q_p = 10 - 1.6 = 8.4.
    # Duals: q_p > 0 so the arrival price u = 0; columns x, y_m, y_s tight:
    #   -1*b_m + 2 b_s - 2 v = 0, b_m + 1*v = 3, b_s + 2 v = 6  =>  v = 1.8, b_m = 1.2, b_s = 2.4;
    #   check 0*1 + 2.4*B(=2) + 0*10 = 4.8 = R.
    plan = fluid.solve_bundled(tiny(10.0))
    assert plan.revenue == pytest.approx(4.8, rel=1e-12)
    np.testing.assert_allclose([plan.x[0], plan.y_m[0], plan.y_s[0], plan.q_p[0], plan.q_d[0]],
                               [0.8, 0.8, 0.4, 8.4, 0.0], rtol=1e-10, atol=1e-12)
    assert plan.duals == pytest.approx({"prefill": 0.0, "mixed": 1.2, "solo": 2.4}, abs=1e-9)
    np.testing.assert_allclose(plan.flow_duals["arrival"], [0.0], atol=1e-9)
    np.testing.assert_allclose(plan.flow_duals["decode"], [1.8], rtol=1e-9)


def test_infeasible_lp_raises():
    with pytest.raises(FluidError, match="infeasible"):  # no abandonment, lambda = 2x > 2
        fluid.solve_bundled(tiny(10.0, theta=[0.0]))
    with pytest.raises(FluidError, match="infeasible"):
        fluid.solve(tiny(10.0, theta=[0.0]), sli=SLI(tpot=1.0))


# ---- mixed GPUs ---------------------------------------------------------------------------------
def test_mixed_gpus_rounding_is_robust():
    plan = fluid.solve_bundled(reference_model())
    assert plan.mixed_gpus(500) == 107  # 500 * (0.01826053 + 0.19495312) = 106.61 -> 107

    def with_sum(total):
        return dataclasses.replace(plan, x=np.array([0.1, total - 0.1]))

    assert with_sum(0.1060000000001).mixed_gpus(1000) == 106  # 106.0000000001: round-off
    assert with_sum(0.1061).mixed_gpus(1000) == 107
    assert with_sum(1.0 + 1e-13).mixed_gpus(7) == 7  # clipped into [0, n]
    assert with_sum(0.1).mixed_gpus(1) == 1
    for bad in (0, -3, 2.5, True, "5"):
        with pytest.raises(ValueError, match="n = "):
            plan.mixed_gpus(bad)


# ---- SLI-aware LP (Sec. 5) ----------------------------------------------------------------------
def test_loose_sli_targets_reproduce_the_unconstrained_lp():
    m = reference_model()
    base = fluid.solve_bundled(m)
    for sli in (SLI(), SLI(prefill_fairness=1.0, decode_fairness=100.0, tpot=1.0),
                SLI(prefill_fairness=0.0, decode_fairness=0.0, tpot=0.022, penalty=True,
                    weights={"prefill_fairness": 0.0, "decode_fairness": 0.0, "tpot": 0.0})):
        plan = fluid.solve(m, sli=sli)
        assert plan.revenue == pytest.approx(base.revenue, rel=1e-9)
        np.testing.assert_array_equal(plan.q_d, 0.0)
        assert_feasible(m, plan)
        assert all(v == pytest.approx(0.0, abs=1e-9) for v in plan.sli_duals.values())
    assert set(fluid.solve(m, sli=SLI(tpot=1.0)).sli_duals) == {"tpot"}


def test_prefill_fairness_hand_checked_two_classes():
    # max 2 x1 + 1.5 x2 s.t. x1 + x2 <= 1, x1 - x2 <= eta (decode room is slack): the vertex is
    # x = ((1+eta)/2, (1-eta)/2), R = 1 + eta + 0.75 (1-eta) = 1.75 + 0.25 eta; duals: capacity
    # 1.75, fairness 0.25 (x1: y + f = 2, x2: y - f = 1.5). Unconstrained: x = (1, 0), R = 2.
    m = two_class()
    assert fluid.solve_bundled(m).revenue == pytest.approx(2.0, rel=1e-12)
    for eta in (0.0, 0.5, 0.9):
        plan = fluid.solve(m, sli=SLI(prefill_fairness=eta))
        assert plan.revenue == pytest.approx(1.75 + 0.25 * eta, rel=1e-10)
        np.testing.assert_allclose(plan.x, [(1 + eta) / 2, (1 - eta) / 2], rtol=1e-10, atol=1e-12)
        assert plan.sli_duals["prefill_fairness"] == pytest.approx(0.25, rel=1e-9)
        assert plan.sli["prefill_fairness"] == pytest.approx(eta, abs=1e-12)
        # Strong duality with the SLI row: 1.75*1 + 0*B + 0.lambda + 0.25*eta = R.
        dual_objective = (plan.duals["prefill"] + plan.duals["solo"] * 11.0
                          + plan.flow_duals["arrival"] @ m.lambda_
                          + plan.sli_duals["prefill_fairness"] * eta)
        assert dual_objective == pytest.approx(plan.revenue, rel=1e-9)


def test_prefill_fairness_penalty_hand_checked():
    # Objective 2 x1 + 1.5 x2 - weight * max(0, (x1 - x2) - 0.5): a spread above 0.5 earns 0.25
    # per unit, so weight 0.1 keeps x = (1, 0) (objective 2 - 0.1*0.5 = 1.95) and weight 1 stops
    # at the target (R = 1.75 + 0.25*0.5 = 1.875).
    m = two_class()
    soft = fluid.solve(m, sli=SLI(prefill_fairness=0.5, penalty=True,
                                  weights={"prefill_fairness": 0.1}))
    assert (soft.revenue, soft.objective) == pytest.approx((2.0, 1.95), rel=1e-10)
    assert soft.sli_duals == {}
    hard = fluid.solve(m, sli=SLI(prefill_fairness=0.5, penalty=True))
    assert (hard.revenue, hard.objective) == pytest.approx((1.875, 1.875), rel=1e-10)


def test_tpot_hand_checked_one_class():
    # TPOT = [tau (B-1) X + (B/gamma)(1-X)] / [(B-1) X + B (1-X)] = 0.5 / (2 - X) here, from
    # 1/gamma = 0.25 at X = 0 to tau = 0.5 at X = 1; eta = 0.3125 = 0.5/1.6 allows X <= 0.4.
    # Decode room 4 - 3*0.4 = 2.8 >= 2*0.4, so R = w mu_p X = 6*0.4 = 2.4. Shadow price:
    # dR/deta = 6 * dX/deta = 6 * 0.5/eta^2 = 6 * 5.12 = 30.72.
    m = tiny(10.0)
    plan = fluid.solve(m, sli=SLI(tpot=0.3125))
    assert plan.revenue == pytest.approx(2.4, rel=1e-10)
    assert plan.sum_x == pytest.approx(0.4, rel=1e-10)
    assert plan.sli["tpot"] == pytest.approx(0.3125, rel=1e-12)
    assert plan.sli_duals["tpot"] == pytest.approx(30.72, rel=1e-9)
    # Strong duality: the multiplied-out row [tau - 2/4 + eta] X <= 2 (eta - 1/4) has dual
    # 30.72 / (B - X) = 30.72/1.6 = 19.2 and rhs 2*0.0625 = 0.125; 19.2*0.125 = 2.4 = R (the
    # capacities are slack and q_p > 0 makes arrivals worthless).
    assert plan.sli_duals["tpot"] / (2.0 - plan.sum_x) * 0.125 == pytest.approx(2.4, rel=1e-9)
    assert max(plan.duals.values()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(FluidError, match="tpot target 0.2 cannot be met") as err:
        fluid.solve(m, sli=SLI(tpot=0.2))
    assert err.value.constraint == "tpot" and err.value.smallest == pytest.approx(0.25, rel=1e-12)


def test_tpot_penalty_hand_checked_one_class():
    # Objective 6 X - 27 * max(0, 0.5/(2-X) - 0.3125): stationary where 6 = 27*0.5/(2-X)^2,
    # (2-X)^2 = 2.25, X = 0.5 (inside [0.4, 0.8]); R = 3.0, TPOT = 1/3, excess 1/48 = 0.0208333,
    # objective = 3 - 27/48 = 2.4375.
    plan = fluid.solve(tiny(10.0), sli=SLI(tpot=0.3125, penalty=True, weights={"tpot": 27.0}))
    assert plan.sum_x == pytest.approx(0.5, rel=1e-8)
    assert (plan.revenue, plan.objective) == pytest.approx((3.0, 2.4375), rel=1e-8)
    with pytest.raises(FluidError, match="gamma\\*tau >= 1"):  # TPOT concave: not an LP
        fluid.solve(tiny(10.0, gamma=1.0), sli=SLI(tpot=0.6, penalty=True))


def test_tpot_penalty_limits_on_the_paper_instance():
    # Weight 0 gives the unconstrained LP; a weight far above the hard shadow price (~9e4 per
    # second of TPOT) meets the target exactly; in between the objective pays for the excess.
    m = reference_model()
    base = fluid.solve_bundled(m)
    hard = fluid.solve(m, sli=SLI(tpot=0.024))
    assert hard.sli_duals["tpot"] < 1e5
    free = fluid.solve(m, sli=SLI(tpot=0.024, penalty=True, weights={"tpot": 0.0}))
    assert free.revenue == pytest.approx(base.revenue, rel=1e-10)
    paid = fluid.solve(m, sli=SLI(tpot=0.024, penalty=True, weights={"tpot": 1e4}))
    assert paid.revenue == pytest.approx(base.revenue, rel=1e-10)
    assert paid.objective == pytest.approx(base.revenue - 1e4 * (base.sli["tpot"] - 0.024),
                                           rel=1e-10)
    strict = fluid.solve(m, sli=SLI(tpot=0.024, penalty=True, weights={"tpot": 1e6}))
    assert strict.revenue == pytest.approx(hard.revenue, rel=1e-9)
    assert strict.sli["tpot"] == pytest.approx(0.024, rel=1e-9)


@pytest.mark.parametrize("sli", [SLI(prefill_fairness=0.01), SLI(decode_fairness=0.5),
                                 SLI(tpot=0.0235), SLI(prefill_fairness=0.02, tpot=0.024),
                                 SLI(prefill_fairness=0.01, decode_fairness=0.5, penalty=True,
                                     weights={"prefill_fairness": 1e3})])
def test_sli_plans_are_feasible_on_eight_classes(sli):
    m = scenarios.load("dolly-8class")
    base = fluid.solve_bundled(m)
    plan = fluid.solve(m, sli=sli)
    assert_feasible(m, plan)
    np.testing.assert_array_equal(plan.q_d, 0.0)
    assert plan.objective <= plan.revenue + 1e-9 <= base.revenue + 2e-9
    if not sli.penalty:
        for name, eta in sli.targets.items():
            assert plan.sli[name] <= eta + 1e-9


def test_prefill_fairness_on_the_paper_instance():
    # eta_1 = 0: x1 = x2 and x1 <= lambda1/mu_p1, so class 2 prefills mu_p2 x1 = 0.5 P1/P2 = 0.05
    # jobs/s: R = 230*0.5 + 380*0.05 = 115 + 19 = 134. Each unit of eta lets class 2 prefill
    # mu_p2 more jobs worth w2: shadow price w2 mu_p2 = 380*2.5647191 = 974.593 (while the
    # decode capacity is slack).
    m = reference_model()
    rows = fluid.frontier(m, "prefill_fairness", [0.0, 0.05, 0.1])
    assert rows[0]["revenue"] == pytest.approx(134.0, rel=1e-10)
    for row in rows:
        assert row["shadow_price"] == pytest.approx(380 * m.mu_p[1], rel=1e-9)
        assert row["revenue"] == pytest.approx(134.0 + 380 * m.mu_p[1] * row["value"], rel=1e-9)


def test_prefill_fairness_is_steeper_than_decode_fairness():
    # Fig. 8. Independent solve (docs/model.md Sec. 8): decode fairness 297.7 -> 257.4 as eta_2 goes
    # 4 -> 0; this LP gives 257.3996 at eta_2 = 0 against 134.0 at eta_1 = 0.
    m = reference_model()
    r_star = fluid.solve_bundled(m).revenue
    decode = fluid.frontier(m, "decode_fairness", [0.0, 4.0])
    prefill = fluid.frontier(m, "prefill_fairness", [0.0, 0.18])
    assert decode[1]["revenue"] == pytest.approx(r_star, rel=1e-9)
    assert prefill[1]["revenue"] == pytest.approx(r_star, rel=1e-9)
    assert abs(decode[0]["revenue"] - 257.4) < 0.05
    assert r_star - prefill[0]["revenue"] > 3 * (r_star - decode[0]["revenue"])


def test_tpot_frontier_rises_sharply_near_one_over_gamma():
    m = reference_model()
    r_star = fluid.solve_bundled(m).revenue
    etas = [0.022, 0.0221, 0.0225, 0.023, 0.024, 0.025]
    rows = fluid.frontier(m, "tpot", etas)
    revenue = [r["revenue"] for r in rows]
    assert revenue[0] == pytest.approx(0.0, abs=1e-9)  # X = 0: nothing is prefilled
    assert np.all(np.diff(revenue) > 0)
    assert revenue[-1] == pytest.approx(r_star, rel=1e-9)  # TPOT at the optimum is 0.024284
    assert revenue[1] < 0.2 * r_star
    assert rows[1]["shadow_price"] > 5 * rows[4]["shadow_price"] > 0
    assert rows[-1]["shadow_price"] == 0.0


@pytest.mark.parametrize("name, eta, h", [("prefill_fairness", 0.1, 1e-4),
                                          ("decode_fairness", 2.0, 1e-3),
                                          ("tpot", 0.023, 1e-7), ("tpot", 0.0221, 1e-8)])
def test_shadow_price_matches_finite_difference(name, eta, h):
    rows = fluid.frontier(reference_model(), name, [eta - h, eta, eta + h])
    slope = (rows[2]["revenue"] - rows[0]["revenue"]) / (2 * h)
    assert rows[1]["shadow_price"] == pytest.approx(slope, rel=1e-5)


def test_infeasible_fairness_names_the_smallest_value():
    # theta1 = 0 forces x1 = lambda1/mu_p1 = 0.5; x2 <= lambda2/mu_p2 = 0.1/0.5 = 0.2, so the
    # prefill spread is at least 0.3.
    m = two_class(theta=[0.0, 1.0], lambda_=[0.5, 0.1])
    with pytest.raises(FluidError, match="prefill_fairness target 0.1 cannot be met") as err:
        fluid.solve(m, sli=SLI(prefill_fairness=0.1))
    assert err.value.smallest == pytest.approx(0.3, rel=1e-9)
    assert fluid.solve(m, sli=SLI(prefill_fairness=0.3)).sli["prefill_fairness"] == (
        pytest.approx(0.3, rel=1e-9))


def test_infeasible_tpot_on_the_paper_instance():
    with pytest.raises(FluidError, match="tpot target 0.02 cannot be met.*0.022") as err:
        fluid.solve(reference_model(), sli=SLI(tpot=0.02))
    assert err.value.smallest == pytest.approx(0.022, rel=1e-12)


# ---- invalid inputs and the CLI summary ---------------------------------------------------------
def test_invalid_inputs_raise():
    m = tiny(1.0)
    with pytest.raises(ValueError, match="pricing = 'flat'.*bundled.*separate"):
        fluid.solve(m, "flat")
    with pytest.raises(ValueError, match="pricing"):
        fluid.solve(m, "separate", sli=SLI(tpot=1.0))
    with pytest.raises(TypeError, match="sli"):
        fluid.solve(m, sli={"tpot": 1.0})
    with pytest.raises(TypeError, match="penalty"):
        SLI(tpot=1.0, penalty="yes")
    for kwargs, field in (({"tpot": -0.1}, "tpot"),
                          ({"decode_fairness": float("inf")}, "decode_fairness"),
                          ({"prefill_fairness": float("nan")}, "prefill_fairness"),
                          ({"weights": {"latency": 1.0}}, "weights"),
                          ({"weights": {"tpot": -1.0}}, "weights"),
                          ({"tpot": "fast"}, "tpot")):
        with pytest.raises(ValueError, match=f"{field}.*(>= 0|allowed)"):
            SLI(**kwargs)
    with pytest.raises(ValueError, match="sli_name"):
        fluid.frontier(m, "latency", [1.0])
    assert issubclass(FluidError, ValueError)


def test_plan_summary_is_the_cli_json():
    m = reference_model()
    plan = fluid.solve_separate(m)
    summary = plan_summary(m, plan)
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) == {"scenario", "pricing", "revenue", "objective", "penalty",
                            "mixed_fraction", "solo_efficient", "classes", "sli", "duals"}
    assert summary["pricing"] == "separate" and type(summary["revenue"]) is float
    assert summary["mixed_fraction"] == pytest.approx(plan.sum_x)
    assert [c["name"] for c in summary["classes"]] == ["decode-heavy", "prefill-heavy"]
    assert set(summary["classes"][1]) == {"name", "x", "y_mixed", "y_solo", "q_prefill",
                                          "q_decode"}
    assert summary["classes"][1]["q_decode"] == pytest.approx(0.8003, abs=5e-5)
    assert set(summary["sli"]) == set(fluid.SLI_NAMES)
    assert set(summary["duals"]) == {"prefill", "mixed", "solo"}
    with pytest.raises(ValueError, match="classes"):
        plan_summary(scenarios.load("dolly-8class"), plan)


def test_optimum_ranges_hand_checked_one_class():
    # Light load (see test_tiny_light_load_serves_everything): R = 3 needs q_p = q_d = 0, hence
    # x = 0.5, and decode throughput y_m + 2 y_s = 1 with y_m <= x = 0.5 and y_s <= 2(1-x) = 1:
    # every y_m in [0, 0.5] with y_s = (1 - y_m)/2 in [0.25, 0.5] is optimal. Not unique.
    light = fluid.optima(tiny(1.0))
    assert not light.unique()
    assert (light.low["x"][0], light.high["x"][0]) == pytest.approx((0.5, 0.5), abs=1e-6)
    assert (light.low["y_m"][0], light.high["y_m"][0]) == pytest.approx((0.0, 0.5), abs=1e-6)
    assert (light.low["y_s"][0], light.high["y_s"][0]) == pytest.approx((0.25, 0.5), abs=1e-6)
    # Heavy load: capacity binds at the vertex x = 0.8, y_m = 0.8, y_s = 0.4: the only optimum.
    assert fluid.optima(tiny(10.0)).unique()
    # A soft TPOT target: the penalized objective is strictly concave around X = 0.5
    # (test_tpot_penalty_hand_checked_one_class), so X is unique; the decodes 2X = 1 per second
    # again split freely: y_m in [0, X] = [0, 0.5], y_s = (1 - y_m)/2 <= 2(1 - X) = 1.
    soft = fluid.optima(tiny(10.0), sli=SLI(tpot=0.3125, penalty=True, weights={"tpot": 27.0}))
    assert (soft.low["sum_x"], soft.high["sum_x"]) == pytest.approx((0.5, 0.5), abs=1e-9)
    assert (soft.low["y_m"][0], soft.high["y_m"][0]) == pytest.approx((0.0, 0.5), abs=1e-6)
    assert (soft.low["y_s"][0], soft.high["y_s"][0]) == pytest.approx((0.25, 0.5), abs=1e-6)
    assert not soft.unique()


def test_the_paper_lp_optimum_is_not_unique_and_penalties_pick_other_vertices():
    # Revenue counts decode completions mu_m y_m + mu_s y_s, which the decode balance fixes:
    # how the decodes split between mixed and solo slots is free within the capacities, so the
    # plain LP and the q_d = 0 LP of a penalized solve return different vertices at one R*.
    m = scenarios.load("paper-qwen8b")
    plain = fluid.solve(m)
    penalized = fluid.solve(m, sli=SLI(tpot=0.021, penalty=True))
    assert penalized.revenue == pytest.approx(plain.revenue, rel=1e-12)
    ranges = fluid.optima(m)
    assert not ranges.unique()
    assert np.max(ranges.spread("y_m")) > 3.0  # y_m of one class from 0 to 3.198
    np.testing.assert_allclose(ranges.spread("x"), 0.0, atol=1e-6)  # the gate's targets are not


def test_penalty_terms_add_up_to_the_objective():
    # Hand-checked above: weight 0.1 keeps x = (1, 0), spread 1 against the target 0.5.
    m = two_class()
    sli = SLI(prefill_fairness=0.5, penalty=True, weights={"prefill_fairness": 0.1})
    plan = fluid.solve(m, sli=sli)
    terms = fluid.penalty_terms(plan, sli)
    assert terms["prefill_fairness"] == pytest.approx(
        {"value": 1.0, "target": 0.5, "excess": 0.5, "weight": 0.1, "penalty": 0.05}, rel=1e-9)
    assert plan.penalty == pytest.approx(0.05, rel=1e-9)
    assert plan.objective == pytest.approx(plan.revenue - plan.penalty, rel=1e-12)
    # The paper instance's TPOT cannot go below 1/gamma = 0.022 s: a target of 0.021 is
    # violated by any plan; with weight 1 the penalty (3.3e-3) leaves the plan unchanged.
    paper = scenarios.load("paper-qwen8b")
    soft = SLI(tpot=0.021, penalty=True)
    tpot = fluid.penalty_terms(fluid.solve(paper, sli=soft), soft)["tpot"]
    assert tpot["excess"] == pytest.approx(fluid.solve(paper).sli["tpot"] - 0.021, rel=1e-9)
    assert fluid.smallest(paper, "tpot") == pytest.approx(0.022, rel=1e-12)
