"""darkjax.data.video: the one video decoder (frames, short-side resize, fps resampling, errors
naming the file) and the one list of video extensions."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from darkjax.data import ops, video


def _write_lossless(path: str, frames: np.ndarray, fps: int = 10) -> None:
  with av.open(path, "w") as container:
    stream = container.add_stream("rawvideo", rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr24"
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def _frames(count: int = 6, height: int = 24, width: int = 32) -> np.ndarray:
  frames = np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
  frames[:, 0, 0, 0] = np.arange(count)  # frame index, to check the resampling
  return frames


def test_decode_returns_the_frames_and_the_rate(tmp_path):
  frames = _frames()
  path = str(tmp_path / "clip.avi")
  _write_lossless(path, frames)
  clip, fps = video.decode_video(path)
  np.testing.assert_array_equal(clip, frames)
  assert fps == pytest.approx(10.0)


def test_short_side_resize_and_fps_resampling(tmp_path):
  frames = _frames()
  path = str(tmp_path / "clip.avi")
  _write_lossless(path, frames)
  clip, fps = video.decode_video(path, short_side=12)
  np.testing.assert_array_equal(clip, ops.resize_short_side(frames, 12))
  assert clip.shape == (6, 12, 16, 3) and fps == pytest.approx(10.0)
  clip, fps = video.decode_video(path, fps=5)   # every other frame
  assert fps == 5.0 and clip[:, 0, 0, 0].tolist() == [0, 2, 4]
  clip, fps = video.decode_video(path, fps=15)  # nearest earlier frame at k / 15 s
  assert fps == 15.0 and clip[:, 0, 0, 0].tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5]
  clip, fps = video.decode_video(path, fps=10)
  np.testing.assert_array_equal(clip, frames)


def test_undecodable_files_raise_naming_the_file_and_the_reason(tmp_path):
  missing = str(tmp_path / "missing.avi")
  with pytest.raises(video.VideoDecodeError, match=f"{missing}: file not found"):
    video.decode_video(missing)
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(b"not a video at all" * 10)
  with pytest.raises(video.VideoDecodeError, match=f"{garbage}: cannot decode"):
    video.decode_video(str(garbage))
  audio = str(tmp_path / "audio.wav")
  with av.open(audio, "w") as container:
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    container.mux(stream.encode(frame))
    container.mux(stream.encode())
  with pytest.raises(video.VideoDecodeError, match=f"{audio}: no video stream"):
    video.decode_video(audio)
  assert issubclass(video.VideoDecodeError, ValueError)


def test_video_files_are_found_by_extension(tmp_path):
  for name in ("a/x.AVI", "a/b/y.mp4", "z.3gp", "notes.txt", "a/clip.avi.part"):
    os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
    (tmp_path / name).touch()
  assert video.find_videos(str(tmp_path)) == sorted(
      str(tmp_path / n) for n in ("a/x.AVI", "a/b/y.mp4", "z.3gp"))
  assert video.is_video_file("V.MKV") and not video.is_video_file("v.mkv.tmp")
  assert all(ext == ext.lower() and ext.startswith(".") for ext in video.VIDEO_EXTENSIONS)


def _write_late_video(path: str, audio: bool) -> None:
  """Ten 10 fps frames of grey level 20 * i whose video stream starts at 0.5 s, after an audio
  stream from 0 (`audio`) or alone."""
  import fractions  # pylint: disable=import-outside-toplevel
  with av.open(path, "w") as container:
    stream = container.add_stream("ffv1", rate=10)
    stream.width = stream.height = 16
    stream.pix_fmt = "yuv444p"
    if audio:
      sound = container.add_stream("aac", rate=8000)
      sound.layout = "mono"
      for i in range(15):
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.float32), format="fltp",
                                             layout="mono")
        samples.sample_rate, samples.pts = 8000, 800 * i
        for packet in sound.encode(samples):
          container.mux(packet)
      for packet in sound.encode():
        container.mux(packet)
    stream.time_base = fractions.Fraction(1, 1000)
    for i in range(10):
      frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 20 * i, np.uint8), format="rgb24")
      frame.pts, frame.time_base = 500 + 100 * i, fractions.Fraction(1, 1000)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.mark.parametrize("audio", [True, False], ids=["after_audio", "alone"])
def test_resampled_frames_are_timed_from_the_files_start(tmp_path, audio):
  """A player counts time from the file's start: a video stream starting 0.5 s after its audio
  shows its first frame from 0 (five frames at 10 fps before its own); alone, the file starts
  with it."""
  path = str(tmp_path / "late.mkv")
  _write_late_video(path, audio)
  fps, frames = video.iter_frames(path, fps=10)
  levels = [int(round(float(f.mean()) / 20)) for f in frames]
  assert fps == 10.0
  assert levels == [0] * (5 if audio else 0) + list(range(10)), levels
