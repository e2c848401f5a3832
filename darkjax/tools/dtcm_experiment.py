"""No enhancement vs DTCM one-stage L_total on the very dark synthetic set, several seeds, on CPU:

    python -m darkjax.tools.dtcm_experiment --workdir /tmp/darkjax/dtcm_experiment
        [--seeds 0,1,2] [--config-arg darkness=0.95,steps=300] [--out table.md]

Trains `configs/dtcm_synthetic.py` once per (setting, seed) with `setting=no_enhancement` (the same
backbone on the same [0, 1] clips, per-clip normalised) and `setting=one_stage_total` (enhancer +
backbone, L_AR + alpha (W_STC L_STC + L_dark)), in WORKDIR/<setting>_seed<seed>, and prints /
writes a markdown table of test top-1 per seed with mean +- sample std (ddof=1). Finished runs are
read back from their `result.json`, so re-running the command only trains what is missing. The
claim checked at the end: L_total's mean top-1 exceeds no-enhancement's by more than the larger of
the two standard deviations (exit status 0 if it holds, 1 if not).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

SETTINGS = ("no_enhancement", "one_stage_total")
RESULT_FILE = "result.json"
_KEPT_METRICS = ("eval/top1", "eval/top5", "eval/mean_class_acc")


def run_one(workdir: str, config_arg: str, seed: int, setting: str) -> dict[str, Any]:
  """Trains one configuration (or reads its stored result) and returns its final metrics."""
  path = os.path.join(workdir, RESULT_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  from configs import dtcm_synthetic  # pylint: disable=import-outside-toplevel
  from darkjax import train  # pylint: disable=import-outside-toplevel
  arg = ",".join(a for a in (config_arg, f"seed={seed}", f"setting={setting}") if a)
  config = dtcm_synthetic.get_config(arg)
  config.progress_bar = False
  config.eval_every = 0                           # only the final evaluation
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
  result.update(seed=seed, setting=setting, config_arg=arg, seconds=round(time.time() - start, 1))
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  return result


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def markdown_table(results: dict[str, list[dict[str, Any]]], config_arg: str) -> tuple[str, bool]:
  """(markdown, whether one-stage L_total beats no enhancement by more than the larger std)."""
  seeds = [r["seed"] for r in results["no_enhancement"]]
  lines = [f"Very dark synthetic set (`configs/dtcm_synthetic.py:{config_arg}`), test top-1 in %, "
           f"mean +- sample std over seeds {seeds}.", "",
           "| setting | " + " | ".join(f"seed {s}" for s in seeds) + " | top-1 |",
           "|---|" + "---|" * (len(seeds) + 1)]
  stats = {}
  for name, runs in results.items():
    top1 = [100 * r["eval/top1"] for r in runs]
    stats[name] = mean_std(top1)
    lines.append(f"| {name} | " + " | ".join(f"{t:.1f}" for t in top1)
                 + f" | **{stats[name][0]:.1f} +- {stats[name][1]:.1f}** |")
  gain = stats["one_stage_total"][0] - stats["no_enhancement"][0]
  larger_std = max(stats["one_stage_total"][1], stats["no_enhancement"][1])
  holds = gain > larger_std
  lines += ["", f"one_stage_total - no_enhancement: {gain:+.1f} points; larger std "
            f"{larger_std:.1f} -> claim (gain > larger std) "
            f"{'holds' if holds else 'does NOT hold'}.",
            ""]
  return "\n".join(lines), holds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.dtcm_experiment",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="one sub-directory per run goes here")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
  parser.add_argument("--config-arg", default="",
                      help="extra args of configs/dtcm_synthetic.py, e.g. darkness=0.9,steps=200")
  parser.add_argument("--out", default="", help="markdown output (default WORKDIR/dtcm_table.md)")
  args = parser.parse_args(argv)
  try:
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  if len(args.seeds) < 2:
    parser.error("--seeds needs at least two seeds for a standard deviation")
  if "seed=" in args.config_arg or "setting=" in args.config_arg:
    parser.error("--config-arg must not set seed or setting: the experiment sets them")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel
  conv.configure_cpu_flags()
  results: dict[str, list[dict[str, Any]]] = {}
  for setting in SETTINGS:
    results[setting] = []
    for seed in args.seeds:
      result = run_one(os.path.join(args.workdir, f"{setting}_seed{seed}"), args.config_arg,
                       seed, setting)
      print(f"{setting} seed {seed}: top-1 {result['eval/top1']:.3f} ({result['seconds']:.0f} s)",
            flush=True)
      results[setting].append(result)
  table, holds = markdown_table(results, args.config_arg)
  out = args.out or os.path.join(args.workdir, "dtcm_table.md")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(table)
  print(table)
  print(f"table written to {out}")
  return 0 if holds else 1


if __name__ == "__main__":
  sys.exit(main())
