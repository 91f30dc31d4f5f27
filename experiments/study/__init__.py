"""The headline study: one report that answers the seven seed questions with evidence.

    python -m experiments.run                      # everything
    python -m experiments.run study --quick        # smoke-test size
    python -m experiments.run study --only q6      # some questions only
    python -m experiments.run study --sgns.corpus text8 --interaction.data ml-1m  # large sizes
    python -m experiments.run study --attention.large   # Q4's large size (an accelerator)
    python -m experiments.run render RUN_DIR       # the report again from RUN_DIR/results.json

Each question is a module ``experiments.study.qN`` with the same four parts:

- ``PART``: the name of the :class:`StudyConfig` field that configures it (``sgns``: Q1, Q2, Q3,
  Q7, which share one set of trained SGNS models; ``attention``: Q4; ``interaction``: Q5;
  ``search``: Q6);
- ``measure(config, shared, progress) -> Results``: trains / times; ``shared`` is a dict the
  questions of one run share (e.g. the trained SGNS variants), so work is done once;
- ``render(results, run) -> None``: the section (tables, figures, the answer) into ``run``;
- ``answer(results) -> str``: the words, from the results only.

Results are saved to ``results.json`` and ``report.md`` is rewritten after each question, so a
crash or an interruption keeps every finished answer, and the report can be rendered again
without training. A question that fails gets a section quoting its error (traceback in
``errors/qN.txt``) and the others still run. Each SGNS variant checkpoints under
``RUN_DIR/work/sgns-<variant>``, so ``python -m experiments.run study --resume RUN_DIR`` continues
a stopped run: answered questions are rendered from ``results.json``, an interrupted variant
resumes from its checkpoint (the same numbers as an uninterrupted run), the rest runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from experiments.report import Run, environment
from experiments.study import results as results_io
from experiments.study.q4 import AttentionStudyConfig
from experiments.study.q5 import InteractionStudyConfig
from experiments.study.q6 import SearchStudyConfig
from experiments.study.sgns_common import SGNSStudyConfig
from jaxemb import stats

QUESTIONS = ("q1", "q2", "q3", "q4", "q5", "q6", "q7")
SGNS_QUESTIONS = ("q1", "q2", "q3", "q7")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """All seven questions (Q1–Q7) in one report."""

    sgns: SGNSStudyConfig = SGNSStudyConfig()
    """Q1, Q2, Q3, Q7: SGNS on gensim's Wikipedia sample with dot, cosine and bilinear scores."""
    attention: AttentionStudyConfig = AttentionStudyConfig()
    """Q4: attention scores on relevance (with a symmetric control) and character-level
    language modelling; MQAR with --attention.large."""
    interaction: InteractionStudyConfig = InteractionStudyConfig()
    """Q5: user–item interaction models on planted data (or MovieLens)."""
    search: SearchStudyConfig = SearchStudyConfig()
    """Q6: exact and approximate (IVF) top-k search against FAISS and numpy, each in its own
    process."""
    only: tuple[str, ...] = QUESTIONS
    """Run only these questions (q1 … q7)."""
    quick: bool = False
    """Smoke-test size for every part (about 2 minutes on a 2-core CPU)."""

    def resolved(self) -> StudyConfig:
        if not self.quick:
            return self
        parts = {name: dataclasses.replace(getattr(self, name), quick=True).resolved()
                 for name in ("sgns", "attention", "interaction", "search")}
        return dataclasses.replace(self, **parts)

    def validate(self) -> None:
        unknown = [q for q in self.only if q not in QUESTIONS]
        if unknown or not self.only:
            raise ValueError(f"--only: unknown question(s) {unknown or '(none given)'}; choose "
                             f"from {', '.join(QUESTIONS)}")
        for part in (self.sgns, self.attention, self.interaction, self.search):
            part.validate()


def question(q: str) -> ModuleType:
    """The module of question ``q`` ('q1' … 'q7')."""
    if q not in QUESTIONS:
        raise ValueError(f"unknown question {q!r}; choose from {', '.join(QUESTIONS)}")
    return importlib.import_module(f"experiments.study.{q}")


def seeds_sentence(cfg: StudyConfig | None) -> str:
    """Which seeds each part trains: every variant of a question on the same seeds, compared
    pairwise per seed."""
    text = ("Seeds: within a question every variant trains on the same seeds, and comparisons "
            "between variants are paired by seed; each caption names its seeds.")
    if cfg is None:
        return text
    s, a, i = cfg.sgns.resolved(), cfg.attention.resolved(), cfg.interaction.resolved()
    return (text[:-1] + f" (Q1–Q3, Q7: {len(s.seeds)} seeds; Q4: {a.seeds}, the attention "
            f"runs being the main job's longest part; Q5: {i.seeds} for the ranking models, "
            f"{i.enc_seeds} for the dual encoders, {i.fit_seeds} for the fits, each after "
            "tuning on seed 0).")


def header(cfg: StudyConfig | None = None) -> str:
    """The report's method paragraph: where it ran, the seeds, what tuned what, and the one
    decision rule."""
    env = environment()
    mqar = cfg is None or "mqar" in cfg.attention.resolved().parts
    return ("Generated by `python -m experiments.run " + shlex.join(sys.argv[1:]) + "` on "
            f"{env['processor']} ({env['cpu_count']} CPUs, backend {env['backend']}, devices "
            f"{len(env['devices'])}), jax {env['jax']}, flax {env['flax']}, optax "
            f"{env['optax']}, numpy {env['numpy']}. Every number below is also in this run's "
            "`metrics.jsonl` and `results.json`. Each answer's first paragraph, \"measured in "
            "this run\", is generated from this run's results; its \"Background\" paragraph "
            "gives theory the run does not test, with citations. What chose the settings: "
            "SGNS's are gensim's defaults, and its row update was chosen for stability over a "
            "grid of windows and negatives (`python -m experiments.bench_sgns --grid`); the "
            "cosine tables' initialisation (length 1)"
            + (" and Q4's MQAR learning rate and batch were" if mqar else " was") +
            " chosen during development by looking at results of the kind reported here, "
            "so comparisons involving them are not free of that selection (Q3's cosine_dotinit "
            "row measures what the cosine initialisation changes). Q5 chooses its learning rates, "
            "widths and temperatures on validation data that it does not report (its dual "
            "encoders and ranking models on a validation split with seed 0, reported on the "
            "test split with other seeds; its fits on held-out entries other than the scored "
            "ones). Intervals are 95% "
            "t-intervals over seeds, except for the benchmark differences that the decision rule "
            "names. " + seeds_sentence(cfg) + " "
            f"Decision rule: {stats.DECISION_RULE}\n")


def is_interruption(e: BaseException) -> bool:
    """SIGINT / SIGTERM, however it surfaced: never a result, never a failed question."""
    from jaxemb.train import TrainingInterrupted

    return isinstance(e, TrainingInterrupted | KeyboardInterrupt) or \
        getattr(e, "exit_code", None) in (130, 143)


def check_inputs(parts: dict, questions) -> dict:
    """Load and check what the chosen ``questions`` read before any work starts (the SGNS
    corpus); returns the ``shared`` dict the questions start from. ``parts``: {PART: config}."""
    shared = {}
    if any(question(q).PART == "sgns" for q in questions) and "sgns" in parts:
        from experiments.study import sgns_common

        shared["sgns_inputs"] = sgns_common.load_inputs(parts["sgns"].resolved())
    return shared


def run_questions(questions, config_of, run: Run, progress, shared: dict | None = None) -> dict:
    """Measure and render ``questions`` in order; ``config_of(module)`` is the config of a
    question's part. Returns {question: results} of the questions answered.

    The report is rewritten after each question, so a crash or an interruption keeps every
    finished section. Results are saved after each measurement; those already in the run's
    ``results.json`` (a resumed run) are rendered, not measured again. A question that fails
    gets a section quoting its error (traceback in ``errors/qN.txt``; ``run.failed`` lists it)
    and the others still run; an interruption propagates."""
    previous = results_io.load(run.path) if (run.path / results_io.RESULTS_FILE).is_file() \
        else {}
    shared = {} if shared is None else shared
    shared.setdefault("work_dir", Path(run.work_dir) / "work")
    done, timings = {}, {}
    run.write_report(footer=_in_progress(questions[0]) if questions else "")
    for i, q in enumerate(questions):
        mod = question(q)
        n_sections = len(run.sections)
        try:
            if q in previous:  # answered before the run was interrupted
                done[q] = mod.Results.from_json(previous[q])
            else:
                t = time.perf_counter()
                done[q] = mod.measure(config_of(mod), shared, progress)
                timings[q] = time.perf_counter() - t
                merged = {**_parsed(previous, done), **done}
                results_io.save(run.path, {k: merged[k] for k in QUESTIONS if k in merged})
            mod.render(done[q], run)
        except Exception as e:
            if is_interruption(e):
                raise
            done.pop(q, None)
            del run.sections[n_sections:]  # a half-rendered section is replaced
            run.add(_failed_section(q, mod, e, run))
        nxt = questions[i + 1] if i + 1 < len(questions) else None
        run.write_report(footer=_in_progress(nxt) if nxt else "")
    run.log("timings", seconds=timings)
    return done


def _parsed(previous: dict, done: dict) -> dict:
    """The saved results of questions not (yet) in ``done``, kept in results.json as they were."""
    return {q: question(q).Results.from_json(data) for q, data in previous.items()
            if q not in done}


def _in_progress(q: str) -> str:
    return (f"*In progress: {q.upper()} and later sections are being measured; this file is "
            "rewritten as each question finishes.*")


def _failed_section(q: str, mod: ModuleType, e: Exception, run: Run) -> str:
    """The section of a question that failed: its error quoted, the traceback saved."""
    errors = run.path / "errors"
    errors.mkdir(exist_ok=True)
    trace = errors / f"{q}.txt"
    trace.write_text("".join(traceback.format_exception(e)), encoding="utf-8")
    message = " ".join(str(e).split())[:2000] or "(no message)"
    run.failed[q] = f"{type(e).__name__}: {message}"
    title = getattr(mod, "TITLE", f"## {q.upper()}.")
    resume = f"python -m experiments.run {run.experiment or 'study'} --resume {run.path}"
    return (f"{title}\n\n**Not answered: {q.upper()} failed** with\n\n```text\n"
            f"{run.failed[q]}\n```\n\nThe traceback is in `errors/{q}.txt`; the other "
            f"questions still ran. After fixing the cause, `{resume}` measures the questions "
            "not answered and keeps the others.\n")


def run_study(cfg: StudyConfig, run: Run, progress, shared: dict | None = None) -> dict:
    run.add(header(cfg))
    return run_questions([q for q in QUESTIONS if q in cfg.only],
                         lambda mod: getattr(cfg, mod.PART), run, progress, shared)


def render_saved(run_dir, run: Run) -> list[str]:
    """Render the report of the study saved in ``run_dir`` into ``run`` (no training); returns
    the questions rendered."""
    saved = results_io.load(run_dir)
    run.add(f"Rendered from `{run_dir}/{results_io.RESULTS_FILE}` (no training); the machine "
            f"and versions of the measurement are in `{run_dir}/config.json`. Intervals are 95% "
            f"t-intervals over seeds, except for the benchmark differences that the decision "
            f"rule names. Decision rule: {stats.DECISION_RULE}\n")
    for q in QUESTIONS:
        if q in saved:
            mod = question(q)
            mod.render(mod.Results.from_json(saved[q]), run)
    return [q for q in QUESTIONS if q in saved]
