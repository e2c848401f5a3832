"""Shared machinery of the several-seed comparisons (`dinet_experiment`, `dtcm_experiment`).

A comparison trains a baseline and a method once per seed, each run in its own directory whose
`result.json` caches the final metrics (re-running a comparison trains only what is missing),
prints a markdown table of test top-1 per seed with mean +- sample std (ddof=1), and checks the
claim "the method's mean beats the baseline's by more than the larger of the two stds".
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable, Sequence

import ml_collections as mlc

from darkjax import files

RESULT_FILE = "result.json"


def run_cached(workdir: str, make_config: Callable[[], mlc.ConfigDict],
               kept_metrics: Sequence[str], **info: Any) -> dict[str, Any]:
  """Trains `make_config()` in `workdir` (or reads its stored result); returns the final
  `kept_metrics` plus `info` and the wall time in seconds."""
  path = os.path.join(workdir, RESULT_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  from darkjax import train  # pylint: disable=import-outside-toplevel
  config = make_config()
  config.progress_bar = False
  config.checkpoint_every = config.total_steps   # only the final state: keeps the runs fast
  config.lock()
  start = time.time()
  results = train.run(config, workdir)
  missing = [k for k in kept_metrics if k not in results]
  if missing:
    raise RuntimeError(f"{workdir}: the run ended without the final evaluation ({missing} "
                       f"missing; it was probably already complete without {RESULT_FILE}). "
                       f"Delete {workdir} and re-run.")
  result = {k: float(results[k]) for k in kept_metrics}
  result.update(info, seconds=round(time.time() - start, 1))
  files.atomic_write_json(path, result)  # a torn file would stop every later re-run
  return result


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def seed_table(results: dict[str, list[dict[str, Any]]], baseline: str, method: str, title: str,
               metric: str = "eval/top1", column: str = "seed {seed}",
               extra: dict[str, str] | None = None) -> tuple[str, bool]:
  """(markdown, whether `method` beats `baseline` on `metric` by more than the larger std).

  `results[name]` lists one run's metrics per seed (each with a "seed"); `extra` maps a further
  column title to a metric shown as mean +- std (e.g. the source-domain accuracy).
  """
  extra = extra or {}
  seeds = [r["seed"] for r in results[baseline]]
  lines = [f"{title}, top-1 in %, mean +- sample std over seeds {seeds}.", "",
           "| setting | " + " | ".join(column.format(seed=s) for s in seeds) + " | top-1 |"
           + "".join(f" {name} |" for name in extra),
           "|---|" + "---|" * (len(seeds) + 1 + len(extra))]
  stats = {}
  for name, runs in results.items():
    values = [100 * r[metric] for r in runs]
    stats[name] = mean_std(values)
    row = (f"| {name} | " + " | ".join(f"{v:.1f}" for v in values)
           + f" | **{stats[name][0]:.1f} +- {stats[name][1]:.1f}** |")
    for key in extra.values():
      m, s = mean_std([100 * r[key] for r in runs])
      row += f" {m:.1f} +- {s:.1f} |"
    lines.append(row)
  gain = stats[method][0] - stats[baseline][0]
  larger_std = max(stats[method][1], stats[baseline][1])
  holds = gain > larger_std
  lines += ["", f"{method} - {baseline}: {gain:+.1f} points; larger std {larger_std:.1f} -> "
            f"claim (gain > larger std) {'holds' if holds else 'does NOT hold'}.", ""]
  return "\n".join(lines), holds


def seed_parser(prog: str, doc: str, config_file: str, default_table: str,
                example_arg: str, default_arg: str = "") -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="one sub-directory per run goes here")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
  parser.add_argument("--config-arg", default=default_arg,
                      help=f"extra args of {config_file}, e.g. {example_arg}")
  parser.add_argument("--out", default="",
                      help=f"markdown output (default WORKDIR/{default_table})")
  return parser


def check_seed_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    reserved: Sequence[str]) -> argparse.Namespace:
  """Parses `--seeds` (at least two) and refuses config args the experiment sets itself."""
  try:
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  if len(args.seeds) < 2:
    parser.error("--seeds needs at least two seeds for a standard deviation")
  set_here = [key for key in reserved if f"{key}=" in args.config_arg]
  if set_here:
    parser.error(f"--config-arg must not set {', '.join(reserved)}: the experiment sets them")
  return args


def write_table(table: str, out: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(table)
  print(table)
  print(f"table written to {out}")
  return out
