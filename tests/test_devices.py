"""Sharding replications over devices and batching them reproduce a single-device run exactly.

Host devices must be configured before JAX starts, so the sharded run happens in a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
from helpers import host_devices

from jaxqueue import policies, scenarios, simulate

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jaxqueue import policies, scenarios
    from jaxqueue import simulate
    assert len(jax.devices()) == 8, jax.devices()
    model = scenarios.load("paper-qwen8b")
    # FG-SP: FCFS rings besides counts, the state with the most kinds of leaves to shard.
    system, _ = policies.build("fg-sp", model, 20)
    kw = dict(reps=12, horizon=40.0, warmup=10.0)   # 12 reps: padded to 16 over 8 devices
    one = simulate(jax.random.key(3), system, **kw)
    many = simulate(jax.random.key(3), system, devices=jax.devices(), **kw)
    assert np.array_equal(one.tallies, many.tallies)
    assert np.array_equal(one.level_integrals, many.level_integrals)
    assert np.array_equal(one.window, many.window)
    assert one.events == many.events  # the 4 padding replications are not counted
    # A gamma patience draw, sharded over the replications, must not talk across devices
    # (a loop whose stopping test reads the whole batch did: 50x slower over two devices).
    from jaxqueue.patience import Patience
    law = Patience.make("gamma", 2, cv=0.5)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("reps",))
    u = jax.device_put(jax.numpy.linspace(0.01, 0.99, 64),
                       jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("reps")))
    draw = jax.jit(jax.vmap(lambda v: law.draw(v, jax.numpy.float32(0.5), 1)))
    hlo = draw.lower(u).compile().as_text()
    talk = [op for op in ("all-reduce", "all-gather", "collective-permute", "all-to-all")
            if op in hlo]
    assert not talk, talk
    print("identical")
""")


def test_sharded_over_eight_host_devices_is_bit_identical():
    env = dict(os.environ, XLA_FLAGS=host_devices(8),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "identical" in out.stdout


def test_batches_of_replications_are_bit_identical():
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build("gate-and-route", model, 10)
    kw = dict(reps=7, horizon=30.0, warmup=5.0)
    whole = simulate(jax.random.key(8), system, **kw)
    batched = simulate(jax.random.key(8), system, max_batch=3, **kw)
    np.testing.assert_array_equal(whole.tallies, batched.tallies)
    np.testing.assert_array_equal(whole.level_integrals, batched.level_integrals)


def test_disjoint_replication_ranges_concatenate_to_the_whole():
    # What several hosts (or processes) do under jax.distributed: each runs its own id range.
    model = scenarios.load("paper-qwen8b")
    system, _ = policies.build("fg-sp", model, 10)
    # Batches of two replications throughout: one compiled program for the three runs (that
    # batching changes nothing is the test above).
    kw = dict(horizon=30.0, warmup=5.0, max_batch=2)
    whole = simulate(jax.random.key(9), system, reps=6, **kw)
    first = simulate(jax.random.key(9), system, reps=2, **kw)
    rest = simulate(jax.random.key(9), system, reps=4, first_rep=2, **kw)
    np.testing.assert_array_equal(whole.tallies, np.concatenate([first.tallies, rest.tallies]))
    np.testing.assert_array_equal(whole.level_integrals,
                                  np.concatenate([first.level_integrals, rest.level_integrals]))
