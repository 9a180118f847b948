"""Phase-type service laws: the fits have the moments asked for; the pooled engine with Erlang
and hyperexponential prefill and decode times agrees with exact chains written here from the
model's rules (time averages, rates, revenue: |z| <= 3); a one-phase law runs the phase
machinery and gives the exponential paths bit for bit; systems that cannot follow phases refuse
them; scenario files round-trip the [service] table and name what is wrong in it."""

import dataclasses
import math

import jax
import numpy as np
import pytest
from helpers import compare, deviation_gate, enumerate_chain, z_scores

from jaxqueue import policies, scenarios, service, simulate
from jaxqueue.model import Model, ModelError
from jaxqueue.policies.pooled import Pooled
from jaxqueue.service import Service


# ---- the laws ---------------------------------------------------------------------------------
def coxian_moments(rates, cont, count=3):
    """E[S^n] of a Coxian by first-step analysis, written apart from the module's matrix
    formula: from phase k, S_k = E_k + (S_{k+1} with probability p_k), E_k ~ Exp(r_k)
    independent of the rest, so E[S_k^n] = sum_j C(n, j) E[E_k^j] p_k E[S_{k+1}^{n-j}] (with
    the j = n term weighted 1, not p_k: the service may end there), E[E^j] = j! / r^j."""
    K = len(rates)
    m = np.zeros((K + 1, count + 1))
    m[:, 0] = 1.0
    for k in range(K - 1, -1, -1):
        r, p = rates[k], cont[k] if k < K - 1 else 0.0
        for n in range(1, count + 1):
            own = math.factorial(n) / r ** n
            m[k, n] = own + sum(math.comb(n, j) * math.factorial(j) / r ** j * p * m[k + 1, n - j]
                                for j in range(n))
    return m[0, 1:]


@pytest.mark.parametrize("cv", [0.1, 0.3, 0.5, 1 / math.sqrt(3), 0.6, 0.9, 0.999, 1.0, 1.001,
                                1.5, 2.0, 5.0])
def test_the_two_moment_fit_has_mean_one_and_the_cv_asked(cv):
    rates, cont = service.two_moment(cv)
    assert cont[-1] == 0 and np.all((cont >= 0) & (cont <= 1)) and np.all(rates > 0)
    m = coxian_moments(rates, cont)
    np.testing.assert_allclose(service.moments(rates, cont), m, rtol=1e-9)
    assert m[0] == pytest.approx(1.0, rel=1e-12)
    assert math.sqrt(m[1] - 1.0) == pytest.approx(cv, rel=1e-9)
    if cv < 1:  # Tijms' mixture of Erlangs: k phases with 1/k <= cv^2 < 1/(k-1)
        k = rates.size
        assert 1 / k <= cv * cv + 1e-12 and (k == 1 or cv * cv < 1 / (k - 1))
        assert np.all(rates == rates[0])
    if cv > 1:
        assert rates.size == 2 and rates[0] >= rates[1]


def test_erlang_laws_are_fits_at_one_over_root_k():
    for k in (1, 2, 3, 4, 20):
        law = service.erlang(k, 1)
        rates, cont = service.two_moment(1 / math.sqrt(k))
        np.testing.assert_allclose(law.rates[0], rates, rtol=1e-9)
        np.testing.assert_allclose(law.cont[0], cont, atol=1e-9)
        assert service.moments(law.rates[0], law.cont[0], 2) == pytest.approx(
            [1.0, 1.0 + 1.0 / k])


def test_h2_is_its_coxian_2():
    # The transforms agree at every s: a mu1/(s+mu1) + (1-a) mu2/(s+mu2) for the H2, and
    # mu1/(s+mu1) [(1-p) + p mu2/(s+mu2)] for the Coxian; so do the first three moments.
    for a, mu1, mu2 in [(0.85, 1.7, 0.3), (0.3, 0.5, 4.0), (0.5, 1.0, 1.0)]:
        rates, cont = service.h2_to_coxian(a, mu1, mu2)
        r1, r2, p = rates[0], rates[1], cont[0]
        for s in (0.0, 0.1, 1.0, 3.7, 50.0):
            h2 = a * mu1 / (s + mu1) + (1 - a) * mu2 / (s + mu2)
            cox = r1 / (s + r1) * ((1 - p) + p * r2 / (s + r2))
            assert cox == pytest.approx(h2, rel=1e-12)
        h2_moments = [math.factorial(n) * (a / mu1 ** n + (1 - a) / mu2 ** n) for n in (1, 2, 3)]
        np.testing.assert_allclose(coxian_moments(rates, cont), h2_moments, rtol=1e-12)


def test_fits_to_samples_match_their_moments():
    rng = np.random.default_rng(0)
    # An H2 sample (cv about 2.3): the three-moment fit matches the sample's three moments.
    x = np.where(rng.random(20_000) < 0.9, rng.exponential(0.4, 20_000),
                 rng.exponential(6.0, 20_000))
    # A gamma sample (cv 0.5): the two-moment fit matches its mean and cv.
    y = rng.gamma(4.0, 3.0, 5_000)
    law = service.fit_samples([x, y], 2)
    assert law.law == "samples"
    for row, sample, count in ((0, x, 3), (1, y, 2)):
        unit = sample / sample.mean()
        want = [np.mean(unit ** n) for n in range(1, count + 1)]
        got = service.moments(law.rates[row], law.cont[row], count)
        np.testing.assert_allclose(got, want, rtol=1e-9)
    # Class 1's cv is near 0.5: k = ceil(1 / cv^2) phases (4 or 5); class 0's Coxian-2 is
    # padded to as many with phases it never enters.
    c2 = np.var(y) / np.mean(y) ** 2
    assert law.class_phases().tolist() == [2, math.ceil(1 / c2)]
    np.testing.assert_allclose(law.cont[0, 1:], 0.0)


def test_coxian_laws_are_rescaled_to_unit_mean_and_padded():
    law = service.coxian([[2.0, 1.0, 4.0], [3.0]], [[0.5, 1.0, 0.7], [0.2]], 2)
    assert law.rates.shape == (2, 3) and law.cont[0, 2] == 0 and law.cont[1, 0] == 0
    for i in range(2):
        assert service.moments(law.rates[i], law.cont[i], 1)[0] == pytest.approx(1.0)
    assert law.class_phases().tolist() == [3, 1]


# ---- the exact chain ---------------------------------------------------------------------------
def tiny(service_law=None, patience=None):
    """tau = alpha = 1 and C = 1: mu_p = 1/P = 1, mu_m = 1/D = 0.25, mu_s = gamma/D = 0.5; one
    class arriving at 2 x 0.6 per second on n = 2 GPUs, M = 1 mixed (one prefill slot, one
    mixed decode slot), two solo decode slots (B = 2): prefills queue and decodes queue a little,
    patience rate 1."""
    return Model(lambda_=[0.6], theta=[1.0], P=[1.0], D=[4.0], alpha=1.0, beta=0.0, gamma=2.0,
                 C=1.0, B=2, c_p=0.1, c_d=0.2, service=service_law, patience=patience)


def pooled(model, n=2, M=1, gate="deviation"):
    num = model.num_classes
    return Pooled(model=model, n=np.int32(n), M=np.int32(M), x_star=np.full(num, 0.5),
                  q_star=np.zeros(num), gate=gate, capacity=256)


def phase_chain(model, n, M, x_star, max_queue, max_buffer):
    """The exact CTMC of pooled Gate-and-Route with phase-type service, from the rules of the
    model (docs/model.md Sec. 3 and 6, and the phases of jaxqueue.service).

    State ``(X, Ym, Ys, Qp, Qd)``: per class, the prefills, mixed decodes and solo decodes in
    each phase (tuples of tuples), the jobs waiting for prefill per class, and the decode
    buffer's class labels, head first. A class-i arrival (rate n lambda_i) starts prefill in
    phase 1 if fewer than M prefills run, else waits (lost with ``max_queue`` waiting). A
    class-i job in phase k of a service of mean rate mu leaves the phase at rate ``mu r_ik``;
    it goes on to phase k+1 with probability ``p_ik``, else its service ends. A prefill that
    ends goes to a free solo slot (B (n - M) in all), else a free mixed slot ((B - 1) M), else
    the decode buffer (lost with ``max_buffer`` waiting), starting its decode in phase 1; its
    prefill slot admits a waiting job of the class the deviation gate picks. A decode that ends
    frees its slot for the buffer's head. Every waiting job abandons at its theta_i.

    Returns the exact values :func:`jaxqueue.stats.per_gpu` estimates, the stationary
    probability that a buffer is full (where the truncated chain loses jobs), and the states.
    """
    num, B = model.num_classes, int(model.B)
    lam = n * np.asarray(model.lambda_, np.float64)
    theta, mu_p, mu_m, mu_s = (np.asarray(a, np.float64) for a in (
        model.theta, model.mu_p, model.mu_m, model.mu_s))

    def shape(law):
        if law is None:
            return np.ones((num, 1)), np.zeros((num, 1))
        return np.asarray(law.rates, np.float64), np.asarray(law.cont, np.float64)

    (rp, pp), (rd, pd) = shape(model.service.prefill), shape(model.service.decode)
    gate = deviation_gate(n, x_star, np.zeros(num))
    cap_m, cap_s = (B - 1) * M, B * (n - M)

    def add(Z, i, k, d):
        row = list(Z[i])
        row[k] += d
        return Z[:i] + (tuple(row),) + Z[i + 1:]

    def total(Z):
        return tuple(sum(row) for row in Z)

    def bump(q, i, d):
        return q[:i] + (q[i] + d,) + q[i + 1:]

    def place(Ym, Ys, Qd, i):  # a job needing decode: solo, else mixed, else the buffer
        if sum(total(Ys)) < cap_s:
            return Ym, add(Ys, i, 0, 1), Qd
        if sum(total(Ym)) < cap_m:
            return add(Ym, i, 0, 1), Ys, Qd
        return Ym, Ys, Qd + (i,) if len(Qd) < max_buffer else Qd

    def admit(X, Qp):  # the gate fills an idle prefill slot
        if sum(total(X)) < M and sum(Qp) > 0:
            j = gate(total(X), Qp)
            return add(X, j, 0, 1), bump(Qp, j, -1)
        return X, Qp

    def successors(state):
        X, Ym, Ys, Qp, Qd = state
        out = []
        for i in range(num):
            if sum(total(X)) < M:
                out.append((lam[i], (add(X, i, 0, 1), Ym, Ys, Qp, Qd)))
            elif sum(Qp) < max_queue:
                out.append((lam[i], (X, Ym, Ys, bump(Qp, i, 1), Qd)))
            if Qp[i]:
                out.append((theta[i] * Qp[i], (X, Ym, Ys, bump(Qp, i, -1), Qd)))
            for k in range(rp.shape[1]):
                if X[i][k]:
                    rate = mu_p[i] * rp[i, k] * X[i][k]
                    if pp[i, k] > 0:
                        out.append((rate * pp[i, k], (add(add(X, i, k, -1), i, k + 1, 1), Ym,
                                                      Ys, Qp, Qd)))
                    X2, Qp2 = admit(add(X, i, k, -1), Qp)
                    Ym2, Ys2, Qd2 = place(Ym, Ys, Qd, i)
                    out.append((rate * (1 - pp[i, k]), (X2, Ym2, Ys2, Qp2, Qd2)))
            for mixed, mu in ((True, mu_m), (False, mu_s)):
                Z = Ym if mixed else Ys
                for k in range(rd.shape[1]):
                    if not Z[i][k]:
                        continue
                    rate = mu[i] * rd[i, k] * Z[i][k]
                    if pd[i, k] > 0:
                        on = add(add(Z, i, k, -1), i, k + 1, 1)
                        out.append((rate * pd[i, k], (X, on, Ys, Qp, Qd) if mixed
                                    else (X, Ym, on, Qp, Qd)))
                    off = add(Z, i, k, -1)
                    Ym2, Ys2, Qd2 = (off, Ys, Qd) if mixed else (Ym, off, Qd)
                    if Qd2:
                        Ym2, Ys2, _ = place(Ym2, Ys2, (), Qd2[0])
                        Qd2 = Qd2[1:]
                    out.append((rate * (1 - pd[i, k]), (X, Ym2, Ys2, Qp, Qd2)))
        out += [(theta[c], (X, Ym, Ys, Qp, Qd[:at] + Qd[at + 1:])) for at, c in enumerate(Qd)]
        return out

    empty_p = ((0,) * rp.shape[1],) * num
    empty_d = ((0,) * rd.shape[1],) * num
    states, pi = enumerate_chain((empty_p, empty_d, empty_d, (0,) * num, ()), successors)

    def per_state(f):
        return np.array([f(s) for s in states], np.float64).reshape(len(states), num)

    def ending(Z, r, p):  # sum_k r_k (1 - p_k) Z_k per class
        return [float(np.dot(r[i] * (1 - p[i]), Z[i])) for i in range(num)]

    def mean(a):
        return pi @ a / n

    X, Ym, Ys, Qp = (per_state(lambda s, k=k: total(s[k]) if k < 3 else s[k]) for k in range(4))
    Qd = per_state(lambda s: np.bincount(np.asarray(s[4], int), minlength=num))
    prefill = mu_p * mean(per_state(lambda s: ending(s[0], rp, pp)))
    done = (mu_m * mean(per_state(lambda s: ending(s[1], rd, pd)))
            + mu_s * mean(per_state(lambda s: ending(s[2], rd, pd))))
    prompt = float(model.c_p) * np.asarray(model.P, np.float64)
    output = float(model.c_d) * np.asarray(model.D, np.float64)
    bundled = float(np.sum((prompt + output) * done))
    separate = float(np.sum(prompt * prefill + output * done))
    exact = {"x": mean(X), "y_mixed": mean(Ym), "y_solo": mean(Ys), "q_prefill": mean(Qp),
             "q_decode": mean(Qd), "completion_rate": done, "prefill_completion_rate": prefill,
             "prefill_abandonment_rate": theta * mean(Qp),
             "decode_abandonment_rate": theta * mean(Qd),
             **{f"revenue_bundled{e}": bundled for e in ("", "_counted", "_integral")},
             **{f"revenue_separate{e}": separate for e in ("", "_counted", "_integral")}}
    full = np.array([sum(s[3]) == max_queue or len(s[4]) == max_buffer for s in states])
    return exact, float(pi[full].sum()), states


def exponential_values(model, n, M):
    """The same chain's values with the exponential law (a one-phase law)."""
    one = Service.make(model.num_classes, prefill={"law": "exponential"},
                       decode={"law": "exponential"})
    return phase_chain(model.replace(service=one), n, M, [0.5], 10, 10)[0]


def check_against_chain(run, model, system, exact, n):
    """|z| <= 3 for every per-GPU quantity, and for the system's own revenue estimators (what
    the tuners and gradients read) from the run's integrals and counts."""
    z = compare(run, model, n, exact)
    revenue = jax.vmap(system.revenue)(run.level_integrals, run.tallies)
    scale = run.window * n
    for name in ("bundled_counted", "bundled_integral", "separate_counted",
                 "separate_integral"):
        exact_value = exact[f"revenue_{name}"]
        z[("kernel_" + name, 0)] = float(z_scores(np.asarray(getattr(revenue, name)) / scale,
                                                  exact_value))
    assert max(abs(v) for v in z.values()) <= 3.0, {k: round(v, 2) for k, v in z.items()}
    return z


LAWS = {"erlang-2": {"law": "erlang", "phases": 2}, "h2": {"law": "fit", "cv": 2.0}}


def as_coxian(law):
    """``law`` under the name "coxian": laws differ in their arrays only, so the engine runs
    each of them with one compiled program (a law's name is static, part of the program)."""
    return dataclasses.replace(law, law="coxian")


@pytest.mark.parametrize("law", LAWS)
def test_the_pooled_engine_matches_the_exact_phase_chain(law):
    shape = as_coxian(service.make(LAWS[law], 1))
    model = tiny(Service.make(1, prefill=shape, decode=shape))
    exact, truncation, states = phase_chain(model, 2, 1, [0.5], 10, 10)
    assert len(states) > 1000 and truncation < 1e-6, (len(states), truncation)
    system = pooled(model)
    assert system.rates(system.init()).shape == (5,)  # 5I events whatever the phases
    # Key 12: with the step-count streams, key 11's first 256 replications put the mixed decode
    # count 3.01 standard errors low (its 2,048 replications: every quantity within 0.85; keys
    # 12 and 13 within 2.3).
    run = simulate(jax.random.key(12), system, reps=256, horizon=1000.0, warmup=50.0)
    check_against_chain(run, model, system, exact, 2)
    # The law matters: the exponential law's revenue is many standard errors away.
    revenue = np.asarray(stats_revenue(run, model))
    se = revenue.std(ddof=1) / np.sqrt(revenue.size)
    other = exponential_values(model, 2, 1)["revenue_bundled"]
    assert abs(exact["revenue_bundled"] - other) > 8 * se, (exact["revenue_bundled"], other, se)


def stats_revenue(run, model):
    from jaxqueue import stats

    return stats.per_gpu(run, model, 2)["revenue_bundled"]


def test_a_one_phase_law_runs_the_phase_machinery_and_gives_the_exponential_paths():
    one = Service.make(1, prefill={"law": "exponential"}, decode={"law": "fit", "cv": 1.0})
    runs = []
    for model in (tiny(), tiny(one)):
        system = pooled(model)
        assert (system.init().Xk is None) == (model.service is None)
        runs.append(simulate(jax.random.key(5), system, reps=16, horizon=300.0, warmup=20.0,
                             chunk_events=256))
    a, b = runs
    assert b.level_names[5:] == ("x_exit", "y_m_exit", "y_s_exit")
    np.testing.assert_array_equal(a.tallies, b.tallies)
    np.testing.assert_array_equal(a.level_integrals, b.level_integrals[:, :5])
    # With one phase the exit levels are the occupancies.
    np.testing.assert_array_equal(b.level_integrals[:, 5:], b.level_integrals[:, :3])
    np.testing.assert_array_equal(a.stock_end, b.stock_end[:, :5])


# ---- refusals ----------------------------------------------------------------------------------
def qwen(**sides):
    model = scenarios.load("paper-qwen8b")
    return model.replace(service=Service.make(model.num_classes, **sides))


def test_systems_that_cannot_follow_phases_refuse_them():
    from jaxqueue.exact_gradient import gated_chain
    from jaxqueue.relax import Relaxed
    from jaxqueue.theory import pooled_stationary

    model = qwen(decode={"law": "erlang", "phases": 3})
    for name in ("gi-wsp", "fi-wsp"):
        with pytest.raises(ValueError, match=r"service.decode.law = 'erlang' \(3 phases\) is not "
                                             "supported by the per-GPU engine"):
            policies.build(name, model, 8)
    with pytest.raises(ValueError, match="per-GPU engine"):
        policies.build("gate-and-route", model, 8, engine="per-gpu")
    with pytest.raises(ValueError, match=r"'erlang' \(3 phases\) is not supported by the "
                                         "SLI-aware Gate-and-Route"):
        policies.build("sli-gate-and-route", model, 8)
    with pytest.raises(ValueError, match=r"'erlang' \(3 phases\) is not supported with relaxed"):
        policies.build("gate-and-route", model, 8, decide=Relaxed(temperature=0.1))
    with pytest.raises(ValueError, match="supported by the exact pooled chain"):
        pooled_stationary(model, 2, 1, "fg-sp")
    with pytest.raises(ValueError, match="supported by the exact chains"):
        gated_chain(model, 2, 1, [0.1, 0.1], 0.0, 1.0)
    # The end-to-end counters pick the prefill that ends as only an exponential prefill
    # allows: refused with phases on the prefill (the other counters run), accepted with
    # phases on the decode only.
    system, _ = policies.build("gate-and-route", qwen(prefill={"law": "erlang", "phases": 2}), 8)
    with pytest.raises(ValueError, match="end-to-end latency counters"):
        dataclasses.replace(system, wait_grid=(0.0, 1.0))
    dataclasses.replace(system, wait_grid=(0.0, 1.0), end_to_end=False)
    system, _ = policies.build("gate-and-route", model, 8)
    dataclasses.replace(system, wait_grid=(0.0, 1.0))
    # What runs them: every pooled policy but the SLI-aware one, and the gated family.
    from jaxqueue.policies import tunable

    for name in ("gate-and-route", "prioritize-and-route", "fg-sp"):
        assert policies.build(name, model, 8)[0].phased
    assert tunable.build_family("gated", model, 8)[0].phased
    # A one-phase law is the exponential one: every engine takes it.
    policies.build("fi-wsp", qwen(decode={"law": "exponential"}), 8)


# ---- scenario files ----------------------------------------------------------------------------
def toml_text(data):
    """A scenario dict (Model.to_dict) as TOML text, inline tables for the service sides."""
    def value(v):
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)
    lines = [f"name = {value(data['name'])}"]
    for table in ("gpu", "pricing", "service"):
        if table in data:
            lines += [f"[{table}]", *(f"{k} = {value(v)}" for k, v in data[table].items())]
    for c in data["classes"]:
        lines += ["[[classes]]", *(f"{k} = {value(v)}" for k, v in c.items())]
    return "\n".join(lines) + "\n"


def test_scenario_files_round_trip_the_service_table(tmp_path):
    rng = np.random.default_rng(1)
    samples = [rng.exponential(1.0, 200) ** 2, rng.gamma(3.0, 1.0, 200)]
    for sides in ({"prefill": {"law": "erlang", "phases": [4, 2]},
                   "decode": {"law": "fit", "cv": [0.5, 2.0]}},
                  {"decode": {"law": "fit", "samples": [s.tolist() for s in samples]}},
                  {"prefill": {"law": "coxian", "rates": [[3.0, 1.0], [2.0]],
                               "continue": [[0.4, 0.0], [0.0]]}},
                  {"prefill": {"law": "exponential"}}):
        model = qwen(**sides)
        path = tmp_path / "phases.toml"
        path.write_text(toml_text(model.to_dict()))
        again = scenarios.load(str(path))
        for side in ("prefill", "decode"):
            a, b = getattr(model.service, side), getattr(again.service, side)
            assert (a is None) == (b is None), side
            if a is not None:
                np.testing.assert_allclose(b.rates, a.rates, rtol=1e-12)
                np.testing.assert_allclose(b.cont, a.cont, rtol=1e-12, atol=1e-15)
                np.testing.assert_allclose(b.cv, a.cv, rtol=1e-12)
                assert b.law == ("coxian" if a.law == "samples" else a.law)
    assert "service" not in scenarios.load("paper-qwen8b").to_dict()


@pytest.mark.parametrize("table,message", [
    ({"decode": {"law": "fit", "cv": 0.0}}, r"service.decode.cv = \[0.0, 0.0\] is invalid: "
                                            r"must be finite and >= 0.1"),
    ({"decode": {"law": "fit", "cv": -1.0}}, r"service.decode.cv = \[-1.0, -1.0\] is invalid"),
    ({"prefill": {"law": "erlang", "phases": 0}}, r"service.prefill.phases = 0 is invalid: "
                                                  r"must be integers in \[1, 100\]"),
    ({"prefill": {"law": "erlang", "phases": 2.5}}, r"service.prefill.phases = 2.5 is invalid"),
    ({"prefill": {"law": "erlang", "phases": "4"}}, r"service.prefill.phases = '4' is invalid"),
    ({"prefill": {"law": "erlang", "phases": 101}}, r"phases = 101 is invalid"),
    ({"prefill": {"law": "erlang"}}, r"service.prefill.phases is missing"),
    ({"prefill": {"law": "gamma", "cv": 0.5}}, r"service.prefill.law = 'gamma' is invalid: must "
                                               r"be one of exponential, erlang, fit, coxian"),
    ({"prefill": {"law": "erlang", "phases": 2, "cv": 0.5}}, r"service.prefill.cv is invalid "
                                                             r"with law = 'erlang'"),
    ({"decode": {"law": "fit"}}, r"law = 'fit' needs exactly one of cv"),
    ({"decode": {"law": "fit", "cv": [0.5, 1, 2]}}, r"must be a number or one per class \(2\)"),
    ({"decode": {"law": "coxian", "rates": [1.0, -2.0], "continue": [0.5, 0.0]}},
     r"service.decode.rates\[0\] = \[1.0, -2.0\] is invalid: must be finite and > 0"),
    ({"decode": {"law": "coxian", "rates": [[1.0]], "continue": [[0.0]]}},
     r"service.decode.rates has 1 lists for 2 classes"),
    ({"decode": {"law": "coxian", "rates": [1.0, 2.0], "continue": [1.5, 0.0]}},
     r"service.decode.continue\[0\] = \[1.5, 0.0\] is invalid: must be in \[0, 1\]"),
    ({"decode": "erlang"}, r"service.decode = 'erlang' is invalid: must be a table"),
    ({"middle": {"law": "erlang", "phases": 2}}, r"unknown key service.middle"),
])
def test_bad_service_tables_name_the_field_and_the_range(table, message):
    data = {**scenarios.load("paper-qwen8b").to_dict(), "service": table}
    with pytest.raises(ModelError, match=message):
        Model.from_dict(data, source="bad.toml")


def test_a_simulation_report_says_which_service_law_ran():
    from jaxqueue.tables import _service_lines

    law = qwen(prefill={"law": "erlang", "phases": 4}, decode={"law": "fit", "cv": [0.5, 2.0]})
    text = " ".join(" ".join(_service_lines(law.service.describe())).split())
    assert ("service: prefill erlang (cv 0.5, 0.5; phases 4, 4); decode fitted to cv (cv 0.5, 2; "
            "phases 4, 2)") in text
    assert law.service.describe()["decode"] == {"law": "fit", "phases": [4, 2], "cv": [0.5, 2.0]}


# ---- slow: every way of holding jobs, two classes, accounting, Erlang-20 ------------------------
def hyperexponential_one():
    from jaxqueue.patience import Patience

    return Patience.make("hyperexponential", 1, cv=1.0)  # the exponential law, on rings


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fg-sp", "per-class rings", "gated family"])
def test_every_prefill_queue_matches_the_exact_phase_chain(kind):
    # One class: FCFS and the deviation gate admit alike, so the chain of the count-queue model
    # is exact for FG-SP's ring, for per-class rings (a hyperexponential patience of cv 1 is
    # the exponential law, kept job by job) and for the gated family at knobs that never bind.
    from jaxqueue.policies import tunable

    shape = as_coxian(service.make(LAWS["erlang-2"], 1))
    law = Service.make(1, prefill=shape, decode=as_coxian(service.make(LAWS["h2"], 1)))
    model = tiny(law, patience=hyperexponential_one() if kind == "per-class rings" else None)
    exact, truncation, _ = phase_chain(tiny(law), 2, 1, [0.5], 10, 10)
    assert truncation < 1e-6
    if kind == "gated family":
        params = tunable.GatedParams(targets=np.array([0.5]), offset=np.float64(0.0),
                                     share=np.float64(0.5), slack=np.float64(2.0),
                                     caps=np.array([2.0]))
        system, _ = tunable.build_family("gated", model, 2, params=params, capacity=256)
    else:
        system = pooled(model, gate="fcfs" if kind == "fg-sp" else "deviation")
        assert system.per_job == (kind == "per-class rings")
    # Key 22: with the step-count streams, key 21's first 256 replications put the gated
    # family's decode abandonments 3.16 standard errors low (its 2,048 replications: every
    # quantity within 1.06; keys 22 and 23 within 2.2).
    run = simulate(jax.random.key(22), system, reps=256, horizon=1000.0, warmup=50.0)
    check_against_chain(run, model, system, exact, 2)


@pytest.mark.slow
def test_two_classes_with_padded_laws_match_the_exact_chain():
    # Class 0: exponential prefill (one phase, padded to two), a three-phase decode (cv 0.6);
    # class 1: H2 prefill (cv 2), exponential decode (padded to three): the class-major phase
    # rows, the padding and the deviation gate over two classes. 40,640 states.
    law = Service.make(2, prefill={"law": "fit", "cv": [1.0, 2.0]},
                       decode={"law": "fit", "cv": [0.6, 1.0]})
    assert (law.prefill.phases, law.decode.phases) == (2, 3)
    model = Model(lambda_=[0.35, 0.25], theta=[2.0, 3.0], P=[1.0, 0.5], D=[4.0, 2.0], alpha=1.0,
                  beta=0.0, gamma=2.0, C=1.0, B=2, c_p=0.1, c_d=0.2, service=law)
    x_star = np.array([0.3, 0.2])
    exact, truncation, states = phase_chain(model, 2, 1, x_star, 5, 3)
    # Jobs are lost with 5 waiting for prefill or 3 for decode (probability 1e-4, a loss
    # far below a standard error of what is compared).
    assert truncation < 2e-4, truncation
    system = Pooled(model=model, n=np.int32(2), M=np.int32(1), x_star=x_star,
                    q_star=np.zeros(2), gate="deviation", capacity=256)
    run = simulate(jax.random.key(13), system, reps=256, horizon=1000.0, warmup=50.0)
    check_against_chain(run, model, system, exact, 2)


@pytest.mark.slow
def test_every_job_accounted_for_with_phases_whatever_the_chunk_length():
    from helpers import two_sample_z
    from test_accounting import check_flow_balance

    model = qwen(prefill={"law": "erlang", "phases": 3}, decode={"law": "fit", "cv": [0.5, 2.0]})
    system, _ = policies.build("gate-and-route", model, 6)
    kw = dict(reps=32, horizon=250.0, warmup=50.0)
    short = simulate(jax.random.key(1), system, chunk_events=64, **kw)
    long = simulate(jax.random.key(2), system, chunk_events=4096, **kw)
    check_flow_balance(short, "gate-and-route", "pooled")
    check_flow_balance(long, "gate-and-route", "pooled")
    z = {name: two_sample_z(short.level(name), long.level(name)) for name in short.level_names}
    z |= {name: two_sample_z(short.rate(name), long.rate(name)) for name in short.tally_names}
    worst = max(float(np.max(np.abs(v))) for v in z.values())
    assert worst < 4.5, {k: np.round(v, 2).tolist() for k, v in z.items()}


@pytest.mark.slow
def test_erlang_20_service_on_the_paper_instance():
    # Erlang-20 prefill and decode times (cv 0.22: near the deterministic times of a fixed
    # number of iterations) on paper-qwen8b at n = 20, Gate-and-Route. Measured (64
    # replications x 1,000 s, warm-up 200 s, key 3): bundled revenue per GPU 284.47 +- 0.63
    # (1.96 standard errors), against 282.98 +- 0.56 with exponential times on the same run
    # shape and the LP's 297.72; 50 M events in 74 s on the 2-core machine.
    from jaxqueue import stats

    model = qwen(prefill={"law": "erlang", "phases": 20}, decode={"law": "erlang", "phases": 20})
    system, plan = policies.build("gate-and-route", model, 20)
    assert system.rates(system.init()).shape == (10,)
    run = simulate(jax.random.key(3), system, reps=64, horizon=1000.0, warmup=200.0)
    q = stats.per_gpu(run, model, 20)
    revenue = q["revenue_bundled"]
    mean, se = revenue.mean(), revenue.std(ddof=1) / np.sqrt(revenue.size)
    print(f"Erlang-20 revenue per GPU: {mean:.2f} +- {1.96 * se:.2f} (LP {plan.revenue:.2f})")
    # The LP bounds every stationary policy whatever the service law: the occupancies still
    # satisfy the flow balances by Little's law (mean time in service 1/mu).
    assert mean <= plan.revenue + 3 * se
    # Little's law, checked: completions counted = mu times the occupancy, per class, and the
    # integral of the rates at which services end agrees with both.
    mu_m, mu_s = (np.asarray(a, np.float64) for a in (model.mu_m, model.mu_s))
    little = q["y_mixed"] * mu_m + q["y_solo"] * mu_s
    assert np.all(np.abs(z_scores(q["completion_rate"] - little, 0.0)) < 4)
    assert np.all(np.abs(z_scores(q["revenue_bundled"] - q["revenue_bundled_counted"], 0.0)) < 4)


@pytest.mark.slow
def test_simulate_reads_the_service_table_and_says_it(tmp_path, capsys):
    import json

    from jaxqueue.cli import main

    model = qwen(prefill={"law": "erlang", "phases": 4}, decode={"law": "fit", "cv": [0.5, 2.0]})
    path = tmp_path / "phases.toml"
    path.write_text(toml_text(model.to_dict()))
    args = ["simulate", str(path), "--gpus", "6", "--reps", "2", "--horizon", "30", "--warmup",
            "5"]
    assert main(args) in (0, None)
    out = " ".join(capsys.readouterr().out.split())
    assert "service: prefill erlang (cv 0.5, 0.5; phases 4, 4); decode fitted to cv" in out
    assert main([*args, "--json"]) in (0, None)
    assert json.loads(capsys.readouterr().out)["service"]["prefill"] == {
        "law": "erlang", "phases": [4, 4], "cv": [0.5, 0.5]}
    # --latency under a phase-type prefill: the waits and the time to first token, and a word
    # on the end-to-end latency, which it cannot count; an e2e target is refused.
    assert main([*args, "--latency", "--json"]) in (0, None)
    latency = json.loads(capsys.readouterr().out)["latency"]["all"]
    assert {"wait", "ttft", "decode_wait"} <= set(latency) and "e2e" not in latency
    assert main([*args, "--latency"]) in (0, None)
    assert "not measured under a phase-type prefill" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main([*args, "--slo", "e2e=60"])
    assert "--slo e2e=... is not available under a phase-type prefill" in capsys.readouterr().err


@pytest.mark.slow
def test_likelihood_ratio_gradients_run_on_phases_and_match_the_exact_chain():
    # The score-function decisions are exact: they take phase-type laws (relaxed ones do not).
    # d revenue / d (lambda, theta) of the Erlang-2 system against central differences of the
    # exact chain (0.2189 and -0.0379 per unit).
    from jaxqueue import estimators

    shape = as_coxian(service.make(LAWS["erlang-2"], 1))
    model = tiny(Service.make(1, prefill=shape, decode=shape))
    out = estimators.rate_gradient(jax.random.key(0), pooled(model), 2,
                                   names=("lambda_", "theta"), reps=128, horizon=300.0,
                                   warmup=50.0)
    h = 1e-3
    for name in ("lambda_", "theta"):
        v = float(getattr(model, name)[0])
        up, down = (phase_chain(model.replace(**{name: [v + d]}), 2, 1, [0.5], 10, 10)[0]
                    ["revenue_bundled"] for d in (h, -h))
        exact = (up - down) / (2 * h)
        z = (float(out[name]["grad"][0]) - exact) / float(out[name]["se"][0])
        assert abs(z) <= 3, (name, out[name], exact)
