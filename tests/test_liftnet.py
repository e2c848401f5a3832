"""LIFT-Net: fusion uses luminous queries, one shared PViT, pinned sizes, KD loss, the teacher's
weights shared and frozen, freezing after real Trainer steps, augmentations, flow input errors,
pretrained ViT loading, and the ARID command without / with prepared data."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from configs import lift_arid
from configs.common import augment_block
from darkjax import losses, notebook, phases, train
from darkjax.data import augment as video_augment
from darkjax.data import normalise, prepared, records
from darkjax.layers.attention import FeatureFusion
from darkjax.models import liftnet, video_resnet, vit
from darkjax.trainers import liftnet as lift_trainer
from darkjax import config as config_lib
from darkjax.convert import __main__ as convert_cli
from darkjax.convert import io as convert_io
import torch_parity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = liftnet.VARIANTS["liftnet_tiny_test"]
ARID_CLASSES = ["Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk",
                "Wave"]


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _flat(tree) -> dict:
  return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def _init(model, x, **kwargs):
  """model.init under jit (one compile; op by op it is hundreds): array kwargs are traced, the
  others (flags) static."""
  arrays = {k: v for k, v in kwargs.items() if isinstance(v, (jax.Array, np.ndarray))}
  static = {k: v for k, v in kwargs.items() if k not in arrays}
  init = jax.jit(lambda rngs, x, arrays: model.init(rngs, x, **arrays, **static))
  return init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, arrays)


# ------------------------------------------------------------------------------- layers and model

@pytest.mark.torch_parity
def test_adaptive_pool_matches_torch_also_when_upsampling():
  torch = torch_parity.require_torch()
  x = np.random.default_rng(0).normal(size=(2, 5, 3, 7, 4)).astype(np.float32)
  for size in [(2, 2, 3), (4, 1, 1), (7, 5, 2)]:
    want = torch.nn.functional.adaptive_avg_pool3d(
        torch_parity.tensor(x).permute(0, 4, 1, 2, 3), size).permute(0, 2, 3, 4, 1)
    torch_parity.assert_close(liftnet.adaptive_avg_pool(jnp.asarray(x), size, (1, 2, 3)),
                              torch_parity.numpy(want), 5e-7, "float32 means of at most 21 "
                              "elements (seen <= 1.1e-7)", f"pooled to {size}")


def _paper_layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def paper_fusion(h_ls, h_ms, p, divisor):
  """Eq. (1) per attention head h (ref. [45]'s multi-head form: heads concatenated, then the
  output projection), with the divisor given: sqrt(N_AH) as printed, or sqrt(head width);
  Eq. (2): FE = LN(F_attention) + H_LS."""
  a = p["attention"]
  heads = []
  for h in range(a["query"]["kernel"].shape[1]):
    q = h_ls @ a["query"]["kernel"][:, h] + a["query"]["bias"][h]      # q(H_LS)
    k = h_ms @ a["key"]["kernel"][:, h] + a["key"]["bias"][h]          # k(H_MS)
    v = h_ms @ a["value"]["kernel"][:, h] + a["value"]["bias"][h]      # v(H_MS)
    logits = q @ np.swapaxes(k, -1, -2) / divisor
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    heads.append((softmax @ v) @ a["out"]["kernel"][h])
  f_attention = sum(heads) + a["out"]["bias"]
  return _paper_layer_norm(f_attention, p["LayerNorm_0"]["scale"], p["LayerNorm_0"]["bias"]) + h_ls


@pytest.mark.parametrize("scale", ["heads", "head_dim"])
def test_fusion_is_eq_1_and_2_with_luminous_queries(scale):
  luminous = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 12)))
  main = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, 12)))
  heads = 4   # head width 3: the two divisors differ (sqrt(4) vs sqrt(3))
  fusion = FeatureFusion(num_heads=heads, fourier=False, attention_scale=scale)
  variables = jax.jit(fusion.init)(jax.random.key(2), luminous, main)   # op by op compiles each op
  rng = np.random.default_rng(0)   # biases and LayerNorm away from their zero / one init
  variables = jax.tree.map(lambda v: jnp.asarray(v + rng.normal(size=v.shape) * 0.5, v.dtype),
                           variables)
  apply = jax.jit(fusion.apply)
  out = apply(variables, luminous, main)
  assert out.shape == luminous.shape  # one output per luminous query
  p = jax.tree.map(np.asarray, variables["params"])
  # Eq. (1) as printed divides by sqrt(N_AH), the number of heads; the default is the head width.
  divisor = np.sqrt(heads) if scale == "heads" else np.sqrt(12 // heads)
  np.testing.assert_allclose(out, paper_fusion(luminous, main, p, divisor), atol=1e-5)
  other = np.sqrt(12 // heads) if scale == "heads" else np.sqrt(heads)
  assert not np.allclose(out, paper_fusion(luminous, main, p, other), atol=1e-3)
  # Swapping the streams (equal lengths) changes the result.
  main3 = main[:, :3]
  assert not np.allclose(apply(variables, luminous, main3), apply(variables, main3, luminous),
                         atol=1e-3)


def test_tiny_model_forward_outputs():
  model = TINY(num_classes=7)
  x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
  bright = jax.random.normal(jax.random.key(1), x.shape)
  variables = _init(model, x, luminous=bright)
  apply = jax.jit(model.apply)
  logits, out = apply(variables, x, luminous=bright)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert out["pvit_cls"].shape == (2, 4, 32)
  assert out["main_tokens"].shape == (2, 4, 32)
  assert out["luminous_tokens"].shape == out["stage1"].shape == out["stage2"].shape == (2, 2, 32)
  assert out["features"].shape == out["hidden"].shape == out["luminous_features"].shape == (2, 32)
  assert "stage3" not in out
  # The luminous clip matters, and None means "the dark clip for both streams".
  assert not np.allclose(apply(variables, x, luminous=x)[0], logits, atol=1e-4)
  np.testing.assert_array_equal(apply(variables, x)[0], apply(variables, x, luminous=x)[0])


def test_scanned_layers_equal_the_unrolled_ones():
  """scan_layers stacks layer i's parameters at index i of `layers/*`: with those slices as the
  unrolled `lift_<i>` / `critic_<i>` / `fusion_<i>`, outputs, stages and gradients agree."""
  scanned, unrolled = TINY(num_classes=5), TINY(num_classes=5, scan_layers=False)
  x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
  variables = _init(scanned, x)
  layers = variables["params"]["layers"]
  assert jax.tree.leaves(layers)[0].shape[0] == scanned.num_layers == 2
  params = {k: v for k, v in variables["params"].items() if k != "layers"}
  for index in range(scanned.num_layers):
    for part in ("lift", "critic", "fusion"):
      params[f"{part}_{index}"] = jax.tree.map(lambda a, i=index: a[i], layers[part])
  flat = {"params": params, **{k: v for k, v in variables.items() if k != "params"}}
  assert jax.tree.structure(jax.eval_shape(lambda: _init(unrolled, x))["params"]) == \
      jax.tree.structure(params)
  # One jitted program per layout (not the tiny model op by op): its logits and stages, the
  # gradients of a loss of the logits, and the attention-map figure's maps.
  def outputs(model, variables):
    def loss(params):
      logits, out = model.apply({**variables, "params": params}, x)
      return jnp.sum(logits ** 2), (logits, out)
    grads, (logits, out) = jax.grad(loss, has_aux=True)(variables["params"])
    return logits, out, grads, lift_trainer.attention_maps(model, variables, x, x)
  logits_s, out_s, grad_s, maps_s = jax.jit(functools.partial(outputs, scanned))(variables)
  logits_u, out_u, grad_u, maps_u = jax.jit(functools.partial(outputs, unrolled))(flat)
  # float32 rounding of two compilations, amplified by the FoE's LayerNorm of the spectrum: it
  # scales each sequence frequency to unit variance, and the tiny model's two luminous tokens
  # nearly agree (their difference frequency has a standard deviation near 0.015).
  np.testing.assert_allclose(logits_s, logits_u, rtol=1e-4, atol=1e-4)
  for stage in ("stage1", "stage2"):
    np.testing.assert_allclose(out_s[stage], out_u[stage], rtol=1e-4, atol=1e-4)
  for index in range(scanned.num_layers):
    np.testing.assert_allclose(grad_s["layers"]["fusion"]["LayerNorm_0"]["scale"][index],
                               grad_u[f"fusion_{index}"]["LayerNorm_0"]["scale"], rtol=1e-4,
                               atol=2e-5)
  # The attention-map figure reads the last fusion layer in either layout.
  for a, b in zip(maps_s, maps_u):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # Train mode: each layer draws its own dropout mask (the rng is split over the scan).
  train = jax.jit(lambda rng: scanned.apply(variables, x, train=True, rngs={"dropout": rng},
                                            mutable=["batch_stats"]))
  (_, out_a), _ = train(jax.random.key(2))
  (_, out_b), _ = train(jax.random.key(3))
  assert not np.allclose(out_a["stage2"], out_b["stage2"])


def test_frozen_luminous_backbone_runs_in_splits_with_the_same_outputs():
  """KD's frozen backbone (eval mode, no gradient) goes over the batch in `frozen_luminous_splits`
  interleaved parts in a lax.map: the outputs of one call on the whole batch, in batch order, and
  still no gradient into it."""
  model = TINY(num_classes=5, luminous_frozen=True)
  x = jax.random.normal(jax.random.key(0), (4, 4, 16, 16, 3))
  variables = _init(model, x)
  outs = {splits: jax.jit(model.clone(frozen_luminous_splits=splits).apply)(variables, x)[1]
          for splits in (1, 2, 4, 3)}   # 3 does not divide the batch: one call
  for splits in (2, 4, 3):
    for key in ("luminous_features", "luminous_tokens"):
      np.testing.assert_allclose(outs[splits][key], outs[1][key], rtol=1e-5, atol=1e-6)
    # after the fusion layers: rounding amplified by the FoE's LayerNorm of the spectrum (see
    # test_scanned_layers_equal_the_unrolled_ones)
    np.testing.assert_allclose(outs[splits]["logits"], outs[1]["logits"], rtol=1e-4, atol=1e-4)
  # Batch order survives the interleaving: clip i's features are clip i's alone.
  np.testing.assert_allclose(outs[2]["luminous_features"][1],
                             jax.jit(model.apply)(variables, x[1:2])[1]["luminous_features"][0],
                             rtol=1e-5, atol=1e-6)
  scans = lambda splits: str(jax.make_jaxpr(lambda v: model.clone(  # noqa: E731
      frozen_luminous_splits=splits).apply(v, x))(variables)).count("scan[")
  assert scans(2) == scans(1) + 1 == scans(3) + 1   # (+ the layer scan in all)
  split = model.clone(frozen_luminous_splits=2)
  squared = lambda p: jnp.sum(split.apply({**variables, "params": p}, x)[0] ** 2)  # noqa: E731
  grads = jax.jit(jax.grad(squared))(variables["params"])
  assert all(not np.any(g) for g in jax.tree.leaves(grads["luminous"]))
  assert any(np.any(g) for g in jax.tree.leaves(grads["luminous_projection"]))
  assert lift_arid.get_config().model.kwargs.frozen_luminous_splits == 2
  # Both are config fields a run can override (scan_layers=False: unrolled-layout checkpoints).
  unrolled = config_lib.apply_overrides(lift_arid.get_config(), {"model.kwargs.scan_layers": False})
  assert unrolled.model.kwargs.scan_layers is False
  # Data parallel over 2 devices (2 clips each): 2 parts keep every part sharded (no more
  # collectives than one call), 4 parts of one clip do not (an extra all-gather).
  mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:2])
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  def gathers(splits):
    step = jax.jit(lambda v, clips: model.clone(frozen_luminous_splits=splits).apply(v, clips)[0])
    return step.lower(variables, sharded).compile().as_text().count("all-gather(")
  assert gathers(2) == gathers(1) < gathers(4)


def test_pvit_is_one_copy_shared_by_every_frame():
  model = TINY(num_classes=3)
  short, long = jnp.ones((1, 2, 16, 16, 3)), jnp.ones((1, 6, 16, 16, 3))
  count = lambda t: _count(jax.eval_shape(lambda: _init(model, t))["params"]["pvit"])  # noqa
  pvit_alone = vit.VARIANTS["vit_tiny_test"](num_classes=0, num_blocks=2)
  single = _count(jax.eval_shape(pvit_alone.init, jax.random.key(0), jnp.ones((1, 16, 16, 3))))
  assert count(short) == count(long) == single
  x = jax.random.normal(jax.random.key(3), (2, 3, 16, 16, 3))
  variables = _init(model, x)
  blocks = sorted(k for k in variables["params"]["pvit"]["Transformer"] if "block" in k)
  assert blocks == ["encoderblock_0", "encoderblock_1"]
  _, out = jax.jit(model.apply)(variables, x)
  frame_apply = jax.jit(pvit_alone.apply)
  for t in range(3):  # each frame through the same ViT weights
    _, frame_out = frame_apply({"params": variables["params"]["pvit"]}, x[:, t])
    np.testing.assert_allclose(out["pvit_cls"][:, t], frame_out["features"], atol=1e-5)


def test_pvit_runs_the_gelu_its_weights_were_trained_with():
  """The recipe's PViT weights (google-research/vision_transformer's .npz) were trained with the
  tanh GELU: the paper configs run it, and the PViT then equals the tanh ViT, not the erf one."""
  assert lift_arid.get_config("init=none,vit_trainable=all").model.kwargs.pvit_gelu_approximate
  model = TINY(num_classes=3, pvit_gelu_approximate=True)
  x = jax.random.normal(jax.random.key(3), (2, 1, 16, 16, 3))
  variables = _init(model, x)
  _, out = jax.jit(model.apply)(variables, x)
  pvit = {"params": variables["params"]["pvit"]}
  for approximate, close in ((True, True), (False, False)):
    alone = vit.VARIANTS["vit_tiny_test"](num_classes=0, num_blocks=2,
                                         gelu_approximate=approximate)
    _, frame_out = jax.jit(alone.apply)(pvit, x[:, 0])
    assert np.allclose(out["pvit_cls"][:, 0], frame_out["features"], atol=1e-6) == close


@pytest.mark.parametrize("name,layers,expected", [
    ("liftnet_small", 4, 124_025_770),
    ("liftnet_medium", 6, 135_593_910),
    ("liftnet_large", 8, 147_162_050),
])
def test_full_size_param_counts_pinned(name, layers, expected):
  model = liftnet.VARIANTS[name](num_classes=11)
  clip = jax.ShapeDtypeStruct((1, 30, 224, 224, 3), jnp.float32)
  params = jax.eval_shape(lambda c: _init(model, c), clip)["params"]
  assert _count(params) == expected
  assert model.num_layers == layers
  assert _count(params["pvit"]) == 36_183_552  # ViT-B/16, first 5 blocks (+ final LayerNorm)
  ig65m = video_resnet.VARIANTS["r2plus1d_34_ig65m"](num_classes=0)
  luminous = jax.eval_shape(ig65m.init, jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)))
  assert _count(params["luminous"]) == _count(luminous["params"])
  # N stacked copies of one layer; its FoE LayerNorm acts on 2 (512 // 2 + 1) spectrum features
  assert _count(params["layers"]) == layers * 5_784_070
  assert params["layers"]["fusion"]["fourier"]["LayerNorm_0"]["scale"].shape == (layers, 514)
  assert {leaf.shape[0] for leaf in jax.tree.leaves(params["layers"])} == {layers}


def test_frozen_patterns_select_the_documented_parameters():
  model = TINY(num_classes=3)
  params = jax.eval_shape(lambda: _init(model, jnp.ones((1, 2, 16, 16, 3))))["params"]
  paths = list(_flat(params))
  import re  # noqa: PLC0415

  def frozen(mode, lum):
    pats = [re.compile(p) for p in liftnet.frozen_patterns(mode, lum)]
    return {k for k in paths if any(p.search(k) for p in pats)}
  pvit = {k for k in paths if k.startswith("pvit/")}
  block0 = {k for k in pvit if k.startswith("pvit/Transformer/encoderblock_0/")}
  assert block0 and frozen("first", False) == pvit - block0
  assert frozen("none", False) == pvit
  assert frozen("all", False) == set()
  assert frozen("all", True) == {k for k in paths if k.startswith("luminous/")}
  with pytest.raises(ValueError, match="vit_trainable 'some'"):
    liftnet.frozen_patterns("some", False)


def test_the_teacher_copy_is_frozen_unless_told_otherwise():
  config = lift_arid.get_config("runlocal")
  assert config.lift.kd and config.lift.freeze_teacher and lift_trainer.teacher_frozen(config)
  assert r"^luminous/" in lift_trainer.phase_config(config, "student").optimizer.frozen
  config.lift.freeze_teacher = False
  assert not lift_trainer.teacher_frozen(config)
  assert r"^luminous/" not in lift_trainer.phase_config(config, "student").optimizer.frozen
  config = lift_arid.get_config("runlocal,kd=False")
  assert not lift_trainer.teacher_frozen(config)


def test_teacher_loss_is_eq_5():
  """Eq. (5): T_LOSS = - sum_i y_i log(T_output_i), T_output the softmax of the teacher's
  vector; the batch's mean."""
  logits = np.array([[1.0, -0.5, 2.0], [0.0, 3.0, -1.0]])
  labels = np.array([2, 0])
  t_output = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  y = np.eye(3)[labels]
  want = np.mean([-np.sum(y[b] * np.log(t_output[b])) for b in range(2)])
  np.testing.assert_allclose(lift_trainer.classification_loss(jnp.asarray(logits),
                                                              jnp.asarray(labels)), want,
                             rtol=1e-6)


def test_kd_loss_is_ce_plus_l1_on_fixed_tensors():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  labels = jnp.array([0, 1])
  h2 = jnp.array([[1.0, -2.0], [0.0, 4.0]])
  h1 = jnp.array([[0.5, -1.0], [1.0, 1.0]])
  ce = -np.mean([2.0 - np.log(np.exp(2) + 1 + np.exp(-1)),
                 0.5 - np.log(2 * np.exp(0.5) + np.exp(3))])
  l1 = np.mean([0.5 + 1.0, 1.0 + 3.0])    # Eq. (6): sum over the vector, mean over the batch
  total, terms = lift_trainer.kd_loss(logits, labels, h2, h1, kd_weight=1.0)
  _, mean_terms = lift_trainer.kd_loss(logits, labels, h2, h1, reduction="mean")
  np.testing.assert_allclose(mean_terms["l1"], l1 / 2, rtol=1e-6)
  np.testing.assert_allclose([total, terms["ce"], terms["l1"]], [ce + l1, ce, l1], rtol=1e-6)
  total, _ = lift_trainer.kd_loss(logits, labels, h2, h1, kd_weight=0.25)
  np.testing.assert_allclose(total, ce + 0.25 * l1, rtol=1e-6)
  # No gradient flows into the teacher's hidden vector.
  grad = jax.grad(lambda t: lift_trainer.kd_loss(logits, labels, h2, t)[0])(h1)
  np.testing.assert_array_equal(grad, 0.0)
  np.testing.assert_allclose(total, losses.softmax_cross_entropy(logits, labels) + 0.25 * l1,
                             rtol=1e-6)


# ------------------------------------------------------- Eq. (5) and (6) through the Tasks' loss_fn
# Sec. IV: T_LOSS = - sum_{x=i} y_i x log(T_output_i) (Eq. 5), T_output the softmax of the teacher's
# vector; S_LOSS = - sum_{x=i} y_i x log(S_output_i) + sum_{x=i} |h1_i - h2_i| (Eq. 6), S_output the
# softmax of the student's, h1 the teacher's hidden representation, h2 the student's. Each Task's
# own loss_fn, its model's outputs captured on the way (an interceptor that only records), against
# the equations written in NumPy for one clip and averaged over the batch. The augmentations are
# off: the paper's equations have no CutMix term.

def _eq5_numpy(logits, labels):
  """Eq. (5) per clip, mean over the batch: y one-hot, T_output the softmax of the logits."""
  logits = np.asarray(logits, np.float64)
  per_clip = []
  for z, label in zip(logits, np.asarray(labels)):
    t_output = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    y = np.eye(len(z))[label]
    per_clip.append(-np.sum(y * np.log(t_output)))
  return float(np.mean(per_clip))


def _eq6_numpy(logits, labels, h1, h2):
  """Eq. (6) per clip, mean over the batch: the CE of Eq. (5) on S_output plus
  sum_i |h1_i - h2_i|."""
  l1 = np.sum(np.abs(np.asarray(h1, np.float64) - np.asarray(h2, np.float64)), axis=-1)
  return _eq5_numpy(logits, labels) + float(np.mean(l1))


def _paper_loss_config():
  config = lift_arid.get_config("runlocal")   # liftnet_tiny_test, KD, kd_features=hidden
  config.lift.augment = augment_block()       # all off
  return config


@pytest.fixture(scope="module")
def eq_batch():
  rng = np.random.default_rng(11)
  return {"video": jnp.asarray(rng.integers(0, 80, (4, 8, 32, 32, 3)), jnp.uint8),
          "label": jnp.asarray([3, 0, 7, 3], jnp.int32)}


def _compiled(config, fn, *args):
  """`fn(*args)` compiled as the runlocal Trainer compiles (XLA's native convs, opt level 0)."""
  with train.lowering_scope(config):
    return jax.jit(fn).lower(*args).compile(train.compiler_options(config, "cpu"))(*args)


def _loss_and_outputs(task, variables, batch, rng):
  """task.loss_fn's loss and metrics, and the (logits, out) its model returned inside it."""
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}

  def run(params, state, batch, rng):
    captured = {}

    def record(next_fun, args, kwargs, context):
      result = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and not context.module.scope.path:  # the model itself
        captured["logits"], captured["out"] = result
      return result

    with nn.intercept_methods(record):
      loss, (_, metrics) = task.loss_fn(params, state, batch, rng, 0.0)
    return loss, metrics, captured["logits"], captured["out"]

  return _compiled(task.config, run, params, state, batch, rng)


@pytest.fixture(scope="module")
def trained_teacher(eq_batch):
  """The teacher Task and its variables (running BatchNorm statistics moved off their start)."""
  task = lift_trainer.TeacherTask(_paper_loss_config(), num_classes=11)
  variables = jax.device_get(_compiled(task.config, task.init_variables, jax.random.key(0),
                                       eq_batch))
  variables["batch_stats"] = jax.tree.map(lambda s: s + 0.3, variables["batch_stats"])
  return task, variables


def test_teacher_loss_fn_is_eq_5(trained_teacher, eq_batch):
  task, variables = trained_teacher
  assert task.config.label_smoothing == 0.0
  loss, metrics, logits, out = _loss_and_outputs(task, variables, eq_batch, jax.random.key(1))
  np.testing.assert_allclose(float(loss), _eq5_numpy(logits, eq_batch["label"]), rtol=1e-5)
  # T_output comes from the hidden representation h1 (the pooled backbone vector) through the head.
  fc = variables["params"]["fc"]
  np.testing.assert_allclose(logits, np.asarray(out["features"]) @ fc["kernel"] + fc["bias"],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(metrics["accuracy"]), np.mean(
      np.argmax(logits, -1) == np.asarray(eq_batch["label"])))


def test_student_loss_fn_is_eq_6_with_the_teachers_h1(trained_teacher, eq_batch):
  teacher_task, teacher_vars = trained_teacher
  config = _paper_loss_config()
  assert (config.lift.kd_weight, config.lift.kd_reduction, config.lift.kd_features) == \
      (1.0, "sum", "hidden")
  task = lift_trainer.Task(config, num_classes=11, teacher_variables=teacher_vars)
  variables = task.init_from(jax.device_get(_compiled(config, task.init_variables,
                                                      jax.random.key(2), eq_batch)))
  loss, metrics, logits, out = _loss_and_outputs(task, variables, eq_batch, jax.random.key(3))
  h1, h2 = out["luminous_features"], out["hidden"]
  np.testing.assert_allclose(float(loss), _eq6_numpy(logits, eq_batch["label"], h1, h2),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["ce"]), _eq5_numpy(logits, eq_batch["label"]),
                             rtol=1e-5)
  # h1 is the trained teacher's hidden representation of the same luminous clip (eval mode: the
  # student phase's copy is frozen), the vector its softmax head reads.
  _, bright = teacher_task.inputs.model_inputs(teacher_task.inputs.streams(eq_batch))
  _, teacher_out = _compiled(config, lambda v, x: teacher_task.model.apply(v, x, train=False),
                             teacher_vars, bright)
  np.testing.assert_allclose(h1, teacher_out["features"], rtol=1e-5, atol=1e-5)
  assert h2.shape == h1.shape and not np.allclose(h1, h2)


def test_student_luminous_stream_is_the_teacher_backbone():
  student = TINY(num_classes=5, luminous_frozen=True)
  teacher = liftnet.teacher_model(student, 5)
  x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
  bright = jax.random.normal(jax.random.key(1), x.shape)
  teacher_vars = jax.jit(teacher.init)(jax.random.key(7), bright)
  # Non-trivial running statistics, so eval-mode BatchNorm is really exercised.
  teacher_vars = {"params": teacher_vars["params"], "batch_stats": jax.tree.map(
      lambda s: s + 0.3, teacher_vars["batch_stats"])}
  variables = liftnet.merge_teacher(jax.device_get(_init(student, x, luminous=bright)),
                                    jax.device_get(teacher_vars))
  _, h1 = jax.jit(teacher.apply)(teacher_vars, bright)
  for train_mode in (False, True):
    (_, out), _ = jax.jit(lambda v: student.apply(  # noqa: B023
        v, x, luminous=bright, train=train_mode, rngs={"dropout": jax.random.key(0)},
        mutable=["batch_stats"]))(variables)
    np.testing.assert_allclose(out["luminous_features"], h1["features"], atol=1e-5)
  bad = {"params": {**teacher_vars["params"], "extra": {"w": np.zeros(3)}}}
  with pytest.raises(ValueError, match=r"unexpected \(1\): \['extra/w'\]"):
    liftnet.merge_teacher(variables, bad)


# ------------------------------------------------------------------------------------ augmentation

def test_augment_off_is_identity_and_geometry_is_shared_between_streams():
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.integers(0, 256, (4, 6, 12, 12, 3)), jnp.uint8)
  labels = jnp.arange(4)
  off = augment_block().to_dict()

  def augment(streams, key, settings):   # jitted, as the Task runs it (op by op: a compile per op)
    return jax.jit(lambda s, k: video_augment.augment(s, labels, k, settings))(streams, key)

  out, mixed, mix = augment({"video": video}, jax.random.key(0), off)
  np.testing.assert_array_equal(out["video"], video)
  assert float(mix) == 1.0
  on = augment_block(affine=0.2, cutmix=1.0, frame_shuffle=1.0).to_dict()
  out, mixed, mix = augment({"video": video, "ir": video}, jax.random.key(3), on)
  np.testing.assert_array_equal(out["video"], out["ir"])  # same geometry on every stream
  assert not np.array_equal(out["video"], video)
  np.testing.assert_array_equal(mixed, jnp.roll(labels, 1))
  assert 0.0 <= float(mix) <= 1.0
  jitter = dict(off, colour_jitter=0.5)
  out, _, _ = augment({"video": video, "flow": video}, jax.random.key(1), jitter)
  np.testing.assert_array_equal(out["flow"], video)  # colour jitter touches the RGB video only
  assert not np.array_equal(out["video"], video)


# ----------------------------------------------------------------------------- data + ARID command

def _fake_dataset(directory: str, streams=("flow",), per_split=(8, 4)) -> str:
  rng = np.random.default_rng(0)

  def examples(n, split):
    for i in range(n):
      clip = rng.integers(0, 40, (10, 40, 48, 3), dtype=np.uint8)  # dark frames
      extra = {s: rng.integers(100, 156, (10, 40, 48, 3), dtype=np.uint8) for s in streams}
      yield dict(video=clip, label=i % len(ARID_CLASSES), video_id=f"{split}_{i}", streams=extra)
  records.write_dataset(directory, "arid_v1", ARID_CLASSES,
                        {"train1": examples(per_split[0], "train"),   # prepare's split names
                         "test1": examples(per_split[1], "test")},
                        fps=30, streams=streams)
  return directory


@pytest.fixture(scope="module")
def arid_dir(tmp_path_factory):
  return _fake_dataset(str(tmp_path_factory.mktemp("arid_v1")))


def _arid_config(data_dir: str, arg: str = ""):
  config = lift_arid.get_config(f"runlocal,data_dir={data_dir}" + (f",{arg}" if arg else ""))
  config.progress_bar = False
  config.async_checkpoints = False
  return config


def test_flow_input_reads_the_flow_stream_and_fails_clearly_without_it(arid_dir, tmp_path):
  task = lift_trainer.Task(_arid_config(arid_dir, "luminous_input=flow"))
  batch = {"video": np.zeros((1, 2, 4, 4, 3), np.uint8),
           "flow": np.full((1, 2, 4, 4, 3), 192, np.uint8)}
  _, bright = task.inputs.model_inputs(batch)
  # The flow image is normalised as the luminous backbone's weights read frames (IG65M's).
  mean, std = np.array(normalise.STATS["ig65m"][0]), np.array(normalise.STATS["ig65m"][1])
  np.testing.assert_allclose(bright, np.broadcast_to((192 - mean) / std, bright.shape), rtol=1e-6)
  no_flow = _fake_dataset(str(tmp_path / "no_flow"), streams=())
  with pytest.raises(prepared.DatasetNotPreparedError, match=r"(?s)'flow'.*no_flow.*optical flow"):
    lift_trainer.Task(_arid_config(no_flow, "luminous_input=flow"))


def test_pretrained_vit_npz_lands_in_the_pvit(arid_dir, tmp_path):
  full = vit.VARIANTS["vit_tiny_test"](num_classes=0)  # 3 blocks; the PViT keeps 2
  full_params = jax.jit(full.init)(jax.random.key(5), jnp.zeros((1, 32, 32, 3)))["params"]
  npz = str(tmp_path / "vit.npz")
  np.savez(npz, **_flat(full_params))
  config = _arid_config(arid_dir)
  config.lift.pretrained.vit = npz
  task = lift_trainer.Task(config)
  batch = {"video": jnp.zeros((1, 8, 32, 32, 3), jnp.uint8)}
  variables = jax.device_get(jax.eval_shape(task.init_variables, jax.random.key(0), batch))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
  merged = _flat(task.init_from(variables)["params"]["pvit"])
  want = _flat(full_params)
  assert set(merged) == {k for k in want if "encoderblock_2" not in k}
  for key, value in merged.items():
    np.testing.assert_array_equal(value, want[key])
  # A PViT without the ViT's final LayerNorm (pvit_norm=False) takes the same weights but that.
  config.model.kwargs.pvit_norm = False
  task = lift_trainer.Task(config)
  variables = jax.device_get(jax.eval_shape(task.init_variables, jax.random.key(0), batch))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
  merged = _flat(task.init_from(variables)["params"]["pvit"])
  assert set(merged) == {k for k in want if "encoderblock_2" not in k and "encoder_norm" not in k}


def _timm_vit_without_qkv_biases(seed: int = 0) -> dict[str, np.ndarray]:
  """A timm-layout state dict of vit_tiny_test (width 32, 3 blocks, MLP 64, patch 8, 32 x 32
  images) built with qkv_bias=False, as ref. [44]'s ImageNet-21K-P ViT; no head."""
  rng = np.random.default_rng(seed)
  shapes = {"patch_embed.proj.weight": (32, 3, 8, 8), "patch_embed.proj.bias": (32,),
            "cls_token": (1, 1, 32), "pos_embed": (1, 17, 32), "norm.weight": (32,),
            "norm.bias": (32,)}
  for block in range(3):
    shapes.update({f"blocks.{block}.{name}": shape for name, shape in {
        "norm1.weight": (32,), "norm1.bias": (32,), "attn.qkv.weight": (96, 32),
        "attn.proj.weight": (32, 32), "attn.proj.bias": (32,), "norm2.weight": (32,),
        "norm2.bias": (32,), "mlp.fc1.weight": (64, 32), "mlp.fc1.bias": (64,),
        "mlp.fc2.weight": (32, 64), "mlp.fc2.bias": (32,)}.items()})
  return {key: rng.normal(size=shape).astype(np.float32) for key, shape in shapes.items()}


def test_vit_converted_with_its_normalisation_is_checked_and_lands_in_the_pvit(arid_dir,
                                                                                tmp_path):
  """Ref. [44]'s weights read pixels / 255: converted with `--input-normalise none`, `vit_init`
  takes the directory when frames are normalised as `none`, and refuses it otherwise."""
  src = str(tmp_path / "vit_miil_in21k.npz")
  np.savez(src, **_timm_vit_without_qkv_biases())
  out = str(tmp_path / "miil")
  assert convert_cli.main(["--arch", "vit_tiny_test", "--src", src, "--out", out,
                           "--num-classes", "0", "--input-normalise", "none"]) == 0
  converted = _flat(convert_io.load_variables(out)[0]["params"])
  config = _arid_config(arid_dir)
  config.lift.pretrained.vit = out
  batch = {"video": jnp.zeros((1, 8, 32, 32, 3), jnp.uint8)}
  with pytest.raises(normalise.NormalisationMismatchError,
                     match=r"(?s)pretrained.vit .*miil.*'none'.*input.normalise is 'vit'"):
    task = lift_trainer.Task(config)
    task.init_from(jax.device_get(jax.eval_shape(task.init_variables, jax.random.key(0), batch)))
  config.input.normalise = "none"
  task = lift_trainer.Task(config)
  variables = jax.device_get(jax.eval_shape(task.init_variables, jax.random.key(0), batch))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
  merged = _flat(task.init_from(variables)["params"]["pvit"])
  assert set(merged) == {k for k in converted if "encoderblock_2" not in k}   # 2 PViT blocks
  for key, value in merged.items():
    np.testing.assert_array_equal(value, converted[key])
  for name in ("query", "key", "value"):   # no qkv biases in [44]'s ViT: zeros
    np.testing.assert_array_equal(
        merged[f"Transformer/encoderblock_0/MultiHeadDotProductAttention_1/{name}/bias"], 0.0)


def test_pvit_without_the_final_norm_passes_block_outputs_on():
  x = jax.random.normal(jax.random.key(3), (2, 2, 16, 16, 3))
  normed, raw = TINY(num_classes=3), TINY(num_classes=3, pvit_norm=False)
  variables = _init(normed, x)
  params = dict(variables["params"])
  params["pvit"] = {**params["pvit"], "Transformer": {
      k: v for k, v in params["pvit"]["Transformer"].items() if k != "encoder_norm"}}
  assert jax.tree.structure(jax.eval_shape(lambda: _init(raw, x))["params"]) == \
      jax.tree.structure(params)
  _, out_normed = jax.jit(normed.apply)(variables, x)
  _, out_raw = jax.jit(raw.apply)({**variables, "params": params}, x)
  cls = np.asarray(out_raw["pvit_cls"])
  norm = variables["params"]["pvit"]["Transformer"]["encoder_norm"]
  np.testing.assert_allclose(out_normed["pvit_cls"], _paper_layer_norm(
      cls, np.asarray(norm["scale"]), np.asarray(norm["bias"])), atol=1e-4)


def test_arid_command_without_prepared_data_says_how_to_prepare(tmp_path, main_env):
  env = dict(main_env, DARKJAX_DATA=str(tmp_path / "data"))
  result = subprocess.run([sys.executable, "-m", "darkjax.main", "--config=configs/lift_arid.py",
                           f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "python -m darkjax.data.prepare --dataset arid_v1" in result.stderr
  assert str(tmp_path / "data" / "arid_v1") in result.stderr
  assert "Traceback" not in result.stderr


def test_arid_with_prepared_data_trains_both_phases_and_freezes(arid_dir, tmp_path, monkeypatch):
  trainers = []

  class Recording(train.Trainer):   # the phases' trainers that run (not run_phases' checks)
    def run(self, *args, **kwargs):
      trainers.append(self)
      return super().run(*args, **kwargs)
  monkeypatch.setattr(phases, "Trainer", Recording)
  config = _arid_config(arid_dir)  # runlocal: liftnet_tiny_test, KD, vit_trainable=first
  config.total_steps = config.teacher.total_steps = 1
  workdir = str(tmp_path / "run")
  results = phases.run_phases(config, workdir, devices=jax.devices()[:1])
  teacher, student = trainers
  for phase in ("teacher", "student"):
    rows = [json.loads(line) for line in open(os.path.join(workdir, phase, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "train/loss" in r] == [1]
    assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  assert {"train/ce", "train/l1"} <= set(json.loads(
      open(os.path.join(workdir, "student", "metrics.jsonl")).readline()))
  assert 0.0 <= results["eval/top1"] <= 1.0 and "teacher_eval/top1" in results
  assert os.path.exists(os.path.join(workdir, "student", "attention_01.png"))
  assert os.path.exists(os.path.join(workdir, "teacher", "report.md"))
  assert os.path.exists(os.path.join(workdir, "report.md"))

  # Shared teacher weights: the student's luminous backbone is the teacher's, bit for bit, after
  # a student step (frozen: params and BatchNorm statistics untouched).
  t_params, s_params = _flat(teacher.state.params), _flat(student.state.params)
  lum = {k[len("luminous/"):]: v for k, v in s_params.items() if k.startswith("luminous/")}
  assert set(lum) == {k for k in t_params if not k.startswith("fc/")}
  for key, value in lum.items():
    np.testing.assert_array_equal(value, t_params[key])
  s_stats = _flat(student.state.model_state["batch_stats"])
  for key, value in _flat(teacher.state.model_state["batch_stats"]).items():
    np.testing.assert_array_equal(s_stats[f"luminous/{key}"], value)

  # vit_trainable=first: the rest of the PViT is bit-identical to its initial value, block 0 moved.
  student.init_state(from_checkpoint=False, pretrained=False)   # the seed's fresh state
  initial = _flat(student.state.params)
  pvit = [k for k in s_params if k.startswith("pvit/")]
  block0 = [k for k in pvit if k.startswith("pvit/Transformer/encoderblock_0/")]
  for key in set(pvit) - set(block0):
    np.testing.assert_array_equal(s_params[key], initial[key], err_msg=key)
  assert any(not np.array_equal(s_params[k], initial[k]) for k in block0)
  assert not np.array_equal(s_params["layers/fusion/fourier/LayerNorm_0/scale"],
                            initial["layers/fusion/fourier/LayerNorm_0/scale"])

  # Another evaluation part: both phases (each evaluates it) evaluated again by the rerun of a
  # notebook's Run.evaluate, the summary saying which; a second Run.evaluate evaluates the
  # deployed phase again and keeps no earlier rows (made with the same settings).
  trainers.clear()
  other = _arid_config(arid_dir)
  other.total_steps = other.teacher.total_steps = 1
  other.input.data.eval_split = "train"
  drawn = other.evals.attention.clips
  other.evals.attention.clips = 1   # the other attention figures move apart
  run = notebook.Run(other, workdir, devices=jax.devices()[:1])
  again = run.evaluate()
  student_dir = os.path.join(workdir, "student")
  assert sorted(f for f in os.listdir(student_dir) if f.startswith("attention_")) == [
      "attention_00.png"]
  assert sorted(os.listdir(os.path.join(student_dir, train.FIGURES_SET_ASIDE, "1"))) == [
      f"attention_{i:02d}.png" for i in range(1, drawn)]
  train_clips = prepared.open_dataset(other.input.data).num_examples("train")
  assert again["eval/num_examples"] == train_clips != results["eval/num_examples"]
  assert [r["eval/num_examples"] for r in map(json.loads, open(
      os.path.join(workdir, "teacher", "metrics.jsonl"))) if "eval/num_examples" in r] == [
          train_clips]
  with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
    assert "evaluated on train1" in f.read()
  for phase in ("teacher", "student"):
    with open(os.path.join(workdir, phase, "config.json"), encoding="utf-8") as f:
      assert json.load(f)["input"]["data"]["eval_split"] == "train"
  assert [t.evaluated_step for t in trainers] == [1, 1]
  trainers.clear()
  assert run.evaluate()["eval/num_examples"] == train_clips
  assert [t.evaluated_step for t in trainers] == [None, 1]   # the teacher's logged one
  with open(os.path.join(workdir, "student", "earlier_evaluations.jsonl"), encoding="utf-8") as f:
    assert {json.loads(line)["evaluated_with"]["input.data.eval_split"] for line in f} == {"test"}


def test_kd_on_logits_distils_the_teacher_classifier(arid_dir):
  config = _arid_config(arid_dir)
  config.lift.kd_features = "logits"
  with pytest.raises(ValueError, match="kd_features='logits'.*teacher phase"):
    lift_trainer.Task(config)
  teacher = lift_trainer.TeacherTask(config)
  batch = {"video": np.random.default_rng(0).integers(0, 255, (2, 8, 32, 32, 3), np.uint8),
           "label": np.array([0, 1])}
  teacher_vars = jax.device_get(jax.jit(teacher.init_variables)(jax.random.key(1), batch))
  # A teacher classifier that ignores its input: h1 = 100 for every class.
  fc = teacher_vars["params"]["fc"]
  teacher_vars["params"]["fc"] = {"kernel": np.zeros_like(fc["kernel"]),
                                  "bias": np.full_like(fc["bias"], 100.0)}
  task = lift_trainer.Task(config, teacher_variables=teacher_vars)
  variables = task.init_from(jax.device_get(jax.jit(task.init_variables)(jax.random.key(2),
                                                                         batch)))
  params = variables.pop("params")
  _, (_, metrics) = jax.jit(task.loss_fn)(params, variables, batch, jax.random.key(3), 0.0)
  # Eq. (6) on logits: sum_c |100 - logits_c|, the student's logits being far below 100.
  num_classes = fc["bias"].shape[0]
  assert abs(float(metrics["l1"]) - 100.0 * num_classes) < 0.05 * 100.0 * num_classes
  config.lift.kd_features = "pooled"
  with pytest.raises(ValueError, match="kd_features 'pooled' unknown"):
    lift_trainer.Task(config, teacher_variables=teacher_vars)


def test_luminous_backbone_from_a_darkjax_directory_starts_the_teacher_or_the_lone_student(
    tmp_path):
  """`luminous_init=DIR` (config.lift.pretrained.luminous a directory: a conversion or a darkjax
  run whose model is the luminous backbone) starts the teacher, or with kd=False the student's
  trainable luminous backbone, its classifier head left out; another normalisation than the
  luminous clip's is a clear error."""
  from configs import lift_synthetic  # pylint: disable=import-outside-toplevel

  def abstract(task):
    batch = {"video": jnp.zeros((1, 8, 32, 32, 3), jnp.uint8), "label": jnp.zeros((1,), jnp.int32)}
    shapes = jax.eval_shape(task.init_variables, jax.random.key(0), batch)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)

  plain = lift_synthetic.get_config("runlocal")
  teacher = abstract(lift_trainer.TeacherTask(plain, num_classes=10))
  saved = jax.tree.map(lambda x: x + 2, teacher)
  saved["params"]["fc"] = jax.tree.map(lambda x: x + 5, teacher["params"]["fc"])
  directory = str(tmp_path / "day")
  convert_io.save_variables(directory, saved, {"arch": "r2plus1d_tiny_test",
                                               "input_normalisation": {"mode": "per_clip"}})
  config = lift_synthetic.get_config(f"runlocal,luminous_init={directory}")
  assert config.lift.pretrained.luminous == directory
  alone = lift_synthetic.get_config(f"runlocal,luminous_init={directory},kd=False")
  assert not lift_trainer.teacher_frozen(alone)   # without a teacher the backbone trains
  teacher_task = lift_trainer.TeacherTask(config, num_classes=10)
  assert teacher_task.merges_pretrained
  merged = teacher_task.init_from(abstract(teacher_task))
  for collection in ("params", "batch_stats"):
    for key, value in _flat(merged[collection]).items():
      want = 0 if key.startswith("fc/") else 2   # a new head
      assert (np.asarray(value) == want).all(), (collection, key)
  student_task = lift_trainer.Task(alone, num_classes=10)
  assert student_task.merges_pretrained
  merged = student_task.init_from(abstract(student_task))
  for collection in ("params", "batch_stats"):
    luminous = _flat(merged[collection]["luminous"])
    assert luminous and all((np.asarray(v) == 2).all() for v in luminous.values())
  others = {k: v for k, v in _flat(merged["params"]).items() if not k.startswith("luminous/")}
  assert others and all((np.asarray(v) == 0).all() for v in others.values())   # nothing else
  # Weights trained on ImageNet-normalised clips would read per-clip-normalised ones: an error.
  convert_io.save_variables(str(tmp_path / "imagenet"), saved,
                            {"arch": "r2plus1d_tiny_test",
                             "input_normalisation": {"mode": "imagenet"}})
  with pytest.raises(normalise.NormalisationMismatchError,
                     match=r"config.lift.pretrained.luminous .*imagenet.*lift.luminous_normalise"):
    lift_trainer.TeacherTask(lift_synthetic.get_config(
        f"runlocal,luminous_init={tmp_path / 'imagenet'}"), num_classes=10).init_from(teacher)
  # Another architecture's directory names both.
  convert_io.save_variables(str(tmp_path / "c3d"), saved, {"arch": "c3d"})
  with pytest.raises(ValueError, match=r"config.lift.pretrained.luminous .*'c3d'.*"
                                       r"'r2plus1d_tiny_test'"):
    lift_trainer.TeacherTask(lift_synthetic.get_config(
        f"runlocal,luminous_init={tmp_path / 'c3d'}"), num_classes=10).init_from(teacher)


def test_a_student_built_for_a_trained_run_does_not_warn_of_a_missing_teacher(tmp_path, caplog):
  """A notebook's inspection of a trained run (`task.from_checkpoint`) restores the student with
  its luminous backbone: building it is no training without a teacher, which still warns."""
  from configs import lift_synthetic  # pylint: disable=import-outside-toplevel
  from darkjax import task as task_lib  # pylint: disable=import-outside-toplevel
  config = lift_synthetic.get_config(f"runlocal,data_dir={tmp_path}")
  with caplog.at_level(logging.WARNING, logger="darkjax"):
    with task_lib.from_checkpoint():
      task_lib.load_task(config)
    assert "but no teacher" not in caplog.text
    task_lib.load_task(config)
  assert "LIFT-Net student with kd=True but no teacher" in caplog.text
