"""Entry point: `python -m darkjax.main --config=configs/<paper>_<dataset>.py[:args] --workdir=DIR`.

Runs the trainer named by `config.trainer`. Re-running the same command resumes from the latest
checkpoint in --workdir.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (with :args).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False, "Call jax.distributed.initialize() (multi-host: TPU pods, SLURM).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from darkjax.layers.conv import configure_cpu_flags  # pylint: disable=import-outside-toplevel
  configure_cpu_flags()
  # absl/orbax log every checkpoint step at INFO; darkjax's own progress is the bar + its logger.
  absl_logging.set_verbosity(absl_logging.WARNING)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s darkjax: %(message)s"))
  darkjax_log = logging.getLogger("darkjax")
  darkjax_log.addHandler(handler)
  darkjax_log.setLevel(logging.INFO)
  darkjax_log.propagate = False
  # Imported here so XLA flags are set before jax initialises its backends.
  import jax  # pylint: disable=import-outside-toplevel
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  from darkjax import train  # pylint: disable=import-outside-toplevel
  from darkjax.data.datasets import DatasetNotPreparedError  # pylint: disable=import-outside-toplevel
  from darkjax.preemption import Preempted  # pylint: disable=import-outside-toplevel
  try:
    results = train.run(_CONFIG.value, _WORKDIR.value)
  except Preempted as e:  # a clean stop: the checkpoint is saved, a rerun resumes
    print(f"darkjax: {e}", file=sys.stderr)
    sys.exit(0)
  except (DatasetNotPreparedError, train.NonFiniteLossError) as e:
    print(f"darkjax: {e}", file=sys.stderr)
    sys.exit(2)
  summary = {k: v for k, v in results.items() if isinstance(v, float) and "/" in k
             and "per_class" not in k}
  print("final:", ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary.items())))


if __name__ == "__main__":
  app.run(main)
