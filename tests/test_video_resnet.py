"""torchvision / IG65M video ResNets: pinned sizes, tiny forward passes, conversion, parity."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from darkjax.convert import common as convert_common
from darkjax.convert import video_resnet as convert_video_resnet
from darkjax.models import video_resnet
import torch_parity


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _shapes(name: str, num_classes: int, **kwargs) -> dict:
  model = video_resnet.VARIANTS[name](num_classes=num_classes, **kwargs)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 112, 112, 3)))


@pytest.mark.parametrize("name,num_classes,expected", [
    ("r3d_18", 400, 33_371_472),
    ("mc3_18", 400, 11_695_440),
    ("r2plus1d_18", 400, 31_505_325),
    ("r2plus1d_34_ig65m", 400, 63_697_175),
    ("r2plus1d_34_ig65m", 487, 63_741_806),
    ("r2plus1d_34_ig65m", 0, 63_697_175 - 512 * 400 - 400),
])
def test_param_counts_pinned(name, num_classes, expected):
  assert _count(_shapes(name, num_classes)["params"]) == expected


def test_ig65m_midplanes_differ_from_torchvision_r2plus1d_34():
  params = _shapes("r2plus1d_34_ig65m", 400)["params"]
  for stage, (conv1_mid, conv2_mid) in zip((2, 3, 4), ((230, 288), (460, 576), (921, 1152))):
    block = params[f"layer{stage}_0"]
    assert block["conv1"]["spatial"]["kernel"].shape[-1] == conv1_mid
    assert block["conv2"]["spatial"]["kernel"].shape[-1] == conv2_mid
    assert params[f"layer{stage}_1"]["conv1"]["spatial"]["kernel"].shape[-1] == conv2_mid


def test_ig65m_param_count_matches_torch_reference():
  torch = pytest.importorskip("torch")
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  with torch.device("meta"):  # shapes only, no allocation or init
    reference = torch_refs.ig65m_r2plus1d(487)
  torch_count = sum(p.numel() for p in reference.parameters())
  assert torch_count == _count(_shapes("r2plus1d_34_ig65m", 487)["params"])


def _random_variables(model, clip) -> dict:
  """Variables with the model's shapes, filled from numpy: avoids compiling `init` (its threefry
  random numbers dominate compile time on CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), clip)
  rng = np.random.RandomState(0)
  def fill(path, shape):
    if path[-1].key == "var":
      return jnp.asarray(rng.uniform(0.5, 1.5, shape.shape), shape.dtype)
    return jnp.asarray(rng.normal(0.0, 0.3, shape.shape), shape.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_tiny_forward_outputs_and_remat():
  model = video_resnet.VARIANTS["r2plus1d_tiny_test"](num_classes=5)
  clip = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 3))
  variables = _random_variables(model, clip)
  logits, out = jax.jit(model.apply)(variables, clip)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert out["stem"].shape == (2, 4, 8, 8, 8)
  assert out["stage1"].shape == (2, 4, 8, 8, 8)
  assert out["stage4"].shape == (2, 1, 1, 1, 32)
  assert out["features"].shape == (2, 32)
  np.testing.assert_allclose(out["features"], out["stage4"].mean(axis=(1, 2, 3)), rtol=1e-6)

  remat_model = video_resnet.VARIANTS["r2plus1d_tiny_test"](num_classes=5, remat=True)
  remat_logits, _ = jax.jit(remat_model.apply)(variables, clip)
  np.testing.assert_allclose(remat_logits, logits, rtol=1e-5, atol=1e-6)

  train_apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  (train_logits, _), updates = train_apply(variables, clip)
  assert not np.allclose(train_logits, logits)
  stem_mean = updates["batch_stats"]["stem_spatial_bn"]["mean"]
  assert not np.allclose(stem_mean, variables["batch_stats"]["stem_spatial_bn"]["mean"])


def test_feature_extractor_and_bfloat16():
  model = video_resnet.VARIANTS["r2plus1d_tiny_test"](num_classes=0, dtype=jnp.bfloat16)
  clip = jnp.ones((1, 4, 16, 16, 3))
  variables = _random_variables(model, clip)
  assert "fc" not in variables["params"]
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables))
  features, out = jax.jit(model.apply)(variables, clip)
  assert features.shape == (1, 32) and out["stage2"].dtype == jnp.bfloat16


def test_unknown_conv_type_names_the_field():
  model = video_resnet.VideoResNet(num_classes=2, conv_types=("3d", "3d", "4d", "3d"))
  with pytest.raises(ValueError, match="'4d'"):
    model.init(jax.random.key(0), jnp.zeros((1, 4, 16, 16, 3)))


# ---------------------------------------------------------------- conversion and PyTorch parity


def _torch_model(name: str, num_classes: int = 10):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  model = getattr(torchvision.models.video, name)(num_classes=num_classes)
  _randomise_batchnorm(model)
  return model


def _randomise_batchnorm(model) -> None:
  import torch
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm3d):
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)


def _ncdhw_to_ndhwc(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1))


def _variables_and_clip(name: str, torch_model, model_kwargs: dict):
  """darkjax variables converted from the (float32) torch model, then the model made the float64
  reference; and a float32 clip."""
  variables = convert_video_resnet.convert(name, torch_model.state_dict(), 10, **model_kwargs)
  torch_parity.reference(torch_model)
  clip = np.random.RandomState(0).randn(1, 3, 8, 32, 32).astype(np.float32)
  return variables, clip


def _check_eval_parity(name: str, torch_model, model_kwargs: dict | None = None) -> None:
  """Eval-mode (running statistics) float32 logits against the float64 reference."""
  torch = torch_parity.require_torch()
  model_kwargs = model_kwargs or {}
  variables, clip = _variables_and_clip(name, torch_model, model_kwargs)
  torch_model.eval()
  with torch.no_grad():
    expected = torch_parity.numpy(torch_model(torch_parity.tensor(clip)))
  model = video_resnet.VARIANTS[name](num_classes=10, **model_kwargs)
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, _ncdhw_to_ndhwc(clip))[0]
  torch_parity.assert_close(logits, expected, 1e-5, "float32 rounding through the network's "
                            "convolutions (seen <= 8.8e-7)", "eval logits")


def _check_train_parity(name: str, torch_model, model_kwargs: dict) -> None:
  """Train mode (batch statistics): logits, stem-kernel gradient and BN running means against the
  float64 reference, of darkjax in float32 (as users run it) and in float64.

  float64 on both sides checks the mathematics to 1e-9, far below what float32 rounding allows
  once batch-statistics BatchNorm over few elements has amplified it.
  """
  variables, clip = _variables_and_clip(name, torch_model, model_kwargs)
  torch_model.train()
  cotangent = np.random.RandomState(1).randn(1, 10)
  train_logits = torch_model(torch_parity.tensor(clip))
  (train_logits * torch_parity.tensor(cotangent)).sum().backward()
  expected_logits = torch_parity.numpy(train_logits)
  expected_grad = convert_common.conv_kernel(torch_model.stem[0].weight.grad.numpy())
  # Running means follow PyTorch (torch momentum 0.1 = flax 0.9). Running variances do not:
  # flax averages the biased batch variance, PyTorch the unbiased one.
  torch_stats = convert_video_resnet.convert(name, torch_model.state_dict(), 10, **model_kwargs)
  theirs = traverse_util.flatten_dict(torch_stats["batch_stats"], sep="/")

  def train_step(dtype, params, batch_stats, clip):
    model = video_resnet.VARIANTS[name](num_classes=10, dtype=dtype, **model_kwargs)

    @jax.jit
    def step(params):
      def loss(params):
        (out_logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats},
                                               clip, train=True, mutable=["batch_stats"])
        return jnp.sum(out_logits * cotangent), (out_logits, updates["batch_stats"])
      return jax.grad(loss, has_aux=True)(params)

    grads, (logits, new_stats) = step(params)
    stem_param = "stem_conv" if "stem_conv" in grads else "stem_spatial"
    ours = traverse_util.flatten_dict(jax.device_get(new_stats), sep="/")
    return logits, grads[stem_param]["kernel"], ours

  logits, grad, ours = train_step(jnp.float32, variables["params"], variables["batch_stats"],
                                  _ncdhw_to_ndhwc(clip))
  torch_parity.assert_close(logits, expected_logits, 1e-4, "float32 rounding, amplified by "
                            "batch-statistics BatchNorm (seen <= 4.8e-6)", "float32 train logits")
  torch_parity.assert_close(grad, expected_grad, 5e-4, "layer4's BatchNorm normalises over 4 "
                            "positions (batch 1, 1x2x2), which amplifies float32 rounding in the "
                            "backward pass (seen <= 8.1e-5)", "float32 stem kernel gradient")
  for key in (k for k in theirs if k.endswith("/mean")):
    torch_parity.assert_close(ours[key], theirs[key], 1e-5, "float32 means of the batch "
                              "statistics (seen <= 1.5e-6)", f"float32 running mean {key}")

  with jax.enable_x64(True):
    as64 = functools.partial(jax.tree_util.tree_map, lambda a: jnp.asarray(a, jnp.float64))
    logits, grad, ours = train_step(jnp.float64, as64(variables["params"]),
                                    as64(variables["batch_stats"]),
                                    jnp.asarray(_ncdhw_to_ndhwc(clip), jnp.float64))
  why = "float64 on both sides: summation order only (seen <= 3.5e-13)"
  torch_parity.assert_close(logits, expected_logits, 1e-9, why, "float64 train logits")
  torch_parity.assert_close(grad, expected_grad, 1e-9, why, "float64 stem kernel gradient")
  for key in (k for k in theirs if k.endswith("/mean")):
    torch_parity.assert_close(ours[key], theirs[key], 1e-6, "torch's running means come through "
                              "the converter, which stores float32 (seen <= 4.5e-8)",
                              f"float64 running mean {key}")


def _torch_one_block_per_stage(name: str):
  """torchvision's `name` structure with one block per stage (half the compile time)."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("torchvision")
  from torchvision.models.video import resnet as tv_resnet
  torch.manual_seed(0)
  conv_makers, stem = {
      "r3d_18": ([tv_resnet.Conv3DSimple] * 4, tv_resnet.BasicStem),
      "mc3_18": ([tv_resnet.Conv3DSimple] + [tv_resnet.Conv3DNoTemporal] * 3, tv_resnet.BasicStem),
      "r2plus1d_18": ([tv_resnet.Conv2Plus1D] * 4, tv_resnet.R2Plus1dStem),
      "r2plus1d_34_ig65m": ([tv_resnet.Conv2Plus1D] * 4, tv_resnet.R2Plus1dStem),
  }[name]
  if name == "r2plus1d_34_ig65m":  # as moabitcoin/ig65m-pytorch builds it
    from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
    model = torch_refs.ig65m_r2plus1d(10, layers=(1, 1, 1, 1))
  else:
    model = tv_resnet.VideoResNet(tv_resnet.BasicBlock, conv_makers, [1, 1, 1, 1], stem,
                                  num_classes=10)
  _randomise_batchnorm(model)
  return model


@pytest.mark.torch_parity
@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_torchvision_eval_parity(name):
  _check_eval_parity(name, _torch_model(name))


@pytest.mark.torch_parity
def test_torchvision_train_mode_parity():
  """Batch-statistics BN is the same code in every family; R(2+1)D has the most BN layers."""
  name = "r2plus1d_18"
  _check_train_parity(name, _torch_one_block_per_stage(name), {"stage_sizes": (1, 1, 1, 1)})


@pytest.mark.torch_parity
def test_ig65m_layout_eval_parity():
  """IG65M structure (VMZ mid-planes, BN eps 1e-3) with one block per stage."""
  _check_eval_parity("r2plus1d_34_ig65m", _torch_one_block_per_stage("r2plus1d_34_ig65m"),
                     {"stage_sizes": (1, 1, 1, 1)})


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_full_torchvision_state_dicts_convert(name):
  variables = convert_video_resnet.convert(name, _torch_model(name, num_classes=400).state_dict())
  assert _count(variables["params"]) == _count(_shapes(name, 400)["params"])


def test_convert_head_prefixes_and_errors():
  torch_model = _torch_model("mc3_18", num_classes=7)
  state = {f"module.{k}": v for k, v in torch_model.state_dict().items()}
  kept = convert_video_resnet.convert("mc3_18", state)
  assert kept["params"]["fc"]["kernel"].shape == (512, 7)
  np.testing.assert_array_equal(kept["params"]["fc"]["kernel"],
                                torch_model.fc.weight.detach().numpy().T)
  dropped = convert_video_resnet.convert("mc3_18", state, num_classes=3)
  assert "fc" not in dropped["params"]

  broken = dict(state)
  del broken["module.layer3.1.conv2.1.running_var"]
  broken["module.layer9.0.conv1.0.weight"] = broken["module.layer3.0.conv1.0.weight"]
  with pytest.raises(convert_common.ConversionError) as error:
    convert_video_resnet.convert("mc3_18", broken)
  assert "batch_stats/layer3_1/bn2/var" in str(error.value)
  assert "layer9.0.conv1.0.weight" in str(error.value)
  with pytest.raises(convert_common.ConversionError, match="wrong shape"):
    convert_video_resnet.convert("r3d_18", state)  # mc3 weights into r3d: (1,3,3) vs (3,3,3)


def test_remat_lowers_the_train_steps_memory_under_darkjaxs_compile_options():
  """XLA:CPU merges a block's recomputation with its forward unless darkjax's compile options
  keep jax.checkpoint's barriers (darkjax.targets.compiler_options): without them remat changes
  nothing in XLA's memory analysis."""
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  clip = jax.random.normal(jax.random.key(1), (2, 8, 32, 32, 3))
  temps = {}
  for policy in ("none", "full"):
    model = video_resnet.VARIANTS["r2plus1d_tiny_test"](num_classes=5, remat=policy)
    variables = jax.eval_shape(model.init, jax.random.key(0), clip)

    def loss(params, batch_stats, model=model):
      (logits, _), _ = model.apply({"params": params, "batch_stats": batch_stats}, clip,
                                   train=True, mutable=["batch_stats"])
      return jnp.sum(logits ** 2)

    compiled = jax.jit(jax.grad(loss), compiler_options=targets.compiler_options()).lower(
        variables["params"], variables["batch_stats"]).compile()
    temps[policy] = compiled.memory_analysis().temp_size_in_bytes
  # 1.17x at this size (only the stem and the block inputs kept); 1.00x without the options.
  assert temps["full"] < 0.9 * temps["none"], temps
