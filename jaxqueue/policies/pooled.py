"""Pooled (count-based) Gate-and-Route systems: GG-SP, FG-SP and Prioritize-and-Route.

The pooled system stores counts per class and pool (MODEL.md Sec. 2), so one step costs the same
for n = 5 and n = 50,000. M of the n GPUs are mixed (static planning, Sec. 4.1): they hold the
M prefill slots and (B-1)M decode slots at the mixed rate mu_m; the n-M solo GPUs hold B(n-M)
decode slots at the solo rate mu_s.

Exponential events, ``E = 5I`` of them, class-major within each kind:
``arrival | prefill completion | mixed decode completion | solo decode completion |
prefill-queue abandonment`` (the last only for per-class prefill queues). Buffers served in FCFS
order across classes are :class:`jaxqueue.buffer.Ring`\\ s, whose abandonments are exact but lazy.

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
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import buffer as buf
from ..model import Model
from ..simulate import AbstractSystem

__all__ = ["Pooled", "PooledState", "LEVELS", "TALLIES", "GATES", "default_capacity",
           "gate_choice"]

#: Time-integrated levels, each per class (the names of the per-GPU fluid quantities).
LEVELS = ("x", "y_m", "y_s", "q_p", "q_d")
#: Event counters, each per class.
TALLIES = ("arrivals", "prefill_done", "mixed_done", "solo_done", "prefill_abandon",
           "decode_abandon")
GATES = ("deviation", "priority", "fcfs")


class PooledState(eqx.Module):
    """Counts per class, and the FCFS buffers in arrival order.

    Attributes:
        X: prefills in service (on mixed GPUs).
        Ym: decodes on mixed GPUs.
        Ys: decodes on solo GPUs.
        Qp: jobs waiting for prefill (per-class queues; unused with the FCFS gate).
        prefill_ring: the FCFS prefill queue (FCFS gate only, else None).
        decode_ring: the decode buffer.
    """

    X: Int[Array, " I"]
    Ym: Int[Array, " I"]
    Ys: Int[Array, " I"]
    Qp: Int[Array, " I"]
    prefill_ring: buf.Ring | None
    decode_ring: buf.Ring


class Pooled(AbstractSystem):
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

    level_names: ClassVar[tuple[str, ...]] = LEVELS
    tally_names: ClassVar[tuple[str, ...]] = TALLIES
    num_random: ClassVar[int] = 1

    def __check_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate = {self.gate!r} is invalid: must be one of {GATES}")
        if self.capacity < 1:
            raise ValueError(f"capacity = {self.capacity} is invalid: must be >= 1")

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def init(self) -> PooledState:
        zeros = jnp.zeros(self.num_classes, jnp.int32)
        return PooledState(
            X=zeros, Ym=zeros, Ys=zeros, Qp=zeros,
            prefill_ring=buf.empty(self.capacity) if self.gate == "fcfs" else None,
            decode_ring=buf.empty(self.capacity),
        )

    def rates(self, s: PooledState) -> Float[Array, " E"]:
        m = self.model
        return jnp.concatenate([
            m.lambda_ * self.n, m.mu_p * s.X, m.mu_m * s.Ym, m.mu_s * s.Ys, m.theta * s.Qp,
        ]).astype(jnp.float32)

    def _free(self, s: PooledState) -> tuple[Bool[Array, ""], Bool[Array, ""], Bool[Array, ""]]:
        """(free solo slot, free mixed slot, idle prefill slot)."""
        B = self.model.B
        return (B * (self.n - self.M) > jnp.sum(s.Ys), (B - 1) * self.M > jnp.sum(s.Ym),
                self.M > jnp.sum(s.X))

    def pending(self, s: PooledState) -> Bool[Array, ""]:
        free_solo, free_mixed, idle = self._free(s)
        todo = (free_solo | free_mixed) & (s.decode_ring.size > 0)
        if s.prefill_ring is not None:
            todo = todo | (idle & (s.prefill_ring.size > 0))
        return todo

    def levels(self, s: PooledState) -> Float[Array, " L"]:
        # Waits in the rings are credited job by job in `fire` (q_p for FCFS, q_d always).
        zero = jnp.zeros_like(s.X)
        return jnp.concatenate([s.X, s.Ym, s.Ys, s.Qp, zero]).astype(jnp.float32)

    def rebase(self, s: PooledState, elapsed) -> PooledState:
        return buf.rebase_rings(s, elapsed)

    def overflow(self, s: PooledState) -> Bool[Array, ""]:
        return buf.any_overflow(s.prefill_ring, s.decode_ring)

    def overflow_message(self) -> str:
        return buf.overflow_message(self.capacity)

    def fire(self, s: PooledState, event, t, u, window):
        m = self.model
        num = self.num_classes
        classes = jnp.arange(num)
        w0, w1 = window
        rows, counted, bookkeeping = split_event(event, num, t, window)
        arrive, prefill_done, mixed_done, solo_done, queue_abandon = rows
        free_solo, free_mixed, idle = self._free(s)

        def one_hot(cls, do):
            return ((classes == cls) & do).astype(jnp.int32)

        def patience(cls):
            # Exp(theta_cls) from one uniform; theta = 0 means the job never abandons.
            return t - jnp.log1p(-u[0]) / jnp.asarray(m.theta, jnp.float32)[cls]

        def serve_head(ring, ready, before):
            """Bookkeeping on a ring whose head may be served: discard it if it abandoned.

            ``ring`` may already hold this step's push (never in a bookkeeping step); reading the
            head after the write lets XLA update the ring in place instead of copying it.
            """
            label, entry, deadline = buf.peek(ring)
            look = bookkeeping & ready & (before.size > 0)
            gone = look & (deadline <= t)
            take = look & ~gone
            in_win = ((deadline > w0) & (deadline <= w1)).astype(jnp.int32)
            wait_end = jnp.where(gone, deadline, t)
            credit = one_hot(label, look).astype(jnp.float32) * buf.overlap(entry, wait_end, w0, w1)
            return buf.pop(ring, look), one_hot(label, take), one_hot(label, gone) * in_win, credit

        # Decode side (greedy router). A finished prefill takes a free solo slot, else a free
        # mixed slot, else joins the decode buffer; a free slot serves the buffer's oldest live job.
        finished = jnp.any(prefill_done > 0)
        enter = finished & ~free_solo & ~free_mixed
        cls_in = jnp.argmax(prefill_done)
        dring = buf.push(s.decode_ring, enter, cls_in, t, patience(cls_in))
        dring, served, d_gone, d_credit = serve_head(dring, free_solo | free_mixed, s.decode_ring)
        placed = prefill_done * (~enter).astype(jnp.int32) + served
        to_solo = free_solo.astype(jnp.int32)
        Ys = s.Ys - solo_done + placed * to_solo
        Ym = s.Ym - mixed_done + placed * (1 - to_solo)

        # Prefill side (the gate). An arrival finding an idle prefill slot starts at once (no
        # live job waits then); a prefill slot freed by a completion admits one waiting job.
        X = s.X - prefill_done
        start = arrive * idle.astype(jnp.int32)
        queued = arrive * (~idle).astype(jnp.int32)
        q_credit = jnp.zeros(num, jnp.float32)
        if s.prefill_ring is None:
            Qp = s.Qp + queued - queue_abandon
            admit = one_hot(self._gate_choice(X, Qp), finished & jnp.any(Qp > 0))
            Qp = Qp - admit
            p_gone = queue_abandon * counted
            pring = None
        else:
            Qp = s.Qp
            cls_a = jnp.argmax(arrive)
            pring = buf.push(s.prefill_ring, jnp.any(queued > 0), cls_a, t, patience(cls_a))
            pring, admit, p_gone, q_credit = serve_head(pring, idle, s.prefill_ring)
        X = X + start + admit

        state = PooledState(X=X, Ym=Ym, Ys=Ys, Qp=Qp, prefill_ring=pring, decode_ring=dring)
        tally = jnp.concatenate([arrive * counted, prefill_done * counted, mixed_done * counted,
                                 solo_done * counted, p_gone, d_gone])
        zero = jnp.zeros(num, jnp.float32)
        credit = jnp.concatenate([zero, zero, zero, q_credit, d_credit])
        return state, tally, credit

    def finalize(self, s: PooledState, window):
        num = self.num_classes
        zero_i = jnp.zeros(num, jnp.int32)
        zero_f = jnp.zeros(num, jnp.float32)
        d_gone, d_wait = buf.residual(s.decode_ring, num, window)
        p_gone, p_wait = ((zero_i, zero_f) if s.prefill_ring is None
                          else buf.residual(s.prefill_ring, num, window))
        tally = jnp.concatenate([zero_i, zero_i, zero_i, zero_i, p_gone, d_gone]).astype(jnp.int32)
        credit = jnp.concatenate([zero_f, zero_f, zero_f, p_wait, d_wait])
        return tally, credit

    def _gate_choice(self, X: Int[Array, " I"], Qp: Int[Array, " I"]) -> Int[Array, ""]:
        return gate_choice(self.gate, self.model, self.n, self.x_star, self.q_star, X, Qp)


def gate_choice(gate: str, model: Model, n, x_star, q_star, X: Int[Array, " I"],
                Qp: Int[Array, " I"]) -> Int[Array, ""]:
    """The class a gate admits next among the waiting ones (meaningless if none waits).

    ``deviation``: smallest ``xi_i = (X_i - n x_i*) / x_i*`` (+inf when ``x_i* = 0``, so such a
    class is admitted only when no other waits), ties to the larger ``Qp_i - n q_i*``, then the
    lower index (Sec. 4.1). ``priority``: largest ``D_i / P_i``, ties to the lower index.
    """
    waiting = Qp > 0
    if gate == "priority":
        key = (model.D / model.P).astype(jnp.float32)
        best = jnp.max(jnp.where(waiting, key, -jnp.inf))
        return jnp.argmax(waiting & (key == best))
    n = jnp.asarray(n, jnp.float32)
    x_star = jnp.asarray(x_star, jnp.float32)
    safe = jnp.where(x_star > 0, x_star, 1.0)
    # xi = X/x* - n, equal to (X - n x*)/x* but exact in float32 where ties matter most: every
    # class with X = 0 gets exactly -n, so the queue-deviation rule breaks the tie, not rounding.
    xi = jnp.where(x_star > 0, X / safe - n, jnp.inf)
    first = waiting & (xi == jnp.min(jnp.where(waiting, xi, jnp.inf)))
    dev = Qp - n * jnp.asarray(q_star, jnp.float32)
    second = first & (dev == jnp.max(jnp.where(first, dev, -jnp.inf)))
    return jnp.argmax(second)


def split_event(event, num: int, t, window):
    """The 5I-event layout shared by the pooled and per-GPU engines, decoded.

    Returns the one-hot rows ``(arrive, prefill_done, mixed_done, solo_done, queue_abandon)``
    (each ``(I,)`` int), whether ``t`` lies in the statistics window (int 0/1), and whether the
    step is a bookkeeping step (event index ``5I``).
    """
    w0, w1 = window
    hot = (jnp.arange(5 * num) == event).reshape(5, num).astype(jnp.int32)
    counted = ((t > w0) & (t <= w1)).astype(jnp.int32)
    return tuple(hot), counted, event == 5 * num


def checked_gpus(n) -> int:
    """``n`` as an int, or a ValueError naming the field and its allowed range."""
    try:
        ok = (isinstance(n, (int, np.integer, float)) and not isinstance(n, bool)
              and float(n).is_integer() and int(n) >= 1)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"n (gpus) = {n!r} is invalid: must be an integer >= 1")
    return int(n)


def checked_capacity(capacity, n: int) -> int:
    """A ring capacity: ``capacity`` checked, or :func:`default_capacity` for n when None."""
    if capacity is None:
        return default_capacity(n)
    if isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1:
        raise ValueError(f"capacity = {capacity!r} is invalid: must be an integer >= 1")
    return int(capacity)


def default_capacity(n: int) -> int:
    """A ring capacity for n GPUs: a power of two >= 2n (at least 256), so that nearby n share
    one compiled program. It bounds live plus not-yet-discarded jobs (on the paper's instance at
    n = 500 the decode buffer holds about 110); overflow is an error naming the option to raise.
    Larger rings cost memory traffic (about 100 ns per event at 4096 slots and 1024 reps)."""
    return int(2 ** int(np.ceil(np.log2(max(256, 2 * n)))))
