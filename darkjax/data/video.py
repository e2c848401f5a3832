"""Reading video files: the one decoder (PyAV) and the one list of video file extensions.

`decode_video(path, short_side, fps)` returns every frame as uint8 RGB (T, H, W, 3) and the frame
rate. With `short_side` > 0 the frames are resized so their shorter side has that many pixels
(`ops.resize_short_side`, as the prepared datasets are); with `fps` > 0 they are resampled to that
rate (frame k the nearest earlier one to time k / fps, counted at the stream's average rate),
which is how `python -m darkjax.data.prepare --fps` makes clips of one frame rate.
`iter_frames(path, short_side, fps)` yields them one at a time, resampled by their timestamps (a
variable-rate file keeps its clock): what a long video's timeline reads. A file that cannot be
decoded (missing, no video stream, a decoder error, no frames) raises `VideoDecodeError` whose
message starts with the file's path and says why.

`write_video(path, frames, fps)` writes uint8 RGB frames as an MPEG-4 file (the synthetic set's
sample videos, the input benchmark, test fixtures). Used by dataset preparation, the darkness tool
and the input benchmark; `find_videos` and
`is_video_file` decide what counts as a video file by its extension (`VIDEO_EXTENSIONS`; a macOS
`._` metadata file is none).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

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


def _open(path: str) -> tuple[Any, Any, float]:
  """(container, its first video stream, the stream's average rate or DEFAULT_FPS); raises
  VideoDecodeError naming the file."""
  if os.path.isdir(path):
    raise VideoDecodeError(f"{path}: is a directory; give the video files in it (e.g. "
                           f"{os.path.join(path, '*.mp4')})")
  if not os.path.isfile(path):
    raise VideoDecodeError(f"{path}: file not found")
  try:
    container = av.open(path)
  except (av.error.FFmpegError, ValueError, OSError, EOFError) as failure:
    raise VideoDecodeError(f"{path}: cannot decode ({type(failure).__name__}: {failure})"
                           ) from None
  if not container.streams.video:
    container.close()
    raise VideoDecodeError(f"{path}: no video stream")
  stream = container.streams.video[0]
  rate = stream.average_rate or stream.guessed_rate or 0
  return container, stream, float(rate) if rate else DEFAULT_FPS


def stream_rate(path: str) -> float:
  """The first video stream's average frame rate (DEFAULT_FPS where the file states none)."""
  container, _, rate = _open(path)
  container.close()
  return rate


def iter_frames(path: str, short_side: int = 0, fps: float = 0.0
                ) -> tuple[float, Iterator[np.ndarray]]:
  """(frame rate, frames): the file's frames one at a time, (H, W, 3) uint8 RGB, resized to
  `short_side` as they are decoded, so that a video of any length is never held whole. With `fps`
  they are resampled to that rate by their timestamps as they come: frame k of the output is the
  one showing at time k / fps from the file's start (the latest that started by then), so a
  variable-rate file, or one whose damaged stretch the decoder skipped, keeps its clock, and times
  read as a player shows them: the file's start is its container's (a video stream that starts
  after its audio has its first frame stand for the time before it); frames without a timestamp
  count at the stream's rate. The rate is `fps`, else the stream's average
  (DEFAULT_FPS where it states none). Opening the file raises VideoDecodeError at once; a decoder
  error mid-file raises it from the iterator."""
  container, stream, source_fps = _open(path)
  # the file's start, which players count from (None: not stated, the first frame's time)
  start = (container.start_time / av.time_base if container.start_time is not None else None)

  def frames() -> Iterator[np.ndarray]:
    emitted, first, held = 0, None, None   # output frames so far; the start's time; previous
    try:
      with container:
        for index, frame in enumerate(container.decode(stream)):
          image = ops.resize_short_side(frame.to_ndarray(format="rgb24")[None], short_side)[0]
          if not fps:
            yield image
            continue
          time = frame.time if frame.time is not None else index / source_fps
          if first is None:   # the first frame also shows from the file's start to its time
            first, held = (time if start is None or start > time else start), image
          while emitted / fps < time - first - 1e-9:
            yield held
            emitted += 1
          held, last = image, time
        if fps and held is not None:   # the last frame shows for one period of the stream
          while emitted / fps < last - first + 1 / source_fps - 1e-9:
            yield held
            emitted += 1
    except (av.error.FFmpegError, ValueError, OSError, EOFError, MemoryError) as failure:
      raise VideoDecodeError(f"{path}: cannot decode ({type(failure).__name__}: {failure})"
                             ) from None

  return (float(fps) if fps else source_fps), frames()


def resample_fps(clip: np.ndarray, source_fps: float, fps: float) -> np.ndarray:
  """The frames of a `source_fps` clip shown at times k / fps: the nearest earlier frame each."""
  count = max(int(round(len(clip) * fps / source_fps)), 1)
  return clip[np.minimum((np.arange(count) * source_fps / fps).astype(np.int64), len(clip) - 1)]


def decode_video(path: str, short_side: int = 0, fps: float = 0.0) -> tuple[np.ndarray, float]:
  """All frames (T, H, W, 3) uint8 RGB and their frame rate; see the module docstring.

  `short_side` 0 keeps the decoded size, `fps` 0 the file's frame rate (DEFAULT_FPS if the file
  states none). Raises VideoDecodeError naming the file and the reason.
  """
  # Every frame, each resized as it is decoded (a long high-resolution file never holds its
  # full-size frames at once), then resampled whole: the count rounds as `resample_fps` says.
  source_fps, frames = iter_frames(path, short_side)
  frames = list(frames)
  if not frames:
    raise VideoDecodeError(f"{path}: no decodable frames")
  clip = np.stack(frames)
  if fps and abs(fps - source_fps) > 1e-3:
    clip, source_fps = resample_fps(clip, source_fps, fps), float(fps)
  return clip, source_fps
