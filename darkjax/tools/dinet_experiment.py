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

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

SETTINGS = (("source_only", False), ("dann", True))
RESULT_FILE = "result.json"
_KEPT_METRICS = ("eval/top1", "eval/top5", "eval_source/top1")


def run_one(workdir: str, config_arg: str, seed: int, domain_loss: bool) -> dict[str, Any]:
  """Trains one configuration (or reads its stored result) and returns its final metrics."""
  path = os.path.join(workdir, RESULT_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  from configs import dinet_synthetic  # pylint: disable=import-outside-toplevel
  from darkjax import train  # pylint: disable=import-outside-toplevel
  arg = ",".join(a for a in (config_arg, f"seed={seed}", f"domain_loss={domain_loss}") if a)
  config = dinet_synthetic.get_config(arg)
  config.progress_bar = False
  config.checkpoint_every = config.total_steps   # only the final state: keeps the runs fast
  config.lock()
  start = time.time()
  results = train.run(config, workdir)
  missing = [k for k in _KEPT_METRICS if k not in results]
  if missing:
    raise RuntimeError(f"{workdir}: the run ended without the final evaluation ({missing} "
                       f"missing; it was probably already complete without {RESULT_FILE}). "
                       f"Delete {workdir} and re-run.")
  result = {k: float(results[k]) for k in _KEPT_METRICS}
  result.update(seed=seed, domain_loss=domain_loss, config_arg=arg,
                seconds=round(time.time() - start, 1))
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  return result


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def markdown_table(results: dict[str, list[dict[str, Any]]], config_arg: str) -> tuple[str, bool]:
  """(markdown, whether DANN beats source-only by more than the larger std)."""
  seeds = [r["seed"] for r in results["source_only"]]
  lines = [f"Synthetic day -> target shift (`configs/dinet_synthetic.py:{config_arg}`), "
           f"top-1 in %, mean +- sample std over seeds {seeds}.", "",
           "| setting | " + " | ".join(f"target, seed {s}" for s in seeds)
           + " | target top-1 | source top-1 |", "|---|" + "---|" * (len(seeds) + 2)]
  stats = {}
  for name, runs in results.items():
    target = [100 * r["eval/top1"] for r in runs]
    source = [100 * r["eval_source/top1"] for r in runs]
    stats[name] = mean_std(target)
    source_mean, source_std = mean_std(source)
    lines.append(f"| {name} | " + " | ".join(f"{t:.1f}" for t in target)
                 + f" | **{stats[name][0]:.1f} +- {stats[name][1]:.1f}** | "
                 f"{source_mean:.1f} +- {source_std:.1f} |")
  gain = stats["dann"][0] - stats["source_only"][0]
  larger_std = max(stats["dann"][1], stats["source_only"][1])
  holds = gain > larger_std
  lines += ["", f"DANN - source-only on the target: {gain:+.1f} points; larger std {larger_std:.1f}"
            f" -> claim (gain > larger std) {'holds' if holds else 'does NOT hold'}.", ""]
  return "\n".join(lines), holds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.dinet_experiment",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="one sub-directory per run goes here")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
  parser.add_argument("--config-arg", default="",
                      help="extra args of configs/dinet_synthetic.py, e.g. target=dark,steps=200")
  parser.add_argument("--out", default="", help="markdown output (default WORKDIR/dinet_table.md)")
  args = parser.parse_args(argv)
  try:
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  if len(args.seeds) < 2:
    parser.error("--seeds needs at least two seeds for a standard deviation")
  if "seed=" in args.config_arg or "domain_loss" in args.config_arg:
    parser.error("--config-arg must not set seed or domain_loss: the experiment sets them")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel
  conv.configure_cpu_flags()
  results: dict[str, list[dict[str, Any]]] = {}
  for name, domain_loss in SETTINGS:
    results[name] = []
    for seed in args.seeds:
      run_dir = os.path.join(args.workdir, f"{name}_seed{seed}")
      result = run_one(run_dir, args.config_arg, seed, domain_loss)
      print(f"{name} seed {seed}: target top-1 {result['eval/top1']:.3f}, source top-1 "
            f"{result['eval_source/top1']:.3f} ({result['seconds']:.0f} s)", flush=True)
      results[name].append(result)
  table, holds = markdown_table(results, args.config_arg)
  out = args.out or os.path.join(args.workdir, "dinet_table.md")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(table)
  print(table)
  print(f"table written to {out}")
  return 0 if holds else 1


if __name__ == "__main__":
  sys.exit(main())
