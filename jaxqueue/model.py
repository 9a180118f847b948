"""The queueing model of Lin, Han, Ding & Zhang (arXiv 2602.02987), Sections 2-3.

A :class:`Model` holds the primitive parameters of one scenario, per GPU: the workload classes
(arrival and patience rates, prompt and output lengths), the GPU profile (iteration-time law,
chunk size, batch size) and the prices. Every service rate of the paper is *derived* from these
as a property (Eq. 4), so nothing can go stale when a parameter changes.

Leaves are arrays. Built from concrete values, they are validated (every error names the field
and its allowed range) and stored as float64 NumPy arrays, so the fluid LPs see the exact inputs.
Inside ``jax.jit``, ``jax.vmap`` or ``jax.grad`` they are traced arrays (float32, or float64
under ``jax.enable_x64``), and the same properties compute the rates there; a model built or
changed with :meth:`Model.replace` to traced values skips validation (it happened at the boundary,
where the concrete values came in). Properties therefore use arithmetic operators only, never
``np.`` or ``jnp.`` functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import ArrayLike, Float, Integer

__all__ = ["Model", "ModelError"]


class ModelError(ValueError):
    """An invalid model parameter: the message names the field, the value and the allowed range."""


def _bad(field: str, value: Any, allowed: str) -> ModelError:
    return ModelError(f"{field} = {value!r} is invalid: must be {allowed}")


def _check_numeric(field: str, value: Any) -> None:
    """Strings (``"300"``) and booleans are not numbers, even where NumPy would convert them."""
    try:
        kind = np.asarray(value).dtype.kind
    except (TypeError, ValueError):
        kind = "O"
    if kind in "USb":
        raise _bad(field, value, "numbers, not strings or booleans")
    if kind == "O":
        for v in np.asarray(value, dtype=object).ravel():
            if isinstance(v, (str, bytes, bool)):
                raise _bad(field, value, "numbers, not strings or booleans")


class Model(eqx.Module):
    """One scenario of the paper's model (per-GPU quantities).

    Attributes:
        lambda_: arrival rate of each class, per GPU, in requests per second (shape ``(I,)``).
        theta: patience rate of each class, per second; a waiting job (in either buffer)
            abandons after an Exp(theta) time (shape ``(I,)``).
        P: mean prompt length of each class, in tokens (shape ``(I,)``).
        D: mean output length of each class, in tokens (shape ``(I,)``).
        alpha: intercept of the mixed-iteration time law ``tau = alpha + beta*C``, in seconds.
        beta: seconds per prefill-chunk token in a mixed iteration.
        gamma: decode tokens per second per stream in solo mode (``1/tau_solo``).
        C: prefill chunk size, in tokens.
        B: batch slots per GPU.
        c_p: price per prompt token.
        c_d: price per output token.
        name: the scenario's name (static).
        class_names: one name per class (static).
        patience: the law of the patience times (:class:`jaxqueue.patience.Patience`, mean
            ``1 / theta_i``); ``None`` is the exponential law of the paper.
        service: the laws of the prefill and decode times (:class:`jaxqueue.service.Service`,
            phase-type shapes of the same means); ``None`` is the exponential law of the paper.
    """

    lambda_: Float[ArrayLike, " I"]
    theta: Float[ArrayLike, " I"]
    P: Float[ArrayLike, " I"]
    D: Float[ArrayLike, " I"]
    alpha: Float[ArrayLike, ""]
    beta: Float[ArrayLike, ""]
    gamma: Float[ArrayLike, ""]
    C: Float[ArrayLike, ""]
    B: Integer[ArrayLike, ""]
    c_p: Float[ArrayLike, ""]
    c_d: Float[ArrayLike, ""]
    name: str = eqx.field(static=True, default="model")
    class_names: tuple[str, ...] = eqx.field(static=True, default=())
    patience: Any = None
    service: Any = None

    def __init__(
        self,
        *,
        lambda_: Sequence[float],
        theta: Sequence[float],
        P: Sequence[float],
        D: Sequence[float],
        alpha: float,
        beta: float,
        gamma: float,
        C: float,
        B: int,
        c_p: float,
        c_d: float,
        name: str = "model",
        class_names: Sequence[str] | None = None,
        patience: Any = None,
        service: Any = None,
    ):
        given = dict(lambda_=lambda_, theta=theta, P=P, D=D, alpha=alpha, beta=beta, gamma=gamma,
                     C=C, B=B, c_p=c_p, c_d=c_d)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(given)):
            self._set_traced(given, name, class_names)
            self.patience = patience
            self.service = service
            return
        arrays = {}
        sizes = {}
        for field, value in (("lambda_", lambda_), ("theta", theta), ("P", P), ("D", D)):
            _check_numeric(field, value)
            try:
                arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
            except (TypeError, ValueError):
                raise _bad(field, value, "a list of numbers") from None
            if arr.ndim != 1:
                raise _bad(field, value, "a one-dimensional list (one value per class)")
            arrays[field] = arr
            sizes[field] = arr.shape[0]
        if len(set(sizes.values())) != 1:
            raise ModelError(
                "class arrays have different lengths: "
                + ", ".join(f"{k} has {v}" for k, v in sizes.items())
                + "; every per-class field needs one value per class"
            )
        num = sizes["lambda_"]
        if num == 0:
            raise ModelError("classes is empty: a model needs at least one class")
        for field, arr in arrays.items():
            if not np.all(np.isfinite(arr)):
                raise _bad(field, arr.tolist(), "finite")
        if np.any(arrays["lambda_"] < 0):
            raise _bad("lambda_", arrays["lambda_"].tolist(), ">= 0")
        if np.any(arrays["theta"] < 0):
            raise _bad("theta", arrays["theta"].tolist(), ">= 0")
        if np.any(arrays["P"] <= 0):
            raise _bad("P", arrays["P"].tolist(), "> 0")
        if np.any(arrays["D"] <= 0):
            raise _bad("D", arrays["D"].tolist(), "> 0")
        scalars = {}
        for field, value, low, strict in (
            ("alpha", alpha, 0.0, False),
            ("beta", beta, 0.0, False),
            ("gamma", gamma, 0.0, True),
            ("C", C, 0.0, True),
            ("c_p", c_p, 0.0, False),
            ("c_d", c_d, 0.0, False),
        ):
            _check_numeric(field, value)
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise _bad(field, value, "a number") from None
            if not math.isfinite(v) or v < low or (strict and v == low):
                raise _bad(field, value, f"finite and {'>' if strict else '>='} {low:g}")
            scalars[field] = v
        if scalars["alpha"] + scalars["beta"] * scalars["C"] <= 0:
            raise ModelError(
                f"tau = alpha + beta*C = {scalars['alpha'] + scalars['beta'] * scalars['C']!r} "
                "is invalid: the mixed iteration time must be > 0"
            )
        if isinstance(B, bool) or not float(B).is_integer() or int(B) < 1:
            raise _bad("B", B, "an integer >= 1")
        names = tuple(class_names) if class_names is not None else tuple(
            f"class-{i + 1}" for i in range(num)
        )
        if len(names) != num:
            raise ModelError(f"class_names has {len(names)} names for {num} classes")
        self.lambda_ = arrays["lambda_"]
        self.theta = arrays["theta"]
        self.P = arrays["P"]
        self.D = arrays["D"]
        self.alpha = np.float64(scalars["alpha"])
        self.beta = np.float64(scalars["beta"])
        self.gamma = np.float64(scalars["gamma"])
        self.C = np.float64(scalars["C"])
        self.B = np.int64(int(B))
        self.c_p = np.float64(scalars["c_p"])
        self.c_d = np.float64(scalars["c_d"])
        self.name = str(name)
        self.class_names = names
        self.patience = _checked_patience(patience, num)
        self.service = _checked_service(service, num)

    def _set_traced(self, given: dict[str, Any], name: str, class_names) -> None:
        """Stores values of which some are traced, unvalidated (see the module docstring)."""
        import jax.numpy as jnp

        num = int(np.shape(given["lambda_"])[0])
        for field, value in given.items():
            setattr(self, field, value if isinstance(value, jax.core.Tracer)
                    else jnp.asarray(value))
        self.name = str(name)
        self.class_names = tuple(class_names) if class_names is not None else tuple(
            f"class-{i + 1}" for i in range(num))

    # ---- derived quantities (paper, Sec. 1 and Eq. 4) ----------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes I (static: it fixes array shapes)."""
        return len(self.class_names)

    @property
    def tau(self):
        """Mixed iteration time ``alpha + beta*C``, seconds."""
        return self.alpha + self.beta * self.C

    @property
    def mu_p(self):
        """Prefill rate per job, ``C / (P tau)`` per second (P/C iterations of length tau)."""
        return self.C / (self.P * self.tau)

    @property
    def mu_m(self):
        """Decode rate on a mixed GPU, ``1 / (D tau)`` per second (one token per iteration)."""
        return 1.0 / (self.D * self.tau)

    @property
    def mu_s(self):
        """Decode rate on a solo GPU, ``gamma / D`` per second."""
        return self.gamma / self.D

    @property
    def kappa(self):
        """Solo-to-mixed decode speed ratio ``gamma*tau`` (the same for every class)."""
        return self.gamma * self.tau

    @property
    def w(self):
        """Bundled price of a class-i job, ``c_p P_i + c_d D_i``."""
        return self.c_p * self.P + self.c_d * self.D

    def tpot(self, mixed_fraction):
        """The paper's slot-weighted time per output token (Sec. 5), seconds, at prefill
        occupancy ``X = sum_i x_i`` per GPU (a float, a NumPy array or a traced array):
        ``[tau (B-1) X + (1/gamma) B (1-X)] / [(B-1) X + B (1-X)]``, and 1/gamma where no slot
        decodes (B = 1 and X = 1, the limit X -> 1)."""
        b, inv_gamma, x = float(self.B), 1.0 / float(self.gamma), mixed_fraction
        den = (b - 1.0) * x + b * (1.0 - x)
        none = den <= 0.0
        value = (float(self.tau) * (b - 1.0) * x + b * inv_gamma * (1.0 - x)) / (den + none)
        return value * (1 - none) + inv_gamma * none

    @property
    def solo_efficient(self) -> bool:
        """Proposition 3.2's condition ``gamma*tau >= (B-1)/B`` (host values only)."""
        return bool(float(self.kappa) >= (float(self.B) - 1.0) / float(self.B))

    # ---- construction from files and dicts ----------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "scenario") -> Model:
        """Builds a model from the TOML layout (``name``, ``[gpu]``, ``[pricing]``,
        ``[[classes]]``).

        Every error names ``source`` (the file) and the key as the file spells it
        (``classes[0].arrival_rate``, ``gpu.chunk``), with the value and the allowed range.
        Numbers must be TOML numbers (a string such as ``"300"`` is an error); ``gpu.chunk``
        and ``gpu.batch`` must be integers >= 1.
        """
        def fail(key: str, value: Any, allowed: str) -> ModelError:
            return ModelError(f"{source}: {key} = {value!r} is invalid: must be {allowed}")

        if not isinstance(data, Mapping):
            raise ModelError(f"{source}: must be a TOML table of name, [gpu], [pricing] and "
                             "[[classes]]")
        _check_keys(data, {"name", "gpu", "pricing", "classes", "patience", "service"}, source,
                    "")
        for section in ("gpu", "pricing", "classes"):
            if section not in data:
                table = "[[classes]]" if section == "classes" else f"[{section}]"
                raise ModelError(f"{source}: missing {table}")
        gpu, pricing, classes = data["gpu"], data["pricing"], data["classes"]
        if not isinstance(gpu, Mapping):
            raise ModelError(f"{source}: gpu must be a table [gpu]")
        if not isinstance(pricing, Mapping):
            raise ModelError(f"{source}: pricing must be a table [pricing]")
        if not isinstance(classes, Sequence) or isinstance(classes, (str, bytes)):
            raise ModelError(f"{source}: classes must be an array of tables [[classes]]")
        if len(classes) == 0:
            raise ModelError(f"{source}: classes is empty: a model needs at least one class")
        gpu_keys = {"alpha", "beta", "gamma", "chunk", "batch"}
        _check_keys(gpu, gpu_keys, source, "gpu.", required=gpu_keys)
        _check_keys(pricing, {"prefill", "decode"}, source, "pricing.",
                    required={"prefill", "decode"})
        class_keys = {"name", "arrival_rate", "patience_rate", "prompt_tokens", "output_tokens"}
        for k, c in enumerate(classes):
            if not isinstance(c, Mapping):
                raise ModelError(f"{source}: classes[{k}] must be a table [[classes]]")
            _check_keys(c, class_keys, source, f"classes[{k}].", required=class_keys - {"name"})

        def number(key: str, value: Any, low: float, strict: bool) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                kind = "a string" if isinstance(value, str) else type(value).__name__
                raise fail(key, value, f"a number, not {kind}")
            if not math.isfinite(value) or value < low or (strict and value == low):
                raise fail(key, value, f"a finite number {'>' if strict else '>='} {low:g}")
            return float(value)

        def integer(key: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    isinstance(value, float) and not value.is_integer()) or not value >= 1:
                raise fail(key, value, "an integer >= 1")
            return int(value)

        alpha = number("gpu.alpha", gpu["alpha"], 0.0, False)
        beta = number("gpu.beta", gpu["beta"], 0.0, False)
        gamma = number("gpu.gamma", gpu["gamma"], 0.0, True)
        chunk = integer("gpu.chunk", gpu["chunk"])
        batch = integer("gpu.batch", gpu["batch"])
        if alpha + beta * chunk <= 0:
            raise ModelError(f"{source}: gpu.alpha + gpu.beta * gpu.chunk = "
                             f"{alpha + beta * chunk!r} is invalid: the mixed iteration time "
                             "must be > 0")
        prefill = number("pricing.prefill", pricing["prefill"], 0.0, False)
        decode = number("pricing.decode", pricing["decode"], 0.0, False)
        per_class = {"arrival_rate": (0.0, False), "patience_rate": (0.0, False),
                     "prompt_tokens": (0.0, True), "output_tokens": (0.0, True)}
        rows = [{key: number(f"classes[{k}].{key}", c[key], *bounds)
                 for key, bounds in per_class.items()} for k, c in enumerate(classes)]
        names = []
        for k, c in enumerate(classes):
            name = c.get("name", f"class-{k + 1}")
            if not isinstance(name, str) or not name:
                raise fail(f"classes[{k}].name", name, "a non-empty string")
            names.append(name)
        scenario_name = data.get("name", source)
        if not isinstance(scenario_name, str):
            raise fail("name", scenario_name, "a string")
        patience = _patience_from_table(data.get("patience"), len(rows), source)
        service = _service_from_table(data.get("service"), len(rows), source)
        try:
            return cls(
                patience=patience,
                service=service,
                name=scenario_name,
                class_names=names,
                lambda_=[r["arrival_rate"] for r in rows],
                theta=[r["patience_rate"] for r in rows],
                P=[r["prompt_tokens"] for r in rows],
                D=[r["output_tokens"] for r in rows],
                alpha=alpha, beta=beta, gamma=gamma, C=chunk, B=batch, c_p=prefill, c_d=decode,
            )
        except ModelError as err:  # a cross-field check the keys above do not cover
            raise ModelError(f"{source}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout of this model (inverse of :meth:`from_dict`)."""
        extra = {}
        if self.patience is not None:
            law = self.patience
            extra["patience"] = {"law": law.law}
            if law.law in ("gamma", "lognormal", "hyperexponential"):
                extra["patience"]["cv"] = [float(c) for c in np.asarray(law.cv)]
            elif law.law == "empirical":
                extra["patience"]["samples"] = [
                    np.asarray(row)[:count].tolist()
                    for row, count in zip(law.samples, law.counts, strict=True)]
        if self.service is not None and self.service.to_table():
            extra["service"] = self.service.to_table()
        return {
            "name": self.name,
            "gpu": {
                "alpha": float(self.alpha),
                "beta": float(self.beta),
                "gamma": float(self.gamma),
                "chunk": int(self.C) if float(self.C).is_integer() else float(self.C),
                "batch": int(self.B),
            },
            "pricing": {"prefill": float(self.c_p), "decode": float(self.c_d)},
            "classes": [
                {
                    "name": self.class_names[i],
                    "arrival_rate": float(self.lambda_[i]),
                    "patience_rate": float(self.theta[i]),
                    "prompt_tokens": float(self.P[i]),
                    "output_tokens": float(self.D[i]),
                }
                for i in range(self.num_classes)
            ],
        } | extra

    def replace(self, **changes: Any) -> Model:
        """A copy with some primitive parameters changed (validated like a new model)."""
        fields = {
            "lambda_": self.lambda_, "theta": self.theta, "P": self.P, "D": self.D,
            "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "C": self.C,
            "B": self.B, "c_p": self.c_p, "c_d": self.c_d, "name": self.name,
            "class_names": self.class_names, "patience": self.patience,
            "service": self.service,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise ModelError(f"unknown model field(s) {sorted(unknown)}; known: {sorted(fields)}")
        fields.update(changes)
        if "lambda_" in changes and "class_names" not in changes:
            if np.shape(changes["lambda_"])[:1] != (self.num_classes,):
                fields["class_names"] = None
        return Model(**fields)


def _patience_from_table(table: Any, num: int, source: str):
    """The ``[patience]`` table of a scenario file: ``law``, and ``cv`` (a number or one per
    class) or ``samples`` (one list per class) as the law needs."""
    from .patience import Patience

    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ModelError(f"{source}: patience must be a table [patience]")
    _check_keys(table, {"law", "cv", "samples"}, source, "patience.", required={"law"})
    try:
        return Patience.make(table["law"], num, cv=table.get("cv"), samples=table.get("samples"))
    except ValueError as err:
        raise ModelError(f"{source}: {err}") from None


def _service_from_table(table: Any, num: int, source: str):
    """The ``[service]`` table of a scenario file: ``prefill`` and ``decode``, each an inline
    table of :func:`jaxqueue.service.make` (``{law = "erlang", phases = 4}``); a side left out
    is exponential."""
    from .service import Service

    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ModelError(f"{source}: service must be a table [service]")
    _check_keys(table, {"prefill", "decode"}, source, "service.")
    for side in ("prefill", "decode"):
        if side in table and not isinstance(table[side], Mapping):
            raise ModelError(f"{source}: service.{side} = {table[side]!r} is invalid: must be "
                             "a table such as {law = \"erlang\", phases = 4}")
    try:
        return Service.make(num, prefill=table.get("prefill"), decode=table.get("decode"))
    except ValueError as err:
        raise ModelError(f"{source}: {err}") from None


def _checked_service(service: Any, num: int):
    """``None`` or a :class:`~jaxqueue.service.Service` for ``num`` classes."""
    from .service import Service

    if service is None:
        return None
    if not isinstance(service, Service):
        raise _bad("service", service, "None or a jaxqueue.service.Service")
    for side in ("prefill", "decode"):
        law = getattr(service, side)
        if law is not None and np.shape(law.rates)[0] != num:
            raise ModelError(f"service.{side} has {np.shape(law.rates)[0]} classes for {num}: "
                             "make it with Service.make(num_classes, ...)")
    return service


def _checked_patience(patience: Any, num: int):
    """``None`` or a :class:`~jaxqueue.patience.Patience` for ``num`` classes."""
    from .patience import Patience

    if patience is None:
        return None
    if not isinstance(patience, Patience):
        raise _bad("patience", patience, "None or a jaxqueue.patience.Patience")
    if np.shape(patience.cv) != (num,):
        raise ModelError(f"patience has {np.shape(patience.cv)[0]} classes for {num}: make it "
                         "with Patience.make(law, num_classes, ...)")
    return patience


def _check_keys(table: Mapping[str, Any], allowed: set[str], source: str, prefix: str,
                required: set[str] | None = None) -> None:
    """Unknown and missing keys of one TOML table, named as the file spells them."""
    unknown = sorted(set(table) - allowed)
    where = f"in [{prefix.rstrip('.')}]" if prefix else "at the top level"
    if unknown:
        raise ModelError(f"{source}: unknown key {prefix}{unknown[0]}; the keys allowed {where} "
                         f"are {', '.join(sorted(allowed))}")
    missing = sorted((required or set()) - set(table))
    if missing:
        raise ModelError(f"{source}: missing key {prefix}{missing[0]}")
