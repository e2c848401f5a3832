"""The LIFT-Net config builder shared by configs/lift_*.py (one dataset each): the paper's
recipe as config args (see configs/lift_arid.py for their meaning)."""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common

LUMINOUS_BACKBONES = {"r2plus1d": "r2plus1d_34_ig65m", "r3d": "r3d_18"}
VARIANTS = ("small", "medium", "large", "tiny_test")
ARGS = dict(variant="large", luminous="r2plus1d", luminous_input="gamma", kd=True,
            vit_trainable="first", gamma=1.8, frames=30, crop=224, short_side=256, batch=32,
            steps=3000, teacher_steps=3000, lr=1e-4, vit_init="", luminous_init="", data_dir="",
            init="pretrained", runlocal=False, seed=0)


def lift_config(arg: str | None, dataset: str, split_index: int = 0, **defaults) -> mlc.ConfigDict:
  """The LIFT-Net config for a prepared `dataset` (shared by configs/lift_*.py)."""
  arg = common.parse_arg(arg, **{**ARGS, **defaults})
  if arg.variant not in VARIANTS:
    raise ValueError(f"config arg variant={arg.variant!r}: valid {VARIANTS}")
  if arg.luminous not in LUMINOUS_BACKBONES:
    raise ValueError(f"config arg luminous={arg.luminous!r}: valid {sorted(LUMINOUS_BACKBONES)}")
  if arg.runlocal:
    arg.update(variant="tiny_test", frames=8, crop=32, short_side=36, batch=8, steps=2,
               teacher_steps=2)
  config = common.base_config("liftnet", arg.steps, seed=arg.seed)
  flow = arg.luminous_input == "flow"
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="segment",
      short_side=arg.short_side, crop_size=arg.crop, flip=True, normalise="vit", gamma=0.0,
      shuffle_window=256, streams=("flow",) if flow else ())
  config.input.data.name = dataset
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  config.input.data.split_index = split_index
  config.model = common.model_block(f"liftnet_{arg.variant}")
  if arg.variant != "tiny_test":
    config.model.kwargs.luminous = LUMINOUS_BACKBONES[arg.luminous]
    config.model.kwargs.remat = False
  config.lift = mlc.ConfigDict(dict(
      kd=arg.kd, kd_weight=1.0, kd_reduction="sum", kd_features="hidden",
      luminous_input=arg.luminous_input, gamma=arg.gamma,
      vit_trainable=arg.vit_trainable,
      luminous_normalise="ig65m",   # the luminous clip's normalisation (flow: always (x-128)/128)
      augment=mlc.ConfigDict(dict(colour_jitter=0.2, affine=0.1, rotation=0.0, shear=0.0,
                                  cutmix=0.5, frame_shuffle=0.1)),  # rotation, shear: max degrees
      pretrained=mlc.ConfigDict(dict(vit=arg.vit_init, luminous=arg.luminous_init)),
  ))
  luminous_weights = (common.IG65M_R2PLUS1D_34 if arg.luminous == "r2plus1d"
                      else common.KINETICS_R3D_18)
  common.require_weights(
      config, arg.init, arg.runlocal or arg.variant == "tiny_test",
      vit=common.weights_entry("lift.pretrained.vit", "vit_init", **common.IMAGENET21K_VIT_B16),
      luminous=common.weights_entry("lift.pretrained.luminous", "luminous_init",
                                    **luminous_weights))
  config.evals.attention = common.attention_eval(clips=4)   # WORKDIR/attention_<i>.png
  config.optimizer = common.optimizer_block("adamw", lr=arg.lr, weight_decay=0.05,
                                            schedule="cosine", warmup_steps=arg.steps // 20)
  config.teacher = mlc.ConfigDict(dict(
      total_steps=arg.teacher_steps,
      optimizer=common.optimizer_block("adamw", lr=arg.lr, weight_decay=0.05, schedule="cosine",
                                       warmup_steps=arg.teacher_steps // 20),
      eval_every=1000, checkpoint_every=500))
  config.log_every = 20
  config.eval_every = 1000
  config.checkpoint_every = 500
  if arg.runlocal:
    config.input.shuffle_window = 16
    config.input.prefetch = 0
    config.evals.attention.clips = 2
    config.log_every = 1
    config.eval_every = 0
    config.teacher.eval_every = 0
    config.checkpoint_every = config.teacher.checkpoint_every = 1
  return config
