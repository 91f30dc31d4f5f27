"""Run an experiment: ``python -m experiments.run [NAME] [--option value ...]``.

Each run writes a new directory under ``--out-dir`` (never overwriting an earlier run) with the
resolved config and environment (``config.json``), metrics as JSON lines (``metrics.jsonl``),
PNG plots and ``report.md``. ``python -m experiments.run --help`` lists the experiments;
``python -m experiments.run NAME --help`` lists an experiment's options.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import tyro

from experiments.attention_study import AttentionStudyConfig, run_attention_study
from experiments.demo import DemoConfig, run_demo
from experiments.interaction_study import InteractionStudyConfig, run_interaction_study
from experiments.report import Run, RunDirError, new_run_dir
from experiments.sgns_run import SGNSRunConfig, run_sgns
from experiments.sgns_study import SGNSStudyConfig, run_sgns_study
from experiments.study import StudyConfig, run_questions, run_study
from experiments.study.q6 import SearchStudyConfig
from jaxemb.train import TrainingError


@dataclasses.dataclass(frozen=True)
class Output:
    out_dir: str = "runs"
    """Where run directories are created."""


@dataclasses.dataclass(frozen=True)
class Study(StudyConfig, Output):
    """The main job (default): one report answering the seven seed questions Q1–Q7 with tables
    and plots — SGNS dot vs cosine vs bilinear, attention scores, user–item models, search
    speed, in vs out vectors. ~10 min on a 2-core CPU; --quick for a smoke test."""


@dataclasses.dataclass(frozen=True)
class SGNSQuestions(SGNSStudyConfig, Output):
    """Q1, Q2, Q3, Q7 alone: SGNS variants (dot, cosine t=1 / fixed / learned, bilinear) on
    the Wikipedia sample, norms, relevance vs similarity, in vs out vectors."""


@dataclasses.dataclass(frozen=True)
class Attention(AttentionStudyConfig, Output):
    """Q4 alone: attention with each score on a relevance task, MQAR and a character LM;
    learning-rate sensitivity, the largest attention logit, attention maps."""


@dataclasses.dataclass(frozen=True)
class Interaction(InteractionStudyConfig, Output):
    """Q5 alone: dot, cosine, GMF, bilinear, MLP, NeuMF user–item models; can an MLP learn a
    dot product? Planted data by default, --data ml-100k / ml-1m (downloaded once)."""


@dataclasses.dataclass(frozen=True)
class Search(SearchStudyConfig, Output):
    """Q6 alone: exact top-k cosine search, jaxemb vs numpy vs FAISS vs the matmul bound."""


@dataclasses.dataclass(frozen=True)
class Demo(DemoConfig, Output):
    """Scoring and search on real vectors: the seed arithmetic, dot vs cosine neighbours,
    norms vs frequency, hubness, WS353/SimLex/analogies, king − man + woman."""


@dataclasses.dataclass(frozen=True)
class SGNSExperiment(SGNSRunConfig, Output):
    """SGNS with a chosen score (dot, cosine with temperature, bilinear, ...): train on a
    corpus, evaluate in / out / in+out vectors on WS353, SimLex-999 and the Google analogies
    (3CosAdd, 3CosMul), save the vectors. Resumable (--resume RUN_DIR)."""


def run_search_study(cfg: Search, run: Run, progress) -> dict:
    return run_questions(["q6"], lambda mod: cfg, run, progress)


# name -> (config type, function(config, run, progress)); the first is the default
EXPERIMENTS = {"study": (Study, run_study), "questions-sgns": (SGNSQuestions, run_sgns_study),
               "attention": (Attention, run_attention_study),
               "interaction": (Interaction, run_interaction_study),
               "search": (Search, run_search_study),
               "demo": (Demo, run_demo), "sgns": (SGNSExperiment, run_sgns)}


@contextlib.contextmanager
def progress(label: str):
    """One line when a long step starts and one when it ends (loops inside show tqdm bars)."""
    t = time.perf_counter()
    print(f"{label} ...", file=sys.stderr, flush=True)
    yield
    print(f"{label}: done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    defaults = {name: cfg() for name, (cfg, _) in EXPERIMENTS.items()}
    experiment = tyro.extras.subcommand_type_from_defaults(
        defaults, descriptions={name: " ".join(cfg.__doc__.split())
                                for name, (cfg, _) in EXPERIMENTS.items()})
    config = tyro.cli(experiment, args=argv, default=next(iter(defaults.values())),
                      description=__doc__)
    name = next(n for n, (cfg, _) in EXPERIMENTS.items() if isinstance(config, cfg))
    config = config.resolved() if hasattr(config, "resolved") else config
    try:
        rank = _start_distributed(config)
        config.validate()
        path = _resume_dir(config.resume, name) if getattr(config, "resume", None) else \
            _shared_run_dir(config.out_dir, name, rank)
        work_dir = path
        if rank:  # one run directory (and checkpoint directory) for all processes
            path = path / f"process-{rank}"
            path.mkdir(exist_ok=True)
    except (ValueError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
