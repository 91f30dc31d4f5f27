"""Train SGNS with any score, evaluate in / out / in+out vectors, save them.

    python -m experiments.run sgns                         # Wikipedia sample, dot, 5 epochs
    python -m experiments.run sgns --score cosine --temperature 5 --seeds 0 1 2
    python -m experiments.run sgns --quick                 # smoke-test size
    python -m experiments.run sgns --resume runs/sgns-...  # continue an interrupted run
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from experiments.report import Run, free_name, table
from jaxemb import corpus, evaluate, io, sgns, stats, train
from jaxemb.datasets import CORPORA, load_corpus
from jaxemb.wordvectors import WordVectors


@dataclasses.dataclass(frozen=True)
class SGNSRunConfig:
    """SGNS (skip-gram, negative sampling) with a chosen score on a chosen corpus."""

    corpus: str = "wiki"
    """'wiki' (gensim's Wikipedia sample), 'lee', 'text8' (downloaded once), 'planted', or a
    text file (one document per line)."""
    score: str = "dot"
    """dot, scaled_dot, cosine, bilinear, diag_bilinear, neg_sq_euclidean."""
    temperature: float = 1.0
    """cosine: initial temperature t (logit = t·cos)."""
    learn_temperature: bool = True
    dim: int = 100
    window: int = 5
    negative: int = 5
    min_count: int = 5
    sample: float = 1e-3
    epochs: int = 5
    lr: float = 0.025
    optimizer: str = "sgd"
    """'sgd' (word2vec's sparse update, linear decay) or 'adam'."""
    seeds: tuple[int, ...] = (0,)
    """Seeds trained together (vmapped)."""
    max_docs: int | None = None
    devices: int = 1
    """Devices on the mesh's data axis (0: all, across every process); each SGD block is split
    across them."""
    shard_vocab: bool = False
    """Also split the embedding tables along the vocabulary across the devices."""
    coordinator: str | None = None
    """Multi-host: HOST:PORT of process 0 (jax.distributed.initialize); start the same command
    on every host with its own --process-id."""
    num_processes: int = 1
    """Multi-host: how many processes take part."""
    process_id: int = 0
    """Multi-host: this process's rank, 0 … num_processes − 1."""
    resume: str | None = None
    """An earlier run directory of this experiment to continue from its last checkpoint."""
    quick: bool = False
    """Smoke-test size: 20 documents, dim 32, 1 epoch."""

    def resolved(self) -> SGNSRunConfig:
        if self.quick:
            return dataclasses.replace(self, max_docs=20, dim=32, epochs=1)
        return self

    def model_config(self) -> sgns.SGNSConfig:
        return sgns.SGNSConfig(dim=self.dim, window=self.window, negative=self.negative,
                               sample=self.sample, score=self.score,
                               temperature=self.temperature,
                               learn_temperature=self.learn_temperature)

    def train_config(self) -> train.TrainConfig:
        return train.TrainConfig(epochs=self.epochs, lr=self.lr, min_lr=min(1e-4, self.lr),
                                 optimizer=self.optimizer, seeds=tuple(self.seeds),
                                 devices=self.devices, shard_vocab=self.shard_vocab)

    def validate(self) -> None:
        if self.corpus not in CORPORA and not Path(self.corpus).is_file():
            raise ValueError(f"--corpus must be one of {', '.join(CORPORA)} or an existing text "
                             f"file (one document per line), got {self.corpus!r}")
        self.model_config().validate()
        self.train_config().validate()
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError(f"--max-docs must be >= 1 (or None: all), got {self.max_docs}")
        if self.min_count < 1:
            raise ValueError(f"--min-count must be >= 1, got {self.min_count}")


KINDS = ("in", "out", "in+out")
PAIRS = ("wordsim353.tsv", "simlex999.txt")


@dataclasses.dataclass
class SGNSInputs:
    """The corpus, loaded, encoded and checked before the run directory exists."""

    n_docs: int
    vocab: corpus.Vocabulary
    ids: list


def load_inputs(cfg: SGNSRunConfig) -> SGNSInputs:
    """Load and encode ``cfg.corpus``; a vocabulary the evaluation cannot score (fewer than 2
    pairs of WS353 or SimLex-999 in it) is a ValueError naming the flags, before training."""
    docs = load_corpus(cfg.corpus)[: cfg.max_docs]
    vocab = corpus.build_vocabulary(docs, min_count=cfg.min_count)
    # The evaluation's own check on stand-in vectors: it refuses exactly what it would refuse
    # after training.
    wv = WordVectors(vocab.words, np.random.default_rng(0).standard_normal(
        (len(vocab), 2)).astype(np.float32))
    for name in PAIRS:
        try:
            evaluate.word_pairs(wv, evaluate.load_word_pairs(corpus.gensim_datapath(name)))
        except evaluate.EvaluationError as e:
            raise ValueError(f"--corpus {cfg.corpus!r} is too small for the evaluation "
                             f"({len(vocab)} words at --min-count {cfg.min_count}, --max-docs "
                             f"{cfg.max_docs}): {e}") from None
    return SGNSInputs(len(docs), vocab, vocab.encode(docs))


def run_sgns(cfg: SGNSRunConfig, run: Run, progress, inputs: SGNSInputs | None = None) -> None:
    if inputs is None:
        with progress(f"load corpus {cfg.corpus}"):
            inputs = load_inputs(cfg)
    docs_n, vocab, ids = inputs.n_docs, inputs.vocab, inputs.ids
    n_tokens = int(sum(map(len, ids)))
    res = train.train(ids, vocab.counts, cfg.model_config(), cfg.train_config(),
                      work_dir=run.work_dir, progress=True,
                      on_epoch=lambda e, loss: run.log("epoch", epoch=e + 1, loss=loss.tolist()))
    run.log("speed", seconds=res.seconds, compile_seconds=res.compile_seconds,
            effective_words_per_s=res.effective_words_per_s,
            raw_words_per_s=res.raw_words_per_s)
    rows = _evaluate(cfg, vocab, res, run)
    _plot_loss(res, run)
    run.add(f"## SGNS, score `{cfg.score}` on {cfg.corpus}\n\n{docs_n} documents, "
            f"{n_tokens} in-vocabulary tokens, vocabulary {len(vocab)} (min_count "
            f"{cfg.min_count}); dim {cfg.dim}, window {cfg.window}, negative {cfg.negative}, "
            f"sample {cfg.sample}, {cfg.epochs} epochs, optimizer {cfg.optimizer} (lr "
            f"{cfg.lr}), seeds {list(cfg.seeds)} trained together.\n\n"
            f"Training: {res.seconds:.1f} s ({res.effective_words_per_s:,.0f} effective words/s "
            f"per seed-set, {res.raw_words_per_s:,.0f} raw), compile {res.compile_seconds:.1f} "
            "s.\n\n"
            + table(("vectors", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %", "analogy 3CosMul %"),
                    rows, f"mean ± 95% t-interval over {len(cfg.seeds)} seed(s). Protocol: "
                    "cosine similarity; vocabulary = the trained one (restrict 300000), "
                    "case-insensitive as gensim; analogies exclude the question words; OOV "
                    "pairs/questions skipped (counts in metrics.jsonl).")
            + "\n![loss per epoch](loss.png)\n\nVectors: `vectors-<kind>-seed<k>.txt` "
            "(word2vec text format).\n")


def _evaluate(cfg: SGNSRunConfig, vocab, res, run: Run) -> list:
    pairs = {n: evaluate.load_word_pairs(corpus.gensim_datapath(n)) for n in PAIRS}
    analogies = evaluate.load_analogies(corpus.gensim_datapath("questions-words.txt"))
    rows = []
    for kind in KINDS:
        metrics = {"ws353": [], "simlex": [], "3cosadd": [], "3cosmul": []}
        for i, seed in enumerate(cfg.seeds):
            wv = WordVectors(vocab.words, sgns.export_vectors(res.seed_params(i), kind),
                             vocab.counts)
            io.save_word2vec(run.path / free_name(
                run.path, f"vectors-{kind.replace('+', '')}-seed{seed}", ".txt"), wv)
            ws = evaluate.word_pairs(wv, pairs["wordsim353.tsv"])
            sl = evaluate.word_pairs(wv, pairs["simlex999.txt"])
            metrics["ws353"].append(ws.spearman)
            metrics["simlex"].append(sl.spearman)
            record = {"vectors": kind, "seed": seed, "ws353": ws.spearman,
                      "simlex": sl.spearman, "ws353_oov": ws.n_oov, "simlex_oov": sl.n_oov}
            for method in ("3cosadd", "3cosmul"):
                an = evaluate.analogies(wv, analogies, method=method)
                metrics[method].append(100 * an.accuracy)
                record[method] = an.accuracy
                record[f"{method}_answered"] = an.total.answered
            run.log("evaluation", **record)
        rows.append((kind, *(stats.format_interval(metrics[m], 3) for m in ("ws353", "simlex")),
                     *(stats.format_interval(metrics[m], 2) for m in ("3cosadd", "3cosmul"))))
    return rows


def _plot_loss(res, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = np.arange(1, res.epoch_loss.shape[0] + 1)
    for i in range(res.epoch_loss.shape[1]):
        ax.plot(epochs, res.epoch_loss[:, i], marker="o", label=f"seed {i}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean SGNS loss per pair")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.path / "loss.png", dpi=120)
    plt.close(fig)
