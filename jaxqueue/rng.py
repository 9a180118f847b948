"""Counter-based random numbers for the scan kernel.

Replication ``r`` draws chunk ``c``'s words from the key ``fold_in(fold_in(key, r), c)``, and step
``s`` of that chunk hashes the counter ``(s, j)`` under it with Threefry-2x32. Nothing is
buffered: a step computes its own words, so no per-chunk array of random numbers streams through
memory, and a replication's path depends on nothing but ``(key, r, c, s)``: not on how many
replications run, nor on how they are sharded or batched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.random import threefry2x32_p
from jaxtyping import Array, Float, PRNGKeyArray, UInt32

__all__ = ["chunk_words", "exponential", "real_dtype", "rep_key", "step_bits", "uniform"]


def real_dtype():
    """The floating dtype of the step: float32, or float64 under ``jax.enable_x64``."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def uniform(bits: UInt32[Array, "..."]) -> Float[Array, "..."]:
    """Uniform in [0, 1) from the top 24 bits of ``bits`` (exact in float32 and float64)."""
    dtype = real_dtype()
    return (bits >> 8).astype(dtype) * jnp.asarray(2.0**-24, dtype)


def exponential(bits: UInt32[Array, "..."]) -> Float[Array, "..."]:
    """Standard exponential from ``bits``: ``-log(1 - U)``, finite since ``1 - U >= 2^-24``."""
    return -jnp.log1p(-uniform(bits))


def rep_key(key: PRNGKeyArray, rep, chunk) -> UInt32[Array, " 2"]:
    """Key words of replication ``rep`` in chunk ``chunk``:
    ``fold_in(fold_in(key, rep), chunk)``."""
    return jax.random.key_data(jax.random.fold_in(jax.random.fold_in(key, rep), chunk))


def step_bits(words: UInt32[Array, " 2"], step, width: int) -> UInt32[Array, " W"]:
    """The ``width`` random words of one step: Threefry-2x32 of the counter ``(step, j)`` under
    the replication's chunk key."""
    step = jnp.asarray(step, jnp.uint32)
    out = []
    for j in range((width + 1) // 2):
        y0, y1 = threefry2x32_p.bind(words[0], words[1], step, jnp.uint32(j))
        out += [y0, y1]
    return jnp.stack(out[:width])


def chunk_words(key: PRNGKeyArray, rep_ids, chunk, length: int, width: int
                ) -> UInt32[Array, "N W R"]:
    """All random words of one chunk, ``(length, width, R)`` (for
    :func:`jaxqueue.kernel.trajectory`, which needs them as a scan input)."""
    words = jax.vmap(lambda r: rep_key(key, r, chunk))(rep_ids)  # (R, 2)
    reps = rep_ids.shape[0]
    # Every (step, replication) pair batched alike: the Threefry primitive's batching rule wants
    # its key and counter batched together.
    words = jnp.broadcast_to(words[None], (length, reps, 2)).reshape(-1, 2)
    steps = jnp.broadcast_to(jnp.arange(length, dtype=jnp.uint32)[:, None], (length, reps))
    flat = jax.vmap(lambda w, s: step_bits(w, s, width))(words, steps.reshape(-1))
    return jnp.moveaxis(flat.reshape(length, reps, width), 1, -1)
