"""2D convolutions for the CPU lowerings of darkjax.layers.cpu_conv3d: NHWC / HWIO convolutions
whose gradients are written as canonical convolutions, run on every core.

XLA:CPU rewrites the non-canonical gradient convolutions autodiff produces into fast library
calls, but not inside while loops (`nn.scan`, `lax.scan`), where they fall back to a far slower
loop; so `conv2d` carries its own VJP. Its kernel gradient is summed over pieces of frames
(faster per frame, and the pieces run concurrently), and forward / input-gradient convolutions
that YNNPACK would run on one core are kept on XLA's multithreaded Eigen convolution
(`multithreaded_conv2d`). Measurements: docs/benchmarks.md ("CPU 3D convolution lowerings").
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import os

import jax
import jax.numpy as jnp
from jax import lax

from darkjax import targets

# `conv2d_kernel_grad` splits the batch of frames into pieces of as many frames as have
# KERNEL_GRAD_PIECE_POSITIONS input pixels (at least one), and at most KERNEL_GRAD_PIECES pieces.
KERNEL_GRAD_PIECE_POSITIONS = 56 * 56
KERNEL_GRAD_PIECES = 32
# YNNPACK (XLA:CPU's 2D convolution library) parallelises over tiles of this many output channels;
# forward and input-gradient convs that would keep less than YNN_MIN_CORE_USE of the cores busy
# go to XLA's Eigen convolution instead (`multithreaded_conv2d`).
YNN_TILE_CHANNELS = 64
YNN_MIN_CORE_USE = 0.8
# Set inside `native_lowering()`: `auto` then means XLA's native 3D ops on every backend.
_FORCE_NATIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("force_native_conv3d",
                                                                     default=False)


@contextlib.contextmanager
def native_lowering():
  """Within the block, `conv3d`, `max_pool3d` and depthwise 2D convs (darkjax.layers.depthwise)
  traced with lowering="auto" use XLA's native ops on every backend, as `conv_lowering="native"`
  does for one model. For counting the FLOPs of
  the mathematical convolution on CPU (`darkjax.tools.zoo_table`): the CPU lowerings add pads,
  slices and tap sums, and XLA's cost analysis counts them. It acts at trace time only, so jit a
  fresh function inside the block (an already traced and cached one keeps its lowering).
  """
  token = _FORCE_NATIVE.set(True)
  try:
    yield
  finally:
    _FORCE_NATIVE.reset(token)


def native_lowering_forced() -> bool:
  """Whether the current trace is inside `native_lowering()` (or `export_lowering()`)."""
  return _FORCE_NATIVE.get()


# Set inside `export_lowering()`: what `darkjax.tools.export` writes as ONNX.
_EXPORT: contextvars.ContextVar[bool] = contextvars.ContextVar("export_lowering", default=False)


@contextlib.contextmanager
def export_lowering():
  """Within the block, everything traced takes its export form: a form that reads nothing of the
  host (platform, core count) and that jax2onnx converts, computing the same function as the
  training form. `conv3d` with lowering="auto" is the "export" lowering (one 2D convolution or
  matmul per 3D convolution, `darkjax.layers.conv.export_conv3d`), `max_pool3d` the running
  maximum of strided slices; depthwise and 2D convolutions are XLA's native ops, as in
  `native_lowering()`. Models and layers that jax2onnx cannot convert as trained, or converts
  into many nodes, ask `export_lowering_forced()`: the `nn.scan` stages run unrolled over the
  same stacked parameters (`darkjax.layers.scanned`), inference BatchNorm is a multiply-add
  (`darkjax.layers.norm`), pooling a reshape and mean, LIFT-Net's 2D FFT a DFT by matrix
  products. Trace time only, like `native_lowering()`.
  """
  native, export = _FORCE_NATIVE.set(True), _EXPORT.set(True)
  try:
    yield
  finally:
    _EXPORT.reset(export)
    _FORCE_NATIVE.reset(native)


def export_lowering_forced() -> bool:
  """Whether the current trace is inside `export_lowering()`."""
  return _EXPORT.get()


def on_constants(fn, *arrays):
  """`fn(*arrays)`, computed at trace time when no array is traced (weights that export bakes in
  as constants): the exported graph then holds the result as one constant instead of the ops
  that derive it (slices of stacked parameters, rearranged kernels)."""
  if any(isinstance(a, jax.core.Tracer) for a in arrays):
    return fn(*arrays)
  with jax.ensure_compile_time_eval():
    return fn(*(jnp.asarray(a) for a in arrays))


def index_in_dim(a, index: int, axis: int = 0):
  """`a`'s slice `index` along `axis`, that axis dropped (at trace time for a constant)."""
  return on_constants(lambda a: lax.index_in_dim(a, index, axis, keepdims=False), a)


_RECORD: contextvars.ContextVar[collections.Counter | None] = contextvars.ContextVar(
    "darkjax_lowering_record", default=None)


@contextlib.contextmanager
def record_lowerings():
  """Counts, while tracing inside the block, the lowering each backend-aware op chooses: keys
  "op:lowering" ("conv3d:sum2d", "conv3d:native", "max_pool3d:separable", "depthwise:blockdiag",
  "conv2d:wide", "conv2d:plain", ...), each with its number of calls. What `bench` prints beside
  the device it ran on, and how the tests check that GPU/TPU traces get XLA's native ops only.
  Trace time only, like `native_lowering()`: trace a fresh function (`jax.eval_shape`) inside it.
  An enclosing block does not count what an inner one does.
  """
  counter: collections.Counter = collections.Counter()
  token = _RECORD.set(counter)
  try:
    yield counter
  finally:
    _RECORD.reset(token)


@contextlib.contextmanager
def recording_paused():
  """Within the block nothing is recorded (a forward traced again for its gradient, as
  `darkjax.layers.precision` does, is recorded once)."""
  token = _RECORD.set(None)
  try:
    yield
  finally:
    _RECORD.reset(token)


def note_lowering(op: str, lowering: str) -> None:
  """Records `op`'s chosen `lowering` in the innermost `record_lowerings()` block, if any."""
  counter = _RECORD.get()
  if counter is not None:
    counter[f"{op}:{lowering}"] += 1


# cuDNN's tensor-core kernels for 16-bit NHWC convolutions want channel counts in multiples of 8
# (16 bytes). XLA:GPU pads f16 convolutions so (its CudnnPadForConvolutions pass) but not bf16
# ones, and in H100 profiles of the zoo's bf16 steps the unaligned ones (C3D's stacked-tap conv1
# on 9 channels, R(2+1)D's stem on 3 -> 45) ran many times slower per operation than the aligned
# ones beside them (docs/benchmarks.md, "Convolutions' channels padded to multiples of 8"). So on
# a GPU ungrouped 16-bit convolutions get their channels zero-padded to this multiple
# (`aligned_conv`); 0 or 1: never.
GPU_CHANNEL_MULTIPLE = 8
_ALIGN_CHANNELS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "darkjax_align_conv_channels", default=True)


@contextlib.contextmanager
def align_channels(enabled: bool):
  """Within the block (at trace time), whether `aligned_conv` may pad channels on a GPU (the
  default) or never does: `bench --variants align_channels=off` traces the unpadded form."""
  token = _ALIGN_CHANNELS.set(bool(enabled))
  try:
    yield
  finally:
    _ALIGN_CHANNELS.reset(token)


def aligned_conv(lhs, rhs, window_strides, padding, dimension_numbers, feature_group_count=1,
                 precision=None, lhs_dilation=None, rhs_dilation=None):
  """`lax.conv_general_dilated`; compiling for a GPU, an ungrouped 16-bit convolution whose input
  or output channels are not multiples of GPU_CHANNEL_MULTIPLE runs with both zero-padded to it
  (lhs's features, rhs's input and output features) and its output sliced back: the same values
  and, through the pad and the slice, the same gradients, on cuDNN's aligned kernels. A trace
  that pads notes `conv_channels:aligned` (`record_lowerings`)."""
  conv = functools.partial(lax.conv_general_dilated, window_strides=tuple(window_strides),
                           padding=padding if isinstance(padding, str)
                           else tuple(tuple(p) for p in padding),
                           lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                           dimension_numbers=dimension_numbers,
                           feature_group_count=feature_group_count, precision=precision)
  if not aligns_channels(lhs.dtype, feature_group_count):
    return conv(lhs, rhs)
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  cin_axis, out_axis, in_axis = numbers.lhs_spec[1], numbers.rhs_spec[0], numbers.rhs_spec[1]
  cin, cout = lhs.shape[cin_axis], rhs.shape[out_axis]
  cin_to, cout_to = aligned(cin), aligned(cout)
  if (cin_to, cout_to) == (cin, cout):
    return conv(lhs, rhs)
  note_lowering("conv_channels", "aligned")
  y = conv(widen(lhs, {cin_axis: cin_to}), widen(rhs, {in_axis: cin_to, out_axis: cout_to}))
  return lax.slice_in_dim(y, 0, cout, axis=numbers.out_spec[1]) if cout_to != cout else y


def aligns_channels(dtype, feature_group_count: int = 1) -> bool:
  """Whether a convolution of `dtype` inputs with `feature_group_count` groups, traced now, gets
  its channels padded to multiples of GPU_CHANNEL_MULTIPLE (`aligned_conv`): ungrouped, 16-bit,
  compiling for a GPU, outside `export_lowering()` and `align_channels(False)`."""
  return (GPU_CHANNEL_MULTIPLE > 1 and feature_group_count == 1 and _ALIGN_CHANNELS.get()
          and jnp.dtype(dtype).itemsize == 2 and targets.platform() == "gpu"
          and not export_lowering_forced())


def aligned(channels: int) -> int:
  """`channels` rounded up to a multiple of GPU_CHANNEL_MULTIPLE."""
  return -(-channels // GPU_CHANNEL_MULTIPLE) * GPU_CHANNEL_MULTIPLE


def widen(x, sizes):
  """x zero-padded at the end of each axis in `sizes` ({axis: size}) to that size."""
  pads = [(0, 0)] * x.ndim
  for axis, size in sizes.items():
    pads[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, pads) if any(hi for _, hi in pads) else x


def plain_conv2d(x, kernel, strides, padding, groups, lhs_dilation=None, rhs_dilation=None,
                 preferred_element_type=None):
  return lax.conv_general_dilated(x, kernel, window_strides=tuple(strides), padding=tuple(padding),
                                  lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=groups,
                                  preferred_element_type=preferred_element_type)


def cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def ynn_core_use(out_channels: int) -> float:
  """Estimated share of the cores kept busy when YNNPACK runs a conv with this many output
  channels: tiles of YNN_TILE_CHANNELS (the last one partial), each on one core, the largest
  first to the least loaded core (measured core use: docs/benchmarks.md, "Threads")."""
  loads = [0] * cores()
  for start in range(0, out_channels, YNN_TILE_CHANNELS):
    loads[loads.index(min(loads))] += min(YNN_TILE_CHANNELS, out_channels - start)
  return out_channels / (len(loads) * max(loads))


def multithreaded_conv2d(x, kernel, strides, padding, groups, lhs_dilation=None):
  """`plain_conv2d` for the forward and input-gradient convolutions of the CPU lowerings.

  XLA:CPU hands a 2D convolution to YNNPACK when it can, and YNNPACK splits the work over threads
  by tiles of 64 output channels only: a convolution with <= 64 output channels runs on one core.
  XLA's Eigen convolution uses every core. Grouped convolutions (not depthwise) run on one core in
  YNNPACK whatever their width, and slower than in Eigen (docs/benchmarks.md, "Threads").
  XLA keeps convolutions whose output is wider than their input away from YNNPACK, so for those
  shapes one extra column of zero padding is added on the right and its output column dropped:
  same values (one output column more is computed, ~2% of the work for 56 columns).
  """
  kh, kw, cin_group, cout = kernel.shape
  if groups > 1:
    idle_cores = cin_group > 1  # depthwise convs: see darkjax.layers.depthwise
  else:
    idle_cores = ynn_core_use(cout) < YNN_MIN_CORE_USE
  (top, bottom), (left, right) = padding
  width = x.shape[2] + left + right - kw + 1  # output width (stride 1)
  if (_FORCE_NATIVE.get() or targets.platform() != "cpu" or not idle_cores or lhs_dilation
      or tuple(strides) != (1, 1) or max(cin_group * groups, cout) <= 16
      or not 1 <= width <= x.shape[2]):  # YNNPACK would not take it anyway, or nothing to compute
    note_lowering("conv2d", "plain")
    return plain_conv2d(x, kernel, strides, padding, groups, lhs_dilation=lhs_dilation)
  note_lowering("conv2d", "wide")
  y = plain_conv2d(x, kernel, strides, ((top, bottom), (left, right + x.shape[2] + 1 - width)),
                    groups)
  return y[:, :, :width]


# 2D convolution whose gradients are written as convolutions in canonical NHWC/HWIO form. XLA:CPU
# rewrites the non-canonical gradient convolutions autodiff produces into fast Eigen calls, but
# not inside while loops (`nn.scan`, `lax.scan`), where they fall back to a far slower loop.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, kernel, strides, padding, groups):
  return multithreaded_conv2d(x, kernel, strides, padding, groups)


def conv2d_fwd(x, kernel, strides, padding, groups):
  return multithreaded_conv2d(x, kernel, strides, padding, groups), (x, kernel)


def conv2d_input_grad(grad_out, kernel, in_hw, strides, padding, groups):
  """Transposed convolution: grad_out dilated by the strides, against the flipped kernel."""
  kh, kw, cin_group, cout = kernel.shape
  flipped = kernel[::-1, ::-1].reshape((kh, kw, cin_group, groups, cout // groups))
  flipped = jnp.transpose(flipped, (0, 1, 4, 3, 2)).reshape((kh, kw, cout // groups,
                                                             groups * cin_group))
  pads = []
  for n, m, k, s, (lo, _) in zip(in_hw, grad_out.shape[1:3], (kh, kw), strides, padding):
    pads.append((k - 1 - lo, n - 1 + lo - (m - 1) * s))
  dilation = tuple(strides) if tuple(strides) != (1, 1) else None
  return multithreaded_conv2d(grad_out, flipped, (1, 1), pads, groups, lhs_dilation=dilation)


def conv2d_kernel_grad(x, grad_out, kernel_shape, strides, padding):
  """Ungrouped kernel gradient summed over pieces of the batch (frames), see KERNEL_GRAD_PIECES.

  XLA:CPU computes the kernel gradient of one frame faster per frame than of many frames at once
  (docs/benchmarks.md, "Kernel gradients"), and the independent pieces run concurrently.
  """
  n = x.shape[0]
  size = max(1, KERNEL_GRAD_PIECE_POSITIONS // (x.shape[1] * x.shape[2]),
             -(-n // KERNEL_GRAD_PIECES))
  pieces = [conv2d_kernel_grad_piece(x[i:i + size], grad_out[i:i + size], kernel_shape, strides,
                                      padding) for i in range(0, n, size)]
  return _pairwise_sum(pieces)


def conv2d_kernel_grad_piece(x, grad_out, kernel_shape, strides, padding):
  """Kernel gradient as a conv with the batch as the contracted feature axis."""
  kh, kw = kernel_shape[:2]
  lhs = jnp.transpose(x, (3, 1, 2, 0))  # (C, H, W, N): channels as batch, N contracted
  rhs = jnp.transpose(grad_out, (1, 2, 0, 3))  # (H', W', N, O)
  dilation = tuple(strides) if tuple(strides) != (1, 1) else None
  # Padding inside the conv (not jnp.pad) is faster on XLA:CPU.
  out = plain_conv2d(lhs, rhs, (1, 1), padding, 1, rhs_dilation=dilation)
  return jnp.transpose(out[:, :kh, :kw], (1, 2, 0, 3))


def _pairwise_sum(pieces):
  """The pieces' sum, added in float32 at least (bfloat16 pieces too; float64 stays), in their
  dtype."""
  dtype = pieces[0].dtype
  pieces = [p.astype(jnp.promote_types(dtype, jnp.float32)) for p in pieces]
  while len(pieces) > 1:  # independent adds, shorter float summation chains
    pieces = [a + b for a, b in zip(pieces[::2], pieces[1::2])] + pieces[len(pieces) // 2 * 2:]
  return pieces[0].astype(dtype)


def conv2d_grouped_kernel_grad(x, grad_out, kernel_shape, strides, padding, groups):
  """Grouped kernel gradient as one grouped convolution per frame, summed over frames.

  Per frame, the input's channels of a group become the batch and the group index the feature
  groups of a conv whose "kernel" is grad_out: out[i, u, v, (g, o)] = sum over output pixels of
  x[pixel + (u, v), (g, i)] * grad_out[pixel, (g, o)]. Autodiff's form (a batch-grouped conv)
  is far slower on XLA:CPU; per-tap matmuls (`cpu_conv3d.kernel_grad_dots`) spend their time
  copying strided windows. One frame per conv is the fastest split (docs/benchmarks.md, "Grouped
  kernel gradients"); the frames go through a `lax.scan`, as fast as unrolled convs and one conv
  to compile instead of one per frame.
  """
  kh, kw, cin_group, cout = kernel_shape
  n, h, w, _ = x.shape
  _, ho, wo, _ = grad_out.shape
  dilation = tuple(strides) if tuple(strides) != (1, 1) else None
  # Each frame's conv accumulates in float32 at least and so does the sum over frames (bfloat16
  # sums of B x T frames lose the gradient's low bits as the count grows), cast once at the end.
  dtype = jnp.promote_types(x.dtype, grad_out.dtype)
  accumulate = jnp.promote_types(dtype, jnp.float32)

  def frame(x_frame, g_frame):
    lhs = x_frame.reshape((h, w, groups, cin_group)).transpose(3, 0, 1, 2)  # (cin_g, H, W, G)
    rhs = g_frame.reshape((ho, wo, 1, cout))  # (H', W', 1 per group, G * out_g)
    out = plain_conv2d(lhs, rhs, (1, 1), padding, groups, rhs_dilation=dilation,
                       preferred_element_type=accumulate)
    return jnp.transpose(out[:, :kh, :kw], (1, 2, 0, 3))  # (kh, kw, cin_g, out)

  if n == 1:
    return frame(x[0], grad_out[0]).astype(dtype)
  dk, _ = lax.scan(lambda acc, frames: (acc + frame(*frames), None),
                   jnp.zeros(tuple(kernel_shape), accumulate), (x, grad_out))
  return dk.astype(dtype)


def conv2d_bwd(strides, padding, groups, residuals, grad_out):
  x, kernel = residuals
  dx = conv2d_input_grad(grad_out, kernel, x.shape[1:3], strides, padding, groups)
  if groups == 1:
    dk = conv2d_kernel_grad(x, grad_out, kernel.shape, strides, padding)
  else:
    dk = conv2d_grouped_kernel_grad(x, grad_out, kernel.shape, strides, padding, groups)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv2d.defvjp(conv2d_fwd, conv2d_bwd)
