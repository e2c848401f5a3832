"""Model zoo: `build(name, num_classes, **kwargs)` returns a Flax Linen module.

Each family module exposes `VARIANTS: dict[str, Callable[..., nn.Module]]` mapping public names to
constructors taking `num_classes` plus keyword overrides. The list of family modules is explicit
(no import-time registration side effects).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

import flax.linen as nn

# Family modules, in the order their names are listed to users.
_FAMILIES = (
    "darkjax.models.small3d",
    "darkjax.models.enhancers",
    "darkjax.models.resnet3d",
    "darkjax.models.c3d",
    "darkjax.models.dinet",
    "darkjax.models.video_resnet", "darkjax.models.vit",
    "darkjax.models.liftnet",
    "darkjax.models.dtcm",
    "darkjax.models.twostream",
    "darkjax.models.actlumos",
)


def _variants() -> dict[str, Callable[..., nn.Module]]:
  table: dict[str, Callable[..., nn.Module]] = {}
  for module_name in _FAMILIES:
    module = importlib.import_module(module_name)
    for name, ctor in module.VARIANTS.items():
      if name in table:
        raise RuntimeError(f"model name {name!r} defined twice (second time in {module_name})")
      table[name] = ctor
  return table


def names() -> list[str]:
  """All model names `build` accepts."""
  return list(_variants())


class UnknownModelError(ValueError):
  """A model name that is not in the zoo; the message suggests the closest and lists them all."""


def build(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds model `name` with a `num_classes`-way head (0: feature extractor)."""
  table = _variants()
  if name not in table:
    close = difflib.get_close_matches(str(name), list(table), n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint}; known models: "
                            f"{', '.join(sorted(table))}")
  return table[name](num_classes=num_classes, **kwargs)
