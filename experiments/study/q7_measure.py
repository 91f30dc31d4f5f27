"""Q7's measurements beyond in vs out: the output-vector initialisation ablation, the dimension
sweep (PPMI-SVD truncations, optionally SGNS) and composition of two words' vectors (seed 002).

Every function returns JSON values (lists, dicts with str keys) for :class:`q7.Results`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sstats

from experiments.study.sgns_common import KINDS, SGNSStudy, unit
from jaxemb import benchmarks, stats

COMPOSITIONS = ("a⊙b", "a+b", "cos-average")
TOP_K = 10  # neighbours of a composition that the composition metrics read
BENCH = ("ws353", "simlex", "3cosadd")


# --- the output-vector initialisation ablation -------------------------------------------------

def init_ablation(study: SGNSStudy, progress) -> dict | None:
    """{kind: [per-seed benchmarks]} of dot trained with random output vectors
    (``dot_out_random``: uniform ±0.5/d like the inputs, same seeds, so the input tables start
    identical); None without --init-ablation."""
    if not study.config.init_ablation:
        return None
    run = study.extra_variant("dot_out_random", progress)
    if run.result is None:
        return {"error": run.error}
    with progress("Q7: benchmarks of dot_out_random"):
        return {kd: [benchmarks.evaluate_vectors(run.vectors(i, kd), study.bench, "cosine")
                     for i in study.seed_indices] for kd in KINDS}


# --- the dimension sweep ---------------------------------------------------------------------

def spearman(gold: np.ndarray, scores: np.ndarray) -> float:
    """Spearman ρ (ties at their mean rank), as scipy's, fast enough for the bootstrap."""
    return float(np.corrcoef(sstats.rankdata(gold), sstats.rankdata(scores))[0, 1])


def pair_cosines(X: np.ndarray, bench: benchmarks.Benchmarks, name: str) -> np.ndarray:
    """[n] cosine of each in-vocabulary pair of benchmark ``name`` ('ws353', 'simlex')."""
    ia, ib, _, _ = bench.pairs[name]
    U = unit(X.astype(np.float64))
    return np.einsum("nd,nd->n", U[ia], U[ib])


def ppmi_sweep(vectors: dict, bench: benchmarks.Benchmarks, n_resamples: int = 1000) -> dict:
    """{str(d): {ws353, simlex, 3cosadd, and per benchmark 'd_<name>': [ρ(d) − ρ(d_max), low,
    high]}}: each truncation's benchmarks, and its ρ against the largest d's with a paired BCa
    bootstrap over the benchmark's word pairs (the same pairs drawn for both)."""
    dims = sorted(vectors)
    top = dims[-1]
    out = {}
    for d in dims:
        ev = benchmarks.evaluate_vectors(vectors[d], bench, "cosine", ("3cosadd",))
        rec = {k: ev[k] for k in BENCH}
        for name in ("ws353", "simlex"):
            gold = bench.pairs[name][2]
            if d == top or gold.size < 3:
                rec[f"d_{name}"] = None
                continue
            iv = stats.bootstrap_interval(
                lambda g, x, y: spearman(g, x) - spearman(g, y), gold,
                pair_cosines(vectors[d], bench, name), pair_cosines(vectors[top], bench, name),
                n_resamples=n_resamples)
            rec[f"d_{name}"] = [iv.mean, iv.low, iv.high]
        out[str(d)] = rec
    return out


def sgns_sweep(study: SGNSStudy, progress) -> dict:
    """{str(d): [per-seed benchmarks of the dot model's input vectors]} at --dim (the study's
    own dot model) and each --sweep-sgns-dims (trained here, every seed)."""
    c = study.config
    out = {str(c.dim): [study.evaluation("dot", "in", i) for i in study.seed_indices]}
    for d in sorted(set(c.sweep_sgns_dims) - {c.dim}):
        run = study.extra_variant("dot", progress, dim=d)
        if run.result is not None:
            out[str(d)] = [benchmarks.evaluate_vectors(run.vectors(i), study.bench, "cosine")
                           for i in study.seed_indices]
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


# --- composition of two words (seed 002) -------------------------------------------------------

def parse_pairs(pairs, words) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """(pairs 'a:b[:target]' as (a, b, target or None) with every word in ``words``, the
    pairs skipped because a word is missing)."""
    vocab = set(words)
    used, skipped = [], []
    for p in pairs:
        a, b, *t = p.split(":")
        ok = a in vocab and b in vocab and all(w in vocab for w in t)
        (used if ok else skipped).append((a, b, t[0] if t else None) if ok else p)
    return used, skipped


def compose(X: np.ndarray, a: int, b: int, how: str) -> np.ndarray:
    """[d] the composition of rows a and b: element-wise product, sum, or mean of unit rows."""
    u, v = X[a].astype(np.float64), X[b].astype(np.float64)
    if how == "a⊙b":
        return u * v
    if how == "a+b":
        return u + v
    if how == "cos-average":
        return (u / np.linalg.norm(u) + v / np.linalg.norm(v)) / 2
    raise ValueError(f"unknown composition {how!r}; use one of {COMPOSITIONS}")


def _scores(U: np.ndarray, q: np.ndarray, exclude) -> np.ndarray:
    """[V] cosine of unit rows ``U`` [V, d] to ``q`` [d]; −inf at ``exclude``."""
    s = U @ (q / max(np.linalg.norm(q), 1e-12))
    s[list(exclude)] = -np.inf
    return s


def nearest(U: np.ndarray, q: np.ndarray, exclude, k: int) -> np.ndarray:
    """[k] rows of unit rows ``U`` [V, d] of highest cosine to ``q`` [d], ``exclude`` left out,
    best first."""
    s = _scores(U, q, exclude)
    top = np.argpartition(-s, k - 1)[:k]
    return top[np.argsort(-s[top], kind="stable")]


def composition_metrics(X: np.ndarray, a: int, b: int, how: str, target: int | None = None,
                        k: int = TOP_K, U: np.ndarray | None = None) -> dict:
    """How a composition's top-k cosine neighbours N (a and b excluded) relate to a and b:

    - ``rel_a``, ``rel_b``: mean over n ∈ N of cos(n, a), cos(n, b);
    - ``base_a``, ``base_b``: the same mean over every other word (what a random word gives);
    - ``overlap``: |N ∩ (N_a ∪ N_b)| / k, with N_a a's own top-k neighbours (b excluded);
    - ``rank``: 1-based cosine rank of ``target`` among all words but a and b (None if none).

    ``U``: the unit rows of ``X`` when the caller has them already.
    """
    U = unit(X.astype(np.float64)) if U is None else U
    k = min(k, len(U) - 2)
    q = compose(X, a, b, how)
    N = nearest(U, q, (a, b), k)
    own = set(nearest(U, U[a], (a, b), k)) | set(nearest(U, U[b], (a, b), k))
    total = U.sum(axis=0) - U[a] - U[b]  # Σ over the other words: their mean cosine at once
    rec = {"top": N.tolist(), "rel_a": float((U[N] @ U[a]).mean()),
           "rel_b": float((U[N] @ U[b]).mean()), "base_a": float(total @ U[a] / (len(U) - 2)),
           "base_b": float(total @ U[b] / (len(U) - 2)),
           "overlap": len(own & set(N.tolist())) / k, "rank": None}
    if target is not None:
        s = _scores(U, q, (a, b))
        rec["rank"] = int(np.sum(s > s[target])) + 1
    return rec


def composition(sources: dict, words, pairs) -> dict:
    """{"pairs": [[a, b, target]], "skipped": [...], "results": {source: [per seed: {how:
    [per pair: composition_metrics with 'top' as words]}]}}; ``sources``: {label: [X per
    seed]}."""
    used, skipped = parse_pairs(pairs, words)
    row = {w: i for i, w in enumerate(words)}
    results = {}
    for label, Xs in sources.items():
        results[label] = []
        for X in Xs:
            U, per = unit(X.astype(np.float64)), {}
            for how in COMPOSITIONS:
                per[how] = []
                for a, b, t in used:
                    m = composition_metrics(X, row[a], row[b], how, row.get(t), U=U)
                    m["top"] = [words[i] for i in m["top"]]
                    per[how].append(m)
            results[label].append(per)
    return {"pairs": [[a, b, t] for a, b, t in used], "skipped": skipped, "results": results}


def relatedness(per_seed: list, how: str, key: str = "rel") -> list[float]:
    """[seeds] mean over pairs and both words of ``key``_a, ``key``_b ('rel' or 'base'), or of
    ``key`` itself ('overlap'): one figure per seed for paired comparisons."""
    def one(m):
        return m[key] if key in m else (m[f"{key}_a"] + m[f"{key}_b"]) / 2
    return [float(np.mean([one(m) for m in s[how]])) if s[how] else float("nan")
            for s in per_seed]
