"""HMDB51 (`hmdb51`; Kuehne et al. 2011, https://serre-lab.clps.brown.edu/resource/hmdb-a-large-
human-motion-database/): 51 classes, the 3 official splits.

Classes: the 51 folder names of `hmdb51_org.rar` (brush_hair, cartwheel, catch, chew, clap, climb,
climb_stairs, dive, draw_sword, dribble, drink, eat, fall_floor, fencing, flic_flac, golf,
handstand, hit, hug, jump, kick, kick_ball, kiss, laugh, pick, pour, pullup, punch, push, pushup,
ride_bike, ride_horse, run, shake_hands, shoot_ball, shoot_bow, shoot_gun, sit, situp, smile, smoke,
somersault, stand, swing_baseball, sword, sword_exercise, talk, throw, turn, walk, wave), sorted by
name = label order, taken from the split file names.
Splits: `test_train_splits.rar` -> `testTrainMulti_7030_splits/<class>_test_split<k>.txt`, lines
`clip.avi 0|1|2` (1 train, 2 test, 0 unused in that split); written as `train1`/`test1` ..
`train3`/`test3` (70 / 30 clips per class).
Expected `--src`: the unpacked class folders (`SRC/.../brush_hair/*.avi`, each class's .rar
unpacked) and the split files anywhere below SRC.
"""

from __future__ import annotations

import logging
import os
import re

from darkjax.data.prepare import common

_SPLIT_FILE = re.compile(r"^(.+)_test_split(\d)\.txt$")

NUM_CLASSES = 51
log = logging.getLogger(__name__)


def hmdb51(src: str) -> common.Layout:
  files = common.find_files(src, lambda f: bool(_SPLIT_FILE.match(f)))
  by_class: dict[str, dict[int, str]] = {}
  for path in files:
    match = _SPLIT_FILE.match(os.path.basename(path))
    split = by_class.setdefault(match.group(1), {})
    number = int(match.group(2))
    if number in split:   # a backup copy of the lists: which one is the release's is not ours
      raise common.PrepareError(
          f"several HMDB51 split files {os.path.basename(path)} under {src}: "
          f"{sorted([split[number], path])}; keep the release's own (move copies away) or give "
          f"--src the one release folder")
    split[number] = path
  if not by_class:
    raise common.PrepareError(f"no HMDB51 split files (<class>_test_split1.txt) under {src}")
  names = sorted(by_class)
  incomplete = {c: sorted(s) for c, s in by_class.items() if sorted(s) != [1, 2, 3]}
  if incomplete:
    raise common.PrepareError(f"HMDB51 split files incomplete under {src}: {incomplete} "
                              f"(each class needs _test_split1..3.txt)")
  if len(names) != NUM_CLASSES:   # an incomplete download: fewer classes, other labels
    log.warning("HMDB51 under %s: %d classes found, the release has %d (labels are their "
                "order); is a file of the download missing?", src, len(names), NUM_CLASSES)
  index = common.VideoIndex(common.find_dir_with_subdirs(src, names))
  splits: dict[str, list[common.VideoItem]] = {}
  for k in (1, 2, 3):
    train, test = [], []
    for label, name in enumerate(names):
      path = by_class[name][k]
      for line_number, fields in common.read_lines(path):
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
          raise common.PrepareError(f"{path}:{line_number}: expected `clip.avi 0|1|2`, got "
                                    f"{' '.join(fields)!r}")
        if fields[1] == "0":
          continue
        resolved = index.resolve(f"{name}/{fields[0]}")
        item = common.VideoItem(resolved, label, os.path.relpath(resolved, index.root))
        (train if fields[1] == "1" else test).append(item)
    splits[f"train{k}"], splits[f"test{k}"] = train, test
  return common.Layout("hmdb51", names, splits, {
      "source": os.path.abspath(src),
      "split_source": os.path.relpath(os.path.dirname(files[0]), src)})
