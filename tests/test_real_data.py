"""Every paper x dataset config in configs/ runs on data prepared from its dataset's official
layout, as a user would run it: a fake release (tests/fake_releases.py: real PyAV videos, the
official folders and split lists) goes through `python -m darkjax.data.prepare` into
$DARKJAX_DATA/<dataset>, then `python -m darkjax.main --config=configs/<file>.py:runlocal` trains,
evaluates, checkpoints and reports on it with no other argument.

The configs are discovered from configs/ (a config added later is tested without editing this file);
each dataset is prepared once per session, with `--flow` where a config reads the flow stream
(LIFT-Net's HMDB51 / UCF101 / InfAR configs). The runs go one after another, the next starting while
a finished one's results are checked (`Runs`). A config that compiles the programs of an earlier one
(same trainer, record streams and class counts: LIFT-Net's three flow configs, ActLumos's ARID v1
and v1.5) and differs from it only in where its datasets are does not train again: its input
pipeline reads its own prepared dataset (a train batch, the whole test split) beside the earlier
config's run. Nor does one that differs from an earlier config only there and in its datasets' class
counts (ActLumos's and DTCM's Dark-48 beside their ARID ones): each of its phases is built on its
own data and its train step traced, nothing compiled, its state that of the earlier config's run but
for the class dimension.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import fake_releases
from darkjax.data import flow as flow_lib
from darkjax import config as config_lib
from darkjax import task as task_lib
from darkjax import train
from darkjax.data import prepared, records
from darkjax.data.classification import ClassificationData
from darkjax.data.prepare import LAYOUTS
from darkjax.data.prepare import __main__ as prepare_cli
from darkjax.config import data_blocks
from run_configs import REPO, config_files, config_module

SHORT_SIDE = 36   # the runlocal variants crop 32 x 32


def _datasets(path: str) -> list[str]:
  return sorted({b.name for b in data_blocks(config_module(path).get_config(None))})


REAL_CONFIGS = [p for p in config_files() if set(_datasets(p)) - {"synthetic"}]


@functools.lru_cache(maxsize=None)
def _runlocal_flat(path: str) -> dict:
  """The flat view (`config_lib.flat`) of the config's runlocal variant, built once per path."""
  return config_lib.flat(config_module(path).get_config("runlocal"))


def _flow_datasets() -> set[str]:
  """Datasets some config's model reads the optical-flow stream of: prepared with `--flow`."""
  found = set()
  for path in REAL_CONFIGS:
    config = config_module(path).get_config("runlocal")
    if "flow" in config.input.streams:
      found |= {b.name for b in data_blocks(config)}
  return found


def test_every_configured_dataset_can_be_prepared_and_has_a_fake_release():
  for path in config_files():
    for name in _datasets(path):
      assert name == "synthetic" or name in LAYOUTS, (
          f"{os.path.basename(path)} names dataset {name!r}, which `python -m "
          f"darkjax.data.prepare` cannot make (known: {sorted(LAYOUTS)})")
  assert sorted(fake_releases.RELEASES) == sorted(LAYOUTS) == sorted(prepared.PREPARED)
  assert len(REAL_CONFIGS) >= 7


class PreparedData:
  """$DARKJAX_DATA of the session: each dataset prepared from its fake release on first use."""

  def __init__(self, root: str):
    self.root = root
    self.data = os.path.join(root, "data")
    self.flow = _flow_datasets()

  def get(self, name: str) -> str:
    out = os.path.join(self.data, name)
    if not os.path.exists(os.path.join(out, records.MANIFEST)):
      src = fake_releases.write_release(name, os.path.join(self.root, "src", name))
      flow = ["--flow"] if name in self.flow else []
      status = prepare_cli.main(["--dataset", name, "--src", src, "--out", out, "--short-side",
                                 str(SHORT_SIDE), "--workers", "1", "--no-progress"] + flow)
      assert status == 0, f"prepare {name} failed"
    return out


@dataclasses.dataclass
class Run:
  path: str
  workdir: str
  process: subprocess.Popen
  returncode: int | None = None

  def output(self, stream: str) -> str:
    with open(os.path.join(os.path.dirname(self.workdir), f"{stream}.txt"), encoding="utf-8",
              errors="replace") as file:
      return file.read()


class Runs:
  """`python -m darkjax.main --config=<config>:runlocal` of the session's selected configs, one
  at a time: a test worker has one core of its own (tests/conftest.py), and the runs one after
  another took 6-9% less time than two at a time sharing it (docs/benchmarks.md, "The test
  suite on two workers"). A config that differs from an earlier one only in its datasets
  (`DATASET_FIELDS`; their class counts may differ) is not run (`trained_by`)."""

  SLOTS = 1

  def __init__(self, prepared: PreparedData, root: str, env: dict[str, str], paths: list[str]):
    self.prepared, self.root, self.env = prepared, root, env
    self.selected = list(paths)
    self.queue = list(paths)
    self.running: dict[str, Run] = {}
    self.done: dict[str, Run] = {}

  @functools.lru_cache(maxsize=None)
  def program_key(self, path: str) -> tuple:
    """What decides the compiled programs: trainer, record streams, class counts (this prepares
    the config's datasets)."""
    config = config_module(path).get_config("runlocal")
    classes = tuple(records.load_manifest(self.prepared.get(b.name))["num_classes"]
                    for b in data_blocks(config) if b.name != "synthetic")
    return config.trainer, tuple(config.input.streams), classes

  @staticmethod
  def flow_override(path: str) -> list[str]:
    """The fake releases' flow is prepared with `prepare`'s default method (Farneback, fast);
    a config reading flow of another method (two-stream's TV-L1, far slower on these CPUs) trains
    on it through the override its error message names, as a user with such data would."""
    config = config_module(path).get_config("runlocal")
    method = config.get("twostream", {}).get("flow_method")
    if method and method != flow_lib.DEFAULT_METHOD:
      return [f"--config.twostream.flow_method={flow_lib.DEFAULT_METHOD}"]
    return []

  @functools.lru_cache(maxsize=None)
  def trained_by(self, path: str) -> str:
    """The config whose run stands for `path`'s: the first of the session's configs whose
    runlocal config differs from its only in its datasets (`DATASET_FIELDS`; itself, unless an
    earlier one does)."""
    return next(p for p in self.selected if set(config_lib.differences(
        _runlocal_flat(p), _runlocal_flat(path))) <= set(DATASET_FIELDS))

  def _launch(self, path: str) -> None:
    self.queue.remove(path)
    self.program_key(path)   # prepares its datasets
    run_dir = os.path.join(self.root, os.path.basename(path)[:-3])
    os.makedirs(run_dir)
    workdir = os.path.join(run_dir, "run")
    with open(os.path.join(run_dir, "stdout.txt"), "w") as out, \
        open(os.path.join(run_dir, "stderr.txt"), "w") as err:
      process = subprocess.Popen(
          [sys.executable, "-m", "darkjax.main",
           f"--config={os.path.relpath(path, REPO)}:runlocal", f"--workdir={workdir}"]
          + self.flow_override(path),
          cwd=REPO, env=dict(self.env, DARKJAX_DATA=self.prepared.data), stdout=out, stderr=err)
    self.running[path] = Run(path, workdir, process)

  def _wait(self, path: str) -> None:
    run = self.running.pop(path)
    run.returncode = run.process.wait(timeout=1800)
    self.done[path] = run

  def _fill(self) -> None:
    for path in list(self.queue):
      if len(self.running) >= self.SLOTS:
        return
      if self.trained_by(path) != path:   # checked on its own data, not trained again
        self.queue.remove(path)
      else:
        self._launch(path)

  def result(self, path: str) -> Run:
    if path not in self.done and path not in self.running:
      while len(self.running) >= self.SLOTS:
        self._wait(next(iter(self.running)))
      self._launch(path)
    self._fill()
    if path in self.running:
      self._wait(path)
    self._fill()   # the next config compiles while this one's results are checked
    return self.done[path]

  def close(self) -> None:
    for run in self.running.values():   # configs not asked for (a failed session): stop them
      run.process.kill()
      run.process.wait()


@pytest.fixture(scope="session")
def runs(request, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("real_data"))
  # As conftest.py's `main_env` (function-scoped): single-device CPU sharing the tests' cache.
  main_env = dict(os.environ, JAX_PLATFORMS="cpu",
                  JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  main_env.pop("XLA_FLAGS", None)
  selected = [item.callspec.params["path"] for item in request.session.items
              if item.originalname == "test_runlocal_trains_evaluates_checkpoints_and_reports"]
  runner = Runs(PreparedData(root), os.path.join(root, "runs"), main_env, selected)
  yield runner
  runner.close()


# Fields in which a config may differ from an earlier config of the list and still count as
# trained by that config's run: which datasets it reads and where they are, and which public
# checkpoints saw their test videos (read only where weights are loaded; runlocal loads none).
DATASET_FIELDS = ("input.data.dir", "input.data.name", "ssl.datasets", "ssl.dirs",
                  "dtcm.leaky_weights")


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=os.path.basename)
def test_runlocal_trains_evaluates_checkpoints_and_reports(path, runs, monkeypatch, tmp_path):
  trained = runs.trained_by(path)
  if trained != path:
    _same_run_on_its_own_data(path, trained, runs, monkeypatch, tmp_path)
    return
  run = runs.result(path)
  assert run.returncode == 0, run.output("stderr")[-3000:]
  monkeypatch.setenv("DARKJAX_DATA", runs.prepared.data)
  config = config_module(path).get_config("runlocal")
  assert not config.get("model_init"), "runlocal must not need pretrained weights"
  test_counts = set()
  for block in data_blocks(config):
    if block.name == "synthetic":
      continue
    # The configs' default directory is $DARKJAX_DATA/<dataset>: nothing else was passed.
    assert block.dir == os.path.join(runs.prepared.data, block.name)
    dataset = prepared.Dataset(block.name, block.dir, records.load_manifest(block.dir),
                               block.split_index)
    test_counts.add(dataset.num_examples(block.eval_split))
  workdir = run.workdir
  final = [line for line in run.output("stdout").splitlines() if line.startswith("final:")]
  assert final, run.output("stdout")[-2000:]
  scalars = {k: float(v) for k, v in (
      item.split("=") for item in final[-1][len("final:"):].replace(" ", "").split(","))}
  # Every evaluation's top-1 is an accuracy; where there is a top-5 it is at least the top-1.
  top1 = {k[:-len("top1")]: v for k, v in scalars.items() if k.endswith("/top1")}
  assert top1 and all(0.0 <= v <= 1.0 for v in top1.values()), scalars
  for prefix, value in top1.items():
    assert value <= scalars.get(f"{prefix}top5", 1.0)
  # Each evaluation saw a whole test split, every video once.
  metrics_files = glob.glob(os.path.join(workdir, "**", "metrics.jsonl"), recursive=True)
  rows = [json.loads(line) for name in metrics_files for line in open(name, encoding="utf-8")]
  counts = {k: round(v) for row in rows + [scalars] for k, v in row.items()
            if k.endswith(("/num_examples", "/num_videos"))}
  assert counts and set(counts.values()) <= test_counts, (counts, test_counts)
  losses = [v for row in rows for k, v in row.items() if k.endswith("loss")]
  assert losses and np.all(np.isfinite(losses))
  reports = glob.glob(os.path.join(workdir, "**", "report.md"), recursive=True)
  texts = [open(r, encoding="utf-8").read() for r in reports]
  # each phase's final metrics, or its word that it evaluates nothing (ActLumos's SSL phase)
  assert texts and all("| metric | value |\n|---|---|\n| " in t or "No evaluation in this phase"
                       in t for t in texts)
  assert any("| metric | value |" in t for t in texts)
  checkpoints = glob.glob(os.path.join(workdir, "**", "checkpoints", "[0-9]*"), recursive=True)
  assert checkpoints, os.listdir(workdir)


def _same_run_on_its_own_data(path: str, trained: str, runs: Runs, monkeypatch,
                              tmp_path) -> None:
  """`path`'s config differs from `trained`'s only in its datasets (`DATASET_FIELDS`), whose
  run trains and checks the same programs but for the class count; its input pipeline reads a
  train batch and the whole test split of its own prepared dataset. With another class count,
  each of its phases is built on its own data and its train step traced (`_traces_with_its_
  class_count`)."""
  monkeypatch.setenv("DARKJAX_DATA", runs.prepared.data)
  config = config_module(path).get_config("runlocal")
  other = config_module(trained).get_config("runlocal")
  differ = config_lib.differences(config_lib.flat(other), config_lib.flat(config))
  assert differ and set(differ) <= set(DATASET_FIELDS), (trained, differ)
  assert runs.result(trained).returncode == 0
  if runs.program_key(path) != runs.program_key(trained):
    _traces_with_its_class_count(config, other, str(tmp_path))
  input_config = config.input
  input_config.prefetch = 0
  data = ClassificationData(input_config, 0)
  batch = next(iter(data.train_dataset(2)))
  manifest = records.load_manifest(config.input.data.dir)
  assert batch["video"].shape[0] == 2 and np.all(batch["label"] < manifest["num_classes"])
  block = next(b for b in data_blocks(config) if b.name == config.input.data.name)
  dataset = prepared.Dataset(block.name, block.dir, manifest, block.split_index)
  seen = sum(int(np.sum(b["mask"])) if "mask" in b else len(b["label"])
             for b in data.eval_batches(4))
  assert seen == dataset.num_examples(block.eval_split) > 0


def _traces_with_its_class_count(config, trained_config, workdir: str) -> None:
  """Each phase of `config` (the phases of `trained_config`'s run) built as its run builds it,
  on its own datasets, and its train step traced for its global batch, nothing compiled: its
  state's leaves are those of `trained_config`'s phase but for the class dimension (the last
  axis, the number of classes of either config's dataset), which some phase's leaves have."""
  plan = task_lib.phase_plan(config)
  assert [p.name for p in plan] == [p.name for p in task_lib.phase_plan(trained_config)]
  counts = [records.load_manifest(c.input.data.dir)["num_classes"]
            for c in (config, trained_config)]
  assert counts[0] != counts[1], counts
  resized = []
  for phase in plan:
    states = []
    for own, classes in zip((config, trained_config), counts):
      resolved = config_lib.resolve(own, "cpu")
      phase_config, task = task_lib.build_task(phase, resolved)   # no earlier phase's weights
      trainer = train.Trainer(phase_config, os.path.join(workdir, phase.name, str(classes)),
                              task=task, phase=phase.name)
      with trainer.scope():
        args = trainer._abstract_step_args()  # pylint: disable=protected-access
        if own is config:
          trainer.train_step.trace(*args)
      states.append(jax.tree.leaves_with_path(args[0]))
    ours, theirs = states
    assert [p for p, _ in ours] == [p for p, _ in theirs], phase.name
    for (name, a), (_, b) in zip(ours, theirs):
      if a.shape != b.shape:
        assert (a.shape[:-1], a.shape[-1], b.shape[-1]) == (b.shape[:-1], *counts), (
            phase.name, jax.tree_util.keystr(name), a.shape, b.shape)
        resized.append((phase.name, jax.tree_util.keystr(name)))
  assert resized, "no phase's state has the class count"
