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


def twostream_config(arg, runlocal_args: dict | None = None,
                     **defaults) -> tuple[mlc.ConfigDict, mlc.ConfigDict]:
  """(config, parsed args): the paper's recipe (Sec. 3.1) for a prepared dataset; the caller sets
  the data block and what differs. `runlocal_args`: the args `runlocal` brings (args given beside
  it win)."""
  arg = common.parse_arg(arg, variants=dict(runlocal=runlocal_args or {}), **{**ARGS, **defaults})
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
  # Caffe's ceil-mode pools, those the Sports-1M C3D learned on ("port": the PyTorch port's)
  config.model = common.model_block("twostream_c3d", code_size=arg.code_size, pooling="caffe")
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


# The paper's recipe (Jiang, Rozgic, Adali, CVPRW 2017), row by row; rendered by `python -m
# darkjax.tools.recipe twostream` into docs/papers/twostream.md and checked against
# configs/twostream_infar.py by tests/test_recipes.py (which also finds every MATCH row's quote in
# the paper's text).
RECIPE = (
    dict(detail="towers", paper=("ir", "flow"), source="Sec. 1",
         quote="two separate recognition networks (IR and optical-flow nets)",
         key="twostream.streams", status="MATCH",
         note="separate weights; trained side by side in one model (their losses share no "
         "parameter, so the gradients are those of separate training)"),
    dict(detail="tower architecture", paper="C3D, fc6-fc7 4096, softmax + DC layer on fc7",
         source="Sec. 3.1", quote="FC(4096)–FC(4096)–SM(12)(DC(4096))",
         code="darkjax/models/twostream.py twostream_c3d", ours="C3D (8 convs, 5 pools) per tower",
         status="MATCH", note="biases kept, as C3D has them (the paper drops them from its "
         "equations \"for simplicity\")"),
    dict(detail="C3D pooling", paper="P(2, 2, 2, 2) before fc6, as C3D [23] (Caffe)",
         source="Sec. 3.1", quote="P (2, 2, 2, 2)–FC(4096)",
         code="darkjax/models/c3d.py pooling",
         ours="Caffe's ceil-mode max pools (pool5: 7 x 7 -> 4 x 4, windows at 0, 2, 4, 6)",
         status="MATCH", note="the windows the Sports-1M weights learned on; the PyTorch port's "
         "padded pool5 shifts each by one pixel (`model.kwargs.pooling=port`)"),
    dict(detail="DC layer size N", paper=4096, source="Sec. 3.1", quote="DC(4096)",
         key="model.kwargs.code_size", status="MATCH"),
    dict(detail="loss", paper="L = Lc + alpha Ld, Ld = ||q - A x||^2", source="Eqs. (4), (7)",
         quote="L = Lc + αLd", code="darkjax/trainers/twostream.py Task.loss_fn",
         ours="CE + alpha x batch mean of ||q - A x||^2 per tower", status="MATCH",
         note="tests/test_twostream.py transcribes Eqs. (1)-(4), (7)-(11)"),
    dict(detail="alpha", paper=0.02, source="Sec. 3.1",
         quote="The parameter α in Eq 4 is set to be 0.02", key="twostream.alpha",
         status="MATCH"),
    dict(detail="target codes", paper="p-hot", source="Sec. 2.1",
         quote="a binary vector with coordinates [p(k − 1) + 1 : pk] equal to one",
         code="darkjax/losses.py p_hot_codes", ours="p-hot, class k owns [p k, p (k + 1))",
         status="MATCH"),
    dict(detail="spare code neurons", paper="to classes with high intra-class variation",
         source="Sec. 2.1, footnote 2", key="twostream.spare_classes", status="CHOICE",
         note="empty: the first N mod m classes (4096 = 341 x 12 + 4); the paper names none"),
    dict(detail="initialisation", paper="Sports-1M C3D, both towers", source="Abstract",
         quote="We pretrain the 3D CNN model on the visible spectrum Sports-1M action dataset",
         code="configs/common.py SPORTS1M_C3D", ours="required (`sports1m`)", status="MATCH",
         note="a run without it stops at start; `init=none` opts out"),
    dict(detail="IR input normalisation", paper="not stated", key="input.normalise",
         status="CHOICE",
         note="the Sports-1M C3D's: BGR 0-255 minus the Sports-1M mean cube's channel means (Caffe "
         "subtracts the whole cube, not shipped here); one-channel IR repeated to three; recorded "
         "by darkjax.convert and checked when the towers load"),
    dict(detail="flow input normalisation", paper="not stated", key="twostream.flow_normalise",
         status="CHOICE",
         note="the flow image through the same C3D normalisation, its x, y, magnitude channels in "
         "that order"),
    dict(detail="frame size", paper=(128, 171), source="Sec. 2",
         quote="we used a frame size of 128×171", key="input.resize", status="MATCH"),
    dict(detail="crop", paper="no crop: 3 × t × 128 × 171 clips", source="Sec. 2",
         key="input.crop_size", status="CHOICE",
         note="departs from Sec. 2's clip size, as C3D [23] does: a random 112 x 112 crop for "
         "training, the centre crop for tests; the Sports-1M fc6 the towers start from needs "
         "16 x 112 x 112 clips (8192 pool5 features)"),
    dict(detail="clip length", paper=16, source="Sec. 3.1",
         quote="The temporal length t of each IR and flow clip is 16 frames", key="input.frames",
         status="MATCH"),
    dict(detail="training clips", paper="grid", source="Sec. 2",
         quote="IR video clips obtained by splitting IR frame sequences into non-overlapping "
         "segments of consecutive frames", key="input.sampling", status="MATCH",
         note="one of a video's non-overlapping clips, drawn per video and epoch (a set of clips "
         "would weight each video by its clip count; InfAR's videos are of similar length)"),
    dict(detail="horizontal flip", paper="not stated", key="input.flip", status="CHOICE",
         note="off: no augmentation beyond C3D's random crop (row above)"),
    dict(detail="optical flow", paper="as its ref. [2]", source="Sec. 2, footnote 1",
         key="twostream.flow_method", status="CHOICE",
         note="TV-L1 (OpenCV's Dual TV-L1), the variational flow of the two-stream networks; the "
         "text does not name ref. [2]"),
    dict(detail="flow x, y encoding", paper="centred at 128, scaled into 0-255",
         source="Sec. 2, footnote 1",
         quote="The flow values of x, y components are centered around 128 and scaled such that "
         "flow values fall between 0 and 255",
         code="darkjax/data/flow.py encode_flow", ours="128 + 8 x pixels, clipped to 0-255",
         status="CHOICE",
         note="the scale is not given: a fixed 8 units per pixel (+-16 pixels per frame at "
         "128 x 171, `prepare --flow-scale`) keeps one motion one value in every frame"),
    dict(detail="flow magnitude channel", paper="the third channel, encoding not stated",
         source="Sec. 2, footnote 1", key="twostream.flow_magnitude_shift", status="CHOICE",
         note="8 x |flow| from 0 (the stored 128 + 8 |flow| minus 128): the unit of x and y, zero "
         "motion 0"),
    dict(detail="optimizer", paper="sgd", source="Sec. 2.2",
         quote="mini-batch stochastic gradient descent method", key="optimizer.name",
         status="MATCH"),
    dict(detail="learning rate", paper=1e-4, source="Sec. 3.1",
         quote="are set as 0.0001, 30, 0.0005 and 10, 000, respectively", key="optimizer.lr",
         status="MATCH"),
    dict(detail="batch", paper=30, source="Sec. 3.1",
         quote="are set as 0.0001, 30, 0.0005 and 10, 000, respectively",
         key="input.batch_size", status="MATCH",
         note="on 4 or 8 devices, which 30 does not divide, the run trains with 32 at the same "
         "learning rate (`config.batch_rounding`, docs/multihost.md); 1, 2, 3, 5, 6, 10, 15 or "
         "30 devices run 30"),
    dict(detail="weight decay", paper=5e-4, source="Sec. 3.1",
         quote="are set as 0.0001, 30, 0.0005 and 10, 000, respectively",
         key="optimizer.weight_decay", status="MATCH"),
    dict(detail="iterations", paper=10000, source="Sec. 3.1",
         quote="are set as 0.0001, 30, 0.0005 and 10, 000, respectively", key="total_steps",
         status="MATCH"),
    dict(detail="momentum", paper="not stated", key="optimizer.momentum", status="CHOICE",
         note="Caffe's C3D fine-tuning solver"),
    dict(detail="schedule", paper="not stated", key="optimizer.schedule", status="CHOICE",
         note="a constant rate over the paper's 10,000 iterations"),
    dict(detail="dropout", paper="not stated", code="darkjax/models/c3d.py", ours="0.5 after fc6, fc7",
         status="CHOICE", note="C3D's own"),
    dict(detail="video scores", paper="mean over non-overlapping 16-frame clips",
         source="Sec. 3.1",
         quote="we split a video into 16 frame long clips without overlapping between two "
         "consecutive clips",
         code="darkjax/evaluators/twostream_video.py", ours="mean softmax / code over the clips",
         status="MATCH", note="a video shorter than 16 frames loops; frames after its last whole "
         "clip are left out"),
    dict(detail="kNN k", paper=5, source="Sec. 3.2.3", quote="k is set to 5 in our experiment",
         key="evals.video.k", status="MATCH"),
    dict(detail="kNN distance", paper="not named (\"the average distances from the sample to "
         "its k neighbor training samples from each class\")",
         code="darkjax/evaluators/twostream_video.py", ours="Euclidean, in code space",
         status="CHOICE", note="the distance d of exp(-gamma d^2) read as the Euclidean one"),
    dict(detail="kNN gamma", paper=0.05, source="Sec. 3.2.3",
         quote="The parameter γ is set to be 0.05", key="evals.video.gamma", status="MATCH"),
    dict(detail="late fusion 1 weights", paper="flow 2, IR 1", source="Sec. 3.2.3",
         quote="the weight is 2 for flow net and 1 for IR net",
         code="configs/twostream_base.py video_eval softmax_weights", ours="flow 2, IR 1",
         status="MATCH"),
    dict(detail="late fusion 2 weights", paper="a weighted average, weights not given",
         source="Sec. 3.2.3", code="configs/twostream_base.py video_eval knn_weights",
         ours="flow 2, IR 1", status="CHOICE", note="late fusion 1's weights"),
    dict(detail="two-layer NN fusion width", paper=50, source="Sec. 3.2.3",
         quote="We used 50 filters for the convolutional layer", key="evals.video.hidden",
         status="MATCH", note="a 1 x 1 convolution on a 1 x 1 input is a dense layer"),
    dict(detail="fusion networks' training", paper="not stated",
         code="darkjax/evaluators/twostream_video.py fit_fusion_net",
         ours="full-batch Adam, lr 0.01, 500 steps; ReLU after the 50 units", status="CHOICE",
         note="the training split's video codes are few (360): full-batch training until the "
         "training loss is flat; ReLU, the usual hidden activation"),
    dict(detail="splits", paper="5 random 30 / 20 per class", source="Sec. 3.1",
         key="input.data.split_index", status="CHOICE",
         note="one split per run (`split=1..5`, seeded by `prepare`); `python -m "
         "darkjax.tools.experiment --splits all` averages the five"),
    dict(detail="metric", paper="AP, \"the average of recognition precisions of all actions\"",
         source="Sec. 3.1", code="darkjax/evaluators/twostream_video.py",
         ours="top-1 accuracy (mean class precision beside it)", status="CHOICE",
         note="11 of the 13 AP values are k / 240 of the 240 test videos, which top-1 accuracy "
         "is and a mean of per-class precisions is not (docs/papers/twostream.md)"),
)
