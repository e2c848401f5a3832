"""Runs from Python (notebooks, ablation scripts) on the command line's code path.

  from darkjax import notebook
  run = notebook.Run.from_file("configs/dtcm_synthetic.py", "runlocal", workdir="/tmp/dtcm",
                          overrides={"optimizer.lr": 3e-3, "dtcm.alpha": 0.0})
  run.train(steps=2)      # to step 2: {"eval/top1": ..., ...} of the evaluation at step 2
  run.train()             # on to config.total_steps, from the step-2 checkpoint
  run.evaluate()          # the config's evaluators on the live variables (deployed phase's)
  run.history()           # WORKDIR/metrics.jsonl rows as dicts
  run.train_step, run.predict_fn, run.variables   # the jitted step / inference, for inspection

A Run keeps the config it was made with: to change a setting, make a new Run with `overrides`
(changing `run.config` afterwards is refused, naming the change).

A `Run` wraps the same `darkjax.train.Trainer` that `python -m darkjax.main` runs (through
`darkjax.phases.run_phases`), so a run started here resumes on the command line and the other way
round. Runs in phases (LIFT-Net's teacher then student, DTCM two-stage or with a pretrained
enhancer, ActLumos) are run by `run_phases` over the paper's declared PHASES: `train()` then runs
every phase to the end, and the variables, `predict_fn` and `history()` are those of the deployed
phase (`inference_workdir`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import ml_collections as mlc
import numpy as np

from darkjax import capabilities
from darkjax import config as config_lib
from darkjax import metrics as metrics_lib
from darkjax import paths
from darkjax import targets
from darkjax import task as task_lib
from darkjax import phases, train
from darkjax.convert import io as convert_io

log = logging.getLogger("darkjax")


def plain(results: Mapping[str, Any]) -> dict[str, Any]:
  """Evaluation results as Python floats (numeric scalars), Python strings (named choices such as
  the two-stream evaluator's `video/headline`) and numpy arrays (confusion matrices, ...)."""
  out: dict[str, Any] = {}
  for key, value in results.items():
    array = np.asarray(jax.device_get(value))
    if array.ndim:
      out[key] = array
    elif array.dtype.kind in "biuf":
      out[key] = float(array)
    else:
      out[key] = array.item()
  return out


class Run:
  """One training run: `config` (locked, with `overrides` applied) in `workdir`; `devices` for the
  mesh of a one-phase run (default: all)."""

  def __init__(self, config: mlc.ConfigDict, workdir: str,
               overrides: Mapping[str, Any] | None = None, devices=None):
    config = config_lib.validate(config_lib.apply_overrides(config, overrides))
    # Derived fields (compute_dtype "auto") fixed for the devices' platform, as run_phases does.
    self.config = config_lib.resolve(
        config, targets.platform_of(jax.devices() if devices is None else devices))
    targets.use_compilation_cache(self.config.get("compilation_cache", ""))
    self.workdir = workdir
    self.devices = devices
    plan = task_lib.phase_plan(self.config)
    # A run of several phases is run by phases.run_phases; one phase is one Trainer kept here, so
    # its step compiles once across train() / evaluate() calls.
    self.phased = len(plan) > 1
    self._phase = plan[-1]
    self._trainer: train.Trainer | None = None
    self._task = None
    self._predict_fn = None
    self._made_with = config_lib.flat(self.config)   # what `_check_config` compares with

  def _check_config(self) -> None:
    """Refuses a `run.config` changed since the Run was made: the Trainer, the phases and the
    Task were fixed by the config it was made with, so the change would be ignored."""
    changed = config_lib.differences(self._made_with, config_lib.flat(self.config))
    if changed:
      overrides = {key: now for key, (_, now) in changed.items()}
      raise ValueError(f"Run.config changed after this Run was made ({', '.join(changed)}): a "
                       "Run trains with the config it was made with; make a new Run with "
                       f"overrides={overrides!r}")

  @classmethod
  def from_file(cls, path: str, arg: str | None = None, *, workdir: str,
                overrides: Mapping[str, Any] | None = None, devices=None) -> "Run":
    """The run of config file `path` with arg string `arg` (`"runlocal,setting=two_stage"`)."""
    return cls(config_lib.load(path, arg), workdir, overrides, devices)

  # ---------------------------------------------------------------- training
  @property
  def trainer(self) -> train.Trainer:
    """The Trainer of a one-phase run (built on first use, kept so its step compiles once)."""
    if self.phased:
      raise ValueError(f"trainer {self.config.trainer!r} trains this config in phases "
                       f"{[p.name for p in task_lib.phase_plan(self.config)]}: trainer and "
                       "train_step are a one-phase run's; Run.train() runs all phases and "
                       "returns the deployed one's final evaluation, Run.evaluate() evaluates "
                       "it again, Run.variables / predict_fn are the deployed model's")
    self._check_config()
    if self._trainer is None:
      phase_config, task = task_lib.build_task(self._phase, self.config)
      self._trainer = train.Trainer(phase_config, self.inference_workdir, task=task,
                                    devices=self.devices)
    return self._trainer

  def train(self, steps: int | None = None) -> dict[str, Any]:
    """Trains to step `steps` (default `config.total_steps`) from the workdir's latest checkpoint
    and returns the evaluation at that step (of the checkpoint, if it is there already). A step
    beyond `config.total_steps` is refused; one before the workdir's latest checkpoint returns
    that checkpoint's evaluation, said in a warning (a notebook's cells run again)."""
    self._check_config()
    if self.phased:
      if steps is not None and steps != int(self.config.total_steps):
        plan = task_lib.phase_plan(self.config)
        now = ", ".join(f"{p.name} {p.config(self.config).total_steps}" for p in plan)
        raise ValueError(f"Run.train(steps={steps}): trainer {self.config.trainer!r} runs its "
                         f"phases to their ends (steps now: {now}); set each phase's steps "
                         "through the config file's args (e.g. Run.from_file(path, "
                         "'runlocal,steps=N'): its docstring lists them) or overrides of the "
                         "keys each phase reads")
      return plain(phases.run_phases(self.config, self.workdir, self.devices))
    total, latest = int(self.config.total_steps), self._checkpointed_step()
    if steps is not None and steps > total:
      raise ValueError(f"Run.train(steps={steps}): beyond config.total_steps={total} (the "
                       "learning-rate schedule's end); make a Run with "
                       f"overrides={{'total_steps': {steps}}} to train further")
    if steps is not None and steps < latest:
      log.warning("Run.train(steps=%d): %s is trained to step %d already: its evaluation at step "
                  "%d follows (a new workdir trains from the start)", steps,
                  self.inference_workdir, latest, latest)
    before = self.step
    results = plain(self.trainer.run(until=steps))
    if self.step == before and before and self.trainer.evaluated_step != before:
      return self.evaluate()   # already trained that far: evaluate what is there
    return results

  @property
  def step(self) -> int:
    """The step of the live state, else of the latest checkpoint (0 if none)."""
    if self._trainer is not None and self._trainer.state is not None:
      return int(jax.device_get(self._trainer.state.step))
    return self._checkpointed_step()

  def _checkpointed_step(self) -> int:
    """The deployed phase's latest checkpoint step (0 if none)."""
    directory = os.path.join(self.inference_workdir, "checkpoints")   # orbax: checkpoints/<step>/
    steps = [int(d) for d in (os.listdir(directory) if os.path.isdir(directory) else ())
             if d.isdigit()]
    return max(steps, default=0)

  def evaluate(self) -> dict[str, Any]:
    """Runs the config's evaluators (`config.evals`) on the latest state of the deployed model
    and returns their results: of a one-phase run, the live state, or the workdir's latest
    checkpoint where this Run has not trained or another run (e.g. the command line) has trained
    on since; of a run in phases, its deployed phase once trained to its end (with the earlier
    phases' final results as `<phase>_<metric>`, as `train()`). The step's earlier evaluation is
    replaced in metrics.jsonl, and kept in `earlier_evaluations.jsonl` where this Run's evaluation
    settings (the split, the views, `config.evals`) differ from those it was made with."""
    if self.phased:
      self._check_config()
      deployed = task_lib.phase_plan(self.config)[-1]
      total, latest = int(deployed.config(self.config).total_steps), self._checkpointed_step()
      if latest < total:
        raise ValueError(f"{self.inference_workdir} (phase {deployed.name}, the deployed model) is "
                         f"trained to step {latest} of {total}: Run.evaluate() of a run in "
                         "phases evaluates the deployed phase once trained; Run.train() first")
      return plain(phases.run_phases(self.config, self.workdir, self.devices,
                                     evaluate_again=True))
    trainer = self.trainer
    latest = self._checkpointed_step()
    if trainer.state is None or latest > self.step:
      if not latest:
        raise ValueError(f"{self.workdir} has no checkpoint to evaluate; call Run.train() first")
      results = trainer.run(until=latest)   # builds and restores the latest; trains no step
      if trainer.evaluated_step == latest:   # evaluated it (with this Run's settings) just now
        return plain(results)
    results = trainer.evaluate_again()
    phases.append_phase_report(trainer, self._phase, self.config, results)
    return plain(results)

  def history(self) -> list[dict[str, Any]]:
    """Rows of the deployed phase's metrics.jsonl ({"step": ..., "train/loss": ..., ...});
    non-finite values come back as float NaN / Inf. None yet (a run not trained): []."""
    if not (paths.resolve(self.inference_workdir) / "metrics.jsonl").exists():
      return []
    rows = metrics_lib.read_metrics(self.inference_workdir)
    return [{k: (float(v) if isinstance(v, str) and k != "step" else v) for k, v in row.items()}
            for row in rows]

  # ---------------------------------------------------------------- inspection
  @property
  def inference_workdir(self) -> str:
    """Where the deployed model's checkpoints are (the workdir, or a phase's sub-directory)."""
    return task_lib.deployed_workdir(self.config, self.workdir)

  @property
  def task(self):
    """The Task of the deployed model (the one-phase run's own Task when it exists)."""
    if self._trainer is not None:
      return self._trainer.task
    if self._task is None:
      with task_lib.from_checkpoint():   # the trained run's: variables from its checkpoints
        self._task = task_lib.load_task(self.config)
    return self._task

  @property
  def train_step(self):
    """The jitted `(state, batch, rng) -> (state, metrics)` of a one-phase run, once trained or
    evaluated (its state argument is donated: pass `run.trainer.state` and keep what it returns)."""
    step_fn = self.trainer.train_step
    if step_fn is None:
      raise ValueError("the train step is compiled by the first Run.train() / Run.evaluate()")
    return step_fn

  @property
  def predict_fn(self):
    """jax.jit(task.predict): `(variables, {"video": uint8 clips, ...}) -> logits`, the function
    the classification evaluator and `darkjax.tools.predict` call."""
    if self._predict_fn is None:
      self._predict_fn = jax.jit(self.task.predict)
    return self._predict_fn

  @property
  def variables(self) -> dict[str, Any]:
    """{"params": ..., <model state>} as host numpy arrays: the live state, else the latest
    checkpoint of the deployed phase."""
    if self._trainer is not None and self._trainer.state is not None:
      return jax.device_get(self._trainer.variables)
    return convert_io.load_run_variables(self.inference_workdir)[0]

  def test_clips(self, count: int, split: str = "") -> dict[str, np.ndarray]:
    """The first `count` examples ({"video": uint8 (N, T, H, W, C), "label": ..., streams}) of
    `split` ("test", "val", "train": the dataset's part of the config's split; default: the
    config's evaluation part, `input.data.eval_split`) as the evaluators see them (first view)."""
    from darkjax.evaluators import clip_figures  # pylint: disable=import-outside-toplevel
    return clip_figures.first_test_examples(self.task.data, count, split)

  def enhance(self, clips_uint8: np.ndarray) -> np.ndarray:
    """Enhanced clips in [0, 1] for tasks with an enhancer (DTCM)."""
    if not isinstance(self.task, capabilities.Enhances):
      raise ValueError(f"trainer {self.config.trainer!r} has no enhancer (capability Enhances)")
    return np.asarray(jax.jit(self.task.enhance)(self.variables, clips_uint8))
