"""DTCM: joint optimisation of dark enhancement and action recognition (Tu et al., TIP 2023).

The three training settings of the paper's Table VI, plus the plain baseline, chosen by
`config.dtcm.setting`:

  one_stage_total  L_total = L_AR + alpha (W_STC L_STC + L_dark) on the `dtcm` model, enhancer and
                   backbone trained together (the paper's method; alpha 0.1, W_STC 4)
  one_stage_ar     the same cascade trained with L_AR only (the enhancer learns from the classifier)
  two_stage        phase 1 (WORKDIR/enhancer): the enhancer alone with W_STC L_STC + L_dark for
                   `dtcm.enhancer_steps` steps; phase 2 (WORKDIR/classifier): the backbone with L_AR
                   on the frozen phase-1 enhancer's output
  no_enhancement   the backbone alone on the same [0, 1] clips (needs model.kwargs.enhancer="")

`dtcm.pretrain_enhancer` (one-stage settings): the enhancer first trains alone with the zero-
reference losses for `dtcm.enhancer_steps` steps (WORKDIR/enhancer, as two-stage phase 1), and the
one-stage training (WORKDIR/joint) starts from it instead of from a random curve estimator, whose
first curves distort colours and amplify noise while the backbone adapts to them.

L_dark = L_exp + W_col L_col + W_tvA L_tvA and L_STC = L_SC (8 neighbours) + L_TC come from
darkjax.losses.zero_dce_loss (`dtcm.loss_variant` = paper | official selects the forms and the
default weights W_col, W_tvA, W_exp). Clips enter the model in [0, 1] (`input.normalise="none"`);
the model normalises after enhancing.

Evaluation: top-1 / top-5 / confusion via trainers.supervised.evaluate_classifier, and
WORKDIR/dtcm_enhancement.png: for `dtcm.visual_clips` test clips, rows of input frames, enhanced
frames and the RGB differences of adjacent frames before and after enhancement (paper Figs. 1, 6).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import losses, models, train
from darkjax.trainers.supervised import ClassificationData, cross_entropy, evaluate_classifier

log = logging.getLogger("darkjax")

SETTINGS = ("one_stage_total", "one_stage_ar", "two_stage", "no_enhancement")
VISUAL_FILE = "dtcm_enhancement.png"


def check_config(config: mlc.ConfigDict) -> None:
  setting = config.dtcm.setting
  if setting not in SETTINGS:
    raise ValueError(f"config.dtcm.setting {setting!r} unknown; valid: {SETTINGS}")
  if config.input.normalise != "none":
    raise ValueError(f"config.input.normalise is {config.input.normalise!r}: DTCM's enhancer needs "
                     "clips in [0, 1] (set it to 'none'; the backbone's normalisation is "
                     "config.model.kwargs.normalise)")
  enhancer = config.model.get("kwargs", {}).get("enhancer", "dtcm_enhancer")
  if (setting == "no_enhancement") != (enhancer == ""):
    raise ValueError(f"config.dtcm.setting {setting!r} with config.model.kwargs.enhancer "
                     f"{enhancer!r}: the no_enhancement setting needs enhancer='' and the others "
                     "an enhancer")


def enhancement_loss(dtcm_cfg: Mapping[str, Any], clip: jax.Array, enhancer_out: Mapping):
  """W_STC L_STC + L_dark of an enhanced clip, and its unweighted terms."""
  w_stc = float(dtcm_cfg["w_stc"])
  return losses.zero_dce_loss(enhancer_out["enhanced"], clip, enhancer_out["curves"],
                              variant=dtcm_cfg["loss_variant"],
                              weights={"spatial": w_stc, "temporal": w_stc})


class Task:
  """One-stage settings, the no-enhancement baseline, two-stage phase 2 (`frozen_enhancer`)."""

  def __init__(self, config: mlc.ConfigDict, frozen_enhancer: bool = False):
    check_config(config)
    self.config = config
    self.frozen_enhancer = frozen_enhancer
    self.data = ClassificationData(config.input, config.seed)
    self.dtype = jnp.dtype(config.get("compute_dtype", "float32"))
    kwargs = config.model.get("kwargs", mlc.ConfigDict()).to_dict()
    self.model = models.build(config.model.name, num_classes=self.data.dataset.num_classes,
                              dtype=self.dtype, **kwargs)
    self.use_enhancement_loss = config.dtcm.setting == "one_stage_total" and not frozen_enhancer

  def train_dataset(self, local_batch: int):
    return self.data.train_dataset(local_batch)

  def clips(self, clips_uint8: jax.Array) -> jax.Array:
    """uint8 clips -> float32 in [0, 1] (the enhancer works in float32 whatever compute_dtype)."""
    return self.data.preprocess(clips_uint8, jnp.float32)

  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
    return dict(self.model.init({"params": rng, "dropout": rng}, self.clips(batch["video"]),
                                train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    clip = self.clips(batch["video"])
    (logits, out), new_state = self.model.apply(
        {"params": params, **model_state}, clip, train=True,
        freeze_enhancer=self.frozen_enhancer, rngs={"dropout": rng}, mutable=list(model_state))
    ce = cross_entropy(logits, batch["label"], self.config.get("label_smoothing", 0.0))
    metrics = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]), "ar_loss": ce,
               "enhanced_mean": jnp.mean(out["enhanced"])}
    loss = ce
    if self.use_enhancement_loss:
      enhance_total, terms = enhancement_loss(self.config.dtcm, clip, out)
      loss = ce + float(self.config.dtcm.alpha) * enhance_total
      metrics["enhancement_loss"] = enhance_total
      metrics.update({f"{k}_loss": v for k, v in terms.items()})
    return loss, (dict(new_state), metrics)

  def predict(self, state, views: jax.Array, extra: Mapping[str, jax.Array]) -> jax.Array:
    del extra
    logits, _ = self.model.apply({"params": state.params, **state.model_state},
                                 self.clips(views), train=False)
    return logits

  def enhance(self, variables, clips_uint8: jax.Array) -> jax.Array:
    enhanced, _ = self.model.apply(variables, self.clips(clips_uint8), train=False,
                                   method="enhance")
    return enhanced

  def evaluate(self, trainer, step: int) -> dict[str, Any]:
    results = evaluate_classifier(trainer, self.predict, self.data, step)
    write_enhancement_grid(trainer, self, step)
    return results


class EnhancerTask(Task):
  """Two-stage phase 1: the enhancer alone (the model's `enhance`), W_STC L_STC + L_dark."""

  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
    return dict(self.model.init({"params": rng}, self.clips(batch["video"]), train=False,
                                method="enhance"))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del rng, progress
    clip = self.clips(batch["video"])
    (_, out), new_state = self.model.apply({"params": params, **model_state}, clip, train=True,
                                           method="enhance", mutable=list(model_state))
    total, terms = enhancement_loss(self.config.dtcm, clip, out)
    metrics = {f"{k}_loss": v for k, v in terms.items()}
    metrics["enhanced_mean"] = jnp.mean(out["enhanced"])
    return total, (dict(new_state), metrics)

  def evaluate(self, trainer, step: int) -> dict[str, Any]:
    write_enhancement_grid(trainer, self, step)
    return {}


# ================================================================ the figure
def _first_test_clips(task: Task, count: int) -> np.ndarray:
  for batch in task.data.eval_batches(max(count, 1)):
    views = np.asarray(batch["video"])[:, 0]            # first view of each video
    keep = np.asarray(batch["mask"]).astype(bool)
    return views[keep][:count]
  raise ValueError(f"dataset {task.data.dataset.name}: the eval split is empty")


def enhancement_grid(inputs: np.ndarray, enhanced: np.ndarray, path: str, title: str = "",
                     frames_shown: int = 6) -> str:
  """PNG: per clip, rows of input frames, enhanced frames, |I_(t+1) - I_t| and |Y_(t+1) - Y_t|.

  inputs, enhanced: (N, T, H, W, 3) in [0, 1]. The differences are scaled by a common factor so
  that before and after are comparable.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  n, t = inputs.shape[:2]
  shown = np.unique(np.linspace(0, t - 2, min(frames_shown, t - 1)).round().astype(int))
  diff_in = np.abs(np.diff(inputs, axis=1))
  diff_out = np.abs(np.diff(enhanced, axis=1))
  scale = 1.0 / max(float(np.percentile(np.concatenate([diff_in, diff_out]), 99.5)), 1e-3)
  rows = [("input", inputs), ("enhanced", enhanced), ("RGB diff. input", diff_in * scale),
          ("RGB diff. enhanced", diff_out * scale)]
  fig, axes = plt.subplots(4 * n, len(shown), figsize=(1.4 * len(shown), 1.5 * 4 * n),
                           squeeze=False)
  for clip in range(n):
    for r, (label, images) in enumerate(rows):
      for c, frame in enumerate(shown):
        ax = axes[4 * clip + r, c]
        ax.imshow(np.clip(images[clip, frame], 0.0, 1.0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if c == 0:
          ax.set_ylabel(f"{clip}: {label}", fontsize=6)
        if clip == 0 and r == 0:
          ax.set_title(f"t={frame}", fontsize=7)
  if title:
    fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_enhancement_grid(trainer, task: Task, step: int) -> str | None:
  count = int(task.config.dtcm.visual_clips)
  if not count or not trainer.is_lead:
    return None
  clips = _first_test_clips(task, count)
  variables = jax.device_get({"params": trainer.state.params, **trainer.state.model_state})
  enhanced = np.asarray(jax.jit(task.enhance)(variables, jnp.asarray(clips)))
  path = enhancement_grid(clips.astype(np.float32) / 255.0, enhanced,
                          os.path.join(trainer.workdir, VISUAL_FILE),
                          title=f"{task.config.dtcm.setting} @ step {step}")
  trainer.writer.image("dtcm/enhancement", step, path)
  return path


# ================================================================ two-stage run
class ClassifierTrainer(train.Trainer):
  """Phase 2 of two-stage, or one-stage after a pretrained enhancer: a fresh state takes the
  phase-1 enhancer's variables."""
  enhancer_variables: Mapping[str, Any] | None = None

  def _fresh_state(self, rng) -> train.TrainState:
    state = super()._fresh_state(rng)
    variables = jax.device_get({"params": state.params, **state.model_state})
    for collection, tree in (self.enhancer_variables or {}).items():
      if "video_enhancer" not in tree or collection not in variables:
        raise ValueError(f"two_stage: phase-1 collection {collection!r} has no video_enhancer "
                         "entry matching the classifier model")
      variables[collection]["video_enhancer"] = tree["video_enhancer"]
    params = jax.device_put(variables.pop("params"), self.state_shardings.params)
    model_state = jax.device_put(variables, self.state_shardings.model_state)
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state)(params)
    return state.replace(params=params, model_state=model_state, opt_state=opt_state)


def phase_config(config: mlc.ConfigDict, phase: str) -> mlc.ConfigDict:
  """Phase 1 (`enhancer`) takes steps and learning rate from config.dtcm; phase 2 (`classifier`)
  freezes the enhancer's parameters; `joint` (one-stage after phase 1) is the config itself."""
  out = mlc.ConfigDict(config.to_dict())
  if phase == "enhancer":
    out.total_steps = int(config.dtcm.enhancer_steps)
    out.optimizer.lr = float(config.dtcm.enhancer_lr)
    out.optimizer.warmup_steps = 0
    out.model_init = ""          # backbone weights are for phase 2; phase 1 has no backbone
  elif phase == "classifier":
    out.optimizer.frozen = tuple(config.optimizer.frozen) + ("^video_enhancer/",)
  elif phase != "joint":
    raise ValueError(f"dtcm phase {phase!r} unknown; valid: enhancer, classifier, joint")
  out.lock()
  return out


def train_enhancer(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """Phase 1 in WORKDIR/enhancer (resumable); returns the trained enhancer's variables."""
  enhancer_config = phase_config(config, "enhancer")
  log.info("DTCM phase 1: enhancer alone (W_STC L_STC + L_dark), %d steps",
           enhancer_config.total_steps)
  enhancer = train.Trainer(enhancer_config, os.path.join(workdir, "enhancer"),
                           task=EnhancerTask(enhancer_config))
  enhancer.run()
  return jax.device_get({"params": enhancer.state.params, **enhancer.state.model_state})


def run(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """One-stage settings: one Trainer in WORKDIR (with `dtcm.pretrain_enhancer`: WORKDIR/enhancer
  then WORKDIR/joint). two_stage: WORKDIR/enhancer then WORKDIR/classifier. Each phase resumes on
  its own."""
  check_config(config)
  setting = config.dtcm.setting
  pretrain = setting == "two_stage" or (setting != "no_enhancement" and
                                        bool(config.dtcm.get("pretrain_enhancer", False)))
  if not pretrain:
    return train.Trainer(config, workdir, task=Task(config)).run()
  enhancer_variables = train_enhancer(config, workdir)
  phase = "classifier" if setting == "two_stage" else "joint"
  phase2_config = phase_config(config, phase)
  log.info("DTCM phase 2: %s from the phase-1 enhancer", setting)
  trainer = ClassifierTrainer(phase2_config, os.path.join(workdir, phase),
                              task=Task(phase2_config, frozen_enhancer=setting == "two_stage"))
  trainer.enhancer_variables = enhancer_variables
  return trainer.run()
