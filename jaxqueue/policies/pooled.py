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

With phase-type service laws (:mod:`jaxqueue.service`) the state also counts the class-i jobs in
each phase k of prefill, mixed decode and solo decode (``phases``, ``(3, I, K)``, side-major, K the
longer law's phases; its sums over phases are the totals ``X``, ``Ym``, ``Ys`` that the policies
read; a side left exponential is a one-phase law padded with phases never entered, so that the three
sides update as one array, in fewer kernels than three arrays). Every service starts in phase 1. A
job in phase k of a service of mean rate mu leaves the phase at rate ``mu r_ik``: to phase k+1 (an
*advance*, rate ``mu r_ik p_ik``, which changes only the phase counts) or out of service (an *end*,
rate ``mu r_ik (1 - p_ik)``, which acts on the policy exactly as a completion of that class). The
event is drawn in two stages, with the same law as one draw among all of them (in a race of
exponentials, which one fires first is independent of when): the layout's "completion" row of class
i on a side has the total rate ``sum_k mu_i r_ik Z_ik`` at which its jobs there leave a phase
(exactly ``mu_i Z_i`` with one phase); when it fires, one more uniform of the step picks the phase
and the outcome with probabilities proportional to ``r_ik (1 - p_ik) Z_ik`` (an end) and ``r_ik p_ik
Z_ik`` (an advance). The event vector keeps its 5I rates whatever the number of phases: a step's
cost grows steeply with its event vector (padding the 10 rates of ``paper-qwen8b`` with 36 zeros
made a step 3.5x as slow), and Erlang-4 prefill and decode times ran 1.45x as fast this way as with
an event rate per phase and outcome (46 rates; measured in one process on the 2-core machine, n =
100). With the exponential law (no ``service`` on the model) nothing of this exists: the same state
and random numbers as before.

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

The ``gated`` family of :mod:`jaxqueue.policies.tunable` is this system with knobs
(:class:`GatedParams`): free gate targets and offset, a random number of mixed GPUs per
replication, a decode-congestion slack and per-class caps. The knobs can hold a job back while
a slot is idle, and a later zero-time bookkeeping step admits it; at the LP point they never
do, and the family's paths are the paper's.

Every decision goes through the system's ``decide`` (:mod:`jaxqueue.decisions`); indicators are
combined with arithmetic (``a * b``, ``1 - a``) so that a relaxation can replace them.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import buffer as buf
from .. import patience as laws
from .. import rng
from ..decisions import fence, hot_index
from ..kernel import AbstractSystem, Flow
from ..model import Model
from ..patience import deadline
from ..replay import ArrivalTrace
from ..rng import real_dtype
from ..service import Coxian
from .common import (
    EXIT_LEVELS,
    GATES,
    LEVELS,
    TALLIES,
    advance_classes,
    any_overflow,
    class_rings,
    close_rings,
    gate_admit,
    gate_keys,
    overflow_message,
    rebase_rings,
    revenue,
    ring_live,
    rounded,
    rounding_logp,
    split_event,
)

__all__ = ["GatedParams", "Pooled", "PooledState", "e2e_hits", "fresh_service", "grid_hits",
           "greedy_route", "latency_hits", "pick_prefill_origin", "serve_ring_head",
           "shift_phases"]


class GatedParams(eqx.Module):
    """The knobs of the ``gated`` family (:mod:`jaxqueue.policies.tunable`): a
    :class:`Pooled` system with the deviation gate and these ``params``.

    Attributes:
        targets: gate targets, prefills per GPU per class (> 0).
        offset: the gate ranks by ``(X_i + offset) / target_i - n`` (>= 0).
        share: mixed GPUs per GPU, in ``[0, 1]``; ``n * share`` is rounded once per replication.
        slack: decode-congestion admission slack, per GPU (>= 0).
        caps: per-class admission caps, prefills per GPU (>= 0).
    """

    targets: Float[Array, " I"]
    offset: Float[Array, ""]
    share: Float[Array, ""]
    slack: Float[Array, ""]
    caps: Float[Array, " I"]


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
        M, slack, caps: with the ``gated`` family's ``params``, this replication's mixed GPUs,
            decode-congestion slack and per-class caps, in jobs (``n * (share, slack, caps)``
            rounded once per replication); else None.
        phases: with a phase-type service law, the jobs of each class in each phase of
            prefill, mixed decode and solo decode, ``(3, I, K)`` (sums over phases ``X``,
            ``Ym``, ``Ys``; see :attr:`Xk`); else None.
        origins: with end-to-end latency counters, the arrival times of the prefills in
            service, class i's ``X_i`` of them in the first slots of row i, ``(I, capacity)``
            (the decode buffer then keeps each job's arrival time as its origin); else None.
        origins_full: with ``origins``, set once some ``X_i`` exceeded the capacity (a write
            was dropped: the run is rerun with a larger capacity, as for a full ring).
        replay_at, replay_k: with replayed arrivals, the time of the next one on the rollout's
            clock and its index in the trace; else None.
    """

    X: Int[Array, " I"]
    Ym: Int[Array, " I"]
    Ys: Int[Array, " I"]
    Qp: Int[Array, " I"]
    prefill_ring: buf.Ring | None
    decode_ring: buf.Ring
    class_rings: buf.Ring | None = None
    M: Int[Array, ""] | None = None
    slack: Int[Array, ""] | None = None
    caps: Int[Array, " I"] | None = None
    phases: Int[Array, "3 I K"] | None = None
    origins: Float[Array, "I S"] | None = None
    origins_full: Bool[Array, ""] | None = None
    replay_at: Float[Array, ""] | None = None
    replay_k: Int[Array, ""] | None = None

    @property
    def Xk(self) -> Int[Array, "I K"] | None:
        """Prefills per class and phase (None without phases)."""
        return None if self.phases is None else self.phases[0]

    @property
    def Ymk(self) -> Int[Array, "I K"] | None:
        """Mixed decodes per class and phase (None without phases)."""
        return None if self.phases is None else self.phases[1]

    @property
    def Ysk(self) -> Int[Array, "I K"] | None:
        """Solo decodes per class and phase (None without phases)."""
        return None if self.phases is None else self.phases[2]


class Pooled(AbstractSystem):
    """A pooled Gate-and-Route-type system.

    The paper's policies are this system with ``params = None``: ``M`` mixed GPUs, the gate's
    targets ``x_star``, every idle prefill slot filled. With ``params``
    (:class:`GatedParams`, deviation gate only) it is the ``gated`` family of
    :mod:`jaxqueue.policies.tunable`, whose knobs generalise the paper's gate: free targets and
    offset, ``M = n * share`` rounded once per replication, a decode-congestion slack and
    per-class caps (a prefill starts only while the prefills in service are fewer than the free
    decode slots plus ``n * slack``, and class i only while ``X_i < n * caps_i``). Both run the
    same step: at the LP point (``targets = x*``, ``offset = 0``, ``share = M / n``, slack and
    caps that never bind) the family's sample paths are the paper's policy's, bit for bit.

    Attributes:
        model: the scenario (rates are derived from it inside the step).
        n: number of GPUs.
        M: number of mixed GPUs (``ceil(n sum x*)`` under static planning; with ``params``,
            the plan's, for reference only: each replication draws its own).
        x_star: the plan's per-GPU prefill occupancy (the gate's targets without ``params``).
        q_star: the plan's per-GPU prefill queue (gate tie-break targets).
        gate: ``"deviation"``, ``"priority"`` or ``"fcfs"`` (static).
        capacity: slots of each FCFS ring (static).
        wait_grid: times at which to count the latencies' distributions (static; see
            :attr:`tally_names`).
        end_to_end: with a ``wait_grid``, also count each decode's end-to-end latency and the
            side it runs on (static; see :attr:`tracks_origin`). False keeps the prefill and
            decode-buffer counters only, a cheaper step with the same paths.
        params: None (the paper's policies), or the ``gated`` family's knobs.
        gate_temperature: with ``params`` only: None (the deterministic gate), or the
            temperature of the smoothed family: the gate draws the class it admits with
            probabilities ``softmax(-xi / T)`` among the eligible classes, and the share, slack
            and caps are rounded with a triangular dither (:func:`~.common.rounded`), so that
            the expected objective is continuously differentiable in every knob.
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
    gate: str = eqx.field(static=True)
    capacity: int = eqx.field(static=True)
    wait_grid: tuple[float, ...] = eqx.field(static=True, default=())
    end_to_end: bool = eqx.field(static=True, default=True)
    ring_index: bool = eqx.field(static=True, default=True)
    params: GatedParams | None = None
    gate_temperature: Float[Array, ""] | None = None
    arrivals: ArrivalTrace | None = None

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
        if self.params is not None:
            if self.gate != "deviation":
                raise ValueError(f"params (the gated family's knobs) need gate = 'deviation', "
                                 f"not {self.gate!r}")
            if self.wait_grid:
                raise ValueError("the gated family counts its prefill queues and keeps no "
                                 "entry times: a wait_grid is for the paper's pooled policies")
        elif self.gate_temperature is not None:
            raise ValueError("gate_temperature is for the gated family (params) only")
        if self.arrivals is not None:
            if self.params is not None:
                raise ValueError("replayed arrivals are for the paper's pooled policies, not "
                                 "the gated family (params)")
            if self.decide.differentiable:
                raise ValueError("replayed arrivals need exact decisions")
            top = int(np.max(np.asarray(self.arrivals.classes)))
            if top >= self.num_classes:
                raise ValueError(f"arrivals are invalid: class {top} is not one of the "
                                 f"scenario's {self.num_classes} classes")
        if self.phased:
            where = None
            # Relaxed decisions make counts fractional; the score-function estimator's decisions
            # are exact (its paths are the exact chain's), and take phases like the exact ones.
            if not jnp.issubdtype(self.decide.count_dtype, jnp.integer):
                where = "relaxed (pathwise-differentiable) decisions"
            elif self.tracks_origin and self.prefill_law is not None:
                where = ("end-to-end latency counters (end_to_end), which pick the prefill that "
                         "ends uniformly among its class's, as only exponential prefill times "
                         "allow")
            if where is not None:
                raise ValueError(f"{self.model.service.named(every=True)} not supported with "
                                 f"{where}: phase-type service runs on the pooled engine with "
                                 "exact decisions (and end-to-end latency counters only with an "
                                 "exponential prefill; the wait, time-to-first-token and "
                                 "decode-wait counters run with end_to_end=False)")

    # ---- rates, levels, revenue, ring bookkeeping, census --------------------------------------
    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def prefill_law(self) -> Coxian | None:
        """The prefill time's Coxian shape (:mod:`jaxqueue.service`), None when exponential
        (no phases kept)."""
        return getattr(self.model.service, "prefill", None)

    @property
    def decode_law(self) -> Coxian | None:
        """The decode time's Coxian shape, None when exponential (no phases kept)."""
        return getattr(self.model.service, "decode", None)

    @property
    def phased(self) -> bool:
        """Whether the state counts the jobs in each phase of some service (a phase-type law on
        the model, even one of a single phase)."""
        return self.prefill_law is not None or self.decode_law is not None

    @property
    def level_names(self) -> tuple[str, ...]:
        """:data:`LEVELS`, then with phase-type service laws :data:`EXIT_LEVELS`."""
        return LEVELS + EXIT_LEVELS if self.phased else LEVELS

    @property
    def num_phases(self) -> int:
        """K, the phases of the longer law (1 without phases)."""
        return max([1] + [law.phases for law in (self.prefill_law, self.decode_law)
                          if law is not None])

    def _shapes(self):
        """The phase rates and continuation probabilities of prefill, mixed and solo decode,
        ``(3, I, K)`` each; a side left exponential is one phase of rate 1, padded."""
        K, num = self.num_phases, self.num_classes

        def padded(law):
            if law is None:
                return jnp.ones((num, K)), jnp.zeros((num, K))
            r, p = jnp.asarray(law.rates), jnp.asarray(law.cont)
            pad = ((0, 0), (0, K - law.phases))
            return jnp.pad(r, pad, constant_values=1.0), jnp.pad(p, pad)

        (rp, pp), (rd, pd) = padded(self.prefill_law), padded(self.decode_law)
        return jnp.stack([rp, rd, rd]), jnp.stack([pp, pd, pd])

    def _mu(self):
        """The mean service rates of prefill, mixed and solo decode, ``(3, I)``."""
        m = self.model
        return jnp.stack([jnp.asarray(m.mu_p), jnp.asarray(m.mu_m), jnp.asarray(m.mu_s)])

    def rates(self, s) -> Float[Array, " E"]:
        m = self.model
        # Replayed arrivals are scheduled events (next_scheduled), not exponential ones.
        arrive = m.lambda_ * self.n if self.arrivals is None else jnp.zeros_like(m.lambda_)
        if not self.phased:
            return jnp.concatenate([
                arrive, m.mu_p * s.X, m.mu_m * s.Ym, m.mu_s * s.Ys, m.theta * s.Qp,
            ])
        # A side's row: the rate at which its class-i jobs leave a phase (fire picks which
        # phase, and whether the service ends there).
        rates, _ = self._shapes()
        leave = self._mu() * jnp.sum(rates * s.phases, axis=2)
        return jnp.concatenate([arrive, leave.reshape(-1), m.theta * s.Qp])

    @property
    def scheduled(self) -> bool:
        return self.arrivals is not None

    def next_scheduled(self, s):
        """The next replayed arrival: its time and its event (the arrival of its class)."""
        return s.replay_at, self.arrivals.classes[s.replay_k]

    @property
    def num_credited_levels(self) -> int:
        # q_d, the last block without phases: its integral is credited job by job as each
        # decode leaves the buffer (at 32 classes, adding its zeros densely in every step
        # took about 5% of the step); and q_p before it where the prefill queues are rings
        # (FCFS, or per-class rings of jobs), whose level here is always 0 (Qp is unused).
        if self.phased:
            return 0
        return (2 if self.gate == "fcfs" or self.per_job else 1) * self.num_classes

    def dense_levels(self, s):
        if self.phased:
            return super().dense_levels(s)
        real = real_dtype()
        blocks = [s.X, s.Ym, s.Ys] + ([] if self.num_credited_levels > self.num_classes
                                      else [s.Qp])
        return tuple(b.astype(real) for b in blocks)

    def levels(self, s) -> Float[Array, " L"]:
        # Waits in the rings are credited job by job in `fire` (q_p for FCFS, q_d always).
        zero = jnp.zeros_like(s.X)
        base = [s.X, s.Ym, s.Ys, s.Qp, zero]
        if not self.phased:
            return jnp.concatenate(base).astype(real_dtype())
        real = real_dtype()
        rates, cont = self._shapes()
        exits = jnp.sum((rates * (1 - cont)).astype(real) * s.phases, axis=2)
        return jnp.concatenate([a.astype(real) for a in base] + [exits.reshape(-1)])

    def revenue(self, integrals, counts):
        return revenue(self.model, integrals, counts, self.tally_names, self.level_names)

    def rebase(self, s, elapsed):
        s = rebase_rings(s, elapsed)
        if s.replay_at is not None:
            s = eqx.tree_at(lambda s: s.replay_at, s,
                            s.replay_at - elapsed.astype(s.replay_at.dtype))
        if s.class_rings is not None:
            s = eqx.tree_at(lambda s: s.class_rings, s, buf.rebase(s.class_rings, elapsed))
        if s.origins is not None:
            s = eqx.tree_at(lambda s: s.origins, s, s.origins - elapsed.astype(s.origins.dtype))
        return s

    def overflow(self, s) -> Bool[Array, ""]:
        over = any_overflow(s.prefill_ring, s.decode_ring)
        if s.class_rings is not None:
            over = over | jnp.any(s.class_rings.overflow)
        if s.origins_full is not None:
            over = over | s.origins_full
        return over

    def overflow_message(self) -> str:
        message = overflow_message(self.capacity)
        if self.tracks_origin:
            message += (" (or the prefills in service of one class outnumbered it, in the "
                         "table of their arrival times)")
        return message

    def close(self, s, window):
        flow = close_rings(s, self.num_classes, window)
        num = self.num_classes
        if self.phased:  # the exit levels owe nothing at the close
            flow = Flow(counts=flow.counts, waits=jnp.concatenate(
                [flow.waits, jnp.zeros(len(EXIT_LEVELS) * num, flow.waits.dtype)]))
        # The latency counters (past the paper's) count starts of service: none at the close.
        extra = (len(self.tally_names) - len(TALLIES)) * num
        if extra:
            flow = Flow(counts=jnp.concatenate([flow.counts, jnp.zeros(extra, jnp.int32)]),
                        waits=flow.waits)
        if s.class_rings is None:
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
        if s.class_rings is not None:
            queued = queued + self._alive(s.class_rings, now)
        stock = jnp.concatenate([s.X, s.Ym, s.Ys, queued, ring_live(s.decode_ring, num, now)]
                                ).astype(jnp.int32)
        if self.phased:  # the exit levels weigh jobs by rates: they hold no stock of jobs
            stock = jnp.concatenate([stock, jnp.zeros(len(EXIT_LEVELS) * num, jnp.int32)])
        return stock

    @property
    def per_job(self) -> bool:
        """Whether the per-class prefill queues are rings of jobs with their own deadlines (a
        non-exponential patience law, or a ``wait_grid``, with the deviation or priority gate),
        instead of counts abandoning at rate theta."""
        return (laws.per_job(self.model.patience) or bool(self.wait_grid)) and self.gate != "fcfs"

    @property
    def smoothed(self) -> bool:
        """Whether the gated family's decisions are all randomised (a gate temperature is set):
        the gate draws its class and the thresholds are rounded with the triangular dither."""
        return self.gate_temperature is not None

    @property
    def num_random(self) -> int:
        # The patience draw; then the smoothed gate's draw, or with a wait grid the admitted
        # job's prefill time (never both); then with phases the phase move's draw.
        return self._phase_word + self.phased

    @property
    def _phase_word(self) -> int:
        """Which of the step's uniforms draws a phase move (the last)."""
        return 2 if (self.wait_grid or self.smoothed) else 1

    @property
    def num_init_random(self) -> int:
        # The gated family rounds share, slack and one cap per class: one uniform each, two
        # with the dither.
        if self.params is None:
            return 0 if self.arrivals is None else 1  # where in the trace's cycle it starts
        return (2 + self.num_classes) * (2 if self.smoothed else 1)

    @property
    def tracks_origin(self) -> bool:
        """Whether the state keeps each request's arrival time up to its decode (``origins``,
        and an origin column in the decode buffer): a ``wait_grid`` with ``end_to_end``."""
        return bool(self.wait_grid) and self.end_to_end

    @property
    def tally_names(self) -> tuple[str, ...]:
        """:data:`TALLIES`, then with a ``wait_grid`` of K times, per class, the prefills started
        (in the window) whose wait for prefill was at most grid time k (``prefill_wait_le_k``),
        then those whose time to first token was (``ttft_le_k``), then the decodes started whose
        wait in the decode buffer was (``decode_wait_le_k``): see :func:`latency_hits`. With
        :attr:`tracks_origin`, then the decodes started whose end-to-end latency was at most
        grid time k (``e2e_le_k``), then the decodes started on a solo GPU
        (``decode_start_solo``): see :func:`e2e_hits`."""
        k = range(len(self.wait_grid))
        names = (TALLIES + tuple(f"prefill_wait_le_{i}" for i in k)
                 + tuple(f"ttft_le_{i}" for i in k) + tuple(f"decode_wait_le_{i}" for i in k))
        if self.tracks_origin:
            names += tuple(f"e2e_le_{i}" for i in k) + ("decode_start_solo",)
        return names

    def init(self) -> PooledState:
        zeros = jnp.zeros(self.num_classes, self.decide.count_dtype)
        scalar = jnp.zeros((), self.decide.count_dtype)
        knobs = self.params is not None
        phases = jnp.zeros((3, self.num_classes, self.num_phases), self.decide.count_dtype)
        return PooledState(
            X=zeros, Ym=zeros, Ys=zeros, Qp=zeros,
            prefill_ring=buf.empty(self.capacity) if self.gate == "fcfs" else None,
            decode_ring=buf.empty(self.capacity, origin=self.tracks_origin),
            # Per-class rings keep an index of their abandoned jobs (exact decisions only: a
            # relaxed count has no per-job abandonments to index).
            class_rings=class_rings(self.num_classes, self.capacity,
                                    self.ring_index and not self.decide.differentiable)
            if self.per_job else None,
            M=scalar if knobs else None, slack=scalar if knobs else None,
            caps=zeros if knobs else None, phases=phases if self.phased else None,
            origins=jnp.zeros((self.num_classes, self.capacity), real_dtype())
            if self.tracks_origin else None,
            origins_full=jnp.bool_(False) if self.tracks_origin else None,
            replay_at=None if self.arrivals is None else jnp.zeros((), real_dtype()),
            replay_k=None if self.arrivals is None else jnp.zeros((), jnp.int32),
        )

    # ---- the gated family's thresholds, rounded once per replication --------------------------
    def thresholds(self) -> Float[Array, " K"]:
        """The real numbers each replication of the gated family rounds:
        ``n * (share, slack, caps_1..caps_I)``."""
        p, n = self.params, self.n
        return jnp.concatenate([jnp.stack([n * p.share, n * p.slack]), n * p.caps])

    def randomize(self, s: PooledState, u) -> PooledState:
        if self.arrivals is not None:
            # A uniform point of the trace's cycle; the first arrival at or after it comes
            # next (the cycle's first, in the next cycle, past the last).
            a = self.arrivals
            start = u[0].astype(a.times.dtype) * a.period
            k = jnp.searchsorted(a.times, start, side="left").astype(jnp.int32)
            wrap = k >= a.size
            at = jnp.where(wrap, a.period - start + a.times[0],
                           a.times[jnp.minimum(k, a.size - 1)] - start)
            return eqx.tree_at(lambda s: (s.replay_at, s.replay_k), s,
                               (at.astype(s.replay_at.dtype), jnp.where(wrap, 0, k)))
        k = rounded(self.decide, self.thresholds(), u, self.smoothed)
        dtype = s.M.dtype
        M = jnp.minimum(k[0], self.n).astype(dtype)
        return eqx.tree_at(lambda s: (s.M, s.slack, s.caps), s,
                           (M, k[1].astype(dtype), k[2:].astype(dtype)))

    def rounding_logp(self, s: PooledState) -> Float[Array, " K"]:
        """``log P`` of each of this replication's rounded thresholds (share, slack, caps;
        :func:`~.common.rounding_logp`), a function of the parameters: what the
        likelihood-ratio estimator differentiates for them."""
        k = jnp.concatenate([jnp.stack([s.M, s.slack]), s.caps]).astype(real_dtype())
        values = self.thresholds()
        upper = jnp.full(values.shape, jnp.inf, values.dtype).at[0].set(self.n)
        return rounding_logp(values, k, self.smoothed, upper, total=False)

    def threshold_reach(self, s: PooledState) -> Float[Array, " K"]:
        """What each rounded threshold is compared with in ``s``: the slack with ``sum X -
        free decode slots``, cap i with ``X_i`` (a threshold ``K`` admits while the quantity is
        below it); the number of mixed GPUs always matters (+inf). If the running maximum of a
        quantity stays below every value its threshold can take, the threshold decided nothing
        in that replication (the likelihood-ratio estimator then drops its term)."""
        _, _, _, free = self._free(s, s.X, s.Ym, s.Ys)
        return jnp.concatenate([jnp.stack([jnp.inf, jnp.sum(s.X) - free]), s.X]
                               ).astype(real_dtype())

    # ---- decisions ----------------------------------------------------------------------------
    def _free(self, s: PooledState, X, Ym, Ys):
        """Indicators (free solo slot, free mixed slot, idle prefill slot) and the number of
        free decode slots."""
        B, d = self.model.B, self.decide
        M = self.M if s.M is None else s.M
        solo, mixed = B * (self.n - M), (B - 1) * M
        free = solo - jnp.sum(Ys) + mixed - jnp.sum(Ym)
        return (d.greater(solo, jnp.sum(Ys)), d.greater(mixed, jnp.sum(Ym)),
                d.greater(M, jnp.sum(X)), free)

    def _admission(self, s: PooledState, X, Ym, Ys, Qp, dring: buf.Ring):
        """(indicator that a prefill may start now, eligible classes) for per-class queues
        holding ``Qp`` jobs (counts, or the jobs a ring holds): an idle prefill slot and a
        waiting class; with the gated family's knobs, also the class under its cap and fewer
        prefills in service than free decode slots plus the slack.

        The free decode slots are counted after the decode buffer has taken its own: a free
        slot with a job in the buffer (``dring``) goes to that job in the next zero-time step
        (or in the step that freed it, before the gate: the same count),
        so it is not counted (if the buffer's head turns out to have abandoned, that step
        discards it and the gate looks again)."""
        d = self.decide
        free_solo, free_mixed, idle, free = self._free(s, X, Ym, Ys)
        eligible = d.greater(Qp, 0)
        if s.caps is not None:
            eligible = eligible * d.greater(s.caps, X)
        go = idle * d.greater(jnp.sum(eligible), 0)
        if s.slack is not None:
            taken = (free_solo + free_mixed - free_solo * free_mixed) * (dring.size > 0)
            go = go * d.greater(free - taken + s.slack, jnp.sum(X))
        return go, eligible

    def pending(self, s: PooledState) -> Bool[Array, ""]:
        free_solo, free_mixed, idle, _ = self._free(s, s.X, s.Ym, s.Ys)
        todo = ((free_solo + free_mixed) > 0) & (s.decode_ring.size > 0)
        if s.prefill_ring is not None:
            todo = todo | ((idle > 0) & (s.prefill_ring.size > 0))
        if s.class_rings is not None:
            # An idle slot and a ring holding a job the gate may admit (or discard, if it
            # abandoned); with the knobs, one under its class's cap and within the slack.
            go, _ = self._admission(s, s.X, s.Ym, s.Ys, s.class_rings.size, s.decode_ring)
            todo = todo | (go > 0.5)
        elif s.slack is not None:
            # The knobs can hold a waiting job back while a slot is idle; a decode completion
            # may then let it in, in a zero-time bookkeeping step. (Without them an idle slot
            # implies no waiting job, and none is ever pending.)
            go, _ = self._admission(s, s.X, s.Ym, s.Ys, s.Qp, s.decode_ring)
            todo = todo | (go > 0.5)
        return todo

    def fire(self, s: PooledState, event, t, u, window):
        m, d = self.model, self.decide
        num = self.num_classes
        rows, counted, bookkeeping = split_event(event, num, t, window)
        arrive, prefill_done, mixed_done, solo_done, queue_abandon = rows
        if self.phased:
            # A side's row moves a job out of its phase; when the move ends the service, it acts
            # on the policy as a completion of the class.
            advances, ends = self._phase_moves(s, jnp.stack(rows[1:4]), u[self._phase_word])
            prefill_done, mixed_done, solo_done = jnp.sum(ends, axis=2)
        free_solo, free_mixed, idle, _ = fence(self._free(s, s.X, s.Ym, s.Ys))
        real = t.dtype

        def patience(cls):
            return deadline(m, t, u[0], cls)

        prune = laws.per_job(m.patience)

        def serve_head(ring, ready, before, now=False):
            return serve_ring_head(d, ring, ready, before, bookkeeping, t, window, num,
                                   prune, now)


        origins = done_origin = None
        if self.tracks_origin:
            moved, done_origin = pick_prefill_origin(s.origins, s.X, prefill_done, u[1])

        # Decode side (greedy router).
        dring, Ym, Ys, placed, d_gone, d_credit, d_waited, d_origin, d_entry, on_solo = (
            greedy_route(d, s.decode_ring, s.Ym, s.Ys, prefill_done, mixed_done, solo_done,
                         free_solo, free_mixed, bookkeeping, t, patience, window, prune,
                         done_origin))

        # Prefill side (the gate), at most one start per step.
        X = s.X - prefill_done
        zero_f = jnp.zeros(num, real)
        q_credit, q_entry = zero_f, None
        crings = pring = None
        logp = jnp.zeros((), real)
        if s.class_rings is not None:
            # Per-class rings (FCFS within a class), each job with its own deadline. An arrival
            # finding an idle slot starts at once (no live job waits then; with the knobs,
            # which can hold jobs back, every arrival joins its ring). In a bookkeeping step
            # with an idle slot the gate picks a class among those with a live job (live
            # counts at t), or, when none has one, among those holding any (with the knobs:
            # classes under their cap, within the slack); the head of the picked ring is
            # admitted if live, else discarded as abandoned (at its deadline), and the next
            # bookkeeping step looks again.
            start = arrive * idle if self.params is None else jnp.zeros_like(arrive)
            queued = arrive - start
            Qp = s.Qp
            cls_a = hot_index(arrive)
            hot_a = jnp.arange(num) == cls_a
            due = patience(cls_a)
            crings = jax.vmap(buf.push, in_axes=(0, 0, None, None, None))(
                s.class_rings, hot_a & (jnp.sum(queued) > 0), cls_a, t, due)
            # The live counts before the push, read from the rings after it (less the job
            # pushed, if live): reading the rings before the push kept two versions of them
            # alive in each step, and XLA copied every ring twice per step to do so.
            pushed = crings.size - s.class_rings.size
            if crings.expiry is not None:  # the index counts the abandoned jobs up to t
                crings = advance_classes(crings, t, window)
                alive = jax.vmap(buf.alive_counted)(crings)
            else:
                alive = self._alive(crings, t)
            live = alive - pushed * (due > t).astype(jnp.int32)
            held = s.class_rings.size
            some_live = jnp.any(live > 0)
            counts = jnp.where(some_live, live, held)
            # Every step also discards each ring's head if its deadline has passed, so jobs
            # that abandoned do not pile up behind a class the gate seldom serves.
            dead = jax.vmap(lambda r: dead_head(d, r, t, window))(crings)
            if self.params is None:
                pick, _ = d.choose(*self._gate_keys(X, counts))
                chosen = (jnp.arange(num) == pick) & bookkeeping & (idle > 0) & jnp.any(held > 0)
            else:
                go, eligible = self._admission(s, X, Ym, Ys, held, dring)
                if self.smoothed:
                    # A random pick waits until no ring's head is dead: picking a class whose
                    # head turns out dead, discarding it and drawing again would favour the
                    # other classes (a deterministic pick just picks the same class again).
                    go = jnp.where(jnp.any(dead), jnp.zeros_like(go), go)
                live_ok = jnp.any((live > 0) & (eligible > 0))
                eligible = eligible * jnp.where(live_ok, d.greater(live, 0), 1)
                keys, _ = self._gate_keys(X, counts)
                hot, logp = gate_admit(d, keys, eligible, go * bookkeeping,
                                       self.gate_temperature, u[1] if self.smoothed else None)
                chosen = hot > 0
            out = jax.vmap(lambda r, go: buf.serve(r, go, t, window, d.at_least))(
                crings, chosen | dead)
            crings = out.ring
            taken = out.taken.astype(X.dtype)
            admit = start + taken
            p_gone = out.gone.astype(X.dtype)
            q_credit = jnp.where(out.looked > 0, out.wait, 0.0).astype(real)
            waited = jnp.sum(jnp.where(out.taken > 0, out.waited, 0.0))
        elif s.prefill_ring is None:
            # Counted per-class queues: every arrival joins its class's queue, then the gate
            # admits one eligible job if it may (an arrival finding an idle slot is then the
            # only one waiting, and starts at once).
            Qp = s.Qp + arrive - queue_abandon
            go, eligible = self._admission(s, X, Ym, Ys, Qp, dring)
            keys, _ = self._gate_keys(X, Qp)
            admit, logp = gate_admit(d, keys, eligible, go, self.gate_temperature,
                                     u[1] if self.smoothed else None)
            Qp = Qp - admit
            p_gone = queue_abandon * counted
            waited = None  # counts carry no entry times (a wait grid makes per-class rings)
        else:
            # The FCFS ring: an arrival finding an idle slot starts at once; a prefill
            # completion serves the ring's oldest live job in its own step (with jobs in the
            # ring no slot was idle before it; a relaxed forward pass takes the same decisions),
            # a bookkeeping step the next one if that head had abandoned.
            start = arrive * idle
            queued = arrive * (1 - idle)
            Qp = s.Qp
            cls_a = hot_index(arrive)
            pring = buf.push(s.prefill_ring, jnp.sum(queued) > 0, cls_a, t, patience(cls_a))
            freed = jnp.sum(prefill_done) > 0
            pring, taken, p_gone, q_credit, waited, _, q_entry = serve_head(
                pring, jnp.where(freed, 1, idle), s.prefill_ring, freed)
            admit = start + taken
        origins_full = None
        if self.tracks_origin:
            # The job admitted (at most one) goes to the first free slot of its class's row:
            # it arrived its whole wait ago (0 for an arrival that starts at once).
            admitted = jnp.sum(admit) > 0
            came = t - jnp.where(admitted & (jnp.sum(taken) > 0), waited, 0.0).astype(real)
            cls_s = hot_index(admit)
            row = jnp.where(admitted, cls_s, num)  # out of range: no write
            col = X[cls_s].astype(jnp.int32)
            # One scatter for both writes (the ended prefill's slot refilled, then the admitted
            # job's): two in a row made XLA copy the whole table twice per step. Where both
            # hit one slot the second wins, so the first is dropped.
            first_row, first_col, first = moved
            first_row = jnp.where((first_row == row) & (first_col == col), num, first_row)
            # The write made to wait for the step's other read of the table (the ending
            # prefill's arrival time), by a test that never holds: XLA otherwise could not
            # tell that every read came first, and copied the whole table twice per step.
            first = jnp.where(done_origin < -1e30, done_origin, first)
            origins = s.origins.at[jnp.stack([first_row, row]), jnp.stack([first_col, col])].set(
                jnp.stack([first, came.astype(first.dtype)]), mode="drop")
            origins_full = s.origins_full | jnp.any(X + admit > self.capacity)
        X = X + admit

        phases = None
        if self.phased:
            # Services start in phase 1: the prefills admitted, and the decodes the router
            # placed on each side (what it added to the side's total besides the ends).
            starts = jnp.stack([admit, Ym - (s.Ym - mixed_done), Ys - (s.Ys - solo_done)])
            phases = shift_phases(s.phases, advances, ends, starts)
        replay_at, replay_k = s.replay_at, s.replay_k
        if self.arrivals is not None:
            # Every arrival is the scheduled one: the next is a gap later.
            arrived = jnp.sum(arrive) > 0
            gap = self.arrivals.gaps[replay_k].astype(replay_at.dtype)
            replay_at = jnp.where(arrived, replay_at + gap, replay_at)
            replay_k = jnp.where(arrived, (replay_k + 1) % self.arrivals.size, replay_k)
        state = PooledState(X=X, Ym=Ym, Ys=Ys, Qp=Qp, prefill_ring=pring, decode_ring=dring,
                            class_rings=crings, M=s.M, slack=s.slack, caps=s.caps,
                            phases=phases, origins=origins, origins_full=origins_full,
                            replay_at=replay_at, replay_k=replay_k)
        hits = None
        if not self.sparse_counts:
            counts = jnp.concatenate([arrive * counted, prefill_done * counted,
                                      mixed_done * counted, solo_done * counted, p_gone, d_gone,
                                      admit * counted, placed * counted])
        else:
            # Rows 0-3 of the counters are the event's own (arrival, prefill end, mixed and
            # solo decode end); a prefill-queue abandonment (row 4) is the event's own with
            # counted queues and a ring's discard with a FCFS ring. Index 8I is no hit.
            none = len(TALLIES) * num
            idx = jnp.arange(num, dtype=jnp.int32)
            on = counted > 0

            def at(v, row, ok=True):
                v = v.astype(jnp.int32)
                return jnp.where((jnp.sum(v) > 0) & ok, row * num + jnp.sum(idx * v), none)

            e = event.index.astype(jnp.int32)
            hits = jnp.stack([jnp.where((e < 4 * num) & on, e, none), at(p_gone, 4),
                              at(d_gone, 5), at(admit, 6, on), at(placed, 7, on)])
            counts = jnp.zeros(0, jnp.int32)
        if self.wait_grid:
            # At most one prefill starts per step: an arrival at an idle slot (no wait) or, in
            # a bookkeeping step, the head of a ring (its whole wait). The latency counters are
            # a histogram's bins, one hit per kind (see `tallied`).
            wait = jnp.where(jnp.sum(taken) > 0, waited, 0.0).astype(real)
            hits = jnp.concatenate([
                latency_hits(self.wait_grid, admit * counted, wait, m.mu_p, u[1],
                             self.prefill_law),
                grid_hits(self.wait_grid, placed * counted, d_waited)])
            if self.tracks_origin:
                hits = jnp.concatenate([hits, e2e_hits(
                    self.wait_grid, placed * counted, on_solo, t - d_origin, m.mu_m, m.mu_s,
                    self.decode_law, u[0])])
            # Offsets of the kinds (prefill wait, TTFT, decode wait, end to end, solo start)
            # in the whole counter vector; a hit past a kind's block is no hit.
            block = len(self.wait_grid) * num
            kinds = len(hits)
            start = len(TALLIES) * num + block * jnp.arange(kinds, dtype=jnp.int32)
            size = jnp.asarray([block] * (kinds - self.tracks_origin) + [num] * self.tracks_origin,
                               jnp.int32)
            hits = jnp.where(hits < size, start + hits, len(self.tally_names) * num)
        if self.sparse_counts:
            # The waits credited (a decode buffer's head, a FCFS prefill ring's head) as
            # entries: added densely, the step's whole chain of decisions behind each was
            # recomputed for every one of the 5I integrals.
            entries = [(4, d_entry)] + ([] if q_entry is None else [(3, q_entry)])
            none = len(LEVELS) * num
            credits = (jnp.stack([jnp.where(c < num, row * num + c, none)
                                  for row, (c, _) in entries]),
                       jnp.stack([w for _, (_, w) in entries]))
            return state, Flow(counts=counts, waits=None, logp=logp, hits=hits, credits=credits)
        waits = jnp.concatenate([zero_f, zero_f, zero_f, q_credit, d_credit]
                                + [zero_f] * (len(EXIT_LEVELS) if self.phased else 0))
        return state, Flow(counts=counts, waits=waits, logp=logp, hits=hits)

    @property
    def sparse_counts(self) -> bool:
        """Whether a step's counters come as hits (:attr:`Flow.hits`), one index per kind of
        count, instead of a dense vector of all 8I: exact decisions, where each kind counts at
        most one job of one class per step (an event's own row, one abandonment from a ring,
        one admission, one decode placed), and no other hits (latency counters) or phases.
        The same integers; at 8 and 32 classes the dense add was about a sixth of a step."""
        return (not self.decide.differentiable and not self.phased and not self.wait_grid
                and not self.per_job)

    @property
    def num_hit_tallies(self) -> int:
        if self.sparse_counts:
            return len(TALLIES) * self.num_classes
        return (len(self.tally_names) - len(TALLIES)) * self.num_classes

    def tallied(self, counts):
        """The latency counters of a step are hits in a histogram of grid intervals: a start
        whose value ``v`` lies in ``(g_{b-1}, g_b]`` adds one to bin ``b`` (``v <= g_0``: bin
        0; past the last grid time: no bin). The count at most grid time ``g_k`` is the sum
        of bins ``0 .. k``, per kind and class."""
        if not self.wait_grid:
            return counts
        num, K = self.num_classes, len(self.wait_grid)
        base = len(TALLIES) * num
        kinds = 4 if self.tracks_origin else 3
        head, bins, tail = jnp.split(counts, [base, base + kinds * K * num], axis=-1)
        shape = bins.shape[:-1]
        bins = jnp.cumsum(bins.reshape(*shape, kinds, K, num), axis=-2)
        return jnp.concatenate([head, bins.reshape(*shape, kinds * K * num), tail], axis=-1)

    def _phase_moves(self, s, fired, u):
        """The phase moves of a step, ``(advances, ends)``, each ``(3, I, K)``: a job of the
        side and class whose row fired (``fired``, the one-hot rows of prefill, mixed and solo
        decode, ``(3, I)``; at most one in a step) leaves phase k for phase k+1, or ends its
        service there. Which, from the uniform ``u``: index j among ``2 K`` outcomes (ends from
        phases 1..K, then advances from them) with the weights ``r_k (1 - p_k) Z_k`` and
        ``r_k p_k Z_k`` of the fired side and class."""
        rates, cont = self._shapes()
        leave = fired[:, :, None] * rates * s.phases
        weights = jnp.concatenate([jnp.sum(leave * (1 - cont), axis=(0, 1)),
                                   jnp.sum(leave * cont, axis=(0, 1))])
        K = self.num_phases
        j = self.decide.draw(weights, u)
        return (fired[:, :, None] * self.decide.one_hot(j - K, K),
                fired[:, :, None] * self.decide.one_hot(j, K))

    def _gate_keys(self, X: Int[Array, " I"], Qp: Int[Array, " I"]):
        if self.params is None:
            return gate_keys(self.gate, self.decide, self.model, self.n, self.x_star,
                             self.q_star, X, Qp)
        # A class the plan does not serve keeps the paper's key (+inf: admitted only when no
        # other class waits) whatever its target, which the family floors at a small positive
        # value for its log coordinates: with a finite target such a class, with none in
        # service, would tie every other idle class at -n and win whenever its queue is long.
        targets = jnp.where(self.x_star > 0, self.params.targets, 0.0)
        return gate_keys(self.gate, self.decide, self.model, self.n, targets, self.q_star, X,
                         Qp, self.params.offset)


def shift_phases(Zk: Int[Array, "... K"], advance: Int[Array, "... K"],
                 ends: Int[Array, "... K"], starts: Int[Array, "..."]) -> Int[Array, "... K"]:
    """Phase counts (phases on the last axis) after a step: ``ends`` leave their phase,
    ``advance`` moves jobs from phase k to k+1 (never from the last), and ``starts`` enter
    phase 1."""
    into = jnp.concatenate([starts[..., None].astype(Zk.dtype), advance[..., :-1]], axis=-1)
    return Zk + into - ends - advance


def latency_hits(grid: tuple[float, ...], started: Int[Array, " I"], wait: Float[Array, ""],
                 mu_p: Float[Array, " I"], u: Float[Array, ""], law: Coxian | None = None
                 ) -> Int[Array, " 2"]:
    """The latency counters' hits (:func:`grid_hits`) of a step in which the prefills
    ``started`` (a one-hot or zero count per class) began after waiting ``wait``: the wait's,
    then the time to first token's.

    The time to first token is the wait plus the prefill, which in this model takes a time of
    mean ``1 / mu_p`` (exponential, or of the phase-type ``law``) whatever else happens,
    independent of the wait. The counter draws that time afresh from ``u``
    (:func:`fresh_service`; not the one the chain will realise, which the count-based state
    does not single out): the pair has the law of the job's own, so each counter's
    expectation, and the distribution it estimates, is exact; only the correlation between one
    job's two counters and the chain's later path is not kept."""
    cls = hot_index(started)
    ttft = wait + fresh_service(law, cls, mu_p[cls].astype(wait.dtype), u)
    return jnp.concatenate([grid_hits(grid, started, wait), grid_hits(grid, started, ttft)])


def pick_prefill_origin(origins: Float[Array, "I S"], X: Int[Array, " I"],
                        prefill_done: Int[Array, " I"], u: Float[Array, ""]):
    """The arrival time of the job whose prefill ends in this step (``prefill_done``, one-hot or
    zero), and the write that takes it out of the table: ``(row, column, value)``, a row past
    the last for none.

    The count-based state does not say which class-i prefill ended; with exponential prefill
    times every one of the ``X_i`` in service is equally likely to (memorylessness), so the
    uniform ``u`` picks one of the class's slots, and the row's last entry fills the slot
    (rows stay packed: class i's jobs are its first ``X_i`` slots). Which job ended changes
    nothing else in the chain, so the paths are those of the chain without the table, and the
    arrival time picked has the law of the ending job's own, jointly with the path."""
    num = X.shape[0]
    cls = hot_index(prefill_done)
    have = X[cls].astype(jnp.int32)
    last = jnp.maximum(have - 1, 0)
    j = jnp.clip((u * have.astype(u.dtype)).astype(jnp.int32), 0, last)
    origin = origins[cls, j]
    row = jnp.where(jnp.sum(prefill_done) > 0, cls, num)  # out of range: no write
    return (row, j, origins[cls, last]), origin


def e2e_hits(grid: tuple[float, ...], started: Int[Array, " I"], solo, since: Float[Array, ""],
             mu_m: Float[Array, " I"], mu_s: Float[Array, " I"], law: Coxian | None,
             u: Float[Array, ""]) -> Int[Array, " 2"]:
    """The end-to-end counters' hits of a step in which the decodes ``started`` (one-hot or zero
    per class) began, on a solo GPU when ``solo`` (an indicator), ``since`` seconds after the
    request arrived: the end-to-end latency's bin (:func:`grid_hits`), then the class, if the
    decode runs on a solo GPU (whose per-token time, ``1 / gamma``, is the request's time per
    output token; ``tau`` on a mixed GPU), else ``I`` (no hit).

    The end-to-end latency is ``since`` plus the decode, whose time on a slot of rate ``mu``
    (``mu_s`` or ``mu_m`` of the class) has its law whatever happened before the start: the
    counter draws it afresh from ``u`` (see :func:`latency_hits`; :func:`fresh_service` for a
    phase-type decode law), so the latency it counts has the request's own law."""
    cls = hot_index(started)
    rate = jnp.where(solo > 0, mu_s[cls], mu_m[cls]).astype(since.dtype)
    e2e = since + fresh_service(law, cls, rate, u)
    num = started.shape[0]
    on_solo = jnp.where((jnp.sum(started) > 0) & (solo > 0), cls, num).astype(jnp.int32)
    return jnp.concatenate([grid_hits(grid, started, e2e), on_solo[None]])


#: The Threefry key word that derives a phase-type draw's uniforms from one uniform.
_DERIVE = 0x3C6EF372


def fresh_service(law: Coxian | None, cls: Int[Array, ""], rate: Float[Array, ""],
                  u: Float[Array, ""]) -> Float[Array, ""]:
    """A class-``cls`` service time of mean ``1 / rate`` drawn from the uniform ``u``:
    exponential without a law, else from the Coxian shape ``law`` (one exponential per phase
    reached, each continuing with its probability). A Coxian draw needs ``2 K`` uniforms: they
    are hashed (Threefry-2x32) from the 24 bits of ``u`` under counters ``0 .. K - 1``, a
    derivation no other draw of the step uses."""
    if law is None:
        return -jnp.log1p(-u) / rate
    K = law.phases
    bits = (u * 2.0**24).astype(jnp.uint32)
    words = []
    for j in range(K):
        words += rng.threefry2x32(bits, jnp.uint32(_DERIVE), jnp.uint32(j), jnp.uint32(0))
    v = rng.uniform(jnp.stack(words))  # (2K,): even words time a phase, odd ones continue it
    r = jnp.asarray(law.rates)[cls].astype(u.dtype)
    cont = jnp.asarray(law.cont)[cls].astype(u.dtype)
    times = -jnp.log1p(-v[0::2]) / (rate * r)
    reached = jnp.cumprod(jnp.concatenate([jnp.ones(1, u.dtype),
                                           (v[1::2][:-1] < cont[:-1]).astype(u.dtype)]))
    return jnp.sum(times * reached)


def grid_hits(grid: tuple[float, ...], started: Int[Array, " I"], value: Float[Array, ""]
              ) -> Int[Array, " 1"]:
    """Where a start (``started``, one-hot or zero per class) of latency ``value`` goes in a
    histogram of the K grid times (bin-major, ``(K, I)``, flattened): bin ``b``, the number of
    grid times below ``value`` (so ``value <= g_k`` exactly when ``k >= b``; a NaN is below
    none), of its class; ``K I`` (no bin) for no start or a value past the last time."""
    g = jnp.asarray(grid, value.dtype)
    num = started.shape[0]
    below = jnp.sum(~(value <= g)).astype(jnp.int32)
    where = below * num + hot_index(started).astype(jnp.int32)
    return jnp.where(jnp.sum(started) > 0, where, len(grid) * num)[None]


def dead_head(d, ring, t, window):
    """Whether ``ring``'s head job has abandoned by ``t`` (its deadline passed) and should be
    discarded now; never past the window's end, where a step only closes the rollout."""
    return (ring.size > 0) & (t <= window[1]) & (d.at_least(t, buf.peek(ring)[2]) > 0)


def serve_ring_head(d, ring, ready, before, bookkeeping, t, window, num, prune=False, now=False):
    """Bookkeeping on a ring whose head may be served: discard it if it abandoned.

    The head is looked at in a bookkeeping step, or, where ``now`` holds, in this step: the
    event itself freed the slot that serves it.

    With ``prune`` (a Python bool) a head whose deadline has passed is also discarded in any
    step, served or not: with a non-exponential patience law many more jobs can wait, and
    those that abandoned would otherwise pile up until a slot frees (never used with the
    exponential law, whose paths stay as they were).

    ``ring`` may already hold this step's push (never in a bookkeeping step); reading the head
    after the write lets XLA update the ring in place instead of copying it. Returns the ring
    and, as counts per class, the job served, the job gone (abandoned inside the window) and
    the wait credited, and the whole wait and the origin time of the job served; last, the
    credit as one entry ``(class, wait)``, the class ``num`` (none) when the head was not
    looked at.
    """
    look = (bookkeeping | now) & (ready > 0) & (before.size > 0)
    if prune:
        look = look | dead_head(d, ring, t, window)
    out = buf.serve(ring, look, t, window, d.at_least)
    credit = d.one_hot(out.label, num, out.looked).astype(t.dtype) * out.wait
    entry = (jnp.where(out.looked > 0, out.label, num).astype(jnp.int32), out.wait.astype(t.dtype))
    return (out.ring, d.one_hot(out.label, num, out.taken), d.one_hot(out.label, num, out.gone),
            credit, out.waited, out.origin, entry)


def greedy_route(d, ring, Ym, Ys, prefill_done, mixed_done, solo_done, free_solo, free_mixed,
                 bookkeeping, t, patience, window, prune=False, origin=None):
    """The greedy router (Sec. 4.1) after one event: a finished prefill takes a free solo slot,
    else a free mixed slot, else joins the FCFS decode buffer; a free slot serves the buffer's
    oldest live job.

    Returns the ring, the decodes in service ``(Ym, Ys)``, the decodes started, the buffer's
    abandonments and waits per class, the whole wait of the decode started (0 for one placed at
    once), its origin time (for a ring with origins, ``origin``, the finished prefill's arrival
    time, is stored with a job that joins the buffer, and returned for one placed at once; None
    without origins), the wait credited as one entry ``(class, wait)``
    (:func:`serve_ring_head`), and the side a decode started on (1 solo, 0 mixed).

    A decode completion serves the buffer in its own step, on the side of the slot it freed:
    with jobs in the buffer no slot was free before it, so that slot is the only one, the one a
    bookkeeping step after it would fill (the same jobs at the same times, in one step fewer).
    A head that turns out to have abandoned is discarded, and the next one waits for a
    bookkeeping step. The side is a decision: relaxed decisions carry no tangent through it."""
    num = prefill_done.shape[0]
    finished = jnp.sum(prefill_done)
    enter = finished * (1 - free_solo) * (1 - free_mixed)
    cls_in = hot_index(prefill_done)
    enter, cls_in = fence((enter, cls_in))
    dring = buf.push(ring, enter > 0, cls_in, t, patience(cls_in), origin)
    ready = free_solo + free_mixed - free_solo * free_mixed
    # A decode completion (never in a bookkeeping step, which has no event) frees the slot.
    freed = jnp.sum(mixed_done) + jnp.sum(solo_done) > 0
    ready = jnp.where(freed, 1, ready)
    to_solo = jnp.where(freed, jax.lax.stop_gradient(jnp.sum(solo_done)), free_solo)
    dring, served, gone, credit, waited, head, entry = serve_ring_head(
        d, dring, ready, ring, bookkeeping, t, window, num, prune, freed)
    # The buffer is a ring of whole jobs: a relaxed fraction of a job cannot wait in it. Under
    # relaxed decisions the whole tangent of a finished prefill goes on to decode (the value is
    # the exact one, prefill_done * (1 - enter)), so that no tangent mass vanishes; the
    # routing's own derivative into the buffer is not taken (a bias, measured with the rest).
    # With exact decisions this is prefill_done * (1 - enter), bit for bit.
    into_ring = jax.lax.stop_gradient(prefill_done * enter)
    placed = prefill_done - into_ring + served
    Ys = Ys - solo_done + placed * to_solo
    Ym = Ym - mixed_done + placed * (1 - to_solo)
    # The whole wait of a job the buffer served in this step (0 when none: a decode placed at
    # once waited nothing, and both never happen in one step).
    waited = jnp.where(jnp.sum(served) > 0, waited, 0.0).astype(t.dtype)
    if origin is not None:
        origin = jnp.where(jnp.sum(served) > 0, head, origin).astype(t.dtype)
    return dring, Ym, Ys, placed, gone, credit, waited, origin, entry, to_solo

