"""Patience laws beyond the exponential.

The paper's model gives every waiting job an Exp(theta_i) patience. A client with a fixed timeout
has a deterministic one; measured patience is often far more or far less variable than the
exponential. :class:`Patience` describes the law of class i's patience by its *shape*; its mean is
always ``1 / theta_i`` (the model's patience rate), so the fluid LPs, which see only the rates,
plan with the same means whatever the law.

Laws (``law``):

- ``"exponential"``: the model's own law (coefficient of variation 1).
- ``"deterministic"``: exactly ``1 / theta_i`` (a client timeout).
- ``"gamma"``: coefficient of variation ``cv_i`` (shape ``1 / cv_i^2``); Erlang-k is
  ``cv = 1 / sqrt(k)``.
- ``"lognormal"``: coefficient of variation ``cv_i``.
- ``"hyperexponential"``: two exponential phases with balanced means, ``cv_i >= 1``.
- ``"empirical"``: resampled from measured patience times of each class (their shape: the
  samples are rescaled to mean ``1 / theta_i``).

Each draw is the inverse of the law's CDF at one uniform, so a job's patience costs one uniform
whatever the law (the gamma law's inverse is found by Newton's method on the regularized
incomplete gamma function, to float precision).

Where the law acts: a job's patience is drawn when it enters a ring of jobs (the decode buffer,
the prefill buffer of the FCFS gates, and, with a non-exponential law, every waiting place an
engine otherwise counts: the pooled engine's per-class prefill queues of the deviation and
priority gates, the SLI-aware router's per-class prefill queues and per-side decode buffers, and
the per-GPU engine's per-class queues of its gate; one ring per class), and its deadline is
stored with it, so any law is exact there. Waiting places kept as counts abandon at rate
``theta_i`` per job, which is exact only for the exponential law: a system with such a place
refuses any other law (:func:`check_supported`); every system of :mod:`jaxqueue.policies` turns
its counts into rings instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtri
from jaxtyping import Array, Float, Int

__all__ = ["LAWS", "Patience", "abandon_probability", "check_supported", "deadline",
           "per_job"]

LAWS = ("exponential", "deterministic", "gamma", "lognormal", "hyperexponential", "empirical")


class Patience(eqx.Module):
    """The patience law of every class (see the module docstring).

    Attributes:
        law: one of :data:`LAWS` (static).
        cv: coefficient of variation of each class's patience (``gamma``, ``lognormal``,
            ``hyperexponential``; 0 for ``deterministic``, 1 for ``exponential``).
        samples: (``empirical``) each class's sorted samples divided by their mean, padded
            with their largest value to a common length; ``counts`` holds how many are real.
        counts: (``empirical``) the number of samples of each class.
    """

    law: str = eqx.field(static=True)
    cv: Float[Array, " I"]
    samples: Float[Array, "I S"] | None = None
    counts: Int[Array, " I"] | None = None

    @classmethod
    def make(cls, law: str, num_classes: int, *, cv: float | Sequence[float] | None = None,
             samples: Sequence[Sequence[float]] | None = None) -> Patience:
        """A checked law for ``num_classes`` classes; errors name the field and the range."""
        if law not in LAWS:
            raise ValueError(f"patience.law = {law!r} is invalid: must be one of {LAWS}")
        if law == "empirical":
            if cv is not None:
                raise ValueError("patience.cv is invalid with law = 'empirical': the samples "
                                 "give the shape")
            return cls._empirical(samples, num_classes)
        if samples is not None:
            raise ValueError(f"patience.samples is invalid with law = {law!r}: only the "
                             "empirical law takes samples")
        if law in ("exponential", "deterministic"):
            if cv is not None:
                raise ValueError(f"patience.cv is invalid with law = {law!r}: its coefficient "
                                 "of variation is fixed")
            values = np.full(num_classes, 1.0 if law == "exponential" else 0.0)
        else:
            if cv is None:
                raise ValueError(f"patience.cv is missing: law = {law!r} needs the coefficient "
                                 "of variation of each class (a number, or one per class)")
            values = per_class("patience.cv", cv, num_classes)
            hyper = law == "hyperexponential"
            if not np.all(np.isfinite(values) & ((values >= 1.0) if hyper else (values > 0.0))):
                allowed = "finite and >= 1" if hyper else "finite and > 0"
                raise ValueError(f"patience.cv = {values.tolist()} is invalid for law = "
                                 f"{law!r}: must be {allowed}")
        return cls(law=law, cv=values)

    @classmethod
    def _empirical(cls, samples, num_classes: int) -> Patience:
        if samples is None:
            raise ValueError("patience.samples is missing: law = 'empirical' needs measured "
                             "patience times of each class (one list per class)")
        rows = list(samples)
        if len(rows) != num_classes:
            raise ValueError(f"patience.samples has {len(rows)} lists for {num_classes} "
                             "classes: give one list of patience times per class")
        arrays = []
        for i, row in enumerate(rows):
            a = np.asarray(row, np.float64).ravel()
            if a.size < 2 or not np.all(np.isfinite(a)) or np.any(a < 0) or a.sum() <= 0:
                raise ValueError(f"patience.samples[{i}] is invalid: must hold at least two "
                                 "finite times >= 0, not all 0")
            arrays.append(np.sort(a) / a.mean())
        width = max(a.size for a in arrays)
        padded = np.stack([np.pad(a, (0, width - a.size), mode="edge") for a in arrays])
        counts = np.array([a.size for a in arrays], np.int32)
        cv = np.array([a.std() for a in arrays])  # the mean is 1
        return cls(law="empirical", cv=cv, samples=padded, counts=counts)

    @property
    def exponential(self) -> bool:
        return self.law == "exponential"

    def draw(self, u, theta, cls):
        """Class ``cls``'s patience from one uniform ``u`` in [0, 1), with rate ``theta``
        (the class's ``theta_i``; 0: the job never abandons, +inf)."""
        theta = jnp.asarray(theta)
        real = theta.dtype
        u = jnp.asarray(u, real)
        mean = jnp.where(theta > 0, 1.0 / jnp.where(theta > 0, theta, 1.0), jnp.inf)
        cv = jnp.asarray(self.cv, real)[cls]
        if self.law == "exponential":
            unit = -jnp.log1p(-u)
        elif self.law == "deterministic":
            unit = jnp.ones((), real)
        elif self.law == "lognormal":
            s2 = jnp.log1p(cv * cv)
            unit = jnp.exp(jnp.sqrt(s2) * ndtri(u) - 0.5 * s2)
        elif self.law == "hyperexponential":
            # Balanced means (Whitt): phase 1 with probability p at rate 2p, else rate 2(1-p);
            # the uniform left over inside the chosen phase's interval draws its time.
            c2 = cv * cv
            p = 0.5 * (1.0 + jnp.sqrt((c2 - 1.0) / (c2 + 1.0)))
            first = u < p
            v = jnp.where(first, u / p, (u - p) / jnp.maximum(1.0 - p, 1e-30))
            rate = jnp.where(first, 2.0 * p, 2.0 * (1.0 - p))
            unit = -jnp.log1p(-jnp.minimum(v, 1.0 - 1e-7)) / rate
        elif self.law == "gamma":
            unit = _gamma_quantile(u, 1.0 / (cv * cv)) * cv * cv  # mean 1
        else:  # empirical: the sample at index floor(u * count)
            count = jnp.asarray(self.counts)[cls]
            index = jnp.minimum((u * count).astype(jnp.int32), count - 1)
            unit = jnp.asarray(self.samples, real)[cls, index]
        return jnp.where(theta > 0, unit * mean, jnp.inf).astype(real)


def per_class(field: str, value, num: int) -> np.ndarray:
    """``value`` (one number, or one per class) as ``num`` floats; anything else (a string, a
    boolean, the wrong length) is an error naming ``field``."""
    if isinstance(value, (str, bytes, bool)) or (
            isinstance(value, Sequence) and any(isinstance(v, (str, bytes, bool))
                                                for v in value)):
        raise ValueError(f"{field} = {value!r} is invalid: must be a number or one per class")
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} = {value!r} is invalid: must be a number or one per "
                         "class") from None
    if a.ndim == 0:
        return np.full(num, float(a))
    if a.shape != (num,):
        raise ValueError(f"{field} = {a.tolist()} is invalid: must be a number or one per "
                         f"class ({num})")
    return a


#: Terms of the series and of the continued fraction in :func:`_gammainc`.
_GAMMAINC_TERMS = 64


def _gammainc(a, x, terms: int = _GAMMAINC_TERMS):
    """The regularized lower incomplete gamma function P(a, x) with a fixed number of terms:
    the power series P = x^a e^-x / Gamma(a + 1) * sum_k x^k / ((a + 1)...(a + k)) for
    x < a + 1, else 1 - Q with Q's continued fraction (modified Lentz). ``jax.scipy``'s
    ``gammainc`` iterates until every element of the batch has converged: a loop whose stopping
    test reads the whole batch, which with the replications sharded over devices becomes a
    cross-device reduction per iteration (a gamma-patience run over two CPU devices took 50x
    as long as over one). With 64 terms, in float32, it is within 2e-5 of SciPy's for shapes
    0.25-100 at the gamma quantiles of u in [1e-5, 1 - 1e-5], and 1e-3 at shape 400."""
    x = jnp.maximum(x, jnp.asarray(1e-30, x.dtype))
    tiny = jnp.asarray(1e-30, x.dtype)
    log_front = a * jnp.log(x) - x - gammaln(a)

    def series(k, c):
        term, total = c
        term = term * x / (a + k.astype(x.dtype))
        return term, total + term

    one = jnp.ones_like(x)
    _, total = jax.lax.fori_loop(1, terms + 1, series, (one, one))
    lower = jnp.exp(log_front) * total / a

    def fraction(i, c):
        b, front, back, h = c
        i = i.astype(x.dtype)
        an = -i * (i - a)
        b = b + 2.0
        back = an * back + b
        back = 1.0 / jnp.where(jnp.abs(back) < tiny, tiny, back)
        front = b + an / front
        front = jnp.where(jnp.abs(front) < tiny, tiny, front)
        return b, front, back, h * back * front

    b = x + 1.0 - a
    b = jnp.where(jnp.abs(b) < tiny, tiny, b)
    _, _, _, h = jax.lax.fori_loop(1, terms + 1, fraction, (b, 1.0 / tiny * one, 1.0 / b, 1.0 / b))
    return jnp.where(x < a + 1.0, lower, 1.0 - jnp.exp(log_front) * h)


def _gamma_quantile(u, shape, newton: int = 6):
    """The ``u``-quantile of Gamma(shape, 1): Wilson-Hilferty's start (the tails' own forms
    where it fails), then Newton's method on the regularized incomplete gamma function
    (:func:`_gammainc`) in log space (each step clipped to a factor of 10). Measured in
    float32 against SciPy's ``gammaincinv`` for u in [1e-5, 1 - 1e-5]: within 2.5e-4
    (relative) for shapes 0.04-400 (cv 0.05-5); quantiles below 1e-30 (shapes below 0.1,
    lowest u) are returned as 1e-30."""
    z = ndtri(jnp.clip(u, 1e-12, 1.0 - 1e-7))
    c = 1.0 / (9.0 * shape)
    x = shape * jnp.maximum(1.0 - c + z * jnp.sqrt(c), 0.0) ** 3
    # In the lower tail, where Wilson-Hilferty fails, P(a, x) <= x^a / Gamma(a + 1) gives a
    # start below the quantile; below shape 1 the tails' own forms instead (P ~ x^a in the
    # lower tail, Q ~ e^-x in the upper; the split t as in Numerical Recipes' invgammp).
    x = jnp.maximum(x, jnp.exp((jnp.log(u) + gammaln(shape + 1.0)) / shape))
    t = 1.0 - shape * (0.253 + 0.12 * shape)
    small = jnp.where(u < t, (u / t) ** (1.0 / shape),
                      1.0 - jnp.log1p(-(u - t) / (1.0 - t)))
    x = jnp.maximum(jnp.where(shape < 1.0, small, x), 1e-30)
    lg = gammaln(shape)
    for _ in range(newton):
        cdf = _gammainc(shape, x)
        log_pdf = (shape - 1.0) * jnp.log(x) - x - lg
        # d log x = (cdf - u) / (x pdf)
        step = (cdf - u) * jnp.exp(-log_pdf - jnp.log(x))
        x = jnp.maximum(x * jnp.exp(-jnp.clip(step, -2.3, 2.3)), 1e-30)
    return jnp.where(u <= 0.0, 0.0, x)


def per_job(law: Patience | None) -> bool:
    """Whether ``law`` (a model's ``patience``) needs each waiting job's own deadline: any law
    but the exponential (``None`` is the exponential)."""
    return law is not None and not law.exponential


def deadline(model, t, u, cls):
    """The deadline of a class-``cls`` job entering a buffer at ``t``: ``t`` plus its patience
    drawn from the uniform ``u`` under ``model.patience`` (the exponential law when ``None``,
    by the very expression the engines always used, so its paths do not change)."""
    theta = jnp.asarray(model.theta)
    law = getattr(model, "patience", None)
    if not per_job(law):
        # Exp(theta_cls) from one uniform; theta = 0 means the job never abandons.
        return t - jnp.log1p(-u) / theta[cls]
    return t + law.draw(u, theta[cls].astype(t.dtype), cls)


#: The systems that take every law (each keeps its waiting jobs in rings under a
#: non-exponential law), as :func:`check_supported` names them.
SUPPORTED = ("every policy of jaxqueue.policies (gate-and-route, prioritize-and-route, fg-sp and "
             "sli-gate-and-route on the pooled engine; fi-wsp, gi-wsp, gf-wsp, gi-wsp-after, "
             "gate-and-route and fg-sp on the per-GPU engine) and every tunable family (gated, "
             "sli-gated, coupled, coupled-fcfs)")


def check_supported(patience: Patience | None, where: str, counted: bool) -> None:
    """Raises when a system keeps a waiting place as counts (``counted``) and the law is not
    exponential: there, abandonment at rate theta per job is exact only for that law. Every
    system of :mod:`jaxqueue.policies` keeps rings instead under such a law; this guards the
    count-based ones left (the exact chains of :mod:`jaxqueue.theory` and
    :mod:`jaxqueue.exact_gradient`, a user's own system), and the error names the policies that
    take any law."""
    if per_job(patience) and counted:
        raise ValueError(
            f"patience.law = {patience.law!r} is not supported by {where}: it keeps waiting "
            "jobs as per-class counts, where abandonment at rate theta per job is exact only "
            f"for the exponential law; use law = 'exponential', or {SUPPORTED}, which keep "
            "the waiting jobs in rings with their own deadlines")


def abandon_probability(servers: int, arrival_rate: float, service_rate: float, survival,
                        upper: float) -> dict[str, float]:
    """The M/M/N+G queue's exact probabilities of waiting and of abandoning (Baccelli &
    Hebuterne 1981; in the form of Zeltyn & Mandelbaum, Queueing Systems 2005).

    With ``H(x) = int_0^x (1 - G(s)) ds`` (``survival(s) = 1 - G(s)``, vectorized) and
    ``J = int_0^inf exp(lambda H(x) - N mu x) dx``, the offered wait has density
    ``lambda pi exp(lambda H(x) - N mu x)`` on x > 0, where pi is the probability of N - 1 busy
    servers, and ``P(wait > 0) = lambda J / (E + lambda J)``,
    ``P(abandon) = (1 + (lambda - N mu) J) / (E + lambda J)``, with
    ``E = sum_{j<N} (N-1)!/j! (mu/lambda)^(N-1-j)``. ``upper`` bounds the integrals (where the
    integrand is negligible)."""
    from scipy import integrate

    lam, mu, n = float(arrival_rate), float(service_rate), int(servers)
    grid = np.linspace(0.0, float(upper), 200_001)
    surv = np.asarray(survival(grid), np.float64)
    H = integrate.cumulative_trapezoid(surv, grid, initial=0.0)
    f = np.exp(lam * H - n * mu * grid)
    J = integrate.trapezoid(f, grid)
    E = sum(np.exp(math.lgamma(n) - math.lgamma(j + 1)) * (mu / lam) ** (n - 1 - j)
            for j in range(n))
    return {"wait": lam * J / (E + lam * J), "abandon": (1.0 + (lam - n * mu) * J) / (E + lam * J)}

