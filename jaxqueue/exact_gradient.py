"""Exact revenue, and its gradient, for small systems of the tunable ``gated`` family.

The ground truth of the gradient diagnostics: the pooled prefill/decode chain of
:class:`jaxqueue.policies.tunable.Gated` with a *randomised* gate (it admits class j with
probability ``softmax(-xi / tau)_j`` among the waiting classes, ``xi_j = (X_j + offset) /
target_j - n``), enumerated state by state from the empty system and solved for its stationary
law in float64 (:func:`jaxqueue.theory.stationary`). Its revenue is smooth in the targets and
the offset, so its gradient exists; :func:`revenue_gradient` takes it by central differences of
the exact stationary revenue (in float64, with an error of order ``h^2``).

Written independently of the simulator, from the family's rules: M mixed GPUs (``n * share``, an
integer here), an arrival joins its class's queue and is admitted at once if a prefill slot is
idle; a prefill completion routes its job to a free solo slot, else a free mixed slot, else the
FCFS decode buffer, then the freed slot admits one waiting job; a decode completion hands its
slot to the head of the buffer; every waiting job abandons at its theta_i. The slack and caps
of the family are taken as non-binding (their defaults). Truncation: an arrival to a full
prefill queue, or a routed job to a full buffer, is lost (choose limits where that is rare).
"""

from __future__ import annotations

import numpy as np

from .model import Model
from .theory import generator_of, stationary

__all__ = ["gated_revenue", "revenue_gradient"]


def _bump(t, i, d):
    return t[:i] + (t[i] + d,) + t[i + 1:]


def gated_revenue(model: Model, n: int, M: int, targets, offset: float, tau: float, *,
                  max_queue: int = 4, max_buffer: int = 4, pricing: str = "bundled") -> dict:
    """Exact stationary revenue per GPU (and levels) of the randomised ``gated`` policy.

    Returns ``{"revenue", "x", "y_m", "y_s", "q_p", "q_d", "num_states", "truncation"}``
    (levels per GPU and class; ``truncation`` the probability of a full queue or buffer).
    """
    num = model.num_classes
    lam = n * np.asarray(model.lambda_, np.float64)
    theta = np.asarray(model.theta, np.float64)
    mu_p, mu_m, mu_s = (np.asarray(a, np.float64) for a in (model.mu_p, model.mu_m, model.mu_s))
    targets = np.asarray(targets, np.float64)
    B = int(model.B)
    cap_m, cap_s = (B - 1) * M, B * (n - M)

    def admit(X, Qp):
        """Distribution over the next (X, Qp) after one admission attempt."""
        waiting = [j for j in range(num) if Qp[j] > 0]
        if sum(X) >= M or not waiting:
            return [(1.0, X, Qp)]
        xi = np.array([(X[j] + offset) / targets[j] - n for j in waiting])
        w = np.exp(-(xi - xi.min()) / tau)
        w /= w.sum()
        return [(float(p), _bump(X, j, 1), _bump(Qp, j, -1)) for p, j in zip(w, waiting,
                                                                              strict=True)]

    def successors(state):
        X, Ym, Ys, Qp, buf = state
        out = []
        for i in range(num):
            if lam[i] > 0 and sum(Qp) < max_queue:  # arrival: queue, then an admission
                for p, X2, Qp2 in admit(X, _bump(Qp, i, 1)):
                    out.append((lam[i] * p, (X2, Ym, Ys, Qp2, buf)))
            if Qp[i] > 0 and theta[i] > 0:
                out.append((theta[i] * Qp[i], (X, Ym, Ys, _bump(Qp, i, -1), buf)))
            if X[i] > 0:  # prefill completion: route, then the freed slot admits one job
                X1, Ym2, Ys2, buf2 = _bump(X, i, -1), Ym, Ys, buf
                if sum(Ys) < cap_s:
                    Ys2 = _bump(Ys, i, 1)
                elif sum(Ym) < cap_m:
                    Ym2 = _bump(Ym, i, 1)
                elif len(buf) < max_buffer:
                    buf2 = buf + (i,)
                for p, X2, Qp2 in admit(X1, Qp):
                    out.append((mu_p[i] * X[i] * p, (X2, Ym2, Ys2, Qp2, buf2)))
            if Ym[i] > 0:
                Ym2 = _bump(Ym, i, -1)
                if buf:
                    Ym2 = _bump(Ym2, buf[0], 1)
                out.append((mu_m[i] * Ym[i], (X, Ym2, Ys, Qp, buf[1:])))
            if Ys[i] > 0:
                Ys2 = _bump(Ys, i, -1)
                if buf:
                    Ys2 = _bump(Ys2, buf[0], 1)
                out.append((mu_s[i] * Ys[i], (X, Ym, Ys2, Qp, buf[1:])))
        for k, c in enumerate(buf):
            if theta[c] > 0:
                out.append((theta[c], (X, Ym, Ys, Qp, buf[:k] + buf[k + 1:])))
        return out

    zeros = (0,) * num
    states, generator = generator_of((zeros, zeros, zeros, zeros, ()), successors)
    size = len(states)
    pi = stationary(generator)
    X, Ym, Ys, Qp, Qd = (np.zeros((size, num)) for _ in range(5))
    full = np.zeros(size, bool)
    for s, (x, ym, ys, qp, buf) in enumerate(states):
        X[s], Ym[s], Ys[s], Qp[s] = x, ym, ys, qp
        Qd[s] = np.bincount(buf, minlength=num)
        full[s] = sum(qp) == max_queue or len(buf) == max_buffer
    levels = [pi @ a / n for a in (X, Ym, Ys, Qp, Qd)]
    done = mu_m * levels[1] + mu_s * levels[2]
    prompt = float(model.c_p) * np.asarray(model.P, np.float64)
    output = float(model.c_d) * np.asarray(model.D, np.float64)
    if pricing == "bundled":
        revenue = float(np.asarray(model.w, np.float64) @ done)
    else:
        revenue = float(prompt @ (mu_p * levels[0]) + output @ done)
    return {"revenue": revenue, "x": levels[0], "y_m": levels[1], "y_s": levels[2],
            "q_p": levels[3], "q_d": levels[4], "num_states": size,
            "truncation": float(pi[full].sum())}


def revenue_gradient(model: Model, n: int, M: int, targets, offset: float, tau: float, *,
                     h: float = 1e-4, **kwargs) -> np.ndarray:
    """d(revenue)/d(log targets, offset) by central differences of :func:`gated_revenue`."""
    targets = np.asarray(targets, np.float64)
    base = np.concatenate([np.log(targets), [offset]])
    grad = np.zeros_like(base)
    for k in range(base.size):
        values = []
        for sign in (1.0, -1.0):
            z = base.copy()
            z[k] += sign * h
            values.append(gated_revenue(model, n, M, np.exp(z[:-1]), z[-1], tau,
                                        **kwargs)["revenue"])
        grad[k] = (values[0] - values[1]) / (2 * h)
    return grad
