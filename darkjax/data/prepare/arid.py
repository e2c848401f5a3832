"""ARID v1.0 (`arid_v1`) and ARID v1.5 (`arid_v1_5`): Action Recognition In the Dark (Xu et al.,
https://xuyu0010.github.io/arid.html, https://github.com/xuyu0010/ARID_v1).

Classes (11, label order of the official lists and `mapping_table.txt`):
  Drink, Jump, Pick, Pour, Push, Run, Sit, Stand, Turn, Walk, Wave.
Splits: the 3 official splits, from the release's `list_cvt/` folder:
  ARID_split{k}_train.txt, ARID_split{k}_test.txt (k = 1..3; `*_others.txt` lists are ignored),
  one video per line: `index<TAB>label<TAB>Class/clip.mp4`. Written as manifest splits
  `train1`/`test1` .. `train3`/`test3`.
Expected `--src`: the unpacked archive, e.g.
  SRC/clips_v1/Drink/Drink_1_1.mp4 ... and SRC/list_cvt/ARID_split1_train.txt ...
(any directory below SRC holding the 11 class folders is found; ARID v1.5 has the same layout and
list format, its lists may be named `ARID1.5_split1_train.txt`). A label in a list that disagrees
with the class folder of its path is an error naming the list file and line.
"""

from __future__ import annotations

import os
import re

from darkjax.data import video
from darkjax.data.prepare import common

CLASSES = ["Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk", "Wave"]
_LIST_NAME = re.compile(r"split_?(\d+)_?(train|test)[^/]*\.(txt|csv)$", re.IGNORECASE)


def parse_split_list(path: str, class_names: list[str], index: common.VideoIndex,
                     check_label: bool = True) -> list[common.VideoItem]:
  """Reads an `index label Class/clip` list (also `Class/clip [label]`); labels from the folder."""
  lower = {c.lower(): i for i, c in enumerate(class_names)}
  items = []
  for line_number, fields in common.read_lines(path):
    fields = [f.strip(",") for f in fields]
    rel = next((f for f in reversed(fields) if "/" in f or "\\" in f
                or video.is_video_file(f)), None)
    if rel is None:
      raise common.PrepareError(f"{path}:{line_number}: no video path in {' '.join(fields)!r}")
    folder = rel.replace("\\", "/").split("/")[0].lower()
    if folder not in lower:
      raise common.PrepareError(f"{path}:{line_number}: class folder {folder!r} of {rel!r} is not "
                                f"one of {class_names}")
    label = lower[folder]
    numbers = [f for f in fields if f != rel and f.lstrip("-").isdigit()]
    if check_label and len(numbers) >= 2 and int(numbers[1]) != label:
      raise common.PrepareError(f"{path}:{line_number}: label {numbers[1]} but {rel!r} is in "
                                f"folder {class_names[label]} (label {label})")
    resolved = index.resolve(rel)
    items.append(common.VideoItem(resolved, label, os.path.relpath(resolved, index.root)))
  return items


def official_split_lists(src: str, num_splits: int = 3) -> dict[str, str]:
  """{'train1': path, 'test1': path, ...} of the split lists under `src`; missing ones raise."""
  found: dict[str, str] = {}
  for path in common.find_files(src, lambda f: bool(_LIST_NAME.search(f))):
    if "other" in os.path.basename(path).lower():
      continue
    match = _LIST_NAME.search(os.path.basename(path))
    found.setdefault(f"{match.group(2).lower()}{int(match.group(1))}", path)
  wanted = [f"{kind}{k}" for k in range(1, num_splits + 1) for kind in ("train", "test")]
  missing = [w for w in wanted if w not in found]
  if missing:
    raise common.PrepareError(f"split lists for {missing} not found under {src} (looked for files "
                              f"named like ARID_split1_train.txt / ARID_split1_test.txt)")
  return {w: found[w] for w in wanted}


def layout_from_lists(name: str, src: str, class_names: list[str],
                      num_splits: int = 3) -> common.Layout:
  root = common.find_dir_with_subdirs(src, class_names)
  index = common.VideoIndex(root)
  lists = official_split_lists(src, num_splits)
  splits = {split: parse_split_list(path, class_names, index) for split, path in lists.items()}
  return common.Layout(name, list(class_names), splits, {
      "source": os.path.abspath(src),
      "split_source": {s: os.path.relpath(p, src) for s, p in lists.items()}})


def arid_v1(src: str) -> common.Layout:
  return layout_from_lists("arid_v1", src, CLASSES)


def arid_v1_5(src: str) -> common.Layout:
  return layout_from_lists("arid_v1_5", src, CLASSES)
