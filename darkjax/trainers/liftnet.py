"""LIFT-Net training with knowledge distillation, as two resumable phases of darkjax.train.Trainer.

  phase 1 (WORKDIR/teacher, skipped when `config.lift.kd` is False): the luminous backbone
    (R(2+1)D-34 or R3D-18) with a classifier, on the luminous input (GIC frames or optical flow),
    softmax cross-entropy; `config.teacher` holds its steps and optimizer.
  phase 2 (WORKDIR/student): LIFT-Net. With KD its `luminous` subtree is the trained teacher's
    backbone, one frozen copy (see darkjax/models/liftnet.py), and the loss is
    Eq. (6), CE(logits, y) + kd_weight * sum_i |h1_i - h2_i|. What h is, the paper leaves open
    ("hidden representations ... used in conjunction with softmax"): `config.lift.kd_features`
    "hidden" (default) takes h1 = the teacher's pooled backbone vector and h2 = the student's
    pooled fused vector; "logits" takes the vectors softmax is applied to (h1 = the teacher's
    classifier on its pooled vector, frozen; h2 = the student's logits).
    `config.lift.kd_reduction` "sum" is Eq. (6) as written, "mean" divides the L1 term by the
    vector's length. Without KD the backbone trains with the rest.

Each phase is the generic Trainer with its own Task, whose `init_from` puts pretrained ViT /
R(2+1)D weights or the teacher into a fresh state, so re-running the command resumes whichever
phase was running.
Inputs: the dark clip goes to the PViT (normalised by `config.input.normalise`); the luminous clip is
the same uint8 clip through the GIC table LUT[i] = floor((i/255)^(1/gamma) 255)
(`config.lift.gamma`), or the record stream "flow" (`config.lift.luminous_input`). Train-time
augmentations on device (`config.lift.augment`, the paper's list): colour jitter, random rain,
random affine (scale, translation, rotation, shear; a flow stream's vectors are transformed with
the image), optical and elastic distortion, CutMix, frame shuffle; flips come from the pipeline (which negates a flipped flow stream's x). The student's
`attention_maps` feed the `attention_maps` evaluator (one PNG per test clip, paper Fig. 5).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
from flax import traverse_util

from darkjax import config as config_lib
from darkjax import losses, paths
from darkjax import task as task_lib
from darkjax import convert
from darkjax import variables as variables_lib
from darkjax.convert import io as convert_io
from darkjax.data import normalise
from darkjax.data.augment import augment
from darkjax.data.classification import ClassificationData
from darkjax.data.prepared import DatasetNotPreparedError
from darkjax.models import liftnet, vit
from darkjax.trainers.base import TaskBase
from darkjax.config import ConfigError

log = logging.getLogger("darkjax")

LUMINOUS_INPUTS = ("gamma", "flow")
KD_FEATURES = ("hidden", "logits")


# ================================================================ losses
def classification_loss(logits, labels, mixed_labels=None, mix=1.0, label_smoothing=0.0):
  """Cross-entropy; with CutMix `mix * CE(labels) + (1 - mix) * CE(mixed_labels)`."""
  ce = losses.softmax_cross_entropy(logits, labels, label_smoothing)
  if mixed_labels is None:
    return ce
  return mix * ce + (1.0 - mix) * losses.softmax_cross_entropy(logits, mixed_labels,
                                                               label_smoothing)


def kd_loss(logits, labels, student_hidden, teacher_hidden, kd_weight=1.0, label_smoothing=0.0,
            mixed_labels=None, mix=1.0, reduction="sum") -> tuple[jax.Array, dict[str, jax.Array]]:
  """LIFT-Net's student loss, Eq. (6): CE + kd_weight * sum_i |h1_i - h2_i| (batch mean; no
  gradient into the teacher's h1). `reduction="mean"` averages over the vector instead."""
  ce = classification_loss(logits, labels, mixed_labels, mix, label_smoothing)
  l1 = losses.l1_feature_loss(student_hidden, teacher_hidden, reduction=reduction)
  return ce + kd_weight * l1, {"ce": ce, "l1": l1}


# ================================================================ inputs shared by both phases
class LiftInputs:
  """The data source, and uint8 batches -> (dark, luminous) float clips."""

  def __init__(self, config: mlc.ConfigDict):
    self.config, self.lift = config, config.lift
    config_lib.check_choice(config, "lift.luminous_input", LUMINOUS_INPUTS)
    config_lib.check_choice(config, "lift.kd_reduction", losses.L1_REDUCTIONS)
    if config.input.gamma:
      raise ConfigError("config.input.gamma must be 0 for LIFT-Net (the PViT sees the dark "
                        "frames); the luminous stream's gamma is config.lift.gamma")
    self.data = ClassificationData(config.input, config.seed)
    self.dtype = config_lib.compute_dtype(config)

  def check_streams(self) -> None:
    """luminous_input=flow needs the dataset's `flow` record stream, read by the pipeline."""
    if self.lift.luminous_input != "flow":
      return
    streams = self.data.dataset.frame_shapes()
    if "flow" not in streams or "flow" not in tuple(self.config.input.streams):
      raise DatasetNotPreparedError(
          f"config.lift.luminous_input='flow' needs a record stream named 'flow' in "
          f"{self.data.dataset.directory} (streams there: {sorted(k for k in streams if k != 'video')}"
          f"; config.input.streams: {list(self.config.input.streams)}). Precompute optical flow "
          f"into the records with the data-preparation step (x, y, magnitude around 128), or use "
          f"luminous_input=gamma.")

  def streams(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    out = {"video": batch["video"]}
    if self.lift.luminous_input == "flow":
      out["flow"] = batch["flow"]
    return out

  def luminous_uint8(self, streams: Mapping[str, jax.Array]) -> jax.Array:
    """The luminous stream before normalisation: GIC frames, or the flow stream."""
    if self.lift.luminous_input == "flow":
      return streams["flow"]
    return normalise.gamma_correct(streams["video"], self.lift.gamma)

  def model_inputs(self, streams: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    dark = normalise.normalise(streams["video"], self.config.input.normalise, self.dtype)
    # A flow image goes through the luminous backbone's normalisation like frames (the one its
    # pretrained weights read); its x, y, magnitude channels are not colours to reorder.
    return dark, normalise.normalise(self.luminous_uint8(streams), self.lift.luminous_normalise,
                                     self.dtype, colour=self.lift.luminous_input != "flow")

  def train_inputs(self, batch, rng):
    streams, mixed, mix = augment(self.streams(batch), batch["label"], rng, self.lift.augment)
    dark, bright = self.model_inputs(streams)
    mixed = mixed if self.lift.augment.cutmix else None
    return dark, bright, mixed, mix


def _luminous_pretrained(name: str, path: str, config: mlc.ConfigDict) -> dict:
  """The luminous backbone's weights from `path` (config.lift.pretrained.luminous): the IG65M
  file, a convert directory or a darkjax run whose model is the backbone (e.g. `r2plus1d_tiny_test`
  pretrained on the synthetic set's bright clips), head left out; checked against
  `lift.luminous_normalise`."""
  return convert_io.pretrained_backbone(name, path, "config.lift.pretrained.luminous",
                                        config.lift.luminous_normalise, "lift.luminous_normalise",
                                        config_lib.check_normalise(config))


def _pvit_pretrained(model: liftnet.LIFTNet, path: str, config: mlc.ConfigDict,
                     frame_hw: tuple[int, int]) -> dict:
  """The PViT's weights: the first `model.vit_blocks` blocks of a ViT checkpoint, position
  embeddings resized to the frames. `path` is a checkpoint file (timm, vision_transformer or
  big_vision; trained on the ViT family's [-1, 1] inputs) or a `python -m darkjax.convert`
  directory, whose meta.json records the normalisation its weights were trained on (ref. [44]'s
  ImageNet-21K-P ViT: `--input-normalise none`, pixels / 255). `config.input.normalise` is checked
  against it."""
  from darkjax.convert import vit as convert_vit  # pylint: disable=import-outside-toplevel
  key = "config.lift.pretrained.vit"
  convert_io.require_exists(path, key)   # before the normalisation check
  if (paths.resolve(path) / convert_io.META_FILE).is_file():
    variables, meta = convert_io.load_variables(path)
    if meta.get("arch") != model.vit:
      raise convert_io.CheckpointReadError(f"{key} {path} was converted for "
                                           f"{meta.get('arch')!r}, the PViT is {model.vit!r} "
                                           f"(convert with --arch {model.vit})")
    trained_on = convert_io.recorded_normalise(meta)
    # Flat parameter paths: the layout of vision_transformer's .npz, which convert_vit reads.
    state = traverse_util.flatten_dict(dict(variables["params"]), sep="/")
  else:   # checked before the file is read
    trained_on, state = convert.input_normalise(model.vit), None
  if config_lib.check_normalise(config):
    normalise.check_pretrained(trained_on, config.input.normalise, "input.normalise",
                               f"{key} {path}")
  if state is None:
    state = convert_io.load_state_dict_of(path, key)
  return convert_vit.convert(model.vit, state, num_classes=0, image_size=frame_hw,
                             num_blocks=model.vit_blocks)


def teacher_frozen(config: mlc.ConfigDict) -> bool:
  """Whether the student's luminous backbone is the teacher's frozen copy: with KD, unless
  `config.lift.freeze_teacher` is False."""
  return bool(config.lift.kd) and bool(config.lift.get("freeze_teacher", True))


class _LiftTaskBase(TaskBase):
  """Inputs and model construction shared by the teacher and the student."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    self.lift = config.lift
    self.inputs = LiftInputs(config)
    self.data_sources = {"input": self.inputs.data}
    if num_classes is None:   # training: the dataset is at hand
      self.inputs.check_streams()
    self.student = self.build_model(luminous_frozen=teacher_frozen(config),
                                    pvit_frozen=self.lift.vit_trainable == "none")


# ================================================================ phase 1: teacher
class TeacherTask(_LiftTaskBase):
  """The luminous backbone with a classifier on the luminous input, cross-entropy."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    self.model = liftnet.teacher_model(self.student, self.num_classes)
    self.merges_pretrained = bool(self.lift.pretrained.luminous)

  def init_variables(self, rng, batch) -> dict:
    _, bright = self.inputs.model_inputs(self.inputs.streams(batch))
    return dict(self.model.init({"params": rng, "dropout": rng}, bright, train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    aug_rng, drop_rng = jax.random.split(rng)
    _, bright, mixed, mix = self.inputs.train_inputs(batch, aug_rng)
    (logits, _), new_state = self.model.apply(
        {"params": params, **model_state}, bright, train=True, rngs={"dropout": drop_rng},
        mutable=list(model_state))
    loss = classification_loss(logits, batch["label"], mixed, mix, self.config.label_smoothing)
    return loss, (dict(new_state), {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])})

  def init_from(self, variables: dict) -> dict:
    """The pretrained luminous backbone (config.lift.pretrained.luminous), head kept."""
    path = self.lift.pretrained.luminous
    loaded = _luminous_pretrained(self.student.luminous, path, self.config)
    out = variables_lib.merge_subtree(variables, "params", None, loaded["params"], path,
                                      skip=("fc",))
    return variables_lib.merge_subtree(out, "batch_stats", None, loaded["batch_stats"], path)

  def predict(self, variables, streams, source=None):
    del source
    _, bright = self.inputs.model_inputs(self.inputs.streams(streams))
    logits, _ = self.model.apply(variables, bright, train=False)
    return logits


# ================================================================ phase 2: student
class Task(_LiftTaskBase):
  """LIFT-Net, CE (+ L1 KD against the shared teacher backbone's hidden vector)."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None,
               teacher_variables: Mapping[str, Any] | None = None):
    super().__init__(config, num_classes)
    # A Task built for inference (predict, export, a notebook's trained run) has no earlier
    # phase's weights by design; the checkpoint it restores holds the luminous backbone.
    if (self.lift.kd and teacher_variables is None and not self.lift.pretrained.luminous
        and task_lib.trains_from_earlier(num_classes)):
      log.warning("LIFT-Net student with kd=True but no teacher: its frozen luminous backbone "
                  "keeps its initial weights (darkjax.phases.run_phases runs both phases)")
    self.teacher_variables = teacher_variables
    self.teacher_head = None
    config_lib.check_choice(config, "lift.kd_features", KD_FEATURES)
    if self.lift.kd and self.lift.kd_features == "logits":
      if teacher_variables is None:
        raise ConfigError("config.lift.kd_features='logits' distils the teacher's logits: it needs "
                          "the teacher phase (darkjax.phases.run_phases runs it), not only "
                          "config.lift.pretrained.luminous")
      self.teacher_head = teacher_variables["params"]["fc"]
    self.model = self.student
    pretrained = self.lift.pretrained
    self.merges_pretrained = bool(teacher_variables is not None or pretrained.luminous
                                  or pretrained.vit)

  def init_variables(self, rng, batch) -> dict:
    dark, bright = self.inputs.model_inputs(self.inputs.streams(batch))
    return dict(self.model.init({"params": rng, "dropout": rng}, dark, train=False,
                                luminous=bright))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    aug_rng, drop_rng = jax.random.split(rng)
    dark, bright, mixed, mix = self.inputs.train_inputs(batch, aug_rng)
    (logits, out), new_state = self.model.apply(
        {"params": params, **model_state}, dark, train=True, luminous=bright,
        rngs={"dropout": drop_rng}, mutable=list(model_state))
    smoothing = self.config.label_smoothing
    metrics = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
    if self.lift.kd:
      student_h, teacher_h = out["hidden"], out["luminous_features"]
      if self.teacher_head is not None:   # kd_features="logits"
        head = self.teacher_head
        student_h = logits
        teacher_h = teacher_h.astype(jnp.float32) @ head["kernel"] + head["bias"]
      loss, terms = kd_loss(logits, batch["label"], student_h, teacher_h, self.lift.kd_weight,
                            smoothing, mixed, mix, self.lift.kd_reduction)
      metrics.update(terms)
    else:
      loss = classification_loss(logits, batch["label"], mixed, mix, smoothing)
    return loss, (dict(new_state), metrics)

  def init_from(self, variables: dict) -> dict:
    """The teacher's (or a pretrained) luminous backbone, and the pretrained PViT blocks."""
    pretrained = self.lift.pretrained
    if self.teacher_variables is not None:
      variables = liftnet.merge_teacher(variables, self.teacher_variables)
    elif pretrained.luminous:
      variables = liftnet.merge_teacher(
          variables, _luminous_pretrained(self.model.luminous, pretrained.luminous, self.config))
    if pretrained.vit:
      loaded = _pvit_pretrained(self.model, pretrained.vit, self.config, self.data.frame_hw())
      if not self.model.pvit_norm:   # a PViT without the ViT's final LayerNorm
        loaded["params"]["Transformer"].pop("encoder_norm")
      variables = variables_lib.merge_subtree(variables, "params", "pvit", loaded["params"],
                                              pretrained.vit)
    return variables

  def predict(self, variables, streams, source=None):
    del source
    dark, bright = self.inputs.model_inputs(self.inputs.streams(streams))
    logits, _ = self.model.apply(variables, dark, train=False, luminous=bright)
    return logits

  def attention_maps(self, variables, streams) -> dict[str, jax.Array]:
    """logits, `heat` (B, T, gh, gw): the last PViT block's class-token attention over the
    patches (mean over heads); `frame_weights` (B, T): the last fusion layer's attention of the
    luminous queries over the frames; `luminous`: the luminous uint8 clips."""
    dark, bright = self.inputs.model_inputs(self.inputs.streams(streams))
    logits, heat, frame_weights = attention_maps(self.model, variables, dark, bright)
    return {"logits": logits, "heat": heat, "frame_weights": frame_weights,
            "luminous": self.inputs.luminous_uint8(streams)}


# ================================================================ attention maps (paper Fig. 5)
def _force_sow_weights(next_fun, args, kwargs, context):
  if isinstance(context.module, nn.MultiHeadDotProductAttention) and \
      context.method_name == "__call__":
    kwargs = {**kwargs, "sow_weights": True}
  return next_fun(*args, **kwargs)


def attention_maps(model: liftnet.LIFTNet, variables, dark: jax.Array, bright: jax.Array):
  """(logits, PViT maps (B, T, gh, gw), frame weights (B, T)). Maps: class-token attention over the
  patches in the last PViT block, mean over heads; frame weights: the last fusion layer's attention
  of the luminous queries over the frames, mean over heads and queries."""
  model = model.clone(remat=False)
  with nn.intercept_methods(_force_sow_weights):
    (logits, _), state = model.apply(variables, dark, train=False, luminous=bright,
                                     mutable=["intermediates"])
  inter = state["intermediates"]
  block = inter["pvit"]["Transformer"][f"encoderblock_{model.vit_blocks - 1}"]
  weights = block["MultiHeadDotProductAttention_1"]["attention_weights"][0]
  batch, frames, height, width = dark.shape[:4]
  patch = vit.VARIANTS[model.vit].keywords["patch_size"]
  cls = jnp.mean(weights[:, :, 0, 1:], axis=1).reshape(batch, frames, height // patch,
                                                       width // patch)
  if model.scan_layers:   # sown per layer, stacked on a leading layer axis
    fusion = inter["layers"]["fusion"]["attention"]["attention_weights"][0][-1]
  else:
    fusion = inter[f"fusion_{model.num_layers - 1}"]["attention"]["attention_weights"][0]
  return logits, cls, jnp.mean(fusion, axis=(1, 2))


# ================================================================ phases
def phase_config(config: mlc.ConfigDict, phase: str) -> mlc.ConfigDict:
  """The config one phase's Trainer sees: `teacher` takes steps / optimizer / cadence from
  `config.teacher`; `student` adds the frozen-parameter regexes of vit_trainable and KD."""
  out = mlc.ConfigDict(config.to_dict())
  if phase == "teacher":
    for key in ("total_steps", "optimizer", "eval_every", "checkpoint_every"):
      out[key] = config.teacher[key]
    # The teacher has no PViT or fusion: only its classification is evaluated.
    out.evals = mlc.ConfigDict({k: v for k, v in config.evals.items()
                                if v.type == "classification"})
  else:
    config_lib.check_choice(config, "lift.vit_trainable", liftnet.VIT_TRAINABLE)
    out.optimizer.frozen = tuple(config.optimizer.frozen) + liftnet.frozen_patterns(
        config.lift.vit_trainable, teacher_frozen(config))
  out.lock()
  return out


def _teacher_task(config, earlier, num_classes=None):
  del earlier
  return TeacherTask(config, num_classes)


def _student_task(config, earlier, num_classes=None):
  return Task(config, num_classes, teacher_variables=earlier.get("teacher"))


# With KD: the teacher (WORKDIR/teacher), then the student (WORKDIR/student) on the trained
# teacher's luminous backbone; without: the student alone. The student is the deployed model.
# The teacher (the luminous backbone and a head, trained with config.teacher's steps and optimizer)
# reads none of the student's KD, sharing, PViT or fusion settings (`ignores`), so the arms of an
# experiment that change only those share it.
PHASES = (
    task_lib.Phase("teacher", _teacher_task, config=lambda c: phase_config(c, "teacher"),
                   when=lambda c: bool(c.lift.kd),
                   ignores=("lift.kd_weight", "lift.kd_features", "lift.kd_reduction",
                            "lift.freeze_teacher", "lift.vit_trainable", "lift.pretrained.vit",
                            "model.kwargs.attention_scale", "model.kwargs.fourier_norm",
                            "model.kwargs.pvit_norm")),
    task_lib.Phase("student", _student_task, config=lambda c: phase_config(c, "student"),
                   init_from=("teacher",)),
)
