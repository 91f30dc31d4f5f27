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
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from experiments.study.sgns_config import (  # noqa: F401  (re-exported)
    COSINE_T,
    KINDS,
    STUDY_UPDATE,
    VARIANTS,
    SGNSStudyConfig,
    SGNSStudyError,
)
from jaxemb import benchmarks, corpus, datasets, engine, ppmi, sgns, stats, train
from jaxemb.datasets import load_corpus

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
    # On CPU one variant's jitted step keeps about one core busy (measured: process time =
    # wall time), so variants train in --workers threads at once; on a mesh of several devices
    # one at a time (engine.concurrent_workers). Each variant's numbers are its own either way.
    mesh = engine.make_mesh(config.train_config().devices)  # the devices train.train uses
    workers = engine.concurrent_workers(min(config.workers, len(config.variants)), mesh.size)

    def job(name: str):
        def run():
            t = time.perf_counter()
            result = _train_variant(name, config, data, vocab.counts, _work(work_dir, name),
                                    progress=workers == 1)
            return result, time.perf_counter() - t
        return run

    label = (f"SGNS {len(config.variants)} variants ({', '.join(config.variants)}; "
             f"{len(config.seeds)} seeds, {config.epochs} epochs, {workers} thread(s))")
    with progress(label):
        done = engine.run_jobs({name: job(name) for name in config.variants}, workers,
                               "SGNS variants")
    variants = {}
    for name in config.variants:  # in the config's order, whichever finished first
        variants[name], seconds[f"train {name}"] = done[name]
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
                   work_dir: Path | None = None, progress: bool = True) -> VariantRun:
    losses = []
    model = config.model_config(name)
    try:
        res = train.train(data, counts, model, config.train_config(), work_dir=work_dir,
                          progress=progress,
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
