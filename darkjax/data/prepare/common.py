"""Shared machinery of `python -m darkjax.data.prepare`: find videos, decode them with
`darkjax.data.video` (short side resized, optionally resampled to a fixed fps), and write resumable
TFRecord shards through `darkjax.data.records`.

The plan is deterministic: each split's videos, ordered by a hash of their ids (classes
interleaved: a shard holds many classes, so batches drawn from a few shards do too), are cut into
shards of `examples_per_shard`; shard `i` of split `s` is `{name}-{s}-{i:05d}-of-{n:05d}.tfrecord`.
After each finished shard its sha256, size and per-video outcome go into `OUT/prepare_state.json`
(written atomically), so a rerun skips shards whose file still matches its checksum and redoes
the rest (and any shard that had undecodable videos, in case they were replaced). The manifest
is written last.

With `flow_settings` (`--flow`) every record also gets a `flow` stream: dense optical flow of the
prepared frames, computed in the decoding workers by `darkjax.data.flow.flow_clip` (x, y, magnitude
around 128, same H x W as the frames); the manifest lists it under `streams` with its frame shape
and the method and scale under `metadata.flow`. Flow settings are part of the resume signature.

Undecodable videos (missing file, no video stream, decoder error, zero frames) are listed with their
reason in `OUT/prepare.log` and in the manifest's `metadata.failed`; more than `allow_missing` of
them stops the run with a `PrepareError` naming every one and no manifest is written.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

import darkjax
from darkjax import file_state, paths
from darkjax.data import flow, records, video

STATE_FILE = "prepare_state.json"
LOG_FILE = "prepare.log"


class PrepareError(RuntimeError):
  """A dataset cannot be prepared as asked; the message names the file, split or video."""


@dataclasses.dataclass(frozen=True)
class VideoItem:
  path: str       # absolute path of the video file (may not exist: reported as a failure)
  label: int
  video_id: str   # path relative to the dataset root, e.g. "Drink/Drink_1_1.mp4"


@dataclasses.dataclass
class Layout:
  """What a dataset module finds in `--src`: classes, split membership and where they came from."""
  name: str
  class_names: list[str]
  splits: dict[str, list[VideoItem]]
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def check(self) -> None:
    for split, items in self.splits.items():
      if not items:
        raise PrepareError(f"dataset {self.name!r}: split {split!r} lists no videos")
      for item in items:
        if not 0 <= item.label < len(self.class_names):
          raise PrepareError(f"dataset {self.name!r}: video {item.video_id} has label "
                             f"{item.label}, not in [0, {len(self.class_names)})")


# ----------------------------------------------------------------------------- finding files

def walk(src: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """`os.walk(src)` following symbolic links (a release's own layout may link its data folder,
  as ARID's `raw/data` does), each real directory once (a link back up the tree is not a loop)."""
  seen: set[str] = set()
  for directory, subdirs, names in os.walk(os.path.abspath(src), followlinks=True):
    real = os.path.realpath(directory)
    if real in seen:
      subdirs[:] = []
      continue
    seen.add(real)
    subdirs.sort()
    yield directory, subdirs, names


class VideoIndex:
  """Every video under `root`, looked up by relative path case-insensitively and with any video
  extension (split lists say `.avi` where some releases ship `.mp4`)."""

  def __init__(self, root: str):
    self.root = os.path.abspath(root)
    self.by_key: dict[str, str] = {}
    for directory, _, names in walk(self.root):
      for file in names:
        if video.is_video_file(file):
          rel = os.path.relpath(os.path.join(directory, file), self.root)
          self.by_key.setdefault(rel.lower(), rel)
          self.by_key.setdefault(os.path.splitext(rel)[0].lower(), rel)

  def resolve(self, relative: str) -> str:
    """Absolute path of `relative` (as on disk), or the literal path if no video matches."""
    relative = relative.replace("\\", "/").strip("/")
    for key in (relative.lower(), os.path.splitext(relative)[0].lower()):
      if key in self.by_key:
        return os.path.join(self.root, self.by_key[key])
    return os.path.join(self.root, relative)

  def __len__(self) -> int:
    return len({v for v in self.by_key.values()})


def holds_videos(directory: str, subdirs: Sequence[str]) -> bool:
  """Whether a sub-directory of `directory` named in `subdirs` (or a folder below it) holds a
  video."""
  for sub in subdirs:
    for _, _, names in walk(os.path.join(directory, sub)):
      if any(video.is_video_file(f) for f in names):
        return True
  return False


def find_dir_with_subdirs(src: str, names: Sequence[str], max_depth: int = 8,
                          prefer: str | None = None) -> str:
  """The directory under `src` with a sub-directory per class name (case-insensitive) that hold
  the videos. Folders of class folders without a video (extracted frames, empty copies) are passed
  over; of several with videos, the one named `prefer` (a release's own clips folder, e.g.
  `clips_v1.5`) is taken, else the choice is the user's: an error lists them."""
  wanted = {n.lower() for n in names}
  src = os.path.abspath(src)
  candidates = []
  closest: tuple[int, str, set[str]] = (0, "", set())   # most class folders, where, which
  for directory, subdirs, _ in walk(src):
    if directory[len(src):].count(os.sep) > max_depth:
      subdirs[:] = []
      continue
    present = wanted & {s.lower() for s in subdirs}
    if present == wanted:
      candidates.append((directory, [s for s in subdirs if s.lower() in wanted]))
    elif len(present) > closest[0]:
      closest = (len(present), directory, present)
  if not candidates:
    near = ""
    if closest[0]:
      missing = sorted(n for n in names if n.lower() not in closest[2])
      near = (f"; the closest, {closest[1]}, has {closest[0]} of the {len(wanted)} class folders "
              f"and lacks {missing[:8]}{' ...' if len(missing) > 8 else ''} (a folder missing "
              "from the download, not unpacked, or renamed?)")
    raise PrepareError(f"no directory under {src} has one sub-directory per class (looked for "
                       f"{sorted(names)[:5]}... to depth {max_depth}){near}")
  with_videos = [d for d, subdirs in candidates if holds_videos(d, subdirs)]
  if not with_videos:
    raise PrepareError(f"the class folders under {', '.join(d for d, _ in candidates)} hold no "
                       f"video file ({', '.join(sorted(video.VIDEO_EXTENSIONS))}); give --src the "
                       f"unpacked release with its videos")
  if len(with_videos) > 1 and prefer is not None:
    preferred = [d for d in with_videos if os.path.basename(d).lower() == prefer.lower()]
    with_videos = preferred or with_videos
  if len(with_videos) > 1:
    raise PrepareError(f"several folders under {src} hold the class folders with videos: "
                       f"{with_videos}; give --src the one release folder to prepare")
  return with_videos[0]


def find_files(src: str, predicate) -> list[str]:
  """Sorted absolute paths of files under `src` (links followed) whose base name satisfies
  `predicate`."""
  found = []
  for directory, _, names in walk(src):
    found += [os.path.join(directory, f) for f in names if predicate(f)]
  return sorted(found)


def read_lines(path: str) -> list[tuple[int, list[str]]]:
  """(line number, whitespace-split fields) of the non-empty lines of a text file."""
  with open(path, encoding="utf-8-sig", errors="replace") as file:
    return [(n, line.split()) for n, line in enumerate(file, start=1) if line.strip()]


# ----------------------------------------------------------------------------- decoding

def decode_video(path: str, short_side: int, fps: float = 0.0) -> tuple[np.ndarray, float]:
  """`darkjax.data.video.decode_video`, failing with a PrepareError (what the runner reports)."""
  try:
    return video.decode_video(path, short_side, fps)
  except video.VideoDecodeError as error:
    raise PrepareError(str(error)) from None


@dataclasses.dataclass(frozen=True)
class FlowSettings:
  """The optical-flow stream to add to every record (`--flow`, `--flow-method`, `--flow-scale`)."""
  method: str = flow.DEFAULT_METHOD
  scale: float = flow.DEFAULT_SCALE

  def check(self) -> None:
    try:
      flow.check_method(self.method)
    except flow.FlowError as error:
      raise PrepareError(str(error)) from None
    if not self.scale > 0:
      raise PrepareError(f"--flow-scale must be > 0, got {self.scale}")

  def as_json(self) -> dict[str, Any]:
    return {"stream": flow.STREAM, "method": self.method, "scale": self.scale,
            "encoding": flow.ENCODING}


def _decode_item(args: tuple[VideoItem, int, float, FlowSettings | None]
                 ) -> tuple[VideoItem, Any, dict[str, np.ndarray], float, str | None]:
  item, short_side, fps, flow_settings = args
  try:
    clip, clip_fps = decode_video(item.path, short_side, fps)
  except PrepareError as error:
    return item, None, {}, 0.0, str(error)
  streams = {}
  if flow_settings is not None:
    try:
      streams[flow.STREAM] = flow.flow_clip(clip, flow_settings.method, flow_settings.scale)
    except (flow.FlowError, cv2.error) as error:
      return item, None, {}, 0.0, f"{item.path}: optical flow failed ({error})"
  return item, clip, streams, clip_fps, None


# ----------------------------------------------------------------------------- the plan

@dataclasses.dataclass
class ShardPlan:
  split: str
  file: str
  items: list[VideoItem]


# How a split's videos are ordered into shards (the manifest's `metadata.shard_order`): by a hash
# of their ids, a fixed order that interleaves the classes. Sorted by id, as before, a shard held
# one or two class folders, and the training pipeline, which reads a few shards at a time through
# a window shuffle, drew batches of a few classes each.
SHARD_ORDER = "sha256_of_video_id"


def _shard_key(item: VideoItem) -> str:
  return hashlib.sha256(item.video_id.encode("utf-8")).hexdigest()


def plan_shards(layout: Layout, examples_per_shard: int) -> list[ShardPlan]:
  plans = []
  for split, items in layout.splits.items():
    items = sorted(items, key=_shard_key)
    count = max((len(items) + examples_per_shard - 1) // examples_per_shard, 1)
    for index in range(count):
      chunk = items[index * examples_per_shard:(index + 1) * examples_per_shard]
      plans.append(ShardPlan(split, f"{layout.name}-{split}-{index:05d}-of-{count:05d}.tfrecord",
                             chunk))
  return plans


def _signature_content(layout: Layout, short_side: int, fps: float, examples_per_shard: int,
                       flow_settings: FlowSettings | None = None) -> dict[str, Any]:
  content = {"name": layout.name, "classes": layout.class_names, "shard_order": SHARD_ORDER,
             "short_side": short_side, "fps": fps, "per_shard": examples_per_shard,
             "splits": {s: sorted((i.video_id, i.label) for i in items)
                        for s, items in layout.splits.items()}}
  if flow_settings is not None:  # absent without --flow: earlier runs' signatures stay valid
    content["flow"] = {"method": flow_settings.method, "scale": flow_settings.scale}
  return content


# What each part of the resume signature is, as a user names it.
_SIGNATURE_PARTS = {"name": "the dataset's name (--dataset, or --name)",
                    "classes": "the classes", "short_side": "--short-side", "fps": "--fps",
                    "per_shard": "--examples-per-shard",
                    "flow": "--flow / --flow-method / --flow-scale",
                    "splits": "the splits' videos (split lists, or --num-splits, "
                              "--test-fraction, --val-fraction, --seed, --group-pattern)"}


def _options(content: dict[str, Any]) -> dict[str, str]:
  """The signature's parts, each as a short digest (kept in the state to say what changed)."""
  return {key: file_state.sha256_json(value)[:16] for key, value in content.items()}


def _changed(state: dict[str, Any], options: dict[str, str]) -> str:
  before = state.get("options")
  if not isinstance(before, dict):   # a state written before it kept its options
    return "dataset, --short-side, --fps, --flow options, split lists or options"
  changed = [key for key in _SIGNATURE_PARTS if before.get(key) != options.get(key)]
  return ", ".join(_SIGNATURE_PARTS[key] for key in changed) or "the shard order"


def _load_state(out_dir: str, signature: str, overwrite: bool,
                options: dict[str, str]) -> dict[str, Any]:
  path = os.path.join(out_dir, STATE_FILE)
  fresh = {"signature": signature, "options": options, "shards": {}}
  if not paths.resolve(path).exists():
    if paths.resolve(os.path.join(out_dir, records.MANIFEST)).exists() and not overwrite:
      raise PrepareError(f"{out_dir} already holds a dataset ({records.MANIFEST}) not made by this "
                         f"prepare run; use another --out or pass --overwrite")
    return fresh
  try:
    state = json.loads(paths.resolve(path).read_text(encoding="utf-8"))
  except ValueError as error:
    raise PrepareError(f"{path}: unreadable resume state ({error}); delete it to start over") \
        from None
  if state.get("signature") != signature:
    if not overwrite:
      raise PrepareError(f"{path}: was made with other options or another source tree (what "
                         f"differs: {_changed(state, options)}); give the earlier ones to "
                         f"resume, another --out, or --overwrite to start over")
    return fresh
  return state


def _shard_done(out_dir: str, entry: dict[str, Any] | None) -> bool:
  if not entry or entry.get("failed"):
    return False
  path = os.path.join(out_dir, entry["file"])
  return (paths.resolve(path).is_file() and paths.size(path) == entry["num_bytes"]
          and file_state.sha256_file(path) == entry["sha256"])


def _decoded_stream(jobs: list[tuple], workers: int) -> Iterator:
  if workers <= 1:
    yield from map(_decode_item, jobs)
    return
  # At most 2 decoded clips per worker wait in memory (pool.map would submit every job at once).
  # spawn: forking a process that has started JAX / BLAS threads can deadlock.
  pool = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"))
  in_flight: collections.deque = collections.deque()
  try:
    for job in jobs:
      in_flight.append(pool.submit(_decode_item, job))
      if len(in_flight) >= 2 * workers:
        yield in_flight.popleft().result()
    while in_flight:
      yield in_flight.popleft().result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- running

def prepare(layout: Layout, out_dir: str, short_side: int = 128, fps: float = 0.0,
            workers: int = 1, allow_missing: int = 0, examples_per_shard: int = 32,
            overwrite: bool = False, progress: bool = True,
            flow_settings: FlowSettings | None = None) -> dict[str, Any]:
  """Writes `layout` as a dataset in `out_dir` (resuming earlier work); returns its manifest.
  With `flow_settings` every record also holds the optical-flow stream `flow`."""
  layout.check()
  check_videos_exist(layout, allow_missing)
  if flow_settings is not None:
    flow_settings.check()
  out_dir = os.fspath(paths.resolve(out_dir))  # a local directory or a URL (gs://...)
  paths.resolve(out_dir).mkdir(parents=True, exist_ok=True)
  content = _signature_content(layout, short_side, fps, examples_per_shard, flow_settings)
  signature, options = file_state.sha256_json(content), _options(content)
  state = _load_state(out_dir, signature, overwrite, options)
  state.setdefault("options", options)   # a state resumed from before it kept them
  manifest = paths.resolve(os.path.join(out_dir, records.MANIFEST))
  if overwrite and not state["shards"] and manifest.exists():
    # Starting over: the shards about to be written replace the old dataset's, which its manifest
    # would go on describing (a failed or interrupted run left a directory that looked complete).
    manifest.unlink()
    removed = (f"prepare --overwrite: removed {manifest}: {out_dir} holds no dataset until this "
               "run writes its manifest")
    print(removed, file=sys.stderr, flush=True)
    with paths.open_append(os.path.join(out_dir, LOG_FILE)) as log:
      log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {removed}\n")
  plans = plan_shards(layout, examples_per_shard)
  pending = [p for p in plans if not _shard_done(out_dir, state["shards"].get(p.file))]
  skipped = len(plans) - len(pending)
  log_path = os.path.join(out_dir, LOG_FILE)
  total = sum(len(p.items) for p in pending)
  with paths.open_append(log_path) as log:
    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} prepare {layout.name}: {len(plans)} shards, "
              f"{skipped} already done (checksums verified), {total} videos to decode\n")
    jobs = [(item, short_side, fps, flow_settings) for plan in pending for item in plan.items]
    decoded = _decoded_stream(jobs, workers)
    bar = tqdm(total=total, desc=f"prepare {layout.name}", unit="video", disable=not progress,
               dynamic_ncols=True)
    try:
      for plan in pending:
        state["shards"][plan.file] = _write_shard(out_dir, plan, decoded, log, bar)
        file_state.atomic_write_json(os.path.join(out_dir, STATE_FILE), state)
    finally:
      bar.close()
      decoded.close()
  manifest = _finish(layout, out_dir, state, plans, allow_missing, short_side, fps, log_path,
                     flow_settings)
  if overwrite:
    _remove_other_shards(out_dir, {p.file for p in plans}, log_path)
  return manifest


def _remove_other_shards(out_dir: str, keep: set[str], log_path: str) -> None:
  """After an --overwrite, the shards of what the directory held before (another --name, other
  splits) that no manifest lists any more: removed, each logged."""
  if "://" in out_dir:
    return
  for name in sorted(os.listdir(out_dir)):
    if name.endswith(".tfrecord") and name not in keep:
      os.remove(os.path.join(out_dir, name))
      with paths.open_append(log_path) as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} --overwrite: removed {name}, a shard "
                  f"of the dataset this one replaced\n")


def check_videos_exist(layout: Layout, allow_missing: int) -> None:
  """Fails before any decoding when more of the videos the split lists name are missing than
  --allow-missing tolerates (the decode would fail at its end, after hours on a real dataset)."""
  items = {i.video_id: i.path for split in layout.splits.values() for i in split}
  missing = sorted(v for v, path in items.items() if not os.path.isfile(path))
  if len(missing) <= allow_missing:
    return
  examples = ", ".join(items[v] for v in missing[:5]) + (" ..." if len(missing) > 5 else "")
  if len(missing) == len(items):
    raise PrepareError(f"dataset {layout.name!r}: none of the {len(items)} videos its split lists "
                       f"name exists ({examples}); give --src the unpacked release with its "
                       f"videos (nothing was decoded)")
  raise PrepareError(f"dataset {layout.name!r}: {len(missing)} of the {len(items)} videos its "
                     f"split lists name do not exist, under any video extension ({examples}, as "
                     f"the lists name them); nothing was decoded. Restore "
                     f"them, or pass --allow-missing {len(missing)} to leave them out (listed in "
                     f"the manifest's metadata.failed)")


def _write_shard(out_dir: str, plan: ShardPlan, decoded: Iterator, log, bar) -> dict[str, Any]:
  failed, shapes, rates, labels = [], set(), [], []
  stream_shapes: dict[str, set[tuple[int, ...]]] = {}
  with records.TFRecordWriter(os.path.join(out_dir, plan.file)) as writer:
    for _ in plan.items:
      item, clip, streams, clip_fps, reason = next(decoded)
      bar.update(1)
      if reason is not None:
        failed.append({"video": item.video_id, "split": plan.split, "reason": reason})
        log.write(f"FAILED {plan.split} {item.video_id}: {reason}\n")
        log.flush()
        continue
      writer.write(records.encode_example(clip, item.label, item.video_id, streams))
      labels.append(int(item.label))
      shapes.add(tuple(clip.shape[1:]))
      for name, array in streams.items():
        stream_shapes.setdefault(name, set()).add(tuple(array.shape[1:]))
      rates.append(round(clip_fps, 3))
  return {"file": plan.file, "split": plan.split, "num_examples": writer.num_records,
          "labels": labels,
          "sha256": writer.sha256, "num_bytes": writer.num_bytes, "failed": failed,
          "frame_shapes": sorted(list(s) for s in shapes), "fps": rates,
          "stream_shapes": {n: sorted(list(s) for s in v) for n, v in stream_shapes.items()}}


def _finish(layout: Layout, out_dir: str, state: dict[str, Any], plans: list[ShardPlan],
            allow_missing: int, short_side: int, fps: float, log_path: str,
            flow_settings: FlowSettings | None = None) -> dict[str, Any]:
  entries = [state["shards"][p.file] for p in plans]
  failed = [f for e in entries for f in e["failed"]]
  failed_videos = sorted({f["video"] for f in failed})
  if len(failed_videos) > allow_missing:
    listing = "\n".join(f"  {f['video']} ({f['split']}): {f['reason']}" for f in failed)
    raise PrepareError(
        f"{len(failed_videos)} video(s) of {layout.name!r} could not be decoded "
        f"(--allow-missing {allow_missing}); no manifest written. Fix or replace them and rerun "
        f"(finished shards are kept), or pass --allow-missing {len(failed_videos)}. "
        f"Also listed in {log_path}:\n{listing}")
  splits: dict[str, Any] = {}
  for entry in entries:
    split = splits.setdefault(entry["split"], {"num_examples": 0, "shards": []})
    split["num_examples"] += entry["num_examples"]
    split["shards"].append({k: entry[k] for k in ("file", "num_examples", "sha256", "num_bytes")})
  for name, split in splits.items():   # none where a resumed shard's state lacks its labels
    labelled = [e.get("labels") for e in entries if e["split"] == name]
    if all(labels is not None for labels in labelled):
      split["class_counts"] = np.bincount([label for labels in labelled for label in labels],
                                          minlength=len(layout.class_names)).tolist()
  shapes = {tuple(s) for e in entries for s in e["frame_shapes"]}
  stream_names = [flow.STREAM] if flow_settings is not None else []
  stream_shapes = {name: {tuple(s) for e in entries
                          for s in e.get("stream_shapes", {}).get(name, [])}
                   for name in stream_names}
  rates = collections.Counter(r for e in entries for r in e["fps"])
  manifest = {
      "name": layout.name, "version": records.MANIFEST_VERSION, "class_names": layout.class_names,
      "num_classes": len(layout.class_names),
      "fps": float(fps or (rates.most_common(1)[0][0] if rates else 30.0)),
      "frame_shape": list(next(iter(shapes))) if len(shapes) == 1 else None,
      "streams": {name: list(next(iter(s))) if len(s) == 1 else None
                  for name, s in stream_shapes.items()},
      "splits": splits,
      "metadata": {**layout.metadata, "short_side": short_side, "resampled_fps": fps or None,
                   "shard_order": SHARD_ORDER,
                   "failed": failed, "source_fps": sorted(rates),
                   **({"flow": flow_settings.as_json()} if flow_settings is not None else {})},
      "created_by": f"darkjax {darkjax.__version__}",
  }
  file_state.atomic_write_json(os.path.join(out_dir, records.MANIFEST), manifest)
  with paths.open_append(log_path) as log:
    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} wrote {records.MANIFEST}: "
              + ", ".join(f"{s} {v['num_examples']}" for s, v in splits.items())
              + f"; {len(failed_videos)} undecodable video(s)\n")
  return manifest
