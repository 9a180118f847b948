"""How close `jaxqueue simulate --estimate` comes to the run it describes.

    python scripts/estimate_check.py [--quick] [--repeat K]

For each case, runs the command with ``--estimate`` (which prints the estimate and stops), then the
command itself, timing the whole process (start, compile and simulation: what the estimate
covers), and prints estimated against measured wall time with their ratio. The cases are pooled
Gate-and-Route and per-GPU FI-WSP on ``paper-qwen8b`` at n = 50 and 500. ``--quick`` runs the
n = 50 cases only. Timings are of this machine as it is: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

CASES = [
    ("gate-and-route", 50, 64),
    ("gate-and-route", 500, 64),
    ("fi-wsp", 50, 16),
    ("fi-wsp", 500, 5),
]
UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "days": 86400.0}


def command(policy: str, n: int, reps: int) -> list[str]:
    return [sys.executable, "-m", "jaxqueue", "simulate", "paper-qwen8b", "--policy", policy,
            "--gpus", str(n), "--reps", str(reps), "--horizon", "2000", "--warmup", "500"]


def estimated_seconds(text: str) -> float:
    """The total of ``estimated run time 20 s: ...`` (or ``3 min``, ``1.2 h``)."""
    m = re.search(r"estimated run time ([0-9.]+) (s|min|h|days)", text)
    if m is None:
        raise SystemExit(f"no estimate in the output:\n{text}")
    return float(m.group(1)) * UNITS[m.group(2)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the n = 50 cases only")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per case (median kept)")
    p.add_argument("--json", metavar="FILE", help="also write the rows to FILE")
    a = p.parse_args()
    rows = []
    print("| policy | n | reps | estimated | measured wall (median) | measured / estimated |")
    print("|---|---:|---:|---:|---:|---:|")
    for policy, n, reps in CASES:
        if a.quick and n > 50:
            continue
        cmd = command(policy, n, reps)
        out = subprocess.run(cmd + ["--estimate"], capture_output=True, text=True, check=True)
        est = estimated_seconds(out.stdout + out.stderr)
        walls = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t)
        wall = sorted(walls)[len(walls) // 2]
        print(f"| {policy} | {n} | {reps} | {est:.0f} s | {wall:.0f} s | {wall / est:.2f} |",
              flush=True)
        rows.append({"policy": policy, "gpus": n, "reps": reps,
                     "command": "jaxqueue " + " ".join(cmd[3:]), "estimated_seconds": est,
                     "measured_seconds": wall, "runs": walls})
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
