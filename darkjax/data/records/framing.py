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
import mmap
import os
import struct
from typing import BinaryIO, Iterator

import google_crc32c
import numpy as np

from darkjax import paths

_HEADER = struct.Struct("<QI")
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_LENGTH_CRC_MISMATCH = "length CRC mismatch"
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


# A memoryview (a record in a memory map) is checksummed in pieces of this many bytes, each copied
# into a small buffer that stays in the CPU's cache: google_crc32c takes bytes only.
_CRC_PIECE = 256 << 10


def masked_crc32c(data: bytes | memoryview) -> int:
  if isinstance(data, memoryview):
    crc = 0
    for start in range(0, len(data), _CRC_PIECE):
      crc = google_crc32c.extend(crc, data[start:start + _CRC_PIECE].tobytes())
  else:
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
    return None, _LENGTH_CRC_MISMATCH, None
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


class _MappedFile:
  """`read` / `seek` over a read-only memory map of a whole local file: `read(n)` returns a
  zero-copy memoryview of the next n bytes (fewer at the end). A large read first asks the kernel
  to read its pages ahead (MADV_WILLNEED), as one `file.read` of them would: from a disk, not the
  page cache, the map's page faults would otherwise fetch them a few at a time."""

  _READ_AHEAD_BYTES = 1 << 20

  def __init__(self, file: BinaryIO):
    self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    self._view = memoryview(self._map)
    self._pos = 0

  def read(self, n: int) -> memoryview:
    if n >= self._READ_AHEAD_BYTES and hasattr(mmap, "MADV_WILLNEED"):
      start = self._pos - self._pos % mmap.PAGESIZE
      end = min(self._pos + n, len(self._view))
      if end > start:
        self._map.madvise(mmap.MADV_WILLNEED, start, end - start)
    chunk = self._view[self._pos:self._pos + n]
    self._pos += len(chunk)
    return chunk

  def seek(self, offset: int) -> None:
    self._pos = offset

  def close(self) -> None:
    # Unmapped once the last view of a record in it (a decoded clip's frames) is gone: closing
    # the map now would fail while one lives.
    self._map, self._view = None, None


class RecordReader:
  """Reads the records of one TFRecord file in order, starting at byte offset `offset`.

  `offset` (the start of the next record) is the reader's whole state: `seek(offset)` on a new
  reader resumes exactly where another one stopped. The file is opened on the first `read()`, so
  idle readers hold no file handles. `read()` returns None at the end of the file and raises
  CorruptRecordError(path, offset) for a damaged record.

  `mapped=True` (the input pipelines): a local file is memory-mapped and `read()` returns a
  read-only memoryview of the record in the map instead of a copy of its bytes, both CRCs checked
  all the same. A decoded clip's frames are then views of the page cache, and the clip ops copy
  only the frames they sample: no copy of the whole video per clip (docs/benchmarks.md, "Input
  pipeline per paper config"). As with any memory map, a file truncated in place while it is read
  ends the process (SIGBUS); `prepare` and `records.write_dataset` replace files whole, never in
  place. A file that cannot be mapped is read as with `mapped=False`.
  """

  def __init__(self, path: str | os.PathLike, verify_crc: bool = True, offset: int = 0,
               mapped: bool = False):
    self.path = os.fspath(path)
    self.verify_crc = verify_crc
    self.offset = int(offset)
    self.mapped = mapped
    self._file: BinaryIO | _MappedFile | None = None
    self._size = 0

  def seek(self, offset: int) -> None:
    self.offset = int(offset)
    if self._file is not None:
      self._file.seek(self.offset)

  def read(self) -> bytes | memoryview | None:
    if self._file is None:
      try:
        self._size = paths.size(self.path)
        self._file = paths.resolve(self.path).open("rb")  # pylint: disable=consider-using-with
      except OSError as error:
        raise FileNotFoundError(f"cannot open shard {self.path}: {error}") from error
      if self.mapped and self._size and paths.is_local(self.path):
        try:
          mapped = _MappedFile(self._file)
        except (OSError, ValueError):   # a file system without mmap: read it
          pass
        else:
          self._file.close()
          self._file = mapped
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


# The first byte of every record darkjax writes: a serialised tf.train.Example starts with its
# field 1 (`features`), length-delimited. A cheap filter of the offsets a resync tries.
_EXAMPLE_FIRST_BYTE = 0x0A
_RESYNC_CHUNK = 4 << 20


def next_record_header(file: BinaryIO, start: int, size: int) -> int | None:
  """The first offset >= `start` of a `size`-byte file where an intact record header of an Example
  sits (its length's CRC matches, the record fits in the file, the data starts as an Example's),
  or None. How a scan finds its footing again after a damaged length field: a false match needs
  a 32-bit CRC to agree by chance, and the record found is then read as any other, its data's
  CRC checked."""
  position = start
  while position + _HEADER.size < size:
    file.seek(position)
    window = file.read(min(_RESYNC_CHUNK + _HEADER.size, size - position))
    count = len(window) - _HEADER.size   # offsets in this window with a header and a byte after
    if count <= 0:
      return None
    view = np.frombuffer(window, np.uint8)
    # lengths under 2^40 bytes have their top three bytes zero
    candidates = np.flatnonzero((view[5:5 + count] == 0) & (view[6:6 + count] == 0)
                                & (view[7:7 + count] == 0)
                                & (view[_HEADER.size:_HEADER.size + count] == _EXAMPLE_FIRST_BYTE))
    for index in candidates.tolist():
      length, length_crc = _HEADER.unpack_from(window, index)
      if (masked_crc32c(window[index:index + _LENGTH.size]) == length_crc
          and position + index + _HEADER.size + length + _CRC.size <= size):
        return position + index
    position += count
  return None


def scan_records(path: str | os.PathLike,
                 verify_crc: bool = True) -> Iterator[tuple[int, bytes | None, str | None]]:
  """Yields (offset, data, None) per good record and (offset, data or None, reason) per bad one.

  After a data-CRC mismatch the scan goes on (the length was intact). After a damaged length
  field (with `verify_crc`) it goes on from the next intact record header (`next_record_header`),
  the reason saying where and how many bytes it skipped, so the records after the damage are
  still counted and checked; after a truncation, or a bad length without CRCs to find the next
  record by, it stops.
  """
  path = os.fspath(path)
  size = paths.size(path)
  offset = 0
  with paths.resolve(path).open("rb") as file:
    while offset < size:
      data, reason, end = _read_record(file, offset, size, verify_crc)
      if reason == _LENGTH_CRC_MISMATCH:
        end = next_record_header(file, offset + 1, size)
        reason += (f": this record is lost; the next intact record starts at byte {end} "
                   f"({end - offset} bytes skipped)" if end is not None else
                   ": this record is lost, and no intact record follows it")
      yield offset, data, reason
      if end is None:
        return
      offset = end
      file.seek(offset)
