"""C3D PyTorch-port state dicts (conv1..conv5b, fc6, fc7, fc8) -> `darkjax.models.c3d` variables.

Every layer has `weight` and `bias`; convolutions are transposed to (T, H, W, in, out), linears to
(in, out). fc6 needs no permutation because the model flattens pool5 in torch's (C, T, H, W) order.
Head: `num_classes=None` keeps fc8; a different `num_classes` (or 0) leaves fc8 out of the result
so the caller initialises it fresh (configs list it in their dont-load patterns).

The port's weights are the Caffe Sports-1M model's, which pooled in Caffe's ceil mode: the model's
default `pooling="caffe"` gives them those windows; weights fine-tuned in the port itself (its
padded pool5) want the model built with `pooling="port"` (darkjax.models.c3d: `models.build("c3d",
..., pooling="port")`, or `backbone_kwargs=dict(pooling="port")` where C3D is a model's backbone,
as the two-stream model's; the paper configs start from the Caffe weights and set neither).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from darkjax.convert.common import (ConversionError, conv_kernel, linear_kernel, merge_strict,
                                    normalise_state_dict)
from darkjax.convert.resnet3d import head_classes
from darkjax.models import c3d

NAMES = tuple(c3d.VARIANTS)
# What the Sports-1M weights were trained on (darkjax.data.normalise.STATS): Tran et al.'s Caffe
# C3D read OpenCV's BGR frames in 0-255 minus the Sports-1M mean cube; the PyTorch ports copy its
# weights without changing conv1's channel order.
INPUT_NORMALISE = "c3d_sports1m"


def convert(name: str, state_dict: Mapping[str, Any], num_classes: int | None = None,
            model_kwargs: Mapping[str, Any] | None = None) -> dict:
  """`model_kwargs`: the model's build arguments where they shape its tree (`input_size`)."""
  if name not in NAMES:
    raise ConversionError(f"{name!r} is not a C3D variant; known: {NAMES}")
  state = normalise_state_dict(state_dict)
  classes = head_classes(state, "fc8", num_classes)
  model = c3d.VARIANTS[name](classes, **dict(model_kwargs or {}))
  clip = jnp.zeros((1,) + tuple(model.input_size) + (3,))
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), clip, train=False))

  params: dict = {}
  unused: list[str] = []
  for key, value in state.items():
    module, _, field = key.rpartition(".")
    if module == "fc8" and not classes:
      continue
    if module in c3d.CONV_NAMES or module in ("fc6", "fc7", "fc8"):
      if field == "weight":
        kernel = conv_kernel(value) if module.startswith("conv") else linear_kernel(value)
        params.setdefault(module, {})["kernel"] = kernel
        continue
      if field == "bias":
        params.setdefault(module, {})["bias"] = value
        continue
    unused.append(key)
  return merge_strict(expected, {"params": params}, unused, name)
