"""An event-list simulator of pooled Gate-and-Route with general patience and service laws.

This module is a second, independent implementation of the pooled Gate-and-Route policy
(docs/model.md, sections 1-4, 6 and 8), written from the model's description only, so that the
JAX engine can be checked against something it was not derived from. It is plain Python and
NumPy: a binary heap of timed events (``heapq``), one replication at a time, with patience and
service times of any law of the model's means.

    python scripts/eventsim.py paper-qwen8b --gpus 20 --reps 16 --patience deterministic
    python scripts/eventsim.py paper-qwen8b --gpus 20 --decode erlang:20 --json

The system simulated
--------------------
``n`` GPUs, of which ``M = ceil(n * sum_i x_i*)`` are mixed (``x*`` from the bundled fluid LP):

- each mixed GPU has one prefill slot (a class-i prefill lasts a time of mean ``1 / mu_p,i``)
  and ``B - 1`` decode slots at the mixed speed (mean ``1 / mu_m,i``);
- each of the ``n - M`` solo GPUs has ``B`` decode slots at the solo speed (mean ``1 / mu_s,i``).

Class i arrives as a Poisson process of rate ``n * lambda_i``. Arrivals wait in a per-class
prefill queue (first come, first served within the class). The *gate* fills an idle prefill
slot from the waiting class with the smallest deviation ``(X_i - n x_i*) / x_i*`` (``X_i``:
class-i prefills in service). A request whose prefill ends is *routed* to a free solo slot, else
a free mixed slot, else joins one decode buffer served first come, first served across classes;
a freed decode slot takes the head of that buffer. A request waiting in either buffer abandons
when its patience runs out; a request in service never abandons.

Choices where the description leaves room (each is what a careful reader of the paper would
do; docs/model.md section 8 fixes the first three):

1. Gate ties (equal deviations) go to the larger queue deviation ``Q_p,i - n q_p,i*`` (``Q_p,i``:
   class-i requests waiting for a prefill, counted live), then to the lower class index. A class
   with ``x_i* = 0`` has deviation ``+inf``: it is admitted only when no other class waits.
   Deviations are compared as ``X_i / x_i*`` (the same order as ``(X_i - n x_i*) / x_i*``, since
   ``n`` is common), so that the exact tie ``X_i = 0`` of several classes is not broken by
   floating-point rounding.
2. A mixed GPU whose prefill slot idles keeps decoding at the mixed speed (the pooled model).
   Only slot counts matter in the pooled model: which mixed or solo GPU a request lands on is
   immaterial, so the simulator keeps the number of free slots of each kind, not GPUs.
3. The gate acts only when it can: at an arrival (an idle prefill slot implies no request
   waits, so the arrival is admitted at once) and at a prefill completion (the freed slot is
   refilled at that instant). Abandonments and decode completions free no prefill slot. The
   router acts at a prefill completion; a freed decode slot takes the head of the decode buffer
   at that instant (a freed *mixed* slot too: no request ever moves between slots, so a mixed
   decode never migrates to a solo slot that frees later).
4. Patience is drawn afresh on entering each buffer (the prefill buffer at arrival, the decode
   buffer when no slot is free at the end of the prefill), from the class's law of mean
   ``1 / theta_i``; ``theta_i = 0`` is infinite patience. A request admitted to a free slot at
   the instant it arrives never waits and draws no patience. Abandonment is eager: each waiting
   request has an event at its deadline (ignored if it was served first), so the live queue
   lengths that the gate and the statistics see are exact at every instant.
5. A decode's duration is its *work* (unit mean, drawn once per request from the decode law)
   divided by the speed of the slot it is placed in: ``work / mu_m,i`` on a mixed slot,
   ``work / mu_s,i`` on a solo slot. (Under exponential laws this is the model's exponential
   service at each rate.) A prefill's duration has mean ``1 / mu_p,i``.
6. The system starts empty at time 0; statistics cover the window ``[warmup, horizon]``: an
   event counts if it happens at a time in the window, an occupancy is the time integral over
   the window divided by its length.
7. TTFT is the time from a request's arrival to the end of its prefill, recorded for the
   requests whose prefill ends in the window (abandoned requests have none). The end-to-end
   latency (E2E) is the time from a request's arrival to the end of its decode, recorded for
   the requests whose decode starts in the window (a decode still running at the horizon is
   recorded with the completion time already scheduled for it; abandoned requests have none).
   Each decode started in the window is also counted by the kind of slot it starts on
   (mixed or solo), which fixes its time per output token.
8. Simultaneous events (possible only with deterministic laws and coinciding times) are taken
   in the order they were scheduled.

Revenue (bundled pricing): ``w_i`` per decode completed, per GPU per second, estimated two ways:
counting completions in the window (``revenue_counted``), and by the time integral of the
completion rate of the jobs in service, ``sum_i w_i (mu_m,i Y_m,i + mu_s,i Y_s,i) / n``
(``revenue_integral``). The integral form has the counted one's mean under any service law:
by Little's law a slot kind's completion rate is its mean occupancy over the mean service time
there, which is ``1 / mu`` whatever the law, and no request leaves service before it ends.

Laws (``--patience``, ``--prefill``, ``--decode``): ``exponential``, ``deterministic``,
``gamma:CV``, ``erlang:K`` (gamma of shape K, CV ``1/sqrt(K)``), ``lognormal:CV``,
``hyperexponential:CV`` (two exponential phases with balanced means, CV >= 1); each with the
model's mean.

Replications use independent streams (``numpy.random.SeedSequence(seed).spawn``), and
intervals are Student-t 95% intervals over replications.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Cluster", "Law", "Replication", "Result", "cluster_from_model", "mean_ci",
           "parse_law", "replicate", "run_one"]

# ---- laws -----------------------------------------------------------------------------------

_BLOCK = 8192  # variates drawn per NumPy call


@dataclass(frozen=True)
class Law:
    """The shape of a positive law; the mean is given when sampling.

    ``kind`` is one of exponential, deterministic, gamma (``param``: CV), erlang (``param``: K),
    lognormal (``param``: CV), hyperexponential (``param``: CV >= 1).
    """

    kind: str = "exponential"
    param: float | None = None

    def __post_init__(self) -> None:
        kinds = ("exponential", "deterministic", "gamma", "erlang", "lognormal",
                 "hyperexponential")
        if self.kind not in kinds:
            raise ValueError(f"law {self.kind!r} is unknown: choose from {', '.join(kinds)}")
        needs = self.kind in ("gamma", "erlang", "lognormal", "hyperexponential")
        if needs and (self.param is None or not self.param > 0):
            raise ValueError(f"law {self.kind!r} needs a parameter > 0 (e.g. {self.kind}:2)")
        if self.kind == "erlang" and float(self.param) != int(self.param):
            raise ValueError(f"erlang:{self.param} is invalid: K must be an integer")
        if self.kind == "hyperexponential" and self.param < 1:
            raise ValueError(f"hyperexponential:{self.param} is invalid: CV must be >= 1")

    @property
    def cv(self) -> float:
        """Coefficient of variation."""
        if self.kind == "exponential":
            return 1.0
        if self.kind == "deterministic":
            return 0.0
        if self.kind == "erlang":
            return 1.0 / math.sqrt(self.param)
        return float(self.param)

    def __str__(self) -> str:
        if self.param is None:
            return self.kind
        p = int(self.param) if float(self.param).is_integer() else self.param
        return f"{self.kind}:{p}"

    def sampler(self, rng: np.random.Generator, mean: float):
        """A function of no argument returning one variate of mean ``mean`` (``inf`` for an
        infinite mean), drawn from blocks of ``_BLOCK`` vectorized draws."""
        if not math.isfinite(mean):
            return lambda: math.inf
        if self.kind == "deterministic":
            value = float(mean)
            return lambda: value
        k = self.kind
        if k == "exponential":
            def block():
                return rng.exponential(mean, _BLOCK)
        elif k in ("gamma", "erlang"):
            shape = float(self.param) if k == "erlang" else 1.0 / float(self.param) ** 2

            def block():
                return rng.gamma(shape, mean / shape, _BLOCK)
        elif k == "lognormal":
            s2 = math.log1p(float(self.param) ** 2)
            mu, sigma = math.log(mean) - s2 / 2, math.sqrt(s2)

            def block():
                return rng.lognormal(mu, sigma, _BLOCK)
        else:  # hyperexponential, balanced means: p / r1 = (1 - p) / r2
            c2 = float(self.param) ** 2
            p = 0.5 * (1.0 + math.sqrt((c2 - 1.0) / (c2 + 1.0)))
            m1, m2 = mean / (2 * p), mean / (2 * (1 - p))

            def block():
                first = rng.random(_BLOCK) < p
                return rng.exponential(1.0, _BLOCK) * np.where(first, m1, m2)

        def gen():
            while True:
                yield from block().tolist()
        return gen().__next__


def parse_law(text: str) -> Law:
    """``"lognormal:2"`` -> ``Law("lognormal", 2.0)``; also the bare names and ``exp``, ``det``."""
    name, _, param = text.strip().partition(":")
    name = {"exp": "exponential", "det": "deterministic", "hyperexp": "hyperexponential"}.get(
        name, name)
    return Law(name, float(param) if param else None)


# ---- the cluster ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cluster:
    """Everything one replication needs (per-class tuples; rates per GPU or per job)."""

    n: int
    M: int
    B: int
    lam: tuple[float, ...]
    theta: tuple[float, ...]
    mu_p: tuple[float, ...]
    mu_m: tuple[float, ...]
    mu_s: tuple[float, ...]
    w: tuple[float, ...]
    x_star: tuple[float, ...]
    qp_star: tuple[float, ...]
    names: tuple[str, ...] = ()
    lp_revenue: float = math.nan

    @property
    def num_classes(self) -> int:
        return len(self.lam)

    def __post_init__(self) -> None:
        if not 0 <= self.M <= self.n:
            raise ValueError(f"M = {self.M} is invalid: must be in [0, n = {self.n}]")
        if self.B < 1:
            raise ValueError(f"B = {self.B} is invalid: must be >= 1")


def cluster_from_model(model, n: int) -> Cluster:
    """A :class:`Cluster` from a jaxqueue model (``jaxqueue.scenarios.load``), planned by the
    bundled fluid LP: ``x*``, ``q_p*`` and ``M = ceil(n sum x*)``."""
    from jaxqueue import fluid

    plan = fluid.solve(model, "bundled")

    def tup(a):
        return tuple(float(v) for v in np.asarray(a, np.float64))

    return Cluster(n=int(n), M=plan.mixed_gpus(int(n)), B=int(model.B), lam=tup(model.lambda_),
                   theta=tup(model.theta), mu_p=tup(model.mu_p), mu_m=tup(model.mu_m),
                   mu_s=tup(model.mu_s), w=tup(model.w), x_star=tup(plan.x),
                   qp_star=tup(plan.q_p), names=tuple(model.class_names),
                   lp_revenue=float(plan.revenue))


# ---- one replication -----------------------------------------------------------------------

# Event kinds.
_PF_DONE, _DEC_SOLO, _DEC_MIXED, _AB_P, _AB_D = 1, 2, 3, 4, 5
# Job states (the index of a job's occupancy integral).
_WAIT_P, _PREFILL, _WAIT_D, _MIXED, _SOLO, _GONE = 0, 1, 2, 3, 4, 5
_LEVELS = ("q_p", "x", "q_d", "y_m", "y_s")


@dataclass
class Replication:
    """One replication's statistics over the window (per-class arrays; see :func:`run_one`)."""

    window: float
    arrivals: np.ndarray
    prefill_done: np.ndarray
    completed: np.ndarray        # decode completions
    completed_mixed: np.ndarray
    abandon_prefill: np.ndarray
    abandon_decode: np.ndarray
    levels: dict[str, np.ndarray]  # mean occupancy per GPU of each level, per class
    revenue_counted: float
    revenue_integral: float
    ttft: list[np.ndarray]       # per class, the TTFT samples (seconds)
    e2e: list[np.ndarray]        # per class, the E2E samples (seconds)
    decode_started: np.ndarray   # decodes started in the window
    decode_started_mixed: np.ndarray  # of which on a mixed slot
    events: int                  # events processed, warm-up included (stale timers excluded)
    wall: float

    @property
    def abandonment(self) -> np.ndarray:
        """Share of the class's arrivals in the window that abandoned in the window."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.abandon_prefill + self.abandon_decode) / self.arrivals


def run_one(cl: Cluster, *, horizon: float, warmup: float, rng: np.random.Generator,
            patience: Law = Law(), prefill: Law = Law(), decode: Law = Law(),
            ttft: bool = True, e2e: bool = True) -> Replication:
    """Simulates one replication of ``cl`` from an empty system over ``[0, horizon]``;
    ``ttft`` and ``e2e`` record those latency samples."""
    if not 0 <= warmup < horizon:
        raise ValueError(f"need 0 <= warmup < horizon, got warmup={warmup}, horizon={horizon}")
    t_wall = time.perf_counter()
    n_cls = cl.num_classes
    n, M, B = cl.n, cl.M, cl.B
    rate = n * sum(cl.lam)
    classes = range(n_cls)

    # Random streams, one per purpose and class (a block of draws at a time).
    inter = Law().sampler(rng, 1.0 / rate) if rate > 0 else (lambda: math.inf)
    if n_cls == 1:
        def pick():
            return 0
    else:
        probs = np.asarray(cl.lam, np.float64) / sum(cl.lam)

        def _picks():
            while True:
                yield from rng.choice(n_cls, size=_BLOCK, p=probs).tolist()
        pick = _picks().__next__
    pf_time = [prefill.sampler(rng, 1.0 / cl.mu_p[i]) for i in classes]
    work = [decode.sampler(rng, 1.0) for i in classes]
    pat = [patience.sampler(rng, 1.0 / cl.theta[i] if cl.theta[i] > 0 else math.inf)
           for i in classes]
    can_abandon = [cl.theta[i] > 0 for i in classes]
    inv_mu_s = [1.0 / v for v in cl.mu_s]
    inv_mu_m = [1.0 / v for v in cl.mu_m]
    # The gate's keys: X_i / x_i* (the deviation's order), Q_p,i - n q_p,i* (its tie-break).
    inv_x = [1.0 / v if v > 0 else math.inf for v in cl.x_star]
    nqp = [n * v for v in cl.qp_star]

    heap: list = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    t_arr = inter()
    pf_free, solo_free, mix_free = M, (n - M) * B, M * (B - 1)
    X = [0] * n_cls
    Qp = [0] * n_cls
    Qp_tot = 0
    pq = [deque() for _ in classes]
    dq: deque = deque()
    Qd_tot = 0
    acc = [[0.0] * n_cls for _ in range(5)]  # occupancy integrals over the window, by state
    arrivals = [0] * n_cls
    pf_done = [0] * n_cls
    done = [0] * n_cls
    done_m = [0] * n_cls
    ab_p = [0] * n_cls
    ab_d = [0] * n_cls
    samples: list[list[float]] = [[] for _ in classes]
    ends: list[list[float]] = [[] for _ in classes]
    dec_start = [0] * n_cls
    dec_start_m = [0] * n_cls
    events = 0
    W = warmup
    inf = math.inf

    while True:
        if heap and heap[0][0] < t_arr:
            t, _, kind, job = pop(heap)
        else:
            t, kind = t_arr, 0
        if t > horizon:
            break
        if kind == 0:  # arrival
            t_arr = t + inter()
            events += 1
            c = pick()
            if t >= W:
                arrivals[c] += 1
            if pf_free:  # an idle slot means no request waits: the gate admits this one
                pf_free -= 1
                X[c] += 1
                seq += 1
                push(heap, (t + pf_time[c](), seq, _PF_DONE, [c, t, _PREFILL, t]))
            else:
                job = [c, t, _WAIT_P, t]
                pq[c].append(job)
                Qp[c] += 1
                Qp_tot += 1
                if can_abandon[c]:
                    seq += 1
                    push(heap, (t + pat[c](), seq, _AB_P, job))
            continue
        c = job[0]
        s = job[2]
        if kind == _AB_P or kind == _AB_D:
            if s != (_WAIT_P if kind == _AB_P else _WAIT_D):
                continue  # stale: the request was served before its deadline
            events += 1
            t0 = job[3]
            lo = t0 if t0 > W else W
            if t > lo:
                acc[s][c] += t - lo
            job[2] = _GONE
            if kind == _AB_P:
                Qp[c] -= 1
                Qp_tot -= 1
                if t >= W:
                    ab_p[c] += 1
            else:
                Qd_tot -= 1
                if t >= W:
                    ab_d[c] += 1
            continue
        events += 1
        # A service ends: close the job's integral of its state.
        t0 = job[3]
        lo = t0 if t0 > W else W
        if t > lo:
            acc[s][c] += t - lo
        if kind == _PF_DONE:
            X[c] -= 1
            if t >= W:
                pf_done[c] += 1
                if ttft:
                    samples[c].append(t - job[1])
            # Router: a free solo slot, else a free mixed slot, else the decode buffer.
            job[3] = t
            if solo_free:
                solo_free -= 1
                job[2] = _SOLO
                seq += 1
                push(heap, (t + work[c]() * inv_mu_s[c], seq, _DEC_SOLO, job))
                if t >= W:
                    dec_start[c] += 1
            elif mix_free:
                mix_free -= 1
                job[2] = _MIXED
                seq += 1
                push(heap, (t + work[c]() * inv_mu_m[c], seq, _DEC_MIXED, job))
                if t >= W:
                    dec_start[c] += 1
                    dec_start_m[c] += 1
            else:
                job[2] = _WAIT_D
                dq.append(job)
                Qd_tot += 1
                if can_abandon[c]:
                    seq += 1
                    push(heap, (t + pat[c](), seq, _AB_D, job))
            # Gate: the freed prefill slot takes the head of the class of smallest deviation.
            if Qp_tot:
                best = -1
                bd = btb = 0.0
                for i in classes:
                    if Qp[i]:
                        d = X[i] * inv_x[i] if X[i] else (0.0 if inv_x[i] < inf else inf)
                        tb = Qp[i] - nqp[i]
                        if best < 0 or d < bd or (d == bd and tb > btb):
                            best, bd, btb = i, d, tb
                q = pq[best]
                nxt = q.popleft()
                while nxt[2] != _WAIT_P:  # requests that abandoned stay in the deque, dead
                    nxt = q.popleft()
                Qp[best] -= 1
                Qp_tot -= 1
                t0 = nxt[3]
                lo = t0 if t0 > W else W
                if t > lo:
                    acc[_WAIT_P][best] += t - lo
                nxt[2] = _PREFILL
                nxt[3] = t
                X[best] += 1
                seq += 1
                push(heap, (t + pf_time[best](), seq, _PF_DONE, nxt))
            else:
                pf_free += 1
            continue
        # A decode ends (solo or mixed): revenue, then the freed slot takes the buffer's head.
        job[2] = _GONE
        if t >= W:
            done[c] += 1
            if kind == _DEC_MIXED:
                done_m[c] += 1
        if e2e and job[3] >= W:  # its decode started in the window
            ends[c].append(t - job[1])
        if Qd_tot:
            nxt = dq.popleft()
            while nxt[2] != _WAIT_D:
                nxt = dq.popleft()
            Qd_tot -= 1
            k = nxt[0]
            t0 = nxt[3]
            lo = t0 if t0 > W else W
            if t > lo:
                acc[_WAIT_D][k] += t - lo
            nxt[3] = t
            seq += 1
            if t >= W:
                dec_start[k] += 1
                dec_start_m[k] += kind == _DEC_MIXED
            if kind == _DEC_SOLO:
                nxt[2] = _SOLO
                push(heap, (t + work[k]() * inv_mu_s[k], seq, _DEC_SOLO, nxt))
            else:
                nxt[2] = _MIXED
                push(heap, (t + work[k]() * inv_mu_m[k], seq, _DEC_MIXED, nxt))
        elif kind == _DEC_SOLO:
            solo_free += 1
        else:
            mix_free += 1

    # Close the integrals of the requests present at the horizon: those in service have one
    # (valid) completion event each in the heap; those waiting are the live entries of the
    # buffers.
    present = [e[3] for e in heap if e[2] in (_PF_DONE, _DEC_SOLO, _DEC_MIXED)]
    if e2e:  # decodes started in the window and still running: their scheduled ends
        for e in heap:
            if e[2] in (_DEC_SOLO, _DEC_MIXED) and e[3][3] >= W:
                ends[e[3][0]].append(e[0] - e[3][1])
    present += [j for q in pq for j in q if j[2] == _WAIT_P]
    present += [j for j in dq if j[2] == _WAIT_D]
    for job in present:
        t0 = job[3]
        lo = t0 if t0 > W else W
        if horizon > lo:
            acc[job[2]][job[0]] += horizon - lo

    T = horizon - warmup
    levels = {name: np.asarray(acc[k], np.float64) / (T * n) for k, name in enumerate(_LEVELS)}
    w = np.asarray(cl.w, np.float64)
    done_a = np.asarray(done, np.int64)
    rev_int = float(w @ (np.asarray(cl.mu_m) * levels["y_m"] + np.asarray(cl.mu_s)
                         * levels["y_s"]))
    return Replication(
        window=T, arrivals=np.asarray(arrivals, np.int64),
        prefill_done=np.asarray(pf_done, np.int64), completed=done_a,
        completed_mixed=np.asarray(done_m, np.int64), abandon_prefill=np.asarray(ab_p, np.int64),
        abandon_decode=np.asarray(ab_d, np.int64), levels=levels,
        revenue_counted=float(w @ done_a) / (T * n), revenue_integral=rev_int,
        ttft=[np.asarray(v, np.float64) for v in samples],
        e2e=[np.asarray(v, np.float64) for v in ends],
        decode_started=np.asarray(dec_start, np.int64),
        decode_started_mixed=np.asarray(dec_start_m, np.int64), events=events,
        wall=time.perf_counter() - t_wall)


# ---- replications ----------------------------------------------------------------------------

def mean_ci(values, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and the half-width of the Student-t interval (NaN for one value)."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    r = v.shape[0]
    mean = v.mean(axis=0)
    if r < 2:
        return mean, np.full_like(mean, np.nan)
    half = stats.t.ppf(0.5 + level / 2, r - 1) * v.std(axis=0, ddof=1) / math.sqrt(r)
    return mean, half


@dataclass
class Result:
    """Replications of one configuration (see :func:`replicate`)."""

    cluster: Cluster
    reps: list[Replication]
    horizon: float
    warmup: float
    laws: dict[str, str] = field(default_factory=dict)

    def per_rep(self, name: str) -> np.ndarray:
        """A statistic of each replication: an attribute name, ``abandonment`` or a level."""
        if name in _LEVELS:
            return np.stack([r.levels[name] for r in self.reps])
        return np.stack([np.asarray(getattr(r, name), np.float64) for r in self.reps])

    @property
    def events(self) -> int:
        return sum(r.events for r in self.reps)

    @property
    def wall(self) -> float:
        return sum(r.wall for r in self.reps)

    def ttft_quantiles(self, qs=(0.5, 0.9, 0.99), what: str = "ttft") -> dict[str, list[float]]:
        """Quantiles of the pooled TTFT samples (``what="e2e"``: E2E samples), per class and
        all together (``"all"``)."""
        out = {}
        per_class = [np.concatenate([getattr(r, what)[i] for r in self.reps])
                     for i in range(self.cluster.num_classes)]
        names = self.cluster.names or tuple(f"class-{i + 1}" for i in range(len(per_class)))
        for name, v in [*zip(names, per_class, strict=True), ("all", np.concatenate(per_class))]:
            out[name] = [float(np.quantile(v, q)) if v.size else math.nan for q in qs]
        return out

    def summary(self) -> dict:
        """Means and 95% t-intervals of the headline statistics (JSON-ready)."""
        def pack(name):
            m, h = mean_ci(self.per_rep(name))
            if np.ndim(m) == 0:
                return {"mean": float(m), "ci95": float(h)}
            return [{"mean": float(a), "ci95": float(b)} for a, b in zip(m, h, strict=True)]

        n, T = self.cluster.n, self.horizon - self.warmup
        ab_rate = {k: pack_rate(self, k, n, T) for k in ("abandon_prefill", "abandon_decode")}
        return {
            "n": n, "M": self.cluster.M, "replications": len(self.reps),
            "horizon": self.horizon, "warmup": self.warmup, "laws": self.laws,
            "lp_revenue": self.cluster.lp_revenue,
            "revenue_integral": pack("revenue_integral"),
            "revenue_counted": pack("revenue_counted"),
            "abandonment": pack("abandonment"),
            "abandon_rate_per_gpu": ab_rate,
            "levels_per_gpu": {k: pack(k) for k in _LEVELS},
            "ttft_quantiles": {"q": [0.5, 0.9, 0.99], **self.ttft_quantiles()},
            "e2e_quantiles": {"q": [0.5, 0.9, 0.99], **self.ttft_quantiles(what="e2e")},
            "events": self.events, "wall_seconds": self.wall,
            "events_per_second": self.events / self.wall if self.wall > 0 else math.nan,
        }


def pack_rate(res: Result, name: str, n: int, T: float):
    m, h = mean_ci(res.per_rep(name) / (n * T))
    return [{"mean": float(a), "ci95": float(b)} for a, b in zip(m, h, strict=True)]


def replicate(cl: Cluster, *, reps: int, horizon: float, warmup: float, seed: int = 0,
              patience: Law = Law(), prefill: Law = Law(), decode: Law = Law(),
              ttft: bool = True, e2e: bool = True) -> Result:
    """``reps`` independent replications (streams ``SeedSequence(seed).spawn(reps)``)."""
    children = np.random.SeedSequence(seed).spawn(reps)
    out = [run_one(cl, horizon=horizon, warmup=warmup, rng=np.random.default_rng(s),
                   patience=patience, prefill=prefill, decode=decode, ttft=ttft, e2e=e2e)
           for s in children]
    return Result(cl, out, horizon, warmup,
                  {"patience": str(patience), "prefill": str(prefill), "decode": str(decode)})


# ---- command line ----------------------------------------------------------------------------

def main(argv=None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxqueue import scenarios

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", nargs="?", default="paper-qwen8b")
    p.add_argument("--gpus", type=int, default=20)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--horizon", type=float, default=2000.0)
    p.add_argument("--warmup", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=parse_law, default=Law(), help="law, e.g. lognormal:2")
    p.add_argument("--prefill", type=parse_law, default=Law(), help="law, e.g. deterministic")
    p.add_argument("--decode", type=parse_law, default=Law(), help="law, e.g. erlang:20")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = p.parse_args(argv)
    cl = cluster_from_model(scenarios.load(a.scenario), a.gpus)
    res = replicate(cl, reps=a.reps, horizon=a.horizon, warmup=a.warmup, seed=a.seed,
                    patience=a.patience, prefill=a.prefill, decode=a.decode)
    s = res.summary()
    if a.json:
        print(json.dumps(s, indent=2))
        return
    ri, rc = s["revenue_integral"], s["revenue_counted"]
    print(f"{a.scenario}: n = {cl.n}, M = {cl.M} mixed, {a.reps} reps x {a.horizon:g} s "
          f"(warm-up {a.warmup:g} s); laws {s['laws']}")
    print(f"revenue per GPU: integral {ri['mean']:.2f} +- {ri['ci95']:.2f}, counted "
          f"{rc['mean']:.2f} +- {rc['ci95']:.2f} (LP {cl.lp_revenue:.2f})")
    names = cl.names or tuple(f"class-{i + 1}" for i in range(cl.num_classes))
    for i, name in enumerate(names):
        lv = {k: s["levels_per_gpu"][k][i]["mean"] for k in _LEVELS}
        print(f"  {name}: abandon {s['abandonment'][i]['mean']:.4f}, "
              + ", ".join(f"{k} {v:.4f}" for k, v in lv.items()))
    q = s["ttft_quantiles"]
    print("TTFT quantiles (0.5, 0.9, 0.99): " + "; ".join(
        f"{k} " + ", ".join(f"{v:.3f}" for v in q[k]) for k in (*names, "all")))
    q = s["e2e_quantiles"]
    print("E2E quantiles (0.5, 0.9, 0.99): " + "; ".join(
        f"{k} " + ", ".join(f"{v:.3g}" for v in q[k]) for k in (*names, "all")))
    print(f"{s['events']:,} events in {s['wall_seconds']:.1f} s: "
          f"{s['events_per_second']:.3g} events/s")


if __name__ == "__main__":
    main()
