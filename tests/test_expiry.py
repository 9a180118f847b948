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
def _op(rings, kind, due, t, elapsed, take):
    """One operation on a ring with the index and the same ring without it (0 push, 1 pop,
    2 advance, 3 rebase, 4 serve the oldest live job), and what each counts after it."""
    window = (jnp.float32(-1.0), jnp.float32(1e9))

    def one(ring):
        pushed = buf.push(ring, kind == 0, jnp.int32(0), t, due)
        popped = buf.pop(ring, (kind == 1) & (ring.size > 0))
        later = buf.advance(ring, t) if ring.expiry is not None else ring
        head = buf.head_scan(later, t, window)
        served = buf.serve_live(later, head, kind == 4, take, t, window)
        out = pushed
        for k, other in ((1, popped), (2, later), (3, buf.rebase(ring, elapsed)),
                         (4, served.ring)):
            out = jax.tree.map(lambda a, b, k=k: jnp.where(kind == k, b, a), out, other)
        return out, head, served

    (ring, head, served), (plain, head_p, served_p) = one(rings[0]), one(rings[1])
    return (ring, plain), (head, head_p), (served, served_p)


@pytest.mark.parametrize("capacity", [
    pytest.param(64, marks=pytest.mark.slow),
    100,  # padded to whole blocks
    pytest.param(256, marks=pytest.mark.slow)])
def test_the_index_counts_what_a_pass_counts(capacity):
    rng = np.random.default_rng(capacity)
    rings = (buf.empty(capacity, expiry=True), buf.empty(capacity))
    t = 0.0
    checked = served = counted = 0
    for _ in range(1500):
        kind = int(rng.choice(5, p=[0.4, 0.15, 0.28, 0.02, 0.15]))
        if kind == 2:
            t += float(rng.exponential(0.3))
        # Patience of many scales, some exactly at the clock (a tie counts as abandoned).
        due = t + (0.0 if rng.random() < 0.05 else float(rng.lognormal(0.0, 1.5)))
        elapsed = t if kind == 3 else 0.0
        if kind == 0 and int(rings[0].size) == capacity:
            continue
        rings, heads, out = _op(rings, jnp.int32(kind), jnp.float32(due), jnp.float32(t),
                                jnp.float32(elapsed), jnp.int32(rng.random() < 0.7))
        if kind == 3:
            t = 0.0
        ring, plain = rings
        assert (int(ring.head), int(ring.size)) == (int(plain.head), int(plain.size))
        if kind in (2, 4):  # the index was advanced to t in this step
            assert int(buf.alive_counted(ring)) == int(buf.alive(plain, jnp.float32(t)))
            checked += 1
            # The head's scan and the service agree with the pass's, field by field.
            for a, b in zip(jax.tree.leaves(heads[0]), jax.tree.leaves(heads[1]), strict=True):
                assert np.array_equal(np.asarray(a), np.asarray(b))
            served += int(out[0].taken)
            counted = max(counted, int(ring.expiry.expired))
    # Every path was taken: services, and abandoned jobs held (several at once).
    assert checked > 400 and served > 20 and counted > 2


@pytest.mark.parametrize("law", [
    "lognormal",
    # The recorded-paths test's latency case runs the index by default.
    pytest.param("exponential-latency", marks=pytest.mark.slow)])
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


_SHARDED = """
import sys
sys.path.insert(0, "tests")
import jax, numpy as np
from jaxqueue import policies, simulate
from jaxqueue.patience import Patience
from test_exact_fcfs import two_classes
model = two_classes((1.0, 0.8), P=(1.0, 0.5), D=(0.05, 0.1))
model = model.replace(patience=Patience.make("lognormal", 2, cv=2.0))
system, _ = policies.build("gate-and-route", model, 4)
runs = [simulate(jax.random.key(2), system, reps=4, horizon=100.0, warmup=10.0,
                 chunk_events=64, devices=jax.devices()[:k], notify=lambda _: None)
        for k in (1, 2)]
np.testing.assert_array_equal(runs[0].tallies, runs[1].tallies)
print("same", runs[0].events)
"""


@pytest.mark.slow
def test_sharded_runs_use_the_pass_and_agree_with_one_device():
    # Over several devices simulate turns the index off (its loop would synchronise them at
    # every pass); the paths do not depend on the devices, so the runs agree exactly. Host
    # devices are set before JAX starts: a subprocess.
    import os
    import subprocess
    import sys

    from helpers import host_devices

    env = dict(os.environ, XLA_FLAGS=host_devices(2))
    out = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                         text=True, timeout=600, cwd=str(__import__("pathlib").Path(
                             __file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("same")


def test_the_command_line_keeps_long_rings_on_one_device():
    # Long rings under a law other than the fixed one (whose pass is a binary search) run on
    # one CPU device with the index rather than sharded with the pass.
    from test_exact_fcfs import two_classes

    from jaxqueue.cli import _one_device_for_the_index

    model = two_classes((1.0, 0.8), P=(1.0, 0.5), D=(0.05, 0.1))
    model = model.replace(patience=Patience.make("lognormal", 2, cv=2.0))
    system, _ = policies.build("gate-and-route", model, 4)
    two = [jax.devices()[0]] * 2  # only the platform and the count are read
    assert not _one_device_for_the_index(system, two)  # 256 slots: sharding wins
    big = dataclasses.replace(system, capacity=4096)
    assert _one_device_for_the_index(big, two)
    assert not _one_device_for_the_index(big, two[:1])
    fixed = dataclasses.replace(big, model=model.replace(
        patience=Patience.make("deterministic", 2)))
    assert not _one_device_for_the_index(fixed, two)
    assert not _one_device_for_the_index(dataclasses.replace(big, ring_index=False), two)
