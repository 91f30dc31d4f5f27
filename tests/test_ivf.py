"""The MIPS feature map and the IVF index against exact numpy search."""

import jax
import numpy as np
import pytest

from jaxemb import ivf
from jaxemb import scoring as S

D, NLIST, K = 12, 16, 10


def _planted(rng, m=3000, n=60, clusters=40, spread=0.25):
    """Clustered planted data with varied norms (so dot and cosine rank differently)."""
    centers = rng.standard_normal((clusters, D)).astype(np.float32)
    X = centers[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, D))
    X = (X * rng.lognormal(0.0, 0.4, (m, 1))).astype(np.float32)
    Q = (centers[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, D)))
    return X, Q.astype(np.float32)


def _exact(name, Q, X):
    Q, X = Q.astype(np.float64), X.astype(np.float64)
    if name == "cosine":
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return Q @ X.T


def _recall(idx, ref, k=K):
    true = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    rows = zip(np.asarray(idx).tolist(), true, strict=True)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in rows]))


def test_mips_map_turns_dot_top_k_into_nearest_neighbours(rng):
    X, Q = _planted(rng, m=500, n=20)
    M = S.mips_norm(X)
    Xm = np.asarray(S.mips.map_keys(X, M), np.float64)
    Qm = np.asarray(S.mips.map_queries(Q, M), np.float64)
    # Every mapped key lies on the sphere of radius M; the value is dot's.
    np.testing.assert_allclose(np.linalg.norm(Xm, axis=1), M, rtol=1e-5)
    dot = Q.astype(np.float64) @ X.T.astype(np.float64)
    np.testing.assert_allclose(Qm @ Xm.T, dot, rtol=1e-4, atol=1e-4)
    # Exact top-k under dot == nearest neighbours and == best cosines of the mapped vectors.
    top_dot = np.argsort(-dot, axis=1)[:, :K]
    dist = ((Qm[:, None, :] - Xm[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.argsort(dist, axis=1)[:, :K], top_dot)
    cos = (Qm / np.linalg.norm(Qm, axis=1, keepdims=True)) @ (Xm / M).T
    np.testing.assert_array_equal(np.argsort(-cos, axis=1)[:, :K], top_dot)
    # Without the extra coordinate, nearest neighbours are not the dot's top-k (norms vary).
    raw = ((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1)
    assert (np.argsort(raw, axis=1)[:, :K] != top_dot).any()


def test_mips_norm_refuses_bad_databases():
    with pytest.raises(S.ScoreError, match="NaN or inf"):
        S.mips_norm(np.array([[1.0, np.nan]]))
    with pytest.raises(S.ScoreError, match=r"shape \[m, d\]"):
        S.mips_norm(np.zeros((0, 3)))


@pytest.fixture(scope="module")
def planted():
    return _planted(np.random.default_rng(7))


@pytest.mark.parametrize("name", ["cosine", "dot"])
def test_ivf_recall_on_planted_clusters(planted, name):
    X, Q = planted
    ref = _exact(name, Q, X)
    index = ivf.build(jax.random.key(0), X, NLIST, name)
    assert index.list_sizes().sum() == len(X) and sorted(index.ids.tolist()) == list(range(len(X)))
    recalls = {}
    for nprobe in (1, 4, NLIST):
        s, idx = ivf.search(index, Q, K, nprobe)
        idx = np.asarray(idx)
        assert idx.shape == (len(Q), K) and (idx >= 0).all()
        # Scores are the exact scores of the rows returned, best first.
        np.testing.assert_allclose(np.asarray(s), np.take_along_axis(ref, idx, 1), rtol=1e-5,
                                   atol=1e-5)
        assert (np.diff(np.asarray(s), axis=1) <= 0).all()
        recalls[nprobe] = _recall(idx, ref)
    assert recalls[NLIST] == 1.0  # every list probed: exact
    assert recalls[4] >= 0.9, recalls  # a quantizer that ignored the data would sit near 0.25
    assert recalls[1] <= recalls[4] <= recalls[NLIST]


def test_ivf_any_score_and_single_query(planted):
    X, Q = planted
    ref = -((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1)
    index = ivf.build(jax.random.key(1), X, 8, "neg_sq_euclidean")
    _, idx = ivf.search(index, Q, K, 8)
    assert _recall(idx, ref) == 1.0
    s1, i1 = ivf.search(index, Q[3], K, 8)
    assert i1.shape == (K,)
    np.testing.assert_array_equal(np.asarray(i1), np.asarray(idx)[3])


def test_mips_quantizer_is_exact_when_all_lists_are_probed(planted):
    X, Q = planted
    ref = _exact("dot", Q, X)
    index = ivf.build(jax.random.key(2), X, NLIST, "dot", quantizer="mips")
    assert _recall(ivf.search(index, Q, K, NLIST)[1], ref) == 1.0
    assert _recall(ivf.search(index, Q, K, 4)[1], ref) > 0.5


def test_ivf_is_a_function_of_its_key(planted):
    X, _ = planted
    a = ivf.build(jax.random.key(3), X, NLIST, "cosine", iters=3)
    b = ivf.build(jax.random.key(3), X, NLIST, "cosine", iters=3)
    np.testing.assert_array_equal(np.asarray(a.centroids), np.asarray(b.centroids))
    np.testing.assert_array_equal(a.offsets, b.offsets)


def test_ivf_errors_name_the_problem(planted):
    X, Q = planted
    key = jax.random.key(0)
    with pytest.raises(ivf.IVFError, match="nlist must be an integer in"):
        ivf.build(key, X[:5], 6)
    bad = X[:50].copy()
    bad[7, 2] = np.inf
    with pytest.raises(ivf.IVFError, match="database contain NaN or inf"):
        ivf.build(key, bad, 4)
    with pytest.raises(ivf.IVFError, match="quantizer must be one of"):
        ivf.build(key, X[:50], 4, quantizer="lift")
    index = ivf.build(key, X[:200], 4, "dot", iters=2)
    with pytest.raises(ivf.IVFError, match="nprobe must be an integer in \\[1, 4\\]"):
        ivf.search(index, Q, K, 5)
    with pytest.raises(ivf.IVFError, match="k must be an integer in \\[1, 200\\]"):
        ivf.search(index, Q, 201, 2)
    with pytest.raises(ivf.IVFError, match=f"shape \\[n, {D}\\]"):
        ivf.search(index, Q[:, :3], K, 2)
    nan_q = Q.copy()
    nan_q[1, 0] = np.nan
    with pytest.raises(ivf.IVFError, match="queries contain NaN or inf \\(first at row 1\\)"):
        ivf.search(index, nan_q, K, 2)
