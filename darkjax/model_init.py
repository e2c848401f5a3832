"""`config.model_init`: the weights a run starts from (a directory `python -m darkjax.convert`
wrote, or a darkjax run's workdir) merged into the model's freshly initialised variables, every
missing, unexpected or mis-shaped entry named, and refused where they were converted for another
architecture or trained on other input normalisation."""

from __future__ import annotations

import os
import re

import jax.numpy as jnp

from darkjax import variables as variables_lib
from darkjax.config import ConfigError
from darkjax.data import normalise as normalise_lib


def load_pretrained(variables: dict, init_dir: str, dont_load: tuple[str, ...] = (),
                    prefix: str = "", normalise: tuple[str, str] | None = None,
                    arch: str = "") -> dict:
  """Replaces parameters by those saved in `init_dir` (darkjax.convert output).

  `prefix` places the checkpoint under a sub-module (e.g. "extractor" for a backbone inside a
  larger model); only that sub-tree is then compared. Paths matching a `dont_load` regex keep their
  initial values. Raises listing every missing, unexpected and mis-shaped entry. `normalise`
  (config key, its mode): raises unless the weights were trained on inputs in that mode. `arch`:
  the model the weights are for (config.model.name), named in the errors.
  """
  from darkjax.convert import io as convert_io  # pylint: disable=import-outside-toplevel
  try:
    loaded, meta = convert_io.load_variables(init_dir)
  except convert_io.CheckpointReadError as error:
    convert = ""
    if os.path.isfile(init_dir):   # a PyTorch / Caffe / npz file given as it was downloaded
      convert = (f"; convert it first: python -m darkjax.convert --arch {arch or 'MODEL'} --src "
                 f"{init_dir} --out DIR, then config.model_init=DIR")
    raise ConfigError(f"config.model_init: {error}{convert}") from None
  found, where = convert_io.weights_architecture(meta)
  if arch and found and found != arch and not prefix:
    raise ConfigError(f"config.model_init {init_dir}: holds {found!r} weights (its {where}), "
                      f"config.model.name is {arch!r}: give weights of that architecture, or "
                      f"--config.model.name={found}")
  if normalise is not None:
    key, mode = normalise
    normalise_lib.check_pretrained(convert_io.recorded_normalise(meta), mode, key,
                                   f"config.model_init {init_dir}")
  skip = [re.compile(p) for p in dont_load]
  ours, theirs = variables_lib.flatten(variables), variables_lib.flatten(loaded)
  if prefix:
    theirs = {f"{k.split('/', 1)[0]}/{prefix}/{k.split('/', 1)[1]}": v for k, v in theirs.items()}
  in_scope = lambda k: not prefix or k.split("/", 1)[1].startswith(prefix + "/")  # noqa: E731
  keep = lambda k: in_scope(k) and not any(p.search(k) for p in skip)  # noqa: E731
  problems = variables_lib.mismatch(ours, theirs, keep)
  if problems:
    built = meta.get("model_kwargs") or {}
    hint = (f" The weights were converted for {meta.get('arch', 'their model')} built with "
            f"{built} (its meta.json's model_kwargs): build the model with the same (e.g. "
            + ", ".join(f"--config.model.kwargs.{k}={v!r}" for k, v in built.items())
            + ", or under backbone_kwargs where the weights fill a sub-module)."
            if built else "")
    raise ConfigError(f"config.model_init {init_dir}: {problems.describe()}.{hint} "
                      "config.model_load.dont_load skips keys the model re-initialises on "
                      "purpose (a classifier head of another size); skipping others trains "
                      "another network than the weights'")
  merged = {k: (jnp.asarray(theirs[k], ours[k].dtype) if keep(k) else v) for k, v in ours.items()}
  return variables_lib.unflatten(merged)
