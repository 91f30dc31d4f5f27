"""Run directories, metrics as JSON lines, Markdown tables: what every experiment writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from jaxemb import timing


class RunDirError(OSError):
    """The output directory cannot be created or written."""


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """A fresh ``out_dir/name-YYYYmmdd-HHMMSS[-n]``; never reuses (so never overwrites) a run."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create the output directory {str(out_dir)!r}: "
                          f"{e.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"the output directory {str(out_dir)!r} is not writable")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = out_dir / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"could not find a free run directory name under {str(out_dir)!r}")


def environment() -> dict:
    """Machine and versions, so every figure can be traced to where it was produced."""
    import flax
    import optax

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": timing.cpu_name(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "allocator": timing.allocator(),
    }


class Run:
    """Writes into one run directory: ``config.json``, ``metrics.jsonl``, plots, ``report.md``."""

    def __init__(self, path: Path, config, title: str = "", experiment: str | None = None
                 ) -> None:
        self.path = path
        self.work_dir = path  # where checkpoints go (shared by all processes of a multi-host run)
        self.sections: list[str] = []
        self.title = title
        self.experiment = experiment
        self.failed: dict[str, str] = {}  # question -> its error, for the exit code
        cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        # A resumed run keeps its first config.json and report.md; each resume adds its own.
        self._write_json(free_name(path, "config", ".json"),
                         {"config": cfg, "experiment": experiment, "environment": environment()})
        self.report_path = path / free_name(path, "report", ".md")
        self._metrics = open(path / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def _write_json(self, name: str, obj) -> None:
        (self.path / name).write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")

    def log(self, section: str, **values) -> dict:
        """Append one JSON line of metrics (flushed, so a crash keeps what was logged)."""
        record = {"section": section, **values}
        self._metrics.write(json.dumps(record, default=_jsonable) + "\n")
        self._metrics.flush()
        return record

    def add(self, markdown: str) -> None:
        self.sections.append(markdown.rstrip() + "\n")

    def table(self, section: str, header: Sequence[str], rows: Sequence[Sequence],
              caption: str = "") -> str:
        """Log a table's rows to ``metrics.jsonl`` and return it as Markdown: the report's
        numbers are then the run's metrics by construction."""
        self.log(section, kind="table", header=list(header), rows=[list(r) for r in rows],
                 caption=caption)
        return table(header, rows, caption)

    def figure(self, fig, stem: str, caption: str) -> str:
        """Save a matplotlib figure as ``stem.png`` (a free name: never overwrites), close it,
        log it and return the Markdown that shows it."""
        import matplotlib.pyplot as plt

        name = free_name(self.path, stem, ".png")
        fig.savefig(self.path / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
        self.log("figure", file=name, caption=caption)
        return f"![{caption}]({name})\n\n*{caption}*\n"

    def close(self) -> None:
        self._metrics.close()

    def write_report(self, footer: str = "") -> Path:
        """(Re)write the report from the sections so far, plus ``footer`` (a status line that
        is not a section), atomically: a crash leaves the previous version whole."""
        text = f"# {self.title}\n\n" + "\n".join(self.sections)
        if footer:
            text += "\n" + footer.rstrip() + "\n"
        tmp = self.report_path.with_name(f".{self.report_path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.report_path)
        return self.report_path

    def finish(self, title: str | None = None) -> Path:
        self.close()
        if title is not None:
            self.title = title
        return self.write_report()


def require_positive(cfg, *names: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the command-line flag of the first field of ``cfg`` (a config
    dataclass) among ``names`` that is not an integer >= 1."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise error(f"--{name.replace('_', '-')} must be >= 1 (an integer), got {v!r}")


def free_name(folder: Path, stem: str, suffix: str) -> str:
    """``stem.suffix``, or ``stem-2.suffix``, ... : the first name not taken in ``folder``."""
    n = 1
    while (folder / (stem + (f"-{n}" if n > 1 else "") + suffix)).exists():
        n += 1
    return stem + (f"-{n}" if n > 1 else "") + suffix


def _jsonable(x):
    if isinstance(x, np.generic | jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


MEASURED = "**Answer (measured in this run).**"
BACKGROUND = "**Background (not measured here).**"


def answer_text(measured: str, background: str = "") -> str:
    """A question's answer: ``measured``, words produced from this run's results, and apart from
    it ``background``, theory this run does not test (with its citations)."""
    text = f"{MEASURED} {measured}"
    return text + (f"\n\n{BACKGROUND} {background}" if background else "")


def table(header: Sequence[str], rows: Sequence[Sequence], caption: str = "") -> str:
    """A Markdown table; floats to 4 significant digits."""
    def fmt(v):
        if isinstance(v, float | np.floating):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    if caption:
        lines += ["", f"*{caption}*"]
    return "\n".join(lines) + "\n"
