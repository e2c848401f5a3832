r"""DTCM on ARID: the light curve enhancer cascaded with a 3D-ResNeXt-101, trained in one stage.

  python -m darkjax.main --config=configs/dtcm_arid.py:pretrained=DIR --workdir=/tmp/darkjax/dtcm_arid
  python -m darkjax.main --config=configs/dtcm_arid.py:pretrained=DIR,setting=two_stage \
      --workdir=...  # Table VI

Paper (Tu et al., TIP 2023, Table III): 96.36% top-1 on ARID at 64 x 112^2 with k = 4, the mean
of ARID's 3 splits (this config trains split 1; `python -m darkjax.tools.experiment` runs all
three). The Kinetics-400 backbone is required: DIR is written by `python -m darkjax.convert --arch
resnext3d_101 --src resnext-101-kinetics.pth --out DIR --num-classes 0` and loads into the
backbone, `classifier/`; the head starts anew. A run without it stops at start with that command;
`init=none` trains from random initialisation instead. ARID must be prepared once (`python -m
darkjax.data.prepare --dataset arid_v1 --src ... --out $DARKJAX_DATA/arid_v1 --short-side 240`,
the short side this config reads; docs/datasets.md); without it the run
stops at once saying so.

Args (`--config=configs/dtcm_arid.py:k=8,alpha=0.1,w_stc=4,setting=one_stage_ar`):
  setting      one_stage_total (L_AR + alpha (W_STC L_STC + L_dark), default) | one_stage_ar |
               two_stage | no_enhancement
  k            key-frame group size (1, 2, 4, 8, 16): curves from each group's middle frame
  alpha        weight of the enhancement loss (0.1)
  w_stc        weight of L_STC inside it (4)
  backbone     any zoo classifier (resnext3d_101, resnet3d_50, r3d_18, small3d, ...)
  enhancer     dtcm_enhancer | zero_dce | zero_dce_pp
  full_resolution  dtcm_enhancer: every layer at frame resolution (True, the paper's cost) or
               layers 5-6 at stride 2 with a final resize (False, about 4x cheaper)
  pretrained   backbone weights: a `python -m darkjax.convert` directory or another darkjax run's
               workdir (its latest checkpoint); loaded into `classifier/` except its head
  normalise    the backbone's input normalisation after enhancing (activitynet_mean: that of the
               Kinetics weights, checked when they are loaded)
  initial_curve  curve parameter r the untrained enhancer starts around (0; > 0 brightens: for
               very dark clips, see darkjax/models/enhancers.py)
  pretrain_enhancer  one-stage settings: train the enhancer alone first (enhancer_steps steps of
               the zero-reference losses), then jointly
  epochs       training epochs over the prepared train split (50); steps = ceil(epochs x clips /
               batch), resolved at start. steps > 0 overrides it with a fixed step count
  init         pretrained (default: `pretrained` is required) | none (random initialisation)
  split        official split 1, 2 or 3 (`train<k>` / `test<k>` of the prepared dataset)
  eval_clips, eval_crops   test-time views per video: clips x (1 centre | 3) crops
  frames, crop, short_side, batch, steps, enhancer_steps (phase 1), lr, seed, data_dir
  dataset      a dataset of your own (`prepare --dataset folder` under this name) read instead of
               ARID, by this recipe, from $DARKJAX_DATA/<dataset> unless data_dir says where
               (docs/datasets.md, "Your own dataset")
  runlocal     tiny backbone, 8 frames at 32x32, 2 steps: a smoke test
Training as the paper (Sec. IV-A): 64 frames by dense sampling, frames resized to 320 x 240 (short
side 240; prepare ARID at its native 320 x 240), random 112 crops, AdamW lr 1e-5, batch 4,
50 epochs. Choices where the paper is silent: AdamW weight decay 0.01 (torch's default), constant
learning rate.
Evaluation as the paper ("1-clip and center-crop"): one dense clip of `frames` frames per video,
one 112 x 112 centre crop, every video of the split's test list counted once; top-1, top-5 and
mean class accuracy. The paper averages ARID's top-1 / top-5 over the 3 splits: run `split=1`,
`split=2`, `split=3` and average. Data: docs/datasets.md.
"""

from __future__ import annotations

from configs import dtcm_base


def get_config(arg=None):
  return dtcm_base.dtcm_config(arg, "arid_v1")
