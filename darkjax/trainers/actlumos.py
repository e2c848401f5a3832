"""ActLumos training: teacher -> ssl -> student, three resumable phases of darkjax.train.Trainer.

  phase teacher (WORKDIR/teacher; with `kd` unless `teacher_init` names a finished teacher run):
    the dual-stream teacher (darkjax/models/actlumos.py) on the dark clip and its multi-scale
    Retinex clip (darkjax/layers/retinex.py, computed on device from the augmented uint8 clip),
    loss CE + supcon_weight * SupCon(per-stream projections, labels) (`supcon`; the dark and Retinex
    views of every clip and all clips of its class are positives, losses.supcon_loss).
    `config.teacher` holds its steps, optimizer and cadence.
  phase ssl (WORKDIR/ssl; with `ssl`): the student's R(2+1)D-34 (`config.ssl.features=backbone`,
    the README's Stage 1; `cls`: the whole student's CLS embedding) + a projection head on
    unlabelled dark clips from every dataset in `config.ssl.datasets` (their train splits, read as
    one stream of shard files), two augmented views of each clip (colour jitter + random affine
    drawn twice), NT-Xent (losses.nt_xent_loss). `config.ssl` holds its steps, optimizer, batch,
    augmentations and features.
  phase student (WORKDIR/student): the student on dark clips only, CE + kd_weight * Hinton KD
    (losses.kd_kl_loss, T = kd_temperature, times T^2) against the frozen teacher (`kd`; with
    `kd_unlabelled` the KD term also reads a batch of the SSL sources' unlabelled clips beside
    each labelled batch, the student's BatchNorm over both), starting
    from the SSL weights (`ssl`: the backbone, or with `features=cls` everything but the
    classifier). The SSL phase (or without it the student) starts from `backbone_init` unless
    `student_pretrained` is False (random initialisation; the teacher still loads it).

Each phase is the generic Trainer with its own Task and sub-directory, so re-running the command
resumes whichever phase was running; a finished phase restores its last checkpoint and hands its
weights on. A teacher (from phase 1 or `teacher_init`) whose variables do not fit the configured
teacher, or a teacher directory trained with another architecture, stops the run naming both.
The teacher's `fusion_maps` feed the `fusion_maps` evaluator (Retinex frames beside the dark ones,
DFF's W_ret over the frames).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc

from darkjax import config as config_lib
from darkjax import losses
from darkjax import task as task_lib
from darkjax import variables as variables_lib
from darkjax.convert import io as convert_io
from darkjax.data import prepared, normalise, ops, pipeline
from darkjax.data.augment import augment
from darkjax.data.classification import ClassificationData
from darkjax.layers import norm
from darkjax.layers import retinex as retinex_lib
from darkjax.models import actlumos
from darkjax.trainers.base import TaskBase
from darkjax.config import ConfigError

log = logging.getLogger("darkjax")

# The student batch's unlabelled clips under `kd_unlabelled`; their stream's shuffle seed offset.
UNLABELLED = "unlabelled_video"
_UNLABELLED_SEED_OFFSET = 7919

# The config keys that fix the teacher's variables: a teacher run must agree on all of them.
TEACHER_ARCHITECTURE = ("model.name", "model.kwargs", "actlumos.fusion", "actlumos.reduction",
                        "actlumos.projection_dim", "actlumos.stream_statistics")


# ================================================================ inputs shared by the phases
class ActLumosInputs:
  """uint8 batches -> normalised dark clips and their Retinex clips; train-time augmentation."""

  def __init__(self, config: mlc.ConfigDict):
    self.config, self.cfg = config, config.actlumos
    self.dtype = config_lib.compute_dtype(config)
    config_lib.check_choice(config, "actlumos.fusion", actlumos.FUSIONS)
    config_lib.check_choice(config, "actlumos.stream_statistics", actlumos.STREAM_STATISTICS)

  def retinex_uint8(self, dark_uint8: jax.Array) -> jax.Array:
    r = self.cfg.retinex
    return retinex_lib.retinex_uint8(dark_uint8, tuple(r.sigmas), r.low_percentile,
                                     r.high_percentile)

  def normalise(self, clip_uint8: jax.Array) -> jax.Array:
    return normalise.normalise(clip_uint8, self.config.input.normalise, self.dtype)

  def streams(self, dark_uint8: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.normalise(dark_uint8), self.normalise(self.retinex_uint8(dark_uint8))

  def augmented(self, batch: Mapping[str, jax.Array], rng: jax.Array, cfg=None) -> jax.Array:
    """The augmented uint8 dark clips (the Retinex clip is computed from them)."""
    streams, _, _ = augment({"video": batch["video"]}, batch["label"], rng,
                            cfg if cfg is not None else self.cfg.augment)
    return streams["video"]


def _nested_merge(variables: dict, path: tuple[str, ...], loaded: Mapping[str, Any],
                  source: str, skip: tuple[str, ...] = ()) -> dict:
  """`variables[c][path...]` replaced by `loaded[c]` for params and batch_stats, strictly."""
  out = {c: dict(v) for c, v in variables.items()}
  for collection in ("params", "batch_stats"):
    holder = out[collection]
    for key in path[:-1]:
      holder[key] = dict(holder[key])
      holder = holder[key]
    merged = variables_lib.merge_subtree({collection: holder}, collection, path[-1],
                                         loaded.get(collection, {}), source, skip=skip)
    holder[path[-1]] = merged[collection][path[-1]]
  return out


def _pretrained_backbone(config: mlc.ConfigDict, backbone: str) -> dict:
  """The backbone's weights from `config.actlumos.backbone_init`: a PyTorch-layout R(2+1)D state
  dict (the IG65M file), or a directory (`python -m darkjax.convert` output, or a darkjax run's
  workdir whose model is the backbone, e.g. the tiny R(2+1)D pretrained on the synthetic set's
  bright clips), head left out; checked against `input.normalise`."""
  return convert_io.pretrained_backbone(backbone, config.actlumos.backbone_init,
                                        "config.actlumos.backbone_init", config.input.normalise,
                                        "input.normalise", config_lib.check_normalise(config))


class _Base(TaskBase):
  """Data source, inputs and model construction shared by the phases."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    self.cfg = config.actlumos
    self.inputs = ActLumosInputs(config)
    self.data_sources = {"input": ClassificationData(config.input, config.seed)}

  def _kwargs(self) -> dict:
    return {**self.config.model.kwargs.to_dict(), "projection_dim": self.cfg.projection_dim,
            "dtype": self.dtype}

  def make_teacher(self) -> actlumos.ActLumosTeacher:
    return actlumos.VARIANTS[f"actlumos_teacher{self._suffix()}"](
        num_classes=self.num_classes, fusion=self.cfg.fusion, reduction=self.cfg.reduction,
        stream_statistics=self.cfg.stream_statistics, **self._kwargs())

  def make_student(self) -> actlumos.ActLumosStudent:
    return actlumos.VARIANTS[f"actlumos_student{self._suffix()}"](
        num_classes=self.num_classes, **self._kwargs())

  def _apply_with_ce(self, params, model_state, batch, drop_rng, *clips):
    """The model in train mode on `clips`: (logits, out, new model state, CE, {ce, accuracy}).
    CE and accuracy read the first len(batch["label"]) logits: clips after the labelled ones
    (the student's unlabelled clips under `kd_unlabelled`) have no label."""
    (logits, out), new_state = self.model.apply(
        {"params": params, **model_state}, *clips, train=True, rngs={"dropout": drop_rng},
        mutable=list(model_state))
    labels = batch["label"]
    labelled = logits[:labels.shape[0]]
    ce = losses.softmax_cross_entropy(labelled, labels, self.config.label_smoothing)
    return logits, out, dict(new_state), ce, {
        "ce": ce, "accuracy": jnp.mean(jnp.argmax(labelled, -1) == labels)}

  def _suffix(self) -> str:
    name = self.config.model.name
    if name not in ("actlumos", "actlumos_tiny_test"):
      raise ConfigError(f"config.model.name {name!r}: ActLumos builds actlumos or "
                        "actlumos_tiny_test")
    return name[len("actlumos"):]


# ================================================================ phase: teacher
class TeacherTask(_Base):
  """Dual-stream teacher, CE + lambda_sup SupCon."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    self.model = self.make_teacher()
    self.merges_pretrained = bool(self.cfg.backbone_init)

  def init_variables(self, rng, batch) -> dict:
    dark, ret = self.inputs.streams(batch["video"])
    return dict(self.model.init({"params": rng, "dropout": rng}, dark, ret, train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    aug_rng, drop_rng = jax.random.split(rng)
    dark, ret = self.inputs.streams(self.inputs.augmented(batch, aug_rng))
    _, out, new_state, ce, metrics = self._apply_with_ce(params, model_state, batch, drop_rng,
                                                         dark, ret)
    loss = ce
    if self.cfg.supcon:
      supcon = losses.supcon_loss(out["projections"], batch["label"],
                                  self.cfg.supcon_temperature)
      loss = ce + self.cfg.supcon_weight * supcon
      metrics["supcon"] = supcon
    if "fusion_weights" in out:
      metrics["mean_w_ret"] = jnp.mean(out["fusion_weights"][..., 1])
    return loss, (new_state, metrics)

  def init_from(self, variables: dict) -> dict:
    """The pretrained R(2+1)D-34 (config.actlumos.backbone_init) into the shared backbone."""
    loaded = _pretrained_backbone(self.config, self.model.backbone)
    if self.model.stream_statistics == "separate":   # each stream starts from the same statistics
      loaded = {**loaded, "batch_stats": norm.per_group_stats(loaded["batch_stats"], 2)}
    return _nested_merge(variables, ("backbone",), loaded, self.cfg.backbone_init)

  def predict(self, variables, streams, source=None):
    del source
    dark, ret = self.inputs.streams(streams["video"])
    logits, _ = self.model.apply(variables, dark, ret, train=False)
    return logits

  def fusion_maps(self, variables, streams) -> dict[str, jax.Array]:
    """logits, `retinex` (B, T, H, W, C) uint8 and, with DFF, `w_ret` (B, T', H', W')."""
    ret_uint8 = self.inputs.retinex_uint8(streams["video"])
    logits, out = self.model.apply(variables, self.inputs.normalise(streams["video"]),
                                   self.inputs.normalise(ret_uint8), train=False)
    maps = {"logits": logits, "retinex": ret_uint8}
    if "fusion_weights" in out:
      maps["w_ret"] = out["fusion_weights"][..., 1]
    return maps


# ================================================================ phase: ssl
def ssl_sources(config: mlc.ConfigDict) -> list[prepared.Dataset]:
  """The prepared datasets of `config.ssl.datasets`, each with a train split; errors name the
  entry and how to prepare it."""
  names, dirs = tuple(config.ssl.datasets), tuple(config.ssl.dirs)
  if not names or len(names) != len(dirs):
    raise ConfigError(f"config.ssl.datasets {list(names)} and config.ssl.dirs {list(dirs)} must "
                      "be non-empty and of equal length")
  labelled = config.input.data
  ssl_split, split = int(config.ssl.split_index), int(labelled.split_index)
  for name, directory in zip(names, dirs):
    if (ssl_split != split and split > 0 and name == labelled.name
        and os.path.abspath(directory) == os.path.abspath(labelled.dir)):
      raise ConfigError(
          f"config.ssl.split_index={ssl_split} but config.input.data.split_index={split}: the "
          f"SSL phase would read {name}'s train{ssl_split or ''} clips, which hold test clips of "
          f"split {split}, the split this run evaluates on. Set config.ssl.split_index={split} "
          f"too (the config's `split={split}` arg sets both).")
  out = []
  for name, directory in zip(names, dirs):
    # A synthetic source is generated on first use: with `config.ssl.generate` (a set of its own,
    # e.g. more unlabelled clips from another generator seed), else as the labelled data.
    generate = config.ssl.get("generate") or config.input.data.generate
    block = {"name": name, "dir": directory, "split_index": config.ssl.split_index,
             "generate": generate if name == "synthetic" else {}}
    try:
      dataset = prepared.open_dataset(block)
    except prepared.DatasetNotPreparedError as error:
      raise prepared.DatasetNotPreparedError(
          f"config.ssl.datasets entry {name!r} (the SSL phase's unlabelled clips): {error}"
          ) from None
    try:
      split = dataset.split_name("train")
    except prepared.DatasetSplitError:
      split = f"train{dataset.split_index}" if dataset.split_index else "train"
    if split not in dataset.manifest["splits"]:
      raise prepared.DatasetNotPreparedError(
          f"config.ssl.datasets entry {name!r}: {dataset.directory} has no split {split!r} "
          f"(splits there: {sorted(dataset.manifest['splits'])}); the SSL phase reads the train "
          f"clips. Re-prepare it with {prepared.prepare_command(dataset, '--overwrite')}, or set "
          f"config.ssl.split_index.")
    out.append(dataset)
  return out


def unlabelled_dataset(config: mlc.ConfigDict, sources: list[prepared.Dataset], local_batch: int,
                       seed: int, reader: str):
  """The train clips of `sources` (ssl_sources) as one shuffled stream of batches of `video`
  (their labels are never read), for the SSL phase or the student's KD on unlabelled clips."""
  files = [f for dataset in sources for f in dataset.files("train")]
  shapes = [dataset.frame_shapes().get("video") for dataset in sources]
  same = all(s == shapes[0] for s in shapes)
  log.info("ActLumos %s: %d unlabelled clips from %s", reader, sum(n for _, n in files),
           ", ".join(d.name for d in sources))
  return pipeline.train_dataset(
      files, ops.ClipSpec.from_config(config.input), local_batch, seed=seed,
      frame_shapes={"video": shapes[0] if same else None},
      shuffle_window=config.input.shuffle_window, cycle_length=config.input.cycle_length,
      prefetch=config.input.prefetch)


class _WithUnlabelled(grain.transforms.Map):
  """(labelled batch, unlabelled batch) -> the labelled batch plus `unlabelled_video`."""

  def map(self, element):
    labelled, unlabelled = element
    return {**labelled, UNLABELLED: unlabelled["video"]}


def ssl_backbone_path(config: mlc.ConfigDict) -> tuple[str, ...]:
  """Where the SSL phase's variables hold the R(2+1)D (models.actlumos.ActLumosSSL)."""
  return ("student", "backbone") if config.ssl.features == "cls" else ("backbone",)


class SSLTask(_Base):
  """Student + projection head, NT-Xent between two augmented views of each unlabelled clip."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    self.model = actlumos.ActLumosSSL(self.make_student(), features=config.ssl.features)
    self.merges_pretrained = bool(self.cfg.backbone_init and self.cfg.student_pretrained)
    self.sources = ssl_sources(config) if num_classes is None else []

  def train_dataset(self, local_batch: int):
    return unlabelled_dataset(self.config, self.sources, local_batch, self.config.seed, "SSL")

  def init_variables(self, rng, batch) -> dict:
    dark = self.inputs.normalise(batch["video"])
    return dict(self.model.init({"params": rng, "dropout": rng}, dark, train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    rng_a, rng_b, drop_rng = jax.random.split(rng, 3)
    views = [self.inputs.normalise(self.inputs.augmented(batch, k, self.config.ssl.augment))
             for k in (rng_a, rng_b)]
    size = views[0].shape[0]
    (_, out), new_state = self.model.apply(
        {"params": params, **model_state}, jnp.concatenate(views, 0), train=True,
        rngs={"dropout": drop_rng}, mutable=list(model_state))
    z = out["projection"]
    loss = losses.nt_xent_loss(z[:size], z[size:], self.config.ssl.temperature)
    return loss, (dict(new_state), {"nt_xent": loss})

  def init_from(self, variables: dict) -> dict:
    loaded = _pretrained_backbone(self.config, self.model.student.backbone)
    return _nested_merge(variables, ssl_backbone_path(self.config), loaded,
                         self.cfg.backbone_init)

  def predict(self, variables, streams, source=None):
    raise ValueError("the ActLumos SSL phase has no trained classifier; evaluate the student "
                     "phase (config.evals run there)")


# ================================================================ phase: student
class Task(_Base):
  """The one-stream student, CE (+ lambda_kd Hinton KD from the frozen teacher)."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None,
               teacher_variables: Mapping[str, Any] | None = None,
               ssl_variables: Mapping[str, Any] | None = None, teacher_source: str = ""):
    super().__init__(config, num_classes)
    self.student = self.make_student()
    kd = bool(self.cfg.kd)
    self.model = actlumos.ActLumosDistill(self.student, self.make_teacher() if kd else None)
    self.teacher_variables, self.ssl_variables = teacher_variables, ssl_variables
    self.teacher_source = teacher_source or "the teacher phase"
    if kd and teacher_variables is None and task_lib.trains_from_earlier(num_classes):
      log.warning("ActLumos student with kd=True but no teacher: the frozen teacher keeps its "
                  "initial weights (run through darkjax.phases.run_phases for all phases)")
    self.merges_pretrained = bool(teacher_variables is not None or ssl_variables is not None
                                  or (self.cfg.backbone_init and self.cfg.student_pretrained))
    self.kd_unlabelled = bool(self.cfg.get("kd_unlabelled", False))
    if self.kd_unlabelled and not kd:
      raise ConfigError("config.actlumos.kd_unlabelled=True distils on unlabelled clips and needs "
                        "config.actlumos.kd=True (a teacher); set kd_unlabelled=False or kd=True")
    self.sources = ssl_sources(config) if self.kd_unlabelled and num_classes is None else []

  def train_dataset(self, local_batch: int):
    """The labelled batches; with `kd_unlabelled` each zipped with as many unlabelled clips."""
    labelled = self.data.train_dataset(local_batch)
    if not self.kd_unlabelled:
      return labelled
    unlabelled = unlabelled_dataset(self.config, self.sources, local_batch,
                                    self.config.seed + _UNLABELLED_SEED_OFFSET, "student KD")
    merged = grain.experimental.ZipIterDataset([labelled, unlabelled]).map(_WithUnlabelled())
    if self.config.input.prefetch:
      merged = grain.experimental.ThreadPrefetchIterDataset(
          merged, prefetch_buffer_size=self.config.input.prefetch)
    return merged

  def init_variables(self, rng, batch) -> dict:
    dark, ret = self.inputs.streams(batch["video"])
    return dict(self.model.init({"params": rng, "dropout": rng}, dark,
                                ret if self.cfg.kd else None, train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    aug_rng, drop_rng = jax.random.split(rng)
    dark_uint8 = self.inputs.augmented(batch, aug_rng)
    size = dark_uint8.shape[0]
    if self.kd_unlabelled:   # one call on labelled + unlabelled clips: CE reads the first `size`
      extra = {"video": batch[UNLABELLED], "label": jnp.zeros_like(batch["label"])}
      dark_uint8 = jnp.concatenate(
          [dark_uint8, self.inputs.augmented(extra, jax.random.fold_in(aug_rng, 1))], 0)
    dark = self.inputs.normalise(dark_uint8)
    ret = self.inputs.normalise(self.inputs.retinex_uint8(dark_uint8)) if self.cfg.kd else None
    logits, out, new_state, ce, metrics = self._apply_with_ce(params, model_state, batch,
                                                              drop_rng, dark, ret)
    loss = ce
    if self.cfg.kd:   # over every clip of the call: the labelled ones and any unlabelled ones
      kd = losses.kd_kl_loss(logits, out["teacher_logits"], self.cfg.kd_temperature)
      loss = ce + self.cfg.kd_weight * kd
      metrics.update(kd=kd, teacher_accuracy=jnp.mean(
          jnp.argmax(out["teacher_logits"][:size], -1) == batch["label"]))
    return loss, (new_state, metrics)

  def init_from(self, variables: dict) -> dict:
    """The SSL phase's backbone (with `ssl.features=cls` its whole student but the classifier) or
    the pretrained backbone; the trained teacher."""
    if self.ssl_variables is not None and self.config.ssl.features == "cls":
      ssl = {c: v["student"] for c, v in self.ssl_variables.items() if "student" in v}
      variables = _nested_merge(variables, ("student",), ssl, "the SSL phase's student",
                                skip=("fc",))
    elif self.ssl_variables is not None:
      ssl = {c: v["backbone"] for c, v in self.ssl_variables.items() if "backbone" in v}
      variables = _nested_merge(variables, ("student", "backbone"), ssl,
                                "the SSL phase's backbone")
    elif self.cfg.backbone_init and self.cfg.student_pretrained:
      loaded = _pretrained_backbone(self.config, self.student.backbone)
      variables = _nested_merge(variables, ("student", "backbone"), loaded,
                                self.cfg.backbone_init)
    if self.teacher_variables is not None:
      try:
        variables = _nested_merge(variables, ("teacher",), self.teacher_variables,
                                  self.teacher_source)
      except ValueError as error:
        raise ValueError(
            f"{error}\nThe teacher checkpoint's architecture differs from the config "
            f"(model {self.config.model.name}, fusion={self.cfg.fusion}, projection_dim="
            f"{self.cfg.projection_dim}): train the teacher with these settings, or set "
            f"config.actlumos.teacher_init to a teacher run made with them.") from None
    return variables

  def student_variables(self, variables) -> dict:
    return {c: v["student"] for c, v in variables.items() if "student" in v}

  def predict(self, variables, streams, source=None):
    del source
    logits, _ = self.student.apply(self.student_variables(variables),
                                   self.inputs.normalise(streams["video"]), train=False)
    return logits


# ================================================================ phases
def phase_config(config: mlc.ConfigDict, phase: str) -> mlc.ConfigDict:
  """The config one phase's Trainer sees: `teacher` / `ssl` take steps, optimizer and cadence
  from `config.teacher` / `config.ssl`; the figure evaluators run on the teacher only; the student
  phase freezes the teacher's parameters."""
  out = mlc.ConfigDict(config.to_dict())
  if phase in ("teacher", "ssl"):
    for key in ("total_steps", "optimizer", "eval_every", "checkpoint_every"):
      out[key] = config[phase][key]
  if phase == "ssl":
    out.input.batch_size = config.ssl.batch_size
    out.evals = mlc.ConfigDict()
    out.eval_every = -1
  elif phase == "student":
    out.evals = mlc.ConfigDict({k: v for k, v in config.evals.items()
                                if v.type == "classification"})
    if config.actlumos.kd:
      out.optimizer.frozen = tuple(config.optimizer.frozen) + ("^teacher/",)
  out.lock()
  return out


def _lookup(config: Mapping[str, Any], dotted: str):
  for key in dotted.split("."):
    config = config.get(key, {}) if isinstance(config, Mapping) else {}
  return config


def check_teacher_run(directory: str, config: mlc.ConfigDict, key: str) -> None:
  """Raises when the teacher run in `directory` (its config.json) used another architecture."""
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    return
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  ours = config_lib.json_values(config)
  for dotted in TEACHER_ARCHITECTURE:
    if _lookup(saved, dotted) != _lookup(ours, dotted):
      raise ValueError(
          f"{key}: the teacher in {directory} was trained with {dotted}="
          f"{_lookup(saved, dotted)!r} ({path}), the config says {_lookup(ours, dotted)!r}. "
          f"Use a new --workdir, or config args that match that teacher.")


def check_data(config: mlc.ConfigDict, directory: str) -> None:
  """Every dataset any phase reads (the labelled one, the SSL sources) exists: checked before the
  first step of a run, so a missing one fails at once."""
  del directory
  ClassificationData(config.input, config.seed).dataset  # pylint: disable=expression-not-assigned
  if config.actlumos.ssl or config.actlumos.get("kd_unlabelled", False):
    ssl_sources(config)


def _teacher_task(config, earlier, num_classes=None):
  del earlier
  return TeacherTask(config, num_classes)


def _ssl_task(config, earlier, num_classes=None):
  del earlier
  return SSLTask(config, num_classes)


def _student_task(config, earlier, num_classes=None):
  """The student, from the teacher phase's weights or `teacher_init`'s run, and the SSL phase's.
  `teacher_init` is read only for training: a student checkpoint holds its teacher already."""
  cfg = config.actlumos
  teacher, source = earlier.get("teacher"), ""
  if teacher is None and cfg.kd and cfg.teacher_init and task_lib.trains_from_earlier(num_classes):
    check_teacher_run(cfg.teacher_init, config, "config.actlumos.teacher_init")
    teacher, _ = convert_io.load_variables(cfg.teacher_init)
    source = f"config.actlumos.teacher_init {cfg.teacher_init}"
  return Task(config, num_classes, teacher_variables=teacher, ssl_variables=earlier.get("ssl"),
              teacher_source=source)


# The student's KD knobs, which neither the teacher nor the SSL phase reads.
_KD_FIELDS = ("actlumos.kd_weight", "actlumos.kd_temperature", "actlumos.kd_unlabelled")

# teacher (kd, no teacher_init) -> ssl (ssl) -> student, each resumable in its sub-directory; the
# student is the deployed model, the teacher the paper's main network. `ignores`: the teacher
# reads neither KD nor SSL settings, the SSL phase neither KD nor the teacher's (its steps,
# optimizer and SupCon loss), so the arms of an experiment that change only those share them.
PHASES = (
    task_lib.Phase("teacher", _teacher_task, config=lambda c: phase_config(c, "teacher"),
                   when=lambda c: bool(c.actlumos.kd) and not c.actlumos.teacher_init, main=True,
                   check=lambda c, d: check_teacher_run(d, c, f"--workdir {os.path.dirname(d)}"),
                   ignores=_KD_FIELDS + ("actlumos.ssl", "ssl", "actlumos.student_pretrained")),
    task_lib.Phase("ssl", _ssl_task, config=lambda c: phase_config(c, "ssl"),
                   when=lambda c: bool(c.actlumos.ssl),
                   ignores=_KD_FIELDS + ("actlumos.kd", "actlumos.supcon", "actlumos.supcon_weight",
                                         "actlumos.stream_statistics",
                                         "actlumos.supcon_temperature", "teacher")),
    task_lib.Phase("student", _student_task, config=lambda c: phase_config(c, "student"),
                   init_from=("teacher", "ssl"), check=check_data),
)

__all__ = ["PHASES", "SSLTask", "Task", "TeacherTask", "phase_config", "ssl_sources",
           "unlabelled_dataset"]
