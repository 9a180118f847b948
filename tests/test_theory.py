"""Tests of the exact oracles in jaxqueue.theory against closed forms and hand-solved chains."""

import math

import numpy as np
import pytest
from scipy.stats import poisson

from jaxqueue.model import Model
from jaxqueue.theory import POLICIES, _gate, erlang_a, pooled_chain, pooled_stationary


def _model(lambda_, theta, P, D, *, B, gamma=1.0, alpha=1.0):
    # beta = 0, C = 1: tau = alpha, mu_p = 1/(P alpha), mu_m = 1/(D alpha), mu_s = gamma/D.
    return Model(lambda_=lambda_, theta=theta, P=P, D=D, alpha=alpha, beta=0.0, gamma=gamma,
                 C=1.0, B=B, c_p=0.1, c_d=0.2)


def _two_class(B=2):
    # The paper's two classes (Qwen-8B calibration), slowed to a load two small GPUs can carry.
    return Model(lambda_=(0.04, 0.03), theta=(0.5, 0.8), P=(300, 3000), D=(1000, 400),
                 alpha=0.0174, beta=6.2e-5, gamma=45.45, C=256, B=B, c_p=0.1, c_d=0.2)


def _truncated_birth_death(lam, servers, mu, theta, room):
    """M/M/N+M with at most `room` waiting: law of the number in system (plain loop)."""
    w = [1.0]
    for k in range(1, servers + room + 1):
        w.append(w[-1] * lam / (min(k, servers) * mu + max(k - servers, 0) * theta))
    return np.array(w) / sum(w)


# ---- Erlang-A --------------------------------------------------------------------------------
def test_erlang_a_mm1():
    # M/M/1, rho = 0.7: E[K] = rho/(1-rho), E[Q] = rho^2/(1-rho), P(wait) = E[busy] = rho.
    r = erlang_a(1, 0.7, 1.0, 0.0)
    assert r["mean_in_system"] == pytest.approx(0.7 / 0.3, rel=1e-12)
    assert r["mean_queue"] == pytest.approx(0.49 / 0.3, rel=1e-12)
    assert r["wait_probability"] == pytest.approx(0.7, rel=1e-12)
    assert r["mean_busy"] == pytest.approx(0.7, rel=1e-12)
    assert r["abandon_probability"] == 0.0


@pytest.mark.parametrize("servers,lam", [(5, 4.0), (5, 9.0), (500, 520.0)])
def test_erlang_a_theta_equals_mu_is_poisson(servers, lam):
    # theta = mu: every job leaves at rate mu, waiting or not, so K ~ Poisson(lam/mu) (M/M/inf).
    mu = 2.0
    r = erlang_a(servers, lam, mu, mu)
    a = lam / mu
    k = np.arange(0, int(a + 40 * math.sqrt(a) + 50))
    pmf = poisson.pmf(k, a)
    assert r["mean_in_system"] == pytest.approx(a, rel=1e-11)
    assert r["mean_busy"] == pytest.approx(pmf @ np.minimum(k, servers), rel=1e-11)
    assert r["mean_queue"] == pytest.approx(pmf @ np.maximum(k - servers, 0), rel=1e-9, abs=1e-13)
    assert r["wait_probability"] == pytest.approx(poisson.sf(servers - 1, a), rel=1e-9,
                                                  abs=1e-13)


@pytest.mark.parametrize("servers,lam", [(10, 8.0), (50, 49.0), (500, 490.0)])
def test_erlang_a_theta_zero_is_erlang_c(servers, lam):
    # Erlang-B recursion B_k = a B_{k-1} / (k + a B_{k-1}); C = N B / (N - a (1 - B));
    # E[Q] = C a / (N - a) (mu = 1, a = lam).
    a = lam
    b = 1.0
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    c = servers * b / (servers - a * (1 - b))
    r = erlang_a(servers, lam, 1.0, 0.0)
    assert r["wait_probability"] == pytest.approx(c, rel=1e-10)
    assert r["mean_queue"] == pytest.approx(c * a / (servers - a), rel=1e-10)
    assert r["mean_busy"] == pytest.approx(a, rel=1e-10)


@pytest.mark.parametrize("servers,lam,theta", [(1, 3.0, 0.5), (20, 25.0, 0.1), (500, 550.0, 0.3)])
def test_erlang_a_flow_balance(servers, lam, theta):
    r = erlang_a(servers, lam, 1.0, theta)
    p = r["distribution"]
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0, abs=1e-14)
    # Arrivals = service completions + abandonments; E[K] = E[busy] + E[Q].
    assert r["throughput"] + theta * r["mean_queue"] == pytest.approx(lam, rel=1e-12)
    assert r["abandon_probability"] == pytest.approx(1 - r["throughput"] / lam, rel=1e-10)
    assert r["mean_in_system"] == pytest.approx(r["mean_busy"] + r["mean_queue"], rel=1e-14)


def test_erlang_a_no_arrivals():
    r = erlang_a(3, 0.0, 1.0, 0.0)
    assert r["mean_in_system"] == 0 and r["wait_probability"] == 0 and r["num_states"] == 1


@pytest.mark.parametrize("args,field", [
    ((0, 1.0, 1.0, 1.0), "servers"), ((2.5, 1.0, 1.0, 1.0), "servers"),
    ((True, 1.0, 1.0, 1.0), "servers"), ((2, -1.0, 1.0, 1.0), "arrival_rate"),
    ((2, math.inf, 1.0, 1.0), "arrival_rate"), ((2, 1.0, 0.0, 1.0), "service_rate"),
    ((2, 1.0, 1.0, math.nan), "patience_rate"), ((2, 2.0, 1.0, 0.0), "arrival_rate"),
])
def test_erlang_a_rejects_bad_input(args, field):
    with pytest.raises(ValueError, match=field):
        erlang_a(*args)


# ---- pooled chain ----------------------------------------------------------------------------
def _conservation(model, r, rel=1e-9):
    lam = model.lambda_
    prefill = r["prefill_completion_rate"]
    np.testing.assert_allclose(
        prefill + r["prefill_abandonment_rate"] + r["prefill_loss_rate"], lam, rtol=rel)
    np.testing.assert_allclose(
        r["completion_rate"] + r["decode_abandonment_rate"] + r["decode_loss_rate"], prefill,
        rtol=rel)


def test_pooled_hand_solved_n2_m1_b1():
    # One class, n = 2, M = 1, B = 1: one prefill slot, one solo decode slot, no room to wait
    # (max_queue = max_buffer = 0). Rates: arrivals a = n lambda = 1, mu_p = 2, mu_s = 1.
    # States (X, Ys): balance equations
    #   (0,0): a pi00 = s pi01            (1,1): (p + s) pi11 = a pi01
    #   (1,0): p pi10 = a pi00 + s pi11   (0,1): (a + s) pi01 = p (pi10 + pi11)
    # give pi = (00: 1/3, 10: 2/9, 01: 1/3, 11: 1/9). Per GPU (divide by n = 2):
    #   x = (2/9 + 1/9)/2 = 1/6, y_s = (1/3 + 1/9)/2 = 2/9, completions mu_s y_s = 2/9,
    #   prefill completions 2 x = 1/3, decode losses mu_p pi11 / 2 = 1/9,
    #   prefill losses lambda P(X = 1) = 1/2 * 1/3 = 1/6; truncation bites off state 00: 2/3.
    m = _model([0.5], [0.3], P=[0.5], D=[1.0], B=1)
    r = pooled_stationary(m, 2, 1, "fg-sp", max_queue=0)
    assert r["num_states"] == 4
    expected = {"x": 1 / 6, "y_s": 2 / 9, "y_m": 0.0, "q_p": 0.0, "q_d": 0.0,
                "completion_rate": 2 / 9, "prefill_completion_rate": 1 / 3,
                "decode_loss_rate": 1 / 9, "prefill_loss_rate": 1 / 6}
    for key, value in expected.items():
        np.testing.assert_allclose(r[key], [value], rtol=1e-12, atol=1e-15, err_msg=key)
    assert r["truncation_mass"] == pytest.approx(2 / 3, rel=1e-12)
    _conservation(m, r, rel=1e-12)


def test_pooled_prefill_stage_is_erlang_a():
    # The prefill stage never waits on decode (a finished prefill always leaves its slot), so
    # with one class it is M/M/M+M: n lambda arrivals, M servers of rate mu_p, patience theta.
    # n = 3, M = 2, lambda = 1 (3 per second), mu_p = 1, theta = 0.5; the queue cap of 40 cuts
    # a tail of mass ~1e-22.
    m = _model([1.0], [0.5], P=[1.0], D=[1.0], B=1)
    n, M = 3, 2
    r = pooled_stationary(m, n, M, "gate-and-route", x_star=[0.5], max_queue=40, max_buffer=1)
    e = erlang_a(M, n * 1.0, 1.0, 0.5)
    assert n * r["x"][0] == pytest.approx(e["mean_busy"], rel=1e-10)
    assert n * r["q_p"][0] == pytest.approx(e["mean_queue"], rel=1e-10)
    assert n * r["prefill_completion_rate"][0] == pytest.approx(e["throughput"], rel=1e-10)
    assert r["prefill_loss_rate"][0] < 1e-15
    _conservation(m, r)


@pytest.mark.parametrize("policy", POLICIES)
def test_pooled_total_prefill_matches_truncated_erlang_a(policy):
    # Two classes with the same mu_p and theta (different D): whatever the gate picks, the total
    # prefill count is the truncated M/M/2+M/5 birth-death chain with arrivals n sum(lambda) = 3.
    m = _model([0.6, 0.4], [0.5, 0.5], P=[1.0, 1.0], D=[1.0, 3.0], B=1)
    n, M, room = 3, 2, 5
    r = pooled_stationary(m, n, M, policy, x_star=[0.4, 0.3], max_queue=room, max_buffer=1)
    p = _truncated_birth_death(3.0, M, 1.0, 0.5, room)
    k = np.arange(p.size)
    assert n * r["x"].sum() == pytest.approx(p @ np.minimum(k, M), rel=1e-10)
    assert n * r["q_p"].sum() == pytest.approx(p @ np.maximum(k - M, 0), rel=1e-10)
    assert n * r["prefill_loss_rate"].sum() == pytest.approx(3.0 * p[-1], rel=1e-10)
    if policy == "fg-sp":  # FCFS: class labels are independent marks, split as lambda
        np.testing.assert_allclose(r["x"] / r["x"].sum(), [0.6, 0.4], rtol=1e-10)
    _conservation(m, r)


@pytest.mark.parametrize("policy", POLICIES)
def test_pooled_two_class_generator_and_conservation(policy):
    m = _two_class()
    x_star = [0.01826, 0.19495]
    chain = pooled_chain(m, 2, 1, policy, x_star=x_star, max_queue=3)
    q = chain.generator
    np.testing.assert_allclose(np.asarray(q.sum(axis=1)).ravel(), 0.0,
                               atol=1e-12 * np.abs(q.diagonal()).max())
    assert np.all(q.diagonal() < 0) and (q - np.diag(q.diagonal())).min() >= 0
    assert np.all(chain.pi >= -1e-15) and chain.pi.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.abs(chain.pi @ q).max() < 1e-13
    r = pooled_stationary(m, 2, 1, policy, x_star=x_star, max_queue=3)
    assert r["num_states"] == len(chain.states)
    _conservation(m, r)
    for key in ("x", "y_m", "y_s", "q_p", "q_d"):
        assert np.all(r[key] >= 0)
    # Capacities per GPU: sum x <= M/n, sum y_m <= (B-1)M/n, sum y_s <= B(n-M)/n.
    assert r["x"].sum() <= 0.5 and r["y_m"].sum() <= 0.5 and r["y_s"].sum() <= 1.0


def test_pooled_prioritize_favours_larger_d_over_p():
    # Class 1 (D/P = 3.3) is always gated before class 2 (D/P = 0.13): it waits less.
    m = _two_class().replace(lambda_=(0.3, 0.3))
    r = pooled_stationary(m, 2, 1, "prioritize-and-route", max_queue=4, max_buffer=1)
    f = pooled_stationary(m, 2, 1, "fg-sp", max_queue=4, max_buffer=1)
    assert r["q_p"][0] / m.lambda_[0] < f["q_p"][0] / m.lambda_[0]
    assert r["q_p"][1] > f["q_p"][1]


def test_gate_rules():
    n, x_star, q_star, ratio = 2, np.array([0.1, 0.2]), np.zeros(2), np.array([3.0, 1.0])
    # X = (0, 0): xi = (-2, -2) tie; larger queue deviation wins, then the lower index.
    assert _gate("gate-and-route", (0, 0), (1, 3), n, x_star, q_star, ratio) == 1
    assert _gate("gate-and-route", (0, 0), (2, 2), n, x_star, q_star, ratio) == 0
    # X = (1, 1): xi = (1/0.1 - 2, 1/0.2 - 2) = (8, 3): class 2 is further below its target.
    assert _gate("gate-and-route", (1, 1), (5, 1), n, x_star, q_star, ratio) == 1
    # x_j* = 0 means xi = +inf: admitted only when no other class waits.
    zero = np.array([0.0, 0.2])
    assert _gate("gate-and-route", (0, 5), (9, 1), n, zero, q_star, ratio) == 1
    assert _gate("gate-and-route", (0, 5), (9, 0), n, zero, q_star, ratio) == 0
    # Only waiting classes are eligible; prioritize picks the largest D/P; fg-sp the head.
    assert _gate("prioritize-and-route", (0, 0), (0, 2), n, None, None, ratio) == 1
    assert _gate("prioritize-and-route", (0, 0), (1, 2), n, None, None, ratio) == 0
    assert _gate("fg-sp", (0, 0), (1, 0, 0), n, None, None, ratio) == 1


@pytest.mark.parametrize("kwargs,field", [
    (dict(n=0, M=0, policy="fg-sp"), "n"),
    (dict(n=2, M=3, policy="fg-sp"), "M"),
    (dict(n=2, M=-1, policy="fg-sp"), "M"),
    (dict(n=2, M=1, policy="fcfs"), "policy"),
    (dict(n=2, M=1, policy="gate-and-route"), "x_star"),
    (dict(n=2, M=1, policy="gate-and-route", x_star=[0.1]), "x_star"),
    (dict(n=2, M=1, policy="gate-and-route", x_star=[0.1, 0.2], q_p_star=[1.0]), "q_p_star"),
    (dict(n=2, M=1, policy="fg-sp", max_queue=-1), "max_queue"),
    (dict(n=2, M=1, policy="fg-sp", max_states=10), "max_states"),
])
def test_pooled_rejects_bad_input(kwargs, field):
    with pytest.raises(ValueError, match=field):
        pooled_stationary(_two_class(), **kwargs)


def test_pooled_rejects_reducible_chain():
    # No prefill slot (M = 0) and no patience: arrivals pile up in the queue and never leave.
    m = _model([0.5], [0.0], P=[1.0], D=[1.0], B=1)
    with pytest.raises(ValueError, match="irreducible"):
        pooled_stationary(m, 1, 0, "fg-sp", max_queue=2)



def test_stationary_power_iteration_agrees_with_a_direct_solve(monkeypatch):
    # 3,162 states: above the size where stationary() tries its damped Jacobi iteration first.
    # It must converge within its budget and give the law of a direct LU of the balance
    # equations (pi_0 = 1, as stationary() writes them); so must stationary()'s fallback path,
    # taken when the iteration gets no budget.
    import scipy.sparse.linalg as sla

    from jaxqueue import theory

    chain = pooled_chain(_two_class(), 2, 1, "fg-sp", max_queue=3)
    q = chain.generator
    assert q.shape[0] > theory._POWER_MIN
    qt = q.T.tocsc()
    direct = np.ones(q.shape[0])
    direct[1:] = sla.spsolve(qt[1:, 1:].tocsc(), -qt[1:, 0].toarray().ravel())
    direct /= direct.sum()
    power = theory._power(q, 1e-15 * np.max(-q.diagonal()))
    assert power is not None
    np.testing.assert_array_equal(chain.pi, power)
    assert np.abs(power - direct).sum() < 1e-9
    monkeypatch.setattr(theory, "_POWER_WORK", 0.0)
    assert np.abs(theory.stationary(q) - direct).sum() < 1e-9
