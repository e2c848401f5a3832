"""Generic trainer: sharded runs equal single-device runs, exact resume after SIGKILL, NaN guard,
and the clear errors promised for bad input."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic as synthetic_config
from darkjax import aot
from darkjax import checkpoint as ckpt_lib
from darkjax import config as config_lib
from darkjax import metrics as metrics_lib
from darkjax import preemption
from darkjax import reports
from darkjax import task as task_lib
from darkjax import train
from darkjax.data import prepared
from darkjax.layers import precision
from run_configs import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(data_dir: str, steps: int = 20, **overrides):
  config = synthetic_config.get_config(f"runlocal,steps={steps},data_dir={data_dir}")
  config.log_every = 1
  config.eval_every = -1
  config.checkpoint_every = 1000
  return quiet(config, **overrides)   # dotted keys: {"optimizer.lr": 0.02}


def losses(workdir: str) -> dict[int, float]:
  return {row["step"]: row["train/loss"] for row in metrics_lib.read_metrics(workdir)
          if "train/loss" in row}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("synthetic"))
  config = small_config(directory)
  prepared.open_dataset(config.input.data)  # generates once for the module
  return directory


def test_eight_devices_with_data_and_fsdp_sharding_match_one_device(data_dir, tmp_path):
  assert len(jax.devices()) == 8, "tests/conftest.py forces 8 host devices"
  # lr 0.02: at 0.05 the 4-channel tiny net is chaotic enough that float summation-order
  # differences of ~1e-7 in the sharded gradients grow past 1e-5 by step 18 (measured).
  one = small_config(data_dir, **{"optimizer.lr": 0.02})
  one.mesh.data = 1
  single = train.Trainer(one, str(tmp_path / "one"), devices=jax.devices()[:1])
  single.run()
  eight = small_config(data_dir, **{"optimizer.lr": 0.02})
  eight.mesh.data, eight.mesh.fsdp = 4, 2
  eight.sharding.min_fsdp_size = 0   # shard every parameter with an even dimension
  trainer = train.Trainer(eight, str(tmp_path / "eight"))
  trainer.run()
  sharded = [s for s in jax.tree.leaves(trainer.state_shardings.params) if s.spec != ()]
  assert sharded, "fsdp sharded no parameter"
  # a batch over devices: 16-bit layers would give float32 kernel gradients (layers.precision)
  with trainer.scope():
    assert precision.weight_gradients_in_float32()
  with single.scope():
    assert not precision.weight_gradients_in_float32()
  a, b = losses(str(tmp_path / "one")), losses(str(tmp_path / "eight"))
  assert sorted(a) == sorted(b) == list(range(1, 21))
  np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-5, atol=1e-5)


def _main_command(workdir: str, data_dir: str, steps: int) -> list[str]:
  return [sys.executable, "-m", "darkjax.main",
          f"--config=configs/synthetic.py:runlocal,steps={steps},data_dir={data_dir}",
          f"--workdir={workdir}", "--config.log_every=1", "--config.checkpoint_every=4",
          "--config.progress_bar=False", "--config.eval_every=-1"]


def test_sigkill_then_rerun_resumes_with_identical_losses(data_dir, tmp_path, main_env):
  steps = 24
  reference, interrupted = str(tmp_path / "reference"), str(tmp_path / "interrupted")
  env = main_env
  subprocess.run(_main_command(reference, data_dir, steps), cwd=REPO, env=env, check=True,
                 capture_output=True)
  proc = subprocess.Popen(_main_command(interrupted, data_dir, steps), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics_path = os.path.join(interrupted, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics_path) and len(losses(interrupted)) >= 10:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(losses(interrupted))
  assert killed_at < steps
  ckpt_dir = os.path.join(interrupted, "checkpoints")
  # steps logged after the last checkpoint, which the rerun trains and logs again
  assert max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) < killed_at
  subprocess.run(_main_command(interrupted, data_dir, steps), cwd=REPO, env=env, check=True,
                 capture_output=True)
  want = losses(reference)
  got = [(row["step"], row["train/loss"]) for row in metrics_lib.read_metrics(interrupted)
         if "train/loss" in row]
  assert got == [(s, want[s]) for s in range(1, steps + 1)]  # each step once, losses exact
  assert sorted(os.listdir(ckpt_dir), key=int) == ["20", "24"]   # keep_checkpoints=2


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  """The loss turns NaN at step 5 (its loss made NaN from there on, so the step's own guard sees
  it): the run stops naming step 5 and checkpoint 4, the last one saved, whose state is finite."""
  config = small_config(data_dir, steps=12, checkpoint_every=2, keep_checkpoints=3)
  task = task_lib.load_task(config)
  loss_fn = task.loss_fn

  def nan_from_step_5(params, model_state, batch, rng, progress):
    loss, aux = loss_fn(params, model_state, batch, rng, progress)
    return jnp.where(progress * 12 >= 3.5, jnp.nan, loss), aux   # progress: the step before / 12

  object.__setattr__(task, "loss_fn", nan_from_step_5)
  workdir = str(tmp_path / "nan")
  with pytest.raises(train.NonFiniteLossError,
                     match=r"^phase train, step 5: loss or gradient is not finite \(loss=nan\); "
                           r"training stopped\. Last good checkpoint: (.*)/checkpoints/4\. A lower "
                           r"learning rate \(this phase's optimizer\.lr=0\.\d+\) or gradient "
                           r"clipping \(optimizer\.grad_clip_norm\), then the same command again: "
                           r"it resumes from that checkpoint") as raised:
    train.Trainer(config, workdir, task=task).run()
  assert raised.match(os.path.join(workdir, "checkpoints", "4"))
  assert sorted(losses(workdir)) == [1, 2, 3, 4]   # step 5's NaN is not logged as a loss
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert sorted(os.listdir(ckpt_dir)) == ["2", "4"], "a checkpoint after the NaN, or half-written"
  restored = train.Trainer(config, workdir)
  with restored.scope():
    assert restored.init_state() == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(restored.state.params)))


def test_compute_dtype_auto_is_the_meshs_platforms_and_a_task_built_for_another_is_refused(
    data_dir, tmp_path):
  config = small_config(data_dir)
  assert config.compute_dtype == "auto"   # float32 on this CPU, bfloat16 on a GPU or TPU
  trainer = train.Trainer(config, str(tmp_path / "run"))
  assert trainer.config.compute_dtype == "float32" and trainer.task.dtype == jnp.float32
  gpu_task = task_lib.load_task(config_lib.resolve(config, "gpu"))
  with pytest.raises(ValueError, match=r"the task computes in bfloat16 but this Trainer compiles "
                                       r"for cpu, where compute_dtype 'auto' is float32"):
    train.Trainer(config, str(tmp_path / "run"), task=gpu_task)


@pytest.fixture(scope="module")
def checkpoints_2_and_4(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("checkpointed") / "run")
  train.Trainer(small_config(data_dir, steps=4, checkpoint_every=2, keep_checkpoints=3),
                workdir).run()
  return workdir


@pytest.mark.parametrize("damage", ["chunk", "metadata", "arrays"])
def test_a_damaged_checkpoint_is_named_with_the_one_to_resume_from(
    data_dir, checkpoints_2_and_4, tmp_path, damage, main_env):
  """A checkpoint missing a file, or whose arrays changed on disk, is the checkpoint's fault, not
  the config's: the error names it and the earlier checkpoint; moved aside as it says, the rerun
  resumes from that one; export names it too. (orbax's failed reads run in subprocesses: their
  leftover asyncio tasks log tracebacks from other threads, which can trip CPython 3.11's
  thread-unsafe AST parser in whatever this process parses next.)"""
  from darkjax.convert import io as convert_io  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "run")
  shutil.copytree(checkpoints_2_and_4, workdir)
  state = os.path.join(workdir, "checkpoints", "4", "state")
  files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(state, "d"))
           for f in names]
  if damage == "chunk":   # the largest array file of the OCDBT store
    os.remove(max(files, key=os.path.getsize))
  elif damage == "arrays":   # other values in its files (step 2's), which read back silently
    shutil.rmtree(state)
    shutil.copytree(os.path.join(workdir, "checkpoints", "2", "state"), state)
  else:
    os.remove(os.path.join(state, "_METADATA"))
  message = (r"checkpoint .*/checkpoints/4 cannot be read: a file of it is missing or damaged.*"
             r"a rerun then resumes from step 2")
  longer = small_config(data_dir, steps=6, checkpoint_every=2, keep_checkpoints=3)
  if damage == "arrays":
    with pytest.raises(ckpt_lib.DamagedCheckpointError, match=message) as raised:
      train.Trainer(longer, workdir).run()
    assert "array(s) read back differ from those saved" in str(raised.value)
    assert "params/stage1/conv/kernel" in str(raised.value)
    with pytest.raises(convert_io.CheckpointReadError, match=r"checkpoints/4 cannot be read"):
      convert_io.load_run_variables(workdir)
  else:
    run = subprocess.run(_main_command(workdir, data_dir, 6), cwd=REPO, env=main_env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [x for x in run.stderr.splitlines() if x.startswith("darkjax: ")]
    assert len(lines) == 1 and re.search(message, lines[0]), run.stderr[-2000:]
    if damage == "chunk":
      export = subprocess.run([sys.executable, "-m", "darkjax.tools.export", "--workdir", workdir,
                               "--out", str(tmp_path / "export")], cwd=REPO, env=main_env,
                              capture_output=True, text=True, timeout=300)
      assert export.returncode != 0 and "checkpoints/4 cannot be read" in export.stderr
  os.rename(os.path.join(workdir, "checkpoints", "4"), os.path.join(workdir, "damaged-4"))
  resumed = train.Trainer(longer, workdir)
  with resumed.scope():
    assert resumed.init_state() == 2


def test_a_resume_with_other_settings_says_which_and_keeps_the_config_that_trained(
    data_dir, tmp_path, caplog):
  workdir = str(tmp_path / "run")
  first = small_config(data_dir, steps=4, checkpoint_every=2)
  train.Trainer(first, workdir).run()
  again = small_config(data_dir, steps=6, checkpoint_every=2,
                       **{"optimizer.lr": first.optimizer.lr / 2})
  with caplog.at_level(logging.WARNING, logger="darkjax"):
    train.Trainer(again, workdir).run()
  kept = os.path.join(workdir, "config.until_step4.json")
  assert "resumed at step 4 with other settings" in caplog.text and kept in caplog.text
  assert "optimizer.lr" in caplog.text and "total_steps: 4 -> 6" in caplog.text
  with open(kept, encoding="utf-8") as f:
    assert json.load(f)["optimizer"]["lr"] == first.optimizer.lr
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["optimizer"]["lr"] == first.optimizer.lr / 2
  assert sorted(f for f in os.listdir(workdir) if f.startswith("config")) == [
      "config.json", "config.until_step4.json"]
  # A change in fields the phase never reads (`task.Phase.ignores`, an experiment arm's shared
  # phase) is said at info level, with no config kept
  caplog.clear()
  ignored = small_config(data_dir, steps=6, checkpoint_every=2, log_every=3,
                         **{"optimizer.lr": first.optimizer.lr / 2})
  with caplog.at_level(logging.INFO, logger="darkjax"):
    train.Trainer(ignored, workdir, ignores=("log_every",)).run()
  assert "with other settings" not in caplog.text
  assert "only in fields this phase does not read:\n  log_every: " in caplog.text
  assert not os.path.exists(os.path.join(workdir, "config.until_step6.json"))


def test_a_finished_run_rerun_with_other_settings_keeps_the_config_that_trained_it(
    data_dir, tmp_path, caplog):
  """Nothing is left to train: the changed settings change nothing, and config.json (which predict
  and export read the normalisation from) stays the one that trained the checkpoints."""
  workdir = str(tmp_path / "run")
  train.Trainer(small_config(data_dir, steps=2), workdir).run()
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    trained = f.read()
  again = small_config(data_dir, steps=2, **{"input.normalise": "imagenet"})
  with caplog.at_level(logging.WARNING, logger="darkjax"):
    train.Trainer(again, workdir).run()
  assert "already trained to step 2, with other settings" in caplog.text
  assert "input.normalise: 'per_clip' -> 'imagenet'" in caplog.text
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert f.read() == trained
  assert not [f for f in os.listdir(workdir) if f.startswith("config.until_step")]


def test_a_finished_run_rerun_with_other_evaluation_settings_evaluates_it_again(
    data_dir, tmp_path, caplog):
  """Another evaluation part (or views, or evaluators) on a finished run is evaluated, not the
  logged evaluation of the old part returned as the new one; every evaluation logged with the
  earlier settings is kept apart (no curve of one part continued on another), config.json and
  report.md say what the logged ones measured. A change to a setting the run was trained with
  beside it is refused; a failed evaluation leaves the logged one as it was."""
  workdir = str(tmp_path / "run")

  def config(**overrides):   # evaluated at both steps
    return small_config(data_dir, steps=2, eval_every=1, **overrides)

  first = train.Trainer(config(), workdir).run()
  assert first["eval/num_examples"] == 20   # the test part
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    trained = json.load(f)

  def logged():
    return [(row["step"], row.get("eval/num_examples")) for row in
            metrics_lib.read_metrics(workdir) if "train/loss" not in row]

  def earlier(key):
    with open(os.path.join(workdir, metrics_lib.EARLIER_EVALUATIONS), encoding="utf-8") as f:
      return [(row["step"], row["evaluated_with"][key]) for row in map(json.loads, f)]

  assert logged() == [(1, 20.0), (2, 20.0)]
  on_train = config(**{"input.data.eval_split": "train"})
  with caplog.at_level(logging.WARNING, logger="darkjax"):
    again = train.Trainer(on_train, workdir).run()
  assert "trained to step 2 already; evaluating it again" in caplog.text
  assert "input.data.eval_split: 'test' -> 'train'" in caplog.text
  assert again["eval/num_examples"] == 40   # the train part
  assert logged() == [(2, 40.0)]
  assert earlier("input.data.eval_split") == [(1, "test"), (2, "test")]
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    recorded = json.load(f)
  assert recorded["input"]["data"]["eval_split"] == "train"
  recorded["input"]["data"]["eval_split"] = "test"
  assert recorded == trained   # nothing else
  with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
    assert "evaluated on train" in f.read()

  caplog.clear()   # the same settings again: the logged evaluation, nothing evaluated
  with caplog.at_level(logging.INFO, logger="darkjax"):
    trainer = train.Trainer(on_train, workdir)
    assert trainer.run()["eval/num_examples"] == 40 and trainer.evaluated_step is None
  assert "its logged evaluation follows" in caplog.text

  mixed = config(**{"input.data.eval_split": "test", "input.normalise": "imagenet"})
  with pytest.raises(config_lib.ConfigError, match=r"(?s)changes what its evaluation measures:"
                     r"\n  input.data.eval_split: 'train' -> 'test'\nand settings it was trained "
                     r"with.*input.normalise: 'per_clip' -> 'imagenet'.*Rerun with only"):
    train.Trainer(mixed, workdir).run()
  # an evaluator's own part that the dataset lacks: named before anything runs
  with pytest.raises(prepared.DatasetSplitError, match=r"config.evals.eval.split 'val'.*parts "
                     r"are \['test', 'train'\]: set config.evals.eval.split to one of them"):
    train.Trainer(config(**{"evals.eval.split": "val"}), workdir).run()
  figure = pathlib.Path(workdir, "eval_confusion.png").read_bytes()   # of the train part
  real_evaluate = train.Trainer._evaluate   # pylint: disable=protected-access

  def evaluate_then_fail(self, step):   # after its figure is drawn
    real_evaluate(self, step)
    raise RuntimeError("broke")

  failing = train.Trainer(config(**{"input.data.eval_split": "test"}), workdir)
  with mock.patch.object(train.Trainer, "_evaluate", evaluate_then_fail), \
      pytest.raises(RuntimeError, match="broke"):
    failing.run()
  assert logged() == [(2, 40.0)] and len(earlier("input.data.eval_split")) == 2
  assert pathlib.Path(workdir, "eval_confusion.png").read_bytes() == figure
  assert not os.path.exists(os.path.join(workdir, train.STAGED_FIGURES))

  views = config(log_every=2,   # changes nothing
                 **{"input.data.eval_split": "train", "input.eval_clips": 2})
  trainer = train.Trainer(views, workdir)
  assert trainer.run()["eval/num_examples"] == 40 and trainer.evaluated_step == 2
  with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
    assert "- evaluation: 2 clips x 1 crop a video, averaged" in f.read()
  assert earlier("input.eval_clips") == [(1, 1), (2, 1), (2, 1)]


def test_an_evaluation_setting_changed_on_resume_sets_the_earlier_evaluations_apart(
    data_dir, tmp_path, caplog):
  """A run resumed with another evaluation part: its evaluations from then on are of that part,
  the earlier ones kept apart, said as that (not as a setting that trained it)."""
  workdir = str(tmp_path / "run")
  train.Trainer(small_config(data_dir, steps=4, eval_every=1), workdir).run(until=2)
  with caplog.at_level(logging.INFO, logger="darkjax"):
    train.Trainer(small_config(data_dir, steps=4, eval_every=1,
                               **{"input.data.eval_split": "train"}), workdir).run()
  assert "resumed at step 2 with other evaluation settings than its logged evaluations' " \
         "(those 2 rows moved" in caplog.text
  assert "with other settings than those that trained it" not in caplog.text
  counts = [(row["step"], row["eval/num_examples"]) for row in metrics_lib.read_metrics(workdir)
            if "eval/num_examples" in row]
  assert counts == [(2, 40.0), (3, 40.0), (4, 40.0)]   # the resumed step evaluated on train too
  assert "resumed at step 2, whose logged evaluation was of other settings; evaluating" in \
      caplog.text


def test_a_finished_runs_logged_evaluation_is_what_the_evaluation_returned(tmp_path):
  """A rerun of a finished run reports its logged evaluation: metrics.jsonl holds floats, and
  the example count comes back an int as the evaluation gave it (the reports leave counts out:
  a float count had added a row to report.md on every rerun)."""
  writer = metrics_lib.MetricsWriter(str(tmp_path))
  writer.write(4, {"eval/top1": 0.5, "eval/num_examples": 20, "train/loss": 1.0})
  writer.close()
  logged = metrics_lib.logged_evaluation(str(tmp_path), 4)
  assert logged == {"eval/top1": 0.5, "eval/num_examples": 20}
  assert isinstance(logged["eval/num_examples"], int)


def test_parameters_are_counted_with_those_optimizer_frozen_holds(data_dir, tmp_path):
  """A student's report says how many of its state's parameters train (its frozen teacher is in
  the state: the count alone read as twice the student)."""
  config = small_config(data_dir, steps=2, **{"optimizer.frozen": ("^head/",)})
  trainer = train.Trainer(config, str(tmp_path / "w"))
  trainer.build()
  head = trainer.abstract_state.params["head"]
  assert trainer.frozen_count == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(head)) > 0
  assert reports.parameters(trainer.param_count, trainer.frozen_count) == (
      f"{trainer.param_count:,} parameters ({trainer.param_count - trainer.frozen_count:,} "
      f"trained, {trainer.frozen_count:,} frozen)")
  assert reports.parameters(7271) == "7,271 parameters"
  assert reports.title(config) == "supervised / small3d_tiny"
  config.model.name = "supervised"
  assert reports.title(config) == "supervised"


def test_missing_prepared_dataset_says_how_to_prepare(tmp_path):
  config = small_config(str(tmp_path))
  config.input.data.name = "arid_v1"
  config.input.data.dir = str(tmp_path / "nowhere")
  config.input.short_side = 240   # the prepare command stores what the config reads
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match=r"(?s)arid_v1.*nowhere.*python -m darkjax.data.prepare --dataset arid_v1 "
                           r"--src \S+ --out \S+nowhere --short-side 240\n"):
    train.Trainer(config, str(tmp_path / "w")).run()


def test_corrupt_shard_names_file_and_offset(data_dir, tmp_path):
  import shutil
  broken = str(tmp_path / "broken")
  shutil.copytree(data_dir, broken)
  manifest = json.load(open(os.path.join(broken, "manifest.json"), encoding="utf-8"))
  shard = os.path.join(broken, manifest["splits"]["train"]["shards"][0]["file"])
  with open(shard, "r+b") as f:
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  config = small_config(broken)
  config.input.data.name = "prepared_copy"   # read as a prepared dataset: no regeneration
  from darkjax.data import records
  with pytest.raises(records.CorruptRecordError, match=r"tfrecord.*byte offset 0"):
    train.Trainer(config, str(tmp_path / "w")).run()



def test_a_corrupt_record_mid_run_keeps_the_trained_steps_and_the_fixed_rerun_trains_on(
    data_dir, tmp_path):
  # The last record of the train shard damaged: the run stops at the batch that reads it, having
  # saved the steps before it with the data position before that batch; once the shard is
  # restored, the rerun resumes there and its losses are the uninterrupted run's, bit for bit.
  import shutil
  from darkjax.data import records
  broken = str(tmp_path / "broken")
  shutil.copytree(data_dir, broken)
  manifest = json.load(open(os.path.join(broken, "manifest.json"), encoding="utf-8"))
  shard = os.path.join(broken, manifest["splits"]["train"]["shards"][0]["file"])
  good = open(shard, "rb").read()
  with open(shard, "r+b") as f:
    f.seek(len(good) - 100)
    f.write(bytes([good[-100] ^ 0xFF]))
  config = small_config(broken, steps=12, checkpoint_every=1000)
  config.input.data.name = "prepared_copy"   # read as a prepared dataset: no regeneration
  workdir = str(tmp_path / "w")
  with pytest.raises(records.CorruptRecordError, match=r"tfrecord.*byte offset \d+"):
    train.Trainer(config, workdir).run()
  stopped = max(losses(workdir))
  assert 1 <= stopped < 12
  assert sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints"))
                if p.isdigit()) == [stopped]   # every trained step kept
  with open(shard, "wb") as f:
    f.write(good)
  train.Trainer(config, workdir).run()
  uninterrupted = str(tmp_path / "u")
  train.Trainer(config, uninterrupted).run()
  assert losses(workdir) == losses(uninterrupted) and max(losses(workdir)) == 12

def test_wrong_frame_shape_is_reported_with_video_id(data_dir, tmp_path):
  from darkjax.data import records
  bad = str(tmp_path / "bad")
  manifest = records.load_manifest(data_dir)
  t, (h, w, c) = 16, manifest["frame_shape"]
  good = np.zeros((t, h, w, c), np.uint8)
  wrong = np.zeros((t, h, w, 1), np.uint8)
  examples = [dict(video=good, label=0, video_id=f"ok{i}") for i in range(7)]
  examples.append(dict(video=wrong, label=1, video_id="gray_clip"))
  records.write_dataset(bad, "bad", manifest["class_names"], {"train": examples, "test": examples},
                        fps=16, examples_per_shard=100)
  config = small_config(bad)
  config.input.data.name = "bad"
  config.input.shuffle_window = 0
  with pytest.raises(ValueError, match=r"gray_clip"):
    train.Trainer(config, str(tmp_path / "w")).run()


def test_a_first_example_that_fails_closes_the_pipeline_it_was_read_from(data_dir, tmp_path,
                                                                       monkeypatch):
  """The Trainer reads one example for the step's shapes: an error there closes that pipeline
  before it reaches the caller, so no file reader's prefetch thread is left running (one that is
  still reading when the process exits can abort it)."""
  from darkjax.data import pipeline  # pylint: disable=import-outside-toplevel

  def unreadable(self, element, rng):
    raise ValueError("record 0 of shard 0: unreadable")

  monkeypatch.setattr(pipeline._TrainClip, "random_map", unreadable)
  config = small_config(data_dir, **{"input.prefetch": 2})   # the default's prefetch thread
  assert config.input.cycle_length > 1   # and the files' readers (grain's interleave) each on one
  before = set(threading.enumerate())
  with pytest.raises(ValueError, match="unreadable") as raised:
    train.Trainer(config, str(tmp_path / "w")).build()
  # Its traceback, held as a caller holds it (logging it, or unhandled at exit), keeps the frames
  # and their locals alive: the pipeline must have been closed, not left to garbage collection.
  assert raised.tb is not None
  left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("grain")]
  assert left == []


def test_a_run_that_fails_after_opening_its_pipeline_closes_it_and_the_checkpointer(
    data_dir, tmp_path, monkeypatch):
  """Whatever fails once the run has opened its input pipeline and checkpointer (here the metrics
  writer, e.g. an unwritable tensorboard directory) closes both before the error reaches the
  caller: no file reader left running, no checkpointer held."""
  def unwritable(*args, **kwargs):
    raise OSError("tensorboard: permission denied")

  monkeypatch.setattr(metrics_lib, "MetricsWriter", unwritable)
  trainer = train.Trainer(small_config(data_dir, **{"input.prefetch": 2}), str(tmp_path / "w"))
  before = set(threading.enumerate())
  with pytest.raises(OSError, match="permission denied") as raised:
    trainer.run()
  assert raised.tb is not None   # held, as in the test above
  assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("grain")] == []
  assert trainer._checkpointer is None   # pylint: disable=protected-access


def test_unknown_config_key_fails_listing_valid_keys(tmp_path, main_env):
  result = subprocess.run(
      [sys.executable, "-m", "darkjax.main", "--config=configs/synthetic.py:runlocal",
       f"--workdir={tmp_path}", "--config.optimizer.lrr=0.1"],
      cwd=REPO, capture_output=True, text=True, env=main_env)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "lrr" in result.stderr and "lr" in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_run_leaves_metrics_tensorboard_confusion_png_and_report(data_dir, tmp_path):
  # eval once, at the end; steps 2-3 traced by jax.profiler (config.profile); XLA's own 3D
  # convolutions (a GPU or TPU step's ops; runlocal's small3d gets the CPU rewrites)
  config = small_config(data_dir, steps=4, eval_every=0,
                        **{"profile.steps": 2, "profile.skip": 1, "conv_lowering": "native"})
  workdir = str(tmp_path / "artifacts")
  trainer = train.Trainer(config, workdir, devices=jax.devices()[:1])
  results = trainer.run()
  rows = metrics_lib.read_metrics(workdir)
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]
  # a GPU's or TPU's logged rows carry the step's rate in XLA's count of its operations and its
  # share of the device's peak; a CPU's none
  train_rows = [r for r in rows if "train/loss" in r]
  assert not any("train/tflops_per_device" in r or "train/mfu" in r for r in train_rows)
  with mock.patch.object(aot, "peak_flops", lambda kind: 1e12), \
      mock.patch.object(trainer, "platform", "gpu"):   # as on a device with a known peak
    rates = trainer._flop_rates(2.0)   # pylint: disable=protected-access
  assert rates == pytest.approx({"train/tflops_per_device": trainer.step_flops() * 2.0 / 1e12,
                                 "train/mfu": trainer.step_flops() * 2.0 / 1e12})
  # counted the same by a Trainer that has not built its step yet (bench, a notebook)
  unbuilt = train.Trainer(config, str(tmp_path / "unbuilt"), devices=jax.devices()[:1])
  assert unbuilt.step_flops() == trainer.step_flops()
  final = [r for r in rows if "eval/top1" in r]
  assert len(final) == 1 and final[0]["step"] == 4
  assert 0.0 <= final[0]["eval/top1"] <= final[0]["eval/top5"] <= 1.0
  assert results["eval/num_examples"] == prepared.open_dataset(config.input.data).num_examples("test")
  assert int(np.sum(results["eval/confusion"])) == results["eval/num_examples"]
  events = [f for f in os.listdir(os.path.join(workdir, "tensorboard")) if "tfevents" in f]
  assert events and os.path.getsize(os.path.join(workdir, "tensorboard", events[0])) > 0
  with open(os.path.join(workdir, "eval_confusion.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  report = open(os.path.join(workdir, "report.md"), encoding="utf-8").read()
  assert "eval/top1" in report and "eval_confusion.png" in report
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "4"
  # the profile: TensorBoard's profile plugin's layout, and what the trace holds per kind of op
  traces = os.path.join(workdir, "tensorboard", "plugins", "profile")
  assert os.listdir(traces) == ["steps2-3"]
  [trace] = os.listdir(os.path.join(traces, "steps2-3"))
  assert trace.endswith("-process0.xplane.pb")
  profile = json.load(open(os.path.join(workdir, "profile.json"), encoding="utf-8"))
  assert (profile["first_step"], profile["last_step"], profile["steps"]) == (2, 3, 2)
  assert profile["device_ms_per_step"] > 0 and profile["wall_ms_per_step"] > 0
  # XLA's count of the step's operations per device, and the rate at the wall time (no peak on
  # a CPU)
  assert profile["flops_per_device_step"] == trainer.step_flops() > 0
  assert profile["utilisation"]["tflops"] == pytest.approx(
      profile["flops_per_device_step"] / profile["wall_ms_per_step"] / 1e9)
  assert "peak_fraction" not in profile["utilisation"]
  # small3d's convolutions, XLA:CPU's own ops (no direction), most of a CPU step
  assert max(profile["categories_ms"], key=profile["categories_ms"].get) == "convolution"
  assert any(entry["category"] == "convolution" and "dim_labels" in entry
             for entry in profile["top_ops_ms"])
  markdown = open(os.path.join(workdir, "profile.md"), encoding="utf-8").read()
  assert markdown.startswith("# Profile of train steps 2-3") and "| convolution |" in markdown
  jax.profiler.start_trace(str(tmp_path / "after"))   # the run stopped its trace
  jax.profiler.stop_trace()


def test_a_batch_the_devices_do_not_divide_trains_at_the_nearest_and_config_json_says_so(
    data_dir, tmp_path, caplog):
  config = small_config(data_dir, steps=2, eval_every=0, **{"input.batch_size": 6,
                                                             "input.eval_batch_size": 6})
  workdir = str(tmp_path / "rounded")
  with caplog.at_level(logging.INFO, logger="darkjax"):
    trainer = train.Trainer(config, workdir, devices=jax.devices()[:4])
    results = trainer.run()
  assert ("phase train: global batch 6 is not divisible by the 4 devices of the mesh: training "
          "with 8 (the nearest multiple; config.batch_rounding='error' refuses instead); the "
          "learning rate is not rescaled") in caplog.messages
  saved = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))["input"]
  assert (saved["batch_size"], saved["batch_size_requested"]) == (8, 6)
  assert (saved["eval_batch_size"], saved["eval_batch_size_requested"]) == (8, 6)
  assert sorted(losses(workdir)) == [1, 2]
  assert results["eval/num_examples"] == trainer.task.data.dataset.num_examples("test")
  assert "global batch 8 (config 6, rounded for the mesh's devices)" in open(
      os.path.join(workdir, "report.md"), encoding="utf-8").read()
  strict = small_config(data_dir, batch_rounding="error", **{"input.batch_size": 6})
  with pytest.raises(config_lib.ConfigError, match=r"^phase train: config.input.batch_size 6 is "
                     r"not divisible by the 4 devices of the mesh; batches that run here: 4 or 8"):
    train.Trainer(strict, str(tmp_path / "strict"), devices=jax.devices()[:4])


def test_checkpoints_open_without_orbaxs_warnings_of_what_darkjax_asks_for(tmp_path, caplog):
  # Replacing orbax's jax.Array handler and opening another run's checkpoints read-only are on
  # purpose: orbax's warnings of them are left out of a run's log, any other warning kept.
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  from darkjax import checkpoint  # pylint: disable=import-outside-toplevel
  checkpoint.Checkpointer(str(tmp_path), async_save=False).save(
      1, {"w": np.ones(3, np.float32)}, None, {"step": 1})
  ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(),
                                          override=True)   # orbax's own, as a fresh process has
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    reader = checkpoint.Checkpointer(str(tmp_path), read_only=True)
    absl_logging.warning("Given directory is read only, said by someone else")
  assert reader.latest_step() == 1
  assert ocp.type_handlers.get_type_handler(jax.Array)._min_slice_bytes_for_replica_parallel == (
      checkpoint.REPLICA_PARALLEL_MIN_BYTES)
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
      "Given directory is read only, said by someone else"]


def test_checkpoint_of_replicated_small_arrays_compiles_no_slices(tmp_path):
  # Replicated over the 8 test devices, orbax's replica-parallel save slices each array per
  # replica, one XLA compile per slice; below REPLICA_PARALLEL_MIN_BYTES a replica's slice, one
  # replica writes the array whole. A large array is still written (and read back) right.
  from jax import monitoring  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
  from darkjax import checkpoint  # pylint: disable=import-outside-toplevel
  replicated = NamedSharding(jax.make_mesh((8,), ("data",)), PartitionSpec())
  small = {f"w{i}": jax.device_put(np.full((3 + i, 5), i, np.float32), replicated)
           for i in range(6)}
  big = 8 * checkpoint.REPLICA_PARALLEL_MIN_BYTES // 4   # float32: 1 MiB a replica's slice
  large = dict(small, big=jax.device_put(np.arange(big, dtype=np.float32), replicated))
  compiles = []
  listener = lambda event, duration, **_: compiles.append(event)  # noqa: E731
  saver = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  checkpoint.fingerprints(small)   # the state's fingerprint program, compiled once per run
  monitoring.register_event_duration_secs_listener(listener)
  try:
    saver.save(1, small, None, {"step": 1})
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert "/jax/core/compile/backend_compile_duration" not in compiles
  saver.save(2, large, None, {"step": 2})
  for step, state in ((1, small), (2, large)):
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                            state)
    restored, meta = checkpoint.Checkpointer(str(tmp_path)).restore(step, abstract, None)
    assert meta == {"step": step}
    for key, value in state.items():
      np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(value), err_msg=key)


def test_a_workdir_rerun_with_another_model_names_what_changed_and_keeps_the_run(
    data_dir, tmp_path, capfd, monkeypatch):
  workdir = str(tmp_path / "run")
  train.Trainer(small_config(data_dir, steps=2), workdir).run()
  saved = open(os.path.join(workdir, "config.json"), encoding="utf-8").read()
  rows = metrics_lib.read_metrics(workdir)
  other = small_config(data_dir, steps=4, **{"model.name": "resnet3d_tiny"})
  compiled = []   # found from the checkpoint's metadata before the step compiles
  monkeypatch.setattr(train.Trainer, "compile_step", lambda self, *a, **k: compiled.append(1))
  with pytest.raises(train.CheckpointMismatchError,
                     match=r"(?s)^cannot restore checkpoint .*/checkpoints/2 into this run's "
                     r"state\. This run's config differs from the one that trained the checkpoint "
                     r".*config\.json.*model\.name: 'small3d_tiny' -> 'resnet3d_tiny'.*"
                     r"new --workdir.*\nIts arrays differ from this run's state \(\d+ in all\):"
                     r"\n  model_state/batch_stats/.*: not in the checkpoint"):
    train.Trainer(other, workdir).run()
  assert compiled == []
  # read from the checkpoint's metadata: no array restore started (orbax's threads, failing
  # together, printed a traceback each)
  assert "Traceback" not in capfd.readouterr().err
  assert open(os.path.join(workdir, "config.json"), encoding="utf-8").read() == saved
  assert metrics_lib.read_metrics(workdir) == rows


def test_weights_that_do_not_fit_the_model_stop_the_run_before_anything_compiles(
    data_dir, tmp_path, monkeypatch):
  """`Trainer.check_pretrained`: a fresh run merges its weights into zeros of the state's shapes
  before its first compile (on a TPU, minutes that cannot be interrupted)."""
  from darkjax.convert import io as convert_io  # pylint: disable=import-outside-toplevel
  from darkjax.models import small3d  # pylint: disable=import-outside-toplevel
  other_head = small3d.VARIANTS["small3d_tiny"](num_classes=3)
  weights = jax.device_get(jax.jit(other_head.init)(jax.random.key(1), jnp.zeros((1, 4, 8, 8, 3))))
  convert_io.save_variables(str(tmp_path / "weights"), weights, {"arch": "small3d_tiny"})
  compiled = []
  for name in ("compile_step", "compile_init"):
    monkeypatch.setattr(train.Trainer, name,
                        lambda self, *a, name=name, **k: compiled.append(name))
  config = small_config(data_dir, steps=4, model_init=str(tmp_path / "weights"))
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=r"wrong shape.*params/head"):
    train.Trainer(config, str(workdir)).run()
  assert compiled == [] and not ckpt_lib.has_steps(str(workdir))
  # the head left out: the check passes, then the compiles run
  config.model_load.dont_load = ("^params/head/",)
  trainer = train.Trainer(config, str(tmp_path / "fixed"))
  trainer.compile_start()
  assert sorted(compiled) == ["compile_init", "compile_step"]


def test_evaluations_during_training_leave_its_steps_unchanged(data_dir, tmp_path):
  """`eval_every` evaluates the live state mid-run (batch statistics, rng and the donated state
  untouched): the same losses as a run that evaluates only at its end, and an evaluation of the
  whole test split at each multiple."""
  plain, evaluating = str(tmp_path / "plain"), str(tmp_path / "evaluating")
  train.Trainer(small_config(data_dir, steps=6, eval_every=0), plain).run()
  config = small_config(data_dir, steps=6, eval_every=2)
  train.Trainer(config, evaluating).run()
  assert losses(evaluating) == losses(plain) and sorted(losses(plain)) == list(range(1, 7))
  evals = [row for row in metrics_lib.read_metrics(evaluating) if "eval/top1" in row]
  test_clips = prepared.open_dataset(config.input.data).num_examples("test")
  assert [(row["step"], row["eval/num_examples"]) for row in evals] == [
      (2, test_clips), (4, test_clips), (6, test_clips)]
  final = [row for row in metrics_lib.read_metrics(plain) if "eval/top1" in row]
  assert [(row["step"], row["eval/top1"]) for row in final] == [(6, evals[-1]["eval/top1"])]


def test_a_run_stopped_after_its_last_step_evaluates_and_reports_when_rerun(data_dir, tmp_path,
                                                                            monkeypatch):
  """SIGTERM in the last step: the run saves that step and stops before its final evaluation; the
  rerun trains nothing, makes the evaluation, logs it once and writes report.md."""
  config = small_config(data_dir, steps=4, eval_every=0)
  workdir = str(tmp_path / "run")
  with monkeypatch.context() as patch:
    patch.setattr(preemption.PreemptionWatch, "reached", lambda self, step: step == 4)
    with pytest.raises(preemption.Preempted):
      train.Trainer(config, workdir).run()
  assert not [row for row in metrics_lib.read_metrics(workdir) if "eval/top1" in row]
  results = train.Trainer(config, workdir).run()
  evals = [row for row in metrics_lib.read_metrics(workdir) if "eval/top1" in row]
  assert [row["step"] for row in evals] == [4] and results["eval/top1"] == evals[0]["eval/top1"]
  assert os.path.isfile(os.path.join(workdir, "report.md"))
  again = train.Trainer(config, workdir).run()   # evaluated once: a third run only reports it
  assert again["eval/top1"] == results["eval/top1"]
  assert len([row for row in metrics_lib.read_metrics(workdir) if "eval/top1" in row]) == 1


def test_accumulated_micro_batches_stay_split_over_the_devices(data_dir, tmp_path):
  """accum_steps on 4 devices: each micro-step runs every device's share of one micro-batch (no
  gathered batch), so the step needs less memory than without accumulation."""
  needs, programs = {}, {}
  for accum in (1, 2):
    config = small_config(data_dir, accum_steps=accum)
    config.mesh.data = 4
    trainer = train.Trainer(config, str(tmp_path / f"accum{accum}"), devices=jax.devices()[:4])
    needs[accum] = trainer.compile_step()
    programs[accum] = trainer.compiled_step.as_text()
  assert "all-gather" not in programs[2], "the micro-batches were gathered"
  assert needs[2] < needs[1], needs


@pytest.mark.parametrize("key, value", [("log_every", 0), ("checkpoint_every", 0),
                                        ("keep_checkpoints", 0), ("eval_every", -2)])
def test_cadence_settings_out_of_range_name_the_key_before_anything_runs(key, value):
  config = synthetic_config.get_config("runlocal")
  config[key] = value
  with pytest.raises(config_lib.ConfigError, match=rf"^config\.{key} is {value}; it must be at "
                                                   r"least -?\d \("):
    config_lib.validate(config)


def test_a_mistyped_evaluator_stops_the_run_before_its_first_step(data_dir, tmp_path):
  config = small_config(data_dir, steps=4, eval_every=0)
  config.evals.eval.type = "classificaton"
  workdir = str(tmp_path / "run")
  with pytest.raises(config_lib.ConfigError, match=r"config\.evals\.eval\.type 'classificaton' "
                                                   r"unknown; valid: \["):
    train.Trainer(config, workdir).run()
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))


def test_an_evaluation_that_fails_mid_run_keeps_the_steps_trained(data_dir, tmp_path,
                                                                  monkeypatch):
  """The evaluation at step 3 raises (an evaluator's bug, the device's memory): step 3 is saved
  before the error reaches the user (checkpoints every 1000 steps), and the rerun resumes there."""
  config = small_config(data_dir, steps=6, eval_every=3)
  workdir = str(tmp_path / "run")
  evaluate = train.Trainer.evaluate

  def failing(self, step):
    if step == 3:
      raise RuntimeError("evaluator failed")
    return evaluate(self, step)

  with monkeypatch.context() as patch:
    patch.setattr(train.Trainer, "evaluate", failing)
    with pytest.raises(RuntimeError, match="evaluator failed"):
      train.Trainer(config, workdir).run()
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]
  train.Trainer(config, workdir).run()
  assert sorted(losses(workdir)) == list(range(1, 7))
