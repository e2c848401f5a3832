r"""DTCM on ARID: the light curve enhancer cascaded with a 3D-ResNeXt-101, trained in one stage.

  python -m darkjax.main --config=configs/dtcm_arid.py --workdir=/tmp/darkjax/dtcm_arid
  python -m darkjax.main --config=configs/dtcm_arid.py:frames=64,k=4 --workdir=...  # Table I
  python -m darkjax.main --config=configs/dtcm_arid.py:setting=two_stage --workdir=...  # Table VI

Paper (Tu et al., TIP 2023, Table I): 96.36% top-1 on ARID at 64 x 112^2 with k = 4 (Kinetics
pre-trained backbone; bring it with `pretrained=DIR`, DIR written by `python -m darkjax.convert
--arch resnext3d_101 ...`: it loads into the backbone, `classifier/`, and the head starts anew).
ARID must be prepared once (`python -m darkjax.data.prepare --dataset arid_v1 --src ... --out
$DARKJAX_DATA/arid_v1`); without it the run stops at once saying so.

Args (`--config=configs/dtcm_arid.py:k=8,alpha=0.1,w_stc=4,setting=one_stage_ar`):
  setting      one_stage_total (L_AR + alpha (W_STC L_STC + L_dark), default) | one_stage_ar |
               two_stage | no_enhancement
  k            key-frame group size (1, 2, 4, 8, 16): curves from each group's middle frame
  alpha        weight of the enhancement loss (0.1)
  w_stc        weight of L_STC inside it (4)
  backbone     any zoo classifier (resnext3d_101, resnet3d_50, r3d_18, small3d, ...)
  enhancer     dtcm_enhancer | zero_dce | zero_dce_pp
  pretrained   backbone weights: a `python -m darkjax.convert` directory or another darkjax run's
               workdir (its latest checkpoint); loaded into `classifier/` except its head
  normalise    the backbone's input normalisation after enhancing (kinetics; match the pretraining)
  initial_curve  curve parameter r the untrained enhancer starts around (0; > 0 brightens: for
               very dark clips, see darkjax/models/enhancers.py)
  pretrain_enhancer  one-stage settings: train the enhancer alone first (enhancer_steps steps of
               the zero-reference losses), then jointly
  frames, crop, short_side, batch, steps, enhancer_steps (phase 1), lr, seed, data_dir
  runlocal     tiny backbone, 8 frames at 32x32, 2 steps: a smoke test
Training as the paper: AdamW lr 1e-5, batch 4, dense sampling, random 112 crops for training and
one centre crop for testing.
"""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common

ARGS = dict(setting="one_stage_total", k=4, alpha=0.1, w_stc=4.0, backbone="resnext3d_101",
            enhancer="dtcm_enhancer", normalise="kinetics", frames=16, crop=112, short_side=128,
            batch=4, steps=20000, enhancer_steps=2000, lr=1e-5, seed=0, data_dir="",
            pretrained="", pretrain_enhancer=False, initial_curve=0.0, runlocal=False)
SETTINGS = ("one_stage_total", "one_stage_ar", "two_stage", "no_enhancement")


def dtcm_config(arg: str | None, dataset: str, split_index: int = 0, **defaults) -> mlc.ConfigDict:
  """The DTCM config for `dataset` (shared by configs/dtcm_*.py); `defaults` override ARGS."""
  arg = common.parse_arg(arg, **{**ARGS, **defaults})
  if arg.setting not in SETTINGS:
    raise ValueError(f"config arg setting={arg.setting!r}: valid {SETTINGS}")
  if arg.frames % arg.k:
    raise ValueError(f"config arg k={arg.k}: frames={arg.frames} must be a multiple of k")
  config = common.base_config("dtcm", arg.steps, seed=arg.seed, eval_every=2000,
                              checkpoint_every=1000)
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="dense",
      short_side=arg.short_side, crop_size=arg.crop, train_crop="random", flip=True,
      eval_clips=1, eval_crops=1, normalise="none", shuffle_window=256)
  config.input.data.name = dataset
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  config.input.data.split_index = split_index
  no_enhancement = arg.setting == "no_enhancement"
  config.model = mlc.ConfigDict(dict(name="dtcm", kwargs=mlc.ConfigDict(dict(
      backbone=arg.backbone, backbone_kwargs=mlc.ConfigDict(),
      enhancer="" if no_enhancement else arg.enhancer,
      enhancer_kwargs=mlc.ConfigDict(dict(initial_curve=arg.initial_curve)),
      group_size=arg.k, normalise=arg.normalise))))
  config.dtcm = mlc.ConfigDict(dict(
      setting=arg.setting, alpha=arg.alpha, w_stc=arg.w_stc,
      loss_variant="paper",          # paper | official (forms and default weights of L_dark)
      enhancer_steps=arg.enhancer_steps, enhancer_lr=1e-4,   # two_stage phase 1
      pretrain_enhancer=arg.pretrain_enhancer,   # one-stage: phase 1 first, then joint
      visual_clips=3,                # test clips in WORKDIR/dtcm_enhancement.png
  ))
  config.optimizer = common.optimizer_block("adamw", lr=arg.lr, weight_decay=1e-4,
                                            schedule="constant")
  if arg.pretrained:   # backbone weights (converted Kinetics checkpoint or a darkjax run), new head
    config.model_init = arg.pretrained
    config.model_load = mlc.ConfigDict(dict(dont_load=("/classifier/(fc|head)/",), prefix="classifier"))
  if arg.runlocal:
    config.model.kwargs.backbone = "small3d_tiny"
    config.model.kwargs.normalise = "per_clip"
    config.model.kwargs.enhancer_kwargs.features = 8
    config.input.update(frames=8, crop_size=32, short_side=36, batch_size=8, eval_batch_size=8,
                        shuffle_window=16)
    config.model.kwargs.group_size = 4 if arg.k > 8 else arg.k
    config.total_steps = 2
    config.dtcm.enhancer_steps = 2
    config.dtcm.visual_clips = 2
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 2
  return config


def get_config(arg=None):
  return dtcm_config(arg, "arid_v1")
