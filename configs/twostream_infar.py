r"""Two-stream C3D with the discriminative code layer (Jiang et al., CVPRW 2017) on InfAR:
an infrared tower and an optical-flow tower, each C3D fine-tuned from Sports-1M with
L = Lc + 0.02 Ld, then video-level softmax / kNN-code scores and their fusions.

  python -m darkjax.main --config=configs/twostream_infar.py:sports1m=/path/c3d_sports1m \
      --workdir=/tmp/darkjax/twostream_infar
  python -m darkjax.main --config=configs/twostream_infar.py:sports1m=DIR,dcl=False \
      --workdir=DIR2                                                      # without DCL
  python -m darkjax.tools.experiment --config configs/twostream_infar.py:sports1m=DIR \
      --seeds 0 --splits all --variant no_dcl=dcl=False --changes no_dcl=twostream.dcl \
      --out /tmp/darkjax/twostream_infar_5splits

Paper: 77.5% AP for late fusion 2 (kNN-code probabilities), 75.42% for the flow net with kNN
alone, 79.2% when late fusion 2 is further averaged with the paper's SVM on semantic concept
features (not reimplemented: the concept detectors are trained on the VideoStory data). The
paper's AP is top-1 accuracy over the test videos (docs/papers/twostream.md says why): the
`accuracy` of each row. Tables 2-3's rows land in WORKDIR/report.md
(`darkjax/evaluators/twostream_video.py`), averaged over the five 30/20-per-class splits by the
experiment tool.

Data: `python -m darkjax.data.prepare --dataset infar --src /path/to/InfAR --out
$DARKJAX_DATA/infar --flow --flow-method tvl1` (the flow tower reads its `flow` stream, TV-L1 as
`twostream.flow_method` says; without `--flow` the run stops at once naming the flag, with another
method it stops naming both ways out). Sports-1M C3D: `python -m darkjax.convert --arch c3d --src
c3d.pickle --out DIR --num-classes 0`, given as `sports1m=DIR` (required; loads into both towers,
whose inputs are normalised as it was trained: BGR 0-255 minus the Sports-1M mean).

The recipe, row by row with the paper's words and every choice where it is silent:
docs/papers/twostream.md (generated from `configs/twostream_base.py:RECIPE`). The Sports-1M C3D
enters through `twostream.tower_init.<stream>` rather than `config.model_init`: one converted C3D
goes into two towers, and a tower of another run is checked to be of the same stream. Departure on
4 or 8 devices: batch 30 does not split evenly over them, so the run trains with 32, the nearest
batch that does, at the same learning rate (logged at start, recorded in config.json; 1, 2, 3, 5,
6, 10, 15 or 30 devices run 30; `--config.batch_rounding=error` refuses instead).

Args (`--config=configs/twostream_infar.py:sports1m=DIR,split=2,dcl=False`):
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
  data_dir           prepared InfAR directory (default $DARKJAX_DATA/infar, or /<dataset>)
  dataset            a dataset of your own, prepared with `prepare --dataset folder --flow
                     --flow-method tvl1` under this name, read instead of InfAR
                     (docs/datasets.md, "Your own dataset")
  seed, runlocal     training seed; a tiny model and a few steps (still needs the prepared data)
"""

import os

from configs import common, twostream_base


def get_config(arg=None):
  config, arg = twostream_base.twostream_config(
      arg, runlocal_args=dict(batch=4, steps=4, code_size=24), dataset="")
  dataset = common.own_dataset(arg.dataset, "infar")
  # Both towers start from the same Sports-1M C3D (`sports1m=DIR` fills every tower_init).
  first = twostream_base.STREAM_SETS[arg.streams][0]
  common.require_weights(config, arg.init, arg.runlocal, sports1m=common.weights_entry(
      f"twostream.tower_init.{first}", "sports1m", **common.SPORTS1M_C3D))
  config.input.data.name = dataset
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  common.accelerator_input_workers(config)
  if arg.runlocal:
    config.model = common.model_block("twostream_c3d_tiny", code_size=arg.code_size,
                                      pooling="caffe")
    common.smoke_run(config)
    config.input.update(resize=(36, 48), crop_size=32)
    config.log_every = 1
    config.checkpoint_every = 4
  return config
