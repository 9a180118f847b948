"""General patience laws: the draws have the law's mean and spread; the M/M/N+G queue that the
prefill buffer of the pooled engine forms (FG-SP's FCFS ring, or Gate-and-Route's per-class
rings) abandons with the exact probability of Baccelli and Hebuterne's formula; the per-class
rings of Gate-and-Route and Prioritize-and-Route, run with an exponential law in disguise
(hyperexponential, cv = 1), agree with the exact two-class chain of their count-queue model; the
exponential law changes no path; engines with count queues refuse the other laws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from jaxqueue import policies, scenarios, simulate, theory
from jaxqueue.model import Model, ModelError
from jaxqueue.patience import Patience, _gamma_quantile, abandon_probability
from jaxqueue.policies.pooled import Pooled


def test_the_abandonment_formula_is_erlang_a_for_exponential_patience():
    # The oracle checked against an independent one: the birth-death chain of Erlang-A.
    for servers, lam, mu, theta in [(2, 4.0, 2.0, 1.0), (5, 6.0, 1.0, 0.5), (1, 0.5, 1.0, 2.0)]:
        got = abandon_probability(servers, lam, mu, lambda x, theta=theta: np.exp(-theta * x),
                                  80 / theta)
        exact = theory.erlang_a(servers, lam, mu, theta)
        assert got["abandon"] == pytest.approx(exact["abandon_probability"], rel=1e-6)
        assert got["wait"] == pytest.approx(exact["wait_probability"], rel=1e-6)


@pytest.mark.parametrize("law,cv", [("exponential", 1.0), ("deterministic", 0.0),
                                    ("gamma", 0.5), ("gamma", 0.2), ("gamma", 2.0),
                                    ("lognormal", 2.0), ("hyperexponential", 3.0)])
def test_draws_have_the_mean_one_over_theta_and_the_law_spread(law, cv):
    law_ = Patience.make(law, 2, cv=None if law in ("exponential", "deterministic") else cv)
    u = jax.random.uniform(jax.random.key(0), (400_000,))
    x = np.asarray(jax.vmap(lambda v: law_.draw(v, jnp.float32(0.5), 1))(u), np.float64)
    se = x.std() / np.sqrt(x.size)
    assert abs(x.mean() - 2.0) <= max(4 * se, 1e-6)
    assert x.std() / x.mean() == pytest.approx(cv, abs=0.02 * max(cv, 1.0) + 4 * se)


def test_gamma_draws_follow_the_gamma_law():
    # Kolmogorov-Smirnov against SciPy's gamma (shape 4: Erlang-4), on the inverse-CDF draws.
    law = Patience.make("gamma", 1, cv=0.5)
    u = jax.random.uniform(jax.random.key(1), (20_000,))
    x = np.asarray(jax.vmap(lambda v: law.draw(v, jnp.float32(1.0), 0))(u), np.float64)
    assert sps.kstest(x, sps.gamma(4.0, scale=0.25).cdf).pvalue > 1e-3


def test_gamma_quantile_matches_scipy_from_shape_0_04_to_400():
    # cv from 5 down to 0.05; before, shapes below 0.25 were off by up to 20% in the CDF.
    u = np.concatenate([[1e-5, 1e-3], np.linspace(0.01, 0.99, 99), [1 - 1e-3, 1 - 1e-5]])
    for shape in (0.04, 0.1, 0.25, 1.0, 4.0, 100.0, 400.0):
        x = np.asarray(jax.jit(_gamma_quantile)(jnp.asarray(u, jnp.float32),
                                                 jnp.float32(shape)), np.float64)
        exact = sps.gamma(shape).ppf(u)
        big = exact > 1e-29  # smaller quantiles are returned as 1e-30
        assert np.all(np.abs(x[big] / exact[big] - 1.0) < 5e-4), shape
        assert np.all(x[~big] <= 1e-29), shape


def test_binary_search_counts_the_live_jobs_of_a_ring_with_rising_deadlines():
    from jaxqueue import buffer as buf

    rng = np.random.default_rng(0)
    # Jitted: one compilation per capacity, where op-by-op calls took 11 s.
    alive_sorted, alive = jax.jit(buf.alive_sorted), jax.jit(buf.alive)
    for _ in range(200):
        cap = int(rng.choice([1, 2, 8, 64]))
        size = int(rng.integers(0, cap + 1))
        head = int(rng.integers(0, cap))
        deadlines = np.sort(rng.choice([0.5, 1.0, 1.5, 2.0, 3.0], size))  # ties too
        data = np.full((cap, 3), -7.0)  # slots not held hold junk that must not count
        for k, d in enumerate(deadlines):
            data[(head + k) % cap] = (0.0, 0.0, d)
        ring = buf.Ring(data=jnp.asarray(data, jnp.float32), head=jnp.int32(head),
                        size=jnp.int32(size), overflow=jnp.bool_(False))
        for now in (0.0, 0.5, 1.2, 2.0, 5.0):
            assert int(alive_sorted(ring, now)) == int(alive(ring, now)) == int(
                np.sum(deadlines > now)), (cap, size, head, now)


def _mmng(patience, gate="fcfs", reps=48, horizon=600.0, warmup=60.0):
    """An M/M/2+G queue inside the pooled engine: FG-SP's FCFS prefill buffer in front of M = 2
    prefill slots (one class, 4 arrivals/s, prefills at 2/s, mean patience 1 s), decode slots
    that never fill (B = 64, solo decoding at 1,000 tokens/s), so the decode side takes every
    prefill at once."""
    model = Model(lambda_=[1.0], theta=[1.0], P=[512.0], D=[1.0], alpha=0.5, beta=0.0,
                  gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0, patience=patience)
    system = Pooled(model=model, n=jnp.int32(4), M=jnp.int32(2), x_star=jnp.full(1, 0.5),
                    q_star=jnp.zeros(1), gate=gate, capacity=512)
    assert system.per_job == (gate != "fcfs")
    run = simulate(jax.random.key(3), system, reps=reps, horizon=horizon, warmup=warmup)
    share = run.count("prefill_abandon")[:, 0] / run.count("arrivals")[:, 0]
    assert run.count("decode_abandon").sum() == 0  # the decode side never held a job
    return share, run


def _survival(law: Patience):
    cv = float(np.asarray(law.cv)[0])
    if law.law == "deterministic":
        return lambda x: (x < 1.0).astype(float)
    if law.law == "gamma":
        return sps.gamma(1 / cv**2, scale=cv**2).sf
    if law.law == "lognormal":
        s = np.sqrt(np.log1p(cv**2))
        return sps.lognorm(s, scale=np.exp(-s * s / 2)).sf
    raise AssertionError(law.law)


# Each law compiles its own program: the deterministic law's two cases run by default, the
# others with -m slow.
@pytest.mark.parametrize("law,cv,gate", [
    ("deterministic", None, "fcfs"), ("deterministic", None, "deviation"),
    pytest.param("gamma", 0.5, "fcfs", marks=pytest.mark.slow),
    pytest.param("lognormal", 2.0, "fcfs", marks=pytest.mark.slow)])
def test_mmng_abandonment_matches_the_exact_probability(law, cv, gate):
    patience = Patience.make(law, 1, cv=cv)
    share, _ = _mmng(patience, gate)
    exact = abandon_probability(2, 4.0, 2.0, _survival(patience), 200.0)["abandon"]
    exponential = theory.erlang_a(2, 4.0, 2.0, 1.0)["abandon_probability"]
    z = (share.mean() - exact) / (share.std(ddof=1) / np.sqrt(share.size))
    assert abs(z) <= 3, (law, share.mean(), exact)
    # The law matters here, so the test can tell a law from the exponential one.
    assert abs(exact - exponential) > 5 * share.std(ddof=1) / np.sqrt(share.size)


def test_the_exponential_law_changes_no_path():
    model = scenarios.load("paper-qwen8b")
    law = model.replace(patience=Patience.make("exponential", 2))
    runs = [simulate(jax.random.key(7), policies.build("fg-sp", m, 8)[0], reps=4, horizon=60.0,
                     warmup=10.0) for m in (model, law)]
    np.testing.assert_array_equal(runs[0].tallies, runs[1].tallies)
    np.testing.assert_array_equal(runs[0].level_integrals, runs[1].level_integrals)


def test_every_policy_takes_every_law_and_files_round_trip():
    from jaxqueue.patience import check_supported
    from jaxqueue.policies import tunable

    model = scenarios.load("paper-qwen8b").replace(
        patience=Patience.make("lognormal", 2, cv=[2.0, 0.5]))
    for policy in policies.POLICIES.values():
        for engine in policy.engines:
            system, _ = policies.build(policy.name, model, 8, engine=engine)
            # The gate's per-class queues are rings; FCFS admission has its one ring already.
            assert getattr(system, "per_job", policy.gate == "fcfs") == (policy.gate != "fcfs")
    for family in tunable.FAMILIES:
        tunable.build_family(family, model, 8)
    # The exponential law keeps the counts (and their paths: tests/test_paths.py).
    exponential = model.replace(patience=Patience.make("exponential", 2))
    sli, _ = policies.build("sli-gate-and-route", exponential, 8)
    gi, _ = policies.build("gi-wsp", exponential, 8)
    assert not sli.per_job and sli.capacity is None and sli.init().prefill_rings is None
    assert not gi.per_job and gi.init().class_rings is None
    # A system that keeps counts is still refused, by a message naming the ones that do not.
    with pytest.raises(ValueError, match="patience.law = 'lognormal' is not supported by X") as e:
        check_supported(model.patience, "X", counted=True)
    for name in ("sli-gate-and-route", "gi-wsp", "gf-wsp", "fi-wsp", "coupled", "sli-gated"):
        assert name in str(e.value)
    check_supported(model.patience, "X", counted=False)
    check_supported(None, "X", counted=True)
    # The exact chains count waiting jobs: they refuse the law rather than answer for another.
    from jaxqueue.exact_gradient import sli_gradient

    with pytest.raises(ValueError, match="not supported by the exact pooled chain"):
        theory.pooled_chain(model, 2, 1, "fg-sp", max_queue=1, max_buffer=1)
    with pytest.raises(ValueError, match="not supported by the exact chains"):
        sli_gradient(model, 2, 1, [0.5, 0.5], [1.0, 1.0], 1.0, [1.0, 1.0], [1.0, 1.0])
    again = Model.from_dict(model.to_dict())
    assert again.patience.law == "lognormal"
    np.testing.assert_allclose(again.patience.cv, [2.0, 0.5])
    bad = {**model.to_dict(), "patience": {"law": "gamma", "cv": -1.0}}
    with pytest.raises(ModelError, match=r"patience.cv = \[-1.0, -1.0\] is invalid"):
        Model.from_dict(bad)
    with pytest.raises(ModelError, match="unknown key patience.shape"):
        Model.from_dict({**model.to_dict(), "patience": {"law": "gamma", "shape": 2}})
    with pytest.raises(ValueError, match=r"patience.samples has 1 lists for 2 classes"):
        Patience.make("empirical", 2, samples=[[1.0, 2.0]])


@pytest.mark.parametrize("policy,gate", [
    ("gate-and-route", "deviation"),
    pytest.param("prioritize-and-route", "priority", marks=pytest.mark.slow)])
def test_per_class_rings_match_the_exact_chain(policy, gate):
    # The instance of the FCFS prefill-ring test (tests/test_exact_fcfs.py): prefills queue,
    # patience rates (3, 4) make many jobs abandon behind a live head, decodes are fast. A
    # hyperexponential law with cv = 1 is the exponential law, so the chain of the count-queue
    # model is exact for the per-class rings too (each job its own deadline; the gate sees the
    # live counts).
    from helpers import compare, exact_per_gpu
    from test_exact_fcfs import two_classes

    model, n, x_star = two_classes((1.0, 0.8), P=(1.0, 0.5), D=(0.05, 0.1)), 2, [0.3, 0.2]
    plan = {"x_star": x_star} if gate == "deviation" else {}
    r = theory.pooled_stationary(model, n, 1, policy, max_queue=7, max_buffer=1, **plan)
    assert r["truncation_mass"] < 1e-3
    exact = exact_per_gpu(model, r["x"], r["y_m"], r["y_s"], r["q_p"], r["q_d"])
    law = model.replace(patience=Patience.make("hyperexponential", 2, cv=1.0))
    system = Pooled(model=law, n=np.int32(n), M=np.int32(1), x_star=np.asarray(x_star),
                    q_star=np.zeros(2), gate=gate, capacity=256)
    assert system.per_job
    run = simulate(jax.random.key(31), system, reps=256, horizon=1000.0, warmup=50.0)
    # The decode buffer is all but empty: too few events for a z-score.
    z = compare(run, model, n, {k: v for k, v in exact.items() if k not in (
        "q_decode", "decode_abandonment_rate", "decode_wait")})
    assert max(abs(v) for v in z.values()) < 4.0, z


@pytest.mark.parametrize("policy,engine", [
    ("gate-and-route", "pooled"),
    pytest.param("sli-gate-and-route", "pooled", marks=pytest.mark.slow),
    pytest.param("gf-wsp", "per-gpu", marks=pytest.mark.slow),
    pytest.param("gi-wsp", "per-gpu", marks=pytest.mark.slow)])
def test_per_class_rings_account_for_every_job_across_chunks(policy, engine):
    # Lognormal patience (cv 2): jobs abandon behind live heads in every ring; 64-event chunks
    # cut most waits, so credits and discards cross many chunk boundaries.
    from test_accounting import check_flow_balance

    model = scenarios.load("paper-qwen8b").replace(
        patience=Patience.make("lognormal", 2, cv=2.0))
    system, _ = policies.build(policy, model, 6, engine=engine)
    assert system.per_job
    run = simulate(jax.random.key(1), system, reps=16, horizon=250.0, warmup=50.0,
                   chunk_events=64)
    check_flow_balance(run, policy, engine)


def test_simulate_reads_the_law_from_a_scenario_file_and_says_it(tmp_path, capsys):
    import json

    from jaxqueue.cli import main

    text = (scenarios.load("paper-qwen8b").replace(
        patience=Patience.make("gamma", 2, cv=0.5)).to_dict())
    lines = [f'name = "{text["name"]}"', "[gpu]", *(f"{k} = {v}" for k, v in text["gpu"].items()),
             "[pricing]", *(f"{k} = {v}" for k, v in text["pricing"].items())]
    for c in text["classes"]:
        lines += ["[[classes]]", *(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}"
                                   for k, v in c.items())]
    lines += ["[patience]", 'law = "gamma"', "cv = [0.5, 0.5]"]
    path = tmp_path / "timeout.toml"
    path.write_text("\n".join(lines) + "\n")
    args = ["simulate", str(path), "--gpus", "6", "--reps", "2", "--horizon", "30", "--warmup",
            "5"]
    assert main(args) in (0, None)
    assert "patience: gamma (coefficient of variation 0.5, 0.5;" in capsys.readouterr().out
    assert main([*args, "--json"]) in (0, None)
    assert json.loads(capsys.readouterr().out)["patience"] == {"law": "gamma",
                                                               "cv": [0.5, 0.5]}


@pytest.mark.slow
def test_the_gated_family_keeps_its_knobs_on_per_class_rings():
    # The gated family's caps and slack, binding, with every waiting job in a per-class ring.
    # A hyperexponential law with cv = 1 is the exponential law, so the rings must give the
    # counted queues' law (two independent runs, z-scores), and no class may ever run more
    # prefills than its cap.
    from helpers import two_sample_z

    from jaxqueue import stats
    from jaxqueue.policies import tunable

    model = scenarios.load("paper-qwen8b")
    n = 10
    params = tunable.GatedParams(targets=np.array([0.05, 0.25]), offset=np.float64(1.0),
                                 share=np.float64(0.4), slack=np.float64(0.1),
                                 caps=np.array([0.1, 0.2]))  # M = 4, slack 1 job, caps 1 and 2
    runs = {}
    for name, law in (("counted", None), ("rings", Patience.make("hyperexponential", 2, cv=1.0))):
        system, _ = tunable.build_family("gated", model.replace(patience=law), n, params=params)
        assert system.per_job == (law is not None)
        runs[name] = simulate(jax.random.key(5 if law else 6), system, reps=64, horizon=600.0,
                              warmup=100.0)
        # The caps hold: at most 1 and 2 prefills of each class at the end of every run and on
        # time average (the time average of a count kept <= cap is <= cap).
        end = runs[name].stock("x", "end")
        assert np.all(end <= np.array([1, 2])), end
    a, b = (stats.per_gpu(runs[k], model, n) for k in ("counted", "rings"))
    for key in ("revenue_bundled", "x", "q_prefill", "prefill_abandonment_rate"):
        z = two_sample_z(a[key], b[key])
        assert np.all(np.abs(z) < 4.0), (key, np.mean(a[key], 0), np.mean(b[key], 0), z)
    # The knobs bind: the slack and caps hold prefills back (fewer than the 4 slots on average).
    assert np.mean(np.sum(b["x"], axis=-1)) * n < 3.5


def test_a_string_or_boolean_where_a_cv_belongs_is_an_error_naming_the_field():
    for bad in ("0.5", True, [0.5, "1"]):
        with pytest.raises(ValueError, match=r"patience\.cv = .* must be a number or one per"):
            Patience.make("gamma", 2, cv=bad)


# ---- the SLI-aware router and the per-GPU engine's gate: per-class rings ----------------------
def _sli(model, n, M, split, capacity=512):
    """SLI-aware Gate-and-Route with M mixed GPUs and the router's solo share ``split``."""
    from jaxqueue.policies.sli import SLIGateAndRoute

    one = np.ones(model.num_classes)
    return SLIGateAndRoute(model=model, n=np.int32(n), M=np.int32(M), x_star=0.5 * one,
                           q_star=0 * one, y_m_star=one, y_s_star=one,
                           split=np.asarray(split, np.float64), capacity=capacity)


def _share(run, where):
    """Per replication, the share of the jobs entering a stage that abandon there."""
    if where == "prefill":
        return run.count("prefill_abandon")[:, 0] / run.count("arrivals")[:, 0]
    return run.count("decode_abandon")[:, 0] / run.count("prefill_done")[:, 0]


def _check_mmng(share, patience, servers, lam, mu):
    exact = abandon_probability(servers, lam, mu, _survival(patience), 200.0)["abandon"]
    exponential = theory.erlang_a(servers, lam, mu, 1.0)["abandon_probability"]
    se = share.std(ddof=1) / np.sqrt(share.size)
    z = (share.mean() - exact) / se
    assert abs(z) <= 3, (patience.law, share.mean(), exact, z)
    assert abs(exact - exponential) > 5 * se  # the test tells the law from the exponential one


# Each law compiles its own program: deterministic patience by default, lognormal with -m slow.
@pytest.mark.parametrize("law,cv,where", [
    ("deterministic", None, "decode"),
    pytest.param("deterministic", None, "prefill", marks=pytest.mark.slow),
    pytest.param("lognormal", 2.0, "decode", marks=pytest.mark.slow),
    pytest.param("lognormal", 2.0, "prefill", marks=pytest.mark.slow)])
def test_sli_router_rings_match_the_exact_mmng_abandonment(law, cv, where):
    # Prefill: the M/M/2+G queue of _mmng (M = 2 prefill slots at 2/s, 4 arrivals/s, mean
    # patience 1 s; decode slots that never fill). Decode: prefills at 200/s on M = 2 slots
    # (a queue almost never forms, and the departures of a stationary M/M/2 are Poisson), each
    # routed to either side with probability 1/2, whose 2 slots (B = 2; n - M = 1 solo GPU,
    # M = 2 mixed GPUs of B - 1 slots) decode at 2/s: each side is an M/M/2+G queue with 3
    # arrivals/s, so the decode abandonment of both sides together has that one probability.
    patience = Patience.make(law, 1, cv=cv)
    if where == "prefill":
        model = Model(lambda_=[1.0], theta=[1.0], P=[512.0], D=[1.0], alpha=0.5, beta=0.0,
                      gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0, patience=patience)
        system, (servers, lam, mu) = _sli(model, 4, 2, [1.0]), (2, 4.0, 2.0)
    else:
        model = Model(lambda_=[2.0], theta=[1.0], P=[512.0], D=[100.0], alpha=0.005, beta=0.0,
                      gamma=200.0, C=512.0, B=2, c_p=1.0, c_d=1.0, patience=patience)
        system, (servers, lam, mu) = _sli(model, 3, 2, [0.5]), (2, 3.0, 2.0)
        np.testing.assert_allclose([model.mu_p[0], model.mu_m[0], model.mu_s[0]],
                                   [200.0, 2.0, 2.0], rtol=1e-6)
    assert system.per_job
    run = simulate(jax.random.key(3), system, reps=48, horizon=600.0, warmup=60.0)
    other = "prefill" if where == "decode" else "decode"
    assert np.mean(_share(run, other)) < 1e-3  # the other stage is (all but) never full
    if where == "decode":  # both sides took their half
        routed = run.count("routed_solo")[:, 0].sum() / run.count("prefill_done")[:, 0].sum()
        assert abs(routed - 0.5) < 0.01
    _check_mmng(_share(run, where), patience, servers, lam, mu)


@pytest.mark.parametrize("policy,law,cv", [
    ("gi-wsp", "deterministic", None),
    pytest.param("gf-wsp", "lognormal", 2.0, marks=pytest.mark.slow),
    pytest.param("gate-and-route", "deterministic", None, marks=pytest.mark.slow),
    pytest.param("gi-wsp", "gamma", 0.5, marks=pytest.mark.slow)])
def test_per_gpu_gate_rings_match_the_exact_mmng_abandonment(policy, law, cv):
    # The per-GPU engine's gate over its per-class rings, one class: 4 arrivals/s, prefills at
    # 2/s, mean patience 1 s; decodes of one token (mixed iterations of 0.5 s, solo at 1,000/s)
    # never fill the B = 64 slots of a GPU. GI-WSP and GF-WSP on n = 2 GPUs (each GPU one
    # prefill server), Gate-and-Route on n = 4 with M = 2 mixed GPUs: an M/M/2+G queue.
    from jaxqueue.policies.per_gpu import PerGpu

    patience = Patience.make(law, 1, cv=cv)
    p = policies.resolve(policy)
    n, M = (4, 2) if p.layout == "planned" else (2, 0)
    model = Model(lambda_=[4.0 / n], theta=[1.0], P=[512.0], D=[1.0], alpha=0.5, beta=0.0,
                  gamma=1000.0, C=512.0, B=64, c_p=1.0, c_d=1.0, patience=patience)
    system = PerGpu(model=model, n=np.int32(n), M=np.int32(M), x_star=np.full(1, 0.5),
                    q_star=np.zeros(1), gpus=n, layout=p.layout, coupled=p.coupled,
                    gate=p.gate, capacity=512)
    assert system.per_job
    run = simulate(jax.random.key(4), system, reps=48, horizon=600.0, warmup=60.0)
    assert run.count("decode_abandon").sum() == 0  # decodes never waited
    _check_mmng(_share(run, "prefill"), patience, 2, 4.0, 2.0)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["coupled", "sli-gated"])
def test_tunable_families_on_rings_agree_with_their_counts(family):
    # The branches the exact chains above do not reach: the coupled family's cap on concurrent
    # prefills, binding (the freed capacity goes to the best able GPU, not the completing one),
    # and the smoothed sli-gated family (a gate drawing its class, with the router's draw and
    # the patience's on separate uniforms). A hyperexponential law with cv = 1 is the
    # exponential law, so rings and counts must agree in law (two independent runs).
    from helpers import two_sample_z

    from jaxqueue import stats
    from jaxqueue.policies import tunable

    model, n = scenarios.load("paper-qwen8b"), 8
    plan = policies.build("gate-and-route", model, n)[1]
    params = tunable.initial_params(family, model, n, plan)
    kw = {"gate_temperature": 0.5} if family == "sli-gated" else {}
    if family == "coupled":
        params = tunable.CoupledParams(targets=params.targets, offset=np.float64(1.0),
                                       cap=np.float64(0.25))  # at most 2 prefills at once
    runs = {}
    for name, law in (("counts", None), ("rings", Patience.make("hyperexponential", 2, cv=1.0))):
        system, _ = tunable.build_family(family, model.replace(patience=law), n, params=params,
                                         **kw)
        assert getattr(system, "per_job", False) == (law is not None)
        runs[name] = stats.per_gpu(simulate(jax.random.key(8 if law else 9), system, reps=64,
                                            horizon=600.0, warmup=100.0), model, n)
    a, b = runs["counts"], runs["rings"]
    keys = ("revenue_bundled", "x", "y_mixed", "y_solo", "q_prefill", "q_decode",
            "prefill_abandonment_rate", "decode_abandonment_rate")
    for key in keys:
        z = two_sample_z(a[key], b[key])
        assert np.all(np.abs(z) < 4.0), (key, np.mean(a[key], 0), np.mean(b[key], 0), z)
    # Not vacuous: jobs abandon from the rings (and with the cap, it binds: fewer than the two
    # prefills it allows run on average, while jobs wait).
    assert np.all(np.mean(b["prefill_abandonment_rate"], 0) > 0)
    if family == "coupled":
        assert np.mean(np.sum(b["x"], -1)) * n < 2.0
    else:
        assert np.all(np.mean(b["decode_abandonment_rate"], 0) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("policy,engine", [("sli-gate-and-route", "pooled"),
                                           ("gi-wsp", "per-gpu")])
def test_per_class_rings_that_overflow_grow_and_give_the_large_ring_result(policy, engine):
    # Rings of 4 jobs overflow (paper-qwen8b on 6 GPUs under a fixed timeout: up to 60 jobs may
    # wait per class). The driver grows them and reruns the batch with the same random numbers:
    # the counts are those of a run with the large rings from the start, and the waits too up
    # to the rounding of sums over rings of another length.
    from jaxqueue import driver

    model = scenarios.load("paper-qwen8b").replace(
        patience=Patience.make("deterministic", 2))
    kw = dict(reps=4, horizon=100.0, warmup=10.0, chunk_events=256)
    small, _ = policies.build(policy, model, 6, engine=engine, capacity=4)
    assert small.per_job and small.capacity == 4
    with pytest.warns(driver.SimulationWarning, match="overflowed"):
        grown = simulate(jax.random.key(2), small, **kw)
    assert grown.regrown >= 1 and grown.buffer_capacity > 4
    large, _ = policies.build(policy, model, 6, engine=engine, capacity=grown.buffer_capacity)
    direct = simulate(jax.random.key(2), large, **kw)
    assert direct.regrown == 0
    np.testing.assert_array_equal(grown.tallies, direct.tallies)
    np.testing.assert_allclose(grown.level_integrals, direct.level_integrals, rtol=1e-5)
    with pytest.raises(driver.BufferOverflowError, match="use 16 or more"):
        simulate(jax.random.key(2), small, grow_buffers=False, **kw)


def test_a_random_gate_on_rings_is_not_biased_by_a_dead_head():
    # The smoothed gated family's gate draws the class it admits; with equal keys each of two
    # classes is drawn with probability one half. Class 1's ring holds a job that has abandoned
    # in front of a live one, class 2's a live one. Drawing, discarding class 1's dead head
    # and drawing again would admit class 2 three times in four: the draw must wait until no
    # head is dead.
    import equinox as eqx

    from jaxqueue import buffer as buf
    from jaxqueue.kernel import Event
    from jaxqueue.policies.pooled import GatedParams

    model = scenarios.load("paper-qwen8b").replace(patience=Patience.make("deterministic", 2))
    big = jnp.float32(100.0)
    system = Pooled(model=model, n=jnp.int32(4), M=jnp.int32(1), x_star=jnp.full(2, 0.25),
                    q_star=jnp.zeros(2), gate="deviation", capacity=16,
                    params=GatedParams(targets=jnp.full(2, 0.25), offset=jnp.float32(0.0),
                                       share=jnp.float32(0.25), slack=big,
                                       caps=jnp.full(2, big)),
                    gate_temperature=jnp.float32(1.0))
    state = system.init()
    state = eqx.tree_at(lambda s: (s.M, s.slack, s.caps), state,
                        (jnp.int32(1), jnp.int32(100), jnp.full(2, 100, jnp.int32)))
    push = jax.vmap(buf.push, in_axes=(0, 0, None, None, None))
    rings = state.class_rings
    for cls, deadline in ((0, 0.5), (0, 10.0), (1, 10.0)):  # class 1's head dies at t = 0.5
        rings = push(rings, jnp.arange(2) == cls, jnp.int32(cls), jnp.float32(0.0),
                     jnp.float32(deadline))
    state = eqx.tree_at(lambda s: s.class_rings, state, rings)
    none = Event(index=jnp.int32(10), hot=jnp.zeros(10, jnp.int32))  # a bookkeeping step
    window = (jnp.float32(0.0), jnp.float32(100.0))

    @jax.jit
    @jax.vmap
    def admitted(key):
        s = state
        for u in jax.random.uniform(key, (4, system.num_random), jnp.float32):
            s, _ = system.fire(s, none, jnp.float32(1.0), u, window)
        return s.X

    X = np.asarray(admitted(jax.random.split(jax.random.key(0), 4000)))
    assert np.all(X.sum(axis=1) == 1)  # one job admitted, in every trajectory
    share, se = X[:, 1].mean(), np.sqrt(0.25 / len(X))
    assert abs(share - 0.5) < 4 * se, share
