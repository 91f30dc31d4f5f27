"""Exact and approximate top-k search under any score, nearest words and analogies.

Search is the score's feature maps plus a matmul: the database is mapped once through ``phi_k``
(:func:`index`), each query block through ``phi_q``, and the database is scanned in chunks so
that the [queries, chunk] score block, not the [queries, database] matrix, bounds memory.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb.scoring import Score, get_score
from jaxemb.wordvectors import WordVectors

Array = jax.Array


class SearchError(ValueError):
    """Inputs to a search that cannot work (sizes, k, NaN)."""


# Bytes of the [query_block, chunk] float32 score block; a few MiB stays in cache-friendly sizes
# and leaves room for millions of database rows on any backend.
DEFAULT_BLOCK_BYTES = 64 << 20
DEFAULT_QUERY_BLOCK = 1024


@dataclasses.dataclass(frozen=True, eq=False)
class Index:
    """A database mapped once through a score's key feature map.

    ``keys`` [m, f] = phi_k(database); queries are mapped with the same ``params`` and ``options``.
    """

    keys: Array
    score: Score
    params: tuple
    options: dict
    dim: int  # the database's own dim d (before the feature map)

    def __len__(self) -> int:
        return self.keys.shape[0]

    def search(self, queries, k: int, *, approx: bool = False, recall_target: float = 0.95,
               chunk_size: int | None = None, query_block: int = DEFAULT_QUERY_BLOCK):
        """Top-``k`` keys for each query: (scores [n, k], indices [n, k]), best first.

        ``queries`` [n, d] (or [d], giving [k] results). Ties go to the lower index.
        ``approx`` uses ``jax.lax.approx_max_k`` per chunk (fast on TPU; exact elsewhere).
        """
        Q = _as_float_array("queries", queries)
        single = Q.ndim == 1
        if single:
            Q = Q[None]
        if Q.ndim != 2 or Q.shape[0] == 0:
            raise SearchError(f"queries must have shape [n, d] or [d] with n >= 1, "
                              f"got {np.shape(queries)}")
        if Q.shape[1] != self.dim:
            raise SearchError(f"queries have dim {Q.shape[1]} but the database has dim {self.dim}")
        m = len(self)
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
            raise SearchError(f"k must be an integer in [1, {m}] (the database size), got {k!r}")
        _require_finite("queries", Q)
        n = Q.shape[0]
        qb = min(query_block, n)
        if chunk_size is None:
            chunk_size = DEFAULT_BLOCK_BYTES // (4 * qb)
        chunk = int(min(max(chunk_size, 1), m))
        # Pad the last query block so every block has one shape: one compilation, no retrace.
        n_pad = -n % qb
        if n_pad:
            Q = jnp.concatenate([Q, jnp.zeros((n_pad, Q.shape[1]), Q.dtype)])
        run = functools.partial(_search_block, k=int(k), chunk=chunk, approx=approx,
                                recall_target=recall_target, score=self.score,
                                options=tuple(sorted(self.options.items())))
        outs = [run(Q[i:i + qb], self.keys, self.params) for i in range(0, Q.shape[0], qb)]
        scores = jnp.concatenate([o[0] for o in outs])[:n]
        indices = jnp.concatenate([o[1] for o in outs])[:n]
        return (scores[0], indices[0]) if single else (scores, indices)


def index(database, score: str | Score = "cosine", *params, **options) -> Index:
    """Map ``database`` [m, d] once through ``score``'s key feature map for repeated search."""
    score = get_score(score)
    D = _as_float_array("database", database)
    if D.ndim != 2:
        raise SearchError(f"database must have shape [m, d], got {np.shape(database)}")
    if D.shape[0] == 0:
        raise SearchError("the database is empty (0 rows)")
    _require_finite("database", D)
    keys = _map_keys(D, params, score=score, options=tuple(sorted(options.items())))
    return Index(keys, score, tuple(params), dict(options), D.shape[1])


def top_k(queries, database, k: int, score: str | Score = "cosine", *params,
          approx: bool = False, recall_target: float = 0.95, chunk_size: int | None = None,
          **options):
    """Exact top-``k`` of ``database`` [m, d] for each of ``queries`` [n, d] under ``score``.

    Returns (scores [n, k], indices [n, k]), best first. ``params``/``options`` go to the score
    (e.g. ``W`` for bilinear, ``t`` for cosine). For repeated queries build :func:`index` once.
    """
    return index(database, score, *params, **options).search(
        queries, k, approx=approx, recall_target=recall_target, chunk_size=chunk_size)


def _as_float_array(name: str, x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _require_finite(name: str, x: Array) -> None:
    bad = ~jnp.isfinite(x).all(axis=-1)
    if bool(bad.any()):
        rows = np.flatnonzero(np.asarray(bad))
        raise SearchError(f"{name} contain NaN or inf in {rows.size} row(s), the first at row "
                          f"{int(rows[0])}")


@functools.partial(jax.jit, static_argnames=("score", "options"))
def _map_keys(D, params, *, score: Score, options):
    return score.map_keys(D, *params, **dict(options))


@functools.partial(jax.jit, static_argnames=("k", "chunk", "approx", "recall_target", "score",
                                             "options"))
def _search_block(Q, keys, params, *, k, chunk, approx, recall_target, score, options):
    """Q [b, d] against keys [m, f]: (scores [b, k], indices [b, k]), scanning ``chunk`` rows."""
    Qf = score.map_queries(Q, *params, **dict(options))
    m = keys.shape[0]
    n_chunks = -(-m // chunk)
    kk = min(k, chunk)
    b = Q.shape[0]

    def step(carry, c):
        best_s, best_i = carry
        # The last chunk is clamped to end at m (dynamic_slice clamps the start), so it overlaps
        # the previous one; its already-seen columns are masked rather than padding the database.
        start = jnp.minimum(c * chunk, m - chunk)
        block = jax.lax.dynamic_slice_in_dim(keys, start, chunk)
        s = jnp.dot(Qf, block.T, preferred_element_type=jnp.float32)
        cols = start + jnp.arange(chunk)
        s = jnp.where((cols >= c * chunk)[None, :], s, -jnp.inf)
        if approx:
            cs, ci = jax.lax.approx_max_k(s, kk, recall_target=recall_target)
        else:
            cs, ci = jax.lax.top_k(s, kk)
        # Merge: earlier (lower-index) candidates first, so top_k's stable order breaks ties
        # towards the lower index.
        all_s = jnp.concatenate([best_s, cs], axis=1)
        all_i = jnp.concatenate([best_i, ci + start], axis=1)
        s2, pos = jax.lax.top_k(all_s, k)
        return (s2, jnp.take_along_axis(all_i, pos, axis=1)), None

    init = (jnp.full((b, k), -jnp.inf, jnp.float32), jnp.full((b, k), -1, jnp.int32))
    (scores, indices), _ = jax.lax.scan(step, init, jnp.arange(n_chunks))
    return scores, indices


# --- words ----------------------------------------------------------------------------------

def most_similar(wv: WordVectors, positive: str | Sequence[str], negative: Sequence[str] = (),
                 topn: int = 10, score: str | Score = "cosine",
                 restrict_vocab: int | None = None) -> list[tuple[str, float]]:
    """The ``topn`` words nearest to mean(positive) − mean(negative), query words excluded.

    With ``score="cosine"`` the inputs are unit-normalised before averaging, as in gensim's
    ``most_similar`` (so each word counts equally whatever its norm); with any other score the raw
    vectors are averaged.
    """
    positive = [positive] if isinstance(positive, str) else list(positive)
    negative = list(negative)
    words = positive + negative
    if not words:
        raise SearchError("most_similar needs at least one word")
    rows = [wv.index(w) for w in words]  # raises VocabularyError naming the word
    score = get_score(score)
    vectors = wv.vectors if restrict_vocab is None else wv.vectors[:restrict_vocab]
    src = wv.normalized() if score.name == "cosine" else wv.vectors
    weights = np.array([1.0] * len(positive) + [-1.0] * len(negative), np.float32)
    q = (weights[:, None] * src[rows]).mean(axis=0)
    take = min(topn + len(rows), vectors.shape[0])
    scores, idx = top_k(q, vectors, take, score)
    excluded = set(rows)
    out = [(wv.words[i], float(s)) for s, i in zip(np.asarray(scores), np.asarray(idx), strict=True)
           if int(i) not in excluded]
    return out[:topn]


ANALOGY_METHODS = ("3cosadd", "3cosmul")


def analogy(wv: WordVectors, a: str, b: str, c: str, topn: int = 1, method: str = "3cosadd",
            restrict_vocab: int | None = None) -> list[tuple[str, float]]:
    """"``a`` is to ``b`` as ``c`` is to ?": the ``topn`` answers, a, b and c excluded.

    3CosAdd (Mikolov et al. 2013): argmax_x cos(x, b) − cos(x, a) + cos(x, c).
    3CosMul (Levy & Goldberg 2014): argmax_x cos'(x, b) cos'(x, c) / (cos'(x, a) + 1e-6), with
    cos' = (cos + 1) / 2 mapped to [0, 1] (the ε and the shift as in gensim's
    ``most_similar_cosmul``).
    """
    unit = wv.normalized()
    abc = np.array([[wv.index(a), wv.index(b), wv.index(c)]], np.int32)
    # Query words come from the whole vocabulary; only the candidates are restricted (as gensim).
    n = len(wv) if restrict_vocab is None else min(restrict_vocab, len(wv))
    scores = np.asarray(analogy_scores(jnp.asarray(unit), jnp.asarray(abc), method=method))[0]
    scores = scores[:n]
    available = int(np.isfinite(scores).sum())
    if not 1 <= topn <= available:
        raise SearchError(f"topn must be in [1, {available}] (candidate words other than the "
                          f"question words), got {topn}")
    order = np.argsort(-scores, kind="stable")[:topn]
    return [(wv.words[i], float(scores[i])) for i in order]


def analogy_scores(unit: Array, abc: Array, *, method: str = "3cosadd") -> Array:
    """Scores [q, V] of every candidate for questions ``abc`` [q, 3] (rows of a, b, c).

    ``unit`` [V, d] holds unit-normalised vectors; a, b and c get −inf so they are never answers.
    """
    if method not in ANALOGY_METHODS:
        raise SearchError(f"unknown analogy method {method!r}; use one of {ANALOGY_METHODS}")
    if abc.ndim != 2 or abc.shape[1] != 3:
        raise SearchError(f"abc must have shape [q, 3], got {abc.shape}")
    return _analogy_scores(unit, abc, method)


@functools.partial(jax.jit, static_argnames=("method",))
def _analogy_scores(unit, abc, method):
    if method == "3cosadd":
        # cos is linear in the (unit) query, so the three cosines collapse to one matmul.
        target = unit[abc[:, 1]] - unit[abc[:, 0]] + unit[abc[:, 2]]
        s = target @ unit.T
    else:
        cos = jnp.einsum("qjd,vd->jqv", unit[abc], unit)
        pos = (cos + 1.0) / 2.0
        s = pos[1] * pos[2] / (pos[0] + 1e-6)
    V = unit.shape[0]
    hit = (jnp.arange(V)[None, None, :] == abc[:, :, None]).any(axis=1)
    return jnp.where(hit, -jnp.inf, s)
