"""TFRecord framing: length-delimited, CRC-checked records in a file. TensorFlow is never imported.

Each record is `uint64 length (LE) | uint32 masked_crc32c(length bytes) | data |
uint32 masked_crc32c(data)`, masked crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2^32, crc32c
being the Castagnoli CRC.

This is the one reader of the format. `RecordReader` reads a file sequentially from a byte offset
and that offset is its whole state, which is how the grain pipeline checkpoints a position in a
shard and resumes at exactly the next record. `iter_tfrecord[_with_offsets]` read a whole file;
`scan_records` reports every damaged record instead of stopping at the first (for verification).
A damaged record is a `CorruptRecordError` naming the file and the record's byte offset.
Paths may be URLs (`gs://bucket/data/x.tfrecord`): files are opened through darkjax.paths.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import BinaryIO, Iterator

import google_crc32c

from darkjax import paths

_HEADER = struct.Struct("<QI")
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_CRC_MASK_DELTA = 0xA282EAD8


class CorruptRecordError(ValueError):
  """A record that cannot be read: bad CRC, truncation or an unparsable example."""

  def __init__(self, path: str, offset: int | None, reason: str):
    self.path, self.offset, self.reason = os.fspath(path), offset, reason
    where = "" if offset is None else f" at byte offset {offset}"
    super().__init__(f"{self.path}: corrupt record{where}: {reason}. Restore the file, or "
                     f"prepare the dataset again (python -m darkjax.data.prepare), then rerun the "
                     f"command: a training run resumes from the steps it saved")

  def __reduce__(self):  # picklable across grain worker processes
    return (type(self), (self.path, self.offset, self.reason))


def masked_crc32c(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- writing

def _frame_header(data: bytes) -> bytes:
  length = _LENGTH.pack(len(data))
  return length + _CRC.pack(masked_crc32c(length))


def frame_record(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data and its masked CRC."""
  data = bytes(data)
  return _frame_header(data) + data + _CRC.pack(masked_crc32c(data))


class TFRecordWriter:
  """Writes framed records to `path + ".tmp"`, renamed to `path` on a successful close only
  (on an object store straight to `path`: the object appears only when the upload completes).

  The sha256 of the file is computed while writing (`sha256`), so a finished shard's checksum costs
  no second pass over it.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self._local = paths.is_local(self.path)
    self.tmp_path = self.path + ".tmp" if self._local else self.path
    self._file = paths.resolve(self.tmp_path).open("wb")  # pylint: disable=consider-using-with
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
    if self._local:
      os.fsync(self._file.fileno())
    self._file.close()
    self._file = None
    if self._local:
      os.replace(self.tmp_path, self.path)

  def abort(self) -> None:
    """Drops the partial file; nothing appears under the final name."""
    if self._file is not None:
      self._file.close()
      self._file = None
      paths.resolve(self.tmp_path).unlink(missing_ok=True)

  def __enter__(self) -> TFRecordWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self.abort() if exc_type is not None else self.close()


# ----------------------------------------------------------------------------- reading

def _read_record(file: BinaryIO, offset: int, size: int,
                 verify_crc: bool) -> tuple[bytes | None, str | None, int | None]:
  """The record at `offset` of a `size`-byte file positioned there: (data, reason, end offset).

  An intact record gives (data, None, end). A data-CRC mismatch gives (data, "data CRC mismatch",
  end): the length was intact, so the next record is still found. A bad length or a truncation
  gives (None, reason, None): the next record boundary is unknown.
  """
  header = file.read(_HEADER.size)
  if len(header) < _HEADER.size:
    return None, f"truncated: {len(header)}-byte record header (needs {_HEADER.size})", None
  length, length_crc = _HEADER.unpack(header)
  if verify_crc and masked_crc32c(header[:_LENGTH.size]) != length_crc:
    return None, "length CRC mismatch", None
  end = offset + _HEADER.size + length + _CRC.size
  if end > size:
    return None, f"truncated: record of {length} data bytes, file ends at {size}", None
  data = file.read(length)  # two reads: slicing one buffer would copy the clip again
  footer = file.read(_CRC.size)
  if len(data) != length or len(footer) != _CRC.size:
    return None, "truncated while reading (file changed?)", None
  if verify_crc and masked_crc32c(data) != _CRC.unpack(footer)[0]:
    return data, "data CRC mismatch", end
  return data, None, end


class RecordReader:
  """Reads the records of one TFRecord file in order, starting at byte offset `offset`.

  `offset` (the start of the next record) is the reader's whole state: `seek(offset)` on a new
  reader resumes exactly where another one stopped. The file is opened on the first `read()`, so
  idle readers hold no file handles. `read()` returns None at the end of the file and raises
  CorruptRecordError(path, offset) for a damaged record.
  """

  def __init__(self, path: str | os.PathLike, verify_crc: bool = True, offset: int = 0):
    self.path = os.fspath(path)
    self.verify_crc = verify_crc
    self.offset = int(offset)
    self._file: BinaryIO | None = None
    self._size = 0

  def seek(self, offset: int) -> None:
    self.offset = int(offset)
    if self._file is not None:
      self._file.seek(self.offset)

  def read(self) -> bytes | None:
    if self._file is None:
      try:
        self._size = paths.size(self.path)
        self._file = paths.resolve(self.path).open("rb")  # pylint: disable=consider-using-with
      except OSError as error:
        raise FileNotFoundError(f"cannot open shard {self.path}: {error}") from error
      self._file.seek(self.offset)
    if self.offset >= self._size:
      return None
    data, reason, end = _read_record(self._file, self.offset, self._size, self.verify_crc)
    if reason is not None:
      raise CorruptRecordError(self.path, self.offset, reason)
    self.offset = end
    return data

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> RecordReader:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self.close()


def iter_tfrecord_with_offsets(path: str | os.PathLike,
                               verify_crc: bool = True) -> Iterator[tuple[int, bytes]]:
  """(byte offset of the record, data) per record; raises CorruptRecordError(path, offset)."""
  with RecordReader(path, verify_crc) as reader:
    while True:
      offset = reader.offset
      data = reader.read()
      if data is None:
        return
      yield offset, data


def iter_tfrecord(path: str | os.PathLike, verify_crc: bool = True) -> Iterator[bytes]:
  for _, data in iter_tfrecord_with_offsets(path, verify_crc):
    yield data


def scan_records(path: str | os.PathLike,
                 verify_crc: bool = True) -> Iterator[tuple[int, bytes | None, str | None]]:
  """Yields (offset, data, None) per good record and (offset, data or None, reason) per bad one.

  After a data-CRC mismatch the scan goes on (the length was intact); after a bad length or a
  truncation it stops, since the next record boundary is unknown.
  """
  path = os.fspath(path)
  size = paths.size(path)
  offset = 0
  with paths.resolve(path).open("rb") as file:
    while offset < size:
      data, reason, end = _read_record(file, offset, size, verify_crc)
      yield offset, data, reason
      if end is None:
        return
      offset = end
