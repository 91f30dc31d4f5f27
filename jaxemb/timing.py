"""Timing for benchmarks: warm-up, interleaved rounds, min / median / max, and the machine facts
(CPU model, BLAS threads, allocator) that a timing depends on.

The protocol every benchmark here uses: each method runs once to warm up (compilation, first
touch of memory), then the methods run interleaved, one after another, round after round, in one
process, so a slow period of a shared machine hits them all alike; the median of the rounds is
the figure, min and max show the spread.
"""

from __future__ import annotations

import ctypes
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol


class ProgressBar(Protocol):
    """What the timing loops need of a progress bar (``tqdm`` has it)."""

    def set_postfix_str(self, s: str) -> Any: ...

    def update(self, n: int = 1) -> Any: ...


def timed(f: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds of ``f()``, its result). Block on device results inside ``f``."""
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def warm_up(calls: Mapping[str, Callable[[], Any]], bar: ProgressBar | None = None,
            label: str = "") -> tuple[dict[str, float], dict[str, Any]]:
    """Run each call once: ({name: seconds of the first call}, {name: its result})."""
    seconds, results = {}, {}
    for name, f in calls.items():
        if bar is not None:
            bar.set_postfix_str(f"{label}warm-up {name}")
        seconds[name], results[name] = timed(f)
    return seconds, results


def interleave(calls: Mapping[str, Callable[[], Any]], repeats: int,
               bar: ProgressBar | None = None,
               label: str = "") -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``repeats`` rounds, each running every call once in order: ({name: [seconds per round]},
    {name: the last result that was not None}). ``bar`` advances by one per timed call."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    results: dict[str, Any] = {}
    for r in range(repeats):
        for name, f in calls.items():
            if bar is not None:
                bar.set_postfix_str(f"{label}round {r + 1}/{repeats} {name}")
            t, out = timed(f)
            times[name].append(t)
            if out is not None:
                results[name] = out
            if bar is not None:
                bar.update(1)
    return times, results


def summary(times: list[float], **per_second: float) -> dict:
    """{"min_s", "median_s", "max_s", then for each ``name=count`` of ``per_second`` the rate
    ``count / median`` under ``name``, then "times_s"} of the rounds' ``times`` [repeats]."""
    med = statistics.median(times)
    return {"min_s": min(times), "median_s": med, "max_s": max(times),
            **{name: count / med for name, count in per_second.items()}, "times_s": times}


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_allocator = "default allocator settings"  # what keep_freed_memory last set, in words


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory in the process, for reuse, instead of giving it back.

    Big temporaries (numpy's [1000, 16384] argpartition output is 128 MiB per block; XLA's
    buffers of a vmapped train step) are otherwise mmap'd and unmapped on every call, or the
    heap that held them is trimmed, and a page given back costs a page fault to touch again: on
    a VM whose freed memory goes back to the host, ~2 s/GiB. In a benchmark that would time the
    allocator, not the method; it applies to every method alike (numpy, FAISS and XLA all
    allocate through malloc). Settings: blocks up to 256 MiB come from the heap (glibc's own
    threshold adapts only up to 32 MiB), heaps are never trimmed, and they grow 64 MiB at a
    time (also the per-thread arenas XLA's threads allocate from). Q4's transformer step with
    10 vmapped members took 2.8M page faults per 250 steps with glibc's defaults and 1-35k
    with these (2-core Xeon, 2026-12-07). Call it before the big arrays exist; returns what
    was set, in words.
    """
    settings = ((_M_MMAP_THRESHOLD, 256 << 20), (_M_TRIM_THRESHOLD, 2**31 - 1),
                (_M_TOP_PAD, 64 << 20))
    global _allocator
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    except (OSError, AttributeError):
        ok = False
    _allocator = ("glibc malloc: blocks up to 256 MiB from the heap, never trimmed (freed "
                  "memory is reused, not given back)" if ok
                  else "default allocator settings (glibc mallopt unavailable)")
    return _allocator


def allocator() -> str:
    """The allocator settings of this process, in words (what :func:`keep_freed_memory` set)."""
    return _allocator


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` knows)."""
    return next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                 if line.startswith("model name")),
                platform.processor() or platform.machine())


def cpu_model() -> str:
    """The CPU's model name and the vector instruction sets a matmul kernel can use."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo().splitlines()
                  if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
           if f in flags]
    return f"{cpu_name()} ({', '.join(isa) or 'no AVX2'})"


def openblas_threads() -> int | None:
    """Threads of the OpenBLAS that numpy loaded (read via ctypes; None if not found)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for lib in sorted(libs):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads"):
            if hasattr(handle, sym):
                return int(getattr(handle, sym)())
    return None
