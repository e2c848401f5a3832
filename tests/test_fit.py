"""darkjax.fit: a step over the device's memory stops before training naming what fits; fit=auto
trains with the first setting that fits, keeps the global batch and resumes with the same choice;
an out-of-memory error while running becomes one message that names the last checkpoint."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import subprocess
import sys
import threading
import time

import jax
import pytest

from configs import synthetic as synthetic_config
from darkjax import fit as fit_lib
from darkjax import metrics as metrics_lib
from darkjax import task as task_lib
from darkjax import phases, train
from darkjax.data import prepared
from run_configs import REPO, quiet


def _config(data_dir: str, steps: int = 2, **overrides):
  config = synthetic_config.get_config(f"runlocal,steps={steps},data_dir={data_dir}")
  config.eval_every = -1
  config.log_every = 1
  return quiet(config, **overrides)


@pytest.fixture(scope="module")
def needs(tmp_path_factory):
  """(data dir, bytes per device of the runlocal step, and of the same step at accum_steps=2)."""
  data_dir = str(tmp_path_factory.mktemp("data"))
  prepared.open_dataset(_config(data_dir).input.data)
  out = []
  for accum in (1, 2):
    config = _config(data_dir, accum_steps=accum)
    task = task_lib.load_task(config)
    out.append(train.Trainer(config, str(tmp_path_factory.mktemp("probe")), task=task,
                             devices=jax.devices()[:1]).compile_step())
  assert out[1] < out[0], out   # micro-batches: less activation memory at the same global batch
  return data_dir, out[0], out[1]


def _between(needs) -> float:
  _, whole, halved = needs
  return (whole + halved) / 2 / fit_lib.GIB


def test_a_step_over_the_limit_stops_before_training_naming_what_fits(needs, tmp_path):
  data_dir = needs[0]
  config = _config(data_dir, device_memory_gib=_between(needs))
  with pytest.raises(fit_lib.DeviceMemoryError) as error:
    phases.run_phases(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  message = str(error.value)
  assert f"phase train: the train step needs {needs[1] / fit_lib.GIB:.2f} GiB per device, " \
         f"{_between(needs):.2f} GiB available" in message
  assert f"global batch {config.input.batch_size}, 1 device(s)" in message
  assert "Settings that fit, each compiled and checked: accum_steps=2 (" in message
  assert "--config.fit=auto" in message
  assert not os.path.exists(tmp_path / "run" / "checkpoints")   # nothing trained


def test_fit_auto_trains_with_accumulation_and_resumes_with_the_same_choice(needs, tmp_path,
                                                                            caplog):
  data_dir = needs[0]
  workdir = str(tmp_path / "run")
  config = _config(data_dir, device_memory_gib=_between(needs), fit="auto")
  phases.run_phases(config, workdir, devices=jax.devices()[:1])
  assert "2 micro-batches of" in caplog.text and "BatchNorm normalises each" in caplog.text
  saved = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))
  assert saved["accum_steps"] == 2 and json.loads(saved["fit_applied"]) == {"accum_steps": 2}
  assert saved["input"]["batch_size"] == config.input.batch_size   # the global batch is kept
  more = _config(data_dir, steps=4, device_memory_gib=_between(needs), fit="auto")
  phases.run_phases(more, workdir, devices=jax.devices()[:1])
  saved = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))
  assert saved["accum_steps"] == 2 and saved["total_steps"] == 4
  steps = [r["step"] for r in metrics_lib.read_metrics(workdir) if "train/loss" in r]
  assert steps == [1, 2, 3, 4]


def test_out_of_memory_while_running_names_the_step_and_the_checkpoint(needs, tmp_path):
  config = _config(needs[0], steps=3, checkpoint_every=1)
  trainer = train.Trainer(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  trainer.build()
  real = trainer.train_step
  calls = []

  def exhausted(state, batch, rng):
    calls.append(1)
    if len(calls) == 2:
      raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                       "allocate 123456 bytes.")
    return real(state, batch, rng)

  trainer.train_step = exhausted
  with pytest.raises(fit_lib.DeviceMemoryError,
                     match=r"phase train, step 2: the device ran out of memory \(RESOURCE_EXHAUSTED"
                     r".*Last completed checkpoint: .*checkpoints/1 \(intact"):
    trainer.run()
  assert fit_lib.out_of_memory(RuntimeError("... Out of memory ...")) and not \
      fit_lib.out_of_memory(RuntimeError("INVALID_ARGUMENT"))


def test_a_new_choice_adds_to_the_stored_one():
  config = synthetic_config.get_config("runlocal")
  resumed = fit_lib._applied(config, {"accum_steps": 2})
  again = fit_lib._applied(resumed, {"model.kwargs.remat": "full", "accum_steps": 4})
  assert json.loads(again.fit_applied) == {"accum_steps": 4, "model.kwargs.remat": "full"}
  assert (again.accum_steps, again.model.kwargs.remat) == (4, "full")


def test_the_limit_is_read_from_a_device_this_process_holds():
  """On a multi-host mesh the first device is process 0's: another process cannot read its
  memory (jax raises), and its check would pass silently while process 0's stopped."""
  class Device:
    def __init__(self, limit):
      self.limit = limit

    def memory_stats(self):
      if self.limit is None:
        raise jax.errors.JaxRuntimeError("MemoryStats is only supported for addressable devices")
      return {"bytes_limit": self.limit}

  class Mesh:   # process 1's view: devices.flat[0] is process 0's
    devices = [Device(None), Device(7 * 2 ** 30)]
    local_devices = devices[1:]

  assert fit_lib.device_limit({}, Mesh.devices[0]) is None
  assert fit_lib.mesh_limit({}, Mesh()) == 7 * 2 ** 30
  assert fit_lib.mesh_limit({"device_memory_gib": 2.0}, Mesh()) == 2 * 2 ** 30


def test_candidates_keep_the_global_batch_in_order():
  config = synthetic_config.get_config("runlocal")
  config.input.batch_size = 16
  config.compute_dtype = "float32"
  found = fit_lib.candidates(config, "gpu", devices=2)
  assert found[0] == {"compute_dtype": "bfloat16"}
  assert found[1:4] == [{"accum_steps": 2}, {"accum_steps": 4}, {"accum_steps": 8}]
  assert found[-1] == {"mesh.data": 1, "mesh.fsdp": -1}
  assert {"compute_dtype": "bfloat16"} not in fit_lib.candidates(config, "cpu", devices=1)
  assert all(16 % (c.get("accum_steps", 1) * 2) == 0 for c in found)
  config.input.batch_size = 30   # runs as 32 on 4 devices: every accumulation divides that
  assert [c for c in fit_lib.candidates(config, "cpu", devices=4) if "accum_steps" in c][:3] == \
      [{"accum_steps": 2}, {"accum_steps": 4}, {"accum_steps": 8}]


def test_main_prints_one_line_without_a_traceback(needs, tmp_path, main_env):
  result = subprocess.run(
      [sys.executable, "-m", "darkjax.main",
       f"--config=configs/synthetic.py:runlocal,steps=2,data_dir={needs[0]}",
       f"--workdir={tmp_path / 'run'}", "--config.device_memory_gib=0.000001",
       "--config.progress_bar=False"], cwd=REPO, env=main_env, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert "darkjax: phase train: the train step needs" in result.stderr


@pytest.mark.parametrize("args, line", [
    (["--config", "configs/synthetic.py", "--target", "h999:1"],
     "unknown compile-only target 'h999:1'; valid targets: h100[:1]"),
    (["--config", "configs/nope.py"], "configs/nope.py does not exist"),
    (["--config", "configs/synthetic.py:stepz=1"],
     "config configs/synthetic.py:stepz=1: unknown config arg 'stepz'"),
    (["--config", "configs/synthetic.py", "--override", "optimizer.lrr=1"],
     "config override 'optimizer.lrr': no field 'lrr'; valid keys there: ['b1'"),
    (["--config", "configs/actlumos_synthetic.py:runlocal", "--phase", "teachr"],
     "--phase teachr: trainer 'actlumos' has phases ['teacher', 'ssl', 'student'], not 'teachr'"),
    (["--config", "configs/synthetic.py", "--override", "input.batch_size=abc"],
     "--override input.batch_size=abc: Could not override field 'batch_size'"),
], ids=["target", "config_file", "config_arg", "override", "phase", "override_type"])
def test_fit_command_says_what_is_wrong_in_one_line(args, line, capsys):
  from darkjax.tools import fit as fit_tool  # pylint: disable=import-outside-toplevel
  assert fit_tool.cli(args + ["--cache", ""]) == 2
  err = capsys.readouterr().err
  assert err.startswith("darkjax.tools.fit: ") and line in err and "Traceback" not in err, err


def test_fit_command_checks_its_numbers_cache_and_outputs_before_compiling(tmp_path, capsys):
  from darkjax.tools import fit as fit_tool  # pylint: disable=import-outside-toplevel
  base = ["--config", "configs/synthetic.py", "--cache", ""]
  for flag in ("--batch", "--frames"):
    with pytest.raises(SystemExit):   # 0 was read as "the config's own"
      fit_tool.cli(base + [flag, "0"])
    assert f"{flag} 0: must be >= 1" in capsys.readouterr().err
  (tmp_path / "cache.json").write_text("{bad")
  assert fit_tool.cli(base[:-2] + ["--cache", str(tmp_path / "cache.json")]) == 2
  assert f"--cache {tmp_path / 'cache.json'}: not a readable verdict cache" in \
      capsys.readouterr().err
  assert fit_tool.cli(base + ["--json", str(tmp_path / "nodir" / "fit.json")]) == 2
  assert f"--json {tmp_path / 'nodir' / 'fit.json'}: {tmp_path / 'nodir'} does not exist" in \
      capsys.readouterr().err
  # the stand-in data of a run without --workdir is removed, after a failed one too
  before = set(os.listdir(tempfile.gettempdir()))
  assert fit_tool.cli(base + ["--phase", "nope"]) == 2
  assert not {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("darkjax-fit-")} - \
      before


def test_the_verdict_cache_serves_a_call_without_workdir(tmp_path, monkeypatch, capsys):
  """Without --workdir each call's stand-in data lies in a new temporary directory: its path is
  no part of the cache key, so the second call reads the verdict instead of compiling again."""
  from darkjax import train  # pylint: disable=import-outside-toplevel
  from darkjax.tools import fit as fit_tool  # pylint: disable=import-outside-toplevel
  argv = ["--config", "configs/synthetic.py:runlocal", "--default-only", "--cache",
          str(tmp_path / "cache.json")]
  first, = fit_tool.main(argv)
  monkeypatch.setattr(train.Trainer, "compile_step", lambda self: pytest.fail("compiled"))
  again, = fit_tool.main(argv)
  assert again["need_bytes"] == first["need_bytes"] and "[cached]" in capsys.readouterr().out


@pytest.mark.parametrize("checked", [False, True])
def test_a_run_compiles_its_step_once_beside_the_init(needs, tmp_path, compiles, checked):
  """A fresh run's train step compiles on a thread of its own while the init program compiles,
  once: the first step reuses it, also after the memory check compiled it (`fit_phase`), whose
  compile it was not before (the run's key differed from the abstract one in its sharding). A
  resumed run compiles no init."""
  overrides = {"device_memory_gib": 1000.0} if checked else {}
  workdir = str(tmp_path / "run")
  phases.run_phases(_config(needs[0], **overrides), workdir, devices=jax.devices()[:1])
  steps = [thread for name, thread in compiles.seen if name == "train_step"]
  inits = [thread for name, thread in compiles.seen if name == "init"]
  assert len(steps) == 1 and len(inits) == 1, compiles.seen
  assert steps[0].startswith("darkjax-compile-") and inits == ["MainThread"]
  compiles.seen.clear()
  phases.run_phases(_config(needs[0], steps=3, **overrides), workdir, devices=jax.devices()[:1])
  assert [name for name, _ in compiles.seen if name in ("train_step", "init")] == ["train_step"]
  steps = [r["step"] for r in metrics_lib.read_metrics(workdir) if "train/loss" in r]
  assert steps == [1, 2, 3]


def test_a_step_that_compiles_too_large_stops_naming_the_checkpoint(needs, tmp_path, monkeypatch):
  """A step compile that runs out of device memory (beside the init's) stops the run with the
  one out-of-memory message, naming the checkpoint a resumed run left intact."""
  workdir = str(tmp_path / "run")
  phases.run_phases(_config(needs[0], checkpoint_every=1), workdir, devices=jax.devices()[:1])

  def exhausted(self):
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran "
                                     "out of memory in memory space hbm.")

  monkeypatch.setattr(train.Trainer, "compile_step", exhausted)
  closed, with_workers = [], train.pipeline.with_workers

  class Closing:   # the run's input iterator, its close() recorded
    def __init__(self, iterator):
      self.iterator = iterator

    def __getattr__(self, name):
      return getattr(self.iterator, name)

    def __iter__(self):
      return self

    def __next__(self):
      return next(self.iterator)

    def close(self):
      closed.append(1)
      self.iterator.close()

  monkeypatch.setattr(train.pipeline, "with_workers",
                      lambda *a, **k: Closing(iter(with_workers(*a, **k))))
  with pytest.raises(fit_lib.DeviceMemoryError,
                     match=r"phase train, compiling the train step: the device ran out of memory "
                     r"\(RESOURCE_EXHAUSTED.*Last completed checkpoint: .*checkpoints/2 \(intact"):
    phases.run_phases(_config(needs[0], steps=3), workdir, devices=jax.devices()[:1])
  assert closed == [1]   # the input workers stopped before the error left the run
  steps = [r["step"] for r in metrics_lib.read_metrics(workdir) if "train/loss" in r]
  assert steps == [1, 2]   # nothing lost, nothing more trained


def test_an_interrupted_start_stops_only_once_the_step_compile_ends(needs, tmp_path,
                                                                    monkeypatch, caplog):
  """Ctrl-C (or the block's own error) while the step compiles on its thread: raised once that
  compile has ended (a process that exits while XLA compiles on a thread aborts), with one
  message however often Ctrl-C comes."""
  ended = []
  compile_step = train.Trainer.compile_step

  def slow_compile(self):
    time.sleep(0.5)
    compile_step(self)
    ended.append(time.monotonic())

  def interrupted(self):
    raise KeyboardInterrupt

  monkeypatch.setattr(train.Trainer, "compile_step", slow_compile)
  monkeypatch.setattr(train.Trainer, "compile_init", interrupted)
  with pytest.raises(KeyboardInterrupt):
    phases.run_phases(_config(needs[0]), str(tmp_path / "run"), devices=jax.devices()[:1])
  raised = time.monotonic()
  assert len(ended) == 1 and ended[0] <= raised
  # Ctrl-C twice while waiting: one message, then KeyboardInterrupt once the thread is done
  done, calls = threading.Event(), []

  class Interrupted:
    def wait(self):
      calls.append(1)
      if len(calls) <= 2:
        raise KeyboardInterrupt
      done.wait()

  worker = threading.Thread(target=lambda: (time.sleep(0.2), done.set()))
  worker.start()
  with caplog.at_level(logging.WARNING, logger="darkjax"):
    assert train._wait_for(worker, Interrupted())   # pylint: disable=protected-access
  assert not worker.is_alive() and len(calls) == 3
  assert [r.getMessage() for r in caplog.records].count(
      "interrupted: stopping once the train step's compile ends (XLA cannot stop a compile)") == 1
  assert not train._wait_for(worker, done)   # pylint: disable=protected-access


def test_has_steps_lists_step_directories_only(tmp_path):
  from darkjax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  assert not ckpt_lib.has_steps(str(tmp_path))   # no checkpoints directory
  (tmp_path / "checkpoints" / "tmp.orbax-checkpoint-tmp-1").mkdir(parents=True)
  assert not ckpt_lib.has_steps(str(tmp_path))
  (tmp_path / "checkpoints" / "12").mkdir()
  assert ckpt_lib.has_steps(str(tmp_path))


# ---------------------------------------------------------------- evaluations
def _evaluating(data_dir: str, **overrides):
  """The runlocal config evaluating once, at its end, at eval batch 32."""
  config = _config(data_dir, **overrides)
  config.eval_every = 0
  config.input.eval_batch_size = 32
  return config


@pytest.fixture(scope="module")
def eval_limit(needs, tmp_path_factory):
  """A limit the train step and the evaluation at eval batch 16 fit, and the one at 32 does not
  (each evaluation's bytes with the train state resident, `Trainer.compile_evals`)."""
  found = {}
  for batch in (32, 16):
    config = _evaluating(needs[0])
    config.input.eval_batch_size = batch
    trainer = train.Trainer(config, str(tmp_path_factory.mktemp("eval")),
                            task=task_lib.load_task(config), devices=jax.devices()[:1])
    found[batch] = trainer.compile_evals()["eval"]
  low = max(needs[1], found[16])
  assert found[32] > low, (found, needs)   # the eval forward at 32 clips outweighs the train step
  return (low + found[32]) / 2 / fit_lib.GIB


def test_an_evaluation_over_the_limit_stops_before_training_naming_the_eval_batch(
    needs, eval_limit, tmp_path):
  config = _evaluating(needs[0], device_memory_gib=eval_limit)
  config.input.eval_clips = 3   # scored one view at a time: the same memory as one view
  with pytest.raises(fit_lib.DeviceMemoryError) as error:
    phases.run_phases(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  message = str(error.value)
  assert ("phase train: evaluation 'eval' at eval batch 32 (input.eval_batch_size; 3 view(s) per "
          "example") in message
  assert f"GiB per device with the train state, {eval_limit:.2f} GiB available" in message
  assert "Eval batch 16 fits (" in message and "--config.input.eval_batch_size=16" in message
  assert not os.path.exists(tmp_path / "run" / "checkpoints")   # nothing trained


def test_fit_auto_evaluates_at_the_batch_that_fits_compiled_before_training(
    needs, eval_limit, tmp_path, compiles):
  workdir = str(tmp_path / "run")
  config = _evaluating(needs[0], device_memory_gib=eval_limit, fit="auto")
  config.input.eval_clips = 2   # the run's evaluation scores two views, one after the other
  results = phases.run_phases(config, workdir, devices=jax.devices()[:1])
  saved = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))
  assert saved["input"]["eval_batch_size"] == 16
  assert json.loads(saved["fit_applied"]) == {"input.eval_batch_size": 16}
  assert 0.0 <= results["eval/top1"] <= 1.0
  # compiled at 32 and at 16 by the check; the run's evaluation reused the one at 16
  assert [name for name, _ in compiles.seen].count("eval_step") == 2, compiles.seen


def test_out_of_memory_in_an_evaluation_names_it_and_the_eval_batch(needs, tmp_path, monkeypatch):
  def exhausted(self, step):
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                     "allocate 123456 bytes.")

  monkeypatch.setattr(train.Trainer, "evaluate", exhausted)
  with pytest.raises(fit_lib.DeviceMemoryError,
                     match=r"phase train, evaluation at step 2: the device ran out of memory "
                     r"\(RESOURCE_EXHAUSTED.*checkpoints/2 \(intact.*lower "
                     r"--config.input.eval_batch_size"):
    phases.run_phases(_evaluating(needs[0]), str(tmp_path / "run"), devices=jax.devices()[:1])


def test_eval_batch_candidates_halve_on_the_devices():
  assert fit_lib.eval_batch_candidates(32, 1) == [16, 8, 4, 2, 1]
  assert fit_lib.eval_batch_candidates(32, 8) == [16, 8]
  assert fit_lib.eval_batch_candidates(30, 4) == [12, 4]
  assert fit_lib.eval_batch_candidates(4, 4) == []


# XLA:TPU fails a compile whose program does not fit the chip's HBM (no memory analysis to read)
_TPU_OOM = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
            "temporaries (63.90G) exceeds available HBM (15.75G).")


@pytest.mark.parametrize("mode", ["check", "auto"])
def test_a_compile_over_the_devices_memory_is_a_setting_that_does_not_fit(needs, tmp_path,
                                                                          monkeypatch, mode):
  """Where the compiler itself refuses a step too large for the device (XLA:TPU), the fit check
  takes it as a setting that does not fit: it names the settings that do, and fit=auto trains with
  the first, as where XLA's memory analysis says so."""
  compile_step = train.Trainer.compile_step

  def refused_at_one_micro_batch(self):
    if int(self.config.accum_steps) == 1:
      raise jax.errors.JaxRuntimeError(_TPU_OOM)
    return compile_step(self)

  monkeypatch.setattr(train.Trainer, "compile_step", refused_at_one_micro_batch)
  workdir = str(tmp_path / "run")
  config = _config(needs[0], device_memory_gib=1000.0, fit=mode)
  if mode == "check":
    with pytest.raises(fit_lib.DeviceMemoryError) as error:
      phases.run_phases(config, workdir, devices=jax.devices()[:1])
    message = str(error.value)
    assert ("phase train: the train step does not compile within the device's memory (63.90 GiB "
            "per device): RESOURCE_EXHAUSTED: Ran out of memory on HBM") in message
    assert "Settings that fit, each compiled and checked: accum_steps=2 (" in message
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
  else:
    phases.run_phases(config, workdir, devices=jax.devices()[:1])
    saved = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))
    assert saved["accum_steps"] == 2 and json.loads(saved["fit_applied"]) == {"accum_steps": 2}


def test_an_evaluation_the_compiler_refuses_names_the_eval_batch_that_compiles(
    needs, tmp_path, monkeypatch):
  compile_evals = train.Trainer.compile_evals

  def refused_at_32(self):
    if int(self.config.input.eval_batch_size) == 32:
      raise jax.errors.JaxRuntimeError(_TPU_OOM)
    return compile_evals(self)

  monkeypatch.setattr(train.Trainer, "compile_evals", refused_at_32)
  with pytest.raises(fit_lib.DeviceMemoryError) as error:
    phases.run_phases(_evaluating(needs[0], device_memory_gib=1000.0), str(tmp_path / "run"),
                     devices=jax.devices()[:1])
  message = str(error.value)
  assert ("phase train: an evaluation at eval batch 32 (input.eval_batch_size; 1 view(s) per "
          "example") in message
  assert "does not compile within the device's memory (63.90 GiB per device)" in message
  assert "Eval batch 16 fits (" in message


def test_latest_listed_names_the_highest_step_directory(tmp_path):
  from darkjax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  assert ckpt_lib.latest_listed(str(tmp_path)) is None
  for name in ("3", "12", "12.orbax-checkpoint-tmp-9", "7"):
    (tmp_path / "checkpoints" / name).mkdir(parents=True)
  assert ckpt_lib.latest_listed(str(tmp_path)) == f"{tmp_path}/checkpoints/12"


def test_compile_evals_compiles_once_per_eval_batch(needs, tmp_path, monkeypatch):
  """A second `compile_evals` at the same eval batch reads no example and compiles nothing: it
  returns the figures, or raises again the out-of-memory error (a TPU's refused compile) of the
  first; another eval batch compiles anew."""
  from darkjax.evaluators import classification  # pylint: disable=import-outside-toplevel
  calls, compile_fn = [], classification.ClassificationEvaluator.compile

  def counted(self, variables):
    calls.append(int(self.trainer.config.input.eval_batch_size))
    if calls[-1] == 32:
      raise jax.errors.JaxRuntimeError(_TPU_OOM)
    return compile_fn(self, variables)

  monkeypatch.setattr(classification.ClassificationEvaluator, "compile", counted)
  config = _evaluating(needs[0])
  trainer = train.Trainer(config, str(tmp_path / "run"), task=task_lib.load_task(config),
                          devices=jax.devices()[:1])
  for _ in range(2):
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
      trainer.compile_evals()
  trainer.config = fit_lib._applied(config, {"input.eval_batch_size": 16})
  first = trainer.compile_evals()
  first["eval"] = -1   # the caller's copy
  assert trainer.compile_evals()["eval"] > 0 and calls == [32, 16], calls
