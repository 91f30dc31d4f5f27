"""The accelerator check picks each benchmark's branch from the backend, and runs end to end at
small sizes on a CPU, writing every figure with the device name."""

import json

import jax
import numpy as np
import pytest

from experiments import accelerator_check as ac


@pytest.mark.parametrize("backend,sizes,attention,devices", [
    ("cpu", "small", "xla", 1), ("gpu", "accelerator", "cudnn", "all"),
    ("tpu", "accelerator", "xla", "all")])
def test_branches_follow_the_backend(backend, sizes, attention, devices):
    assert ac.choose_branches(backend) == {"sizes": sizes, "attention": attention,
                                           "sgns_devices": devices}
    assert ac.choose_branches(backend, "small")["sizes"] == "small"  # forced


def test_zipf_corpus_has_the_asked_size_and_skew():
    docs, counts = ac.zipf_corpus(25_000, 100, seed=0)
    assert sum(map(len, docs)) == 25_000 and len(docs) == 2
    assert counts.sum() == 25_000 and counts.shape == (100,)
    # Zipf(1): word 0 about twice as frequent as word 1, ten times word 9
    assert 1.7 < counts[0] / counts[1] < 2.3 and 7 < counts[0] / counts[9] < 13


def test_accelerator_check_runs_small_on_cpu(tmp_path):
    assert jax.default_backend() == "cpu"
    path = tmp_path / "accel.json"
    out = ac.main(ac.Args(json=str(path)))
    saved = json.loads(path.read_text())
    assert saved["backend"] == "cpu" and saved["device"] == jax.devices()[0].device_kind
    assert saved["branches"]["sizes"] == "small" and saved["sizes"] == ac.SIZES["small"] | {
        "attention_T": list(ac.SIZES["small"]["attention_T"])}
    assert saved["sgns"]["effective_words_per_s"] > 0 and np.isfinite(saved["sgns"]["final_loss"])
    assert saved["search"]["top1_matches_matmul"] and saved["search"]["queries_per_s"] > 0
    assert [r["T"] for r in saved["attention"]["lengths"]] == [32, 64]
    assert all(r["implementation"] == "xla" and r["note"] is None
               for r in saved["attention"]["lengths"])
    assert out["sgns"] == saved["sgns"]
