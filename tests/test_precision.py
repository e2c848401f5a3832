"""darkjax.layers.precision: biases added in float32 under a bf16 compute dtype, so that their
gradients (and every other sum autodiff makes of a broadcast) are summed in float32; flax's own
layers sum them in bf16. The layers keep flax's variables, and in float32 flax's program."""

from __future__ import annotations

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import config as config_lib
from darkjax import targets, train
from darkjax import task as task_lib
from darkjax.layers import conv, depthwise, precision
from darkjax.tools import bench_config, predict_checkpoint
from run_configs import quiet

PAPERS = ("actlumos_synthetic", "lift_synthetic", "dtcm_synthetic", "dinet_synthetic",
          "twostream_synthetic")


def _walk(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs inside it."""
  for eqn in jaxpr.eqns:
    yield eqn
    for inner in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _walk(inner)


def _bf16_sums(jaxpr, min_terms: int = 64) -> list:
  """Every reduce_sum of `jaxpr` (and of the jaxprs inside it) whose result is 16-bit and sums at
  least `min_terms` terms into each entry."""
  found = []
  for eqn in _walk(jaxpr):
    if eqn.primitive.name == "reduce_sum":
      source, result = eqn.invars[0].aval, eqn.outvars[0].aval
      terms = int(np.prod(source.shape)) // max(1, int(np.prod(result.shape)))
      if precision.low_precision(result.dtype) and terms >= min_terms:
        found.append((str(eqn.source_info.name_stack), source.shape, result.shape))
  return found


@pytest.mark.parametrize("case", PAPERS)
def test_paper_models_sum_nothing_in_bf16(case, tmp_path):
  """Each paper's model at runlocal size, traced for a GPU with a bf16 compute dtype: neither its
  forward nor its gradient sums 64 or more terms in a 16-bit dtype (BatchNorm, LayerNorm and
  softmax statistics, bias gradients, flax's attention projections included)."""
  config = importlib.import_module(f"configs.{case}").get_config(f"runlocal,data_dir={tmp_path}")
  config = quiet(config)
  config.compute_dtype = "bfloat16"
  task = task_lib.load_task(config, num_classes=5)
  inputs = {k: jnp.zeros(v.shape, v.dtype)
            for k, v in predict_checkpoint.sample_inputs(task).items()}
  with targets.compiling_for("gpu"):
    variables = jax.eval_shape(task.init_variables, jax.random.key(0), inputs)
    grad = jax.make_jaxpr(jax.grad(lambda v: task.predict(v, inputs).astype(jnp.float32).sum()))
    jaxpr = grad(variables).jaxpr
  # the model does compute in bf16 (its products), and sums nothing in it
  assert any(e.primitive.name in ("dot_general", "conv_general_dilated")
             and e.outvars[0].aval.dtype == jnp.bfloat16 for e in _walk(jaxpr)), case
  assert _bf16_sums(jaxpr) == []


@pytest.mark.parametrize("paper", ("actlumos_arid", "lift_arid", "dtcm_arid", "dinet_infar",
                                   "twostream_infar"))
def test_paper_train_steps_sum_nothing_in_bf16(paper, tmp_path):
  """Each paper config's main-phase train step (its losses, gradients, gradient clipping and
  optimizer update) at runlocal size with compute_dtype=bfloat16, as the Trainer jits it: no sum
  of 64 or more terms in a 16-bit dtype."""
  config = config_lib.load(f"configs/{paper}.py:runlocal")
  config = bench_config.stand_in_config(config, str(tmp_path / "data"))
  config = config_lib.resolve(config_lib.apply_overrides(config, {"compute_dtype": "bfloat16"}),
                              "cpu")
  phase_config, task = task_lib.build_task(task_lib.main_phase(config), config)
  trainer = train.Trainer(phase_config, str(tmp_path / "run"), task=task)
  with trainer.scope():
    trainer.build()
    batch = {k: jax.ShapeDtypeStruct((int(trainer.config.input.batch_size),) + s.shape[1:],
                                     s.dtype, sharding=trainer.batch_sharding)
             for k, s in trainer._sample.items()}   # pylint: disable=protected-access
    rng = jax.eval_shape(lambda: jax.random.key(0))
    jaxpr = trainer.train_step.trace(trainer.abstract_state, batch, rng).jaxpr.jaxpr
  assert any(e.outvars and e.outvars[0].aval.dtype == jnp.bfloat16 for e in _walk(jaxpr))
  assert _bf16_sums(jaxpr) == []


def _layers():
  """(darkjax layer, flax's same layer, input shape) for every layer kind with a bias."""
  return [
      (precision.Dense(16), nn.Dense(16), (960, 197, 8)),
      (precision.Conv(16, (1, 1)), nn.Conv(16, (1, 1)), (64, 28, 28, 8)),
      (conv.Conv3D(16, (1, 1, 1), use_bias=True), nn.Conv(16, (1, 1, 1)), (8, 16, 28, 28, 8)),
      (depthwise.DepthwiseConv2D((1, 1), padding=((0, 0), (0, 0))),
       nn.Conv(8, (1, 1), feature_group_count=8), (64, 28, 28, 8)),
  ]


@pytest.mark.parametrize("index", range(4), ids=["Dense", "Conv", "Conv3D", "DepthwiseConv2D"])
def test_bias_gradients_in_bf16_are_float32_sums(index):
  """In bf16 over 0.1-0.2 million positions: the bias gradient within 1% (of its largest entry)
  of float32's, the kernel's and the input's within 2%; in float32 the same function as flax's
  layer (for flax's subclasses its very program) with the same variables; the output keeps the
  compute dtype."""
  layer, flax_layer, shape = _layers()[index]
  x = jax.random.normal(jax.random.key(0), shape).astype(jnp.bfloat16).astype(jnp.float32)
  variables = flax_layer.init(jax.random.key(1), x[:1])
  assert jax.tree.map(np.shape, layer.init(jax.random.key(1), x[:1])) == jax.tree.map(
      np.shape, variables)
  probe = 0.1 + jax.random.normal(jax.random.key(2), shape[:-1] + (layer.init(
      jax.random.key(1), x[:1])["params"]["bias"].shape[0],))

  def grads(module, dtype):
    def loss(params, x, probe):
      y = module.clone(dtype=dtype).apply({"params": params}, x.astype(dtype))
      assert y.dtype == dtype
      return jnp.sum(y.astype(jnp.float32) * probe)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x, probe)

  exact = grads(flax_layer, jnp.float32)
  if index < 2:   # flax's subclasses: flax's program in float32
    jax.tree.map(np.testing.assert_array_equal, grads(layer, jnp.float32), exact)
  else:           # darkjax's own convolutions: their CPU lowerings, the same function
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(
        np.max(np.abs(b)))), grads(layer, jnp.float32), exact)
  got = grads(layer, jnp.bfloat16)
  bias, want = np.asarray(got[0]["bias"], np.float32), np.asarray(exact[0]["bias"])
  assert np.max(np.abs(bias - want)) < 0.01 * np.max(np.abs(want))
  for leaf, reference in zip(jax.tree.leaves(got), jax.tree.leaves(exact)):
    reference = np.asarray(reference)
    assert np.max(np.abs(np.asarray(leaf, np.float32) - reference)) < 0.02 * np.max(
        np.abs(reference))


def test_attention_projections_sum_their_bias_gradients_in_float32():
  """`precision.MultiHeadDotProductAttention`: flax's attention with its query, value and output
  projections' bias gradients in float32 (the key bias has none: a softmax ignores it)."""
  x = jax.random.normal(jax.random.key(0), (64, 50, 32)).astype(jnp.bfloat16).astype(jnp.float32)
  probe = 0.1 + jax.random.normal(jax.random.key(1), x.shape)
  variables = nn.MultiHeadDotProductAttention(num_heads=4).init(jax.random.key(2), x[:1], x[:1])

  def grads(cls, dtype):
    module = cls(num_heads=4, dtype=dtype)
    assert jax.tree.map(np.shape, module.init(jax.random.key(2), x[:1], x[:1])) == jax.tree.map(
        np.shape, variables)
    loss = lambda p: jnp.sum(module.apply(   # noqa: E731
        {"params": p}, x.astype(dtype), x.astype(dtype)).astype(jnp.float32) * probe)
    return jax.jit(jax.grad(loss))(variables["params"])

  exact = grads(nn.MultiHeadDotProductAttention, jnp.float32)
  jax.tree.map(np.testing.assert_array_equal,
               grads(precision.MultiHeadDotProductAttention, jnp.float32), exact)
  got = grads(precision.MultiHeadDotProductAttention, jnp.bfloat16)
  for name in ("query", "value", "out"):
    bias, want = np.asarray(got[name]["bias"], np.float32), np.asarray(exact[name]["bias"])
    assert np.max(np.abs(bias - want)) < 0.01 * np.max(np.abs(want)), name
