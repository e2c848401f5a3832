"""The contract between the generic trainer (darkjax.train) and a paper
(darkjax/trainers/<name>.py).

A trainer module declares, once, `PHASES`: the sequence of `Phase`s a run of its configs trains
(one `Phase` for single-phase papers). Each phase names how its config derives from the run's
(`config`), which Task class trains it (`task`), which earlier phases' trained variables it starts
from (`init_from`), whether a config runs it at all (`when`) and where its checkpoints live
(`directory`). The last phase a config runs is the deployed one: what predict, export and the
notebook `Run` load. `darkjax.phases.run_phases` runs them for `darkjax.main`, the notebook `Run`
and every tool; `phase_plan(config)` says which run and where, without building anything.

A Task gives the Trainer its data, model, loss and inference (`Task` below). What only some papers
have is a capability, a `typing.Protocol` in darkjax/capabilities.py (`Enhances`,
`ComputesStreams`, `MapsAttention`, `MapsFusion`, `ScoresVideos`); each evaluator type names
the capability it needs (`darkjax.evaluators.REQUIRES`) and `load_task` checks them when the
Task is built, so a paper that lacks one fails at start naming it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import os
from typing import Any, Callable, Mapping, Protocol

import jax
import ml_collections as mlc

from darkjax import config as config_lib
from darkjax import evaluators as evaluators_lib
from darkjax.capabilities import (ComputesStreams, Enhances, MapsAttention, MapsFusion,
                                 ScoresVideos)
from darkjax.config import ConfigError


class Task(Protocol):
  """What a trainer module's Task gives the Trainer (darkjax/trainers/base.py has the shared part).

  Data: `data_sources` names the task's ClassificationData (the first is primary: evaluators and
  predict default to it; `data` is that one); `train_dataset(local_batch)` is a grain IterDataset
  of host batches. Model: `init_variables(rng, batch)` builds the variables from one batch's
  shapes; `init_from` turns a fresh (not resumed) state's variables into those training starts
  from (pretrained sub-modules, a teacher, a phase-1 enhancer), called only when
  `merges_pretrained`. Step: `loss_fn(params, model_state, batch, rng, progress) -> (loss,
  (model_state, metrics))` with `progress` in [0, 1]. Inference: `predict(variables, streams,
  source=None) -> logits`, where `streams["video"]` is uint8 (N, T, H, W, C) clips of `source`'s
  model stream and other keys are its extra record streams; used by the classification evaluator,
  predict and export.
  """
  config: mlc.ConfigDict
  model: Any
  data_sources: Mapping[str, Any]
  merges_pretrained: bool
  num_classes: int

  @property
  def data(self) -> Any: ...
  def train_dataset(self, local_batch: int): ...
  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict: ...
  def init_from(self, variables: dict) -> dict: ...
  def loss_fn(self, params, model_state, batch, rng, progress) -> tuple[jax.Array, tuple]: ...
  def predict(self, variables: Mapping[str, Any], streams: Mapping[str, jax.Array],
              source: str | None = None) -> jax.Array: ...


class MissingCapabilityError(ValueError):
  """A config's evaluator needs a capability the paper's Task does not have."""


def check_capabilities(task: Any, evals: Mapping[str, Mapping[str, Any]]) -> None:
  """Raises MissingCapabilityError naming every `config.evals` entry whose evaluator type needs a
  capability (a Protocol above) that `task` does not have."""
  missing = []
  for name, entry in evals.items():
    needed = evaluators_lib.REQUIRES.get(entry.get("type"))
    if needed is not None and not isinstance(task, needed):
      missing.append(f"config.evals.{name} (type {entry.get('type')!r}) needs the capability "
                     f"{needed.__name__} ({needed.__doc__.split(':')[0].strip()})")
  if missing:
    raise MissingCapabilityError(
        f"{type(task).__module__}.{type(task).__name__} lacks what the config's evaluators need: "
        + "; ".join(missing) + ". Remove those evals entries or give the Task the capability.")


# ================================================================ phases
def _always(config: mlc.ConfigDict) -> bool:
  del config
  return True


def _same(config: mlc.ConfigDict) -> mlc.ConfigDict:
  return config


@dataclasses.dataclass(frozen=True)
class Phase:
  """One phase of a paper's run.

  name: how logs, `bench --phase` and results (`<name>_<metric>` for phases before the last) call
    it. task: `task(phase_config, earlier, num_classes=None)` -> the Task, where `earlier` maps the
    names in `init_from` that ran before to their trained variables (empty when none ran, e.g. in
    `bench`: the Task then keeps its fresh variables, same cost). config: the run's config -> this
    phase's (locked). when: whether a config runs this phase. directory: the sub-directory of the
    workdir that holds its checkpoints, metrics and report ("" = the workdir itself; default: the
    name; a callable of the run's config where that depends on it). main: the paper's main
    network, what `bench --config` compiles by default (default: the deployed phase). check:
    `check(config, directory)`, run for every phase of a run before the first step (datasets,
    teacher runs), so nothing fails late. report: `report(config, results)` -> Markdown appended to
    the phase's report.md. ignores: dotted fields of the phase's config (and the fields under them)
    that its training never reads, another phase's knobs (the teacher's view of the student's KD
    weight): two runs whose phase configs differ only there, from the same earlier phases, train
    this phase alike, so the arms of an experiment share it (`darkjax.tools.arms.shared_phases`).
  """
  name: str
  task: Callable[..., Any]
  config: Callable[[mlc.ConfigDict], mlc.ConfigDict] = _same
  init_from: tuple[str, ...] = ()
  when: Callable[[mlc.ConfigDict], bool] = _always
  directory: str | Callable[[mlc.ConfigDict], str] | None = None
  main: bool = False
  check: Callable[[mlc.ConfigDict, str], None] | None = None
  report: Callable[[mlc.ConfigDict, Mapping[str, Any]], str] | None = None
  ignores: tuple[str, ...] = ()

  def workdir(self, workdir: str, config: mlc.ConfigDict) -> str:
    """Where this phase of a run of `config` in `workdir` keeps its checkpoints."""
    sub = self.directory(config) if callable(self.directory) else self.directory
    sub = self.name if sub is None else sub
    return os.path.join(workdir, sub) if sub else workdir


def single_phase(task: Callable[..., Any], **kwargs) -> tuple[Phase, ...]:
  """PHASES of a paper that trains one Task in the workdir itself."""
  return (Phase("train", lambda config, earlier, num_classes=None: task(config, num_classes),
                directory="", **kwargs),)


# ================================================================ trainer modules
def trainer_module(config: mlc.ConfigDict):
  """The module darkjax/trainers/<config.trainer>.py, or an error listing the known trainers."""
  name = config.trainer
  try:
    module = importlib.import_module(f"darkjax.trainers.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"darkjax.trainers.{name}":
      raise
    known = sorted(f[:-3] for f in os.listdir(os.path.join(os.path.dirname(__file__), "trainers"))
                   if f.endswith(".py") and not f.startswith("_") and f != "base.py")
    raise config_lib.ConfigError(f"config.trainer {name!r} unknown; known trainers: "
                                 f"{known}") from None
  phases = module.__dict__.get("PHASES")
  if not phases or not all(isinstance(p, Phase) for p in phases):
    raise TypeError(f"darkjax/trainers/{name}.py declares no PHASES (a sequence of "
                    "darkjax.task.Phase); see docs/architecture.md")
  return module


def declared_phases(config: mlc.ConfigDict) -> tuple[Phase, ...]:
  """Every phase `config.trainer` declares, whether or not `config` runs it."""
  return tuple(trainer_module(config).PHASES)


def phase_plan(config: mlc.ConfigDict) -> tuple[Phase, ...]:
  """The phases a run of `config` trains, in order; the last is the deployed one."""
  plan = tuple(p for p in declared_phases(config) if p.when(config))
  if not plan:
    raise ConfigError(f"config.trainer {config.trainer!r}: no phase runs for this config")
  return plan


def deployed_phase(config: mlc.ConfigDict) -> Phase:
  """The phase that holds the deployed model (what predict, export and Run load)."""
  return phase_plan(config)[-1]


def deployed_workdir(config: mlc.ConfigDict, workdir: str) -> str:
  """The directory whose checkpoints hold the deployed model of a run in `workdir`."""
  return deployed_phase(config).workdir(workdir, config)


def main_phase(config: mlc.ConfigDict) -> Phase:
  """The paper's main network (`Phase.main`; else the deployed phase) among the declared ones."""
  return next((p for p in declared_phases(config) if p.main), None) or deployed_phase(config)


def find_phase(config: mlc.ConfigDict, name: str) -> Phase:
  """The declared phase `name`, or an error listing the trainer's phases."""
  phases = declared_phases(config)
  for phase in phases:
    if phase.name == name:
      return phase
  raise ValueError(f"trainer {config.trainer!r} has phases {[p.name for p in phases]}, "
                   f"not {name!r}")


def build_task(phase: Phase, config: mlc.ConfigDict, earlier: Mapping[str, Any] | None = None,
               num_classes: int | None = None) -> tuple[mlc.ConfigDict, Any]:
  """(phase config, its Task) for the run config `config`, capabilities checked."""
  phase_config = phase.config(config)
  task = phase.task(phase_config, dict(earlier or {}), num_classes=num_classes)
  check_capabilities(task, phase_config.evals)
  return phase_config, task


_FROM_CHECKPOINT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "darkjax_task_from_checkpoint", default=False)


@contextlib.contextmanager
def from_checkpoint():
  """Tasks built inside get their variables from a checkpoint of the trained run (a notebook's
  inspection of it): no earlier phase's weights are missing, none are read (a student's teacher
  is in its checkpoint). `predict` and `export` say so by giving the class count."""
  token = _FROM_CHECKPOINT.set(True)
  try:
    yield
  finally:
    _FROM_CHECKPOINT.reset(token)


def trains_from_earlier(num_classes: int | None) -> bool:
  """Whether a Task being built wants its earlier phases' weights (False for inference: a class
  count given, or inside `from_checkpoint`)."""
  return num_classes is None and not _FROM_CHECKPOINT.get()


def load_task(config: mlc.ConfigDict, num_classes: int | None = None,
              phase: str | None = None) -> Any:
  """The Task of `phase` (default: the deployed phase) of `config`, without earlier phases'
  weights (`num_classes`: without opening the dataset, for inference)."""
  chosen = find_phase(config, phase) if phase else deployed_phase(config)
  return build_task(chosen, config, num_classes=num_classes)[1]


__all__ = ["ComputesStreams", "Enhances", "MapsAttention", "MapsFusion", "MissingCapabilityError",
           "Phase", "ScoresVideos", "Task", "build_task", "check_capabilities", "declared_phases",
           "deployed_phase", "deployed_workdir", "find_phase", "load_task", "main_phase",
           "phase_plan",
           "single_phase", "trainer_module"]
