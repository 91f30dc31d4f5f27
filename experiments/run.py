"""Run an experiment: ``python -m experiments.run [NAME] [--option value ...]``.

Each run writes a new directory under ``--out-dir`` (never overwriting an earlier run) with the
resolved config and environment (``config.json``), metrics as JSON lines (``metrics.jsonl``),
PNG plots and ``report.md``. ``python -m experiments.run --help`` lists the experiments;
``python -m experiments.run NAME --help`` lists an experiment's options.

    python -m experiments.run                      # the main job: study, Q1–Q7 in one report
    python -m experiments.run render RUN_DIR       # that report again from RUN_DIR/results.json
    python -m experiments.run interaction --quick  # one question alone (also questions-sgns,
                                                   # attention, search)

Only the config classes are imported up front; an experiment's code is imported when it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
import time
from pathlib import Path
from typing import Annotated, Union

import tyro

from experiments.demo import DemoConfig
from experiments.report import Run, RunDirError, new_run_dir
from experiments.sgns_run import SGNSRunConfig
from experiments.study import SGNS_QUESTIONS, StudyConfig
from experiments.study import results as results_io
from experiments.study.q4 import AttentionStudyConfig
from experiments.study.q5 import InteractionStudyConfig
from experiments.study.q6 import SearchStudyConfig
from experiments.study.results import RESULTS_FILE, ResultsError
from experiments.study.sgns_common import SGNSStudyConfig


@dataclasses.dataclass(frozen=True)
class Output:
    out_dir: str = "runs"
    """Where run directories are created."""


@dataclasses.dataclass(frozen=True)
class Study(StudyConfig, Output):
    """The main job (default): one report answering the seven seed questions Q1–Q7 with tables
    and plots — SGNS dot vs cosine vs bilinear, attention scores, user–item models, search
    speed, in vs out vectors. ~20 min on a 2-core CPU; --quick for a smoke test. Saves
    results.json, so `render` can write the report again without training."""


@dataclasses.dataclass(frozen=True)
class Render:
    """The report of a saved study again, from RUN_DIR/results.json, without training: written
    into a new run directory (RUN_DIR is never changed). Works for `study` and the
    per-question experiments."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """A run directory of `study` (or of a per-question experiment) holding results.json."""
    out_dir: str | None = None
    """Where the new run directory is created (default: beside RUN_DIR)."""

    def validate(self) -> None:
        if not (Path(self.run_dir) / RESULTS_FILE).is_file():
            raise ResultsError(f"{self.run_dir!r} has no {RESULTS_FILE}: give a run directory "
                               "written by `study` or a per-question experiment")
        results_io.load(self.run_dir)  # readable JSON (each question is checked as it renders)


@dataclasses.dataclass(frozen=True)
class SGNSQuestions(SGNSStudyConfig, Output):
    """Q1, Q2, Q3, Q7 alone (their sections of the study, with the same --sgns.* options
    unprefixed): SGNS variants (dot, cosine t=1 / fixed / learned, bilinear) on the Wikipedia
    sample, norms, relevance vs similarity, in vs out vectors."""


@dataclasses.dataclass(frozen=True)
class Attention(AttentionStudyConfig, Output):
    """Q4 alone (the study's --attention.* options, unprefixed): attention with each score on a
    relevance task, MQAR and a character LM; learning-rate sensitivity, the largest attention
    logit, attention maps."""


@dataclasses.dataclass(frozen=True)
class Interaction(InteractionStudyConfig, Output):
    """Q5 alone (the study's --interaction.* options, unprefixed): dot, cosine, GMF, bilinear,
    MLP, NeuMF user–item models; can an MLP learn a dot product? Planted data by default,
    --data ml-100k / ml-1m (downloaded once)."""


@dataclasses.dataclass(frozen=True)
class Search(SearchStudyConfig, Output):
    """Q6 alone (the study's --search.* options, unprefixed): exact top-k cosine search, jaxemb
    vs numpy vs FAISS vs the matmul bound."""


@dataclasses.dataclass(frozen=True)
class Demo(DemoConfig, Output):
    """Scoring and search on real vectors: the seed arithmetic, dot vs cosine neighbours,
    norms vs frequency, hubness, WS353/SimLex/analogies, king − man + woman."""


@dataclasses.dataclass(frozen=True)
class SGNSExperiment(SGNSRunConfig, Output):
    """SGNS with a chosen score (dot, cosine with temperature, bilinear, ...): train on a
    corpus, evaluate in / out / in+out vectors on WS353, SimLex-999 and the Google analogies
    (3CosAdd, 3CosMul), save the vectors. Resumable (--resume RUN_DIR)."""


def _questions(questions: tuple[str, ...], part: type):
    """The function of a per-question experiment: ``questions`` of the study, configured by
    the ``part`` config (the experiment's config without --out-dir)."""
    def run_part(config, run: Run, progress) -> dict:
        from experiments import study

        cfg = part(**{f.name: getattr(config, f.name) for f in dataclasses.fields(part)})
        run.add(study.header())
        return study.run_questions(questions, lambda mod: cfg, run, progress)

    return run_part


def _lazy(target: str):
    """'module:function', imported only when the experiment runs (so --help stays light)."""
    def call(config, run: Run, progress):
        module, name = target.split(":")
        return getattr(importlib.import_module(module), name)(config, run, progress)

    return call


def _render(config: Render, run: Run, progress) -> list[str]:
    from experiments.study import render_saved

    with progress(f"render {config.run_dir}"):
        return render_saved(config.run_dir, run)


# name -> (config type, function(config, run, progress)); the first is the default
EXPERIMENTS = {
    "study": (Study, _lazy("experiments.study:run_study")),
    "render": (Render, _render),
    "questions-sgns": (SGNSQuestions, _questions(SGNS_QUESTIONS, SGNSStudyConfig)),
    "attention": (Attention, _questions(("q4",), AttentionStudyConfig)),
    "interaction": (Interaction, _questions(("q5",), InteractionStudyConfig)),
    "search": (Search, _questions(("q6",), SearchStudyConfig)),
    "demo": (Demo, _lazy("experiments.demo:run_demo")),
    "sgns": (SGNSExperiment, _lazy("experiments.sgns_run:run_sgns")),
}


@contextlib.contextmanager
def progress(label: str):
    """One line when a long step starts and one when it ends (loops inside show tqdm bars)."""
    t = time.perf_counter()
    print(f"{label} ...", file=sys.stderr, flush=True)
    yield
    print(f"{label}: done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)


def _cli_type():
    """The union of the experiments as tyro subcommands (all but `render` have defaults)."""
    def sub(name, cfg):
        default = {} if cfg is Render else {"default": cfg()}
        return Annotated[cfg, tyro.conf.subcommand(name, description=" ".join(
            cfg.__doc__.split()), **default)]

    return Union[tuple(sub(name, cfg) for name, (cfg, _) in EXPERIMENTS.items())]  # noqa: UP007


def main(argv: list[str] | None = None) -> int:
    config = tyro.cli(_cli_type(), args=argv, default=Study(), description=__doc__)
    name = next(n for n, (cfg, _) in EXPERIMENTS.items() if isinstance(config, cfg))
    config = config.resolved() if hasattr(config, "resolved") else config
    try:
        rank = _start_distributed(config)
        config.validate()
        out_dir = config.out_dir if config.out_dir is not None else \
            str(Path(config.run_dir).parent)  # render: beside RUN_DIR
        path = _resume_dir(config.resume, name) if getattr(config, "resume", None) else \
            _shared_run_dir(out_dir, name, rank)
        work_dir = path
        if rank:  # one run directory (and checkpoint directory) for all processes
            path = path / f"process-{rank}"
            path.mkdir(exist_ok=True)
    except (ValueError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from jaxemb.train import TrainingError

    run = Run(path, config)
    run.work_dir = work_dir
    t0 = time.perf_counter()
    try:
        EXPERIMENTS[name][1](config, run, progress)
    except TrainingError as e:  # NaN loss, SIGTERM, a checkpoint that cannot be written
        run.close()
        print(f"error: {e}\n(the run directory {str(path)!r} keeps what was written)",
              file=sys.stderr)
        return 3
    except ResultsError as e:  # render: a results.json of another layout
        run.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        run.close()
    report = run.finish(f"jaxemb {name} — {path.name}")
    print(f"\n{name} finished in {time.perf_counter() - t0:.0f} s: {report}")
    return 0


def _start_distributed(config) -> int:
    """Join a multi-host run (``--coordinator``) before JAX starts; returns this process's
    rank (0 when there is one process)."""
    coordinator = getattr(config, "coordinator", None)
    if coordinator is None:
        return 0
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    n, i = config.num_processes, config.process_id
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"need --num-processes >= 1 and 0 <= --process-id < num-processes, got "
                         f"{n} and {i}")
    import jax

    # CPU hosts exchange through gloo; GPU and TPU backends bring their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=n, process_id=i)
    return i


def _shared_run_dir(out_dir: str, name: str, rank: int) -> Path:
    """A new run directory; in a multi-host run process 0 makes it and tells the others its
    name, so all save checkpoints to one place (orbax's multi-host barriers expect that)."""
    import jax

    if jax.process_count() == 1:
        return new_run_dir(out_dir, name)
    import numpy as np
    from jax.experimental import multihost_utils

    made = str(new_run_dir(out_dir, name)) if rank == 0 else ""
    raw = np.zeros(4096, np.uint8)
    raw[:len(made.encode())] = np.frombuffer(made.encode(), np.uint8)
    raw = np.asarray(multihost_utils.broadcast_one_to_all(raw))
    return Path(bytes(raw[raw > 0]).decode())


def _resume_dir(resume: str, name: str) -> Path:
    path = Path(resume)
    if not (path / "checkpoints").is_dir():
        raise RunDirError(f"--resume {resume!r}: not a run directory with checkpoints (expected "
                          f"{str(path / 'checkpoints')!r}, written by an earlier {name} run)")
    return path


if __name__ == "__main__":
    sys.exit(main())
