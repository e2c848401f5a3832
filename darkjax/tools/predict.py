"""Classify video files with a trained checkpoint of any darkjax paper.

  python -m darkjax.tools.predict --config configs/synthetic.py:runlocal \
      --checkpoint /tmp/darkjax/synthetic clip.avi [more.mp4 ...] [--png OUT_DIR] [--classes a,b,c]

Builds the config's Task (`darkjax.task.load_task`: the same model and on-device preprocessing as
training and evaluation, e.g. 3D-DiNet's channel matching, LIFT-Net's gamma-corrected luminous
clip, DTCM's enhancer), restores the latest checkpoint of the run (or `--step`; for runs in
phases, the phase that holds the deployed model: LIFT-Net's student, DTCM's joint / classifier
phase), decodes each video with PyAV at the prepared dataset's resolution / frame rate (its
manifest's `short_side`, `resampled_fps`), computes the extra record streams the model reads (a
`flow` stream with the manifest's method and scale), makes the config's eval views
(`input.eval_clips` x `input.eval_crops`) and prints the top-5 classes with probabilities,
averaged over the views. Class names come from the config's dataset manifest; without one, pass
`--classes`. `--png OUT_DIR` writes `<video>.png` with the first view's frames (and the enhanced
frames for tasks that enhance) titled with the prediction. A video that cannot be decoded is
named on stderr with the reason (file not found, no video stream, decoder error, no frames); the
others are still classified and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import capabilities
from darkjax import config as config_lib
from darkjax import paths, plots
from darkjax import task as task_lib
from darkjax import variables as variables_lib
from darkjax.convert import io as convert_io
from darkjax.data import flow, ops, records, video


class PredictError(RuntimeError):
  """Prediction cannot run as asked; the message names the config, checkpoint or video."""


def dataset_manifest(config: mlc.ConfigDict) -> dict[str, Any] | None:
  directory = config.input.data.dir or ""
  if directory and (paths.resolve(directory) / records.MANIFEST).is_file():
    return records.load_manifest(directory)
  return None


def class_names(config: mlc.ConfigDict, manifest: dict[str, Any] | None,
                classes: str | None) -> list[str]:
  if classes:
    names = [c.strip() for c in classes.split(",") if c.strip()]
    if manifest is not None and len(names) != manifest["num_classes"]:
      raise PredictError(f"--classes gives {len(names)} names, the dataset manifest in "
                         f"{config.input.data.dir} has {manifest['num_classes']}")
    return names
  if manifest is None:
    raise PredictError(f"dataset directory {config.input.data.dir!r} of the config has no "
                       f"{records.MANIFEST}; pass the class names with --classes a,b,c")
  return list(manifest["class_names"])


def restore_variables(checkpoint_dir: str, step: int | None = None) -> tuple[dict, int]:
  """{"params": ..., <model_state collections>...} of a darkjax checkpoint, and its step."""
  if not (paths.resolve(checkpoint_dir) / "checkpoints").is_dir():
    raise PredictError(f"{paths.resolve(checkpoint_dir) / 'checkpoints'} does not exist; "
                       "--checkpoint must be a training WORKDIR")
  try:
    variables, meta = convert_io.load_run_variables(checkpoint_dir, step)
  except (FileNotFoundError, convert_io.CheckpointReadError) as error:
    raise PredictError(str(error)) from None
  return variables, int(meta["step"])


def sample_inputs(task: Any, manifest: dict[str, Any] | None = None
                  ) -> dict[str, jax.ShapeDtypeStruct]:
  """One clip (batch 1, uint8) of every stream `task`'s model reads, at the size its eval views
  have; channels from the dataset `manifest` (3 without one)."""
  spec = task.data.spec
  size = spec.crop_size or spec.short_side or 32
  shapes = (manifest or {}).get("streams", {})
  channels = ((manifest or {}).get("frame_shape") or [0, 0, 3])[-1]
  sample = {"video": jax.ShapeDtypeStruct((1, spec.frames, size, size, channels), jnp.uint8)}
  for name in task.data.streams:
    depth = (shapes.get(name) or [0, 0, 3])[-1]
    sample[name] = jax.ShapeDtypeStruct((1, spec.frames, size, size, depth), jnp.uint8)
  computed = task.computed_streams if isinstance(task, capabilities.ComputesStreams) else ()
  for name in computed:   # e.g. two-stream flow computed on the host
    sample[name] = jax.ShapeDtypeStruct((1, spec.frames, size, size, 3), jnp.uint8)
  return sample


class Predictor:
  """The config's Task + restored variables + its eval views of video files."""

  def __init__(self, config: mlc.ConfigDict, checkpoint_dir: str, classes: str | None = None,
               step: int | None = None):
    self.config = config
    self.manifest = dataset_manifest(config)
    self.class_names = class_names(config, self.manifest, classes)
    self.task = task_lib.load_task(config, num_classes=len(self.class_names))
    self.data = self.task.data
    self.spec = self.data.spec
    self.streams = tuple(self.data.streams)
    workdir = task_lib.deployed_workdir(config, checkpoint_dir)
    self.variables, self.step = restore_variables(workdir, step)
    expected = jax.eval_shape(self.task.init_variables, jax.random.key(0), self.sample_inputs())
    variables_lib.check_fits(dict(expected), self.variables, f"checkpoint {workdir} step "
                             f"{self.step}", PredictError)
    self._predict = jax.jit(self.task.predict)
    self._enhance = (jax.jit(self.task.enhance)
                     if isinstance(self.task, capabilities.Enhances) else None)

  def sample_inputs(self) -> dict[str, jax.ShapeDtypeStruct]:
    """One clip of every stream the model reads, at the size the eval views have."""
    return sample_inputs(self.task, self.manifest)

  def decode(self, path: str) -> dict[str, np.ndarray]:
    """The video's frames as prepared (short side, frame rate) and its extra streams."""
    meta = (self.manifest or {}).get("metadata", {})
    try:
      clip, _ = video.decode_video(path, int(meta.get("short_side") or 0),
                                   float(meta.get("resampled_fps") or 0.0))
    except video.VideoDecodeError as error:
      raise PredictError(str(error)) from None
    example = {"video": clip, "label": 0}
    for name in self.streams:
      if name != flow.STREAM:
        raise PredictError(f"{path}: the model reads record stream {name!r}, which only a "
                           "prepared dataset has (predict computes only 'flow')")
      settings = meta.get("flow") or {}
      example[name] = flow.flow_clip(clip, settings.get("method", flow.DEFAULT_METHOD),
                                     float(settings.get("scale", flow.DEFAULT_SCALE)))
    return example

  def predict(self, path: str) -> dict[str, Any]:
    views = ops.eval_views(self.decode(path), self.spec, self.streams)
    streams = {k: v for k, v in views.items() if k != "label"}
    if isinstance(self.task, capabilities.ComputesStreams) and self.task.computed_streams:
      streams = self.task.host_streams(streams)   # per view, as the task's evaluators do
    logits = self._predict(self.variables, streams)
    probs = np.asarray(jnp.mean(jax.nn.softmax(logits.astype(jnp.float32), -1), axis=0))
    order = np.argsort(-probs)[:5]
    enhanced = None
    if self._enhance is not None:
      enhanced = np.asarray(self._enhance(self.variables, streams["video"][:1])[0], np.float32)
    return {"video": path, "views": streams["video"], "probs": probs,
            "top5": [(self.class_names[i], float(probs[i])) for i in order],
            "enhanced": enhanced}


def _to_uint8(frames: np.ndarray) -> np.ndarray:
  low, high = float(frames.min()), float(frames.max())
  return ((frames - low) / max(high - low, 1e-6) * 255).clip(0, 255).astype(np.uint8)


def write_png(result: dict[str, Any], out_dir: str, max_frames: int = 8) -> str:
  rows = [("input", result["views"][0])]
  if result["enhanced"] is not None:
    rows.append(("enhanced", _to_uint8(result["enhanced"])))
  name, prob = result["top5"][0]
  fig = plots.frame_rows(rows, f"{os.path.basename(result['video'])}: {name} ({prob:.1%})",
                         max_frames)
  stem = os.path.splitext(os.path.basename(result["video"]))[0]
  return plots.save(fig, os.path.join(out_dir, stem + ".png"), dpi=80)


def format_result(result: dict[str, Any]) -> str:
  lines = [f"{result['video']} ({len(result['views'])} view(s)):"]
  lines += [f"  {rank}. {name:<24s} {prob:.4f}" for rank, (name, prob)
            in enumerate(result["top5"], start=1)]
  return "\n".join(lines)


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
  try:
    predictor = Predictor(config_lib.load(args.config), args.checkpoint, args.classes, args.step)
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
