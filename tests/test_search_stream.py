"""Streamed exact search of a memory-mapped file against numpy's top-k of the whole matrix."""

import numpy as np
import pytest

from jaxemb import search_stream


@pytest.fixture
def mapped(tmp_path, rng):
    X = rng.standard_normal((3001, 12)).astype(np.float32)
    X[2500] = X[40]  # a tie across chunks: the lower row must come first
    path = tmp_path / "db.npy"
    np.save(path, X)
    return path, X


@pytest.mark.parametrize("score", ["cosine", "dot"])
def test_stream_top_k_equals_numpy_on_a_memory_mapped_file(mapped, rng, score):
    path, X = mapped
    Q = rng.standard_normal((7, 12)).astype(np.float32)
    Q[0] = X[40] * 2.0
    D = search_stream.open_vectors(path)
    assert isinstance(D, np.memmap)
    s, i = search_stream.stream_top_k(D, Q, 5, score, chunk_rows=700)  # ragged last chunk
    Q64, X64 = Q.astype(np.float64), X.astype(np.float64)
    if score == "cosine":
        Q64 = Q64 / np.linalg.norm(Q64, axis=1, keepdims=True)
        X64 = X64 / np.linalg.norm(X64, axis=1, keepdims=True)
    full = Q64 @ X64.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(s, np.take_along_axis(full, want, axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(i, want)  # want: numpy's stable order, ties to the lower row
    if score == "cosine":
        assert list(i[0, :2]) == [40, 2500]  # the tie across chunks
    np.testing.assert_array_equal(np.asarray(D[40]), X[40])  # still readable after release
    s1, i1 = search_stream.stream_top_k(D, Q[3], 5, score, chunk_rows=4096)  # one chunk, [d]
    np.testing.assert_array_equal(i1, i[3])


def test_stream_errors_name_the_problem(tmp_path, mapped):
    path, X = mapped
    bad = X.copy()
    bad[1500, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    D = search_stream.open_vectors(tmp_path / "bad.npy")
    with pytest.raises(search_stream.StreamSearchError, match=r"rows 1400\.\.2099 .*NaN"):
        search_stream.stream_top_k(D, X[:2], 3, chunk_rows=700)
    with pytest.raises(search_stream.StreamSearchError, match="k must be an integer"):
        search_stream.stream_top_k(D, X[:2], 0)
    np.save(tmp_path / "ints.npy", np.zeros((4, 3), np.int32))
    with pytest.raises(search_stream.StreamSearchError, match="want float32"):
        search_stream.open_vectors(tmp_path / "ints.npy")
