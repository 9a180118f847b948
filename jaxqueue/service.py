"""Phase-type (Coxian) service laws for prefill and decode times.

The paper's model serves every job in an exponential time: a class-i prefill at rate
``mu_p,i``, a decode at ``mu_m,i`` on a mixed GPU and ``mu_s,i`` on a solo GPU (Eq. 4). Real
prefill and decode times are far less variable than that (a fixed number of iterations), or
more (a mixture of lengths within a class). A :class:`Service` gives each class a *Coxian*
shape for its prefill time and for its decode time, with unit mean, so the chain stays a
continuous-time Markov chain: it only needs to count the jobs of each class in each phase.

**A Coxian law of unit mean.** Phases ``k = 1..K`` with rates ``r_k`` and continuation
probabilities ``p_k``: a service starts in phase 1; phase k lasts an exponential time of rate
``r_k``, after which the service moves to phase k+1 with probability ``p_k`` and ends otherwise
(``p_K = 0``). On the engine a class-i phase-k job runs at ``mu_i * r_ik``, with ``mu_i`` the
class's mean rate for where it is served (``mu_p,i``, ``mu_m,i`` or ``mu_s,i``): the mean service
time stays ``1 / mu_i``, so the fluid LPs, which see only means, plan as before. A class with
fewer phases than the longest one is padded with phases it never enters (``p = 0`` at its own
last phase). Moments: with ``a_k = p_1 ... p_{k-1}`` the probability of reaching phase k, the
mean is ``sum_k a_k / r_k``, and in general ``E[S^n] = n! alpha (-T)^-n 1`` for the phase-type
representation ``alpha = e_1``, ``T_kk = -r_k``, ``T_k,k+1 = r_k p_k`` (:func:`moments`).

Laws (``law``):

- ``"exponential"``: one phase of rate 1 (the paper's model).
- ``"erlang"``: k phases of rate k each (coefficient of variation ``1 / sqrt(k)``).
- ``"fit"``: the two-moment fit of Tijms (A First Course in Stochastic Models, Wiley 2003,
  Sec. 5.9) to a coefficient of variation ``cv`` (:func:`two_moment`):

  * ``cv < 1``: with k the integer where ``1/k <= cv^2 < 1/(k-1)``, the mixture of an Erlang
    with k-1 phases (probability q) and one with k phases (probability 1 - q), every phase at
    the same rate ``k - q``, where ``q = (k cv^2 - sqrt(k (1 + cv^2) - k^2 cv^2)) / (1 + cv^2)``.
    It is the Coxian with k phases of that rate whose phases 1..k-2 always continue and whose
    phase k-1 continues with probability ``1 - q``. ``cv^2 = 1/k`` gives the Erlang-k.
  * ``cv = 1``: the exponential law.
  * ``cv > 1``: the hyperexponential law with two phases of balanced means (each phase
    contributes half of the mean): with probability ``a = (1 + sqrt((cv^2 - 1)/(cv^2 + 1)))/2``
    an exponential time of rate ``2a``, else one of rate ``2(1 - a)``. An H2 with probabilities
    ``(a, 1 - a)`` and rates ``mu_1 >= mu_2`` is the Coxian-2 with rates ``(mu_1, mu_2)`` and
    ``p_1 = (1 - a)(mu_1 - mu_2) / mu_1`` (:func:`h2_to_coxian`): the Coxian's transform
    ``mu_1/(s + mu_1) [(1 - p_1) + p_1 mu_2/(s + mu_2)]``, split into partial fractions, has
    the weight ``p_1 mu_1 / (mu_1 - mu_2)`` on ``mu_2/(s + mu_2)``, which is ``1 - a`` exactly
    then, and the rest, ``a``, on ``mu_1/(s + mu_1)``.

- ``"samples"`` (``law = "fit"`` with ``samples`` in a scenario file): a law fitted to
  measured times of each class, rescaled to unit mean (:func:`fit_samples`). With a sample
  coefficient of variation above 1 and a third moment an H2 can match (``m_3 > 1.5 m_2^2`` for
  the unit-mean moments), the H2 matching the first three moments (Prony's method: the two
  phases' means are the roots of ``x^2 - s x + q``, with s and q from the moments divided by
  n!), as its Coxian-2; otherwise the two-moment fit above to the sample's cv.
- ``"coxian"``: given rates and continuation probabilities, rescaled to unit mean.

Fits needing more than :data:`MAX_PHASES` phases (``cv < 0.1``) are refused: each phase adds
events to every step of the engine.

Where the law acts: the pooled engine (:class:`jaxqueue.policies.pooled.Pooled`, the
Gate-and-Route, Prioritize-and-Route and FG-SP policies and the ``gated`` family) keeps the
number of class-i jobs in each phase of prefill, mixed decode and solo decode, and each phase
change is an event of the chain. Systems that do not are refused by :func:`check_supported`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from .patience import per_class

__all__ = ["LAWS", "MAX_PHASES", "Coxian", "Service", "check_supported", "coxian", "erlang",
           "exponential", "fit", "fit_samples", "h2_to_coxian", "moments", "two_moment"]

#: The laws a :class:`Coxian` can be built from (``"samples"``: fitted to measured times).
LAWS = ("exponential", "erlang", "fit", "samples", "coxian")
#: The most phases a law may have (``cv >= 1 / sqrt(MAX_PHASES)`` for a fit).
MAX_PHASES = 100


class Coxian(eqx.Module):
    """One Coxian shape of unit mean per class (see the module docstring).

    Attributes:
        law: how it was made, one of :data:`LAWS` (static).
        rates: phase rates ``r[i, k]``, relative to the class's mean rate (shape ``(I, K)``).
        cont: continuation probabilities ``p[i, k]``; ``p[i, K-1] = 0`` (shape ``(I, K)``).
        cv: the coefficient of variation of each class's law (the one asked for a fit).
    """

    law: str = eqx.field(static=True)
    rates: Float[Array, "I K"]
    cont: Float[Array, "I K"]
    cv: Float[Array, " I"]

    @property
    def phases(self) -> int:
        """K, the number of phases (static: it fixes the engine's event layout)."""
        return int(np.shape(self.rates)[1])

    @property
    def exponential(self) -> bool:
        """Whether this is the exponential law (one phase)."""
        return self.phases == 1

    def _reach(self) -> np.ndarray:
        """The probability that a class-i service enters phase k (host values), ``(I, K)``."""
        cont = np.asarray(self.cont, np.float64)
        return np.cumprod(np.concatenate([np.ones((cont.shape[0], 1)), cont[:, :-1]], axis=1),
                          axis=1)

    def class_phases(self) -> np.ndarray:
        """The phases each class can enter (host values), ``(I,)``."""
        return np.sum(self._reach() > 0, axis=1).astype(int)

    def mean_phases(self) -> np.ndarray:
        """The expected number of phases a class-i service passes through (host values):
        the events one service costs the engine, ``(I,)``."""
        return self._reach().sum(axis=1)

    def describe(self) -> dict[str, Any]:
        """``{law, phases, cv}`` (per class) for reports."""
        return {"law": self.law, "phases": self.class_phases().tolist(),
                "cv": [float(c) for c in np.asarray(self.cv, np.float64)]}

    def to_table(self) -> dict[str, Any]:
        """The scenario file's inline table for this law (inverse of :func:`make`). A law fitted
        to samples is written as its Coxian: the samples are not kept, only the fit."""
        if self.law == "exponential":
            return {"law": "exponential"}
        if self.law == "erlang":
            return {"law": "erlang", "phases": self.class_phases().tolist()}
        if self.law == "fit":
            return {"law": "fit", "cv": [float(c) for c in np.asarray(self.cv, np.float64)]}
        rates, cont = np.asarray(self.rates, np.float64), np.asarray(self.cont, np.float64)
        used = self.class_phases()
        return {"law": "coxian",
                "rates": [rates[i, :k].tolist() for i, k in enumerate(used)],
                "continue": [cont[i, :k].tolist() for i, k in enumerate(used)]}


class Service(eqx.Module):
    """The service laws of every class: prefill, and decode (the same shape on mixed and on
    solo GPUs, at their own mean rates). ``None`` on a side is the exponential law of the
    paper, kept as plain counts by the engine (no phases, no extra events).

    Attributes:
        prefill: the prefill time's Coxian shape, or None.
        decode: the decode time's Coxian shape, or None.
    """

    prefill: Coxian | None = None
    decode: Coxian | None = None

    @classmethod
    def make(cls, num_classes: int, *, prefill: Any = None, decode: Any = None) -> Service:
        """A checked service law for ``num_classes`` classes. Each side is None (exponential,
        no phases), a :class:`Coxian`, or a table as in a scenario file (``{"law": "erlang",
        "phases": 4}``, see :func:`make`); errors name the field and its allowed range."""
        sides = {}
        for side, value in (("prefill", prefill), ("decode", decode)):
            field = f"service.{side}"
            if value is None or isinstance(value, Coxian):
                law = value
            elif isinstance(value, Mapping):
                law = make(value, num_classes, field=field)
            else:
                raise ValueError(f"{field} = {value!r} is invalid: must be a table such as "
                                 "{law = \"erlang\", phases = 4}")
            if law is not None and np.shape(law.rates)[0] != num_classes:
                raise ValueError(f"{field} has {np.shape(law.rates)[0]} classes for "
                                 f"{num_classes}: make it for every class")
            sides[side] = law
        return cls(**sides)

    @property
    def exponential(self) -> bool:
        """Whether both sides are exponential (None or one phase)."""
        return all(law is None or law.exponential for law in (self.prefill, self.decode))

    def named(self, every: bool = False) -> str:
        """The phase-type sides as a scenario file names them, with the verb:
        ``"service.prefill.law = 'erlang' (4 phases) is"`` (``every``: one-phase sides too)."""
        sides = [f"service.{side}.law = {law.law!r} ({law.phases} phases)"
                 for side, law in (("prefill", self.prefill), ("decode", self.decode))
                 if law is not None and (every or not law.exponential)]
        return " and ".join(sides) + (" are" if len(sides) > 1 else " is")

    def describe(self) -> dict[str, Any]:
        """``{"prefill": ..., "decode": ...}``, each :meth:`Coxian.describe` or
        ``{"law": "exponential"}``, for reports."""
        return {side: {"law": "exponential"} if law is None else law.describe()
                for side, law in (("prefill", self.prefill), ("decode", self.decode))}

    def to_table(self) -> dict[str, Any]:
        """The scenario file's ``[service]`` table (sides left exponential are omitted)."""
        return {side: law.to_table() for side, law in (("prefill", self.prefill),
                                                        ("decode", self.decode))
                if law is not None}

    def steps_per_job(self, weights: np.ndarray) -> float:
        """Events a job costs the engine on average (arrival, prefill phases, decode phases),
        classes weighted by ``weights`` (e.g. their arrival rates)."""
        w = np.asarray(weights, np.float64)
        w = w / w.sum() if w.sum() > 0 else np.full(w.shape, 1.0 / w.size)
        phases = [1.0 if law is None else float(w @ law.mean_phases())
                  for law in (self.prefill, self.decode)]
        return 1.0 + sum(phases)


def check_supported(service: Service | None, where: str) -> None:
    """Raises when a system that cannot follow the phases of a service (``where``) is given a
    phase-type law: it would serve every job in an exponential time instead."""
    if service is None or service.exponential:
        return
    raise ValueError(
        f"{service.named()} not supported by {where}, which serves every job in an "
        "exponential time; "
        "phase-type service laws run on the pooled engine (gate-and-route, "
        "prioritize-and-route, fg-sp and the gated family) with exact decisions and without "
        "latency counters of a phase-type prefill, or use no [service] table")


# ---- the laws -----------------------------------------------------------------------------
def _checked_phases(rates: np.ndarray, field: str) -> None:
    if rates.shape[1] > MAX_PHASES:
        raise ValueError(f"{field} has {rates.shape[1]} phases: must have at most {MAX_PHASES} "
                         "(each phase adds events to every step)")


def _stack(rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (rates, cont) rows padded to the longest: padded phases have rate 1 and are
    never entered (the continuation probability is 0 at each class's own last phase)."""
    width = max(r.size for r, _ in rows)
    rates = np.ones((len(rows), width))
    cont = np.zeros((len(rows), width))
    for i, (r, p) in enumerate(rows):
        rates[i, :r.size] = r
        cont[i, :p.size] = p
        cont[i, p.size - 1:] = 0.0
    return rates, cont


def _law(law: str, rows, cv, field: str) -> Coxian:
    rates, cont = _stack(rows)
    _checked_phases(rates, field)
    return Coxian(law=law, rates=rates, cont=cont, cv=np.asarray(cv, np.float64))


def exponential(num_classes: int) -> Coxian:
    """The exponential law as a one-phase Coxian (the engine then keeps phase counts, whose
    every path is the paper's model's: a check of the phase machinery)."""
    return _law("exponential", [(np.ones(1), np.zeros(1))] * num_classes,
                np.ones(num_classes), "service")


def erlang(phases, num_classes: int, *, field: str = "service") -> Coxian:
    """Erlang laws of unit mean: ``phases`` (one integer, or one per class) phases of rate
    ``phases`` each."""
    k = per_class(f"{field}.phases", phases, num_classes)
    if not np.all(np.isfinite(k) & (k == np.round(k)) & (k >= 1) & (k <= MAX_PHASES)):
        raise ValueError(f"{field}.phases = {np.asarray(phases).tolist()!r} is invalid: must be "
                         f"integers in [1, {MAX_PHASES}]")
    k = k.astype(int)
    rows = [(np.full(n, float(n)), np.concatenate([np.ones(n - 1), [0.0]])) for n in k]
    return _law("erlang", rows, 1.0 / np.sqrt(k), field)


def two_moment(cv: float) -> tuple[np.ndarray, np.ndarray]:
    """The Coxian (rates, continuation probabilities) of unit mean and coefficient of variation
    ``cv`` of Tijms' two-moment fit (see the module docstring)."""
    c2 = float(cv) ** 2
    if abs(c2 - 1.0) <= 1e-12:
        return np.ones(1), np.zeros(1)
    if c2 < 1.0:
        # 1/k <= c2 < 1/(k-1); a c2 within round-off of 1/k takes that k (a pure Erlang).
        k = max(2, math.ceil(1.0 / c2 - 1e-9))
        q = (k * c2 - math.sqrt(max(k * (1.0 + c2) - k * k * c2, 0.0))) / (1.0 + c2)
        q = min(max(q, 0.0), 1.0)
        cont = np.concatenate([np.ones(k - 2), [1.0 - q, 0.0]])
        return np.full(k, k - q), cont
    a = 0.5 * (1.0 + math.sqrt((c2 - 1.0) / (c2 + 1.0)))
    return h2_to_coxian(a, 2.0 * a, 2.0 * (1.0 - a))


def h2_to_coxian(a: float, mu1: float, mu2: float) -> tuple[np.ndarray, np.ndarray]:
    """The Coxian-2 (rates, continuation probabilities) equal in law to the hyperexponential
    that is Exp(mu1) with probability ``a`` and Exp(mu2) otherwise (see the module docstring;
    the phases are ordered so that the first is the faster)."""
    if mu1 < mu2:
        a, mu1, mu2 = 1.0 - a, mu2, mu1
    p = (1.0 - a) * (mu1 - mu2) / mu1
    return np.array([mu1, mu2]), np.array([p, 0.0])


def fit(cv, num_classes: int, *, field: str = "service") -> Coxian:
    """Tijms' two-moment fit (:func:`two_moment`) to a coefficient of variation per class
    (one number, or one per class), each in ``[1 / sqrt(MAX_PHASES), inf)``."""
    c = per_class(f"{field}.cv", cv, num_classes)
    low = 1.0 / math.sqrt(MAX_PHASES)
    if not np.all(np.isfinite(c) & (c >= low - 1e-12)):
        raise ValueError(f"{field}.cv = {c.tolist()} is invalid: must be finite and >= {low:g} "
                         f"(a fit below needs more than {MAX_PHASES} phases; cv > 0 always)")
    return _law("fit", [two_moment(v) for v in c], c, field)


def _three_moment_h2(m2: float, m3: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The Coxian-2 of the H2 whose first three moments are ``(1, m2, m3)``, or None where no
    H2 has them. The moments divided by n! are ``t_n = a x_1^n + (1 - a) x_2^n`` (``x_j`` the
    phases' means), so ``t_{n+2} = s t_{n+1} - q t_n`` with ``x_1, x_2`` the roots of
    ``x^2 - s x + q``: two linear equations in s and q from ``t_0 = t_1 = 1``, ``t_2``, ``t_3``."""
    t2, t3 = m2 / 2.0, m3 / 6.0
    if not t2 > 1.0:
        return None
    s = (t3 - t2) / (t2 - 1.0)
    q = s - t2
    disc = s * s - 4.0 * q
    if not (q > 0.0 and s > 0.0 and disc > 0.0):
        return None
    root = math.sqrt(disc)
    big, small = (s + root) / 2.0, (s - root) / 2.0
    a = (big - 1.0) / (big - small)  # the probability of the short phase (mean `small`)
    if not (0.0 < a < 1.0 and small > 0.0):
        return None
    return h2_to_coxian(a, 1.0 / small, 1.0 / big)


def fit_samples(samples: Sequence[Sequence[float]], num_classes: int, *,
                field: str = "service") -> Coxian:
    """Coxian laws fitted to measured times of each class (one list per class), rescaled to
    unit mean: the three-moment H2 (as a Coxian-2) where the samples' cv is above 1 and an H2
    matches their third moment, else the two-moment fit to their cv (see the module
    docstring)."""
    rows = list(samples)
    if len(rows) != num_classes:
        raise ValueError(f"{field}.samples has {len(rows)} lists for {num_classes} classes: "
                         "give one list of service times per class")
    fitted, cvs = [], []
    for i, row in enumerate(rows):
        try:
            x = np.asarray(row, np.float64).ravel()
        except (TypeError, ValueError):
            raise ValueError(f"{field}.samples[{i}] is invalid: must be a list of numbers") \
                from None
        if x.size < 2 or not np.all(np.isfinite(x)) or np.any(x < 0) or x.sum() <= 0:
            raise ValueError(f"{field}.samples[{i}] is invalid: must hold at least two finite "
                             "times >= 0, not all 0")
        y = x / x.mean()
        m2, m3 = float(np.mean(y ** 2)), float(np.mean(y ** 3))
        cv = math.sqrt(max(m2 - 1.0, 0.0))
        law = _three_moment_h2(m2, m3) if cv > 1.0 else None
        if law is None:
            if cv < 1.0 / math.sqrt(MAX_PHASES) - 1e-12:
                raise ValueError(f"{field}.samples[{i}] have a coefficient of variation of "
                                 f"{cv:.3g}: a fit needs cv >= {1 / math.sqrt(MAX_PHASES):g} "
                                 f"(at most {MAX_PHASES} phases); use law = \"erlang\"")
            law = two_moment(cv)
        fitted.append(law)
        cvs.append(cv)
    return _law("samples", fitted, cvs, field)


def coxian(rates, cont, num_classes: int, *, field: str = "service") -> Coxian:
    """A Coxian law from its phase rates and continuation probabilities, one list each per
    class (or one list for every class), rescaled to unit mean. A class's law ends at its
    last phase (its last continuation probability is taken as 0)."""
    def rows_of(name, value):
        v = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
        if v is None or not v:
            raise ValueError(f"{field}.{name} = {value!r} is invalid: must be a list of numbers "
                             "per class (or one list for every class)")
        if all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v):
            v = [v] * num_classes
        if len(v) != num_classes:
            raise ValueError(f"{field}.{name} has {len(v)} lists for {num_classes} classes")
        out = []
        for i, e in enumerate(v):
            ok = isinstance(e, Sequence) and not isinstance(e, str) and len(e) >= 1 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in e)
            if not ok:
                raise ValueError(f"{field}.{name}[{i}] = {e!r} is invalid: must be a non-empty "
                                 "list of numbers")
            out.append(np.asarray(e, np.float64))
        return out

    r_rows, p_rows = rows_of("rates", rates), rows_of("continue", cont)
    rows, cvs = [], []
    for i, (r, p) in enumerate(zip(r_rows, p_rows, strict=True)):
        if r.size != p.size:
            raise ValueError(f"{field}.rates[{i}] and {field}.continue[{i}] have {r.size} and "
                             f"{p.size} phases: give one continuation probability per phase")
        if not np.all(np.isfinite(r) & (r > 0)):
            raise ValueError(f"{field}.rates[{i}] = {r.tolist()} is invalid: must be finite "
                             "and > 0")
        if not np.all(np.isfinite(p) & (p >= 0) & (p <= 1)):
            raise ValueError(f"{field}.continue[{i}] = {p.tolist()} is invalid: must be in "
                             "[0, 1]")
        p = p.copy()
        p[-1] = 0.0
        mean = moments(r, p, 1)[0]
        r = r * mean
        m = moments(r, p, 2)
        rows.append((r, p))
        cvs.append(math.sqrt(max(m[1] - 1.0, 0.0)))
    return _law("coxian", rows, cvs, field)


def moments(rates, cont, count: int = 3) -> np.ndarray:
    """The first ``count`` moments ``E[S^n] = n! alpha (-T)^-n 1`` of the Coxian time with
    phase ``rates`` and continuation probabilities ``cont`` (one class, host float64)."""
    r = np.asarray(rates, np.float64)
    p = np.asarray(cont, np.float64)
    K = r.size
    T = -np.diag(r) + np.diag(r[:-1] * p[:-1], 1) if K > 1 else -np.diag(r)
    v = np.ones(K)
    out = []
    for n in range(1, count + 1):
        v = np.linalg.solve(-T, v)
        out.append(math.factorial(n) * v[0])
    return np.asarray(out)


def make(table: Mapping[str, Any], num_classes: int, *, field: str = "service") -> Coxian:
    """A law from its scenario-file table: ``{law = "exponential"}``, ``{law = "erlang",
    phases = K}``, ``{law = "fit", cv = c}`` or ``{law = "fit", samples = [[...], ...]}``, or
    ``{law = "coxian", rates = [...], continue = [...]}`` (numbers one, or one per class)."""
    keys = {"exponential": set(), "erlang": {"phases"}, "fit": {"cv", "samples"},
            "coxian": {"rates", "continue"}}
    law = table.get("law")
    if law not in keys:
        raise ValueError(f"{field}.law = {law!r} is invalid: must be one of "
                         f"{', '.join(keys)}")
    unknown = sorted(set(table) - keys[law] - {"law"})
    if unknown:
        allowed = ", ".join(sorted(keys[law] | {"law"}))
        raise ValueError(f"{field}.{unknown[0]} is invalid with law = {law!r}: its keys are "
                         f"{allowed}")
    if law == "exponential":
        return exponential(num_classes)
    if law == "erlang":
        if "phases" not in table:
            raise ValueError(f"{field}.phases is missing: law = 'erlang' needs its number of "
                             "phases (an integer, or one per class)")
        return erlang(table["phases"], num_classes, field=field)
    if law == "fit":
        if ("cv" in table) == ("samples" in table):
            raise ValueError(f"{field}: law = 'fit' needs exactly one of cv (the coefficient "
                             "of variation) and samples (measured times, one list per class)")
        if "cv" in table:
            return fit(table["cv"], num_classes, field=field)
        return fit_samples(table["samples"], num_classes, field=field)
    for key in ("rates", "continue"):
        if key not in table:
            raise ValueError(f"{field}.{key} is missing: law = 'coxian' needs rates and "
                             "continue (one list per class)")
    return coxian(table["rates"], table["continue"], num_classes, field=field)
