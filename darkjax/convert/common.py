"""Shared pieces of PyTorch -> Flax conversion: layouts, prefixes, and a strict merge."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from darkjax import variables

IGNORED_TORCH_SUFFIXES = ("num_batches_tracked",)


def normalise_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """numpy arrays, without `module.`/`_orig_mod.` prefixes and ignored bookkeeping entries."""
  out: dict[str, np.ndarray] = {}
  for key, value in state_dict.items():
    if key.endswith(IGNORED_TORCH_SUFFIXES):
      continue
    clean = re.sub(r"^(module\.|_orig_mod\.)+", "", key)
    if hasattr(value, "detach"):
      value = value.detach().cpu()
      if value.is_floating_point() and value.element_size() < 4:
        value = value.float()   # bfloat16 / float8 weights: numpy has neither (float16 too)
      value = value.numpy()
    out[clean] = np.array(value)  # a copy: torch tensors must not alias the converted arrays
  return out


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch (out, in, *spatial) -> Flax (*spatial, in, out), for 1D/2D/3D convolutions."""
  nd = weight.ndim - 2
  return np.transpose(weight, tuple(range(2, 2 + nd)) + (1, 0))


def linear_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch (out, in) -> Flax (in, out)."""
  return np.transpose(weight)


class ConversionError(ValueError):
  """A state dict does not fit the target model; the message lists every problem."""


def merge_strict(expected: Mapping[str, Any], converted: Mapping[str, Any],
                 unused_source_keys: list[str], arch: str,
                 missing_source_keys: Sequence[str] = ()) -> dict:
  """Checks `converted` against the shapes of `expected` (a variables tree, e.g. from eval_shape).

  Raises ConversionError listing all missing, unexpected and mis-shaped parameters, the source
  keys the converter found missing (`missing_source_keys`, by the checkpoint's own names) and all
  source keys that were not consumed.
  """
  want, got = variables.flatten(expected), variables.flatten(converted)
  problems = variables.mismatch(want, got)
  lines = [f"missing in checkpoint ({len(problems.missing)}): {list(problems.missing)}",
           f"its missing keys ({len(missing_source_keys)}): {sorted(missing_source_keys)}",
           f"unexpected (not in model) ({len(problems.unexpected)}): {list(problems.unexpected)}",
           f"wrong shape ({len(problems.wrong_shape)}): {list(problems.wrong_shape)}",
           f"unused source keys ({len(unused_source_keys)}): {sorted(unused_source_keys)}"]
  counts = (problems.missing, missing_source_keys, problems.unexpected, problems.wrong_shape,
            unused_source_keys)
  lines = [line for line, paths in zip(lines, counts) if paths]
  if lines:
    raise ConversionError(f"cannot convert state dict to {arch!r}:\n  " + "\n  ".join(lines))
  return variables.unflatten({k: np.asarray(v, dtype=want[k].dtype) for k, v in got.items()})
