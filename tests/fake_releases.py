"""Tiny fake releases of every dataset `python -m darkjax.data.prepare` reads, each in its dataset's
documented official layout: real video files written with PyAV, the official class folders and
split-list names and line formats (imported by test modules; not a test file).

`write_release(dataset, root)` writes one and returns the directory to pass as `--src`. What each
layout is, and where it is documented, is in docs/datasets.md and the reader's module docstring
(darkjax/data/prepare/<dataset>.py); the trees here follow those descriptions:

  arid_v1     clips_v1/<Class>/<Class>_<n>_1.mp4, list_cvt/ARID_split{k}_{train,test}.txt
              (`index<TAB>label<TAB>Class/clip.avi`: the lists say .avi, the clips are .mp4),
              list_cvt/ARID_split{k}_other.txt, list_cvt/mapping_table.txt (k = 1..3)
  arid_v1_5   clips_v1.5/<Class>/..., list_cvt/split_{k}/split{k}_{train,test,other}.txt
              (k = 0, 1)
  infar       InfAR/<CLASS>/<class>_<nn>.avi, 12 classes x 50 clips, no split lists
  xd145       XD145/<class>/<class>_<nn>.avi, as InfAR
  dark48      Dark48/<class>/<clip>.mp4 (the 48 real classes), annotations/classInd.txt
              (`index<TAB>name` from 0), annotations/{train,test}_split{k}.txt
              (`class/clip.mp4 label`), annotations/frame_file_list/{train,test}_split{k}.txt
              (`class/clip frames label`, over extracted frames: not read)
  hmdb51      hmdb51_org/<class>/<clip>.avi, testTrainMulti_7030_splits/<class>_test_split{k}.txt
              (`clip.avi 0|1|2 `)
  ucf101      UCF-101/<Class>/v_<Class>_g<gg>_c<cc>.avi, ucfTrainTestlist/classInd.txt,
              trainlist0{k}.txt (`Class/clip.avi index`), testlist0{k}.txt (CRLF line ends)

HMDB51 and UCF101 get 12 of their real classes (their readers take the classes from the split
files); every other dataset gets all its classes, since its reader checks them.
"""

from __future__ import annotations

import os

import numpy as np

from darkjax.data.prepare import arid, infar
from darkjax.data import video as video_lib

FRAMES, HW = 8, (36, 48)   # every fake video: 8 frames of 36 x 48 (runlocal reads 32 x 32 crops)
# 12 real classes each, as many as InfAR has: LIFT-Net's flow configs on HMDB51, UCF101 and InfAR
# then compile the same programs, which the persistent compilation cache shares between the runs.
HMDB51_CLASSES = ["brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs",
                  "dive", "draw_sword", "dribble", "drink", "eat"]
UCF101_CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam",
                  "BandMarching", "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress",
                  "Biking", "HandstandPushups"]


def write_video(path: str, seed: int, frames: int = FRAMES, hw: tuple[int, int] = HW) -> None:
  """A real video file (MPEG-4 in the container the extension names) of `frames` frames: a
  4 x 4-pixel block pattern drawn from `seed`, drifting one block per frame."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 255, (hw[0] // 4, hw[1] // 4 + frames, 3), dtype=np.uint8)
  base = np.repeat(np.repeat(base, 4, 0), 4, 1)
  clip = np.stack([base[:, 4 * t:4 * t + hw[1]] for t in range(frames)])
  video_lib.write_video(path, np.ascontiguousarray(clip), fps=10)


def _write_lines(path: str, lines: list[str], newline: str = "\n") -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as file:
    file.write("".join(line + newline for line in lines))


def arid_tree(root: str, clips_per_class: int = 2, version: str = "v1", frames: int = FRAMES,
              hw: tuple[int, int] = HW) -> dict[str, set[str]]:
  """ARID v1 (`version="v1"`, 3 splits) or v1.5 (`"v1.5"`, 2 splits numbered from 0 in the
  release, read as splits 1 and 2); returns {split: video ids} of the splits as prepared (split k
  tests every third video, starting at the (k-1)-th)."""
  videos = []
  for label, name in enumerate(arid.CLASSES):
    for n in range(clips_per_class):
      rel = f"{name}/{name}_{n}_1.mp4"
      write_video(os.path.join(root, f"clips_{version}", rel), label * 10 + n, frames, hw)
      videos.append((label, rel))
  lists = os.path.join(root, "list_cvt")
  expected = {}
  for k in ((1, 2, 3) if version == "v1" else (1, 2)):
    test = [v for i, v in enumerate(videos) if i % 3 == k - 1]
    train = [v for v in videos if v not in test]
    for kind, chosen in (("train", train), ("test", test), ("other", [(0, "Drink/gone.mp4")])):
      # The release's `other` lists name videos in neither part of the split: not read.
      name = (f"ARID_split{k}_{kind}.txt" if version == "v1"
              else os.path.join(f"split_{k - 1}", f"split{k - 1}_{kind}.txt"))
      _write_lines(os.path.join(lists, name), [f"{i}\t{label}\t{rel[:-4]}.avi"
                                               for i, (label, rel) in enumerate(chosen)])
      if kind != "other":
        expected[f"{kind}{k}"] = {rel for _, rel in chosen}
  _write_lines(os.path.join(lists, "mapping_table.txt"),
               [f"{i}\t{name}" for i, name in enumerate(arid.CLASSES)])
  return expected


def infar_tree(root: str, folder: str = "InfAR", upper: bool = True,
               clips_per_class: int = infar.CLIPS_PER_CLASS) -> None:
  """InfAR / XD145: one folder per class (upper-case names for InfAR), 50 clips each."""
  for label, name in enumerate(infar.CLASSES):
    for n in range(clips_per_class):
      write_video(os.path.join(root, folder, name.upper() if upper else name,
                               f"{name}_{n:02d}.avi"), label * 100 + n)


DARK48_CLASSES = [
    "adult_female_singing", "adult_male_singing", "adult_male_speaking", "applauding", "ascending",
    "balancing", "bouncing", "breathing_fire", "bubbling", "burning", "cheering", "child_singing",
    "clapping", "combusting", "coughing", "dancing", "descending", "driving", "dropping",
    "drumming", "erupting", "floating", "headbanging", "juggling", "juggling_fire", "karaoke",
    "performing", "playing", "playing_laser_tag", "playing_music", "playing_videogames",
    "raining", "riding_mechanical_bull", "rising", "rocking", "shooting_off_fireworks",
    "shouting", "silent_disco", "singing", "smoking", "spelunking", "spilling", "spinning",
    "spinning_poi", "storming", "talking", "turning", "whistling"]


def dark48_tree(root: str, clips_per_class: int = 2) -> dict[str, set[str]]:
  """Dark-48: 48 class folders of videos and the annotations folder (class index, 3 split-list
  pairs, and the frame lists, which list only the first video of each split: read by mistake,
  they would shrink every split). Returns {split: video ids}."""
  annotations = os.path.join(root, "annotations")
  _write_lines(os.path.join(annotations, "classInd.txt"),
               [f"{i}\t{n}" for i, n in enumerate(DARK48_CLASSES)])
  videos = []
  for label, name in enumerate(DARK48_CLASSES):
    for n in range(clips_per_class):
      rel = f"{name}/yt-{label:02d}{n}_000010_000020.mp4"
      write_video(os.path.join(root, "Dark48", rel), label * 10 + n)
      videos.append((label, rel))
  expected = {}
  for k in (1, 2, 3):
    for kind in ("train", "test"):
      chosen = [v for i, v in enumerate(videos)
                if ((i + k) % clips_per_class == 0) == (kind == "test")]
      _write_lines(os.path.join(annotations, f"{kind}_split{k}.txt"),
                   [f"{rel} {label}" for label, rel in chosen])
      _write_lines(os.path.join(annotations, "frame_file_list", f"{kind}_split{k}.txt"),
                   [f"{rel[:-4]} {FRAMES} {label}" for label, rel in chosen[:1]])
      expected[f"{kind}{k}"] = {rel for _, rel in chosen}
  return expected


def hmdb51_tree(root: str, classes: list[str] = HMDB51_CLASSES) -> None:
  """HMDB51: 3 clips per class; split k: clip k-1 tests, one clip trains, one is unused (0)."""
  for label, name in enumerate(classes):
    clips = [f"{name}_clip_f_cm_np1_fr_med_{n}.avi" for n in range(3)]
    for n, clip in enumerate(clips):
      write_video(os.path.join(root, "hmdb51_org", name, clip), label * 3 + n)
    for k in (1, 2, 3):
      marks = ["1", "1", "1"]
      marks[k - 1] = "2"
      marks[k % 3] = "0"
      _write_lines(os.path.join(root, "testTrainMulti_7030_splits", f"{name}_test_split{k}.txt"),
                   [f"{clip} {mark} " for clip, mark in zip(clips, marks)])


def ucf101_tree(root: str, classes: list[str] = UCF101_CLASSES) -> None:
  """UCF101: groups g01..g03 per class; split k tests group k, trains on the other two. The
  lists spell `HandStandPushups` where the folder says `HandstandPushups`, as the release does."""
  lists = os.path.join(root, "ucfTrainTestlist")
  _write_lines(os.path.join(lists, "classInd.txt"),
               [f"{i + 1} {n}" for i, n in enumerate(classes)], "\r\n")
  clips = {}
  for label, name in enumerate(classes):
    spelled = "HandStandPushups" if name == "HandstandPushups" else name
    clips[name] = [f"{spelled}/v_{spelled}_g{g:02d}_c01.avi" for g in (1, 2, 3)]
    for g in range(3):
      write_video(os.path.join(root, "UCF-101", name, f"v_{spelled}_g{g + 1:02d}_c01.avi"),
                  label * 3 + g)
  for k in (1, 2, 3):
    train = [f"{clip} {i + 1}" for i, n in enumerate(classes) for g, clip in enumerate(clips[n])
             if g != k - 1]
    test = [clips[n][k - 1] for n in classes]
    _write_lines(os.path.join(lists, f"trainlist0{k}.txt"), train, "\r\n")
    _write_lines(os.path.join(lists, f"testlist0{k}.txt"), test, "\r\n")


RELEASES = {
    "arid_v1": lambda root: arid_tree(root, version="v1"),
    "arid_v1_5": lambda root: arid_tree(root, version="v1.5"),
    "infar": lambda root: infar_tree(root, "InfAR", upper=True),
    "xd145": lambda root: infar_tree(root, "XD145", upper=False),
    "dark48": dark48_tree,
    "hmdb51": hmdb51_tree,
    "ucf101": ucf101_tree,
}


def write_release(dataset: str, root: str) -> str:
  """Writes the fake release of `dataset` under `root`; returns `root` (the `--src`)."""
  if dataset not in RELEASES:
    raise KeyError(f"no fake release for dataset {dataset!r}; tests/fake_releases.py has "
                   f"{sorted(RELEASES)}")
  RELEASES[dataset](root)
  return root
