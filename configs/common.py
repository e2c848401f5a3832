"""Pieces shared by all configs: the `arg` string parser and the blocks every config fills in.

Configs are ml_collections ConfigDicts built by `get_config(arg)`; `arg` is the part after the colon in
`--config=configs/x.py:frames=8,runlocal`. `main.py` locks the returned config, so a mistyped override
(`--config.optimizer.lrr=1`) fails and lists the valid keys.
"""

from __future__ import annotations

import ast
import os

import ml_collections as mlc


def parse_arg(arg: str | None, **spec) -> mlc.ConfigDict:
  """Parses `"a=1,b=x,flag"` against defaults `spec` (big_vision style).

  Types follow the defaults (bool, int, float, str); a bare name sets a bool to True. An unknown name
  raises listing the valid ones.
  """
  parsed = mlc.ConfigDict(dict(spec))
  if not arg:
    return parsed
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    name, has_value, raw = item.partition("=")
    name = name.strip()
    if name not in spec:
      raise KeyError(f"unknown config arg {name!r} in {arg!r}; valid args: {sorted(spec)}")
    default = spec[name]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f"config arg {name!r} needs a value ({name}=...)")
      parsed[name] = True
      continue
    parsed[name] = _convert(name, raw.strip(), default)
  return parsed


def _convert(name: str, raw: str, default):
  if isinstance(default, bool):
    if raw.lower() in ("1", "true", "yes", "y"):
      return True
    if raw.lower() in ("0", "false", "no", "n"):
      return False
    raise ValueError(f"config arg {name!r}: expected a boolean, got {raw!r}")
  if isinstance(default, (int, float)):
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"config arg {name!r}: expected a number, got {raw!r}") from e
    if isinstance(default, int) and not isinstance(value, int):
      raise ValueError(f"config arg {name!r}: expected an integer, got {raw!r}")
    return type(default)(value)
  return raw


def default_data_root() -> str:
  """Where prepared datasets live unless a config says otherwise ($DARKJAX_DATA or ~/darkjax_data)."""
  return os.environ.get("DARKJAX_DATA", os.path.join(os.path.expanduser("~"), "darkjax_data"))


def optimizer_block(name: str = "sgd", lr: float = 0.1, **overrides) -> mlc.ConfigDict:
  """Optimizer + schedule block read by `darkjax.optim.make_optimizer`."""
  block = mlc.ConfigDict(dict(
      name=name,               # sgd | adamw
      lr=lr,                   # peak learning rate (after warmup)
      momentum=0.9,            # sgd
      nesterov=False,          # sgd
      b1=0.9, b2=0.999,        # adamw
      weight_decay=0.0,        # decoupled for adamw, L2 added to gradients for sgd
      grad_clip_norm=0.0,      # 0: off
      schedule="cosine",       # constant | cosine | step | dann
      warmup_steps=0,
      decay_boundaries=(),     # step schedule: fractions of total steps
      decay_factor=0.1,        # step schedule
      min_lr_ratio=0.0,        # cosine floor
      frozen=(),               # regexes of parameter paths kept fixed
  ))
  block.update(overrides)
  return block


def input_block(**overrides) -> mlc.ConfigDict:
  """Input pipeline block read by `darkjax.data.pipeline`."""
  block = mlc.ConfigDict(dict(
      data=data_block("synthetic", ""),
      batch_size=16,           # global
      eval_batch_size=16,      # global
      frames=16,               # T frames per clip
      stride=1,                # temporal stride of dense sampling
      sampling="dense",        # dense | segment
      short_side=0,            # resize short side before cropping (0: keep)
      crop_size=0,             # square crop (0: no crop)
      train_crop="random",     # random | center
      flip=True,               # random horizontal flip (train)
      eval_clips=1,            # clips per video at eval (averaged)
      eval_crops=1,            # 1 (center) or 3 (three crops)
      normalise="per_clip",    # per_clip | imagenet | kinetics | none
      gamma=0.0,               # >0: gamma-correct frames on device (GIC)
      shuffle_window=256,      # examples in the window shuffle
      cycle_length=4,          # shard files read at once
      prefetch=2,              # batches prefetched by a thread (0: off)
      streams=(),              # extra record streams passed to the model (e.g. "flow", "ir")
      stream="video",          # the record stream the model sees as its clip (e.g. "day", "ir")
  ))
  block.update(overrides)
  return block


def model_block(name: str, **kwargs) -> mlc.ConfigDict:
  """`config.model`: the zoo name for `darkjax.models.build` and its keyword arguments."""
  return mlc.ConfigDict(dict(name=name, kwargs=mlc.ConfigDict(kwargs)))


def data_block(name: str, directory: str, split_index: int = 0, **overrides) -> mlc.ConfigDict:
  """`config.input.data`: a prepared dataset (`split_index` k picks `train<k>` / `test<k>` of
  datasets with several official splits)."""
  block = mlc.ConfigDict(dict(name=name, dir=directory, split="train", eval_split="test",
                              split_index=split_index, generate=mlc.ConfigDict()))
  block.update(overrides)
  return block


# `config.evals` entries (darkjax.evaluators): one per evaluation, run every `eval_every` steps.
def classification_eval(data: str = "", split: str = "") -> mlc.ConfigDict:
  """Top-1/5, mean class accuracy, per-class accuracy and confusion PNG over a whole split.
  data: one of the task's data sources ("" = its first); split: "" = the data's eval_split."""
  return mlc.ConfigDict(dict(type="classification", data=data, split=split))


def enhancement_eval(clips: int = 3, data: str = "") -> mlc.ConfigDict:
  """Input / enhanced / frame-difference grid of the first `clips` test clips (DTCM)."""
  return mlc.ConfigDict(dict(type="enhancement", clips=clips, data=data))


def attention_eval(clips: int = 4, data: str = "") -> mlc.ConfigDict:
  """PViT and fusion attention maps of the first `clips` test clips (LIFT-Net)."""
  return mlc.ConfigDict(dict(type="attention_maps", clips=clips, data=data))


def base_config(trainer: str, total_steps: int, **overrides) -> mlc.ConfigDict:
  """The fields every config has besides input / model / optimizer: mesh, sharding, precision,
  logging, evaluation and checkpoint cadence, pretrained-weight loading. Override by keyword."""
  config = mlc.ConfigDict(dict(
      trainer=trainer,
      seed=0,
      total_steps=total_steps,
      accum_steps=1,                 # gradient accumulation micro-batches per step
      label_smoothing=0.0,
      compute_dtype="float32",       # bfloat16: mixed precision (parameters stay float32)
      mesh=mlc.ConfigDict(dict(data=-1, fsdp=1)),
      sharding=mlc.ConfigDict(dict(rules=(), min_fsdp_size=2 ** 14)),
      model_init="",                 # `python -m darkjax.convert` output, or another run's workdir
      # dont_load: regexes of parameters not to load; prefix: sub-module the checkpoint goes to
      model_load=mlc.ConfigDict(dict(dont_load=(), prefix="")),
      log_every=20,
      eval_every=0,                  # 0: only at the end; -1: never
      # name -> evaluator block (classification_eval, ...); names tag the metrics ("eval/top1")
      evals=mlc.ConfigDict(dict(eval=classification_eval())),
      checkpoint_every=500,
      keep_checkpoints=2,
      async_checkpoints=True,
      progress_bar=True,
  ))
  config.update(overrides)
  return config
