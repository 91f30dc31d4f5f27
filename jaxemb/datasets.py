"""Corpora to train on: gensim's Lee background corpus, text8, and a planted corpus with known PMI.

* ``lee_background`` — 300 news documents (about 60k tokens) shipped in gensim's wheel: offline.
* ``text8`` — Matt Mahoney's 10⁸ characters of cleaned English Wikipedia (17,005,207 tokens), the
  standard small benchmark of word2vec (Mikolov et al. 2013); downloaded once and cached.
* ``planted_corpus`` — tokens drawn from the random-walk discourse model of Arora, Li, Liang, Ma &
  Risteski (2016), "A Latent Variable Model Approach to PMI-based Word Embeddings" (TACL 4), whose
  word vectors, and hence PMI, are known: a ground truth for embedding methods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from jaxemb.corpus import CorpusError, gensim_datapath, read_text_file, wiki_sample
from jaxemb.wordvectors import VocabularyError

LEE_BACKGROUND = "lee_background.cor"

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
# SHA-256 of text8.zip (31,344,016 bytes) as pinned by many independent public projects; the
# uncompressed member hashes to 6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7.
TEXT8_SHA256: str | None = "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232"
TEXT8_MEMBER = "text8"
# text8 is one line without sentence marks; word2vec's C tool and gensim's Text8Corpus cut it
# into pseudo-sentences of 10,000 tokens (gensim's max_sentence_length), and so do we.
TEXT8_DOC_LEN = 10_000
CACHE_ENV = "JAXEMB_CACHE"

_CHUNK = 1 << 20  # bytes per read, for the download and for parsing the zip member
_TIMEOUT = 60.0  # seconds without data before a download is given up


def lee_background() -> list[list[str]]:
    """gensim's Lee background corpus: 300 documents (one per line), 60,302 tokens, 7,002 types
    with ``corpus.tokenize`` (alphabetic, lowercased)."""
    return read_text_file(gensim_datapath(LEE_BACKGROUND))


CORPORA = ("wiki", "lee", "text8", "planted")


def load_corpus(name: str) -> list[list[str]]:
    """Documents of a named corpus (``CORPORA``: gensim's Wikipedia sample, the Lee corpus, text8,
    the planted corpus) or of a text file at path ``name`` (one document per line)."""
    if name == "wiki":
        return wiki_sample()
    if name == "lee":
        return lee_background()
    if name == "text8":
        return text8()
    if name == "planted":
        return planted_corpus().docs
    return read_text_file(name)


# ------------------------------------------------------------------------------------ text8


def default_cache_dir() -> Path:
    """Where downloads are kept: ``$JAXEMB_CACHE`` if set, else ``~/.cache/jaxemb``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxemb"


def text8(cache_dir: str | Path | None = None, url: str = TEXT8_URL,
          sha256: str | None = TEXT8_SHA256, max_tokens: int | None = None) -> list[list[str]]:
    """text8 as pseudo-documents of 10,000 tokens (the last one shorter).

    The zip is downloaded from ``url`` on first use into ``cache_dir`` (default
    ``default_cache_dir()``) and reused afterwards; with ``sha256`` given (the default is the
    archive's hash as pinned by independent projects; None skips the check) both a fresh download
    and a cached file must match it. Offline, place the zip in the cache directory by hand; the
    error says where. ``max_tokens`` reads only a prefix. The full corpus is 17,005,207 tokens:
    1,701 documents.
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name or "text8.zip"
    path = directory / name
    if path.is_file():
        if sha256 is not None and (got := _sha256_file(path)) != sha256.lower():
            raise CorpusError(f"cached file {str(path)!r} does not match the expected SHA-256 "
                              f"(expected {sha256}, got {got}): it is corrupt or another file; "
                              f"delete it to download {url} again")
    else:
        _download(url, path, sha256)
    return read_text8(path, max_tokens)


def read_text8(path: str | Path, max_tokens: int | None = None) -> list[list[str]]:
    """Tokens of the ``text8`` member of a zip (one line of space-separated words), cut into
    documents of ``TEXT8_DOC_LEN`` tokens; at most ``max_tokens`` tokens."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CorpusError(f"{str(path)!r} is not a readable zip file: {e}") from None
    with archive:
        if TEXT8_MEMBER not in archive.namelist():
            raise CorpusError(f"zip file {str(path)!r} has no member {TEXT8_MEMBER!r} "
                              f"(it holds {archive.namelist()[:5]})")
        with archive.open(TEXT8_MEMBER) as member:
            docs = _pseudo_documents(member, TEXT8_DOC_LEN, max_tokens)
    if not docs:
        raise CorpusError(f"the {TEXT8_MEMBER!r} member of {str(path)!r} holds no tokens")
    return docs


def _pseudo_documents(stream, doc_len: int, max_tokens: int | None) -> list[list[str]]:
    """Whitespace tokens of a byte stream, read in chunks, cut every ``doc_len`` tokens."""
    docs: list[list[str]] = []
    pending: list[str] = []
    carry = b""
    n_tokens = 0
    while max_tokens is None or n_tokens < max_tokens:
        chunk = stream.read(_CHUNK)
        data = carry + chunk
        if chunk:  # a word may straddle chunks: keep the bytes after the last space for later
            cut = max(data.rfind(b" "), data.rfind(b"\n")) + 1
            data, carry = data[:cut], data[cut:]
        # Interning makes the ~17M tokens share ~254k string objects: ~150 MB rather than ~1 GB.
        # Cutting at ASCII whitespace never splits a UTF-8 sequence, so decoding per chunk is safe.
        words = list(map(sys.intern, data.decode("utf-8", errors="replace").split()))
        if max_tokens is not None:
            words = words[:max_tokens - n_tokens]
        n_tokens += len(words)
        pending += words
        full = len(pending) - len(pending) % doc_len
        docs += [pending[i:i + doc_len] for i in range(0, full, doc_len)]
        pending = pending[full:]
        if not chunk:
            break
    if pending:
        docs.append(pending)
    return docs


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, path: Path, sha256: str | None) -> None:
    """Fetch ``url`` to ``path`` through a temporary file in the same directory, renamed into
    place only once complete (and matching ``sha256`` when given): never a partial ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT) as resp:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                with tqdm(total=expected, unit="B", unit_scale=True, desc=path.name,
                          disable=None, leave=False) as bar:  # disable=None: only on a terminal
                    while block := resp.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
                        bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, dropped links
            raise CorpusError(
                f"could not download {url}: {getattr(e, 'reason', e)}. To work offline, fetch that "
                f"URL on a machine with internet access and place the file at {str(path)!r} (the "
                f"cache directory; pass cache_dir= or set ${CACHE_ENV} to use another)") from None
        if expected is not None and size != expected:
            raise CorpusError(f"download of {url} is incomplete: {size} of {expected} bytes; "
                              "try again")
        if sha256 is not None and (got := digest.hexdigest()) != sha256.lower():
            raise CorpusError(f"download of {url} does not match the expected SHA-256 (expected "
                              f"{sha256}, got {got}); nothing was saved to {str(path)!r}")
        os.replace(tmp, path)  # atomic within one filesystem
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- planted corpus


@dataclasses.dataclass(frozen=True, eq=False)
class PlantedCorpus:
    """Documents drawn from the random-walk discourse model, with the planted word vectors.

    ``words[i]`` names row ``i`` of ``vectors`` [n_words, dim]; rows are in decreasing norm, so in
    decreasing planted frequency (``words[0]`` is the most frequent in expectation).
    """

    docs: list[list[str]]
    vectors: np.ndarray  # float64 [n_words, dim], read-only
    words: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def index(self, words) -> np.ndarray | int:
        """Row of a word (or an int array of rows for an array of words)."""
        if isinstance(words, str):
            return self._lookup(words)
        return np.array([self._lookup(w) for w in np.asarray(words).ravel()],
                        np.int64).reshape(np.shape(words))

    def _lookup(self, word: str) -> int:
        try:
            return self._index[word]
        except KeyError:
            raise VocabularyError(f"word {str(word)!r} is not in the planted corpus "
                                  f"({len(self.words)} words, {self.words[0]!r} to "
                                  f"{self.words[-1]!r})") from None

    def _rows(self, x) -> np.ndarray:
        a = np.asarray(x)
        return self.index(a) if a.dtype.kind in "UO" else a.astype(np.int64)

    def planted_pmi(self, i, j) -> np.ndarray:
        """⟨v_i, v_j⟩ / d: PMI(i, j) by Theorem 2.2 of Arora et al. (2016); i, j are rows or words,
        broadcast like numpy (``planted_pmi(r[:, None], r[None, :])`` is the [k, k] matrix).

        The theorem gives log p(w, w') ≈ ‖v_w + v_w'‖²/2d − 2 log Z and log p(w) ≈ ‖v_w‖²/2d −
        log Z, from their Lemma 2.1: Z_c = Σ_w exp⟨v_w, c⟩ is nearly the same for all c. At the
        scales here Z_c varies, and the model's PMI (``model_pmi``) has nearly the same ranking
        (Spearman ≈ 0.97 among the 200 most frequent words) but is shrunk to about two thirds.
        """
        vi = self.vectors[self._rows(i)]
        vj = self.vectors[self._rows(j)]
        return np.einsum("...k,...k->...", vi, vj) / self.dim

    def model_pmi(self, rows=None, n_samples: int = 16384, seed: int = 0) -> np.ndarray:
        """PMI [k, k] of the generative model itself among ``rows`` (rows or words; default all),
        by Monte Carlo over the discourse vector: p(w, w') = E_c p(w|c) p(w'|c), p(w) = E_c p(w|c),
        c uniform on the sphere (the walk's stationary law). Both words share one c: exact for
        adjacent tokens, and for a window of k tokens up to the drift of c over k steps.
        """
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        r = np.arange(len(self.words)) if rows is None else self._rows(rows).ravel()
        rng = np.random.default_rng(seed)
        marginal = np.zeros(len(r))
        joint = np.zeros((len(r), len(r)))
        for a in range(0, n_samples, 2048):  # chunks keep p(w|c) [chunk, n_words] small
            c = _unit(rng.standard_normal((min(2048, n_samples - a), self.dim)))
            p = _softmax(c @ self.vectors.T)[:, r]
            marginal += p.sum(axis=0)
            joint += p.T @ p
        marginal /= n_samples
        joint /= n_samples
        return np.log(joint) - np.log(marginal)[:, None] - np.log(marginal)[None, :]


def planted_corpus(n_words: int = 2000, dim: int = 20, n_docs: int = 200, doc_len: int = 1000,
                   drift: float = 0.05, seed: int = 0, zipf: float = 0.8, min_scale: float = 0.5,
                   hold: int = 8) -> PlantedCorpus:
    """Sample ``n_docs`` documents of ``doc_len`` tokens from the model of Arora et al. (2016).

    Word vectors v_w = s_w·√d·ŵ with ŵ uniform on the unit sphere (the paper's v_w = s_w·v̂,
    v̂ ~ N(0, I_d), with ‖v̂‖ fixed at its typical √d). Each document's discourse vector c starts
    uniform on the unit sphere (the walk's stationary law) and walks slowly,
    c ← normalise(c + drift·z/√d), z ~ N(0, I_d), so each step moves c by about ``drift`` radians;
    each token is drawn from p(w | c) = exp⟨v_w, c⟩ / Z_c.

    Scales: by the paper's Theorem 2.2 p(w) ∝ exp(‖v_w‖²/2d) = exp(s_w²/2), so
    s_w² = min_scale² + 2·zipf·log(n_words / rank_w) plants Zipf's law p ∝ rank^-zipf. The realised
    spread is flatter (Z_c is not constant at n_words = 2000): with the defaults the most frequent
    word is 30–50 times as frequent as the median one.

    Speed: c is held fixed for ``hold`` tokens and then takes one step of √hold times the size,
    matching the walk's variance over those tokens; then one softmax per ``hold`` tokens is
    inverse-CDF sampled for all of them at once. c moves drift·√hold ≈ 0.14 rad per hold at the
    defaults, against a correlation length of about 1/drift² = 400 tokens.
    """
    for label, value, low in [("n_words", n_words, 2), ("dim", dim, 1), ("n_docs", n_docs, 1),
                              ("doc_len", doc_len, 1), ("hold", hold, 1)]:
        if value < low:
            raise ValueError(f"{label} must be >= {low}, got {value}")
    for label, value in [("drift", drift), ("zipf", zipf), ("min_scale", min_scale)]:
        if not value >= 0:
            raise ValueError(f"{label} must be >= 0, got {value}")
    rng = np.random.default_rng(seed)

    rank = np.arange(1, n_words + 1)
    scale = np.sqrt(min_scale**2 + 2 * zipf * np.log(n_words / rank))  # decreasing with rank
    vectors = scale[:, None] * np.sqrt(dim) * _unit(rng.standard_normal((n_words, dim)))
    vectors.setflags(write=False)

    # The walk, one row per block of `hold` tokens: sequential in time, vectorised over documents.
    n_blocks = -(-doc_len // hold)
    c = _unit(rng.standard_normal((n_docs, dim)))
    walk = np.empty((n_docs, n_blocks, dim))
    step = drift * np.sqrt(hold / dim)
    for b in range(n_blocks):
        walk[:, b] = c
        c = _unit(c + step * rng.standard_normal((n_docs, dim)))
    walk = walk.reshape(n_docs * n_blocks, dim)

    ids = np.empty((n_docs * n_blocks, hold), np.int64)
    per_chunk = max(1, (1 << 21) // n_words)  # blocks per chunk: ~16 MB of float64 CDFs
    for a in range(0, len(walk), per_chunk):
        logits = walk[a:a + per_chunk] @ vectors.T  # [k, n_words]
        k = len(logits)
        np.exp(logits - logits.max(axis=1, keepdims=True), out=logits)  # unnormalised p(w | c)
        # Inverse CDF for all rows with one cumsum and one searchsorted: the running sum over the
        # flattened rows is monotone, row r spanning [ends[r-1], ends[r]]; a uniform scaled into
        # that span picks a word of row r with probability p(w | c_r).
        cum = np.cumsum(logits.ravel())
        ends = cum[n_words - 1::n_words]
        starts = np.concatenate([[0.0], ends[:-1]])
        u = starts[:, None] + rng.random((k, hold)) * (ends - starts)[:, None]
        found = np.searchsorted(cum, u.ravel(), side="right").reshape(k, hold)
        ids[a:a + k] = np.clip(found - np.arange(k)[:, None] * n_words, 0, n_words - 1)
    ids = ids.reshape(n_docs, n_blocks * hold)[:, :doc_len]

    width = max(4, len(str(n_words - 1)))
    words = tuple(f"w{i:0{width}d}" for i in range(n_words))
    names = np.array(words, dtype=object)
    return PlantedCorpus(docs=[names[row].tolist() for row in ids], vectors=vectors, words=words)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
