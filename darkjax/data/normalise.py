"""On-device preprocessing of uint8 clips: gamma correction (GIC lookup table) and normalisation.

Normalisation modes (`input.normalise` and the other keys that name one): `per_clip` standardises
each clip, `none` maps 0..255 to [0, 1], and every name in `STATS` subtracts a per-channel mean and
divides by a per-channel std, both in 0-255 units, after putting the channels in the order the mode
names (`CHANNEL_ORDER`: a Caffe model's BGR reverses RGB frames). A pretrained backbone reads its
inputs in the mode it was trained with: `darkjax.convert` records that mode beside the converted
weights and `check_pretrained` compares it with the config's when the weights are loaded.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from darkjax import config as config_lib

# Per-channel statistics in 0-255 units, in the channel order of CHANNEL_ORDER (default RGB).
STATS = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # Kinetics mean and std in 0-255 units as 3D-ResNets-PyTorch's first release wrote them
    # (mean.py get_mean(dataset='kinetics'), get_std). No release of its weights was trained with
    # both: kept because configs name it; a pretrained backbone uses its checkpoint's mode.
    "kinetics": ((110.63666788, 103.16065604, 96.29023126), (38.7568578, 37.88248729, 40.02898126)),
    # 3D-ResNets-PyTorch's first release (CVPR 2018; resnet-*-kinetics.pth,
    # resnext-101-kinetics.pth): 0-255 RGB minus the ActivityNet mean, no std division.
    "activitynet_mean": ((114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0)),
    # 3D-ResNets-PyTorch's 2020 release (r3d50_K_200ep.pth, ...): Kinetics mean and std of [0, 1].
    "kinetics_2020": ((0.4345 * 255, 0.4051 * 255, 0.3775 * 255),
                      (0.2768 * 255, 0.2713 * 255, 0.2737 * 255)),
    # IG65M (VMZ) and torchvision video models.
    "ig65m": ((110.2008, 100.63983, 95.99475), (58.14765, 56.46975, 55.332195)),
    # ViT checkpoints (vision_transformer, big_vision, timm's augreg): [-1, 1].
    "vit": ((127.5,) * 3, (127.5,) * 3),
    # Sports-1M C3D (Tran et al.'s Caffe model and its ports): BGR 0-255 minus the mean of the
    # Sports-1M mean cube (sport1m_train16_128_mean, 3 x 16 x 128 x 171) per channel, no std.
    "c3d_sports1m": ((90.25164677, 97.65700354, 101.40833461), (1.0, 1.0, 1.0)),
    # A flow record stream (x, y, magnitude stored around 128, darkjax.data.flow): (x - 128) / 128.
    "flow": ((128.0,) * 3, (128.0,) * 3),
}
CHANNEL_ORDER = {"c3d_sports1m": "BGR"}   # modes whose statistics follow another channel order
MODES = ("per_clip", "none") + tuple(STATS)


class NormalisationMismatchError(ValueError):
  """Pretrained weights would read inputs normalised otherwise than they were trained on."""


def gamma_lut(gamma: float) -> np.ndarray:
  """Gamma Intensity Correction table: LUT[i] = floor((i / 255) ** (1 / gamma) * 255)."""
  levels = np.arange(256, dtype=np.float64) / 255.0
  return np.floor(levels ** (1.0 / gamma) * 255.0).astype(np.uint8)


def gamma_correct(clip_uint8: jax.Array, gamma: float) -> jax.Array:
  """Applies the GIC lookup table to a uint8 array (exact, integer in and out)."""
  return jnp.take(jnp.asarray(gamma_lut(gamma)), clip_uint8.astype(jnp.int32))


def check_mode(mode: str, what: str = "config.input.normalise") -> None:
  if mode not in MODES:
    raise config_lib.ConfigError(f"{what} {mode!r} unknown; valid: {MODES}")


def normalise(clip_uint8: jax.Array, mode: str, dtype=jnp.float32, colour: bool = True
              ) -> jax.Array:
  """uint8 (..., T, H, W, C) -> float. `per_clip` standardises each clip over (T, H, W, C).

  A 1-channel clip takes the mean of the three channels' statistics; a 3-channel colour clip
  (RGB frames) is put in the mode's channel order first (RGB -> BGR for `c3d_sports1m`). Channels
  that are not colours (`colour=False`: a flow clip's x, y, magnitude) keep their order."""
  check_mode(mode)
  x = clip_uint8.astype(jnp.float32)
  if mode == "none":
    x = x / 255.0
  elif mode == "per_clip":
    axes = tuple(range(x.ndim - 4, x.ndim))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    # (x - mean) / max(std, 1) through the variance: the square root's derivative is infinite
    # at 0, so a constant clip (black, saturated) would give NaN gradients where the clip is
    # differentiated (DTCM's enhanced clip), skipping the whole step.
    var = jnp.var(x, axis=axes, keepdims=True)
    x = (x - mean) / jnp.sqrt(jnp.maximum(var, 1.0))
  else:
    mean, std = STATS[mode]
    channels = x.shape[-1]
    if colour and channels == 3 and CHANNEL_ORDER.get(mode, "RGB") == "BGR":
      x = x[..., ::-1]
    mean = jnp.asarray(mean[:channels] if channels == 3 else [np.mean(mean)] * channels)
    std = jnp.asarray(std[:channels] if channels == 3 else [np.mean(std)] * channels)
    x = (x - mean) / std
  return x.astype(dtype)


def describe(mode: str) -> dict[str, Any]:
  """What `mode` does to a uint8 clip, as recorded beside converted weights (meta.json)."""
  check_mode(mode, "input normalisation (--input-normalise)")
  record: dict[str, Any] = {"mode": mode, "value_range": [0, 255]}
  if mode in STATS:
    mean, std = STATS[mode]
    record.update(mean=[float(v) for v in mean], std=[float(v) for v in std],
                  channel_order=CHANNEL_ORDER.get(mode, "RGB"))
  return record


def summary(mode: str) -> str:
  """One line: the mode's arithmetic on 0-255 values."""
  if mode == "none":
    return "0-255 / 255"
  if mode == "per_clip":
    return "each clip minus its mean, over its std"
  mean, std = STATS[mode]
  numbers = lambda values: ", ".join(f"{v:.4g}" for v in values)  # noqa: E731
  text = f"{CHANNEL_ORDER.get(mode, 'RGB')} 0-255 minus mean ({numbers(mean)})"
  return text + (f" over std ({numbers(std)})" if set(std) != {1.0} else "")


def check_pretrained(expected: str | None, configured: str, key: str, source: str) -> None:
  """Raises NormalisationMismatchError when weights trained on inputs in mode `expected` would
  read inputs in mode `configured` (the value of config key `key`); `expected` None: unknown."""
  if expected is None or expected == configured:
    return
  raise NormalisationMismatchError(
      f"{source} was trained on inputs normalised as {expected!r} ({summary(expected)}), but "
      f"config.{key} is {configured!r} ({summary(configured) if configured in MODES else 'unknown'})"
      f". Set --config.{key}={expected} so the weights read what they were trained on; if the "
      f"recorded mode is wrong, convert again with `python -m darkjax.convert ... "
      f"--input-normalise MODE`; to load them anyway, --config.model_load.check_normalise=False.")
