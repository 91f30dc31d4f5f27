"""The SGNS questions of the main report: Q1, Q2, Q3 and Q7, on vectors trained here.

- Q1 "Why is [0.2,3]·[0.4,3] larger than [0.2,3]·[0.2,3]?": what norms encode in trained SGNS
  vectors, and what changes when dot replaces cosine at evaluation time (same vectors).
- Q2 "Why does 'don't' relate to 'like' if they are not similar?": first-order in·out scores
  (co-occurrence, PMI) vs second-order in·in cosine (substitutability); in·out ≈ PMI − log k
  (Levy & Goldberg 2014); the planted corpus, whose true PMI is known (Arora et al. 2016).
- Q3 "Why not cosine? Is it possible at all?": SGNS trained with dot, cosine (t = 1 fixed,
  t fixed larger, t learned) and bilinear scores; the loss floor of a bounded logit.
- Q7 "Why do the output weights become word vectors?": in vs out vs in+out vectors.

Every variant trains once, its seeds vmapped (``jaxemb.train``); the sections only evaluate.

    from experiments.sgns_study import SGNSStudyConfig, run_sgns_study
    run_sgns_study(SGNSStudyConfig(), run, progress)           # wiki sample
    run_sgns_study(SGNSStudyConfig(quick=True), run, progress) # smoke test
    SGNSStudyConfig(corpus="text8")                            # the large size

Measured on the 2-core CPU while other jobs shared it (load average 5–9): the default (wiki
sample, 5 variants × 3 seeds × 10 epochs, planted check) took 235 s of CPU time (237 s wall at
load ~6; 442 s at load ~9), about 80% of it training; quick took 40 s of CPU time, mostly XLA
compilation (one per variant). text8 (17M tokens) takes about 40× the training time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Sequence

import matplotlib
import numpy as np
import scipy.sparse as sp
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments import demo  # noqa: E402
from experiments.bench_sgns import ci95  # noqa: E402
from experiments.report import Run  # noqa: E402
from jaxemb import corpus, datasets, evaluate, ppmi, sgns, train  # noqa: E402
from jaxemb.datasets import load_corpus  # noqa: E402
from jaxemb.wordvectors import WordVectors  # noqa: E402


class SGNSStudyError(ValueError):
    """A bad setting of the SGNS study."""


VARIANTS = ("dot", "cosine_t1", "cosine_fixed", "cosine_learned", "bilinear")
KINDS = ("in", "out", "in+out")


@dataclasses.dataclass(frozen=True)
class SGNSStudyConfig:
    """SGNS trained once per score variant (seeds vmapped); Q1, Q2, Q3, Q7 evaluate it."""

    corpus: str = "wiki"
    """'wiki' (gensim's Wikipedia sample), 'text8' (the large size; downloaded once), 'lee',
    'planted', or a text file (one document per line)."""
    max_docs: int | None = None
    """Use only the first N documents (None: all)."""
    min_count: int = 5
    """Words seen fewer times are dropped from the vocabulary."""
    dim: int = 100
    """Vector dimension of every SGNS model (and of the PPMI-SVD reference)."""
    window: int = 5
    """Maximal window (word2vec's dynamic window: b ~ U{1..window} per centre)."""
    negative: int = 5
    """Negatives per positive pair (k)."""
    sample: float = 1e-3
    """Subsampling threshold (0: keep every token)."""
    epochs: int = 10
    """Epochs of every variant."""
    lr: float = 0.025
    """Sparse-SGD learning rate, decayed linearly to 1e-4 (word2vec's schedule)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds trained together (vmapped); at least 3 for the 95% intervals."""
    variants: tuple[str, ...] = VARIANTS
    """Scores SGNS is trained with (Q3): dot, cosine_t1 (t = 1 fixed), cosine_fixed (t =
    --cosine-temperature fixed), cosine_learned (t learned from --learned-temperature-init),
    bilinear (in·W·out, W learned from the identity). 'dot' is required (Q1, Q2, Q7 use it)."""
    cosine_temperature: float = 10.0
    """The fixed temperature of cosine_fixed (logit = t·cos)."""
    learned_temperature_init: float = 1.0
    """Initial temperature of cosine_learned."""
    pair_min_count: float = 20.0
    """Q2: word pairs used are those SGNS sees at least this often per epoch (expected count)."""
    pair_top_words: int = 2000
    """Q2: ... and whose two words are among this many most frequent ones."""
    pmi_draws: int = 2
    """Q2/Q3: subsampling draws averaged to estimate the pairs SGNS trains on."""
    query_words: tuple[str, ...] = ("king", "france", "computer", "music", "good", "water",
                                    "like", "play", "war", "love")
    """Words whose neighbours (Q1) and most associated partner (Q2) are shown."""
    example_min_count: float = 5.0
    """Q2 examples: a query word's partner is the word of highest PMI among those it is seen
    with at least this often per epoch."""
    hub_queries: int = 2000
    """Random query words for hubness (Q1) and neighbour overlap (Q7)."""
    planted_docs: int = 200
    """Q2: documents of 1000 tokens drawn from the planted model (0: skip the planted check)."""
    planted_words: int = 200
    """Q2: the true PMI is compared among this many most frequent planted words."""
    ppmi_svd: bool = False
    """Q7: also show king − man + woman on PPMI-SVD vectors of the same corpus (about 15 s
    more on the wiki sample)."""
    quick: bool = False
    """Smoke-test size: 20 documents, dim 32, 2 epochs, small planted corpus."""

    def resolved(self) -> SGNSStudyConfig:
        if self.quick:
            return dataclasses.replace(self, max_docs=20, dim=32, epochs=2, hub_queries=300,
                                       planted_docs=min(self.planted_docs, 20), planted_words=50,
                                       pair_min_count=min(self.pair_min_count, 5.0),
                                       example_min_count=min(self.example_min_count, 2.0),
                                       pmi_draws=1)
        return self

    def model_config(self, variant: str) -> sgns.SGNSConfig:
        """The SGNS settings of one variant: everything but the score is shared."""
        score = {"dot": dict(score="dot"),
                 "cosine_t1": dict(score="cosine", temperature=1.0, learn_temperature=False),
                 "cosine_fixed": dict(score="cosine", temperature=self.cosine_temperature,
                                      learn_temperature=False),
                 "cosine_learned": dict(score="cosine",
                                        temperature=self.learned_temperature_init,
                                        learn_temperature=True),
                 "bilinear": dict(score="bilinear")}[variant]
        return sgns.SGNSConfig(dim=self.dim, window=self.window, negative=self.negative,
                               sample=self.sample, **score)

    def train_config(self) -> train.TrainConfig:
        return train.TrainConfig(epochs=self.epochs, lr=self.lr, min_lr=min(1e-4, self.lr),
                                 seeds=tuple(self.seeds))

    def validate(self) -> None:
        def bad(flag, value, allowed):
            raise SGNSStudyError(f"--{flag} must be {allowed}, got {value!r}")

        for name in ("min_count", "dim", "window", "negative", "epochs", "hub_queries",
                     "pmi_draws", "planted_words", "pair_top_words"):
            if getattr(self, name) < 1:
                bad(name.replace("_", "-"), getattr(self, name), ">= 1")
        if self.max_docs is not None and self.max_docs < 1:
            bad("max-docs", self.max_docs, ">= 1 or None")
        if self.planted_docs < 0:
            bad("planted-docs", self.planted_docs, ">= 0 (0 skips the planted check)")
        if not self.sample >= 0:
            bad("sample", self.sample, ">= 0")
        if not self.lr > 0:
            bad("lr", self.lr, "> 0")
        if not self.pair_min_count > 0:
            bad("pair-min-count", self.pair_min_count, "> 0")
        if not self.example_min_count > 0:
            bad("example-min-count", self.example_min_count, "> 0")
        if not self.cosine_temperature > 1:
            bad("cosine-temperature", self.cosine_temperature,
                "> 1 (t = 1 is the cosine_t1 variant)")
        if not self.learned_temperature_init > 0:
            bad("learned-temperature-init", self.learned_temperature_init, "> 0")
        if not self.corpus:
            bad("corpus", self.corpus, "'wiki', 'text8', 'lee', 'planted' or a file path")
        if len(self.seeds) < 3 or len(set(self.seeds)) != len(self.seeds):
            bad("seeds", tuple(self.seeds), "at least 3 distinct seeds (95% intervals)")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or len(set(self.variants)) != len(self.variants) or "dot" not in self.variants:
            bad("variants", tuple(self.variants),
                f"distinct names from {VARIANTS}, including 'dot' (Q1, Q2, Q7 use it)")
        for v in self.variants:
            self.model_config(v).validate()


# --- training ----------------------------------------------------------------------------------

@dataclasses.dataclass
class VariantRun:
    """One score variant trained on every seed; ``result`` None when training failed."""

    name: str
    model: sgns.SGNSConfig
    result: train.TrainResult | None
    epoch_loss: np.ndarray  # [epochs done, seeds]: mean loss per pair
    error: str | None = None

    def vectors(self, seed_index: int, kind: str = "in") -> np.ndarray:
        return sgns.export_vectors(self.result.seed_params(seed_index), kind)

    def temperature(self) -> np.ndarray | None:
        """[seeds] final t of a cosine variant (None otherwise)."""
        if self.result is None or "log_t" not in self.result.params["score"]:
            return None
        return np.exp(np.asarray(self.result.params["score"]["log_t"], np.float64))


@dataclasses.dataclass
class PlantedRun:
    """The dot model trained on a planted corpus, with the true PMI of its frequent words."""

    result: train.TrainResult
    rows: np.ndarray  # [n] vocabulary rows of the planted words compared
    true_pmi: np.ndarray  # [n, n] the generative model's PMI (Monte Carlo, Arora et al. 2016)
    cooc: sp.csr_matrix  # [V, V] pairs SGNS sees per epoch
    counts: np.ndarray
    n_tokens: int


@dataclasses.dataclass
class SGNSStudy:
    """What the sections need: vocabulary, trained variants, pair statistics, references."""

    config: SGNSStudyConfig
    n_docs: int
    n_tokens: int
    vocab: corpus.Vocabulary
    variants: dict[str, VariantRun]
    cooc: sp.csr_matrix  # [V, V] expected (centre, context) pairs SGNS trains on per epoch
    planted: PlantedRun | None
    ppmi_vectors: np.ndarray | None
    bench: Benchmarks
    seconds: dict
    cache: dict = dataclasses.field(default_factory=dict)

    @property
    def dot(self) -> VariantRun:
        return self.variants["dot"]

    def evaluation(self, variant: str, kind: str, seed_index: int, score: str = "cosine",
                   methods: tuple[str, ...] = ("3cosadd",)) -> dict:
        """Benchmarks of one model's vectors (memoised: Q1, Q3 and Q7 share them)."""
        done = self.cache.setdefault((variant, kind, seed_index, score), {})
        todo = tuple(m for m in methods if m not in done)
        if todo or "ws353" not in done:
            v = self.variants[variant].vectors(seed_index, kind)
            done |= evaluate_vectors(v, self.bench, score, todo, pairs="ws353" not in done)
        return {k: x for k, x in done.items()
                if not k.startswith("3cos") or k.split("_")[0] in methods}


def load_benchmarks() -> dict:
    return {"ws353": evaluate.load_word_pairs(corpus.gensim_datapath("wordsim353.tsv")),
            "simlex": evaluate.load_word_pairs(corpus.gensim_datapath("simlex999.txt")),
            "analogies": evaluate.load_analogies(corpus.gensim_datapath("questions-words.txt"))}


def train_sgns_variants(config: SGNSStudyConfig, progress) -> SGNSStudy:
    """Train every variant once (seeds vmapped) and compute the pair statistics, the planted
    check and the PPMI-SVD reference: everything the sections read."""
    config = config.resolved()
    config.validate()
    seconds = {}
    t = time.perf_counter()
    with progress(f"load corpus {config.corpus}"):
        docs = load_corpus(config.corpus)[: config.max_docs]
        vocab = corpus.build_vocabulary(docs, min_count=config.min_count)
        ids = vocab.encode(docs)
        bench = prepare_benchmarks(vocab.words)
    seconds["corpus"] = time.perf_counter() - t
    data = sgns.device_corpus(ids, vocab.counts, config.sample)
    variants = {}
    for name in config.variants:
        t = time.perf_counter()
        with progress(f"SGNS {name} ({len(config.seeds)} seeds, {config.epochs} epochs)"):
            variants[name] = _train_variant(name, config, data, vocab.counts)
        seconds[f"train {name}"] = time.perf_counter() - t
    t = time.perf_counter()
    with progress(f"pairs SGNS sees ({config.pmi_draws} subsampling draws)"):
        cooc = expected_pairs(ids, len(vocab), config.window, vocab.counts, config.sample,
                              draws=config.pmi_draws, seed=0)
    seconds["pairs"] = time.perf_counter() - t
    planted = None
    if config.planted_docs:
        t = time.perf_counter()
        with progress(f"planted corpus ({config.planted_docs} documents)"):
            planted = _train_planted(config)
        seconds["planted"] = time.perf_counter() - t
    vectors = None
    if config.ppmi_svd:
        t = time.perf_counter()
        with progress(f"PPMI-SVD reference (d={config.dim})"):
            uniform = window_pairs(ids, len(vocab), config.window)
            vectors = ppmi.svd_vectors(ppmi.ppmi(uniform), min(config.dim, len(vocab) - 1))
        seconds["ppmi_svd"] = time.perf_counter() - t
    return SGNSStudy(config, len(docs), int(sum(map(len, ids))), vocab, variants, cooc,
                     planted, vectors, bench, seconds)


def _train_variant(name: str, config: SGNSStudyConfig, data, counts) -> VariantRun:
    losses = []
    model = config.model_config(name)
    try:
        res = train.train(data, counts, model, config.train_config(), progress=True,
                          on_epoch=lambda e, loss: losses.append(np.asarray(loss)))
    except train.TrainingError as e:  # report a diverged variant instead of losing the study
        return VariantRun(name, model, None, np.array(losses).reshape(-1, len(config.seeds)),
                          str(e))
    return VariantRun(name, model, res, res.epoch_loss)


def _train_planted(config: SGNSStudyConfig) -> PlantedRun:
    pc = datasets.planted_corpus(n_docs=config.planted_docs, seed=0)
    vocab = corpus.build_vocabulary(pc.docs, min_count=config.min_count)
    ids = vocab.encode(pc.docs)
    res = train.train(ids, vocab.counts, config.model_config("dot"), config.train_config(),
                      progress=True)
    rows = np.arange(min(config.planted_words, len(vocab)))
    true = pc.model_pmi(rows=[vocab.words[r] for r in rows])
    cooc = expected_pairs(ids, len(vocab), config.window, vocab.counts, config.sample,
                          draws=config.pmi_draws, seed=0)
    return PlantedRun(res, rows, true, cooc, vocab.counts, int(sum(map(len, ids))))


# --- pair statistics ---------------------------------------------------------------------------

def _pairs_matrix(tokens: np.ndarray, doc_ids: np.ndarray, vocab_size: int,
                  weights: Sequence[float], chunk: int = 1 << 21) -> sp.csr_matrix:
    """Σ over ordered pairs (i, i ± o) in one document of weights[o − 1], as [V, V] counts.

    Chunked over positions so that text8 (17M tokens) never holds all pairs at once."""
    n = tokens.size
    total = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for s in range(0, max(n, 1), chunk):
        rows, cols, vals = [], [], []
        for o, wt in enumerate(weights, 1):
            i = np.arange(s, min(s + chunk, n - o))
            if i.size == 0:
                continue
            i = i[doc_ids[i] == doc_ids[i + o]]
            a, b = tokens[i], tokens[i + o]
            rows += [a, b]
            cols += [b, a]
            vals.append(np.full(2 * a.size, wt))
        if rows:
            total = total + sp.coo_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(vocab_size, vocab_size)).tocsr()
    return total


def _concat(ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids = [np.asarray(d, np.int64) for d in ids]
    doc_ids = np.repeat(np.arange(len(ids)), [len(d) for d in ids])
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), doc_ids


def window_pairs(ids: Sequence[np.ndarray], vocab_size: int, window: int) -> sp.csr_matrix:
    """Plain symmetric window counts [V, V] (as ``jaxemb.ppmi.cooccurrence``), chunked."""
    tokens, doc_ids = _concat(ids)
    return _pairs_matrix(tokens, doc_ids, vocab_size, [1.0] * window)


def expected_pairs(ids: Sequence[np.ndarray], vocab_size: int, window: int, counts: np.ndarray,
                   sample: float, draws: int = 1, seed: int = 0) -> sp.csr_matrix:
    """Expected counts [V, V] of the (centre, context) pairs SGNS trains on in one epoch.

    As ``jaxemb.sgns``: tokens subsampled with gensim's keep probability and compacted (windows
    span removed words), a dynamic window b ~ U{1..window} per centre, so a context o positions
    away is used with probability (window − o + 1)/window; pairs never cross documents. The
    subsampling is averaged over ``draws`` numpy draws (exact when ``sample`` = 0).
    """
    tokens, doc_ids = _concat(ids)
    weights = [(window - o + 1) / window for o in range(1, window + 1)]
    if sample == 0:
        return _pairs_matrix(tokens, doc_ids, vocab_size, weights)
    keep_p = sgns.keep_probability(counts, sample)
    rng = np.random.default_rng(seed)
    total = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for _ in range(draws):
        keep = rng.random(tokens.size) < keep_p[tokens]
        total = total + _pairs_matrix(tokens[keep], doc_ids[keep], vocab_size, weights)
    return (total / draws).tocsr()


def sgns_pmi(pairs: sp.csr_matrix, counts: np.ndarray, alpha: float = 0.75) -> sp.coo_matrix:
    """PMI of the observed pairs as SGNS defines it: log(#(w,c) / (#(w)·P_n(c))), with #(w) =
    Σ_c #(w,c) and P_n ∝ count^alpha the negative-sampling distribution. SGNS's optimum is
    in·out = PMI − log k (Levy & Goldberg 2014, with their smoothed-context variant, Levy,
    Goldberg & Dagan 2015). Returns a COO matrix over the observed pairs (rows: centres)."""
    pairs = pairs.tocoo()
    row_sum = np.asarray(pairs.sum(axis=1)).ravel()
    pn = np.asarray(counts, np.float64) ** alpha
    pn /= pn.sum()
    data = np.log(pairs.data) - np.log(row_sum[pairs.row]) - np.log(pn[pairs.col])
    return sp.coo_matrix((data, (pairs.row, pairs.col)), shape=pairs.shape)


def cosine_loss_floor(t: float, negative: int) -> float:
    """The least SGNS loss per pair when every logit lies in [−t, t] (cosine with temperature
    t, no bias): −log σ(t) − k·log σ(t) = (1 + k)·log(1 + e^−t)."""
    return float((1 + negative) * np.log1p(np.exp(-t)))


def data_loss_floor(pairs: sp.csr_matrix, counts: np.ndarray, negative: int,
                    t: float | None = None, alpha: float = 0.75) -> float:
    """The least expected SGNS loss per pair on these pairs with free logits x_wc ∈ [−t, t]
    (t None: unbounded), i.e. for a model able to give every (w, c) its own logit.

    The loss is Σ_wc #(w,c)·softplus(−x) + n_wc·softplus(x), n_wc = k·#(w)·P_n(c), divided by
    Σ #(w,c); each term is convex in x with optimum x* = log(#(w,c)/n_wc) = PMI − log k, so the
    bounded optimum is x* clipped to [−t, t]; an unobserved pair only pays n_wc·softplus(−t).
    """
    coo = pairs.tocoo()
    pmi = sgns_pmi(coo, counts, alpha)
    row_sum = np.asarray(coo.sum(axis=1)).ravel()
    pn = np.asarray(counts, np.float64) ** alpha
    pn /= pn.sum()
    n = negative * row_sum[coo.row] * pn[coo.col]
    x = pmi.data - np.log(negative)
    if t is not None:
        x = np.clip(x, -t, t)
    softplus = np.logaddexp
    loss = np.sum(coo.data * softplus(0, -x) + n * softplus(0, x))
    if t is not None:  # unobserved pairs: their negative mass at the best logit −t
        seen_pn = np.bincount(coo.row, weights=pn[coo.col], minlength=pairs.shape[0])
        loss += np.sum(negative * row_sum * (1 - seen_pn)) * softplus(0, -t)
    return float(loss / coo.data.sum())


def _rowwise(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", A, B)


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _row_cosine(M: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between rows a[i] and b[i] of a sparse matrix, through the Gram matrix of the
    rows involved (a few thousand), not one sparse row product per pair."""
    used, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    R = M[used]
    norms = np.sqrt(np.asarray(R.multiply(R).sum(axis=1)).ravel())
    R = sp.diags(1 / np.maximum(norms, 1e-12)) @ R
    G = (R @ R.T).toarray()
    return G[inv[:a.size], inv[a.size:]]


# --- evaluation: jaxemb.evaluate, under cosine or dot ------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Benchmarks:
    """WS353, SimLex-999 and the Google analogies for one vocabulary. The pairs' rows are looked
    up once, case-insensitively as gensim (an uppercase form stands for its earliest word), for
    Q2's own in·out scores; everything else is scored by ``jaxemb.evaluate``."""

    words: tuple[str, ...]  # the vocabulary, in row order
    data: dict  # {"ws353": WordPairs, "simlex": WordPairs, "analogies": AnalogySet}
    pairs: dict  # name -> (rows a [n], rows b [n], gold [n], pairs in the file)
    answerable: int  # analogy questions with all four words in the vocabulary
    n_questions: int  # questions in the file


def prepare_benchmarks(words: Sequence[str], data: dict | None = None) -> Benchmarks:
    """``data``: {"ws353": WordPairs, "simlex": WordPairs, "analogies": AnalogySet} (default:
    the files shipped with gensim)."""
    data = data or load_benchmarks()
    rep: dict[str, int] = {}
    for i, w in enumerate(words):
        rep.setdefault(w.upper(), i)
    pairs = {}
    for name in ("ws353", "simlex"):
        wp = data[name]
        rows = [(rep.get(a.upper()), rep.get(b.upper()), g)
                for a, b, g in zip(wp.word_a, wp.word_b, wp.gold, strict=True)]
        rows = [r for r in rows if r[0] is not None and r[1] is not None]
        ia, ib, gold = zip(*rows, strict=True) if rows else ((), (), ())
        pairs[name] = (np.array(ia, np.int64), np.array(ib, np.int64),
                       np.array(gold, np.float64), len(wp))
    qs = [q for s in data["analogies"] for q in s.questions]
    answerable = sum(all(w.upper() in rep for w in q) for q in qs)
    return Benchmarks(tuple(words), data, pairs, answerable, len(qs))


def evaluate_vectors(vectors: np.ndarray, bench: Benchmarks, score: str,
                     methods: tuple[str, ...] = ("3cosadd",), pairs: bool = True) -> dict:
    """WS353 and SimLex Spearman ρ (``pairs``) and analogy accuracy per method of ``vectors``
    [V, d] under ``score`` ("cosine" or "dot"; dot keeps the norms, so 3CosAdd is
    argmax_x x·(b − a + c), and 3CosMul is undefined for it).

    ``jaxemb.evaluate`` with gensim's protocol over the whole trained vocabulary
    (``restrict_vocab=None``, case-insensitive). A figure that is undefined on a small vocabulary
    (ρ over fewer than 3 pairs or of constant scores, accuracy with nothing answerable) is NaN,
    so a quick run still reports.
    """
    if score not in evaluate.SCORES:  # before the NaN fallback below could hide a typo
        raise SGNSStudyError(f"unknown evaluation score {score!r}; use one of {evaluate.SCORES}")
    wv = WordVectors(bench.words, vectors)
    out = {}
    for name in ("ws353", "simlex") if pairs else ():
        ia, _, _, n = bench.pairs[name]
        rho = float("nan")
        # Two pairs give ρ = ±1 whatever the vectors; the library's remaining error here is
        # gold or model scores that are all equal, where ρ is undefined too.
        if ia.size >= 3:
            with contextlib.suppress(evaluate.EvaluationError):
                rho = evaluate.word_pairs(wv, bench.data[name], restrict_vocab=None,
                                          score=score).spearman
        out |= {name: rho, f"{name}_pairs": ia.size, f"{name}_oov": n - ia.size}
    for m in methods:
        acc, answered, oov = float("nan"), 0, bench.n_questions
        if bench.answerable:
            r = evaluate.analogies(wv, bench.data["analogies"], restrict_vocab=None, method=m,
                                   score=score)
            acc, answered, oov = r.accuracy, r.total.answered, r.total.n_oov
        out |= {m: acc, f"{m}_answered": answered, f"{m}_oov": oov}
    return out


def _protocol(study: SGNSStudy, score_text: str) -> str:
    e = study.evaluation("dot", "in", 0)
    return (f"Protocol: WS353 / SimLex-999 Spearman ρ between gold ratings and {score_text} of "
            f"the two words ({e['ws353_pairs']} / {e['simlex_pairs']} pairs used, "
            f"{e['ws353_oov']} / {e['simlex_oov']} OOV skipped); Google analogies, question "
            f"words excluded, answers from the whole trained vocabulary ({len(study.vocab)} "
            f"words, case-insensitive), {e['3cosadd_answered']} questions answered, "
            f"{e['3cosadd_oov']} OOV skipped; accuracy = correct / answered.")


def _pm(values, digits: int = 3, scale: float = 1.0) -> str:
    """'mean ± half-width' of the 95% t-interval over seeds."""
    values = [scale * v for v in values]
    if any(np.isnan(values)):
        return "n/a"
    m, h = ci95(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def _compare(a: Sequence[float], b: Sequence[float]) -> str:
    """'higher' / 'lower' when the 95% intervals of a and b do not overlap, else
    'indistinguishable'."""
    (ma, ha), (mb, hb) = ci95(a), ci95(b)
    if ma - ha > mb + hb:
        return "higher"
    if ma + ha < mb - hb:
        return "lower"
    return "indistinguishable"


def _settings(study: SGNSStudy) -> str:
    c = study.config
    return (f"{c.corpus} ({study.n_docs} documents, {study.n_tokens:,} in-vocabulary tokens, "
            f"vocabulary {len(study.vocab):,} at min_count {c.min_count}); dim {c.dim}, window "
            f"{c.window} (dynamic), negative {c.negative}, sample {c.sample}, {c.epochs} epochs, "
            f"sparse SGD lr {c.lr} → 1e-4, seeds {list(c.seeds)} trained together (vmapped)")


def _seeds(study: SGNSStudy) -> range:
    return range(len(study.config.seeds))


# --- Q1 ----------------------------------------------------------------------------------------

def section_q1(study: SGNSStudy, config: SGNSStudyConfig, run: Run) -> dict:
    """Q1: the seed arithmetic, then dot vs cosine on the dot model's trained in-vectors."""
    config = config.resolved()
    seed = demo.seed_arithmetic()
    t_seed = run.table("q1_seed_arithmetic", ("score", "a=[0.2,3], b=[0.4,3]", "a, c=[0.2,3]",
                                              "ranks first"),
                       [(r["score"], r["a_b"], r["a_c"],
                         "b" if r["a_b"] > r["a_c"] else "c (= a)") for r in seed],
                       "jaxemb.scoring on the vectors of the question.")
    dot_seed = next(r for r in seed if r["score"] == "dot")
    cos_seed = next(r for r in seed if r["score"] == "cosine")
    counts = study.vocab.counts
    seeds = _seeds(study)
    V = [study.dot.vectors(i, "in") for i in seeds]
    rho = [float(stats.spearmanr(np.linalg.norm(v, axis=1), np.log(counts)).statistic)
           for v in V]
    fig, _ = demo.norm_frequency_figure(V[0], counts, "‖in vector‖ (dot model, seed 0)")
    f_norm = run.figure(fig, "q1_norm_vs_frequency",
                        f"Q1: norm of the dot model's in-vectors vs log count (seed "
                        f"{config.seeds[0]}), {len(counts)} words.")
    t_norm = run.table("q1_norms", ("vectors", "Spearman ρ(‖v‖, log count)", "per seed"),
                       [("SGNS dot, in", _pm(rho), ", ".join(f"{r:.3f}" for r in rho))],
                       f"mean ± 95% t-interval over {len(rho)} seeds. {_settings(study)}.")
    wv = WordVectors(study.vocab.words, V[0], counts)
    nb = demo.neighbour_rows(wv, config.query_words)
    t_nb = run.table("q1_neighbours", ("word", "top 5 by cosine", "top 5 by dot"),
                     [(w, ", ".join(c), ", ".join(d)) for w, c, d in nb],
                     f"Same vectors (dot model, in, seed {config.seeds[0]}), same exact search; "
                     "only the score differs. Query word excluded.")
    bench = {s: [study.evaluation("dot", "in", i, s) for i in seeds] for s in ("cosine", "dot")}
    for s, evs in bench.items():
        for i, e in zip(seeds, evs, strict=True):
            run.log("q1_benchmarks", eval_score=s, seed=config.seeds[i], **e)
    t_bench = run.table(
        "q1_benchmarks", ("evaluation score", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %"),
        [(s, _pm([e["ws353"] for e in evs]), _pm([e["simlex"] for e in evs]),
          _pm([e["3cosadd"] for e in evs], 2, 100)) for s, evs in bench.items()],
        f"Same in-vectors of the dot model, scored by cosine or by the raw dot product; mean ± "
        f"95% over {len(seeds)} seeds. {_protocol(study, 'the score')} Under dot, 3CosAdd is "
        f"argmax_x x·(b − a + c) on unnormalised vectors.")
    rng = np.random.default_rng(0)
    queries = rng.choice(len(counts), size=min(config.hub_queries, len(counts)), replace=False)
    frequent = max(1, len(counts) // 100)
    hub = {s: [demo.hubness(v, queries, frequent, s) for v in V] for s in ("cosine", "dot")}
    t_hub = run.table(
        "q1_hubness", ("score", f"top-10 slots taken by the {frequent} most frequent words %",
                       "skew of k-occurrence", "max k-occurrence"),
        [(s, _pm([h["share_top"] for h in hs], 1, 100),
          _pm([h["k_occurrence_skew"] for h in hs], 2),
          _pm([h["max_k_occurrence"] for h in hs], 0)) for s, hs in hub.items()],
        f"{len(queries)} random query words (numpy seed 0), top-10 over the whole vocabulary "
        f"by exact search, query excluded; uniform chance would be "
        f"{100 * frequent / len(counts):.1f}%. Dot model in-vectors, mean ± 95% over seeds.")
    # the answer, worded from the numbers
    share = {s: np.mean([h["share_top"] for h in hs]) for s, hs in hub.items()}
    skew = {s: np.mean([h["k_occurrence_skew"] for h in hs]) for s, hs in hub.items()}
    top = {s: np.mean([h["max_k_occurrence"] for h in hs]) for s, hs in hub.items()}
    r = np.mean(rho)
    trend = ("rises with" if r > 0.1 else "falls with" if r < -0.1 else "barely depends on")
    cmp = {m: _compare([e[m] for e in bench["dot"]], [e[m] for e in bench["cosine"]])
           for m in ("ws353", "simlex", "3cosadd")}
    words = {"higher": "higher than", "lower": "lower than",
             "indistinguishable": "indistinguishable from"}
    answer = (
        f"**Answer.** The dot product grows with length: a·b = {dot_seed['a_b']:.4g} "
        f"{'>' if dot_seed['a_b'] > dot_seed['a_c'] else '≤'} a·a = {dot_seed['a_c']:.4g} with "
        f"‖b‖ = {np.hypot(*demo.SEED_B):.4g} > ‖a‖ = {np.hypot(*demo.SEED_A):.4g}, while cosine "
        f"ranks the identical vector {'first' if cos_seed['a_c'] > cos_seed['a_b'] else 'second'}"
        f" ({cos_seed['a_c']:.4g} vs {cos_seed['a_b']:.4g}; table above). In trained SGNS "
        f"vectors the norm {trend} word frequency (Spearman ρ = {r:.2f}, mean over seeds; "
        f"plot). Under dot the {frequent} most frequent words take {100 * share['dot']:.1f}% of "
        f"the top-10 slots vs {100 * share['cosine']:.1f}% under cosine, and neighbour lists "
        f"are {'more' if skew['dot'] > skew['cosine'] else 'less'} concentrated on a few hubs "
        f"(k-occurrence skew {skew['dot']:.1f} vs {skew['cosine']:.1f}; the largest hub is in "
        f"{top['dot']:.0f} vs {top['cosine']:.0f} of {len(queries)} lists; hubness table, "
        f"neighbour table). On the benchmarks, scoring the same vectors with dot "
        f"gives WS353 ρ {words[cmp['ws353']]}, SimLex ρ {words[cmp['simlex']]} and 3CosAdd "
        f"accuracy {words[cmp['3cosadd']]} cosine's (benchmark table; 'indistinguishable' = "
        f"the 95% intervals overlap).")
    run.add("## Q1. Why is [0.2,3]·[0.4,3] larger than [0.2,3]·[0.2,3]?\n\n"
            "### The arithmetic\n\n" + t_seed
            + "\n### What the norm encodes in trained SGNS vectors\n\n" + t_norm + "\n" + f_norm
            + "\n### Nearest neighbours: cosine vs dot\n\n" + t_nb
            + "\n### Benchmarks: the same vectors scored by cosine or dot\n\n" + t_bench
            + "\n### Hubness\n\n" + t_hub + "\n" + answer + "\n")
    return {"seed": seed, "spearman_norm_logfreq": rho, "benchmarks": bench, "hubness": hub}


# --- Q2 ----------------------------------------------------------------------------------------

def _entries(M: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n] float64 entries M[a[i], b[i]] (0 where not stored)."""
    return np.asarray(M[a, b], np.float64).reshape(-1)


def _frequent_pairs(cooc: sp.csr_matrix, min_count: float,
                    top: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres, contexts): distinct words among the ``top`` first rows, seen ≥ min_count."""
    c = cooc[:top][:, :top].tocoo()
    keep = (c.data >= min_count) & (c.row != c.col)
    return c.row[keep].astype(np.int64), c.col[keep].astype(np.int64)


def section_q2(study: SGNSStudy, config: SGNSStudyConfig, run: Run) -> dict:
    """Q2: first-order in·out vs second-order in·in cosine; in·out ≈ PMI − log k."""
    config = config.resolved()
    k = config.negative
    pmi = sgns_pmi(study.cooc, study.vocab.counts).tocsr()
    a, b = _frequent_pairs(study.cooc, config.pair_min_count, config.pair_top_words)
    if a.size < 3:
        run.add("## Q2. Why does 'don't' relate to 'like' if they are not similar?\n\n"
                f"Fewer than 3 word pairs occur {config.pair_min_count} times; nothing to "
                "measure (lower --pair-min-count or use a larger corpus).\n")
        return {}
    p = _entries(pmi, a, b)
    ppmi_rows = pmi.maximum(0).tocsr()
    second = _row_cosine(ppmi_rows, a, b)  # PPMI context profiles
    # random pairs of frequent words, co-occurring or not: substitutes rarely co-occur
    rng = np.random.default_rng(0)
    top = min(config.pair_top_words, len(study.vocab))
    ra, rb = rng.integers(0, top, size=(2, min(20_000, top * (top - 1))))
    ra, rb = ra[ra != rb], rb[ra != rb]
    second_r = _row_cosine(ppmi_rows, ra, rb)
    seeds = _seeds(study)
    agg = {key: [] for key in ("io_pmi", "ii_pmi", "io_2nd", "ii_2nd", "io_2nd_r", "ii_2nd_r",
                               "io_ws353", "ii_ws353", "io_simlex", "ii_simlex")}
    bench_rows = {n: study.bench.pairs[n][:3] for n in ("ws353", "simlex")}
    fits = []
    for i in seeds:
        vin, vout = study.dot.vectors(i, "in"), study.dot.vectors(i, "out")
        io = _rowwise(vin[a], vout[b])
        ii = _rowwise(_unit(vin)[a], _unit(vin)[b])
        agg["io_pmi"].append(stats.spearmanr(io, p).statistic)
        agg["ii_pmi"].append(stats.spearmanr(ii, p).statistic)
        agg["io_2nd"].append(stats.spearmanr(io, second).statistic)
        agg["ii_2nd"].append(stats.spearmanr(ii, second).statistic)
        agg["io_2nd_r"].append(stats.spearmanr(_rowwise(vin[ra], vout[rb]),
                                               second_r).statistic)
        agg["ii_2nd_r"].append(stats.spearmanr(_rowwise(_unit(vin)[ra], _unit(vin)[rb]),
                                               second_r).statistic)
        for n, (ia, ib, gold) in bench_rows.items():
            # in·out of a pair depends on which word is the centre: average both directions
            io_b = 0.5 * (_rowwise(vin[ia], vout[ib]) + _rowwise(vin[ib], vout[ia]))
            agg[f"io_{n}"].append(stats.spearmanr(gold, io_b).statistic)
            agg[f"ii_{n}"].append(stats.spearmanr(gold, _rowwise(_unit(vin)[ia],
                                                                 _unit(vin)[ib])).statistic)
        fit = stats.linregress(p - np.log(k), io)
        fits.append({"slope": fit.slope, "intercept": fit.intercept, "pearson": fit.rvalue,
                     "mean_diff": float(np.mean(io - (p - np.log(k))))})
        run.log("q2_seed", seed=config.seeds[i], **{key: v[-1] for key, v in agg.items()},
                **fits[-1])
    t_agg = run.table(
        "q2_aggregate", ("score of the pair (w, c)", "co-occurring pairs: Spearman with PMI "
                         "(1st order)", "co-occurring pairs: Spearman with PPMI-profile cosine "
                         "(2nd order)", "random pairs: Spearman with PPMI-profile cosine"),
        [("in·out (what SGNS trains)", _pm(agg["io_pmi"]), _pm(agg["io_2nd"]),
          _pm(agg["io_2nd_r"])),
         ("cos(in, in) (the usual similarity)", _pm(agg["ii_pmi"]), _pm(agg["ii_2nd"]),
          _pm(agg["ii_2nd_r"]))],
        f"{a.size:,} ordered pairs of words among the {config.pair_top_words} most frequent that "
        f"SGNS sees ≥ {config.pair_min_count:g} times per epoch (expected count; "
        f"{config.pmi_draws} subsampling draws). PMI = log(#(w,c) / (#(w)·"
        f"P_n(c))), P_n ∝ count^0.75, on those pairs; the 2nd-order score is the cosine of the "
        f"two words' PPMI rows (shared contexts: substitutability). Random pairs: {ra.size:,} "
        f"pairs of distinct words among the same {top} (numpy seed 0), co-occurring or not. Dot "
        f"model; mean ± 95% over {len(seeds)} seeds. {_settings(study)}.")
    t_bench = run.table(
        "q2_benchmarks", ("score of the pair", "WS353 ρ (relatedness and similarity)",
                          "SimLex-999 ρ (similarity only)"),
        [("in·out (both directions averaged)", _pm(agg["io_ws353"]), _pm(agg["io_simlex"])),
         ("cos(in, in)", _pm(agg["ii_ws353"]), _pm(agg["ii_simlex"]))],
        f"Human ratings: WordSim-353 rates association as well as similarity (Agirre et al. "
        f"2009); SimLex-999 rates similarity only and scores related but dissimilar pairs "
        f"(e.g. 'coffee'–'cup') low (Hill, Reichart & Korhonen 2015). "
        f"{bench_rows['ws353'][0].size} / {bench_rows['simlex'][0].size} pairs in the "
        f"vocabulary. Dot model; mean ± 95% over seeds.")
    t_fit = run.table(
        "q2_levy_goldberg", ("fit of in·out on PMI − log k", "slope", "intercept",
                             "Pearson r", "mean(in·out − (PMI − log k))"),
        [("dot model, in·out", _pm([f["slope"] for f in fits]),
          _pm([f["intercept"] for f in fits]), _pm([f["pearson"] for f in fits]),
          _pm([f["mean_diff"] for f in fits]))],
        f"Least squares over the same {a.size:,} pairs; k = {k} so log k = {np.log(k):.3f}. "
        "Levy & Goldberg (2014): at SGNS's optimum, with enough dimensions, in·out = PMI − log "
        "k (slope 1, intercept 0).")
    # illustrative pairs: each query word's partner with the highest PMI among its frequent pairs
    vin, vout = study.dot.vectors(0, "in"), study.dot.vectors(0, "out")
    unit_in = _unit(vin)
    vocab = study.vocab
    rows = []
    for w in config.query_words:
        if w not in vocab:
            continue
        i = vocab.id(w)
        row = study.cooc[i].toarray().ravel()
        js = np.flatnonzero(row >= config.example_min_count)
        js = js[js != i]
        if js.size == 0:
            continue
        j = int(js[np.argmax(_entries(pmi, np.full(js.size, i), js))])
        io_row, ii_row = vout @ vin[i], unit_in @ unit_in[i]
        io_row[i] = ii_row[i] = -np.inf
        rank_io = int((io_row > io_row[j]).sum()) + 1
        rank_ii = int((ii_row > ii_row[j]).sum()) + 1
        rows.append((f"{w} → {vocab.words[j]}", f"{study.cooc[i, j]:.1f}", f"{pmi[i, j]:.2f}",
                     f"{io_row[j]:.2f}", f"{ii_row[j]:.2f}", rank_io, rank_ii,
                     vocab.words[int(np.argmax(ii_row))]))
    t_pairs = run.table(
        "q2_pairs", ("pair (w → c)", "pairs per epoch", "PMI", "in·out", "cos(in, in)",
                     "rank of c by in·out", "rank of c by cos(in, in)", "w's nearest by cos"),
        rows, f"For each query word, the partner c with the highest PMI among the words it is "
        f"seen with ≥ {config.example_min_count:g} times per epoch (chosen by the data). Ranks "
        f"over the {len(vocab):,}-word vocabulary (1 = first); dot model, seed {config.seeds[0]}.")
    # planted corpus
    pl, t_pl = None, ""
    if study.planted is not None:
        pl = _planted_stats(study.planted, config)
        t_pl = run.table(
            "q2_planted", ("score of the pair", "Spearman with the true PMI"),
            [("in·out", _pm(pl["io"])), ("cos(in, in)", _pm(pl["ii"])),
             ("PMI counted in the corpus (reference)", f"{pl['empirical']:.3f}")],
            f"Planted corpus (Arora et al. 2016 random-walk model, {config.planted_docs} "
            f"documents, {study.planted.n_tokens:,} tokens): {pl['n_pairs']:,} ordered pairs "
            f"among its {len(study.planted.rows)} most frequent words seen ≥ "
            f"{config.pair_min_count:g} times per epoch. True PMI = the generative model's "
            f"(Monte Carlo). Same SGNS settings (dot); mean ± 95% over seeds.")
    fig, axes = plt.subplots(1, 2 if pl else 1, figsize=(10 if pl else 5, 4), squeeze=False)
    io0 = _rowwise(vin[a], vout[b])
    ax = axes[0, 0]
    ax.scatter(p - np.log(k), io0, s=2, alpha=0.3)
    lim = [min((p - np.log(k)).min(), io0.min()), max((p - np.log(k)).max(), io0.max())]
    ax.plot(lim, lim, "k--", lw=1, label="in·out = PMI − log k")
    ax.plot(lim, fits[0]["intercept"] + fits[0]["slope"] * np.array(lim), "r-", lw=1,
            label=f"fit: slope {fits[0]['slope']:.2f}")
    ax.set_xlabel("PMI − log k (pairs SGNS sees)")
    ax.set_ylabel("in·out (dot model, seed 0)")
    ax.legend(fontsize=8)
    if pl:
        ax = axes[0, 1]
        ax.scatter(pl["true0"], pl["io0"], s=2, alpha=0.3)
        ax.set_xlabel("true PMI (planted model)")
        ax.set_ylabel("in·out (seed 0)")
        ax.set_title("planted corpus")
    fig.tight_layout()
    f_q2 = run.figure(fig, "q2_inout_vs_pmi",
                      f"Q2: in·out against PMI − log k on {a.size:,} frequent pairs"
                      + (" (left) and against the true PMI of the planted corpus (right)"
                         if pl else "") + ".")
    # the answer, worded from the numbers
    io1, ii1 = np.mean(agg["io_pmi"]), np.mean(agg["ii_pmi"])
    io2, ii2 = np.mean(agg["io_2nd_r"]), np.mean(agg["ii_2nd_r"])
    slope, r = np.mean([f["slope"] for f in fits]), np.mean([f["pearson"] for f in fits])
    gap = np.mean([f["mean_diff"] for f in fits])
    first = ("follows PMI more closely than" if io1 > ii1 else "does not follow PMI more "
             "closely than")
    second_w = ("tracks shared contexts more than" if ii2 > io2 else "does not track shared "
                "contexts more than")
    shape = ("close to the theory's 1" if abs(slope - 1) < 0.2 else
             f"{'below' if slope < 1 else 'above'} the theory's 1")
    n_split = sum(1 for row in rows if row[5] < row[6])
    drop = {n: np.mean(agg[f"ii_{n}"]) - np.mean(agg[f"io_{n}"]) for n in ("ws353", "simlex")}
    answer = (
        f"**Answer.** SGNS trains in·out, a first-order score: it {first} cos(in, in) does "
        f"(Spearman {io1:.2f} vs {ii1:.2f}), while cos(in, in) {second_w} in·out does "
        f"(Spearman with the PPMI-profile cosine on random pairs of frequent words {ii2:.2f} "
        f"vs {io2:.2f}; aggregate table). "
        f"Relevance (the words occur together) and similarity (they occur in the same "
        f"contexts) are different scores of the same model: for {n_split} of {len(rows)} "
        f"query words the most associated partner ranks higher by in·out than by cos(in, in) "
        f"(pairs table). Against human ratings, replacing cos(in, in) by in·out changes "
        f"Spearman by {-drop['simlex']:+.3f} on SimLex (similarity only) and by "
        f"{-drop['ws353']:+.3f} on WS353 (relatedness too), so relative to cos(in, in) in·out "
        f"does {'worse' if drop['simlex'] > drop['ws353'] else 'no worse'} where only "
        f"similarity counts (benchmark table). The fit of in·out on PMI − log k has slope "
        f"{slope:.2f} ({shape}), "
        f"Pearson r = {r:.2f}, and in·out lies {abs(gap):.2f} {'above' if gap > 0 else 'below'}"
        f" PMI − log k on average (fit table, plot; the theory's optimum has slope 1 and "
        f"intercept 0).")
    if pl:
        answer += (f" On the planted corpus, where the true PMI is known, in·out reaches "
                   f"Spearman {np.mean(pl['io']):.2f} with it and cos(in, in) "
                   f"{np.mean(pl['ii']):.2f}, against {pl['empirical']:.2f} for the PMI "
                   f"counted in the corpus itself (planted table).")
    run.add("## Q2. Why does 'don't' relate to 'like' if they are not similar?\n\n"
            "### First-order (in·out) vs second-order (in·in cosine) scores\n\n" + t_agg
            + "\n### Examples chosen by the data\n\n" + t_pairs
            + "\n### Human ratings: relatedness vs similarity\n\n" + t_bench
            + "\n### in·out ≈ PMI − log k (Levy & Goldberg 2014)\n\n" + t_fit + "\n" + f_q2
            + (("\n### Planted corpus: the true PMI is known\n\n" + t_pl) if pl else "")
            + "\n" + answer + "\n")
    return {"aggregate": agg, "fits": fits, "pairs": rows, "planted": pl, "n_pairs": int(a.size)}


def _planted_stats(pl: PlantedRun, config: SGNSStudyConfig) -> dict:
    n = len(pl.rows)
    sub = pl.cooc[:n][:, :n].tocoo()
    keep = (sub.data >= config.pair_min_count) & (sub.row != sub.col)
    a, b = sub.row[keep], sub.col[keep]
    true = pl.true_pmi[a, b]
    emp = np.asarray(sgns_pmi(pl.cooc, pl.counts).tocsr()[a, b]).ravel()
    io, ii, io_scores = [], [], []
    for i in range(pl.result.epoch_loss.shape[1]):
        p = pl.result.seed_params(i)
        vin, vout = sgns.export_vectors(p, "in"), sgns.export_vectors(p, "out")
        io_scores.append(_rowwise(vin[a], vout[b]))
        io.append(float(stats.spearmanr(io_scores[-1], true).statistic))
        ii.append(float(stats.spearmanr(_rowwise(_unit(vin)[a], _unit(vin)[b]),
                                        true).statistic))
    return {"io": io, "ii": ii, "empirical": float(stats.spearmanr(emp, true).statistic),
            "n_pairs": int(a.size), "true0": true, "io0": io_scores[0]}


# --- Q3 ----------------------------------------------------------------------------------------

def _describe(v: VariantRun) -> str:
    m = v.model
    if m.score == "dot":
        return "in·out"
    if m.score == "bilinear":
        return "in·W·out, W learned (init I)"
    if m.learn_temperature:
        return f"t·cos(in, out), t learned (init {m.temperature:g})"
    return f"{m.temperature:g}·cos(in, out), t fixed"


def section_q3(study: SGNSStudy, config: SGNSStudyConfig, run: Run) -> dict:
    """Q3: SGNS trained with each score: quality, convergence, the bounded-logit loss floor."""
    config = config.resolved()
    k = config.negative
    seeds = _seeds(study)
    run.log("q3_training", seconds=study.seconds, **{
        name: {"seconds": v.result.seconds, "compile_seconds": v.result.compile_seconds,
               "effective_words_per_s": v.result.effective_words_per_s}
        for name, v in study.variants.items() if v.result is not None})

    @functools.cache
    def floor_on_data(t: float | None) -> float:
        return data_loss_floor(study.cooc, study.vocab.counts, k, t)

    unbounded = floor_on_data(None)
    rows, out = [], {}
    for name, v in study.variants.items():
        t = v.temperature()
        if v.model.score == "cosine":
            t_eff = t if t is not None else np.full(len(seeds), v.model.temperature)
            floor = [cosine_loss_floor(x, k) for x in t_eff]
            dfloor = [floor_on_data(float(x)) for x in t_eff]
        else:
            floor, dfloor = [0.0] * len(seeds), [unbounded] * len(seeds)
        rec = {"status": "ok" if v.result is not None else "diverged",
               "epochs_done": int(v.epoch_loss.shape[0]), "floor": floor, "data_floor": dfloor,
               "final_loss": v.epoch_loss[-1].tolist() if v.epoch_loss.size else [],
               "epoch_loss": v.epoch_loss.tolist(),
               "temperature": None if t is None else t.tolist()}
        if v.result is not None:
            rec["norm_in"] = [float(np.linalg.norm(v.vectors(i, "in"), axis=1).mean())
                              for i in seeds]
            evs = [study.evaluation(name, "in", i) for i in seeds]
            for i, e in zip(seeds, evs, strict=True):
                run.log("q3_evaluation", variant=name, seed=config.seeds[i], **e)
            rec |= {m: [e[m] for e in evs] for m in ("ws353", "simlex", "3cosadd")}
            status = "ok"
        else:
            status = f"diverged (NaN in epoch {v.epoch_loss.shape[0] + 1})"
        out[name] = rec
        run.log("q3_variant", variant=name, error=v.error, **rec)
        rows.append((name, _describe(v), status,
                     _pm(rec["final_loss"]) if rec["final_loss"] else "—",
                     _pm(floor) if v.model.score == "cosine" else "0 (unbounded)",
                     _pm(dfloor),
                     "—" if t is None else ", ".join(f"{x:.3g}" for x in t),
                     *((_pm(rec["norm_in"], 2), _pm(rec["ws353"]), _pm(rec["simlex"]),
                        _pm(rec["3cosadd"], 2, 100))
                       if v.result is not None else ("—",) * 4)))
    t_q3 = run.table(
        "q3_scores", ("variant", "logit", "training", "final loss / pair",
                      "floor (1+k)·log(1+e^−t)", "floor on these data, |logit| ≤ t",
                      "final t per seed", "mean ‖in‖", "WS353 ρ", "SimLex ρ",
                      "analogy 3CosAdd %"),
        rows, f"Only the score differs; {_settings(study)}; no bias. Loss per pair as "
        f"jaxemb.train reports it (−log σ(positive) − k·mean log σ(−negative)), last epoch. "
        f"'Floor on these data': the least loss any model could reach on the pairs SGNS sees "
        f"(estimated, {config.pmi_draws} subsampling draws) with every logit in [−t, t] (for "
        f"dot and bilinear: unbounded, = {unbounded:.3f}). Evaluation of the in-vectors by "
        f"cosine, mean ± 95% over seeds. {_protocol(study, 'the cosine')}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, v in study.variants.items():
        if v.epoch_loss.size:
            e = np.arange(1, v.epoch_loss.shape[0] + 1)
            m = v.epoch_loss.mean(axis=1)
            line, = ax.plot(e, m, marker="o", ms=3, label=f"{name}: {_describe(v)}")
            ax.fill_between(e, v.epoch_loss.min(axis=1), v.epoch_loss.max(axis=1),
                            color=line.get_color(), alpha=0.2)
    if "cosine_t1" in study.variants:
        ax.axhline(cosine_loss_floor(1.0, k), color="k", ls=":", lw=1,
                   label="floor for |logit| ≤ 1")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean SGNS loss per pair")
    ax.legend(fontsize=7)
    fig.tight_layout()
    f_q3 = run.figure(fig, "q3_loss_per_epoch",
                      "Q3: training loss per epoch (mean over seeds, band = min–max), each "
                      "score; dotted: the loss floor of a logit bounded by 1.")
    # the answer, worded from the numbers
    sig = 1 / (1 + np.exp(-1.0))
    parts = [f"**Answer.** With t = 1 a cosine logit lies in [−1, 1], so σ(logit) ∈ "
             f"[{1 - sig:.2f}, {sig:.2f}] and the loss per pair cannot go below (1+k)·"
             f"log(1+e^−1) = {cosine_loss_floor(1.0, k):.3f} for k = {k}; on these data "
             f"the bound is tighter: {floor_on_data(1.0):.3f}"
             f" (an unbounded logit could reach {unbounded:.3f})."]
    ok = {n: r for n, r in out.items() if r["status"] == "ok"}
    if "cosine_t1" in out and "dot" in out and out["cosine_t1"]["final_loss"]:
        c1, d = np.mean(out["cosine_t1"]["final_loss"]), np.mean(out["dot"]["final_loss"])
        parts.append(f"Measured: cosine with t = 1 ends at {c1:.3f}, "
                     f"{c1 - np.mean(out['cosine_t1']['data_floor']):.3f} above that bound, "
                     f"and {'above' if c1 > d else 'below'} dot's {d:.3f} (table, plot).")
    if ok:
        best = max(ok, key=lambda n: np.mean(ok[n]["ws353"]))
        worst = min(ok, key=lambda n: np.mean(ok[n]["ws353"]))
        parts.append(f"By mean, the best score on WS353 is {best} "
                     f"({np.mean(ok[best]['ws353']):.3f}) and the worst {worst} "
                     f"({np.mean(ok[worst]['ws353']):.3f}); on analogies the best is "
                     f"{max(ok, key=lambda n: np.mean(ok[n]['3cosadd']))}.")
        for name in ("cosine_t1", "cosine_fixed", "cosine_learned", "bilinear"):
            if name in ok and "dot" in ok:
                word = {"higher": "higher than", "lower": "lower than",
                        "indistinguishable": "indistinguishable from"}[
                            _compare(ok[name]["ws353"], ok["dot"]["ws353"])]
                parts.append(f"{name} is {word} dot on WS353 (95% intervals).")
    for name in ("cosine_learned",):
        if name in out and out[name]["temperature"] is not None:
            ts = out[name]["temperature"]
            parts.append(f"The learned temperature ends at t = {', '.join(f'{x:.3g}' for x in ts)}"
                         f" (from {config.learned_temperature_init:g}).")
    cos_ok = [n for n in ok if study.variants[n].model.score == "cosine"]
    if cos_ok and "dot" in ok:
        parts.append(
            "A cosine logit does not depend on ‖v‖, but its SGD step on v scales as t/‖v‖ "
            "(the gradient of v/‖v‖ is (I − v̂v̂ᵀ)/‖v‖, and each step lengthens v), so the "
            "norms the vectors reach set the effective learning rate: mean ‖in‖ is "
            + ", ".join(f"{np.mean(ok[n]['norm_in']):.2f} ({n})" for n in cos_ok)
            + f" against {np.mean(ok['dot']['norm_in']):.2f} for dot (table).")
    failed = [n for n, r in out.items() if r["status"] != "ok"]
    if failed:
        parts.append(f"Training diverged (NaN loss) for: {', '.join(failed)}; see the table.")
    for name in ("cosine_fixed", "cosine_learned"):
        if name in ok and "cosine_t1" in ok:
            word = {"higher": "raises", "lower": "lowers",
                    "indistinguishable": "does not measurably change"}[
                        _compare(ok[name]["ws353"], ok["cosine_t1"]["ws353"])]
            parts.append(f"Going from t = 1 to {name} {word} WS353 "
                         f"({np.mean(ok['cosine_t1']['ws353']):.3f} → "
                         f"{np.mean(ok[name]['ws353']):.3f}).")
    run.add("## Q3. Why not cosine? Is it possible at all?\n\n" + t_q3 + "\n" + f_q3 + "\n"
            + " ".join(parts) + "\n")
    return out


# --- Q7 ----------------------------------------------------------------------------------------

def _mean_pairwise_cosine(X: np.ndarray) -> float:
    """Mean cosine over all pairs i ≠ j: (‖Σ u_i‖² − n) / (n(n − 1)); 0 for an isotropic set."""
    U = _unit(X.astype(np.float64))
    n = len(U)
    s = U.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


def _top_lists(X: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set]:
    """Each query's cosine top-k neighbours (query excluded), as sets of rows."""
    return [set(row.tolist()) for row in demo.neighbours(X, queries, k, "cosine")]


def _overlap(A: list[set], B: list[set], k: int = 10) -> float:
    """Mean share of the top-k lists that A and B have in common."""
    return float(np.mean([len(x & y) / k for x, y in zip(A, B, strict=True)]))


def section_q7(study: SGNSStudy, config: SGNSStudyConfig, run: Run) -> dict:
    """Q7: in vs out vs in+out vectors of the dot model: quality, geometry, king − man + woman."""
    config = config.resolved()
    seeds = _seeds(study)
    methods = ("3cosadd", "3cosmul")
    counts = study.vocab.counts
    ev = {kd: [study.evaluation("dot", kd, i, "cosine", methods) for i in seeds] for kd in KINDS}
    for kd, evs in ev.items():
        for i, e in zip(seeds, evs, strict=True):
            run.log("q7_evaluation", vectors=kd, seed=config.seeds[i], **e)
    t_q = run.table(
        "q7_benchmarks", ("vectors", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %",
                          "analogy 3CosMul %"),
        [(kd, _pm([e["ws353"] for e in evs]), _pm([e["simlex"] for e in evs]),
          _pm([e["3cosadd"] for e in evs], 2, 100), _pm([e["3cosmul"] for e in evs], 2, 100))
         for kd, evs in ev.items()],
        f"The dot model's input, output and summed vectors (Levy, Goldberg & Dagan 2015); "
        f"{_settings(study)}; mean ± 95% over seeds. {_protocol(study, 'the cosine')}")
    rng = np.random.default_rng(0)
    queries = rng.choice(len(counts), size=min(config.hub_queries, len(counts)), replace=False)
    geo = {kd: {"rho": [], "norm": [], "iso": [], "overlap": []} for kd in KINDS}
    for i in seeds:
        vs = {kd: study.dot.vectors(i, kd) for kd in KINDS}
        in_lists = _top_lists(vs["in"], queries)
        for kd, X in vs.items():
            g = geo[kd]
            g["rho"].append(float(stats.spearmanr(np.linalg.norm(X, axis=1),
                                                  np.log(counts)).statistic))
            g["norm"].append(float(np.linalg.norm(X, axis=1).mean()))
            g["iso"].append(_mean_pairwise_cosine(X))
            g["overlap"].append(1.0 if kd == "in" else _overlap(in_lists, _top_lists(X, queries)))
    t_g = run.table(
        "q7_geometry", ("vectors", "Spearman ρ(‖v‖, log count)", "mean ‖v‖",
                        "mean pairwise cosine", "top-10 neighbours shared with in"),
        [(kd, _pm(g["rho"]), _pm(g["norm"]), _pm(g["iso"]), _pm(g["overlap"]))
         for kd, g in geo.items()],
        f"Mean pairwise cosine over all word pairs (0: directions spread evenly; Mu & "
        f"Viswanath 2018 report a common direction in trained vectors). Neighbour overlap: "
        f"cosine top-10 of {len(queries)} random words (numpy seed 0), query excluded. Dot "
        f"model; mean ± 95% over seeds.")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, kd in zip(axes, ("in", "out"), strict=True):
        X = study.dot.vectors(0, kd)
        ax.scatter(np.log(counts), np.linalg.norm(X, axis=1), s=2, alpha=0.3)
        ax.set_xlabel("log corpus count")
        ax.set_ylabel(f"‖{kd} vector‖")
        ax.set_title(f"{kd} (ρ = {geo[kd]['rho'][0]:.2f})")
    fig.tight_layout()
    f_g = run.figure(fig, "q7_norms_in_out", f"Q7: norm vs log count for the in and out "
                     f"vectors of the dot model (seed {config.seeds[0]}).")
    sources = [(f"SGNS dot, {kd} (seed {config.seeds[0]})", study.dot.vectors(0, kd))
               for kd in KINDS]
    if study.ppmi_vectors is not None:
        sources.append((f"PPMI-SVD (d={study.ppmi_vectors.shape[1]}, same corpus)",
                        study.ppmi_vectors))
    kq_rows, queen = [], {}
    for label, X in sources:
        wv = WordVectors(study.vocab.words, X, counts)
        for method, top in demo.king_queen(wv):
            ws = [w for w, _ in top]
            queen[(label, method)] = ws.index("queen") + 1 if "queen" in ws else None
            kq_rows.append((label, method, ", ".join(f"{w} ({s:.3f})" for w, s in top)))
    t_kq = run.table(
        "q7_king_queen", ("vectors", "method", "top 5 for king − man + woman"), kq_rows,
        f"Query words excluded; whole vocabulary; unit-normalised vectors. A corpus of "
        f"{study.n_tokens:,} tokens is small for this analogy: whatever comes out is shown."
        ) if kq_rows else "(king, man or woman is not in the vocabulary.)\n"
    means = {m: {kd: np.mean([e[m] for e in evs]) for kd, evs in ev.items()}
             for m in ("ws353", "simlex", "3cosadd")}
    best = {m: max(v, key=v.get) for m, v in means.items()}
    words = {"higher": "better than", "lower": "worse than",
             "indistinguishable": "indistinguishable from"}

    def col(kd, m):
        return [e[m] for e in ev[kd]]

    hits = [f"{lbl} ({m}, rank {r})" for (lbl, m), r in queen.items() if r]
    answer = (
        f"**Answer.** In theory the two tables play symmetric roles: SGNS fits in·out to the "
        f"shifted PMI, which is nearly symmetric in (w, c) (Levy & Goldberg 2014), so an output "
        f"row is as much a description of its word as an input row. Measured: out is "
        f"{words[_compare(col('out', 'ws353'), col('in', 'ws353'))]} in on WS353 and "
        f"{words[_compare(col('out', 'simlex'), col('in', 'simlex'))]} in on SimLex; the best "
        f"vectors are {best['ws353']} on WS353, {best['simlex']} on "
        f"SimLex and {best['3cosadd']} on analogies (3CosAdd) (benchmark table). "
        f"Geometry: norm–frequency Spearman {np.mean(geo['in']['rho']):.2f} "
        f"(in) vs {np.mean(geo['out']['rho']):.2f} (out), mean pairwise cosine "
        f"{np.mean(geo['in']['iso']):.3f} vs {np.mean(geo['out']['iso']):.3f}, and out shares "
        f"{100 * np.mean(geo['out']['overlap']):.0f}% of in's top-10 neighbours (geometry "
        f"table, plot). king − man + woman gives queen in the top 5 for "
        f"{'; '.join(hits) if hits else 'none of these vectors'} (last table).")
    run.add("## Q7. Why do the output weights become word vectors?\n\n"
            "### Quality of in, out and in+out\n\n" + t_q + "\n### Geometry\n\n" + t_g + "\n"
            + f_g + "\n### king − man + woman\n\n" + t_kq + "\n" + answer + "\n")
    return {"evaluation": ev, "geometry": geo, "queen_rank": {f"{a} / {b}": r for (a, b), r
                                                             in queen.items()}}


# --- all four ------------------------------------------------------------------------------------

def run_sgns_study(config: SGNSStudyConfig, run: Run, progress) -> dict:
    """Train once, then the four sections in order (Q1, Q2, Q3, Q7); returns their results."""
    config = config.resolved()
    study = train_sgns_variants(config, progress)
    out = {}
    for name, section in (("q1", section_q1), ("q2", section_q2), ("q3", section_q3),
                          ("q7", section_q7)):
        t = time.perf_counter()
        with progress(f"section {name.upper()}"):
            out[name] = section(study, config, run)
        run.log("timings", **{f"section {name}": time.perf_counter() - t})
    out["study"] = study
    return out
