"""What the benchmark scripts share: printed lines kept for the JSON, the JSON written atomically
and never over an earlier result, and the environment a timing depends on.

The benchmarks (``experiments.bench_*``) are leaves: they import this module, ``jaxemb`` and
``experiments.report``, and nothing imports them.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from types import ModuleType

import numpy as np

from experiments.report import environment as report_environment
from jaxemb import timing


class Printer:
    """Prints lines and keeps them for the JSON output."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)


def check_json_path(path: str | None) -> None:
    """Raise ValueError unless ``path`` is None or a new file in an existing directory."""
    if path is None:
        return
    if os.path.exists(path):
        raise ValueError(f"--json {path!r} exists; refusing to overwrite it (pick a new path)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"--json {path!r}: directory {parent!r} does not exist")


def _jsonable(x):
    """numpy scalars and arrays (and device arrays) as Python numbers and lists."""
    if hasattr(x, "__array__"):
        return np.asarray(x).tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json_atomically(path: str, payload: dict) -> None:
    """Write to a temporary file beside ``path``, then hard-link it into place.

    ``os.link`` fails if ``path`` exists, so a file created meanwhile is not clobbered either,
    and a reader never sees a half-written file.
    """
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench.", suffix=".json.tmp", dir=parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=_jsonable)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def search_environment(faiss: ModuleType | None, memory: str) -> dict:
    """Versions, CPU, BLAS/OpenMP threads and allocator settings of a search benchmark."""
    import jax
    import jaxlib

    env = {
        "device": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "faiss": getattr(faiss, "__version__", "unknown") if faiss else "not installed",
        "python": platform.python_version(),
        "cpu": timing.cpu_model(),
        "os.cpu_count": os.cpu_count(),
        "usable cores (affinity)": len(os.sched_getaffinity(0)),
        "numpy OpenBLAS threads": timing.openblas_threads(),
        "faiss OpenMP threads": faiss.omp_get_max_threads() if faiss else None,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "memory": memory,
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            env[var] = os.environ[var]
    return env


def device_environment() -> dict:
    """The report's environment plus jaxlib, the platform, the load and the usable cores."""
    import jaxlib

    env = report_environment()
    env.update({"jaxlib": jaxlib.__version__, "platform": platform.platform(),
                "load average (1, 5, 15 min) at start": os.getloadavg(),
                "usable cores (affinity)": len(os.sched_getaffinity(0)),
                "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")})
    return env
