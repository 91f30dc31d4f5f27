"""Results of a question: a frozen dataclass of JSON values, saved to the run's ``results.json``.

A study is measure → results → render → answer (DESIGN.md §3.15): ``measure`` trains or times and
returns a :class:`Results`; tables, plots and words are functions of it, so a saved
``results.json`` re-renders a report without training and answers can be tested on fixtures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, Self

RESULTS_FILE = "results.json"


class ResultsError(ValueError):
    """A results file that cannot be read back (missing, damaged, or from another layout)."""


@dataclasses.dataclass(frozen=True)
class Results:
    """Base of every question's results. Fields hold JSON values only (numbers, strings, None,
    lists, dicts with string keys), so ``from_json(to_json(r)) == r``: use lists, not tuples,
    and str keys."""

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), allow_nan=True))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - data.keys()
        if missing:
            raise ResultsError(f"{cls.__module__}.{cls.__name__}: the saved results lack "
                               f"{sorted(missing)} (written by another version?)")
        return cls(**{k: v for k, v in data.items() if k in names})


def save(folder: str | Path, results: dict[str, Results]) -> Path:
    """Write ``{question: results}`` to ``folder/results.json`` atomically (a crash leaves the
    previous file whole)."""
    path = Path(folder) / RESULTS_FILE
    payload = {q: r.to_json() for q, r in results.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{question: json}`` from ``folder/results.json``."""
    path = Path(folder) / RESULTS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist: is {folder} a run directory of the "
                           "study?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"cannot read {path}: {e}") from None


def config_from_json(cls: type, data: dict[str, Any]):
    """A config dataclass ``cls`` from its JSON (``dataclasses.asdict`` written as JSON): nested
    configs rebuilt, lists back to tuples; fields missing from ``data`` keep their defaults."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = config_from_json(kind, value)
        kw[f.name] = _tuples(value)
    return cls(**kw)


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
