"""Hara et al. 3D-ResNet / 3D-ResNeXt state dicts -> `darkjax.models.resnet3d` variables.

Torch keys (optionally under `module.`; `num_batches_tracked` ignored):
  conv1.weight, bn1.*, layer{i}.{j}.conv{k}.weight, layer{i}.{j}.bn{k}.*,
  layer{i}.0.downsample.0.weight / .1.* (shortcut type B only), fc.weight, fc.bias.
Block 0 of each stage maps to `layer{i}/block0`, blocks 1.. are stacked into `layer{i}/rest`.

The shortcut type is read from the checkpoint (downsample convolutions present -> 'B'); when it
differs from the variant's default, build the model with `model_kwargs(name, state_dict)`.
Head: `num_classes=None` keeps the checkpoint's fc; a different `num_classes` (or 0) leaves `fc`
out of the result so the caller initialises it fresh (configs list it in their dont-load patterns).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from darkjax.convert.common import (ConversionError, conv_kernel, linear_kernel, merge_strict,
                                    normalise_state_dict)
from darkjax.models import resnet3d

NAMES = tuple(name for name in resnet3d.VARIANTS)
# The first release's Kinetics weights (resnet-*-kinetics.pth, resnext-101-kinetics.pth; main.py
# of that time: `Normalize(get_mean(norm_value=1), [1, 1, 1])`): 0-255 RGB minus the ActivityNet
# mean. The 2020 release (r3d50_K_200ep.pth, ...) is `--input-normalise kinetics_2020`.
INPUT_NORMALISE = "activitynet_mean"

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_KEY = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.0|downsample\.1)\.(\w+)$")


def shortcut_type(state: Mapping[str, Any]) -> str:
  return "B" if any(".downsample.0.weight" in key for key in state) else "A"


def model_kwargs(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Keyword arguments of `darkjax.models.build(name, ...)` the converted variables fit."""
  return {"shortcut_type": shortcut_type(normalise_state_dict(state_dict))}


def head_classes(state: Mapping[str, np.ndarray], head: str, num_classes: int | None) -> int:
  """Classes of the head to convert: the checkpoint's, or 0 (head left out) when they differ."""
  ckpt_classes = int(state[f"{head}.weight"].shape[0]) if f"{head}.weight" in state else None
  if num_classes is None:
    if ckpt_classes is None:
      raise ConversionError(f"checkpoint has no {head}.weight; pass num_classes (0: no head)")
    return ckpt_classes
  return num_classes if num_classes == ckpt_classes else 0


def _put(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  for part in path[:-1]:
    tree = tree.setdefault(part, {})
  tree[path[-1]] = value


def _module_leaf(module: str, field: str) -> tuple[str, str, str] | None:
  """(collection, flax module name, flax leaf name) for a torch `module.field` inside a block."""
  flax_module = {"downsample.0": "downsample_conv",
                 "downsample.1": "downsample_bn"}.get(module, module)
  if flax_module.startswith("conv") or flax_module == "downsample_conv":
    return ("params", flax_module, "kernel") if field == "weight" else None
  if field in _BN_FIELDS:
    collection, leaf = _BN_FIELDS[field]
    return collection, flax_module, leaf
  return None


def convert(name: str, state_dict: Mapping[str, Any], num_classes: int | None = None) -> dict:
  if name not in NAMES:
    raise ConversionError(f"{name!r} is not a 3D-ResNet variant; known: {NAMES}")
  state = normalise_state_dict(state_dict)
  classes = head_classes(state, "fc", num_classes)
  keep_head = classes > 0
  model = resnet3d.VARIANTS[name](classes, shortcut_type=shortcut_type(state))
  expected = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)), train=False))

  converted: dict = {}
  unused: list[str] = []
  rest_blocks: dict[tuple[str, str, str, str], dict[int, np.ndarray]] = {}
  rest_keys: dict[tuple[str, str, str, str], dict[int, str]] = {}   # their torch keys
  for key, value in state.items():
    if key == "conv1.weight":
      _put(converted, ("params", "conv1", "kernel"), conv_kernel(value))
    elif key.startswith("bn1.") and key[4:] in _BN_FIELDS:
      collection, leaf = _BN_FIELDS[key[4:]]
      _put(converted, (collection, "bn1", leaf), value)
    elif key in ("fc.weight", "fc.bias"):
      if keep_head:
        _put(converted, ("params", "fc", "kernel" if key == "fc.weight" else "bias"),
             linear_kernel(value) if key == "fc.weight" else value)
    elif (match := _KEY.match(key)) and (leaf := _module_leaf(match[3], match[4])):
      stage, index = f"layer{match[1]}", int(match[2])
      collection, module, leaf_name = leaf
      value = conv_kernel(value) if leaf_name == "kernel" else value
      if index == 0:
        _put(converted, (collection, stage, "block0", module, leaf_name), value)
      else:
        rest_blocks.setdefault((collection, stage, module, leaf_name), {})[index] = value
        rest_keys.setdefault((collection, stage, module, leaf_name), {})[index] = key
    else:
      unused.append(key)

  # Blocks 1.. of a stage are stacked into one scanned parameter: name each torch key the model's
  # block count needs that the checkpoint lacks, and leave blocks beyond it unused.
  missing: list[str] = []
  for group, by_index in rest_blocks.items():
    collection, stage, module, leaf_name = group
    try:
      count = expected[collection][stage]["rest"][module][leaf_name].shape[0]
    except (KeyError, TypeError):
      continue   # not in the model: merge_strict reports it
    known = rest_keys[group]
    some = known[min(known)]
    lacking = [re.sub(rf"^{stage}\.\d+\.", f"{stage}.{i}.", some) for i in range(1, count + 1)
               if i not in by_index]
    for i in [i for i in by_index if i > count]:
      unused.append(known[i])
      del by_index[i]
    if lacking:   # not stacked: merge_strict names the parameter, the line below the torch keys
      missing += lacking
      by_index.clear()

  for (collection, stage, module, leaf_name), by_index in rest_blocks.items():
    indices = sorted(by_index)
    if not indices:
      continue
    shapes = {by_index[i].shape for i in indices}
    if len(shapes) > 1:
      raise ConversionError(f"{stage}: blocks 1..{len(indices)} of {module}.{leaf_name} should be "
                            f"identical but have shapes {sorted(shapes)}")
    _put(converted, (collection, stage, "rest", module, leaf_name),
         np.stack([by_index[i] for i in indices]))
  return merge_strict(expected, converted, unused, name, missing_source_keys=missing)
