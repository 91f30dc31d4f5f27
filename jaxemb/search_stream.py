"""Exact top-k over a database larger than memory: a memory-mapped [m, d] file searched in chunks.

Each chunk of ``chunk_rows`` rows is copied from the mapping, indexed and searched with
:mod:`jaxemb.search` (the same exact search, so the same results as one big index, ties going to
the lower row), and merged into the running top k on the host. Then the chunk's pages are
released from this process (``madvise(MADV_DONTNEED)``: a read-only file mapping drops them, the
kernel's page cache may keep them), so the process's resident memory stays near one chunk
(its copy, its mapped keys, the score blocks) whatever the file's size.

This module reads files (its job); :func:`open_vectors` opens a ``.npy`` file without reading it.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable

import numpy as np

from jaxemb import search
from jaxemb.scoring import Score

DEFAULT_CHUNK_ROWS = 1 << 18  # 262,144 rows: 300 MB of float32 at d = 300


class StreamSearchError(ValueError):
    """A streamed search that cannot work (file, shapes, k, chunk size, NaN rows)."""


def open_vectors(path) -> np.ndarray:
    """The [m, d] float32 matrix of a ``.npy`` file, memory-mapped read-only (nothing read)."""
    try:
        X = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise StreamSearchError(f"cannot map {path!s} as a .npy matrix: {e}") from None
    if X.ndim != 2 or X.dtype != np.float32:
        raise StreamSearchError(f"{path!s} holds a {X.dtype} array of shape {X.shape}; "
                                f"want float32 [m, d]")
    return X


def _release(X: np.ndarray, start: int, stop: int) -> None:
    """Drop rows [start, stop) of a memory-mapped X from this process's resident pages."""
    mm = getattr(X, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or not hasattr(mm, "madvise"):
        return
    row = X.strides[0]
    base = X.offset % mmap.ALLOCATIONGRANULARITY  # where X starts within the mapping
    lo = base + start * row
    lo -= lo % mmap.PAGESIZE
    hi = min(len(mm), base + stop * row)
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def stream_top_k(database: np.ndarray, queries, k: int, score: str | Score = "cosine",
                 *params, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 progress: Callable[[int, int], None] | None = None, **options):
    """Exact top-``k`` of ``database`` [m, d] (a memmap, or any array) for ``queries`` [n, d].

    Returns numpy (scores [n, k] float32, indices [n, k] int64), best first, ties to the lower
    row: the same as ``search.top_k(queries, database, k, score, ...)``. ``progress(done, m)``
    is called after each chunk.
    """
    if not hasattr(database, "ndim") or database.ndim != 2 or database.shape[0] == 0:
        raise StreamSearchError(f"database must be a non-empty [m, d] array, got shape "
                                f"{getattr(database, 'shape', None)}")
    m = database.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
        raise StreamSearchError(f"k must be an integer in [1, {m}] (the database size), got "
                                f"{k!r}")
    if not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise StreamSearchError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    Q = np.asarray(queries, np.float32)
    single = Q.ndim == 1
    Q = Q[None] if single else Q
    best_s = best_i = None
    for start in range(0, m, int(chunk_rows)):
        stop = min(m, start + int(chunk_rows))
        chunk = np.array(database[start:stop], np.float32)  # a copy: the mapping is released
        _release(database, start, stop)
        try:
            ix = search.index(chunk, score, *params, **options)
            s, i = ix.search(Q, min(int(k), stop - start))
        except search.QueryError:
            raise
        except search.SearchError as e:
            raise StreamSearchError(f"rows {start}..{stop - 1} of the database: {e}") from None
        s, i = np.asarray(s), np.asarray(i).astype(np.int64) + start
        if best_s is not None:
            # Earlier chunks first: the stable sort then breaks ties towards the lower row.
            s, i = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(s, order, axis=1)
        best_i = np.take_along_axis(i, order, axis=1)
        del chunk, ix
        if progress is not None:
            progress(stop, m)
    if single:
        return best_s[0], best_i[0]
    return best_s, best_i
