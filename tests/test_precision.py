"""darkjax.layers.precision: biases added in float32 under a bf16 compute dtype, so that their
gradients (and every other sum autodiff makes of a broadcast) are summed in float32; flax's own
layers sum them in bf16. The layers keep flax's variables, and in float32 flax's program."""

from __future__ import annotations

import collections
import functools
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


_CONVS = (   # (groups, strides, padding, lhs_dilation, rhs_dilation) of a 3D NDHWC convolution
    (1, (1, 2, 2), ((1, 1), (1, 1), (1, 1)), None, None),
    (4, (2, 1, 1), ((1, 0), (0, 1), (2, 2)), None, None),
    (1, (1, 1, 1), "SAME", None, (1, 2, 2)),
    (2, (1, 1, 1), ((0, 0), (1, 2), (0, 1)), (1, 2, 1), None),
    (1, (1, 2, 2), "SAME", None, None))
_DOTS = (   # (x shape, kernel shape, dimension numbers): Dense, DenseGeneral in and out
    ((4, 5, 16), (16, 12), (((2,), (0,)), ((), ()))),
    ((4, 5, 16), (16, 3, 4), (((2,), (0,)), ((), ()))),
    ((4, 5, 3, 4), (3, 4, 16), (((2, 3), (0, 1)), ((), ()))))


@pytest.mark.parametrize("case", [("conv", c) for c in _CONVS] + [("dot", d) for d in _DOTS],
                         ids=[f"conv{i}" for i in range(len(_CONVS))]
                         + [f"dot{i}" for i in range(len(_DOTS))])
def test_float32_weight_gradients_of_convolutions_and_matmuls(case):
  """Inside `float32_weight_gradients()` a bf16 convolution or matmul of a float32 kernel: lax's
  output and input gradient bit for bit, and the kernel's gradient in float32, the float32 sum of
  the bf16 products (autodiff's is a bf16 result, ~0.3% off), so that its sum across devices is a
  float32 one. Outside the block, lax's program on the cast kernel."""
  kind, spec = case
  key_x, key_w, key_g = jax.random.split(jax.random.key(7), 3)
  if kind == "conv":
    groups, strides, padding, lhs_dilation, rhs_dilation = spec
    x = jax.random.normal(key_x, (4, 6, 9, 9, 8))
    w = jax.random.normal(key_w, (3, 3, 3, 8 // groups, 8))
    kwargs = dict(window_strides=strides, padding=padding, lhs_dilation=lhs_dilation,
                  rhs_dilation=rhs_dilation, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                  feature_group_count=groups)
    plain = lambda x, w: jax.lax.conv_general_dilated(x, w, **kwargs)   # noqa: E731
    ours = lambda x, w: precision.conv_general_dilated(x, w, **kwargs)   # noqa: E731
  else:
    x_shape, w_shape, numbers = spec
    x, w = jax.random.normal(key_x, x_shape), jax.random.normal(key_w, w_shape)
    plain = lambda x, w: jax.lax.dot_general(x, w, numbers)   # noqa: E731
    ours = lambda x, w: precision.dot_general(x, w, numbers)   # noqa: E731
  x16 = x.astype(jnp.bfloat16)
  with precision.float32_weight_gradients():
    y, pullback = jax.vjp(ours, x16, w)
    assert "custom_vjp_call" in str(jax.make_jaxpr(ours)(x16, w))
  y_ref, pullback_ref = jax.vjp(lambda x, w: plain(x, w.astype(jnp.bfloat16)), x16, w)
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
  dy = jax.random.normal(key_g, y.shape).astype(y.dtype)
  (dx, dw), (dx_ref, dw_ref) = pullback(dy), pullback_ref(dy)
  np.testing.assert_array_equal(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32))
  # the exact sum of the same bf16 products, in float32
  _, pullback_f32 = jax.vjp(lambda w: plain(x16.astype(jnp.float32), w),
                            w.astype(jnp.bfloat16).astype(jnp.float32))
  exact, = pullback_f32(dy.astype(jnp.float32))
  scale = float(np.max(np.abs(exact)))
  assert dw.dtype == jnp.float32 and dw.shape == w.shape
  np.testing.assert_allclose(dw, exact, rtol=0, atol=1e-6 * scale)
  assert np.max(np.abs(np.asarray(dw_ref, np.float32) - exact)) > 1e-4 * scale   # bf16's result
  # outside the block: lax's op on the cast kernel, no custom VJP (a function of its own: jax
  # caches traces by function, not by the context they were made in)
  assert str(jax.make_jaxpr(lambda x, w: ours(x, w))(x16, w)) == str(jax.make_jaxpr(
      lambda x, w: plain(x, w.astype(jnp.bfloat16)))(x16, w))


@pytest.mark.parametrize("name, platform", [
    ("r2plus1d_tiny_test", "tpu"), ("vit_tiny_test", "tpu"), ("dtcm_tiny", "tpu"),
    ("r2plus1d_tiny_test", "gpu"), ("vit_tiny_test", "gpu")])
def test_layers_give_float32_kernel_gradients_for_a_batch_over_devices(name, platform,
                                                                      monkeypatch):
  """Inside `float32_weight_gradients()` (what a Trainer enters for a batch over devices) every
  kernel of a bf16 model traced for a TPU (Conv3D, Dense, Conv, attention's projections,
  DepthwiseConv2D) gets its gradient from one convolution or matmul with float32 output; traced
  for a GPU, every matmul kernel (the convolutions stay autodiff's there: precision's docstring).
  The same variables and loss; the gradients as close to the float32 model's as autodiff's of
  the bf16 model, or closer."""
  from darkjax import models  # pylint: disable=import-outside-toplevel
  from darkjax.layers import attention  # pylint: disable=import-outside-toplevel
  # Traced for a GPU but run on this CPU: flax's attention, also where jax's CUDA plugin (the
  # aot-gpu extra) would let a GPU trace take cuDNN's fused one, which has no CPU lowering.
  monkeypatch.setattr(attention, "cudnn_available", lambda: False)
  shape = (2, 32, 32, 3) if name.startswith("vit") else (2, 4, 32, 32, 3)
  clips = jax.random.uniform(jax.random.key(3), shape)   # in [0, 1], as DTCM's enhancer takes
  variables = jax.jit(functools.partial(models.build(name, 5).init, train=False))(
      jax.random.key(4), clips)   # jitted: one compile, not one per operation

  def run(spread, dtype=jnp.bfloat16):
    model = models.build(name, 5, dtype=dtype)

    def loss(params):
      out, _ = model.apply({**variables, "params": params}, clips, train=True,
                           mutable=["batch_stats"])
      logits = out[0] if isinstance(out, tuple) else out
      return jnp.sum(jnp.asarray(logits, jnp.float32) * jnp.linspace(-1.0, 1.0, logits.shape[-1]))

    with targets.compiling_for(platform), precision.float32_weight_gradients(spread):
      jaxpr = jax.make_jaxpr(jax.grad(loss))(variables["params"])
      return jaxpr, jax.jit(jax.value_and_grad(loss))(variables["params"])

  jaxpr, (value, grads) = run(True)
  _, (value_ref, grads_ref) = run(False)
  _, (_, exact) = run(False, jnp.float32)
  np.testing.assert_allclose(value, value_ref, rtol=1e-6)
  kernels = [leaf.ndim for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
             if path[-1].key == "kernel"]
  wide = collections.Counter(
      eqn.primitive.name for eqn in _walk(jaxpr.jaxpr)
      if eqn.primitive.name in ("conv_general_dilated", "dot_general")
      and eqn.params.get("preferred_element_type") == jnp.float32
      and all(precision.low_precision(v.aval.dtype) for v in eqn.invars))
  matmuls = sum(ndim <= 3 for ndim in kernels)   # Dense (in, out), attention (in, heads, width)
  assert wide["dot_general"] >= matmuls >= 1, (wide, kernels)
  if platform == "tpu":
    assert wide["conv_general_dilated"] >= len(kernels) - matmuls, (wide, kernels)
  else:
    assert not wide["conv_general_dilated"], wide
  ours = autodiffs = 0.0
  for got, plain, want in zip(*map(jax.tree.leaves, (grads, grads_ref, exact))):
    assert got.dtype == plain.dtype == jnp.float32
    scale = float(np.max(np.abs(want))) or 1.0
    ours = max(ours, float(np.max(np.abs(np.asarray(got) - want))) / scale)
    autodiffs = max(autodiffs, float(np.max(np.abs(np.asarray(plain) - want))) / scale)
  assert ours <= autodiffs * 1.05 + 1e-6, (ours, autodiffs)


def test_broadcast_parameters_sum_their_gradients_in_float32():
  """`add_bias` over a parameter's size-1 axes (a position embedding (1, N, D)) and
  `broadcast_param` (a class token per clip) sum their gradients over the batch in float32 under
  bf16, and are the plain broadcast otherwise."""
  y = jnp.full((512, 3, 4), 1.0, jnp.bfloat16)
  pos = jnp.zeros((1, 3, 4))
  grad = jax.grad(lambda p: jnp.sum(precision.add_bias(y, p).astype(jnp.float32) * 1.001))(pos)
  assert grad.shape == pos.shape and grad.dtype == jnp.float32
  np.testing.assert_allclose(grad, 512 * 1.001, rtol=1e-3)   # bf16 sums stall at 256
  token = jnp.zeros((1, 1, 4))
  grad = jax.grad(lambda t: jnp.sum(
      precision.broadcast_param(t, (512, 1, 4), jnp.bfloat16).astype(jnp.float32) * 1.001))(token)
  np.testing.assert_allclose(grad, 512 * 1.001, rtol=1e-3)
  assert str(jax.make_jaxpr(lambda t: precision.broadcast_param(t, (8, 1, 4), jnp.float32))(
      token)) == str(jax.make_jaxpr(lambda t: jnp.broadcast_to(t, (8, 1, 4)))(token))


@pytest.mark.parametrize("platform,fsdp", (("gpu", 1), ("gpu", 4), ("tpu", 1), ("tpu", 4)))
def test_devices_sum_their_own_gradients_in_float32(platform, fsdp):
  """Traced with the batch over 8 devices (a Trainer's mesh): for a GPU each convolution kernel's
  gradient is each device's own (autodiff's, bf16) summed across them by a float32 psum (XLA:GPU
  would convert the operands of a bf16 convolution with float32 output); with fsdp (a mesh of 2 x
  4, kernels split as the Trainer splits them), on either platform, every split convolution
  kernel's (its float32 output on a TPU) by a float32 psum over `data` and psum_scatter over
  `fsdp` onto its split; otherwise as on one device (float32 output, the partitioner's sum). The
  same loss, gradients within bf16's rounding of autodiff's; without a mesh, no shard_map."""
  from darkjax import models, sharding  # pylint: disable=import-outside-toplevel
  mesh = jax.make_mesh((8 // fsdp, fsdp), sharding.BATCH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  kernel_spec = None if fsdp == 1 else functools.partial(
      sharding.fsdp_auto_spec, fsdp_size=fsdp, min_fsdp_size=64)
  model = models.build("r2plus1d_tiny_test", 5, dtype=jnp.bfloat16)
  clips = jax.random.uniform(jax.random.key(3), (8, 4, 32, 32, 3))
  variables = jax.jit(functools.partial(models.build("r2plus1d_tiny_test", 5).init, train=False))(
      jax.random.key(4), clips[:1])
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.BATCH_AXES))
  clips = jax.device_put(clips, batch)

  def loss(params, clips):
    (logits, _), _ = model.apply({**variables, "params": params}, clips, train=True,
                                 mutable=["batch_stats"])
    return jnp.sum(logits.astype(jnp.float32) * jnp.linspace(-1.0, 1.0, logits.shape[-1]))

  def run(given):
    with targets.compiling_for(platform), precision.float32_weight_gradients(
        True, mesh if given else None, sharding.BATCH_AXES, kernel_spec):
      jaxpr = jax.make_jaxpr(jax.grad(loss))(variables["params"], clips)
      return str(jaxpr), jax.jit(jax.value_and_grad(loss))(variables["params"], clips)

  text, (value, grads) = run(True)
  plain, (value_ref, grads_ref) = run(False)
  convs = sum(leaf.ndim == 5 for path, leaf in jax.tree_util.tree_leaves_with_path(
      variables["params"]) if path[-1].key == "kernel")
  # with fsdp, the split convolution kernels' gradients are scattered (reduce_scatter in the
  # jaxpr), so many as fsdp_auto splits
  split = sum(leaf.ndim == 5 and "fsdp" in tuple(kernel_spec(leaf.shape)) for path, leaf in
              jax.tree_util.tree_leaves_with_path(variables["params"])
              if path[-1].key == "kernel") if kernel_spec else 0
  assert (split > 0) == (fsdp > 1)
  local = convs if platform == "gpu" else split   # kernels whose devices sum their own
  assert text.count("shard_map") >= local and ("psum" in text) == (local > 0), (
      text.count("shard_map"), local)
  assert text.count("reduce_scatter") >= split, (text.count("reduce_scatter"), split)
  assert "shard_map" not in plain
  np.testing.assert_allclose(value, value_ref, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    assert got.dtype == jnp.float32
    scale = float(np.max(np.abs(want))) or 1.0
    assert np.max(np.abs(np.asarray(got) - np.asarray(want))) <= 0.02 * scale
