"""Multi-scale Retinex (MSR) on device: the enhanced stream of ActLumos's teacher.

For every frame and colour channel of a uint8 clip I (..., H, W, C):

  R = 1/K sum_k [ log(I + 1) - log(G_sigma_k * (I + 1)) ]   (K scales, default sigmas 15, 80, 250)

then R is stretched per frame and channel by percentile clipping: the `low` / `high` percentiles
(default 1 / 99, linear interpolation as numpy's default) map to 0 / 1, values outside are clipped,
and `retinex_uint8` rounds 255 x that. The +1 keeps the log finite, so an all-black frame gives
R = 0 everywhere; a channel whose percentiles coincide (no contrast, e.g. an all-black frame) maps
to 0 instead of dividing by zero.

Blur and border rule: G_sigma is OpenCV's float Gaussian (`cv2.GaussianBlur(x, (0, 0), sigma)` on
float32: kernel size round(8 sigma + 1) | 1, normalised sampled Gaussian) with OpenCV's default
border BORDER_REFLECT_101 (... 2 1 | 0 1 2 ... n-1 | n-2 ...), reflected again as often as needed
when the kernel is wider than the frame (sigma 250 on a 112-pixel frame: the kernel spans 2001
taps). We apply it as two (H, H) and (W, W) matrices built once per frame size in numpy, so the
blur is two small matmuls per frame whatever sigma is, and jit / vmap / batch over any leading
axes. As sigma grows past the frame size every output pixel tends to the same average of the frame
(weights 1 / (n - 1) per row / column, half that for the two edge ones).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SIGMAS = (15.0, 80.0, 250.0)


def reflect101(index: np.ndarray, length: int) -> np.ndarray:
  """OpenCV BORDER_REFLECT_101 of integer positions into [0, length), reflected repeatedly."""
  if length == 1:
    return np.zeros_like(index)
  period = 2 * (length - 1)
  index = np.mod(index, period)
  return np.where(index >= length, period - index, index)


@functools.lru_cache(maxsize=64)
def blur_matrix(length: int, sigma: float) -> np.ndarray:
  """(length, length) float32 M with (M @ x) = OpenCV's 1-D Gaussian blur of x (see module doc)."""
  if sigma <= 0:
    raise ValueError(f"retinex: Gaussian sigma must be > 0, got {sigma}")
  radius = (int(round(sigma * 8 + 1)) | 1) // 2
  taps = np.arange(-radius, radius + 1)
  weights = np.exp(-(taps.astype(np.float64) ** 2) / (2.0 * sigma ** 2))
  weights /= weights.sum()
  matrix = np.zeros((length, length))
  for row in range(length):
    np.add.at(matrix[row], reflect101(row + taps, length), weights)
  return matrix.astype(np.float32)


def gaussian_blur(frames: jax.Array, sigma: float) -> jax.Array:
  """OpenCV-equal Gaussian blur of float (..., H, W, C) frames (border rule: module doc)."""
  height, width = frames.shape[-3:-1]
  rows, cols = blur_matrix(height, float(sigma)), blur_matrix(width, float(sigma))
  out = jnp.einsum("gh,...hwc->...gwc", rows, frames, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("vw,...hwc->...hvc", cols, out, precision=jax.lax.Precision.HIGHEST)


def msr(clip: jax.Array, sigmas: Sequence[float] = SIGMAS) -> jax.Array:
  """The multi-scale Retinex log-ratio R (float32) of uint8 / float [0, 255] (..., H, W, C)."""
  if clip.ndim < 3:
    raise ValueError(f"retinex: expected frames (..., H, W, C), got shape {clip.shape}")
  if not sigmas:
    raise ValueError("retinex: sigmas is empty (the usual MSR scales are (15, 80, 250))")
  shifted = clip.astype(jnp.float32) + 1.0
  log_image = jnp.log(shifted)
  ratios = [log_image - jnp.log(gaussian_blur(shifted, sigma)) for sigma in sigmas]
  return sum(ratios) / len(sigmas)


def stretch(values: jax.Array, low: float = 1.0, high: float = 99.0) -> jax.Array:
  """Per frame and channel: the `low` / `high` percentiles over H, W -> 0 / 1, clipped."""
  if not 0.0 <= low < high <= 100.0:
    raise ValueError(f"retinex: percentiles need 0 <= low < high <= 100, got low={low}, "
                     f"high={high}")
  lo = jnp.percentile(values, low, axis=(-3, -2), keepdims=True)
  hi = jnp.percentile(values, high, axis=(-3, -2), keepdims=True)
  span = hi - lo
  flat = span <= 1e-6
  scaled = (values - lo) / jnp.where(flat, 1.0, span)
  return jnp.where(flat, 0.0, jnp.clip(scaled, 0.0, 1.0))


def retinex(clip: jax.Array, sigmas: Sequence[float] = SIGMAS, low: float = 1.0,
            high: float = 99.0) -> jax.Array:
  """MSR of (..., H, W, C) frames, stretched to float32 [0, 1]."""
  return stretch(msr(clip, sigmas), low, high)


def retinex_uint8(clip: jax.Array, sigmas: Sequence[float] = SIGMAS, low: float = 1.0,
                  high: float = 99.0) -> jax.Array:
  """MSR of (..., H, W, C) frames as uint8 frames: round(255 x the stretched MSR)."""
  return jnp.round(retinex(clip, sigmas, low, high) * 255.0).astype(jnp.uint8)
