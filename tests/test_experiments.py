"""The entry point end to end at the quick size, and its errors before any work starts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import run as runner
from experiments.report import new_run_dir

pytest.importorskip("gensim")


def _run_dirs(out):
    return sorted(p for p in out.iterdir() if p.is_dir())


def test_a_new_run_never_takes_an_earlier_runs_directory(tmp_path):
    first = new_run_dir(tmp_path, "demo")
    (first / "report.md").write_text("earlier")
    second = new_run_dir(tmp_path, "demo")  # the same second: a numbered sibling
    assert second != first and second.parent == first.parent
    assert (first / "report.md").read_text() == "earlier" and not any(second.iterdir())


def test_demo_quick_writes_a_complete_run(tmp_path, capsys):
    out = tmp_path / "runs"
    assert runner.main(["demo", "--quick", "--out-dir", str(out)]) == 0
    (first,) = _run_dirs(out)
    for name in ("config.json", "metrics.jsonl", "report.md", "norm_vs_frequency.png",
                 "vectors.txt"):
        assert (first / name).stat().st_size > 0, name
    report = (first / "report.md").read_text()
    for heading in ("seed question", "Vectors", "What the length encodes", "Nearest neighbours",
                    "Hubness", "Standard benchmarks", "king − man + woman"):
        assert heading in report, heading
    metrics = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    seed = {m["score"]: m for m in metrics if m["section"] == "seed_arithmetic"}
    assert seed["dot"]["a_b"] == pytest.approx(9.08) and seed["dot"]["a_c"] == pytest.approx(9.04)
    rho = next(m for m in metrics if m["section"] == "norms")["spearman_norm_logfreq"]
    assert f"{rho:.3f}" in report  # the report quotes the run's metrics
    ws = next(m for m in metrics if m["section"] == "word_pairs")
    assert f"{ws['spearman']:.3f}" in report
    config = json.loads((first / "config.json").read_text())
    assert config["config"]["quick"] is True and "jax" in config["environment"]


def test_sgns_quick_and_resume_directory_checks(tmp_path):
    out = tmp_path / "runs"
    assert runner.main(["sgns", "--quick", "--out-dir", str(out)]) == 0
    (run_dir,) = _run_dirs(out)
    assert (run_dir / "vectors-inout-seed0.txt").stat().st_size > 0
    assert "| in+out |" in (run_dir / "report.md").read_text()
    # resuming a finished run trains nothing more and writes a second report beside the first
    assert runner.main(["sgns", "--quick", "--resume", str(run_dir)]) == 0
    assert (run_dir / "report.md").exists() and (run_dir / "report-2.md").exists()
    assert (run_dir / "config-2.json").exists()
    assert runner.main(["sgns", "--quick", "--resume", str(tmp_path)]) == 2


def test_unknown_experiment_and_options_fail_before_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        runner.main(["dmeo", "--out-dir", str(tmp_path)])
    assert e.value.code != 0
    assert "demo" in capsys.readouterr().err  # the available (closest) names are shown
    with pytest.raises(SystemExit):
        runner.main(["demo", "--dimm", "3"])
    assert "--dim" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["demo", "--dim", "many"])
    assert runner.main(["demo", "--dim", "0", "--out-dir", str(tmp_path / "x")]) == 2
    assert "--dim must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.permissions
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere; CI runs this as another "
                    "user (.ci/run)")
def test_unwritable_output_directory(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert runner.main(["demo", "--quick", "--out-dir", str(ro / "runs")]) == 2
    assert "cannot create the output directory" in capsys.readouterr().err


def test_output_path_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert runner.main(["demo", "--quick", "--out-dir", str(f)]) == 2
    assert "cannot create the output directory" in capsys.readouterr().err


def test_require_positive_names_the_flag_and_rejects_non_integers():
    import dataclasses

    from experiments.report import require_positive

    @dataclasses.dataclass
    class Cfg:
        batch_size: object = 4
        dim: object = 8

    require_positive(Cfg(), "batch_size", "dim")  # fine
    for bad in (0, -3, 2.5, True, "4", None):
        with pytest.raises(ValueError, match=f"--batch-size must be >= 1 \\(an integer\\), got "
                                             f"{re.escape(repr(bad))}"):
            require_positive(Cfg(batch_size=bad), "batch_size", "dim")
    with pytest.raises(KeyError, match="--dim"):
        require_positive(Cfg(dim=0), "batch_size", "dim", error=KeyError)


def test_help_explains_every_experiment_without_importing_their_code():
    code = ("import sys\nfrom experiments import run\ntry:\n    run.main(['--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print('LOADED', [m for m in ('experiments.study.q5_measure',) if m in sys.modules])")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env={**os.environ, "COLUMNS": "200",
                                        "PYTHONPATH": str(root)}).stdout
    for name in runner.EXPERIMENTS:
        assert f"• {name} " in out, name
    for phrase in ("results.json, without training", "Q1, Q2, Q3, Q7 alone", "Q4 alone",
                   "Q5 alone", "Q6 alone"):
        assert phrase in out, phrase
    assert "LOADED []" in out  # an experiment's code is imported only when it runs


def test_render_errors_stop_with_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert runner.main(["render", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no results.json" in err and str(missing) in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.main(["render", str(empty)]) == 2
    assert "has no results.json" in capsys.readouterr().err
    (empty / "results.json").write_text("{not json")
    assert runner.main(["render", str(empty)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no run directory made
    (empty / "results.json").write_text('{"q5": {"config": {}}}')  # another layout
    assert runner.main(["render", str(empty), "--out-dir", str(tmp_path / "out")]) == 2
    assert "lack" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["render"])  # RUN_DIR is required
    assert "RUN_DIR" in capsys.readouterr().err



@pytest.mark.parametrize("name, questions, flag", [
    ("questions-sgns", ("q1", "q2", "q3", "q7"), "--epochs"),
    ("attention", ("q4",), "--steps"), ("interaction", ("q5",), "--epochs"),
    ("search", ("q6",), "--repeats")])
def test_per_question_experiments_run_their_questions_of_the_study(name, questions, flag,
                                                                   tmp_path, monkeypatch):
    from experiments import study

    calls = []
    monkeypatch.setattr(study, "run_questions",
                        lambda qs, config_of, run, progress, shared=None:
                        calls.append((qs, config_of(None))))
    cfg_type, _ = runner.EXPERIMENTS[name]
    assert runner.main([name, flag, "3", "--out-dir", str(tmp_path)]) == 0
    ((qs, part),) = calls
    assert qs == questions
    base = next(b for b in cfg_type.__mro__[1:] if b.__name__.endswith("StudyConfig"))
    assert type(part) is base  # the study's own config of that part, without --out-dir
    owner = part.protocol if name == "attention" else part
    assert getattr(owner, flag[2:]) == 3


def test_runs_keep_compiled_programs_in_a_cache_the_user_can_move_or_turn_off(tmp_path,
                                                                             monkeypatch):
    import jax

    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        runner._use_compilation_cache()
        want = tmp_path / "xdg" / "jaxemb" / "jax-compilation-cache"
        assert jax.config.jax_compilation_cache_dir == str(want) and want.is_dir()
        assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(want)  # child processes too
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
        runner._use_compilation_cache()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
        jax.config.update("jax_compilation_cache_dir", before)
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")  # off: nothing changes
        runner._use_compilation_cache()
        assert jax.config.jax_compilation_cache_dir == before
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
