"""Paths are bit-identical to those recorded before the simulator became a pure kernel with a
decision seam (scripts/record_paths.py; the recording is tests/data/paths.npz), and the
eight-class ones to their own recording (tests/data/paths_classes.npz).

Floating-point rounding of XLA's transcendental functions may differ with another JAX version or
CPU, so the comparison runs only where the recording was made and on the machines that
``scripts/record_paths.py --vouch`` found identical (it skips elsewhere, saying why).
The default suite checks four cases that between them exercise both engines, the gate, a lazy
FCFS prefill queue, the decode ring, every latency counter (``pooled-latency``: the pooled
engine with a wait grid and the end-to-end counters) and the two-level event draw of more than
five classes (``dolly-8class``); the slow suite checks every policy and engine.

A recording of this length guards the use of the random words and the decisions, not the
rounding of the event draw: a target lands within a few ulps of an edge between two events once
in millions of steps, so a change that keeps the law but sums the rates in another order (such as
the two-level draw itself, checked against these recordings) leaves these paths as they were
and still changes a long run's.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("record_paths", ROOT / "scripts" / "record_paths.py")
record_paths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_paths)


def recorded(fixture=record_paths.FIXTURE):
    data = np.load(fixture)
    here = record_paths.machine()
    if here != str(data["machine"]) and record_paths.vouched_name() not in record_paths.vouched():
        pytest.skip(f"paths were recorded on {data['machine']}; this is {here}, which "
                    "record_paths.py --vouch has not checked: floating-point rounding may differ")
    return data


DEFAULT = (("fg-sp", "pooled"), ("gf-wsp", "per-gpu"), ("gate-and-route", "pooled-latency"),
           ("gate-and-route", "pooled", "dolly-8class"))


@pytest.mark.parametrize("case", [
    *DEFAULT,
    *(pytest.param(c, marks=pytest.mark.slow)
      for c in (*record_paths.CASES, *record_paths.MANY_CLASSES) if c not in DEFAULT),
])
def test_paths_are_bit_identical_to_the_recording(case):
    data = recorded(record_paths.fixture(case))
    now = record_paths.paths([case])
    tag = record_paths.tag(case) + "/"
    names = [k for k in data.files if k.startswith(tag)]
    assert len(names) > 20  # states, times, counters and a whole run were recorded
    bad = record_paths.compare({k: data[k] for k in names}, now)
    assert not bad, bad


def test_paths_are_the_recording_under_xla_default_code_generator():
    # The suite compiles with XLA's older CPU emitter at a lower optimisation level
    # (tests/conftest.py); users run XLA's defaults. One case replayed in a process of its own
    # with the defaults.
    import os
    import subprocess
    import sys

    if os.environ.get("JAXQUEUE_TEST_EMITTER") != "legacy":
        pytest.skip("this session already compiles with XLA's default emitter")
    recorded()
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith(("--xla_cpu_use_fusion_emitters",
                                          "--xla_backend_optimization_level")))
    code = ("import sys, numpy as np; sys.path.insert(0, 'scripts'); import record_paths; "
            "case = ('fg-sp', 'pooled'); data = np.load(record_paths.FIXTURE); "
            "tag = '{}@{}/'.format(*case); names = [k for k in data.files if k.startswith(tag)]; "
            "bad = record_paths.compare({k: data[k] for k in names}, record_paths.paths([case])); "
            "print(len(names), bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, XLA_FLAGS=flags, JAXQUEUE_TEST_EMITTER="default"),
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    count, bad = out.stdout.split(maxsplit=1)
    assert int(count) > 20 and bad.strip() in ("[]", "{}"), out.stdout


def test_vouching_compares_under_the_suites_own_flags():
    # record_paths.py --vouch checks a machine under the flags the suite compiles with.
    from conftest import _FLAGS

    assert record_paths.SUITE_FLAGS == _FLAGS
