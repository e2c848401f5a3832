"""Classification metrics over a whole split: top-k, per-class accuracy, confusion matrix (+ PNG)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def accumulate(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, index: np.ndarray,
               store: dict[int, tuple[np.ndarray, int]]) -> None:
  """Adds the real (mask == 1) rows of a batch to `store` keyed by example index."""
  for row in np.nonzero(mask > 0)[0]:
    key = int(index[row])
    if key in store:
      raise RuntimeError(f"eval example {key} seen twice: the eval pipeline is not exact")
    store[key] = (np.asarray(scores[row], np.float32), int(labels[row]))


def metrics(store: dict[int, tuple[np.ndarray, int]], num_classes: int,
            expected_examples: int | None = None) -> dict[str, object]:
  """top1/top5/mean per-class accuracy, plus `per_class` and `confusion` arrays."""
  if expected_examples is not None and len(store) != expected_examples:
    raise RuntimeError(f"eval saw {len(store)} examples, the manifest lists {expected_examples}")
  if not store:
    raise RuntimeError("eval saw no examples")
  keys = sorted(store)
  scores = np.stack([store[k][0] for k in keys])
  labels = np.array([store[k][1] for k in keys])
  order = np.argsort(-scores, axis=1)
  top1 = float(np.mean(order[:, 0] == labels))
  k = min(5, num_classes)
  top5 = float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1)))
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, order[:, 0]), 1)
  support = confusion.sum(axis=1)
  per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
  return {"top1": top1, "top5": top5, "mean_class_acc": float(np.nanmean(per_class)),
          "per_class": per_class, "confusion": confusion, "num_examples": len(keys)}


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str,
                   title: str = "") -> str:
  """Writes a row-normalised confusion matrix PNG with class names and counts."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  n = len(class_names)
  rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  size = max(4.0, 0.45 * n + 2)
  fig, ax = plt.subplots(figsize=(size + 1, size))
  im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
  ax.set_yticks(range(n), class_names, fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if n <= 30:
    for i in range(n):
      for j in range(n):
        if confusion[i, j]:
          ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                  color="white" if rates[i, j] > 0.5 else "black")
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
