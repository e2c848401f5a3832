"""tf.train.Example codec of one clip record: encode, and decode with a zero-copy wire parser.

Each record is a `tf.train.Example` (wire-compatible copy from tensorflow_datasets.proto) with
features
  video/raw (bytes, uint8 T*H*W*C) · video/shape (int64 [T, H, W, C]) · label (int64) ·
  video_id (bytes)
and per extra stream `s` (e.g. optical flow, an enhanced copy): `s/raw`, `s/shape`, same layout.

Decoding a clip through protobuf copies its bytes; `decode_example` reads the wire format itself
and returns read-only numpy views of the record's bytes. A record the fast parser does not
understand goes through protobuf, which says what is wrong. Errors are `CorruptRecordError`s naming
the source (shard file) and byte offset given by the caller.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow_datasets.proto import tf_example_pb2

from darkjax.data.records.framing import CorruptRecordError

FEATURE_KEYS = ("video/raw", "video/shape", "label", "video_id")
RESERVED_STREAM_NAMES = frozenset({"video", "label", "video_id"})
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$")


def check_name(kind: str, name: str) -> None:
  """Dataset, split and stream names go into file and feature names: a safe character set only."""
  if not isinstance(name, str) or not NAME_PATTERN.match(name):
    raise ValueError(f"{kind} name {name!r} must match {NAME_PATTERN.pattern}")


def _check_clip(array: Any, what: str, video_id: str) -> np.ndarray:
  if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4:
    got = (f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray)
           else type(array).__name__)
    raise ValueError(f"video {video_id!r}: {what} must be a uint8 array (T, H, W, C), got {got}")
  if min(array.shape) < 1:   # a clip without frames (or pixels) cannot be sampled
    raise ValueError(f"video {video_id!r}: {what} has an empty axis, shape {array.shape}")
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
    check_name("stream", name)
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


def _wire_features(data: bytes | memoryview) -> dict[str, tuple[str, list]]:
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


def _proto_features(data: bytes | memoryview, source: str,
                    offset: int | None) -> dict[str, tuple[str, list]]:
  example = tf_example_pb2.Example()
  try:
    example.ParseFromString(bytes(data))   # a memoryview of a mapped record too
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
  if len(raw) != 1 or len(shape) != 4 or min(shape) < 1:   # (T, H, W, C): no empty axis
    raise CorruptRecordError(source, offset, f"{name!r}: {len(raw)} raw values, shape {shape}")
  raw = raw[0]
  if len(raw) != math.prod(shape):   # Python integers: a huge shape cannot wrap to a match
    raise CorruptRecordError(source, offset,
                             f"{name}/raw has {len(raw)} bytes but {name}/shape is {list(shape)}")
  return np.frombuffer(raw, np.uint8).reshape(shape)  # zero-copy view, read-only


def decode_example(data: bytes | memoryview, source: str = "<bytes>",
                   offset: int | None = None) -> dict[str, Any]:
  """Parses one record: {"video", "label" (np.int32), "video_id", <stream>: ...}; arrays are
  read-only views of `data` (see the module docstring), which may be a memoryview of a mapped
  shard (`RecordReader(mapped=True)`)."""
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

