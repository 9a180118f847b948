"""The FCFS buffers under load, against exact chains of their class-label sequences.

A buffer served first-come-first-served across classes (FG-SP's prefill queue, FI-WSP's
prefill queue, the decode buffer of every decoupled policy) is simulated as a lazy ring
(:mod:`jaxqueue.buffer`): a job whose patience runs out stays in the ring until it reaches the
head at a moment the buffer is served. Jobs that abandon *behind a live head* (while an older
job, still waiting, is ahead of them) are where a wrong discard, wait credit or census would
show, so each system below is sized to make them about a third of the loaded buffer's
abandonments (measured on the exact chain, where every job in a buffer is live and abandons at
its own rate). Simulated per-class time averages, rates, both pricings' revenues and the
Little's-law waits must agree with the chain within 4 standard errors.
"""

import jax
import numpy as np
from helpers import behind_head_share, compare, coupled_chain, exact_per_gpu, per_gpu

import jaxqueue as jq
from jaxqueue.model import Model
from jaxqueue.policies.pooled import Pooled
from jaxqueue.theory import pooled_chain


def two_classes(lambda_, P, D):
    """tau = alpha = 1, C = 1: mu_p = 1/P, mu_m = 1/D, mu_s = gamma/D = 2/D; patience rates
    (3, 4) per second; B = 2."""
    return Model(lambda_=lambda_, theta=(3.0, 4.0), P=P, D=D, alpha=1.0, beta=0.0, gamma=2.0,
                 C=1.0, B=2, c_p=0.1, c_d=0.2)


def fg_sp(model, n, M):
    """Pooled FG-SP with M mixed GPUs (set here, not planned: the planning is not under test)."""
    zero = np.zeros(model.num_classes)
    return Pooled(model=model, n=np.int32(n), M=np.int32(M), x_star=zero, q_star=zero,
                  gate="fcfs", capacity=256)


def fg_sp_exact(model, n, M, max_queue, max_buffer):
    """The pooled FG-SP chain of :func:`jaxqueue.theory.pooled_chain` (both buffers FCFS label
    sequences): the exact per-GPU values, the probability that either buffer is full (where the
    truncated chain loses jobs), and the behind-the-head share of each buffer's abandonments."""
    chain = pooled_chain(model, n, M, "fg-sp", max_queue=max_queue, max_buffer=max_buffer)
    num, pi, theta = model.num_classes, chain.pi, np.asarray(model.theta)

    def census(labels):
        return np.bincount(np.asarray(labels, int), minlength=num)

    X, Ym, Ys, Qp, Qd = (np.array([[*s[k]] if k < 3 else census(s[k]) for s in chain.states],
                                  np.float64).reshape(-1, num) for k in range(5))
    full = (Qp.sum(1) == max_queue) | (Qd.sum(1) == max_buffer)
    exact = exact_per_gpu(model, *(pi @ a / n for a in (X, Ym, Ys, Qp, Qd)))
    shares = [behind_head_share(chain.states, pi, theta, lambda s, k=k: s[k]) for k in (3, 4)]
    return exact, float(pi[full].sum()), shares


def test_fg_sp_prefill_ring_under_load():
    # mu_p = (1, 2) on the one mixed GPU's prefill slot; 2 lambda = (2, 1.6) arrivals per
    # second, so prefills queue (0.37 jobs per GPU on average). Decodes are fast (mu_m =
    # (20, 10), mu_s = (40, 20) on three slots), so the decode buffer holds ~1e-8 jobs on
    # average and one place suffices. 15,330 states.
    model, n = two_classes((1.0, 0.8), P=(1.0, 0.5), D=(0.05, 0.1)), 2
    exact, truncation, (share, _) = fg_sp_exact(model, n, 1, max_queue=7, max_buffer=1)
    # Jobs are lost only with 7 waiting for prefill (probability 5e-5); one more place in each
    # buffer moves no exact value by 1e-4 of itself (checked when sizing), a small fraction of
    # a standard error here.
    assert truncation < 1e-4, truncation
    assert share > 0.3, share  # 35% of prefill-queue abandonments come from behind the head
    run = jq.simulate(jax.random.key(31), fg_sp(model, n, 1), reps=256, horizon=1000.0,
                      warmup=50.0)
    # The decode buffer is all but empty: too few events for a z-score (decode-ring test below).
    z = compare(run, model, n, {k: v for k, v in exact.items()
                                if k not in ("q_decode", "decode_abandonment_rate", "decode_wait")})
    assert max(abs(v) for v in z.values()) < 4.0, z


def test_fg_sp_decode_ring_under_load():
    # Prefills are fast (mu_p = (1000, 500)), so the prefill queue is nearly always empty; the
    # three decode slots (one mixed at mu_m = (0.5, 0.25), two solo at mu_s = (1, 0.5)) get
    # 2 lambda = (2.4, 1.6) jobs per second and the decode buffer holds 0.35 jobs per GPU on
    # average. 21,546 states.
    model, n = two_classes((1.2, 0.8), P=(0.001, 0.002), D=(2.0, 4.0)), 2
    exact, truncation, (_, share) = fg_sp_exact(model, n, 1, max_queue=1, max_buffer=8)
    # Lost jobs: a second job waiting for prefill (probability 3.5e-5) or a ninth for decode
    # (1e-5); one more place in each buffer moves no exact value compared below by 1e-4 of
    # itself.
    assert truncation < 1e-4, truncation
    assert share > 0.3, share  # 37% of decode-buffer abandonments come from behind the head
    run = jq.simulate(jax.random.key(32), fg_sp(model, n, 1), reps=256, horizon=1000.0,
                      warmup=50.0)
    # The prefill queue sees a few dozen jobs in the whole run: too few for a z-score.
    z = compare(run, model, n, {k: v for k, v in exact.items() if k not in (
        "q_prefill", "prefill_abandonment_rate", "prefill_wait")})
    assert max(abs(v) for v in z.values()) < 4.0, z


def test_fi_wsp_prefill_ring_under_load():
    # FI-WSP on two GPUs of B = 2 slots: mu_p = (1, 2), mu_m = (1, 0.5), mu_s = (2, 1);
    # 2 lambda = (2, 1.6) arrivals per second. 20,718 states (the FCFS queue of up to 7
    # labels while no GPU can take a prefill).
    model, n = two_classes((1.0, 0.8), P=(1.0, 0.5), D=(1.0, 2.0)), 2
    np.testing.assert_allclose(np.c_[model.mu_p, model.mu_m, model.mu_s],
                               [[1.0, 1.0, 2.0], [2.0, 0.5, 1.0]])
    states, pi, exact, truncation = coupled_chain(model, n, max_queue=7)
    # Jobs are lost only with 7 waiting (probability 3e-5); one more place moves no exact value
    # by 1e-4 of itself.
    assert truncation < 1e-4, truncation
    share = behind_head_share(states, pi, np.asarray(model.theta), lambda s: s[1])
    assert share > 0.3, share  # 33%
    system, _ = per_gpu("fi-wsp", model, n)
    assert system.coupled and system.gate == "fcfs" and system.layout == "shared"
    run = jq.simulate(jax.random.key(33), system, reps=128, horizon=2000.0, warmup=50.0)
    z = compare(run, model, n, exact)
    assert max(abs(v) for v in z.values()) < 4.0, z
