"""The per-GPU engine: invariants on every event, exact small systems (coupled; planned with
the idle-solo speed rule), and agreement with the pooled engine where the two describe the same
chain."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    PER_GPU,
    compare,
    deviation_gate,
    enumerate_chain,
    exact_per_gpu,
    per_gpu,
    z_scores,
)

import jaxqueue as jq
from jaxqueue import fluid, policies, scenarios, stats, theory
from jaxqueue.model import Model
from jaxqueue.policies.per_gpu import gpu_slots


def _held(ring):
    return 0 if ring is None else np.asarray(ring.size)


@pytest.mark.parametrize("name,rule", [(p, "paper") for p in PER_GPU]
                         + [("gate-and-route", "idle-solo")])
def test_invariants_on_every_event(name, rule):
    model = scenarios.load("paper-qwen8b")
    # 8 array slots, 2 inactive padding GPUs (n = 6 compiles in about half the time of n = 20's
    # 32 slots; tests/test_per_gpu.py::test_nearby_n_share_one_program pads 17 to 32).
    n = 6
    system, _ = per_gpu(name, model, n, capacity=256, speed_rule=rule)
    states, times, tallies = jq.trajectory(jax.random.key(3), system, 20_000)
    pre, dec, Qp = (np.asarray(a) for a in (states.pre, states.dec, states.Qp))
    B, num, M = int(model.B), model.num_classes, int(system.M)
    assert pre.shape[1] == gpu_slots(n) == 8
    assert pre.min() >= -1 and pre.max() < num and dec.min() >= 0 and Qp.min() >= 0
    busy = pre >= 0  # one entry per GPU: at most one prefill per GPU by construction
    decoding = dec.sum(-1)
    assert not busy[:, n:].any() and not decoding[:, n:].any()  # padding GPUs stay empty
    if system.layout == "planned":
        assert 0 < M < n and not busy[:, M:].any()  # prefills only on the M mixed GPUs
        assert decoding[:, :M].max() <= B - 1 and decoding[:, M:].max() <= B
        able = ~busy & (np.arange(pre.shape[1]) < M)
        assert decoding[:, M:n].max() == B  # capacity reached: the checks are not vacuous
    else:
        assert (decoding + busy).max() == B  # slots shared by prefill and decodes
        able = ~busy & (decoding + busy < B) & (np.arange(pre.shape[1]) < n)
    assert np.all(np.diff(np.asarray(times)) >= 0)
    # Conservation: arrivals = in service + waiting (incl. not-yet-discarded) + completed + gone.
    t = np.asarray(tallies).reshape(len(times), -1, num).sum(-1)[:, :6]
    arrivals, _, mixed, solo, p_gone, d_gone = t.T
    in_system = (busy.sum(1) + decoding.sum(1) + Qp.sum(1) + _held(states.prefill_ring)
                 + _held(states.decode_ring))
    np.testing.assert_array_equal(arrivals, in_system + mixed + solo + p_gone + d_gone)
    # Work conservation of admission: a GPU able to prefill never coexists with a per-class
    # queue; with a FCFS ring the next step is then a zero-time bookkeeping step.
    waiting = able.any(1)
    assert not np.any(waiting & (Qp.sum(1) > 0))
    if states.prefill_ring is not None:
        serve = waiting & (np.asarray(states.prefill_ring.size) > 0)
        assert serve.any() and np.all(np.diff(np.asarray(times))[serve[:-1]] == 0)


def fi_wsp_generator(lam, mu_p, mu_m, mu_s, theta, max_queue):
    """The exact CTMC of FI-WSP on one GPU with B = 2 and one class.

    State (p, d, q): a prefill running (p), decodes (d), jobs waiting (q). The GPU takes the
    next job when p = 0 and p + d < 2 (then q = 0); a finished prefill decodes in its slot; the
    decodes run at mu_m while p = 1, at mu_s otherwise. Arrivals past ``max_queue`` are dropped
    (the truncation; its mass is checked by the caller).
    """
    states = [(p, d, q) for p in (0, 1) for d in range(3 - p) for q in range(max_queue + 1)
              if q == 0 or p == 1 or d == 2]
    index = {s: k for k, s in enumerate(states)}
    Q = np.zeros((len(states), len(states)))

    def add(src, dst, rate):
        Q[index[src], index[dst]] += rate
        Q[index[src], index[src]] -= rate

    def admit(p, d, q):  # the GPU takes the head of the queue if it can
        return (1, d, q - 1) if p == 0 and d < 2 and q > 0 else (p, d, q)

    for p, d, q in states:
        if p == 0 and d < 2:
            add((p, d, q), (1, d, 0), lam)
        elif q < max_queue:
            add((p, d, q), (p, d, q + 1), lam)
        if p == 1:
            add((p, d, q), admit(0, d + 1, q), mu_p)
        if d > 0:
            add((p, d, q), admit(p, d - 1, q), d * (mu_m if p else mu_s))
        if q > 0:
            add((p, d, q), (p, d, q - 1), q * theta)
    A = np.vstack([Q.T, np.ones(len(states))])
    b = np.zeros(len(states) + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(A, b, rcond=None)[0]
    return np.asarray(states, np.float64), pi


def test_fi_wsp_one_gpu_matches_exact_generator():
    # tau = alpha = 1, C = 1: mu_p = 1/P = 2, mu_m = 1/D = 0.5, mu_s = gamma/D = 0.75.
    model = Model(lambda_=(1.0,), theta=(0.5,), P=(0.5,), D=(2.0,), alpha=1.0, beta=0.0,
                  gamma=1.5, C=1.0, B=2, c_p=0.0, c_d=1.0)
    lam, mu_p, mu_m, mu_s, theta = 1.0, 2.0, 0.5, 0.75, 0.5
    np.testing.assert_allclose([model.mu_p[0], model.mu_m[0], model.mu_s[0]], [mu_p, mu_m, mu_s])
    S, pi = fi_wsp_generator(lam, mu_p, mu_m, mu_s, theta, max_queue=30)
    assert pi[S[:, 2] == 30].sum() < 1e-9 and pi.min() > -1e-12
    p, d, q = S.T
    exact = {"x": pi @ p, "y_mixed": pi @ (d * p), "y_solo": pi @ (d * (1 - p)),
             "q_prefill": pi @ q}
    exact["completion_rate"] = mu_m * exact["y_mixed"] + mu_s * exact["y_solo"]
    exact["prefill_abandonment_rate"] = theta * exact["q_prefill"]

    system, _ = per_gpu("fi-wsp", model, 1)
    run = jq.simulate(jax.random.key(11), system, reps=128, horizon=2000.0, warmup=100.0)
    q_sim = stats.per_gpu(run, model, 1)
    z = {k: float(z_scores(q_sim[k][:, 0], v)) for k, v in exact.items()}
    assert max(abs(v) for v in z.values()) < 4.0, z


@pytest.mark.slow  # statistical (two engines, 32 x 1,000 s each); the exact chains run by default
def test_gate_and_route_agrees_with_pooled_engine():
    # With the paper's speed rule the per-GPU GG-SP is the pooled chain with GPU labels added.
    model = scenarios.load("paper-qwen8b")
    n = 6  # 8 GPU slots: a per-GPU program that compiles quickly; M = 2 mixed GPUs
    plan = fluid.solve(model, "bundled")
    pooled, _ = policies.build("gate-and-route", model, n, plan=plan)
    gpus, _ = per_gpu("gate-and-route", model, n, plan=plan)
    out = []
    for system, seed in ((pooled, 1), (gpus, 2)):
        run = jq.simulate(jax.random.key(seed), system, reps=32, horizon=1000.0, warmup=200.0)
        out.append(stats.per_gpu(run, model, n))
    for key in ("revenue_bundled", "x", "y_mixed", "y_solo", "q_prefill", "q_decode"):
        a, b = (np.asarray(o[key], np.float64) for o in out)
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        z = (a.mean(0) - b.mean(0)) / np.maximum(se, 1e-12)
        assert np.all(np.abs(z) < 4.0), (key, a.mean(0), b.mean(0), z)


def test_nearby_n_share_one_program():
    model = scenarios.load("paper-qwen8b")
    system, _ = per_gpu("fi-wsp", model, 20, capacity=256)
    jq.simulate(jax.random.key(0), system, reps=2, horizon=2.0)
    before = jq.kernel.compile_count()
    for n in (17, 30, 32):  # all padded to 32 GPU slots
        s, _ = per_gpu("fi-wsp", model.replace(lambda_=(0.3, 0.6)), n, capacity=256)
        jq.simulate(jax.random.key(1), s, reps=2, horizon=2.0)
    assert jq.kernel.compile_count() == before


def test_bad_arguments_raise():
    model = scenarios.load("paper-qwen8b")
    with pytest.raises(ValueError, match="fi-wsp, gate-and-route, gf-wsp, gg-sp, gi-wsp"):
        per_gpu("fifo", model, 5)
    for n in (0, 2.5, True, "x"):
        with pytest.raises(ValueError, match="n \\(gpus\\)"):
            per_gpu("fi-wsp", model, n)
    with pytest.raises(ValueError, match="speed_rule"):
        per_gpu("gate-and-route", model, 5, speed_rule="fast")
    with pytest.raises(ValueError, match="capacity"):
        per_gpu("gate-and-route", model, 5, capacity=0)
    assert [gpu_slots(n) for n in (1, 2, 3, 5, 500, 512, 513)] == [1, 2, 4, 8, 512, 512, 1024]


@pytest.mark.slow
def test_gpu_arrays_are_int16_only_where_counts_fit():
    model = scenarios.load("paper-qwen8b")
    small, _ = per_gpu("fi-wsp", model, 6, capacity=256)  # 8 GPU slots: compiles quickly
    assert small.counts == "int16" and small.init().dec.dtype == jnp.int16
    # Also where the state is made inside a jitted program (the system's leaves traced).
    key, ids = jax.random.key(5), jnp.arange(2, dtype=jnp.uint32)
    jitted = jq.kernel.initial_state_jit(small, key, ids)
    assert jitted.pre.dtype == jitted.dec.dtype == jnp.int16
    # B = 2^15 decode slots per GPU would wrap an int16 count: those arrays stay int32, and an
    # int16 system is refused for such a model, however it got it.
    big, _ = per_gpu("fi-wsp", model.replace(B=2**15), 6, capacity=256)
    assert big.counts == "int32" and big.init().dec.dtype == jnp.int32
    with pytest.raises(ValueError, match=r"counts = 'int16' cannot hold .*\(B = 32768"):
        eqx.tree_at(lambda s: s.model, small, big.model).init()
    with pytest.raises(ValueError, match="counts = 'int16' cannot hold"):
        dataclasses.replace(big, counts="int16")
    with pytest.raises(ValueError, match="counts = 'int8' is invalid"):
        dataclasses.replace(small, counts="int8")
    # From int32 arrays the step follows the same path as from int16 ones while counts fit
    # both (it widens every count to int32 before arithmetic, and writes in the arrays' dtype).
    narrow = jq.kernel.initial_state(small, key, ids)
    wide = eqx.tree_at(lambda s: (s.pre, s.dec), narrow,
                       (narrow.pre.astype(jnp.int32), narrow.dec.astype(jnp.int32)))
    a, b = (jq.rollout(key, small, steps=3072, rep_ids=ids, state=s) for s in (narrow, wide))
    assert b.state.dec.dtype == jnp.int32 and a.state.dec.dtype == jnp.int16
    assert np.asarray(a.state.dec).max() > 0  # the GPUs were used
    np.testing.assert_array_equal(np.asarray(a.summary.counts), np.asarray(b.summary.counts))
    np.testing.assert_array_equal(np.asarray(a.state.dec), np.asarray(b.state.dec))


# ---- the idle-solo speed rule (planned layout) ------------------------------------------------
def idle_solo_model():
    """tau = alpha = 1, C = 1: mu_p = 1/P = (2, 1), mu_m = 1/D = (1/3, 1/6), mu_s = gamma/D =
    (1, 1/2): solo decoding three times as fast (kappa = gamma tau = 3), B = 2."""
    return Model(lambda_=(0.6, 0.5), theta=(2.0, 3.0), P=(0.5, 1.0), D=(3.0, 6.0), alpha=1.0,
                 beta=0.0, gamma=3.0, C=1.0, B=2, c_p=0.1, c_d=0.2)


def idle_solo_system(model, rule):
    """Per-GPU Gate-and-Route on n = 2 GPUs with M = ceil(2 * 0.5) = 1 mixed GPU (GPU 0) and
    gate targets x* = (0.25, 0.25), q* = 0."""
    plan = dataclasses.replace(fluid.solve(model, "bundled"), x=np.array([0.25, 0.25]),
                               q_p=np.zeros(2))
    system, _ = per_gpu("gate-and-route", model, 2, plan=plan, speed_rule=rule)
    assert system.layout == "planned" and int(system.M) == 1 and system.speed_rule == rule
    return system


def test_idle_solo_rates_by_hand():
    model = idle_solo_model()
    np.testing.assert_allclose(np.c_[model.mu_p, model.mu_m, model.mu_s],
                               [[2.0, 1 / 3, 1.0], [1.0, 1 / 6, 0.5]])
    # GPU 0 (mixed, prefill slot idle) holds one class-2 decode; GPU 1 (solo) one decode of
    # each class; nobody waits. Rates [2 lambda | mu_p X | mu_m Y_m | mu_s Y_s | theta Qp]:
    #   paper:     Y_m = (0, 1), Y_s = (1, 1) -> [1.2, 1.0 | 0, 0 | 0, 1/6 | 1, 0.5 | 0, 0]
    #   idle-solo: Y_m = (0, 0), Y_s = (1, 2) -> [1.2, 1.0 | 0, 0 | 0, 0   | 1, 1.0 | 0, 0]
    # With a class-1 prefill on GPU 0 both rules give X = (1, 0), Y_m = (0, 1), Y_s = (1, 1):
    #                                            [1.2, 1.0 | 2, 0 | 0, 1/6 | 1, 0.5 | 0, 0]
    expected = {"paper": {-1: [1.2, 1.0, 0, 0, 0, 1 / 6, 1, 0.5, 0, 0],
                          0: [1.2, 1.0, 2, 0, 0, 1 / 6, 1, 0.5, 0, 0]},
                "idle-solo": {-1: [1.2, 1.0, 0, 0, 0, 0, 1, 1.0, 0, 0],
                              0: [1.2, 1.0, 2, 0, 0, 1 / 6, 1, 0.5, 0, 0]}}
    for rule, cases in expected.items():
        system = idle_solo_system(model, rule)
        empty = system.init()
        dec = empty.dec.at[0, 1].set(1).at[1].set(1)  # row 1: one decode of each class
        for prefill, rates in cases.items():
            state = system.with_gpus(empty, empty.pre.at[0].set(prefill), dec)
            np.testing.assert_allclose(np.asarray(system.rates(state)), rates, rtol=1e-6,
                                       err_msg=f"{rule}, prefill {prefill}")


def planned_chain(model, q_star, rule, max_queue, max_buffer):
    """Per-GPU Gate-and-Route on n = 2 GPUs with M = 1, written from the rules of
    :mod:`jaxqueue.policies.per_gpu` (planned layout, decoupled phases, the greedy router).

    GPU 0 is mixed: a reserved prefill slot and B-1 decode slots; GPU 1 is solo: B decode
    slots. State ``(pre, mixed, solo, Qp, buf)``: the class of GPU 0's prefill (-1: none), the
    decodes per class on GPU 0 and on GPU 1, the per-class prefill queues, and the decode
    buffer's class labels, head first. A class-i arrival (rate 2 lambda_i) starts its prefill if
    the slot idles, else waits (lost with ``max_queue`` waiting). A prefill completion sends the
    job to a free slot on GPU 1, else on GPU 0, else the buffer (lost with ``max_buffer``
    there), then the gate admits a waiting job: no other prefill runs (X = 0), so every
    ``xi_i = -2`` ties and the larger ``Qp_i - 2 q_i*`` goes first, then the lower index. A
    decode completion frees a slot that the buffer's head takes. GPU 1 decodes at mu_s; GPU 0
    at mu_m while it prefills, and while its prefill slot idles at mu_m under the paper's rule
    and at mu_s under ``idle-solo``. Waiting jobs abandon at theta_i.

    Returns :func:`helpers.exact_per_gpu` of the means, the probability that a buffer is full,
    and that of GPU 0 holding decodes with its prefill slot idle (where the rules differ).
    """
    num, B = model.num_classes, int(model.B)
    lam = 2 * np.asarray(model.lambda_, np.float64)
    theta, mu_p, mu_m, mu_s = (np.asarray(a, np.float64) for a in (
        model.theta, model.mu_p, model.mu_m, model.mu_s))
    gate = deviation_gate(2, np.ones(num), q_star)

    def bump(t, i, d):
        return t[:i] + (t[i] + d,) + t[i + 1:]

    def route(mixed, solo, buf, i):
        if sum(solo) < B:
            return mixed, bump(solo, i, 1), buf
        if sum(mixed) < B - 1:
            return bump(mixed, i, 1), solo, buf
        return mixed, solo, buf + (i,) if len(buf) < max_buffer else buf

    def successors(state):
        pre, mixed, solo, Qp, buf = state
        out = []
        for i in range(num):
            if pre < 0:
                out.append((lam[i], (i, mixed, solo, Qp, buf)))
            elif sum(Qp) < max_queue:
                out.append((lam[i], (pre, mixed, solo, bump(Qp, i, 1), buf)))
            if Qp[i]:
                out.append((theta[i] * Qp[i], (pre, mixed, solo, bump(Qp, i, -1), buf)))
        if pre >= 0:
            mixed2, solo2, buf2 = route(mixed, solo, buf, pre)
            nxt = gate((0,) * num, Qp) if sum(Qp) else -1
            Qp2 = bump(Qp, nxt, -1) if nxt >= 0 else Qp
            out.append((mu_p[pre], (nxt, mixed2, solo2, Qp2, buf2)))
        fast = rule == "idle-solo" and pre < 0
        for j in range(num):
            if mixed[j]:
                mixed2 = bump(mixed, j, -1)
                mixed2 = bump(mixed2, buf[0], 1) if buf else mixed2
                rate = mixed[j] * (mu_s[j] if fast else mu_m[j])
                out.append((rate, (pre, mixed2, solo, Qp, buf[1:])))
            if solo[j]:
                solo2 = bump(solo, j, -1)
                solo2 = bump(solo2, buf[0], 1) if buf else solo2
                out.append((solo[j] * mu_s[j], (pre, mixed, solo2, Qp, buf[1:])))
        out += [(theta[c], (pre, mixed, solo, Qp, buf[:k] + buf[k + 1:]))
                for k, c in enumerate(buf)]
        return out

    zero = (0,) * num
    states, pi = enumerate_chain((-1, zero, zero, zero, ()), successors)
    pre = np.array([s[0] for s in states])
    mixed, solo, Qp = (np.array([s[k] for s in states], np.float64) for k in (1, 2, 3))
    Qd = np.array([np.bincount(np.asarray(s[4], int), minlength=num) for s in states],
                  np.float64)
    slow = ((pre >= 0) | (rule == "paper"))[:, None]  # GPU 0's decodes run at mu_m
    exact = exact_per_gpu(model, pi @ (pre[:, None] == np.arange(num)) / 2,
                          pi @ (mixed * slow) / 2, pi @ (mixed * ~slow + solo) / 2, pi @ Qp / 2,
                          pi @ Qd / 2)
    full = (Qp.sum(1) == max_queue) | (Qd.sum(1) == max_buffer)
    idle = (pre < 0) & (mixed.sum(1) > 0)
    return exact, float(pi[full].sum()), float(pi[idle].sum())


def test_idle_solo_rule_matches_exact_generator():
    model, n = idle_solo_model(), 2
    limits = dict(max_queue=7, max_buffer=4)  # ~1.4e4 states each
    exact, truncation, idle = planned_chain(model, np.zeros(2), "idle-solo", **limits)
    paper, _, _ = planned_chain(model, np.zeros(2), "paper", **limits)
    # Jobs are lost only with 7 waiting for prefill or 4 for decode (probability 4e-5).
    assert truncation < 1e-4, truncation
    # GPU 0 holds decodes with its prefill slot idle 12% of the time: the rules differ there.
    assert idle > 0.1, idle
    # The generator's paper-rule chain is the pooled Gate-and-Route chain, which jaxqueue.theory
    # builds independently (M = 1: GPU labels add nothing).
    pooled = theory.pooled_stationary(model, n, 1, "gate-and-route", x_star=[0.25, 0.25],
                                      **limits)
    for key, name in (("x", "x"), ("y_mixed", "y_m"), ("y_solo", "y_s"), ("q_decode", "q_d")):
        np.testing.assert_allclose(paper[key], pooled[name], rtol=1e-8, err_msg=key)

    run = jq.simulate(jax.random.key(41), idle_solo_system(model, "idle-solo"), reps=128,
                      horizon=2000.0, warmup=50.0)
    z = compare(run, model, n, exact)
    assert max(abs(v) for v in z.values()) < 4.0, z
    # The test would catch the rule being ignored: the paper rule's exact values lie many
    # standard errors away (y_m alone moves from 0.13 to 0.075 per GPU and class).
    assert max(abs(v) for v in compare(run, model, n, paper).values()) > 20.0
