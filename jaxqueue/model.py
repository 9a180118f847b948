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
    ):
        given = dict(lambda_=lambda_, theta=theta, P=P, D=D, alpha=alpha, beta=beta, gamma=gamma,
                     C=C, B=B, c_p=c_p, c_d=c_d)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(given)):
            self._set_traced(given, name, class_names)
            return
        arrays = {}
        sizes = {}
        for field, value in (("lambda_", lambda_), ("theta", theta), ("P", P), ("D", D)):
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
            raise _bad("lambda_ (arrival_rate)", arrays["lambda_"].tolist(), ">= 0")
        if np.any(arrays["theta"] < 0):
            raise _bad("theta (patience_rate)", arrays["theta"].tolist(), ">= 0")
        if np.any(arrays["P"] <= 0):
            raise _bad("P (prompt_tokens)", arrays["P"].tolist(), "> 0")
        if np.any(arrays["D"] <= 0):
            raise _bad("D (output_tokens)", arrays["D"].tolist(), "> 0")
        scalars = {}
        for field, value, low, strict in (
            ("alpha", alpha, 0.0, False),
            ("beta", beta, 0.0, False),
            ("gamma", gamma, 0.0, True),
            ("C", C, 0.0, True),
            ("c_p", c_p, 0.0, False),
            ("c_d", c_d, 0.0, False),
        ):
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
            raise _bad("B (batch)", B, "an integer >= 1")
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

    @property
    def solo_efficient(self) -> bool:
        """Proposition 3.2's condition ``gamma*tau >= (B-1)/B`` (host values only)."""
        return bool(float(self.kappa) >= (float(self.B) - 1.0) / float(self.B))

    # ---- construction from files and dicts ----------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "scenario") -> Model:
        """Builds a model from the TOML layout (``name``, ``[gpu]``, ``[pricing]``,
        ``[[classes]]``).

        Unknown keys raise :class:`ModelError` naming the key and where it was found.
        """
        _check_keys(data, {"name", "gpu", "pricing", "classes"}, source)
        for section in ("gpu", "pricing", "classes"):
            if section not in data:
                raise ModelError(f"{source}: missing section [{section}]")
        gpu, pricing, classes = data["gpu"], data["pricing"], data["classes"]
        if not isinstance(gpu, Mapping):
            raise ModelError(f"{source}: [gpu] must be a table")
        if not isinstance(pricing, Mapping):
            raise ModelError(f"{source}: [pricing] must be a table")
        if not isinstance(classes, Sequence) or isinstance(classes, (str, bytes)):
            raise ModelError(f"{source}: classes must be an array of tables [[classes]]")
        if len(classes) == 0:
            raise ModelError(f"{source}: classes is empty: a model needs at least one class")
        gpu_keys = {"alpha", "beta", "gamma", "chunk", "batch"}
        _check_keys(gpu, gpu_keys, f"{source} [gpu]", required=gpu_keys)
        _check_keys(pricing, {"prefill", "decode"}, f"{source} [pricing]",
                    required={"prefill", "decode"})
        class_keys = {"name", "arrival_rate", "patience_rate", "prompt_tokens", "output_tokens"}
        for k, c in enumerate(classes):
            if not isinstance(c, Mapping):
                raise ModelError(f"{source}: classes[{k}] must be a table")
            _check_keys(c, class_keys, f"{source} classes[{k}]", required=class_keys - {"name"})
        return cls(
            name=str(data.get("name", source)),
            class_names=[str(c.get("name", f"class-{k + 1}")) for k, c in enumerate(classes)],
            lambda_=[c["arrival_rate"] for c in classes],
            theta=[c["patience_rate"] for c in classes],
            P=[c["prompt_tokens"] for c in classes],
            D=[c["output_tokens"] for c in classes],
            alpha=gpu["alpha"],
            beta=gpu["beta"],
            gamma=gpu["gamma"],
            C=gpu["chunk"],
            B=gpu["batch"],
            c_p=pricing["prefill"],
            c_d=pricing["decode"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout of this model (inverse of :meth:`from_dict`)."""
        return {
            "name": self.name,
            "gpu": {
                "alpha": float(self.alpha),
                "beta": float(self.beta),
                "gamma": float(self.gamma),
                "chunk": float(self.C),
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
        }

    def replace(self, **changes: Any) -> Model:
        """A copy with some primitive parameters changed (validated like a new model)."""
        fields = {
            "lambda_": self.lambda_, "theta": self.theta, "P": self.P, "D": self.D,
            "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "C": self.C,
            "B": self.B, "c_p": self.c_p, "c_d": self.c_d, "name": self.name,
            "class_names": self.class_names,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise ModelError(f"unknown model field(s) {sorted(unknown)}; known: {sorted(fields)}")
        fields.update(changes)
        if "lambda_" in changes and "class_names" not in changes:
            if np.shape(changes["lambda_"])[:1] != (self.num_classes,):
                fields["class_names"] = None
        return Model(**fields)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str,
                required: set[str] | None = None) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ModelError(
            f"{where}: unknown field {unknown[0]!r}; allowed fields are {sorted(allowed)}"
        )
    missing = sorted((required or set()) - set(table))
    if missing:
        raise ModelError(f"{where}: missing field {missing[0]!r}")
