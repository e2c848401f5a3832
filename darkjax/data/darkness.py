"""DTCM's video darkness metric (Tu et al., TIP 2023, Sec. III-F, Eq. 12-14).

For 8-bit frames, S_t is the mean brightness of frame t (mean over pixels; over channels too for RGB).
On 8 frames sampled by segments ("we first divide a video evenly into 8 segments and then randomly
select a frame from each segment"),

  D_v = mean_t (S_t - S_c) / S_c,   S_c = 112,

and a video counts as dark when D_v < -tau with tau = 0.877 (mean brightness below about 13.8).
`sampling="random"` (the paper's, the default) draws one frame per segment from a numpy generator
seeded by `seed` (an int or a sequence of ints, e.g. a run seed and a per-video key), so a score
is reproducible; `sampling="middle"` takes each segment's middle frame, with no randomness.
Everything here is numpy on the host.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

REFERENCE_BRIGHTNESS = 112.0  # S_c
DARK_THRESHOLD = 0.877  # tau
NUM_SEGMENTS = 8
SAMPLINGS = ("random", "middle")


def _check_counts(where: str, num_frames: int, num_segments: int) -> None:
  if int(num_frames) != num_frames or num_frames < 1:
    raise ValueError(f"{where}: num_frames must be a positive integer, got {num_frames!r}")
  if int(num_segments) != num_segments or num_segments < 1:
    raise ValueError(f"{where}: num_segments must be a positive integer, got {num_segments!r}")


def segment_indices(num_frames: int, num_segments: int = NUM_SEGMENTS) -> np.ndarray:
  """Middle frame of each of `num_segments` equal segments of [0, num_frames).

  Segment i covers [i T / n, (i + 1) T / n); its middle is floor((i + 1/2) T / n), computed in
  integers as ((2 i + 1) T) // (2 n). Videos shorter than n frames repeat frames.
  """
  _check_counts("segment_indices", num_frames, num_segments)
  i = np.arange(int(num_segments), dtype=np.int64)
  return ((2 * i + 1) * int(num_frames)) // (2 * int(num_segments))


def segment_bounds(num_frames: int, num_segments: int = NUM_SEGMENTS) -> tuple[np.ndarray,
                                                                              np.ndarray]:
  """(starts, ends) of `num_segments` equal segments of [0, num_frames): segment i holds the frames
  t with i T / n <= t < (i + 1) T / n, i.e. [ceil(i T / n), ceil((i + 1) T / n)); one that holds
  none (T < n) takes frame floor(i T / n)."""
  _check_counts("segment_bounds", num_frames, num_segments)
  i = np.arange(int(num_segments), dtype=np.int64)
  frames, segments = int(num_frames), int(num_segments)
  starts, ends = -((-i * frames) // segments), -((-(i + 1) * frames) // segments)
  empty = ends <= starts
  floors = (i * frames) // segments
  return np.where(empty, floors, starts), np.where(empty, floors + 1, ends)


def random_segment_indices(num_frames: int, num_segments: int = NUM_SEGMENTS,
                           seed: int | Sequence[int] = 0) -> np.ndarray:
  """One frame drawn uniformly from each segment of `segment_bounds` (the paper's sampling);
  the same `seed` draws the same frames."""
  starts, ends = segment_bounds(num_frames, num_segments)
  return np.random.default_rng(seed).integers(starts, ends)


def sample_indices(num_frames: int, num_segments: int = NUM_SEGMENTS, sampling: str = "random",
                   seed: int | Sequence[int] = 0) -> np.ndarray:
  """The frames D_v averages over: `random` (one per segment, seeded) or `middle`."""
  if sampling == "random":
    return random_segment_indices(num_frames, num_segments, seed)
  if sampling == "middle":
    return segment_indices(num_frames, num_segments)
  raise ValueError(f"darkness sampling {sampling!r} unknown; valid: {SAMPLINGS}")


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
                   reference: float = REFERENCE_BRIGHTNESS, sampling: str = "random",
                   seed: int | Sequence[int] = 0) -> float:
  """D_v of a video given as uint8 frames (T, H, W[, C]); 0 at mean brightness S_c, -1 if black.
  `sampling`, `seed`: the frames averaged over (`sample_indices`)."""
  frames = _check_uint8(frames, "darkness_score")
  sampled = frames[sample_indices(frames.shape[0], num_segments, sampling, seed)]
  brightness = frame_brightness(sampled)
  return float(np.mean((brightness - reference) / reference))


def is_dark(frames: np.ndarray, tau: float = DARK_THRESHOLD, num_segments: int = NUM_SEGMENTS,
            reference: float = REFERENCE_BRIGHTNESS, sampling: str = "random",
            seed: int | Sequence[int] = 0) -> bool:
  """True when the video's darkness score D_v is below -tau (Eq. 14)."""
  return darkness_score(frames, num_segments, reference, sampling, seed) < -tau
