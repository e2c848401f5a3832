r"""Benchmarks. Train-step speed of a model zoo network, optionally against PyTorch:

    python -m darkjax.tools.bench --model resnext3d_101 --frames 64 --memory [--compile-only]
    python -m darkjax.tools.bench --model r2plus1d_18 --vs-torch [--batch 2] [--frames 16]
        [--size 112] [--steps 5] [--rounds 3] [--compile-only] [--devices 1] [--lowering auto]
        [--dtype float32|bfloat16] [--optimizer sgd|adamw] [--torch-layout channels_last_3d]
        [--torch-compile [--torch-compile-modes default,max-autotune-no-cudagraphs]]
        [--json OUT.json] [--variants "auto;lowering=sum2d;kernel_grad=dots;ynn_min_core_use=0"]
        [--profile STEPS] [--concurrent N] [--cold-from PRE_PASS.json ...]
    python -m darkjax.tools.bench --model resnext3d_101 --batch 8 --frames 64 --dtype bfloat16 \
        --target h100:1 [--variants "auto;bn_relu=plain"]     # compiled for it, nothing run
    python -m darkjax.tools.bench --markdown-from OUT.json [MORE.json ...]
    python -m darkjax.tools.bench --autotune-log XLA_AUTOTUNE_LOG.textproto [MORE ...]

Times a full train step (forward + backward + optimizer update, BatchNorm in train mode) of
`darkjax.models.build(--model, 400)` computing in `--dtype` (parameters float32): compile time
(lower + XLA compile, no persistent cache) and the steady-state time per step. The update is
`--optimizer`: SGD momentum 0.9 or AdamW, with the numbers of `bench_torch.OPTIMIZERS` on both
sides. With `--vs-torch` the same step (softmax cross-entropy, optimizer, batch) runs in PyTorch
on the device JAX uses (`darkjax/tools/bench_torch.py`: torchvision's r3d_18 / mc3_18 /
r2plus1d_18 or the references of `darkjax.tools.torch_refs`): on CUDA with
`cudnn.benchmark = True`; on any device in the `channels_last_3d` memory format (`--torch-layout
contiguous`: the layout of the CPU tables in docs/benchmarks.md dated before --torch-layout
existed) and, for bfloat16, under bf16 autocast; on CPU with `torch.set_num_threads` = the cores
JAX uses. `--torch-compile` adds `torch.compile(step)` in each of `--torch-compile-modes`; the
faster compiled mode is the reference. Compile times are reported apart from step times: flax's
AOT compile, each compiled torch step's first call (a cold compile in a fresh inductor cache
unless TORCHINDUCTOR_CACHE_DIR is set). All sides' rounds alternate; per side the best round is
printed with each round's median, and CPU time (all threads), which is less sensitive than wall
time to other load on the machine; the per-round ratios set each flax round against the torch
rounds right after it. `--json OUT` writes the result with its command, date, devices and
versions; in it each side has its step ms (median over rounds, min, max) and compile seconds, and
`ratios` are medians of per-round ratios (`reference`: flax / the faster compiled mode).
`--markdown-from` prints the docs/benchmarks.md table of such files (`bench_report.py`), and
one of `--config` results among them. `--autotune-log` summarises XLA's GPU autotuning logs
(`darkjax/tools/autotune_log.py`): where a cold GPU compile's time goes.
`--compile-only` stops after compiling (with `--vs-torch` every side: the torch steps by their first
call) and records `--concurrent N` (how many such commands compiled at once); a later timed run
of the same row that compiles from the caches it filled (JAX_COMPILATION_CACHE_DIR,
TORCHINDUCTOR_CACHE_DIR) takes its JSON as `--cold-from` and records those figures as the cold
compiles (`cold_compile`), its own as warm starts; the table then shows the cold ones.
`--devices N` splits the batch over N host devices (data parallel,
`--xla_force_host_platform_device_count`).

On one GPU, issue #34's table (every paper backbone at its paper batch, bf16, against eager
torch and torch.compile, flax variants beside) is one process per row, then the table from their
JSON: `bash launch/bench_gpu.sh OUT_DIR` runs it, the paper configs' steps and the warm start
(`--optimizer adamw` for the AdamW rows); within a short lease, with its compile pre-pass
(`DARKJAX_BENCH_JOBS`) and a deadline (launch/bench_gpu.sh). The issue's Done-when table alone,
sized for one lease (no levers' variants, no profiles): `DARKJAX_BENCH_DEADLINE_S=520 bash
launch/bench_gpu.sh OUT_DIR table`, then the same command again on the same machine to finish
what the deadline cut. JAX and torch share the GPU: with
`--vs-torch` JAX allocates as it needs (XLA_PYTHON_CLIENT_PREALLOCATE=false unless set).

`--variants` times the step under several conv settings of `darkjax.layers.conv` in the same
process, in alternating rounds, each against the first: `auto` (the defaults), or comma-separated
`lowering=` (every Conv3D, as `--lowering`), `kernel_grad=` (instead of `choose_kernel_grad`),
`ynn_min_core_use=` (`conv2d.YNN_MIN_CORE_USE`; 0 keeps every conv on YNNPACK),
`bn_relu=fused|plain` (each BatchNorm, with its ReLU, as one custom VJP where it applies, the
default on GPU and TPU, or autodiff of flax's: `darkjax.layers.norm`), `max_pool=native|separable`
(every auto max pool as `nn.max_pool` or as running maxima of strided slices, instead of
`conv.choose_pool_lowering`; an error where the model picks a pool itself, as C3D and the
ResNets do under `lowering=native`), `align_channels=on|off` (a GPU's 16-bit convolutions with their
channels zero-padded to multiples of 8, the default, or as they are: `conv.aligned_conv`),
`pointwise=conv|gemm` (a GPU's (1, 1, 1) ungrouped convolutions as XLA's, the default, or as
matmuls over channels, GEMMs: `conv.pointwise_gemms`), `group_bundle=N` (a GPU's grouped
convolutions with their groups bundled up to N input channels a group, block-diagonal kernels,
16 by default, 0 as they are: `conv.gpu_group_bundle`), `donate=on|off` (the step's state
donated to its outputs, as every darkjax.train step does, or copied: XLA's `alias` bytes in the
variant's memory analysis are what donation saves), a field
of the model as `model.FIELD=VALUE` (e.g. `model.stem_lowering=native`: 3D-ResNeXt's stem as
XLA's 3D convolution), and any XLA option as
`xla_NAME=VALUE` (that variant's compiler_options, e.g. `xla_gpu_force_conv_nhwc=true`; a list
value joins its items with `+`, e.g. `xla_gpu_enable_command_buffer=FUSION+CONVOLUTION`, and an
empty one clears the list).
With `--torch-compile` the first variant is the flax side of the table and each other one a side
of its own, with its per-round ratio to flax (`variants` in the JSON; the table shows each against
the best torch.compile). Without it the variants are a row's levers, flax alone: `--pipelined`,
`--profile` and `--cold-from` apply to each, and `--markdown-from` renders them as a lever table
(`bench_report.lever_table`; `launch/bench_gpu.sh` with DARKJAX_BENCH_TORCH=0).
`--profile STEPS` traces that many steps of each flax side after the rounds
(`measure.device_profile`): device ms per step by op kind (convolutions per direction,
transposes, fusions, XLA:GPU's command buffers), the top ops, the convolutions' layouts as XLA
chose them (`dim_labels`), and each convolution's kernel and output shapes and TFLOP/s.

Each timed row also records XLA's count of the flax step's floating-point operations
(`flops_per_step`: the model's own, `profiling.step_flops`, a multiply-add as two) and each
side's TFLOP/s per device and share of the device's dense bf16 peak (`utilisation`,
`darkjax.aot.PEAK_BF16_TFLOPS`; the table's "flax TFLOP/s per device" column). `--count-flops
PLATFORM` only counts: the step traced for PLATFORM on abstract arguments, nothing compiled, so a
CPU host counts a GPU row's operations; `--markdown-from` gives such a count's figure to a row
timed without one. `--target T` compiles the step for a compile-only target (darkjax.aot) under
each of `--variants`, nothing run: XLA's memory and traffic per form, on any host.

Measured figures (ratios against torch, compile times, what was tried) are in docs/benchmarks.md,
each with its command, date and machine. Profiling a step: `jax.profiler` traces show each XLA
thunk per thread.

A paper config's own train step at its own size (phase, optimizer, sharding as `darkjax.main`
compiles it; cold compile time, memory per remat policy, step time): `--config`, see
`darkjax/tools/bench_config.py`.

Depthwise conv lowerings (the enhancers' ShuffleNet units): `--depthwise`, see
`darkjax/layers/depthwise.py`.

Input pipeline throughput: `--input --config` times a paper config's own train pipeline from
records to the augmented batch (clips/s, clips per CPU-second, host cores to keep one H100 busy),
see `darkjax/tools/bench_input_config.py`; `--input` alone compares records with decoding video
per sample, see `darkjax/tools/bench_input.py`. Optical-flow methods (ms per frame pair,
end-point error on clips of known flow): `--flow`, see `darkjax/tools/bench_flow.py`. The CLI
picks one benchmark per run (`--config` alone, or with `--input`); each has an entry in
`_BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any, Callable, Iterator
from unittest import mock

from darkjax import profiling, targets
from darkjax.layers import conv, conv2d, norm
from darkjax.tools import bench_report, bench_torch
from darkjax.tools.measure import (alternating_rounds, autotuned, compare_policies,
                                   device_profile, format_autotuned, pipelined_rounds,
                                   step_runner, format_lowerings, format_traffic, hlo_traffic,
                                   median, memory_bytes, remat_policies, report, time_steps)
from darkjax.layers.conv import configure_cpu_flags
from darkjax.profiling import format_flops, format_summary, format_utilisation

NUM_CLASSES = bench_torch.NUM_CLASSES


VARIANT_KEYS = ("lowering", "kernel_grad", "ynn_min_core_use", "bn_relu", "max_pool",
                "align_channels", "pointwise", "group_bundle", "donate")
MAX_POOLS = ("native", "separable")   # conv.max_pool3d's lowerings, for choose_pool_lowering
BN_RELU = ("fused", "plain")   # norm.BatchNorm: batch_norm_train where it applies, or autodiff
# conv.pointwise_gemms: a GPU's (1, 1, 1) convs as cuDNN convolutions or as GEMMs
POINTWISE = ("conv", "gemm")
ALIGN_CHANNELS = ("on", "off")   # conv.aligned_conv: a GPU's 16-bit convs' channels padded or not
DONATE = ("on", "off")   # the step's state (parameters, statistics, optimizer) donated or not


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


def _check_applied(settings: dict[str, Any], lowerings: dict[str, int]) -> None:
  """A ValueError where a variant's `max_pool=` did not reach every pool of the traced step: it
  replaces the `auto` choice, and a model that picks its pools itself (C3D's `lowering=native`
  makes them `nn.max_pool`) keeps its own, so that variant would time something else."""
  wanted = settings.get("max_pool")
  pools = sorted({name.split(":", 1)[1] for name in lowerings if name.startswith("max_pool3d:")})
  if wanted and any(pool != wanted for pool in pools):
    raise ValueError(f"max_pool={wanted} did not apply: the step's pools are {pools} (the model "
                     f"chose them under its lowering; drop max_pool= or the lowering)")


def _donated(settings: dict[str, Any]) -> tuple[int, ...]:
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
def _conv_overrides(settings: dict[str, Any]) -> Iterator[None]:
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


def _step_fn(model: Any, tx: Any) -> Callable[..., Any]:
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


def _row(args: argparse.Namespace, device: Any = None) -> dict[str, Any]:
  """What names a `--model` row in its JSON: model, batch, clip, dtype and optimizer (what
  `bench_report.read_cold_from` and `--markdown-from`'s matching of counts compare); with the
  `device` it runs on, how it is timed and where."""
  row = {"model": args.model, "batch": args.batch, "frames": args.frames, "size": args.size,
         "dtype": args.dtype, "optimizer": {"name": args.optimizer,
                                            **bench_torch.OPTIMIZERS[args.optimizer]}}
  if device is not None:
    row.update(steps=args.steps, rounds=args.rounds, device=device.platform,
               device_kind=device.device_kind, cores=conv2d.cores(), devices=args.devices)
  return row


def _build_model(model_name: str, dtype: str, lowering: str | None,
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


def _abstract_state(model: Any, shape: tuple[int, ...], optimizer: str) -> tuple[Any, Any, Any]:
  """(variables, optimizer, its state) of `model` for clips of `shape`, as shapes
  (`jax.eval_shape`): nothing is initialised."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape),
                                                train=False))
  tx = bench_torch.optax_optimizer(optimizer)
  return variables, tx, jax.eval_shape(tx.init, variables["params"])


def bench_target(args: argparse.Namespace) -> dict[str, Any]:
  """`--model M --target T`: the benchmarked train step compiled for a compile-only target
  (darkjax.aot: "h100:1", "tpu-v5e:2x2", ...) on abstract arguments, once per `--variants` spec,
  nothing run: each one's compile time, XLA's memory analysis per device, the memory traffic of
  its kernels (`measure.hlo_traffic`: fusions, convolutions, and the operands of its loops), and
  the lowerings its trace chose. The batch is split over the target's devices."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from darkjax import aot  # pylint: disable=import-outside-toplevel

  devices = aot.compile_only_devices(args.target)
  platform = targets.platform_of(devices)
  if args.batch % len(devices):
    raise SystemExit(f"bench: --batch {args.batch} is not divisible by the {len(devices)} "
                     f"devices of --target {args.target}")
  mesh = jax.sharding.Mesh(devices, ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  abstract = lambda tree: jax.tree.map(   # noqa: E731
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), tree)
  shape = (args.batch, args.frames, args.size, args.size, 3)
  specs = [spec.strip() for spec in (args.variants or "auto").split(";") if spec.strip()]
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} train step compiled for {args.target} ({platform}), nothing run",
        flush=True)
  result: dict[str, Any] = {**_row(args), "target": args.target,
                            "device": args.target, "platform": platform,
                            "device_kind": f"compiled for {args.target} ({devices[0].device_kind})"
                                           " on a CPU host, nothing run",
                            "cores": os.cpu_count(), "variants": {}}
  for spec in specs:
    settings = parse_variant(spec)
    with targets.compiling_for(platform), _conv_overrides(settings), \
        conv.record_lowerings() as chosen:
      model = _build_model(args.model, args.dtype, args.lowering, settings)
      with conv2d.recording_paused():   # the step's lowerings only, not the init's
        variables, tx, opt_state = _abstract_state(model, shape, args.optimizer)
      start = time.perf_counter()
      lowered = jax.jit(_step_fn(model, tx), donate_argnums=_donated(settings)).lower(
          abstract(variables["params"]), abstract(variables.get("batch_stats", {})),
          abstract(opt_state), jax.ShapeDtypeStruct(shape, jnp.float32, sharding=split),
          jax.ShapeDtypeStruct((args.batch,), jnp.int32, sharding=split),
          jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated))
    _check_applied(settings, chosen)
    options = {**targets.compiler_options(platform, args.target),
               **settings.get("compiler_options", {})}
    compiled = lowered.compile(compiler_options=options)
    compile_s = time.perf_counter() - start
    text = compiled.as_text()
    traffic, tuned = hlo_traffic(text), autotuned(text)
    memory = memory_bytes(compiled)
    if memory:   # what the step holds per device, as darkjax.fit counts it
      memory["total"] = (memory["argument"] + memory["output"] + memory["temp"]
                         - memory["alias"])
    entry = {"compile_s": compile_s, "memory": memory, "traffic": traffic,
             "lowerings": dict(sorted(chosen.items())), "autotuned": tuned}
    result["variants"][spec] = entry
    held = f"{memory['total'] / 2 ** 30:.2f} GiB per device" if memory else "no memory analysis"
    print(f"  {spec}: compiled in {compile_s:.1f} s, {held}; traffic: {format_traffic(traffic)}"
          f"\n    lowerings: {format_lowerings(entry['lowerings'])}"
          + (f"\n    autotuned on a GPU: {format_autotuned(tuned)}"
             if platform == "gpu" else ""), flush=True)
  return result


def bench_flops(args: argparse.Namespace) -> dict[str, Any]:
  """`--count-flops PLATFORM`: XLA's count of the benchmarked train step's floating-point
  operations (`profiling.step_flops`: a multiply-add as two, scans unrolled) with the
  step traced for PLATFORM (its convolution lowerings: `targets.compiling_for`), on abstract
  arguments: nothing is compiled or run, so any size counts on any host. With a GPU row's step
  time it gives that row's TFLOP/s and share of the device's peak."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  shape = (args.batch, args.frames, args.size, args.size, 3)
  with targets.compiling_for(args.count_flops):
    model = _build_model(args.model, args.dtype, args.lowering)
    clips = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables, tx, opt_state = _abstract_state(model, shape, args.optimizer)
    flops = profiling.step_flops(
        jax.jit(_step_fn(model, tx)), variables["params"], variables.get("batch_stats", {}),
        opt_state, clips, jax.ShapeDtypeStruct((args.batch,), jnp.int32), jax.random.key(2))
  if flops is None:
    raise SystemExit("bench --count-flops: XLA gave no operation count for this program")
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} train step traced for {args.count_flops}: {format_flops(flops)} per "
        f"step, {format_flops(flops / args.batch)} per clip", flush=True)
  return {**_row(args), "traced_for": args.count_flops, "flops_per_step": flops,
          "flops_per_clip": flops / args.batch}


def _flax_step(model_name: str, batch: int, frames: int, size: int, lowering: str | None,
               devices: int = 1, conv_settings: dict[str, Any] | None = None,
               remat: bool | str = "none", dtype: str = "float32", optimizer: str = "sgd"):
  """((compile wall s, compile CPU s), callable running one step and blocking on its result).

  With `devices` > 1 the batch is split over that many (host) devices, data parallel.
  `conv_settings`: a `parse_variant` result (its lowering overrides `lowering`).
  """
  import jax
  import jax.numpy as jnp

  conv_settings = conv_settings or {}
  model = _build_model(model_name, dtype, lowering, conv_settings, remat)
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
  jitted = jax.jit(_step_fn(model, tx), donate_argnums=_donated(conv_settings))
  jax.clear_caches()  # conv choices act at trace time: no trace of another variant is reused
  start, start_cpu = time.perf_counter(), time.process_time()
  with _conv_overrides(conv_settings), conv.record_lowerings() as chosen:
    lowered = jitted.lower(params, batch_stats, opt_state, clips, labels, rng)
  _check_applied(conv_settings, chosen)
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
  with _conv_overrides(conv_settings):   # the global batch's, after the compile's clock
    run_step.flops = profiling.step_flops(jitted, params, batch_stats, opt_state, clips, labels,
                                          rng)
  run_step.memory = memory_bytes(compiled)
  run_step.lowerings = dict(sorted(chosen.items()))
  return compile_s, run_step


def _torch_runs(args: argparse.Namespace, platform: str,
                compile_modes: tuple[str, ...] = ()) -> dict[str, Callable[[], None]]:
  return bench_torch.torch_runs(args.model, args.batch, args.frames, args.size, platform=platform,
                                dtype=args.dtype, optimizer=args.optimizer,
                                compile_modes=compile_modes, layout=args.torch_layout)


def bench_train_step(args: argparse.Namespace) -> dict[str, Any]:
  if args.count_flops:
    return bench_flops(args)
  if args.target:
    return bench_target(args)
  if args.variants is not None and not args.torch_compile:
    return bench_variants(args)
  if args.memory:
    return bench_memory(args)
  if args.torch_compile:   # before minutes of compiling the flax step
    bench_torch.check_compile_modes(args.torch_compile_modes)
  for path in args.cold_from or ():   # likewise: a pre-pass of another row
    bench_report.read_cold_from(path, _row(args))
  # With --torch-compile, --variants' first spec is the flax side and each other one a side of
  # its own ("flax SPEC"), timed in the same alternating rounds.
  specs = ([spec.strip() for spec in args.variants.split(";") if spec.strip()]
           if args.variants is not None else ["auto"])
  def build(spec: str):
    return _flax_step(args.model, args.batch, args.frames, args.size, args.lowering,
                      args.devices, parse_variant(spec), dtype=args.dtype,
                      optimizer=args.optimizer)

  compile_s, flax_run = build(specs[0])
  # A variant that does not compile (an experimental XLA option) is reported, not fatal: the
  # row's other sides are what a short GPU lease came for.
  extra, failed = {}, {}
  for spec in specs[1:]:
    try:
      extra[spec] = build(spec)
    except Exception as error:  # pylint: disable=broad-except
      failed[spec] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
      print(f"  flax {spec}: did not compile ({failed[spec]})", flush=True)
  import jax  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  result: dict[str, Any] = {
      **_row(args, device), "compile_s": compile_s[0], "compile_cpu_s": compile_s[1],
      "lowerings": flax_run.lowerings,
      "flops_per_step": flax_run.flops}
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} on {device.platform} ({device.device_kind}), {conv2d.cores()} cores; "
        f"compile {compile_s[0]:.1f} s wall, {compile_s[1]:.1f} s CPU", flush=True)
  print(f"  lowerings: {format_lowerings(flax_run.lowerings)}", flush=True)
  if args.variants is not None:
    result["flax_variant"] = specs[0]
    result["variants"] = {spec: {"compile_s": c[0], "lowerings": run.lowerings}
                          for spec, (c, run) in extra.items()}
    result["variants"].update({spec: {"error": message} for spec, message in failed.items()})
    for spec, (c, run) in extra.items():
      print(f"  flax {spec}: compile {c[0]:.1f} s wall; lowerings: "
            f"{format_lowerings(run.lowerings)}", flush=True)
  if args.compile_only and not args.vs_torch:
    return bench_report.with_cold_compile(result, args)
  runs = {"flax": flax_run}
  if args.vs_torch:
    runs.update(_torch_runs(args, device.platform,
                            args.torch_compile_modes if args.torch_compile else ()))
    result["torch_device"] = bench_torch.device_name(bench_torch.torch_device(device.platform))
    for name, run in list(runs.items())[1:]:
      what = "compile (first call)" if hasattr(run, "compile_s") else "first call"
      print(f"  {name}: {what} {run.first_call_s:.1f} s", flush=True)
  # Each side's compile (flax's AOT compile; a compiled torch step's first call) and first call.
  compiles = {"flax": {"compile_s": compile_s[0]},
              **{name: {"first_call_s": run.first_call_s,
                        **({"compile_s": run.compile_s} if hasattr(run, "compile_s") else {})}
                 for name, run in list(runs.items())[1:]}}
  if args.compile_only:   # every side compiled, no rounds
    result["sides"] = compiles
    return bench_report.with_cold_compile(result, args)
  variant_runs = {f"flax {spec}": run for spec, (_, run) in extra.items()}
  rounds = alternating_rounds({**runs, **variant_runs}, args.rounds, args.steps)
  width = max(len(name) for name in [*runs, *variant_runs])
  for spec in extra:
    timed = rounds.pop(f"flax {spec}")
    entry = result["variants"][spec]
    entry.update(bench_report.side_summary(timed))
    entry["round_ratios"] = [v[0] / f[0] for v, f in zip(timed, rounds["flax"])]
    entry["ratio"] = median(entry["round_ratios"])
    report(f"flax {spec}".ljust(width), timed)
    print(f"  flax {spec} / flax: per round " +
          ", ".join(f"{r:.3f}" for r in entry["round_ratios"]) +
          f" (median {entry['ratio']:.3f})", flush=True)
  sides = {name: {**bench_report.side_summary(timed), **compiles[name]}
           for name, timed in rounds.items()}
  pipelined = (pipelined_rounds({**runs, **variant_runs}, args.rounds, args.steps)
               if args.pipelined else {})
  for name, timed in pipelined.items():
    entry = sides[name] if name in sides else result["variants"][name[len("flax "):]]
    entry.update(bench_report.pipelined_summary(timed))
  if args.profile:
    result["profiles"] = {}
    for name, run in {"flax": flax_run, **variant_runs}.items():
      result["profiles"][name] = device_profile(run, args.profile, run.compiled.as_text())
      print(f"  {name} profile: " + format_summary(result["profiles"][name]), flush=True)
  result["sides"] = sides
  result["flax_step_s"], result["flax_step_cpu_s"] = report("flax".ljust(width), rounds["flax"])
  bench_report.with_utilisation(result)
  if "utilisation" in sides["flax"]:
    print(f"  XLA counts {format_flops(result['flops_per_step'])} per step: flax "
          f"{format_utilisation(sides['flax']['utilisation'])}", flush=True)
  bench_report.with_cold_compile(result, args)
  if not args.vs_torch:
    return result
  result["torch_step_s"], result["torch_step_cpu_s"] = report("torch".ljust(width), rounds["torch"])
  for name in list(runs)[2:]:
    report(name.ljust(width), rounds[name])
  result["ratio"] = result["flax_step_s"] / result["torch_step_s"]
  result["cpu_ratio"] = result["flax_step_cpu_s"] / result["torch_step_cpu_s"]
  # rounds alternate, so each flax round and the torch rounds after it saw about the same load
  per_round = {name: [f[0] / t[0] for f, t in zip(rounds["flax"], rounds[name])]
               for name in list(runs)[1:]}
  result["round_ratios"] = per_round["torch"]
  result["ratios"] = {name: median(ratios) for name, ratios in per_round.items()}
  print(f"  flax/torch ratio: wall {result['ratio']:.2f}, CPU time {result['cpu_ratio']:.2f}; "
        f"per round " + ", ".join(f"{r:.2f}" for r in result["round_ratios"]) +
        f" (median {result['ratios']['torch']:.2f})", flush=True)
  compiled = list(runs)[2:]
  if compiled:
    reference = min(compiled, key=lambda name: sides[name]["step_ms"])
    result["reference"] = reference
    result["ratios"]["reference"] = result["ratios"][reference]
    for name in compiled:
      print(f"  flax/{name}: per round " + ", ".join(f"{r:.2f}" for r in per_round[name]) +
            f" (median {result['ratios'][name]:.2f})" +
            (" <- reference (faster compiled mode)" if name == reference else ""), flush=True)
  if pipelined:
    bench_report.pipelined_ratios(result, pipelined, list(runs)[1:])
    print(f"  pipelined ({args.steps} steps, one wait): " +
          ", ".join(f"{name} {sides[name]['pipelined_ms']:.1f} ms" for name in runs) +
          "".join(f", flax {spec} {result['variants'][spec]['pipelined_ms']:.1f} ms"
                  for spec in extra) +
          "; flax/" + ", flax/".join(f"{name} {ratio:.2f}" for name, ratio in
                                     result["pipelined_ratios"].items()
                                     if name != "reference"), flush=True)
  if compiled:
    print(f"  compile: flax {compile_s[0]:.1f} s (lower + XLA compile), " +
          ", ".join(f"{name} {sides[name]['compile_s']:.1f} s (first call)" for name in compiled),
          flush=True)
  return result


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
  """The train step compiled without rematerialisation and under each policy of `--remat`
  (darkjax.layers.remat): XLA's memory analysis, compile time, and (unless --compile-only) step
  times in alternating rounds, each policy's per-round ratio to no remat."""
  import jax  # pylint: disable=import-outside-toplevel
  policies = remat_policies(args.remat)
  device = jax.devices()[0]
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype} on "
        f"{device.platform} ({device.device_kind}), memory per remat policy", flush=True)

  def build(policy: str):
    compile_s, run = _flax_step(args.model, args.batch, args.frames, args.size, args.lowering,
                                args.devices, remat=policy, dtype=args.dtype,
                                optimizer=args.optimizer)
    return {"compile_s": compile_s[0], **run.memory}, run

  return {"model": args.model, "device": device.platform, "frames": args.frames,
          "remat": compare_policies(policies, build, args)}


def bench_variants(args: argparse.Namespace) -> dict[str, Any]:
  """The train step under each of `--variants` (and torch with `--vs-torch`), timed in alternating
  rounds; every entry's per-round wall times are divided by the first variant's of that round.
  With `--pipelined` each variant's steps also dispatched back to back (`pipelined_ms`, and
  `pipelined_ratio` to the first's), with `--profile N` each one's device profile (`profile`):
  the levers of a row, flax alone (`bench_report.lever_table`)."""
  import jax  # pylint: disable=import-outside-toplevel
  specs = [spec.strip() for spec in args.variants.split(";") if spec.strip()]
  device = jax.devices()[0]
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} on {device.platform} ({device.device_kind}), {conv2d.cores()} cores, "
        f"{len(specs)} variants", flush=True)
  runs: dict[str, Callable[[], None]] = {}
  result: dict[str, Any] = {**_row(args, device), "variants": {}}
  for spec in specs:
    compile_s, runs[spec] = _flax_step(args.model, args.batch, args.frames, args.size,
                                       args.lowering, args.devices, parse_variant(spec),
                                       dtype=args.dtype, optimizer=args.optimizer)
    result["variants"][spec] = {"compile_s": compile_s[0], "lowerings": runs[spec].lowerings,
                                **runs[spec].memory}
    print(f"  {spec}: step compiled in {compile_s[0]:.1f} s wall, {compile_s[1]:.1f} s CPU; "
          f"lowerings: {format_lowerings(runs[spec].lowerings)}", flush=True)
  if args.compile_only:
    return bench_report.with_cold_compile(result, args)
  if args.vs_torch:
    runs["torch"] = _torch_runs(args, device.platform)["torch"]
    result["variants"]["torch"] = {}
  rounds = alternating_rounds(runs, args.rounds, args.steps)
  first, width = specs[0], max(len(name) for name in runs)
  for name, timed in rounds.items():
    entry = result["variants"][name]
    entry["step_s"], entry["step_cpu_s"] = report(name.ljust(width), timed)
    entry["round_ratios"] = [t[0] / f[0] for t, f in zip(timed, rounds[first])]
    entry["ratio"] = median(entry["round_ratios"])
  for name in list(runs)[1:]:
    ratios = result["variants"][name]["round_ratios"]
    print(f"  {name.ljust(width)} / {first}: wall per round " +
          ", ".join(f"{r:.3f}" for r in ratios) + f" (median {median(ratios):.3f})", flush=True)
  if getattr(args, "pipelined", False):   # dispatched back to back, as training runs them
    pipelined = pipelined_rounds(runs, args.rounds, args.steps)
    for name, timed in pipelined.items():
      entry = result["variants"][name]
      entry.update(bench_report.pipelined_summary(timed))
      entry["pipelined_ratio"] = median([t[0] / f[0] for t, f in zip(timed, pipelined[first])])
      print(f"  {name.ljust(width)} pipelined: {entry['pipelined_ms']:.1f} ms/step "
            f"({entry['pipelined_ratio']:.3f} x {first}'s)", flush=True)
  if args.profile:
    for spec in specs:
      entry = result["variants"][spec]
      entry["profile"] = device_profile(runs[spec], args.profile, runs[spec].compiled.as_text())
      print(f"  {spec} profile: " + format_summary(entry["profile"]), flush=True)
  return bench_report.with_cold_compile(result, args)


def bench_depthwise(args: argparse.Namespace) -> dict[str, Any]:
  """Depthwise 3x3 conv, forward + gradients w.r.t. input and kernel: `native` vs `blockdiag`."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from darkjax.layers.depthwise import depthwise_conv2d  # pylint: disable=import-outside-toplevel
  rows = []
  print(f"depthwise 3x3 conv, batch {args.dw_batch}, fwd + grad, {conv2d.cores()} cores "
        f"(median of {args.steps} steps, best of {args.rounds} rounds)", flush=True)
  for spec in args.dw_shapes.split(";"):
    size, channels, stride = (int(v) for v in spec.split(","))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.dw_batch, size, size, channels), np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, 1, channels), np.float32))
    times = {}
    for lowering in ("native", "blockdiag"):
      step = jax.jit(jax.grad(lambda x, k, lowering=lowering: jnp.sum(depthwise_conv2d(
          x, k, (stride, stride), ((1, 1), (1, 1)), lowering) ** 2), argnums=(0, 1)))
      jax.block_until_ready(step(x, k))
      run = lambda step=step: jax.block_until_ready(step(x, k))
      times[lowering] = min(time_steps(run, args.steps)[0] for _ in range(args.rounds))
    ratio = times["blockdiag"] / times["native"]
    rows.append({"size": size, "channels": channels, "stride": stride, **times, "ratio": ratio})
    print(f"  {size}x{size} {channels:3d} ch stride {stride}: native {times['native'] * 1e3:7.1f} "
          f"ms, blockdiag {times['blockdiag'] * 1e3:7.1f} ms, ratio {ratio:.2f}", flush=True)
  return {"depthwise": rows}


def bench_input(args: argparse.Namespace) -> dict[str, Any]:
  if args.config:
    from darkjax.tools import bench_input_config  # pylint: disable=import-outside-toplevel
    return bench_input_config.run(args)
  from darkjax.tools import bench_input as input_bench  # pylint: disable=import-outside-toplevel
  result = input_bench.run(videos=args.videos or 48, frames=args.video_frames or 64,
                           clip_frames=args.frames, batch=args.input_batch, batches=args.batches)
  print(input_bench.report(result), flush=True)
  return result


def bench_flow(args: argparse.Namespace) -> dict[str, Any]:
  from darkjax.tools import bench_flow as flow_bench  # pylint: disable=import-outside-toplevel
  rows = flow_bench.run(threads=args.flow_threads)
  print(flow_bench.report(rows), flush=True)
  return {"flow": rows}


def render_markdown(args: argparse.Namespace) -> dict[str, Any]:
  text = bench_report.markdown(bench_report.load(args.markdown_from))
  print(text, end="", flush=True)
  return {"markdown": text}


def render_autotune_log(args: argparse.Namespace) -> dict[str, Any]:
  from darkjax.tools import autotune_log  # pylint: disable=import-outside-toplevel
  text, rows = autotune_log.report(args.autotune_log)
  print(text, end="", flush=True)
  return {"autotune_log": rows}


def bench_config(args: argparse.Namespace) -> dict[str, Any]:
  from darkjax.tools import bench_config as config_bench  # pylint: disable=import-outside-toplevel
  return config_bench.run(args)


# flag (dest) -> benchmark; the first given runs (--input before --config: --input --config is the
# config's input pipeline).
_BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "model": bench_train_step,
    "input": bench_input,
    "depthwise": bench_depthwise,
    "flow": bench_flow,
    "config": bench_config,
    "markdown_from": render_markdown,
    "autotune_log": render_autotune_log,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.bench", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--model", help="model name from darkjax.models.names(): train-step benchmark")
  model = parser.add_argument_group("train-step benchmark (--model)")
  model.add_argument("--vs-torch", action="store_true", help="also time the PyTorch model")
  model.add_argument("--batch", type=int, default=None, help="default 2 (--config: the config's)")
  model.add_argument("--frames", type=int, default=None,
                     help="default 16 (--config: the config's)")
  model.add_argument("--size", type=int, default=112)
  model.add_argument("--steps", type=int, default=5, help="timed steps per round")
  model.add_argument("--rounds", type=int, default=3, help="alternating flax/torch rounds")
  model.add_argument("--compile-only", action="store_true",
                     help="compile and stop (with --vs-torch also the torch steps: a compiled "
                          "step's first call), no timed rounds")
  model.add_argument("--count-flops", choices=("cpu", "gpu", "tpu"), default=None,
                     metavar="PLATFORM",
                     help="count XLA's floating-point operations of the train step (--model's, "
                          "or --config's phase) as traced for PLATFORM (cpu, gpu, tpu; its "
                          "lowerings) and stop: no compile, no run, any size on any host "
                          "(--config with gpu / tpu: the aot-gpu / aot-tpu extra)")
  model.add_argument("--concurrent", type=int, default=1, metavar="N",
                     help="this command compiles beside N-1 others (launch/bench_gpu.sh's "
                          "pre-pass): recorded with its compile times, which are then upper "
                          "bounds")
  model.add_argument("--cold-from", action="append", default=None, metavar="JSON",
                     help="the --compile-only --json result of this same row or config from a "
                          "pre-pass that filled the persistent caches this run reads: its compile "
                          "times are recorded as the cold ones (`cold_compile`), this run's as "
                          "warm starts; repeated, the results of several pre-pass commands that "
                          "compiled a row's variants between them")
  model.add_argument("--pipelined", action="store_true",
                     help="also time each side's --steps dispatched back to back with one wait "
                          "at the end, as a training loop runs them (pipelined_ms per side, "
                          "flax's pipelined ratios); the step times wait for every step")
  model.add_argument("--profile", type=int, default=0, metavar="STEPS",
                     help="after the timed rounds, trace this many flax steps (each variant's; "
                          "--config: the phase's step) with jax.profiler: device ms per step "
                          "per op kind, the top ops and the convolutions' layouts "
                          "(measure.device_profile)")
  model.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                     help="compute dtype of the flax model (parameters stay float32); torch: "
                          "bf16 autocast")
  model.add_argument("--optimizer", default="sgd", choices=sorted(bench_torch.OPTIMIZERS),
                     help="both sides' update (darkjax.tools.bench_torch.OPTIMIZERS)")
  model.add_argument("--torch-compile", action="store_true",
                     help="with --vs-torch: also time torch.compile(step) in each "
                          "--torch-compile-modes; the faster is the reference")
  model.add_argument("--torch-compile-modes", default="default,max-autotune-no-cudagraphs",
                     help="comma-separated torch.compile modes for --torch-compile")
  model.add_argument("--torch-layout", default="channels_last_3d",
                     choices=bench_torch.LAYOUTS, help="memory format of the torch model and clips")
  model.add_argument("--memory", action="store_true",
                     help="XLA memory analysis (and step time) without remat and per --remat "
                          "policy")
  model.add_argument("--remat", default="full",
                     help="comma-separated darkjax.layers.remat policies compared with none by "
                          "--memory (full, dots, dots_no_batch, conv_outputs)")
  model.add_argument("--devices", type=int, default=1,
                     help="data-parallel over this many host devices (CPU: one per core)")
  model.add_argument("--lowering", default=None,
                     help="Conv3D lowering override (see darkjax.layers.conv.LOWERINGS)")
  model.add_argument("--variants", default=None,
                     help="';'-separated conv settings timed against the first in alternating "
                          "rounds: 'auto' or comma-separated lowering=, kernel_grad=, "
                          "ynn_min_core_use=, bn_relu=, max_pool=, align_channels=, "
                          "pointwise=, group_bundle=, donate=, model.FIELD=, xla_OPTION= (see the "
                          "description)")
  paper = parser.add_argument_group("config benchmark (--config)")
  paper.add_argument("--config", help="a paper config (path[:arg]): its own train step at its own "
                     "size on a synthetic stand-in dataset (darkjax.tools.bench_config); --batch, "
                     "--frames, --memory/--remat, --compile-only, --steps, --rounds apply. With "
                     "--input: its train pipeline (darkjax.tools.bench_input_config)")
  paper.add_argument("--phase", default=None, help="the trainer's phase (default: its main one)")
  paper.add_argument("--workdir", default=None,
                     help="where the stand-in data and checkpoints go (default: a temp directory)")
  paper.add_argument("--with-input", action="store_true",
                     help="also time the phase's steps fed by the config's own train pipeline "
                          "(its input worker processes as a run here starts them: "
                          "input.workers=-1 chooses them for this host), dispatched back to back")
  paper.add_argument("--check-init", action="store_true",
                     help="instead of timing: the phase's parameter init as darkjax runs it "
                          "(on a GPU with JAX's threefry kernel, targets.init_jit) against XLA's "
                          "own lowering of it, bit for bit; exits 1 where a leaf differs")
  paper.add_argument("--cold-start", action="store_true",
                     help="instead of timing steps: the phase's cold-start compiles (train step "
                          "and parameter init, no persistent cache) one after the other against "
                          "the step's on a thread beside the init's, as darkjax.train starts, in "
                          "--rounds alternating rounds")
  paper.add_argument("--cold-start-mode", default="",
                     help="with --cold-start: 'sequential' or 'aside' alone (default both, in "
                          "alternating rounds); one process per mode keeps both cold on a GPU, "
                          "whose XLA keeps its autotuning results in the process")
  paper.add_argument("--evals", action="store_true",
                     help="with --cold-start: the config's evaluations compile too (one after "
                          "the others, and beside the step as a TPU run's fit check compiles "
                          "them)")
  paper.add_argument("--target", default="",
                     help="with --cold-start: compile for this compile-only target instead of "
                          "the local devices (darkjax.aot: h100:1, tpu-v5e:2x2, ...); with "
                          "--model: its train step compiled for that target under each of "
                          "--variants (memory, traffic, lowerings), nothing run")
  paper.add_argument("--data-dir", default=None,
                     help="where the stand-in datasets are rendered, once per clip geometry, and "
                          "found by later commands (default: WORKDIR/data)")
  which.add_argument("--input", action="store_true",
                     help="input pipeline: clips/s from records vs decoding .avi per sample; with "
                          "--config, that config's train pipeline and the host cores one H100 "
                          "needs")
  data = parser.add_argument_group("input benchmark (--input; --frames is the clip length)")
  data.add_argument("--videos", type=int, default=None,
                    help="ARID-like 240x320 .avi clips made (default 48); with --config: stand-in "
                         "train videos per dataset (default 16)")
  data.add_argument("--video-frames", type=int, default=None,
                    help="frames per made video (default 64; with --config: the release's "
                         "typical length, bench_input_config.STAND_INS)")
  data.add_argument("--input-batch", type=int, default=8)
  data.add_argument("--batches", type=int, default=20,
                    help="timed record batches (with --config: only without a shuffle window)")
  data.add_argument("--workers", default="0,1,2",
                    help="with --config: grain worker-process counts to time (0: the config's own "
                         "pipeline, thread prefetch)")
  data.add_argument("--windows", type=int, default=1,
                    help="with --config: shuffle windows per producer in the timed span")
  paper.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field as darkjax.main's --config.KEY=VALUE does "
                          "(e.g. conv_lowering=native; with --input: input.prefetch=0); "
                          "repeatable")
  data.add_argument("--step-ms", type=float, default=None,
                    help="with --config: the train step time to keep up with (default: the "
                         "config's H100 step, bench_input_config.H100_STEPS)")
  which.add_argument("--depthwise", action="store_true",
                     help="depthwise 3x3 conv lowerings (darkjax.layers.depthwise)")
  dw = parser.add_argument_group("depthwise benchmark (--depthwise; --steps, --rounds apply)")
  dw.add_argument("--dw-batch", type=int, default=128)
  dw.add_argument("--dw-shapes", default="32,16,1;32,32,2;32,64,2;16,32,1",
                  help="'size,channels,stride;...'")
  which.add_argument("--markdown-from", nargs="+", metavar="JSON",
                     help="print the docs/benchmarks.md tables of these `--model M --vs-torch "
                          "--json` and `--config C --json` results (darkjax.tools.bench_report)")
  which.add_argument("--autotune-log", nargs="+", metavar="TEXTPROTO",
                     help="summarise XLA's GPU autotuning logs "
                          "(--xla_gpu_dump_autotune_logs_to=FILE.textproto): where a compile's "
                          "autotuning goes (darkjax.tools.autotune_log)")
  parser.add_argument("--json", metavar="OUT", default=None,
                      help="also write the result, with command, date, devices and versions, "
                           "as JSON to OUT")
  which.add_argument("--flow", action="store_true",
                     help="optical-flow methods of prepare --flow: ms per frame pair, error")
  parser.add_argument_group("flow benchmark (--flow)").add_argument(
      "--flow-threads", type=int, default=1, help="OpenCV threads")
  args = parser.parse_args(argv)
  chosen = [flag for flag in ("model", "input", "depthwise", "flow", "markdown_from",
                              "autotune_log") if getattr(args, flag)]
  if not chosen and not args.config:
    parser.error("one of the arguments --model --config --input --depthwise --flow "
                 "--markdown-from --autotune-log is required")
  if args.config and chosen not in ([], ["input"]):
    parser.error(f"--config goes alone or with --input, not with --{chosen[0]}")
  if not args.config:   # --config keeps None: the config's own batch and clip length
    args.batch = 2 if args.batch is None else args.batch
    args.frames = 16 if args.frames is None else args.frames
  if args.steps < 1 or args.rounds < 1:
    parser.error("--steps and --rounds must be >= 1")
  if args.concurrent < 1:
    parser.error("--concurrent must be >= 1")
  if args.profile < 0:
    parser.error("--profile must be >= 0")
  if args.profile and (not (args.model or args.config) or args.compile_only or args.input
                       or args.cold_start or args.check_init):
    parser.error("--profile traces timed steps: it goes with a timed --model M or --config C "
                 "run (not --compile-only, --input, --cold-start or --check-init)")
  if args.cold_from and (not (args.model or args.config) or args.compile_only
                         or (args.model and args.memory)):
    parser.error("--cold-from goes with a timed --model or --config run (--model: not "
                 "--memory), not --compile-only")
  if args.cold_start and (not args.config or args.input or args.check_init or args.memory
                          or args.compile_only or args.cold_from):
    parser.error("--cold-start goes with --config alone (not --input, --check-init, --memory, "
                 "--compile-only or --cold-from)")
  if args.count_flops and (not (args.model or args.config) or args.vs_torch or args.input
                           or args.compile_only or args.memory or args.cold_start
                           or args.check_init or args.profile):
    parser.error("--count-flops goes with --model M or --config C alone (it compiles and times "
                 "nothing: not with --vs-torch, --input, --compile-only, --memory, --cold-start, "
                 "--check-init or --profile)")
  if args.target and not (args.cold_start or (args.model and not (
      args.vs_torch or args.memory or args.count_flops or args.profile or args.cold_from))):
    parser.error("--target goes with --config C --cold-start, or with --model M alone (its step "
                 "compiled for the target under each of --variants; not with --vs-torch, "
                 "--memory, --count-flops, --profile or --cold-from)")
  if (args.evals or args.cold_start_mode) and not args.cold_start:
    parser.error("--evals and --cold-start-mode go with --config C --cold-start")
  if args.windows < 0 or args.batches < 1:
    parser.error("--windows must be >= 0 and --batches >= 1")
  args.torch_compile_modes = tuple(filter(None, (
      mode.strip() for mode in args.torch_compile_modes.split(","))))
  if args.torch_compile and not (args.vs_torch and args.model):
    parser.error("--torch-compile goes with --model M --vs-torch")
  if args.torch_compile and args.memory:
    parser.error("--torch-compile times the train step, not --memory")
  if args.torch_compile and not args.torch_compile_modes:
    parser.error("--torch-compile-modes: no mode given")
  if args.variants is not None:
    try:
      if not [parse_variant(spec) for spec in args.variants.split(";") if spec.strip()]:
        parser.error("--variants: no variant given")
    except ValueError as error:
      parser.error(f"--variants: {error}")
  return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  for path in args.cold_from or ():   # before minutes of compiling
    if not os.path.isfile(path):
      raise SystemExit(f"bench: --cold-from {path}: no such file (the JSON of this row's or "
                       "config's `--compile-only --json` pre-pass)")
  configure_cpu_flags()  # before jax initialises its backend
  if getattr(args, "devices", 1) > 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
  if args.vs_torch:
    # One GPU for both: JAX takes memory as it needs it instead of 75% of it up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if args.torch_compile:
    bench_torch.use_fresh_inductor_cache()
  benchmark = next(benchmark for dest, benchmark in _BENCHMARKS.items() if getattr(args, dest))
  result = benchmark(args)
  result = {**bench_report.provenance(argv), **result}   # after: the versions of what it imported
  if args.json:
    bench_report.write_json(args.json, result)
    print(f"  written: {args.json}", flush=True)
  if (result.get("init_check") or {}).get("differ"):   # --check-init: a program is wrong
    raise SystemExit(1)
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
