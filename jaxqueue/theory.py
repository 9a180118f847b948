"""Exact stationary formulas used as oracles for the simulator's statistical tests.

Two oracles, both host-side NumPy/SciPy in float64 and written independently of the simulator:

- :func:`erlang_a`: the M/M/N+M (Erlang-A) queue, solved exactly as a birth-death chain.
- :func:`pooled_chain` / :func:`pooled_stationary`: the pooled prefill/decode CTMC of a small
  system (static planning with M mixed GPUs, a prefill gate, the greedy router of Sec. 4.1),
  enumerated state by state and solved from its generator. Only small systems fit: the FCFS
  decode buffer is a sequence of class labels, so the state space grows like I^max_buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, gmres, spilu, splu
from scipy.special import logsumexp

if TYPE_CHECKING:
    from .model import Model

__all__ = ["POLICIES", "PooledChain", "erlang_a", "pooled_chain", "pooled_stationary",
           "stationary"]

#: Policies the pooled chain implements (names as in :mod:`jaxqueue.policies`).
POLICIES = ("gate-and-route", "prioritize-and-route", "fg-sp")

_ERLANG_MAX_STATES = 5_000_000
_POWER_MIN = 1_000  # states; larger chains try a damped Jacobi iteration first
_POWER_WORK = 1e9  # multiply-adds that iteration may spend (about a second)
_DIRECT_MAX = 8_000  # states; larger chains use ILU-preconditioned GMRES
_RESIDUAL = 1e-11


def _bad(field: str, value, allowed: str) -> ValueError:
    return ValueError(f"{field} = {value!r} is invalid: must be {allowed}")


def _integer(field: str, value, low: int) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and int(value) >= low
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise _bad(field, value, f"an integer >= {low}")
    return int(value)


def _rate(field: str, value, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _bad(field, value, "a number") from None
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        raise _bad(field, value, f"finite and {'>' if positive else '>='} 0")
    return v


# ---- Erlang-A ---------------------------------------------------------------------------------
def erlang_a(servers: int, arrival_rate: float, service_rate: float, patience_rate: float, *,
             tol: float = 1e-14) -> dict:
    """Stationary performance of the M/M/N+M (Erlang-A) queue.

    Poisson arrivals at ``arrival_rate`` (lam), ``servers`` (N) exponential servers of rate
    ``service_rate`` (mu), and every waiting customer abandons at ``patience_rate`` (theta). The
    number in system K is a birth-death chain with birth rate lam and death rate
    ``min(k, N) mu + (k - N)^+ theta``; its weights are summed in log space (no overflow for
    large N) and truncated at the first level K_max past which both the remaining mass and the
    remaining mass of ``(k - N)^+`` are provably below ``tol`` (the death rates grow, so the
    tail is bounded by a geometric series).

    Args:
        servers: N, an integer >= 1.
        arrival_rate: lam >= 0, per unit time.
        service_rate: mu > 0, per server per unit time.
        patience_rate: theta >= 0 per waiting customer; theta = 0 is Erlang-C (needs lam < N mu).
        tol: bound on the neglected tail mass (and on its contribution to the mean queue).

    Returns:
        dict with ``abandon_probability`` (theta E[Q] / lam, 0 when lam = 0), ``mean_queue``
        E[(K-N)^+], ``mean_busy`` E[min(K, N)], ``mean_in_system`` E[K], ``wait_probability``
        P(K >= N) (an arrival waits, by PASTA), ``throughput`` mu E[busy], ``num_states`` and
        ``distribution`` (the truncated stationary law of K, from k = 0).

    Raises:
        ValueError: an argument out of range, named with its allowed range.
    """
    n = _integer("servers", servers, 1)
    lam = _rate("arrival_rate", arrival_rate)
    mu = _rate("service_rate", service_rate, positive=True)
    theta = _rate("patience_rate", patience_rate)
    tol = _rate("tol", tol, positive=True)
    if theta == 0 and lam >= n * mu:
        raise _bad("arrival_rate", arrival_rate,
                   f"< servers*service_rate = {n * mu!r} when patience_rate = 0 (else unstable)")
    if lam == 0:
        p = np.ones(1)
    else:
        top = n + 64
        while True:
            k = np.arange(1, top + 1, dtype=np.float64)
            death = mu * np.minimum(k, n) + theta * np.maximum(k - n, 0.0)
            logw = np.concatenate([[0.0], np.cumsum(np.log(lam) - np.log(death))])
            r = lam / (mu * n + theta * (top + 1 - n))  # ratio p_{k+1}/p_k, non-increasing
            if top >= n and r < 1:
                tail = np.exp(logw[-1] - logsumexp(logw))  # p_top, normalised on [0, top]
                # sum_{j>=1} p_top r^j (1 + (top + j - n)) bounds the tail mass plus queue mass.
                bound = tail * (r / (1 - r) * (1 + top - n) + r / (1 - r) ** 2)
                if bound < tol:
                    break
            if top >= _ERLANG_MAX_STATES:
                raise ValueError(f"erlang_a needs more than {_ERLANG_MAX_STATES} states: "
                                 "patience_rate is too small for this overload")
            top = n + 2 * (top - n)
        p = np.exp(logw - logsumexp(logw))
        p /= p.sum()
    levels = np.arange(p.size, dtype=np.float64)
    mean_queue = float(p @ np.maximum(levels - n, 0.0))
    mean_busy = float(p @ np.minimum(levels, n))
    return {
        "abandon_probability": theta * mean_queue / lam if lam > 0 else 0.0,
        "mean_queue": mean_queue,
        "mean_busy": mean_busy,
        "mean_in_system": float(p @ levels),
        "wait_probability": float(p[n:].sum()),
        "throughput": mu * mean_busy,
        "num_states": int(p.size),
        "distribution": p,
    }


def erlang_a_latency(servers: int, arrival_rate: float, service_rate: float,
                     patience_rate: float, times) -> dict:
    """The waiting-time law of the customers an M/M/N+M (Erlang-A) queue serves, first come
    first served, and the law of their wait plus service (time to first token, when the
    service is a prefill).

    A customer arriving to ``k`` in system (the stationary law, by PASTA) starts at once when
    ``k < N``. Otherwise, with ``j = k - N`` customers ahead, it moves up at rate ``N mu + i
    theta`` while ``i`` are ahead (a service ends, or one of them abandons) and starts once none
    is: its offered wait is a sum of exponentials of rates ``N mu + j theta, ..., N mu``, and it
    is served if its own patience, Exp(theta), outlasts that. Both laws are absorption
    probabilities of one phase-type chain (the queue positions, each also killed at rate theta
    by the customer's patience, then the service), read off the matrix exponential at each time.

    Args:
        servers, arrival_rate, service_rate, patience_rate: as :func:`erlang_a`.
        times: the times t at which to give the laws (>= 0).

    Returns:
        dict with ``times``, ``served_probability``, ``wait_cdf`` (P(W <= t | served)) and
        ``ttft_cdf`` (P(W + S <= t | served), S ~ Exp(mu) the customer's own service).
    """
    from scipy.linalg import expm

    stat = erlang_a(servers, arrival_rate, service_rate, patience_rate)
    n, mu, theta = int(servers), float(service_rate), float(patience_rate)
    times = np.atleast_1d(np.asarray(times, np.float64))
    if times.ndim != 1 or not np.all(np.isfinite(times)) or np.any(times < 0):
        raise _bad("times", times, "finite and >= 0")
    p = stat["distribution"]
    ahead = p[n:]  # an arrival finds j = 0, 1, ... waiting ahead of it (all servers busy)
    J = ahead.size
    # States: queue position i = 0..J-1 (i ahead), then in service (J), served (J+1), gone (J+2).
    G = np.zeros((J + 3, J + 3))
    for i in range(J):
        move = n * mu + i * theta
        G[i, i - 1 if i > 0 else J] += move
        G[i, J + 2] += theta
        G[i, i] = -(move + theta)
    G[J, J + 1] = mu
    G[J, J] = -mu
    start = np.zeros(J + 3)
    start[:J] = ahead
    start[J] = p[:n].sum()
    # Served: with i ahead the next move beats the patience with odds move : theta.
    move = n * mu + theta * np.arange(J)
    served = float(start[J] + ahead @ np.cumprod(move / (move + theta)))
    wait, ttft = [], []
    for t in times:
        law = start @ expm(G * t)
        wait.append((law[J] + law[J + 1]) / served)
        ttft.append(law[J + 1] / served)
    return {"times": times, "served_probability": float(served),
            "wait_cdf": np.asarray(wait), "ttft_cdf": np.asarray(ttft)}


# ---- pooled prefill/decode chain ------------------------------------------------------------
class PooledChain(NamedTuple):
    """A solved pooled CTMC.

    Attributes:
        states: one tuple ``(X, Ym, Ys, Qp, buf)`` per state. X, Ym, Ys are per-class counts
            (prefills, mixed decodes, solo decodes); Qp is the prefill queue (per-class counts,
            or for ``fg-sp`` a tuple of class labels, head first); buf is the decode buffer
            (class labels, head first).
        generator: the generator Q (CSR, rows sum to zero), ``Q[s, s']`` the rate s -> s'.
        pi: the stationary distribution (``pi @ Q = 0``, sums to one).
    """

    states: list
    generator: sp.csr_matrix
    pi: np.ndarray


def _class_array(field: str, value, num: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (num,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise _bad(field, value, f"{num} finite values >= 0 (one per class)")
    return arr


def _gate(policy, X, Qp, n, x_star, q_p_star, ratio) -> int:
    """The class whose waiting job takes a freed prefill slot (X counted after the completion)."""
    if policy == "fg-sp":
        return Qp[0]
    waiting = [j for j in range(len(Qp)) if Qp[j] > 0]
    if policy == "prioritize-and-route":  # largest D/P, ties to the lower index
        return min(waiting, key=lambda j: (-ratio[j], j))

    # Gate-and-Route (Sec. 4.1): smallest xi_j = (X_j - n x_j*)/x_j*, written X_j/x_j* - n so
    # that classes with X_j = 0 tie exactly; xi = +inf when x_j* = 0. Ties: larger
    # Q_p,j - n q_p,j*, then lower index.
    def key(j):
        xi = X[j] / x_star[j] - n if x_star[j] > 0 else np.inf
        return (xi, -(Qp[j] - n * q_p_star[j]), j)

    return min(waiting, key=key)


def _bump(t: tuple, i: int, d: int) -> tuple:
    return t[:i] + (t[i] + d,) + t[i + 1:]


def pooled_chain(model: Model, n: int, M: int, policy: str, *, x_star=None, q_p_star=None,
                 max_queue: int = 4, max_buffer: int | None = None,
                 max_states: int = 100_000) -> PooledChain:
    """Enumerates, builds and solves the pooled prefill/decode CTMC (see :func:`pooled_stationary`).

    Returns:
        The reachable states (from the empty system), the generator and its stationary law.

    Raises:
        ValueError: an argument out of range (named), a chain over ``max_states``, or a
            reducible chain.
        RuntimeError: the stationary solve missed its residual bound.
    """
    from .patience import check_supported as check_patience
    from .service import check_supported

    check_supported(getattr(model, "service", None), "the exact pooled chain of jaxqueue.theory")
    # The chain counts waiting jobs, abandoning at rate theta each: the exponential law only.
    check_patience(getattr(model, "patience", None), "the exact pooled chain of jaxqueue.theory",
                   counted=True)
    n = _integer("n", n, 1)
    M = _integer("M", M, 0)
    if M > n:
        raise _bad("M", M, f"an integer in [0, n] = [0, {n}]")
    if policy not in POLICIES:
        raise _bad("policy", policy, f"one of {POLICIES}")
    num = model.num_classes
    if policy == "gate-and-route" and x_star is None:
        raise _bad("x_star", x_star, f"{num} finite values >= 0 for gate-and-route")
    x_star = None if x_star is None else _class_array("x_star", x_star, num)
    q_p_star = np.zeros(num) if q_p_star is None else _class_array("q_p_star", q_p_star, num)
    max_queue = _integer("max_queue", max_queue, 0)
    max_buffer = max_queue if max_buffer is None else _integer("max_buffer", max_buffer, 0)
    max_states = _integer("max_states", max_states, 1)

    lam = n * np.asarray(model.lambda_, dtype=np.float64)
    theta = np.asarray(model.theta, dtype=np.float64)
    mu_p, mu_m, mu_s = (np.asarray(r, dtype=np.float64)
                        for r in (model.mu_p, model.mu_m, model.mu_s))
    ratio = np.asarray(model.D, dtype=np.float64) / np.asarray(model.P, dtype=np.float64)
    B = int(model.B)
    cap_m, cap_s = (B - 1) * M, B * (n - M)
    fifo = policy == "fg-sp"

    def successors(state):
        X, Ym, Ys, Qp, buf = state
        qlen = len(Qp) if fifo else sum(Qp)
        out = []
        for i in range(num):
            if lam[i] > 0:  # arrival: start prefill if a slot is free, else queue (or lost)
                if sum(X) < M:
                    out.append((lam[i], (_bump(X, i, 1), Ym, Ys, Qp, buf)))
                elif qlen < max_queue:
                    Qp2 = Qp + (i,) if fifo else _bump(Qp, i, 1)
                    out.append((lam[i], (X, Ym, Ys, Qp2, buf)))
            if not fifo and Qp[i] > 0 and theta[i] > 0:  # abandonment from the prefill queue
                out.append((theta[i] * Qp[i], (X, Ym, Ys, _bump(Qp, i, -1), buf)))
            if X[i] > 0:  # prefill completion: route the job, then the gate refills the slot
                X2, Ym2, Ys2, Qp2, buf2 = _bump(X, i, -1), Ym, Ys, Qp, buf
                if sum(Ys) < cap_s:
                    Ys2 = _bump(Ys, i, 1)
                elif sum(Ym) < cap_m:
                    Ym2 = _bump(Ym, i, 1)
                elif len(buf) < max_buffer:
                    buf2 = buf + (i,)
                if qlen > 0:
                    j = _gate(policy, X2, Qp, n, x_star, q_p_star, ratio)
                    Qp2 = Qp[1:] if fifo else _bump(Qp, j, -1)
                    X2 = _bump(X2, j, 1)
                out.append((mu_p[i] * X[i], (X2, Ym2, Ys2, Qp2, buf2)))
            if Ym[i] > 0:  # mixed decode completion: the buffer's head takes the slot
                Ym2 = _bump(Ym, i, -1)
                if buf:
                    Ym2 = _bump(Ym2, buf[0], 1)
                out.append((mu_m[i] * Ym[i], (X, Ym2, Ys, Qp, buf[1:])))
            if Ys[i] > 0:  # solo decode completion
                Ys2 = _bump(Ys, i, -1)
                if buf:
                    Ys2 = _bump(Ys2, buf[0], 1)
                out.append((mu_s[i] * Ys[i], (X, Ym, Ys2, Qp, buf[1:])))
        # Each waiting job in a FCFS sequence abandons on its own clock (position k removed).
        for k, c in enumerate(Qp if fifo else ()):
            if theta[c] > 0:
                out.append((theta[c], (X, Ym, Ys, Qp[:k] + Qp[k + 1:], buf)))
        for k, c in enumerate(buf):
            if theta[c] > 0:
                out.append((theta[c], (X, Ym, Ys, Qp, buf[:k] + buf[k + 1:])))
        return out

    zeros = (0,) * num
    start = (zeros, zeros, zeros, () if fifo else zeros, ())
    states, generator = generator_of(start, successors, max_states=max_states, skip_zero=False)
    if connected_components(generator, connection="strong")[0] != 1:
        raise ValueError("the chain is not irreducible: some waiting job can never leave "
                         "(theta = 0 for a class that no server can take; raise M or B)")
    return PooledChain(states, generator, stationary(generator))


def generator_of(start, successors, *, max_states: int | None = None, skip_zero: bool = True):
    """The states reachable from ``start`` and the generator of the chain on them (CSR).

    ``successors(state)`` lists ``(rate, next_state)`` pairs; self-loops are ignored, and so are
    zero rates unless ``skip_zero`` is False.

    Raises:
        ValueError: more than ``max_states`` states are reachable.
    """
    index, states = {start: 0}, [start]
    rows, cols, vals = [], [], []
    k = 0
    while k < len(states):
        for rate, nxt in successors(states[k]):
            if skip_zero and rate <= 0:
                continue
            t = index.get(nxt)
            if t is None:
                if max_states is not None and len(states) >= max_states:
                    raise ValueError(f"the chain has more than max_states = {max_states} states: "
                                     "lower max_queue / max_buffer, n or B")
                t = index[nxt] = len(states)
                states.append(nxt)
            if t != k:
                rows.append(k)
                cols.append(t)
                vals.append(rate)
        k += 1
    size = len(states)
    off = sp.csr_matrix((vals, (rows, cols)), shape=(size, size))
    return states, (off - sp.diags(np.asarray(off.sum(axis=1)).ravel())).tocsr()


def stationary(generator: sp.csr_matrix) -> np.ndarray:
    """Solves ``pi Q = 0, sum(pi) = 1`` for an irreducible generator Q.

    Chains of more than a thousand states first try a damped Jacobi iteration (power iteration
    on the lazy embedded jump chain, :func:`_power`) within a budget of about 1e9 multiply-adds:
    the small systems of the tests converge within a few hundred to a few thousand steps, while
    the label sequences of their FCFS buffers make exact factors fill in badly (a 7,650-state
    chain: 0.1 s instead of 8 s for the LU). Otherwise, or if that does not converge, it fixes
    ``pi_0 = 1`` and solves the other balance equations
    ``Q^T[1:, 1:] pi[1:] = -Q[0, 1:]`` (a row of ones for the normalisation would be dense and
    ruin the LU's fill-in): small chains with a sparse LU, larger ones with GMRES preconditioned
    by an incomplete LU. Either way the result is accepted only if
    ``||pi Q||_1 <= 1e-11 max_s |Q_ss|``.
    """
    size = generator.shape[0]
    if size == 1:
        return np.ones(1)
    scale = _RESIDUAL * float(np.max(-generator.diagonal()))
    if size > _POWER_MIN:
        # Geometric convergence: a residual far below the bound costs few extra steps and keeps
        # the result as accurate as a direct solve's.
        pi = _power(generator, 1e-4 * scale)
        if pi is not None:
            return pi
    qt = generator.T.tocsc()
    a, b = qt[1:, 1:].tocsc(), -qt[1:, 0].toarray().ravel()
    pi = np.ones(size)
    if size <= _DIRECT_MAX:
        pi[1:] = splu(a, permc_spec="MMD_AT_PLUS_A").solve(b)
    else:
        ilu = spilu(a, drop_tol=1e-4, fill_factor=5, permc_spec="MMD_AT_PLUS_A")
        precond = LinearOperator(a.shape, ilu.solve)
        for _ in range(50):  # restart cycles; stop on the balance residual, not GMRES's own
            pi[1:], _info = gmres(a, b, x0=pi[1:], M=precond, rtol=1e-14, atol=0, restart=40,
                                  maxiter=1)
            if np.abs(generator.T @ pi).sum() <= scale * abs(pi.sum()):
                break
    pi /= pi.sum()
    residual = np.abs(generator.T @ pi).sum()
    if not residual <= scale:
        raise RuntimeError(f"stationary solve did not converge: ||pi Q||_1 = {residual:.3g}")
    return pi


def _power(generator: sp.csr_matrix, scale: float) -> np.ndarray | None:
    """The stationary law by damped Jacobi iteration, or None if it does not reach
    ``||pi Q||_1 <= scale`` within the work budget.

    ``pi <- pi (I + w Q D^-1)``, D the exit rates and w = 0.8: in terms of ``nu = pi D`` this is
    power iteration on the embedded jump chain made lazy (it stays put with probability 1 - w,
    so even a periodic jump chain converges), whose stationary law is ``pi D`` up to a constant.
    Every step moves each state by one of its own jumps, so rates a thousand times apart (a fast
    prefill next to slow decodes) cost no more steps, unlike uniformization.
    """
    size = generator.shape[0]
    w = 0.8
    step = (sp.identity(size, format="csr")
            + w * generator @ sp.diags(1.0 / -generator.diagonal())).T.tocsr()
    qt = generator.T.tocsr()
    pi = np.full(size, 1.0 / size)
    check = 64  # steps between residual checks (a check costs about one step)
    for k in range(1, int(_POWER_WORK / step.nnz) + 1):
        pi = step @ pi
        if k % check == 0:
            pi /= pi.sum()
            if np.abs(qt @ pi).sum() <= scale:
                return pi
    return None


def pooled_stationary(model: Model, n: int, M: int, policy: str, *, x_star=None, q_p_star=None,
                      max_queue: int = 4, max_buffer: int | None = None,
                      max_states: int = 100_000) -> dict:
    """Exact stationary averages of the pooled prefill/decode CTMC of a small system.

    The dynamics (the contract the simulator implements): n GPUs, M mixed. A class-i arrival
    (rate n lambda_i) starts prefill if fewer than M prefills run, else joins the prefill queue
    (per-class counts for the gated policies, one FCFS sequence for ``fg-sp``). A prefill
    completion routes the job to a free solo slot (B(n-M) in all), else a free mixed slot
    ((B-1)M), else the FCFS decode buffer; then the gate admits a waiting job into the freed
    slot: ``gate-and-route`` the class with the smallest ``(X_j - n x_j*)/x_j*`` (ties: larger
    ``Q_p,j - n q_p,j*``, then lower index), ``prioritize-and-route`` the largest D_j/P_j,
    ``fg-sp`` the head of the queue. A mixed (solo) decode completion hands its slot to the
    head of the decode buffer. Every waiting job abandons at its theta_i. Decodes run at mu_m,i
    on mixed and mu_s,i on solo GPUs (the paper's rates, docs/model.md Sec. 6).

    Truncation: an arrival finding ``max_queue`` jobs in the prefill queue is lost, and so is a
    routed job finding ``max_buffer`` jobs in the decode buffer. ``truncation_mass`` is the
    stationary probability that truncation would bite (prefill queue full with every prefill
    slot busy, or buffer full with every decode slot busy); choose limits where it is
    negligible (< 1e-9), or compare using the exact loss rates.

    Args:
        model: the scenario (rates are read from its properties).
        n: number of GPUs, >= 1.
        M: number of mixed GPUs, 0 <= M <= n.
        policy: one of :data:`POLICIES`.
        x_star: planned prefill occupancy per GPU, shape (I,); required for gate-and-route.
        q_p_star: planned prefill queue per GPU, shape (I,) (gate tie-break; default zeros).
        max_queue: prefill queue capacity (total over classes), >= 0.
        max_buffer: decode buffer capacity; defaults to ``max_queue``.
        max_states: raise ValueError instead of building a larger chain.

    Returns:
        dict of per-class arrays, all per GPU (divided by n): time averages ``x, y_m, y_s, q_p,
        q_d``; rates ``completion_rate`` (decode completions), ``prefill_completion_rate``,
        ``prefill_abandonment_rate``, ``decode_abandonment_rate``, ``prefill_loss_rate`` and
        ``decode_loss_rate`` (jobs lost to truncation); plus ``num_states`` and
        ``truncation_mass``. Exactly, per class: lambda = prefill completion + prefill
        abandonment + prefill loss, and prefill completion = completion + decode abandonment +
        decode loss.

    Raises:
        ValueError: as :func:`pooled_chain`.
    """
    chain = pooled_chain(model, n, M, policy, x_star=x_star, q_p_star=q_p_star,
                         max_queue=max_queue, max_buffer=max_buffer, max_states=max_states)
    num = model.num_classes
    max_buffer = max_queue if max_buffer is None else int(max_buffer)
    B = int(model.B)
    fifo = policy == "fg-sp"
    size = len(chain.states)
    X, Ym, Ys, Qp, Qd = (np.zeros((size, num)) for _ in range(5))
    block_p, block_d = np.zeros(size, bool), np.zeros(size, bool)
    for s, (x, ym, ys, qp, buf) in enumerate(chain.states):
        X[s], Ym[s], Ys[s] = x, ym, ys
        Qp[s] = np.bincount(qp, minlength=num) if fifo else qp
        Qd[s] = np.bincount(buf, minlength=num)
        block_p[s] = sum(x) == M and Qp[s].sum() == int(max_queue)
        block_d[s] = (sum(ys) == B * (n - M) and sum(ym) == (B - 1) * M
                      and len(buf) == max_buffer)
    pi = chain.pi
    mean = [pi @ a / n for a in (X, Ym, Ys, Qp, Qd)]
    theta = np.asarray(model.theta, dtype=np.float64)
    mu_p = np.asarray(model.mu_p, dtype=np.float64)
    return {
        "x": mean[0], "y_m": mean[1], "y_s": mean[2], "q_p": mean[3], "q_d": mean[4],
        "completion_rate": np.asarray(model.mu_m) * mean[1] + np.asarray(model.mu_s) * mean[2],
        "prefill_completion_rate": mu_p * mean[0],
        "prefill_abandonment_rate": theta * mean[3],
        "decode_abandonment_rate": theta * mean[4],
        "prefill_loss_rate": np.asarray(model.lambda_, dtype=np.float64) * pi[block_p].sum(),
        "decode_loss_rate": mu_p * (pi[block_d] @ X[block_d]) / n,
        "num_states": size,
        "truncation_mass": float(pi[block_p | block_d].sum()),
    }
