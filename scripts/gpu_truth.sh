#!/usr/bin/env bash
# A gradient truth on a lent GPU, in calls that end in time: runs batches of CASE for at most
# SECONDS (a batch started before then finishes), into the repository's store
# (docs/data/runs/gradient_truth/CASE, resumable: a later call goes on from the batches stored),
# and copies the case's folder to $OUT when that is set (a device machine's way back).
# Run from the repository root, on a machine whose Python has jaxqueue's dependencies:
#     bash scripts/gpu_truth.sh [CASE] [SECONDS] [BATCH]
# Defaults: dolly-gated-100-gate (the 19-parameter case at n = 100: 4.3e7 events a replication;
# accepted on a CPU at 1,512 replications, which a call takes on to 2,048), 480 s, 256
# replications per batch.
# Batches of other sizes already stored (a CPU's) count too: each batch has its own key.
set -euo pipefail
case_name="${1:-dolly-gated-100-gate}"
seconds="${2:-480}"
batch="${3:-256}"
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
export PYTHONUNBUFFERED=1
python scripts/gradient_truth.py --case "$case_name" --batch "$batch" --min-reps 2048 \
    --max-reps 8192 --max-seconds "$seconds" --store docs/data/runs
python scripts/gradient_truth.py --report --store docs/data/runs | grep -A4 "^$case_name:" || true
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/gradient_truth"
    cp -r "docs/data/runs/gradient_truth/$case_name" "$OUT/gradient_truth/"
fi
