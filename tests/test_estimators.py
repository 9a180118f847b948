"""Gradient estimators (jaxqueue.estimators) against the exact gradient of a small chain solved
from its generator (jaxqueue.exact_gradient), in standard errors.

The chain: two classes on n = 4 GPUs, a randomised gate (temperature 1) and the triangular dither
of the smoothed ``gated`` family, so the number of mixed GPUs is 1, 2 or 3 (probabilities 1/8,
3/4, 1/8 at share 0.5) and the exact gradient has independent components in the gate's targets,
its offset and the share. Class 1 pays twice as much per second of prefill as class 2, so which
class the gate admits moves revenue.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqueue import estimators, fluid, scenarios
from jaxqueue.driver import SimulationWarning
from jaxqueue.estimators import estimate, rate_gradient
from jaxqueue.exact_gradient import gated_gradient, sli_gradient
from jaxqueue.model import Model
from jaxqueue.objective import Problem, natural_steps, to_free
from jaxqueue.patience import Patience
from jaxqueue.policies import common, tunable

N, TEMPERATURE = 4, 1.0
TARGETS, OFFSET, SHARE = np.array([0.5, 0.1]), 0.5, 0.5


def small_model():
    """tau = alpha = 1, C = 1: mu_p = 1/P = (2, 0.5), mu_m = 1/D = 2, mu_s = gamma/D = 3,
    B = 3; w = c_p P + c_d D = (1.5, 3): per second of prefill class 1 earns 3, class 2 1.5."""
    return Model(lambda_=(0.6, 0.4), theta=(2.0, 2.0), P=(0.5, 2.0), D=(0.5, 0.5), alpha=1.0,
                 beta=0.0, gamma=1.5, C=1.0, B=3, c_p=1.0, c_d=2.0, name="small")


def params():
    return tunable.GatedParams(targets=TARGETS, offset=np.float64(OFFSET),
                               share=np.float64(SHARE), slack=np.float64(2.0),
                               caps=np.full(2, 2.0))


@functools.cache
def exact():
    # Truncation (a full prefill queue of 6, a full decode buffer of 1) loses 0.4% of the
    # probability mass; the simulator has no truncation. Measured: the simulator's revenue and
    # levels agree with this chain within 1 standard error at 256 x 1,000 s.
    out = gated_gradient(small_model(), N, TARGETS, OFFSET, SHARE, 2.0, np.full(2, 2.0),
                         TEMPERATURE, max_queue=6, max_buffer=1)
    assert out["truncation"] < 0.005
    g = out["grad"]
    return {"free": np.r_[g["log_targets"], g["offset"], g["share"]],
            "lambda_": g["lambda_"], "theta": g["theta"]}


def problem(reps, horizon=1000.0):
    model = small_model()
    return Problem(family="gated", model=model, n=N, plan=fluid.solve(model, "bundled"),
                   horizon=horizon, warmup=20.0, reps=reps, gate_temperature=TEMPERATURE)


def check(estimate_, se, want, k=4.0):
    z = (np.asarray(estimate_) - want) / np.asarray(se)
    assert np.all(np.abs(z) < k), (estimate_, se, want, z)
    # The test can fail: the zero vector (or the gradient with its sign flipped) is far off.
    assert np.sum((want / se) ** 2) > 4 * k**2 * len(want) ** 0.5


def test_score_estimator_matches_the_exact_gradient():
    # Per-decision likelihood ratios with the credit kernel over W = 10 s (the chain relaxes
    # in about a second) on 512 replications: every coordinate within 4 standard errors.
    free = to_free(jax.tree.map(jnp.asarray, params()))
    e = estimate(problem(512), "score", free, jax.random.key(1),
                 only=["targets", "offset", "share"], discount=10.0)
    check(e.grad[:4], e.se[:4], exact()["free"])
    assert np.all(e.grad[4:] == 0)  # slack and caps were not asked for


def test_rate_gradient_matches_the_exact_derivatives_in_lambda_and_theta():
    # The same likelihood ratios with the events' own scores: d revenue / d (lambda_i, theta_i)
    # with the policy fixed, against the chain's derivative (one generator solve).
    system, _ = tunable.build_family("gated", small_model(), N, params=params(),
                                     plan=fluid.solve(small_model(), "bundled"),
                                     gate_temperature=TEMPERATURE)
    r = rate_gradient(jax.random.key(3), system, N, reps=256, horizon=1000.0, warmup=20.0,
                      discount=20.0)
    got = np.r_[r["lambda_"]["grad"], r["theta"]["grad"]]
    se = np.r_[r["lambda_"]["se"], r["theta"]["se"]]
    want = np.r_[exact()["lambda_"], exact()["theta"]]
    z = (got - want) / se
    assert np.all(np.abs(z) < 4), (got, se, want)
    assert abs(want[0] / se[0]) > 8  # the largest derivative is resolved: the test can fail


@pytest.mark.slow
@pytest.mark.parametrize("steps", [dict(step_scale=0.5), dict(gate_steps=True)])
def test_central_differences_match_the_exact_gradient(steps):
    # Common-random-number central differences at half the difference steps (curvature bias
    # small against the standard errors here), or with the gate's steps capped by its
    # temperature, all 9 configurations in one batch.
    free = to_free(jax.tree.map(jnp.asarray, params()))
    e = estimate(problem(1024), "fd", free, jax.random.key(2),
                 only=["targets", "offset", "share"], **steps)
    check(e.grad[:4], e.se[:4], exact()["free"])


def test_gate_steps_move_each_gate_logit_by_at_most_the_bound():
    # Checked through the policy's own gate keys, not the formula: at the planned occupancy
    # (X_i = n t_i), a target's step or the offset's moves a class's logit -xi_i / T by at most
    # GATE_LOGIT_STEP, class 1's comes near it, and the other coordinates keep their steps.
    from jaxqueue.decisions import Exact
    from jaxqueue.objective import GATE_LOGIT_STEP, difference_steps

    scenario = scenarios.load("paper-qwen8b")
    for n in (20, 100, 500):
        prob = Problem(family="gated", model=scenario, n=n, plan=fluid.solve(scenario),
                       gate_temperature=20.0)
        p0 = tunable.initial_params("gated", scenario, n, prob.plan)
        p0 = tunable.GatedParams(targets=p0.targets, offset=np.float64(1.0), share=p0.share,
                                 slack=p0.slack, caps=p0.caps)
        plain, capped = difference_steps(prob, p0), difference_steps(prob, p0, gate=True)
        X = jnp.asarray(np.round(n * p0.targets), jnp.int32)

        def logits(targets, offset, n=n, X=X):
            xi = common.gate_keys("deviation", Exact(), scenario, n, targets, targets * 0, X,
                                  X * 0, offset)[0][0]
            return -np.asarray(xi) / 20.0

        base = logits(p0.targets, p0.offset)
        moves = []
        for i in range(2):
            up = p0.targets.copy()
            up[i] *= np.exp(capped.targets[i])
            moves.append(abs(logits(up, p0.offset) - base)[i])
        moves.append(np.max(abs(logits(p0.targets, p0.offset + capped.offset) - base)))
        moves = np.asarray(moves)
        # at X = n t (rounded) the key moves by (X + offset) (1 - exp(-h)) / t <= the bound
        assert np.all(moves <= GATE_LOGIT_STEP * (1 + 0.5 / (n * p0.targets.min()) + 1e-6))
        assert moves[0] > 0.5 * GATE_LOGIT_STEP  # class 1's capped step is not far below it
        assert np.all(capped.targets <= plain.targets) and capped.offset <= plain.offset
        assert np.any(capped.targets < plain.targets)  # class 1's step is capped at every n
        assert capped.share == plain.share and np.all(capped.caps == plain.caps)
    # A class the plan does not serve (its target the family's floor) moves no logit, so it
    # does not shrink the offset's step: with dolly-8class's TPOT plan (x_2* = 0) the offset's
    # step is set by the smallest served target, not by the floor.
    dolly = scenarios.load("dolly-8class")
    plan = fluid.solve(dolly, "bundled",
                       sli=fluid.SLI(tpot=0.023, penalty=True, weights={"tpot": 1e5}))
    served = Problem(family="gated", model=dolly, n=100, plan=plan, gate_temperature=20.0)
    q0 = tunable.initial_params("gated", dolly, 100, plan)
    assert q0.targets[1] == tunable.FLOOR
    step = difference_steps(served, q0, gate=True).offset
    assert step == pytest.approx(min(natural_steps(served, q0).offset,
                                     GATE_LOGIT_STEP * 20.0 * np.min(np.delete(q0.targets, 1))))
    with pytest.raises(ValueError, match="gate"):
        difference_steps(Problem(family="gated", model=scenario, n=20, plan=prob.plan), p0,
                         gate=True)
    with pytest.raises(ValueError, match="gate_steps"):
        estimate(problem(4), "score", to_free(jax.tree.map(jnp.asarray, params())),
                 jax.random.key(0), gate_steps=True)


@pytest.mark.slow
def test_spsa_is_unbiased_over_many_directions():
    free = to_free(jax.tree.map(jnp.asarray, params()))
    e = estimate(problem(128, horizon=500.0), "spsa", free, jax.random.key(4),
                 only=["targets", "offset", "share"], directions=64, step_scale=0.5)
    z = (e.grad[:4] - exact()["free"]) / e.se[:4]
    assert np.all(np.abs(z) < 4), (e.grad[:4], e.se[:4], exact()["free"])


@pytest.mark.parametrize("law", ["counts", pytest.param("rings", marks=pytest.mark.slow)])
def test_score_estimator_matches_the_exact_gradient_of_the_router_splits(law):
    # SLI-aware Gate-and-Route with free splits: the router's draw is a per-decision
    # likelihood ratio, the randomised gate another; against the SLI chain's exact gradient.
    # Shorter prompts and longer outputs than small_model(), at a lower load: M = ceil(4 * 0.5)
    # = 2 mixed GPUs (4 mixed decode slots) and two solo GPUs (6 slots). With "rings" the
    # patience law is hyperexponential of cv 1 (the exponential law, drawn another way), so
    # the waiting jobs sit in per-class rings and the gradient is the same.
    model = small_model().replace(lambda_=(0.3, 0.3), theta=(3.0, 3.0), P=(0.5, 1.0),
                                  D=(2.0, 1.0))
    plan = fluid.solve(model, "bundled")
    simulated = model if law == "counts" else model.replace(
        patience=Patience.make("hyperexponential", 2, cv=1.0))
    split = np.array([0.6, 0.4])
    params = tunable.SLIParams(targets=TARGETS, split=split)
    system, _ = tunable.build_family("sli-gated", simulated, N, plan=plan, params=params,
                                     gate_temperature=TEMPERATURE)
    assert getattr(system, "per_job", False) == (law == "rings")
    out = sli_gradient(model, N, int(system.M), TARGETS, split, TEMPERATURE,
                       np.asarray(system.mixed_rate), np.asarray(system.solo_rate),
                       max_queue=3, max_buffer=1)
    assert out["truncation"] < 0.01
    want = np.r_[out["grad"]["log_targets"], out["grad"]["split"]]
    problem = Problem(family="sli-gated", model=simulated, n=N, plan=plan, horizon=1000.0,
                      warmup=20.0, reps=512, gate_temperature=TEMPERATURE)
    e = estimate(problem, "score", to_free(jax.tree.map(jnp.asarray, params)),
                 jax.random.key(5), discount=10.0)
    z = (e.grad - want) / e.se
    # The second target's derivative (exact: about -1e-5) comes from rare decisions (the gate
    # drawing while class 2 competes), so its standard error over 512 replications is itself
    # unreliable: 1.1e-6 on this key but 1e-4 on key 6, with counts as with rings (measured).
    # The rings' paths are other paths of the same law, so that coordinate is left out there.
    checked = [0, 2, 3] if law == "rings" else [0, 1, 2, 3]
    assert np.all(np.abs(z[checked]) < 4), (e.grad, e.se, want)
    assert np.max(np.abs(want / e.se)) > 5  # the splits' gradient is resolved


@pytest.mark.parametrize("name", ["score", pytest.param("pathwise", marks=pytest.mark.slow)])
def test_estimates_at_new_points_reuse_the_compiled_programs(name):
    # Tuning calls the estimator at a new point every step: the likelihood-ratio and relaxed
    # runs must not recompile (the parameters are array leaves; what is static compares by
    # value). The relaxed (reverse-mode) program takes 15 s to compile: it runs with -m slow.
    from jaxqueue import kernel

    free = to_free(jax.tree.map(jnp.asarray, params()))
    moved = to_free(jax.tree.map(jnp.asarray, tunable.GatedParams(
        targets=TARGETS * 1.3, offset=np.float64(0.2), share=np.float64(0.6),
        slack=np.float64(2.0), caps=np.full(2, 2.0))))
    small = problem(512, horizon=50.0)  # the programs of the test above: none compiled here
    estimate(small, name, free, jax.random.key(0), only=["targets"])
    before = (kernel.compile_count(), estimators._pathwise_run._cache_size())
    estimate(small, name, moved, jax.random.key(1), only=["targets"])
    assert (kernel.compile_count(), estimators._pathwise_run._cache_size()) == before


@pytest.mark.slow  # 45 s: two compilations of the 8-class score run
def test_a_likelihood_ratio_run_whose_buffer_overflows_is_rerun_larger(monkeypatch):
    # A ring too small for the run overflows (dolly-8class's decode buffer holds about a hundred
    # jobs at n = 10, most of them abandoned behind a live one); the score estimate reruns it on
    # the same key with rings four times larger (as simulate does), so it equals the estimate
    # made with rings of that size from the start.
    model = scenarios.load("dolly-8class")
    prob = Problem(family="gated", model=model, n=10, plan=fluid.solve(model, "bundled"),
                   horizon=100.0, warmup=20.0, reps=4, gate_temperature=20.0)
    free = to_free(jax.tree.map(jnp.asarray, prob.initial()))
    args = (prob, "score", free, jax.random.key(5))
    monkeypatch.setattr(common, "default_capacity", lambda n, queue=None: 128)
    large = estimate(*args, only=["targets"])
    monkeypatch.setattr(common, "default_capacity", lambda n, queue=None: 32)
    with pytest.warns(SimulationWarning, match="likelihood-ratio run.* 128 jobs"):
        small = estimate(*args, only=["targets"])
    np.testing.assert_array_equal(small.grad, large.grad)
    assert small.events == large.events and np.any(small.grad != 0)


def test_control_variates_give_no_weight_to_a_feature_the_fitting_half_never_saw():
    # Met on dolly-8class at n = 20: a control feature that was 0 up to round-off in one half
    # and 50 in one replication of the other got a coefficient from its vanishing scale, and
    # that replication's estimate came out 6.6e8 (the others within +-8e3).
    rng = np.random.default_rng(0)
    R = 64
    real = rng.normal(size=R)  # a useful control: most of g's spread
    g = (3.0 * real + rng.normal(size=R))[:, None]
    unseen = 1e-6 * rng.normal(size=R)
    unseen[0] = 50.0  # the even half's replication 0; the odd half sees round-off only
    out = estimators._control(g, np.stack([real, unseen], axis=-1)[:, None, :])
    assert np.abs(out).max() < 10 * np.abs(g).max()
    assert out.std() < 0.5 * g.std()  # the useful control still does its work
