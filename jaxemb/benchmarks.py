"""One set of vectors on all three standard benchmarks at once (the SGNS study's evaluator):
WS353 and SimLex-999 Spearman ρ and Google-analogy accuracy, with the benchmark files read and
their words looked up once per vocabulary, by :mod:`jaxemb.evaluate`'s gensim protocol."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxemb.corpus import gensim_datapath
from jaxemb.evaluate import (
    EvaluationError,
    _check_score,
    analogies,
    load_analogies,
    load_word_pairs,
    word_pairs,
)
from jaxemb.wordvectors import WordVectors


@dataclasses.dataclass(frozen=True, eq=False)
class Benchmarks:
    """WS353, SimLex-999 and the Google analogies for one vocabulary. The pairs' rows are looked
    up once, case-insensitively as gensim (an uppercase form stands for its earliest word), for
    scores computed outside this module (e.g. in·out); :func:`evaluate_vectors` scores the rest."""

    words: tuple[str, ...]  # the vocabulary, in row order
    data: dict  # {"ws353": WordPairs, "simlex": WordPairs, "analogies": AnalogySet}
    pairs: dict  # name -> (rows a [n], rows b [n], gold [n], pairs in the file)
    answerable: int  # analogy questions with all four words in the vocabulary
    n_questions: int  # questions in the file


def load_benchmarks() -> dict:
    """{"ws353": WordPairs, "simlex": WordPairs, "analogies": AnalogySet}: the files shipped with
    gensim's test data."""
    return {"ws353": load_word_pairs(gensim_datapath("wordsim353.tsv")),
            "simlex": load_word_pairs(gensim_datapath("simlex999.txt")),
            "analogies": load_analogies(gensim_datapath("questions-words.txt"))}


def prepare_benchmarks(words: Sequence[str], data: dict | None = None) -> Benchmarks:
    """``data``: {"ws353": WordPairs, "simlex": WordPairs, "analogies": AnalogySet} (default:
    :func:`load_benchmarks`)."""
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

    :func:`word_pairs` and :func:`analogies` with gensim's protocol over the whole vocabulary
    (``restrict_vocab=None``, case-insensitive). A figure that is undefined on a small vocabulary
    (ρ over fewer than 3 pairs or of constant scores, accuracy with nothing answerable) is NaN,
    so a quick run still reports.
    """
    _check_score(score)  # before the NaN fallback below could hide a typo
    wv = WordVectors(bench.words, vectors)
    out = {}
    for name in ("ws353", "simlex") if pairs else ():
        ia, _, _, n = bench.pairs[name]
        rho = float("nan")
        # Two pairs give ρ = ±1 whatever the vectors; the remaining error here is gold or model
        # scores that are all equal, where ρ is undefined too.
        if ia.size >= 3:
            with contextlib.suppress(EvaluationError):
                rho = word_pairs(wv, bench.data[name], restrict_vocab=None, score=score).spearman
        out |= {name: rho, f"{name}_pairs": ia.size, f"{name}_oov": n - ia.size}
    for m in methods:
        acc, answered, oov = float("nan"), 0, bench.n_questions
        if bench.answerable:
            r = analogies(wv, bench.data["analogies"], restrict_vocab=None, method=m, score=score)
            acc, answered, oov = r.accuracy, r.total.answered, r.total.n_oov
        out |= {m: acc, f"{m}_answered": answered, f"{m}_oov": oov}
    return out
