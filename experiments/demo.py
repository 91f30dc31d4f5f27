"""The scoring and search demo on real vectors (the main job until the full study lands).

Vectors: PPMI → truncated SVD on the Wikipedia sample in gensim's wheel (Levy, Goldberg & Dagan
2015), the count-based relative of SGNS (Levy & Goldberg 2014: SGNS factorises shifted PMI).

    python -m experiments.run demo            # ~1 min on a 2-core CPU
    python -m experiments.run demo --quick    # smoke-test size
"""

from __future__ import annotations

import dataclasses
import time

import jax.numpy as jnp
import numpy as np
from scipy import stats

from experiments.report import Run, require_positive, table
from jaxemb import corpus, evaluate, io, neighbours, ppmi, scoring, search
from jaxemb.wordvectors import WordVectors


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Seed arithmetic, dot vs cosine on real vectors, standard benchmarks, analogies."""

    min_count: int = 5
    """Words seen fewer times are dropped from the vocabulary."""
    window: int = 5
    """Co-occurrence window (tokens either side)."""
    dim: int = 100
    """Vector dimension (truncated SVD rank)."""
    max_docs: int | None = None
    """Use only the first N Wikipedia articles (None: all 106)."""
    hub_queries: int = 2000
    """Query words for the hubness measurement."""
    seed: int = 0
    """Seed for the SVD start vector and the choice of hubness queries."""
    quick: bool = False
    """Smoke-test size: 20 articles, dim 32, 300 hubness queries."""

    def resolved(self) -> DemoConfig:
        if self.quick:
            return dataclasses.replace(self, max_docs=20, dim=32, hub_queries=300)
        return self

    def validate(self) -> None:
        require_positive(self, "min_count", "window", "dim", "hub_queries")


QUERY_WORDS = ("king", "france", "computer", "music", "good", "water")


def run_demo(cfg: DemoConfig, run: Run, progress) -> None:
    _seed_arithmetic(run)
    wv = _vectors(cfg, run, progress)
    _norms(wv, run)
    _neighbours(wv, run)
    _hubness(cfg, wv, run)
    _benchmarks(wv, run)
    _king_queen(wv, run)


SEED_A, SEED_B, SEED_C = (0.2, 3.0), (0.4, 3.0), (0.2, 3.0)
"""The vectors of the seed question: is a·b > a·c although c = a?"""


def seed_arithmetic(scores=("dot", "cosine", "neg_sq_euclidean")) -> list[dict]:
    """[{score, a_b, a_c}] for a = [0.2, 3], b = [0.4, 3], c = a under each jaxemb score."""
    a, b, c = (jnp.asarray(np.array(v)) for v in (SEED_A, SEED_B, SEED_C))
    out = []
    for name in scores:
        s = scoring.get_score(name)
        out.append({"score": name, "a_b": float(s(a, b)), "a_c": float(s(a, c))})
    return out


def _seed_arithmetic(run: Run) -> None:
    rows = []
    for r in seed_arithmetic():
        ab, ac = r["a_b"], r["a_c"]
        rows.append((r["score"], f"{ab:.6g}", f"{ac:.6g}", "a·b" if ab > ac else "a·c (identical)"))
        run.log("seed_arithmetic", **r)
    run.add("## The seed question: why is [0.2,3]·[0.4,3] larger than [0.2,3]·[0.2,3]?\n\n"
            + table(("score", "a=[0.2,3], b=[0.4,3]", "a, c=[0.2,3]", "ranks first"), rows,
                    "jaxemb.scoring on the vectors of the question.")
            + "\nThe dot product is not a similarity: it grows with length, and b is longer than "
            "c. Cosine removes length (and ranks the identical vector first); −‖q−k‖² ranks it "
            "first too. Which one a model should use depends on whether length carries "
            "information (below: word frequency).\n")


def _vectors(cfg: DemoConfig, run: Run, progress) -> WordVectors:
    t0 = time.perf_counter()
    with progress("parse Wikipedia sample"):
        docs = corpus.wiki_sample()[: cfg.max_docs]
    vocab = corpus.build_vocabulary(docs, min_count=cfg.min_count)
    ids = vocab.encode(docs)
    with progress(f"PPMI + SVD (V={len(vocab)}, d={cfg.dim})"):
        matrix = ppmi.ppmi(ppmi.cooccurrence(ids, len(vocab), cfg.window))
        vectors = ppmi.svd_vectors(matrix, cfg.dim, seed=cfg.seed)
    wv = WordVectors(vocab.words, vectors, vocab.counts)
    io.save_word2vec(run.path / "vectors.txt", wv)
    tokens = int(sum(len(d) for d in docs))
    run.log("vectors", tokens=tokens, vocab=len(vocab), dim=cfg.dim,
            seconds=time.perf_counter() - t0)
    run.add(f"## Vectors\n\nPPMI (α = 0.75) → truncated SVD, U·√Σ, d = {cfg.dim}, window "
            f"{cfg.window}, min_count {cfg.min_count}, on {len(docs)} articles of gensim's "
            f"Wikipedia sample ({tokens} tokens, {len(vocab)} words). Saved as `vectors.txt` "
            "(word2vec text format).\n")
    return wv


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def norm_frequency_figure(vectors: np.ndarray, counts: np.ndarray, label: str = "‖v‖"):
    """(figure, Spearman ρ) of vector norm against log corpus count, one point per word."""
    plt = pyplot()
    norms = np.linalg.norm(vectors, axis=1)
    logf = np.log(counts)
    rho = float(stats.spearmanr(norms, logf).statistic)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(logf, norms, s=3, alpha=0.4)
    ax.set_xlabel("log corpus count")
    ax.set_ylabel(label)
    ax.set_title(f"vector norm vs frequency (Spearman ρ = {rho:.2f})")
    fig.tight_layout()
    return fig, rho


def _norms(wv: WordVectors, run: Run) -> None:
    fig, rho = norm_frequency_figure(wv.vectors, wv.counts)
    plt = pyplot()
    run.log("norms", spearman_norm_logfreq=rho)
    fig.savefig(run.path / "norm_vs_frequency.png", dpi=120)
    plt.close(fig)
    run.add(f"## What the length encodes\n\nSpearman ρ(‖v‖, log count) = {rho:.3f} over "
            f"{len(wv)} words.\n\n![norm vs frequency](norm_vs_frequency.png)\n")


def _neighbours(wv: WordVectors, run: Run) -> None:
    rows = []
    for w, by_cos, by_dot in neighbours.neighbour_rows(wv, QUERY_WORDS):
        rows.append((w, ", ".join(by_cos), ", ".join(by_dot)))
        run.log("neighbours", word=w, cosine=by_cos, dot=by_dot)
    run.add("## Nearest neighbours: cosine vs dot\n\n"
            + table(("word", "top 5 by cosine", "top 5 by dot"), rows,
                    "Same vectors, same exact search; only the score differs. Query word "
                    "excluded."))


def _hubness(cfg: DemoConfig, wv: WordVectors, run: Run) -> None:
    rng = np.random.default_rng(cfg.seed)
    queries = rng.choice(len(wv), size=min(cfg.hub_queries, len(wv)), replace=False)
    frequent = max(1, len(wv) // 100)  # the 1% most frequent words
    rows = []
    for name in ("cosine", "dot"):
        h = neighbours.hubness(wv.vectors, queries, frequent, name)
        share, skew = h["share_top"], h["k_occurrence_skew"]
        rows.append((name, f"{100 * share:.1f}%", f"{skew:.2f}", h["max_k_occurrence"]))
        run.log("hubness", score=name, share_top1pct=share, k_occurrence_skew=skew,
                max_k_occurrence=h["max_k_occurrence"])
    run.add("## Hubness: how often frequent words crowd others' neighbour lists\n\n"
            + table(("score", f"top-10 slots taken by the {frequent} most frequent words",
                     "skew of k-occurrence", "max k-occurrence"), rows,
                    f"{len(queries)} random query words (seed {cfg.seed}), top-10 over the "
                    f"whole vocabulary by exact search; uniform chance would be "
                    f"{100 * frequent / len(wv):.1f}%."))


def _benchmarks(wv: WordVectors, run: Run) -> None:
    rows = []
    for name in ("wordsim353.tsv", "simlex999.txt"):
        res = evaluate.word_pairs(wv, evaluate.load_word_pairs(corpus.gensim_datapath(name)))
        rows.append((name, f"{res.spearman:.3f}", res.n_pairs, res.n_oov))
        run.log("word_pairs", dataset=name, spearman=res.spearman, pairs=res.n_pairs,
                oov=res.n_oov)
    sections = evaluate.load_analogies(corpus.gensim_datapath("questions-words.txt"))
    arows = []
    for method in ("3cosadd", "3cosmul"):
        res = evaluate.analogies(wv, sections, method=method)
        t = res.total
        arows.append((method, f"{100 * res.accuracy:.2f}%", t.correct, t.answered, t.n_oov))
        run.log("analogies", method=method, accuracy=res.accuracy, correct=t.correct,
                answered=t.answered, oov=t.n_oov)
    run.add("## Standard benchmarks\n\n"
            + table(("data", "Spearman ρ", "pairs used", "OOV pairs"), rows,
                    "Cosine similarity vs human ratings; pairs with a word outside the "
                    "vocabulary are skipped (counted as OOV).")
            + "\n" + table(("method", "accuracy", "correct", "answered", "OOV questions"),
                           arows, f"Google analogies. Protocol: {res.protocol}"))


def king_queen(wv: WordVectors, topn: int = 5,
               methods=("3cosadd", "3cosmul")) -> list[tuple[str, list[tuple[str, float]]]]:
    """(method, top ``topn`` of king − man + woman) per method; [] if a word is missing."""
    words = ("man", "king", "woman")
    if not all(w in wv for w in words):
        return []
    return [(m, search.analogy(wv, *words, topn=topn, method=m)) for m in methods]


def _king_queen(wv: WordVectors, run: Run) -> None:
    rows = []
    for method, top in king_queen(wv):
        rows.append((method, ", ".join(f"{w} ({s:.3f})" for w, s in top)))
        run.log("king_queen", method=method, top5=top)
    if not rows:
        return
    run.add("## king − man + woman\n\n" + table(
        ("method", "top 5 (query words excluded)"), rows,
        "Whatever these vectors say: a 453k-token corpus is small for this analogy."))
