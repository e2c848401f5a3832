"""DTCM darkness metric: segment sampling, per-frame brightness, D_v and the dark threshold."""

from __future__ import annotations

import numpy as np
import pytest

from darkjax.data.darkness import (DARK_THRESHOLD, REFERENCE_BRIGHTNESS, darkness_score,
                                   frame_brightness, is_dark, segment_indices)


def test_segment_indices():
  np.testing.assert_array_equal(segment_indices(16, 8), [1, 3, 5, 7, 9, 11, 13, 15])
  np.testing.assert_array_equal(segment_indices(8, 8), np.arange(8))
  np.testing.assert_array_equal(segment_indices(80, 8), np.arange(8) * 10 + 5)
  np.testing.assert_array_equal(segment_indices(20, 8), [1, 3, 6, 8, 11, 13, 16, 18])
  np.testing.assert_array_equal(segment_indices(3, 8), [0, 0, 0, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(segment_indices(1, 8), np.zeros(8))
  for t in range(1, 40):
    idx = segment_indices(t, 8)
    assert np.all(np.diff(idx) >= 0) and idx[0] >= 0 and idx[-1] < t
    # each index lies inside its own segment [i t / 8, (i + 1) t / 8)
    i = np.arange(8)
    assert np.all(idx >= np.floor(i * t / 8)) and np.all(idx < np.ceil((i + 1) * t / 8))
  with pytest.raises(ValueError, match="num_frames"):
    segment_indices(0)


@pytest.mark.parametrize("value", [0, 10, 13, 14, 112, 200, 255])
@pytest.mark.parametrize("shape", [(10, 4, 6, 3), (9, 5, 5)])
def test_constant_frames(value, shape):
  frames = np.full(shape, value, np.uint8)
  np.testing.assert_array_equal(frame_brightness(frames), np.full(shape[0], float(value)))
  assert darkness_score(frames) == (value - 112) / 112
  assert is_dark(frames) == ((value - 112) / 112 < -0.877)


def test_threshold_boundary_and_constants():
  assert REFERENCE_BRIGHTNESS == 112.0 and DARK_THRESHOLD == 0.877
  assert is_dark(np.full((8, 2, 2, 3), 13, np.uint8))  # D_v = -0.884
  assert not is_dark(np.full((8, 2, 2, 3), 14, np.uint8))  # D_v = -0.875


def test_rgb_mean_over_channels_and_sampled_frames_only():
  frames = np.zeros((16, 2, 2, 3), np.uint8)
  frames[..., 0] = 30  # mean over channels: (30 + 60 + 0) / 3 = 30
  frames[..., 1] = 60
  np.testing.assert_allclose(frame_brightness(frames), 30.0)
  # Even frames (never sampled for T = 16) are white; only odd frames count.
  frames[::2] = 255
  np.testing.assert_allclose(darkness_score(frames), (30 - 112) / 112)
  # A varying video: mean of the per-frame terms over the 8 sampled frames.
  ramp = np.arange(16, dtype=np.uint8).reshape(16, 1, 1, 1) * 10 + np.zeros((1, 2, 2, 3), np.uint8)
  sampled = np.arange(1, 16, 2) * 10.0
  np.testing.assert_allclose(darkness_score(ramp), np.mean((sampled - 112) / 112))


def test_rejects_non_uint8():
  with pytest.raises(ValueError, match="uint8"):
    darkness_score(np.zeros((8, 2, 2, 3), np.float32))
  with pytest.raises(ValueError, match="shape"):
    frame_brightness(np.zeros((2, 2), np.uint8))
