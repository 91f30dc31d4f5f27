"""The attention benchmark runs end to end at a tiny size; its JSON holds what it claims."""

import json
import statistics

import pytest

from experiments import bench_attention

SCORES = ["scaled_dot", "neg_sq_euclidean"]


def test_bench_attention_smoke(tmp_path, capsys):
    path = tmp_path / "a.json"
    argv = ["--lengths", "16", "24", "--repeats", "3", "--width", "12", "--heads", "3",
            "--batch", "2", "--scores", "neg_sq_euclidean", "--json", str(path)]
    assert bench_attention.main(argv) == 0
    out = capsys.readouterr().out
    assert "ratio = median time" in out and "not measured" in out
    data = json.loads(path.read_text())
    assert set(data) == {"command", "config", "environment", "results", "target",
                         "load_average_end", "output"}
    assert data["command"][-len(argv):] == argv
    assert data["config"] == {"lengths": [16, 24], "repeats": 3, "width": 12, "heads": 3,
                              "batch": 2, "scores": SCORES, "implementation": None,
                              "dtype": "float32", "causal": True, "seed": 0, "json": str(path)}
    for key in ("jax", "flax", "devices", "backend", "processor", "jaxlib"):
        assert key in data["environment"]
    assert [r["T"] for r in data["results"]] == [16, 24]
    for res in data["results"]:
        assert list(res["scores"]) == SCORES  # the baseline is always included, first
        base = res["scores"]["scaled_dot"]["median_s"]
        for s, st in res["scores"].items():
            assert len(st["times_s"]) == 3 and all(t > 0 for t in st["times_s"])
            assert st["median_s"] == statistics.median(st["times_s"])
            assert st["min_s"] == min(st["times_s"]) and st["max_s"] == max(st["times_s"])
            assert st["compile_s"] > 0 and st["first_run_s"] > 0
            assert res["ratios"][s] == pytest.approx(st["median_s"] / base, rel=1e-12)
            assert st["implementation"] == "default (xla)"
            assert res["flop_ratios"][s] is None or res["flop_ratios"][s] > 0
        assert res["ratios"]["scaled_dot"] == 1.0
    assert data["target"] == {"T": 1024, "max_ratio": 1.15, "measured": False, "met": None,
                              "all_met": None}
    with pytest.raises(SystemExit, match="refusing to overwrite"):  # never overwrites
        bench_attention.main(argv)


def test_target_verdict_is_computed_from_the_ratios():
    results = [{"T": 256, "ratios": {"scaled_dot": 1.0, "cosine": 3.0}},
               {"T": 1024, "ratios": {"scaled_dot": 1.0, "cosine": 1.149, "raw": 1.151}}]
    v = bench_attention.target_verdict(results)
    assert v["measured"] and v["met"] == {"scaled_dot": True, "cosine": True, "raw": False}
    assert v["all_met"] is False
    results[1]["ratios"]["raw"] = 0.9
    assert bench_attention.target_verdict(results)["all_met"] is True


def test_baseline_first_and_each_score_once():
    a = bench_attention.parse_args(["--scores", "cosine", "scaled_dot", "cosine"])
    assert a.scores == ("scaled_dot", "cosine")


@pytest.mark.parametrize("argv, match", [
    (["--heads", "5"], "must divide --width"),
    (["--lengths", "0"], "must be positive"),
])
def test_bad_arguments(argv, match):
    with pytest.raises(SystemExit, match=match):
        bench_attention.parse_args(argv)


def test_unknown_score_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_attention.parse_args(["--scores", "cosin"])
    assert "invalid choice 'cosin'" in capsys.readouterr().err.lower()
