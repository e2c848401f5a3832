"""Depthwise conv lowerings: equal numerics, nn.Conv-compatible parameters, clear errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax.layers import depthwise


def _inputs(channels=6, size=9, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((2, size, size, channels), np.float32))
  k = jnp.asarray(rng.standard_normal((3, 3, 1, channels), np.float32))
  return x, k


@pytest.mark.parametrize("stride", [1, 2])
def test_blockdiag_equals_native_forward_and_gradients(stride):
  x, k = _inputs()
  pad = ((1, 1), (1, 1))
  outs, grads = {}, {}
  for lowering in ("native", "blockdiag"):
    f = lambda x, k, lowering=lowering: depthwise.depthwise_conv2d(x, k, (stride, stride), pad,
                                                                   lowering)
    outs[lowering] = f(x, k)
    grads[lowering] = jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))(x, k)
  np.testing.assert_allclose(outs["blockdiag"], outs["native"], rtol=1e-5, atol=1e-5)
  for a, b in zip(grads["blockdiag"], grads["native"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert grads["blockdiag"][1].shape == k.shape


def test_module_matches_flax_grouped_conv_parameters_and_output():
  x, _ = _inputs(channels=4)
  ours = depthwise.DepthwiseConv2D((3, 3), (2, 2), ((1, 1), (1, 1)), lowering="blockdiag")
  ref = nn.Conv(4, (3, 3), (2, 2), ((1, 1), (1, 1)), feature_group_count=4)
  key = jax.random.key(3)
  v_ours, v_ref = ours.init(key, x), ref.init(key, x)
  assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)
  np.testing.assert_array_equal(v_ours["params"]["kernel"], v_ref["params"]["kernel"])
  bias = {"params": {**v_ref["params"], "bias": jnp.arange(4.0)}}
  np.testing.assert_allclose(ours.apply(bias, x), ref.apply(bias, x), rtol=1e-5, atol=1e-5)
  no_bias = depthwise.DepthwiseConv2D(use_bias=False).init(key, x)
  assert set(no_bias["params"]) == {"kernel"}


def test_auto_picks_blockdiag_on_cpu_only_for_few_channels():
  assert depthwise.choose_lowering(32, "cpu") == "blockdiag"
  assert depthwise.choose_lowering(depthwise.BLOCKDIAG_MAX_CHANNELS + 1, "cpu") == "native"
  assert depthwise.choose_lowering(32, "gpu") == "native"
  assert depthwise.choose_lowering(32, "tpu") == "native"


def test_bad_kernel_and_lowering_are_named():
  x, k = _inputs(channels=6)
  with pytest.raises(ValueError, match=r"kernel shape \(3, 3, 1, 5\)"):
    depthwise.depthwise_conv2d(x, k[..., :5])
  with pytest.raises(ValueError, match="lowering 'fast' unknown"):
    depthwise.depthwise_conv2d(x, k, lowering="fast")


def test_native_lowering_block_forces_native_depthwise():
  from darkjax.layers import conv
  x, k = _inputs(channels=4)
  count = lambda: str(jax.make_jaxpr(lambda x, k: depthwise.depthwise_conv2d(x, k))(x, k)).count(
      "feature_group_count=4")
  assert depthwise.choose_lowering(4, "cpu") == "blockdiag" and count() == 0
  with conv.native_lowering():
    assert depthwise.choose_lowering(4, "cpu") == "native"
    assert count() == 1
