"""The data side of SGNS on device: the corpus as arrays, gensim's subsampling, unigram^0.75
negatives by inverse CDF, and the window's context slots (see :mod:`jaxemb.sgns`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class SGNSError(ValueError):
    """A bad SGNS setting or corpus."""


@dataclasses.dataclass(frozen=True, eq=False)
class DeviceCorpus:
    """The corpus as device arrays: ``tokens`` [N] int32, ``docs`` [N] int32 (document of each
    token), ``keep_prob`` [V] float32 and ``neg_cdf`` [V] float32 (unigram^0.75 CDF)."""

    tokens: Array
    docs: Array
    keep_prob: Array
    neg_cdf: Array

    @property
    def n_tokens(self) -> int:
        return self.tokens.shape[0]


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """gensim's subsampling keep-probability min(1, (√(f/t) + 1)·t/f), f = count/total.

    ``sample`` = 0 keeps every token.
    """
    counts = np.asarray(counts, np.float64)
    if sample == 0:
        return np.ones_like(counts)
    f = counts / counts.sum()
    return np.minimum(1.0, (np.sqrt(f / sample) + 1.0) * sample / f)


def negative_cdf(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """CDF of the unigram^power distribution that negatives are drawn from."""
    w = np.asarray(counts, np.float64) ** power
    cdf = np.cumsum(w) / w.sum()
    cdf[-1] = 1.0
    return cdf


def device_corpus(encoded_docs, counts: np.ndarray, sample: float) -> DeviceCorpus:
    """Concatenate int32 documents and put everything the sampler needs on the device."""
    docs = [np.asarray(d, np.int32) for d in encoded_docs if len(d)]
    if not docs:
        raise SGNSError("the corpus is empty: no in-vocabulary tokens to train on")
    tokens = np.concatenate(docs)
    doc_ids = np.repeat(np.arange(len(docs), dtype=np.int32), [len(d) for d in docs])
    return DeviceCorpus(jnp.asarray(tokens), jnp.asarray(doc_ids),
                        jnp.asarray(keep_probability(counts, sample), jnp.float32),
                        jnp.asarray(negative_cdf(counts), jnp.float32))


@jax.jit
def subsample(corpus: DeviceCorpus, key: Array):
    """Kept tokens and their documents compacted to the front ([N] each), and the kept count."""
    keep = jax.random.uniform(key, corpus.tokens.shape) < corpus.keep_prob[corpus.tokens]
    (pos,) = jnp.nonzero(keep, size=corpus.n_tokens, fill_value=0)
    return corpus.tokens[pos], corpus.docs[pos], keep.sum()


jax.tree_util.register_dataclass(DeviceCorpus, data_fields=["tokens", "docs", "keep_prob",
                                                            "neg_cdf"], meta_fields=[])


def sample_negatives(key: Array, cdf: Array, shape: tuple[int, ...]) -> Array:
    """int32 word ids ~ the distribution with this CDF (inverse-CDF sampling)."""
    u = jax.random.uniform(key, shape)
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1).astype(jnp.int32)


def window_offsets(window: int) -> np.ndarray:
    """[-window..-1, 1..window]: the context slots of a centre."""
    return np.array([*range(-window, 0), *range(1, window + 1)], np.int32)
