"""launch/: dry runs print every command; SLURM variables map to process ids and a coordinator."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from darkjax.tools import slurm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("nodelist, host", [
    ("node001", "node001"), ("node001,login2", "node001"), ("gpu[003-010,012]", "gpu003"),
    ("gpu[012,003-010],x1", "gpu012"), ("a-b[7]", "a-b7")])
def test_first_host_of_slurm_node_lists(nodelist, host):
  assert slurm.first_host(nodelist) == host


def test_slurm_flags_mirror_jax_rule_and_fail_outside_slurm():
  env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_PROCID": "3",
         "SLURM_STEP_NODELIST": "gpu[007-010]"}
  assert slurm.distributed_flags(env) == [
      "--coordinator_address=gpu007:61586", "--num_processes=4", "--process_id=3"]
  assert slurm.coordinator_address({**env, "DARKJAX_COORDINATOR_PORT": "1234"}) == "gpu007:1234"
  with pytest.raises(KeyError, match="SLURM_PROCID"):
    slurm.distributed_flags({k: v for k, v in env.items() if k != "SLURM_PROCID"})


def test_slurm_dry_run_prints_one_command_per_task():
  env = dict(os.environ, SLURM_JOB_ID="7", SLURM_NTASKS="3", SLURM_STEP_NODELIST="n[5-7]",
             SLURM_SUBMIT_DIR="/shared/darkjax", DARKJAX_DRY_RUN="1", PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/slurm_gpu.sbatch", "configs/lift_arid.py", "gs://b/run",
                        "--config.seed=3"], cwd=REPO, env=env, check=True, capture_output=True,
                       text=True, timeout=60).stdout.splitlines()
  assert out[:2] == ["cd /shared/darkjax", ". .venv/bin/activate"]
  assert len(out) == 5
  for task, line in enumerate(out[2:]):
    prefix, command = line.split(": ", 1)
    assert prefix == f"srun task {task}"
    assert shlex.split(command) == [
        "python", "-m", "darkjax.main", "--config=configs/lift_arid.py", "--workdir=gs://b/run",
        "--jax_distributed", "--config.seed=3", "--coordinator_address=n5:61447",
        "--num_processes=3", f"--process_id={task}"]


def test_tpu_dry_run_prints_the_gcloud_command():
  out = subprocess.run(["bash", "launch/tpu_pod.sh", "--dry-run", "my-tpu", "us-central2-b",
                        "configs/lift_arid.py", "gs://b/run", "--config.seed=1"], cwd=REPO,
                       check=True, capture_output=True, text=True, timeout=60).stdout
  words = shlex.split(out)
  assert words[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone",
                       "us-central2-b", "--worker=all"]
  assert words[9:] == ["--command", "cd ~/darkjax && . .venv/bin/activate && python -m "
                       "darkjax.main --config=configs/lift_arid.py --workdir=gs://b/run "
                       "--jax_distributed --config.seed=1"]
  usage = subprocess.run(["bash", "launch/tpu_pod.sh", "--dry-run", "my-tpu"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
  assert usage.returncode == 2 and "usage:" in usage.stderr
