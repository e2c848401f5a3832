"""Classify video files with a trained checkpoint of any darkjax paper, or with its exported model.

  python -m darkjax.tools.predict --checkpoint /tmp/darkjax/synthetic clip.avi [more.mp4 ...] \
      [--config configs/synthetic.py] [--png OUT_DIR] [--classes a,b,c]
  python -m darkjax.tools.predict --model export/model.onnx clip.avi [more.mp4 ...] [--png OUT_DIR]
  python -m darkjax.tools.predict --checkpoint WORKDIR --every 2 night_camera.mp4 [--png OUT_DIR]

Checkpoint (`--checkpoint WORKDIR`; `predict_checkpoint`): takes the run's config.json (as export
does; `--config` names the config file[:args] instead, and is refused where it would predict
otherwise than the run's: another model, clip, stream, normalisation or paper setting, each
difference listed), builds its Task
(`darkjax.task.load_task`: the same model and on-device preprocessing as training and evaluation,
e.g. 3D-DiNet's channel matching, LIFT-Net's gamma-corrected luminous clip, DTCM's enhancer) and
restores the latest checkpoint of the run (or `--step`; for runs in phases, the phase that holds
the deployed model: LIFT-Net's student, DTCM's joint / classifier phase). Class names come from
the config's dataset manifest; without one, pass `--classes`.

Exported model (`--model DIR/model.onnx` or `DIR/model.stablehlo`; `predict_exported`): the
model `python -m darkjax.tools.export` wrote, run by onnxruntime (`pip install -e '.[onnx]'`;
jax is never imported) or by `jax.export`, with the class names and video settings of the
`export.json` beside it: neither the config nor the checkpoint is needed.

Both paths then run the same code on the host (`predict_host`), with the settings the config and
dataset manifest give (an exported model: as export.json recorded them): decode each video with
PyAV at the prepared dataset's resolution / frame rate (the manifest's `short_side`,
`resampled_fps`), compute the extra streams the model reads (a `flow` record stream with the
manifest's method and scale; two-stream's flow per view with the config's), make the config's
eval views (`input.eval_clips` x `input.eval_crops`) and print the top-5 classes with
probabilities, averaged over the views. `--png OUT_DIR` writes `<video>.png` (numbered where two
videos share a file name) with the first view's frames (and,
from a checkpoint, the enhanced frames for tasks that enhance) titled with the prediction.

A long video (`--every SECONDS [--window SECONDS]`, either path): a timeline instead of one
prediction. The video is decoded as it goes, never whole, resampled by its timestamps (a
variable-rate file keeps its clock) to the rate the model's training clips had (the dataset's
resampled rate, else its frame rate; the file's where neither is known). A window starts every
SECONDS (in whole frames) from 0, and one more ends at the last frame; by default a window is one
clip of the model's (frames x stride; a segment-sampled model's frames spread over SECONDS), a
longer `--window` the clips that cover it, averaged, with a centre crop; record streams (flow) are
computed from the window's frames. Printed: each window's top 2, then the segments of one top-1
class; with `--png OUT_DIR`, `<video>.timeline.png` (every class's probability over time) and
`<video>.timeline.csv` (start_s, end_s and a probability column per class). A decoder error
mid-file keeps the windows before it (and exits 1). A video
that cannot be decoded is named on stderr with the reason (file not found, no video stream,
decoder error, no frames); the others are still classified and the exit status is 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Sequence

from darkjax.tools import predict_exported
from darkjax.tools.predict_host import (PredictError, check_png_dir, format_result,
                                       format_timeline, png_names, write_png, write_timeline)

__all__ = ["PredictError", "main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.predict", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default=None, help="model.onnx or model.stablehlo written by "
                      "darkjax.tools.export (its export.json beside it), instead of --config "
                      "and --checkpoint")
  parser.add_argument("--config", default=None, help="config file[:args], as for darkjax.main "
                      "(default: the run's config.json; one that would predict differently "
                      "from it is refused)")
  parser.add_argument("--checkpoint", default=None, help="training WORKDIR")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--classes", default=None, help="comma-separated class names")
  parser.add_argument("--png", default=None, metavar="OUT_DIR", help="write frames + prediction "
                      "(with --every: the timeline's picture and CSV)")
  parser.add_argument("--every", type=float, default=None, metavar="SECONDS",
                      help="a timeline of a long video: classify a window starting every SECONDS "
                           "instead of the whole video")
  parser.add_argument("--window", type=float, default=None, metavar="SECONDS",
                      help="with --every: a window's length (default: the model's clip, frames "
                           "x stride; segment-sampled models: --every)")
  parser.add_argument("videos", nargs="+")
  args = parser.parse_args(argv)
  if args.window is not None and args.every is None:
    parser.error("--window sets the windows of a timeline: give --every too")
  for flag, value in (("--every", args.every), ("--window", args.window)):
    if value is not None and not (value > 0 and math.isfinite(value)):
      parser.error(f"{flag} {value:g}: give seconds > 0")
  if args.model:
    given = [f for f in ("config", "checkpoint", "step", "classes") if getattr(args, f) is not None]
    if given:
      parser.error(f"--model takes its class names and settings from export.json; drop "
                   f"{', '.join('--' + f for f in given)}")
  elif not args.checkpoint:
    parser.error("give --checkpoint (a training run's WORKDIR; --config only to override its "
                 "config.json), or --model (an exported model)")
  return args


def _predictor(args: argparse.Namespace) -> Any:
  """The exported model's predictor, or the checkpoint's (jax imported only for the latter)."""
  if args.model:
    return predict_exported.ExportedPredictor(args.model)
  # pylint: disable=import-outside-toplevel   (an exported ONNX model is predicted without jax)
  from darkjax import config as config_lib
  from darkjax.tools import predict_checkpoint
  try:
    config = predict_checkpoint.run_config(args.checkpoint, args.config)
  except config_lib.ConfigError as error:
    raise PredictError(str(error)) from None
  return predict_checkpoint.Predictor(config, args.checkpoint, args.classes, args.step)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse(argv)
  try:
    if args.png:
      check_png_dir(args.png)
    predictor = _predictor(args)
  except PredictError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  pictures = png_names(args.videos)
  failed = []
  for video in args.videos:
    try:
      result = (predictor.timeline(video, args.every, args.window or 0.0) if args.every
                else predictor.predict(video))
    except PredictError as error:   # the message starts with the video's path and says why
      print(f"error: {error}", file=sys.stderr)
      failed.append(video)
      continue
    print(format_timeline(result) if args.every else format_result(result))
    if args.every and result["error"]:   # the windows before a decoder error are kept
      print(f"error: {result['error']}; the timeline above stops there", file=sys.stderr)
      failed.append(video)
    if args.png:
      try:
        written = (write_timeline(result, args.png, pictures[video]) if args.every
                   else [write_png(result, args.png, file_name=pictures[video])])
        for path in written:
          print(f"  wrote {path}")
      except OSError as error:   # the disk filled, or the directory went away: the others go on
        print(f"error: {video}: its picture could not be written ({error.strerror or error})",
              file=sys.stderr)
        failed.append(video)
  if failed:
    print(f"{len(failed)} of {len(args.videos)} video(s) could not be classified: "
          f"{', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
