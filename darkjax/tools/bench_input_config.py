"""Input throughput of a paper config: clips/s and clips per CPU-second (= clips/s per host core)
through the config's own train pipeline, from records to the augmented batch, and the host cores
that keep one H100 busy at the config's measured step time.

    python -m darkjax.tools.bench --input --config configs/dtcm_arid.py [--workers 0,1,2]
        [--windows 1] [--videos 16] [--video-frames N] [--step-ms MS] [--phase P] [--workdir DIR]
        [--set input.prefetch=0 ...]

The pipeline is the one `python -m darkjax.main` iterates: the Task of the config's main phase
(`Phase.main`, as `bench --config`; another by `--phase`) built by `task.build_task`, and its
`train_dataset` at the config's global batch (one host feeding one device). So the clip spec, the
host clip ops (temporal sampling, resize, crop, flip), every record stream the Task reads (the
two-stream C3D's prepared `flow`), both domains of 3D-DiNet and anything a Task computes on the
host are in it; what runs on device (normalisation, `data/augment.py`, ActLumos's Retinex frames,
LIFT-Net's gamma frames, DTCM's enhancer) is not.

Its records are stand-ins written where `config.input.data` (and every other data block) points:
the release's frame size (`STAND_INS`) resized to the short side the config's docstring prepares
at (the config's `short_side`, or the short side of `resize`, and at least `prepare`'s default),
`--video-frames` frames per video (default: the release's typical length, `STAND_INS`), the model
stream and the extra record streams the config names (`input.stream(s)`), as uint8 noise: the host
ops cost the same on any content. The train split lists its shards as often as it takes to hold
`records.EPOCH_EXAMPLES` videos (hard links, `records.list_shard_copies`), so what a pipeline does
once per epoch is spread over as many clips as in a real split. Every record is read and
CRC-checked whole, so the cost of a clip grows with the frames stored per video; a release with
longer videos than the stand-in costs more.

Settings (`--workers`): 0 is the config's own pipeline (grain thread prefetch
`config.input.prefetch` and interleave read threads in this process); N > 0 is that pipeline
behind grain's `mp_prefetch` with N worker processes, each reading a slice of the shard files.
darkjax configs have no key for worker processes (yet): N > 0 rows say what one would give.
`--set KEY=VALUE` overrides a config field first (the pipeline's `input.prefetch`,
`input.cycle_length`, `input.shuffle_window`, or e.g. the two-stream C3D's
`twostream.flow_source=compute` with `input.streams=()`: flow computed on the host).

Measuring: a window shuffle hands out clips in bursts of its window (`input.shuffle_window`), so
the timed span starts once every producer (each worker, each of 3D-DiNet's two domains) has filled
its first window and lasts `--windows` whole windows of each: the clips produced in the span are
exactly those windows. clips/s is those clips over the wall time; CPU seconds are this process's
user + system time (all threads, getrusage) plus that of its child processes (the workers, read
from /proc) over the span, so clips per CPU-second holds when other jobs load the machine and
clips/s does not. A config without a window shuffle is timed over `--batches` batches.

Needed: `H100_STEPS` holds each paper config's main-phase step time measured on one H100 (cited in
docs/benchmarks.md); clips/s needed = global batch / step time (`--step-ms` gives another step
time), host cores needed = clips/s needed / clips per CPU-second. Recommended setting: the config's
own pipeline while it needs at most `config.OWN_PIPELINE_CORES` cores (one Python thread in the
training process, beside the training loop), else `config.WORKERS_HEADROOM` x the cores needed in
worker processes, at the workers' measured clips per CPU-second: the rules `input.workers=-1`
follows.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import os
import resource
import shutil
import tempfile
import time
from typing import Any

import ml_collections as mlc
import numpy as np

from darkjax import config as config_lib
from darkjax import task as task_lib
from darkjax.data import ops, pipeline, records
from darkjax.data.prepare import common as prepare_common
from darkjax.tools.bench_config import parse_sets


@dataclasses.dataclass(frozen=True)
class H100Step:
  """A main-phase train step measured on one H100 (jax 0.11.2, the paper's size)."""
  phase: str
  batch: int      # global batch
  frames: int
  step_s: float
  note: str = ""


# Config file stem -> its main phase's step on one H100; docs/benchmarks.md cites them.
H100_STEPS = {
    "actlumos_arid": H100Step("teacher", 16, 64, 0.2546, "bfloat16, pipelined"),
    "lift_arid": H100Step("student", 32, 30, 0.2385, "bfloat16, pipelined"),
    "dtcm_arid": H100Step("joint", 4, 64, 0.0318, "bfloat16, pipelined"),
    "twostream_infar": H100Step("train", 30, 16, 0.0332, "bfloat16, pipelined"),
    "dinet_infar": H100Step("train", 32, 16, 0.0358, "bfloat16, pipelined"),
}


@dataclasses.dataclass(frozen=True)
class Release:
  """What a stand-in video of a dataset looks like before `prepare` resizes it."""
  hw: tuple[int, int]   # (H, W) of the release's frames
  frames: int           # frames per stand-in video (a typical length of the release's clips)
  fps: float


# Frame sizes of the releases; lengths are round typical values (ARID: ~3 s at 30 fps; InfAR
# ~4 s at 25 fps), not statistics of the releases. XD145 is taken to be InfAR's twin.
STAND_INS = {
    "arid_v1": Release((240, 320), 96, 30.0),
    "arid_v1_5": Release((240, 320), 96, 30.0),
    "infar": Release((256, 293), 100, 25.0),
    "xd145": Release((256, 293), 100, 25.0),
}
OTHER_RELEASE = Release((240, 320), 96, 30.0)
PREPARE_SHORT_SIDE = inspect.signature(prepare_common.prepare).parameters["short_side"].default
CLASSES = tuple(f"class{i:02d}" for i in range(12))


def prepared_short_side(input_cfg: mlc.ConfigDict) -> int:
  """The short side a config's records are prepared at: what it resizes to, at least prepare's
  default."""
  resize = tuple(int(v) for v in input_cfg.resize)
  wanted = min(resize) if resize[0] else int(input_cfg.short_side or 0)
  return max(PREPARE_SHORT_SIDE, wanted)


def record_streams(config: mlc.ConfigDict) -> tuple[str, ...]:
  """The record streams besides `video` that a config reads: `input.streams` and every block's
  model stream (`stream`)."""
  found = list(config.input.get("streams", ()))

  def visit(node: mlc.ConfigDict) -> None:
    for key, value in node.items():
      if isinstance(value, mlc.ConfigDict):
        visit(value)
      elif key == "stream" and isinstance(value, str):
        found.append(value)
  visit(config)
  return tuple(sorted(set(found) - {"video"}))


def write_stand_in(block: mlc.ConfigDict, input_cfg: mlc.ConfigDict, streams: tuple[str, ...],
                   root: str, videos: int, video_frames: int | None) -> tuple[str, dict]:
  """Stand-in records for the data block `block` (train and test split of its split index) under
  `root`, reused when already there; returns (directory, {frames, hw, record_bytes})."""
  release = STAND_INS.get(block.name, OTHER_RELEASE)
  short = prepared_short_side(input_cfg)
  h, w = ops.resized_hw(*release.hw, short)
  frames = max(video_frames or release.frames, int(input_cfg.frames) * int(input_cfg.stride))
  name = "stand_in" if block.name == "synthetic" else block.name
  directory = os.path.join(root, f"{name}_{videos}x{frames}x{h}x{w}" + "".join(
      f"_{s}" for s in streams))
  info = {"name": name, "videos": videos, "frames": frames, "hw": (h, w),
          "record_bytes": frames * h * w * 3 * (1 + len(streams))}
  k = int(block.split_index)
  train = f"train{k or ''}"
  if os.path.exists(os.path.join(directory, records.MANIFEST)):
    return directory, dict(info, listed=records.list_shard_copies(directory, train))
  rng = np.random.default_rng(0)

  def noise() -> np.ndarray:
    return rng.integers(0, 256, (frames, h, w, 3), np.uint8)

  def examples(count: int, prefix: str):
    for i in range(count):
      yield dict(video=noise(), label=i % len(CLASSES), video_id=f"{prefix}{i:03d}",
                 streams={s: noise() for s in streams})

  test = max(videos // 4, 1)
  records.write_dataset(
      directory, name, CLASSES,
      {train: examples(videos, "train"), f"test{k or ''}": examples(test, "test")},
      fps=release.fps, examples_per_shard=max(videos // 4, 1), streams=streams,
      metadata={"short_side": short, "stand_in": "darkjax.tools.bench_input_config"},
      overwrite=True)
  return directory, dict(info, listed=records.list_shard_copies(directory, train))


def stand_in_config(config: mlc.ConfigDict, root: str, videos: int, video_frames: int | None,
                    frames: int | None = None, batch: int | None = None
                    ) -> tuple[mlc.ConfigDict, list[dict]]:
  """`config` (at `frames` / `batch`) reading stand-in records under `root`, without pretrained
  weights or evaluations; returns it and what each stand-in dataset holds."""
  out = config_lib.apply_overrides(config, {e.key: "" for e in config.required_weights.values()})
  if frames:
    out.input.frames = int(frames)
  if batch:
    out.input.batch_size = int(batch)
  out.required_weights = mlc.ConfigDict()
  out.model_init = ""
  out.evals = mlc.ConfigDict()
  streams = record_streams(out)
  written = []
  for block in config_lib.data_blocks(out):
    directory, info = write_stand_in(block, out.input, streams, root, videos, video_frames)
    block.dir, block.name = directory, info["name"]
    written.append(info)
  return out, written


def cpu_seconds() -> float:
  """User + system CPU seconds of this process (all threads) and its live descendants."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime + _descendants_cpu_seconds()


def _descendants_cpu_seconds() -> float:
  if not os.path.isdir("/proc"):
    return 0.0
  parent_of, ticks = {}, {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:   # exited meanwhile
      continue
    # After "pid (comm)": state, ppid, ..., utime (14th field of the line), stime (15th).
    parent_of[int(entry)] = int(fields[1])
    ticks[int(entry)] = int(fields[11]) + int(fields[12])
  mine, frontier = set(), {os.getpid()}
  while frontier:
    frontier = {pid for pid, parent in parent_of.items() if parent in frontier} - mine
    mine |= frontier
  return sum(ticks[pid] for pid in mine) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Row:
  """One setting's timed span: the clips produced in it, its wall and CPU seconds."""
  setting: str
  workers: int
  clips: int
  wall_s: float
  cpu_s: float

  @property
  def clips_per_s(self) -> float:
    return self.clips / self.wall_s

  @property
  def clips_per_cpu_s(self) -> float:
    return self.clips / self.cpu_s

  @property
  def cores_busy(self) -> float:
    return self.cpu_s / self.wall_s


def measure(task: Any, batch: int, workers: int, windows: int, batches: int,
            prefetch: int) -> Row:
  """Times the task's train pipeline (behind `workers` processes when > 0): see the module
  docstring."""
  ds = task.train_dataset(batch)
  sizes = pipeline.shuffle_windows(ds)   # each worker runs this graph on a slice of the files
  ds = pipeline.with_workers(ds, workers, prefetch)   # what the Trainer runs with input.workers
  producers = max(workers, 1)
  if windows and sizes and len(set(sizes)) == 1:
    per_batch = batch / len(sizes)    # the clips each window shuffle gives one batch
    timed = math.ceil(windows * sizes[0] / per_batch) * producers
    clips = windows * sizes[0] * len(sizes) * producers
    # The count is exact while a producer's batches made ahead of the consumer (its prefetch, one
    # in the making; with workers also a worker's output buffer and the parent's read-ahead) stay
    # inside the window the span ends in.
    ahead = prefetch + 2 + (2 if workers else 0)
    if per_batch * (1 + ahead) + (timed // producers * per_batch - windows * sizes[0]) > sizes[0]:
      print(f"  note: batches of {batch} are large against the shuffle window of {sizes[0]}: the "
            "span may hold part of a window more or less", flush=True)
  else:
    timed, clips = batches, batches * batch
  iterator = iter(ds)
  for _ in range(producers):   # every producer fills its first window
    next(iterator)
  start_cpu, start = cpu_seconds(), time.perf_counter()
  for _ in range(timed):
    next(iterator)
  wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
  iterator.close()
  setting = (f"{workers} worker process{'es' if workers > 1 else ''}" if workers
             else f"config's own (thread prefetch {prefetch})")
  return Row(setting, workers, clips, wall, cpu)


def h100_step(config_path: str, phase: str, batch: int, frames: int) -> H100Step | None:
  """The H100 step of `config_path` when it is run at the measured phase, batch and length."""
  stem = os.path.splitext(os.path.basename(config_path.split(":", 1)[0]))[0]
  step = H100_STEPS.get(stem)
  if step and (step.phase, step.batch, step.frames) == (phase, batch, frames):
    return step
  return None


def recommend(rows: list[Row], needed: float, prefetch: int) -> tuple[str, float]:
  """(the grain setting that keeps up with `needed` clips/s, the host cores it takes)."""
  own = [r for r in rows if not r.workers]
  pooled = [r for r in rows if r.workers] or own
  if own and needed / own[0].clips_per_cpu_s <= config_lib.OWN_PIPELINE_CORES:
    return f"config's own (thread prefetch {prefetch}, no worker processes)", (
        needed / own[0].clips_per_cpu_s)
  per_cpu_s = sum(r.clips for r in pooled) / sum(r.cpu_s for r in pooled)
  cores = needed / per_cpu_s
  return f"--config.input.workers={max(math.ceil(config_lib.WORKERS_HEADROOM * cores), 1)}", cores


def parse_workers(spec: str) -> list[int]:
  try:
    counts = [int(v) for v in spec.split(",") if v.strip()]
  except ValueError:
    counts = []
  if not counts or min(counts) < 0:
    raise SystemExit(f"bench --input --workers {spec!r}: comma-separated counts >= 0 (0: the "
                     "config's own pipeline)")
  return counts


def run(args: argparse.Namespace) -> dict[str, Any]:
  """`bench --input --config`: see the module docstring."""
  config = config_lib.apply_overrides(config_lib.load(args.config), parse_sets(args.set))
  workers = parse_workers(args.workers)
  root = args.workdir or tempfile.mkdtemp(prefix="darkjax-bench-input-")
  try:
    cfg, written = stand_in_config(config, os.path.join(root, "data"), args.videos or 16,
                                   args.video_frames, args.frames, args.batch)
    phase = task_lib.find_phase(cfg, args.phase) if args.phase else task_lib.main_phase(cfg)
    phase_cfg, task = task_lib.build_task(phase, cfg)
    spec = ops.ClipSpec.from_config(phase_cfg.input)
    batch, prefetch = int(phase_cfg.input.batch_size), int(phase_cfg.input.prefetch)
    result: dict[str, Any] = {"config": args.config, "phase": phase.name, "batch": batch,
                              "frames": spec.frames, "stand_ins": written, "rows": []}
    print(f"{args.config} phase {phase.name}: B={batch}, clips {describe(spec)}; shuffle window "
          f"{phase_cfg.input.shuffle_window}, cycle length {phase_cfg.input.cycle_length}",
          flush=True)
    for info in written:
      print(f"  stand-in {info['name']}: {info['videos']} train videos of {info['frames']} frames "
            f"{info['hw'][0]}x{info['hw'][1]}, {info['record_bytes'] / 2**20:.1f} MiB per record, "
            f"each listed {info['listed'] // info['videos']} times (an epoch of {info['listed']})",
            flush=True)
    rows = []
    for count in workers:
      row = measure(task, batch, count, args.windows, args.batches, prefetch)
      rows.append(row)
      print(f"  {row.setting}: {row.clips} clips in {row.wall_s:.1f} s = {row.clips_per_s:.1f} "
            f"clips/s; {row.cpu_s:.1f} CPU s ({row.cores_busy:.2f} cores busy) = "
            f"{row.clips_per_cpu_s:.2f} clips per CPU-second", flush=True)
    reference = h100_step(args.config, phase.name, batch, spec.frames)
    step_s = args.step_ms / 1e3 if args.step_ms else (reference.step_s if reference else None)
    if step_s is None:
      print(f"  no H100 step time for {args.config} phase {phase.name} at B={batch}, "
            f"T={spec.frames} (H100_STEPS); --step-ms gives one", flush=True)
    else:
      needed = batch / step_s
      source = ("--step-ms" if args.step_ms else "measured on one H100, docs/benchmarks.md"
                + (f"; {reference.note}" if reference.note else ""))
      setting, cores = recommend(rows, needed, prefetch)
      result.update(step_s=step_s, needed_clips_per_s=needed, recommended=setting,
                    cores_needed=cores)
      print(f"  one H100: B={batch} / {step_s * 1e3:g} ms ({source}) = {needed:.1f} clips/s; host "
            "cores needed: " + ", ".join(f"{r.setting} {needed / r.clips_per_cpu_s:.2f}"
                                         for r in rows), flush=True)
      print(f"  recommended: {setting} ({cores:.2f} host cores)", flush=True)
      if config_lib.input_workers(config) == config_lib.AUTO_WORKERS:
        auto, _ = config_lib.auto_input_workers(config, "gpu", 1, host_cores=1 << 16)
        print(f"  the config: input.workers=-1 with input.cores_per_device "
              f"{config.input.cores_per_device:g}: {auto} worker processes per H100 on a GPU "
              "host (darkjax.config.auto_input_workers; at most the host's cores less one)",
              flush=True)
    for row in rows:
      entry = dict(dataclasses.asdict(row), clips_per_s=row.clips_per_s,
                   clips_per_cpu_s=row.clips_per_cpu_s, cores_busy=row.cores_busy)
      if step_s is not None:
        entry["cores_needed"] = batch / step_s / row.clips_per_cpu_s
      result["rows"].append(entry)
    return result
  finally:
    if not args.workdir:
      shutil.rmtree(root, ignore_errors=True)


def describe(spec: ops.ClipSpec) -> str:
  size = f"{spec.crop_size}^2" if spec.crop_size else "uncropped"
  resize = (f"resize {spec.resize[0]}x{spec.resize[1]}" if spec.resize[0]
            else f"short side {spec.short_side}" if spec.short_side else "stored size")
  return (f"{spec.frames} x {size} ({spec.sampling}, stride {spec.stride}, {resize}, "
          f"{spec.train_crop} crop{', flip' if spec.flip else ''})")
