"""A `gs://` bucket backed by a local directory, for tests of darkjax's cloud paths (imported by
test modules; not a test file).

`gs://BUCKET/key` is served by fsspec (what etils.epath uses for `gs://` without TensorFlow) from
ROOT/BUCKET/key, and the names it returns are bucket names (`BUCKET/key`) as gcsfs returns them,
so code that goes through darkjax.paths / epath works, while `open("gs://...")`, `os.makedirs`
and friends would write a local `gs:` folder (the tests assert none appears). orbax's array
writes go through TensorStore's GCS driver, pointed here at the same directory; the bucket
reports no hierarchical namespace, as a default GCS bucket does.
"""

from __future__ import annotations

import contextlib
import glob as glob_lib
import os
from typing import Iterator

import fsspec
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem


class FakeGcsFileSystem(LocalFileSystem):
  protocol = ("gs", "gcs")
  root = ""   # set by `fake_gcs`

  def __init__(self, **kwargs):
    kwargs.pop("auto_mkdir", None)
    super().__init__(auto_mkdir=True, **kwargs)  # an object store has no folders to make first

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        path = path[len(prefix):]
    if path == cls.root or path.startswith(cls.root + "/"):
      return path.rstrip("/") or "/"
    return f"{cls.root}/{path.lstrip('/')}".rstrip("/")

  def _bucket_name(self, name: str) -> str:
    return name[len(self.root) + 1:] if name.startswith(self.root + "/") else name

  def info(self, path, **kwargs):
    info = dict(super().info(path, **kwargs))
    info["name"] = self._bucket_name(info["name"])
    return info

  def ls(self, path, detail=False, **kwargs):
    found = super().ls(path, detail=detail, **kwargs)
    if detail:
      return [{**entry, "name": self._bucket_name(entry["name"])} for entry in found]
    return [self._bucket_name(name) for name in found]

  def glob(self, path, maxdepth=None, **kwargs):
    return sorted(self._bucket_name(name) for name in glob_lib.glob(self._strip_protocol(path)))


@contextlib.contextmanager
def fake_gcs(root: str) -> Iterator[str]:
  """Serves `gs://` from `root` while the block runs."""
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=import-outside-toplevel

  def kvstore_for_gcs(path: str) -> dict:
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": os.path.join(os.path.abspath(root), bucket, key)}

  saved = {name: getattr(gcs_utils, name)
           for name in ("get_kvstore_for_gcs", "is_hierarchical_namespace_enabled")}
  old_root = FakeGcsFileSystem.root
  FakeGcsFileSystem.root = os.path.abspath(root)
  for protocol in FakeGcsFileSystem.protocol:
    fsspec.register_implementation(protocol, FakeGcsFileSystem, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  gcs_utils.get_kvstore_for_gcs = kvstore_for_gcs
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
  try:
    yield FakeGcsFileSystem.root
  finally:
    for name, function in saved.items():
      setattr(gcs_utils, name, function)
    FakeGcsFileSystem.root = old_root
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
