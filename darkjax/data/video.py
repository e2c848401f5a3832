"""Reading video files: the one decoder (PyAV) and the one list of video file extensions.

`decode_video(path, short_side, fps)` returns every frame as uint8 RGB (T, H, W, 3) and the frame
rate. With `short_side` > 0 the frames are resized so their shorter side has that many pixels
(`ops.resize_short_side`, as the prepared datasets are); with `fps` > 0 they are resampled by
timestamp to that rate (nearest earlier frame), which is how `python -m darkjax.data.prepare
--fps` makes clips of one frame rate. A file that cannot be decoded (missing, no video stream, a
decoder error, no frames) raises `VideoDecodeError` whose message starts with the file's path and
says why.

`write_video(path, frames, fps)` writes uint8 RGB frames as an MPEG-4 file (the synthetic set's
sample videos, the input benchmark, test fixtures). Used by dataset preparation, the darkness tool
and the input benchmark; `find_videos` and
`is_video_file` decide what counts as a video file by its extension (`VIDEO_EXTENSIONS`; a macOS
`._` metadata file is none).
"""

from __future__ import annotations

import os

import av
import numpy as np

from darkjax.data import ops

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".m4v", ".3gp")
DEFAULT_FPS = 30.0  # assumed when the container states no frame rate


class VideoDecodeError(ValueError):
  """A video file cannot be decoded; the message names the file and the reason."""


def write_video(path: str, frames: np.ndarray, fps: float = DEFAULT_FPS) -> None:
  """Writes uint8 RGB frames (T, H, W, 3) to `path` (MPEG-4 in the container the extension names;
  H and W even, as yuv420p needs)."""
  frames = np.ascontiguousarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"write_video {path}: expected uint8 frames (T, H, W, 3), got "
                     f"{frames.dtype} {frames.shape}")
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=round(fps))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.bit_rate = 2_000_000
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def is_video_file(name: str) -> bool:
  """Whether a file name has one of VIDEO_EXTENSIONS (case-insensitive); macOS's `._name`
  metadata files (AppleDouble, left beside each file copied from a Mac) are not videos."""
  name = os.path.basename(name)
  return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and not name.startswith("._")


def find_videos(directory: str) -> list[str]:
  """Sorted paths of the video files under `directory` (recursively)."""
  found = []
  for root, _, names in os.walk(directory):
    found += [os.path.join(root, name) for name in names if is_video_file(name)]
  return sorted(found)


def _decode_all(path: str, short_side: int = 0) -> tuple[np.ndarray, float]:
  """Every frame of the first video stream (T, H, W, 3) uint8 RGB, each resized to `short_side`
  as it is decoded (so that a long high-resolution file never holds its full-size frames at
  once), and the stream's frame rate (0 if the container does not say)."""
  if os.path.isdir(path):
    raise VideoDecodeError(f"{path}: is a directory; give the video files in it (e.g. "
                           f"{os.path.join(path, '*.mp4')})")
  if not os.path.isfile(path):
    raise VideoDecodeError(f"{path}: file not found")
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoDecodeError(f"{path}: no video stream")
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate or 0
      frames = [ops.resize_short_side(frame.to_ndarray(format="rgb24")[None], short_side)[0]
                for frame in container.decode(stream)]
  except VideoDecodeError:
    raise
  except (av.error.FFmpegError, ValueError, OSError, EOFError, MemoryError) as error:
    raise VideoDecodeError(f"{path}: cannot decode ({type(error).__name__}: {error})") from None
  if not frames:
    raise VideoDecodeError(f"{path}: no decodable frames")
  return np.stack(frames), float(rate) if rate else 0.0


def resample_fps(clip: np.ndarray, source_fps: float, fps: float) -> np.ndarray:
  """The frames of a `source_fps` clip shown at times k / fps: the nearest earlier frame each."""
  count = max(int(round(len(clip) * fps / source_fps)), 1)
  return clip[np.minimum((np.arange(count) * source_fps / fps).astype(np.int64), len(clip) - 1)]


def decode_video(path: str, short_side: int = 0, fps: float = 0.0) -> tuple[np.ndarray, float]:
  """All frames (T, H, W, 3) uint8 RGB and their frame rate; see the module docstring.

  `short_side` 0 keeps the decoded size, `fps` 0 the file's frame rate (DEFAULT_FPS if the file
  states none). Raises VideoDecodeError naming the file and the reason.
  """
  clip, source_fps = _decode_all(path, short_side)
  source_fps = source_fps or DEFAULT_FPS
  if fps and abs(fps - source_fps) > 1e-3:
    clip, source_fps = resample_fps(clip, source_fps, fps), float(fps)
  return clip, source_fps
