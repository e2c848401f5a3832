"""3D-ResNet and 3D-ResNeXt in the layout of Hara et al.'s released Kinetics checkpoints.

Reference: K. Hara, H. Kataoka, Y. Satoh, "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs
and ImageNet?" (CVPR 2018), code kenshohara/3D-ResNets-PyTorch and
kenshohara/video-classification-3d-cnn-pytorch. Layout:

  conv1 7x7x7, 64, stride (1, 2, 2), padding 3 -> BN -> ReLU -> maxpool 3x3x3 stride 2 padding 1
  layer1..layer4 (stride 1, 2, 2, 2 in all three dimensions) -> global average pool -> fc

Blocks: `BasicBlock` (ResNet-10/18/34), `Bottleneck` (expansion 4, ResNet-50/101/152) and
`ResNeXtBottleneck` (expansion 2, grouped 3x3x3 conv with `cardinality * planes // 32` channels).
Shortcut type 'A' is the parameter-free identity: stride-`s` subsampling in T, H and W, channels
zero-padded; type 'B' is conv1x1x1 (stride s) + BN. The released checkpoints use 'A' for depths
10/18/34 and 'B' for the others, which are the defaults here. (The reference computes the type-A
shortcut on `.data`, so no gradient flows through it there; here it does, as in the paper.)

Parameter tree (the converter in `darkjax.convert.resnet3d` maps torch keys onto it):
  conv1, bn1, layer{i}/block0/{conv1,bn1,conv2,bn2[,conv3,bn3][,downsample_conv,downsample_bn]},
  layer{i}/rest/... the remaining identical blocks of a stage, stacked along a leading axis by
  `nn.scan` (one compiled block body per stage instead of one per block), fc.
`out` holds `stem` (after the max pool), `stage1`..`stage4` and `features` (pooled, pre-fc); logits
are float32 whatever the compute `dtype`. The global pool is adaptive (mean over T, H, W), which
equals the reference's fixed AvgPool3d at its 16x112x112 training size. BatchNorm: torch momentum
0.1 = flax momentum 0.9, eps 1e-5, running variances from the unbiased batch variance as torch's
(darkjax.layers.norm.BatchNorm).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers.conv import LOWERINGS, Conv3D, max_pool3d, network_lowering
from darkjax.layers import remat as remat_lib
from darkjax.layers.scanned import scanned
from darkjax.layers.norm import BatchNorm
from darkjax.models.heads import classifier_head, global_average_pool

SHORTCUT_TYPES = ("A", "B")


def _pads(kernel: int) -> tuple[tuple[int, int], ...]:
  return ((kernel // 2, kernel // 2),) * 3


class _BlockBase(nn.Module):
  """Shared fields of residual blocks; `train` is an attribute so blocks can be scanned."""
  planes: int
  stride: int = 1
  downsample: str | None = None  # None, 'A' or 'B'
  cardinality: int = 32
  train: bool = False
  dtype: Any = jnp.float32
  conv_lowering: str = "auto"

  def conv(self, features: int, kernel: int, name: str, stride: int = 1, groups: int = 1):
    return Conv3D(features, (kernel,) * 3, strides=(stride,) * 3, padding=_pads(kernel),
                  feature_group_count=groups, dtype=self.dtype, lowering=self.conv_lowering,
                  name=name)

  def norm(self, name: str, relu: bool = False):
    return BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, relu=relu, name=name)

  def shortcut(self, x: jax.Array, out_features: int) -> jax.Array:
    if self.downsample is None:
      return x
    if self.downsample == "A":
      s = self.stride
      x = x[:, ::s, ::s, ::s, :]
      pad = out_features - x.shape[-1]
      if pad < 0:
        raise ValueError(f"{self.name}: type-A shortcut cannot shrink {x.shape[-1]} channels "
                         f"to {out_features}")
      return jnp.pad(x, ((0, 0),) * 4 + ((0, pad),))
    if self.downsample == "B":
      y = self.conv(out_features, 1, "downsample_conv", stride=self.stride)(x)
      return self.norm("downsample_bn")(y)
    raise ValueError(f"{self.name}: unknown shortcut type {self.downsample!r}; "
                     f"expected one of {SHORTCUT_TYPES}")

  @nn.compact
  def __call__(self, x: jax.Array, _: Any = None) -> tuple[jax.Array, None]:
    """Returns `(y, None)` so the same module can be the body of `nn.scan`."""
    y = self.residual(x)
    y = nn.relu(y + self.shortcut(x, y.shape[-1]).astype(y.dtype))
    return y, None


class BasicBlock(_BlockBase):
  expansion = 1

  def residual(self, x: jax.Array) -> jax.Array:
    y = self.norm("bn1", relu=True)(self.conv(self.planes, 3, "conv1", stride=self.stride)(x))
    return self.norm("bn2")(self.conv(self.planes, 3, "conv2")(y))


class Bottleneck(_BlockBase):
  expansion = 4

  def residual(self, x: jax.Array) -> jax.Array:
    y = self.norm("bn1", relu=True)(self.conv(self.planes, 1, "conv1")(x))
    y = self.norm("bn2", relu=True)(self.conv(self.planes, 3, "conv2", stride=self.stride)(y))
    return self.norm("bn3")(self.conv(self.planes * self.expansion, 1, "conv3")(y))


class ResNeXtBottleneck(_BlockBase):
  expansion = 2

  def residual(self, x: jax.Array) -> jax.Array:
    width = self.cardinality * (self.planes // 32)
    y = self.norm("bn1", relu=True)(self.conv(width, 1, "conv1")(x))
    y = self.conv(width, 3, "conv2", stride=self.stride, groups=self.cardinality)(y)
    y = self.norm("bn2", relu=True)(y)
    return self.norm("bn3")(self.conv(self.planes * self.expansion, 1, "conv3")(y))


BLOCKS: dict[str, type[_BlockBase]] = {
    "basic": BasicBlock, "bottleneck": Bottleneck, "resnext": ResNeXtBottleneck}


class ResNetStage(nn.Module):
  """One `layerN`: a first block (stride, shortcut), then `num_blocks - 1` identical blocks
  scanned with `nn.scan` (one compiled body per stage)."""
  block: type[_BlockBase]
  planes: int
  num_blocks: int
  stride: int
  in_features: int
  shortcut_type: str = "B"
  cardinality: int = 32
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  conv_lowering: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_features = self.planes * self.block.expansion
    downsample = None
    if self.stride != 1 or self.in_features != out_features:
      downsample = self.shortcut_type
    block_cls = remat_lib.wrap(self.block, self.remat)
    common = dict(planes=self.planes, cardinality=self.cardinality, train=train,
                  dtype=self.dtype, conv_lowering=self.conv_lowering)
    x, _ = block_cls(stride=self.stride, downsample=downsample, name="block0", **common)(x)
    if self.num_blocks > 1:
      stage = scanned(block_cls, variable_axes={"params": 0, "batch_stats": 0},
                      split_rngs={"params": True, "dropout": True}, length=self.num_blocks - 1)
      x, _ = stage(name="rest", **common)(x, None)
    return x


class ResNet3D(nn.Module):
  """Hara-layout 3D-ResNet / 3D-ResNeXt. `num_classes=0` gives a feature extractor (no fc)."""
  num_classes: int
  block: str = "basic"
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_width: int = 64
  shortcut_type: str = "B"
  cardinality: int = 32
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  conv_lowering: str = "auto"
  # conv1's lowering: "" = `conv_lowering` for its kernel alone (on a GPU, "auto" gives a full
  # ungrouped kernel a channels-last 2D convolution, frames2d, in 3D-ResNeXt too; see __call__),
  # else one of darkjax.layers.conv.LOWERINGS ("native": XLA's 3D convolution)
  stem_lowering: str = ""

  def _stem(self, x: jax.Array, train: bool, lowering: str) -> jax.Array:
    """conv1 -> bn1 -> ReLU -> max pool, under the remat policy like every block (conv1's output,
    at full frame count and half resolution, is the network's largest activation)."""
    x = Conv3D(self.stem_width, (7, 7, 7), strides=(1, 2, 2), padding=((3, 3),) * 3,
               dtype=self.dtype, lowering=lowering, name="conv1")(x)
    x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                  relu=True, name="bn1")(x)
    # conv_lowering="native" means XLA's own ops throughout, the pool included.
    return max_pool3d(x, (3, 3, 3), (2, 2, 2), ((1, 1),) * 3,
                      lowering="native" if lowering == "native" else "auto")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    if x.ndim != 5:
      raise ValueError(f"{type(self).__name__}: expected (B, T, H, W, C) clips, got shape "
                       f"{x.shape}")
    if self.block not in BLOCKS:
      raise ValueError(f"unknown block {self.block!r}; expected one of {sorted(BLOCKS)}")
    if self.shortcut_type not in SHORTCUT_TYPES:
      raise ValueError(f"unknown shortcut_type {self.shortcut_type!r}; "
                       f"expected one of {SHORTCUT_TYPES}")
    if self.stem_lowering and self.stem_lowering not in LOWERINGS:
      raise ValueError(f"unknown stem_lowering {self.stem_lowering!r}; expected '' (the "
                       f"network's conv_lowering) or one of {LOWERINGS}")
    block = BLOCKS[self.block]
    out: dict[str, jax.Array] = {}
    # 3D-ResNeXt's convs: XLA's native ops, channels-last, on a GPU (conv.network_lowering),
    # except conv1: a 7x7x7 kernel on the clip's 3 channels, which cuDNN's channels-first 3D
    # kernels ran at 3.5% of an H100's bf16 peak, 22% of the 3D-ResNeXt-101 step
    # (docs/benchmarks.md), against C3D's frames2d convolutions at 30%: a channels-last 2D one.
    lowering = network_lowering(self.conv_lowering, grouped=block is ResNeXtBottleneck)
    stem = remat_lib.wrap(ResNet3D._stem, self.remat, static_argnums=(2, 3))
    x = stem(self, x, train, self.stem_lowering or self.conv_lowering)
    out["stem"] = x
    in_features = self.stem_width
    for i, (num_blocks, planes) in enumerate(zip(self.stage_sizes, self.widths)):
      x = ResNetStage(block, planes, num_blocks, stride=1 if i == 0 else 2,
                      in_features=in_features, shortcut_type=self.shortcut_type,
                      cardinality=self.cardinality, dtype=self.dtype, remat=self.remat,
                      conv_lowering=lowering, name=f"layer{i + 1}")(x, train)
      in_features = planes * block.expansion
      out[f"stage{i + 1}"] = x
    return classifier_head(global_average_pool(x), out, self.num_classes, name="fc",
                           dtype=self.dtype)


def _variant(block: str, stage_sizes: Sequence[int], shortcut_type: str,
             **fixed: Any) -> Callable[..., ResNet3D]:
  def build(num_classes: int, **kwargs: Any) -> ResNet3D:
    kwargs = {"shortcut_type": shortcut_type, **fixed, **kwargs}   # e.g. narrower widths
    return ResNet3D(num_classes=num_classes, block=block, stage_sizes=tuple(stage_sizes),
                    **kwargs)
  return build


_RESNEXT_WIDTHS = (128, 256, 512, 1024)

# Default shortcut types are those of the released Kinetics checkpoints.
VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "resnet3d_10": _variant("basic", (1, 1, 1, 1), "A"),
    "resnet3d_18": _variant("basic", (2, 2, 2, 2), "A"),
    "resnet3d_34": _variant("basic", (3, 4, 6, 3), "A"),
    "resnet3d_50": _variant("bottleneck", (3, 4, 6, 3), "B"),
    "resnet3d_101": _variant("bottleneck", (3, 4, 23, 3), "B"),
    "resnet3d_152": _variant("bottleneck", (3, 8, 36, 3), "B"),
    "resnext3d_101": _variant("resnext", (3, 4, 23, 3), "B", widths=_RESNEXT_WIDTHS),
    # Tiny variants for tests: same code paths, few channels.
    "resnet3d_tiny": _variant("basic", (1, 3, 1, 1), "A", widths=(8, 16, 16, 32), stem_width=8),
    "resnext3d_tiny": _variant("resnext", (1, 3, 1, 1), "B", widths=(32, 64, 64, 64),
                               stem_width=8, cardinality=4),
}

# Names of the torch-layout stage modules, for converters and tests.
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")

__all__ = ["ResNet3D", "ResNetStage", "BasicBlock", "Bottleneck", "ResNeXtBottleneck", "VARIANTS",
           "BLOCKS", "SHORTCUT_TYPES", "STAGE_NAMES"]
