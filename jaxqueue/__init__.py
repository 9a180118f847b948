"""jaxqueue: exact, vectorized simulation and fluid control of LLM-inference clusters as
many-server queueing networks, in JAX.

The public API, by task:

- the model and its scenarios: :class:`Model`, :mod:`jaxqueue.scenarios` (``scenarios.load``);
- fluid LPs: :mod:`jaxqueue.fluid` (``fluid.solve``);
- policies as simulable systems: :func:`build` (:mod:`jaxqueue.policies`);
- the pure kernel: :func:`rollout` (a fixed number of events, on the device, jit/vmap-able)
  and :func:`trajectory` (one replication's path);
- long runs: :func:`simulate` (the host driver: chunks, float64 sums, sharding, checkpoints)
  and :mod:`jaxqueue.stats` (per-GPU summaries with confidence intervals);
- decisions, the one seam a relaxation replaces: :mod:`jaxqueue.decisions`;
- exact oracles: :mod:`jaxqueue.theory`.
"""

from . import decisions, fluid, policies, scenarios, stats, theory
from .decisions import Exact, NotDifferentiableError
from .driver import Run, simulate
from .kernel import AbstractSystem, Rollout, SimulationError, Summary, rollout, trajectory
from .model import Model, ModelError
from .policies import build

__all__ = ["AbstractSystem", "Exact", "Model", "ModelError", "NotDifferentiableError", "Rollout",
           "Run", "SimulationError", "Summary", "build", "decisions", "fluid", "policies",
           "rollout", "scenarios", "simulate", "stats", "theory", "trajectory"]

__version__ = "0.2.0"
