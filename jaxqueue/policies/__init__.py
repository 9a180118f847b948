"""Policies: which system the simulator steps, and how it is planned from the fluid LP.

Every policy of the paper (MODEL.md Sec. 5) that runs on the pooled engine is listed in
:data:`POLICIES` with its CLI name, aliases and one-line description. :func:`build` turns a
name, a scenario and a number of GPUs into a system for :func:`jaxqueue.simulate.simulate`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import fluid
from ..model import Model
from .erlang import ErlangA
from .pooled import Pooled, default_capacity
from .sli import SLIGateAndRoute, build_sli

__all__ = ["POLICIES", "Policy", "build", "resolve", "ErlangA", "Pooled", "SLIGateAndRoute"]


@dataclasses.dataclass(frozen=True)
class Policy:
    """A named policy: its plan's pricing, its gate, and what it is."""

    name: str
    pricing: str
    gate: str
    description: str
    aliases: tuple[str, ...] = ()
    router: str = "greedy"


POLICIES = {
    p.name: p
    for p in (
        Policy("gate-and-route", "bundled", "deviation",
               "GG-SP (Sec. 4.1): bundled-LP static planning, occupancy-deviation gate, greedy "
               "router (solo, mixed, one FCFS decode buffer)", aliases=("gg-sp",)),
        Policy("fg-sp", "bundled", "fcfs",
               "FG-SP (Sec. 6.3 ablation): static planning and greedy router, FCFS admission "
               "across classes instead of the gate"),
        Policy("prioritize-and-route", "separate", "priority",
               "Prioritize-and-Route (Sec. 4.2.1): separate-pricing LP planning, admit the "
               "waiting class with the largest D/P, greedy router"),
        Policy("sli-gate-and-route", "bundled", "deviation",
               "SLI-aware Gate-and-Route (Sec. 5.1, EC 13): (SLI-aware) bundled-LP planning, "
               "the same gate, random routing to the solo or mixed side in the LP's "
               "proportions (one decode buffer per side)", router="sli"),
    )
}


def resolve(name: str) -> Policy:
    """The policy called ``name`` (or one of its aliases)."""
    for policy in POLICIES.values():
        if name == policy.name or name in policy.aliases:
            return policy
    known = sorted([*POLICIES, *(a for p in POLICIES.values() for a in p.aliases)])
    raise ValueError(f"policy = {name!r} is unknown: must be one of {', '.join(known)}")


def build(name: str, model: Model, n: int, *, plan: fluid.Plan | None = None,
          capacity: int | None = None, sli: fluid.SLI | None = None
          ) -> tuple[Pooled | SLIGateAndRoute, fluid.Plan]:
    """The system of policy ``name`` on ``n`` GPUs, planned from its fluid LP.

    Args:
        name: a policy name or alias (see :data:`POLICIES`).
        model: the scenario.
        n: number of GPUs (integer >= 1).
        plan: the fluid plan to use (default: solve the LP of the policy's pricing, with the
            SLI targets ``sli`` if given).
        capacity: slots of the FCFS buffers (default :func:`default_capacity`).
        sli: SLI targets of the plan (bundled pricing only).

    Returns:
        The system and the plan it was built from.
    """
    policy = resolve(name)
    if isinstance(n, bool) or not float(n).is_integer() or int(n) < 1:
        raise ValueError(f"n (gpus) = {n!r} is invalid: must be an integer >= 1")
    n = int(n)
    if plan is None and (sli is not None or policy.router == "sli"):
        plan = fluid.solve(model, policy.pricing, sli=sli)
    if policy.router == "sli":
        return build_sli(model, n, plan=plan)  # per-class decode buffers: no FCFS ring
    if capacity is None:
        capacity = default_capacity(n)
    elif isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1:
        raise ValueError(f"capacity = {capacity!r} is invalid: must be an integer >= 1")
    plan = plan if plan is not None else fluid.solve(model, policy.pricing)
    system = Pooled(
        model=model,
        n=np.int32(n),
        M=np.int32(plan.mixed_gpus(n)),
        x_star=np.asarray(plan.x, np.float64),
        q_star=np.asarray(plan.q_p, np.float64),
        gate=policy.gate,
        capacity=int(capacity),
    )
    return system, plan
