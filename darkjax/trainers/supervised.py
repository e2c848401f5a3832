"""Supervised action classification of any zoo model: clips -> model -> softmax cross-entropy."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections as mlc

from darkjax import losses
from darkjax import task as task_lib
from darkjax.data.classification import ClassificationData
from darkjax.trainers.base import TaskBase


def clip_logits(logits: jax.Array) -> jax.Array:
  """(N, K) logits of a clip model, or those of a frame model ((N, T, K) per frame, e.g. the ViT
  zoo models) averaged over the frames: one score per clip, as the classifier's loss and the
  evaluators need (the average consensus of frame-level two-stream / TSN classifiers)."""
  return jnp.mean(logits, axis=1) if logits.ndim == 3 else logits


class Task(TaskBase):
  """Plain supervised training of any zoo model; the one data source is `config.input`
  ("input"). Frame models' per-frame logits are averaged over the clip (`clip_logits`)."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    self.data_sources = {"input": ClassificationData(config.input, config.seed)}
    self.model = self.build_model()

  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
    x = self.data.preprocess(batch["video"], self.dtype)
    return dict(self.model.init({"params": rng, "dropout": rng}, x, train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    x = self.data.preprocess(batch["video"], self.dtype)
    (logits, _), new_state = self.model.apply(
        {"params": params, **model_state}, x, train=True, rngs={"dropout": rng},
        mutable=list(model_state))
    logits = clip_logits(logits)
    loss = losses.softmax_cross_entropy(logits, batch["label"], self.config.label_smoothing)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (dict(new_state), {"accuracy": accuracy})

  def predict(self, variables: Mapping[str, Any], streams: Mapping[str, jax.Array],
              source: str | None = None) -> jax.Array:
    del source   # one data source
    logits, _ = self.model.apply(variables, self.data.preprocess(streams["video"], self.dtype),
                                 train=False)
    return clip_logits(logits)


PHASES = task_lib.single_phase(Task)
