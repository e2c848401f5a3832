"""A newcomer's walk through `python -m darkjax.main`: every wrong input ends in one line that says
what is wrong and what to do (no traceback without --verbose), nothing is overwritten, Ctrl-C
saves the step it reached and says how to resume, and a finished run reports its final metrics
again."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import synthetic as synthetic_config
from darkjax.data import prepared
from run_configs import REPO


def _main(args, env, **kwargs):
  return subprocess.run([sys.executable, "-m", "darkjax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, **kwargs)


def _one_line(result, *fragments):
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  line = [l for l in result.stderr.splitlines() if l.startswith("darkjax: ")][-1]
  for fragment in fragments:
    assert fragment in line, line
  return line


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("synthetic"))
  prepared.open_dataset(synthetic_config.get_config(f"runlocal,data_dir={directory}").input.data)
  return directory


@pytest.mark.parametrize("args, fragments", [
    (["--config=configs/nope.py"], ["--config: config file configs/nope.py does not exist"]),
    (["--config=configs/synthetic.py:runlocal", "--config.optimiser.lr=0.1"],
     ["--config: --config.optimiser.lr=0.1: the config has no key 'optimiser'",
      'did you mean "optimizer"?', "Its keys: ['accum_steps'"]),
    (["--config=configs/synthetic.py:runlocal", "--config.optimizer.zzz=1"],
     ["--config.optimizer.zzz=1: config.optimizer has no key 'zzz'. Its keys: ['b1'",
      "a config arg goes after the file's ':'"]),
    (["--config=configs/synthetic.py:runlocal,modle=x"],
     ["--config: unknown config arg 'modle'", "(did you mean 'model'?)", "valid args: ['batch'"]),
    (["--config=configs/synthetic.py:runlocal,steps=abc"],
     ["--config: config arg 'steps': expected a number, got 'abc'"]),
    (["--config=configs/synthetic.py:runlocal", "--config.optimizer.lr=abc"],
     ["--config: --config.optimizer.lr=abc: could not convert string to float: 'abc'; "
      "config.optimizer.lr is of type float (0.05 in configs/synthetic.py:runlocal)"]),
    # found as the run builds its model, after the workdir was made: the empty workdir is removed
    (["--config=configs/synthetic.py:runlocal,model=small3dd"],
     ["config.model.name: unknown model 'small3dd' (did you mean \"small3d\"?)"]),
], ids=["missing_file", "mistyped_key", "unknown_key", "unknown_arg", "arg_value",
        "override_type", "unknown_model"])
def test_bad_config_is_one_line(args, fragments, tmp_path, main_env):
  env = dict(main_env, DARKJAX_DATA=str(tmp_path / "data"))   # a run that gets as far as its data
  _one_line(_main(args + [f"--workdir={tmp_path / 'w'}"], env), *fragments)
  assert not os.path.exists(tmp_path / "w")


def test_a_missing_required_flag_is_one_line(tmp_path, main_env):
  _one_line(_main(["--config=configs/synthetic.py:runlocal"], main_env),
            "darkjax: --workdir is required: the directory the run writes")
  _one_line(_main([f"--workdir={tmp_path / 'w'}"], main_env),
            "darkjax: --config is required: the config file, e.g. --config=configs/synthetic.py")
  assert not os.path.exists(tmp_path / "w")


def test_workdir_that_is_a_file_is_one_line_and_left_alone(tmp_path, main_env):
  path = tmp_path / "notes.txt"
  path.write_text("keep me")
  _one_line(_main(["--config=configs/synthetic.py:runlocal", f"--workdir={path}"], main_env),
            f"--workdir {path} is a file")
  assert path.read_text() == "keep me"


def test_workdir_that_cannot_be_made_is_one_line(tmp_path, main_env):
  (tmp_path / "notes.txt").write_text("keep me")
  workdir = tmp_path / "notes.txt" / "run"
  _one_line(_main(["--config=configs/synthetic.py:runlocal", f"--workdir={workdir}"], main_env),
            f"--workdir {workdir} cannot be created", "give a directory you can write to")
  assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.fixture(scope="module")
def breaks(data_dir, tmp_path_factory) -> dict[str, tuple[list[str], list[str]]]:
  """Bad inputs met after the config loads: (main's args, fragments of its one line), their
  broken datasets and weight files written once for the module."""
  tmp_path = tmp_path_factory.mktemp("breaks")
  manifest = json.load(open(os.path.join(data_dir, "manifest.json"), encoding="utf-8"))
  no_json, no_shard = str(tmp_path / "no_json"), str(tmp_path / "no_shard")
  shutil.copytree(data_dir, no_json)
  with open(os.path.join(no_json, "manifest.json"), "w", encoding="utf-8") as f:
    f.write("{bad")
  shutil.copytree(data_dir, no_shard)
  test_shard = manifest["splits"]["test"]["shards"][0]["file"]
  os.remove(os.path.join(no_shard, test_shard))
  weights = tmp_path / "weights.npz"
  weights.write_bytes(b"not an npz")
  other = tmp_path / "other.npz"   # a state dict of another network
  np.savez(other, **{"fc.weight": np.zeros((3, 4), np.float32)})
  unsafe = tmp_path / "unsafe.pth"   # unpickling it would import os.system
  unsafe.write_bytes(pickle.dumps({"w": os.system}, protocol=2))
  lift = f"--config=configs/lift_synthetic.py:runlocal,data_dir={data_dir}"
  synth = f"--config=configs/synthetic.py:runlocal,data_dir={data_dir}"
  copy = "--config.input.data.name=copy"   # read as a prepared dataset, not regenerated
  return {
      "unknown_model": ([f"--config=configs/synthetic.py:runlocal,data_dir={data_dir},model=smal3d"],
                        ["config.model.name: unknown model 'smal3d'", 'did you mean "small3d"?']),
      "manifest_not_json": ([f"--config=configs/synthetic.py:runlocal,data_dir={no_json}", copy],
                            [f"{no_json}/manifest.json: not valid JSON", "copy the dataset"]),
      # the eval split's shard, missed when the dataset opens, not at the first evaluation
      "missing_eval_shard": ([f"--config=configs/synthetic.py:runlocal,data_dir={no_shard}", copy],
                             [test_shard, "does not exist", "records verify"]),
      "data_dir_is_a_file": ([f"--config=configs/synthetic.py:runlocal,data_dir={weights}"],
                             [f"synthetic dataset directory {weights} is a file", "data_dir"]),
      # the path is checked before the normalisation its weights were trained on
      "missing_weights": ([f"{lift},luminous_init={tmp_path / 'nope.pth'}"],
                          [f"config.lift.pretrained.luminous: {tmp_path / 'nope.pth'}: no such "
                           "file or directory"]),
      "weights_normalised_otherwise": ([f"{lift},luminous_init={other}"],
                                       ["config.lift.luminous_normalise is 'per_clip'",
                                        "--config.lift.luminous_normalise=ig65m"]),
      "unreadable_weights": ([f"{lift},luminous_init={weights}",
                              "--config.lift.luminous_normalise=ig65m"],
                             [f"{weights}: not a readable .npz"]),
      "weights_of_another_network": ([f"{lift},luminous_init={other}",
                                      "--config.lift.luminous_normalise=ig65m"],
                                     [f"config.lift.pretrained.luminous {other}: cannot convert "
                                      "state dict to 'r2plus1d_tiny_test'"]),
      "crop_larger_than_frames": ([synth, "--config.input.crop_size=64"],
                                  ["config.input.crop_size 64 is larger than the frames "
                                   "config.input.short_side 36 gives"]),
      "unknown_normalisation": ([synth, "--config.input.normalise=imagnet"],
                                ["config.input.normalise 'imagnet' unknown"]),
      "stream_not_stored": ([synth, "--config.input.stream=thermal"],
                            ["config.input.stream reads the record stream(s) ['thermal']",
                             "its streams: ['day', 'ir', 'video']"]),
      "unsafe_weights": ([f"{lift},luminous_init={unsafe}",
                          "--config.lift.luminous_normalise=ig65m"],
                         [f"{unsafe}: refused as unsafe", "GLOBAL posix.system"]),
  }


BREAKS = ("unknown_model", "manifest_not_json", "missing_eval_shard", "data_dir_is_a_file",
          "missing_weights", "weights_normalised_otherwise", "unreadable_weights",
          "weights_of_another_network", "crop_larger_than_frames", "unknown_normalisation",
          "stream_not_stored", "unsafe_weights")


@pytest.mark.parametrize("name", BREAKS)
def test_bad_data_and_weights_are_one_line_before_training(name, breaks, tmp_path, main_env):
  if name == "unsafe_weights":
    pytest.importorskip("torch", reason="reading .pth files needs the torch extra")
  args, fragments = breaks[name]
  workdir = tmp_path / "run"
  _one_line(_main(args + [f"--workdir={workdir}"], main_env), *fragments)
  # nothing left behind: not the workdir main made, nor a phase's empty checkpoints/ in it
  assert not workdir.exists(), sorted(str(p) for p in workdir.rglob("*"))


def _run_args(data_dir, workdir, steps):
  return [f"--config=configs/synthetic.py:runlocal,steps={steps},data_dir={data_dir}",
          f"--workdir={workdir}", "--config.log_every=1", "--config.checkpoint_every=1000",
          "--config.eval_every=0", "--config.progress_bar=False"]


def test_ctrl_c_saves_resumes_and_a_finished_run_reports_again(data_dir, tmp_path, main_env):
  """Ctrl-C in a terminal: SIGINT to the whole process group, the input worker included."""
  workdir = str(tmp_path / "run")
  steps = 400
  workers = ["--config.input.workers=1"]
  proc = subprocess.Popen([sys.executable, "-m", "darkjax.main",
                           *_run_args(data_dir, workdir, steps), *workers], cwd=REPO,
                          env=main_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and sum(1 for _ in open(metrics, encoding="utf-8")) >= 3:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before Ctrl-C"
  os.killpg(proc.pid, signal.SIGINT)
  _, stderr = proc.communicate(timeout=240)
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
  line = [l for l in stderr.splitlines() if "interrupted (Ctrl-C)" in l][-1]
  step = int(line.split(" at step ")[1].split(":")[0].split()[0])
  assert 3 <= step < steps
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))
  assert "rerun the same command (in Python: Run.train() again) to resume" in line
  finished = _main(_run_args(data_dir, workdir, step + 2) + workers, main_env)
  assert finished.returncode == 0, finished.stderr[-3000:]
  # every batch's shared memory unlinked, the last one's too (a name holding the batch past its
  # step in darkjax.train kept it to the end: Python's resource tracker warned of a leak at exit)
  assert "leaked shared_memory" not in stderr + finished.stderr, (stderr + finished.stderr)[-3000:]
  assert f"resumed from {workdir}/checkpoints/{step}" in finished.stderr
  final = [l for l in finished.stdout.splitlines() if l.startswith("final:")][-1]
  assert "eval/top1=" in final
  # -1 (chosen at run time) resumes with the count the checkpoint's data position is for; and
  # a report.md a full disk left empty is written again by the rerun of the finished run
  report = os.path.join(workdir, "report.md")
  open(report, "w").close()
  again = _main(_run_args(data_dir, workdir, step + 2) + ["--config.input.workers=-1"], main_env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "| eval/top1 |" in open(report, encoding="utf-8").read()
  assert "1 worker processes, the count the checkpoint's run started with" in again.stderr
  assert [l for l in again.stdout.splitlines() if l.startswith("final:")][-1] == final
  _one_line(_main(_run_args(data_dir, workdir, step + 2) + ["--config.input.workers=2"],
                  main_env), "config.input.workers is 2", "--config.input.workers=1")


def test_truncated_record_file_is_one_line(data_dir, tmp_path, main_env):
  broken = str(tmp_path / "broken")
  shutil.copytree(data_dir, broken)
  manifest = json.load(open(os.path.join(broken, "manifest.json"), encoding="utf-8"))
  shard = os.path.join(broken, manifest["splits"]["train"]["shards"][0]["file"])
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)
  result = _main(_run_args(broken, tmp_path / "run", 2) + ["--config.input.data.name=copy"],
                 main_env)
  _one_line(result, os.path.basename(shard))


def test_a_log_line_while_a_progress_bar_shows_is_a_line_of_its_own():
  """main's log handler writes around the bar (the evaluation's "eval reads ..." had landed at the
  end of the train bar's line, the bar then drawn again after it)."""
  import io  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  import re  # pylint: disable=import-outside-toplevel

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from darkjax import main  # pylint: disable=import-outside-toplevel
  stream = io.StringIO()
  logger = logging.getLogger("darkjax.test_bar_safe_handler")
  logger.propagate = False
  handler = main.BarSafeHandler(stream)
  logger.addHandler(handler)
  try:
    with tqdm(total=10, file=stream, desc="train", ascii=True) as bar:
      bar.update(3)
      logger.warning("eval reads all 1 shard(s)")
      bar.update(2)
  finally:
    logger.removeHandler(handler)
  pieces = re.split(r"[\r\n]", stream.getvalue())
  assert "eval reads all 1 shard(s)" in pieces, pieces
  assert any(p.startswith("train:  50%") for p in pieces)   # the bar goes on below it


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_rerun_trains_on(data_dir, tmp_path,
                                                                          main_env):
  """A checkpoint directory on a full disk (stood in for by os.statvfs reporting no free space
  under it) stops the run at the save with one line naming the directory, what to do and that
  the rerun resumes; orbax, meeting it in its thread, had hung for 300 s and then timed out
  naming none of it. Once space is free the same command trains."""
  workdir = str(tmp_path / "run")
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(
      "import os\n_statvfs = os.statvfs\n"
      "class _Full:\n  def __init__(self, real):\n    self._real = real\n"
      "  f_bavail = 0\n  def __getattr__(self, name):\n    return getattr(self._real, name)\n"
      "def _full_under_checkpoints(path):\n  real = _statvfs(path)\n"
      "  return _Full(real) if 'checkpoints' in os.fspath(path) else real\n"
      "os.statvfs = _full_under_checkpoints\n")
  args = _run_args(data_dir, workdir, 2)
  full = _main(args, dict(main_env, PYTHONPATH=f"{site}:{main_env.get('PYTHONPATH', '')}"))
  assert full.returncode == 1, full.stderr[-3000:]
  assert "Traceback" not in full.stderr, full.stderr[-3000:]
  line = [l for l in full.stderr.splitlines() if l.startswith("darkjax: ")][-1]
  assert line.startswith(f"darkjax: {workdir}/checkpoints: No space left on device: checkpoint 2 "
                         "needs about "), line
  assert line.endswith("free space on that disk, or give the run a directory on a larger one, "
                       "then rerun the same command: it resumes from its last checkpoint"), line
  again = _main(args, main_env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))


def test_resource_errors_say_what_to_change():
  import errno  # pylint: disable=import-outside-toplevel

  from darkjax import messages  # pylint: disable=import-outside-toplevel
  said = messages.resource_problem(OSError(errno.EMFILE, "Too many open files", "/d/x"))
  assert said.startswith("/d/x: Too many open files; too many open files: raise the limit "
                         "(`ulimit -n 4096`) or lower config.input.workers, then rerun")
  assert "make it writable" in messages.resource_problem(PermissionError(errno.EACCES, "no", "/w"))
  assert messages.resource_problem(FileNotFoundError(errno.ENOENT, "gone", "/w")) is None
  assert messages.resource_problem(ValueError("x")) is None


def test_a_virtual_memory_limit_is_warned_of(main_env):
  """`ulimit -v` makes XLA abort with memory to spare: a run started under one says so first
  (darkjax.main logs this line), and how to limit memory instead."""
  script = "from darkjax import messages; print(messages.address_space_limit())"
  result = subprocess.run(["bash", "-c", f"ulimit -v 67108864 && exec {sys.executable} -c "
                           f"'{script}'"], cwd=REPO, env=main_env, capture_output=True,
                          text=True, timeout=120)
  assert result.stdout.startswith("a virtual-memory limit of 64.0 GiB is set (`ulimit -v`)"), (
      result.stdout + result.stderr)


def test_other_libraries_resource_errors_are_read_by_their_words():
  """orbax / TensorStore quote strerror in their own error types (546 lines of "Error opening
  "zarr" driver ... Too many open files" under `ulimit -n 64`): the line that says it, and what
  to do."""
  from darkjax import messages  # pylint: disable=import-outside-toplevel
  error = ValueError('Error opening "zarr" driver: Error reading local file "/w/ckpt/x": '
                     'Too many open files [source locations=...]\n  more context')
  said = messages.resource_problem(error)
  assert said.startswith('Error opening "zarr" driver: Error reading local file "/w/ckpt/x": '
                         "Too many open files") and "`ulimit -n 4096`" in said
  assert messages.resource_problem(RuntimeError("RESOURCE_EXHAUSTED: No space left on device")
                                   ).endswith("it resumes from its last checkpoint")
  assert messages.resource_problem(RuntimeError("shapes differ")) is None
