"""Exact small-system checks for the policies without one elsewhere: SLI-aware Gate-and-Route
(pooled engine), GI-WSP and GF-WSP (per-GPU engine). Each generator below (and
:func:`helpers.coupled_chain`) is written from the policy's rules (module docstrings of
:mod:`jaxqueue.policies.sli` and :mod:`jaxqueue.policies.per_gpu`), enumerated from the empty
system, and solved for its stationary law; simulated time averages, rates, revenues and
Little's-law waits must agree within 4 standard errors."""

import dataclasses

import jax
import numpy as np
import pytest
from helpers import (
    compare,
    coupled_chain,
    deviation_gate,
    enumerate_chain,
    exact_per_gpu,
    per_gpu,
    z_scores,
)

import jaxqueue as jq
from jaxqueue import fluid, policies, stats
from jaxqueue.model import Model
from jaxqueue.patience import Patience


# ---- SLI-aware Gate-and-Route ------------------------------------------------------------------
def bump(t, i, d):
    return t[:i] + (t[i] + d,) + t[i + 1:]


def sli_chain(model, n, M, x_star, q_star, y_m_star, y_s_star, max_p, max_m, max_s):
    """The pooled CTMC of SLI-aware Gate-and-Route, written from Sec. 5.1 / EC 13.

    State ``(X, Ym, Ys, Qp, Qds, Qdm)``, per-class counts. A class-i arrival (rate n lambda_i)
    starts prefill if fewer than M run, else waits in Qp. A class-i prefill completion goes to
    the solo side with probability p_i = mu_s y_s* / (mu_m y_m* + mu_s y_s*), else the mixed
    side, and takes a free slot of that side (B(n-M) solo, (B-1)M mixed) or waits in that
    side's buffer; then the freed prefill slot admits the waiting class with the smallest
    X_j/x_j* - n (ties: larger Qp_j - n q_j*, then lower index). A decode completion on a side
    whose buffer is not empty takes class j with probability proportional to its planned rate
    there (mu_m y_m* or mu_s y_s*) among the waiting classes. Every waiting job abandons at
    theta_i. Truncation: arrivals to a full buffer (totals max_p, max_s, max_m) are lost.
    """
    num = model.num_classes
    B = int(model.B)
    lam = n * np.asarray(model.lambda_, np.float64)
    theta = np.asarray(model.theta, np.float64)
    mu_p, mu_m, mu_s = (np.asarray(r, np.float64) for r in (model.mu_p, model.mu_m, model.mu_s))
    w_m, w_s = mu_m * y_m_star, mu_s * y_s_star
    p_solo = w_s / (w_m + w_s)
    cap_m, cap_s = (B - 1) * M, B * (n - M)

    def gate(X, Qp):
        def key(j):
            return (X[j] / x_star[j] - n, -(Qp[j] - n * q_star[j]), j)
        return min((j for j in range(num) if Qp[j] > 0), key=key)

    def take(weight, Q):  # (probability, class) pairs for a freed slot of a side
        w = np.array([weight[j] if Q[j] > 0 else 0.0 for j in range(num)])
        return [(w[j] / w.sum(), j) for j in range(num) if w[j] > 0]

    def successors(s):
        X, Ym, Ys, Qp, Qds, Qdm = s
        out = []
        for i in range(num):
            if sum(X) < M:
                out.append((lam[i], (bump(X, i, 1), Ym, Ys, Qp, Qds, Qdm)))
            elif sum(Qp) < max_p:
                out.append((lam[i], (X, Ym, Ys, bump(Qp, i, 1), Qds, Qdm)))
            if X[i]:
                X2, Qp2 = bump(X, i, -1), Qp
                if sum(Qp):
                    j = gate(X2, Qp)
                    X2, Qp2 = bump(X2, j, 1), bump(Qp, j, -1)
                rate = mu_p[i] * X[i]
                if sum(Ys) < cap_s:
                    solo = (X2, Ym, bump(Ys, i, 1), Qp2, Qds, Qdm)
                else:
                    solo = (X2, Ym, Ys, Qp2, bump(Qds, i, int(sum(Qds) < max_s)), Qdm)
                if sum(Ym) < cap_m:
                    mixed = (X2, bump(Ym, i, 1), Ys, Qp2, Qds, Qdm)
                else:
                    mixed = (X2, Ym, Ys, Qp2, Qds, bump(Qdm, i, int(sum(Qdm) < max_m)))
                out += [(rate * p_solo[i], solo), (rate * (1 - p_solo[i]), mixed)]
            if Ym[i]:
                Ym2, rate = bump(Ym, i, -1), mu_m[i] * Ym[i]
                if sum(Qdm):
                    out += [(rate * p, (X, bump(Ym2, j, 1), Ys, Qp, Qds, bump(Qdm, j, -1)))
                            for p, j in take(w_m, Qdm)]
                else:
                    out.append((rate, (X, Ym2, Ys, Qp, Qds, Qdm)))
            if Ys[i]:
                Ys2, rate = bump(Ys, i, -1), mu_s[i] * Ys[i]
                if sum(Qds):
                    out += [(rate * p, (X, Ym, bump(Ys2, j, 1), Qp, bump(Qds, j, -1), Qdm))
                            for p, j in take(w_s, Qds)]
                else:
                    out.append((rate, (X, Ym, Ys2, Qp, Qds, Qdm)))
            for k in (3, 4, 5):  # abandonment from Qp, Qds, Qdm
                if s[k][i]:
                    out.append((theta[i] * s[k][i], s[:k] + (bump(s[k], i, -1),) + s[k + 1:]))
        return out

    zero = (0,) * num
    states, pi = enumerate_chain((zero,) * 6, successors)
    A = np.asarray(states, np.float64)  # (states, 6, classes)
    full = A.sum(-1) == [M, cap_m, cap_s, max_p, max_s, max_m]
    truncation = pi[(full[:, 0] & full[:, 3]) | (full[:, 1] & full[:, 5])
                    | (full[:, 2] & full[:, 4])].sum()
    mean = np.einsum("s,sji->ji", pi, A) / n
    exact = {"x": mean[0], "y_mixed": mean[1], "y_solo": mean[2], "q_prefill": mean[3],
             "q_decode": mean[4] + mean[5],
             "completion_rate": mu_m * mean[1] + mu_s * mean[2],
             "prefill_abandonment_rate": theta * mean[3],
             "decode_abandonment_rate": theta * (mean[4] + mean[5])}
    return exact, len(states), float(truncation)


def sli_model():
    """Two classes, tau = C = 1 (mu_p = 1/P, mu_m = 1/D, mu_s = gamma/D): prefill fast, decode
    sides busy, impatient users, so that the chain truncated at (2, 4, 2) waiting jobs has
    ~8.5e3 states and loses ~1e-5 of its mass."""
    return Model(lambda_=(0.3, 0.2), theta=(4.0, 6.0), P=(0.01, 0.02), D=(1.0, 2.0),
                 alpha=1.0, beta=0.0, gamma=5.0, C=1.0, B=2, c_p=0.0, c_d=1.0)


def split_plan(model, p_s):
    """The bundled LP's plan with each class's decode flow split p_s : 1 - p_s between the solo
    and mixed sides (the LP puts everything on the solo side for these models), flows balanced
    as :func:`jaxqueue.policies.sli.build_sli` requires."""
    lp = fluid.solve(model, "bundled")
    flow = model.mu_p * lp.x - model.theta * lp.q_d
    return dataclasses.replace(lp, y_m=(1 - p_s) * flow / model.mu_m,
                               y_s=p_s * flow / model.mu_s)


def rings(model):
    """``model`` with a hyperexponential patience law of cv 1: the exponential law, drawn
    another way. Under it the systems keep their counted queues as per-class rings (each job
    its own deadline, the decisions on the live counts), and must still agree with the exact
    chain of the counts."""
    return model.replace(patience=Patience.make("hyperexponential", model.num_classes,
                                                cv=1.0))


@pytest.mark.parametrize("case,law", [
    # (2, 4, 2) waiting jobs: ~8.5e3 states, truncation ~1.2e-5; both classes wait in the mixed
    # buffer only ~1e-3 of the time, so this resolves the router's p_s (a 0.05 error in one
    # p_s is ~20 SE) but not the proportional take of a freed slot.
    ("light", "counts"),
    # Mixed side overloaded, impatient users: both classes wait in the mixed buffer a few % of
    # the time, and scaling one class's take weight by 5 (or 1/5) moves y_m by ~5 SE. ~1.6e4
    # states (a 5-10 s solve by LU, under a second by theory.stationary's Jacobi iteration).
    pytest.param("busy-mixed", "counts", marks=pytest.mark.slow),
    # The same chains, the waiting jobs in per-class rings (prefill queues and each side's
    # decode buffers).
    pytest.param("light", "rings", marks=pytest.mark.slow),
    pytest.param("busy-mixed", "rings", marks=pytest.mark.slow),
])
def test_sli_gate_and_route_matches_exact_generator(case, law):
    n = 2
    if case == "light":
        model, p_s, limits = sli_model(), np.array([0.6, 0.3]), (2, 4, 2)
    else:
        model = Model(lambda_=(1.0, 1.0), theta=(8.0, 8.0), P=(0.005, 0.01), D=(1.0, 2.0),
                      alpha=1.0, beta=0.0, gamma=5.0, C=1.0, B=2, c_p=0.0, c_d=1.0)
        p_s, limits = np.array([0.3, 0.2]), (2, 6, 2)
    plan = split_plan(model, p_s)
    system, _ = policies.build("sli-gate-and-route", model if law == "counts" else rings(model),
                               n, plan=plan)
    assert system.per_job == (law == "rings")
    M = int(system.M)
    assert M == 1
    np.testing.assert_allclose(np.asarray(system.p_solo), p_s, rtol=1e-6)
    exact, size, truncation = sli_chain(model, n, M, plan.x, plan.q_p, plan.y_m, plan.y_s,
                                        *limits)
    assert truncation < (3e-5 if case == "light" else 3e-4), truncation
    run = jq.simulate(jax.random.key(21), system, reps=256, horizon=1500.0, warmup=50.0)
    z = compare(run, model, n, exact)
    assert max(abs(v) for v in z.values()) < 4.0, z


# ---- GI-WSP and GF-WSP (per-GPU engine), one class, B = 2 --------------------------------------
def one_class_model():
    """tau = alpha = 1, C = 1: mu_p = 1/P = 2, mu_m = 1/D = 0.5, mu_s = gamma/D = 0.75; prices
    per job c_p P = 0.25 (prompt) and c_d D = 2 (output)."""
    return Model(lambda_=(1.0,), theta=(0.5,), P=(0.5,), D=(2.0,), alpha=1.0, beta=0.0,
                 gamma=1.5, C=1.0, B=2, c_p=0.5, c_d=1.0)


def fi_wsp_chain(lam, mu_p, mu_m, mu_s, theta, max_queue):
    """Coupled WSP on one GPU, B = 2, one class (as ``tests/test_per_gpu.py``'s generator).

    State (p, d, q): a prefill running, decodes, jobs waiting. The GPU takes the next job when
    p = 0 and p + d < 2; a finished prefill decodes in its slot; decodes run at mu_m while
    p = 1, at mu_s otherwise. With one class the gate of GI-WSP admits the only waiting class,
    so GI-WSP and FI-WSP are this same chain.
    """
    def admit(p, d, q):
        return (1, d, q - 1) if p == 0 and d < 2 and q > 0 else (p, d, q)

    def successors(s):
        p, d, q = s
        out = []
        if p == 0 and d < 2:
            out.append((lam, (1, d, 0)))
        elif q < max_queue:
            out.append((lam, (p, d, q + 1)))
        if p:
            out.append((mu_p, admit(0, d + 1, q)))
        if d:
            out.append((d * (mu_m if p else mu_s), admit(p, d - 1, q)))
        if q:
            out.append((q * theta, (p, d, q - 1)))
        return out

    states, pi = enumerate_chain((0, 0, 0), successors)
    return np.asarray(states, np.float64), pi


def test_gi_wsp_one_gpu_matches_exact_generator():
    model = one_class_model()
    lam, mu_p, mu_m, mu_s, theta = 1.0, 2.0, 0.5, 0.75, 0.5
    np.testing.assert_allclose([model.mu_p[0], model.mu_m[0], model.mu_s[0]], [mu_p, mu_m, mu_s])
    S, pi = fi_wsp_chain(lam, mu_p, mu_m, mu_s, theta, max_queue=30)
    assert pi[S[:, 2] == 30].sum() < 1e-9
    p, d, q = S.T
    exact = {"x": pi @ p, "y_mixed": pi @ (d * p), "y_solo": pi @ (d * (1 - p)),
             "q_prefill": pi @ q, "q_decode": 0.0}
    exact["completion_rate"] = mu_m * exact["y_mixed"] + mu_s * exact["y_solo"]
    exact["prefill_abandonment_rate"] = theta * exact["q_prefill"]
    exact["decode_abandonment_rate"] = 0.0
    system, _ = per_gpu("gi-wsp", model, 1)
    assert system.coupled and system.gate == "deviation"
    run = jq.simulate(jax.random.key(12), system, reps=128, horizon=2000.0, warmup=100.0)
    q_sim = stats.per_gpu(run, model, 1)
    assert np.all(q_sim["q_decode"] == 0) and np.all(q_sim["decode_abandonment_rate"] == 0)
    z = {k: float(z_scores(q_sim[k][:, 0], v)) for k, v in exact.items() if k not in
         ("q_decode", "decode_abandonment_rate")}
    assert max(abs(v) for v in z.values()) < 4.0, z


# ---- GI-WSP, two classes on two GPUs: the gate chooses ---------------------------------------
def gated_model():
    """tau = alpha = 1, C = 1: mu_p = 1/P = (2, 1), mu_m = 1/D = (0.5, 1), mu_s = gamma/D =
    (0.75, 1.5). Two GPUs of B = 2 slots get 2 lambda = (2, 2) arrivals per second, more than
    they serve, so the queue rarely empties and at most admissions both classes wait."""
    return Model(lambda_=(1.0, 1.0), theta=(0.8, 1.2), P=(0.5, 1.0), D=(2.0, 1.0), alpha=1.0,
                 beta=0.0, gamma=1.5, C=1.0, B=2, c_p=0.1, c_d=0.2)


def gate_decisions(model, states, pi, gate):
    """Stationary rate of admissions from the queue of the coupled chain with both classes
    waiting, per class admitted, and the rate of all admissions from the queue.

    A GPU g admits after a completion that leaves it able: a prefill completion with a slot to
    spare after the decode takes its slot, or a decode completion while g runs no prefill.
    """
    B = int(model.B)
    mu_p, mu_s = np.asarray(model.mu_p), np.asarray(model.mu_s)
    both, total = np.zeros(model.num_classes), 0.0
    for p, (gpus, queue) in zip(pi, states, strict=True):
        if not sum(queue):
            continue
        for g, (pre, dec) in enumerate(gpus):
            rate = (mu_p[pre] * (sum(dec) + 1 < B) if pre >= 0 else float(mu_s @ dec))
            X = [sum(h[0] == i for k, h in enumerate(gpus) if k != g)
                 for i in range(model.num_classes)]
            total += p * rate
            if min(queue) > 0:
                both[gate(X, queue)] += p * rate
    return both, total


@pytest.mark.parametrize("law", ["counts", pytest.param("rings", marks=pytest.mark.slow)])
def test_gi_wsp_two_classes_matches_exact_generator(law):
    model, n = gated_model(), 2
    np.testing.assert_allclose(np.c_[model.mu_p, model.mu_m, model.mu_s],
                               [[2.0, 0.5, 0.75], [1.0, 1.0, 1.5]])
    # Gate targets: xi_i = X_i / x_i* - 2 and the tie-break Qp_i - 2 q_i* = (Qp_1 - 1.5, Qp_2):
    # with the other GPU running a class-i prefill the other class goes first; with neither
    # running, class 1 needs two more waiting jobs than class 2 (exact in float32, never tied).
    x_star, q_star = np.array([0.3, 0.2]), np.array([0.75, 0.0])
    plan = dataclasses.replace(fluid.solve(model, "bundled"), x=x_star, q_p=q_star)
    system, _ = per_gpu("gi-wsp", model if law == "counts" else rings(model), n, plan=plan)
    assert system.coupled and system.gate == "deviation" and system.layout == "shared"
    assert system.per_job == (law == "rings")
    gate = deviation_gate(n, x_star, q_star)
    # ~1e4 states. Arrivals are lost only when 14 jobs wait (probability 4e-6), which moves
    # the exact values by far less than a tenth of a standard error.
    states, pi, exact, truncation = coupled_chain(model, n, max_queue=14, gate=gate)
    assert truncation < 1e-5, truncation
    # Not vacuous: most admissions from the queue find both classes waiting, and the gate
    # admits each class at a good share of those.
    both, total = gate_decisions(model, states, pi, gate)
    assert both.sum() > 0.5 * total and both.min() > 0.2 * both.sum(), (both, total)

    run = jq.simulate(jax.random.key(14), system, reps=128, horizon=2000.0, warmup=100.0)
    z = compare(run, model, n, exact)
    assert max(abs(v) for v in z.values()) < 4.0, z
    # ... and discriminating: with the tie-break target q* = 0 (ties to the larger queue) the
    # exact values move by many standard errors of this run.
    wrong = coupled_chain(model, n, max_queue=14, gate=deviation_gate(n, x_star, 0 * q_star))[2]
    assert max(abs(v) for v in compare(run, model, n, wrong).values()) > 10.0


def gf_wsp_chain(n, lam, mu_p, mu_m, mu_s, theta, B, max_p, max_d):
    """GF-WSP on n labelled GPUs, one class: decoupled phases, prefill-first.

    State ``(gpus, qp, qd)``, ``gpus`` a tuple of (p, d) per GPU (a prefill running, decodes
    held; p + d <= B). A GPU can prefill when p = 0 and d < B. An arrival (rate n lambda) starts
    on the able GPU with the fewest decodes (ties: lowest index), else waits in qp. A prefill
    completion on GPU g frees its prefill; g first admits the next waiting job (prefill-first),
    then the finished job's decode takes a free slot on a GPU without a prefill before one with a
    prefill, then the fewest held, then the lowest index; with no free slot it waits in qd. A
    decode completion on g (rate d mu_m while p = 1, d mu_s otherwise) lets g admit a waiting
    prefill if it can, else hands the slot to a waiting decode. Waiting jobs abandon at theta.
    """
    def able(g):
        return g[0] == 0 and g[1] < B

    def admit(gpus, qp, k):  # GPU k takes a waiting prefill if it can
        if qp and able(gpus[k]):
            return gpus[:k] + ((1, gpus[k][1]),) + gpus[k + 1:], qp - 1
        return gpus, qp

    def place(gpus, qp, qd, newcomer):  # a decode (new, or the head of qd) takes a free slot
        free = [k for k, (p, d) in enumerate(gpus) if p + d < B]
        if not free or not (newcomer or qd):
            return gpus, qp, min(qd + newcomer, max_d)
        k = min(free, key=lambda k: (gpus[k][0], sum(gpus[k]), k))
        gpus = gpus[:k] + ((gpus[k][0], gpus[k][1] + 1),) + gpus[k + 1:]
        return gpus, qp, qd - (not newcomer)

    def successors(s):
        gpus, qp, qd = s
        out = []
        ok = [k for k in range(n) if able(gpus[k])]
        if ok:
            k = min(ok, key=lambda k: (gpus[k][1], k))
            out.append((n * lam, (gpus[:k] + ((1, gpus[k][1]),) + gpus[k + 1:], qp, qd)))
        elif qp < max_p:
            out.append((n * lam, (gpus, qp + 1, qd)))
        for k, (p, d) in enumerate(gpus):
            if p:
                g2, qp2 = admit(gpus[:k] + ((0, d),) + gpus[k + 1:], qp, k)
                out.append((mu_p, place(g2, qp2, qd, 1)))
            if d:
                g2, qp2 = admit(gpus[:k] + ((p, d - 1),) + gpus[k + 1:], qp, k)
                out.append((d * (mu_m if p else mu_s), place(g2, qp2, qd, 0)))
        if qp:
            out.append((qp * theta, (gpus, qp - 1, qd)))
        if qd:
            out.append((qd * theta, (gpus, qp, qd - 1)))
        return out

    states, pi = enumerate_chain((((0, 0),) * n, 0, 0), successors)
    p = np.array([[g[0] for g in s[0]] for s in states], np.float64)
    d = np.array([[g[1] for g in s[0]] for s in states], np.float64)
    qp, qd = (np.array([s[k] for s in states], np.float64) for k in (1, 2))
    exact = {"x": pi @ p.sum(1) / n, "y_mixed": pi @ (p * d).sum(1) / n,
             "y_solo": pi @ ((1 - p) * d).sum(1) / n, "q_prefill": pi @ qp / n,
             "q_decode": pi @ qd / n}
    exact["completion_rate"] = mu_m * exact["y_mixed"] + mu_s * exact["y_solo"]
    exact["prefill_abandonment_rate"] = theta * exact["q_prefill"]
    exact["decode_abandonment_rate"] = theta * exact["q_decode"]
    truncation = pi[(qp == max_p) | (qd == max_d)].sum()
    return exact, len(states), float(truncation)


@pytest.mark.parametrize("law", ["counts", pytest.param("rings", marks=pytest.mark.slow)])
def test_gf_wsp_two_gpus_matches_exact_generator(law):
    # With rings too the gate admits in the step of the completion, before the finished
    # prefill's decode is routed (prefill-first), as the chain has it.
    model, n = one_class_model(), 2
    exact, size, truncation = gf_wsp_chain(n, 1.0, 2.0, 0.5, 0.75, 0.5, B=2, max_p=25,
                                           max_d=25)
    assert truncation < 1e-9, truncation
    # Revenues under both pricings and the Little's-law waits: the phases are decoupled, so
    # finished prefills wait for decode slots (exact decode wait 0.25 s), and some abandon there,
    # whose prompts separate pricing still pays.
    exact = exact_per_gpu(model, *(exact[k] for k in ("x", "y_mixed", "y_solo", "q_prefill",
                                                      "q_decode")))
    assert exact["decode_wait"][0] > 0.1 and exact["decode_abandonment_rate"][0] > 0.05
    system, _ = per_gpu("gf-wsp", model if law == "counts" else rings(model), n)
    assert not system.coupled and system.layout == "shared" and system.gate == "deviation"
    assert system.per_job == (law == "rings")
    run = jq.simulate(jax.random.key(13), system, reps=128, horizon=2000.0, warmup=100.0)
    z = compare(run, model, n, exact)
    assert max(abs(v) for v in z.values()) < 4.0, z
