"""darkjax.config_history: a resumed run's config against the configs its workdir was trained
with (the whole runs that exercise it: tests/test_train.py, tests/test_actlumos.py)."""

from __future__ import annotations

import json
import logging

import pytest

from darkjax import config as config_lib
from darkjax import config_history


@pytest.fixture(name="config")
def _config():
  return config_lib.load("configs/synthetic.py:runlocal")


def _trained_with(workdir, config) -> str:
  """Writes `config` as WORKDIR/config.json, the config that trained the workdir's steps."""
  text = json.dumps(config_lib.json_values(config), sort_keys=True)
  (workdir / "config.json").write_text(text, encoding="utf-8")
  return text


def test_a_resume_with_other_settings_keeps_the_config_that_trained_its_steps(tmp_path, config,
                                                                               caplog):
  trained = _trained_with(tmp_path, config)
  config.optimizer.lr = 0.5
  history = config_history.ConfigHistory(str(tmp_path), config, phase="train")
  with caplog.at_level(logging.WARNING, logger="darkjax"):
    resumed = history.keep_changed(4, trains=True)
  assert (tmp_path / "config.until_step4.json").read_text(encoding="utf-8") == trained
  assert resumed.path == tmp_path / "config.json" and resumed.saved["optimizer.lr"] == 0.05
  assert resumed.evaluation_changes == [] and resumed.earlier_settings == {}
  assert "optimizer.lr: 0.05 -> 0.5" in caplog.text and "config.until_step4.json" in caplog.text
  # resumed at step 4 again: the step's own file is the config that trained it
  (tmp_path / "config.json").write_text(json.dumps(config_lib.json_values(config)),
                                        encoding="utf-8")
  path, saved = history.of_step(4)
  assert path == tmp_path / "config.until_step4.json" and saved["optimizer.lr"] == 0.05


def test_other_evaluation_settings_are_returned_with_those_they_replace(tmp_path, config):
  _trained_with(tmp_path, config)
  config.input.eval_clips = 3
  resumed = config_history.ConfigHistory(str(tmp_path), config).keep_changed(4, trains=True)
  assert resumed.evaluation_changes == ["  input.eval_clips: 1 -> 3"]
  assert resumed.earlier_settings == {
      key: value for key, value in resumed.saved.items() if config_lib.evaluation_field(key)}
  assert resumed.earlier_settings["input.eval_clips"] == 1 and not resumed.stale_evaluation


def test_a_finished_run_refuses_new_evaluation_settings_beside_trained_ones(tmp_path, config):
  trained = _trained_with(tmp_path, config)
  config.input.eval_clips = 3
  config.optimizer.lr = 0.5
  config.log_every = 7   # a runner field: changes no result, so named in no refusal
  history = config_history.ConfigHistory(str(tmp_path), config, phase="student")
  with pytest.raises(config_lib.ConfigError) as refused:
    history.keep_changed(10, trains=False)
  message = str(refused.value)
  assert message.startswith(f"phase student: {tmp_path} is trained to step 10 already")
  assert "input.eval_clips: 1 -> 3" in message and "optimizer.lr: 0.05 -> 0.5" in message
  assert "log_every" not in message
  assert (tmp_path / "config.json").read_text(encoding="utf-8") == trained   # nothing kept
  assert not (tmp_path / "config.until_step10.json").exists()
  config.optimizer.lr = 0.05   # the evaluation's settings alone: evaluated again, not refused
  assert history.keep_changed(10, trains=False).evaluation_changes == [
      "  input.eval_clips: 1 -> 3"]


def test_fields_a_phase_does_not_read_are_no_change_of_it(tmp_path, config, caplog):
  _trained_with(tmp_path, config)
  config.optimizer.lr = 0.5
  history = config_history.ConfigHistory(str(tmp_path), config, ignores=("optimizer",))
  assert history.changes(history.saved()[1], only_read=True) == {}
  with caplog.at_level(logging.INFO, logger="darkjax"):
    resumed = history.keep_changed(4, trains=True)
  assert resumed.evaluation_changes == [] and not (tmp_path / "config.until_step4.json").exists()
  assert "only in fields this phase does not read" in caplog.text


def test_a_checkpoint_that_does_not_restore_is_explained_by_the_configs(tmp_path, config):
  history = config_history.ConfigHistory(str(tmp_path), config)
  assert history.describe_changes().startswith(
      f"{tmp_path / 'config.json'} is missing, so what changed is not known.")
  _trained_with(tmp_path, config)
  assert history.describe_changes().startswith("This run's config equals the one in")
  config.model.name = "c3d_tiny"
  described = history.describe_changes()
  assert "differs from the one that trained the checkpoint" in described
  assert "model.name:" in described and "'c3d_tiny'" in described
