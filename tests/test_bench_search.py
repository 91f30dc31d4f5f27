"""The search benchmark runs end to end at a tiny size (in a subprocess: it tunes malloc)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("faiss")


def test_bench_search_smoke(tmp_path):
    path = tmp_path / "s.json"
    cmd = [sys.executable, "-m", "experiments.bench_search", "--sizes", "3000", "--queries", "40",
           "--dim", "16", "--repeats", "1", "--json", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "speed ratio jaxemb/faiss" in done.stdout
    assert "all methods agree (ties allowed): yes" in done.stdout
    assert path.stat().st_size > 0 and json.loads(path.read_text())
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "exist" in (again.stderr + again.stdout)
