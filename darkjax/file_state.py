"""Content hashes and crash-safe JSON files: the one place darkjax hashes files and writes JSON
state (dataset manifests, `prepare` resume state, converted-checkpoint metadata, experiment
results).

`atomic_write_json` writes through `paths.write_bytes_atomic` (locally a fsynced `path + ".tmp"`
renamed over `path`; on an object store one upload), so a reader (or a run resumed after a crash
or a kill) sees either the old file or the new one, never a torn one. Paths may be URLs
(`gs://...`): both functions go through darkjax.paths. `sha256_file` streams the file in 1 MiB blocks, so shards and checkpoints of any size
hash in constant memory. `sha256_json` hashes a JSON-serialisable value in a canonical form (sorted
keys), e.g. the options a resumable job was started with.

This module is ground level: it imports only darkjax.paths.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from darkjax import paths

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with paths.resolve(path).open("rb") as file:
    for block in iter(lambda: file.read(_BLOCK), b""):
      digest.update(block)
  return digest.hexdigest()


def sha256_json(value: Any) -> str:
  """Hex sha256 of `json.dumps(value, sort_keys=True)` (UTF-8): equal values, equal hashes."""
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def atomic_write_json(path: str | os.PathLike, value: Any, sort_keys: bool = False) -> None:
  """Writes `value` as indented JSON to `path` through a fsynced temporary file and a rename.

  On any error (e.g. a value JSON cannot encode) `path` is left as it was.
  """
  text = json.dumps(value, indent=2, sort_keys=sort_keys) + "\n"
  paths.write_bytes_atomic(path, text.encode("utf-8"))
