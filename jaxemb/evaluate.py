"""Intrinsic evaluation: word-similarity correlation and word analogies, gensim's protocol in JAX.

Both follow gensim's ``KeyedVectors.evaluate_word_pairs`` and ``evaluate_word_analogies``
(``dummy4unknown=False``) so our numbers can be checked against the peer's on the same vectors:

* only the first ``restrict_vocab`` words (the most frequent, by convention) are used, both to
  look up test words and as analogy candidates;
* with ``case_insensitive`` every word is uppercased; when several vocabulary words share an
  uppercase form, the earliest (most frequent) one stands for all of them;
* an item with a word outside that vocabulary is skipped and counted as OOV, not scored as wrong,
  so a score always comes with its coverage: scores over different coverage are not comparable.

``score="dot"`` (not in gensim) keeps everything above but scores with the raw inner product,
so the vectors' norms count: word pairs correlate x_a·x_b, and 3CosAdd answers
argmax_x x·(b − a + c) over the unnormalised vectors.

Data: WordSim-353 (Finkelstein et al. 2002), SimLex-999 (Hill, Reichart & Korhonen 2015), and
the Google analogy set questions-words.txt (Mikolov et al. 2013), as shipped in gensim's test data.

Besides io, this is the only module that reads files, and only these evaluation data files.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxemb.scoring import batched
from jaxemb.search import ANALOGY_METHODS, analogy_scores
from jaxemb.wordvectors import WordVectors

PathLike = str | os.PathLike

# gensim looks at its top 5 3CosAdd candidates (a, b, c already removed) for the first one whose
# uppercase form is not a question word; we reproduce that window exactly (see `analogies`).
GENSIM_TOPN = 5
# Questions per step: a [batch, restrict_vocab] float32 score block (3CosMul holds three), about
# 300 MiB (900 MiB) at gensim's default 300000 words.
DEFAULT_BATCH = 256
# What a word pair or an analogy candidate is scored by: "cosine" is gensim's protocol, "dot" the
# same vectors with their norms kept (what an SGNS model's logit uses).
SCORES = ("cosine", "dot")


class EvaluationError(ValueError):
    """An evaluation file or an evaluation that cannot give a number (with the reason)."""


# --- data ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class WordPairs:
    """Word pairs with gold similarity scores; ``skipped`` lists invalid lines (1-based)."""

    name: str
    word_a: np.ndarray  # (n,) str
    word_b: np.ndarray  # (n,) str
    gold: np.ndarray  # (n,) float64
    skipped: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.gold)


@dataclasses.dataclass(frozen=True, eq=False)
class AnalogySection:
    """One ``: name`` section: ``questions`` [n, 4] str, rows (a, b, c, d) for a:b :: c:d."""

    name: str
    questions: np.ndarray

    def __len__(self) -> int:
        return len(self.questions)


@dataclasses.dataclass(frozen=True, eq=False)
class AnalogySet:
    """The sections of an analogy file, in file order."""

    name: str
    sections: tuple[AnalogySection, ...]

    def __iter__(self):
        return iter(self.sections)

    def __len__(self) -> int:
        return len(self.sections)


def load_word_pairs(path: PathLike, delimiter: str = "\t", encoding: str = "utf8") -> WordPairs:
    """Read ``word_a<TAB>word_b<TAB>score`` lines (the wordsim353.tsv and simlex999.txt format).

    As gensim: lines starting with '#' are comments (both files' headers are comments); a line
    that is not exactly three fields with a numeric third is skipped as invalid, and the words
    are kept as written (no stripping). Unlike gensim, a NaN or infinite score is invalid too
    (gensim would let it turn both correlations into NaN).
    """
    a, b, gold, skipped = [], [], [], []
    with open(path, encoding=encoding) as f:
        for line_no, line in enumerate(f, 1):
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split(delimiter)
            try:
                wa, wb, score = fields
                score = float(score)
            except ValueError:
                skipped.append(line_no)
                continue
            if not np.isfinite(score):
                skipped.append(line_no)
                continue
            a.append(wa)
            b.append(wb)
            gold.append(score)
    if not gold:
        raise EvaluationError(f"no word pairs in {path}: expected lines 'word_a{delimiter!r}"
                              f"word_b{delimiter!r}score' ({len(skipped)} invalid line(s))")
    return WordPairs(Path(path).name, np.array(a, dtype=str), np.array(b, dtype=str),
                     np.array(gold, np.float64), tuple(skipped))


def load_analogies(path: PathLike, encoding: str = "utf8") -> AnalogySet:
    """Read a questions-words.txt file: ``: name`` lines open sections of ``a b c d`` lines.

    Blank lines are skipped. A question before the first section header, a line that is not
    four words or an empty section name is an error naming the line (gensim would skip the
    wrong-length lines; a file it accepts otherwise reads the same here).
    """
    sections: list[tuple[str, list[list[str]]]] = []
    with open(path, encoding=encoding) as f:
        for line_no, line in enumerate(f, 1):
            if line.startswith(":"):
                name = line.lstrip(": ").strip()  # gensim's own parsing of the header
                if not name:
                    raise EvaluationError(f"{path}, line {line_no}: empty section name")
                sections.append((name, []))
                continue
            words = line.split()
            if not words:
                continue
            if not sections:
                raise EvaluationError(f"{path}, line {line_no}: question before the first "
                                      f"': section' header")
            if len(words) != 4:
                raise EvaluationError(f"{path}, line {line_no}: expected 4 words 'a b c d', "
                                      f"got {len(words)}: {line.strip()!r}")
            sections[-1][1].append(words)
    if not any(qs for _, qs in sections):
        raise EvaluationError(f"no analogy questions in {path}")
    return AnalogySet(Path(path).name, tuple(
        AnalogySection(name, np.array(qs, dtype=str).reshape(-1, 4)) for name, qs in sections))


# --- shared: the restricted, case-folded vocabulary --------------------------------------------

def _restricted_vocab(wv: WordVectors, restrict_vocab: int | None, case_insensitive: bool):
    """(n, {key: row}, group [n], key): the first n words' lookup and each row's representative.

    The earliest word wins a key, as gensim's ``{k.upper(): i for k in reversed(ok_keys)}``.
    """
    if restrict_vocab is not None and (not isinstance(restrict_vocab, (int, np.integer))
                                       or restrict_vocab < 1):
        raise EvaluationError(f"restrict_vocab must be a positive integer or None, "
                              f"got {restrict_vocab!r}")
    n = len(wv) if restrict_vocab is None else min(int(restrict_vocab), len(wv))
    if n == 0:
        raise EvaluationError("the vocabulary is empty")
    key = str.upper if case_insensitive else str
    rep: dict[str, int] = {}
    group = np.empty(n, np.int32)
    for i, w in enumerate(wv.words[:n]):
        group[i] = rep.setdefault(key(w), i)
    return n, rep, group, key


def _vocab_text(wv: WordVectors, n: int, case_insensitive: bool) -> str:
    case = ("words matched case-insensitively (uppercased; where several vocabulary words share "
            "an uppercase form, the earliest one's vector stands for all of them)"
            if case_insensitive else "words matched case-sensitively")
    return f"vocabulary restricted to the first {n} of {len(wv)} words (row order); {case}"


# --- word similarity -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WordPairsResult:
    """Correlations between gold scores and model scores, over the pairs in the vocabulary."""

    name: str
    spearman: float
    pearson: float
    spearman_pvalue: float
    pearson_pvalue: float
    n_pairs: int  # pairs used
    n_oov: int  # pairs skipped: a word outside the restricted vocabulary
    restrict_vocab: int  # words used (the first ones)
    case_insensitive: bool
    score: str  # "cosine" or "dot": the model score of a pair
    protocol: str

    @property
    def oov_ratio(self) -> float:
        """OOV pairs / valid pairs, gensim's denominator (invalid lines excluded)."""
        return self.n_oov / (self.n_pairs + self.n_oov)

    @property
    def oov_percent(self) -> float:
        """``oov_ratio`` in percent: the third value gensim's ``evaluate_word_pairs`` returns."""
        return 100.0 * self.oov_ratio


_pair_score = {name: jax.jit(batched(name)) for name in SCORES}
_SCORE_TEXT = {"cosine": "the cosine similarity", "dot": "the dot product (norms kept)"}


def _check_score(score: str) -> None:
    if score not in SCORES:
        raise EvaluationError(f"unknown score {score!r}; use one of {SCORES}")


@dataclasses.dataclass(frozen=True, eq=False)
class WordPairItems:
    """The scored pairs behind a :class:`WordPairsResult`, in file order (pairs with a word
    outside the vocabulary left out): what a bootstrap over the benchmark's pairs resamples."""

    name: str
    gold: np.ndarray  # [n] float64, the human ratings
    model: np.ndarray  # [n] float64, the model's score of each pair
    n_oov: int  # pairs left out
    restrict_vocab: int  # words used (the first ones)
    score: str


def word_pair_items(wv: WordVectors, pairs: WordPairs | PathLike,
                    restrict_vocab: int | None = 300000, case_insensitive: bool = True,
                    score: str = "cosine") -> WordPairItems:
    """Gold rating and ``score`` of every pair in the vocabulary (the items of
    :func:`word_pairs`, whose ρ is ``spearmanr(items.gold, items.model)``)."""
    _check_score(score)
    if not isinstance(pairs, WordPairs):
        pairs = load_word_pairs(pairs)
    n, rep, _, key = _restricted_vocab(wv, restrict_vocab, case_insensitive)
    rows_a, rows_b, gold = [], [], []
    for wa, wb, g in zip(pairs.word_a, pairs.word_b, pairs.gold, strict=True):
        ia, ib = rep.get(key(str(wa))), rep.get(key(str(wb)))
        if ia is not None and ib is not None:
            rows_a.append(ia)
            rows_b.append(ib)
            gold.append(g)
    if len(gold) < 2:
        raise EvaluationError(
            f"{pairs.name}: only {len(gold)} of {len(pairs)} pairs have both words in the first "
            f"{n} words of the vocabulary; a correlation is undefined with fewer than 2")
    Va, Vb = (jnp.asarray(wv.vectors[r].astype(np.float32)) for r in (rows_a, rows_b))
    model = np.asarray(_pair_score[score](Va, Vb), np.float64)
    return WordPairItems(pairs.name, np.asarray(gold, np.float64), model,
                         len(pairs) - len(gold), n, score)


def word_pairs(wv: WordVectors, pairs: WordPairs | PathLike, restrict_vocab: int | None = 300000,
               case_insensitive: bool = True, score: str = "cosine") -> WordPairsResult:
    """Spearman ρ and Pearson r between ``pairs``' gold scores and ``score`` ("cosine" or "dot")
    of the two words' vectors in ``wv``."""
    _check_score(score)
    if not isinstance(pairs, WordPairs):
        pairs = load_word_pairs(pairs)
    items = word_pair_items(wv, pairs, restrict_vocab, case_insensitive, score)
    gold, model, n_oov, n = items.gold, items.model, items.n_oov, items.restrict_vocab
    for what, x in (("gold scores", gold), (f"model scores ({score})", model)):
        if np.ptp(x) == 0:
            raise EvaluationError(f"{pairs.name}: the {what} of the {len(gold)} pairs in the "
                                  f"vocabulary are all equal; a correlation is undefined")
    # Spearman is the figure usually reported for these sets (Hill et al. 2015): the gold scores
    # are ratings, so only their order is meaningful. Pearson is kept because gensim reports it.
    rho, rho_p = stats.spearmanr(gold, model)
    r, r_p = stats.pearsonr(gold, model)
    skipped = f"; {len(pairs.skipped)} invalid line(s) skipped" if pairs.skipped else ""
    protocol = (
        f"word similarity on {pairs.name}: Spearman rho and Pearson r between the gold scores "
        f"and {_SCORE_TEXT[score]} of the two words' vectors (float32, JAX); "
        f"{_vocab_text(wv, n, case_insensitive)}; a pair with a word outside that vocabulary "
        f"is skipped and counted OOV ({n_oov} of {len(pairs)}){skipped}; "
        f"as gensim KeyedVectors.evaluate_word_pairs(restrict_vocab={n}, "
        f"case_insensitive={case_insensitive}, dummy4unknown=False)"
        + ("" if score == "cosine" else " with the dot product in place of its cosine"))
    return WordPairsResult(pairs.name, float(rho), float(r), float(rho_p), float(r_p),
                           len(gold), n_oov, n, case_insensitive, score, protocol)


# --- analogies -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class AnalogySectionResult:
    """One section's outcome; ``questions``/``predicted``/``is_correct`` cover answered ones."""

    name: str
    n_questions: int
    n_oov: int  # skipped: a word outside the restricted vocabulary
    questions: np.ndarray  # [answered, 4] str, as in the file
    predicted: np.ndarray  # [answered] str, the vocabulary word given ('' if none)
    is_correct: np.ndarray  # [answered] bool

    @property
    def answered(self) -> int:
        return len(self.is_correct)

    @property
    def correct(self) -> int:
        return int(self.is_correct.sum())

    @property
    def accuracy(self) -> float:
        """correct / answered; NaN when nothing was answered (gensim reports 0.0)."""
        return self.correct / self.answered if self.answered else float("nan")

    @property
    def oov_ratio(self) -> float:
        return self.n_oov / self.n_questions if self.n_questions else float("nan")


@dataclasses.dataclass(frozen=True, eq=False)
class AnalogiesResult:
    """Per-section and overall analogy accuracy with the protocol that produced it."""

    name: str
    sections: tuple[AnalogySectionResult, ...]
    total: AnalogySectionResult
    method: str
    restrict_vocab: int  # words used, both to look up questions and as candidates
    case_insensitive: bool
    score: str  # "cosine" (unit-normalised vectors) or "dot" (norms kept)
    protocol: str

    @property
    def accuracy(self) -> float:
        return self.total.accuracy

    def section(self, name: str) -> AnalogySectionResult:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(f"no section {name!r}; sections: {[s.name for s in self.sections]}")


_METHOD_TEXT = {
    ("3cosadd", "cosine"): "3CosAdd (Mikolov et al. 2013): argmax_x cos(x, b) - cos(x, a) + "
                           "cos(x, c), on unit-normalised vectors",
    ("3cosmul", "cosine"): "3CosMul (Levy & Goldberg 2014): argmax_x cos'(x, b) cos'(x, c) / "
                           "(cos'(x, a) + 1e-6), cos' = (cos + 1) / 2 (as gensim "
                           "most_similar_cosmul), on unit-normalised vectors",
    ("3cosadd", "dot"): "3CosAdd with the dot product: argmax_x x·(b - a + c), on the "
                        "unnormalised vectors (norms kept)",
}


def analogies(wv: WordVectors, sections: AnalogySet | Sequence[AnalogySection] | PathLike,
              restrict_vocab: int | None = 300000, case_insensitive: bool = True,
              method: str = "3cosadd", batch_size: int = DEFAULT_BATCH,
              score: str = "cosine") -> AnalogiesResult:
    """Accuracy on a:b :: c:? questions, per section and overall (correct / answered).

    Candidates are the first ``restrict_vocab`` words, unit-normalised (``score="cosine"``) or
    as they are (``score="dot"``: 3CosAdd is argmax_x x·(b − a + c)); a, b and c never
    answer. With ``case_insensitive``, as gensim: a, b, c, d are the representative (earliest)
    rows of their uppercase forms; a candidate whose uppercase form is a, b or c is passed over,
    but only within the best ``GENSIM_TOPN`` candidates (if all of them are, the last one is the
    answer, so the question is wrong); the answer is right when its uppercase form is d's, so a
    less frequent case variant of d counts. Case-sensitively this is the plain argmax.
    """
    if method not in ANALOGY_METHODS:
        raise EvaluationError(f"unknown analogy method {method!r}; use one of {ANALOGY_METHODS}")
    _check_score(score)
    if (method, score) not in _METHOD_TEXT:
        # 3CosMul shifts cosines from [-1, 1] to [0, 1] before multiplying and dividing; a dot
        # product is unbounded, so (dot + 1) / 2 can be negative and the ratio meaningless.
        raise EvaluationError(f"method={method!r} with score={score!r} is undefined: 3CosMul "
                              f"needs cosines in [-1, 1]; use score='cosine' (dot works with "
                              f"3cosadd only)")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EvaluationError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(sections, (str, os.PathLike)):
        sections = load_analogies(sections)
    name = sections.name if isinstance(sections, AnalogySet) else "analogies"
    sections = tuple(sections)
    n, rep, group, key = _restricted_vocab(wv, restrict_vocab, case_insensitive)

    # Look every question up; keep the answerable ones, in order, for one batched pass. Each
    # distinct word is looked up once (a file of 19,544 questions has ~900): per word, not per
    # question, as this runs for every vector set a study evaluates.
    words_of = [np.asarray(s.questions, dtype=str).reshape(-1, 4) for s in sections]
    distinct, where = np.unique(np.concatenate(words_of) if words_of else np.empty((0, 4), str),
                                return_inverse=True)
    found = np.array([rep.get(key(str(w)), -1) for w in distinct], np.int64)
    every = found[where.reshape(-1, 4)]  # [questions, 4] rows, -1: out of the vocabulary
    answerable = (every >= 0).all(axis=1)
    bounds = np.cumsum([0, *map(len, words_of)])  # each section's questions, in order
    spans = [np.flatnonzero(answerable[a:b]) for a, b in itertools.pairwise(bounds)]
    n_oov = [len(s) - len(keep) for s, keep in zip(sections, spans, strict=True)]
    if not answerable.any():
        raise EvaluationError(
            f"{name}: none of the {sum(len(s) for s in sections)} questions has all four words in "
            f"the first {n} words of the vocabulary; accuracy is undefined")
    rows = every[answerable].astype(np.int32)
    cand = wv.restrict(n)
    X = cand.normalized() if score == "cosine" else cand.vectors
    pred = _predict(X.astype(np.float32), group, rows[:, :3], method=method,
                    batch_size=int(batch_size))
    correct = (pred >= 0) & (group[np.maximum(pred, 0)] == rows[:, 3])
    words = np.array(wv.words[:n] + ("",), dtype=str)  # pred -1 (no candidate) reads ''

    results, start = [], 0
    for s, keep, oov in zip(sections, spans, n_oov, strict=True):
        end = start + len(keep)
        results.append(AnalogySectionResult(
            s.name, len(s), oov, s.questions[keep].reshape(-1, 4), words[pred[start:end]],
            correct[start:end]))
        start = end
    total = AnalogySectionResult(
        "total", sum(len(s) for s in sections), sum(n_oov),
        np.concatenate([r.questions for r in results]), words[pred], correct)
    protocol = (
        f"word analogies on {name} ({len(sections)} sections): {_METHOD_TEXT[method, score]} "
        f"(float32, JAX), a, b and c excluded as answers; "
        f"{_vocab_text(wv, n, case_insensitive)}, which are also the only candidates"
        + (f"; a candidate whose uppercase form is a, b or c is passed over within the top "
           f"{GENSIM_TOPN}" if case_insensitive else "")
        + f"; a question with a word outside that vocabulary is skipped and counted OOV "
        f"({total.n_oov} of {total.n_questions}); accuracy = correct / answered "
        f"({total.correct} / {total.answered}); as gensim KeyedVectors.evaluate_word_analogies"
        f"(restrict_vocab={n}, case_insensitive={case_insensitive}, dummy4unknown=False)"
        + ("" if method == "3cosadd" else " with 3CosMul in place of its 3CosAdd")
        + ("" if score == "cosine" else " with the dot product in place of its cosine"))
    return AnalogiesResult(name, tuple(results), total, method, n, case_insensitive, score,
                           protocol)


def _predict(X: np.ndarray, group: np.ndarray, abc: np.ndarray, *, method: str,
             batch_size: int) -> np.ndarray:
    """Answer rows [q] (-1: no candidate) for questions ``abc`` [q, 3], in fixed-size batches.

    ``X`` [V, d]: the candidates' vectors, unit-normalised for cosine, raw for dot.
    """
    q = len(abc)
    # Pad to whole batches (with question 0, discarded) so every step has one shape: one
    # compilation per (vocabulary size, batch size, method), however many questions.
    padded = np.concatenate([abc, np.repeat(abc[:1], -q % batch_size, axis=0)])
    X, group = jnp.asarray(X), jnp.asarray(group)
    k = min(GENSIM_TOPN, X.shape[0])
    out = [_predict_batch(X, group, jnp.asarray(padded[i:i + batch_size]), method=method, k=k)
           for i in range(0, len(padded), batch_size)]
    return np.asarray(jnp.concatenate(out))[:q]


@functools.partial(jax.jit, static_argnames=("method", "k"))
def _predict_batch(X, group, abc, *, method, k):
    # On raw X, analogy_scores' 3CosAdd (b - a + c) @ X.T is exactly the dot form.
    scores = analogy_scores(X, abc, method=method)  # a, b, c are -inf
    top_s, top_i = jax.lax.top_k(scores, k)
    # gensim's loop over most_similar(topn=5): the first candidate whose (uppercase) key is not
    # a question word; failing that, the last one it looked at. -inf entries are a, b or c
    # themselves, which gensim never returns (it only happens when the vocabulary is tiny).
    valid = jnp.isfinite(top_s)
    ok = valid & ~(group[top_i][:, :, None] == abc[:, None, :]).any(axis=-1)
    pick = jnp.where(ok.any(axis=1), jnp.argmax(ok, axis=1), valid.sum(axis=1) - 1)
    pred = jnp.take_along_axis(top_i, jnp.maximum(pick, 0)[:, None], axis=1)[:, 0]
    return jnp.where(valid.any(axis=1), pred, -1)
