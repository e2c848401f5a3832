"""DTCM's video darkness metric (Tu et al., TIP 2023, Eq. 12-14).

For 8-bit frames, S_t is the mean brightness of frame t (mean over pixels; over channels too for RGB).
On 8 frames sampled by segments (the video split into 8 equal segments, the middle frame of each),

  D_v = mean_t (S_t - S_c) / S_c,   S_c = 112,

and a video counts as dark when D_v < -tau with tau = 0.877 (mean brightness below about 13.8).
Everything here is numpy on the host; sampling is deterministic.
"""

from __future__ import annotations

import numpy as np

REFERENCE_BRIGHTNESS = 112.0  # S_c
DARK_THRESHOLD = 0.877  # tau
NUM_SEGMENTS = 8


def segment_indices(num_frames: int, num_segments: int = NUM_SEGMENTS) -> np.ndarray:
  """Middle frame of each of `num_segments` equal segments of [0, num_frames).

  Segment i covers [i T / n, (i + 1) T / n); its middle is floor((i + 1/2) T / n), computed in
  integers as ((2 i + 1) T) // (2 n). Videos shorter than n frames repeat frames.
  """
  if int(num_frames) != num_frames or num_frames < 1:
    raise ValueError(f"segment_indices: num_frames must be a positive integer, got {num_frames!r}")
  if int(num_segments) != num_segments or num_segments < 1:
    raise ValueError(f"segment_indices: num_segments must be a positive integer, got "
                     f"{num_segments!r}")
  i = np.arange(int(num_segments), dtype=np.int64)
  return ((2 * i + 1) * int(num_frames)) // (2 * int(num_segments))


def _check_uint8(frames: np.ndarray, where: str) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8:
    raise ValueError(f"{where}: expects 8-bit frames (uint8), got dtype {frames.dtype}")
  if frames.ndim not in (3, 4):
    raise ValueError(f"{where}: expects frames (T, H, W) or (T, H, W, C), got shape "
                     f"{frames.shape}")
  if frames.shape[0] == 0:
    raise ValueError(f"{where}: the video has no frames")
  return frames


def frame_brightness(frames: np.ndarray) -> np.ndarray:
  """Per-frame mean brightness S_t (T,) in [0, 255] of uint8 frames (T, H, W[, C])."""
  frames = _check_uint8(frames, "frame_brightness")
  return frames.reshape(frames.shape[0], -1).mean(axis=1, dtype=np.float64)


def darkness_score(frames: np.ndarray, num_segments: int = NUM_SEGMENTS,
                   reference: float = REFERENCE_BRIGHTNESS) -> float:
  """D_v of a video given as uint8 frames (T, H, W[, C]); 0 at mean brightness S_c, -1 if black."""
  frames = _check_uint8(frames, "darkness_score")
  sampled = frames[segment_indices(frames.shape[0], num_segments)]
  brightness = frame_brightness(sampled)
  return float(np.mean((brightness - reference) / reference))


def is_dark(frames: np.ndarray, tau: float = DARK_THRESHOLD, num_segments: int = NUM_SEGMENTS,
            reference: float = REFERENCE_BRIGHTNESS) -> bool:
  """True when the video's darkness score D_v is below -tau."""
  return darkness_score(frames, num_segments, reference) < -tau
