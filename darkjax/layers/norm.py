"""BatchNorm with an export form and per-group statistics.

`BatchNorm` is `flax.linen.BatchNorm` (same fields, variables and values). Inside
`darkjax.layers.conv.export_lowering()`, in inference mode, it is one multiply and one add by
per-channel constants folded from the running statistics at trace time: jax2onnx writes flax's
BatchNorm on channels-last tensors as Transpose, BatchNormalization, Transpose, and its conversion
time grows faster than linearly with the number of nodes.

With `stat_groups` G > 1 the batch is G consecutive equal parts (e.g. two input streams run as one
batch through one weight-shared backbone): each part is normalised by its own statistics, the
batch's in training and its own running ones in inference (`mean` and `var` are (G, C)); scale
and bias stay shared. `per_group_stats` turns (C,) statistics (a backbone trained on one stream)
into that layout.

Statistics in training: flax's one-pass form (`use_fast_variance`, flax's default) takes the
mean of x and of x^2 over one read of the activation, which XLA computes as one multi-output
reduction, with a backward pass of the same kind; the two-pass form (`use_fast_variance=False`:
the mean, then the mean of (x - mean)^2) reads each activation once more forward and once more
backward. On a GPU, where these reductions run at memory bandwidth, that is 16% more of the
step's fusion traffic for R(2+1)D-18 (docs/benchmarks.md, "BatchNorm statistics in one pass").
The R(2+1)D networks and ActLumos ask `one_pass_statistics()`: one pass when compiling for a GPU
or TPU, two on CPU, where it costs nothing measurable and the papers' synthetic figures were
measured with it; the other models use flax's default everywhere. Both forms compute in float32
from bf16 or float32 activations and agree to float32 rounding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darkjax import targets
from darkjax.layers import conv2d


def one_pass_statistics(platform: str | None = None) -> bool:
  """`use_fast_variance` for a BatchNorm of the R(2+1)D networks and ActLumos traced for
  `platform` (default: `targets.platform()`, the platform being compiled for): one-pass
  statistics on GPU and TPU, two-pass on CPU (module docstring)."""
  return (platform or targets.platform()) != "cpu"


class BatchNorm(nn.BatchNorm):
  """`flax.linen.BatchNorm`, with the export form and `stat_groups` described in the module
  docstring (flax's fields: `axis` must stay -1 with `stat_groups` > 1)."""
  stat_groups: int = 1

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
               mask: jax.Array | None = None) -> jax.Array:
    running = nn.merge_param("use_running_average", self.use_running_average,
                             use_running_average)
    if self.stat_groups > 1:
      return self._grouped(x, running, mask)
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

  @nn.compact
  def _grouped(self, x: jax.Array, running: bool, mask: jax.Array | None) -> jax.Array:
    """Per-part statistics (module docstring); flax's arithmetic (biased variance, float32
    statistics, `momentum` for the running averages) within each part."""
    groups = self.stat_groups
    if mask is not None or self.axis != -1 or x.shape[0] % groups:
      raise ValueError(f"BatchNorm {self.name}: stat_groups={groups} needs a batch of equal "
                       f"parts on axis 0, features last and no mask; got shape {x.shape}, axis "
                       f"{self.axis}, mask {mask is not None}")
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            (groups, features))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32),
                           (groups, features))
    parts = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
    per_part = (groups,) + (1,) * (parts.ndim - 2) + (features,)
    if running:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(1, parts.ndim - 1))
      values = parts.astype(jnp.promote_types(parts.dtype, jnp.float32))
      mean = jnp.mean(values, axis=axes)
      if self.use_fast_variance:   # one pass over x, as flax's (module docstring)
        var = jnp.maximum(0.0, jnp.mean(jnp.square(values), axis=axes) - jnp.square(mean))
      else:
        var = jnp.mean(jnp.square(values - mean.reshape(per_part)), axis=axes)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    multiplier = jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      multiplier = multiplier * self.param("scale", self.scale_init, (features,),
                                           self.param_dtype)
    offset = -mean * multiplier
    if self.use_bias:
      offset = offset + self.param("bias", self.bias_init, (features,), self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, multiplier)
    y = (parts.astype(dtype) * multiplier.reshape(per_part).astype(dtype)
         + offset.reshape(per_part).astype(dtype))
    return y.reshape(x.shape)


def per_group_stats(batch_stats: dict, groups: int) -> dict:
  """`batch_stats` of BatchNorms with (C,) statistics -> the (groups, C) layout of `stat_groups`
  BatchNorms, every group starting from the given statistics."""
  return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (groups,) + np.shape(a)).copy(),
                      batch_stats)
