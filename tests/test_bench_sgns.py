"""The SGNS benchmark runs end to end on a small corpus and reports both engines."""

import json

import pytest

from experiments import bench_sgns

pytest.importorskip("gensim")


def test_bench_sgns_smoke(tmp_path, capsys):
    path = tmp_path / "b.json"
    args = bench_sgns.Args(corpus="lee", epochs=(1,), seeds=1, dim=16, json=str(path))
    out = bench_sgns.main(args)
    printed = capsys.readouterr().out
    assert "jaxemb/gensim @ 1 epochs: effective words/s ×" in printed
    saved = json.loads(path.read_text())
    methods = sorted(r["method"] for r in saved["runs"])
    assert methods == ["gensim", "jaxemb"]
    for r in saved["runs"]:
        assert r["effective_words"] > 0 and r["seconds"] > 0
        assert -1 <= r["ws353"] <= 1 and 0 <= r["analogy"] <= 1
    assert out["summary"]["ratio@1"]["eff_wps_median"] > 0
    with pytest.raises(SystemExit, match="exists"):
        bench_sgns.main(args)  # never overwrites
