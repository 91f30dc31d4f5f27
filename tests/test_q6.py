"""Q6 (search speed): the section and the answer from hand-made results (no timing), the words
flipping with the outcome, and the per-process runner of jaxemb.search_fair (one cheap child)."""

import json
import os

import pytest

from experiments.report import Run
from experiments.study import results as results_io
from experiments.study.q6 import (
    PART,
    Results,
    SearchStudyConfig,
    answer,
    approx_rows,
    exact_rows,
    faiss_comparisons,
    render,
)
from jaxemb import search_fair

QUERIES = 100


def _st(t):
    return {"min_s": 0.9 * t, "median_s": t, "max_s": 1.1 * t, "queries_per_s": QUERIES / t,
            "times_s": [0.9 * t, t, 1.1 * t]}


def _method(t, latency, kernel="XLA (own kernels)"):
    return {"batch": _st(t), "latency": None if latency is None else _st(latency),
            "build_s": 0.1, "warmup_s": 2 * t, "kernel": kernel}


def _size(size, medians, agree=True):
    methods = {m: _method(t, lat, "OpenBLAS 0.3.15 SkylakeX" if m == "faiss" else
                          "XLA (own kernels)") for m, (t, lat) in medians.items()}
    checks = [{"method": m, "ok": agree if m == "jaxemb" else True, "max_score_diff": 0.0,
               "identical_rows": QUERIES, "rows": QUERIES, "distinct": True}
              for m in medians if m != "numpy"]
    return {"size": size, "methods": methods, "agreement": checks,
            "agree": all(c["ok"] for c in checks)}


def _ivf(exact, per_probe, build=1.0):
    return {"exact": {**_st(exact), "warmup_s": exact}, "build_s": build,
            "lists": {"largest": 9, "mean": 5.0, "empty": 0},
            "ivf": {p: {**_st(t), "warmup_s": t, "recall": rec}
                    for p, (t, rec) in per_probe.items()}}


# jaxemb ahead everywhere; IVF recall high; dot's recall a little below cosine's.
JAXEMB_AHEAD = {
    "exact": {"jaxemb": (0.1, 0.002), "jaxemb fp32 scan": (0.2, 0.003), "faiss": (0.25, 0.004),
              "numpy": (0.4, 0.005)},
    "ivf": {"jaxemb": {"cosine": _ivf(0.1, {"1": (0.01, 0.95), "8": (0.02, 0.99)}),
                       "dot": _ivf(0.1, {"1": (0.01, 0.93), "8": (0.02, 0.98)})},
            "faiss": {"cosine": _ivf(0.25, {"1": (0.02, 0.95), "8": (0.04, 0.99)}),
                      "dot": _ivf(0.25, {"1": (0.02, 0.93), "8": (0.04, 0.98)})}},
}
# The opposite: FAISS ahead everywhere, the bf16 pass slower than the fp32 scan, IVF recall low
# and dot's recall above cosine's.
FAISS_AHEAD = {
    "exact": {"jaxemb": (0.4, 0.02), "jaxemb fp32 scan": (0.2, 0.01), "faiss": (0.1, 0.001),
              "numpy": (0.3, 0.005)},
    "ivf": {"jaxemb": {"cosine": _ivf(0.4, {"1": (0.05, 0.40), "8": (0.1, 0.60)}),
                       "dot": _ivf(0.4, {"1": (0.05, 0.50), "8": (0.1, 0.70)})},
            "faiss": {"cosine": _ivf(0.1, {"1": (0.01, 0.41), "8": (0.02, 0.61)}),
                      "dot": _ivf(0.1, {"1": (0.01, 0.52), "8": (0.02, 0.72)})}},
}


def _results(case=JAXEMB_AHEAD, agree=True, load=0.5, approx=True):
    small = {m: (t / 4, lat) for m, (t, lat) in case["exact"].items()}
    return Results(
        queries=QUERIES, dim=8, k=10, repeats=3, seed=0,
        kernels={"numpy": {"coretype": "SkylakeX", "probes": {
                     "SkylakeX": {"seconds": 0.04, "ran": "OpenBLAS 0.3.31 SkylakeX"},
                     "None": {"seconds": 0.05, "ran": "OpenBLAS 0.3.31 Haswell"}}},
                 "faiss": {"coretype": "SkylakeX", "probes": {
                     "SkylakeX": {"seconds": 0.05, "ran": "OpenBLAS 0.3.15 SkylakeX"},
                     "None": {"seconds": 0.2, "ran": "OpenBLAS 0.3.15 Barcelona"}}}},
        roofline={"n": 512, "numpy_gflop_s": 300.0, "jax_gflop_s": 250.0,
                  "kernel": "OpenBLAS 0.3.31 SkylakeX"},
        versions={"numpy": "2.4.6", "jax": "0.10.2", "faiss": "1.15.1"},
        per_size=[_size(1000, small), _size(4000, case["exact"], agree)],
        approx=None if not approx else {
            "rows": 3000, "noise": 1.0, "nlist": 16, "nprobes": [1, 8], "iters": 10,
            "truth_agreement": [{"score": s, "method": "jaxemb", "ok": True,
                                 "max_score_diff": 0.0, "identical_rows": QUERIES,
                                 "rows": QUERIES, "distinct": True} for s in ("cosine", "dot")],
            "libraries": case["ivf"]},
        load={"cores": 2, "start": load, "end": load})


def test_answer_when_jaxemb_is_ahead():
    words = answer(_results())
    assert words.startswith("**Answer (measured in this run).** Exact top-10 cosine search of "
                            "100 queries in 4,000 random Gaussian rows, each method in its own "
                            "process: jaxemb ran at 1,000 queries/s (median of 3 batches), FAISS "
                            "IndexFlatIP (OpenBLAS 0.3.15 SkylakeX) at 400: jaxemb at 2.50× "
                            "FAISS's speed; numpy 250 queries/s.")
    # 2 * 100 * 4000 * 8 / 0.1 s = 64 MFLOP/s, far below the roofline
    assert "That is 0 GFLOP/s of fp32-equivalent scoring against a measured fp32 roofline of " \
           "300 GFLOP/s (numpy sgemm, OpenBLAS 0.3.31 SkylakeX; JAX 250). " in words
    assert "more than a full fp32 scan" not in words
    assert "plain fp32 scan ran at 500 queries/s, so its bfloat16 first pass changed the speed " \
           "by a factor 2.00. " in words
    assert "One query at a time (median latency): jaxemb 2.0 ms, jaxemb fp32 scan 3.0 ms, " \
           "faiss 4.0 ms, numpy 5.0 ms." in words
    assert "Every exact method returned numpy's neighbours" in words
    assert "cosine: exact 1,000 queries/s; nprobe 1: recall@10 0.950 at 10.0× the exact speed; " \
           "nprobe 8: recall@10 0.990 at 5.0× the exact speed" in words
    assert "dot (MIPS map): exact 1,000 queries/s" in words
    assert "itself checked against numpy" in words
    assert "Dot's recall was 0.010 to 0.020 lower than cosine's at the same nprobe." in words
    assert "FAISS was not faster than jaxemb in any setting measured. jaxemb was faster for " \
           "exact batch, 1,000 rows (2.50×);" in words
    assert "IVF dot, nprobe 8 (2.00×)." in words
    assert "Other work shared the machine" not in words
    assert "**Background (not measured here).**" in words


def test_the_words_flip_when_faiss_is_ahead_and_recall_is_low():
    words = answer(_results(FAISS_AHEAD, load=3.4))
    assert "jaxemb at 0.25× FAISS's speed" in words
    assert "first pass changed the speed by a factor 0.50. " in words
    assert "nprobe 1: recall@10 0.400 at 8.0× the exact speed" in words
    assert "Dot's recall was 0.100 to 0.100 higher than cosine's" in words
    assert ("FAISS was the faster tool for exact batch, 1,000 rows (4.00×); one query at a time, "
            "1,000 rows (20.00×); exact batch, 4,000 rows (4.00×)") in words
    assert "IVF cosine, nprobe 1 (5.00×, recall 0.410 vs jaxemb's 0.400)" in words
    assert "(medians; FAISS's speed over jaxemb's)" in words
    assert "not faster than jaxemb" not in words and "jaxemb was faster for" not in words
    assert words.startswith("**Answer (measured in this run).** Other work shared the machine "
                            "during this run (1-minute load average 3.4 at the start and 3.4 at "
                            "the end, on 2 usable cores)")


def test_overlapping_batches_and_a_mismatch_are_said():
    case = {"exact": {"jaxemb": (0.1, None), "faiss": (0.105, None), "numpy": (0.4, None)},
            "ivf": {}}
    words = answer(_results(case, agree=False, approx=False))
    assert "their fastest and slowest batches overlap, so this run does not order them" in words
    assert "**Some method did not return numpy's neighbours**" in words
    assert "One query at a time" not in words and "Approximate search" not in words


def test_without_faiss_the_answer_says_so():
    case = {"exact": {"jaxemb": (0.1, 0.002), "numpy": (0.4, 0.005)},
            "ivf": {"jaxemb": JAXEMB_AHEAD["ivf"]["jaxemb"]}}
    r = _results(case)
    assert faiss_comparisons(r) == []
    words = answer(r)
    assert "FAISS is not installed here (`pip install faiss-cpu`)" in words
    assert [row[-1] for row in exact_rows(r)] == ["—"] * 4


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_render_writes_the_tables_agreement_figure_and_answer(tmp_path):
    r = _results()
    run = Run(tmp_path, SearchStudyConfig())
    render(r, run)
    run.close()
    recs = _records(tmp_path)
    assert [x["section"] for x in recs] == ["q6_search", "q6_agreement", "q6_approx",
                                             "q6_truth_agreement", "figure"]
    table = recs[0]
    assert table["header"][:4] == ["rows", "method", "kernel", "median s"]
    assert [row[:2] for row in table["rows"]] == [
        [s, m] for s in ("1,000", "4,000") for m in ("jaxemb", "jaxemb fp32 scan", "faiss",
                                                     "numpy")]
    faiss_row = table["rows"][6]
    assert faiss_row[2] == "OpenBLAS 0.3.15 SkylakeX" and faiss_row[-1] == 1.0
    assert table["rows"][4][-1] == pytest.approx(2.5) and table["rows"][4][-2] == \
        pytest.approx(2.0)
    assert recs[1]["all_agree"] is True and len(recs[1]["checks"]) == 6
    approx = recs[2]
    assert [row[:3] for row in approx["rows"][:3]] == [
        ["cosine", "jaxemb", "exact"], ["cosine", "jaxemb", "IVF nprobe 1"],
        ["cosine", "jaxemb", "IVF nprobe 8"]]
    assert approx["rows"][1][3] == 0.95 and approx["rows"][1][8] == pytest.approx(10.0)
    assert approx_rows(r) == [tuple(row) for row in approx["rows"]]
    assert (tmp_path / recs[4]["file"]).stat().st_size > 0
    text = "\n".join(run.sections)
    assert text.startswith("## Q6.") and "**all agree**" in text and answer(r) in text
    assert "faiss: SkylakeX 50 ms (OpenBLAS 0.3.15 SkylakeX), None 200 ms (OpenBLAS 0.3.15 " \
           "Barcelona) → SkylakeX" in text
    assert "faiss 1.15.1, jax 0.10.2, numpy 2.4.6" in text


def test_render_flags_a_mismatch_and_needs_no_approximate_part(tmp_path):
    run = Run(tmp_path, SearchStudyConfig())
    render(_results(agree=False, approx=False), run)
    run.close()
    recs = _records(tmp_path)
    assert [x["section"] for x in recs] == ["q6_search", "q6_agreement", "figure"]
    assert recs[1]["all_agree"] is False
    assert "**MISMATCH**" in "\n".join(run.sections)


def test_results_round_trip_through_results_json(tmp_path):
    r = _results()
    assert Results.from_json(r.to_json()) == r
    results_io.save(tmp_path, {"q6": r})
    assert Results.from_json(results_io.load(tmp_path)["q6"]) == r


def test_config():
    assert PART == "search"
    quick = SearchStudyConfig(quick=True).resolved()
    assert (quick.sizes, quick.queries, quick.repeats, quick.approx_rows,
            quick.approx_scores) == ((20_000,), 200, 2, 20_000, ("cosine",))
    SearchStudyConfig().validate()
    quick.validate()
    for kw, match in [({"sizes": (5,), "k": 6}, "--k"), ({"queries": 0}, "--queries"),
                      ({"methods": ("faiss",)}, "--methods"), ({"methods": ("jaxemb", "x")},
                                                              "--methods"),
                      ({"nprobes": (300,)}, "--nprobes"), ({"nlist": 5}, "--nlist"),
                      ({"latency": -1}, "--latency"),
                      ({"approx_scores": ("cosine", "l2")}, "--approx-scores")]:
        with pytest.raises(ValueError, match=match):
            SearchStudyConfig(**kw).validate()
    SearchStudyConfig(approx_rows=0, nlist=5).validate()  # no approximate part: nlist unused


def test_a_child_process_runs_one_method_on_the_kernel_it_is_given():
    """One numpy child (no JAX import: about a second): two sizes in one process, the roofline
    of its library, the BLAS kernel it ran and the versions; the parent's environment is left
    alone."""
    before = os.environ.get("OPENBLAS_CORETYPE")
    want = search_fair.openblas_coretype_candidates()[0]
    task = {"task": "method", "method": "numpy", "sizes": [300, 500], "queries": 7, "dim": 8,
            "k": 3, "repeats": 2, "seed": 1, "latency": 2, "roofline": 64}
    r = search_fair.run_task(task, want)
    assert os.environ.get("OPENBLAS_CORETYPE") == before
    assert [len(s["indices"]) for s in r["sizes"]] == [7, 7]
    assert all(len(s["batch"]["times_s"]) == 2 and len(s["latency"]["times_s"]) == 2
               for s in r["sizes"])
    assert set(r["roofline"]) == {"n", "numpy_gflop_s"} and r["roofline"]["numpy_gflop_s"] > 0
    assert "numpy" in r["versions"] and "jax" not in r["versions"]
    kernel = search_fair.kernel_of("numpy", r["blas"])
    if want is not None and r["blas"]:
        assert kernel.endswith(want)
    with pytest.raises(RuntimeError, match="unknown task"):
        search_fair.run_task({"task": "nothing"}, None)
