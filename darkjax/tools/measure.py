"""What every benchmark measures the same way: step times (median of steps, best of rounds), XLA's
memory analysis of a compiled step, the lowerings a trace chose, and remat policies compared
against none. Used by `darkjax.tools.bench` and its `--config` part (`bench_config`)."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any, Callable

from darkjax import profiling


def median(values: list[float]) -> float:
  """The median (of an even count, the mean of the middle two)."""
  values = sorted(values)
  middle = len(values) // 2
  return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def format_lowerings(lowerings: dict[str, int]) -> str:
  """'conv3d:sum2d x12, max_pool3d:separable x1, ...': what each backend-aware op chose."""
  return ", ".join(f"{key} x{count}" for key, count in lowerings.items()) or "none"


def memory_bytes(compiled) -> dict[str, int]:
  """XLA's memory analysis of a compiled step: temp, argument, output and generated-code bytes."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return {}
  return {"temp": int(analysis.temp_size_in_bytes),
          "argument": int(analysis.argument_size_in_bytes),
          "output": int(analysis.output_size_in_bytes),
          "alias": int(analysis.alias_size_in_bytes),
          "code": int(analysis.generated_code_size_in_bytes)}


def time_steps(run_step: Callable[[], None], steps: int) -> tuple[float, float]:
  """Median wall time and median process CPU time (all threads) of `steps` steps."""
  walls, cpus = [], []
  for _ in range(steps):
    wall, cpu = time.perf_counter(), time.process_time()
    run_step()
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return median(walls), median(cpus)


def step_runner(dispatch: Callable[[], None], sync: Callable[[], None]) -> Callable[[], None]:
  """A step runner for `time_steps` (one step, waited for) that `time_pipelined` can also drive
  through its `dispatch` (one step, not waited for) and `sync` (wait for all dispatched)."""
  def run_step() -> None:
    dispatch()
    sync()
  run_step.dispatch, run_step.sync = dispatch, sync
  return run_step


def time_pipelined(run_step: Callable[[], None], steps: int) -> tuple[float, float]:
  """Wall and process CPU time per step of `steps` steps dispatched back to back with one wait
  at the end, as a training loop runs them (darkjax.train reads a step's metrics one step late):
  the host's dispatch of a step overlaps the device's work on the one before. `run_step` has
  `dispatch` (one step, not waited for) and `sync` (wait for everything dispatched)."""
  run_step.sync()
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    run_step.dispatch()
  run_step.sync()
  return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def pipelined_rounds(runs: dict[str, Callable[[], None]], rounds: int,
                     steps: int) -> dict[str, list[tuple[float, float]]]:
  """Per run: `time_pipelined` of `steps` steps in each of `rounds` rounds, the runs alternating
  within a round like `alternating_rounds` (runs it has already called: no untimed call)."""
  return alternating_rounds(runs, rounds, steps, timer=time_pipelined, first_call=False)


def report(name: str, rounds: list[tuple[float, float]]) -> tuple[float, float]:
  best_wall = min(wall for wall, _ in rounds)
  best_cpu = min(cpu for _, cpu in rounds)
  print(f"  {name:5s} {best_wall * 1e3:8.1f} ms/step wall, {best_cpu * 1e3:8.1f} ms/step CPU "
        f"(rounds: " + ", ".join(f"{w * 1e3:.0f}" for w, _ in rounds) + " ms)", flush=True)
  return best_wall, best_cpu


def alternating_rounds(runs: dict[str, Callable[[], None]], rounds: int, steps: int,
                       timer: Callable[[Callable[[], None], int], tuple[float, float]] = time_steps,
                       first_call: bool = True) -> dict[str, list[tuple[float, float]]]:
  """Per run: `timer` (default: median wall, median CPU) of `steps` steps in each of `rounds`
  rounds, the runs alternating within a round so that machine noise hits them alike; with
  `first_call`, one untimed call first."""
  if first_call:
    for run in runs.values():
      run()   # first call: allocation, thread pools
  timed: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      timed[name].append(timer(run, steps))
  return timed


def remat_policies(spec: str) -> list[str]:
  """"none" then each policy of a comma-separated `--remat`; an unknown name fails before
  anything compiles."""
  from darkjax.layers import remat as remat_lib  # pylint: disable=import-outside-toplevel
  policies = ["none"] + [p for p in (spec or "").split(",") if p and p != "none"]
  for policy in policies:
    remat_lib.policy_name(policy)
  return policies


def compare_policies(policies: list[str], build: Callable[[str], tuple[dict, Callable[[], None]]],
                     args: argparse.Namespace) -> dict[str, dict[str, Any]]:
  """Per policy: `build(policy)` -> (entry with "compile_s" and XLA's memory bytes, step runner);
  prints memory and compile time, each policy's temp memory against none, and unless
  --compile-only the step times of alternating rounds, each policy's per-round ratio to none."""
  entries, runs = {}, {}
  for policy in policies:
    entries[policy], runs[policy] = build(policy)
    entry = entries[policy]
    print(f"  remat={policy:13}: compile {entry['compile_s']:.1f} s; temp "
          f"{entry.get('temp', 0) / 2**20:.1f} MiB, arguments "
          f"{entry.get('argument', 0) / 2**20:.1f} MiB, output "
          f"{entry.get('output', 0) / 2**20:.1f} MiB", flush=True)
  base = entries["none"]
  for policy in policies[1:]:
    entry = entries[policy]
    if base.get("temp") and entry.get("temp"):
      entry["temp_reduction"] = base["temp"] / entry["temp"]
      print(f"  temp memory none / {policy}: {entry['temp_reduction']:.2f}x", flush=True)
  if args.compile_only:
    return entries
  rounds = alternating_rounds(runs, args.rounds, args.steps)
  for policy in policies:
    entries[policy]["step_s"], _ = report(f"remat={policy}", rounds[policy])
  if getattr(args, "pipelined", False):   # steps dispatched back to back, as training runs them
    for policy, timed in pipelined_rounds(runs, args.rounds, args.steps).items():
      entries[policy]["pipelined_step_s"] = min(wall for wall, _ in timed)
      print(f"  remat={policy} pipelined ({args.steps} steps, one wait): "
            f"{entries[policy]['pipelined_step_s'] * 1e3:.1f} ms/step (rounds: " +
            ", ".join(f"{wall * 1e3:.0f}" for wall, _ in timed) + " ms)", flush=True)
  for policy in policies[1:]:
    ratios = [t[0] / f[0] for t, f in zip(rounds[policy], rounds["none"])]
    entries[policy]["time_ratio"] = median(ratios)
    print(f"  step time {policy} / none per round: " + ", ".join(f"{r:.2f}" for r in ratios) +
          f" (median {median(ratios):.2f})", flush=True)
  return entries


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape ('bf16[16,8,56,56,64]{4,3,2,1,0}' or a tuple of them)."""
  total = 0
  for dtype, dims in _ARRAY.findall(shape):
    count = 1
    for dim in filter(None, dims.split(",")):
      count *= int(dim)
    total += count * _DTYPE_BYTES[dtype]
  return total


def hlo_traffic(hlo_text: str) -> dict[str, dict[str, int]]:
  """Memory traffic of an optimized HLO module's entry computation, by kind of kernel: per
  "convolution" (cuDNN / XLA convolutions), "matmul", "fusion kLoop" / "fusion kInput" (XLA's
  elementwise and reduction fusions) / other fusion kinds, "copy" and "transpose": their count
  and the bytes of their operands (read) and results (written). An upper bound where a kernel
  reads only part of an operand (a slice); on a GPU these fusions run at about memory bandwidth,
  so their bytes are their time. "while" gives the entry's loops (`nn.scan`s, a frozen backbone
  run in splits; read and written: their operands' and results' bytes once). The kernels of
  their bodies count apart, as "loop KIND" ("loop fusion kLoop", ...), each as many times as its
  loops run a step (their known trip counts, nested ones multiplied: `profiling.loop_runs`),
  an operand a fusion only slices by its slices (a scan's stacked residuals, read a block at a
  time) and a stacked result it updates in place by its update. A cuDNN or cuBLAS call writes
  its output, not its scratch workspace (the second element of its result)."""
  computations = _computations(hlo_text)
  runs = profiling.loop_runs(hlo_text)
  shapes = {name: shape for body in computations.values() for name, shape, _, _ in body}
  # the ENTRY computation (a module's text without headers: its one list of instructions)
  entry_name = _entry_name(hlo_text) or next(reversed(computations), "")
  traffic: dict[str, dict[str, int]] = {}
  for computation in computations:
    entry = computation == entry_name
    times = 1 if entry else runs.get(computation)
    if not times:
      continue
    for name, shape, opcode, rest in computations[computation]:
      if opcode == "while" and not entry:
        continue
      conv = "convolution" if opcode == "convolution" or "$conv" in rest else None
      if not (conv or opcode in ("fusion", "custom-call", "copy", "transpose", "dot", "while")):
        continue
      kind = re.search(r"kind=(\w+)", rest)
      label = (conv or ("matmul" if opcode == "dot" or "gemm" in rest or "$matmul" in rest
                        else None)
               or (f"fusion {kind.group(1)}" if opcode == "fusion" and kind else opcode))
      read = [shape_bytes(shapes.get(operand, "")) for operand in profiling.operand_names(rest)]
      # a cuDNN / cuBLAS call's result is (its output, its scratch workspace): the output alone
      output = _ARRAY.search(shape) if opcode == "custom-call" else None
      write = shape_bytes(output.group(0) if output else shape)
      called = re.search(r"\bcalls=%?([\w.\-]+)", rest)
      if not entry and opcode == "fusion" and called and called.group(1) in computations:
        read, write = _sliced(computations[called.group(1)], read, write)
      row = traffic.setdefault(("" if entry else "loop ") + label,
                               {"count": 0, "read_bytes": 0, "write_bytes": 0})
      row["count"] += times
      row["read_bytes"] += times * sum(read)
      row["write_bytes"] += times * write
  return traffic


def _computations(hlo_text: str) -> dict[str, list[tuple[str, str, str, str]]]:
  """An HLO module's computations in order: {name: its instructions (name, type, opcode, the
  rest)}."""
  computations: dict[str, list[tuple[str, str, str, str]]] = {}
  for computation, *instruction in profiling.instructions(hlo_text):
    computations.setdefault(computation, []).append(tuple(instruction))
  return computations


def _entry_name(hlo_text: str) -> str:
  found = re.search(r"^ENTRY\s+%?([\w.\-]+)", hlo_text, re.MULTILINE)
  return found.group(1) if found else ""


def _sliced(fused: list[tuple[str, str, str, str]], read: list[int], write: int
            ) -> tuple[list[int], int]:
  """A fusion's bytes read per operand and written, where its computation `fused` only slices an
  operand (every use a (dynamic-)slice of it: the slices' bytes) or updates one in place (its
  root a dynamic-update-slice of a parameter: the update's bytes written, the buffer not read);
  bitcasts of a parameter count as the parameter."""
  params = {name: int(re.match(r"(\d+)", rest).group(1)) for name, _, opcode, rest in fused
            if opcode == "parameter" and re.match(r"(\d+)", rest)}
  shapes = {name: shape for name, shape, _, _ in fused}
  source = dict(zip(params, params))   # a parameter, or a bitcast of one: that parameter
  uses: dict[str, list[tuple[str, str, int]]] = {name: [] for name in params}
  for name, shape, opcode, rest in fused:
    operands = profiling.operand_names(rest)
    if opcode == "bitcast" and operands and operands[0] in source:
      source[name] = source[operands[0]]
      continue
    for position, operand in enumerate(operands):
      if operand in source:
        uses[source[operand]].append((opcode, shape, position))
  read = list(read)
  for param, index in params.items():
    if index >= len(read) or not uses[param]:
      continue
    if all(opcode in ("dynamic-slice", "slice") and position == 0
           for opcode, _, position in uses[param]):
      read[index] = min(read[index], sum(shape_bytes(shape) for _, shape, _ in uses[param]))
  root = fused[-1] if fused else None
  if root and root[2] == "dynamic-update-slice":
    operands = profiling.operand_names(root[3])
    buffer = source.get(operands[0]) if operands else None
    if len(operands) > 1 and buffer is not None and params[buffer] < len(read) and all(
        opcode == "dynamic-update-slice" and position == 0 for opcode, _, position in uses[buffer]):
      read[params[buffer]] = 0   # updated in place: only the update is written
      write = shape_bytes(shapes.get(operands[1], ""))
  return read, write


def autotuned(hlo_text: str) -> dict[str, int]:
  """What XLA:GPU autotunes in an optimized module (each distinct one, on the device, in a cold
  compile: most of a paper step's GPU compile, docs/benchmarks.md), counted without a GPU: its
  cuDNN convolutions (`convolutions`) and the distinct ones (`distinct_convolutions`: direction,
  kernel and output shapes, layout, window, groups), its GEMMs (cuBLAS calls and Triton GEMM
  fusions, `gemms`) and the distinct ones (`distinct_gemms`: operand and result types)."""
  ops = profiling.hlo_ops(hlo_text).values()
  convs = [info for info in ops if "__cudnn$conv" in info.get("target", "")]
  distinct = {tuple(info.get(key) for key in ("target", "kernel", "output", "dim_labels",
                                               "window", "groups")) for info in convs}
  gemms = [info["gemm"] for info in ops if "gemm" in info]
  return {"convolutions": len(convs), "distinct_convolutions": len(distinct),
          "gemms": len(gemms), "distinct_gemms": len(set(gemms))}


def format_autotuned(counts: dict[str, int]) -> str:
  """'206 cuDNN convolutions (56 distinct), 57 GEMMs (35 distinct)'."""
  return (f"{counts['convolutions']} cuDNN convolutions ({counts['distinct_convolutions']} "
          f"distinct), {counts['gemms']} GEMMs ({counts['distinct_gemms']} distinct)")


def format_traffic(traffic: dict[str, dict[str, int]]) -> str:
  """'fusion kInput x636 13.65 GiB read, 3.56 GiB written; ...', largest first."""
  def size(count: int) -> str:
    return f"{count / 2 ** 30:.2f} GiB" if count >= 2 ** 30 / 10 else f"{count / 2 ** 20:.1f} MiB"

  rows = sorted(traffic.items(), key=lambda kv: -(kv[1]["read_bytes"] + kv[1]["write_bytes"]))
  return "; ".join(f"{label} x{e['count']} {size(e['read_bytes'])} read, "
                   f"{size(e['write_bytes'])} written" for label, e in rows)


def device_profile(run_step: Callable[[], None], steps: int, hlo_text: str = "",
                   top: int = 25) -> dict[str, Any]:
  """Device time per XLA op over `steps` steps of `run_step`: a jax.profiler trace read by
  `darkjax.profiling.summarize` (per step: the `top` ops, totals per `op_category`, the
  convolutions' layouts from `hlo_text`, the compiled program's optimized HLO)."""
  import tempfile  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory(prefix="darkjax-profile-") as root:
    with jax.profiler.trace(root):
      for _ in range(steps):
        run_step()
    return profiling.summarize(profiling.trace_files(root), steps, hlo_text, top)
