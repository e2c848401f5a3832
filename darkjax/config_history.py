"""The configs a workdir's steps were trained with, against a run's own: WORKDIR/config.json (the
config that trained its checkpoints, which predict and export read) and
WORKDIR/config.until_step<N>.json (kept where a run resumed at step N with other settings). A
`ConfigHistory` says which settings a resumed run changes, keeps the config that trained the
steps before them, and refuses a change that cannot train (a finished run's evaluation settings
beside settings that trained it); `darkjax.train.Trainer` asks it at every resume and a run in
phases asks each finished phase before the first runs (`darkjax.phases`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping, Sequence

import ml_collections as mlc

from darkjax import checkpoint as ckpt_lib
from darkjax import config as config_lib
from darkjax import file_state
from darkjax import fit as fit_lib
from darkjax import metrics as metrics_lib
from darkjax import paths

log = logging.getLogger("darkjax")


def evaluation_settings(fields: Mapping[str, Any]) -> dict[str, Any]:
  """The evaluation settings (`config.evaluation_field`s) of a config's `flat` fields."""
  return {key: value for key, value in fields.items() if config_lib.evaluation_field(key)}


@dataclasses.dataclass(frozen=True)
class Resumed:
  """What `ConfigHistory.keep_changed` found of a run resumed at a step."""
  path: Any   # the config file that trained (and evaluated) the step
  saved: dict[str, Any] | None   # its `config_lib.flat` fields (None: the file is missing)
  # the lines of the settings, only those an evaluation measures, in which this run's differ,
  # where this phase evaluates: the run's evaluations are of other settings than those it logged
  evaluation_changes: list[str] = dataclasses.field(default_factory=list)
  # the step's logged evaluation measured other settings than this run's, and it evaluates none
  stale_evaluation: bool = False

  @property
  def earlier_settings(self) -> dict[str, Any]:
    """The evaluation settings of the config file that evaluated the step, where this run
    changes them ({} where it does not)."""
    if not self.evaluation_changes or self.saved is None:
      return {}
    return evaluation_settings(self.saved)


@dataclasses.dataclass
class ConfigHistory:
  """`config` (a phase's, as its Trainer runs it) against the configs `workdir` was trained with.
  `phase` names the phase in messages; `ignores` are the fields its training never reads
  (`task.Phase.ignores`)."""
  workdir: str
  config: mlc.ConfigDict
  phase: str = "train"
  ignores: Sequence[str] = ()

  def values(self) -> dict[str, Any]:
    """This run's config as config.json holds it."""
    return config_lib.json_values(self.config)

  def saved(self) -> tuple[Any, dict[str, Any] | None]:
    """WORKDIR/config.json (the config its checkpoints were trained with) and its
    `config_lib.flat` fields, None where the file is missing."""
    path = paths.resolve(self.workdir) / "config.json"
    if not path.is_file():
      return path, None
    return path, config_lib.flat(json.loads(path.read_text(encoding="utf-8")))

  def of_step(self, step: int) -> tuple[Any, dict[str, Any] | None]:
    """The config file that trained (and evaluated) the checkpoint of `step`, and its `flat`
    fields (None where it is missing): WORKDIR/config.until_step<step>.json where a run resumed
    at `step` kept it (config.json may then have trained nothing), else config.json."""
    kept = paths.resolve(self.workdir) / f"config.until_step{step}.json"
    if kept.exists():
      return kept, config_lib.flat(json.loads(kept.read_text(encoding="utf-8")))
    return self.saved()

  def changes(self, saved: dict[str, Any], only_read: bool = False) -> dict[str, str]:
    """{key: "  key: was -> now"} for each setting in which this run's config differs from
    `saved` (a config.json's `config_lib.flat` fields); `only_read`: only those this phase reads
    (not `ignores`)."""
    return {key: f"  {key}: {was!r} -> {now!r}" for key, (was, now) in
            config_lib.differences(saved, config_lib.flat(self.values())).items()
            if not (only_read and any(config_lib.covers(i, key) for i in self.ignores))}

  def keep_changed(self, start: int, trains: bool = True) -> Resumed:
    """A run resumed at `start` with a config whose settings differ from the one that trained
    its checkpoint (the arrays agree, or it would not have restored: a learning rate, the data, the
    normalisation): says which, and keeps that config as WORKDIR/config.until_step<start>.json
    before config.json becomes this run's (the first one kept where a step is resumed again).

    `trains` False (no step left to train): keeps nothing (config.json stays; the evaluation's
    settings are recorded once the run evaluates with them). The other settings change nothing,
    which is said; beside an evaluation's, any of them that could change a result (all but
    `config.runner_field`s) is refused: they cannot train, and an evaluation reads some of them
    (the normalisation, the frames). A phase that evaluates nothing (`eval_every` -1, no
    `config.evals`) says that its logged evaluation, if any, was of other settings."""
    path, saved = self.of_step(start)
    if saved is None:
      return Resumed(path, saved)
    changes = self.changes(saved, only_read=True)
    if not changes:
      ignored = self.changes(saved)
      if ignored:
        log.info("phase %s: resumed at step %d; its config differs from the one that trained it "
                 "only in fields this phase does not read:\n%s", self.phase, start,
                 config_lib.listed(list(ignored.values())))
      return Resumed(path, saved)
    evaluates = fit_lib.evaluates(self.config)
    measured = {key for key in changes if config_lib.evaluation_field(key)}
    evaluation = [changes[key] for key in measured] if evaluates else []
    others = {key: line for key, line in changes.items() if key not in measured}
    stale = bool(measured and not evaluates
                 and metrics_lib.logged_evaluation(self.workdir, start))
    if stale:
      log.warning("phase %s: trained to step %d; its logged evaluation was made with other "
                  "evaluation settings than this run's, and this run evaluates nothing "
                  "(eval_every=-1 or no config.evals), so it reports none:\n%s", self.phase,
                  start, config_lib.listed([changes[key] for key in measured]))
    if not trains:
      refused = self.mixed_change(start, path, changes)
      if refused is not None:
        raise refused
      if others:
        log.warning("phase %s: already trained to step %d, with other settings than this run's; "
                    "they change nothing, no step is left to train (config.json keeps those that "
                    "trained it; give more steps to train on with these, or a new --workdir):\n%s",
                    self.phase, start, config_lib.listed(list(others.values())))
      return Resumed(path, saved, evaluation, stale)
    kept = paths.resolve(self.workdir) / f"config.until_step{start}.json"
    if not kept.exists():
      kept.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    trained = [line for key, line in changes.items() if key not in measured or not evaluates]
    if trained:
      log.warning("phase %s: resumed at step %d with other settings than those that trained it "
                  "(the config that did is kept as %s):\n%s", self.phase, start, kept,
                  config_lib.listed(trained))
    return Resumed(path, saved, evaluation, stale)

  def mixed_change(self, start: int, path: Any,
                   changes: Mapping[str, str]) -> config_lib.ConfigError | None:
    """The refusal of a run with no step left to train (`keep_changed`) whose `changes` (the
    fields this phase reads in which its config differs from `path`'s: {key: line}) are to what
    its evaluation measures, where it evaluates, and to any field that could change a result
    (not a `config.runner_field`); None where they are not both."""
    if not fit_lib.evaluates(self.config):
      return None
    evaluation = [line for key, line in changes.items() if config_lib.evaluation_field(key)]
    results = [line for key, line in changes.items()
               if not config_lib.evaluation_field(key) and not config_lib.runner_field(key)]
    if not (evaluation and results):
      return None
    return config_lib.ConfigError(
        f"phase {self.phase}: {self.workdir} is trained to step {start} already; this run "
        "changes what its evaluation measures:\n" + config_lib.listed(evaluation)
        + "\nand settings it was trained with (" + os.fspath(path) + "):\n"
        + config_lib.listed(results) + "\nNo step is left to train with those, and an "
        "evaluation reads some of them (the normalisation, the frames): it would measure a "
        "model trained otherwise. Rerun with only the evaluation's settings changed, or train "
        "these in a new --workdir.")

  def finished_run_refusal(self) -> config_lib.ConfigError | None:
    """What a run would refuse (`keep_changed`) in a directory whose latest checkpoint is of this
    config's last step: a change to what its evaluation measures beside one to the settings that
    trained it. Reads the checkpoint listing and config files only."""
    listed = ckpt_lib.latest_listed(self.workdir)
    start = None if listed is None else int(os.path.basename(listed))
    if start is None or start < int(self.config.total_steps):
      return None
    path, saved = self.of_step(start)
    if saved is None:
      return None
    return self.mixed_change(start, path, self.changes(saved, only_read=True))

  def record_evaluation_settings(self, path: Any) -> None:
    """Writes this run's evaluation settings (`config.evaluation_field`s) into `path`, the config
    file of a finished run whose evaluation it made again, the rest of the file as it was."""
    values = json.loads(path.read_text(encoding="utf-8"))
    for key, (_, now) in config_lib.differences(config_lib.flat(values),
                                                config_lib.flat(self.values())).items():
      if config_lib.evaluation_field(key):
        config_lib.set_field(values, key, now)
    file_state.atomic_write_json(os.path.join(self.workdir, path.name), values, sort_keys=True)

  def describe_changes(self, most: int = 12) -> str:
    """What a checkpoint that does not restore into this run's state needs said: the settings
    in which this run's config differs from the one that trained it (WORKDIR/config.json)."""
    path, saved = self.saved()
    advice = ("Resume with the config that trained it, or start this config in a new --workdir.")
    if saved is None:
      return f"{path} is missing, so what changed is not known. {advice}"
    changed = list(self.changes(saved).values())
    if not changed:
      return f"This run's config equals the one in {path}. {advice}"
    return (f"This run's config differs from the one that trained the checkpoint ({path}):\n"
            + config_lib.listed(changed, most) + f"\n{advice}")
