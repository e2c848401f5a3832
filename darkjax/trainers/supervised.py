"""Supervised action classification: clips -> model -> softmax cross-entropy.

The other trainers reuse `ClassificationData` (dataset + pipelines) and `evaluate_classifier`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from jax.experimental import multihost_utils

from darkjax import models
from darkjax.data import datasets, normalise, ops, pipeline
from darkjax.evaluators import classification


class ClassificationData:
  """The configured dataset, its clip spec and the train / eval pipelines over it."""

  def __init__(self, input_cfg: mlc.ConfigDict, seed: int):
    self.cfg = input_cfg
    self.seed = seed
    self.dataset = datasets.open_dataset(input_cfg.data)
    self.spec = ops.ClipSpec.from_config(input_cfg)
    self.streams = tuple(input_cfg.streams)
    self.video_stream = input_cfg.get("stream", "video")   # the record stream the model sees

  def train_dataset(self, local_batch: int, split: str | None = None):
    cfg = self.cfg
    return pipeline.train_dataset(
        self.dataset.files(split or cfg.data.split), self.spec, local_batch, seed=self.seed,
        shuffle_window=cfg.shuffle_window, cycle_length=cfg.cycle_length, prefetch=cfg.prefetch,
        streams=self.streams, video_stream=self.video_stream,
        frame_shapes=self.dataset.frame_shapes())

  def eval_batches(self, local_batch: int, split: str | None = None):
    return pipeline.eval_batches(self.dataset.files(split or self.cfg.data.eval_split), self.spec,
                                 local_batch, streams=self.streams,
                                 video_stream=self.video_stream,
                                 frame_shapes=self.dataset.frame_shapes())

  def preprocess(self, clip_uint8: jax.Array, dtype=jnp.float32) -> jax.Array:
    if self.cfg.gamma:
      clip_uint8 = normalise.gamma_correct(clip_uint8, self.cfg.gamma)
    return normalise.normalise(clip_uint8, self.cfg.normalise, dtype)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing) \
      if label_smoothing else jax.nn.one_hot(labels, num_classes)
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def evaluate_classifier(trainer, predict: Callable, data: ClassificationData, step: int,
                        split: str | None = None, tag: str = "eval") -> dict[str, Any]:
  """Runs `predict(params_and_state, views) -> class scores` over a whole split on all hosts.

  `views` is (B, V, T, H, W, C) uint8; scores are averaged over the V views. Writes `tag/top1`,
  `tag/top5`, `tag/mean_class_acc` and per-class accuracies to the metrics, and a confusion matrix
  PNG to WORKDIR/<tag>_confusion.png.
  """
  cfg = trainer.config
  split = split or data.cfg.data.eval_split
  local = trainer.local_batch(cfg.input.eval_batch_size)

  def eval_step(state, batch):
    views = batch["video"]
    b, v = views.shape[:2]
    scores = predict(state, views.reshape((b * v,) + views.shape[2:]),
                     {k: x.reshape((b * v,) + x.shape[2:]) for k, x in batch.items()
                      if k not in ("video", "label", "mask", "index")})
    return jnp.mean(jax.nn.softmax(scores.reshape(b, v, -1), axis=-1), axis=1)

  if not hasattr(trainer, "_eval_steps"):
    trainer._eval_steps = {}  # pylint: disable=protected-access
  key = (tag, split)
  if key not in trainer._eval_steps:  # pylint: disable=protected-access
    trainer._eval_steps[key] = jax.jit(  # pylint: disable=protected-access
        eval_step, in_shardings=(trainer.state_shardings, trainer.batch_sharding),
        out_shardings=trainer.replicated)
  step_fn = trainer._eval_steps[key]  # pylint: disable=protected-access
  store: dict[int, tuple[np.ndarray, int]] = {}
  for batch in data.eval_batches(local, split):
    scores = step_fn(trainer.state, pipeline_to_global(trainer, batch))
    host = multihost_utils.process_allgather(
        {"label": batch["label"], "mask": batch["mask"], "index": batch["index"]}, tiled=True)
    classification.accumulate(np.asarray(scores), host["label"], host["mask"], host["index"], store)
  result = classification.metrics(store, data.dataset.num_classes, data.dataset.num_examples(split))
  scalars = {f"{tag}/top1": result["top1"], f"{tag}/top5": result["top5"],
             f"{tag}/mean_class_acc": result["mean_class_acc"]}
  for name, acc in zip(data.dataset.class_names, result["per_class"]):
    if np.isfinite(acc):
      scalars[f"{tag}_per_class/{name}"] = float(acc)
  trainer.writer.write(step, scalars)
  if trainer.is_lead:
    path = classification.plot_confusion(
        result["confusion"], data.dataset.class_names,
        os.path.join(trainer.workdir, f"{tag}_confusion.png"),
        title=f"{data.dataset.name} {split} @ step {step}: top-1 {result['top1']:.1%}")
    trainer.writer.image(f"{tag}/confusion", step, path)
  return {**scalars, "confusion": result["confusion"], "num_examples": result["num_examples"]}


def pipeline_to_global(trainer, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  from darkjax.train import host_to_global  # pylint: disable=import-outside-toplevel
  return host_to_global({k: v for k, v in batch.items() if k != "index"}, trainer.batch_sharding)


class Task:
  """Plain supervised training of any zoo model."""

  def __init__(self, config: mlc.ConfigDict):
    self.config = config
    self.data = ClassificationData(config.input, config.seed)
    self.dtype = jnp.dtype(config.get("compute_dtype", "float32"))
    self.model = models.build(config.model.name, num_classes=self.data.dataset.num_classes,
                              dtype=self.dtype, **dict(config.model.get("kwargs", {})))

  def train_dataset(self, local_batch: int):
    return self.data.train_dataset(local_batch)

  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
    x = self.data.preprocess(batch["video"], self.dtype)
    return dict(self.model.init({"params": rng, "dropout": rng}, x, train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    x = self.data.preprocess(batch["video"], self.dtype)
    (logits, _), new_state = self.model.apply(
        {"params": params, **model_state}, x, train=True, rngs={"dropout": rng},
        mutable=list(model_state))
    loss = cross_entropy(logits, batch["label"], self.config.get("label_smoothing", 0.0))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (dict(new_state), {"accuracy": accuracy})

  def predict(self, state, views: jax.Array, extra: Mapping[str, jax.Array]) -> jax.Array:
    del extra
    logits, _ = self.model.apply({"params": state.params, **state.model_state},
                                 self.data.preprocess(views, self.dtype), train=False)
    return logits

  def evaluate(self, trainer, step: int) -> dict[str, Any]:
    return evaluate_classifier(trainer, self.predict, self.data, step)
