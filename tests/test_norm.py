"""darkjax.layers.norm.BatchNorm: flax's BatchNorm (same variables, same values in training and
inference), and inside export_lowering() in inference one multiply-add by folded constants."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax.layers import conv, norm
from darkjax.layers.norm import BatchNorm, per_group_stats
from darkjax.tools import bench_step


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


@pytest.mark.parametrize("platform, groups, shape", [
    ("cpu", 1, (16, 6)), ("cpu", 1, (2, 3, 4, 4, 6)), ("cpu", 2, (16, 6)),
    ("gpu", 1, (16, 6)), ("gpu", 2, (4, 3, 4, 4, 6))])
def test_running_variance_averages_the_unbiased_batch_variance_as_torch(platform, groups, shape):
  """PyTorch's running variance: momentum-averaged unbiased (n - 1) batch variances, n values per
  feature (per part with stat_groups), while the batch is normalised by the biased one; on every
  path (flax's on CPU, the grouped arithmetic, the fused custom VJP traced for a GPU). A batch
  of 16 feature vectors (ActLumos's fusion) infers 3% off with the biased one.
  `unbiased_running_var=False` is flax's BatchNorm exactly."""
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  x = 1.5 + 2.0 * jax.random.normal(jax.random.key(5), shape)
  kwargs = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=platform != "cpu")
  module = BatchNorm(stat_groups=groups, **kwargs)
  variables = module.init(jax.random.key(1), x, use_running_average=True)
  old = jax.tree.map(lambda a: a + 0.25, variables["batch_stats"])
  variables = {"params": variables["params"], "batch_stats": old}
  with targets.compiling_for(platform):
    y, new = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  parts = np.asarray(x, np.float64).reshape((groups, -1, shape[-1]))
  for part in range(groups):
    pick = (lambda a: a[part]) if groups > 1 else (lambda a: a)  # noqa: E731
    np.testing.assert_allclose(pick(new["batch_stats"]["var"]),
                               0.9 * pick(old["var"]) + 0.1 * parts[part].var(0, ddof=1),
                               rtol=2e-6)
    np.testing.assert_allclose(pick(new["batch_stats"]["mean"]),
                               0.9 * pick(old["mean"]) + 0.1 * parts[part].mean(0), rtol=2e-6)
    # the batch itself normalised by its biased variance: unit variance per feature
    normalised = np.asarray(y, np.float64).reshape(parts.shape)[part]
    np.testing.assert_allclose(normalised.var(0), 1.0, rtol=1e-4)
  if groups == 1:
    flaxs = nn.BatchNorm(**kwargs).apply(variables, x, use_running_average=False,
                                         mutable=["batch_stats"])[1]
    biased = BatchNorm(unbiased_running_var=False, **kwargs)
    with targets.compiling_for(platform):
      ours = biased.apply(variables, x, use_running_average=False, mutable=["batch_stats"])[1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, flaxs)
  if platform == "cpu" and groups == 1 and len(shape) == 2:
    torch = pytest.importorskip("torch")
    reference = torch.nn.BatchNorm1d(shape[-1], eps=1e-5, momentum=0.1).double()
    with torch.no_grad():
      reference.running_mean.copy_(torch.from_numpy(np.asarray(old["mean"], np.float64)))
      reference.running_var.copy_(torch.from_numpy(np.asarray(old["var"], np.float64)))
    reference.train()(torch.from_numpy(np.asarray(x, np.float64)))
    np.testing.assert_allclose(new["batch_stats"]["var"], reference.running_var.numpy(),
                               rtol=2e-6)


@pytest.mark.parametrize("fast_variance", [True, False])
def test_stat_groups_keep_statistics_per_part_in_training_and_inference(fast_variance):
  """stat_groups=2: each half of the batch is flax's BatchNorm on that half alone with its own
  running statistics ((2, C) `mean` / `var`), in training and in inference; scale and bias are
  shared; (C,) statistics expand to that layout; a batch that does not split evenly is refused.
  Statistics in one pass (flax's default) or two, as flax computes them."""
  key_a, key_b = jax.random.split(jax.random.key(3))
  x = np.concatenate([jax.random.normal(key_a, (3, 2, 4, 4, 5)),        # a dark-like part
                      5.0 + 4.0 * jax.random.normal(key_b, (3, 2, 4, 4, 5))])  # a bright part
  kwargs = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=fast_variance)
  grouped, flax_bn = BatchNorm(stat_groups=2, **kwargs), nn.BatchNorm(**kwargs)
  variables = grouped.init(jax.random.key(1), x, use_running_average=True)
  assert jax.tree.map(np.shape, variables) == {"params": {"scale": (5,), "bias": (5,)},
                                               "batch_stats": {"mean": (2, 5), "var": (2, 5)}}
  one = flax_bn.init(jax.random.key(1), x, use_running_average=True)
  one = {"params": {k: v + 0.5 for k, v in one["params"].items()},
         "batch_stats": {"mean": np.full(5, 0.3, np.float32), "var": np.full(5, 2.0, np.float32)}}
  variables = {"params": one["params"], "batch_stats": per_group_stats(one["batch_stats"], 2)}
  out, new = grouped.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  for part, half in enumerate((x[:3], x[3:])):
    expected = flax_bn.apply(one, half, use_running_average=False, mutable=["batch_stats"])[0]
    stats = BatchNorm(**kwargs).apply(one, half, use_running_average=False,
                                      mutable=["batch_stats"])[1]
    np.testing.assert_allclose(out[3 * part:3 * part + 3], expected, rtol=1e-5, atol=1e-5)
    for name in ("mean", "var"):
      np.testing.assert_allclose(new["batch_stats"][name][part], stats["batch_stats"][name],
                                 rtol=1e-5)
  # each part is normalised apart: its mean ~0 per channel, which joint statistics would not give
  assert np.abs(np.asarray(out[:3]).mean(axis=(0, 1, 2, 3)) - 0.5).max() < 1e-4
  joint = flax_bn.apply(one, x, use_running_average=False, mutable=["batch_stats"])[0]
  assert np.asarray(joint[:3]).mean() < 0.0
  # inference: each part by its own running statistics
  trained = {"params": one["params"], "batch_stats": new["batch_stats"]}
  inferred = grouped.apply(trained, x, use_running_average=True)
  for part, half in enumerate((x[:3], x[3:])):
    own = {"params": one["params"],
           "batch_stats": {k: v[part] for k, v in new["batch_stats"].items()}}
    np.testing.assert_allclose(inferred[3 * part:3 * part + 3],
                               flax_bn.apply(own, half, use_running_average=True),
                               rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="stat_groups=2 needs a batch of equal parts"):
    grouped.apply(variables, x[:5], use_running_average=False, mutable=["batch_stats"])


def test_grouped_statistics_in_bf16_sum_their_gradients_in_float32():
  """stat_groups=2 in bf16 (ActLumos's teacher under the bf16 policy): the affine map runs in
  float32 and is rounded once, as flax's BatchNorm, so autodiff sums the per-sample rows'
  cotangents over each part's positions in float32. Summed in bf16 (as it was), 8192 positions
  per part and channel put the scale, bias and input gradients 5-36% (of their largest entry)
  from float32's; now they are as close as flax's one-group BatchNorm in bf16 (under 1%)."""
  key_a, key_b, key_c = jax.random.split(jax.random.key(0), 3)
  x = jnp.concatenate([0.3 + jax.random.normal(key_a, (2, 8, 32, 32, 4)),
                       2.0 + 3.0 * jax.random.normal(key_b, (2, 8, 32, 32, 4))])
  x = x.astype(jnp.bfloat16).astype(jnp.float32)   # the same values in both dtypes
  probe = jax.random.normal(key_c, x.shape)
  params = {"scale": jnp.linspace(0.5, 1.5, 4), "bias": jnp.linspace(-0.4, 0.4, 4)}

  def grad(groups, dtype):
    module = BatchNorm(stat_groups=groups, dtype=dtype, use_running_average=False)
    stats = module.init(jax.random.key(1), x)["batch_stats"]

    def loss(params, x):
      y, _ = module.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
      return jnp.sum(jax.nn.relu(y).astype(jnp.float32) * probe)
    return jax.grad(loss, argnums=(0, 1)), (params, x.astype(dtype))

  errors = {}
  for groups in (1, 2):
    fn, args = grad(groups, jnp.bfloat16)
    sums = [e for e in jax.make_jaxpr(fn)(*args).eqns if e.primitive.name == "reduce_sum"]
    assert sums and all(e.outvars[0].aval.dtype == jnp.float32 for e in sums), sums
    want = jax.jit(grad(groups, jnp.float32)[0])(*grad(groups, jnp.float32)[1])
    errors[groups] = [float(np.max(np.abs(np.asarray(got, np.float32) - w)) / np.max(np.abs(w)))
                      for got, w in zip(jax.tree.leaves(jax.jit(fn)(*args)),
                                        jax.tree.leaves(want))]
  assert max(errors[2]) < 0.01 and max(errors[1]) < 0.01, errors


@pytest.mark.parametrize("name, frames, inputs, on_cpu", [
    ("r2plus1d_tiny_test", 8, 1, {False}), ("actlumos_teacher_tiny_test", 8, 2, {False}),
    ("liftnet_tiny_test", 8, 1, {False, True}),   # its R(2+1)D stream two-pass, its head not
    ("dinet_tiny", 8, 1, {True}), ("resnext3d_tiny", 8, 1, {True})])
def test_batch_norm_statistics_in_one_pass_on_accelerators(name, frames, inputs, on_cpu):
  """Every BatchNorm of the zoo's models traced for a GPU or TPU computes its training statistics
  in one pass over the activation (`use_fast_variance`; module docstring of darkjax.layers.norm):
  one read fewer of each activation forward and backward than the two-pass form, which the
  R(2+1)D networks and ActLumos keep on CPU (`one_pass_statistics`)."""
  from darkjax import models, targets  # pylint: disable=import-outside-toplevel
  model = models.build(name, 5)
  clips = jax.ShapeDtypeStruct((1, frames, 32, 32, 3), jnp.float32)

  def one_pass_flags(platform):
    seen = []

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.BatchNorm):
        seen.append(context.module.use_fast_variance)
      return next_fun(*args, **kwargs)

    with targets.compiling_for(platform), nn.intercept_methods(record):
      jax.eval_shape(lambda x: model.init(jax.random.key(0), *[x] * inputs, train=False), clips)
    return seen

  for platform in ("gpu", "tpu"):
    flags = one_pass_flags(platform)
    assert flags and all(flags), (name, platform, flags.count(False))
  cpu = one_pass_flags("cpu")
  assert set(cpu) == on_cpu, (name, set(cpu))


def test_one_and_two_pass_statistics_agree_in_training():
  """The GPU/TPU form (one pass) against the CPU one (two passes) on an activation whose mean is
  several standard deviations from zero: outputs, input and parameter gradients and the running
  statistics agree to float32 rounding."""
  x = 3.0 + 0.5 * jax.random.normal(jax.random.key(5), (4, 4, 6, 6, 16))
  results = []
  for fast in (True, False):
    bn = BatchNorm(momentum=0.9, epsilon=1e-5, use_fast_variance=fast)
    variables = bn.init(jax.random.key(1), x, use_running_average=True)

    def loss(params, x, bn=bn, variables=variables):
      y, stats = bn.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                          use_running_average=False, mutable=["batch_stats"])
      return jnp.sum(jnp.sin(y) * jnp.arange(16)), (y, stats)

    (_, aux), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], x)
    results.append((aux, grads))
  for one, two in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(one, two, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("groups, dtype, relu", [
    (1, jnp.float32, True), (2, jnp.float32, True), (1, jnp.bfloat16, True),
    (2, jnp.bfloat16, True), (1, jnp.float32, False), (1, jnp.bfloat16, False)])
def test_fused_batch_norm_is_flaxs_with_the_same_gradients(groups, dtype, relu):
  """Traced for a GPU or TPU, in training with one-pass statistics of one group: one custom VJP,
  `batch_norm_train`, whose backward recomputes the normalised x (and with `relu` the ReLU's
  mask) from x and the statistics. The same outputs and running statistics as flax's BatchNorm
  (then `nn.relu`), and the same gradients of x, scale and bias (what it saves in memory traffic
  and activations: docs/benchmarks.md, deviceless H100 compiles). With stat_groups > 1
  (autodiff's, measured lighter there) and on CPU the same function, not fused."""
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  key_a, key_b, key_c = jax.random.split(jax.random.key(4), 3)
  x = jnp.concatenate([0.3 + jax.random.normal(key_a, (2, 3, 4, 4, 6)),
                       2.0 + 3.0 * jax.random.normal(key_b, (2, 3, 4, 4, 6))]).astype(dtype)
  probe = jax.random.normal(key_c, x.shape)
  kwargs = dict(momentum=0.9, epsilon=1e-3, stat_groups=groups, dtype=dtype,
                use_fast_variance=True, use_running_average=False)
  module, plain = BatchNorm(relu=relu, **kwargs), BatchNorm(**kwargs)
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(np.shape, module.init(jax.random.key(1), x)) == jax.tree.map(
      np.shape, variables)   # the same variables: checkpoints do not depend on `relu`
  params = {"scale": jnp.linspace(0.5, 1.5, 6), "bias": jnp.linspace(-0.4, 0.4, 6)}

  def loss(module, relu):
    def f(params, x):
      y, stats = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              mutable=["batch_stats"])
      y = jax.nn.relu(y) if relu else y
      return jnp.sum(y.astype(jnp.float32) * probe), (y, stats)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

  with targets.compiling_for("gpu"):
    (value, (y, stats)), grads = loss(module, False)(params, x)
    with norm.fused_relu(False):   # flax's BatchNorm, then nn.relu: autodiff
      (value_ref, (y_ref, stats_ref)), grads_ref = loss(plain, relu)(params, x)
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
  jax.tree.map(np.testing.assert_array_equal, stats, stats_ref)
  np.testing.assert_allclose(value, value_ref, rtol=1e-6)
  # The gradients against float32 autodiff of BatchNorm (and ReLU) (the same x: bf16 values are
  # float32 ones): within float32 rounding; in bf16 within the output's rounding to bf16 (the
  # fused backward computes in float32, autodiff of the bf16 module partly in bf16)
  exact = BatchNorm(**dict(kwargs, dtype=jnp.float32))
  _, grads_f32 = loss(exact, relu)(params, x.astype(jnp.float32))
  tol = 1e-5 if dtype == jnp.float32 else 1e-2
  if groups > 1:   # not fused: autodiff's program, the same gradients
    jax.tree.map(np.testing.assert_array_equal, grads, grads_ref)
  for got, want, plain_bf16 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_f32),
                                   jax.tree.leaves(grads_ref)):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)
    # and no further from them than the unfused module's own gradients
    assert np.max(np.abs(got - want)) <= np.max(np.abs(np.asarray(plain_bf16, np.float32) - want)
                                                ) + 1e-6 * scale
  # fused only where it applies: a GPU or TPU, one group, one-pass statistics, training; else
  # flax's form (and nn.relu)
  forward = lambda module: str(jax.make_jaxpr(   # noqa: E731
      lambda p, x: module.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                                mutable=["batch_stats"]))(params, x))
  for platform in ("gpu", "tpu"):
    with targets.compiling_for(platform):
      assert ("custom_vjp_call" in forward(module)) == (groups == 1)
      assert "custom_vjp_call" not in forward(BatchNorm(relu=relu, **dict(
          kwargs, use_fast_variance=False)))
      with norm.fused_relu(False):   # bench --variants bn_relu=plain
        assert "custom_vjp_call" not in forward(module)
      with bench_step.conv_overrides(bench_step.parse_variant("bn_relu=plain")):
        assert "custom_vjp_call" not in forward(module)
  assert "custom_vjp_call" not in forward(module)   # the CPU's step: flax's BatchNorm
  np.testing.assert_array_equal(
      BatchNorm(relu=True, **dict(kwargs, use_running_average=True)).apply(variables, x),
      jax.nn.relu(BatchNorm(**dict(kwargs, use_running_average=True)).apply(variables, x)))


def test_r2plus1d_traced_for_gpu_trains_alike_with_and_without_the_fused_relu():
  """The R(2+1)D network as a GPU step traces it (native convs, one-pass statistics, its
  BatchNorms, with or without a ReLU, as `batch_norm_train`), run here: the same loss, gradients
  and running statistics as the same trace with autodiff's BatchNorm and ReLU
  (`fused_relu(False)`)."""
  from darkjax import models, targets  # pylint: disable=import-outside-toplevel
  model = models.build("r2plus1d_tiny_test", 5)
  clips = jax.random.normal(jax.random.key(5), (2, 4, 32, 32, 3))
  labels = jnp.array([1, 3])
  variables = model.init(jax.random.key(6), clips, train=False)

  def run(fused):
    def loss(params):
      (logits, _), updates = model.apply({**variables, "params": params}, clips, train=True,
                                         mutable=["batch_stats"])
      return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(2), labels]), updates
    with targets.compiling_for("gpu"), norm.fused_relu(fused), conv.record_lowerings() as chosen:
      forward = str(jax.make_jaxpr(loss)(variables["params"]))
      out = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    assert chosen["conv3d:native"] > 0 and "conv3d:frames2d" not in chosen, chosen
    # every BatchNorm (one group each), with or without its ReLU, fused or none
    batch_norms = sum(path[-1].key == "scale" for path, _ in
                      jax.tree_util.tree_leaves_with_path(variables["params"]))
    assert batch_norms > 2 + 3 * sum(model.stage_sizes)   # the (2+1)D pairs' and the others
    assert forward.count("custom_vjp_call") == (batch_norms if fused else 0), forward.count(
        "custom_vjp_call")
    return out

  (value, stats), grads = run(True)
  (value_ref, stats_ref), grads_ref = run(False)
  np.testing.assert_allclose(value, value_ref, rtol=1e-6)
  for got, want in zip(jax.tree.leaves((grads, stats)), jax.tree.leaves((grads_ref, stats_ref))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(want))))
