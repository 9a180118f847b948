"""Before/after: events per second of this checkout against another revision, in one run.

    python scripts/bench_ab.py --base HEAD~3                      # pooled Gate-and-Route
    python scripts/bench_ab.py --base main --only per-gpu --gpus 5000
    python scripts/bench_ab.py --base main --only classes -- --classes 2 8 32
    python scripts/bench_ab.py --base v0.1 --pairs 5 -- --reps 4096 --devices all

Checks the base revision out into a temporary git worktree and runs ``scripts/bench.py`` from
this checkout alternately on the base's package and on this one (B A B A ...), each run a fresh
process. The ratio is taken pair by pair, so a machine whose speed drifts during the call (a
shared CPU) still gives a meaningful ratio; the median and the range of the pair ratios are
printed with both sides' events per second. Arguments after ``--`` go to ``bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--pairs", type=int, default=3, help="base/this pairs of runs (>= 1)")
    p.add_argument("--only", choices=("pooled", "erlang", "per-gpu", "classes", "latency",
                                      "patience"),
                   default="pooled")
    p.add_argument("--gpus", type=int, default=500)
    p.add_argument("rest", nargs="*", help="more bench.py arguments (after --)")
    a = p.parse_args()
    if a.pairs < 1:
        p.error(f"--pairs = {a.pairs} is invalid: must be >= 1")
    return a


def _run(package_root: Path, args: list[str]) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(package_root))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--json", *args],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"bench.py failed on {package_root}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)["rows"]


def main() -> None:
    a = _args()
    args = ["--only", a.only, "--gpus", str(a.gpus), *a.rest]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        a.base], check=True, capture_output=True)
        try:
            rows = {"base": [], "this": []}
            for _ in range(a.pairs):
                rows["base"].append(_run(base, args))
                rows["this"].append(_run(ROOT, args))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False, capture_output=True)
    print(f"bench.py {' '.join(args)}")
    for i, first in enumerate(rows["this"][0]):
        # One block per benchmark bench.py printed (several with --only classes).
        rate = {k: [run[i]["events_per_second"] for run in v] for k, v in rows.items()}
        ratios = [t / b for t, b in zip(rate["this"], rate["base"], strict=True)]
        print(first["benchmark"])
        for side, label in (("base", f"base {a.base}"), ("this", "this checkout")):
            r = rate[side]
            print(f"  {label:<24} events/s median {statistics.median(r):>13,.0f} "
                  f"(min {min(r):,.0f}, max {max(r):,.0f})")
            k = rows[side][0][i].get("kernels")
            if k:
                print(f"  {'':<24} step: {k['fusions']} fusions, {k['copies']} copies, "
                      f"{k['while_loops']} nested while loops, {k['instructions']} instructions")
        print(f"  this/base, pair by pair: median {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x, {a.pairs} pairs)")


if __name__ == "__main__":
    main()
