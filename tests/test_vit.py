"""ViT: pinned sizes, per-frame video encoding, timm / npz conversion, torch reference parity."""

from __future__ import annotations

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from darkjax.convert import common as convert_common
from darkjax.convert import vit as convert_vit
from darkjax import targets
from darkjax.layers import attention, conv2d
from darkjax.models import vit
import torch_parity

TINY = dict(width=32, depth=3, mlp_dim=64, num_heads=4, patch_size=8)  # == vit_tiny_test


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _shapes(name: str, num_classes: int, size: int = 224, **kwargs) -> dict:
  model = vit.VARIANTS[name](num_classes=num_classes, **kwargs)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def _timm_formula(width, depth, mlp_dim, patch, tokens, num_classes, representation=0) -> int:
  block = 4 * width + (width * 3 * width + 3 * width) + (width * width + width) + (
      width * mlp_dim + mlp_dim) + (mlp_dim * width + width)
  head_in = representation or width
  return (patch * patch * 3 * width + width + width + tokens * width + depth * block + 2 * width
          + (width * representation + representation if representation else 0)
          + (head_in * num_classes + num_classes if num_classes else 0))


@pytest.mark.parametrize("name,num_classes,representation,expected", [
    ("vit_b16", 1000, None, 86_567_656),
    ("vit_b16", 21843, None, 102_595_923),
    ("vit_b16", 21843, 768, 103_186_515),  # original ImageNet-21k ViT-B_16.npz (with pre_logits)
    ("vit_s16", 1000, None, 22_050_664),
    ("vit_ti16", 1000, None, 5_717_416),
])
def test_param_counts_pinned(name, num_classes, representation, expected):
  width, depth, mlp_dim, _, patch = vit._VIT_SIZES[name]
  formula = _timm_formula(width, depth, mlp_dim, patch, 197, num_classes, representation or 0)
  assert formula == expected
  shapes = _shapes(name, num_classes, representation_size=representation)
  assert _count(shapes["params"]) == expected


def test_num_blocks_builds_only_the_first_blocks():
  params = _shapes("vit_b16", 0, num_blocks=4)["params"]
  blocks = [k for k in params["Transformer"] if k.startswith("encoderblock_")]
  assert sorted(blocks) == [f"encoderblock_{i}" for i in range(4)]
  with pytest.raises(ValueError, match="num_blocks=13"):
    _shapes("vit_b16", 0, num_blocks=13)


# ---------------------------------------------------------------- torch reference (timm layout)


def _torch_reference(width, depth, mlp_dim, num_heads, patch_size, image_size, num_classes):
  torch_parity.require_torch()
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  return torch_refs.timm_vit(width, depth, mlp_dim, num_heads, patch_size, image_size, num_classes)


@pytest.fixture(scope="module")
def reference():
  """(float64 torch model, its float32 state dict, float32 images NCHW, torch logits and tokens)."""
  torch = torch_parity.require_torch()
  model = _torch_reference(**TINY, image_size=16, num_classes=6)
  state_dict = {k: v.clone() for k, v in model.state_dict().items()}
  images = np.random.RandomState(0).randn(4, 3, 16, 16).astype(np.float32)
  with torch.no_grad():
    logits, tokens = torch_parity.reference(model)(torch_parity.tensor(images))
  return model, state_dict, images, torch_parity.numpy(logits), torch_parity.numpy(tokens)


TOL, WHY = 1e-5, "float32 rounding through 3 transformer blocks (seen <= 3.2e-7)"


@pytest.mark.torch_parity
def test_timm_parity_images_and_video(reference):
  _, state_dict, images, expected_logits, expected_tokens = reference
  variables = convert_vit.convert("vit_tiny_test", state_dict)
  model = vit.VARIANTS["vit_tiny_test"](num_classes=6, return_tokens=True)
  apply = jax.jit(model.apply)
  logits, out = apply(variables, images.transpose(0, 2, 3, 1))
  torch_parity.assert_close(logits, expected_logits, TOL, WHY, "logits")
  torch_parity.assert_close(out["tokens"], expected_tokens[:, 1:], TOL, WHY, "tokens")
  torch_parity.assert_close(out["cls"], expected_tokens[:, 0], TOL, WHY, "cls token")

  clip = images.transpose(0, 2, 3, 1).reshape(2, 2, 16, 16, 3)  # (B=2, T=2) frames
  clip_logits, clip_out = apply(variables, clip)
  assert clip_logits.shape == (2, 2, 6) and clip_out["tokens"].shape == (2, 2, 4, 32)
  np.testing.assert_allclose(clip_logits.reshape(4, 6), logits, rtol=1e-5, atol=1e-6)
  assert clip_out["features"].shape == (2, 2, 32)


@pytest.mark.torch_parity
def test_pvit_first_blocks_match_torch_truncation(reference):
  import torch
  model_torch, state_dict, images, _, _ = reference
  variables = convert_vit.convert("vit_tiny_test", state_dict, num_classes=0, num_blocks=2)
  assert "encoderblock_2" not in variables["params"]["Transformer"]
  assert "head" not in variables["params"]
  with torch.no_grad():
    _, expected_tokens = model_torch(torch_parity.tensor(images), num_blocks=2)
  model = vit.VARIANTS["vit_tiny_test"](num_classes=0, num_blocks=2, return_tokens=True)
  features, out = jax.jit(model.apply)(variables, images.transpose(0, 2, 3, 1))
  torch_parity.assert_close(out["tokens"], torch_parity.numpy(expected_tokens)[:, 1:], TOL, WHY,
                            "tokens after 2 blocks")
  np.testing.assert_array_equal(features, out["features"])


def test_npz_layouts_round_trip(reference, tmp_path):
  _, state_dict, _, _, _ = reference
  params = convert_vit.convert("vit_tiny_test", state_dict)["params"]
  flat = traverse_util.flatten_dict(params, sep="/")
  path = tmp_path / "vit_tiny.npz"
  np.savez(path, **flat)
  from_npz = convert_vit.convert("vit_tiny_test", convert_vit.read_npz(path))
  _assert_same_tree(from_npz["params"], params)

  # big_vision: top-level pos_embedding, other block sub-module names, scanned blocks, params/.
  renames = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
             "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
  big_vision: dict[str, list] = {}
  for key, value in flat.items():
    parts = key.split("/")
    if key == "Transformer/posembed_input/pos_embedding":
      big_vision["params/pos_embedding"] = [value]
    elif len(parts) > 2 and parts[1].startswith("encoderblock_"):
      sub = "/".join([renames.get(parts[2], parts[2])] + parts[3:])
      big_vision.setdefault(f"params/Transformer/encoderblock/{sub}", []).append(value)
    else:
      big_vision[f"params/{key}"] = [value]
  stacked = {k: (np.stack(v) if "encoderblock/" in k else v[0]) for k, v in big_vision.items()}
  _assert_same_tree(convert_vit.convert("vit_tiny_test", stacked)["params"], params)


def _assert_same_tree(actual, expected):
  actual_flat = traverse_util.flatten_dict(actual, sep="/")
  expected_flat = traverse_util.flatten_dict(expected, sep="/")
  assert sorted(actual_flat) == sorted(expected_flat)
  for key, value in expected_flat.items():
    np.testing.assert_array_equal(actual_flat[key], value, err_msg=key)


def test_head_dropped_when_classes_differ_and_errors_name_keys(reference):
  _, state_dict, _, _, _ = reference
  state = {f"module.{k}": v for k, v in state_dict.items()}
  assert "head" not in convert_vit.convert("vit_tiny_test", state, num_classes=11)["params"]
  kept = convert_vit.convert("vit_tiny_test", state, num_classes=6)["params"]
  np.testing.assert_array_equal(kept["head"]["kernel"], state_dict["head.weight"].numpy().T)

  broken = dict(state)
  del broken["module.blocks.1.norm2.bias"]
  broken["module.blocks.0.attn.rel_pos"] = state_dict["cls_token"]
  with pytest.raises(convert_common.ConversionError) as error:
    convert_vit.convert("vit_tiny_test", broken)
  message = str(error.value)
  assert "params/Transformer/encoderblock_1/LayerNorm_2/bias" in message
  assert "blocks.0.attn.rel_pos" in message
  with pytest.raises(convert_common.ConversionError, match="wrong shape"):
    convert_vit.convert("vit_tiny_test", state, num_heads=2, mlp_dim=48)


@pytest.mark.torch_parity
def test_pos_embedding_resize_matches_torch_bilinear(reference):
  torch = torch_parity.require_torch()
  pos = np.random.RandomState(2).randn(1, 1 + 3 * 3, 5).astype(np.float32)
  for grid in ((6, 6), (2, 4)):
    ours = convert_vit.resize_pos_embedding(pos, grid)
    patches = torch_parity.tensor(pos[0, 1:].reshape(1, 3, 3, 5)).permute(0, 3, 1, 2)
    theirs = torch.nn.functional.interpolate(patches, size=grid, mode="bilinear",
                                             align_corners=False)
    theirs = torch_parity.numpy(theirs.permute(0, 2, 3, 1).reshape(1, -1, 5))
    np.testing.assert_array_equal(ours[:, :1], pos[:, :1])
    torch_parity.assert_close(ours[:, 1:], theirs, 3e-7, "float32 rounding of 4 weighted "
                              "terms (seen <= 8.3e-8)", f"resized to {grid}")

  _, state_dict, _, _, _ = reference
  variables = convert_vit.convert("vit_tiny_test", state_dict, image_size=32)
  assert variables["params"]["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 17, 32)
  logits, _ = jax.jit(vit.VARIANTS["vit_tiny_test"](num_classes=6).apply)(
      variables, jnp.zeros((1, 32, 32, 3)))
  assert logits.shape == (1, 6) and bool(jnp.all(jnp.isfinite(logits)))


def test_remat_dtype_dropout_and_errors(reference):
  _, state_dict, images, _, _ = reference
  variables = convert_vit.convert("vit_tiny_test", state_dict)
  frames = jnp.asarray(images.transpose(0, 2, 3, 1))
  plain = vit.VARIANTS["vit_tiny_test"](num_classes=6)
  remat = vit.VARIANTS["vit_tiny_test"](num_classes=6, remat=True)
  loss = lambda model: lambda p: jnp.sum(model.apply({"params": p}, frames)[0] ** 2)
  grads = jax.jit(jax.grad(loss(plain)))(variables["params"])
  remat_grads = jax.jit(jax.grad(loss(remat)))(variables["params"])
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(remat_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  half = vit.VARIANTS["vit_tiny_test"](num_classes=6, dtype=jnp.bfloat16, return_tokens=True)
  logits, out = jax.jit(half.apply)(variables, frames)
  assert logits.dtype == jnp.float32 and out["tokens"].dtype == jnp.bfloat16

  dropout = vit.VARIANTS["vit_tiny_test"](num_classes=6, dropout_rate=0.5)
  train_apply = jax.jit(lambda v, rng: dropout.apply(v, frames, train=True, rngs={"dropout": rng}))
  first, _ = train_apply(variables, jax.random.key(0))
  second, _ = train_apply(variables, jax.random.key(1))
  assert not np.allclose(first, second)

  with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
    plain.apply(variables, jnp.zeros((1, 20, 20, 3)))
  with pytest.raises(ValueError, match="unknown model 'vit_h14'"):
    convert_vit.convert("vit_h14", state_dict)


# ================================================================ attention implementations
@pytest.mark.parametrize("shape", [(2, 3, 7, 4, 16), (3, 8, 2, 8)])   # odd and even token counts
def test_fused_attention_glue_matches_flax(shape):
  """`attention.fused_attention`'s glue (batch axes flattened, an odd length padded by one token
  that the padding mask keeps out of every softmax, sliced off after) through XLA's reference:
  flax's attention, values and gradients, to float32 rounding."""
  q, k, v = (jax.random.normal(r, shape) for r in jax.random.split(jax.random.key(0), 3))
  np.testing.assert_allclose(attention.fused_attention(q, k, v, implementation="xla"),
                             nn.dot_product_attention(q, k, v), rtol=0, atol=2e-6)
  loss = lambda fn: lambda *qkv: jnp.sum(jnp.sin(fn(*qkv)))
  fused = jax.grad(loss(lambda *qkv: attention.fused_attention(*qkv, implementation="xla")),
                   (0, 1, 2))(q, k, v)
  for got, want in zip(fused, jax.grad(loss(nn.dot_product_attention), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_choose_attention_takes_cudnn_only_where_it_applies():
  choose = functools.partial(attention.choose_attention, jnp.bfloat16, 64, cudnn=True)
  assert choose(platform="gpu") == "cudnn"
  assert attention.choose_attention(jnp.float16, 128, platform="gpu", cudnn=True) == "cudnn"
  assert choose(platform="cpu") == choose(platform="tpu") == "xla"
  assert choose(platform="gpu", masked=True) == choose(platform="gpu", dropout=True) == "xla"
  assert choose(platform="gpu", sow=True) == "xla"              # the attention-map figures
  assert attention.choose_attention(jnp.float32, 64, platform="gpu", cudnn=True) == "xla"
  for head_dim in (12, 256):   # not a multiple of 8; wider than every GPU's fused kernels take
    assert attention.choose_attention(jnp.bfloat16, head_dim, platform="gpu", cudnn=True) == "xla"
  assert attention.choose_attention(jnp.bfloat16, 64, platform="gpu", cudnn=False) == "xla"


def test_vit_attention_field_and_the_record_of_its_choice():
  """Each block's choice is recorded; traced for a GPU on a host without cuDNN, in an export or
  with attention="xla" it is flax's form, the same function; an unknown name and a fused call
  with a mask are errors naming the setting."""
  clips = jnp.zeros((2, 3, 16, 16, 3))
  model = vit.VARIANTS["vit_tiny_test"](num_classes=5, dtype=jnp.bfloat16)
  variables = model.init(jax.random.key(0), clips)

  def traced(platform, fields=None, export=False):
    with targets.compiling_for(platform), conv2d.record_lowerings() as chosen, (
        conv2d.export_lowering() if export else contextlib.nullcontext()):
      out = jax.jit(model.clone(**(fields or {})).apply)(variables, clips)[0]
    return out, dict(chosen)

  reference, chosen = traced("cpu")
  assert chosen == {"attention:xla": 3}
  expected = "attention:cudnn" if attention.cudnn_available() else "attention:xla"
  # (on a GPU the patch embedding's 3 RGB channels are zero-padded to 8: conv2d.aligned_conv)
  aligned = {"conv_channels:aligned": 1}
  with targets.compiling_for("gpu"), conv2d.record_lowerings() as chosen:
    jax.eval_shape(model.apply, variables, clips)
  assert dict(chosen) == {expected: 3, **aligned}
  for fields, export in (({"attention": "xla"}, False), (None, True)):   # runs here, on CPU
    out, chosen = traced("gpu", fields, export)
    assert chosen == {"attention:xla": 3, **({} if export else aligned)}
    np.testing.assert_array_equal(out, reference)
  with pytest.raises(ValueError, match="VisionTransformer: attention implementation 'flash'"):
    model.clone(attention="flash").init(jax.random.key(0), clips)
  q = jnp.zeros((1, 4, 2, 8), jnp.bfloat16)
  with pytest.raises(ValueError, match="'cudnn': this call has a mask"):
    attention.dot_product_attention(q, q, q, mask=jnp.ones((1, 2, 4, 4), bool),
                                    implementation="cudnn")
