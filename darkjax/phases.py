"""A paper's run in phases: `run_phases` trains every phase a config runs
(`darkjax.task.phase_plan`), one `darkjax.train.Trainer` each in its own resumable directory, after
checking what every phase reads (weights, data, a finished phase's changed settings) before the
first step; `darkjax.main`, the notebook `Run` and `darkjax.tools.experiment` run a config through
it."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections as mlc
import numpy as np
from jax.experimental import multihost_utils

from darkjax import checkpoint as ckpt_lib
from darkjax import config as config_lib
from darkjax import fit as fit_lib
from darkjax import paths, reports, targets
from darkjax import task as task_lib
from darkjax.data import prepared
from darkjax.train import Trainer

log = logging.getLogger("darkjax")


def phase_trainers(phase: task_lib.Phase, phase_config: mlc.ConfigDict, task: Any,
                   earlier: Mapping[str, Any], directory: str,
                   **trainer_kwargs) -> Callable[[mlc.ConfigDict], Trainer]:
  """`config -> Trainer` of one phase in `directory`: `phase_config` trains `task`; a variant of
  it (a `fit` candidate: another dtype, remat, accumulation or mesh) gets its own Task."""
  def build(config: mlc.ConfigDict) -> Trainer:
    own = task if config is phase_config else phase.task(config, earlier)
    return Trainer(config, directory, task=own, phase=phase.name, ignores=phase.ignores,
                   **trainer_kwargs)
  return build


def _refuse_before_any_phase(config: mlc.ConfigDict, workdir: str,
                             plan: Sequence[task_lib.Phase], devices: Any) -> None:
  """A run in phases that a phase would refuse once its turn came (`Trainer.finished_run_refusal`:
  a finished phase whose evaluation settings change beside settings that trained it) is refused
  before the first phase runs: an earlier phase that reads only the evaluation's (a LIFT-Net
  teacher beside a change to the student's KD weight) would otherwise evaluate again with them
  first. Each phase with a checkpoint is built as its run builds it (its fit choice kept, its
  batches rounded for the mesh), from no earlier phase's weights; process 0 decides."""
  refused = None
  if jax.process_index() == 0:
    for phase in plan:
      directory = phase.workdir(workdir, config)
      if ckpt_lib.latest_listed(directory) is None:
        continue
      with task_lib.from_checkpoint():   # the config and datasets only: no teacher weights read
        phase_config, task = task_lib.build_task(phase, config)
      resumed = fit_lib.resumed_config(phase_config, directory)
      trainer = phase_trainers(phase, phase_config, task, {}, directory, devices=devices)(resumed)
      refused = trainer.finished_run_refusal()
      if refused is not None:
        break
  if jax.process_count() > 1 and bool(multihost_utils.broadcast_one_to_all(
      np.int32(refused is not None))) and refused is None:
    refused = config_lib.ConfigError("process 0 refused this run's config before its first "
                                     "phase; its log says why")
  if refused is not None:
    raise refused


def _check_weights_and_data(config: mlc.ConfigDict, plan: Sequence[task_lib.Phase]) -> None:
  """The whole command's pretrained weights, checked before anything trains; when they are
  missing, the first phase's dataset too, so that a new user hears of both at once (each is the
  user's to bring, a dataset's preparation hours)."""
  try:
    config_lib.check_required_weights(config)
  except config_lib.MissingWeightsError as missing:
    unprepared = _unprepared_dataset(config, plan[0])
    if unprepared is None:
      raise
    raise config_lib.MissingWeightsError(f"{missing}\nThe data is missing too: {unprepared}"
                                         ) from None


def _unprepared_dataset(config: mlc.ConfigDict, phase: task_lib.Phase) -> str | None:
  """What opening `phase`'s datasets says when one is not prepared (None: they open, or fail
  otherwise, which the phase's own start reports)."""
  try:
    task_lib.build_task(phase, config, {})
  except prepared.DatasetNotPreparedError as error:
    return str(error)
  except Exception:  # pylint: disable=broad-except
    return None
  return None


def append_phase_report(trainer: Trainer, phase: task_lib.Phase, config: mlc.ConfigDict,
                        results: Mapping[str, Any]) -> None:
  """Appends `phase`'s own section (`Phase.report`) to the report.md `trainer` has just written
  (once, to a fresh report.md)."""
  if phase.report is not None and trainer.reported:
    section = phase.report(config, results)
    if section:
      with (paths.resolve(trainer.workdir) / "report.md").open("a", encoding="utf-8") as f:
        f.write("\n" + section)


def run_phases(config: mlc.ConfigDict, workdir: str, devices: Any = None,
               transient_bar: bool = False, evaluate_again: bool = False) -> dict[str, Any]:
  """Trains every phase `config` runs (`darkjax.task.phase_plan`), one Trainer each in its own
  resumable directory, each phase starting from the trained variables of the earlier phases it
  names (`Phase.init_from`). Returns the deployed (last) phase's results, with the float results
  of earlier phases as `<phase>_<metric>`. A run whose deployed phase has a sub-directory gets
  WORKDIR/report.md summing up every phase. `devices`: the mesh's devices (default: all), whose
  platform fixes the config's derived fields (`config.resolve`: compute_dtype "auto").
  `evaluate_again`: the deployed phase's last step is evaluated again where this call made no
  evaluation of it (`Trainer.evaluate_again`: a notebook's `Run.evaluate` of a run in phases)."""
  platform = targets.platform_of(jax.devices() if devices is None else devices)
  config = config_lib.resolve(config, platform)
  cache = targets.use_compilation_cache(config.get("compilation_cache", ""))
  log.info("compiling for %s; compute dtype %s; compilation cache %s", platform,
           config.compute_dtype, cache or "off")
  plan = task_lib.phase_plan(config)
  _check_weights_and_data(config, plan)
  for phase in plan:   # everything any phase reads is checked before the first step
    if phase.check is not None:
      phase.check(config, phase.workdir(workdir, config))
  if len(plan) > 1:
    _refuse_before_any_phase(config, workdir, plan, devices)
  wanted = {name for phase in plan for name in phase.init_from}
  trained: dict[str, dict[str, Any]] = {}
  results: dict[str, Any] = {}
  is_lead = jax.process_index() == 0
  for number, phase in enumerate(plan, 1):
    earlier = {name: trained[name] for name in phase.init_from if name in trained}
    phase_config, task = task_lib.build_task(phase, config, earlier)   # opens the datasets
    if len(plan) > 1:
      log.info("%s phase %d/%d: %s", config.trainer, number, len(plan), phase.name)
    directory = phase.workdir(workdir, config)

    build = phase_trainers(phase, phase_config, task, earlier, directory, devices=devices,
                           transient_bar=transient_bar)
    trainer = fit_lib.fit_phase(phase_config, directory, phase.name, build)
    phase_results = trainer.run()
    if (evaluate_again and number == len(plan)
        and trainer.evaluated_step != int(trainer.config.total_steps)):
      phase_results = trainer.evaluate_again()
    append_phase_report(trainer, phase, config, phase_results)
    if phase.name in wanted:
      trained[phase.name] = trainer.host_variables()
    if number < len(plan):
      results.update({f"{phase.name}_{k}": v for k, v in phase_results.items()
                      if isinstance(v, float)})
    else:
      results.update(phase_results)
  deployed = plan[-1].workdir(workdir, config)
  if is_lead and os.path.normpath(deployed) != os.path.normpath(workdir):
    reports.write_summary(workdir, config, plan, results)
  return results
