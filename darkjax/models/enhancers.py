"""Curve-estimation enhancers: Zero-DCE, Zero-DCE++ and DTCM's light enhancer, plus a video wrapper.

Each enhancer maps an image batch (N, H, W, 3) in [0, 1] to `(enhanced, out)` with
`out = {"curves": per-pixel curve maps at frame resolution, "intermediate": the image after 4 curve
iterations, "enhanced": the final image}`, and exposes `estimate_curves(x, train)` so that
`VideoEnhancer` can estimate curves on key frames only and share them inside groups of frames.

- `zero_dce` (Li-Chongyi/Zero-DCE `enhance_net_nopool`): seven 3x3 convolutions of 32 channels with
  skip concatenations, 24-channel tanh output = 8 iterations x RGB. 79,416 parameters.
- `zero_dce_pp` (Li-Chongyi/Zero-DCE_extension): the same graph with depthwise-separable convolutions,
  one 3-channel curve map reused by all 8 iterations, optional input down-scaling (`downscale`): the
  maps are estimated on the bilinearly reduced image and brought back with align_corners=True
  bilinear up-sampling, as in the official code. 10,561 parameters.
- `dtcm_enhancer` (DTCM, Tu et al., TIP 2023, light version): 3x3 conv 32 + ReLU, ShuffleNetV2 basic
  units for layers 2-4, two-branch ShuffleNetV2 units for layers 5-6, 3x3 conv + tanh (24 channels).
  The Zero-DCE skip pattern is kept (layer 5 sees cat(x3, x4), layer 6 cat(x2, x5), layer 7
  cat(x1, x6)); the paper gives no wiring details, this is our reading. By default every layer
  runs at frame resolution (the paper's cost: GFLOPs = parameters x pixels, Tables III and IX);
  `full_resolution=False` runs layers 5-6 at stride 2 (the paper's "Spatial Down Sampling" units)
  with average-pooled skips and resizes the maps (H and W multiples of 4). The depthwise
  convolutions carry a bias (PyTorch's `nn.Conv2d` default; torchvision's ShuffleNetV2 has none):
  with it the count is the paper's to the unit, 23,768 parameters (Table IX: 23.77k), 22,968
  without BatchNorm's 800 scales and shifts (Sec. III-D: 22.97K); `depthwise_bias=False` gives
  23,560. A bias followed by training-mode BatchNorm gets no gradient and is absorbed by the
  running mean: it changes the count, not the function. Both resolutions share their parameters.

Parameter names follow the official PyTorch modules (`e_conv1` ... `e_conv7`, `depth_conv`,
`point_conv`) so that `darkjax.convert.zero_dce` is a plain rename. Curves use the official sign
convention by default (see darkjax.layers.curves).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darkjax.layers import conv2d
from darkjax.layers import remat as remat_lib
from darkjax.layers.depthwise import DepthwiseConv2D
from darkjax.layers.curves import (curve_iterates, intermediate_index, keyframe_curves,
                                   resize_bilinear)
from darkjax.layers.norm import BatchNorm
from darkjax.layers import precision

PAD1 = ((1, 1), (1, 1))


def _check_images(name: str, x: jax.Array) -> None:
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"{name}: expected an image batch (N, H, W, 3), got shape {x.shape}")


class _CurveEnhancer(nn.Module):
  """Shared fields and `__call__`: estimate curve maps at frame resolution, iterate the curve."""
  num_classes: int = 0
  dtype: Any = None
  features: int = 32
  num_iterations: int = 8
  convention: str = "official"
  # Curve parameter the untrained estimator is centred on, in the paper's convention (LE(x) = x +
  # r x (1 - x): r > 0 brightens): the output conv's bias starts at the matching tanh^-1 value
  # (0: a zero bias). On very dark clips a random estimator can start by darkening, where
  # the exposure loss's gradient (proportional to the pixel values) vanishes and training stalls
  # at black; a positive r keeps it in the brightening regime.
  initial_curve: float = 0.0
  # darkjax.layers.remat policy of the estimator's inner units (DTCMEnhancer: each ShuffleNet
  # unit), nested inside VideoEnhancer's remat of the whole enhancement: its recomputation then
  # keeps the units' outputs, not every feature map of every unit at once.
  remat: bool | str = False

  def estimate_curves(self, x: jax.Array, train: bool = False) -> jax.Array:
    raise NotImplementedError

  def output_bias_init(self) -> Callable:
    """Bias init of the layer whose tanh gives the curve maps (see `initial_curve`)."""
    if not -1.0 < self.initial_curve < 1.0:
      raise ValueError(f"{type(self).__name__}: initial_curve={self.initial_curve} must lie in "
                       "(-1, 1) (a tanh output)")
    r = self.initial_curve if self.convention == "paper" else -self.initial_curve
    return nn.initializers.constant(float(np.arctanh(r)))

  def __call__(self, x: jax.Array, train: bool = False):
    _check_images(type(self).__name__, x)
    maps = self.estimate_curves(x, train=train)
    iterates = curve_iterates(x, maps.astype(x.dtype), self.convention, self.num_iterations)
    enhanced = iterates[-1]
    return enhanced, {"curves": maps, "enhanced": enhanced,
                      "intermediate": iterates[intermediate_index(len(iterates))]}


def dce_net(conv: Callable[..., nn.Module], x: jax.Array, features: int,
            out_features: int, out_bias_init: Callable = nn.initializers.zeros_init()) -> jax.Array:
  """Zero-DCE's seven-layer skip graph with layers `conv(width, name="e_convN")`; tanh maps."""
  x1 = nn.relu(conv(features, name="e_conv1")(x))
  x2 = nn.relu(conv(features, name="e_conv2")(x1))
  x3 = nn.relu(conv(features, name="e_conv3")(x2))
  x4 = nn.relu(conv(features, name="e_conv4")(x3))
  x5 = nn.relu(conv(features, name="e_conv5")(jnp.concatenate([x3, x4], -1)))
  x6 = nn.relu(conv(features, name="e_conv6")(jnp.concatenate([x2, x5], -1)))
  return jnp.tanh(conv(out_features, name="e_conv7", bias_init=out_bias_init)(
      jnp.concatenate([x1, x6], -1)))


class ZeroDCE(_CurveEnhancer):
  """Zero-DCE curve estimator (DCE-Net), parameter-compatible with the official snapshot."""

  @nn.compact
  def estimate_curves(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(precision.Conv, kernel_size=(3, 3), padding=PAD1, dtype=self.dtype)
    return dce_net(conv, x, self.features, 3 * self.num_iterations, self.output_bias_init())


class DepthwiseSeparableConv(nn.Module):
  """3x3 depthwise conv + 1x1 pointwise conv, both with bias (Zero-DCE++ `CSDN_Tem`)."""
  features: int
  dtype: Any = None
  bias_init: Callable = nn.initializers.zeros_init()   # of the pointwise conv

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = DepthwiseConv2D((3, 3), padding=PAD1, dtype=self.dtype, name="depth_conv")(x)
    return precision.Conv(self.features, (1, 1), padding="VALID", dtype=self.dtype,
                          bias_init=self.bias_init, name="point_conv")(x)


class ZeroDCEPlusPlus(_CurveEnhancer):
  """Zero-DCE++: depthwise-separable DCE-Net, one curve map shared by all iterations."""
  downscale: int = 1

  @nn.compact
  def estimate_curves(self, x: jax.Array, train: bool = False) -> jax.Array:
    h, w = x.shape[1:3]
    s = self.downscale
    if s < 1 or h % s or w % s:
      raise ValueError(f"zero_dce_pp: frame size {(h, w)} is not divisible by downscale={s}")
    small = x if s == 1 else resize_bilinear(x, (h // s, w // s), align_corners=False)
    conv = functools.partial(DepthwiseSeparableConv, dtype=self.dtype)
    maps = dce_net(conv, small, self.features, 3, self.output_bias_init())
    return resize_bilinear(maps, (h, w), align_corners=True)


def channel_shuffle(x: jax.Array, groups: int = 2) -> jax.Array:
  """ShuffleNet channel shuffle on channels-last x (same permutation as torchvision's)."""
  *lead, c = x.shape
  x = x.reshape(tuple(lead) + (groups, c // groups))
  return jnp.swapaxes(x, -1, -2).reshape(tuple(lead) + (c,))


class ShuffleUnit(nn.Module):
  """ShuffleNetV2 unit (torchvision `InvertedResidual` layout): basic (stride 1) or down-sampling.

  `two_branch=True` keeps the down-sampling unit's two branches (both fed the whole input, so the
  input may have any channel count) at stride 1. `depthwise_bias` gives the depthwise convolutions a
  bias (torchvision's have none).
  """
  features: int
  stride: int = 1
  two_branch: bool = False
  depthwise_bias: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    branch_features = self.features // 2
    conv1x1 = functools.partial(precision.Conv, kernel_size=(1, 1), padding="VALID", use_bias=False,
                                dtype=self.dtype)
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)

    def depthwise_bn(y, name):   # BN without ReLU, as in torchvision
      y = DepthwiseConv2D((3, 3), (self.stride, self.stride), PAD1,
                          use_bias=self.depthwise_bias, dtype=self.dtype, name=name)(y)
      return norm(name=f"{name}_bn")(y)

    def pointwise_bn_relu(y, name):
      return nn.relu(norm(name=f"{name}_bn")(conv1x1(branch_features, name=name)(y)))

    if self.stride == 1 and not self.two_branch:
      if x.shape[-1] != self.features:
        raise ValueError(f"{self.name}: basic ShuffleNet unit needs {self.features} input "
                         f"channels, got {x.shape[-1]}")
      passthrough, y = jnp.split(x, 2, axis=-1)
    else:
      passthrough = pointwise_bn_relu(depthwise_bn(x, "branch1_depthwise"), "branch1_pointwise")
      y = x
    y = pointwise_bn_relu(y, "branch2_pointwise1")
    y = depthwise_bn(y, "branch2_depthwise")
    y = pointwise_bn_relu(y, "branch2_pointwise2")
    return channel_shuffle(jnp.concatenate([passthrough, y], -1), 2)


def _avg_pool(x: jax.Array, factor: int) -> jax.Array:
  """`factor` x `factor` average pool of (..., H, W, C) frames at stride `factor` (VALID); inside
  `export_lowering()` the same values as a reshape and mean, which jax2onnx converts."""
  if not conv2d.export_lowering_forced():
    return nn.avg_pool(x, (factor, factor), strides=(factor, factor))
  conv2d.note_lowering("avg_pool", "reshape_mean")
  *lead, h, w, c = x.shape
  h, w = h // factor, w // factor
  x = x[..., :h * factor, :w * factor, :].reshape((*lead, h, factor, w, factor, c))
  return x.mean(axis=(-4, -2)).astype(x.dtype)


class DTCMEnhancer(_CurveEnhancer):
  """DTCM's light curve estimator (see module docstring for the layer layout).

  full_resolution=True (default, the paper's cost: Table III / IX GFLOPs equal parameters x
  pixels) runs every layer at frame resolution, layers 5-6 as two-branch ShuffleNet units at
  stride 1. False: layers 5-6 at stride 2 (the paper's "Spatial Down Sampling" units) with 2x2 /
  4x4 average-pooled skips and the maps resized bilinearly to frame resolution (about 4x cheaper;
  H, W multiples of 4). Both forms have the same parameters, so either loads the other's weights.
  depthwise_bias=True (default) is the paper's parameter count; False drops the 208 biases, the
  layout of checkpoints written before they were added.
  """
  align_corners: bool = False
  full_resolution: bool = True
  depthwise_bias: bool = True

  @nn.compact
  def estimate_curves(self, x: jax.Array, train: bool = False) -> jax.Array:
    h, w = x.shape[1:3]
    if not self.full_resolution and (h % 4 or w % 4):
      raise ValueError(f"dtcm_enhancer: frame size {(h, w)} must be a multiple of 4 (two "
                       f"stride-2 ShuffleNet units; full_resolution=True has no such limit)")
    f = self.features
    unit = functools.partial(remat_lib.wrap(ShuffleUnit, self.remat, static_argnums=(2,)), f,
                             depthwise_bias=self.depthwise_bias, dtype=self.dtype)
    x1 = nn.relu(precision.Conv(f, (3, 3), padding=PAD1, dtype=self.dtype, name="e_conv1")(x))
    x2 = unit(name="e_conv2")(x1, train)
    x3 = unit(name="e_conv3")(x2, train)
    x4 = unit(name="e_conv4")(x3, train)
    if self.full_resolution:
      down = functools.partial(unit, stride=1, two_branch=True)
      pool2 = pool4 = lambda y: y
    else:
      down = functools.partial(unit, stride=2)
      pool2, pool4 = functools.partial(_avg_pool, factor=2), functools.partial(_avg_pool, factor=4)
    x5 = down(name="e_conv5")(jnp.concatenate([x3, x4], -1), train)
    x6 = down(name="e_conv6")(jnp.concatenate([pool2(x2), x5], -1), train)
    maps = jnp.tanh(precision.Conv(3 * self.num_iterations, (3, 3), padding=PAD1, dtype=self.dtype,
                                   bias_init=self.output_bias_init(),
                                   name="e_conv7")(jnp.concatenate([pool4(x1), x6], -1)))
    if self.full_resolution:
      return maps
    return resize_bilinear(maps, (h, w), align_corners=self.align_corners)


class VideoEnhancer(nn.Module):
  """Applies an image enhancer to clips (B, T, H, W, 3) with key-frame curve sharing.

  Curves are estimated on the middle frame of each group of `group_size` consecutive frames and
  applied to the whole group (`group_size=1`: every frame gets its own curves). Returns
  `(enhanced clip, {"curves": (B, T / group_size, H, W, C'), "intermediate", "enhanced"})`.

  `remat` (a `darkjax.layers.remat` policy) recomputes the whole enhancement, curve estimation on
  the key frames and the curve iterations over the clip, in the backward pass: only the clip is
  kept. The enhancer runs first, so its recomputation comes last in the backward pass, after the
  classifier's activations are freed; its frame-resolution feature maps were the largest part of a
  remat'd DTCM step's memory (docs/benchmarks.md).
  """
  enhancer: nn.Module
  group_size: int = 1
  remat: bool | str = False

  @nn.compact
  def __call__(self, clip: jax.Array, train: bool = False):
    if clip.ndim != 5 or clip.shape[-1] != 3:
      raise ValueError(f"VideoEnhancer: expected a clip (B, T, H, W, 3), got shape {clip.shape}")

    def enhance(enhancer: nn.Module, clip: jax.Array):
      return keyframe_curves(
          clip, lambda frames: enhancer.estimate_curves(frames, train=train), self.group_size,
          convention=enhancer.convention, num_iterations=enhancer.num_iterations)

    enhanced, out = remat_lib.wrap(enhance, self.remat)(self.enhancer, clip)
    return enhanced, dict(out, enhanced=enhanced)


def _enhancer(cls: type, name: str) -> Callable[..., nn.Module]:
  def build(num_classes: int = 0, **kwargs: Any) -> nn.Module:
    if num_classes:
      raise ValueError(f"model {name!r} is an enhancer without a classifier head: num_classes "
                       f"must be 0, got {num_classes}")
    return cls(num_classes=0, **kwargs)
  return build


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "zero_dce": _enhancer(ZeroDCE, "zero_dce"),
    "zero_dce_pp": _enhancer(ZeroDCEPlusPlus, "zero_dce_pp"),
    "dtcm_enhancer": _enhancer(DTCMEnhancer, "dtcm_enhancer"),
}
