"""Strict JAX for the whole suite (Equinox's habit): implicit rank promotion raises.

Warnings are errors too (pyproject's filterwarnings). The fake-device count is set before JAX
starts so the sharded code paths can be tested on CPU; single-device tests are unaffected
because arrays land on device 0 unless a mesh says otherwise.

Most of the suite's time is XLA compilation, much of it of programs compiled before: the same
step built again by another fixture, another test or a child process. JAX's persistent
compilation cache keys each program by its HLO, the compile options, XLA_FLAGS and the jax
version, so a hit gives the executable a fresh compile would (same numbers). Its directory is
pytest's cache dir (``.pytest_cache/d/jax-compilation-cache``; a temporary one under
``-p no:cacheprovider``): a fresh checkout gains within one run, a second run gains more.
Child processes inherit it through ``JAX_COMPILATION_CACHE_DIR``. Set that variable yourself to
choose the directory, or to ``""`` to run without the cache.
"""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# Cache every program, however quick to compile (the default skips those under 1 s, which on a
# loaded 2-core machine are most of the suite's).
_CACHE_SETTINGS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                   "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
_own_cache_dir = None  # a temporary cache dir this session made (removed at the end)


def pytest_configure(config):
    global _own_cache_dir
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # the caller's choice ("" turns it off)
        path = os.environ["JAX_COMPILATION_CACHE_DIR"] or None
    elif getattr(config, "cache", None) is not None:
        path = str(config.cache.mkdir("jax-compilation-cache"))
    else:
        path = _own_cache_dir = tempfile.mkdtemp(prefix="jaxemb-compilation-cache-")
    if path is None:
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # for child processes
    for name, value in _CACHE_SETTINGS.items():
        os.environ.setdefault(name, value)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def pytest_unconfigure(config):
    if _own_cache_dir is not None:
        shutil.rmtree(_own_cache_dir, ignore_errors=True)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
