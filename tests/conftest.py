"""The test session's settings: a persistent XLA compilation cache, and XLA's faster-compiling
CPU code generator.

Most of the suite's time is compiling the engines' programs. With the cache, a second run of
the suite on the same machine loads them instead of compiling them again. The cache lives in
``~/.cache/jaxqueue/xla-tests`` (``JAXQUEUE_TEST_CACHE`` names another folder; set it empty to
run without one). Its keys hash the compiled program, so a changed engine is compiled afresh,
and the in-process counts of compiled programs that some tests check are not affected.

Under pytest-xdist each worker runs on cores of its own (one per worker on the 2-core machine):
sharing every core, the workers' XLA threads contend and a run takes longer
(``JAXQUEUE_TEST_PIN=0`` leaves the workers unpinned).

A first run compiles about 1,900 programs. XLA's CPU backend emits its fused loops in one of two
ways; the older emitter (``--xla_cpu_use_fusion_emitters=false``), at optimisation level 1
(``--xla_backend_optimization_level=1``), compiles the engines' programs faster, and the pooled
engine's programs run slower (``docs/speed.md`` measures both). The suite runs short
simulations, so it uses these; the command line and the library keep XLA's defaults. The
sample paths are the same bit for bit either way: the recorded-paths test passes under both, and
``tests/test_paths.py`` also replays the recording in a process with XLA's defaults. Set
``JAXQUEUE_TEST_EMITTER=default`` to run the whole suite with XLA's defaults. Where the
installed XLA no longer knows the flags, the suite keeps its defaults.
"""

import os
import subprocess
import sys

#: XLA's older CPU emitter, and its backend's optimisation level 1 of 3.
_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1"


def _choose_emitter() -> None:
    # Decided once, in the first process (xdist's workers inherit the environment), before JAX
    # starts its backend: XLA aborts on a flag it does not know, so it is tried in a child.
    mode = os.environ.get("JAXQUEUE_TEST_EMITTER")
    if mode in ("default", "unknown") or (mode == "legacy"
                                          and _FLAGS in os.environ.get("XLA_FLAGS", "")):
        return
    flags = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1)"],
                           env=dict(os.environ, XLA_FLAGS=flags), capture_output=True)
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = flags
        os.environ["JAXQUEUE_TEST_EMITTER"] = "legacy"
    else:
        os.environ["JAXQUEUE_TEST_EMITTER"] = "unknown"


_choose_emitter()


def _pin_worker() -> None:
    # With pytest-xdist, worker i of k keeps every k-th of the session's cores (one each on the
    # 2-core machine), before JAX starts its thread pools, which then start on those cores only.
    # Unpinned, each worker's XLA threads (compiling and running) contend for every core with
    # the other worker's. The whole set stays in JAXQUEUE_TEST_CORES for the tests that start a
    # process which may use every core (helpers.every_core). JAXQUEUE_TEST_PIN=0 turns it off.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if (not worker.startswith("gw") or not hasattr(os, "sched_setaffinity")
            or os.environ.get("JAXQUEUE_TEST_PIN") == "0"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if 1 < count <= len(cores):
        try:
            os.sched_setaffinity(0, cores[int(worker[2:]) % count::count])
        except (OSError, ValueError):  # a container that refuses it: the workers stay unpinned
            return
        os.environ["JAXQUEUE_TEST_CORES"] = " ".join(map(str, cores))


_pin_worker()

import jax  # noqa: E402

_CACHE = os.environ.get("JAXQUEUE_TEST_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "jaxqueue", "xla-tests"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
