"""One vector per word: what training exports and what search, evaluation and io use."""

from __future__ import annotations

import dataclasses
import difflib

import numpy as np


class VocabularyError(KeyError):
    """A word is not in the vocabulary. ``str()`` names the word (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class VectorError(ValueError):
    """Vectors that cannot be used: wrong shape, NaN or inf, words and rows that do not match."""


@dataclasses.dataclass(frozen=True, eq=False)
class WordVectors:
    """``words`` (n,) in row order (most frequent first, by convention) and ``vectors`` [n, d].

    ``counts`` (n,) is optional (corpus frequencies; written by nothing, kept for analyses).
    Vectors are kept as a host numpy array: they are data, and device placement is the job of
    whoever computes on them (search, evaluate).
    """

    words: tuple[str, ...]
    vectors: np.ndarray
    counts: np.ndarray | None = None

    def __post_init__(self):
        words = tuple(self.words)
        vectors = np.asarray(self.vectors)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "vectors", vectors)
        if vectors.ndim != 2:
            raise VectorError(f"vectors must have shape [n_words, dim], got {vectors.shape}")
        if vectors.shape[0] != len(words):
            raise VectorError(f"{len(words)} words but {vectors.shape[0]} vector rows")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise VectorError(f"vectors must be floating point, got dtype {vectors.dtype}")
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise VectorError(f"{int(bad.sum())} vector(s) contain NaN or inf, the first for word "
                              f"{words[first]!r} (row {first})")
        index = {}
        for i, w in enumerate(words):
            if w in index:
                raise VectorError(f"word {w!r} appears twice (rows {index[w]} and {i})")
            index[w] = i
        object.__setattr__(self, "_index", index)
        if self.counts is not None:
            counts = np.asarray(self.counts)
            if counts.shape != (len(words),):
                raise VectorError(f"counts must have shape ({len(words)},), got {counts.shape}")
            object.__setattr__(self, "counts", counts)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def index(self, word: str) -> int:
        """Row of ``word``; a :class:`VocabularyError` naming it (and a close match) if absent."""
        try:
            return self._index[word]
        except KeyError:
            close = difflib.get_close_matches(word, self.words[:50_000], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise VocabularyError(
                f"word {word!r} is not in the vocabulary ({len(self)} words){hint}") from None

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.index(word)]

    def normalized(self, eps: float = 1e-8) -> np.ndarray:
        """[n, d] rows scaled to unit length (zero rows stay zero)."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return self.vectors / np.maximum(norms, eps)

    def restrict(self, n: int) -> WordVectors:
        """The first ``n`` words (the most frequent, by convention)."""
        counts = None if self.counts is None else self.counts[:n]
        return WordVectors(self.words[:n], self.vectors[:n], counts)
