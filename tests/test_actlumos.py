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


# ------------------------------------------------------------------------------------ model

TEACHER = actlumos.VARIANTS["actlumos_teacher_tiny_test"]
STUDENT = actlumos.VARIANTS["actlumos_student_tiny_test"]


def _randomise(tree, seed):
  """Every leaf replaced by noise (BatchNorm variances kept positive)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jnp.abs(jax.random.normal(k, x.shape)) + 0.5
                                      for k, x in zip(keys, leaves)])


def _numpy_dff(p, s, dark, ret, eps=1e-5):
  bn = lambda x, name: ((x - s[name]["mean"]) / np.sqrt(s[name]["var"] + eps)  # noqa: E731
                        * p[name]["scale"] + p[name]["bias"])
  dense = lambda x, name: x @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731

  def branch(x, name):
    y = np.maximum(bn(dense(x, f"{name}_reduce"), f"{name}_reduce_bn"), 0)
    return bn(dense(y, f"{name}_expand"), f"{name}_expand_bn")

  x = dark + ret
  s_map = branch(x.mean(axis=(1, 2, 3), keepdims=True), "global") + branch(x, "local")
  w = dense(np.maximum(bn(dense(s_map, "weight_reduce"), "weight_bn"), 0), "weight_logits")
  w = np.exp(w - w.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return w[..., :1] * dark + w[..., 1:] * ret, w


def test_dff_matches_a_numpy_transcription():
  dark = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 8)))
  ret = np.asarray(jax.random.normal(jax.random.key(1), (2, 3, 4, 5, 8)))
  dff = actlumos.DynamicFeatureFusion(reduction=4)
  variables = dff.init(jax.random.key(2), dark, ret)
  variables = {"params": variables["params"],
               "batch_stats": _randomise(variables["batch_stats"], 4)}
  fused, weights = dff.apply(variables, dark, ret)
  assert variables["params"]["local_reduce"]["kernel"].shape == (8, 2)   # r = 4
  assert weights.shape == (2, 3, 4, 5, 2)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  want, want_w = _numpy_dff(jax.tree.map(np.asarray, variables["params"]),
                            jax.tree.map(np.asarray, variables["batch_stats"]), dark, ret)
  np.testing.assert_allclose(weights, want_w, atol=1e-5)
  np.testing.assert_allclose(fused, want, atol=1e-5)
  assert np.ptp(np.asarray(weights[..., 1])) > 1e-3   # weights vary per position


@pytest.fixture(scope="module")
def tiny_teacher():
  """Tiny teacher variables and, from one compiled function, its outputs on (dark, ret), on
  (dark, dark), and the bare backbone's maps of each stream."""
  from darkjax.models import video_resnet  # pylint: disable=import-outside-toplevel
  model = TEACHER(num_classes=5)
  bare = video_resnet.VARIANTS["r2plus1d_tiny_test"](num_classes=0)
  dark = jax.random.normal(jax.random.key(0), (2, 8, 16, 16, 3))
  ret = jax.random.normal(jax.random.key(1), dark.shape)

  @jax.jit
  def run(dark, ret):
    variables = model.init(jax.random.key(2), dark, ret)
    backbone_vars = {"params": variables["params"]["backbone"],
                     "batch_stats": variables["batch_stats"]["backbone"]}
    bare_maps = [bare.apply(backbone_vars, clip)[1]["stage4"] for clip in (dark, ret)]
    return (variables, model.apply(variables, dark, ret), model.apply(variables, dark, dark)[0],
            bare_maps)

  variables, (logits, out), same_logits, bare_maps = run(dark, ret)
  return dict(model=model, variables=variables, logits=logits, out=out, same_logits=same_logits,
              bare_maps=bare_maps, bare=bare, dark=dark)


def test_teacher_shares_one_backbone_and_outputs(tiny_teacher):
  t = tiny_teacher
  logits, out, variables = t["logits"], t["out"], t["variables"]
  assert logits.shape == (2, 5)
  assert out["fused"].shape == out["maps"][0].shape == (2, 1, 1, 1, 32)
  assert out["fusion_weights"].shape == (2, 1, 1, 1, 2)
  assert out["features"].shape == (2, 2, 32) and out["projections"].shape == (2, 2, 16)
  assert out["cls"].shape == (2, 32) and out["tokens"].shape == (2, 1, 32)
  # One backbone: its parameter count is the bare R(2+1)D's, and each stream's map is that
  # backbone applied to the stream alone (eval mode: running statistics).
  assert _count(variables["params"]["backbone"]) == _count(
      jax.eval_shape(t["bare"].init, jax.random.key(0), t["dark"])["params"])
  for stream in range(2):
    np.testing.assert_allclose(out["maps"][stream], t["bare_maps"][stream], atol=1e-5)
  # The Retinex stream matters.
  assert not np.allclose(t["same_logits"], logits, atol=1e-5)


def test_fusion_ablations_and_unknown_fusion():
  clip = jax.ShapeDtypeStruct((2, 8, 16, 16, 3), jnp.float32)
  shapes = {}
  for fusion in actlumos.FUSIONS:
    model = TEACHER(num_classes=5, fusion=fusion)
    shapes[fusion] = jax.eval_shape(lambda c, m=model: m.init(jax.random.key(0), c, c),
                                    clip)["params"]
  assert "dff" in shapes["dff"] and "dff" not in shapes["sum"] and "dff" not in shapes["concat"]
  assert shapes["concat"]["concat_fusion"]["kernel"].shape == (64, 32)
  assert _count(shapes["sum"]) + 64 * 32 + 32 == _count(shapes["concat"])
  with pytest.raises(ValueError, match="fusion 'max' unknown"):
    model = TEACHER(num_classes=5, fusion="max")
    jax.eval_shape(lambda c: model.init(jax.random.key(0), c, c), clip)


def test_temporal_transformer_cls_positions_and_layers():
  tt = actlumos.TemporalTransformer(hidden=16, heads=4, layers=2, dropout_rate=0.0)
  feature_map = jax.random.normal(jax.random.key(0), (2, 3, 2, 2, 8))
  variables = jax.jit(tt.init)(jax.random.key(1), feature_map)
  apply = jax.jit(tt.apply)
  params = variables["params"]
  assert params["cls"].shape == (1, 1, 16)
  assert params["position_embeddings"].shape == (1, 4, 16)   # CLS + 3 time tokens
  assert params["input_projection"]["kernel"].shape == (8, 16)
  assert {"layer0_attention", "layer1_attention"} <= set(params)
  cls, tokens = apply(variables, feature_map)
  assert cls.shape == (2, 16) and tokens.shape == (2, 3, 16)
  # Tokens are the spatial means: a map with the same per-time means gives the same output.
  shuffled = feature_map[:, :, ::-1, ::-1]
  np.testing.assert_allclose(apply(variables, shuffled)[0], cls, atol=1e-5)
  # Learned positions make the order matter.
  assert not np.allclose(apply(variables, feature_map[:, ::-1])[0], cls, atol=1e-4)


def test_full_size_param_counts_pinned():
  clip = jax.ShapeDtypeStruct((1, 64, 112, 112, 3), jnp.float32)
  teacher = actlumos.VARIANTS["actlumos_teacher"](num_classes=11)
  student = actlumos.VARIANTS["actlumos_student"](num_classes=11)
  t_params = jax.eval_shape(lambda c: teacher.init(jax.random.key(0), c, c), clip)["params"]
  s_params = jax.eval_shape(lambda c: student.init(jax.random.key(0), c), clip)["params"]
  # Student: R(2+1)D-34 without its head 63,491,975 + transformer 3,158,528 (9 positions at 64
  # frames) + 11-way fc 5,643 = 66.66 M (the paper: 67 M).
  assert _count(s_params) == 66_656_146
  assert _count(s_params["backbone"]) == 63_491_975
  assert _count(s_params["temporal"]) == 3_158_528
  # Teacher: the same + DFF 332,162 + SupCon projection 328,320 (one backbone for both streams).
  assert _count(t_params) == 67_316_628
  assert _count(t_params["dff"]) == 332_162 and _count(t_params["projection"]) == 328_320
  assert teacher.hidden == 512 and teacher.heads == 8 and teacher.layers == 1
