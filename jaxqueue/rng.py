"""Counter-based random numbers for the scan kernel.

Replication ``r`` draws chunk ``c``'s words from the key ``fold_in(fold_in(key, r), c)``, and step
``s`` of that chunk hashes the counter ``(s, j)`` under it with Threefry-2x32
(:func:`threefry2x32`, the generator of ``jax.random``'s default keys, written out so that it
fuses with the work around it). Words are computed where they are used: by the step itself, or
for one block of steps at a time (:func:`block_words`, used by :func:`jaxqueue.kernel.rollout`),
so no per-chunk array of random numbers streams through memory, and a replication's path
depends on nothing but ``(key, r, c, s)``: not on how many replications run, nor on how they are
sharded or batched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, UInt32

__all__ = ["block_words", "chunk_words", "exponential", "real_dtype", "rep_key", "step_bits",
           "threefry2x32", "uniform"]


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


#: Threefry-2x32's rotation distances and key-schedule parity constant (Salmon, Moraes, Dror,
#: Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the Random123 constants).
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds (the generator behind ``jax.random``'s default keys),
    written out as plain integer arithmetic: XLA fuses it into the step's other element-wise
    work, where the primitive ``threefry2x32_p`` compiles on the CPU to a rolled loop of small
    kernels. Bit for bit the primitive's output (tested)."""
    u32 = jnp.uint32
    ks = (k0, k1, k0 ^ k1 ^ u32(_PARITY))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[4 * (block % 2):4 * (block % 2) + 4]:
            x0 = x0 + x1
            x1 = (x1 << u32(r)) | (x1 >> u32(32 - r))
            x1 = x1 ^ x0
        i = block + 1
        x0 = x0 + ks[i % 3]
        x1 = x1 + ks[(i + 1) % 3] + u32(i)
    return x0, x1


def step_bits(words: UInt32[Array, " 2"], step, width: int) -> UInt32[Array, " W"]:
    """The ``width`` random words of one step: Threefry-2x32 of the counter ``(step, j)`` under
    the replication's chunk key."""
    step = jnp.asarray(step, jnp.uint32)
    out = []
    for j in range((width + 1) // 2):
        y0, y1 = threefry2x32(words[0], words[1], step, jnp.uint32(j))
        out += [y0, y1]
    return jnp.stack(out[:width])


def block_words(words: UInt32[Array, "2 R"], start, length: int, width: int
                ) -> tuple[UInt32[Array, "N R"], ...]:
    """The random words of steps ``start .. start + length - 1`` of every replication, one
    ``(length, R)`` array per word: the same words :func:`step_bits` gives step by step, hashed
    for a block of steps at once (each Threefry call once, in one element-wise kernel)."""
    steps = jnp.asarray(start, jnp.uint32) + jnp.arange(length, dtype=jnp.uint32)[:, None]
    k0, k1 = words[0][None, :], words[1][None, :]
    steps = jnp.broadcast_to(steps, (length, words.shape[1]))
    out = []
    for j in range((width + 1) // 2):
        out += threefry2x32(k0, k1, steps, jnp.full_like(steps, j))
    return tuple(out[:width])


def chunk_words(key: PRNGKeyArray, rep_ids, chunk, length: int, width: int
                ) -> UInt32[Array, "N W R"]:
    """All random words of one chunk, ``(length, width, R)`` (for
    :func:`jaxqueue.kernel.trajectory`, which needs them as a scan input)."""
    words = jax.vmap(lambda r: rep_key(key, r, chunk), out_axes=-1)(rep_ids)  # (2, R)
    return jnp.stack(block_words(words, 0, length, width), axis=1)
