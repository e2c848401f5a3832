"""What every evaluator returns, and what it may ask of the Trainer that runs it."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol

import numpy as np


@dataclasses.dataclass
class EvalResult:
  """scalars: `name/metric` -> value (metrics.jsonl, TensorBoard, report.md); figures: file stem
  -> matplotlib figure (made on the lead process only; the Trainer saves `<stem>.png` in the
  workdir and adds it to TensorBoard); arrays: anything else a caller may want (confusion matrix,
  per-video scores)."""
  scalars: dict[str, float] = dataclasses.field(default_factory=dict)
  figures: dict[str, Any] = dataclasses.field(default_factory=dict)
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class Evaluator(Protocol):
  """Built once per Trainer from one `config.evals` entry: `Cls(name, task, trainer, **options)`;
  owns its jitted functions. One may also have `compile(abstract_variables) -> bytes | None`:
  its device programs compiled ahead for the batches `run` will feed them, returning what one
  device holds while they run (`Trainer.compile_evals`, darkjax.fit's check before training)."""
  name: str

  def run(self, variables: Mapping[str, Any], step: int) -> EvalResult: ...


class TrainerView(Protocol):
  """The parts of darkjax.train.Trainer an evaluator uses."""
  config: Any
  is_lead: bool
  batch_sharding: Any
  replicated: Any
  variables_shardings: Any
  compiler_options: dict[str, Any]   # XLA options of every compiled step (config.xla_opt_level)

  def local_batch(self, global_batch: int) -> int: ...
