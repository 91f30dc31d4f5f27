"""Datasets: the planted corpus against its ground truth, text8's download and cache (offline, via
file:// URLs and a patched opener), and gensim's Lee corpus."""

import hashlib
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import scipy.stats

from jaxemb import datasets
from jaxemb.corpus import CorpusError
from jaxemb.wordvectors import VocabularyError

# ------------------------------------------------------------------------------ planted corpus


def _window_pmi(ids: np.ndarray, rows: np.ndarray, window: int = 5) -> np.ndarray:
    """Empirical PMI [k, k] among ``rows`` from symmetric counts of pairs ≤ ``window`` apart."""
    k = len(rows)
    local = np.full(ids.max() + 1, -1)
    local[rows] = np.arange(k)
    doc = local[ids]  # [n_docs, doc_len], -1 outside rows
    counts = np.zeros(k * k)
    for off in range(1, window + 1):
        a, b = doc[:, :-off].ravel(), doc[:, off:].ravel()
        keep = (a >= 0) & (b >= 0)
        counts += np.bincount(a[keep] * k + b[keep], minlength=k * k)
    counts = counts.reshape(k, k)
    counts += counts.T
    marg = counts.sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.log(counts) + np.log(counts.sum()) - np.log(np.outer(marg, marg))


@pytest.fixture(scope="module")
def default_planted():
    return datasets.planted_corpus()


def test_planted_corpus_shapes_names_and_determinism():
    kw = dict(n_words=300, dim=8, n_docs=5, doc_len=123)  # 123: not a multiple of hold=8
    a, b = datasets.planted_corpus(**kw, seed=3), datasets.planted_corpus(**kw, seed=3)
    c = datasets.planted_corpus(**kw, seed=4)
    assert a.docs == b.docs
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.docs != c.docs
    assert not np.allclose(a.vectors, c.vectors)
    assert [len(d) for d in a.docs] == [123] * 5
    assert a.words[:2] == ("w0000", "w0001") and a.words[-1] == "w0299" and len(a.words) == 300
    assert set(t for d in a.docs for t in d) <= set(a.words)
    assert a.vectors.shape == (300, 8) and a.dim == 8
    assert not a.vectors.flags.writeable
    norms = np.linalg.norm(a.vectors, axis=1)
    assert np.all(np.diff(norms) < 0)  # rows by decreasing planted frequency
    # ‖v_w‖² / d = s_w² = min_scale² + 2·zipf·log(n / rank)
    np.testing.assert_allclose(norms**2 / 8, 0.25 + 1.6 * np.log(300 / np.arange(1, 301)))
    assert len(datasets.planted_corpus(n_words=12345, n_docs=1, doc_len=2).words[0]) == 6


def test_planted_corpus_default_size_and_frequency_spread(default_planted):
    # Its generation time (vectorised sampling: about 1 s on one core) is a benchmark figure,
    # not a test: a wall-time bound fails on a loaded machine and passes a slow change on a fast
    # one. ``experiments.bench_sgns --corpus planted`` reports it (``corpus_seconds``).
    pc = default_planted
    assert len(pc.docs) == 200 and sum(map(len, pc.docs)) == 200_000
    counts = np.bincount(pc.index(np.array(pc.docs)).ravel(), minlength=2000)
    # The planted Zipf exponent 0.8 gives most/median ≈ 38 for seed 0 (30–50 across seeds).
    assert counts.max() / np.median(counts) >= 20
    assert counts.argmax() == 0  # the largest planted norm is the most frequent word
    assert scipy.stats.spearmanr(counts, -np.arange(2000)).statistic > 0.9


def test_empirical_pmi_tracks_planted_inner_products(default_planted):
    pc = default_planted
    ids = pc.index(np.array(pc.docs))
    top = np.argsort(-np.bincount(ids.ravel(), minlength=2000), kind="stable")[:200]
    empirical = _window_pmi(ids, top, window=5)
    planted = pc.planted_pmi(top[:, None], top[None, :])
    iu = np.triu_indices(200, 1)
    seen = np.isfinite(empirical[iu])
    assert seen.mean() > 0.8  # most frequent pairs co-occur
    rho = scipy.stats.spearmanr(empirical[iu][seen], planted[iu][seen]).statistic
    assert rho > 0.6  # measured 0.68 (seed 0); 0.67–0.68 over seeds 0–4
    # The model's own PMI (Monte Carlo over c) is what the counts estimate: closer still.
    model = pc.model_pmi(top, n_samples=4096)
    assert scipy.stats.spearmanr(empirical[iu][seen], model[iu][seen]).statistic > rho


def test_planted_pmi_formula_and_model_pmi():
    pc = datasets.planted_corpus(n_words=200, dim=10, n_docs=1, doc_len=10, seed=1)
    v = pc.vectors
    assert pc.planted_pmi(3, 7) == pytest.approx(v[3] @ v[7] / 10)
    assert pc.planted_pmi("w0003", "w0007") == pytest.approx(v[3] @ v[7] / 10)
    rows = np.array([0, 5, 9])
    np.testing.assert_allclose(pc.planted_pmi(rows[:, None], rows[None, :]),
                               v[rows] @ v[rows].T / 10)
    assert pc.index(["w0005", "w0000"]).tolist() == [5, 0]
    model = pc.model_pmi(np.arange(50), n_samples=4096)
    assert model.shape == (50, 50)
    np.testing.assert_allclose(model, model.T, atol=1e-10)
    iu = np.triu_indices(50, 1)
    assert scipy.stats.spearmanr(model[iu], pc.planted_pmi(*iu)).statistic > 0.9
    np.testing.assert_allclose(pc.model_pmi(["w0001", "w0002"], n_samples=512),
                               pc.model_pmi([1, 2], n_samples=512))


def test_planted_corpus_errors():
    with pytest.raises(ValueError, match="n_words must be >= 2, got 1"):
        datasets.planted_corpus(n_words=1)
    with pytest.raises(ValueError, match="drift must be >= 0, got -0.1"):
        datasets.planted_corpus(drift=-0.1)
    with pytest.raises(ValueError, match="hold must be >= 1"):
        datasets.planted_corpus(hold=0)
    pc = datasets.planted_corpus(n_words=10, n_docs=1, doc_len=5)
    with pytest.raises(VocabularyError, match="^word 'cat' is not in the planted corpus "
                                              r"\(10 words, 'w0000' to 'w0009'\)$"):
        pc.planted_pmi("cat", 0)


# ------------------------------------------------------------------------------------- text8

N_TOKENS = 25_003


@pytest.fixture
def text8_source(tmp_path):
    """A zip shaped like text8.zip (member ``text8``: one line, a leading space, no newline)."""
    rng = np.random.default_rng(0)
    vocab = np.array(["the", "of", "anarchism", "a", "originated", "as", "term", "abuse"])
    tokens = vocab[rng.integers(0, len(vocab), N_TOKENS)].tolist()
    src = tmp_path / "server"
    src.mkdir()
    path = src / "text8.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("text8", " " + " ".join(tokens))
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest(), tokens


@pytest.fixture
def opener_calls(monkeypatch):
    calls = []
    real = urllib.request.urlopen

    def counting(url, *args, **kwargs):
        calls.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", counting)
    return calls


def test_text8_downloads_once_then_uses_the_cache(tmp_path, text8_source, opener_calls):
    url, sha, tokens = text8_source
    cache = tmp_path / "cache"
    docs = datasets.text8(cache, url=url, sha256=sha)
    assert [len(d) for d in docs] == [10_000, 10_000, 5_003]
    assert [t for d in docs for t in d] == tokens
    assert len(opener_calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == ["text8.zip"]  # no temporary file left
    assert datasets.text8(cache, url=url, sha256=sha) == docs
    assert len(opener_calls) == 1  # served from the cache
    prefix = datasets.text8(cache, url=url, sha256=None, max_tokens=12_345)
    assert [len(d) for d in prefix] == [10_000, 2_345] and prefix[1] == tokens[10_000:12_345]


def test_text8_cache_dir_from_environment(tmp_path, text8_source, monkeypatch):
    url, sha, _ = text8_source
    monkeypatch.setenv("JAXEMB_CACHE", str(tmp_path / "env-cache"))
    assert datasets.default_cache_dir() == tmp_path / "env-cache"
    datasets.text8(url=url, sha256=sha, max_tokens=3)
    assert (tmp_path / "env-cache" / "text8.zip").is_file()
    monkeypatch.delenv("JAXEMB_CACHE")
    assert datasets.default_cache_dir().parts[-2:] == (".cache", "jaxemb")


def test_text8_checksum_mismatch_saves_nothing(tmp_path, text8_source):
    url, sha, _ = text8_source
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match=f"{url} does not match the expected SHA-256 "
                                          f"\\(expected 0+, got {sha}\\); nothing was saved"):
        datasets.text8(cache, url=url, sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_text8_corrupt_cached_file_is_reported_not_replaced(tmp_path, text8_source, opener_calls):
    url, sha, _ = text8_source
    (tmp_path / "cache").mkdir()
    bad = tmp_path / "cache" / "text8.zip"
    bad.write_bytes(b"partial")
    with pytest.raises(CorpusError, match="cached file .*text8.zip' does not match.*delete it"):
        datasets.text8(tmp_path / "cache", url=url, sha256=sha)
    assert bad.read_bytes() == b"partial" and opener_calls == []


def test_text8_offline_error_names_url_and_cache_path(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError) as info:
        datasets.text8(cache)
    message = str(info.value)
    assert datasets.TEXT8_URL in message and "name resolution" in message
    assert f"place the file at '{cache / 'text8.zip'}'" in message and "JAXEMB_CACHE" in message
    assert list(cache.iterdir()) == []


def test_text8_dropped_connection_leaves_no_partial_file(tmp_path, monkeypatch):
    class Dropping:
        headers = {"Content-Length": "100"}
        blocks = [b"x" * 10]

        def read(self, n):
            if self.blocks:
                return self.blocks.pop()
            raise ConnectionResetError("connection reset by peer")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, *a, **k: Dropping())
    with pytest.raises(CorpusError, match="could not download .*connection reset by peer"):
        datasets.text8(tmp_path, sha256=None)
    assert list(tmp_path.iterdir()) == []
    Dropping.blocks = [b"x" * 10]
    Dropping.read = lambda self, n: self.blocks.pop() if self.blocks else b""
    with pytest.raises(CorpusError, match="incomplete: 10 of 100 bytes"):
        datasets.text8(tmp_path, sha256=None)
    assert list(tmp_path.iterdir()) == []


def test_read_text8_words_across_read_chunks(tmp_path, text8_source, monkeypatch):
    url, _, tokens = text8_source
    path = urllib.request.url2pathname(url.removeprefix("file://"))
    monkeypatch.setattr(datasets, "_CHUNK", 7)  # words straddle nearly every chunk boundary
    docs = datasets.read_text8(path, max_tokens=10_001)
    assert [len(d) for d in docs] == [10_000, 1]
    assert docs[0] + docs[1] == tokens[:10_001]


def test_read_text8_errors(tmp_path):
    with pytest.raises(CorpusError, match="not a readable zip file"):
        datasets.read_text8(tmp_path / "missing.zip")
    (tmp_path / "other.zip").write_bytes(b"not a zip")
    with pytest.raises(CorpusError, match="not a readable zip file"):
        datasets.read_text8(tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "wrong.zip", "w") as z:
        z.writestr("enwik8", "hello")
    with pytest.raises(CorpusError, match="has no member 'text8'.*enwik8"):
        datasets.read_text8(tmp_path / "wrong.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as z:
        z.writestr("text8", "   ")
    with pytest.raises(CorpusError, match="holds no tokens"):
        datasets.read_text8(tmp_path / "empty.zip")
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        datasets.text8(tmp_path, max_tokens=0)


def test_text8_default_checksum_is_a_sha256():
    assert datasets.TEXT8_URL == "http://mattmahoney.net/dc/text8.zip"
    assert len(datasets.TEXT8_SHA256) == 64 and int(datasets.TEXT8_SHA256, 16) >= 0


# ---------------------------------------------------------------------------------------- Lee


def test_lee_background_loads():
    pytest.importorskip("gensim")
    docs = datasets.lee_background()
    assert len(docs) == 300
    assert 59_000 <= sum(map(len, docs)) <= 62_000  # measured 60,302
    assert docs[0][:4] == ["hundreds", "of", "people", "have"]
