"""Synthetic and text tasks for the attention study: MQAR, negation scope, successor lookup,
character LM.

All generators are pure functions of a seed (an int, a ``numpy.random.Generator`` or a JAX key)
and return int32 arrays with a boolean ``loss_mask`` marking the positions that are scored; the
model reads ``inputs[:, :t+1]`` (causal) and is scored on ``targets[:, t]`` where the mask holds.

- :func:`mqar` — multi-query associative recall (Arora et al. 2023, "Zoology", their
  ``multiquery_ar`` generator): key–value pairs, then the keys again in random order; the answer
  at a queried key is the value bound to it earlier. Keys and values come from disjoint halves of
  the vocabulary, so the token to retrieve is never similar to the query by identity.
- :func:`negation_scope` — a relevance task: the label of a sentiment word flips when a negator
  ("not", "don't") precedes it within ``scope`` tokens. Negators, sentiment words and fillers come
  from disjoint vocabularies, and the position of the negator each word must attend to is
  returned, so a study can measure how much attention reaches it. Position embeddings can solve
  it (the negator is near), so it does not separate scores by itself.
- :func:`negation_distance` — negation that position cannot solve: one scored sentiment word at
  the end, a negator (or none) at a uniformly random earlier position among distractors
  (fillers and unscored sentiment words).
- :func:`successor_lookup` — the directed relevance task: words linked by a fixed one-way relation
  (a random cycle), shuffled; each word must point at its successor. No position shortcut, and a
  symmetric score of the words that is largest at the token itself (raw similarity
  ``x_i · x_j`` on word embeddings) cannot rank every successor first — the direct test of "why
  does 'don't' attend to 'like'?".
- :func:`char_data` — characters of a text (default: the Wikipedia sample in gensim's wheel) over a
  fixed 29-symbol alphabet, split by position (held-out tail), with windows drawn by a key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import numpy as np


class TaskError(ValueError):
    """Task arguments that cannot produce the requested data."""


def _rng(seed_or_key) -> np.random.Generator:
    """A numpy Generator from an int seed, a Generator, or a JAX PRNG key (typed or raw)."""
    if isinstance(seed_or_key, np.random.Generator):
        return seed_or_key
    if isinstance(seed_or_key, int | np.integer) and not isinstance(seed_or_key, bool):
        if seed_or_key < 0:
            raise TaskError(f"seed must be >= 0, got {seed_or_key}")
        return np.random.default_rng(int(seed_or_key))
    if isinstance(seed_or_key, jax.Array):
        data = (jax.random.key_data(seed_or_key)
                if jax.dtypes.issubdtype(seed_or_key.dtype, jax.dtypes.prng_key) else seed_or_key)
        if data.dtype != np.uint32 or data.ndim != 1:
            raise TaskError(f"a JAX key must be a single PRNG key, got an array of shape "
                            f"{seed_or_key.shape} and dtype {seed_or_key.dtype}")
        return np.random.default_rng(np.asarray(data).tolist())
    raise TaskError(f"seed_or_key must be an int seed, a numpy Generator or a JAX key, got "
                    f"{type(seed_or_key).__name__}")


def _positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise TaskError(f"{name} must be a positive integer, got {v!r}")


def _sample_without_replacement(rng: np.random.Generator, n: int, choices: int, k: int,
                                log_p: np.ndarray | None = None) -> np.ndarray:
    """[n, k] distinct indices in [0, choices) per row, drawn with probabilities ∝ exp(log_p)
    one after another (Gumbel top-k: the same law as numpy's choice(replace=False, p=...))."""
    scores = rng.gumbel(size=(n, choices))
    if log_p is not None:
        scores = scores + log_p
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


# --- MQAR ----------------------------------------------------------------------------------------

def mqar(seed_or_key, n: int, seq_len: int, num_kv_pairs: int, vocab_size: int,
         power_a: float = 0.01, random_non_queries: bool = True
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-query associative recall, as Zoology's ``multiquery_ar`` (Arora et al. 2023).

    The sequence opens with ``num_kv_pairs`` pairs ``k1 v1 k2 v2 ...`` (distinct keys from
    ``[1, vocab_size // 2)``, distinct values from ``[vocab_size // 2, vocab_size)``). Each key is
    then queried once, at an even offset ``2g`` into the rest of the sequence, the gaps ``g``
    drawn without replacement with probability ∝ ``g^(power_a - 1)`` (Zoology's power law: most
    queries come early). Every other position holds a random token of the whole vocabulary, or
    with ``random_non_queries=False`` the token 0, never a key (Zoology's two options; random
    fillers collide with keys often when the vocabulary is small).

    Returns ``inputs [n, T]``, ``targets [n, T]`` (the value bound to the key at each query
    position, 0 elsewhere) and ``loss_mask [n, T]`` (True exactly at the query positions).
    """
    _positive(n=n, seq_len=seq_len, num_kv_pairs=num_kv_pairs, vocab_size=vocab_size)
    if 4 * num_kv_pairs > seq_len:
        raise TaskError(f"seq_len={seq_len} has no room for {num_kv_pairs} key-value pairs and "
                        f"their queries: need seq_len >= 4 * num_kv_pairs = {4 * num_kv_pairs}")
    if vocab_size // 2 - 1 < num_kv_pairs:
        raise TaskError(f"vocab_size={vocab_size} is too small for {num_kv_pairs} distinct keys "
                        f"(keys come from [1, vocab_size // 2)); need vocab_size >= "
                        f"{2 * (num_kv_pairs + 1)}")
    if not 0 < power_a <= 1:
        raise TaskError(f"power_a must be in (0, 1], got {power_a}")
    rng = _rng(seed_or_key)
    k, half = num_kv_pairs, vocab_size // 2
    keys = 1 + _sample_without_replacement(rng, n, half - 1, k)
    values = half + _sample_without_replacement(rng, n, vocab_size - half, k)
    space = (seq_len - 2 * k) // 2
    g = np.arange(1, space + 1, dtype=np.float64)
    log_p = np.log(power_a) + (power_a - 1) * np.log(g)
    gaps = _sample_without_replacement(rng, n, space, k, log_p)
    inputs = (rng.integers(0, vocab_size, size=(n, seq_len)) if random_non_queries
              else np.zeros((n, seq_len), np.int64))
    inputs[:, 0:2 * k:2] = keys
    inputs[:, 1:2 * k:2] = values
    rows = np.arange(n)[:, None]
    query_pos = 2 * k + 2 * gaps
    inputs[rows, query_pos] = keys
    targets = np.zeros((n, seq_len), np.int64)
    targets[rows, query_pos] = values
    loss_mask = np.zeros((n, seq_len), bool)
    loss_mask[rows, query_pos] = True
    return inputs.astype(np.int32), targets.astype(np.int32), loss_mask


# --- negation scope ------------------------------------------------------------------------------

class NegationVocabulary(NamedTuple):
    """Disjoint id ranges: fillers, negators, positive and negative sentiment words."""

    fillers: range
    negators: range
    positive: range
    negative: range


def negation_vocabulary(vocab_size: int, num_negators: int = 4,
                        num_sentiment: int = 16) -> NegationVocabulary:
    """Fillers first, then negators, then ``num_sentiment // 2`` positive and as many negative
    words at the top of the vocabulary."""
    _positive(vocab_size=vocab_size, num_negators=num_negators, num_sentiment=num_sentiment)
    if num_sentiment % 2:
        raise TaskError(f"num_sentiment must be even (half positive, half negative), "
                        f"got {num_sentiment}")
    fillers = vocab_size - num_negators - num_sentiment
    if fillers < 1:
        raise TaskError(f"vocab_size={vocab_size} leaves no filler words after {num_negators} "
                        f"negators and {num_sentiment} sentiment words; need vocab_size >= "
                        f"{num_negators + num_sentiment + 1}")
    s = fillers + num_negators
    h = num_sentiment // 2
    return NegationVocabulary(range(0, fillers), range(fillers, s), range(s, s + h),
                              range(s + h, s + 2 * h))


class NegationBatch(NamedTuple):
    """inputs, targets (1 = positive, 0 = negative at sentiment words; 0 elsewhere), loss_mask
    (True at sentiment words), attend (position of the negator that scopes each word, -1 where
    none), negated (True at negated sentiment words); all [n, T]."""

    inputs: np.ndarray
    targets: np.ndarray
    loss_mask: np.ndarray
    attend: np.ndarray
    negated: np.ndarray


def negation_scope(seed_or_key, n: int, seq_len: int, vocab_size: int = 64, *,
                   num_negators: int = 4, num_sentiment: int = 16, scope: int | None = 3,
                   p_negator: float = 0.25, p_sentiment: float = 0.3) -> NegationBatch:
    """Sentences of fillers, negators and sentiment words; a sentiment word's label is its
    polarity, flipped when a negator stands within the ``scope`` tokens before it (``scope=None``:
    anywhere before it). Each position is a negator with probability ``p_negator``, a sentiment
    word with ``p_sentiment``, else a filler; a negator within ``scope`` tokens after another is
    turned into a filler (``scope=None``: at most one negator per sequence), so at most one
    negator scopes any word and ``attend`` names it unambiguously.
    """
    _positive(n=n, seq_len=seq_len)
    voc = negation_vocabulary(vocab_size, num_negators, num_sentiment)
    if scope is not None:
        _positive(scope=scope)
    for name, p in (("p_negator", p_negator), ("p_sentiment", p_sentiment)):
        if not 0 < p < 1:
            raise TaskError(f"{name} must be in (0, 1), got {p}")
    if p_negator + p_sentiment >= 1:
        raise TaskError(f"p_negator + p_sentiment must be < 1 (fillers need room), got "
                        f"{p_negator + p_sentiment}")
    rng = _rng(seed_or_key)
    u = rng.random((n, seq_len))
    is_neg = u < p_negator
    is_sent = (u >= p_negator) & (u < p_negator + p_sentiment)
    # Drop negators in the scope of an earlier one; track the last negator per row.
    window = seq_len if scope is None else scope
    last = np.full(n, -10 * seq_len - 1)
    attend = np.full((n, seq_len), -1, np.int64)
    for t in range(seq_len):
        in_scope = t - last <= window
        attend[:, t] = np.where(in_scope, last, -1)
        is_neg[:, t] &= ~in_scope
        last = np.where(is_neg[:, t], t, last)
    positive = rng.random((n, seq_len)) < 0.5
    tokens = np.where(
        is_neg, rng.integers(voc.negators.start, voc.negators.stop, (n, seq_len)),
        np.where(is_sent,
                 np.where(positive,
                          rng.integers(voc.positive.start, voc.positive.stop, (n, seq_len)),
                          rng.integers(voc.negative.start, voc.negative.stop, (n, seq_len))),
                 rng.integers(voc.fillers.start, voc.fillers.stop, (n, seq_len))))
    negated = is_sent & (attend >= 0)
    attend = np.where(negated, attend, -1)
    targets = np.where(is_sent, positive ^ negated, 0)
    return NegationBatch(tokens.astype(np.int32), targets.astype(np.int32), is_sent,
                         attend.astype(np.int32), negated)


def negation_distance(seed_or_key, n: int, seq_len: int, vocab_size: int = 64, *,
                      num_negators: int = 4, num_sentiment: int = 16, p_negated: float = 0.5,
                      p_distractor: float = 0.3) -> NegationBatch:
    """The negation task that position cannot solve: one scored sentiment word, at the last
    position, is negated when a negator stands *anywhere* before it.

    With probability ``p_negated`` one negator is placed at a uniformly random earlier position
    (so its distance says nothing); every other earlier position holds, with probability
    ``p_distractor``, an unscored sentiment word — a distractor that resembles the scored word
    more than the negator does — and otherwise a filler. The label is the word's polarity,
    flipped if negated. A context-blind model scores ``1 - p_negated`` (0 on negated words);
    ``attend`` names the negator at the scored position when there is one (-1 elsewhere).
    """
    _positive(n=n, seq_len=seq_len)
    if seq_len < 2:
        raise TaskError(f"seq_len must be >= 2 (a negator before the scored word), got {seq_len}")
    voc = negation_vocabulary(vocab_size, num_negators, num_sentiment)
    for name, p in (("p_negated", p_negated), ("p_distractor", p_distractor)):
        if not 0 < p < 1:
            raise TaskError(f"{name} must be in (0, 1), got {p}")
    rng = _rng(seed_or_key)
    T, rows = seq_len, np.arange(n)
    sentiment = np.concatenate([np.asarray(voc.positive), np.asarray(voc.negative)])
    is_distractor = rng.random((n, T)) < p_distractor
    tokens = np.where(is_distractor, rng.choice(sentiment, (n, T)),
                      rng.integers(voc.fillers.start, voc.fillers.stop, (n, T)))
    word = rng.choice(sentiment, n)
    tokens[:, -1] = word
    negated_row = rng.random(n) < p_negated
    where = rng.integers(0, T - 1, n)
    tokens[rows[negated_row], where[negated_row]] = rng.integers(
        voc.negators.start, voc.negators.stop, int(negated_row.sum()))
    loss_mask = np.zeros((n, T), bool)
    loss_mask[:, -1] = True
    negated = loss_mask & negated_row[:, None]
    attend = np.full((n, T), -1, np.int64)
    attend[negated_row, -1] = where[negated_row]
    targets = np.zeros((n, T), np.int64)
    targets[:, -1] = (word < voc.negative.start) ^ negated_row  # positive words sit below
    return NegationBatch(tokens.astype(np.int32), targets.astype(np.int32), loss_mask,
                         attend.astype(np.int32), negated)


# --- successor lookup: directed relevance ---------------------------------------------------------

def successor_relation(num_words: int, relation_seed: int = 0) -> np.ndarray:
    """``successor [num_words]``: a fixed random cycle through all words (``successor[w] != w``,
    and ``successor[successor[w]] != w`` once ``num_words >= 3``): the one-way "grammar" of
    :func:`successor_lookup`."""
    _positive(num_words=num_words)
    if num_words < 3:
        raise TaskError(f"num_words must be >= 3 for a one-way relation, got {num_words}")
    order = np.random.default_rng(relation_seed).permutation(num_words)
    successor = np.empty(num_words, np.int64)
    successor[order] = np.roll(order, -1)
    return successor


class LookupBatch(NamedTuple):
    """inputs (word ids), targets (the successor's position; 0 where unscored), loss_mask (True
    where the successor stands earlier), attend (the successor's position, -1 where unscored);
    all [n, T]."""

    inputs: np.ndarray
    targets: np.ndarray
    loss_mask: np.ndarray
    attend: np.ndarray


def successor_lookup(seed_or_key, n: int, seq_len: int, num_words: int = 32, *,
                     relation_seed: int = 0) -> LookupBatch:
    """The directed relevance task: each word must point at a *different* word, its successor.

    Words ``0..num_words-1`` are linked by a fixed one-way relation, :func:`successor_relation`
    (a random cycle: "don't" needs the verb after it; the verb does not need "don't"). A sequence
    holds ``seq_len`` consecutive words of the cycle, ``a, s(a), s(s(a)), ...``, at random
    positions. At every position whose word's successor stands earlier (the model is causal)
    the target is that position: the answer is *where* the related word is, which only the
    attention weights can carry (a value mixes word and position embeddings additively, so an
    even mixture of two words does not say which position went with which word). Guessing
    among the earlier positions scores :func:`successor_lookup_chance`.

    Why it separates scores: a symmetric score of two words, ``s(v, w) = s(w, v)``, cannot rank
    every word's successor above its predecessor — around the cycle
    ``Σ_w s(w, succ(w)) = Σ_w s(pred(w), w)`` — and raw similarity ``x_v · x_w`` is moreover
    largest at the word itself (Cauchy–Schwarz, equal norms); query/key projections make the
    score a bilinear form ``x_v W_q W_kᵀ x_w``, which need not be symmetric. (Deeper layers see
    context-dependent vectors, so the argument is exact for one layer; the study measures
    two.)
    """
    _positive(n=n, seq_len=seq_len)
    successor = successor_relation(num_words, relation_seed)
    if seq_len > num_words:
        raise TaskError(f"seq_len={seq_len} exceeds num_words={num_words}: a sequence holds "
                        f"distinct words of the cycle")
    rng = _rng(seed_or_key)
    # Walk the cycle from a random start; place the walk at random positions.
    walk = np.empty((n, seq_len), np.int64)
    walk[:, 0] = rng.integers(0, num_words, n)
    for t in range(1, seq_len):
        walk[:, t] = successor[walk[:, t - 1]]
    position = np.argsort(rng.random((n, seq_len)), axis=1)  # position of the t-th walk word
    rows = np.arange(n)[:, None]
    words = np.empty_like(walk)
    words[rows, position] = walk
    # The successor of walk[t] is walk[t+1]; the last word's successor is not in the sequence.
    attend = np.full((n, seq_len), -1, np.int64)
    attend[rows, position[:, :-1]] = position[:, 1:]
    loss_mask = (attend >= 0) & (attend < np.arange(seq_len)[None, :])
    attend = np.where(loss_mask, attend, -1)
    return LookupBatch(words.astype(np.int32), np.maximum(attend, 0).astype(np.int32),
                       loss_mask, attend.astype(np.int32))


def successor_lookup_chance(loss_mask: np.ndarray) -> float:
    """Accuracy of a uniform guess among the earlier positions: mean of 1/t over the scored
    positions t (position t has t earlier positions, and the successor is one of them)."""
    t = np.nonzero(np.asarray(loss_mask))[-1]
    return float(np.mean(1.0 / t)) if t.size else float("nan")


# --- character language model --------------------------------------------------------------------

CHARS = "\n abcdefghijklmnopqrstuvwxyz?"
"""The fixed alphabet: newline (between documents), space, a–z, and ``?`` for any other
character (accented letters are under 0.01% of the Wikipedia sample)."""
_UNKNOWN = len(CHARS) - 1
_LOOKUP = np.full(0x110000, _UNKNOWN, np.int32)
_LOOKUP[[ord(c) for c in CHARS]] = np.arange(len(CHARS), dtype=np.int32)


def encode_chars(text: str) -> np.ndarray:
    """int32 ids over :data:`CHARS`; characters outside it map to ``?``."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return _LOOKUP[codes]


def decode_chars(ids) -> str:
    """The text of a 1-D array of ids (inverse of :func:`encode_chars` on text over CHARS)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise TaskError(f"decode_chars expects a 1-D array of ids, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(CHARS)):
        raise TaskError(f"character ids must be in [0, {len(CHARS)}), got values in "
                        f"[{ids.min()}, {ids.max()}]")
    return "".join(CHARS[i] for i in ids.tolist())


@dataclasses.dataclass(frozen=True, eq=False)
class CharData:
    """A character stream split by position: ``train`` is the head, ``validation`` the tail."""

    train: np.ndarray       # int32 [N_train]
    validation: np.ndarray  # int32 [N_val]
    vocab_size: int = len(CHARS)

    def windows(self, seed_or_key, n: int, seq_len: int, split: str = "train"
                ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random windows: inputs ``x[s:s+T]`` and next-character targets
        ``x[s+1:s+T+1]``, both [n, T] int32, starts drawn uniformly within ``split``."""
        ids = self._split(split)
        _positive(n=n, seq_len=seq_len)
        if seq_len + 1 > ids.size:
            raise TaskError(f"seq_len={seq_len} does not fit the {split} split "
                            f"({ids.size} characters)")
        starts = _rng(seed_or_key).integers(0, ids.size - seq_len, size=n)
        return self._gather(ids, starts, seq_len)

    def tiles(self, n: int, seq_len: int, split: str = "validation"
              ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` evenly spaced windows (deterministic: the evaluation set), [n, T] int32."""
        ids = self._split(split)
        _positive(n=n, seq_len=seq_len)
        if seq_len + 1 > ids.size:
            raise TaskError(f"seq_len={seq_len} does not fit the {split} split "
                            f"({ids.size} characters)")
        starts = np.linspace(0, ids.size - seq_len - 1, n).astype(np.int64)
        return self._gather(ids, starts, seq_len)

    def _split(self, split: str) -> np.ndarray:
        if split not in ("train", "validation"):
            raise TaskError(f"split must be 'train' or 'validation', got {split!r}")
        return self.train if split == "train" else self.validation

    @staticmethod
    def _gather(ids, starts, seq_len):
        idx = starts[:, None] + np.arange(seq_len + 1)
        w = ids[idx]
        return w[:, :-1], w[:, 1:]


def char_data(text: str | None = None, validation_fraction: float = 0.1,
              max_chars: int | None = None) -> CharData:
    """Characters of ``text`` (default: gensim's Wikipedia sample, tokens joined by spaces and
    articles by newlines), the first ``max_chars`` if given, the last ``validation_fraction``
    held out."""
    if not 0 < validation_fraction < 1:
        raise TaskError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if max_chars is not None:
        _positive(max_chars=max_chars)
    if text is None:
        from jaxemb import corpus

        text = "\n".join(" ".join(doc) for doc in corpus.wiki_sample())
    ids = encode_chars(text[:max_chars])
    split = ids.size - math.ceil(validation_fraction * ids.size)
    if split < 2 or ids.size - split < 2:
        raise TaskError(f"a text of {ids.size} characters is too short to split with "
                        f"validation_fraction={validation_fraction}")
    return CharData(ids[:split].copy(), ids[split:].copy())


def bits_per_char(mean_nats: float) -> float:
    """Mean cross-entropy in nats per character → bits per character."""
    return mean_nats / math.log(2)
