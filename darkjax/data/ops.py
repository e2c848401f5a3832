"""Clip operations on uint8 numpy arrays (T, H, W, C): temporal sampling, resizing, crops, flips.

Everything here runs on the host inside the grain pipeline and keeps clips uint8; normalisation
happens on device. Extra streams (e.g. `ir`, `day`, `flow`) are sampled with the same frame indices
and cropped with the same geometry (scaled when their resolution differs); a flipped `flow` stream
also has its x component negated (see `hflip`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from darkjax.data import flow


# dense: `frames` consecutive frames (every `stride`) from a random start (train) or evenly spaced
# starts (eval); segment: TSN's one frame per equal segment; grid: one of the video's
# non-overlapping `frames`-frame clips from its first frame (`clip_starts`), random (train) or
# evenly spaced (eval), the two-stream C3D's split of a video into clips.
SAMPLINGS = ("dense", "segment", "grid")


class ClipSpecError(ValueError):
  """Clip settings (config.input.*) that give no clip; the message names each. (Not
  darkjax.config's ConfigError: this module stays importable without jax, for predicting with an
  exported model.)"""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  frames: int = 16
  stride: int = 1
  sampling: str = "dense"       # dense | segment | grid
  short_side: int = 0
  resize: tuple[int, int] = (0, 0)   # (H, W) every frame is resized to; (0, 0): short_side rules
  crop_size: int = 0
  train_crop: str = "random"    # random | center
  flip: bool = True
  eval_clips: int = 1
  eval_crops: int = 1

  def __post_init__(self):
    """Checks the fields (ClipSpecError naming config.input.<field>): the clip a config asks for
    fails here, before a pipeline reads a record."""
    problems = []
    if self.sampling not in SAMPLINGS:
      problems.append(f"config.input.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
    if self.train_crop not in ("random", "center"):
      problems.append(f"config.input.train_crop must be 'random' or 'center', got "
                      f"{self.train_crop!r}")
    if self.eval_crops not in (1, 3):
      problems.append(f"config.input.eval_crops must be 1 or 3, got {self.eval_crops}")
    if len(tuple(self.resize)) != 2 or min(self.resize) < 0 or (0 in self.resize
                                                                and max(self.resize) > 0):
      problems.append(f"config.input.resize must be (H, W) with both > 0, or (0, 0) for off; "
                      f"got {tuple(self.resize)}")
    for name in ("frames", "stride", "eval_clips"):
      if getattr(self, name) < 1:
        problems.append(f"config.input.{name} must be >= 1, got {getattr(self, name)}")
    side = min(self.resize) if self.resize and self.resize[0] else self.short_side
    if self.crop_size and side and self.crop_size > side:
      what = f"resize {tuple(self.resize)}" if self.resize and self.resize[0] else \
          f"short_side {self.short_side}"
      problems.append(f"config.input.crop_size {self.crop_size} is larger than the frames "
                      f"config.input.{what} gives: set crop_size <= {side} or a larger "
                      f"{what.split()[0]}")
    if problems:
      raise ClipSpecError("; ".join(problems))

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> "ClipSpec":
    fields = {f.name: cfg[f.name] for f in dataclasses.fields(cls)}
    fields["resize"] = tuple(int(v) for v in fields["resize"])
    return cls(**fields)

  @property
  def views(self) -> int:
    return self.eval_clips * self.eval_crops


# ---------------------------------------------------------------- temporal sampling
def dense_indices(num_frames: int, frames: int, stride: int, start: int) -> np.ndarray:
  """`frames` indices from `start` every `stride`; clips longer than the video loop over it."""
  return (start + stride * np.arange(frames)) % max(num_frames, 1)


def random_dense_indices(num_frames: int, frames: int, stride: int,
                         rng: np.random.Generator) -> np.ndarray:
  span = (frames - 1) * stride + 1
  start = int(rng.integers(0, max(num_frames - span, 0) + 1))
  return dense_indices(num_frames, frames, stride, start)


def uniform_dense_starts(num_frames: int, frames: int, stride: int, clips: int) -> list[int]:
  """Start frames of `clips` evenly spaced clips (one clip: centred)."""
  span = (frames - 1) * stride + 1
  room = max(num_frames - span, 0)
  if clips == 1:
    return [room // 2]
  return [int(round(i * room / (clips - 1))) for i in range(clips)]


def clip_starts(num_frames: int, frames: int) -> list[int]:
  """Start frames of a video's non-overlapping `frames`-frame clips from its first frame (at least
  one: a shorter video loops; frames after the last whole clip are left out)."""
  return list(range(0, max(num_frames - frames, 0) + 1, frames))


def segment_indices(num_frames: int, frames: int, rng: np.random.Generator | None,
                    position: float = 0.5) -> np.ndarray:
  """TSN-style: one frame from each of `frames` equal segments, at a random place in train
  (`rng`), else at `position` (0 to 1) of each segment: its middle for one eval clip, and for
  clip c of n eval clips (c + 0.5) / n, so each clip takes other frames."""
  edges = np.linspace(0, num_frames, frames + 1)
  lo, hi = edges[:-1], edges[1:]
  if rng is None:
    idx = np.floor(lo * (1 - position) + hi * position)   # the middle: (lo + hi) / 2 exactly
  else:
    idx = np.floor(lo + rng.random(frames) * np.maximum(hi - lo, 1e-9))
  return np.clip(idx.astype(np.int64), 0, max(num_frames - 1, 0))


# ---------------------------------------------------------------- spatial ops
def resized_hw(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(H, W) after `resize_short_side` (0: unchanged)."""
  if not short_side or min(height, width) == short_side:
    return height, width
  scale = short_side / min(height, width)
  return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


def resize_short_side(clip: np.ndarray, short_side: int) -> np.ndarray:
  t, h, w, c = clip.shape
  new_h, new_w = resized_hw(h, w, short_side)
  if (new_h, new_w) == (h, w):
    return clip
  scale = short_side / min(h, w)
  interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
  out = np.empty((t, new_h, new_w, c), np.uint8)
  for i in range(t):
    frame = cv2.resize(clip[i], (new_w, new_h), interpolation=interp)
    out[i] = frame.reshape(new_h, new_w, c)
  return out


def resized_frame_hw(hw: Sequence[int], spec: ClipSpec) -> tuple[int, int]:
  """The (H, W) `resize_frames` gives frames of size `hw`."""
  if spec.resize[0]:
    return int(spec.resize[0]), int(spec.resize[1])
  return resized_hw(int(hw[0]), int(hw[1]), spec.short_side)


def resize_frames(clip: np.ndarray, spec: ClipSpec) -> np.ndarray:
  """`spec.resize` (H, W) when set (a fixed size, e.g. C3D's 128x171), else `spec.short_side`."""
  if spec.resize[0]:
    return clip if clip.shape[1:3] == tuple(spec.resize) else resize_to(clip, spec.resize)
  return resize_short_side(clip, spec.short_side)


def crop_boxes(h: int, w: int, size: int, mode: str,
               rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
  """Top-left corners of square crops: random, center, or three along the long side."""
  if size > h or size > w:
    raise ValueError(f"crop size {size} larger than frame {h}x{w}; set input.short_side >= crop")
  if mode == "random":
    return [(int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)))]
  center = ((h - size) // 2, (w - size) // 2)
  if mode == "center":
    return [center]
  if mode == "three":
    if w >= h:
      return [(center[0], 0), center, (center[0], w - size)]
    return [(0, center[1]), center, (h - size, center[1])]
  raise ValueError(f"unknown crop mode {mode!r}")


def crop(clip: np.ndarray, top: int, left: int, size: int, ref_hw: tuple[int, int],
         stream: str = "video") -> np.ndarray:
  """Crops `clip`; a stream with another resolution than `ref_hw` gets the proportional box."""
  if tuple(clip.shape[1:3]) != tuple(ref_hw):
    clip = resize_stream(clip, ref_hw, stream)
  return clip[:, top:top + size, left:left + size]


def resize_stream(clip: np.ndarray, hw: tuple[int, int], stream: str) -> np.ndarray:
  """Stream `stream`'s clip resized to `hw` (the video's frame size); the optical-flow stream's
  vectors are resized with its grid (`flow.scale_vectors`)."""
  resized = resize_to(clip, hw)
  if stream == flow.STREAM:
    return flow.scale_vectors(resized, clip.shape[1:3], hw)
  return resized


def resize_to(clip: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  t, _, _, c = clip.shape
  out = np.empty((t, hw[0], hw[1], c), np.uint8)
  for i in range(t):
    out[i] = cv2.resize(clip[i], (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR).reshape(
        hw[0], hw[1], c)
  return out


def hflip(clip: np.ndarray, stream: str = "video") -> np.ndarray:
  """Horizontal flip into a new contiguous array (cv2 is ~20x faster than a negative-stride copy).

  The optical-flow stream (`flow.STREAM`) also gets its x component negated around 128
  (`flow.FLIP_X_LUT`: x -> min(256 - x, 255)); every other stream is only mirrored.
  """
  out = np.empty(clip.shape, clip.dtype)
  for i in range(clip.shape[0]):
    flipped = cv2.flip(np.ascontiguousarray(clip[i]), 1)
    out[i] = flipped.reshape(out.shape[1:])
  return flow.negate_x(out) if stream == flow.STREAM else out


# ---------------------------------------------------------------- whole-example ops
def _streams(example: Mapping[str, Any], names: Sequence[str]) -> dict[str, np.ndarray]:
  out = {"video": example["video"]}
  for name in names:
    if name not in example:
      raise KeyError(f"video {example.get('video_id', '?')!r}: record has no stream {name!r} "
                     f"(present: {sorted(k for k in example if k not in ('label', 'video_id'))})")
    out[name] = example[name]
  return out


def train_clip(example: Mapping[str, Any], rng: np.random.Generator, spec: ClipSpec,
               streams: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """One random training clip: (T, h, w, C) uint8 per stream, plus `label`."""
  arrays = _streams(example, streams)
  num_frames = arrays["video"].shape[0]
  if spec.sampling == "dense":
    idx = random_dense_indices(num_frames, spec.frames, spec.stride, rng)
  elif spec.sampling == "grid":
    starts = clip_starts(num_frames, spec.frames)
    idx = dense_indices(num_frames, spec.frames, 1, starts[int(rng.integers(0, len(starts)))])
  else:
    idx = segment_indices(num_frames, spec.frames, rng)
  flip = spec.flip and bool(rng.integers(0, 2))
  out: dict[str, Any] = {}
  video = resize_frames(arrays["video"][idx], spec)
  ref_hw = video.shape[1:3]
  box = crop_boxes(*ref_hw, spec.crop_size, spec.train_crop, rng)[0] if spec.crop_size else None
  for name, clip in arrays.items():
    clip = video if name == "video" else clip[np.minimum(idx, clip.shape[0] - 1)]
    if box is not None:
      clip = crop(clip, box[0], box[1], spec.crop_size, ref_hw, name)
    elif clip.shape[1:3] != ref_hw:
      clip = resize_stream(clip, ref_hw, name)
    out[name] = hflip(clip, name) if flip else np.ascontiguousarray(clip)
  out["label"] = np.int32(example["label"])
  return out


def eval_views(example: Mapping[str, Any], spec: ClipSpec,
               streams: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """All deterministic eval views: (V, T, h, w, C) per stream with V = clips x crops, plus `label`."""
  arrays = _streams(example, streams)
  num_frames = arrays["video"].shape[0]
  if spec.sampling == "dense":
    index_sets = [dense_indices(num_frames, spec.frames, spec.stride, s)
                  for s in uniform_dense_starts(num_frames, spec.frames, spec.stride,
                                                spec.eval_clips)]
  elif spec.sampling == "grid":
    starts = clip_starts(num_frames, spec.frames)
    picks = uniform_dense_starts(len(starts), 1, 1, spec.eval_clips)
    index_sets = [dense_indices(num_frames, spec.frames, 1, starts[i]) for i in picks]
  else:
    index_sets = [segment_indices(num_frames, spec.frames, None, (c + 0.5) / spec.eval_clips)
                  for c in range(spec.eval_clips)]
  ref_hw = resized_frame_hw(arrays["video"].shape[1:3], spec)
  size = spec.crop_size
  boxes = crop_boxes(*ref_hw, size, "center" if spec.eval_crops == 1 else "three") if size else []
  out: dict[str, Any] = {}
  for name, full in arrays.items():
    views = []
    for idx in index_sets:
      # Each stream's clip resized once to the video's frame size (another stream's by
      # `resize_to`, as `crop` does), then every crop a view of it.
      if name == "video":
        clip = resize_frames(full[idx], spec)
      else:
        clip = full[np.minimum(idx, full.shape[0] - 1)]
        if clip.shape[1:3] != ref_hw:
          clip = resize_stream(clip, ref_hw, name)
      views.extend([clip[:, top:top + size, left:left + size] for top, left in boxes] or [clip])
    out[name] = np.stack(views)
  out["label"] = np.int32(example["label"])
  return out
