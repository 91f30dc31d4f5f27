"""Run an experiment: ``python -m experiments.run [NAME] [--option value ...]``.

Each run writes a new directory under ``--out-dir`` (never overwriting an earlier run) with the
resolved config and environment (``config.json``), metrics as JSON lines (``metrics.jsonl``),
PNG plots and ``report.md``. ``python -m experiments.run --help`` lists the experiments;
``python -m experiments.run NAME --help`` lists an experiment's options.

    python -m experiments.run                      # the main job: study, Q1–Q7 in one report
    python -m experiments.run render RUN_DIR       # that report again from RUN_DIR/results.json
    python -m experiments.run interaction --quick  # one question alone (also questions-sgns,
                                                   # attention, search)
    python -m experiments.run --resume RUN_DIR     # continue an interrupted or failed study

Exit codes: 0 done; 2 a mistake in the command or its inputs (one line; nothing started, no run
directory made); 3 the run failed (study: its last line `failed: q4, q5` names the questions
not answered, whose sections quote the error; the other sections are in the report);
130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM: the finished sections are kept, and one line
gives the command that resumes the run.

Only the config classes are imported up front; an experiment's code is imported when it runs.

Compiled XLA programs are kept in JAX's persistent compilation cache,
``~/.cache/jaxemb/jax-compilation-cache`` (``$XDG_CACHE_HOME`` if set), shared with the
processes a run starts; ``JAX_COMPILATION_CACHE_DIR`` chooses another directory, or ``""`` none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
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
from jaxemb import timing
from jaxemb.interrupt import TrainingInterrupted


@dataclasses.dataclass(frozen=True)
class Output:
    out_dir: str = "runs"
    """Where run directories are created."""


@dataclasses.dataclass(frozen=True)
class Resumable:
    resume: str | None = None
    """A run directory of an interrupted or failed run of this experiment to continue, with
    the settings in its config.json: answered questions are kept (not measured again), an
    interrupted SGNS variant resumes from its checkpoint, the rest runs."""


@dataclasses.dataclass(frozen=True)
class Study(StudyConfig, Resumable, Output):
    """The main job (default): one report answering the seven seed questions Q1–Q7 with tables
    and plots — SGNS dot vs cosine vs bilinear, attention scores, user–item models, search
    speed, in vs out vectors. ~9-10 min on a 2-core CPU; --quick for a smoke test. Saves
    results.json and the report after each question, so `render` can write the report again
    without training and --resume RUN_DIR continues an interrupted or failed run."""


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
class SGNSQuestions(SGNSStudyConfig, Resumable, Output):
    """Q1, Q2, Q3, Q7 alone (their sections of the study, with the same --sgns.* options
    unprefixed): SGNS variants (dot, cosine t=1 / fixed / learned, bilinear) on the Wikipedia
    sample, norms, relevance vs similarity, in vs out vectors."""


@dataclasses.dataclass(frozen=True)
class Attention(AttentionStudyConfig, Resumable, Output):
    """Q4 alone (the study's --attention.* options, unprefixed): attention with each score on a
    relevance task, MQAR and a character LM; learning-rate sensitivity, the largest attention
    logit, attention maps."""


@dataclasses.dataclass(frozen=True)
class Interaction(InteractionStudyConfig, Resumable, Output):
    """Q5 alone (the study's --interaction.* options, unprefixed): dot, cosine, GMF, bilinear,
    MLP, NeuMF user–item models; can an MLP learn a dot product? Planted data by default,
    --data ml-100k / ml-1m (downloaded once)."""


@dataclasses.dataclass(frozen=True)
class Search(SearchStudyConfig, Resumable, Output):
    """Q6 alone (the study's --search.* options, unprefixed): exact top-k cosine search, jaxemb
    vs FAISS vs numpy, each in its own process on its fastest BLAS kernel, and approximate
    search (IVF, cosine and dot) beside FAISS."""


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
    def run_part(config, run: Run, progress, shared: dict | None = None) -> dict:
        from experiments import study

        run.add(study.header())
        return study.run_questions(questions, lambda mod: _part(config, part), run, progress,
                                   shared)

    return run_part


def _part(config, part: type):
    """The ``part`` config (a question's own, e.g. SGNSStudyConfig) of a per-question
    experiment's config (which adds --out-dir and --resume)."""
    return part(**{f.name: getattr(config, f.name) for f in dataclasses.fields(part)})


def _lazy(target: str):
    """'module:function', imported only when the experiment runs (so --help stays light)."""
    def call(config, run: Run, progress, *shared):
        module, name = target.split(":")
        return getattr(importlib.import_module(module), name)(config, run, progress, *shared)

    return call


def _render(config: Render, run: Run, progress) -> list[str]:
    from experiments.study import render_saved

    with progress(f"render {config.run_dir}"):
        return render_saved(config.run_dir, run)


# per-question experiments: name -> (their questions, the config of their part)
QUESTION_PARTS = {"questions-sgns": (SGNS_QUESTIONS, SGNSStudyConfig),
                  "attention": (("q4",), AttentionStudyConfig),
                  "interaction": (("q5",), InteractionStudyConfig),
                  "search": (("q6",), SearchStudyConfig)}

# name -> (config type, function(config, run, progress[, shared])); the first is the default
EXPERIMENTS = {
    "study": (Study, _lazy("experiments.study:run_study")),
    "render": (Render, _render),
    "questions-sgns": (SGNSQuestions, _questions(*QUESTION_PARTS["questions-sgns"])),
    "attention": (Attention, _questions(*QUESTION_PARTS["attention"])),
    "interaction": (Interaction, _questions(*QUESTION_PARTS["interaction"])),
    "search": (Search, _questions(*QUESTION_PARTS["search"])),
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


def _use_compilation_cache() -> None:
    """Keep compiled programs across the variants of a run and across runs. A hit returns the
    executable a compile would (the key is the program's HLO, compile options, XLA flags and
    jax version), so the numbers are the same; variants that differ only in parameter values
    (e.g. cosine at several fixed temperatures) compile once. Child processes inherit it."""
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if path is None:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = os.environ["JAX_COMPILATION_CACHE_DIR"] = str(
            cache_home / "jaxemb" / "jax-compilation-cache")
    if not path:
        return
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError:  # e.g. no writable home: run without the cache
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
        args = ["study", *args]  # options without an experiment are the main job's
    config = tyro.cli(_cli_type(), args=args, default=Study(), description=__doc__)
    name = next(n for n, (cfg, _) in EXPERIMENTS.items() if isinstance(config, cfg))
    config = config.resolved() if hasattr(config, "resolved") else config
    # Before the big arrays exist: XLA's step buffers reused, not page-faulted in again each
    # step (Q4's vmapped steps spent a sixth of their CPU time in the kernel without it).
    timing.keep_training_buffers()
    try:  # every mistake in the command or its inputs: one line, exit 2, no run directory
        rank = _start_distributed(config)
        resume = getattr(config, "resume", None)
        if resume and name not in ("sgns",):
            config = _resumed_config(config, name)
        config.validate()
        shared = _check_inputs(config, name)
        out_dir = config.out_dir if config.out_dir is not None else \
            str(Path(config.run_dir).parent)  # render: beside RUN_DIR
        path = _resume_dir(resume, name) if resume else _shared_run_dir(out_dir, name, rank)
        work_dir = path
        if rank:  # one run directory (and checkpoint directory) for all processes
            path = path / f"process-{rank}"
            path.mkdir(exist_ok=True)
    except (ValueError, OSError) as e:  # RunDirError is an OSError, CorpusError a ValueError
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while the inputs load (SIGTERM has its default meaning here)
        print("\ninterrupted before the run started; nothing was written", file=sys.stderr)
        return 130
    from jaxemb.train import TrainingError

    _use_compilation_cache()
    run = Run(path, config, title=f"jaxemb {name} — {path.name}", experiment=name)
    run.work_dir = work_dir
    t0 = time.perf_counter()
    try:
        with _sigterm_raises():
            EXPERIMENTS[name][1](config, run, progress, *([] if shared is None else [shared]))
    except (KeyboardInterrupt, TrainingInterrupted) as e:  # before TrainingError
        return _interrupted(e, run, name, args)
    except TrainingError as e:  # NaN loss, a checkpoint that cannot be written
        run.close()
        print(f"error: {e}\n(the run directory {str(path)!r} keeps what was written)",
              file=sys.stderr)
        return 3
    except ResultsError as e:  # render: a results.json of another layout
        run.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a late failure of a single-report experiment (demo, sgns)
        return _failed(e, run)
    finally:
        run.close()
    report = run.finish()
    if run.failed:
        print(f"\n{name} finished in {time.perf_counter() - t0:.0f} s with failed questions "
              f"(errors in {path / 'errors'}): {report}\nfailed: {', '.join(run.failed)}",
              file=sys.stderr)
        return 3
    print(f"\n{name} finished in {time.perf_counter() - t0:.0f} s: {report}")
    return 0


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises ``TrainingInterrupted`` (a BaseException: no ``except Exception`` records it
    as a failure) and SIGINT KeyboardInterrupt in the main thread while
    the block runs, except inside a checkpoint write (training loops install their own handler
    inside, which saves at the next call boundary)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _in_checkpoint_io(frame):  # never abandon a write half-way: ask again in a moment
            again = threading.Timer(0.2, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name}", signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)


def _in_checkpoint_io(frame) -> bool:
    """Whether the interrupted code is orbax's (a save, its finalisation or a close)."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("orbax"):
            return True
        frame = frame.f_back
    return False


def _interrupted(e: BaseException, run: Run, name: str, argv: list[str]) -> int:
    """Keep the finished sections, say how to resume in one line; 130 (SIGINT) or 143."""
    code = getattr(e, "exit_code", 130 if isinstance(e, KeyboardInterrupt) else 143)
    signame = {130: "SIGINT", 143: "SIGTERM"}.get(code, "a signal")
    if name in QUESTION_PARTS or name == "study":
        cmd = f"python -m experiments.run {name} --resume {shlex.quote(str(run.work_dir))}"
    else:  # sgns: the same options again, and the run directory
        args = list(argv)
        if "--resume" in args:
            del args[args.index("--resume"):args.index("--resume") + 2]
        cmd = shlex.join(["python", "-m", "experiments.run", *args, "--resume",
                          str(run.work_dir)])
    report = run.write_report(footer=f"**Interrupted by {signame}**: the sections above are "
                              f"complete. To continue the run: `{cmd}`")
    run.close()
    _close_progress_bars()
    print(f"\ninterrupted by {signame}; the finished sections are in {report}. "
          f"Resume with: {cmd}", file=sys.stderr)
    return code


def _close_progress_bars() -> None:
    """Close the tqdm bars an interrupted loop left open now: closed at exit they would print
    after the resume line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _failed(e: Exception, run: Run) -> int:
    """Keep what the run wrote (the report so far; the traceback in errors/run.txt); one line,
    exit 3."""
    (run.path / "errors").mkdir(exist_ok=True)
    trace = run.path / "errors" / "run.txt"
    trace.write_text("".join(traceback.format_exception(e)), encoding="utf-8")
    report = run.write_report(footer=f"**Failed**: `{type(e).__name__}: {_one_line(e)}` "
                              "(traceback in `errors/run.txt`).")
    run.close()
    print(f"error: {type(e).__name__}: {_one_line(e)} (traceback in {trace}; what was written "
          f"is in {report.parent})", file=sys.stderr)
    return 3


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _check_inputs(config, name: str):
    """What an experiment reads, loaded and checked before the run directory exists (the SGNS
    corpus): for a study-like one the ``shared`` dict its questions start from, for ``sgns``
    its corpus; None for the others."""
    from experiments import study

    if name == "study":
        return study.check_inputs({"sgns": config.sgns}, config.only)
    if name in QUESTION_PARTS:
        questions, part = QUESTION_PARTS[name]
        return study.check_inputs({study.question(questions[0]).PART: _part(config, part)},
                                  questions)
    if name == "sgns":
        from experiments.sgns_run import load_inputs

        return load_inputs(config)
    return None


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
    """The run directory ``--resume`` continues, checked to be one and writable."""
    path = Path(resume)
    if name == "sgns" and not (path / "checkpoints").is_dir():
        raise RunDirError(f"--resume {resume!r}: not a run directory with checkpoints (expected "
                          f"{str(path / 'checkpoints')!r}, written by an earlier {name} run)")
    for p in (path, *(path / f for f in ("metrics.jsonl", RESULTS_FILE, "checkpoints", "work")
                      if (path / f).exists())):
        if not os.access(p, os.W_OK | (os.X_OK if p.is_dir() else 0)):
            raise RunDirError(f"--resume {resume!r}: {str(p)!r} is not writable (a resumed run "
                              "writes into its run directory); check its permissions")
    return path


_RUN_NAME = re.compile(r"^(.*)-\d{8}-\d{6}(-\d+)?$")  # new_run_dir's NAME-YYYYmmdd-HHMMSS[-n]


def _resumed_config(config, name: str):
    """The config a study-like run saved in RUN_DIR/config.json (``--resume RUN_DIR``); options
    given on the command line must agree with it (a mistake is a ValueError naming them)."""
    path = Path(config.resume)
    saved_file = path / "config.json"
    if not saved_file.is_file():
        raise RunDirError(f"--resume {config.resume!r}: not a run directory (no config.json)")
    try:
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        made_by = saved.get("experiment") or _RUN_NAME.match(path.absolute().name).group(1)
        keep = {"resume": config.resume, "out_dir": config.out_dir}
        there = results_io.config_from_json(type(config), {**saved["config"], **keep})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunDirError(f"--resume {config.resume!r}: cannot read the settings in "
                          f"{saved_file} ({type(e).__name__}: {_one_line(e)})") from None
    if made_by != name:
        raise RunDirError(f"--resume {config.resume!r}: a run of `{made_by}`, not `{name}`; "
                          f"use: python -m experiments.run {made_by} --resume {config.resume}")
    given, default = _flat(config), _flat(type(config)(**keep))
    if given not in (default, _flat(there)):
        diff = {k: (v, _flat(there).get(k)) for k, v in given.items() if v != _flat(there).get(k)}
        raise ValueError(f"--resume continues {config.resume} with the settings in its "
                         f"config.json; these options differ from them: " + "; ".join(
                             f"--{k} ({a!r} here, {b!r} there)" for k, (a, b) in diff.items())
                         + ". Leave them out")
    return there


def _flat(config) -> dict:
    """{'sgns.epochs': 2, ...}: a (resolved) config as flat JSON values, for comparison."""
    config = config.resolved() if hasattr(config, "resolved") else config

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}".replace("_", "-"), v

    return dict(walk(json.loads(json.dumps(dataclasses.asdict(config), default=str))))


if __name__ == "__main__":
    sys.exit(main())
