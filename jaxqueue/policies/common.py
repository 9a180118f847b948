"""What the engines share: level and counter names, the gate, the event layout, the FCFS rings
of a state, revenue, and the checks of n and ring capacities.

The pooled (:mod:`.pooled`, :mod:`.sli`) and per-GPU (:mod:`.per_gpu`) engines record the same
quantities under the same names, so :mod:`jaxqueue.stats` and the CLI read any of them alike.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .. import buffer as buf
from ..decisions import AbstractDecisions
from ..kernel import Event, Flow, Revenue
from ..model import Model

__all__ = ["EXIT_LEVELS", "GATES", "LEVELS", "MAX_GPUS", "TALLIES", "advance_classes",
           "any_overflow", "checked_capacity", "checked_gpus", "class_heads", "class_live",
           "class_residual", "class_rings", "class_serve", "default_capacity", "gate_admit",
           "gate_choice", "gate_keys", "overflow_message", "per_job_queue", "push_class",
           "rebase_rings", "revenue", "ring_live", "ring_residual", "split_event"]

#: Time-integrated levels, each per class (the names of the per-GPU fluid quantities): prefills
#: in service, decodes in service at the mixed and at the solo speed, jobs waiting for prefill
#: and jobs waiting for decode.
LEVELS = ("x", "y_m", "y_s", "q_p", "q_d")
#: With phase-type service laws (:mod:`jaxqueue.service`), the pooled engine also integrates,
#: per class, its jobs in prefill, mixed decode and solo decode weighted by each phase's rate of
#: ending service relative to the class's mean rate, ``sum_k r_ik (1 - p_ik) Z_ik``: the mean
#: rate times it is the rate at which services end. Under the exponential law it is the
#: occupancy itself, and only then is the occupancy's integral enough for the revenue: with
#: phases, jobs early in a long service complete at rate 0, and ``mu * y`` would count them.
EXIT_LEVELS = ("x_exit", "y_m_exit", "y_s_exit")
#: Event counters, each per class: arrivals, prefill completions, decode completions at the
#: mixed and the solo speed, abandonments from the prefill and the decode buffers, and the
#: starts of prefill and of decode service (for the flow balance of every stage).
TALLIES = ("arrivals", "prefill_done", "mixed_done", "solo_done", "prefill_abandon",
           "decode_abandon", "prefill_start", "decode_start")
GATES = ("deviation", "priority", "fcfs")


def gate_keys(gate: str, decide: AbstractDecisions, model: Model, n, x_star, q_star,
              X: Int[Array, " I"], Qp: Int[Array, " I"], offset=None):
    """The keys a gate ranks the waiting classes by, and which classes wait (an indicator).

    ``deviation`` (Gate-and-Route, Sec. 4.1): smallest ``xi_i = (X_i - n x_i*) / x_i*`` (+inf
    when ``x_i* = 0``, so such a class is admitted only when no other waits), ties to the larger
    ``Qp_i - n q_i*``, then the lower index. ``priority`` (Prioritize-and-Route, Sec. 4.2.1):
    largest ``D_i / P_i``, ties to the lower index. ``offset`` (tunable families only) ranks by
    ``(X_i + offset) / x_i* - n`` instead: with ``offset = 1`` the occupancy *after* admitting the
    job, which stops a class whose target is far below one prefill from winning every time it
    has none running.
    """
    waiting = decide.greater(Qp, 0)
    if gate == "priority":
        return (-(model.D / model.P),), waiting
    x_star = jnp.asarray(x_star)
    safe = jnp.where(x_star > 0, x_star, 1.0)
    # xi = X/x* - n, equal to (X - n x*)/x* but exact in float32 where ties matter most: every
    # class with X = 0 gets exactly -n, so the queue-deviation rule breaks the tie, not rounding.
    occupancy = X if offset is None else X + offset
    xi = jnp.where(x_star > 0, occupancy / safe - n, jnp.inf)
    dev = Qp - n * jnp.asarray(q_star)
    return (xi, -dev), waiting


def gate_choice(gate: str, decide: AbstractDecisions, model: Model, n, x_star, q_star,
                X: Int[Array, " I"], Qp: Int[Array, " I"], offset=None) -> Int[Array, ""]:
    """The class a gate admits next among the waiting ones (meaningless if none waits); see
    :func:`gate_keys`."""
    return decide.lexmin(*gate_keys(gate, decide, model, n, x_star, q_star, X, Qp, offset))


def gate_admit(decide: AbstractDecisions, keys, eligible, on, temperature=None, u=None):
    """The gate's admission as counts to add, and its log-probability.

    With ``temperature`` None the gate is deterministic: the eligible class with the smallest
    ``keys`` (:meth:`~jaxqueue.decisions.AbstractDecisions.choose`), log-probability 0. Else it
    is randomised: class j with probability ``softmax(-keys[0] / temperature)_j`` among the
    eligible classes, drawn with the uniform ``u`` (a class whose first key is +inf, i.e. a plan
    target of 0, is drawn only when every eligible class has one, then uniformly among them).
    Its expected behaviour is smooth in the keys, and the log-probability of the draw (0 when
    ``on`` is 0) is what the likelihood-ratio estimators differentiate. As ``temperature -> 0``
    it tends to the deterministic gate (except on exact ties of the first key, which it splits
    evenly instead of using the later keys).
    """
    if temperature is None:
        return decide.choose(keys, eligible, on)[1], jnp.zeros(())
    ok = jax.lax.stop_gradient(eligible) > 0.5
    first = keys[0]
    finite = jnp.isfinite(first)
    logits = jnp.where(ok & finite, -jnp.where(finite, first, 0.0) / temperature, -jnp.inf)
    # Every eligible class infinite: uniform among them.
    only_inf = jnp.any(ok) & ~jnp.any(ok & finite)
    logits = jnp.where(only_inf, jnp.where(ok, 0.0, -jnp.inf), logits)
    probs = jax.nn.softmax(jnp.where(jnp.any(ok), logits, 0.0))
    index, admit = decide.draw_hot(probs, u, on)
    chosen = jax.lax.stop_gradient(on) > 0.5
    logp = jnp.where(chosen, jnp.log(jnp.where(chosen, probs[index], 1.0)), 0.0)
    return admit, logp


def split_event(event: Event, num: int, t, window):
    """The 5I-event layout shared by the pooled and per-GPU engines, decoded.

    Returns the one-hot rows ``(arrive, prefill_done, mixed_done, solo_done, queue_abandon)``
    (each ``(I,)``), whether ``t`` lies in the statistics window (int 0/1), and whether the
    step is a bookkeeping step (event index ``5I``). Phase-type service laws keep this layout:
    a completion row carries the class's rate of leaving any phase, and the system draws the
    phase itself.
    """
    w0, w1 = window
    hot = event.hot.reshape(5, num)
    counted = ((t > w0) & (t <= w1)).astype(jnp.int32)
    return tuple(hot), counted, event.index == 5 * num


def revenue(model: Model, integrals: Float[Array, " L"], counts: Int[Array, " T"],
            tally_names: tuple[str, ...], level_names: tuple[str, ...] = LEVELS) -> Revenue:
    """Revenue in the window of a system recording :data:`LEVELS` and :data:`TALLIES`.

    The integral estimators integrate the rate at which services end: ``mu`` times the
    occupancy for the exponential law, and with phase-type service laws ``mu`` times the
    :data:`EXIT_LEVELS` (where ``level_names`` has them), whose expectation is the completion
    rate whatever the law. They keep the integral's low variance and its direct dependence on
    the service rates (which the likelihood-ratio estimators differentiate); counting
    completions would lose both."""
    num = model.num_classes

    def ending(name):  # the occupancy weighted by its rates of ending service, over mu
        exit_name = f"{name}_exit"
        k = level_names.index(exit_name if exit_name in level_names else name)
        return integrals[k * num:(k + 1) * num]

    def count(name):
        k = tally_names.index(name)
        return counts[k * num:(k + 1) * num].astype(integrals.dtype)

    done = count("mixed_done") + count("solo_done")
    in_service = model.mu_m * ending("y_m") + model.mu_s * ending("y_s")  # completions per time
    prompt, output = model.c_p * model.P, model.c_d * model.D
    return Revenue(
        bundled_counted=jnp.sum(model.w * done),
        bundled_integral=jnp.sum(model.w * in_service),
        separate_counted=jnp.sum(prompt * count("prefill_done") + output * done),
        separate_integral=jnp.sum(prompt * model.mu_p * ending("x") + output * in_service),
    )


# ---- the FCFS rings of a state ------------------------------------------------------------------
def rebase_rings(state, elapsed: Float[Array, ""]):
    """``state`` with its ``prefill_ring`` and ``decode_ring`` (each a Ring or None) rebased."""
    def shift(ring):
        return None if ring is None else buf.rebase(ring, elapsed)
    return eqx.tree_at(lambda s: (s.prefill_ring, s.decode_ring), state,
                       (shift(state.prefill_ring), shift(state.decode_ring)),
                       is_leaf=lambda x: x is None)


def any_overflow(*rings: buf.Ring | None):
    """Whether any of the rings (None for an absent one) overflowed."""
    over = jnp.bool_(False)
    for ring in rings:
        if ring is not None:
            over = over | ring.overflow
    return over


def overflow_message(capacity: int) -> str:
    """What happened when a ring overflowed (the driver grows it and reruns, or says why not)."""
    return (f"a FCFS buffer overflowed its capacity of {capacity:,} jobs (no result is taken "
            "from a truncated run)")


def ring_residual(ring: buf.Ring | None, num: int, window):
    """:func:`jaxqueue.buffer.residual`, or zeros for an absent ring."""
    if ring is None:
        return jnp.zeros(num, jnp.int32), jnp.zeros(num, window[0].dtype)
    return buf.residual(ring, num, window)


def close_rings(s, num: int, window) -> Flow:
    """The flow at a window's end of a state whose only open jobs wait in its rings
    (``s.prefill_ring``, ``s.decode_ring``, either None): each ring's abandonments inside the
    window and the waits it accrued there; every other count and wait is zero."""
    zero_i = jnp.zeros(num, jnp.int32)
    zero_f = jnp.zeros(num, window[0].dtype)
    p_gone, p_wait = ring_residual(s.prefill_ring, num, window)
    d_gone, d_wait = ring_residual(s.decode_ring, num, window)
    counts = jnp.concatenate([zero_i, zero_i, zero_i, zero_i, p_gone, d_gone, zero_i,
                              zero_i]).astype(jnp.int32)
    waits = jnp.concatenate([zero_f, zero_f, zero_f, p_wait, d_wait])
    return Flow(counts=counts, waits=waits)


def ring_live(ring: buf.Ring | None, num: int, now):
    """:func:`jaxqueue.buffer.live`, or zeros for an absent ring."""
    return jnp.zeros(num, jnp.int32) if ring is None else buf.live(ring, num, now)


# ---- per-class rings ----------------------------------------------------------------------------
# A waiting place an engine keeps as per-class counts abandons at rate theta per job, exact only
# for the exponential patience law. Under any other law the engines (the SLI-aware router, the
# per-GPU engine's gate) keep it as one ring per class instead, batched over classes (leading
# axis I; ring c holds class c only, first-come-first-served within the class), and decide from
# the live counts at the moment of the event: see :func:`jaxqueue.buffer.serve_live`.
def class_rings(num: int, capacity: int, index: bool = True) -> buf.Ring:
    """``num`` empty rings of ``capacity`` slots, batched (leading axis: the class), each with
    an index of its abandoned jobs when ``index`` (:class:`jaxqueue.buffer.Expiry`; see
    :func:`class_heads`)."""
    one = buf.empty(capacity, expiry=index)
    return jax.tree.map(lambda a: jnp.stack([a] * num), one)


def push_class(rings: buf.Ring, do, cls, t, due) -> buf.Ring:
    """Appends a class-``cls`` job (entry ``t``, deadline ``due``) to ring ``cls`` when
    ``do``."""
    num = rings.head.shape[0]
    hot = (jnp.arange(num) == cls) & (jnp.asarray(do) > 0)
    return jax.vmap(buf.push, in_axes=(0, 0, None, None, None))(rings, hot, cls, t, due)


def advance_classes(rings: buf.Ring, now, window) -> buf.Ring:
    """Indexed per-class rings with their abandoned jobs counted up to ``now``
    (:func:`jaxqueue.buffer.advance`), never past the window's end: a step past it changes
    nothing, and the next rollout's clock starts at the end."""
    return jax.vmap(buf.advance, in_axes=(0, None))(rings, jnp.minimum(now, window[1]))


def class_heads(rings: buf.Ring, now, window, model: Model) -> tuple[buf.Ring, buf.Head]:
    """The rings with their abandoned jobs counted up to ``now`` (:func:`advance_classes`), and
    :func:`jaxqueue.buffer.head_scan` of each (fields ``(I,)``): ``.live`` is the class's count
    of jobs still waiting at ``now``, what a counted queue would hold. Rings without an index
    are scanned whole, or under ``model``'s fixed patience (deterministic law: a ring's
    deadlines rise from head to tail) by binary search."""
    if rings.expiry is not None:
        rings = advance_classes(rings, now, window)
        now = jnp.minimum(now, window[1])
        return rings, jax.vmap(lambda r: buf.head_scan(r, now, window))(rings)
    rising = getattr(model.patience, "law", None) == "deterministic"
    return rings, jax.vmap(lambda r: buf.head_scan(r, now, window, rising))(rings)


def class_serve(rings: buf.Ring, heads: buf.Head, take, t, window) -> buf.Served:
    """:func:`jaxqueue.buffer.serve_live` on every ring: each pops its abandoned jobs in front
    of its first live one (never past the window's end, where a step only closes the rollout),
    and ring c also takes its oldest live job where ``take[c]`` (a one-hot or zero count per
    class). ``gone`` (abandonments in the window) and ``wait`` (waits in the window) are per
    class; ``taken`` says which ring served a job."""
    discard = (t <= window[1]).astype(jnp.int32)
    return jax.vmap(lambda r, h, k: buf.serve_live(r, h, discard, k, t, window))(
        rings, heads, jnp.asarray(take).astype(jnp.int32))


def class_live(rings: buf.Ring, now) -> Int[Array, " I"]:
    """Jobs still waiting at ``now`` in each per-class ring (a pass over each; called once per
    rollout)."""
    return jax.vmap(lambda r: buf.alive(r, now))(rings)


def class_residual(rings: buf.Ring | None, num: int, window):
    """:func:`ring_residual` of per-class rings (zeros for None): per class, the abandonments
    and waits inside the window that the jobs still held owe at its end."""
    if rings is None:
        return jnp.zeros(num, jnp.int32), jnp.zeros(num, window[0].dtype)
    gone, wait = jax.vmap(lambda r: buf.residual(r, num, window))(rings)
    return jnp.diagonal(gone).astype(jnp.int32), jnp.diagonal(wait)  # ring c: class c's row


def per_job_queue(model: Model, queue: float, per_class: bool = False) -> float:
    """The waiting jobs per GPU a ring capacity is sized for (:func:`default_capacity`): the
    plan's ``queue``, or under a non-exponential patience law at least ``sum_i lambda_i /
    theta_i``, every arrival of a mean patience waiting. The plan's queues assume exponential
    patience; under another law far more jobs can wait (with a fixed timeout none leaves early),
    and a ring sized this way seldom needs a rerun with grown rings. With ``per_class`` (rings
    that each hold one class: the SLI-aware router's, the per-GPU gate's) the largest class's
    ``lambda_i / theta_i`` instead of the sum: every step passes over each such ring, so its
    length is the step's cost (half the sum on ``paper-qwen8b``, twice as fast), and an
    overflow is grown and rerun."""
    from .. import patience

    if not patience.per_job(model.patience):
        return float(queue)
    theta = np.asarray(model.theta, np.float64)
    mean_waiting = np.where(theta > 0, np.asarray(model.lambda_) / np.where(theta > 0, theta, 1.0),
                            0.0)
    return max(float(queue), float(np.max(mean_waiting) if per_class else np.sum(mean_waiting)))


# ---- checks -------------------------------------------------------------------------------------
#: Largest n: counts, slots and ring indices are int32.
MAX_GPUS = 2**31 - 1


def checked_gpus(n) -> int:
    """``n`` as an int, or a ValueError naming the field and its allowed range."""
    try:
        ok = (isinstance(n, (int, np.integer, float)) and not isinstance(n, bool)
              and float(n).is_integer() and 1 <= int(n) <= MAX_GPUS)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"n (gpus) = {n!r} is invalid: must be an integer in [1, {MAX_GPUS}]")
    return int(n)


def checked_capacity(capacity, n: int, queue: float | None = None) -> int:
    """A ring capacity: ``capacity`` checked, or :func:`default_capacity` for n (and the
    planned jobs waiting per GPU, ``queue``) when None."""
    if capacity is None:
        return default_capacity(n, queue)
    if (isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer))
            or not 1 <= capacity <= MAX_GPUS):
        raise ValueError(f"capacity = {capacity!r} is invalid: must be an integer in "
                         f"[1, {MAX_GPUS}]")
    return int(capacity)


def default_capacity(n: int, queue: float | None = None) -> int:
    """A ring capacity for n GPUs: the smallest power of two (so that nearby n share one
    compiled program) that is at least 256, 2n and, given the plan's jobs waiting per GPU
    that the rings hold (``queue``: the caller counts those its rings keep), ``2 n queue +
    64``.

    Small on purpose: every step touches each replication's ring at its head and tail, and a
    larger ring spreads those touches over more memory (on the 2-core development CPU, 8,192
    slots made the pooled step 1.4-1.8x slower than 1,024 at n = 500 and 1,024 replications).
    The ring also holds jobs that abandoned but wait behind a live one to be discarded (lazy
    abandonment), so no fixed size is a bound: a ring that overflows is grown and its batch
    rerun with the same random numbers by :func:`jaxqueue.simulate` (the result is the one a
    large enough ring gives), which tells the user."""
    need = max(256, 2 * n)
    if queue is not None:
        need = max(need, math.ceil(2 * n * float(queue)) + 64)
    return int(2 ** math.ceil(math.log2(need)))


# ---- rounding thresholds once per replication -------------------------------------------
def rounded(decide, values: Float[Array, " K"], u: Float[Array, " U"], dither: bool):
    """Integers from reals, drawn once per replication: the number of mixed GPUs, the slack
    and the caps of the ``gated`` family (a :class:`~jaxqueue.policies.pooled.Pooled` with
    ``params``) from ``n * (share, slack, caps)``.

    Without ``dither``: randomised rounding, ``floor(v) + 1[u_0 < v - floor(v)]``, so the
    expectation is ``v`` and the expected objective is piecewise linear in ``v``, with kinks at
    the integers (where the paper's policies sit). With ``dither``: ``round(v + u_0 - u_1)``,
    rounding after adding triangular noise on (-1, 1); the outcome is within one of ``round(v)``
    and the expected objective is continuously differentiable in ``v`` (at an integer ``k`` its
    slope is the central one, ``(J(k + 1) - J(k - 1)) / 2``). Negative results become 0. ``u``
    holds one uniform per value (two with the dither: the first ``K``, then the second ``K``).
    """
    K = values.shape[0]
    if dither:
        k = decide.count(values + 0.5 - u[K:2 * K], u[:K])
    else:
        k = decide.count(values, u[:K])
    return jnp.maximum(k, 0)


def _triangular_cdf(x):
    """CDF of the triangular law on (-1, 1) (the sum of two uniforms minus one)."""
    x = jnp.clip(x, -1.0, 1.0)
    return jnp.where(x < 0, 0.5 * (1.0 + x) ** 2, 1.0 - 0.5 * (1.0 - x) ** 2)


def rounding_logp(values: Float[Array, " K"], k: Float[Array, " K"], dither: bool,
                  upper: Float[Array, " K"] | None = None, total: bool = True):
    """``log P`` of the integers ``k`` drawn by :func:`rounded` from ``values`` (summed over the
    entries, or per entry with ``total = False``), differentiable in ``values``: what the
    likelihood-ratio estimator differentiates for parameters a replication rounds once.
    ``upper`` caps each entry (the number of mixed GPUs is at most n), as the system does;
    results at 0 or at ``upper`` collect the mass beyond."""
    values = jnp.asarray(values)
    k = jnp.asarray(k, values.dtype)
    upper = jnp.full_like(values, jnp.inf) if upper is None else jnp.asarray(upper, values.dtype)
    if dither:
        hi = jnp.where(k >= upper, 1.0, _triangular_cdf(k + 0.5 - values))
        lo = jnp.where(k <= 0, 0.0, _triangular_cdf(k - 0.5 - values))
        p = hi - lo
    else:
        low = jnp.floor(values)
        frac = values - low
        p = jnp.where(k == low + 1, frac, jnp.where(k == low, 1.0 - frac, 0.0))
    logp = jnp.log(jnp.maximum(p, 1e-30))
    return jnp.sum(logp) if total else logp


def smallest_rounded(values, dither: bool) -> np.ndarray:
    """The smallest integer :func:`rounded` can draw from each of ``values`` (host arrays)."""
    values = np.asarray(values, np.float64)
    low = np.floor(values - 1.5) + 1 if dither else np.floor(values)
    return np.maximum(low, 0)
