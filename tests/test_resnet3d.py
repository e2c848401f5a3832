"""Hara-layout 3D-ResNet / ResNeXt: pinned sizes, output contract, and parity with PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import models
from darkjax.convert import common
from darkjax.convert import resnet3d as convert_resnet3d
from darkjax.models import resnet3d
import torch_parity

# name -> (shortcut type, params, batch_stats entries) with a 400-way head.
PINNED = {
    "resnet3d_10": ("A", 14_430_800, 3_968),
    "resnet3d_18": ("A", 33_235_280, 7_808),
    "resnet3d_34": ("A", 63_544_912, 15_232),
    "resnet3d_50": ("B", 47_018_576, 53_120),
    "resnet3d_101": ("B", 86_064_720, 105_344),
    "resnet3d_152": ("B", 118_223_440, 151_424),
    "resnext3d_101": ("B", 48_340_816, 137_856),
}
# The other shortcut type, params only.
PINNED_OTHER_SHORTCUT = {
    "resnet3d_10": 14_604_624, "resnet3d_18": 33_409_104, "resnet3d_34": 63_718_736,
    "resnet3d_50": 44_242_000, "resnet3d_101": 83_288_144, "resnet3d_152": 115_446_864,
    "resnext3d_101": 45_564_240,
}
TORCH_LAYOUT = {  # name -> HaraResNet(block, layers, widths) arguments
    "resnet3d_10": ("basic", (1, 1, 1, 1), (64, 128, 256, 512)),
    "resnet3d_18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet3d_34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet3d_50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet3d_101": ("bottleneck", (3, 4, 23, 3), (64, 128, 256, 512)),
    "resnet3d_152": ("bottleneck", (3, 8, 36, 3), (64, 128, 256, 512)),
    "resnext3d_101": ("resnext", (3, 4, 23, 3), (128, 256, 512, 1024)),
}


def _shapes(name: str, num_classes: int = 400, **kwargs):
  model = models.build(name, num_classes, **kwargs)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 112, 112, 3))))


def _random_variables(model, clips, seed=0):
  """Variables of `model` filled from numpy: XLA:CPU compiles jitted inits slowly (~10 s)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), clips)
  def fill(path, leaf):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32))
    return jnp.asarray((0.2 * rng.standard_normal(leaf.shape)).astype(np.float32))
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_parameter_counts(name):
  shortcut, params, stats = PINNED[name]
  assert models.build(name, 400).shortcut_type == shortcut  # released checkpoints' type
  shapes = _shapes(name)
  assert _count(shapes["params"]) == params
  assert _count(shapes["batch_stats"]) == stats
  other = "B" if shortcut == "A" else "A"
  assert _count(_shapes(name, shortcut_type=other)["params"]) == PINNED_OTHER_SHORTCUT[name]


@pytest.mark.parametrize("name", sorted(TORCH_LAYOUT))
def test_parameter_counts_match_torch_reference(name):
  torch = pytest.importorskip("torch")
  from darkjax.tools import torch_refs
  for shortcut in ("A", "B"):
    with torch.device("meta"):  # shapes only, no memory
      reference = torch_refs.HaraResNet(*TORCH_LAYOUT[name], shortcut_type=shortcut)
    expected = sum(p.numel() for p in reference.parameters())
    assert _count(_shapes(name, shortcut_type=shortcut)["params"]) == expected, shortcut


# Tests that are not about the conv lowering use "native": fewer HLO ops, faster compiles.
def test_output_contract_and_feature_extractor():
  model = models.build("resnet3d_tiny", 5, conv_lowering="native")
  clips = jnp.ones((2, 8, 32, 32, 3))
  variables = _random_variables(model, clips)
  headless = models.build("resnet3d_tiny", 0, conv_lowering="native")

  @jax.jit
  def run(variables):
    logits, out = model.apply(variables, clips)
    _, updates = model.apply(variables, clips, train=True, mutable=["batch_stats"])
    features, _ = headless.apply(
        {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
         "batch_stats": variables["batch_stats"]}, clips)
    return logits, out, updates, features

  logits, out, updates, features = run(variables)
  assert logits.shape == (2, 5)
  assert out["stem"].shape == (2, 4, 8, 8, 8)
  assert [out[f"stage{i}"].shape for i in range(1, 5)] == [
      (2, 4, 8, 8, 8), (2, 2, 4, 4, 16), (2, 1, 2, 2, 16), (2, 1, 1, 1, 32)]
  assert out["features"].shape == (2, 32)
  np.testing.assert_allclose(features, out["features"])
  # The rest blocks of a stage are stacked by nn.scan; train=True updates their batch_stats.
  stats = updates["batch_stats"]["layer2"]["rest"]["bn1"]["mean"]
  assert stats.shape == (2, 16)
  assert not np.allclose(stats, variables["batch_stats"]["layer2"]["rest"]["bn1"]["mean"])
  with pytest.raises(ValueError, match="shortcut_type 'C'"):
    jax.eval_shape(models.build("resnet3d_tiny", 5, shortcut_type="C").init, jax.random.key(0),
                   clips)
  with pytest.raises(ValueError, match=r"\(B, T, H, W, C\)"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.ones((8, 32, 32, 3)))


def test_resnext_traced_for_gpu_trains_alike_with_its_stem_and_batch_norms_either_way():
  """3D-ResNeXt traced for a GPU: its stem (a full kernel on RGB) is a channels-last 2D
  convolution (frames2d) while its other convs stay XLA's 3D ones (the grouped ones' groups
  bundled, conv.gpu_group_bundle), and in training every BatchNorm is `batch_norm_train`'s custom
  VJP. Run here, the old stem
  (`stem_lowering="native"`) gives the same logits and gradients, and autodiff's BatchNorms
  (`fused_relu(False)`) the same training loss, gradients and running statistics."""
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  from darkjax.layers import conv, norm  # pylint: disable=import-outside-toplevel
  # 8 frames at 64 x 64: the last stage's BatchNorms normalise 8 values per channel; over 2 (2 x
  # 4 x 32 x 32 clips) BatchNorm amplifies last-bit differences in the variance and the two forms
  # round apart by more than this tolerance (docs/benchmarks.md, "Compile time of smoke runs and
  # initialisation").
  clips = jax.random.normal(jax.random.key(3), (2, 8, 64, 64, 3))
  results, lowerings, fused = [], [], []
  for stem, fused_bn, train in (("", True, False), ("native", True, False), ("", True, True),
                                ("", False, True)):
    model = models.build("resnext3d_tiny", 5, stem_lowering=stem)
    variables = _random_variables(model, clips)

    def loss(p, model=model, variables=variables, train=train):
      (logits, _), updates = model.apply({**variables, "params": p}, clips, train=train,
                                         mutable=["batch_stats"])
      return jnp.sum(logits ** 2), updates
    with (targets.compiling_for("gpu"), norm.fused_relu(fused_bn),
          conv.record_lowerings() as chosen):
      fused.append(str(jax.make_jaxpr(loss)(variables["params"])).count("custom_vjp_call"))
      results.append(jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"]))
    lowerings.append(dict(chosen))
  assert lowerings[0]["conv3d:frames2d"] == 2 and lowerings[0]["conv3d:native"] > 0, lowerings
  assert "conv3d:frames2d" not in lowerings[1], lowerings
  assert lowerings[0]["conv3d_groups:bundled"] > 0, lowerings   # the grouped convs
  batch_norms = sum(path[-1].key == "scale" for path, _ in
                    jax.tree_util.tree_leaves_with_path(results[0][1]))
  # in training each BatchNorm fused (the jaxpr holds a scanned stage's body more than once), or
  # none; in inference flax's; the rest are the bundled grouped convs' own VJPs, as many each time
  assert fused[0] == fused[1] == fused[3] > 0, fused
  assert fused[2] - fused[3] >= batch_norms, (fused, batch_norms)
  for got, want in zip(jax.tree.leaves(results[0] + results[2]),
                       jax.tree.leaves(results[1] + results[3])):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(want))))
  with pytest.raises(ValueError, match="unknown stem_lowering 'nhwc'"):
    jax.eval_shape(models.build("resnext3d_tiny", 5, stem_lowering="nhwc").init,
                   jax.random.key(0), clips)


def test_remat_gradients_and_bfloat16():
  clips = jax.random.normal(jax.random.key(1), (2, 8, 32, 32, 3))
  plain = models.build("resnext3d_tiny", 3, conv_lowering="native")
  policies = ("full", "dots", "conv_outputs")   # True means "full"
  remats = [plain.clone(remat=p) for p in policies]
  half = plain.clone(dtype=jnp.bfloat16)
  variables = _random_variables(plain, clips)

  @jax.jit
  def run(variables):
    def loss(params, model):
      (logits, _), _ = model.apply({**variables, "params": params}, clips, train=True,
                                   mutable=["batch_stats"])
      return jnp.sum(logits ** 2)
    return (jax.grad(loss)(variables["params"], plain),
            [jax.grad(loss)(variables["params"], m) for m in remats], half.apply(variables, clips))

  grads, remat_grads, (half_logits, half_out) = run(variables)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))
  for policy, policy_grads in zip(policies, remat_grads):
    for g, g_remat in zip(jax.tree.leaves(grads), jax.tree.leaves(policy_grads)):
      np.testing.assert_allclose(g_remat, g, rtol=1e-4, atol=1e-5 * scale, err_msg=policy)
  with pytest.raises(ValueError, match=r"remat='some'.*conv_outputs"):
    jax.eval_shape(plain.clone(remat="some").init, jax.random.key(0), clips)
  assert half_out["stage4"].dtype == jnp.bfloat16 and half_logits.dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


# Against the float64 torch reference (tests/torch_parity.py): darkjax's own float32 rounding.
TOL, WHY = 1e-5, "float32 rounding through the convolutions (seen <= 1.1e-6)"
TRAIN_TOL, TRAIN_WHY = 1e-4, ("batch-statistics BatchNorm over few positions in the deep stages "
                              "amplifies float32 rounding (seen <= 1.3e-5)")


def _torch_pair(name: str, shortcut: str, num_classes: int, layout=None, **torch_kwargs):
  """A randomised float64 torch reference and the converted (float32) Flax model + variables."""
  torch = torch_parity.require_torch()
  from darkjax.tools import torch_refs
  torch.manual_seed(0)
  block, layers, widths = layout or TORCH_LAYOUT[name]
  reference = torch_refs.HaraResNet(block, layers, widths, shortcut_type=shortcut,
                                    num_classes=num_classes, **torch_kwargs)
  torch_refs.randomise_(reference)
  state = {f"module.{k}": v for k, v in reference.state_dict().items()}  # DataParallel prefix
  variables = convert_resnet3d.convert(name, state)
  model = models.build(name, num_classes, **convert_resnet3d.model_kwargs(name, state))
  return torch_parity.reference(reference), model, variables


def _check_parity(reference, model, variables, clips: np.ndarray):
  """Eval logits; train-mode stem (BatchNorm on batch statistics), logits and running means; and
  d(loss)/d(stem kernel) in train mode, against the float64 torch reference."""
  x = torch_parity.tensor(clips.transpose(0, 4, 1, 2, 3))
  weights = np.random.default_rng(1).standard_normal((clips.shape[0], model.num_classes))
  with torch_parity.require_torch().no_grad():
    eval_logits = torch_parity.numpy(reference.eval()(x))
  reference.train()
  stem = []
  hook = reference.maxpool.register_forward_hook(
      lambda module, inputs, output: stem.append(torch_parity.numpy(output)))
  train_logits = reference(x)
  hook.remove()
  (train_logits * torch_parity.tensor(weights)).sum().backward()
  train_logits = torch_parity.numpy(train_logits)
  torch_grad = common.conv_kernel(reference.conv1.weight.grad.numpy())

  @jax.jit
  def flax_outputs(variables, clips):
    def train_loss(params):
      (logits, out), updates = model.apply({**variables, "params": params}, clips, train=True,
                                           mutable=["batch_stats"])
      return jnp.sum(logits * weights), (logits, out["stem"], updates)
    grads, train_outputs = jax.grad(train_loss, has_aux=True)(variables["params"])
    return (model.apply(variables, clips)[0],) + train_outputs + (grads["conv1"]["kernel"],)

  flax_eval, flax_train, flax_stem, updates, flax_grad = flax_outputs(variables, jnp.asarray(clips))

  def close(actual, desired, what, tol=TOL, why=WHY):
    torch_parity.assert_close(actual, desired, tol, why, what)

  close(flax_eval, eval_logits, "eval logits")
  close(flax_stem, stem[0].transpose(0, 2, 3, 4, 1), "train-mode stem")
  close(flax_train, train_logits, "train-mode logits", TRAIN_TOL, TRAIN_WHY)
  close(updates["batch_stats"]["bn1"]["mean"], reference.bn1.running_mean.numpy(),
        "stem BatchNorm running mean")
  close(flax_grad, torch_grad, "stem kernel gradient", TRAIN_TOL, TRAIN_WHY)


@pytest.mark.torch_parity
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet18_matches_torch(shortcut):
  reference, model, variables = _torch_pair("resnet3d_18", shortcut, 10)
  assert model.shortcut_type == shortcut
  clips = np.random.default_rng(0).standard_normal((2, 8, 48, 48, 3)).astype(np.float32)
  _check_parity(reference, model, variables, clips)


@pytest.mark.torch_parity
def test_resnext_matches_torch():
  # Same code path as resnext3d_101 (grouped bottlenecks, type-B shortcuts, scanned stages) at a
  # depth and width that keep the test fast; resnext3d_101's size is pinned above.
  layout = ("resnext", (1, 3, 1, 1), (32, 64, 64, 64))
  reference, model, variables = _torch_pair("resnext3d_tiny", "B", 6, layout, stem_width=8,
                                            cardinality=4)
  assert variables["params"]["layer2"]["rest"]["conv2"]["kernel"].shape == (2, 3, 3, 3, 2, 8)
  clips = np.random.default_rng(0).standard_normal((2, 8, 48, 48, 3)).astype(np.float32)
  _check_parity(reference, model, variables, clips)


def test_converter_head_handling_and_errors():
  torch = pytest.importorskip("torch")
  from darkjax.tools import torch_refs
  reference = torch_refs.HaraResNet("basic", (1, 3, 1, 1), (8, 16, 16, 32), stem_width=8,
                                    shortcut_type="A", num_classes=7)
  state = reference.state_dict()
  assert "fc" in convert_resnet3d.convert("resnet3d_tiny", state)["params"]
  assert "fc" in convert_resnet3d.convert("resnet3d_tiny", state, num_classes=7)["params"]
  headless = convert_resnet3d.convert("resnet3d_tiny", state, num_classes=3)
  assert "fc" not in headless["params"] and "layer4" in headless["params"]
  assert convert_resnet3d.model_kwargs("resnet3d_tiny", state) == {"shortcut_type": "A"}
  broken = dict(state)
  broken["layer3.0.conv1.weight"] = torch.zeros(16, 16, 3, 3, 1)
  del broken["layer2.2.bn2.running_var"]
  del broken["layer4.0.bn2.weight"]
  broken["extra.weight"] = torch.zeros(1)
  with pytest.raises(common.ConversionError) as error:
    convert_resnet3d.convert("resnet3d_tiny", broken)
  message = str(error.value)
  assert "layer4/block0/bn2/scale" in message  # missing
  assert "layer2/rest/bn2/var" in message   # a block short: named by the checkpoint's key too
  assert "its missing keys (1): ['layer2.2.bn2.running_var']" in message
  assert "layer3/block0/conv1/kernel" in message  # wrong shape
  assert "extra.weight" in message  # unused
  first_gone = dict(state)   # block 1 of three missing: its key, not a numbering puzzle
  del first_gone["layer2.1.conv1.weight"]
  with pytest.raises(common.ConversionError,
                     match=r"its missing keys \(1\): \['layer2\.1\.conv1\.weight'\]"):
    convert_resnet3d.convert("resnet3d_tiny", first_gone)
  with pytest.raises(common.ConversionError, match="(?s)resnet3d_18.*wrong shape"):
    convert_resnet3d.convert("resnet3d_18", state)  # right layout, wrong variant
