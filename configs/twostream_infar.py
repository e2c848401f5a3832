r"""Two-stream C3D with the discriminative code layer (Jiang et al., CVPRW 2017) on InfAR:
an infrared tower and an optical-flow tower, each C3D fine-tuned from Sports-1M with
L = Lc + 0.02 Ld, then video-level softmax / kNN-code scores and their fusions.

  python -m darkjax.main --config=configs/twostream_infar.py:sports1m=/path/c3d_sports1m \
      --workdir=/tmp/darkjax/twostream_infar
  python -m darkjax.main --config=configs/twostream_infar.py:dcl=False --workdir=DIR  # without DCL
  python -m darkjax.tools.experiment --config configs/twostream_infar.py:sports1m=DIR \
      --seeds 0 --splits all --variant no_dcl=dcl=False --out /tmp/darkjax/twostream_infar_5splits

Paper: 77.5% AP for late fusion 2 (kNN-code probabilities, flow:IR = 2:1), 75.42% for the flow net
with kNN alone, 79.2% when late fusion 2 is further averaged with the paper's SVM on semantic
concept features (not reimplemented: the concept detectors are trained on the VideoStory data).
Tables 2-3's rows land in WORKDIR/report.md (`darkjax/evaluators/twostream_video.py`), averaged
over the five 30/20-per-class splits by the experiment tool.

Data: `python -m darkjax.data.prepare --dataset infar --src /path/to/InfAR --out
$DARKJAX_DATA/infar --flow` (the flow tower reads its `flow` stream; without `--flow` the run stops
at once naming the flag). Sports-1M C3D: `python -m darkjax.convert --arch c3d --src
c3d.pickle --out DIR --num-classes 0`, given as `sports1m=DIR` (loads into both towers).

The paper's recipe (Sec. 3.1): 16-frame clips of 128x171 frames, random 112 crop for training,
centre crop for tests; SGD, lr 1e-4, batch 30, weight decay 5e-4, 10,000 iterations; alpha 0.02;
DC layer of N = 4096 on fc7; kNN with k = 5, gamma = 0.05; video scores averaged over
non-overlapping 16-frame clips. Choices where the paper is silent: momentum 0.9 and a constant
learning rate (Caffe's C3D fine-tuning solver defaults), dropout 0.5 on fc6/fc7 (C3D's), no flips
(the paper lists only the crop), IR frames normalised with the Kinetics mean / std (the Caffe
C3D subtracts a Sports-1M mean cube not shipped here), spare code neurons (4096 mod 12 = 4) to the
first four classes (`--config.twostream.spare_classes`), both streams trained in one model (their
parameters are disjoint, so the gradients equal separate training), and the two-layer fusion net's
hidden activation (ReLU). Departure on 4 or 8 devices: batch 30 does not split evenly over them,
so the run trains with 32, the nearest batch that does, at the same learning rate (logged at start,
recorded in config.json; 1, 2, 3, 5, 6, 10, 15 or 30 devices run 30; `--config.batch_rounding=error`
refuses instead). The Sports-1M C3D enters through `twostream.tower_init.<stream>` rather
than `config.model_init`: one converted C3D goes into two towers, and a tower of another run is
checked to be of the same stream.

Args (`--config=configs/twostream_infar.py:split=2,dcl=False`):
  steps, batch, lr   SGD iterations, global batch, learning rate (paper: 10000, 30, 1e-4)
  dcl, alpha         the discriminative code loss and its weight (paper: True, 0.02)
  code_size          N, the DC layer's outputs (paper: 4096; must be >= the 12 classes)
  streams            both | ir | flow
  split              InfAR split 1..5 (30 train / 20 test videos per class, seeded)
  k, gamma           the kNN code classifier
  sports1m           converted Sports-1M C3D directory for both towers (required: a run without it
                     stops at start naming the file and the convert command)
  init               pretrained (default) | none: both towers from random initialisation (inputs
                     then unit-scale: IR Kinetics mean / std, flow (v - 128) / 128)
  data_dir           prepared InfAR directory (default $DARKJAX_DATA/infar)
  seed, runlocal     training seed; a tiny model and a few steps (still needs the prepared data)
"""

import os

from configs import common, twostream_base


def get_config(arg=None):
  config, arg = twostream_base.twostream_config(arg)
  # Both towers start from the same Sports-1M C3D (`sports1m=DIR` fills every tower_init).
  first = twostream_base.STREAM_SETS[arg.streams][0]
  common.require_weights(config, arg.init, arg.runlocal, sports1m=common.weights_entry(
      f"twostream.tower_init.{first}", "sports1m", **common.SPORTS1M_C3D))
  config.input.data.name = "infar"
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), "infar")
  if arg.runlocal:
    common.smoke_run(config)
    config.model = common.model_block("twostream_c3d_tiny", code_size=24)
    config.input.update(batch_size=4, eval_batch_size=4, resize=(36, 48), crop_size=32)
    config.total_steps = 4
    config.log_every = 1
    config.checkpoint_every = 4
  return config
