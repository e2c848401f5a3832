"""Your own dataset (`folder`): a folder per class holding its videos, with or without split lists.

  python -m darkjax.data.prepare --dataset folder --src ~/my_night_clips \
      --out $DARKJAX_DATA/my_night_clips [--name my_night_clips] [--short-side 128]

Classes: the folders of the class root that hold videos (at any depth below them), sorted by name
(label = position), or, where `classes.txt` / `classInd.txt` sits in SRC or the class root, its
lines in order (`name`, or `index name` numbered from 0 or 1; label = rank of the index): every
class it names needs its folder (matched case-insensitively) and every folder with videos must be
one of its classes. The class root is SRC, or the one folder below it that holds all the videos
(`SRC/videos/<class>/...`). A video directly in the class root, outside a class folder, is an
error (its class would be a guess), as are class folders whose names differ only in case and a
link from one class folder into another (its videos would take two labels).
Where the class root's folders are `train` and `test` (and `val` / `validation`), they are the
split's parts (`train1`, `test1`, `val1`) and the folders inside them the classes
(`SRC/train/<class>/<clip>`, the image-folder layout).
Splits, from the first of (a video in two parts of a split is an error):
  - split lists anywhere under SRC named as the official releases name theirs
    (`train_split1.txt` / `test_split1.txt`, `split1_train.txt`, ... numbered from 0 or 1; every
    numbered pair found), or one `train.txt` + `test.txt` pair (split 1; a `val.txt` beside them
    is split 1's validation part, `val1`); one video per line as
    `class/clip.mp4`, optionally with a label (`class/clip.mp4 3`, `index label class/clip`). The
    label comes from the class folder; a stated one is checked against it when a `classes.txt`
    fixes the numbering, and ignored otherwise. A numbered list without its pair, or after a gap
    in the numbers, is an error.
  - `train` / `test` (/ `val`) folders, as above.
  - without lists, `num_splits` seeded random splits (default 1): per class, its groups (each video
    its own group unless `group_pattern` says otherwise) in numpy's PCG64 permutation seeded by
    (seed, k), test takes groups until it holds `test_fraction` of the class's videos (at least one
    group, and one group is always left to train). `group_pattern` is a regular expression whose
    first match in a video's path below its class folder names its group, so that clips cut from
    one recording or showing one actor (`--group-pattern '^[^_]+_[0-9]+'` groups ARID-style
    `Drink_3_1.mp4` by actor) never sit on both sides of a split. Same seed, same splits on any
    machine; each split's video list goes into the manifest (`metadata.split_lists`). With
    `val_fraction`, each class's remaining groups give that share of its videos to `val<k>` (a
    group always left to train): a part to choose settings on without looking at the test videos
    (`--config.input.data.eval_split=val` evaluates on it).
Written as manifest splits `train1` / `test1` .. ; a config reads split k with its `split=k` arg.
The manifest's name (`--name`, default the base name of `--out`) is the dataset's name in shard
files, reports and the `dataset=NAME` arg a paper config reads it with (docs/datasets.md, "Your
own dataset"). `metadata.warnings` (printed by prepare) names a split's part without a video of
some class (never trained, or left out of its accuracies) and drawn splits that came out the same.
"""

from __future__ import annotations

import os
import re

import numpy as np

from darkjax.data import prepared, video
from darkjax.data.prepare import arid, common

CLASS_FILES = ("classes.txt", "classind.txt")
DEFAULT_TEST_FRACTION, DEFAULT_SEED = 0.25, 0
_PLAIN_LISTS = ("train.txt", "test.txt")
_VAL_LIST = "val.txt"


def check_name(name: str, reserved: tuple[str, ...] = ()) -> str:
  """A dataset name for shard files and configs: letters, digits, `_`, `.` and `-`; not the name
  of a dataset darkjax has a reader of its own for (`reserved`)."""
  if not prepared.DATASET_NAME.match(name):
    raise common.PrepareError(f"dataset name {name!r}: use letters, digits, '_', '.' and '-' "
                              f"(it names the shard files); give one with --name")
  if name.lower() == "synthetic":
    raise common.PrepareError(f"dataset name {name!r} is the embedded synthetic dataset's; give "
                              f"your dataset another --name")
  if name.lower() in reserved:
    raise common.PrepareError(f"dataset name {name!r} is one darkjax reads with its own reader "
                              f"(--dataset {name.lower()}); prepare that release with it, or give "
                              f"your dataset another --name")
  return name


def _folders_with_videos(directory: str) -> list[str]:
  """Sub-folders of `directory` with a video at any depth below them, sorted by name."""
  return [sub for sub in sorted(os.listdir(directory))
          if os.path.isdir(os.path.join(directory, sub)) and common.holds_videos(directory, [sub])]


def _loose_videos(directory: str) -> list[str]:
  return sorted(f for f in os.listdir(directory)
                if video.is_video_file(f) and os.path.isfile(os.path.join(directory, f)))


def class_root(src: str) -> str:
  """SRC, or the folder below it every video is in, down a chain of single folders that hold
  folders, not videos."""
  root = os.path.abspath(src)
  for _ in range(8):
    folders = _folders_with_videos(root)
    # a lone folder holding videos of its own is a class, not a folder of classes
    if len(folders) != 1 or _loose_videos(root) or _loose_videos(os.path.join(root, folders[0])):
      return root
    root = os.path.join(root, folders[0])
  return root


def read_class_file(path: str) -> list[str]:
  """Class names of a `classes.txt`: `name` lines in order, or `index name` lines in index order."""
  rows = [fields for _, fields in common.read_lines(path)]
  if not rows:
    raise common.PrepareError(f"{path}: no class names")
  if all(len(r) >= 2 and r[0].isdigit() for r in rows):
    indexed = sorted(rows, key=lambda r: int(r[0]))
    numbers = [int(r[0]) for r in indexed]
    if numbers not in (list(range(len(rows))), list(range(1, len(rows) + 1))):
      raise common.PrepareError(f"{path}: `index name` lines need the indices 0..{len(rows) - 1} "
                                f"or 1..{len(rows)} once each; found {numbers}")
    names = [" ".join(r[1:]) for r in indexed]
  elif all(len(r) == 1 for r in rows):
    names = [r[0] for r in rows]
  else:
    raise common.PrepareError(f"{path}: each line must be `name` or `index name`, the same form "
                              f"on every line")
  repeated = sorted({n for n in names if [m.lower() for m in names].count(n.lower()) > 1})
  if repeated:
    raise common.PrepareError(f"{path}: classes named more than once: {repeated}")
  return names


def _class_file(src: str, root: str) -> str | None:
  for directory in dict.fromkeys((os.path.abspath(src), root)):
    for name in os.listdir(directory):
      if name.lower() in CLASS_FILES and os.path.isfile(os.path.join(directory, name)):
        return os.path.join(directory, name)
  return None


# Folders of SRC that are the parts of one split (SRC/train/<class>/...), by lower-case name.
PART_FOLDERS = {"train": "train", "test": "test", "val": "val", "validation": "val"}


def split_folders(root: str, folders: list[str]) -> dict[str, str] | None:
  """{'train': path, 'test': path[, 'val': path]} where `folders`, those of `root` that hold
  videos, are a split's parts (train and test, optionally val or validation) rather than
  classes."""
  parts = {PART_FOLDERS.get(f.lower()): f for f in folders}
  if not folders or None in parts or not {"train", "test"} <= set(parts) \
      or len(parts) != len(folders):
    return None
  return {part: os.path.join(root, folder) for part, folder in parts.items()}


def _check_case(where: str, folders: list[str]) -> None:
  seen: dict[str, str] = {}
  for folder_name in folders:
    other = seen.setdefault(folder_name.lower(), folder_name)
    if other != folder_name:
      raise common.PrepareError(f"{where}: class folders {other!r} and {folder_name!r} differ only "
                                f"in case, which a class name may not (split lists and classes.txt "
                                f"match them case-insensitively): merge or rename one")


def _check_links(class_dirs: dict[str, str]) -> None:
  """A class folder holding a link into another class folder would give that class's videos its
  own label: refused, naming the link."""
  reals = {name: os.path.realpath(path) for name, path in class_dirs.items()}
  for name, path in class_dirs.items():
    for directory, _, _ in common.walk(path):
      real = os.path.realpath(directory)
      for other, other_real in reals.items():
        if other != name and (real == other_real or real.startswith(other_real + os.sep)):
          raise common.PrepareError(f"{directory} leads into class folder {other!r} "
                                    f"({other_real}): its videos would be labelled {name!r} too; "
                                    f"remove the link")


def classes(src: str) -> tuple[str, list[str], str | None, dict[str, str] | None]:
  """(class root, class names in label order, the class file read or None, the split's part
  folders or None): the class folders are the root's folders with videos, or, where those are
  `train` / `test` (/ `val`) folders, the folders with videos inside them."""
  root = class_root(src)
  loose = _loose_videos(root)
  if loose:
    raise common.PrepareError(f"{root} holds videos outside any class folder ({loose[:3]}"
                              f"{' ...' if len(loose) > 3 else ''}): put each video in the folder "
                              f"of its class (SRC/<class>/<clip>)")
  folders = _folders_with_videos(root)
  parts = split_folders(root, folders)
  if parts is None:
    _check_case(root, folders)
    _check_links({f: os.path.join(root, f) for f in folders})
  else:
    folders = []
    for part, path in parts.items():
      loose = _loose_videos(path)
      if loose:
        raise common.PrepareError(f"{path} holds videos outside any class folder ({loose[:3]}): "
                                  f"put each in the folder of its class ({path}/<class>/<clip>)")
      inside = _folders_with_videos(path)
      _check_case(path, inside)
      _check_links({f: os.path.join(path, f) for f in inside})
      folders += inside
    merged: dict[str, str] = {}   # a class's folders in the parts, matched case-insensitively
    for folder_name in folders:
      merged.setdefault(folder_name.lower(), folder_name)
    folders = sorted(merged.values())
  class_file = _class_file(src, root)
  if class_file is None:
    if len(folders) < 2:
      raise common.PrepareError(f"{src}: found {len(folders)} class folder(s) with videos "
                                f"({folders}); a dataset needs at least 2 classes, each a folder "
                                f"of its videos (SRC/<class>/<clip>)")
    return root, folders, None, parts
  names = read_class_file(class_file)
  by_lower = {f.lower(): f for f in folders}
  missing = [n for n in names if n.lower() not in by_lower]
  if missing:
    raise common.PrepareError(f"{class_file} names classes with no folder of videos in {root}: "
                              f"{missing[:8]}{' ...' if len(missing) > 8 else ''}")
  extra = sorted(set(by_lower) - {n.lower() for n in names})
  if extra:
    raise common.PrepareError(f"{root}: folders {[by_lower[e] for e in extra][:8]} hold videos "
                              f"but are not classes of {class_file}: add them to it or move them "
                              f"out of {root}")
  return root, [by_lower[n.lower()] for n in names], class_file, parts


def _videos_of(directory: str, class_names: list[str], base: str | None = None) -> \
    dict[int, list[common.VideoItem]]:
  """Per label the videos of each class folder in `directory` (ids relative to `base`, default
  `directory`), every file once."""
  base = base or directory
  lower = {c.lower(): i for i, c in enumerate(class_names)}
  by_class: dict[int, list[common.VideoItem]] = {i: [] for i in range(len(class_names))}
  for folder_name in sorted(os.listdir(directory)):
    label = lower.get(folder_name.lower())
    path = os.path.join(directory, folder_name)
    if label is None or not os.path.isdir(path):
      continue
    for current, _, names in common.walk(path):
      for file in sorted(names):
        if video.is_video_file(file):
          full = os.path.join(current, file)
          by_class[label].append(common.VideoItem(full, label, os.path.relpath(full, base)))
  return by_class


def _numbered_lists(src: str) -> dict[str, str] | None:
  """{'train1': path, 'test1': path, ...} of the split lists under `src`, or None without any.
  Numbered lists must come in train / test pairs numbered without gaps: one left over is an error,
  not passed over (the drawn splits would replace the user's)."""
  numbered = [path for path in common.find_files(src, lambda f: arid.list_split(f) is not None)
              if "other" not in os.path.basename(path).lower()]
  if numbered:
    lists = arid.official_split_lists(src, num_splits=1)
    unused = [os.path.relpath(u, src) for u in sorted(set(numbered) - set(lists.values()))]
    if unused:
      raise common.PrepareError(f"split lists under {src}: {unused} are not part of a train / "
                                f"test pair numbered after {sorted(lists)}: add the list that "
                                f"completes each pair, or move it away")
    return lists
  plain = {name: common.find_files(src, lambda f, n=name: f.lower() == n)
           for name in (*_PLAIN_LISTS, _VAL_LIST)}
  if not any(plain.values()):
    return None
  several = {n: p for n, p in plain.items() if len(p) > 1}
  missing = [n for n in _PLAIN_LISTS if not plain[n]]
  if several or missing:
    raise common.PrepareError(f"split lists under {src}: need one train.txt and one test.txt "
                              f"(and at most one val.txt), found {plain}")
  lists = {"train1": plain["train.txt"][0]}
  if plain[_VAL_LIST]:
    lists["val1"] = plain[_VAL_LIST][0]
  return {**lists, "test1": plain["test.txt"][0]}


def _below_class(video_id: str) -> str:
  """A video's path below its class folder (`walk/actor3/clip.mp4` -> `actor3/clip.mp4`)."""
  return video_id.replace("\\", "/").split("/", 1)[-1]


def _take(order: list[str], groups: dict[str, list[common.VideoItem]], wanted: float) -> int:
  """How many groups from the front of `order` hold about `wanted` videos: at least one, never
  the last (which trains)."""
  taken = chosen = 0
  for key in order[:-1]:
    size = len(groups[key])
    if chosen and (taken >= wanted or taken + size / 2 > wanted):
      break
    taken, chosen = taken + size, chosen + 1
  return chosen


def seeded_splits(by_class: dict[int, list[common.VideoItem]], num_splits: int = 1,
                  test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SEED,
                  group_pattern: str | None = None,
                  val_fraction: float = 0.0) -> dict[str, list[common.VideoItem]]:
  """`train{k}` / `test{k}` (and `val{k}` with `val_fraction`), k = 1..num_splits: per class, its
  groups in a seeded permutation, moved to test until test holds `test_fraction` of the class's
  videos (at least one group, never all of them), then from the rest to val likewise (while a
  group is left to train)."""
  pattern = _group_pattern(group_pattern, by_class)
  splits: dict[str, list[common.VideoItem]] = {}
  for k in range(1, num_splits + 1):
    rng = np.random.default_rng([seed, k])
    parts: dict[str, list[common.VideoItem]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_class):
      groups: dict[str, list[common.VideoItem]] = {}
      for item in sorted(by_class[label], key=lambda v: v.video_id):
        match = pattern.search(_below_class(item.video_id)) if pattern else None
        key = f"group {match.group(0)}" if match else f"video {item.video_id}"
        groups.setdefault(key, []).append(item)
      keys = sorted(groups)
      order = [keys[i] for i in rng.permutation(len(keys))] if len(keys) > 1 else keys
      videos = len(by_class[label])
      tested = _take(order, groups, test_fraction * videos)
      rest = order[tested:]
      validated = _take(rest, groups, val_fraction * videos) if val_fraction else 0
      for part, chosen in (("test", order[:tested]), ("val", rest[:validated]),
                           ("train", rest[validated:])):
        parts[part] += [item for key in sorted(chosen) for item in groups[key]]
    splits[f"train{k}"] = parts["train"]
    if val_fraction:
      splits[f"val{k}"] = parts["val"]
    splits[f"test{k}"] = parts["test"]
  return splits


def _group_pattern(group_pattern: str | None,
                   by_class: dict[int, list[common.VideoItem]]) -> re.Pattern | None:
  if not group_pattern:
    return None
  try:
    pattern = re.compile(group_pattern)
  except re.error as error:
    raise common.PrepareError(f"--group-pattern {group_pattern!r}: not a regular expression "
                              f"({error})") from None
  below = [_below_class(v.video_id) for items in by_class.values() for v in items]
  if below and not any(pattern.search(b) for b in below):
    raise common.PrepareError(f"--group-pattern {group_pattern!r} matches none of the videos' "
                              f"paths below their class folders (such as {below[0]!r}): every "
                              f"video would be its own group")
  return pattern


def _check_disjoint(splits: dict[str, list[common.VideoItem]], src: str) -> None:
  """One video in two parts of a split (train1 and test1) would be tested on after training on
  it: refused, naming it."""
  for k in sorted({re.sub(r"^[a-z]+", "", s) for s in splits}):
    seen: dict[str, str] = {}
    for part in ("train", "val", "test"):
      for item in splits.get(f"{part}{k}", []):
        real = os.path.realpath(item.path)
        other = seen.setdefault(real, part)
        if other != part:
          raise common.PrepareError(f"{src}: {item.video_id} is in both {other}{k} and {part}{k}: "
                                    f"a video the model trains on would be tested on; keep it in "
                                    f"one of them")


def _warnings(splits: dict[str, list[common.VideoItem]], class_names: list[str]) -> list[str]:
  """Classes a split's part has no video of (a mean class accuracy without them; a class never
  trained), and drawn splits identical to an earlier one."""
  found = []
  for split, items in splits.items():
    present = {v.label for v in items}
    absent = [c for i, c in enumerate(class_names) if i not in present]
    if absent:
      found.append(f"{split} has no video of the class(es) {absent[:8]}"
                   f"{' ...' if len(absent) > 8 else ''}: "
                   + ("they are never trained" if split.startswith("train") else
                      "its accuracies leave them out")
                   + " (more videos of them, or other split options or lists)")
  earlier: dict[tuple[str, ...], str] = {}
  for split, items in splits.items():
    if split.startswith("test"):
      ids = tuple(sorted(v.video_id for v in items))
      if ids in earlier:
        found.append(f"{split} holds the same videos as {earlier[ids]}: too few groups of videos "
                     f"for different splits")
      earlier.setdefault(ids, split)
  return found


def folder(src: str, name: str, num_splits: int | None = None,
           test_fraction: float | None = None, seed: int | None = None,
           group_pattern: str | None = None, val_fraction: float | None = None,
           reserved: tuple[str, ...] = ()) -> common.Layout:
  """The layout of your own dataset under `src` (module docstring); `reserved`: names it may not
  take (the datasets with readers of their own). The split options (None: their defaults) draw
  splits where `src` has no split lists."""
  drawing = {"--num-splits": num_splits, "--test-fraction": test_fraction, "--seed": seed,
             "--group-pattern": group_pattern, "--val-fraction": val_fraction}
  given = [flag for flag, value in drawing.items() if value is not None]
  num_splits = 1 if num_splits is None else num_splits
  test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
  seed = DEFAULT_SEED if seed is None else seed
  val_fraction = val_fraction or 0.0
  check_name(name, reserved)
  if not 0 < test_fraction < 1:
    raise common.PrepareError(f"--test-fraction {test_fraction:g}: must be between 0 and 1")
  if not 0 <= val_fraction < 1 - test_fraction:
    raise common.PrepareError(f"--val-fraction {val_fraction:g}: must be >= 0 and leave videos to "
                              f"train beside --test-fraction {test_fraction:g}")
  if num_splits < 1:
    raise common.PrepareError(f"--num-splits {num_splits}: must be >= 1")
  src = os.path.abspath(src)
  root, class_names, class_file, parts = classes(src)
  metadata = {"source": src, "layout": "folder", "video_root": os.path.relpath(root, src),
              "class_source": (os.path.relpath(class_file, src) if class_file
                               else "class folders sorted by name")}
  lists = _numbered_lists(src)
  fixed = (f"split lists {sorted(os.path.relpath(p, src) for p in lists.values())[:4]}"
           if lists is not None else
           f"the split's folders {sorted(os.path.relpath(p, src) for p in parts.values())}"
           if parts is not None else None)
  if fixed and given:
    raise common.PrepareError(f"{', '.join(given)}: draw splits where SRC has no split lists or "
                              f"train / test folders, and {src} has {fixed}: drop the options, or "
                              f"move those away to draw splits instead")
  if lists is not None:
    index = common.VideoIndex(root)
    splits = {split: arid.parse_split_list(path, class_names, index,
                                           check_label=class_file is not None)
              for split, path in lists.items()}
    metadata["split_source"] = {s: os.path.relpath(p, src) for s, p in lists.items()}
  elif parts is not None:
    splits = {f"{part}1": [v for items in _videos_of(path, class_names, root).values()
                           for v in items]
              for part, path in sorted(parts.items(), key=lambda p: ("train", "val", "test")
                                       .index(p[0]))}
    metadata["split_source"] = {f"{part}1": os.path.relpath(path, src)
                                for part, path in parts.items()}
  else:
    by_class = _videos_of(root, class_names)
    splits = seeded_splits(by_class, num_splits, test_fraction, seed, group_pattern, val_fraction)
    empty = [split for split, items in splits.items() if not items and split.startswith("test")]
    if empty:
      raise common.PrepareError(
          f"{src}: {empty[0]} would hold no video: every class is one group of videos ("
          + (f"--group-pattern {group_pattern!r} matches the same text in all of a class's "
             f"videos: give one that tells its recordings apart" if group_pattern else
             "one video each: a dataset needs more") + ")")
    metadata["protocol"] = {
        "seed": seed, "num_splits": num_splits, "test_fraction": test_fraction,
        "val_fraction": val_fraction, "group_pattern": group_pattern,
        "rng": "numpy default_rng([seed, k]) permutation of each class's groups sorted by name"}
    metadata["split_lists"] = {s: sorted(v.video_id for v in items) for s, items in splits.items()}
  _check_disjoint(splits, src)
  metadata["warnings"] = _warnings(splits, class_names)
  return common.Layout(name, list(class_names), splits, metadata)
