"""Tunable policy families: the paper's policies as points of continuous parameter spaces.

A family is a system whose continuous parameters are one PyTree leaf group (``params``), so a
tuner can differentiate, perturb or vmap over them; :func:`initial_params` sets them from the
LP plan, where the family reproduces the paper's policy.

``gated`` (pooled engine): Gate-and-Route with four kinds of knobs.

- ``targets`` (per class, prefills per GPU): the gate admits the waiting class with the smallest
  ``X_i / target_i - n`` (Sec. 4.1's deviation with the plan's x* replaced by free targets);
  ties to the larger ``Q_p,i - n q_p,i*``, then the lower index.
- ``offset`` (>= 0): the gate ranks by ``(X_i + offset) / target_i - n``; 0 is the paper's rule,
  1 ranks by the occupancy after admitting the job. With the paper's rule a class with no
  prefill running has the smallest deviation whatever its target, so a class the plan sheds
  (small x*) wins almost every time it has none running; at n = 20 on the paper's instance
  this costs about 11 per GPU on the coupled architecture (measured).
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

``coupled`` and ``coupled-fcfs`` (per-GPU engine): the dynamic mixed/solo architecture of the
Sec. 6.3 baselines. Any GPU may run one prefill, in mixed mode while it runs; a finished prefill
decodes in its own slot (immediate coupling), so no prefill is ever wasted and the number of GPUs
in mixed mode moves with demand. Knobs:

- ``targets`` and ``offset`` (``coupled`` only): the deviation gate's targets and offset, as
  above (GI-WSP at x* and offset 0);
- ``cap`` (prefills per GPU): at most ``K = n * cap`` prefills run at once (rounded at random
  per replication); ``cap = 1`` never binds (GI-WSP, or FI-WSP for ``coupled-fcfs``, whose
  admission is first-come-first-served across classes).

The per-GPU engine takes exact decisions only: these families are tuned with the exact
simulator's estimators (finite differences and SPSA with common random numbers), not pathwise.

``sli-gated`` (pooled engine): SLI-aware Gate-and-Route
(:class:`~jaxqueue.policies.sli.SLIGateAndRoute`, Sec. 5.1) with free knobs:

- ``targets``: the deviation gate's targets, as above (offset 0);
- ``split`` (per class, in ``[0, 1]``): the probability that the router sends a finished class-i
  prefill to the solo side. The paper's ``p_s,i`` is the plan's share of class-i decode
  completions on solo GPUs; moving it trades per-class solo occupancy (decode fairness) and
  time per output token against revenue.

The number of mixed GPUs stays the plan's ``ceil(n sum x*)``. At ``targets = x*`` and
``split = p_s`` the family is the paper's SLI-aware policy, path for path. Its random decision is
the router's draw, so every estimator applies: ``score`` differentiates the draw's
log-probability (the split; the gate is exact), ``pathwise`` relaxes both.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import buffer as buf
from .. import fluid
from ..kernel import Flow
from ..model import Model
from ..patience import check_supported, deadline
from ..rng import real_dtype
from .common import (
    checked_capacity,
    checked_gpus,
    gate_admit,
    gate_keys,
    split_event,
)
from .per_gpu import PerGpu, counts_dtype, gpu_slots
from .pooled import CountSystem, greedy_route
from .sli import SLIGateAndRoute, build_sli

__all__ = ["FAMILIES", "CoupledParams", "Gated", "GatedParams", "GatedState", "SLIParams",
           "build_family", "check_params", "engine", "get_params", "initial_params",
           "load_params", "rounded", "rounding_logp", "save_params", "starting_points",
           "with_params"]

#: Family name -> (engine, one line).
FAMILIES = {
    "gated": ("pooled", "Gate-and-Route with free gate targets, mixed share, decode-congestion "
                        "slack and per-class caps (GG-SP at the LP point)"),
    "coupled": ("per-gpu", "the gate on the coupled dynamic architecture with free targets and "
                           "a cap on concurrent prefills (GI-WSP at the LP point)"),
    "coupled-fcfs": ("per-gpu", "FCFS admission on the coupled dynamic architecture with a cap "
                                "on concurrent prefills (FI-WSP at cap 1)"),
    "sli-gated": ("pooled", "SLI-aware Gate-and-Route with free gate targets and router splits "
                            "(the paper's SLI-aware policy at the LP point)"),
}


class GatedParams(eqx.Module):
    """The continuous parameters of the ``gated`` family (see the module docstring).

    Attributes:
        targets: gate targets, prefills per GPU per class (> 0).
        share: mixed GPUs per GPU, in ``[0, 1]``.
        slack: decode-congestion admission slack, per GPU (>= 0).
        caps: per-class admission caps, prefills per GPU (>= 0).
    """

    targets: Float[Array, " I"]
    offset: Float[Array, ""]
    share: Float[Array, ""]
    slack: Float[Array, ""]
    caps: Float[Array, " I"]


class CoupledParams(eqx.Module):
    """The continuous parameters of the ``coupled`` families.

    Attributes:
        targets: gate targets, prefills per GPU per class (> 0; unused by ``coupled-fcfs``).
        cap: concurrent prefills per GPU at most, in ``[0, 1]``.
    """

    targets: Float[Array, " I"]
    offset: Float[Array, ""]
    cap: Float[Array, ""]


class SLIParams(eqx.Module):
    """The continuous parameters of the ``sli-gated`` family.

    Attributes:
        targets: gate targets, prefills per GPU per class (> 0).
        split: per class, the probability of routing a finished prefill to the solo side.
    """

    targets: Float[Array, " I"]
    split: Float[Array, " I"]


#: Family name -> its parameters' class.
PARAMS = {"gated": GatedParams, "coupled": CoupledParams, "coupled-fcfs": CoupledParams,
          "sli-gated": SLIParams}


class GatedState(eqx.Module):
    """Counts per class, the decode buffer in arrival order, and this replication's M.

    Attributes:
        X: prefills in service (on mixed GPUs).
        Ym: decodes on mixed GPUs.
        Ys: decodes on solo GPUs.
        Qp: jobs waiting for prefill.
        M: mixed GPUs of this replication (``n * share`` rounded at random).
        slack: this replication's decode-congestion slack in jobs (``n * slack`` rounded).
        caps: this replication's per-class caps in jobs (``n * caps`` rounded).
        decode_ring: the FCFS decode buffer.
        prefill_ring: always None (kept for the shared ring helpers).
    """

    X: Int[Array, " I"]
    Ym: Int[Array, " I"]
    Ys: Int[Array, " I"]
    Qp: Int[Array, " I"]
    M: Int[Array, ""]
    slack: Int[Array, ""]
    caps: Int[Array, " I"]
    decode_ring: buf.Ring
    prefill_ring: None = None


class Gated(CountSystem):
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
    gate_temperature: Float[Array, ""] | None = None

    num_random: ClassVar[int] = 2

    def __check_init__(self):
        check_supported(self.model.patience, "the gated family", counted=True)

    @property
    def smoothed(self) -> bool:
        """Whether every decision is randomised (a gate temperature is set): the gate draws
        its class and the thresholds are rounded with the triangular dither (:func:`rounded`)."""
        return self.gate_temperature is not None

    @property
    def num_init_random(self) -> int:
        # share, slack and one cap per class: one uniform each, two with the dither.
        return (2 + self.num_classes) * (2 if self.smoothed else 1)

    def thresholds(self) -> Float[Array, " K"]:
        """The real numbers each replication rounds: ``n * (share, slack, caps_1..caps_I)``."""
        p, n = self.params, self.n
        return jnp.concatenate([jnp.stack([n * p.share, n * p.slack]), n * p.caps])

    def init(self) -> GatedState:
        zeros = jnp.zeros(self.num_classes, self.decide.count_dtype)
        scalar = jnp.zeros((), self.decide.count_dtype)
        return GatedState(X=zeros, Ym=zeros, Ys=zeros, Qp=zeros, M=scalar, slack=scalar,
                          caps=zeros, decode_ring=buf.empty(self.capacity))

    def randomize(self, s: GatedState, u) -> GatedState:
        k = rounded(self.decide, self.thresholds(), u, self.smoothed)
        dtype = s.M.dtype
        M = jnp.minimum(k[0], self.n).astype(dtype)
        return eqx.tree_at(lambda s: (s.M, s.slack, s.caps), s,
                           (M, k[1].astype(dtype), k[2:].astype(dtype)))

    def rounding_logp(self, s: GatedState) -> Float[Array, " K"]:
        """``log P`` of each of this replication's rounded thresholds (share, slack, caps;
        :func:`rounding_logp`), a function of the parameters: what the likelihood-ratio
        estimator differentiates for them."""
        k = jnp.concatenate([jnp.stack([s.M, s.slack]), s.caps]).astype(real_dtype())
        values = self.thresholds()
        upper = jnp.full(values.shape, jnp.inf, values.dtype).at[0].set(self.n)
        return rounding_logp(values, k, self.smoothed, upper, total=False)

    def threshold_reach(self, s: GatedState) -> Float[Array, " K"]:
        """What each rounded threshold is compared with in ``s``: the slack with ``sum X -
        free decode slots``, cap i with ``X_i`` (a threshold ``K`` admits while the quantity is
        below it); the number of mixed GPUs always matters (+inf). If the running maximum of a
        quantity stays below every value its threshold can take, the threshold decided nothing
        in that replication (the likelihood-ratio estimator then drops its term)."""
        _, _, free = self._decode_free(s, s.Ym, s.Ys)
        return jnp.concatenate([jnp.stack([jnp.inf, jnp.sum(s.X) - free]), s.X]
                               ).astype(real_dtype())

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
        d = self.decide
        _, _, free = self._decode_free(s, Ym, Ys)
        eligible = d.greater(Qp, 0) * d.greater(s.caps, X)
        some = d.greater(jnp.sum(eligible), 0)
        idle = d.greater(s.M, jnp.sum(X))
        allowed = d.greater(free + s.slack, jnp.sum(X))
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
            return deadline(m, t, u[0], cls)

        dring, Ym, Ys, placed, d_gone, d_credit, _ = greedy_route(
            d, s.decode_ring, s.Ym, s.Ys, prefill_done, mixed_done, solo_done, free_solo,
            free_mixed, bookkeeping, t, patience, window)

        # Prefill side: every arrival joins its class's queue; then at most one admission per
        # step (further ones in zero-time bookkeeping steps, see `pending`).
        X = s.X - prefill_done
        Qp = s.Qp + arrive - queue_abandon
        go, eligible = self._admission(s, X, Ym, Ys, Qp)
        keys, _ = gate_keys("deviation", d, m, self.n, self.params.targets, self.q_star, X, Qp,
                            self.params.offset)
        admit, logp = gate_admit(d, keys, eligible, go, self.gate_temperature, u[1])
        X = X + admit
        Qp = Qp - admit

        state = GatedState(X=X, Ym=Ym, Ys=Ys, Qp=Qp, M=s.M, slack=s.slack, caps=s.caps,
                           decode_ring=dring)
        counts = jnp.concatenate([arrive * counted, prefill_done * counted, mixed_done * counted,
                                  solo_done * counted, queue_abandon * counted, d_gone,
                                  admit * counted, placed * counted])
        zero_f = jnp.zeros(num, t.dtype)
        waits = jnp.concatenate([zero_f, zero_f, zero_f, zero_f, d_credit])
        return state, Flow(counts=counts, waits=waits, logp=jnp.asarray(logp, t.dtype))

def rounded(decide, values: Float[Array, " K"], u: Float[Array, " U"], dither: bool):
    """Integers from reals, drawn once per replication: the number of mixed GPUs, the slack
    and the caps of :class:`Gated` from ``n * (share, slack, caps)``.

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


# ---- parameters ------------------------------------------------------------------------------
def engine(family: str) -> str:
    """The engine a family runs on."""
    _check_family(family)
    return FAMILIES[family][0]


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family = {family!r} is unknown: must be one of {', '.join(FAMILIES)}")


def initial_params(family: str, model: Model, n: int, plan: fluid.Plan):
    """The family's parameters at which it is the paper's policy planned by ``plan``."""
    from ..decisions import ceil_count

    _check_family(family)
    n = checked_gpus(n)
    x = np.maximum(np.asarray(plan.x, np.float64), 0.0)
    targets = np.where(x > 0, x, 1e-6)
    if family == "gated":
        M = min(max(ceil_count(n * float(np.sum(x))), 0), n)
        return GatedParams(targets=targets, offset=np.float64(0.0), share=np.float64(M / n),
                           slack=np.float64(2.0), caps=np.full(model.num_classes, 2.0))
    if family == "sli-gated":
        system, _ = build_sli(model, n, plan=plan)
        return SLIParams(targets=targets, split=np.asarray(system.p_solo, np.float64))
    return CoupledParams(targets=targets, offset=np.float64(0.0), cap=np.float64(1.0))


def starting_points(family: str, model: Model, n: int, plan: fluid.Plan) -> dict[str, Any]:
    """Where tuning may start: the LP point (the paper's policy) and, for the families with a
    gate, the same point ranking classes by their occupancy after admission (``offset = 1``),
    a structural change gradients do not find from the LP point (the gate's ranking is
    piecewise constant in the offset). Keys are short descriptions."""
    p0 = initial_params(family, model, n, plan)
    points = {"LP point": p0}
    if family in ("gated", "coupled"):
        points["LP point, rank after admission"] = dataclasses.replace(p0, offset=np.float64(1.0))
    return points


_RANGES = {"targets": ("> 0", lambda a: np.all(a > 0)),
           "offset": (">= 0", lambda a: np.all(a >= 0)),
           "share": ("in [0, 1]", lambda a: np.all((a >= 0) & (a <= 1))),
           "slack": (">= 0", lambda a: np.all(a >= 0)),
           "caps": (">= 0", lambda a: np.all(a >= 0)),
           "cap": ("in [0, 1]", lambda a: np.all((a >= 0) & (a <= 1))),
           "split": ("in [0, 1]", lambda a: np.all((a >= 0) & (a <= 1)))}


def check_params(family: str, params, model: Model) -> None:
    """Raises ValueError naming the parameter and its allowed range."""
    _check_family(family)
    want = PARAMS[family]
    if not isinstance(params, want):
        raise TypeError(f"params for family {family!r} must be a {want.__name__}, "
                        f"not {type(params).__name__}")
    for f in dataclasses.fields(params):
        a = np.asarray(getattr(params, f.name), np.float64)
        shape = (model.num_classes,) if f.name in ("targets", "caps", "split") else ()
        allowed, ok = _RANGES[f.name]
        if a.shape != shape or not np.all(np.isfinite(a)) or not ok(a):
            raise ValueError(f"params.{f.name} = {a.tolist()} is invalid: must be finite and "
                             f"{allowed}, with shape {shape}")


def build_family(family: str, model: Model, n: int, *, plan: fluid.Plan | None = None,
                 params=None, capacity: int | None = None, decide=None,
                 gate_temperature: float | None = None):
    """A system of the tunable family ``family`` on ``n`` GPUs at ``params`` (default: the point
    that reproduces the paper's policy under ``plan``, the bundled LP by default).

    ``gate_temperature`` (``gated`` and ``sli-gated``) makes the family *smoothed*: the gate
    admits class j with probability proportional to ``exp(-xi_j / gate_temperature)`` among the
    eligible classes, and (``gated``) the share, slack and caps are rounded with the triangular
    dither (:func:`rounded`), so the expected objective is continuously differentiable in every
    parameter; as the temperature goes to 0 the gate becomes the deterministic one.

    Returns:
        The system and its parameters (float64 host arrays).
    """
    from ..decisions import Exact

    _check_family(family)
    n = checked_gpus(n)
    plan = plan if plan is not None else fluid.solve(model, "bundled")
    params = params if params is not None else initial_params(family, model, n, plan)
    check_params(family, params, model)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    decide = Exact() if decide is None else decide
    capacity = checked_capacity(capacity, n)
    if gate_temperature is not None:
        if family not in ("gated", "sli-gated"):
            raise ValueError(f"gate_temperature is for the gated and sli-gated families only, "
                             f"not {family!r}")
        if not (np.isfinite(gate_temperature) and gate_temperature > 0):
            raise ValueError(f"gate_temperature = {gate_temperature!r} is invalid: must be "
                             "finite and > 0")
        gate_temperature = np.float64(gate_temperature)
    if family == "gated":
        system = Gated(model=model, n=np.int32(n), params=params,
                       q_star=np.asarray(plan.q_p, np.float64), capacity=capacity,
                       gate_temperature=gate_temperature, decide=decide)
    elif family == "sli-gated":
        system, _ = build_sli(model, n, plan=plan, decide=decide)
        system = dataclasses.replace(system, x_star=params.targets, split=params.split,
                                     gate_temperature=gate_temperature)
    else:
        if decide.differentiable:
            raise ValueError(f"family {family!r} runs on the per-GPU engine, which takes exact "
                             "decisions only: tune it with the exact simulator's estimators")
        system = PerGpu(model=model, n=np.int32(n), M=np.int32(0), x_star=params.targets,
                        q_star=np.asarray(plan.q_p, np.float64), gpus=gpu_slots(n),
                        layout="shared", coupled=True,
                        gate="deviation" if family == "coupled" else "fcfs",
                        capacity=capacity, counts=counts_dtype(model), prefill_cap=params.cap,
                        gate_offset=params.offset, decide=decide)
    return system, params


def get_params(system):
    """The tunable parameters of a system built by :func:`build_family`."""
    if isinstance(system, Gated):
        return system.params
    if isinstance(system, SLIGateAndRoute):
        return SLIParams(targets=system.x_star, split=system.split)
    return CoupledParams(targets=system.x_star, offset=system.gate_offset, cap=system.prefill_cap)


def with_params(system, params):
    """``system`` with its tunable parameters replaced (traceable: ``params`` may hold
    tracers; validate concrete values with :func:`check_params` first)."""
    if isinstance(system, Gated):
        return eqx.tree_at(lambda s: s.params, system, params)
    if isinstance(system, SLIGateAndRoute):
        return eqx.tree_at(lambda s: (s.x_star, s.split), system, (params.targets, params.split))
    return eqx.tree_at(lambda s: (s.x_star, s.gate_offset, s.prefill_cap), system,
                       (params.targets, params.offset, params.cap))


# ---- parameter files -------------------------------------------------------------------------
PARAMS_FORMAT = "jaxqueue-params"


def save_params(path, family: str, params, **meta) -> None:
    """Writes ``params`` of ``family`` (and ``meta``: scenario, gpus, revenue...) as JSON, so
    that ``jaxqueue simulate SCENARIO --gpus N --params FILE`` re-evaluates them."""
    import json
    import os

    _check_family(family)
    data = {"format": PARAMS_FORMAT, "version": 1, "family": family,
            "params": {f.name: np.asarray(getattr(params, f.name), np.float64).tolist()
                       for f in dataclasses.fields(params)}, **meta}
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def load_params(path, model: Model):
    """(family, params, the whole file as a dict) from a file written by :func:`save_params`;
    a ValueError names what is wrong (file, key, allowed values)."""
    import json

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"params file {path}: cannot be read as JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != PARAMS_FORMAT:
        raise ValueError(f"params file {path}: not a jaxqueue parameter file (key 'format' must "
                         f"be {PARAMS_FORMAT!r}; write one with jaxqueue tune --save)")
    family = data.get("family")
    if family not in FAMILIES:
        raise ValueError(f"params file {path}: family = {family!r} is invalid: must be one of "
                         f"{', '.join(FAMILIES)}")
    kind = PARAMS[family]
    names = [f.name for f in dataclasses.fields(kind)]
    given = data.get("params")
    if not isinstance(given, dict) or sorted(given) != sorted(names):
        raise ValueError(f"params file {path}: key 'params' must hold exactly {names} for "
                         f"family {family!r}")
    try:
        params = kind(**{k: np.asarray(given[k], np.float64) for k in names})
    except (TypeError, ValueError):
        raise ValueError(f"params file {path}: 'params' values must be numbers") from None
    check_params(family, params, model)
    return family, params, data
