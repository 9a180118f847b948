"""The multi-host recipe of docs/devices.md, run for real: two processes of
``scripts/multihost.py``, started with its command lines (on a free port), join under
``jax.distributed`` (CPU collectives over gloo), each simulates half of the replications on its
one CPU device, and the gathered arrays equal a single-process run of all of them bit for bit.

A process that fails, or hangs (a collective waiting for a peer that died), fails the test,
at once or after :data:`TIMEOUT` seconds: both processes are killed.
"""

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxqueue import policies, scenarios, simulate

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "multihost.py"
_spec = importlib.util.spec_from_file_location("multihost", SCRIPT)
multihost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(multihost)

#: Seconds both processes get, together, before the test kills them and fails (they take
#: ~20 s on two busy cores).
TIMEOUT = 120
#: The run: the script's defaults (docs/devices.md).
RUN = multihost.parse(["--coordinator", "unused", "--num-processes", "2", "--process-id", "0"])


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(process_id: int, port: int, out: Path, log: Path) -> subprocess.Popen:
    """Starts process ``process_id`` of two, its output going to ``log``."""
    args = [sys.executable, str(SCRIPT), "--coordinator", f"localhost:{port}",
            "--num-processes", "2", "--process-id", str(process_id)]
    args += ["--out", str(out)] if process_id == 0 else []
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES"):  # one CPU device per process
        env.pop(name, None)
    with open(log, "w") as f:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def kill(procs: list[subprocess.Popen]) -> None:
    """Kills every process still running and reaps them all."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    """Waits for every process to exit with 0. As soon as one fails (its peer would wait for
    it in a collective) or ``timeout`` seconds have passed, kills them all and fails the test."""
    deadline = time.monotonic() + timeout
    while None in (codes := [p.poll() for p in procs]):
        failed = any(code not in (None, 0) for code in codes)
        if failed or time.monotonic() > deadline:
            kill(procs)
            reason = "one failed" if failed else f"they did not finish in {timeout} s"
            pytest.fail(f"{reason}, exit codes {[p.returncode for p in procs]}:\n" + tails(logs))
        time.sleep(0.2)
    if any(p.returncode != 0 for p in procs):
        pytest.fail(f"exit codes {[p.returncode for p in procs]}:\n" + tails(logs))


def tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)


# Two processes each start JAX and compile the run: about 20 s of the default suite's time for
# code that changes seldom; `-m slow` runs it.
@pytest.mark.slow
def test_two_processes_gather_a_single_process_run_bit_for_bit(tmp_path):
    port, out = free_port(), tmp_path / "merged.npz"
    logs = [tmp_path / f"process{p}.log" for p in range(2)]
    procs = [launch(p, port, out, logs[p]) for p in range(2)]
    try:  # the reference, computed here while the two processes run
        system, _ = policies.build(RUN.policy, scenarios.load(RUN.scenario), RUN.gpus)
        whole = simulate(jax.random.key(RUN.seed), system, reps=RUN.reps, horizon=RUN.horizon,
                         warmup=RUN.warmup)
    except BaseException:
        kill(procs)
        raise
    wait_all(procs, logs, TIMEOUT)
    half = RUN.reps // 2
    for p in range(2):
        line = (f"process {p} of 2: replications {p * half}-{p * half + half - 1} on 1 of 2 "
                f"devices, gathered {RUN.reps}")
        assert line in logs[p].read_text(), tails(logs)
    merged = np.load(out)
    assert set(merged.files) == set(multihost.FIELDS)
    for field in multihost.FIELDS:
        expected = getattr(whole, field)
        assert merged[field].dtype == expected.dtype, field
        np.testing.assert_array_equal(merged[field], expected, err_msg=field)


def test_replication_range_names_the_field_out_of_range():
    assert multihost.replication_range(8, 2, 1) == (4, 4)
    with pytest.raises(ValueError, match="reps = 7"):
        multihost.replication_range(7, 2, 0)
    with pytest.raises(ValueError, match=r"process_id = 2 .* \[0, 1\]"):
        multihost.replication_range(8, 2, 2)
    with pytest.raises(ValueError, match="num_processes = 0"):
        multihost.replication_range(8, 0, 0)
