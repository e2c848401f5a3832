"""Launching and watching local multi-process darkjax runs (imported by test modules; not a test
file): every child is bounded in time and killed when the test fails."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

from configs import synthetic as synthetic_config
from darkjax.data import prepared, records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def small_shard_dataset(directory: str, examples_per_shard: int = 8,
                        config_module=synthetic_config) -> dict:
  """The runlocal synthetic dataset of `config_module` (default configs/synthetic.py) in
  `directory`, rewritten with `examples_per_shard` per shard (configs/synthetic.py's 40 train clips
  -> 5 shards, 20 test clips -> 3 at 8) so two hosts get different files."""
  config = config_module.get_config(f"runlocal,data_dir={directory}")
  manifest = prepared.open_dataset(config.input.data).manifest

  def examples(split):
    for path, _ in records.split_files(manifest, directory, split):
      for data in records.iter_tfrecord(path):
        example = records.decode_example(data)
        yield {"video": example["video"], "label": example["label"],
               "video_id": example["video_id"],
               "streams": {s: example[s] for s in manifest["streams"]}}

  splits = {split: list(examples(split)) for split in manifest["splits"]}
  return records.write_dataset(directory, manifest["name"], manifest["class_names"], splits,
                               manifest["fps"], examples_per_shard=examples_per_shard,
                               streams=list(manifest["streams"]), metadata=manifest["metadata"],
                               overwrite=True)


def environment(cache_dir: str) -> dict[str, str]:
  """One CPU device per process, gloo collectives, the tests' compilation cache."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("XLA_FLAGS", None)
  return env


class Processes:
  """`count` `python -m darkjax.main` processes on a localhost coordinator; logs in `log_dir`."""

  def __init__(self, count: int, args: Sequence[str], log_dir: str, env: dict[str, str],
               heartbeat_timeout: int = 100):
    port = free_port()
    self.logs = [os.path.join(log_dir, f"process_{i}.log") for i in range(count)]
    self.procs = []
    for index in range(count):
      with open(self.logs[index], "w") as log:
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "darkjax.main", *args, "--jax_distributed",
             f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}",
             f"--process_id={index}", f"--heartbeat_timeout={heartbeat_timeout}"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))

  def output(self, index: int) -> str:
    with open(self.logs[index], encoding="utf-8", errors="replace") as log:
      return log.read()

  def wait(self, timeout: float) -> list[int | None]:
    """Return codes once all exit, or None for those still running at `timeout` (then killed).
    A process failing stops the wait (the others are given 0 s more)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      codes = [p.poll() for p in self.procs]
      if all(c is not None for c in codes):
        return codes
      time.sleep(0.1)
    codes = [p.poll() for p in self.procs]
    self.kill()
    return codes

  def kill(self) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

  def __enter__(self) -> Processes:
    return self

  def __exit__(self, *exc) -> None:
    self.kill()


def shards_read(output: str, what: str) -> set[str]:
  """Shard file names a process logged for `what` ('train' or 'eval')."""
  found = re.findall(rf"{what} reads the '\w+' stream of \d+ of \d+ shard\(s\) in \S+: (\S*)",
                     output)
  assert found, f"no '{what} reads N of M shard(s)' line in:\n{output[-3000:]}"
  return set(found[0].split(",")) - {""}
