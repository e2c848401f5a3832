"""Zero-DCE / Zero-DCE++ / DTCM enhancers: parameter counts, official-code parity, video wrapper."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import convert, models
from darkjax.layers import conv
from darkjax.convert.common import ConversionError
from darkjax.layers.curves import apply_curves
from darkjax.models.enhancers import VideoEnhancer, channel_shuffle
import torch_parity


def _param_count(name, **kwargs):
  model = models.build(name, 0, **kwargs)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name,count", [("zero_dce", 79_416), ("zero_dce_pp", 10_561),
                                        ("dtcm_enhancer", 23_768)])
def test_parameter_counts(name, count):
  assert name in models.names()
  assert _param_count(name) == count


def test_dtcm_enhancer_counts_are_the_papers():
  """Table IX: "Params(k) 23.77" (k = 1..16); Sec. III-D: "our method uses only 28.92% (22.97K vs.
  79.42K) trainable parameters": the same network counted with and without BatchNorm's scales and
  shifts (800 here), once the depthwise convolutions carry a bias."""
  model = models.build("dtcm_enhancer", 0)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
  flat = {"/".join(k): v.size for k, v in
          __import__("flax").traverse_util.flatten_dict(params).items()}
  total = sum(flat.values())
  batch_norm = sum(size for key, size in flat.items() if "_bn/" in key)
  assert round(total / 1000, 2) == 23.77 and total == 23_768
  assert round((total - batch_norm) / 1000, 2) == 22.97 and batch_norm == 800
  assert round(79_416 / 1000, 2) == 79.42 and round(22.97 / 79.42 * 100, 2) == 28.92
  assert _param_count("dtcm_enhancer", depthwise_bias=False) == 23_768 - 208


def test_depthwise_bias_before_batch_norm_changes_nothing_in_training():
  """The paper's depthwise biases are followed by BatchNorm: in training (batch statistics) the
  output does not depend on them and they get no gradient."""
  model = models.build("dtcm_enhancer", 0, features=8)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), maxval=0.3)
  variables = jax.jit(model.init)(jax.random.key(1), x)

  @jax.jit
  def curves(params):
    (_, out), _ = model.apply({**variables, "params": params}, x, train=True,
                              mutable=["batch_stats"])
    return out["curves"]

  grads = jax.jit(jax.grad(lambda p: jnp.sum(curves(p) ** 2)))(variables["params"])
  flat = __import__("flax").traverse_util.flatten_dict(grads, sep="/")
  biases = [k for k in flat if "depthwise/bias" in k]
  assert len(biases) == 3 + 2 * 2      # one per basic unit, two per two-branch unit
  for key in biases:   # zero up to float32 rounding (the batch mean's, ~1e-5 of the kernel's
    # gradients of order 10 under jit), where a bias that mattered would be of their order
    kernel = float(jnp.abs(flat[key.replace("/bias", "/kernel")]).max())
    assert float(jnp.abs(flat[key]).max()) < 1e-4 * kernel, key
  shifted = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.5 if "depthwise" in jax.tree_util.keystr(path) and
      "bias" in jax.tree_util.keystr(path) and "_bn" not in jax.tree_util.keystr(path) else v,
      variables["params"])
  np.testing.assert_allclose(curves(shifted), curves(variables["params"]), atol=1e-4)


def test_enhancers_have_no_head():
  with pytest.raises(ValueError, match="num_classes must be 0"):
    models.build("zero_dce", 10)


@pytest.mark.parametrize("name", ["zero_dce", "zero_dce_pp", "dtcm_enhancer"])
def test_forward_outputs(name):
  model = models.build(name, 0)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 12, 3), maxval=0.3)
  variables = jax.jit(model.init)(jax.random.key(1), x)
  (enhanced, out), _ = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                         mutable=["batch_stats"]))(variables, x)
  assert enhanced.shape == x.shape
  assert out["curves"].shape == (2, 8, 12, 3 if name == "zero_dce_pp" else 24)
  assert out["intermediate"].shape == x.shape
  assert np.all(np.abs(np.asarray(out["curves"])) <= 1.0)
  # the same 8 curve iterations outside the model's jit: float32 rounding of values in [0, 1]
  np.testing.assert_allclose(enhanced, apply_curves(x, out["curves"], "official",
                                                    num_iterations=8), rtol=1e-5, atol=1e-7)
  assert not np.allclose(enhanced, x)


def test_dtcm_enhancer_forms_share_parameters():
  full = models.build("dtcm_enhancer", 0, features=8)
  strided = models.build("dtcm_enhancer", 0, features=8, full_resolution=False)
  x = jax.random.uniform(jax.random.key(0), (1, 12, 16, 3), maxval=0.3)
  variables = jax.jit(full.init)(jax.random.key(1), x)   # jitted: op by op compiles every op
  shapes = lambda v: jax.tree.map(lambda a: a.shape, v)
  assert shapes(variables) == shapes(jax.eval_shape(strided.init, jax.random.key(1), x))
  (_, out_full), (_, out_strided) = (jax.jit(full.apply)(variables, x),
                                     jax.jit(strided.apply)(variables, x))
  assert out_full["curves"].shape == out_strided["curves"].shape == (1, 12, 16, 24)
  assert not np.allclose(out_full["curves"], out_strided["curves"])
  # Any frame size at full resolution; the strided form needs multiples of 4.
  jax.eval_shape(full.init, jax.random.key(0), jnp.zeros((1, 10, 12, 3)))
  with pytest.raises(ValueError, match="multiple of 4"):
    jax.eval_shape(strided.init, jax.random.key(0), jnp.zeros((1, 10, 12, 3)))


def test_dtcm_enhancer_export_form_pools_by_reshape_and_mean():
  """Inside export_lowering() the strided form's average pools are reshapes and means (jax2onnx's
  AvgPool patch fails on flax's call), with the same values."""
  strided = models.build("dtcm_enhancer", 0, features=8, full_resolution=False)
  x = jax.random.uniform(jax.random.key(0), (2, 12, 16, 3), maxval=0.3)
  variables = jax.jit(strided.init)(jax.random.key(1), x)
  expected = jax.jit(strided.apply)(variables, x)
  with conv.export_lowering(), conv.record_lowerings() as chosen:
    actual = jax.jit(lambda v, x: strided.apply(v, x))(variables, x)   # a fresh trace
  assert chosen["avg_pool:reshape_mean"] == 2 and set(chosen) <= conv.PORTABLE_LOWERINGS
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_channel_shuffle_matches_torchvision_order():
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)
  # torchvision: view(b, 2, c/2) -> transpose -> [0, 4, 1, 5, 2, 6, 3, 7]
  np.testing.assert_array_equal(channel_shuffle(x, 2)[0, 0, 0], [0, 4, 1, 5, 2, 6, 3, 7])


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_video_enhancer_shares_curves_within_groups(group_size):
  enhancer = models.build("zero_dce_pp", 0, features=8)
  video = VideoEnhancer(enhancer, group_size=group_size)
  levels = jnp.linspace(0.05, 0.4, 4).reshape(1, 4, 1, 1, 1)
  clip = levels + 0.05 * jax.random.uniform(jax.random.key(0), (1, 4, 8, 8, 3))
  variables = jax.jit(video.init)(jax.random.key(1), clip)
  assert set(variables["params"]) == {"enhancer"}
  enhanced, out = jax.jit(video.apply)(variables, clip)
  apply_image = jax.jit(enhancer.apply)
  assert enhanced.shape == clip.shape
  assert out["curves"].shape == (1, 4 // group_size, 8, 8, 3)
  image_vars = {"params": variables["params"]["enhancer"]}
  for t in range(4):
    key_frame = (t // group_size) * group_size + group_size // 2
    _, key_out = apply_image(image_vars, clip[:, key_frame])
    np.testing.assert_allclose(out["curves"][:, t // group_size], key_out["curves"], rtol=1e-5,
                               atol=1e-6)
    want = apply_curves(clip[:, t], key_out["curves"], "official", num_iterations=8)
    np.testing.assert_allclose(enhanced[:, t], want, rtol=1e-5, atol=1e-6)
  if group_size > 1:
    assert not np.allclose(out["curves"][:, 0], apply_image(image_vars, clip[:, 0])[1]["curves"])


# ------------------------------------------------------------------------- official PyTorch parity

def _official_networks(torch):
  """The official networks, written from Li-Chongyi/Zero-DCE and Zero-DCE_extension `model.py`."""
  nn, F = torch.nn, torch.nn.functional

  class ZeroDCENet(nn.Module):
    def __init__(self):
      super().__init__()
      f = 32
      self.e_conv1 = nn.Conv2d(3, f, 3, 1, 1, bias=True)
      self.e_conv2 = nn.Conv2d(f, f, 3, 1, 1, bias=True)
      self.e_conv3 = nn.Conv2d(f, f, 3, 1, 1, bias=True)
      self.e_conv4 = nn.Conv2d(f, f, 3, 1, 1, bias=True)
      self.e_conv5 = nn.Conv2d(2 * f, f, 3, 1, 1, bias=True)
      self.e_conv6 = nn.Conv2d(2 * f, f, 3, 1, 1, bias=True)
      self.e_conv7 = nn.Conv2d(2 * f, 24, 3, 1, 1, bias=True)

    def forward(self, x):
      x1 = F.relu(self.e_conv1(x))
      x2 = F.relu(self.e_conv2(x1))
      x3 = F.relu(self.e_conv3(x2))
      x4 = F.relu(self.e_conv4(x3))
      x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
      x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
      x_r = torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))
      rs = torch.split(x_r, 3, dim=1)
      for i, r in enumerate(rs):
        x = x + r * (torch.pow(x, 2) - x)
        if i == 3:
          image_1 = x
      return image_1, x, x_r

  class CSDNTem(nn.Module):
    def __init__(self, cin, cout):
      super().__init__()
      self.depth_conv = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin)
      self.point_conv = nn.Conv2d(cin, cout, 1, 1, 0, groups=1)

    def forward(self, x):
      return self.point_conv(self.depth_conv(x))

  class ZeroDCEPPNet(nn.Module):
    def __init__(self, scale_factor):
      super().__init__()
      f = 32
      self.scale_factor = scale_factor
      self.upsample = nn.UpsamplingBilinear2d(scale_factor=scale_factor)
      self.e_conv1 = CSDNTem(3, f)
      self.e_conv2 = CSDNTem(f, f)
      self.e_conv3 = CSDNTem(f, f)
      self.e_conv4 = CSDNTem(f, f)
      self.e_conv5 = CSDNTem(2 * f, f)
      self.e_conv6 = CSDNTem(2 * f, f)
      self.e_conv7 = CSDNTem(2 * f, 3)

    def forward(self, x):
      x_down = x if self.scale_factor == 1 else F.interpolate(
          x, scale_factor=1 / self.scale_factor, mode="bilinear")
      x1 = F.relu(self.e_conv1(x_down))
      x2 = F.relu(self.e_conv2(x1))
      x3 = F.relu(self.e_conv3(x2))
      x4 = F.relu(self.e_conv4(x3))
      x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
      x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
      x_r = torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))
      if self.scale_factor != 1:
        x_r = self.upsample(x_r)
      for _ in range(8):
        x = x + x_r * (torch.pow(x, 2) - x)
      return x, x_r

  return ZeroDCENet, ZeroDCEPPNet


def _to_nhwc(t):
  return torch_parity.numpy(t.permute(0, 2, 3, 1))


TOL, WHY = 5e-6, "float32 rounding through 7 convolutions and the curve steps (seen <= 4.7e-7)"


@pytest.mark.torch_parity
def test_zero_dce_matches_official_pytorch():
  torch = torch_parity.require_torch()
  torch.manual_seed(0)
  net = _official_networks(torch)[0]().eval()
  x = np.random.default_rng(0).uniform(0.0, 0.4, size=(2, 3, 10, 12)).astype(np.float32)
  state = {"module." + k: v for k, v in net.state_dict().items()}  # DataParallel snapshot
  variables = convert.from_torch("zero_dce", state)
  with torch.no_grad():
    image_1, image, curves = torch_parity.reference(net)(torch_parity.tensor(x))
  enhanced, out = models.build("zero_dce", 0).apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  torch_parity.assert_close(out["curves"], _to_nhwc(curves), TOL, WHY, "curves")
  torch_parity.assert_close(out["intermediate"], _to_nhwc(image_1), TOL, WHY, "intermediate")
  torch_parity.assert_close(enhanced, _to_nhwc(image), TOL, WHY, "enhanced")


@pytest.mark.torch_parity
@pytest.mark.parametrize("scale_factor", [1, 2])
def test_zero_dce_pp_matches_official_pytorch(scale_factor):
  torch = torch_parity.require_torch()
  torch.manual_seed(1)
  net = _official_networks(torch)[1](scale_factor).eval()
  x = np.random.default_rng(1).uniform(0.0, 0.4, size=(2, 3, 8, 12)).astype(np.float32)
  variables = convert.from_torch("zero_dce_pp", net.state_dict())
  with torch.no_grad():
    image, curves = torch_parity.reference(net)(torch_parity.tensor(x))
  model = models.build("zero_dce_pp", 0, downscale=scale_factor)
  enhanced, out = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  torch_parity.assert_close(out["curves"], _to_nhwc(curves), TOL, WHY, "curves")
  torch_parity.assert_close(enhanced, _to_nhwc(image), TOL, WHY, "enhanced")


def test_converter_is_strict():
  rng = np.random.default_rng(0)
  variables = jax.eval_shape(models.build("zero_dce", 0).init, jax.random.key(0),
                             jnp.zeros((1, 8, 8, 3)))
  state = {}
  for i in range(1, 8):
    kernel = variables["params"][f"e_conv{i}"]["kernel"]
    kh, kw, cin, cout = kernel.shape
    state[f"e_conv{i}.weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
    state[f"e_conv{i}.bias"] = rng.normal(size=(cout,)).astype(np.float32)
  converted = convert.from_torch("zero_dce", state)
  np.testing.assert_array_equal(converted["params"]["e_conv3"]["kernel"],
                                state["e_conv3.weight"].transpose(2, 3, 1, 0))
  broken = dict(state)
  del broken["e_conv7.bias"]
  broken["e_conv8.weight"] = state["e_conv7.weight"]
  with pytest.raises(ConversionError, match="e_conv7/bias") as info:
    convert.from_torch("zero_dce", broken)
  assert "e_conv8" in str(info.value)
  with pytest.raises(ConversionError, match="missing in checkpoint"):
    convert.from_torch("zero_dce_pp", state)
  with pytest.raises(ConversionError, match="num_classes"):
    convert.from_torch("zero_dce", state, num_classes=5)


@pytest.mark.parametrize("name", ["zero_dce", "zero_dce_pp", "dtcm_enhancer"])
@pytest.mark.parametrize("convention", ["official", "paper"])
def test_initial_curve_centres_the_untrained_estimator(name, convention):
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=0.0, maxval=0.05)
  model = models.build(name, num_classes=0, features=8, convention=convention, initial_curve=0.5)
  variables = model.init(jax.random.key(1), x)
  zeroed = jax.tree_util.tree_map_with_path(   # only the output layer's bias left
      lambda path, v: v if ("e_conv7" in jax.tree_util.keystr(path) and "bias" in
                            jax.tree_util.keystr(path)) else jnp.zeros_like(v), variables)
  _, out = model.apply(zeroed, x)
  r_paper = out["curves"] if convention == "paper" else -out["curves"]
  np.testing.assert_allclose(r_paper, 0.5, atol=1e-5)
  enhanced, _ = model.apply(variables, x)
  assert float(jnp.mean(enhanced)) > 3 * float(jnp.mean(x))   # starts by brightening
  default = models.build(name, num_classes=0, features=8, convention=convention)
  bias = jax.tree_util.tree_leaves({k: v for k, v in default.init(jax.random.key(1), x)["params"]
                                    .items() if k == "e_conv7"})
  assert all(float(jnp.max(jnp.abs(b))) == 0.0 for b in bias if b.ndim == 1)   # published init
  with pytest.raises(ValueError, match="initial_curve=1.0"):
    models.build(name, num_classes=0, features=8, initial_curve=1.0).init(jax.random.key(1), x)


def test_video_enhancer_remat_keeps_parameters_and_gradients_and_dtcm_passes_it_on():
  clip = jax.random.uniform(jax.random.key(0), (2, 4, 12, 16, 3), maxval=0.3)
  enhancer = models.build("dtcm_enhancer", 0, features=8)
  plain = VideoEnhancer(enhancer, group_size=2)
  variables = jax.jit(plain.init)(jax.random.key(1), clip)

  def grads(model):
    def loss(params):
      (enhanced, out), _ = model.apply({**variables, "params": params}, clip, train=True,
                                       mutable=["batch_stats"])
      return jnp.sum(enhanced ** 2) + jnp.sum(out["curves"] ** 2)
    return jax.jit(jax.grad(loss))(variables["params"])

  remat = VideoEnhancer(enhancer, group_size=2, remat="full")
  shapes = lambda v: jax.tree.map(lambda a: a.shape, v)
  assert shapes(jax.eval_shape(remat.init, jax.random.key(1), clip)) == shapes(variables)
  expected = grads(plain)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(expected))
  for g, g_remat in zip(jax.tree.leaves(expected), jax.tree.leaves(grads(remat))):
    # rounding differs (other fusions); gradients that are 0 in exact arithmetic (biases before
    # BatchNorm) are rounding noise on either side
    np.testing.assert_allclose(g_remat, g, rtol=1e-4, atol=1e-5 * scale)
  # Nested: each ShuffleNet unit of the estimator under its own checkpoint inside the whole
  # enhancement's; the same parameters and gradients.
  nested = VideoEnhancer(models.build("dtcm_enhancer", 0, features=8, remat="full"),
                         group_size=2, remat="full")
  assert shapes(jax.eval_shape(nested.init, jax.random.key(1), clip)) == shapes(variables)
  for g, g_nested in zip(jax.tree.leaves(expected), jax.tree.leaves(grads(nested))):
    np.testing.assert_allclose(g_nested, g, rtol=1e-4, atol=1e-5 * scale)
  # The enhancement runs under jax.checkpoint (primitive remat2) only when a policy is set; with
  # the nested policy, one more per unit (e_conv2..e_conv6).
  jaxpr = lambda model: str(jax.make_jaxpr(lambda v: model.apply(v, clip))(variables))
  assert jaxpr(remat).count("remat2") == 1 and "remat2" not in jaxpr(plain)
  assert jaxpr(nested).count("remat2") == 6
  # DTCM hands its policy to its enhancer (both levels) as to its backbone.
  dtcm = models.build("dtcm_tiny", 5, remat="full")
  bound = dtcm.bind(jax.eval_shape(dtcm.init, jax.random.key(0), jnp.zeros((1, 4, 16, 16, 3))))
  assert bound.video_enhancer.remat == "full" and bound.classifier.remat == "full"
  assert bound.video_enhancer.enhancer.remat == "full"
