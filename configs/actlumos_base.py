"""The ActLumos config builder shared by configs/actlumos_*.py (one dataset each).

Every choice the authors' README leaves open is a key here, with its default:
  Retinex      MSR sigmas (15, 80, 250), log domain per channel, percentiles (1, 99) -> 0 / 255
               (`actlumos.retinex`; darkjax/layers/retinex.py has the border rule)
  teacher      one R(2+1)D-34 for both streams, from the IG65M weights (`backbone_init`, required
               unless `init=none` or `runlocal`); DFF with r = 4; transformer hidden
               512, 8 heads, 1 layer, dropout 0.8 before the classifier (DarkLight's setting),
               tokens from (1, 7, 7) average pooling (model.kwargs; darkjax/models/actlumos.py)
  SupCon       lambda_sup = 0.1 (`supcon_weight`), 2-layer MLP projection to 128-d, tau 0.07
  SSL          the student's R(2+1)D-34 alone (`ssl.features=backbone`, the README's Stage 1;
               `ssl_features=cls`: the whole student's CLS embedding), 2-layer MLP projection,
               NT-Xent tau 0.5 (`ssl.temperature`), two views drawn with colour jitter 0.4 and
               random affine 0.15 (`ssl.augment`), train splits of `ssl_datasets`, batch 16
  KD           Hinton KL at T = 4 times T^2 (`kd_temperature`), lambda_kd = 1 (`kd_weight`)
  clips        64 frames (DarkLight's R(2+1)D-34 length), dense sampling, short side 128, 112 x
               112 random crops, flips; IG65M normalisation of both streams
  optimisation AdamW lr 1e-4, weight decay 1e-4, cosine with 5% warmup; 3000 teacher, 2000 SSL,
               3000 student steps of 16 clips; train-time colour jitter 0.2 and affine 0.1
               (`actlumos.augment`), no CutMix (SupCon needs one label per clip)
"""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common

FUSIONS = ("dff", "sum", "concat")
ARGS = dict(fusion="dff", supcon=True, ssl=True, kd=True, ssl_datasets="",
            frames=64, crop=112, short_side=128, batch=16, steps=3000, teacher_steps=3000,
            ssl_steps=2000, lr=1e-4, backbone_init="", teacher_init="", data_dir="",
            init="pretrained", ssl_features="backbone", runlocal=False, seed=0)
SSL_FEATURES = ("backbone", "cls")


def fusion_maps_eval(clips: int = 4, data: str = "") -> mlc.ConfigDict:
  """`config.evals` entry: dark / Retinex frames and DFF's Retinex weights of the first `clips`
  test clips (darkjax.evaluators.clip_figures.FusionMapsEvaluator)."""
  return mlc.ConfigDict(dict(type="fusion_maps", clips=clips, data=data))


def augment_block(**settings) -> mlc.ConfigDict:
  """On-device augmentations (darkjax.data.augment), every setting named, 0 = off."""
  block = mlc.ConfigDict(dict(colour_jitter=0.0, affine=0.0, rotation=0.0, shear=0.0,
                              optical_distortion=0.0, elastic=0.0, rain=0.0, cutmix=0.0,
                              frame_shuffle=0.0))
  block.update(settings)
  return block


def actlumos_config(arg: str | None, dataset: str, split_index: int = 0,
                    ssl_default: str = "arid_v1+dark48", **defaults) -> mlc.ConfigDict:
  """The ActLumos config for a prepared `dataset` (shared by configs/actlumos_*.py).

  `ssl_datasets` left empty means `ssl_default` ('+'-joined), or only `dataset` itself under
  `runlocal` (a smoke run needs nothing else prepared); a value given in `arg` always wins.
  """
  arg = common.parse_arg(arg, **{**ARGS, **defaults})
  if arg.fusion not in FUSIONS:
    raise ValueError(f"config arg fusion={arg.fusion!r}: valid {FUSIONS}")
  if arg.ssl_features not in SSL_FEATURES:
    raise ValueError(f"config arg ssl_features={arg.ssl_features!r}: valid {SSL_FEATURES}")
  tiny = arg.runlocal
  if arg.runlocal:
    arg.update(frames=8, crop=32, short_side=36, batch=4, steps=2, teacher_steps=2, ssl_steps=2)
  config = common.base_config("actlumos", arg.steps, seed=arg.seed)
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="dense",
      short_side=arg.short_side, crop_size=arg.crop, flip=True, normalise="ig65m")
  data_dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  config.input.data = common.data_block(dataset, data_dir, split_index)
  config.model = common.model_block("actlumos_tiny_test" if tiny else "actlumos",
                                    hidden=32 if tiny else 512, heads=4 if tiny else 8, layers=1,
                                    dropout_rate=0.1, head_dropout=0.0 if tiny else 0.8)
  config.actlumos = mlc.ConfigDict(dict(
      fusion=arg.fusion, reduction=4,
      supcon=arg.supcon, supcon_weight=0.1, supcon_temperature=0.07,
      projection_dim=16 if tiny else 128,
      kd=arg.kd, kd_weight=1.0, kd_temperature=4.0,
      ssl=arg.ssl,
      retinex=mlc.ConfigDict(dict(sigmas=(15.0, 80.0, 250.0), low_percentile=1.0,
                                  high_percentile=99.0)),
      augment=augment_block(colour_jitter=0.2, affine=0.1),
      backbone_init=arg.backbone_init,   # IG65M R(2+1)D-34 state dict (ig65m-pytorch)
      teacher_init=arg.teacher_init,     # a finished teacher run's workdir: skip the teacher phase
  ))
  common.require_weights(
      config, arg.init, tiny,
      backbone=common.weights_entry("actlumos.backbone_init", "backbone_init",
                                    **common.IG65M_R2PLUS1D_34))
  ssl_datasets = arg.ssl_datasets or (dataset if arg.runlocal else ssl_default)
  names = tuple(n for n in ssl_datasets.split("+") if n)
  config.ssl = mlc.ConfigDict(dict(
      datasets=names,
      dirs=tuple(data_dir if n == dataset else os.path.join(common.default_data_root(), n)
                 for n in names),
      split_index=1,               # train1 where a dataset has official splits, else train
      features=arg.ssl_features,   # backbone: the pooled R(2+1)D map; cls: the transformer's CLS
      batch_size=arg.batch, temperature=0.5,
      augment=augment_block(colour_jitter=0.4, affine=0.15),
      total_steps=arg.ssl_steps,
      optimizer=common.optimizer_block("adamw", lr=arg.lr, weight_decay=1e-4,
                                       warmup_steps=arg.ssl_steps // 20),
      eval_every=-1, checkpoint_every=500))
  config.optimizer = common.optimizer_block("adamw", lr=arg.lr, weight_decay=1e-4,
                                            warmup_steps=arg.steps // 20)
  config.teacher = mlc.ConfigDict(dict(
      total_steps=arg.teacher_steps,
      optimizer=common.optimizer_block("adamw", lr=arg.lr, weight_decay=1e-4,
                                       warmup_steps=arg.teacher_steps // 20),
      eval_every=1000, checkpoint_every=500))
  config.evals.fusion = fusion_maps_eval(clips=4)   # teacher: WORKDIR/teacher/fusion_<i>.png
  config.eval_every = 1000
  config.checkpoint_every = 500
  if arg.runlocal:
    common.smoke_run(config)
    config.input.prefetch = 0
    config.evals.fusion.clips = 2
    config.log_every = 1
    config.eval_every = config.teacher.eval_every = 0
    config.checkpoint_every = config.teacher.checkpoint_every = config.ssl.checkpoint_every = 1
  return config
