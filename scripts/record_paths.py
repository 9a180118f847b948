"""Records (or checks) exact simulation paths of every policy and engine, for the test that a
refactoring leaves paths bit-identical for the same key (tests/test_paths.py).

    python scripts/record_paths.py            # compare against the recordings in tests/data/
    python scripts/record_paths.py --record   # overwrite them (only when paths change on purpose)
    python scripts/record_paths.py --vouch    # compare under XLA's defaults and the test
                                              # suite's flags; if both are identical, list this
                                              # machine in tests/data/paths_machines.txt

A path is what one replication does over its first 1,500 steps (state counts, times, event
counters, from ``trajectory``) and a short multi-chunk run of 6 replications (``simulate``:
time integrals, counters and windows). The run has no warm-up: since the accounting fix, the
driver stops every replication exactly at the warm-up, which redraws the one event that would
have crossed it (same law, other numbers). The file also notes the JAX version and the CPU, since
XLA may round transcendental functions differently elsewhere: the test runs only on the machine
that recorded the paths and on those listed in ``tests/data/paths_machines.txt``, where
``--vouch`` found every case bit for bit the same.

The eight-class ``dolly-8class`` cases (:data:`MANY_CLASSES`; past five classes the event is
drawn in two levels, the kind and then the class) are kept in a recording of their own,
``tests/data/paths_classes.npz``, which notes the machine that made it: ``--set classes``
records or checks only those, ``--set paper`` only the ``paper-qwen8b`` ones.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURE = ROOT / "tests" / "data" / "paths.npz"
FIXTURE_CLASSES = ROOT / "tests" / "data" / "paths_classes.npz"
VOUCHED = ROOT / "tests" / "data" / "paths_machines.txt"
#: The test suite's XLA flags (tests/conftest.py), under which the tests compare.
SUITE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1"

CASES = [("gate-and-route", "pooled"), ("fg-sp", "pooled"), ("prioritize-and-route", "pooled"),
         ("sli-gate-and-route", "pooled"), ("fi-wsp", "per-gpu"), ("gi-wsp", "per-gpu"),
         ("gf-wsp", "per-gpu"), ("fg-sp", "per-gpu"), ("gate-and-route", "per-gpu"),
         ("gate-and-route", "pooled-latency")]
#: Cases with more than five classes (the event drawn in two levels): policy, engine, scenario.
MANY_CLASSES = [("gate-and-route", "pooled", "dolly-8class"), ("fi-wsp", "per-gpu", "dolly-8class")]
SETS = {"paper": (CASES, FIXTURE), "classes": (MANY_CLASSES, FIXTURE_CLASSES)}
STEPS = 1500


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """What the recorded floats depend on: the JAX version and the CPU model."""
    return f"jax {jax.__version__}; {cpu_model()}"


def vector_features() -> str:
    """The CPU's vector instruction sets XLA may compile for (a virtual machine's model name,
    such as "Intel(R) Xeon(R) Processor", can hide different generations), as one string."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(sorted(f for f in flags if re.fullmatch(r"avx\w*|fma|f16c|sse4_2|amx\w*", f)))


def vouched_name() -> str:
    """How a vouched machine is listed: its :func:`machine` and its vector instruction sets."""
    return f"{machine()} [{vector_features()}]"


def _state_arrays(prefix: str, states) -> dict[str, np.ndarray]:
    """Every integer leaf of the states (ring rows are summarised by head and size)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(states):
        name = jax.tree_util.keystr(path)
        if name.endswith(".data"):
            continue
        out[f"{prefix}/state{name}"] = np.asarray(leaf)
    return out


def tag(case) -> str:
    """The prefix of a case's arrays: ``policy@engine``, then ``:scenario`` past the paper's."""
    policy, engine, *scenario = case
    return f"{policy}@{engine}" + "".join(f":{s}" for s in scenario)


def fixture(case) -> Path:
    """The recording that holds ``case``."""
    return FIXTURE_CLASSES if case in MANY_CLASSES else FIXTURE


def paths(cases=CASES) -> dict[str, np.ndarray]:
    from jaxqueue import policies, scenarios
    try:
        from jaxqueue import simulate, trajectory
    except ImportError:  # the layout before the pure kernel (used to record the paths)
        from jaxqueue.simulate import simulate, trajectory

    out = {}
    for case in cases:
        policy, engine, *scenario = case
        model = scenarios.load(scenario[0] if scenario else "paper-qwen8b")
        tag_ = tag(case)
        system, _ = policies.build(policy, model, 6, engine=engine.removesuffix("-latency"))
        if engine.endswith("-latency"):  # every latency counter: the end-to-end ones too
            import dataclasses

            from jaxqueue.stats import LATENCY_GRID
            system = dataclasses.replace(system, wait_grid=LATENCY_GRID, end_to_end=True)
        states, times, tallies = trajectory(jax.random.key(7), system, STEPS)
        out.update(_state_arrays(tag_, states))
        out[f"{tag_}/times"] = np.asarray(times)
        tallies = np.asarray(tallies)
        run = simulate(jax.random.key(8), system, reps=6, horizon=60.0, chunk_events=128)
        out[f"{tag_}/run/window"] = run.window
        for name in run.level_names:
            out[f"{tag_}/run/level/{name}"] = run.level(name)
        if len(system.tally_names) > 50:
            # Hundreds of latency counters: kept whole, and the path's every 10th step (they
            # are cumulative), which keeps the file small.
            out[f"{tag_}/tallies"] = tallies[::10]
            out[f"{tag_}/run/counts"] = run.tallies
            continue
        for k, name in enumerate(system.tally_names):
            num = model.num_classes
            out[f"{tag_}/tally/{name}"] = tallies[:, k * num:(k + 1) * num]
        for name in run.tally_names:
            out[f"{tag_}/run/count/{name}"] = run.count(name)
    return out


def compare(recorded, now) -> list[str]:
    """Names of recorded arrays that differ (or are missing) now."""
    bad = []
    for name in recorded.files if hasattr(recorded, "files") else recorded:
        if name == "machine":
            continue
        if name not in now:
            bad.append(f"{name} (missing)")
        elif not np.array_equal(np.asarray(recorded[name]), now[name]):
            bad.append(name)
    return bad


def vouched() -> list[str]:
    """The machines besides the recording's where every case was found bit for bit the same."""
    if not VOUCHED.exists():
        return []
    return [line.strip() for line in VOUCHED.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def vouch(which: str = "all") -> None:
    import os
    import subprocess

    for flags in ("", SUITE_FLAGS):
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        done = subprocess.run([sys.executable, __file__, "--set", which], env=env)
        if done.returncode:
            sys.exit(f"not identical under XLA_FLAGS={env['XLA_FLAGS']!r}: {machine()} not listed")
    here = vouched_name()
    if here not in vouched():
        text = VOUCHED.read_text() if VOUCHED.exists() else (
            "# Machines where `python scripts/record_paths.py --vouch` found every recorded path\n"
            "# bit for bit the same under XLA's defaults and the test suite's flags (the machine,"
            " then its\n# vector instruction sets).\n")
        VOUCHED.write_text(text + here + "\n")
    print(f"every case identical under both: {here} listed in {VOUCHED.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="overwrite the recorded paths")
    parser.add_argument("--vouch", action="store_true",
                        help="compare under XLA's defaults and the suite's flags, each in a "
                             "process of its own, and list this machine if both are identical")
    parser.add_argument("--set", choices=(*SETS, "all"), default="all", dest="which",
                        help="which recording: the paper-qwen8b cases, the eight-class ones, "
                             "or both (default)")
    args = parser.parse_args()
    if args.vouch:
        vouch(args.which)
        return
    bad = []
    for name, (cases, path) in SETS.items():
        if args.which not in (name, "all"):
            continue
        now = paths(cases)
        if args.record:
            np.savez_compressed(path, machine=np.asarray(machine()), **now)
            print(f"recorded {len(now)} arrays to {path.relative_to(ROOT)} ({machine()})")
            continue
        with np.load(path) as recorded:
            different = compare(recorded, now)
            print(f"{path.relative_to(ROOT)}: recorded on {recorded['machine']}; "
                  f"this machine: {machine()}; "
                  + ("identical" if not different else "DIFFERENT: " + ", ".join(different)))
        bad += different
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
