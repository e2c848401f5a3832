"""LIFT-Net's token mixers: LIFT module, Critic module and the cross-attention Feature Fusion.

Susladkar et al., "LIFT-Net: Dual Stream Fourier Attention for Light Invariant Action Recognition".
All three are post-norm blocks on (B, S, E) tokens, as the paper writes them:

  LIFT (main stream):      H_MS <- LN(MSA(H_MS)) + H_MS
  Critic (luminous):       H    <- LN(MSA(H_LS)) + H_LS;  H_LS <- LN(MLP(H)) + H,  MLP: Dense-GELU-Dense
  Feature Fusion:          FE   =  LN(MHA(query=H_LS, key=value=H_MS)) + H_LS;   out = FoE(FE)

The fusion's queries come from the luminous stream, so its output has the luminous token count and
every luminous token gathers main-stream (dark frame) evidence. Its attention is Eq. (1),
Softmax(q(H_LS) k(H_MS)^T / sqrt(d)) v(H_MS) per head, where `attention_scale` picks d: "head_dim"
(default: the width of one head, the scale of multi-head attention in the paper's ref. [45]) or
"heads" (N_AH, the number of heads, as Eq. (1) is printed). The LIFT and Critic modules' MSA is
plain multi-head self-attention ([45]): sqrt(head_dim). Every attention sows its weights
(B, heads, queries, keys) into the `intermediates` collection as `attention/attention_weights` when
that collection is mutable (used for the attention-map figures); otherwise the sow is a no-op.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers.fourier import FourierEnhancement

_dense_init = nn.initializers.xavier_uniform()
ATTENTION_SCALES = ("head_dim", "heads")


def heads_scaled_attention(num_heads: int):
  """`nn.dot_product_attention` with logits divided by sqrt(num_heads) instead of sqrt(head_dim)
  (Eq. (1) as printed): the queries are rescaled by sqrt(head_dim / num_heads) first."""
  @functools.wraps(nn.dot_product_attention)   # the same signature: MHA passes the same kwargs
  def attention(query, key, value, *args, **kwargs):
    factor = (query.shape[-1] / num_heads) ** 0.5
    return nn.dot_product_attention(query * jnp.asarray(factor, query.dtype), key, value, *args,
                                    **kwargs)
  return attention


def _attention(num_heads: int, dropout_rate: float, dtype: Any,
               scale: str = "head_dim") -> nn.MultiHeadDotProductAttention:
  if scale not in ATTENTION_SCALES:
    raise ValueError(f"attention_scale {scale!r} unknown; valid: {ATTENTION_SCALES}")
  attention_fn = (heads_scaled_attention(num_heads) if scale == "heads"
                  else nn.dot_product_attention)
  return nn.MultiHeadDotProductAttention(num_heads=num_heads, dtype=dtype, kernel_init=_dense_init,
                                         dropout_rate=dropout_rate, broadcast_dropout=False,
                                         attention_fn=attention_fn, name="attention")


def _check_tokens(module: str, x: jax.Array, num_heads: int) -> None:
  if x.ndim != 3:
    raise ValueError(f"{module}: expected tokens (B, S, E); got shape {x.shape}")
  if x.shape[-1] % num_heads:
    raise ValueError(f"{module}: embedding width {x.shape[-1]} is not divisible by "
                     f"num_heads={num_heads}")


class LIFTModule(nn.Module):
  """Self-attention over the main-stream (per-frame PViT) tokens: x + LN(MSA(x))."""
  num_heads: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_tokens("LIFTModule", x, self.num_heads)
    y = _attention(self.num_heads, self.dropout_rate, self.dtype)(
        x, x, deterministic=not train, sow_weights=True)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    return x + nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(y)


class CriticModule(nn.Module):
  """Luminous tokens: h = x + LN(MSA(x)); h + LN(Dense(GELU(Dense(h))))."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_tokens("CriticModule", x, self.num_heads)
    y = _attention(self.num_heads, self.dropout_rate, self.dtype)(
        x, x, deterministic=not train, sow_weights=True)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    h = x + nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(y)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_dense_init, name="Dense_0")(h)
    y = nn.gelu(y, approximate=False)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    y = nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_dense_init, name="Dense_1")(y)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    return h + nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_1")(y)


class FeatureFusion(nn.Module):
  """Cross-attention fusion, queries from the luminous tokens, then Fourier Enhancement.

  `__call__(luminous, main)`: luminous (B, S, E) queries, main (B, T, E) keys and values; returns
  (B, S, E). `fourier=False` returns FE itself (ablation without FoE); `fourier_norm` is the FoE
  block's `layer_norm`; `attention_scale` the scale of Eq. (1) (module docstring).
  """
  num_heads: int
  fourier_hidden: int = 0
  fourier: bool = True
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  fourier_norm: str = "spectrum"
  attention_scale: str = "head_dim"

  @nn.compact
  def __call__(self, luminous: jax.Array, main: jax.Array, train: bool = False) -> jax.Array:
    _check_tokens("FeatureFusion (luminous queries)", luminous, self.num_heads)
    _check_tokens("FeatureFusion (main keys/values)", main, self.num_heads)
    if luminous.shape[0] != main.shape[0] or luminous.shape[-1] != main.shape[-1]:
      raise ValueError(f"FeatureFusion: luminous {luminous.shape} and main {main.shape} tokens need "
                       f"the same batch size and width")
    y = _attention(self.num_heads, self.dropout_rate, self.dtype, self.attention_scale)(
        luminous, main, main, deterministic=not train, sow_weights=True)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    fused = luminous + nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(y)
    if not self.fourier:
      return fused
    return FourierEnhancement(self.fourier_hidden, self.fourier_norm, dtype=self.dtype,
                              name="fourier")(fused)
