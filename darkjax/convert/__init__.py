"""PyTorch / numpy checkpoints -> Flax variables, one converter per model family.

`from_torch(name, state_dict, num_classes=None)` returns `{"params": ..., "batch_stats": ...}` for
`darkjax.models.build(name, num_classes)`. Each family module exposes
`convert(name, state_dict, num_classes) -> variables`, `NAMES` (the model names it handles) and
`INPUT_NORMALISE`, the `darkjax.data.normalise` mode the family's published weights were trained
on (`input_normalise(name)`; `python -m darkjax.convert` records it in meta.json).
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

# Converter modules (explicit list, no registration side effects).
_CONVERTERS = (
    "darkjax.convert.zero_dce",
    "darkjax.convert.resnet3d",
    "darkjax.convert.c3d",
    "darkjax.convert.video_resnet", "darkjax.convert.vit",
)


def _converter_for(name: str):
  known = []
  for module_name in _CONVERTERS:
    module = importlib.import_module(module_name)
    if name in module.NAMES:
      return module
    known.extend(module.NAMES)
  raise ValueError(f"no PyTorch converter for model {name!r}; convertible models: {sorted(known)}")


def fitting_models(state_dict: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> list[str]:
  """The convertible models, other than `exclude`, that `state_dict` converts for without a
  missing, extra or mis-shaped parameter: what a checkpoint given the wrong model name is (a
  second or so per model family, on the error path only)."""
  from darkjax.convert.common import ConversionError  # pylint: disable=import-outside-toplevel
  fits = []
  for module_name in _CONVERTERS:
    module = importlib.import_module(module_name)
    for name in module.NAMES:
      if name in exclude:
        continue
      try:
        module.convert(name, state_dict, None)
      except (ConversionError, ValueError, KeyError):   # another family's layout
        continue
      fits.append(name)
  return fits


def input_normalise(name: str) -> str:
  """The normalisation mode (darkjax.data.normalise) model `name`'s published weights expect."""
  return _converter_for(name).INPUT_NORMALISE


def check_normalise(name: str, configured: str, key: str, source: str) -> None:
  """Raises (darkjax.data.normalise.NormalisationMismatchError) unless inputs normalised in mode
  `configured` (config key `key`) are what model `name`'s published weights (from `source`)
  were trained on."""
  from darkjax.data import normalise  # pylint: disable=import-outside-toplevel
  normalise.check_pretrained(input_normalise(name), configured, key, source)


def from_torch(name: str, state_dict: Mapping[str, Any], num_classes: int | None = None) -> dict:
  """Converts a PyTorch-layout state dict for model `name` into Flax variables (strict)."""
  return _converter_for(name).convert(name, state_dict, num_classes)
