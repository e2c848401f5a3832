"""UCF101 (`ucf101`; Soomro et al. 2012, https://www.crcv.ucf.edu/data/UCF101.php): 101 classes, the
3 official splits.

Classes: `ucfTrainTestlist/classInd.txt`, lines `index ClassName` (1-based; label = index - 1).
Splits: `trainlist0{k}.txt` (lines `Class/v_Class_gXX_cYY.avi index`) and `testlist0{k}.txt` (lines
`Class/v_Class_gXX_cYY.avi`), k = 1..3; written as `train1`/`test1` .. `train3`/`test3`.
Expected `--src`: the unpacked `UCF101.rar` (`SRC/UCF-101/ApplyEyeMakeup/*.avi`) and
`UCF101TrainTestSplits-RecognitionTask.zip` (`SRC/ucfTrainTestlist/...`), anywhere below SRC. Paths
are matched case-insensitively (the lists and folders disagree on `HandStandPushups`).
"""

from __future__ import annotations

import logging
import os

from darkjax.data.prepare import arid, common

NUM_CLASSES = 101
log = logging.getLogger(__name__)


def _one_file(src: str, name: str) -> str:
  found = common.find_files(src, lambda f: f.lower() == name.lower())
  if not found:
    raise common.PrepareError(f"UCF101 split file {name} not found under {src}")
  if len(found) > 1:   # a backup copy of the lists: which one is the release's is not ours to pick
    raise common.PrepareError(f"several UCF101 files {name} under {src}: {sorted(found)}; keep "
                              f"the release's own (move copies away) or give --src the one "
                              f"release folder")
  return found[0]


def ucf101(src: str) -> common.Layout:
  class_file = _one_file(src, "classInd.txt")
  rows = []
  for line_number, fields in common.read_lines(class_file):
    if len(fields) != 2 or not fields[0].isdigit():
      raise common.PrepareError(f"{class_file}:{line_number}: expected `index ClassName`")
    rows.append((int(fields[0]), fields[1]))
  names = [name for _, name in sorted(rows)]
  if len(names) != NUM_CLASSES:   # an incomplete download: fewer classes, other labels
    log.warning("UCF101 under %s: %d classes found, the release has %d (labels are their "
                "order); is a file of the download missing?", src, len(names), NUM_CLASSES)
  index = common.VideoIndex(common.find_dir_with_subdirs(src, names))
  splits, sources = {}, {}
  for k in (1, 2, 3):
    for kind in ("train", "test"):
      path = _one_file(src, f"{kind}list0{k}.txt")
      splits[f"{kind}{k}"] = arid.parse_split_list(path, names, index, check_label=False)
      sources[f"{kind}{k}"] = os.path.relpath(path, src)
  return common.Layout("ucf101", names, splits, {"source": os.path.abspath(src),
                                                 "split_source": sources})
