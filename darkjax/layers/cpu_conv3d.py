"""CPU lowerings of a 3D convolution and a 3D max pool: 2D convolutions, matmuls, slices.

XLA:CPU runs 2D convolutions on fast kernels (YNNPACK, Eigen) but its native 3D convolution is
several times slower, and pathologically slow for some shapes (strided input gradients, 1-frame
inputs). So when compiling for CPU, `darkjax.layers.conv` rewrites a 3D convolution into 2D
convolutions or matmuls by one of these lowerings (`conv.LOWERINGS`):

  sum2d       sum over temporal taps of 2D convs (each tap a strided temporal slice of the input,
              frames folded into the batch). General 3D kernels. With temporal stride 1
              (`_shifted_taps`) the taps' kernels sit side by side in one 2D conv over all
              frames (no copies of shifted slices) and the outputs are summed shifted in time;
              the input gradient has the same form.
  taps2d      the temporal taps concatenated on the channel axis, one 2D conv (groups respected:
              channels are ordered (group, tap, channel)). RGB stems and grouped convolutions.
  temporal2d  (k, 1, 1) kernels (R(2+1)D temporal convs): one 2D conv over (T, H*W), no copies.
  pointwise   (1, 1, 1) kernels: a matmul over channels.
  s2d         spatial stride 2 on few input channels (RGB / flow stems): a stride-1 conv on the
              2x2 space-to-depth input (4x the channels, half-size kernels), taps as in taps2d.
  native      `lax.conv_general_dilated` in 3D (here with the "dots" kernel gradient).

Grouped convs run with their groups bundled into fewer, wider groups whose kernel is
block-diagonal within a bundle (`bundle_groups`): XLA:CPU's kernels are faster on those despite
the zeros.

Kernel gradients: autodiff of the lowering's 2D convs, summed over pieces of about one 56x56
frame that run concurrently (grouped: one grouped conv per frame) ("xla"), or one matmul per
kernel tap with input and grad_out laid out group-major once ("dots", `kernel_grad_dots`). The 2D
convolutions (`darkjax.layers.conv2d`) carry their own gradients written as canonical NHWC/HWIO
convolutions, because XLA:CPU does not canonicalise autodiff's gradient convolutions inside
`nn.scan` bodies. Every lowering runs under one VJP (`cpu_conv3d`) whose residuals are the conv's
input and kernel, so nothing the lowering derives from them (stacked taps, bundled kernels) is
stored for the backward pass or stacked over `nn.scan` iterations. `separable_max_pool3d` is here
for the same reason as the 2D gradients: strided-slice maxima instead of a slow
select-and-scatter gradient.

Threads: YNNPACK splits a convolution over threads by tiles of 64 output channels only, so a conv
with <= 64 outputs would run on one core. Forward and input-gradient convs whose output channels
would leave cores idle are computed one output column wider, which keeps them on XLA's
multithreaded Eigen convolution (`darkjax.layers.conv2d`).

All lowerings compute the same function (up to float summation order) with the same gradients.
The measurements behind each one, and what was tried and rejected, are in docs/benchmarks.md
("CPU 3D convolution lowerings"). `configure_cpu_flags()` is the hook entry points call before
jax initialises its backend; no XLA flag is set by default.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from darkjax.layers import conv2d

Padding = Sequence[tuple[int, int]]
# XLA flags `configure_cpu_flags` adds on CPU when the user has not set XLA_FLAGS: none (no flag
# measured faster, docs/benchmarks.md "CPU 3D convolution lowerings").
CPU_XLA_FLAGS: tuple[str, ...] = ()


def _backends_initialised() -> bool:
  """Whether jax has created its backends (so XLA_FLAGS set now would be ignored).

  jax has no public query for this (jax-ml/jax#23320). Its public `jax_num_cpu_devices` option
  documents the same condition: changing it after backends exist raises RuntimeError, and before
  that it is a plain setting. So the option is changed and restored, which leaves it as it was.
  """
  current = jax.config.jax_num_cpu_devices
  try:
    jax.config.update("jax_num_cpu_devices", current - 1)
  except RuntimeError:
    return True
  jax.config.update("jax_num_cpu_devices", current)
  return False


def configure_cpu_flags(host_devices: int | None = None) -> bool:
  """Sets XLA:CPU flags in XLA_FLAGS unless the user set XLA_FLAGS; True if it changed them.

  Adds CPU_XLA_FLAGS and, with `host_devices`, `--xla_force_host_platform_device_count` (one CPU
  device per core for data parallelism). Call before jax initialises a backend (first array op
  or device query). Does nothing if XLA_FLAGS is set, if JAX_PLATFORMS excludes cpu, or if a
  backend already exists (then it warns, since the flags would be ignored).
  """
  flags = list(CPU_XLA_FLAGS)
  if host_devices and host_devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={int(host_devices)}")
  if not flags or os.environ.get("XLA_FLAGS"):
    return False
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms and "cpu" not in platforms.split(","):
    return False
  if _backends_initialised():
    import warnings  # pylint: disable=import-outside-toplevel
    warnings.warn("configure_cpu_flags: jax backends already initialised; XLA flags not set")
    return False
  os.environ["XLA_FLAGS"] = " ".join(flags)
  return True


def bundle_groups(kernel: jax.Array, groups: int, bundle: int) -> jax.Array:
  """A (..., in/groups, out) grouped kernel as the equal kernel of groups/bundle groups: each new
  group's (bundle * in/groups, bundle * out/groups) block is block-diagonal (zeros between the
  original groups), so the convolution computes the same values. Gradients flow back through
  the diagonal blocks only."""
  return kernel if bundle == 1 else _bundle_groups(kernel, groups, bundle)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _bundle_groups(kernel, groups, bundle):
  *window, in_group, out = kernel.shape
  k = kernel.reshape(tuple(window) + (in_group, groups // bundle, bundle, out // groups))
  eye = jnp.eye(bundle, dtype=kernel.dtype)
  # (..., j_in, i, bundle index, j_out, o): nonzero only where j_in == j_out
  k = k[..., None, :, :, :, :] * eye.reshape((bundle, 1, 1, bundle, 1))
  return k.reshape(tuple(window) + (bundle * in_group, out))


def _bundle_groups_fwd(kernel, groups, bundle):
  return _bundle_groups(kernel, groups, bundle), kernel.shape


def _bundle_groups_bwd(groups, bundle, shape, grad):
  """The diagonal blocks of the bundled kernel's gradient, by slices. (Autodiff's form, a
  multiply by the identity and a sum, crashed XLA:CPU's YNNPACK transpose inside `nn.scan`
  bodies, jax 0.10.2.)"""
  *window, in_group, out = shape
  g = grad.reshape(tuple(window) + (bundle, in_group, groups // bundle, bundle, out // groups))
  diagonal = [g[..., j, :, :, j, :] for j in range(bundle)]  # each (..., i, bundle index, o)
  return (jnp.stack(diagonal, axis=-2).reshape(shape),)


_bundle_groups.defvjp(_bundle_groups_fwd, _bundle_groups_bwd)


def _pad_time(x: jax.Array, pad: tuple[int, int]) -> jax.Array:
  return jnp.pad(x, ((0, 0), pad, (0, 0), (0, 0), (0, 0))) if any(pad) else x


def _temporal_taps(x: jax.Array, kt: int, st: int) -> tuple[list[jax.Array], int]:
  """Strided temporal slices of (already padded) x, one per tap, each (B, T_out, H, W, C)."""
  t = x.shape[1]
  t_out = (t - kt) // st + 1
  if t_out <= 0:
    raise ValueError(f"conv3d: temporal size {t} (after padding) is smaller than kernel {kt}")
  return [lax.slice_in_dim(x, tap, tap + st * (t_out - 1) + 1, stride=st, axis=1)
          for tap in range(kt)], t_out


def native_conv3d(x, kernel, strides, padding, groups):
  return lax.conv_general_dilated(x, kernel, window_strides=strides, padding=padding,
                                  dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                  feature_group_count=groups)


def _sum2d(x, kernel, strides, padding, groups):
  kt = kernel.shape[0]
  (lo, hi) = padding[0]
  if strides[0] == 1 and lo + hi >= kt - 1:  # no frame computed in vain
    return _sum2d_shifted(x, kernel, strides, padding, groups)
  taps, t_out = _temporal_taps(_pad_time(x, padding[0]), kt, strides[0])
  b = x.shape[0]
  out = None
  for tap, frames in enumerate(taps):
    y = conv2d.conv2d(frames.reshape((b * t_out,) + frames.shape[2:]), kernel[tap], strides[1:],
                padding[1:], groups)
    out = y if out is None else out + y
  return out.reshape((b, t_out) + out.shape[1:])


def _sum2d_shifted(x, kernel, strides, padding, groups):
  """sum2d for temporal stride 1: every tap's 2D conv runs on all frames of x (a free reshape, no
  per-tap copy of shifted frames), and the tap outputs are summed shifted in time:
  out[t] = sum_a conv2d(x[t + a - lo], kernel[a]), frames outside x counting as zeros. Without
  groups, `_shifted_taps` puts the taps' kernels side by side in one 2D conv."""
  if groups == 1:
    return _shifted_taps(x, kernel, tuple(strides[1:]), tuple(padding))
  b, t = x.shape[:2]
  taps, t_out = _overlapping_taps(kernel.shape[0], padding[0], t)
  frames = x.reshape((b * t,) + x.shape[2:])
  outputs = [conv2d.conv2d(frames, kernel[a], strides[1:], padding[1:], groups) for a in taps]
  return _shift_sum([y.reshape((b, t) + y.shape[1:]) for y in outputs],
                    [a - padding[0][0] for a in taps], t_out)


def _overlapping_taps(kt, time_padding, t):
  """The temporal taps that ever see a frame of t frames (some always does when lo + hi >= kt - 1)
  and the number of output frames (temporal stride 1)."""
  lo, hi = time_padding
  t_out = t + lo + hi - kt + 1
  return [a for a in range(kt) if max(0, lo - a) < min(t_out, t + lo - a)], t_out


def _shift_sum(ys, shifts, t_out):
  """out[:, t] = sum_i ys[i][:, t + shifts[i]] for t < t_out, frames outside ys[i] being zeros."""
  out = None
  for y, shift in zip(ys, shifts):
    pads = [(0, 0)] * y.ndim
    pads[1] = (max(0, -shift), max(0, t_out + shift - y.shape[1]))
    y = lax.slice_in_dim(jnp.pad(y, pads), shift + pads[1][0], shift + pads[1][0] + t_out, axis=1)
    out = y if out is None else out + y
  return out


def _shifted_taps_forward(x, kernel, strides, padding):
  b, t = x.shape[:2]
  taps, t_out = _overlapping_taps(kernel.shape[0], padding[0], t)
  cout = kernel.shape[-1]
  y = conv2d.multithreaded_conv2d(x.reshape((b * t,) + x.shape[2:]),
                            jnp.concatenate([kernel[a] for a in taps], axis=-1), strides,
                            padding[1:], 1)
  y = y.reshape((b, t) + y.shape[1:])
  return _shift_sum([y[..., i * cout:(i + 1) * cout] for i in range(len(taps))],
                    [a - padding[0][0] for a in taps], t_out)


# sum2d, temporal stride 1, no groups: one 2D conv over all frames with the taps' kernels side by
# side, outputs summed shifted in time. Its gradients keep that form: the input gradient is one
# transposed conv over all frames of grad_out with the taps' flipped kernels side by side, summed
# shifted back; each tap's kernel gradient pairs frames of x with frames of grad_out directly, so
# neither x nor grad_out is ever copied per tap.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shifted_taps(x, kernel, strides, padding):
  return _shifted_taps_forward(x, kernel, strides, padding)


def _shifted_taps_fwd(x, kernel, strides, padding):
  return _shifted_taps_forward(x, kernel, strides, padding), (x, kernel)


def _shifted_taps_bwd(strides, padding, residuals, grad_out):
  x, kernel = residuals
  b, t = x.shape[:2]
  lo = padding[0][0]
  taps, t_out = _overlapping_taps(kernel.shape[0], padding[0], t)
  cin = kernel.shape[3]
  # the taps' kernels stacked on the input axis: the transposed conv gives every tap's input
  # gradient side by side, (tap, channel) ordered
  z = conv2d.conv2d_input_grad(grad_out.reshape((b * t_out,) + grad_out.shape[2:]),
                         jnp.concatenate([kernel[a] for a in taps], axis=2), x.shape[2:4],
                         strides, padding[1:], 1)
  z = z.reshape((b, t_out) + z.shape[1:])
  dx = _shift_sum([z[..., i * cin:(i + 1) * cin] for i in range(len(taps))],
                  [lo - a for a in taps], t)
  frames = x.reshape((b * t,) + x.shape[2:])
  dk = [jnp.zeros(kernel.shape[1:], kernel.dtype)] * kernel.shape[0]
  for a in taps:
    # grad_out shifted onto the input frames each output frame of this tap read (zeros where it
    # read padding); only slices of it (the kernel-gradient pieces) are used, which XLA can take
    # from grad_out directly
    g_tap = _shift_sum([grad_out], [lo - a], t)
    dk[a] = conv2d.conv2d_kernel_grad(frames, g_tap.reshape((b * t,) + g_tap.shape[2:]),
                                kernel.shape[1:], strides, padding[1:]).astype(kernel.dtype)
  return dx.astype(x.dtype), jnp.stack(dk)


_shifted_taps.defvjp(_shifted_taps_fwd, _shifted_taps_bwd)


def _taps2d(x, kernel, strides, padding, groups):
  kt, kh, kw, cin_group, cout = kernel.shape
  taps, t_out = _temporal_taps(_pad_time(x, padding[0]), kt, strides[0])
  lo, t = padding[0][0], x.shape[1]
  # taps that only ever read temporal padding add zeros: leave them out (1-frame inputs)
  seen = [a for a in range(kt) if any(lo <= s * strides[0] + a < lo + t for s in range(t_out))]
  if len(seen) < kt:
    taps, kernel = taps[seen[0]:seen[-1] + 1], kernel[seen[0]:seen[-1] + 1]
    kt = len(taps)
  b, _, h, w, c = taps[0].shape
  stacked = jnp.stack(taps, axis=-2)  # (B, T_out, H, W, kt, C)
  if groups > 1:  # channel order (group, tap, channel) so each group sees its own taps
    stacked = stacked.reshape((b, t_out, h, w, kt, groups, c // groups)).swapaxes(-3, -2)
  stacked = stacked.reshape((b * t_out, h, w, kt * c))
  kernel2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape((kh, kw, kt * cin_group, cout))
  y = conv2d.conv2d(stacked, kernel2d, strides[1:], padding[1:], groups)
  return y.reshape((b, t_out) + y.shape[1:])


def _space_to_depth(x, kernel, strides, padding, groups):
  """A spatial stride-2 conv as a stride-1 conv on the 2x2 space-to-depth input: 4x the input
  channels, (ceil(kh/2), ceil(kw/2)) kernels (zero-padded to even sizes), same values. XLA:CPU's
  2D convs are slow on 3-channel strided inputs: YNNPACK runs them on one core, and with few input
  channels per tap they are far from the machine's peak (RGB stems, docs/benchmarks.md).
  Temporal taps as in `taps2d` (`sum2d` for kt = 1)."""
  kt, kh, kw, cin_group, cout = kernel.shape
  if groups != 1 or tuple(strides[1:]) != (2, 2):
    raise ValueError(f"conv3d: lowering 's2d' needs an ungrouped conv with spatial strides (2, 2),"
                     f" got strides {tuple(strides)} with {groups} groups")
  b, t, h, w, c = x.shape
  pads, halves = [], []
  for n, k, (lo, hi) in zip((h, w), (kh, kw), padding[1:]):
    out = (n + lo + hi - k) // 2 + 1
    if out <= 0:
      raise ValueError(f"conv3d: spatial size {n} (padded {n + lo + hi}) is smaller than kernel {k}")
    halves.append(-(-k // 2))
    pads.append((lo, 2 * (out + halves[-1] - 1) - lo - n))  # negative high padding crops
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (0, 0, 0), pads[0] + (0,), pads[1] + (0,),
                                           (0, 0, 0)))
  h2, w2 = x.shape[2] // 2, x.shape[3] // 2
  x = x.reshape((b, t, h2, 2, w2, 2, c)).transpose(0, 1, 2, 4, 3, 5, 6).reshape(
      (b, t, h2, w2, 4 * c))
  kh2, kw2 = halves
  kernel = jnp.pad(kernel, ((0, 0), (0, 2 * kh2 - kh), (0, 2 * kw2 - kw), (0, 0), (0, 0)))
  kernel = kernel.reshape((kt, kh2, 2, kw2, 2, cin_group, cout)).transpose(
      0, 1, 3, 2, 4, 5, 6).reshape((kt, kh2, kw2, 4 * cin_group, cout))
  inner = _taps2d if kt > 1 else _sum2d
  return inner(x, kernel, (strides[0], 1, 1), (tuple(padding[0]), (0, 0), (0, 0)), 1)


def _subsample_spatial(x, strides, padding):
  """Pads H, W and keeps every stride-th pixel: a 1x1 spatial kernel sees only those."""
  if any(p for pad in padding[1:] for p in pad):
    x = jnp.pad(x, ((0, 0), (0, 0)) + tuple(padding[1:]) + ((0, 0),))
  return x[:, :, ::strides[1], ::strides[2]] if strides[1:] != (1, 1) else x


def _temporal2d(x, kernel, strides, padding, groups):
  kt, kh, kw, cin_group, cout = kernel.shape
  if (kh, kw) != (1, 1):
    raise ValueError(f"conv3d: lowering 'temporal2d' needs a (k, 1, 1) kernel, got "
                     f"{kernel.shape[:3]}")
  x = _subsample_spatial(x, strides, padding)
  b, t, h, w, c = x.shape
  y = conv2d.conv2d(x.reshape((b, t, h * w, c)), kernel.reshape((kt, 1, cin_group, cout)),
              (strides[0], 1), (padding[0], (0, 0)), groups)
  return y.reshape((b, y.shape[1], h, w, cout))


def _pointwise(x, kernel, strides, padding, groups):
  if kernel.shape[:3] != (1, 1, 1) or groups != 1:
    raise ValueError(f"conv3d: lowering 'pointwise' needs an ungrouped (1, 1, 1) kernel, got "
                     f"{kernel.shape[:3]} with {groups} groups")
  x = _pad_time(x, padding[0])[:, ::strides[0]]
  x = _subsample_spatial(x, strides, padding)
  return lax.dot_general(x, kernel[0, 0, 0], (((4,), (0,)), ((), ())))


def kernel_grad_dots(x, grad_out, kernel_shape, strides, padding, groups):
  """d(loss)/d(kernel) of a 3D convolution as one (positions x channels) matmul per kernel tap.

  Each tap's strided window of the padded input, flattened to (positions, in) per group, is
  contracted with grad_out (positions, out) over positions. Input and grad_out are laid out
  group-major once ((groups, ..., channels of the group)), so the batched matmuls need no
  per-tap transposes.
  """
  kt, kh, kw, cin_group, cout = kernel_shape
  x = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
  b = x.shape[0]
  _, t_out, h_out, w_out, _ = grad_out.shape
  x = jnp.moveaxis(x.reshape(x.shape[:4] + (groups, cin_group)), 4, 0)  # (G, B, T, H, W, cg)
  g = jnp.moveaxis(grad_out.reshape((-1, groups, cout // groups)), 1, 0)  # (G, P, out/G)
  per_tap = []
  for a in range(kt):
    for i in range(kh):
      for j in range(kw):
        if per_tap:  # one window at a time: the next is sliced after the last tap's matmul
          x, _ = lax.optimization_barrier((x, per_tap[-1]))
        limit = (groups, b, a + strides[0] * (t_out - 1) + 1, i + strides[1] * (h_out - 1) + 1,
                 j + strides[2] * (w_out - 1) + 1, cin_group)
        window = lax.slice(x, (0, 0, a, i, j, 0), limit, (1, 1) + tuple(strides) + (1,))
        window = window.reshape((groups, -1, cin_group))
        d = lax.dot_general(window, g, (((1,), (1,)), ((0,), (0,))),  # (groups, cin_g, cout_g)
                            preferred_element_type=jnp.float32)
        per_tap.append(jnp.transpose(d, (1, 0, 2)).reshape((cin_group, cout)))
  return jnp.stack(per_tap).reshape(kernel_shape)


def _lowered(x, kernel, lowering, strides, padding, groups, bundle):
  """The CPU lowering of a conv3d, its groups bundled `bundle` at a time."""
  if bundle > 1:
    kernel = bundle_groups(kernel, groups, bundle)
  return _IMPLEMENTATIONS[lowering](x, kernel, strides, padding, groups // bundle)


# Every CPU lowering runs under this VJP, whose residuals are the conv's own input and kernel.
# Autodiff would keep the lowering's intermediates instead: the stacked taps of `taps2d` (kt
# times the input), reshaped and bundled kernels. Inside `nn.scan` each of those is stacked
# over the iterations (a zero-filled buffer plus one copy per block), while a residual that is
# the block's own parameter or input is passed through (ResNeXt-101, docs/benchmarks.md). The
# backward pass recomputes the cheap layout transforms and differentiates the lowering there;
# XLA drops the forward convolutions it does not use.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def cpu_conv3d(x, kernel, lowering, kernel_grad, strides, padding, groups, bundle):
  """`conv.conv3d` by a resolved `lowering` (not "auto") and `kernel_grad` ("xla" or "dots"),
  its `groups` bundled `bundle` at a time (`bundle_groups`)."""
  return _lowered(x, kernel, lowering, strides, padding, groups, bundle)


def _cpu_conv3d_fwd(x, kernel, lowering, kernel_grad, strides, padding, groups, bundle):
  return _lowered(x, kernel, lowering, strides, padding, groups, bundle), (x, kernel)


def _cpu_conv3d_bwd(lowering, kernel_grad, strides, padding, groups, bundle, residuals, grad_out):
  x, kernel = residuals
  if kernel_grad == "dots":
    _, input_vjp = jax.vjp(
        lambda x: _lowered(x, kernel, lowering, strides, padding, groups, bundle), x)
    (dx,) = input_vjp(grad_out)
    dk = kernel_grad_dots(x, grad_out, kernel.shape, strides, padding, groups)
  else:
    _, vjp = jax.vjp(
        lambda x, k: _lowered(x, k, lowering, strides, padding, groups, bundle), x, kernel)
    dx, dk = vjp(grad_out)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


cpu_conv3d.defvjp(_cpu_conv3d_fwd, _cpu_conv3d_bwd)

_IMPLEMENTATIONS = {"native": native_conv3d, "sum2d": _sum2d, "taps2d": _taps2d,
                    "temporal2d": _temporal2d, "pointwise": _pointwise, "s2d": _space_to_depth}


def separable_max_pool3d(x: jax.Array, window: Sequence[int], strides: Sequence[int],
                         padding: Padding) -> jax.Array:
  """`nn.max_pool` with explicit (lo, hi) paddings, per axis as a running maximum of strided
  slices: same values, and a gradient far cheaper on XLA:CPU than its select-and-scatter
  (docs/benchmarks.md, "Max pool"). Gradients differ only for exactly tied maxima (shared
  instead of given to one)."""
  for axis, (w, s, (lo, hi)) in zip((1, 2, 3), zip(window, strides, padding)):
    if w == 1 and s == 1 and not (lo or hi):
      continue
    pads = [(0, 0)] * x.ndim
    pads[axis] = (lo, hi)
    padded = jnp.pad(x, pads, constant_values=-jnp.inf) if lo or hi else x
    out = (padded.shape[axis] - w) // s + 1
    if out <= 0:
      raise ValueError(f"max_pool3d: window {w} larger than padded size {padded.shape[axis]} "
                       f"on axis {axis}")
    x = functools.reduce(jnp.maximum, [
        lax.slice_in_dim(padded, i, i + s * (out - 1) + 1, stride=s, axis=axis) for i in range(w)])
  return x
