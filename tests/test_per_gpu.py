"""The per-GPU engine: invariants on every event, an exact small coupled system, and agreement
with the pooled engine where the two describe the same chain."""

import jax
import numpy as np
import pytest
from helpers import PER_GPU, per_gpu, z_scores

import jaxqueue as jq
from jaxqueue import fluid, policies, scenarios, stats
from jaxqueue.model import Model
from jaxqueue.policies.per_gpu import gpu_slots


def _held(ring):
    return 0 if ring is None else np.asarray(ring.size)


@pytest.mark.parametrize("name,rule", [(p, "paper") for p in PER_GPU]
                         + [("gate-and-route", "idle-solo")])
def test_invariants_on_every_event(name, rule):
    model = scenarios.load("paper-qwen8b")
    n = 20  # 32 array slots: 12 inactive padding GPUs
    system, _ = per_gpu(name, model, n, capacity=256, speed_rule=rule)
    states, times, tallies = jq.trajectory(jax.random.key(3), system, 20_000)
    pre, dec, Qp = (np.asarray(a) for a in (states.pre, states.dec, states.Qp))
    B, num, M = int(model.B), model.num_classes, int(system.M)
    assert pre.shape[1] == gpu_slots(n) == 32
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


def test_gate_and_route_agrees_with_pooled_engine():
    # With the paper's speed rule the per-GPU GG-SP is the pooled chain with GPU labels added.
    model = scenarios.load("paper-qwen8b")
    n = 10
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
def test_idle_solo_rule_is_not_slower_than_the_paper_rule():
    # Decodes on a mixed GPU whose prefill slot idles run at mu_s >= mu_m (kappa > 1 here), so
    # under common random numbers the realistic rule completes at least as much work.
    model = scenarios.load("paper-qwen8b")
    revenue = []
    for rule in ("paper", "idle-solo"):
        system, _ = per_gpu("gate-and-route", model, 50, speed_rule=rule)
        run = jq.simulate(jax.random.key(4), system, reps=16, horizon=1000.0, warmup=300.0)
        revenue.append(stats.per_gpu(run, model, 50)["revenue_bundled"])
    diff = revenue[1] - revenue[0]
    assert diff.mean() > -2 * diff.std(ddof=1) / np.sqrt(len(diff))
