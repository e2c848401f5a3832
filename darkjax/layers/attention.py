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

from darkjax import targets
from darkjax.layers import conv2d, precision
from darkjax.layers.fourier import FourierEnhancement

_dense_init = nn.initializers.xavier_uniform()
ATTENTION_SCALES = ("head_dim", "heads")

# ================================================================ fused attention (GPU)
# `dot_product_attention`'s implementations: "auto" picks per platform and call (choose_attention),
# "xla" is always flax's einsum form (scores in memory), "cudnn" always cuDNN's fused (flash)
# attention and raises where it does not apply.
IMPLEMENTATIONS = ("auto", "xla", "cudnn")
FUSED_DTYPES = (jnp.bfloat16, jnp.float16)   # what cuDNN's fused attention takes
FUSED_MAX_HEAD_DIM = 128                      # 256 on Hopper and later; 128 holds on every GPU


def check_implementation(name: str, owner: str = "attention") -> str:
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"{owner}: attention implementation {name!r} unknown; valid: "
                     f"{IMPLEMENTATIONS}")
  return name


@functools.cache
def cudnn_available() -> bool:
  """Whether this process can trace cuDNN's fused attention: jax's CUDA plugin and cuDNN are
  installed (on a GPU host, or a CPU host with the `aot-gpu` extra compiling for a GPU target)."""
  try:
    from jax._src.lib import cuda_versions  # pylint: disable=import-outside-toplevel
    if cuda_versions is None:
      return False
    # jax's CUDA plugin loads cuDNN when the backends start; asked before, cuDNN stays "not found"
    # for the rest of the process.
    jax.devices()
    return cuda_versions.cudnn_get_version() > 0
  except Exception:  # pylint: disable=broad-except  (no plugin, no libcudnn: the XLA form)
    return False


def choose_attention(dtype: Any, head_dim: int, *, masked: bool = False, dropout: bool = False,
                     sow: bool = False, platform: str | None = None,
                     cudnn: bool | None = None) -> str:
  """The `auto` implementation of one attention call traced for `platform` (default:
  `targets.platform()`): "cudnn" on a GPU for 16-bit q/k/v, a head width cuDNN's fused attention
  takes (a multiple of 8, at most FUSED_MAX_HEAD_DIM), no mask, bias or dropout, and weights not
  sown; "xla" otherwise (CPU and TPU always). `cudnn`: whether cuDNN can be traced here (default
  `cudnn_available()`; a CPU host without jax's CUDA plugin traces a GPU step's shapes with the
  XLA form, which it could not compile for a GPU anyway)."""
  platform = platform or targets.platform()
  fits = (jnp.dtype(dtype) in [jnp.dtype(d) for d in FUSED_DTYPES]
          and head_dim % 8 == 0 and head_dim <= FUSED_MAX_HEAD_DIM)
  if platform != "gpu" or not fits or masked or dropout or sow:
    return "xla"
  return "cudnn" if (cudnn_available() if cudnn is None else cudnn) else "xla"


def fused_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                    implementation: str = "cudnn") -> jax.Array:
  """softmax(q k^T / sqrt(head_dim)) v per head by `jax.nn.dot_product_attention`; q, k, v
  ([batch...,] length, heads, head_dim), any number of batch axes (flattened to one).

  cuDNN's fused attention never writes the (heads, q_length, kv_length) scores: forward and
  backward are one kernel each, with the softmax in float32. Its training kernels take only even
  sequence lengths (jax 0.10 checks it), so an odd length (a ViT's 196 patches and class token) is
  padded by one token that a padding mask (`query_seq_lengths`, `key_value_seq_lengths`) keeps out
  of every softmax, and sliced off after. `implementation="xla"` runs the same glue through XLA's
  reference (what the CPU tests check against flax's attention)."""
  batch_shape, (q_length, heads, head_dim) = query.shape[:-3], query.shape[-3:]
  kv_length = key.shape[-3]
  flat = [t.reshape((-1,) + t.shape[-3:]) for t in (query, key, value)]
  pad_q, pad_kv = q_length % 2, kv_length % 2
  lengths = {}
  if pad_q or pad_kv:
    pads = (pad_q, pad_kv, pad_kv)
    flat = [jnp.pad(t, ((0, 0), (0, p), (0, 0), (0, 0))) for t, p in zip(flat, pads)]
    batch = flat[0].shape[0]
    lengths = {"query_seq_lengths": jnp.full((batch,), q_length, jnp.int32),
               "key_value_seq_lengths": jnp.full((batch,), kv_length, jnp.int32)}
  out = jax.nn.dot_product_attention(*flat, scale=head_dim ** -0.5,
                                     implementation=implementation, **lengths)
  return out[:, :q_length].reshape(batch_shape + (q_length, heads, head_dim))


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          bias: jax.Array | None = None, mask: jax.Array | None = None,
                          broadcast_dropout: bool = True, dropout_rng: jax.Array | None = None,
                          dropout_rate: float = 0.0, deterministic: bool = False,
                          dtype: Any = None, precision: Any = None, module: Any = None,
                          force_fp32_for_softmax: bool = False,
                          implementation: str = "auto") -> jax.Array:
  """flax's `nn.dot_product_attention` (an `attention_fn` of `nn.MultiHeadDotProductAttention`,
  same arguments), or cuDNN's fused attention: `implementation` "auto" takes it where
  `choose_attention` says so (on a GPU), "xla" never, "cudnn" always (ValueError where it does
  not apply). The fused form computes the softmax in float32 where flax's computes it in `dtype`:
  with bfloat16 the two agree to bfloat16 rounding. A call whose weights are sown (`module`, the
  attention-map figures) is flax's under "auto", as is every call traced inside
  `conv2d.native_lowering()` or `export_lowering()` (an export reads nothing of the host). The
  choice is recorded as "attention:xla" or "attention:cudnn" (`conv2d.record_lowerings`)."""
  query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
  chosen = check_implementation(implementation)
  dropout = not deterministic and dropout_rate > 0.0
  if chosen == "auto" and conv2d.native_lowering_forced():   # export, FLOP counts: portable
    chosen = "xla"
  elif chosen == "auto":
    chosen = choose_attention(query.dtype, query.shape[-1], dropout=dropout, sow=module is not None,
                              masked=mask is not None or bias is not None)
  elif chosen == "cudnn" and (mask is not None or bias is not None or dropout or module):
    raise ValueError("attention implementation 'cudnn': this call has a mask, bias, dropout or "
                     "sown weights, which darkjax's fused attention does not take; use 'auto'")
  conv2d.note_lowering("attention", chosen)
  if chosen == "cudnn":
    return fused_attention(query, key, value)
  return nn.dot_product_attention(
      query, key, value, bias=bias, mask=mask, broadcast_dropout=broadcast_dropout,
      dropout_rng=dropout_rng, dropout_rate=dropout_rate, deterministic=deterministic, dtype=dtype,
      precision=precision, module=module, force_fp32_for_softmax=force_fp32_for_softmax)


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
  return precision.MultiHeadDotProductAttention(
      num_heads=num_heads, dtype=dtype, kernel_init=_dense_init, dropout_rate=dropout_rate,
      broadcast_dropout=False, attention_fn=attention_fn, name="attention")


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
    y = precision.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_dense_init, name="Dense_0")(h)
    y = nn.gelu(y, approximate=False)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    y = precision.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_dense_init, name="Dense_1")(y)
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
