"""A small plain 3D CNN: the baseline that makes the main job work on a laptop CPU.

Stem conv (3,3,3) stride (1,2,2), then one conv-BN-ReLU block per stage, stages 2.. halving time
and space; global average pooling, dropout, linear head.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers.conv import Conv3D
from darkjax.layers import remat as remat_lib
from darkjax.layers.norm import BatchNorm
from darkjax.models.heads import classifier_head, global_average_pool


class ConvBNReLU(nn.Module):
  features: int
  strides: Sequence[int] = (1, 1, 1)
  dtype: Any = None
  conv_lowering: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv3D(self.features, (3, 3, 3), self.strides, ((1, 1),) * 3, dtype=self.dtype,
               lowering=self.conv_lowering, name="conv")(x)
    x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class Small3DCNN(nn.Module):
  """Plain 3D CNN; `out` holds `stem`, `stage1..N` and `features`."""
  num_classes: int
  widths: Sequence[int] = (16, 32, 64, 128)
  dropout_rate: float = 0.2
  dtype: Any = None
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  conv_lowering: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    block = remat_lib.wrap(ConvBNReLU, self.remat, static_argnums=(2,))
    out = {}
    x = x.astype(self.dtype or x.dtype)
    x = block(self.widths[0], (1, 2, 2), self.dtype, self.conv_lowering, name="stem")(x, train)
    out["stem"] = x
    for i, width in enumerate(self.widths):
      strides = (1, 1, 1) if i == 0 else (2, 2, 2)
      x = block(width, strides, self.dtype, self.conv_lowering, name=f"stage{i + 1}")(x, train)
      out[f"stage{i + 1}"] = x
    return classifier_head(global_average_pool(x, jnp.float32), out, self.num_classes,
                           name="head", dtype=self.dtype, train=train,
                           dropout_rate=self.dropout_rate)


VARIANTS = {
    "small3d": functools.partial(Small3DCNN, widths=(16, 32, 64, 128)),
    "small3d_wide": functools.partial(Small3DCNN, widths=(32, 64, 128, 256)),
    "small3d_tiny": functools.partial(Small3DCNN, widths=(4, 8, 8, 16), dropout_rate=0.0),
}
