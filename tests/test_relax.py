"""The relaxed event: its expected Jacobian is the derivative of the exact categorical law."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue.decisions import Exact
from jaxqueue.relax import Relaxed


def jacobians(rates, temperature, samples, seed):
    """Monte Carlo draws of d(relaxed one-hot)/d(log rates), each from its own sampled event
    and conditional noise, as the kernel draws them."""
    rates = jnp.asarray(rates, jnp.float32)
    relaxed = Relaxed(temperature=temperature)

    def one(key):
        k_event, k_noise = jax.random.split(key)
        index = Exact().event(rates, jax.random.uniform(k_event))
        noise = jax.random.uniform(k_noise, rates.shape)
        return jax.jacobian(lambda lr: relaxed.event_hot(jnp.exp(lr), index, noise))(
            jnp.log(rates))

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), samples)),
                      np.float64)


@pytest.mark.parametrize("rates", [(1.0, 2.0, 3.0), (0.2, 5.0, 1.0, 0.05), (1.0, 1.0)])
@pytest.mark.parametrize("temperature", [0.01, 0.05])
def test_mean_jacobian_is_the_derivative_of_the_event_law(rates, temperature):
    # The law of the event is p_k = r_k / sum r, so dp_k / dlog r_j = p_k (delta_kj - p_j). The
    # relaxed one-hot's Jacobian must match it on average (the straight-through Gumbel-softmax
    # with the noise held fixed; the Gumbel-softmax's own bias is O(T^2), far below the standard
    # error at these temperatures). Before the fix it recovered 1-34% of it.
    samples = 100_000
    J = jacobians(rates, temperature, samples, seed=len(rates))
    p = np.asarray(rates) / np.sum(rates)
    exact = np.diag(p) - np.outer(p, p)
    mean = J.mean(0)
    se = J.std(0) / np.sqrt(samples)
    # Entries between two rare events are heavy-tailed at low T (a few large spikes), so their
    # sample standard error is itself unreliable: a floor of 0.5% of the largest entry.
    floor = 0.005 * np.max(np.abs(exact))
    assert np.all(np.abs(mean - exact) < 4 * se + floor), (mean, exact, se)
    assert np.all(se < 0.05 * np.max(np.abs(exact)))  # the test can tell a wrong Jacobian


def test_a_zero_rate_with_a_tangent_moves_its_event_at_the_exact_rate():
    # A zero rate carrying a tangent (a fractional job from a relaxed decision) changes the
    # holding time through the total rate; its event's probability must move at the exact rate
    # dp_k / dr_k = 1 / R at r_k = 0 (rates (2, 0, 6): R = 8), taken from the other events so
    # that the row's total stays one (on average over draws that is -p_j / R each).
    relaxed = Relaxed(temperature=0.05)
    rates = jnp.asarray([2.0, 0.0, 6.0])
    draws = jax.random.split(jax.random.key(0), 20_000)

    def column(key):
        k_event, k_noise = jax.random.split(key)
        index = Exact().event(rates, jax.random.uniform(k_event))
        noise = jax.random.uniform(k_noise, (3,))
        return jax.jacobian(lambda r: relaxed.event_hot(r, index, noise))(rates)[:, 1]

    cols = np.asarray(jax.jit(jax.vmap(column))(draws), np.float64)
    np.testing.assert_allclose(cols[:, 1], 1 / 8, rtol=1e-5)
    np.testing.assert_allclose(cols.sum(1), 0.0, atol=1e-6)
    mean, se = cols.mean(0), cols.std(0) / np.sqrt(len(cols))
    assert np.all(np.abs(mean[[0, 2]] - np.array([-0.25, -0.75]) / 8) < 4 * se[[0, 2]] + 1e-4)
    # Without an event (index E, a bookkeeping step) the row and its tangent are zero.
    J0 = jax.jacobian(lambda r: relaxed.event_hot(r, jnp.int32(3), jnp.full(3, 0.5)))(rates)
    assert np.all(np.asarray(J0) == 0)
