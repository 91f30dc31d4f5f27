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
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_allocator = "default allocator settings"  # what was last set (_mallopt), in words


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory in the process, for reuse, instead of unmapping it.

    Big temporaries (numpy's [1000, 16384] argpartition output is 128 MiB per block) are
    otherwise mmap'd and unmapped on every call, and a page given back costs a page fault to
    touch again: on a VM whose freed memory goes back to the host, ~2 s/GiB. That would time the
    allocator, not the method. Applies to every method alike (numpy, FAISS and XLA all allocate
    through malloc): the benchmarks' setting. Call it before the big arrays exist; returns what
    was set, in words.
    """
    return _mallopt(((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)),
                    "glibc malloc: no mmap, no trimming (freed memory is reused, not given back)")


def keep_training_buffers() -> str:
    """The main job's allocator setting: blocks up to 256 MiB from the heap, heaps never trimmed
    and grown 64 MiB at a time (also the per-thread arenas XLA's threads allocate from), so a
    train step's buffers are reused instead of page-faulted in again every step. Q4's
    transformer step with 10 vmapped members took 2.8M page faults per 250 steps with glibc's
    defaults, 1.3M with :func:`keep_freed_memory`'s setting and 1-35k with this one (2-core
    Xeon, 2026-12-07). Not for the search benchmarks: there FAISS measured 3.91 s with this
    setting against 3.20 s with keep_freed_memory's (1M x 300, 1000 queries, median of 3, one
    pair of runs). Returns what was set, in words."""
    return _mallopt(((_M_MMAP_THRESHOLD, 256 << 20), (_M_TRIM_THRESHOLD, 2**31 - 1),
                     (_M_TOP_PAD, 64 << 20)),
                    "glibc malloc: blocks up to 256 MiB from the heap, never trimmed, 64 MiB top "
                    "pad (freed memory is reused, not given back)")


def _mallopt(settings, words: str) -> str:
    global _allocator
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    except (OSError, AttributeError):
        ok = False
    _allocator = words if ok else "default allocator settings (glibc mallopt unavailable)"
    return _allocator


def allocator() -> str:
    """The allocator settings of this process, in words (what :func:`keep_freed_memory` or
    :func:`keep_training_buffers` set)."""
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
