"""Source-only vs DANN (3D-DiNet) on the synthetic day -> target shift, several seeds, on the CPU:

    python -m darkjax.tools.dinet_experiment --workdir /tmp/darkjax/dinet_experiment
        [--seeds 0,1,2] [--config-arg target=ir,steps=250] [--out table.md]

Trains `configs/dinet_synthetic.py` once per (setting, seed) with `domain_loss=False` (source only)
and `domain_loss=True` (DANN), in WORKDIR/<setting>_seed<seed>, and prints / writes a markdown table
of the target test top-1 (and source test top-1) per seed with mean +- sample std (ddof=1). Finished
runs are read back from their `result.json`, so re-running the command only trains what is missing.
The claim checked at the end: DANN's mean target top-1 exceeds source-only's by more than the larger
of the two standard deviations.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from darkjax.tools import experiment

SETTINGS = (("source_only", False), ("dann", True))
_KEPT_METRICS = ("eval/top1", "eval/top5", "eval_source/top1")


def run_one(workdir: str, config_arg: str, seed: int, domain_loss: bool) -> dict[str, Any]:
  """Trains one configuration (or reads its stored result) and returns its final metrics."""
  arg = ",".join(a for a in (config_arg, f"seed={seed}", f"domain_loss={domain_loss}") if a)

  def make_config():
    from configs import dinet_synthetic  # pylint: disable=import-outside-toplevel
    return dinet_synthetic.get_config(arg)

  return experiment.run_cached(workdir, make_config, _KEPT_METRICS, seed=seed,
                               domain_loss=domain_loss, config_arg=arg)


def markdown_table(results: dict[str, list[dict[str, Any]]], config_arg: str) -> tuple[str, bool]:
  """(markdown, whether DANN beats source-only on the target by more than the larger std)."""
  return experiment.seed_table(
      results, "source_only", "dann",
      f"Synthetic day -> target shift (`configs/dinet_synthetic.py:{config_arg}`), target",
      column="target, seed {seed}", extra={"source top-1": "eval_source/top1"})


def main(argv: list[str] | None = None) -> int:
  parser = experiment.seed_parser("python -m darkjax.tools.dinet_experiment", __doc__,
                                  "configs/dinet_synthetic.py", "dinet_table.md",
                                  "target=dark,steps=200")
  args = experiment.check_seed_args(parser, parser.parse_args(argv), ("seed", "domain_loss"))
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel
  conv.configure_cpu_flags()
  results: dict[str, list[dict[str, Any]]] = {}
  for name, domain_loss in SETTINGS:
    results[name] = []
    for seed in args.seeds:
      result = run_one(os.path.join(args.workdir, f"{name}_seed{seed}"), args.config_arg, seed,
                       domain_loss)
      print(f"{name} seed {seed}: target top-1 {result['eval/top1']:.3f}, source top-1 "
            f"{result['eval_source/top1']:.3f} ({result['seconds']:.0f} s)", flush=True)
      results[name].append(result)
  table, holds = markdown_table(results, args.config_arg)
  experiment.write_table(table, args.out or os.path.join(args.workdir, "dinet_table.md"))
  return 0 if holds else 1


if __name__ == "__main__":
  sys.exit(main())
