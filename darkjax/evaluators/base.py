"""What every evaluator returns, and what it may ask of the Trainer that runs it."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Protocol

import jax
import numpy as np

from darkjax import fit as fit_lib


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


def first(items: Iterator[Any]) -> Any:
  """The first item of a generator (None: it yields none), the generator closed after it."""
  try:
    return next(items, None)
  finally:
    items.close()


def compile_at_eval_batch(step: Any, variables: Mapping[str, Any],
                          example: Mapping[str, np.ndarray], trainer: TrainerView) -> int | None:
  """Compiles jitted `step(variables, batch)` for batches of `input.eval_batch_size` rows shaped
  as `example`'s (its arrays' first axis the rows), laid out as `trainer.batch_sharding`; returns
  the bytes one device holds while it runs (None: not known). An evaluator's `compile`."""
  rows = int(trainer.config.input.eval_batch_size)
  batch = {k: jax.ShapeDtypeStruct((rows,) + v.shape[1:], v.dtype, sharding=trainer.batch_sharding)
           for k, v in example.items()}
  return fit_lib.step_bytes(step.lower(variables, batch).compile())
