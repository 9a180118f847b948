"""jaxqueue.sensitivity and `jaxqueue sensitivity`: simulated derivatives against exact ones, the
exact price split, the LP's derivatives against its duals, bad input, and the command end to end.
"""

import json
import math

import jax
import pytest

import jaxqueue as jq
from jaxqueue import fluid, scenarios, sensitivity, theory
from jaxqueue.cli import main


def erlang_model():
    """A model whose revenue is that of an Erlang-A queue. One class with P = C and tau = 1
    (mu_p = 1), B = 1 (a mixed GPU holds only its prefill slot) and c_d = 0: under separate
    pricing the revenue is c_p P = 1 per prefill completion, and the prefill stage is exactly
    M/M/M+M with arrival rate n lambda, service rate mu_p and patience rate theta, whatever the
    decode stage does. The separate LP plans x* = lambda / mu_p = 0.5, so n = 10 GPUs have
    M = 5 mixed (critically loaded: every derivative is far from 0)."""
    return jq.Model(name="erlang-a", lambda_=[0.5], theta=[0.5], P=[256], D=[1], alpha=0.5,
                    beta=0.5 / 256, gamma=10.0, C=256, B=1, c_p=1 / 256, c_d=0.0)


def erlang_revenue(model, n, M):
    """Exact revenue per GPU per second of :func:`erlang_model` (perturbed) on n GPUs, M mixed."""
    exact = theory.erlang_a(M, n * float(model.lambda_[0]), float(model.mu_p[0]),
                            float(model.theta[0]))
    return exact["throughput"] / n * float(model.c_p) * float(model.P[0])


@pytest.fixture(scope="module")
def erlang_run():
    return sensitivity.sensitivities(jax.random.key(3), erlang_model(), 10,
                                     policy="prioritize-and-route", reps=64, horizon=1000.0,
                                     warmup=50.0)


def test_simulated_derivatives_match_the_exact_erlang_a_derivatives(erlang_run):
    model, out = erlang_model(), erlang_run
    assert out["mixed_gpus"] == 5 and out["pricing"] == "separate"
    rows = {r["name"]: r for r in out["parameters"]}
    assert list(rows) == ["lambda_1", "theta_1", "alpha", "beta", "gamma", "c_p", "c_d"]
    for name in ("lambda_1", "theta_1", "alpha", "beta", "gamma"):
        r = rows[name]
        h = r["step"]
        assert h == pytest.approx(0.05 * abs(r["value"]))
        # The exact central difference over the same step, in float64: what the simulated
        # paired differences estimate without bias (gamma only moves the decode stage: 0).
        exact = (erlang_revenue(sensitivity._perturbed(model, r, h), 10, 5)
                 - erlang_revenue(sensitivity._perturbed(model, r, -h), 10, 5)) / (2 * h)
        sim = r["simulated"]
        assert abs(sim["mean"] - exact) < 4 * sim["se"], (name, sim, exact)
        if name != "gamma":  # precise enough for the agreement to mean something
            assert sim["se"] < 0.25 * abs(exact), (name, sim, exact)
    # dR/dc_p is P times the prefill completion rate per GPU: the Erlang-A throughput / n.
    c_p = rows["c_p"]["simulated"]
    exact = erlang_revenue(model, 10, 5) / float(model.c_p)
    assert abs(c_p["mean"] - exact) < 4 * c_p["se"]


def test_value_of_a_gpu_matches_erlang_a(erlang_run):
    gv = erlang_run["gpu_value"]
    # n = 9 keeps M = ceil(4.5) = 5 mixed GPUs; n = 11 has ceil(5.5) = 6.
    assert gv["mixed_gpus"] == {"9": 5, "10": 5, "11": 6}
    total = {n: n * erlang_revenue(erlang_model(), n, M) for n, M in ((9, 5), (10, 5), (11, 6))}
    more, fewer = gv["one_more"], gv["one_fewer"]
    assert abs(more["mean"] - (total[11] - total[10])) < 4 * more["se"]
    assert abs(fewer["mean"] - (total[10] - total[9])) < 4 * fewer["se"]
    for n in (9, 10, 11):
        r = gv["per_gpu"][str(n)]
        assert abs(r["mean"] - total[n] / n) < 4 * r["se"]


def test_price_derivatives_split_the_revenue_exactly(erlang_run):
    # Revenue is linear in the prices on a fixed path: R = c_p dR/dc_p + c_d dR/dc_d.
    model, out = erlang_model(), erlang_run
    rows = {r["name"]: r for r in out["parameters"]}
    split = (float(model.c_p) * rows["c_p"]["simulated"]["mean"]
             + float(model.c_d) * rows["c_d"]["simulated"]["mean"])
    assert split == pytest.approx(out["revenue_per_gpu"]["mean"], rel=1e-12)
    assert rows["c_p"]["difference"] == "exact" and rows["c_p"]["step"] is None


def test_lp_derivative_in_lambda_is_the_arrival_dual():
    model = scenarios.load("paper-qwen8b")
    for m in (model, model.replace(lambda_=[0.3, 0.2])):
        plan = fluid.solve(m, "bundled")
        lp = sensitivity.lp_derivatives(m, "bundled")
        for i in range(2):
            d = lp[f"lambda_{i + 1}"]
            assert not d["kink"]
            assert d["central"] == pytest.approx(plan.flow_duals["arrival"][i], rel=1e-6,
                                                 abs=1e-6)
            assert d["duals"] == pytest.approx(plan.flow_duals["arrival"][i], rel=1e-9, abs=1e-9)
    # On the paper's instance the prefill-heavy class is the valuable one, the decode-heavy
    # class's marginal arrivals abandon (q_p,1 > 0): 264.45 and 0.
    lp = sensitivity.lp_derivatives(model, "bundled")
    assert lp["lambda_2"]["central"] == pytest.approx(264.4544, abs=1e-3)
    assert lp["lambda_1"]["central"] == pytest.approx(0.0, abs=1e-6)
    # The envelope theorem reproduces the re-solved derivatives where the optimum is unique.
    for name in ("alpha", "beta", "gamma", "c_p", "c_d"):
        assert lp[name]["duals"] == pytest.approx(lp[name]["central"], rel=1e-5), name


def test_lp_kink_is_reported_at_a_degenerate_point():
    # With c_d = 0 the separate LP gains nothing from decoding: its optimum decodes anything
    # from nothing to everything, so R*(c_d) has a kink at 0 (a forward difference only) and the
    # duals of the vertex HiGHS returns need not give the re-solved derivative.
    lp = sensitivity.lp_derivatives(erlang_model(), "separate")
    assert lp["c_d"]["left"] is None and lp["c_d"]["central"] == pytest.approx(0.5, rel=1e-6)
    assert not lp["lambda_1"]["kink"]  # x* = 0.5: the prefill capacity does not bind
    # At lambda = mu_p the prefills fill every slot (sum x* = 1): below, each arrival is worth
    # c_p P = 1; above, nothing.
    corner = sensitivity.lp_derivatives(erlang_model().replace(lambda_=[1.0]), "separate")
    assert corner["lambda_1"]["kink"]
    assert corner["lambda_1"]["left"] == pytest.approx(1.0, rel=1e-6)
    assert corner["lambda_1"]["right"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    ({"n": 1}, "gpus = 1 is invalid: must be an integer >= 2"),
    ({"n": 2.5}, "gpus = 2.5 is invalid"),
    ({"reps": 1}, "reps = 1 is invalid: must be an integer >= 2"),
    ({"horizon": 100.0, "warmup": 100.0}, "horizon = 100.0 is invalid: must be finite and > "
                                          "warmup"),
    ({"warmup": -1.0}, "warmup = -1.0 is invalid: must be finite and >= 0"),
    ({"rel_step": 0.0}, "rel_step = 0.0 is invalid: must be in (0, 0.5]"),
    ({"rel_step": 0.6}, "rel_step = 0.6 is invalid"),
    ({"policy": "nope"}, "policy = 'nope' is unknown"),
    ({"policy": "fi-wsp", "engine": "pooled"}, "does not run on the pooled engine"),
])
def test_bad_input_names_the_field_and_range(kwargs, field):
    args = {"n": 10, "reps": 4, "horizon": 50.0, "warmup": 10.0, **kwargs}
    n = args.pop("n")
    with pytest.raises(ValueError) as err:
        sensitivity.sensitivities(jax.random.key(0), erlang_model(), n, **args)
    assert field in str(err.value)


def test_bad_input_on_the_command_line(capsys):
    for argv, text in (
        (["--gpus", "1"], "gpus = 1 is invalid: must be an integer >= 2"),
        (["--gpus", "5", "--reps", "1"], "reps = 1 is invalid: must be an integer >= 2"),
        (["--gpus", "5", "--rel-step", "0.7"], "rel_step = 0.7 is invalid: must be in (0, 0.5]"),
        (["--gpus", "5", "--horizon", "10", "--warmup", "10"], "warmup = 10: must be < horizon"),
        (["--gpus", "0"], "gpus = 0: must be an integer >= 1"),
    ):
        with pytest.raises(SystemExit) as err:
            main(["sensitivity", "paper-qwen8b", *argv])
        assert err.value.code == 2
        assert text in capsys.readouterr().err


def test_command_runs_end_to_end(capsys):
    argv = ["sensitivity", "paper-qwen8b", "--gpus", "5", "--reps", "4", "--horizon", "40",
            "--warmup", "10", "--devices", "1"]
    main([*argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["gpus"] == 5 and out["mixed_gpus"] == 2 and out["systems"] == 17
    assert [r["name"] for r in out["parameters"]] == [
        "lambda_1", "lambda_2", "theta_1", "theta_2", "alpha", "beta", "gamma", "c_p", "c_d"]
    assert out["lp_revenue"] == pytest.approx(297.716, abs=5e-4)
    for r in out["parameters"]:
        assert set(r["simulated"]) == {"mean", "ci95", "se"}
        assert math.isfinite(r["simulated"]["mean"]) and r["lp"]["central"] is not None
    rows = {r["name"]: r for r in out["parameters"]}
    split = 0.1 * rows["c_p"]["simulated"]["mean"] + 0.2 * rows["c_d"]["simulated"]["mean"]
    assert split == pytest.approx(out["revenue_per_gpu"]["mean"], rel=1e-12)
    assert set(out["gpu_value"]["per_gpu"]) == {"4", "5", "6"}
    main(argv)  # the same program again (compiled): the table
    text = capsys.readouterr().out
    assert "simulated dR/dp" in text and "one more GPU" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    main([*argv, "--estimate"])
    assert "estimated run time" in capsys.readouterr().err
