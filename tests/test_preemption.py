"""SIGTERM: the run saves a checkpoint at the current step, exits 0 with a message, and the rerun
continues with exactly the losses of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

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


def test_ctrl_c_or_sigterm_stops_an_evaluation_at_once_and_the_rerun_evaluates(tmp_path,
                                                                              monkeypatch):
  # Ctrl-C in the evaluation at step 2 (not a checkpoint step) stops it mid-way: step 2 is saved
  # and the run stops (Preempted); the rerun evaluates step 2, then trains on. SIGTERM stops the
  # final evaluation, then the rerun's (the run is trained, its evaluation missing); the next
  # rerun makes it.
  from darkjax import preemption, train
  config = small_config(str(tmp_path / "data"), steps=4, eval_every=2, checkpoint_every=1000)
  workdir, real_evaluate, evaluated = str(tmp_path / "run"), train.Trainer.evaluate, []

  def run(signum=None, at=None):
    def evaluate(self, step):
      if step == at:
        os.kill(os.getpid(), signum)
        time.sleep(30)   # a long evaluation: the signal stops it
        raise AssertionError("the signal did not stop the evaluation")
      evaluated.append(step)
      return real_evaluate(self, step)
    monkeypatch.setattr(train.Trainer, "evaluate", evaluate)
    return train.Trainer(config, workdir).run()

  # SIGHUP (the terminal went away) stops as SIGTERM does
  for signum, at, final in ((signal.SIGINT, 2, ""), (signal.SIGTERM, 4, "final "),
                            (signal.SIGHUP, 4, "final ")):
    start = time.time()
    with pytest.raises(preemption.Preempted) as stopped:
      run(signum, at)
    assert time.time() - start < 25
    assert (stopped.value.step, stopped.value.interrupted) == (at, signum == signal.SIGINT)
    assert f"during the {final}evaluation at step {at}: saved checkpoint" in str(stopped.value)
    assert (signum != signal.SIGHUP) == ("SIGHUP" not in str(stopped.value))
    assert at in ckpt_lib.Checkpointer(workdir, read_only=True).all_steps()
  assert evaluated == [2]
  assert "eval/top1" in run() and evaluated == [2, 4]
  assert os.path.exists(os.path.join(workdir, "report.md"))


def test_orbax_never_asks_the_preemption_sync_point(tmp_path, monkeypatch):
  """Only darkjax's PreemptionWatch asks JAX's preemption sync point (once a step, with the step
  just finished): orbax's own asking, with the saved step and after an async save from another
  thread, could move the sync manager's step back and lose the preemption checkpoint."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint import checkpoint_manager  # pylint: disable=import-outside-toplevel
  asked = []   # what orbax's CheckpointManager.reached_preemption calls
  monkeypatch.setattr(checkpoint_manager.utils, "reached_preemption",
                      lambda step: asked.append(step) or False)
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=True)
  try:
    for step in (1, 2):
      checkpointer.save(step, {"w": jax.numpy.full((3,), float(step))}, None, {"step": step})
    checkpointer.wait()
    state, meta = checkpointer.restore(2, {"w": jax.ShapeDtypeStruct((3,), np.float32)}, None)
  finally:
    checkpointer.close()
  assert meta == {"step": 2} and float(state["w"][0]) == 2.0
  assert asked == []
