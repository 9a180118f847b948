"""One experiment split over several processes (hosts) with ``jax.distributed``: the recipe of
docs/devices.md, "Several hosts", runnable.

Start one process per host, all with the same arguments except ``--process-id``; on one machine,
for two processes:

    python scripts/multihost.py --coordinator localhost:12345 --num-processes 2 --process-id 0 \\
        --out merged.npz &
    python scripts/multihost.py --coordinator localhost:12345 --num-processes 2 --process-id 1

Each process

1. joins the others: ``jax.distributed.initialize(coordinator_address, num_processes,
   process_id)``, with JAX's CPU collectives set to gloo (TCP) so that CPU devices of different
   processes can exchange data; ``jax.devices()`` then lists every process's devices and
   ``jax.local_devices()`` this process's own;
2. simulates its own range of replication ids on its local devices:
   ``simulate(key, system, reps=R // P, first_rep=p * (R // P), devices=jax.local_devices())``;
3. gathers every process's per-replication arrays with a collective
   (``jax.experimental.multihost_utils.process_allgather``: a mesh over ``jax.devices()``, one
   row of it per process, and an all-gather), so that every process holds the merged arrays,
   in replication order.

Replication ``r``'s path depends only on ``(key, r)``, so the merged arrays equal, bit for bit,
those of one process simulating all R replications (``tests/test_multihost.py`` checks this).
Process 0 writes them to ``--out`` (``.npz``: one array per field of :class:`jaxqueue.Run`
gathered, see :data:`FIELDS`).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxqueue import policies, scenarios, simulate

#: The per-replication arrays of :class:`jaxqueue.Run` that are gathered and written.
FIELDS = ("level_integrals", "tallies", "window", "time", "stock_start", "stock_end")


def replication_range(reps: int, num_processes: int, process_id: int) -> tuple[int, int]:
    """The replications process ``process_id`` simulates: ``(first_rep, count)``.

    Args:
        reps: replications of the whole experiment, a multiple of ``num_processes`` (the
            gather needs the same shape on every process).
        num_processes: processes taking part.
        process_id: this process, in ``[0, num_processes)``.

    Returns:
        The id of its first replication and how many it runs.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes = {num_processes} is invalid: must be >= 1")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id = {process_id} is invalid: must be in "
                         f"[0, {num_processes - 1}]")
    if reps < 1 or reps % num_processes:
        raise ValueError(f"reps = {reps} is invalid: must be a positive multiple of "
                         f"num_processes = {num_processes}")
    count = reps // num_processes
    return process_id * count, count


def gather(local: np.ndarray) -> np.ndarray:
    """Every process's ``local`` rows, concatenated in process order; held by every process.

    The arrays are float64/int64, which JAX would narrow to 32 bits (x64 is off), so they travel
    as their raw bits (uint32 words) and arrive unchanged.

    Args:
        local: this process's rows, ``(R // P, ...)``, the same shape on every process.

    Returns:
        The ``(R, ...)`` array of all processes' rows.
    """
    local = np.ascontiguousarray(local)
    words = local.reshape(local.shape[0], -1).view(np.uint32)
    merged = np.asarray(multihost_utils.process_allgather(words, tiled=True))
    return np.ascontiguousarray(merged).view(local.dtype).reshape(-1, *local.shape[1:])


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", required=True, metavar="HOST:PORT",
                        help="address of process 0's coordinator service (the same for all)")
    parser.add_argument("--num-processes", type=int, required=True, help="processes P")
    parser.add_argument("--process-id", type=int, required=True, help="this process, 0 .. P-1")
    parser.add_argument("--scenario", default="paper-qwen8b", help="built-in name or TOML file")
    parser.add_argument("--policy", default="gate-and-route", help="a policy name")
    parser.add_argument("--gpus", type=int, default=20, help="number of GPUs n")
    parser.add_argument("--reps", type=int, default=8, help="replications R, a multiple of P")
    parser.add_argument("--horizon", type=float, default=40.0, help="end of the simulated time")
    parser.add_argument("--warmup", type=float, default=10.0, help="start of the statistics")
    parser.add_argument("--seed", type=int, default=0, help="key = jax.random.key(seed)")
    parser.add_argument("--local-devices", type=int, default=None, metavar="D",
                        help="CPU devices per process (jax_num_cpu_devices; default JAX's)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="process 0 writes the merged arrays here (.npz)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    first, count = replication_range(args.reps, args.num_processes, args.process_id)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.local_devices is not None:
        jax.config.update("jax_num_cpu_devices", args.local_devices)
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
    system, _ = policies.build(args.policy, scenarios.load(args.scenario), args.gpus)
    run = simulate(jax.random.key(args.seed), system, reps=count, first_rep=first,
                   horizon=args.horizon, warmup=args.warmup, devices=jax.local_devices())
    merged = {field: gather(getattr(run, field)) for field in FIELDS}
    print(f"process {jax.process_index()} of {jax.process_count()}: replications "
          f"{first}-{first + count - 1} on {jax.local_device_count()} of "
          f"{jax.device_count()} devices, gathered {merged['tallies'].shape[0]}", flush=True)
    if args.process_id == 0 and args.out:
        with open(args.out, "wb") as f:
            np.savez(f, **merged)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
