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
            init="pretrained", runlocal=False, seed=0, split=1, eval_clips=1, eval_crops=1,
            dataset="")


# `runlocal`: the tiny test model on short small clips for two steps per phase (args given beside it
# win).
RUNLOCAL = dict(variant="tiny_test", frames=8, crop=32, short_side=36, batch=8, steps=2,
                teacher_steps=2)


def lift_config(arg: str | None, dataset: str, **defaults) -> mlc.ConfigDict:
  """The LIFT-Net config for a prepared `dataset` (shared by configs/lift_*.py); `defaults`
  override ARGS (`split=0` for a dataset without numbered splits)."""
  given = common.given_args(arg)
  arg = common.parse_arg(arg, variants=dict(runlocal=RUNLOCAL), **{**ARGS, **defaults})
  dataset = common.own_dataset(arg.dataset, dataset)
  if arg.variant not in VARIANTS:
    raise ValueError(f"config arg variant={arg.variant!r}: valid {VARIANTS}")
  if arg.luminous not in LUMINOUS_BACKBONES:
    raise ValueError(f"config arg luminous={arg.luminous!r}: valid {sorted(LUMINOUS_BACKBONES)}")
  if arg.init == "none" and arg.vit_trainable != "all" and not arg.runlocal \
      and arg.variant != "tiny_test":
    raise ValueError(f"config args init=none with vit_trainable={arg.vit_trainable}: the PViT "
                     "would stay a random, frozen network; add vit_trainable=all (or bring "
                     "vit_init)")
  if arg.variant == "tiny_test" and "luminous" in given:
    raise ValueError(f"config arg luminous={arg.luminous}: variant=tiny_test (runlocal's model) "
                     "has its own small luminous CNN; drop luminous, or give variant=small, "
                     "medium or large with it")
  config = common.base_config("liftnet", arg.steps, seed=arg.seed)
  flow = arg.luminous_input == "flow"
  config.input = common.input_block(
      batch_size=arg.batch, eval_batch_size=arg.batch, frames=arg.frames, sampling="segment",
      short_side=arg.short_side, crop_size=arg.crop, flip=True, normalise="vit", gamma=0.0,
      shuffle_window=256, streams=("flow",) if flow else (), eval_clips=arg.eval_clips,
      eval_crops=arg.eval_crops)
  config.input.data.name = dataset
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(), dataset)
  if dataset != "synthetic":
    common.accelerator_input_workers(config)
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
  # The PViT's self-attention: auto (cuDNN's fused attention on a GPU in bfloat16, flax's einsum
  # form elsewhere: darkjax.layers.attention) | xla (flax's everywhere) | cudnn. The same function;
  # the fused form never writes the (heads, 197, 197) scores per frame.
  config.model.kwargs.attention = "auto"
  # Readings of the paper, each a model attribute (docs/papers/liftnet.md, RECIPE below): Eq. (1)'s
  # divisor (head_dim | heads: sqrt(N_AH) as printed); the FoE LayerNorm (spectrum: Sec. III-E's
  # order | tokens: after the inverse FFT, the layout of checkpoints written before); the ViT's
  # final LayerNorm after the PViT's blocks.
  config.model.kwargs.attention_scale = "head_dim"
  config.model.kwargs.fourier_norm = "spectrum"
  config.model.kwargs.pvit_norm = True
  config.model.kwargs.fourier_hidden = 0   # the FoE spectrum MLP's width (0: the embedding's, E)
  # The PViT's GELU as its weights were trained: tanh for google-research/vision_transformer's
  # `.npz` (flax's default GELU), erf (False) for timm / PyTorch weights such as ImageNet-21K-P's.
  config.model.kwargs.pvit_gelu_approximate = True
  config.lift = mlc.ConfigDict(dict(
      kd=arg.kd, kd_weight=1.0, kd_reduction="sum", kd_features="hidden",
      # KD: the student's luminous backbone is the teacher's, frozen (False: it trains on with the
      # student's CE; Eq. (6)'s h1 is then the moving backbone's vector, still without gradient)
      freeze_teacher=True,
      luminous_input=arg.luminous_input, gamma=arg.gamma,
      vit_trainable=arg.vit_trainable,
      luminous_normalise="ig65m",   # the luminous clip's (GIC frames or flow) normalisation
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
_SETTINGS = "Sec. V-B"
RECIPE = (
    dict(detail="model size N (LIFT + Critic + Fusion layers)", paper="liftnet_large",
         source=("Table II", "Table VI", "Sec. VI-E"),
         quote=("LIFT-Net (ours) 95.21%", "LIFT-Net - 8 (Large) 95.21%",
                "In small versions, we maintain the N value constant at 4. Similarly, it was 6 "
                "and 8 for the medium and large versions"),
         key="model.name", status="MATCH", note="`variant=small|medium` are Table VI's N = 4 / 6"),
    dict(detail="PViT blocks", paper="5", source="Sec. III-C",
         quote="PViT makes use of five ViT [39] blocks that have already been trained on the "
               "ImageNet-21k [44] dataset",
         code="darkjax/models/liftnet.py LIFTNet.vit_blocks", ours="5", status="MATCH"),
    dict(detail="PViT size and weights",
         paper="a ViT [39] of unstated size, ImageNet-21k [44] (ref. [44]: ImageNet-21K-P, "
               "Ridnik et al.)", source="Sec. III-C",
         code="configs/common.py IMAGENET21K_VIT_B16",
         ours="ViT-B/16, google-research/vision_transformer's ImageNet-21k `ViT-B_16.npz` "
              "(`vit_init`, required)", status="CHOICE",
         note="ViT-B/16 is [39]'s reference model and its ImageNet-21k release. [44]'s ViT-B/16 "
              "(timm `vit_base_patch16_224_miil_in21k`: no qkv biases, trained on pixels / 255) "
              "is the other reading and loads too: `python -m darkjax.convert --arch vit_b16 "
              "--src <its .pth> --out DIR --num-classes 0 --input-normalise none` (zero qkv "
              "biases, the same function), then `vit_init=DIR` with "
              "`--config.input.normalise=none` (checked against DIR's record). Neither measured "
              "on ARID here"),
    dict(detail="PViT's GELU", paper="not stated", key="model.kwargs.pvit_gelu_approximate",
         status="CHOICE",
         note="the form the recipe's weights were trained with: the tanh approximation of "
              "google-research/vision_transformer's `ViT-B_16.npz` (flax's GELU); `False` (erf) "
              "for timm / PyTorch weights such as [44]'s; the two differ by about 1e-3 per "
              "activation"),
    dict(detail="PViT blocks trained", paper="first", source="Sec. III-C",
         quote="We only keep the first block unfrozen throughout training",
         key="lift.vit_trainable", status="MATCH"),
    dict(detail="ViT's final LayerNorm after the PViT's blocks", paper="not stated",
         source="Sec. III-C",
         quote="CLS token extraction is performed to the learned representations of these PViT "
               "blocks. The resulting vector is then routed through MLP and layer-normalizing "
               "layers",
         key="model.kwargs.pvit_norm", status="CHOICE",
         note="a ViT reads its class token after its final LayerNorm ([39]: y = LN(z_L^0)); kept "
              "(frozen with the blocks after the first), the MLP sees unit-scale tokens wherever "
              "the blocks stop; `pvit_norm=False` drops it; measured below"),
    dict(detail="Luminous backbone", paper="R(2+1)D pretrained on IG65M", source="Sec. III-B",
         quote="it goes through an R(2+1)D network that has already been trained using the IG65M "
               "dataset",
         code="configs/lift_base.py LUMINOUS_BACKBONES",
         ours="R(2+1)D, IG65M weights (`luminous_init` required)", status="MATCH"),
    dict(detail="Luminous backbone depth", paper="not stated", key="model.kwargs.luminous",
         status="CHOICE",
         note="34: the IG65M R(2+1)D of moabitcoin/ig65m-pytorch, and the depth of Table II's only "
              "R(2+1)D baseline (Darklight-R(2+1)D-34, 94.04%); `luminous=r3d` is "
              "Table VI's R3D ablation. Other depths not measured (no ARID run here)"),
    dict(detail="Luminous pooling",
         paper="3D adaptive average pool to \"the resulting vector\" (output size not stated)",
         source="Sec. III-B",
         quote="it is fed through a 3D adaptive average pooling. The resulting vector is then used "
               "as input by the critic module",
         code="darkjax/models/liftnet.py LIFTNet.luminous_tokens",
         ours="adaptive average pool to 4 x 2 x 2 = 16 tokens, then Dense + LayerNorm",
         status="CHOICE",
         note="one pooled vector would make the Critic's self-attention (a softmax over one key) "
              "a linear map and the FoE's FFT along the sequence a single frequency; 16 tokens "
              "keep both. The Dense + LayerNorm (not in the paper) maps the backbone's "
              "post-ReLU features into the token space, as the main stream's \"MLP and "
              "layer-normalizing layers\" do (Sec. III-C). Not measured"),
    dict(detail="Luminous input (ARID)", paper="gamma", source="Sec. V-C.1",
         quote="in the Luminous sub-branch of the network, we use gamma-corrected video frames "
               "for the dark/no-light videos",
         key="lift.luminous_input", status="MATCH",
         note="HMDB51, UCF101, InfAR: optical flow (their configs; Sec. V-C.2-3)"),
    dict(detail="GIC gamma", paper="not stated", key="lift.gamma", status="CHOICE",
         note="brightens ARID's frames as Fig. 3 shows"),
    dict(detail="Luminous normalisation (GIC frames or flow)", paper="not stated",
         key="lift.luminous_normalise", status="CHOICE",
         note="IG65M's RGB mean and std, the statistics its weights were trained on, for the "
              "gamma-corrected frames and for the flow images (HMDB51, UCF101, InfAR) alike: the "
              "flow passes through RGB-pretrained weights as an image; `flow` normalises it "
              "as flow instead (not measured here)"),
    dict(detail="token width E, heads, Critic MLP", paper="not stated",
         code="darkjax/models/liftnet.py LIFTNet.embed_dim, num_heads, mlp_dim",
         ours="E = 512, 8 heads, MLP 2048 (4E)", status="CHOICE",
         note="512 is the R(2+1)D's width, so h1 and h2 of Eq. (6) need no projection; 8 heads "
              "and 4E are [45]'s"),
    dict(detail="token order", paper="not stated",
         code="darkjax/models/liftnet.py LIFTNet.position_embeddings",
         ours="learned position embeddings added to both token sequences", status="CHOICE",
         note="attention and the FFT over the sequence need an order; the ViT's own position "
              "embeddings hold within a frame only"),
    dict(detail="Fourier MLP width", paper="not stated",
         code="darkjax/models/liftnet.py LIFTNet.fourier_hidden", ours="E (512)",
         status="CHOICE", note="`model.kwargs.fourier_hidden=N` sets another (0: E); the MLP's "
                               "last layer starts at zero "
                               "(FoE starts as the spectrum's residual and LayerNorm alone)"),
    dict(detail="fusion attention scale", paper="sqrt(N_AH), the number of heads",
         source="Sec. III-D, Eq. (1)",
         quote="N_AH is the number of attention heads required for normalization",
         key="model.kwargs.attention_scale", status="CHOICE",
         note="Eq. (1) sends the reader to [45] for multi-head attention, whose scale is "
              "sqrt(d_k), the width of one head (64 here, against sqrt(8) = 2.8: logits 2.8x "
              "sharper); `attention_scale=heads` is Eq. (1) as printed; measured below. The LIFT "
              "and Critic modules' MSA is [45]'s"),
    dict(detail="Fourier Enhancement order", paper="spectrum", source="Sec. III-E",
         quote="we feed Y to an MLP (multilayer perceptron) and then apply a residual connection "
               "and Layer Normalization (LN). Finally, we utilize the inverse Fast Fourier "
               "Transform (FFT) to revert the learnable modulated spectrum Y",
         key="model.kwargs.fourier_norm", status="MATCH",
         note="the LayerNorm normalises the spectrum's [Re, Im] features; `fourier_norm=tokens` "
              "(after the inverse FFT) loads checkpoints written before; measured below"),
    dict(detail="Fourier spectrum as MLP input", paper="not stated (Y is complex)",
         source="Sec. III-E, Eq. (3)-(4)",
         quote="It is important to note that Y is a complex tensor that describes the FE spectrum",
         code="darkjax/layers/fourier.py",
         ours="[Re, Im] of rfft2's half spectrum, orthonormal FFT, MLP per sequence frequency",
         status="CHOICE",
         note="a real input's 2D spectrum is Hermitian, so its half holds all of it and the "
              "inverse transform is real by construction"),
    dict(detail="fused tokens", paper="not stated", source="Sec. III-A",
         quote="This fusing step is repeated N times throughout the network",
         code="darkjax/models/liftnet.py", ours="continue the luminous chain into the next layer",
         status="CHOICE",
         note="FE = LN(F_attention) + H_LS (Eq. (2)) has H_LS's residual and token count; the "
              "paper draws the module in the Main-Stream subtree (Sec. III-A), but feeding FE to "
              "the main stream would give it the luminous token count"),
    dict(detail="classifier input", paper="the Feature Fusion module's output",
         source=("Sec. III-C", "Sec. III-A"),
         quote=("MLP, GeLU, batch normalization, another MLP layer, and a softmax activation "
                "function are applied to the output of the Feature Fusion module",
                "Following the union of feature maps from both paths, the resulting feature "
                "vector is fed into an MLP"),
         code="darkjax/models/liftnet.py LIFTNet.__call__",
         ours="the last fusion layer's output (luminous queries and residual, main-stream keys "
              "and values) through Dense, GELU, BatchNorm, Dense; softmax in the loss",
         status="MATCH", note="the union of both paths is the fusion's cross-attention"),
    dict(detail="classifier input vector", paper="not stated (the fusion outputs tokens)",
         code="darkjax/models/liftnet.py LIFTNet.__call__", ours="the mean over the fused tokens",
         status="CHOICE",
         note="the fusion's output is one token per pooled luminous position (16) and the head "
              "reads one \"feature vector\" (Sec. III-A); their mean weighs every position alike "
              "and has no parameter the paper does not name (a class token or attention pooling "
              "would add one). Not measured"),
    dict(detail="classifier dropout", paper="not stated (the head lists no dropout)",
         code="darkjax/models/liftnet.py LIFTNet.dropout_rate",
         ours="0.1, before the head's last Dense (and in the attention and MLP blocks)",
         status="CHOICE",
         note="the transformer's usual rate ([45]'s P_drop = 0.1) for a head trained on ARID's "
              "3,784 clips; not measured"),
    dict(detail="teacher loss", paper="cross-entropy", source=("Sec. IV", "Sec. IV, Eq. (5)"),
         quote=("seeks to minimize the cross entropy loss",
                "T_LOSS = - ∑_x=i y_i × log(T_output_i)"),
         code="darkjax/trainers/liftnet.py TeacherTask.loss_fn", ours="cross-entropy",
         status="MATCH", note="tests/test_liftnet.py runs the teacher's loss_fn against Eq. (5) "
                              "in NumPy"),
    dict(detail="teacher backbone in the student phase",
         paper="shared with the student (frozen or not: not stated)", source=("Sec. IV", "Fig. 4"),
         quote=("the student network shares its weight with the teacher",
                "the instructor network shares its weight with the R(2+1)D model present in the "
                "student network"),
         key="lift.freeze_teacher", status="CHOICE",
         note="one copy, frozen: Eq. (6)'s target h1 then stays the trained teacher's, and Fig. 4 "
              "draws the teacher's and the student's backward passes apart; "
              "`lift.freeze_teacher=False` lets the student's CE train it on; measured below"),
    dict(detail="student KD term", paper="sum", source=("Sec. IV, Eq. (6)", "Sec. IV"),
         quote=("S_LOSS = - ∑_x=i y_i × log(S_output_i) + ∑_x=i |h1_i - h2_i|",
                "the second term makes use of the L1 loss"),
         key="lift.kd_reduction", status="MATCH",
         note="tests/test_liftnet.py runs the student's loss_fn against Eq. (6) in NumPy"),
    dict(detail="KD vectors h1, h2", paper="the vectors softmax is applied to (ambiguous)",
         source=("Sec. IV", "Sec. IV"),
         quote=("the model first generates a set of hidden representations (h1), which are then "
                "used in conjunction with softmax to produce a vector (T_output)",
                "let S_output be the output vector after applying softmax to h2"),
         key="lift.kd_features", status="CHOICE",
         note="pooled hidden vectors; `logits` is the other reading"),
    dict(detail="frames", paper=30, source=_SETTINGS,
         quote="a sequence of frames with a size of 3 × 224 × 224 and a length of 30",
         key="input.frames", status="MATCH"),
    dict(detail="frame size", paper=224, source=_SETTINGS,
         quote="The network receives a sequence of frames with a size of 3 × 224 × 224",
         key="input.crop_size", status="MATCH"),
    dict(detail="resize before the crop", paper="not stated", key="input.short_side",
         status="CHOICE", note="short side 256, then a 224 crop, the usual ImageNet-style pair"),
    dict(detail="sampling", paper="not stated", key="input.sampling", status="CHOICE",
         note="TSN-style segments over the whole video"),
    dict(detail="optimizer", paper="adamw", source=_SETTINGS,
         quote="The training is performed with an AdamW optimizer", key="optimizer.name",
         status="MATCH"),
    dict(detail="learning rate", paper=1e-4, source=_SETTINGS,
         quote="an initial learning rate of 0.0001", key="optimizer.lr", status="MATCH"),
    dict(detail="schedule", paper="cosine", source=_SETTINGS,
         quote="A cosine annealing scheduler is utilized throughout the training process",
         key="optimizer.schedule", status="MATCH"),
    dict(detail="warmup steps", paper="not stated", key="optimizer.warmup_steps", status="CHOICE",
         note="a linear warmup over the first 5% of the steps before the cosine, usual for AdamW "
              "on a pretrained ViT with freshly initialised layers on top; measured below"),
    dict(detail="weight decay", paper="not stated", key="optimizer.weight_decay",
         status="CHOICE", note="the usual ViT fine-tuning value"),
    dict(detail="batch", paper=32, source=_SETTINGS, quote="with a batch size of 32",
         key="input.batch_size", status="MATCH"),
    dict(detail="training length", paper="not stated", key="total_steps", status="CHOICE",
         note="per phase (`teacher_steps` for the teacher)"),
    dict(detail="augmentations", paper="flip, colour jitter, affine, optical and elastic "
         "distortion, rain, CutMix, frame shuffle", source=_SETTINGS,
         quote="Augmentations like random flip, color jitter, random affine transform, optical "
               "distortion, elastic distortion, random rain, cutmix, and frame shuffle are all "
               "applied",
         key="lift.augment", status="CHOICE", note="all implemented; the paper gives no "
                                                  "magnitudes"),
    dict(detail="dataset split", paper="not stated", key="input.data.split_index",
         status="CHOICE",
         note="split 1 of ARID's, HMDB51's and UCF101's three (results on the last two are often "
         "the mean of the three); `python -m darkjax.tools.experiment --splits all` runs and "
         "averages them"),
    dict(detail="test-time views", paper="not stated", key="input.eval_clips", status="CHOICE",
         note="1 clip (each segment's middle frame) x 1 centre crop; `eval_clips=n` takes clip "
         "c at (c + 0.5) / n of each segment, `eval_crops=3` three crops, their scores averaged"),
)
