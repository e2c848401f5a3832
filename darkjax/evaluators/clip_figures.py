"""Evaluators that draw what a person would rather look at than read: DTCM's enhanced frames and
LIFT-Net's attention maps, both on the first test clips of a data source.

  config.evals.enhancement = common.enhancement_eval(clips=3)   # capability Enhances
  config.evals.attention = common.attention_eval(clips=4)       # capability MapsAttention

They run on the lead process only (figures are written by one process).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from darkjax import capabilities, plots
from darkjax.evaluators.base import EvalResult, TrainerView
from darkjax.evaluators.classification import source_name

_HOST_FIELDS = ("label", "mask", "index")


def first_test_examples(data: Any, count: int, split: str = "") -> dict[str, np.ndarray]:
  """The first view of the first `count` real examples of `data`'s `split` (default: its eval
  split), every stream plus `label` and `index`."""
  for batch in data.eval_batches(max(count, 1), split or None):
    keep = np.asarray(batch["mask"]).astype(bool)
    out = {k: np.asarray(v)[:, 0][keep][:count] for k, v in batch.items()
           if k not in _HOST_FIELDS}
    out.update({k: np.asarray(batch[k])[keep][:count] for k in ("label", "index")})
    return out
  raise ValueError(f"dataset {data.dataset.name}: its {split or 'eval'} split is empty")


class EnhancementEvaluator:
  """`<name>.png`: input frames, enhanced frames and the RGB differences of adjacent frames before
  and after enhancement (DTCM Figs. 1, 6)."""

  def __init__(self, name: str, task: Any, trainer: TrainerView, clips: int = 3, data: str = "",
               file: str = "dtcm_enhancement"):
    self.name, self.task, self.trainer, self.clips, self.file = name, task, trainer, clips, file
    self.data = task.data_sources[source_name(task, data)]
    self._enhance = jax.jit(task.enhance, compiler_options=trainer.compiler_options)

  def run(self, variables: Mapping[str, Any], step: int) -> EvalResult:
    if not self.clips or not self.trainer.is_lead:
      return EvalResult()
    clips = first_test_examples(self.data, self.clips)["video"]
    enhanced = np.asarray(self._enhance(jax.device_get(dict(variables)), clips))
    title = (f"{self.task.title}: input and enhanced frames of {len(clips)} test clips "
             f"@ step {step}")
    return EvalResult(figures={self.file: plots.enhancement_grid(
        clips.astype(np.float32) / 255.0, enhanced, title=title)})


class _ClipMapsEvaluator:
  """One figure per first test clip, from the task's maps function (`_maps_fn(task)`:
  `(variables, streams) -> maps` with per-clip `logits`), compiled once."""

  def __init__(self, name: str, task: Any, trainer: TrainerView, clips: int = 4, data: str = ""):
    self.name, self.task, self.trainer, self.clips = name, task, trainer, clips
    self.data = task.data_sources[source_name(task, data)]
    self._maps = jax.jit(self._maps_fn(task), compiler_options=trainer.compiler_options)

  @staticmethod
  def _maps_fn(task: Any):
    raise NotImplementedError

  def run(self, variables: Mapping[str, Any], step: int) -> EvalResult:
    """The maps of the first test clips, drawn by `_result` (nothing off the lead process)."""
    if not self.clips or not self.trainer.is_lead:
      return EvalResult()
    examples = first_test_examples(self.data, self.clips)
    streams = {k: v for k, v in examples.items() if k not in ("label", "index")}
    maps = jax.device_get(self._maps(jax.device_get(dict(variables)), streams))
    return self._result(examples, maps, step)

  def _result(self, examples: dict[str, np.ndarray], maps: dict[str, Any],
              step: int) -> EvalResult:
    raise NotImplementedError

  def _title(self, examples: dict[str, np.ndarray], maps: dict[str, Any], i: int,
             step: int) -> str:
    names = self.data.dataset.class_names
    return (f"test clip {int(examples['index'][i])}: true {names[int(examples['label'][i])]}, "
            f"predicted {names[int(np.argmax(maps['logits'][i]))]} (step {step})")


class AttentionMapsEvaluator(_ClipMapsEvaluator):
  """`attention_<i>.png` per test clip: dark frames, luminous frames under the PViT's class-token
  attention, and the fusion's attention over the frames (LIFT-Net Fig. 5)."""

  @staticmethod
  def _maps_fn(task: capabilities.MapsAttention):
    return task.attention_maps

  def _result(self, examples: dict[str, np.ndarray], maps: dict[str, Any],
              step: int) -> EvalResult:
    figures = {}
    for i in range(len(examples["label"])):
      heat = maps["heat"][i] / max(float(maps["heat"][i].max()), 1e-9)
      figures[f"attention_{i:02d}"] = plots.attention_maps(
          examples["video"][i], np.asarray(maps["luminous"][i]), heat, maps["frame_weights"][i],
          self._title(examples, maps, i, step))
    return EvalResult(figures=figures)


class FusionMapsEvaluator(_ClipMapsEvaluator):
  """`fusion_<i>.png` per test clip: dark frames, their Retinex frames and the DFF weight of the
  Retinex stream over the frames (ActLumos; tasks with `fusion_maps`)."""

  @staticmethod
  def _maps_fn(task: capabilities.MapsFusion):
    return task.fusion_maps

  def _result(self, examples: dict[str, np.ndarray], maps: dict[str, Any],
              step: int) -> EvalResult:
    figures, means = {}, []
    for i in range(len(examples["label"])):
      w_ret = np.asarray(maps["w_ret"][i]) if "w_ret" in maps else None
      if w_ret is not None:
        means.append(float(w_ret.mean()))
      title = self._title(examples, maps, i, step) + (
          f", mean W_ret {means[-1]:.2f}" if w_ret is not None else "")
      figures[f"fusion_{i:02d}"] = plots.fusion_maps(examples["video"][i],
                                                     np.asarray(maps["retinex"][i]), w_ret, title)
    scalars = {f"{self.name}/mean_w_ret": float(np.mean(means))} if means else {}
    return EvalResult(scalars=scalars, figures=figures)
