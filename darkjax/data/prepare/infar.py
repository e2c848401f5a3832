"""InfAR (`infar`, infrared; Gao et al., "InfAR dataset: Infrared action recognition at different
times", Neurocomputing 2016) and XD145 (`xd145`, its visible-light twin; Liu et al., "Transferable
Feature Representation for Visible-to-Infrared Cross-Dataset Human Action Recognition", 2019).

Classes (12, both datasets, in this label order):
  fight, handclapping, handshake, hug, jog, jump, punch, push, skip, walk, wave1, wave2.
50 clips per class. Neither release ships split lists; the seeds' protocol is 5 random splits with
30 train / 20 test clips per class. `protocol_splits` draws them with numpy's PCG64 seeded by (seed,
split number) over each class's clips sorted by path, so the same seed gives the same splits on any
machine; they are written as manifest splits `train1`/`test1` .. `train5`/`test5`, and the seed and
every split's video list go into the manifest metadata (`protocol`, `split_lists`).
Expected `--src`: one folder per class (names matched case-insensitively) holding the videos, at any
depth below SRC; or, failing that, videos whose file names start with the class name
(`fight_01.avi`). A class without exactly 50 clips is an error naming the class and its count.
"""

from __future__ import annotations

import os

import numpy as np

from darkjax.data.prepare import common

CLASSES = ["fight", "handclapping", "handshake", "hug", "jog", "jump", "punch", "push", "skip",
           "walk", "wave1", "wave2"]
CLIPS_PER_CLASS = 50
TRAIN_PER_CLASS, TEST_PER_CLASS, NUM_SPLITS, DEFAULT_SEED = 30, 20, 5, 0


def protocol_splits(videos_by_class: dict[int, list[common.VideoItem]], seed: int = DEFAULT_SEED,
                    num_splits: int = NUM_SPLITS, train_per_class: int = TRAIN_PER_CLASS,
                    test_per_class: int = TEST_PER_CLASS) -> dict[str, list[common.VideoItem]]:
  """`train{k}` / `test{k}` for k = 1..num_splits: per class a seeded permutation, first
  `train_per_class` to train, next `test_per_class` to test."""
  splits: dict[str, list[common.VideoItem]] = {}
  for k in range(1, num_splits + 1):
    rng = np.random.default_rng([seed, k])
    train, test = [], []
    for label in sorted(videos_by_class):
      videos = sorted(videos_by_class[label], key=lambda v: v.video_id)
      if len(videos) < train_per_class + test_per_class:
        raise common.PrepareError(f"class {label} has {len(videos)} clips, the protocol needs "
                                  f"{train_per_class} + {test_per_class}")
      order = rng.permutation(len(videos))
      train += [videos[i] for i in order[:train_per_class]]
      test += [videos[i] for i in order[train_per_class:train_per_class + test_per_class]]
    splits[f"train{k}"], splits[f"test{k}"] = train, test
  return splits


def videos_by_class(src: str, class_names: list[str]) -> dict[int, list[common.VideoItem]]:
  lower = {c.lower(): i for i, c in enumerate(class_names)}
  try:
    root = common.find_dir_with_subdirs(src, class_names)
    by_folder, folder_error = True, None
  except common.PrepareError as error:   # then the clips' file names carry the class
    root, by_folder, folder_error = os.path.abspath(src), False, error
  index = common.VideoIndex(root)
  found: dict[int, list[common.VideoItem]] = {i: [] for i in range(len(class_names))}
  for rel in sorted(set(index.by_key.values())):
    parts = rel.replace("\\", "/").split("/")
    if by_folder:
      label = lower.get(parts[0].lower())
    else:  # longest class name that prefixes the file name ("wave1" before "wave")
      base = parts[-1].lower()
      label = next((lower[c] for c in sorted(lower, key=len, reverse=True)
                    if base.startswith(c)), None)
    if label is not None:
      found[label].append(common.VideoItem(os.path.join(root, rel), label, rel))
  if folder_error is not None and not all(found.values()):
    # neither layout: the folder search says which class folders it missed
    empty = [class_names[c] for c, items in found.items() if not items]
    raise common.PrepareError(f"no clips found for classes {empty[:8]} by file name, and "
                              f"{folder_error}")
  return found


def _layout(name: str, src: str, seed: int) -> common.Layout:
  by_class = videos_by_class(src, CLASSES)
  wrong = {CLASSES[c]: len(v) for c, v in by_class.items() if len(v) != CLIPS_PER_CLASS}
  if wrong:
    raise common.PrepareError(f"{name} under {src}: every class needs {CLIPS_PER_CLASS} clips; "
                              f"found {wrong}")
  splits = protocol_splits(by_class, seed)
  return common.Layout(name, list(CLASSES), splits, {
      "source": os.path.abspath(src),
      "protocol": {"seed": seed, "num_splits": NUM_SPLITS, "train_per_class": TRAIN_PER_CLASS,
                   "test_per_class": TEST_PER_CLASS,
                   "rng": "numpy default_rng([seed, k]) permutation of each class sorted by path"},
      "split_lists": {s: sorted(v.video_id for v in items) for s, items in splits.items()}})


def infar(src: str, seed: int = DEFAULT_SEED) -> common.Layout:
  return _layout("infar", src, seed)


def xd145(src: str, seed: int = DEFAULT_SEED) -> common.Layout:
  return _layout("xd145", src, seed)
