"""BatchNorm with an export form.

`BatchNorm` is `flax.linen.BatchNorm` (same fields, variables and values). Inside
`darkjax.layers.conv.export_lowering()`, in inference mode, it is one multiply and one add by
per-channel constants folded from the running statistics at trace time: jax2onnx writes flax's
BatchNorm on channels-last tensors as Transpose, BatchNormalization, Transpose, and its conversion
time grows faster than linearly with the number of nodes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darkjax.layers import conv2d


class BatchNorm(nn.BatchNorm):
  """`flax.linen.BatchNorm`, with the export form described in the module docstring."""

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
               mask: jax.Array | None = None) -> jax.Array:
    running = nn.merge_param("use_running_average", self.use_running_average,
                             use_running_average)
    if (not conv2d.export_lowering_forced() or not running or mask is not None
        or self.axis != -1 or self.is_initializing()):
      return super().__call__(x, use_running_average, mask=mask)
    conv2d.note_lowering("batch_norm", "affine")
    mean, var = (self.get_variable("batch_stats", name) for name in ("mean", "var"))
    scale = (self.get_variable("params", "scale") if self.use_scale
             else np.ones(mean.shape, mean.dtype))
    bias = self.get_variable("params", "bias") if self.use_bias else np.zeros(mean.shape, mean.dtype)

    def affine(mean, var, scale, bias):
      multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
      return multiplier, bias - mean * multiplier

    multiplier, offset = conv2d.on_constants(affine, mean, var, scale, bias)
    dtype = self.dtype or jnp.result_type(x, multiplier)
    return x.astype(dtype) * multiplier.astype(dtype) + offset.astype(dtype)
