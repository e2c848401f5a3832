"""Light-enhancement curves, PyTorch-compatible bilinear resize, key-frame curve sharing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax.layers.curves import (apply_curves, curve_iterates, curve_step, keyframe_curves,
                                   resize_bilinear)
import torch_parity


def _image(shape=(2, 5, 6, 3), seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_zero_curves_are_identity(convention):
  x = _image()
  np.testing.assert_array_equal(apply_curves(x, jnp.zeros(x.shape[:-1] + (24,)), convention), x)
  np.testing.assert_array_equal(
      apply_curves(x, jnp.zeros(x.shape), convention, num_iterations=8), x)


def test_one_iteration_closed_forms():
  x = _image()
  ones = jnp.ones_like(x)
  np.testing.assert_allclose(apply_curves(x, ones, "official", num_iterations=1), x ** 2,
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(apply_curves(x, -ones, "official", num_iterations=1),
                             2 * x - x ** 2, rtol=1e-5, atol=1e-7)
  # The paper's sign is the opposite one.
  np.testing.assert_allclose(apply_curves(x, ones, "paper", num_iterations=1), 2 * x - x ** 2,
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(apply_curves(x, -ones, "paper", num_iterations=1), x ** 2,
                             rtol=1e-5, atol=1e-7)


def test_stacked_maps_use_their_own_channels_per_iteration():
  x = _image((1, 3, 4, 3))
  maps = jax.random.uniform(jax.random.key(1), (1, 3, 4, 9), minval=-1, maxval=1)
  expected = np.asarray(x, np.float64)
  m = np.asarray(maps, np.float64)
  for i in range(3):
    r = m[..., 3 * i:3 * i + 3]
    expected = expected + r * (expected ** 2 - expected)
  np.testing.assert_allclose(apply_curves(x, maps, "official"), expected, rtol=1e-5, atol=1e-6)
  iterates = curve_iterates(x, maps, "official")
  assert len(iterates) == 3
  np.testing.assert_allclose(iterates[0], curve_step(x, maps[..., :3], "official"))


def test_shared_map_equals_stacked_copies():
  x = _image()
  r = jax.random.uniform(jax.random.key(2), x.shape, minval=-1, maxval=1)
  np.testing.assert_allclose(apply_curves(x, r, "paper", num_iterations=8),
                             apply_curves(x, jnp.tile(r, (1, 1, 1, 8)), "paper"), rtol=1e-6)


def test_curve_errors():
  x = _image()
  with pytest.raises(ValueError, match="convention"):
    apply_curves(x, jnp.zeros_like(x), "sideways", num_iterations=1)
  with pytest.raises(ValueError, match="num_iterations"):
    apply_curves(x, jnp.zeros_like(x))
  with pytest.raises(ValueError, match="resize"):
    apply_curves(x, jnp.zeros((2, 4, 6, 24)))
  with pytest.raises(ValueError, match="multiple"):
    apply_curves(x, jnp.zeros((2, 5, 6, 10)))
  with pytest.raises(ValueError, match="8 iterations"):
    apply_curves(x, jnp.zeros((2, 5, 6, 24)), num_iterations=4)


@pytest.mark.torch_parity
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(8, 10), (3, 2), (6, 5)])
def test_resize_bilinear_matches_torch(align_corners, size):
  torch = torch_parity.require_torch()
  x = np.random.default_rng(0).uniform(size=(2, 6, 5, 4)).astype(np.float32)
  want = torch.nn.functional.interpolate(torch_parity.tensor(x).permute(0, 3, 1, 2), size=size,
                                         mode="bilinear", align_corners=align_corners)
  got = resize_bilinear(jnp.asarray(x), size, align_corners=align_corners)
  torch_parity.assert_close(got, torch_parity.numpy(want.permute(0, 2, 3, 1)), 1e-6,
                            "float32 rounding of 4 weighted terms (seen <= 1.4e-7)")


def _mean_estimator(frames):
  """A curve estimator whose maps depend on the frame: r = frame mean - 0.5, at half resolution."""
  n, h, w, _ = frames.shape
  level = jnp.mean(frames, axis=(1, 2, 3), keepdims=True) - 0.5
  return jnp.broadcast_to(level, (n, h // 2, w // 2, 24))


@pytest.mark.parametrize("group_size", [1, 2, 4, 8])
def test_keyframe_sharing(group_size):
  b, t, h, w = 2, 8, 4, 6
  # Frame brightness differs for every frame, so every frame would get its own curve.
  levels = jnp.linspace(0.05, 0.9, b * t).reshape(b, t, 1, 1, 1)
  clip = jnp.broadcast_to(levels, (b, t, h, w, 3)) + 0.01 * _image((b, t, h, w, 3), seed=3)
  enhanced, out = keyframe_curves(clip, _mean_estimator, group_size, "official")
  groups = t // group_size
  assert enhanced.shape == clip.shape
  assert out["curves"].shape == (b, groups, h, w, 24)
  assert out["intermediate"].shape == clip.shape
  # Curves of each group come from its middle frame; different groups get different curves.
  key = clip[:, group_size // 2::group_size]
  np.testing.assert_allclose(out["curves"][..., 0, 0, 0], jnp.mean(key, axis=(2, 3, 4)) - 0.5,
                             rtol=1e-6)
  assert len(np.unique(np.round(np.asarray(out["curves"][0, :, 0, 0, 0]), 6))) == groups
  # Every frame of a group is enhanced with the group's curves (per-frame check).
  for g in range(groups):
    for f in range(group_size):
      frame = clip[:, g * group_size + f]
      want = apply_curves(frame, out["curves"][:, g], "official")
      np.testing.assert_allclose(enhanced[:, g * group_size + f], want, rtol=1e-6)
  iterates = curve_iterates(clip[:, 0], out["curves"][:, 0], "official")
  np.testing.assert_allclose(out["intermediate"][:, 0], iterates[3], rtol=1e-6)


def test_keyframe_group_size_must_divide_length():
  clip = jnp.zeros((1, 6, 4, 4, 3))
  with pytest.raises(ValueError, match="not divisible by the key-frame group size 4"):
    keyframe_curves(clip, _mean_estimator, 4)
  with pytest.raises(ValueError, match="positive int"):
    keyframe_curves(clip, _mean_estimator, 0)
  with pytest.raises(ValueError, match=r"\(B, T, H, W, C\)"):
    keyframe_curves(jnp.zeros((6, 4, 4, 3)), _mean_estimator, 1)
