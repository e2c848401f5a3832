"""Dark-48 (`dark48`): 48 action classes of dark videos, 3 splits from its published split files.

Classes: the 48 names in the release's class index file (`classInd.txt`, `mapping_table.txt` or any
`*class*.txt` / `*mapping*.txt` with lines `index name`, label order = index order); without one,
the 48 class folders sorted by name. Whichever is used is written to the manifest metadata
(`class_source`).
Splits: the published lists `*split{k}*train*.txt` / `*split{k}*test*.txt` (k = 1..3), one video per
line as `Class/clip.ext`, optionally with an index and a label (`index label Class/clip.ext`, as
ARID's lists); written as manifest splits `train1`/`test1` .. `train3`/`test3`.
The archive's exact layout could not be confirmed from public documentation (no public page
describes its folder or list names), so this reader accepts the ARID-style layout above and fails
naming the missing piece otherwise.
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
  for directory, subdirs, files in os.walk(os.path.abspath(src)):
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
  layout = arid.layout_from_lists("dark48", src, names)
  layout.metadata["class_source"] = class_source
  return layout
