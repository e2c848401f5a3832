"""Resolving `config.input.data` to a prepared dataset on disk (manifest + shard files).

The embedded synthetic dataset is generated on first use; every other dataset must have been
prepared with `python -m darkjax.data.prepare`, and a missing one fails at once saying how.
`split_index` k picks the numbered official split (`train<k>` / `test<k>`, what `prepare` writes);
the configured train and eval splits are checked against the manifest when the dataset is opened,
so a split that does not exist fails at run start with the list of known splits.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from typing import Any, Mapping

from darkjax import paths
from darkjax.data import records

log = logging.getLogger(__name__)

PREPARED = ("arid_v1", "arid_v1_5", "infar", "xd145", "dark48", "hmdb51", "ucf101")
# What a dataset's name may be (`prepare --name`, a config's `dataset=` arg): it names the shard
# files and the dataset's directory under $DARKJAX_DATA.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


ALL = "all"


class DatasetNotPreparedError(FileNotFoundError):
  """A configured dataset directory has no manifest; the message says how to prepare it."""


class DatasetMismatchError(ValueError):
  """A data block names one dataset and its directory holds another; the message says which
  setting to change."""


class MissingStreamError(ValueError):
  """The config reads a record stream the dataset does not store; the message names both."""


class DatasetSplitError(ValueError):
  """A configured split (`split` / `eval_split` with `split_index`) is not in the manifest; the
  message names the dataset, the known splits and the `split_index` values that exist."""


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

  def split_indices(self) -> list[int]:
    """The k of the manifest's numbered splits (`train1`, `test1`, ... -> [1, ...])."""
    found = {int(m.group(1)) for s in self.manifest["splits"]
             if (m := re.fullmatch(r"[A-Za-z_]+?(\d+)", s))}
    return sorted(found)

  def split_name(self, split: str, field: str = "config.input.data split") -> str:
    """`split` + `split_index` (`train` + 1 -> `train1`): datasets with several official splits
    name them `train1`, `test1`, ...; single-split ones (split_index 0) `train`, `test`. Raises
    DatasetSplitError naming the known splits when the manifest has no such split, and `field`,
    the config field that named `split`."""
    name = f"{split}{self.split_index}" if self.split_index else split
    known = sorted(self.manifest["splits"])
    if name in known:
      return name
    parts = sorted({re.sub(r"\d+$", "", k) for k in known})
    indices = self.split_indices()
    if split not in parts:   # the part itself, not its number
      fix = f"this dataset's parts are {parts}: set {field} to one of them"
    elif indices:
      fix = (f"this dataset has the numbered splits {indices}: set config.input.data.split_index "
             f"(the configs' `split=K` arg) to one of them")
    else:
      fix = "this dataset has no numbered splits: set config.input.data.split_index=0"
    raise DatasetSplitError(
        f"dataset {self.name!r} at {self.directory}: split {name!r} ({field} {split!r}, "
        f"split_index={self.split_index}) is not in its {records.MANIFEST}; known splits: "
        f"{known}; {fix}")

  def check_splits(self, *splits: str, field: str = "config.input.data split") -> None:
    """Fails at once if any of `splits` (named by the config's `field`) does not resolve to a
    manifest split (DatasetSplitError) or a shard of it is missing or of another size than its
    manifest entry (MissingShardError, CorruptRecordError): when the dataset is opened (an
    evaluator's own split when it is built), not at the first evaluation after hours of
    training."""
    for split in splits:
      if split == ALL and ALL not in self.manifest["splits"]:
        self.check_splits("train", "test", field=field)
      else:
        self.split_name(split, field)
        self.files(split)

  def files(self, split: str) -> list[tuple[str, int]]:
    """Record files and example counts of `split`; `all` (unless the manifest has such a split)
    is every video once: the train and test parts of the selected split together."""
    if split == ALL and ALL not in self.manifest["splits"]:
      return self.files("train") + self.files("test")
    return records.split_files(self.manifest, self.directory, self.split_name(split))

  def frame_shapes(self) -> dict[str, list[int] | None]:
    """Per-stream (H, W, C) every record must have, None where they vary."""
    return {"video": self.manifest.get("frame_shape"), **self.manifest.get("streams", {})}

  def class_counts(self, split: str) -> list[int] | None:
    """The videos of each class in `split` as the manifest counts them; None where it does not
    (a manifest without `class_counts`: preparing the dataset again records them)."""
    if split == ALL and ALL not in self.manifest["splits"]:
      parts = [self.class_counts("train"), self.class_counts("test")]
      return None if None in parts else [a + b for a, b in zip(*parts)]
    counts = self.manifest["splits"][self.split_name(split)].get("class_counts")
    return None if counts is None else [int(c) for c in counts]

  def num_examples(self, split: str) -> int:
    """The videos of `split` as the manifest counts them: no shard is opened or stat'ed (an
    evaluation asks each time; on an object store a stat per shard is a request). `files`, which
    every pipeline reads its shards from, checks them."""
    if split == ALL and ALL not in self.manifest["splits"]:
      return self.num_examples("train") + self.num_examples("test")
    return sum(int(shard["num_examples"])
               for shard in self.manifest["splits"][self.split_name(split)]["shards"])


def _holds_videos(directory: str, depth: int = 3) -> bool:
  """Whether a local `directory` has a video file within `depth` levels (a downloaded release)."""
  from darkjax.data import video  # pylint: disable=import-outside-toplevel  (PyAV: errors only)
  if "://" in directory or not os.path.isdir(directory):
    return False
  base = directory.rstrip(os.sep).count(os.sep)
  for root, dirs, files in os.walk(directory):
    if any(video.is_video_file(f) for f in files):
      return True
    if root.count(os.sep) - base >= depth - 1:
      dirs[:] = []
  return False


def open_dataset(data_cfg: Mapping[str, Any], short_side: int = 0) -> Dataset:
  """Finds (and for `synthetic`, generates) the dataset described by `config.input.data`;
  `short_side`: what the config reads (`config.input.short_side`), for the `prepare` command a
  missing dataset's error gives."""
  name, directory = data_cfg["name"], data_cfg["dir"]
  if not directory:
    raise records.DatasetDirError(f"config.input.data.dir is empty for dataset {name!r}: set it "
                                  f"to the dataset's prepared directory")
  directory = os.fspath(paths.resolve(directory))  # a local directory or a URL (gs://...)
  split_index = int(data_cfg.get("split_index", 0))
  if name == "synthetic":
    dataset = Dataset(name, directory,
                      _ensure_synthetic(directory, dict(data_cfg.get("generate", {}))), split_index)
    dataset.check_splits(*_configured_splits(data_cfg))
    return dataset
  if not paths.resolve(os.path.join(directory, records.MANIFEST)).exists():
    raw = _holds_videos(directory)   # the downloaded release itself, given as the dataset
    src, out = (directory, f"{directory.rstrip('/')}_prepared") if raw else (
        f"/path/to/downloaded/{name}", directory)
    if name in PREPARED:
      hint = f"python -m darkjax.data.prepare --dataset {name} --src {src} --out {out}"
    else:   # a name darkjax has no reader for: the user's own dataset
      src = directory if raw else "/path/to/your/class/folders"
      hint = (f"python -m darkjax.data.prepare --dataset folder --name {name} --src {src} "
              f"--out {out}")
    hint += f" --short-side {short_side}" if short_side else ""
    what = (f"{directory} holds videos, not a prepared dataset (no {records.MANIFEST}): "
            "darkjax reads the clips decoded once into records.\n" if raw else
            f"{directory} has no {records.MANIFEST}.\n")
    beside = _prepared_beside(directory)
    close = difflib.get_close_matches(os.path.basename(directory.rstrip("/")), beside, n=1)
    raise DatasetNotPreparedError(
        f"dataset {name!r} is not prepared: {what}"
        + (f"Prepared beside it: {beside[:12]}"
           + (f" (did you mean {close[0]!r}?)" if close else "") + ".\n" if beside else "")
        + ("Prepare it once from the downloaded archive with:" if name in PREPARED else
           "Prepare it once from your class folders of videos with:") + f"\n  {hint}\n"
        f"then point config.input.data.dir at the output"
        + (f" ({out})." if raw else " (or set $DARKJAX_DATA)."))
  dataset = Dataset(name, directory, records.load_manifest(directory), split_index)
  metadata = dataset.manifest.get("metadata") or {}
  _check_name(dataset, metadata)
  dataset.check_splits(*_configured_splits(data_cfg))
  if name in PREPARED and "shard_order" not in metadata:
    # Written by `prepare` before its shards interleaved the classes: each holds one or two
    # class folders, so batches drawn from a few shards through the shuffle window hold few
    # classes.
    log.warning("dataset %r at %s was prepared with each shard holding one or two classes (a "
                "darkjax before shards interleaved them): training batches mix few classes. "
                "Prepare it again with --overwrite for well-mixed batches.", name, directory)
  return dataset


def prepare_command(dataset: Dataset, *flags: str) -> str:
  """The `prepare` command that writes `dataset` again (with `flags`): its reader, or for a dataset
  of the user's own `--dataset folder --name`, and the source its manifest recorded."""
  metadata = dataset.manifest.get("metadata") or {}
  source = metadata.get("source") or f"/path/to/{dataset.name}"
  reader = (f"--dataset folder --name {dataset.manifest.get('name', dataset.name)}"
            if metadata.get("layout") == "folder" else f"--dataset {dataset.name}")
  return " ".join([f"python -m darkjax.data.prepare {reader} --src {source} --out "
                   f"{dataset.directory}", *flags])


def _check_name(dataset: Dataset, metadata: Mapping[str, Any]) -> None:
  """A data block naming one dataset whose directory holds another (an ARID config pointed at
  Dark-48's records, or at the user's own dataset under the config's name) fails before anything
  is read: the run would train on it, report it under the wrong name and size its head to it."""
  stored, name = str(dataset.manifest.get("name", dataset.name)), dataset.name
  if stored == name:
    return
  where = f"the config's data block reads {name!r}"
  if metadata.get("layout") == "folder":
    raise DatasetMismatchError(
        f"{dataset.directory} holds your dataset {stored!r} (prepared with --dataset folder) and "
        f"{where}: give the config arg dataset={stored} (3D-DiNet: source_dataset= / "
        f"target_dataset=) to train this config's recipe on it, with data_dir= where it is not "
        f"$DARKJAX_DATA/{stored} (or set the block's `name`, e.g. "
        f"--config.input.data.name={stored})")
  if name in PREPARED and stored in PREPARED:
    raise DatasetMismatchError(
        f"{dataset.directory} holds {stored!r} (its {records.MANIFEST}) and {where}: point the "
        f"block's dir (the configs' `data_dir=` arg) at {name}'s prepared directory, or run a "
        f"config of {stored}")


def _prepared_beside(directory: str) -> list[str]:
  """The prepared datasets (folders with a manifest) in a local `directory`'s parent, sorted."""
  parent = os.path.dirname(directory.rstrip("/"))
  if "://" in directory or not os.path.isdir(parent):
    return []
  try:
    names = sorted(os.listdir(parent))
  except OSError:
    return []
  return [n for n in names if os.path.isfile(os.path.join(parent, n, records.MANIFEST))]


def _configured_splits(data_cfg: Mapping[str, Any]) -> list[str]:
  """The train and eval splits a data block names (checked when the dataset is opened, so a
  wrong `split_index` fails before training, not at the first evaluation)."""
  return [s for s in (data_cfg.get("split"), data_cfg.get("eval_split")) if s]


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
