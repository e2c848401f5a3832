"""grain pipeline: exact eval coverage on any number of hosts, checkpointable train iterator, clip ops."""

from __future__ import annotations

import json

import grain
import ml_collections as mlc
import numpy as np
import pytest

from darkjax import config as config_lib
from darkjax.data import ops, pipeline, records


def _dataset(tmp_path, count=15, frames=12, hw=(20, 24)):
  """Five shards of three examples; every frame's pixels encode (example, frame)."""
  examples = []
  for index in range(count):
    video = np.zeros((frames,) + hw + (3,), np.uint8)
    video[..., 0] = index
    video[..., 1] = np.arange(frames)[:, None, None]
    examples.append(dict(video=video, label=index % 3, video_id=f"v{index}",
                         streams={"ir": video[..., :1].copy()}))
  manifest = records.write_dataset(str(tmp_path), "toy", ["a", "b", "c"],
                                   {"train": examples, "test": examples}, fps=10,
                                   examples_per_shard=3, streams=("ir",))
  return records.split_files(manifest, str(tmp_path), "test"), count


@pytest.mark.parametrize("hosts", [1, 2, 3])
def test_eval_covers_every_example_once_on_any_number_of_hosts(tmp_path, hosts):
  files, total = _dataset(tmp_path)
  spec = ops.ClipSpec(frames=4, stride=2, crop_size=16, eval_clips=2, eval_crops=3)
  seen, batch_counts = [], []
  for host in range(hosts):
    batches = list(pipeline.eval_batches(files, spec, 4, streams=("ir",), process_index=host,
                                         process_count=hosts))
    batch_counts.append(len(batches))
    for batch in batches:
      assert batch["video"].shape == (4, 6, 4, 16, 16, 3)
      assert batch["ir"].shape == (4, 6, 4, 16, 16, 1)
      for row in range(4):
        if batch["mask"][row]:
          # The pixel value identifies the example: index must match the record's content.
          assert batch["video"][row, 0, 0, 0, 0, 0] == batch["index"][row]
          seen.append(int(batch["index"][row]))
        else:
          assert batch["index"][row] == -1
  assert len(set(batch_counts)) == 1, "hosts disagree on the number of eval batches"
  assert batch_counts[0] == pipeline.num_eval_batches(files, 4, hosts)
  assert sorted(seen) == list(range(total))


def test_record_file_iterator_state_is_the_next_record_offset(tmp_path):
  files, _ = _dataset(tmp_path)
  path = files[0][0]
  iterator = iter(pipeline.RecordFileIterDataset(path))
  data, source = next(iterator)
  state = iterator.get_state()
  assert source == f"{path}@0" and state == {"offset": 12 + len(data) + 4}
  rest = list(iterator)
  resumed = iter(pipeline.RecordFileIterDataset(path))
  resumed.set_state(state)
  assert list(resumed) == rest and len(rest) == 2


@pytest.mark.parametrize("consumed", [0, 4, 5, 7])   # batches of 3, windows of 5: mid and edge
def test_train_iterator_state_restores_exactly(tmp_path, consumed):
  files, _ = _dataset(tmp_path)
  spec = ops.ClipSpec(frames=4, stride=2, crop_size=16)
  make = lambda: pipeline.train_dataset(files, spec, 3, seed=7, shuffle_window=5, cycle_length=2,  # noqa
                                        prefetch=2, streams=("ir",), process_index=0,
                                        process_count=1)
  reference = iter(make())
  want = [next(reference) for _ in range(12)]
  first = iter(make())
  for _ in range(consumed):
    next(first)
  state = first.get_state()
  resumed = iter(make())
  resumed.set_state(state)
  for expected in want[consumed:]:
    got = next(resumed)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key])
  # The stream sees several epochs with a new file order each (shuffle + repeat).
  ids = [int(v) for b in want for v in b["video"][:, 0, 0, 0, 0]]
  assert len(set(ids)) > 10


@pytest.mark.slow
def test_worker_processes_restore_exactly_and_cover_the_files(tmp_path):
  files, _ = _dataset(tmp_path)
  spec = ops.ClipSpec(frames=4, stride=2, crop_size=16)
  make = lambda prefetch=0: pipeline.with_workers(pipeline.train_dataset(  # noqa
      files, spec, 3, seed=7, shuffle_window=5, cycle_length=2, prefetch=prefetch,
      streams=("ir",), process_index=0, process_count=1), workers=2)
  # (the workers run it without its thread prefetch, below: a state saved with one restores the
  # pipeline built without)
  first = iter(make(prefetch=2))
  for _ in range(3):
    next(first)
  state = json.loads(json.dumps(first.get_state()))   # as grain's checkpoint handler writes it
  want = [next(first) for _ in range(4)]
  first.close()
  resumed = iter(make())
  resumed.set_state(state)
  got = [next(resumed) for _ in range(4)]
  resumed.close()
  for expected, batch in zip(want, got):
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key])
  ids = {int(v) for b in want for v in b["video"][:, 0, 0, 0, 0]}
  assert len(ids) > 6   # both workers' slices of the files


def test_workers_run_the_pipeline_without_its_thread_prefetch(monkeypatch):
  # Its last step is then the batch, which grain writes straight into shared memory instead of
  # copying a finished batch there; grain's mp_prefetch buffers each worker's batches itself.
  given = []
  monkeypatch.setattr(grain.IterDataset, "mp_prefetch",
                      lambda self, *args, **kwargs: given.append(self) or self)
  batches = grain.MapDataset.range(12).to_iter_dataset().batch(3)
  prefetched = grain.experimental.ThreadPrefetchIterDataset(batches, prefetch_buffer_size=2)
  assert pipeline.with_workers(prefetched, 2) is batches and given == [batches]
  assert pipeline.with_workers(prefetched, 0) is prefetched   # in-process: the thread stays


_LAST_BATCHES = """
import json, sys
from darkjax.data import ops, pipeline
files = [tuple(f) for f in json.loads(sys.argv[1])]
batches = iter(pipeline.with_workers(pipeline.train_dataset(
    files, ops.ClipSpec(frames=4, stride=2, crop_size=16), 3, seed=7, shuffle_window=5,
    cycle_length=2, prefetch=0, streams=("ir",), process_index=0, process_count=1), workers=2))
kept = [next(batches) for _ in range(4)]
batches.close()
del kept
if sys.argv[2] == "release":
  pipeline.release_shared_memory()
"""


@pytest.mark.slow
def test_a_process_that_ends_after_its_last_worker_batch_leaves_no_shared_memory(tmp_path):
  # What `bench --config --with-input` does at its end: the workers' batches let go of, then the
  # process exits at once. Without `release_shared_memory` grain's deleting thread loses the last
  # unlinks and Python's resource tracker warns of leaked shared_memory objects at shutdown.
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  files, _ = _dataset(tmp_path)
  result = subprocess.run([sys.executable, "-c", _LAST_BATCHES, json.dumps(files), "release"],
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "leaked shared_memory" not in result.stderr, result.stderr[-3000:]


def test_input_workers_setting_is_checked():
  config = mlc.ConfigDict({"input": {"workers": 2}})
  assert config_lib.input_workers(config) == 2
  assert config_lib.input_workers(mlc.ConfigDict({"input": {"workers": -1}})) == -1
  for bad in (-2, 1.5, True, "2"):
    with pytest.raises(config_lib.ConfigError, match="config.input.workers"):
      config_lib.input_workers(mlc.ConfigDict({"input": {"workers": bad}}))
  with pytest.raises(config_lib.ConfigError, match="config.input.cores_per_device"):
    config_lib.input_workers(mlc.ConfigDict({"input": {"workers": -1, "cores_per_device": -1.0}}))


def test_automatic_input_workers_follow_the_platform_devices_and_host_cores():
  def auto(cores_per_device, platform, devices, host_cores):
    config = mlc.ConfigDict({"input": {"workers": -1, "cores_per_device": cores_per_device}})
    return config_lib.auto_input_workers(config, platform, devices, host_cores)
  assert auto(3.1, "cpu", 8, 64)[0] == 0   # a CPU's steps are slow: the training process keeps up
  assert auto(0.4, "gpu", 1, 16)[0] == 0   # the training process's prefetch thread is enough
  assert auto(0.6, "gpu", 1, 16)[0] == 1   # ceil(1.25 x 0.6)
  assert auto(3.1, "gpu", 1, 16)[0] == 4   # ceil(1.25 x 3.1)
  assert auto(3.1, "tpu", 4, 240)[0] == 16   # ceil(1.25 x 12.4): per device, the host's devices
  workers, note = auto(7.5, "gpu", 8, 32)   # 75 wanted: the host's cores less the training loop's
  assert workers == 31 and "75 wanted but this host has 32 cores" in note, note


def test_train_clip_keeps_streams_aligned_and_labels():
  rng = np.random.default_rng(0)
  video = np.zeros((10, 24, 32, 3), np.uint8)
  video[..., 1] = np.arange(10)[:, None, None]
  video[:, :, :, 2] = np.arange(32)[None, None, :]
  example = {"video": video, "ir": video[..., 1:3].copy(), "label": 4, "video_id": "x"}
  spec = ops.ClipSpec(frames=4, stride=2, short_side=0, crop_size=16, flip=True)
  for _ in range(10):
    out = ops.train_clip(example, rng, spec, streams=("ir",))
    assert out["video"].shape == (4, 16, 16, 3) and out["ir"].shape == (4, 16, 16, 2)
    np.testing.assert_array_equal(out["video"][..., 1:3], out["ir"])
    frames = out["video"][:, 0, 0, 1]
    assert np.all(np.diff(frames.astype(int)) == 2)
    assert out["label"] == 4



def _eval_views_per_crop(example, spec, streams):
  """`ops.eval_views` as it was written first: the video clip resized for every stream and view,
  another stream's clip resized inside each crop (`ops.crop`)."""
  arrays = {"video": example["video"], **{s: example[s] for s in streams}}
  n = arrays["video"].shape[0]
  if spec.sampling == "dense":
    index_sets = [ops.dense_indices(n, spec.frames, spec.stride, s)
                  for s in ops.uniform_dense_starts(n, spec.frames, spec.stride, spec.eval_clips)]
  elif spec.sampling == "grid":
    starts = ops.clip_starts(n, spec.frames)
    index_sets = [ops.dense_indices(n, spec.frames, 1, starts[i])
                  for i in ops.uniform_dense_starts(len(starts), 1, 1, spec.eval_clips)]
  else:
    index_sets = [ops.segment_indices(n, spec.frames, None, (c + 0.5) / spec.eval_clips)
                  for c in range(spec.eval_clips)]
  out = {}
  for name, full in arrays.items():
    views = []
    for idx in index_sets:
      clip = ops.resize_frames(arrays["video"][idx], spec)
      ref_hw = clip.shape[1:3]
      if name != "video":
        clip = full[np.minimum(idx, full.shape[0] - 1)]
      if spec.crop_size:
        mode = "center" if spec.eval_crops == 1 else "three"
        for top, left in ops.crop_boxes(*ref_hw, spec.crop_size, mode):
          views.append(ops.crop(clip, top, left, spec.crop_size, ref_hw, name))
      else:
        views.append(clip if clip.shape[1:3] == ref_hw else ops.resize_stream(clip, ref_hw, name))
    out[name] = np.stack(views)
  return out


def test_eval_views_resize_each_clip_once_and_crop_views_of_it():
  """`ops.eval_views` resizes each stream's clip once per view set and takes its crops as views
  of it: bit for bit what resizing inside every crop made, over random specs (dense / segment /
  grid, resize or short side or neither, one or three crops and clips, a flow stream at the
  video's size or another one)."""
  for case in range(100):
    rng = np.random.default_rng(case)
    t, h, w = int(rng.integers(3, 30)), int(rng.integers(36, 70)), int(rng.integers(36, 90))
    example = {"video": rng.integers(0, 256, (t, h, w, int(rng.choice([1, 3]))), np.uint8),
               "label": 1}
    streams = ()
    if rng.random() < 0.6:
      fh, fw = (h, w) if rng.random() < 0.5 else (h // 2 + 3, w // 2 + 5)
      example["flow"] = rng.integers(0, 256, (max(t - 2, 1), fh, fw, 3), np.uint8)
      streams = ("flow",)
    resize, short = (0, 0), 0
    if case % 3 == 1:
      resize = (int(rng.integers(30, 60)), int(rng.integers(30, 80)))
    elif case % 3 == 2:
      short = int(rng.choice([min(h, w), 30, 50, 90]))
    target = resize if resize[0] else ops.resized_hw(h, w, short)
    spec = ops.ClipSpec(frames=int(rng.integers(1, 20)), stride=int(rng.integers(1, 3)),
                        sampling=str(rng.choice(ops.SAMPLINGS)), short_side=short, resize=resize,
                        crop_size=int(rng.choice([0, min(target) // 2 + 1, min(target)])),
                        eval_clips=int(rng.integers(1, 4)), eval_crops=int(rng.choice([1, 3])))
    got = ops.eval_views(example, spec, streams)
    want = _eval_views_per_crop(example, spec, streams)
    assert set(got) == set(want) | {"label"} and got["label"] == 1
    for key, value in want.items():
      assert got[key].shape == value.shape and got[key].dtype == value.dtype, (case, key, spec)
      np.testing.assert_array_equal(got[key], value, err_msg=f"case {case} {key} {spec}")

def test_segment_and_multiclip_indices():
  assert ops.segment_indices(16, 8, None).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
  # Segment sampling's eval clips (LIFT-Net's `eval_clips`): clip c of n at (c + 0.5) / n of each
  # segment, so three clips are three views of other frames, each frame in its own segment.
  video = np.arange(48, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
  views = ops.eval_views({"video": video, "label": 0},
                         ops.ClipSpec(frames=8, sampling="segment", eval_clips=3))["video"]
  assert views[:, :, 0, 0, 0].tolist() == [[1, 7, 13, 19, 25, 31, 37, 43],
                                           [3, 9, 15, 21, 27, 33, 39, 45],
                                           [5, 11, 17, 23, 29, 35, 41, 47]]
  one = ops.eval_views({"video": video, "label": 0}, ops.ClipSpec(frames=8, sampling="segment"))
  assert one["video"][0, :, 0, 0, 0].tolist() == ops.segment_indices(48, 8, None).tolist()
  assert ops.uniform_dense_starts(40, 8, 2, 3) == [0, 12, 25]
  assert ops.dense_indices(5, 8, 1, 0).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]  # loops short videos


def test_grid_sampling_takes_one_of_the_non_overlapping_clips():
  """The two-stream C3D's split of a video into non-overlapping 16-frame clips: training draws one
  of them, evaluation takes evenly spaced ones (one: the middle one)."""
  video = np.arange(70, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
  example = {"video": video, "label": 0}
  spec = ops.ClipSpec(frames=16, sampling="grid", flip=False)
  rng = np.random.default_rng(0)
  starts = {int(ops.train_clip(example, rng, spec)["video"][0, 0, 0, 0]) for _ in range(200)}
  assert starts == {0, 16, 32, 48}   # 70 frames: 4 whole clips, frames 64-69 left out
  for start in starts:
    clip = ops.train_clip(example, np.random.default_rng(start), spec)["video"][:, 0, 0, 0]
    assert clip.tolist() == list(range(clip[0], clip[0] + 16))
  middle = ops.eval_views(example, spec)["video"][:, :, 0, 0, 0]
  assert middle[:, 0].tolist() == [16]
  three = ops.eval_views(example, ops.ClipSpec(frames=16, sampling="grid", eval_clips=3))
  assert three["video"][:, 0, 0, 0, 0].tolist() == [0, 32, 48]   # clips 0, round(1.5) = 2, 3
  short = ops.train_clip({"video": video[:10], "label": 0}, rng, spec)["video"][:, 0, 0, 0]
  assert short.tolist() == [i % 10 for i in range(16)]
  with pytest.raises(ValueError, match="input.sampling must be one of"):
    ops.ClipSpec(sampling="grids")


def test_crop_larger_than_frame_names_the_fix():
  with pytest.raises(ValueError, match="short_side"):
    ops.crop_boxes(10, 10, 16, "center")


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_hflip_equals_numpy_reversal(channels):
  clip = np.random.default_rng(0).integers(0, 255, (3, 9, 13, channels), dtype=np.uint8)
  np.testing.assert_array_equal(ops.hflip(clip[:, 1:8, 2:11]), clip[:, 1:8, 2:11][:, :, ::-1])


def test_input_benchmark_runs_and_reports_both_rates():
  from darkjax.tools import bench_input
  result = bench_input.run(videos=3, frames=20, clip_frames=8, batch=2, batches=2)
  assert result["records_clips_per_s"] > 0 and result["video_clips_per_s"] > 0
  assert result["ratio"] == pytest.approx(result["records_clips_per_s"] /
                                          result["video_clips_per_s"])
  assert "x" in bench_input.report(result)


def test_hosts_of_unequal_train_examples_are_warned_about(tmp_path, caplog):
  """Five shards of three examples on two hosts: 9 and 6 examples, each host drawing as many clips
  a step; on one host or five, none is drawn more often."""
  files, _ = _dataset(tmp_path)
  spec = ops.ClipSpec(frames=4)
  pipeline.train_dataset(files, spec, 2, seed=0, process_index=0, process_count=2)
  assert "give the 2 hosts 6 to 9 examples" in caplog.text and "1.50x" in caplog.text
  caplog.clear()
  for count in (1, 5):
    pipeline.train_dataset(files, spec, 2, seed=0, process_index=0, process_count=count)
  assert "hosts" not in caplog.text


@pytest.mark.parametrize("field, value, said", [
    ("short_side", 24, "config.input.short_side is 24"),
    ("resize", (32, 40), "config.input.resize is (32, 40) (short side 32)"),
])
def test_frames_prepared_smaller_than_a_config_reads_are_said_to_be_up_sampled(
    tmp_path, caplog, field, value, said):
  """The two-stream configs size frames by `resize` (128 x 171), not `short_side`: frames
  prepared smaller than either are named, with the `--short-side` to prepare them at."""
  from configs import common  # pylint: disable=import-outside-toplevel
  from darkjax.data.classification import ClassificationData  # pylint: disable=import-outside-toplevel
  video = np.zeros((4, 16, 20, 3), np.uint8)
  records.write_dataset(tmp_path / "d", "fake", ["a"], {split: [dict(
      video=video, label=0, video_id="v")] for split in ("train", "test")}, fps=8.0,
                        metadata={"short_side": 16})
  cfg = common.input_block(data=common.data_block("fake", str(tmp_path / "d")), frames=4)
  cfg[field] = value
  caplog.set_level("WARNING")
  ClassificationData(cfg, 0).dataset  # pylint: disable=expression-not-assigned
  side = min(value) if field == "resize" else value
  assert f"short side of 16 px but {said}: every clip is up-sampled" in caplog.text
  assert f"`--short-side {side}`" in caplog.text
  caplog.clear()
  cfg[field] = (16, 20) if field == "resize" else 16   # what was prepared: nothing to say
  ClassificationData(cfg, 0).dataset  # pylint: disable=expression-not-assigned
  assert "up-sampled" not in caplog.text
