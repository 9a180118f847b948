"""Exact gradients of small chains (jaxqueue.exact_gradient): the generic stationary gradient
against differences of the full stationary solution and against Erlang-A, the gated chain
against differences of its own revenue and against the simulator, the mixture over roundings,
the directions the gradient can take, and the SLI chain (differences and a chain solved by
hand)."""

import functools

import jax
import numpy as np
import pytest
from helpers import z_scores
from scipy import stats as sps

import jaxqueue as jq
from jaxqueue import fluid, stats, theory
from jaxqueue.exact_gradient import (
    gated_chain,
    gated_gradient,
    gated_revenue,
    revenue_gradient,
    rounding_law,
    sli_gradient,
    stationary_gradient,
)
from jaxqueue.model import Model
from jaxqueue.policies import tunable


def small_model(lambda_=(0.4, 0.25)):
    """tests/test_tune.py's tiny model at lower load: tau = alpha = 1, C = 1, so mu_p = 1/P =
    (2, 1), mu_m = 1/D = 0.5, mu_s = gamma/D = 0.75, B = 2, w = c_p P + c_d D = (1.5, 2)."""
    return Model(lambda_=lambda_, theta=(2.0, 1.5), P=(0.5, 1.0), D=(2.0, 2.0), alpha=1.0,
                 beta=0.0, gamma=1.5, C=1.0, B=2, c_p=1.0, c_d=0.5, name="small")


def central(f, x, h):
    """Central differences of a scalar function of a vector, one coordinate at a time."""
    x = np.asarray(x, np.float64)
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.size)])


# ---- the generic gradient -----------------------------------------------------------------------
def _dense_value(rows, cols, size, q, r):
    """pi r, pi from the dense system [Q^T; 1] pi = [0; 1] (slow, obviously right)."""
    Q = np.zeros((size, size))
    np.add.at(Q, (rows, cols), q)
    Q -= np.diag(Q.sum(axis=1))
    a = np.vstack([Q.T, np.ones(size)])
    pi = np.linalg.lstsq(a, np.r_[np.zeros(size), 1.0], rcond=None)[0]
    return pi @ r


@pytest.mark.parametrize("method", ["lu", "iterative"])
def test_generic_gradient_equals_differences_of_the_stationary_solution(method):
    keys = jax.random.split(jax.random.key(0), 6)
    size, extra = 7, 12
    # A ring (irreducible), random extra transitions (self-loops and duplicates included), and a
    # last transition 3 -> 0 whose rate is p_2 itself: 0 at the point, a structural entry.
    rows = np.r_[np.arange(size), np.asarray(jax.random.randint(keys[0], (extra,), 0, size)), 3]
    cols = np.r_[(np.arange(size) + 1) % size,
                 np.asarray(jax.random.randint(keys[1], (extra,), 0, size)), 0]
    a = np.asarray(jax.random.uniform(keys[2], (rows.size - 1,), minval=0.2, maxval=2.0),
                   np.float64)
    b = np.asarray(jax.random.normal(keys[3], (rows.size - 1, 3)), np.float64)
    c = np.asarray(jax.random.normal(keys[4], (size,)), np.float64)
    d = np.asarray(jax.random.normal(keys[5], (size, 3)), np.float64)

    def rates(p):
        return np.r_[a * np.exp(b @ p), p[2]]

    def reward(p):
        return c + d @ p + 0.5 * p[0] ** 2

    for p in ([0.3, -0.2, 0.0], [0.1, 0.4, 0.7]):
        out = stationary_gradient(rows, cols, size, rates, reward, p, method=method)
        value = _dense_value(rows, cols, size, rates(np.array(p)), reward(np.array(p)))
        fd = central(lambda x: _dense_value(rows, cols, size, rates(x), reward(x)), p, 1e-6)
        assert out["value"] == pytest.approx(value, rel=1e-10)
        assert np.all(np.abs(fd) > 1e-3)  # every direction moves the reward
        np.testing.assert_allclose(out["grad"], fd, rtol=1e-6, atol=1e-9)


def test_erlang_a_derivatives_in_the_arrival_and_patience_rates():
    N, mu, K = 3, 1.0, 80  # truncated at 80 in system: the tail is far below 1e-15
    k = np.arange(K + 1)
    rows, cols = np.r_[k[:-1], k[1:]], np.r_[k[1:], k[:-1]]

    def rates(p):
        lam, theta = p
        return np.r_[np.full(K, lam), mu * np.minimum(k[1:], N) + theta * (k[1:] - N).clip(0)]

    queue = (k - N).clip(0).astype(float)
    for lam, theta in ((2.5, 0.5), (4.0, 1.5)):
        mean_q = stationary_gradient(rows, cols, K + 1, rates, lambda p: queue, [lam, theta])
        # The abandonment probability theta E[Q] / lam: a reward that depends on p.
        aband = stationary_gradient(rows, cols, K + 1, rates, lambda p: p[1] * queue / p[0],
                                    [lam, theta])
        for out, key in ((mean_q, "mean_queue"), (aband, "abandon_probability")):
            exact = theory.erlang_a(N, lam, mu, theta)[key]
            fd = central(lambda x, key=key: theory.erlang_a(N, x[0], mu, x[1])[key],
                         [lam, theta], 1e-5)
            assert out["value"] == pytest.approx(exact, rel=1e-10)
            np.testing.assert_allclose(out["grad"], fd, rtol=1e-6)
    # Closed form at theta = mu: every job in system leaves at rate mu, so K ~ Poisson(lam / mu)
    # (the M/M/inf queue) and d/da E[(K - N)^+] = E[(K + 1 - N)^+ - (K - N)^+] = P(K >= N) for
    # K ~ Poisson(a): dE[Q]/dlam = P(K >= N) / mu.
    out = stationary_gradient(rows, cols, K + 1, rates, lambda p: queue, [2.0, mu])
    assert out["grad"][0] == pytest.approx(sps.poisson.sf(N - 1, 2.0) / mu, rel=1e-9)


# ---- the gated chain ----------------------------------------------------------------------------
def test_gated_chain_gradient_equals_differences_of_its_revenue():
    # Slack and caps binding (K_s = 0, K_c = (1, 2) with M = 2), every chain parameter.
    model, n, M = small_model(), 4, 2
    t, offset, T = np.array([1.0, 0.6]), 0.5, 1.0
    kw = dict(slack_jobs=0, cap_jobs=(1, 2), max_queue=2, max_buffer=1)
    out = gated_chain(model, n, M, t, offset, T, **kw)
    g = out["grad"]
    got = np.r_[g["log_targets"], g["offset"], g["log_temperature"], g["lambda_"], g["theta"]]

    def revenue(z):
        m = model.replace(lambda_=z[4:6], theta=z[6:8])
        return gated_chain(m, n, M, np.exp(z[:2]), z[2], np.exp(z[3]), **kw)["revenue"]

    fd = central(revenue, np.r_[np.log(t), offset, np.log(T), model.lambda_, model.theta], 1e-5)
    assert np.all(np.abs(fd) > 1e-5), fd
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-10)
    assert out["num_states"] < 2000 and 0 < out["truncation"] < 0.1
    lv = out["levels"]
    assert np.all(lv["x"] > 0) and lv["x"][0] <= 1 / n + 1e-12  # K_c,1 = 1: one class-1 prefill
    # The older entry points are this chain with slack and caps that never bind; the previous
    # implementation (its own enumeration, checked against simulation) gave 0.80738022685399
    # and, by central differences, (7.4892e-4, -1.38163e-3, 5.2597e-4).
    plain = gated_chain(model, n, M, t, offset, T, max_queue=3, max_buffer=2)
    old = gated_revenue(model, n, M, t, offset, T, max_queue=3, max_buffer=2)
    assert old["revenue"] == plain["revenue"] and np.all(old["x"] == plain["levels"]["x"])
    assert old["revenue"] == pytest.approx(0.80738022685399, rel=1e-12)
    np.testing.assert_allclose(revenue_gradient(model, n, M, t, offset, T, max_queue=3,
                                                max_buffer=2),
                               [7.4892e-4, -1.38163e-3, 5.2597e-4], rtol=2e-4)


def _simulate_gated(model, n, targets, offset, share, slack, caps, T):
    params = tunable.GatedParams(targets=np.asarray(targets), offset=np.float64(offset),
                                 share=np.float64(share), slack=np.float64(slack),
                                 caps=np.asarray(caps, np.float64))
    system, _ = tunable.build_family("gated", model, n, plan=fluid.solve(model, "bundled"),
                                     params=params, gate_temperature=T)
    run = jq.simulate(jax.random.key(4), system, reps=64, horizon=1500.0, warmup=50.0)
    return system, stats.per_gpu(run, model, n)


def _assert_agree(q, exact):
    assert abs(z_scores(q["revenue_bundled"], exact["revenue"])) < 4
    for k, name in (("x", "x"), ("y_m", "y_mixed"), ("y_s", "y_solo"), ("q_p", "q_prefill")):
        assert np.all(np.abs(z_scores(q[name], exact["levels"][k])) < 4), name


def test_gated_revenue_matches_simulation():
    # Slack and caps never bind (n slack = n caps = 8 >= M), n share = 2. The simulator rounds
    # n share once per replication: plainly at random (M = 2), or with the triangular dither
    # when the gate is randomised and it supports it (M = 1, 2, 3 w.p. 1/8, 3/4, 1/8); the
    # exact value is the mixture under the same rounding.
    model, n, targets, offset, T = small_model((0.3, 0.2)), 4, [1.0, 0.6], 0.5, 1.0
    system, q = _simulate_gated(model, n, targets, offset, 0.5, 2.0, [2.0, 2.0], T)
    rounding = "triangular" if getattr(system, "smoothed", False) else "randomised"
    exact = gated_gradient(model, n, targets, offset, 0.5, 2.0, [2.0, 2.0], T,
                           rounding=rounding, max_queue=4, max_buffer=2)
    # These limits move the exact revenue by < 2e-4 (against max_queue = 6, max_buffer = 3),
    # far below the simulation's standard error (about 0.01 with the dither).
    assert exact["truncation"] < 5e-3
    _assert_agree(q, exact)


def test_binding_slack_and_caps_match_simulation():
    # Where the simulator rounds the slack and caps (with the dither), compare with them
    # binding: n slack = 0.4 (K_s in {0, 1}), n caps_1 = 1.6 (K_c,1 in {1, 2, 3}).
    model, n, targets, offset, T = small_model((0.3, 0.2)), 4, [1.0, 0.6], 0.5, 1.0
    share, slack, caps = 0.5, 0.1, [0.4, 2.0]
    system, _ = tunable.build_family("gated", model, n, plan=fluid.solve(model, "bundled"),
                                     gate_temperature=T)
    if not getattr(system, "smoothed", False):
        pytest.skip("this simulator does not round the slack and caps")
    exact = gated_gradient(model, n, targets, offset, share, slack, caps, T, max_queue=4,
                           max_buffer=2)
    assert exact["truncation"] < 5e-3 and exact["grad"]["slack"] != 0
    _, q = _simulate_gated(model, n, targets, offset, share, slack, caps, T)
    _assert_agree(q, exact)


# ---- the mixture over roundings -----------------------------------------------------------------
_TRI = sps.triang(c=0.5, loc=-1.0, scale=2.0)  # U1 - U2


def _law(v, rounding):
    """{k: P(k)} of the integer drawn from v, written independently of rounding_law."""
    if rounding == "randomised":
        low = np.floor(v)
        return {int(low): 1 - (v - low), int(low) + 1: v - low}
    base = int(np.round(v))
    return {k: _TRI.cdf(k + 0.5 - v) - _TRI.cdf(k - 0.5 - v) for k in range(base - 2, base + 3)}


def _mixture(chain, n, share, slack, caps, rounding="triangular"):
    """Expected revenue: every raw outcome (no effective-threshold shortcut), M clamped to
    [0, n], negative thresholds to 0 (as the simulator does)."""
    total = 0.0
    laws = [_law(n * share, rounding), _law(n * slack, rounding)]
    laws += [_law(n * c, rounding) for c in caps]
    for combo in functools.reduce(lambda acc, law: [a + (k,) for a in acc for k in law],
                                  laws, [()]):
        p = np.prod([law[k] for law, k in zip(laws, combo, strict=True)])
        if p > 0:
            ks = tuple(max(k, 0) for k in combo)
            total += p * chain(min(ks[0], n), ks[1], ks[2:])
    return total


def _chains(model, n, t, offset, T, **kw):
    @functools.cache
    def revenue(M, K_s, K_c):
        return gated_chain(model, n, M, t, offset, T, slack_jobs=K_s, cap_jobs=K_c,
                           **kw)["revenue"]
    return revenue


def test_revenue_is_continuously_differentiable_in_the_share():
    model, n, t, offset, T = small_model(), 3, np.array([1.0, 0.6]), 0.5, 1.0
    kw = dict(max_queue=3, max_buffer=2)
    chain = _chains(model, n, t, offset, T, **kw)
    R = {M: chain(M, M, (M, M)) for M in range(n + 1)}  # slack, caps that never bind

    def grad_share(share, rounding="triangular"):
        out = gated_gradient(model, n, t, offset, share, 2.0, [2.0, 2.0], T,
                             rounding=rounding, **kw)
        assert out["revenue"] == pytest.approx(
            _mixture(lambda M, *_: R[M], n, share, 2.0, [2.0, 2.0], rounding), rel=1e-12)
        return out["grad"]["share"]

    # Central differences of the mixture, away from the kinks of the law's density.
    share, h = 0.45, 1e-6
    fd = (_mixture(lambda M, *_: R[M], n, share + h, 2.0, [2.0, 2.0])
          - _mixture(lambda M, *_: R[M], n, share - h, 2.0, [2.0, 2.0])) / (2 * h)
    assert grad_share(share) == pytest.approx(fd, rel=1e-6)
    # Across an integer (n share = 2) and a half-integer (1.5) the derivative is continuous; at
    # the integer it is the central slope n (R(3) - R(1)) / 2.
    eps = 1e-7
    for v in (2.0, 1.5):
        left, right = grad_share(v / n - eps), grad_share(v / n + eps)
        assert left == pytest.approx(right, rel=1e-5, abs=1e-8)
    assert grad_share(2 / n) == pytest.approx(n * (R[3] - R[1]) / 2, rel=1e-9)
    # Plain randomised rounding: the derivative jumps at the integer (revenue is not linear in
    # M here), from n (R(2) - R(1)) on the left to n (R(3) - R(2)) on the right.
    left, right = grad_share(2 / n - 1e-3, "randomised"), grad_share(2 / n, "randomised")
    assert left == pytest.approx(n * (R[2] - R[1]), rel=1e-9)
    assert right == pytest.approx(n * (R[3] - R[2]), rel=1e-9)
    assert abs(left - right) > 0.1 * abs(right)


def test_slack_and_cap_gradients_equal_differences_of_the_mixture():
    # Binding slack and cap of class 1: M in {1, 2}, K_s in {0, 1}, K_c,1 in {0, 1, 2}.
    model, n, t, offset, T = small_model(), 3, np.array([1.0, 0.6]), 0.5, 1.0
    kw = dict(max_queue=3, max_buffer=2)
    share, slack, caps = 0.55, 0.1, np.array([0.25, 2.0])
    out = gated_gradient(model, n, t, offset, share, slack, caps, T, **kw)
    chain = _chains(model, n, t, offset, T, **kw)
    assert out["revenue"] == pytest.approx(_mixture(chain, n, share, slack, caps), rel=1e-10)
    z = np.r_[share, slack, caps]
    fd = central(lambda x: _mixture(chain, n, x[0], x[1], x[2:]), z, 1e-6)
    got = np.r_[out["grad"]["share"], out["grad"]["slack"], out["grad"]["caps"]]
    assert np.all(np.abs(fd[:3]) > 1e-3) and abs(fd[3]) < 1e-8  # cap 2 never binds
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)
    # One solve per effective chain: fewer than the distinct raw thresholds of the mixture.
    assert out["chains"] < chain.cache_info().currsize
    assert sum(o[3] for o in out["outcomes"]) == pytest.approx(1, rel=1e-12)


def test_gradient_directions_with_two_or_more_mixed_gpus():
    # With M = 1 every admission happens at X = 0, where the gate sees only (offset / t_j) / T:
    # scaling (t, offset) by e^s changes nothing, so dR/dlog t1 + dR/dlog t2 + offset dR/doffset
    # = 0 and the gradients at points with one offset lie in a plane. With M = 2 admissions
    # also happen at X = e_j and the three gradients span everything. Scaling t by e^s and T by
    # e^-s changes no probability for any M: dR/dlog t1 + dR/dlog t2 - dR/dlog T = 0.
    model, n, offset, T = small_model((0.8, 0.5)), 4, 0.5, 1.0
    points = ([0.4, 0.9], [2.0, 1.0], [0.5, 0.2])
    for M in (1, 2):
        G, scale = [], []
        for t in points:
            g = gated_chain(model, n, M, t, offset, T, max_queue=2, max_buffer=1)["grad"]
            v = np.r_[g["log_targets"], g["offset"]]
            G.append(v)
            scale.append(v @ np.r_[1.0, 1.0, offset] / np.linalg.norm(v))
            assert abs(v[0] + v[1] - g["log_temperature"]) < 1e-8 * np.linalg.norm(v)
        s = np.linalg.svd(np.array(G), compute_uv=False)
        if M == 1:
            assert np.max(np.abs(scale)) < 1e-7 and s[2] < 1e-7 * s[0]
        else:
            assert np.min(np.abs(scale)) > 0.05 and s[2] > 0.05 * s[0], (scale, s)


# ---- the SLI chain ------------------------------------------------------------------------------
def test_sli_gradient_equals_differences_of_its_revenue():
    model, n, M = small_model(), 3, 2
    t, split, T = np.array([0.4, 0.3]), np.array([0.6, 0.3]), 0.7
    plan = dict(rate_mixed=[0.2, 0.5], rate_solo=[0.6, 0.1], max_queue=2, max_buffer=1)
    out = sli_gradient(model, n, M, t, split, T, **plan)

    def revenue(z):
        m = model.replace(lambda_=z[2:3].tolist() + [model.lambda_[1]])
        return sli_gradient(m, n, M, np.r_[np.exp(z[3]), t[1]], z[:2], T, **plan)["revenue"]

    fd = central(revenue, np.r_[split, model.lambda_[0], np.log(t[0])], 1e-5)
    got = np.r_[out["grad"]["split"], out["grad"]["lambda_"][0], out["grad"]["log_targets"][0]]
    assert np.all(np.abs(fd) > 1e-5), fd
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-10)
    # The prefill side does not see the router: x and q_p do not depend on the split, and with
    # every job sent to the solo side the mixed side stays empty.
    solo = sli_gradient(model, n, M, t, [1.0, 1.0], T, **plan)
    for k in ("x", "q_p"):
        np.testing.assert_allclose(solo["levels"][k], out["levels"][k], rtol=1e-9)
    assert np.all(np.abs(solo["levels"]["y_m"]) < 1e-13)
    assert np.all(np.abs(solo["levels"]["q_dm"]) < 1e-13)


def test_sli_chain_solved_by_hand():
    # One class, n = 2, M = 1, B = 2 (one prefill slot, 2 solo slots), split = 1, no queues
    # (max_queue = max_buffer = 0): an arrival (rate n lambda = 1) finding the prefill slot
    # busy is lost, and so is a job finishing prefill (rate 1) with both solo slots busy; solo
    # decodes complete at rate 1 each. States (X, Ys), a_y = pi(0, y), b_y = pi(1, y):
    #   (0,0): a0 = a1             (1,0): b0 = a0 + b1        (1,2): 3 b2 = a2
    #   (1,1): 2 b1 = a1 + 2 b2    (0,1): 2 a1 = b0 + 2 a2
    # With a0 = 1: a1 = 1, b1 = 1/2 + a2/3, b0 = 3/2 + a2/3, so 2 = 3/2 + 7 a2 / 3 and
    # a2 = 3/14; b = (11/7, 4/7, 1/14); the total is 31/7. So P(X = 1) = 1/2, E[Ys] =
    # (a1 + b1 + 2 (a2 + b2)) / (31/7) = (30/14) / (62/14) = 15/31, and revenue per GPU
    # w mu_s E[Ys] / n = 2 * 15/31 / 2 = 15/31. Jobs are lost in every state with X = 1.
    model = Model(lambda_=(0.5,), theta=(1.0,), P=(1.0,), D=(1.0,), alpha=1.0, beta=0.0,
                  gamma=1.0, C=1.0, B=2, c_p=1.0, c_d=1.0, name="hand")
    out = sli_gradient(model, 2, 1, [0.5], [1.0], 1.0, [1.0], [1.0], max_queue=0,
                       max_buffer=0)
    assert out["revenue"] == pytest.approx(15 / 31, rel=1e-12)
    assert out["levels"]["x"][0] == pytest.approx(1 / 4, rel=1e-12)
    assert out["levels"]["y_s"][0] == pytest.approx(15 / 62, rel=1e-12)
    assert abs(out["levels"]["y_m"][0]) < 1e-14 and out["truncation"] == pytest.approx(0.5)
    # (X, Ym, Ys) in {0, 1} x {0, 1} x {0, 1, 2}: the mixed states stay as structure (the
    # split may move), with probability 0 at split = 1.
    assert out["num_states"] == 12


def test_sli_chain_matches_simulation():
    # Where the simulator's sli-gated family takes a gate temperature: the plan's M and planned
    # rates (here mu_m y_m* = 0 for both classes: a freed mixed slot picks uniformly).
    model, n, t, split, T = small_model((0.3, 0.2)), 3, [0.4, 0.3], [0.6, 0.3], 0.7
    params = tunable.SLIParams(targets=np.array(t), split=np.array(split))
    try:
        system, _ = tunable.build_family("sli-gated", model, n, plan=fluid.solve(model, "bundled"),
                                         params=params, gate_temperature=T)
    except ValueError:
        pytest.skip("this simulator has no randomised gate for the sli-gated family")
    exact = sli_gradient(model, n, int(system.M), t, split, T, np.asarray(system.mixed_rate),
                         np.asarray(system.solo_rate), max_queue=3, max_buffer=2)
    assert int(system.M) == 2 and exact["truncation"] < 0.01  # revenue moves < 2e-4 with 4, 2
    run = jq.simulate(jax.random.key(5), system, reps=64, horizon=1500.0, warmup=50.0)
    _assert_agree(stats.per_gpu(run, model, n), exact)


# ---- input checks -------------------------------------------------------------------------------
def test_bad_input_is_refused_with_the_field_and_its_range():
    m = small_model()
    with pytest.raises(ValueError, match=r"^n = 0 is invalid: must be an integer in \[1"):
        gated_chain(m, 0, 0, [1.0, 1.0], 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^M = 5 is invalid: must be an integer in \[0, 4\]"):
        gated_chain(m, 4, 5, [1.0, 1.0], 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^targets = .* must be finite, > 0"):
        gated_gradient(m, 4, [1.0, 0.0], 0.0, 0.5, 1.0, [1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match=r"^temperature = 0.0 is invalid: must be finite, > 0"):
        gated_gradient(m, 4, [1.0, 1.0], 0.0, 0.5, 1.0, [1.0, 1.0], 0.0)
    with pytest.raises(ValueError, match=r"^share = 1.5 is invalid: .*<= 1.0"):
        gated_gradient(m, 4, [1.0, 1.0], 0.0, 1.5, 1.0, [1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match=r"^split = .* must be finite, >= 0.0 and <= 1.0"):
        sli_gradient(m, 4, 2, [1.0, 1.0], [0.5, 1.2], 1.0, [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"^rounding = 'up' is invalid: must be one of"):
        rounding_law(1.5, "up")

