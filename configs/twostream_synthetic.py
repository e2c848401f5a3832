r"""Two-stream C3D with the discriminative code layer on the embedded synthetic dataset, CPU-sized:
the thermal-like `ir` stream and optical flow computed from it on the host.

  python -m darkjax.main --config=configs/twostream_synthetic.py --workdir=/tmp/darkjax/twostream
  python -m darkjax.main --config=configs/twostream_synthetic.py:dcl=False --workdir=DIR
  python -m darkjax.tools.experiment --config configs/twostream_synthetic.py:scenario=what,flow=stored \
      --seeds 0,1,2,3,4 --variant no_dcl=dcl=False --changes no_dcl=twostream.dcl \
      --out /tmp/darkjax/twostream_experiment   # the table of docs/papers/twostream.md
  python -m darkjax.tools.experiment --config configs/twostream_synthetic.py:scenario=what,flow=stored,train_videos=10,steps=1200 \
      --seeds 0,1,2,3,4 --variant no_dcl=dcl=False --changes no_dcl=twostream.dcl \
      --out /tmp/darkjax/twostream_train10   # the code loss once the towers fit (same page)

The dataset (generated on first use into $DARKJAX_DATA/synthetic, the generator's default 100 clips
a class shared with the other paper configs' synthetic runs) has no flow stream, so `twostream.flow_source = "compute"` computes Farneback flow of every sampled
16-frame IR clip (32x32 frames). What departs from the paper's recipe (configs/twostream_infar.py),
and why: small C3D towers (`twostream_c3d_small_bn`: widths 8..64, fc 128, N = 64 code neurons)
trained from scratch (no Sports-1M weights at this size), with BatchNorm after every convolution
and no dropout in the fc layers: the plain C3D towers (`twostream_c3d_small`, no BatchNorm,
dropout 0.5 in fc6 / fc7) stayed at chance on the `what` scenario, their cross-entropy at ln 20
for 200 steps with SGD at lr 0.01, and for 100 steps at lr 0.2 or with AdamW at 1e-3; the
32x32 frames resized to 36x36, a random 32 crop for training and the centre crop for tests (the
paper: 112 of 128x171); per-clip normalisation; lr 0.05 with a cosine schedule, batch 16 and 300
steps (CPU time), since from-scratch towers learn nothing in so few steps at lr 1e-4. One split
(train / test); the synthetic videos are 16 frames long, so each video is one clip. Measured
results: docs/papers/twostream.md.

Args (`--config=configs/twostream_synthetic.py:steps=200,streams=flow`): as in
configs/twostream_infar.py, plus
  darkness   exposure of the generated dark RGB stream (the IR stream does not depend on it)
  scenario   the synthetic classes: `motion` (default, ten motions) or `what` (the ten motions x
             two kinds of thermal object, person or hot machine: twenty classes whose
             same-motion pairs flow barely separates and whose same-kind pairs one IR frame does
             not; $DARKJAX_DATA/synthetic_what)
  flow       `compute` (default: Farneback flow of every sampled IR clip, on the host) or
             `stored`: the dataset generated with its IR stream's Farneback flow stored (the
             encoding of `prepare --flow`; $DARKJAX_DATA/synthetic[_what]_flow) and read as a
             prepared dataset's flow stream, as configs/twostream_infar.py does: no flow computed
             per training clip, so a step costs the towers alone
  train_videos  train videos per class (default 100, the shared set): fewer is a set of its own
             (`..._train<n>`) with the first n train videos of each class and the same test
             videos, a training set the towers fit in a few hundred steps (InfAR has about 33
             per class)
  runlocal   a tiny model, a few steps, 4 train (unless train_videos is given) / 2 test videos
             per class (k = 2)
"""

import os

import ml_collections as mlc

from configs import common, twostream_base
from darkjax.data import synthetic

FLOW_CHOICES = ("compute", "stored")
TRAIN_VIDEOS = 100   # train videos per class of the generated set (the generator's default)
RUNLOCAL_VIDEOS = 4


def get_config(arg=None):
  config, arg = twostream_base.twostream_config(
      arg, runlocal_args=dict(batch=8, steps=4, code_size=24, train_videos=RUNLOCAL_VIDEOS),
      steps=300, batch=16, lr=0.05, code_size=64, split=0, darkness=0.8, init="none",
      scenario="motion", flow="compute", train_videos=TRAIN_VIDEOS)
  if arg.init == "pretrained" and not arg.sports1m:
    raise ValueError("config arg init=pretrained: configs/twostream_synthetic.py's towers start "
                     "from random weights unless sports1m=DIR names a converted Sports-1M C3D")
  config.input.update(resize=(36, 36), crop_size=32, normalise="per_clip", shuffle_window=512,
                      stream="ir", streams=())
  config.input.data.name = "synthetic"
  if arg.flow not in FLOW_CHOICES:
    raise ValueError(f"config arg flow={arg.flow!r} unknown; valid: {FLOW_CHOICES}")
  stored = arg.flow == "stored"
  if arg.train_videos < 1:
    raise ValueError(f"config arg train_videos={arg.train_videos}: need >= 1 train videos per "
                     f"class")
  suffix = ("" if arg.scenario == "motion" else f"_{arg.scenario}") + ("_flow" if stored else "")
  # A train size other than the default's (runlocal's under runlocal) is a set of its own: the
  # first train_videos of each class of the generator, the same test videos.
  sized = arg.train_videos != (RUNLOCAL_VIDEOS if arg.runlocal else TRAIN_VIDEOS)
  config.input.data.dir = arg.data_dir or os.path.join(
      common.default_data_root(), ("synthetic_local" if arg.runlocal else "synthetic") + suffix
      + (f"_train{arg.train_videos}" if sized else ""))
  config.input.data.generate = mlc.ConfigDict(dict(darkness=arg.darkness, seed=1234,
                                                   scenario=arg.scenario, flow=stored))
  if arg.train_videos != TRAIN_VIDEOS:
    config.input.data.generate.train_per_class = arg.train_videos
  config.model = common.model_block("twostream_c3d_small_bn", code_size=arg.code_size,
                                    pooling="port")   # the variant's (darkjax.models.twostream)
  config.twostream.flow_method = "farneback"   # TV-L1 costs more CPU time per training clip
  config.twostream.flow_source = "stream" if stored else "compute"
  if stored and "flow" in twostream_base.STREAM_SETS[arg.streams]:
    config.input.streams = ("flow",)
    config.twostream.flow_method = synthetic.FLOW_METHOD   # what the generator stores
  config.twostream.flow_normalise = "flow"
  config.optimizer.schedule = "cosine"
  config.log_every = 20
  config.checkpoint_every = 200
  if arg.runlocal:
    config.model = common.model_block("twostream_c3d_tiny", code_size=arg.code_size,
                                      pooling="caffe")
    common.smoke_run(config)
    config.input.update(resize=(0, 0), crop_size=0)
    config.input.data.generate.test_per_class = 2
    config.evals.video.k = 2
    config.evals.video.nn_steps = 50
    config.log_every = 2
    config.checkpoint_every = 4
  return config
