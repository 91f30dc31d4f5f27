"""Streamed corpora: the same documents, vocabulary and device corpus as the in-memory path
(corpus.read_text_file → build_vocabulary → encode → sgns.device_corpus) at any chunk size,
with host memory bounded by a chunk; a corpus directory is reused, never overwritten, and
checked when opened; bad files give a StreamError naming the file."""

import dataclasses
import errno
import json
import os
import re
import tracemalloc

import jax
import numpy as np
import pytest

from experiments import bench_stream
from jaxemb import corpus, sgns, stream, train
from jaxemb.sgns import SGNSConfig
from jaxemb.stream import StreamError

# Lines ending in each of str.splitlines' boundaries (\r\n split across chunks too), blank
# lines, digits and underscores (not tokens), multi-byte UTF-8 (a chunk may end inside one),
# Greek capitals whose lowercase depends on the next letter (final sigma), a line with no
# in-vocabulary word (its document is dropped), and a long line (cut at doc_len).
TRICKY = ("The cat sat on the mat.\r\n"
          "ΟΔΟΣ ΟΔΟΣ. the dog\rdog_2 cat9dog x1y\n\n\n"
          "Ünïcödé wörds: café naïve café 中文 字 the cat\x0bthe\x0cdog\x1ccat\x1d"
          "mat\x1eon\x85the\u2028cat\u2029dog  \t the\n"
          "zzzz qqqq\n"
          + "the cat sat on the mat " * 9 + "dog\n"
          "   \n"
          "last line without a newline: the cat")


@pytest.fixture
def tricky(tmp_path):
    path = tmp_path / "tricky.txt"
    path.write_bytes(TRICKY.encode())
    return path


def _cut(docs, n):
    return [d[i:i + n] for d in docs for i in range(0, len(d), n)]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 13, 1 << 20])
def test_streamed_documents_equal_read_text_file(tricky, chunk_bytes):
    expected = corpus.read_text_file(tricky)
    assert len(expected) == 15 and expected[1][:2] == ["οδος", "οδος"]  # final sigma: ς
    got = list(stream.iter_documents(tricky, doc_len=None, chunk_bytes=chunk_bytes))
    assert got == expected
    for n in (1, 4, 9):  # long lines become consecutive documents of n tokens
        assert list(stream.iter_documents(tricky, doc_len=n, chunk_bytes=chunk_bytes)) == \
            _cut(expected, n)
    upper = list(stream.iter_documents(tricky, lowercase=False, doc_len=None,
                                       chunk_bytes=chunk_bytes))
    assert upper == corpus.read_text_file(tricky, lowercase=False)


def test_a_text8_like_single_line_is_cut_every_doc_len_tokens(tmp_path):
    words = [f"w{'a' * (i % 7)}" for i in range(2500)]  # 'w', 'wa', ... no digits
    path = tmp_path / "one-line.txt"
    path.write_text(" ".join(words))  # one line, no newline, as text8
    docs = list(stream.iter_documents(path, doc_len=1000, chunk_bytes=777))
    assert [len(d) for d in docs] == [1000, 1000, 500]
    assert sum(docs, []) == words


@pytest.mark.parametrize("min_count,max_vocab,doc_len,chunk_bytes,chunk_tokens",
                         [(1, None, None, 3, 7), (2, None, 4, 11, 1000), (1, 5, 6, 1 << 20, 13)])
def test_streamed_corpus_equals_the_in_memory_path(tricky, tmp_path, min_count, max_vocab,
                                                   doc_len, chunk_bytes, chunk_tokens):
    c = stream.build_corpus(tricky, tmp_path / "c", min_count=min_count, max_vocab=max_vocab,
                            doc_len=doc_len, chunk_bytes=chunk_bytes)
    docs = corpus.read_text_file(tricky)
    docs = docs if doc_len is None else _cut(docs, doc_len)
    vocab = corpus.build_vocabulary(docs, min_count=min_count, max_vocab=max_vocab)
    assert c.vocab.words == vocab.words  # same order: count, then first seen
    np.testing.assert_array_equal(c.vocab.counts, vocab.counts)
    encoded = vocab.encode(docs)
    kept = [e for e in encoded if e.size]
    if min_count > 1:
        assert len(kept) < len(encoded)  # "zzzz qqqq" has no in-vocabulary word: dropped
    assert c.n_docs == len(kept) and c.n_tokens == sum(map(len, kept))
    for a, b in zip(c.documents(), kept, strict=True):
        np.testing.assert_array_equal(a, b)
    assert c.info["n_raw_tokens"] == sum(map(len, docs))
    # the device corpus, filled chunk by chunk from the file, equals sgns.device_corpus
    expected = sgns.device_corpus(encoded, vocab.counts, 1e-2)
    got = stream.to_device_corpus(c, 1e-2, chunk_tokens=chunk_tokens)
    for field in ("tokens", "docs", "keep_prob", "neg_cdf"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
        assert getattr(got, field).dtype == getattr(expected, field).dtype


def test_doc_ids_of_any_range_match_a_search_per_token(tricky, tmp_path):
    c = stream.build_corpus(tricky, tmp_path / "c", min_count=1, doc_len=4)
    reference = np.searchsorted(c.doc_starts, np.arange(c.n_tokens), side="right") - 1
    assert reference[-1] == c.n_docs - 1 > 5
    for start in range(c.n_tokens + 1):
        for stop in range(start, c.n_tokens + 1, 3):
            got = c.doc_ids(start, stop)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, reference[start:stop])


def test_training_on_a_streamed_corpus_equals_training_on_documents(tmp_path):
    rng = np.random.default_rng(5)
    lines = [" ".join(f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in
                      rng.zipf(1.3, size=rng.integers(20, 200)) % 300) for _ in range(40)]
    path = tmp_path / "zipf.txt"
    path.write_text("\n".join(lines) + "\n")
    c = stream.build_corpus(path, tmp_path / "c", min_count=2, chunk_bytes=1000)
    cfg = SGNSConfig(dim=8, window=2, negative=3, micro_batch=16, micro_steps=4, neg_group=8,
                     neg_pool=8)
    tcfg = train.TrainConfig(epochs=1, lr=0.05, seeds=(2,))
    from_stream = train.train(stream.to_device_corpus(c, cfg.sample, chunk_tokens=999),
                              c.vocab.counts, cfg, tcfg, progress=False)
    docs = corpus.read_text_file(path)
    vocab = corpus.build_vocabulary(docs, min_count=2)
    from_docs = train.train(vocab.encode(docs), vocab.counts, cfg, tcfg, progress=False)
    jax.tree.map(np.testing.assert_array_equal, from_stream.params, from_docs.params)
    assert from_stream.effective_words == from_docs.effective_words > 0


def test_host_memory_is_bounded_by_a_chunk_not_the_corpus(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    words = np.array([f"w{chr(97 + i % 26)}{chr(97 + i // 26)}x" for i in range(400)])
    path = tmp_path / "big.txt"
    with path.open("w") as f:
        for _ in range(20):
            f.write(" ".join(words[rng.integers(0, 400, 20_000)]) + "\n")
    size = path.stat().st_size  # ~2.4 MB, 400k tokens: ~30 MB as lists of strings
    monkeypatch.setattr(stream, "_FLUSH_TOKENS", 1024)
    tracemalloc.start()
    try:
        c = stream.build_corpus(path, tmp_path / "c", min_count=1, chunk_bytes=4096,
                                doc_len=None)
        _, build_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stream.to_device_corpus(c, 1e-3, chunk_tokens=4096)  # compiles (Python objects)
        tracemalloc.start()
        stream.to_device_corpus(c, 1e-3, chunk_tokens=4096)
        _, fill_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert c.n_tokens == 400_000 and c.n_docs == 20
    # measured: 0.26 MB to build, 0.18 MB to fill (numpy reports its buffers to tracemalloc);
    # the corpus is 1.6 MB as int32 and ~30 MB as lists of strings
    assert build_peak < size / 4, build_peak  # reading the whole file would take 2 MB
    assert fill_peak < c.n_tokens, fill_peak  # a quarter of one int32 copy


def test_prepare_corpus_reuses_a_matching_directory_and_refuses_others(tricky, tmp_path,
                                                                       monkeypatch):
    out = tmp_path / "c"
    first = stream.prepare_corpus(tricky, out, min_count=1)

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(stream, "_pieces", no_tokenising)
    again = stream.prepare_corpus(tricky, out, min_count=1)
    assert again.vocab.words == first.vocab.words
    np.testing.assert_array_equal(again.tokens, first.tokens)
    with pytest.raises(StreamError, match=r"built from another file or with other settings "
                                          r"\(settings\.min_count: 1 there, 2 here\)"):
        stream.prepare_corpus(tricky, out, min_count=2)
    tricky.write_text(TRICKY + " more")
    with pytest.raises(StreamError, match=r"source\.size: \d+ there, \d+ here"):
        stream.prepare_corpus(tricky, out, min_count=1)
    with pytest.raises(StreamError, match=r"corpus directory .* exists; open it with "
                                          r"open_corpus"):
        stream.build_corpus(tricky, out)
    np.testing.assert_array_equal(stream.open_corpus(out).tokens, first.tokens)  # untouched


def test_a_failed_build_leaves_nothing_behind(tricky, tmp_path, monkeypatch):
    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stream, "_encode", full_disk)
    out = tmp_path / "out" / "c"
    out.parent.mkdir()
    with pytest.raises(StreamError, match=rf"cannot write the corpus directory "
                                          rf"'{re.escape(str(out))}': No "
                                          rf"space left on device \(errno {errno.ENOSPC}\)"):
        stream.build_corpus(tricky, out, min_count=1)
    assert list(out.parent.iterdir()) == []  # neither the directory nor its temporary


@pytest.mark.parametrize("content,match", [
    (b"", "the corpus is empty"),
    (b"123 456 __ \n\n", "the corpus is empty"),
    (b"abc\x00def", "is not text"),
    (b"words and \x00 more", "is not text"),
    (b"good words then \xff\xfe bad", "is not UTF-8 text: byte 16 cannot be decoded"),
    (b"a b c a", "no word occurs min_count=5 times"),
])
def test_bad_text_files_are_refused_with_the_reason(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    for chunk_bytes in (4, 1 << 20):
        with pytest.raises(StreamError, match=match) as info:
            stream.build_corpus(path, tmp_path / f"c{chunk_bytes}", chunk_bytes=chunk_bytes)
        assert str(path) in str(info.value)
        assert not (tmp_path / f"c{chunk_bytes}").exists()
    with pytest.raises(StreamError, match="does not exist"):
        stream.build_corpus(tmp_path / "missing.txt", tmp_path / "c")


def test_bad_settings_are_refused(tricky, tmp_path):
    for kwargs, match in [(dict(min_count=0), "min_count must be >= 1"),
                          (dict(max_vocab=0), "max_vocab must be >= 1"),
                          (dict(doc_len=0), "doc_len must be >= 1"),
                          (dict(chunk_bytes=0), "chunk_bytes must be >= 1")]:
        with pytest.raises(StreamError, match=match):
            stream.build_corpus(tricky, tmp_path / "c", **kwargs)
    c = stream.build_corpus(tricky, tmp_path / "c", min_count=1)
    with pytest.raises(StreamError, match="chunk_tokens must be >= 1"):
        stream.to_device_corpus(c, 1e-3, chunk_tokens=0)
    with pytest.raises(StreamError, match="sample must be >= 0"):
        stream.to_device_corpus(c, -1.0)
    assert issubclass(StreamError, ValueError)


def _damage_info(d, **change):
    info = json.loads((d / stream.INFO).read_text())
    (d / stream.INFO).write_text(json.dumps({**info, **change}))


DAMAGE = {
    "no corpus.json": (lambda d: (d / stream.INFO).unlink(), "not a readable corpus directory"),
    "bad json": (lambda d: (d / stream.INFO).write_text("{"), "not a readable corpus"),
    "other format": (lambda d: _damage_info(d, format=99), "format 99"),
    "short tokens": (lambda d: os.truncate(d / stream.TOKENS, 8),
                     r"tokens.i32': expected \d+ bytes .* found 8"),
    "no doc starts": (lambda d: (d / stream.DOC_STARTS).unlink(), "found no file"),
    "vocab mismatch": (lambda d: (d / stream.VOCAB).write_text("the\t3\n"),
                       "1 words with 3 tokens, but corpus.json says"),
    "bad vocab line": (lambda d: (d / stream.VOCAB).write_text("the 3\n"), "line 1: expected"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_corpus_directory_is_refused(tricky, tmp_path, damage):
    d = tmp_path / "c"
    stream.build_corpus(tricky, d, min_count=1)
    fn, match = DAMAGE[damage]
    fn(d)
    with pytest.raises(StreamError, match=match):
        stream.open_corpus(d)


def test_token_ids_outside_the_vocabulary_are_caught_when_filling(tricky, tmp_path):
    c = stream.build_corpus(tricky, tmp_path / "c", min_count=1)
    tokens = np.memmap(tmp_path / "c" / stream.TOKENS, dtype="<i4", mode="r+")
    tokens[3] = len(c.vocab) + 7
    tokens.flush()
    del tokens
    with pytest.raises(StreamError, match=rf"token id {len(c.vocab) + 7} near token 0 is "
                                          r"outside the vocabulary"):
        stream.to_device_corpus(stream.open_corpus(tmp_path / "c"), 1e-3)


# ------------------------------------------------------------------------------ benchmark


def test_generated_text_is_zipfian_with_text8_word_lengths(tmp_path):
    path = tmp_path / "z.txt"
    info = bench_stream.generate_text(path, 60_000, 5000, 1.3, 7.0, seed=1, block=7000)
    text = path.read_text()
    tokens = text.split()
    assert len(tokens) == 60_000 and text.count("\n") == 1  # one line, as text8
    assert abs(len(text) / len(tokens) - bench_stream.TEXT8_CHARS_PER_TOKEN) < 0.5
    vocab = corpus.build_vocabulary([tokens], min_count=1)
    assert all(w.isalpha() and w.islower() for w in vocab.words)
    # rank-frequency slope on log-log axes ≈ -s over the well-sampled ranks
    r = np.arange(20, 200)
    slope = np.polyfit(np.log(r + 7.0), np.log(vocab.counts[r - 1]), 1)[0]
    assert -1.45 < slope < -1.15, slope
    assert info["pad"] >= 0


def test_bench_stream_child_measures_each_phase(tmp_path):
    path = tmp_path / "z.txt"
    bench_stream.generate_text(path, 5000, 500, 1.3, 7.0, seed=0)
    a = dataclasses.replace(bench_stream.Args(), child="asarray", text=str(path), min_count=2)
    out = bench_stream.main(a)
    assert out["path"] == "asarray" and out["n_tokens"] > 0
    assert [p["phase"] for p in out["phases"]][0].startswith("tokenise")
    for p in out["phases"]:
        assert p["seconds"] >= 0 and p["peak_mib"] >= p["rss_before_mib"] > 0
    assert out["ru_maxrss_mib"] >= max(p["peak_mib"] for p in out["phases"]) - 1
    with pytest.raises(SystemExit, match="--paths takes stream, memory, asarray"):
        bench_stream.main(dataclasses.replace(a, child=None, paths=("disk",)))
