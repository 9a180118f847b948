#!/usr/bin/env bash
# One short GPU check: installs nothing, prints events/s of the engines against the number of
# replications (scripts/gpu_bench.py, about 2 min on an H200) and the wall time of the paper's
# convergence instance at n = 500 (5 seeds, long horizon: a latency-bound run of a few
# minutes). Run from the repository root on a machine whose Python already has jaxqueue's
# dependencies with a CUDA jaxlib:
#     bash scripts/gpu_check.sh
set -euo pipefail
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
export PYTHONUNBUFFERED=1
python - <<'PY'
import jax
print("devices:", jax.devices())
PY
python scripts/gpu_bench.py --json gpu_bench.jsonl
python - <<'PY'
import time
import jax
from jaxqueue import policies, scenarios, simulate, stats
model = scenarios.load("paper-qwen8b")
system, plan = policies.build("gate-and-route", model, 500)
start = time.perf_counter()
run = simulate(jax.random.key(0), system, reps=5, horizon=5000.0, warmup=1000.0)
total = time.perf_counter() - start
rev = stats.summarize_pooled(run, model, 500)["revenue_per_gpu"]["bundled"]
print(f"convergence instance n=500, 5 seeds, horizon 5000 s: {total:.1f} s wall "
      f"(compile {run.compile_seconds:.1f} s), revenue {rev['mean']:.3f} +- {rev['ci95']:.3f} "
      f"vs LP {plan.revenue:.3f}")
PY
