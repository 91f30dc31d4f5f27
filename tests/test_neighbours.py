"""jaxemb.evaluate's neighbour lists and hubness, against hand-computed lists and a numpy
brute force (each query excluded from its own list)."""

import numpy as np
import pytest

from jaxemb import neighbours, search
from jaxemb.wordvectors import WordVectors

# row 0 is the "frequent" word; row 4 is long, so dot ranks it first for everyone
X = np.array([[1, 0], [2, 0.2], [0, 1], [0.6, 0.8], [10, 10]], np.float32)


def test_neighbours_by_hand():
    # cosine: row 1 is nearly parallel to row 0, then row 4 (45°), then row 3 (cos 0.6)
    np.testing.assert_array_equal(neighbours.neighbours(X, [0], 3, "cosine"), [[1, 4, 3]])
    # dot: long rows first; the query itself (0·0 = 1 > 0.6) is dropped from its own list
    np.testing.assert_array_equal(neighbours.neighbours(X, [0], 3, "dot"), [[4, 1, 3]])
    # row 3 is not among its own top 2 by dot (14, 1.36 > 1): the second is kept, not a third
    np.testing.assert_array_equal(neighbours.neighbours(X, [3], 1, "dot"), [[4]])
    np.testing.assert_array_equal(neighbours.neighbours(X, [3, 0], 2, "dot"), [[4, 1], [4, 1]])
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        neighbours.neighbours(X, [0], 5)


@pytest.mark.parametrize("score", ["cosine", "dot"])
def test_neighbours_equal_a_numpy_brute_force(score):
    V = np.random.default_rng(3).standard_normal((57, 6)).astype(np.float32)
    queries = np.array([0, 5, 56, 13])
    M = V / np.linalg.norm(V, axis=1, keepdims=True) if score == "cosine" else V
    S = (M[queries].astype(np.float64) @ M.T.astype(np.float64))
    S[np.arange(len(queries)), queries] = -np.inf
    expected = np.argsort(-S, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(neighbours.neighbours(V, queries, 7, score), expected)


def test_hubness_by_hand():
    # cosine top-1 of rows 1, 2, 3: row 0 (0.995), row 3 (0.8), row 4 (0.99)
    h = neighbours.hubness(X, np.array([1, 2, 3]), frequent=1, score="cosine", k=1)
    occ = np.array([1, 0, 0, 1, 1])  # how often each row is someone's neighbour
    m = occ - occ.mean()
    assert h == {"share_top": pytest.approx(1 / 3),
                 "k_occurrence_skew": pytest.approx((m ** 3).mean() / (m ** 2).mean() ** 1.5),
                 "max_k_occurrence": 1}
    dot = neighbours.hubness(X, np.array([0, 1, 2, 3]), 1, "dot", k=1)  # row 4 is everyone's top
    assert dot["max_k_occurrence"] == 4 and dot["share_top"] == 0


def test_neighbour_rows_skip_missing_words():
    wv = WordVectors(("the", "of", "cat", "dog", "big"), X)
    assert neighbours.neighbour_rows(wv, ["the", "unicorn"], topn=2) == [
        ("the", ["of", "big"], ["big", "of"])]
    assert neighbours.neighbour_rows(wv, ["unicorn"]) == []


def test_a_zero_row_as_a_query_is_refused_by_its_row():
    Z = X.copy()
    Z[2] = 0
    with pytest.raises(search.QueryError, match=r"row 2 of the vectors, as a query, has the same "
                                                r"score under 'cosine'"):
        neighbours.neighbours(Z, [0, 2], 2)
    np.testing.assert_array_equal(neighbours.neighbours(Z, [0], 2), [[1, 4]])
