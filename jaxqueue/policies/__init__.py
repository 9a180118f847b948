"""Policies: which system the simulator steps, and how it is planned from the fluid LP.

Every policy of the paper (MODEL.md Sec. 5) is listed in :data:`POLICIES` with its CLI name,
aliases, the engines it runs on and a one-line description. :func:`build` turns a name, a
scenario and a number of GPUs into a system for :func:`jaxqueue.simulate.simulate`.

Engines: ``pooled`` stores counts per class and pool (cost per event independent of n);
``per-gpu`` stores what each GPU holds (needed by the coupled baselines, whose decode speed
depends on the mode of the GPU holding them; cost per event grows with n).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import fluid
from ..model import Model
from .erlang import ErlangA
from .per_gpu import PerGpu, build_per_gpu
from .pooled import Pooled, checked_capacity, checked_gpus
from .sli import SLIGateAndRoute, build_sli

__all__ = ["POLICIES", "ENGINES", "Policy", "build", "resolve", "ErlangA", "Pooled", "PerGpu",
           "SLIGateAndRoute"]

ENGINES = ("pooled", "per-gpu")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A named policy: its plan's pricing, its gate, the engines it runs on, and what it is."""

    name: str
    pricing: str
    gate: str
    description: str
    aliases: tuple[str, ...] = ()
    router: str = "greedy"
    engines: tuple[str, ...] = ("pooled",)


POLICIES = {
    p.name: p
    for p in (
        Policy("gate-and-route", "bundled", "deviation",
               "GG-SP (Sec. 4.1): bundled-LP static planning, occupancy-deviation gate, greedy "
               "router (solo, mixed, one FCFS decode buffer)", aliases=("gg-sp",),
               engines=("pooled", "per-gpu")),
        Policy("fg-sp", "bundled", "fcfs",
               "FG-SP (Sec. 6.3 ablation): static planning and greedy router, FCFS admission "
               "across classes instead of the gate", engines=("pooled", "per-gpu")),
        Policy("prioritize-and-route", "separate", "priority",
               "Prioritize-and-Route (Sec. 4.2.1): separate-pricing LP planning, admit the "
               "waiting class with the largest D/P, greedy router"),
        Policy("sli-gate-and-route", "bundled", "deviation",
               "SLI-aware Gate-and-Route (Sec. 5.1, EC 13): (SLI-aware) bundled-LP planning, "
               "the same gate, random routing to the solo or mixed side in the LP's "
               "proportions (one decode buffer per side)", router="sli"),
        Policy("fi-wsp", "bundled", "fcfs",
               "FI-WSP (Sec. 6.3): FCFS admission, immediate coupling (decode in the prefill's "
               "slot), no static planning: the Sarathi-Serve-style baseline",
               engines=("per-gpu",)),
        Policy("gi-wsp", "bundled", "deviation",
               "GI-WSP (Sec. 6.3): the Gate-and-Route gate on the coupled architecture, no "
               "static planning", engines=("per-gpu",)),
        Policy("gf-wsp", "bundled", "deviation",
               "GF-WSP (Sec. 6.3): the gate, decoupled phases, no static planning, "
               "prefill-first routing", engines=("per-gpu",)),
    )
}


def resolve(name: str) -> Policy:
    """The policy called ``name`` (or one of its aliases)."""
    for policy in POLICIES.values():
        if name == policy.name or name in policy.aliases:
            return policy
    known = sorted([*POLICIES, *(a for p in POLICIES.values() for a in p.aliases)])
    raise ValueError(f"policy = {name!r} is unknown: must be one of {', '.join(known)}")


def build(name: str, model: Model, n: int, *, engine: str | None = None,
          plan: fluid.Plan | None = None, capacity: int | None = None,
          sli: fluid.SLI | None = None, speed_rule: str = "paper"
          ) -> tuple[Pooled | PerGpu | SLIGateAndRoute, fluid.Plan]:
    """The system of policy ``name`` on ``n`` GPUs, planned from its fluid LP.

    Args:
        name: a policy name or alias (see :data:`POLICIES`).
        model: the scenario.
        n: number of GPUs (integer >= 1).
        engine: ``"pooled"`` or ``"per-gpu"`` (default: the policy's first engine).
        plan: the fluid plan to use (default: solve the LP of the policy's pricing, with the
            SLI targets ``sli`` if given).
        capacity: slots of the FCFS buffers (default :func:`.pooled.default_capacity`).
        sli: SLI targets of the plan (bundled pricing only).
        speed_rule: per-GPU engine only: ``"paper"`` (decodes on a planned mixed GPU always run
            at the mixed rate) or ``"idle-solo"`` (at the solo rate while its prefill slot idles).

    Returns:
        The system and the plan it was built from.
    """
    policy = resolve(name)
    engine = policy.engines[0] if engine is None else engine
    if engine not in ENGINES:
        raise ValueError(f"engine = {engine!r} is invalid: must be one of {', '.join(ENGINES)}")
    if engine not in policy.engines:
        raise ValueError(f"policy {policy.name!r} does not run on the {engine} engine: its "
                         f"engines are {', '.join(policy.engines)}")
    if speed_rule != "paper" and engine != "per-gpu":
        raise ValueError(f"speed_rule = {speed_rule!r} needs engine = 'per-gpu'")
    n = checked_gpus(n)
    if plan is None:
        plan = fluid.solve(model, policy.pricing, sli=sli)
    if engine == "per-gpu":
        return build_per_gpu(policy.name, model, n, plan=plan, capacity=capacity,
                             speed_rule=speed_rule)
    if policy.router == "sli":
        return build_sli(model, n, plan=plan)  # per-class decode buffers: no FCFS ring
    capacity = checked_capacity(capacity, n)
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
