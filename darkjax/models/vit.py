"""Vision Transformer (ViT) image encoder, also applied frame by frame to video clips.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021. Parameter names follow the
ImageNet-21k checkpoints of google-research/vision_transformer (`embedding`, `cls`,
`Transformer/posembed_input/pos_embedding`, `Transformer/encoderblock_<i>/{LayerNorm_0,
MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}`, `Transformer/encoder_norm`, optional
`pre_logits`, `head`), so their `.npz` files load key for key; timm state dicts and big_vision
`.npz` files convert through `darkjax.convert.vit`.

Input: normalised NHWC images (B, H, W, C) or NDHWC clips (B, T, H, W, C). Clips are encoded frame
by frame with shared weights and every output keeps the T axis: logits (B, T, num_classes),
`features` (B, T, D). `out` holds `features` (the classifier input: class token after the final
LayerNorm, through `pre_logits` when present), `cls` and, with `return_tokens`, `tokens` (patch
tokens after the final LayerNorm, (B, [T,] N, D)).

`num_blocks` builds only the first N encoder blocks of a `depth`-block ViT (LIFT-Net's "PViT"); the
final LayerNorm is kept unless `final_norm=False`, and conversion of a full-depth checkpoint skips
the unused blocks.
Self-attention is `darkjax.layers.attention.dot_product_attention`: flax's einsum form, or on a GPU
in bfloat16 cuDNN's fused (flash) attention, which never writes the (heads, 197, 197) scores of a
224^2 frame (`choose_attention`; the `attention` field forces "xla" or "cudnn").
`gelu_approximate=False` matches timm/PyTorch (exact erf GELU); the original JAX checkpoints were
trained with the tanh approximation (`True`); the two differ by ~1e-3 per activation.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers import attention as attention_lib
from darkjax.layers import precision
from darkjax.layers import remat as remat_lib

_dense_init = nn.initializers.xavier_uniform()
_bias_init = nn.initializers.normal(stddev=1e-6)


class MlpBlock(nn.Module):
  """Dense -> GELU -> dropout -> Dense -> dropout."""
  mlp_dim: int
  dropout_rate: float = 0.0
  gelu_approximate: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    width = x.shape[-1]
    x = precision.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_dense_init,
                        bias_init=_bias_init, name="Dense_0")(x)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    x = precision.Dense(width, dtype=self.dtype, kernel_init=_dense_init, bias_init=_bias_init,
                        name="Dense_1")(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  gelu_approximate: bool = False
  dtype: Any = jnp.float32
  attention: str = "auto"   # attention.dot_product_attention's implementation

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(x)
    y = precision.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, kernel_init=_dense_init,
        broadcast_dropout=False, dropout_rate=self.attention_dropout_rate,
        attention_fn=functools.partial(attention_lib.dot_product_attention,
                                       implementation=self.attention),
        name="MultiHeadDotProductAttention_1")(y, y, deterministic=deterministic)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + y
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_2")(x)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, self.gelu_approximate, self.dtype,
                 name="MlpBlock_3")(y, deterministic)
    return x + y


class AddPositionEmbs(nn.Module):
  """Learned position embeddings, shape (1, tokens, width) fixed by the input at init."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
    if pos.shape[1:] != x.shape[1:]:
      raise ValueError(f"{self.name}: position embedding has {pos.shape[1]} tokens but the input "
                       f"has {x.shape[1]}: the weights were converted for another image size; "
                       f"convert the checkpoint again with `python -m darkjax.convert ... "
                       f"--image-size N`, N the frames' side, to resize it")
    return precision.add_bias(x, pos)   # its gradient summed over the batch in float32


class Encoder(nn.Module):
  """Position embeddings, `num_blocks` encoder blocks, final LayerNorm (unless `final_norm` is
  False)."""
  num_blocks: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  gelu_approximate: bool = False
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  final_norm: bool = True
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = AddPositionEmbs(name="posembed_input")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    block_cls = remat_lib.wrap(Encoder1DBlock, self.remat, static_argnums=(2,))
    for index in range(self.num_blocks):
      x = block_cls(self.num_heads, self.mlp_dim, self.dropout_rate, self.attention_dropout_rate,
                    self.gelu_approximate, self.dtype, self.attention,
                    name=f"encoderblock_{index}")(x, not train)
    if not self.final_norm:
      return x
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x)


class VisionTransformer(nn.Module):
  """ViT with a class token (see the module docstring)."""
  num_classes: int = 1000
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  mlp_dim: int = 3072
  num_heads: int = 12
  num_blocks: int | None = None  # build only the first N of `depth` blocks
  representation_size: int | None = None  # `pre_logits` Dense + tanh before the head
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  gelu_approximate: bool = False
  return_tokens: bool = False
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  final_norm: bool = True    # False: no `Transformer/encoder_norm` (the PViT of LIFT-Net's option)
  attention: str = "auto"    # self-attention: auto | xla (flax's einsum form) | cudnn (fused)

  def _blocks(self) -> int:
    blocks = self.depth if self.num_blocks is None else self.num_blocks
    if not 0 < blocks <= self.depth:
      raise ValueError(f"VisionTransformer: num_blocks={self.num_blocks} must be in "
                       f"1..{self.depth}")
    return blocks

  def _encode_images(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    batch, height, width, _ = images.shape
    if height % self.patch_size or width % self.patch_size:
      raise ValueError(f"VisionTransformer: image size {height}x{width} is not a multiple of the "
                       f"patch size {self.patch_size}")
    x = precision.Conv(self.width, (self.patch_size, self.patch_size), strides=self.patch_size,
                       padding="VALID", dtype=self.dtype,
                       name="embedding")(images.astype(self.dtype))
    x = x.reshape(batch, -1, self.width)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
    # the token per clip, its gradient summed over the batch in float32
    x = jnp.concatenate([precision.broadcast_param(cls, (batch, 1, self.width), x.dtype), x],
                        axis=1)
    x = Encoder(self._blocks(), self.num_heads, self.mlp_dim, self.dropout_rate,
                self.attention_dropout_rate, self.gelu_approximate, self.dtype, self.remat,
                self.final_norm,
                attention_lib.check_implementation(self.attention, "VisionTransformer"),
                name="Transformer")(x, train)
    out = {"cls": x[:, 0]}
    if self.return_tokens:
      out["tokens"] = x[:, 1:]
    features = x[:, 0]
    if self.representation_size:
      features = jnp.tanh(precision.Dense(self.representation_size, dtype=self.dtype,
                                          name="pre_logits")(features))
    out["features"] = features
    if self.num_classes:
      logits = precision.Dense(self.num_classes, dtype=self.dtype,
                               kernel_init=nn.initializers.zeros, name="head")(features)
      out["logits"] = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return out

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    if x.ndim == 4:
      out = self._encode_images(x, train)
    elif x.ndim == 5:
      batch, frames = x.shape[:2]
      out = self._encode_images(x.reshape((batch * frames,) + x.shape[2:]), train)
      out = {key: value.reshape((batch, frames) + value.shape[1:]) for key, value in out.items()}
    else:
      raise ValueError(f"VisionTransformer expects NHWC images or NDHWC clips; got shape {x.shape}")
    return out.get("logits", out["features"]), out


_VIT_SIZES = {
    # name: (width, depth, mlp_dim, num_heads, patch_size)
    "vit_b16": (768, 12, 3072, 12, 16),
    "vit_s16": (384, 12, 1536, 6, 16),
    "vit_ti16": (192, 12, 768, 3, 16),
    "vit_tiny_test": (32, 3, 64, 4, 8),
}

VARIANTS = {
    name: functools.partial(VisionTransformer, width=width, depth=depth, mlp_dim=mlp_dim,
                            num_heads=num_heads, patch_size=patch_size)
    for name, (width, depth, mlp_dim, num_heads, patch_size) in _VIT_SIZES.items()
}
