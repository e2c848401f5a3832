"""darkjax.metrics: what a resumed run leaves in metrics.jsonl and in TensorBoard's event files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tensorboardX.proto import event_pb2

from darkjax import metrics as metrics_lib
from darkjax.data import records


def _events(logdir: str) -> list[event_pb2.Event]:
  """Every event of the directory's event files (TFRecord files, CRCs checked), in the order
  TensorBoard reads them: file names sorted."""
  return [event_pb2.Event.FromString(data) for name in sorted(os.listdir(logdir))
          for data in records.iter_tfrecord(os.path.join(logdir, name))]


def _scalars_tensorboard_shows(logdir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of `tag` as TensorBoard shows them: a restart marker (a START session log at
  step S) drops what was read before from step S on."""
  shown: list[tuple[int, float]] = []
  for event in _events(logdir):
    if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
      shown = [(step, value) for step, value in shown if step < event.step]
    for value in event.summary.value:
      if value.tag == tag:
        shown.append((event.step, value.simple_value))
  return shown


def test_a_resumed_run_drops_what_the_killed_one_logged_after_its_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  killed = metrics_lib.MetricsWriter(workdir)
  for step in range(1, 6):   # logged up to step 5; its last checkpoint was step 3
    killed.write(step, {"train/loss": float(step)})
  killed.close()
  resumed = metrics_lib.MetricsWriter(workdir)   # same second: a file of its own all the same
  resumed.truncate_after(3)
  assert [row["step"] for row in metrics_lib.read_metrics(workdir)] == [1, 2, 3]
  for step in (4, 5):
    resumed.write(step, {"train/loss": 10.0 * step})
  resumed.close()
  rows = metrics_lib.read_metrics(workdir)
  assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 40), (5, 50)]
  logdir = os.path.join(workdir, "tensorboard")
  # the killed run's file and the resumed run's, whose first event is the restart marker (no
  # empty file opened before it)
  assert len(os.listdir(logdir)) == 2
  assert _scalars_tensorboard_shows(logdir, "train/loss") == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


def test_a_row_cut_short_by_a_full_disk_is_left_out_and_the_resume_rewrites_the_file(
    tmp_path, caplog):
  """A full disk (or a kill) mid-append leaves metrics.jsonl's last row cut short: the resumed
  run drops it with a warning naming the file and goes on (it had raised JSONDecodeError on every
  rerun); an unreadable row before the last is named with its line."""
  workdir = str(tmp_path / "run")
  killed = metrics_lib.MetricsWriter(workdir)
  for step in range(1, 4):
    killed.write(step, {"train/loss": float(step)})
  killed.close()
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"step": 4, "train/loss":')
  caplog.set_level("WARNING")
  resumed = metrics_lib.MetricsWriter(workdir)
  resumed.truncate_after(3)
  assert "metrics.jsonl: its last line (4) was cut short" in caplog.text
  resumed.write(4, {"train/loss": 40.0})
  resumed.close()
  assert [(r["step"], r["train/loss"]) for r in metrics_lib.read_metrics(workdir)] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines[:1] + ["{not json"] + lines[1:]) + "\n")
  with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not a JSON row"):
    metrics_lib.read_metrics(workdir)


def test_a_second_writer_of_the_same_second_keeps_the_first_ones_events(tmp_path):
  """A notebook's `Run.evaluate` opens a writer right after its `train` closed one."""
  workdir = str(tmp_path / "run")
  for step in (1, 2):
    writer = metrics_lib.MetricsWriter(workdir)
    writer.write(step, {"eval/top1": 0.5 * step})
    writer.close()
  assert _scalars_tensorboard_shows(os.path.join(workdir, "tensorboard"), "eval/top1") == [
      (1, 0.5), (2, 1.0)]


def test_a_rerun_from_step_0_starts_the_rows_and_curves_again(tmp_path):
  """A run stopped before its first checkpoint is rerun from step 0: none of its rows remain."""
  workdir = str(tmp_path / "run")
  stopped = metrics_lib.MetricsWriter(workdir)
  for step in (1, 2):
    stopped.write(step, {"train/loss": float(step)})
  stopped.close()
  rerun = metrics_lib.MetricsWriter(workdir)
  rerun.truncate_after(0)
  rerun.write(1, {"train/loss": 5.0})
  rerun.close()
  assert metrics_lib.read_metrics(workdir) == [{"step": 1, "train/loss": 5.0}]
  assert _scalars_tensorboard_shows(os.path.join(workdir, "tensorboard"), "train/loss") == [
      (1, 5.0)]


def test_a_fresh_run_writes_one_event_file(tmp_path):
  writer = metrics_lib.MetricsWriter(str(tmp_path / "run"))
  writer.truncate_after(0)   # what every run does once restored or initialised
  writer.write(1, {"train/loss": 1.0})
  writer.close()
  assert len(os.listdir(tmp_path / "run" / "tensorboard")) == 1


def test_a_rerun_that_logs_nothing_adds_no_event_file(tmp_path):
  """A finished run's rerun (it reports what it logged): no empty event file each time."""
  workdir = str(tmp_path / "run")
  writer = metrics_lib.MetricsWriter(workdir)
  writer.write(4, {"train/loss": 1.0})
  writer.close()
  rerun = metrics_lib.MetricsWriter(workdir)
  rerun.truncate_after(4)
  rerun.close()
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
  assert _scalars_tensorboard_shows(os.path.join(workdir, "tensorboard"), "train/loss") == [
      (4, 1.0)]


def test_tensorboard_events_are_written_without_importing_torch(tmp_path):
  """tensorboardX's writer imports torch where it is installed (a second or more of every run's
  start); the writer is imported with that import blocked, and torch still imports afterwards."""
  code = f"""
import importlib.util, sys
from darkjax import metrics
writer = metrics.MetricsWriter({str(tmp_path / "run")!r})
writer.write(3, {{"train/loss": 0.5}})
writer.close()
assert "torch" not in sys.modules, "tensorboardX imported torch"
if importlib.util.find_spec("torch") is not None:
  import torch
  assert torch.zeros(2).sum().item() == 0.0
print("ok")
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
  assert _scalars_tensorboard_shows(str(tmp_path / "run" / "tensorboard"), "train/loss") == [
      (3, 0.5)]


def test_evaluating_again_a_step_without_a_training_row(tmp_path):
  """A notebook's `Run.evaluate` at a step that logged no training row (log_every does not divide
  it): its earlier evaluation is dropped, nothing else, and nothing fails for want of a row."""
  workdir = str(tmp_path / "run")
  writer = metrics_lib.MetricsWriter(workdir)
  writer.write(2, {"train/loss": 1.0})
  writer.write(3, {"eval/top1": 0.5})
  writer.close()
  again = metrics_lib.MetricsWriter(workdir)
  again.redo_evaluation(3)
  again.write(3, {"eval/top1": 0.75})
  again.close()
  assert metrics_lib.read_metrics(workdir) == [{"step": 2, "train/loss": 1.0},
                                               {"step": 3, "eval/top1": 0.75}]
  assert _scalars_tensorboard_shows(os.path.join(workdir, "tensorboard"), "eval/top1") == [
      (3, 0.75)]


def test_evaluations_of_other_settings_are_set_apart_and_a_failed_one_changes_nothing(tmp_path):
  """Every evaluation row moves to earlier_evaluations.jsonl with the settings it measured, the
  training rows stay, and TensorBoard shows the curves as metrics.jsonl holds them; what a held
  block (an evaluation) writes is dropped when it fails, written when it succeeds."""
  workdir = str(tmp_path / "run")
  writer = metrics_lib.MetricsWriter(workdir)
  for step in (1, 2):
    writer.write(step, {"train/loss": 3.0 - step})
    writer.write(step, {"eval/top1": 0.1 * step})
  writer.close()
  before = metrics_lib.read_metrics(workdir)
  again = metrics_lib.MetricsWriter(workdir)
  with pytest.raises(RuntimeError), again.held():
    again.write(2, {"eval/top1": 0.9})
    raise RuntimeError("the evaluation failed")
  assert metrics_lib.read_metrics(workdir) == before
  with again.held():
    again.write(2, {"eval/top1": 0.75})
    assert again.set_aside_evaluations({"input.data.eval_split": "test"}) == 2
  again.close()
  assert metrics_lib.read_metrics(workdir) == [{"step": 1, "train/loss": 2.0},
                                               {"step": 2, "train/loss": 1.0},
                                               {"step": 2, "eval/top1": 0.75}]
  earlier = [json.loads(line) for line in (tmp_path / "run" / metrics_lib.EARLIER_EVALUATIONS)
             .read_text().splitlines()]
  assert earlier == [{"step": s, "eval/top1": 0.1 * s,
                      "evaluated_with": {"input.data.eval_split": "test"}} for s in (1, 2)]
  logdir = os.path.join(workdir, "tensorboard")
  assert _scalars_tensorboard_shows(logdir, "eval/top1") == [(2, 0.75)]
  assert _scalars_tensorboard_shows(logdir, "train/loss") == [(1, 2.0), (2, 1.0)]
