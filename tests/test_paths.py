"""Paths are bit-identical to those recorded before the simulator became a pure kernel with a
decision seam (scripts/record_paths.py; the recording is tests/data/paths.npz).

Floating-point rounding of XLA's transcendental functions may differ with another JAX version or
CPU, so the comparison runs only where the recording was made (it skips elsewhere, saying why).
The default suite checks three cases that between them exercise both engines, the gate, a lazy
FCFS prefill queue, the decode ring and every latency counter (``pooled-latency``: the pooled
engine with a wait grid and the end-to-end counters); the slow suite checks every policy and
engine.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("record_paths", ROOT / "scripts" / "record_paths.py")
record_paths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_paths)


def recorded():
    data = np.load(record_paths.FIXTURE)
    if str(data["machine"]) != record_paths.machine():
        pytest.skip(f"paths were recorded on {data['machine']}; this is "
                    f"{record_paths.machine()}: floating-point rounding may differ")
    return data


DEFAULT = (("fg-sp", "pooled"), ("gf-wsp", "per-gpu"), ("gate-and-route", "pooled-latency"))


@pytest.mark.parametrize("case", [
    *DEFAULT,
    *(pytest.param(c, marks=pytest.mark.slow) for c in record_paths.CASES if c not in DEFAULT),
])
def test_paths_are_bit_identical_to_the_recording(case):
    data = recorded()
    now = record_paths.paths([case])
    tag = "{}@{}/".format(*case)
    names = [k for k in data.files if k.startswith(tag)]
    assert len(names) > 20  # states, times, counters and a whole run were recorded
    bad = record_paths.compare({k: data[k] for k in names}, now)
    assert not bad, bad
