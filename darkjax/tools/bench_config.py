"""A paper config's own train step, at its own size: compile time (cold: no persistent cache), XLA's
memory analysis per remat policy, and step time.

    python -m darkjax.tools.bench --config configs/dtcm_arid.py [--phase joint] [--frames 64]
        [--batch 2] [--memory --remat full,conv_outputs] [--compile-only] [--steps 3] [--rounds 2]
        [--set KEY=VALUE ...] [--profile 3] [--with-input] [--check-init]
        [--cold-start [--target h100:1]]

The step is the one `python -m darkjax.main` compiles for that config and phase (the same Task,
optimizer, sharding over all devices, donation, `xla_opt_level` and `conv_lowering`), built by
`darkjax.train.Trainer.build`. The default phase is the paper's main network (`Phase.main` in the
trainer's PHASES, else the deployed phase): DTCM `joint` (enhancer + 3D-ResNeXt-101), LIFT-Net
`student` (PViT + luminous R(2+1)D + fusion), ActLumos `teacher` (dual-stream R(2+1)D-34 + DFF +
BERT); other declared phases by `--phase`. Single-phase trainers have one phase, `train`.

So that nothing needs preparing, the config's datasets (and ActLumos's SSL sources) are replaced by
the embedded synthetic dataset generated at the config's clip geometry (frames x stride, short side
or resize) with one clip per class, and pretrained weights are not loaded (`required_weights`
keys emptied: the step's cost does not depend on them). What differs from the paper's run: the
class count (synthetic: 10) and so the classifier head, a few KB. A prepared optical-flow stream
(the two-stream C3D's flow tower, LIFT-Net's `luminous_input=flow`) is stored in the stand-in
records too (the synthetic set's `flow`: Farneback flow of its IR frames, recorded as `prepare
--flow` records it), so the train pipeline reads it as a run does; a record stream the synthetic
dataset has no stand-in for fails naming it.
The stand-in clips are rendered once per geometry into `--data-dir` (default: WORKDIR/data), on
every host core, under a lock: commands that share a data directory, at once or one after the
other (launch/bench_gpu.sh), render each geometry once.

`--set KEY=VALUE` overrides a config field first, as darkjax.main's `--config.KEY=VALUE` does
(a lever at the config level: `conv_lowering=native`, `compute_dtype=float32`,
`model.kwargs.remat=full`, ...); the result records them (`overrides`).

`--profile N` traces N steps of the phase's step after the timed rounds (jax.profiler, as a
`--model` row's): device ms per step by op kind, the top ops and the convolutions' layouts
(`profile` in the JSON), what a config's step spends its time on beside the backbone's row.

`--with-input` also times the steps dispatched back to back, each fed the next batch of the
config's own train pipeline on the stand-in records, made by the input worker processes a run of
the config starts on this host (`config.input.workers`; -1 chooses them here:
`config.auto_input_workers`): `input` in the JSON. The steps above run on one batch kept on the
device; the difference is the time the device waited for its input (a lower bound: a stand-in
record holds one clip's frames, a prepared video all of its own).

`--check-init` times nothing: it runs the phase's parameter init as darkjax does (on a GPU with
JAX's threefry kernel, `targets.init_jit`) and XLA's own lowering of the same program, and
compares every parameter bit for bit (`init_check`; a difference exits 1).

`--cold-start` times no step either: the compiles a fresh run makes before its first step, the
train step's and the parameter init's (no persistent cache, nothing run), one after the other
against the step's on a thread beside the init's, as `darkjax.train` starts
(`Trainer.compile_start`), in `--rounds` alternating rounds on fresh in-memory caches; with
`--target T` for a compile-only target (darkjax.aot) on this host; with `--evals` the
evaluations' programs too (`Trainer.compile_evals`), which a TPU run's fit check compiles beside
the step. On a GPU XLA keeps its autotuning results in the process, so only the first round's
step compile there is cold: there, one round per command and one mode per command
(`--cold-start-mode sequential`, then `aside` in a fresh process), their seconds set side by
side.

Compile time is cold: darkjax sets no persistent compilation cache (a note is printed when the
environment sets one, e.g. JAX_COMPILATION_CACHE_DIR); `--remat` adds one compile per
policy (`config.model.kwargs.remat`), each reported against `none` (temp memory reduction, step
time ratio). A warm start: `--compile-only --json COLD.json` with a persistent cache set, then the
timed run with the same cache and `--cold-from COLD.json`, which records COLD's compile as the cold
one (`cold_compile`) beside its own warm one (launch/bench_gpu.sh's pre-pass).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import tempfile
import time
from typing import Any, Callable

import ml_collections as mlc
import numpy as np

from darkjax import config as config_lib
from darkjax import profiling
from darkjax import task as task_lib
from darkjax.data import flow, records
from darkjax.tools import bench_report, measure

# What the synthetic records hold besides labels; on request (`generate.flow`) also the optical
# flow of its IR frames, the `flow.STREAM` a prepared dataset's `prepare --flow` stores.
SYNTHETIC_STREAMS = ("video",)
_PIXELS_PER_WORKER_START = 4_000_000   # stand-ins smaller than this render on one core


def parse_sets(sets: list[str], flag: str = "bench --set") -> dict[str, Any]:
  """`KEY=VALUE` arguments (bench's `--set`, fit's `--override`) -> overrides; a VALUE that is a
  Python literal is that literal (`0`, `()`, `True`), else the string. SystemExit naming `flag`
  and the item that is not KEY=VALUE."""
  overrides = {}
  for item in sets:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE")
    overrides[key] = config_lib.override_value(value)
  return overrides


def phase_names(config: mlc.ConfigDict) -> tuple[str, ...]:
  """The phases `--phase` takes for `config` (the first is the default, the main network)."""
  main = task_lib.main_phase(config).name
  return (main,) + tuple(p.name for p in task_lib.declared_phases(config) if p.name != main)


def stand_in_config(config: mlc.ConfigDict, data_root: str, frames: int | None = None,
                    batch: int | None = None, remat: str | None = None,
                    evals: bool = False) -> mlc.ConfigDict:
  """`config` at `frames` / `batch`, its datasets replaced by a synthetic one of its clip
  geometry under `data_root` (one train and one test clip per class), no pretrained weights, no
  evaluations (with `evals`, those whose programs compile ahead, `Evaluator.compile`: none
  runs), no prefetch thread."""
  # Pretrained weights are not loaded: every required_weights key emptied (a locked copy).
  out = config_lib.apply_overrides(config, {e.key: "" for e in config.required_weights.values()})
  if frames:
    out.input.frames = int(frames)
  if batch:
    out.input.batch_size = int(batch)
    if "ssl" in out and "batch_size" in out.ssl:
      out.ssl.batch_size = int(batch)
  if remat is not None:
    out.model.kwargs.remat = remat
  streams = tuple(out.input.get("streams", ()))
  unknown = [s for s in streams if s not in SYNTHETIC_STREAMS + (flow.STREAM,)]
  if unknown:
    raise SystemExit(f"bench --config: the model reads record streams {unknown} that the "
                     "synthetic stand-in dataset does not have")
  # A prepared flow stream (the two-stream C3D's flow tower, LIFT-Net's luminous_input=flow) is
  # stored in the stand-in records as `prepare --flow` stores it, so the pipeline reads it as a
  # run does (`--with-input`); the method is the stand-in's, which the two-stream Task checks.
  with_flow = flow.STREAM in streams
  if with_flow and out.get("trainer") == "twostream":
    from darkjax.data import synthetic  # pylint: disable=import-outside-toplevel
    out.twostream.flow_method = synthetic.FLOW_METHOD
  spec = out.input
  size = max([int(spec.get("short_side") or 0), int(spec.get("crop_size") or 0), 32]
             + [int(v) for v in (spec.get("resize") or (0, 0))])
  clip_frames = max(16, int(spec.frames) * int(spec.get("stride", 1) or 1))
  generate = mlc.ConfigDict(dict(frames=clip_frames, size=size, train_per_class=1,
                                 test_per_class=1, darkness=0.8, seed=0, fps=16, flow=with_flow))
  directory = os.path.join(data_root, f"synthetic_{clip_frames}x{size}"
                           + ("_flow" if with_flow else ""))
  for block in config_lib.data_blocks(out):
    block.name, block.dir, block.split_index = "synthetic", directory, 0
    block.generate = generate
  if out.trainer == "actlumos":
    out.ssl.datasets, out.ssl.dirs = ("synthetic",), (directory,)
    out.ssl.split_index = 0
  out.required_weights = mlc.ConfigDict()
  out.model_init = ""
  out.evals = mlc.ConfigDict({name: entry for name, entry in out.evals.items()
                              if evals and _compiled_ahead(entry.get("type"))})
  for entry in out.evals.values():   # a kNN's k (host code: in no program) within the one clip
    if "k" in entry:                  # per class the stand-in trains on
      entry.k = 1
  out.eval_every = -1
  out.progress_bar = False
  out.input.prefetch = 0
  out.input.shuffle_window = 1
  return out


def _compiled_ahead(kind: str | None) -> bool:
  """Whether an evaluator type compiles its programs ahead (`compile`, darkjax.evaluators.base)."""
  from darkjax import evaluators  # pylint: disable=import-outside-toplevel
  return hasattr(evaluators.TYPES.get(kind), "compile")


def stand_in_data(config: mlc.ConfigDict) -> list[str]:
  """Renders the synthetic stand-in datasets a `stand_in_config` reads (absent or made with other
  parameters), on every host core, each under an exclusive lock on a file beside it (so commands
  sharing the data directory render it once, and none reads a half-written one), their train
  split listed as `records.EPOCH_EXAMPLES` clips (`records.list_shard_copies`: what the train
  pipeline does once per epoch, `--with-input`, spread as over a real split); returns their
  directories."""
  from darkjax.data import synthetic  # pylint: disable=import-outside-toplevel

  blocks = {b.dir: dict(b.generate) for b in config_lib.data_blocks(config)
            if b.name == "synthetic" and "generate" in b}
  for directory, params in sorted(blocks.items()):
    os.makedirs(os.path.dirname(directory) or ".", exist_ok=True)
    wanted = synthetic.SyntheticParams(**params)
    clips = sum(wanted.per_class(split) for split in synthetic.SPLITS) * len(wanted.class_names)
    # rendering takes about 1 s per million pixels on one core; spawned workers a few seconds to
    # start: worth it for the paper configs' stand-ins (LIFT-Net's: 40 s alone), not for tiny ones
    pixels = clips * wanted.frames * wanted.size ** 2
    workers = min(os.cpu_count() or 1, clips) if pixels > _PIXELS_PER_WORKER_START else 0
    with open(directory + ".lock", "a") as lock, _locked(lock):
      synthetic.ensure_dataset(directory, workers=workers, show_progress=True, **params)
      records.list_shard_copies(directory, "train")   # one clip per class: a dozen listed
  return sorted(blocks)


@contextlib.contextmanager
def _locked(handle):
  fcntl.flock(handle, fcntl.LOCK_EX)
  try:
    yield
  finally:
    fcntl.flock(handle, fcntl.LOCK_UN)


# The parts of a step's compile (`compile_parts`, seconds): the Trainer's build (the model's init
# traced for shapes), the step's trace to a jaxpr, its lowering to StableHLO, and XLA (a compile,
# or on a warm start the persistent cache's lookup and load): where a warm start's time goes.
COMPILE_PARTS = ("build", "trace", "lower", "xla")


def build_step(config: mlc.ConfigDict, phase: str, workdir: str
               ) -> tuple[dict[str, Any], Callable[[], None]]:
  """Compiles the phase's train step of a stand-in config; returns ({compile_s, compile_cpu_s,
  compile_parts (COMPILE_PARTS), XLA's memory bytes (temp, argument, ...), lowerings,
  param_count, batch: the global batch that runs on the devices, init_s: the fresh state's
  init, its program's compile and run, the other compile of a cold start}, a callable running
  one step on one real batch)."""
  import jax  # pylint: disable=import-outside-toplevel

  from darkjax import fit as fit_lib  # pylint: disable=import-outside-toplevel
  from darkjax import sharding, train  # pylint: disable=import-outside-toplevel
  from darkjax.data import pipeline  # pylint: disable=import-outside-toplevel
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel

  # Without earlier phases' weights: a frozen teacher / enhancer keeps its initial weights, at
  # the same cost.
  phase_cfg, task = task_lib.build_task(task_lib.find_phase(config, phase), config)
  trainer = train.Trainer(phase_cfg, workdir, task=task)
  dataset = iter(task.train_dataset(trainer.local_batch(trainer.config.input.batch_size)))
  host_batch = sharding.device_fields(next(dataset))
  sample = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype), host_batch)
  batch = sharding.host_to_global(host_batch, trainer.batch_sharding)
  rng = jax.random.key(0)
  jax.clear_caches()
  start, start_cpu = time.perf_counter(), time.process_time()
  marks = [start]
  with conv.record_lowerings() as chosen, trainer.scope():
    trainer.build(sample)
    marks.append(time.perf_counter())
    traced = trainer.train_step.trace(trainer.abstract_state, batch, rng)
    marks.append(time.perf_counter())
    lowered = traced.lower()
    marks.append(time.perf_counter())
    compiled = lowered.compile()
  marks.append(time.perf_counter())
  info = {"compile_s": marks[-1] - start,
          "compile_cpu_s": time.process_time() - start_cpu,
          "compile_parts": dict(zip(COMPILE_PARTS, (b - a for a, b in zip(marks, marks[1:])))),
          **measure.memory_bytes(compiled),
          "step_bytes": fit_lib.step_bytes(compiled),
          "lowerings": dict(sorted(chosen.items())), "param_count": trainer.param_count,
          "batch": int(trainer.config.input.batch_size)}
  flops = trainer.step_flops()   # after the compile's clock: not part of it
  if flops is not None:
    info["flops_per_device"] = flops
  start = time.perf_counter()
  trainer.init_state(from_checkpoint=False, pretrained=False)
  jax.block_until_ready(trainer.state)
  info["init_s"] = time.perf_counter() - start   # the init program's compile (or load) and run
  state = [trainer.state, None]   # the state and the last step's metrics

  def dispatch() -> None:
    state[0], state[1] = compiled(state[0], batch, rng)

  run_step = measure.step_runner(dispatch, lambda: jax.block_until_ready(state))
  run_step.compiled = compiled   # for a device profile's HLO (`bench --config --profile`)

  def fed() -> Callable[[], None]:
    """A step runner like `run_step` whose every step takes the next batch of the config's train
    pipeline, made by the input worker processes a run of the config starts here
    (`Trainer._input_workers`; `.workers`), as darkjax.train feeds it; `.close()` stops them and
    frees their batches' shared memory."""
    workers = trainer._input_workers(resuming=False)   # pylint: disable=protected-access
    batches = iter(pipeline.with_workers(
        task.train_dataset(trainer.local_batch(trainer.config.input.batch_size)), workers,
        int(trainer.config.input.prefetch)))

    def dispatch_fed() -> None:
      state[0], state[1] = compiled(
          state[0], sharding.host_to_global(next(batches), trainer.batch_sharding), rng)

    def close() -> None:
      batches.close()
      pipeline.release_shared_memory()   # before the process ends

    runner = measure.step_runner(dispatch_fed, lambda: jax.block_until_ready(state))
    runner.workers, runner.close = workers, close
    return runner

  run_step.fed = fed
  return info, run_step


def time_with_input(run_step: Callable[[], None], args: argparse.Namespace) -> dict[str, Any]:
  """`bench --config --with-input`: the phase's steps dispatched back to back as darkjax.train
  runs them, each fed the next batch of the config's own train pipeline (its input worker
  processes as a run here starts them), after one step that starts the pipeline: {workers,
  pipelined_step_s (best round), rounds_s}. Beside the steps on one batch kept on the device,
  the difference is the time the device waited for the input."""
  runner = run_step.fed()
  try:
    runner()   # the workers' start and the first shuffle window: not timed
    rounds = [measure.time_pipelined(runner, args.steps)[0] for _ in range(args.rounds)]
  finally:
    runner.close()
  best = min(rounds)
  print(f"  with its input pipeline ({runner.workers} worker processes), pipelined "
        f"({args.steps} steps, one wait): {best * 1e3:.1f} ms/step (rounds: "
        + ", ".join(f"{r * 1e3:.0f}" for r in rounds) + " ms)", flush=True)
  return {"workers": runner.workers, "pipelined_step_s": best, "rounds_s": rounds}


def check_init(config: mlc.ConfigDict, phase: str, workdir: str) -> dict[str, Any]:
  """`bench --config --check-init`: the phase's parameter init of a stand-in config as the Trainer
  runs it (`targets.init_jit`: on a GPU, JAX's threefry kernel) against XLA's own lowering of the
  same program (`.jitted`; elsewhere the two are one program), one key, every parameter leaf
  compared bit for bit; {leaves, differ: the paths that differ, kernel: were they two programs}."""
  import jax  # pylint: disable=import-outside-toplevel

  from darkjax import train  # pylint: disable=import-outside-toplevel

  phase_cfg, task = task_lib.build_task(task_lib.find_phase(config, phase), config)
  trainer = train.Trainer(phase_cfg, workdir, task=task)
  with trainer.scope():
    trainer.build()
    key = jax.random.key(int(phase_cfg.seed))
    init = trainer._init   # pylint: disable=protected-access
    ours = jax.device_get(init(key).params)
    plain_init = getattr(init, "jitted", init)
    plain = jax.device_get(plain_init(key).params)
  leaves = jax.tree_util.tree_leaves_with_path(ours)
  differ = [jax.tree_util.keystr(path) for (path, a), b in zip(leaves, jax.tree.leaves(plain))
            if not np.array_equal(a, b)]
  return {"leaves": len(leaves), "differ": differ, "kernel": plain_init is not init}


def _check_init_command(args: argparse.Namespace, config: mlc.ConfigDict,
                        overrides: dict[str, Any], phase: str, root: str,
                        data_dir: str) -> dict[str, Any]:
  """`bench --config C --check-init`: `check_init` on C's stand-in, printed and returned."""
  import jax  # pylint: disable=import-outside-toplevel

  cfg = stand_in_config(config, data_dir, args.frames, args.batch)
  stand_in_data(cfg)
  check = check_init(cfg, phase, os.path.join(root, "init_check"))
  print(f"{args.config} phase {phase} init on {jax.devices()[0].device_kind}: "
        f"{check['leaves']} parameter leaves, {len(check['differ'])} differ"
        + (f" ({', '.join(check['differ'][:5])})" if check["differ"] else "")
        + ("" if check["kernel"] else " (one program here: no GPU threefry kernel)"),
        flush=True)
  return {"config": args.config, "overrides": overrides, "phase": phase,
          "device": jax.devices()[0].platform, "init_check": check}


COLD_START_MODES = ("sequential", "aside")


def _phase_for_target(config: mlc.ConfigDict, phase: str, target: str) -> tuple[Any, Any]:
  """The phase's config and task as a run on compile-only `target` (or, "", on the local devices)
  builds them: compute_dtype "auto" resolved for that platform (bf16 on a GPU or TPU)."""
  from darkjax import aot, targets  # pylint: disable=import-outside-toplevel
  platform = (targets.platform_of(aot.compile_only_devices(target)) if target
              else targets.platform())
  return task_lib.build_task(task_lib.find_phase(config, phase),
                             config_lib.resolve(config, platform))


def cold_start(config: mlc.ConfigDict, phase: str, workdir: str, rounds: int,
               target: str = "", evals: bool = False,
               modes: tuple[str, ...] = COLD_START_MODES) -> dict[str, Any]:
  """`bench --config --cold-start`: the phase's cold-start compiles (train step, parameter init;
  with `evals` the evaluations' too, as a TPU run's fit check compiles them) of a stand-in config,
  in `rounds` alternating rounds: `sequential` (the step's compile, then the init's, then the
  evaluations') and `aside` (the step's on a thread beside the others: `Trainer.compile_start`,
  what a fresh run does); each round a fresh Trainer and fresh in-memory caches, the persistent
  cache off. {sequential_s, aside_s, step_s, init_s: per round; ratio: the median of aside /
  sequential per round (None unless both `modes` ran)}. One mode per process (`modes`) keeps
  both cold on a GPU, whose XLA keeps its autotuning results in the process."""
  import jax  # pylint: disable=import-outside-toplevel

  from darkjax import train  # pylint: disable=import-outside-toplevel

  phase_cfg, task = _phase_for_target(config, phase, target)
  before = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)   # process-wide: the thread too
  times: dict[str, list[float]] = {"sequential_s": [], "aside_s": [], "step_s": [], "init_s": []}
  try:
    for _ in range(rounds):
      for mode in modes:
        trainer = train.Trainer(phase_cfg, os.path.join(workdir, mode), task=task, target=target)
        trainer.build()
        jax.clear_caches()
        start = time.perf_counter()
        if mode == "aside":
          trainer.compile_start(fresh=True, evals=evals)
        else:
          trainer.compile_step()
          times["step_s"].append(time.perf_counter() - start)
          trainer.compile_init()
          times["init_s"].append(time.perf_counter() - start - times["step_s"][-1])
          if evals:
            trainer.compile_evals()
        times[f"{mode}_s"].append(time.perf_counter() - start)
  finally:
    jax.config.update("jax_enable_compilation_cache", before)
  per_round = [a / s for a, s in zip(times["aside_s"], times["sequential_s"])]
  return {**times, "modes": list(modes), "round_ratios": per_round,
          "ratio": float(np.median(per_round)) if per_round else None}


def _cold_start_command(args: argparse.Namespace, config: mlc.ConfigDict,
                        overrides: dict[str, Any], phase: str, root: str,
                        data_dir: str) -> dict[str, Any]:
  """`bench --config C --cold-start`: `cold_start` on C's stand-in, printed and returned."""
  import jax  # pylint: disable=import-outside-toplevel

  cfg = stand_in_config(config, data_dir, args.frames, args.batch, evals=args.evals)
  stand_in_data(cfg)
  modes = tuple(args.cold_start_mode.split(",")) if args.cold_start_mode else COLD_START_MODES
  unknown = [m for m in modes if m not in COLD_START_MODES]
  if unknown:
    raise SystemExit(f"bench: --cold-start-mode {args.cold_start_mode!r}: unknown {unknown}; "
                     f"valid: {','.join(COLD_START_MODES)}")
  found = cold_start(cfg, phase, os.path.join(root, "cold_start"), args.rounds, args.target,
                     evals=args.evals, modes=modes)
  where = args.target or f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})"
  then = "init, evaluations" if args.evals else "init"
  parts = []
  if found["sequential_s"]:
    parts.append(f"step then {then} " + ", ".join(f"{s:.1f}" for s in found["sequential_s"])
                 + " s (step " + ", ".join(f"{s:.1f}" for s in found["step_s"]) + ")")
  if found["aside_s"]:
    parts.append(f"step beside {then} " + ", ".join(f"{s:.1f}" for s in found["aside_s"]) + " s")
  if found["ratio"] is not None:
    parts.append(f"ratio {found['ratio']:.2f}")
  print(f"{args.config} phase {phase} cold start on {where}: " + "; ".join(parts), flush=True)
  return {"config": args.config, "overrides": overrides, "phase": phase, "evals": args.evals,
          "device": args.target or jax.devices()[0].platform, "cold_start": found}


# The compile-only target whose devices give a platform's lowerings, for --count-flops: the
# count is of the global batch's program, whichever chip of that platform runs it.
COUNT_TARGETS = {"cpu": "", "gpu": "h100:1", "tpu": "tpu-v5e:2x2"}


def _count_flops_command(args: argparse.Namespace, config: mlc.ConfigDict,
                         overrides: dict[str, Any], phase: str, root: str,
                         data_dir: str) -> dict[str, Any]:
  """`bench --config C --count-flops PLATFORM`: XLA's count of the phase's train step (a
  stand-in of C at its batch and clip) as darkjax compiles it for PLATFORM (a GPU or TPU's
  through a compile-only target: the `aot-gpu` / `aot-tpu` extra), every scan unrolled, nothing
  compiled (`Trainer.step_flops`); the global batch's count, printed and returned."""
  from darkjax import train  # pylint: disable=import-outside-toplevel

  cfg = stand_in_config(config, data_dir, args.frames, args.batch)
  stand_in_data(cfg)
  phase_cfg, task = _phase_for_target(cfg, phase, COUNT_TARGETS[args.count_flops])
  trainer = train.Trainer(phase_cfg, os.path.join(root, "count_flops"), task=task,
                          target=COUNT_TARGETS[args.count_flops])
  per_device = trainer.step_flops()
  if per_device is None:
    raise SystemExit(f"bench --config {args.config} --count-flops {args.count_flops}: XLA gave "
                     "no operation count for this step")
  flops, batch = per_device * trainer.mesh.size, int(trainer.config.input.batch_size)
  print(f"{args.config} phase {phase}: B={batch} {cfg.input.frames} frames, train step traced "
        f"for {args.count_flops}: {profiling.format_flops(flops)} per step, "
        f"{profiling.format_flops(flops / batch)} per clip", flush=True)
  return {"config": args.config, "overrides": overrides, "phase": phase,
          "traced_for": args.count_flops, "batch": batch, "frames": int(cfg.input.frames),
          "flops_per_step": flops, "flops_per_clip": flops / batch}


def run(args: argparse.Namespace) -> dict[str, Any]:
  """`bench --config`: see the module docstring."""
  import jax  # pylint: disable=import-outside-toplevel

  overrides = parse_sets(args.set)
  config = config_lib.apply_overrides(config_lib.load(args.config), overrides)
  phases = phase_names(config)
  phase = args.phase or phases[0]
  if phase not in phases:
    raise SystemExit(f"bench --config: trainer {config.trainer!r} has phases {list(phases)}, "
                     f"not {phase!r}")
  root = args.workdir or tempfile.mkdtemp(prefix="darkjax-bench-")
  data_dir = args.data_dir or os.path.join(root, "data")
  if args.check_init:
    return _check_init_command(args, config, overrides, phase, root, data_dir)
  if args.cold_start:
    return _cold_start_command(args, config, overrides, phase, root, data_dir)
  if args.count_flops:
    return _count_flops_command(args, config, overrides, phase, root, data_dir)
  cache = bool(jax.config.jax_compilation_cache_dir and jax.config.jax_enable_compilation_cache)
  if cache:
    print(f"note: persistent compilation cache on ({jax.config.jax_compilation_cache_dir}): "
          "compile times are not cold", flush=True)
  policies = measure.remat_policies(args.remat if args.memory else "")
  device = jax.devices()[0]
  from darkjax.layers import conv2d  # pylint: disable=import-outside-toplevel
  result: dict[str, Any] = {"config": args.config, "overrides": overrides, "phase": phase,
                            "device": device.platform, "device_kind": device.device_kind,
                            "devices": len(jax.devices()), "cores": conv2d.cores(),
                            "persistent_cache": cache}

  runs = {}

  def build(policy: str):
    cfg = stand_in_config(config, data_dir, args.frames, args.batch, remat=policy)
    stand_in_data(cfg)
    entry, run_step = build_step(cfg, phase, os.path.join(root, f"run_{phase}_{policy}"))
    runs[policy] = run_step
    if policy == "none":
      result.update(frames=int(cfg.input.frames), batch=entry["batch"],
                    param_count=entry["param_count"], lowerings=entry["lowerings"])
      print(f"{args.config} phase {phase}: B={entry['batch']} {cfg.input.frames} frames, "
            f"{entry['param_count'] / 1e6:.2f} M params, on {device.platform} "
            f"({device.device_kind}), {len(jax.devices())} device(s); compile "
            f"{entry['compile_s']:.1f} s wall, {entry['compile_cpu_s']:.1f} s CPU ("
            + ", ".join(f"{part} {seconds:.1f}" for part, seconds in entry["compile_parts"].items())
            + f"); init {entry['init_s']:.1f} s", flush=True)
      print(f"  lowerings: {measure.format_lowerings(entry['lowerings'])}", flush=True)
    return entry, run_step

  result["remat"] = measure.compare_policies(policies, build, args)
  if args.profile:   # after the timed rounds: the phase's step at the config's remat
    result["profile"] = measure.device_profile(runs["none"], args.profile,
                                               runs["none"].compiled.as_text())
    print("  profile: " + profiling.format_summary(result["profile"]), flush=True)
  if getattr(args, "with_input", False) and not args.compile_only:
    result["input"] = time_with_input(runs["none"], args)
  none = result["remat"]["none"]
  if "pipelined_step_s" in none:
    result["clips_per_s_pipelined"] = result["batch"] / none["pipelined_step_s"]
  if "step_s" in none:
    result["clips_per_s"] = result["batch"] / none["step_s"]
    print(f"  {result['clips_per_s']:.1f} clips/s (remat=none, global batch {result['batch']})",
          flush=True)
  bench_report.with_config_utilisation(result)
  if "utilisation" in result:
    print(f"  XLA counts {profiling.format_flops(result['flops_per_device_step'])} per step and "
          f"device: {profiling.format_utilisation(result['utilisation'])}", flush=True)
  stats = device.memory_stats() or {}   # what the allocator held at most (GPU / TPU)
  if "peak_bytes_in_use" in stats:
    result["peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
    print(f"  device memory peak: {stats['peak_bytes_in_use'] / 2**30:.2f} GiB of "
          f"{stats.get('bytes_limit', 0) / 2**30:.2f} GiB", flush=True)
  return bench_report.with_cold_compile(result, args)
