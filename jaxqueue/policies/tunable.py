"""Tunable policy families: the paper's policies as points of continuous parameter spaces.

A family is a system whose continuous parameters are one PyTree leaf group (``params``), so a
tuner can differentiate, perturb or vmap over them; :func:`initial_params` sets them from the
LP plan, where the family reproduces the paper's policy.

``gated`` (pooled engine): Gate-and-Route with four kinds of knobs.

- ``targets`` (per class, prefills per GPU): the gate admits the waiting class with the smallest
  ``X_i / target_i - n`` (Sec. 4.1's deviation with the plan's x* replaced by free targets);
  ties to the larger ``Q_p,i - n q_p,i*``, then the lower index.
- ``share`` (mixed GPUs per GPU): ``M = n * share`` mixed GPUs, rounded at random between the two
  nearest integers once per replication (up with probability equal to the fractional part), so
  revenue is continuous in the share.
- ``slack`` (decode-congestion admission, per GPU): a prefill is admitted only while the prefills
  in service are fewer than the free decode slots plus ``slack * n``. The paper's gate is work
  conserving and fills every idle prefill slot; when decode slots are saturated the prefilled
  jobs then wait and abandon in the decode buffer, losing their whole price. A small slack
  idles prefill slots instead, so the wait happens in the prefill queue, before any work is
  spent. Large slack is the paper's gate.
- ``caps`` (per class, prefills per GPU): class i is admitted only while ``X_i < caps_i * n``.

At ``targets = x*``, ``share = ceil(n sum x*) / n``, ``slack >= 1`` and ``caps > 1`` the family is
the paper's Gate-and-Route (GG-SP) in law (admissions happen in zero-time bookkeeping steps, so
sample paths differ from :class:`~jaxqueue.policies.pooled.Pooled`'s for the same key).
The decode side is the greedy router with the FCFS decode buffer. Every decision goes through
``decide``, so :class:`jaxqueue.relax.Relaxed` gives pathwise gradients for all four knobs.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import buffer as buf
from .. import fluid
from ..kernel import AbstractSystem, Flow
from ..model import Model
from ..rng import real_dtype
from .common import (
    LEVELS,
    TALLIES,
    any_overflow,
    checked_capacity,
    checked_gpus,
    gate_keys,
    overflow_message,
    rebase_rings,
    revenue,
    ring_live,
    ring_residual,
    split_event,
)
from .pooled import greedy_route

__all__ = ["FAMILIES", "Gated", "GatedParams", "GatedState", "build_family", "initial_params"]

FAMILIES = ("gated",)


class GatedParams(eqx.Module):
    """The continuous parameters of the ``gated`` family (see the module docstring).

    Attributes:
        targets: gate targets, prefills per GPU per class (> 0).
        share: mixed GPUs per GPU, in ``[0, 1]``.
        slack: decode-congestion admission slack, per GPU (>= 0).
        caps: per-class admission caps, prefills per GPU (>= 0).
    """

    targets: Float[Array, " I"]
    share: Float[Array, ""]
    slack: Float[Array, ""]
    caps: Float[Array, " I"]


class GatedState(eqx.Module):
    """Counts per class, the decode buffer in arrival order, and this replication's M.

    Attributes:
        X: prefills in service (on mixed GPUs).
        Ym: decodes on mixed GPUs.
        Ys: decodes on solo GPUs.
        Qp: jobs waiting for prefill.
        M: mixed GPUs of this replication (``n * share`` rounded at random).
        decode_ring: the FCFS decode buffer.
        prefill_ring: always None (kept for the shared ring helpers).
    """

    X: Int[Array, " I"]
    Ym: Int[Array, " I"]
    Ys: Int[Array, " I"]
    Qp: Int[Array, " I"]
    M: Int[Array, ""]
    decode_ring: buf.Ring
    prefill_ring: None = None


class Gated(AbstractSystem):
    """The ``gated`` family on the pooled engine.

    Attributes:
        model: the scenario.
        n: number of GPUs.
        params: the family's parameters (:class:`GatedParams`).
        q_star: the plan's prefill queue per GPU (the gate's tie-break targets).
        capacity: slots of the FCFS decode ring (static).
    """

    model: Model
    n: Int[Array, ""]
    params: GatedParams
    q_star: Float[Array, " I"]
    capacity: int = eqx.field(static=True)

    level_names: ClassVar[tuple[str, ...]] = LEVELS
    tally_names: ClassVar[tuple[str, ...]] = TALLIES
    num_random: ClassVar[int] = 1
    num_init_random: ClassVar[int] = 1

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def init(self) -> GatedState:
        zeros = jnp.zeros(self.num_classes, self.decide.count_dtype)
        return GatedState(X=zeros, Ym=zeros, Ys=zeros, Qp=zeros,
                          M=jnp.zeros((), self.decide.count_dtype),
                          decode_ring=buf.empty(self.capacity))

    def randomize(self, s: GatedState, u) -> GatedState:
        M = self.decide.count(self.n * self.params.share, u[0])
        return eqx.tree_at(lambda s: s.M, s, jnp.asarray(M, s.M.dtype))

    def rates(self, s: GatedState) -> Float[Array, " E"]:
        m = self.model
        return jnp.concatenate([
            m.lambda_ * self.n, m.mu_p * s.X, m.mu_m * s.Ym, m.mu_s * s.Ys, m.theta * s.Qp,
        ])

    def levels(self, s: GatedState) -> Float[Array, " L"]:
        zero = jnp.zeros_like(s.X)
        return jnp.concatenate([s.X, s.Ym, s.Ys, s.Qp, zero]).astype(real_dtype())

    def revenue(self, integrals, counts):
        return revenue(self.model, integrals, counts, self.tally_names)

    def rebase(self, s: GatedState, elapsed) -> GatedState:
        return rebase_rings(s, elapsed)

    def overflow(self, s: GatedState) -> Bool[Array, ""]:
        return any_overflow(s.decode_ring)

    def overflow_message(self) -> str:
        return overflow_message(self.capacity)

    # ---- decisions ---------------------------------------------------------------------------
    def _decode_free(self, s: GatedState, Ym, Ys):
        """Indicators (free solo slot, free mixed slot) and the number of free decode slots."""
        B, M, d = self.model.B, s.M, self.decide
        solo, mixed = B * (self.n - M), (B - 1) * M
        free = solo - jnp.sum(Ys) + mixed - jnp.sum(Ym)
        return d.greater(solo, jnp.sum(Ys)), d.greater(mixed, jnp.sum(Ym)), free

    def _admission(self, s: GatedState, X, Ym, Ys, Qp):
        """(indicator that a prefill may start now, eligible classes): an idle prefill slot, a
        waiting class under its cap, and prefills fewer than free decode slots + slack n."""
        d, n, p = self.decide, self.n, self.params
        _, _, free = self._decode_free(s, Ym, Ys)
        eligible = d.greater(Qp, 0) * d.greater(p.caps * n, X)
        some = d.greater(jnp.sum(eligible), 0)
        idle = d.greater(s.M, jnp.sum(X))
        allowed = d.greater(free + p.slack * n, jnp.sum(X))
        return idle * some * allowed, eligible

    def pending(self, s: GatedState) -> Bool[Array, ""]:
        free_solo, free_mixed, _ = self._decode_free(s, s.Ym, s.Ys)
        todo = ((free_solo + free_mixed) > 0) & (s.decode_ring.size > 0)
        go, _ = self._admission(s, s.X, s.Ym, s.Ys, s.Qp)
        return todo | (go > 0.5)

    def fire(self, s: GatedState, event, t, u, window):
        m, d = self.model, self.decide
        num = self.num_classes
        rows, counted, bookkeeping = split_event(event, num, t, window)
        arrive, prefill_done, mixed_done, solo_done, queue_abandon = rows
        free_solo, free_mixed, _ = self._decode_free(s, s.Ym, s.Ys)

        def patience(cls):
            return t - jnp.log1p(-u[0]) / jnp.asarray(m.theta)[cls]

        dring, Ym, Ys, placed, d_gone, d_credit = greedy_route(
            d, s.decode_ring, s.Ym, s.Ys, prefill_done, mixed_done, solo_done, free_solo,
            free_mixed, bookkeeping, t, patience, window)

        # Prefill side: every arrival joins its class's queue; then at most one admission per
        # step (further ones in zero-time bookkeeping steps, see `pending`).
        X = s.X - prefill_done
        Qp = s.Qp + arrive - queue_abandon
        go, eligible = self._admission(s, X, Ym, Ys, Qp)
        keys, _ = gate_keys("deviation", d, m, self.n, self.params.targets, self.q_star, X, Qp)
        _, admit = d.choose(keys, eligible, go)
        X = X + admit
        Qp = Qp - admit

        state = GatedState(X=X, Ym=Ym, Ys=Ys, Qp=Qp, M=s.M, decode_ring=dring)
        counts = jnp.concatenate([arrive * counted, prefill_done * counted, mixed_done * counted,
                                  solo_done * counted, queue_abandon * counted, d_gone,
                                  admit * counted, placed * counted])
        zero_f = jnp.zeros(num, t.dtype)
        waits = jnp.concatenate([zero_f, zero_f, zero_f, zero_f, d_credit])
        return state, Flow(counts=counts, waits=waits)

    def close(self, s: GatedState, window):
        num = self.num_classes
        zero_i = jnp.zeros(num, jnp.int32)
        zero_f = jnp.zeros(num, window[0].dtype)
        d_gone, d_wait = ring_residual(s.decode_ring, num, window)
        counts = jnp.concatenate([zero_i, zero_i, zero_i, zero_i, zero_i, d_gone, zero_i,
                                  zero_i]).astype(jnp.int32)
        waits = jnp.concatenate([zero_f, zero_f, zero_f, zero_f, d_wait])
        return Flow(counts=counts, waits=waits)

    def census(self, s: GatedState, now):
        num = self.num_classes
        return jnp.concatenate([s.X, s.Ym, s.Ys, s.Qp, ring_live(s.decode_ring, num, now)]
                               ).astype(jnp.int32)


# ---- parameters ------------------------------------------------------------------------------
def initial_params(family: str, model: Model, n: int, plan: fluid.Plan) -> GatedParams:
    """The family's parameters at which it is the paper's policy planned by ``plan``."""
    if family != "gated":
        raise ValueError(f"family = {family!r} is unknown: must be one of {FAMILIES}")
    n = checked_gpus(n)
    x = np.maximum(np.asarray(plan.x, np.float64), 0.0)
    from ..decisions import ceil_count

    M = min(max(ceil_count(n * float(np.sum(x))), 0), n)
    return GatedParams(targets=np.where(x > 0, x, 1e-6), share=np.float64(M / n),
                       slack=np.float64(2.0), caps=np.full(model.num_classes, 2.0))


def check_params(params: GatedParams, model: Model) -> None:
    """Raises ValueError naming the parameter and its allowed range."""
    num = model.num_classes
    checks = (("targets", params.targets, (num,), lambda a: np.all(a > 0), "> 0"),
              ("share", params.share, (), lambda a: 0 <= a <= 1, "in [0, 1]"),
              ("slack", params.slack, (), lambda a: a >= 0, ">= 0"),
              ("caps", params.caps, (num,), lambda a: np.all(a >= 0), ">= 0"))
    for name, value, shape, ok, allowed in checks:
        a = np.asarray(value, np.float64)
        if a.shape != shape or not np.all(np.isfinite(a)) or not ok(a):
            raise ValueError(f"params.{name} = {a.tolist()} is invalid: must be finite, "
                             f"{allowed}, with shape {shape}")


def build_family(family: str, model: Model, n: int, *, plan: fluid.Plan | None = None,
                 params: GatedParams | None = None, capacity: int | None = None,
                 decide=None) -> tuple[Gated, GatedParams]:
    """A system of the tunable family ``family`` on ``n`` GPUs, at ``params`` (default: the
    point that reproduces the paper's policy under ``plan``, the bundled LP by default)."""
    from ..decisions import Exact

    n = checked_gpus(n)
    if family not in FAMILIES:
        raise ValueError(f"family = {family!r} is unknown: must be one of {FAMILIES}")
    plan = plan if plan is not None else fluid.solve(model, "bundled")
    params = params if params is not None else initial_params(family, model, n, plan)
    check_params(params, model)
    params = GatedParams(*(np.asarray(getattr(params, f), np.float64)
                           for f in ("targets", "share", "slack", "caps")))
    system = Gated(model=model, n=np.int32(n), params=params,
                   q_star=np.asarray(plan.q_p, np.float64),
                   capacity=checked_capacity(capacity, n),
                   decide=Exact() if decide is None else decide)
    return system, params

