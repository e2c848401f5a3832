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
program, unchanged. `add_bias` also takes a parameter broadcast over size-1 axes (position
embeddings, class tokens), its gradient summed over them in float32 too.

Weight gradients of a step whose batch is split over devices. Autodiff's weight gradient of a
16-bit convolution or matmul is a 16-bit convolution or matmul over this device's part of the
batch, and the partitioner sums those partial gradients across the devices in the same dtype: a
bf16 all-reduce (or reduce-scatter) of every weight gradient, in the optimized HLO of each paper's
data-parallel step for an H100 and a TPU alike, each hop of a ring rounding its partial sum to
bf16 (jax-ml/jax#27496; Megatron-LM reduces bf16 gradients in float32 for this reason). Inside
`float32_weight_gradients()` (`darkjax.train.Trainer.scope` enters it when the batch spans more
than one device) `conv_general_dilated` and `dot_general` here take the float32 kernel, cast it
for the forward as before and compute the kernel's gradient with float32 output
(`preferred_element_type`: the MXU's and cuBLAS's float32 accumulators written out as they are), so
the cross-device sum is a float32 one. `Dense`, `Conv`, attention's projections, `Conv3D` and
`DepthwiseConv2D` use them; on one device every program is as before. A TPU takes bf16 operands
with a float32 result as they are (the two-stream step's memory 4.28 -> 4.30 GiB on a v5e 2x2
slice), and so does cuBLAS for matmuls; XLA:GPU runs such a convolution as a float32 one on
operands it converts first (R(2+1)D-18 at B16: 4.0 -> 5.9 GiB temporaries, TF32 instead of bf16).
So a convolution compiled for a GPU takes each device's own gradient, autodiff's (cuDNN's bf16
weight gradient of its part of the batch, accumulated in float32 and rounded once), and sums
them across the devices in float32 in a `shard_map` over the mesh the Trainer passes (memory and
collectives otherwise as before): a `psum` where the kernel is replicated. With fsdp, where the
Trainer's `kernel_spec` splits a kernel over the devices, every platform's convolutions take
that form, with a float32 `psum_scatter` onto the kernel's split and a `psum` over the other
batch axes: left to the partitioner, such a convolution was split over its channels and its
activations moved between the devices (ActLumos's teacher fully sharded on eight H100s: 22.8 GiB
a device and 9.3 GB of bf16 activations summed a step, against 6.8 GiB and the gradients' float32
reduce-scatters; docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darkjax import targets
from darkjax.layers import conv2d


@jax.custom_vjp
def _add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
  return _add_bias(y, bias), bias


def _add_bias_bwd(bias, dy):
  leading = dy.ndim - bias.ndim
  # the axes the bias is broadcast over: the leading ones it lacks and its own size-1 ones
  broadcast = tuple(range(leading)) + tuple(
      leading + i for i, n in enumerate(bias.shape) if n == 1 and dy.shape[leading + i] != 1)
  total = jnp.sum(dy, axis=broadcast, dtype=jnp.float32)
  return dy, total.reshape(bias.shape).astype(bias.dtype)


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def low_precision(dtype: Any) -> bool:
  """Whether `dtype` is a floating dtype narrower than float32 (bf16, fp16)."""
  return (dtype is not None and jnp.issubdtype(dtype, jnp.floating)
          and jnp.dtype(dtype).itemsize < 4)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias (bias over y's trailing axes, broadcast over its size-1 ones) in y's dtype; under a
  16-bit dtype its gradient w.r.t. the bias is summed over every position in float32 (module
  docstring)."""
  if not low_precision(y.dtype) or conv2d.export_lowering_forced():
    return y + bias.astype(y.dtype)
  return _add_bias(y, bias)


def broadcast_param(param: jax.Array, shape: Sequence[int], dtype: Any) -> jax.Array:
  """`param` in `dtype` broadcast to `shape` (a class token per clip); under a 16-bit dtype its
  gradient is summed over the broadcast axes in float32, as `add_bias`'s."""
  if not low_precision(dtype) or conv2d.export_lowering_forced():
    return jnp.broadcast_to(param.astype(dtype), tuple(shape))
  return _add_bias(jnp.zeros(tuple(shape), dtype), param)


@dataclasses.dataclass(frozen=True)
class _Spread:
  """A batch over devices: `mesh` and its `axes` the batch is split over (None: not given), and
  `kernel_spec`: a kernel's shape -> the PartitionSpec it is split over the mesh by (None: every
  kernel replicated)."""
  mesh: Any = None
  axes: tuple[str, ...] = ()
  kernel_spec: Callable[[Sequence[int]], Any] | None = None


_F32_WEIGHT_GRADS: contextvars.ContextVar[_Spread | None] = contextvars.ContextVar(
    "darkjax_float32_weight_gradients", default=None)


@contextlib.contextmanager
def float32_weight_gradients(enabled: bool = True, mesh: Any = None,
                             axes: Sequence[str] = (),
                             kernel_spec: Callable[[Sequence[int]], Any] | None = None
                             ) -> Iterator[None]:
  """Within the block (at trace time), the layers of this module and `Conv3D` /
  `DepthwiseConv2D` give their 16-bit kernels float32 gradients (module docstring);
  `darkjax.train.Trainer.scope` enters it for a batch over more than one device, with its `mesh`,
  the mesh `axes` the batch is split over and, with fsdp, `kernel_spec` (a kernel's shape -> its
  PartitionSpec over the mesh): what a convolution compiled for a GPU needs, whose gradient is
  each device's own, summed (and with fsdp scattered) across them in float32."""
  token = _F32_WEIGHT_GRADS.set(_Spread(mesh, tuple(axes), kernel_spec) if enabled else None)
  try:
    yield
  finally:
    _F32_WEIGHT_GRADS.reset(token)


def _mesh_spread() -> _Spread | None:
  """The spread whose devices sum their own gradients in float32 in a shard_map (a mesh given
  whose every axis of more than one device splits the batch), else None."""
  spread = _F32_WEIGHT_GRADS.get()
  if spread is None or spread.mesh is None or not spread.axes:
    return None
  if any(spread.mesh.shape[a] > 1 for a in spread.mesh.axis_names if a not in spread.axes):
    return None
  return spread


def weight_gradients_in_float32(dtype: Any = None, op: str = "dot") -> bool:
  """Whether a layer computing in `dtype` (None: any) gives its float32 kernel a float32 gradient
  by `op` ("dot": a matmul; "conv": a convolution): inside `float32_weight_gradients()`, under a
  16-bit dtype, outside `export_lowering()`; a convolution compiled for a GPU only on a mesh that
  splits the batch alone (`_mesh_spread`: there XLA would run a bf16 convolution with float32
  output as a float32 one on converted operands, so each device's gradient is autodiff's and
  their sum a float32 `psum`; module docstring)."""
  if (_F32_WEIGHT_GRADS.get() is None or conv2d.export_lowering_forced()
      or not (dtype is None or low_precision(dtype))):
    return False
  return op == "dot" or targets.platform() != "gpu" or _mesh_spread() is not None


def _pads(padding: Any, in_sizes: Sequence[int], window: Sequence[int],
          strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Explicit (lo, hi) paddings of a convolution's spatial axes from lax's forms."""
  if isinstance(padding, str):
    return tuple(tuple(p) for p in jax.lax.padtype_to_pads(in_sizes, window, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv_weight_gradient(x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int],
                         window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Sequence[int] | None, rhs_dilation: Sequence[int] | None,
                         dimension_numbers: Any, feature_group_count: int = 1,
                         preferred_element_type: Any = jnp.float32) -> jax.Array:
  """The gradient w.r.t. the kernel of `lax.conv_general_dilated(x, kernel, ...)` given the
  output's cotangent `dy`, in float32 whatever x's and dy's dtype (`preferred_element_type=None`:
  in theirs): itself a convolution, of x by dy, with x's batch and feature axes swapped (the batch
  is what it sums over), the forward's strides as its dilation and vice versa, and each group's
  output features a batch group; on a GPU with x's and dy's channels padded to multiples of 8 and
  the gradient sliced back, as `conv2d.aligned_conv` pads the forward."""
  numbers = jax.lax.conv_dimension_numbers(x.shape, tuple(kernel_shape), dimension_numbers)
  lhs_spec, rhs_spec, out_spec = numbers
  spatial = len(lhs_spec) - 2
  strides = tuple(window_strides)
  lhs_dilation = tuple(lhs_dilation or (1,) * spatial)
  rhs_dilation = tuple(rhs_dilation or (1,) * spatial)
  in_sizes = [x.shape[d] for d in lhs_spec[2:]]
  window = [kernel_shape[d] for d in rhs_spec[2:]]
  out_sizes = [dy.shape[d] for d in out_spec[2:]]
  dilated_window = [(k - 1) * r + 1 for k, r in zip(window, rhs_dilation)]
  pads = []
  for i, (lo, _) in enumerate(_pads(padding, in_sizes, dilated_window, strides)):
    dilated_in = (in_sizes[i] - 1) * lhs_dilation[i] + 1
    dilated_out = (out_sizes[i] - 1) * strides[i] + 1
    # the window's last tap reads position (out - 1) * stride + (window - 1) of the padded input
    pads.append((lo, dilated_out - dilated_in + dilated_window[i] - lo - 1))
  swap = lambda spec: (spec[1], spec[0]) + tuple(spec[2:])  # noqa: E731
  cin, cout = kernel_shape[rhs_spec[1]], kernel_shape[rhs_spec[0]]
  align = (conv2d.aligns_channels(x.dtype, feature_group_count)
           and (conv2d.aligned(cin), conv2d.aligned(cout)) != (cin, cout))
  if align:   # on a GPU, cuDNN's aligned kernels (conv2d.aligned_conv): padded, then sliced
    conv2d.note_lowering("conv_channels", "aligned")
    x = conv2d.widen(x, {lhs_spec[1]: conv2d.aligned(cin)})
    dy = conv2d.widen(dy, {out_spec[1]: conv2d.aligned(cout)})
  grad = jax.lax.conv_general_dilated(
      x, dy, window_strides=rhs_dilation, padding=pads, lhs_dilation=lhs_dilation,
      rhs_dilation=strides,
      dimension_numbers=jax.lax.ConvDimensionNumbers(swap(lhs_spec), swap(out_spec),
                                                     swap(rhs_spec)),
      batch_group_count=feature_group_count, preferred_element_type=preferred_element_type)
  if align:
    grad = jax.lax.slice_in_dim(grad, 0, cin, axis=rhs_spec[1])
    grad = jax.lax.slice_in_dim(grad, 0, cout, axis=rhs_spec[0])
  return grad


def dot_weight_gradient(x: jax.Array, dy: jax.Array, kernel_ndim: int,
                        dimension_numbers: Any) -> jax.Array:
  """The gradient w.r.t. the kernel of `lax.dot_general(x, kernel, dimension_numbers)` (no batch
  axes) given the output's cotangent `dy`, in float32: x and dy contracted over x's free axes."""
  (x_contract, k_contract), _ = dimension_numbers
  x_contract, k_contract = tuple(x_contract), tuple(k_contract)
  x_free = tuple(d for d in range(x.ndim) if d not in x_contract)
  k_free = [d for d in range(kernel_ndim) if d not in k_contract]
  grad = jax.lax.dot_general(x, dy, ((x_free, tuple(range(len(x_free)))), ((), ())),
                             preferred_element_type=jnp.float32)
  # grad's axes: x's contracted ones in x's order, then the kernel's free ones in order
  x_order = sorted(x_contract)
  order = [x_order.index(x_contract[k_contract.index(a)]) if a in k_contract
           else len(x_contract) + k_free.index(a) for a in range(kernel_ndim)]
  return jnp.transpose(grad, order)


@dataclasses.dataclass(frozen=True)
class _WeightOp:
  """A convolution or matmul of (x, 16-bit kernel) and its kernel gradient in float32: by
  `weight_gradient`, or with a `spread` each device's own summed across the spread's batch axes
  in float32 and scattered onto the kernel's `split` (`_kernel_split`)."""
  apply: Callable[[jax.Array, jax.Array], jax.Array]
  weight_gradient: Callable[[jax.Array, jax.Array, Sequence[int]], jax.Array]
  spread: _Spread | None = None
  # each device's gradient in x's dtype, then float32 (a GPU's convolution: cuDNN's bf16 weight
  # gradient), rather than computed with float32 output
  cast_after: bool = False
  split: jax.sharding.PartitionSpec = jax.sharding.PartitionSpec()


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _float32_weight_grad(x: jax.Array, kernel: jax.Array, op: _WeightOp) -> jax.Array:
  return op.apply(x, kernel.astype(x.dtype))


def _float32_weight_grad_fwd(x, kernel, op):
  low = kernel.astype(x.dtype)
  return op.apply(x, low), (x, low)


def _float32_weight_grad_bwd(op, residuals, dy):
  x, low = residuals
  with conv2d.recording_paused():   # the forward's lowering, traced again: recorded once
    _, input_vjp = jax.vjp(lambda x: op.apply(x, low), x)
    dx, = input_vjp(dy)
  if op.spread is None:
    return dx, op.weight_gradient(x, dy, low.shape)

  def own(x, dy):   # a part of the batch: its float32 gradient (on a GPU's convolution
    # autodiff's in x's dtype, then float32)
    if op.cast_after:
      return op.weight_gradient(x, dy, low.shape, preferred_element_type=None).astype(jnp.float32)
    return op.weight_gradient(x, dy, low.shape)
  mesh, axes = op.spread.mesh, op.spread.axes
  if x.shape[0] % int(np.prod([mesh.shape[a] for a in axes])):
    return dx, own(x, dy)   # a batch the devices do not split evenly: autodiff's sum
  scattered = [(dim, names) for dim, names in enumerate(op.split) if names]
  rest = tuple(a for a in axes if not any(a in names for _, names in scattered))

  def reduce(x, dy):   # float32 sums over the batch's axes, scattered where the kernel is split
    grad = own(x, dy)
    if rest:
      grad = jax.lax.psum(grad, rest)
    for dim, names in scattered:
      grad = jax.lax.psum_scatter(grad, names, scatter_dimension=dim, tiled=True)
    return grad
  batch = jax.sharding.PartitionSpec(axes)
  dw = jax.shard_map(reduce, mesh=mesh, in_specs=(batch, batch), out_specs=op.split,
                     check_vma=False)(x, dy)
  return dx, dw


def _kernel_split(spread: _Spread, shape: Sequence[int]) -> jax.sharding.PartitionSpec:
  """How a kernel of `shape` is split over the spread's mesh (`kernel_spec`), as a PartitionSpec
  whose entries are tuples of axis names; replicated (an empty spec) where no kernel_spec is given
  or it names an axis the batch is not split over or a dimension those devices do not divide
  (the gradient is then all-reduced, and resharded to the kernel's split where it is used)."""
  spec = spread.kernel_spec(tuple(shape)) if spread.kernel_spec is not None else ()
  entries = []
  for dim, names in enumerate(tuple(spec)):
    names = () if names is None else (names,) if isinstance(names, str) else tuple(names)
    size = int(np.prod([spread.mesh.shape[n] for n in names])) if names else 1
    if any(n not in spread.axes for n in names) or shape[dim] % size:
      return jax.sharding.PartitionSpec()
    entries.append(names if names else None)
  return jax.sharding.PartitionSpec(*entries)


_float32_weight_grad.defvjp(_float32_weight_grad_fwd, _float32_weight_grad_bwd)


def with_float32_weight_gradient(apply: Callable[[jax.Array, jax.Array], jax.Array],
                                 weight_gradient: Callable[..., jax.Array], x: jax.Array,
                                 kernel: jax.Array, op: str = "conv") -> jax.Array:
  """apply(x, kernel cast to x's dtype), its gradient w.r.t. x autodiff's of `apply` and w.r.t.
  the float32 `kernel` weight_gradient(x, dy, kernel shape) (float32). A convolution (`op`) over
  a mesh (x's first axis the batch's) takes each device's own gradient, summed across the devices
  in float32 in a shard_map: compiled for a GPU (the gradient autodiff's, in x's dtype, then
  float32), and on every platform where `kernel_spec` splits the kernel over the devices (fsdp:
  reduce-scattered onto its split; left to the partitioner, such a convolution was split over its
  channels and activations moved between the devices instead: docs/benchmarks.md). A matmul's is
  left to the partitioner (with a small batch and a large kernel, gathering its activations is
  cheaper than reducing its gradient, and its float32 output keeps any sum float32)."""
  gpu_conv = op == "conv" and targets.platform() == "gpu"
  spread = _mesh_spread() if op == "conv" else None
  split = _kernel_split(spread, kernel.shape) if spread is not None else None
  if spread is not None and not gpu_conv and not any(split):
    spread = None   # replicated: the partitioner's float32 all-reduce of the float32 gradient
  return _float32_weight_grad(x, kernel, _WeightOp(apply, weight_gradient, spread, gpu_conv,
                                                   split or jax.sharding.PartitionSpec()))


def _takes_float32_kernel(lhs: jax.Array, rhs: jax.Array, op: str) -> bool:
  return rhs.dtype == jnp.float32 and weight_gradients_in_float32(lhs.dtype, op)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: Any = None, preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated`; a float32 `rhs` under a 16-bit `lhs` inside
  `float32_weight_gradients()` is cast for the forward and its gradient is float32 (module
  docstring)."""
  kwargs = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                feature_group_count=feature_group_count, precision=precision)
  if batch_group_count != 1 or preferred_element_type is not None:
    return jax.lax.conv_general_dilated(lhs, rhs.astype(lhs.dtype), **kwargs,
                                        batch_group_count=batch_group_count,
                                        preferred_element_type=preferred_element_type)
  if not _takes_float32_kernel(lhs, rhs, "conv"):   # on a GPU, its channels aligned
    return conv2d.aligned_conv(lhs, rhs.astype(lhs.dtype), **kwargs)

  def weight_gradient(x, dy, shape, **kwargs):
    return conv_weight_gradient(x, dy, shape, window_strides, padding, lhs_dilation,
                                rhs_dilation, dimension_numbers, feature_group_count, **kwargs)
  return with_float32_weight_gradient(
      lambda x, k: conv2d.aligned_conv(x, k, **kwargs), weight_gradient, lhs, rhs)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, precision: Any = None,
                preferred_element_type: Any = None, **kwargs: Any) -> jax.Array:
  """`lax.dot_general`; a float32 `rhs` under a 16-bit `lhs` inside `float32_weight_gradients()`
  (no batch axes) is cast for the forward and its gradient is float32 (module docstring)."""
  (_, _), (lhs_batch, _) = dimension_numbers
  if (not _takes_float32_kernel(lhs, rhs, "dot") or tuple(lhs_batch) or kwargs
      or preferred_element_type is not None):
    return jax.lax.dot_general(lhs, rhs.astype(lhs.dtype), dimension_numbers,
                               precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)
  return with_float32_weight_gradient(
      lambda x, k: jax.lax.dot_general(x, k, dimension_numbers, precision=precision),
      lambda x, dy, shape: dot_weight_gradient(x, dy, len(shape), dimension_numbers), lhs, rhs,
      op="dot")


# The bias flax's layer would have added, kept aside by `_promote_setting_bias_aside` for the
# layer's own call to add (a fresh list per `_call_adding_bias`; None outside one).
_ASIDE: contextvars.ContextVar[list | None] = contextvars.ContextVar("darkjax_bias_aside",
                                                                     default=None)


def _promote_setting_bias_aside(*args, dtype=None, inexact=True):
  """flax's promote_dtype; under a 16-bit `dtype`, inside a layer of this module, the bias (the
  third of flax's (inputs, kernel, bias)) is set aside and flax adds zeros instead, and inside
  `float32_weight_gradients()` the kernel stays float32 for the layer's `dot_general` /
  `conv_general_dilated` (this module's) to cast."""
  promoted = nn.dtypes.promote_dtype(*args, dtype=dtype, inexact=inexact)
  aside = _ASIDE.get()
  if len(args) != 3 or aside is None or not low_precision(dtype):
    return promoted
  inputs, kernel, bias = promoted
  if weight_gradients_in_float32(dtype) and args[1].dtype == jnp.float32:
    kernel = args[1]
  if args[2] is None:
    return inputs, kernel, bias
  aside.append(args[2])
  return inputs, kernel, jnp.zeros_like(bias)


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
  """`flax.linen.Dense`, its bias gradient summed in float32 under a 16-bit `dtype`, its kernel
  gradient float32 inside `float32_weight_gradients()`."""
  promote_dtype: Any = _promote_setting_bias_aside
  dot_general: Any = dot_general

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return _call_adding_bias(lambda: super(Dense, self).__call__(inputs), self.dtype)


class Conv(nn.Conv):
  """`flax.linen.Conv`, its bias gradient summed in float32 under a 16-bit `dtype`, its kernel
  gradient float32 inside `float32_weight_gradients()`."""
  promote_dtype: Any = _promote_setting_bias_aside
  conv_general_dilated: Any = conv_general_dilated

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return _call_adding_bias(lambda: super(Conv, self).__call__(inputs), self.dtype)


def _dense_general_adding_bias(next_fun, args, kwargs, context):
  """Method interceptor: flax's DenseGeneral (what `nn.MultiHeadDotProductAttention` builds its
  query, key, value and output projections from) adds its bias as `Dense` here does."""
  module = context.module
  if (context.method_name != "__call__" or type(module) is not nn.DenseGeneral
      or not low_precision(module.dtype) or module.dot_general is not None
      or module.dot_general_cls is not None):
    return next_fun(*args, **kwargs)
  # flax's attention builds the projection itself, with no field to pass a promote function
  # (or a dot_general) to: they are set on this call's (bound, short-lived) instance, and
  # restored after.
  defaults = module.promote_dtype, module.dot_general
  object.__setattr__(module, "promote_dtype", _promote_setting_bias_aside)
  object.__setattr__(module, "dot_general", dot_general)
  try:
    return _call_adding_bias(lambda: next_fun(*args, **kwargs), module.dtype)
  finally:
    object.__setattr__(module, "promote_dtype", defaults[0])
    object.__setattr__(module, "dot_general", defaults[1])


class MultiHeadDotProductAttention(nn.MultiHeadDotProductAttention):
  """`flax.linen.MultiHeadDotProductAttention`, its projections' bias gradients summed in
  float32 under a 16-bit `dtype` (same fields, variables and names)."""

  def __call__(self, *args, **kwargs):
    with nn.intercept_methods(_dense_general_adding_bias):
      return super().__call__(*args, **kwargs)
