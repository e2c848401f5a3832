"""Stacked layers: `nn.scan` in training, a Python loop over the same parameters for export.

The ResNet stages (`darkjax.models.resnet3d`) and LIFT-Net's fusion layers run their repeated
blocks as one `nn.scan`: parameters stacked on a leading axis, one compiled body. jax2onnx
cannot trace flax's scan with a symbolic batch, so inside `darkjax.layers.conv.export_lowering()`
`scanned` returns `Unrolled` instead: the same module name and variable tree, each step applying
the body to its slice of the stacked variables. Inference only: the unrolled form creates no
variables and writes no collection (export applies a trained model in eval mode).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers import conv2d


class Unrolled(nn.Module):
  """`nn.scan(body, variable_axes=..., length=length)` (in_axes 0, out_axes 0) as `length` calls
  of `body(**body_kwargs)`, call i with variables[axis i] of each scanned collection."""
  body: Any
  length: int
  variable_axes: Mapping[str, int]
  body_kwargs: Mapping[str, Any]

  @nn.compact
  def __call__(self, carry: Any, xs: Any = None) -> tuple[Any, Any]:
    if self.is_initializing():
      raise ValueError(f"{self.name}: the unrolled (export) form of a scanned stage applies "
                       "trained variables; initialise the training form (outside "
                       "export_lowering())")
    variables = {col: tree for col, tree in self.variables.items()}
    body = self.body(**self.body_kwargs, parent=None)
    ys = []
    for i in range(self.length):
      step = {col: jax.tree.map(
          lambda a, i=i, axis=self.variable_axes[col]: conv2d.index_in_dim(a, i, axis),
          tree) if col in self.variable_axes else tree for col, tree in variables.items()}
      x = None if xs is None else jax.tree.map(lambda a, i=i: a[i], xs)
      carry, y = body.apply(step, carry, x)
      ys.append(y)
    conv2d.note_lowering("scan", "unrolled")
    if any(y is None for y in ys):
      return carry, None
    return carry, jax.tree.map(lambda *leaves: jnp.stack(leaves), *ys)


def scanned(body: type[nn.Module], *, length: int, variable_axes: Mapping[str, int],
            split_rngs: Mapping[str, bool]) -> Callable[..., nn.Module]:
  """`nn.scan(body, ...)`, or inside `export_lowering()` a constructor of `Unrolled` with the
  same call signature (`scanned(...)(name=..., **body_kwargs)(carry, xs)`)."""
  if not conv2d.export_lowering_forced():
    return nn.scan(body, variable_axes=dict(variable_axes), split_rngs=dict(split_rngs),
                   length=length)

  def build(name: str | None = None, **body_kwargs: Any) -> Unrolled:
    return Unrolled(body, length, dict(variable_axes), body_kwargs, name=name)
  return build
