r"""DTCM's video darkness metric over video files or prepared datasets (how Dark-48 was built).

  python -m darkjax.tools.darkness VIDEO_OR_DIR... [--tau 0.877] [--histogram darkness.png]
                                   [--keep-dark dark.txt] [--split train]
                                   [--sampling random|middle] [--seed 0] [--no-progress]

Each PATH is a video file (decoded by darkjax.data.video), a directory of video files (searched
recursively for darkjax.data.video.VIDEO_EXTENSIONS) or a prepared dataset directory (one with
manifest.json: every example of every split, or of --split, read from its records). For each
video it prints D_v (paper Eq. 12-14: mean over 8 segment-sampled frames of (S_t - S_c) / S_c,
S_c = 112) and the verdict `dark` when D_v < -tau, then a summary. Each segment's frame is
drawn at random as in the paper (Sec. III-F), from a generator seeded by --seed and the video's
name (`video_seed`: a rerun draws the same frames, whatever the order of the videos); --sampling
middle takes each segment's middle frame. It writes a histogram PNG of D_v with the threshold
marked, and with --keep-dark the list of dark videos (file paths, or `DATASET_DIR:split/video_id`
for records), one per line. A video a dataset lists in several splits (ARID's three train / test
splits) is scored once, named by the first split that holds it. Every path and split, and where
the histogram and list go, is checked before any video is decoded; a bar on stderr counts the
videos scored, with the time left (thousands of videos take hours to decode; --no-progress hides
it). A video that cannot be decoded is named on stderr and left out; the others are scored and
written, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import zlib
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from darkjax import paths, plots
from darkjax.data import darkness, records, video


@dataclasses.dataclass(frozen=True)
class VideoDarkness:
  name: str          # file path, or DATASET_DIR:split/video_id
  score: float       # D_v
  dark: bool
  num_frames: int


def video_seed(name: str, seed: int = 0) -> tuple[int, int]:
  """The generator seed of one video's random frames: the run's seed and a CRC of its name."""
  return (int(seed), zlib.crc32(name.encode("utf-8")))


def score_frames(name: str, frames: np.ndarray, tau: float, sampling: str = "random",
                 seed: int = 0) -> VideoDarkness:
  score = darkness.darkness_score(frames, sampling=sampling, seed=video_seed(name, seed))
  return VideoDarkness(name, score, score < -tau, int(frames.shape[0]))


def _wanted_splits(data_dir: str, manifest: dict, splits: Sequence[str] | None) -> list[str]:
  wanted = list(splits) if splits else sorted(manifest["splits"])
  unknown = [split for split in wanted if split not in manifest["splits"]]
  if unknown:
    raise ValueError(f"{data_dir}: --split {unknown[0]!r} not in the dataset; known splits: "
                     f"{sorted(manifest['splits'])}")
  return wanted


def _dataset_videos(data_dir: str, manifest: dict, splits: Sequence[str]
                    ) -> Iterator[tuple[str, np.ndarray | None]]:
  """(name, frames) of each video of `splits`; (name, None) for a video an earlier split held."""
  seen = set()
  for split in splits:
    for path, _ in records.split_files(manifest, data_dir, split):
      for data in records.iter_tfrecord(path):
        example = records.decode_example(data, source=path)
        name = f"{data_dir}:{split}/{example['video_id']}"
        if example["video_id"] in seen:
          yield name, None
          continue
        seen.add(example["video_id"])
        yield name, example["video"]


def _decoded(files: Sequence[str]) -> Iterator[tuple[str, np.ndarray | Exception]]:
  """(file, frames) of each video file, or (file, the error) for one that cannot be decoded."""
  for file in files:
    try:
      yield file, video.decode_video(file)[0]
    except (video.VideoDecodeError, OSError) as error:
      yield file, error


def _sources(paths: Sequence[str], splits: Sequence[str] | None
             ) -> tuple[list[Iterator[tuple[str, Any]]], int]:
  """Per path, the (name, frames) of its videos, decoded lazily, and how many videos (records, for
  datasets) there are in all; every path and split is checked first, so a mistyped one fails
  before hours of decoding."""
  sources, total = [], 0
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist")
    if os.path.isdir(path) and os.path.exists(os.path.join(path, records.MANIFEST)):
      manifest = records.load_manifest(path)
      wanted = _wanted_splits(path, manifest, splits)
      total += sum(int(manifest["splits"][split]["num_examples"]) for split in wanted)
      sources.append(_dataset_videos(path, manifest, wanted))
      continue
    if splits:
      raise ValueError(f"--split {splits[0]!r}: {path} is no prepared dataset (no "
                       f"{records.MANIFEST}); --split picks a prepared dataset's splits, video "
                       "files have none")
    files = video.find_videos(path) if os.path.isdir(path) else [path]
    if not files:
      raise ValueError(f"{path} has neither a {records.MANIFEST} nor video files "
                       f"({', '.join(video.VIDEO_EXTENSIONS)})")
    total += len(files)
    sources.append(_decoded(files))
  return sources, total


def scan(paths: Sequence[str], tau: float = darkness.DARK_THRESHOLD,
         splits: Sequence[str] | None = None, sampling: str = "random",
         seed: int = 0, progress: bool = False,
         undecodable: list[tuple[str, str]] | None = None) -> list[VideoDarkness]:
  """D_v and verdict of every video under `paths` (files, video dirs, prepared dataset dirs; a
  video several splits list, once); with `progress`, a bar over the videos (rate and time left)
  on stderr. A video file that cannot be decoded is left out, appended to `undecodable` as (file,
  reason) and named on stderr; without `undecodable` it raises."""
  sources, total = _sources(paths, splits)
  results = []
  with tqdm(total=total, desc="darkness", unit="video", disable=not progress,
            dynamic_ncols=True) as bar:
    for source in sources:
      for name, frames in source:
        bar.update(1)
        if frames is None:   # another split's copy of a video already scored
          continue
        if isinstance(frames, Exception):
          if undecodable is None:
            raise frames
          undecodable.append((name, str(frames)))
          tqdm.write(f"darkness: left out {name}: {frames}", file=sys.stderr)
          continue
        results.append(score_frames(name, frames, tau, sampling, seed))
  return results


def write_histogram(results: Sequence[VideoDarkness], tau: float, path: str) -> str:
  """PNG histogram of the videos' darkness D_v with the dark threshold -tau."""
  scores = np.array([r.score for r in results])
  return plots.save(plots.darkness_histogram(scores, tau, sum(r.dark for r in results)), path)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("paths", nargs="+", help="video files, video dirs or prepared dataset dirs")
  parser.add_argument("--tau", type=float, default=darkness.DARK_THRESHOLD,
                      help="dark if D_v < -tau (default: 0.877, the ARID average)")
  parser.add_argument("--split", action="append", default=None,
                      help="prepared datasets: only this split (repeatable; default all)")
  parser.add_argument("--histogram", default="darkness_histogram.png",
                      help="summary histogram PNG (empty: none)")
  parser.add_argument("--keep-dark", default="", metavar="FILE",
                      help="write the dark videos, one per line")
  parser.add_argument("--sampling", default="random", choices=darkness.SAMPLINGS,
                      help="one frame per segment: random (the paper's, seeded) or the middle one")
  parser.add_argument("--seed", type=int, default=0, help="seed of the random frames")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bar (videos scored, rate, time left) on stderr")
  args = parser.parse_args(argv)
  for flag, output in (("--histogram", args.histogram), ("--keep-dark", args.keep_dark)):
    why = output and paths.cannot_write(output, directory=False)
    if why:   # found now, not after hours of decoding
      print(f"darkness: {flag} {output}: {why}; give a file in a folder you can write to",
            file=sys.stderr)
      return 2
  undecodable: list[tuple[str, str]] = []
  try:
    results = scan(args.paths, args.tau, args.split, args.sampling, args.seed,
                   progress=not args.no_progress, undecodable=undecodable)
  except (OSError, ValueError) as e:
    print(f"darkness: {e}", file=sys.stderr)
    return 2
  if not results:
    print("darkness: no videos found" if not undecodable else
          f"darkness: none of the {len(undecodable)} video(s) could be decoded", file=sys.stderr)
    return 2
  width = max(len(r.name) for r in results)
  print(f"{'video':<{width}}  {'frames':>6}  {'D_v':>8}  verdict")
  for r in results:
    verdict = "dark" if r.dark else "not dark"
    print(f"{r.name:<{width}}  {r.num_frames:>6}  {r.score:>8.4f}  {verdict}")
  scores = np.array([r.score for r in results])
  dark = [r for r in results if r.dark]
  print(f"summary: {len(results)} videos, {len(dark)} dark (D_v < -{args.tau:g}); D_v mean "
        f"{scores.mean():.4f}, min {scores.min():.4f}, max {scores.max():.4f}")
  if args.histogram:
    print(f"histogram: {write_histogram(results, args.tau, args.histogram)}")
  if args.keep_dark:
    with open(args.keep_dark, "w", encoding="utf-8") as f:
      f.write("".join(f"{r.name}\n" for r in dark))
    print(f"dark videos: {args.keep_dark} ({len(dark)} lines)")
  if undecodable:
    print(f"darkness: {len(undecodable)} video(s) could not be decoded and are left out: "
          + ", ".join(name for name, _ in undecodable), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
