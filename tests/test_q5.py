"""Q5 (user–item models) from hand-made results: the tables, figures and words follow the numbers
(no training); the `render` subcommand re-renders a saved results.json; config and data errors.
The real quick run of Q5 is checked in test_study.py."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import run as runner
from experiments.report import Run, table
from experiments.study import q5, render_saved
from experiments.study import results as results_io
from jaxemb import recdata, stats

SIZES = (500, 2000)


def _metrics(hr, lr=0.01, wd=0.0):
    hr = list(hr)
    return {"hr": hr, "ndcg": [h / 2 for h in hr], "hr_sampled": [min(1.0, 2 * h) for h in hr],
            "ndcg_sampled": hr, "lr": lr, "weight_decay": wd,
            "val_hr_grid": [[lr, wd, 0.3]], "seconds": 1.5, "final_loss": [0.5, 0.5, 0.5]}


def fixture_results(dot_truth=None, nonlinear=None, fit=None) -> q5.Results:
    """Q5 results of the quick config: dot clearly beats the MLP on the dot truth, they tie on
    the non-linear truth, and the dot model fits a dot product best at every size."""
    cfg = q5.InteractionStudyConfig(quick=True).resolved()
    dot_truth = dot_truth or {"dot": [0.40, 0.41, 0.42], "gmf": [0.39, 0.40, 0.41],
                              "mlp": [0.20, 0.21, 0.22]}
    nonlinear = nonlinear or {"dot": [0.31, 0.33, 0.34], "gmf": [0.30, 0.33, 0.33],
                              "mlp": [0.30, 0.35, 0.32]}
    fit = fit or {"dot": {"500": [0.5, 0.52, 0.51], "2000": [0.1, 0.11, 0.09]},
                  "MLP w=16": {"500": [0.9, 0.92, 0.91], "2000": [0.6, 0.61, 0.62]}}
    refs = [["oracle (true score)", {k: [0.6] for k in ("hr", "ndcg", "hr_sampled",
                                                        "ndcg_sampled")}],
            ["random order (expected)", {k: [0.1] for k in ("hr", "ndcg", "hr_sampled",
                                                            "ndcg_sampled")}]]
    r = q5.Results(
        config=dataclasses.asdict(cfg),
        datasets=[{"name": "dot truth", "note": "rank-16 share 90.0%", "test_users": 100},
                  {"name": "non-linear truth", "note": "rank-16 share 50.0%", "test_users": 100}],
        ranking={"dot truth": {m: _metrics(v) for m, v in dot_truth.items()},
                 "non-linear truth": {m: _metrics(v, lr=0.03) for m, v in nonlinear.items()}},
        references={"dot truth": refs, "non-linear truth": refs},
        mlp_learns_dot=fit, fit_seconds={m: 2.0 for m in fit}, seconds=12.0)
    return q5.Results.from_json(r.to_json())  # lists, not tuples


def _render(results, path):
    run = Run(path, {"fixture": True})
    q5.render(results, run)
    report = run.finish("q5").read_text()
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return report, records


def test_results_round_trip_and_config():
    r = fixture_results()
    assert q5.Results.from_json(json.loads(json.dumps(r.to_json()))) == r
    cfg = q5.config_of(r)
    assert cfg == q5.InteractionStudyConfig(quick=True).resolved()  # tuples again
    with pytest.raises(results_io.ResultsError, match="lack .*'ranking'"):
        q5.Results.from_json({k: v for k, v in r.to_json().items() if k != "ranking"})


def test_answer_follows_the_numbers():
    words = q5.answer(fixture_results())
    assert "On the dot truth, HR@10 (full catalogue): gmf (0.400) is below dot (0.410)" in words
    assert "mlp (0.210) is below dot (0.410)" in words
    assert "mlp (0.323) is within the noise of dot (0.327)" in words
    assert ("The dot model's lead over the MLP is +0.200 on the dot truth and +0.003 on the "
            "non-linear truth: the MLP trails on the dot truth and catches up on the non-linear "
            "truth.") in words
    assert ("from 2000 entries, the dot model reaches a relative RMSE of 0.100 and the best MLP "
            "(MLP w=16) 0.610 (6.1× the dot's error); from 500 entries: dot 0.510, MLP w=16 "
            "0.910. At every size the dot model's error is the lowest.") in words


def test_answer_uses_the_paired_rule_and_turns_with_the_numbers():
    # gmf is 0.01 below dot on every seed: the paired rule calls it lower although the two
    # per-model intervals overlap widely
    dot, gmf = [0.30, 0.40, 0.50], [0.29, 0.39, 0.49]
    assert stats.compare(gmf, dot) == "lower"
    words = q5.answer(fixture_results(dot_truth={"dot": dot, "gmf": gmf, "mlp": dot}))
    assert "gmf (0.390) is below dot (0.400)" in words
    assert "mlp (0.400) is within the noise of dot (0.400)" in words
    assert "here the MLP does not trail the dot model measurably on the dot truth" in words
    fit = {"dot": {"500": [0.9, 0.9, 0.9], "2000": [0.1, 0.1, 0.1]},
           "MLP w=16": {"500": [0.5, 0.5, 0.5], "2000": [0.6, 0.6, 0.6]}}
    assert ("The dot model's error is not the lowest at every size."
            in q5.answer(fixture_results(fit=fit)))


def test_render_writes_the_tables_figures_and_answer(tmp_path):
    r = fixture_results()
    report, records = _render(r, tmp_path)
    assert report.count("## Q5. Does an element-wise product") == 1
    for heading in ("### Q5.1", "### Q5.2", "### Q5.3 Answer"):
        assert heading in report
    assert "### Q5.3 Answer\n\n" + q5.answer(r) in report
    tables = {m["section"]: m for m in records if m.get("kind") == "table"}
    assert set(tables) == {"q5_ranking_dot truth", "q5_ranking_non-linear truth",
                           "q5_mlp_learns_dot"}
    for t in tables.values():  # each table is in the report as logged
        assert table(t["header"], t["rows"], t["caption"]) in report
    dot_rows = {row[0]: row for row in tables["q5_ranking_dot truth"]["rows"]}
    assert dot_rows["dot (MF)"][1:3] == ["0.01, 0", stats.format_interval([0.40, 0.41, 0.42])]
    assert dot_rows["random order (expected)"][2] == "0.100"  # one value: no interval
    assert tables["q5_mlp_learns_dot"]["header"] == ["model", "N = 500", "N = 2000"]
    assert tables["q5_mlp_learns_dot"]["rows"][0][0] == "dot"
    for png in ("q5_ranking.png", "q5_mlp_learns_dot.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    ranking = [m for m in records if m["section"] == "q5_ranking"]
    assert [(m["model"], m["data"]) for m in ranking] == [
        (m, d) for m in ("dot", "gmf", "mlp") for d in ("dot truth", "non-linear truth")]
    fit = [m for m in records if m["section"] == "q5_mlp_learns_dot"]
    assert fit[1] == {"section": "q5_mlp_learns_dot", "model": "MLP w=16",
                      "rel_rmse": r.mlp_learns_dot["MLP w=16"], "seconds": 2.0}
    (summary,) = [m for m in records if m["section"] == "q5_summary"]
    assert summary == {"section": "q5_summary", "answer": q5.answer(r), "seconds": 12.0}


def test_render_saved_and_the_render_subcommand(tmp_path, capsys):
    saved = tmp_path / "runs" / "study-x"
    saved.mkdir(parents=True)
    results_io.save(saved, {"q5": fixture_results()})
    before = sorted(p.name for p in saved.iterdir())
    assert runner.main(["render", str(saved)]) == 0
    new = [p for p in (tmp_path / "runs").iterdir() if p != saved]
    assert len(new) == 1 and new[0].name.startswith("render-")  # beside RUN_DIR, a new one
    assert sorted(p.name for p in saved.iterdir()) == before  # RUN_DIR untouched
    report = (new[0] / "report.md").read_text()
    assert f"Rendered from `{saved}/results.json` (no training)" in report
    assert stats.DECISION_RULE in report
    assert "### Q5.3 Answer\n\n" + q5.answer(fixture_results()) in report
    # the same as rendering the results directly
    direct = tmp_path / "direct"
    direct.mkdir()
    run = Run(direct, {})
    assert render_saved(saved, run) == ["q5"]
    assert run.finish("x").read_text().split("\n", 1)[1] == report.split("\n", 1)[1]
    out = tmp_path / "elsewhere"
    assert runner.main(["render", str(saved), "--out-dir", str(out)]) == 0
    assert [p.name.startswith("render-") for p in out.iterdir()] == [True]


def test_study_config_errors():
    with pytest.raises(ValueError, match="--data must be one of planted, ml-100k, ml-1m"):
        q5.InteractionStudyConfig(data="ml-20m").validate()
    with pytest.raises(ValueError, match=r"--models: unknown \['dott'\]"):
        q5.InteractionStudyConfig(models=("dott",)).validate()
    with pytest.raises(ValueError, match="--seeds must be >= 2"):
        q5.InteractionStudyConfig(seeds=1).validate()
    with pytest.raises(ValueError, match="--items .* must exceed"):
        q5.InteractionStudyConfig(items=50, sampled=100).validate()


def test_study_reads_movielens_from_the_cache(tmp_path, monkeypatch):
    import hashlib
    import zipfile

    from experiments.study.q5_measure import _datasets

    rng = np.random.default_rng(0)
    lines = [f"{u + 1}\t{i + 1}\t{rng.integers(1, 6)}\t{t}\n"
             for u in range(30) for t, i in enumerate(rng.choice(150, 6, replace=False))]
    with zipfile.ZipFile(tmp_path / "ml-100k.zip", "w") as z:
        z.writestr("ml-100k/u.data", "".join(lines))
    md5 = hashlib.md5((tmp_path / "ml-100k.zip").read_bytes(), usedforsecurity=False).hexdigest()
    monkeypatch.setitem(recdata.MOVIELENS, "ml-100k",
                        dataclasses.replace(recdata.MOVIELENS["ml-100k"], md5=md5))
    cfg = q5.InteractionStudyConfig(data="ml-100k", cache_dir=str(tmp_path), sampled=20)
    (d,) = _datasets(cfg)
    assert d.name == "ml-100k" and d.truth is None
    assert len(d.split.test_users) == 30 and len(d.val.train) == 30 * 4
    assert d.negatives.shape == (30, 20)
