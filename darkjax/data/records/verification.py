"""Checking a dataset directory: `python -m darkjax.data.records verify DIR [--no-crc]`.

`verify` reads every shard of every split listed in the manifest and collects every problem it
finds instead of stopping at the first: missing shard files, sizes and sha256 checksums that differ
from the manifest, damaged records (bad CRC, truncation; file and byte offset), examples that do
not decode or whose labels and frame shapes disagree with the manifest, and record counts. A record
whose length field is damaged is lost, and the records after it are found again from the next
intact record header (`framing.next_record_header`) and checked as the others. The CLI
prints a per-split summary and the problems, and exits with status 1 if there is any.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from darkjax import file_state, paths
from darkjax.data.records.directory import load_manifest
from darkjax.data.records.example import decode_example
from darkjax.data.records.framing import CorruptRecordError, scan_records


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
                  check_crc: bool, problems: list[Problem]) -> tuple[int, int]:
  """Appends the shard's problems; returns its number of readable, valid examples and its size
  in bytes (0 for a missing file)."""
  if not paths.resolve(path).is_file():
    problems.append(Problem(path, None, "shard file is missing"))
    return 0, 0
  num_bytes = paths.size(path)
  if "num_bytes" in shard and shard["num_bytes"] != num_bytes:
    problems.append(Problem(path, None, f"{num_bytes} bytes, manifest says {shard['num_bytes']}"))
  if "sha256" in shard:
    sha256 = file_state.sha256_file(path)
    if sha256 != shard["sha256"]:
      problems.append(Problem(path, None, f"sha256 {sha256} != manifest {shard['sha256']}"))
  num_records = num_valid = 0
  for offset, data, reason in scan_records(path, check_crc):
    num_records += data is not None  # a framed record, even with a bad data CRC
    example_problems = [reason] if reason is not None else _verify_example(
        data, path, offset, manifest)
    problems.extend(Problem(path, offset, message) for message in example_problems)
    num_valid += not example_problems
  if num_records != shard["num_examples"]:
    problems.append(Problem(path, None, f"{num_records} records found, manifest says "
                                        f"{shard['num_examples']}"))
  return num_valid, num_bytes


def verify(data_dir: str | os.PathLike, check_crc: bool = True,
           progress: bool = False) -> VerifyReport:
  """Checks every shard of every split and collects all problems (file + byte offset). With
  `progress`, a bar over the bytes the manifest lists (rate and time left) on stderr."""
  data_dir = os.fspath(data_dir)
  manifest = load_manifest(data_dir)
  problems: list[Problem] = []
  splits = {}
  shards = [shard for entry in manifest["splits"].values() for shard in entry["shards"]]
  bar = tqdm(total=sum(int(shard.get("num_bytes") or 0) for shard in shards), unit="B",
             unit_scale=True, unit_divisor=1024, desc=f"verify {manifest.get('name', data_dir)}",
             disable=not progress, dynamic_ncols=True)
  with bar:
    for split, entry in manifest["splits"].items():
      summary = {"shards": len(entry["shards"]), "expected_examples": entry["num_examples"],
                 "found_examples": 0, "num_bytes": 0}
      for shard in entry["shards"]:
        path = os.fspath(paths.resolve(os.path.join(data_dir, shard["file"])))
        valid, num_bytes = _verify_shard(path, shard, manifest, check_crc, problems)
        summary["found_examples"] += valid
        summary["num_bytes"] += num_bytes
        bar.update(int(shard.get("num_bytes") or 0))
      splits[split] = summary
  return VerifyReport(data_dir, splits, problems)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m darkjax.data.records",
                                   description="Check a darkjax TFRecord dataset.")
  commands = parser.add_subparsers(dest="command", required=True)
  verify_parser = commands.add_parser("verify", help="check shards, hashes, CRCs and examples")
  verify_parser.add_argument("data_dir")
  verify_parser.add_argument("--no-crc", action="store_true", help="skip per-record CRC checks")
  verify_parser.add_argument("--no-progress", action="store_true",
                             help="no progress bar (bytes read, rate, time left) on stderr")
  args = parser.parse_args(argv)
  try:
    report = verify(args.data_dir, check_crc=not args.no_crc, progress=not args.no_progress)
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(report.format())
  return 0 if report.ok else 1
