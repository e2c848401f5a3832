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
# tests/test_recipes.py.
RECIPE = (
    dict(detail="feature extractor", paper="resnext3d_101", source="Figs. 4, 6; ResNeXt-DA 90.83%",
         key="model.kwargs.backbone", status="MATCH",
         note="`backbone=resnet3d_101|c3d` are ResNet-DA / C3D-DA"),
    dict(detail="extractor initialisation", paper="Kinetics (kenshohara/3D-ResNets-PyTorch)",
         source="Sec. III", code="configs/common.py KINETICS_RESNEXT101",
         ours="required (`pretrained`)", status="MATCH",
         note="a run without it stops at start; `init=none` opts out"),
    dict(detail="gradient reversal", paper="multiply by -lambda", source="Sec. II, Eq. (7)",
         code="darkjax/layers/grl.py", ours="jax.custom_vjp", status="MATCH"),
    dict(detail="lambda schedule gamma", paper=10.0, source="Eq. (8): 2 / (1 + exp(-10 p)) - 1",
         key="dinet.grl_gamma", status="MATCH"),
    dict(detail="domain loss", paper=True, source="Sec. II: logistic regression loss",
         key="dinet.domain_loss", status="MATCH", note="`domain_loss=False` is source-only"),
    dict(detail="domain classifier", paper="not stated", key="model.kwargs.domain_hidden",
         status="CHOICE", note="DANN's 1024-1024 MLP with dropout 0.5"),
    dict(detail="batch composition", paper="half source, half target", source="Sec. III",
         code="darkjax/trainers/dinet.py Task.train_dataset", ours="half source, half target",
         status="MATCH"),
    dict(detail="source data", paper="all", source="Sec. IV: trained on XD145",
         key="input.data.split", status="MATCH", note="600 clips: train1 and test1 together"),
    dict(detail="target data", paper="infar", source="Sec. III", key="dinet.target.data.name",
         status="MATCH", note="unlabelled train part of split k; evaluated on its test part"),
    dict(detail="optimizer", paper="sgd", source="Sec. III", key="optimizer.name",
         status="MATCH"),
    dict(detail="momentum", paper=0.9, source="Sec. III", key="optimizer.momentum",
         status="MATCH"),
    dict(detail="learning-rate annealing", paper="annealing, formula not stated",
         key="optimizer.schedule", status="CHOICE",
         note="DANN's lr_0 / (1 + 10 p)^0.75, the schedule Eq. (8) comes from"),
    dict(detail="learning rate", paper="not stated", key="optimizer.lr", status="CHOICE"),
    dict(detail="weight decay", paper="not stated", key="optimizer.weight_decay",
         status="CHOICE", note="3D-ResNets-PyTorch's fine-tuning value"),
    dict(detail="batch", paper="not stated", key="input.batch_size", status="CHOICE"),
    dict(detail="training length", paper="not stated", key="total_steps", status="CHOICE"),
    dict(detail="clip", paper="not stated", key="input.frames", status="CHOICE",
         note="16 frames, 3D-ResNets-PyTorch's clip"),
    dict(detail="crop", paper="not stated", key="input.crop_size", status="CHOICE",
         note="112 x 112 after a 128 short-side resize, as the Kinetics weights were trained"),
    dict(detail="InfAR evaluation", paper="average recognition accuracy", source="Table I",
         key="dinet.target.data.split_index", status="CHOICE",
         note="split 1; `python -m darkjax.tools.experiment --splits all` averages the 5 splits"),
)
