"""Memory planner: does a paper config's train step fit one device of a GPU or TPU, and which of the
settings darkjax's fit check tries (darkjax/fit.py) make it fit, decided on this host before
spending the accelerator.

    python -m darkjax.tools.fit --config configs/actlumos_arid.py [--config ...] \\
        --target h100:1 --target tpu-v5e:2x2 [--phase teacher|all] [--frames 16 --batch 8] \\
        [--override compute_dtype=float32] [--default-only | --candidates N | --until-fit]
        [--json OUT] [--markdown OUT] [--cache PATH] [--cache-only]

For each phase (default: the main phase; `all`: every phase of the config's plan) and target (a
compile-only target of darkjax/aot.py, "h100:8", "tpu-v5e:4x4", ...; default: this host's devices)
the phase's train step is built on the synthetic stand-in data of `bench --config`
(`bench_config.stand_in_config`: the config's clip geometry, no pretrained weights, nothing
downloads), compiled for the target's devices (`Trainer(target=...).compile_step()`) at the global
batch that runs there, and so is each setting of `darkjax.fit.candidates` (the first N with
`--candidates N`; none with `--default-only`; with `--until-fit` they stop at the first that
fits, which is what `fit=auto` would train with). That batch is the config's, or where the
target's devices do not divide it the nearest batch they do (`darkjax.config.round_batches`),
printed as "global batch 32 (config 30, rounded for 4 devices)"; with
`config.batch_rounding="error"` the target's row is that error. Each row gives XLA's memory per
device (arguments + outputs + temp - aliased), the limit (`config.device_memory_gib`, else what a
run on the target may hold: a TPU chip's HBM, a GPU's memory times JAX's allocator share, 75%
unless XLA_CLIENT_MEM_FRACTION says otherwise; else the device's own) and whether it fits.
`--markdown` writes the rows as the table in docs/benchmarks.md.

XLA:TPU fits the program to the chip's HBM itself and fails a compile that does not fit: that is
a "does not fit" row with the figures of XLA's message. A deviceless GPU compile counts no cuDNN
autotuning workspace, so its figure is a lower bound: a GPU row that fits within 15% of the limit
says so (`GPU_WORKSPACE_MARGIN`). Compiling for TPU or GPU needs the
`aot-tpu` / `aot-gpu` extras (the error names the pip command); a paper-size TPU compile takes
minutes on a 2-core host, so progress is printed and each row is cached in a JSON file keyed by
(config, phase, target, overrides, setting) under `--cache` (default ~/.cache/darkjax/fit.json;
"" turns it off).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from darkjax import fit as fit_lib
from darkjax import messages
from darkjax.tools import measure

DEFAULT_CACHE = os.path.join("~", ".cache", "darkjax", "fit.json")


class FitArgumentError(ValueError):
  """A flag, output or cache file fit cannot use; the message names it and what to do."""


def _load_cache(path: str) -> dict[str, Any]:
  if not path or not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      cache = json.load(f)
  except (OSError, ValueError) as error:
    raise FitArgumentError(f"--cache {path}: not a readable verdict cache ({error}); delete it "
                           "(its verdicts are compiled again) or give another --cache") from None
  if not isinstance(cache, dict):
    raise FitArgumentError(f"--cache {path}: not a verdict cache (a JSON object); delete it or "
                           "give another --cache")
  return cache


# What a real GPU's step held beyond a deviceless compile's figure, at most (cuDNN's workspace,
# its layouts: docs/benchmarks.md, "The GPU workspace margin"): a row within it of the limit is
# flagged.
GPU_WORKSPACE_MARGIN = 0.15


def _compile_row(build, config, overrides: dict[str, Any], target: str,
                 traffic: bool = False) -> dict[str, Any]:
  """One setting's row: GiB per device, the limit, fits (None: unknown), error; with `traffic`,
  the compiled step's memory traffic by kind of kernel (`measure.hlo_traffic`)."""
  from darkjax import aot  # pylint: disable=import-outside-toplevel
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  row: dict[str, Any] = {"setting": fit_lib.describe(overrides) or "default",
                         "overrides": overrides}
  start = time.perf_counter()
  try:
    trainer = build(config_lib.apply_overrides(config, overrides) if overrides else config)
    limit = fit_lib.mesh_limit(trainer.config, trainer.mesh, target)
    need = trainer.compile_step()
  except Exception as error:  # pylint: disable=broad-except
    figures = aot.out_of_memory_figures(str(error))
    if figures is None:
      row.update(error=str(error).strip().splitlines()[0][:300], fits=None)
    else:   # XLA:TPU's compile fails when the step does not fit the chip's HBM
      row.update(need_bytes=figures[0], limit_bytes=figures[1], fits=False,
                 error="XLA: " + str(error).strip().splitlines()[0][:300])
  else:
    row.update(need_bytes=need, limit_bytes=limit,
               fits=None if need is None or limit is None else need <= limit)
    if (row["fits"] and target and aot.parse(target).platform == "gpu"
        and need > (1 - GPU_WORKSPACE_MARGIN) * limit):
      row["tight"] = True
    if traffic:
      text = trainer.compiled_step.as_text()
      row["traffic"] = measure.hlo_traffic(text)
      row["autotuned"] = measure.autotuned(text)   # what a GPU's cold compile autotunes
  row["compile_s"] = round(time.perf_counter() - start, 1)
  return row


def _size(value: int | None) -> str:
  if value is None:
    return "?"
  gib = fit_lib.GIB
  return f"{value / gib:.2f} GiB" if value >= gib / 10 else f"{value / 2 ** 20:.1f} MiB"


def _format(row: dict[str, Any]) -> str:
  fits = {True: "fits", False: "does not fit", None: "unknown"}[row["fits"]]
  note = f"  ({row['error']})" if row.get("error") else ""
  if row.get("tight"):
    note = (f"  (within {GPU_WORKSPACE_MARGIN:.0%} of the limit, which a deviceless GPU figure "
            "leaves out: no cuDNN workspace; check on a GPU with bench --config C --memory)")
  return (f"  {row['setting']:<40} {_size(row.get('need_bytes')):>11} per device, limit "
          f"{_size(row.get('limit_bytes')) if row.get('limit_bytes') else 'none':>10}: "
          f"{fits}{note}")


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
  """Every (config, phase, target, setting) row, compiled or read from the cache; prints as it
  goes."""
  from darkjax import aot  # pylint: disable=import-outside-toplevel
  for name in args.target:
    aot.parse(name)   # a bad name fails before any compile
  cache_path = os.path.expanduser(args.cache) if args.cache else ""
  cache = _load_cache(cache_path)
  root = args.workdir or tempfile.mkdtemp(prefix="darkjax-fit-")
  rows = []
  try:
    for number, spec in enumerate(args.config):
      where = os.path.join(root, f"config{number}") if len(args.config) > 1 else root
      rows += _plan_config(args, spec, cache, cache_path, where)
  finally:
    if not args.workdir:   # its stand-in data and runs: nothing a user asked to keep
      shutil.rmtree(root, ignore_errors=True)
  return rows


def _plan_config(args: argparse.Namespace, spec: str, cache: dict[str, Any], cache_path: str,
                 root: str) -> list[dict[str, Any]]:
  import jax  # pylint: disable=import-outside-toplevel

  # pylint: disable=import-outside-toplevel
  from darkjax import aot, file_state, phases as phases_lib, sharding, targets
  from darkjax import config as config_lib
  from darkjax import task as task_lib
  from darkjax.tools import bench_config

  user = bench_config.parse_sets(args.override, flag="fit: --override")
  base = config_lib.load(spec)
  try:   # an override's value of another type, a phase the trainer lacks: before any compile
    run_config = config_lib.apply_overrides(base, user)
  except (TypeError, ValueError) as error:
    raise FitArgumentError(f"--override {' '.join(args.override)}: "
                           f"{messages.error_text(error)}") from None
  try:
    if args.phase == "all":
      phases = list(task_lib.phase_plan(run_config))
    else:
      phases = [task_lib.find_phase(run_config, args.phase) if args.phase
                else task_lib.main_phase(run_config)]
  except (KeyError, ValueError) as error:
    raise FitArgumentError(f"--phase {args.phase}: {messages.error_text(error)}") from None
  names = args.target or [""]
  stand_in = bench_config.stand_in_config(run_config, os.path.join(root, "data"), args.frames,
                                          args.batch, evals=args.evals)
  rows = []
  for phase in phases:
    for name in names:
      devices = aot.compile_only_devices(name) if name else jax.devices()
      platform = targets.platform_of(devices)
      config = config_lib.resolve(stand_in, platform)
      phase_config, task = task_lib.build_task(phase, config)
      label = name or f"local {platform} x{len(devices)}"
      compute = config_lib.compute_dtype(phase_config, platform).name
      head = (f"{spec} phase {phase.name} on {label} ({len(devices)} device(s), "
              f"{devices[0].device_kind})")
      # The batch the Trainer runs on these devices (config.batch_rounding), reported as such.
      batch_devices = sharding.batch_devices(sharding.make_mesh(phase_config.mesh, devices))
      requested = int(phase_config.input.batch_size)
      try:
        phase_config, _ = config_lib.round_batches(phase_config, batch_devices)
      except config_lib.ConfigError as error:
        print(f"{head}: {error}", flush=True)
        rows.append(dict(setting="default", overrides={}, fits=None, error=str(error),
                         compile_s=0.0, config=spec, phase=phase.name, target=label,
                         devices=len(devices), batch=requested, batch_requested=requested,
                         compute=compute, user=fit_lib.describe(user)))
        continue
      print(f"{head}, global batch {phase_config.input.batch_size}"
            f"{config_lib.rounded_note(phase_config, batch_devices)}, "
            f"{phase_config.input.frames} frames, compute {compute}:", flush=True)

      build = phases_lib.phase_trainers(phase, phase_config, task, {},
                                       os.path.join(root, "run", phase.name), target=name,
                                       devices=None if name else jax.devices())

      settings = [{}]
      if not args.default_only:
        settings += fit_lib.candidates(phase_config, platform, len(devices))[:args.candidates]
      for overrides in settings:
        # The resolved phase config is in the key (an edited config file compiles again), the
        # memory limit is not: a cached row's limit and verdict are recomputed (the GPU's
        # allocator fraction, config.device_memory_gib may differ from the cached run's).
        setting_config = (config_lib.apply_overrides(phase_config, overrides) if overrides
                          else phase_config)
        # where the stand-in data lies (a new temporary directory a call) is no part of it
        resolved = json.dumps(config_lib.json_values(setting_config), sort_keys=True)
        resolved = hashlib.sha256(resolved.replace(root, "{workdir}").encode()).hexdigest()
        key = json.dumps([spec, phase.name, label, user, args.frames, args.batch,
                          overrides, jax.__version__, resolved]
                         + (["traffic"] if args.traffic else []), sort_keys=True)
        row = cache.get(key)
        cached = row is not None
        if cached and row.get("need_bytes") is not None and not row.get("error"):
          limit = fit_lib.device_limit(setting_config, devices[0], name)
          row = dict(row, limit_bytes=limit,
                     fits=None if limit is None else row["need_bytes"] <= limit)
        if not cached and args.cache_only:
          row = {"setting": fit_lib.describe(overrides) or "default", "overrides": overrides,
                 "fits": None, "compile_s": None,
                 "error": "not compiled yet (run the same command without --cache-only)"}
        elif not cached:
          print(f"  compiling {fit_lib.describe(overrides) or 'default'} ...", flush=True)
          row = _compile_row(build, phase_config, overrides, name, args.traffic)
          if cache_path:
            cache[key] = row
            os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
            file_state.atomic_write_json(cache_path, cache)
        row = dict(row, config=spec, phase=phase.name, target=label, devices=len(devices),
                   batch=int(phase_config.input.batch_size), batch_requested=requested,
                   compute=compute, user=fit_lib.describe(user))
        rows.append(row)
        done = "[cached]" if cached else f"[{row['compile_s']} s]" if row["compile_s"] else ""
        print(f"{_format(row)}  {done}".rstrip(), flush=True)
        if row.get("traffic"):
          print(f"    traffic: {measure.format_traffic(row['traffic'])}", flush=True)
        if row.get("autotuned"):
          print(f"    autotuned on a GPU: {measure.format_autotuned(row['autotuned'])}",
                flush=True)
        if row["fits"] is None and args.cache_only and not cached:
          break   # the settings after an uncompiled one are unknown too
        if args.until_fit and row["fits"]:
          break   # what fit=auto would train with; the later settings are not needed
      if args.evals:
        rows += _eval_rows(build, phase_config, name, args.cache_only,
                           dict(config=spec, phase=phase.name, target=label, devices=len(devices),
                                batch=int(phase_config.input.batch_size),
                                batch_requested=requested, compute=compute,
                                user=fit_lib.describe(user)))
  return rows


def _eval_rows(build, config, target: str, cache_only: bool,
               common: dict[str, Any]) -> list[dict[str, Any]]:
  """A row per evaluation of the config's own setting whose programs compile ahead (classification,
  the two-stream video scores): the bytes one device holds while it runs, the train state resident
  (`Trainer.compile_evals`, what darkjax's fit check compares), at the config's eval batch, its
  views scored one at a time."""
  eval_batch, views = int(config.input.eval_batch_size), fit_lib.eval_views(config)
  setting = f"evaluation at eval batch {eval_batch}, {views} view(s) per example"
  if cache_only:
    row = dict(common, setting=setting, overrides={}, fits=None, compile_s=None,
               error="evaluations are not cached (run the same command without --cache-only)")
    print(_format(row), flush=True)
    return [row]
  start = time.perf_counter()
  trainer = build(config)
  limit = fit_lib.mesh_limit(trainer.config, trainer.mesh, target)
  rows = []
  for name, need in trainer.compile_evals().items():
    row = dict(common, setting=f"{setting} ({name})", overrides={}, need_bytes=need,
               limit_bytes=limit, fits=None if limit is None else need <= limit,
               compile_s=round(time.perf_counter() - start, 1))
    rows.append(row)
    print(f"{_format(row)}  [{row['compile_s']} s]", flush=True)
  return rows


def markdown(rows: list[dict[str, Any]]) -> str:
  """The rows as a Markdown table (docs/benchmarks.md's planner table)."""
  def gib(value):
    return "" if value is None else f"{value / fit_lib.GIB:.2f}"
  lines = ["| config | phase | target | global batch | compute | setting | GiB per device | "
           "limit GiB | fits | compile s |", "|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    setting = ", ".join(s for s in (row.get("user"), "" if row["setting"] == "default"
                                    else row["setting"]) if s) or "default"
    fits = {True: "yes", False: "**no**", None: "?"}[row["fits"]] + (
        f" (within {GPU_WORKSPACE_MARGIN:.0%})" if row.get("tight") else "")
    if row.get("error") and row["fits"] is None:
      fits = f"error: {row['error'][:120]}"
    batch = str(row["batch"])
    if row.get("batch_requested", row["batch"]) != row["batch"]:
      batch += f" (config {row['batch_requested']})"
    lines.append(f"| `{os.path.basename(row['config'])}` | {row['phase']} | {row['target']} | "
                 f"{batch} | {row['compute']} | {setting} | {gib(row.get('need_bytes'))} "
                 f"| {gib(row.get('limit_bytes'))} | {fits} | {row.get('compile_s') or ''} |")
  return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.fit", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", action="append", required=True,
                      help="configs/<paper>.py[:args] (repeatable)")
  parser.add_argument("--target", action="append", default=[],
                      help="a compile-only target (h100:8, tpu-v5e:2x2; repeatable); "
                           "default: this host's devices")
  parser.add_argument("--phase", default="", help="a phase name, or 'all' (default: main phase)")
  parser.add_argument("--frames", type=int, default=None)
  parser.add_argument("--batch", type=int, default=None, help="global batch size")
  parser.add_argument("--override", action="append", default=[],
                      help="config field as key.path=value (repeatable)")
  parser.add_argument("--default-only", action="store_true",
                      help="compile the config's own settings only, not fit's candidates")
  parser.add_argument("--candidates", type=int, default=None,
                      help="compile only the first N of fit's candidate settings")
  parser.add_argument("--until-fit", action="store_true",
                      help="stop at the first setting that fits: the config's own where it "
                           "fits, else the one fit=auto would train with (off: every candidate)")
  parser.add_argument("--traffic", action="store_true",
                      help="also report each compiled step's memory traffic by kind of kernel "
                           "(fusions, convolutions: bytes read and written, from its optimized "
                           "HLO; with --cache '' or a cache written with it) and what a GPU's "
                           "cold compile autotunes (its cuDNN convolutions and GEMMs, distinct)")
  parser.add_argument("--evals", action="store_true",
                      help="also compile the config's evaluations (those that compile ahead, at "
                           "its eval batch and views) and report what one device holds while "
                           "each runs, the train state resident: what the fit check compares "
                           "before training")
  parser.add_argument("--cache-only", action="store_true",
                      help="compile nothing: rows not in the cache say so (a table of a plan "
                           "still under way)")
  parser.add_argument("--cache", default=DEFAULT_CACHE, help="verdict cache ('' = off)")
  parser.add_argument("--json", default="", help="write the rows to this JSON file")
  parser.add_argument("--markdown", default="", help="write the rows as a Markdown table here")
  parser.add_argument("--workdir", default="", help="stand-in data and runs (default: a temp dir)")
  args = parser.parse_args(argv)
  for flag, value in (("--frames", args.frames), ("--batch", args.batch),
                      ("--candidates", args.candidates)):
    if value is not None and value < 1:
      parser.error(f"{flag} {value}: must be >= 1 (leave it out for the config's own)")
  return args


def _check_outputs(args: argparse.Namespace) -> None:
  """The files fit writes, checked before any compile (compiles take minutes)."""
  from darkjax import paths  # pylint: disable=import-outside-toplevel
  for flag, path in (("--json", args.json), ("--markdown", args.markdown),
                     ("--cache", os.path.expanduser(args.cache) if args.cache else "")):
    why = path and paths.cannot_write(path, directory=False)
    if why and not (flag == "--cache" and "does not exist" in why):   # the cache's folder is made
      raise FitArgumentError(f"{flag} {path}: {why}; give a file in a folder you can write to")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
  args = parse_args(argv)
  _check_outputs(args)
  if args.target and "JAX_PLATFORMS" not in os.environ:
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_platforms", "cpu")   # compile-only targets need no local accelerator
  rows = plan(args)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
  if args.markdown:
    with open(args.markdown, "w", encoding="utf-8") as f:
      f.write(markdown(rows))
  return rows


def cli(argv: list[str]) -> int:
  """`main` as a command: a bad config, arg, override or target is one line naming it (exit
  2)."""
  # pylint: disable=import-outside-toplevel
  from darkjax import aot
  from darkjax import config as config_lib
  from darkjax.data.ops import ClipSpecError
  try:
    main(argv)
  except (config_lib.ConfigError, aot.TargetError, aot.MissingCompilerError, FitArgumentError,
          ClipSpecError) as error:
    print(f"darkjax.tools.fit: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(cli(sys.argv[1:]))
