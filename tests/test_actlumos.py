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
  np.testing.assert_array_equal(retinex.reflect101(np.arange(-3, 6), 3),
                                [1, 2, 1, 0, 1, 2, 1, 0, 1])
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
  msr = jax.jit(retinex.retinex)   # as the Task runs it (op by op it compiles every operation)
  out = msr(black)
  assert not np.isnan(np.asarray(out)).any()
  np.testing.assert_array_equal(out, 0.0)
  grads = jax.jit(jax.grad(lambda c: jnp.sum(retinex.retinex(c))))(black.astype(jnp.float32))
  assert np.isfinite(np.asarray(grads)).all()
  flat = msr(jnp.full((16, 16, 3), 90, jnp.uint8))
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
  """DFF as the README's DFF.png draws it: global (pooled) and local Conv1 -> BN -> ReLU -> Conv2
  -> BN branches of X = F_dark + F_ret, summed; Conv1 -> BN -> ReLU -> Conv2 (2 channels);
  softmax; W_dark F_dark + W_ret F_ret (BN in eval mode, convs 1x1x1)."""
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
  variables = jax.jit(dff.init)(jax.random.key(2), dark, ret)   # op by op compiles every op
  variables = {"params": variables["params"],
               "batch_stats": _randomise(variables["batch_stats"], 4)}
  fused, weights = jax.jit(dff.apply)(variables, dark, ret)
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
  (dark, dark), the bare backbone's maps of each stream, and in training the dark stream's maps
  under separate and joint stream statistics beside the bare backbone's on the dark clip alone."""
  from darkjax.models import video_resnet  # pylint: disable=import-outside-toplevel
  model = TEACHER(num_classes=5)
  bare = video_resnet.VARIANTS["r2plus1d_tiny_test"](num_classes=0)
  dark = jax.random.normal(jax.random.key(0), (2, 8, 16, 16, 3))
  ret = jax.random.normal(jax.random.key(1), dark.shape)

  @jax.jit
  def run(dark, ret):
    variables = model.init(jax.random.key(2), dark, ret)
    # the backbone's BatchNorms keep (2, C) statistics, one row per stream
    stream_vars = [{"params": variables["params"]["backbone"],
                    "batch_stats": jax.tree.map(lambda a, s=s: a[s],
                                                variables["batch_stats"]["backbone"])}
                   for s in range(2)]
    bare_maps = [bare.apply(v, clip)[1]["stage4"] for v, clip in zip(stream_vars, (dark, ret))]
    joint_vars = {"params": variables["params"], "batch_stats": {
        **variables["batch_stats"], "backbone": stream_vars[0]["batch_stats"]}}
    train_dark = {}
    for stats, v in (("separate", variables), ("joint", joint_vars)):
      (_, o), _ = TEACHER(num_classes=5, stream_statistics=stats).apply(
          v, dark, ret, train=True, rngs={"dropout": jax.random.key(3)},
          mutable=["batch_stats"])
      train_dark[stats] = o["maps"][0]
    train_dark["alone"] = bare.apply(stream_vars[0], dark, train=True,
                                     mutable=["batch_stats"])[0][1]["stage4"]
    return (variables, model.apply(variables, dark, ret), model.apply(variables, dark, dark)[0],
            bare_maps, train_dark)

  variables, (logits, out), same_logits, bare_maps, train_dark = run(dark, 3.0 + 2.0 * ret)
  return dict(model=model, variables=variables, logits=logits, out=out, same_logits=same_logits,
              bare_maps=bare_maps, bare=bare, dark=dark, train_dark=train_dark)


def test_teacher_shares_one_backbone_and_outputs(tiny_teacher):
  t = tiny_teacher
  logits, out, variables = t["logits"], t["out"], t["variables"]
  assert logits.shape == (2, 5)
  assert out["fused"].shape == out["maps"][0].shape == (2, 1, 1, 1, 32)
  assert out["fusion_weights"].shape == (2, 1, 1, 1, 2)
  assert out["features"].shape == (2, 2, 32) and out["projections"].shape == (2, 2, 16)
  assert out["cls"].shape == (2, 32) and out["tokens"].shape == (2, 1, 32)
  # One backbone: its parameter count is the bare R(2+1)D's, and each stream's map is that
  # backbone applied to the stream alone (eval mode: the stream's running statistics).
  assert _count(variables["params"]["backbone"]) == _count(
      jax.eval_shape(t["bare"].init, jax.random.key(0), t["dark"])["params"])
  for stream in range(2):
    np.testing.assert_allclose(out["maps"][stream], t["bare_maps"][stream], atol=1e-5)
  # The Retinex stream matters.
  assert not np.allclose(t["same_logits"], logits, atol=1e-5)


def test_teacher_trains_each_stream_on_its_own_batch_statistics(tiny_teacher):
  """stream_statistics="separate" (default): in training the dark stream's maps are the shared
  backbone's on the dark clips alone, whatever the Retinex clips are (in inference too: the
  fixture's eval maps use each stream's running statistics); "joint" normalises them together
  with the (here brighter) Retinex clips."""
  train_dark = tiny_teacher["train_dark"]
  np.testing.assert_allclose(train_dark["separate"], train_dark["alone"], rtol=1e-5, atol=1e-5)
  assert not np.allclose(train_dark["joint"], train_dark["alone"], atol=1e-3)
  assert TEACHER().stream_statistics == "separate"


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
  # frames) + 11-way fc 5,643 = 66.66 M (the README's Tables 1-3, images: 67 M).
  assert _count(s_params) == 66_656_146
  assert _count(s_params["backbone"]) == 63_491_975
  assert _count(s_params["temporal"]) == 3_158_528
  # Teacher: the same + DFF 332,162 + SupCon projection 328,320 (one backbone for both streams).
  assert _count(t_params) == 67_316_628
  assert _count(t_params["dff"]) == 332_162 and _count(t_params["projection"]) == 328_320
  assert teacher.hidden == 512 and teacher.heads == 8 and teacher.layers == 1


# ------------------------------------------------------------------------------------ losses

def _numpy_supcon(features, labels, tau):
  """SupCon, one anchor at a time (features (N, V, D) -> N V anchors). The positives are the
  README's ("with labels, every clip from the same class Pick including dark and retinex views of
  different instances is a positive ..., while clips from other classes are negatives"); the
  formula is Khosla et al.'s L_out (their Eq. 2), which the README names but does not write:
  l_i = -1/|P(i)| sum_p log(exp(z_i.z_p / tau) / sum_(a != i) exp(z_i.z_a / tau))."""
  z = features.reshape(-1, features.shape[-1]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  labels = np.repeat(labels, features.shape[1])
  per_anchor = []
  for i in range(len(z)):
    others = [a for a in range(len(z)) if a != i]
    log_denominator = np.log(sum(np.exp(z[i] @ z[a] / tau) for a in others))
    positives = [p for p in others if labels[p] == labels[i]]
    if positives:
      per_anchor.append(-np.mean([z[i] @ z[p] / tau - log_denominator for p in positives]))
  return float(np.mean(per_anchor))


def _numpy_nt_xent(z1, z2, tau):
  """The README's self-supervised contrastive setting ("the anchor clip ... has only its own
  augmented view as a positive ..., all other clips in the batch are treated as negatives") in
  SimCLR's NT-Xent form (Chen et al., Eq. 1), averaged over all 2N anchors."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  total = 0.0
  for i in range(2 * n):
    positive = (i + n) % (2 * n)
    denominator = sum(np.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k != i)
    total += -np.log(np.exp(z[i] @ z[positive] / tau) / denominator)
  return total / (2 * n)


def _numpy_cross_entropy(logits, labels):
  logits = np.asarray(logits, np.float64)
  top = logits.max(1, keepdims=True)
  log_softmax = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
  return float(-np.mean(log_softmax[np.arange(len(labels)), labels]))


def _numpy_kd(student, teacher, t):
  """Hinton et al.'s soft-target term: T^2 KL(softmax(teacher / T) || softmax(student / T)),
  summed over classes, averaged over the batch."""
  def softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
  p, q = softmax(np.asarray(teacher, np.float64) / t), softmax(np.asarray(student, np.float64) / t)
  return float(t * t * np.mean(np.sum(p * np.log(p / q), axis=1)))


def test_supcon_on_dark_and_retinex_views_matches_numpy():
  from darkjax import losses  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  projections = rng.normal(size=(6, 2, 16)).astype(np.float32)   # (clips, dark / Retinex, D)
  labels = np.array([0, 1, 0, 2, 1, 0])
  got = losses.supcon_loss(jnp.asarray(projections), jnp.asarray(labels), 0.07)
  np.testing.assert_allclose(float(got), _numpy_supcon(projections, labels, 0.07), rtol=1e-4)
  # Every label unique: each anchor's only positive is its other view (SimCLR's pairs).
  unique = losses.supcon_loss(jnp.asarray(projections), jnp.arange(6), 0.07)
  np.testing.assert_allclose(float(unique), _numpy_supcon(projections, np.arange(6), 0.07),
                             rtol=1e-4)
  np.testing.assert_allclose(float(unique), _numpy_nt_xent(projections[:, 0], projections[:, 1],
                                                           0.07), rtol=1e-4)


def test_supcon_with_a_single_class_is_defined():
  from darkjax import losses  # pylint: disable=import-outside-toplevel
  # One class: every other sample is a positive. Identical features: every logit equals 1 / tau,
  # so each anchor's term is log(2N - 1) for its 2N - 1 positives = the whole denominator.
  same = jnp.ones((4, 2, 8))
  np.testing.assert_allclose(float(losses.supcon_loss(same, jnp.zeros(4, jnp.int32), 0.07)),
                             np.log(7), rtol=1e-5)
  rng = np.random.default_rng(2)
  features = rng.normal(size=(4, 2, 8)).astype(np.float32)
  got = float(losses.supcon_loss(jnp.asarray(features), jnp.zeros(4, jnp.int32), 0.07))
  assert np.isfinite(got)
  np.testing.assert_allclose(got, _numpy_supcon(features, np.zeros(4, int), 0.07), rtol=1e-4)


def test_nt_xent_and_kd_match_numpy():
  from darkjax import losses  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  z1, z2 = rng.normal(size=(2, 5, 8)).astype(np.float32)
  np.testing.assert_allclose(float(losses.nt_xent_loss(jnp.asarray(z1), jnp.asarray(z2), 0.5)),
                             _numpy_nt_xent(z1, z2, 0.5), rtol=1e-5)
  student, teacher = rng.normal(size=(2, 4, 11)).astype(np.float64) * 3
  np.testing.assert_allclose(float(losses.kd_kl_loss(jnp.asarray(student, jnp.float32),
                                                     jnp.asarray(teacher, jnp.float32), 4.0)),
                             _numpy_kd(student, teacher, 4.0), rtol=1e-5)


# ------------------------------------------------------------------------------------ trainer

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from configs import actlumos_arid, actlumos_arid_v1_5, actlumos_dark48  # noqa: E402
from configs import actlumos_synthetic  # noqa: E402
from darkjax import config as config_lib  # noqa: E402
from darkjax import checkpoint as ckpt_lib  # noqa: E402
from darkjax import metrics as metrics_lib  # noqa: E402
from darkjax import phases, train  # noqa: E402
from darkjax import variables as variables_lib  # noqa: E402
from darkjax.data import prepared  # noqa: E402
from darkjax.trainers import actlumos as actlumos_trainer  # noqa: E402
from darkjax import task as task_lib
import run_configs  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _abstract_variables(task, frames=8, size=32):
  clip = jnp.zeros((1, frames, size, size, 3), jnp.uint8)
  shapes = jax.eval_shape(task.init_variables, jax.random.key(0),
                          {"video": clip, "label": jnp.zeros((1,), jnp.int32)})
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_teacher_of_another_architecture_is_a_clear_error():
  config = actlumos_synthetic.get_config("runlocal")
  sum_config = actlumos_synthetic.get_config("runlocal,fusion=sum")
  teacher_vars = _abstract_variables(actlumos_trainer.TeacherTask(sum_config, num_classes=10))
  task = actlumos_trainer.Task(config, num_classes=10, teacher_variables=teacher_vars,
                               teacher_source="/runs/sum_teacher")
  with pytest.raises(ValueError, match=r"(?s)/runs/sum_teacher.*teacher.*missing.*dff.*fusion=dff"):
    task.init_from(_abstract_variables(task))
  # A matching teacher lands in the `teacher` subtree, the student's weights are untouched.
  good = _abstract_variables(actlumos_trainer.TeacherTask(config, num_classes=10))
  good = jax.tree.map(lambda x: x + 1, good)
  task = actlumos_trainer.Task(config, num_classes=10, teacher_variables=good)
  merged = task.init_from(_abstract_variables(task))
  assert all((np.asarray(x) == 1).all() for x in jax.tree.leaves(merged["params"]["teacher"]))
  assert all((np.asarray(x) == 0).all() for x in jax.tree.leaves(merged["params"]["student"]))


# The objectives in the README's architecture image (assets/arch.png): "Overall loss for teacher =
# L_ce + lambda_sup L_SupCon", Stage 1 "L_SSL" on two dark clips of the same video, "Overall loss
# for student = L_CE + lambda_kd L_KD". Each Task's loss_fn against that sum written in NumPy on the
# model's own outputs (the same rngs: loss_fn splits its rng as below).

@pytest.fixture(scope="module")
def objective_batch():
  rng = np.random.default_rng(7)
  return {"video": jnp.asarray(rng.integers(0, 60, size=(4, 8, 32, 32, 3)), jnp.uint8),
          "label": jnp.asarray([0, 3, 0, 5], jnp.int32)}


def _run(config, fn, *args):
  """`fn(*args)` compiled as the runlocal Trainer would (XLA's native convs, opt level 0)."""
  with train.lowering_scope(config):
    return jax.jit(fn).lower(*args).compile(train.compiler_options(config, "cpu"))(*args)


def _train_outputs(task, variables, clips, drop_rng):
  state = {k: v for k, v in variables.items() if k != "params"}
  (logits, out), _ = _run(task.config, lambda v, c, r: task.model.apply(
      v, *c, train=True, rngs={"dropout": r}, mutable=list(state)), variables, clips, drop_rng)
  return logits, out


def _init_and_loss(task, batch, init_rng, rng):
  variables = _run(task.config, task.init_variables, init_rng, batch)
  state = {k: v for k, v in variables.items() if k != "params"}
  loss, (_, metrics) = _run(task.config, lambda *a: task.loss_fn(*a, 0.0),
                            variables["params"], state, batch, rng)
  return variables, float(loss), metrics


def test_teacher_objective_is_ce_plus_lambda_sup_supcon(objective_batch):
  config = actlumos_synthetic.get_config("runlocal")
  task = actlumos_trainer.TeacherTask(config, num_classes=10)
  rng = jax.random.key(1)
  variables, loss, metrics = _init_and_loss(task, objective_batch, jax.random.key(0), rng)
  aug_rng, drop_rng = jax.random.split(rng)
  dark_uint8 = task.inputs.augmented(objective_batch, aug_rng)
  logits, out = _train_outputs(task, variables, task.inputs.streams(dark_uint8), drop_rng)
  labels = np.asarray(objective_batch["label"])
  ce = _numpy_cross_entropy(logits, labels)
  # (clip, dark / Retinex) projections: the two views of a clip are positives of each other.
  supcon = _numpy_supcon(np.asarray(out["projections"]), labels, config.actlumos.supcon_temperature)
  assert config.actlumos.supcon_weight == 0.1
  # float32 projections divided by tau = 0.07: agreement to ~1e-4 between two compilations.
  np.testing.assert_allclose(loss, ce + 0.1 * supcon, rtol=5e-4)
  np.testing.assert_allclose(float(metrics["supcon"]), supcon, rtol=5e-4)


def test_student_objective_is_ce_plus_lambda_kd_kd(objective_batch):
  config = actlumos_synthetic.get_config("runlocal,ssl=False")
  task = actlumos_trainer.Task(config, num_classes=10)
  rng = jax.random.key(3)
  variables, loss, metrics = _init_and_loss(task, objective_batch, jax.random.key(2), rng)
  aug_rng, drop_rng = jax.random.split(rng)
  dark_uint8 = task.inputs.augmented(objective_batch, aug_rng)
  logits, out = _train_outputs(task, variables, task.inputs.streams(dark_uint8), drop_rng)
  # The teacher's logits: the frozen teacher alone on (dark, Retinex), eval mode.
  teacher = {c: v["teacher"] for c, v in variables.items()}
  teacher_logits, _ = _run(config, task.make_teacher().apply, teacher,
                           *task.inputs.streams(dark_uint8))
  np.testing.assert_allclose(out["teacher_logits"], teacher_logits, atol=1e-5)
  ce = _numpy_cross_entropy(logits, np.asarray(objective_batch["label"]))
  kd = _numpy_kd(logits, teacher_logits, config.actlumos.kd_temperature)
  assert config.actlumos.kd_weight == 1.0 and config.actlumos.kd_temperature == 4.0
  np.testing.assert_allclose(loss, ce + 1.0 * kd, rtol=5e-4)
  np.testing.assert_allclose(float(metrics["kd"]), kd, rtol=5e-4)
  # Another lambda_kd (the docs' `kd0` arm): the same terms, the KD one weighed by it; still
  # measured (metrics["kd"]) at weight 0.
  config.actlumos.kd_weight = 0.0
  unweighted = actlumos_trainer.Task(config, num_classes=10)
  state = {k: v for k, v in variables.items() if k != "params"}
  loss0, (_, metrics0) = _run(config, lambda *a: unweighted.loss_fn(*a, 0.0),
                              variables["params"], state, objective_batch, rng)
  np.testing.assert_allclose(float(loss0), ce, rtol=5e-4)
  np.testing.assert_allclose(float(metrics0["kd"]), kd, rtol=5e-4)
  assert kd > 1e-3


def test_student_with_kd_unlabelled_distils_on_both_batches_and_ce_on_the_labelled(
    objective_batch):
  config = actlumos_synthetic.get_config("runlocal,ssl=False,kd_unlabelled=True")
  task = actlumos_trainer.Task(config, num_classes=10)
  unlabelled = np.random.default_rng(8).integers(0, 60, size=(4, 8, 32, 32, 3))
  batch = dict(objective_batch, **{actlumos_trainer.UNLABELLED: jnp.asarray(unlabelled, jnp.uint8)})
  rng = jax.random.key(3)
  variables, loss, metrics = _init_and_loss(task, batch, jax.random.key(2), rng)
  aug_rng, drop_rng = jax.random.split(rng)
  extra = {"video": batch[actlumos_trainer.UNLABELLED], "label": jnp.zeros(4, jnp.int32)}
  dark_uint8 = jnp.concatenate([task.inputs.augmented(batch, aug_rng),
                                task.inputs.augmented(extra, jax.random.fold_in(aug_rng, 1))], 0)
  logits, out = _train_outputs(task, variables, task.inputs.streams(dark_uint8), drop_rng)
  assert logits.shape[0] == out["teacher_logits"].shape[0] == 8
  ce = _numpy_cross_entropy(logits[:4], np.asarray(batch["label"]))
  kd = _numpy_kd(logits, out["teacher_logits"], config.actlumos.kd_temperature)
  np.testing.assert_allclose(loss, ce + 1.0 * kd, rtol=5e-4)
  np.testing.assert_allclose(float(metrics["ce"]), ce, rtol=5e-4)
  np.testing.assert_allclose(float(metrics["kd"]), kd, rtol=5e-4)
  # The unlabelled half is in the KD term: other unlabelled clips, another loss.
  other = dict(batch, **{actlumos_trainer.UNLABELLED: jnp.asarray(255 - unlabelled, jnp.uint8)})
  _, other_loss, _ = _init_and_loss(task, other, jax.random.key(2), rng)
  assert abs(other_loss - loss) > 1e-3


def test_student_batches_carry_unlabelled_clips_and_kd_unlabelled_needs_kd(tmp_path):
  config = actlumos_synthetic.get_config(
      f"runlocal,kd_unlabelled=True,unlabelled=2,data_dir={tmp_path / 'data'}")
  task = actlumos_trainer.Task(config)
  assert [s.directory for s in task.sources] == [str(tmp_path / "synthetic_local_unlabelled2")]
  batch = next(iter(task.train_dataset(4)))
  assert batch[actlumos_trainer.UNLABELLED].shape == batch["video"].shape == (
      4, config.input.frames, 32, 32, 3)
  assert "unlabelled_video" not in next(iter(actlumos_trainer.Task(
      actlumos_synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}")).train_dataset(4)))
  with pytest.raises(ValueError, match="kd_unlabelled=True .* needs kd=True"):
    actlumos_synthetic.get_config("runlocal,kd=False,kd_unlabelled=True")
  config = actlumos_synthetic.get_config("runlocal")
  config.actlumos.update(kd=False, kd_unlabelled=True)
  with pytest.raises(ValueError,
                     match="config.actlumos.kd_unlabelled=True .*config.actlumos.kd=True"):
    actlumos_trainer.Task(config, num_classes=10)


@pytest.mark.parametrize("features", ["backbone", "cls"])
def test_ssl_objective_is_nt_xent_of_two_views_of_each_clip(objective_batch, features):
  config = actlumos_synthetic.get_config(f"runlocal,ssl_features={features}")
  task = actlumos_trainer.SSLTask(config, num_classes=10)
  rng = jax.random.key(5)
  variables, loss, _ = _init_and_loss(task, objective_batch, jax.random.key(4), rng)
  # Stage 1 trains the R(2+1)D alone (arch.png); `cls` the whole student.
  assert set(variables["params"]) == ({"backbone", "projection"} if features == "backbone"
                                      else {"student", "projection"})
  rng_a, rng_b, drop_rng = jax.random.split(rng, 3)
  views = [task.inputs.normalise(task.inputs.augmented(objective_batch, k, config.ssl.augment))
           for k in (rng_a, rng_b)]
  _, out = _train_outputs(task, variables, [jnp.concatenate(views, 0)], drop_rng)
  z = np.asarray(out["projection"])
  np.testing.assert_allclose(loss, _numpy_nt_xent(z[:4], z[4:], config.ssl.temperature),
                             rtol=5e-4)
  if features == "backbone":   # the projection reads the pooled backbone map
    head = {"params": variables["params"]["projection"]}
    pooled = jnp.mean(out["map"], axis=(1, 2, 3))
    np.testing.assert_allclose(z, actlumos.ProjectionHead(32, 16).apply(head, pooled), atol=1e-5)


def test_student_starts_from_the_ssl_backbone():
  config = actlumos_synthetic.get_config("runlocal,kd=False")
  ssl_vars = _abstract_variables(actlumos_trainer.SSLTask(config, num_classes=10))
  ssl_vars = jax.tree.map(lambda x: x + 1, ssl_vars)
  task = actlumos_trainer.Task(config, num_classes=10, ssl_variables=ssl_vars)
  merged = task.init_from(_abstract_variables(task))
  student = merged["params"]["student"]
  assert all((np.asarray(x) == 1).all() for x in jax.tree.leaves(student["backbone"]))
  assert all((np.asarray(x) == 0).all() for x in jax.tree.leaves(student["temporal"]))
  cls_config = actlumos_synthetic.get_config("runlocal,kd=False,ssl_features=cls")
  cls_vars = jax.tree.map(lambda x: x + 1, _abstract_variables(
      actlumos_trainer.SSLTask(cls_config, num_classes=10)))
  task = actlumos_trainer.Task(cls_config, num_classes=10, ssl_variables=cls_vars)
  student = task.init_from(_abstract_variables(task))["params"]["student"]
  assert all((np.asarray(x) == 1).all() for x in jax.tree.leaves(student["temporal"]))
  assert all((np.asarray(x) == 0).all() for x in jax.tree.leaves(student["fc"]))


def test_backbone_from_a_darkjax_directory_goes_to_every_phase_head_left_out(tmp_path,
                                                                             monkeypatch):
  """`pretrained=DIR` (config.actlumos.backbone_init a directory): the tiny R(2+1)D of a
  conversion or a darkjax run, its classifier head dropped, starts the teacher's shared backbone,
  the SSL phase's and the student's (the teacher's alone with `student_pretrained=False`);
  another architecture or normalisation is a clear error."""
  from darkjax.convert import io as convert_io  # pylint: disable=import-outside-toplevel
  from darkjax.data import normalise as normalise_lib  # pylint: disable=import-outside-toplevel
  plain = actlumos_synthetic.get_config("runlocal,kd=False,ssl=False")
  backbone = _abstract_variables(actlumos_trainer.SSLTask(plain, num_classes=10))
  backbone = {c: jax.tree.map(lambda x: x + 2, v["backbone"]) for c, v in backbone.items()}
  saved = {"params": {**backbone["params"], "fc": {"kernel": np.ones((32, 10), np.float32),
                                                   "bias": np.ones((10,), np.float32)}},
           "batch_stats": backbone["batch_stats"]}
  directory = str(tmp_path / "day")
  convert_io.save_variables(directory, saved, {"arch": "r2plus1d_tiny_test",
                                               "input_normalisation": {"mode": "imagenet"}})
  arg = f"runlocal,pretrained={directory},normalise=imagenet"
  config = actlumos_synthetic.get_config(arg)
  assert config.actlumos.backbone_init == directory and config.input.normalise == "imagenet"
  student_config = actlumos_synthetic.get_config(arg + ",kd=False,ssl=False")
  for task, path in [(actlumos_trainer.TeacherTask(config, num_classes=10), ("backbone",)),
                     (actlumos_trainer.SSLTask(config, num_classes=10), ("backbone",)),
                     (actlumos_trainer.Task(student_config, num_classes=10),
                      ("student", "backbone"))]:
    assert task.merges_pretrained
    merged = task.init_from(_abstract_variables(task))
    for collection in ("params", "batch_stats"):
      tree = merged[collection]
      for key in path:
        tree = tree[key]
      assert "fc" not in tree
      assert all((np.asarray(x) == 2).all() for x in jax.tree.leaves(tree)), (task, collection)
  # student_pretrained=False: only the teacher loads them; SSL and student start at random
  weak = actlumos_synthetic.get_config(arg + ",student_pretrained=False")
  assert actlumos_trainer.TeacherTask(weak, num_classes=10).merges_pretrained
  assert not actlumos_trainer.SSLTask(weak, num_classes=10).merges_pretrained
  assert not actlumos_trainer.Task(actlumos_synthetic.get_config(
      arg + ",student_pretrained=False,kd=False,ssl=False"), num_classes=10).merges_pretrained
  # the teacher's BatchNorms keep statistics per stream: both rows start from the loaded ones
  teacher = actlumos_trainer.TeacherTask(config, num_classes=10)
  stats = teacher.init_from(_abstract_variables(teacher))["batch_stats"]["backbone"]
  assert stats["stem_spatial_bn"]["mean"].shape[0] == 2
  # The weights read what they were trained on: imagenet, not the config's per-clip default.
  with pytest.raises(normalise_lib.NormalisationMismatchError,
                     match=r"config.actlumos.backbone_init .*day.*'imagenet'"):
    actlumos_trainer.TeacherTask(actlumos_synthetic.get_config(
        f"runlocal,pretrained={directory}"), num_classes=10).init_from(backbone)
  # A run's workdir names its model in config.json: another architecture stops with both names.
  run_meta = {"source": "darkjax run", "config": {"model": {"name": "small3d"},
                                                  "input": {"normalise": "imagenet"}}}
  monkeypatch.setattr(convert_io, "load_variables", lambda path: (saved, run_meta))
  with pytest.raises(ValueError, match=r"config.actlumos.backbone_init .*'small3d'.*"
                                       r"config.json model.name.*'r2plus1d_tiny_test'"):
    actlumos_trainer.TeacherTask(config, num_classes=10).init_from(backbone)


@pytest.mark.parametrize("module", [actlumos_arid, actlumos_arid_v1_5, actlumos_dark48],
                         ids=lambda m: m.__name__)
def test_paper_configs_require_the_ig65m_backbone_unless_opted_out(module):
  config = module.get_config()
  assert {e.key for e in config.required_weights.values()} == {"actlumos.backbone_init"}
  with pytest.raises(config_lib.MissingWeightsError) as error:
    config_lib.check_required_weights(config)
  message = str(error.value)
  assert "r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth" in message
  assert "`backbone_init=PATH`" in message and "init=none" in message
  config_lib.check_required_weights(module.get_config("backbone_init=/w/ig65m.pth"))
  assert not module.get_config("init=none").required_weights
  assert not module.get_config("runlocal").required_weights
  assert not actlumos_synthetic.get_config().required_weights


def test_ssl_sources_name_the_missing_dataset_and_how_to_prepare(tmp_path, monkeypatch):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path))
  config = actlumos_arid.get_config("runlocal,ssl_datasets=arid_v1+dark48")
  assert config.ssl.datasets == ("arid_v1", "dark48")
  assert config.ssl.dirs == (str(tmp_path / "arid_v1"), str(tmp_path / "dark48"))
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match=r"(?s)config.ssl.datasets entry 'arid_v1'.*--dataset arid_v1"):
    actlumos_trainer.ssl_sources(config)


def test_ssl_reads_its_own_unlabelled_set_beside_the_labelled_one(tmp_path):
  config = actlumos_synthetic.get_config(f"runlocal,unlabelled=2,data_dir={tmp_path / 'data'}")
  [source] = actlumos_trainer.ssl_sources(config)
  assert source.directory == str(tmp_path / "synthetic_local_unlabelled2")
  manifest = source.manifest
  assert set(manifest["splits"]) == {"train"}            # no test clips, labels never read
  assert manifest["splits"]["train"]["num_examples"] == 2 * manifest["num_classes"]
  assert manifest["metadata"]["params"]["seed"] == 4321  # other clips than the labelled set's
  labelled = prepared.open_dataset(config.input.data)
  assert labelled.manifest["metadata"]["params"]["seed"] == 1234
  assert labelled.manifest["splits"]["train"]["num_examples"] == (
      actlumos_synthetic.RUNLOCAL_CLIPS * manifest["num_classes"])
  # Without `unlabelled` the SSL phase reads the labelled set's train clips.
  [same] = actlumos_trainer.ssl_sources(
      actlumos_synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}"))
  assert same.directory == labelled.directory


def test_arid_command_without_prepared_data_says_how_to_prepare(tmp_path, main_env):
  env = dict(main_env, DARKJAX_DATA=str(tmp_path / "data"))
  result = subprocess.run([sys.executable, "-m", "darkjax.main",
                           "--config=configs/actlumos_arid.py:runlocal",
                           f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "python -m darkjax.data.prepare --dataset arid_v1" in result.stderr
  assert not os.path.exists(tmp_path / "run" / "teacher" / "checkpoints")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
  """All three phases of the runlocal synthetic config (3 steps each), run once."""
  root = tmp_path_factory.mktemp("actlumos")
  config = run_configs.quiet(actlumos_synthetic.get_config(f"runlocal,data_dir={root / 'data'}"))
  workdir = str(root / "run")
  results = phases.run_phases(config, workdir)
  return config, workdir, results


def _restore(directory):
  from darkjax.convert import io as convert_io  # pylint: disable=import-outside-toplevel
  return convert_io.load_variables(directory)[0]


def test_all_phases_run_and_hand_their_weights_on(synthetic_run):
  config, workdir, results = synthetic_run
  for phase in ("teacher", "ssl", "student"):
    assert ckpt_lib.Checkpointer(os.path.join(workdir, phase)).latest_step() == 3, phase
  assert 0.0 <= results["eval/top1"] <= 1.0
  assert os.path.isfile(os.path.join(workdir, "teacher", "fusion_00.png"))
  assert os.path.isfile(os.path.join(workdir, "student", "eval_confusion.png"))
  with open(os.path.join(workdir, "student", "metrics.jsonl")) as f:
    first = json.loads(f.readline())
  assert {"train/kd", "train/ce", "train/teacher_accuracy"} <= set(first)
  with open(os.path.join(workdir, "teacher", "metrics.jsonl")) as f:
    assert "train/supcon" in json.loads(f.readline())
  with open(os.path.join(workdir, "ssl", "metrics.jsonl")) as f:
    assert "train/nt_xent" in json.loads(f.readline())
  # The student phase holds the final teacher, unchanged by 3 student steps (frozen).
  teacher = variables_lib.flatten(_restore(os.path.join(workdir, "teacher")))
  student = variables_lib.flatten(_restore(os.path.join(workdir, "student")))
  for key, value in teacher.items():
    collection, rest = key.split("/", 1)
    np.testing.assert_array_equal(student[f"{collection}/teacher/{rest}"], value, err_msg=key)
  assert task_lib.deployed_workdir(config, workdir).endswith("student")


def test_rerun_resumes_without_new_steps_and_rejects_a_changed_teacher(synthetic_run):
  config, workdir, _ = synthetic_run
  lines = {p: open(os.path.join(workdir, p, "metrics.jsonl")).read()
           for p in ("teacher", "ssl", "student")}
  phases.run_phases(config, workdir)
  for phase, text in lines.items():
    assert open(os.path.join(workdir, phase, "metrics.jsonl")).read() == text, phase
  changed = run_configs.quiet(actlumos_synthetic.get_config(
      f"runlocal,fusion=concat,data_dir={config.input.data.dir}"))
  with pytest.raises(ValueError, match=r"actlumos.fusion='dff'.*says 'concat'"):
    phases.run_phases(changed, workdir)
  # Another evaluation part beside the student's KD weight, which the teacher does not read: the
  # student's refusal comes before the teacher could evaluate again with the new part, and no
  # phase's logged evaluation moves.
  mixed = run_configs.quiet(actlumos_synthetic.get_config(
      f"runlocal,data_dir={config.input.data.dir}"))
  mixed.input.data.eval_split, mixed.actlumos.kd_weight = "train", 0.5
  with pytest.raises(config_lib.ConfigError, match=r"(?s)phase student: .*trained to step 3 "
                     r"already; this run changes what its evaluation measures:\n  "
                     r"input.data.eval_split: 'test' -> 'train'\nand settings.*"
                     r"actlumos.kd_weight: 1.0 -> 0.5"):
    phases.run_phases(mixed, workdir)
  for phase, text in lines.items():
    assert open(os.path.join(workdir, phase, "metrics.jsonl")).read() == text, phase
    assert not os.path.exists(os.path.join(workdir, phase, metrics_lib.EARLIER_EVALUATIONS))


def test_the_split_arg_picks_the_labelled_split_and_the_ssl_sets_train_split():
  """`split=k`: ARID's split k trains and tests, and SSL reads train<k>, never split k's test."""
  from configs import actlumos_arid  # pylint: disable=import-outside-toplevel
  config = actlumos_arid.get_config("split=2,eval_clips=10,eval_crops=3,init=none")
  assert config.input.data.split_index == config.ssl.split_index == 2
  assert (config.input.eval_clips, config.input.eval_crops) == (10, 3)
  default = actlumos_arid.get_config("init=none")
  assert default.input.data.split_index == default.ssl.split_index == 1


def test_a_run_on_another_split_moves_ssl_with_it_or_is_refused():
  """The experiment tool's runs of split k (`--splits all`) read train<k> for SSL too; a run
  whose labelled split is k but whose SSL would read another train split of the same dataset
  (holding split k's test clips) is refused before anything trains, naming both keys."""
  from configs import actlumos_arid  # pylint: disable=import-outside-toplevel
  from darkjax.tools import experiment  # pylint: disable=import-outside-toplevel
  config = experiment.with_run(actlumos_arid.get_config("init=none"), seed=1, split=2)
  assert config.input.data.split_index == config.ssl.split_index == 2
  config.ssl.split_index = 1   # e.g. --config.input.data.split_index=2 alone
  with pytest.raises(config_lib.ConfigError, match=r"config.ssl.split_index=1 but "
                     r"config.input.data.split_index=2: .*arid_v1's train1 clips.*Set "
                     r"config.ssl.split_index=2"):
    actlumos_trainer.ssl_sources(config)


import torch_parity  # noqa: E402


def _darklight_bert_reference(torch, params, hidden, heads):
  """DarkLight's temporal BERT (Ticuby/Darklight-Pytorch models/BERT: Embedding2, one
  TransformerBlock of SublayerConnections, MultiHeadedAttention, PositionwiseFeedForward,
  the Annotated Transformer's LayerNorm), written out in PyTorch in float64, eval mode."""
  t = {k: torch_parity.tensor(v) for k, v in params.items()}

  def layer_norm(x, name):   # a_2 * (x - mean) / (std + eps) + b_2, std unbiased
    mean = x.mean(-1, keepdim=True)
    return t[f"{name}/scale"] * (x - mean) / (x.std(-1, keepdim=True) + 1e-6) + t[f"{name}/bias"]

  def gelu(x):   # BERT-pytorch's GELU
    return 0.5 * x * (1 + torch.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

  def attention(x):   # linear_layers q, k, v, then output_linear; softmax(q k^T / sqrt(d_k)) v
    b, n, _ = x.shape
    q, k, v = (torch.einsum("bnd,dhk->bhnk", x, t[f"attn/{p}/kernel"]) +
               t[f"attn/{p}/bias"].T[None, :, None, :] for p in ("query", "key", "value"))
    weights = torch.softmax(q @ k.transpose(-2, -1) / np.sqrt(hidden // heads), -1)
    return torch.einsum("bhnk,hkd->bnd", weights @ v, t["attn/out/kernel"]) + t["attn/out/bias"]

  def forward(tokens):
    cls = t["cls"].expand(tokens.shape[0], 1, hidden)
    x = torch.cat([cls, tokens], 1) + t["position_embeddings"]   # Embedding2 (dropout off)
    x = x + attention(layer_norm(x, "attn_norm"))                 # SublayerConnection
    h = layer_norm(x, "mlp_norm")
    x = x + (gelu(h @ t["mlp_in/kernel"] + t["mlp_in/bias"]) @ t["mlp_out/kernel"]
             + t["mlp_out/bias"])
    return x                                                      # no final LayerNorm
  return forward


@pytest.mark.torch_parity
def test_pre_norm_transformer_is_darklights_bert():
  """`norm="pre"` against a PyTorch transcription of DarkLight's BERT (one layer, eval mode)."""
  torch = torch_parity.require_torch()
  hidden, heads, steps = 16, 4, 5
  model = actlumos.TemporalTransformer(hidden, heads, layers=1, norm="pre")
  feature_map = jax.random.normal(jax.random.key(0), (2, steps, 3, 3, hidden))
  variables = jax.jit(model.init)(jax.random.key(1), feature_map)
  # non-trivial norms: scales and biases away from 1 and 0
  variables = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 * jax.random.normal(jax.random.key(len(str(path))), x.shape)
      if "norm" in str(path) else x, variables)
  cls, tokens = jax.jit(model.apply)(variables, feature_map)
  p = variables["params"]
  flat = {"cls": p["cls"], "position_embeddings": p["position_embeddings"],
          **{f"attn/{k}/{w}": v for k, d in p["layer0_attention"].items() for w, v in d.items()},
          **{f"{short}/{w}": v for name, short in (("layer0_attention_norm", "attn_norm"),
                                                   ("layer0_mlp_norm", "mlp_norm"),
                                                   ("layer0_mlp_in", "mlp_in"),
                                                   ("layer0_mlp_out", "mlp_out"))
             for w, v in p[name].items()}}
  forward = _darklight_bert_reference(torch, flat, hidden, heads)
  want = torch_parity.numpy(forward(torch_parity.tensor(np.mean(feature_map, axis=(2, 3)))))
  why = "float32 LayerNorms, attention and an MLP of 64 over 16 features (seen <= 2e-7)"
  torch_parity.assert_close(cls, want[:, 0], 1e-5, why, "CLS")
  torch_parity.assert_close(tokens, want[:, 1:], 1e-5, why, "tokens")
  post = actlumos.TemporalTransformer(hidden, heads, layers=1)
  assert "embedding_norm" in jax.eval_shape(post.init, jax.random.key(1), feature_map)["params"]
  assert "embedding_norm" not in p
