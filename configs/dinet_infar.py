r"""3D-DiNet (Ulhaq): visible XD145 (labelled source) -> infrared InfAR (unlabelled target).

  python -m darkjax.main --config=configs/dinet_infar.py:backbone=resnext3d_101 \
      --workdir=/tmp/darkjax/dinet_infar
Source-only baseline: add `domain_loss=False` to the args.

Paper: 90.83% top-1 on InfAR (target test split) with XD145 as the source (ResNeXt-DA backbone).

Data (prepared once with `python -m darkjax.data.prepare`, under $DARKJAX_DATA, default
~/darkjax_data; docs/datasets.md):
  xd145   XD145 (`--dataset xd145`): the labelled source, all 600 clips (split "all" = train<k> +
          test<k>; its `eval_source` evaluation on test<k> is therefore a fit to training clips)
  infar   InfAR (`--dataset infar`): split k's train part as unlabelled target clips, its test
          part for evaluation
Both releases hold the same 12 classes, which `prepare` writes in one label order
(`INFAR_CLASSES`); the trainer checks that source and target agree. Neither release ships split
lists: `prepare` draws the seed papers' 5 random 30 / 20 clips-per-class splits (seeded, stored in
the manifest); `split=k` picks split k of both.

Evaluation (the paper states no test-time protocol; this is the common one): 1 clip x 1 centre
crop of 16 dense frames per video, every video of InfAR's test split counted once (`eval`) and of
XD145's (`eval_source`); top-1, top-5 and mean class accuracy. `eval_clips=10,eval_crops=3`
gives the 10-clip x 3-crop protocol.

Pretrained weights: the backbone starts from Kinetics-400 (`pretrained=DIR`, the output of
`python -m darkjax.convert --arch <backbone> --src <file> --out DIR --num-classes 0`: the
run without it stops naming the file and the command; `init=none` trains from random
initialisation instead).

Args (`--config=configs/dinet_infar.py:backbone=c3d,steps=8000`):
  backbone     resnext3d_101 (ResNeXt-DA, default) | resnet3d_101 (ResNet-DA) | c3d (C3D-DA) or any
               other zoo model name
  steps        training steps
  batch        global batch size (half source, half target)
  lr           base learning rate of the DANN annealing lr_0 / (1 + 10 p)^0.75
  domain_loss  False: source-only baseline
  domain_weight  the domain BCE summed over all clips against the source CE summed over the
               source clips (Eq. 4: 1; 0.5 with half-source batches: the mean BCE)
  seed         training seed
  pretrained   converted Kinetics backbone directory (loaded into the feature extractor)
  init         pretrained (default) | none: random initialisation, no weights required
  split        which of the 5 protocol splits (1..5)
  eval_clips, eval_crops   test-time views per video (clips x 1 centre or 3 crops)
  source_dir, target_dir   dataset directories (default $DARKJAX_DATA/xd145, $DARKJAX_DATA/infar,
               or $DARKJAX_DATA/<name> of the next args)
  source_dataset, target_dataset   datasets of your own (`prepare --dataset folder` under this
               name) as the labelled source or the unlabelled target (docs/datasets.md, "Your own
               dataset"); the two must hold the same classes in the same order
  runlocal     tiny backbone and sizes (still needs the prepared datasets)
"""

import os

import ml_collections as mlc

from configs import common, dinet_base
from darkjax import convert

INFAR_CLASSES = ("fight", "handclapping", "handshake", "hug", "jog", "jump", "punch", "push",
                 "skip", "walk", "wave1", "wave2")
BACKBONES = {"resnext3d_101": "ResNeXt-DA", "resnet3d_101": "ResNet-DA", "c3d": "C3D-DA"}
BACKBONE_WEIGHTS = {"resnext3d_101": common.KINETICS_RESNEXT101,
                    "resnet3d_101": common.KINETICS_RESNET101, "c3d": common.SPORTS1M_C3D}
RANDOM_INIT_NORMALISE = "kinetics"   # unit-scale inputs for a backbone from random weights


def backbone_normalise(backbone: str) -> str:
  """The input normalisation the backbone's published weights were trained on (darkjax.convert
  records it with the converted weights and loading checks it): 3D-ResNets-PyTorch's first Kinetics
  release (activitynet_mean), Tran et al.'s Sports-1M C3D (c3d_sports1m)."""
  try:
    return convert.input_normalise(backbone)
  except ValueError:   # a zoo model without a converter has no published weights
    return RANDOM_INIT_NORMALISE


def get_config(arg=None):
  arg = common.parse_arg(arg, backbone="resnext3d_101", steps=10000, batch=32, lr=0.001,
                         domain_loss=True, domain_weight=1.0, seed=0, pretrained="",
                         init="pretrained", split=1,
                         eval_clips=1, eval_crops=1, source_dir="", target_dir="",
                         source_dataset="", target_dataset="", runlocal=False,
                         variants=dict(runlocal=dict(backbone="resnet3d_tiny", batch=4, steps=10)))
  root = common.default_data_root()
  config = common.base_config("dinet", arg.steps, seed=arg.seed)
  # The backbone starts from its weights when given them, or when they are required.
  pretrained = bool(arg.pretrained) or (arg.init != "none" and not arg.runlocal)
  normalise = backbone_normalise(arg.backbone) if pretrained else RANDOM_INIT_NORMALISE
  config.input = common.input_block(batch_size=arg.batch, eval_batch_size=32, frames=16,
                                    short_side=128, crop_size=112, flip=True,
                                    normalise=normalise, sampling="dense",
                                    eval_clips=arg.eval_clips, eval_crops=arg.eval_crops)
  # The paper trains on all of XD145 (600 clips): train<k> and test<k> together.
  source = common.own_dataset(arg.source_dataset, "xd145", "source_dataset")
  target = common.own_dataset(arg.target_dataset, "infar", "target_dataset")
  config.input.data = common.data_block(source, arg.source_dir or os.path.join(root, source),
                                        split_index=arg.split, split="all")
  config.input.stream = "video"
  config.input.batch_parts = 2   # half source, half target: each split over the devices
  common.accelerator_input_workers(config)
  config.dinet = dinet_base.dinet_block(
      common.data_block(target, arg.target_dir or os.path.join(root, target),
                        split_index=arg.split), "video",
      domain_loss=arg.domain_loss)
  config.dinet.domain_loss_weight = arg.domain_weight
  config.evals = dinet_base.dinet_evals()
  # C3D drops its fc7 features itself (dropout 0.5 after fc6 and fc7): no second dropout there.
  config.model = common.model_block("dinet", backbone=arg.backbone, domain_hidden=(1024, 1024),
                                    domain_dropout=0.5,
                                    head_dropout=0.0 if arg.backbone == "c3d" else 0.5,
                                    backbone_kwargs=mlc.ConfigDict())
  # A converted Kinetics backbone loads into the feature extractor.
  config.model_init = arg.pretrained
  config.model_load.prefix = "extractor"
  if arg.backbone in BACKBONE_WEIGHTS:
    common.require_weights(config, arg.init, arg.runlocal, backbone=common.weights_entry(
        "model_init", "pretrained", **BACKBONE_WEIGHTS[arg.backbone]))
  config.optimizer = common.optimizer_block("sgd", lr=arg.lr, momentum=0.9, weight_decay=5e-4,
                                            schedule="dann")
  config.log_every = 50
  config.eval_every = 2000
  config.checkpoint_every = 1000

  if arg.runlocal:
    common.smoke_run(config)
    config.model.kwargs.domain_hidden = (16, 16)
    config.input.update(eval_batch_size=4, short_side=36, crop_size=32)
    config.log_every = 5
    config.eval_every = 0
    config.checkpoint_every = 5
  return config
