"""Low-precision layers whose bias gradients are summed in float32.

Under a bf16 (or fp16) compute dtype flax's `Dense`, `DenseGeneral` and `Conv` cast their float32
bias to that dtype and add it to every output position; autodiff's transpose of that broadcast
then sums the bias's cotangent over all positions in bf16. Such a sum stagnates once it is ~256x
its terms, so over the B x T x H x W positions of a video conv it keeps few of its digits (a 1x1x1
conv's bias gradient at B8 x 16 x 28^2 in bf16 was 90% of its largest entry away from float32's
on XLA:CPU, tests/test_precision.py; the optimized HLO of a step compiled for an H100 reduces
them with bf16 adds too).

`add_bias(y, bias)` is flax's forward, `y + bias` in y's dtype (bit for bit, so XLA fuses it as
before, into a GEMM's epilogue where it did), with a custom backward that sums the bias's
cotangent in float32. `Dense`, `Conv` and `MultiHeadDotProductAttention` are flax's layers (same
fields, variables and names) that add their bias with it under a 16-bit `dtype`: flax's own add
is given a zero bias, which XLA drops. In float32 (and in exports) every layer here is flax's
program, unchanged.
"""

from __future__ import annotations

import contextvars
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers import conv2d


@jax.custom_vjp
def _add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
  return _add_bias(y, bias), bias


def _add_bias_bwd(bias, dy):
  leading = tuple(range(dy.ndim - bias.ndim))
  return dy, jnp.sum(dy, axis=leading, dtype=jnp.float32).astype(bias.dtype)


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def low_precision(dtype: Any) -> bool:
  """Whether `dtype` is a floating dtype narrower than float32 (bf16, fp16)."""
  return (dtype is not None and jnp.issubdtype(dtype, jnp.floating)
          and jnp.dtype(dtype).itemsize < 4)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias (bias over y's trailing axes) in y's dtype; under a 16-bit dtype its gradient
  w.r.t. the bias is summed over every position in float32 (module docstring)."""
  if not low_precision(y.dtype) or conv2d.export_lowering_forced():
    return y + bias.astype(y.dtype)
  return _add_bias(y, bias)


# The bias flax's layer would have added, kept aside by `_promote_setting_bias_aside` for the
# layer's own call to add (a fresh list per `_call_adding_bias`; None outside one).
_ASIDE: contextvars.ContextVar[list | None] = contextvars.ContextVar("darkjax_bias_aside",
                                                                     default=None)


def _promote_setting_bias_aside(*args, dtype=None, inexact=True):
  """flax's promote_dtype; under a 16-bit `dtype`, inside a layer of this module, the bias (the
  third of flax's (inputs, kernel, bias)) is set aside and flax adds zeros instead."""
  promoted = nn.dtypes.promote_dtype(*args, dtype=dtype, inexact=inexact)
  aside = _ASIDE.get()
  if len(args) != 3 or args[2] is None or aside is None or not low_precision(dtype):
    return promoted
  aside.append(args[2])
  return (*promoted[:2], jnp.zeros_like(promoted[2]))


def _call_adding_bias(call, dtype: Any) -> jax.Array:
  """call() (a flax layer's own __call__ with `_promote_setting_bias_aside`), then the bias it set
  aside added by `add_bias`."""
  if not low_precision(dtype) or conv2d.export_lowering_forced():
    return call()
  aside: list = []
  token = _ASIDE.set(aside)
  try:
    y = call()
  finally:
    _ASIDE.reset(token)
  return add_bias(y, aside[0]) if aside else y


class Dense(nn.Dense):
  """`flax.linen.Dense`, its bias gradient summed in float32 under a 16-bit `dtype`."""
  promote_dtype: Any = _promote_setting_bias_aside

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return _call_adding_bias(lambda: super(Dense, self).__call__(inputs), self.dtype)


class Conv(nn.Conv):
  """`flax.linen.Conv`, its bias gradient summed in float32 under a 16-bit `dtype`."""
  promote_dtype: Any = _promote_setting_bias_aside

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return _call_adding_bias(lambda: super(Conv, self).__call__(inputs), self.dtype)


def _dense_general_adding_bias(next_fun, args, kwargs, context):
  """Method interceptor: flax's DenseGeneral (what `nn.MultiHeadDotProductAttention` builds its
  query, key, value and output projections from) adds its bias as `Dense` here does."""
  module = context.module
  if (context.method_name != "__call__" or type(module) is not nn.DenseGeneral
      or not module.use_bias or not low_precision(module.dtype)):
    return next_fun(*args, **kwargs)
  # flax's attention builds the projection itself, with no field to pass a promote function
  # to: it is set on this call's (bound, short-lived) instance, and restored after.
  default = module.promote_dtype
  object.__setattr__(module, "promote_dtype", _promote_setting_bias_aside)
  try:
    return _call_adding_bias(lambda: next_fun(*args, **kwargs), module.dtype)
  finally:
    object.__setattr__(module, "promote_dtype", default)


class MultiHeadDotProductAttention(nn.MultiHeadDotProductAttention):
  """`flax.linen.MultiHeadDotProductAttention`, its projections' bias gradients summed in
  float32 under a 16-bit `dtype` (same fields, variables and names)."""

  def __call__(self, *args, **kwargs):
    with nn.intercept_methods(_dense_general_adding_bias):
      return super().__call__(*args, **kwargs)
