"""The one path layer: every path a user gives darkjax (workdir, data dir, model_init, convert /
prepare outputs, predict's checkpoint) goes through `resolve`, which returns an `etils.epath.Path`.

Local paths are expanded (`~`) and made absolute; URLs (`gs://bucket/run`, `s3://...`) are kept as
they are and read and written through fsspec (`pip install darkjax[gcs]` adds gcsfs), the layer
orbax uses for checkpoints too. Code below this module opens files with `Path.open`, never with
`open()` or `os.path`, so one code path serves a laptop disk and a bucket shared by a pod.

Object stores have no rename and no append: `write_bytes_atomic` renames a temporary file only on a
local disk (an object upload is already all-or-nothing), and `append_text` rewrites the object.

This module is ground level: it imports nothing from darkjax.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Iterator, TextIO, Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_url(path: PathLike) -> bool:
  """True for `scheme://...` paths (object stores), False for local file names."""
  return "://" in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
  """An epath.Path for `path`: URLs as given, local paths with `~` expanded, made absolute."""
  text = os.fspath(path)
  if not text:
    raise ValueError("empty path; give a local directory or a URL such as gs://bucket/dir")
  if is_url(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def is_local(path: PathLike) -> bool:
  return not is_url(path)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
  """Writes `data` so a reader sees the old file or the new one, never a torn one.

  Local: a fsynced `path + ".tmp"` renamed over `path`. URL: one upload (objects appear whole).
  """
  path = resolve(path)
  if not is_local(path):
    path.write_bytes(data)
    return
  tmp = os.fspath(path) + ".tmp"
  try:
    with open(tmp, "wb") as file:
      file.write(data)
      file.flush()
      os.fsync(file.fileno())
    os.replace(tmp, os.fspath(path))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def append_text(path: PathLike, text: str) -> None:
  """Appends `text` (a local append; on an object store the object is rewritten)."""
  path = resolve(path)
  if is_local(path):
    with path.open("a", encoding="utf-8") as file:
      file.write(text)
    return
  old = path.read_text(encoding="utf-8") if path.exists() else ""
  path.write_text(old + text, encoding="utf-8")


@contextlib.contextmanager
def open_append(path: PathLike) -> Iterator[TextIO]:
  """A text file to append log lines to: locally the file itself (lines land as written); on an
  object store a buffer appended to the object when the block ends (also on error)."""
  path = resolve(path)
  if is_local(path):
    with path.open("a", encoding="utf-8") as file:
      yield file
    return
  buffer = io.StringIO()
  try:
    yield buffer
  finally:
    append_text(path, buffer.getvalue())


def size(path: PathLike) -> int:
  """The file's size in bytes."""
  path = resolve(path)
  if is_local(path):
    return os.path.getsize(os.fspath(path))
  return int(path.stat().length)


def cannot_write(path: PathLike, directory: bool = True) -> str | None:
  """Why the output `path` cannot be written, or None (a URL: None, its store says at the write):
  for a `directory` (to be made, or an existing one), a file in its place; for a file, a
  directory in its place or no folder to hold it; else the nearest existing folder above it a
  file, or not writable. The
  folder is tried by making and removing a directory in it (permission bits miss read-only mounts
  and immutable folders for root). Output paths are checked with it before long work."""
  if is_url(path):
    return None
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if os.path.exists(path) and os.path.isdir(path) != directory:
    return "is a file" if directory else "is a directory"
  existing = path if directory and os.path.isdir(path) else os.path.dirname(path)
  if not directory and not os.path.isdir(existing):   # a file's folder is not made for it
    return f"{existing} does not exist" if not os.path.exists(existing) else \
        f"{existing} is a file"
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    return f"{existing} is a file"
  try:
    try_making_a_directory(existing)
  except OSError as error:
    return f"{existing} is not writable ({error.strerror})"
  return None


def try_making_a_directory(directory: str, name: str = "") -> None:
  """Makes and removes a directory in the local `directory` (`name`: what tells it from other
  processes' probes there; default this process's id); raises the OSError that met it (a full
  disk, no permission: permission bits miss read-only mounts and immutable folders for root)."""
  probe = os.path.join(directory, f".darkjax-write-probe-{name or os.getpid()}")
  os.mkdir(probe)
  os.rmdir(probe)
