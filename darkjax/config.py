"""The one config module: loading `path[:arg]`, dotted overrides, derived fields and validation.

`darkjax.main` (through ml_collections' config flags), the notebook `Run` and every tool get their
config through here, so a config means the same thing everywhere:

  config = config_lib.load("configs/dtcm_synthetic.py:runlocal")        # get_config("runlocal")
  config = config_lib.apply_overrides(config, {"optimizer.lr": 3e-3})   # --config.optimizer.lr
  config_lib.validate(config)                                          # fields read at start
  config_lib.compute_dtype(config, "gpu")                              # "auto" -> bfloat16
  config = config_lib.resolve(config, "cpu")                          # derived fields fixed
  config, notes = config_lib.round_batches(config, 4)                  # batch 30 -> 32 on 4 devices

A config file lives in the repository's `configs/` package (it imports `configs.common`) or
anywhere else (loaded from its path).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import ml_collections as mlc

from darkjax import targets
from darkjax.messages import error_text

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
# compute_dtype="auto" per compile platform: bfloat16 compute on accelerators (parameters, optimizer
# state, normalisation statistics and loss reductions stay float32), float32 on CPU, where bfloat16
# arithmetic is emulated and slower.
AUTO_COMPUTE_DTYPES = {"cpu": "float32", "gpu": "bfloat16", "tpu": "bfloat16"}
CONV_LOWERINGS = ("auto", "native")
# config.batch_rounding: what a global batch the mesh's devices do not divide becomes.
BATCH_ROUNDINGS = ("nearest", "error")


class ConfigError(ValueError):
  """A config file, arg string, override or field is wrong; the message names it."""


class UnknownKeyError(ConfigError, KeyError):
  """An override of a field the config does not have (a KeyError too, as a dict's lookup)."""

  def __str__(self) -> str:   # the message, not KeyError's repr of it
    return str(self.args[0]) if self.args else ""


def load_module(path: str):
  """The module of a config file: one of darkjax's `configs/` package is imported as
  `configs.x` (so it shares `configs.common` with the other configs); any other file, a user's own
  `configs/x.py` included, is loaded from its path under a module name of its own."""
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist")
  parent = os.path.dirname(path)
  name = os.path.splitext(os.path.basename(path))[0]
  if os.path.basename(parent) == "configs":
    try:
      package = importlib.import_module("configs")
    except ModuleNotFoundError:   # a source tree that is not installed: its root on the path
      sys.path.insert(0, os.path.dirname(parent))
      package = importlib.import_module("configs")
    if any(os.path.samefile(parent, d) for d in package.__path__ if os.path.isdir(d)):
      return importlib.import_module(f"configs.{name}")
  spec = importlib.util.spec_from_file_location(f"darkjax_config_{len(sys.modules)}_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(spec: str, arg: str | None = None) -> mlc.ConfigDict:
  """`path/to/config.py[:arg]` (or `spec`=path and `arg`) -> its locked `get_config(arg)`, as
  `--config=path:arg` gives it to darkjax.main."""
  path, _, spec_arg = os.fspath(spec).partition(":")
  if arg is not None and spec_arg:
    raise ConfigError(f"config {spec!r}: give the arg string in the spec or as arg, not both")
  module = load_module(path)
  if not callable(module.__dict__.get("get_config")):
    raise ConfigError(f"config file {path} has no get_config(arg) function")
  arg = (arg if arg is not None else spec_arg) or None
  try:
    config = module.get_config(arg)
  except (KeyError, ValueError, TypeError) as error:   # an arg string it does not take
    if isinstance(error, ConfigError):
      raise
    raise ConfigError(f"config {path}{':' + arg if arg else ''}: {error_text(error)}") from error
  config.lock()
  return config


def apply_overrides(config: mlc.ConfigDict,
                    overrides: Mapping[str, Any] | None) -> mlc.ConfigDict:
  """A locked copy of `config` with dotted-path fields replaced (`{"optimizer.lr": 0.01}`), as
  `--config.optimizer.lr=0.01` does; an unknown path raises naming it and the valid keys."""
  out = mlc.ConfigDict(config.to_dict())
  out.lock()
  for path, value in (overrides or {}).items():
    *parents, leaf = path.split(".")
    node = out
    for depth, key in enumerate(parents):
      if key not in node:
        raise UnknownKeyError(f"config override {path!r}: no field "
                              f"{'.'.join(parents[:depth + 1])!r}; valid keys there: "
                              f"{sorted(node.keys())}")
      node = node[key]
    if not isinstance(node, mlc.ConfigDict) or leaf not in node:
      valid = sorted(node.keys()) if isinstance(node, mlc.ConfigDict) else []
      raise UnknownKeyError(f"config override {path!r}: no field {leaf!r}; valid keys there: "
                            f"{valid}")
    node[leaf] = value
  return out


def override_value(raw: str) -> Any:
  """The VALUE of a `KEY=VALUE` override given as text (the tools' `--override`, `--set` and
  experiment variants): a Python literal (`0`, `0.5`, `()`, `True`) is that literal, anything
  else the string itself."""
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def data_blocks(config: mlc.ConfigDict) -> list[mlc.ConfigDict]:
  """Every dataset block of `config` (a ConfigDict with `dir` and `split_index`), in order."""
  return [block for _, block in named_data_blocks(config)]


def named_data_blocks(config: mlc.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
  """(dotted field, block) of every dataset block of `config` (`data_blocks`), in the config's
  order (a ConfigDict's keys are sorted: 3D-DiNet's target `dinet.target.data` before its source
  `input.data`)."""
  found: list[tuple[str, Any]] = []
  for key, value in config.items():
    if isinstance(value, mlc.ConfigDict):
      if "dir" in value and "split_index" in value:
        found.append((prefix + key, value))
      else:
        found.extend(named_data_blocks(value, f"{prefix}{key}."))
  return found


def compute_dtype(config: Mapping[str, Any], platform: str | None = None) -> jnp.dtype:
  """`config.compute_dtype` resolved for `platform` (default: the platform being compiled for,
  `darkjax.targets.platform()`): activations and matmuls; parameters stay float32. "auto" is
  `AUTO_COMPUTE_DTYPES[platform]`; an explicit dtype wins on every platform."""
  name = str(check_choice(config, "compute_dtype", COMPUTE_DTYPES, default="auto"))
  if name == "auto":
    name = AUTO_COMPUTE_DTYPES[platform or targets.platform()]
  return jnp.dtype(name)


def resolve(config: mlc.ConfigDict, platform: str) -> mlc.ConfigDict:
  """A locked copy of `config` with its derived fields fixed for `platform`: compute_dtype "auto"
  becomes the dtype it means there (what config.json records and a resume reads)."""
  out = mlc.ConfigDict(config.to_dict())
  out.compute_dtype = compute_dtype(config, platform).name
  out.lock()
  return out


def conv_lowering(config: Mapping[str, Any]) -> str:
  """`config.conv_lowering`: "auto" (each conv picks its lowering for the compile target) or
  "native" (XLA's native 3D ops on every target)."""
  return check_choice(config, "conv_lowering", CONV_LOWERINGS, default="auto")


def batch_rounding(config: Mapping[str, Any]) -> str:
  """`config.batch_rounding`: "nearest" (a batch the devices do not divide runs at the nearest
  one they do) or "error" (such a batch stops the run)."""
  return check_choice(config, "batch_rounding", BATCH_ROUNDINGS, default="nearest")


def _divisor(devices: int, accum_steps: int, parts: int = 1) -> str:
  text = f"the {devices} device{'s' if devices > 1 else ''} of the mesh"
  if accum_steps > 1:
    text += f" x config.accum_steps {accum_steps}"
  if parts > 1:
    text += f" x config.input.batch_parts {parts}"
  if accum_steps > 1 or parts > 1:
    text += f" (= {devices * accum_steps * parts})"
  return text


def batch_parts(config: Mapping[str, Any]) -> int:
  """`config.input.batch_parts`: the equal parts a training batch holds, each split over the
  devices and micro-batches on its own (3D-DiNet's source and target halves: 2); 1 without it."""
  parts = int(config["input"].get("batch_parts", 1))
  if parts < 1:
    raise ConfigError(f"config.input.batch_parts must be >= 1, got {parts}")
  return parts


def global_batch(batch: int, devices: int, accum_steps: int = 1, rounding: str = "nearest",
                 field: str = "config.input.batch_size", parts: int = 1) -> int:
  """The global batch that runs for a configured `batch` on a mesh of `devices` batch devices
  (its data x fsdp axes) with `accum_steps` micro-batches per step, of `parts` equal parts.

  Each micro-batch (of each part) is split evenly over the devices, so the batch must be a
  multiple of parts x accum_steps x devices: `batch` itself when it is; else with `rounding`
  "nearest" the nearest multiple (a tie goes up; never 0), and with "error" a ConfigError naming
  `field`, the devices and the nearest batches that would run. The learning rate is not
  rescaled."""
  batch, devices, accum_steps, parts = int(batch), int(devices), int(accum_steps), int(parts)
  if batch < 1 or devices < 1 or accum_steps < 1:
    raise ConfigError(f"{field} {batch} on {devices} device(s) with config.accum_steps "
                      f"{accum_steps}: all three must be >= 1")
  check_choice({"batch_rounding": rounding}, "batch_rounding", BATCH_ROUNDINGS)
  multiple = devices * accum_steps * parts
  below = batch // multiple * multiple
  if below == batch:
    return batch
  above = below + multiple
  nearest = above if below == 0 or above - batch <= batch - below else below
  if rounding == "error":
    options = " or ".join(str(b) for b in (below, above) if b)
    raise ConfigError(
        f"{field} {batch} is not divisible by {_divisor(devices, accum_steps, parts)}; batches "
        f"that run "
        f"here: {options}. Set one (--{field}=N), or "
        f"config.batch_rounding='nearest' to run with {nearest}")
  return nearest


# (the batch field, the field recording what the config asked for, accumulated, what it does)
_BATCH_FIELDS = (("batch_size", "batch_size_requested", True, "training"),
                 ("eval_batch_size", "eval_batch_size_requested", False, "evaluating"))


def round_batches(config: mlc.ConfigDict, devices: int) -> tuple[mlc.ConfigDict, list[str]]:
  """(`config` with `input.batch_size` and `input.eval_batch_size` the global batches that run on
  `devices` batch devices (`global_batch`, per `config.batch_rounding`), one log line per batch
  it changed). Unchanged, `config` itself; else a locked copy that records the configured batch
  in `input.batch_size_requested` / `input.eval_batch_size_requested`, so config.json says both,
  and rounding the copy again changes nothing. Evaluation pads and masks its last batch, so its
  results do not depend on its batch; its batches are not accumulated."""
  rounding = batch_rounding(config)
  accum_steps = int(config.get("accum_steps", 1))
  changed: dict[str, tuple[int, int]] = {}
  for field, _, accumulated, _ in _BATCH_FIELDS:
    if field not in config.input:
      continue
    batch = int(config.input[field])
    runs = global_batch(batch, devices, accum_steps if accumulated else 1, rounding,
                        f"config.input.{field}", batch_parts(config) if accumulated else 1)
    if runs != batch:
      changed[field] = (batch, runs)
  if not changed:
    return config, []
  out = mlc.ConfigDict(config.to_dict())
  notes = []
  for field, requested, accumulated, doing in _BATCH_FIELDS:
    if field not in changed:
      continue
    batch, runs = changed[field]
    out.input[field] = runs
    out.input[requested] = batch
    what = "global batch" if accumulated else "eval batch"
    divisor = (_divisor(devices, accum_steps, batch_parts(config)) if accumulated
               else _divisor(devices, 1))
    notes.append(
        f"{what} {batch} is not divisible by {divisor}: {doing} with {runs} (the "
        f"nearest multiple; config.batch_rounding='error' refuses instead)"
        + ("; the learning rate is not rescaled" if accumulated else
           "; evaluation results do not depend on it"))
  out.lock()
  return out, notes


def rounded_note(config: Mapping[str, Any], devices: int | None = None) -> str:
  """" (config 30, rounded for 4 devices)" after a global batch `round_batches` changed, else
  ""."""
  requested = int(config["input"].get("batch_size_requested", 0) or 0)
  if not requested or requested == int(config["input"]["batch_size"]):
    return ""
  accum_steps = int(config.get("accum_steps", 1))
  where = f"{devices} device{'s' if devices != 1 else ''}" if devices else "the mesh's devices"
  if accum_steps > 1:
    where += f" x {accum_steps} accumulation steps"
  if batch_parts(config) > 1:
    where += f" x {batch_parts(config)} batch parts"
  return f" (config {requested}, rounded for {where})"


AUTO_WORKERS = -1   # config.input.workers: chosen at run time (`auto_input_workers`)
# Headroom over the host cores a config's pipeline needs (a worker process does less than a whole
# core's work: docs/benchmarks.md, "Input pipeline per paper config").
WORKERS_HEADROOM = 1.25
# Host cores up to which the training process's own prefetch thread makes the batches in time
# (one Python thread beside the training loop: a rule, not a measurement).
OWN_PIPELINE_CORES = 0.5


def input_workers(config: mlc.ConfigDict) -> int:
  """`config.input.workers`: the processes that make the train batches (0: this process; -1:
  chosen at run time, `auto_input_workers`)."""
  workers = config.get("input", {}).get("workers", 0)
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < AUTO_WORKERS:
    raise ConfigError(f"config.input.workers {workers!r} is not a count of worker processes (0: "
                      "none, the batches are made in the training process; N > 0: grain's "
                      "mp_prefetch with N processes; -1: chosen at run time from the devices, "
                      "the host's cores and config.input.cores_per_device)")
  cores = config.get("input", {}).get("cores_per_device", 0.0)
  if isinstance(cores, bool) or not isinstance(cores, (int, float)) or cores < 0:
    raise ConfigError(f"config.input.cores_per_device {cores!r} is not a number of host cores "
                      "(>= 0) that the input pipeline needs to keep one device busy")
  return workers


def auto_input_workers(config: mlc.ConfigDict, platform: str, local_devices: int,
                       host_cores: int) -> tuple[int, str]:
  """The input worker processes `config.input.workers = -1` gives, and a note saying why. On a
  CPU none: its steps take seconds and the training process makes the batches in time. On an
  accelerator `config.input.cores_per_device` (the host cores the config's pipeline needs to
  keep one H100 busy: docs/benchmarks.md, "Input pipeline per paper config") times the local
  devices, with WORKERS_HEADROOM; none where that is at most half a core (the training process's
  own prefetch thread keeps up); at most the host's cores less one, the training loop's."""
  need = float(config["input"].get("cores_per_device", 0.0)) * local_devices
  if platform == "cpu":
    return 0, "input.workers=-1: none on a CPU (batches made in the training process)"
  if need <= OWN_PIPELINE_CORES:
    return 0, (f"input.workers=-1: none (the pipeline needs {need:.1f} host cores for "
               f"{local_devices} device(s): the training process's prefetch keeps up)")
  wanted = math.ceil(WORKERS_HEADROOM * need)
  workers = max(0, min(wanted, host_cores - 1))
  note = (f"input.workers=-1: {workers} worker processes ({need:.1f} host cores for "
          f"{local_devices} device(s), config.input.cores_per_device x devices x "
          f"{WORKERS_HEADROOM})")
  if workers < wanted:
    note += (f"; {wanted} wanted but this host has {host_cores} cores: the input may keep the "
             "devices waiting (`python -m darkjax.tools.bench --input --config ...` measures it)")
  return workers, note


def validate(config: mlc.ConfigDict) -> mlc.ConfigDict:
  """Checks the fields every run reads at start and returns `config`; errors name the field."""
  compute_dtype(config)
  conv_lowering(config)
  batch_rounding(config)
  input_workers(config)
  if "trainer" not in config:
    raise ConfigError("config has no `trainer` field (the darkjax/trainers/<name>.py to run)")
  for key, least, meaning in _CADENCES:
    if key in config and int(config[key]) < least:
      raise ConfigError(f"config.{key} is {config[key]}; it must be at least {least} "
                        f"({meaning})")
  return config


# Fields of a run's cadence: (key, smallest value, what it counts).
_CADENCES = (("log_every", 1, "steps between logged train metrics"),
             ("checkpoint_every", 1, "steps between checkpoints"),
             ("keep_checkpoints", 1, "checkpoints kept; 0 would delete each one once written"),
             ("eval_every", -1, "steps between evaluations; 0: at the end only, -1: never"))


def flat(config: Mapping[str, Any]) -> dict[str, Any]:
  """{dotted field: value} of every leaf of `config` (a ConfigDict, or nested dicts such as a
  run's config.json)."""
  out: dict[str, Any] = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, (mlc.ConfigDict, dict)):
        walk(value, f"{prefix}{key}.")
      else:
        out[f"{prefix}{key}"] = value
  walk(config, "")
  return out


def json_values(config: mlc.ConfigDict) -> dict[str, Any]:
  """`config` as nested dicts of JSON values (tuples as lists), keys sorted: what a run's
  config.json holds, and what `flat` of it compares with one read back."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def listed(lines: Sequence[str], most: int = 12) -> str:
  """The first `most` of `lines`, one a line, and how many more there are."""
  more = f"\n  ... and {len(lines) - most} more" if len(lines) > most else ""
  return "\n".join(lines[:most]) + more


ABSENT = "<absent>"   # `differences`' value of a field one side lacks


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  """{field: (a's value, b's value)} of two `flat` views where they differ ("<absent>" for a
  missing field), fields sorted."""
  return {key: (a.get(key, ABSENT), b.get(key, ABSENT)) for key in sorted(a.keys() | b.keys())
          if a.get(key, ABSENT) != b.get(key, ABSENT)}


def covers(declared: str, field: str) -> bool:
  """Whether the dotted field `declared` is `field` or holds it (`lift` covers `lift.kd`)."""
  return field == declared or field.startswith(declared + ".")


# Fields that set what a run's evaluation measures and nothing it trains (with every dataset
# block's `eval_split`): a finished run rerun with other values evaluates its checkpoint again
# (darkjax.train.Trainer), and its config.json records the values its logged evaluation used.
EVALUATION_FIELDS = ("evals", "input.eval_clips", "input.eval_crops")
# Fields that change no result: how a run shows its progress, saves, feeds and times itself.
RUNNER_FIELDS = ("progress_bar", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                 "async_checkpoints", "profile", "compilation_cache", "fit", "device_memory_gib",
                 "input.workers", "input.prefetch", "input.eval_batch_size",
                 "input.eval_batch_size_requested")


def evaluation_field(field: str) -> bool:
  """Whether the dotted `field` sets what the evaluation measures, nothing that trains
  (`EVALUATION_FIELDS`, a dataset block's `eval_split`)."""
  return (field.endswith(".eval_split") or field == "eval_split"
          or any(covers(declared, field) for declared in EVALUATION_FIELDS))


def runner_field(field: str) -> bool:
  """Whether the dotted `field` changes no result (`RUNNER_FIELDS`)."""
  return any(covers(declared, field) for declared in RUNNER_FIELDS)


def set_field(values: dict[str, Any], field: str, value: Any) -> None:
  """Sets the dotted `field` of nested dicts `values` (a config.json) to `value`, making the dicts
  on its way; `ABSENT` removes it, and the dicts on its way that it leaves empty (a removed
  evaluator's block)."""
  *parents, name = field.split(".")
  if value == ABSENT:
    path = [values]
    for parent in parents:
      if not isinstance(path[-1].get(parent), dict):
        return
      path.append(path[-1][parent])
    path[-1].pop(name, None)
    for node, key in zip(reversed(path[:-1]), reversed(parents)):
      if node[key]:
        break
      del node[key]
    return
  node = values
  for parent in parents:
    node = node.setdefault(parent, {})
  node[name] = value


class MissingWeightsError(ConfigError):
  """A paper config runs without the pretrained weights its recipe starts from."""


_REQUIRED = object()


def check_choice(config: Mapping[str, Any], dotted: str, valid: Sequence[Any],
                 default: Any = _REQUIRED) -> Any:
  """config.`dotted`, one of the `valid` values: another raises ConfigError naming the key and
  them. With a `default`, a config without the key (one written before the key existed) has it."""
  try:
    value = get_key(config, dotted)
  except KeyError:
    if default is _REQUIRED:
      raise
    value = default
  if value not in tuple(valid):
    raise ConfigError(f"config.{dotted} {value!r} unknown; valid: {tuple(valid)}")
  return value


def get_key(config: Mapping[str, Any], dotted: str):
  """The value of dotted config key `dotted` ("model.kwargs.normalise")."""
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def pretrained_normalise(config: mlc.ConfigDict) -> tuple[str, str] | None:
  """(key, mode): the config key holding the normalisation `config.model_init`'s weights read
  (`model_load.normalise_key`) and its value, for the check against the weights' record; None
  with `model_load.check_normalise` off."""
  if not check_normalise(config):
    return None
  key = (config.get("model_load") or {}).get("normalise_key", "input.normalise")
  return key, str(get_key(config, key))


def check_normalise(config: Mapping[str, Any]) -> bool:
  """Whether pretrained weights are checked against the normalisation they were trained on
  (`model_load.check_normalise`, default on)."""
  return bool((config.get("model_load") or {}).get("check_normalise", True))


def check_required_weights(config: mlc.ConfigDict) -> None:
  """Raises MissingWeightsError naming every `config.required_weights` entry whose config key is
  empty: the weight file's public name, where it is published, the command that converts it and
  the config arg that takes it, and `init=none` as the explicit opt-out."""
  missing = []
  for name, entry in config.required_weights.items():
    if get_key(config, entry.key):
      continue
    lines = [f"- {name}: config arg `{entry.arg}` (config.{entry.key}) is empty; the recipe starts "
             f"from {entry.file} ({entry.source})."]
    if entry.command:
      lines.append(f"  Convert it once: {entry.command}")
    lines.append(f"  Then pass `{entry.arg}=PATH` in the config arg string.")
    missing.append("\n".join(lines))
  if missing:
    raise MissingWeightsError(
        "this config is a paper's recipe, which starts from pretrained weights that were not "
        "given:\n" + "\n".join(missing) + "\nTo train from random initialisation instead, add "
        "`init=none` to the config arg string.")
