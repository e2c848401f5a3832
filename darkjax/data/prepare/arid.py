"""ARID v1.0 (`arid_v1`) and ARID v1.5 (`arid_v1_5`): Action Recognition In the Dark (Xu et al.,
https://xuyu0010.github.io/arid.html, https://github.com/xuyu0010/ARID_v1).

Classes (11, label order of the official lists and `mapping_table.txt`):
  Drink, Jump, Pick, Pour, Push, Run, Sit, Stand, Turn, Walk, Wave.
Splits, from the release's `list_cvt/` folder, one video per line as
`index<TAB>label<TAB>Class/clip.avi` (the lists say `.avi`, the release ships `.mp4`; either is
found); `*_other.txt` lists (videos in neither part of a split) are ignored:
  v1.0: the 3 official splits, `ARID_split{k}_train.txt`, `ARID_split{k}_test.txt` (k = 1..3);
  v1.5: 2 splits numbered from 0, `split_{k}/split{k}_train.txt`, `split_{k}/split{k}_test.txt`
  (k = 0, 1).
Written as manifest splits `train1`/`test1` .. (v1.5's split 0 is `train1`/`test1`).
Expected `--src`: the unpacked archive, e.g. v1.0's
  SRC/clips_v1/Drink/Drink_1_1.mp4 ... and SRC/list_cvt/ARID_split1_train.txt ...
and v1.5's SRC/clips_v1.5/... and SRC/list_cvt/split_0/split0_train.txt ... . The folder holding
the 11 class folders with videos is found anywhere below SRC (of several, the release's own
`clips_v1` / `clips_v1.5`; one named for the other version is an error), its release folder's
lists first. A label in a list that disagrees with the class folder of its path is an error
naming the list file and line.
"""

from __future__ import annotations

import os
import re

from darkjax.data import video
from darkjax.data.prepare import common

CLASSES = ["Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk", "Wave"]
# `ARID_split1_train.txt`, `split0_test.txt`; `train_split1.txt` (Dark-48's annotations).
_SPLIT_THEN_KIND = re.compile(r"split_?(\d+)_?(train|test)[^/]*\.(txt|csv)$", re.IGNORECASE)
_KIND_THEN_SPLIT = re.compile(r"(?:^|[^a-z])(train|test)_?split_?(\d+)[^/]*\.(txt|csv)$",
                              re.IGNORECASE)
CLIPS_FOLDERS = {"arid_v1": "clips_v1", "arid_v1_5": "clips_v1.5"}


def parse_split_list(path: str, class_names: list[str], index: common.VideoIndex,
                     check_label: bool = True) -> list[common.VideoItem]:
  """Reads an `index label Class/clip` list (also `Class/clip [label]`); labels from the folder,
  checked against the one the line states (`check_label`)."""
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
    # `index label Class/clip` (ARID) states the label second; `Class/clip label` (Dark-48) and
    # `Class/clip frames label` last.
    stated = (numbers[-1] if numbers else None) if fields[0] == rel else (
        numbers[1] if len(numbers) >= 2 else None)
    if check_label and stated is not None and int(stated) != label:
      raise common.PrepareError(f"{path}:{line_number}: label {stated} but {rel!r} is in "
                                f"folder {class_names[label]} (label {label})")
    resolved = index.resolve(rel)
    items.append(common.VideoItem(resolved, label, os.path.relpath(resolved, index.root)))
  return items


def list_split(name: str) -> tuple[str, int] | None:
  """('train' | 'test', the number in the name) of a split list's file name, or None."""
  match = _SPLIT_THEN_KIND.search(name)
  if match:
    return match.group(2).lower(), int(match.group(1))
  match = _KIND_THEN_SPLIT.search(name)
  if match:
    return match.group(1).lower(), int(match.group(2))
  return None


def official_split_lists(src: str, num_splits: int = 3,
                         ignore_dirs: tuple[str, ...] = ()) -> dict[str, str]:
  """{'train1': path, 'test1': path, ...} of the split lists under `src`: splits 1..num_splits
  are required (missing ones raise), further numbered pairs are kept. Lists numbered from 0
  (ARID v1.5's `split_0/split0_train.txt`) become splits 1, 2, ...; `*_other(s)` lists and those
  in a folder named in `ignore_dirs` are not split lists; two lists for one split raise."""
  entries = []
  for path in common.find_files(src, lambda f: list_split(f) is not None):
    folders = os.path.relpath(os.path.dirname(path), src).lower().split(os.sep)
    if "other" in os.path.basename(path).lower() or set(folders) & set(ignore_dirs):
      continue
    kind, number = list_split(os.path.basename(path))
    entries.append((kind, number, path))
  first = 0 if any(number == 0 for _, number, _ in entries) else 1
  found: dict[str, list[str]] = {}
  for kind, number, path in entries:
    found.setdefault(f"{kind}{number - first + 1}", []).append(path)
  several = {split: paths for split, paths in found.items() if len(paths) > 1}
  if several:
    split, paths = sorted(several.items())[0]
    raise common.PrepareError(f"several split lists for {split} under {src}: {paths}; keep the "
                              f"release's own (move copies such as `name (1).txt` away) or give "
                              f"--src the one release folder")
  wanted = [f"{kind}{k}" for k in range(1, num_splits + 1) for kind in ("train", "test")]
  missing = [w for w in wanted if w not in found]
  if missing:
    raise common.PrepareError(f"split lists for {missing} not found under {src} (looked for files "
                              f"named like ARID_split1_train.txt, split0_test.txt or "
                              f"train_split1.txt)")
  k = num_splits + 1
  while f"train{k}" in found and f"test{k}" in found:
    wanted += [f"train{k}", f"test{k}"]
    k += 1
  return {w: found[w][0] for w in wanted}


def layout_from_lists(name: str, src: str, class_names: list[str], num_splits: int = 3,
                      root: str | None = None,
                      ignore_dirs: tuple[str, ...] = ()) -> common.Layout:
  """The classes' videos under `root` (default: the folder of class folders under `src` that
  holds them) and the split lists, looked for first in the release folder around the videos,
  then anywhere under `src`."""
  src = os.path.abspath(src)
  root = root or common.find_dir_with_subdirs(src, class_names)
  index = common.VideoIndex(root)
  release = os.path.dirname(root)
  lists = None
  if release != src and os.path.commonpath([release, src]) == src:
    try:
      lists = official_split_lists(release, num_splits, ignore_dirs)
    except common.PrepareError:
      lists = None
  if lists is None:
    lists = official_split_lists(src, num_splits, ignore_dirs)
  splits = {split: parse_split_list(path, class_names, index) for split, path in lists.items()}
  return common.Layout(name, list(class_names), splits, {
      "source": src, "video_root": os.path.relpath(root, src),
      "split_source": {s: os.path.relpath(p, src) for s, p in lists.items()}})


def _arid(name: str, src: str, num_splits: int) -> common.Layout:
  root = common.find_dir_with_subdirs(src, CLASSES, prefer=CLIPS_FOLDERS[name])
  folder = os.path.basename(root)
  other = next((n for n, f in CLIPS_FOLDERS.items() if n != name and f == folder), None)
  if other is not None:
    raise common.PrepareError(f"{name}: the videos under {src} are in {root}, the folder of "
                              f"{other}'s release; prepare it with --dataset {other}, or give "
                              f"--src the {name} release (its {CLIPS_FOLDERS[name]}/)")
  return layout_from_lists(name, src, CLASSES, num_splits, root=root)


def arid_v1(src: str) -> common.Layout:
  return _arid("arid_v1", src, num_splits=3)


def arid_v1_5(src: str) -> common.Layout:
  return _arid("arid_v1_5", src, num_splits=2)
