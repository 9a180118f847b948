"""The test session's one setting: a persistent XLA compilation cache.

Most of the suite's time is compiling the engines' programs. With the cache, a second run of
the suite on the same machine loads them instead of compiling them again. The cache lives in
``~/.cache/jaxqueue/xla-tests`` (``JAXQUEUE_TEST_CACHE`` names another folder; set it empty to
run without one). Its keys hash the compiled program, so a changed engine is compiled afresh,
and the in-process counts of compiled programs that some tests check are not affected.
"""

import os

import jax

_CACHE = os.environ.get("JAXQUEUE_TEST_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "jaxqueue", "xla-tests"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
