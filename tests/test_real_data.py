"""Every paper x dataset config in configs/ runs on data prepared from its dataset's official
layout, as a user would run it: a fake release (tests/fake_releases.py: real PyAV videos, the
official folders and split lists) goes through `python -m darkjax.data.prepare` into
$DARKJAX_DATA/<dataset>, then `python -m darkjax.main --config=configs/<file>.py:runlocal` trains,
evaluates, checkpoints and reports on it with no other argument.

The configs are discovered from configs/ (a config added later is tested without editing this
file); each dataset is prepared once per session, with `--flow` (LIFT-Net's flow configs need it,
the others ignore the stream).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fake_releases
from darkjax.data import datasets, records
from darkjax.data.prepare import LAYOUTS
from darkjax.data.prepare import __main__ as prepare_cli
from run_configs import REPO, config_files, config_module, data_blocks

SHORT_SIDE = 36   # the runlocal variants crop 32 x 32


def _datasets(path: str) -> list[str]:
  return sorted({b.name for b in data_blocks(config_module(path).get_config(None))})


REAL_CONFIGS = [p for p in config_files() if set(_datasets(p)) - {"synthetic"}]


def test_every_configured_dataset_can_be_prepared_and_has_a_fake_release():
  for path in config_files():
    for name in _datasets(path):
      assert name == "synthetic" or name in LAYOUTS, (
          f"{os.path.basename(path)} names dataset {name!r}, which `python -m "
          f"darkjax.data.prepare` cannot make (known: {sorted(LAYOUTS)})")
  assert sorted(fake_releases.RELEASES) == sorted(LAYOUTS) == sorted(datasets.PREPARED)
  assert len(REAL_CONFIGS) >= 7


class PreparedData:
  """$DARKJAX_DATA of the session: each dataset prepared from its fake release on first use."""

  def __init__(self, root: str):
    self.root = root
    self.data = os.path.join(root, "data")

  def get(self, name: str) -> str:
    out = os.path.join(self.data, name)
    if not os.path.exists(os.path.join(out, records.MANIFEST)):
      src = fake_releases.write_release(name, os.path.join(self.root, "src", name))
      status = prepare_cli.main(["--dataset", name, "--src", src, "--out", out, "--short-side",
                                 str(SHORT_SIDE), "--flow", "--workers", "1", "--no-progress"])
      assert status == 0, f"prepare {name} failed"
    return out


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> PreparedData:
  return PreparedData(str(tmp_path_factory.mktemp("real_data")))


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=os.path.basename)
def test_runlocal_trains_evaluates_checkpoints_and_reports_on_prepared_data(
    path, prepared, tmp_path, main_env, monkeypatch):
  monkeypatch.setenv("DARKJAX_DATA", prepared.data)
  config = config_module(path).get_config("runlocal")
  assert not config.get("model_init"), "runlocal must not need pretrained weights"
  test_counts = set()
  for block in data_blocks(config):
    if block.name == "synthetic":
      continue
    out = prepared.get(block.name)
    # The configs' default directory is $DARKJAX_DATA/<dataset>: nothing else to pass.
    assert block.dir == out
    dataset = datasets.Dataset(block.name, out, records.load_manifest(out), block.split_index)
    test_counts.add(dataset.num_examples(block.eval_split))
  workdir = str(tmp_path / "run")
  result = subprocess.run(
      [sys.executable, "-m", "darkjax.main", f"--config={os.path.relpath(path, REPO)}:runlocal",
       f"--workdir={workdir}"], cwd=REPO, env=dict(main_env, DARKJAX_DATA=prepared.data),
      capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  final = [line for line in result.stdout.splitlines() if line.startswith("final:")]
  assert final, result.stdout[-2000:]
  scalars = dict(item.split("=") for item in final[-1][len("final:"):].replace(" ", "").split(","))
  assert 0.0 <= float(scalars["eval/top1"]) <= float(scalars["eval/top5"]) <= 1.0
  assert "eval/mean_class_acc" in scalars
  # Each classification eval saw a whole test split, every video once.
  rows = [json.loads(line) for metrics_file in glob.glob(
      os.path.join(workdir, "**", "metrics.jsonl"), recursive=True) for line in open(metrics_file)]
  counts = {k: v for row in rows for k, v in row.items() if k.endswith("/num_examples")}
  assert counts and set(counts.values()) <= test_counts, (counts, test_counts)
  reports = glob.glob(os.path.join(workdir, "**", "report.md"), recursive=True)
  assert reports and all("eval" in open(r, encoding="utf-8").read() for r in reports)
  checkpoints = glob.glob(os.path.join(workdir, "**", "checkpoints", "[0-9]*"), recursive=True)
  assert checkpoints, os.listdir(workdir)
  for metrics_file in glob.glob(os.path.join(workdir, "**", "metrics.jsonl"), recursive=True):
    losses = [row[k] for row in map(json.loads, open(metrics_file, encoding="utf-8"))
              for k in row if k.endswith("loss")]
    assert losses and np.all(np.isfinite(losses)), metrics_file

