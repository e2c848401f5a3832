"""Pre-decoded video datasets as TFRecord shards: write, read, verify. TensorFlow is never imported.

Framing (TFRecord): each record is `uint64 length (LE) | uint32 masked_crc32c(length bytes) | data |
uint32 masked_crc32c(data)`, masked crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2^32.

Each record is a `tf.train.Example` (wire-compatible copy from tensorflow_datasets.proto) with features
  video/raw (bytes, uint8 T*H*W*C) · video/shape (int64 [T, H, W, C]) · label (int64) · video_id (bytes)
and per extra stream `s` (e.g. optical flow, an enhanced copy): `s/raw`, `s/shape`, same layout.

A dataset directory holds shards `{name}-{split}-{index:05d}-of-{num_shards:05d}.tfrecord` and
`manifest.json`, both written atomically (tmp file + os.replace; the manifest is written last):
  {"name": str, "version": 1, "class_names": [...], "num_classes": int, "fps": float,
   "frame_shape": [H, W, C] or null if it varies, "streams": {stream: [H, W, C] or null},
   "splits": {split: {"num_examples": n, "shards": [{"file": relative name, "num_examples": n,
                                                     "sha256": hex, "num_bytes": b}]}},
   "metadata": {...}, "created_by": "darkjax x.y.z"}

Check a dataset with `python -m darkjax.data.records verify DIR` (exit status 1 on any problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import struct
import sys
from typing import Any, Iterable, Iterator, Mapping, Sequence

import google_crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tensorflow_datasets.proto import tf_example_pb2

import darkjax

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FEATURE_KEYS = ("video/raw", "video/shape", "label", "video_id")
RESERVED_STREAM_NAMES = frozenset({"video", "label", "video_id"})
_REQUIRED_MANIFEST_KEYS = ("name", "version", "class_names", "num_classes", "fps", "splits")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$")
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_CRC_MASK_DELTA = 0xA282EAD8


class CorruptRecordError(ValueError):
  """A record that cannot be read: bad CRC, truncation or an unparsable example."""

  def __init__(self, path: str, offset: int | None, reason: str):
    self.path, self.offset, self.reason = os.fspath(path), offset, reason
    where = "" if offset is None else f" at byte offset {offset}"
    super().__init__(f"{self.path}: corrupt record{where}: {reason}")

  def __reduce__(self):  # picklable across grain worker processes
    return (type(self), (self.path, self.offset, self.reason))


# ----------------------------------------------------------------------------- examples

def _check_name(kind: str, name: str) -> None:
  if not isinstance(name, str) or not _NAME_PATTERN.match(name):
    raise ValueError(f"{kind} name {name!r} must match {_NAME_PATTERN.pattern}")


def _check_clip(array: Any, what: str, video_id: str) -> np.ndarray:
  if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4:
    got = (f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray)
           else type(array).__name__)
    raise ValueError(f"video {video_id!r}: {what} must be a uint8 array (T, H, W, C), got {got}")
  return np.ascontiguousarray(array)


def _add_array(features, name: str, array: np.ndarray) -> None:
  features[f"{name}/raw"].bytes_list.value.append(array.tobytes())
  features[f"{name}/shape"].int64_list.value.extend(array.shape)


def encode_example(video: np.ndarray, label: int, video_id: str,
                   streams: Mapping[str, np.ndarray] | None = None) -> bytes:
  """Serialises one clip (uint8 T,H,W,C), its label and extra streams as a tf.train.Example."""
  if not isinstance(video_id, str) or not video_id:
    raise ValueError(f"video_id must be a non-empty str, got {video_id!r}")
  if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
    raise ValueError(f"video {video_id!r}: label must be an int, got {label!r}")
  example = tf_example_pb2.Example()
  features = example.features.feature
  _add_array(features, "video", _check_clip(video, "video", video_id))
  features["label"].int64_list.value.append(int(label))
  features["video_id"].bytes_list.value.append(video_id.encode("utf-8"))
  for name, array in (streams or {}).items():
    _check_name("stream", name)
    if name in RESERVED_STREAM_NAMES:
      raise ValueError(f"video {video_id!r}: stream name {name!r} is reserved")
    _add_array(features, name, _check_clip(array, f"stream {name!r}", video_id))
  return example.SerializeToString(deterministic=True)  # map order is per-process otherwise


_KINDS = {1: "bytes_list", 2: "float_list", 3: "int64_list"}


class _WireError(ValueError):
  """The fast parser met something it does not handle; the protobuf parser decides."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    if pos >= len(buf) or shift > 63:
      raise _WireError("bad varint")
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7


def _fields(buf: memoryview):
  """(field number, wire type, value) of one message; length-delimited values are zero-copy views."""
  pos = 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    wire_type = key & 7
    if wire_type == 2:
      size, pos = _varint(buf, pos)
      if pos + size > len(buf):
        raise _WireError("truncated field")
      yield key >> 3, 2, buf[pos:pos + size]
      pos += size
    elif wire_type == 0:
      value, pos = _varint(buf, pos)
      yield key >> 3, 0, value
    else:
      raise _WireError(f"wire type {wire_type}")


def _wire_features(data: bytes) -> dict[str, tuple[str, list]]:
  """Fast zero-copy parse of an Example with bytes / int64 features (what darkjax writes)."""
  features: dict[str, tuple[str, list]] = {}
  for number, wire, example_field in _fields(memoryview(data)):
    if number != 1 or wire != 2:
      raise _WireError("unexpected Example field")
    for entry_number, entry_wire, entry in _fields(example_field):
      if entry_number != 1 or entry_wire != 2:
        raise _WireError("unexpected Features field")
      key, feature = None, memoryview(b"")
      for number_, wire_, value in _fields(entry):
        if number_ == 1 and wire_ == 2:
          key = bytes(value).decode("utf-8")
        elif number_ == 2 and wire_ == 2:
          feature = value
        else:
          raise _WireError("unexpected map entry field")
      if key is None:
        raise _WireError("map entry without key")
      kind, values = None, []
      for kind_number, kind_wire, payload in _fields(feature):
        if kind_number not in (1, 3) or kind_wire != 2:
          raise _WireError("unsupported feature kind")
        kind = _KINDS[kind_number]
        for value_number, value_wire, value in _fields(payload) if kind_number == 1 else ():
          if value_number != 1 or value_wire != 2:
            raise _WireError("bad bytes list")
          values.append(value)
        if kind_number == 3:
          values.extend(_int64_values(payload))
      features[key] = (kind, values)
  return features


def _int64_values(payload: memoryview) -> list[int]:
  values = []
  for number, wire, value in _fields(payload):
    if number != 1:
      raise _WireError("bad int64 list")
    if wire == 0:
      items = [value]
    else:  # packed
      items, pos = [], 0
      while pos < len(value):
        item, pos = _varint(value, pos)
        items.append(item)
    values.extend(v - (1 << 64) if v >= 1 << 63 else v for v in items)
  return values


def _proto_features(data: bytes, source: str, offset: int | None) -> dict[str, tuple[str, list]]:
  example = tf_example_pb2.Example()
  try:
    example.ParseFromString(data)
  except DecodeError as error:
    raise CorruptRecordError(source, offset, f"not a tf.train.Example ({error})") from None
  out = {}
  for key, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    out[key] = (kind, list(getattr(feature, kind).value) if kind else [])
  return out


def _feature_values(features, key: str, kind: str, source: str, offset: int | None):
  if key not in features:
    raise CorruptRecordError(source, offset, f"missing feature {key!r}")
  got_kind, values = features[key]
  if got_kind != kind:
    raise CorruptRecordError(source, offset, f"feature {key!r} is not a {kind}")
  return values


def _decode_array(features, name: str, source: str, offset: int | None) -> np.ndarray:
  raw = _feature_values(features, f"{name}/raw", "bytes_list", source, offset)
  shape = tuple(_feature_values(features, f"{name}/shape", "int64_list", source, offset))
  if len(raw) != 1 or len(shape) != 4 or min(shape) < 0:
    raise CorruptRecordError(source, offset, f"{name!r}: {len(raw)} raw values, shape {shape}")
  raw = raw[0]
  if len(raw) != int(np.prod(shape)):
    raise CorruptRecordError(source, offset,
                             f"{name}/raw has {len(raw)} bytes but {name}/shape is {list(shape)}")
  return np.frombuffer(raw, np.uint8).reshape(shape)  # zero-copy view, read-only


def decode_example(data: bytes, source: str = "<bytes>", offset: int | None = None) -> dict[str, Any]:
  """Parses one record: {"video", "label" (np.int32), "video_id", <stream>: ...}; arrays are read-only
  views of `data`. A hand-written wire-format reader avoids protobuf's copy of the clip bytes; any
  record it does not understand goes through protobuf, which reports what is wrong."""
  try:
    features = _wire_features(data)
  except (_WireError, UnicodeDecodeError, IndexError):
    features = _proto_features(data, source, offset)
  labels = _feature_values(features, "label", "int64_list", source, offset)
  video_ids = _feature_values(features, "video_id", "bytes_list", source, offset)
  if len(labels) != 1 or len(video_ids) != 1:
    raise CorruptRecordError(source, offset, f"{len(labels)} labels, {len(video_ids)} video ids")
  try:
    video_id = bytes(video_ids[0]).decode("utf-8")
  except UnicodeDecodeError:
    raise CorruptRecordError(source, offset, "video_id is not UTF-8") from None
  out = {"video": _decode_array(features, "video", source, offset),
         "label": np.int32(labels[0]), "video_id": video_id}
  for key in features:
    if key.endswith("/raw") and key != "video/raw":
      out[key[:-4]] = _decode_array(features, key[:-4], source, offset)
  return out


# ----------------------------------------------------------------------------- framing

def masked_crc32c(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _frame_header(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return length + _CRC.pack(masked_crc32c(length))


def frame_record(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data and its masked CRC."""
  data = bytes(data)
  return _frame_header(data) + data + _CRC.pack(masked_crc32c(data))


class TFRecordWriter:
  """Writes framed records to `path + ".tmp"`, renamed to `path` on a successful close only."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self.tmp_path = self.path + ".tmp"
    self._file = open(self.tmp_path, "wb")
    self._sha256 = hashlib.sha256()
    self.num_records = 0
    self.num_bytes = 0

  def write(self, data: bytes) -> None:
    if self._file is None:
      raise ValueError(f"{self.path}: write after close")
    data = bytes(data)
    for piece in (_frame_header(data), data, _CRC.pack(masked_crc32c(data))):
      self._file.write(piece)
      self._sha256.update(piece)
      self.num_bytes += len(piece)
    self.num_records += 1

  @property
  def sha256(self) -> str:
    return self._sha256.hexdigest()

  def close(self) -> None:
    if self._file is None:
      return
    self._file.flush()
    os.fsync(self._file.fileno())
    self._file.close()
    self._file = None
    os.replace(self.tmp_path, self.path)

  def abort(self) -> None:
    """Drops the partial file; nothing appears under the final name."""
    if self._file is not None:
      self._file.close()
      self._file = None
      os.remove(self.tmp_path)

  def __enter__(self) -> TFRecordWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self.abort() if exc_type is not None else self.close()


def _scan_records(path: str, verify_crc: bool) -> Iterator[tuple[int, bytes | None, str | None]]:
  """Yields (offset, data, None) per good record and (offset, data or None, reason) per bad one.

  After a data-CRC mismatch the scan goes on (the length was intact); after a bad length or a
  truncation it stops, since the next record boundary is unknown.
  """
  size = os.path.getsize(path)
  offset = 0
  with open(path, "rb") as file:
    while offset < size:
      header = file.read(_HEADER.size)
      if len(header) < _HEADER.size:
        yield offset, None, f"truncated: {len(header)}-byte record header (needs {_HEADER.size})"
        return
      length, length_crc = _HEADER.unpack(header)
      if verify_crc and masked_crc32c(header[:8]) != length_crc:
        yield offset, None, "length CRC mismatch"
        return
      end = offset + _HEADER.size + length + _CRC.size
      if end > size:
        yield offset, None, f"truncated: record of {length} data bytes, file ends at {size}"
        return
      data, footer = file.read(length), file.read(_CRC.size)
      if len(data) != length or len(footer) != _CRC.size:
        yield offset, None, "truncated while reading (file changed?)"
        return
      if verify_crc and masked_crc32c(data) != _CRC.unpack(footer)[0]:
        yield offset, data, "data CRC mismatch"
      else:
        yield offset, data, None
      offset = end


def iter_tfrecord_with_offsets(path: str | os.PathLike,
                               verify_crc: bool = True) -> Iterator[tuple[int, bytes]]:
  """(byte offset of the record, data) per record; raises CorruptRecordError(path, offset)."""
  path = os.fspath(path)
  for offset, data, reason in _scan_records(path, verify_crc):
    if reason is not None:
      raise CorruptRecordError(path, offset, reason)
    yield offset, data


def iter_tfrecord(path: str | os.PathLike, verify_crc: bool = True) -> Iterator[bytes]:
  for _, data in iter_tfrecord_with_offsets(path, verify_crc):
    yield data


# ----------------------------------------------------------------------------- writing datasets

def _atomic_write_json(path: str, value: Any) -> None:
  tmp_path = path + ".tmp"
  with open(tmp_path, "w") as file:
    json.dump(value, file, indent=2)
    file.write("\n")
    file.flush()
    os.fsync(file.fileno())
  os.replace(tmp_path, path)


@dataclasses.dataclass
class _SplitState:
  writer: TFRecordWriter | None = None
  shards: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # finished, "path" absolute
  num_examples: int = 0


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
    _check_name("dataset", name)
    class_names = [str(c) for c in class_names]
    if not class_names or len(set(class_names)) != len(class_names):
      raise ValueError(f"dataset {name!r}: class_names must be non-empty and unique: {class_names}")
    if not fps > 0 or examples_per_shard < 1:
      raise ValueError(f"dataset {name!r}: need fps > 0 and examples_per_shard >= 1, "
                       f"got {fps}, {examples_per_shard}")
    for stream in streams:
      _check_name("stream", stream)
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
    if os.path.exists(self.manifest_path) and not overwrite:
      raise FileExistsError(f"{self.manifest_path} exists; pass overwrite=True or use another dir")
    os.makedirs(self.out_dir, exist_ok=True)
    self._splits: dict[str, _SplitState] = {}
    self._frame_shapes: set[tuple[int, ...]] = set()
    self._stream_shapes: dict[str, set[tuple[int, ...]]] = {s: set() for s in self.streams}
    self._manifest: dict[str, Any] | None = None

  def add(self, split: str, video: np.ndarray, label: int, video_id: str,
          streams: Mapping[str, np.ndarray] | None = None) -> None:
    if self._manifest is not None:
      raise ValueError(f"{self.out_dir}: add() after close()")
    _check_name("split", split)
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
        os.replace(shard["path"], os.path.join(self.out_dir, file))
        shard["path"] = os.path.join(self.out_dir, file)
        entries.append({"file": file, **{k: v for k, v in shard.items() if k != "path"}})
      splits[split] = {"num_examples": state.num_examples, "shards": entries}

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
    _atomic_write_json(self.manifest_path, manifest)
    new_files = {e["file"] for split in splits.values() for e in split["shards"]}
    for file in old_files - new_files:
      if os.path.exists(os.path.join(self.out_dir, file)):
        os.remove(os.path.join(self.out_dir, file))
    self._manifest = manifest
    return manifest

  def _old_shard_files(self) -> set[str]:
    try:
      with open(self.manifest_path) as file:
        old = json.load(file)
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
        if os.path.exists(shard["path"]):
          os.remove(shard["path"])
      state.shards.clear()

  def __enter__(self) -> DatasetWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is not None:
      if self._manifest is None:
        self.abort()
    else:
      self.close()


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


# ----------------------------------------------------------------------------- reading datasets

def load_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
  data_dir = os.fspath(data_dir)
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.isfile(path):
    what = "does not exist" if not os.path.isdir(data_dir) else f"has no {MANIFEST}"
    raise FileNotFoundError(
        f"dataset directory {data_dir} {what}. Create a dataset there with "
        f"`python -m darkjax.data.synthetic --out {data_dir}` (tiny synthetic data) or "
        f"`python -m darkjax.data.prepare ... --out {data_dir}` (from real videos)")
  try:
    with open(path) as file:
      manifest = json.load(file)
  except ValueError as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from None
  if not isinstance(manifest, dict):
    raise ValueError(f"{path}: top level must be an object")
  for key in _REQUIRED_MANIFEST_KEYS:
    if key not in manifest:
      raise ValueError(f"{path}: missing required key {key!r}")
  if manifest["version"] != MANIFEST_VERSION:
    raise ValueError(f"{path}: key 'version' is {manifest['version']!r}, "
                     f"this darkjax reads {MANIFEST_VERSION}")
  if manifest["num_classes"] != len(manifest["class_names"]):
    raise ValueError(f"{path}: key 'num_classes' is {manifest['num_classes']} but "
                     f"'class_names' has {len(manifest['class_names'])} entries")
  if not isinstance(manifest["splits"], dict):
    raise ValueError(f"{path}: key 'splits' must be an object")
  for split, entry in manifest["splits"].items():
    for key in ("num_examples", "shards"):
      if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"{path}: missing key 'splits.{split}.{key}'")
    for index, shard in enumerate(entry["shards"]):
      for key in ("file", "num_examples"):
        if key not in shard:
          raise ValueError(f"{path}: missing key 'splits.{split}.shards[{index}].{key}'")
    total = sum(shard["num_examples"] for shard in entry["shards"])
    if total != entry["num_examples"]:
      raise ValueError(f"{path}: key 'splits.{split}.num_examples' is {entry['num_examples']} "
                       f"but its shards hold {total}")
  manifest.setdefault("frame_shape", None)
  manifest.setdefault("streams", {})
  manifest.setdefault("metadata", {})
  return manifest


def split_files(manifest: Mapping[str, Any], data_dir: str | os.PathLike,
                split: str) -> list[tuple[str, int]]:
  """(absolute shard path, number of examples) for each shard of `split`."""
  if split not in manifest["splits"]:
    raise KeyError(f"split {split!r} not in dataset {manifest.get('name')!r} at {data_dir}; "
                   f"known splits: {sorted(manifest['splits'])}")
  files = []
  for shard in manifest["splits"][split]["shards"]:
    path = os.path.abspath(os.path.join(os.fspath(data_dir), shard["file"]))
    if not os.path.isfile(path):
      raise FileNotFoundError(f"shard {path} of split {split!r} listed in "
                              f"{os.path.join(os.fspath(data_dir), MANIFEST)} does not exist")
    files.append((path, int(shard["num_examples"])))
  return files


# ----------------------------------------------------------------------------- verification

@dataclasses.dataclass(frozen=True)
class Problem:
  file: str
  offset: int | None  # byte offset of the damaged record, None for whole-file problems
  message: str

  def __str__(self) -> str:
    where = "" if self.offset is None else f" @ byte {self.offset}"
    return f"{self.file}{where}: {self.message}"


@dataclasses.dataclass
class VerifyReport:
  data_dir: str
  splits: dict[str, dict[str, int]]  # split -> shards, expected_examples, found_examples, num_bytes
  problems: list[Problem]

  @property
  def ok(self) -> bool:
    return not self.problems

  def format(self) -> str:
    lines = [f"{self.data_dir}:"]
    for split, s in self.splits.items():
      lines.append(f"  {split}: {s['shards']} shards, {s['found_examples']}/"
                   f"{s['expected_examples']} examples readable, {s['num_bytes']} bytes")
    lines += [f"  PROBLEM {problem}" for problem in self.problems]
    lines.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)")
    return "\n".join(lines)


def _verify_example(data: bytes, path: str, offset: int, manifest: Mapping[str, Any]) -> list[str]:
  try:
    example = decode_example(data, path, offset)
  except CorruptRecordError as error:
    return [error.reason]
  problems = []
  expected = {"video": manifest["frame_shape"], **manifest["streams"]}
  for name, shape in expected.items():
    if name not in example:
      problems.append(f"video {example['video_id']!r}: no stream {name!r}")
    elif shape is not None and list(example[name].shape[1:]) != list(shape):
      problems.append(f"video {example['video_id']!r}: {name} frames are "
                      f"{list(example[name].shape[1:])}, manifest says {list(shape)}")
  if not 0 <= example["label"] < manifest["num_classes"]:
    problems.append(f"video {example['video_id']!r}: label {example['label']} not in "
                    f"[0, {manifest['num_classes']})")
  return problems


def _verify_shard(path: str, shard: Mapping[str, Any], manifest: Mapping[str, Any],
                  check_crc: bool, problems: list[Problem]) -> int:
  """Appends the shard's problems; returns its number of readable, valid examples."""
  if not os.path.isfile(path):
    problems.append(Problem(path, None, "shard file is missing"))
    return 0
  num_bytes = os.path.getsize(path)
  if "num_bytes" in shard and shard["num_bytes"] != num_bytes:
    problems.append(Problem(path, None, f"{num_bytes} bytes, manifest says {shard['num_bytes']}"))
  if "sha256" in shard:
    with open(path, "rb") as file:
      sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    if sha256 != shard["sha256"]:
      problems.append(Problem(path, None, f"sha256 {sha256} != manifest {shard['sha256']}"))
  num_records = num_valid = 0
  for offset, data, reason in _scan_records(path, check_crc):
    num_records += data is not None  # a framed record, even with a bad data CRC
    example_problems = [reason] if reason is not None else _verify_example(
        data, path, offset, manifest)
    problems.extend(Problem(path, offset, message) for message in example_problems)
    num_valid += not example_problems
  if num_records != shard["num_examples"]:
    problems.append(Problem(path, None, f"{num_records} records found, manifest says "
                                        f"{shard['num_examples']}"))
  return num_valid


def verify(data_dir: str | os.PathLike, check_crc: bool = True) -> VerifyReport:
  """Checks every shard of every split and collects all problems (file + byte offset)."""
  data_dir = os.fspath(data_dir)
  manifest = load_manifest(data_dir)
  problems: list[Problem] = []
  splits = {}
  for split, entry in manifest["splits"].items():
    summary = {"shards": len(entry["shards"]), "expected_examples": entry["num_examples"],
               "found_examples": 0, "num_bytes": 0}
    for shard in entry["shards"]:
      path = os.path.abspath(os.path.join(data_dir, shard["file"]))
      summary["found_examples"] += _verify_shard(path, shard, manifest, check_crc, problems)
      summary["num_bytes"] += os.path.getsize(path) if os.path.isfile(path) else 0
    splits[split] = summary
  return VerifyReport(data_dir, splits, problems)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m darkjax.data.records",
                                   description="Check a darkjax TFRecord dataset.")
  commands = parser.add_subparsers(dest="command", required=True)
  verify_parser = commands.add_parser("verify", help="check shards, hashes, CRCs and examples")
  verify_parser.add_argument("data_dir")
  verify_parser.add_argument("--no-crc", action="store_true", help="skip per-record CRC checks")
  args = parser.parse_args(argv)
  try:
    report = verify(args.data_dir, check_crc=not args.no_crc)
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(report.format())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
