"""Corpora that do not fit in memory: a text file streamed into an int32 corpus on disk.

``build_corpus(text, out_dir)`` reads the text in chunks of bytes (never the whole file) and
makes two passes: the first counts words into a :class:`jaxemb.corpus.Vocabulary` (the same
words, order and ``min_count`` / ``max_vocab`` rules as ``corpus.build_vocabulary``), the second
encodes every in-vocabulary token into an int32 file. The result is a corpus directory:

- ``tokens.i32``: int32 little-endian [N], the in-vocabulary tokens in order;
- ``doc_starts.i64``: int64 [D + 1], where each document's tokens start (the last entry is N);
- ``vocab.tsv``: ``word<TAB>count`` per line, most frequent first;
- ``corpus.json``: the source file (path, size, mtime), the settings and the sizes.

It appears complete or not at all (built in a temporary sibling, then renamed), and a later run
opens it (:func:`open_corpus`, or :func:`prepare_corpus` which builds only when needed) without
tokenising again. :func:`to_device_corpus` fills the device arrays from the files in bounded
chunks, so the host never holds a full copy.

Tokens are those of ``corpus.tokenize`` (runs of letters, lowercased); documents are lines, as in
``corpus.read_text_file``, and a line of more than ``doc_len`` tokens becomes consecutive
documents of ``doc_len`` tokens (gensim's ``LineSentence`` cut at 10,000; text8 is one line).
Documents without an in-vocabulary token are dropped and the rest numbered consecutively, as
``sgns.device_corpus`` does, so both paths give the same device corpus.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import sgns
from jaxemb.corpus import CorpusError, Vocabulary, build_vocabulary, tokenize

__all__ = ["StreamError", "StreamedCorpus", "build_corpus", "iter_documents", "open_corpus",
           "prepare_corpus", "to_device_corpus"]

FORMAT = 1
TOKENS, DOC_STARTS, VOCAB, INFO = "tokens.i32", "doc_starts.i64", "vocab.tsv", "corpus.json"
CHUNK_BYTES = 1 << 20  # text read per step: ~170k tokens of English, ~10 MB of Python strings
_FLUSH_TOKENS = 1 << 20  # encoded tokens buffered before a write
# The line boundaries of str.splitlines, which corpus.read_text_file uses.
_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_TRAILING_LETTERS = re.compile(r"[^\W\d_]*\Z")
# On ASCII text corpus.tokenize's [^\W\d_]+ matches exactly [A-Za-z]+, which is twice as fast.
_ASCII_LETTERS = re.compile(r"[A-Za-z]+")


class StreamError(CorpusError):
    """A corpus file or corpus directory that cannot be used (message names the path)."""


# ------------------------------------------------------------------------------ tokenising


def _text_chunks(path: Path, chunk_bytes: int) -> Iterator[str]:
    """The file's text in pieces that end at whitespace, so no token is cut and lowercasing
    sees the same context (Greek final sigma) as on the whole text. A run of more than
    ``chunk_bytes`` without whitespace is cut before its trailing letters instead."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry, offset = "", 0
    with path.open("rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            if offset < 65536 and b"\x00" in raw[:65536 - offset]:  # as read_text_file
                raise StreamError(f"corpus file {str(path)!r} is not text (it contains NUL "
                                  "bytes)")
            pending = len(decoder.getstate()[0])
            try:
                text = carry + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise StreamError(f"corpus file {str(path)!r} is not UTF-8 text: byte "
                                  f"{offset - pending + e.start} cannot be decoded") from None
            offset += len(raw)
            if not raw:
                if text:
                    yield text
                return
            cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"), text.rfind("\r")) + 1
            if cut == 0:
                cut = _TRAILING_LETTERS.search(text).start()
            carry = text[cut:]
            if cut:
                yield text[:cut]


def _pieces(path: Path, lowercase: bool, doc_len: int | None,
            chunk_bytes: int) -> Iterator[tuple[list[str], bool]]:
    """(tokens, ends_document) pieces in file order; a document is one or more pieces."""
    in_doc = 0  # raw tokens so far in the current document
    for text in _text_chunks(path, chunk_bytes):
        for line in text.splitlines(keepends=True):
            tokens = tokenize(line, lowercase, _ASCII_LETTERS) if line.isascii() else \
                tokenize(line, lowercase)
            ends = line[-1] in _BREAKS
            i = 0  # tokens[:i] are yielded (an index: re-slicing the rest would be quadratic)
            while doc_len is not None and in_doc + len(tokens) - i >= doc_len:
                room = doc_len - in_doc  # >= 1: a document is closed on reaching doc_len
                yield tokens[i:i + room], True
                i, in_doc = i + room, 0
            tokens = tokens[i:] if i else tokens
            in_doc = 0 if ends else in_doc + len(tokens)
            if tokens or ends:
                yield tokens, ends


def iter_documents(path: str | Path, lowercase: bool = True, doc_len: int | None = 10_000,
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """Tokenised documents of a text file, streamed; blank ones dropped.

    With ``doc_len=None`` they equal ``corpus.read_text_file(path, lowercase)``.
    """
    path = _text_file(path)
    doc: list[str] = []
    for tokens, ends in _pieces(path, lowercase, doc_len, chunk_bytes):
        doc += tokens
        if ends and doc:
            yield doc
            doc = []
    if doc:
        yield doc


def _text_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise StreamError(f"corpus file {str(path)!r} does not exist")
    return path


# ------------------------------------------------------------------------- corpus directory


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedCorpus:
    """An opened corpus directory: ``tokens`` int32 [N] and ``doc_starts`` int64 [D + 1]
    (read-only memory maps), the vocabulary and ``info`` (``corpus.json``)."""

    path: Path
    vocab: Vocabulary
    tokens: np.ndarray
    doc_starts: np.ndarray
    info: dict

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_docs(self) -> int:
        return int(self.doc_starts.shape[0]) - 1

    def doc_ids(self, start: int, stop: int) -> np.ndarray:
        """int32 [stop - start]: the document of each token in ``[start, stop)``."""
        if stop <= start:
            return np.zeros(0, np.int32)
        # Only the documents overlapping [start, stop): no per-token int64 temporaries.
        first = int(np.searchsorted(self.doc_starts, start, side="right")) - 1
        last = int(np.searchsorted(self.doc_starts, stop, side="left"))
        bounds = np.clip(np.asarray(self.doc_starts[first:last + 1]), start, stop)
        return np.repeat(np.arange(first, last, dtype=np.int32), np.diff(bounds))

    def documents(self) -> Iterator[np.ndarray]:
        """int32 token ids per document (views into the memory map)."""
        for i in range(self.n_docs):
            yield self.tokens[self.doc_starts[i]:self.doc_starts[i + 1]]


def _settings(min_count, max_vocab, doc_len, lowercase) -> dict:
    if min_count < 1:
        raise StreamError(f"min_count must be >= 1, got {min_count}")
    if max_vocab is not None and max_vocab < 1:
        raise StreamError(f"max_vocab must be >= 1 or None, got {max_vocab}")
    if doc_len is not None and doc_len < 1:
        raise StreamError(f"doc_len must be >= 1 or None, got {doc_len}")
    return {"min_count": min_count, "max_vocab": max_vocab, "doc_len": doc_len,
            "lowercase": lowercase}


def _source(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.absolute()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def build_corpus(text_path: str | Path, out_dir: str | Path, min_count: int = 5,
                 max_vocab: int | None = None, doc_len: int | None = 10_000,
                 lowercase: bool = True, chunk_bytes: int = CHUNK_BYTES) -> StreamedCorpus:
    """Tokenise ``text_path`` in two streamed passes into a new corpus directory ``out_dir``.

    Host memory is bounded by the vocabulary counter and a chunk, not by the corpus size.
    ``out_dir`` must not exist (it is never overwritten).
    """
    text_path = _text_file(text_path)
    settings = _settings(min_count, max_vocab, doc_len, lowercase)
    if chunk_bytes < 1:
        raise StreamError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise StreamError(f"corpus directory {str(out_dir)!r} exists; open it with "
                          "open_corpus, or choose a new directory")
    source = _source(text_path)
    n_raw = 0

    def counted():
        nonlocal n_raw
        for tokens, _ in _pieces(text_path, lowercase, doc_len, chunk_bytes):
            n_raw += len(tokens)
            yield tokens

    try:
        vocab = build_vocabulary(counted(), min_count, max_vocab)
    except StreamError:
        raise
    except CorpusError as e:
        raise StreamError(f"corpus file {str(text_path)!r}: {e}") from None
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=False)
        n_tokens, n_docs = _encode(text_path, tmp, vocab, lowercase, doc_len, chunk_bytes)
        if n_tokens != int(vocab.counts.sum()):  # the file changed between the two passes
            raise StreamError(f"corpus file {str(text_path)!r} changed while it was read")
        with open(tmp / VOCAB, "w", encoding="utf-8") as f:
            f.writelines(f"{w}\t{c}\n" for w, c in zip(vocab.words, vocab.counts.tolist(),
                                                        strict=True))
        info = {"format": FORMAT, "source": source, "settings": settings,
                "n_tokens": n_tokens, "n_docs": n_docs, "n_raw_tokens": n_raw,
                "vocab_size": len(vocab)}
        (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n")
        for name in (TOKENS, DOC_STARTS, VOCAB, INFO):
            _fsync(tmp / name)
        tmp.rename(out_dir)
    except OSError as e:
        raise StreamError(f"cannot write the corpus directory {str(out_dir)!r}: {e.strerror} "
                          f"(errno {e.errno}); nothing was written there") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_corpus(out_dir)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class _Index(dict):
    """word -> id, -1 for words outside the vocabulary."""

    def __missing__(self, key):
        return -1


def _encode(text_path, out, vocab, lowercase, doc_len, chunk_bytes) -> tuple[int, int]:
    """The second pass: writes ``tokens.i32`` and ``doc_starts.i64``; (N, D)."""
    index = _Index(zip(vocab.words, range(len(vocab)), strict=True))
    n, n_docs, doc_open = 0, 0, False
    buf: list[np.ndarray] = []
    starts: list[int] = []
    buffered = 0
    with open(out / TOKENS, "wb") as ft, open(out / DOC_STARTS, "wb") as fd:
        for tokens, ends in _pieces(text_path, lowercase, doc_len, chunk_bytes):
            ids = np.fromiter(map(index.__getitem__, tokens), np.int32, count=len(tokens))
            ids = ids[ids >= 0]
            if ids.size:
                if not doc_open:
                    starts.append(n)
                    n_docs += 1
                    doc_open = True
                buf.append(ids)
                n += ids.size
                buffered += ids.size
            if ends:
                doc_open = False
            if buffered >= _FLUSH_TOKENS:
                ft.write(np.concatenate(buf).astype("<i4").tobytes())
                fd.write(np.asarray(starts, "<i8").tobytes())
                buf, starts, buffered = [], [], 0
        starts.append(n)
        if buf:
            ft.write(np.concatenate(buf).astype("<i4").tobytes())
        fd.write(np.asarray(starts, "<i8").tobytes())
    return n, n_docs


def open_corpus(path: str | Path) -> StreamedCorpus:
    """Open a directory written by :func:`build_corpus` (its files memory-mapped, read-only)."""
    path = Path(path)
    try:
        info = json.loads((path / INFO).read_text())
        n, d, v = info["n_tokens"], info["n_docs"], info["vocab_size"]
        if info.get("format") != FORMAT:
            raise StreamError(f"{str(path / INFO)!r}: format {info.get('format')!r}, this "
                              f"version reads format {FORMAT}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, StreamError):
            raise
        raise StreamError(f"{str(path)!r} is not a readable corpus directory (its {INFO}: "
                          f"{e})") from None
    for name, size in ((TOKENS, 4 * n), (DOC_STARTS, 8 * (d + 1))):
        got = (path / name).stat().st_size if (path / name).is_file() else None
        if got != size:
            raise StreamError(f"{str(path / name)!r}: expected {size} bytes ({INFO} says "
                              f"{n} tokens, {d} documents), found "
                              f"{'no file' if got is None else got}")
    words, counts = [], []
    with open(path / VOCAB, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            word, tab, count = line.rstrip("\n").partition("\t")
            if not tab or not word or not count.isdigit():
                raise StreamError(f"{str(path / VOCAB)!r} line {line_no}: expected "
                                  f"'word<TAB>count', got {line[:80]!r}")
            words.append(word)
            counts.append(int(count))
    if len(words) != v or sum(counts) != n:
        raise StreamError(f"{str(path / VOCAB)!r}: {len(words)} words with {sum(counts)} "
                          f"tokens, but {INFO} says {v} words and {n} tokens")
    if n < 1 or d < 1:  # build_corpus never writes an empty corpus; np.memmap refuses one
        raise StreamError(f"{str(path / INFO)!r} says {n} tokens in {d} documents")
    tokens = np.memmap(path / TOKENS, dtype="<i4", mode="r", shape=(n,))
    starts = np.memmap(path / DOC_STARTS, dtype="<i8", mode="r", shape=(d + 1,))
    if starts[0] != 0 or starts[-1] != n:
        raise StreamError(f"{str(path / DOC_STARTS)!r}: documents must start at 0 and end at "
                          f"{n}, found {int(starts[0])} and {int(starts[-1])}")
    return StreamedCorpus(path, Vocabulary(tuple(words), np.array(counts, np.int64)), tokens,
                          starts, info)


def prepare_corpus(text_path: str | Path, out_dir: str | Path, min_count: int = 5,
                   max_vocab: int | None = None, doc_len: int | None = 10_000,
                   lowercase: bool = True, chunk_bytes: int = CHUNK_BYTES) -> StreamedCorpus:
    """Open ``out_dir`` if it holds this file's corpus with these settings, else build it.

    A directory built from another file (path, size or modification time) or with other
    settings is refused, never replaced.
    """
    text_path, out_dir = _text_file(text_path), Path(out_dir)
    if not out_dir.exists():
        return build_corpus(text_path, out_dir, min_count, max_vocab, doc_len, lowercase,
                            chunk_bytes)
    corpus = open_corpus(out_dir)
    want = {"source": _source(text_path),
            "settings": _settings(min_count, max_vocab, doc_len, lowercase)}
    diff = [f"{k}.{j}: {corpus.info[k].get(j)!r} there, {x!r} here"
            for k, sub in want.items() for j, x in sub.items() if corpus.info[k].get(j) != x]
    if diff:
        raise StreamError(f"corpus directory {str(out_dir)!r} was built from another file or "
                          f"with other settings ({'; '.join(diff)}); delete it or choose "
                          "another directory")
    return corpus


# ----------------------------------------------------------------------------------- device


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _fill(tokens, docs, token_chunk, doc_chunk, start):
    # Donated: XLA updates the buffers in place, so the device corpus exists once.
    return (jax.lax.dynamic_update_slice(tokens, token_chunk, (start,)),
            jax.lax.dynamic_update_slice(docs, doc_chunk, (start,)))


def to_device_corpus(corpus: StreamedCorpus, sample: float,
                     chunk_tokens: int = 1 << 20) -> sgns.DeviceCorpus:
    """The :class:`jaxemb.sgns.DeviceCorpus` of an opened corpus, filled ``chunk_tokens`` at a
    time from the files (read, not mapped, so the host holds one chunk, not the corpus).

    Equal to ``sgns.device_corpus(list(corpus.documents()), corpus.vocab.counts, sample)``.
    """
    if chunk_tokens < 1:
        raise StreamError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if sample < 0:
        raise StreamError(f"sample must be >= 0 (0 disables subsampling), got {sample}")
    n, v = corpus.n_tokens, len(corpus.vocab)
    if n == 0:
        raise StreamError(f"the corpus in {str(corpus.path)!r} is empty")
    chunk = min(chunk_tokens, n)
    tokens = jnp.zeros(n, jnp.int32)
    docs = jnp.zeros(n, jnp.int32)
    with open(corpus.path / TOKENS, "rb") as f:
        for a in range(0, n, chunk):
            start = min(a, n - chunk)  # the last chunk overlaps: one shape, one compilation
            f.seek(4 * start)
            # A fresh immutable buffer per chunk: on CPU the device may alias host memory.
            ids = np.frombuffer(f.read(4 * chunk), "<i4")
            if ids.size != chunk:
                raise StreamError(f"{str(corpus.path / TOKENS)!r} is shorter than its "
                                  f"{corpus.n_tokens} tokens")
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= v:
                raise StreamError(f"{str(corpus.path / TOKENS)!r}: token id "
                                  f"{lo if lo < 0 else hi} near token {start} is outside the "
                                  f"vocabulary of {v} words (a corrupt file?)")
            tokens, docs = _fill(tokens, docs, ids.astype(np.int32),
                                 corpus.doc_ids(start, start + chunk), np.int32(start))
    counts = corpus.vocab.counts
    return sgns.DeviceCorpus(jax.block_until_ready(tokens), jax.block_until_ready(docs),
                             jnp.asarray(sgns.keep_probability(counts, sample), jnp.float32),
                             jnp.asarray(sgns.negative_cdf(counts), jnp.float32))
