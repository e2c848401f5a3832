r"""3D-DiNet (Ulhaq): visible XD145 (labelled source) -> infrared InfAR (unlabelled target).

  python -m darkjax.main --config=configs/dinet_infar.py:backbone=resnext3d_101 \
      --workdir=/tmp/darkjax/dinet_infar
Source-only baseline: add `domain_loss=False` to the args.

Paper: 90.83% top-1 on InfAR (target test split) with XD145 as the source (ResNeXt-DA backbone).

Data (prepared once with `python -m darkjax.data.prepare --dataset xd145|infar`, under
$DARKJAX_DATA, default ~/darkjax_data; docs/datasets.md):
  xd145   XD145, the visible twin of InfAR: the same 12 classes (`INFAR_CLASSES`), 50 clips each
  infar   InfAR (train split: unlabelled target clips; test split: evaluation)
Source and target must list the same class names in the same order; the trainer checks it.
Splits: neither release ships split lists; `prepare` draws the seed papers' 5 random 30 / 20
clips-per-class splits (seeded, stored in the manifest), and `split=k` picks `train<k>` / `test<k>`
of both datasets.

Evaluation (the paper states no test-time protocol; this is the common one): 1 clip x 1 centre
crop of 16 dense frames per video, every video of InfAR's test split counted once (`eval`) and of
XD145's (`eval_source`); top-1, top-5 and mean class accuracy. `eval_clips=10,eval_crops=3`
gives the 10-clip x 3-crop protocol.

Args (`--config=configs/dinet_infar.py:backbone=c3d,steps=8000`):
  backbone     resnext3d_101 (ResNeXt-DA, default) | resnet3d_101 (ResNet-DA) | c3d (C3D-DA) or any
               other zoo model name
  steps        training steps
  batch        global batch size (half source, half target)
  lr           base learning rate of the DANN annealing lr_0 / (1 + 10 p)^0.75
  domain_loss  False: source-only baseline
  seed         training seed
  split        which of the 5 protocol splits (1..5)
  eval_clips, eval_crops   test-time views per video (clips x 1 centre or 3 crops)
  source_dir, target_dir   dataset directories (default $DARKJAX_DATA/xd145, $DARKJAX_DATA/infar)
  runlocal     tiny backbone and sizes (still needs the prepared datasets)
"""

import os

import ml_collections as mlc

from configs import common, dinet_base

INFAR_CLASSES = ("fight", "handclapping", "handshake", "hug", "jog", "jump", "punch", "push",
                 "skip", "walk", "wave1", "wave2")
BACKBONES = {"resnext3d_101": "ResNeXt-DA", "resnet3d_101": "ResNet-DA", "c3d": "C3D-DA"}


def get_config(arg=None):
  arg = common.parse_arg(arg, backbone="resnext3d_101", steps=10000, batch=32, lr=0.001,
                         domain_loss=True, seed=0, split=1, eval_clips=1, eval_crops=1,
                         source_dir="", target_dir="", runlocal=False)
  root = common.default_data_root()
  config = common.base_config("dinet", arg.steps, seed=arg.seed)
  config.input = common.input_block(batch_size=arg.batch, eval_batch_size=32, frames=16,
                                    short_side=128, crop_size=112, flip=True,
                                    normalise="kinetics", sampling="dense",
                                    eval_clips=arg.eval_clips, eval_crops=arg.eval_crops)
  config.input.data = common.data_block("xd145", arg.source_dir or os.path.join(root, "xd145"),
                                        split_index=arg.split)
  config.input.stream = "video"
  config.dinet = dinet_base.dinet_block(
      common.data_block("infar", arg.target_dir or os.path.join(root, "infar"),
                        split_index=arg.split), "video",
      domain_loss=arg.domain_loss)
  config.evals = dinet_base.dinet_evals()
  config.model = common.model_block("dinet", backbone=arg.backbone, domain_hidden=(1024, 1024),
                                    domain_dropout=0.5, head_dropout=0.5,
                                    backbone_kwargs=mlc.ConfigDict())
  # A converted Kinetics backbone (python -m darkjax.convert --arch resnext3d_101 --src ... --out DIR
  # --num-classes 0) loads into the feature extractor with --config.model_init=DIR.
  config.model_load = mlc.ConfigDict(dict(dont_load=(), prefix="extractor"))
  config.optimizer = common.optimizer_block("sgd", lr=arg.lr, momentum=0.9, weight_decay=5e-4,
                                            schedule="dann")
  config.compute_dtype = "bfloat16"
  config.log_every = 50
  config.eval_every = 2000
  config.checkpoint_every = 1000

  if arg.runlocal:
    config.model.kwargs.backbone = "resnet3d_tiny"
    config.model.kwargs.domain_hidden = (16, 16)
    config.input.update(batch_size=4, eval_batch_size=4, short_side=36, crop_size=32,
                        shuffle_window=16)
    config.compute_dtype = "float32"
    config.total_steps = arg.steps if arg.steps != 10000 else 10
    config.log_every = 5
    config.eval_every = 0
    config.checkpoint_every = 5
  return config
