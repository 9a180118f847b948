"""Exact revenue, and its exact gradient, of small pooled chains: ground truth for estimators.

Host-side NumPy/SciPy in float64, written from the policies' rules (not from the simulator).
:func:`stationary_gradient` is the generic tool: for a finite CTMC whose rates and reward
depend on parameters p, ``R = pi r`` and ``dR/dp_k = pi dr_k + pi dQ_k g``, with g the solution
of the Poisson equation ``Q g = -(r - R)``: the adjoint form of ``pi dr_k + dpi_k r``, ``dpi_k
Q = -pi dQ_k``, ``dpi_k 1 = 0``. One factorization of Q (state 0's row and column removed)
gives pi (transposed solve) and g, and each direction is then one sparse product. ``dQ_k`` and
``dr_k`` are central differences of the *entries* over one fixed transition list (the same
states on both sides): the entries are products of simple smooth factors (rates, softmax
probabilities, splits), so a relative step of 1e-5 gets them to about 1e-10, with no
hand-written derivative to get wrong. On it: :func:`gated_chain` and :func:`gated_gradient`
(the ``gated`` family, with fixed integer thresholds and as the mixture over their random
rounding; :func:`gated_revenue` and :func:`revenue_gradient` are the older entry points) and
:func:`sli_gradient` (SLI-aware Gate-and-Route with free router splits).

The FCFS label sequences fill an exact LU in badly (8,640 states: 1e7 entries and 12 s; 35,000:
over ten minutes), so chains over 2,000 states are solved iteratively to the same residuals:
pi by :func:`jaxqueue.theory.stationary`, g by damped Jacobi iteration.

Truncation: an arrival that would wait in a prefill queue already holding ``max_queue`` jobs is
lost, and so is a routed job finding its decode buffer full (``max_buffer``); ``truncation`` is
the stationary probability of the states where some event would lose a job.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from scipy.special import logsumexp

from .model import Model
from .patience import check_supported as check_patience
from .service import check_supported
from .theory import stationary

__all__ = ["gated_chain", "gated_gradient", "gated_revenue", "revenue_gradient",
           "rounding_law", "sli_gradient", "stationary_gradient"]

ROUNDINGS = ("triangular", "randomised")
PRICINGS = ("bundled", "separate")
_DIRECT_MAX = 2_000  # states solved by sparse LU by default


def _bad(field: str, value, allowed: str) -> ValueError:
    return ValueError(f"{field} = {value!r} is invalid: must be {allowed}")


def _integer(field: str, value, low: int, high: int | None = None) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer()
        ok = ok and low <= int(value) and (high is None or int(value) <= high)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise _bad(field, value, f"an integer in [{low}, {'inf' if high is None else high}]")
    return int(value)


def _reals(field: str, value, shape, low: float, *, strict=False, high=None) -> np.ndarray:
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        a = None
    ok = a is not None and a.shape == shape and np.all(np.isfinite(a))
    ok = ok and np.all(a > low if strict else a >= low) and (high is None or np.all(a <= high))
    if not ok:
        rng = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and <= {high}")
        raise _bad(field, value, f"finite, {rng}, with shape {shape}")
    return a


def _choice(field: str, value, allowed) -> str:
    if value not in allowed:
        raise _bad(field, value, f"one of {allowed}")
    return value


# ---- 1. the generic exact gradient ------------------------------------------------------------
def stationary_gradient(rows, cols, size: int, rates, reward, params, *, h: float = 1e-5,
                        method: str = "auto") -> dict:
    """Long-run reward of a finite CTMC and its exact gradient in the parameters.

    The chain has the transitions ``rows[t] -> cols[t]`` (duplicates add up, self-loops do
    nothing) at rates ``rates(p)[t]`` and earns ``reward(p)[s]`` per unit time in state s. The
    list is the structure: keep a transition whose rate is 0 at ``params`` but positive nearby.
    Every state must reach state 0 (the stationary law is then unique).

    Args:
        rows, cols: integer arrays (T,) of states in ``[0, size)``.
        size: number of states.
        rates: ``p -> (T,)`` rates, smooth in p.
        reward: ``p -> (size,)`` reward per unit time, smooth in p.
        params: the point p, shape (K,).
        h: relative step of the central differences of ``rates`` and ``reward``.
        method: "lu" (one sparse LU), "iterative" or "auto" (LU up to 2,000 states).

    Returns:
        ``{"value": R, "grad": dR/dp (K,), "pi": the stationary law, "residual": ||pi Q||_1
        over the largest exit rate}``.

    Raises:
        ValueError: no unique stationary law, or ``method`` unknown.
    """
    _choice("method", method, ("auto", "lu", "iterative"))
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    p = np.atleast_1d(np.asarray(params, np.float64))
    r = np.asarray(reward(p), np.float64)
    off = sp.csr_matrix((np.asarray(rates(p), np.float64), (rows, cols)), shape=(size, size))
    out_rate = np.asarray(off.sum(axis=1)).ravel()
    gen = (off - sp.diags(out_rate)).tocsr()
    direct = method == "lu" or (method == "auto" and (size <= _DIRECT_MAX or min(out_rate) <= 0))
    pi, g = (_lu_solve if direct else _iterative_solve)(gen, r)
    residual = float(np.abs(gen.T @ pi).sum()) / max(float(out_rate.max()), 1e-300)
    if not (residual < 1e-9 and np.all(pi > -1e-12)):
        raise ValueError(f"the chain has no unique stationary law (residual {residual:.2g})")
    grad = np.zeros(p.size)
    for k in range(p.size):
        e = np.zeros(p.size)
        e[k] = h * max(1.0, abs(p[k]))
        dq = (np.asarray(rates(p + e)) - np.asarray(rates(p - e))) / (2 * e[k])
        dr = (np.asarray(reward(p + e)) - np.asarray(reward(p - e))) / (2 * e[k])
        grad[k] = pi @ dr + np.sum(pi[rows] * dq * (g[cols] - g[rows]))
    return {"value": float(pi @ r), "grad": grad, "pi": pi, "residual": residual}


def _lu_solve(gen: sp.csr_matrix, r: np.ndarray):
    """pi and the Poisson solution g (``g_0 = 0``) from one sparse LU of ``Q[1:, 1:]``."""
    pi, g = np.ones(gen.shape[0]), np.zeros(gen.shape[0])
    if gen.shape[0] > 1:
        try:
            lu = splu(gen[1:, 1:].tocsc(), permc_spec="MMD_AT_PLUS_A")
        except RuntimeError as err:
            raise ValueError(f"the chain has no unique stationary law ({err})") from None
        pi[1:] = lu.solve(-gen[0, 1:].toarray().ravel(), trans="T")  # (Q^T pi)[1:] = 0, pi_0 = 1
        pi /= pi.sum()
        g[1:] = lu.solve(-(r[1:] - pi @ r))  # rows 1: of Q g = -(r - R); row 0 then holds
    return pi, g


def _iterative_solve(gen: sp.csr_matrix, r: np.ndarray):
    """pi (:func:`jaxqueue.theory.stationary`) and g by damped Jacobi, ``g <- g + w D^-1 (Q g +
    c)`` with ``c = r - R``: it contracts every error but a constant (which the gradient does not
    see) as fast as the lazy jump chain mixes. Past its work budget, the LU."""
    pi = stationary(gen)
    c, d = r - pi @ r, -gen.diagonal()
    tol = 1e-12 * max(float(np.abs(c).max()), 1e-300)
    step = (sp.identity(gen.shape[0], format="csr") + 0.8 * sp.diags(1 / d) @ gen).tocsr()
    g, kick = np.zeros(gen.shape[0]), 0.8 * c / d
    for k in range(1, int(1e9 / step.nnz)):
        g = step @ g + kick
        if k % 64 == 0 and np.abs(gen @ g + c).max() <= tol:
            return pi, g
    return _lu_solve(gen, r)  # slow, but exact


# ---- chains with factored rates ---------------------------------------------------------------
def _enumerate(start, successors, max_states: int):
    """BFS from ``start``; ``successors(s)`` yields ``(coef, factor keys, next)``, next None for
    an event that loses a job. A transition's rate is coef times the product of its factors.
    Returns states, rows, cols, coef, factor indices (T, width; 0 is the constant 1), the keys
    and the mask of the states where some event loses a job."""
    index, states, keys, cached = {start: 0}, [start], {("one",): 0}, {}
    rows, cols, coef, factors, lossy = [], [], [], [], []
    for k, state in enumerate(iter(states)):  # grows while it is read
        lossy.append(False)
        for c, fs, nxt in successors(state):
            if nxt is None:
                lossy[k] = True
                continue
            t = index.get(nxt)
            if t is None:
                if len(states) >= max_states:
                    raise ValueError(f"the chain has more than max_states = {max_states} states: "
                                     "lower max_queue, max_buffer, n or B")
                t = index[nxt] = len(states)
                states.append(nxt)
            if t != k:
                if fs not in cached:
                    cached[fs] = [keys.setdefault(f, len(keys)) for f in fs]
                rows.append(k)
                cols.append(t)
                coef.append(c)
                factors.append(cached[fs])
    idx = np.zeros((len(factors), max([len(f) for f in factors] + [1])), np.int64)
    for t, f in enumerate(factors):
        idx[t, :len(f)] = f
    return states, np.array(rows), np.array(cols), np.array(coef, float), idx, list(keys), lossy


def _factor_values(keys, model: Model, n: int):
    """``values(named parameters) -> (len(keys),)``. Keys: ("one",); (name, i) for the rates
    ``n lambda``, theta, mu_p, mu_m, mu_s and for ``split`` and ``stay = 1 - split``; and
    ("gate", X, eligible, j): the probability ``softmax(-xi / T)_j`` over the eligible classes,
    ``xi = (X + offset) / t - n``, that the gate admits class j at occupancy X."""
    num = model.num_classes
    mu = {k: np.asarray(getattr(model, k), np.float64) for k in ("mu_p", "mu_m", "mu_s")}
    simple = [(k, key) for k, key in enumerate(keys) if key[0] not in ("one", "gate")]
    gate = [(k, key) for k, key in enumerate(keys) if key[0] == "gate"]
    pos, chosen = (np.array([g[0] for g in gate], int), np.array([g[1][3] for g in gate], int))
    Xg = np.array([g[1][1] for g in gate], np.float64).reshape(len(gate), num)
    mask = np.array([g[1][2] for g in gate], bool).reshape(len(gate), num)

    def values(d):
        split = d.get("split", np.ones(num))
        base = {"lam": n * d["lambda_"], "theta": d["theta"], "split": split, "stay": 1 - split,
                **mu}
        v = np.ones(len(keys))
        for k, (name, i) in simple:
            v[k] = base[name][i]
        if gate:
            xi = (Xg + d.get("offset", 0.0)) / np.exp(d["log_targets"]) - n
            z = np.where(mask, -xi / np.exp(d["log_temperature"]), -np.inf)
            v[pos] = np.exp(z[np.arange(len(gate)), chosen] - logsumexp(z, axis=1))
        return v

    return values


def _unpack(p, layout, num: int) -> dict:
    """Named parameters from the flat vector: per-class arrays, or floats for scalars."""
    out, k = {}, 0
    for name, per_class in layout:
        out[name] = p[k:k + num].copy() if per_class else float(p[k])
        k += num if per_class else 1
    return out


def _solve(chain, arrays, model, n, layout, point: dict, pricing, h) -> dict:
    """Revenue, gradient (named as ``layout``), levels per GPU, size and truncation."""
    states, rows, cols, coef, idx, keys, lossy = chain
    num, values = model.num_classes, _factor_values(keys, model, n)
    a = {k: np.asarray(getattr(model, k), np.float64)
         for k in ("mu_p", "mu_m", "mu_s", "P", "D", "w")}
    done = arrays["y_m"] @ np.diag(a["mu_m"]) + arrays["y_s"] @ np.diag(a["mu_s"])
    r = (done @ a["w"] if pricing == "bundled" else arrays["x"] @ (a["mu_p"] * a["P"])
         * float(model.c_p) + done @ a["D"] * float(model.c_d)) / n  # Eq. 21-23, per GPU
    p0 = np.concatenate([np.atleast_1d(point[name]) for name, _ in layout])
    out = stationary_gradient(
        rows, cols, len(states), lambda p: coef * values(_unpack(p, layout, num))[idx].prod(1),
        lambda p: r, p0, h=h)
    pi = out["pi"]
    return {"revenue": out["value"], "grad": _unpack(out["grad"], layout, num),
            "levels": {k: pi @ v / n for k, v in arrays.items()}, "num_states": len(states),
            "truncation": float(pi[np.array(lossy)].sum())}


def _bump(t: tuple, i: int, d: int) -> tuple:
    return t[:i] + (t[i] + d,) + t[i + 1:]


def _cascade(M, num, blocked):
    """The gate's zero-time admissions: ``admit(X, Qp, *rest) -> [(gate keys, X', Qp')]``,
    admitting while ``sum X < M`` and ``blocked(X, *rest)`` is False, each time class j among
    the eligible ones (``eligible(X, Qp)[j]``) with its softmax probability (probabilities
    along a cascade multiply; a single eligible class needs no factor)."""

    @functools.cache
    def admit(X, Qp, eligible, *rest):
        mask = eligible(X, Qp)
        if sum(X) >= M or not any(mask) or blocked(X, *rest):
            return [((), X, Qp)]
        return [(((("gate", X, mask, j),) if sum(mask) > 1 else ()) + ks, X2, Q2)
                for j in range(num) if mask[j]
                for ks, X2, Q2 in admit(_bump(X, j, 1), _bump(Qp, j, -1), eligible, *rest)]

    return admit


def _common(model: Model, n, M, targets, temperature, max_queue, max_buffer, pricing,
            max_states):
    """Checked (n, M, max_queue, max_buffer, pricing, max_states) and the chain's parameters."""
    check_supported(getattr(model, "service", None), "the exact chains of "
                    "jaxqueue.exact_gradient")
    # The chains count waiting jobs, abandoning at rate theta each: the exponential law only.
    check_patience(getattr(model, "patience", None), "the exact chains of "
                   "jaxqueue.exact_gradient", counted=True)
    num, n = model.num_classes, _integer("n", n, 1)
    point = {"log_targets": np.log(_reals("targets", targets, (num,), 0.0, strict=True)),
             "log_temperature": np.log(_reals("temperature", temperature, (), 0.0, strict=True)),
             "lambda_": np.asarray(model.lambda_, np.float64),
             "theta": np.asarray(model.theta, np.float64)}
    return (n, _integer("M", M, 0, n), _integer("max_queue", max_queue, 0),
            _integer("max_buffer", max_buffer, 0), _choice("pricing", pricing, PRICINGS),
            _integer("max_states", max_states, 1), point)


# ---- 2. the gated family ------------------------------------------------------------------------
_GATED = (("log_targets", True), ("offset", False), ("log_temperature", False),
          ("lambda_", True), ("theta", True))


def gated_chain(model: Model, n: int, M: int, targets, offset: float, temperature: float, *,
                slack_jobs: int | None = None, cap_jobs=None, max_queue: int = 4,
                max_buffer: int = 4, pricing: str = "bundled", max_states: int = 60_000,
                h: float = 1e-5) -> dict:
    """Exact revenue and gradient of the ``gated`` chain with fixed integer thresholds.

    Class-i arrivals (rate n lambda_i) join prefill queue i. The gate, after every event and
    repeatedly in zero time: a prefill may start iff ``sum X < M`` and ``sum X < F + K_s`` (F
    the free decode slots, after routing); the eligible classes have ``Qp_i > 0`` and ``X_i <
    K_c,i``; class j is admitted with probability ``softmax(-xi / T)_j`` among them, ``xi_j =
    (X_j + offset) / t_j - n``. The greedy router sends a finished prefill to a free solo slot
    (``B (n - M)``), else a free mixed slot (``(B - 1) M``), else the FCFS decode buffer (a
    sequence of class labels); a freed decode slot takes the buffer's head. Every waiting job
    abandons at theta_i; jobs in service never do.

    Args:
        model: the scenario (rates from its properties).
        n: GPUs, >= 1.
        M: mixed GPUs, in [0, n].
        targets: t_i > 0, prefills per GPU, shape (I,).
        offset: >= 0.
        temperature: T > 0.
        slack_jobs: K_s, an integer (None: never binds).
        cap_jobs: K_c, integers, shape (I,) (None: never bind).
        max_queue, max_buffer: prefill queue (all classes) and decode buffer limits, >= 0.
        pricing: "bundled" or "separate".
        max_states: refuse larger chains.
        h: relative step of the central differences of the generator's entries.

    Returns:
        ``{"revenue", "grad": {"log_targets", "offset", "log_temperature", "lambda_" (the
        model's per-GPU rate), "theta"}, "levels": {"x", "y_m", "y_s", "q_p", "q_d"} (per GPU
        and class), "num_states", "truncation"}``.
    """
    num = model.num_classes
    n, M, max_queue, max_buffer, pricing, max_states, point = _common(
        model, n, M, targets, temperature, max_queue, max_buffer, pricing, max_states)
    point["offset"] = float(_reals("offset", offset, (), 0.0))
    K_s = M if slack_jobs is None else _integer("slack_jobs", slack_jobs, -(10**9))
    K_c = (M,) * num if cap_jobs is None else tuple(
        _integer("cap_jobs", k, -(10**9)) for k in np.ravel(cap_jobs))
    if len(K_c) != num:
        raise _bad("cap_jobs", cap_jobs, f"{num} integers (one per class)")
    B = int(model.B)
    cap_m, cap_s = (B - 1) * M, B * (n - M)
    admit = _cascade(M, num, lambda X, Ym, Ys: sum(X) >= cap_s - sum(Ys) + cap_m - sum(Ym)
                     + K_s)

    def eligible(X, Qp):
        return tuple(Qp[j] > 0 and X[j] < K_c[j] for j in range(num))

    def successors(state):
        X, Ym, Ys, Qp, buf = state

        def then(c, f, X, Ym, Ys, Qp, buf):  # the event, then the gate
            for ks, X2, Q2 in admit(X, Qp, eligible, Ym, Ys):
                yield c, f + ks, None if sum(Q2) > max_queue else (X2, Ym, Ys, Q2, buf)

        for i in range(num):
            yield from then(1.0, (("lam", i),), X, Ym, Ys, _bump(Qp, i, 1), buf)
            if Qp[i]:
                yield from then(Qp[i], (("theta", i),), X, Ym, Ys, _bump(Qp, i, -1), buf)
            if X[i]:  # route with the capacities before the event, then admit
                Ym2, Ys2, buf2 = Ym, Ys, buf
                if sum(Ys) < cap_s:
                    Ys2 = _bump(Ys, i, 1)
                elif sum(Ym) < cap_m:
                    Ym2 = _bump(Ym, i, 1)
                elif len(buf) < max_buffer:
                    buf2 = buf + (i,)
                else:
                    yield X[i], (("mu_p", i),), None
                yield from then(X[i], (("mu_p", i),), _bump(X, i, -1), Ym2, Ys2, Qp, buf2)
            if Ym[i]:  # the freed slot takes the buffer's head, on the same pool
                Y2 = _bump(_bump(Ym, i, -1), buf[0], 1) if buf else _bump(Ym, i, -1)
                yield from then(Ym[i], (("mu_m", i),), X, Y2, Ys, Qp, buf[1:])
            if Ys[i]:
                Y2 = _bump(_bump(Ys, i, -1), buf[0], 1) if buf else _bump(Ys, i, -1)
                yield from then(Ys[i], (("mu_s", i),), X, Ym, Y2, Qp, buf[1:])
        for k, c in enumerate(buf):  # each waiting job on its own clock
            yield 1.0, (("theta", c),), (X, Ym, Ys, Qp, buf[:k] + buf[k + 1:])

    zeros = (0,) * num
    chain = _enumerate((zeros, zeros, zeros, zeros, ()), successors, max_states)
    st = chain[0]
    arrays = {name: np.array([s[k] for s in st], np.float64)
              for k, name in enumerate(("x", "y_m", "y_s", "q_p"))}
    arrays["q_d"] = np.array([np.bincount(s[4], minlength=num) for s in st], np.float64)
    return _solve(chain, arrays, model, n, _GATED, point, pricing, h)


def rounding_law(v: float, rounding: str = "triangular"):
    """The law of the integer drawn from a real v, and its derivative in v.

    ``triangular``: ``round(v + U1 - U2)``, so ``P(k) = F(k + 1/2 - v) - F(k - 1/2 - v)`` with F
    the triangular CDF on (-1, 1), continuously differentiable in v (at an integer the expected
    value's slope is the central one). ``randomised``: ``floor(v) + 1[U < v - floor(v)]`` (v
    within 1e-6 of an integer counts as that integer, as the simulator does); its derivative
    jumps at the integers, where the right one is returned.

    Returns:
        (integers k, P(k), dP(k)/dv) over the k with P > 0 or dP != 0.
    """
    v = float(v)
    if _choice("rounding", rounding, ROUNDINGS) == "triangular":
        k = np.arange(np.round(v) - 2, np.round(v) + 3)
        x = np.clip(np.array([k - 0.5 - v, k + 0.5 - v]), -1, 1)
        cdf = np.where(x <= 0, (1 + x) ** 2 / 2, 1 - (1 - x) ** 2 / 2)
        prob, dprob = cdf[1] - cdf[0], (1 - np.abs(x[0])) - (1 - np.abs(x[1]))
    else:
        v = float(np.round(v)) if abs(v - np.round(v)) <= 1e-6 * max(1.0, abs(v)) else v
        k = np.floor(v) + np.array([0.0, 1.0])
        prob, dprob = np.array([1 - (v - k[0]), v - k[0]]), np.array([-1.0, 1.0])
    keep = (prob > 0) | (dprob != 0)
    return k[keep].astype(int), prob[keep], dprob[keep]


def gated_gradient(model: Model, n: int, targets, offset: float, share: float, slack: float,
                   caps, temperature: float, *, rounding: str = "triangular",
                   max_queue: int = 4, max_buffer: int = 4, pricing: str = "bundled",
                   max_states: int = 60_000, h: float = 1e-5) -> dict:
    """Exact expected revenue of the ``gated`` family and its gradient in every parameter.

    M, K_s and K_c,i are drawn once, independently, from ``n share``, ``n slack`` and ``n
    caps_i`` (:func:`rounding_law`); negative draws become 0 and M is at most n, as in the
    simulator. The expected revenue is the mixture of :func:`gated_chain` over the draws. A K_s
    or K_c,i >= M never binds, so each effective chain is solved once.

    Returns:
        ``{"revenue", "grad": {"log_targets", "offset", "share", "slack", "caps",
        "log_temperature", "lambda_", "theta"}, "levels" (the mixture's, per GPU), "truncation"
        (the mixture's), "num_states" (of the largest chain), "chains" (number solved),
        "outcomes": [(M, K_s, K_c, probability, revenue)]}``.

    Raises:
        ValueError: an argument out of range (as :func:`gated_chain`; share in [0, 1], slack
            and caps >= 0, rounding one of ``ROUNDINGS``).
    """
    num, n = model.num_classes, _integer("n", n, 1)
    values = [float(_reals("share", share, (), 0.0, high=1.0)),
              float(_reals("slack", slack, (), 0.0)), *_reals("caps", caps, (num,), 0.0)]
    laws = [rounding_law(n * v, rounding) for v in values]
    mix = {}  # effective (M, K_s, K_c) -> [probability, its derivatives in (share, slack, caps)]
    for combo in itertools.product(*[zip(*law, strict=True) for law in laws]):
        ks, ps, ds = (np.array(a) for a in zip(*combo, strict=True))
        M = int(min(max(ks[0], 0), n))
        key = (M, int(min(max(ks[1], 0), M)), tuple(int(min(max(k, 0), M)) for k in ks[2:]))
        entry = mix.setdefault(key, [0.0, np.zeros(2 + num)])
        entry[0] += np.prod(ps)
        entry[1] += n * np.array([ds[a] * np.prod(np.delete(ps, a)) for a in range(2 + num)])
    chains = {key: gated_chain(model, n, key[0], targets, offset, temperature,
                               slack_jobs=key[1], cap_jobs=key[2], max_queue=max_queue,
                               max_buffer=max_buffer, pricing=pricing, max_states=max_states,
                               h=h) for key in mix}

    def mean(get):
        return sum(prob * get(chains[key]) for key, (prob, _) in mix.items())

    d = sum(dprob * chains[key]["revenue"] for key, (_, dprob) in mix.items())
    grad = {name: mean(lambda c, name=name: c["grad"][name]) for name, _ in _GATED}
    grad.update(share=float(d[0]), slack=float(d[1]), caps=d[2:])
    return {"revenue": mean(lambda c: c["revenue"]), "grad": grad,
            "levels": {k: mean(lambda c, k=k: c["levels"][k]) for k in next(iter(
                chains.values()))["levels"]},
            "truncation": mean(lambda c: c["truncation"]),
            "num_states": max(c["num_states"] for c in chains.values()), "chains": len(chains),
            "outcomes": [(*key, float(prob), chains[key]["revenue"])
                         for key, (prob, _) in mix.items()]}


def gated_revenue(model: Model, n: int, M: int, targets, offset: float, tau: float, *,
                  max_queue: int = 4, max_buffer: int = 4, pricing: str = "bundled") -> dict:
    """Exact stationary revenue per GPU of the ``gated`` chain with temperature ``tau``, M mixed
    GPUs, and slack and caps that never bind (:func:`gated_chain`).

    Returns ``{"revenue", "x", "y_m", "y_s", "q_p", "q_d", "num_states", "truncation",
    "grad"}`` (levels per GPU and class; ``grad`` as :func:`gated_chain`'s).
    """
    c = gated_chain(model, n, M, targets, offset, tau, max_queue=max_queue,
                    max_buffer=max_buffer, pricing=pricing)
    return {"revenue": c["revenue"], **c["levels"], "num_states": c["num_states"],
            "truncation": c["truncation"], "grad": c["grad"]}


def revenue_gradient(model: Model, n: int, M: int, targets, offset: float, tau: float, *,
                     h: float = 1e-5, **kwargs) -> np.ndarray:
    """Exact d(revenue)/d(log targets, offset) of :func:`gated_revenue`'s chain."""
    g = gated_chain(model, n, M, targets, offset, tau, h=h, **kwargs)["grad"]
    return np.concatenate([g["log_targets"], [g["offset"]]])


# ---- 3. the SLI-aware chain ---------------------------------------------------------------------
_SLI = (("log_targets", True), ("split", True), ("log_temperature", False), ("lambda_", True),
        ("theta", True))


def sli_gradient(model: Model, n: int, M: int, targets, split, temperature: float, rate_mixed,
                 rate_solo, *, max_queue: int = 4, max_buffer: int = 4,
                 pricing: str = "bundled", max_states: int = 60_000, h: float = 1e-5) -> dict:
    """Exact revenue and gradient of SLI-aware Gate-and-Route with free router splits.

    Gate: while ``sum X < M``, admit class j with probability ``softmax(-xi / T)_j`` among the
    classes with ``Qp_j > 0``, ``xi_j = X_j / t_j - n``. Router: a finished class-i prefill goes
    to the solo side with probability ``split_i``, else to the mixed side, and there takes a
    free slot (solo ``B (n - M)``, mixed ``(B - 1) M``) or waits in that side's buffer
    (per-class counts, at most ``max_buffer`` jobs per side). A slot freed on a side with
    waiting jobs takes class j with probability proportional to ``rate_mixed[j]`` (or
    ``rate_solo[j]``: the planned ``mu y*``) among the waiting classes, uniformly if those are
    all 0. Waiting jobs abandon at theta_i.

    Returns:
        ``{"revenue", "grad": {"log_targets", "split", "log_temperature", "lambda_", "theta"},
        "levels": {"x", "y_m", "y_s", "q_p", "q_ds", "q_dm"}, "num_states", "truncation"}``.
    """
    num = model.num_classes
    n, M, max_queue, max_buffer, pricing, max_states, point = _common(
        model, n, M, targets, temperature, max_queue, max_buffer, pricing, max_states)
    point["split"] = _reals("split", split, (num,), 0.0, high=1.0)
    plan = {"mixed": _reals("rate_mixed", rate_mixed, (num,), 0.0),
            "solo": _reals("rate_solo", rate_solo, (num,), 0.0)}
    B = int(model.B)
    cap = {"mixed": (B - 1) * M, "solo": B * (n - M)}
    admit = _cascade(M, num, lambda X: False)

    def waiting(X, Qp):
        return tuple(q > 0 for q in Qp)

    def take(side, Y, Qd):
        """[(probability, Y', Qd')] once a slot frees on ``side``."""
        js = [j for j in range(num) if Qd[j] > 0]
        w = plan[side][js]
        w = w / w.sum() if w.sum() > 0 else np.full(len(js), 1.0 / max(len(js), 1))
        return [(p, _bump(Y, j, 1), _bump(Qd, j, -1)) for p, j in zip(w, js, strict=True)] or [
            (1.0, Y, Qd)]

    def successors(state):
        X, Ym, Ys, Qp, Qds, Qdm = state
        for i in range(num):
            for ks, X2, Q2 in admit(X, _bump(Qp, i, 1), waiting):
                yield 1.0, (("lam", i),) + ks, (None if sum(Q2) > max_queue
                                                else (X2, Ym, Ys, Q2, Qds, Qdm))
            if Qp[i]:
                yield Qp[i], (("theta", i),), (X, Ym, Ys, _bump(Qp, i, -1), Qds, Qdm)
            for side, factor in (("solo", "split"), ("mixed", "stay")):
                if not X[i]:
                    break
                side_state = {"solo": [Ys, Qds], "mixed": [Ym, Qdm]}
                Y, Qd = side_state[side]
                if sum(Y) < cap[side]:
                    side_state[side][0] = _bump(Y, i, 1)
                elif sum(Qd) < max_buffer:
                    side_state[side][1] = _bump(Qd, i, 1)
                else:
                    yield X[i], (("mu_p", i), (factor, i)), None
                (Ys2, Qds2), (Ym2, Qdm2) = side_state["solo"], side_state["mixed"]
                for ks, X2, Q2 in admit(_bump(X, i, -1), Qp, waiting):
                    yield X[i], (("mu_p", i), (factor, i)) + ks, (X2, Ym2, Ys2, Q2, Qds2, Qdm2)
            if Ym[i]:
                for p, Y2, Qd2 in take("mixed", _bump(Ym, i, -1), Qdm):
                    yield Ym[i] * p, (("mu_m", i),), (X, Y2, Ys, Qp, Qds, Qd2)
            if Ys[i]:
                for p, Y2, Qd2 in take("solo", _bump(Ys, i, -1), Qds):
                    yield Ys[i] * p, (("mu_s", i),), (X, Ym, Y2, Qp, Qd2, Qdm)
            if Qds[i]:
                yield Qds[i], (("theta", i),), (X, Ym, Ys, Qp, _bump(Qds, i, -1), Qdm)
            if Qdm[i]:
                yield Qdm[i], (("theta", i),), (X, Ym, Ys, Qp, Qds, _bump(Qdm, i, -1))

    chain = _enumerate(((0,) * num,) * 6, successors, max_states)
    arrays = {name: np.array([s[k] for s in chain[0]], np.float64)
              for k, name in enumerate(("x", "y_m", "y_s", "q_p", "q_ds", "q_dm"))}
    return _solve(chain, arrays, model, n, _SLI, point, pricing, h)
