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


def _cond(recall, head, tail, corr, lr=0.03):
    return {"recall": list(recall), "head": list(head), "tail": list(tail),
            "norm_corr": list(corr), "tau": [0.3, 0.3, 0.3], "lr": lr, "temperature": 0.3,
            "val_grid": [[lr, 0.3, 0.2]], "final_loss": [4.0, 4.0, 4.0]}


def retrieval_fixture(cos=None, corr=(0.70, 0.72, 0.74), swap_arithmetic=False) -> dict:
    """Dual-encoder results: dot above both cosines with the log-Q correction (its norms track
    popularity), indistinguishable from them without it; ``cos`` overrides the cosines'
    recall with the correction."""
    dot_logq = _cond([0.25, 0.26, 0.27], [0.45, 0.46, 0.44], [0.20, 0.21, 0.22], corr)
    dot_plain = _cond([0.17, 0.18, 0.16], [0.18, 0.19, 0.17], [0.17, 0.16, 0.18],
                      [0.0, 0.1, -0.1])
    cos = cos or [0.23, 0.235, 0.245]
    cos_logq = _cond(cos, [0.42, 0.43, 0.41], [0.18, 0.19, 0.20], [0.1, 0.1, 0.1])
    cos_plain = _cond([0.16, 0.19, 0.17], [0.18, 0.2, 0.16], [0.15, 0.17, 0.16],
                      [0.1, 0.1, 0.1])
    arith = [{"pair": "a, b", "q": [0.2, 3.0], "k": [0.4, 3.0], "product": [0.08, 9.0],
              "dot": 9.08, "cosine": 0.997824, "neg_sq_euclidean": -0.04},
             {"pair": "c, d", "q": [0.2, 3.0], "k": [0.2, 3.0], "product": [0.04, 9.0],
              "dot": 9.04, "cosine": 1.0, "neg_sq_euclidean": 0.0}]
    if swap_arithmetic:
        arith[0]["dot"], arith[1]["dot"] = 9.0, 9.5
        arith[1]["cosine"] = 0.997824  # a tie
    refs = {"oracle (true score)": {"all": [0.44], "head": [0.78], "tail": [0.34]},
            "popularity (training counts)": {"all": [0.1], "head": [0.43], "tail": [0.0]}}
    return {"data": {"users": 100, "items": 50, "head_items": 5, "head_share": 0.24,
                     "test_head": 22, "test_tail": 78, "train_pairs": 800,
                     "norm_range": [1.0, 3.5]},
            "references": refs,
            "scores": {"dot": {"plain": dot_plain, "logq": dot_logq},
                       "cosine_fixed": {"plain": cos_plain, "logq": cos_logq},
                       "cosine_learned": {"plain": cos_plain, "logq": cos_logq}},
            "score_seconds": {"dot": 1.0, "cosine_fixed": 1.0, "cosine_learned": 1.0},
            "arithmetic": arith, "seconds": 3.0}


def fixture_results(dot_truth=None, nonlinear=None, fit=None, retrieval=None) -> q5.Results:
    """Q5 results of the quick config: dot clearly beats the MLP on the dot truth, they tie on
    the non-linear truth, and the dot model fits a dot product best at every size."""
    cfg = q5.InteractionStudyConfig(quick=True).resolved()
    dot_truth = dot_truth or {"dot": [0.40, 0.41, 0.42], "gmf": [0.39, 0.40, 0.41],
                              "mlp": [0.20, 0.21, 0.22]}
    nonlinear = nonlinear or {"dot": [0.31, 0.33, 0.34], "gmf": [0.30, 0.33, 0.33],
                              "mlp": [0.30, 0.35, 0.32]}
    fit = fit or {"dot": {"500": [0.5, 0.52, 0.51], "2000": [0.1, 0.11, 0.09]},
                  "MLP on [u, v]": {"500": [0.9, 0.92, 0.91], "2000": [0.6, 0.61, 0.62]}}
    tuning = {m: {s: {"width": None if m == "dot" else 16, "lr": 0.003,
                      "val": [[None if m == "dot" else 16, 0.003, 0.5]]} for s in ("500", "2000")}
              for m in fit}
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
        mlp_learns_dot=fit, fit_tuning=tuning, fit_seconds={m: 2.0 for m in fit},
        retrieval=retrieval or retrieval_fixture(), seconds=12.0)
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
    assert ("Learning a dot product (every model tuned over 1 setting (nothing tuned) on "
            "validation entries), the relative RMSE from 2000 entries is dot 0.100, MLP on "
            "[u, v] 0.610; from 500: dot 0.510, MLP on [u, v] 0.910. The dot model's error is "
            "below every MLP's at every size (paired over seeds).") in words


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
           "MLP on [u, v]": {"500": [0.5, 0.5, 0.5], "2000": [0.6, 0.6, 0.6]}}
    assert ("The dot model's error is below every MLP's at N = 2000 (paired over seeds); "
            "at N = 500 it is above MLP on [u, v]'s."
            in q5.answer(fixture_results(fit=fit)))


def test_render_writes_the_tables_figures_and_answer(tmp_path):
    r = fixture_results()
    report, records = _render(r, tmp_path)
    assert report.count("## Q5. Does an element-wise product") == 1
    for heading in ("### Q5.1", "### Q5.2", "### Q5.3 Dual encoders", "### Q5.4 Answer"):
        assert heading in report
    assert "### Q5.4 Answer\n\n" + q5.answer(r) in report
    tables = {m["section"]: m for m in records if m.get("kind") == "table"}
    assert set(tables) == {"q5_ranking_dot truth", "q5_ranking_non-linear truth",
                           "q5_mlp_learns_dot", "q5_retrieval", "q5_retrieval_vs_dot",
                           "q5_seed_arithmetic"}
    for t in tables.values():  # each table is in the report as logged
        assert table(t["header"], t["rows"], t["caption"]) in report
    dot_rows = {row[0]: row for row in tables["q5_ranking_dot truth"]["rows"]}
    assert dot_rows["dot (MF)"][1:3] == ["0.01, 0", stats.format_interval([0.40, 0.41, 0.42])]
    assert dot_rows["random order (expected)"][2] == "0.100"  # one value: no interval
    assert tables["q5_mlp_learns_dot"]["header"] == ["model", "N = 500", "N = 2000"]
    assert tables["q5_mlp_learns_dot"]["rows"][0][0] == "dot"
    assert tables["q5_mlp_learns_dot"]["rows"][1][1] == (
        stats.format_interval([0.9, 0.92, 0.91]) + " (w 16, lr 0.003)")
    ret = {(row[0], row[1]): row for row in tables["q5_retrieval"]["rows"]}
    dot_row = ret[("dot", "in-batch softmax with the log-Q correction")]
    assert dot_row[3:5] == [stats.format_interval([0.25, 0.26, 0.27]),
                            stats.format_interval([0.45, 0.46, 0.44])]
    assert ret[("oracle (true score)", "")][3] == "0.440"
    diff = {(row[0], row[1]): row for row in tables["q5_retrieval_vs_dot"]["rows"]}
    iv = stats.paired_difference([0.23, 0.235, 0.245], [0.25, 0.26, 0.27])
    assert diff[("cosine, τ learned", "in-batch softmax with the log-Q correction")][2] == (
        f"{iv.mean:+.3f} ± {iv.half_width:.3f}")
    assert tables["q5_seed_arithmetic"]["rows"][0][4] == "9.080"
    for png in ("q5_ranking.png", "q5_mlp_learns_dot.png", "q5_retrieval.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    ranking = [m for m in records if m["section"] == "q5_ranking"]
    assert [(m["model"], m["data"]) for m in ranking] == [
        (m, d) for m in ("dot", "gmf", "mlp") for d in ("dot truth", "non-linear truth")]
    fit = [m for m in records if m["section"] == "q5_mlp_learns_dot"]
    assert fit[1] == {"section": "q5_mlp_learns_dot", "model": "MLP on [u, v]",
                      "rel_rmse": r.mlp_learns_dot["MLP on [u, v]"], "seconds": 2.0}
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
    assert "### Q5.4 Answer\n\n" + q5.answer(fixture_results()) in report
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
    with pytest.raises(ValueError, match=r"--enc-scores: unknown \['cos'\]"):
        q5.InteractionStudyConfig(enc_scores=("cos",)).validate()
    with pytest.raises(ValueError, match="--enc-seeds must be >= 2"):
        q5.InteractionStudyConfig(enc_seeds=1).validate()
    with pytest.raises(ValueError, match="--fit-models must start with dot"):
        q5.InteractionStudyConfig(fit_models=("mlp",)).validate()
    with pytest.raises(ValueError, match="--enc-per-user must be >= 3"):
        q5.InteractionStudyConfig(enc_per_user=2).validate()


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


def test_dual_encoder_words_follow_the_numbers_and_flip():
    words = q5.answer(fixture_results())
    logq = "in-batch softmax with the log-Q correction"
    assert (f"With {logq}, the norm that dot keeps helps retrieval here: dot is above cosine, "
            "τ fixed and cosine, τ learned.") in words
    assert ("With in-batch softmax, keeping the norm makes no measurable difference here: dot "
            "is within the noise of cosine, τ fixed and cosine, τ learned.") in words
    assert f"Dual encoders with {logq}: dot reaches recall@10 0.260 (head 0.450" in words
    assert "cosine, τ learned (0.237) is below dot (Δ -0.023 ± " in words
    assert ("Dot's learned item norms correlate with log popularity at r = 0.72 ± 0.05 (the "
            "interval excludes 0).") in words
    # the opposite outcome: the cosines above dot, dot's norms unrelated to popularity
    flipped = q5.answer(fixture_results(retrieval=retrieval_fixture(
        cos=[0.30, 0.31, 0.32], corr=(-0.1, 0.0, 0.1))))
    assert (f"With {logq}, the norm that dot keeps hurts retrieval here: dot is below cosine, "
            "τ fixed and cosine, τ learned.") in flipped
    assert "cosine, τ learned (0.310) is above dot" in flipped
    assert "correlate with log popularity at r = 0.00 ± 0.25 (the interval includes 0)." in flipped
    # mixed: one cosine above, one below
    r = retrieval_fixture()
    r["scores"]["cosine_fixed"]["logq"] = _cond([0.30, 0.31, 0.32], [0.4] * 3, [0.2] * 3,
                                                [0.1] * 3)
    mixed = q5.answer(fixture_results(retrieval=r))
    assert (f"With {logq}, the comparison is mixed: dot against cosine, τ fixed: lower, "
            "cosine, τ learned: higher.") in mixed


def test_seed_arithmetic_words_flip():
    words = q5.answer(fixture_results())
    assert ("Seed 001's arithmetic: dot gives (a, b) 9.080 and (c, d) 9.040, so dot puts (a, b) "
            "first; cosine (0.9978 vs 1.0000) puts (c, d) first, and −‖q − k‖² (-0.040 vs "
            "0.000) puts (c, d) first.") in words
    swapped = q5.answer(fixture_results(retrieval=retrieval_fixture(swap_arithmetic=True)))
    assert "so dot puts (c, d) first; cosine (0.9978 vs 0.9978) ties them" in swapped


def test_product_mlp_words_flip():
    base = {"dot": [0.40, 0.41, 0.42], "gmf": [0.39, 0.40, 0.41], "mlp": [0.20, 0.21, 0.22]}
    up = q5.answer(fixture_results(dot_truth=base | {"product_mlp": [0.30, 0.31, 0.32]}))
    assert "product_mlp (0.310) is below dot (0.410)" in up
    assert "product_mlp is above mlp" in up and "product_mlp is below gmf" in up
    down = q5.answer(fixture_results(dot_truth=base | {"product_mlp": [0.10, 0.11, 0.12]}))
    assert "product_mlp is below mlp" in down
    same = q5.answer(fixture_results(dot_truth=base | {"product_mlp": [0.40, 0.42, 0.41]}))
    assert "product_mlp is within the noise of gmf" in same
    fit = {"dot": {"500": [0.5, 0.52, 0.51], "2000": [0.1, 0.11, 0.09]},
           "MLP on [u, v]": {"500": [0.9, 0.92, 0.91], "2000": [0.6, 0.61, 0.62]},
           "MLP on u⊙v": {"500": [0.7, 0.71, 0.72], "2000": [0.3, 0.32, 0.31]}}
    words = q5.answer(fixture_results(fit=fit))
    assert "from 2000 entries is dot 0.100, MLP on [u, v] 0.610, MLP on u⊙v 0.310" in words
    assert "below every MLP's at every size" in words
    assert ("Fed the product u⊙v instead of [u, v], the MLP's error (first) against the MLP on "
            "[u, v] (second): N = 500: 0.710 ± 0.025 is below 0.910 ± 0.025") in words
    fit["MLP on u⊙v"] = {"500": [0.95, 0.96, 0.97], "2000": [0.6, 0.62, 0.61]}
    words = q5.answer(fixture_results(fit=fit))
    assert "N = 500: 0.960 ± 0.025 is above 0.910 ± 0.025" in words
    assert "N = 2000: 0.610 ± 0.025 is within the noise of 0.610 ± 0.025" in words
