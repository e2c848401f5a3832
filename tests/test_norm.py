"""darkjax.layers.norm.BatchNorm: flax's BatchNorm (same variables, same values in training and
inference), and inside export_lowering() in inference one multiply-add by folded constants."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from darkjax.layers import conv
from darkjax.layers.norm import BatchNorm


@pytest.mark.parametrize("use_scale, use_bias", [(True, True), (False, True), (True, False)])
def test_batch_norm_is_flaxs_and_its_export_form_the_same_function(use_scale, use_bias):
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 6))
  kwargs = dict(momentum=0.9, epsilon=1e-5, use_scale=use_scale, use_bias=use_bias)
  ours, flax_bn = BatchNorm(**kwargs), nn.BatchNorm(**kwargs)
  variables = ours.init(jax.random.key(1), x, use_running_average=True)
  shapes = lambda tree: jax.tree.map(np.shape, tree)   # noqa: E731
  assert shapes(variables) == shapes(flax_bn.init(jax.random.key(1), x, use_running_average=True))
  # statistics and affine parameters away from their initial values
  variables = jax.tree.map(
      lambda a: a + jax.random.uniform(jax.random.key(2), a.shape, minval=0.1, maxval=1.0),
      variables)
  expected = flax_bn.apply(variables, x, use_running_average=True)
  np.testing.assert_array_equal(ours.apply(variables, x, use_running_average=True), expected)
  trained, stats = ours.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(trained, flax_bn.apply(
      variables, x, use_running_average=False, mutable=["batch_stats"])[0])
  with conv.export_lowering(), conv.record_lowerings() as chosen:
    exported = ours.apply(variables, x, use_running_average=True)
    # training mode keeps flax's form: batch statistics, updated running averages
    assert ours.apply(variables, x, use_running_average=False,
                      mutable=["batch_stats"])[1].keys() == stats.keys()
  assert dict(chosen) == {"batch_norm:affine": 1}
  np.testing.assert_allclose(exported, expected, rtol=0, atol=1e-5)
