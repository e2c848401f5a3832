"""darkjax.data.augment: warp_affine equal to explicit bilinear sampling (exact on integer shifts), the
distortions and rain, and the settings every augment call needs."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax.data import augment


def _bilinear_reference(clip, matrix, shift, fill):
  """The four-corner bilinear sum written out: out(p) = sum_k w_k (in(q_k) - fill) + fill, with
  corners outside the image weighted 0."""
  height, width = clip.shape[1:3]
  centre = jnp.array([(width - 1) / 2.0, (height - 1) / 2.0])
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  source = (jnp.stack([xs, ys], -1) - centre - shift) @ augment.inverse_2x2(matrix).T + centre
  base = jnp.floor(source)
  frac = source - base
  base = base.astype(jnp.int32)
  out = jnp.zeros_like(clip)
  for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
    x, y = base[..., 0] + dx, base[..., 1] + dy
    weight = ((frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])
              * ((x >= 0) & (x < width) & (y >= 0) & (y < height)))
    values = clip[:, jnp.clip(y, 0, height - 1), jnp.clip(x, 0, width - 1), :] - fill
    out = out + weight[None, :, :, None] * values
  return out + fill


def _batch(seed=0, batch=3, shape=(4, 20, 24, 3)):
  clips = jnp.asarray(np.random.default_rng(seed).integers(0, 256, (batch,) + shape), jnp.float32)
  cfg = {"affine": 0.2, "rotation": 20.0, "shear": 10.0}
  matrix, shift = augment.random_affine(jax.random.key(seed), batch, shape[1], shape[2], cfg)
  return clips, matrix, shift


def test_inverse_2x2_is_the_inverse_without_a_factorisation():
  _, matrix, _ = _batch(seed=3, batch=64)
  got = jax.jit(augment.inverse_2x2)(matrix)
  want = np.linalg.inv(np.asarray(matrix, np.float64))
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=2e-6)
  identity = np.broadcast_to(np.eye(2), want.shape)
  np.testing.assert_allclose(np.asarray(got) @ np.asarray(matrix), identity, atol=2e-6)
  # elementwise: no LU (a GPU step would call cuSOLVER for it)
  def primitives(fn):   # every primitive of fn's jaxpr, nested ones included
    return set(re.findall(r"= ([a-z_]+)\b", str(jax.make_jaxpr(fn)(matrix))))
  assert {"lu", "triangular_solve"} <= primitives(jnp.linalg.inv)
  assert not {"lu", "triangular_solve", "while"} & primitives(augment.inverse_2x2)


def test_warp_equals_bilinear_sampling_bit_for_bit_with_zero_fill():
  clips, matrix, shift = _batch()
  got = jax.jit(jax.vmap(augment.warp_affine))(clips, matrix, shift)
  want = jax.jit(jax.vmap(lambda c, m, s: _bilinear_reference(c, m, s, 0.0)))(clips, matrix, shift)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_warp_with_a_fill_value_equals_bilinear_sampling_to_float_rounding():
  clips, matrix, shift = _batch(seed=1)
  warp = lambda c, m, s: augment.warp_affine(c, m, s, fill=-128.0)  # noqa: E731
  got = jax.jit(jax.vmap(warp))(clips, matrix, shift)
  want = jax.vmap(lambda c, m, s: _bilinear_reference(c, m, s, -128.0))(clips, matrix, shift)
  # The operands reach |256 + 128|: a float32 ulp there is 3e-5.
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-4)
  assert float(jnp.min(got)) == pytest.approx(-128.0)  # corners pulled in from outside


def test_identity_and_integer_shift_are_exact():
  clip = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 6, 7, 2)), jnp.float32)
  identity = jnp.eye(2)
  np.testing.assert_array_equal(augment.warp_affine(clip, identity, jnp.zeros(2)), clip)
  moved = augment.warp_affine(clip, identity, jnp.array([2.0, 1.0]), fill=7.0)  # right 2, down 1
  np.testing.assert_array_equal(moved[:, 1:, 2:], clip[:, :-1, :-2])
  np.testing.assert_array_equal(moved[:, 0], 7.0)
  np.testing.assert_array_equal(moved[:, :, :2], 7.0)


# ------------------------------------------------------------------ distortions and rain
def test_optical_distortion_is_radial_about_the_centre():
  points, centre = augment._pixel_grid(21, 21)
  np.testing.assert_array_equal(augment.optical_source(points, centre, jnp.array(0.0), 21),
                                points)
  barrel = augment.optical_source(points, centre, jnp.array(0.2), 21)
  np.testing.assert_allclose(barrel[10, 10], centre)              # the centre stays
  # Corner offset (10, 10) / 21: r^2 = 200 / 441; the source lies (1 + 0.2 r^2) as far out.
  np.testing.assert_allclose(barrel[0, 0] - centre, (points[0, 0] - centre) * (1 + 0.2 * 200 / 441),
                             rtol=1e-6)


def test_elastic_displacement_is_smooth_and_bounded():
  d = np.asarray(augment.elastic_displacement(jax.random.key(0), 32, 40, 0.05))
  assert d.shape == (32, 40, 2)
  assert np.abs(d).max() <= 0.05 * 40 + 1e-5 and np.abs(d).max() > 0.2
  # Smooth: neighbouring pixels move by far less than the field's range.
  assert np.abs(np.diff(d, axis=1)).max() < 0.25 * np.ptp(d)
  np.testing.assert_array_equal(augment.elastic_displacement(jax.random.key(0), 8, 8, 0.0), 0.0)


def test_rain_draws_falling_slanted_streaks():
  mask = np.asarray(augment.rain_mask(jax.random.key(1), 3, 60, 60))
  assert mask.shape == (3, 60, 60, 1) and set(np.unique(mask)) <= {0.0, 1.0}
  drops, length = round(60 * 60 * augment.RAIN_DENSITY), round(60 * augment.RAIN_LENGTH)
  assert 0 < mask[0].sum() <= drops * length
  # Frame t + 1 is frame t moved down by RAIN_FALL * H = 3 rows (wrapping), up to the slant.
  assert not np.array_equal(mask[0], mask[1])
  np.testing.assert_allclose(mask[0].sum(), mask[1].sum(), rtol=0.2)


def test_augment_applies_every_listed_step_and_needs_every_setting():
  from configs.common import augment_block  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.integers(0, 60, (2, 3, 24, 24, 3)), jnp.uint8)
  labels = jnp.arange(2)
  key = jax.random.key(2)
  off = augment_block().to_dict()
  out, _, _ = augment.augment({"video": video}, labels, key, off)
  np.testing.assert_array_equal(out["video"], video)
  rain, _, _ = augment.augment({"video": video, "ir": video}, labels, key, dict(off, rain=1.0))
  np.testing.assert_array_equal(rain["ir"], video)             # rain falls on the RGB video only
  assert np.any(np.asarray(rain["video"]) == 200)              # the streaks
  for step in ("optical_distortion", "elastic"):
    warped, _, _ = augment.augment({"video": video, "ir": video}, labels, key,
                                   dict(off, **{step: 0.3}))
    assert not np.array_equal(warped["video"], video), step
    np.testing.assert_array_equal(warped["video"], warped["ir"])   # one warp for every stream
  with pytest.raises(KeyError, match=r"\['rain'\] missing"):
    augment.augment({"video": video}, labels, key, {k: v for k, v in off.items() if k != "rain"})
