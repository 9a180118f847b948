"""A deterministic fluid surrogate of the ``gated`` family: a cheap, differentiable first stage
for tuning.

The exact simulator's revenue is a random, piecewise-constant function of a sample path; its
gradient needs estimators (:mod:`jaxqueue.tune`). The fluid model of the paper replaces the job
counts by per-GPU amounts that move deterministically at their mean rates. This module integrates
that fluid model *under the gated family's policy* (gate targets, offset, mixed share, decode-
congestion slack, per-class caps; :mod:`jaxqueue.policies.tunable`), so its long-run revenue is
an ordinary smooth function of the parameters that ``jax.grad`` differentiates in one pass.

Per GPU and class i the state is ``x`` (prefills running), ``y_m``, ``y_s`` (decodes on mixed
and solo GPUs), ``q_p``, ``q_d`` (the two buffers). One step of length ``dt``:

1. the gate fills the idle prefill capacity ``min(share, free decode capacity + slack) - sum x``
   at once: class i gets the share ``softmax(-(x_i + offset / n) / target_i / s)`` of it among
   the classes with jobs waiting and below their caps, never more than its queue; what a class
   cannot take goes to the others (water-filling, as the exact gate passes to the next class);
2. arrivals ``lambda_i dt`` join ``q_p``; each buffer loses ``theta_i dt`` of its content; each
   service completes ``mu dt`` of its content (forward Euler; since the gate refills prefill
   slots at once, a busy slot completes ``mu dt`` per step; ``dt`` is cut to ``0.5 / max mu_p``);
3. finished prefills take free solo capacity ``B (1 - share) - sum y_s`` first, then free mixed
   capacity ``(B - 1) share - sum y_m``, the rest waits in ``q_d`` (greedy router), and ``q_d``
   moves into capacity freed since (its classes in proportion to their content: FCFS across
   classes).

Capacities stay hard (a smoothed max would add capacity that does not exist and overstate
revenue); only the gate's argmin and the caps are smoothed, at the scale ``s`` per GPU. The
default ``s = 1 / sqrt(n)`` stands for the size of the random fluctuations of per-GPU counts: a
heuristic, not a derivation. The surrogate cannot see finite-n effects beyond this smoothing
(with one class and ``s -> 0`` the LP point earns the LP revenue, tested; with several classes
the greedy router's class mix on the decode slots can lose revenue even in the fluid model), so
it serves as a cheap first stage, not a replacement for the exact estimators. Revenue is the
time average over ``(warmup, horizon)`` of the completion rate times the prices (bundled or
separate), minus SLI penalties when given.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import fluid
from .model import Model

__all__ = ["FluidPath", "revenue", "trajectory"]


@dataclasses.dataclass(frozen=True)
class FluidPath:
    """Time averages of a surrogate run over its window, per GPU (arrays ``(I,)``) and the
    revenue and flows (per GPU per second) in it.

    Attributes:
        x, y_m, y_s, q_p, q_d: time-average amounts.
        revenue: revenue per GPU per second under the pricing asked for.
        arrivals, completions, abandonments: flows per GPU per second, per class.
        stock_change: change of the total amount in the system over the window, per class
            (so ``arrivals - completions - abandonments = stock_change / window``).
    """

    x: jax.Array
    y_m: jax.Array
    y_s: jax.Array
    q_p: jax.Array
    q_d: jax.Array
    revenue: jax.Array
    arrivals: jax.Array
    completions: jax.Array
    abandonments: jax.Array
    stock_change: jax.Array


#: Amounts below this (per GPU) count as none where a ratio or a log is taken, so that no
#: gradient overflows in float32.
_TINY = 1e-6


def _split(amount, capacity):
    """Per-class parts of ``amount`` placed into ``capacity`` (proportional to ``amount``)."""
    total = jnp.sum(amount)
    some = total > _TINY
    safe = jnp.where(some, total, 1.0)  # no 0/0 or overflow in the value or the gradient
    return jnp.where(some, amount * (jnp.minimum(safe, capacity) / safe), 0.0)


def trajectory(model: Model, params, *, n: int, horizon: float = 400.0, warmup: float = 150.0,
               dt: float = 0.005, smoothing: float | None = None,
               pricing: str = "bundled") -> FluidPath:
    """Integrates the surrogate from an empty system (traceable in ``params``; see the module
    docstring). ``params`` is a :class:`~jaxqueue.policies.tunable.GatedParams`."""
    if pricing not in ("bundled", "separate"):
        raise ValueError(f"pricing = {pricing!r} is invalid: must be 'bundled' or 'separate'")
    for name, value in (("horizon", horizon), ("dt", dt)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} = {value!r} is invalid: must be finite and > 0")
    if not (np.isfinite(warmup) and 0 <= warmup < horizon):
        raise ValueError(f"warmup = {warmup!r} is invalid: must be in [0, horizon = {horizon})")
    s = 1.0 / np.sqrt(n) if smoothing is None else float(smoothing)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"smoothing = {smoothing!r} is invalid: must be finite and > 0")
    dtype = jnp.result_type(float)
    f = {k: jnp.asarray(v, dtype) for k, v in (
        ("lam", model.lambda_), ("theta", model.theta), ("mu_p", model.mu_p),
        ("mu_m", model.mu_m), ("mu_s", model.mu_s))}
    B, num = float(model.B), model.num_classes
    if pricing == "bundled":
        price_p, price_d = jnp.zeros_like(f["lam"]), jnp.asarray(model.w, dtype)
    else:
        price_p = jnp.asarray(float(model.c_p) * np.asarray(model.P), dtype)
        price_d = jnp.asarray(float(model.c_d) * np.asarray(model.D), dtype)
    targets = jnp.asarray(params.targets, dtype)
    share, slack = jnp.asarray(params.share, dtype), jnp.asarray(params.slack, dtype)
    caps, offset = jnp.asarray(params.caps, dtype), jnp.asarray(params.offset, dtype)

    # Forward Euler for the outflows (step 2 of the module docstring).
    fastest = float(np.max(np.asarray(model.mu_p, np.float64)))
    dt = min(float(dt), 0.5 / fastest)
    done_p, done_m, done_s = (jnp.minimum(f[k] * dt, 1.0) for k in ("mu_p", "mu_m", "mu_s"))
    gone = f["theta"] * dt
    steps, skip = int(round(horizon / dt)), int(round(warmup / dt))

    def gate(x, ym, ys, qp):
        """Admissions filling the idle prefill capacity (step 4 of the module docstring)."""
        free_dec = B * (1.0 - share) - jnp.sum(ys) + (B - 1.0) * share - jnp.sum(ym)
        room = jnp.minimum(share, free_dec + slack)
        idle = jnp.maximum(room - jnp.sum(x), 0.0)
        key = -(x + offset / n) / targets / s + jax.nn.log_sigmoid((caps - x) / s)
        admit = jnp.zeros_like(x)
        for _ in range(num):  # water-filling: what a class's queue cannot take goes on
            left = qp - admit
            some = left > _TINY * s  # a class whose queue is used up drops out of the next round
            logit = jnp.where(some, key + jnp.log(jnp.where(some, jnp.minimum(left / s, 1.0),
                                                            1.0)), -jnp.inf)
            weight = jax.nn.softmax(jnp.where(jnp.any(some), logit, 0.0))
            take = jnp.where(some, jnp.minimum(idle * weight, left), 0.0)
            admit, idle = admit + take, idle - jnp.sum(take)
        return admit

    def step(z, _):
        x, ym, ys, qp, qd = z
        admit = gate(x, ym, ys, qp)  # the gate acts at once: slots never idle for a step
        x, qp = x + admit, qp - admit
        levels = (x, ym, ys, qp, qd)
        arrive = f["lam"] * dt
        ab_p, ab_d = qp * gone, qd * gone
        out_p, out_m, out_s = x * done_p, ym * done_m, ys * done_s
        x, ym, ys = x - out_p, ym - out_m, ys - out_s
        qp, qd = qp + arrive - ab_p, qd - ab_d
        # Greedy router: solo, then mixed, then the decode buffer; the buffer refills freed slots.
        free_s = jnp.maximum(B * (1.0 - share) - jnp.sum(ys), 0.0)
        to_s = _split(out_p, free_s)
        free_m = jnp.maximum((B - 1.0) * share - jnp.sum(ym), 0.0)
        to_m = _split(out_p - to_s, free_m)
        qd = qd + out_p - to_s - to_m
        pull_s = _split(qd, jnp.maximum(free_s - jnp.sum(to_s), 0.0))
        pull_m = _split(qd - pull_s, jnp.maximum(free_m - jnp.sum(to_m), 0.0))
        qd = qd - pull_s - pull_m
        ys, ym = ys + to_s + pull_s, ym + to_m + pull_m
        done = out_m + out_s
        flows = (arrive, done, ab_p + ab_d, price_p @ out_p + price_d @ done)
        return (x, ym, ys, qp, qd), (levels, flows)

    zero = jnp.zeros_like(f["lam"])
    z0 = (zero,) * 5
    z_warm, _ = jax.lax.scan(step, z0, None, length=skip)
    z_end, (levels, flows) = jax.lax.scan(step, z_warm, None, length=steps - skip)
    span = (steps - skip) * dt
    x, ym, ys, qp, qd = (jnp.mean(a, axis=0) for a in levels)
    arrivals, completions, abandonments, money = (jnp.sum(a, axis=0) / span for a in flows)
    stock = sum(z_end) - sum(z_warm)
    return FluidPath(x=x, y_m=ym, y_s=ys, q_p=qp, q_d=qd, revenue=money, arrivals=arrivals,
                     completions=completions, abandonments=abandonments, stock_change=stock)


def revenue(model: Model, params, *, n: int, sli: fluid.SLI | None = None, **kw):
    """The surrogate's objective: revenue per GPU per second minus SLI penalties (as
    :func:`jaxqueue.tune.sli_penalty`) of :func:`trajectory`'s time averages."""
    from .objective import sli_penalty

    path = trajectory(model, params, n=n, **kw)
    return path.revenue - sli_penalty(model, sli, path.x, path.y_s)
