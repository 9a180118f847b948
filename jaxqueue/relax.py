"""Differentiable relaxations of the simulator's decisions: straight-through estimators.

:class:`Relaxed` replaces :class:`jaxqueue.decisions.Exact` as a system's ``decide``. Its
forward pass takes exactly the same decisions as the exact chain for the same key (the sample
path is unchanged, at any temperature), so the simulated revenue is an honest sample of the
exact system. Its backward pass differentiates a smooth surrogate of each decision instead of
the discontinuous one (the straight-through estimator: ``hard + soft - stop_gradient(soft)``):

- **the event** (which exponential clock rings first), following Che, Dong & Namkoong's
  PATHWISE estimator for queueing networks: the surrogate is a softmax of Gumbel perturbed
  log-rates with temperature ``temperature``, where the Gumbel noise is drawn *conditionally on
  the event that was sampled* (the largest perturbed log-rate is the sampled event's), so the
  surrogate concentrates on the sampled event as the temperature falls. Its gradient moves
  probability between events as the rates change;
- **threshold tests** (a free slot, an expired patience, an admission threshold): a sigmoid of
  the margin over ``decision_temperature`` (in counts, centred half-way between integers, or in
  seconds for times);
- **argmins** (the gate's class): a softmax of the negative first key over the eligible entries;
- **draws** (categorical, Bernoulli): the probabilities themselves;
- **rounding** (the number of mixed GPUs from a continuous share): identity gradient, i.e. the
  capacity acts as the fraction ``n * share`` in the backward pass.

What the gradient means: the derivative of a smoothed sample path, not of the expectation.
It is biased: the bias vanishes only if the temperatures go to zero, where the variance grows
without bound; a temperature of 0.1-0.5 is a compromise that the diagnostics script
(``scripts/gradient_diagnostics.py``) measures against exact gradients of small systems.
Counts become floating point (integer-valued in the forward pass) so that gradients flow
through them. Event counters carry no gradient; the revenue integral does.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from .decisions import AbstractDecisions, Exact, ceil_count
from .rng import real_dtype

__all__ = ["Relaxed"]

_EXACT = Exact()


def _st(hard, soft):
    """Straight-through: the value of ``hard``, the gradient of ``soft``."""
    return hard + (soft - jax.lax.stop_gradient(soft))


class Relaxed(AbstractDecisions):
    """Straight-through relaxed decisions (see the module docstring).

    Attributes:
        temperature: temperature of the event's Gumbel softmax (dimensionless, > 0).
        decision_temperature: temperature of threshold tests and argmins, in the units of
            their margins (counts or seconds), > 0.
    """

    temperature: Float[ArrayLike, ""] = 0.2
    decision_temperature: Float[ArrayLike, ""] = 0.5

    differentiable: ClassVar[bool] = True

    @property
    def count_dtype(self):
        return real_dtype()

    def noise_words(self, num_events: int) -> int:
        return num_events

    # ---- the event -----------------------------------------------------------------------
    def event(self, rates, u):
        return _EXACT.event(jax.lax.stop_gradient(rates), u)

    def event_hot(self, rates, index, noise=None):
        num = rates.shape[0]
        dtype = real_dtype()
        hard = (jnp.arange(num) == index).astype(dtype)
        positive = jax.lax.stop_gradient(rates) > 0
        log_r = jnp.log(jnp.where(positive, rates, 1.0))
        # Gumbel noise conditional on the sampled event k having the largest perturbed
        # log-rate: the maximum is Gumbel(log sum r) at k; every other entry is a Gumbel of its
        # own log-rate truncated below that maximum (the top-down construction).
        fixed = jax.lax.stop_gradient(log_r)
        v = jnp.clip(noise, 2.0**-25, 1.0 - 2.0**-25)
        k = jnp.minimum(index, num - 1)
        masked = jnp.where(positive, fixed, -jnp.inf)
        top = jax.nn.logsumexp(jnp.where(jnp.any(positive), masked, 0.0)) - jnp.log(-jnp.log(v[k]))
        g = fixed - jnp.log(-jnp.log(v))
        below = -jnp.logaddexp(-top, -g)
        z = jnp.where(jnp.arange(num) == k, top, below)
        # The noise is held fixed (it is a draw, not a function of the rates): the perturbed
        # log-rates move one for one with the log-rates. Letting the gradient through the
        # construction above would freeze the sampled event and lose the "which clock rings
        # first" term (Paulus, Maddison & Krause, ICLR 2021: Rao-Blackwellised straight-through
        # Gumbel-softmax; tested against dp/dlog r of the exact categorical).
        z = log_r + jax.lax.stop_gradient(z - log_r)
        some = jnp.any(positive)  # none: no event can happen (the row is zero anyway)
        logits = jnp.where(positive, z / self.temperature, -jnp.inf)
        soft = jax.nn.softmax(jnp.where(some, logits, 0.0)) * some
        # A zero rate may carry a tangent (a fractional job made by a relaxed decision): its
        # event's probability then moves at the exact rate dp_k = dr_k / R, taken from the
        # others in proportion (dp_j = -p_j sum dr_k / R), as the holding time's total does.
        total = jax.lax.stop_gradient(jnp.sum(rates))
        scale = jnp.where(total > 0, 1.0 / jnp.where(total > 0, total, 1.0), 0.0)
        extra = jnp.where(positive, 0.0, (rates - jax.lax.stop_gradient(rates)) * scale)
        soft = soft * (1.0 - jnp.sum(extra)) + extra
        live = (index < num).astype(dtype)
        return _st(hard, soft * live)

    # ---- indicators ------------------------------------------------------------------------
    def greater(self, a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        hard = (a > b).astype(real_dtype())
        return _st(hard, jax.nn.sigmoid((a - b - 0.5) / self.decision_temperature))

    def at_least(self, a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        hard = (a >= b).astype(real_dtype())
        margin = jnp.where(jnp.isfinite(b), a - b, -1e30)  # an infinite deadline never expires
        return _st(hard, jax.nn.sigmoid(margin / self.decision_temperature))

    def bernoulli(self, p, u):
        hard = (u < p).astype(real_dtype())
        return _st(hard, jnp.asarray(p, real_dtype()))

    def select(self, c, a, b):
        return jnp.where(jnp.asarray(c) > 0.5, a, b)

    # ---- selections ------------------------------------------------------------------------
    def lexmin(self, keys, eligible):
        return _EXACT.lexmin(tuple(jax.lax.stop_gradient(k) for k in keys),
                             jax.lax.stop_gradient(eligible))

    def choose(self, keys, eligible, on=1):
        index = self.lexmin(keys, eligible)
        num = keys[0].shape[0]
        hard = (jnp.arange(num) == index).astype(real_dtype())
        ok = jax.lax.stop_gradient(jnp.asarray(eligible)) > 0.5
        first = jnp.where(ok & jnp.isfinite(keys[0]), keys[0], 1e30)
        soft = jax.nn.softmax(jnp.where(ok, -first / self.decision_temperature, -jnp.inf))
        soft = jnp.where(jnp.any(ok), soft, 0.0)
        return index, _st(hard, soft) * on

    def draw(self, weights, u):
        return _EXACT.draw(jax.lax.stop_gradient(weights), u)

    def draw_hot(self, weights, u, on=1):
        index = self.draw(weights, u)
        num = weights.shape[0]
        hard = (jnp.arange(num) == index).astype(real_dtype())
        total = jnp.sum(weights)
        soft = weights / jnp.where(total > 0, total, 1.0)
        return index, _st(hard, soft) * on

    def first_min(self, score):
        return _EXACT.first_min(score)

    def descend(self, tree, records, column, u):
        return _EXACT.descend(tree, records, column, u)

    def one_hot(self, index, size, on=1):
        return (jnp.arange(size) == index).astype(real_dtype()) * on

    def count(self, value, u=None):
        value = jnp.asarray(value, real_dtype())
        hard = ceil_count(jax.lax.stop_gradient(value)) if u is None else _EXACT.count(
            jax.lax.stop_gradient(value), u)
        return _st(jnp.asarray(hard, real_dtype()), value)
