"""The M/M/N+M (Erlang-A) queue on the simulator's engine: the validation oracle's twin.

One class, N servers, Poisson(lambda) arrivals, Exp(mu) services, Exp(theta) patience of each
waiting customer. Its exact stationary law is a birth-death chain
(:func:`jaxqueue.theory.erlang_a`), so it checks the engine's clock, event choice, statistics
window and replication logic.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..kernel import AbstractSystem, Flow
from ..rng import real_dtype

__all__ = ["ErlangA"]


class ErlangA(AbstractSystem):
    """M/M/N+M queue.

    Attributes:
        servers: N.
        arrival_rate: lambda, per unit time.
        service_rate: mu, per server.
        patience_rate: theta, per waiting customer.
    """

    servers: Int[Array, ""]
    arrival_rate: Float[Array, ""]
    service_rate: Float[Array, ""]
    patience_rate: Float[Array, ""]

    level_names: ClassVar[tuple[str, ...]] = ("busy", "queue")
    tally_names: ClassVar[tuple[str, ...]] = ("arrivals", "services", "abandonments")

    num_classes: ClassVar[int] = 1

    def init(self) -> Int[Array, ""]:
        return jnp.int32(0)

    def rates(self, k) -> Float[Array, " 3"]:
        busy = jnp.minimum(k, self.servers)
        real = real_dtype()
        return jnp.stack([
            jnp.asarray(self.arrival_rate, real),
            self.service_rate * busy,
            self.patience_rate * (k - busy),
        ]).astype(real)

    def fire(self, k, event, t, u, window):
        hot = event.hot
        counted = (t > window[0]) & (t <= window[1])
        flow = Flow(counts=hot * counted, waits=jnp.zeros(2, t.dtype))
        return k + hot[0] - hot[1] - hot[2], flow

    def levels(self, k) -> Float[Array, " 2"]:
        busy = jnp.minimum(k, self.servers)
        return jnp.stack([busy, k - busy]).astype(real_dtype())
