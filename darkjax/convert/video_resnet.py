"""torchvision / IG65M video ResNet state dicts -> `darkjax.models.video_resnet` variables.

Both torchvision (`r3d_18`, `mc3_18`, `r2plus1d_18`) and moabitcoin/ig65m-pytorch (`r2plus1d_34_*`)
use `torchvision.models.video.resnet.VideoResNet` key names:

  stem.0 (conv) stem.1 (BN)                     R3D / MC3 stem
  stem.0, stem.1, stem.3, stem.4                R(2+1)D stem: spatial conv/BN, temporal conv/BN
  layerL.B.conv{1,2}.0.weight                   3D or (1,3,3) conv
  layerL.B.conv{1,2}.0.{0,1,3}                  R(2+1)D factorised conv: spatial, BN, temporal
  layerL.B.conv{1,2}.1                          BN after the conv
  layerL.B.downsample.{0,1}                     1x1x1 conv + BN
  fc.weight, fc.bias                            classifier

`module.` / `_orig_mod.` prefixes and `num_batches_tracked` are ignored. If `num_classes` is None
the checkpoint's head is kept; if it differs from the checkpoint's head (or is 0), `fc` is left out
of the result and the training config re-initialises it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from darkjax.convert.common import conv_kernel, linear_kernel, merge_strict, normalise_state_dict
from darkjax.models import video_resnet

NAMES = tuple(video_resnet.VARIANTS)
# torchvision's video models and IG65M (ig65m-pytorch) both read [0, 1] RGB normalised by
# mean (0.43216, 0.394666, 0.37645), std (0.22803, 0.22145, 0.216989).
INPUT_NORMALISE = "ig65m"

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}

# torchvision module path (without the trailing .weight etc.) -> darkjax module path.
_STEM_3D = {"stem.0": "stem_conv", "stem.1": "stem_bn"}
_STEM_2PLUS1D = {"stem.0": "stem_spatial", "stem.1": "stem_spatial_bn",
                 "stem.3": "stem_temporal", "stem.4": "stem_temporal_bn"}
_BLOCK_PATTERNS = (
    (re.compile(r"^layer(\d)\.(\d+)\.conv([12])\.0\.0$"), "layer{0}_{1}/conv{2}/spatial"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv([12])\.0\.1$"), "layer{0}_{1}/conv{2}/spatial_bn"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv([12])\.0\.3$"), "layer{0}_{1}/conv{2}/temporal"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv([12])\.0$"), "layer{0}_{1}/conv{2}"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv([12])\.1$"), "layer{0}_{1}/bn{2}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0$"), "layer{0}_{1}/downsample_conv"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1$"), "layer{0}_{1}/downsample_bn"),
    (re.compile(r"^(fc)$"), "fc"),
)


def _module_path(torch_module: str, stem_type: str) -> str | None:
  stem = _STEM_3D if stem_type == "3d" else _STEM_2PLUS1D
  if torch_module in stem:
    return stem[torch_module]
  for pattern, template in _BLOCK_PATTERNS:
    match = pattern.match(torch_module)
    if match:
      return template.format(*match.groups())
  return None


def _is_batchnorm(module_path: str) -> bool:
  return module_path.endswith("_bn") or re.search(r"/bn[12]$", module_path) is not None


def _target(key: str, value: np.ndarray, stem_type: str) -> tuple[str, np.ndarray] | None:
  """Flat darkjax path ("params/layer1_0/conv1/kernel") and value for torch entry `key`."""
  torch_module, _, field = key.rpartition(".")
  module_path = _module_path(torch_module, stem_type)
  if module_path is None:
    return None
  if module_path == "fc":
    if field == "weight" and value.ndim == 2:
      return "params/fc/kernel", linear_kernel(value)
    return ("params/fc/bias", value) if field == "bias" else None
  if _is_batchnorm(module_path):
    if field not in _BN_FIELDS:
      return None
    collection, leaf = _BN_FIELDS[field]
    return f"{collection}/{module_path}/{leaf}", value
  if field == "weight" and value.ndim == 5:
    return f"params/{module_path}/kernel", conv_kernel(value)
  return None


def _checkpoint_classes(weights: Mapping[str, np.ndarray]) -> int:
  if "fc.weight" not in weights:
    return 0
  return int(weights["fc.weight"].shape[0])


def expected_variables(name: str, num_classes: int, **model_kwargs: Any) -> dict:
  """Shapes of the model's variables (no compilation, no allocation)."""
  model = video_resnet.VARIANTS[name](num_classes=num_classes, **model_kwargs)
  clip = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), clip)


def convert(name: str, state_dict: Mapping[str, Any], num_classes: int | None = None,
            **model_kwargs: Any) -> dict:
  """torchvision-layout state dict -> {"params", "batch_stats"} for `video_resnet.VARIANTS[name]`.

  `num_classes`: None keeps the checkpoint's head; any other size (or 0) leaves `fc` out.
  `model_kwargs` are the model overrides the config uses (they shape the expected tree).
  Raises ConversionError listing every missing, unexpected, mis-shaped or unused entry; source keys
  that map to no parameter of the model are reported under their PyTorch names.
  """
  if name not in video_resnet.VARIANTS:
    raise ValueError(f"convert.video_resnet: unknown model {name!r}; known: {sorted(NAMES)}")
  weights = normalise_state_dict(state_dict)
  checkpoint_classes = _checkpoint_classes(weights)
  if num_classes is None:
    num_classes = checkpoint_classes
  keep_head = num_classes == checkpoint_classes and num_classes > 0
  stem_type = model_kwargs.get("stem_type",
                               video_resnet.VARIANTS[name].keywords.get("stem_type", "3d"))
  expected = expected_variables(name, num_classes if keep_head else 0, **model_kwargs)
  known_paths = set(traverse_util.flatten_dict(expected, sep="/"))

  converted: dict[str, np.ndarray] = {}
  unused: list[str] = []
  for key, value in weights.items():
    target = _target(key, value, stem_type)
    if target is not None and target[0].startswith("params/fc/") and not keep_head:
      continue  # head of another size: left out on purpose, the config re-initialises it
    if target is None or target[0] not in known_paths:
      unused.append(key)
      continue
    converted[target[0]] = target[1]
  return merge_strict(expected, traverse_util.unflatten_dict(converted, sep="/"), unused, name)
