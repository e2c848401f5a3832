"""darkjax.file_state: file and JSON hashes, atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from darkjax import file_state


def test_sha256_file_streams_any_size(tmp_path):
  for size in (0, 1, (1 << 20) - 1, (1 << 20) + 7):
    content = bytes(i % 251 for i in range(size))
    path = tmp_path / f"f{size}"
    path.write_bytes(content)
    assert file_state.sha256_file(path) == hashlib.sha256(content).hexdigest()


def test_sha256_json_is_the_sorted_dump_digest():
  # prepare's resume signature: the digest must not change, or earlier runs stop resuming.
  value = {"b": [1, 2, {"é": 0.5}], "a": None}
  expected = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
  assert file_state.sha256_json(value) == expected
  assert file_state.sha256_json({"a": None, "b": [1, 2, {"é": 0.5}]}) == expected


def test_atomic_write_json_replaces_or_leaves_the_old_file(tmp_path):
  path = str(tmp_path / "state.json")
  file_state.atomic_write_json(path, {"b": 1, "a": [1, 2]})
  assert json.load(open(path, encoding="utf-8")) == {"b": 1, "a": [1, 2]}
  file_state.atomic_write_json(path, {"b": 2, "a": 0}, sort_keys=True)
  text = open(path, encoding="utf-8").read()
  assert text.index('"a"') < text.index('"b"') and text.endswith("}\n")
  with pytest.raises(TypeError):
    file_state.atomic_write_json(path, {"bad": object()})
  assert json.load(open(path, encoding="utf-8")) == {"b": 2, "a": 0}
  assert os.listdir(tmp_path) == ["state.json"]
