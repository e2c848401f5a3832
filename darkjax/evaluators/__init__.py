"""Evaluators: objects built from `config.evals` that own their jitted functions and return
scalars and figures (`EvalResult`); the Trainer writes them.

  classification   top-1 / top-5 / mean class accuracy, per-class accuracy, confusion matrix
  enhancement      input vs enhanced frames (tasks with `enhance`: DTCM)
  attention_maps   PViT and fusion attention (tasks with `attention_maps`: LIFT-Net)
  twostream_video  whole-video softmax / kNN-code scores and stream fusions (two-stream C3D)
  fusion_maps      Retinex frames and DFF weights (tasks with `fusion_maps`: ActLumos)
"""

from __future__ import annotations

from typing import Any, Mapping

from darkjax import capabilities
from darkjax import config as config_lib
from darkjax.evaluators.base import EvalResult, Evaluator, TrainerView
from darkjax.evaluators.classification import ClassificationEvaluator
from darkjax.evaluators.clip_figures import (AttentionMapsEvaluator, EnhancementEvaluator,
                                             FusionMapsEvaluator)
from darkjax.evaluators.twostream_video import VideoEvaluator

TYPES = {
    "classification": ClassificationEvaluator,
    "enhancement": EnhancementEvaluator,
    "attention_maps": AttentionMapsEvaluator,
    "twostream_video": VideoEvaluator,
    "fusion_maps": FusionMapsEvaluator,
}

# The Task capability (darkjax/capabilities.py) each evaluator type needs; checked when the Task is
# built (darkjax.task.check_capabilities).
REQUIRES = {
    "enhancement": capabilities.Enhances,
    "attention_maps": capabilities.MapsAttention,
    "twostream_video": capabilities.ScoresVideos,
    "fusion_maps": capabilities.MapsFusion,
}

__all__ = ["EvalResult", "Evaluator", "REQUIRES", "TYPES", "build"]


def build(evals_cfg: Mapping[str, Mapping[str, Any]], task: Any,
          trainer: TrainerView) -> dict[str, Evaluator]:
  """One evaluator per `config.evals` entry, in order; errors name the entry."""
  out = {}
  for name, entry in evals_cfg.items():
    options = dict(entry)
    kind = options.pop("type", None)
    if kind not in TYPES:
      raise config_lib.ConfigError(f"config.evals.{name}.type {kind!r} unknown; valid: "
                                   f"{sorted(TYPES)}")
    if kind in REQUIRES and not isinstance(task, REQUIRES[kind]):
      raise config_lib.ConfigError(f"config.evals.{name}: evaluator type {kind!r} needs a task "
                                   f"with the capability {REQUIRES[kind].__name__}; "
                                   f"{type(task).__module__}.{type(task).__name__} has none")
    try:
      out[name] = TYPES[kind](name, task, trainer, **options)
    except TypeError as error:
      raise config_lib.ConfigError(f"config.evals.{name} ({kind}): {error}") from None
  return out
