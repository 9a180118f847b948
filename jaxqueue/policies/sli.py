"""SLI-aware Gate-and-Route (docs/model.md Sec. 6, paper Sec. 5.1 and EC 13), on pooled counts.

Static planning and the gate are those of Gate-and-Route (:mod:`jaxqueue.policies.pooled`): M of
the n GPUs are mixed (``M = ceil(n sum x*)``), they hold the M prefill slots and (B-1)M decode
slots at rate mu_m; the n-M solo GPUs hold B(n-M) decode slots at rate mu_s; the gate admits the
waiting class with the smallest occupancy deviation. What changes is the *router*: the greedy
router of Sec. 4.1 fills solo slots first and reaches the LP's revenue but not its per-class
split of decode occupancy (Fig. 5); this router splits each class's decode traffic between the
two sides in the LP's proportions, so that both ``x`` and ``(y_m, y_s)`` approach the plan (Fig. 6).

Router. A class-i job whose prefill completes goes to the *solo side* with probability

    p_s,i = mu_s,i y_s,i* / (mu_p,i x_i* - theta_i q_d,i*)                       (EC 13)

and to the *mixed side* otherwise. By the decode balance of the LP (Eq. 40, second equality) the
denominator is the planned completion rate ``mu_m,i y_m,i* + mu_s,i y_s,i*``, which is how it is
computed here (so ``p_s,i`` lies in [0, 1] exactly); with ``q_d* = 0`` this is Sec. 5.1's
formula. A class that the plan does not decode at all (denominator 0) goes to the solo side.
On its side the job takes a free slot, else waits in that side's decode buffer.

Each side keeps per-class buffer *counts*: jobs of one class are exchangeable, so FCFS within a
class needs no arrival order, and the buffers' abandonments are ordinary CTMC events at rate
``theta_i`` times the count (no lazy ring, no bookkeeping steps). When a decode slot frees on a
side whose buffer is not empty, it takes a job of class j with probability proportional to j's
planned completion rate on that side (``mu_m,j y_m,j*`` mixed, ``mu_s,j y_s,j*`` solo) among the
classes with waiting jobs (EC 13). The paper leaves open the case where every waiting class has a
planned rate 0 on that side (possible only for classes the plan does not decode at all, or with
a hand-made plan): jaxqueue then picks uniformly among the waiting classes, so a free slot never
idles while a job waits on its side.

**Other patience laws.** Counts abandoning at rate ``theta_i`` per job are exact only for the
exponential law. Under any other law (:mod:`jaxqueue.patience`) every waiting place becomes one
ring of jobs per class, each job with the deadline it drew on entering (FCFS within a class, as
the counts are): the prefill queues, and the decode buffers of each side and class (``2I``
rings; a side's buffer cannot be one ring across classes, since a freed slot picks a class and
takes that class's oldest job). Every decision is the counted policy's, taken in the same step
from the *live* counts at that moment (the jobs whose deadline has not passed), and the job
taken is the oldest live one of its ring; the abandoned jobs in front of it are discarded then,
each counted as abandoned at its deadline (:func:`jaxqueue.buffer.serve_live`). Between
events the policy never acts on an abandonment (the counted chain's abandonment events change
only the counts), so this is the policy exactly, under any law. Each step also discards every
ring's abandoned jobs in front of its first live one, so they do not pile up. The abandonment
rows of the event layout then have rate 0, and the rings' waits are credited job by job.

Exponential events, ``E = 7I`` of them, class-major within each kind:
``arrival | prefill completion | mixed decode completion | solo decode completion |
prefill-queue abandonment | solo-buffer abandonment | mixed-buffer abandonment``.

One uniform per step (``num_random = 1``) drives the one random decision a step can take: the
side of a finished prefill, or the class a freed decode slot takes (never both in one step).
Both are the system's ``decide.bernoulli`` and ``decide.draw`` (:mod:`jaxqueue.decisions`).
With a ``gate_temperature`` the gate draws its class too, with a second uniform. With per-class
rings the last uniform draws the patience of a job entering one.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import buffer as buf
from .. import fluid
from .. import patience as laws
from ..decisions import AbstractDecisions, Exact, ScoreFunction, hot_index
from ..kernel import AbstractSystem, Flow
from ..model import Model
from ..patience import deadline
from ..rng import real_dtype
from ..service import check_supported as check_service
from .common import (
    LEVELS,
    checked_capacity,
    checked_gpus,
    class_heads,
    class_live,
    class_residual,
    class_rings,
    class_serve,
    gate_admit,
    gate_keys,
    overflow_message,
    per_job_queue,
    push_class,
    revenue,
)
from .common import TALLIES as _POOLED_TALLIES

__all__ = ["SLIGateAndRoute", "SLIState", "LEVELS", "TALLIES", "build_sli"]

#: Event counters, each per class: those of the pooled systems (so :mod:`jaxqueue.stats`
#: applies), then ``routed_solo``, the prefill completions the router sent to the solo side.
TALLIES = (*_POOLED_TALLIES, "routed_solo")


class SLIState(eqx.Module):
    """Counts per class, and with a non-exponential patience law the waiting jobs in rings.

    Attributes:
        X: prefills in service (on mixed GPUs).
        Ym: decodes on mixed GPUs.
        Ys: decodes on solo GPUs.
        Qp: jobs waiting for prefill (0 with rings).
        Qds: jobs waiting in the solo side's decode buffer (0 with rings).
        Qdm: jobs waiting in the mixed side's decode buffer (0 with rings).
        prefill_rings: with per-job patience, the prefill queues, one ring per class (batched
            over classes); else None.
        solo_rings: likewise the solo side's decode buffers.
        mixed_rings: likewise the mixed side's decode buffers.
    """

    X: Int[Array, " I"]
    Ym: Int[Array, " I"]
    Ys: Int[Array, " I"]
    Qp: Int[Array, " I"]
    Qds: Int[Array, " I"]
    Qdm: Int[Array, " I"]
    prefill_rings: buf.Ring | None = None
    solo_rings: buf.Ring | None = None
    mixed_rings: buf.Ring | None = None

    @property
    def rings(self) -> tuple[buf.Ring | None, buf.Ring | None, buf.Ring | None]:
        return self.prefill_rings, self.solo_rings, self.mixed_rings


class SLIGateAndRoute(AbstractSystem):
    """SLI-aware Gate-and-Route: the deviation gate and the two-sided proportional router.

    Attributes:
        model: the scenario (rates are derived from it inside the step).
        n: number of GPUs.
        M: number of mixed GPUs (``ceil(n sum x*)`` under static planning).
        x_star: the plan's per-GPU prefill occupancy (gate targets).
        q_star: the plan's per-GPU prefill queue (gate tie-break targets).
        y_m_star: the plan's per-GPU decodes on mixed GPUs (router targets).
        y_s_star: the plan's per-GPU decodes on solo GPUs (router targets).
        split: per class, the probability that the router sends a finished prefill to the solo
            side; None (the paper's policy): ``p_s,i`` from the plan (see :attr:`p_solo`). The
            tunable ``sli-gated`` family (:mod:`jaxqueue.policies.tunable`) sets it.
        gate_temperature: None (the paper's deterministic gate), or a temperature at which the
            gate draws the class it admits with probabilities ``softmax(-xi / temperature)``
            (:func:`~jaxqueue.policies.common.gate_admit`; the smoothed ``sli-gated`` family).
        capacity: slots of each per-class ring (static): needed with a non-exponential
            patience law (:attr:`per_job`), None otherwise (counts need none).
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
    y_m_star: Float[Array, " I"]
    y_s_star: Float[Array, " I"]
    split: Float[Array, " I"] | None = None
    gate_temperature: Float[Array, ""] | None = None
    capacity: int | None = eqx.field(static=True, default=None)
    ring_index: bool = eqx.field(static=True, default=True)

    level_names: ClassVar[tuple[str, ...]] = LEVELS
    tally_names: ClassVar[tuple[str, ...]] = TALLIES

    def __check_init__(self):
        check_service(self.model.service, "the SLI-aware Gate-and-Route")
        if self.per_job:
            if self.capacity is None or self.capacity < 1:
                raise ValueError(f"capacity = {self.capacity!r} is invalid: patience.law = "
                                 f"{self.model.patience.law!r} keeps the waiting jobs in rings, "
                                 "which need a capacity >= 1 (build_sli sizes one)")
            # Relaxed decisions make counts fractional; a ring holds whole jobs. The
            # score-function estimator's decisions are exact (its paths are the exact chain's).
            if not jnp.issubdtype(self.decide.count_dtype, jnp.integer):
                raise ValueError(f"patience.law = {self.model.patience.law!r} keeps each "
                                 "waiting job in a ring, which relaxed decisions cannot "
                                 "differentiate: use exact decisions (or the score-function "
                                 "estimator)")

    @property
    def per_job(self) -> bool:
        """Whether the waiting places are per-class rings of jobs with their own deadlines (a
        non-exponential patience law) instead of counts abandoning at rate theta."""
        return laws.per_job(self.model.patience)

    @property
    def num_random(self) -> int:
        # The router's (or a freed slot's) draw; a randomised gate draws with a second word;
        # with rings, the patience of a job entering one with the last.
        return self._patience_word + self.per_job

    @property
    def _patience_word(self) -> int:
        return 1 if self.gate_temperature is None else 2

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    # ---- the plan's rates (derived, never stored) -------------------------------------------
    @property
    def mixed_rate(self) -> Float[Array, " I"]:
        """Planned class-i decode completions per GPU per second on the mixed side,
        ``mu_m,i y_m,i*``."""
        return self.model.mu_m * self.y_m_star

    @property
    def solo_rate(self) -> Float[Array, " I"]:
        """Planned class-i decode completions per GPU per second on the solo side,
        ``mu_s,i y_s,i*``."""
        return self.model.mu_s * self.y_s_star

    @property
    def p_solo(self) -> Float[Array, " I"]:
        """Probability ``p_s,i`` that the router sends a class-i job to the solo side (EC 13);
        1 for a class the plan does not decode; :attr:`split` where given."""
        if self.split is not None:
            return self.split
        solo, total = self.solo_rate, self.mixed_rate + self.solo_rate
        safe = total + (total <= 0)  # arithmetic only: works on host arrays and traced ones
        return solo / safe + (total <= 0)

    # ---- the engine's interface -------------------------------------------------------------
    def init(self) -> SLIState:
        zeros = jnp.zeros(self.num_classes, self.decide.count_dtype)
        one = class_rings(self.num_classes, self.capacity, self.ring_index) \
            if self.per_job else None
        rings = (one,) * 3
        return SLIState(X=zeros, Ym=zeros, Ys=zeros, Qp=zeros, Qds=zeros, Qdm=zeros,
                        prefill_rings=rings[0], solo_rings=rings[1], mixed_rings=rings[2])

    def rates(self, s: SLIState) -> Float[Array, " E"]:
        m = self.model
        return jnp.concatenate([
            m.lambda_ * self.n, m.mu_p * s.X, m.mu_m * s.Ym, m.mu_s * s.Ys, m.theta * s.Qp,
            m.theta * s.Qds, m.theta * s.Qdm,
        ])

    def levels(self, s: SLIState) -> Float[Array, " L"]:
        # q_d is both decode buffers together (the fluid model's q_d, per class).
        return jnp.concatenate(self.dense_levels(s))

    def dense_levels(self, s: SLIState):
        real = real_dtype()
        return tuple(a.astype(real) for a in (s.X, s.Ym, s.Ys, s.Qp, s.Qds + s.Qdm))

    def revenue(self, integrals, counts):
        return revenue(self.model, integrals, counts, self.tally_names)

    # ---- the rings (per-job patience only) --------------------------------------------------
    def rebase(self, s: SLIState, elapsed) -> SLIState:
        if not self.per_job:
            return s
        # A ring's rebase shifts every stored time, whatever the leading axes.
        return eqx.tree_at(lambda s: s.rings, s, tuple(buf.rebase(r, elapsed) for r in s.rings))

    def overflow(self, s: SLIState) -> Bool[Array, ""]:
        if not self.per_job:
            return jnp.bool_(False)
        return jnp.any(jnp.stack([jnp.any(r.overflow) for r in s.rings]))

    def overflow_message(self) -> str:
        if self.capacity is None:  # counts: nothing can overflow
            return super().overflow_message()
        return overflow_message(self.capacity)

    def close(self, s: SLIState, window):
        num = self.num_classes
        zero_i, zero_f = jnp.zeros(num, jnp.int32), jnp.zeros(num, window[0].dtype)
        if not self.per_job:
            return Flow(counts=jnp.zeros(len(TALLIES) * num, jnp.int32),
                        waits=jnp.zeros(len(LEVELS) * num, window[0].dtype))
        p_gone, p_wait = class_residual(s.prefill_rings, num, window)
        s_gone, s_wait = class_residual(s.solo_rings, num, window)
        m_gone, m_wait = class_residual(s.mixed_rings, num, window)
        counts = jnp.concatenate([zero_i] * 4 + [p_gone, s_gone + m_gone] + [zero_i] * 3)
        waits = jnp.concatenate([zero_f] * 3 + [p_wait, s_wait + m_wait])
        return Flow(counts=counts.astype(jnp.int32), waits=waits)

    def census(self, s: SLIState, now):
        if not self.per_job:
            return super().census(s, now)
        live = [class_live(r, now) for r in s.rings]
        return jnp.concatenate([s.X, s.Ym, s.Ys, live[0], live[1] + live[2]]).astype(jnp.int32)

    def fire(self, s: SLIState, event, t, u, window):
        m, d = self.model, self.decide
        num = self.num_classes
        w0, w1 = window
        hot = event.hot.reshape(7, num)
        arrive, prefill_done, mixed_done, solo_done, p_gone, ds_gone, dm_gone = hot
        counted = ((t > w0) & (t <= w1)).astype(jnp.int32)
        B = m.B
        free_solo = d.greater(B * (self.n - self.M), jnp.sum(s.Ys))
        free_mixed = d.greater((B - 1) * self.M, jnp.sum(s.Ym))
        idle = d.greater(self.M, jnp.sum(s.X))

        # Router: a finished class-i prefill goes to the solo side with probability p_s,i, and
        # takes a free slot of its side or waits in that side's buffer (Sec. 5.1).
        finished = jnp.sum(prefill_done)
        cls_in = hot_index(prefill_done)
        p_solo = jnp.asarray(self.p_solo)[cls_in]
        solo_side = finished * d.bernoulli(p_solo, u[0])
        logp = jnp.zeros((), t.dtype)
        if isinstance(d, ScoreFunction):  # the router's draw is a randomised decision
            chosen = jnp.where(solo_side > 0.5, p_solo, 1.0 - p_solo)
            logp = jnp.where(finished > 0, jnp.log(jnp.where(finished > 0, chosen, 1.0)), 0.0)
        mixed_side = finished * (1 - solo_side)
        to_ys = d.one_hot(cls_in, num, solo_side * free_solo)
        to_qds = d.one_hot(cls_in, num, solo_side * (1 - free_solo))
        to_ym = d.one_hot(cls_in, num, mixed_side * free_mixed)
        to_qdm = d.one_hot(cls_in, num, mixed_side * (1 - free_mixed))

        # A decode slot freed on a side takes a waiting job of that side, class j with
        # probability proportional to its planned rate there among the waiting classes (EC 13).
        # The freed slot was the only free one: by induction a free slot never coexists with a
        # waiting job on its side, and one event frees at most one slot.
        if self.per_job:
            # Rings: the same decisions on the live counts at t (the patience of a job entering
            # a ring drawn with the step's last uniform; at most one enters per step); the job
            # taken is its ring's oldest live one (abandoned ones in front of it discarded).
            u_due = u[self._patience_word]
            due = deadline(m, t, u_due, cls_in)
            solo_in = push_class(s.solo_rings, jnp.sum(to_qds), cls_in, t, due)
            mixed_in = push_class(s.mixed_rings, jnp.sum(to_qdm), cls_in, t, due)
            solo_in, heads_s = class_heads(solo_in, t, window, m)
            mixed_in, heads_m = class_heads(mixed_in, t, window, m)
            take_s = self._pick(jnp.asarray(self.solo_rate), heads_s.live, u[0],
                                jnp.sum(solo_done) * d.greater(jnp.sum(heads_s.live), 0))
            take_m = self._pick(jnp.asarray(self.mixed_rate), heads_m.live, u[0],
                                jnp.sum(mixed_done) * d.greater(jnp.sum(heads_m.live), 0))
            out_s = class_serve(solo_in, heads_s, take_s, t, window)
            out_m = class_serve(mixed_in, heads_m, take_m, t, window)
            Qds, Qdm = s.Qds, s.Qdm  # zeros: the rings hold the jobs
        else:
            Qds = s.Qds - ds_gone + to_qds
            Qdm = s.Qdm - dm_gone + to_qdm
            take_s = self._pick(jnp.asarray(self.solo_rate), s.Qds, u[0],
                                jnp.sum(solo_done) * d.greater(jnp.sum(s.Qds), 0))
            take_m = self._pick(jnp.asarray(self.mixed_rate), s.Qdm, u[0],
                                jnp.sum(mixed_done) * d.greater(jnp.sum(s.Qdm), 0))
            Qds = Qds - take_s
            Qdm = Qdm - take_m
        Ys = s.Ys - solo_done + to_ys + take_s
        Ym = s.Ym - mixed_done + to_ym + take_m

        # Gate (as Gate-and-Route): an arrival finding an idle prefill slot starts at once; a
        # prefill slot freed by a completion admits one waiting job, chosen by the deviation gate.
        start = arrive * idle
        X = s.X - prefill_done + start
        u_gate = u[1] if self.gate_temperature is not None else None
        if self.per_job:
            cls_a = hot_index(arrive)
            waiting = push_class(s.prefill_rings, jnp.sum(arrive * (1 - idle)), cls_a, t,
                                 deadline(m, t, u_due, cls_a))
            waiting, heads_p = class_heads(waiting, t, window, m)
            Qp = heads_p.live
        else:
            Qp = s.Qp + arrive * (1 - idle) - p_gone
        admit, gate_logp = gate_admit(
            d, *gate_keys("deviation", d, m, self.n, self.x_star, self.q_star, X, Qp),
            finished * d.greater(jnp.sum(Qp), 0), self.gate_temperature, u_gate)
        logp = logp + gate_logp
        X = X + admit

        if not self.per_job:
            Qp = Qp - admit
            state = SLIState(X=X, Ym=Ym, Ys=Ys, Qp=Qp, Qds=Qds, Qdm=Qdm)
            counts = jnp.concatenate([arrive, prefill_done, mixed_done, solo_done, p_gone,
                                      ds_gone + dm_gone, start + admit,
                                      to_ys + to_ym + take_s + take_m, to_ys + to_qds]) * counted
            return state, Flow(counts=counts, waits=jnp.zeros(len(LEVELS) * num, t.dtype),
                               logp=logp)
        out_p = class_serve(waiting, heads_p, admit, t, window)
        state = SLIState(X=X, Ym=Ym, Ys=Ys, Qp=s.Qp, Qds=Qds, Qdm=Qdm,
                         prefill_rings=out_p.ring, solo_rings=out_s.ring, mixed_rings=out_m.ring)
        zero_i = jnp.zeros(num, jnp.int32)
        zero_f = jnp.zeros(num, t.dtype)
        # Abandonments from the rings are counted at their deadlines, inside the window.
        counts = (jnp.concatenate([arrive, prefill_done, mixed_done, solo_done, zero_i, zero_i,
                                   start + admit, to_ys + to_ym + take_s + take_m,
                                   to_ys + to_qds]) * counted
                  + jnp.concatenate([zero_i] * 4 + [out_p.gone, out_s.gone + out_m.gone]
                                    + [zero_i] * 3))
        waits = jnp.concatenate([zero_f] * 3 + [out_p.wait, out_s.wait + out_m.wait])
        return state, Flow(counts=counts, waits=waits.astype(t.dtype), logp=logp)

    # ---- the two decisions ------------------------------------------------------------------
    def _pick(self, rate: Float[Array, " I"], waiting: Int[Array, " I"], u, on):
        """Counts to move: ``on`` at a waiting class drawn with probability proportional to
        ``rate`` among the waiting classes, uniformly among them if all of their rates are 0."""
        has = waiting > 0
        weight = jnp.where(has, rate, 0.0)
        weight = jnp.where(jnp.sum(weight) > 0, weight, has.astype(weight.dtype))
        return self.decide.draw_hot(weight, u, on)[1]


# ---- building from a plan ----------------------------------------------------------------------
def _check_plan(model: Model, plan: fluid.Plan) -> None:
    """Raises ValueError unless ``plan`` is a nonnegative plan of ``model``'s shape whose decode
    flows balance (Eq. 40: mu_p x - theta q_d = mu_m y_m + mu_s y_s), which ``p_s`` relies on."""
    num = model.num_classes
    arrays = {}
    for name in ("x", "y_m", "y_s", "q_p", "q_d"):
        a = np.asarray(getattr(plan, name), np.float64)
        if a.shape != (num,):
            raise ValueError(f"plan.{name} has shape {a.shape}: model {model.name!r} has {num} "
                             f"classes, so it must have shape ({num},)")
        if not np.all(np.isfinite(a)) or np.any(a < -1e-9):
            raise ValueError(f"plan.{name} = {a.tolist()} is invalid: must be finite and >= 0")
        arrays[name] = a
    inflow = model.mu_p * arrays["x"] - model.theta * arrays["q_d"]
    done = model.mu_m * arrays["y_m"] + model.mu_s * arrays["y_s"]
    scale = max(1.0, float(np.max(np.abs(model.mu_p * arrays["x"]))))
    if np.max(np.abs(inflow - done)) > 1e-6 * scale:
        raise ValueError(
            "plan is not a fluid plan of this model: its decode flows do not balance "
            f"(mu_p x - theta q_d = {inflow.tolist()} but mu_m y_m + mu_s y_s = {done.tolist()}); "
            "solve it with jaxqueue.fluid.solve for the same model")
    if float(np.sum(arrays["x"])) > 1 + 1e-9:
        raise ValueError(f"plan has sum x = {np.sum(arrays['x'])!r} > 1: not a fluid plan")


def build_sli(model: Model, n: int, *, plan: fluid.Plan | None = None,
              sli: fluid.SLI | None = None, decide: AbstractDecisions | None = None,
              capacity: int | None = None) -> tuple[SLIGateAndRoute, fluid.Plan]:
    """SLI-aware Gate-and-Route on ``n`` GPUs, planned from the (SLI-aware) bundled LP.

    Args:
        model: the scenario.
        n: number of GPUs (integer >= 1).
        plan: the fluid plan to follow (default ``fluid.solve(model, "bundled", sli=sli)``). Any
            plan of this model is accepted, also one with a decode backlog ``q_d* > 0`` (EC 13).
        sli: SLI targets of the default plan (Sec. 5); not allowed together with ``plan``.
        decide: the decisions (default :class:`jaxqueue.decisions.Exact`).
        capacity: slots of each per-class ring, with a non-exponential patience law (default
            :func:`.common.default_capacity` for n and every arrival of a mean patience
            waiting; :func:`jaxqueue.simulate` grows it if it overflows). Unused otherwise.

    Returns:
        The system and the plan it was built from.

    Raises:
        ValueError: invalid ``n``, both ``plan`` and ``sli`` given, or a plan that does not fit
            the model (shape, sign or flow balance).
        jaxqueue.fluid.FluidError: the default LP cannot be solved (e.g. an unreachable SLI).
    """
    n = checked_gpus(n)
    if plan is not None and sli is not None:
        raise ValueError("give either plan or sli, not both: sli only shapes the default plan")
    if plan is None:
        plan = fluid.solve(model, "bundled", sli=sli)
    elif not isinstance(plan, fluid.Plan):
        raise TypeError(f"plan = {plan!r} is invalid: must be a jaxqueue.fluid.Plan or None")
    _check_plan(model, plan)

    def target(a):  # LP round-off can leave -1e-12: a plan quantity is >= 0
        return np.maximum(np.asarray(a, np.float64), 0.0)

    decide = Exact() if decide is None else decide
    if laws.per_job(model.patience):
        queue = per_job_queue(model, float(np.sum(plan.q_p) + np.sum(plan.q_d)), per_class=True)
        capacity = checked_capacity(capacity, n, queue)
    else:
        capacity = None  # counts: no ring
    system = SLIGateAndRoute(
        model=model, n=np.int32(n), M=np.int32(min(decide.count(n * plan.sum_x), n)),
        x_star=target(plan.x), q_star=target(plan.q_p), y_m_star=target(plan.y_m),
        y_s_star=target(plan.y_s), decide=decide, capacity=capacity)
    return system, plan
