"""`TaskBase`: what every paper's Task shares (config, compute dtype, data sources, building the
configured model, the default hooks of the `darkjax.task.Task` contract).

A Task subclass sets `data_sources` (name -> ClassificationData; the first is the one the model is
trained and evaluated on unless an evaluator names another) and `model`, and writes `loss_fn`,
`init_variables` and `predict`. It may override `init_from` (pretrained sub-modules, a teacher, a
phase-1 enhancer) with `merges_pretrained = True`.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections as mlc

from darkjax import config as config_lib
from darkjax import models
from darkjax.data.classification import ClassificationData


class TaskBase:
  """Shared state and default hooks; see darkjax.task.Task for the contract."""
  merges_pretrained: bool = False
  data_sources: dict[str, ClassificationData]

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    """`num_classes`: the head size when the dataset is not at hand (inference from a
    checkpoint); otherwise the primary data source's dataset decides."""
    self.config = config
    self.dtype = config_lib.compute_dtype(config)
    self._num_classes = num_classes

  @property
  def data(self) -> ClassificationData:
    """The primary data source (the first of `data_sources`)."""
    return next(iter(self.data_sources.values()))

  @property
  def num_classes(self) -> int:
    return self._num_classes or self.data.dataset.num_classes

  def build_model(self, name: str | None = None, **overrides):
    """`config.model.name` (or `name`) from the zoo with `config.model.kwargs` and `overrides`,
    the task's class count and compute dtype."""
    kwargs = {**self.config.model.kwargs.to_dict(), **overrides}
    try:
      return models.build(name or self.config.model.name, num_classes=self.num_classes,
                          dtype=self.dtype, **kwargs)
    except models.UnknownModelError as error:
      if name:   # the task's own choice, not the config's
        raise
      raise config_lib.ConfigError(f"config.model.name: {error}") from None

  def train_dataset(self, local_batch: int):
    return self.data.train_dataset(local_batch)

  def init_from(self, variables: dict) -> dict:
    """A fresh state's variables -> those training starts from (only with merges_pretrained)."""
    return variables

  @staticmethod
  def apply_variables(params: Any, model_state: Mapping[str, Any]) -> dict:
    return {"params": params, **model_state}
