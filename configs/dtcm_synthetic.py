r"""DTCM on the embedded synthetic dataset made very dark (CPU): light enhancer + small 3D CNN.

  python -m darkjax.main --config=configs/dtcm_synthetic.py --workdir=/tmp/darkjax/dtcm_synthetic
  python -m darkjax.main --config=configs/dtcm_synthetic.py:setting=no_enhancement --workdir=...
  python -m darkjax.main --config=configs/dtcm_synthetic.py:runlocal --workdir=/tmp/dtcm_local

The 5-seed comparison of docs/papers/dtcm.md: the backbone first learns the actions on the bright
`day` stream of a separately generated set (as the paper's starts from Kinetics), then each
setting fine-tunes it on the very dark clips:

  python -m darkjax.main --config=configs/synthetic.py:stream=day,normalise=imagenet,darkness=1.0,data_seed=4321 \
      --workdir=/tmp/darkjax/dtcm_experiment/pretrain_day
  python -m darkjax.tools.experiment --config=configs/dtcm_synthetic.py:darkness=1.0,steps=100,pretrained=/tmp/darkjax/dtcm_experiment/pretrain_day,normalise=imagenet,pretrain_enhancer=True,setting=no_enhancement \
      --variant ltotal=setting=one_stage_total --changes ltotal=dtcm.setting,model.kwargs.enhancer,phases \
      --seeds 0,1,2,3,4 --out /tmp/darkjax/dtcm_experiment

The enhancer's two forms (docs/papers/dtcm.md, "Enhancer cost"), from scratch:

  python -m darkjax.tools.experiment --config configs/dtcm_synthetic.py:darkness=1.0,pretrain_enhancer=True,enhancer_steps=100,steps=100,full_resolution=True \
      --variant strided=full_resolution=False --changes strided=model.kwargs.enhancer_kwargs.full_resolution \
      --seeds 0,1,2,3,4 --metrics 'top1$' --out /tmp/darkjax/dtcm_form

The dataset (200 training clips a class) is generated on first use into
$DARKJAX_DATA/synthetic_darkness<d>_train200 (darkness d = 0.95 by default: clips of a few grey
levels). Clips enter the model in [0, 1]; the enhancer brightens them
and the backbone sees the enhanced clip normalised per clip.

Args (`--config=configs/dtcm_synthetic.py:setting=two_stage,k=2,seed=1`):
  setting    one_stage_total | one_stage_ar | two_stage | no_enhancement
  k          key-frame group size (16 frames per clip: 1, 2, 4, 8, 16)
  alpha      weight of the enhancement loss (0.1);  w_stc  weight of L_STC (4)
  backbone   small3d (default), small3d_tiny, small3d_wide, resnet3d_tiny, ...
  darkness   exposure of the generated clips, 0 (day) .. 1 (black); default 0.95
  normalise  the backbone's normalisation of the enhanced clip (per_clip; imagenet with `pretrained`)
  pretrained backbone weights to start from: a darkjax run's workdir, e.g. small3d trained on the
             bright `day` stream (the first command above), or a
             `python -m darkjax.convert` directory; the head starts anew
  initial_curve  curve parameter r the untrained enhancer starts around (default 0.2: the clips
             average ~0.04, where a darkening start stalls at black; 0 = a zero output bias)
  pretrain_enhancer  the enhancer trains alone for enhancer_steps first (one-stage settings)
  full_resolution  the enhancer's form (default False here: the strided form costs a quarter of
             the paper's full-resolution one, which makes CPU runs 4x slower; the ARID / Dark-48
             configs default to the paper's)
  steps, enhancer_steps, batch, lr, seed, data_dir
  runlocal   tiny model, tiny dataset, 4 steps: a smoke test
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections as mlc

from configs import common, dtcm_base
from darkjax.data import synthetic


def get_config(arg=None):
  arg = common.parse_arg(arg, setting="one_stage_total", k=4, alpha=0.1, w_stc=4.0,
                         backbone="small3d", enhancer="dtcm_enhancer", darkness=0.95, steps=0,
                         enhancer_steps=100, batch=32, lr=1e-3, seed=0, data_dir="",
                         normalise="per_clip", pretrained="", pretrain_enhancer=False,
                         initial_curve=0.2, full_resolution=False, runlocal=False,
                         variants=dict(runlocal=dict(backbone="small3d_tiny", batch=8, steps=4,
                                                     enhancer_steps=2)))
  base_args = (f"setting={arg.setting},k={arg.k},alpha={arg.alpha},w_stc={arg.w_stc},"
               f"backbone={arg.backbone},enhancer={arg.enhancer},normalise={arg.normalise},frames=16,"
               f"crop=32,short_side=36,batch={arg.batch},steps={arg.steps or 300},"
               f"enhancer_steps={arg.enhancer_steps},lr={arg.lr},seed={arg.seed},"
               f"pretrained={arg.pretrained},pretrain_enhancer={arg.pretrain_enhancer},"
               f"initial_curve={arg.initial_curve},full_resolution={arg.full_resolution},"
               f"init=none,split=0")
  suffix = "_local" if arg.runlocal else ""
  # 200 clips a class (runlocal: its few), in a directory of their own: 3D-DiNet's synthetic
  # runs read the generator's 100 a class from synthetic_darkness<d>
  data_dir = arg.data_dir or os.path.join(
      common.default_data_root(),
      f"synthetic{suffix}_darkness{arg.darkness:g}" + ("" if arg.runlocal else "_train200"))
  config = dtcm_base.dtcm_config(base_args + f",data_dir={data_dir}", "synthetic")
  # No flips: they would swap move_left and move_right.
  config.input.update(flip=False, eval_batch_size=32, shuffle_window=512)
  config.input.data.generate = mlc.ConfigDict(dataclasses.asdict(
      synthetic.SyntheticParams(darkness=arg.darkness, seed=1234, train_per_class=200)))
  config.optimizer = common.optimizer_block("adamw", lr=arg.lr, weight_decay=1e-4,
                                            schedule="cosine", warmup_steps=30)
  config.dtcm.enhancer_lr = 1e-3
  config.eval_every = 100
  config.checkpoint_every = 100
  config.log_every = 20

  if arg.runlocal:
    common.smoke_run(config)
    config.model.kwargs.enhancer_kwargs.features = 8
    config.input.eval_batch_size = 8
    config.input.data.generate.update(train_per_class=4, test_per_class=2)
    config.optimizer.warmup_steps = 0
    config.evals.enhancement.clips = 2
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 2
  return config
