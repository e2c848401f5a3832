"""Pieces shared by the two-stream C3D configs (twostream_infar.py, twostream_synthetic.py): the
`config.twostream` block read by darkjax/trainers/twostream.py, the video-level evaluation block
and the config builder."""

from __future__ import annotations

import ml_collections as mlc

from configs import common

STREAM_SETS = {"both": ("ir", "flow"), "ir": ("ir",), "flow": ("flow",)}
ARGS = dict(steps=10000, batch=30, lr=1e-4, dcl=True, alpha=0.02, code_size=4096, streams="both",
            split=1, k=5, gamma=0.05, sports1m="", init="pretrained", data_dir="", seed=0,
            runlocal=False)
# The normalisation of the IR and flow towers: with the Sports-1M C3D, the one it was trained on
# (darkjax.convert records it; loading a tower checks it); from random initialisation (init=none)
# unit-scale inputs, which a C3D without BatchNorm needs from a random start.
PRETRAINED_NORMALISE = dict(ir="c3d_sports1m", flow="c3d_sports1m")
RANDOM_INIT_NORMALISE = dict(ir="kinetics", flow="flow")


def twostream_block(streams=("ir", "flow"), dcl: bool = True, alpha: float = 0.02,
                    flow_source: str = "stream") -> mlc.ConfigDict:
  """`config.twostream`: towers, the discriminative code loss and where the flow comes from."""
  return mlc.ConfigDict(dict(
      streams=tuple(streams),          # towers: "ir" (input.stream's frames) and/or "flow"
      dcl=dcl,                         # False: softmax-only towers (the paper's "without DCL")
      alpha=alpha,                     # L = Lc + alpha Ld (eq. 4)
      spare_classes=(),                # class names given the N mod m spare code neurons
      flow_source=flow_source,         # stream: the `flow` record stream | compute: on the host
      # darkjax.data.flow method of the flow the tower reads (flow_source=stream: checked against
      # the dataset's manifest); tvl1: the paper's variational flow (its ref. [2])
      flow_method="tvl1",
      flow_scale=8.0,                  # flow_source=compute: encoded units per pixel
      flow_normalise="flow",           # the flow clip's darkjax.data.normalise mode
      flow_magnitude_shift=128.0,      # subtracted from the stored magnitude: zero motion -> 0
      softmax_fusion_weights=mlc.ConfigDict(dict(ir=1.0, flow=2.0)),  # `predict` (late fusion 1)
      tower_init=mlc.ConfigDict(dict(ir="", flow="")),   # converted C3D dir or a run's workdir
  ))


def video_eval(k: int = 5, gamma: float = 0.05) -> mlc.ConfigDict:
  """Whole-video evaluation with every row of the paper's Tables 2-3
  (darkjax/evaluators/twostream_video.py)."""
  return mlc.ConfigDict(dict(
      type="twostream_video", data="", split="", train_split="", k=k, gamma=gamma,
      softmax_weights=mlc.ConfigDict(dict(ir=1.0, flow=2.0)),   # late fusion 1: flow:IR = 2:1
      knn_weights=mlc.ConfigDict(dict(ir=1.0, flow=2.0)),       # late fusion 2
      hidden=50, nn_steps=500, nn_lr=0.01))                     # the fusion networks


def twostream_config(arg, **defaults) -> tuple[mlc.ConfigDict, mlc.ConfigDict]:
  """(config, parsed args): the paper's recipe (Sec. 3.1) for a prepared dataset; the caller sets
  the data block and what differs."""
  arg = common.parse_arg(arg, **{**ARGS, **defaults})
  if arg.streams not in STREAM_SETS:
    raise ValueError(f"config arg streams={arg.streams!r}: valid {sorted(STREAM_SETS)}")
  config = common.base_config("twostream", arg.steps, seed=arg.seed)
  if arg.init not in common.INIT_CHOICES:
    raise ValueError(f"config arg init={arg.init!r}: valid {common.INIT_CHOICES} (none: train "
                     f"from random initialisation instead of the Sports-1M C3D)")
  # The towers start from the Sports-1M C3D when given it, or when it is required (runlocal and
  # init=none start from random weights).
  pretrained = bool(arg.sports1m) or (arg.init != "none" and not arg.runlocal)
  norm = PRETRAINED_NORMALISE if pretrained else RANDOM_INIT_NORMALISE
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=16, sampling="grid",
      resize=(128, 171), crop_size=112, train_crop="random", flip=False, normalise=norm["ir"],
      eval_clips=1, eval_crops=1,
      streams=("flow",) if "flow" in STREAM_SETS[arg.streams] else ())
  config.input.data.split_index = arg.split
  config.model = common.model_block("twostream_c3d", code_size=arg.code_size)
  config.twostream = twostream_block(STREAM_SETS[arg.streams], arg.dcl, arg.alpha)
  config.twostream.flow_normalise = norm["flow"]
  for stream in STREAM_SETS[arg.streams]:
    config.twostream.tower_init[stream] = arg.sports1m
  config.evals = mlc.ConfigDict(dict(video=video_eval(arg.k, arg.gamma)))
  config.optimizer = common.optimizer_block("sgd", lr=arg.lr, momentum=0.9, weight_decay=5e-4,
                                            schedule="constant")
  config.log_every = 50
  config.eval_every = 0
  config.checkpoint_every = 1000
  return config, arg
