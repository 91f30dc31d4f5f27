"""A small pre-LN transformer whose attention uses any query–key score (``jaxemb.attention``).

Blocks as in GPT-2 (Radford et al. 2019) / Xiong et al. 2020 "On layer normalization in the
transformer architecture": x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP; learned
position embeddings, a final LN and a linear head. ``causal=True`` is a decoder (each position
sees itself and the past); ``causal=False`` an encoder (only padding is masked).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxemb.attention import ATTENTION_SCORES, AttentionError, MultiHeadAttention, check_score
from jaxemb.attention import padding_mask as _padding_mask

Array = jax.Array


class TransformerError(ValueError):
    """A transformer config or input that does not fit."""


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise TransformerError(f"TransformerConfig.{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes and the attention score of a :class:`Transformer`."""

    vocab_size: int
    """Number of token ids (inputs are in [0, vocab_size))."""
    width: int = 64
    """Model width D (residual stream and qkv width)."""
    depth: int = 2
    """Number of blocks."""
    num_heads: int = 4
    """Attention heads per block (must divide width)."""
    score: str = "scaled_dot"
    """Query–key score, one of jaxemb.attention.ATTENTION_SCORES."""
    causal: bool = True
    """True: decoder (causal mask); False: encoder (padding mask only)."""
    max_len: int = 256
    """Longest sequence (rows of the learned position embedding)."""
    mlp_ratio: int = 4
    """MLP hidden width = mlp_ratio * width."""
    dropout_rate: float = 0.0
    """Dropout on attention weights and on each residual branch (training only)."""
    num_outputs: int | None = None
    """Width of the head's logits; None: vocab_size (a language model)."""

    @property
    def outputs(self) -> int:
        return self.vocab_size if self.num_outputs is None else self.num_outputs

    def validate(self) -> None:
        """Raise TransformerError for any bad field."""
        for name in ("vocab_size", "width", "depth", "num_heads", "max_len", "mlp_ratio"):
            _positive_int(name, getattr(self, name))
        if self.num_outputs is not None:
            _positive_int("num_outputs", self.num_outputs)
        if self.width % self.num_heads:
            raise TransformerError(f"TransformerConfig: num_heads={self.num_heads} does not "
                                   f"divide width={self.width}")
        try:
            check_score(self.score)
        except AttentionError as e:
            raise TransformerError(f"TransformerConfig.score: {e}") from None
        if not isinstance(self.causal, bool):
            raise TransformerError(f"TransformerConfig.causal must be a bool, got "
                                   f"{self.causal!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise TransformerError(f"TransformerConfig.dropout_rate must be in [0, 1), got "
                                   f"{self.dropout_rate}")


class Block(nn.Module):
    """x + Attn(LN(x)); x + MLP(LN(x)). [B, T, D] → [B, T, D]."""

    config: TransformerConfig

    def setup(self):
        c = self.config
        self.ln1 = nn.LayerNorm()
        self.attn = MultiHeadAttention(num_heads=c.num_heads, score=c.score,
                                       dropout_rate=c.dropout_rate)
        self.ln2 = nn.LayerNorm()
        self.mlp_in = nn.Dense(c.mlp_ratio * c.width)
        self.mlp_out = nn.Dense(c.width)
        self.drop = nn.Dropout(c.dropout_rate)

    def __call__(self, x: Array, mask: Array | None, deterministic: bool) -> Array:
        a = self.attn(self.ln1(x), mask=mask, deterministic=deterministic,
                      causal=self.config.causal)
        x = x + self.drop(a, deterministic=deterministic)
        h = self.mlp_out(nn.gelu(self.mlp_in(self.ln2(x))))
        return x + self.drop(h, deterministic=deterministic)

    def maps(self, x: Array, mask: Array | None) -> tuple[Array, Array]:
        """This block's attention (logits, weights) [B, H, T, T] for its input x."""
        return self.attn.weights(self.ln1(x), mask=mask, causal=self.config.causal)


class Transformer(nn.Module):
    """tokens [B, T] int → logits [B, T, num_outputs]."""

    config: TransformerConfig

    def setup(self):
        c = self.config
        c.validate()
        init = nn.initializers.normal(0.02)  # GPT-2's embedding init
        self.embed = nn.Embed(c.vocab_size, c.width, embedding_init=init)
        self.pos_embed = self.param("pos_embed", init, (c.max_len, c.width))
        self.blocks = [Block(c) for _ in range(c.depth)]
        self.ln_f = nn.LayerNorm()
        self.head = nn.Dense(c.outputs)

    def __call__(self, tokens: Array, padding: Array | None = None,
                 deterministic: bool = True) -> Array:
        """``padding`` [B, T] bool: True at real tokens, False at padding (never attended to).
        Logits at padded positions are computed but mean nothing."""
        if not deterministic and self.config.dropout_rate > 0 and not self.has_rng("dropout"):
            raise TransformerError("Transformer: deterministic=False with dropout_rate "
                                   f"{self.config.dropout_rate} needs a 'dropout' rng: "
                                   "apply(..., rngs={'dropout': key})")
        x, mask = self._embed(tokens, padding)
        for block in self.blocks:
            x = block(x, mask, deterministic)
        return self.head(self.ln_f(x))

    def attention_maps(self, tokens: Array, padding: Array | None = None
                       ) -> tuple[Array, Array]:
        """(logits, weights), each [L, B, H, T, T]: every block's attention (deterministic)."""
        x, mask = self._embed(tokens, padding)
        logits, weights = [], []
        for block in self.blocks:
            lg, w = block.maps(x, mask)
            logits.append(lg)
            weights.append(w)
            x = block(x, mask, True)
        return jnp.stack(logits), jnp.stack(weights)

    def _embed(self, tokens: Array, padding: Array | None) -> tuple[Array, Array | None]:
        self._check(tokens, padding)
        T = tokens.shape[1]
        x = self.embed(tokens) + self.pos_embed[None, :T]
        return x, None if padding is None else _padding_mask(jnp.asarray(padding))

    def _check(self, tokens, padding) -> None:
        c = self.config
        if jnp.ndim(tokens) != 2:
            raise TransformerError(f"Transformer: tokens must have shape [B, T], got shape "
                                   f"{jnp.shape(tokens)}")
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise TransformerError(f"Transformer: tokens must be integer ids, got dtype "
                                   f"{jnp.result_type(tokens)}")
        T = tokens.shape[1]
        if not 1 <= T <= c.max_len:
            raise TransformerError(f"Transformer: sequence length {T} is outside [1, max_len="
                                   f"{c.max_len}]; raise TransformerConfig.max_len")
        if padding is not None and (jnp.shape(padding) != jnp.shape(tokens)
                                    or jnp.result_type(padding) != jnp.bool_):
            raise TransformerError(f"Transformer: padding must be a bool array shaped like "
                                   f"tokens {jnp.shape(tokens)} (True = real token), got shape "
                                   f"{jnp.shape(padding)} dtype {jnp.result_type(padding)}")
        if not isinstance(tokens, jax.core.Tracer):  # concrete: check the ids (free under jit)
            ids = np.asarray(tokens)
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= c.vocab_size:
                raise TransformerError(f"Transformer: token ids must be in [0, vocab_size="
                                       f"{c.vocab_size}), got ids in [{lo}, {hi}]")


__all__ = ["ATTENTION_SCORES", "Block", "Transformer", "TransformerConfig", "TransformerError"]
