"""Optical-flow methods of `prepare --flow`: time per frame pair and error on clips of known flow.

    python -m darkjax.tools.bench --flow [--flow-threads 1]

Each clip shows a smooth random texture under a known motion per frame: a translation of 2 pixels
in x, or a rotation of 1.5 degrees with a 2% zoom about the centre. It is rendered bright (0-255)
and dark (intensities 0-40 plus Gaussian noise of sigma 3, like low-light video), 9 frames of
128x170 (the short side `prepare` writes by default). For every method of `darkjax.data.flow` that
this OpenCV has, `flow.raw_flow` (what `prepare --flow` runs) is timed per frame pair and compared
with the true flow: the mean end-point error in pixels, `BORDER` pixels from the edges.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from darkjax.data import flow

BORDER = 12
MOTIONS = ("translate", "rotate+zoom")
LIGHTING = {"bright": (255.0, 0.0), "dark": (40.0, 3.0)}  # (peak intensity, noise sigma)


def _motion(kind: str, step: int, centre: np.ndarray, texture_centre: np.ndarray) -> np.ndarray:
  """3x3 map from frame pixels (x, y, 1) to texture pixels for frame `step`."""
  if kind == "translate":
    linear = np.eye(2)
    offset = texture_centre - centre - np.array([2.0 * step, 0.0])
  else:
    angle, zoom = np.deg2rad(1.5 * step), 1.02 ** step
    linear = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / zoom
    offset = texture_centre - linear @ centre
  matrix = np.eye(3)
  matrix[:2, :2], matrix[:2, 2] = linear, offset
  return matrix


def known_flow_clip(kind: str, frames: int = 9, height: int = 128, width: int = 170,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(frames (T, H, W) float in [0, 1], true flow (T - 1, H, W, 2) in pixels) of one motion."""
  noise = np.random.default_rng(seed).random((512, 512)).astype(np.float32)
  texture = cv2.GaussianBlur(noise, (0, 0), 2.0)
  texture = (texture - texture.min()) / np.ptp(texture)
  centre, texture_centre = np.array([width / 2, height / 2]), np.array([256.0, 256.0])
  maps = [_motion(kind, t, centre, texture_centre) for t in range(frames)]
  clip = np.stack([cv2.warpAffine(texture, m[:2].astype(np.float32), (width, height),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) for m in maps])
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  pixels = np.stack([xs, ys, np.ones_like(xs)], -1)
  # The texture point at x in frame t is at maps[t + 1]^-1 maps[t] x in frame t + 1.
  flows = [(pixels @ (np.linalg.inv(maps[t + 1]) @ maps[t]).T)[..., :2] - pixels[..., :2]
           for t in range(frames - 1)]
  return clip, np.stack(flows).astype(np.float32)


def run(threads: int = 1, seed: int = 0, frames: int = 9, height: int = 128,
        width: int = 170) -> list[dict[str, object]]:
  """One row per (motion, lighting, method): ms per frame pair and mean end-point error."""
  available = [m for m in flow.METHODS if m != "tvl1" or hasattr(cv2, "optflow")]
  old_threads = cv2.getNumThreads()
  cv2.setNumThreads(threads)
  rng = np.random.default_rng(seed)
  rows = []
  try:
    for kind in MOTIONS:
      clip, truth = known_flow_clip(kind, frames, height, width, seed)
      for lighting, (peak, sigma) in LIGHTING.items():
        grey = clip * peak + (rng.normal(0.0, sigma, clip.shape) if sigma else 0.0)
        rgb = np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, -1)
        for method in available:
          flow.raw_flow(rgb[:2], method)  # warm-up: solver creation, first-call costs
          start = time.perf_counter()
          estimate = flow.raw_flow(rgb, method)[:-1]
          seconds = time.perf_counter() - start
          error = (estimate - truth)[:, BORDER:-BORDER, BORDER:-BORDER]
          rows.append({"motion": kind, "lighting": lighting, "method": method,
                       "ms_per_pair": 1000 * seconds / len(truth),
                       "epe": float(np.hypot(error[..., 0], error[..., 1]).mean())})
  finally:
    cv2.setNumThreads(old_threads)
  return rows


def report(rows: list[dict[str, object]]) -> str:
  lines = [f"optical flow, OpenCV {cv2.__version__}: ms per frame pair, mean end-point error "
           f"(pixels)", f"{'motion':<12} {'lighting':<8} {'method':<10} {'ms':>8} {'EPE':>7}"]
  lines += [f"{r['motion']:<12} {r['lighting']:<8} {r['method']:<10} {r['ms_per_pair']:8.2f} "
            f"{r['epe']:7.3f}" for r in rows]
  return "\n".join(lines)
