"""The LIFT-Net config builder shared by configs/lift_*.py (one dataset each): the paper's
recipe as config args (see configs/lift_arid.py for their meaning)."""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common

LUMINOUS_BACKBONES = {"r2plus1d": "r2plus1d_34_ig65m", "r3d": "r3d_18"}
VARIANTS = ("small", "medium", "large", "tiny_test")
ARGS = dict(variant="large", luminous="r2plus1d", luminous_input="gamma", kd=True,
            vit_trainable="first", gamma=1.8, frames=30, crop=224, short_side=256, batch=32,
            steps=3000, teacher_steps=3000, lr=1e-4, vit_init="", luminous_init="", data_dir="",
            init="pretrained", runlocal=False, seed=0, split=1, eval_clips=1, eval_crops=1)


def lift_config(arg: str | None, dataset: str, **defaults) -> mlc.ConfigDict:
  """The LIFT-Net config for a prepared `dataset` (shared by configs/lift_*.py); `defaults`
  override ARGS (`split=0` for a dataset without numbered splits)."""
  arg = common.parse_arg(arg, **{**ARGS, **defaults})
  if arg.variant not in VARIANTS:
    raise ValueError(f"config arg variant={arg.variant!r}: valid {VARIANTS}")
  if arg.luminous not in LUMINOUS_BACKBONES:
    raise ValueError(f"config arg luminous={arg.luminous!r}: valid {sorted(LUMINOUS_BACKBONES)}")
  if arg.init == "none" and arg.vit_trainable != "all" and not arg.runlocal \
      and arg.variant != "tiny_test":
    raise ValueError(f"config args init=none with vit_trainable={arg.vit_trainable}: the PViT "
                     "would stay a random, frozen network; add vit_trainable=all (or bring "
                     "vit_init)")
  if arg.runlocal:
    arg.update(variant="tiny_test", frames=8, crop=32, short_side=36, batch=8, steps=2,
               teacher_steps=2)
  config = common.base_config("liftnet", arg.steps, seed=arg.seed)
  flow = arg.luminous_input == "flow"
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="segment",
      short_side=arg.short_side, crop_size=arg.crop, flip=True, normalise="vit", gamma=0.0,
      shuffle_window=256, streams=("flow",) if flow else (), eval_clips=arg.eval_clips,
      eval_crops=arg.eval_crops)
  config.input.data.name = dataset
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  config.input.data.split_index = arg.split
  config.model = common.model_block(f"liftnet_{arg.variant}")
  if arg.variant != "tiny_test":
    config.model.kwargs.luminous = LUMINOUS_BACKBONES[arg.luminous]
  # KD's frozen luminous backbone runs the batch in 2 parts, one after the other (the same
  # outputs, half its transient feature maps; keep it a divisor of the per-device batch so each
  # part stays data-parallel). A memory choice, not the paper's.
  config.model.kwargs.frozen_luminous_splits = 2
  # The N fusion layers as one nn.scan (parameters stacked under `layers/`); False restores
  # checkpoints of the unrolled layout (`lift_<i>`, `critic_<i>`, `fusion_<i>`).
  config.model.kwargs.scan_layers = True
  # Readings of the paper, each a model attribute (docs/papers/liftnet.md, RECIPE below): Eq. (1)'s
  # divisor (head_dim | heads: sqrt(N_AH) as printed); the FoE LayerNorm (spectrum: Sec. III-E's
  # order | tokens: after the inverse FFT, the layout of checkpoints written before); the ViT's
  # final LayerNorm after the PViT's blocks.
  config.model.kwargs.attention_scale = "head_dim"
  config.model.kwargs.fourier_norm = "spectrum"
  config.model.kwargs.pvit_norm = True
  config.lift = mlc.ConfigDict(dict(
      kd=arg.kd, kd_weight=1.0, kd_reduction="sum", kd_features="hidden",
      # KD: the student's luminous backbone is the teacher's, frozen (False: it trains on with the
      # student's CE; Eq. (6)'s h1 is then the moving backbone's vector, still without gradient)
      freeze_teacher=True,
      luminous_input=arg.luminous_input, gamma=arg.gamma,
      vit_trainable=arg.vit_trainable,
      luminous_normalise="ig65m",   # the luminous clip's normalisation (flow: always (x-128)/128)
      # Sec. V-B lists random flip, colour jitter, random affine, optical distortion, elastic
      # distortion, random rain, CutMix and frame shuffle without magnitudes: these are choices.
      augment=common.augment_block(colour_jitter=0.2, affine=0.1, rotation=10.0, shear=5.0,
                                   optical_distortion=0.05, elastic=0.02, rain=0.1, cutmix=0.5,
                                   frame_shuffle=0.1),
      pretrained=mlc.ConfigDict(dict(vit=arg.vit_init, luminous=arg.luminous_init)),
  ))
  luminous_weights = (common.IG65M_R2PLUS1D_34 if arg.luminous == "r2plus1d"
                      else common.KINETICS_R3D_18)
  common.require_weights(
      config, arg.init, arg.runlocal or arg.variant == "tiny_test",
      vit=common.weights_entry("lift.pretrained.vit", "vit_init", **common.IMAGENET21K_VIT_B16),
      luminous=common.weights_entry("lift.pretrained.luminous", "luminous_init",
                                    **luminous_weights))
  config.evals.attention = common.attention_eval(clips=4)   # WORKDIR/attention_<i>.png
  config.optimizer = common.optimizer_block("adamw", lr=arg.lr, weight_decay=0.05,
                                            schedule="cosine", warmup_steps=arg.steps // 20)
  config.teacher = mlc.ConfigDict(dict(
      total_steps=arg.teacher_steps,
      optimizer=common.optimizer_block("adamw", lr=arg.lr, weight_decay=0.05, schedule="cosine",
                                       warmup_steps=arg.teacher_steps // 20),
      eval_every=1000, checkpoint_every=500))
  config.log_every = 20
  config.eval_every = 1000
  config.checkpoint_every = 500
  if arg.runlocal:
    common.smoke_run(config)
    config.input.prefetch = 0
    config.evals.attention.clips = 2
    config.log_every = 1
    config.eval_every = 0
    config.teacher.eval_every = 0
    config.checkpoint_every = config.teacher.checkpoint_every = 1
  return config


# The paper's recipe (Susladkar et al., LIFT-Net), row by row; rendered by `python -m
# darkjax.tools.recipe liftnet` into docs/papers/liftnet.md and checked against configs/lift_arid.py
# by tests/test_recipes.py.
RECIPE = (
    dict(detail="model size N (LIFT + Critic + Fusion layers)", paper="liftnet_large",
         source="Table II: N = 8; Table VI: N = 4 / 6 / 8", key="model.name", status="MATCH",
         note="`variant=small|medium` are Table VI's N = 4 / 6"),
    dict(detail="Main-Stream encoder", paper="PViT: 5 ViT-B/16 blocks, ImageNet-21k",
         source="Sec. III-B", code="darkjax/models/liftnet.py LIFTNet.vit_blocks",
         ours="5 ViT-B/16 blocks from `vit_init` (required)", status="MATCH"),
    dict(detail="PViT blocks trained", paper="first", source="Sec. III-B: only the first block",
         key="lift.vit_trainable", status="MATCH"),
    dict(detail="Luminous backbone", paper="r2plus1d_34_ig65m", source="Sec. III-A: IG65M",
         key="model.kwargs.luminous", status="MATCH", note="`luminous_init` required"),
    dict(detail="Luminous input (ARID)", paper="gamma", source="Sec. V-C.1: GIC frames",
         key="lift.luminous_input", status="MATCH",
         note="HMDB51, UCF101, InfAR: optical flow (their configs)"),
    dict(detail="GIC gamma", paper="not stated", key="lift.gamma", status="CHOICE",
         note="brightens ARID's frames as Fig. 3 shows"),
    dict(detail="attention scale", paper="sqrt(N_AH)", source="Eq. (1)",
         code="darkjax/layers/attention.py", ours="sqrt(head_dim)", status="CHOICE",
         note="the standard multi-head scale; N_AH (the head count) reads as a typo"),
    dict(detail="Fourier Enhancement", paper="FFT, MLP, residual, LayerNorm", source="Eq. (2)-(4)",
         code="darkjax/layers/fourier.py", ours="LayerNorm after the inverse FFT", status="CHOICE",
         note="the paper does not place the LayerNorm"),
    dict(detail="fused tokens", paper="not stated", code="darkjax/models/liftnet.py",
         ours="continue the luminous chain into the next layer", status="CHOICE"),
    dict(detail="teacher loss", paper="cross-entropy", source="Eq. (5)",
         code="darkjax/trainers/liftnet.py TeacherTask.loss_fn", ours="cross-entropy",
         status="MATCH"),
    dict(detail="student KD term", paper="sum", source="Eq. (6): sum_i |h1_i - h2_i|",
         key="lift.kd_reduction", status="MATCH"),
    dict(detail="KD vectors h1, h2", paper="the vectors softmax is applied to (ambiguous)",
         source="Sec. IV", key="lift.kd_features", status="CHOICE",
         note="pooled hidden vectors; `logits` is the other reading"),
    dict(detail="frames", paper=30, source="Sec. V-B", key="input.frames", status="MATCH"),
    dict(detail="frame size", paper=224, source="Sec. V-B: 3 x 224 x 224", key="input.crop_size",
         status="MATCH"),
    dict(detail="resize before the crop", paper="not stated", key="input.short_side",
         status="CHOICE", note="short side 256, then a 224 crop"),
    dict(detail="sampling", paper="not stated", key="input.sampling", status="CHOICE",
         note="TSN-style segments over the whole video"),
    dict(detail="optimizer", paper="adamw", source="Sec. V-B", key="optimizer.name",
         status="MATCH"),
    dict(detail="learning rate", paper=1e-4, source="Sec. V-B", key="optimizer.lr",
         status="MATCH"),
    dict(detail="schedule", paper="cosine", source="Sec. V-B", key="optimizer.schedule",
         status="MATCH"),
    dict(detail="weight decay", paper="not stated", key="optimizer.weight_decay",
         status="CHOICE", note="the usual ViT fine-tuning value"),
    dict(detail="batch", paper=32, source="Sec. V-B", key="input.batch_size", status="MATCH"),
    dict(detail="training length", paper="not stated", key="total_steps", status="CHOICE",
         note="per phase (`teacher_steps` for the teacher)"),
    dict(detail="augmentations", paper="flip, colour jitter, affine, optical and elastic "
         "distortion, rain, CutMix, frame shuffle", source="Sec. V-B", key="lift.augment",
         status="CHOICE", note="all implemented; the paper gives no magnitudes"),
    dict(detail="ARID split", paper="not stated", key="input.data.split_index", status="CHOICE",
         note="split 1; `python -m darkjax.tools.experiment --splits all` runs the three"),
)
