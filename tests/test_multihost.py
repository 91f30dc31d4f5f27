"""Multi-host start: the README's command with two processes on this machine (one CPU device
each, gloo collectives) trains SGNS on a 2-device mesh with the tables split along the
vocabulary, and gives the vectors of a one-process run."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from childenv import one_device_env

from jaxemb import io

pytest.importorskip("gensim")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", "sgns", "--quick", "--out-dir", str(out),
            *extra]


def _env() -> dict:
    return one_device_env(JAX_PLATFORMS="cpu", TQDM_DISABLE="1")  # one device per process


def _evaluation(run_dir: Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {m["vectors"]: m for m in map(json.loads, lines) if m["section"] == "evaluation"}


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    port = _free_port()
    multi = tmp_path / "multi"
    procs = [subprocess.Popen(
        _command(multi, "--devices", "0", "--shard-vocab", "--coordinator", f"localhost:{port}",
                 "--num-processes", "2", "--process-id", str(i)),
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    single = tmp_path / "single"
    one = subprocess.run(_command(single), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stdout + one.stderr
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    (run0,) = list(multi.iterdir())  # one run directory, shared checkpoints
    run1 = run0 / "process-1"  # rank 1's report, metrics and vectors: nothing overwritten
    (run_single,) = list(single.iterdir())
    a = io.load_word2vec(run0 / "vectors-in-seed0.txt")
    b = io.load_word2vec(run_single / "vectors-in-seed0.txt")
    c = io.load_word2vec(run1 / "vectors-in-seed0.txt")
    assert a.words == b.words
    np.testing.assert_array_equal(a.vectors, c.vectors)  # both ranks hold the same result
    # one SGD epoch in float32 on a different device layout: equal up to rounding
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-4)
    ev_multi, ev_single = _evaluation(run0), _evaluation(run_single)
    for kind in ("in", "out", "in+out"):
        assert ev_multi[kind]["ws353"] == pytest.approx(ev_single[kind]["ws353"], abs=0.01)
