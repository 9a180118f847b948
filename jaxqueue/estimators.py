"""Gradient estimators of a tuning problem's objective (:class:`jaxqueue.objective.Problem`).

Each estimator returns an :class:`Estimate` of the gradient of the *expected* objective with
respect to the free coordinates (:func:`jaxqueue.objective.to_free`), with what it cost. All use
common random numbers: every configuration of one estimate sees the same key.

- ``fd``: central differences on the exact simulator, one coordinate at a time, each moved by its
  natural step (:func:`jaxqueue.objective.difference_steps`), all ``2p + 1`` configurations in one
  vmapped batch (:func:`jaxqueue.simulate_many`) with identical replication ids, so each
  coordinate's difference is paired replication by replication. Biased by ``O(h^2)`` curvature
  only; its cost grows with the number of parameters p.
- ``spsa``: simultaneous perturbation along random +-1 directions scaled by the natural steps
  (so no coordinate moves by another's step size), ``directions`` pairs in one batch.
- ``score``: a per-decision likelihood-ratio estimator of a smoothed family (every decision
  randomised). Each randomised decision k at time t_k carries its score
  ``s_k = d log p(decision | state) / d theta``, credited with the future of the levels the
  objective depends on, ``int_{t_k} K(t - t_k) (level(t) - b) dt``: eligibility traces
  ``e(t) = sum_k s_k K(t - t_k)`` ride in the scan carry and ``int (level - b) e dt`` is
  accumulated exactly between events (Marbach & Tsitsiklis, IEEE TAC 2001; Baxter & Bartlett,
  JAIR 2001, for the discounted traces). The kernel ``K(t) = 1 - (1 - exp(-t/W))^3`` is flat
  at 0, so a response lasting ``tau`` loses only ``O((tau/W)^3)`` of its credit; W defaults to
  three times the longest mean stage time (:func:`default_discount`). The time
  average of the credits is the derivative of each long-run mean level, and the objective's
  gradient follows by the chain rule. The once-per-replication roundings (mixed GPUs, slack,
  caps) are credited with the replication's whole window instead. Variance control: a
  leave-one-out constant baseline per level, zero-mean control variates ``sum_k s_k
  phi(state_k)`` (the levels at each decision) fitted by cross-fitted least squares, and
  conditional Monte Carlo for thresholds that never came within reach. Its cost does not grow
  with p. With the events' own scores it also differentiates with respect to the model's rates
  (:func:`rate_gradient`).
- ``pathwise``: the derivative of a relaxed sample path (:class:`jaxqueue.relax.Relaxed`,
  straight-through), one forward-mode pass per parameter; biased (a relaxation of the path, not
  of its law); pooled families only.

An estimator refuses parameters it cannot differentiate (``ValueError`` naming them) rather than
returning a zero for them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from . import driver, kernel
from .decisions import ScoreFunction
from .kernel import AbstractSystem, Flow
from .objective import (
    Problem,
    difference_steps,
    from_free,
    mask,
    measure,
    sli_penalty,
    steps_for,
)
from .policies import tunable
from .relax import Relaxed
from .sweep import simulate_many

__all__ = ["ESTIMATORS", "Estimate", "default_discount", "differentiable", "estimate",
           "rate_gradient"]

ESTIMATORS = ("fd", "spsa", "score", "pathwise")


@dataclasses.dataclass
class Estimate:
    """A gradient estimate in free coordinates (flat, zeros off the tuned coordinates).

    Attributes:
        grad: the estimate, ``(p,)``.
        se: its standard error per coordinate (from the spread over replications), ``(p,)``;
            NaN where the estimator gives none.
        value: the objective's mean at the point, from the estimate's own runs.
        events: events simulated (all configurations, warm-up included).
        seconds: wall time.
    """

    grad: np.ndarray
    se: np.ndarray
    value: float
    events: int
    seconds: float


def differentiable(problem: Problem, estimator: str) -> tuple[str, ...]:
    """The parameters of ``problem``'s family that ``estimator`` can differentiate."""
    names = tuple(f.name for f in dataclasses.fields(tunable.PARAMS[problem.family]))
    if estimator in ("fd", "spsa"):
        return names
    if tunable.engine(problem.family) != "pooled":
        return ()
    smoothed = problem.gate_temperature is not None
    if estimator == "score":
        if problem.family == "sli-gated":
            return names if smoothed else ("split",)
        return names if smoothed else ()
    return names  # pathwise: every decision of a pooled family is relaxed


def _picked(problem: Problem, estimator: str, free, only: Sequence[str] | None):
    """The flat 0/1 mask of the tuned coordinates, after checking ``estimator`` can take them."""
    names = [f.name for f in dataclasses.fields(free)]
    wanted = names if only is None else list(only)
    on = np.asarray(ravel_pytree(mask(free, only))[0])
    ok = differentiable(problem, estimator)
    missing = [k for k in wanted if k not in ok]
    if missing:
        why = ("the per-GPU engine takes exact decisions only" if tunable.engine(
            problem.family) != "pooled" else "the family is not smoothed (give a gate "
            "temperature: without one its expected objective is piecewise constant in them)")
        raise ValueError(f"estimator {estimator!r} cannot differentiate {missing} of family "
                         f"{problem.family!r}: {why}; use fd or spsa, or tune only "
                         f"{list(ok) or 'nothing'}")
    return on


def estimate(problem: Problem, estimator: str, free, key, *, only: Sequence[str] | None = None,
             step_scale: float = 1.0, gate_steps: bool = False, reps: int | None = None,
             directions: int = 1, discount: float | None = None,
             relaxation: float = 0.1) -> Estimate:
    """An estimate of d(mean objective)/d(free coordinates) at ``free`` (see the module
    docstring for the estimators).

    Args:
        problem: what is tuned.
        estimator: one of :data:`ESTIMATORS`.
        free: the point, in free coordinates (:func:`jaxqueue.objective.to_free`).
        key: a ``jax.random.key`` (common to every configuration of the estimate).
        only: the parameters tuned (default all); the others get an exact zero.
        step_scale: ``fd`` and ``spsa`` move each coordinate by ``step_scale`` difference
            steps (:func:`jaxqueue.objective.difference_steps`).
        gate_steps: ``fd`` and ``spsa`` on a smoothed family: the gate targets' and offset's
            difference steps capped by the gate's temperature (``difference_steps(...,
            gate=True)``).
        reps: replications per configuration (default ``problem.reps``).
        directions: ``spsa``'s number of random directions (pairs of runs).
        discount: ``score``'s credit window W in seconds (default
            :func:`default_discount`).
        relaxation: ``pathwise``'s relaxation temperature (the event's Gumbel softmax; the
            decisions' is the same, at least 0.05).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator = {estimator!r} is unknown: must be one of {ESTIMATORS}")
    if discount is None:
        discount = default_discount(problem.model)
    for name, value, low in (("step_scale", step_scale, 0.0), ("discount", discount, 0.0),
                             ("relaxation", relaxation, 0.0)):
        if not (np.isfinite(value) and value > low):
            raise ValueError(f"{name} = {value!r} is invalid: must be finite and > {low:g}")
    for name, value, low in (("reps", reps, 2), ("directions", directions, 1)):
        if value is not None and (isinstance(value, bool) or int(value) != value
                                  or value < low):
            raise ValueError(f"{name} = {value!r} is invalid: must be an integer >= {low}")
    if gate_steps and estimator not in ("fd", "spsa"):
        raise ValueError(f"gate_steps = True is invalid for estimator = {estimator!r}: only fd "
                         "and spsa take difference steps")
    on = _picked(problem, estimator, free, only)
    start = time.perf_counter()
    reps = reps or problem.reps
    if estimator in ("fd", "spsa"):
        params0 = from_free(free)
        steps = np.asarray(ravel_pytree(difference_steps(
            problem, jax.tree.map(np.asarray, params0), gate=gate_steps))[0]) * step_scale
        out = (_central(problem, free, key, steps, on, reps) if estimator == "fd" else
               _spsa(problem, free, key, steps, on, reps, directions))
    elif estimator == "score":
        out = _score(problem, free, key, on, reps, discount)
    else:
        out = _pathwise(problem, free, key, on, reps, relaxation)
    grad, se, value, events = out
    return Estimate(grad=np.asarray(grad, np.float64), se=np.asarray(se, np.float64),
                    value=float(value), events=int(events),
                    seconds=time.perf_counter() - start)


# ---- differences on the exact simulator ---------------------------------------------------------
def _project(unravel, flat):
    """The free coordinates of the parameters ``flat`` maps to (inside their ranges)."""
    from .objective import to_free

    return np.asarray(ravel_pytree(to_free(from_free(unravel(jnp.asarray(flat)))))[0])


def _objectives(problem: Problem, unravel, points, key, reps):
    """Per-replication objectives ``(len(points), reps)`` of the exact simulator at ``points``,
    one batch with common random numbers, and the events simulated."""
    systems = [problem.system(jax.tree.map(np.asarray, from_free(unravel(jnp.asarray(p)))))
               for p in points]
    runs = simulate_many(key, systems, reps=reps, horizon=problem.horizon, warmup=problem.warmup)
    values = np.stack([measure(r, problem.model, problem.n, problem.pricing,
                               problem.sli)["objective"] for r in runs])
    return values, sum(r.events for r in runs)


def _central(problem, free, key, steps, on, reps):
    flat, unravel = ravel_pytree(free)
    flat = np.asarray(flat, np.float64)
    picked = np.flatnonzero(on)
    points, widths = [flat], []
    for j in picked:
        up, down = flat.copy(), flat.copy()
        up[j] += steps[j]
        down[j] -= steps[j]
        up, down = _project(unravel, up), _project(unravel, down)
        widths.append(up[j] - down[j])
        points += [up, down]
    values, events = _objectives(problem, unravel, points, key, reps)
    grad, se = np.zeros_like(flat), np.full_like(flat, np.nan)
    for k, j in enumerate(picked):
        paired = (values[1 + 2 * k] - values[2 + 2 * k]) / widths[k]
        grad[j], se[j] = paired.mean(), paired.std(ddof=1) / np.sqrt(len(paired))
    return grad, se, values[0].mean(), events


def _spsa(problem, free, key, steps, on, reps, directions):
    flat, unravel = ravel_pytree(free)
    flat = np.asarray(flat, np.float64)
    signs = np.asarray(jax.random.rademacher(jax.random.fold_in(key, 0xD1), (directions,
                                                                             flat.size)))
    points, widths = [], []
    for d in range(directions):
        delta = signs[d] * steps * on
        up, down = _project(unravel, flat + delta), _project(unravel, flat - delta)
        points += [up, down]
        widths.append(up - down)
    values, events = _objectives(problem, unravel, points, key, reps)
    per = []  # (directions, reps, p)
    for d in range(directions):
        w = widths[d]
        inverse = np.where(on > 0, 1.0 / np.where(w != 0, w, np.inf), 0.0)
        per.append((values[2 * d] - values[2 * d + 1])[:, None] * inverse[None, :])
    per = np.asarray(per)
    grad = per.mean((0, 1))
    # Two sources of noise, not independent: the replications (shared by every direction under
    # common random numbers) and the directions (other coordinates' cross-talk); their
    # variances are added, which is conservative.
    var = per.mean(0).var(0, ddof=1) / reps
    if directions > 1:
        var = var + per.mean(1).var(0, ddof=1) / directions
    return grad, np.where(on > 0, np.sqrt(var), np.nan), values.mean(), events


# ---- the per-decision likelihood-ratio estimator ------------------------------------------------
#: The credit kernel K(t) = sum_j c_j exp(-t / (s_j W)) = 1 - (1 - exp(-t / W))^3: 1 at 0 with
#: its first two derivatives 0 there, so a response lasting an exponential time of mean tau
#: loses E[(1 - exp(-t / W))^3] of its credit: 5% at W = 3 tau, 1% at W = 6 tau (one
#: exponential loses tau / (W + tau): measured 5% low on Erlang-A at W = 15 tau).
_KERNEL = ((3.0, 1.0), (-3.0, 0.5), (1.0, 1.0 / 3.0))


def default_discount(model) -> float:
    """The score estimator's default credit window: three times the longest mean time a job
    spends in one stage (a prefill, a mixed or solo decode, a patience), in seconds."""
    times = [1.0 / np.asarray(getattr(model, k), np.float64) for k in ("mu_p", "mu_m", "mu_s")]
    theta = np.asarray(model.theta, np.float64)
    times.append(np.where(theta > 0, 1.0 / np.where(theta > 0, theta, 1.0), 0.0))
    return 3.0 * float(np.max(np.concatenate([np.ravel(t) for t in times])))


class _ScoredState(eqx.Module):
    inner: Any
    t_prev: Float[Array, ""]
    trace: Float[Array, "2 p"]  # one eligibility trace per exponential of the credit kernel
    credit: Float[Array, "p L"]  # int (level - center) e dt
    weight: Float[Array, " p"]  # int e dt
    control: Float[Array, "p L"]  # sum_k s_k (level_k - center)
    initial: Float[Array, "K p"]  # score of each once-per-replication rounding
    reach: Float[Array, " K"]  # running maximum of what each rounded threshold is compared with


class _Scored(AbstractSystem):
    """A system whose steps also carry the eligibility trace of its randomised decisions.

    ``embed(inner, theta)`` is ``inner`` with its parameters at the free coordinates ``theta``;
    each step differentiates the log-probability of the decisions it takes with respect to
    ``theta`` (a local gradient: the step's own function, nothing across steps).
    """

    inner: AbstractSystem
    theta: Float[Array, " p"]
    center: Float[Array, " L"]
    discount: Float[Array, ""]
    credit_end: Float[Array, ""]
    embed: Callable = eqx.field(static=True)
    nature: bool = eqx.field(static=True, default=False)

    @property
    def level_names(self) -> tuple[str, ...]:
        return self.inner.level_names

    @property
    def tally_names(self) -> tuple[str, ...]:
        return self.inner.tally_names

    @property
    def num_hit_tallies(self) -> int:
        return self.inner.num_hit_tallies

    def tallied(self, counts):
        return self.inner.tallied(counts)

    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    @property
    def num_random(self) -> int:
        return self.inner.num_random

    @property
    def num_init_random(self) -> int:
        return self.inner.num_init_random

    @property
    def num_rounded(self) -> int:
        """Thresholds the inner system rounds once per replication (0 if none)."""
        if not (hasattr(self.inner, "rounding_logp") and self.inner.num_init_random):
            return 0
        return jax.eval_shape(lambda: self.inner.rounding_logp(self.inner.init())).shape[0]

    def init(self):
        p, L, K = self.theta.shape[0], self.center.shape[0], self.num_rounded
        real = self.center.dtype
        return _ScoredState(inner=self.inner.init(), t_prev=jnp.zeros((), real),
                            trace=jnp.zeros((len(_KERNEL), p), real),
                            credit=jnp.zeros((p, L), real),
                            weight=jnp.zeros(p, real), control=jnp.zeros((p, L), real),
                            initial=jnp.zeros((K, p), real), reach=jnp.full(K, -jnp.inf, real))

    def randomize(self, s, u):
        inner = self.inner.randomize(s.inner, u)
        initial, reach = s.initial, s.reach
        if self.num_rounded:
            initial = jax.jacobian(lambda th: self.embed(self.inner, th).rounding_logp(inner))(
                self.theta).astype(initial.dtype)
            reach = jnp.maximum(reach, self.inner.threshold_reach(inner).astype(reach.dtype))
        return dataclasses.replace(s, inner=inner, initial=initial, reach=reach)

    def rates(self, s):
        return self.inner.rates(s.inner)

    def pending(self, s):
        return self.inner.pending(s.inner)

    def levels(self, s):
        return self.inner.levels(s.inner)

    def census(self, s, now):
        return self.inner.census(s.inner, now)

    def close(self, s, window):
        return self.inner.close(s.inner, window)

    def revenue(self, integrals, counts):
        return self.inner.revenue(integrals, counts)

    def overflow(self, s):
        return self.inner.overflow(s.inner)

    def overflow_message(self):
        return self.inner.overflow_message()

    def rebase(self, s, elapsed):
        return dataclasses.replace(s, inner=self.inner.rebase(s.inner, elapsed),
                                   t_prev=s.t_prev - elapsed)

    def fire(self, s, event, t, u, window):
        w0, w1 = window
        real = s.trace.dtype

        def jump(theta):
            system = self.embed(self.inner, theta)
            new, flow = system.fire(s.inner, event, t, u, window)
            lp = flow.logp
            if self.nature:  # the event's own likelihood, log r_k for event k
                rates = system.rates(s.inner)
                num = rates.shape[0]
                k = jnp.minimum(event.index, num - 1)
                hit = (event.index < num) & (rates[k] > 0)
                lp = lp + jnp.where(hit, jnp.log(jnp.where(hit, rates[k], 1.0)), 0.0)
            return lp, (new, flow)

        (_, (new, flow)), score = jax.value_and_grad(jump, has_aux=True)(self.theta)
        score = score.astype(real)
        if self.nature:  # the holding time's likelihood: -R dt, accrued continuously
            rate = jax.grad(lambda th: jnp.sum(self.embed(self.inner, th).rates(s.inner)))(
                self.theta).astype(real)
        else:
            rate = jnp.zeros_like(score)
        level = (self.inner.levels(s.inner) - self.center).astype(real)
        # On [t_prev, t) the state holds; each trace decays from its value at t_prev and, while
        # decisions are credited (from w0 to credit_end), accrues -dR ds (the score of not
        # jumping). Credit its integral against the levels over the part inside the window.
        tp = s.t_prev
        c = jnp.minimum(t, w1).astype(real)  # credit over [a, c]
        a = jnp.maximum(tp, w0.astype(real))
        q = jnp.minimum(c, self.credit_end.astype(real))  # accrual over [a, q]
        live, accrue = c > a, q > a
        end = jnp.maximum(c, tp)
        area = jnp.zeros_like(score)
        traces = []
        for j, (coefficient, scale) in enumerate(_KERNEL):
            W = self.discount.astype(real) * scale

            def decay(x, W=W):
                return jnp.exp(-(x - tp) / W)

            # int_a^c e(s) ds, e(s) = e_prev decay(s) - dR int_a^min(s, q) exp(-(s - v) / W) dv
            held = jnp.where(live, W * (decay(a) - decay(c)), 0.0)
            accrued = jnp.where(accrue, W * (q - a) - W * W * (jnp.exp(-(c - q) / W)
                                                                - jnp.exp(-(c - a) / W)), 0.0)
            area = area + coefficient * (held * s.trace[j] - accrued * rate)
            traces.append(s.trace[j] * decay(end) - jnp.where(
                accrue, W * (jnp.exp(-(end - q) / W) - jnp.exp(-(end - a) / W)), 0.0) * rate)
        credit = s.credit + area[:, None] * level[None, :]
        weight = s.weight + area
        trace = jnp.stack(traces)
        counted = ((t > w0) & (t <= self.credit_end)).astype(real)
        trace = trace + counted * score[None, :]
        # Zero-mean control variates: the martingale sum_k s_k phi(x_k) - int dR phi ds.
        control = s.control + (counted * score - jnp.where(accrue, q - a, 0.0) * rate
                               )[:, None] * level[None, :]
        reach = s.reach
        if self.num_rounded:
            reach = jnp.maximum(reach, self.inner.threshold_reach(new).astype(reach.dtype))
        state = _ScoredState(inner=new, t_prev=end, trace=trace, credit=credit, weight=weight,
                             control=control, initial=s.initial, reach=reach)
        return state, Flow(counts=flow.counts, waits=flow.waits, logp=flow.logp,
                           hits=flow.hits, credits=flow.credits)


@dataclasses.dataclass(frozen=True)
class _Embed:
    """``embed(inner, theta)``: ``inner`` with the flat vector ``theta`` put back in its
    place, either the family's parameters (free coordinates) or fields of the model.

    A static field of :class:`_Scored`, so it is hashable and compares by value: a new
    estimate at another point reuses the compiled program (a closure would recompile it)."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    target: str  # "params" or "model"

    @classmethod
    def of(cls, tree, target: str) -> _Embed:
        leaves, treedef = jax.tree.flatten(tree)
        return cls(treedef, tuple(tuple(np.shape(a)) for a in leaves), target)

    def unflatten(self, theta):
        sizes = [int(np.prod(s)) for s in self.shapes]
        parts = jnp.split(theta, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [theta]
        return jax.tree.unflatten(self.treedef, [p.reshape(s) for p, s in
                                                 zip(parts, self.shapes, strict=True)])

    def __call__(self, inner, theta):
        values = self.unflatten(theta)
        if self.target == "params":
            return tunable.with_params(inner, from_free(values))
        return eqx.tree_at(lambda s: s.model, inner, inner.model.replace(**values))


def _likelihood_ratio(key, inner, theta, embed, center, *, discount, warmup, horizon, reps,
                      objective, nature=False, steps=None):
    """Per-replication likelihood-ratio estimates ``(R, p)`` of d objective / d theta, the
    objective's value at the mean levels, and the events simulated.

    ``inner`` takes its decisions with :class:`~jaxqueue.decisions.ScoreFunction`; ``embed(inner,
    theta)`` puts ``theta`` into it; ``objective(levels, theta)`` is the objective as a function
    of the time-average levels (its direct dependence on ``theta`` is differentiated too);
    ``nature`` adds the events' own likelihood (for parameters of the model's rates)."""
    if not discount > 0:
        raise ValueError(f"discount = {discount!r} is invalid: must be > 0 (seconds)")
    end = horizon + 3.0 * float(discount)  # the last credited decisions see 3 W of future
    real = jax.dtypes.canonicalize_dtype(jnp.float64)

    def scored(inner):
        return _Scored(inner=inner, theta=jnp.asarray(theta, real),
                       center=jnp.asarray(center, real), discount=jnp.asarray(discount, real),
                       credit_end=jnp.asarray(horizon, real), embed=embed, nature=nature)

    system = scored(inner)
    steps = steps or 1024
    while True:
        for _ in range(6):
            out = kernel.rollout(key, system, steps=steps, reps=reps, window=(warmup, end))
            if bool(np.all(np.asarray(out.done))):
                break
            steps = int(steps * 1.5)
        else:
            raise RuntimeError(f"the likelihood-ratio run did not reach t = {end} in {steps} "
                               "steps")
        if not bool(np.any(np.asarray(out.overflow))):
            break
        # Rerun on the same key with larger FCFS buffers, as jaxqueue.simulate does: the
        # result is that of a large enough buffer.
        message = inner.overflow_message()
        inner = driver._regrow(inner, True, steps, reps, jax.devices()[:1])
        driver._warn_growth(f"{message} in a likelihood-ratio run: rerunning it with buffers of "
                            f"{inner.capacity:,} jobs (same random numbers: the estimate is "
                            "that of a large enough buffer)")
        system = scored(inner)
    axes = kernel.rep_axes(system)
    state = jax.tree.map(lambda a, ax: np.moveaxis(np.asarray(a, np.float64), ax, 0),
                         out.state, axes)
    levels = np.asarray(out.summary.integrals, np.float64) / (end - warmup)  # (R, L)
    # Leave-one-out baseline per level: the other replications' mean.
    R = levels.shape[0]
    loo = (levels.sum(0, keepdims=True) - levels) / max(R - 1, 1)
    D = (state.credit - state.weight[:, :, None] * (loo - center)[:, None, :]) / (horizon
                                                                                   - warmup)
    # The roundings' score, without the thresholds that decided nothing in a replication (their
    # quantity never came within reach of any value they can take: the path is the same for all
    # of them, so their term has conditional mean zero and is dropped: conditional Monte Carlo).
    if state.initial.shape[1]:
        lowest = tunable.smallest_rounded(np.asarray(inner.thresholds()), inner.smoothed)
        bind = state.reach >= lowest[None, :]  # (R, K)
        initial = np.einsum("rk,rkp->rp", bind, state.initial)
    else:
        initial = np.zeros(D.shape[:2])
    D = D + initial[:, :, None] * (levels - loo)[:, None, :]  # (R, p, L)
    mean = jnp.asarray(levels.mean(0))
    theta = jnp.asarray(theta)
    grad_levels, direct = jax.grad(objective, argnums=(0, 1))(mean, theta)
    g = D @ np.asarray(grad_levels, np.float64) + np.asarray(direct, np.float64)[None, :]
    # Zero-mean control variates per coordinate: the trace's weight, the levels at decisions
    # and the roundings' score; cross-fitted least squares (each half's coefficients from the
    # other half).
    features = np.concatenate([state.weight[:, :, None], state.control,
                               initial[:, :, None]], axis=2)  # (R, p, F)
    g = _control(g, features)
    return g, float(objective(mean, theta)), int(np.sum(np.asarray(out.summary.events)))


def _plan_center(plan, names, n, num):
    """The plan's levels times n (what each level is centred on before it is integrated). An
    exit level (phase-type service) is centred on its occupancy's plan: the plan's completion
    rate over mu."""
    per_gpu = {"x": plan.x, "y_m": plan.y_m, "y_s": plan.y_s, "q_p": plan.q_p,
               "x_exit": plan.x, "y_m_exit": plan.y_m, "y_s_exit": plan.y_s}
    return np.concatenate([n * np.asarray(per_gpu.get(k, np.zeros(num)), np.float64)
                           for k in names])


def _score(problem: Problem, free, key, on, reps, discount):
    flat, unravel = ravel_pytree(jax.tree.map(jnp.asarray, free))
    inner = problem.system(jax.tree.map(np.asarray, from_free(free)), decide=ScoreFunction())
    center = _plan_center(problem.plan, inner.level_names, problem.n, inner.num_classes)
    J = _objective_of_levels(problem, inner)
    g, value, events = _likelihood_ratio(
        key, inner, flat, _Embed.of(jax.tree.map(jnp.asarray, free), "params"), center,
        discount=discount,
        warmup=problem.warmup, horizon=problem.horizon, reps=reps,
        objective=lambda levels, theta: J(levels),
        steps=steps_for(problem, problem.horizon + 3.0 * float(discount)))
    R = g.shape[0]
    grad = np.where(on > 0, g.mean(0), 0.0)
    se = np.where(on > 0, g.std(0, ddof=1) / np.sqrt(R), np.nan)
    return grad, se, value, events


def rate_gradient(key, system, n: int, *, names: Sequence[str] = ("lambda_", "theta"),
                  reps: int = 256, horizon: float = 1000.0, warmup: float = 200.0,
                  discount: float | None = None, pricing: str = "bundled", plan=None) -> dict:
    """Likelihood-ratio estimates of d(revenue per GPU per second)/d(model field), for the
    model fields ``names`` (per class: ``lambda_``, ``theta``, ``P``, ``D``; scalars:
    ``alpha``, ``beta``, ``gamma``, ``c_p``, ``c_d``) of a pooled-type system, with the policy
    (its plan, n, M) held fixed. Every event of the chain carries its score ``d log r_k - d R
    dt`` and every randomised decision its own, credited with the discounted future of the
    levels (see the module docstring); the revenue's direct dependence on a field (prices,
    service rates through the lengths and iteration times) is added exactly. Its cost does not
    grow with the number of fields.

    Returns ``{name: {"grad": array, "se": array}}`` and ``"value"`` (the revenue) and
    ``"events"``.
    """
    model = system.model
    discount = default_discount(model) if discount is None else discount
    fields = {k: jnp.asarray(getattr(model, k), jax.dtypes.canonicalize_dtype(jnp.float64))
              for k in names}
    flat, unravel = ravel_pytree(fields)
    embed = _Embed.of(fields, "model")

    inner = eqx.tree_at(lambda s: s.decide, system, ScoreFunction())
    num = inner.num_classes
    center = (np.zeros(len(inner.level_names) * num) if plan is None
              else _plan_center(plan, inner.level_names, n, num))

    def objective(levels, theta):
        current = embed(inner, theta)
        zeros = jnp.zeros(len(current.tally_names) * num, levels.dtype)
        return getattr(current.revenue(levels, zeros), f"{pricing}_integral") / n

    rate = float(n * np.sum(np.asarray(model.lambda_)) * 3.0)
    g, value, events = _likelihood_ratio(
        key, inner, flat, embed, center, discount=discount, warmup=warmup, horizon=horizon,
        reps=reps, objective=objective, nature=True,
        steps=int(1.2 * rate * (horizon + 3.0 * discount)) + 64)
    R = g.shape[0]
    grad, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(R)
    out = {k: {"grad": np.asarray(v), "se": np.asarray(e)}
           for (k, v), e in zip(unravel(jnp.asarray(grad)).items(),
                                unravel(jnp.asarray(se)).values(), strict=True)}
    return {**out, "value": value, "events": events}


#: Ridge penalty of the control-variate fit, per replication of the fitting half, on features
#: scaled to unit variance there.
_RIDGE = 0.01


def _control(g: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``g`` (R, p) minus fitted zero-mean control variates ``features`` (R, p, F), each
    coordinate on its own, the coefficients of each half fitted on the other half.

    The fit is a ridge regression on features scaled to unit variance on the fitting half:
    several features can be (nearly) collinear, and an unpenalised least-squares fit then put
    huge coefficients on directions the fitting half hardly saw, which a replication of the
    other half far along them turned into an estimate a million times too large; a feature
    that was 0 up to round-off in the fitting half (it moved in a few replications of the other
    half only) did the same through its vanishing scale. Coefficients that do not depend on the half
    they are applied to keep the estimate unbiased whatever they are."""
    R, p, F = features.shape
    if R < 8:
        return g
    out = g.copy()
    halves = (np.arange(R) % 2 == 0, np.arange(R) % 2 == 1)
    for j in range(p):
        X = features[:, j, :]
        keep = np.flatnonzero(X.std(0) > 0)
        if keep.size == 0:
            continue
        keep = keep[: max(1, R // 8)]
        X = X[:, keep]
        for fit, use in (halves, halves[::-1]):
            # A feature that the fitting half hardly saw (0 up to round-off there, its spread a
            # thousandth of the whole sample's or less) gets no coefficient: a scale learnt
            # there says nothing about the other half, where it may be far from 0.
            scale = X[fit].std(0)
            seen = scale > 1e-3 * X.std(0)
            if not seen.any():
                continue
            Z = X[fit][:, seen] / scale[seen]
            Zc, y = Z - Z.mean(0), g[fit, j] - g[fit, j].mean()
            coef = np.linalg.solve(Zc.T @ Zc + _RIDGE * fit.sum() * np.eye(Z.shape[1]), Zc.T @ y)
            out[use, j] = g[use, j] - (X[use][:, seen] / scale[seen]) @ coef
    return out


def _objective_of_levels(problem: Problem, inner):
    """The objective per GPU per second as a function of the time-average levels ``(L,)``."""
    names = list(inner.level_names)
    num, n, model = inner.num_classes, problem.n, problem.model

    def J(levels):
        zeros = jnp.zeros(len(inner.tally_names) * num, levels.dtype)
        revenue = getattr(inner.revenue(levels, zeros), f"{problem.pricing}_integral") / n
        per = levels.reshape(len(names), num) / n
        penalty = sli_penalty(model, problem.sli, per[names.index("x")][None],
                              per[names.index("y_s")][None])[0]
        return revenue - penalty
    return J


def _objective_gradient(problem, inner, levels):
    return np.asarray(jax.grad(_objective_of_levels(problem, inner))(jnp.asarray(levels)),
                      np.float64)


def _objective_value(problem, inner, levels):
    return float(_objective_of_levels(problem, inner)(jnp.asarray(levels)))


# ---- pathwise -----------------------------------------------------------------------------------
def _pathwise(problem: Problem, free, key, on, reps, temperature):
    flat, _ = ravel_pytree(jax.tree.map(jnp.asarray, free))
    decide = Relaxed(temperature=temperature, decision_temperature=max(temperature, 0.05))
    template = problem.system(decide=decide)
    picked = np.flatnonzero(on)
    basis = jnp.eye(flat.shape[0], dtype=flat.dtype)[picked]
    value, events, partial = _pathwise_run(
        template, flat, basis, key, problem.model, jnp.asarray(problem.warmup),
        embed=_Embed.of(jax.tree.map(jnp.asarray, free), "params"), steps=steps_for(problem),
        reps=reps, n=problem.n, pricing=problem.pricing, sli=problem.sli)
    partial = np.asarray(partial, np.float64)  # (k, R)
    grad, se = np.zeros(flat.shape[0]), np.full(flat.shape[0], np.nan)
    grad[picked] = partial.mean(1)
    se[picked] = partial.std(1, ddof=1) / np.sqrt(reps)
    events = int(np.sum(np.asarray(events))) * (1 + len(picked))
    return grad, se, float(np.mean(np.asarray(value))), events


@functools.partial(jax.jit, static_argnames=("embed", "steps", "reps", "n", "pricing", "sli"))
def _pathwise_run(template, flat, basis, key, model, warmup, *, embed, steps, reps, n, pricing,
                  sli):
    """The relaxed objective per replication at ``flat``, the events, and its directional
    derivatives along the rows of ``basis`` (forward mode, one pass each: constant memory).
    One compiled program per structure, reused at every point."""
    def f(y):
        system = embed(template, y)
        out = kernel.rollout(key, system, steps=steps, reps=reps, window=(warmup, jnp.inf))
        scale = 1.0 / (jnp.maximum(out.time - warmup, 1e-9) * n)
        objective = getattr(out.summary.revenue, f"{pricing}_integral") * scale
        if sli is not None:
            per_gpu = out.summary.integrals.reshape(reps, len(system.level_names),
                                                    -1) * scale[:, None, None]
            names = list(system.level_names)
            objective = objective - sli_penalty(model, sli, per_gpu[:, names.index("x")],
                                                per_gpu[:, names.index("y_s")])
        return objective, out.summary.events

    value, events = f(flat)
    partial = jax.lax.map(lambda v: jax.jvp(lambda y: f(y)[0], (flat,), (v,))[1], basis)
    return value, events, partial
