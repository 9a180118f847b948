"""Counter-based random numbers for the scan kernel.

Replication ``r`` draws its words from the key ``fold_in(fold_in(key, r), 0)``: its ``p``-th step
since the run began (counting every step it took, its zero-time bookkeeping and the step its clock
stopped in at a window's end included) hashes the counter ``(p mod 2^32, j + 256 floor(p /
2^32))`` for its ``j``-th pair of words with Threefry-2x32 (:func:`threefry2x32`, the generator of
``jax.random``'s default keys, written out so that it fuses with the work around it). Words are
computed where they are used: by the step itself, or for one block of steps at a time
(:func:`block_words`, used by :func:`jaxqueue.kernel.rollout`), so no per-chunk array of random
numbers streams through memory, and a replication's path depends on nothing but ``(key, r)``:
not on how many replications run, how they are sharded or batched, nor on how many steps each
compiled chunk runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, UInt32

__all__ = ["PAIRS", "block_words", "chunk_words", "exponential", "real_dtype", "rep_key",
           "split_position", "step_bits", "threefry2x32", "uniform"]


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


def rep_key(key: PRNGKeyArray, rep, stream=0) -> UInt32[Array, " 2"]:
    """Key words of replication ``rep``'s stream ``stream``: ``fold_in(fold_in(key, rep),
    stream)`` (stream 0 drives the steps; :data:`jaxqueue.kernel.INIT_STREAM` the starting
    states)."""
    return jax.random.key_data(jax.random.fold_in(jax.random.fold_in(key, rep), stream))


#: A step's ``j``-th pair of words hashes ``j + PAIRS * hi`` with ``hi`` the high word of its
#: position (so ``j < PAIRS``: at most ``2 * PAIRS`` words per step).
PAIRS = 256


def split_position(position) -> tuple[UInt32[Array, "..."], UInt32[Array, "..."]]:
    """Step positions (integers >= 0: 64-bit host integers, or a JAX integer array) as their
    low and high 32-bit words."""
    if isinstance(position, jax.Array):  # traced or on a device: 32 bits unless under x64
        if jnp.dtype(position.dtype).itemsize == 8:
            return ((position & 0xFFFFFFFF).astype(jnp.uint32),
                    (position >> 32).astype(jnp.uint32))
        return position.astype(jnp.uint32), jnp.zeros(position.shape, jnp.uint32)
    position = np.asarray(position)
    if not np.issubdtype(position.dtype, np.integer) or np.any(position < 0):
        raise ValueError(f"first_step = {position!r} is invalid: must be integers >= 0")
    position = position.astype(np.uint64)
    return (jnp.asarray((position & 0xFFFFFFFF).astype(np.uint32)),
            jnp.asarray((position >> 32).astype(np.uint32)))


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


def _counters(lo, hi, step):
    """Position ``(lo, hi) + step`` as ``(low word, PAIRS * high word)``."""
    low = lo + step
    high = hi + (low < lo).astype(jnp.uint32)  # the carry out of the low word
    return low, high * jnp.uint32(PAIRS)


def step_bits(words: UInt32[Array, " 2"], step, width: int, lo=0, hi=0) -> UInt32[Array, " W"]:
    """The ``width`` random words of one step: Threefry-2x32 under the replication's key of
    the step's position, ``(lo, hi)`` (see :func:`split_position`) plus ``step``."""
    if width > 2 * PAIRS:
        raise ValueError(f"width = {width} is invalid: at most {2 * PAIRS} words per step")
    low, high = _counters(jnp.asarray(lo, jnp.uint32), jnp.asarray(hi, jnp.uint32),
                          jnp.asarray(step, jnp.uint32))
    out = []
    for j in range((width + 1) // 2):
        y0, y1 = threefry2x32(words[0], words[1], low, high + jnp.uint32(j))
        out += [y0, y1]
    return jnp.stack(out[:width])


def block_words(words: UInt32[Array, "2 R"], start, length: int, width: int, lo=0, hi=0
                ) -> tuple[UInt32[Array, "N R"], ...]:
    """The random words of steps ``start .. start + length - 1`` of every replication (each
    from its own position ``(lo, hi)``, scalars or ``(R,)``), one ``(length, R)`` array per
    word: the same words :func:`step_bits` gives step by step, hashed for a block of steps at
    once (each Threefry call once, in one element-wise kernel)."""
    if width > 2 * PAIRS:
        raise ValueError(f"width = {width} is invalid: at most {2 * PAIRS} words per step")
    reps = words.shape[1]
    steps = jnp.asarray(start, jnp.uint32) + jnp.arange(length, dtype=jnp.uint32)[:, None]
    low, high = _counters(jnp.broadcast_to(jnp.asarray(lo, jnp.uint32), (reps,))[None, :],
                          jnp.broadcast_to(jnp.asarray(hi, jnp.uint32), (reps,))[None, :], steps)
    k0, k1 = words[0][None, :], words[1][None, :]
    out = []
    for j in range((width + 1) // 2):
        out += threefry2x32(k0, k1, low, high + jnp.uint32(j))
    return tuple(out[:width])


def chunk_words(key: PRNGKeyArray, rep_ids, length: int, width: int
                ) -> UInt32[Array, "N W R"]:
    """The random words of every replication's first ``length`` steps, ``(length, width, R)``
    (for :func:`jaxqueue.kernel.trajectory`, which needs them as a scan input)."""
    words = jax.vmap(lambda r: rep_key(key, r), out_axes=-1)(rep_ids)  # (2, R)
    return jnp.stack(block_words(words, 0, length, width), axis=1)
