"""Input throughput: clips/s through the grain pipeline over pre-decoded records vs decoding the
same clips from video files per sample (what most PyTorch video loaders do).

    python -m darkjax.tools.bench --input [--videos 48] [--video-frames 64] [--frames 16]
        [--input-batch 8] [--batches 20]

It makes `--videos` 240x320 videos of `--video-frames` frames each. Both sides make the same
training clips: a random dense `--frames`-frame window, resize short side 128, random 112 crop,
flip. Video files are MPEG-4 Part 2 in .avi (ARID's container) written by PyAV;
records hold the decoded frames. Prints both rates and their ratio.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from darkjax.data import ops, pipeline, records, video


def _make_videos(n: int, frames: int, hw: tuple[int, int], rng: np.random.Generator):
  """Moving textured clips (compressible like real video, unlike noise)."""
  h, w = hw
  yy, xx = np.mgrid[0:h, 0:w]
  for i in range(n):
    phase = rng.uniform(0, 2 * np.pi, 3)
    clip = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
      for c in range(3):
        clip[t, :, :, c] = (127 + 60 * np.sin(0.05 * xx + 0.03 * yy + 0.2 * t + phase[c])
                            + 30 * np.sin(0.11 * yy - 0.07 * t)).clip(0, 255)
    yield f"clip{i:03d}", clip


def run(videos: int = 48, frames: int = 64, clip_frames: int = 16, batch: int = 8,
        batches: int = 20, seed: int = 0) -> dict[str, float]:
  rng = np.random.default_rng(seed)
  spec = ops.ClipSpec(frames=clip_frames, stride=1, short_side=128, crop_size=112, flip=True)
  with tempfile.TemporaryDirectory() as tmp:
    video_dir = os.path.join(tmp, "avi")
    os.makedirs(video_dir)
    examples = []
    for video_id, clip in _make_videos(videos, frames, (240, 320), rng):
      path = os.path.join(video_dir, video_id + ".avi")
      video.write_video(path, clip)
      decoded, _ = video.decode_video(path, short_side=128)  # prepare: decode once, resize
      examples.append(dict(video=decoded, label=0, video_id=video_id))
    records.write_dataset(os.path.join(tmp, "rec"), "bench", ["x"], {"train": examples}, fps=30,
                          examples_per_shard=8)
    records.list_shard_copies(os.path.join(tmp, "rec"), "train")
    files = records.split_files(records.load_manifest(os.path.join(tmp, "rec")),
                                os.path.join(tmp, "rec"), "train")
    del examples

    ds = pipeline.train_dataset(files, spec, batch, seed=seed, shuffle_window=32, prefetch=2,
                                process_index=0, process_count=1)
    it = iter(ds)
    next(it)  # warm up: open files, fill the shuffle window
    start = time.perf_counter()
    for _ in range(batches):
      next(it)
    record_rate = batches * batch / (time.perf_counter() - start)
    it.close()  # stop prefetch threads now, not at interpreter teardown

    paths = sorted(os.path.join(video_dir, f) for f in os.listdir(video_dir))
    n = max(batch * 3, 16)
    start = time.perf_counter()
    for i in range(n):
      full, _ = video.decode_video(paths[int(rng.integers(len(paths)))], short_side=128)
      ops.train_clip({"video": full, "label": 0}, rng, spec)
      del i
    video_rate = n / (time.perf_counter() - start)
  return {"records_clips_per_s": record_rate, "video_clips_per_s": video_rate,
          "ratio": record_rate / video_rate}


def report(result: dict[str, float]) -> str:
  return (f"input pipeline: records {result['records_clips_per_s']:.1f} clips/s, "
          f"decoding .avi per sample {result['video_clips_per_s']:.1f} clips/s, "
          f"ratio {result['ratio']:.1f}x")
