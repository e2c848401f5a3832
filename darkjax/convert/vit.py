"""ViT checkpoints (timm state dicts, vision_transformer / big_vision `.npz`) -> `models.vit`.

Accepted layouts, detected from the keys:

- timm: `patch_embed.proj.*`, `cls_token`, `pos_embed`, `blocks.<i>.{norm1, attn.qkv, attn.proj,
  norm2, mlp.fc1, mlp.fc2}`, `norm`, optional `pre_logits.fc`, `head` (`module.` prefixes dropped).
  A ViT built with `qkv_bias=False` (timm's `vit_base_patch16_224_miil_in21k`, ImageNet-21K-P)
  has no `attn.qkv.bias`: its query, key and value biases convert as zeros, the same function.
- google-research/vision_transformer `.npz` (the ImageNet-21k checkpoints): flat keys that are
  already our parameter paths (`Transformer/encoderblock_0/LayerNorm_0/scale`, ...).
- big_vision `.npz`: top-level `pos_embedding`, blocks named `LayerNorm_0,
  MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0`, per-block (`encoderblock_<i>`) or
  scanned (`encoderblock`, stacked on axis 0); a `params/` prefix is dropped.

Options: `num_classes` None keeps the checkpoint head; a different size (or 0) leaves `head` out
(the training config re-initialises it). `image_size` resizes the position-embedding grid bilinearly
(half-pixel centres, as `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`)
when it differs from the checkpoint's. `num_blocks` keeps only the first N blocks. Other keyword
arguments are model overrides; `representation_size` defaults to the checkpoint's `pre_logits`
width.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from darkjax.convert.common import conv_kernel, linear_kernel, merge_strict, normalise_state_dict
from darkjax.models import vit

NAMES = tuple(vit.VARIANTS)
# vision_transformer / big_vision checkpoints and timm's augreg ones read [-1, 1] (mean = std =
# 0.5 of [0, 1]); a checkpoint trained with ImageNet statistics is `--input-normalise imagenet`.
INPUT_NORMALISE = "vit"

_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TIMM_QKV_WEIGHT = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.weight$")
_TIMM_LINEAR = {"mlp.fc1": "MlpBlock_3/Dense_0", "mlp.fc2": "MlpBlock_3/Dense_1"}
_TIMM_NORM = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_2"}
_BIG_VISION_BLOCK_NAMES = {"LayerNorm_1": "LayerNorm_2", "MlpBlock_0": "MlpBlock_3",
                           "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1"}


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All arrays of a vision_transformer / big_vision `.npz` checkpoint."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"ViT checkpoint {path} does not exist")
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {key: archive[key] for key in archive.files}
  except (ValueError, OSError) as error:
    raise ValueError(f"cannot read ViT checkpoint {path} as .npz: {error}") from error


def resize_pos_embedding(pos: np.ndarray, grid: Sequence[int]) -> np.ndarray:
  """(1, 1 + h*w, D) -> (1, 1 + grid[0]*grid[1], D): class token kept, patch grid resized."""
  tokens = pos.shape[1] - 1
  side = int(round(np.sqrt(tokens)))
  if side * side != tokens:
    raise ValueError(f"position embedding with {tokens} patch tokens is not a square grid")
  if (side, side) == tuple(grid):
    return pos
  patches = pos[0, 1:].reshape(side, side, -1)
  resized = jax.image.resize(jnp.asarray(patches, jnp.float32), (grid[0], grid[1], pos.shape[-1]),
                             method="bilinear", antialias=False)
  resized = np.asarray(resized, pos.dtype).reshape(1, grid[0] * grid[1], -1)
  return np.concatenate([pos[:, :1], resized], axis=1)


def _timm_targets(key: str, value: np.ndarray, num_heads: int) -> list[tuple[str, np.ndarray]]:
  """Flat darkjax parameter paths and values for one timm entry ([] if unknown)."""
  simple = {"cls_token": "cls", "pos_embed": "Transformer/posembed_input/pos_embedding",
            "patch_embed.proj.bias": "embedding/bias",
            "norm.weight": "Transformer/encoder_norm/scale",
            "norm.bias": "Transformer/encoder_norm/bias", "head.bias": "head/bias",
            "pre_logits.fc.bias": "pre_logits/bias"}
  if key in simple:
    return [(simple[key], value)]
  if key == "patch_embed.proj.weight":
    return [("embedding/kernel", conv_kernel(value))]
  if key in ("head.weight", "pre_logits.fc.weight"):
    return [(key.split(".")[0] + "/kernel", linear_kernel(value))]
  match = _TIMM_BLOCK.match(key)
  if not match:
    return []
  block, rest = f"Transformer/encoderblock_{match.group(1)}", match.group(2)
  module, _, field = rest.rpartition(".")
  if module in _TIMM_NORM and field in ("weight", "bias"):
    return [(f"{block}/{_TIMM_NORM[module]}/{'scale' if field == 'weight' else 'bias'}", value)]
  if module in _TIMM_LINEAR and field in ("weight", "bias"):
    leaf = linear_kernel(value) if field == "weight" else value
    return [(f"{block}/{_TIMM_LINEAR[module]}/{'kernel' if field == 'weight' else 'bias'}", leaf)]
  attention = f"{block}/MultiHeadDotProductAttention_1"
  if module == "attn.qkv":
    width = value.shape[0] // 3
    head_dim = width // num_heads
    parts = value.reshape((3, width) + value.shape[1:])
    targets = []
    for name, part in zip(("query", "key", "value"), parts):
      if field == "weight":
        targets.append((f"{attention}/{name}/kernel", part.T.reshape(-1, num_heads, head_dim)))
      else:
        targets.append((f"{attention}/{name}/bias", part.reshape(num_heads, head_dim)))
    return targets
  if module == "attn.proj":
    if field == "weight":
      width = value.shape[0]
      return [(f"{attention}/out/kernel", value.T.reshape(num_heads, -1, width))]
    return [(f"{attention}/out/bias", value)]
  return []


def _npz_targets(key: str, value: np.ndarray) -> list[tuple[str, np.ndarray]]:
  """vision_transformer keys pass through; big_vision names and scanned blocks are rewritten."""
  key = re.sub(r"^params/", "", key)
  if key == "pos_embedding":
    return [("Transformer/posembed_input/pos_embedding", value)]
  match = re.match(r"^Transformer/encoderblock(_\d+)?/([^/]+)/(.+)$", key)
  if not match:
    return [(key, value)]
  module = _BIG_VISION_BLOCK_NAMES.get(match.group(2), match.group(2))
  if match.group(1) is not None:
    return [(f"Transformer/encoderblock{match.group(1)}/{module}/{match.group(3)}", value)]
  return [(f"Transformer/encoderblock_{index}/{module}/{match.group(3)}", layer)
          for index, layer in enumerate(value)]


def _is_timm(weights: Mapping[str, np.ndarray]) -> bool:
  return "patch_embed.proj.weight" in weights


def _zero_qkv_biases(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A timm state dict with `attn.qkv.bias` beside every `attn.qkv.weight`: zeros where a
  `qkv_bias=False` ViT has none (adding zero is what no bias does)."""
  out = dict(weights)
  for key, value in weights.items():
    if _TIMM_QKV_WEIGHT.match(key):
      out.setdefault(key[:-len("weight")] + "bias", np.zeros(value.shape[:1], value.dtype))
  return out


def model_kwargs(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Keyword arguments of `darkjax.models.build(name, ...)` the converted variables need (written
  to meta.json): the `pre_logits` width of a checkpoint that has one, and the tanh GELU the
  vision_transformer / big_vision `.npz` checkpoints were trained with (timm's use erf)."""
  del name
  keys = {re.sub(r"^(module\.|_orig_mod\.|params/)+", "", k): v for k, v in state_dict.items()}
  out: dict[str, Any] = {}
  for key in ("pre_logits.fc.weight", "pre_logits/kernel"):
    if key in keys:   # torch (out, in); flax (in, out)
      out["representation_size"] = int(keys[key].shape[0 if key.endswith("weight") else -1])
  if not _is_timm(keys):
    out["gelu_approximate"] = True
  return out


def convert(name: str, state_dict: Mapping[str, Any], num_classes: int | None = None, *,
            image_size: int | Sequence[int] | None = None, **model_kwargs: Any) -> dict:
  """Checkpoint -> {"params": ...} for `vit.VARIANTS[name]` (strict; see the module docstring)."""
  if name not in vit.VARIANTS:
    raise ValueError(f"convert.vit: unknown model {name!r}; known: {sorted(NAMES)}")
  weights = normalise_state_dict(state_dict)
  is_timm = _is_timm(weights)
  if is_timm:
    weights = _zero_qkv_biases(weights)
  probe = vit.VARIANTS[name](num_classes=0, **model_kwargs)
  targets: dict[str, tuple[str, np.ndarray]] = {}  # darkjax path -> (source key, value)
  for key, value in weights.items():
    mapped = _timm_targets(key, value, probe.num_heads) if is_timm else _npz_targets(key, value)
    for path, leaf in mapped or [(None, value)]:
      targets[path or f"?{key}"] = (key, leaf)

  head = targets.get("head/kernel")
  checkpoint_classes = int(head[1].shape[-1]) if head is not None else 0
  num_classes = checkpoint_classes if num_classes is None else num_classes
  keep_head = num_classes == checkpoint_classes and num_classes > 0
  if "pre_logits/kernel" in targets and "representation_size" not in model_kwargs:
    model_kwargs["representation_size"] = int(targets["pre_logits/kernel"][1].shape[-1])
  model = vit.VARIANTS[name](num_classes=num_classes if keep_head else 0, **model_kwargs)

  pos_key = "Transformer/posembed_input/pos_embedding"
  if pos_key not in targets:
    raise ValueError(f"convert.vit: checkpoint for {name!r} has no position embedding "
                     f"(pos_embed / {pos_key}); keys start {sorted(weights)[:5]}")
  source, pos = targets[pos_key]
  if image_size is not None:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    pos = resize_pos_embedding(pos, (height // model.patch_size, width // model.patch_size))
    targets[pos_key] = (source, pos)
  side = int(round(np.sqrt(pos.shape[1] - 1)))
  height, width = (side * model.patch_size,) * 2 if image_size is None else (height, width)
  expected = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32))
  known = set(traverse_util.flatten_dict(expected["params"], sep="/"))

  converted: dict[str, np.ndarray] = {}
  unused: list[str] = []
  for path, (source, leaf) in targets.items():
    block = re.match(r"^Transformer/encoderblock_(\d+)/", path)
    if (path.startswith("head/") and not keep_head) or (
        block and model.num_blocks is not None and int(block.group(1)) >= model.num_blocks):
      continue  # left out on purpose: re-initialised head, or blocks past `num_blocks`
    if path in known:
      converted[path] = leaf
    elif source not in unused:
      unused.append(source)
  return merge_strict({"params": expected["params"]},
                      {"params": traverse_util.unflatten_dict(converted, sep="/")}, unused, name)
