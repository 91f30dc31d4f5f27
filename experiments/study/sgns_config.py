"""The SGNS study's settings (Q1, Q2, Q3, Q7 share them): :class:`SGNSStudyConfig`, the score
variants and their validation. Training and the shared state are in ``sgns_common``."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from jaxemb import datasets, sgns, train

STUDY_UPDATE = "damped"  # the SGNS row update of every variant (jaxemb.sgns.SGNSConfig.update)


def study_pool(negative: int, window: int) -> int:
    """Negatives per shared pool in the study: negative × (window + 1), rounded up to a multiple
    of 8 (the engine's default before issue 14; jaxemb.sgns.pool_size now takes 2·window). The
    study compares scores with every other setting fixed, and its figures (README, docs/main_job)
    were measured with this pool; the larger default would cost its 10-minute budget."""
    return sgns.rounded_pool(negative * (window + 1))


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
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Seeds trained together (vmapped), the same for every variant (paired comparisons); at
    least 3 for the 95% intervals. Training cost grows with seeds × epochs: on the 2-vCPU AMD
    EPYC dev box (2026-12-07, quiet, empty compilation cache) the eight variants took 178 s at 5
    seeds and the whole main job 535 s; on the earlier Intel Xeon box in its slower state the
    eight took 273 s at 5 seeds against 153 s at 3. ``--sgns.seeds 0 1 2`` where time is short
    (--quick keeps the first 3); 5 seeds at 5 epochs undertrain (see --epochs)."""
    variants: tuple[str, ...] = VARIANTS
    """Scores SGNS is trained with (Q3): dot, cosine_t<T> (t = T fixed, any T > 0: the
    default sweep t = 1, 3, 10, 30 is cosine_t1, cosine_t3, cosine_fixed, cosine_t30),
    cosine_fixed (t = --cosine-temperature fixed), cosine_dotinit (cosine_fixed started from
    word2vec's ±0.5/d on both tables, the control of the initialisation), cosine_learned (t
    learned from --learned-temperature-init), bilinear (in·W·out, W learned from the
    identity). Each costs ~27 CPU-s at the default size. 'dot' is required (Q1, Q2, Q7)."""
    workers: int = 2
    """Variants trained at once, each in a thread of its own (on one device; on a mesh of
    several, one at a time). On CPU one variant's training keeps about one core busy, so 2
    threads on 2 cores train the variants in about half the wall time; the numbers are the
    same (each variant's seeds and data are its own)."""
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
    """Smoke-test size: 20 documents, dim 32, 2 epochs, the first 3 seeds, small planted corpus;
    Q7 without PPMI-SVD and the initialisation ablation."""

    def resolved(self) -> SGNSStudyConfig:
        if self.quick:
            return dataclasses.replace(self, max_docs=20, dim=32, epochs=2, hub_queries=300,
                                       seeds=tuple(self.seeds)[:3],
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
        # default "sequential" bounds steps in feature space, which is not cosine's own
        # curvature.
        return sgns.SGNSConfig(dim=self.dim, window=self.window, negative=self.negative,
                               sample=self.sample, update=STUDY_UPDATE,
                               neg_pool=study_pool(self.negative, self.window), **score)

    def train_config(self) -> train.TrainConfig:
        return train.TrainConfig(epochs=self.epochs, lr=self.lr, min_lr=min(1e-4, self.lr),
                                 seeds=tuple(self.seeds))

    def validate(self) -> None:
        def bad(flag, value, allowed):
            raise SGNSStudyError(f"--{flag} must be {allowed}, got {value!r}")

        for name in ("min_count", "dim", "window", "negative", "epochs", "hub_queries", "workers",
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
