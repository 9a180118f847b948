"""Pooled (count-based) Gate-and-Route systems: GG-SP, FG-SP and Prioritize-and-Route.

The pooled system stores counts per class and pool, so one step costs the same for n = 5 and
n = 50,000. M of the n GPUs are mixed (static planning, Sec. 4.1): they hold the M prefill slots
and (B-1)M decode slots at the mixed rate mu_m; the n-M solo GPUs hold B(n-M) decode slots at
the solo rate mu_s.

Exponential events, ``E = 5I`` of them, class-major within each kind:
``arrival | prefill completion | mixed decode completion | solo decode completion |
prefill-queue abandonment`` (the last only for per-class prefill queues). Buffers served in FCFS
order across classes are :class:`jaxqueue.buffer.Ring`\\ s, whose abandonments are exact but lazy.
With a non-exponential patience law (:mod:`jaxqueue.patience`) the per-class prefill queues are
rings too, one per class, and their abandonments are jobs' deadlines, not rate-theta events.

After each event the policy acts at most once on each side, which keeps the invariants
"an idle prefill slot implies no live job waits for prefill" and "a free decode slot implies no
live job waits for decode", since one event frees at most one slot and adds at most one job:

- the *router* sends a job needing decode to a free solo slot, else a free mixed slot, else the
  single decode buffer, served first-come-first-served across classes (greedy router, Sec. 4.1);
- the *gate* admits one waiting job when a prefill slot is idle:
  ``deviation`` (Gate-and-Route): smallest ``xi_i = (X_i - n x_i*) / x_i*`` (+inf when
  ``x_i* = 0``), ties to the larger ``Q_p,i - n q_p,i*``, then the lower index;
  ``priority`` (Prioritize-and-Route, Sec. 4.2.1): largest ``D_i / P_i``, ties to the lower index;
  ``fcfs`` (FG-SP): the oldest waiting job of any class.

Every decision goes through the system's ``decide`` (:mod:`jaxqueue.decisions`); indicators are
combined with arithmetic (``a * b``, ``1 - a``) so that a relaxation can replace them.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import buffer as buf
from .. import patience as laws
from ..kernel import AbstractSystem, Flow
from ..model import Model
from ..patience import deadline
from ..rng import real_dtype
from .common import (
    GATES,
    LEVELS,
    TALLIES,
    any_overflow,
    close_rings,
    gate_keys,
    overflow_message,
    rebase_rings,
    revenue,
    ring_live,
    split_event,
)

__all__ = ["CountSystem", "Pooled", "PooledState", "greedy_route", "latency_tallies",
           "serve_ring_head"]


class PooledState(eqx.Module):
    """Counts per class, and the FCFS buffers in arrival order.

    Attributes:
        X: prefills in service (on mixed GPUs).
        Ym: decodes on mixed GPUs.
        Ys: decodes on solo GPUs.
        Qp: jobs waiting for prefill (per-class queues; unused with the FCFS gate and with
            per-job patience).
        prefill_ring: the FCFS prefill queue (FCFS gate only, else None).
        decode_ring: the decode buffer.
        class_rings: with a non-exponential patience law and a per-class gate, the per-class
            prefill queues as rings (FCFS within a class), batched over classes; else None.
    """

    X: Int[Array, " I"]
    Ym: Int[Array, " I"]
    Ys: Int[Array, " I"]
    Qp: Int[Array, " I"]
    prefill_ring: buf.Ring | None
    decode_ring: buf.Ring
    class_rings: buf.Ring | None = None


class CountSystem(AbstractSystem):
    """What every count-based system on the pooled architecture shares: counts per class
    ``X, Ym, Ys, Qp`` in its state and an optional FCFS prefill ring besides the decode ring,
    so the same rates, levels, revenue, ring bookkeeping and census (:class:`Pooled`, and the
    ``gated`` family of :mod:`.tunable`). Subclasses have fields ``model``, ``n`` and
    ``capacity`` and write their own admission (``init``, ``pending``, ``fire``)."""

    level_names: ClassVar[tuple[str, ...]] = LEVELS
    tally_names: ClassVar[tuple[str, ...]] = TALLIES

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def rates(self, s) -> Float[Array, " E"]:
        m = self.model
        return jnp.concatenate([
            m.lambda_ * self.n, m.mu_p * s.X, m.mu_m * s.Ym, m.mu_s * s.Ys, m.theta * s.Qp,
        ])

    def levels(self, s) -> Float[Array, " L"]:
        # Waits in the rings are credited job by job in `fire` (q_p for FCFS, q_d always).
        zero = jnp.zeros_like(s.X)
        return jnp.concatenate([s.X, s.Ym, s.Ys, s.Qp, zero]).astype(real_dtype())

    def revenue(self, integrals, counts):
        return revenue(self.model, integrals, counts, self.tally_names)

    def rebase(self, s, elapsed):
        s = rebase_rings(s, elapsed)
        if getattr(s, "class_rings", None) is not None:
            s = eqx.tree_at(lambda s: s.class_rings, s, buf.rebase(s.class_rings, elapsed))
        return s

    def overflow(self, s) -> Bool[Array, ""]:
        over = any_overflow(s.prefill_ring, s.decode_ring)
        if getattr(s, "class_rings", None) is not None:
            over = over | jnp.any(s.class_rings.overflow)
        return over

    def overflow_message(self) -> str:
        return overflow_message(self.capacity)

    def close(self, s, window):
        flow = close_rings(s, self.num_classes, window)
        num = self.num_classes
        # The latency counters (past the paper's) count starts of service: none at the close.
        extra = (len(self.tally_names) - len(TALLIES)) * num
        if extra:
            flow = Flow(counts=jnp.concatenate([flow.counts, jnp.zeros(extra, jnp.int32)]),
                        waits=flow.waits)
        if getattr(s, "class_rings", None) is None:
            return flow
        # Ring c holds class c only: its residual's row c is the class's.
        gone, wait = jax.vmap(lambda r: buf.residual(r, self.num_classes, window))(
            s.class_rings)
        counts = flow.counts.at[4 * num:5 * num].add(jnp.diagonal(gone).astype(jnp.int32))
        waits = flow.waits.at[3 * num:4 * num].add(jnp.diagonal(wait))
        return Flow(counts=counts, waits=waits)

    def _alive(self, rings, now):
        """Live jobs of each per-class ring at ``now``. Under a deterministic law each ring's
        deadlines rise from head to tail, and a binary search finds them."""
        law = getattr(self.model.patience, "law", "exponential")
        count = buf.alive_sorted if law == "deterministic" else buf.alive
        return jax.vmap(lambda r: count(r, now))(rings)

    def census(self, s, now):
        num = self.num_classes
        queued = s.Qp + ring_live(s.prefill_ring, num, now)
        if getattr(s, "class_rings", None) is not None:
            queued = queued + self._alive(s.class_rings, now)
        return jnp.concatenate([s.X, s.Ym, s.Ys, queued, ring_live(s.decode_ring, num, now)]
                               ).astype(jnp.int32)


class Pooled(CountSystem):
    """A pooled Gate-and-Route-type system.

    Attributes:
        model: the scenario (rates are derived from it inside the step).
        n: number of GPUs.
        M: number of mixed GPUs (``ceil(n sum x*)`` under static planning).
        x_star: the plan's per-GPU prefill occupancy (gate targets).
        q_star: the plan's per-GPU prefill queue (gate tie-break targets).
        gate: ``"deviation"``, ``"priority"`` or ``"fcfs"`` (static).
        capacity: slots of each FCFS ring (static).
    """

    model: Model
    n: Int[Array, ""]
    M: Int[Array, ""]
    x_star: Float[Array, " I"]
    q_star: Float[Array, " I"]
    gate: str = eqx.field(static=True)
    capacity: int = eqx.field(static=True)
    wait_grid: tuple[float, ...] = eqx.field(static=True, default=())

    def __check_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate = {self.gate!r} is invalid: must be one of {GATES}")
        if self.capacity < 1:
            raise ValueError(f"capacity = {self.capacity} is invalid: must be >= 1")
        grid = np.asarray(self.wait_grid, np.float64)
        if grid.size and not (np.all(np.isfinite(grid)) and np.all(grid >= 0)
                              and np.all(np.diff(grid) > 0)):
            raise ValueError(f"wait_grid = {self.wait_grid!r} is invalid: must be finite, >= 0 "
                             "and increasing")
        if self.per_job and self.decide.differentiable:
            raise ValueError("per-job prefill queues (a non-exponential patience law, or a "
                             "wait_grid) keep each waiting job in a ring, which relaxed "
                             "decisions cannot differentiate: use exact decisions")

    @property
    def per_job(self) -> bool:
        """Whether the per-class prefill queues are rings of jobs with their own deadlines (a
        non-exponential patience law, or a ``wait_grid``, with the deviation or priority gate),
        instead of counts abandoning at rate theta."""
        return (laws.per_job(self.model.patience) or bool(self.wait_grid)) and self.gate != "fcfs"

    @property
    def num_random(self) -> int:
        # The patience draw; with a wait grid, also the admitted job's prefill time.
        return 2 if self.wait_grid else 1

    @property
    def tally_names(self) -> tuple[str, ...]:
        """:data:`TALLIES`, then with a ``wait_grid`` of K times, per class, the prefills started
        (in the window) whose wait for prefill was at most grid time k (``prefill_wait_le_k``),
        then those whose time to first token was (``ttft_le_k``), then the decodes started whose
        wait in the decode buffer was (``decode_wait_le_k``): see :func:`latency_tallies`."""
        k = range(len(self.wait_grid))
        return (TALLIES + tuple(f"prefill_wait_le_{i}" for i in k)
                + tuple(f"ttft_le_{i}" for i in k) + tuple(f"decode_wait_le_{i}" for i in k))

    def init(self) -> PooledState:
        zeros = jnp.zeros(self.num_classes, self.decide.count_dtype)
        one = buf.empty(self.capacity)
        return PooledState(
            X=zeros, Ym=zeros, Ys=zeros, Qp=zeros,
            prefill_ring=buf.empty(self.capacity) if self.gate == "fcfs" else None,
            decode_ring=buf.empty(self.capacity),
            class_rings=jax.tree.map(lambda a: jnp.stack([a] * self.num_classes), one)
            if self.per_job else None,
        )

    def _free(self, s: PooledState):
        """Indicators (free solo slot, free mixed slot, idle prefill slot)."""
        B, d = self.model.B, self.decide
        return (d.greater(B * (self.n - self.M), jnp.sum(s.Ys)),
                d.greater((B - 1) * self.M, jnp.sum(s.Ym)), d.greater(self.M, jnp.sum(s.X)))

    def pending(self, s: PooledState) -> Bool[Array, ""]:
        free_solo, free_mixed, idle = self._free(s)
        todo = ((free_solo + free_mixed) > 0) & (s.decode_ring.size > 0)
        if s.prefill_ring is not None:
            todo = todo | ((idle > 0) & (s.prefill_ring.size > 0))
        if s.class_rings is not None:
            todo = todo | ((idle > 0) & jnp.any(s.class_rings.size > 0))
        return todo

    def fire(self, s: PooledState, event, t, u, window):
        m, d = self.model, self.decide
        num = self.num_classes
        rows, counted, bookkeeping = split_event(event, num, t, window)
        arrive, prefill_done, mixed_done, solo_done, queue_abandon = rows
        free_solo, free_mixed, idle = self._free(s)
        real = t.dtype

        def patience(cls):
            return deadline(m, t, u[0], cls)

        prune = laws.per_job(m.patience)

        def serve_head(ring, ready, before):
            return serve_ring_head(d, ring, ready, before, bookkeeping, t, window, num,
                                   prune)

        # Decode side (greedy router).
        finished = jnp.sum(prefill_done)
        dring, Ym, Ys, placed, d_gone, d_credit, d_waited = greedy_route(
            d, s.decode_ring, s.Ym, s.Ys, prefill_done, mixed_done, solo_done, free_solo,
            free_mixed, bookkeeping, t, patience, window, prune)

        # Prefill side (the gate). An arrival finding an idle prefill slot starts at once (no
        # live job waits then); a prefill slot freed by a completion admits one waiting job.
        X = s.X - prefill_done
        start = arrive * idle
        queued = arrive * (1 - idle)
        zero_f = jnp.zeros(num, real)
        q_credit = zero_f
        crings = None
        if s.class_rings is not None:
            # Per-class rings (FCFS within a class), each job with its own deadline. In a
            # bookkeeping step with an idle slot the gate picks a class among those with a
            # live job (live counts at t), or, when none has one, among those holding any; the
            # head of the picked ring is admitted if live, else discarded as abandoned (at its
            # deadline), and the next bookkeeping step looks again.
            Qp = s.Qp
            cls_a = jnp.argmax(arrive)
            hot_a = jnp.arange(num) == cls_a
            due = patience(cls_a)
            crings = jax.vmap(buf.push, in_axes=(0, 0, None, None, None))(
                s.class_rings, hot_a & (jnp.sum(queued) > 0), cls_a, t, due)
            # The live counts before the push, read from the rings after it (less the job
            # pushed, if live): reading the rings before the push kept two versions of them
            # alive in each step, and XLA copied every ring twice per step to do so.
            pushed = crings.size - s.class_rings.size
            live = self._alive(crings, t) - pushed * (due > t).astype(jnp.int32)
            held = s.class_rings.size
            some_live = jnp.any(live > 0)
            counts = jnp.where(some_live, live, held)
            pick, _ = d.choose(*self._gate_keys(X, counts))
            look = bookkeeping & (idle > 0) & jnp.any(held > 0)
            # Every step also discards each ring's head if its deadline has passed, so jobs
            # that abandoned do not pile up behind a class the gate seldom serves.
            dead = jax.vmap(lambda r: dead_head(d, r, t, window))(crings)
            out = jax.vmap(lambda r, go: buf.serve(r, go, t, window, d.at_least))(
                crings, ((jnp.arange(num) == pick) & look) | dead)
            crings = out.ring
            admit = out.taken.astype(X.dtype)
            p_gone = out.gone.astype(X.dtype)
            q_credit = jnp.where(out.looked > 0, out.wait, 0.0).astype(real)
            waited = jnp.sum(jnp.where(out.taken > 0, out.waited, 0.0))
            pring = None
        elif s.prefill_ring is None:
            Qp = s.Qp + queued - queue_abandon
            _, admit = d.choose(*self._gate_keys(X, Qp), finished * d.greater(jnp.sum(Qp), 0))
            Qp = Qp - admit
            p_gone = queue_abandon * counted
            waited = None  # counts carry no entry times (a wait grid makes per-class rings)
            pring = None
        else:
            Qp = s.Qp
            cls_a = jnp.argmax(arrive)
            pring = buf.push(s.prefill_ring, jnp.sum(queued) > 0, cls_a, t, patience(cls_a))
            pring, admit, p_gone, q_credit, waited = serve_head(pring, idle, s.prefill_ring)
        X = X + start + admit

        state = PooledState(X=X, Ym=Ym, Ys=Ys, Qp=Qp, prefill_ring=pring, decode_ring=dring,
                            class_rings=crings)
        counts = jnp.concatenate([arrive * counted, prefill_done * counted, mixed_done * counted,
                                  solo_done * counted, p_gone, d_gone, (start + admit) * counted,
                                  placed * counted])
        if self.wait_grid:
            # At most one prefill starts per step: an arrival at an idle slot (no wait) or, in
            # a bookkeeping step, the head of a ring (its whole wait).
            wait = jnp.where(jnp.sum(admit) > 0, waited, 0.0).astype(real)
            counts = jnp.concatenate([
                counts, latency_tallies(self.wait_grid, (start + admit) * counted, wait, m.mu_p,
                                        u[1]),
                at_most(self.wait_grid, placed * counted, d_waited)])
        waits = jnp.concatenate([zero_f, zero_f, zero_f, q_credit, d_credit])
        return state, Flow(counts=counts, waits=waits)

    def _gate_keys(self, X: Int[Array, " I"], Qp: Int[Array, " I"]):
        return gate_keys(self.gate, self.decide, self.model, self.n, self.x_star, self.q_star,
                         X, Qp)


def latency_tallies(grid: tuple[float, ...], started: Int[Array, " I"], wait: Float[Array, ""],
                    mu_p: Float[Array, " I"], u: Float[Array, ""]) -> Int[Array, " 2KI"]:
    """The latency counters of a step in which the prefills ``started`` (a one-hot or zero count
    per class) began after waiting ``wait``: per grid time g_k and class, whether the wait was
    at most g_k, then whether the time to first token was.

    The time to first token is the wait plus the prefill, which in this model takes an
    exponential time of rate ``mu_p`` whatever else happens, independent of the wait. The
    counter draws that time afresh from ``u`` (not the one the chain will realise, which the
    count-based state does not single out): the pair has the law of the job's own, so each
    counter's expectation, and the distribution it estimates, is exact; only the correlation
    between one job's two counters and the chain's later path is not kept."""
    cls = jnp.argmax(started)
    ttft = wait - jnp.log1p(-u) / mu_p[cls].astype(wait.dtype)
    return jnp.concatenate([at_most(grid, started, wait), at_most(grid, started, ttft)])


def at_most(grid: tuple[float, ...], started: Int[Array, " I"], value: Float[Array, ""]
            ) -> Int[Array, " KI"]:
    """Per grid time g_k (major) and class: ``started`` where ``value <= g_k``, else 0."""
    g = jnp.asarray(grid, value.dtype)[:, None]
    return (started[None, :] * (value <= g)).reshape(-1).astype(started.dtype)


def dead_head(d, ring, t, window):
    """Whether ``ring``'s head job has abandoned by ``t`` (its deadline passed) and should be
    discarded now; never past the window's end, where a step only closes the rollout."""
    return (ring.size > 0) & (t <= window[1]) & (d.at_least(t, buf.peek(ring)[2]) > 0)


def serve_ring_head(d, ring, ready, before, bookkeeping, t, window, num, prune=False):
    """Bookkeeping on a ring whose head may be served: discard it if it abandoned.

    With ``prune`` (a Python bool) a head whose deadline has passed is also discarded in any
    step, served or not: with a non-exponential patience law many more jobs can wait, and
    those that abandoned would otherwise pile up until a slot frees (never used with the
    exponential law, whose paths stay as they were).

    ``ring`` may already hold this step's push (never in a bookkeeping step); reading the head
    after the write lets XLA update the ring in place instead of copying it. Returns the ring
    and, as counts per class, the job served, the job gone (abandoned inside the window) and
    the wait credited, and the whole wait of the job served.
    """
    look = bookkeeping & (ready > 0) & (before.size > 0)
    if prune:
        look = look | dead_head(d, ring, t, window)
    out = buf.serve(ring, look, t, window, d.at_least)
    credit = d.one_hot(out.label, num, out.looked).astype(t.dtype) * out.wait
    return (out.ring, d.one_hot(out.label, num, out.taken), d.one_hot(out.label, num, out.gone),
            credit, out.waited)


def greedy_route(d, ring, Ym, Ys, prefill_done, mixed_done, solo_done, free_solo, free_mixed,
                 bookkeeping, t, patience, window, prune=False):
    """The greedy router (Sec. 4.1) after one event: a finished prefill takes a free solo slot,
    else a free mixed slot, else joins the FCFS decode buffer; a free slot serves the buffer's
    oldest live job (in a bookkeeping step). Returns the ring, the decodes in service
    ``(Ym, Ys)``, the decodes started, the buffer's abandonments and waits per class, and the
    whole wait of the decode started (0 for one placed at once)."""
    num = prefill_done.shape[0]
    finished = jnp.sum(prefill_done)
    enter = finished * (1 - free_solo) * (1 - free_mixed)
    cls_in = jnp.argmax(prefill_done)
    dring = buf.push(ring, enter > 0, cls_in, t, patience(cls_in))
    ready = free_solo + free_mixed - free_solo * free_mixed
    dring, served, gone, credit, waited = serve_ring_head(d, dring, ready, ring, bookkeeping,
                                                          t, window, num, prune)
    # The buffer is a ring of whole jobs: a relaxed fraction of a job cannot wait in it. Under
    # relaxed decisions the whole tangent of a finished prefill goes on to decode (the value is
    # the exact one, prefill_done * (1 - enter)), so that no tangent mass vanishes; the
    # routing's own derivative into the buffer is not taken (a bias, measured with the rest).
    # With exact decisions this is prefill_done * (1 - enter), bit for bit.
    into_ring = jax.lax.stop_gradient(prefill_done * enter)
    placed = prefill_done - into_ring + served
    to_solo = free_solo
    Ys = Ys - solo_done + placed * to_solo
    Ym = Ym - mixed_done + placed * (1 - to_solo)
    # The whole wait of a job the buffer served in this step (0 when none: a decode placed at
    # once waited nothing, and both never happen in one step).
    waited = jnp.where(jnp.sum(served) > 0, waited, 0.0).astype(t.dtype)
    return dring, Ym, Ys, placed, gone, credit, waited
