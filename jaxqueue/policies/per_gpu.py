"""Per-GPU systems: the Sec. 6.3 baselines (FI-WSP, GI-WSP, GF-WSP) and Gate-and-Route / FG-SP
with every GPU's contents explicit.

The coupled baselines keep a request on the GPU where its prefill ran, and a GPU's mode (mixed
while a prefill runs on it, solo otherwise) sets the speed of every decode on it (docs/model.md
Sec. 6, the baselines of Sec. 6.3): pooled counts cannot describe them.

**State: per-GPU arrays**, not counts of GPUs per configuration. A GPU's configuration is its
prefill's class (or none) and its decode count per class: ``(I+1) * C(B+I, I)`` configurations,
459 for the paper's I = 2, B = 16 but about 2e6 for the eight Dolly-15k classes, so counts per
configuration would be cheaper only for one or two classes. ``pre[g]`` is the class of the
prefill running on GPU g (-1: none; at most one prefill per GPU by construction), ``dec[g, i]``
its class-i decodes. The arrays have a static length ``gpus`` (n rounded up to a power of two by
:func:`gpu_slots`, so nearby n share one compiled program); ``n`` and ``M`` stay dynamic leaves,
GPUs ``g >= n`` are inactive.

**Cost per event: O(log n).** An event changes one GPU, or two (a completion and the GPU its
decode is routed to). A :class:`jaxqueue.tree.Tree` over the GPUs keeps, for every block of
GPUs, the prefills and the decodes at each speed per class (their sums at the root are the
chain's rates), the smallest placement key of a GPU able to start a prefill and the smallest
routing key of a GPU with a free decode slot; only the paths of the changed GPUs are
recomputed. The GPU of a completion is drawn by descending the tree; placement and routing read
the root. Both are exact: the same GPUs, with the same probabilities, as scanning all of them.

Two layouts:

- ``"shared"`` (FI-WSP, GI-WSP, GF-WSP; no static planning): every GPU may run one prefill,
  and its prefill and decodes share its B slots.
- ``"planned"`` (GG-SP, FG-SP; static planning, Sec. 4.1): GPUs ``g < M`` are mixed (a reserved
  prefill slot and B-1 decode slots), the others solo (B decode slots, never a prefill).

Decode speed: on a GPU running a prefill a decode completes at mu_m, otherwise at mu_s. With
``speed_rule="paper"`` (the default) a planned mixed GPU counts as mixed even while its prefill
slot idles, as in the paper's pooled model; ``"idle-solo"`` runs it at solo speed then (the
realistic rule, docs/model.md Sec. 8). The levels and tallies carry the pooled engine's names and
meanings per *speed*: ``y_m``/``mixed_done`` are decodes at mu_m, ``y_s``/``solo_done`` at mu_s,
so :func:`jaxqueue.stats.summarize_pooled` and the JSON keys apply unchanged.

Exponential events, ``E = 5I``, laid out as in :mod:`.pooled`: ``arrival | prefill completion |
decode completion at mu_m | decode completion at mu_s | prefill-queue abandonment``, each per
class, with aggregated rates (``mu_p,i X_i``, ``mu_m,i Y_m,i``, ``mu_s,i Y_s,i``). The GPU on
which a chosen completion happens is drawn in a second stage with its own uniform, with
probability proportional to its share of that rate (its class-i prefills, or its class-i decodes
at that speed): ``P(kind, i, g) = P(kind, i) P(g | kind, i)``, the CTMC's law exactly.

Decisions (deterministic; every choice goes through the system's ``decide``,
:mod:`jaxqueue.decisions`; each event changes one GPU, so one decision per side keeps the
invariants "no GPU able to start a prefill while a live job waits for one" and "no free decode
slot while a live job waits for decode"):

- a new prefill starts on the eligible GPU holding the fewest requests (fewest decodes slowed
  by mixed mode), ties to the lowest index; after a completion only its GPU can become eligible;
- coupled (``FI-WSP``, ``GI-WSP``): the decode stays in the prefill's slot on the same GPU;
- decoupled: a finished prefill first lets its GPU admit the next prefill (prefill-first, GF-WSP),
  then goes to a free decode slot: solo pool before mixed pool (greedy router, planned layout),
  then GPUs decoding at solo speed before those at mixed speed, then the fewest requests held,
  then the lowest index; with no free slot it joins the FCFS decode buffer across classes.

Admission: the gate (``deviation``, as in :mod:`.pooled`) over per-class queue counts with CTMC
abandonment, or FCFS across classes (``fcfs``) over a lazy :class:`jaxqueue.buffer.Ring`.

Under a non-exponential patience law (:mod:`jaxqueue.patience`) the gate's per-class queues,
whose abandonment at rate theta per job is exact only for the exponential law, become one ring
per class (FCFS within a class, each job with the deadline it drew on entering). The gate then
decides exactly as with counts, in the same step, from the live counts at that moment, and the
job admitted is the oldest live one of its class: the abandoned jobs in front of it are
discarded then, each counted as abandoned at its deadline (:func:`jaxqueue.buffer.serve_live`),
and every step discards each ring's abandoned jobs in front of its first live one. Admission
stays in the step of the completion that frees the GPU, before the finished prefill is routed
(GF-WSP's prefill-first order), so the policies are unchanged; between events nothing acts on
an abandonment. The queue-abandonment rows of the layout then have rate 0.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .. import buffer as buf
from .. import patience as laws
from .. import tree as gtree
from ..decisions import fence
from ..kernel import AbstractSystem, Flow
from ..model import Model
from ..patience import deadline
from ..rng import real_dtype
from ..service import check_supported as check_service
from .common import (
    LEVELS,
    TALLIES,
    any_overflow,
    class_heads,
    class_live,
    class_residual,
    class_rings,
    class_serve,
    close_rings,
    gate_choice,
    overflow_message,
    push_class,
    rebase_rings,
    revenue,
    ring_live,
    split_event,
)

__all__ = ["PerGpu", "PerGpuState", "counts_dtype", "gpu_slots"]

LAYOUTS = ("shared", "planned")
SPEED_RULES = ("paper", "idle-solo")
_GATES = ("deviation", "fcfs")
_COUNTS = ("int16", "int32")


class PerGpuState(eqx.Module):
    """What every GPU holds, the per-class prefill queues and the FCFS buffers.

    Attributes:
        pre: class of the prefill running on each GPU, -1 when none.
        dec: decodes of each class on each GPU.
        tree: aggregates over blocks of GPUs (:meth:`PerGpu.records` gives a GPU's row).
        Qp: jobs waiting for prefill per class (the gate; unused with FCFS admission and with
            per-class rings).
        prefill_ring: the FCFS prefill queue (FCFS admission only, else None).
        decode_ring: the FCFS decode buffer (decoupled policies only, else None).
        K: this replication's cap on concurrent prefills (with ``prefill_cap``, else None).
        class_rings: the gate's per-class queues as rings, batched over classes, under a
            non-exponential patience law (:attr:`PerGpu.per_job`); else None.
    """

    pre: Int[Array, " G"]
    dec: Int[Array, "G I"]
    tree: gtree.Tree
    Qp: Int[Array, " I"]
    prefill_ring: buf.Ring | None
    decode_ring: buf.Ring | None
    K: Int[Array, ""] | None = None
    class_rings: buf.Ring | None = None


class PerGpu(AbstractSystem):
    """A cluster whose state says what each GPU holds (see the module docstring).

    Attributes:
        model: the scenario.
        n: number of GPUs (active GPUs are ``g < n``).
        M: number of planned mixed GPUs (planned layout; ignored by the shared one).
        x_star: the bundled plan's per-GPU prefill occupancy (gate targets).
        q_star: the bundled plan's per-GPU prefill queue (gate tie-break targets).
        gpus: length of the per-GPU arrays, ``>= n`` (static).
        layout: ``"shared"`` or ``"planned"`` (static).
        coupled: whether a decode stays in its prefill's slot (static).
        gate: ``"deviation"`` or ``"fcfs"`` (static).
        speed_rule: ``"paper"`` or ``"idle-solo"`` (static).
        capacity: slots of each FCFS ring (static).
        counts: dtype of the per-GPU arrays, ``"int16"`` or ``"int32"`` (static; the builders
            take :func:`counts_dtype` of the model: int16 where B and I fit).
        ring_index: whether each per-class ring keeps an index of its jobs' deadlines
            (:class:`jaxqueue.buffer.Expiry`; static): the same live counts as a pass over the
            ring, in about ``sqrt(capacity)`` reads per step. :func:`jaxqueue.simulate` turns it
            off when it shards the replications over several devices: the index loops over
            blocks, and a loop over a sharded batch synchronises the devices at every pass.
    """

    model: Model
    n: Int[Array, ""]
    M: Int[Array, ""]
    x_star: Float[Array, " I"]
    q_star: Float[Array, " I"]
    gpus: int = eqx.field(static=True)
    layout: str = eqx.field(static=True)
    coupled: bool = eqx.field(static=True)
    gate: str = eqx.field(static=True)
    speed_rule: str = eqx.field(static=True, default="paper")
    capacity: int = eqx.field(static=True, default=256)
    counts: str = eqx.field(static=True, default="int32")
    ring_index: bool = eqx.field(static=True, default=True)
    prefill_cap: Float[Array, ""] | None = None
    gate_offset: Float[Array, ""] | None = None

    level_names: ClassVar[tuple[str, ...]] = LEVELS
    tally_names: ClassVar[tuple[str, ...]] = TALLIES
    num_random: ClassVar[int] = 2
    num_init_random: ClassVar[int] = 1

    def __check_init__(self):
        for field, value, allowed in (("layout", self.layout, LAYOUTS),
                                      ("gate", self.gate, _GATES),
                                      ("speed_rule", self.speed_rule, SPEED_RULES),
                                      ("counts", self.counts, _COUNTS)):
            if value not in allowed:
                raise ValueError(f"{field} = {value!r} is invalid: must be one of {allowed}")
        if self.coupled and self.layout != "shared":
            raise ValueError("coupled = True needs layout = 'shared' (a decode stays in the "
                             "prefill's slot, which the planned layout reserves for prefills)")
        if self.gpus < 1 or self.capacity < 1:
            raise ValueError(f"gpus = {self.gpus}, capacity = {self.capacity}: must be >= 1")
        self.slot_dtype  # noqa: B018 (raises if the model's counts do not fit `counts`)
        check_service(self.model.service, "the per-GPU engine")
        if self.per_job and self.decide.differentiable:
            raise ValueError(f"patience.law = {self.model.patience.law!r} keeps each waiting "
                             "job in a ring, which relaxed decisions cannot differentiate: the "
                             "per-GPU engine takes exact decisions")

    @property
    def per_job(self) -> bool:
        """Whether the gate's per-class queues are rings of jobs with their own deadlines (a
        non-exponential patience law with the deviation gate) instead of counts abandoning at
        rate theta; FCFS admission keeps its one ring whatever the law."""
        return laws.per_job(self.model.patience) and self.gate != "fcfs"

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def slot_dtype(self):
        """The dtype of ``pre`` and ``dec`` (:attr:`counts`); raises when the model's B or
        number of classes would not fit it (checked where B is a concrete value)."""
        if self.counts == "int16" and (_largest_count(self.model) or 0) >= 2**15:
            raise ValueError(f"counts = 'int16' cannot hold this model's decode counts and "
                             f"classes (B = {self.model.B}, I = {self.num_classes}): both must "
                             f"be < {2**15}; use counts = 'int32'")
        return jnp.dtype(self.counts)

    def init(self) -> PerGpuState:
        num = self.num_classes
        pre = jnp.full((self.gpus,), -1, self.slot_dtype)
        dec = jnp.zeros((self.gpus, num), self.slot_dtype)
        return PerGpuState(
            pre=pre, dec=dec,
            tree=gtree.build(self._records(pre, dec), self.gpus, sums=3 * num),
            Qp=jnp.zeros(num, jnp.int32),
            prefill_ring=buf.empty(self.capacity) if self.gate == "fcfs" else None,
            decode_ring=None if self.coupled else buf.empty(self.capacity),
            K=None if self.prefill_cap is None else jnp.int32(0),
            class_rings=class_rings(num, self.capacity, self.ring_index) if self.per_job
            else None,
        )

    def randomize(self, s: PerGpuState, u) -> PerGpuState:
        if self.prefill_cap is None:
            return s
        # K = n * prefill_cap concurrent prefills at most, rounded at random per replication.
        K = self.decide.count(self.n * self.prefill_cap, u[0])
        return eqx.tree_at(lambda s: s.K, s, jnp.asarray(K, jnp.int32), is_leaf=lambda x: x is None)

    def with_gpus(self, state: PerGpuState, pre: Int[Array, " G"], dec: Int[Array, "G I"]
                  ) -> PerGpuState:
        """``state`` with the GPUs' contents replaced by ``pre`` and ``dec`` and the aggregation
        tree rebuilt to match (for hand-made states in tests and examples)."""
        pre, dec = jnp.asarray(pre, self.slot_dtype), jnp.asarray(dec, self.slot_dtype)
        tree = gtree.build(self._records(pre, dec), self.gpus, sums=3 * self.num_classes)
        return eqx.tree_at(lambda s: (s.pre, s.dec, s.tree), state, (pre, dec, tree))

    # ---- what each GPU contributes to the tree ----------------------------------------------
    def _records(self, pre: Int[Array, " G"], dec: Int[Array, "G I"]):
        """``records(start, size)``: the tree rows of GPUs ``start .. start + size - 1``.

        Columns: class-i prefills (``I``), class-i decodes at mu_m (``I``), class-i decodes at
        mu_s (``I``), then two keys: placement of a new prefill (GPUs able to start one, fewest
        requests held first, then lowest index) and routing of a decode (GPUs with a free decode
        slot: solo pool, then solo speed, then fewest held, then lowest index). A key is
        ``score * gpus + g`` (INF when the GPU is not eligible), so the minimum names its GPU.
        """
        B, G, num = self.model.B, self.gpus, self.num_classes

        def records(start, size):
            g = start + jnp.arange(size)
            p = jax.lax.dynamic_slice_in_dim(pre, start, size).astype(jnp.int32)
            d = jax.lax.dynamic_slice_in_dim(dec, start, size, axis=0).astype(jnp.int32)
            active = g < self.n
            busy = p >= 0
            decoding = jnp.sum(d, axis=1)
            held = decoding + busy.astype(jnp.int32)
            if self.layout == "planned":
                mixed_pool = g < self.M
                free = jnp.where(active, jnp.where(mixed_pool, B - 1, B) - decoding, 0)
                can_prefill = mixed_pool & active & ~busy
                slow = busy | mixed_pool if self.speed_rule == "paper" else busy
            else:
                mixed_pool = jnp.zeros_like(busy)
                free = jnp.where(active, B - held, 0)
                can_prefill = active & ~busy & (free > 0)
                slow = busy
            big = 2 * B + 2
            route = held + big * slow.astype(jnp.int32) + 2 * big * mixed_pool.astype(jnp.int32)
            keys = jnp.stack([jnp.where(can_prefill, held * G + g, gtree.INF),
                              jnp.where(free > 0, route * G + g, gtree.INF)], axis=1)
            prefills = (p[:, None] == jnp.arange(num)[None, :]).astype(jnp.int32)
            slow_dec = jnp.where(slow[:, None], d, 0)
            return jnp.concatenate([prefills, slow_dec, d - slow_dec, keys], axis=1
                                   ).astype(jnp.int32)

        return records

    def _totals(self, s: PerGpuState):
        """(X, Y_m, Y_s) per class (prefills, decodes at mu_m, at mu_s) and the two root keys."""
        num = self.num_classes
        top = gtree.root(s.tree)
        return top[:num], top[num:2 * num], top[2 * num:3 * num], top[3 * num], top[3 * num + 1]

    def _able(self, pre, dec, g) -> Bool[Array, ""]:
        """Whether GPU ``g`` (an index < gpus, or gpus for none) could start a prefill."""
        k = jnp.minimum(g, self.gpus - 1)
        idle = (g < self.n) & (pre[k] < 0)
        if self.layout == "planned":
            return idle & (g < self.M)
        return idle & (jnp.sum(dec[k].astype(jnp.int32)) < self.model.B)

    # ---- the AbstractSystem interface -------------------------------------------------------
    def rates(self, s: PerGpuState) -> Float[Array, " E"]:
        m = self.model
        X, Ym, Ys, _, _ = self._totals(s)
        return jnp.concatenate([
            m.lambda_ * self.n, m.mu_p * X, m.mu_m * Ym, m.mu_s * Ys, m.theta * s.Qp,
        ])

    def levels(self, s: PerGpuState) -> Float[Array, " L"]:
        # Waits in the rings are credited job by job in `fire` (q_p for FCFS, q_d always).
        X, Ym, Ys, _, _ = self._totals(s)
        return jnp.concatenate([X, Ym, Ys, s.Qp, jnp.zeros_like(s.Qp)]).astype(real_dtype())

    def revenue(self, integrals, counts):
        return revenue(self.model, integrals, counts, self.tally_names)

    def pending(self, s: PerGpuState) -> Bool[Array, ""]:
        _, _, _, place, route = self._totals(s)
        todo = jnp.bool_(False)
        if s.prefill_ring is not None:
            able = place < gtree.INF
            if self.prefill_cap is not None:
                able = able & (jnp.sum(self._totals(s)[0]) < s.K)
            todo = todo | (able & (s.prefill_ring.size > 0))
        if s.decode_ring is not None:
            todo = todo | ((route < gtree.INF) & (s.decode_ring.size > 0))
        return todo

    def rebase(self, s: PerGpuState, elapsed) -> PerGpuState:
        s = rebase_rings(s, elapsed)
        if s.class_rings is not None:
            s = eqx.tree_at(lambda s: s.class_rings, s, buf.rebase(s.class_rings, elapsed))
        return s

    def overflow(self, s: PerGpuState) -> Bool[Array, ""]:
        over = any_overflow(s.prefill_ring, s.decode_ring)
        if s.class_rings is not None:
            over = over | jnp.any(s.class_rings.overflow)
        return over

    def overflow_message(self) -> str:
        return overflow_message(self.capacity)

    def fire(self, s: PerGpuState, event, t, u, window):
        m, d = self.model, self.decide
        num = self.num_classes
        G = self.gpus
        rows, counted, bookkeeping = split_event(event, num, t, window)
        arrive, prefill_done, mixed_done, solo_done, queue_abandon = rows
        kind, cls = fence((event.index // num, event.index % num))
        X, _, _, place_key, _ = self._totals(s)
        capped = self.prefill_cap is not None
        under_cap = (jnp.sum(X) < s.K) if capped else jnp.bool_(True)
        can_start = (place_key < gtree.INF) & under_cap
        first_able = place_key % G  # the GPU a new prefill starts on (when can_start)
        can_start, first_able = fence((can_start, first_able))
        real = t.dtype

        def at(do, g):  # the index of GPU g when `do`, else one past the end (a dropped write)
            return jnp.where(do, g, G)

        def start_prefill(pre, do, g, c):  # GPU g starts a class-c prefill when `do`
            return pre.at[at(do, g)].set(jnp.asarray(c, pre.dtype), mode="drop")

        def patience(c):
            return deadline(m, t, u[0], c)

        def serve_head(ring, ready, now=False):
            """Bookkeeping on a ring whose head may be served: discard it if it abandoned (in a
            bookkeeping step, or in this one where ``now``)."""
            look = (bookkeeping | now) & ready & (ring.size > 0)
            out = buf.serve(ring, look, t, window, d.at_least)
            credit = d.one_hot(out.label, num, out.looked).astype(real) * out.wait
            return out.ring, out.label, out.taken > 0, d.one_hot(out.label, num, out.gone), credit

        # Second stage of a completion: its GPU, proportional to the GPU's share of the rate
        # (its class-cls prefills, or its class-cls decodes at the event's speed).
        column = jnp.clip(kind - 1, 0, 2) * num + cls
        completes = (kind >= 1) & (kind <= 3)
        g_event = fence(jnp.where(completes,
                                  d.descend(s.tree, self._records(s.pre, s.dec), column, u[1]), G))
        finished = kind == 1
        pre = s.pre.at[at(finished, g_event)].set(-1, mode="drop")
        dec = s.dec.at[at((kind == 2) | (kind == 3), g_event), cls].add(-1, mode="drop")
        if self.coupled:  # Immediate coupling: the decode keeps the prefill's slot.
            dec = dec.at[at(finished, g_event), cls].add(1, mode="drop")
        X = X - prefill_done

        # Prefill side. An arrival finding a GPU able to prefill starts at once (no live job
        # waits then); after a completion only its GPU can become able, and admits one job.
        arrival = kind == 0
        started = arrival & can_start
        pre = start_prefill(pre, started, first_able, cls)
        start = d.one_hot(cls, num, started.astype(jnp.int32))
        queued = arrival & ~can_start
        zero_f = jnp.zeros(num, real)
        zero_i = jnp.zeros(num, jnp.int32)
        p_credit = zero_f
        pring = s.prefill_ring
        p_look = jnp.bool_(False)
        changed = jnp.where(completes, g_event, jnp.where(started, first_able, G))
        crings = heads = None
        if pring is None and self.per_job:
            # Per-class rings: the gate reads the live counts at t (after this step's arrival
            # joined its ring), and below the admitted class's ring serves its oldest live job.
            crings = push_class(s.class_rings, queued, cls, t, patience(cls))
            crings, heads = class_heads(crings, t, window, m)
            waiting = heads.live
        elif pring is None:
            waiting = s.Qp + d.one_hot(cls, num, queued.astype(jnp.int32)) - queue_abandon
        if pring is None and capped:
            # With a cap, GPUs other than the completing one may be able while jobs wait (the
            # cap held them back): the freed capacity goes to the best able GPU.
            Qp = waiting
            tree = gtree.refresh(s.tree, self._records(pre, dec), changed)
            key_now = gtree.root(tree)[3 * num]
            target = key_now % G
            admit = (completes & (key_now < gtree.INF) & jnp.any(Qp > 0)
                     & (jnp.sum(X) < s.K))
            chosen = self._gate_choice(X, Qp)
            admitted = d.one_hot(chosen, num, admit.astype(jnp.int32))
            Qp = Qp - admitted
            pre = start_prefill(pre, admit, target, chosen)
            p_gone = queue_abandon * counted
            s = eqx.tree_at(lambda s: s.tree, s, tree)
            changed = at(admit, target)
        elif pring is None:
            Qp = waiting
            admit = completes & self._able(pre, dec, g_event) & jnp.any(Qp > 0)
            chosen = self._gate_choice(X, Qp)
            admitted = d.one_hot(chosen, num, admit.astype(jnp.int32))
            Qp = Qp - admitted
            pre = start_prefill(pre, admit, g_event, chosen)
            p_gone = queue_abandon * counted
        else:
            Qp = s.Qp
            pring = buf.push(pring, queued, cls, t, patience(cls))
            p_look = bookkeeping & can_start & (pring.size > 0)
            ready, target, freed = can_start, first_able, False
            if s.decode_ring is None and not capped:
                # A completion serves the ring in its own step: with jobs in the ring no GPU
                # was able before it, so its GPU is the only one that may be now, the one a
                # bookkeeping step after it would pick. (Decoupled policies route the finished
                # prefill first and admit in a bookkeeping step after it: they keep that.)
                freed, target = fence((completes & self._able(pre, dec, g_event),
                                       jnp.where(completes, g_event, first_able)))
                ready = can_start | freed
            pring, label, take, p_gone, p_credit = serve_head(pring, ready, freed)
            pre = start_prefill(pre, take, target, label)
            admitted = d.one_hot(label, num, take.astype(jnp.int32))
            changed = jnp.where(take, target, changed)
        if crings is not None:
            out = class_serve(crings, heads, admitted, t, window)
            crings, Qp = out.ring, s.Qp  # the counts stay 0: the rings hold the jobs
            p_gone, p_credit = out.gone, out.wait.astype(real)
        tree = gtree.refresh(s.tree, self._records(pre, dec), changed)

        # Decode side (decoupled only): route a finished prefill, or serve the decode buffer.
        d_gone, d_credit = zero_i, zero_f
        dring = s.decode_ring
        if dring is None:
            decode_start = prefill_done
        else:
            route_key = gtree.root(tree)[3 * num + 1]
            has_free = route_key < gtree.INF
            target = route_key % G
            place = finished & has_free
            dec = dec.at[at(place, target), cls].add(1, mode="drop")
            dring = buf.push(dring, finished & ~has_free, cls, t, patience(cls))
            ready = has_free
            if pring is not None and self.layout == "shared":
                ready = ready & ~p_look  # prefill-first: the prefill queue is served first
            ended = False
            if self.layout == "planned":
                # A decode completion serves the buffer in its own step, on the slot it freed
                # (with jobs in the buffer no slot was free before it: the root's routing key
                # names that slot). Planned GPUs keep prefill and decode slots apart, so no
                # prefill waits for it; in the shared layout the prefill queue goes first.
                ended = (kind == 2) | (kind == 3)
            dring, label, take, d_gone, d_credit = serve_head(dring, ready, ended)
            dec = dec.at[at(take, target), label].add(1, mode="drop")
            decode_start = (d.one_hot(cls, num, place.astype(jnp.int32))
                            + d.one_hot(label, num, take.astype(jnp.int32)))
            tree = gtree.refresh(tree, self._records(pre, dec), at(place | take, target))

        state = PerGpuState(pre=pre, dec=dec, tree=tree, Qp=Qp, prefill_ring=pring,
                            decode_ring=dring, K=s.K, class_rings=crings)
        counts = jnp.concatenate([arrive * counted, prefill_done * counted, mixed_done * counted,
                                  solo_done * counted, p_gone, d_gone,
                                  (start + admitted) * counted, decode_start * counted])
        waits = jnp.concatenate([zero_f, zero_f, zero_f, p_credit, d_credit])
        return state, Flow(counts=counts, waits=waits)

    def close(self, s: PerGpuState, window):
        flow = close_rings(s, self.num_classes, window)
        if s.class_rings is None:
            return flow
        num = self.num_classes
        gone, wait = class_residual(s.class_rings, num, window)
        return Flow(counts=flow.counts.at[4 * num:5 * num].add(gone),
                    waits=flow.waits.at[3 * num:4 * num].add(wait))

    def census(self, s: PerGpuState, now):
        num = self.num_classes
        X, Ym, Ys, _, _ = self._totals(s)
        queued = s.Qp + ring_live(s.prefill_ring, num, now)
        if s.class_rings is not None:
            queued = queued + class_live(s.class_rings, now)
        return jnp.concatenate([X, Ym, Ys, queued, ring_live(s.decode_ring, num, now)]
                               ).astype(jnp.int32)

    def _gate_choice(self, X: Int[Array, " I"], Qp: Int[Array, " I"]) -> Int[Array, ""]:
        """The gate of Sec. 4.1, shared with the pooled engine (:func:`.common.gate_choice`)."""
        return gate_choice("deviation", self.decide, self.model, self.n, self.x_star,
                           self.q_star, X, Qp, self.gate_offset)


def gpu_slots(n: int) -> int:
    """Length of the per-GPU arrays for n GPUs: the next power of two (nearby n share one
    compiled program; the padding GPUs are inactive)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def counts_dtype(model: Model) -> str:
    """The narrowest dtype of the per-GPU arrays for ``model``: ``"int16"`` when its B (decode
    slots per GPU) and number of classes are below 2^15, else ``"int32"`` (also when B is not a
    concrete value). A step gathers a block of GPUs' rows from these long arrays; half the bytes
    per row help where they are large (see docs/speed.md)."""
    big = _largest_count(model)
    return "int16" if big is not None and big < 2**15 else "int32"


def _largest_count(model: Model) -> int | None:
    """The largest value a per-GPU array holds, max(B, I); None when B is traced."""
    try:
        return max(int(model.B), model.num_classes)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None
