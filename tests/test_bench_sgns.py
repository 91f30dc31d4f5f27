"""The SGNS benchmark runs end to end on a small corpus and reports both engines."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

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


def _tiny_corpus_file(path, n_docs=20, doc_len=200, seed=0):
    """Text made of WS353, SimLex and analogy words (so every metric has answered items), drawn
    with a Zipf-like skew; one document per line."""
    from jaxemb import corpus

    words = []
    for name in ("wordsim353.tsv", "simlex999.txt"):
        for line in Path(corpus.gensim_datapath(name)).read_text().splitlines()[1:60]:
            words += line.lower().split("\t")[:2]
    for line in Path(corpus.gensim_datapath("questions-words.txt")).read_text().splitlines()[1:40]:
        words += line.lower().split()
    words = sorted(set(w for w in words if w.isalpha()))
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(words) + 1)
    lines = [" ".join(rng.choice(words, doc_len, p=p / p.sum())) for _ in range(n_docs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bench_sgns_grid_on_a_tiny_corpus(tmp_path, capsys):
    text = _tiny_corpus_file(tmp_path / "tiny.txt")
    path = tmp_path / "grid.json"
    args = bench_sgns.Args(corpus=str(text), seeds=2, min_count=1, grid=True, grid_dims=(8,),
                           grid_windows=(3,), grid_negatives=(2,), grid_epochs=1,
                           json=str(path))
    out = bench_sgns.main(args)
    printed = capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 1000  # the plot, next to the JSON
    # both engines interleaved per seed within the cell (one cell: each costs ~6 s here)
    assert [(r["window"], r["seed"], r["method"]) for r in saved["runs"]] == [
        (3, s, m) for s in (0, 1) for m in ("gensim", "jaxemb")]
    assert [(c["dim"], c["window"], c["negative"]) for c in saved["cells"]] == [(8, 3, 2)]
    for cell in saved["cells"]:
        runs = [r for r in saved["runs"] if r["window"] == cell["window"]]
        g = [r for r in runs if r["method"] == "gensim"]
        j = [r for r in runs if r["method"] == "jaxemb"]
        ratios = [(b["effective_words"] / b["seconds"]) / (a["effective_words"] / a["seconds"])
                  for a, b in zip(g, j, strict=True)]
        assert cell["ratios"] == pytest.approx(ratios)
        assert cell["ratio_median"] == pytest.approx(np.median(ratios))
        for m, scale in (("ws353", 1), ("simlex", 1), ("analogy", 100)):
            # paired over seeds: the t-interval of the per-seed differences jaxemb − gensim
            d = np.array([scale * (b[m] - a[m]) for a, b in zip(g, j, strict=True)])
            assert np.isfinite(d).all()
            half = scipy.stats.t.ppf(0.975, 1) * d.std(ddof=1) / np.sqrt(2)
            assert cell[m] == pytest.approx([d.mean(), half], rel=1e-6, abs=1e-12)
        assert f"×{cell['ratio_median']:5.2f}" in printed
    assert "dim window negative  words/s  ΔWS353 ρ" in printed
    assert out["cells"] == saved["cells"]


def test_a_bad_jaxemb_setting_is_one_line_before_training(tmp_path):
    """--negatives per_pair needs --neg-group 1; a grid cell's window must tile the block:
    both refused before the corpus is read (no such file here)."""
    missing = str(tmp_path / "no-corpus.txt")
    with pytest.raises(SystemExit, match="^error: negatives='per_pair' .* needs neg_group=1"):
        bench_sgns.main(bench_sgns.Args(corpus=missing, negatives="per_pair"))
    with pytest.raises(SystemExit, match="^error: micro_batch \\(24\\) must be a multiple of 16"):
        bench_sgns.main(bench_sgns.Args(corpus=missing, micro_batch=24, neg_group=8, grid=True,
                                        grid_windows=(2, 5)))
