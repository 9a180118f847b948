"""Helpers shared by the tests: z-scores against exact values, exact chains from a successor
function, and building per-GPU systems. Imported as ``from helpers import ...`` (pytest puts this
folder on the path)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jaxqueue import policies, stats
from jaxqueue.theory import stationary

#: Policies that run on the per-GPU engine.
PER_GPU = tuple(p.name for p in policies.POLICIES.values() if "per-gpu" in p.engines)
#: Every (policy, engine) pair the simulator runs.
ALL_CASES = tuple((p.name, e) for p in policies.POLICIES.values() for e in p.engines)


def z_scores(values, exact):
    """(mean - exact) / standard error over replications (axis 0)."""
    values = np.asarray(values, np.float64)
    se = values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
    return (values.mean(axis=0) - exact) / se


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
    index, states = {start: 0}, [start]
    rows, cols, vals = [], [], []
    k = 0
    while k < len(states):
        for rate, nxt in successors(states[k]):
            if rate <= 0:
                continue
            t = index.get(nxt)
            if t is None:
                t = index[nxt] = len(states)
                states.append(nxt)
            if t != k:
                rows.append(k)
                cols.append(t)
                vals.append(rate)
        k += 1
    size = len(states)
    off = sp.csr_matrix((vals, (rows, cols)), shape=(size, size))
    generator = (off - sp.diags(np.asarray(off.sum(axis=1)).ravel())).tocsr()
    return states, stationary(generator)


def compare(run, model, n, exact):
    """z-scores of :func:`jaxqueue.stats.per_gpu` against ``exact`` (same keys, per class)."""
    q = stats.per_gpu(run, model, n)
    return {(k, i): float(z) for k, v in exact.items()
            for i, z in enumerate(np.atleast_1d(z_scores(q[k], np.asarray(v))))}
