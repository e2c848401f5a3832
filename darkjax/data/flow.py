"""Dense optical flow of uint8 clips, stored as a uint8 "flow" record stream (LIFT-Net's luminous
input for infrared and daytime data).

Encoding (what `python -m darkjax.data.prepare ... --flow` writes; per frame, channels x, y, m):
  x = clip(round(128 + flow_x * scale), 0, 255)   flow_x > 0: content moves right
  y = clip(round(128 + flow_y * scale), 0, 255)   flow_y > 0: content moves down
  m = clip(round(128 + |flow| * scale), 0, 255)
so zero motion is 128 in all three channels, which the trainer's (v - 128) / 128 normalisation maps
to 0. Flow is in pixels per frame at the prepared resolution. With the default `scale` of 8 one step
is 1/8 pixel and x, y saturate at +127/8 = 15.9 and -128/8 = -16 pixels per frame: the usual bound
of two-stream networks (TSN clips at +-20 pixels at a 256-pixel short side, i.e. +-10 at the 128
pixels `prepare` writes by default) with room to spare. Decode with `decode_flow(clip, scale)`.

Frames: T frames give T flows. Flow t is from frame t to frame t + 1 (Farneback's convention:
frame_t(y, x) ~ frame_t+1(y + flow_y, x + flow_x)); the last flow repeats flow T - 2, and a
one-frame clip gets zero flow. Identical consecutive frames (duplicated by `--fps` resampling, a
frozen video) get exactly zero flow without calling OpenCV (Farneback leaves up to ~0.2 pixels at
the borders). Colour frames are converted to grey (ITU-R BT.601 luma of RGB, which is what
`prepare` decodes) before the flow is computed.

Methods (`--flow-method`): `farneback` (cv2.calcOpticalFlowFarneback, parameters in
FARNEBACK_PARAMS, the default), `dis` (cv2.DISOpticalFlow with DIS_PRESET: faster than Farneback
and closer to the true flow on noisy dark frames) and `tvl1` (Dual TV-L1,
cv2.optflow.DualTVL1OpticalFlow: the flow of the classic two-stream networks, far slower; the
README's "Bringing real data" gives the measured costs). TV-L1 lives in OpenCV's contrib modules, which is why darkjax depends on
opencv-contrib-python-headless rather than opencv-python-headless; an environment where the latter
was installed too has a cv2 without `optflow`, and `tvl1` then fails with a FlowError that says how
to repair it.

Horizontal flips: mirroring a flow clip must also negate its x component. `FLIP_X_LUT` does that on
the stored integers: x -> min(256 - x, 255), i.e. decoded x -> -x exactly for x in 1..255 (128 stays
128); 0 (the most negative value, -128/scale) maps to 255 (+127/scale), both saturated. y and the
magnitude are unchanged. `darkjax.data.ops.hflip(clip, stream="flow")` applies it. Geometric
augmentation on device (darkjax/trainers/liftnet.py `augment`) transforms the vectors likewise.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

STREAM = "flow"          # the record stream name the LIFT-Net trainer reads
METHODS = ("farneback", "dis", "tvl1")
DEFAULT_METHOD = "farneback"
ENCODING = ("uint8 128 + scale * (x, y, |flow|) clipped to [0, 255], pixels per frame; flow t = "
            "frame t -> t+1, the last repeats (darkjax.data.flow)")
DEFAULT_SCALE = 8.0      # encoded units per pixel of motion (see the module docstring)
ZERO = 128               # the encoded value of zero motion
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5,
                        poly_sigma=1.2, flags=0)   # OpenCV's documented example values
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM  # FAST is faster still but coarser on dark noise
# Stored x value of the horizontally mirrored flow: 256 - x, clipped to 255 (only x = 0 clips).
FLIP_X_LUT = np.clip(256 - np.arange(256), 0, 255).astype(np.uint8)


class FlowError(ValueError):
  """Optical flow cannot be computed as asked; the message names the option or the input."""


def check_method(method: str) -> None:
  """Raises FlowError unless `method` is known and available in this OpenCV build."""
  if method not in METHODS:
    raise FlowError(f"unknown optical-flow method {method!r} (--flow-method); known: "
                    f"{', '.join(METHODS)}")
  if method == "tvl1" and not hasattr(cv2, "optflow"):
    raise FlowError(
        f"--flow-method tvl1 needs OpenCV's contrib module cv2.optflow, which this OpenCV "
        f"{cv2.__version__} ({os.path.dirname(cv2.__file__)}) does not have: darkjax depends on "
        f"opencv-contrib-python-headless, and another OpenCV wheel (opencv-python-headless) "
        f"overwrote it. Repair with `pip uninstall -y opencv-python-headless "
        f"opencv-contrib-python-headless && pip install opencv-contrib-python-headless`, or use "
        f"--flow-method farneback or dis")


def grayscale(frames_uint8: np.ndarray) -> np.ndarray:
  """(T, H, W) uint8 luma of (T, H, W, 3) RGB or (T, H, W, 1) grey frames (one cv2 call)."""
  if (frames_uint8.dtype != np.uint8 or frames_uint8.ndim != 4
      or frames_uint8.shape[-1] not in (1, 3)):
    raise FlowError(f"optical flow needs uint8 frames (T, H, W, 3 or 1), got "
                    f"{frames_uint8.dtype} {frames_uint8.shape}")
  t, h, w, c = frames_uint8.shape
  if c == 1:
    return np.ascontiguousarray(frames_uint8[..., 0])
  # The whole clip as one (T*H, W) image: the conversion is per pixel, so one call does every frame.
  flat = np.ascontiguousarray(frames_uint8).reshape(t * h, w, 3)
  return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def _pair_flow(method: str):
  if method == "farneback":
    return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK_PARAMS)
  if method == "dis":
    solver = cv2.DISOpticalFlow_create(DIS_PRESET)
  else:
    solver = cv2.optflow.DualTVL1OpticalFlow_create()
  return lambda prev, nxt: solver.calc(prev, nxt, None)


def raw_flow(frames_uint8: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
  """(T, H, W, 2) float32 flow (x, y) in pixels per frame; flow t is frame t -> t + 1, the last one
  repeats the one before it (zero for a single frame)."""
  check_method(method)
  grey = grayscale(frames_uint8)
  t, h, w = grey.shape
  out = np.zeros((t, h, w, 2), np.float32)
  pair = _pair_flow(method)
  for i in range(t - 1):
    if not np.array_equal(grey[i], grey[i + 1]):  # else exactly zero (Farneback's borders are not)
      out[i] = pair(grey[i], grey[i + 1])
  if t > 1:
    out[t - 1] = out[t - 2]
  return out


def encode_flow(flow_xy: np.ndarray, scale: float = DEFAULT_SCALE) -> np.ndarray:
  """(..., 2) float flow -> (..., 3) uint8 x, y, magnitude around 128 (module docstring)."""
  if not scale > 0:
    raise FlowError(f"flow scale (--flow-scale) must be > 0, got {scale}")
  flow_xy = np.asarray(flow_xy, np.float32)
  magnitude = np.hypot(flow_xy[..., 0], flow_xy[..., 1])[..., None]
  encoded = np.concatenate([flow_xy, magnitude], axis=-1) * np.float32(scale) + ZERO
  return np.clip(np.rint(encoded), 0, 255).astype(np.uint8)


def decode_flow(clip_uint8: np.ndarray, scale: float = DEFAULT_SCALE) -> np.ndarray:
  """(..., 3) uint8 flow stream -> float32 (x, y, magnitude) in pixels per frame."""
  return (np.asarray(clip_uint8, np.float32) - ZERO) / np.float32(scale)


def scale_vectors(flow_uint8: np.ndarray, from_hw: tuple[int, int],
                  to_hw: tuple[int, int]) -> np.ndarray:
  """A flow stream resized from `from_hw` to `to_hw` (its grid already resized) with its vectors
  resized alike: x by the width's factor, y by the height's, the magnitude recomputed (a flow of
  2 pixels per frame is 4 on a grid twice as large). Values stay in the stream's encoding."""
  fy, fx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
  if fx == fy == 1.0:
    return flow_uint8
  vectors = np.asarray(flow_uint8, np.float32) - ZERO
  x, y = vectors[..., 0] * np.float32(fx), vectors[..., 1] * np.float32(fy)
  encoded = np.stack([x, y, np.hypot(x, y)], axis=-1) + ZERO
  return np.clip(np.rint(encoded), 0, 255).astype(np.uint8)


def flow_clip(frames_uint8: np.ndarray, method: str = DEFAULT_METHOD,
              scale: float = DEFAULT_SCALE) -> np.ndarray:
  """(T, H, W, 3 or 1) uint8 frames -> (T, H, W, 3) uint8 flow stream (x, y, magnitude)."""
  if not scale > 0:
    raise FlowError(f"flow scale (--flow-scale) must be > 0, got {scale}")
  return encode_flow(raw_flow(frames_uint8, method), scale)


def flow_clips(clips: np.ndarray, method: str = DEFAULT_METHOD,
               scale: float = DEFAULT_SCALE) -> np.ndarray:
  """(..., T, H, W, C) uint8 clips -> (..., T, H, W, 3) uint8 flow of each clip (`flow_clip`):
  the flow two-stream computes per sampled clip rather than per video."""
  clips = np.asarray(clips)
  flat = clips.reshape((-1,) + clips.shape[-4:])
  out = np.stack([flow_clip(c, method, scale) for c in flat])
  return out.reshape(clips.shape[:-1] + (3,))


def negate_x(flow_uint8: np.ndarray) -> np.ndarray:
  """The stored flow with its x channel negated around 128 (FLIP_X_LUT), in place; returns it."""
  if flow_uint8.dtype != np.uint8 or flow_uint8.shape[-1] != 3:
    raise FlowError(f"stream {STREAM!r} must be uint8 with 3 channels (x, y, magnitude), got "
                    f"{flow_uint8.dtype} {flow_uint8.shape}")
  flow_uint8[..., 0] = FLIP_X_LUT[flow_uint8[..., 0]]
  return flow_uint8
