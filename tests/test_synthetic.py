"""Synthetic dark-action dataset: rendering, darkening, label leakage, dataset writing."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from darkjax.data import records
from darkjax.data import flow, synthetic, video

TINY = dict(frames=8, size=16, train_per_class=2, test_per_class=1)


def _render(label, seed=0, index=0, split="train", **overrides):
  params = synthetic.SyntheticParams(**{**TINY, **overrides})
  return synthetic.render_clip(label, synthetic.clip_rng(seed, split, index), split, params)


def test_class_names_are_ten_unique_motions():
  assert len(synthetic.CLASS_NAMES) == 10
  assert len(set(synthetic.CLASS_NAMES)) == 10


@pytest.mark.parametrize("split", synthetic.SPLITS)
def test_render_clip_shapes_and_dtypes(split):
  for label in range(len(synthetic.CLASS_NAMES)):
    clip = _render(label, split=split)
    assert set(clip) == {"video", "day", "ir"}
    assert clip["video"].shape == (8, 16, 16, 3)
    assert clip["day"].shape == (8, 16, 16, 3)
    assert clip["ir"].shape == (8, 16, 16, 1)
    assert all(array.dtype == np.uint8 for array in clip.values())


def test_render_is_deterministic_in_the_seed():
  first, again, other = _render(3, seed=5), _render(3, seed=5), _render(3, seed=6)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first[key], other[key]), key


def test_mean_brightness_decreases_with_darkness():
  levels = (0.0, 0.4, 0.8, 1.0)
  means = [np.mean([_render(i % 10, index=i, darkness=d)["video"].mean() for i in range(6)])
           for d in levels]
  assert all(a > b for a, b in zip(means, means[1:])), means
  day = np.mean([_render(i % 10, index=i)["day"].mean() for i in range(6)])
  assert abs(means[0] - day) < 0.1 * day  # darkness 0 is day exposure
  assert day > 4 * means[2]
  assert 5 < means[2] < 30, means  # ARID-like at the default darkness


def test_darken_rejects_out_of_range_darkness():
  with pytest.raises(ValueError, match="darkness"):
    synthetic.darken(np.zeros((2, 4, 4, 3), np.uint8), 1.5, np.random.default_rng(0))
  with pytest.raises(ValueError, match="darkness"):
    synthetic.SyntheticParams(darkness=-0.1)


def test_appearance_does_not_depend_on_the_label():
  # Same generator, every label: identical looks, so per-class frame statistics match closely.
  for seed in range(3):
    day_means = [_render(label, seed=seed)["day"].mean() for label in range(10)]
    dark_means = [_render(label, seed=seed)["video"].mean() for label in range(10)]
    assert np.ptp(day_means) < 0.05 * np.mean(day_means), day_means
    assert np.ptp(dark_means) < 0.1 * np.mean(dark_means), dark_means


def test_per_class_brightness_is_nearly_equal_across_independent_clips():
  params = synthetic.SyntheticParams(**{**TINY, "size": 24})
  per_class = np.array([[synthetic._render_example((vars(params), "train", 10 * k + label))
                         ["video"].mean() for k in range(4)] for label in range(10)])
  class_means = per_class.mean(1)
  # Differences between classes stay within the clip-to-clip spread of the per-class mean.
  assert np.ptp(class_means) < 4 * per_class.std() / np.sqrt(4) + 1e-6, class_means



def test_motion_follows_the_class():
  rng = np.random.default_rng(0)
  paths = {name: synthetic._object_paths(name, rng, 16, 32) for name in synthetic.CLASS_NAMES}
  actor = {name: p[0] for name, p in paths.items()}
  assert actor["move_left"][-1, 0] < actor["move_left"][0, 0] - 5
  assert actor["move_right"][-1, 0] > actor["move_right"][0, 0] + 5
  assert actor["move_up"][-1, 1] < actor["move_up"][0, 1] - 5
  assert actor["move_down"][-1, 1] > actor["move_down"][0, 1] + 5
  for name, sign in (("circle_cw", 1), ("circle_ccw", -1)):
    step = np.diff(actor[name], axis=0)
    turning = step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0]  # > 0: clockwise, y down
    assert np.all(sign * turning > 0), name
  assert np.sum(np.diff(np.sign(np.diff(actor["wave"][:, 0]))) != 0) >= 2  # reverses twice
  assert np.all(actor["jump"][:, 1] <= 2.0) and actor["jump"][:, 1].min() < -5
  distance = {name: np.linalg.norm(paths[name][0] - paths[name][1], axis=-1)
              for name in ("approach", "separate")}
  assert distance["approach"][-1] < distance["approach"][0] - 5
  assert distance["separate"][-1] > distance["separate"][0] + 5


def test_render_clip_rejects_bad_label_and_split():
  with pytest.raises(ValueError, match="label"):
    _render(10)
  with pytest.raises(ValueError, match="split"):
    _render(0, split="val")


def _shard_mtimes(out_dir):
  return {name: os.stat(os.path.join(out_dir, name)).st_mtime_ns for name in os.listdir(out_dir)}


def test_ensure_dataset_writes_counts_and_regenerates_only_on_change(tmp_path, caplog):
  out_dir = str(tmp_path / "synthetic")
  manifest = synthetic.ensure_dataset(out_dir, show_progress=False, seed=1, **TINY)
  assert manifest["class_names"] == list(synthetic.CLASS_NAMES)
  assert manifest["num_classes"] == 10
  assert {s: e["num_examples"] for s, e in manifest["splits"].items()} == {"train": 20, "test": 10}
  assert manifest["frame_shape"] == [16, 16, 3]
  assert manifest["streams"] == {"day": [16, 16, 3], "ir": [16, 16, 1]}
  assert manifest["metadata"]["params"]["seed"] == 1
  assert records.load_manifest(out_dir) == manifest

  before = _shard_mtimes(out_dir)
  again = synthetic.ensure_dataset(out_dir, show_progress=False, seed=1, **TINY)
  assert again == manifest
  assert _shard_mtimes(out_dir) == before  # nothing rewritten

  with caplog.at_level(logging.WARNING, logger="darkjax"):
    changed = synthetic.ensure_dataset(out_dir, show_progress=False, seed=2, **TINY)
  assert "generating it again: it was generated with other parameters (params.seed)" in caplog.text
  assert changed["metadata"]["params"]["seed"] == 2
  old_hashes = [s["sha256"] for e in manifest["splits"].values() for s in e["shards"]]
  new_hashes = [s["sha256"] for e in changed["splits"].values() for s in e["shards"]]
  assert old_hashes != new_hashes
  assert records.load_manifest(out_dir)["metadata"]["params"]["seed"] == 2
  caplog.clear()
  shard = os.path.join(out_dir, changed["splits"]["test"]["shards"][0]["file"])
  os.remove(shard)
  with caplog.at_level(logging.WARNING, logger="darkjax"):
    synthetic.ensure_dataset(out_dir, show_progress=False, seed=2, **TINY)
  assert "generating it again: a file of it is missing" in caplog.text and os.path.isfile(shard)


def test_written_examples_decode_with_labels_matching_ids(tmp_path):
  manifest = synthetic.ensure_dataset(tmp_path, show_progress=False, **TINY)
  (path, count), = records.split_files(manifest, tmp_path, "test")
  examples = [records.decode_example(data) for data in records.iter_tfrecord(path)]
  assert len(examples) == count == 10
  assert sorted(e["label"] for e in examples) == list(range(10))
  for example in examples:
    assert example["video_id"].endswith(synthetic.CLASS_NAMES[example["label"]])
    assert example["video"].shape == (8, 16, 16, 3)


def test_same_seed_gives_byte_identical_shards(tmp_path):
  first = synthetic.ensure_dataset(tmp_path / "a", show_progress=False, **TINY)
  second = synthetic.ensure_dataset(tmp_path / "b", show_progress=False, **TINY)
  assert json.dumps(first["splits"]) == json.dumps(second["splits"])  # same files and sha256


def test_shards_are_byte_identical_across_processes(tmp_path):
  # Protobuf map order and hash seeds differ between processes; the bytes must not.
  here = synthetic.ensure_dataset(tmp_path / "here", show_progress=False, **TINY)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
  subprocess.run([sys.executable, "-m", "darkjax.data.synthetic", "--out", str(tmp_path / "there"),
                  "--frames", "8", "--size", "16", "--train-per-class", "2",
                  "--test-per-class", "1"], check=True, env=env, cwd=repo, capture_output=True)
  there = records.load_manifest(tmp_path / "there")
  assert json.dumps(here["splits"]) == json.dumps(there["splits"])


def test_worker_processes_write_the_same_bytes(tmp_path):
  params = synthetic.SyntheticParams(**TINY)
  serial = synthetic.generate(tmp_path / "serial", params, show_progress=False)
  pooled = synthetic.generate(tmp_path / "pooled", params, workers=1, show_progress=False)
  assert json.dumps(serial["splits"]) == json.dumps(pooled["splits"])


def test_ensure_dataset_refuses_foreign_directories(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="no manifest.json"):
    synthetic.ensure_dataset(tmp_path, show_progress=False, **TINY)
  with pytest.raises(TypeError, match="unknown parameters"):
    synthetic.ensure_dataset(tmp_path / "x", show_progress=False, colour="red")
  with pytest.raises(records.ForeignDirectoryError, match="notes.txt is a file"):
    synthetic.ensure_dataset(tmp_path / "notes.txt", show_progress=False, **TINY)
  assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_generation_killed_before_its_manifest_is_generated_again(tmp_path, caplog):
  """A SIGKILL mid-generation leaves finished shards under the writer's in-progress names and
  no manifest: darkjax's own half-made output, generated again (it had been refused as a foreign
  directory, with no word that deleting it was safe). A stranger's file there is still refused."""
  params = synthetic.SyntheticParams(**TINY)
  whole = synthetic.generate(tmp_path / "whole", params, show_progress=False)
  half = tmp_path / "half"
  half.mkdir()
  name = synthetic.DATASET_NAME
  (half / f"{name}-train-00000.tfrecord").write_bytes(b"finished shard")
  (half / f"{name}-train-00001.tfrecord.tmp").write_bytes(b"partial")
  caplog.set_level("WARNING")
  manifest = synthetic.ensure_dataset(half, show_progress=False, **TINY)
  assert "a generation stopped before it finished left 2 shard(s)" in caplog.text
  assert json.dumps(manifest["splits"]) == json.dumps(whole["splits"])
  stranger = tmp_path / "stranger"
  stranger.mkdir()
  (stranger / f"{name}-train-00000.tfrecord").write_bytes(b"shard")
  (stranger / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="no manifest.json"):
    synthetic.ensure_dataset(stranger, show_progress=False, **TINY)
  assert (stranger / "notes.txt").read_text() == "mine"


def test_cli_names_a_bad_out_or_videos_in_one_line(tmp_path, capsys):
  (tmp_path / "notes.txt").write_text("mine")
  for flag in ("--out", "--videos"):
    with pytest.raises(SystemExit) as stop:
      synthetic.main([flag, str(tmp_path / "notes.txt")])
    assert stop.value.code == 2
    assert f"{tmp_path / 'notes.txt'} is a file" in capsys.readouterr().err
  assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_writes_dataset_and_preview(tmp_path, capsys):
  png = tmp_path / "preview.png"
  argv = ["--out", str(tmp_path / "data"), "--frames", "8", "--size", "16", "--train-per-class",
          "1", "--test-per-class", "1", "--preview", str(png)]
  assert synthetic.main(argv) == 0
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert records.load_manifest(tmp_path / "data")["splits"]["train"]["num_examples"] == 10
  assert "classes=10" in capsys.readouterr().out


def test_blur_of_long_clips_equals_the_per_frame_blur():
  # 64 RGB frames are 192 planes, more than one OpenCV image holds: filtered in chunks.
  frames = np.random.default_rng(0).uniform(0, 1, (64, 20, 24, 3)).astype(np.float32)
  whole = synthetic._blur(frames, 1.5)  # pylint: disable=protected-access
  per_frame = np.concatenate([synthetic._blur(frames[i:i + 1], 1.5)  # pylint: disable=protected-access
                              for i in range(64)])
  np.testing.assert_allclose(whole, per_frame, rtol=0, atol=1e-6)
  clip = synthetic.render_clip(0, np.random.default_rng(1), "train",
                               synthetic.SyntheticParams(frames=64, size=48))
  assert clip["video"].shape == (64, 48, 48, 3)


def test_cli_writes_test_clips_as_videos_that_decode_to_the_records_clips(tmp_path, capsys):
  assert synthetic.main(["--videos", str(tmp_path / "videos"), "--videos-per-class", "2"]) == 0
  assert "wrote 20 videos" in capsys.readouterr().out
  names = sorted(os.listdir(tmp_path / "videos"))
  assert names == sorted(f"{c}_{i}.avi" for c in synthetic.CLASS_NAMES for i in (0, 1))
  params = synthetic.SyntheticParams()
  index = 1 + len(synthetic.CLASS_NAMES)   # move_right's second test clip
  expected = synthetic.render_clip(1, synthetic.clip_rng(params.seed, "test", index), "test",
                                   params)["video"]
  decoded, fps = video.decode_video(str(tmp_path / "videos" / "move_right_1.avi"))
  assert decoded.shape == expected.shape and fps == params.fps
  other = synthetic.render_clip(0, synthetic.clip_rng(params.seed, "test", index - 1), "test",
                                params)["video"]
  # MPEG-4 (yuv420p) is lossy on these noisy dark frames: close to the dataset's clip, in
  # brightness above all, and far closer to it than to another clip
  error = np.abs(decoded.astype(np.float32) - expected)
  assert error.mean() < 4.0 and abs(decoded.mean() - expected.mean()) < 2.0
  assert error.mean() < 0.5 * np.abs(decoded.astype(np.float32) - other).mean()


def test_motion_scenario_keeps_the_datasets_written_before_scenarios():
  # The default scenario's metadata is what it was before `scenario` existed, so an existing
  # dataset directory is not regenerated; another scenario is a different dataset.
  motion = synthetic._metadata(synthetic.SyntheticParams(**TINY))
  assert "scenario" not in motion["params"]
  what = synthetic._metadata(synthetic.SyntheticParams(**TINY, scenario="what", flow=True))
  assert what["params"]["scenario"] == "what" and what["params"]["flow"] is True
  assert what["flow"]["method"] == synthetic.FLOW_METHOD


def test_what_scenario_sets_the_objects_kind_and_heat():
  # Twenty classes: every motion once per kind. A clip's warm pixels are as hot as its kind says,
  # and only people have the warmer head (the hottest pixel above the body's mean).
  params = synthetic.SyntheticParams(frames=8, size=32, train_per_class=1, test_per_class=1,
                                     scenario="what")
  assert len(params.class_names) == 20
  assert {synthetic.SCENARIOS["what"][n][0] for n in params.class_names} == set(
      synthetic.CLASS_NAMES)
  with pytest.raises(ValueError, match="scenario"):
    synthetic.SyntheticParams(scenario="where")
  peaks = {"person": [], "machine": []}
  for index in range(40):
    example = synthetic._render_example((vars(params), "train", index))
    kind = synthetic.SCENARIOS["what"][params.class_names[example["label"]]][1]
    peaks[kind].append(np.percentile(example["streams"]["ir"], 99.5))
  assert max(peaks["person"]) < min(peaks["machine"]), peaks


def test_flow_stream_is_the_ir_streams_flow_as_prepare_stores_it(tmp_path):
  manifest = synthetic.ensure_dataset(tmp_path, show_progress=False, scenario="what", flow=True,
                                      **TINY)
  assert manifest["class_names"][0] == "move_left_person"
  assert manifest["streams"]["flow"] == [16, 16, 3]
  assert manifest["metadata"]["flow"]["method"] == "farneback"
  (path, _), = records.split_files(manifest, tmp_path, "test")
  for data in records.iter_tfrecord(path):
    example = records.decode_example(data)
    assert example["video_id"].endswith(manifest["class_names"][example["label"]])
    np.testing.assert_array_equal(example["flow"],
                                  flow.flow_clip(example["ir"], "farneback"))


def test_a_smaller_train_set_is_the_first_videos_of_each_class_and_the_same_test_videos():
  # What `train_videos` / `labelled` config args rely on: a set generated with fewer train clips
  # per class holds the first ones of every class of the larger set, and the same test clips.
  large = synthetic.SyntheticParams(**{**TINY, "train_per_class": 3})
  small = dataclasses.replace(large, train_per_class=1)
  m = len(small.class_names)

  def clips(params, split, count):
    rendered = [synthetic._render_example((dataclasses.asdict(params), split, i))
                for i in range(count)]
    return [(e["label"], e["video_id"], e["video"].tobytes()) for e in rendered]
  assert sorted(label for label, _, _ in clips(small, "train", m)) == list(range(m))
  assert clips(small, "train", m) == clips(large, "train", m)
  assert clips(small, "test", m) == clips(large, "test", m)


def test_cli_writes_the_test_clips_in_turn_as_one_long_video(tmp_path, capsys):
  path = tmp_path / "long" / "every_action.avi"
  assert synthetic.main(["--long-video", str(path)]) == 0
  params = synthetic.SyntheticParams()
  classes = len(synthetic.CLASS_NAMES)
  assert f"{classes * params.frames / params.fps:g} s, the classes in turn" in \
      capsys.readouterr().out
  decoded, fps = video.decode_video(str(path))
  assert decoded.shape[0] == classes * params.frames and fps == params.fps
  # second i is class i's first test clip, as `--videos` writes it
  for index in (0, classes - 1):
    expected = synthetic.render_clip(index, synthetic.clip_rng(params.seed, "test", index), "test",
                                     params)["video"]
    part = decoded[index * params.frames:(index + 1) * params.frames].astype(np.float32)
    assert np.abs(part - expected).mean() < 4.0
  with pytest.raises(SystemExit):
    synthetic.main(["--long-video", str(tmp_path)])
  assert "is a directory; give a video file name" in capsys.readouterr().err
