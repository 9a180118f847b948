"""A first-come-first-served buffer across classes, with exact abandonment.

Counts per class cannot say which job is at the head of a buffer that several classes share:
that needs the arrival order. :class:`Ring` keeps the jobs in arrival order in a ring of
``capacity`` slots (static): each entry is the job's class, its entry time and its abandonment
deadline. A push writes the tail, a pop reads the head: O(1) per event whatever the capacity.

Abandonment is exact and *lazy*. A job entering the buffer draws its patience once (Exp(theta_i)
in the paper's model, any law of :mod:`jaxqueue.patience` otherwise) and abandons at
``entry + patience`` if still waiting; for the exponential law, by memorylessness, this is the
CTMC's rate ``theta_i`` per waiting job. Nothing needs to happen at that moment: nobody else's
rate depends on the buffer's contents, only on whether a *live* job waits. So a job whose
deadline has passed stays in the ring, and is discarded (and counted as abandoned, at its
deadline) when it reaches the head at a moment the owner wants to serve the buffer
(:func:`serve`). A simulator runs such discards as zero-time bookkeeping steps, so the first
live job from the head is always the one served: FCFS among live jobs, exactly. Time integrals
of the buffer's content are credited job by job when a job leaves (served or abandoned), over
the part of its wait inside the statistics window, whenever that wait began.

Times are kept relative to the current rollout's clock (:func:`rebase`) so a float32 time never
loses resolution on long runs. A push into a full ring (live plus not-yet-discarded jobs) sets
``overflow``; the owner turns that into an error. Nothing is dropped silently.

A ring made with ``expiry=True`` also keeps an :class:`Expiry` index of its jobs' deadlines, so
that its count of live jobs costs about ``sqrt(capacity)`` reads per step, plus a block of that
size for each block where a deadline passed, instead of a pass over every slot
(:func:`advance`, :func:`alive_counted`; :func:`head_scan` then finds the first live job from
the head, 16 slots at a time): the engines' rings of one class each, whose live counts their
gates read in every step (pooled Gate-and-Route under a lognormal patience: 3.6x the events per
second of the pass at n = 100, 19x at n = 500; ``scripts/bench_ab.py --only patience``).

A ring made with ``origin=True`` keeps a fourth time per job, its *origin*: the time the request
entered the system, which a buffer downstream of the first one (the decode buffer) cannot read off
its entry time. The end-to-end latency counters carry it through the buffer.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .rng import real_dtype

__all__ = ["Expiry", "HEAD_BLOCK", "Head", "Ring", "Served", "advance", "alive",
           "alive_counted", "alive_sorted", "empty", "head_scan", "live", "overlap", "peek", "pop",
           "push", "rebase", "residual", "serve", "serve_live"]


class Expiry(eqx.Module):
    """Which held jobs of a ring have been counted as abandoned (see :func:`advance`).

    :func:`advance` to a time ``now`` counts in ``expired`` the held jobs whose deadline lies in
    ``(clock, now]``, then sets ``clock`` to ``now``: the counted jobs are those held whose
    deadline is at most ``clock``. ``deadline`` repeats each slot's deadline (written by a push,
    and left as it is when the job leaves: only held slots count), and the slots are grouped in
    blocks of about ``sqrt(capacity)`` with, per block, the smallest deadline above ``clock`` among
    the jobs it holds (``lowest``). A step finds the blocks with a deadline passed from the
    blocks' minima and reads those blocks only. Only a push writes ``deadline``, before the
    step reads it: a write after the reads made XLA copy the whole array in every step. A job
    leaving the ring from its head is counted out of ``expired`` if it was counted, else its
    block's minimum is taken again without it.

    Attributes:
        deadline: per slot, the deadline of the job held there (or of the last one held),
            padded to whole blocks.
        lowest: per block, the smallest deadline above ``clock`` of the jobs it holds.
        expired: held jobs counted as abandoned.
        clock: the time of the last :func:`advance` (on the ring's clock).
    """

    deadline: Float[Array, " S"]
    lowest: Float[Array, " B"]
    expired: Int[Array, ""]
    clock: Float[Array, ""]

    @property
    def width(self) -> int:
        """Slots per block."""
        return self.deadline.shape[-1] // self.lowest.shape[-1]

    def block(self, block: Int[Array, ""], head, size, capacity: int
              ) -> tuple[Float[Array, " W"], Bool[Array, " W"]]:
        """The deadlines of one block's slots, and which of them hold a job (``head`` and
        ``size`` those of a ring of ``capacity`` slots)."""
        start = block * self.width
        rows = jax.lax.dynamic_slice(self.deadline, (start,), (self.width,))
        ahead = start + jnp.arange(self.width, dtype=jnp.int32) - head
        place = jnp.where(ahead < 0, ahead + capacity, ahead)
        return rows, place < size


def _expiry_width(capacity: int) -> int:
    """Slots per block of an :class:`Expiry` over ``capacity`` slots: the power of two nearest
    ``sqrt(capacity)`` from above (a step reads about ``capacity / width + 2 width`` values)."""
    return 1 << max(0, math.ceil(math.log2(max(capacity, 1)) / 2))


def _expiry_empty(capacity: int) -> Expiry:
    width = _expiry_width(capacity)
    blocks = 1 << max(0, math.ceil(math.log2(-(-capacity // width))))  # a power of two
    inf = jnp.asarray(jnp.inf, real_dtype())
    return Expiry(deadline=jnp.full((blocks * width,), inf), lowest=jnp.full((blocks,), inf),
                  expired=jnp.int32(0), clock=jnp.asarray(-jnp.inf, real_dtype()))


class Ring(eqx.Module):
    """Jobs of several classes in arrival order.

    Attributes:
        data: one row per slot, ``(class, entry time, deadline)``, then with an origin column
            the job's origin time; times on the rollout's clock. One row is one cache line: a
            push or a pop touches memory once.
        head: slot of the oldest job.
        size: number of jobs held (live or awaiting discard).
        overflow: set once a push found the ring full.
        expiry: the index of abandoned jobs (:class:`Expiry`), or None.
    """

    data: Float[Array, "K C"]
    head: Int[Array, ""]
    size: Int[Array, ""]
    overflow: Bool[Array, ""]
    expiry: Expiry | None = None

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    @property
    def label(self) -> Int[Array, " K"]:
        return self.data[:, 0].astype(jnp.int32)

    @property
    def entry(self) -> Float[Array, " K"]:
        return self.data[:, 1]

    @property
    def deadline(self) -> Float[Array, " K"]:
        return self.data[:, 2]

    @property
    def has_origin(self) -> bool:
        """Whether each job also keeps its origin time (a fourth column)."""
        return self.data.shape[-1] == 4


def empty(capacity: int, origin: bool = False, expiry: bool = False) -> Ring:
    """An empty ring with ``capacity`` slots (times in the step's floating dtype), with an
    origin time per job when ``origin``, and an :class:`Expiry` index when ``expiry``."""
    return Ring(data=jnp.zeros((capacity, 4 if origin else 3), real_dtype()),
                head=jnp.int32(0), size=jnp.int32(0), overflow=jnp.bool_(False),
                expiry=_expiry_empty(capacity) if expiry else None)


def push(ring: Ring, do: Bool[Array, ""], label: Int[Array, ""], entry: Float[Array, ""],
         deadline: Float[Array, ""], origin: Float[Array, ""] | None = None) -> Ring:
    """Appends a job when ``do`` is true; ``origin`` is its origin time (a ring with an origin
    column only; the entry time when not given)."""
    fits = ring.size < ring.capacity
    write = do & fits
    # An out-of-range index with mode="drop" writes nothing: no select over the whole ring.
    slot = jnp.where(write, (ring.head + ring.size) % ring.capacity, ring.capacity)
    cols = [label.astype(ring.data.dtype), entry, deadline]  # class ids are exact
    if ring.has_origin:
        cols.append(entry if origin is None else jnp.asarray(origin, entry.dtype))
    row = jnp.stack(cols)
    expiry = ring.expiry
    if expiry is not None:  # the job's deadline joins its block (counted at once if passed)
        e = expiry
        at = jnp.where(write, slot, e.deadline.shape[0])
        due = jnp.asarray(deadline, e.deadline.dtype)
        passed = due <= e.clock
        expiry = Expiry(deadline=e.deadline.at[at].set(due, mode="drop"),
                        lowest=e.lowest.at[jnp.where(passed, e.lowest.shape[0], at // e.width)]
                        .min(due, mode="drop"),
                        expired=e.expired + (write & passed).astype(jnp.int32), clock=e.clock)
    return Ring(
        data=ring.data.at[slot].set(row, mode="drop"),
        head=ring.head,
        size=ring.size + write.astype(jnp.int32),
        overflow=ring.overflow | (do & ~fits),
        expiry=expiry,
    )


def peek(ring: Ring) -> tuple[Int[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """(class, entry, deadline) of the head job (meaningless when empty)."""
    row = ring.data[ring.head]
    return row[0].astype(jnp.int32), row[1], row[2]


def pop(ring: Ring, do: Bool[Array, ""]) -> Ring:
    """Drops the head job when ``do`` is true (the caller checked the ring is not empty)."""
    step = do.astype(jnp.int32)
    out = Ring(data=ring.data, head=(ring.head + step) % ring.capacity, size=ring.size - step,
               overflow=ring.overflow)
    return eqx.tree_at(lambda r: r.expiry, out, _leave(ring, out, do),
                       is_leaf=lambda x: x is None)


def _leave(before: Ring, after: Ring, do) -> Expiry | None:
    """The index after the head job of ``before`` left it (``after``; when ``do``): counted out
    of ``expired`` if it had been counted as abandoned, else its block's minimum is taken again
    over the jobs ``after`` holds."""
    e = before.expiry
    if e is None:
        return None
    do = jnp.asarray(do, bool)
    counted = e.deadline[before.head] <= e.clock
    return Expiry(deadline=e.deadline, lowest=_forget(e, before.head, after, do & ~counted),
                  expired=e.expired - (do & counted).astype(jnp.int32), clock=e.clock)


def _forget(e: Expiry, slot: Int[Array, ""], after: Ring, do) -> Float[Array, " B"]:
    """``lowest`` after the uncounted job at ``slot`` left (when ``do``): its block's minimum
    taken again over the jobs ``after`` holds."""
    block = slot // e.width
    rows, held = e.block(block, after.head, after.size, after.capacity)
    rest = jnp.where(held & (rows > e.clock), rows, jnp.asarray(jnp.inf, rows.dtype))
    return e.lowest.at[block].set(jnp.where(do, _smallest(rest), e.lowest[block]))


def _smallest(x: Float[Array, " K"]) -> Float[Array, ""]:
    """The smallest entry (``K`` a power of two), by halving (a float reduction over a short
    axis goes to a slow library kernel on XLA's CPU backend; see
    :meth:`jaxqueue.decisions.Exact.lexmin`)."""
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        x = jnp.minimum(x[:half], x[half:])
    return x[0]


def _argsmallest(x: Float[Array, " K"]) -> tuple[Float[Array, ""], Int[Array, ""]]:
    """The smallest entry and an index of it (``K`` a power of two), by halving (an argmin
    compiled on the CPU to a reduction with a tuple of outputs that cost a fifth of a step)."""
    index = jnp.arange(x.shape[0], dtype=jnp.int32)
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        left = x[:half] <= x[half:]
        x = jnp.where(left, x[:half], x[half:])
        index = jnp.where(left, index[:half], index[half:])
    return x[0], index[0]


def advance(ring: Ring, now: Float[Array, ""]) -> Ring:
    """Counts the held jobs whose deadline is at most ``now`` as abandoned (an :class:`Expiry`
    ring; ``now`` must not decrease from call to call on one clock, nor pass the time by which
    the ring is later rebased: a simulator's step past the window's end advances to the end,
    not to the time it drew). After it,
    :func:`alive_counted` is the ring's count of live jobs at ``now``, exactly :func:`alive`'s.
    """
    e = ring.expiry
    inf = jnp.asarray(jnp.inf, e.deadline.dtype)
    now = jnp.asarray(now, e.deadline.dtype)

    def round_(carry):
        lowest, expired = carry
        least, block = _argsmallest(lowest)
        rows, held = e.block(block, ring.head, ring.size, ring.capacity)
        hit = least <= now
        gone = held & (rows > e.clock) & (rows <= now) & hit
        rest = jnp.where(held & (rows > now), rows, inf)
        lowest = lowest.at[block].set(jnp.where(hit, _smallest(rest), least))
        return lowest, expired + jnp.sum(gone).astype(jnp.int32)

    # Rounds while some block holds a passed deadline. Vmapped, a round runs for every
    # replication while one needs it; a round unrolled before the loop (run in every step) made
    # the step slower, under the lognormal law (an abandonment most steps) and the fixed one.
    lowest, expired = jax.lax.while_loop(lambda c: _smallest(c[0]) <= now, round_,
                                         (e.lowest, e.expired))
    return eqx.tree_at(lambda r: r.expiry, ring,
                       Expiry(deadline=e.deadline, lowest=lowest, expired=expired, clock=now))


def alive_counted(ring: Ring) -> Int[Array, ""]:
    """Live jobs of an :class:`Expiry` ring at the time of its last :func:`advance`."""
    return (ring.size - ring.expiry.expired).astype(jnp.int32)


def rebase(ring: Ring, elapsed: Float[Array, ""]) -> Ring:
    """Shifts stored times to a clock that starts ``elapsed`` later (the next rollout's)."""
    zero = jnp.zeros((), ring.data.dtype)
    times = [elapsed.astype(ring.data.dtype)] * (ring.data.shape[-1] - 1)
    shift = jnp.stack([zero, *times])
    ring = eqx.tree_at(lambda r: r.data, ring, ring.data - shift)
    if ring.expiry is not None:  # the same shift (a subtraction keeps every comparison's order)
        e = ring.expiry
        at = elapsed.astype(e.deadline.dtype)
        ring = eqx.tree_at(lambda r: r.expiry, ring,
                           Expiry(deadline=e.deadline - at, lowest=e.lowest - at,
                                  expired=e.expired, clock=e.clock - at))
    return ring


class Served(eqx.Module):
    """What :func:`serve` did at the head of a ring.

    Attributes:
        ring: the ring after the head was popped (if it was looked at).
        label: class of the head job.
        looked: indicator: the head was looked at (and popped).
        taken: indicator: the head was live and is served now.
        gone: indicator: the head had abandoned, at a deadline inside the statistics window.
        wait: the head's wait inside the window (meaningful when looked at).
        waited: the head's whole wait, ``t`` minus its entry time (meaningful when taken).
        origin: the head's origin time (its entry time in a ring without origins).
    """

    ring: Ring
    label: Int[Array, ""]
    looked: Int[Array, ""]
    taken: Int[Array, ""]
    gone: Int[Array, ""]
    wait: Float[Array, ""]
    waited: Float[Array, ""]
    origin: Float[Array, ""]


def serve(ring: Ring, look, t: Float[Array, ""], window, expired) -> Served:
    """A bookkeeping step at the head of ``ring``: when ``look`` (an indicator; the caller
    checked the ring is not empty), pop the head; it is served if live, or discarded as
    abandoned if its deadline has passed. ``expired(now, deadline)`` is the deadline test (an
    indicator, from the owner's decisions)."""
    w0, w1 = window
    label, entry, deadline = peek(ring)
    look = jnp.asarray(look).astype(jnp.int32)
    gone = look * expired(t, deadline)
    taken = look * (1 - gone)
    in_window = ((deadline > w0) & (deadline <= w1)).astype(jnp.int32)
    end = jnp.where(gone > 0, deadline, t)
    origin = ring.data[ring.head, 3] if ring.has_origin else entry
    return Served(ring=pop(ring, look > 0), label=label, looked=look, taken=taken,
                  gone=gone * in_window, wait=overlap(entry, end, w0, w1), waited=t - entry,
                  origin=origin)


class Head(eqx.Module):
    """What lies at the head of a ring at a time ``now`` (:func:`head_scan`).

    Attributes:
        dead: jobs at the head whose deadline has passed, up to the first live job (all the
            jobs held when none is live).
        live: jobs held whose deadline has not passed.
        gone: of the ``dead`` jobs, those whose deadline lies inside the statistics window.
        wait: the ``dead`` jobs' waits inside the window (each from its entry to its deadline).
    """

    dead: Int[Array, ""]
    live: Int[Array, ""]
    gone: Int[Array, ""]
    wait: Float[Array, ""]


#: Slots of a ring :func:`head_scan` reads at a time in front of its first live job.
HEAD_BLOCK = 16


def head_scan(ring: Ring, now, window, rising: bool = False) -> Head:
    """The ring at time ``now``: its live jobs, and the abandoned jobs in front of the first
    live one with what they owe (:class:`Head`). With :func:`serve_live` an owner whose
    decisions read live counts takes the oldest live job of the ring at once, instead of
    discarding dead heads one bookkeeping step at a time (see :func:`serve_live`).

    One pass over the ring finds the first live job and counts the live ones; what the jobs in
    front of it owe is then summed over blocks of :data:`HEAD_BLOCK` slots from the head, as
    many as they fill (none in most steps: every step discards them, so only those whose
    deadline passed since the last step are there). Masked sums over the whole ring made the
    scan 2.2x as slow (measured: 9.6 against 4.4 us per ring of 4,096 slots on the 2-core CPU).
    With ``rising`` (a static bool: the held jobs' deadlines do not decrease from head to tail,
    as in a ring of one class under a fixed patience) a binary search finds the first live job
    and no pass is made (see :func:`alive_sorted`).
    """
    if ring.expiry is not None:
        return _head_scan_indexed(ring, now, window)
    w0, _ = window
    cap = ring.capacity
    if rising:
        first = _dead_sorted(ring, now).astype(jnp.int32)
        live = (ring.size - first).astype(jnp.int32)
    else:
        ahead = jnp.arange(cap) - ring.head
        place = jnp.where(ahead < 0, ahead + cap, ahead)  # a slot's place after the head
        alive_ = (place < ring.size) & (ring.deadline > now)
        first = jnp.min(jnp.where(alive_, place, ring.size)).astype(jnp.int32)  # size: none
        live = jnp.sum(alive_).astype(jnp.int32)
    offsets = jnp.arange(HEAD_BLOCK, dtype=jnp.int32)

    def block(carry):
        k, gone, wait = carry
        at = k + offsets
        slot = ring.head + at
        slot = jnp.where(slot >= cap, slot - cap, slot)
        rows = ring.data[jnp.minimum(slot, cap - 1)]  # a place past the capacity is masked
        entry, deadline = rows[:, 1], rows[:, 2]
        dead = at < first  # in front of the first live job: held, and abandoned by now
        # Their deadlines are at most now, inside the window whenever they are discarded (the
        # owner discards only up to the window's end).
        gone = gone + jnp.sum(dead & (deadline > w0)).astype(jnp.int32)
        wait = wait + jnp.sum(jnp.where(dead, overlap(entry, deadline, w0, deadline), 0.0))
        return k + HEAD_BLOCK, gone, wait

    zero = jnp.zeros((), ring.data.dtype)
    _, gone, wait = jax.lax.while_loop(lambda c: c[0] < first, block,
                                       (jnp.int32(0), jnp.int32(0), zero))
    return Head(dead=first, live=live, gone=gone, wait=wait)


def _head_scan_indexed(ring: Ring, now, window) -> Head:
    """:func:`head_scan` of an :class:`Expiry` ring advanced to ``now``: the live count is the
    index's, and the first live job is found by reading blocks of :data:`HEAD_BLOCK` slots from
    the head until one holds a live job (one block in most steps), with what the jobs in front
    of it owe."""
    w0, _ = window
    cap = ring.capacity
    offsets = jnp.arange(HEAD_BLOCK, dtype=jnp.int32)

    def block(carry):
        k, first, gone, wait = carry
        at = k + offsets
        slot = ring.head + at
        slot = jnp.where(slot >= cap, slot - cap, slot)
        rows = ring.data[jnp.minimum(slot, cap - 1)]  # a place past the capacity is masked
        entry, deadline = rows[:, 1], rows[:, 2]
        held = at < ring.size
        first = jnp.minimum(first, jnp.min(jnp.where(held & (deadline > now), at, ring.size)))
        dead = held & (at < first)  # in front of the first live job: abandoned by now
        gone = gone + jnp.sum(dead & (deadline > w0)).astype(jnp.int32)
        wait = wait + jnp.sum(jnp.where(dead, overlap(entry, deadline, w0, deadline), 0.0))
        return k + HEAD_BLOCK, first.astype(jnp.int32), gone, wait

    zero = jnp.zeros((), ring.data.dtype)
    size = ring.size.astype(jnp.int32)
    _, first, gone, wait = jax.lax.while_loop(
        lambda c: (c[0] < size) & (c[1] == size), block,
        (jnp.int32(0), size, jnp.int32(0), zero))
    return Head(dead=first, live=alive_counted(ring), gone=gone, wait=wait)


def serve_live(ring: Ring, head: Head, discard, take, t: Float[Array, ""], window) -> Served:
    """Pops the abandoned jobs in front of the first live one when ``discard``, then that job
    when ``take`` too (indicators; ``head`` is :func:`head_scan` of ``ring`` at ``t``, and a
    take needs ``discard`` and a live job).

    This serves the oldest job still waiting at ``t``, the one a first-come-first-served queue
    of live jobs serves, in the same step as the event that frees the server: the decision
    sees the live counts at ``t`` and the jobs discarded are those whose deadline passed by
    then, each counted as abandoned at its deadline (in the window) with its wait up to it. It
    costs the pass of :func:`head_scan`, where the lazy discards of :func:`serve` cost a
    zero-time step each; it keeps a policy that acts in the step of its event (a prefill slot
    freed by a completion admits the next job before the finished prefill is routed, say) the
    same policy with counts or with rings. Returns what it did as :class:`Served` (``gone`` and
    ``wait`` summed over the jobs popped, ``waited`` the taken job's whole wait)."""
    w0, w1 = window
    discard = jnp.asarray(discard).astype(jnp.int32)
    take = jnp.asarray(take).astype(jnp.int32) * discard * (head.live > 0)
    dead = head.dead * discard
    slot = ring.head + dead
    slot = jnp.where(slot >= ring.capacity, slot - ring.capacity, slot)
    row = ring.data[jnp.minimum(slot, ring.capacity - 1)]
    label, entry = row[0].astype(jnp.int32), row[1]
    popped = dead + take
    start = ring.head + popped
    out = Ring(data=ring.data, head=jnp.where(start >= ring.capacity, start - ring.capacity, start),
               size=ring.size - popped, overflow=ring.overflow)
    if ring.expiry is not None:  # the jobs discarded were counted (ring advanced to t)
        e = ring.expiry
        out = eqx.tree_at(lambda r: r.expiry, out,
                          Expiry(deadline=e.deadline, lowest=_forget(e, slot, out, take > 0),
                                 expired=e.expired - dead, clock=e.clock),
                          is_leaf=lambda x: x is None)
    wait = head.wait * discard + take * overlap(entry, t, w0, w1)
    origin = row[3] if ring.has_origin else entry
    return Served(ring=out, label=label, looked=(popped > 0).astype(jnp.int32), taken=take,
                  gone=head.gone * discard, wait=wait, waited=t - entry, origin=origin)


def _held(ring: Ring):
    # Slot k's place after the head, without an integer remainder per slot (slow on a CPU).
    ahead = jnp.arange(ring.capacity) - ring.head
    return jnp.where(ahead < 0, ahead + ring.capacity, ahead) < ring.size


def residual(ring: Ring, num_classes: int, window
             ) -> tuple[Int[Array, " I"], Float[Array, " I"]]:
    """What the jobs a ring still holds owe when a run ends at the window's end, per class:
    abandonments (in the window) and waits (their part inside the window)."""
    w0, w1 = window
    held = _held(ring)
    gone = held & (ring.deadline <= w1)
    end = jnp.where(gone, ring.deadline, w1)
    wait = jnp.where(held, overlap(ring.entry, end, w0, w1), 0.0)
    in_win = gone & (ring.deadline > w0)
    return (_by_class(ring, in_win.astype(jnp.int32), num_classes),
            _by_class(ring, wait, num_classes))


def live(ring: Ring, num_classes: int, now) -> Int[Array, " I"]:
    """Jobs still waiting at time ``now`` per class (held, deadline not yet passed)."""
    alive = _held(ring) & (ring.deadline > now)
    return _by_class(ring, alive.astype(jnp.int32), num_classes)


#: Past this many classes :func:`_by_class` adds each slot into its class's total; up to it, a
#: class-by-slot table of indicators, summed.
_TABLE_CLASSES = 4


def _by_class(ring: Ring, values: Array, num_classes: int) -> Array:
    """Per class, the sum of ``values`` over the ring's slots holding that class. The table of
    indicators costs O(classes x capacity), a fifth of a 1,024-step chunk's time at 32 classes
    and 4,096 slots; adding each slot into its class (a scatter, O(capacity) but one slot
    after another) replaces it past a few classes. With two classes the table, vectorised,
    may be the faster: with the scatter a per-GPU run of 5 replications (a chunk every 1,024
    events, each with its census) took 1.12x as long as before (3 paired runs, 0.96-1.18), with
    the table 1.04x (0.94-1.16), the other core busy both times."""
    if num_classes <= _TABLE_CLASSES:
        hot = ring.label[None, :] == jnp.arange(num_classes)[:, None]
        return jnp.sum(jnp.where(hot, values, jnp.zeros((), values.dtype)), axis=1)
    return jnp.zeros(num_classes, values.dtype).at[ring.label].add(values, mode="drop")


def alive(ring: Ring, now) -> Int[Array, ""]:
    """Jobs of any class still waiting at time ``now`` (held, deadline not yet passed)."""
    return jnp.sum(_held(ring) & (ring.deadline > now)).astype(jnp.int32)


def alive_sorted(ring: Ring, now) -> Int[Array, ""]:
    """:func:`alive` for a ring whose held jobs' deadlines do not decrease from head to tail
    (one class under a fixed patience: each deadline is its entry time plus the same constant),
    by a binary search for the first live job: O(log capacity) reads instead of a pass over
    every slot."""
    return (ring.size - _dead_sorted(ring, now)).astype(jnp.int32)


def _dead_sorted(ring: Ring, now) -> Int[Array, ""]:
    """The jobs in front of the first live one of a ring with rising deadlines (see
    :func:`alive_sorted`), by binary search."""
    cap = ring.capacity
    lo = jnp.zeros((), jnp.int32)
    hi = ring.size.astype(jnp.int32)
    for _ in range(cap.bit_length()):  # the dead jobs are the first lo: find lo in [0, size]
        mid = (lo + hi) // 2
        slot = ring.head + mid
        slot = jnp.where(slot >= cap, slot - cap, slot)
        dead = ring.data[slot, 2] <= now
        more = lo < hi
        lo = jnp.where(more & dead, mid + 1, lo)
        hi = jnp.where(more & ~dead, mid, hi)
    return lo


def overlap(start, end, w0, w1):
    """Length of ``[start, end]`` inside the window ``[w0, w1]``."""
    return jnp.maximum(jnp.minimum(end, w1) - jnp.maximum(start, w0), 0.0)
