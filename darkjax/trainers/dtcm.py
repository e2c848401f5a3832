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

Evaluations (`config.evals`): classification, and the `enhancement` evaluator's
WORKDIR/dtcm_enhancement.png: for its `clips` test clips, rows of input frames, enhanced frames and
the RGB differences of adjacent frames before and after enhancement (paper Figs. 1, 6).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections as mlc

from darkjax import config as config_lib
from darkjax import losses, paths
from darkjax import task as task_lib
from darkjax.convert import io as convert_io
from darkjax.data.classification import ClassificationData
from darkjax.models.dtcm import SETTINGS
from darkjax.trainers.base import TaskBase
from darkjax.config import ConfigError

log = logging.getLogger("darkjax")


def check_config(config: mlc.ConfigDict) -> None:
  setting = config.dtcm.setting
  config_lib.check_choice(config, "dtcm.setting", SETTINGS)
  config_lib.check_choice(config, "dtcm.loss_variant", losses.VARIANTS)
  if config.input.normalise != "none":
    raise ConfigError(f"config.input.normalise is {config.input.normalise!r}: DTCM's enhancer "
                      "needs clips in [0, 1] (set it to 'none'; the backbone's normalisation is "
                      "config.model.kwargs.normalise)")
  enhancer = config.model.kwargs.enhancer
  if (setting == "no_enhancement") != (enhancer == ""):
    raise ConfigError(f"config.dtcm.setting {setting!r} with config.model.kwargs.enhancer "
                      f"{enhancer!r}: the no_enhancement setting needs enhancer='' and the others "
                      "an enhancer")


def leaky_source(config: mlc.ConfigDict) -> str:
  """The checkpoint file `config.model_init` was converted from when it is one of
  `config.dtcm.leaky_weights` (public checkpoints that may have seen the dataset's test videos,
  e.g. the standard Kinetics-400 weights for Dark-48, which was drawn from Kinetics-700), else "".
  Read from the conversion's meta.json; a darkjax run's workdir records none."""
  leaky = tuple(config.dtcm.get("leaky_weights", ()))
  if not config.model_init or not leaky:
    return ""
  meta_path = paths.resolve(config.model_init) / convert_io.META_FILE
  if not meta_path.is_file():
    return ""
  source = json.loads(meta_path.read_text()).get("source") or {}
  name = os.path.basename(str(source.get("path", "")))
  return name if name in leaky else ""


def warn_leaky_weights(config: mlc.ConfigDict, directory: str) -> None:
  """Phase check: a warning, before the first step, when the backbone starts from a checkpoint
  that may have seen the test videos (Dark-48 with the standard Kinetics-400 weights)."""
  del directory
  name = leaky_source(config)
  if name:
    log.warning("config.model_init %s was converted from %s, which may have seen %s's test "
                "videos (the dataset was drawn from the videos it was trained on): the paper "
                "starts from K400*, Kinetics-400 with them removed (Table V), so this run's "
                "accuracy is not comparable to its table; docs/papers/dtcm.md says how to make "
                "K400*", config.model_init, name, config.input.data.name)


def enhancement_loss(dtcm_cfg: Mapping[str, Any], clip: jax.Array, enhancer_out: Mapping):
  """W_STC L_STC + L_dark of an enhanced clip, and its unweighted terms."""
  w_stc = float(dtcm_cfg["w_stc"])
  return losses.zero_dce_loss(enhancer_out["enhanced"], clip, enhancer_out["curves"],
                              variant=dtcm_cfg["loss_variant"],
                              weights={"spatial": w_stc, "temporal": w_stc})


class Task(TaskBase):
  """One-stage settings, the no-enhancement baseline, two-stage phase 2 (`frozen_enhancer`).
  `enhancer_variables` (a phase-1 enhancer's collections) replace the fresh enhancer's."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None,
               frozen_enhancer: bool = False,
               enhancer_variables: Mapping[str, Any] | None = None):
    check_config(config)
    super().__init__(config, num_classes)
    self.frozen_enhancer = frozen_enhancer
    self.enhancer_variables = enhancer_variables
    self.merges_pretrained = enhancer_variables is not None
    self.title = f"DTCM, setting {config.dtcm.setting}"   # pictures' titles
    self.data_sources = {"input": ClassificationData(config.input, config.seed)}
    self.model = self.build_model()
    self.use_enhancement_loss = config.dtcm.setting == "one_stage_total" and not frozen_enhancer

  def clips(self, clips_uint8: jax.Array) -> jax.Array:
    """uint8 clips -> float32 in [0, 1] (the enhancer works in float32 whatever compute_dtype)."""
    return self.data.preprocess(clips_uint8, jnp.float32)

  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
    return dict(self.model.init({"params": rng, "dropout": rng}, self.clips(batch["video"]),
                                train=False))

  def init_from(self, variables: dict) -> dict:
    """The phase-1 enhancer's variables in place of the fresh `video_enhancer`."""
    variables = {k: dict(v) for k, v in variables.items()}
    for collection, tree in self.enhancer_variables.items():
      if "video_enhancer" not in tree or collection not in variables:
        raise ValueError(f"dtcm: phase-1 collection {collection!r} has no video_enhancer entry "
                         "matching the classifier model")
      variables[collection]["video_enhancer"] = tree["video_enhancer"]
    return variables

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    clip = self.clips(batch["video"])
    (logits, out), new_state = self.model.apply(
        {"params": params, **model_state}, clip, train=True,
        freeze_enhancer=self.frozen_enhancer, rngs={"dropout": rng}, mutable=list(model_state))
    ce = losses.softmax_cross_entropy(logits, batch["label"], self.config.label_smoothing)
    metrics = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]), "ar_loss": ce,
               "enhanced_mean": jnp.mean(out["enhanced"])}
    loss = ce
    if self.use_enhancement_loss:
      enhance_total, terms = enhancement_loss(self.config.dtcm, clip, out)
      loss = ce + float(self.config.dtcm.alpha) * enhance_total
      metrics["enhancement_loss"] = enhance_total
      metrics.update({f"{k}_loss": v for k, v in terms.items()})
    return loss, (dict(new_state), metrics)

  def predict(self, variables: Mapping[str, Any], streams: Mapping[str, jax.Array],
              source: str | None = None) -> jax.Array:
    del source
    logits, _ = self.model.apply(variables, self.clips(streams["video"]), train=False)
    return logits

  def enhance(self, variables: Mapping[str, Any], clips_uint8: jax.Array) -> jax.Array:
    """Enhanced clips in [0, 1] (the enhancement evaluator, darkjax.tools.predict --png)."""
    enhanced, _ = self.model.apply(variables, self.clips(clips_uint8), train=False,
                                   method="enhance")
    return enhanced


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


# ================================================================ two-stage run
def phase_config(config: mlc.ConfigDict, phase: str) -> mlc.ConfigDict:
  """Phase 1 (`enhancer`) takes steps and learning rate from config.dtcm; phase 2 (`classifier`)
  freezes the enhancer's parameters; `joint` (one-stage after phase 1) is the config itself."""
  out = mlc.ConfigDict(config.to_dict())
  if phase == "enhancer":
    out.total_steps = int(config.dtcm.enhancer_steps)
    out.total_epochs = 0.0       # the enhancer phase counts steps (config.dtcm.enhancer_steps)
    out.required_weights = {}    # checked by `run` for the whole command
    out.optimizer.lr = float(config.dtcm.enhancer_lr)
    out.optimizer.warmup_steps = 0
    out.model_init = ""          # backbone weights are for phase 2; phase 1 has no backbone
    # Phase 1 has no classifier to evaluate: only the enhancement pictures.
    out.evals = mlc.ConfigDict({k: v for k, v in config.evals.items()
                                if v.type != "classification"})
  elif phase == "classifier":
    out.optimizer.frozen = tuple(config.optimizer.frozen) + ("^video_enhancer/",)
  elif phase != "joint":
    raise ValueError(f"dtcm phase {phase!r} unknown; valid: enhancer, classifier, joint")
  out.lock()
  return out


def _second_phase(config: mlc.ConfigDict) -> str | None:
  """The phase after the enhancer phase ("classifier", "joint"), or None for a one-phase run."""
  setting = config.dtcm.setting
  if setting == "two_stage":
    return "classifier"
  if setting != "no_enhancement" and bool(config.dtcm.pretrain_enhancer):
    return "joint"
  return None


def _enhancer_task(config, earlier, num_classes=None):
  del earlier
  return EnhancerTask(config, num_classes)


def _joint_task(config, earlier, num_classes=None):
  return Task(config, num_classes, enhancer_variables=earlier.get("enhancer"))


def _classifier_task(config, earlier, num_classes=None):
  return Task(config, num_classes, frozen_enhancer=True, enhancer_variables=earlier.get("enhancer"))


# One-stage settings: `joint` in WORKDIR (with `dtcm.pretrain_enhancer`: WORKDIR/enhancer then
# WORKDIR/joint). two_stage: WORKDIR/enhancer then WORKDIR/classifier. Each phase resumes on its
# own.
PHASES = (
    task_lib.Phase("enhancer", _enhancer_task, config=lambda c: phase_config(c, "enhancer"),
                   when=lambda c: _second_phase(c) is not None),
    task_lib.Phase("joint", _joint_task, init_from=("enhancer",),
                   when=lambda c: c.dtcm.setting != "two_stage",
                   directory=lambda c: "joint" if _second_phase(c) else "", main=True,
                   check=warn_leaky_weights),
    task_lib.Phase("classifier", _classifier_task, config=lambda c: phase_config(c, "classifier"),
                   init_from=("enhancer",), when=lambda c: c.dtcm.setting == "two_stage",
                   check=warn_leaky_weights),
)
