"""Workloads from traces (jaxqueue.workload, ``jaxqueue workload``): classes recovered from
synthetic clusters, KS statistics as SciPy computes them, dispersion indices against Poisson's 1
in standard errors, errors naming the field, the real traces, and trace -> scenario -> LP."""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats

from jaxqueue import fluid, scenarios, workload
from jaxqueue.cli import main
from jaxqueue.service import moments
from jaxqueue.workload import WorkloadError

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "vidur" / "processed_traces"


def needs_traces():
    if not TRACES.is_dir():
        pytest.skip(f"the trace folder {TRACES} is absent (the shared data is not checked out)")


def write_csv(path, columns: dict) -> Path:
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    path.write_text(",".join(names) + "\n" + "".join(
        ",".join(repr(float(v)) for v in row) + "\n" for row in rows))
    return path


def poisson_arrivals(key, rate: float, n: int) -> np.ndarray:
    return np.cumsum(np.asarray(jax.random.exponential(key, (n,)), np.float64) / rate)


def two_clusters(key, sizes=(600, 400), sigma=0.3):
    """Two lognormal clusters of (prompt, output) far apart in log space: medians (100, 1000) and
    (3000, 50), log-sd ``sigma``; and the true labels (0 = short prompt)."""
    medians = ((100.0, 1000.0), (3000.0, 50.0))
    z = np.asarray(jax.random.normal(key, (sum(sizes), 2)), np.float64)
    labels = np.repeat([0, 1], sizes)
    med = np.array(medians)[labels]
    return med * np.exp(sigma * z), labels


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    k1, k2 = jax.random.split(jax.random.key(0))
    lengths, labels = two_clusters(k1)
    arrivals = poisson_arrivals(k2, 2.0, len(labels))
    path = write_csv(tmp_path_factory.mktemp("trace") / "trace.csv",
                     {"arrival_time": arrivals, "prompt_tokens": lengths[:, 0],
                      "output_tokens": lengths[:, 1]})
    return path, lengths, labels, arrivals


def test_two_lognormal_clusters_are_recovered(synthetic):
    path, lengths, labels, arrivals = synthetic
    trace = workload.read_trace(path)
    assert trace.columns == {"prompt": "prompt_tokens", "output": "output_tokens",
                             "arrivals": "arrival_time"}
    w = workload.build(trace, 2)
    # The clusters are ln(30) = 3.4 apart in each coordinate, 11 log-sds: no request is misplaced.
    assert w.converged and np.array_equal(w.labels, labels)
    n = len(labels)
    rate = (n - 1) / (arrivals[-1] - arrivals[0])
    assert w.rate == pytest.approx(rate, rel=1e-12)
    # Poisson arrivals at 2/s: the rate estimate has standard error about 2/sqrt(n).
    assert abs(w.rate - 2.0) <= 3 * 2.0 / math.sqrt(n)
    for j, c in enumerate(w.classes):
        mine = labels == j
        assert c.count == mine.sum() and c.rate == pytest.approx(rate * mine.mean(), rel=1e-12)
        assert c.prompt.mean == pytest.approx(lengths[mine, 0].mean(), rel=1e-12)
        assert c.output.mean == pytest.approx(lengths[mine, 1].mean(), rel=1e-12)
        for fit in (c.prompt, c.output):
            # Lognormal lengths: the moment-matched lognormal passes the KS test at 1% (critical
            # value 1.63/sqrt(n); fitted parameters only make the statistic smaller), the
            # exponential with the same mean is far off, and the CV is that of sigma = 0.3.
            crit = 1.63 / math.sqrt(c.count)
            law = {f.law: f for f in fit.laws}
            assert law["lognormal"].ks < crit < 3 * crit < fit.ks_exponential
            assert fit.best.law in ("lognormal", "gamma")
            assert law["lognormal"].params["sigma"] == pytest.approx(0.3, abs=0.05)
    assert [c.name for c in w.classes] == [f"p{c.prompt.mean:.0f}-d{c.output.mean:.0f}"
                                           for c in w.classes]


def test_ks_statistics_are_scipys():
    x = 1.0 + np.floor(np.asarray(jax.random.exponential(jax.random.key(3), (500,)),
                                  np.float64) * 200)
    fit = workload.fit_lengths(x)
    mean, cv = x.mean(), x.std(ddof=1) / x.mean()
    law = {f.law: f for f in fit.laws}
    assert law["exponential"].ks == pytest.approx(
        stats.kstest(x, "expon", args=(0, mean)).statistic, rel=1e-12)
    s2 = math.log1p(cv * cv)
    assert law["lognormal"].ks == pytest.approx(stats.kstest(
        x, "lognorm", args=(math.sqrt(s2), 0, math.exp(math.log(mean) - s2 / 2))).statistic,
        rel=1e-12)
    assert law["gamma"].ks == pytest.approx(
        stats.kstest(x, "gamma", args=(1 / cv**2, 0, mean * cv**2)).statistic, rel=1e-12)
    # Exponential data (rounded up to integers): the exponential law fits within the 1% KS
    # critical value 1.63/sqrt(500) = 0.073.
    assert fit.ks_exponential < 1.63 / math.sqrt(500)


def test_dispersion_index_by_hand():
    # Windows of 1 s from t = 0 to 10: counts 1,3,1,3,1,3,1,3,1,3 (t = 10 closes the last one).
    # Mean 2, sample variance 10 * 1 / 9 = 1.1111, index 0.5556; z = (0.5556 - 1) / sqrt(2 / 9).
    t = [0.0]
    for j in range(1, 10):
        t += [j + 0.2, j + 0.4, j + 0.6] if j % 2 else [j + 0.5]
    t = np.array(t[:-1] + [10.0])
    d = workload.dispersion_index(t, 1.0)
    assert d.windows == 10 and d.mean_count == 2.0
    assert d.index == pytest.approx(10 / 9 / 2) and d.z == pytest.approx(
        (10 / 9 / 2 - 1) / math.sqrt(2 / 9))


def test_dispersion_is_one_for_poisson_and_large_for_batches():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    poisson = workload.burstiness(poisson_arrivals(k1, 5.0, 20000), windows=(1.0, 10.0))
    # Poisson arrivals: the index is 1 within 3 standard errors at every window.
    assert all(abs(d.z) <= 3 for d in poisson.dispersion) and poisson.poisson_like
    assert abs(poisson.interarrival_cv - 1) < 0.05  # SE of the gaps' CV ~ 1/sqrt(2 * 20000)
    assert "consistent with Poisson" in poisson.verdict
    # Batches of geometric size (mean 10) at Poisson epochs 0.5/s, spread over 10 ms: the index
    # of a compound Poisson count is E[S^2]/E[S] = (2 - p)/p = 19 for p = 0.1.
    epochs = poisson_arrivals(k2, 0.5, 2000)
    sizes = np.asarray(jax.random.geometric(k3, 0.1, (2000,)))
    t = np.repeat(epochs, sizes) + np.concatenate([0.001 * np.arange(s) for s in sizes])
    bursty = workload.burstiness(t, windows=(1.0, 10.0))
    assert not bursty.poisson_like and "far from Poisson: bursty" in bursty.verdict
    assert all(d.index > 10 and d.z > 30 for d in bursty.dispersion)


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("prompt_tokens,output_tokens\n", "no data rows"),
    ("prompt_tokens,foo\n1,2\n", "no output-length column.*--output-column"),
    ("prompt_tokens,output_tokens\n10,5\n0,3\n", r"prompt_tokens.*data row 2: 0 is invalid: "
                                                 "must be > 0"),
    ("prompt_tokens,output_tokens\n10,x\n", r"output_tokens, data row 1: 'x'.*finite number"),
    ("prompt_tokens,prompt_len,output_tokens\n1,1,1\n", "ambiguous.*--prompt-column"),
])
def test_bad_traces_name_the_field(tmp_path, text, match):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=match):
        workload.read_trace(path)


def test_bad_options_name_the_range(tmp_path):
    path = write_csv(tmp_path / "t.csv", {"prompt_tokens": [10, 20, 30],
                                          "output_tokens": [5, 6, 7]})
    trace = workload.read_trace(path)
    with pytest.raises(WorkloadError, match="no arrival-time column.*--rate"):
        workload.build(trace, 2)
    for k in (0, 4):
        with pytest.raises(WorkloadError, match=r"classes = \d is invalid.*\[1, 3\]"):
            workload.build(trace, k, rate=1.0)
    with pytest.raises(WorkloadError, match="--prompt-column 'nope' is not a column"):
        workload.read_trace(path, prompt_column="nope")
    same = workload.read_trace(write_csv(tmp_path / "s.csv", {"prompt_tokens": [10, 10, 10],
                                                              "output_tokens": [5, 5, 5]}))
    with pytest.raises(WorkloadError, match="left a class empty.*1 distinct"):
        workload.build(same, 2, rate=1.0)
    w = workload.build(trace, 3, rate=6.0)
    assert [c.rate for c in w.classes] == pytest.approx([2.0, 2.0, 2.0])


def test_trace_to_scenario_to_lp(tmp_path, synthetic, capsys):
    path = synthetic[0]
    out = tmp_path / "s.toml"
    main(["workload", str(path), "--classes", "2", "--gpus", "4", "--out", str(out), "--json"])
    o = json.loads(capsys.readouterr().out)
    model = scenarios.load(out)
    w = workload.build(workload.read_trace(path), 2)
    assert model.class_names == tuple(c.name for c in w.classes)
    assert model.lambda_ == pytest.approx([c.rate / 4 for c in w.classes], rel=1e-15)
    assert model.P == pytest.approx([c.prompt.mean for c in w.classes], rel=1e-15)
    assert model.D == pytest.approx([c.output.mean for c in w.classes], rel=1e-15)
    qwen = scenarios.CALIBRATIONS["qwen-8b"]
    assert (float(model.alpha), float(model.beta), float(model.gamma)) == (
        qwen["alpha"], qwen["beta"], qwen["gamma"])
    assert (float(model.C), int(model.B), float(model.c_p), float(model.c_d)) == (256, 16, 0.1,
                                                                                  0.2)
    assert o["scenario"]["file"] == str(out) and len(o["classes"]) == 2
    assert o["burstiness"]["poisson_like"]
    plan = fluid.solve(model, "bundled")
    assert 0 < plan.revenue <= float(np.sum(model.lambda_ * model.w)) * (1 + 1e-9)
    main(["lp", str(out), "--json"])
    assert json.loads(capsys.readouterr().out)["revenue"] == pytest.approx(plan.revenue)


def test_cli_text_and_errors(tmp_path, synthetic, capsys):
    png = tmp_path / "w.png"
    main(["workload", str(synthetic[0]), "--classes", "2", "--plot", str(png)])
    text = capsys.readouterr().out
    assert "KS D" in text and "consistent with Poisson" in text and png.stat().st_size > 0
    assert max(len(line) for line in text.splitlines()) <= 100
    bare = write_csv(tmp_path / "b.csv", {"prompt_tokens": [1, 2], "output_tokens": [3, 4]})
    with pytest.raises(SystemExit) as err:
        main(["workload", str(bare), "--classes", "1"])
    assert err.value.code == 2 and "--rate" in capsys.readouterr().err


def test_azure_and_arxiv_traces():
    needs_traces()
    conv = workload.read_trace(TRACES / "splitwise_conv.csv")
    assert conv.columns == {"prompt": "num_prefill_tokens", "output": "num_decode_tokens",
                            "arrivals": "arrived_at"}
    w = workload.build(conv, 3)
    assert w.requests == 19366 and w.converged
    assert w.rate == pytest.approx(19365 / 3501.721937, rel=1e-9)
    assert sum(c.count for c in w.classes) == 19366
    assert not w.burstiness.poisson_like  # the conversation trace is bursty at every window
    code = workload.build(workload.read_trace(TRACES / "splitwise_code.csv"), 2)
    assert code.burstiness.interarrival_cv > 5 and not code.burstiness.poisson_like
    arxiv = workload.read_trace(
        TRACES / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv")
    assert arxiv.arrivals is None and arxiv.columns["prompt"] == "num_prefill_tokens"
    with pytest.raises(WorkloadError, match="--rate"):
        workload.build(arxiv, 2)


def test_service_fit_gives_each_time_its_lengths_spread(tmp_path, synthetic, capsys):
    path = synthetic[0]
    plain, fitted = tmp_path / "plain.toml", tmp_path / "fit.toml"
    main(["workload", str(path), "--classes", "2", "--out", str(plain), "--json"])
    main(["workload", str(path), "--classes", "2", "--out", str(fitted), "--service", "fit",
          "--json"])
    capsys.readouterr()
    assert "[service]" not in plain.read_text() and scenarios.load(plain).service is None
    model = scenarios.load(fitted)
    w = workload.build(workload.read_trace(path), 2)
    for side, attr in (("prefill", "prompt"), ("decode", "output")):
        law = getattr(model.service, side)
        want = [getattr(c, attr).cv for c in w.classes]
        assert law.law == "fit" and law.cv == pytest.approx(want, rel=1e-12)
        # The law's own moments (its phases), not only the number it was asked for.
        for i, cv in enumerate(want):
            k = law.class_phases()[i]
            m1, m2 = moments(np.asarray(law.rates)[i, :k], np.asarray(law.cont)[i, :k], 2)
            assert m1 == pytest.approx(1.0, rel=1e-9)
            assert np.sqrt(m2 - m1**2) == pytest.approx(cv, rel=1e-6)
    with pytest.raises(SystemExit) as err:
        main(["workload", str(path), "--classes", "2", "--service", "gamma"])
    assert err.value.code == 2 and "--service" in capsys.readouterr().err
