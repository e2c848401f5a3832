"""3D convolution whose lowering is chosen per backend.

XLA:CPU's native 3D convolution is several times slower than oneDNN's. On CPU a 3D convolution is
computed instead as a sum over temporal taps of 2D convolutions (each tap a strided temporal slice,
batched with the batch axis), which XLA:CPU lowers to its fast 2D kernels. On GPU/TPU the native
convolution is used. Both lowerings give the same numbers up to float summation order.

Parameters are laid out like `flax.linen.Conv` (`kernel`: (kt, kh, kw, in/groups, out), `bias`), so
converted checkpoints do not depend on the lowering.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = Sequence[tuple[int, int]]
LOWERINGS = ("auto", "native", "sum2d")


def resolve_lowering(lowering: str) -> str:
  if lowering not in LOWERINGS:
    raise ValueError(f"unknown conv lowering {lowering!r}; expected one of {LOWERINGS}")
  if lowering == "auto":
    return "sum2d" if jax.default_backend() == "cpu" else "native"
  return lowering


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1, 1),
           padding: Padding = ((0, 0), (0, 0), (0, 0)), feature_group_count: int = 1,
           lowering: str = "auto") -> jax.Array:
  """NDHWC x DHWIO -> NDHWC convolution with explicit (lo, hi) paddings."""
  lowering = resolve_lowering(lowering)
  strides = tuple(strides)
  padding = tuple(tuple(p) for p in padding)
  if lowering == "native":
    return lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=padding,
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=feature_group_count)
  kt = kernel.shape[0]
  st = strides[0]
  (pt_lo, pt_hi) = padding[0]
  if pt_lo or pt_hi:
    x = jnp.pad(x, ((0, 0), (pt_lo, pt_hi), (0, 0), (0, 0), (0, 0)))
  b, t = x.shape[:2]
  t_out = (t - kt) // st + 1
  if t_out <= 0:
    raise ValueError(f"conv3d: temporal size {t} (after padding) is smaller than kernel {kt}")
  out = None
  for tap in range(kt):
    frames = lax.slice_in_dim(x, tap, tap + st * (t_out - 1) + 1, stride=st, axis=1)
    frames = frames.reshape((b * t_out,) + frames.shape[2:])
    y = lax.conv_general_dilated(
        frames, kernel[tap], window_strides=strides[1:], padding=padding[1:],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=feature_group_count)
    out = y if out is None else out + y
  return out.reshape((b, t_out) + out.shape[1:])


class Conv3D(nn.Module):
  """3D convolution with explicit paddings, parameter-compatible with `nn.Conv`."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1, 1)
  padding: Padding = ((0, 0), (0, 0), (0, 0))
  feature_group_count: int = 1
  use_bias: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
  bias_init: Any = nn.initializers.zeros
  lowering: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    if in_features % self.feature_group_count:
      raise ValueError(f"{self.name}: {in_features} input channels not divisible by "
                       f"{self.feature_group_count} groups")
    kernel_shape = tuple(self.kernel_size) + (in_features // self.feature_group_count,
                                              self.features)
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,),
                      self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv3d(x, kernel, self.strides, self.padding, self.feature_group_count, self.lowering)
    if bias is not None:
      y = y + bias
    return y
