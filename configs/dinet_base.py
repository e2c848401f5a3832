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
      domain_loss_weight=1.0,          # weight of the domain BCE
      grl_gamma=10.0,                  # GRL lambda(p) = 2 / (1 + exp(-gamma p)) - 1
  ))


def dinet_evals() -> mlc.ConfigDict:
  """`eval`: the target test split (the adaptation's result); `eval_source`: the source's."""
  return mlc.ConfigDict(dict(eval=common.classification_eval(data="target"),
                             eval_source=common.classification_eval(data="source")))
