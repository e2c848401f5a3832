"""Official Zero-DCE / Zero-DCE++ snapshots (e.g. `Epoch99.pth`) -> Flax variables.

Zero-DCE (Li-Chongyi/Zero-DCE `enhance_net_nopool`): `e_conv1.weight` ... `e_conv7.bias`.
Zero-DCE++ (Li-Chongyi/Zero-DCE_extension): `e_convN.depth_conv.{weight,bias}` and
`e_convN.point_conv.{weight,bias}`. A `module.` prefix (DataParallel) is accepted. The snapshots
were trained with the official curve sign, which is the enhancers' default convention.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import traverse_util

from darkjax.convert.common import ConversionError, conv_kernel, merge_strict, normalise_state_dict

NAMES = ("zero_dce", "zero_dce_pp")
INPUT_NORMALISE = "none"   # the enhancers read [0, 1] RGB
HEADLESS = True            # image enhancers: no classifier head (`python -m darkjax.convert`)


def _expected_variables(name: str) -> dict:
  from darkjax.models import enhancers  # local import: keeps `import darkjax.convert` light
  model = enhancers.VARIANTS[name](num_classes=0)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3), jnp.float32))


def convert(name: str, state_dict: Mapping[str, Any], num_classes: int | None = None) -> dict:
  """Strictly converts an official snapshot for `name` in NAMES into {"params": ...}."""
  if name not in NAMES:
    raise ConversionError(f"zero_dce converter handles {NAMES}, not {name!r}")
  if num_classes:
    raise ConversionError(f"{name} is an enhancer without a classifier: num_classes must be 0 or "
                          f"None, got {num_classes}")
  source = normalise_state_dict(state_dict)
  converted: dict[str, Any] = {}
  used: set[str] = set()
  for key, value in source.items():
    module_path, _, leaf = key.rpartition(".")
    if leaf not in ("weight", "bias") or not module_path.startswith("e_conv"):
      continue
    target = "params/" + module_path.replace(".", "/")
    if leaf == "weight":
      if value.ndim != 4:
        raise ConversionError(f"{name}: {key} has shape {value.shape}, expected a 2D conv weight")
      converted[target + "/kernel"] = conv_kernel(value)
    else:
      converted[target + "/bias"] = value
    used.add(key)
  expected = _expected_variables(name)
  return merge_strict(expected, traverse_util.unflatten_dict(converted, sep="/"),
                      sorted(set(source) - used), name)
