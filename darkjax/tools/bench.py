r"""Benchmarks. Train-step speed of a model zoo network, optionally against PyTorch:

    python -m darkjax.tools.bench --model resnext3d_101 --frames 64 --memory [--compile-only]
    python -m darkjax.tools.bench --model r2plus1d_18 --vs-torch [--batch 2] [--frames 16]
        [--size 112] [--steps 5] [--rounds 3] [--compile-only] [--devices 1] [--lowering auto]
        [--dtype float32|bfloat16] [--optimizer sgd|adamw] [--torch-layout channels_last_3d]
        [--torch-compile [--torch-compile-modes default,max-autotune-no-cudagraphs]]
        [--json OUT.json] [--variants "auto;lowering=sum2d;kernel_grad=dots;ynn_min_core_use=0"]
        [--profile STEPS] [--concurrent N] [--cold-from PRE_PASS.json ...]
    python -m darkjax.tools.bench --model resnext3d_101 --batch 8 --frames 64 --dtype bfloat16 \
        --target h100:1 [--variants "auto;bn_relu=plain"]     # compiled for it, nothing run
    python -m darkjax.tools.bench --markdown-from OUT.json [MORE.json ...]
    python -m darkjax.tools.bench --autotune-log XLA_AUTOTUNE_LOG.textproto [MORE ...]

Times a full train step (forward + backward + optimizer update, BatchNorm in train mode) of
`darkjax.models.build(--model, 400)` computing in `--dtype` (parameters float32): compile time
(lower + XLA compile, no persistent cache) and the steady-state time per step. The update is
`--optimizer`: SGD momentum 0.9 or AdamW, with the numbers of `bench_torch.OPTIMIZERS` on both
sides. With `--vs-torch` the same step (softmax cross-entropy, optimizer, batch) runs in PyTorch
on the device JAX uses (`darkjax/tools/bench_torch.py`: torchvision's r3d_18 / mc3_18 /
r2plus1d_18 or the references of `darkjax.tools.torch_refs`): on CUDA with
`cudnn.benchmark = True`; on any device in the `channels_last_3d` memory format (`--torch-layout
contiguous`: the layout of the CPU tables in docs/benchmarks.md dated before --torch-layout
existed) and, for bfloat16, under bf16 autocast; on CPU with `torch.set_num_threads` = the cores
JAX uses. `--torch-compile` adds `torch.compile(step)` in each of `--torch-compile-modes`; the
faster compiled mode is the reference. Compile times are reported apart from step times: flax's
AOT compile, each compiled torch step's first call (a cold compile in a fresh inductor cache
unless TORCHINDUCTOR_CACHE_DIR is set). All sides' rounds alternate; per side the best round is
printed with each round's median, and CPU time (all threads), which is less sensitive than wall
time to other load on the machine; the per-round ratios set each flax round against the torch
rounds right after it. `--json OUT` writes the result with its command, date, devices and
versions; in it each side has its step ms (median over rounds, min, max) and compile seconds, and
`ratios` are medians of per-round ratios (`reference`: flax / the faster compiled mode).
`--markdown-from` prints the docs/benchmarks.md table of such files (`bench_report.py`), and
one of `--config` results among them. `--autotune-log` summarises XLA's GPU autotuning logs
(`darkjax/tools/autotune_log.py`): where a cold GPU compile's time goes.
`--compile-only` stops after compiling (with `--vs-torch` every side: the torch steps by their first
call) and records `--concurrent N` (how many such commands compiled at once); a later timed run
of the same row that compiles from the caches it filled (JAX_COMPILATION_CACHE_DIR,
TORCHINDUCTOR_CACHE_DIR) takes its JSON as `--cold-from` and records those figures as the cold
compiles (`cold_compile`), its own as warm starts; the table then shows the cold ones.
`--devices N` splits the batch over N host devices (data parallel,
`--xla_force_host_platform_device_count`).

On one GPU, issue #34's table (every paper backbone at its paper batch, bf16, against eager
torch and torch.compile, flax variants beside) is one process per row, then the table from their
JSON: `bash launch/bench_gpu.sh OUT_DIR` runs it, the paper configs' steps and the warm start
(`--optimizer adamw` for the AdamW rows); within a short lease, with its compile pre-pass
(`DARKJAX_BENCH_JOBS`) and a deadline (launch/bench_gpu.sh). The issue's Done-when table alone,
sized for one lease (no levers' variants, no profiles): `DARKJAX_BENCH_DEADLINE_S=520 bash
launch/bench_gpu.sh OUT_DIR table`, then the same command again on the same machine to finish
what the deadline cut. JAX and torch share the GPU: with
`--vs-torch` JAX allocates as it needs (XLA_PYTHON_CLIENT_PREALLOCATE=false unless set).

`--variants` times the step under several conv settings of `darkjax.layers.conv` in the same
process, in alternating rounds, each against the first: `auto` (the defaults), or comma-separated
`lowering=` (every Conv3D, as `--lowering`), `kernel_grad=` (instead of `choose_kernel_grad`),
`ynn_min_core_use=` (`conv2d.YNN_MIN_CORE_USE`; 0 keeps every conv on YNNPACK),
`bn_relu=fused|plain` (each BatchNorm, with its ReLU, as one custom VJP where it applies, the
default on GPU and TPU, or autodiff of flax's: `darkjax.layers.norm`), `max_pool=native|separable`
(every auto max pool as `nn.max_pool` or as running maxima of strided slices, instead of
`conv.choose_pool_lowering`; an error where the model picks a pool itself, as C3D and the
ResNets do under `lowering=native`), `align_channels=on|off` (a GPU's 16-bit convolutions with their
channels zero-padded to multiples of 8, the default, or as they are: `conv.aligned_conv`),
`pointwise=conv|gemm` (a GPU's (1, 1, 1) ungrouped convolutions as XLA's, the default, or as
matmuls over channels, GEMMs: `conv.pointwise_gemms`), `group_bundle=N` (a GPU's grouped
convolutions with their groups bundled up to N input channels a group, block-diagonal kernels,
16 by default, 0 as they are: `conv.gpu_group_bundle`), `donate=on|off` (the step's state
donated to its outputs, as every darkjax.train step does, or copied: XLA's `alias` bytes in the
variant's memory analysis are what donation saves), a field
of the model as `model.FIELD=VALUE` (e.g. `model.stem_lowering=native`: 3D-ResNeXt's stem as
XLA's 3D convolution), and any XLA option as
`xla_NAME=VALUE` (that variant's compiler_options, e.g. `xla_gpu_force_conv_nhwc=true`; a list
value joins its items with `+`, e.g. `xla_gpu_enable_command_buffer=FUSION+CONVOLUTION`, and an
empty one clears the list).
With `--torch-compile` the first variant is the flax side of the table and each other one a side
of its own, with its per-round ratio to flax (`variants` in the JSON; the table shows each against
the best torch.compile). Without it the variants are a row's levers, flax alone: `--pipelined`,
`--profile` and `--cold-from` apply to each, and `--markdown-from` renders them as a lever table
(`bench_report.lever_table`; `launch/bench_gpu.sh` with DARKJAX_BENCH_TORCH=0).
`--profile STEPS` traces that many steps of each flax side after the rounds
(`measure.device_profile`): device ms per step by op kind (convolutions per direction,
transposes, fusions, XLA:GPU's command buffers), the top ops, the convolutions' layouts as XLA
chose them (`dim_labels`), and each convolution's kernel and output shapes and TFLOP/s.

Each timed row also records XLA's count of the flax step's floating-point operations
(`flops_per_step`: the model's own, `profiling.step_flops`, a multiply-add as two) and each
side's TFLOP/s per device and share of the device's dense bf16 peak (`utilisation`,
`darkjax.aot.PEAK_BF16_TFLOPS`; the table's "flax TFLOP/s per device" column). `--count-flops
PLATFORM` only counts: the step traced for PLATFORM on abstract arguments, nothing compiled, so a
CPU host counts a GPU row's operations; `--markdown-from` gives such a count's figure to a row
timed without one. `--target T` compiles the step for a compile-only target (darkjax.aot) under
each of `--variants`, nothing run: XLA's memory and traffic per form, on any host.

Measured figures (ratios against torch, compile times, what was tried) are in docs/benchmarks.md,
each with its command, date and machine. Profiling a step: `jax.profiler` traces show each XLA
thunk per thread.

A paper config's own train step at its own size (phase, optimizer, sharding as `darkjax.main`
compiles it; cold compile time, memory per remat policy, step time): `--config`, see
`darkjax/tools/bench_config.py`.

Depthwise conv lowerings (the enhancers' ShuffleNet units): `--depthwise`, see
`darkjax/layers/depthwise.py`.

Input pipeline throughput: `--input --config` times a paper config's own train pipeline from
records to the augmented batch (clips/s, clips per CPU-second, host cores to keep one H100 busy),
see `darkjax/tools/bench_input_config.py`; `--input` alone compares records with decoding video
per sample, see `darkjax/tools/bench_input.py`. Optical-flow methods (ms per frame pair,
end-point error on clips of known flow): `--flow`, see `darkjax/tools/bench_flow.py`. The CLI
picks one benchmark per run (`--config` alone, or with `--input`); each has an entry in
`_BENCHMARKS`. The `--model` ones are in `darkjax/tools/bench_model.py`, their train step and
`--variants` settings in `darkjax/tools/bench_step.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from darkjax.layers import conv2d
from darkjax.layers.conv import configure_cpu_flags
from darkjax.tools import bench_report, bench_torch
from darkjax.tools.bench_model import bench_train_step
from darkjax.tools.bench_step import parse_variant, variant_specs
from darkjax.tools.measure import time_steps


def bench_depthwise(args: argparse.Namespace) -> dict[str, Any]:
  """Depthwise 3x3 conv, forward + gradients w.r.t. input and kernel: `native` vs `blockdiag`."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from darkjax.layers.depthwise import depthwise_conv2d  # pylint: disable=import-outside-toplevel
  rows = []
  print(f"depthwise 3x3 conv, batch {args.dw_batch}, fwd + grad, {conv2d.cores()} cores "
        f"(median of {args.steps} steps, best of {args.rounds} rounds)", flush=True)
  for spec in args.dw_shapes.split(";"):
    size, channels, stride = (int(v) for v in spec.split(","))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.dw_batch, size, size, channels), np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, 1, channels), np.float32))
    times = {}
    for lowering in ("native", "blockdiag"):
      step = jax.jit(jax.grad(lambda x, k, lowering=lowering: jnp.sum(depthwise_conv2d(
          x, k, (stride, stride), ((1, 1), (1, 1)), lowering) ** 2), argnums=(0, 1)))
      jax.block_until_ready(step(x, k))
      run = lambda step=step: jax.block_until_ready(step(x, k))
      times[lowering] = min(time_steps(run, args.steps)[0] for _ in range(args.rounds))
    ratio = times["blockdiag"] / times["native"]
    rows.append({"size": size, "channels": channels, "stride": stride, **times, "ratio": ratio})
    print(f"  {size}x{size} {channels:3d} ch stride {stride}: native {times['native'] * 1e3:7.1f} "
          f"ms, blockdiag {times['blockdiag'] * 1e3:7.1f} ms, ratio {ratio:.2f}", flush=True)
  return {"depthwise": rows}


def bench_input(args: argparse.Namespace) -> dict[str, Any]:
  if args.config:
    from darkjax.tools import bench_input_config  # pylint: disable=import-outside-toplevel
    return bench_input_config.run(args)
  from darkjax.tools import bench_input as input_bench  # pylint: disable=import-outside-toplevel
  result = input_bench.run(videos=args.videos or 48, frames=args.video_frames or 64,
                           clip_frames=args.frames, batch=args.input_batch, batches=args.batches)
  print(input_bench.report(result), flush=True)
  return result


def bench_flow(args: argparse.Namespace) -> dict[str, Any]:
  from darkjax.tools import bench_flow as flow_bench  # pylint: disable=import-outside-toplevel
  rows = flow_bench.run(threads=args.flow_threads)
  print(flow_bench.report(rows), flush=True)
  return {"flow": rows}


def render_markdown(args: argparse.Namespace) -> dict[str, Any]:
  text = bench_report.markdown(bench_report.load(args.markdown_from))
  print(text, end="", flush=True)
  return {"markdown": text}


def render_autotune_log(args: argparse.Namespace) -> dict[str, Any]:
  from darkjax.tools import autotune_log  # pylint: disable=import-outside-toplevel
  text, rows = autotune_log.report(args.autotune_log)
  print(text, end="", flush=True)
  return {"autotune_log": rows}


def bench_config(args: argparse.Namespace) -> dict[str, Any]:
  from darkjax.tools import bench_config as config_bench  # pylint: disable=import-outside-toplevel
  return config_bench.run(args)


# flag (dest) -> benchmark; the first given runs (--input before --config: --input --config is the
# config's input pipeline).
_BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "model": bench_train_step,
    "input": bench_input,
    "depthwise": bench_depthwise,
    "flow": bench_flow,
    "config": bench_config,
    "markdown_from": render_markdown,
    "autotune_log": render_autotune_log,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.bench", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--model", help="model name from darkjax.models.names(): train-step benchmark")
  model = parser.add_argument_group("train-step benchmark (--model)")
  model.add_argument("--vs-torch", action="store_true", help="also time the PyTorch model")
  model.add_argument("--batch", type=int, default=None, help="default 2 (--config: the config's)")
  model.add_argument("--frames", type=int, default=None,
                     help="default 16 (--config: the config's)")
  model.add_argument("--size", type=int, default=112)
  model.add_argument("--steps", type=int, default=5, help="timed steps per round")
  model.add_argument("--rounds", type=int, default=3, help="alternating flax/torch rounds")
  model.add_argument("--compile-only", action="store_true",
                     help="compile and stop (with --vs-torch also the torch steps: a compiled "
                          "step's first call), no timed rounds")
  model.add_argument("--count-flops", choices=("cpu", "gpu", "tpu"), default=None,
                     metavar="PLATFORM",
                     help="count XLA's floating-point operations of the train step (--model's, "
                          "or --config's phase) as traced for PLATFORM (cpu, gpu, tpu; its "
                          "lowerings) and stop: no compile, no run, any size on any host "
                          "(--config with gpu / tpu: the aot-gpu / aot-tpu extra)")
  model.add_argument("--concurrent", type=int, default=1, metavar="N",
                     help="this command compiles beside N-1 others (launch/bench_gpu.sh's "
                          "pre-pass): recorded with its compile times, which are then upper "
                          "bounds")
  model.add_argument("--cold-from", action="append", default=None, metavar="JSON",
                     help="the --compile-only --json result of this same row or config from a "
                          "pre-pass that filled the persistent caches this run reads: its compile "
                          "times are recorded as the cold ones (`cold_compile`), this run's as "
                          "warm starts; repeated, the results of several pre-pass commands that "
                          "compiled a row's variants between them")
  model.add_argument("--pipelined", action="store_true",
                     help="also time each side's --steps dispatched back to back with one wait "
                          "at the end, as a training loop runs them (pipelined_ms per side, "
                          "flax's pipelined ratios); the step times wait for every step")
  model.add_argument("--profile", type=int, default=0, metavar="STEPS",
                     help="after the timed rounds, trace this many flax steps (each variant's; "
                          "--config: the phase's step) with jax.profiler: device ms per step "
                          "per op kind, the top ops and the convolutions' layouts "
                          "(measure.device_profile)")
  model.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                     help="compute dtype of the flax model (parameters stay float32); torch: "
                          "bf16 autocast")
  model.add_argument("--optimizer", default="sgd", choices=sorted(bench_torch.OPTIMIZERS),
                     help="both sides' update (darkjax.tools.bench_torch.OPTIMIZERS)")
  model.add_argument("--torch-compile", action="store_true",
                     help="with --vs-torch: also time torch.compile(step) in each "
                          "--torch-compile-modes; the faster is the reference")
  model.add_argument("--torch-compile-modes", default="default,max-autotune-no-cudagraphs",
                     help="comma-separated torch.compile modes for --torch-compile")
  model.add_argument("--torch-layout", default="channels_last_3d",
                     choices=bench_torch.LAYOUTS, help="memory format of the torch model and clips")
  model.add_argument("--memory", action="store_true",
                     help="XLA memory analysis (and step time) without remat and per --remat "
                          "policy")
  model.add_argument("--remat", default="full",
                     help="comma-separated darkjax.layers.remat policies compared with none by "
                          "--memory (full, dots, dots_no_batch, conv_outputs)")
  model.add_argument("--devices", type=int, default=1,
                     help="data-parallel over this many host devices (CPU: one per core)")
  model.add_argument("--lowering", default=None,
                     help="Conv3D lowering override (see darkjax.layers.conv.LOWERINGS)")
  model.add_argument("--variants", default=None,
                     help="';'-separated conv settings timed against the first in alternating "
                          "rounds: 'auto' or comma-separated lowering=, kernel_grad=, "
                          "ynn_min_core_use=, bn_relu=, max_pool=, align_channels=, "
                          "pointwise=, group_bundle=, donate=, model.FIELD=, xla_OPTION= (see the "
                          "description)")
  paper = parser.add_argument_group("config benchmark (--config)")
  paper.add_argument("--config", help="a paper config (path[:arg]): its own train step at its own "
                     "size on a synthetic stand-in dataset (darkjax.tools.bench_config); --batch, "
                     "--frames, --memory/--remat, --compile-only, --steps, --rounds apply. With "
                     "--input: its train pipeline (darkjax.tools.bench_input_config)")
  paper.add_argument("--phase", default=None, help="the trainer's phase (default: its main one)")
  paper.add_argument("--workdir", default=None,
                     help="where the stand-in data and checkpoints go (default: a temp directory)")
  paper.add_argument("--with-input", action="store_true",
                     help="also time the phase's steps fed by the config's own train pipeline "
                          "(its input worker processes as a run here starts them: "
                          "input.workers=-1 chooses them for this host), dispatched back to back")
  paper.add_argument("--check-init", action="store_true",
                     help="instead of timing: the phase's parameter init as darkjax runs it "
                          "(on a GPU with JAX's threefry kernel, targets.init_jit) against XLA's "
                          "own lowering of it, bit for bit; exits 1 where a leaf differs")
  paper.add_argument("--cold-start", action="store_true",
                     help="instead of timing steps: the phase's cold-start compiles (train step "
                          "and parameter init, no persistent cache) one after the other against "
                          "the step's on a thread beside the init's, as darkjax.train starts, in "
                          "--rounds alternating rounds")
  paper.add_argument("--cold-start-mode", default="",
                     help="with --cold-start: 'sequential' or 'aside' alone (default both, in "
                          "alternating rounds); one process per mode keeps both cold on a GPU, "
                          "whose XLA keeps its autotuning results in the process")
  paper.add_argument("--evals", action="store_true",
                     help="with --cold-start: the config's evaluations compile too (one after "
                          "the others, and beside the step as a TPU run's fit check compiles "
                          "them)")
  paper.add_argument("--target", default="",
                     help="with --cold-start: compile for this compile-only target instead of "
                          "the local devices (darkjax.aot: h100:1, tpu-v5e:2x2, ...); with "
                          "--model: its train step compiled for that target under each of "
                          "--variants (memory, traffic, lowerings), nothing run")
  paper.add_argument("--data-dir", default=None,
                     help="where the stand-in datasets are rendered, once per clip geometry, and "
                          "found by later commands (default: WORKDIR/data)")
  which.add_argument("--input", action="store_true",
                     help="input pipeline: clips/s from records vs decoding .avi per sample; with "
                          "--config, that config's train pipeline and the host cores one H100 "
                          "needs")
  data = parser.add_argument_group("input benchmark (--input; --frames is the clip length)")
  data.add_argument("--videos", type=int, default=None,
                    help="ARID-like 240x320 .avi clips made (default 48); with --config: stand-in "
                         "train videos per dataset (default 16)")
  data.add_argument("--video-frames", type=int, default=None,
                    help="frames per made video (default 64; with --config: the release's "
                         "typical length, bench_input_config.STAND_INS)")
  data.add_argument("--input-batch", type=int, default=8)
  data.add_argument("--batches", type=int, default=20,
                    help="timed record batches (with --config: only without a shuffle window)")
  data.add_argument("--workers", default="0,1,2",
                    help="with --config: grain worker-process counts to time (0: the config's own "
                         "pipeline, thread prefetch)")
  data.add_argument("--windows", type=int, default=1,
                    help="with --config: shuffle windows per producer in the timed span")
  paper.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field as darkjax.main's --config.KEY=VALUE does "
                          "(e.g. conv_lowering=native; with --input: input.prefetch=0); "
                          "repeatable")
  data.add_argument("--step-ms", type=float, default=None,
                    help="with --config: the train step time to keep up with (default: the "
                         "config's H100 step, bench_input_config.H100_STEPS)")
  which.add_argument("--depthwise", action="store_true",
                     help="depthwise 3x3 conv lowerings (darkjax.layers.depthwise)")
  dw = parser.add_argument_group("depthwise benchmark (--depthwise; --steps, --rounds apply)")
  dw.add_argument("--dw-batch", type=int, default=128)
  dw.add_argument("--dw-shapes", default="32,16,1;32,32,2;32,64,2;16,32,1",
                  help="'size,channels,stride;...'")
  which.add_argument("--markdown-from", nargs="+", metavar="JSON",
                     help="print the docs/benchmarks.md tables of these `--model M --vs-torch "
                          "--json` and `--config C --json` results (darkjax.tools.bench_report)")
  which.add_argument("--autotune-log", nargs="+", metavar="TEXTPROTO",
                     help="summarise XLA's GPU autotuning logs "
                          "(--xla_gpu_dump_autotune_logs_to=FILE.textproto): where a compile's "
                          "autotuning goes (darkjax.tools.autotune_log)")
  parser.add_argument("--json", metavar="OUT", default=None,
                      help="also write the result, with command, date, devices and versions, "
                           "as JSON to OUT")
  which.add_argument("--flow", action="store_true",
                     help="optical-flow methods of prepare --flow: ms per frame pair, error")
  parser.add_argument_group("flow benchmark (--flow)").add_argument(
      "--flow-threads", type=int, default=1, help="OpenCV threads")
  args = parser.parse_args(argv)
  chosen = [flag for flag in ("model", "input", "depthwise", "flow", "markdown_from",
                              "autotune_log") if getattr(args, flag)]
  if not chosen and not args.config:
    parser.error("one of the arguments --model --config --input --depthwise --flow "
                 "--markdown-from --autotune-log is required")
  if args.config and chosen not in ([], ["input"]):
    parser.error(f"--config goes alone or with --input, not with --{chosen[0]}")
  if not args.config:   # --config keeps None: the config's own batch and clip length
    args.batch = 2 if args.batch is None else args.batch
    args.frames = 16 if args.frames is None else args.frames
  if args.steps < 1 or args.rounds < 1:
    parser.error("--steps and --rounds must be >= 1")
  if args.concurrent < 1:
    parser.error("--concurrent must be >= 1")
  if args.profile < 0:
    parser.error("--profile must be >= 0")
  if args.profile and (not (args.model or args.config) or args.compile_only or args.input
                       or args.cold_start or args.check_init):
    parser.error("--profile traces timed steps: it goes with a timed --model M or --config C "
                 "run (not --compile-only, --input, --cold-start or --check-init)")
  if args.cold_from and (not (args.model or args.config) or args.compile_only
                         or (args.model and args.memory)):
    parser.error("--cold-from goes with a timed --model or --config run (--model: not "
                 "--memory), not --compile-only")
  if args.cold_start and (not args.config or args.input or args.check_init or args.memory
                          or args.compile_only or args.cold_from):
    parser.error("--cold-start goes with --config alone (not --input, --check-init, --memory, "
                 "--compile-only or --cold-from)")
  if args.count_flops and (not (args.model or args.config) or args.vs_torch or args.input
                           or args.compile_only or args.memory or args.cold_start
                           or args.check_init or args.profile):
    parser.error("--count-flops goes with --model M or --config C alone (it compiles and times "
                 "nothing: not with --vs-torch, --input, --compile-only, --memory, --cold-start, "
                 "--check-init or --profile)")
  if args.target and not (args.cold_start or (args.model and not (
      args.vs_torch or args.memory or args.count_flops or args.profile or args.cold_from))):
    parser.error("--target goes with --config C --cold-start, or with --model M alone (its step "
                 "compiled for the target under each of --variants; not with --vs-torch, "
                 "--memory, --count-flops, --profile or --cold-from)")
  if (args.evals or args.cold_start_mode) and not args.cold_start:
    parser.error("--evals and --cold-start-mode go with --config C --cold-start")
  if args.windows < 0 or args.batches < 1:
    parser.error("--windows must be >= 0 and --batches >= 1")
  args.torch_compile_modes = tuple(filter(None, (
      mode.strip() for mode in args.torch_compile_modes.split(","))))
  if args.torch_compile and not (args.vs_torch and args.model):
    parser.error("--torch-compile goes with --model M --vs-torch")
  if args.torch_compile and args.memory:
    parser.error("--torch-compile times the train step, not --memory")
  if args.torch_compile and not args.torch_compile_modes:
    parser.error("--torch-compile-modes: no mode given")
  if args.variants is not None:
    try:
      if not [parse_variant(spec) for spec in variant_specs(args.variants)]:
        parser.error("--variants: no variant given")
    except ValueError as error:
      parser.error(f"--variants: {error}")
  return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  for path in args.cold_from or ():   # before minutes of compiling
    if not os.path.isfile(path):
      raise SystemExit(f"bench: --cold-from {path}: no such file (the JSON of this row's or "
                       "config's `--compile-only --json` pre-pass)")
  configure_cpu_flags()  # before jax initialises its backend
  if getattr(args, "devices", 1) > 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
  if args.vs_torch:
    # One GPU for both: JAX takes memory as it needs it instead of 75% of it up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if args.torch_compile:
    bench_torch.use_fresh_inductor_cache()
  benchmark = next(benchmark for dest, benchmark in _BENCHMARKS.items() if getattr(args, dest))
  result = benchmark(args)
  result = {**bench_report.provenance(argv), **result}   # after: the versions of what it imported
  if args.json:
    bench_report.write_json(args.json, result)
    print(f"  written: {args.json}", flush=True)
  if (result.get("init_check") or {}).get("differ"):   # --check-init: a program is wrong
    raise SystemExit(1)
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
