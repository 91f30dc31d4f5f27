"""Nearest-neighbour lists under a score, and hubness: dot vs cosine neighbours (seed 003's
question), and how often a word appears in others' top-k lists (Radovanović et al. 2010).

Exact search through :func:`jaxemb.search.top_k`; each query is excluded from its own list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from jaxemb.search import QueryError, top_k
from jaxemb.wordvectors import WordVectors


def neighbours(vectors: np.ndarray, queries, k: int = 10, score: str = "cosine") -> np.ndarray:
    """[n, k] int row ids: the top-``k`` rows of ``vectors`` [V, d] for each query row of
    ``queries`` [n] (row ids) under ``score``, best first (exact float32 search, ties to the
    lower row), each query excluded from its own list.

    jaxemb.search pads queries into a few fixed block shapes, so many small searches reuse a
    handful of compilations."""
    queries = np.asarray(queries, np.int32)
    X = np.asarray(vectors, np.float32)
    if not 1 <= k < len(X):
        raise ValueError(f"k must be in [1, {len(X) - 1}] (the rows other than the query), "
                         f"got {k}")
    # k + 1 so that dropping the query itself still leaves k; where the query is not among them
    # (dot ranks long vectors first), the (k + 1)-th goes instead.
    try:
        _, idx = top_k(X[queries], X, k + 1, score)
    except QueryError as e:  # name the row, not its place among the queries
        why = str(e).split(" ", 2)[2]  # "query i <why>"
        raise QueryError(f"row {queries[e.query]} of the vectors, as a query, {why}",
                         e.query) from None
    idx = np.asarray(idx)
    keep = idx != queries[:, None]
    keep[keep.all(axis=1), -1] = False
    return idx[keep].reshape(queries.size, k)


def neighbour_rows(wv: WordVectors, words: Sequence[str],
                   topn: int = 5) -> list[tuple[str, list[str], list[str]]]:
    """[(word, top ``topn`` words by cosine, top ``topn`` by dot)] for the words of ``words``
    found in ``wv`` (the others are skipped): same vectors, exact search, only the score
    differs; the query word is excluded from its lists."""
    words = [w for w in words if w in wv]
    if not words:
        return []
    rows = [wv.index(w) for w in words]
    by = {s: neighbours(wv.vectors, rows, topn, s) for s in ("cosine", "dot")}
    return [(w, [wv.words[j] for j in by["cosine"][i]], [wv.words[j] for j in by["dot"][i]])
            for i, w in enumerate(words)]


def hubness(vectors: np.ndarray, queries, frequent: int, score: str, k: int = 10) -> dict:
    """How much the ``frequent`` first rows of ``vectors`` [V, d] (the most frequent words, when
    rows are sorted by count) crowd the top-``k`` lists of ``queries`` [n] (row ids; each query
    excluded from its own list) under ``score``.

    Returns {share_top: share of the n·k slots they take, k_occurrence_skew: skewness of how
    often each row appears in the lists (Radovanović et al. 2010), max_k_occurrence}."""
    neigh = neighbours(vectors, queries, k, score)
    occ = np.bincount(neigh.ravel(), minlength=len(vectors))
    return {"share_top": float((neigh < frequent).mean()),
            "k_occurrence_skew": float(stats.skew(occ)), "max_k_occurrence": int(occ.max())}
