"""3D convolution and max pool whose lowering is chosen per platform and kernel shape.

`Conv3D` / `conv3d` and `max_pool3d` run as XLA's own ops when compiling for GPU or TPU (on a GPU
non-overlapping max pools as running maxima of strided slices, `choose_pool_lowering`), and as
the CPU rewrites of `darkjax.layers.cpu_conv3d` (2D convolutions, matmuls, strided-slice maxima)
when compiling for CPU, whose native 3D convolution is several times slower. The platform is
`darkjax.targets.platform()`: a step traced on a CPU host inside `targets.compiling_for(mesh)`
for a GPU or TPU mesh gets the accelerator's ops.

`lowering="auto"` picks per platform and shape (`choose_lowering`, `choose_kernel_grad`), one rule
for every x86 CPU, the first that applies:

  export      everywhere inside `export_lowering()` (ONNX export): the temporal taps on the
              channel axis and one 2D convolution over the frames folded into the batch, or a
              matmul for (k, 1, 1) kernels (`export_conv3d`); host-independent
  native      on TPU; on GPU grouped convs and the (1, k, k), (k, 1, 1) and (1, 1, 1) kernels
              of the (2+1)D networks, laid out channels-last (`targets.compiler_options`:
              `xla_gpu_force_conv_nhwc`); everywhere inside `native_lowering()` (e.g. for
              counting FLOPs)
  frames2d    full ungrouped (kt, kh, kw) kernels on GPU (`frames2d_conv3d`): the temporal taps
              stacked on the channel axis and one channels-last 2D convolution (cuDNN's NHWC 2D
              kernels; XLA:GPU's own 3D layout is channels-first, NCDHW, with transposes);
              asked for by name (`lowering="frames2d"`), grouped kernels too (the taps stacked
              group-major, one grouped 2D convolution)
  taps2d      grouped convs with temporal stride 1 (sum2d with a larger temporal stride)
  s2d         spatial stride 2 on at most SPACE_TO_DEPTH_MAX_CHANNELS input channels (RGB / flow
              stems)
  pointwise   (1, 1, 1) kernels (on a GPU too, inside `pointwise_gemms(True)`: a GEMM)
  temporal2d  (k, 1, 1) kernels
  taps2d      temporal taps on few channels (RGB stems): a longer contraction per 2D conv
  sum2d       the rest

On a GPU the ungrouped 16-bit convolutions of every lowering run with their channels zero-padded
to multiples of 8 (`conv2d.aligned_conv`: cuDNN's aligned kernels; XLA pads only f16 ones).

A network whose convs are partly grouped (3D-ResNeXt) stays "native" on GPU after its stem
(`network_lowering`), every conv channels-last, its grouped ones with their groups bundled up to
GROUP_BUNDLE_CHANNELS input channels as on CPU (`gpu_group_bundle`: cuDNN's grouped kernels on
4-8 channels a group are its slowest); its stem (a 7x7x7 kernel on RGB) is frames2d.
The (2+1)D networks' native convs channels-last run their steps as fast as 2D ones and compile in
half the time or less (fewer cuDNN candidates to autotune). The GPU measurements behind these
choices are in docs/benchmarks.md ("Train step on one GPU").

Grouped convs on CPU run with groups bundled up to GROUP_BUNDLE_CHANNELS input channels per
bundle (`group_bundle`), the lowering and kernel gradient chosen for the bundled shape. Kernel
gradients are "xla" (autodiff of the lowering's 2D convs in frame pieces) or "dots" (one matmul
per kernel tap), "dots" for (k, 1, 1) kernels, wide or strided convs and more than 16 groups.

`record_lowerings()` counts what a trace chose (`bench` prints it beside the device; the tests
trace every paper's model compiling for GPU and TPU and find native ops only). All lowerings
compute the same function (up to float summation order) with the same gradients; parameters are
laid out like `flax.linen.Conv` (`kernel`: (kt, kh, kw, in/groups, out), `bias`), so checkpoints
do not depend on the lowering. The measurements behind each choice, and what was tried and
rejected, are in docs/benchmarks.md ("CPU 3D convolution lowerings", "CPU ISA: AVX2").
`configure_cpu_flags()` (`darkjax.layers.cpu_conv3d`) is the hook entry points call before jax
initialises its backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darkjax import targets
from darkjax.layers import cpu_conv3d, precision
from darkjax.layers import remat as remat_lib
from darkjax.layers.conv2d import (align_channels, aligned_conv,  # noqa: F401 (API)
                                   export_lowering, export_lowering_forced, native_lowering,
                                   native_lowering_forced, note_lowering, on_constants,
                                   record_lowerings)
from darkjax.layers.cpu_conv3d import configure_cpu_flags  # noqa: F401 (API)

Padding = Sequence[tuple[int, int]]
LOWERINGS = ("auto", "native", "sum2d", "taps2d", "temporal2d", "pointwise", "s2d", "export",
             "frames2d")
# What `record_lowerings()` may count in a trace that depends on nothing of the host: XLA's native
# ops and the export forms. Every other choice is a CPU rewrite tuned to the host.
PORTABLE_LOWERINGS = frozenset({
    "conv3d:native", "conv3d:export", "conv3d:frames2d", "conv3d_kernel_grad:xla", "conv2d:plain",
    "max_pool3d:native", "max_pool3d:export", "depthwise:native", "scan:unrolled",
    "avg_pool:reshape_mean", "fft2:dft", "batch_norm:affine", "attention:xla",
    "conv_channels:aligned", "conv3d_groups:bundled"})
KERNEL_GRADS = ("auto", "xla", "dots")
# Grouped convs on CPU (and by default on GPU, `gpu_group_bundle`) run with groups bundled so
# that each bundle has about this many input channels: the kernel is block-diagonal within a
# bundle (`cpu_conv3d.bundle_groups`), so XLA sees fewer, wider groups (more multiply-adds,
# faster kernels). 0 or 1: no bundling.
GROUP_BUNDLE_CHANNELS = 16
# Spatial stride-2 convs on at most this many input channels (RGB / flow stems) run as stride-1
# convs on the 2x2 space-to-depth input (lowering "s2d"); 0: never.
SPACE_TO_DEPTH_MAX_CHANNELS = 4
# On a GPU, (1, 1, 1) ungrouped kernels as one matmul over channels (lowering "pointwise": a GEMM
# on (positions, channels), cuBLAS's or XLA's Triton one as XLA:GPU autotunes it) instead of
# cuDNN's convolution, inside `pointwise_gemms(True)`. A lever, off by default: `bench --variants
# pointwise=gemm` (docs/benchmarks.md).
_POINTWISE_GEMMS: contextvars.ContextVar[bool] = contextvars.ContextVar("pointwise_gemms",
                                                                        default=False)


@contextlib.contextmanager
def pointwise_gemms(enabled: bool) -> Iterator[None]:
  """Within the block (at trace time), whether `auto` runs a GPU's (1, 1, 1) ungrouped convs as
  matmuls ("pointwise"), a network with grouped convs too (`network_lowering` then leaves its
  other convs to `choose_lowering`, which keeps the grouped ones native), or as XLA's
  convolutions (the default)."""
  token = _POINTWISE_GEMMS.set(bool(enabled))
  try:
    yield
  finally:
    _POINTWISE_GEMMS.reset(token)


# On a GPU, XLA's grouped convolutions with their groups bundled up to this many input channels
# a group (block-diagonal kernels, `cpu_conv3d.bundle_groups`: more multiply-adds on fewer, wider
# groups, as on CPU): GROUP_BUNDLE_CHANNELS by default, another count inside
# `gpu_group_bundle(N)` (0: as they are; `bench --variants group_bundle=0`). cuDNN ran
# 3D-ResNeXt's layer1 grouped convolutions at 18-26 TFLOP/s with their 4 channels a group and at
# 107-118 bundled into 16 (docs/benchmarks.md, "3D-ResNeXt's layouts and levers on one H100").
_GPU_GROUP_BUNDLE: contextvars.ContextVar[int] = contextvars.ContextVar(
    "gpu_group_bundle", default=GROUP_BUNDLE_CHANNELS)


@contextlib.contextmanager
def gpu_group_bundle(channels: int) -> Iterator[None]:
  """Within the block (at trace time), a GPU's native grouped convs with their groups bundled
  up to `channels` input channels a group (`group_bundle`; 0 or 1: never; the default is
  GROUP_BUNDLE_CHANNELS). Same values; the kernel's gradient is the bundled one's diagonal
  blocks. Never inside `native_lowering()` (StableHLO export, FLOP counts, smoke runs: XLA's
  own grouped convolutions, as on every target)."""
  token = _GPU_GROUP_BUNDLE.set(int(channels))
  try:
    yield
  finally:
    _GPU_GROUP_BUNDLE.reset(token)


def choose_lowering(kernel_shape: Sequence[int], padding: Padding, feature_group_count: int = 1,
                    backend: str | None = None, strides: Sequence[int] = (1, 1, 1)) -> str:
  """The `auto` lowering for a (kt, kh, kw, in/groups, out) kernel on `backend`, a platform of
  `darkjax.targets.PLATFORMS` (default: `targets.platform()`)."""
  backend = backend or targets.platform()
  if backend == "gpu":   # XLA's own ops; full ungrouped kernels as channels-last 2D convolutions
    kt, kh, kw = kernel_shape[:3]
    if _POINTWISE_GEMMS.get() and feature_group_count == 1 and (kt, kh, kw) == (1, 1, 1):
      return "pointwise"
    return ("native" if feature_group_count > 1 or kt == 1 or (kh, kw) == (1, 1)
            else "frames2d")
  if backend != "cpu":
    return "native"
  kt, kh, kw, in_group = kernel_shape[:4]
  if feature_group_count > 1:  # temporally strided: taps2d's stacked copies cost more than taps
    return "taps2d" if strides[0] == 1 else "sum2d"
  if (tuple(strides[1:]) == (2, 2) and in_group <= SPACE_TO_DEPTH_MAX_CHANNELS
      and max(kh, kw) > 1):
    return "s2d"
  if (kt, kh, kw) == (1, 1, 1):
    return "pointwise"
  if kh == kw == 1:
    return "temporal2d"
  if kt > 1 and in_group * kt <= 32:  # stems on RGB: a longer contraction per 2D conv pays off
    return "taps2d"
  return "sum2d"


# Ungrouped kxk kernel gradients go to per-tap matmuls ("dots") from this many output channels,
# or from DOTS_MIN_CHANNEL_PRODUCT (in x out) on frames of at least DOTS_MIN_FRAME_POSITIONS
# pixels, or when strided: there the matmuls are wide enough to beat XLA's kernel-gradient convs.
DOTS_MIN_OUT_CHANNELS = 256
DOTS_MIN_CHANNEL_PRODUCT = 64 * 128
DOTS_MIN_FRAME_POSITIONS = 56 * 56


def choose_kernel_grad(kernel_shape: Sequence[int], feature_group_count: int, lowering: str,
                       strides: Sequence[int] = (1, 1, 1),
                       frame_positions: int | None = None) -> str:
  """The `auto` kernel-gradient method: "dots" where XLA:CPU's kernel-gradient conv is slow.

  `frame_positions`: H * W of the input frames, if known. Measurements: docs/benchmarks.md
  ("Kernel gradients by shape").
  """
  if lowering in ("native", "pointwise", "s2d", "export"):  # pointwise is a matmul already; s2d's
    return "xla"                                            # taps are 2D convs on few channels
  kt, kh, kw, in_group, out = kernel_shape[:5]
  if feature_group_count > 1:  # per-frame grouped convs (conv2d) beat the dots up to 16 groups
    spatial = lowering in ("taps2d", "sum2d") and (kh, kw) != (1, 1)
    return "xla" if spatial and feature_group_count <= 16 else "dots"
  if in_group >= 8 and kh == kw == 1:
    return "dots"
  if any(s > 1 for s in strides) or out >= DOTS_MIN_OUT_CHANNELS:
    return "dots"
  if (in_group * out >= DOTS_MIN_CHANNEL_PRODUCT and frame_positions is not None
      and frame_positions >= DOTS_MIN_FRAME_POSITIONS):
    return "dots"
  return "xla"


def resolve_lowering(lowering: str, kernel_shape: Sequence[int] | None = None,
                     padding: Padding | None = None, feature_group_count: int = 1,
                     strides: Sequence[int] = (1, 1, 1)) -> str:
  """`lowering` itself, or for "auto" the choice for `targets.platform()`: "export" inside
  `export_lowering()`, "native" inside `native_lowering()`, else `choose_lowering` (without a
  kernel shape: sum2d on CPU)."""
  if lowering not in LOWERINGS:
    raise ValueError(f"unknown conv lowering {lowering!r}; expected one of {LOWERINGS}")
  if lowering != "auto":
    return lowering
  if export_lowering_forced():
    return "export"
  if native_lowering_forced():
    return "native"
  if kernel_shape is None:
    return "sum2d" if targets.platform() == "cpu" else "native"
  return choose_lowering(kernel_shape, padding or ((0, 0),) * 3, feature_group_count,
                         strides=strides)


def group_bundle(in_group: int, groups: int, channels: int | None = None) -> int:
  """How many groups `conv3d` bundles into one (on CPU; on a GPU as `gpu_group_bundle` sets): the
  largest divisor of `groups` whose bundle has at most `channels` (default GROUP_BUNDLE_CHANNELS)
  input channels (1: none)."""
  channels = GROUP_BUNDLE_CHANNELS if channels is None else channels
  if groups <= 1 or channels <= 1:
    return 1
  return max(b for b in range(1, groups + 1)
             if groups % b == 0 and (b == 1 or b * in_group <= channels))



def export_conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding,
                  feature_group_count: int = 1,
                  precision: Any = jax.lax.Precision.HIGHEST) -> jax.Array:
  """The "export" lowering: the temporal taps side by side on the channel axis (each tap a slice
  of the time-padded clip; group-major for grouped convs, as in `taps2d`) and one 2D convolution
  over the frames folded into the batch, or for (k, 1, 1) kernels one matmul over channels. Only
  ops jax2onnx converts with a symbolic batch (`jnp.pad` of the time axis, slices, reshapes,
  NHWC 2D convolutions, matmuls), few of them, since its conversion time grows faster than
  linearly with the graph; a baked-in kernel is rearranged at trace time (`on_constants`).
  Taps that read only temporal padding are left out; nothing is chosen per host. `precision`:
  HIGHEST for export (float32 everywhere); `frames2d` passes None (TF32 on a GPU, as natively)."""
  kt, kh, kw, cin_group, cout = kernel.shape
  groups = feature_group_count
  (lo, hi), st = padding[0], strides[0]
  b, t, h, w, c = x.shape
  t_out = (t + lo + hi - kt) // st + 1
  if t_out <= 0:
    raise ValueError(f"conv3d: temporal size {t} (padded {t + lo + hi}) is smaller than kernel "
                     f"{kt}")
  taps = [a for a in range(kt) if any(lo <= s * st + a < lo + t for s in range(t_out))] or list(
      range(kt))
  # tap a reads frame s * st + a - lo for output s: pad only what the kept taps read
  before = max(0, lo - taps[0])
  after = max(0, taps[-1] - lo + st * (t_out - 1) - t + 1)
  padded = jnp.pad(x, ((0, 0), (before, after), (0, 0), (0, 0), (0, 0))) if before or after else x
  frames = []
  for a in taps:
    start = a - lo + before
    if st == 1:   # a one-axis slice (one ONNX Slice)
      frames.append(padded if (start, t_out) == (0, padded.shape[1]) else
                    padded[:, start:start + t_out])
    else:
      frames.append(jax.lax.slice_in_dim(padded, start, start + st * (t_out - 1) + 1, st, axis=1))
  if len(taps) < kt:
    kernel = on_constants(lambda k: k[np.asarray(taps)], kernel)
  k = len(taps)
  if groups == 1:
    stacked = frames[0] if k == 1 else jnp.concatenate(frames, axis=-1)   # (tap, channel)
  else:   # (group, tap, channel), so each group sees its own channels' taps
    stacked = jnp.concatenate(frames, axis=-1).reshape((b, t_out, h, w, k, groups, c // groups))
    stacked = jnp.swapaxes(stacked, -3, -2).reshape((b, t_out, h, w, k * c))
  if (kh, kw) == (1, 1) and groups == 1 and not any(p for pad in padding[1:] for p in pad):
    if tuple(strides[1:]) != (1, 1):
      stacked = jax.lax.slice(stacked, (0,) * 5, stacked.shape, (1, 1) + tuple(strides[1:]) + (1,))
    matrix = on_constants(lambda k: k.reshape((-1, cout)), kernel)   # (tap, channel) x out
    return jnp.matmul(stacked, matrix, precision=precision)
  # (out, (tap, channel), kh, kw): the layout of ONNX's Conv, so no transposed copy in the graph
  kernel2d = on_constants(lambda k: jnp.transpose(k, (4, 0, 3, 1, 2)).reshape(
      (cout, k.shape[0] * cin_group, kh, kw)), kernel)
  y = aligned_conv(stacked.reshape((b * t_out, h, w, stacked.shape[-1])), kernel2d, strides[1:],
                   padding[1:], ("NHWC", "OIHW", "NHWC"), groups, precision)
  return y.reshape((b, t_out) + y.shape[1:])


def frames2d_conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding,
                    feature_group_count: int = 1) -> jax.Array:
  """The "frames2d" lowering, XLA's own ops with every convolution a channels-last 2D one: a
  (1, kh, kw) kernel without temporal padding is one 2D convolution over the frames folded into
  the batch (temporal stride: a strided slice first); a (kt, 1, 1) kernel without spatial padding
  one 2D convolution with a (kt, 1) kernel over (time, pixels) (spatial stride: a slice first);
  any other kernel `export_conv3d`'s temporal taps stacked on the channel axis (group-major for
  grouped ones) and one 2D convolution (at the default precision). Differentiated by autodiff
  (XLA's own gradients of 2D convolutions). On a GPU these reach cuDNN's NHWC 2D kernels instead
  of its channels-first 3D ones."""
  kt, kh, kw, _, cout = kernel.shape
  b, t, h, w, c = x.shape
  spatial_pad = any(p for pad in padding[1:] for p in pad)
  if kt == 1 and not any(padding[0]):
    if strides[0] > 1:
      x = x[:, ::strides[0]]
    frames = x.shape[1]
    y = aligned_conv(x.reshape((b * frames, h, w, c)), kernel[0], strides[1:], padding[1:],
                     ("NHWC", "HWIO", "NHWC"), feature_group_count)
    return y.reshape((b, frames) + y.shape[1:])
  if kh == kw == 1 and not spatial_pad:
    if tuple(strides[1:]) != (1, 1):
      x = x[:, :, ::strides[1], ::strides[2]]
    h, w = x.shape[2:4]
    y = aligned_conv(x.reshape((b, t, h * w, c)), kernel[:, 0], (strides[0], 1),
                     (tuple(padding[0]), (0, 0)), ("NHWC", "HWIO", "NHWC"), feature_group_count)
    return y.reshape((b, y.shape[1], h, w, cout))
  return export_conv3d(x, kernel, strides, padding, feature_group_count, precision=None)


def network_lowering(lowering: str, grouped: bool) -> str:
  """The lowering a network passes to its convs: `lowering`, except "auto" on a GPU for a network
  with grouped convs, which runs XLA's native ops (one layout, no transposes between its grouped
  and ungrouped convs; a stem on the clip may still take its own, as ResNet3D's does). Inside
  `export_lowering()` and `pointwise_gemms(True)` "auto" stays."""
  if (lowering == "auto" and grouped and targets.platform() == "gpu"
      and not export_lowering_forced() and not native_lowering_forced()
      and not _POINTWISE_GEMMS.get()):
    return "native"
  return lowering


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1, 1),
           padding: Padding = ((0, 0), (0, 0), (0, 0)), feature_group_count: int = 1,
           lowering: str = "auto", kernel_grad: str = "auto") -> jax.Array:
  """NDHWC x DHWIO -> NDHWC convolution with explicit (lo, hi) paddings.

  `kernel_grad`: how the kernel gradient is computed, "xla" (autodiff of the lowering), "dots"
  (`kernel_grad_dots`) or "auto" (`choose_kernel_grad`).
  """
  strides = tuple(int(s) for s in strides)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  requested = lowering
  lowering = resolve_lowering(lowering, kernel.shape, padding, feature_group_count, strides)
  if kernel_grad not in KERNEL_GRADS:
    raise ValueError(f"unknown kernel_grad {kernel_grad!r}; expected one of {KERNEL_GRADS}")
  if lowering in ("export", "frames2d"):
    if kernel_grad == "dots":
      raise ValueError(f"conv3d: the {lowering!r} lowering is differentiated by autodiff; "
                       f"kernel_grad must be 'auto' or 'xla', got 'dots'")
    note_lowering("conv3d", lowering)
    note_lowering("conv3d_kernel_grad", "xla")
    lowered = export_conv3d if lowering == "export" else frames2d_conv3d
    return lowered(x, kernel, strides, padding, feature_group_count)
  # CPU lowerings of grouped convs: fewer, wider groups (block-diagonal kernels), the lowering
  # and kernel gradient chosen for the bundled groups
  bundle = group_bundle(kernel.shape[3], feature_group_count) if lowering != "native" else 1
  bundled_shape = tuple(kernel.shape[:3]) + (kernel.shape[3] * bundle, kernel.shape[4])
  if bundle > 1:
    lowering = resolve_lowering(requested, bundled_shape, padding, feature_group_count // bundle,
                                strides)
  if kernel_grad == "auto" and native_lowering_forced():
    kernel_grad = "xla"   # XLA's own gradient, whatever the host
  elif kernel_grad == "auto":
    kernel_grad = choose_kernel_grad(bundled_shape, feature_group_count // bundle, lowering,
                                     strides, x.shape[2] * x.shape[3])
  note_lowering("conv3d", lowering)
  note_lowering("conv3d_kernel_grad", kernel_grad)
  if lowering == "native" and kernel_grad == "xla":  # GPU / TPU: XLA's own op and gradients
    gpu_bundle = (group_bundle(kernel.shape[3], feature_group_count, _GPU_GROUP_BUNDLE.get())
                  if targets.platform() == "gpu" and not native_lowering_forced() else 1)
    if gpu_bundle > 1:   # fewer, wider groups for cuDNN (gpu_group_bundle)
      note_lowering("conv3d_groups", "bundled")
      kernel = cpu_conv3d.bundle_groups(kernel, feature_group_count, gpu_bundle)
      feature_group_count //= gpu_bundle
    return aligned_conv(x, kernel, strides, padding, ("NDHWC", "DHWIO", "NDHWC"),
                        feature_group_count)
  return cpu_conv3d.cpu_conv3d(x, kernel, lowering, kernel_grad, strides, padding,
                               feature_group_count, bundle)



def choose_pool_lowering(window: Sequence[int], strides: Sequence[int],
                         backend: str | None = None) -> str:
  """The `auto` max-pool lowering on `backend` (default: `targets.platform()`): "separable" on CPU
  and, for windows that do not overlap (each no longer than its stride: C3D's), on GPU; "native"
  on TPU and for overlapping windows on GPU (3D-ResNet's 3x3x3 stem pool of stride 2).
  `nn.max_pool`'s gradient is a select-and-scatter: slow on XLA:CPU, and on XLA:GPU a window
  arg-max (values and indices) then a scatter of atomic adds into the input's gradient; the
  separable form's gradient is elementwise selects that XLA fuses. Compiled for an H100, C3D's
  step moves 42% fewer bytes in its fusions that way, while 3D-ResNeXt's overlapping stem pool
  reads its input once per tap and axis, 2 GiB more a step than the arg-max and scatter
  (docs/benchmarks.md)."""
  backend = backend or targets.platform()
  if backend == "cpu":
    return "separable"
  overlapping = any(w > s for w, s in zip(window, strides))
  return "separable" if backend == "gpu" and not overlapping else "native"


def max_pool3d(x: jax.Array, window: Sequence[int], strides: Sequence[int],
               padding: Padding = ((0, 0), (0, 0), (0, 0)), lowering: str = "auto") -> jax.Array:
  """NDHWC max pool with explicit (lo, hi) paddings (padding values never win, like PyTorch's).

  `lowering`: "native" (`nn.max_pool`), "separable" (`cpu_conv3d.separable_max_pool3d`: running
  maxima of strided slices, the same values, an elementwise gradient) or "auto":
  `choose_pool_lowering` (separable on CPU and for non-overlapping windows on GPU), native inside
  `native_lowering()`, and inside `export_lowering()` "export": the separable form, which
  jax2onnx converts (its 3D max pool gives wrong shapes in onnxruntime).
  """
  if lowering == "auto" and export_lowering_forced():
    note_lowering("max_pool3d", "export")
    return cpu_conv3d.separable_max_pool3d(x, window, strides, padding)
  if lowering == "auto":
    lowering = ("native" if native_lowering_forced()
                else choose_pool_lowering(window, strides))
  note_lowering("max_pool3d", lowering)
  if lowering == "native":
    return nn.max_pool(x, tuple(window), strides=tuple(strides), padding=tuple(padding))
  if lowering != "separable":
    raise ValueError(f"unknown max-pool lowering {lowering!r}; expected auto, native, separable")
  return cpu_conv3d.separable_max_pool3d(x, window, strides, padding)


class Conv3D(nn.Module):
  """3D convolution with explicit paddings, parameter-compatible with `nn.Conv`."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1, 1)
  padding: Padding = ((0, 0), (0, 0), (0, 0))
  feature_group_count: int = 1
  use_bias: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
  bias_init: Any = nn.initializers.zeros
  lowering: str = "auto"
  kernel_grad: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    if in_features % self.feature_group_count or self.features % self.feature_group_count:
      raise ValueError(f"{self.name}: {in_features} input / {self.features} output channels not "
                       f"divisible by {self.feature_group_count} groups")
    kernel_shape = tuple(self.kernel_size) + (in_features // self.feature_group_count,
                                              self.features)
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,),
                      self.param_dtype) if self.use_bias else None
    x, low = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    conv = functools.partial(conv3d, strides=self.strides, padding=self.padding,
                             feature_group_count=self.feature_group_count,
                             lowering=self.lowering, kernel_grad=self.kernel_grad)
    if precision.weight_gradients_in_float32(x.dtype, "conv") and kernel.dtype == jnp.float32:
      # a batch over devices: the kernel's gradient leaves each device in float32 (precision)
      def weight_gradient(x, dy, shape, **kwargs):
        return precision.conv_weight_gradient(x, dy, shape, self.strides, self.padding, None,
                                              None, ("NDHWC", "DHWIO", "NDHWC"),
                                              self.feature_group_count, **kwargs)
      y = precision.with_float32_weight_gradient(conv, weight_gradient, x, kernel)
    else:
      y = conv(x, low)
    if bias is not None:   # in float32 at least: its gradient is summed over every position
      y = precision.add_bias(y, bias)
    if export_lowering_forced():   # the tag is for training's remat policies (an ONNX Identity)
      return y
    return remat_lib.tag_conv(y)
