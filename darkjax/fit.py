"""Whether a phase's train step fits the device memory, and the settings that make it fit.

Before the first step of a phase the step is compiled ahead of time (the run then reuses that
compilation) and XLA's memory analysis gives what one device needs: arguments + outputs + temp -
aliased (donated) bytes. The limit is `config.device_memory_gib` when set, else the device's own
(`memory_stats()["bytes_limit"]`; a CPU reports none, so nothing is checked there unless the config
sets one). A step over the limit stops the run before training, naming the phase, GiB needed vs
available, and the settings that fit, each checked by compiling it. XLA:TPU fits a program to the
chip's HBM itself and fails the compile of one that cannot fit: such a compile counts as a
setting that does not fit, with the figure XLA's message gives. With `config.fit = "auto"` the
run takes the first that fits, in this order, keeping the global batch (the paper's recipe):

  1. compute_dtype bfloat16, where the config computes in float32 on a GPU or TPU
  2. accum_steps x2, x4, x8 (micro-batches of the same global batch: the same gradient of a
     loss of independent examples and one update of the running statistics, but BatchNorm
     normalises each micro-batch by its own statistics and a contrastive loss's negatives are
     its micro-batch's; fit=auto says so when it takes one)
  3. model.kwargs.remat "full", alone and then with accum_steps x2, x4, x8
  4. a fully sharded mesh (mesh.data=1, mesh.fsdp=-1) on several devices

Then, for a run that evaluates, each evaluation's program is compiled ahead at the config's eval
batch (`Trainer.compile_evals`: on a TPU beside the step's compile; the first evaluation reuses
it) and checked against the same limit
with the train state resident: an evaluation over it stops the run before training too, naming the
largest `input.eval_batch_size` that fits, and `fit = "auto"` evaluates at that batch (the same
scores: an evaluation has no batch statistics).

The choice is stored in the phase's config (`fit_applied`, so config.json records it) and a resumed
run tries it first, so it resumes with the same settings. "The global batch" is the one that runs on
the mesh (`darkjax.config.round_batches`: the configured batch, or the nearest the devices divide).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Callable, Mapping

import jax
import ml_collections as mlc

from darkjax import aot
from darkjax import checkpoint as ckpt_lib
from darkjax import config as config_lib
from darkjax import paths, sharding

log = logging.getLogger("darkjax")
GIB = aot.GIB
FIT_MODES = ("check", "auto", "off")


class DeviceMemoryError(RuntimeError):
  """A phase's train step does not fit the device's memory; the message says what would."""


class CompileMemoryError(DeviceMemoryError):
  """A compile that failed for the device's memory (XLA:TPU fails a program over the chip's HBM);
  `xla_message`: XLA's first line."""

  def __init__(self, message: str, xla_message: str):
    super().__init__(message)
    self.xla_message = xla_message


def compile_failure(error: BaseException) -> str | None:
  """XLA's first line when `error` is a compile that ran out of the device's memory, else None."""
  if isinstance(error, CompileMemoryError):
    return error.xla_message
  if isinstance(error, jax.errors.JaxRuntimeError) and out_of_memory(error):
    return str(error).strip().splitlines()[0][:300]
  return None


def _compiled(compile_fn: Callable[[], Any]) -> tuple[Any, str | None]:
  """(what `compile_fn` returns, None), or (None, XLA's message) where the compile ran out of the
  device's memory: a setting that does not fit, not an error of the run."""
  try:
    return compile_fn(), None
  except (jax.errors.JaxRuntimeError, CompileMemoryError) as error:
    failure = compile_failure(error)
    if failure is None:
      raise
    return None, failure


def _over(need: int | None, failure: str | None, limit: int) -> bool:
  """Whether a compile's figure (or its out-of-memory failure) is over `limit`."""
  return failure is not None or (need is not None and need > limit)


def _needs_text(need: int | None, failure: str | None) -> str:
  """What a setting needs, in words: GiB, or XLA's out-of-memory compile failure."""
  if failure is None:
    return f"needs {(need or 0) / GIB:.2f} GiB per device"
  figures = aot.out_of_memory_figures(failure)
  size = f" ({figures[0] / GIB:.2f} GiB per device)" if figures else ""
  return f"does not compile within the device's memory{size}: {failure}"


def step_bytes(compiled) -> int | None:
  """What one device holds while the compiled step runs (None: no memory analysis)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def tree_bytes(tree: Any) -> int:
  """Bytes one device holds of an abstract tree whose leaves carry shardings (an unsharded leaf:
  whole on every device)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.shape
    leaf_sharding = getattr(leaf, "sharding", None)
    if leaf_sharding is not None:
      shape = leaf_sharding.shard_shape(shape)
    total += math.prod(shape) * leaf.dtype.itemsize
  return total


def device_limit(config: Mapping[str, Any], device: Any, target: str = "") -> int | None:
  """Bytes one device may hold: `config.device_memory_gib`, else for a compile-only `target`
  (darkjax.aot; its devices report no memory) what a run there may hold (`aot.limit_bytes`: a GPU's
  memory times JAX's allocator fraction, a TPU chip's HBM), else the device's own limit."""
  gib = float(config.get("device_memory_gib", 0.0) or 0.0)
  if gib > 0:
    return int(gib * GIB)
  if target:
    return aot.limit_bytes(target)
  try:
    stats = device.memory_stats()
  except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
    return None
  return int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def mesh_limit(config: Mapping[str, Any], mesh: Any, target: str = "") -> int | None:
  """`device_limit` for a device of `mesh` this process holds (on a multi-host mesh the first of
  its devices is another host's, whose memory this process cannot read: every process checks the
  step against its own devices, so all of them take the same decision)."""
  # a compile-only target's mesh has no devices of this process (device_limit does not ask one)
  return device_limit(config, None if target else mesh.local_devices[0], target)


def candidates(config: mlc.ConfigDict, platform: str, devices: int) -> list[dict[str, Any]]:
  """The settings `fit` tries, in order (dotted overrides of `config`), each keeping the global
  batch that runs on `devices` batch devices (`darkjax.config.global_batch`: the configured one,
  or the nearest the devices divide)."""
  out = []
  if platform != "cpu" and config_lib.compute_dtype(config, platform).name == "float32":
    out.append({"compute_dtype": "bfloat16"})
  accum, parts = int(config.accum_steps), config_lib.batch_parts(config)
  batch = config_lib.global_batch(config.input.batch_size, devices, accum,
                                  config_lib.batch_rounding(config), parts=parts)
  accums = [accum * f for f in (2, 4, 8) if batch % (accum * f * devices * parts) == 0]
  out += [{"accum_steps": a} for a in accums]
  if "remat" in config.model.kwargs and config.model.kwargs.remat in ("", "none", False, None):
    out.append({"model.kwargs.remat": "full"})
    out += [{"model.kwargs.remat": "full", "accum_steps": a} for a in accums]
  if devices > 1 and int(config.mesh.get("fsdp", 1)) != -1:
    out.append({"mesh.data": 1, "mesh.fsdp": -1})
  return out


def describe(overrides: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v}" for k, v in overrides.items())


def _applied(config: mlc.ConfigDict, overrides: Mapping[str, Any]) -> mlc.ConfigDict:
  """`config` with `overrides` applied and added to the fit choices it already records (a resumed
  run's stored choice that no longer fits keeps what still holds of it)."""
  out = config_lib.apply_overrides(config, overrides)
  earlier = json.loads(config.get("fit_applied") or "{}")
  out.fit_applied = json.dumps({**earlier, **overrides}, sort_keys=True)
  return out


def _previous_choice(workdir: str) -> dict[str, Any] | None:
  """The fit choice a run in `workdir` trained with (its config.json), if any."""
  path = paths.resolve(workdir) / "config.json"
  if not path.is_file():
    return None
  saved = json.loads(path.read_text(encoding="utf-8")).get("fit_applied") or ""
  return json.loads(saved) if saved else None


def resumed_config(config: mlc.ConfigDict, workdir: str) -> mlc.ConfigDict:
  """`config` as `fit_phase` builds its Trainer in `workdir`: with the fit choice the run there
  trained with (a resumed run keeps it), unless `config.fit` is "off"."""
  previous = _previous_choice(workdir)
  if previous and config_lib.check_choice(config, "fit", FIT_MODES, default="check") != "off":
    return _applied(config, previous)
  return config


def fit_phase(config: mlc.ConfigDict, workdir: str, phase: str,
              build: Callable[[mlc.ConfigDict], Any]) -> Any:
  """A Trainer (`build(config)`: built, its step compiled by `trainer.compile_start()`) whose step
  fits the device memory: `config`'s own, else per `config.fit` the first fitting candidate or a
  DeviceMemoryError naming need vs available and what fits."""
  mode = config_lib.check_choice(config, "fit", FIT_MODES, default="check")
  resumed = resumed_config(config, workdir)   # a resumed run keeps the settings it trained with
  if resumed is not config:
    config = resumed
    log.info("phase %s: resuming with the fit choice %s", phase,
             describe(_previous_choice(workdir)))
  trainer = build(config)
  config = trainer.config   # the batches that run on its mesh (config.round_batches)
  limit = mesh_limit(config, trainer.mesh, trainer.target)
  if mode == "off" or limit is None:
    return trainer
  checkpoint = ckpt_lib.latest_listed(workdir)
  # The step's compile, beside a fresh run's init compile and on a TPU the evaluations' (a
  # compile there is the host's work alone; a GPU's autotuning would time two programs' kernels
  # on the device at once). XLA:TPU fails a compile over the chip's HBM.
  beside = trainer.platform == "tpu" and evaluates(config)
  need, failure = _compiled(lambda: trainer.compile_start(checkpoint, evals=beside))
  if failure is None and need is None:
    return trainer
  if not _over(need, failure, limit):
    return fit_evals(trainer, limit, mode, phase)
  share = ""
  if trainer.platform == "gpu" and not config.get("device_memory_gib"):
    share = (f", {aot.gpu_memory_fraction():.0%} of the GPU's memory as JAX's allocator takes it; "
             "XLA_CLIENT_MEM_FRACTION=0.9 gives it more")
  where = (f"phase {phase}: the train step {_needs_text(need, failure)}, "
           f"{limit / GIB:.2f} GiB available ({trainer.mesh.devices.flat[0].device_kind}, "
           f"global batch {config.input.batch_size}{config_lib.rounded_note(config)}, "
           f"{trainer.mesh.devices.size} device(s){share})")
  fitting = []
  for overrides in candidates(config, trainer.platform, trainer.mesh.devices.size):
    variant = _applied(config, overrides)
    candidate = build(variant)
    candidate_need, candidate_failure = _compiled(candidate.compile_step)
    log.info("%s: %s %s", phase, describe(overrides),
             _needs_text(candidate_need, candidate_failure))
    if candidate_need is not None and not _over(candidate_need, candidate_failure, limit):
      if mode == "auto":
        log.info("%s; fit=auto trains with %s (%.2f GiB)", where, describe(overrides),
                 candidate_need / GIB)
        accum = int(overrides.get("accum_steps", 1))
        if accum > 1:
          log.warning("%s: %d micro-batches of %d: the gradient is the global batch's, but "
                      "BatchNorm normalises each micro-batch by its own statistics and a "
                      "contrastive loss draws its negatives within it", phase, accum,
                      int(config.input.batch_size) // accum)
        return fit_evals(candidate, limit, mode, phase)
      fitting.append(f"{describe(overrides)} ({candidate_need / GIB:.2f} GiB)")
      if len(fitting) == 3:
        break
  if mode == "auto" or not fitting:
    raise DeviceMemoryError(f"{where}; none of the settings darkjax tries fits (darkjax/fit.py): "
                            "use more devices, a smaller global batch or a smaller model.")
  raise DeviceMemoryError(
      f"{where}. Settings that fit, each compiled and checked: {'; '.join(fitting)}. Pass one as "
      "--config.<key>=<value>, or --config.fit=auto to take the first.")


def eval_batch_candidates(batch: int, devices: int) -> list[int]:
  """Smaller eval batches to try, largest first: `batch` halved, each a multiple of `devices`."""
  out, size = [], batch
  while True:
    size = size // 2 // devices * devices
    if size < devices or size in out:
      return out
    out.append(size)


def evaluates(config: Mapping[str, Any]) -> bool:
  """Whether a run of `config` evaluates (`eval_every` >= 0 and some `evals`)."""
  return int(config.eval_every) >= 0 and bool(config.evals)


def eval_views(config: Mapping[str, Any]) -> int:
  """Views per example an evaluation scores (`input.eval_clips` x `input.eval_crops`)."""
  return int(config.input.get("eval_clips", 1) or 1) * int(config.input.get("eval_crops", 1) or 1)


def fit_evals(trainer: Any, limit: int, mode: str, phase: str) -> Any:
  """`trainer`, whose train step fits `limit`, with its evaluations compiled ahead
  (`Trainer.compile_evals`) and checked against the same memory, the train state resident: a
  batch that does not fit raises DeviceMemoryError naming the largest eval batch that does
  (`input.eval_batch_size`, each compiled and checked); with `mode` "auto" the run evaluates at
  that batch instead (the scores are the same: an evaluation has no batch statistics). A compile
  that runs out of the device's memory (XLA:TPU's, over the chip's HBM) is one that does not fit.
  A run that never evaluates (`eval_every` -1, no `evals`) compiles none."""
  config = trainer.config
  if not evaluates(config):
    return trainer
  needs, failure = _compiled(trainer.compile_evals)   # on a TPU found beside the step already
  over = {name: need for name, need in (needs or {}).items() if need > limit}
  if not over and failure is None:
    return trainer
  batch = int(config.input.eval_batch_size)
  views = eval_views(config)
  if failure is None:
    name, need = max(over.items(), key=lambda item: item[1])
    what = f"evaluation {name!r}"
    needs_text = f"needs {need / GIB:.2f} GiB per device with the train state"
  else:
    what, needs_text = "an evaluation", _needs_text(None, failure)
  where = (f"phase {phase}: {what} at eval batch {batch} (input.eval_batch_size; "
           f"{views} view(s) per example, input.eval_clips x input.eval_crops, scored one view at "
           f"a time) {needs_text}, {limit / GIB:.2f} GiB available")
  devices = sharding.batch_devices(trainer.mesh)
  for smaller in eval_batch_candidates(batch, math.lcm(devices, jax.process_count())):
    trainer.config = _applied(config, {"input.eval_batch_size": smaller})
    smaller_needs, smaller_failure = _compiled(trainer.compile_evals)
    worst = max((smaller_needs or {}).values(), default=0)
    log.info("%s: eval batch %d %s", phase, smaller, _needs_text(worst, smaller_failure))
    if not _over(worst, smaller_failure, limit):
      if mode == "auto":
        log.info("%s; fit=auto evaluates at eval batch %d (%.2f GiB)", where, smaller, worst / GIB)
        return trainer
      trainer.config = config
      raise DeviceMemoryError(
          f"{where}. Eval batch {smaller} fits ({worst / GIB:.2f} GiB, compiled and checked): "
          f"pass --config.input.eval_batch_size={smaller}, or --config.fit=auto to take it.")
  trainer.config = config
  raise DeviceMemoryError(f"{where}; no smaller eval batch fits: use more devices or fewer views.")


def out_of_memory(error: Exception) -> bool:
  """Whether a runtime error is the device running out of memory."""
  return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


STEP_OOM_ADVICE = ("--config.fit=auto picks settings that fit before the first step "
                   "(darkjax/fit.py), or set accum_steps, model.kwargs.remat=full or "
                   "compute_dtype=bfloat16.")
EVAL_OOM_ADVICE = ("lower --config.input.eval_batch_size (the clips an evaluation scores at "
                   "once); on a GPU or TPU the fit check (--config.fit=check|auto, "
                   "darkjax/fit.py) finds one that fits before the first step.")


def runtime_oom_message(where: str, error: Exception, checkpoint: str | None,
                        advice: str = "") -> str:
  """One message for an out-of-memory error in a running step or evaluation; `advice`: what to
  lower (default: the train step's settings, STEP_OOM_ADVICE)."""
  first = str(error).strip().splitlines()[0][:300]
  return (f"{where}: the device ran out of memory ({first}). Last completed checkpoint: "
          f"{checkpoint or 'none'} (intact; a rerun resumes from it). Lower the memory per device: "
          f"{advice or STEP_OOM_ADVICE}")


__all__ = ["CompileMemoryError", "DeviceMemoryError", "candidates", "compile_failure",
           "device_limit", "eval_batch_candidates", "evaluates", "fit_evals", "fit_phase",
           "out_of_memory", "step_bytes", "tree_bytes"]
