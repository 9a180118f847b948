"""How long the default test suite takes on this machine, as on a fresh machine or in CI (both
compilation caches empty) and then again with them filled.

    python scripts/suite_timings.py                  # two runs, printed
    python scripts/suite_timings.py --json FILE      # and the figures as JSON
    python scripts/suite_timings.py --unpinned --first-only   # the first run, workers unpinned

Runs the README's test command (``python -m pytest -q``, the one ``.ci/run`` runs) twice with the
same two fresh cache folders (``JAXQUEUE_TEST_CACHE``, ``JAXQUEUE_CACHE``): the first run
compiles every program, the second loads them. The two tests that check the generated tables of
``docs/`` against their data are left out (``--deselect``; they take well under a second): they
cannot pass while this table, one of them, is being made. Reported per run: wall seconds, the
CPU seconds of the run and its workers (user + system), and pytest's summary line. The test
counts come from ``--collect-only`` (default suite and ``slow``). A failing run stops the
script. ``tests/conftest.py`` pins each pytest-xdist worker to a core of its own;
``--unpinned`` runs without (``JAXQUEUE_TEST_PIN=0``), to measure what the pinning gives.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESELECT = [f"--deselect=tests/test_docs.py::{name}" for name in (
    "test_every_generated_table_is_what_its_data_renders_to",
    "test_a_hand_edited_number_in_a_generated_table_is_caught")]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def collected(marker: str) -> int:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", marker],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    m = re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", out)
    if m is None:
        raise SystemExit(f"no test count in pytest's output:\n{out[-2000:]}")
    return int(m.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="write the figures to FILE")
    p.add_argument("--unpinned", action="store_true",
                   help="leave the test workers unpinned (JAXQUEUE_TEST_PIN=0)")
    p.add_argument("--first-only", action="store_true",
                   help="only the first run, with empty caches")
    a = p.parse_args()
    runs = []
    labels = ("first (empty caches)", "second (caches filled)")[:1 if a.first_only else 2]
    with tempfile.TemporaryDirectory() as caches:
        env = dict(os.environ, JAXQUEUE_TEST_CACHE=f"{caches}/tests",
                   JAXQUEUE_CACHE=f"{caches}/cli", JAXQUEUE_TEST_PIN="0" if a.unpinned else "1")
        for label in labels:
            used, start = cpu(), time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", *DESELECT], cwd=ROOT,
                                  env=env, capture_output=True, text=True)
            row = {"run": label, "wall_seconds": time.perf_counter() - start,
                   "cpu_seconds": cpu() - used, "summary": done.stdout.strip().splitlines()[-1],
                   "exit": done.returncode}
            print(f"{label}: {row['wall_seconds']:.0f} s wall, {row['cpu_seconds']:.0f} s CPU: "
                  f"{row['summary']}", flush=True)
            if done.returncode != 0:
                raise SystemExit(done.stdout[-3000:])
            runs.append(row)
    out = {"command": "python -m pytest -q", "deselected": DESELECT, "cores": os.cpu_count(),
           "pinned": not a.unpinned, "runs": runs, "default_tests": collected("not slow"),
           "slow_tests": collected("slow")}
    print(f"{out['default_tests']} tests in the default suite, {out['slow_tests']} marked slow")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
