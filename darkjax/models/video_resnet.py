"""R3D, MC3 and R(2+1)D video ResNets in the torchvision / IG65M (VMZ) parameter layouts.

Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition", CVPR 2018.
Structure follows `torchvision.models.video.resnet.VideoResNet` block for block, so torchvision and
IG65M (moabitcoin/ig65m-pytorch) state dicts convert one key to one parameter
(`darkjax.convert.video_resnet`):

- `r3d_18`: 3x3x3 convolutions everywhere; stem (3,7,7) stride (1,2,2).
- `mc3_18`: stage 1 in 3D, stages 2-4 with (1,3,3) convolutions ("mixed convolutions").
- `r2plus1d_18`: every 3x3x3 factorised into (1,3,3) -> BN -> ReLU -> (3,1,1) with
  `(in*out*27) // (in*9 + 3*out)` middle channels; stem (1,7,7) 45 ch + (3,1,1) 64 ch.
- `r2plus1d_34_ig65m`: R(2+1)D-34 ([3,4,6,3] blocks) as trained by VMZ/Caffe2 on IG-65M. Differs
  from a torchvision R(2+1)D-34 in the middle width of the first block's second convolution in
  stages 2-4 (computed from (planes, planes): 288/576/1152, torchvision computes it from (inplanes,
  planes): 230/460/921) and in BatchNorm eps 1e-3. ig65m-pytorch also sets torch BN momentum 0.9,
  which in PyTorch's convention keeps only 10% of the old running average (flax momentum 0.1);
  Caffe2's 0.9 means the opposite. We default to flax momentum 0.9 (Caffe2's meaning, the stabler
  choice for fine-tuning); pass `bn_momentum=0.1` to reproduce ig65m-pytorch's training-time
  running-stat updates exactly. Eval outputs do not depend on it.

Input: float NDHWC clips (B, T, H, W, 3), normalised. `out` holds `stem`, `stage1`..`stage4`
(NDHWC) and `features` (B, 512) pooled pre-logits; logits are float32 (B, num_classes), or the
features when `num_classes == 0`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers.conv import Conv3D
from darkjax.layers import remat as remat_lib
from darkjax.layers.norm import BatchNorm, one_pass_statistics
from darkjax.layers import precision

# Per-stage convolution types: "3d" (3,3,3), "2d" (1,3,3) no temporal extent, "2plus1d" factorised.
CONV_TYPES = ("3d", "2d", "2plus1d")
STEM_TYPES = ("3d", "2plus1d")

# torchvision's Conv3d init: kaiming normal, fan_out, relu gain.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def mid_width(in_features: int, out_features: int) -> int:
  """Middle width of an R(2+1)D factorised 3x3x3 conv: keeps the parameter count of the 3D conv."""
  return (in_features * out_features * 27) // (in_features * 9 + 3 * out_features)


class Conv2Plus1D(nn.Module):
  """(1,3,3) spatial conv -> BN -> ReLU -> (3,1,1) temporal conv (torchvision `Conv2Plus1D`)."""
  features: int
  mid_features: int
  stride: int = 1
  norm: Any = BatchNorm
  dtype: Any = None
  lowering: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.stride
    x = Conv3D(self.mid_features, (1, 3, 3), (1, s, s), ((0, 0), (1, 1), (1, 1)), dtype=self.dtype,
               kernel_init=_conv_init, lowering=self.lowering, name="spatial")(x)
    x = self.norm(name="spatial_bn", relu=True)(x)
    return Conv3D(self.features, (3, 1, 1), (s, 1, 1), ((1, 1), (0, 0), (0, 0)), dtype=self.dtype,
                  kernel_init=_conv_init, lowering=self.lowering, name="temporal")(x)


def _conv(conv_type: str, features: int, mid_features: int, stride: int, norm: Any, dtype: Any,
          lowering: str, name: str) -> nn.Module:
  s = stride
  if conv_type == "2plus1d":
    return Conv2Plus1D(features, mid_features, s, norm, dtype, lowering, name=name)
  if conv_type == "3d":
    return Conv3D(features, (3, 3, 3), (s, s, s), ((1, 1),) * 3, dtype=dtype,
                  kernel_init=_conv_init, lowering=lowering, name=name)
  return Conv3D(features, (1, 3, 3), (1, s, s), ((0, 0), (1, 1), (1, 1)), dtype=dtype,
                kernel_init=_conv_init, lowering=lowering, name=name)


class BasicBlock(nn.Module):
  """torchvision video `BasicBlock`: conv1 -> BN -> ReLU -> conv2 -> BN, + (downsampled) input."""
  features: int
  conv_type: str
  stride: int = 1
  conv1_mid: int = 0  # middle widths of the factorised convs (R(2+1)D only)
  conv2_mid: int = 0
  bn_eps: float = 1e-5
  bn_momentum: float = 0.9
  dtype: Any = None
  lowering: str = "auto"
  bn_stat_groups: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=self.bn_eps, dtype=self.dtype,
                             use_fast_variance=one_pass_statistics(),
                             stat_groups=self.bn_stat_groups)
    residual = x
    y = _conv(self.conv_type, self.features, self.conv1_mid, self.stride, norm, self.dtype,
              self.lowering, "conv1")(x)
    y = norm(name="bn1", relu=True)(y)
    y = _conv(self.conv_type, self.features, self.conv2_mid, 1, norm, self.dtype,
              self.lowering, "conv2")(y)
    y = norm(name="bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      s = self.stride
      ds_strides = (1, s, s) if self.conv_type == "2d" else (s, s, s)
      residual = Conv3D(self.features, (1, 1, 1), ds_strides, dtype=self.dtype,
                        kernel_init=_conv_init, lowering=self.lowering, name="downsample_conv")(x)
      residual = norm(name="downsample_bn")(residual)
    return nn.relu(y + residual)


class VideoResNet(nn.Module):
  """torchvision-layout video ResNet with BasicBlocks (see the module docstring)."""
  num_classes: int = 400
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  conv_types: Sequence[str] = ("3d", "3d", "3d", "3d")
  stem_type: str = "3d"
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_mid_width: int = 45  # R(2+1)D stem: (1,7,7) conv width before the (3,1,1) conv
  vmz_midplanes: bool = False  # IG65M: first block's conv2 mid width from (planes, planes)
  bn_eps: float = 1e-5
  bn_momentum: float = 0.9  # flax convention (= 1 - PyTorch momentum)
  dropout_rate: float = 0.0  # before the classifier; torchvision has none
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  conv_lowering: str = "auto"
  # > 1: BatchNorm statistics per consecutive batch part, in training and inference
  # (darkjax.layers.norm.BatchNorm `stat_groups`), e.g. two input streams run as one batch
  # through one weight-shared backbone
  bn_stat_groups: int = 1

  def _check(self) -> None:
    if len(self.stage_sizes) != 4 or len(self.conv_types) != 4 or len(self.widths) != 4:
      raise ValueError(f"VideoResNet needs 4 stages; got stage_sizes={self.stage_sizes}, "
                       f"conv_types={self.conv_types}, widths={self.widths}")
    for conv_type in self.conv_types:
      if conv_type not in CONV_TYPES:
        raise ValueError(f"VideoResNet: unknown conv type {conv_type!r}; "
                         f"expected one of {CONV_TYPES}")
    if self.stem_type not in STEM_TYPES:
      raise ValueError(f"VideoResNet: unknown stem type {self.stem_type!r}; expected {STEM_TYPES}")

  def _stem(self, x: jax.Array, train: bool) -> jax.Array:
    """The stem's convs, BatchNorms and ReLUs, under the remat policy like every block (its
    activations are at full frame count and half resolution, as large as layer 1's)."""
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=self.bn_eps, dtype=self.dtype,
                             use_fast_variance=one_pass_statistics(),
                             stat_groups=self.bn_stat_groups)
    conv = functools.partial(Conv3D, use_bias=False, dtype=self.dtype, kernel_init=_conv_init,
                             lowering=self.conv_lowering)
    stem_width = self.widths[0]
    if self.stem_type == "3d":
      x = conv(stem_width, (3, 7, 7), (1, 2, 2), ((1, 1), (3, 3), (3, 3)), name="stem_conv")(x)
      return norm(name="stem_bn", relu=True)(x)
    x = conv(self.stem_mid_width, (1, 7, 7), (1, 2, 2), ((0, 0), (3, 3), (3, 3)),
             name="stem_spatial")(x)
    x = norm(name="stem_spatial_bn", relu=True)(x)
    x = conv(stem_width, (3, 1, 1), (1, 1, 1), ((1, 1), (0, 0), (0, 0)), name="stem_temporal")(x)
    return norm(name="stem_temporal_bn", relu=True)(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    self._check()
    if x.ndim != 5:
      raise ValueError(f"VideoResNet expects NDHWC clips (B, T, H, W, C); got shape {x.shape}")
    out: dict[str, jax.Array] = {}
    x = x.astype(self.dtype)
    stem_width = self.widths[0]
    x = remat_lib.wrap(VideoResNet._stem, self.remat, static_argnums=(2,))(self, x, train)
    out["stem"] = x

    block_cls = remat_lib.wrap(BasicBlock, self.remat, static_argnums=(2,))
    in_width = stem_width
    for stage, (num_blocks, conv_type, width) in enumerate(
        zip(self.stage_sizes, self.conv_types, self.widths)):
      for index in range(num_blocks):
        stride = 2 if stage > 0 and index == 0 else 1
        conv1_mid = mid_width(in_width, width)
        conv2_mid = mid_width(width, width) if self.vmz_midplanes else conv1_mid
        x = block_cls(width, conv_type, stride, conv1_mid, conv2_mid, self.bn_eps, self.bn_momentum,
                      self.dtype, self.conv_lowering, self.bn_stat_groups,
                      name=f"layer{stage + 1}_{index}")(x, train)
        in_width = width
      out[f"stage{stage + 1}"] = x

    features = jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2, 3))
    out["features"] = features
    if not self.num_classes:
      return features, out
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = precision.Dense(self.num_classes, dtype=self.dtype,
                             kernel_init=nn.initializers.normal(0.01), name="fc")(features)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    out["logits"] = logits
    return logits, out


_R18 = (2, 2, 2, 2)
_R34 = (3, 4, 6, 3)

VARIANTS = {
    "r3d_18": functools.partial(VideoResNet, stage_sizes=_R18, conv_types=("3d",) * 4),
    "mc3_18": functools.partial(VideoResNet, stage_sizes=_R18,
                                conv_types=("3d", "2d", "2d", "2d")),
    "r2plus1d_18": functools.partial(VideoResNet, stage_sizes=_R18, conv_types=("2plus1d",) * 4,
                                     stem_type="2plus1d"),
    "r2plus1d_34_ig65m": functools.partial(VideoResNet, stage_sizes=_R34,
                                           conv_types=("2plus1d",) * 4, stem_type="2plus1d",
                                           vmz_midplanes=True, bn_eps=1e-3),
    # Tiny R(2+1)D with every feature of the family (2+1D stem, factorised convs, downsampling) for
    # fast tests.
    "r2plus1d_tiny_test": functools.partial(VideoResNet, stage_sizes=(1, 1, 1, 1),
                                            conv_types=("2plus1d",) * 4, stem_type="2plus1d",
                                            widths=(8, 16, 24, 32), stem_mid_width=6),
}
