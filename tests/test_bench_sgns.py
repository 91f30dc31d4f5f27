"""The SGNS benchmark runs end to end on a small corpus and reports both engines."""

import json

import numpy as np
import pytest

from experiments import bench_sgns
from jaxemb import stats

pytest.importorskip("gensim")


def test_bench_sgns_smoke(tmp_path, capsys):
    path = tmp_path / "b.json"
    args = bench_sgns.Args(corpus="lee", epochs=(1,), seeds=2, dim=16, json=str(path))
    out = bench_sgns.main(args)
    printed = capsys.readouterr().out
    assert "jaxemb/gensim @ 1 epochs: effective words/s ×" in printed
    saved = json.loads(path.read_text())
    assert set(saved) == {"args", "environment", "runs", "summary", "corpus_seconds"}
    assert saved["corpus_seconds"] > 0
    assert saved["args"]["epochs"] == [1] and saved["environment"]["gensim"]
    assert [(r["method"], r["seed"]) for r in saved["runs"]] == [
        ("gensim", 0), ("jaxemb", 0), ("gensim", 1), ("jaxemb", 1)]
    for r in saved["runs"]:
        assert r["effective_words"] > 0 and r["seconds"] > 0 and r["analogy_answered"] > 0
    assert set(saved["summary"]) == {"gensim@1", "jaxemb@1", "ratio@1"}
    for name in ("gensim", "jaxemb"):
        runs = [r for r in saved["runs"] if r["method"] == name]
        s = saved["summary"][f"{name}@1"]
        for m in ("ws353", "simlex", "analogy"):  # mean ± t half-width over the two seeds
            assert s[m] == pytest.approx(list(stats.mean_half_width([r[m] for r in runs])))
        eff = [r["effective_words"] / r["seconds"] for r in runs]
        assert s["eff_wps"] == pytest.approx([min(eff), float(np.median(eff)), max(eff)])
    g, j = saved["summary"]["gensim@1"], saved["summary"]["jaxemb@1"]
    assert out["summary"]["ratio@1"]["eff_wps_median"] == pytest.approx(
        j["eff_wps"][1] / g["eff_wps"][1])
    with pytest.raises(SystemExit, match="refusing to overwrite"):
        bench_sgns.main(args)  # never overwrites
