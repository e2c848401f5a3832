"""ActLumos: Retinex against OpenCV, DFF / transformer against numpy transcriptions, pinned sizes,
the contrastive and KD losses against numpy loops, the three-phase trainer, and the configs."""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax.layers import retinex
from darkjax.models import actlumos


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------------------------ Retinex

def _numpy_msr(frame: np.ndarray, sigmas, low, high) -> np.ndarray:
  """Direct transcription with OpenCV's blur: log(I+1) - log(G*(I+1)), mean over scales, then
  per-channel percentile stretch (np.percentile, linear)."""
  shifted = frame.astype(np.float32) + 1.0
  ratio = np.mean([np.log(shifted) - np.log(cv2.GaussianBlur(shifted, (0, 0), s))
                   for s in sigmas], axis=0)
  out = np.zeros_like(ratio)
  for c in range(ratio.shape[-1]):
    lo, hi = np.percentile(ratio[..., c], low), np.percentile(ratio[..., c], high)
    if hi - lo > 1e-6:
      out[..., c] = np.clip((ratio[..., c] - lo) / (hi - lo), 0, 1)
  return out


@pytest.fixture(scope="module")
def dark_clips():
  rng = np.random.default_rng(0)
  base = rng.uniform(0, 40, size=(2, 3, 1, 1, 3))
  texture = rng.uniform(0, 25, size=(2, 3, 24, 20, 3))
  return np.clip(base + texture, 0, 255).astype(np.uint8)


def test_gaussian_blur_matches_opencv_including_kernels_wider_than_the_frame(dark_clips):
  frames = dark_clips.reshape((-1,) + dark_clips.shape[2:]).astype(np.float32)
  for sigma in (2.0, 15.0, 80.0, 250.0):   # 250: a 2001-tap kernel on 24 x 20 frames
    got = np.asarray(retinex.gaussian_blur(jnp.asarray(frames), sigma))
    want = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=f"sigma {sigma}")
  # The border rule: BORDER_REFLECT_101 folded as often as needed; a 3-pixel row reflects with
  # period 4: positions -3..5 -> 1 2 1 0 1 2 1 0 1.
  np.testing.assert_array_equal(retinex.reflect101(np.arange(-3, 6), 3), [1, 2, 1, 0, 1, 2, 1, 0, 1])
  # Wide kernels give every output pixel the same average: weights 1 / (n - 1), the two
  # edge pixels (not repeated by REFLECT_101) half that.
  matrix = retinex.blur_matrix(24, 250.0)
  want = np.full(24, 1 / 23)
  want[[0, -1]] /= 2
  np.testing.assert_allclose(matrix, np.broadcast_to(want, (24, 24)), atol=2e-5)


def test_msr_matches_the_opencv_numpy_reference_batched_over_frames(dark_clips):
  fn = jax.jit(lambda c: retinex.retinex(c, (15.0, 80.0, 250.0), 1.0, 99.0))
  got = np.asarray(fn(jnp.asarray(dark_clips)))
  assert got.shape == dark_clips.shape and got.dtype == np.float32
  for b in range(2):
    for t in range(3):
      want = _numpy_msr(dark_clips[b, t], (15.0, 80.0, 250.0), 1.0, 99.0)
      np.testing.assert_allclose(got[b, t], want, atol=2e-4, err_msg=f"clip {b} frame {t}")
  as_uint8 = np.asarray(retinex.retinex_uint8(jnp.asarray(dark_clips)))
  assert as_uint8.dtype == np.uint8
  np.testing.assert_array_equal(as_uint8, np.round(got * 255).astype(np.uint8))
  # The stretch spends the whole range: the dark clip (max ~65) becomes bright.
  assert as_uint8.mean() > 3 * dark_clips.mean()


def test_all_black_and_flat_frames_give_zeros_not_nan():
  black = jnp.zeros((1, 2, 16, 16, 3), jnp.uint8)
  out = retinex.retinex(black)
  assert not np.isnan(np.asarray(out)).any()
  np.testing.assert_array_equal(out, 0.0)
  grads = jax.grad(lambda c: jnp.sum(retinex.retinex(c)))(black.astype(jnp.float32))
  assert np.isfinite(np.asarray(grads)).all()
  flat = retinex.retinex(jnp.full((16, 16, 3), 90, jnp.uint8))
  np.testing.assert_array_equal(flat, 0.0)
  with pytest.raises(ValueError, match="percentiles"):
    retinex.stretch(jnp.zeros((4, 4, 3)), 50.0, 10.0)
  with pytest.raises(ValueError, match="sigma"):
    retinex.blur_matrix(8, 0.0)
