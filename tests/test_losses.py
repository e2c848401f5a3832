"""Losses against hand-computed values and straightforward numpy loops."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import losses
import torch_parity


def _blocks(grid, region=4, channels=3):
  """Image (1, rows*region, cols*region, C) made of constant region x region blocks."""
  grid = np.asarray(grid, np.float32)
  img = np.kron(grid, np.ones((region, region), np.float32))
  return jnp.asarray(np.repeat(img[None, :, :, None], channels, axis=-1))


# -------------------------------------------------------------------------------- classification

def _np_ce(logits, labels, eps):
  k = logits.shape[-1]
  logp = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
  t = np.eye(k)[labels] * (1 - eps) + eps / k
  return -np.sum(t * logp, -1)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_with_smoothing_and_mask_ignores_padding(eps):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  labels = np.array([0, 3, 4, 1, 0, 0])
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  padded = logits.copy()
  padded[4:] = 1e4 * rng.normal(size=(2, 5))  # garbage in padded rows
  got = losses.softmax_cross_entropy(padded, labels, eps, mask)
  want = np.mean(_np_ce(logits[:4].astype(np.float64), labels[:4], eps))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  np.testing.assert_allclose(float(losses.softmax_cross_entropy(logits, labels, eps)),
                             np.mean(_np_ce(logits.astype(np.float64), labels, eps)), rtol=1e-5)
  # Uniform logits: log K whatever the smoothing.
  np.testing.assert_allclose(float(losses.softmax_cross_entropy(np.zeros((2, 5)), labels[:2], eps)),
                             math.log(5), rtol=1e-6)


def test_cross_entropy_all_padding_is_zero_with_finite_gradient():
  logits = jnp.ones((3, 4))
  grad = jax.grad(lambda l: losses.softmax_cross_entropy(l, jnp.zeros(3, int), 0.1, jnp.zeros(3)))
  assert float(losses.softmax_cross_entropy(logits, jnp.zeros(3, int), mask=jnp.zeros(3))) == 0.0
  assert np.all(np.isfinite(grad(logits)))


def test_binary_cross_entropy():
  logits = np.array([-2.0, 0.0, 3.0, 100.0, -100.0], np.float32)
  labels = np.array([0.0, 1.0, 1.0, 1.0, 0.0], np.float32)
  want = np.mean([math.log(1 + math.exp(-2.0)), math.log(2.0), math.log(1 + math.exp(-3.0)),
                  0.0, 0.0])
  np.testing.assert_allclose(float(losses.sigmoid_binary_cross_entropy(logits, labels)), want,
                             rtol=1e-5)
  got = losses.sigmoid_binary_cross_entropy(logits, labels, mask=np.array([0, 1, 0, 0, 0]))
  np.testing.assert_allclose(float(got), math.log(2.0), rtol=1e-6)


# -------------------------------------------------------------------------------------- Zero-DCE

def test_colour_constancy_constant_images():
  img = jnp.broadcast_to(jnp.array([0.2, 0.5, 0.9]), (2, 4, 4, 3))
  d_rg, d_rb, d_gb = 0.3 ** 2, 0.7 ** 2, 0.4 ** 2
  np.testing.assert_allclose(float(losses.colour_constancy_loss(img, "paper")),
                             d_rg + d_rb + d_gb, rtol=1e-5)
  np.testing.assert_allclose(float(losses.colour_constancy_loss(img, "official")),
                             math.sqrt(d_rg ** 2 + d_rb ** 2 + d_gb ** 2), rtol=1e-5)
  grey = jnp.full((1, 4, 4, 3), 0.4)
  for variant in ("paper", "official"):
    assert float(losses.colour_constancy_loss(grey, variant)) == 0.0
    grad = jax.grad(lambda x: losses.colour_constancy_loss(x, variant))(grey)
    assert np.all(np.isfinite(grad))


def test_exposure_control_on_half_bright_image():
  # Left half mean 0.1, right half mean 0.9 (channels differ, their mean is what counts).
  left = np.array([0.0, 0.1, 0.2], np.float32)
  right = np.array([0.8, 0.9, 1.0], np.float32)
  img = np.zeros((1, 32, 32, 3), np.float32)
  img[:, :, :16] = left
  img[:, :, 16:] = right
  np.testing.assert_allclose(float(losses.exposure_control_loss(img, 16, 0.6, "paper")),
                             (0.5 + 0.3) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(losses.exposure_control_loss(img, 16, 0.6, "official")),
                             (0.25 + 0.09) / 2, rtol=1e-5)
  np.testing.assert_allclose(
      float(losses.exposure_control_loss(jnp.full((2, 16, 16, 3), 0.6), variant="official")), 0.0,
      atol=1e-12)


def test_illumination_smoothness_on_ramps():
  h, w = 5, 6
  slopes_w = np.array([0.1, 0.2, 0.3, 0.4])  # one slope per iteration (4 iterations x RGB)
  slope_h = 0.05
  hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  maps = np.stack([s * ww + slope_h * hh for s in np.repeat(slopes_w, 3)], -1)[None]
  maps = jnp.asarray(np.concatenate([maps, maps], 0), jnp.float32)  # batch of 2 equal maps
  paper = np.mean(3 * (slopes_w + slope_h) ** 2)
  official = 2 * np.sum(3 * (slopes_w ** 2 + slope_h ** 2))
  np.testing.assert_allclose(float(losses.illumination_smoothness_loss(maps, "paper")), paper,
                             rtol=1e-5)
  np.testing.assert_allclose(float(losses.illumination_smoothness_loss(maps, "official")),
                             official, rtol=1e-5)
  assert float(losses.illumination_smoothness_loss(jnp.ones((1, 4, 4, 24)))) == 0.0


def test_spatial_consistency_hand_values():
  original = jnp.full((1, 4, 12, 3), 0.2)
  enhanced = _blocks([[0.0, 0.1, 0.2]])
  for n in (4, 8):
    np.testing.assert_allclose(float(losses.spatial_consistency_loss(enhanced, original, n)),
                               4 * 0.01 / 3, rtol=1e-5)
  # Official form: signed differences, zero padding outside the image.
  np.testing.assert_allclose(
      float(losses.spatial_consistency_loss(enhanced, original, 4, variant="official")),
      (0.13 + 0.04 + 0.01) / 3, rtol=1e-5)
  # 2x2 regions, 8 neighbours add the diagonals.
  enhanced = _blocks([[0.0, 0.1], [0.2, 0.3]])
  original = jnp.full(enhanced.shape, 0.5)
  np.testing.assert_allclose(float(losses.spatial_consistency_loss(enhanced, original, 4)),
                             (4 * 0.01 + 4 * 0.04) / 4, rtol=1e-5)
  np.testing.assert_allclose(float(losses.spatial_consistency_loss(enhanced, original, 8)),
                             (4 * 0.01 + 4 * 0.04 + 2 * 0.09 + 2 * 0.01) / 4, rtol=1e-5)
  # Mirrored contrast: same |differences| (paper 0) but opposite signs (official > 0).
  a, b = _blocks([[0.3, 0.1]]), _blocks([[0.1, 0.3]])
  assert float(losses.spatial_consistency_loss(a, b, 4)) == pytest.approx(0.0, abs=1e-12)
  assert float(losses.spatial_consistency_loss(a, b, 4, variant="official")) > 0.01
  with pytest.raises(ValueError, match="neighbours must be 4 or 8"):
    losses.spatial_consistency_loss(a, b, 6)


def test_video_spatial_reduces_to_image_form():
  rng = np.random.default_rng(0)
  clip_e = jnp.asarray(rng.uniform(size=(2, 2, 8, 8, 3)), jnp.float32)
  clip_o = jnp.asarray(rng.uniform(size=(2, 2, 8, 8, 3)), jnp.float32)
  for variant in ("paper", "official"):
    one = losses.video_spatial_consistency_loss(clip_e[:, :1], clip_o[:, :1], 4, variant=variant)
    img = losses.spatial_consistency_loss(clip_e[:, 0], clip_o[:, 0], 4, variant=variant)
    np.testing.assert_allclose(float(one), float(img), rtol=1e-6)
    both = losses.video_spatial_consistency_loss(clip_e, clip_o, 8, variant=variant)
    per_frame = [losses.spatial_consistency_loss(clip_e[:, t], clip_o[:, t], 8, variant=variant)
                 for t in range(2)]
    np.testing.assert_allclose(float(both), float(np.mean(per_frame)), rtol=1e-6)


def _np_lscf(dy, di, region=4):
  """Eq. (1) for one frame pair (H, W, 3): 1/K sum_i sum_(j in 8 neighbours of i, inside the
  image) (|Y_i - Y_j| - |P_i - P_j|)^2 over region x region blocks of the channel mean."""
  def blocks(x):
    g = x.mean(-1)
    h, w = g.shape[0] // region, g.shape[1] // region
    return g[:h * region, :w * region].reshape(h, region, w, region).mean((1, 3))
  y, p = blocks(dy), blocks(di)
  rows, cols = y.shape
  total = 0.0
  for r in range(rows):
    for c in range(cols):
      for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
          rr, cc = r + dr, c + dc
          if (dr, dc) == (0, 0) or not (0 <= rr < rows and 0 <= cc < cols):
            continue
          total += (abs(y[r, c] - y[rr, cc]) - abs(p[r, c] - p[rr, cc])) ** 2
  return total / (rows * cols)


def _np_temporal_consistency(enhanced, original):
  """Eq. (3), per clip 1/(T-1) sum_t L_SCF(|DY_(t+1) - DY_t|, |DI_(t+1) - DI_t|); batch mean."""
  per_clip = []
  for y, i in zip(enhanced, original):
    t = len(y)
    per_clip.append(sum(_np_lscf(np.abs(y[s + 1] - y[s]), np.abs(i[s + 1] - i[s]))
                        for s in range(t - 1)) / (t - 1))
  return np.mean(per_clip)


def test_temporal_consistency_is_eq3():
  rng = np.random.default_rng(3)
  original = rng.uniform(0, 0.3, size=(2, 4, 12, 16, 3)).astype(np.float32)
  enhanced = np.sqrt(original) + rng.normal(0, 0.05, size=original.shape).astype(np.float32)
  got = float(losses.temporal_consistency_loss(jnp.asarray(enhanced), jnp.asarray(original)))
  want = _np_temporal_consistency(enhanced.astype(np.float64), original.astype(np.float64))
  assert want > 1e-4
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # A clip brightened uniformly over time (static content) has no temporal inconsistency.
  static = np.broadcast_to(original[:, :1], original.shape)
  assert float(losses.temporal_consistency_loss(jnp.asarray(static * 2.0),
                                                jnp.asarray(static))) == 0.0
  # Eq. (4): L_STC = L_SC + L_TC.
  stc = losses.spatio_temporal_consistency_loss(jnp.asarray(enhanced), jnp.asarray(original))
  sc = losses.video_spatial_consistency_loss(jnp.asarray(enhanced), jnp.asarray(original), 8)
  np.testing.assert_allclose(float(stc), float(sc) + got, rtol=1e-5)
  with pytest.raises(ValueError, match="at least 2 frames"):
    losses.temporal_consistency_loss(jnp.asarray(original[:, :1]), jnp.asarray(original[:, :1]))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_zero_dce_loss_weights(variant):
  rng = np.random.default_rng(1)
  original = jnp.asarray(rng.uniform(0, 0.2, size=(2, 16, 16, 3)), jnp.float32)
  enhanced = jnp.sqrt(original)
  maps = jnp.asarray(rng.uniform(-1, 1, size=(2, 16, 16, 24)), jnp.float32)
  zero_dce = jax.jit(losses.zero_dce_loss, static_argnums=3)   # op by op it compiles every op
  total, terms = zero_dce(enhanced, original, maps, variant)
  assert set(terms) == {"spatial", "exposure", "colour", "illumination"}
  weights = {"paper": dict(spatial=1, exposure=1, colour=0.5, illumination=20),
             "official": dict(spatial=1, exposure=10, colour=5, illumination=200)}[variant]
  np.testing.assert_allclose(float(total), sum(weights[k] * float(v) for k, v in terms.items()),
                             rtol=1e-6)
  np.testing.assert_allclose(float(terms["colour"]),
                             float(losses.colour_constancy_loss(enhanced, variant)), rtol=1e-6)
  total2, _ = jax.jit(lambda *a: losses.zero_dce_loss(*a, variant, weights={"colour": 0.0}))(
      enhanced, original, maps)
  np.testing.assert_allclose(float(total2), float(total) - weights["colour"] * float(
      terms["colour"]), rtol=1e-5)
  with pytest.raises(ValueError, match="unknown weight keys"):
    losses.zero_dce_loss(enhanced, original, maps, variant, weights={"tv": 1.0})
  # Clips: spatio-temporal form with 8 neighbours.
  clip_o = original.reshape(1, 2, 16, 16, 3)
  _, video_terms = zero_dce(jnp.sqrt(clip_o), clip_o, maps, variant)
  assert set(video_terms) == {"spatial", "temporal", "exposure", "colour", "illumination"}
  np.testing.assert_allclose(
      float(video_terms["spatial"]),
      float(losses.video_spatial_consistency_loss(jnp.sqrt(clip_o), clip_o, 8, variant=variant)),
      rtol=1e-6)


# ---------------------------------------------------------------------------- KD and contrastive

def test_kd_losses():
  rng = np.random.default_rng(2)
  s = rng.normal(size=(4, 6)).astype(np.float32)
  t = rng.normal(size=(4, 6)).astype(np.float32)
  temp = 3.0

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  p_t, p_s = softmax(t / temp), softmax(s / temp)
  want = temp ** 2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), -1))
  np.testing.assert_allclose(float(losses.kd_kl_loss(s, t, temp)), want, rtol=1e-5)
  assert float(losses.kd_kl_loss(t, t, temp)) == pytest.approx(0.0, abs=1e-6)
  # LIFT-Net Eq. (6): sum_i |h1_i - h2_i| per example (batch mean); "mean" divides by D.
  np.testing.assert_allclose(float(losses.l1_feature_loss(s, t)),
                             np.mean(np.sum(np.abs(s - t), -1)), rtol=1e-6)
  np.testing.assert_allclose(float(losses.l1_feature_loss(s, t, reduction="mean")),
                             np.mean(np.abs(s - t)), rtol=1e-6)
  with pytest.raises(ValueError, match="reduction"):
    losses.l1_feature_loss(s, t, reduction="max")
  grad_t = jax.grad(lambda x: losses.l1_feature_loss(jnp.asarray(s), x))(jnp.asarray(t))
  assert np.all(grad_t == 0)


def _np_supcon(features, labels, tau):
  z = features / np.linalg.norm(features, axis=1, keepdims=True)
  n = len(z)
  per_anchor = []
  for i in range(n):
    positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
    if not positives:
      continue
    denom = sum(math.exp(z[i] @ z[a] / tau) for a in range(n) if a != i)
    per_anchor.append(-np.mean([math.log(math.exp(z[i] @ z[p] / tau) / denom)
                                for p in positives]))
  return np.mean(per_anchor)


def test_supcon_matches_numpy_loop():
  rng = np.random.default_rng(3)
  features = rng.normal(size=(7, 5))
  labels = np.array([0, 1, 0, 2, 1, 0, 3])  # label 2 and 3 anchors have no positives
  supcon = jax.jit(losses.supcon_loss, static_argnums=2)   # op by op it compiles every op
  got = supcon(jnp.asarray(features, jnp.float32), jnp.asarray(labels), 0.5)
  np.testing.assert_allclose(float(got), _np_supcon(features, labels, 0.5), rtol=1e-5)
  # Two views per sample: the flattened form.
  views = rng.normal(size=(3, 2, 5))
  got = supcon(jnp.asarray(views, jnp.float32), jnp.array([0, 1, 0]), 0.2)
  np.testing.assert_allclose(float(got), _np_supcon(views.reshape(6, 5), np.repeat([0, 1, 0], 2),
                                                    0.2), rtol=1e-5)
  grad = jax.jit(jax.grad(lambda f: losses.supcon_loss(f, jnp.asarray(labels), 0.5)))(
      jnp.asarray(features, jnp.float32))
  assert np.all(np.isfinite(grad))


def test_nt_xent_matches_numpy_loop():
  rng = np.random.default_rng(4)
  z1, z2 = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  tau = 0.5
  z = np.concatenate([z1, z2])
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  terms = []
  for i in range(n2):
    pos = (i + 4) % n2
    denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
    terms.append(-math.log(math.exp(z[i] @ z[pos] / tau) / denom))
  got = losses.nt_xent_loss(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), tau)
  np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-5)


@pytest.mark.torch_parity
def test_official_forms_match_official_pytorch_code():
  """The "official" variants against Li-Chongyi/Zero-DCE Myloss.py, rewritten here for the CPU."""
  torch = torch_parity.require_torch()
  F = torch.nn.functional
  rng = np.random.default_rng(5)
  org = rng.uniform(0, 0.3, size=(2, 3, 32, 24)).astype(np.float32)
  enh = rng.uniform(0, 1, size=(2, 3, 32, 24)).astype(np.float32)
  maps = rng.uniform(-1, 1, size=(2, 24, 32, 24)).astype(np.float32)
  o, e, a = (torch_parity.tensor(v) for v in (org, enh, maps))

  def kernel(rows):
    return torch_parity.tensor(rows)[None, None]

  kernels = [kernel([[0, 0, 0], [-1, 1, 0], [0, 0, 0]]), kernel([[0, 0, 0], [0, 1, -1], [0, 0, 0]]),
             kernel([[0, -1, 0], [0, 1, 0], [0, 0, 0]]), kernel([[0, 0, 0], [0, 1, 0], [0, -1, 0]])]
  org_pool = F.avg_pool2d(o.mean(1, keepdim=True), 4)
  enh_pool = F.avg_pool2d(e.mean(1, keepdim=True), 4)
  spa = sum((F.conv2d(org_pool, k, padding=1) - F.conv2d(enh_pool, k, padding=1)) ** 2
            for k in kernels).mean()
  exp = ((F.avg_pool2d(e.mean(1, keepdim=True), 16) - 0.6) ** 2).mean()
  mr, mg, mb = torch.split(e.mean([2, 3], keepdim=True), 1, dim=1)
  col = torch.sqrt(((mr - mg) ** 2) ** 2 + ((mr - mb) ** 2) ** 2 + ((mb - mg) ** 2) ** 2).mean()
  h_tv = ((a[:, :, 1:, :] - a[:, :, :-1, :]) ** 2).sum()
  w_tv = ((a[:, :, :, 1:] - a[:, :, :, :-1]) ** 2).sum()
  tv = 2 * (h_tv / (31 * 24) + w_tv / (32 * 23)) / 2

  nhwc = lambda v: jnp.asarray(v.transpose(0, 2, 3, 1))
  got = {"spatial": losses.spatial_consistency_loss(nhwc(enh), nhwc(org), 4, variant="official"),
         "exposure": losses.exposure_control_loss(nhwc(enh), variant="official"),
         "colour": losses.colour_constancy_loss(nhwc(enh), "official"),
         "illumination": losses.illumination_smoothness_loss(nhwc(maps), "official")}
  want = {"spatial": spa, "exposure": exp, "colour": col, "illumination": tv}
  why = ("float32 sums over up to 37k terms; the colour term subtracts near-equal channel means "
         "(seen <= 2e-6)")
  for name in want:
    torch_parity.assert_close(float(got[name]), float(want[name]), 1e-5, why, name)
  total, _ = losses.zero_dce_loss(nhwc(enh), nhwc(org), nhwc(maps), "official")
  torch_parity.assert_close(float(total), float(200 * tv + spa + 5 * col + 10 * exp), 1e-5, why,
                            "total")


def test_region_losses_refuse_frames_smaller_than_their_regions():
  """Pooling 16 x 16 (exposure) or 4 x 4 (spatial consistency) regions of smaller frames averages
  nothing: NaN, which would skip every step; an error names the sizes instead."""
  with pytest.raises(ValueError, match=r"frames of 8 x 8 are smaller than the loss's 16 x 16"):
    losses.exposure_control_loss(jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match=r"frames of 3 x 3 are smaller than the loss's 4 x 4"):
    losses.spatial_consistency_loss(jnp.zeros((1, 3, 3, 3)), jnp.zeros((1, 3, 3, 3)))
  assert np.isfinite(float(losses.exposure_control_loss(jnp.zeros((1, 16, 16, 3)))))
