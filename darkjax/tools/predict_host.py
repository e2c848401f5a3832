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
import csv
import dataclasses
import io
import math
import os
from typing import Any, Callable, Iterator, Mapping

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
  dataset_fps: float = 0.0   # the frame rate the model's training clips had (manifest `fps`)

  @property
  def inputs(self) -> tuple[str, ...]:
    """The model's inputs in the order export traces them."""
    return ("video", *self.record_streams, *self.view_streams)

  def decode(self, path: str) -> dict[str, np.ndarray]:
    """The video's frames as prepared (short side, frame rate) and its record streams."""
    try:
      clip, _ = video.decode_video(path, self._decode_side(), self.fps)
    except video.VideoDecodeError as error:
      raise PredictError(str(error)) from None
    return self._example(path, clip)

  def _decode_side(self) -> int:
    """The short side frames are decoded at (module docstring, `decode`)."""
    return self.short_side or (self.spec.short_side if not self.record_streams
                               and not self.spec.resize[0] else 0)

  def _example(self, path: str, clip: np.ndarray) -> dict[str, np.ndarray]:
    """A decoded clip (T, H, W, 3) as a record: the model's channels and its record streams."""
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
    return self._views(path, self.decode(path), self.spec)

  def _views(self, path: str, example: Mapping[str, np.ndarray],
             spec: ops.ClipSpec) -> dict[str, np.ndarray]:
    views = ops.eval_views(example, spec, tuple(self.record_streams))
    streams = {name: views[name] for name in ("video", *self.record_streams)}
    for name, settings in self.view_streams.items():
      if name != flow.STREAM:
        raise PredictError(f"{path}: the model reads stream {name!r} computed per view; predict "
                           f"computes only '{flow.STREAM}'")
      streams[name] = flow.flow_clips(streams["video"], settings["method"],
                                      float(settings["scale"]))
    return streams

  def clip_frames(self) -> int:
    """Frames one clip of the model spans (dense: frames x stride; grid and segment: frames)."""
    return self.spec.frames * (max(self.spec.stride, 1) if self.spec.sampling == "dense" else 1)

  def window_frames(self, fps: float, every_s: float, window_s: float = 0.0) -> int:
    """Frames (at `fps`) of one window of a timeline: `window_s` seconds; by default a clip's own
    span (dense, grid) or, for segment sampling, which spreads its frames over whatever it is
    given, `every_s`."""
    if window_s:
      return max(int(round(window_s * fps)), 1)
    if self.spec.sampling == "segment":
      return max(int(round(every_s * fps)), self.spec.frames)
    return self.clip_frames()

  def windows(self, path: str, every_s: float, window_s: float = 0.0, batch: int = 8
              ) -> Iterator[tuple[list[tuple[float, float]], dict[str, np.ndarray], float]]:
    """A timeline's inputs, `batch` windows at a time: ([(start s, end s)], {stream: (V, T, h, w,
    C)}, the rate decoded at), V = windows x clips a window. The video is decoded as it goes,
    resampled by its timestamps to `fps`, else `dataset_fps`, else the file's own rate (any
    length; a window's frames held), and a window starts every `every_s` (`step_frames`) from 0,
    plus one ending at the last frame where the others stop short of it. A window longer than a
    dense or grid clip is classified by as many clips as cover it (averaged, as a video's eval
    clips are); a segment clip spreads over its window. Record streams (flow) are computed per
    window. A video shorter than one window is one window. A decoder error mid-file raises
    PredictError after the windows before it."""
    if not (every_s > 0 and math.isfinite(every_s)):
      raise PredictError(f"--every {every_s:g}: give the seconds between windows (> 0)")
    if window_s < 0 or not math.isfinite(window_s):
      raise PredictError(f"--window {window_s:g}: give the seconds of a window (> 0)")
    try:
      rate = self.fps or self.dataset_fps or video.stream_rate(path)
      fps, frames = video.iter_frames(path, self._decode_side(), rate)
    except video.VideoDecodeError as error:
      raise PredictError(str(error)) from None
    span = self.window_frames(fps, every_s, window_s)
    clip, step = self.clip_frames(), step_frames(fps, every_s)
    if self.spec.sampling != "segment" and span < clip:
      raise PredictError(f"--window {window_s:g}: the model reads clips of {clip} frames, "
                         f"{clip / fps:g} s at {fps:g} frames/s; give at least that")
    clips = 1 if self.spec.sampling == "segment" else -(-span // clip)
    spec = dataclasses.replace(self.spec, eval_clips=clips, eval_crops=1)
    held: collections.deque = collections.deque(maxlen=span)
    pending: list[tuple[tuple[float, float], dict[str, np.ndarray]]] = []
    count, next_start, last_end = 0, 0, 0

    def window() -> tuple[tuple[float, float], dict[str, np.ndarray]]:
      return (((count - len(held)) / fps, count / fps),
              self._views(path, self._example(path, np.stack(held)), spec))

    try:
      for frame in frames:
        held.append(frame)
        count += 1
        if count - span == next_start:
          pending.append(window())
          next_start, last_end = next_start + step, count
        if len(pending) == batch:
          yield _batched(pending) + (fps,)
          pending = []
    except video.VideoDecodeError as error:
      if pending:
        yield _batched(pending) + (fps,)
      raise PredictError(f"{error} (after {count} frames, {count / fps:.2f} s)") from None
    if not count:
      raise PredictError(f"{path}: no decodable frames")
    if count < span or last_end < count:   # shorter than a window, or its end not yet covered
      pending.append(window())
    if pending:
      yield _batched(pending) + (fps,)

  def to_json(self) -> dict[str, Any]:
    """What export.json records as `video_inputs`."""
    clip = {name: getattr(self.spec, name) for name in CLIP_FIELDS}
    clip["resize"] = [int(v) for v in clip["resize"]]
    return {"decode": {"short_side": int(self.short_side), "fps": float(self.fps),
                       "channels": int(self.channels), "dataset_fps": float(self.dataset_fps)},
            "clip": clip,
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
               int(decode.get("channels", 3)),   # an export.json before it: RGB models only
               # before it: a timeline at the file's rate
               float(decode.get("dataset_fps", 0.0)))


def step_frames(fps: float, every_s: float) -> int:
  """Frames (at `fps`) from one timeline window's start to the next's: `every_s`, whole frames."""
  return max(int(round(every_s * fps)), 1)


def _batched(pending: list[tuple[tuple[float, float], dict[str, np.ndarray]]]
             ) -> tuple[list[tuple[float, float]], dict[str, np.ndarray]]:
  """Windows' (span, one-view streams) as their spans and the streams stacked on the view axis."""
  spans = [span for span, _ in pending]
  return spans, {name: np.concatenate([streams[name] for _, streams in pending])
                 for name in pending[0][1]}


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
  """The video's class probabilities: the softmax of each view's logits (V, classes), averaged
  over the views (..., V, classes) -> (..., classes)."""
  logits = np.asarray(logits, np.float64)
  exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=-2).astype(np.float32)


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


def timeline(path: str, video_inputs: VideoInputs,
             logits: Callable[[dict[str, np.ndarray]], np.ndarray], class_names: list[str],
             every_s: float, window_s: float = 0.0, batch: int = 8) -> dict[str, Any]:
  """What a long video shows when: the class probabilities of each window of `video_inputs.windows`
  (`logits`: the model on a batch of views, (V, classes); a window's clips averaged). Every batch
  is padded to `batch` windows, so a jitted model compiles one program for the whole video. A
  decoder error mid-file keeps the windows before it, with the error as `error`."""
  spans: list[tuple[float, float]] = []
  probs: list[np.ndarray] = []
  result: dict[str, Any] = {"video": path, "class_names": list(class_names), "every_s": every_s,
                            "error": None, "fps": 0.0}
  try:
    for window_spans, streams, fps in video_inputs.windows(path, every_s, window_s, batch):
      count = len(window_spans)
      clips = len(streams["video"]) // count
      if count < batch:
        streams = {name: np.concatenate([views, np.repeat(views[-clips:], batch - count, axis=0)])
                   for name, views in streams.items()}
      values = np.asarray(logits(streams), np.float64)[:count * clips]
      if values.shape[-1] != len(class_names):
        raise PredictError(f"{path}: the model gives {values.shape[-1]} classes, the class names "
                           f"are {len(class_names)}")
      probs.append(mean_probabilities(values.reshape(count, clips, -1)))   # a window's clips
      spans += window_spans
      result["fps"] = fps
  except PredictError as error:
    if not spans:
      raise
    result["error"] = str(error)
  result.update(spans=spans, probs=np.concatenate(probs),
                step_s=step_frames(result["fps"], every_s) / result["fps"])
  return result


def window_edges(spans: list[tuple[float, float]]) -> np.ndarray:
  """(N, 2): the stretch of time each window stands for. Overlapping windows split at the
  midpoints between their centres; a window apart from the next keeps its own end (the time
  between them is no window's)."""
  bounds = np.array(spans, np.float64).reshape(-1, 2)
  centres = bounds.mean(axis=1)
  out = bounds.copy()
  for i in range(len(bounds) - 1):
    if bounds[i + 1, 0] <= bounds[i, 1]:   # they touch or overlap
      middle = (centres[i] + centres[i + 1]) / 2
      out[i, 1] = max(min(bounds[i, 1], middle), out[i, 0])
      out[i + 1, 0] = min(max(bounds[i + 1, 0], middle), bounds[i + 1, 1])
  return out


def segments(result: dict[str, Any]) -> list[tuple[str, float, float, float]]:
  """Consecutive windows of one top-1 class merged: (class, start s, end s, its mean probability
  over them), over the windows' `window_edges`; a gap between windows ends a segment."""
  names, probs = result["class_names"], np.asarray(result["probs"])
  edges = window_edges(result["spans"])
  tops = probs.argmax(axis=-1)
  out: list[tuple[str, float, float, float]] = []
  first = 0
  for index in range(1, len(tops) + 1):
    if (index == len(tops) or tops[index] != tops[first]
        or edges[index, 0] > edges[index - 1, 1] + 1e-9):
      out.append((names[tops[first]], float(edges[first, 0]), float(edges[index - 1, 1]),
                  float(probs[first:index, tops[first]].mean())))
      first = index
  return out


def format_timeline(result: dict[str, Any]) -> str:
  """Each window's top 2, then the segments of one top-1 class, one a line."""
  names, probs = result["class_names"], result["probs"]
  step = result["step_s"]
  lines = [f"{result['video']} ({len(result['spans'])} window(s), one every {step:g} s"
           + (f": --every {result['every_s']:g} in whole frames at {result['fps']:g} frames/s"
              if abs(step - result["every_s"]) > 1e-9 else "") + "):"]
  for (start, end), p in zip(result["spans"], probs):
    order = np.argsort(-p, kind="stable")[:2]
    lines.append(f"  {start:8.2f} - {end:8.2f} s  " + "  ".join(
        f"{names[i]:<20s} {p[i]:.3f}" for i in order))
  lines.append("  segments (consecutive windows of one top-1 class):")
  lines += [f"    {start:8.2f} - {end:8.2f} s  {name:<20s} {prob:.3f}"
            for name, start, end, prob in segments(result)]
  if result.get("error"):
    lines.append(f"  (stopped early: {result['error']})")
  return "\n".join(lines)


def write_timeline(result: dict[str, Any], out_dir: str, file_name: str) -> list[str]:
  """OUT_DIR/<video>.timeline.png (every class's probability over time, the top 1 marked) and
  OUT_DIR/<video>.timeline.csv (start_s, end_s, then one probability column per class)."""
  stem = os.path.splitext(file_name)[0]
  names, probs = result["class_names"], result["probs"]
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(["start_s", "end_s", *names])
  writer.writerows([f"{start:.3f}", f"{end:.3f}", *(f"{v:.5f}" for v in p)]
                   for (start, end), p in zip(result["spans"], probs))
  table = os.path.join(out_dir, stem + ".timeline.csv")
  paths.write_bytes_atomic(paths.resolve(table), text.getvalue().encode("utf-8"))
  fig = plots.timeline(probs, window_edges(result["spans"]), names,
                       f"{os.path.basename(result['video'])}: class probability per window")
  return [plots.save(fig, os.path.join(out_dir, stem + ".timeline.png"), dpi=90),
          os.fspath(paths.resolve(table))]


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
  for path in unique:
    name = stem(path)
    seen[name] += 1
    names[path] = f"{name}-{seen[name]}.png" if stems[name] > 1 else f"{name}.png"
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
