"""darkjax.data.prepare: tiny fake dataset trees in each official layout, real PyAV videos."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import fake_releases
from darkjax.data import prepared, records
from darkjax.data.prepare import __main__ as prepare_cli
from darkjax.data.prepare import arid, common, find_layout, infar, prepare

FRAMES, HW = 3, (32, 40)


def _video(path: str, seed: int, frames: int = FRAMES) -> None:
  fake_releases.write_video(path, seed, frames, HW)


def _arid_tree(root: str, clips_per_class: int = 2) -> dict[str, set[str]]:
  """ARID layout: clips_v1/<Class>/<Class>_<n>_1.mp4 and list_cvt/ARID_split{k}_{train,test}.txt."""
  return fake_releases.arid_tree(root, clips_per_class, frames=FRAMES, hw=HW)


def _split_ids(data_dir: str, split: str) -> dict[str, tuple[int, tuple[int, ...]]]:
  manifest = records.load_manifest(data_dir)
  out = {}
  for path, _ in records.split_files(manifest, data_dir, split):
    for data in records.iter_tfrecord(path):
      example = records.decode_example(data)
      out[example["video_id"]] = (int(example["label"]), example["video"].shape)
  return out


def test_arid_layout_prepares_all_three_official_splits(tmp_path):
  expected = _arid_tree(str(tmp_path / "src"))
  out = str(tmp_path / "out")
  manifest = prepare(find_layout("arid_v1", str(tmp_path / "src")), out, short_side=16,
                     examples_per_shard=4, progress=False)
  assert manifest["class_names"] == arid.CLASSES
  assert sorted(manifest["splits"]) == sorted(expected)
  assert manifest["frame_shape"] == [16, 20, 3]
  for split, videos in expected.items():
    found = _split_ids(out, split)
    assert set(found) == videos
    assert manifest["splits"][split]["num_examples"] == len(videos)
    for video_id, (label, shape) in found.items():
      assert arid.CLASSES[label] == video_id.split("/")[0]
      assert shape == (FRAMES, 16, 20, 3)
    # each class's videos in the part, what a kNN evaluation's k is checked against
    labels = [label for label, _ in found.values()]
    assert manifest["splits"][split]["class_counts"] == [labels.count(c)
                                                         for c in range(len(arid.CLASSES))]
  assert records.verify(out).ok
  dataset = prepared.open_dataset({"name": "arid_v1", "dir": out, "split_index": 2})
  assert dataset.split_name("test") == "test2"
  assert dataset.num_examples("test") == len(expected["test2"])
  assert dataset.num_examples("all") == len(expected["train2"]) + len(expected["test2"])
  # The count is the manifest's (an evaluation asks for it each time: no shard is stat'ed, a
  # request each on an object store); the shards are checked where a pipeline lists them.
  first = dataset.files("test")[0][0]
  os.rename(first, first + ".moved")
  assert dataset.num_examples("test") == len(expected["test2"])
  with pytest.raises(records.MissingShardError, match="does not exist"):
    dataset.files("test")
  os.mkdir(first)   # a directory where the shard should be is no shard either
  with pytest.raises(records.MissingShardError, match="does not exist"):
    dataset.files("test")
  os.rmdir(first)
  os.rename(first + ".moved", first)
  # A split the manifest does not have fails when the dataset is opened, naming the known ones.
  for split_index, fix in ((0, r"numbered splits \[1, 2, 3\]"), (4, "split_index")):
    with pytest.raises(prepared.DatasetSplitError,
                       match=rf"(?s)split '(train|test)4?'.*known splits: \['test1'.*{fix}"):
      prepared.open_dataset({"name": "arid_v1", "dir": out, "split_index": split_index,
                             "split": "train", "eval_split": "test"})
  with pytest.raises(prepared.DatasetSplitError, match="'val1'"):
    prepared.open_dataset({"name": "arid_v1", "dir": out, "split_index": 1, "split": "train",
                           "eval_split": "val"})


def test_arid_list_label_disagreeing_with_folder_names_the_line(tmp_path):
  _arid_tree(str(tmp_path), clips_per_class=1)
  path = tmp_path / "list_cvt" / "ARID_split2_test.txt"
  path.write_text("0\t3\tDrink/Drink_0_1.mp4\n")
  with pytest.raises(common.PrepareError, match=r"ARID_split2_test.txt:1: label 3"):
    find_layout("arid_v1", str(tmp_path))


def test_hmdb51_layout_uses_1_train_2_test_and_skips_0(tmp_path, caplog):
  names = ["brush_hair", "cartwheel", "wave"]
  split_dir = tmp_path / "testTrainMulti_7030_splits"
  split_dir.mkdir()
  for label, name in enumerate(names):
    clips = [f"{name}_clip{n}.avi" for n in range(3)]
    for n, clip in enumerate(clips):
      _video(str(tmp_path / "hmdb51_org" / name / clip), seed=label * 3 + n)
    for k in (1, 2, 3):
      marks = {1: "120", 2: "112", 3: "122"}[k]  # clip0, clip1, clip2
      (split_dir / f"{name}_test_split{k}.txt").write_text(
          "".join(f"{c} {m} \n" for c, m in zip(clips, marks)))
  out = str(tmp_path / "out")
  manifest = prepare(find_layout("hmdb51", str(tmp_path)), out, short_side=0, progress=False)
  # Fewer classes than the release's (an incomplete download) are said: their labels differ.
  assert "3 classes found, the release has 51" in caplog.text
  assert manifest["class_names"] == names
  assert manifest["frame_shape"] == [32, 40, 3]
  assert set(_split_ids(out, "train1")) == {f"{n}/{n}_clip0.avi" for n in names}
  assert set(_split_ids(out, "test1")) == {f"{n}/{n}_clip1.avi" for n in names}
  assert manifest["splits"]["train1"]["num_examples"] == 3  # clip2 is 0 (unused) in split 1
  assert manifest["splits"]["train2"]["num_examples"] == 6
  assert manifest["splits"]["test2"]["num_examples"] == 3
  assert set(_split_ids(out, "test3")) == {f"{n}/{n}_clip{i}.avi" for n in names for i in (1, 2)}
  assert records.verify(out).ok
  # a backup copy of a split file: refused, naming both (not the later one taken silently)
  backup = tmp_path / "zz_old" / "testTrainMulti_7030_splits"
  backup.mkdir(parents=True)
  (backup / "wave_test_split2.txt").write_text("wave_clip0.avi 2\n")
  with pytest.raises(common.PrepareError, match=r"several HMDB51 split files "
                     r"wave_test_split2.txt under .*zz_old"):
    find_layout("hmdb51", str(tmp_path))


def test_ucf101_layout_reads_classind_and_lists_case_insensitively(tmp_path):
  names = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
  lists = tmp_path / "ucfTrainTestlist"
  lists.mkdir()
  (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
  clips = {}
  for label, name in enumerate(names):
    file_name = "HandStandPushups" if name == "HandstandPushups" else name
    clips[name] = [f"{name}/v_{file_name}_g0{g}_c01.avi" for g in (1, 2)]
    for g, rel in enumerate(clips[name]):
      _video(str(tmp_path / "UCF-101" / rel), seed=label * 2 + g)
  for k in (1, 2, 3):
    (lists / f"trainlist0{k}.txt").write_text(
        "".join(f"{clips[n][0].lower() if k == 2 else clips[n][0]} {i + 1}\n"
                for i, n in enumerate(names)))
    (lists / f"testlist0{k}.txt").write_text("".join(f"{clips[n][1]}\n" for n in names))
  out = str(tmp_path / "out")
  manifest = prepare(find_layout("ucf101", str(tmp_path)), out, short_side=16, workers=2,
                     progress=False)  # decoding in 2 spawned processes
  assert manifest["class_names"] == names
  found = _split_ids(out, "train2")  # lower-cased list entries still find the files
  assert set(found) == {clips[n][0] for n in names}
  assert {label for label, _ in found.values()} == {0, 1, 2}
  assert set(_split_ids(out, "test3")) == {clips[n][1] for n in names}
  assert records.verify(out).ok
  # a backup copy of a list: refused, naming both (not the first found taken silently)
  (tmp_path / "backup").mkdir()
  (tmp_path / "backup" / "testlist01.txt").write_text(f"{clips[names[0]][1]}\n")
  with pytest.raises(common.PrepareError, match=r"several UCF101 files testlist01.txt under "
                     r".*backup/testlist01.txt"):
    find_layout("ucf101", str(tmp_path))


def test_dark48_layout_reads_the_published_annotations(tmp_path):
  """The release's layout: 0-based classInd.txt, `{train,test}_split{k}.txt` with `class/clip
  label` lines; the frame lists beside them (`frame_file_list/`) are not read."""
  expected = fake_releases.dark48_tree(str(tmp_path), clips_per_class=2)
  layout = find_layout("dark48", str(tmp_path))
  assert layout.class_names == fake_releases.DARK48_CLASSES
  assert layout.metadata["class_source"] == os.path.join("annotations", "classInd.txt")
  assert layout.metadata["split_source"]["train3"] == os.path.join("annotations",
                                                                   "train_split3.txt")
  for split, videos in expected.items():
    assert {i.video_id for i in layout.splits[split]} == videos
    assert all(fake_releases.DARK48_CLASSES[i.label] == i.video_id.split("/")[0]
               for i in layout.splits[split])
  out = str(tmp_path / "out")
  manifest = prepare(layout, out, short_side=8, examples_per_shard=64, progress=False)
  assert manifest["num_classes"] == 48
  assert manifest["splits"]["test2"]["num_examples"] == 48
  assert records.verify(out).ok
  # A list whose stated label disagrees with the video's class folder names the line.
  lines = (tmp_path / "annotations" / "test_split1.txt").read_text().splitlines()
  lines[1] = lines[1].rsplit(" ", 1)[0] + " 47"
  (tmp_path / "annotations" / "test_split1.txt").write_text("\n".join(lines) + "\n")
  with pytest.raises(common.PrepareError, match=r"test_split1.txt:2: label 47 but"):
    find_layout("dark48", str(tmp_path))


def test_dark48_layout_reads_arid_style_lists(tmp_path):
  names = [f"action{i:02d}" for i in range(48)]
  (tmp_path / "mapping_table.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)))
  videos = []
  for label, name in enumerate(names):
    rel = f"{name}/{name}_0.avi"
    _video(str(tmp_path / "videos" / rel), seed=label, frames=2)
    videos.append((label, rel))
  for k in (1, 2, 3):
    for kind in ("train", "test"):
      chosen = [v for i, v in enumerate(videos) if (i % 3 == k - 1) == (kind == "test")]
      (tmp_path / f"dark48_split{k}_{kind}.txt").write_text(
          "".join(f"{i} {label} {rel}\n" for i, (label, rel) in enumerate(chosen)))
  layout = find_layout("dark48", str(tmp_path))
  assert layout.class_names == names
  assert len(layout.splits["test1"]) == 16 and len(layout.splits["train1"]) == 32


def test_arid_v1_5_reads_its_two_splits_numbered_from_zero(tmp_path):
  expected = fake_releases.arid_tree(str(tmp_path / "v15"), 2, version="v1.5", frames=2, hw=HW)
  layout = find_layout("arid_v1_5", str(tmp_path / "v15"))
  assert sorted(layout.splits) == ["test1", "test2", "train1", "train2"]
  assert layout.metadata["split_source"]["train1"] == os.path.join("list_cvt", "split_0",
                                                                   "split0_train.txt")
  assert layout.metadata["video_root"] == "clips_v1.5"
  for split, videos in expected.items():
    assert {i.video_id for i in layout.splits[split]} == videos
  # ARID v1.0's release given to the v1.5 reader (or the other way round) is refused by name.
  fake_releases.arid_tree(str(tmp_path / "v1"), 1, version="v1", frames=2, hw=HW)
  with pytest.raises(common.PrepareError, match="clips_v1, the folder of arid_v1's release"):
    find_layout("arid_v1_5", str(tmp_path / "v1"))
  with pytest.raises(common.PrepareError, match="--dataset arid_v1_5"):
    find_layout("arid_v1", str(tmp_path / "v15"))
  # Both releases under one --src: each reader takes its own clips and the lists beside them.
  both = {"arid_v1": find_layout("arid_v1", str(tmp_path)),
          "arid_v1_5": find_layout("arid_v1_5", str(tmp_path))}
  assert both["arid_v1"].metadata["video_root"] == os.path.join("v1", "clips_v1")
  assert sorted(both["arid_v1"].splits) == [f"{k}{n}" for k in ("test", "train") for n in (1, 2, 3)]
  assert both["arid_v1_5"].metadata["video_root"] == os.path.join("v15", "clips_v1.5")
  assert {i.video_id for i in both["arid_v1_5"].splits["test2"]} == expected["test2"]


def test_arid_layout_refuses_ambiguous_lists_and_passes_over_folders_without_videos(tmp_path):
  src = tmp_path / "src"
  _arid_tree(str(src), clips_per_class=1)
  # Extracted frames in class folders beside the clips: not the videos.
  for name in arid.CLASSES:
    (src / "frames" / name / "Drink_0_1").mkdir(parents=True)
  assert find_layout("arid_v1", str(src)).metadata["video_root"] == "clips_v1"
  # A copy of a split list (a browser's `name (1).txt`) is not silently taken for the original.
  lists = src / "list_cvt"
  (lists / "ARID_split1_train (1).txt").write_text((lists / "ARID_split1_train.txt").read_text())
  with pytest.raises(common.PrepareError, match=r"several split lists for train1 .*\(1\)"):
    find_layout("arid_v1", str(src))
  os.remove(lists / "ARID_split1_train (1).txt")
  # Class folders that hold no video anywhere under --src: said so, before any decoding.
  os.rename(src / "clips_v1", tmp_path / "clips_elsewhere")
  with pytest.raises(common.PrepareError, match="hold no video file"):
    find_layout("arid_v1", str(src))


def test_arid_layout_follows_links_and_skips_macos_metadata_files(tmp_path):
  """ARID's repository links its data folder (`raw/data -> dataset`); a copy made on a Mac has a
  `._name` metadata file beside every video."""
  expected = _arid_tree(str(tmp_path / "dataset"), clips_per_class=1)
  for name in arid.CLASSES:
    (tmp_path / "dataset" / "clips_v1" / name / f"._{name}_0_1.mp4").write_bytes(b"\0\5\0")
  (tmp_path / "raw").mkdir()
  os.symlink(tmp_path / "dataset", tmp_path / "raw" / "data")
  os.symlink(tmp_path / "raw", tmp_path / "raw" / "data" / "loop")   # a link back up the tree
  layout = find_layout("arid_v1", str(tmp_path / "raw"))
  assert {i.video_id for i in layout.splits["test1"]} == expected["test1"]
  assert all(os.path.isfile(i.path) for items in layout.splits.values() for i in items)


def test_missing_videos_fail_before_any_decoding(tmp_path, monkeypatch):
  expected = _arid_tree(str(tmp_path / "src"), clips_per_class=1)
  layout = find_layout("arid_v1", str(tmp_path / "src"))
  decoded = []
  monkeypatch.setattr(common, "_decode_item", lambda job: decoded.append(job) or None)
  gone = sorted(expected["test1"])[:2]
  for rel in gone:
    os.remove(tmp_path / "src" / "clips_v1" / rel)
  out = str(tmp_path / "out")
  with pytest.raises(common.PrepareError, match=r"2 of the 11 videos .* --allow-missing 2"):
    prepare(layout, out, short_side=8, progress=False)
  with pytest.raises(common.PrepareError, match=r"2 of the 11 .* --allow-missing 2"):
    prepare(layout, out, short_side=8, progress=False, allow_missing=1)
  assert not decoded
  for item in layout.splits["train1"] + layout.splits["test1"]:
    if os.path.exists(item.path):
      os.remove(item.path)
  with pytest.raises(common.PrepareError, match=r"none of the 11 videos .* give --src"):
    prepare(layout, out, short_side=8, progress=False)
  assert not decoded


def test_interrupted_prepare_resumes_skipping_verified_shards(tmp_path, monkeypatch):
  _arid_tree(str(tmp_path / "src"))
  layout = find_layout("arid_v1", str(tmp_path / "src"))
  out = str(tmp_path / "out")
  real_decode = common.decode_video
  calls = []

  def interrupted(*args, **kwargs):
    if len(calls) == 10:
      raise KeyboardInterrupt
    calls.append(args[0])
    return real_decode(*args, **kwargs)

  monkeypatch.setattr(common, "decode_video", interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare(layout, out, short_side=16, examples_per_shard=4, progress=False)
  assert not os.path.exists(os.path.join(out, records.MANIFEST))
  assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
  with open(os.path.join(out, common.STATE_FILE)) as file:
    finished = json.load(file)["shards"]
  assert len(finished) == 2  # 10 decodes = 2 full shards of 4, the third was dropped
  total = sum(len(v) for v in layout.splits.values())

  # A finished shard damaged on disk fails its checksum and is redone.
  damaged = sorted(finished)[0]
  with open(os.path.join(out, damaged), "r+b") as file:
    file.seek(40)
    file.write(b"\xff\xff")
  calls.clear()
  monkeypatch.setattr(common, "decode_video",
                      lambda *a, **k: calls.append(a[0]) or real_decode(*a, **k))
  manifest = prepare(layout, out, short_side=16, examples_per_shard=4, progress=False)
  assert len(calls) == total - 4  # only the intact finished shard was skipped
  assert sum(s["num_examples"] for s in manifest["splits"].values()) == total
  assert records.verify(out).ok


def test_corrupt_video_is_reported_by_name(tmp_path, capsys):
  expected = _arid_tree(str(tmp_path / "src"))
  bad = "Pour/Pour_1_1.mp4"
  with open(tmp_path / "src" / "clips_v1" / bad, "wb") as file:
    file.write(b"not a video at all" * 10)
  out = str(tmp_path / "out")
  args = ["--dataset", "arid_v1", "--src", str(tmp_path / "src"), "--out", out, "--short-side",
          "16", "--workers", "1", "--no-progress"]
  assert prepare_cli.main(args) == 1
  assert bad in capsys.readouterr().err
  assert bad in open(os.path.join(out, common.LOG_FILE)).read()
  assert not os.path.exists(os.path.join(out, records.MANIFEST))

  capsys.readouterr()
  assert prepare_cli.main(args + ["--allow-missing", "1"]) == 0
  manifest = records.load_manifest(out)
  assert {f["video"] for f in manifest["metadata"]["failed"]} == {bad}
  # the video counted once, not once per split it is listed in
  assert len(manifest["metadata"]["failed"]) > 1
  assert "1 undecodable video(s) left out" in capsys.readouterr().out
  assert bad not in _split_ids(out, "train1") and bad not in _split_ids(out, "test1")
  assert manifest["splits"]["train1"]["num_examples"] + manifest["splits"]["test1"][
      "num_examples"] == len(expected["train1"]) + len(expected["test1"]) - 1
  for split in manifest["splits"].values():   # the undecodable video counted in no class
    assert sum(split["class_counts"]) == split["num_examples"]


def test_a_failed_overwrite_leaves_no_manifest_of_the_dataset_it_replaced(tmp_path, capsys):
  """--overwrite rewrites the old set's shard files in place: if it then fails, the old manifest
  must not go on describing them (the directory looked complete and failed later as damage)."""
  _arid_tree(str(tmp_path / "src"))
  out = str(tmp_path / "out")
  args = ["--dataset", "arid_v1", "--src", str(tmp_path / "src"), "--out", out, "--workers", "1",
          "--no-progress"]
  assert prepare_cli.main(args + ["--short-side", "16"]) == 0
  assert os.path.exists(os.path.join(out, records.MANIFEST))
  with open(tmp_path / "src" / "clips_v1" / "Pour/Pour_1_1.mp4", "wb") as file:
    file.write(b"")
  assert prepare_cli.main(args + ["--short-side", "12", "--overwrite"]) == 1
  assert not os.path.exists(os.path.join(out, records.MANIFEST))
  err = capsys.readouterr().err
  assert "prepare --overwrite: removed" in err and "holds no dataset" in err
  with pytest.raises(Exception, match="prepare"):   # the directory now says how to prepare it
    records.load_manifest(out)


def test_a_release_given_as_the_prepared_dataset_or_as_the_output_says_what_to_do(tmp_path,
                                                                                 capsys):
  _arid_tree(str(tmp_path / "src"))
  src = str(tmp_path / "src")
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match=r"(?s)holds videos, not a prepared dataset.*--src \S+src --out "
                           r"\S+src_prepared --short-side 240\n.*at the output \(\S+src_prepared\)"):
    prepared.open_dataset({"name": "arid_v1", "dir": src, "split_index": 1}, short_side=240)
  for out in (src, os.path.join(src, "records")):
    assert prepare_cli.main(["--dataset", "arid_v1", "--src", src, "--out", out, "--workers", "1",
                             "--no-progress"]) == 1
    assert "is inside --src" in capsys.readouterr().err
  assert not os.path.exists(os.path.join(src, records.MANIFEST))
  assert not os.path.exists(os.path.join(src, "records"))


def test_decode_resamples_fps_and_resizes_short_side(tmp_path):
  path = str(tmp_path / "v.avi")
  _video(path, seed=0, frames=8)
  clip, fps = common.decode_video(path, short_side=16)
  assert clip.shape == (8, 16, 20, 3) and fps == pytest.approx(10.0)
  clip, fps = common.decode_video(path, short_side=0, fps=5)
  assert clip.shape == (4, 32, 40, 3) and fps == 5.0
  with pytest.raises(common.PrepareError, match="file not found"):
    common.decode_video(str(tmp_path / "missing.avi"), 16)


def _infar_tree(root) -> None:
  for name in infar.CLASSES:
    os.makedirs(root / "InfAR" / name.upper())
    for n in range(50):
      (root / "InfAR" / name.upper() / f"{name}_{n:02d}.avi").touch()


def test_infar_five_seeded_splits_are_reproducible_30_20_per_class(tmp_path):
  _infar_tree(tmp_path)
  layout = find_layout("infar", str(tmp_path))
  again = infar.infar(str(tmp_path))
  other_seed = infar.infar(str(tmp_path), seed=1)
  assert sorted(layout.splits) == sorted(f"{kind}{k}" for kind in ("train", "test")
                                         for k in range(1, 6))
  assert layout.metadata["split_lists"] == again.metadata["split_lists"]
  assert layout.metadata["split_lists"] != other_seed.metadata["split_lists"]
  assert layout.splits["train1"] != layout.splits["train2"]
  for k in range(1, 6):
    train, test = layout.splits[f"train{k}"], layout.splits[f"test{k}"]
    assert np.bincount([v.label for v in train]).tolist() == [30] * 12
    assert np.bincount([v.label for v in test]).tolist() == [20] * 12
    assert not {v.video_id for v in train} & {v.video_id for v in test}
    for v in train + test:
      assert v.video_id.split("/")[0].lower() == infar.CLASSES[v.label]


def test_infar_with_wrong_clip_count_names_the_class(tmp_path):
  _infar_tree(tmp_path)
  os.remove(tmp_path / "InfAR" / "HUG" / "hug_00.avi")
  with pytest.raises(common.PrepareError, match="'hug': 49"):
    find_layout("xd145", str(tmp_path))


def test_shards_interleave_the_classes(tmp_path, caplog):
  """Sorted by id, a shard held one class folder or two, and batches drawn from a few shards
  through the shuffle window held few classes; ordered by a hash of the ids, every shard holds
  many (the order fixed, so a resumed prepare plans the same shards)."""
  items = [common.VideoItem(f"/x/{c}/{c}_{n}.avi", label, f"{c}/{c}_{n}.avi")
           for label, c in enumerate(arid.CLASSES) for n in range(32)]
  layout = common.Layout("arid_v1", list(arid.CLASSES), {"train1": items})
  plans = common.plan_shards(layout, examples_per_shard=32)
  assert len(plans) == 11
  assert min(len({i.label for i in p.items}) for p in plans) >= 6
  assert common.plan_shards(layout, 32) == plans
  assert sorted(i.video_id for p in plans for i in p.items) == sorted(i.video_id for i in items)
  # A dataset prepared before (no `shard_order` in its manifest) is named when opened.
  _arid_tree(str(tmp_path / "src"), clips_per_class=1)
  out = str(tmp_path / "out")
  prepare(find_layout("arid_v1", str(tmp_path / "src")), out, short_side=8, progress=False)
  manifest = records.load_manifest(out)
  assert manifest["metadata"]["shard_order"] == common.SHARD_ORDER
  del manifest["metadata"]["shard_order"]
  with open(os.path.join(out, records.MANIFEST), "w", encoding="utf-8") as f:
    json.dump(manifest, f)
  prepared.open_dataset({"name": "arid_v1", "dir": out, "split_index": 1, "split": "train",
                         "eval_split": "test"})
  assert "Prepare it again with --overwrite" in caplog.text


@pytest.mark.parametrize("flags, line", [
    (["--short-side", "-5"], "--short-side -5: must be >= 0"),
    (["--fps", "-1"], "--fps -1: must be >= 0"),
    (["--examples-per-shard", "0"], "--examples-per-shard 0: must be >= 1"),
    (["--flow", "--flow-scale", "0"], "--flow-scale 0: must be > 0"),
])
def test_a_nonsense_number_is_refused_before_anything_is_read(flags, line, tmp_path, capsys):
  with pytest.raises(SystemExit):
    prepare_cli.main(["--dataset", "arid_v1", "--src", str(tmp_path), "--out",
                      str(tmp_path / "out"), *flags])
  assert line in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
  (tmp_path / "src").mkdir()
  (tmp_path / "afile").write_text("x")
  args = ["--dataset", "arid_v1", "--src", str(tmp_path / "src"), "--no-progress"]
  assert prepare_cli.main(args + ["--out", str(tmp_path / "afile")]) == 1
  assert f"error: --out {tmp_path / 'afile'}: is a file" in capsys.readouterr().err
  assert prepare_cli.main(args + ["--out", str(tmp_path / "afile" / "x")]) == 1
  assert f"{tmp_path / 'afile'} is a file" in capsys.readouterr().err


def test_a_renamed_class_folder_is_named_with_the_closest_folder(tmp_path):
  """InfAR with a class folder renamed and its clips named otherwise: neither the folder nor
  the file-name layout matches; the error names the folder that has all but that class and the
  class it lacks (not a count of 0 clips for every class)."""
  for name in infar.CLASSES:
    folder = "WAVE_2" if name == "wave2" else name.upper()
    os.makedirs(tmp_path / "a" / "b" / "c" / "d" / "e" / "InfAR" / folder)
    for n in range(2):
      (tmp_path / "a" / "b" / "c" / "d" / "e" / "InfAR" / folder / f"clip{n}.avi").touch()
  with pytest.raises(common.PrepareError) as raised:
    find_layout("infar", str(tmp_path))
  message = str(raised.value)
  assert "no clips found for classes ['fight'" in message   # the file names carry no class
  assert f"the closest, {tmp_path}/a/b/c/d/e/InfAR, has 11 of the 12 class folders and lacks " \
         "['wave2']" in message   # found six folders deep
