"""The fluid surrogate of the gated family: flow balance, its fluid limit against the LP, exact
gradients against finite differences, bad input, and the tuner's fluid first stage."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue import fluid, scenarios, surrogate
from jaxqueue.model import Model
from jaxqueue.policies import tunable
from jaxqueue.tune import Problem, tune

PAPER = scenarios.load("paper-qwen8b")


def one_class():
    """One class: the greedy router's class mix cannot differ from the plan's, so the fluid
    limit of the LP point is the LP optimum."""
    return Model(lambda_=(0.5,), theta=(0.1,), P=(3000.0,), D=(400.0,), alpha=0.0174,
                 beta=6.2e-5, gamma=22.0, C=512.0, B=16, c_p=0.1, c_d=1.0, name="one-class")


def test_flows_balance_per_class():
    plan = fluid.solve(PAPER, "bundled")
    p = tunable.initial_params("gated", PAPER, 50, plan)
    path = surrogate.trajectory(PAPER, p, n=50, horizon=300.0, warmup=100.0)
    gap = path.arrivals - path.completions - path.abandonments - path.stock_change / 200.0
    np.testing.assert_allclose(np.asarray(gap), 0.0, atol=1e-4)
    assert np.all(np.asarray(path.x) >= 0) and np.all(np.asarray(path.q_d) >= 0)


def test_fluid_limit_of_the_lp_point_is_the_lp_revenue_for_one_class():
    model = one_class()
    plan = fluid.solve(model, "bundled")
    p = dataclasses.replace(tunable.initial_params("gated", model, 10**6, plan),
                            share=np.float64(plan.sum_x))
    with jax.enable_x64(True):
        path = surrogate.trajectory(model, p, n=10**6, smoothing=1e-6, horizon=1500.0,
                                    warmup=1000.0, dt=0.002)
    assert abs(float(path.revenue) - plan.revenue) < 2e-3 * plan.revenue, (
        float(path.revenue), plan.revenue)


def test_gradient_matches_central_differences_in_float64():
    with jax.enable_x64(True):
        plan = fluid.solve(PAPER, "bundled")
        p0 = tunable.initial_params("gated", PAPER, 20, plan)
        p0 = jax.tree.map(jnp.asarray, dataclasses.replace(p0, slack=np.float64(0.3)))

        @jax.jit
        def f(share, slack, targets):
            p = dataclasses.replace(p0, share=share, slack=slack, targets=targets)
            return surrogate.revenue(PAPER, p, n=20, horizon=200.0, warmup=50.0, dt=0.01)

        args = (p0.share, p0.slack, p0.targets)
        grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)
        h = 1e-6
        for k, g in enumerate(grads):
            base = np.atleast_1d(np.asarray(args[k]))
            for i in range(base.size):
                e = np.zeros_like(base)
                e[i] = h
                up = [a if j != k else jnp.asarray(base + e).reshape(np.shape(args[k]))
                      for j, a in enumerate(args)]
                down = [a if j != k else jnp.asarray(base - e).reshape(np.shape(args[k]))
                        for j, a in enumerate(args)]
                fd = (float(f(*up)) - float(f(*down))) / (2 * h)
                exact = float(np.atleast_1d(np.asarray(g))[i])
                assert abs(exact - fd) <= 1e-4 * max(1.0, abs(fd)), (k, i, exact, fd)
        assert abs(float(grads[0])) > 1.0  # the share moves revenue at this point


@pytest.mark.parametrize("kw, match", [
    (dict(horizon=0.0), r"horizon = 0.0 is invalid: must be finite and > 0"),
    (dict(horizon=100.0, warmup=100.0), r"warmup = 100.0 is invalid: must be in \[0, horizon"),
    (dict(smoothing=-1.0), r"smoothing = -1.0 is invalid: must be finite and > 0"),
    (dict(pricing="free"), r"pricing = 'free' is invalid"),
])
def test_bad_input_is_named(kw, match):
    p = tunable.initial_params("gated", PAPER, 20, fluid.solve(PAPER, "bundled"))
    with pytest.raises(ValueError, match=match):
        surrogate.trajectory(PAPER, p, n=20, **kw)


@pytest.mark.slow  # compiles a tuner of its own (14 s); the error path changes seldom
def test_a_fluid_stage_gone_non_finite_is_an_error_naming_its_step(monkeypatch):
    # A surrogate whose value turns NaN once the share falls below 0.9 of its start: the stage's
    # first step is finite, a later one not: an error naming a later step, not a silent NaN.
    plan = fluid.solve(PAPER, "bundled")
    problem = Problem(family="gated", model=PAPER, n=20, plan=plan, horizon=60.0, warmup=10.0,
                      reps=2)
    start = float(problem.initial().share)
    real = surrogate.revenue

    def broken(model, params, **kw):
        value = real(model, params, **kw)
        return jnp.where(params.share < 0.9 * start, jnp.nan, value)

    monkeypatch.setattr(surrogate, "revenue", broken)
    with pytest.raises(FloatingPointError, match=r"not finite at its step [2-9]"):
        tune(problem, steps=1, estimator="spsa", fluid_steps=8, learning_rate=3.0,
             eval_every=1, eval_reps=2, only=["share"])


@pytest.mark.slow
def test_tuner_fluid_stage_moves_the_share_and_is_evaluated_exactly():
    plan = fluid.solve(PAPER, "bundled")
    problem = Problem(family="gated", model=PAPER, n=20, plan=plan, horizon=60.0, warmup=10.0,
                      reps=2)
    result = tune(problem, steps=1, estimator="spsa", fluid_steps=5, eval_every=1, eval_reps=2,
                  only=["share"])
    values = result.history["fluid"]
    # Five steps and the returned point's value: the best seen, above the start's.
    assert len(values) == 6 and values[-1] == max(values) and values[-1] > values[0]
    staged = [e for e in result.history["evaluations"] if e.get("stage") == "fluid"]
    assert len(staged) == 1
    assert staged[0]["params"]["share"] < float(problem.initial().share)
    np.testing.assert_allclose(staged[0]["params"]["targets"], problem.initial().targets,
                               rtol=1e-6)  # float32 log and exp
    coupled = dataclasses.replace(problem, family="coupled")
    with pytest.raises(ValueError, match="fluid_steps needs the gated family"):
        tune(coupled, steps=1, fluid_steps=3)
