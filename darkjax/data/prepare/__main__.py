"""`python -m darkjax.data.prepare --dataset NAME --src DIR --out DIR [--short-side 128] [--fps N]
[--workers N] [--allow-missing N] [--flow [--flow-method farneback|dis|tvl1] [--flow-scale 8]]`:
decode a downloaded dataset into darkjax TFRecords (resumable). `--flow` adds a `flow` stream of
optical flow (x, y, magnitude around 128; see darkjax/data/flow.py) to every record, for
LIFT-Net's `luminous_input=flow`.

Your own dataset, a folder per class (darkjax/data/prepare/folder.py): `--dataset folder [--name
NAME] [--num-splits K] [--test-fraction F] [--val-fraction F] [--seed S] [--group-pattern REGEX]`;
the name defaults to the base name of --out, and the split options apply where SRC has no split
lists.

Exit status: 0 on success, 1 when the layout cannot be read, --out cannot be written or more
than --allow-missing videos cannot be decoded (each is named, with its reason, on stderr and in
OUT/prepare.log), 2 when the dataset's layout is not supported (or a flag is), 130 when
interrupted (the shards written so far are kept: the same command resumes).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from darkjax import paths
from darkjax.data import flow, records
from darkjax.data.prepare import FOLDER, LAYOUTS, PrepareError, find_layout, folder, prepare
from darkjax.data.prepare.common import FlowSettings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m darkjax.data.prepare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dataset", required=True, choices=sorted(LAYOUTS) + [FOLDER])
  parser.add_argument("--src", required=True, help="the unpacked download")
  parser.add_argument("--out", required=True, help="dataset directory to write")
  parser.add_argument("--short-side", type=int, default=128, help="resize frames' short side "
                      "(0: keep)")
  parser.add_argument("--fps", type=float, default=0.0, help="resample to this frame rate "
                      "(0: keep every frame)")
  parser.add_argument("--workers", type=int, default=max((os.cpu_count() or 2) - 1, 1),
                      help="decoding processes")
  parser.add_argument("--allow-missing", type=int, default=0,
                      help="number of undecodable videos tolerated (listed in the manifest)")
  parser.add_argument("--examples-per-shard", type=int, default=32)
  parser.add_argument("--overwrite", action="store_true",
                      help="start over in an --out made with other options")
  parser.add_argument("--no-progress", action="store_true")
  parser.add_argument("--flow", action="store_true",
                      help="add an optical-flow stream 'flow' to every record")
  parser.add_argument("--flow-method", choices=flow.METHODS, default=None,
                      help=f"with --flow (default {flow.DEFAULT_METHOD}; dis is faster, tvl1 "
                           f"far slower)")
  parser.add_argument("--flow-scale", type=float, default=None,
                      help=f"with --flow: stored value = 128 + flow (pixels) * scale (default "
                           f"{flow.DEFAULT_SCALE:g}: +-16 pixels per frame fit)")
  own = parser.add_argument_group(f"your own dataset (--dataset {FOLDER})")
  own.add_argument("--name", default=None, help="the dataset's name in shard files, reports and "
                   "configs (default: the base name of --out)")
  own.add_argument("--num-splits", type=int, default=None,
                   help="seeded random splits to draw where SRC has no split lists (default 1)")
  own.add_argument("--test-fraction", type=float, default=None,
                   help=f"each class's share of test videos in a drawn split (default "
                        f"{folder.DEFAULT_TEST_FRACTION:g})")
  own.add_argument("--val-fraction", type=float, default=None,
                   help="each class's share of videos held out of a drawn split's train part as "
                        "val<k>, for choosing settings without the test videos (default 0: none)")
  own.add_argument("--seed", type=int, default=None,
                   help=f"seed of the drawn splits (default {folder.DEFAULT_SEED})")
  own.add_argument("--group-pattern", default=None,
                   help="regular expression whose first match in a video's path below its class "
                        "folder names its group (a recording, an actor): a group's videos are "
                        "never split between train and test")
  args = parser.parse_args(argv)
  given = [flag for flag, value in (("--name", args.name), ("--num-splits", args.num_splits),
                                    ("--test-fraction", args.test_fraction),
                                    ("--val-fraction", args.val_fraction), ("--seed", args.seed),
                                    ("--group-pattern", args.group_pattern)) if value is not None]
  if given and args.dataset != FOLDER:
    parser.error(f"{', '.join(given)}: options of --dataset {FOLDER} (your own dataset); "
                 f"{args.dataset}'s release fixes its name and splits")
  for flag, value, least in (("--short-side", args.short_side, 0), ("--fps", args.fps, 0),
                             ("--workers", args.workers, 1),
                             ("--allow-missing", args.allow_missing, 0),
                             ("--examples-per-shard", args.examples_per_shard, 1)):
    if value < least:
      parser.error(f"{flag} {value:g}: must be >= {least}")
  if args.flow_scale is not None and not args.flow_scale > 0:
    parser.error(f"--flow-scale {args.flow_scale:g}: must be > 0")
  if not args.flow and (args.flow_method is not None or args.flow_scale is not None):
    parser.error("--flow-method and --flow-scale need --flow")
  return args


def folder_options(args: argparse.Namespace) -> dict:
  """`find_layout`'s options for --dataset folder (none for the other datasets)."""
  if args.dataset != FOLDER:
    return {}
  options = {"name": args.name or os.path.basename(args.out.rstrip("/" + os.sep))}
  for key in ("num_splits", "test_fraction", "val_fraction", "seed", "group_pattern"):
    if getattr(args, key) is not None:
      options[key] = getattr(args, key)
  return options


def _split_origin(layout) -> str:
  metadata = layout.metadata
  if "protocol" in metadata:
    return f"a seeded draw (seed {metadata['protocol']['seed']})"
  return ", ".join(sorted(set(metadata.get("split_source", {}).values())))


def flow_settings(args: argparse.Namespace) -> FlowSettings | None:
  if not args.flow:
    return None
  return FlowSettings(args.flow_method or flow.DEFAULT_METHOD,
                      flow.DEFAULT_SCALE if args.flow_scale is None else args.flow_scale)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if not os.path.isdir(args.src):
    print(f"error: --src {args.src} is not a directory", file=sys.stderr)
    return 1
  if "://" not in args.out:
    src, out = os.path.realpath(args.src), os.path.realpath(args.out)
    if out == src or out.startswith(src + os.sep):
      print(f"error: --out {args.out} is inside --src {args.src}: the prepared shards would be "
            f"written into the downloaded release; give another directory (e.g. --out "
            f"{src.rstrip(os.sep)}_prepared)", file=sys.stderr)
      return 1
  unwritable = paths.cannot_write(args.out)
  if unwritable:
    print(f"error: --out {args.out}: {unwritable}; give a directory you can write to",
          file=sys.stderr)
    return 1
  try:
    layout = find_layout(args.dataset, args.src, **folder_options(args))
    if args.dataset == FOLDER:   # what was found, before hours of decoding
      print(f"{layout.name}: {len(layout.class_names)} classes ({', '.join(layout.class_names)}); "
            + ", ".join(f"{split} {len(items)}" for split, items in layout.splits.items())
            + f" videos; splits from {_split_origin(layout)}")
      for warning in layout.metadata.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    manifest = prepare(layout, args.out, short_side=args.short_side, fps=args.fps,
                       workers=args.workers, allow_missing=args.allow_missing,
                       examples_per_shard=args.examples_per_shard, overwrite=args.overwrite,
                       progress=not args.no_progress, flow_settings=flow_settings(args))
  except NotImplementedError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except PrepareError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  except OSError as error:   # the disk filled, a directory became unwritable mid-run
    print(f"error: {error.filename or args.out}: {error.strerror or error}; the shards written "
          f"so far are kept: rerun the same command to resume", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"prepare: interrupted; the shards written so far in {args.out} are kept: rerun the "
          "same command to resume", file=sys.stderr)
    return 130
  report = records.verify(args.out, check_crc=False, progress=not args.no_progress)
  print(report.format())
  failed = manifest["metadata"]["failed"]
  if failed:
    # one entry per split a video is in: the videos counted once
    videos = {entry["video"] for entry in failed}
    print(f"{len(videos)} undecodable video(s) left out (allowed by --allow-missing), listed in "
          f"{os.path.join(args.out, 'prepare.log')} and the manifest's metadata.failed")
  return 0 if report.ok else 1



if __name__ == "__main__":
  sys.exit(main())
