"""LIFT-Net training with knowledge distillation, as two resumable phases of darkjax.train.Trainer.

  phase 1 (WORKDIR/teacher, skipped when `config.lift.kd` is False): the luminous backbone
    (R(2+1)D-34 or R3D-18) with a classifier, on the luminous input (GIC frames or optical flow),
    softmax cross-entropy; `config.teacher` holds its steps and optimizer.
  phase 2 (WORKDIR/student): LIFT-Net. With KD its `luminous` subtree is the trained teacher's
    backbone, one frozen copy (see darkjax/models/liftnet.py), and the loss is
    CE(logits, y) + kd_weight * L1(h2, h1) with h1 = the teacher's pooled hidden vector and h2 the
    student's pooled fused vector. Without KD the backbone trains with the rest.

Each phase is a `LiftTrainer` (the generic Trainer; its fresh state also takes pretrained ViT /
R(2+1)D weights or the teacher), so re-running the command resumes whichever phase was running.
Inputs: the dark clip goes to the PViT (normalised by `config.input.normalise`); the luminous clip is
the same uint8 clip through the GIC table LUT[i] = floor((i/255)^(1/gamma) 255)
(`config.lift.gamma`), or the record stream "flow" (`config.lift.luminous_input`). Train-time
augmentations on device (`config.lift.augment`): colour jitter, random affine (scale, translation,
rotation, shear; a flow stream's vectors are transformed with the image), CutMix, frame shuffle;
flips come from the pipeline (which negates a flipped flow stream's x). Evaluation adds one
attention-map PNG per clip for the first `config.lift.attention_maps` test clips (paper Fig. 5).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import losses, models, train
from darkjax.data import datasets, flow, normalise
from darkjax.data.augment import augment
from darkjax.models import liftnet, vit
from darkjax.trainers import supervised

log = logging.getLogger("darkjax")

LUMINOUS_INPUTS = ("gamma", "flow")
# Extra normalisations in 0-255 units: ViT checkpoints use [-1, 1]; IG65M and torchvision video
# models share the `ig65m` statistics.
_EXTRA_STATS = {"vit": ((127.5,) * 3, (127.5,) * 3), "flow": ((128.0,) * 3, (128.0,) * 3),
                "ig65m": ((110.2008, 100.63983, 95.99475), (58.14765, 56.46975, 55.332195))}


def normalise_clip(clip_uint8: jax.Array, mode: str, dtype=jnp.float32) -> jax.Array:
  """darkjax.data.normalise modes plus `vit` ([-1, 1]), `flow` ((x - 128) / 128) and `ig65m`."""
  if mode not in _EXTRA_STATS:
    return normalise.normalise(clip_uint8, mode, dtype)
  mean, std = (jnp.asarray(s[:clip_uint8.shape[-1]], jnp.float32) for s in _EXTRA_STATS[mode])
  return ((clip_uint8.astype(jnp.float32) - mean) / std).astype(dtype)


# ================================================================ losses
def classification_loss(logits, labels, mixed_labels=None, mix=1.0, label_smoothing=0.0):
  """Cross-entropy; with CutMix `mix * CE(labels) + (1 - mix) * CE(mixed_labels)`."""
  ce = losses.softmax_cross_entropy(logits, labels, label_smoothing)
  if mixed_labels is None:
    return ce
  return mix * ce + (1.0 - mix) * losses.softmax_cross_entropy(logits, mixed_labels,
                                                               label_smoothing)


def kd_loss(logits, labels, student_hidden, teacher_hidden, kd_weight=1.0, label_smoothing=0.0,
            mixed_labels=None, mix=1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """LIFT-Net's student loss CE + kd_weight * mean |h2 - h1| (no gradient into the teacher's h1)."""
  ce = classification_loss(logits, labels, mixed_labels, mix, label_smoothing)
  l1 = losses.l1_feature_loss(student_hidden, teacher_hidden)
  return ce + kd_weight * l1, {"ce": ce, "l1": l1}


# ================================================================ inputs shared by both phases
class LiftInputs:
  """The dataset, and uint8 batches -> (dark, luminous) float clips."""

  def __init__(self, config: mlc.ConfigDict):
    self.config, self.lift = config, config.lift
    if self.lift.luminous_input not in LUMINOUS_INPUTS:
      raise ValueError(f"config.lift.luminous_input {self.lift.luminous_input!r} unknown; valid: "
                       f"{LUMINOUS_INPUTS}")
    if config.input.gamma:
      raise ValueError("config.input.gamma must be 0 for LIFT-Net (the PViT sees the dark frames); "
                       "the luminous stream's gamma is config.lift.gamma")
    self.data = supervised.ClassificationData(config.input, config.seed)
    self.dtype = jnp.dtype(config.get("compute_dtype", "float32"))
    if self.lift.luminous_input == "flow":
      streams = self.data.dataset.frame_shapes()
      if "flow" not in streams or "flow" not in tuple(config.input.streams):
        raise datasets.DatasetNotPreparedError(
            f"config.lift.luminous_input='flow' needs a record stream named 'flow' in "
            f"{self.data.dataset.directory} (streams there: {sorted(k for k in streams if k != 'video')}"
            f"; config.input.streams: {list(config.input.streams)}). Precompute optical flow into "
            f"the records with the data-preparation step (x, y, magnitude around 128), or use "
            f"luminous_input=gamma.")

  def streams(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    out = {"video": batch["video"]}
    if self.lift.luminous_input == "flow":
      out["flow"] = batch["flow"]
    return out

  def model_inputs(self, streams: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    dark = normalise_clip(streams["video"], self.config.input.normalise, self.dtype)
    if self.lift.luminous_input == "flow":
      return dark, normalise_clip(streams["flow"], "flow", self.dtype)
    bright = normalise.gamma_correct(streams["video"], self.lift.gamma)
    return dark, normalise_clip(bright, self.lift.luminous_normalise, self.dtype)

  def train_inputs(self, batch, rng):
    streams, mixed, mix = augment(self.streams(batch), batch["label"], rng, self.lift.augment)
    dark, bright = self.model_inputs(streams)
    mixed = mixed if self.lift.augment.cutmix else None
    return dark, bright, mixed, mix


def load_weights(path: str, key: str) -> dict[str, np.ndarray]:
  """A checkpoint file (.npz, .safetensors, or a torch pickle) as flat numpy arrays."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{key}: checkpoint {path} does not exist")
  if path.endswith(".npz"):
    from darkjax.convert import vit as convert_vit  # pylint: disable=import-outside-toplevel
    return convert_vit.read_npz(path)
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    return load_file(path)
  import torch  # pylint: disable=import-outside-toplevel
  state = torch.load(path, map_location="cpu", weights_only=True)
  for wrapper in ("state_dict", "model"):
    if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
      state = state[wrapper]
  return state


def _luminous_pretrained(name: str, path: str) -> dict:
  from darkjax.convert import video_resnet as convert_vr  # pylint: disable=import-outside-toplevel
  return convert_vr.convert(name, load_weights(path, "config.lift.pretrained.luminous"),
                            num_classes=0)


# ================================================================ phase 1: teacher
class TeacherTask:
  """The luminous backbone with a classifier on the luminous input, cross-entropy."""

  def __init__(self, config: mlc.ConfigDict):
    self.config = config
    self.inputs = LiftInputs(config)
    self.data = self.inputs.data
    self.student = _build_student(config, self.data.dataset.num_classes)
    self.model = liftnet.teacher_model(self.student, self.data.dataset.num_classes)

  def train_dataset(self, local_batch: int):
    return self.data.train_dataset(local_batch)

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
    loss = classification_loss(logits, batch["label"], mixed, mix,
                               self.config.get("label_smoothing", 0.0))
    return loss, (dict(new_state), {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])})

  def merge_pretrained(self, variables: dict) -> dict | None:
    path = self.config.lift.pretrained.luminous
    if not path:
      return None
    loaded = _luminous_pretrained(self.student.luminous, path)
    out = liftnet.merge_subtree(variables, "params", None, loaded["params"], path, skip=("fc",))
    return liftnet.merge_subtree(out, "batch_stats", None, loaded["batch_stats"], path)

  def predict(self, state, views, extra):
    _, bright = self.inputs.model_inputs(self.inputs.streams({"video": views, **extra}))
    logits, _ = self.model.apply({"params": state.params, **state.model_state}, bright, train=False)
    return logits

  def evaluate(self, trainer, step: int) -> dict[str, Any]:
    return supervised.evaluate_classifier(trainer, self.predict, self.data, step)


# ================================================================ phase 2: student
def _build_student(config: mlc.ConfigDict, num_classes: int) -> liftnet.LIFTNet:
  lift = config.lift
  return models.build(config.model.name, num_classes=num_classes,
                      dtype=jnp.dtype(config.get("compute_dtype", "float32")),
                      luminous_frozen=bool(lift.kd), pvit_frozen=lift.vit_trainable == "none",
                      **dict(config.model.get("kwargs", {})))


class Task:
  """LIFT-Net, CE (+ L1 KD against the shared teacher backbone's hidden vector)."""

  def __init__(self, config: mlc.ConfigDict, teacher_variables: Mapping[str, Any] | None = None):
    self.config, self.lift = config, config.lift
    if self.lift.kd and teacher_variables is None and not self.lift.pretrained.luminous:
      log.warning("LIFT-Net student with kd=True but no teacher: its frozen luminous backbone "
                  "keeps its initial weights (run through darkjax.train.run for both phases)")
    self.teacher_variables = teacher_variables
    self.inputs = LiftInputs(config)
    self.data = self.inputs.data
    self.model = _build_student(config, self.data.dataset.num_classes)
    self.image_hw: tuple[int, int] | None = None
    self._maps_fn = None

  def train_dataset(self, local_batch: int):
    return self.data.train_dataset(local_batch)

  def init_variables(self, rng, batch) -> dict:
    dark, bright = self.inputs.model_inputs(self.inputs.streams(batch))
    self.image_hw = tuple(dark.shape[2:4])
    return dict(self.model.init({"params": rng, "dropout": rng}, dark, train=False,
                                luminous=bright))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    aug_rng, drop_rng = jax.random.split(rng)
    dark, bright, mixed, mix = self.inputs.train_inputs(batch, aug_rng)
    (logits, out), new_state = self.model.apply(
        {"params": params, **model_state}, dark, train=True, luminous=bright,
        rngs={"dropout": drop_rng}, mutable=list(model_state))
    smoothing = self.config.get("label_smoothing", 0.0)
    metrics = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
    if self.lift.kd:
      loss, terms = kd_loss(logits, batch["label"], out["hidden"], out["luminous_features"],
                            self.lift.kd_weight, smoothing, mixed, mix)
      metrics.update(terms)
    else:
      loss = classification_loss(logits, batch["label"], mixed, mix, smoothing)
    return loss, (dict(new_state), metrics)

  def merge_pretrained(self, variables: dict) -> dict | None:
    pretrained, changed = self.lift.pretrained, False
    if self.teacher_variables is not None:
      variables, changed = liftnet.merge_teacher(variables, self.teacher_variables), True
    elif pretrained.luminous:
      loaded = _luminous_pretrained(self.model.luminous, pretrained.luminous)
      variables = liftnet.merge_teacher(variables, loaded)
      changed = True
    if pretrained.vit:
      from darkjax.convert import vit as convert_vit  # pylint: disable=import-outside-toplevel
      loaded = convert_vit.convert(self.model.vit, load_weights(pretrained.vit,
                                                                "config.lift.pretrained.vit"),
                                   num_classes=0, image_size=self.image_hw,
                                   num_blocks=self.model.vit_blocks)
      variables = liftnet.merge_subtree(variables, "params", "pvit", loaded["params"],
                                        pretrained.vit)
      changed = True
    return variables if changed else None

  def predict(self, state, views, extra):
    dark, bright = self.inputs.model_inputs(self.inputs.streams({"video": views, **extra}))
    logits, _ = self.model.apply({"params": state.params, **state.model_state}, dark, train=False,
                                 luminous=bright)
    return logits

  def evaluate(self, trainer, step: int) -> dict[str, Any]:
    results = supervised.evaluate_classifier(trainer, self.predict, self.data, step)
    if self.lift.attention_maps and trainer.is_lead:
      paths = write_attention_maps(self, trainer, step, self.lift.attention_maps)
      for index, path in enumerate(paths):
        trainer.writer.image(f"attention/{index:02d}", step, path)
    return results


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
  fusion = inter[f"fusion_{model.num_layers - 1}"]["attention"]["attention_weights"][0]
  return logits, cls, jnp.mean(fusion, axis=(1, 2))


def write_attention_maps(task: "Task", trainer, step: int, count: int) -> list[str]:
  """WORKDIR/attention_<i>.png for the first `count` test clips: dark frames, GIC frames under the
  PViT attention, and the fusion's attention over all frames."""
  import cv2  # pylint: disable=import-outside-toplevel
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  batch = next(iter(task.data.eval_batches(count)))
  streams = {k: v[:, 0] for k, v in batch.items() if k not in ("label", "mask", "index")}
  if task._maps_fn is None:  # pylint: disable=protected-access
    def maps_fn(variables, streams):
      dark, bright = task.inputs.model_inputs(streams)
      return attention_maps(task.model, variables, dark, bright)
    task._maps_fn = jax.jit(maps_fn)  # pylint: disable=protected-access
  variables = jax.device_get({"params": trainer.state.params, **trainer.state.model_state})
  logits, cls, frame_weights = jax.device_get(task._maps_fn(variables, streams))  # pylint: disable=protected-access
  names, lut = task.data.dataset.class_names, normalise.gamma_lut(task.lift.gamma)
  paths = []
  for i in np.flatnonzero(batch["mask"])[:count]:
    clip = batch["video"][i, 0]
    frames, height, width = clip.shape[:3]
    shown = np.unique(np.linspace(0, frames - 1, min(frames, 8)).round().astype(int))
    fig = plt.figure(figsize=(1.8 * len(shown), 5.2))
    grid = fig.add_gridspec(3, len(shown), height_ratios=(1, 1, 0.7))
    heat = cls[i] / max(float(cls[i].max()), 1e-9)
    for col, t in enumerate(shown):
      frame = clip[t] if clip.shape[-1] == 3 else clip[t, ..., 0]
      for row, image in enumerate((frame, lut[frame])):
        ax = fig.add_subplot(grid[row, col])
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        if row == 1:
          ax.imshow(cv2.resize(heat[t].astype(np.float32), (width, height)), cmap="jet",
                    alpha=0.45, vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"t={t}" if row == 0 else "GIC + PViT attn", fontsize=7)
    ax = fig.add_subplot(grid[2, :])
    ax.bar(np.arange(frames), frame_weights[i], color="tab:blue")
    ax.set_xlabel("frame")
    ax.set_ylabel("fusion attn", fontsize=8)
    fig.suptitle(f"test clip {int(batch['index'][i])}: true {names[int(batch['label'][i])]}, "
                 f"predicted {names[int(np.argmax(logits[i]))]} (step {step})", fontsize=9)
    path = os.path.join(trainer.workdir, f"attention_{len(paths):02d}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)
  return paths


# ================================================================ phases
class LiftTrainer(train.Trainer):
  """The generic Trainer; a fresh (not resumed) state also takes `task.merge_pretrained`."""

  def _fresh_state(self, rng) -> train.TrainState:
    state = super()._fresh_state(rng)
    merged = self.task.merge_pretrained(jax.device_get({"params": state.params,
                                                        **state.model_state}))
    if merged is None:
      return state
    params = jax.device_put(merged.pop("params"), self.state_shardings.params)
    model_state = jax.device_put(merged, self.state_shardings.model_state)
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state)(params)
    return state.replace(params=params, model_state=model_state, opt_state=opt_state)


def phase_config(config: mlc.ConfigDict, phase: str) -> mlc.ConfigDict:
  """The config one phase's Trainer sees: `teacher` takes steps / optimizer / cadence from
  `config.teacher`; `student` adds the frozen-parameter regexes of vit_trainable and KD."""
  out = mlc.ConfigDict(config.to_dict())
  if phase == "teacher":
    for key in ("total_steps", "optimizer", "eval_every", "checkpoint_every"):
      out[key] = config.teacher[key]
  else:
    out.optimizer.frozen = tuple(config.optimizer.frozen) + liftnet.frozen_patterns(
        config.lift.vit_trainable, bool(config.lift.kd))
  out.lock()
  return out


def run(config: mlc.ConfigDict, workdir: str, devices=None) -> dict[str, Any]:
  """Teacher phase (with KD) then student phase, each in its own resumable sub-directory
  (`devices`: as for train.Trainer, default all)."""
  results: dict[str, Any] = {}
  teacher_variables = None
  if config.lift.kd:
    teacher_config = phase_config(config, "teacher")
    teacher = LiftTrainer(teacher_config, os.path.join(workdir, "teacher"),
                          task=TeacherTask(teacher_config), devices=devices)
    log.info("LIFT-Net phase 1/2: teacher %s on %s input", teacher.task.student.luminous,
             config.lift.luminous_input)
    teacher_results = teacher.run()
    results.update({f"teacher_{k}": v for k, v in teacher_results.items()
                    if isinstance(v, float)})
    teacher_variables = jax.device_get({"params": teacher.state.params,
                                        **teacher.state.model_state})
  student_config = phase_config(config, "student")
  log.info("LIFT-Net phase %s: student %s", "2/2" if config.lift.kd else "1/1", config.model.name)
  student = LiftTrainer(student_config, os.path.join(workdir, "student"),
                        task=Task(student_config, teacher_variables), devices=devices)
  results.update(student.run())
  if student.is_lead:
    _write_summary(workdir, config, results)
  return results


def _write_summary(workdir: str, config: mlc.ConfigDict, results: Mapping[str, Any]) -> None:
  lines = [f"# LIFT-Net run: {config.model.name} on `{config.input.data.name}`", "",
           f"- phases: {'teacher/ then student/' if config.lift.kd else 'student/ only (kd=False)'}"
           " (each has its own report.md, metrics and checkpoints)", "",
           "| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in sorted(results.items())
            if isinstance(v, float) and "per_class" not in k]
  with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")

