"""Peak memory and speed of SGNS on a corpus streamed to disk vs one held in memory.

    python -m experiments.bench_stream                    # 1M tokens: a quick check
    python -m experiments.bench_stream --text8-size --json /tmp/stream.json

Generates a text8-like file (one line of lowercase words drawn from a Zipf–Mandelbrot law over
253,854 types, p(r) ∝ (r + 7)^-1.3: about 69k words reach min_count 5, as text8's 71k; the
top word has 3.8% of the tokens), then runs each path in its own process so that peak RSS is
that path's alone:

- ``stream``: ``jaxemb.stream.build_corpus`` (two streamed passes into an int32 file), then
  ``to_device_corpus`` (filled in chunks from the file), then one epoch of SGNS;
- ``memory``: the same documents as lists of strings (``stream.iter_documents``), then
  ``build_vocabulary``, ``encode`` (a list of int32 arrays), ``sgns.device_corpus``, one epoch;
- ``asarray`` (fill only): the opened corpus put on the device with ``jnp.asarray`` of the whole
  memory map, for comparison with the chunked fill.

Peak RSS per phase is Linux's VmHWM, reset between phases (``/proc/self/clear_refs``); the
process peak is ``getrusage``'s ``ru_maxrss``. Words/s counts training only (after ahead-of-time
compilation), effective = after subsampling. The host is shared: timings are noisy.
``--json PATH`` writes the results to PATH, atomically; an existing file is never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from experiments.benchkit import check_json_path, write_json_atomically

TEXT8_TOKENS, TEXT8_TYPES = 17_005_207, 253_854
TEXT8_CHARS_PER_TOKEN = 100_000_000 / TEXT8_TOKENS  # including the space


@dataclasses.dataclass(frozen=True)
class Args:
    """Streamed vs in-memory corpus: peak RSS and SGNS words/s."""

    tokens: int = 1_000_000
    """Tokens in the generated file (quick default; --text8-size sets text8's 17,005,207)."""
    types: int = 50_000
    """Word types to draw from (--text8-size: 253,854)."""
    text8_size: bool = False
    """Generate a text8-size file: 17,005,207 tokens over 253,854 types, ~100 MB."""
    zipf_s: float = 1.3
    """Exponent s of the Zipf–Mandelbrot law p(r) ∝ (r + q)^-s of the word ranks."""
    zipf_q: float = 7.0
    """Offset q of the Zipf–Mandelbrot law."""
    paths: tuple[Literal["stream", "memory", "asarray"], ...] = ("stream", "memory", "asarray")
    """Which paths to measure (each in its own process)."""
    min_count: int = 5
    """Words rarer than this are dropped from the vocabulary."""
    dim: int = 100
    """SGNS vector dimension."""
    epochs: int = 1
    """SGNS epochs per path."""
    seed: int = 0
    """Seed of the generated text and of training."""
    dir: str | None = None
    """Where the text file and corpus directory go (default: a temporary directory, removed)."""
    json: str | None = None
    """Write the results here (refuses to overwrite an existing file)."""
    child: str | None = None
    """(internal) run one path in this process and print its JSON."""
    text: str | None = None
    """(internal) the text file a child reads."""

    def resolved(self) -> Args:
        if self.text8_size:
            return dataclasses.replace(self, tokens=TEXT8_TOKENS, types=TEXT8_TYPES)
        return self

    def validate(self) -> None:
        if self.tokens < 1 or self.types < 1:
            raise ValueError(f"--tokens and --types must be >= 1, got {self.tokens}, "
                             f"{self.types}")
        if self.zipf_s <= 0 or self.zipf_q < 0:
            raise ValueError(f"need --zipf-s > 0 and --zipf-q >= 0, got {self.zipf_s}, "
                             f"{self.zipf_q}")
        bad = set(self.paths) - {"stream", "memory", "asarray"}
        if bad or not self.paths:
            raise ValueError(f"--paths takes stream, memory, asarray; got {list(self.paths)}")
        if self.epochs < 1 or self.min_count < 1 or self.dim < 1:
            raise ValueError("--epochs, --min-count and --dim must be >= 1")


# ------------------------------------------------------------------------------- the file


def _word(rank: int, pad: int) -> str:
    """A distinct word per rank: rank in base 25 (letters a–y), then ``pad`` letters z."""
    digits = []
    while True:
        rank, d = divmod(rank, 25)
        digits.append(chr(97 + d))
        if rank == 0:
            break
    return "".join(reversed(digits)) + "z" * pad


def generate_text(path: Path, tokens: int, types: int, s: float, q: float, seed: int,
                  block: int = 1 << 20) -> dict:
    """One line of ``tokens`` words with Zipf–Mandelbrot ranks, written a block at a time;
    padded so that a token takes text8's 5.88 characters on average."""
    r = np.arange(1, types + 1, dtype=np.float64)
    p = (r + q) ** -s
    p /= p.sum()
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    core = np.array([len(_word(i, 0)) for i in range(types)])
    pad = max(0, round(TEXT8_CHARS_PER_TOKEN - 1 - float(p @ core)))
    words = [_word(i, pad) for i in range(types)]
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="ascii") as f:
        for a in range(0, tokens, block):
            ids = np.searchsorted(cdf, rng.random(min(block, tokens - a)), side="right")
            f.write((" " if a else "") + " ".join(map(words.__getitem__, ids.tolist())))
        f.write("\n")
    return {"bytes": path.stat().st_size, "tokens": tokens, "types": types, "pad": pad}


# ---------------------------------------------------------------------------- one process


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _Phases:
    def __init__(self):
        self.rows: list[dict] = []
        self.resets = True

    def run(self, name: str, fn):
        self.resets &= _reset_peak()
        rss0 = _status_kib("VmRSS")
        t = time.perf_counter()
        out = fn()
        self.rows.append({"phase": name, "seconds": time.perf_counter() - t,
                          "rss_before_mib": _mib(rss0), "peak_mib": _mib(_status_kib("VmHWM")),
                          "rss_after_mib": _mib(_status_kib("VmRSS"))})
        return out


def _mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def child(a: Args) -> dict:
    import jax

    from jaxemb import corpus, sgns, stream, train

    text = Path(a.text)
    cfg = sgns.SGNSConfig(dim=a.dim)
    tcfg = train.TrainConfig(epochs=a.epochs, seeds=(a.seed,))
    ph = _Phases()
    jax.numpy.zeros(1).block_until_ready()  # the runtime's own memory, before any phase
    base = _mib(_status_kib("VmRSS"))
    if a.child in ("stream", "asarray"):
        out = text.parent / f"corpus-{a.child}"
        shutil.rmtree(out, ignore_errors=True)
        c = ph.run("tokenise (2 streamed passes → int32 file)",
                   lambda: stream.build_corpus(text, out, min_count=a.min_count))
        if a.child == "stream":
            dc = ph.run("fill device (chunked)", lambda: stream.to_device_corpus(c, cfg.sample))
        else:
            def full():
                ids = c.doc_ids(0, c.n_tokens)
                return sgns.DeviceCorpus(jax.numpy.asarray(c.tokens), jax.numpy.asarray(ids),
                                         jax.numpy.asarray(sgns.keep_probability(
                                             c.vocab.counts, cfg.sample), jax.numpy.float32),
                                         jax.numpy.asarray(sgns.negative_cdf(c.vocab.counts),
                                                           jax.numpy.float32))
            dc = ph.run("fill device (jnp.asarray of the memmap)",
                        lambda: jax.block_until_ready(full()))
        counts, n_docs = c.vocab.counts, c.n_docs
    else:
        docs = ph.run("tokenise (lists of strings)",
                      lambda: list(stream.iter_documents(text)))

        def encode():
            vocab = corpus.build_vocabulary(docs, min_count=a.min_count)
            return vocab, vocab.encode(docs)

        vocab, ids = ph.run("vocabulary + encode (list of int32 arrays)", encode)
        counts, n_docs = vocab.counts, len(ids)
        dc = ph.run("fill device (sgns.device_corpus)",
                    lambda: jax.block_until_ready(sgns.device_corpus(ids, counts, cfg.sample)))
    result = {"path": a.child, "baseline_rss_mib": base, "n_tokens": int(dc.n_tokens),
              "n_docs": int(n_docs), "vocab": int(counts.size)}
    if a.child != "asarray":
        res = ph.run("train", lambda: train.train(dc, counts, cfg, tcfg, progress=False))
        result.update(train_seconds=res.seconds, compile_seconds=res.compile_seconds,
                      effective_words_per_s=res.effective_words_per_s,
                      raw_words_per_s=res.raw_words_per_s, final_loss=float(res.epoch_loss[-1, 0]))
    result.update(phases=ph.rows, peak_resets=ph.resets,
                  ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


# --------------------------------------------------------------------------------- driver


def main(a: Args) -> dict:
    a = a.resolved()
    try:
        a.validate()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if a.child:
        return child(a)
    try:
        check_json_path(a.json)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    from experiments.report import environment

    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench_stream-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"args": dataclasses.asdict(a), "environment": environment(), "paths": []}
    try:
        text = work / f"zipf-{a.tokens}-{a.types}-{a.zipf_s}-{a.zipf_q}-{a.seed}.txt"
        if not text.exists():
            t = time.perf_counter()
            tmp = text.with_suffix(".tmp")
            results["file"] = generate_text(tmp, a.tokens, a.types, a.zipf_s, a.zipf_q, a.seed)
            tmp.rename(text)
            print(f"generated {text} in {time.perf_counter() - t:.1f} s", flush=True)
        results["file"] = {"path": str(text), "bytes": text.stat().st_size}
        print(f"{text.stat().st_size / 1e6:.1f} MB, {a.tokens:,} tokens over {a.types:,} types; "
              f"{results['environment']['processor']} × {results['environment']['cpu_count']} "
              "(shared: timings are noisy)", flush=True)
        for path in a.paths:
            cmd = [sys.executable, "-m", "experiments.bench_stream", "--child", path,
                   "--text", str(text), "--min-count", str(a.min_count), "--dim", str(a.dim),
                   "--epochs", str(a.epochs), "--seed", str(a.seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "JAX_PLATFORMS": "cpu"})
            if proc.returncode:
                raise SystemExit(f"error: the {path} path failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results["paths"].append(r)
            _print_path(r)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        write_json_atomically(a.json, results)
    return results


def _print_path(r: dict) -> None:
    print(f"\n{r['path']}: {r['n_tokens']:,} tokens, {r['n_docs']:,} documents, vocabulary "
          f"{r['vocab']:,}; baseline RSS {r['baseline_rss_mib']:.0f} MiB, process peak "
          f"(ru_maxrss) {r['ru_maxrss_mib']:.0f} MiB")
    print(f"  {'phase':45s} {'seconds':>8s} {'peak MiB':>9s} {'RSS after':>10s}")
    for p in r["phases"]:
        print(f"  {p['phase']:45s} {p['seconds']:8.1f} {p['peak_mib']:9.0f} "
              f"{p['rss_after_mib']:10.0f}")
    if "train_seconds" in r:
        print(f"  SGNS: {r['effective_words_per_s']:,.0f} effective words/s, "
              f"{r['raw_words_per_s']:,.0f} raw words/s ({r['train_seconds']:.1f} s, compile "
              f"{r['compile_seconds']:.1f} s)", flush=True)


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m experiments.bench_stream", description=__doc__)
    out = main(args)
    if args.child:
        print(json.dumps(out, default=float))
