"""Pieces shared by the 3D-DiNet configs (dinet_synthetic.py, dinet_infar.py): the `config.dinet`
block read by darkjax/trainers/dinet.py and the two evaluations (target and source test splits)."""

from __future__ import annotations

import ml_collections as mlc

from configs import common


def dinet_block(target_data: mlc.ConfigDict, target_stream: str = "video",
                domain_loss: bool = True, input_channels: int = 3) -> mlc.ConfigDict:
  """`config.dinet`: the unlabelled target domain and the DANN loss settings."""
  return mlc.ConfigDict(dict(
      target=mlc.ConfigDict(dict(data=target_data, stream=target_stream)),
      input_channels=input_channels,   # 1-channel clips (infrared) are repeated on device
      domain_loss=domain_loss,         # False: the source-only baseline
      domain_loss_weight=1.0,          # domain BCE sum : source CE sum (Eq. 4: 1)
      grl_gamma=10.0,                  # GRL lambda(p) = 2 / (1 + exp(-gamma p)) - 1
  ))


def dinet_evals() -> mlc.ConfigDict:
  """`eval`: the target test split (the adaptation's result); `eval_source`: the source's."""
  return mlc.ConfigDict(dict(eval=common.classification_eval(data="target"),
                             eval_source=common.classification_eval(data="source")))


# The paper's recipe (Ulhaq, 3D-DiNet), row by row; rendered by `python -m darkjax.tools.recipe
# dinet` into docs/papers/dinet.md and checked against configs/dinet_infar.py by
# tests/test_recipes.py (which also finds every MATCH row's quote in the paper's text).
RECIPE = (
    dict(detail="feature extractor", paper="resnext3d_101", source="Sec. II-A; Table I, 90.83%",
         quote="we fined-tuned ResNeXt-101 [29] pre-trained on Kinetic -400 as a backbone",
         key="model.kwargs.backbone", status="MATCH",
         note="`backbone=c3d` is C3D-DA, `backbone=resnet3d_101` ResNet-DA (rows below)"),
    dict(detail="C3D-DA backbone", paper="C3D with its Sports-1M weights", source=("Sec. III",
                                                                                 "Sec. II-A"),
         quote=("named the resulting networks C3D-DA, ResNet-DA, and ResNeXt -DA",
                "By pre-training on the largest action recognition benchmark Sports-1 M, the C3D, "
                "and Res3D work both provided their pre-trained model"),
         code="configs/dinet_infar.py BACKBONE_WEIGHTS", ours="`backbone=c3d`, Sports-1M C3D",
         status="MATCH", note="the paper reports no C3D-DA number"),
    dict(detail="ResNet-DA backbone", paper="ResNet, depth not stated", source="Sec. III",
         code="configs/dinet_infar.py BACKBONE_WEIGHTS", ours="`backbone=resnet3d_101`",
         status="CHOICE",
         note="depth 101 to compare with ResNeXt-101 at the same depth; Sec. II-A's Res3D is "
         "ResNet-18-style, so `backbone=resnet3d_18` with resnet-18-kinetics.pth is the other "
         "reading; the paper reports no ResNet-DA number"),
    dict(detail="extractor initialisation", paper="Kinetics (kenshohara/3D-ResNets-PyTorch)",
         source="Sec. III", quote="we used the deep 3D ResNets pre-trained available at",
         code="configs/common.py KINETICS_RESNEXT101", ours="required (`pretrained`)",
         status="MATCH", note="a run without it stops at start; `init=none` opts out"),
    dict(detail="input normalisation", paper="not stated", key="input.normalise", status="CHOICE",
         note="the pretrained weights' own: 3D-ResNets-PyTorch's first Kinetics release read 0-255 "
         "RGB minus the ActivityNet mean (C3D-DA: BGR minus the Sports-1M mean); recorded by "
         "darkjax.convert and checked when the weights load"),
    dict(detail="3D convolution", paper="b + phi(sum W V)", source="Eq. (1)",
         code="darkjax/layers/conv.py Conv3D", ours="phi(b + sum W V)", status="CHOICE",
         note="the backbones' usual order (C3D adds the bias before the ReLU, the ResNe(X)ts have "
         "no bias); the printed equation adds b after phi; equal without bias "
         "(tests/test_dinet.py transcribes it)"),
    dict(detail="objective", paper="sum_{d_i=0} L_a - lambda sum_i L_d",
         source=("Sec. II, Eq. (4)", "Sec. II"),
         quote=("we need θf that jointly minimizes the loss of the action classifier and domain "
                "classifier. In other words, we are seeking a functional E such that",
                "The parameter λ controls the trade-off between two objectives"),
         code="darkjax/trainers/dinet.py Task.loss_fn",
         ours="sum CE over the source clips + sum BCE over all clips, -lambda by the GRL",
         status="MATCH",
         note="Eq. (4)'s relative weight of the two sums is `dinet.domain_loss_weight` = 1 (0.5 "
         "gives the mean BCE); the GRL supplies -lambda for the extractor; tests/test_dinet.py "
         "transcribes Eq. (4)"),
    dict(detail="objective scale", paper="sums over the clips (Eq. (4))",
         code="darkjax/trainers/dinet.py Task.loss_fn", ours="Eq. (4) / the source clip count",
         status="CHOICE",
         note="the action term becomes the usual batch mean, for which the learning rate (DANN's, "
         "a choice below) is set; against Eq. (4)'s sums it scales the loss's gradients by 1/16 "
         "at the default 16 source clips (weight decay is not scaled)"),
    dict(detail="gradient reversal", paper="multiply by -lambda", source="Sec. II, Eq. (5)",
         quote="It gradient from the subsequent layers is multiplied with −λ and passed to the "
         "preceding layers",
         code="darkjax/layers/grl.py", ours="jax.custom_vjp", status="MATCH",
         note="Eqs. (6)-(7): the heads' gradients stay plain"),
    dict(detail="lambda schedule gamma", paper=10.0, source="Eq. (8): 2 / (1 + exp(-10 p)) - 1",
         quote="where p is the training progress linearly changing from 0 to 1",
         key="dinet.grl_gamma", status="MATCH"),
    dict(detail="action loss", paper="logistic regression loss", source="Sec. II",
         quote="the action classifier used logistic regression loss",
         code="darkjax/trainers/dinet.py Task.loss_fn", ours="softmax cross-entropy",
         status="MATCH", note="multinomial logistic regression on the source clips"),
    dict(detail="domain loss", paper=True, source="Sec. II",
         quote="For the domain adaptor, three fully connected layers were used with binomial "
         "cross-entropy loss",
         key="dinet.domain_loss", status="MATCH", note="`domain_loss=False` is source-only"),
    dict(detail="domain classifier layers", paper="three fully connected layers",
         source="Sec. II", quote="three fully connected layers",
         code="darkjax/models/dinet.py DomainClassifier", ours="3 dense layers (2 hidden + 1 logit)",
         status="MATCH"),
    dict(detail="domain classifier widths", paper="not stated", key="model.kwargs.domain_hidden",
         status="CHOICE", note="DANN's 1024-1024"),
    dict(detail="domain classifier dropout", paper="not stated",
         key="model.kwargs.domain_dropout", status="CHOICE", note="DANN's 0.5"),
    dict(detail="action head dropout", paper="not stated", key="model.kwargs.head_dropout",
         status="CHOICE", note="the usual dropout before a fine-tuned classifier (0.5); none "
         "with the C3D backbone, whose fc7 features are dropped by C3D's own dropout"),
    dict(detail="batch composition", paper="half source, half target", source="Sec. III",
         quote="half of each batch is populated by the samples from the source domain",
         code="darkjax/trainers/dinet.py Task.train_dataset", ours="half source, half target",
         status="MATCH"),
    dict(detail="BatchNorm statistics", paper="not stated",
         code="darkjax/trainers/dinet.py Task.loss_fn", ours="one pass over source + target",
         status="CHOICE",
         note="batch statistics and running averages mix both domains, as one forward pass of "
         "the whole batch (DANN's); per-domain statistics would be the other choice"),
    dict(detail="source data", paper="all", source="Sec. IV",
         quote="3D-DiNet is trained on the XD145 actions dataset (daytime actions)",
         key="input.data.split", status="MATCH", note="600 clips: train1 and test1 together"),
    dict(detail="target data", paper="infar", source="Sec. III",
         quote="the InFAR dataset is used as the target domain", key="dinet.target.data.name",
         status="MATCH"),
    dict(detail="target split", paper="not stated", key="dinet.target.data.split_index",
         status="CHOICE",
         note="split k's 30 train videos per class are the unlabelled target, its 20 test videos "
         "are evaluated (average recognition accuracy, Table I); `python -m "
         "darkjax.tools.experiment --splits all` averages the 5 splits"),
    dict(detail="optimizer", paper="sgd", source="Sec. III",
         quote="We use stochastic gradient descent with 0.9 momentum", key="optimizer.name",
         status="MATCH"),
    dict(detail="momentum", paper=0.9, source="Sec. III",
         quote="We use stochastic gradient descent with 0.9 momentum", key="optimizer.momentum",
         status="MATCH"),
    dict(detail="learning-rate annealing", paper="annealing, formula not stated",
         key="optimizer.schedule", status="CHOICE",
         note="DANN's lr_0 / (1 + 10 p)^0.75, the schedule Eq. (8) comes from"),
    dict(detail="learning rate", paper="not stated", key="optimizer.lr", status="CHOICE",
         note="DANN's lr_0 = 0.01, ten times lower for fine-tuning pretrained weights; not tuned "
         "(no InFAR measurement)"),
    dict(detail="weight decay", paper="not stated", key="optimizer.weight_decay",
         status="CHOICE",
         note="the common 5e-4 (3D-ResNets-PyTorch's default is 1e-3); not tuned"),
    dict(detail="batch", paper="not stated", key="input.batch_size", status="CHOICE",
         note="16 source + 16 target clips, a common fine-tuning batch; not tuned"),
    dict(detail="training length", paper="not stated", key="total_steps", status="CHOICE",
         note="10,000 steps of 16 source clips, about 270 passes over XD145's 600 clips; not "
         "tuned"),
    dict(detail="clip", paper="not stated", key="input.frames", status="CHOICE",
         note="16 frames, 3D-ResNets-PyTorch's clip"),
    dict(detail="crop", paper="not stated", key="input.crop_size", status="CHOICE",
         note="112 x 112, the size the Kinetics weights saw (3D-ResNets-PyTorch trained on "
         "multi-scale corner crops resized to 112, tested on a 112 centre crop); here a random "
         "112 crop of frames resized to a 128 short side, the centre crop in evaluation"),
    dict(detail="horizontal flip", paper="not stated", key="input.flip", status="CHOICE",
         note="the usual flip of video fine-tuning (3D-ResNets-PyTorch trains with it)"),
    dict(detail="InfAR evaluation", paper="average recognition accuracy", source="Table I",
         key="input.eval_clips", status="CHOICE",
         note="1 clip x 1 centre crop per video (`eval_clips`, `eval_crops`); the paper states no "
         "test-time protocol"),
)
