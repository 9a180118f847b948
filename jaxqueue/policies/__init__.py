"""Policies: which system the simulator steps, and how it is planned from the fluid LP.

Every policy of the paper is listed once in :data:`POLICIES`, with its CLI name, aliases, the
engines it runs on, how it is laid out on each, and a one-line description; so are jaxqueue's own
policies (``origin = "jaxqueue"``), listed apart. :func:`build` turns a name, a scenario and a
number of GPUs into a system for :func:`jaxqueue.rollout` and :func:`jaxqueue.simulate`.

Engines: ``pooled`` stores counts per class and pool (cost per event independent of n);
``per-gpu`` stores what each GPU holds (needed by the coupled baselines, whose decode speed
depends on the mode of the GPU holding them).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import fluid
from ..decisions import AbstractDecisions, Exact
from ..model import Model
from .common import checked_capacity, checked_gpus, per_job_queue
from .erlang import ErlangA
from .per_gpu import SPEED_RULES, PerGpu, counts_dtype, gpu_slots
from .pooled import Pooled
from .sli import SLIGateAndRoute, build_sli

__all__ = ["ENGINES", "POLICIES", "ErlangA", "PerGpu", "Policy", "Pooled", "SLIGateAndRoute",
           "build", "engine_of", "resolve"]

ENGINES = ("pooled", "per-gpu")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A named policy.

    Attributes:
        name: the CLI name.
        pricing: the LP it is planned from (``bundled`` or ``separate``).
        gate: admission rule: ``deviation`` (Sec. 4.1), ``priority`` (Sec. 4.2.1) or ``fcfs``.
        description: one line for ``jaxqueue policies``.
        aliases: other accepted names.
        router: ``greedy`` (Sec. 4.1) or ``sli`` (Sec. 5.1, pooled only).
        engines: the engines it runs on, the default first.
        layout: on the per-GPU engine, ``planned`` (static planning: M mixed GPUs with a
            reserved prefill slot) or ``shared`` (any GPU may prefill, one at a time).
        coupled: on the per-GPU engine, whether a decode stays in its prefill's slot.
        gate_offset: the deviation gate ranks classes by ``(X_i + gate_offset) / x_i* - n``:
            0 is the paper's rule, 1 ranks by the occupancy after admitting the job.
        origin: ``"paper"`` (Lin, Han, Ding & Zhang) or ``"jaxqueue"`` (jaxqueue's own).
        plans: what the policy takes from its LP: ``"layout"`` (static planning: M mixed GPUs,
            and with the deviation gate its targets x*), ``"targets"`` (the gate's targets x*
            only) or ``"nothing"`` (the LP only bounds its revenue).
    """

    name: str
    pricing: str
    gate: str
    description: str
    aliases: tuple[str, ...] = ()
    router: str = "greedy"
    engines: tuple[str, ...] = ("pooled",)
    layout: str = "planned"
    coupled: bool = False
    gate_offset: float = 0.0
    origin: str = "paper"

    @property
    def plans(self) -> str:
        if self.layout == "planned":
            return "layout"
        return "targets" if self.gate == "deviation" else "nothing"


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
               engines=("per-gpu",), layout="shared", coupled=True),
        Policy("gi-wsp", "bundled", "deviation",
               "GI-WSP (Sec. 6.3): the Gate-and-Route gate on the coupled architecture, no "
               "static planning", engines=("per-gpu",), layout="shared", coupled=True),
        Policy("gf-wsp", "bundled", "deviation",
               "GF-WSP (Sec. 6.3): the gate, decoupled phases, no static planning, "
               "prefill-first routing", engines=("per-gpu",), layout="shared"),
        Policy("gi-wsp-after", "bundled", "deviation",
               "the GI-WSP gate ranking classes by their occupancy after admission, "
               "(X_i + 1) / x_i* - n, on the coupled architecture: a class the LP sheds no "
               "longer wins whenever it has no prefill running (the coupled family of jaxqueue "
               "tune at its LP point, offset 1)", aliases=("coupled-after-admission",),
               engines=("per-gpu",), layout="shared", coupled=True, gate_offset=1.0,
               origin="jaxqueue"),
    )
}


def resolve(name: str) -> Policy:
    """The policy called ``name`` (or one of its aliases)."""
    for policy in POLICIES.values():
        if name == policy.name or name in policy.aliases:
            return policy
    known = sorted([*POLICIES, *(a for p in POLICIES.values() for a in p.aliases)])
    raise ValueError(f"policy = {name!r} is unknown: must be one of {', '.join(known)}")


def engine_of(system) -> str:
    """``"per-gpu"`` or ``"pooled"``: the engine a built system runs on."""
    return "per-gpu" if isinstance(system, PerGpu) else "pooled"


def build(name: str, model: Model, n: int, *, engine: str | None = None,
          plan: fluid.Plan | None = None, capacity: int | None = None,
          sli: fluid.SLI | None = None, speed_rule: str = "paper",
          decide: AbstractDecisions | None = None
          ) -> tuple[Pooled | PerGpu | SLIGateAndRoute, fluid.Plan]:
    """The system of policy ``name`` on ``n`` GPUs, planned from its fluid LP.

    Inputs are validated here, on concrete values; the system's leaves may later be replaced
    by traced values (for ``vmap`` or ``grad``) without passing through this function again.

    Args:
        name: a policy name or alias (see :data:`POLICIES`).
        model: the scenario.
        n: number of GPUs (integer >= 1).
        engine: ``"pooled"`` or ``"per-gpu"`` (default: the policy's first engine).
        plan: the fluid plan to use (default: solve the LP of the policy's pricing, with the
            SLI targets ``sli`` if given).
        capacity: slots of each ring (the FCFS buffers; with a non-exponential patience law
            also the per-class queues; default :func:`.common.default_capacity`, sized from n
            and the plan's queues, or with such a law from ``sum_i lambda_i / theta_i``, the
            largest ``lambda_i / theta_i`` where every ring holds one class:
            :func:`.common.per_job_queue`; :func:`jaxqueue.simulate` grows it if it
            overflows).
        sli: SLI targets of the plan (bundled pricing only).
        speed_rule: per-GPU engine only: ``"paper"`` (decodes on a planned mixed GPU always run
            at the mixed rate) or ``"idle-solo"`` (at the solo rate while its prefill slot idles).
        decide: the decisions (default :class:`jaxqueue.decisions.Exact`).

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
    if speed_rule not in SPEED_RULES:
        raise ValueError(f"speed_rule = {speed_rule!r} is invalid: must be one of {SPEED_RULES}")
    if speed_rule != "paper" and engine != "per-gpu":
        raise ValueError(f"speed_rule = {speed_rule!r} needs engine = 'per-gpu'")
    n = checked_gpus(n)
    decide = Exact() if decide is None else decide
    if plan is None:
        plan = fluid.solve(model, policy.pricing, sli=sli)
    if policy.router == "sli":
        # Per-class buffers: counts, or under a non-exponential patience law rings.
        return build_sli(model, n, plan=plan, decide=decide, capacity=capacity)
    if policy.gate_offset:  # a point of the tunable coupled family, not a second implementation
        from . import tunable

        params = dataclasses.replace(tunable.initial_params("coupled", model, n, plan),
                                     offset=np.float64(policy.gate_offset))
        system, _ = tunable.build_family("coupled", model, n, plan=plan, params=params,
                                         capacity=capacity, decide=decide)
        return system, plan
    # The coupled per-GPU policies with the gate hold waiting jobs only in per-class rings:
    # sized for one class (see per_job_queue).
    one_class = engine == "per-gpu" and policy.coupled and policy.gate != "fcfs"
    waiting = float(np.sum(plan.q_p) + np.sum(plan.q_d))
    if engine == "pooled" and policy.gate != "fcfs":
        # The pooled engine's per-class gate counts its prefill queues: its decode buffer is
        # its only ring, or, with latency counters, per-class rings that each hold one class
        # (sized for every class's queue, a 32-class instance's rings were 4x larger than
        # what they hold, and every step touches them).
        waiting = float(np.sum(plan.q_d) + np.max(plan.q_p, initial=0.0))
    queue = per_job_queue(model, waiting, per_class=one_class)
    capacity = checked_capacity(capacity, n, queue)
    common = dict(model=model, n=np.int32(n), x_star=np.asarray(plan.x, np.float64),
                  q_star=np.asarray(plan.q_p, np.float64), capacity=int(capacity), decide=decide)
    if engine == "per-gpu":
        M = decide.count(n * plan.sum_x) if policy.layout == "planned" else 0
        system = PerGpu(M=np.int32(min(M, n)), gpus=gpu_slots(n), layout=policy.layout,
                        coupled=policy.coupled, gate=policy.gate, speed_rule=speed_rule,
                        counts=counts_dtype(model), **common)
    else:
        system = Pooled(M=np.int32(min(decide.count(n * plan.sum_x), n)), gate=policy.gate,
                        **common)
    return system, plan

