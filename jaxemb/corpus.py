"""Text → tokens → vocabulary (counts) → int32 ids.

Sources here: a plain text file (one document per line) and the real Wikipedia sample shipped in
gensim's wheel (parsed with ``gensim.corpora.WikiCorpus``; gensim is the optional ``peer`` extra).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from jaxemb.wordvectors import VocabularyError

WIKI_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_ALPHA = re.compile(r"[^\W\d_]+")  # runs of letters (any script): the default tokens


class CorpusError(ValueError):
    """A corpus that cannot be used: missing, not text, empty."""


def tokenize(text: str, lowercase: bool = True, pattern: re.Pattern | str = _ALPHA) -> list[str]:
    """Alphabetic tokens (default), lowercased (default)."""
    if lowercase:
        text = text.lower()
    return re.findall(pattern, text) if isinstance(pattern, str) else pattern.findall(text)


def read_text_file(path: str | Path, lowercase: bool = True) -> list[list[str]]:
    """One document per line of a UTF-8 text file, tokenised; blank lines dropped."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise CorpusError(f"corpus file {str(path)!r} is not text (it contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file {str(path)!r} is not UTF-8 text: byte {e.start} "
                          f"cannot be decoded") from None
    docs = [tokenize(line, lowercase) for line in text.splitlines()]
    docs = [d for d in docs if d]
    if not docs:
        raise CorpusError(f"corpus file {str(path)!r} holds no tokens")
    return docs


def gensim_datapath(name: str) -> str:
    """Path of a file shipped in gensim's wheel (``gensim.test.utils.datapath``)."""
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise CorpusError(f"{name} ships with gensim, which is not installed; install the peer "
                          "extra: pip install -e '.[peer]'") from None
    path = datapath(name)
    if not Path(path).exists():
        raise CorpusError(f"{name} not found in gensim's test data at {path}")
    return path


def wiki_sample() -> list[list[str]]:
    """The Wikipedia sample in gensim's wheel: 106 articles, about 453k tokens.

    Parsed with gensim's wiki parser (markup stripped, lowercased, tokens of 2–15 characters,
    articles under 50 tokens and non-article namespaces dropped), exactly as
    ``WikiCorpus(...).get_texts()`` but in this process: WikiCorpus forks a worker pool, and
    forking a process that runs JAX's threads can deadlock. Parsed once per process (3.4 s);
    every call returns new lists, so a caller may change them freely.
    """
    return [list(doc) for doc in _parse_wiki_sample()]


@functools.cache
def _parse_wiki_sample() -> tuple[tuple[str, ...], ...]:
    import bz2

    from gensim.corpora import wikicorpus as wc

    docs = []
    words: dict[str, str] = {}  # one string object per distinct word: 5 MB cached, not 30
    with bz2.BZ2File(gensim_datapath(WIKI_SAMPLE)) as f:
        for title, text, _ in wc.extract_pages(f, ("0",)):
            tokens = wc.process_article((text, True, title), wc.tokenize, wc.TOKEN_MIN_LEN,
                                        wc.TOKEN_MAX_LEN, True)[0]
            if len(tokens) >= wc.ARTICLE_MIN_WORDS and not any(
                    title.startswith(ns + ":") for ns in wc.IGNORED_NAMESPACES):
                docs.append(tuple(words.setdefault(t, t) for t in tokens))
    return tuple(docs)


@dataclasses.dataclass(frozen=True, eq=False)
class Vocabulary:
    """Words by descending count (ties: first seen first) and their counts."""

    words: tuple[str, ...]
    counts: np.ndarray  # int64 [V]

    def __post_init__(self):
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def id(self, word: str) -> int:
        try:
            return self._index[word]
        except KeyError:
            raise VocabularyError(f"word {word!r} is not in the vocabulary "
                                  f"({len(self)} words)") from None

    def encode(self, docs: Iterable[Sequence[str]]) -> list[np.ndarray]:
        """int32 ids per document; out-of-vocabulary tokens dropped (as word2vec does)."""
        index = self._index
        return [np.fromiter((index[t] for t in d if t in index), np.int32) for d in docs]


def build_vocabulary(docs: Iterable[Sequence[str]], min_count: int = 5,
                     max_vocab: int | None = None) -> Vocabulary:
    """Count tokens; keep those seen at least ``min_count`` times, at most ``max_vocab`` words."""
    if min_count < 1:
        raise CorpusError(f"min_count must be >= 1, got {min_count}")
    counter: Counter[str] = Counter()
    for d in docs:
        counter.update(d)
    if not counter:
        raise CorpusError("the corpus is empty: no tokens to count")
    # Counter.most_common sorts by count, stable in insertion order for ties.
    kept = [(w, c) for w, c in counter.most_common() if c >= min_count]
    if max_vocab is not None:
        kept = kept[:max_vocab]
    if not kept:
        raise CorpusError(f"the vocabulary is empty: no word occurs min_count={min_count} times "
                          f"(the most frequent, {counter.most_common(1)[0][0]!r}, occurs "
                          f"{counter.most_common(1)[0][1]} times)")
    return Vocabulary(tuple(w for w, _ in kept), np.array([c for _, c in kept], np.int64))
