"""Zero-DCE light-enhancement curves, PyTorch-style bilinear resizing, key-frame curve sharing.

The light-enhancement curve of Zero-DCE (Guo et al., CVPR 2020) is applied n times (n = 8 in the
papers), each iteration with its own per-pixel, per-channel curve map r in [-1, 1]:

  convention="paper":     LE(x) = x + r * x * (1 - x)
  convention="official":  LE(x) = x + r * (x^2 - x)      (Li-Chongyi/Zero-DCE and Zero-DCE++ code)

The two differ only in the sign of r. Released Zero-DCE / Zero-DCE++ snapshots were trained with the
official form, so enhancers default to it; a network trained from scratch works with either.

Curve maps are laid out channels-last like the official 24-channel output: iteration i uses channels
[3 i, 3 i + 3). A 3-channel map is shared by all iterations (Zero-DCE++).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

CONVENTIONS = ("paper", "official")
INTERMEDIATE_ITERATION = 4  # the official code also returns the image after 4 iterations


def _check_convention(convention: str) -> None:
  if convention not in CONVENTIONS:
    raise ValueError(f"unknown curve convention {convention!r}; expected one of {CONVENTIONS}")


def curve_step(x: jax.Array, r: jax.Array, convention: str = "official") -> jax.Array:
  """One light-enhancement curve iteration."""
  _check_convention(convention)
  if convention == "paper":
    return x + r * x * (1.0 - x)
  return x + r * (x * x - x)


def _split_curve_maps(x: jax.Array, curve_maps: jax.Array,
                      num_iterations: int | None) -> list[jax.Array]:
  """Per-iteration maps (each with x's channel count) from a stacked or a shared map."""
  channels = x.shape[-1]
  if curve_maps.ndim < 3 or x.ndim < 3:
    raise ValueError(f"curves: images and curve maps must be (..., H, W, C); got {x.shape} and "
                     f"{curve_maps.shape}")
  if tuple(curve_maps.shape[-3:-1]) != tuple(x.shape[-3:-1]):
    raise ValueError(f"curves: curve maps are {curve_maps.shape[-3:-1]} (H, W) but images are "
                     f"{x.shape[-3:-1]}; resize the maps first (resize_bilinear)")
  map_channels = curve_maps.shape[-1]
  if map_channels == channels:
    if num_iterations is None:
      raise ValueError("curves: a shared (…, H, W, C) curve map needs num_iterations")
    return [curve_maps] * num_iterations
  if map_channels % channels:
    raise ValueError(f"curves: {map_channels} curve-map channels is not a multiple of the "
                     f"{channels} image channels")
  stacked = map_channels // channels
  if num_iterations is not None and num_iterations != stacked:
    raise ValueError(f"curves: curve maps hold {stacked} iterations but num_iterations="
                     f"{num_iterations}")
  return [curve_maps[..., i * channels:(i + 1) * channels] for i in range(stacked)]


def curve_iterates(x: jax.Array, curve_maps: jax.Array, convention: str = "official",
                   num_iterations: int | None = None) -> list[jax.Array]:
  """All iterates [LE_1(x), ..., LE_n(x)] of the curve (see `apply_curves`)."""
  _check_convention(convention)
  iterates = []
  for r in _split_curve_maps(x, curve_maps, num_iterations):
    x = curve_step(x, r, convention)
    iterates.append(x)
  return iterates


def apply_curves(x: jax.Array, curve_maps: jax.Array, convention: str = "official",
                 num_iterations: int | None = None) -> jax.Array:
  """Applies the iterated curve to images x (..., H, W, C) in [0, 1].

  Args:
    x: images, channels-last.
    curve_maps: (..., H, W, C * n) stacked per-iteration maps, or (..., H, W, C) one map reused by
      all `num_iterations` iterations. Leading dims broadcast against x's.
    convention: "paper" or "official" (sign of r, see the module docstring).
    num_iterations: required for a shared map; checked against the stack size otherwise.
  """
  return curve_iterates(x, curve_maps, convention, num_iterations)[-1]


def intermediate_index(num_iterations: int) -> int:
  """Index in `curve_iterates` of the image reported as the intermediate output."""
  return min(INTERMEDIATE_ITERATION, num_iterations) - 1


def _bilinear_taps(size_in: int, size_out: int, align_corners: bool):
  """Source indices (lo, hi) and weight of hi per output position, as torch's upsample_bilinear2d."""
  dst = np.arange(size_out, dtype=np.float64)
  if align_corners:
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    src = dst * scale
  else:
    src = np.maximum((dst + 0.5) * (size_in / size_out) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
  hi = np.minimum(lo + 1, size_in - 1)
  return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(x: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
  """Bilinear resize of (..., H, W, C) to `size` = (H', W'), matching PyTorch (no antialiasing).

  align_corners=False is `F.interpolate(mode="bilinear")`; align_corners=True is
  `nn.UpsamplingBilinear2d` (used by Zero-DCE++ to bring curve maps back to full resolution).
  """
  out_h, out_w = (int(s) for s in size)
  in_h, in_w = x.shape[-3], x.shape[-2]
  if (in_h, in_w) == (out_h, out_w):
    return x
  if min(out_h, out_w, in_h, in_w) < 1:
    raise ValueError(f"resize_bilinear: cannot resize {(in_h, in_w)} to {(out_h, out_w)}")
  for axis, (size_in, size_out) in ((-3, (in_h, out_h)), (-2, (in_w, out_w))):
    lo, hi, w = _bilinear_taps(size_in, size_out, align_corners)
    w = jnp.asarray(w, dtype=x.dtype).reshape((-1,) + (1,) * (-axis - 1))
    x = jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w
  return x


def keyframe_curves(clip: jax.Array, estimate_curves: Callable[[jax.Array], jax.Array],
                    group_size: int, convention: str = "official",
                    num_iterations: int | None = None, align_corners: bool = False):
  """Enhances a clip with curves estimated once per group of `group_size` consecutive frames.

  The clip (B, T, H, W, C) is cut into T / group_size groups; `estimate_curves` runs on the middle
  frame of each group (index group_size // 2 inside the group) as one (B * groups, H, W, C) batch,
  and its curve maps (brought back to (H, W) bilinearly if estimated at a reduced resolution) are
  applied to every frame of the group.

  Returns:
    (enhanced (B, T, H, W, C), {"curves": (B, groups, H, W, C'), "intermediate": (B, T, H, W, C)})
    where "intermediate" is the clip after min(4, n) curve iterations.
  """
  if clip.ndim != 5:
    raise ValueError(f"keyframe_curves: clip must be (B, T, H, W, C), got shape {clip.shape}")
  b, t, h, w, c = clip.shape
  if not isinstance(group_size, (int, np.integer)) or group_size < 1:
    raise ValueError(f"keyframe_curves: group_size must be a positive int, got {group_size!r}")
  if t % group_size:
    raise ValueError(f"keyframe_curves: clip length {t} is not divisible by the key-frame group "
                     f"size {group_size}")
  groups = t // group_size
  key_frames = clip[:, group_size // 2::group_size].reshape((b * groups, h, w, c))
  maps = estimate_curves(key_frames)
  maps = resize_bilinear(maps, (h, w), align_corners=align_corners)
  maps = maps.reshape((b, groups) + maps.shape[1:])
  grouped = clip.reshape((b, groups, group_size, h, w, c))
  iterates = curve_iterates(grouped, maps[:, :, None].astype(clip.dtype), convention,
                            num_iterations)
  enhanced = iterates[-1].reshape(clip.shape)
  intermediate = iterates[intermediate_index(len(iterates))].reshape(clip.shape)
  return enhanced, {"curves": maps, "intermediate": intermediate}
