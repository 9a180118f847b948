"""The abandonment index of a ring (:class:`jaxqueue.buffer.Expiry`) against the pass over every
slot it replaces: after any sequence of pushes, pops, advances and rebases, its count of live
jobs is :func:`jaxqueue.buffer.alive`'s exactly, and a pooled run with it makes the decisions of
the run without it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue import buffer as buf
from jaxqueue import policies, simulate
from jaxqueue.patience import Patience


@jax.jit
def _op(ring, kind, due, t, elapsed):
    """One operation (0 push, 1 pop, 2 advance, 3 rebase) and the two live counts after it."""
    pushed = buf.push(ring, kind == 0, jnp.int32(0), t, due)
    popped = buf.pop(ring, (kind == 1) & (ring.size > 0))
    out = jax.tree.map(lambda a, b: jnp.where(kind == 0, a, b), pushed, popped)
    out = jax.tree.map(lambda a, b: jnp.where(kind == 2, a, b), buf.advance(ring, t), out)
    out = jax.tree.map(lambda a, b: jnp.where(kind == 3, a, b), buf.rebase(ring, elapsed), out)
    return out


@pytest.mark.parametrize("capacity", [64, 100, 256])
def test_the_index_counts_what_a_pass_counts(capacity):
    rng = np.random.default_rng(capacity)
    ring = buf.empty(capacity, expiry=True)
    t = 0.0
    checked = 0
    for _ in range(1500):
        kind = int(rng.choice(4, p=[0.4, 0.25, 0.33, 0.02]))
        if kind == 2:
            t += float(rng.exponential(0.3))
        # Patience of many scales, some exactly at the clock (a tie counts as abandoned).
        due = t + (0.0 if rng.random() < 0.05 else float(rng.lognormal(0.0, 1.5)))
        elapsed = t if kind == 3 else 0.0
        if kind == 0 and int(ring.size) == capacity:
            continue
        ring = _op(ring, jnp.int32(kind), jnp.float32(due), jnp.float32(t), jnp.float32(elapsed))
        if kind == 3:
            t = 0.0
        if kind == 2:
            assert int(buf.alive_counted(ring)) == int(buf.alive(ring, jnp.float32(t)))
            checked += 1
    assert checked > 300
    assert int(ring.size) > 0 and int(ring.expiry.expired) > 0  # both kinds of job were held


def test_an_index_ring_refuses_serve_live():
    ring = buf.empty(16, expiry=True)
    head = buf.head_scan(ring, jnp.float32(0.0), (jnp.float32(0.0), jnp.float32(1.0)))
    with pytest.raises(ValueError, match="serve_live"):
        buf.serve_live(ring, head, 1, 1, jnp.float32(0.0), (jnp.float32(0.0), jnp.float32(1.0)))


@pytest.mark.parametrize("law", ["lognormal", "exponential-latency"])
def test_a_pooled_run_is_the_same_with_or_without_the_index(law, monkeypatch):
    # Impatient jobs (mean patience 1/3 s and 1/4 s) behind slow prefills, and short rollouts:
    # jobs abandon in most steps, and many deadlines fall between a rollout's last event and
    # its end (where the index must stop, not at the next time drawn).
    from test_exact_fcfs import two_classes

    model = two_classes((1.0, 0.8), P=(1.0, 0.5), D=(0.05, 0.1))
    if law == "lognormal":
        model = model.replace(patience=Patience.make("lognormal", 2, cv=2.0))
    system, _ = policies.build("gate-and-route", model, 4)
    if law != "lognormal":
        from jaxqueue.stats import LATENCY_GRID
        system = dataclasses.replace(system, wait_grid=LATENCY_GRID)
    assert system.per_job

    def run(system):
        return simulate(jax.random.key(5), system, reps=8, horizon=200.0, warmup=20.0,
                        chunk_events=64, notify=lambda _: None)

    assert system.init().class_rings.expiry is not None
    indexed = run(system)
    plain_empty = buf.empty
    monkeypatch.setattr(buf, "empty", lambda capacity, origin=False, expiry=False:
                        plain_empty(capacity, origin))
    # A larger ring (the same paths while none overflows) is a new program, traced without
    # the index, where the same system would reuse the one traced with it.
    other = dataclasses.replace(system, capacity=2 * system.capacity)
    assert other.init().class_rings.expiry is None
    passed = run(other)
    assert indexed.events == passed.events
    np.testing.assert_array_equal(indexed.tallies, passed.tallies)
    # Waits still held at the window's end are summed over the whole ring, in an order that
    # depends on its length: the integrals agree to rounding (the recorded-paths test checks
    # them bit for bit at one capacity, with the index).
    np.testing.assert_allclose(indexed.level_integrals, passed.level_integrals, rtol=1e-6)
    assert np.sum(passed.count("prefill_abandon")) > 0  # the index had jobs to count
