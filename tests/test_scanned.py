"""darkjax.layers.scanned: inside export_lowering() the nn.scan stages (ResNet3D / ResNeXt3D,
LIFT-Net's fusion layers) run unrolled over the same stacked variables and give the training
form's outputs; the unrolled form does not initialise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import models, targets
from darkjax.layers import conv


def _init(model, x):
  return jax.jit(model.init, compiler_options=targets.init_compiler_options("cpu"))(
      jax.random.key(1), x)


def _outputs_match(model, variables, *inputs, stages, atol=1e-5):
  with conv.native_lowering():   # the training form; native convs compile fastest
    expected = jax.jit(lambda v, *x: model.apply(v, *x))(variables, *inputs)
  with conv.export_lowering(), conv.record_lowerings() as chosen:
    actual = jax.jit(lambda v, *x: model.apply(v, *x))(variables, *inputs)
  assert chosen["scan:unrolled"] == stages
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
    scale = max(1.0, float(jnp.max(jnp.abs(b))))
    np.testing.assert_allclose(a, b, rtol=0, atol=atol * scale, err_msg=str(path))


@pytest.mark.parametrize("name", ["resnet3d_tiny", "resnext3d_tiny"])
def test_resnet_stages_unrolled_match_the_scan(name):
  model = models.build(name, 5)
  x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
  variables = _init(model, x)
  # BatchNorm statistics away from (0, 1), so each block's slice of them matters
  variables["batch_stats"] = jax.tree.map(
      lambda a: a + jax.random.uniform(jax.random.key(2), a.shape, maxval=0.5),
      variables["batch_stats"])
  _outputs_match(model, variables, x, stages=1)   # layer2: block0 + 2 scanned blocks


def test_liftnet_fusion_layers_unrolled_match_the_scan():
  model = models.build("liftnet_tiny_test", 5, dropout_rate=0.0)
  x = jax.random.uniform(jax.random.key(0), (2, 4, 32, 32, 3))
  variables = _init(model, x)
  # nonzero spectrum MLP outputs (their last Dense starts at zero)
  variables["params"] = jax.tree.map(lambda a: a + 0.01, variables["params"])
  # The FoE's LayerNorm on the spectrum (Sec. III-E's order) scales its float rounding up, as in
  # tests/test_liftnet.py's scan vs unrolled comparisons: ~2e-5 here.
  _outputs_match(model, variables, x, stages=1, atol=1e-4)


def test_unrolled_form_applies_trained_variables_only():
  model = models.build("resnet3d_tiny", 5)
  with conv.export_lowering(), pytest.raises(ValueError, match="rest: the unrolled .* form"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 16, 16, 3)))
