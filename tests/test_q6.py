"""Q6 (search speed): the section and the answer from hand-made results (no timing)."""

import json

import pytest

from experiments.report import Run
from experiments.study import results as results_io
from experiments.study.q6 import PART, Results, SearchStudyConfig, answer, render


def _size(size, medians, agree=True, queries=100):
    methods = {name: {"min_s": 0.9 * t, "median_s": t, "max_s": 1.1 * t,
                      "queries_per_s": queries / t, "times_s": [0.9 * t, t, 1.1 * t]}
               for name, t in medians.items()}
    checks = [{"method": m, "ok": agree if m == "jaxemb" else True, "max_score_diff": 0.0,
               "identical_rows": queries, "rows": queries, "distinct": True}
              for m in ("jaxemb", "faiss") if m in medians]
    return {"size": size, "dim": 8, "queries": queries, "k": 5,
            "build_s": {"jaxemb index(db, 'cosine')": 0.1}, "warmup_s": dict(medians),
            "methods": methods,
            "ratios": {f"jaxemb/{o}": medians[o] / medians["jaxemb"]
                       for o in ("faiss", "numpy", "sgemm bound") if o in medians},
            "agreement": checks, "agree": all(c["ok"] for c in checks)}


def _results(big_medians, have_faiss=True, agree=True):
    small = {"jaxemb": 0.01, "numpy": 0.02, "sgemm bound": 0.015}
    if have_faiss:
        small["faiss"] = 0.03
    return Results(queries=100, dim=8, k=5, repeats=3, seed=0, have_faiss=have_faiss,
                   per_size=[_size(1000, small), _size(4000, big_medians, agree)])


FAST = {"jaxemb": 0.1, "numpy": 0.4, "faiss": 0.2, "sgemm bound": 0.125}


def test_answer_reports_the_largest_size_against_each_peer():
    words = answer(_results(FAST))
    assert words.startswith("**Answer (measured in this run).** At 4,000 rows jaxemb searched "
                            "at 2.00× the speed of faiss, 4.00× the speed of numpy, 1.25× the "
                            "speed of sgemm bound")
    assert "It is faster than the fp32 matmul alone, so it does less fp32 work" in words
    assert "**Background (not measured here).**" in words
    assert "FAISS is not installed" not in words


def test_answer_says_when_the_matmul_is_the_limit_and_faiss_is_missing():
    slow = {"jaxemb": 0.3, "numpy": 0.4, "sgemm bound": 0.25}
    words = answer(_results(slow, have_faiss=False))
    assert "0.83× the speed of sgemm bound" in words and "faiss" not in words.split("(")[0]
    assert "no faster than the fp32 matmul alone, so the matmul is the limit" in words
    assert "`pip install faiss-cpu` adds its column" in words


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_render_writes_the_table_agreement_figure_and_answer(tmp_path):
    r = _results(FAST)
    run = Run(tmp_path, SearchStudyConfig())
    render(r, run)
    run.close()
    recs = _records(tmp_path)
    assert [x["section"] for x in recs] == ["q6_search", "q6_agreement", "figure"]
    table = recs[0]
    assert table["header"] == ["rows", "method", "median s", "min s", "max s", "queries/s",
                               "time / jaxemb"]
    assert [row[:2] for row in table["rows"]] == [
        [s, m] for s in ("1,000", "4,000") for m in ("jaxemb", "faiss", "numpy", "sgemm bound")]
    assert table["rows"][-3] == ["4,000", "faiss", 0.2, pytest.approx(0.18),
                                 pytest.approx(0.22), 500.0, 2.0]
    assert "100 queries" in table["caption"] and "dim 8" in table["caption"]
    assert "3 rounds" in table["caption"]
    assert recs[1]["all_agree"] is True and len(recs[1]["checks"]) == 4
    assert (tmp_path / recs[2]["file"]).stat().st_size > 0
    text = "\n".join(run.sections)
    assert text.startswith("## Q6.") and "**all agree**" in text and answer(r) in text


def test_render_flags_a_mismatch(tmp_path):
    run = Run(tmp_path, SearchStudyConfig())
    render(_results(FAST, agree=False), run)
    run.close()
    assert _records(tmp_path)[1]["all_agree"] is False
    assert "**MISMATCH**" in "\n".join(run.sections)


def test_results_round_trip_through_results_json(tmp_path):
    r = _results(FAST)
    assert Results.from_json(r.to_json()) == r
    results_io.save(tmp_path, {"q6": r})
    assert Results.from_json(results_io.load(tmp_path)["q6"]) == r


def test_config():
    assert PART == "search"
    quick = SearchStudyConfig(quick=True).resolved()
    assert (quick.sizes, quick.queries, quick.repeats) == ((20_000,), 200, 2)
    with pytest.raises(ValueError, match="--k"):
        SearchStudyConfig(sizes=(5,), k=6).validate()
    with pytest.raises(ValueError, match="--queries"):
        SearchStudyConfig(queries=0).validate()
