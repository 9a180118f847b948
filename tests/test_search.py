"""The derivative-free searches of the tuning benchmark (the reference compass search and the
(1+1)-evolution strategy) on the one-knob toy of ``test_tune``, whose optimum is known from the
exact chains: they find it, keep to their budgets, and follow their step rules."""

import dataclasses

import numpy as np
import pytest
from test_tune import tiny_model

from jaxqueue import fluid
from jaxqueue.exact_gradient import gated_revenue
from jaxqueue.search import evolution_strategy, pattern_search
from jaxqueue.tune import Problem

N = 4


@pytest.fixture(scope="module")
def toy():
    # The mixed share of a 4-GPU tiny system, every other parameter at the LP point; the best
    # integer M from the exact chains (the deterministic gate) is 3, the start is M = 1.
    model = tiny_model()
    plan = fluid.solve(model, "bundled")
    exact = {M: gated_revenue(model, N, M, np.maximum(plan.x, 1e-6), 0.0, 1e-3, max_queue=6,
                              max_buffer=3)["revenue"] for M in range(1, N)}
    problem = Problem(family="gated", model=model, n=N, plan=plan, horizon=300.0, warmup=30.0,
                      reps=16)
    start = dataclasses.replace(problem.initial(), share=np.float64(1 / N))
    return problem, start, exact


def test_compass_search_finds_the_exact_optimum_within_its_budget(toy):
    problem, start, exact = toy
    best = max(exact, key=exact.get)
    assert best == 3 and exact[1] < 0.6 * exact[3]
    budget = 3e6
    result = pattern_search(problem, start, budget=budget, delta=2.0, only=("share",))
    assert abs(result.params.share * N - best) <= 0.5, (result.params.share * N, exact)
    for name in ("targets", "slack", "caps"):  # only the share was searched
        np.testing.assert_allclose(getattr(result.params, name), getattr(start, name),
                                   rtol=1e-6)
    steps = [h["step"] for h in result.history]
    events = [h["events"] for h in result.history]
    # The step only ever halves; the search stops once it is below a quarter or the budget is
    # spent, so only its last sweep may cross the budget.
    assert all(b in (a, a / 2) for a, b in zip([2.0] + steps[:-1], steps, strict=True))
    assert steps[-1] < 0.25 or events[-1] >= budget
    assert all(e < budget for e in events[:-1]) and result.events == events[-1]


def test_evolution_strategy_finds_the_exact_optimum_within_its_budget(toy):
    problem, start, exact = toy
    best = max(exact, key=exact.get)
    budget = 3e6  # about 20 iterations; with 1.2e6, two of six seeds ended at M < 2
    result = evolution_strategy(problem, start, budget=budget, sigma=1.0, seed=0,
                                only=("share",))
    assert abs(result.params.share * N - best) <= 1.0, (result.params.share * N, exact)
    events = [h["events"] for h in result.history]
    assert all(e < budget for e in events[:-1]) and events[-1] >= budget
    # The one-fifth rule: sigma grows by exp(0.8 / 0.8) after a success, shrinks by
    # exp(-0.2 / 0.8) after a failure (p = 1 tuned coordinate).
    sigmas = np.array([1.0] + [h["step"] for h in result.history])
    ratios = np.log(sigmas[1:] / sigmas[:-1])
    assert np.all(np.isclose(ratios, 1.0) | np.isclose(ratios, -0.25)), ratios
