"""Tests of scripts/eventsim.py, the event-list simulator of pooled Gate-and-Route.

The default tests check the simulator against exact results it was not derived from:

- the prefill buffer of a one-class cluster is an M/M/N+G queue (N = M prefill slots), and so is
  the decode buffer when prefills are instantaneous and both decode speeds are equal: their
  abandonment probabilities against the exact formula of Baccelli and Hebuterne (1981), written
  here from its derivation (level crossings of the offered wait), for exponential (Erlang-A),
  deterministic and lognormal patience;
- the router with unequal solo and mixed speeds, and the gate with two classes (deviations and
  both tie-breaks), against the stationary law of their continuous-time Markov chains, solved
  here as linear systems.

Each comparison allows 3 standard errors (replications with fixed seeds, so the outcome does not
change from run to run). The slow tests compare the simulator with jaxqueue's Gate-and-Route:
revenues and queues, and end-to-end latencies and decode sides.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, sparse, stats
from scipy.sparse import linalg as splinalg

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("eventsim", ROOT / "scripts" / "eventsim.py")
es = importlib.util.module_from_spec(_spec)
sys.modules["eventsim"] = es
_spec.loader.exec_module(es)


# ---- exact results ----------------------------------------------------------------------------

def mmng_abandon(N: int, lam: float, mu: float, G, H) -> float:
    """Abandonment probability of the M/M/N+G queue (FCFS, patience cdf ``G``,
    ``H(x) = int_0^x (1 - G)``).

    The offered wait V (the wait of a request of infinite patience) is 0 with the probabilities
    pi_j (j < N busy servers, pi_j proportional to (lam/mu)^j / j!) and has density
    f(x) = lam pi_{N-1} exp(lam H(x) - N mu x) on x > 0 (level crossing: V falls at rate 1, and
    jumps up by an Exp(N mu) time at an arrival that would wait, which joins with probability
    1 - G(V)). An arrival sees V's stationary law (PASTA) and abandons iff its patience < V.
    """
    def tail(g):  # int_0^inf g (quad copes with the jump of a deterministic law's G)
        val, _ = integrate.quad(g, 0, np.inf, limit=400)
        return val

    def expo(x):
        return math.exp(lam * H(x) - N * mu * x)

    a = lam / mu
    head = sum(a**j / math.factorial(j) for j in range(N))
    last = a ** (N - 1) / math.factorial(N - 1)
    J = tail(expo)
    abandon = tail(lambda x: G(x) * expo(x))
    pi_last = last / (head + last * lam * J)
    return lam * pi_last * abandon


def mmnd_abandon(N: int, lam: float, mu: float, d: float) -> float:
    """The same for a deterministic patience d, in closed form."""
    a = lam / mu
    head = sum(a**j / math.factorial(j) for j in range(N))
    last = a ** (N - 1) / math.factorial(N - 1)
    r = lam - N * mu
    e = math.exp(r * d)
    J = (e - 1.0) / r + e / (N * mu) if r != 0 else d + 1.0 / (N * mu)
    pi_last = last / (head + last * lam * J)
    return lam * pi_last * e / (N * mu)


def erlang_a_chain(N: int, lam: float, mu: float, theta: float, cap: int = 400) -> float:
    """Erlang-A abandonment probability from its birth-death chain (truncated at cap waiting)."""
    w = [1.0]
    for k in range(1, N + cap + 1):
        w.append(w[-1] * lam / (min(k, N) * mu + max(k - N, 0) * theta))
    w = np.asarray(w) / sum(w)
    queue = sum(max(k - N, 0) * p for k, p in enumerate(w))
    return theta * queue / lam


def stationary(states, transitions):
    """Stationary law of a finite CTMC: ``transitions(s)`` yields (rate, next state)."""
    index = {s: k for k, s in enumerate(states)}
    rows, cols, vals = [], [], []
    for s in states:
        for rate, nxt in transitions(s):
            if rate > 0 and nxt != s:
                rows.append(index[s])
                cols.append(index[nxt])
                vals.append(rate)
    size = len(states)
    q = sparse.csr_matrix((vals, (rows, cols)), shape=(size, size))
    q = q - sparse.diags(np.asarray(q.sum(axis=1)).ravel())
    a = q.T.tolil()
    a[0, :] = np.ones(size)
    b = np.zeros(size)
    b[0] = 1.0
    p = splinalg.spsolve(a.tocsr(), b)
    return dict(zip(states, p, strict=True))


# ---- configurations ---------------------------------------------------------------------------

def one_class(*, n, M, B, lam, theta, mu_p, mu_m, mu_s, x_star=0.5):
    """A one-class cluster; ``lam`` is the total arrival rate (the cluster takes it per GPU)."""
    return es.Cluster(n=n, M=M, B=B, lam=(lam / n,), theta=(theta,), mu_p=(mu_p,),
                      mu_m=(mu_m,), mu_s=(mu_s,), w=(1.0,), x_star=(x_star,), qp_star=(0.0,))


def within(values, exact, k=3.0):
    v = np.asarray(values, np.float64)
    mean, se = v.mean(axis=0), v.std(axis=0, ddof=1) / math.sqrt(v.shape[0])
    assert np.all(np.abs(mean - exact) <= k * se), (mean, exact, se)
    return mean, se


def prefill_abandon_share(res):
    return res.per_rep("abandon_prefill")[:, 0] / res.per_rep("arrivals")[:, 0]


# M/M/3+G formed by the prefill buffer: 3 mixed GPUs (3 prefill slots), decodes fast and
# plentiful (they never queue), arrival rate 3.3, prefill rate 1, mean patience 1.
PREFILL = one_class(n=3, M=3, B=40, lam=3.3, theta=1.0, mu_p=1.0, mu_m=10.0, mu_s=10.0)
RUN = dict(reps=10, horizon=2000.0, warmup=50.0)


# ---- the exact formulas check one another ----------------------------------------------------

def test_formula_is_erlang_a_for_exponential_patience():
    for N, lam, mu, theta in ((3, 3.3, 1.0, 1.0), (5, 4.0, 1.0, 0.3), (10, 12.0, 1.0, 2.0)):
        got = mmng_abandon(N, lam, mu, lambda x, t=theta: -math.expm1(-t * x),
                           lambda x, t=theta: -math.expm1(-t * x) / t)
        assert got == pytest.approx(erlang_a_chain(N, lam, mu, theta), rel=1e-7)


def test_formula_deterministic_closed_form_matches_quadrature():
    N, lam, mu, d = 3, 3.3, 1.0, 1.0
    got = mmng_abandon(N, lam, mu, lambda x: 0.0 if x < d else 1.0, lambda x: min(x, d))
    assert got == pytest.approx(mmnd_abandon(N, lam, mu, d), rel=1e-6)


def test_laws_have_the_model_mean_and_cv():
    rng = np.random.default_rng(3)
    for law in ("exponential", "deterministic", "gamma:0.5", "erlang:20", "lognormal:2",
                "hyperexponential:2"):
        lw = es.parse_law(law)
        draw = lw.sampler(rng, 2.5)
        v = np.asarray([draw() for _ in range(200_000)])
        assert v.mean() == pytest.approx(2.5, rel=0.02 if lw.cv <= 1 else 0.05), law
        assert v.std() / v.mean() == pytest.approx(lw.cv, abs=0.02 + 0.1 * lw.cv), law
        assert v.min() > 0


# ---- the prefill buffer as an M/M/N+G queue ---------------------------------------------------

def test_prefill_buffer_is_erlang_a():
    res = es.replicate(PREFILL, seed=11, ttft=False, **RUN)
    exact = erlang_a_chain(3, 3.3, 1.0, 1.0)
    within(prefill_abandon_share(res), exact)
    # Abandonment is eager, so the measured queue satisfies theta E[Q] = abandonment rate.
    q = res.per_rep("q_p")[:, 0] * PREFILL.n
    within(q, exact * 3.3 / 1.0)
    assert res.per_rep("abandon_decode").sum() == 0


def test_prefill_buffer_deterministic_patience():
    res = es.replicate(PREFILL, seed=12, ttft=False, patience=es.Law("deterministic"), **RUN)
    exact = mmnd_abandon(3, 3.3, 1.0, 1.0)
    assert abs(exact - erlang_a_chain(3, 3.3, 1.0, 1.0)) > 0.02  # the law matters here
    within(prefill_abandon_share(res), exact)


def test_prefill_buffer_lognormal_patience():
    cv, mean = 2.0, 1.0
    s2 = math.log1p(cv**2)
    m, s = math.log(mean) - s2 / 2, math.sqrt(s2)

    def G(x):
        return 0.0 if x <= 0 else float(stats.norm.cdf((math.log(x) - m) / s))

    def H(x):  # E[min(patience, x)]
        if x <= 0:
            return 0.0
        partial = math.exp(m + s2 / 2) * stats.norm.cdf((math.log(x) - m - s2) / s)
        return float(partial + x * (1.0 - G(x)))

    res = es.replicate(PREFILL, seed=13, ttft=False, patience=es.parse_law("lognormal:2"),
                       **RUN)
    within(prefill_abandon_share(res), mmng_abandon(3, 3.3, 1.0, G, H))


# ---- the decode buffer as an M/M/N+G queue ----------------------------------------------------

def test_decode_buffer_deterministic_patience():
    # Instantaneous prefills (rate 1e6) pass the Poisson arrivals on; equal decode speeds make
    # the M (B - 1) + (n - M) B = 2 + 3 decode slots one pool of 5 servers.
    cl = one_class(n=2, M=1, B=3, lam=5.5, theta=1.0, mu_p=1e6, mu_m=1.0, mu_s=1.0)
    res = es.replicate(cl, seed=21, ttft=False, patience=es.Law("deterministic"), reps=10,
                       horizon=1000.0, warmup=50.0)
    arrivals = res.per_rep("arrivals")[:, 0]
    within(res.per_rep("abandon_decode")[:, 0] / arrivals, mmnd_abandon(5, 5.5, 1.0, 1.0))
    assert res.per_rep("abandon_prefill").sum() == 0


def test_router_with_unequal_speeds_matches_its_chain():
    # 3 solo slots at rate 1.5, 2 mixed at 0.6; the router fills solo first, then mixed, and a
    # freed slot of either kind takes the head of the decode buffer.
    n, M, B, lam, mu_s, mu_m, theta = 2, 1, 3, 4.0, 1.5, 0.6, 0.5
    ns, nm, cap = (n - M) * B, M * (B - 1), 80
    cl = es.Cluster(n=n, M=M, B=B, lam=(lam / n,), theta=(theta,), mu_p=(1e6,), mu_m=(mu_m,),
                    mu_s=(mu_s,), w=(2.0,), x_star=(0.5,), qp_star=(0.0,))
    states = [(a, b, 0) for a in range(ns + 1) for b in range(nm + 1)]
    states += [(ns, nm, q) for q in range(1, cap + 1)]

    def moves(s):
        a, b, q = s
        if a < ns:
            yield lam, (a + 1, b, q)
        elif b < nm:
            yield lam, (a, b + 1, q)
        elif q < cap:
            yield lam, (a, b, q + 1)
        yield a * mu_s, ((a, b, q - 1) if q else (a - 1, b, q))
        yield b * mu_m, ((a, b, q - 1) if q else (a, b - 1, q))
        yield q * theta, (a, b, q - 1)

    p = stationary(states, moves)
    ea = sum(pr * s[0] for s, pr in p.items())
    eb = sum(pr * s[1] for s, pr in p.items())
    eq = sum(pr * s[2] for s, pr in p.items())
    res = es.replicate(cl, seed=22, ttft=False, reps=10, horizon=1000.0, warmup=50.0)
    within(res.per_rep("y_s")[:, 0] * n, ea)
    within(res.per_rep("y_m")[:, 0] * n, eb)
    within(res.per_rep("q_d")[:, 0] * n, eq)
    within(res.per_rep("abandon_decode")[:, 0] / res.per_rep("arrivals")[:, 0],
           theta * eq / lam)
    within(res.per_rep("revenue_integral"), 2.0 * (mu_s * ea + mu_m * eb) / n)
    within(res.per_rep("revenue_counted"), 2.0 * (mu_s * ea + mu_m * eb) / n)


# ---- the gate with two classes ----------------------------------------------------------------

def gate_chain(cl, cap=30):
    """E[X_i], E[Q_p,i] of the prefill stage of a two-class cluster under the gate's rule as
    docs/model.md states it (the decode stage does not act on it)."""
    n, M = cl.n, cl.M
    lam = [n * v for v in cl.lam]
    states = [(x1, x2, q1, q2) for x1 in range(M + 1) for x2 in range(M + 1 - x1)
              for q1 in range(cap + 1) for q2 in range(cap + 1)
              if (q1 == q2 == 0) or x1 + x2 == M]

    def dev(i, x):
        return (x[i] - n * cl.x_star[i]) / cl.x_star[i] if cl.x_star[i] > 0 else math.inf

    def admit(x, q):
        waiting = [i for i in (0, 1) if q[i]]
        if not waiting:
            return x, q
        d = {i: dev(i, x) for i in waiting}
        low = min(d.values())
        tied = [i for i in waiting if math.isclose(d[i], low, rel_tol=1e-12, abs_tol=1e-12)
                or d[i] == low]
        k = max(tied, key=lambda i: (q[i] - n * cl.qp_star[i], -i))
        x, q = list(x), list(q)
        x[k] += 1
        q[k] -= 1
        return x, q

    def moves(s):
        x, q = list(s[:2]), list(s[2:])
        for i in (0, 1):
            if sum(x) < M:
                nx = x.copy()
                nx[i] += 1
                yield lam[i], (*nx, *q)
            elif q[i] < cap:
                nq = q.copy()
                nq[i] += 1
                yield lam[i], (*x, *nq)
            if x[i]:
                nx = x.copy()
                nx[i] -= 1
                nx, nq = admit(nx, q)
                yield x[i] * cl.mu_p[i], (*nx, *nq)
            if q[i]:
                nq = q.copy()
                nq[i] -= 1
                yield q[i] * cl.theta[i], (*x, *nq)

    p = stationary(states, moves)
    ex = [sum(pr * s[i] for s, pr in p.items()) for i in (0, 1)]
    eq = [sum(pr * s[2 + i] for s, pr in p.items()) for i in (0, 1)]
    return np.asarray(ex), np.asarray(eq)


def two_class(*, n, M, x_star, qp_star):
    return es.Cluster(n=n, M=M, B=20, lam=(1.3 / n, 0.9 / n), theta=(1.0, 0.6),
                      mu_p=(1.5, 0.8), mu_m=(5.0, 5.0), mu_s=(8.0, 8.0), w=(1.0, 1.0),
                      x_star=x_star, qp_star=qp_star)


@pytest.mark.parametrize("cl", [
    # two prefill slots: the deviations decide (X_1 / 0.3 against X_2 / 0.7)
    two_class(n=2, M=2, x_star=(0.15, 0.35), qp_star=(0.0, 0.0)),
    # one prefill slot: at each admission both X_i are 0, a tie that the queue deviation
    # Q_p,i - n q_p,i* breaks (class 1 is ahead until it has 2 more waiting than class 2)
    two_class(n=1, M=1, x_star=(0.3, 0.7), qp_star=(2.0, 0.0)),
    # a class the plan does not prefill: admitted only when the other does not wait
    two_class(n=2, M=2, x_star=(0.0, 0.7), qp_star=(0.0, 0.0)),
], ids=["deviation", "tie", "unplanned"])
def test_gate_matches_its_chain(cl):
    ex, eq = gate_chain(cl)
    res = es.replicate(cl, seed=31, ttft=False, reps=10, horizon=1000.0, warmup=50.0)
    within(res.per_rep("x") * cl.n, ex)
    within(res.per_rep("q_p") * cl.n, eq)


def test_replications_are_reproducible_and_independent():
    cl = one_class(n=2, M=1, B=4, lam=2.0, theta=0.5, mu_p=3.0, mu_m=1.0, mu_s=1.5)
    a = es.replicate(cl, seed=5, reps=3, horizon=200.0, warmup=20.0)
    b = es.replicate(cl, seed=5, reps=3, horizon=200.0, warmup=20.0)
    assert np.array_equal(a.per_rep("revenue_counted"), b.per_rep("revenue_counted"))
    assert len(set(a.per_rep("revenue_counted").tolist())) == 3
    s = a.summary()
    assert s["replications"] == 3 and s["revenue_integral"]["ci95"] > 0
    assert all(np.all(r.ttft[0] > 0) for r in a.reps)


# ---- against jaxqueue (slow) ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("law", ["exponential", "deterministic"])
def test_agrees_with_jaxqueue(law):
    import jax

    import jaxqueue as jq
    from jaxqueue.patience import Patience

    n, reps, horizon, warmup = 5, 32, 1000.0, 200.0
    model = jq.scenarios.load("paper-qwen8b")
    cl = es.cluster_from_model(model, n)
    res = es.replicate(cl, reps=reps, horizon=horizon, warmup=warmup, seed=7,
                       patience=es.Law(law), ttft=False)
    if law != "exponential":
        model = model.replace(patience=Patience.make(law, model.num_classes))
    system, _ = jq.build("gate-and-route", model, n)
    run = jq.simulate(jax.random.key(7), system, reps=reps, horizon=horizon, warmup=warmup,
                      notify=lambda _: None)
    theirs = jq.stats.per_gpu(run, model, n)["revenue_bundled_integral"]
    ours = res.per_rep("revenue_integral")
    diff = ours.mean() - theirs.mean()
    se = math.hypot(ours.std(ddof=1), theirs.std(ddof=1)) / math.sqrt(reps)
    assert abs(diff) < 3 * se, (ours.mean(), theirs.mean(), se)


def _ratio(hits: np.ndarray, started: np.ndarray) -> tuple[float, float]:
    """A ratio over replications, sum(hits) / sum(started), and its delta-method standard
    error (as jaxqueue.stats.latency computes its own)."""
    ratio = hits.sum() / started.sum()
    r = started.size
    return ratio, math.sqrt(np.sum((hits - ratio * started) ** 2) / (r * (r - 1))) / started.mean()


@pytest.mark.slow
def test_end_to_end_latency_and_decode_side_agree_with_jaxqueue():
    # paper-qwen8b at n = 5 (2 mixed GPUs): the decode buffer is loaded, so a request's
    # end-to-end latency adds both waits, a prefill and a decode on the side it got. The
    # event-list simulator follows each request from arrival to the end of its decode; jaxqueue
    # carries the arrival time through its count-based state. Their distribution functions of
    # the end-to-end latency (decodes started in the window) and the shares of decodes started
    # on mixed GPUs (which fix the time per output token), per class and over all.
    import jax

    import jaxqueue as jq

    n, reps, horizon, warmup = 5, 32, 1000.0, 200.0
    grid = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
    model = jq.scenarios.load("paper-qwen8b")
    cl = es.cluster_from_model(model, n)
    res = es.replicate(cl, reps=reps, horizon=horizon, warmup=warmup, seed=5, ttft=False)
    system, _ = jq.build("gate-and-route", model, n)
    system = dataclasses.replace(system, wait_grid=grid)
    run = jq.simulate(jax.random.key(5), system, reps=reps, horizon=horizon, warmup=warmup,
                      notify=lambda _: None)
    lat = jq.stats.latency(run, grid, per_token=jq.stats.per_token_times(model))
    num = model.num_classes
    zs = []
    for j in range(num + 1):
        samples = [r.e2e[j] if j < num else np.concatenate(r.e2e) for r in res.reps]
        started = np.asarray([v.size for v in samples], np.float64)
        for k, t in enumerate(grid):
            hits = np.asarray([np.count_nonzero(v <= t) for v in samples], np.float64)
            ours, se = _ratio(hits, started)
            spread = math.hypot(se, lat["e2e"]["se"][k, j])
            if spread > 0:  # else both are 1: every request within t
                zs.append((ours - lat["e2e"]["cdf"][k, j]) / spread)
        mixed = res.per_rep("decode_started_mixed")
        began = res.per_rep("decode_started")
        if j < num:
            mixed, began = mixed[:, j], began[:, j]
        else:
            mixed, began = mixed.sum(axis=1), began.sum(axis=1)
        ours, se = _ratio(mixed, began)
        # The solo GPUs' per-token time (1/gamma) is the smaller: the mixed share is 1 - F.
        theirs = 1.0 - lat["tpot"]["cdf"][0, j]
        zs.append((ours - theirs) / math.hypot(se, lat["tpot"]["se"][0, j]))
        # Both count the same decodes per request started: about as many in each.
        assert abs(began.sum() / lat["decodes_started"][j] - 1) < 0.05
    assert len(zs) > 2 * (num + 1) and np.max(np.abs(zs)) < 3.5, np.round(zs, 2)


def test_chain_helper_is_a_probability_law():
    states = list(itertools.product(range(3), range(2)))
    p = stationary(states, lambda s: [(1.0, ((s[0] + 1) % 3, s[1])), (2.0, (s[0], 1 - s[1]))])
    assert sum(p.values()) == pytest.approx(1.0)
    assert all(v == pytest.approx(1 / 6) for v in p.values())


@pytest.mark.slow
def test_phase_type_service_agrees_with_jaxqueue():
    # jaxqueue's Coxian laws (Erlang-4 prefill, hyperexponential decode of cv 2, balanced means)
    # against the event-list simulator's own draws of the same laws: counted revenue and each
    # class's prefill queue and decode buffer. The warm-up is long: the slow phase of that decode
    # lasts 4.4 means. The prefill queues tell the laws apart: with exponential times the
    # prefill-heavy class's is about 40% longer, tens of standard errors away.
    import jax

    import jaxqueue as jq
    from jaxqueue.service import Service

    n, reps, horizon, warmup = 20, 64, 1500.0, 500.0
    model = jq.scenarios.load("paper-qwen8b")
    cl = es.cluster_from_model(model, n)
    res = es.replicate(cl, reps=reps, horizon=horizon, warmup=warmup, seed=11,
                       prefill=es.parse_law("erlang:4"), decode=es.parse_law("hyperexponential:2"),
                       ttft=False)
    phased = model.replace(service=Service.make(
        model.num_classes, prefill={"law": "erlang", "phases": 4},
        decode={"law": "fit", "cv": 2.0}))

    def engine(m):
        system, _ = jq.build("gate-and-route", m, n)
        run = jq.simulate(jax.random.key(11), system, reps=reps, horizon=horizon, warmup=warmup,
                          notify=lambda _: None)
        return jq.stats.per_gpu(run, m, n)

    def z(ours, theirs):
        ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
        se = np.hypot(ours.std(0, ddof=1), theirs.std(0, ddof=1)) / math.sqrt(reps)
        return (ours.mean(0) - theirs.mean(0)) / se

    theirs = engine(phased)
    pairs = {"revenue_counted": "revenue_bundled", "q_p": "q_prefill", "q_d": "q_decode"}
    for ours, name in pairs.items():
        assert np.all(np.abs(z(res.per_rep(ours), theirs[name])) < 3), (ours, z(
            res.per_rep(ours), theirs[name]))
    plain = engine(model)
    assert np.max(np.abs(z(res.per_rep("q_p"), plain["q_prefill"]))) > 10
