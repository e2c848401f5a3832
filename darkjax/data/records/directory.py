"""Writing a dataset directory (shards + manifest) and reading its manifest.

A dataset directory holds shards `{name}-{split}-{index:05d}-of-{num_shards:05d}.tfrecord` and
`manifest.json`, both written atomically (tmp file + fsync + rename; the manifest is written last,
so a directory with a manifest is complete):
  {"name": str, "version": 1, "class_names": [...], "num_classes": int, "fps": float,
   "frame_shape": [H, W, C] or null if it varies, "streams": {stream: [H, W, C] or null},
   "splits": {split: {"num_examples": n, "class_counts": [videos of each class],
                      "shards": [{"file": relative name, "num_examples": n, "sha256": hex,
                                  "num_bytes": b}]}},
   "metadata": {...}, "created_by": "darkjax x.y.z"}
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

import darkjax
from darkjax import file_state, paths
from darkjax.data.records.example import RESERVED_STREAM_NAMES, check_name, encode_example
from darkjax.data.records.framing import CorruptRecordError, TFRecordWriter

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_REQUIRED_MANIFEST_KEYS = ("name", "version", "class_names", "num_classes", "fps", "splits")


class DatasetDirError(ValueError):
  """A dataset directory darkjax cannot read as one: its manifest is not valid, a shard it lists
  is missing, or it holds files of something else. The message names the file and what to do."""


class MissingShardError(DatasetDirError, FileNotFoundError):
  """A shard the manifest lists does not exist."""


class ForeignDirectoryError(DatasetDirError, FileExistsError):
  """Where a dataset would be written there is a file, or a directory holding something else."""


# ----------------------------------------------------------------------------- writing

@dataclasses.dataclass
class _SplitState:
  writer: TFRecordWriter | None = None
  shards: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # finished, "path" absolute
  num_examples: int = 0
  class_counts: dict[int, int] = dataclasses.field(default_factory=dict)


class DatasetWriter:
  """Writes examples into per-split shards and, on close, the manifest. A context manager.

  Shards are written as `{name}-{split}-{index:05d}.tfrecord` (via `.tmp` files) and renamed to
  `...-{index:05d}-of-{n:05d}.tfrecord` by close(). If the `with` body raises, every file this writer
  made is removed and no manifest is written. An existing manifest in `out_dir` is an error unless
  `overwrite=True` (then shards of the old manifest that the new one does not list are removed).
  """

  def __init__(self, out_dir: str | os.PathLike, name: str, class_names: Sequence[str], fps: float,
               examples_per_shard: int = 64, streams: Sequence[str] = (),
               metadata: Mapping | None = None, overwrite: bool = False):
    check_name("dataset", name)
    class_names = [str(c) for c in class_names]
    if not class_names or len(set(class_names)) != len(class_names):
      raise ValueError(f"dataset {name!r}: class_names must be non-empty and unique: {class_names}")
    if not fps > 0 or examples_per_shard < 1:
      raise ValueError(f"dataset {name!r}: need fps > 0 and examples_per_shard >= 1, "
                       f"got {fps}, {examples_per_shard}")
    for stream in streams:
      check_name("stream", stream)
      if stream in RESERVED_STREAM_NAMES:
        raise ValueError(f"dataset {name!r}: stream name {stream!r} is reserved")
    self.metadata = dict(metadata or {})
    try:
      json.dumps(self.metadata)
    except TypeError as error:
      raise ValueError(f"dataset {name!r}: metadata is not JSON-serialisable: {error}") from None
    self.out_dir, self.name, self.class_names = os.fspath(out_dir), name, class_names
    self.fps, self.examples_per_shard, self.streams = float(fps), examples_per_shard, tuple(streams)
    self.manifest_path = os.path.join(self.out_dir, MANIFEST)
    if paths.resolve(self.manifest_path).exists() and not overwrite:
      raise FileExistsError(f"{self.manifest_path} exists; pass overwrite=True or use another dir")
    paths.resolve(self.out_dir).mkdir(parents=True, exist_ok=True)
    self._splits: dict[str, _SplitState] = {}
    self._frame_shapes: set[tuple[int, ...]] = set()
    self._stream_shapes: dict[str, set[tuple[int, ...]]] = {s: set() for s in self.streams}
    self._manifest: dict[str, Any] | None = None

  def add(self, split: str, video: np.ndarray, label: int, video_id: str,
          streams: Mapping[str, np.ndarray] | None = None) -> None:
    if self._manifest is not None:
      raise ValueError(f"{self.out_dir}: add() after close()")
    check_name("split", split)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) \
        or not 0 <= label < len(self.class_names):
      raise ValueError(f"video {video_id!r} ({split}): label {label!r} is not in "
                       f"[0, {len(self.class_names)})")
    streams = dict(streams or {})
    if set(streams) != set(self.streams):
      raise ValueError(f"video {video_id!r} ({split}): streams {sorted(streams)} given, "
                       f"dataset declares {sorted(self.streams)}")
    data = encode_example(video, label, video_id, streams)
    state = self._splits.setdefault(split, _SplitState())
    if state.writer is None:
      shard = f"{self.name}-{split}-{len(state.shards):05d}.tfrecord"
      state.writer = TFRecordWriter(os.path.join(self.out_dir, shard))
    state.writer.write(data)
    state.num_examples += 1
    state.class_counts[int(label)] = state.class_counts.get(int(label), 0) + 1
    self._frame_shapes.add(tuple(video.shape[1:]))
    for stream, array in streams.items():
      self._stream_shapes[stream].add(tuple(array.shape[1:]))
    if state.writer.num_records >= self.examples_per_shard:
      self._finish_shard(state)

  @staticmethod
  def _finish_shard(state: _SplitState) -> None:
    writer, state.writer = state.writer, None
    writer.close()
    state.shards.append({"path": writer.path, "num_examples": writer.num_records,
                         "sha256": writer.sha256, "num_bytes": writer.num_bytes})

  def close(self) -> dict[str, Any]:
    """Finishes shards, renames them to their final names, writes and returns the manifest."""
    if self._manifest is not None:
      return self._manifest
    if not self._splits:
      raise ValueError(f"{self.out_dir}: no examples were added to dataset {self.name!r}")
    splits = {}
    for split, state in self._splits.items():
      if state.writer is not None:
        self._finish_shard(state)
      entries = []
      for index, shard in enumerate(state.shards):
        file = f"{self.name}-{split}-{index:05d}-of-{len(state.shards):05d}.tfrecord"
        _move(shard["path"], os.path.join(self.out_dir, file))
        shard["path"] = os.path.join(self.out_dir, file)
        entries.append({"file": file, **{k: v for k, v in shard.items() if k != "path"}})
      splits[split] = {"num_examples": state.num_examples,
                       "class_counts": [state.class_counts.get(c, 0)
                                        for c in range(len(self.class_names))],
                       "shards": entries}

    def common(shapes):
      return list(next(iter(shapes))) if len(shapes) == 1 else None

    manifest = {
        "name": self.name, "version": MANIFEST_VERSION, "class_names": self.class_names,
        "num_classes": len(self.class_names), "fps": self.fps,
        "frame_shape": common(self._frame_shapes),
        "streams": {s: common(shapes) for s, shapes in self._stream_shapes.items()},
        "splits": splits, "metadata": self.metadata,
        "created_by": f"darkjax {darkjax.__version__}",
    }
    old_files = self._old_shard_files()
    file_state.atomic_write_json(self.manifest_path, manifest)
    new_files = {e["file"] for split in splits.values() for e in split["shards"]}
    for file in old_files - new_files:
      paths.resolve(os.path.join(self.out_dir, file)).unlink(missing_ok=True)
    self._manifest = manifest
    return manifest

  def _old_shard_files(self) -> set[str]:
    try:
      old = json.loads(paths.resolve(self.manifest_path).read_text())
      return {e["file"] for split in old["splits"].values() for e in split["shards"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
      return set()

  def abort(self) -> None:
    """Removes every shard this writer made (finished or partial); writes no manifest."""
    for state in self._splits.values():
      if state.writer is not None:
        state.writer.abort()
        state.writer = None
      for shard in state.shards:
        paths.resolve(shard["path"]).unlink(missing_ok=True)
      state.shards.clear()

  def __enter__(self) -> DatasetWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is not None:
      if self._manifest is None:
        self.abort()
    else:
      self.close()


def _move(source: str, target: str) -> None:
  """Renames a finished shard (on an object store: a server-side copy and a delete)."""
  if paths.is_local(source):
    os.replace(source, target)
  else:
    paths.resolve(source).rename(paths.resolve(target))


def write_dataset(out_dir: str | os.PathLike, name: str, class_names: Sequence[str],
                  splits: Mapping[str, Iterable[Mapping[str, Any]]], fps: float,
                  examples_per_shard: int = 64, streams: Sequence[str] = (),
                  metadata: Mapping | None = None, overwrite: bool = False) -> dict[str, Any]:
  """Writes every split's examples ({video, label, video_id[, streams]}) and returns the manifest."""
  with DatasetWriter(out_dir, name, class_names, fps, examples_per_shard, streams, metadata,
                     overwrite) as writer:
    for split, examples in splits.items():
      count = 0
      for count, example in enumerate(examples, start=1):
        missing = {"video", "label", "video_id"} - set(example)
        if missing:
          raise ValueError(f"split {split!r} example {count - 1}: missing keys {sorted(missing)}")
        writer.add(split, example["video"], example["label"], example["video_id"],
                   example.get("streams"))
      if count == 0:
        raise ValueError(f"split {split!r} of dataset {name!r} yielded no examples")
    return writer.close()


# ----------------------------------------------------------------------------- reading

def _invalid(path: str, problem: str) -> DatasetDirError:
  return DatasetDirError(
      f"{path}: {problem}. The manifest is written last, by `python -m darkjax.data.prepare` (or "
      f"`python -m darkjax.data.synthetic`): copy the dataset directory again, or prepare it "
      f"again into an empty directory.")


def _is_count(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
  data_dir = os.fspath(data_dir)
  path = os.path.join(data_dir, MANIFEST)
  if not paths.resolve(path).is_file():
    if paths.is_local(data_dir) and os.path.isfile(data_dir):   # not to be written over
      raise FileNotFoundError(f"dataset directory {data_dir} is a file, not a dataset directory: "
                              "give the directory that holds its manifest.json")
    what = "does not exist" if not paths.resolve(data_dir).is_dir() else f"has no {MANIFEST}"
    raise FileNotFoundError(
        f"dataset directory {data_dir} {what}. Create a dataset there with "
        f"`python -m darkjax.data.synthetic --out {data_dir}` (tiny synthetic data) or "
        f"`python -m darkjax.data.prepare ... --out {data_dir}` (from real videos)")
  try:
    manifest = json.loads(paths.resolve(path).read_text())
  except ValueError as error:
    raise _invalid(path, f"not valid JSON ({error})") from None
  if not isinstance(manifest, dict):
    raise _invalid(path, "top level must be an object")
  for key in _REQUIRED_MANIFEST_KEYS:
    if key not in manifest:
      raise _invalid(path, f"missing required key {key!r}")
  if manifest["version"] != MANIFEST_VERSION:
    raise _invalid(path, f"key 'version' is {manifest['version']!r}, this darkjax reads "
                         f"{MANIFEST_VERSION}")
  if manifest["num_classes"] != len(manifest["class_names"]):
    raise _invalid(path, f"key 'num_classes' is {manifest['num_classes']} but 'class_names' "
                         f"has {len(manifest['class_names'])} entries")
  if not isinstance(manifest["splits"], dict):
    raise _invalid(path, "key 'splits' must be an object")
  for split, entry in manifest["splits"].items():
    for key in ("num_examples", "shards"):
      if not isinstance(entry, dict) or key not in entry:
        raise _invalid(path, f"missing key 'splits.{split}.{key}'")
    if not _is_count(entry["num_examples"]):
      raise _invalid(path, f"key 'splits.{split}.num_examples' is {entry['num_examples']!r}, "
                           "not a whole number")
    for index, shard in enumerate(entry["shards"]):
      for key in ("file", "num_examples"):
        if not isinstance(shard, dict) or key not in shard:
          raise _invalid(path, f"missing key 'splits.{split}.shards[{index}].{key}'")
      if not _is_count(shard["num_examples"]):
        raise _invalid(path, f"key 'splits.{split}.shards[{index}].num_examples' is "
                             f"{shard['num_examples']!r}, not a whole number")
    total = sum(shard["num_examples"] for shard in entry["shards"])
    if total != entry["num_examples"]:
      raise _invalid(path, f"key 'splits.{split}.num_examples' is {entry['num_examples']} but "
                           f"its shards hold {total}")
    counts = entry.get("class_counts")   # optional: a manifest may lack it
    if counts is not None and (
        not isinstance(counts, list) or len(counts) != manifest["num_classes"]
        or not all(_is_count(c) for c in counts) or sum(counts) != entry["num_examples"]):
      raise _invalid(path, f"key 'splits.{split}.class_counts' is {counts!r}: it must list "
                           f"{manifest['num_classes']} whole numbers (one per class) summing to "
                           f"the split's {entry['num_examples']} videos")
  manifest.setdefault("frame_shape", None)
  manifest.setdefault("streams", {})
  manifest.setdefault("metadata", {})
  return manifest


def split_files(manifest: Mapping[str, Any], data_dir: str | os.PathLike,
                split: str) -> list[tuple[str, int]]:
  """(absolute shard path, number of examples) for each shard of `split`; a missing shard, or one
  whose size is not the manifest's, raises naming it."""
  if split not in manifest["splits"]:
    raise KeyError(f"split {split!r} not in dataset {manifest.get('name')!r} at {data_dir}; "
                   f"known splits: {sorted(manifest['splits'])}")
  shards = []
  for shard in manifest["splits"][split]["shards"]:
    resolved = paths.resolve(os.path.join(os.fspath(data_dir), shard["file"]))
    path = os.fspath(resolved)
    try:   # one stat per shard (a request on an object store), which a missing file fails
      info = resolved.stat()
    except FileNotFoundError:
      info = None
    if info is None or info.is_directory:
      raise MissingShardError(
          f"shard {path} of split {split!r} listed in "
          f"{os.path.join(os.fspath(data_dir), MANIFEST)} does not exist. Copy the dataset "
          f"directory again (or rerun `python -m darkjax.data.prepare`, which resumes), then "
          f"check it with `python -m darkjax.data.records verify {os.fspath(data_dir)}`.")
    size, expected = info.length, shard.get("num_bytes")
    if expected is not None and size != int(expected):
      raise CorruptRecordError(
          path, None, f"the file has {size} bytes, the manifest says {expected}: it was cut "
          f"short or changed (`python -m darkjax.data.records verify {data_dir}` checks every "
          f"file)")
    shards.append((path, int(shard["num_examples"])))
  return shards


# The videos a benchmark's stand-in train split lists at least (`list_shard_copies`' default): an
# epoch as long as a real split's, not the few videos it was written with.
EPOCH_EXAMPLES = 1024


def list_shard_copies(directory: str, split: str, examples: int = EPOCH_EXAMPLES) -> int:
  """Lists every shard of `split` as many times as it takes for the dataset's manifest to list
  at least `examples` videos, each copy a hard link to the shard (a copy of the file where links
  are not possible): at no cost in disk or page cache. Returns the videos the split then lists;
  a split that lists enough already is left as it is. A pipeline's once-per-epoch work (grain's
  file-order shuffle calls `index_shuffle` once per file, and a call costs more the fewer the
  files: docs/benchmarks.md, "Stand-in splits as long as a real epoch") is then spread over as
  many clips as in a real split's epoch (thousands of videos, 64 to a shard), not charged to
  every few clips of a small stand-in (the benchmarks' stand-in datasets). A local directory
  only."""
  path = os.path.join(directory, MANIFEST)
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  entry = manifest["splits"][split]
  listed = int(entry["num_examples"])
  if not listed or listed >= examples:
    return listed
  copies = -(-examples // listed)
  shards = list(entry["shards"])
  for copy in range(1, copies):
    for shard in entry["shards"]:
      stem, ext = os.path.splitext(shard["file"])
      listed_copy = dict(shard, file=f"{stem}.copy{copy}{ext}")
      source, target = (os.path.join(directory, e["file"]) for e in (shard, listed_copy))
      if os.path.lexists(target):   # left by an interrupted run
        os.remove(target)
      try:
        os.link(source, target)
      except OSError:
        shutil.copyfile(source, target)
      shards.append(listed_copy)
  entry["shards"], entry["num_examples"] = shards, listed * copies
  if entry.get("class_counts") is not None:
    entry["class_counts"] = [count * copies for count in entry["class_counts"]]
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
  os.replace(path + ".tmp", path)
  return listed * copies
