"""Pieces shared by all configs: the `arg` string parser and the blocks every config fills in.

Configs are ml_collections ConfigDicts built by `get_config(arg)`; `arg` is the part after the colon in
`--config=configs/x.py:frames=8,runlocal`. `main.py` locks the returned config, so a mistyped override
(`--config.optimizer.lrr=1`) fails and lists the valid keys.
"""

from __future__ import annotations

import ast
import difflib
import os

import ml_collections as mlc


def parse_arg(arg: str | None, variants: dict[str, dict] | None = None, **spec) -> mlc.ConfigDict:
  """Parses `"a=1,b=x,flag"` against defaults `spec` (big_vision style).

  Types follow the defaults (bool, int, float, str); a bare name sets a bool to True. An unknown
  name raises listing the valid ones. `variants` maps a flag (`runlocal`) to the defaults it brings
  for other args: a set flag fills in those args, but never one the arg string gives, so what the
  user says wins over a variant.
  """
  parsed = mlc.ConfigDict(dict(spec))
  given = given_args(arg)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    name, has_value, raw = item.partition("=")
    name = name.strip()
    if name not in spec:
      close = difflib.get_close_matches(name, list(spec), n=1)
      raise KeyError(f"unknown config arg {name!r} in {arg!r}"
                     + (f" (did you mean {close[0]!r}?)" if close else "")
                     + f"; valid args: {sorted(spec)}")
    default = spec[name]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f"config arg {name!r} needs a value ({name}=...)")
      parsed[name] = True
      continue
    parsed[name] = _convert(name, raw.strip(), default)
  for flag, defaults in (variants or {}).items():
    unknown = sorted(set(defaults) - set(spec))
    if unknown:
      raise KeyError(f"variant {flag!r} sets unknown args {unknown}; valid args: {sorted(spec)}")
    if parsed[flag]:
      parsed.update({name: value for name, value in defaults.items() if name not in given})
  return parsed


def given_args(arg: str | None) -> set[str]:
  """The names an arg string gives (`"a=1,flag"` -> {"a", "flag"})."""
  return {item.partition("=")[0].strip() for item in (arg or "").split(",") if item.strip()}


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


def own_dataset(given: str, paper_dataset: str, arg_name: str = "dataset") -> str:
  """The dataset a paper's config reads: its paper's (`paper_dataset`), or one of the user's own
  named by the config arg `arg_name` (prepared with `prepare --dataset folder`, read from
  $DARKJAX_DATA/<name> unless the config's directory arg says where: docs/datasets.md, "Your own
  dataset")."""
  if not given:
    return paper_dataset
  from darkjax.data import prepared  # pylint: disable=import-outside-toplevel  (configs load light)
  if not prepared.DATASET_NAME.match(given):
    raise ValueError(f"config arg {arg_name}={given!r}: a prepared dataset's name (letters, "
                     f"digits, '_', '.', '-'), the --name it was prepared with")
  if given == "synthetic":
    raise ValueError(f"config arg {arg_name}=synthetic: the embedded dataset has configs of its "
                     f"own (configs/<paper>_synthetic.py)")
  return given


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
      decay_exclude=(),        # regexes of parameter paths weight decay leaves alone
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
      # Set by the Trainer when config.batch_rounding changed batch_size / eval_batch_size for
      # the mesh's devices: what the config asked for (0: the batch ran as configured)
      batch_size_requested=0,
      eval_batch_size_requested=0,
      frames=16,               # T frames per clip
      stride=1,                # temporal stride of dense sampling
      sampling="dense",        # dense | segment
      short_side=0,            # resize short side before cropping (0: keep)
      resize=(0, 0),           # (H, W) frame size before cropping, overrides short_side ((0, 0): off)
      crop_size=0,             # square crop (0: no crop)
      train_crop="random",     # random | center
      flip=True,               # random horizontal flip (train)
      eval_clips=1,            # clips per video at eval (averaged)
      eval_crops=1,            # 1 (center) or 3 (three crops)
      normalise="per_clip",    # a mode of darkjax.data.normalise.MODES (per_clip, imagenet, ...)
      gamma=0.0,               # >0: gamma-correct frames on device (GIC)
      shuffle_window=256,      # examples in the window shuffle
      cycle_length=4,          # shard files read at once
      prefetch=2,              # batches prefetched by a thread (0: off)
      workers=0,               # >0: worker processes make the train batches (grain mp_prefetch);
                               # -1: chosen at run time (config.auto_input_workers): none on a
                               # CPU, on an accelerator from cores_per_device and the devices
      cores_per_device=0.0,    # host cores the train pipeline needs to keep one H100 busy
                               # (docs/benchmarks.md "Input pipeline per paper config")
      streams=(),              # extra record streams passed to the model (e.g. "flow", "ir")
      stream="video",          # the record stream the model sees as its clip (e.g. "day", "ir")
  ))
  block.update(overrides)
  return block


# Host cores each paper config's train pipeline needs to keep one H100 busy at its measured main
# step (docs/benchmarks.md, "Input pipeline per paper config": clips/s of the step over clips per
# CPU-second of the worker rows, "Records read from a memory map" for what the mapped reader
# saves and "Stand-in splits as long as a real epoch" for the file-order shuffle the earlier
# stand-ins charged to every 16 clips): `config.input.cores_per_device` of the real-data configs.
PIPELINE_CORES_PER_H100 = {"actlumos": 0.4, "liftnet": 1.8, "dtcm": 1.2, "twostream": 4.2,
                           "dinet": 2.1}


def accelerator_input_workers(config: mlc.ConfigDict) -> None:
  """A real-data config's input: worker processes chosen at run time (`input.workers=-1`): none on
  a CPU, on GPUs and TPUs enough for the config's pipeline to keep the host's devices busy
  (darkjax.config.auto_input_workers)."""
  config.input.workers = -1
  config.input.cores_per_device = PIPELINE_CORES_PER_H100[config.trainer]


def model_block(name: str, remat: str = "none", **kwargs) -> mlc.ConfigDict:
  """`config.model`: the zoo name for `darkjax.models.build` and its keyword arguments, with the
  rematerialisation policy of its repeated blocks (`kwargs.remat`: none | full | dots |
  dots_no_batch | conv_outputs, darkjax.layers.remat; `--config.model.kwargs.remat=full`)."""
  return mlc.ConfigDict(dict(name=name, kwargs=mlc.ConfigDict(dict(remat=remat, **kwargs))))


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


def augment_block(**overrides) -> mlc.ConfigDict:
  """Train-time augmentations on device (darkjax.data.augment; 0 turns a step off): colour_jitter
  (brightness / contrast range), affine (scale and translation range), rotation and shear (max
  degrees), optical_distortion (max radial coefficient k), elastic (max displacement as a fraction
  of the width), rain (probability per clip), cutmix (probability), frame_shuffle (probability)."""
  block = mlc.ConfigDict(dict(colour_jitter=0.0, affine=0.0, rotation=0.0, shear=0.0,
                              optical_distortion=0.0, elastic=0.0, rain=0.0, cutmix=0.0,
                              frame_shuffle=0.0))
  block.update(overrides)
  return block


def attention_eval(clips: int = 4, data: str = "") -> mlc.ConfigDict:
  """PViT and fusion attention maps of the first `clips` test clips (LIFT-Net)."""
  return mlc.ConfigDict(dict(type="attention_maps", clips=clips, data=data))


INIT_CHOICES = ("pretrained", "none")


def weights_entry(key: str, arg: str, file: str, source: str, command: str = "") -> mlc.ConfigDict:
  """One pretrained-weight file of a paper's recipe.

  key: the dotted config key that holds its path (`model_init`, `lift.pretrained.vit`); arg: the
  config arg that sets it; file: the file's public name; source: where it is published;
  command: how to turn it into what `key` expects (empty: the file is read as it is).
  """
  return mlc.ConfigDict(dict(key=key, arg=arg, file=file, source=source, command=command))


# The public pretrained weights the papers' recipes start from.
KINETICS_RESNEXT101 = dict(
    file="resnext-101-kinetics.pth",
    source="Kinetics-400 3D-ResNeXt-101, kenshohara/3D-ResNets-PyTorch",
    command="python -m darkjax.convert --arch resnext3d_101 --src resnext-101-kinetics.pth "
            "--out ~/darkjax_weights/resnext3d_101_kinetics --num-classes 0")
KINETICS_RESNET101 = dict(
    file="resnet-101-kinetics.pth",
    source="Kinetics-400 3D-ResNet-101, kenshohara/3D-ResNets-PyTorch",
    command="python -m darkjax.convert --arch resnet3d_101 --src resnet-101-kinetics.pth "
            "--out ~/darkjax_weights/resnet3d_101_kinetics --num-classes 0")
SPORTS1M_C3D = dict(
    file="c3d.pickle",
    source="Sports-1M C3D, DavideA/c3d-pytorch",
    command="python -m darkjax.convert --arch c3d --src c3d.pickle "
            "--out ~/darkjax_weights/c3d_sports1m --num-classes 0")
IMAGENET21K_VIT_B16 = dict(
    file="ViT-B_16.npz",
    source="ImageNet-21k ViT-B/16, google-research/vision_transformer (or a timm .pth / "
           ".safetensors of it); read as it is")
IG65M_R2PLUS1D_34 = dict(
    file="r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth",
    source="IG65M R(2+1)D-34, moabitcoin/ig65m-pytorch; read as it is")
KINETICS_R3D_18 = dict(
    file="r3d_18-b3b3357e.pth", source="Kinetics-400 R3D-18, torchvision; read as it is")


def require_weights(config: mlc.ConfigDict, init: str, runlocal: bool = False,
                    **entries: mlc.ConfigDict) -> None:
  """Records `entries` in `config.required_weights` unless `init="none"` (an explicit opt-out:
  random initialisation) or a `runlocal` smoke run."""
  if init not in INIT_CHOICES:
    raise ValueError(f"config arg init={init!r}: valid {INIT_CHOICES} (none: train from random "
                     f"initialisation instead of the paper's pretrained weights)")
  if init == "none" or runlocal:
    return
  for name, entry in entries.items():
    config.required_weights[name] = entry


# The networks of factorised (2+1)D convolutions, by name prefix (R(2+1)D: LIFT-Net's luminous
# stream, ActLumos's backbones): a `runlocal` run of one traces XLA's native conv ops (`smoke_run`).
FACTORISED_NETWORKS = ("r2plus1d", "liftnet", "actlumos")


def smoke_network(config: mlc.ConfigDict) -> str:
  """The network whose convolutions a run traces: its model's backbone, or the model itself."""
  return config.model.get("kwargs", {}).get("backbone") or config.model.name


def smoke_run(config: mlc.ConfigDict) -> mlc.ConfigDict:
  """What every `runlocal` variant shares (called once its tiny model is set): the fastest smoke
  run on a laptop CPU. XLA opt level 0 (on CPU also XLA's legacy emitter, darkjax.targets: a
  smoke run's time is mostly compilation); the conv lowering of its network (`smoke_network`):
  XLA's native conv ops for the (2+1)D networks (`FACTORISED_NETWORKS`), whose CPU rewrites
  compile longer and run no faster at this size, and the program an accelerator runs; the CPU
  rewrites (`conv_lowering="auto"`, darkjax.layers.cpu_conv3d) for networks of full 3D kernels
  (C3D, 3D-ResNet, small3d), which compile about as fast and run several times faster than
  XLA:CPU's native 3D convolution: scoring a whole test split is most of such a run
  (docs/benchmarks.md, "Compile time of smoke runs"). And a 16-example shuffle window over its few
  clips. Each config then sets its own clip size, steps and cadences."""
  config.xla_opt_level = 0
  factorised = smoke_network(config).startswith(FACTORISED_NETWORKS)
  config.conv_lowering = "native" if factorised else "auto"
  config.input.shuffle_window = 16
  return config


def base_config(trainer: str, total_steps: int, **overrides) -> mlc.ConfigDict:
  """The fields every config has besides input / model / optimizer: mesh, sharding, precision,
  logging, evaluation and checkpoint cadence, pretrained-weight loading. Override by keyword."""
  config = mlc.ConfigDict(dict(
      trainer=trainer,
      seed=0,
      total_steps=total_steps,
      # > 0: total_steps = ceil(total_epochs x the primary data source's train split / batch),
      # resolved from the prepared manifest when the run starts (total_steps is then ignored)
      total_epochs=0.0,
      # Gradient accumulation micro-batches per step: the mean gradient of the global batch, but
      # BatchNorm normalises each micro-batch by its own statistics and each draws its own
      # dropout / augmentation, so a network with either trains alike, not bit for bit alike.
      accum_steps=1,
      # A global batch the mesh's devices (data x fsdp) x accum_steps do not divide: "nearest"
      # trains with the nearest multiple (ties up; the learning rate is not rescaled; config.json
      # records both, darkjax.config.round_batches), "error" stops at start naming the batches
      # that would run. The same rule applies to input.eval_batch_size.
      batch_rounding="nearest",
      label_smoothing=0.0,
      # "auto": bfloat16 compute on GPU / TPU, float32 on CPU (parameters, optimizer state,
      # normalisation statistics and losses stay float32); an explicit dtype wins everywhere
      compute_dtype="auto",
      # XLA backend optimisation level of the compiled steps; -1: XLA's default. runlocal sets 0:
      # a smoke run's time is compilation (docs/benchmarks.md); 0 also sets XLA:CPU's legacy
      # emitter, on a TPU XLA's lowest run-time effort (darkjax.targets.fastest_compile_options)
      xla_opt_level=-1,
      # JAX's persistent compilation cache (darkjax.targets.use_compilation_cache): "auto" =
      # $DARKJAX_COMPILATION_CACHE or ~/.cache/darkjax/xla; "" = off; else the directory
      compilation_cache="auto",
      # Device memory check before each phase's first step (darkjax/fit.py): "check" stops naming
      # settings that fit, "auto" takes the first of them, "off" skips it. device_memory_gib > 0
      # replaces the device's own limit (a CPU reports none); fit_applied records fit's choice.
      fit="check",
      device_memory_gib=0.0,
      fit_applied="",
      conv_lowering="auto",   # darkjax.train.lowering_scope: "native" = XLA's 3D ops everywhere
      mesh=mlc.ConfigDict(dict(data=-1, fsdp=1)),
      sharding=mlc.ConfigDict(dict(rules=(), min_fsdp_size=2 ** 14)),
      model_init="",                 # `python -m darkjax.convert` output, or another run's workdir
      # name -> weights_entry(...): pretrained weights the paper's recipe starts from; a run with
      # any of them empty stops at start naming the file and the command (see require_weights)
      required_weights=mlc.ConfigDict(),
      # dont_load: regexes of parameters not to load; prefix: sub-module the checkpoint goes to;
      # normalise_key: the key of the normalisation the loaded weights read, checked against the
      # one they were trained on (darkjax.convert records it); check_normalise=False skips that
      # check for model_init and every pretrained sub-module a trainer loads
      model_load=mlc.ConfigDict(dict(dont_load=(), prefix="", normalise_key="input.normalise",
                                     check_normalise=True)),
      log_every=20,
      eval_every=0,                  # 0: only at the end; -1: never
      # name -> evaluator block (classification_eval, ...); names tag the metrics ("eval/top1")
      evals=mlc.ConfigDict(dict(eval=classification_eval())),
      checkpoint_every=500,
      keep_checkpoints=2,
      async_checkpoints=True,
      progress_bar=True,
      # jax.profiler trace of `steps` train steps (0: none), after `skip` steps of the invocation
      # (compile, warm-up): WORKDIR/tensorboard/plugins/profile/ and profile.md (darkjax.profiling)
      profile=mlc.ConfigDict(dict(steps=0, skip=2)),
  ))
  config.update(overrides)
  return config
