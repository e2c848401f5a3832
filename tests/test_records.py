"""TFRecord framing, example encoding, dataset writing and verification (darkjax.data.records)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys

import google_crc32c
import numpy as np
import pytest
from tqdm import tqdm

from darkjax.data import prepared, records
from darkjax.data.records import example as example_codec

CLASSES = ("drink", "jump", "run")


def _masked(data: bytes) -> int:
  """The TFRecord masked CRC, written out from the spec independently of records.framing."""
  crc = google_crc32c.value(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32


def _independent_frame(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", _masked(length)) + data + struct.pack("<I", _masked(data)))


def _example(index: int, frames: int = 3, with_flow: bool = True) -> dict:
  rng = np.random.default_rng(index)
  example = {"video": rng.integers(0, 256, (frames, 4, 5, 3), dtype=np.uint8),
             "label": index % len(CLASSES), "video_id": f"clip_{index:03d}"}
  if with_flow:
    example["streams"] = {"flow": rng.integers(0, 256, (frames - 1, 4, 5, 2), dtype=np.uint8)}
  return example


def _write(tmp_path, num_train=5, num_test=2, **kwargs):
  splits = {"train": [_example(i) for i in range(num_train)],
            "test": [_example(100 + i) for i in range(num_test)]}
  out_dir = str(tmp_path / "ds")
  manifest = records.write_dataset(out_dir, "toy", CLASSES, splits, fps=30.0,
                                   examples_per_shard=2, streams=("flow",),
                                   metadata={"source": "unit test"}, **kwargs)
  return out_dir, manifest, splits


def _record_offsets(path: str) -> list[int]:
  """Record start offsets, from the length fields alone (independent of records.framing)."""
  offsets, offset, size = [], 0, os.path.getsize(path)
  with open(path, "rb") as file:
    while offset < size:
      offsets.append(offset)
      file.seek(offset)
      (length,) = struct.unpack("<Q", file.read(8))
      offset += 16 + length
  return offsets


def _flip_byte(path: str, position: int) -> None:
  with open(path, "r+b") as file:
    file.seek(position)
    byte = file.read(1)
    file.seek(position)
    file.write(bytes([byte[0] ^ 0x40]))


def test_frame_record_matches_spec_bytes():
  data = b"dark"
  length_crc = _masked(struct.pack("<Q", 4))
  expected = (bytes([4, 0, 0, 0, 0, 0, 0, 0]) + length_crc.to_bytes(4, "little") + b"dark"
              + _masked(b"dark").to_bytes(4, "little"))
  assert records.frame_record(data) == expected
  # crc32c check value from RFC 3720 ("123456789" -> 0xE3069283) pins the CRC variant itself.
  assert google_crc32c.value(b"123456789") == 0xE3069283
  crc = 0xE3069283
  assert records.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def test_iter_tfrecord_reads_independently_framed_file(tmp_path):
  payloads = [b"", b"a", bytes(range(256)) * 40, b"last"]
  path = tmp_path / "x.tfrecord"
  path.write_bytes(b"".join(_independent_frame(p) for p in payloads))
  assert list(records.iter_tfrecord(path)) == payloads
  assert [o for o, _ in records.iter_tfrecord_with_offsets(path)] == _record_offsets(str(path))


@pytest.mark.parametrize("mapped", [False, True], ids=["read", "mapped"])
def test_record_reader_resumes_at_an_offset_and_names_damage(tmp_path, mapped):
  payloads = [b"zero", bytes(range(200)), b"", b"three"]
  path = str(tmp_path / "r.tfrecord")
  with open(path, "wb") as file:
    file.write(b"".join(_independent_frame(p) for p in payloads))
  offsets = _record_offsets(path)
  with records.RecordReader(path, mapped=mapped) as reader:
    assert [reader.read(), reader.read()] == payloads[:2]
    assert reader.offset == offsets[2]
  resumed = records.RecordReader(path, mapped=mapped)
  resumed.seek(offsets[2])
  assert [resumed.read(), resumed.read(), resumed.read()] == payloads[2:] + [None]
  resumed.close()
  _flip_byte(path, offsets[3] + 12 + 1)  # inside the data of the last record
  reader = records.RecordReader(path, offset=offsets[3], mapped=mapped)
  with pytest.raises(records.CorruptRecordError, match="data CRC mismatch") as info:
    reader.read()
  assert (info.value.path, info.value.offset) == (path, offsets[3])
  assert records.RecordReader(path, verify_crc=False, offset=offsets[3],
                              mapped=mapped).read() != payloads[3]
  _flip_byte(path, offsets[1] + 3)  # the length field of the second record
  with pytest.raises(records.CorruptRecordError, match="length CRC mismatch"):
    records.RecordReader(path, offset=offsets[1], mapped=mapped).read()
  with open(path, "r+b") as file:
    file.truncate(offsets[3] + 12 + 3)   # the last record's header whole, its data cut
  with pytest.raises(records.CorruptRecordError, match="truncated: record of 5 data bytes"):
    records.RecordReader(path, offset=offsets[3], mapped=mapped).read()
  with open(path, "r+b") as file:
    file.truncate(offsets[3] + 5)
  with pytest.raises(records.CorruptRecordError, match=r"byte offset \d+: truncated: 5-byte"):
    records.RecordReader(path, offset=offsets[3], mapped=mapped).read()
  with pytest.raises(FileNotFoundError, match="missing.tfrecord"):
    records.RecordReader(str(tmp_path / "missing.tfrecord"), mapped=mapped).read()
  empty = tmp_path / "empty.tfrecord"
  empty.write_bytes(b"")
  assert records.RecordReader(str(empty), mapped=mapped).read() is None


def test_mapped_reader_returns_views_of_the_file_that_outlive_it(tmp_path, monkeypatch):
  # What the input pipelines read: each record a read-only view of the mapped shard, no copy;
  # its decoded frames views too, valid after the reader is closed; CRCs of records larger than
  # the checksum's pieces (several pieces and a partial one) checked as over bytes.
  piece = records.framing._CRC_PIECE   # pylint: disable=protected-access
  examples = [dict(_example(i, frames=2), video=np.random.default_rng(i).integers(
      0, 256, (20, 100, 110, 3), dtype=np.uint8)) for i in range(2)]
  payloads = [records.encode_example(e["video"], e["label"], e["video_id"], e["streams"])
              for e in examples]
  assert len(payloads[0]) > 2 * piece and len(payloads[0]) % piece
  path = str(tmp_path / "v.tfrecord")
  with open(path, "wb") as file:
    file.write(b"".join(_independent_frame(p) for p in payloads))
  reader = records.RecordReader(path, mapped=True)
  first = reader.read()
  assert isinstance(first, memoryview) and first.readonly and bytes(first) == payloads[0]
  assert records.masked_crc32c(first) == records.masked_crc32c(payloads[0]) == _masked(payloads[0])
  decoded = records.decode_example(first, path)
  assert not decoded["video"].flags.writeable and not decoded["video"].flags.owndata
  second = reader.read()
  reader.close()
  del first, second
  np.testing.assert_array_equal(decoded["video"], examples[0]["video"])
  np.testing.assert_array_equal(decoded["flow"], examples[0]["streams"]["flow"])
  assert decoded["video_id"] == examples[0]["video_id"]
  # a record past the first piece with one byte flipped: the mismatch found as when read whole
  offset = _record_offsets(path)[1]
  _flip_byte(path, offset + 12 + piece + 7)
  with pytest.raises(records.CorruptRecordError, match="data CRC mismatch") as info:
    records.RecordReader(path, offset=offset, mapped=True).read()
  assert info.value.offset == offset
  # a URL (here a path taken for one) is never mapped: read through darkjax.paths as before
  monkeypatch.setattr(records.framing.paths, "is_local", lambda p: False)
  assert isinstance(records.RecordReader(path, mapped=True).read(), bytes)


def test_tfrecord_writer_bytes_sha_and_atomic_rename(tmp_path):
  path = str(tmp_path / "w.tfrecord")
  with records.TFRecordWriter(path) as writer:
    writer.write(b"one")
    writer.write(b"two")
    assert not os.path.exists(path) and os.path.exists(path + ".tmp")
  content = open(path, "rb").read()
  assert content == _independent_frame(b"one") + _independent_frame(b"two")
  assert writer.num_records == 2 and writer.num_bytes == len(content)
  assert writer.sha256 == hashlib.sha256(content).hexdigest()
  assert not os.path.exists(path + ".tmp")
  with pytest.raises(RuntimeError):
    with records.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
      writer.write(b"partial")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == ["w.tfrecord"]


def test_example_round_trip_and_errors():
  example = _example(7)
  data = records.encode_example(example["video"], example["label"], example["video_id"],
                                example["streams"])
  decoded = records.decode_example(data)
  assert set(decoded) == {"video", "label", "video_id", "flow"}
  np.testing.assert_array_equal(decoded["video"], example["video"])
  np.testing.assert_array_equal(decoded["flow"], example["streams"]["flow"])
  assert decoded["label"].dtype == np.int32 and decoded["label"] == 1
  assert decoded["video_id"] == "clip_007"
  with pytest.raises(ValueError, match="clip_x.*uint8"):
    records.encode_example(example["video"].astype(np.float32), 0, "clip_x")
  with pytest.raises(ValueError, match="clip_y.*'flow'"):
    records.encode_example(example["video"], 0, "clip_y", {"flow": example["video"][0]})
  with pytest.raises(records.CorruptRecordError, match="shard-7.*not a tf.train.Example"):
    records.decode_example(b"\xff\xff\xff", source="shard-7")
  # A raw payload whose size disagrees with its shape: rebuild the proto with a wrong shape.
  from tensorflow_datasets.proto import tf_example_pb2
  proto = tf_example_pb2.Example.FromString(data)
  proto.features.feature["video/shape"].int64_list.value[0] = 4
  with pytest.raises(records.CorruptRecordError, match=r"f\.tfrecord.*byte offset 12.*video/raw"):
    records.decode_example(proto.SerializeToString(), source="f.tfrecord", offset=12)
  # A shape whose product wraps around in int64 (2**64 = 0 bytes), and one without frames.
  shape = proto.features.feature["video/shape"].int64_list.value
  shape[:] = [2 ** 32, 2 ** 32, 1, 1]
  proto.features.feature["video/raw"].bytes_list.value[0] = b""
  with pytest.raises(records.CorruptRecordError, match=r"f\.tfrecord.*video/raw has 0 bytes"):
    records.decode_example(proto.SerializeToString(), source="f.tfrecord", offset=12)
  shape[:] = [0, 8, 8, 3]
  with pytest.raises(records.CorruptRecordError, match=r"f\.tfrecord.*'video'.*shape \(0, 8"):
    records.decode_example(proto.SerializeToString(), source="f.tfrecord", offset=12)
  with pytest.raises(ValueError, match="clip_z.*empty axis"):
    records.encode_example(example["video"][:0], 0, "clip_z")
  error = records.CorruptRecordError("f.tfrecord", 99, "data CRC mismatch")
  clone = pickle.loads(pickle.dumps(error))
  assert (clone.path, clone.offset, str(clone)) == ("f.tfrecord", 99, str(error))


def test_dataset_round_trip_and_manifest(tmp_path):
  out_dir, manifest, splits = _write(tmp_path)
  assert manifest == records.load_manifest(out_dir)
  assert manifest["num_classes"] == 3 and manifest["frame_shape"] == [4, 5, 3]
  assert manifest["streams"] == {"flow": [4, 5, 2]} and manifest["version"] == 1
  assert manifest["metadata"] == {"source": "unit test"}
  train = manifest["splits"]["train"]
  assert train["num_examples"] == 5 and [s["num_examples"] for s in train["shards"]] == [2, 2, 1]
  for split, examples in splits.items():   # each class's videos in the part
    labels = [e["label"] for e in examples]
    assert manifest["splits"][split]["class_counts"] == [labels.count(c) for c in range(3)]
  assert train["shards"][0]["file"] == "toy-train-00000-of-00003.tfrecord"
  assert sorted(os.listdir(out_dir)) == sorted(
      ["manifest.json"] + [s["file"] for split in manifest["splits"].values()
                           for s in split["shards"]])
  for split, examples in splits.items():
    files = records.split_files(manifest, out_dir, split)
    assert sum(n for _, n in files) == len(examples)
    decoded = [records.decode_example(d, path) for path, _ in files
               for d in records.iter_tfrecord(path)]
    assert [d["video_id"] for d in decoded] == [e["video_id"] for e in examples]
    for got, want in zip(decoded, examples):
      np.testing.assert_array_equal(got["video"], want["video"])
      np.testing.assert_array_equal(got["flow"], want["streams"]["flow"])
      assert got["label"] == want["label"]
    for (path, _), entry in zip(files, manifest["splits"][split]["shards"]):
      content = open(path, "rb").read()
      assert entry["sha256"] == hashlib.sha256(content).hexdigest()
      assert entry["num_bytes"] == len(content)
  report = records.verify(out_dir)
  assert report.ok, report.format()
  assert report.splits["train"] == {"shards": 3, "expected_examples": 5, "found_examples": 5,
                                    "num_bytes": sum(s["num_bytes"] for s in train["shards"])}


def test_flipped_byte_reported_with_file_and_record_offset(tmp_path):
  out_dir, manifest, _ = _write(tmp_path)
  path = records.split_files(manifest, out_dir, "train")[1][0]
  second = _record_offsets(path)[1]
  _flip_byte(path, second + 12 + 30)  # inside the data of the second record
  with pytest.raises(records.CorruptRecordError) as info:
    list(records.iter_tfrecord(path))
  assert (info.value.path, info.value.offset) == (path, second)
  assert f"byte offset {second}" in str(info.value) and path in str(info.value)
  report = records.verify(out_dir)
  located = {(p.file, p.offset) for p in report.problems}
  assert (path, second) in located and (path, None) in located  # + sha256 mismatch
  assert all(p.file == path for p in report.problems)
  assert report.splits["train"]["found_examples"] == 4
  # Damage to a length field loses that record; the scan finds the next one's header and counts
  # and checks the records after it.
  first = records.split_files(manifest, out_dir, "test")[0][0]
  after = _record_offsets(first)[1]
  _flip_byte(first, 2)
  report = records.verify(out_dir)
  lost = [p for p in report.problems if p.file == first and p.offset == 0]
  assert [p.message for p in lost] == [f"length CRC mismatch: this record is lost; the next intact "
                                       f"record starts at byte {after} ({after} bytes skipped)"]
  assert report.splits["test"]["found_examples"] == 1
  assert any(p.file == first and p.message == "1 records found, manifest says 2"
             for p in report.problems)
  assert (path, second) in {(p.file, p.offset) for p in report.problems}
  # the last record's length damaged (the first one's mended): nothing after it to find
  _flip_byte(first, 2)
  _flip_byte(first, after + 3)
  report = records.verify(out_dir)
  assert any(p.file == first and p.offset == after and p.message.endswith(
      "this record is lost, and no intact record follows it") for p in report.problems)
  assert report.splits["test"]["found_examples"] == 1   # the first, before the damage


def test_truncated_shard_and_sha_mismatch_reported(tmp_path):
  out_dir, manifest, _ = _write(tmp_path)
  path = records.split_files(manifest, out_dir, "train")[0][0]
  last = _record_offsets(path)[-1]
  with open(path, "r+b") as file:
    file.truncate(os.path.getsize(path) - 10)
  with pytest.raises(records.CorruptRecordError, match="truncated") as info:
    list(records.iter_tfrecord(path))
  assert info.value.offset == last
  messages = [str(p) for p in records.verify(out_dir).problems]
  assert any(f"@ byte {last}: truncated" in m for m in messages)
  assert any("sha256" in m for m in messages) and any("1 records found" in m for m in messages)

  # Valid framing and CRCs, different content: only the sha256 / size checks can catch it.
  out_dir, manifest, _ = _write(tmp_path / "again")
  path = records.split_files(manifest, out_dir, "test")[0][0]
  example = _example(55)
  data = records.encode_example(example["video"], 0, "other", example["streams"])
  with open(path, "wb") as file:
    file.write(_independent_frame(data) * 2)
  problems = records.verify(out_dir).problems
  assert problems and all(p.file == path and p.offset is None for p in problems)
  assert any("sha256" in p.message for p in problems)


def test_verify_checks_shapes_against_manifest(tmp_path):
  out_dir, manifest, _ = _write(tmp_path)
  manifest["frame_shape"] = [8, 5, 3]
  with open(os.path.join(out_dir, records.MANIFEST), "w") as file:
    json.dump(manifest, file)
  problems = records.verify(out_dir).problems
  assert len(problems) == 7 and all("manifest says [8, 5, 3]" in p.message for p in problems)
  path = records.split_files(manifest, out_dir, "train")[0][0]
  assert {p.offset for p in problems if p.file == path} == set(_record_offsets(path))


def test_exception_inside_writer_leaves_no_files(tmp_path):
  out_dir = str(tmp_path / "ds")
  with pytest.raises(RuntimeError, match="decoder died"):
    with records.DatasetWriter(out_dir, "toy", CLASSES, fps=25, examples_per_shard=2) as writer:
      for i in range(3):  # one finished shard plus one open shard
        e = _example(i, with_flow=False)
        writer.add("train", e["video"], e["label"], e["video_id"])
      raise RuntimeError("decoder died")
  assert os.listdir(out_dir) == []
  with pytest.raises(FileNotFoundError, match="darkjax.data.synthetic"):
    records.load_manifest(out_dir)


def test_writer_validation_errors(tmp_path):
  e = _example(0, with_flow=False)
  writer = records.DatasetWriter(str(tmp_path / "ds"), "toy", CLASSES, fps=25)
  with pytest.raises(ValueError, match="clip_000.*label 3"):
    writer.add("train", e["video"], 3, e["video_id"])
  with pytest.raises(ValueError, match="clip_000.*streams"):
    writer.add("train", e["video"], 0, e["video_id"], {"flow": e["video"]})
  writer.add("train", e["video"], 0, e["video_id"])
  writer.close()
  with pytest.raises(FileExistsError, match="manifest.json"):
    records.DatasetWriter(str(tmp_path / "ds"), "toy", CLASSES, fps=25)
  with pytest.raises(ValueError, match="'test' .*no examples"):
    records.write_dataset(str(tmp_path / "empty"), "toy", CLASSES,
                          {"train": [e], "test": []}, fps=25)


def test_overwrite_removes_stale_shards(tmp_path):
  out_dir, _, _ = _write(tmp_path, num_train=5)
  _, manifest, _ = _write(tmp_path, num_train=2, overwrite=True)
  assert sorted(os.listdir(out_dir)) == sorted(
      ["manifest.json"] + [s["file"] for split in manifest["splits"].values()
                           for s in split["shards"]])
  assert records.verify(out_dir).ok


def test_manifest_and_split_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*darkjax.data.prepare"):
    records.load_manifest(str(tmp_path / "nowhere"))
  out_dir, manifest, _ = _write(tmp_path)
  with pytest.raises(KeyError, match=r"'val'.*\['test', 'train'\]"):
    records.split_files(manifest, out_dir, "val")
  missing = os.path.join(out_dir, manifest["splits"]["test"]["shards"][0]["file"])
  os.remove(missing)
  with pytest.raises(FileNotFoundError, match="toy-test-00000-of-00001"):
    records.split_files(manifest, out_dir, "test")
  assert any(p.file == missing and "missing" in p.message for p in records.verify(out_dir).problems)
  del manifest["class_names"]
  with open(os.path.join(out_dir, records.MANIFEST), "w") as file:
    json.dump(manifest, file)
  with pytest.raises(ValueError, match="'class_names'"):
    records.load_manifest(out_dir)
  # counts edited by hand into strings: named, not a TypeError in a sum
  manifest["class_names"] = ["a", "b", "c"][:manifest["num_classes"]]
  manifest["splits"]["test"]["num_examples"] = str(manifest["splits"]["test"]["num_examples"])
  with open(os.path.join(out_dir, records.MANIFEST), "w") as file:
    json.dump(manifest, file)
  with pytest.raises(ValueError, match=r"key 'splits.test.num_examples' is '\d+', not a whole"):
    records.load_manifest(out_dir)
  manifest["splits"]["test"]["num_examples"] = int(manifest["splits"]["test"]["num_examples"])
  manifest["splits"]["test"]["class_counts"][0] += 1   # more videos than the part holds
  with open(os.path.join(out_dir, records.MANIFEST), "w") as file:
    json.dump(manifest, file)
  with pytest.raises(ValueError, match=r"key 'splits.test.class_counts' is \[.*\]: it must list "
                     r"3 whole numbers \(one per class\) summing to the split's \d+ videos"):
    records.load_manifest(out_dir)
  del manifest["splits"]["test"]["class_counts"]   # a manifest written before they were counted
  with open(os.path.join(out_dir, records.MANIFEST), "w") as file:
    json.dump(manifest, file)
  loaded = records.load_manifest(out_dir)
  assert prepared.Dataset("toy", out_dir, loaded).class_counts("test") is None
  assert prepared.Dataset("toy", out_dir, loaded).class_counts("train") == \
      loaded["splits"]["train"]["class_counts"]
  # a file given as the dataset directory: said, not called missing (nor written over)
  (tmp_path / "train.log").write_text("log")
  with pytest.raises(FileNotFoundError, match="train.log is a file, not a dataset directory"):
    records.load_manifest(str(tmp_path / "train.log"))


def test_cli_exit_codes(tmp_path, capsys):
  out_dir, manifest, _ = _write(tmp_path)
  assert records.main(["verify", out_dir]) == 0
  captured = capsys.readouterr()
  assert "train: 3 shards, 5/5 examples" in captured.out
  # A bar over the manifest's bytes on stderr (a real dataset takes minutes to read), none with
  # --no-progress; the report on stdout either way.
  total = sum(s["num_bytes"] for e in manifest["splits"].values() for s in e["shards"])
  size = tqdm.format_sizeof(total, divisor=1024)
  assert f"verify {manifest['name']}: 100%" in captured.err and f"{size}/{size}" in captured.err
  assert records.main(["verify", out_dir, "--no-progress"]) == 0
  captured = capsys.readouterr()
  assert "train: 3 shards, 5/5 examples" in captured.out and "100%" not in captured.err
  path = records.split_files(manifest, out_dir, "train")[2][0]
  _flip_byte(path, 20)
  assert records.main(["verify", out_dir]) == 1
  out = capsys.readouterr().out
  assert f"{path} @ byte 0: data CRC mismatch" in out and "FAILED" in out
  assert records.main(["verify", str(tmp_path / "nowhere")]) == 1
  assert "darkjax.data.synthetic" in capsys.readouterr().err
  # The module entry point, in a fresh interpreter that must not import TensorFlow.
  code = ("import runpy, sys; sys.argv = ['records', 'verify', sys.argv[1]]\n"
          "try: runpy.run_module('darkjax.data.records', run_name='__main__')\n"
          "except SystemExit as e: status = e.code\n"
          "assert not any(m.split('.')[0] == 'tensorflow' for m in sys.modules), 'tf imported'\n"
          "sys.exit(status)\n")
  result = subprocess.run([sys.executable, "-c", code, out_dir], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 1, result.stderr
  assert "data CRC mismatch" in result.stdout


def test_fast_wire_parser_agrees_with_protobuf_and_falls_back():
  from tensorflow_datasets.proto import tf_example_pb2
  rng = np.random.default_rng(3)
  video = rng.integers(0, 255, (3, 5, 7, 3), dtype=np.uint8)
  data = records.encode_example(video, 7, "clip/é", {"ir": video[..., :1]})
  fast = example_codec._wire_features(data)  # pylint: disable=protected-access
  slow = example_codec._proto_features(data, "x", 0)  # pylint: disable=protected-access
  assert fast.keys() == slow.keys()
  for key, (kind, values) in fast.items():
    assert kind == slow[key][0]
    assert [bytes(v) if isinstance(v, memoryview) else v for v in values] == slow[key][1]
  # A float feature and a large negative int64 take the protobuf path and still decode.
  example = tf_example_pb2.Example()
  example.ParseFromString(data)
  example.features.feature["score"].float_list.value.append(0.5)
  example.features.feature["offset"].int64_list.value.append(-5)
  other = example.SerializeToString()
  with pytest.raises(ValueError):
    example_codec._wire_features(other)  # pylint: disable=protected-access
  decoded = records.decode_example(other)
  assert decoded["video_id"] == "clip/é" and decoded["label"] == 7
  np.testing.assert_array_equal(decoded["video"], video)
