"""The train step that `python -m darkjax.tools.bench --model M` times or compiles (the CLI:
darkjax/tools/bench.py): a model zoo network's full step (softmax cross-entropy, BatchNorm
statistics updated, SGD-momentum or AdamW as `bench_torch.OPTIMIZERS`, as on the torch side), the
settings one `--variants` spec names (`parse_variant`) and how they apply while the step is traced
(`conv_overrides`), and the step compiled on the local devices and run (`flax_step`)."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator
from unittest import mock

from darkjax import profiling, targets
from darkjax.layers import conv, conv2d, norm
from darkjax.tools import bench_torch
from darkjax.tools.measure import memory_bytes, step_runner

NUM_CLASSES = bench_torch.NUM_CLASSES

VARIANT_KEYS = ("lowering", "kernel_grad", "ynn_min_core_use", "bn_relu", "max_pool",
                "align_channels", "pointwise", "group_bundle", "donate")
MAX_POOLS = ("native", "separable")   # conv.max_pool3d's lowerings, for choose_pool_lowering
BN_RELU = ("fused", "plain")   # norm.BatchNorm: batch_norm_train where it applies, or autodiff
# conv.pointwise_gemms: a GPU's (1, 1, 1) convs as cuDNN convolutions or as GEMMs
POINTWISE = ("conv", "gemm")
ALIGN_CHANNELS = ("on", "off")   # conv.aligned_conv: a GPU's 16-bit convs' channels padded or not
DONATE = ("on", "off")   # the step's state (parameters, statistics, optimizer) donated or not


def variant_specs(variants: str) -> list[str]:
  """`--variants`' specs: its ';'-separated items, stripped, empty ones left out."""
  return [spec.strip() for spec in variants.split(";") if spec.strip()]


def parse_variant(spec: str) -> dict[str, Any]:
  """'auto' -> {}; 'lowering=sum2d,kernel_grad=dots' -> {'lowering': 'sum2d', ...};
  'model.stem_lowering=native' -> {'model_kwargs': {'stem_lowering': 'native'}}."""
  settings: dict[str, Any] = {}
  for item in filter(None, spec.strip().split(",")):
    if item == "auto":
      continue
    key, sep, value = item.partition("=")
    if sep and key.startswith("xla_"):   # an XLA debug option for this variant's compile
      settings.setdefault("compiler_options", {})[key] = _option_value(value.replace("+", ","))
      continue
    if sep and key.startswith("model.") and key[len("model."):].isidentifier():
      settings.setdefault("model_kwargs", {})[key[len("model."):]] = _option_value(value)
      continue
    if not sep or key not in VARIANT_KEYS:
      raise ValueError(f"variant {spec!r}: {item!r} is not 'auto', xla_OPTION=VALUE, "
                       f"model.FIELD=VALUE or one of "
                       f"{', '.join(k + '=...' for k in VARIANT_KEYS)}")
    choices = {"lowering": conv.LOWERINGS, "kernel_grad": conv.KERNEL_GRADS,
               "bn_relu": BN_RELU, "max_pool": MAX_POOLS,
               "align_channels": ALIGN_CHANNELS, "pointwise": POINTWISE,
               "donate": DONATE}.get(key)
    if choices is not None and value not in choices:
      raise ValueError(f"variant {spec!r}: {key}={value!r}, expected one of {choices}")
    if key == "group_bundle" and not value.isdigit():
      raise ValueError(f"variant {spec!r}: group_bundle={value!r}, expected a channel count")
    settings[key] = (float(value) if key == "ynn_min_core_use"
                     else int(value) if key == "group_bundle" else value)
  return settings


def check_applied(settings: dict[str, Any], lowerings: dict[str, int]) -> None:
  """A ValueError where a variant's `max_pool=` did not reach every pool of the traced step: it
  replaces the `auto` choice, and a model that picks its pools itself (C3D's `lowering=native`
  makes them `nn.max_pool`) keeps its own, so that variant would time something else."""
  wanted = settings.get("max_pool")
  pools = sorted({name.split(":", 1)[1] for name in lowerings if name.startswith("max_pool3d:")})
  if wanted and any(pool != wanted for pool in pools):
    raise ValueError(f"max_pool={wanted} did not apply: the step's pools are {pools} (the model "
                     f"chose them under its lowering; drop max_pool= or the lowering)")


def donated(settings: dict[str, Any]) -> tuple[int, ...]:
  """The step's donated arguments: its state (parameters, BatchNorm statistics, optimizer state),
  as every darkjax.train step donates it, or none for a `donate=off` variant."""
  return () if settings.get("donate") == "off" else (0, 1, 2)


def _option_value(text: str) -> bool | int | str:
  """An XLA option's value as jax's compiler_options takes it: true/false, an integer, or text."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  try:
    return int(text)
  except ValueError:
    return text


@contextlib.contextmanager
def conv_overrides(settings: dict[str, Any]) -> Iterator[None]:
  """conv's auto kernel-gradient and max-pool choices, YNN_MIN_CORE_USE, BatchNorm+ReLU's
  fusion (`norm.fused_relu`), a GPU's conv channel padding (`conv.align_channels`), its (1, 1, 1)
  convs' form (`conv.pointwise_gemms`) and its grouped convs' groups (`conv.gpu_group_bundle`)
  replaced while a step is traced."""
  with contextlib.ExitStack() as stack:
    if "max_pool" in settings:
      stack.enter_context(mock.patch.object(
          conv, "choose_pool_lowering", lambda *_, value=settings["max_pool"]: value))
    if "bn_relu" in settings:
      stack.enter_context(norm.fused_relu(settings["bn_relu"] == "fused"))
    if "align_channels" in settings:
      stack.enter_context(conv.align_channels(settings["align_channels"] == "on"))
    if "pointwise" in settings:
      stack.enter_context(conv.pointwise_gemms(settings["pointwise"] == "gemm"))
    if "group_bundle" in settings:
      stack.enter_context(conv.gpu_group_bundle(settings["group_bundle"]))
    if "kernel_grad" in settings:
      stack.enter_context(mock.patch.object(
          conv, "choose_kernel_grad", lambda *_, value=settings["kernel_grad"]: value))
    if "ynn_min_core_use" in settings:
      stack.enter_context(mock.patch.object(conv2d, "YNN_MIN_CORE_USE",
                                            settings["ynn_min_core_use"]))
    yield


def step_fn(model: Any, tx: Any) -> Callable[..., Any]:
  """The benchmarked train step: cross-entropy, BatchNorm statistics updated, `tx`'s update
  (the same on the torch side: bench_torch)."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  def step(params, batch_stats, opt_state, clips, labels, rng):
    def loss_and_stats(params):
      (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats}, clips,
                                         train=True, mutable=["batch_stats"],
                                         rngs={"dropout": rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates.get("batch_stats", {})
    (loss, new_stats), grads = jax.value_and_grad(loss_and_stats, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss
  return step



def build_model(model_name: str, dtype: str, lowering: str | None,
                 settings: dict[str, Any] | None = None, remat: bool | str = "none") -> Any:
  """The benchmarked model: every Conv3D at `lowering` (a variant's own `lowering=` wins), the
  remat policy, and a variant's `model.FIELD=VALUE` fields (`parse_variant`); a field the model
  does not have is a ValueError naming the fields."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from darkjax import models  # pylint: disable=import-outside-toplevel
  from darkjax.layers import remat as remat_lib  # pylint: disable=import-outside-toplevel

  settings = settings or {}
  lowering = settings.get("lowering", lowering)
  kwargs: dict[str, Any] = {} if lowering is None else {"conv_lowering": lowering}
  if remat_lib.enabled(remat):
    kwargs["remat"] = remat_lib.policy_name(remat)
  kwargs.update(settings.get("model_kwargs", {}))
  try:
    return models.build(model_name, NUM_CLASSES, dtype=jnp.dtype(dtype), **kwargs)
  except TypeError as e:   # a model.FIELD the model does not have
    raise ValueError(f"bench: {model_name} does not take {sorted(kwargs)}: {e}") from e


def abstract_state(model: Any, shape: tuple[int, ...], optimizer: str) -> tuple[Any, Any, Any]:
  """(variables, optimizer, its state) of `model` for clips of `shape`, as shapes
  (`jax.eval_shape`): nothing is initialised."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape),
                                                train=False))
  tx = bench_torch.optax_optimizer(optimizer)
  return variables, tx, jax.eval_shape(tx.init, variables["params"])


def flax_step(model_name: str, batch: int, frames: int, size: int, lowering: str | None,
               devices: int = 1, conv_settings: dict[str, Any] | None = None,
               remat: bool | str = "none", dtype: str = "float32", optimizer: str = "sgd"):
  """((compile wall s, compile CPU s), callable running one step and blocking on its result).

  With `devices` > 1 the batch is split over that many (host) devices, data parallel.
  `conv_settings`: a `parse_variant` result (its lowering overrides `lowering`).
  """
  import jax
  import jax.numpy as jnp

  conv_settings = conv_settings or {}
  model = build_model(model_name, dtype, lowering, conv_settings, remat)
  if len(jax.devices()) < devices or batch % devices:
    raise SystemExit(f"bench: --devices {devices} needs that many jax devices (found "
                     f"{len(jax.devices())}) and --batch divisible by it")
  mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:devices])
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  clips = jax.device_put(
      jax.random.normal(jax.random.key(1), (batch, frames, size, size, 3), jnp.float32),
      batch_sharding)
  labels = jax.device_put(jnp.arange(batch) % NUM_CLASSES, batch_sharding)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  variables = jax.jit(lambda: model.init(jax.random.key(0), clips, train=False),
                      out_shardings=replicated)()
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = bench_torch.optax_optimizer(optimizer)
  opt_state = jax.jit(tx.init)(params)   # one compile, not one per parameter shape
  rng = jax.random.key(2)
  jitted = jax.jit(step_fn(model, tx), donate_argnums=donated(conv_settings))
  jax.clear_caches()  # conv choices act at trace time: no trace of another variant is reused
  start, start_cpu = time.perf_counter(), time.process_time()
  with conv_overrides(conv_settings), conv.record_lowerings() as chosen:
    lowered = jitted.lower(params, batch_stats, opt_state, clips, labels, rng)
  check_applied(conv_settings, chosen)
  # What every darkjax.train step compiles with here (on CPU the remat policies take effect only
  # under them; on GPU channels-last convolutions), and the variant's own.
  options = {**targets.compiler_options(),
             **conv_settings.get("compiler_options", {})}
  compiled = lowered.compile(compiler_options=options)
  compile_s = (time.perf_counter() - start, time.process_time() - start_cpu)
  state = [params, batch_stats, opt_state, None]

  def dispatch() -> None:
    state[0], state[1], state[2], state[3] = compiled(*state[:3], clips, labels, rng)

  run_step = step_runner(dispatch, lambda: jax.block_until_ready(state))
  run_step.compiled = compiled
  with conv_overrides(conv_settings):   # the global batch's, after the compile's clock
    run_step.flops = profiling.step_flops(jitted, params, batch_stats, opt_state, clips, labels,
                                          rng)
  run_step.memory = memory_bytes(compiled)
  run_step.lowerings = dict(sorted(chosen.items()))
  return compile_s, run_step

