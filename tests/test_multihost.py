"""Two local processes (jax.distributed on 127.0.0.1, gloo CPU collectives, one device each, a
mesh over both): each reads its own record files, eval counts every test example once, the
checkpoint both wrote restores in a second 2-process run, and a killed peer is an error.

Every child is bounded in time (TIMEOUT) and killed when the test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import jax
import pytest

from darkjax import metrics as metrics_lib
from darkjax.data import records
from multihost_helpers import Processes, environment, shards_read, small_shard_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600   # seconds for one 2-process run, compilation included (cached after the first)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("sharded_synthetic"))
  small_shard_dataset(directory, examples_per_shard=8)
  return directory


@pytest.fixture(scope="module")
def env():
  return environment(jax.config.jax_compilation_cache_dir)


def _args(workdir: str, data_dir: str, steps: int, evaluate: bool = True) -> list[str]:
  return [f"--config=configs/synthetic.py:runlocal,steps={steps},data_dir={data_dir}",
          f"--workdir={workdir}", "--config.log_every=1", "--config.checkpoint_every=2",
          "--config.progress_bar=False", f"--config.eval_every={0 if evaluate else -1}"]


def _run(args, log_dir, env) -> list[str]:
  os.makedirs(log_dir, exist_ok=True)
  with Processes(2, args, str(log_dir), env) as procs:
    codes = procs.wait(TIMEOUT)
    outputs = [procs.output(i) for i in range(2)]
  assert codes == [0, 0], "\n\n".join(o[-4000:] for o in outputs)
  return outputs


def test_two_processes_split_files_count_eval_once_and_resume(data_dir, env, tmp_path):
  manifest = records.load_manifest(data_dir)
  workdir = str(tmp_path / "run")
  first = _run(_args(workdir, data_dir, steps=4), tmp_path / "logs_first", env)
  for what, split in (("train", "train"), ("eval", "test")):
    mine = [shards_read(output, what) for output in first]
    every = {shard["file"] for shard in manifest["splits"][split]["shards"]}
    assert mine[0] and mine[1] and not mine[0] & mine[1], mine
    assert mine[0] | mine[1] == every
  evals = [row for row in metrics_lib.read_metrics(workdir) if "eval/num_examples" in row]
  assert [row["eval/num_examples"] for row in evals] == [manifest["splits"]["test"]["num_examples"]]

  second = _run(_args(workdir, data_dir, steps=6), tmp_path / "logs_second", env)
  assert all("resumed from" in output and "/checkpoints/4" in output for output in second)
  rows = metrics_lib.read_metrics(workdir)
  assert [row["step"] for row in rows if "train/loss" in row] == [1, 2, 3, 4, 5, 6]
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                if s.isdigit())[-1] == 6
  # one process cannot take up the two processes' input positions: it stops at once saying so
  alone = subprocess.run([sys.executable, "-m", "darkjax.main",
                          *_args(workdir, data_dir, steps=8)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=TIMEOUT)
  assert alone.returncode == 2, alone.stderr[-3000:]
  assert "checkpoints/6 was written by 2 process(es)" in alone.stderr, alone.stderr[-3000:]
  assert "this run has 1. Resume it on 2 process(es)" in alone.stderr


def test_killed_peer_makes_the_other_exit_with_an_error_naming_it(data_dir, env, tmp_path):
  workdir = str(tmp_path / "run")
  heartbeat = 5
  with Processes(2, _args(workdir, data_dir, steps=10_000, evaluate=False), str(tmp_path), env,
                 heartbeat_timeout=heartbeat) as procs:
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and all(p.poll() is None for p in procs.procs):
      if os.path.exists(metrics_path) and len(metrics_lib.read_metrics(workdir)) >= 2:
        break
      time.sleep(0.1)
    assert [p.poll() for p in procs.procs] == [None, None], procs.output(0)[-4000:]
    procs.procs[1].kill()
    codes = procs.wait(timeout=60)
    output = procs.output(0)
  assert codes[0] is not None, "the surviving process hung after its peer died"
  assert codes[0] != 0
  assert re.search(r"Task 1 heartbeat timeout", output), output[-4000:]


def test_two_processes_score_two_stream_videos_the_hosts_hold_unequally(env, tmp_path):
  """Two-stream's video evaluation on two hosts holding different numbers of videos (20 test
  videos in shards of 8: 12 on one host, 8 on the other) counts every video once with its own
  label (each clip's video index and label come back beside its outputs; gathering the hosts'
  label lists of unequal length stopped the run)."""
  from configs import twostream_synthetic  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path / "data")
  manifest = small_shard_dataset(data_dir, examples_per_shard=8,
                                 config_module=twostream_synthetic)
  test_shards = [s["num_examples"] for s in manifest["splits"]["test"]["shards"]]
  assert len(test_shards) == 3 and test_shards[0] + test_shards[2] != test_shards[1], test_shards
  workdir = str(tmp_path / "run")
  args = [f"--config=configs/twostream_synthetic.py:runlocal,steps=2,data_dir={data_dir}",
          f"--workdir={workdir}", "--config.progress_bar=False", "--config.eval_every=0"]
  _run(args, tmp_path / "logs", env)
  evals = [row for row in metrics_lib.read_metrics(workdir) if "video/num_videos" in row]
  assert [row["video/num_videos"] for row in evals] == [sum(test_shards)]
