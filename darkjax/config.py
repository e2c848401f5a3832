"""The one config module: loading `path[:arg]`, dotted overrides, derived fields and validation.

`darkjax.main` (through ml_collections' config flags), the notebook `Run` and every tool get their
config through here, so a config means the same thing everywhere:

  config = config_lib.load("configs/dtcm_synthetic.py:runlocal")        # get_config("runlocal")
  config = config_lib.apply_overrides(config, {"optimizer.lr": 3e-3})   # --config.optimizer.lr
  config_lib.validate(config)                                          # fields read at start
  config_lib.compute_dtype(config, "gpu")                              # "auto" -> bfloat16
  config = config_lib.resolve(config, "cpu")                          # derived fields fixed

A config file lives in the repository's `configs/` package (it imports `configs.common`) or
anywhere else (loaded from its path).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Mapping

import jax.numpy as jnp
import ml_collections as mlc

from darkjax import targets

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
# compute_dtype="auto" per compile platform: bfloat16 compute on accelerators (parameters, optimizer
# state, normalisation statistics and loss reductions stay float32), float32 on CPU, where bfloat16
# arithmetic is emulated and slower.
AUTO_COMPUTE_DTYPES = {"cpu": "float32", "gpu": "bfloat16", "tpu": "bfloat16"}
CONV_LOWERINGS = ("auto", "native")


class ConfigError(ValueError):
  """A config file, arg string, override or field is wrong; the message names it."""


def load_module(path: str):
  """The module of a config file (`.../configs/x.py` is imported as `configs.x`, so it shares
  `configs.common` with the other configs)."""
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist")
  parent = os.path.dirname(path)
  name = os.path.splitext(os.path.basename(path))[0]
  if os.path.basename(parent) == "configs":
    root = os.path.dirname(parent)
    if root not in sys.path:
      sys.path.insert(0, root)
    return importlib.import_module(f"configs.{name}")
  spec = importlib.util.spec_from_file_location(name, path)
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
  config = module.get_config((arg if arg is not None else spec_arg) or None)
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
        raise KeyError(f"config override {path!r}: no field {'.'.join(parents[:depth + 1])!r}; "
                       f"valid keys there: {sorted(node.keys())}")
      node = node[key]
    if not isinstance(node, mlc.ConfigDict) or leaf not in node:
      valid = sorted(node.keys()) if isinstance(node, mlc.ConfigDict) else []
      raise KeyError(f"config override {path!r}: no field {leaf!r}; valid keys there: {valid}")
    node[leaf] = value
  return out


def data_blocks(config: mlc.ConfigDict) -> list[mlc.ConfigDict]:
  """Every dataset block of `config` (a ConfigDict with `dir` and `split_index`), in order."""
  found = []
  for value in config.values():
    if isinstance(value, mlc.ConfigDict):
      if "dir" in value and "split_index" in value:
        found.append(value)
      else:
        found.extend(data_blocks(value))
  return found


def compute_dtype(config: Mapping[str, Any], platform: str | None = None) -> jnp.dtype:
  """`config.compute_dtype` resolved for `platform` (default: the platform being compiled for,
  `darkjax.targets.platform()`): activations and matmuls; parameters stay float32. "auto" is
  `AUTO_COMPUTE_DTYPES[platform]`; an explicit dtype wins on every platform."""
  name = str(config.get("compute_dtype", "auto"))
  if name not in COMPUTE_DTYPES:
    raise ConfigError(f"config.compute_dtype {name!r} unknown; valid: {COMPUTE_DTYPES}")
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
  "native" (XLA's own ops on every target)."""
  lowering = config.get("conv_lowering", "auto")
  if lowering not in CONV_LOWERINGS:
    raise ConfigError(f"config.conv_lowering {lowering!r} unknown; valid: {CONV_LOWERINGS}")
  return lowering


def validate(config: mlc.ConfigDict) -> mlc.ConfigDict:
  """Checks the fields every run reads at start and returns `config`; errors name the field."""
  compute_dtype(config)
  conv_lowering(config)
  if "trainer" not in config:
    raise ConfigError("config has no `trainer` field (the darkjax/trainers/<name>.py to run)")
  return config


class MissingWeightsError(ConfigError):
  """A paper config runs without the pretrained weights its recipe starts from."""


def _get_key(config: mlc.ConfigDict, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def check_required_weights(config: mlc.ConfigDict) -> None:
  """Raises MissingWeightsError naming every `config.required_weights` entry whose config key is
  empty: the weight file's public name, where it is published, the command that converts it and
  the config arg that takes it, and `init=none` as the explicit opt-out."""
  missing = []
  for name, entry in config.required_weights.items():
    if _get_key(config, entry.key):
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
