"""The search benchmark: its numpy reference and agreement check against brute force, its flags,
and one end-to-end run at a tiny size (in a subprocess: it tunes malloc)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import bench_search
from jaxemb import search_fair, search_timing

ROOT = Path(__file__).resolve().parents[1]


def test_numpy_topk_is_the_brute_force_top_k_across_blocks(monkeypatch):
    monkeypatch.setattr(search_timing, "NUMPY_BLOCK_ROWS", 7)  # several blocks, a ragged last one
    rng = np.random.default_rng(0)
    q = search_timing.normalise(rng.standard_normal((5, 4), dtype=np.float32))
    db = search_timing.normalise(rng.standard_normal((30, 4), dtype=np.float32))
    db[17] = db[3]  # a tie: the lower index must come first
    q[0] = db[3]
    s, i = search_timing.numpy_topk(q, db, 4)
    full = q @ db.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_allclose(s, np.take_along_axis(full, want, axis=1), rtol=1e-6)
    assert i[0, 0] == 3 and i[0, 1] == 17


def test_agreement_allows_ties_but_not_a_worse_row():
    rng = np.random.default_rng(1)
    db = search_timing.normalise(rng.standard_normal((50, 8), dtype=np.float32))
    db[40] = db[2]
    q = db[[2, 5]] + 0.01
    q64 = search_timing.normalise(q).astype(np.float64)
    _, ref = search_timing.numpy_topk(search_timing.normalise(q), db, 3)
    tied = ref.copy()
    tied[0, [0, 1]] = tied[0, [1, 0]]  # rows 2 and 40 have equal scores: still exact
    assert search_timing.check_agreement("x", tied, ref, q64, db)["ok"]
    worse = ref.copy()
    worse[1, 0] = next(j for j in range(50) if j not in ref[1])
    bad = search_timing.check_agreement("x", worse, ref, q64, db)
    assert not bad["ok"] and bad["max_score_diff"] > search_timing.TIE_TOL
    out = ref.copy()
    out[0, 0] = 50
    assert search_timing.check_agreement("x", out, ref, q64, db) == {
        "method": "x", "ok": False, "why": "index out of range"}


@pytest.mark.parametrize("argv, match", [
    (["--sizes", "5", "--k", "6"], "--k must be in"),
    (["--queries", "0"], "must be positive"),
    (["--json", "/nonexistent-dir/x.json"], "does not exist"),
])
def test_bad_arguments(argv, match):
    with pytest.raises(SystemExit, match=match):
        bench_search.main(argv)


@pytest.mark.parametrize("name", ["jaxemb", "jaxemb fp32 scan", "numpy"])
def test_measure_alone_finds_the_top_k(name):
    r = search_timing.measure_alone(name, 500, queries=6, dim=8, k=4, repeats=2, seed=3)
    db, q = search_timing.data(500, 6, 8, 3)
    full = search_timing.normalise(q) @ search_timing.normalise(db).T
    want = np.argsort(-full, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(np.asarray(r["indices"]), want)
    assert len(r["batch"]["times_s"]) == 2
    assert len(r["latency"]["times_s"]) == search_timing.LATENCY_QUERIES


@pytest.mark.slow  # about a dozen processes, each importing JAX
def test_bench_search_smoke(tmp_path):
    """Each method in its own process: timings, latency, kernels and agreement recorded."""
    path = tmp_path / "s.json"
    cmd = [sys.executable, "-m", "experiments.bench_search", "--sizes", "3000", "--queries", "40",
           "--dim", "16", "--repeats", "2", "--methods", "jaxemb", "faiss", "sgemm bound",
           "--probe-rows", "2000", "--roofline-n", "256", "--json", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "all methods agree (ties allowed): yes" in done.stdout
    data = json.loads(path.read_text())
    assert set(data) == {"config", "environment", "kernels", "roofline", "results", "all_agree",
                         "output"}
    assert data["config"]["isolation"] == "process" and data["config"]["sizes"] == [3000]
    assert data["roofline"]["numpy_gflop_s"] > 0 and data["roofline"]["jax_gflop_s"] > 0
    have_faiss = search_timing.load_faiss() is not None
    assert set(data["kernels"]) == ({"numpy", "faiss"} if have_faiss else {"numpy"})
    for lib in data["kernels"].values():  # the first candidate within 5% of the fastest probe
        fastest = min(v["seconds"] for v in lib["probes"].values())
        best = next(c for c, v in lib["probes"].items()
                    if v["seconds"] <= fastest * (1 + search_fair.PROBE_TIE))
        assert str(lib["coretype"]) == best
    if have_faiss:  # PASSIVE only where its probe beat OpenMP's default by more than the tie
        wait = data["kernels"]["faiss"]["wait_policy_probe"]
        passive = wait["PASSIVE"] * (1 + search_fair.PROBE_TIE) < wait["default"]
        assert data["kernels"]["faiss"]["env"] == ({"OMP_WAIT_POLICY": "PASSIVE"} if passive
                                                   else {})
    assert {"fp32_gflop_s", "bf16_gflop_s", "int8_gflop_s"} <= set(data["roofline"]["dot_rates"])
    (res,) = data["results"]
    methods = ["jaxemb"] + ["faiss"] * have_faiss + ["sgemm bound", "numpy"]
    assert list(res["methods"]) == methods
    for name, r in res["methods"].items():
        b = r["batch"]
        assert len(b["times_s"]) == 2 and b["min_s"] <= b["median_s"] <= b["max_s"]
        assert b["queries_per_s"] == pytest.approx(40 / b["median_s"])
        assert (r["latency"] is None) == (name == "sgemm bound")
        assert "indices" not in r and isinstance(r["blas"], list)
    assert [c["method"] for c in res["agreement"]] == ["jaxemb"] + ["faiss"] * have_faiss
    assert all(c["ok"] and c["rows"] == 40 for c in res["agreement"])
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_child_env_sets_variables_for_the_child_only(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    env = search_fair.child_env("SkylakeX", "--xla_cpu_max_isa=AVX2",
                                {"OMP_WAIT_POLICY": "PASSIVE"})
    assert (env["OPENBLAS_CORETYPE"], env["XLA_FLAGS"], env["OMP_WAIT_POLICY"]) == (
        "SkylakeX", "--xla_cpu_max_isa=AVX2", "PASSIVE")
    assert "OPENBLAS_CORETYPE" not in search_fair.child_env(None)
    assert "XLA_FLAGS" not in search_fair.child_env(None)
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell" and "XLA_FLAGS" not in os.environ
    kernels = {"numpy": {"coretype": None}, "faiss": {"coretype": None,
                                                      "env": {"OMP_WAIT_POLICY": "PASSIVE"}}}
    assert search_fair.env_for("faiss", kernels) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert search_fair.env_for("numpy", kernels) == search_fair.env_for("jaxemb", kernels) == {}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_benchmarks_are_leaves():
    """No module of the library or the experiments imports a benchmark script."""
    importers = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p)
                                                  if m.split(".")[-1].startswith("bench_"))
                 for d in ("jaxemb", "experiments") for p in (ROOT / d).rglob("*.py")}
    assert {p: m for p, m in importers.items() if m} == {}
