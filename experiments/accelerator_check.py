"""SGNS, search and attention on whatever backend JAX finds, at accelerator sizes on a GPU or
TPU and at small sizes on a CPU, with the branch each benchmark chose and the device name.

    python -m experiments.accelerator_check --json /tmp/accel.json            # sizes by backend
    python -m experiments.accelerator_check --json /tmp/accel.json --tests    # + the test suite
    python -m experiments.accelerator_check --size small                      # force small sizes

Accelerator sizes (GPU/TPU): SGNS on a generated Zipf corpus of text8's size (17M tokens,
71k words, 1 epoch, blocks of 4096 centres over every device); exact top-10 search of 1,000
queries in 10M × 300 random rows; attention forward + backward at T = 1k, 4k and 16k (bf16,
cuDNN's fused kernel on a GPU, XLA elsewhere; a cuDNN failure falls back to XLA and is noted).
Small sizes (CPU): 10k tokens, 5k × 32 rows, T = 32 and 64, float32, XLA — seconds, for CI.
Every figure is written with the backend and device name; nothing here is measured on a GPU
until someone runs it on one.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from typing import Literal

import numpy as np
import tyro

from experiments.benchkit import check_json_path, write_json_atomically

SIZES = {
    "accelerator": {"sgns_tokens": 17_000_000, "sgns_vocab": 71_000, "micro_batch": 4096,
                    "search_rows": 10_000_000, "search_dim": 300, "queries": 1000,
                    "attention_T": (1024, 4096, 16384), "dtype": "bfloat16"},
    "small": {"sgns_tokens": 10_000, "sgns_vocab": 300, "micro_batch": 512,
              "search_rows": 5_000, "search_dim": 32, "queries": 16,
              "attention_T": (32, 64), "dtype": "float32"},
}


@dataclasses.dataclass(frozen=True)
class Args:
    """Accelerator readiness check: SGNS, search and attention, with the branch each chose."""

    json: str | None = None
    """Write every figure here (refuses to overwrite an existing file)."""
    size: Literal["auto", "small", "accelerator"] = "auto"
    """'auto': accelerator sizes on a GPU or TPU, small on a CPU."""
    tests: bool = False
    """Also run the test suite (pytest -q) and record its outcome."""
    seed: int = 0


def choose_branches(backend: str, size: str = "auto") -> dict:
    """What each benchmark runs on ``backend`` ('cpu', 'gpu', 'tpu'): sizes and attention path."""
    accel = backend in ("gpu", "tpu")
    sizes = ("accelerator" if accel else "small") if size == "auto" else size
    return {"sizes": sizes, "attention": "cudnn" if backend == "gpu" else "xla",
            "sgns_devices": "all" if accel else 1}


def zipf_corpus(n_tokens: int, vocab: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """int32 documents of 10,000 tokens drawn from Zipf(1) over ``vocab`` words, and counts."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    tokens = rng.choice(vocab, n_tokens, p=p / p.sum()).astype(np.int32)
    counts = np.maximum(np.bincount(tokens, minlength=vocab), 1)
    return np.array_split(tokens, max(n_tokens // 10_000, 1)), counts


def bench_sgns(sz: dict, branches: dict, seed: int) -> dict:
    from jaxemb import sgns, train

    docs, counts = zipf_corpus(sz["sgns_tokens"], sz["sgns_vocab"], seed)
    cfg = sgns.SGNSConfig(micro_batch=sz["micro_batch"])
    tcfg = train.TrainConfig(epochs=1, seeds=(seed,),
                             devices=0 if branches["sgns_devices"] == "all" else 1)
    res = train.train(docs, counts, cfg, tcfg, progress=False)
    return {"tokens": sz["sgns_tokens"], "vocab": sz["sgns_vocab"],
            "micro_batch": cfg.micro_batch, "devices": tcfg.devices,
            "seconds": res.seconds, "compile_seconds": res.compile_seconds,
            "effective_words_per_s": res.effective_words / res.seconds,
            "final_loss": float(res.epoch_loss[-1, 0])}


def bench_search(sz: dict, seed: int) -> dict:
    import jax

    from jaxemb import search

    kd, kq = jax.random.split(jax.random.key(seed))
    D = jax.random.normal(kd, (sz["search_rows"], sz["search_dim"]))
    Q = jax.random.normal(kq, (sz["queries"], sz["search_dim"]))
    idx = search.index(D, "dot")
    t = time.perf_counter()
    jax.block_until_ready(idx.search(Q, 10))  # compile + first run
    first = time.perf_counter() - t
    t = time.perf_counter()
    scores, ids = jax.block_until_ready(idx.search(Q, 10))
    seconds = time.perf_counter() - t
    # the best row of query 0 checked against a plain matmul
    exact = int(np.argmax(np.asarray(D @ Q[0])))
    return {"rows": sz["search_rows"], "dim": sz["search_dim"], "queries": sz["queries"],
            "first_call_seconds": first, "seconds": seconds,
            "queries_per_s": sz["queries"] / seconds,
            "top1_matches_matmul": exact == int(ids[0, 0])}


def bench_attention(sz: dict, branches: dict, seed: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxemb.attention import MultiHeadAttention

    dtype = jnp.dtype(sz["dtype"])
    out = []
    for T in sz["attention_T"]:
        impl, note = branches["attention"], None
        x = jax.random.normal(jax.random.key(seed + T), (1, T, 512), dtype)
        for attempt in (impl, "xla"):
            m = MultiHeadAttention(num_heads=8, score="scaled_dot", implementation=attempt,
                                   dtype=dtype)
            params = m.init(jax.random.key(seed), x[:, :8])
            grad = jax.jit(jax.grad(lambda p, x, m=m: m.apply(p, x, causal=True)
                                    .astype(jnp.float32).sum()))
            try:
                jax.block_until_ready(grad(params, x))
                impl = attempt
                break
            except Exception as e:  # noqa: BLE001 — cuDNN's errors vary by version
                note = f"{attempt} failed ({type(e).__name__}: {str(e)[:120]}); xla"
        t = time.perf_counter()
        jax.block_until_ready(grad(params, x))
        out.append({"T": T, "implementation": impl, "note": note, "dtype": sz["dtype"],
                    "ms": 1e3 * (time.perf_counter() - t)})
    return {"lengths": out}


def run_tests() -> dict:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests"], capture_output=True,
                       text=True)
    return {"returncode": p.returncode, "seconds": time.perf_counter() - t,
            "tail": p.stdout.strip().splitlines()[-1:] if p.stdout else []}


def main(a: Args) -> dict:
    try:
        check_json_path(a.json)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    import jax

    backend, dev = jax.default_backend(), jax.devices()[0]
    branches = choose_branches(backend, a.size)
    sz = SIZES[branches["sizes"]]
    result = {"backend": backend, "device": dev.device_kind, "device_count": jax.device_count(),
              "jax": jax.__version__, "branches": branches, "sizes": sz}
    print(f"{backend}: {jax.device_count()} × {dev.device_kind}; sizes {branches['sizes']}, "
          f"attention {branches['attention']}", flush=True)
    t0 = time.perf_counter()
    result["sgns"] = bench_sgns(sz, branches, a.seed)
    print(f"sgns: {result['sgns']['effective_words_per_s']:,.0f} effective words/s", flush=True)
    result["search"] = bench_search(sz, a.seed)
    print(f"search: {result['search']['queries_per_s']:,.0f} queries/s over "
          f"{sz['search_rows']:,} × {sz['search_dim']}", flush=True)
    result["attention"] = bench_attention(sz, branches, a.seed)
    for r in result["attention"]["lengths"]:
        print(f"attention T={r['T']}: {r['ms']:.1f} ms ({r['implementation']})", flush=True)
    if a.tests:
        result["tests"] = run_tests()
        print(f"tests: rc {result['tests']['returncode']}", flush=True)
    result["total_seconds"] = time.perf_counter() - t0
    if a.json:
        write_json_atomically(a.json, result)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args, prog="python -m experiments.accelerator_check", description=__doc__))
