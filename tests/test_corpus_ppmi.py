"""Tokens, vocabulary, co-occurrence counts and PPMI against hand counts and dense numpy."""

import numpy as np
import pytest

from jaxemb import corpus, ppmi
from jaxemb.wordvectors import VocabularyError


def test_tokenize_lowercases_letters_only():
    assert corpus.tokenize("I don't like 3 Cats, naïve Éclair!") == [
        "i", "don", "t", "like", "cats", "naïve", "éclair"]
    assert corpus.tokenize("A b", lowercase=False) == ["A", "b"]


def test_vocabulary_orders_by_count_and_applies_min_count():
    docs = [["b", "a", "b", "c"], ["a", "b", "d", "d"]]
    v = corpus.build_vocabulary(docs, min_count=2)
    assert v.words == ("b", "a", "d")
    np.testing.assert_array_equal(v.counts, [3, 2, 2])
    assert [ids.tolist() for ids in v.encode(docs)] == [[0, 1, 0], [1, 0, 2, 2]]
    assert corpus.build_vocabulary(docs, min_count=1, max_vocab=2).words == ("b", "a")
    with pytest.raises(VocabularyError, match="'c'"):
        v.id("c")


def test_vocabulary_errors():
    with pytest.raises(corpus.CorpusError, match="corpus is empty"):
        corpus.build_vocabulary([[], []])
    with pytest.raises(corpus.CorpusError, match="vocabulary is empty.*min_count=5.*'a'.*2"):
        corpus.build_vocabulary([["a", "a", "b"]], min_count=5)


def test_read_text_file(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("Hello world\n\nthe world again\n", encoding="utf-8")
    assert corpus.read_text_file(p) == [["hello", "world"], ["the", "world", "again"]]
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02abc")
    with pytest.raises(corpus.CorpusError, match="not text"):
        corpus.read_text_file(tmp_path / "bin")
    with pytest.raises(corpus.CorpusError, match="does not exist"):
        corpus.read_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n 123 \n")
    with pytest.raises(corpus.CorpusError, match="no tokens"):
        corpus.read_text_file(tmp_path / "empty.txt")


def test_cooccurrence_counts_by_hand():
    docs = [np.array([0, 1, 2, 0]), np.array([1, 1])]
    C = ppmi.cooccurrence(docs, 3, window=2).toarray()
    # doc 1 pairs within 2: (0,1) (1,2) (2,0) | (0,2) (1,0); doc 2: (1,1); both directions
    expected = np.zeros((3, 3))
    for a, b in [(0, 1), (1, 2), (2, 0), (0, 2), (1, 0), (1, 1)]:
        expected[a, b] += 1
        expected[b, a] += 1
    np.testing.assert_array_equal(C, expected)
    np.testing.assert_array_equal(C, C.T)


def test_ppmi_equals_dense_formula(rng):
    counts = rng.integers(0, 6, size=(7, 7)).astype(float)
    counts = counts + counts.T
    import scipy.sparse as sp

    got = ppmi.ppmi(sp.csr_matrix(counts), alpha=0.75, shift=2.0).toarray()
    total = counts.sum()
    pw = counts.sum(1) / total
    ctx = counts.sum(0) ** 0.75
    pc = ctx / ctx.sum()
    with np.errstate(divide="ignore"):
        pmi = np.log(counts / total) - np.log(pw)[:, None] - np.log(pc)[None, :] - np.log(2.0)
    expected = np.where(counts > 0, np.maximum(pmi, 0), 0)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_svd_vectors_reconstruct_rank_r_matrix(rng):
    import scipy.sparse as sp

    X = rng.standard_normal((12, 3))
    M = X @ X.T  # symmetric PSD, rank 3: U sqrt(S) (U sqrt(S))^T == M
    V = ppmi.svd_vectors(sp.csr_matrix(M), 3)
    np.testing.assert_allclose(V.astype(float) @ V.T, M, atol=1e-4)


def test_wiki_sample_is_parsed_once_and_each_call_gets_its_own_lists():
    pytest.importorskip("gensim")
    docs = corpus.wiki_sample()
    assert len(docs) == 106 and sum(map(len, docs)) == 452_944
    first = list(docs[0])
    docs[0].clear()
    docs.pop()
    again = corpus.wiki_sample()
    assert len(again) == 106 and again[0] == first
    assert corpus._parse_wiki_sample.cache_info().misses == 1
