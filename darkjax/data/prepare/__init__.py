"""Turning downloaded video datasets into pre-decoded darkjax TFRecord datasets, once.

  python -m darkjax.data.prepare --dataset arid_v1 --src ~/Downloads/ARID \
      --out ~/darkjax_data/arid_v1

One module per archive layout (arid.py, infar.py, dark48.py, hmdb51.py, ucf101.py) turns `--src`
into a `common.Layout` (classes + split membership); `common.prepare` decodes, resizes and writes
it. `folder.py` reads a dataset of the user's own: a folder per class, split lists optional
(`--dataset folder --name NAME`).
UAV-Human(-Fisheye) is not here: no public documentation of its archive layout and split lists
could be checked, so there is no reader and no config for it (docs/datasets.md).
Why not a tensorflow-datasets builder: TFDS builders write through `tf.io` and need TensorFlow at
build time, which darkjax never imports; the prepare command writes the same TFRecord wire format.
"""

from __future__ import annotations

from typing import Callable

from darkjax.data.prepare import arid, common, dark48, folder, hmdb51, infar, ucf101
from darkjax.data.prepare.common import Layout, PrepareError, prepare


LAYOUTS: dict[str, Callable[[str], Layout]] = {
    "arid_v1": arid.arid_v1, "arid_v1_5": arid.arid_v1_5, "infar": infar.infar,
    "xd145": infar.xd145, "dark48": dark48.dark48, "hmdb51": hmdb51.hmdb51,
    "ucf101": ucf101.ucf101,
}
# A dataset of the user's own (darkjax/data/prepare/folder.py); its options are `find_layout`'s.
FOLDER = "folder"
# Names a folder dataset may not take: the datasets with readers of their own, and the embedded one.
RESERVED_NAMES = (*LAYOUTS, "synthetic")


def find_layout(dataset: str, src: str, **folder_options) -> Layout:
  """The classes and splits of `dataset` as found under `src`; `folder_options` (name,
  num_splits, test_fraction, val_fraction, seed, group_pattern) for `folder`, the user's own
  dataset."""
  if dataset == FOLDER:
    if not folder_options.get("name"):
      raise PrepareError("--dataset folder needs the dataset's name (--name, or an --out whose "
                         "base name is one)")
    return folder.folder(src, reserved=RESERVED_NAMES, **folder_options)
  if dataset not in LAYOUTS:
    raise PrepareError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(LAYOUTS))}, "
                       f"{FOLDER}")
  if folder_options:
    raise PrepareError(f"{', '.join(sorted(folder_options))}: options of --dataset {FOLDER}, not "
                       f"of {dataset}, whose release fixes its name and splits")
  return LAYOUTS[dataset](src)


__all__ = ["FOLDER", "LAYOUTS", "RESERVED_NAMES", "Layout", "PrepareError", "find_layout",
           "prepare"]
