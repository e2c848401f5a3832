"""SIGTERM: the run saves a checkpoint at the current step, exits 0 with a message, and the rerun
continues with exactly the losses of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from darkjax import checkpoint as ckpt_lib
from darkjax import metrics as metrics_lib
from darkjax.data import prepared
from test_train import small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16


def _command(workdir: str, data_dir: str) -> list[str]:
  # checkpoint_every > STEPS: the only checkpoint before the end is the one SIGTERM makes.
  return [sys.executable, "-m", "darkjax.main",
          f"--config=configs/synthetic.py:runlocal,steps={STEPS},data_dir={data_dir}",
          f"--workdir={workdir}", "--config.log_every=1", "--config.checkpoint_every=1000",
          "--config.progress_bar=False", "--config.eval_every=-1"]


def _losses(workdir: str) -> dict[int, float]:
  return {row["step"]: row["train/loss"] for row in metrics_lib.read_metrics(workdir)
          if "train/loss" in row}


def test_sigterm_saves_current_step_and_rerun_is_bit_exact(tmp_path, main_env):
  data_dir = str(tmp_path / "data")
  prepared.open_dataset(small_config(data_dir).input.data)
  reference, preempted = str(tmp_path / "reference"), str(tmp_path / "preempted")
  subprocess.run(_command(reference, data_dir), cwd=REPO, env=main_env, check=True,
                 capture_output=True, timeout=300)
  proc = subprocess.Popen(_command(preempted, data_dir), cwd=REPO, env=main_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    metrics_path = os.path.join(preempted, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      if os.path.exists(metrics_path) and len(_losses(preempted)) >= 5:
        break
      time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be preempted"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 0, stderr[-2000:]
  assert "preempted (SIGTERM)" in stderr and "rerun the same command" in stderr, stderr[-2000:]
  saved = ckpt_lib.Checkpointer(preempted, read_only=True)
  try:
    saved_step = saved.latest_step()
  finally:
    saved.close()
  assert saved_step == max(_losses(preempted)) and 5 <= saved_step < STEPS
  assert f"at step {saved_step}" in stderr
  subprocess.run(_command(preempted, data_dir), cwd=REPO, env=main_env, check=True,
                 capture_output=True, timeout=300)
  want, got = _losses(reference), _losses(preempted)
  assert sorted(got) == list(range(1, STEPS + 1))
  assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)]  # exact
