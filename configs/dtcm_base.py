"""The DTCM config builder shared by configs/dtcm_*.py (one dataset each): the paper's training
recipe as config args (see configs/dtcm_arid.py for their meaning)."""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common
from darkjax.models.dtcm import SETTINGS

# The paper's recipe (Sec. IV-A "Training"): dense sampling of T = 64 (or 16) frames, frames resized
# to 320 x 240 (short side 240), random 112 crops, Kinetics-400 initialisation, batch 4, AdamW at
# lr 1e-5, 50 epochs; testing 1 clip x centre crop. weight_decay and the schedule are not given:
# torch's AdamW default weight decay (0.01) and a constant rate are the documented choices.
ARGS = dict(setting="one_stage_total", k=4, alpha=0.1, w_stc=4.0, backbone="resnext3d_101",
            enhancer="dtcm_enhancer", normalise="kinetics", frames=64, crop=112, short_side=240,
            batch=4, epochs=50.0, steps=0, enhancer_steps=2000, lr=1e-5, seed=0, data_dir="",
            pretrained="", pretrain_enhancer=False, initial_curve=0.0, full_resolution=True, init="pretrained",
            runlocal=False)


def dtcm_config(arg: str | None, dataset: str, split_index: int = 0, **defaults) -> mlc.ConfigDict:
  """The DTCM config for `dataset` (shared by configs/dtcm_*.py); `defaults` override ARGS."""
  arg = common.parse_arg(arg, **{**ARGS, **defaults})
  if arg.setting not in SETTINGS:
    raise ValueError(f"config arg setting={arg.setting!r}: valid {SETTINGS}")
  if arg.frames % arg.k:
    raise ValueError(f"config arg k={arg.k}: frames={arg.frames} must be a multiple of k")
  if arg.steps < 0 or arg.epochs < 0 or not (arg.steps or arg.epochs):
    raise ValueError(f"config args steps={arg.steps}, epochs={arg.epochs}: give epochs > 0 (steps "
                     "then follow from the prepared train split) or steps > 0")
  config = common.base_config("dtcm", arg.steps or 1, seed=arg.seed, eval_every=2000,
                              checkpoint_every=1000,
                              total_epochs=0.0 if arg.steps else float(arg.epochs))
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="dense",
      short_side=arg.short_side, crop_size=arg.crop, train_crop="random", flip=True,
      eval_clips=1, eval_crops=1, normalise="none", shuffle_window=256)
  config.input.data.name = dataset
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  config.input.data.split_index = split_index
  no_enhancement = arg.setting == "no_enhancement"
  config.model = common.model_block(
      "dtcm", backbone=arg.backbone, backbone_kwargs=mlc.ConfigDict(),
      enhancer="" if no_enhancement else arg.enhancer,
      enhancer_kwargs=mlc.ConfigDict(dict(initial_curve=arg.initial_curve, **(
          {"full_resolution": arg.full_resolution} if arg.enhancer == "dtcm_enhancer" else {}))),
      group_size=arg.k, normalise=arg.normalise)
  config.dtcm = mlc.ConfigDict(dict(
      setting=arg.setting, alpha=arg.alpha, w_stc=arg.w_stc,
      loss_variant="paper",          # paper | official (forms and default weights of L_dark)
      enhancer_steps=arg.enhancer_steps, enhancer_lr=1e-4,   # two_stage phase 1
      pretrain_enhancer=arg.pretrain_enhancer,   # one-stage: phase 1 first, then joint
  ))
  config.evals.enhancement = common.enhancement_eval(clips=3)   # WORKDIR/dtcm_enhancement.png
  config.optimizer = common.optimizer_block("adamw", lr=arg.lr, weight_decay=0.01,
                                            schedule="constant")
  if arg.pretrained:   # backbone weights (converted Kinetics checkpoint or a darkjax run), new head
    config.model_init = arg.pretrained
    config.model_load = mlc.ConfigDict(dict(dont_load=("/classifier/(fc|head)/",), prefix="classifier"))
  if arg.backbone == "resnext3d_101":   # the paper's Kinetics-400 initialisation
    common.require_weights(config, arg.init, arg.runlocal, backbone=common.weights_entry(
        "model_init", "pretrained", **common.KINETICS_RESNEXT101))
  if arg.runlocal:
    config.model.kwargs.backbone = "small3d_tiny"
    config.model.kwargs.normalise = "per_clip"
    config.model.kwargs.enhancer_kwargs.features = 8
    config.input.update(frames=8, crop_size=32, short_side=36, batch_size=8, eval_batch_size=8,
                        shuffle_window=16)
    config.model.kwargs.group_size = 4 if arg.k > 8 else arg.k
    config.total_steps = 2
    config.total_epochs = 0.0
    config.dtcm.enhancer_steps = 2
    config.evals.enhancement.clips = 2
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 2
  return config
