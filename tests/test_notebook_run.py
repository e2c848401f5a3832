"""darkjax.notebook: a run driven from Python continues, evaluates and resumes on the command line's
code path (darkjax.train.Trainer), with the same per-step losses as one uninterrupted run."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from darkjax import notebook, train
from darkjax.tools import predict_checkpoint
from darkjax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(REPO, "configs", "synthetic.py")
QUIET = {"progress_bar": False, "input.prefetch": 0, "eval_every": 0, "log_every": 1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A Run trained to step 2 then on to 4, and the same config run by train.run in one go."""
  root = tmp_path_factory.mktemp("api")
  arg = f"runlocal,steps=4,data_dir={root / 'data'}"
  run = notebook.Run.from_file(CONFIG_FILE, arg, workdir=str(root / "split"), overrides=QUIET,
                          devices=jax.devices()[:1])
  first = run.train(steps=2)
  second = run.train()
  whole_dir = str(root / "whole")
  config = config_lib.apply_overrides(config_lib.load(CONFIG_FILE, arg), QUIET)
  train.Trainer(config, whole_dir, devices=jax.devices()[:1]).run()
  return run, first, second, whole_dir, arg, root


def test_split_training_has_the_losses_of_one_uninterrupted_run(runs):
  run, first, second, whole_dir, _, _ = runs
  split = [(row["step"], row["train/loss"]) for row in run.history() if "train/loss" in row]
  whole = [(row["step"], row["train/loss"]) for row in notebook.Run(
      config_lib.load(CONFIG_FILE, runs[4]), whole_dir).history() if "train/loss" in row]
  assert notebook.Run(config_lib.load(CONFIG_FILE, runs[4]), str(runs[5] / "new")).history() == []
  assert [s for s, _ in split] == [s for s, _ in whole] == [1, 2, 3, 4]
  np.testing.assert_allclose([l for _, l in split], [l for _, l in whole], rtol=1e-6)
  assert run.step == 4
  for results in (first, second):   # evaluated at the step each call stopped at
    assert 0.0 <= results["eval/top1"] <= 1.0 and isinstance(results["eval/top1"], float)


def test_evaluate_variables_and_predict_fn_of_a_resumed_run(runs):
  run, _, second, _, arg, _ = runs
  resumed = notebook.Run.from_file(CONFIG_FILE, arg, workdir=run.workdir, overrides=QUIET,
                              devices=jax.devices()[:1])
  assert resumed.step == 4
  results = resumed.evaluate()
  assert results["eval/top1"] == pytest.approx(second["eval/top1"])
  # evaluated again at step 4, logged once (the step's earlier evaluation replaced), its
  # training row kept
  rows = [row for row in resumed.history() if row["step"] == 4]
  assert sorted("eval/top1" in row for row in rows) == [False, True], rows
  assert any("train/loss" in row for row in rows)
  confusion = results["eval/confusion"]   # every test clip once, in the row of its label
  assert confusion.shape == (resumed.task.num_classes,) * 2
  assert confusion.sum() == results["eval/num_examples"] > 0
  np.testing.assert_array_equal(confusion, second["eval/confusion"])
  live, restored = run.variables, predict_checkpoint.restore_variables(run.workdir)[0]
  jax.tree.map(np.testing.assert_array_equal, live, restored)
  clips = resumed.test_clips(3)
  logits = resumed.predict_fn(resumed.variables, {"video": clips["video"]})
  assert logits.shape == (3, resumed.task.num_classes)


def test_overrides_change_fields_and_typos_name_the_path(runs):
  run = runs[0]
  assert run.config.eval_every == 0 and run.config.input.prefetch == 0
  with pytest.raises(KeyError, match=r"optimizer.lrr.*valid keys there: \[.*'lr'"):
    config_lib.apply_overrides(run.config, {"optimizer.lrr": 0.1})
  with pytest.raises(KeyError, match="'optimiser'"):
    config_lib.apply_overrides(run.config, {"optimiser.lr": 0.1})
  with pytest.raises(AttributeError):   # the config stays locked
    run.config.new_field = 1


def test_a_run_in_phases_says_how_to_set_its_steps(tmp_path):
  from configs import lift_synthetic  # pylint: disable=import-outside-toplevel
  run = notebook.Run(lift_synthetic.get_config(f"runlocal,data_dir={tmp_path}"), str(tmp_path / "w"))
  assert run.phased
  with pytest.raises(ValueError, match=r"steps now: teacher 3, student 3\); set each phase's "
                                       r"steps through the config file's args"):
    run.train(steps=1)
  with pytest.raises(ValueError, match=r"phases.*trainer and train_step are a one-phase run's"):
    run.trainer  # pylint: disable=pointless-statement
  with pytest.raises(ValueError, match=r"phase student, the deployed model\) is trained to step 0 "
                                       r"of 3: .*Run.train\(\) first"):
    run.evaluate()


def test_plain_keeps_named_choices_as_strings():
  """The two-stream evaluator names its headline row (`video/headline`, a string array): the
  notebook's results keep it as text beside the floats and arrays."""
  out = notebook.plain({"video/top1": np.float32(0.5), "video/headline": np.array("late_fusion2"),
                        "eval/confusion": np.eye(2), "eval/count": np.int32(20)})
  assert out == {"video/top1": 0.5, "video/headline": "late_fusion2",
                 "eval/confusion": out["eval/confusion"], "eval/count": 20.0}
  assert isinstance(out["video/headline"], str) and out["eval/confusion"].shape == (2, 2)


def test_a_run_trained_on_elsewhere_is_evaluated_at_its_latest_checkpoint(runs):
  """A Run whose workdir another run (the command line, another notebook cell) trained further
  evaluates that latest checkpoint; it evaluated its own older state before and dropped every row
  logged after it."""
  _, _, _, _, arg, root = runs
  workdir = str(root / "elsewhere")
  behind = notebook.Run.from_file(CONFIG_FILE, arg, workdir=workdir, overrides=QUIET,
                                  devices=jax.devices()[:1])
  behind.train(steps=2)
  ahead = notebook.Run.from_file(CONFIG_FILE, arg, workdir=workdir, overrides=QUIET,
                                 devices=jax.devices()[:1])
  final = ahead.train()
  assert (behind.step, ahead.step) == (2, 4)
  results = behind.evaluate()
  assert behind.step == 4 and results["eval/top1"] == pytest.approx(final["eval/top1"])
  assert [row["step"] for row in behind.history() if "train/loss" in row] == [1, 2, 3, 4]


def test_a_changed_config_or_steps_it_cannot_train_are_refused(runs, caplog):
  run, _, second, _, arg, root = runs
  with pytest.raises(ValueError,
                     match=r"beyond config.total_steps=4.*overrides=\{'total_steps': 9\}"):
    run.train(steps=9)
  with caplog.at_level("WARNING", logger="darkjax"):   # a notebook's cells run again
    again = run.train(steps=3)
  assert "is trained to step 4 already: its evaluation at step 4 follows" in caplog.text
  assert again["eval/top1"] == pytest.approx(second["eval/top1"])
  fresh = notebook.Run.from_file(CONFIG_FILE, arg, workdir=str(root / "changed"), overrides=QUIET)
  fresh.config.optimizer.lr = 0.5
  with pytest.raises(ValueError, match=r"Run.config changed after this Run was made "
                                       r"\(optimizer.lr\).*overrides=\{'optimizer.lr': 0.5\}"):
    fresh.train()
  assert not os.path.exists(root / "changed")
