"""Depthwise 2D convolution whose lowering is chosen per platform (the enhancers' ShuffleNet units).

XLA:CPU runs grouped convolutions with one channel per group far below its dense-convolution
speed, and their gradients worse still (docs/benchmarks.md, "Depthwise 2D convolutions on CPU").

The `blockdiag` lowering runs the depthwise kernel (kh, kw, 1, C) as a dense (kh, kw, C, C) kernel
that is zero off the diagonal: C times the multiply-adds, but on XLA's fast dense path. The zeros
add exact zeros, so outputs equal the native lowering's up to summation order; the gradient w.r.t.
the depthwise kernel is the diagonal of the dense kernel's gradient (autodiff through the
multiplication by the identity). `auto` uses it when compiling for CPU
(`darkjax.targets.platform()`) up to `BLOCKDIAG_MAX_CHANNELS` channels (the dense cost grows with
C^2) and XLA's native grouped convolution elsewhere (GPU / TPU).

`DepthwiseConv2D` has the parameter layout of `nn.Conv(C, kernel, feature_group_count=C)`
(`kernel` (kh, kw, 1, C), optional `bias` (C,)), so checkpoints and converters are unaffected.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax import targets
from darkjax.layers import conv as conv_lib
from darkjax.layers import precision

LOWERINGS = ("auto", "native", "blockdiag")
BLOCKDIAG_MAX_CHANNELS = 128

Padding = Sequence[tuple[int, int]]


def choose_lowering(channels: int, backend: str | None = None) -> str:
  """The `auto` lowering for a depthwise conv over `channels` channels on `backend` (default:
  `targets.platform()`); always `native` inside `darkjax.layers.conv.native_lowering()` (e.g. for
  counting FLOPs)."""
  if conv_lib.native_lowering_forced():
    return "native"
  if (backend or targets.platform()) == "cpu" and channels <= BLOCKDIAG_MAX_CHANNELS:
    return "blockdiag"
  return "native"


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
                     padding: Padding = ((1, 1), (1, 1)), lowering: str = "auto") -> jax.Array:
  """Depthwise conv of NHWC `x` with an HWIO kernel (kh, kw, 1, C); explicit (lo, hi) paddings."""
  channels = x.shape[-1]
  if kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != channels:
    raise ValueError(f"depthwise_conv2d: kernel shape {kernel.shape} does not match a depthwise "
                     f"conv over {channels} channels (expected (kh, kw, 1, {channels}))")
  if lowering not in LOWERINGS:
    raise ValueError(f"depthwise_conv2d: lowering {lowering!r} unknown; valid: {LOWERINGS}")
  if lowering == "auto":
    lowering = choose_lowering(channels)
  conv_lib.note_lowering("depthwise", lowering)
  numbers = ("NHWC", "HWIO", "NHWC")
  if lowering == "native":
    return jax.lax.conv_general_dilated(x, kernel, tuple(strides), tuple(padding),
                                        dimension_numbers=numbers, feature_group_count=channels)
  dense = kernel[:, :, 0, :, None] * jnp.eye(channels, dtype=kernel.dtype)   # (kh, kw, C, C)
  return jax.lax.conv_general_dilated(x, dense, tuple(strides), tuple(padding),
                                      dimension_numbers=numbers)


class DepthwiseConv2D(nn.Module):
  """Depthwise 2D conv, parameter-compatible with `nn.Conv(C, ..., feature_group_count=C)`."""
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Padding = ((1, 1), (1, 1))
  use_bias: bool = True
  dtype: Any = None
  lowering: str = "auto"
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (1, channels))
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    if precision.weight_gradients_in_float32(dtype, "conv") and kernel.dtype == jnp.float32:
      # a batch over devices: the kernel's gradient leaves each device in float32 (precision)
      def weight_gradient(x, dy, shape, **kwargs):
        return precision.conv_weight_gradient(x, dy, shape, self.strides, self.padding, None,
                                              None, ("NHWC", "HWIO", "NHWC"), channels,
                                              **kwargs)
      y = precision.with_float32_weight_gradient(
          lambda x, k: depthwise_conv2d(x, k, self.strides, self.padding, self.lowering),
          weight_gradient, x, kernel)
    else:
      y = depthwise_conv2d(x, kernel.astype(dtype), self.strides, self.padding, self.lowering)
    if self.use_bias:   # in float32 at least: its gradient is summed over every position
      y = precision.add_bias(y, self.param("bias", self.bias_init, (channels,)))
    return y


__all__ = ["BLOCKDIAG_MAX_CHANNELS", "DepthwiseConv2D", "LOWERINGS", "choose_lowering",
           "depthwise_conv2d"]
