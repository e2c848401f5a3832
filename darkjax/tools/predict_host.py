"""What `python -m darkjax.tools.predict` does on the host, the same for its two paths (a
checkpoint through JAX, `predict_checkpoint`; an exported model, `predict_exported`): a video
file becomes the model's uint8 inputs, and the model's logits a top-5. Imports no jax, so that an
exported ONNX model runs without it.

`VideoInputs` holds every setting that turning a video into inputs takes, and `views(path)`
applies them:
  decode          PyAV at the prepared dataset's short side and frame rate (its manifest's
                  `short_side`, `resampled_fps`; 0 keeps the file's), `video.decode_video`; a
                  model that reads a 1-channel stream (an infrared one) gets the frames' mean
                  over their 3 channels (a gray or thermal file has them equal)
  record streams  streams the model reads from records, computed from the whole decoded video as
                  `prepare --flow` does: only `flow`, with the dataset's method and scale (null:
                  a stream only a prepared dataset has, refused per video)
  views           the config's eval views (`ops.eval_views`: input.eval_clips x input.eval_crops
                  with the config's clip spec), every stream sampled and cropped alike
  view streams    streams the Task computes per view (two-stream's flow, `flow.flow_clips`)
Export writes `to_json()` into export.json as `video_inputs`; `from_json` reads it back and names
the key an older export.json lacks. `summarise` averages the views' softmax probabilities and
ranks the top 5; `format_result` and `write_png` show the result.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Mapping

import numpy as np

from darkjax import paths, plots
from darkjax.data import flow, ops, video

# The clip spec's fields that the eval views read (the others only shape training clips).
CLIP_FIELDS = ("frames", "stride", "sampling", "short_side", "resize", "crop_size", "eval_clips",
               "eval_crops")


class PredictError(RuntimeError):
  """Prediction cannot run as asked; the message names the config, checkpoint, model or video."""


# ================================================================ video -> inputs
@dataclasses.dataclass(frozen=True)
class VideoInputs:
  """How a video file becomes the model's inputs (module docstring): `spec` makes the views,
  `short_side` and `fps` decode, `record_streams` / `view_streams` map a stream name to the flow
  settings {"method", "scale"} it is computed with."""
  spec: ops.ClipSpec
  short_side: int = 0
  fps: float = 0.0
  record_streams: Mapping[str, Mapping[str, Any] | None] = dataclasses.field(default_factory=dict)
  view_streams: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  channels: int = 3   # of the clip the model reads (1: a single-channel stream such as `ir`)

  @property
  def inputs(self) -> tuple[str, ...]:
    """The model's inputs in the order export traces them."""
    return ("video", *self.record_streams, *self.view_streams)

  def decode(self, path: str) -> dict[str, np.ndarray]:
    """The video's frames as prepared (short side, frame rate) and its record streams."""
    # Frames resized as they are decoded (a long high-resolution file never held at full size):
    # to the dataset's short side, or, from a dataset stored at the files' size, straight to the
    # short side the views take (the same frames; not where a record stream such as flow is
    # computed from the decoded clip at the dataset's size).
    side = self.short_side or (self.spec.short_side if not self.record_streams
                               and not self.spec.resize[0] else 0)
    try:
      clip, _ = video.decode_video(path, side, self.fps)
    except video.VideoDecodeError as error:
      raise PredictError(str(error)) from None
    if self.channels == 1:
      clip = np.round(clip.mean(axis=-1, keepdims=True)).astype(np.uint8)
    elif self.channels != 3:
      raise PredictError(f"{path}: the model reads clips of {self.channels} channels; a video "
                         f"file gives 3 (RGB) or, averaged, 1")
    example = {"video": clip, "label": 0}
    for name, settings in self.record_streams.items():
      if name != flow.STREAM or settings is None:
        raise PredictError(f"{path}: the model reads record stream {name!r}, which only a "
                           f"prepared dataset has (predict computes only '{flow.STREAM}')")
      example[name] = flow.flow_clip(clip, settings["method"], float(settings["scale"]))
    return example

  def views(self, path: str) -> dict[str, np.ndarray]:
    """(V, T, h, w, C) uint8 eval views of every input the model reads, V = clips x crops."""
    views = ops.eval_views(self.decode(path), self.spec, tuple(self.record_streams))
    streams = {name: views[name] for name in ("video", *self.record_streams)}
    for name, settings in self.view_streams.items():
      if name != flow.STREAM:
        raise PredictError(f"{path}: the model reads stream {name!r} computed per view; predict "
                           f"computes only '{flow.STREAM}'")
      streams[name] = flow.flow_clips(streams["video"], settings["method"],
                                      float(settings["scale"]))
    return streams

  def to_json(self) -> dict[str, Any]:
    """What export.json records as `video_inputs`."""
    clip = {name: getattr(self.spec, name) for name in CLIP_FIELDS}
    clip["resize"] = [int(v) for v in clip["resize"]]
    return {"decode": {"short_side": int(self.short_side), "fps": float(self.fps),
                       "channels": int(self.channels)}, "clip": clip,
            "record_streams": {k: None if v is None else dict(v)
                               for k, v in self.record_streams.items()},
            "view_streams": {k: dict(v) for k, v in self.view_streams.items()}}

  @classmethod
  def from_json(cls, meta: Mapping[str, Any], source: str) -> "VideoInputs":
    """The VideoInputs an export.json (`meta`, read from `source`) records."""
    clip = {name: json_key(meta, f"video_inputs.clip.{name}", source) for name in CLIP_FIELDS}
    clip["resize"] = tuple(int(v) for v in clip["resize"])
    try:
      spec = ops.ClipSpec(**clip)
    except (TypeError, ValueError) as error:
      raise PredictError(f"{source}: video_inputs.clip: {error}") from None
    decode = json_key(meta, "video_inputs.decode", source)
    return cls(spec, int(json_key(meta, "video_inputs.decode.short_side", source)),
               float(json_key(meta, "video_inputs.decode.fps", source)),
               dict(json_key(meta, "video_inputs.record_streams", source)),
               dict(json_key(meta, "video_inputs.view_streams", source)),
               int(decode.get("channels", 3)))   # an export.json before it: RGB models only


def json_key(meta: Mapping[str, Any], dotted: str, source: str) -> Any:
  """meta's value at a dotted key; a PredictError names the file and the first key it lacks."""
  value: Any = meta
  parts = dotted.split(".")
  for depth, part in enumerate(parts, start=1):
    if not isinstance(value, Mapping) or part not in value:
      raise PredictError(f"{source} has no key {'.'.join(parts[:depth])!r}: it was written by "
                         "an older `python -m darkjax.tools.export`; export the run again to "
                         "predict from it")
    value = value[part]
  return value


# ================================================================ logits -> result
def mean_probabilities(logits: np.ndarray) -> np.ndarray:
  """The video's class probabilities: the softmax of each view's logits (V, classes), averaged."""
  logits = np.asarray(logits, np.float64)
  exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=0).astype(np.float32)


def summarise(path: str, views: np.ndarray, logits: np.ndarray, class_names: list[str],
              enhanced: np.ndarray | None = None,
              streams: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
  """A video's result: its views, probabilities and top 5 (name, probability); `streams`: the
  first view of each other input the model read (two-stream's flow), for the picture."""
  probs = mean_probabilities(logits)
  if len(probs) != len(class_names):
    raise PredictError(f"{path}: the model gives {len(probs)} classes, the class names are "
                       f"{len(class_names)}")
  order = np.argsort(-probs, kind="stable")[:5]
  return {"video": path, "views": views, "probs": probs,
          "top5": [(class_names[i], float(probs[i])) for i in order], "enhanced": enhanced,
          "streams": {name: np.asarray(v[0]) for name, v in (streams or {}).items()
                      if name != "video"}}


def _to_uint8(frames: np.ndarray) -> np.ndarray:
  """Enhanced frames in [0, 1] (`capabilities.Enhances`) on the input's 0-255 scale, unstretched:
  the picture shows what the enhancer made of the input beside it."""
  return (np.asarray(frames, np.float32) * 255).round().clip(0, 255).astype(np.uint8)


def png_names(videos: list[str]) -> dict[str, str]:
  """Each video's picture name: `<stem>.png`, numbered (`<stem>-2.png`, ...) where two videos
  share a file name (`a/clip.avi`, `b/clip.avi`) and one picture would overwrite the other."""
  unique = list(dict.fromkeys(videos))   # a video named twice is one picture
  stem = lambda video: os.path.splitext(os.path.basename(video))[0]  # noqa: E731
  stems, seen, names = collections.Counter(map(stem, unique)), collections.Counter(), {}
  for video in unique:
    seen[stem(video)] += 1
    name = stem(video)
    names[video] = f"{name}-{seen[name]}.png" if stems[name] > 1 else f"{name}.png"
  return names


def check_png_dir(out_dir: str) -> None:
  """Makes `--png OUT_DIR` before any video is read: a path that cannot be a directory fails
  at once, not after the first prediction."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise PredictError(f"--png {out_dir} is a file; give a directory for the pictures")
  why = paths.cannot_write(out_dir)   # an existing directory it cannot write into too
  if why:
    raise PredictError(f"--png {out_dir} cannot hold the pictures ({why}); give a directory you "
                       "can write to")
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as error:
    raise PredictError(f"--png {out_dir} cannot be made a directory ({error.strerror}); give a "
                       f"directory you can write to") from None


def write_png(result: dict[str, Any], out_dir: str, max_frames: int = 8,
              file_name: str | None = None) -> str:
  """OUT_DIR/<video>.png (or OUT_DIR/`file_name`): the first view's frames (and the enhanced
  ones, and those of every other stream the model read: two-stream's flow) titled with the top
  1."""
  rows = [("input (view 1)", result["views"][0])]
  if result["enhanced"] is not None:
    rows.append(("enhanced", _to_uint8(result["enhanced"])))
  for name, frames in result.get("streams", {}).items():
    rows.append((f"{name} (view 1)\nx, y, |v| as RGB" if name == flow.STREAM
                 else f"{name} (view 1)", frames))
  name, prob = result["top5"][0]
  views = len(result["views"])
  fig = plots.frame_rows(rows, f"{os.path.basename(result['video'])}: top-1 {name}, probability "
                         f"{prob:.1%}" + (f" (mean of {views} views)" if views > 1 else ""),
                         max_frames)
  stem = os.path.splitext(os.path.basename(result["video"]))[0]
  return plots.save(fig, os.path.join(out_dir, file_name or stem + ".png"), dpi=80)


def format_result(result: dict[str, Any]) -> str:
  lines = [f"{result['video']} ({len(result['views'])} view(s)):"]
  lines += [f"  {rank}. {name:<24s} {prob:.4f}" for rank, (name, prob)
            in enumerate(result["top5"], start=1)]
  return "\n".join(lines)
