"""On-device preprocessing of uint8 clips: gamma correction (GIC lookup table) and normalisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Per-channel statistics in 0-255 units.
STATS = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # Hara et al.'s Kinetics mean and std (3D-ResNets-PyTorch).
    "kinetics": ((110.63666788, 103.16065604, 96.29023126), (38.7568578, 37.88248729, 40.02898126)),
    # IG65M (VMZ) and torchvision video models.
    "ig65m": ((110.2008, 100.63983, 95.99475), (58.14765, 56.46975, 55.332195)),
    # ViT checkpoints (vision_transformer, big_vision, timm's augreg): [-1, 1].
    "vit": ((127.5,) * 3, (127.5,) * 3),
    # A flow record stream (x, y, magnitude stored around 128, darkjax.data.flow): (x - 128) / 128.
    "flow": ((128.0,) * 3, (128.0,) * 3),
}
MODES = ("per_clip", "none") + tuple(STATS)


def gamma_lut(gamma: float) -> np.ndarray:
  """Gamma Intensity Correction table: LUT[i] = floor((i / 255) ** (1 / gamma) * 255)."""
  levels = np.arange(256, dtype=np.float64) / 255.0
  return np.floor(levels ** (1.0 / gamma) * 255.0).astype(np.uint8)


def gamma_correct(clip_uint8: jax.Array, gamma: float) -> jax.Array:
  """Applies the GIC lookup table to a uint8 array (exact, integer in and out)."""
  return jnp.take(jnp.asarray(gamma_lut(gamma)), clip_uint8.astype(jnp.int32))


def normalise(clip_uint8: jax.Array, mode: str, dtype=jnp.float32) -> jax.Array:
  """uint8 (..., T, H, W, C) -> float. `per_clip` standardises each clip over (T, H, W, C)."""
  if mode not in MODES:
    raise ValueError(f"input.normalise {mode!r} unknown; valid: {MODES}")
  x = clip_uint8.astype(jnp.float32)
  if mode == "none":
    x = x / 255.0
  elif mode == "per_clip":
    axes = tuple(range(x.ndim - 4, x.ndim))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    std = jnp.std(x, axis=axes, keepdims=True)
    x = (x - mean) / jnp.maximum(std, 1.0)
  else:
    mean, std = STATS[mode]
    channels = x.shape[-1]
    mean = jnp.asarray(mean[:channels] if channels == 3 else [np.mean(mean)] * channels)
    std = jnp.asarray(std[:channels] if channels == 3 else [np.mean(std)] * channels)
    x = (x - mean) / std
  return x.astype(dtype)
