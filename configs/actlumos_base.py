"""The ActLumos config builder shared by configs/actlumos_*.py (one dataset each).

Every choice the authors' README leaves open is a key here, with its default:
  Retinex      MSR sigmas (15, 80, 250), log domain per channel, percentiles (1, 99) -> 0 / 255
               (`actlumos.retinex`; darkjax/layers/retinex.py has the border rule)
  teacher      one R(2+1)D-34 for both streams, from the IG65M weights (`backbone_init`, required
               unless `init=none` or `runlocal`); DFF with r = 4; transformer hidden
               512, 8 heads, 1 layer, dropout 0.8 before the classifier (DarkLight's sizes),
               tokens from (1, 7, 7) average pooling (model.kwargs; darkjax/models/actlumos.py)
  SupCon       lambda_sup = 0.1 (`supcon_weight`), 2-layer MLP projection to 128-d, tau 0.07
  student      starts from the IG65M weights as the teacher does, then SSL (`student_pretrained`;
               False: the SSL phase and the student from random initialisation)
  SSL          the student's R(2+1)D-34 alone (`ssl.features=backbone`, the README's Stage 1;
               `ssl_features=cls`: the whole student's CLS embedding), 2-layer MLP projection,
               NT-Xent tau 0.5 (`ssl.temperature`), two views drawn with colour jitter 0.4 and
               random affine 0.15 (`ssl.augment`), train splits of `ssl_datasets`, batch 16
  KD           Hinton KL at T = 4 times T^2 (`kd_temperature`), lambda_kd = 1 (`kd_weight`), on
               the labelled clips (`kd_unlabelled`: also on as many of the SSL sets' unlabelled
               clips per step)
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
            init="pretrained", ssl_features="backbone", student_pretrained=True,
            kd_unlabelled=False, runlocal=False, seed=0, eval_clips=1, eval_crops=1, dataset="")
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


# `runlocal`: short small clips for two steps per phase (args given beside it win).
RUNLOCAL = dict(frames=8, crop=32, short_side=36, batch=4, steps=2, teacher_steps=2, ssl_steps=2)


def actlumos_config(arg: str | None, dataset: str, split_index: int = 0,
                    ssl_default: str = "arid_v1+dark48", **defaults) -> mlc.ConfigDict:
  """The ActLumos config for a prepared `dataset` (shared by configs/actlumos_*.py).

  `split` (default `split_index`) picks the labelled dataset's split and the SSL sets' train<split>.
  `ssl_datasets` left empty means `ssl_default` ('+'-joined), or only `dataset` itself under
  `runlocal` (a smoke run needs nothing else prepared) and for a dataset of the user's own (the
  `dataset=NAME` arg); a value given in `arg` always wins.
  """
  arg = common.parse_arg(arg, variants=dict(runlocal=RUNLOCAL),
                         **{**ARGS, "split": split_index, **defaults})
  own = bool(arg.dataset)
  dataset = common.own_dataset(arg.dataset, dataset)
  if arg.fusion not in FUSIONS:
    raise ValueError(f"config arg fusion={arg.fusion!r}: valid {FUSIONS}")
  if arg.kd_unlabelled and not arg.kd:
    raise ValueError("config arg kd_unlabelled=True distils on unlabelled clips: it needs kd=True")
  if arg.ssl_features not in SSL_FEATURES:
    raise ValueError(f"config arg ssl_features={arg.ssl_features!r}: valid {SSL_FEATURES}")
  tiny = arg.runlocal
  config = common.base_config("actlumos", arg.steps, seed=arg.seed)
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="dense",
      short_side=arg.short_side, crop_size=arg.crop, flip=True, normalise="ig65m",
      eval_clips=arg.eval_clips, eval_crops=arg.eval_crops)
  data_dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  config.input.data = common.data_block(dataset, data_dir, arg.split)
  if dataset != "synthetic":
    common.accelerator_input_workers(config)
  config.model = common.model_block("actlumos_tiny_test" if tiny else "actlumos",
                                    hidden=32 if tiny else 512, heads=4 if tiny else 8, layers=1,
                                    dropout_rate=0.1, head_dropout=0.0 if tiny else 0.8,
                                    transformer_norm="post")
  config.actlumos = mlc.ConfigDict(dict(
      fusion=arg.fusion, reduction=4,
      stream_statistics="separate",   # teacher BatchNorm statistics per stream (or joint)
      supcon=arg.supcon, supcon_weight=0.1, supcon_temperature=0.07,
      projection_dim=16 if tiny else 128,
      kd=arg.kd, kd_weight=1.0, kd_temperature=4.0,
      # KD also on a batch of the SSL sets' unlabelled clips beside each labelled batch
      kd_unlabelled=arg.kd_unlabelled,
      ssl=arg.ssl,
      retinex=mlc.ConfigDict(dict(sigmas=(15.0, 80.0, 250.0), low_percentile=1.0,
                                  high_percentile=99.0)),
      augment=augment_block(colour_jitter=0.2, affine=0.1),
      backbone_init=arg.backbone_init,   # IG65M R(2+1)D-34 state dict (ig65m-pytorch)
      teacher_init=arg.teacher_init,     # a finished teacher run's workdir: skip the teacher phase
      # the SSL phase and the student start from backbone_init too (False: from random
      # initialisation, the self-supervision their only pretraining; the teacher keeps it)
      student_pretrained=arg.student_pretrained,
  ))
  common.require_weights(
      config, arg.init, tiny,
      backbone=common.weights_entry("actlumos.backbone_init", "backbone_init",
                                    **common.IG65M_R2PLUS1D_34))
  ssl_datasets = arg.ssl_datasets or (dataset if arg.runlocal or own else ssl_default)
  names = tuple(n for n in ssl_datasets.split("+") if n)
  config.ssl = mlc.ConfigDict(dict(
      datasets=names,
      dirs=tuple(data_dir if n == dataset else os.path.join(common.default_data_root(), n)
                 for n in names),
      # train<split> where a dataset has numbered splits (else train): SSL never reads the
      # test clips of the labelled split
      split_index=max(arg.split, 1),
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


# The recipe as the authors' README gives it (../shared/papers/004: its text; its images, from the
# same commit of HrishavBakulBarua/ActLumos, named by file), row by row; rendered by `python -m
# darkjax.tools.recipe actlumos` into docs/papers/actlumos.md and checked against
# configs/actlumos_arid.py by tests/test_recipes.py.
_CAPTION = "README caption"   # the text under the README's contrastive-learning heading
RECIPE = (
    dict(detail="teacher inputs", paper="dark + Retinex clips",
         source=("abstract", "README 'Dataset samples'"),
         quote=("The teacher network processes dual inputs—original dark frames and "
                "Retinex-enhanced frames—through weight-shared R(2+1)D-34 backbones",
                "We use gamma correction and retinex-enhanced images alongside raw dark frames as "
                "input to our pipeline"),
         image="abstract_img.png", drawn="Teacher : Dark + Retinex frames",
         code="darkjax/models/actlumos.py ActLumosTeacher", ours="dark + Retinex clips",
         status="CHOICE",
         note="the abstract's two streams, which both architecture images draw (arch.png: "
         "Retinex and dark clips only; abstract_img.png's training panel) and DFF.png fuses "
         "(W_dark, W_ret); the gamma sentence captions sample frames (channels.png) and gives "
         "gamma no place in the network; it is the authors' earlier MD-BERT README sentence (\"We "
         "use gamma correction and histogram equalization alongside raw dark frames as input to "
         "our pipeline\") until commit 83f4eef of the authors' repository replaced \"histogram "
         "equalization\" by \"retinex-enhanced images\""),
    dict(detail="backbone", paper="R(2+1)D-34, weights shared by both streams", source="abstract",
         quote="weight-shared R(2+1)D-34 backbones",
         code="darkjax/models/actlumos.py _Parts.backbone",
         ours="r2plus1d_34_ig65m, one module run on the 2B clips", status="MATCH"),
    dict(detail="BatchNorm over the two streams", paper="not stated",
         key="actlumos.stream_statistics", status="CHOICE",
         note="the shared backbone runs once on the 2B clips and its BatchNorms keep statistics "
         "per stream (scale and bias shared): each stream is normalised by its own batch "
         "statistics in training and its own running ones at test. DarkLight's code (the "
         "README's ref. [5], models/dark_light.py: self.features(x), self.features(x_light)) "
         "calls the backbone once per stream: per-stream batch statistics in training, but one "
         "set of running statistics updated by both calls, which fits neither stream at test; "
         "`joint` normalises both streams by the statistics of all 2B clips, which under a "
         "fixed input normalisation leaves the dark stream near constant (docs/papers/"
         "actlumos.md measures both)"),
    dict(detail="backbone weights", paper="not stated", key="required_weights.backbone.file",
         status="CHOICE",
         note="`backbone_init` required (`init=none` opts out): DarkLight-R(2+1)D-34, the "
         "README's ref. [5] whose code it links, starts from IG65M (its models/dark_light.py: "
         "r2plus1d_34_32_ig65m, pretrained=True); LIFT-Net's R(2+1)D-34 here requires the same "
         "file"),
    dict(detail="input normalisation", paper="not stated", key="input.normalise",
         status="CHOICE",
         note="the IG65M checkpoint's statistics, both streams (DarkLight's code uses ImageNet's)"),
    dict(detail="fusion", paper="dff", source="abstract",
         quote="dynamically fuses them using a Dynamic Feature Fusion (DFF) module",
         key="actlumos.fusion", status="MATCH",
         note="`fusion=sum|concat` are ablations; the README gives no ablation numbers for them"),
    dict(detail="DFF wiring",
         paper="X = F_dark + F_ret; global (pooled) and local branches Conv-BN-ReLU-Conv-BN, "
         "summed; Conv-BN-ReLU-Conv to 2 channels; softmax; W_dark F_dark + W_ret F_ret",
         image="DFF.png",
         drawn="Global Attention (AdaptiveAvgPool) → Conv1 → BN → ReLU → Conv2 → BN; Local "
         "Attention Conv1 → BN → ReLU → Conv2 → BN; Weighting Attention Conv1 → BN → ReLU → Conv2 "
         "(2 channels/output); Softmax; W_dark*F_dark; W_ret*F_ret",
         code="darkjax/models/actlumos.py DynamicFeatureFusion", ours="as drawn, 1x1x1 convs",
         status="MATCH",
         note="DFF.png also labels the weighting output \"3 x T x H x W\"; we follow its "
         "\"2 channels/output\" and its two weight maps"),
    dict(detail="DFF inputs and weights", paper="C x T x H x W maps; one weight per position",
         image=("DFF.png", "abstract_img.png"),
         drawn=("F_dark, F_ret: C x T x H x W; W_dark, W_ret: 1 x T x H x W",
                "DFF – Content aware weights at each temporal segment"),
         code="darkjax/models/actlumos.py DynamicFeatureFusion",
         ours="the backbone's last maps; softmax weights (B, T', H', W', 2)", status="MATCH",
         note="arch.png draws DFF's inputs as \"Feature vector\" nodes; DFF.png's shapes decide"),
    dict(detail="DFF reduction r", paper="not stated", key="actlumos.reduction", status="CHOICE",
         note="DFF's global / local branches are MS-CAM's (attentional feature fusion, Dai et "
         "al.), whose code uses r = 4"),
    dict(detail="teacher loss", paper="L_ce + lambda_sup L_SupCon", source="abstract",
         quote="guided by a supervised contrastive loss (SupCon) to enhance class separability",
         image="arch.png", drawn="Overall loss for teacher = L_ce + λ_sup L_SupCon",
         code="darkjax/trainers/actlumos.py TeacherTask.loss_fn", ours="CE + supcon_weight SupCon",
         status="MATCH",
         note="tests/test_actlumos.py runs the teacher's loss_fn against the sum in NumPy"),
    dict(detail="lambda_sup", paper="not stated", key="actlumos.supcon_weight", status="CHOICE",
         note="CE stays the leading term: SupCon of features that tell nothing apart is "
         "ln(2B - 1) = 3.4 (B = 16 clips, two views each), CE of uniform logits ln 11 = 2.4"),
    dict(detail="SupCon positives",
         paper="every clip of the same class, both streams of every clip", source=_CAPTION,
         quote="with labels, every clip from the same class Pick including dark and retinex views "
               "of different instances is a positive (pink), while clips from other classes are "
               "negatives",
         code="darkjax/losses.py supcon_loss on (B, 2, D)", ours="as stated", status="MATCH",
         note="\"(pink)\": the colour of the positive edges in the README's figure "
         "contrastive.png"),
    dict(detail="SupCon features", paper="each stream's feature vector, before DFF",
         image="arch.png",
         drawn="Feature vector (Retinex stream) and Feature vector (dark stream), joined by "
         "\"Supervised contrastive loss multi-enhancement\"; L_SupCon on the arrow into Dynamic "
         "Feature Fusion (DFF)",
         code="darkjax/models/actlumos.py ActLumosTeacher out['features']",
         ours="each stream's pooled last map", status="MATCH"),
    dict(detail="SupCon form", paper="named, no formula", source="abstract",
         quote="a supervised contrastive loss (SupCon)",
         code="darkjax/losses.py supcon_loss", ours="Khosla et al.'s L_out (their Eq. 2)",
         status="CHOICE",
         note="the loss the name refers to, in the form its authors recommend; tested against a "
         "NumPy transcription"),
    dict(detail="SupCon temperature", paper="not stated", key="actlumos.supcon_temperature",
         status="CHOICE", note="the SupCon reference code's default (SupConLoss temperature=0.07)"),
    dict(detail="SupCon projection", paper="not shown", key="actlumos.projection_dim",
         status="CHOICE",
         note="Khosla et al.'s projection network (2-layer MLP to 128-d) on each stream's "
         "feature vector; used by the loss only"),
    dict(detail="temporal model", paper="BERT after DFF", image="arch.png",
         drawn="Dynamic Feature Fusion (DFF) → BERT → Action classifier",
         key="model.kwargs.transformer_norm", status="CHOICE",
         note="a BERT-style encoder (CLS token, learned positions) in BERT's published form "
              "(Devlin et al.: embedding LayerNorm, post-LN layers); `transformer_norm=pre` is "
              "DarkLight's code, whose sizes the next row takes (models/BERT, the Annotated "
              "Transformer's form: a LayerNorm dividing by the std + 1e-6 before each sub-layer, "
              "none on the embeddings or the output; tested against a PyTorch transcription). "
              "Measured against each other on the synthetic benchmark, neither is better "
              "(this page, 'The temporal transformer')"),
    dict(detail="BERT size and dropout", paper="not stated", key="model.kwargs", status="CHOICE",
         image="results_1.png", drawn="Params (M); Proposed: ActLumos(Student) 96.92 99.89 67",
         note="DarkLight-R(2+1)D-34's (models/dark_light.py: hidden 512, 8 heads, 1 layer, "
         "dropout 0.8 before the classifier); attention and MLP dropout 0.1 as BERT; the student "
         "then counts 66.66 M parameters, Tables 1-3 (images results_1-3.png) give 67 M"),
    dict(detail="BERT tokens", paper="not stated",
         code="darkjax/models/actlumos.py TemporalTransformer",
         ours="the map's spatial mean per time step", status="CHOICE",
         note="DarkLight's AvgPool3d((1, 7, 7)) of the 7 x 7 map at 112 x 112"),
    dict(detail="student input", paper="dark clips only", source="abstract",
         quote="The student network, using only dark frames",
         code="darkjax/models/actlumos.py ActLumosStudent", ours="dark clips only",
         status="MATCH"),
    dict(detail="student's starting weights", paper="pretrained with self-supervision",
         source="abstract",
         quote="The student network, using only dark frames, is pretrained with "
               "self-supervision on unlabeled clips",
         key="actlumos.student_pretrained", ours="the IG65M backbone, then the SSL stage",
         status="CHOICE",
         note="the SSL phase starts from `backbone_init` as the teacher does; the sentence also "
         "reads as self-supervision being the student's only pretraining "
         "(`student_pretrained=False`: SSL and student from random initialisation, the teacher "
         "alone from IG65M), which makes the student the weaker network that distillation "
         "teaches (docs/papers/actlumos.md measures it)"),
    dict(detail="SSL stage", paper="backbone", source="abstract",
         quote="pretrained with self-supervision on unlabeled clips", image="arch.png",
         drawn="Stage 1 : Self-supervised training; Dark clip, v_i^(1) and Dark clip, v_i^(2) → "
         "CNN-Feature extractor R(2+1)D-34 → SSL Loss",
         key="ssl.features", status="MATCH",
         note="the student's R(2+1)D-34 alone; BERT and the classifier start in Stage 2 "
         "(`ssl_features=cls`: the whole student)"),
    dict(detail="SSL objective", paper="L_SSL, no formula", source=_CAPTION,
         quote="the anchor clip (class Pick) has only its own augmented view as a positive (pink "
               "edge), all other clips in the batch are treated as negatives",
         image="arch.png", drawn="L_SSL",
         code="darkjax/losses.py nt_xent_loss", ours="SimCLR's NT-Xent", status="CHOICE",
         note="the README's one description of self-supervision, in SimCLR's form; tested "
         "against a NumPy transcription"),
    dict(detail="SSL temperature", paper="not stated", key="ssl.temperature", status="CHOICE",
         note="not tuned; within the range SimCLR compares (its Table 5: 0.05 to 1)"),
    dict(detail="SSL views", paper="two dark clips of video i", image="arch.png",
         drawn="Dark clip, v_i^(1); Dark clip, v_i^(2)",
         key="ssl.augment", status="CHOICE",
         note="how the views differ is not stated: colour jitter and random affine drawn twice "
         "on device from one decoded clip"),
    dict(detail="SSL projection", paper="not shown",
         code="darkjax/models/actlumos.py ActLumosSSL",
         ours="2-layer MLP on the pooled map, projection_dim wide", status="CHOICE",
         note="SimCLR's projection head; used by the loss only"),
    dict(detail="SSL data", paper="unlabeled clips (not named)", source="abstract",
         quote="pretrained with self-supervision on unlabeled clips",
         image="abstract_img.png", drawn="Inputs (ARID & Dark48)",
         key="ssl.datasets", status="CHOICE",
         note="train splits of ARID + Dark-48, the datasets abstract_img.png's input panel "
         "names; plots.png (in the README from commit 222a83b, after the copy we follow) "
         "measures SSL on ARID, Dark48 and both, both best"),
    dict(detail="student loss", paper="L_CE + lambda_kd L_KD on the teacher's logits",
         source="abstract", quote="fine-tuned via knowledge distillation from the teacher",
         image=("arch.png", "abstract_img.png"),
         drawn=("Overall loss for student = L_CE + λ_kd L_KD",
                "KD – Student learns from teacher's logits"),
         code="darkjax/trainers/actlumos.py Task.loss_fn", ours="CE + kd_weight KD",
         status="MATCH",
         note="tests/test_actlumos.py runs the student's loss_fn against the sum in NumPy"),
    dict(detail="KD form and temperature", paper="not stated", key="actlumos.kd_temperature",
         status="CHOICE",
         note="Hinton et al.'s KL between softened distributions times T^2 (the soft term's "
         "gradients keep their scale across T); T = 4, the KD baseline's default in RepDistiller "
         "(--kd_T 4)"),
    dict(detail="lambda_kd", paper="not stated", key="actlumos.kd_weight", status="CHOICE",
         note="CE and KD weighted equally"),
    dict(detail="clips the KD term reads", paper="not stated", key="actlumos.kd_unlabelled",
         status="CHOICE",
         note="the labelled clips the student is fine-tuned on (\"fine-tuned via knowledge "
         "distillation\"); `kd_unlabelled=True` adds a batch of the SSL sets' unlabelled clips "
         "to each step's KD term (the teacher's soft labels on clips without labels), which "
         "docs/papers/actlumos.md measures"),
    dict(detail="teacher during KD", paper="not stated",
         code="darkjax/trainers/actlumos.py phase_config",
         ours="trained first, then frozen (running BN statistics, no dropout)", status="CHOICE",
         note="arch.png feeds the teacher's logits into KD after its own training"),
    dict(detail="frames per clip", paper="not stated", key="input.frames", status="CHOICE",
         note="DarkLight's R(2+1)D-34 clip (darklight.py: length = 64)"),
    dict(detail="crop", paper="not stated", key="input.crop_size", status="CHOICE",
         note="DarkLight's input_size = 112: a 7 x 7 last map"),
    dict(detail="resize before the crop", paper="not stated", key="input.short_side",
         status="CHOICE", note="DarkLight resizes frames to 128 x 170"),
    dict(detail="Retinex", paper="\"Retinex-enhanced frames\", method not named",
         source="abstract", quote="Retinex-enhanced frames", key="actlumos.retinex",
         status="CHOICE",
         note="multi-scale Retinex at Jobson et al.'s scales 15, 80, 250, stretched per frame "
         "and channel between the 1st and 99th percentiles to uint8"),
    dict(detail="optimizer", paper="not stated", key="optimizer.name", status="CHOICE",
         note="AdamW as DarkLight's code (its lr 1e-5, weight decay 1e-3, up to 200 epochs)"),
    dict(detail="learning rate", paper="not stated", key="optimizer.lr", status="CHOICE",
         note="ten times DarkLight's: 3000 steps of 16 clips (48k clips) against its up to "
         "200 epochs; cosine with 5% warmup"),
    dict(detail="training length", paper="not stated", key="total_steps", status="CHOICE",
         note="per phase: `teacher_steps`, `ssl_steps`, `steps` (student)"),
    dict(detail="augmentation", paper="not stated", key="actlumos.augment", status="CHOICE",
         note="colour jitter and affine on device, flips on the host; no CutMix (SupCon needs "
         "one label per clip)"),
    dict(detail="test-time views", paper="not stated", key="input.eval_clips", status="CHOICE",
         note="1 centred 64-frame clip x 1 centre crop; `eval_clips=10,eval_crops=3` the "
         "10-clip x 3-crop protocol, their scores averaged"),
)
