"""Device profiles: a `jax.profiler` trace read back as device time per kind of op, and a run's
train steps traced on request.

`python -m darkjax.main ... --config.profile.steps=5` traces five train steps of a run, after
`profile.skip` steps of that invocation (its first steps compile and warm up), and leaves
- the trace in WORKDIR/tensorboard/plugins/profile/steps<A>-<B>/, one `.xplane.pb` per process,
  where TensorBoard's profile plugin finds it (`pip install tensorboard-plugin-profile`;
  `tensorboard --logdir WORKDIR`);
- WORKDIR/profile.md, profile.png and profile.json: wall time per step against the time the
  devices were busy (the rest is time they waited: the input pipeline, the host, a checkpoint),
  per kind of op (convolutions per direction, matmuls, fusions, copies and transposes, command
  buffers) and the top ops, attributed through the compiled step's optimized HLO; XLA's count of
  the step's operations per device and its rate (`step_flops`, `utilisation`).

`darkjax.tools.bench --profile` reads its traces through the same `summarize`.

This module is ground level: it imports darkjax.aot, paths and plots (and jax where it traces,
so that reading HLO text needs no jax).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping

from darkjax import aot, paths, plots
from darkjax.config import ConfigError

log = logging.getLogger(__name__)

FIGURE = "profile.png"   # WORKDIR/profile.png: where a profiled step's time goes

# An optimized HLO instruction: `%name = type opcode(operands), attrs` (ROOT optional); groups:
# name, result type, opcode, the rest.
HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([\w\-]+)\((.*)$")


def hlo_ops(hlo_text: str) -> dict[str, Any]:
  """Per instruction of an optimized HLO module: its opcode, fusion kind, custom-call target and
  convolution dim_labels (the layout XLA chose), where present; for a convolution (XLA's, or
  cuDNN's in any direction) also its `kernel` and `output` shapes (of the forward convolution it
  computes a part of), `gflop`, its floating-point operations (`_conv_shapes`), its `window`, and
  `groups` where it is grouped; for a GEMM (a cuBLAS call, a Triton GEMM fusion) its result and
  operand types (`gemm`); inside a loop body (an `nn.scan`'s while loop, nested ones multiplied)
  with a known trip count, `runs`: how many times one execution of the program runs it (a
  profile's time for the op is theirs together)."""
  ops, shapes = {}, {}
  runs = loop_runs(hlo_text)
  for computation, name, shape, opcode, rest in instructions(hlo_text):
    shapes[name] = shape
    info: dict[str, Any] = {"opcode": opcode}
    if runs.get(computation, 1) > 1:
      info["runs"] = runs[computation]
    for key, pattern in (("kind", r"kind=(\w+)"), ("target", r'custom_call_target="([^"]+)"'),
                         ("dim_labels", r"dim_labels=([\w>\-]+)")):
      found = re.search(pattern, rest)
      if found:
        info[key] = found.group(1)
    target = info.get("target", "")
    gemm = target.startswith("__cublas") or (opcode == "fusion" and "__triton_gemm" in rest)
    conv = "dim_labels" in info and (opcode == "convolution" or "conv" in target)
    if gemm or conv:
      operands = [shapes.get(operand, "") for operand in operand_names(rest)]
    if gemm:
      info["gemm"] = f"{shape} <- {', '.join(operands)}"   # what XLA:GPU autotunes it by
    if conv:
      if "BackwardFilter" in target:   # (input, output's gradient) -> the kernel's gradient
        kernel, output = shape, operands[1]
      elif "BackwardInput" in target:   # (output's gradient, kernel) -> the input's gradient
        kernel, output = operands[1], operands[0]
      else:
        kernel, output = (operands[1] if len(operands) > 1 else ""), shape
      info.update(_conv_shapes(kernel, output, info["dim_labels"]))
      groups = re.search(r"(?:feature|batch)_group_count=(\d+)", rest)
      if groups:   # grouped (a grouped kernel's gradient: batch groups)
        info["groups"] = int(groups.group(1))
      window = re.search(r"window=\{([^}]*)\}", rest)
      if window:
        info["window"] = window.group(1)
    ops[name] = info
  return ops


# A computation's header in HLO text (`%name (params) -> type {`, `ENTRY %name ...`): its name.
HLO_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def operand_names(rest: str) -> list[str]:
  """The names of an instruction's operands, from the rest of its HLO line (`instructions`)."""
  return re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])


def instructions(hlo_text: str) -> Iterator[tuple[str, str, str, str, str]]:
  """An HLO module's instructions in order: (its computation, name, result type, opcode, the
  rest of its line)."""
  computation = ""
  for line in hlo_text.splitlines():
    header = None if line[:1].isspace() else HLO_COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    match = HLO_INSTRUCTION.match(line)
    if match:
      yield (computation, *match.groups())


def loop_runs(hlo_text: str) -> dict[str, int]:
  """{while body computation: how many times one execution of the program runs it} for the
  loops of an optimized HLO module whose trip counts are known (nested ones multiplied)."""
  loops = {}
  for computation, _, _, opcode, rest in instructions(hlo_text):
    if opcode == "while":
      body, trips = re.search(r"\bbody=%?([\w.\-]+)", rest), _TRIP_COUNT.search(rest)
      if body:
        loops[body.group(1)] = (computation, int(trips.group(1)) if trips else None)
  found = {body: _runs(body, loops) for body in loops}
  return {body: runs for body, runs in found.items() if runs is not None}


def _runs(computation: str, loops: dict[str, tuple[str, int | None]], depth: int = 0
          ) -> int | None:
  """How many times one execution of the program runs `computation`: the trip counts of the
  while loops whose body it is, nested ones multiplied (1 outside loops; None where a trip count
  is unknown)."""
  if computation not in loops or depth > 64:
    return 1
  parent, trips = loops[computation]
  outer = _runs(parent, loops, depth + 1)
  return None if trips is None or outer is None else trips * outer


_ARRAY_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def _conv_shapes(kernel: str, output: str, dim_labels: str) -> dict[str, Any]:
  """A convolution's `kernel` and `output` shapes (the first array of each HLO type) and its
  operations in GFLOP: 2 x the output's elements x the kernel's elements per output channel (a
  multiply-add as two; the kernel holds in / groups input channels, so grouped ones count right),
  from `dim_labels` ('b012f_o012i->b012f': the kernel's 'o' axis). Empty where a shape is
  unknown."""
  found = [_ARRAY_SHAPE.search(text) for text in (kernel, output)]
  labels = dim_labels.split("->")[0].split("_")
  if not all(found) or len(labels) != 2:
    return {}
  kernel_dims, output_dims = ([int(d) for d in f.group(2).split(",") if d] for f in found)
  if len(kernel_dims) != len(labels[1]) or "o" not in labels[1]:
    return {}
  per_output = 1
  for axis, size in enumerate(kernel_dims):
    if labels[1][axis] != "o":
      per_output *= size
  outputs = 1
  for size in output_dims:
    outputs *= size
  return {"kernel": found[0].group(0), "output": found[1].group(0),
          "gflop": 2 * outputs * per_output / 1e9}


# Cross-device communication: a step's gradient all-reduce, fsdp's gathers and scatters.
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all",
               "collective-broadcast")


def op_category(name: str, info: dict[str, str] | None) -> str:
  """A device op's kind for the profile summary: convolution (cuDNN's per direction), matmul,
  transpose / copy, reduction fusion, elementwise fusion, collective (communication between
  devices), command buffer (XLA:GPU's CUDA graphs of fusions, timed as one op), or the opcode."""
  info = info or {}
  target, opcode = info.get("target", ""), info.get("opcode", "")
  if name.startswith("command_buffer"):   # XLA:GPU's CUDA graphs: the fusions they replay
    return "command buffer"
  if any((opcode or name).startswith(c) for c in COLLECTIVES):   # and their async -start / -done
    return "collective"
  if "conv" in target.lower():   # a cuDNN convolution names its direction
    direction = next((d for d in ("BackwardFilter", "BackwardInput") if d in target), "Forward")
    return f"convolution {direction}"
  if opcode == "convolution":   # XLA's own (CPU, TPU): forward and gradients alike
    return "convolution"
  if "gemm" in target or "matmul" in target or opcode == "dot" or "gemm" in name:
    return "matmul"
  if "transpose" in name or opcode == "transpose":
    return "transpose"
  if opcode == "copy" or name.startswith("copy"):
    return "copy"
  if "reduce" in name or opcode == "reduce":
    return "reduction"
  if opcode == "fusion" or "fusion" in name:
    return "elementwise fusion"
  return opcode or "other"


def _op_events(files: list[str]) -> tuple[list[tuple[str, int]], list[Any]]:
  """(op name, duration ns) of every XLA op the traces' device planes hold (their "XLA Ops" line
  where they have one, else their streams' kernels), and those planes. Without a device plane
  holding events (CPU): the host threads' events of XLA's thunks, which carry an `hlo_op` stat."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  planes = [plane for path in files for plane in ProfileData.from_file(path).planes]
  # a device plane without events is no device's work: libtpu, once loaded (a compile-only TPU
  # target), adds an empty "/device:CUSTOM:Megascale Trace" to every trace, CPU ones too
  devices = [plane for plane in planes if plane.name.startswith("/device:")
             and any(True for line in plane.lines for _ in line.events)]
  events = []
  for plane in devices:
    lines = list(plane.lines)
    ops_line = [line for line in lines if line.name == "XLA Ops"]
    for line in ops_line or [line for line in lines if line.name.startswith("Stream")]:
      events += [(str(dict(e.stats).get("hlo_op") or e.name), e.duration_ns) for e in line.events]
  if not devices:
    for plane in planes:
      for line in plane.lines:
        events += [(str(stats["hlo_op"]), e.duration_ns) for e in line.events
                   for stats in (dict(e.stats),) if "hlo_op" in stats]
  return events, devices


def trace_files(root: str) -> list[str]:
  """The `.xplane.pb` files a `jax.profiler` trace wrote under `root`."""
  return sorted(glob.glob(os.path.join(root, "**", "*.xplane.pb"), recursive=True))


def summarize(files: list[str], steps: int, hlo_text: str = "", top: int = 25) -> dict[str, Any]:
  """Device time per XLA op over `steps` steps traced into `files` (`trace_files`), per step and
  device (the mean over the traces' device planes; on CPU, XLA's thunks summed over the host's
  threads): the `top` ops, totals per `op_category`, and the convolutions' layouts (dim_labels)
  from `hlo_text`, the compiled program's optimized HLO. `device_lines`: the accelerator planes'
  line names, to read the trace's structure from."""
  if steps < 1:
    raise ValueError(f"summarize: steps={steps}, expected at least 1")
  events, devices = _op_events(files)
  per_op: dict[str, float] = {}
  for op, ns in events:
    per_op[op] = per_op.get(op, 0.0) + ns
  scale = 1e6 * steps * max(1, len(devices))   # ns -> ms per step and device
  ops = hlo_ops(hlo_text)
  categories: dict[str, float] = {}
  for op, ns in per_op.items():
    category = op_category(op, ops.get(op))
    categories[category] = categories.get(category, 0.0) + ns
  layouts: dict[str, int] = {}
  for info in ops.values():
    if "dim_labels" in info and op_category("", info).startswith("convolution"):
      layouts[info["dim_labels"]] = layouts.get(info["dim_labels"], 0) + 1
  ranked = sorted(per_op.items(), key=lambda item: -item[1])[:top]
  return {"steps": steps, "devices": max(1, len(devices)), "device_planes": len(devices),
          "device_ms_per_step": sum(per_op.values()) / scale,
          "categories_ms": {k: v / scale for k, v in sorted(
              categories.items(), key=lambda item: -item[1])},
          "top_ops_ms": [_with_rate({"op": op, "category": op_category(op, ops.get(op)),
                                     "ms": ns / scale, **ops.get(op, {})}) for op, ns in ranked],
          "conv_layouts": layouts,
          "device_lines": sorted({line.name for plane in devices for line in plane.lines})}


def _with_rate(entry: dict[str, Any]) -> dict[str, Any]:
  """A top op's entry with `tflops` (its GFLOP, times its `runs` in a loop body, over its ms per
  step) where it has `gflop`."""
  if entry.get("gflop") and entry["ms"] > 0:
    entry["tflops"] = entry["gflop"] * entry.get("runs", 1) / entry["ms"]
  return entry


def utilisation(flops_per_device: float | None, seconds: float,
                device_kind: str) -> dict[str, float]:
  """What one device computes per second of a step: `tflops` (XLA's count of the step's
  floating-point operations per device over `seconds`) and, where the device's dense bf16 peak
  is known (`aot.peak_flops`), `peak_fraction` (model FLOP utilisation) and `peak_tflops`;
  empty without a count."""
  if not flops_per_device or seconds <= 0:
    return {}
  out = {"tflops": flops_per_device / seconds / 1e12}
  peak = aot.peak_flops(device_kind)
  if peak:
    out.update(peak_tflops=peak / 1e12, peak_fraction=flops_per_device / seconds / peak)
  return out


def format_flops(flops: float) -> str:
  """'3.71 TFLOP', '34.2 GFLOP', '512.0 MFLOP'."""
  for scale, unit, digits in ((1e12, "T", 2), (1e9, "G", 1), (1e6, "M", 1)):
    if flops >= scale:
      return f"{flops / scale:.{digits}f} {unit}FLOP"
  return f"{flops:.0f} FLOP"


def format_utilisation(entry: Mapping[str, Any]) -> str:
  """'156.0 TFLOP/s, 15.8% of the bf16 dense peak (989)' (or the rate alone, or "-")."""
  if "tflops" not in entry:
    return "-"
  text = format_flops(entry["tflops"] * 1e12) + "/s"
  if "peak_fraction" in entry:
    text += (f", {entry['peak_fraction']:.1%} of the bf16 dense peak "
             f"({entry['peak_tflops']:.0f})")
  return text


def unroll_scans(closed: Any) -> Any:
  """A ClosedJaxpr with every scan fully unrolled, recursively (XLA's cost analysis counts a
  while loop's body once, whatever its trip count: an `nn.scan`-ned stage, gradient
  accumulation)."""
  from jax.extend import core as jex_core  # pylint: disable=import-outside-toplevel

  def rewrite(value):
    if isinstance(value, jex_core.ClosedJaxpr):
      return unroll_scans(value)
    if isinstance(value, jex_core.Jaxpr):
      return unroll_scans(jex_core.ClosedJaxpr(value, ())).jaxpr
    if isinstance(value, tuple) and any(isinstance(v, (jex_core.Jaxpr, jex_core.ClosedJaxpr))
                                        for v in value):
      return tuple(rewrite(v) for v in value)
    return value

  eqns = []
  for eqn in closed.jaxpr.eqns:
    params = {key: rewrite(value) for key, value in eqn.params.items()}
    if eqn.primitive.name == "scan":
      params["unroll"] = max(int(params["length"]), 1)
    eqns.append(eqn.replace(params=params))
  return closed.replace(jaxpr=closed.jaxpr.replace(eqns=eqns))


def _host_cost_analysis(lowered: Any) -> Any:
  """XLA's HLO cost analysis of `lowered`'s module run by the host's CPU client: what
  `Lowered.cost_analysis` does, for the backends where it does not (a GPU's or TPU's PJRT
  plugin raises NotImplementedError; a compile-only target's client gives nothing). The count is
  of the module as lowered, whatever platform it was lowered for. None where it fails."""
  try:
    from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel
    from jax.extend import backend  # pylint: disable=import-outside-toplevel
    module = lowered.compiler_ir("hlo").as_hlo_module()
    return _jax.hlo_module_cost_analysis(backend.get_backend("cpu"), module)
  except Exception:  # pylint: disable=broad-except
    return None


def lowered_flops(lowered: Any) -> float | None:
  """XLA's count of a lowered program's floating-point operations (a multiply-add counts two;
  the program before XLA's optimisations; a while loop's body once), from the lowering's own
  backend or, where that gives none (GPU and TPU plugins, compile-only targets), from the host's
  CPU client (`_host_cost_analysis`); None where neither does."""
  try:
    analysis = lowered.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    analysis = None
  if isinstance(analysis, (list, tuple)):   # older jax: one dict per program
    analysis = analysis[0] if analysis else None
  if not (analysis or {}).get("flops"):
    analysis = _host_cost_analysis(lowered)
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def step_flops(fn: Callable[..., Any], *args: Any) -> float | None:
  """XLA's count of the floating-point operations of `fn(*args)` (a jitted train step and its
  abstract or real arguments), the model's own: its Python function traced afresh inside
  `native_lowering()` (XLA's 3D convolutions and pooling, whose count leaves out the padding, where
  a platform's lowering, stacked temporal taps on a GPU or tap sums on a CPU, computes and counts
  zero taps: about 10% of C3D's) and `align_channels(False)` (a GPU's 16-bit convolutions with
  their own channels, not zero-padded to multiples of 8: 3D-ResNeXt's RGB stem would count 8/3 of
  its multiply-adds; grouped ones keep their own groups inside `native_lowering()`,
  `conv.gpu_group_bundle`), with no rematerialisation (`remat.off()`: the forward a `remat`
  policy computes again in the backward pass is the device's work, not the model's, which a
  model FLOP utilisation counts), every scan unrolled (`unroll_scans`), lowered and counted
  (`lowered_flops`); nothing is compiled. None where the backend gives no count."""
  import jax  # pylint: disable=import-outside-toplevel

  from darkjax.layers import conv2d  # pylint: disable=import-outside-toplevel
  from darkjax.layers import remat  # pylint: disable=import-outside-toplevel

  # a jitted function's own body (its compile options, the train step's, go with no nested jit)
  # in a fresh function: a cached trace would keep its platform's lowering
  body = getattr(fn, "__wrapped__", fn)
  with conv2d.native_lowering(), conv2d.align_channels(False), remat.off():
    traced = jax.make_jaxpr(lambda *a: body(*a))(*args)
  return jaxpr_flops(traced, jax.tree.leaves(args))


def jaxpr_flops(closed: Any, flat_args: Any) -> float | None:
  """XLA's count of a ClosedJaxpr's floating-point operations on its flat arguments (abstract or
  real): every scan unrolled (`unroll_scans`), lowered and counted (`lowered_flops`)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.extend import core as jex_core  # pylint: disable=import-outside-toplevel

  unrolled = unroll_scans(closed)
  program = jax.jit(lambda *flat: jex_core.jaxpr_as_fun(unrolled)(*flat))
  return lowered_flops(program.lower(*flat_args))


def format_summary(summary: dict[str, Any], top: int = 15) -> str:
  """Device ms per step, per category and the top ops, as lines of text."""
  lines = [f"device time {summary['device_ms_per_step']:.1f} ms/step over {summary['steps']} "
           "steps; per category: " + ", ".join(
               f"{name} {ms:.1f}" for name, ms in summary["categories_ms"].items())]
  lines.append("conv layouts (dim_labels x count): " + (", ".join(
      f"{k} x{v}" for k, v in summary["conv_layouts"].items()) or "none"))
  for entry in summary["top_ops_ms"][:top]:
    lines.append(f"  {entry['ms']:7.2f} ms  {entry['category']:22s} {entry['op']}"
                 + (f" (x{entry['runs']})" if "runs" in entry else "")
                 + (f"  [{entry['dim_labels']}]" if "dim_labels" in entry else "")
                 + (f" {entry['kernel']} -> {entry['output']}, {entry['tflops']:.0f} TFLOP/s"
                    if "tflops" in entry else ""))
  return "\n".join(lines)


def markdown(summary: dict[str, Any], top: int = 15) -> str:
  """profile.md: the traced steps' wall and device time, per category and the top ops."""
  wall, busy = summary["wall_ms_per_step"], summary["device_ms_per_step"]
  first, last = summary["first_step"], summary["last_step"]
  device = summary.get("device_kind", "")
  planes = summary.get("device_planes", summary["devices"])
  busy_label = (f"device busy (XLA ops, mean over {planes} device(s))" if planes else
                "busy (XLA:CPU's thunks, summed over the host's threads)")
  lines = [f"# Profile of train steps {first}-{last}", "",
           f"{summary['steps']} steps on this process's devices"
           f"{f' ({device})' if device else ''}; the trace: `{summary['trace']}` "
           "(TensorBoard's profile plugin: `tensorboard --logdir WORKDIR`).", "",
           "| per step | ms |", "|---|---|",
           f"| wall time | {wall:.1f} |",
           f"| {busy_label} | {busy:.1f} |",
           f"| waiting (input pipeline, host, checkpoint) | {max(wall - busy, 0.0):.1f} |",
           "", "![where a step's time goes](profile.png)", ""]
  flops = summary.get("flops_per_device_step")
  if flops:
    lines += [f"XLA counts {format_flops(flops)} per step and device (the step as traced, a "
              f"multiply-add as two): {format_utilisation(summary['utilisation'])} at the wall "
              "time.", ""]
  lines += ["| kind of op | ms per step | share of busy |", "|---|---|---|"]
  for name, ms in summary["categories_ms"].items():
    lines.append(f"| {name} | {ms:.2f} | {ms / busy:.0%} |" if busy else f"| {name} | {ms:.2f} | |")
  lines += ["", f"Top {min(top, len(summary['top_ops_ms']))} ops:", "",
            "| op | kind | ms per step | runs per step | layout | kernel -> output | TFLOP/s |",
            "|---|---|---|---|---|---|---|"]
  for entry in summary["top_ops_ms"][:top]:
    shapes = f"{entry['kernel']} -> {entry['output']}" if "kernel" in entry else ""
    rate = f"{entry['tflops']:.1f}" if "tflops" in entry else ""
    lines.append(f"| `{entry['op']}` | {entry['category']} | {entry['ms']:.2f} | "
                 f"{entry.get('runs', 1)} | {entry.get('dim_labels', '')} | {shapes} | {rate} |")
  return "\n".join(lines) + "\n"


class StepTrace:
  """Traces train steps `first`..`last` of a loop: `begin(step, state)` before a step is
  dispatched, `end(step, state)` after; `close()` stops a trace the loop left unfinished (an error,
  a preemption, the run's last step before `last`) and writes what it traced.

  Built from `config.profile` (`steps`: how many steps, 0: none; `skip`: steps of this invocation
  before the first traced one) and the step the invocation starts after (`start`)."""

  def __init__(self, profile: Mapping[str, Any], workdir: str, start: int,
               hlo_text: Callable[[], str], is_lead: bool,
               flops: Callable[[], float | None] = lambda: None):
    steps, skip = profile.get("steps", 0), profile.get("skip", 0)
    for key, value in (("steps", steps), ("skip", skip)):
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"config.profile.{key}={value!r}: expected an integer >= 0 (profile."
                          "steps: train steps to trace, 0 for none; profile.skip: steps of the "
                          "invocation before the first traced one)")
    self.steps, self.workdir, self.is_lead = steps, workdir, is_lead
    self.first = start + skip + 1
    self.last = self.first + steps - 1
    self._hlo_text, self._flops = hlo_text, flops
    self._local: str | None = None
    self._started = 0.0
    self.summary: dict[str, Any] | None = None

  def begin(self, step: int, state: Any) -> None:
    if not self.steps or step != self.first:
      return
    import jax  # pylint: disable=import-outside-toplevel
    jax.block_until_ready(state)   # the steps before it are not in the trace
    self._local = tempfile.mkdtemp(prefix="darkjax-profile-")
    try:
      jax.profiler.start_trace(self._local)
    except RuntimeError as error:   # a trace someone else started: theirs wins, training goes on
      log.warning("config.profile: steps %d-%d not traced: %s", self.first, self.last, error)
      shutil.rmtree(self._local, ignore_errors=True)
      self._local = None
      return
    self._started = time.perf_counter()

  def end(self, step: int, state: Any) -> dict[str, Any] | None:
    """After step `step`: the summary once the last traced step is done, else None."""
    if self._local is None or step != self.last:
      return None
    return self._finish_logged(step, state)

  def close(self, step: int, state: Any) -> dict[str, Any] | None:
    """Stops an unfinished trace after step `step` (the last the loop dispatched) and writes
    what it holds."""
    if self._local is None:
      return None
    return self._finish_logged(step, state)

  def _finish_logged(self, step: int, state: Any) -> dict[str, Any] | None:
    """`_finish`, whose failure (a file that cannot be written) is logged, never raised: a
    profile is not worth a run."""
    try:
      return self._finish(step, state)
    except Exception as error:  # pylint: disable=broad-except
      log.warning("config.profile: the trace of steps %d-%d was not written: %s", self.first,
                  self.last, error)
      return None

  def _finish(self, step: int, state: Any) -> dict[str, Any] | None:
    import jax  # pylint: disable=import-outside-toplevel
    local, self._local = self._local, None
    try:
      try:
        jax.block_until_ready(state)
      finally:   # the profiler stops even when the traced steps failed
        wall = time.perf_counter() - self._started
        jax.profiler.stop_trace()
      files = trace_files(local)
      steps = step - self.first + 1
      if steps < 1 or not files:
        log.warning("config.profile: no trace of steps %d-%d was written", self.first, self.last)
        return None
      run = f"steps{self.first}-{step}"
      destination = paths.resolve(self.workdir) / "tensorboard" / "plugins" / "profile" / run
      destination.mkdir(parents=True, exist_ok=True)
      # one file per process, so that processes on one host do not overwrite each other's
      name = f"{socket.gethostname()}-process{jax.process_index()}"
      for index, path in enumerate(files):
        suffix = f"-{index}" if len(files) > 1 else ""
        with open(path, "rb") as source:
          (destination / f"{name}{suffix}.xplane.pb").write_bytes(source.read())
      summary = summarize(files, steps, self._hlo_text())
      device_kind = jax.local_devices()[0].device_kind
      flops = self._flops()
      summary.update(first_step=self.first, last_step=step, wall_ms_per_step=wall * 1e3 / steps,
                     trace=os.fspath(destination), device_kind=device_kind,
                     flops_per_device_step=flops,
                     utilisation=utilisation(flops, wall / steps, device_kind))
      self.summary = summary
      log.info("profile of steps %d-%d (%s): wall %.1f ms/step (%s), devices busy %.1f ms/step:"
               " %s", self.first, step, os.fspath(destination), summary["wall_ms_per_step"],
               format_utilisation(summary["utilisation"]), summary["device_ms_per_step"],
               ", ".join(f"{name} {ms:.1f}" for name, ms in summary["categories_ms"].items()))
      if self.is_lead:
        root = paths.resolve(self.workdir)
        plots.save(plots.step_time(summary["wall_ms_per_step"], summary["categories_ms"],
                                   f"train steps {self.first}-{step} ({device_kind})"),
                   os.fspath(root / FIGURE))
        (root / "profile.md").write_text(markdown(summary))
        (root / "profile.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
      return summary
    finally:
      shutil.rmtree(local, ignore_errors=True)
