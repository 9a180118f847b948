"""Tuning: relaxed gradients against finite differences, the temperature-zero limit, a toy with
a known optimum (for the tuner and the benchmark's derivative-free searches), exact revenue of
the randomised gate, one compilation per shape, parameter files."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxqueue as jq
from jaxqueue import fluid, kernel, scenarios, stats
from jaxqueue.exact_gradient import gated_revenue
from jaxqueue.model import Model
from jaxqueue.policies import tunable
from jaxqueue.relax import Relaxed
from jaxqueue.search import _poll_search, evolution_strategy, pattern_search
from jaxqueue.tune import (
    Problem,
    evaluate,
    from_free,
    gradient,
    natural_steps,
    rprop_step,
    sli_penalty,
    to_free,
    tune,
)
from jaxqueue.tune import mask as tune_mask

PAPER = scenarios.load("paper-qwen8b")


def tiny_model():
    """tau = alpha = 1, C = 1: mu_p = (2, 1), mu_m = (0.5, 0.5), mu_s = (0.75, 0.75), B = 2."""
    return Model(lambda_=(0.8, 0.5), theta=(2.0, 1.5), P=(0.5, 1.0), D=(2.0, 2.0), alpha=1.0,
                 beta=0.0, gamma=1.5, C=1.0, B=2, c_p=1.0, c_d=0.5, name="tiny")


@pytest.mark.parametrize("family", ["gated", "coupled", "sli-gated"])
def test_the_lp_point_of_each_family_is_the_papers_policy(family):
    # At the LP point the families are the paper's policies, run by the same step: sample paths
    # bit for bit on the same random numbers (counters, time integrals, final clock).
    paper = {"gated": ("gate-and-route", "pooled"), "coupled": ("gi-wsp", "per-gpu"),
             "sli-gated": ("sli-gate-and-route", "pooled")}[family]
    reference, plan = jq.build(paper[0], PAPER, 10, engine=paper[1])
    system, _ = tunable.build_family(family, PAPER, 10, plan=plan)
    assert type(system) is type(reference)  # one implementation per policy
    a = jq.rollout(jax.random.key(0), reference, steps=3072, reps=3)
    b = jq.rollout(jax.random.key(0), system, steps=3072, reps=3)
    np.testing.assert_array_equal(np.asarray(a.summary.counts), np.asarray(b.summary.counts))
    np.testing.assert_array_equal(np.asarray(a.summary.integrals),
                                  np.asarray(b.summary.integrals))
    np.testing.assert_array_equal(np.asarray(a.time), np.asarray(b.time))


@pytest.mark.parametrize("family", ["gated", "coupled", "sli-gated"])
def test_the_lp_point_is_the_papers_policy_when_the_plan_serves_no_job_of_a_class(family):
    # With a TPOT target the SLI-constrained plan of dolly-8class serves none of class 2
    # (x_2* = 0): the paper's gate admits such a class only when no other waits. The family's
    # parameters floor its target at a small positive value (log coordinates); taken as a target
    # it tied class 2 with every idle class and admitted nearly all of its arrivals.
    model = scenarios.load("dolly-8class")
    sli = fluid.SLI(tpot=0.023, penalty=True, weights={"tpot": 1e5})
    plan = fluid.solve(model, "bundled", sli=sli)
    assert plan.x[1] == 0 and np.all(np.delete(plan.x, 1) > 0)
    paper = {"gated": ("gate-and-route", "pooled"), "coupled": ("gi-wsp", "per-gpu"),
             "sli-gated": ("sli-gate-and-route", "pooled")}[family]
    reference, _ = jq.build(paper[0], model, 10, engine=paper[1], plan=plan)
    system, params = tunable.build_family(family, model, 10, plan=plan)
    assert params.targets[1] == tunable.FLOOR
    np.testing.assert_array_equal(np.asarray(tunable.get_params(system).targets),
                                  params.targets)
    # the traceable path keeps it too, and the class's target changes nothing
    moved = dataclasses.replace(params, targets=params.targets * np.where(np.arange(8) == 1,
                                                                          1e3, 1.0))
    system = tunable.with_params(system, jax.tree.map(jnp.asarray, moved))
    a = jq.rollout(jax.random.key(0), reference, steps=3072, reps=3)
    b = jq.rollout(jax.random.key(0), system, steps=3072, reps=3)
    np.testing.assert_array_equal(np.asarray(a.summary.counts), np.asarray(b.summary.counts))
    np.testing.assert_array_equal(np.asarray(a.summary.integrals),
                                  np.asarray(b.summary.integrals))


@pytest.mark.slow
def test_relaxed_forward_pass_is_the_exact_one():
    # The straight-through relaxation changes gradients only: at any temperature the relaxed
    # forward pass takes the exact decisions for the same key.
    plan = fluid.solve(PAPER, "bundled")
    for temperature in (1e-3, 0.5):
        exact, _ = tunable.build_family("gated", PAPER, 10, plan=plan)
        relaxed, _ = tunable.build_family("gated", PAPER, 10, plan=plan,
                                          decide=Relaxed(temperature=temperature,
                                                         decision_temperature=temperature))
        a = jq.rollout(jax.random.key(1), exact, steps=2048, reps=2)
        b = jq.rollout(jax.random.key(1), relaxed, steps=2048, reps=2)
        np.testing.assert_array_equal(np.asarray(a.summary.counts),
                                      np.asarray(b.summary.counts))
        np.testing.assert_allclose(np.asarray(a.summary.integrals),
                                   np.asarray(b.summary.integrals), rtol=1e-5)
        assert b.state.X.dtype == jnp.float32  # counts carry gradients in relaxed mode


@pytest.mark.slow
def test_relaxed_gradient_at_low_temperature_is_the_pathwise_derivative():
    # float64, common random numbers: scaling every arrival rate by (1 + h) shifts event times
    # continuously and, for h small enough, flips no decision. At temperatures -> 0 the
    # straight-through surrogates add nothing, so the relaxed gradient must equal the central
    # finite difference of the exact engine's revenue integral.
    with jax.enable_x64(True):
        plan = fluid.solve(tiny_model(), "bundled")
        exact, _ = tunable.build_family("gated", tiny_model(), 2, plan=plan)
        relaxed = eqx.tree_at(lambda s: s.decide, exact,
                              Relaxed(temperature=1e-6, decision_temperature=1e-6))
        key = jax.random.key(3)

        def revenue(system, scale):
            model = system.model.replace(lambda_=system.model.lambda_ * scale)
            s = eqx.tree_at(lambda s: s.model, system, model)
            out = jq.rollout(key, s, steps=400, reps=2)
            return jnp.sum(out.summary.revenue.bundled_integral)

        grad = jax.grad(lambda c: revenue(relaxed, c))(1.0)
        h = 1e-7
        fd = (revenue(exact, 1.0 + h) - revenue(exact, 1.0 - h)) / (2 * h)
        assert abs(float(grad)) > 1e-3
        np.testing.assert_allclose(float(grad), float(fd), rtol=1e-5)


def test_estimators_refuse_what_they_cannot_differentiate():
    # Without smoothing the score estimator has no likelihood for the gate's targets, and the
    # per-GPU engine takes exact decisions only: each is an error naming the parameters, never a
    # silent zero. (That the smoothed family's score and pathwise estimates are right is checked
    # against exact chains in test_estimators; that a parameter not asked for gets zero, in
    # test_sli_family_split_gets_a_score_gradient_and_the_gate_none.)
    plan = fluid.solve(tiny_model(), "bundled")
    problem = Problem(family="gated", model=tiny_model(), n=2, plan=plan, horizon=60.0,
                      warmup=10.0, reps=4, gate_temperature=1.0)
    free = to_free(jax.tree.map(jnp.asarray, problem.initial()))
    plain = dataclasses.replace(problem, gate_temperature=None)
    with pytest.raises(ValueError, match=r"cannot differentiate \['targets'\].*not smoothed"):
        gradient(plain, "score", free, jax.random.key(0), only=["targets"])
    coupled = dataclasses.replace(problem, family="coupled", gate_temperature=None)
    with pytest.raises(ValueError, match="cannot differentiate.*per-GPU engine"):
        gradient(coupled, "pathwise", to_free(jax.tree.map(jnp.asarray, coupled.initial())),
                 jax.random.key(0))


@pytest.fixture(scope="module")
def share_toy():
    """One knob, the mixed share of a 4-GPU tiny system (every other parameter at the LP
    point). Revenue is linear in the share between integers (randomised rounding of M), so the
    optimum is the best integer M, known from the exact chains with the deterministic gate (tau
    small): M = 3, which is also the LP point's. The start is two GPUs away, at M = 1 (revenue
    0.57 against 1.09). Returns the problem, the start and the exact revenue per M."""
    model, n = tiny_model(), 4
    plan = fluid.solve(model, "bundled")
    exact = {M: gated_revenue(model, n, M, np.maximum(plan.x, 1e-6), 0.0, 1e-3, max_queue=6,
                              max_buffer=3)["revenue"] for M in range(1, n)}
    assert max(exact, key=exact.get) == 3 and exact[1] < 0.6 * exact[3]  # the start is far
    problem = Problem(family="gated", model=model, n=n, plan=plan, horizon=300.0, warmup=30.0,
                      reps=16)
    return problem, dataclasses.replace(problem.initial(), share=np.float64(1 / n)), exact


def test_tuning_a_one_parameter_toy_reaches_its_known_optimum(share_toy):
    # The tuner must end within one GPU of the optimum.
    problem, start, exact = share_toy
    result = tune(problem, steps=8, estimator="fd", learning_rate=0.3, eval_every=4,
                  eval_reps=16, seed=2, only=("share",), initial=start)
    for name in ("targets", "slack", "caps"):  # the others did not move (float32 log, exp)
        np.testing.assert_allclose(result.best["params"][name],
                                   result.initial["params"][name], rtol=1e-6)
    share = result.best["params"]["share"]
    assert abs(share * problem.n - 3) <= 1.0, (share * problem.n, exact)


def test_compass_search_finds_the_toys_optimum_within_its_budget(share_toy):
    # The tuning benchmark's reference search (jaxqueue.search.pattern_search) on the same toy.
    problem, start, exact = share_toy
    budget = 3e6
    result = pattern_search(problem, start, budget=budget, delta=2.0, only=("share",))
    assert abs(result.params.share * problem.n - 3) <= 0.5, (result.params.share, exact)
    for name in ("targets", "slack", "caps"):  # only the share was searched
        np.testing.assert_allclose(getattr(result.params, name), getattr(start, name),
                                   rtol=1e-6)
    steps = [h["step"] for h in result.history]
    events = [h["events"] for h in result.history]
    # The step only ever halves; the search stops once it is below a quarter step or the
    # budget is spent, so only its last sweep may cross the budget.
    assert all(b in (a, a / 2) for a, b in zip([2.0] + steps[:-1], steps, strict=True))
    assert steps[-1] < 0.25 or events[-1] >= budget
    assert all(e < budget for e in events[:-1]) and result.events == events[-1]


def _ridge(points, key, reps):
    # A narrow ridge along y0 = y1 rising to (6, 6): from (0, 0) a move of one coordinate by a
    # quarter step or more loses (40 per squared unit across the ridge), a move of both gains.
    # Common noise per replication (as common random numbers give), and a little of each
    # point's own; 100 events per point and replication.
    y = np.asarray(points)
    f = -40.0 * (y[:, 0] - y[:, 1]) ** 2 - 0.05 * (y[:, 0] + y[:, 1] - 12.0) ** 2
    common = np.asarray(jax.random.normal(key, (reps,)))
    own = 0.05 * np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (len(y), reps)))
    return f[:, None] + common + own, 100 * len(y) * reps


@pytest.mark.parametrize("confirm", [0, 3])
def test_pair_moves_climb_a_ridge_that_compass_moves_cannot(confirm):
    # jaxqueue.search's poll on a function known in closed form: the compass search stays at
    # its start, the search with pairs ends on the summit (a move of both coordinates by +2
    # gains 4.0), with or without confirmation on a fresh key.
    def run(pairs):
        return _poll_search(_ridge, np.zeros(2), np.arange(2), lambda y: np.clip(y, -20, 20),
                            budget=1e7, delta=2.0, min_delta=0.25, reps=16, seed=0,
                            pairs=pairs, confirm=confirm, confirm_reps=64, z=2.0)

    y, events, history = run(pairs=False)
    np.testing.assert_array_equal(y, [0.0, 0.0])
    assert [h["step"] for h in history] == [1.0, 0.5, 0.25, 0.125]
    y, events, history = run(pairs=True)
    np.testing.assert_allclose(y, [6.0, 6.0])
    assert history[-1]["step"] < 0.25 and events < 1e7
    # Three moves of (+2, +2), then the step halves.
    assert [h["step"] for h in history[:3]] == [2.0, 2.0, 2.0]


def test_evolution_strategy_finds_the_toys_optimum_within_its_budget(share_toy):
    # The benchmark's (1+1)-evolution strategy on the same toy.
    problem, start, exact = share_toy
    budget = 3e6  # about 20 iterations; with 1.2e6, two of six seeds ended at M < 2
    result = evolution_strategy(problem, start, budget=budget, sigma=1.0, seed=0,
                                only=("share",))
    assert abs(result.params.share * problem.n - 3) <= 1.0, (result.params.share, exact)
    events = [h["events"] for h in result.history]
    assert all(e < budget for e in events[:-1]) and events[-1] >= budget
    # The one-fifth rule with one tuned coordinate: sigma grows by exp(0.8 / 0.8) after a
    # success and shrinks by exp(-0.2 / 0.8) after a failure.
    sigmas = np.array([1.0] + [h["step"] for h in result.history])
    ratios = np.log(sigmas[1:] / sigmas[:-1])
    assert np.all(np.isclose(ratios, 1.0) | np.isclose(ratios, -0.25)), ratios


def test_the_rprop_rule_grows_holds_and_halves_its_steps():
    # Four coordinates over four steps, worked by hand from the rule: a direction that holds
    # grows the step 1.2x, a turn halves it and moves nothing that step, an estimate within
    # 2 SE of 0 moves nothing and keeps its size; with no finite SE the estimate's sign counts.
    size, last = np.ones(4), np.zeros(4)
    se = np.array([1.0, 1.0, 1.0, np.inf])
    moves, sizes = [], []
    for g in ([3.0, 3.0, 1.0, 1.0], [3.0, -3.0, 1.5, -1.0], [3.0, 3.0, -1.9, 1.0],
              [3.0, 3.0, 3.0, 1.0]):
        move, size, last = (np.asarray(v) for v in rprop_step(np.array(g), se, size, last))
        moves.append(move)
        sizes.append(size)
    np.testing.assert_allclose(moves, [[1, 1, 0, 1], [1.2, 0, 0, 0], [1.44, 0.5, 0, 0.5],
                                       [1.728, 0.6, 1, 0.6]], rtol=1e-6)
    np.testing.assert_allclose(sizes[1], [1.2, 0.5, 1, 0.5], rtol=1e-6)
    # The sizes stay within [1/16, 8].
    move, size, _ = rprop_step(np.array([5.0]), np.array([1.0]), np.array([7.5]), np.array([1.0]))
    assert float(size[0]) == 8.0 and float(move[0]) == 8.0
    move, size, _ = rprop_step(np.array([-5.0]), np.array([1.0]), np.array([0.07]),
                               np.array([1.0]))
    assert float(size[0]) == 0.0625 and float(move[0]) == 0.0


def test_the_gated_rule_moves_only_what_its_estimate_supports():
    # The per-step record of a gated run agrees with the rule: a coordinate whose estimate is
    # within 2 standard errors of 0 does not move, none moves more than the learning rate, and
    # a move has the sign of its estimate (the family's ranges may shorten it, never flip it).
    model, n = tiny_model(), 4
    problem = Problem(family="gated", model=model, n=n, plan=fluid.solve(model, "bundled"),
                      horizon=100.0, warmup=20.0, reps=8)
    rate = 0.3
    result = tune(problem, steps=3, estimator="fd", learning_rate=rate, eval_every=3,
                  eval_reps=8, seed=1, rule="gated")
    z, moves = np.asarray(result.history["z"]), np.asarray(result.history["moves"])
    assert z.shape == moves.shape and z.shape[0] == 3
    quiet = np.isfinite(z) & (np.abs(z) <= 2.0)
    assert quiet.any() and np.all(moves[quiet] == 0.0)
    assert np.all(np.abs(moves) <= rate * (1 + 1e-5))
    moved = moves != 0.0
    assert np.all(np.sign(moves[moved]) == np.sign(z[moved]))
    assert moved.any(), (z, moves)  # the check above must have something to check


def test_parameter_changes_do_not_recompile():
    plan = fluid.solve(PAPER, "bundled")
    problem = Problem(family="coupled", model=PAPER, n=8, plan=plan, horizon=20.0, warmup=5.0,
                      reps=2)
    p0 = problem.initial()
    evaluate(problem, p0, jax.random.key(0))
    before = kernel.compile_count()
    for cap in (0.5, 0.8):
        evaluate(problem, dataclasses.replace(p0, cap=np.float64(cap),
                                              offset=np.float64(1.0)), jax.random.key(1))
    assert kernel.compile_count() == before


def test_parameter_files_round_trip_and_refuse_bad_input(tmp_path):
    plan = fluid.solve(PAPER, "bundled")
    params = tunable.initial_params("coupled", PAPER, 20, plan)
    path = tmp_path / "p.json"
    tunable.save_params(path, "coupled", params, scenario=PAPER.name, gpus=20)
    family, loaded, meta = tunable.load_params(path, PAPER)
    assert family == "coupled" and meta["gpus"] == 20
    np.testing.assert_array_equal(loaded.targets, params.targets)
    bad = path.read_text().replace('"cap": 1.0', '"cap": 2.0')
    path.write_text(bad)
    with pytest.raises(ValueError, match=r"params.cap = 2.0 is invalid: must be finite and in"):
        tunable.load_params(path, PAPER)
    free = to_free(jax.tree.map(jnp.asarray, params))
    back = from_free(free)
    np.testing.assert_allclose(np.asarray(back.targets), params.targets, rtol=1e-6)


def test_only_names_known_parameters():
    plan = fluid.solve(PAPER, "bundled")
    free = to_free(jax.tree.map(jnp.asarray, tunable.initial_params("gated", PAPER, 20, plan)))
    with pytest.raises(ValueError, match=r"only = \['cap'\] is invalid: must name one or more"):
        tune_mask(free, ["cap"])
    m = tune_mask(free, ["share", "caps"])
    assert float(m.share) == 1.0 and np.all(np.asarray(m.caps) == 1.0)
    assert np.all(np.asarray(m.targets) == 0.0) and float(m.slack) == 0.0


def test_tune_command_saves_what_simulate_params_reruns(tmp_path, capsys):
    from jaxqueue.cli import main

    saved, plot = tmp_path / "tuned.json", tmp_path / "curve.png"
    code = main(["tune", "paper-qwen8b", "--gpus", "6", "--family", "gated", "--steps", "2",
                 "--reps", "2", "--horizon", "30", "--warmup", "5", "--eval-every", "1",
                 "--eval-reps", "3", "--no-baselines", "--only", "share,offset",
                 "--save", str(saved), "--plot", str(plot), "--json", "--rule", "gated"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, None)
    assert {"lp", "tuned", "baselines", "steps", "wall_seconds", "starts", "start"} <= set(out)
    assert out["rule"] == "gated"
    assert set(out["starts"]) == {"gated: LP point", "gated: LP point, rank after admission"}
    for part in ("lp", "tuned"):
        assert set(out[part]) == {"params", "revenue"}
        assert set(out[part]["revenue"]) == {"mean", "ci95"}
    # Only the named parameters moved from the start.
    start = tunable.starting_points("gated", PAPER, 6, fluid.solve(PAPER, "bundled"))
    first = start["LP point, rank after admission" if "rank" in out["start"] else "LP point"]
    np.testing.assert_allclose(out["tuned"]["params"]["targets"], first.targets)
    assert plot.stat().st_size > 1000
    code = main(["simulate", "paper-qwen8b", "--gpus", "6", "--params", str(saved), "--reps", "2",
                 "--horizon", "30", "--warmup", "5", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert code in (0, None)
    assert again["revenue_per_gpu"]["bundled"]["mean"] > 0


def test_sli_penalty_by_hand():
    x = np.array([[0.1, 0.3], [0.2, 0.2]])
    y_s = np.array([[5.0, 2.0], [1.0, 1.5]])
    sli = fluid.SLI(prefill_fairness=0.1, decode_fairness=1.0, tpot=0.02,
                    weights={"prefill_fairness": 2.0, "tpot": 1000.0})
    got = np.asarray(sli_penalty(PAPER, sli, x, y_s))
    tpot = stats.tpot(PAPER, np.array([0.4, 0.4]))
    want = (2.0 * np.array([0.1, 0.0]) + np.array([2.0, 0.0])
            + 1000.0 * np.maximum(tpot - 0.02, 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(np.asarray(sli_penalty(PAPER, None, x, y_s)) == 0.0)


def test_objective_subtracts_the_penalties_of_the_measured_slis():
    sli = fluid.SLI(decode_fairness=0.5, prefill_fairness=0.01, weights={"decode_fairness": 3.0})
    plan = fluid.solve(PAPER, "bundled", sli=fluid.SLI(decode_fairness=0.5, penalty=True))
    problem = Problem(family="sli-gated", model=PAPER, n=6, plan=plan, horizon=40.0,
                      warmup=10.0, reps=3, sli=sli)
    d = evaluate(problem, problem.initial(), jax.random.key(2), detail=True)
    excess = (3.0 * np.maximum(d["decode_fairness"] - 0.5, 0.0)
              + np.maximum(d["prefill_fairness"] - 0.01, 0.0))
    assert np.all(excess > 0)  # the targets bind, so the test can fail
    np.testing.assert_allclose(d["objective"], d["revenue"] - excess, rtol=1e-5)


def test_sli_family_split_gets_a_score_gradient_and_the_gate_none():
    plan = fluid.solve(PAPER, "bundled")
    problem = Problem(family="sli-gated", model=PAPER, n=8, plan=plan, horizon=60.0,
                      warmup=10.0, reps=4, sli=fluid.SLI(decode_fairness=1.0))
    free = to_free(jax.tree.map(jnp.asarray, problem.initial()))
    g, _ = gradient(problem, "score", free, jax.random.key(3), only=["split"])
    assert np.all(np.asarray(g.targets) == 0.0)  # not asked for
    assert np.any(np.asarray(g.split) != 0.0) and np.all(np.isfinite(np.asarray(g.split)))
    with pytest.raises(ValueError, match=r"cannot differentiate \['targets'\]"):
        gradient(problem, "score", free, jax.random.key(3))  # the gate is exact: no likelihood
    with pytest.raises(ValueError, match="gate_temperature is for the gated and sli-gated"):
        tunable.build_family("coupled", PAPER, 8, plan=plan, gate_temperature=0.5)


def test_tune_with_sli_targets_reports_them_and_simulate_replans(tmp_path, capsys):
    from jaxqueue.cli import main

    saved = tmp_path / "sli.json"
    code = main(["tune", "paper-qwen8b", "--gpus", "6", "--family", "sli-gated", "--steps", "1",
                 "--estimator", "spsa", "--reps", "2", "--horizon", "30", "--warmup", "5",
                 "--eval-reps", "3", "--no-baselines", "--decode-fairness", "2",
                 "--penalty", "--penalty-weight", "4", "--save", str(saved),
                 "--plot", str(tmp_path / "c.png"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, None)
    assert out["sli"] == {"targets": {"decode_fairness": 2.0}, "penalty": True,
                          "weights": {"decode_fairness": 4.0}}
    for part in ("lp", "tuned"):
        assert set(out[part]) == {"params", "revenue", "objective"}
        assert set(out[part]["objective"]["sli"]) == set(stats.SLI_KEYS)
        assert out[part]["objective"]["mean"] <= out[part]["revenue"]["mean"] + 1e-9
    assert set(out["tuned"]["params"]) == {"targets", "split"}
    code = main(["simulate", "paper-qwen8b", "--gpus", "6", "--params", str(saved), "--reps", "2",
                 "--horizon", "30", "--warmup", "5", "--json"])
    again = json.loads(capsys.readouterr().out)
    plan = fluid.solve(PAPER, "bundled", sli=fluid.SLI(decode_fairness=2.0, penalty=True,
                                                        weights={"decode_fairness": 4.0}))
    assert code in (0, None) and again["lp_revenue"] == pytest.approx(plan.revenue)


def test_a_non_finite_estimate_is_skipped_and_reported(monkeypatch):
    import jaxqueue.tune as tune_module

    plan = fluid.solve(PAPER, "bundled")
    problem = Problem(family="gated", model=PAPER, n=6, plan=plan, horizon=30.0, warmup=5.0,
                      reps=2)
    real = tune_module.gradient

    def broken(problem, estimator, free, key, **kw):
        g, info = real(problem, estimator, free, key, **kw)
        return jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), g), info

    monkeypatch.setattr(tune_module, "gradient", broken)
    result = tune(problem, steps=2, estimator="spsa", eval_every=2, eval_reps=2)
    assert result.history["skipped"] == [1, 2]
    assert all(v == 0.0 for move in result.history["moves"] for v in move)
    first, last = result.history["evaluations"][0], result.history["evaluations"][-1]
    np.testing.assert_allclose(last["params"]["share"], float(problem.initial().share),
                               rtol=1e-6)
    # Every evaluation runs on one key: the unmoved point earns exactly what the start earned
    # (fresh keys would differ by their noise), so the choice among evaluations is paired.
    assert last["mean"] == first["mean"] and last["gain"] == {"mean": 0.0, "ci95": 0.0}
    assert result.evaluation_events > 0


@pytest.mark.parametrize("real_gain", [False, True])
def test_confirm_returns_the_start_unless_the_chosen_point_wins_on_a_fresh_key(monkeypatch,
                                                                              real_gain):
    # The steps raise the share; on the tuner's own key every evaluation rewards it (a lucky
    # key), on the confirmation's fresh key it gains only if real_gain. With confirm the tuner
    # must return the moved point exactly when the fresh key supports it.
    import jaxqueue.tune as tune_module

    plan = fluid.solve(PAPER, "bundled")
    problem = Problem(family="gated", model=PAPER, n=6, plan=plan, horizon=30.0, warmup=5.0,
                      reps=2)
    real = tune_module.gradient
    check = np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(3), 2_000_000)))

    def upward(problem, estimator, free, key, **kw):
        g, info = real(problem, estimator, free, key, **kw)
        return dataclasses.replace(jax.tree.map(jnp.zeros_like, g),
                                   share=jnp.ones_like(g.share)), info

    def evaluate(problem, params, key, reps, detail=True):
        noise = np.linspace(-1.0, 1.0, reps)  # the same on every point: common random numbers
        fresh = np.array_equal(np.asarray(jax.random.key_data(key)), check)
        lift = 100.0 * float(params.share) if (real_gain or not fresh) else 0.0
        return {"objective": noise + lift, "events": 1, "capacity": problem.capacity}

    monkeypatch.setattr(tune_module, "gradient", upward)
    monkeypatch.setattr(tune_module, "evaluate", evaluate)
    result = tune(problem, steps=2, estimator="spsa", eval_every=1, eval_reps=4, seed=3,
                  confirm=4)
    moved = result.history["evaluations"][-1]["params"]["share"]
    assert moved > float(problem.initial().share)  # the steps moved, and looked better
    confirmation = result.history["confirmation"]
    assert confirmation["reps"] == 16 and confirmation["kept"] is real_gain
    expected = moved if real_gain else float(problem.initial().share)
    np.testing.assert_allclose(result.best["params"]["share"], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="confirm"):
        tune(problem, steps=1, estimator="spsa", confirm=-1)


def test_returned_average_is_the_mean_of_the_last_half_of_the_iterates(monkeypatch):
    # The share's estimate points up for two steps and down for two (the gated rule, no noise:
    # each step moves exactly the learning rate in natural steps), so the iterates are
    # y0 + (1, 2, 1, 0) lr. Every evaluation rewards the share, so "best" returns the top of
    # the path; "average" must return the mean of steps 3 and 4, y0 + lr / 2, whatever its
    # evaluation says.
    import jaxqueue.tune as tune_module

    plan = fluid.solve(PAPER, "bundled")
    problem = Problem(family="gated", model=PAPER, n=6, plan=plan, horizon=30.0, warmup=5.0,
                      reps=2)
    real, calls = tune_module.gradient, []

    def up_then_down(problem, estimator, free, key, **kw):
        g, info = real(problem, estimator, free, key, **kw)
        calls.append(None)
        sign = 1.0 if len(calls) <= 2 else -1.0
        zero = jax.tree.map(jnp.zeros_like, g)
        return (dataclasses.replace(zero, share=jnp.full_like(g.share, sign)),
                {**info, "se": zero})

    def evaluate(problem, params, key, reps, detail=True):
        return {"objective": np.linspace(-1.0, 1.0, reps) + 100.0 * float(params.share),
                "events": 1, "capacity": problem.capacity}

    monkeypatch.setattr(tune_module, "gradient", up_then_down)
    monkeypatch.setattr(tune_module, "evaluate", evaluate)
    share0, lr = float(problem.initial().share), 0.3
    step = float(natural_steps(problem, problem.initial()).share)
    results = {}
    for returned in ("best", "average"):
        calls.clear()
        results[returned] = tune(problem, steps=4, estimator="spsa", rule="gated",
                                 learning_rate=lr, eval_every=1, eval_reps=4,
                                 returned=returned)
    np.testing.assert_allclose(results["best"].best["params"]["share"], share0 + 2 * lr * step,
                               rtol=1e-5)
    average = results["average"].best
    np.testing.assert_allclose(average["params"]["share"], share0 + 0.5 * lr * step, rtol=1e-5)
    assert average["averaged"] == [3, 4] and average["step"] == 4
    assert average["gain"]["mean"] == pytest.approx(100.0 * 0.5 * lr * step, rel=1e-4)
    with pytest.raises(ValueError, match="returned"):
        tune(problem, steps=1, estimator="spsa", returned="last")
    with pytest.raises(ValueError, match="confirm"):
        tune(problem, steps=1, estimator="spsa", returned="average", confirm=2)


def test_tune_smoothed_reports_the_start_the_gain_and_the_deterministic_policy(capsys):
    from jaxqueue.cli import main

    code = main(["tune", "paper-qwen8b", "--gpus", "6", "--family", "gated", "--temperature",
                 "20", "--estimator", "score", "--discount", "5", "--steps", "1", "--reps", "2",
                 "--horizon", "30",
                 "--warmup", "5",
                 "--eval-reps", "3", "--no-baselines", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, None)
    assert out["estimator"] == "score" and out["temperature"] == 20.0
    assert out["rule"] == "rprop"  # auto on score estimates
    assert {"name", "params", "revenue", "steps_gained"} <= set(out["started"])
    assert set(out["tuned"]["deterministic"]) == {"revenue"}
    # The start and the tuned point are evaluated on the same key, so the paired gain is the
    # difference of their means.
    gain = out["started"]["steps_gained"]["mean"]
    assert gain == pytest.approx(out["tuned"]["revenue"]["mean"]
                                 - out["started"]["revenue"]["mean"], abs=1e-9)


def test_a_smoothed_tuned_file_rebuilds_the_smoothed_policy(tmp_path):
    # tune --temperature T --save writes T; simulate/compare --params rebuild that policy.
    from jaxqueue.compare import tuned_system

    plan = fluid.solve(PAPER, "bundled")
    params = tunable.initial_params("gated", PAPER, 20, plan)
    path = tmp_path / "smooth.json"
    tunable.save_params(path, "gated", params, scenario=PAPER.name, gpus=20, temperature=20.0)
    system = tuned_system(path, PAPER, 20)[0]
    assert float(system.gate_temperature) == 20.0 and system.smoothed
    tunable.save_params(path, "gated", params, scenario=PAPER.name, gpus=20, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature = -1.0 is invalid"):
        tuned_system(path, PAPER, 20)


@pytest.mark.slow  # 8-class compilations
def test_tune_and_searches_keep_the_rings_their_first_run_grew(monkeypatch):
    # dolly-8class at n = 10 needs rings of about a hundred slots; sized at 32 they overflow.
    # The start's evaluation grows them (one warning); the steps then start at that size and
    # never rerun, and the searches alike after their first batch.
    import warnings

    from jaxqueue.policies import common
    from jaxqueue.search import evolution_strategy

    model = scenarios.load("dolly-8class")
    problem = Problem(family="gated", model=model, n=10, plan=fluid.solve(model, "bundled"),
                      horizon=100.0, warmup=20.0, reps=4)
    monkeypatch.setattr(common, "default_capacity", lambda n, queue=None: 32)
    for run in (lambda: tune(problem, steps=3, estimator="spsa", eval_every=3),
                lambda: evolution_strategy(problem, problem.initial(), budget=3e5)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
        grown = [w for w in caught if "overflowed" in str(w.message)]
        assert len(grown) == 1 and "128 jobs" in str(grown[0].message), [
            str(w.message) for w in grown]


def test_the_gated_rule_steps_on_signal_and_stays_on_noise():
    from jaxqueue.tune import gated_step

    # By hand from the rule lr * sign(g) * max(0, 1 - (2 se / g)^2): 10 standard errors out
    # moves 0.96 of a step, 2 standard errors or fewer moves nothing, an unknown standard error
    # a full step.
    step = np.asarray(gated_step(np.array([1.0, -1.0, 0.2, -0.1, 0.5, 0.0]),
                                 np.array([0.1, 0.1, 0.1, 0.1, np.nan, 0.1]), 0.3))
    np.testing.assert_allclose(step, [0.288, -0.288, 0.0, 0.0, 0.3, 0.0], rtol=1e-6)
    # An estimate that is pure noise (g ~ N(0, se^2)) moves its coordinate about 0.0115 of a
    # step on average (2 * integral over z > 2 of (1 - 4/z^2) phi(z), by quadrature), and only
    # when |Z| > 2 (probability 0.0455), where Adam moves it a sizeable fraction of a step at
    # every step.
    from scipy import integrate
    from scipy.stats import norm

    exact = 2 * integrate.quad(lambda t: (1 - 4 / t**2) * norm.pdf(t), 2, np.inf)[0]
    z = np.asarray(jax.random.normal(jax.random.key(0), (200_000,)), np.float64)
    moved = np.abs(np.asarray(gated_step(z, np.ones_like(z), 1.0)))
    assert abs(moved.mean() - exact) < 4 * moved.std() / np.sqrt(z.size), (moved.mean(), exact)
    assert abs((moved > 0).mean() - 2 * norm.sf(2)) < 4 * np.sqrt(0.0455 * 0.9545 / z.size)
    with pytest.raises(ValueError, match="rule = 'sgd' is invalid: must be one of"):
        tune(Problem(family="gated", model=PAPER, n=6, plan=fluid.solve(PAPER, "bundled"),
                     horizon=30.0, warmup=5.0, reps=2), steps=1, rule="sgd")


class _Stop(Exception):
    """Raised by the spy of :func:`_tuner_calls`: the tuner's arguments were seen, nothing ran."""


#: A tuning run too small to matter: the spy stops it before its first step.
_SMALL = dict(steps=1, reps=2, horizon=20.0, warmup=5.0, eval_reps=2, baselines=False,
              family="gated")


def _tuner_calls(monkeypatch, *calls):
    """What ``tune``'s command hands the tuner (its problem and keywords) for each set of
    arguments; a refusal raises before the tuner, so ``pytest.raises(ValueError)`` around
    :func:`_compare` also says that nothing was tuned."""
    from jaxqueue import tune as tune_module

    seen = []

    def spy(problem, **kw):
        seen.append((problem, kw))
        raise _Stop

    monkeypatch.setattr(tune_module, "tune", spy)
    for kw in calls:
        with pytest.raises(_Stop):
            _compare(**kw)
    return seen


def _compare(**kw):
    from jaxqueue.tune_cli import compare

    return compare(PAPER, 6, **{**_SMALL, **kw})


def test_step_scale_reaches_the_tuner_and_is_refused_where_it_means_nothing(monkeypatch):
    seen = _tuner_calls(monkeypatch, dict(estimator="fd", step_scale=0.5),
                        dict(step_scale=0.25), dict(estimator="fd"))  # auto -> fd
    assert [(kw["estimator"], kw["step_scale"]) for _, kw in seen] == [
        ("fd", 0.5), ("fd", 0.25), ("fd", 1.0)]
    for kw, message in ((dict(step_scale=0.0), "step-scale = 0.0: must be finite and > 0"),
                        (dict(step_scale=float("nan")), "step-scale = nan"),
                        (dict(step_scale=0.5, estimator="score", temperature=20.0),
                         "step-scale is for --estimator fd or spsa")):
        with pytest.raises(ValueError, match=message):
            _compare(**kw)


def test_confirm_reaches_the_tuner(monkeypatch):
    seen = _tuner_calls(monkeypatch, dict(confirm=4), dict())
    assert [kw["confirm"] for _, kw in seen] == [4, 0]


def test_returned_reaches_the_tuner(monkeypatch):
    seen = _tuner_calls(monkeypatch, dict(returned="average"), dict())
    assert [kw["returned"] for _, kw in seen] == ["average", "best"]


def test_gate_steps_reach_the_estimator_and_are_refused_where_they_mean_nothing(monkeypatch):
    seen = _tuner_calls(monkeypatch, dict(estimator="fd", temperature=20.0, gate_steps=True),
                        dict(estimator="fd", temperature=20.0))
    assert [(kw["estimator"], kw["options"], problem.gate_temperature)
            for problem, kw in seen] == [("fd", {"gate_steps": True}, 20.0), ("fd", {}, 20.0)]
    for kw, message in ((dict(estimator="fd"), "gate-steps needs --temperature"),
                        (dict(temperature=20.0, estimator="score"),
                         r"gate-steps is for --estimator fd or spsa \(perturbations\), not "
                         "'score'")):
        with pytest.raises(ValueError, match=message):
            _compare(gate_steps=True, **kw)


def test_by_default_fd_with_adam_and_score_with_the_rprop_rule(monkeypatch):
    # Measured: fd is the most accurate estimator for its events on every truth case; in the
    # tuning benchmark Adam on score estimates returned its start where the gated rule gained,
    # the rprop rule gained more than the gated one, and on fd estimates Adam gained most. What
    # the caller names is kept.
    seen = _tuner_calls(monkeypatch, dict(estimator="score", temperature=20.0), dict(),
                        dict(temperature=20.0),
                        dict(estimator="score", temperature=20.0, rule="adam"),
                        dict(estimator="fd", rule="rprop"))
    # auto is fd, smoothed or not: the most accurate estimator for its events in the benchmark
    assert [(kw["estimator"], kw["rule"]) for _, kw in seen] == [
        ("score", "rprop"), ("fd", "adam"), ("fd", "adam"), ("score", "adam"), ("fd", "rprop")]
    with pytest.raises(ValueError, match="rule = 'sgd' is invalid: must be auto or one of"):
        _compare(rule="sgd")
    with pytest.raises(ValueError, match="discount is the score estimator's credit window"):
        _compare(temperature=20.0, discount=50.0)  # auto: fd
