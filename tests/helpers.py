"""Helpers shared by the tests: z-scores against exact values, exact chains from a successor
function (and the coupled per-GPU chain of FI-WSP and GI-WSP), what :func:`jaxqueue.stats.per_gpu`
estimates from a chain's exact means, and building per-GPU systems. Imported as
``from helpers import ...`` (pytest puts this folder on the path)."""

from __future__ import annotations

import numpy as np

from jaxqueue import policies, stats, theory

#: Policies that run on the per-GPU engine.
PER_GPU = tuple(p.name for p in policies.POLICIES.values() if "per-gpu" in p.engines)
#: Every (policy, engine) pair the simulator runs.
ALL_CASES = tuple((p.name, e) for p in policies.POLICIES.values() for e in p.engines)


def host_devices(count: int) -> str:
    """``XLA_FLAGS`` for a subprocess with ``count`` CPU devices, keeping the session's other
    flags (the code generator that tests/conftest.py chose)."""
    import os

    kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={count}"])


def every_core() -> set[int]:
    """The cores the test session may use, for a process started to use them all: an xdist
    worker runs pinned to cores of its own (tests/conftest.py) and keeps the whole set in
    ``JAXQUEUE_TEST_CORES``."""
    import os

    kept = os.environ.get("JAXQUEUE_TEST_CORES")
    return {int(c) for c in kept.split()} if kept else set(os.sched_getaffinity(0))


def z_scores(values, exact):
    """(mean - exact) / standard error over replications (axis 0); 0 where every replication
    equals the exact value, inf where they are all equal to something else."""
    values = np.asarray(values, np.float64)
    se = values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
    diff = values.mean(axis=0) - exact
    return np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))


def two_sample_z(a, b):
    """(mean(a) - mean(b)) / standard error of the difference, for independent samples; 0 where
    both are constant and equal, inf where constant and different."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    se = np.sqrt(a.var(axis=0, ddof=1) / a.shape[0] + b.var(axis=0, ddof=1) / b.shape[0])
    diff = a.mean(axis=0) - b.mean(axis=0)
    return np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))


def per_gpu(name, model, n, **kwargs):
    """``policies.build`` on the per-GPU engine."""
    return policies.build(name, model, n, engine="per-gpu", **kwargs)


def enumerate_chain(start, successors):
    """Reachable states from ``start`` and the stationary law of their generator.

    ``successors(state)`` lists ``(rate, next_state)``; self-loops and zero rates are ignored.
    """
    states, generator = theory.generator_of(start, successors)
    return states, theory.stationary(generator)


def compare(run, model, n, exact):
    """z-scores of :func:`jaxqueue.stats.per_gpu` against ``exact`` (same keys, per class)."""
    q = stats.per_gpu(run, model, n)
    return {(k, i): float(z) for k, v in exact.items()
            for i, z in enumerate(np.atleast_1d(z_scores(q[k], np.asarray(v))))}


def exact_per_gpu(model, x, y_mixed, y_solo, q_prefill, q_decode):
    """What :func:`jaxqueue.stats.per_gpu` estimates, from a chain's exact stationary means per
    GPU and class (time averages of prefills, decodes at mu_m and at mu_s, and jobs waiting for
    prefill and for decode).

    Rates follow from the means: a class-i prefill completes at mu_p,i per prefill in service,
    a decode at mu_m,i or mu_s,i, and every waiting job abandons at theta_i. Revenue (Eq. 21-23):
    bundled ``sum_i w_i (mu_m,i y_m,i + mu_s,i y_s,i)``; separate
    ``sum_i c_p P_i mu_p,i x_i + c_d D_i (mu_m,i y_m,i + mu_s,i y_s,i)`` (a prompt is paid when
    its prefill completes); each of stats' estimators (counted, integral, headline) has this
    expectation. Waits by Little's law: jobs waiting / the rate at which they enter the buffer
    (arrivals for the prefill queue, prefill completions for the decode buffer).
    """
    mu_p, mu_m, mu_s, theta, lam, P, D = (np.asarray(a, np.float64) for a in (
        model.mu_p, model.mu_m, model.mu_s, model.theta, model.lambda_, model.P, model.D))
    c_p, c_d = float(model.c_p), float(model.c_d)
    x, y_mixed, y_solo, q_prefill, q_decode = (np.broadcast_to(np.asarray(a, np.float64),
                                                               lam.shape)
                                               for a in (x, y_mixed, y_solo, q_prefill, q_decode))
    prefill, done = mu_p * x, mu_m * y_mixed + mu_s * y_solo
    bundled = float(np.sum((c_p * P + c_d * D) * done))
    separate = float(np.sum(c_p * P * prefill + c_d * D * done))
    return {
        "x": x, "y_mixed": y_mixed, "y_solo": y_solo, "q_prefill": q_prefill,
        "q_decode": q_decode, "completion_rate": done, "prefill_completion_rate": prefill,
        "prefill_abandonment_rate": theta * q_prefill, "decode_abandonment_rate": theta * q_decode,
        "revenue_bundled": bundled, "revenue_bundled_counted": bundled,
        "revenue_bundled_integral": bundled, "revenue_separate": separate,
        "revenue_separate_counted": separate, "revenue_separate_integral": separate,
        "prefill_wait": q_prefill / lam, "decode_wait": q_decode / prefill,
    }


def behind_head_share(states, pi, theta, queue):
    """Of the stationary abandonment rate from a FCFS buffer, the share of jobs that abandon
    from behind the head, i.e. while an older job, still waiting to be served, is ahead of them.

    ``queue(state)`` gives the buffer's class labels, head first. In the chain every job in a
    buffer is live and each abandons at its class's theta.
    """
    head = behind = 0.0
    for p, state in zip(pi, states, strict=True):
        labels = queue(state)
        if labels:
            head += p * theta[labels[0]]
            behind += p * sum(theta[c] for c in labels[1:])
    return behind / (head + behind)


def deviation_gate(n, x_star, q_star):
    """The gate of Sec. 4.1 as a rule ``(X, Qp) -> class`` over classes with ``Qp > 0``:
    smallest ``X_i / x_i* - n`` (i.e. ``(X_i - n x_i*) / x_i*``; every ``x_i* > 0`` here), ties to
    the larger ``Qp_i - n q_i*``, then to the lower index."""
    def gate(X, Qp):
        def key(i):
            return (X[i] / x_star[i] - n, -(Qp[i] - n * q_star[i]), i)
        return min((i for i in range(len(Qp)) if Qp[i] > 0), key=key)
    return gate


def coupled_chain(model, n, max_queue, gate=None):
    """The exact CTMC of a coupled per-GPU system (FI-WSP, GI-WSP), written from the rules of
    :mod:`jaxqueue.policies.per_gpu` (shared layout, Immediate coupling).

    State ``(gpus, queue)``; ``gpus`` holds ``(pre, dec)`` per GPU: ``pre`` the class of the
    prefill it runs (-1: none), ``dec`` its decodes per class; a prefill and the decodes share
    the GPU's B slots. A GPU is *able* (to start a prefill) when ``pre = -1`` and
    ``sum(dec) < B``. A class-i arrival (rate n lambda_i) starts on the able GPU holding the
    fewest requests, ties to the lowest index; with none able it waits (lost if ``max_queue``
    jobs wait: the truncation). A prefill completion on GPU g (rate mu_p,i) turns the job into a
    decode in its own slot on g; a class-j decode completion on g has rate ``dec_j mu_m,j``
    while g runs a prefill and ``dec_j mu_s,j`` otherwise. After either, g admits one waiting
    job if it is able. Every waiting job abandons at its theta_i.

    ``gate=None``: FCFS admission across classes (FI-WSP), ``queue`` is the waiting class
    labels, head first, and g admits the head. Otherwise ``queue`` is per-class counts and g
    admits a job of class ``gate(X, queue)``, X the prefills per class running (on the other
    GPUs).

    Returns:
        ``(states, pi, exact, truncation)``: the reachable states, their stationary law,
        :func:`exact_per_gpu` of the means, and the probability that the queue is full.
    """
    num, B = model.num_classes, int(model.B)
    lam = n * np.asarray(model.lambda_, np.float64)
    theta, mu_p, mu_m, mu_s = (np.asarray(a, np.float64) for a in (
        model.theta, model.mu_p, model.mu_m, model.mu_s))
    fcfs = gate is None

    def able(gpu):
        return gpu[0] < 0 and sum(gpu[1]) < B

    def put(gpus, g, gpu):
        return gpus[:g] + (gpu,) + gpus[g + 1:]

    def bump(t, i, d):
        return t[:i] + (t[i] + d,) + t[i + 1:]

    def size(queue):
        return len(queue) if fcfs else sum(queue)

    def refill(gpus, queue, g):  # GPU g admits one waiting job if it can
        if not size(queue) or not able(gpus[g]):
            return gpus, queue
        if fcfs:
            cls, queue = queue[0], queue[1:]
        else:
            X = tuple(sum(gpu[0] == i for gpu in gpus) for i in range(num))
            cls = gate(X, queue)
            queue = bump(queue, cls, -1)
        return put(gpus, g, (cls, gpus[g][1])), queue

    def successors(state):
        gpus, queue = state
        out = []
        ok = [g for g in range(n) if able(gpus[g])]
        for i in range(num):
            if ok:
                g = min(ok, key=lambda g: (sum(gpus[g][1]), g))
                out.append((lam[i], (put(gpus, g, (i, gpus[g][1])), queue)))
            elif size(queue) < max_queue:
                out.append((lam[i], (gpus, queue + (i,) if fcfs else bump(queue, i, 1))))
        for g, (pre, dec) in enumerate(gpus):
            if pre >= 0:
                out.append((mu_p[pre], refill(put(gpus, g, (-1, bump(dec, pre, 1))), queue, g)))
            for j in range(num):
                if dec[j]:
                    rate = dec[j] * (mu_m[j] if pre >= 0 else mu_s[j])
                    out.append((rate, refill(put(gpus, g, (pre, bump(dec, j, -1))), queue, g)))
        if fcfs:
            out += [(theta[c], (gpus, queue[:k] + queue[k + 1:])) for k, c in enumerate(queue)]
        else:
            out += [(theta[i] * queue[i], (gpus, bump(queue, i, -1))) for i in range(num)
                    if queue[i]]
        return out

    start = (((-1, (0,) * num),) * n, () if fcfs else (0,) * num)
    states, pi = enumerate_chain(start, successors)
    pre = np.array([[gpu[0] for gpu in gpus] for gpus, _ in states])  # (S, n)
    dec = np.array([[gpu[1] for gpu in gpus] for gpus, _ in states], np.float64)  # (S, n, I)
    running = pre[:, :, None] == np.arange(num)  # (S, n, I)
    busy = (pre >= 0)[:, :, None]
    waiting = np.array([np.bincount(np.asarray(q, int), minlength=num) if fcfs else q
                        for _, q in states], np.float64).reshape(len(states), num)
    exact = exact_per_gpu(model, pi @ running.sum(1) / n, pi @ (dec * busy).sum(1) / n,
                          pi @ (dec * ~busy).sum(1) / n, pi @ waiting / n, 0.0)
    return states, pi, exact, float(pi[waiting.sum(1) == max_queue].sum())
