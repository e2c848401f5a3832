"""PyTorch reference networks for parity tests and `darkjax.tools.bench --vs-torch`.

Written from the published layer descriptions (module names match the released checkpoints, so
their state dicts have the same keys):
  * `HaraResNet`: kenshohara/3D-ResNets-PyTorch ResNet / ResNeXt (conv1 7x7x7, maxpool, layer1..4,
    fc). Differences from the original: the global pool is adaptive (the original's fixed
    AvgPool3d equals it at 16x112x112), and the type-A shortcut keeps its gradient (the original
    concatenates `out.data`, which detaches it).
  * `C3DTorch`: the common PyTorch port of C3D (conv1..conv5b, fc6..fc8), with configurable widths
    and fc6 input size so small inputs work; `pooling="caffe"` pools in ceil mode without pool5's
    padding, as the Caffe model the port's weights came from (darkjax.models.c3d).
  * `ig65m_r2plus1d`: R(2+1)D-34 as moabitcoin/ig65m-pytorch builds it from torchvision's
    VideoResNet: the first block of stages 2-4 keeps VMZ's mid-plane count in its second conv,
    BatchNorm eps 1e-3 (its state dicts convert with `darkjax.convert --arch r2plus1d_34_ig65m`).
  * `timm_vit`: a ViT in timm's layout (patch_embed.proj, cls_token, pos_embed, blocks.<i>.{norm1,
    attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head); forward returns (logits, tokens).
Requires torch (imported at module import).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class _ShortcutA(nn.Module):
  def __init__(self, planes: int, stride: int):
    super().__init__()
    self.planes, self.stride = planes, stride

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
    pad = out.new_zeros((out.size(0), self.planes - out.size(1)) + tuple(out.shape[2:]))
    return torch.cat([out, pad], dim=1)


class BasicBlockTorch(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, cardinality=32):
    super().__init__()
    self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm3d(planes)
    self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm3d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu(out + residual)


class BottleneckTorch(nn.Module):
  expansion = 4
  grouped = False  # ResNeXt: grouped 3x3x3 conv, width cardinality * planes / 32

  def __init__(self, inplanes, planes, stride=1, downsample=None, cardinality=32):
    super().__init__()
    width = cardinality * int(planes / 32) if self.grouped else planes
    groups = cardinality if self.grouped else 1
    self.conv1 = nn.Conv3d(inplanes, width, 1, bias=False)
    self.bn1 = nn.BatchNorm3d(width)
    self.conv2 = nn.Conv3d(width, width, 3, stride, 1, groups=groups, bias=False)
    self.bn2 = nn.BatchNorm3d(width)
    self.conv3 = nn.Conv3d(width, planes * self.expansion, 1, bias=False)
    self.bn3 = nn.BatchNorm3d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu(out + residual)


class ResNeXtBottleneckTorch(BottleneckTorch):
  expansion = 2
  grouped = True


TORCH_BLOCKS = {"basic": BasicBlockTorch, "bottleneck": BottleneckTorch,
                "resnext": ResNeXtBottleneckTorch}


class HaraResNet(nn.Module):
  def __init__(self, block: str, layers: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512),
               stem_width: int = 64, shortcut_type: str = "B", cardinality: int = 32,
               num_classes: int = 400):
    super().__init__()
    block_cls = TORCH_BLOCKS[block]
    self.inplanes = stem_width
    self.conv1 = nn.Conv3d(3, stem_width, 7, (1, 2, 2), 3, bias=False)
    self.bn1 = nn.BatchNorm3d(stem_width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool3d(3, 2, 1)
    for i, (n, planes) in enumerate(zip(layers, widths)):
      layer = self._make_layer(block_cls, planes, n, shortcut_type, cardinality, 1 if i == 0 else 2)
      setattr(self, f"layer{i + 1}", layer)
    self.avgpool = nn.AdaptiveAvgPool3d(1)
    self.fc = nn.Linear(widths[-1] * block_cls.expansion, num_classes)

  def _make_layer(self, block_cls, planes, blocks, shortcut_type, cardinality, stride):
    out_planes = planes * block_cls.expansion
    downsample = None
    if stride != 1 or self.inplanes != out_planes:
      if shortcut_type == "A":
        downsample = _ShortcutA(out_planes, stride)
      else:
        downsample = nn.Sequential(nn.Conv3d(self.inplanes, out_planes, 1, stride, bias=False),
                                   nn.BatchNorm3d(out_planes))
    layers = [block_cls(self.inplanes, planes, stride, downsample, cardinality)]
    self.inplanes = out_planes
    layers += [block_cls(out_planes, planes, 1, None, cardinality) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


class C3DTorch(nn.Module):
  def __init__(self, num_classes: int = 487,
               widths: Sequence[int] = (64, 128, 256, 256, 512, 512, 512, 512),
               fc_width: int = 4096, fc_in: int = 8192, pooling: str = "port"):
    super().__init__()
    names = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
    cin = 3
    for name, width in zip(names, widths):
      setattr(self, name, nn.Conv3d(cin, width, 3, padding=1))
      cin = width
    # "port": the port's pools; "caffe": Caffe's ceil mode, no padding (darkjax.models.c3d)
    ceil = {"port": False, "caffe": True}[pooling]
    self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2), ceil_mode=ceil)
    self.pool2 = nn.MaxPool3d(2, 2, ceil_mode=ceil)
    self.pool3 = nn.MaxPool3d(2, 2, ceil_mode=ceil)
    self.pool4 = nn.MaxPool3d(2, 2, ceil_mode=ceil)
    self.pool5 = (nn.MaxPool3d(2, 2, ceil_mode=True) if ceil
                  else nn.MaxPool3d(2, 2, padding=(0, 1, 1)))
    self.fc6 = nn.Linear(fc_in, fc_width)
    self.fc7 = nn.Linear(fc_width, fc_width)
    self.fc8 = nn.Linear(fc_width, num_classes)
    self.dropout = nn.Dropout(0.5)
    self.relu = nn.ReLU()

  def forward(self, x):
    r = self.relu
    x = self.pool1(r(self.conv1(x)))
    x = self.pool2(r(self.conv2(x)))
    x = self.pool3(r(self.conv3b(r(self.conv3a(x)))))
    x = self.pool4(r(self.conv4b(r(self.conv4a(x)))))
    x = self.pool5(r(self.conv5b(r(self.conv5a(x)))))
    x = torch.flatten(x, 1)
    x = self.dropout(r(self.fc6(x)))
    x = self.dropout(r(self.fc7(x)))
    return self.fc8(x)


def ig65m_r2plus1d(num_classes: int, layers: Sequence[int] = (3, 4, 6, 3)) -> nn.Module:
  """torchvision VideoResNet in the IG65M R(2+1)D-34 layout (`layers` blocks per stage)."""
  from torchvision.models.video import resnet as tv_resnet  # pylint: disable=import-outside-toplevel
  model = tv_resnet.VideoResNet(tv_resnet.BasicBlock, [tv_resnet.Conv2Plus1D] * 4, list(layers),
                                tv_resnet.R2Plus1dStem, num_classes=num_classes)
  for layer, width, mid in ((model.layer2, 128, 288), (model.layer3, 256, 576),
                            (model.layer4, 512, 1152)):
    layer[0].conv2[0] = tv_resnet.Conv2Plus1D(width, width, mid)
  for module in model.modules():
    if isinstance(module, nn.BatchNorm3d):
      module.eps, module.momentum = 1e-3, 0.1
  return model


class _ViTAttention(nn.Module):
  def __init__(self, width: int, num_heads: int, qkv_bias: bool = True):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
    self.proj = nn.Linear(width, width)

  def forward(self, x):
    b, n, c = x.shape
    heads = self.num_heads
    q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attention = (q @ k.transpose(-2, -1) / math.sqrt(c // heads)).softmax(-1)
    return self.proj((attention @ v).transpose(1, 2).reshape(b, n, c))


class _ViTMlp(nn.Module):
  def __init__(self, width: int, mlp_dim: int):
    super().__init__()
    self.fc1, self.act, self.fc2 = nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class _ViTBlock(nn.Module):
  def __init__(self, width: int, mlp_dim: int, num_heads: int, qkv_bias: bool = True):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=1e-6)
    self.attn = _ViTAttention(width, num_heads, qkv_bias)
    self.norm2, self.mlp = nn.LayerNorm(width, eps=1e-6), _ViTMlp(width, mlp_dim)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
  def __init__(self, width: int, depth: int, mlp_dim: int, num_heads: int, patch_size: int,
               image_size: int, num_classes: int, qkv_bias: bool = True):
    super().__init__()
    self.patch_embed = nn.Module()
    self.patch_embed.proj = nn.Conv2d(3, width, patch_size, patch_size)
    tokens = (image_size // patch_size) ** 2 + 1
    self.cls_token = nn.Parameter(torch.randn(1, 1, width))
    self.pos_embed = nn.Parameter(torch.randn(1, tokens, width) * 0.5)
    self.blocks = nn.ModuleList([_ViTBlock(width, mlp_dim, num_heads, qkv_bias)
                                 for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, num_classes)

  def forward(self, images, num_blocks=None):
    x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
    for block in self.blocks[:num_blocks]:
      x = block(x)
    x = self.norm(x)
    return self.head(x[:, 0]), x


def timm_vit(width: int, depth: int, mlp_dim: int, num_heads: int, patch_size: int,
             image_size: int, num_classes: int, seed: int = 0, qkv_bias: bool = True) -> TimmViT:
  """A random timm-layout ViT in eval mode, LayerNorm affine parameters randomised too;
  `qkv_bias=False` as timm's `vit_base_patch16_224_miil_in21k` (ImageNet-21K-P)."""
  torch.manual_seed(seed)
  model = TimmViT(width, depth, mlp_dim, num_heads, patch_size, image_size, num_classes, qkv_bias)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.LayerNorm):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
  return model.eval()


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and BatchNorm running statistics (so eval-mode BN is not the identity)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm3d):
        module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=gen))
        module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=gen))
        module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
  return model
