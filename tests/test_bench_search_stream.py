"""The streamed-search benchmark end to end at a tiny size (one child process)."""

import json

from experiments import bench_search_stream as B


def test_bench_search_stream_small(tmp_path):
    out = tmp_path / "s.json"
    a = B.Args(rows=3000, dim=8, queries=5, k=4, chunk_rows=700, check_queries=5,
               dir=str(tmp_path), json=str(out))
    r = B.main(a)
    assert r["check"] == {"queries": 5, "max_score_diff": r["check"]["max_score_diff"],
                          "ok": True}
    s = r["search"]
    assert s["peak_rss_mib"] >= s["baseline_rss_mib"] > 0 and s["seconds"] > 0
    assert json.loads(out.read_text())["search"]["queries_per_s"] == s["queries_per_s"]
    assert (tmp_path / "vectors-3000x8-0.npy").stat().st_size == 3000 * 8 * 4 + 128
