"""Metric sinks: WORKDIR/metrics.jsonl (one object per logged step) and TensorBoard event files."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np


class MetricsWriter:
  """Writes scalars to metrics.jsonl and TensorBoard; only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for key, value in scalars.items():
      value = float(np.asarray(value))
      row[key] = value if math.isfinite(value) else str(value)
      self._tb.add_scalar(key, value, int(step))
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
    self._tb.flush()

  def truncate_after(self, step: int) -> None:
    """Drops rows logged after `step` (a resumed run logs those steps again)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path, encoding="utf-8") as f:
      rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(rows)
    os.replace(tmp, self.path)

  def image(self, tag: str, step: int, png_path: str) -> None:
    """Adds a PNG written elsewhere to TensorBoard."""
    if not self.enabled:
      return
    import matplotlib.image  # pylint: disable=import-outside-toplevel
    image = matplotlib.image.imread(png_path)[..., :3]
    self._tb.add_image(tag, image, int(step), dataformats="HWC")
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """Rows of WORKDIR/metrics.jsonl."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
