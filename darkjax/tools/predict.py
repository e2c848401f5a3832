"""Classify video files with a trained checkpoint of any darkjax paper.

  python -m darkjax.tools.predict --config configs/synthetic.py:runlocal \
      --checkpoint /tmp/darkjax/synthetic clip.avi [more.mp4 ...] [--png OUT_DIR] [--classes a,b,c]

Builds the config's Task (`darkjax.task.load_task`: the same model and on-device preprocessing as
training and evaluation, e.g. 3D-DiNet's channel matching, LIFT-Net's gamma-corrected luminous
clip, DTCM's enhancer), restores the latest checkpoint of the run (or `--step`; for runs in
phases, the phase that holds the deployed model: LIFT-Net's student, DTCM's joint / classifier
phase; `predict_checkpoint`), decodes each video with PyAV at the prepared dataset's resolution /
frame rate (its manifest's `short_side`, `resampled_fps`), computes the extra record streams the
model reads (a `flow` stream with the manifest's method and scale), makes the config's eval views
(`input.eval_clips` x `input.eval_crops`) and prints the top-5 classes with probabilities,
averaged over the views (`predict_host`: what is done on the host, without jax). Class names come
from the config's dataset manifest; without one, pass `--classes`. `--png OUT_DIR` writes
`<video>.png` with the first view's frames (and the enhanced frames for tasks that enhance) titled
with the prediction. A video that cannot be decoded is named on stderr with the reason (file not
found, no video stream, decoder error, no frames); the others are still classified and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from darkjax.tools.predict_host import PredictError, format_result, write_png

__all__ = ["PredictError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.predict", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="config file[:args], as for darkjax.main")
  parser.add_argument("--checkpoint", required=True, help="training WORKDIR")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--classes", default=None, help="comma-separated class names")
  parser.add_argument("--png", default=None, metavar="OUT_DIR", help="write frames + prediction")
  parser.add_argument("videos", nargs="+")
  args = parser.parse_args(argv)
  # pylint: disable=import-outside-toplevel   (predict_host's work needs no jax)
  from darkjax import config as config_lib
  from darkjax.tools import predict_checkpoint
  try:
    predictor = predict_checkpoint.Predictor(config_lib.load(args.config), args.checkpoint,
                                             args.classes, args.step)
  except (PredictError, config_lib.ConfigError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  failed = []
  for video in args.videos:
    try:
      result = predictor.predict(video)
    except PredictError as error:   # the message starts with the video's path and says why
      print(f"error: {error}", file=sys.stderr)
      failed.append(video)
      continue
    print(format_result(result))
    if args.png:
      print(f"  wrote {write_png(result, args.png)}")
  if failed:
    print(f"{len(failed)} of {len(args.videos)} video(s) could not be classified: "
          f"{', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
