"""Train step pieces: gradient accumulation, NaN guard, optimizers and schedules, partition rules,
mixed precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import common
from darkjax import config as config_lib
from darkjax import optim, sharding, targets
from darkjax.models import small3d
from darkjax import step as step_lib


class LinearTask:
  """A least-squares model: per-example gradients are exact, so accumulation must be exact."""

  def loss_fn(self, params, model_state, batch, rng, progress):
    del rng, progress
    pred = batch["x"] @ params["w"]
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, (model_state, {"mean_pred": jnp.mean(pred)})


def _state(tx, params):
  return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state={},
                          opt_state=tx.init(params))


def test_gradient_accumulation_equals_one_big_batch():
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
  params = {"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  tx = optax.sgd(0.1, momentum=0.9)
  results = []
  for accum in (1, 2, 4):
    step = jax.jit(step_lib.make_train_step(LinearTask(), tx, lambda s: 0.1, 10, accum))
    state, metrics = step(_state(tx, params), batch, jax.random.key(0))
    results.append((state.params["w"], metrics["train/loss"], metrics["train/mean_pred"]))
  for w, loss, mean_pred in results[1:]:
    np.testing.assert_allclose(w, results[0][0], rtol=1e-6)
    np.testing.assert_allclose(loss, results[0][1], rtol=1e-6)
    np.testing.assert_allclose(mean_pred, results[0][2], rtol=1e-6)


class RunningMeanTask:
  """A BatchNorm-like running mean (momentum 0.9) of the batch's inputs, beside the linear loss."""

  def loss_fn(self, params, model_state, batch, rng, progress):
    loss, (_, aux) = LinearTask().loss_fn(params, model_state, batch, rng, progress)
    mean = 0.9 * model_state["batch_stats"]["mean"] + 0.1 * jnp.mean(batch["x"], axis=0)
    return loss, ({"batch_stats": {"mean": mean}}, aux)


def test_accumulated_micro_batches_update_running_statistics_once():
  """With gradient accumulation the running statistics take one update from the micro-batches'
  mean statistics, as one batch of them all: chained per micro-batch they took k updates."""
  rng = np.random.default_rng(1)
  batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
  params = {"w": jnp.zeros((3,), jnp.float32)}
  tx = optax.sgd(0.1)
  start = {"batch_stats": {"mean": jnp.ones((3,), jnp.float32)}}
  means = []
  for accum in (1, 2, 4):
    state = _state(tx, params).replace(model_state=start)
    step = jax.jit(step_lib.make_train_step(RunningMeanTask(), tx, lambda s: 0.1, 10, accum))
    state, _ = step(state, batch, jax.random.key(0))
    means.append(np.asarray(state.model_state["batch_stats"]["mean"]))
  np.testing.assert_allclose(means[0], 0.9 + 0.1 * np.mean(np.asarray(batch["x"]), axis=0),
                             rtol=1e-6)
  for mean in means[1:]:
    np.testing.assert_allclose(mean, means[0], rtol=1e-6)


def test_nonfinite_step_keeps_previous_state():
  tx = optax.sgd(0.1)
  params = {"w": jnp.ones((3,))}
  batch = {"x": jnp.full((2, 3), jnp.nan), "y": jnp.zeros((2,))}
  step = jax.jit(step_lib.make_train_step(LinearTask(), tx, lambda s: 0.1, 10, 1))
  state, metrics = step(_state(tx, params), batch, jax.random.key(0))
  assert bool(metrics["nonfinite"])
  np.testing.assert_array_equal(state.params["w"], params["w"])
  assert int(state.step) == 0   # the schedule's count stays the optimizer's


def _opt(**kw):
  return common.optimizer_block(**kw)


def test_schedules():
  cosine = optim.make_schedule(_opt(lr=1.0, schedule="cosine", warmup_steps=10), 110)
  assert float(cosine(0)) == 0.0 and float(cosine(5)) == pytest.approx(0.5)
  assert float(cosine(10)) == pytest.approx(1.0)
  assert float(cosine(60)) == pytest.approx(0.5, abs=1e-6)
  assert float(cosine(110)) == pytest.approx(0.0, abs=1e-6)
  step = optim.make_schedule(_opt(lr=1.0, schedule="step", decay_boundaries=(0.5, 0.75)), 100)
  assert [float(step(s)) for s in (0, 49, 50, 74, 75)] == pytest.approx([1, 1, .1, .1, .01])
  dann = optim.make_schedule(_opt(lr=0.01, schedule="dann"), 100)
  for s in (0, 30, 100):
    assert float(dann(s)) == pytest.approx(0.01 / (1 + 10 * s / 100) ** 0.75, rel=1e-6)
  with pytest.raises(ValueError, match="valid"):
    optim.make_schedule(_opt(schedule="linear"), 10)


def test_frozen_parameters_do_not_move_and_others_do():
  params = {"backbone": {"w": jnp.ones((2,))}, "head": {"w": jnp.ones((2,))}}
  tx, _ = optim.make_optimizer(_opt(name="adamw", lr=0.1, frozen=("^backbone/",)), 10, params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["backbone"]["w"], params["backbone"]["w"])
  assert not np.allclose(new["head"]["w"], params["head"]["w"])
  with pytest.raises(ValueError, match="freezes every parameter"):
    optim.make_optimizer(_opt(frozen=(".*",)), 10, params)


class TwoLayerTask:
  """x @ backbone -> tanh -> @ head: a frozen backbone still passes gradient to nothing."""

  def loss_fn(self, params, model_state, batch, rng, progress):
    del rng, progress
    hidden = jnp.tanh(batch["x"] @ params["backbone"]["w"])
    pred = hidden @ params["head"]["w"]
    return jnp.mean((pred - batch["y"]) ** 2), (model_state, {})


def test_frozen_leaves_are_not_differentiated():
  rng = np.random.default_rng(0)
  params = {"backbone": {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
            "head": {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
  batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
  cfg = _opt(name="sgd", lr=0.1, momentum=0.0, frozen=("^backbone/",))
  tx, schedule = optim.make_optimizer(cfg, 10, params)
  mask = optim.frozen_mask(params, cfg.frozen)
  assert mask == {"backbone": {"w": True}, "head": {"w": False}}
  assert optim.frozen_mask(params, ()) is None
  steps = {name: step_lib.make_train_step(TwoLayerTask(), tx, schedule, 10, 1, frozen)
           for name, frozen in (("masked", mask), ("unmasked", None))}
  results = {name: jax.jit(step)(_state(tx, params), batch, jax.random.key(0))
             for name, step in steps.items()}
  # The same update either way (the optimizer zeroes the frozen leaf's update)...
  for a, b in zip(jax.tree.leaves(results["masked"][0].params),
                  jax.tree.leaves(results["unmasked"][0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_array_equal(results["masked"][0].params["backbone"]["w"],
                                params["backbone"]["w"])
  # ...but the grad norm is the head's alone, and the backbone's weight gradient is never traced.
  head_grad = jax.grad(lambda w: TwoLayerTask().loss_fn(
      {**params, "head": {"w": w}}, {}, batch, None, None)[0])(params["head"]["w"])
  np.testing.assert_allclose(results["masked"][1]["train/grad_norm"],
                             np.linalg.norm(head_grad), rtol=1e-5)
  assert float(results["unmasked"][1]["train/grad_norm"]) > float(
      results["masked"][1]["train/grad_norm"]) * 1.0001
  np.testing.assert_allclose(results["masked"][1]["train/param_norm"],
                             np.linalg.norm(params["head"]["w"]), rtol=1e-6)
  np.testing.assert_allclose(results["unmasked"][1]["train/param_norm"],
                             np.sqrt(np.sum(params["head"]["w"] ** 2)
                                     + np.sum(params["backbone"]["w"] ** 2)), rtol=1e-6)
  def dots(step):
    jaxpr = jax.make_jaxpr(step)(_state(tx, params), batch, jax.random.key(0))
    return str(jaxpr).count("dot_general")
  assert dots(steps["masked"]) < dots(steps["unmasked"])


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_paired_norms_are_the_two_global_norms(platform):
  """The GPU form (a reduction per pair of leaves) and the others' (two of optax's norm) give
  the gradient norm without the frozen leaves and the norm of the parameters that train."""
  rng = np.random.default_rng(0)
  grads = {"a": jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32),
           "b": {"c": jnp.asarray(rng.normal(size=(7,)), jnp.float32),
                 "frozen": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}}
  params = {"a": jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32),
            "b": {"c": jnp.asarray(rng.normal(size=(7,)), jnp.float32), "frozen": None}}
  with targets.compiling_for(platform):   # a fresh function: jit's trace cache knows no platform
    grad_norm, param_norm = jax.jit(lambda g, p: optim.paired_norms(g, p))(grads, params)
  as64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
  np.testing.assert_allclose(grad_norm, np.sqrt(np.sum(as64(grads["a"]) ** 2)
                                                + np.sum(as64(grads["b"]["c"]) ** 2)), rtol=1e-6)
  np.testing.assert_allclose(param_norm, np.sqrt(np.sum(as64(params["a"]) ** 2)
                                                 + np.sum(as64(params["b"]["c"]) ** 2)),
                             rtol=1e-6)
  with targets.compiling_for(platform):
    zero = optim.paired_norms({"x": jnp.ones(2)}, {"x": None})
  assert [float(v) for v in zero] == [0.0, 0.0]


def test_train_step_for_a_gpu_reduces_each_pair_of_leaves_once():
  """Traced for a GPU the step's two norms are one reduction per trainable leaf (XLA:GPU compiles
  a kernel per distinct reduction), for a CPU two; the frozen leaf's in neither."""
  rng = np.random.default_rng(0)
  params = {"backbone": {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
            "head": {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
                     "b": jnp.zeros((), jnp.float32)}}
  batch = {"x": jnp.zeros((8, 3), jnp.float32), "y": jnp.zeros((8,), jnp.float32)}
  cfg = _opt(name="sgd", lr=0.1, momentum=0.0, frozen=("^backbone/",))
  tx, schedule = optim.make_optimizer(cfg, 10, params)

  def reductions(platform):
    step = step_lib.make_train_step(TwoLayerTask(), tx, schedule, 10, 1,
                                    optim.frozen_mask(params, cfg.frozen))
    with targets.compiling_for(platform):   # a fresh step per platform, as each Trainer makes
      jaxpr = jax.make_jaxpr(step)(_state(tx, params), batch, jax.random.key(0))
    return str(jaxpr).count("reduce_sum[")
  assert reductions("cpu") - reductions("gpu") == 2   # the head's two trainable leaves


def test_partition_rules_and_fsdp_fallback():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  tree = {"params": {"head": {"kernel": jax.ShapeDtypeStruct((64, 10), jnp.float32)},
                     "conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 8, 16), jnp.float32)},
                     "bn": {"scale": jax.ShapeDtypeStruct((16,), jnp.float32)}}}
  shardings = sharding.tree_shardings(mesh, tree, rules=[("head/kernel", (None, None))],
                                      min_fsdp_size=100)
  assert shardings["params"]["head"]["kernel"].spec == P(None, None)   # rule wins
  assert shardings["params"]["conv"]["kernel"].spec == P(None, None, None, None, "fsdp")
  assert shardings["params"]["bn"]["scale"].spec == P()                 # too small
  # a rule without the "params/" prefix shards a parameter and its momentum alike
  state = {"params": {"conv": {"kernel": tree["params"]["conv"]["kernel"]}},
           "opt_state": ({"trace": {"conv": {"kernel": tree["params"]["conv"]["kernel"]}}},)}
  rule = [("conv/kernel$", (None, None, None, "fsdp", None))]
  shardings = sharding.tree_shardings(mesh, state, rules=rule, min_fsdp_size=100)
  assert (shardings["params"]["conv"]["kernel"].spec
          == shardings["opt_state"][0]["trace"]["conv"]["kernel"].spec
          == P(None, None, None, "fsdp", None))
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh({"data": 3, "fsdp": 2})
  with pytest.raises(config_lib.ConfigError, match="unknown axes"):
    sharding.make_mesh({"model": 2})


def test_bfloat16_compute_keeps_float32_params():
  model = small3d.VARIANTS["small3d_tiny"](num_classes=5, dtype=jnp.bfloat16)
  x = jnp.zeros((2, 4, 8, 8, 3), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), x)   # jitted: op by op compiles every op
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables["params"]))
  (logits, out), _ = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                      mutable=["batch_stats"]))(variables, x)
  assert out["stage1"].dtype == jnp.bfloat16 and logits.dtype == jnp.float32


def test_compute_dtype_auto_resolves_per_compile_platform():
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  auto = {"compute_dtype": "auto"}
  assert config_lib.compute_dtype(auto, "cpu") == jnp.float32
  assert config_lib.compute_dtype(auto, "gpu") == config_lib.compute_dtype(auto, "tpu") \
      == jnp.bfloat16
  with targets.compiling_for("tpu"):   # a compile-only accelerator target counts as one
    assert config_lib.compute_dtype(auto) == jnp.bfloat16
  assert config_lib.compute_dtype({"compute_dtype": "float32"}, "tpu") == jnp.float32  # explicit
  assert config_lib.compute_dtype({"compute_dtype": "bfloat16"}, "cpu") == jnp.bfloat16
  config = common.base_config("supervised", total_steps=1)
  assert config.compute_dtype == "auto"
  assert config_lib.resolve(config, "gpu").compute_dtype == "bfloat16"
  assert config_lib.resolve(config, "cpu").compute_dtype == "float32"
  with pytest.raises(config_lib.ConfigError, match=r"compute_dtype 'fp8' unknown"):
    config_lib.compute_dtype({"compute_dtype": "fp8"}, "gpu")


class _Small3DTask:
  """small3d_tiny with BatchNorm, cross-entropy on its logits, at a given compute dtype."""

  def __init__(self, dtype):
    self.model = small3d.VARIANTS["small3d_tiny"](num_classes=5, dtype=dtype)

  def loss_fn(self, params, model_state, batch, rng, progress):
    del rng, progress
    from darkjax import losses  # pylint: disable=import-outside-toplevel
    (logits, _), new_state = self.model.apply({"params": params, **model_state}, batch["x"],
                                              train=True, mutable=["batch_stats"])
    return losses.softmax_cross_entropy(logits, batch["y"]), (dict(new_state), {})


def test_bfloat16_step_is_close_to_float32_and_keeps_float32_state():
  x = jax.random.uniform(jax.random.key(1), (4, 4, 16, 16, 3))
  batch = {"x": x, "y": jnp.array([0, 1, 2, 3])}
  tx = optax.adam(1e-3)
  results = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    task = _Small3DTask(dtype)
    variables = jax.jit(task.model.init)(jax.random.key(0), x)
    state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                                model_state={"batch_stats": variables["batch_stats"]},
                                opt_state=jax.jit(tx.init)(variables["params"]))
    step = jax.jit(step_lib.make_train_step(task, tx, lambda s: 1e-3, 10, 1))
    results[dtype] = step(state, batch, jax.random.key(0))
  (state32, m32), (state16, m16) = results[jnp.float32], results[jnp.bfloat16]
  # Loss reduction (cross-entropy) in float32, near the float32 step's loss.
  assert m16["train/loss"].dtype == jnp.float32
  np.testing.assert_allclose(m16["train/loss"], m32["train/loss"], rtol=2e-2)
  assert not np.array_equal(m16["train/loss"], m32["train/loss"])   # bf16 did compute
  # Parameters, optimizer state and BatchNorm statistics stay float32.
  for tree in (state16.params, state16.opt_state, state16.model_state):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree) if leaf.dtype.kind == "f"} == \
        {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(
      jax.tree.leaves(state16.model_state)[0], jax.tree.leaves(state32.model_state)[0],
      rtol=5e-2, atol=5e-3)


def test_a_frozen_pattern_that_matches_no_parameter_names_itself():
  """A typo in `optimizer.frozen` would otherwise train what it means to freeze."""
  params = {"backbone": {"conv": {"kernel": jnp.ones((2,))}}, "head": {"kernel": jnp.ones((2,))}}
  with pytest.raises(config_lib.ConfigError, match=r"config\.optimizer\.frozen: \['\^bakbone/'\] "
                                                   r"match no parameter path \(paths look like "
                                                   r"backbone/conv/kernel, head/kernel"):
    optim.make_optimizer(_opt(frozen=("^backbone/", "^bakbone/")), 10, params)
  tx, _ = optim.make_optimizer(_opt(frozen=("^backbone/",)), 10, params)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert not updates["backbone"]["conv"]["kernel"].any() and updates["head"]["kernel"].all()


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_decay_exclude_leaves_matched_parameters_undecayed(name):
  """`optimizer.decay_exclude`: the matched paths (biases, norm scales) get no weight decay; the
  others decay as without it, with and without frozen parameters; a regex matching nothing, or
  excluding with no weight decay, is a ConfigError."""
  params = {"backbone": {"conv": {"kernel": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)}},
            "head": {"kernel": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)}}
  zero = jax.tree.map(jnp.zeros_like, params)   # no gradient: the update is the decay alone

  def update(**kwargs):
    cfg = _opt(name=name, lr=0.1, weight_decay=0.5, schedule="constant", **kwargs)
    tx, _ = optim.make_optimizer(cfg, 10, params)
    return tx.update(zero, tx.init(params), params)[0]

  everything = update()
  assert all(np.all(np.asarray(u) < 0) for u in jax.tree.leaves(everything))
  excluded = update(decay_exclude=("bias$",))
  for path in (("backbone", "conv", "bias"), ("head", "bias")):
    leaf = excluded
    for key in path:
      leaf = leaf[key]
    assert not np.asarray(leaf).any(), path
  np.testing.assert_array_equal(excluded["head"]["kernel"], everything["head"]["kernel"])
  np.testing.assert_array_equal(excluded["backbone"]["conv"]["kernel"],
                                everything["backbone"]["conv"]["kernel"])
  both = update(decay_exclude=("bias$",), frozen=("^backbone/",))
  assert not np.asarray(both["backbone"]["conv"]["kernel"]).any()
  assert not np.asarray(both["head"]["bias"]).any()
  np.testing.assert_array_equal(both["head"]["kernel"], everything["head"]["kernel"])
  with pytest.raises(config_lib.ConfigError, match=r"decay_exclude: \['scale\$'\] match no "
                                                   r"parameter path"):
    update(decay_exclude=("bias$", "scale$"))
  with pytest.raises(config_lib.ConfigError, match="weight_decay is 0: nothing decays"):
    optim.make_optimizer(_opt(name=name, decay_exclude=("bias$",)), 10, params)
