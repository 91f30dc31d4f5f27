"""Count-based word vectors: window co-occurrences → (shifted) PPMI → truncated SVD.

The closed-form reference for SGNS: Levy & Goldberg (2014) show SGNS with k negatives implicitly
factorises the shifted PMI matrix PMI − log k; Levy, Goldberg & Dagan (2015) give the
hyper-parameters used here (context-distribution smoothing α = 0.75, symmetric U·√Σ vectors).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def cooccurrence(docs: Sequence[np.ndarray], vocab_size: int, window: int = 5) -> sp.csr_matrix:
    """Symmetric counts [V, V] of word pairs at most ``window`` tokens apart, within documents."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    rows, cols = [], []
    for ids in docs:
        for off in range(1, min(window, len(ids) - 1) + 1):
            rows += [ids[:-off], ids[off:]]
            cols += [ids[off:], ids[:-off]]
    if not rows:
        return sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    return sp.coo_matrix((np.ones(r.size), (r, c)), shape=(vocab_size, vocab_size)).tocsr()


def ppmi(counts: sp.csr_matrix, alpha: float = 0.75, shift: float = 1.0) -> sp.csr_matrix:
    """max(PMI − log shift, 0), with context probabilities smoothed by count^alpha.

    PMI(w, c) = log  #(w,c) · Σ_c' #(c')^α  /  (#(w) · #(c)^α); only observed pairs are stored.
    """
    counts = counts.tocoo()
    total = counts.sum()
    word = np.asarray(counts.sum(axis=1)).ravel()
    ctx = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    pmi = (np.log(counts.data) + np.log(total) - np.log(word[counts.row])
           + np.log(ctx.sum() / total) - np.log(ctx[counts.col]) - np.log(shift))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def svd_vectors(matrix: sp.csr_matrix, dim: int, seed: int = 0) -> np.ndarray:
    """U_d · √Σ_d [V, dim] float32 (the symmetric weighting of Levy et al. 2015)."""
    if not 1 <= dim < min(matrix.shape):
        raise ValueError(f"dim must be in [1, {min(matrix.shape) - 1}], got {dim}")
    v0 = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    u, s, _ = spla.svds(matrix, k=dim, v0=v0)
    order = np.argsort(-s)
    return (u[:, order] * np.sqrt(s[order])).astype(np.float32)
