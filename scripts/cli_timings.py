"""How long the commands of ``docs/cli.md`` take, each as a user's first run: a fresh process,
the compilation cache off, everything included (starting Python and JAX, compiling, simulating,
printing).

    python scripts/cli_timings.py                    # every command, printed as it finishes
    python scripts/cli_timings.py --only simulate    # the commands containing a word
    python scripts/cli_timings.py --skip reproduce   # all but those
    python scripts/cli_timings.py --json FILE        # and the figures as JSON
    python scripts/cli_timings.py --full-reproduction results --json FILE
                                                     # only `jaxqueue reproduce --out results`

Reported per command: wall seconds, the CPU seconds of the process and its children (user +
system: on a busy machine wall time grows while CPU time barely does, so the two together say
how much of a slow run was the machine), and the exit code (a command that fails stops the
script). The quick reproduction also reports each experiment's own wall time, from the JSON it
writes. ``--full-reproduction OUT`` times the full ``jaxqueue reproduce --out OUT`` alone (about
40 min on 2 cores; OUT must hold no complete experiment, or the run would skip it) and adds
every claim's verdict from the outputs it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = [
    "jaxqueue lp paper-qwen8b",
    "jaxqueue lp paper-qwen8b --tpot 0.021 --penalty --penalty-weight 1e6",
    "jaxqueue frontier paper-qwen8b --sli tpot --values 0.0221 0.023 0.025",
    "jaxqueue simulate paper-qwen8b --gpus 50",
    "jaxqueue simulate dolly-8class --gpus 50 --reps 16",
    "jaxqueue simulate paper-qwen8b --policy sli-gate-and-route --tpot 0.023 --gpus 50",
    "jaxqueue simulate paper-qwen8b --policy fi-wsp --gpus 500 --reps 5 --horizon 2000 "
    "--warmup 500",
    "jaxqueue compare paper-qwen8b --gpus 100",
    "jaxqueue capacity paper-qwen8b --traffic 10 --slo ttft_p99=2 --max-abandon 0.05",
    "jaxqueue validate",
    "jaxqueue convergence",
    "jaxqueue sensitivity paper-qwen8b --gpus 50",
    "jaxqueue tune paper-qwen8b --gpus 20",
    "jaxqueue reproduce --quick --out {tmp}/quick",
    "jaxqueue policies",
    "jaxqueue scenarios",
]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_one(command: str, tmp: str, log: Path | None = None) -> dict:
    argv = [a.replace("{tmp}", tmp) for a in shlex.split(command)]
    argv = [sys.executable, "-m", "jaxqueue.cli"] + argv[1:]
    env = dict(os.environ, JAXQUEUE_CACHE="",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cpu, start = children_cpu(), time.perf_counter()
    if log is None:
        done = subprocess.run(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    else:  # a long run: its progress goes to a file as it comes
        with open(log, "w") as f:
            done = subprocess.run(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                  stderr=f, text=True)
        done.stderr = log.read_text()
    row = {"command": command, "wall_seconds": time.perf_counter() - start,
           "cpu_seconds": children_cpu() - cpu, "exit": done.returncode}
    if done.returncode != 0:
        raise SystemExit(f"{command} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    if " reproduce " in f" {command} ":
        folder = Path(argv[argv.index("--out") + 1])
        row["experiments"] = {f.stem: json.loads(f.read_text()).get("wall_seconds")
                              for f in sorted(folder.glob("*.json"))
                              if "wall_seconds" in json.loads(f.read_text())}
    return row


def full_reproduction(out: str) -> dict:
    """Times ``jaxqueue reproduce --out OUT`` as a first run and reads its verdicts."""
    sys.path.insert(0, str(ROOT))
    from experiments import reproduce
    from jaxqueue import results

    done = [name for name in reproduce.EXPERIMENTS
            if reproduce.complete(reproduce.module(name), out, False, 0)]
    if done:
        raise SystemExit(f"{out} already holds complete outputs of {done}: the run would skip "
                         "them; give an empty folder")
    Path(out).mkdir(parents=True, exist_ok=True)
    row = time_one(f"jaxqueue reproduce --out {out}", str(Path.cwd()),
                   log=Path(out) / "reproduce.log")
    claims = results.judge_all(results.load_results(out))
    row["claims"] = [{"id": c.id, "figure": c.figure, "statement": c.statement,
                      "verdict": c.verdict, "evidence": c.evidence} for c in claims]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="WORD", help="the commands containing a word")
    p.add_argument("--skip", nargs="+", metavar="WORD", default=[],
                   help="leave out the commands containing a word")
    p.add_argument("--json", metavar="FILE", help="write the figures to FILE")
    p.add_argument("--full-reproduction", metavar="OUT",
                   help="time only the full `jaxqueue reproduce --out OUT` and read its verdicts")
    a = p.parse_args()
    if a.full_reproduction:
        row = full_reproduction(a.full_reproduction)
        print(f"{row['wall_seconds']:7.1f} s wall {row['cpu_seconds']:7.1f} s CPU  "
              f"{row['command']}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps({"cores": os.cpu_count(), "rows": [row]},
                                               indent=1))
        return
    commands = [c for c in COMMANDS if (not a.only or any(w in c for w in a.only))
                and not any(w in c for w in a.skip)]
    if not commands:
        p.error(f"no command contains any of {a.only}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for command in commands:
            row = time_one(command, tmp)
            rows.append(row)
            print(f"{row['wall_seconds']:7.1f} s wall {row['cpu_seconds']:7.1f} s CPU  {command}",
                  flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
