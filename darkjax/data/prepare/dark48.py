"""Dark-48 (`dark48`; https://github.com/yzfly/Dark48): 48 action classes of dark videos from
Kinetics-700 and Moments in Time, 8,815 videos, 3 splits from its published annotations.

Classes: `annotations/classInd.txt`, lines `index<TAB>name` numbered from 0 (label = index;
`adult_female_singing` ... `whistling`); any class index file (`classInd.txt`, `mapping_table.txt`
or another `*class*.txt` / `*mapping*.txt` with 48 `index name` lines) is read the same way, and
without one the 48 class folders sorted by name are the classes. Whichever is used is written to
the manifest metadata (`class_source`).
Splits: `annotations/train_split{k}.txt` / `test_split{k}.txt` (k = 1..3), lines
`class/clip.mp4 label` (the label is checked against the folder); `annotations/frame_file_list/`
(the same splits over extracted frames) is not read. ARID-style lists (`*split{k}_train.txt`,
`index label class/clip`) are read too. Written as manifest splits `train1`/`test1` ..
`train3`/`test3`.
Expected `--src`: the unpacked video archive (the class folders with their videos, anywhere below
it) and the GitHub repository's `annotations/` folder, e.g. SRC/Dark48/<class>/<clip>.mp4 and
SRC/annotations/.
"""

from __future__ import annotations

import os
import re

from darkjax.data import video
from darkjax.data.prepare import arid, common

NUM_CLASSES = 48
_CLASS_FILE = re.compile(r"(classind|mapping|class).*\.txt$", re.IGNORECASE)


def class_names(src: str) -> tuple[list[str], str]:
  for path in common.find_files(src, lambda f: bool(_CLASS_FILE.search(f))):
    rows = [fields for _, fields in common.read_lines(path)]
    if len(rows) == NUM_CLASSES and all(len(r) >= 2 and r[0].isdigit() for r in rows):
      return [r[1] for r in sorted(rows, key=lambda r: int(r[0]))], os.path.relpath(path, src)
  folders = set()
  for directory, subdirs, files in common.walk(src):
    for sub in subdirs:
      if any(video.is_video_file(f) for f in os.listdir(os.path.join(directory, sub))):
        folders.add(sub)
  if len(folders) != NUM_CLASSES:
    raise common.PrepareError(f"dark48 under {src}: no class index file with {NUM_CLASSES} "
                              f"`index name` lines, and {len(folders)} folders hold videos "
                              f"(need {NUM_CLASSES})")
  return sorted(folders), "sorted class folders"


def dark48(src: str) -> common.Layout:
  names, class_source = class_names(src)
  layout = arid.layout_from_lists("dark48", src, names, ignore_dirs=("frame_file_list",))
  layout.metadata["class_source"] = class_source
  return layout
