"""What Q1, Q2, Q3 and Q7 share: the config, the SGNS variants trained once per run, the texts.

Every variant trains once, its seeds vmapped (``jaxemb.train``), the first time a question asks
for it (:func:`trained`, memoised in the run's ``shared`` dict); the questions only evaluate.
The pair statistics, the planted corpus and the PPMI-SVD reference are computed on first use.
In the main job each variant checkpoints under ``RUN_DIR/work/sgns-<variant>`` (the planted run
under ``sgns-planted``), so ``--resume`` continues an interrupted training; an interruption is
never recorded as a diverged variant (only a NaN loss is).

    from experiments.study import q1, sgns_common
    shared = {}
    results = q1.measure(sgns_common.SGNSStudyConfig(quick=True), shared, progress)
    SGNSStudyConfig(corpus="text8")                            # the large size

Measured on the 2-core CPU while other jobs shared it (load average 5–9): the default (wiki
sample, 5 variants × 3 seeds × 10 epochs, planted check) took 235 s of CPU time (237 s wall at
load ~6; 442 s at load ~9), about 80% of it training; quick took 40 s of CPU time, mostly XLA
compilation (one per variant). text8 (17M tokens) takes about 40× the training time. Q3's
controls (cosine_t3, cosine_t30, cosine_dotinit: 8 variants, not 5) cost 81 CPU-s more
(``--only q3``: 250 against 169 CPU-s, 2026-12-07).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from jaxemb import benchmarks, corpus, datasets, ppmi, sgns, stats, train
from jaxemb.datasets import load_corpus


class SGNSStudyError(ValueError):
    """A bad setting of the SGNS study."""


VARIANTS = ("dot", "cosine_t1", "cosine_t3", "cosine_fixed", "cosine_t30", "cosine_dotinit",
            "cosine_learned", "bilinear")
# Q3's sweep of fixed temperatures: any variant named cosine_t<T> is cosine with t = T fixed.
COSINE_T = re.compile(r"cosine_t(\d+(?:\.\d+)?)")
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
    """Epochs of every variant. Not gensim's 5: on the 412k-token Wikipedia sample 5 epochs
    leave dot undertrained (measured 2026-12-07, 5 seeds: WS353 0.236 ± 0.017 against 0.411 ±
    0.042 at 10 epochs)."""
    lr: float = 0.025
    """Sparse-SGD learning rate, decayed linearly to 1e-4 (word2vec's schedule)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds trained together (vmapped), the same for every variant (paired comparisons); at
    least 3 for the 95% intervals. 3 by default to keep the main job within 10 minutes on 2
    cores: training cost grows with seeds × epochs, and 5 × 10 would add about 120 s; 5 seeds
    at 5 epochs (the same cost) undertrain (see --epochs). Pass 5 seeds where time allows."""
    variants: tuple[str, ...] = VARIANTS
    """Scores SGNS is trained with (Q3): dot, cosine_t<T> (t = T fixed, any T > 0: the
    default sweep t = 1, 3, 10, 30 is cosine_t1, cosine_t3, cosine_fixed, cosine_t30),
    cosine_fixed (t = --cosine-temperature fixed), cosine_dotinit (cosine_fixed started from
    word2vec's ±0.5/d on both tables, the control of the initialisation), cosine_learned (t
    learned from --learned-temperature-init), bilinear (in·W·out, W learned from the
    identity). Each costs ~27 CPU-s at the default size. 'dot' is required (Q1, Q2, Q7)."""
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
    ppmi_svd: bool = True
    """Q7: PPMI-SVD vectors of the same corpus beside SGNS (king − man + woman, the dimension
    sweep, composition): one SVD at the largest --sweep-dims, truncated (on the wiki sample the
    SVD at d = 300 took 8 s wall, the sweep's benchmarks and bootstrap 6 s); --no-ppmi-svd
    skips them."""
    sweep_dims: tuple[int, ...] = (10, 30, 100, 300)
    """Q7: dimensions of the PPMI-SVD sweep (truncations of one SVD; those ≥ the vocabulary
    size are left out); each is compared with the largest by a paired bootstrap over the
    benchmarks' word pairs."""
    sweep_sgns_dims: tuple[int, ...] = ()
    """Q7: also train SGNS (dot, every seed) at these dimensions for the sweep (none by default:
    on the wiki sample each took about 15 CPU-seconds at d = 10 or 30, 23 at d = 100)."""
    init_ablation: bool = True
    """Q7: also train dot with random output vectors (dot_out_random, same seeds) beside
    word2vec's zero init (as long as training dot: about 23 CPU-seconds on the wiki sample)."""
    composition_pairs: tuple[str, ...] = ("blood:color:red", "water:cold:ice",
                                          "capital:france:paris", "king:female:queen",
                                          "war:sea:navy", "sun:night:moon")
    """Q7: word pairs 'a:b' (or 'a:b:target') whose compositions a⊙b, a+b and (â + b̂)/2 are
    looked up among all words by cosine; a target's rank is reported when given. Pairs with a
    word outside the vocabulary are listed as skipped. The defaults were fixed before any
    result was seen, checked only to be in the wiki sample's vocabulary."""
    quick: bool = False
    """Smoke-test size: 20 documents, dim 32, 2 epochs, small planted corpus; Q7 without
    PPMI-SVD and the initialisation ablation."""

    def resolved(self) -> SGNSStudyConfig:
        if self.quick:
            return dataclasses.replace(self, max_docs=20, dim=32, epochs=2, hub_queries=300,
                                       planted_docs=min(self.planted_docs, 20), planted_words=50,
                                       pair_min_count=min(self.pair_min_count, 5.0),
                                       example_min_count=min(self.example_min_count, 2.0),
                                       pmi_draws=1, ppmi_svd=False, init_ablation=False)
        return self

    def model_config(self, variant: str) -> sgns.SGNSConfig:
        """The SGNS settings of one variant: everything but the score is shared."""
        named = {"dot": dict(score="dot"),
                 "cosine_fixed": dict(score="cosine", temperature=self.cosine_temperature,
                                      learn_temperature=False),
                 # cosine is undefined at dot's out = 0: word2vec's in-draw on both tables
                 "cosine_dotinit": dict(score="cosine", temperature=self.cosine_temperature,
                                        learn_temperature=False, init="small"),
                 "cosine_learned": dict(score="cosine",
                                        temperature=self.learned_temperature_init,
                                        learn_temperature=True),
                 "bilinear": dict(score="bilinear"),
                 # Q7's ablation: dot with output vectors drawn like the inputs (±0.5/d)
                 "dot_out_random": dict(score="dot", init="small")}
        fixed = COSINE_T.fullmatch(variant)  # the sweep: cosine_t<T>, t = T fixed
        score = (dict(score="cosine", temperature=float(fixed[1]), learn_temperature=False)
                 if fixed else named[variant])
        # Every variant trains with the same row update, "damped" (see SGNSConfig.update): the
        # default "implicit" bounds steps in feature space, which is not cosine's own curvature.
        return sgns.SGNSConfig(dim=self.dim, window=self.window, negative=self.negative,
                               sample=self.sample, update=STUDY_UPDATE, **score)

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
        if not self.sweep_dims or min(self.sweep_dims) < 1 or min(
                self.sweep_sgns_dims, default=1) < 1:
            bad("sweep-dims", (self.sweep_dims, self.sweep_sgns_dims), "dimensions >= 1 (at "
                "least one in --sweep-dims)")
        if any(len(p.split(":")) not in (2, 3) or not all(p.split(":"))
               for p in self.composition_pairs):
            bad("composition-pairs", tuple(self.composition_pairs), "words 'a:b' or 'a:b:target'")
        if self.corpus not in datasets.CORPORA and not Path(self.corpus).is_file():
            bad("corpus", self.corpus, f"one of {', '.join(datasets.CORPORA)} or an existing "
                "text file (one document per line)")
        if len(self.seeds) < 3 or len(set(self.seeds)) != len(self.seeds):
            bad("seeds", tuple(self.seeds), "at least 3 distinct seeds (95% intervals)")
        unknown = [v for v in self.variants if v not in VARIANTS and not (
            COSINE_T.fullmatch(v) and float(COSINE_T.fullmatch(v)[1]) > 0)]
        if unknown or len(set(self.variants)) != len(self.variants) or "dot" not in self.variants:
            bad("variants", tuple(self.variants),
                f"distinct names from {VARIANTS} or cosine_t<T> (T > 0), including 'dot' (Q1, "
                "Q2, Q7 use it)")
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

    def bilinear_departure(self) -> np.ndarray | None:
        """[seeds] ‖W − I‖_F / ‖I‖_F of a bilinear variant, W's distance from its initial
        identity relative to the identity's size (None for other scores)."""
        if self.result is None or "W" not in self.result.params["score"]:
            return None
        W = np.asarray(self.result.params["score"]["W"], np.float64)  # [seeds, d, d]
        eye = np.eye(W.shape[-1])
        return np.linalg.norm(W - eye, axis=(-2, -1)) / np.linalg.norm(eye)

    def describe(self) -> str:
        """The variant's logit in words (table rows, plot legends)."""
        m = self.model
        if m.score == "dot":
            return "in·out"
        if m.score == "bilinear":
            return "in·W·out, W learned (init I)"
        if m.learn_temperature:
            return f"t·cos(in, out), t learned (init {m.temperature:g})"
        init = "" if m.init == "auto" else f", init {m.init!r}"
        return f"{m.temperature:g}·cos(in, out), t fixed{init}"


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
    """The trained variants and their corpus; pair statistics, the planted run and the PPMI-SVD
    reference are computed on first use (:meth:`pairs`, :meth:`planted`, :meth:`ppmi_vectors`)."""

    config: SGNSStudyConfig
    n_docs: int
    n_tokens: int
    vocab: corpus.Vocabulary
    ids: list
    variants: dict[str, VariantRun]
    bench: benchmarks.Benchmarks
    seconds: dict
    cache: dict = dataclasses.field(default_factory=dict)
    work_dir: Path | None = None  # checkpoints of each variant under work_dir/sgns-<variant>

    @property
    def dot(self) -> VariantRun:
        return self.variants["dot"]

    @property
    def seed_indices(self) -> range:
        return range(len(self.config.seeds))

    def _once(self, name: str, label: str, progress, make):
        if name not in self.cache:
            t = time.perf_counter()
            with progress(label):
                self.cache[name] = make()
            self.seconds[name] = time.perf_counter() - t
        return self.cache[name]

    def pairs(self, progress) -> sp.csr_matrix:
        """[V, V] expected (centre, context) pairs SGNS trains on per epoch."""
        c = self.config
        return self._once("pairs", f"pairs SGNS sees ({c.pmi_draws} subsampling draws)",
                          progress, lambda: ppmi.expected_pairs(
                              self.ids, len(self.vocab), c.window, self.vocab.counts, c.sample,
                              draws=c.pmi_draws, seed=0))

    def planted(self, progress) -> PlantedRun | None:
        """The planted-corpus check (None when --planted-docs is 0)."""
        if not self.config.planted_docs:
            return None
        return self._once("planted", f"planted corpus ({self.config.planted_docs} documents)",
                          progress, lambda: _train_planted(
                              self.config, _work(self.work_dir, "planted")))

    def ppmi_vectors(self, progress) -> dict[int, np.ndarray] | None:
        """{d: [V, d] PPMI-SVD vectors of the same corpus} at --dim and each --sweep-dims below
        the vocabulary size, truncations of one SVD (None unless --ppmi-svd)."""
        if not self.config.ppmi_svd:
            return None
        dims = sorted({d for d in (*self.config.sweep_dims, self.config.dim)
                       if d < len(self.vocab)})

        def make():
            matrix = ppmi.ppmi(ppmi.cooccurrence(self.ids, len(self.vocab), self.config.window))
            u, s = ppmi.svd_factors(matrix, dims[-1])
            return {d: ppmi.truncated_vectors(u, s, d) for d in dims}

        return self._once("ppmi_svd", f"PPMI-SVD (one SVD at d={dims[-1]}, truncated)",
                          progress, make) if dims else None

    def extra_variant(self, name: str, progress, dim: int | None = None) -> VariantRun:
        """A variant outside --variants trained on first use with every seed (Q7: dot_out_random,
        or dot at another ``dim``), checkpointed under work_dir/sgns-<name>[-d<dim>]."""
        config = self.config if dim is None else dataclasses.replace(self.config, dim=dim)
        key = name if dim is None else f"{name}-d{dim}"
        return self._once(f"train {key}", f"Q7: train {key} ({len(config.seeds)} seeds, "
                          f"{config.epochs} epochs)", progress, lambda: _train_variant(
                              name, config, self.ids, self.vocab.counts,
                              _work(self.work_dir, key)))

    def evaluation(self, variant: str, kind: str, seed_index: int, score: str = "cosine",
                   methods: tuple[str, ...] = ("3cosadd",)) -> dict:
        """Benchmarks of one model's vectors (memoised: Q1, Q3 and Q7 share them)."""
        done = self.cache.setdefault(("evaluation", variant, kind, seed_index, score), {})
        todo = tuple(m for m in methods if m not in done)
        if todo or "ws353" not in done:
            v = self.variants[variant].vectors(seed_index, kind)
            done |= benchmarks.evaluate_vectors(v, self.bench, score, todo,
                                              pairs="ws353" not in done)
        return {k: x for k, x in done.items()
                if not k.startswith("3cos") or k.split("_")[0] in methods}


STUDY_UPDATE = "damped"  # the SGNS row update of every variant (jaxemb.sgns.SGNSConfig.update)


# The evaluation's top-10 neighbour lists (Q1 hubness, Q7 overlap) need 10 other words.
MIN_VOCAB = 11


@dataclasses.dataclass
class SGNSInputs:
    """The corpus of a study, loaded and checked before any training (and before the run
    directory exists): its vocabulary, encoded documents and benchmarks."""

    n_docs: int
    vocab: corpus.Vocabulary
    ids: list
    bench: benchmarks.Benchmarks
    seconds: float


def load_inputs(config: SGNSStudyConfig) -> SGNSInputs:
    """Load and encode ``config.corpus``; a corpus the evaluation cannot use (fewer than
    ``MIN_VOCAB`` words at --min-count) is a :class:`SGNSStudyError` naming the flags."""
    t = time.perf_counter()
    docs = load_corpus(config.corpus)[: config.max_docs]
    vocab = corpus.build_vocabulary(docs, min_count=config.min_count)
    if len(vocab) < MIN_VOCAB:
        raise SGNSStudyError(
            f"--corpus {config.corpus!r} is too small for the evaluation: {len(vocab)} words at "
            f"--min-count {config.min_count} (max-docs {config.max_docs}), need at least "
            f"{MIN_VOCAB} (top-10 neighbour lists); use a larger corpus or a lower --min-count")
    ids = vocab.encode(docs)
    bench = benchmarks.prepare_benchmarks(vocab.words)
    return SGNSInputs(len(docs), vocab, ids, bench, time.perf_counter() - t)


def trained(config: SGNSStudyConfig, shared: dict, progress) -> SGNSStudy:
    """The variants of ``config`` trained once per run: the first question to ask trains them
    (validating first), the others find them in ``shared["sgns"]``. ``shared`` may hold the
    checked corpus (``"sgns_inputs"``) and the run's ``"work_dir"`` (each variant checkpoints
    under ``work_dir/sgns-<variant>``, so an interrupted run resumes). A training that failed
    fails the later questions at once with the same error, rather than training again."""
    config = config.resolved()
    study = shared.get("sgns")
    if isinstance(study, BaseException) and shared.get("sgns_config") == config:
        raise study
    if not isinstance(study, SGNSStudy) or study.config != config:
        config.validate()
        inputs = shared.get("sgns_inputs")
        work_dir = shared.get("work_dir")
        shared["sgns_config"] = config
        try:
            study = train_variants(config, progress, inputs, work_dir)
        except train.TrainingInterrupted:
            raise
        except Exception as e:
            shared["sgns"] = e
            raise
        shared["sgns"] = study
    return study


def train_variants(config: SGNSStudyConfig, progress, inputs: SGNSInputs | None = None,
                   work_dir: str | Path | None = None) -> SGNSStudy:
    """Load the corpus (unless ``inputs`` holds it) and train every variant once (seeds
    vmapped), checkpointing under ``work_dir/sgns-<variant>`` when ``work_dir`` is given."""
    seconds = {}
    if inputs is None:
        with progress(f"load corpus {config.corpus}"):
            inputs = load_inputs(config)
    seconds["corpus"] = inputs.seconds
    vocab, ids = inputs.vocab, inputs.ids
    data = sgns.device_corpus(ids, vocab.counts, config.sample)
    variants = {}
    for name in config.variants:
        t = time.perf_counter()
        with progress(f"SGNS {name} ({len(config.seeds)} seeds, {config.epochs} epochs)"):
            variants[name] = _train_variant(name, config, data, vocab.counts,
                                            _work(work_dir, name))
        seconds[f"train {name}"] = time.perf_counter() - t
    return SGNSStudy(config, inputs.n_docs, int(sum(map(len, ids))), vocab, ids, variants,
                     inputs.bench, seconds, work_dir=work_dir)


def _work(work_dir, name: str) -> Path | None:
    return None if work_dir is None else Path(work_dir) / f"sgns-{name}"


def _diverged(e: train.TrainingError) -> bool:
    """A NaN/inf loss (reported as a diverged variant), not a failed checkpoint write or an
    interruption (which stop the study). The library has no subclass for it: its message is
    the mark."""
    return not isinstance(e, train.TrainingInterrupted) and "NaN" in str(e)


def _train_variant(name: str, config: SGNSStudyConfig, data, counts,
                   work_dir: Path | None = None) -> VariantRun:
    losses = []
    model = config.model_config(name)
    try:
        res = train.train(data, counts, model, config.train_config(), work_dir=work_dir,
                          progress=True,
                          on_epoch=lambda e, loss: losses.append(np.asarray(loss)))
    except train.TrainingError as e:  # report a diverged variant instead of losing the study
        if not _diverged(e):
            raise
        return VariantRun(name, model, None, np.array(losses).reshape(-1, len(config.seeds)),
                          str(e))
    res = _first_speed(res, work_dir)
    return VariantRun(name, model, res, res.epoch_loss)


SPEED = ("seconds", "effective_words", "raw_words", "compile_seconds")


def _first_speed(res: train.TrainResult, work_dir: Path | None) -> train.TrainResult:
    """A variant's speed is that of the run that trained it: a resumed run that finds it
    trained already (nothing left to train) keeps the figures saved then, not 0 words in 0 s."""
    if work_dir is None:
        return res
    saved = Path(work_dir) / "speed.json"
    if res.raw_words == 0 and saved.is_file():
        return dataclasses.replace(res, **json.loads(saved.read_text(encoding="utf-8")))
    saved.write_text(json.dumps({k: getattr(res, k) for k in SPEED}), encoding="utf-8")
    return res


def _train_planted(config: SGNSStudyConfig, work_dir: Path | None = None) -> PlantedRun:
    pc = datasets.planted_corpus(n_docs=config.planted_docs, seed=0)
    vocab = corpus.build_vocabulary(pc.docs, min_count=config.min_count)
    ids = vocab.encode(pc.docs)
    res = train.train(ids, vocab.counts, config.model_config("dot"), config.train_config(),
                      work_dir=work_dir, progress=True)
    rows = np.arange(min(config.planted_words, len(vocab)))
    true = pc.model_pmi(rows=[vocab.words[r] for r in rows])
    cooc = ppmi.expected_pairs(ids, len(vocab), config.window, vocab.counts, config.sample,
                               draws=config.pmi_draws, seed=0)
    return PlantedRun(res, rows, true, cooc, vocab.counts, int(sum(map(len, ids))))


# --- what the questions' results share ----------------------------------------------------------

def setup(study: SGNSStudy) -> dict:
    """The settings and evaluation protocol every SGNS table caption states (JSON values)."""
    c = study.config
    e = study.evaluation("dot", "in", 0)
    return {"corpus": c.corpus, "n_docs": study.n_docs, "n_tokens": study.n_tokens,
            "vocab_size": len(study.vocab), "min_count": c.min_count, "dim": c.dim,
            "window": c.window, "negative": c.negative, "sample": c.sample,
            "epochs": c.epochs, "lr": c.lr, "seeds": list(c.seeds), "update": STUDY_UPDATE,
            "protocol": {key: int(e[key]) for key in (
                "ws353_pairs", "simlex_pairs", "ws353_oov", "simlex_oov", "3cosadd_answered",
                "3cosadd_oov")}}


def settings_text(s: dict) -> str:
    """The training settings of a ``setup`` dict, for captions."""
    return (f"{s['corpus']} ({s['n_docs']} documents, {s['n_tokens']:,} in-vocabulary tokens, "
            f"vocabulary {s['vocab_size']:,} at min_count {s['min_count']}); dim {s['dim']}, "
            f"window {s['window']} (dynamic), negative {s['negative']}, sample {s['sample']}, "
            f"{s['epochs']} epochs, sparse SGD lr {s['lr']} → 1e-4 with the "
            f"{s.get('update', STUDY_UPDATE)!r} row update, seeds {list(s['seeds'])} trained "
            f"together (vmapped)")


def protocol_text(s: dict, score_text: str) -> str:
    """The benchmark protocol of a ``setup`` dict (counts of the dot model's in-vectors)."""
    p = s["protocol"]
    return (f"Protocol: WS353 / SimLex-999 Spearman ρ between gold ratings and {score_text} of "
            f"the two words ({p['ws353_pairs']} / {p['simlex_pairs']} pairs used, "
            f"{p['ws353_oov']} / {p['simlex_oov']} OOV skipped); Google analogies, question "
            f"words excluded, answers from the whole trained vocabulary ({s['vocab_size']} "
            f"words, case-insensitive), {p['3cosadd_answered']} questions answered, "
            f"{p['3cosadd_oov']} OOV skipped; accuracy = correct / answered.")


def pm(values, digits: int = 3, scale: float = 1.0) -> str:
    """'mean ± half-width' of the 95% t-interval over seeds (``jaxemb.stats``)."""
    return stats.format_interval(values, digits, scale)


def unit(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` [n, d] scaled to length 1 (zero rows stay 0)."""
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def rowwise(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """[n] A[i]·B[i]."""
    return np.einsum("nd,nd->n", A, B)


def in_out_pair_scores(vin: np.ndarray, vout: np.ndarray, ia: np.ndarray,
                       ib: np.ndarray) -> np.ndarray:
    """[n] SGNS's own score of word pairs, in·out, with both words as the centre averaged (a
    benchmark pair is unordered; in_a·out_b ≠ in_b·out_a)."""
    return 0.5 * (rowwise(vin[ia], vout[ib]) + rowwise(vin[ib], vout[ia]))


def random_queries(vocab_size: int, n: int) -> np.ndarray:
    """``n`` distinct random rows (numpy seed 0): the queries of hubness (Q1) and overlap (Q7)."""
    rng = np.random.default_rng(0)
    return rng.choice(vocab_size, size=min(n, vocab_size), replace=False)
