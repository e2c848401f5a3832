"""Classify video files with a trained checkpoint.

  python -m darkjax.tools.predict --config configs/synthetic.py:runlocal \
      --checkpoint /tmp/darkjax/synthetic clip.avi [more.mp4 ...] [--png OUT_DIR] [--classes a,b,c]

Builds the model named by the config, restores the params (and batch stats) of the latest
checkpoint in WORKDIR/checkpoints (or `--step`), decodes each video with PyAV, brings it to the
prepared dataset's resolution / frame rate (its manifest's `short_side`, `resampled_fps`), makes
the config's eval views (`input.eval_clips` x `input.eval_crops`, center crop by default), applies
the same on-device normalisation as training and prints the top-5 classes with probabilities,
averaged over the views. Class names come from the config's dataset manifest; without one, pass
`--classes`. `--png OUT_DIR` writes `<video>.png` with the first view's frames (and the enhanced
frames when the model returns `enhanced`) titled with the prediction.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import models
from darkjax.data import normalise, ops, records
from darkjax.data.prepare import common as prepare_common


class PredictError(RuntimeError):
  """Prediction cannot run as asked; the message names the config, checkpoint or video."""


def load_config(spec: str) -> mlc.ConfigDict:
  """`path/to/config.py[:args]` -> the ConfigDict its get_config(args) returns."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise PredictError(f"config file {path} does not exist")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if repo not in sys.path:  # configs import `configs.common`
    sys.path.insert(0, repo)
  module_spec = importlib.util.spec_from_file_location("darkjax_predict_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def dataset_manifest(config: mlc.ConfigDict) -> dict[str, Any] | None:
  directory = os.path.expanduser(config.input.data.dir or "")
  if directory and os.path.isfile(os.path.join(directory, records.MANIFEST)):
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
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  root = os.path.join(os.path.abspath(checkpoint_dir), "checkpoints")
  if not os.path.isdir(root):
    raise PredictError(f"{root} does not exist; --checkpoint must be a training WORKDIR")
  steps = sorted(int(d) for d in os.listdir(root)
                 if d.isdigit() and os.path.isdir(os.path.join(root, d, "state")))
  if not steps:
    raise PredictError(f"no finished checkpoint (<step>/state) in {root}")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise PredictError(f"no checkpoint for step {step} in {root}; steps: {steps}")
  state = ocp.StandardCheckpointer().restore(os.path.join(root, str(step), "state"))
  if not isinstance(state, dict) or "params" not in state:
    raise PredictError(f"{root}/{step}/state holds no 'params' (not a darkjax train state)")
  return {"params": state["params"], **(state.get("model_state") or {})}, step


def check_structure(variables: dict, expected: dict, where: str) -> None:
  """Raises listing missing / unexpected / mis-shaped entries of `variables` against `expected`."""
  got = {jax.tree_util.keystr(k): np.shape(v)
         for k, v in jax.tree_util.tree_leaves_with_path(variables)}
  want = {jax.tree_util.keystr(k): tuple(v.shape)
          for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  shapes = sorted(f"{k}: checkpoint {got[k]} vs model {want[k]}"
                  for k in set(got) & set(want) if tuple(got[k]) != want[k])
  if missing or unexpected or shapes:
    raise PredictError(f"checkpoint {where} does not fit the config's model: missing {missing}, "
                       f"unexpected {unexpected}, shape mismatches {shapes}")


class Predictor:
  """Model + restored variables + the config's eval preprocessing."""

  def __init__(self, config: mlc.ConfigDict, checkpoint_dir: str, classes: str | None = None,
               step: int | None = None):
    self.config = config
    self.manifest = dataset_manifest(config)
    self.class_names = class_names(config, self.manifest, classes)
    self.spec = ops.ClipSpec.from_config(config.input)
    self.dtype = jnp.dtype(config.get("compute_dtype", "float32"))
    self.model = models.build(config.model.name, num_classes=len(self.class_names),
                              dtype=self.dtype, **dict(config.model.get("kwargs", {})))
    self.variables, self.step = restore_variables(checkpoint_dir, step)
    size = self.spec.crop_size or self.spec.short_side or 32
    sample = jnp.zeros((1, self.spec.frames, size, size, 3), jnp.float32)
    expected = jax.eval_shape(
        lambda: self.model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                sample, train=False))
    check_structure(self.variables, dict(expected), f"{checkpoint_dir} step {self.step}")
    self._apply = jax.jit(lambda v, x: self.model.apply(v, x, train=False))

  def views(self, path: str) -> np.ndarray:
    """(V, T, h, w, 3) uint8 eval views of a video file, as the eval pipeline makes them."""
    meta = (self.manifest or {}).get("metadata", {})
    try:
      clip, _ = prepare_common.decode_video(path, int(meta.get("short_side") or 0),
                                            float(meta.get("resampled_fps") or 0.0))
    except prepare_common.PrepareError as error:
      raise PredictError(str(error)) from None
    return ops.eval_views({"video": clip, "label": 0}, self.spec)["video"]

  def predict(self, path: str) -> dict[str, Any]:
    views = self.views(path)
    x = jnp.asarray(views)
    if self.config.input.gamma:
      x = normalise.gamma_correct(x, self.config.input.gamma)
    logits, out = self._apply(self.variables, normalise.normalise(x, self.config.input.normalise,
                                                                  self.dtype))
    probs = np.asarray(jnp.mean(jax.nn.softmax(logits.astype(jnp.float32), -1), axis=0))
    order = np.argsort(-probs)[:5]
    enhanced = out.get("enhanced") if isinstance(out, dict) else None
    return {"video": path, "views": views, "probs": probs,
            "top5": [(self.class_names[i], float(probs[i])) for i in order],
            "enhanced": None if enhanced is None else np.asarray(enhanced[0], np.float32)}


def _to_uint8(frames: np.ndarray) -> np.ndarray:
  low, high = float(frames.min()), float(frames.max())
  return ((frames - low) / max(high - low, 1e-6) * 255).clip(0, 255).astype(np.uint8)


def write_png(result: dict[str, Any], out_dir: str, max_frames: int = 8) -> str:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = [("input", result["views"][0])]
  if result["enhanced"] is not None:
    rows.append(("enhanced", _to_uint8(result["enhanced"])))
  t = rows[0][1].shape[0]
  picks = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
  fig, axes = plt.subplots(len(rows), len(picks), squeeze=False,
                           figsize=(1.6 * len(picks), 1.8 * len(rows) + 0.6))
  for r, (label, frames) in enumerate(rows):
    for c, index in enumerate(picks):
      axes[r][c].imshow(frames[min(index, len(frames) - 1)])
      axes[r][c].set_xticks([]), axes[r][c].set_yticks([])
    axes[r][0].set_ylabel(label)
  name, prob = result["top5"][0]
  fig.suptitle(f"{os.path.basename(result['video'])}: {name} ({prob:.1%})")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, os.path.splitext(os.path.basename(result["video"]))[0] + ".png")
  fig.savefig(path, dpi=80, bbox_inches="tight")
  plt.close(fig)
  return path


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
    predictor = Predictor(load_config(args.config), args.checkpoint, args.classes, args.step)
    for video in args.videos:
      result = predictor.predict(video)
      print(format_result(result))
      if args.png:
        print(f"  wrote {write_png(result, args.png)}")
  except PredictError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
