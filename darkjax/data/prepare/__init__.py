"""Turning downloaded video datasets into pre-decoded darkjax TFRecord datasets, once.

  python -m darkjax.data.prepare --dataset arid_v1 --src ~/Downloads/ARID \
      --out ~/darkjax_data/arid_v1

One module per archive layout (arid.py, infar.py, dark48.py, hmdb51.py, ucf101.py) turns `--src`
into a `common.Layout` (classes + split membership); `common.prepare` decodes, resizes and writes
it.
UAV-Human(-Fisheye) is not here: no public documentation of its archive layout and split lists
could be checked, so there is no reader and no config for it (docs/datasets.md).
Why not a tensorflow-datasets builder: TFDS builders write through `tf.io` and need TensorFlow at
build time, which darkjax never imports; the prepare command writes the same TFRecord wire format.
"""

from __future__ import annotations

from typing import Callable

from darkjax.data.prepare import arid, common, dark48, hmdb51, infar, ucf101
from darkjax.data.prepare.common import Layout, PrepareError, prepare


LAYOUTS: dict[str, Callable[[str], Layout]] = {
    "arid_v1": arid.arid_v1, "arid_v1_5": arid.arid_v1_5, "infar": infar.infar,
    "xd145": infar.xd145, "dark48": dark48.dark48, "hmdb51": hmdb51.hmdb51,
    "ucf101": ucf101.ucf101,
}


def find_layout(dataset: str, src: str) -> Layout:
  """The classes and splits of `dataset` as found under `src`."""
  if dataset not in LAYOUTS:
    raise PrepareError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(LAYOUTS))}")
  return LAYOUTS[dataset](src)


__all__ = ["LAYOUTS", "Layout", "PrepareError", "find_layout", "prepare"]
