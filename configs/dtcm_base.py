"""The DTCM config builder shared by configs/dtcm_*.py (one dataset each): the paper's training
recipe as config args (see configs/dtcm_arid.py for their meaning)."""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common
from darkjax.models.dtcm import SETTINGS

# Table V's "K400*": Dark-48's videos come from Kinetics-700 and Moments in Time, so "the models,
# which are pretrained on MiVT and Kinetics700, may have remembered their ground truth. To make a
# fair comparison, we retrain these models on the Kinetics400 dataset with the validation dark
# videos removed" (Sec. IV-A). Nobody publishes that checkpoint: docs/papers/dtcm.md says how to
# make it. The standard Kinetics-400 checkpoint still loads, with a warning (dtcm.leaky_weights).
K400_FILTERED_RESNEXT101 = dict(
    file="resnext-101-k400star.pth, a 3D-ResNeXt-101 you pretrain on K400* (unpublished)",
    source="Table V's K400*: Kinetics-400 without Dark-48's test videos (Sec. IV-A); make its "
           "training list by dropping from Kinetics-400's train.csv every youtube_id of a Dark-48 "
           "test video (Kinetics clips are named <youtube_id>_<start>_<end>), train "
           "kenshohara/3D-ResNets-PyTorch's resnext-101 on the rest (docs/papers/dtcm.md). "
           f"The standard {common.KINETICS_RESNEXT101['file']} loads too, with a warning: it may "
           "have seen Dark-48's test videos",
    command="python -m darkjax.convert --arch resnext3d_101 --src resnext-101-k400star.pth "
            "--out ~/darkjax_weights/resnext3d_101_k400star --num-classes 0")
# Public checkpoints trained on videos a dataset's test split was drawn from: a run given one of
# them (by the file name its conversion recorded) warns at start.
LEAKY_WEIGHTS = {"dark48": (common.KINETICS_RESNEXT101["file"], common.KINETICS_RESNET101["file"])}

# The paper's recipe (Sec. IV-A "Training"): dense sampling of T = 64 (or 16) frames, frames resized
# to 320 x 240 (short side 240), random 112 crops, Kinetics-400 initialisation, batch 4, AdamW at
# lr 1e-5, 50 epochs; testing 1 clip x centre crop. weight_decay and the schedule are not given:
# torch's AdamW default weight decay (0.01) and a constant rate are the documented choices.
ARGS = dict(setting="one_stage_total", k=4, alpha=0.1, w_stc=4.0, backbone="resnext3d_101",
            enhancer="dtcm_enhancer", normalise="activitynet_mean", frames=64, crop=112, short_side=240,
            batch=4, epochs=50.0, steps=0, enhancer_steps=2000, lr=1e-5, seed=0, data_dir="",
            pretrained="", pretrain_enhancer=False, initial_curve=0.0, full_resolution=True,
            init="pretrained", split=1, eval_clips=1, eval_crops=1, runlocal=False, dataset="")


# `runlocal`: a tiny backbone on short small clips for two steps per phase (args given beside it win).
RUNLOCAL = dict(backbone="small3d_tiny", normalise="per_clip", frames=8, crop=32, short_side=36,
                batch=8, steps=2, epochs=0.0, enhancer_steps=2)


def dtcm_config(arg: str | None, dataset: str, **defaults) -> mlc.ConfigDict:
  """The DTCM config for `dataset` (shared by configs/dtcm_*.py); `defaults` override ARGS
  (`split=0` for a dataset without numbered splits)."""
  given = common.given_args(arg)
  arg = common.parse_arg(arg, variants=dict(runlocal=RUNLOCAL), **{**ARGS, **defaults})
  dataset = common.own_dataset(arg.dataset, dataset)
  if arg.runlocal and "epochs" in given and "steps" not in given:
    arg.steps = 0        # epochs given to a smoke run: they set its length, not RUNLOCAL's steps
  if arg.setting not in SETTINGS:
    raise ValueError(f"config arg setting={arg.setting!r}: valid {SETTINGS}")
  if arg.frames % arg.k:
    raise ValueError(f"config arg k={arg.k}: frames={arg.frames} must be a multiple of k")
  if arg.steps < 0 or arg.epochs < 0 or not (arg.steps or arg.epochs):
    raise ValueError(f"config args steps={arg.steps}, epochs={arg.epochs}: give epochs > 0 (steps "
                     "then follow from the prepared train split) or steps > 0")
  config = common.base_config("dtcm", arg.steps or 1, seed=arg.seed, eval_every=2000,
                              checkpoint_every=1000,
                              total_epochs=0.0 if arg.steps else float(arg.epochs))
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="dense",
      short_side=arg.short_side, crop_size=arg.crop, train_crop="random", flip=True,
      eval_clips=arg.eval_clips, eval_crops=arg.eval_crops, normalise="none", shuffle_window=256)
  config.input.data.name = dataset
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  if dataset != "synthetic":
    common.accelerator_input_workers(config)
  config.input.data.split_index = arg.split
  no_enhancement = arg.setting == "no_enhancement"
  config.model = common.model_block(
      "dtcm", backbone=arg.backbone, backbone_kwargs=mlc.ConfigDict(),
      enhancer="" if no_enhancement else arg.enhancer,
      enhancer_kwargs=mlc.ConfigDict(dict(initial_curve=arg.initial_curve, **(
          {"full_resolution": arg.full_resolution} if arg.enhancer == "dtcm_enhancer" else {}))),
      group_size=arg.k, normalise=arg.normalise)
  config.dtcm = mlc.ConfigDict(dict(
      setting=arg.setting, alpha=arg.alpha, w_stc=arg.w_stc,
      loss_variant="paper",          # paper | official (forms and default weights of L_dark)
      enhancer_steps=arg.enhancer_steps, enhancer_lr=1e-4,   # two_stage phase 1
      pretrain_enhancer=arg.pretrain_enhancer,   # one-stage: phase 1 first, then joint
      # checkpoint files that may have seen this dataset's test videos: warned about at start
      leaky_weights=LEAKY_WEIGHTS.get(dataset, ()),
  ))
  config.evals.enhancement = common.enhancement_eval(clips=3)   # WORKDIR/dtcm_enhancement.png
  config.optimizer = common.optimizer_block("adamw", lr=arg.lr, weight_decay=0.01,
                                            schedule="constant")
  if arg.pretrained:   # backbone weights (converted Kinetics checkpoint or a darkjax run), new head
    config.model_init = arg.pretrained
    config.model_load.update(dont_load=("/classifier/(fc|head)/",), prefix="classifier")
  # The backbone reads the enhanced clip normalised inside the model (checked against the weights').
  config.model_load.normalise_key = "model.kwargs.normalise"
  if arg.backbone == "resnext3d_101":   # the paper's Kinetics-400 (Dark-48: K400*) initialisation
    weights = K400_FILTERED_RESNEXT101 if dataset == "dark48" else common.KINETICS_RESNEXT101
    common.require_weights(config, arg.init, arg.runlocal, backbone=common.weights_entry(
        "model_init", "pretrained", **weights))
  if arg.runlocal:
    common.smoke_run(config)
    config.model.kwargs.enhancer_kwargs.features = 8
    config.evals.enhancement.clips = 2
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 2
  return config


# The paper's recipe (Tu et al., TIP 2023), row by row; rendered by `python -m darkjax.tools.recipe
# dtcm` into docs/papers/dtcm.md and checked against configs/dtcm_arid.py by tests/test_recipes.py.
# Sec. IV's "Training" and "Testing" paragraphs come before IV-A: cited as Sec. IV.
_TRAINING = "Sec. IV \"Training\""
_TESTING = "Sec. IV \"Testing\""
RECIPE = (
    dict(detail="action classifier", paper="resnext3d_101", source="Sec. III-E, Table I",
         quote="we select 3D-ResNeXt-101 as the action classifier",
         key="model.kwargs.backbone", status="MATCH"),
    dict(detail="classifier initialisation (ARID)", paper="Kinetics-400", source=_TRAINING,
         quote="The model is fine-tuned from the Kinetics400 pre-trained weights",
         code="configs/common.py KINETICS_RESNEXT101", ours="required (`pretrained`)",
         status="MATCH", note="a run without it stops at start; `init=none` opts out"),
    dict(detail="classifier initialisation (Dark-48)", paper="K400*",
         source=("Table V", "Sec. IV-A"),
         quote=("\"K400*\" denotes that the model is pre-trained on the filtered K400 version",
                "we retrain these models on the Kinetics400 dataset with the validation dark "
                "videos removed"),
         code="configs/dtcm_base.py K400_FILTERED_RESNEXT101",
         ours="K400* required by `dtcm_dark48.py` (`pretrained`)", status="MATCH",
         note="nobody publishes K400*: \"Dark-48's K400*\" below says how to make it; the "
              "standard Kinetics-400 checkpoint loads with a warning that it may have seen "
              "Dark-48's test videos"),
    dict(detail="enhancer layers", paper="3x3 conv 32 + ReLU; layers 2-4 ShuffleNetV2 basic "
         "units; layers 5-6 ShuffleNetV2 spatial down sampling units; 3x3 conv + Tanh",
         source="Sec. III-D, Fig. 3", code="darkjax/models/enhancers.py DTCMEnhancer",
         ours="as written, with Zero-DCE's skips", status="CHOICE",
         note="the wiring between the layers is not published: Zero-DCE's skip concatenations "
              "[28] around ShuffleNetV2 units of 32 channels"),
    dict(detail="enhancer parameters", paper="23.77k; 22.97K",
         source=("Sec. IV-B, Table IX", "Sec. III-D"),
         quote=("our method reduces the number of parameters by about 70% (23.77k vs 79.42k)",
                "our method uses only 28.92% (22.97K vs. 79.42K) trainable parameters"),
         code="darkjax/models/enhancers.py DTCMEnhancer",
         ours="23,768; 22,968 without BatchNorm's 800 scales and shifts", status="MATCH",
         note="with a bias on the depthwise convolutions (PyTorch's default, inert before "
              "BatchNorm) the count is the paper's to the unit; Table IX counts BatchNorm's "
              "scales and shifts, Sec. III-D does not; `depthwise_bias=False`: 23,560"),
    dict(detail="curve iterations", paper=8, source="Sec. III-D, Eq. (8)",
         quote="we conduct 8 iterations here",
         code="darkjax/models/enhancers.py _CurveEnhancer.num_iterations", ours="8",
         status="MATCH", note="8 curve maps (24 channels) per key frame, as Zero-DCE"),
    dict(detail="enhancer layers 5-6 at frame resolution", paper="no: stride 2",
         source="Sec. III-D",
         quote="For Layers 5-6, we apply the ShuffleNetV2 [65] Spatial Down Sampling module "
               "design",
         key="model.kwargs.enhancer_kwargs.full_resolution", status="CHOICE",
         note="the paper's own costs are its parameters x pixels, what only layers at stride 1 "
              "cost (Table IX: 19.08 G = 23.77k x 64 x 112^2; Sec. III-D: 1.51G = 22.97K x "
              "256^2); at stride 2 (`full_resolution=False`, same parameters) a 64 x 112^2 clip "
              "costs 4.50 GMACs at k = 1 against 18.23: the text and the tables disagree, we "
              "follow the tables; measured effect under \"Enhancer cost\""),
    dict(detail="enhancer initialisation", paper="not stated",
         key="model.kwargs.enhancer_kwargs.initial_curve", status="CHOICE",
         note="random weights with a zero output bias: every curve starts near r = 0, the "
              "identity, so the classifier first sees the dark frames as they are; "
              "`initial_curve=R` starts the output bias at R"),
    dict(detail="enhancer-only training (two-stage phase 1, `pretrain_enhancer`)",
         paper="not stated (Table VI's two-stage setting: \"pre-enhance the dark video frames "
               "first\")", key="dtcm.enhancer_steps", status="CHOICE",
         note="W_STC L_STC + L_Dark alone for 2000 steps (`enhancer_steps`), AdamW at a constant "
              "1e-4 (`dtcm.enhancer_lr`), weight decay as the joint phase's"),
    dict(detail="key-frame group k", paper=4, source="Sec. IV-B, Table IX",
         quote="we set k = 4 for accuracy and computation efficiency trade-off",
         key="model.kwargs.group_size", status="MATCH"),
    dict(detail="key frame", paper="middle frame of each group", source="Sec. III-D, Eq. (11)",
         quote="the keyframe (i.e. the middle frame of the k frames' sequence) is selected for "
               "the estimation of R as Eq. (11)",
         code="darkjax/layers/curves.py keyframe_curves", ours="frame k // 2 (0-based)",
         status="MATCH", note="k // 2 read 0-based: 1-based it would name I_0 at k = 1"),
    dict(detail="L_SC", paper="4x4 regions, 8 neighbours, mean over frames",
         source=("Sec. III-B, Eq. (1)-(2)", "Sec. III-B"),
         quote=("Ω(i) denotes the eight neighboring regions",
                "The size of the local region is set to 4×4"),
         code="darkjax/losses.py video_spatial_consistency_loss", ours="as written",
         status="MATCH", note="a border region has the neighbours inside the frame only (not "
                              "stated)"),
    dict(detail="L_TC", paper="L_SCF on |DY_t+1 - DY_t| vs |DI_t+1 - DI_t|",
         source="Sec. III-B, Eq. (3)",
         quote="|DY_t+1 - DY_t| is the RGB-Difference of the enhanced frame, and |DI_t+1 - DI_t| "
               "is the RGB-Difference of the dark frame",
         code="darkjax/losses.py temporal_consistency_loss", ours="as written", status="MATCH"),
    dict(detail="L_Dark weights", paper="paper", source="Sec. III-C, Eq. (5)",
         quote="we use the same settings as Zero-DCE [28] i.e. W_col = 0.5, W_tv_A = 20",
         key="dtcm.loss_variant", status="MATCH"),
    dict(detail="alpha", paper=0.1, source="Sec. IV-B, Eq. (7)",
         quote="we choose α = 0.1 for our method DTCM", key="dtcm.alpha", status="MATCH"),
    dict(detail="W_STC", paper=4.0, source="Sec. IV-B, Eq. (7)", quote="we select W_STC = 4",
         key="dtcm.w_stc", status="MATCH"),
    dict(detail="training setting", paper="one_stage_total", source="Sec. III-C, Eq. (7)",
         quote="we train our DTCM with the usage of the following integrated loss function",
         key="dtcm.setting", status="MATCH"),
    dict(detail="frames T", paper=64, source=(_TRAINING, "Sec. IV-A"),
         quote=("to sample T = 16 or T = 64 frames from each dark video",
                "We mainly report the performance of the proposed DTCM with 64-frame inputs"),
         key="input.frames", status="MATCH"),
    dict(detail="sampling", paper="dense", source=_TRAINING,
         quote="the dense sampling strategy [29] is adopted", key="input.sampling",
         status="MATCH"),
    dict(detail="frame size (ARID)", paper=240, source=_TRAINING,
         quote="For ARID [7], each video frame is resized to 320×240", key="input.short_side",
         status="MATCH"),
    dict(detail="frame size (Dark-48)", paper="not stated (ARID's and UAVHuman's only)",
         source=_TRAINING,
         quote="For UAVHuman [32], each fisheye video frame is center cropped to 128×128",
         code="configs/dtcm_base.py ARGS short_side", ours="240, as ARID", status="CHOICE",
         note="DTCM's rows of Tables III and V give both datasets the same 64 x 112^2 input, "
              "so Dark-48's 112 crops are cut from frames of ARID's size and see as much of the "
              "scene as ARID's; Dark-48's source videos (Kinetics-700, Moments in Time) come at "
              "other sizes. Not measured: no Dark-48 run here"),
    dict(detail="training crop", paper=112, source=_TRAINING,
         quote="For all datasets, a crop of 112×112 is randomly performed for the training inputs",
         key="input.crop_size", status="MATCH"),
    dict(detail="crop position", paper="random", source=_TRAINING,
         quote="a crop of 112×112 is randomly performed", key="input.train_crop",
         status="MATCH"),
    dict(detail="horizontal flip", paper="not stated", key="input.flip", status="CHOICE",
         note="the usual video-training flip; ARID's and Dark-48's classes do not depend on "
              "left and right"),
    dict(detail="backbone input normalisation", paper="not stated", key="model.kwargs.normalise",
         status="CHOICE", note="the pretrained backbone's: 3D-ResNets-PyTorch's first Kinetics "
         "release read 0-255 RGB minus the ActivityNet mean"),
    dict(detail="optimizer", paper="adamw", source=_TRAINING,
         quote="AdamW [80] is applied to optimize the parameters", key="optimizer.name",
         status="MATCH"),
    dict(detail="learning rate", paper=1e-5, source=_TRAINING,
         quote="the initial learning rate is 1e-5", key="optimizer.lr", status="MATCH"),
    dict(detail="weight decay", paper="not stated", key="optimizer.weight_decay",
         status="CHOICE", note="torch's AdamW default, what an unstated AdamW [80] runs with"),
    dict(detail="schedule", paper="not stated", key="optimizer.schedule", status="CHOICE",
         note="the paper names an initial rate and no schedule"),
    dict(detail="batch", paper=4, source=_TRAINING, quote="The batch size is set to 4",
         key="input.batch_size", status="MATCH",
         note="on 1, 2 or 4 devices; 8 devices, which one clip each would not fill, run 8 at the "
         "same learning rate and, over 50 epochs, half the steps (`config.batch_rounding`, "
         "docs/multihost.md)"),
    dict(detail="epochs", paper=50.0, source=_TRAINING,
         quote="the total training epoch is set as 50", key="total_epochs", status="MATCH",
         note="steps follow from the prepared train split at start"),
    dict(detail="test clips", paper=1, source=_TESTING,
         quote="1-clip and center-crop, where only a single clip with frames center-cropped to "
               "112×112 is used for evaluation",
         key="input.eval_clips", status="MATCH"),
    dict(detail="test crops", paper=1, source=_TESTING, quote="1-clip and center-crop",
         key="input.eval_crops", status="MATCH"),
    dict(detail="ARID splits", paper="mean of splits 1-3", source=_TESTING,
         quote="For ARID [7], the average accuracy of Top-1 and Top-5 on the three splits are "
               "reported",
         key="input.data.split_index", status="CHOICE",
         note="one run trains one split; `python -m darkjax.tools.experiment --splits all` "
              "averages the three"),
    dict(detail="darkness metric frames", paper="a random frame of each of 8 segments",
         source="Sec. III-F",
         quote="we first divide a video evenly into 8 segments and then randomly select a frame "
               "from each segment",
         code="darkjax/data/darkness.py sample_indices", ours="random, seeded (`--seed`)",
         status="MATCH", note="`--sampling middle` takes each segment's middle frame"),
    dict(detail="darkness constants", paper="S_c = 112, tau = 0.877",
         source=("Sec. III-F", "Sec. IV \"Dark-48\""),
         quote=("we set S_c = 112 for 8-bit images",
                "set τ to be the average darkness of all ARID videos (τ = 0.877)"),
         code="darkjax/data/darkness.py", ours="S_c = 112, tau = 0.877", status="MATCH"),
)
