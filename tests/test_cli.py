"""The command line: JSON keys of each command, errors naming the field, tables a person can
read (width, units, verdicts), interrupts, and a process left as it was found."""

import functools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import every_core

from jaxqueue import tables as report
from jaxqueue.cli import main

ROOT = Path(__file__).resolve().parents[1]
# One compiled program for the simulations below: paper-qwen8b at n = 5 (rings of 256 jobs),
# four replications on one device.
SMALL = ["--gpus", "5", "--reps", "4", "--horizon", "40", "--warmup", "10", "--devices", "1"]


def run_json(capsys, *argv):
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


def run_text(capsys, *argv, code=0):
    """The command's stdout and stderr; ``code`` is the exit status it must end with."""
    if code:
        with pytest.raises(SystemExit) as err:
            main(list(argv))
        assert err.value.code == code
    else:
        main(list(argv))
    out = capsys.readouterr()
    return out.out, out.err


def test_lp_reproduces_the_papers_values(capsys):
    bundled = run_json(capsys, "lp", "paper-qwen8b")
    separate = run_json(capsys, "lp", "paper-qwen8b", "--pricing", "separate")
    # docs/model.md Sec. 8 (independent solve): bundled R* = 297.716, separate R* = 298.598.
    assert bundled["revenue"] == pytest.approx(297.716, abs=5e-4)
    assert separate["revenue"] == pytest.approx(298.598, abs=5e-4)
    assert set(bundled) >= {"pricing", "revenue", "mixed_fraction", "solo_efficient", "classes"}
    assert [c["x"] for c in bundled["classes"]] == pytest.approx([0.01826, 0.19495], abs=5e-6)
    assert [c["q_decode"] for c in separate["classes"]] == pytest.approx([0, 0.8003], abs=5e-5)
    assert set(bundled["classes"][0]) == {"name", "x", "y_mixed", "y_solo", "q_prefill",
                                          "q_decode"}


def test_lp_with_sli_and_frontier(capsys):
    out = run_json(capsys, "lp", "paper-qwen8b", "--tpot", "0.023")
    assert out["sli"]["tpot"] == pytest.approx(0.023, rel=1e-6)
    assert out["revenue"] < 297.716
    fr = run_json(capsys, "frontier", "paper-qwen8b", "--sli", "tpot", "--values", "0.0221",
                  "0.025")
    first, last = fr["points"]
    assert first["revenue"] < last["revenue"] and first["shadow_price"] > last["shadow_price"]


def test_simulate_json_keys(capsys):
    out = run_json(capsys, "simulate", "paper-qwen8b", "--policy", "gg-sp", "--gpus", "5",
                   "--reps", "4", "--horizon", "20", "--warmup", "5", "--devices", "1")
    assert out["policy"] == "gate-and-route" and out["mixed_gpus"] == 2
    for k in ("bundled", "separate"):
        assert set(out["revenue_per_gpu"][k]) == {"mean", "ci95"}
    keys = {"x", "y_mixed", "y_solo", "q_prefill", "q_decode", "completion_rate",
            "prefill_abandonment_rate", "decode_abandonment_rate"}
    for c in out["classes"]:
        assert keys <= set(c)
        assert set(c["x"]) == {"mean", "ci95"}
    assert out["events"] > 0 and out["events_per_second"] > 0 and out["compile_seconds"] >= 0
    assert out["lp_revenue"] == pytest.approx(297.716, abs=5e-4)


def test_validate_erlang_a_json(capsys):
    out = run_json(capsys, "validate", "erlang-a", "--servers", "5", "--arrival-rate", "4",
                   "--service-rate", "1", "--patience-rate", "0.5", "--reps", "32",
                   "--horizon", "300", "--warmup", "30")
    for k in ("abandon_probability", "mean_queue", "mean_busy"):
        assert set(out["simulated"][k]) == {"mean", "ci95"}
        assert isinstance(out["exact"][k], float)
    assert out["events"] > 0 and out["events_per_second"] > 0


@pytest.mark.parametrize("argv, message", [
    (["simulate", "paper-qwen8b", "--gpus", "0"], "gpus"),
    (["simulate", "paper-qwen8b", "--horizon", "10", "--warmup", "20"], "warmup"),
    (["simulate", "paper-qwen8b", "--policy", "nope"], "policy"),
    (["lp", "nope"], "neither a built-in name"),
    (["lp", "paper-qwen8b", "--tpot", "0.02"], "smallest feasible value is 0.022"),
    # The SLI plan without its router would silently change gate-and-route's plan.
    (["simulate", "paper-qwen8b", "--tpot", "0.023"], "use --policy sli-gate-and-route"),
    # Memory: one line that says what would fit, instead of an XLA OOM traceback.
    (["simulate", "paper-qwen8b", "--gpus", "1000000000"], "at most about n = "),
    (["simulate", "paper-qwen8b", "--reps", "100000000000"], "replications fit"),
    (["tune", "paper-qwen8b", "--gpus", "6", "--step-scale", "-1"],
     "step-scale = -1.0: must be finite and > 0"),
    (["tune", "paper-qwen8b", "--gpus", "6", "--temperature", "20", "--estimator", "score",
      "--step-scale", "0.5"],
     "step-scale is for --estimator fd or spsa"),
    (["tune", "paper-qwen8b", "--gpus", "6", "--gate-steps"], "gate-steps needs --temperature"),
])
def test_bad_input_names_the_field(capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert any(message in line and "error" in line for line in err.splitlines())  # one line


def test_main_leaves_the_process_as_it_found_it(capsys, monkeypatch, tmp_path):
    # The command sets XLA_FLAGS (one CPU device per core) and a persistent compilation cache;
    # run in-process (a test, a notebook) it must put both back, also when it fails.
    import jax
    from jax._src import compilation_cache

    monkeypatch.setenv("JAXQUEUE_CACHE", str(tmp_path / "xla"))
    flags = os.environ.get("XLA_FLAGS")
    options = {k: getattr(jax.config, k) for k in (
        "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    main(["simulate", "paper-qwen8b", *SMALL, "--json"])
    with pytest.raises(SystemExit):
        main(["simulate", "paper-qwen8b", "--gpus", "0"])
    with pytest.raises(SystemExit):
        main(["lp", "no-such-scenario"])
    capsys.readouterr()
    assert os.environ.get("XLA_FLAGS") == flags
    assert {k: getattr(jax.config, k) for k in options} == options
    assert not compilation_cache.is_persistent_cache_enabled() or options[
        "jax_compilation_cache_dir"]
    assert compilation_cache._cache is None  # the cache object is gone too


def test_simulate_summary_fits_100_columns_with_units(capsys):
    out, _ = run_text(capsys, "simulate", "paper-qwen8b", *SMALL)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= report.WIDTH
    for needle in ("revenue per GPU per second (bundled pricing)", "LP bound R* = 297.7162",
                   "jobs/s per GPU", "% of arrivals", "prefill wait", "decode wait", "s, mean",
                   "TPOT, paper's formula at X (s)", "TPOT that decodes see (s)",
                   "prefill fairness (jobs/GPU)", "planned mixed GPUs: M = 2 of 5", "events:"):
        assert needle in out, needle
    assert "nan" not in out.lower()
    details, _ = run_text(capsys, "simulate", "paper-qwen8b", *SMALL, "--details")
    assert max(len(line) for line in details.splitlines()) <= report.WIDTH
    assert "decodes at solo speed y_solo (jobs/GPU)" in details and "LP plan" in details
    assert len(details.splitlines()) > len(lines) + 20


def test_progress_bar_on_a_terminal_only_without_json(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _, err = run_text(capsys, "simulate", "paper-qwen8b", *SMALL)
    assert "n = 5:" in err and "left" in err  # tqdm, with the time left
    main(["simulate", "paper-qwen8b", *SMALL, "--json"])
    assert "n = 5:" not in capsys.readouterr().err


def test_simulate_json_has_waits_slis_and_no_nan(capsys):
    out = run_json(capsys, "simulate", "paper-qwen8b", *SMALL)
    assert set(out["sli"]) == {"tpot_formula", "tpot_experienced", "prefill_fairness",
                               "decode_fairness"}
    tpot = out["sli"]["tpot_formula"]
    assert tpot["target"] is None and tpot["plan"] == pytest.approx(0.0242836, rel=1e-5)
    # The paper's TPOT at the simulated X lies between tau (X = 1) and 1/gamma (X = 0).
    assert 0.022 < tpot["mean"] < 0.033272 and tpot["ci95"] > 0
    for c in out["classes"]:
        assert c["prefill_wait"]["mean"] >= 0 and 0 <= c["abandonment"]["mean"] <= 1
    assert out["time_reached"]["min"] == 40.0 and out["replications_with_statistics"] == 4


# One replication in chunks of 64 events: a second program, shared by the two tests below.
ONE = ["--gpus", "5", "--reps", "1", "--devices", "1", "--chunk-events", "64"]


def test_one_replication_says_it_has_no_interval(capsys):
    out, _ = run_text(capsys, "simulate", "paper-qwen8b", *ONE, "--horizon", "40",
                      "--warmup", "10")
    assert "one replication: no confidence intervals" in out
    assert "nan" not in out.lower() and "±" not in out


def test_coupled_policy_names_its_layout(capsys):
    out, _ = run_text(capsys, "simulate", "paper-qwen8b", "--policy", "fi-wsp", *SMALL)
    assert "planned mixed GPUs: none (coupled" in out and "0 mixed" not in out
    assert "plan: none (no static planning" in out and "plan: the bundled LP" not in out
    assert max(len(line) for line in out.splitlines()) <= report.WIDTH
    js = run_json(capsys, "simulate", "paper-qwen8b", "--policy", "fi-wsp", *SMALL)
    assert js["mixed_gpus"] is None and js["coupled"] and not js["static_planning"]


def test_sli_policy_reports_its_targets_and_says_when_it_misses_them(capsys):
    # At n = 50 the TPOT plan's X* = 0.0942 needs M = ceil(50 X*) = 5 mixed GPUs, whose busy
    # prefill slots make X = 0.1 and TPOT(0.1) = 0.02306 s > 0.023: the output must show it.
    argv = ["simulate", "paper-qwen8b", "--policy", "sli-gate-and-route", "--gpus", "50",
            "--reps", "2", "--horizon", "60", "--warmup", "20", "--devices", "1"]
    out, _ = run_text(capsys, *argv, "--tpot", "0.023")
    line = next(x for x in out.splitlines() if x.startswith("TPOT, paper's formula"))
    assert "0.023" in line and line.rstrip().endswith("MISSED")
    assert "a bound only for policies that meet its targets" in out
    js = run_json(capsys, *argv, "--tpot", "0.023")
    assert js["sli"]["tpot_formula"]["mean"] == pytest.approx(0.02306, abs=2e-5)
    assert js["sli"]["tpot_formula"]["target"] == 0.023
    plain, _ = run_text(capsys, *argv)
    assert "without SLI targets (none given)" in plain and "the plan of gate-and-route" in plain


def test_fixed_buffer_capacity_overflow_says_what_to_use(capsys):
    _, err = run_text(capsys, "simulate", "paper-qwen8b", "--policy", "fg-sp", *SMALL,
                      "--buffer-capacity", "2", code=2)
    assert "fixed capacity of 2 jobs" in err and "--buffer-capacity 8 or more" in err


def test_estimate_of_a_long_run_is_printed_before_it_starts(capsys):
    # FI-WSP on a million GPUs: per-GPU arrays of 2^20 entries per replication, O(n) per step.
    out, err = run_text(capsys, "simulate", "paper-qwen8b", "--policy", "fi-wsp", "--gpus",
                        "1000000", "--reps", "2", "--estimate")
    assert out == "" and "estimated run time" in err
    # 1.2e10 events at well under 1e6 events/s: more than ten hours, in hours or longer units.
    found = re.search(r"estimated run time ([0-9.]+) (h|days|years)", err)
    assert found is not None and (found.group(2) != "h" or float(found.group(1)) > 10)


def test_an_interrupt_in_the_warmup_says_no_statistics_and_exits_130(capsys, monkeypatch):
    from jaxqueue import driver

    # max_chunks stops the run as a Ctrl-C between chunks would.
    monkeypatch.setattr(driver, "simulate", functools.partial(driver.simulate, max_chunks=1))
    argv = ["simulate", "paper-qwen8b", *ONE, "--horizon", "40", "--warmup", "35"]
    out, err = run_text(capsys, *argv, code=130)
    assert "INTERRUPTED at t = " in out and "no statistics were collected" in out
    assert "nan" not in out.lower() and "interrupted" in err
    js = run_json_code(capsys, 130, *argv)
    assert js["interrupted"] and js["revenue_per_gpu"] is None
    assert 0 < js["time_reached"]["max"] < 35


def run_json_code(capsys, code, *argv):
    with pytest.raises(SystemExit) as err:
        main([*argv, "--json"])
    assert err.value.code == code
    return json.loads(capsys.readouterr().out)


# The command as its entry point runs it, with Python's Ctrl-C handling restored: a process
# started in the background by a shell inherits SIGINT ignored.
COMMAND = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from jaxqueue.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow  # a real SIGINT to a subprocess; the driver's Ctrl-C tests run by default
def test_ctrl_c_on_the_command_exits_130_with_the_time_reached():
    env = dict(os.environ, JAXQUEUE_CACHE="",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND, "simulate", "paper-qwen8b", "--gpus", "5", "--reps",
         "2", "--horizon", "1e7", "--warmup", "0", "--json"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stderr:  # the estimate, then a line once the run is compiled and going
            if "simulating" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    js = json.loads(out)
    assert js["interrupted"] and js["horizon"] == 1e7
    assert 0 < js["time_reached"]["min"] < 1e7 and js["replications_with_statistics"] == 2


ONE_CORE = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(every_core()) < 2,
    reason="needs a process that may use two or more cores")


# (how main is called, policy, pinned to one core, devices the run uses: all is -1)
@ONE_CORE
@pytest.mark.parametrize("how, policy, pinned, devices", [
    ("own", "fi-wsp", True, 1),
    pytest.param("own", "gate-and-route", False, -1, marks=pytest.mark.slow),
    pytest.param("in-process", "fi-wsp", False, 1, marks=pytest.mark.slow),
])
def test_a_few_replication_per_gpu_run_of_its_own_runs_on_one_core(how, policy, pinned, devices):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # The process may use every core of the session (a test worker may be pinned to one).
    code = (f"import os, sys; os.sched_setaffinity(0, {sorted(every_core())}); "
            "from jaxqueue.cli import main; a = {}; sys.argv[1:] = a[1:]; "
            "main() if a[0] == 'own' else main(a[1:]); "
            "print(len(os.sched_getaffinity(0)), file=sys.stderr)")
    run = ["simulate", "paper-qwen8b", "--gpus", "5", "--reps", "2", "--horizon", "5",
           "--warmup", "1", "--json"]
    every = len(every_core())
    devices = every if devices == -1 else devices
    argv = [how, *run, "--policy", policy]
    out = subprocess.run([sys.executable, "-c", code.format(argv)], cwd=ROOT, env=env,
                         text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("run on one device and one core" in out.stderr) == pinned, out.stderr
    cores = int(out.stderr.strip().splitlines()[-1])
    assert cores == (1 if pinned else every), cores
    assert json.loads(out.stdout)["devices"] == devices, out.stdout[-200:]


def test_help_shows_defaults_and_no_rst_markup(capsys):
    for argv in (["--help"], ["simulate", "--help"], ["lp", "--help"], ["validate", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "``" not in text
    main_help = capsys.readouterr
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = main_help().out
    assert "(default: 50)" in text and "(default: 256)" in text and "--details" in text
    with pytest.raises(SystemExit):
        main(["lp", "--help"])
    assert "revenue per GPU per second per unit of excess" in " ".join(main_help().out.split())


def test_help_gives_each_default_once_and_none_for_required_options_or_flags():
    from jaxqueue.cli import _parser

    parser = _parser()
    checked = 0
    for name, command in parser.commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            text = formatter._expand_help(action) if action.help else ""
            assert not any(f"(default: {empty})" in text for empty in ("None", "False", "[]",
                                                                      "()")), (name, text)
            assert text.count("default") <= 1, (name, text)  # never printed twice
            if action.required:
                assert "default" not in text, (name, text)
            checked += 1
    assert checked > 100
    engine = next(a for a in parser.commands["simulate"]._actions if a.dest == "engine")
    assert parser.commands["simulate"]._get_formatter()._expand_help(engine).endswith(
        "(default: the policy's first)")


@pytest.mark.parametrize("argv, command, message", [
    (["simulate", "paper-qwen8b", "--horizon", "10", "--warmup", "20"], "jaxqueue simulate",
     "warmup = 20: must be < horizon = 10"),
    (["compare", "paper-qwen8b", "--gpus", "5", "--horizon", "10", "--warmup", "20"],
     "jaxqueue compare", "warmup = 20"),
    (["simulate"], "jaxqueue simulate", "required: scenario"),
    (["simulate", "paper-qwen8b", "--gpus", "x"], "jaxqueue simulate", "gpus = 'x'"),
    (["nope"], "jaxqueue", "invalid choice: 'nope'"),
])
def test_argparse_errors_are_a_short_usage_and_one_line_naming_the_command(capsys, argv,
                                                                           command, message):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"usage: {command} ")
    assert lines[1].startswith(f"{command}: error: ") and message in lines[1]
    assert all(len(line) <= report.WIDTH for line in lines[:1])


def test_simulate_prints_separate_revenue_next_to_its_own_bound_and_no_roundoff(capsys):
    js = run_json(capsys, "simulate", "paper-qwen8b", *SMALL)
    assert js["other_lp_revenue"] == pytest.approx(298.598, abs=5e-4)
    out, _ = run_text(capsys, "simulate", "paper-qwen8b", *SMALL)
    line = next(x for x in out.splitlines() if "under separate pricing" in x)
    assert line.endswith("(its own LP bound: R* = 298.5980)")
    # A zero-width interval (every replication equal, up to round-off) prints as 0.
    assert report.fmt({"mean": 0.3, "ci95": 2.8e-19}) == "0.3 ± 0"
    assert report.fmt({"mean": 0.02437, "ci95": 3.7e-10}) == "0.02437 ± 0"
    assert report.fmt({"mean": 0.0, "ci95": 2.8e-19}) == "0 ± 0"
    assert report.fmt({"mean": 290.0, "ci95": 0.31}) == "290 ± 0.31"
    from jaxqueue.stats import mean_ci

    assert float(mean_ci(np.full(7, 0.1 + 0.2))[1]) == 0.0  # np.std gives 6e-17 here


def test_simulate_params_prints_the_same_tables_as_simulate(tmp_path, capsys):
    from jaxqueue import fluid, scenarios
    from jaxqueue.policies import tunable

    model = scenarios.load("paper-qwen8b")
    saved = tmp_path / "tuned.json"
    params = tunable.initial_params("gated", model, 5, fluid.solve(model, "bundled"))
    tunable.save_params(saved, "gated", params, scenario="paper-qwen8b", gpus=5)
    out, _ = run_text(capsys, "simulate", "paper-qwen8b", *SMALL, "--params", str(saved))
    for needle in ("tuned gated (", "jobs/s per GPU", "% of arrivals", "prefill fairness",
                   "TPOT that decodes see", "LP bound R* = 297.7162", "parameters (tuned for "
                   "paper-qwen8b, n = 5): targets = [0.01826, 0.195], offset = 0",
                   "planned mixed GPUs: M = n x share = 2 of 5", "its own LP bound"):
        assert needle in " ".join(out.split()), needle
    assert not re.search(r"\d\.\d{9,}", out)  # no 17-digit numbers
    assert max(len(line) for line in out.splitlines()) <= report.WIDTH


def test_policies_that_do_not_plan_do_not_say_they_follow_the_lp(capsys):
    from jaxqueue import fluid, policies, scenarios
    from jaxqueue.cli import _plan_text

    plan = fluid.solve(scenarios.load("paper-qwen8b"), "bundled")
    fi = _plan_text(policies.resolve("fi-wsp"), None, plan)
    assert fi.startswith("none (no static planning, FCFS admission)") and "bounds" in fi
    gi = _plan_text(policies.resolve("gi-wsp"), None, plan)
    assert gi.startswith("the gate's targets x* from the bundled LP") and "no static" in gi
    assert _plan_text(policies.resolve("gg-sp"), None, plan).startswith("the bundled LP (R*")


def test_without_a_terminal_long_runs_print_sparse_progress_lines(capsys, monkeypatch):
    from jaxqueue import cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY", 0.0)  # a line at every chunk instead of 30 s
    _, err = run_text(capsys, "simulate", "paper-qwen8b", *ONE, "--horizon", "40",
                      "--warmup", "10")
    lines = [x for x in err.splitlines() if "% simulated" in x]
    assert len(lines) >= 3 and all(x.startswith("jaxqueue: n = 5: ") for x in lines)
    assert "elapsed" in lines[-1] and "left" in lines[-1]
    monkeypatch.setattr(cli, "PROGRESS_EVERY", 30.0)
    _, err = run_text(capsys, "simulate", "paper-qwen8b", *ONE, "--horizon", "40",
                      "--warmup", "10")
    assert "% simulated" not in err  # a short run says nothing


def test_reproduce_finds_the_experiments_of_the_clone_it_runs_in(tmp_path):
    from jaxqueue.cli import _find_experiments

    clone = tmp_path / "clone"
    (clone / "experiments").mkdir(parents=True)
    (clone / "experiments" / "reproduce.py").write_text("")
    (clone / "pyproject.toml").write_text('[project]\nname = "jaxqueue"\n')
    (clone / "results").mkdir()
    site = tmp_path / "site-packages" / "jaxqueue"  # pip install . (no experiments next to it)
    site.mkdir(parents=True)
    assert _find_experiments(None, site, clone / "results") == clone / "experiments"
    assert _find_experiments(None, site, tmp_path) is None  # outside any clone
    # An editable install (the package inside the clone) finds them from anywhere.
    assert _find_experiments(None, clone / "jaxqueue", tmp_path) == clone / "experiments"
    assert _find_experiments(str(clone / "experiments"), site, tmp_path) == clone / "experiments"
    assert _find_experiments(str(tmp_path), site, clone) is None
    (clone / "pyproject.toml").write_text('[project]\nname = "other"\n')  # not jaxqueue's
    assert _find_experiments(None, site, clone / "results") is None


def test_reproduce_outside_a_clone_says_what_to_do(capsys, monkeypatch, tmp_path):
    from jaxqueue import cli

    monkeypatch.delenv("JAXQUEUE_EXPERIMENTS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "jaxqueue" / "cli.py"))
    _, err = run_text(capsys, "reproduce", "--quick", code=2)
    assert "run it inside the clone" in err and "JAXQUEUE_EXPERIMENTS" in err
    assert len(err.strip().splitlines()) == 1


def test_validate_prints_its_verdict_and_the_threshold(capsys):
    out, _ = run_text(capsys, "validate", "erlang-a", "--servers", "5", "--arrival-rate", "4",
                      "--service-rate", "1", "--patience-rate", "0.5", "--reps", "32",
                      "--horizon", "300", "--warmup", "30")
    assert "verdict: AGREE" in out and "|z| <= 3" in out


def test_convergence_verdict_and_exit_code(capsys, monkeypatch):
    import numpy as np

    from jaxqueue import validate

    lp = 297.716

    def fake(values_by_n):
        samples = {n: np.asarray(v, float) for n, v in values_by_n.items()}
        rows = []
        for n, v in samples.items():
            se = v.std(ddof=1) / np.sqrt(v.size)
            rows.append({"gpus": n, "mixed_gpus": 1, "lp_revenue": lp, "replications": v.size,
                         "revenue": {"mean": v.mean(), "ci95": 2 * se}, "gap": lp - v.mean(),
                         "relative_gap": (lp - v.mean()) / lp, "wall_seconds": 0.0,
                         "z_above_bound": (v.mean() - lp) / se, "events": 0})
        out = {"scenario": "paper-qwen8b", "policy": "gate-and-route", "pricing": "bundled",
               "reps": 4, "horizon": 1.0, "warmup": 0.0, "rows": rows, "interrupted": False}
        out.update(validate.convergence_verdict(rows, samples))
        return out

    # Rising revenue under the bound: agree. Above the bound by many standard errors: disagree.
    good = fake({5: [265.0, 266.0, 264.0, 265.5], 50: [288.0, 288.5, 287.5, 288.2]})
    assert good["verdict"] == "agree" and good["bound"] and good["trend"]
    above = fake({5: [265.0, 266.0, 264.0, 265.5], 50: [299.0, 299.5, 298.8, 299.2]})
    assert above["verdict"] == "disagree" and not above["bound"] and above["trend"]
    flat = fake({5: [265.0, 266.0, 264.0, 265.5], 50: [265.0, 266.0, 264.0, 265.5]})
    assert flat["verdict"] == "disagree" and flat["bound"] and not flat["trend"]
    monkeypatch.setattr(validate, "convergence_check", lambda *a, **k: above)
    out, _ = run_text(capsys, "validate", "convergence", code=1)
    assert "verdict: DISAGREE" in out and "(1) bound: NO" in out and "3 standard errors" in out
    longest = dict(above, scenario="dolly-8class", policy="prioritize-and-route",
                   pricing="separate")  # the longest built-in names
    assert max(map(len, report.convergence_lines(longest, prefix="(c) "))) <= report.WIDTH
    out, _ = run_text(capsys, "convergence", code=1)
    assert not out.startswith("(c)") and "verdict: DISAGREE" in out
    monkeypatch.setattr(validate, "convergence_check", lambda *a, **k: good)
    out, _ = run_text(capsys, "convergence")
    assert out.startswith("paper-qwen8b / gate-and-route") and "verdict: AGREE" in out


def test_exact_check_table_states_its_threshold():
    rows = [("mean_queue", {"mean": 2.9, "ci95": 0.1, "exact": 2.95, "z": 2.18, "agree": True})]
    lines = report.exact_check_lines("title", rows, "agree", "agree when every |z| <= 3")
    assert lines[-1] == "verdict: AGREE (agree when every |z| <= 3)"


def test_lp_penalty_prints_revenue_penalty_and_violations(capsys):
    js = run_json(capsys, "lp", "paper-qwen8b", "--tpot", "0.021", "--penalty")
    term = js["penalties"]["tpot"]
    assert js["revenue"] == pytest.approx(297.716, abs=5e-4)
    assert term["excess"] == pytest.approx(0.0242836 - 0.021, rel=1e-4)
    assert js["objective"] == pytest.approx(js["revenue"] - term["penalty"], rel=1e-12)
    assert term["smallest"] == pytest.approx(0.022, rel=1e-9)
    assert js["unique"] is False and "y_mixed" in js["alternative_optima"]
    out, _ = run_text(capsys, "lp", "paper-qwen8b", "--tpot", "0.021", "--penalty",
                      "--penalty-weight", "1e6")
    assert "revenue - penalty = 0.000000 - 1000 = -1000.000000" in out
    assert "no plan meets this target" in out and "-0.0" not in out
    assert max(len(line) for line in out.splitlines()) <= report.WIDTH
    out, _ = run_text(capsys, "lp", "paper-qwen8b")
    assert "the LP optimum is not unique" in out


def test_devices_all_narrows_few_per_gpu_replications_on_cpu(monkeypatch, capsys):
    import types

    import jax

    from jaxqueue import cli, policies, scenarios

    fake = [types.SimpleNamespace(platform="cpu", id=i) for i in range(4)]
    monkeypatch.setattr(jax, "devices", lambda *a: fake)
    model = scenarios.load("paper-qwen8b")
    per_gpu, _ = policies.build("fi-wsp", model, 20, engine="per-gpu")
    pooled, _ = policies.build("gate-and-route", model, 20)
    least = cli.MIN_PER_GPU_REPS_PER_CPU_DEVICE
    assert cli._devices("all", per_gpu, 5) == fake[:1]
    assert "1 of the 4 CPU devices" in capsys.readouterr().err
    assert cli._devices("all", per_gpu, 2 * least) == fake[:2]
    assert cli._devices("all", per_gpu, 100 * least) == fake
    assert cli._devices("all", pooled, 5) == fake  # the pooled engine keeps every device
    assert cli._devices("2", per_gpu, 5) == fake[:2]  # an explicit count is obeyed
    gpus = [types.SimpleNamespace(platform="gpu", id=i) for i in range(4)]
    monkeypatch.setattr(jax, "devices", lambda *a: gpus)
    assert cli._devices("all", per_gpu, 5) == gpus


def test_simulate_latency_prints_quantiles_and_refuses_per_gpu(capsys):
    out, _ = run_text(capsys, "simulate", "paper-qwen8b", *SMALL, "--latency")
    assert max(len(line) for line in out.splitlines()) <= report.WIDTH
    for needle in ("latency (s)", "p99 [95% CI]", "TTFT", "E2E", "TPOT", "decode-heavy", "all"):
        assert needle in out, needle
    data = run_json(capsys, "simulate", "paper-qwen8b", *SMALL, "--latency")
    lat = data["latency"]
    assert set(lat) == {"decode-heavy", "prefill-heavy", "all"}
    assert lat["all"]["started"] == lat["decode-heavy"]["started"] + lat["prefill-heavy"]["started"]
    for row in lat.values():
        for what in ("wait", "ttft"):
            q = row[what]
            assert set(q) == {"p50", "p90", "p99"}
            assert q["p50"]["value"] <= q["p90"]["value"] <= q["p99"]["value"]
            assert q["p50"]["low"] <= q["p50"]["value"] <= q["p50"]["high"]
        assert row["wait"]["p90"]["value"] <= row["ttft"]["p90"]["value"]  # TTFT adds prefill
        assert row["decode_wait"]["p50"]["value"] is not None and row["decodes_started"] > 0
        # The end-to-end latency adds a decode to the decode's wait; the time per output token
        # is one of the two per-token times, their shares summing to one.
        assert row["e2e"]["p50"]["value"] > row["decode_wait"]["p50"]["value"]
        assert row["e2e"]["p50"]["low"] <= row["e2e"]["p50"]["value"] <= row["e2e"]["p50"]["high"]
        atoms = row["tpot"]["atoms"]
        assert [a["seconds"] for a in atoms] == pytest.approx([0.022, 0.0174 + 6.2e-5 * 256])
        assert sum(a["share"] for a in atoms) == pytest.approx(1.0)
        assert atoms[-1]["at_most"] == pytest.approx(1.0)
        assert row["tpot"]["p99"]["value"] in [a["seconds"] for a in atoms]
    _, err = run_text(capsys, "simulate", "paper-qwen8b", *SMALL, "--policy", "fi-wsp",
                      "--latency", code=2)
    assert "--latency and --slo are supported by the pooled" in err and "fi-wsp" in err


def test_simulate_slo_prints_goodput_per_class(capsys):
    # Targets on the latency grid already (1 s, 10 s): the same program as --latency's.
    slo = ["--slo", "wait=1", "--slo", "ttft=1", "--slo", "e2e=10", "--slo", "tpot=0.03"]
    out, _ = run_text(capsys, "simulate", "paper-qwen8b", *SMALL, *slo)
    assert max(len(line) for line in out.splitlines()) <= report.WIDTH
    for needle in ("goodput", "share of arrivals", "TTFT <= 1 s", "E2E <= 10 s", "TPOT <= 0.03 s",
                   "latency (s)"):  # --slo implies --latency
        assert needle in out, needle
    good = run_json(capsys, "simulate", "paper-qwen8b", *SMALL, *slo)["goodput"]
    assert list(good) == ["wait", "ttft", "e2e", "tpot"]
    for metric, g in good.items():
        c = g["classes"]
        assert set(c) == {"decode-heavy", "prefill-heavy", "all"}
        # "all" counts every class's requests: rates add up exactly; shares lie between.
        rates = [c[k]["per_gpu_per_second"]["mean"] for k in ("decode-heavy", "prefill-heavy")]
        assert c["all"]["per_gpu_per_second"]["mean"] == pytest.approx(sum(rates), rel=1e-9)
        shares = [c[k]["share"]["mean"] for k in ("decode-heavy", "prefill-heavy", "all")]
        assert 0.0 <= min(shares[:2]) <= shares[2] <= max(shares[:2]) <= 1.0, metric
    # A request's wait is part of its TTFT: the same bound is met by at least as many.
    for name in ("decode-heavy", "prefill-heavy", "all"):
        assert (good["wait"]["classes"][name]["share"]["mean"]
                >= good["ttft"]["classes"][name]["share"]["mean"])
    for bad, says in (("ttft", "must be METRIC=SECONDS"), ("ttfb=2", "must be METRIC=SECONDS"),
                      ("ttft=-1", "a number > 0")):
        _, err = run_text(capsys, "simulate", "paper-qwen8b", *SMALL, "--slo", bad, code=2)
        assert f"--slo {bad!r} is invalid" in err and says in err, err
    _, err = run_text(capsys, "simulate", "paper-qwen8b", *SMALL, "--slo", "ttft=1",
                      "--slo", "ttft=2", code=2)
    assert "ttft already has a target" in err


def test_scenarios_show_writes_a_changed_scenario_that_runs(tmp_path, capsys):
    path = tmp_path / "g10.toml"
    main(["scenarios", "--show", "paper-qwen8b", "--set", "gamma=10", "--out", str(path)])
    lp = run_json(capsys, "lp", str(path))
    assert lp["scenario"] == "paper-qwen8b (gamma=10)"
    assert lp["solo_efficient"] is False  # gamma tau < (B - 1) / B at gamma = 10
    with pytest.raises(SystemExit) as stop:
        main(["scenarios", "--set", "gamma=10"])
    assert stop.value.code == 2
    assert "--set needs --show" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["scenarios", "--show", "paper-qwen8b", "--out", str(path), "--json"])
    assert "give one of them" in capsys.readouterr().err
