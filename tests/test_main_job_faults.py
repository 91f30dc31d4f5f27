"""The main job survives its own failures: a failed question is quoted and the others still run
(exit 3, last line `failed: …`); SIGINT / SIGTERM keep the finished sections and exit 130 / 143
with the command that resumes; `--resume RUN_DIR` measures only what is missing and ends with the
numbers of an uninterrupted run; a mistake in the command is one line, exit 2, no run directory.

The fast tests replace the questions' measure / render with stand-ins (no training); the ones
that send real signals to a real quick study in a subprocess are marked slow."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from childenv import one_device_env

from experiments import run as runner
from experiments import study
from experiments.study import results as results_io
from experiments.study import sgns_common
from jaxemb import train

ROOT = Path(__file__).resolve().parents[1]
FAKE = ("q4", "q5", "q6")  # questions with no corpus to load: fast stand-ins


@dataclasses.dataclass(frozen=True)
class FakeResults(results_io.Results):
    value: float


@pytest.fixture
def fake_questions(monkeypatch):
    """Q4–Q6 measure a number (or raise what ``fail[q]`` holds) and render it; ``calls``
    lists the questions measured."""
    calls, fail = [], {}

    def install(q):
        mod = study.question(q)

        def measure(config, shared, progress):
            calls.append(q)
            if q in fail:
                raise fail[q]
            return FakeResults(value=float(q[1:]) / 7)

        def render(r, run):
            run.add(mod.TITLE + "\n\n" + run.table(f"{q}_fake", ("value",), [(r.value,)]))

        monkeypatch.setattr(mod, "measure", measure)
        monkeypatch.setattr(mod, "render", render)
        monkeypatch.setattr(mod, "Results", FakeResults)

    for q in FAKE:
        install(q)
    return calls, fail


def _main(capsys, *args):
    code = runner.main(["study", "--quick", "--only", *FAKE, *args])
    out = capsys.readouterr()
    return code, out.err.strip().splitlines()


def _only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_a_failed_question_is_quoted_the_others_still_run_and_resume_measures_it(
        fake_questions, tmp_path, capsys):
    calls, fail = fake_questions
    fail["q5"] = ValueError("the cached ml-100k is damaged:\n u.data line 7")
    code, err = _main(capsys, "--out-dir", str(tmp_path))
    assert code == 3 and err[-1] == "failed: q5"
    run_dir = _only_run(tmp_path)
    report = (run_dir / "report.md").read_text()
    q4, q5, q6 = (report.index(f"## Q{i}.") for i in (4, 5, 6))
    assert q4 < q5 < q6  # every section, in order
    assert "| 0.5714 |" in report[q4:q5] and "| 0.8571 |" in report[q6:]
    assert "ValueError: the cached ml-100k is damaged: u.data line 7" in report[q5:q6]
    assert "errors/q5.txt" in report[q5:q6] and "In progress" not in report
    assert "damaged" in (run_dir / "errors" / "q5.txt").read_text()
    assert "Traceback" in (run_dir / "errors" / "q5.txt").read_text()
    assert list(results_io.load(run_dir)) == ["q4", "q6"]  # a failure is not a result
    # the cause fixed, --resume measures only Q5 and keeps the rest
    del fail["q5"]
    calls.clear()
    assert runner.main(["--resume", str(run_dir)]) == 0  # the top-level --resume: the study
    assert calls == ["q5"]
    again = (run_dir / "report-2.md").read_text()
    assert "Not answered" not in again and "| 0.7143 |" in again
    assert again[again.index("## Q4."):] == _answered(report, again)
    assert list(results_io.load(run_dir)) == ["q4", "q5", "q6"]
    assert (run_dir / "config-2.json").is_file() and (run_dir / "report.md").read_text() == report


def _answered(first: str, resumed: str) -> str:
    """The resumed report's sections are the first one's with Q5's section answered."""
    q5, q6 = first.index("## Q5."), first.index("## Q6.")
    r5, r6 = resumed.index("## Q5."), resumed.index("## Q6.")
    return first[first.index("## Q4."):q5] + resumed[r5:r6] + first[q6:]


@pytest.mark.parametrize("stop, code, name", [
    (KeyboardInterrupt(), 130, "SIGINT"),
    # SIGTERM outside a training loop (run.py raises it), then inside one (train.train)
    (train.TrainingInterrupted("stopped by SIGTERM", signal.SIGTERM), 143, "SIGTERM"),
    (train.TrainingInterrupted("stopped by SIGTERM after call 3 of epoch 1", signal.SIGTERM),
     143, "SIGTERM")])
def test_an_interruption_keeps_the_finished_sections_and_resume_completes(
        stop, code, name, fake_questions, tmp_path, capsys):
    calls, fail = fake_questions
    fail["q5"] = stop
    got, err = _main(capsys, "--out-dir", str(tmp_path))
    run_dir = _only_run(tmp_path)
    assert got == code
    assert err[-1].endswith(f"Resume with: python -m experiments.run study --resume {run_dir}")
    assert name in err[-1] and "Traceback" not in "\n".join(err)
    report = (run_dir / "report.md").read_text()
    assert "## Q4." in report and "## Q5." not in report and "## Q6." not in report
    assert f"**Interrupted by {name}**" in report  # never a result, never a failed question
    assert not (run_dir / "errors").exists() and list(results_io.load(run_dir)) == ["q4"]
    del fail["q5"]
    calls.clear()
    assert runner.main(["study", "--resume", str(run_dir)]) == 0
    assert calls == ["q5", "q6"]  # Q4 is not measured again
    resumed = (run_dir / "report-2.md").read_text()
    assert [resumed.index(f"## Q{i}.") for i in (4, 5, 6)] == sorted(
        resumed.index(f"## Q{i}.") for i in (4, 5, 6))
    assert "Interrupted" not in resumed


def test_resume_takes_the_saved_settings_and_refuses_other_ones(fake_questions, tmp_path,
                                                                capsys):
    assert _main(capsys, "--attention.heads", "4", "--out-dir", str(tmp_path))[0] == 0
    run_dir = _only_run(tmp_path)
    # the same options again, or none, are fine; another setting is one line, exit 2
    assert runner.main(["study", "--resume", str(run_dir)]) == 0
    code, err = _main(capsys, "--attention.heads", "4", "--resume", str(run_dir))
    assert code == 0
    code, err = _main(capsys, "--attention.heads", "8", "--resume", str(run_dir))
    assert code == 2 and len(err) == 1
    assert "--attention.heads (8 here, 4 there)" in err[0]
    assert runner.main(["search", "--resume", str(run_dir)]) == 2
    assert "a run of `study`, not `search`" in capsys.readouterr().err


def _no_new_run(out: Path, before: set, code: int, err: list[str], *words: str) -> None:
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(w in err[0] for w in words), err
    assert set(out.iterdir()) == before  # nothing was started


def test_user_mistakes_are_one_line_exit_2_and_make_no_run_directory(tmp_path, capsys,
                                                                     monkeypatch):
    out = tmp_path / "runs"
    out.mkdir()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("the cat sat on the mat\nthe dog sat on the log\n")
    cases = [
        (["study", "--only", "q1", "--sgns.corpus", "nosuch"], ("--corpus", "'nosuch'")),
        (["questions-sgns", "--corpus", str(tmp_path / "gone.txt")], ("--corpus", "gone.txt")),
        (["sgns", "--corpus", "nosuch"], ("--corpus", "nosuch")),
        (["study", "--only", "q3", "--sgns.corpus", str(tiny), "--sgns.min-count", "1"],
         ("too small for the evaluation", "7 words", "--min-count")),
        (["sgns", "--corpus", str(tiny), "--min-count", "1"],
         ("too small for the evaluation", "wordsim353", "--min-count")),
        (["study", "--resume", str(tmp_path / "nowhere")], ("--resume", "not a run directory")),
        (["--resume", str(tiny)], ("--resume", "not a run directory")),
    ]
    for args, words in cases:
        before = set(out.iterdir())
        code = runner.main([*args, "--out-dir", str(out)])
        _no_new_run(out, before, code, capsys.readouterr().err.strip().splitlines(), *words)


def test_unwritable_resume_and_out_dir_are_one_line_before_any_work(fake_questions, tmp_path,
                                                                     capsys, monkeypatch):
    assert _main(capsys, "--out-dir", str(tmp_path))[0] == 0
    run_dir = _only_run(tmp_path)
    before = set(run_dir.iterdir())
    real = os.access  # as a non-root user without write permission (root may write anywhere)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) in (
        run_dir, tmp_path / "ro") else real(p, mode))
    code, err = _main(capsys, "--resume", str(run_dir))
    assert code == 2 and len(err) == 1 and "is not writable" in err[0] and str(run_dir) in err[0]
    assert set(run_dir.iterdir()) == before  # no config-2.json, no report-2.md
    (tmp_path / "ro").mkdir()
    code, err = _main(capsys, "--out-dir", str(tmp_path / "ro"))
    assert code == 2 and len(err) == 1 and "not writable" in err[0]
    assert list((tmp_path / "ro").iterdir()) == []


def test_a_late_failure_of_another_experiment_keeps_its_report(tmp_path, capsys, monkeypatch):
    def demo(config, run, progress):
        run.add("## Vectors\n\nloaded.\n")
        raise OSError("the vectors file was truncated")

    monkeypatch.setitem(runner.EXPERIMENTS, "demo", (runner.Demo, demo))
    assert runner.main(["demo", "--out-dir", str(tmp_path)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "OSError: the vectors file was truncated" in err[0]
    run_dir = _only_run(tmp_path)
    report = (run_dir / "report.md").read_text()
    assert "## Vectors" in report and "**Failed**" in report
    assert "Traceback" in (run_dir / "errors" / "run.txt").read_text()


def test_a_signal_inside_a_checkpoint_write_waits_for_it():
    """The main job's handler does not raise inside orbax (a save or its finalisation): it asks
    again a moment later, once the write is done."""
    import types

    def where():
        return runner._in_checkpoint_io(sys._getframe())

    inside = types.FunctionType(compile("def save(f): return f()", "orbax", "exec").co_consts[0],
                                {"__name__": "orbax.checkpoint.fake"})
    assert inside(where) and not where()


def test_sgns_interruption_and_failed_writes_are_never_divergence(monkeypatch):
    cfg = sgns_common.SGNSStudyConfig(quick=True).resolved()

    def failing(error):
        def fake_train(*args, on_epoch=None, **kw):
            on_epoch(0, np.ones(3))
            raise error
        return fake_train

    nan = train.TrainingError("the loss became NaN/inf in epoch 2 by call 5 (seed index 0)")
    monkeypatch.setattr(train, "train", failing(nan))
    v = sgns_common._train_variant("cosine_t1", cfg, None, np.ones(4))
    assert v.result is None and "NaN" in v.error and v.epoch_loss.shape == (1, 3)
    for error in (train.TrainingInterrupted("stopped by SIGTERM after call 3 of epoch 1"),
                  train.TrainingError("cannot write a checkpoint to /x: No space left"),
                  KeyboardInterrupt()):
        monkeypatch.setattr(train, "train", failing(error))
        with pytest.raises(type(error)):
            sgns_common._train_variant("cosine_t1", cfg, None, np.ones(4))


def test_a_failed_sgns_training_fails_the_later_questions_at_once(monkeypatch):
    tries = []

    def fail(*args):
        tries.append(1)
        raise ValueError("no space left")

    monkeypatch.setattr(sgns_common, "train_variants", fail)
    shared = {}
    cfg = sgns_common.SGNSStudyConfig(quick=True)
    for _ in range(3):  # Q1, Q2, Q3 ask in turn: one training attempt, the same error
        with pytest.raises(ValueError, match="no space left"):
            sgns_common.trained(cfg, shared, None)
    assert len(tries) == 1


def test_help_documents_the_exit_codes_and_resume():
    code = "from experiments import run\nrun.main(['--help'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "COLUMNS": "200",
                                        "PYTHONPATH": str(ROOT)}).stdout
    for phrase in ("Exit codes: 0 done; 2 a mistake", "3 the run failed", "failed: q4, q5",
                   "130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM", "--resume RUN_DIR"):
        assert phrase in " ".join(out.split()), phrase


# --- real signals to a real quick study (slow) ------------------------------------------------

QUICK = ["study", "--quick", "--only", "q3", "q4"]
# lines on stderr, in turn, once the run is inside the question: Q3 in the training loop of its
# second variant (its progress bar is up: compiled, checkpoints opened), Q4 in its thread pool
MARKERS = {"q3": ("SGNS cosine_t1 (", "SGNS:   0%"), "q4": ("Q4 training:",)}
# figures that are timings (they differ between any two runs)
TIMING = re.compile(r"seconds|words_per_s|^training$|^devices$")


def _study(args, out, signum=None, markers=(), timeout=600):
    """Run the study in a subprocess; with ``signum``, send it once each of ``markers`` has
    been on stderr, in turn. Returns (exit code, stderr)."""
    env = one_device_env()  # one device, as a user runs it
    p = subprocess.Popen([sys.executable, "-m", "experiments.run", *args, "--out-dir", str(out)],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    err, t0, todo = "", time.monotonic(), list(markers)
    try:
        while signum is not None:
            line = p.stderr.readline()  # (tqdm's carriage returns end lines too)
            if not line or time.monotonic() - t0 > timeout:
                break
            err += line
            if todo[0] in line:
                todo.pop(0)
            if not todo:
                time.sleep(0.2)
                p.send_signal(signum)
                break
        err += p.communicate(timeout=timeout)[1]
    finally:
        if p.poll() is None:
            p.kill()
    (Path(out) / f"stderr-{time.time_ns()}.txt").write_text(err)  # for a failure's diagnosis
    return p.returncode, err


def _numbers(run_dir: Path) -> dict:
    """results.json without its timings."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not TIMING.search(k)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(results_io.load(run_dir))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    code, err = _study(QUICK, out)
    assert code == 0, err[-2000:]
    return _numbers(_only_run(out))


@pytest.mark.slow
@pytest.mark.parametrize("q", ["q3", "q4"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_question_keeps_the_finished_sections_and_resume_gives_the_same_numbers(
        q, signum, uninterrupted, tmp_path):
    code, err = _study(QUICK, tmp_path, signum, MARKERS[q])
    run_dir = _only_run(tmp_path)
    assert code == 128 + signum, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.endswith(f"Resume with: python -m experiments.run study --resume {run_dir}"), last
    assert "Traceback" not in err, err[-3000:]
    report = (run_dir / "report.md").read_text()
    assert ("## Q3." in report) == (q == "q4") and "## Q4." not in report
    assert f"**Interrupted by {signal.Signals(signum).name}**" in report
    if q == "q3":  # stopped inside the variant's training, which has its work directory
        assert (run_dir / "work" / "sgns-cosine_t1" / "checkpoints").is_dir()
    assert "diverged (NaN" not in report and "Training diverged" not in report
    code, err = _study(["--resume", str(run_dir)], tmp_path)
    assert code == 0, err[-3000:]
    assert _numbers(run_dir) == uninterrupted
    resumed = (run_dir / "report-2.md").read_text()
    assert "## Q3." in resumed and "## Q4." in resumed
    assert "diverged (NaN" not in resumed and "Training diverged" not in resumed
