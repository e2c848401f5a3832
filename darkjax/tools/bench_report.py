"""What `darkjax.tools.bench --json OUT` writes and `--markdown-from` renders.

`provenance` is what each written result carries besides its figures: the command, the date, the
machine (jax device, torch device, cores), the versions of python, jax, jaxlib and torch, and
XLA_FLAGS where the environment sets it.
`side_summary` condenses one side's alternating rounds into step milliseconds (median of the
rounds' medians, with the rounds' minimum and maximum as its spread). `markdown_table` renders the
results of `bench --model M --vs-torch [--torch-compile]` as a docs/benchmarks.md table, one row
per result and one numbered line per row with the command, date, device and versions;
`config_table` those of `bench --config C` (step, memory, cold compile and warm start), and
`markdown` both from a mix of the two.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shlex
import sys
from typing import Any, Callable, Iterable

from darkjax import profiling
from darkjax.tools.measure import median


def provenance(argv: list[str]) -> dict[str, Any]:
  """The command, UTC date and versions; the devices when jax (and torch) are imported."""
  versions = {"python": platform.python_version()}
  found = {"command": shlex.join(["python", "-m", "darkjax.tools.bench", *argv]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "versions": versions}
  if os.environ.get("XLA_FLAGS"):   # e.g. a GPU autotuning level: part of what was measured
    found["xla_flags"] = os.environ["XLA_FLAGS"]
  if "jax" in sys.modules:
    import jax  # pylint: disable=import-outside-toplevel
    import jaxlib  # pylint: disable=import-outside-toplevel
    versions["jax"], versions["jaxlib"] = jax.__version__, jaxlib.__version__
    device = jax.devices()[0]
    found["device_kind"] = device.device_kind
  if "torch" in sys.modules:
    torch = sys.modules["torch"]
    versions["torch"] = torch.__version__
    if torch.cuda.is_available():
      versions["cuda"], versions["cudnn"] = torch.version.cuda, torch.backends.cudnn.version()
  return found


def side_summary(rounds: list[tuple[float, float]]) -> dict[str, Any]:
  """(wall s, CPU s) medians per round -> milliseconds: median over rounds, min, max, each round."""
  walls = [wall * 1e3 for wall, _ in rounds]
  return {"step_ms": median(walls), "step_ms_min": min(walls), "step_ms_max": max(walls),
          "rounds_ms": walls, "cpu_ms": median([cpu * 1e3 for _, cpu in rounds])}


def pipelined_summary(rounds: list[tuple[float, float]]) -> dict[str, Any]:
  """`measure.pipelined_rounds`' (wall s, CPU s) per step per round -> milliseconds: median over
  rounds, min, max, each round."""
  summary = side_summary(rounds)
  return {"pipelined_ms": summary["step_ms"], "pipelined_ms_min": summary["step_ms_min"],
          "pipelined_ms_max": summary["step_ms_max"], "pipelined_rounds_ms": summary["rounds_ms"],
          "pipelined_cpu_ms": summary["cpu_ms"]}


def pipelined_ratios(result: dict[str, Any], rounds: dict[str, list[tuple[float, float]]],
                     others: list[str]) -> None:
  """`result["pipelined_ratios"]`: flax's pipelined time over each of `others` (torch, each
  torch.compile mode), the median of per-round ratios, and "reference": over the torch.compile
  mode fastest pipelined (`result["pipelined_reference"]`), where one ran."""
  ratios = {name: median([f[0] / o[0] for f, o in zip(rounds["flax"], rounds[name])])
            for name in others}
  compiled = [name for name in others if name != "torch"]
  if compiled:
    reference = min(compiled, key=lambda name: result["sides"][name]["pipelined_ms"])
    result["pipelined_reference"] = reference
    ratios["reference"] = ratios[reference]
  result["pipelined_ratios"] = ratios


# What makes a pre-pass result (`--cold-from`) the same measurement as the timed run's.
SAME_ROW = ("model", "batch", "frames", "size", "dtype")
SAME_CONFIG = ("config", "overrides", "phase", "batch", "frames")


def compile_seconds(result: dict[str, Any]) -> dict[str, float]:
  """A `bench --model` or `--config` result's compile seconds per side: {"flax": s,
  "torch.compile MODE": s, "flax SPEC": s for each `--variants` SPEC, ...}, or {"train_step": s}
  for a config's step."""
  if "remat" in result:
    return {"train_step": result["remat"]["none"]["compile_s"]}
  sides = {name: side["compile_s"] for name, side in result.get("sides", {}).items()
           if "compile_s" in side} or (
               {"flax": result["compile_s"]} if "compile_s" in result else {})   # or levers
  return {**sides, **{f"flax {spec}": entry["compile_s"]
                      for spec, entry in (result.get("variants") or {}).items()
                      if "compile_s" in entry}}   # not a variant that did not compile


def read_cold_from(path: str, result: dict[str, Any]) -> dict[str, Any]:
  """The `--compile-only --json` result at `path`, checked to be a pre-pass of the row or config
  `result` describes (the SAME_ROW / SAME_CONFIG fields it has, and the optimizer's name):
  ValueError naming `path` and the first field that differs."""
  try:
    cold = json.loads(pathlib.Path(path).read_text())
  except (OSError, json.JSONDecodeError) as error:
    raise ValueError(f"--cold-from {path}: not a readable `bench --compile-only --json` result "
                     f"({error})") from error
  config = "config" in result
  for key in SAME_CONFIG if config else SAME_ROW + ("optimizer",):
    if key not in result:
      continue
    mine, theirs = result[key], cold.get(key)
    if key == "optimizer":
      mine, theirs = (mine or {}).get("name"), (theirs or {}).get("name")
    if mine != theirs:
      raise ValueError(f"--cold-from {path}: its {key} is {theirs!r}, this run's {mine!r}: not "
                       "the pre-pass of this row or config")
  return cold


def with_cold_compile(result: dict[str, Any], args: Any) -> dict[str, Any]:
  """`result` with `concurrent_compiles` (`--concurrent` > 1) and, with `--cold-from PATH ...`,
  `cold_compile`: the PATHs' compile seconds per side (`--compile-only` pre-pass commands of the
  same row or config, each compiling some of its sides or variants, that filled the persistent
  caches this run compiled from, `read_cold_from`) and how many commands compiled at once
  there (the most of theirs)."""
  if getattr(args, "concurrent", 1) > 1:
    result["concurrent_compiles"] = args.concurrent
  paths = getattr(args, "cold_from", None) or []
  if not paths:
    return result
  colds = [read_cold_from(path, result) for path in paths]
  result["cold_compile"] = {
      "from": paths[0] if len(paths) == 1 else paths,
      "concurrent": max(cold.get("concurrent_compiles", 1) for cold in colds),
      **{name: seconds for cold in colds for name, seconds in compile_seconds(cold).items()}}
  changes = ", ".join(f"{name} {result['cold_compile'][name]:.1f} -> {seconds:.1f} s"
                      for name, seconds in compile_seconds(result).items()
                      if name in result["cold_compile"])
  print(f"  compile, cold (pre-pass, {result['cold_compile']['concurrent']} at once) -> warm (this "
        f"run, persistent caches): {changes}", flush=True)
  return result


def write_json(path: str, result: dict[str, Any]) -> None:
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1, default=str) + "\n")


def _is_row(result: dict[str, Any]) -> bool:
  return "torch" in result.get("sides", {})


def _is_timed_row(result: dict[str, Any]) -> bool:
  """A row with step times; a `--compile-only` row (a pre-pass's) has compiles alone."""
  return _is_row(result) and "ratios" in result


def _is_config(result: dict[str, Any]) -> bool:
  return "config" in result and "none" in result.get("remat", {})


def _is_target(result: dict[str, Any]) -> bool:
  """A `bench --model M --target T --json` result: the step compiled for a compile-only target
  under each of its variants, nothing run."""
  return "target" in result and "platform" in result and "variants" in result


def _is_lever(result: dict[str, Any]) -> bool:
  """A `bench --model M --variants ...` result without --torch-compile: the row's flax variants
  (its levers) timed against each other."""
  return ("model" in result and "batch" in result and "variants" in result
          and "sides" not in result and not _is_target(result))


def _is_count(result: dict[str, Any]) -> bool:
  return "traced_for" in result and "flops_per_step" in result


def _step_key(result: dict[str, Any], platform: str) -> tuple:
  """The step a result measured: the row's model, batch, clip, dtype and optimizer, or the
  config's path, overrides, phase, batch and frames; and the platform. What a `--count-flops`
  result and a timed one share for the count to be the timed step's, and a compile-only
  pre-pass and the timed run of the same step."""
  if "model" in result:
    return (result["model"], result["batch"], result["frames"], result["size"], result["dtype"],
            result["optimizer"]["name"], platform)
  return (result["config"], json.dumps(result.get("overrides") or {}, sort_keys=True),
          result["phase"], result.get("batch"), result.get("frames"), platform)


def load(paths: Iterable[str]) -> list[dict[str, Any]]:
  """bench --json results of the train-step benchmark against torch and of paper configs' steps
  (ValueError naming the file that is none of these). A `--count-flops` result gives its count
  to each row or config result it matches (`_step_key`), timed on the platform it was traced
  for, that has none of its own (measured before bench counted): those gain the count
  (`flops_from`: its command) and their utilisation."""
  results, counts, seen = [], {}, set()
  for path in paths:
    try:
      text = pathlib.Path(path).read_text()
      result = json.loads(text)
    except (OSError, ValueError) as error:   # one cut short by a lease's end: the rest render
      print(f"bench --markdown-from: {path} left out: not readable JSON ({error})",
            file=sys.stderr)
      continue
    if text in seen:   # the same result given twice (a glob and its file)
      continue
    seen.add(text)
    if _is_count(result):
      counts[_step_key(result, result["traced_for"])] = result
      continue
    if not (_is_row(result) or _is_config(result) or _is_target(result)
            or _is_lever(result)):
      raise ValueError(f"{path}: not a `bench --model M --vs-torch --json` result (no 'sides' "
                       "with 'torch'), a `bench --config C --json` one (no 'config' and 'remat' "
                       "with 'none'), a `bench --model M --target T --json` one, a `bench "
                       "--model M --variants V --json` one nor a `bench --model M --count-flops "
                       "P --json` one")
    results.append(result)
  for result in results:
    count = counts.get(_step_key(result, result.get("device", "")))
    if count is None:
      continue
    traced, timed = (r.get("versions", {}).get("jax") for r in (count, result))
    if traced and timed and traced != timed:   # another XLA may count another program
      print(f"bench --markdown-from: the FLOP count of `{count.get('command', '')}` (jax "
            f"{traced}) left out for `{result.get('command', '')}`, timed with jax {timed}: "
            "count it with the timed run's jax", file=sys.stderr)
      continue
    if _is_row(result) and not result.get("flops_per_step"):
      result["flops_per_step"] = count["flops_per_step"]
      result["flops_from"] = count.get("command", "")
      with_utilisation(result)
    elif _is_config(result) and not result["remat"]["none"].get("flops_per_device"):
      devices = max(1, int(result.get("devices") or 1))
      result["remat"]["none"]["flops_per_device"] = count["flops_per_step"] / devices
      result["flops_from"] = count.get("command", "")
      with_config_utilisation(result)
  return results


def with_utilisation(result: dict[str, Any]) -> dict[str, Any]:
  """`bench --model`: each timed side's and flax variant's `utilisation` (and
  `pipelined_utilisation`): XLA's count of the flax step's operations (`flops_per_step`, the
  global batch's; the same model, batch and update on every side) per device over its step time,
  against the device's bf16 dense peak (`profiling.utilisation`)."""
  flops = result.get("flops_per_step")
  if not flops:
    return result
  per_device, kind = flops / max(1, int(result.get("devices") or 1)), result.get("device_kind", "")
  entries = [*result.get("sides", {}).values(), *(result.get("variants") or {}).values()]
  for entry in entries:
    for key, out in (("step_ms", "utilisation"), ("pipelined_ms", "pipelined_utilisation")):
      if key in entry:
        entry[out] = profiling.utilisation(per_device, entry[key] / 1e3, kind)
  return result


def with_config_utilisation(result: dict[str, Any]) -> dict[str, Any]:
  """`bench --config`: `flops_per_device_step` (XLA's count of the phase's step per device) and
  its `utilisation` / `pipelined_utilisation` at the step times of remat none."""
  step = result["remat"]["none"]
  flops = step.get("flops_per_device")
  if not flops:
    return result
  result["flops_per_device_step"] = flops
  kind = result.get("device_kind", "")
  for key, out in (("step_s", "utilisation"), ("pipelined_step_s", "pipelined_utilisation")):
    if key in step:
      result[out] = profiling.utilisation(flops, step[key], kind)
  return result


def _utilisation_cell(entry: dict[str, Any] | None) -> str:
  """'156 (15.7%) p': TFLOP/s per device and the share of the bf16 dense peak where the device's
  is known, at the pipelined step time where one was timed (marked p), else at the step time;
  '-' without a count."""
  entry = entry or {}
  piped = entry.get("pipelined_utilisation")
  found = piped or entry.get("utilisation") or {}
  if "tflops" not in found:
    return "-"
  cell = f"{found['tflops']:.3g}"
  return (cell + (f" ({found['peak_fraction']:.1%})" if "peak_fraction" in found else "")
          + (" p" if piped else ""))


def _ms(side: dict[str, Any] | None, reference: bool) -> str:
  if side is None:
    return "-"
  cell = f"{side['step_ms']:.1f} ({side['step_ms_min']:.1f}-{side['step_ms_max']:.1f})"
  return f"**{cell}**" if reference else cell


def _ratio(value: float | None) -> str:
  """Three decimals: a ratio just above 1.0 (1.004) must not read as 1.00 against a <= 1.0
  criterion."""
  return "-" if value is None else f"{value:.3f}"


def _variants(result: dict[str, Any]) -> str:
  """'`lowering=frames2d` 29.4 (0.91)': each flax variant's step ms and its per-round ratio to the
  reference side (the faster torch.compile mode), median over rounds; '-' without variants."""
  reference = result["sides"].get(result.get("reference") or "")
  cells = []
  for spec, entry in (result.get("variants") or {}).items():
    if "error" in entry:
      cells.append(f"`{spec}` did not compile")
    if "step_ms" not in entry:
      continue
    cell = f"`{spec}` {entry['step_ms']:.1f}"
    if reference is not None:
      ratios = [v / r for v, r in zip(entry["rounds_ms"], reference["rounds_ms"])]
      cell += f" ({_ratio(median(ratios))})"
    if "pipelined_ms" in entry:
      cell += f", pipelined {entry['pipelined_ms']:.1f}"
      piped = result["sides"].get(result.get("pipelined_reference") or "")
      if piped is not None:
        ratios = [v / r for v, r in zip(entry["pipelined_rounds_ms"], piped["pipelined_rounds_ms"])]
        cell += f" ({_ratio(median(ratios))})"
    cells.append(cell)
  return "; ".join(cells) or "-"


def _compiled_sides(results: list[dict[str, Any]]) -> list[str]:
  """The torch.compile sides ("torch.compile MODE") of the rows, in order of first appearance."""
  compiled: list[str] = []
  for result in results:
    compiled += [name for name in result["sides"] if name not in ("flax", "torch", *compiled)]
  return compiled


def markdown_table(results: list[dict[str, Any]]) -> str:
  """One row per result: step ms (median over rounds, min-max) of flax, eager torch and each
  torch.compile mode (the reference, the faster mode, in bold), flax / eager torch and flax / best
  torch.compile (median of per-round ratios), compile seconds, and where `--variants` timed other
  flax settings beside them, each one's step ms with its ratio to the best torch.compile (median
  of per-round ratios); then a line per row with its command, date, device and versions."""
  compiled = _compiled_sides(results)
  torch_sides = ["torch"] + compiled
  with_variants = any(result.get("variants") for result in results)
  piped = any(result.get("pipelined_ratios") for result in results)
  counted = any(result.get("flops_per_step") for result in results)
  header = (["model", "B x T x H^2", "dtype", "optimizer",
             "flax ms (median of rounds, min-max)"] +
            [("torch eager" if name == "torch" else name) + " ms" for name in torch_sides] +
            ["flax / torch eager"] + (["flax / best torch.compile"] if compiled else []) +
            (["pipelined ms (flax / torch eager" + (" / best torch.compile)" if compiled
                                                     else ")"),
              "pipelined ratios (flax / torch eager" +
              ("; flax / best torch.compile)" if compiled else ")")] if piped else []) +
            ["compile s (flax" + "".join(f" / {name}" for name in compiled) + ")"] +
            (["flax TFLOP/s per device (% of bf16 peak; p: at the pipelined step time)"]
             if counted else []) +
            (["flax variants: ms (/ best torch.compile)"] if with_variants else []) + ["run"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = []
  for index, result in enumerate(results, 1):
    sides, ratios = result["sides"], result["ratios"]
    reference = result.get("reference")
    cold = result.get("cold_compile")   # a pre-pass's cold compiles, when this run's were warm
    compile_s = [cold.get(name) if cold is not None else sides.get(name, {}).get("compile_s")
                 for name in ["flax"] + compiled]
    row = ([f"`{result['model']}`",
            f"{result['batch']} x {result['frames']} x {result['size']}^2",
            result["dtype"], result["optimizer"]["name"], _ms(sides["flax"], False)] +
           [_ms(sides.get(name), name == reference) for name in torch_sides] +
           [_ratio(ratios.get("torch"))] +
           ([_ratio(ratios.get("reference"))] if compiled else []) +
           (_pipelined_cells(result, bool(compiled)) if piped else []) +
           [" / ".join("-" if s is None else f"{s:.1f}" for s in compile_s)] +
           ([_utilisation_cell(sides["flax"])] if counted else []) +
           ([_variants(result)] if with_variants else []) + [f"[{index}]"])
    lines.append("| " + " | ".join(row) + " |")
    notes.append(_note(index, result))
  return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _pipelined_cells(result: dict[str, Any], compiled: bool) -> list[str]:
  """A row's two pipelined cells (`bench --pipelined`: steps dispatched back to back, one wait):
  flax's, eager torch's and the fastest torch.compile mode's ms, and flax's ratios to them
  (medians of per-round ratios); '-' for a row measured without it."""
  ratios = result.get("pipelined_ratios")
  if not ratios:
    return ["-", "-"]
  sides = result["sides"]
  names = ["flax", "torch"] + ([result["pipelined_reference"]] if compiled and
                               result.get("pipelined_reference") else [])
  times = " / ".join(f"{sides[name]['pipelined_ms']:.1f}" for name in names)
  cells = [_ratio(ratios.get("torch"))] + ([_ratio(ratios.get("reference"))] if compiled else [])
  return [times, "; ".join(cells)]


def _note(index: int, result: dict[str, Any]) -> str:
  """A table row's numbered line: its command, date, device, host cores and versions, and where
  its compiles came from a pre-pass (`cold_compile`), this run's own (warm) figures."""
  versions = result["versions"]
  software = ", ".join(f"{label} {versions[name]}" for name, label in (
      ("jax", "jax"), ("jaxlib", "jaxlib"), ("torch", "torch"), ("cuda", "torch's CUDA"),
      ("cudnn", "torch's cuDNN")) if name in versions)
  device = result.get("device_kind", result.get("device", "?"))
  if result.get("torch_device") and result["torch_device"] != device:
    device += f" (torch: {result['torch_device']})"
  note = (f"- [{index}] `{result['command']}`: {result['date'][:10]}, {device}, "
          f"{result.get('cores', '?')} host cores, {software}"
          + (f", XLA_FLAGS `{result['xla_flags']}`." if result.get("xla_flags") else "."))
  step = (result.get("remat") or {}).get("none", {})
  if step.get("compile_parts"):   # `bench --config`: where its own compile went, and its init
    note += (" Its compile: " + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in
                                          step["compile_parts"].items()) + ".")
  if "init_s" in step:
    note += f" Its parameter init (compile and run): {step['init_s']:.1f} s."
  if result.get("flops_from"):
    note += (f" Its FLOP count: `{result['flops_from']}`, the same step traced for this "
             "platform on another host.")
  cold = result.get("cold_compile")
  if cold is not None:
    warm = compile_seconds(result)
    note += (f" Compile s are cold, from its `--compile-only` pre-pass ({cold['concurrent']} "
             "commands compiling at once: upper bounds); this run compiled from the caches "
             "that pass filled: " + ", ".join(f"{name} {seconds:.1f} s"
                                              for name, seconds in warm.items()) + ".")
  return note


def config_table(results: list[dict[str, Any]], first: int = 1) -> str:
  """One row per `bench --config` result: the phase, global batch x frames, parameters, step ms
  and clips/s (remat none), XLA's memory per device (`darkjax.fit.step_bytes`), the
  allocator's peak where the device reports one and steps ran, the cold compile (a pre-pass's:
  its `--cold-from` or itself, or this run's without a persistent cache), the warm start (this
  run's compile from the pre-pass's cache) and their ratio; then a numbered line per row,
  numbered from `first`."""
  piped = any("pipelined_step_s" in result["remat"]["none"] for result in results)
  fed = any("input" in result for result in results)
  counted = any(result.get("flops_per_device_step") for result in results)
  header = ["config", "phase", "B x T", "params (M)", "step ms (best round)",
            "clips/s (best round)"] + (
            ["pipelined step ms", "pipelined clips/s"] if piped else []) + (
            ["pipelined step ms with its input (worker processes)"] if fed else []) + (
            ["TFLOP/s per device (% of bf16 peak; p: at the pipelined step time)"]
            if counted else []) + [
            "XLA memory (GiB)", "allocator peak (GiB)", "cold compile s", "warm start s",
            "cold / warm", "run"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = []
  for index, result in enumerate(results, first):
    step = result["remat"]["none"]
    memory = step.get("step_bytes")   # darkjax.fit.step_bytes: what one device holds
    cold_compile = result.get("cold_compile")
    if cold_compile is not None:
      cold, warm = cold_compile["train_step"], step["compile_s"]
    elif "concurrent_compiles" in result:   # a pre-pass itself: the compile the others call cold
      cold, warm = step["compile_s"], None
    else:   # without a pre-pass: this run's compile, cold unless a persistent cache was on
      cold, warm = (None, None) if result.get("persistent_cache") else (step["compile_s"], None)
    # the allocator's peak over a run that took steps (a compile-only run's is its state's alone)
    peak = result.get("peak_bytes_in_use") if "step_s" in step else None
    sets = "".join(f" `{key}={value!r}`" for key, value in (result.get("overrides") or {}).items())
    row = [f"`{result['config']}`{sets}", result["phase"],
           f"{result['batch']} x {result['frames']}",
           f"{result['param_count'] / 1e6:.2f}",
           "-" if "step_s" not in step else f"{step['step_s'] * 1e3:.1f}",
           "-" if "clips_per_s" not in result else f"{result['clips_per_s']:.1f}"] + (
           ["-" if "pipelined_step_s" not in step else f"{step['pipelined_step_s'] * 1e3:.1f}",
            "-" if "clips_per_s_pipelined" not in result
            else f"{result['clips_per_s_pipelined']:.1f}"] if piped else []) + (
           [_input_cell(result.get("input"))] if fed else []) + (
           [_utilisation_cell(result)] if counted else []) + [
           "-" if memory is None else f"{memory / 2 ** 30:.2f}",
           "-" if peak is None else f"{peak / 2 ** 30:.2f}",
           "-" if cold is None else f"{cold:.1f}", "-" if warm is None else f"{warm:.1f}",
           "-" if cold is None or not warm else f"{cold / warm:.1f}x", f"[{index}]"]
    lines.append("| " + " | ".join(row) + " |")
    notes.append(_note(index, result))
  return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _input_cell(fed: dict[str, Any] | None) -> str:
  """`bench --config --with-input`'s step fed by the config's own pipeline: "ms (N)"."""
  if not fed:
    return "-"
  return f"{fed['pipelined_step_s'] * 1e3:.1f} ({fed['workers']})"


def compile_table(results: list[dict[str, Any]], first: int = 1) -> str:
  """One row per `bench --model M --vs-torch --compile-only` result (a row no run timed, e.g. a
  pre-pass whose timed run a lease cut): each side's compile seconds (flax's XLA compile, each
  `--variants` setting's, eager torch's first call, each torch.compile mode's first call) and how
  many commands compiled at once; then a numbered line per row, numbered from `first`."""
  compiled, variants = _compiled_sides(results), []
  for result in results:
    variants += [spec for spec in result.get("variants") or {} if spec not in variants]
  header = (["model", "B x T x H^2", "dtype", "optimizer", "flax compile s"] +
            [f"flax `{spec}` compile s" for spec in variants] + ["torch eager first call s"] +
            [f"{name} compile s" for name in compiled] + ["compiling at once", "run"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = []

  def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"

  for index, result in enumerate(results, first):
    sides = result["sides"]
    row = ([f"`{result['model']}`", f"{result['batch']} x {result['frames']} x {result['size']}^2",
            result["dtype"], result["optimizer"]["name"],
            seconds(sides.get("flax", {}).get("compile_s"))] +
           [seconds((result.get("variants") or {}).get(spec, {}).get("compile_s"))
            for spec in variants] +
           [seconds(sides.get("torch", {}).get("first_call_s"))] +
           [seconds(sides.get(name, {}).get("compile_s")) for name in compiled] +
           [str(result.get("concurrent_compiles", 1)), f"[{index}]"])
    lines.append("| " + " | ".join(row) + " |")
    notes.append(_note(index, result))
  return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def target_table(results: list[dict[str, Any]], first: int = 1) -> str:
  """One row per variant of each `bench --model M --target T` result (the step compiled for a
  compile-only target, nothing run): XLA's memory per device, the bytes its fusions and its
  convolutions read and write, a loop body's once per run, and its loops' operands
  (`measure.hlo_traffic`), the compile seconds; then a numbered line per result, numbered from
  `first`."""
  header = ["model", "B x T x H^2", "dtype", "target", "variant", "XLA memory (GiB)",
            "fusion traffic (GiB)", "convolution traffic (GiB)", "loop operands (GiB)",
            "compile s", "run"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = []

  def gib(traffic: dict[str, dict[str, int]], kinds: Callable[[str], bool]) -> str:
    total = sum(entry["read_bytes"] + entry["write_bytes"] for kind, entry in traffic.items()
                if kinds(kind))
    return f"{total / 2 ** 30:.2f}" if total else "-"

  for index, result in enumerate(results, first):
    for spec, entry in result["variants"].items():
      memory, traffic = entry.get("memory") or {}, entry["traffic"]
      lines.append("| " + " | ".join([
          f"`{result['model']}`", f"{result['batch']} x {result['frames']} x {result['size']}^2",
          result["dtype"], result["target"], f"`{spec}`",
          f"{memory['total'] / 2 ** 30:.2f}" if "total" in memory else "-",
          gib(traffic, lambda kind: kind.startswith(("fusion", "loop fusion"))),
          gib(traffic, lambda kind: kind in ("convolution", "loop convolution")),
          gib(traffic, lambda kind: kind == "while"), f"{entry['compile_s']:.1f}",
          f"[{index}]"]) + " |")
    notes.append(_note(index, result))
  return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def lever_table(results: list[dict[str, Any]], first: int = 1) -> str:
  """One row per variant of each `bench --model M --variants V` result (flax's step under each
  lever, no torch side): its best round's step ms and the median of its per-round ratios to the
  first variant's, the same pipelined (median over rounds, min-max), XLA's memory and the compile
  seconds (the pre-pass's where it came from one); then a numbered line per result, numbered from
  `first`."""
  header = ["model", "B x T x H^2", "dtype", "optimizer", "variant", "step ms (best round)",
            "/ first (median of rounds)", "pipelined ms", "pipelined / first",
            "XLA memory (GiB)", "compile s", "run"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = []
  for index, result in enumerate(results, first):
    for spec, entry in result["variants"].items():
      step = f"{entry['step_s'] * 1e3:.1f}" if entry.get("step_s") else "-"
      pipelined = (f"{entry['pipelined_ms']:.1f} ({entry['pipelined_ms_min']:.1f}-"
                   f"{entry['pipelined_ms_max']:.1f})" if "pipelined_ms" in entry else "-")
      memory = sum(entry.get(k, 0) for k in ("argument", "output", "temp")) - entry.get("alias", 0)
      lines.append("| " + " | ".join([
          f"`{result['model']}`", f"{result['batch']} x {result['frames']} x {result['size']}^2",
          result["dtype"], result["optimizer"]["name"], f"`{spec}`", step,
          _ratio(entry.get("ratio")), pipelined, _ratio(entry.get("pipelined_ratio")),
          f"{memory / 2 ** 30:.2f}" if memory > 0 else "-",
          _lever_compile(result, spec, entry), f"[{index}]"]) + " |")
    notes.append(_note(index, result))
  return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _lever_compile(result: dict[str, Any], spec: str, entry: dict[str, Any]) -> str:
  """A lever's compile seconds: its pre-pass's (cold) where it came from one, else its own."""
  cold = (result.get("cold_compile") or {}).get(f"flax {spec}")
  seconds = cold if cold is not None else entry.get("compile_s")
  return "-" if seconds is None else f"{seconds:.1f}"


def markdown(results: list[dict[str, Any]]) -> str:
  """`load`'s results as docs/benchmarks.md tables: the rows against torch (`markdown_table`),
  the paper configs' steps (`config_table`), rows compiled but not timed (`compile_table`), then
  steps compiled for a compile-only target (`target_table`), each numbered on from the table
  before. A compile-only pre-pass's row or config whose timed run is among `results` is left out
  (the timed one shows its cold compile): a lease's pre-pass files can all be given, and those
  its deadline left untimed show as compiles."""
  def key(result: dict[str, Any]) -> tuple:
    return _step_key(result, result.get("device", ""))

  def stepped(result: dict[str, Any]) -> bool:   # a row or config whose steps were timed
    return _is_timed_row(result) or (_is_config(result) and "step_s" in result["remat"]["none"])

  def pre_pass(result: dict[str, Any]) -> bool:
    return ((_is_row(result) and not _is_timed_row(result))
            or (_is_config(result) and not stepped(result) and "concurrent_compiles" in result))

  timed = {key(r) for r in results if stepped(r)}
  results = [r for r in results if not (pre_pass(r) and key(r) in timed)]
  rows = [r for r in results if _is_timed_row(r)]
  configs = [r for r in results if _is_config(r)]
  untimed = [r for r in results if _is_row(r) and not _is_timed_row(r)]
  compiled = [r for r in results if _is_target(r)]
  levers = [r for r in results if _is_lever(r)]
  machines = sorted({(r.get("device_kind", r.get("device", "?")),
                      ", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items())
                                if k in ("jax", "jaxlib", "torch")))
                     for r in results})
  # The tables compare figures measured alike: results of several machines or versions are said
  # before them (each row's note names its own)
  mixed = ([f"**These results come from {len(machines)} machines or software versions:** "
            + "; ".join(f"{device} ({software})" for device, software in machines) + ".\n"]
           if len(machines) > 1 else [])
  parts = mixed + ([markdown_table(rows)] if rows else []) + (
      [config_table(configs, first=len(rows) + 1)] if configs else []) + (
      [compile_table(untimed, first=len(rows) + len(configs) + 1)] if untimed else []) + (
      [target_table(compiled, first=len(rows) + len(configs) + len(untimed) + 1)]
      if compiled else []) + (
      [lever_table(levers, first=len(rows) + len(configs) + len(untimed) + len(compiled) + 1)]
      if levers else [])
  return "\n".join(parts)
