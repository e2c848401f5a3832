"""Resolving `config.input.data` to a prepared dataset on disk (manifest + shard files).

The embedded synthetic dataset is generated on first use; every other dataset must have been
prepared with `python -m darkjax.data.prepare`, and a missing one fails at once saying how.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from darkjax import paths
from darkjax.data import records

PREPARED = ("arid_v1", "arid_v1_5", "infar", "xd145", "dark48", "hmdb51", "ucf101",
            "uavhuman_fisheye")


ALL = "all"


class DatasetNotPreparedError(FileNotFoundError):
  """A configured dataset directory has no manifest; the message says how to prepare it."""


@dataclasses.dataclass
class Dataset:
  name: str
  directory: str
  manifest: dict[str, Any]
  split_index: int = 0

  @property
  def class_names(self) -> list[str]:
    return list(self.manifest["class_names"])

  @property
  def num_classes(self) -> int:
    return len(self.manifest["class_names"])

  def split_name(self, split: str) -> str:
    """Datasets with several official splits name them `train1`, `test1`, ...; others `train`."""
    if self.split_index and f"{split}{self.split_index}" in self.manifest["splits"]:
      return f"{split}{self.split_index}"
    return split

  def files(self, split: str) -> list[tuple[str, int]]:
    """Record files and example counts of `split`; `all` (unless the manifest has such a split)
    is every video once: the train and test parts of the selected split together."""
    if split == ALL and ALL not in self.manifest["splits"]:
      return self.files("train") + self.files("test")
    return records.split_files(self.manifest, self.directory, self.split_name(split))

  def frame_shapes(self) -> dict[str, list[int] | None]:
    """Per-stream (H, W, C) every record must have, None where they vary."""
    return {"video": self.manifest.get("frame_shape"), **self.manifest.get("streams", {})}

  def num_examples(self, split: str) -> int:
    return sum(n for _, n in self.files(split))


def open_dataset(data_cfg: Mapping[str, Any]) -> Dataset:
  """Finds (and for `synthetic`, generates) the dataset described by `config.input.data`."""
  name, directory = data_cfg["name"], data_cfg["dir"]
  if not directory:
    raise ValueError(f"config.input.data.dir is empty for dataset {name!r}")
  directory = os.fspath(paths.resolve(directory))  # a local directory or a URL (gs://...)
  if name == "synthetic":
    return Dataset(name, directory, _ensure_synthetic(directory, dict(data_cfg.get("generate", {}))),
                   int(data_cfg.get("split_index", 0)))
  if not paths.resolve(os.path.join(directory, records.MANIFEST)).exists():
    hint = (f"python -m darkjax.data.prepare --dataset {name} --src /path/to/downloaded/{name} "
            f"--out {directory}") if name in PREPARED else "python -m darkjax.data.prepare --help"
    raise DatasetNotPreparedError(
        f"dataset {name!r} is not prepared: {directory} has no {records.MANIFEST}.\n"
        f"Prepare it once from the downloaded archive with:\n  {hint}\n"
        f"then point config.input.data.dir at the output (or set $DARKJAX_DATA).")
  manifest = records.load_manifest(directory)
  return Dataset(name, directory, manifest, int(data_cfg.get("split_index", 0)))


def _ensure_synthetic(directory: str, params: dict[str, Any]) -> dict[str, Any]:
  """Generates on the first host only (the directory must be shared between hosts)."""
  import jax  # pylint: disable=import-outside-toplevel
  from darkjax.data import synthetic  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1:
    return synthetic.ensure_dataset(directory, **params)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:
    synthetic.ensure_dataset(directory, **params)
  multihost_utils.sync_global_devices(f"synthetic dataset {directory}")
  return records.load_manifest(directory)
