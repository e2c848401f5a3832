"""DTCM darkness metric (Sec. III-F, Eq. 12-14): segment sampling (the paper's random frame per
segment, seeded; the middle frame as an option), per-frame brightness, D_v and the dark threshold,
checked against the paper's formulas transcribed below in plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from darkjax.data.darkness import (DARK_THRESHOLD, REFERENCE_BRIGHTNESS, darkness_score,
                                   frame_brightness, is_dark, random_segment_indices,
                                   segment_bounds, segment_indices)


# ---- the paper's words, transcribed (Sec. III-F) ----
def paper_segments(num_frames, n=8):
  """ "we first divide a video evenly into 8 segments": segment i holds frames t with
  i T / n <= t < (i + 1) T / n (a video shorter than n frames: the frame under i T / n)."""
  segments = []
  for i in range(n):
    frames = [t for t in range(num_frames) if i * num_frames / n <= t < (i + 1) * num_frames / n]
    segments.append(frames or [int(np.floor(i * num_frames / n))])
  return segments


def paper_darkness(video, picks, s_c=112.0):
  """Eq. 12: I_t^m = sum_x sum_y S_t(x, y) / (M x N) (RGB: the channels averaged as well);
  Eq. 13: D_v = 1 / T_N sum_t (S_t^m - S_c) / S_c over the frames evaluated (`picks`)."""
  total = 0.0
  for t in picks:
    frame = video[t].astype(np.float64)
    height, width = frame.shape[:2]
    mean = sum(frame[x, y].mean() for x in range(height) for y in range(width)) / (height * width)
    total += (mean - s_c) / s_c
  return total / len(picks)


def paper_is_dark(d_v, tau=0.877):
  """Eq. 14: F(D_v) = 1 if D_v < -tau, 0 otherwise."""
  return 1 if d_v < -tau else 0


@pytest.mark.parametrize("num_frames", [1, 3, 7, 8, 13, 20, 64, 81])
def test_random_sampling_draws_one_frame_of_each_paper_segment(num_frames):
  segments = paper_segments(num_frames)
  starts, ends = segment_bounds(num_frames)
  assert [list(range(a, b)) for a, b in zip(starts, ends)] == segments
  seen = [set() for _ in segments]
  for seed in range(300):
    picks = random_segment_indices(num_frames, seed=seed)
    assert all(t in segment for t, segment in zip(picks, segments))
    for i, t in enumerate(picks):
      seen[i].add(int(t))
    np.testing.assert_array_equal(picks, random_segment_indices(num_frames, seed=seed))
  assert seen == [set(segment) for segment in segments]   # every frame of a segment can be drawn


@pytest.mark.parametrize("seed", [0, 1, (5, 123)])
def test_darkness_score_is_eq_12_13_on_the_drawn_frames(seed):
  rng = np.random.default_rng(7)
  video = rng.integers(0, 60, (21, 5, 4, 3), dtype=np.uint8)
  picks = random_segment_indices(21, seed=seed)
  want = paper_darkness(video, picks)
  np.testing.assert_allclose(darkness_score(video, seed=seed), want, rtol=1e-12)
  assert is_dark(video, seed=seed) == bool(paper_is_dark(want))
  middle = [(2 * i + 1) * 21 // 16 for i in range(8)]
  np.testing.assert_allclose(darkness_score(video, sampling="middle"),
                             paper_darkness(video, middle), rtol=1e-12)
  # The draw matters on a varying video: some seed gives another score than the middle frames.
  assert any(abs(darkness_score(video, seed=s) - darkness_score(video, sampling="middle")) > 1e-6
             for s in range(5))
  with pytest.raises(ValueError, match="sampling 'first'"):
    darkness_score(video, sampling="first")


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
  assert darkness_score(frames, sampling="middle") == (value - 112) / 112
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
  # Even frames (never the middle frame of a segment for T = 16) are white; only odd frames count.
  frames[::2] = 255
  np.testing.assert_allclose(darkness_score(frames, sampling="middle"), (30 - 112) / 112)
  # A varying video: mean of the per-frame terms over the 8 sampled frames.
  ramp = np.arange(16, dtype=np.uint8).reshape(16, 1, 1, 1) * 10 + np.zeros((1, 2, 2, 3), np.uint8)
  sampled = np.arange(1, 16, 2) * 10.0
  np.testing.assert_allclose(darkness_score(ramp, sampling="middle"),
                             np.mean((sampled - 112) / 112))


def test_rejects_non_uint8():
  with pytest.raises(ValueError, match="uint8"):
    darkness_score(np.zeros((8, 2, 2, 3), np.float32))
  with pytest.raises(ValueError, match="shape"):
    frame_brightness(np.zeros((2, 2), np.uint8))
