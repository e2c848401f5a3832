"""Clip classification over a whole split: top-1 / top-5 / mean class accuracy, per-class accuracy
and a confusion matrix, exact on any number of hosts (every example counted once).

`config.evals.<name> = common.classification_eval(data="", split="")`: `data` names one of the
task's `data_sources` (default: its first), `split` one of that dataset's splits (default: its
`eval_split`). Each example's eval views (`input.eval_clips` x `input.eval_crops`) are scored by
`task.predict` and their softmax probabilities averaged. The views go through the model one
at a time, each for every example of the batch (`view_probabilities`): an evaluation's
activations are those of `input.eval_batch_size` clips however many views a video has (all at
once, a multi-view LIFT-Net evaluation did not fit an H100: docs/benchmarks.md, "Evaluations
against the device's memory").
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from darkjax import plots, sharding
from darkjax.evaluators.base import EvalResult, TrainerView, compile_at_eval_batch, first
from darkjax.config import ConfigError

_HOST_FIELDS = ("label", "mask", "index")
log = logging.getLogger(__name__)


def _device_batch(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """An eval batch as the eval step takes it: the example index as int32 (jax's default integer
  width; an index stays far below 2**31)."""
  return {k: (np.asarray(v, np.int32) if k == "index" else v) for k, v in batch.items()}


def accumulate(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, index: np.ndarray,
               store: dict[int, tuple[np.ndarray, int]]) -> None:
  """Adds the real (mask == 1) rows of a batch to `store` keyed by example index."""
  for row in np.nonzero(mask > 0)[0]:
    key = int(index[row])
    if key in store:
      raise RuntimeError(f"eval example {key} seen twice: the eval pipeline is not exact")
    store[key] = (np.asarray(scores[row], np.float32), int(labels[row]))


def metrics(store: dict[int, tuple[np.ndarray, int]], num_classes: int,
            expected_examples: int | None = None) -> dict[str, object]:
  """top1/top5/mean per-class accuracy, plus `per_class` and `confusion` arrays."""
  if expected_examples is not None and len(store) != expected_examples:
    raise RuntimeError(f"eval saw {len(store)} examples, the manifest lists {expected_examples}")
  if not store:
    raise RuntimeError("eval saw no examples")
  keys = sorted(store)
  scores = np.stack([store[k][0] for k in keys])
  labels = np.array([store[k][1] for k in keys])
  # An example scored NaN / inf (an overflow in evaluation) is wrong, not the class its NaNs sort
  # to; the confusion matrix leaves it out.
  finite = np.all(np.isfinite(scores), axis=1)
  if not finite.all():
    log.warning("eval: %d of %d examples scored NaN or inf: counted as misclassified",
                int(np.sum(~finite)), len(keys))
  order = np.argsort(-np.where(finite[:, None], scores, 0.0), axis=1)
  top1 = float(np.mean((order[:, 0] == labels) & finite))
  k = min(5, num_classes)
  top5 = float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1) & finite))
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels[finite], order[finite, 0]), 1)
  support = np.bincount(labels, minlength=num_classes)   # every example, scored finite or not
  per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
  return {"top1": top1, "top5": top5, "mean_class_acc": float(np.nanmean(per_class)),
          "per_class": per_class, "confusion": confusion, "support": support,
          "num_examples": len(keys)}


def source_name(task: Any, data: str) -> str:
  """`data`, checked against the task's data sources; "" -> the first."""
  names = list(task.data_sources)
  if not data:
    return names[0]
  if data not in names:
    raise ConfigError(f"config.evals: data {data!r} unknown for {type(task).__module__}; "
                      f"its data sources: {names}")
  return data


def view_probabilities(predict: Any, fields: Mapping[str, jax.Array]) -> jax.Array:
  """(B, classes) softmax probabilities averaged over the views of (B, V, ...) `fields`, each view
  scored by `predict` ({name: (B, ...)} -> (B, classes) logits) for all B examples at once, one view
  after the other (`jax.lax.map` over V: the memory of one view's forward, not V's)."""
  views = next(iter(fields.values())).shape[1]

  def probabilities(index):
    view = {k: jax.lax.dynamic_index_in_dim(x, index, axis=1, keepdims=False)
            for k, x in fields.items()}
    return jax.nn.softmax(predict(view).astype(jnp.float32), axis=-1)

  if views == 1:
    return probabilities(0)
  return jnp.mean(jax.lax.map(probabilities, jnp.arange(views)), axis=0)


def stream_note(cfg: Mapping[str, Any]) -> str:
  """" (<stream> frames)" of a data source's input config naming its video stream ("" if none)."""
  stream = cfg.get("stream", "")
  return f" ({stream} frames)" if stream else ""


class ClassificationEvaluator:
  """Scores every example of a split with `task.predict(variables, streams, source)`."""

  def __init__(self, name: str, task: Any, trainer: TrainerView, data: str = "", split: str = ""):
    self.name, self.task, self.trainer = name, task, trainer
    self.source = source_name(task, data)
    self.data = task.data_sources[self.source]
    self.split = split or self.data.cfg.data.eval_split
    if split:   # a split of its own: checked now, not at the first evaluation
      self.data.dataset.check_splits(split, field=f"config.evals.{name}.split")

    def eval_step(variables, batch):
      fields = {k: x for k, x in batch.items() if k not in _HOST_FIELDS}
      probabilities = view_probabilities(
          lambda view: task.predict(variables, view, self.source), fields)
      # Each row's label, mask and index come back beside its scores, gathered in the global
      # array's row order: on several hosts that order follows the mesh's devices, which need not
      # be the hosts' order (a TPU pod's mesh follows its topology).
      return probabilities, {k: batch[k] for k in _HOST_FIELDS}

    self._step = jax.jit(eval_step,
                         in_shardings=(trainer.variables_shardings, trainer.batch_sharding),
                         out_shardings=trainer.replicated,
                         compiler_options=trainer.compiler_options)

  def compile(self, variables: Mapping[str, Any]) -> int | None:
    """Compiles the eval step for abstract `variables` (the train state's shapes and shardings)
    and the batches `run` feeds it, ahead of the first `run` (which reuses the compilation);
    returns the bytes one device holds while it runs (None: not known, or a split without
    examples)."""
    example = first(self.data.eval_batches(1, self.split))   # one example: the views' shapes
    if example is None:
      return None
    return compile_at_eval_batch(self._step, variables, _device_batch(example), self.trainer)

  def run(self, variables: Mapping[str, Any], step: int) -> EvalResult:
    trainer, dataset = self.trainer, self.data.dataset
    local = trainer.local_batch(trainer.config.input.eval_batch_size)
    store: dict[int, tuple[np.ndarray, int]] = {}
    for batch in self.data.eval_batches(local, self.split):
      scores, host = jax.device_get(self._step(
          variables, sharding.host_to_global(_device_batch(batch), trainer.batch_sharding)))
      accumulate(np.asarray(scores), host["label"], host["mask"], host["index"], store)
    result = metrics(store, dataset.num_classes, dataset.num_examples(self.split))
    scalars = {f"{self.name}/{k}": result[k]
               for k in ("top1", "top5", "mean_class_acc", "num_examples")}
    for class_name, accuracy in zip(dataset.class_names, result["per_class"]):
      if np.isfinite(accuracy):
        scalars[f"{self.name}_per_class/{class_name}"] = float(accuracy)
    figures = {}
    if trainer.is_lead:
      unscored = int(result["support"].sum() - result["confusion"].sum())
      figures[f"{self.name}_confusion"] = plots.confusion(
          result["confusion"], dataset.class_names,
          # which model, evaluator and stream: a run's teacher and student, or 3D-DiNet's
          # target and source evaluations, are told apart
          title=(f"{trainer.config.model.name}, {self.name}: {dataset.name} {self.split}"
                 f"{stream_note(self.data.cfg)} @ step {step}: top-1 {result['top1']:.1%}"
                 + (f" ({unscored} scored NaN: wrong)" if unscored else "")),
          support=result["support"])
    return EvalResult(scalars, figures, {f"{self.name}/confusion": result["confusion"]})
