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
import threading
import time

from childenv import COMPILE_FLAGS

# Compile with LLVM's cheap pipeline: the suite's programs are small and run briefly, so most of
# its time was compiling them (measured: four of the heaviest test files 173 → 123 CPU-s, every
# test passing) - and with XLA's older CPU emitters in place of its MLIR fusion emitters, which
# compile a small program in about 15 ms instead of 40 (2026-12-07: four heavy test files'
# backend compile 110 -> 53 s; the whole suite 648 -> 502 CPU-s). The flags change how fast
# XLA's CPU code runs and may change last-bit rounding, not what it computes (the same HLO;
# tests compare against numpy/flax/gensim within tolerances, or programs against each other
# under the same flags). Child processes a test starts get them too (tests/childenv.py).
# 8 fake CPU devices; and collectives that wait up to 10 minutes for each other instead of XLA's
# default 40 s, after which it aborts the process: on 2 shared cores, 8 fake devices in threads
# of a thread pool (the attention study runs two jobs at once) can lag that long.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_cpu_collective_call_terminate_timeout_seconds=600 "
                      f"--xla_cpu_collective_timeout_seconds=600 {COMPILE_FLAGS}")

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
    config.addinivalue_line("markers", "permissions: needs a user without root's override of "
                                       "file permissions (CI: run as an unprivileged user)")
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # the caller's choice ("" turns it off)
        path = os.environ["JAX_COMPILATION_CACHE_DIR"] or None
    elif getattr(config, "cache", None) is not None:
        path = str(config.cache.mkdir("jax-compilation-cache"))
    else:
        path = _own_cache_dir = tempfile.mkdtemp(prefix="jaxemb-compilation-cache-")
    if path is None:
        return
    # pytest-xdist: a cache of its own per worker. JAX writes an entry in place (no rename), so a
    # worker reading an entry another one is writing could read half of it.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        path = os.path.join(path, worker)
        os.makedirs(path, exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # for child processes
    for name, value in _CACHE_SETTINGS.items():
        os.environ.setdefault(name, value)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


# The suite runs in pytest-xdist workers (pyproject's addopts), each test file whole on one
# worker (``--dist loadfile``: a module's fixtures are built once), files handed out in
# collection order. The longest files go first, so no worker is left alone with one at the end.
LONGEST_FIRST = ("test_study.py", "test_sgns.py", "test_attention_study.py", "test_attention.py",
                 "test_faults.py", "test_sharding.py", "test_train.py", "test_transformer.py",
                 "test_interaction.py", "test_search.py", "test_scoring.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in order


def pytest_unconfigure(config):
    if _own_cache_dir is not None:
        shutil.rmtree(_own_cache_dir, ignore_errors=True)


# --- no thread left running -------------------------------------------------------------------

_first_seen: dict[threading.Thread, str] = {}  # a live non-daemon thread -> the test it ran after


def _stray_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.main_thread()]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    for t in _stray_threads():
        _first_seen.setdefault(t, item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    deadline = time.monotonic() + 10  # threads that are ending anyway get a moment
    for t in _stray_threads():
        t.join(max(0.0, deadline - time.monotonic()))
    left = _stray_threads()
    if not left:
        return
    lines = [f"  {t.name!r} (first seen after {_first_seen.get(t, 'the session start')})"
             for t in left]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = ("non-daemon threads still running at the end of the session (they would keep a "
               "program from exiting):\n" + "\n".join(lines))
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "threads left running", red=True)
        reporter.write_line(message, red=True)
    else:
        print(message)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
