"""A dataset of the user's own (`prepare --dataset folder`, darkjax/data/prepare/folder.py): its
classes and splits, its errors, and a paper config reading it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import fake_releases
from darkjax.data import prepared, records
from darkjax.data.classification import ClassificationData
from darkjax.data.prepare import __main__ as prepare_cli
from darkjax.data.prepare import common, find_layout
from run_configs import config_module


def _touch(root, names) -> None:
  """Empty files: what a layout reads is names, not videos."""
  for name in names:
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def _ids(layout, split: str) -> list[str]:
  return sorted(v.video_id for v in layout.splits[split])


def test_drawn_splits_keep_groups_whole_per_class_and_repeat_with_the_seed(tmp_path):
  # 3 classes under SRC/videos/: 4 actors x 2 clips, 5 actors x 2, 2 actors x 1
  names = [f"walk/walk_{a}_{c}.mp4" for a in range(4) for c in range(2)]
  names += [f"fall/fall_{a}_{c}.mp4" for a in range(5) for c in range(2)]
  names += [f"wave/wave_{a}_0.avi" for a in range(2)]
  _touch(tmp_path / "videos", names)
  layout = find_layout("folder", str(tmp_path), name="mine", group_pattern=r"^[a-z]+_\d+")
  assert layout.name == "mine" and layout.class_names == ["fall", "walk", "wave"]
  assert sorted(layout.splits) == ["test1", "train1"]
  assert layout.metadata["video_root"] == "videos"
  train, test = _ids(layout, "train1"), _ids(layout, "test1")
  assert sorted(train + test) == sorted(names) and not set(train) & set(test)
  # a group (an actor) on one side only
  actor = lambda v: v.rsplit("_", 1)[0]
  assert not {actor(v) for v in train} & {actor(v) for v in test}
  # per class about a quarter: walk 2 of 8, fall 2 of 10 (one actor: 4 would be 0.4), wave 1 of 2
  per_class = {c: sum(v.startswith(c) for v in test) for c in ("walk", "fall", "wave")}
  assert per_class == {"walk": 2, "fall": 2, "wave": 1}
  again = find_layout("folder", str(tmp_path), name="mine", group_pattern=r"^[a-z]+_\d+")
  assert _ids(again, "test1") == test
  others = find_layout("folder", str(tmp_path), name="mine", group_pattern=r"^[a-z]+_\d+",
                       seed=3, num_splits=3)
  assert sorted(others.splits) == ["test1", "test2", "test3", "train1", "train2", "train3"]
  assert len({tuple(_ids(others, f"test{k}")) for k in (1, 2, 3)} | {tuple(test)}) > 1
  assert layout.metadata["split_lists"]["test1"] == test
  assert layout.metadata["protocol"]["group_pattern"] == r"^[a-z]+_\d+"
  # without groups every clip is its own: a quarter of each class's clips
  single = find_layout("folder", str(tmp_path), name="mine", test_fraction=0.5)
  per_class = {c: sum(v.startswith(c) for v in _ids(single, "test1"))
               for c in ("walk", "fall", "wave")}
  assert per_class == {"walk": 4, "fall": 5, "wave": 1}


def test_a_validation_part_comes_from_the_train_groups(tmp_path):
  names = [f"walk/walk_{a}_{c}.mp4" for a in range(8) for c in range(2)]
  names += [f"fall/fall_{a}_0.mp4" for a in range(2)]
  _touch(tmp_path, names)
  layout = find_layout("folder", str(tmp_path), name="mine", group_pattern=r"^[a-z]+_\d+",
                       val_fraction=0.25, num_splits=2)
  assert list(layout.splits) == ["train1", "val1", "test1", "train2", "val2", "test2"]
  for k in (1, 2):
    parts = {p: _ids(layout, f"{p}{k}") for p in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(names)
    actors = {p: {v.rsplit("_", 1)[0] for v in ids} for p, ids in parts.items()}
    assert not (actors["train"] & actors["val"] or actors["train"] & actors["test"]
                or actors["val"] & actors["test"])
    # walk: 4 of 16 videos each to test and val; fall's two: one tests, one trains, none left
    assert sum(v.startswith("walk") for v in parts["val"]) == 4
    assert sum(v.startswith("walk") for v in parts["test"]) == 4
    assert [v.startswith("fall") for v in parts["val"]].count(True) == 0
  with pytest.raises(common.PrepareError, match="--val-fraction 0.8: must be >= 0 and leave"):
    find_layout("folder", str(tmp_path), name="mine", val_fraction=0.8)
  # split lists fix the splits: drawing options beside them are refused
  (tmp_path / "train.txt").write_text("walk/walk_0_0.mp4\nfall/fall_0_0.mp4\n")
  (tmp_path / "val.txt").write_text("walk/walk_1_0.mp4\n")
  (tmp_path / "test.txt").write_text("walk/walk_2_0.mp4\nfall/fall_1_0.mp4\n")
  layout = find_layout("folder", str(tmp_path), name="mine")
  assert list(layout.splits) == ["train1", "val1", "test1"]
  assert _ids(layout, "val1") == ["walk/walk_1_0.mp4"]
  with pytest.raises(common.PrepareError, match=r"--test-fraction, --seed: draw splits where SRC "
                                                r"has no split lists"):
    find_layout("folder", str(tmp_path), name="mine", test_fraction=0.5, seed=2)


def test_split_lists_and_a_class_file_set_the_splits_and_the_labels(tmp_path):
  _touch(tmp_path, ["Walk/a.mp4", "Walk/b.mp4", "Fall/c.mp4", "Fall/d.mp4"])
  (tmp_path / "train.txt").write_text("Walk/a.mp4 0\nFall/c.mp4 1\n")
  (tmp_path / "test.txt").write_text("Walk/b.mp4 0\nFall/d.mp4 1\n")
  # no class file: the folders sorted by name (Fall 0, Walk 1); the lists' labels are not checked
  layout = find_layout("folder", str(tmp_path), name="mine")
  assert layout.class_names == ["Fall", "Walk"]
  assert {(v.video_id, v.label) for v in layout.splits["train1"]} == {("Walk/a.mp4", 1),
                                                                     ("Fall/c.mp4", 0)}
  assert _ids(layout, "test1") == ["Fall/d.mp4", "Walk/b.mp4"]
  assert layout.metadata["split_source"] == {"train1": "train.txt", "test1": "test.txt"}
  # a class file fixes the numbering, and the lists' labels are checked against it
  (tmp_path / "classes.txt").write_text("1 walk\n2 fall\n")
  layout = find_layout("folder", str(tmp_path), name="mine")
  assert layout.class_names == ["Walk", "Fall"] and layout.metadata["class_source"] == "classes.txt"
  assert {(v.video_id, v.label) for v in layout.splits["train1"]} == {("Walk/a.mp4", 0),
                                                                     ("Fall/c.mp4", 1)}
  (tmp_path / "test.txt").write_text("Walk/b.mp4 0\nFall/d.mp4 0\n")
  with pytest.raises(common.PrepareError, match=r"test.txt:2: label 0 but 'Fall/d.mp4' is in "
                                                r"folder Fall \(label 1\)"):
    find_layout("folder", str(tmp_path), name="mine")
  # numbered lists as the releases name them: every pair found
  (tmp_path / "test.txt").unlink()
  (tmp_path / "train.txt").unlink()
  for k in (1, 2):
    (tmp_path / f"train_split{k}.txt").write_text("Walk/a.mp4\nFall/c.mp4\n")
    (tmp_path / f"test_split{k}.txt").write_text("Walk/b.mp4\nFall/d.mp4\n")
  layout = find_layout("folder", str(tmp_path), name="mine")
  assert sorted(layout.splits) == ["test1", "test2", "train1", "train2"]


@pytest.mark.parametrize("files, options, message", [
    (["a/x.mp4", "b/y.mp4", "z.mp4"], {}, r"holds videos outside any class folder \(\['z.mp4'\]"),
    (["a/x.mp4"], {}, r"found 1 class folder\(s\) with videos \(\['a'\]\); a dataset needs at "
                      r"least 2 classes"),
    (["a/x.mp4", "b/y.mp4", "classes.txt"], {}, r"classes.txt: no class names"),
    (["a/x.mp4", "b/y.mp4"], {"group_pattern": "^q"}, r"--group-pattern '\^q' matches none of "
                                                      r"the videos' paths"),
    (["a/x.mp4", "b/y.mp4"], {"group_pattern": "("}, r"not a regular expression"),
    (["a/x.mp4", "b/y.mp4"], {"test_fraction": 1.0}, r"--test-fraction 1: must be between"),
    (["a/x.mp4", "b/y.mp4"], {"name": "arid_v1"}, r"'arid_v1' is one darkjax reads with its "
                                                  r"own reader \(--dataset arid_v1\)"),
    (["a/x.mp4", "b/y.mp4"], {"name": "my data"}, r"dataset name 'my data': use letters"),
], ids=["loose video", "one class", "empty class file", "pattern matches nothing", "bad pattern",
        "fraction", "reserved name", "bad name"])
def test_a_tree_that_is_not_a_dataset_says_what_to_change(files, options, message, tmp_path):
  _touch(tmp_path, files)
  with pytest.raises(common.PrepareError, match=message):
    find_layout("folder", str(tmp_path), **{"name": "mine", **options})


def test_a_class_file_and_the_folders_must_agree(tmp_path):
  _touch(tmp_path, ["a/x.mp4", "b/y.mp4", "c/z.mp4"])
  (tmp_path / "classes.txt").write_text("a\nb\nd\n")
  with pytest.raises(common.PrepareError, match=r"names classes with no folder of videos .*\['d'\]"):
    find_layout("folder", str(tmp_path), name="mine")
  (tmp_path / "classes.txt").write_text("a\nb\n")
  with pytest.raises(common.PrepareError, match=r"folders \['c'\] hold videos but are not classes"):
    find_layout("folder", str(tmp_path), name="mine")


def test_own_dataset_options_belong_to_folder_only(tmp_path, capsys):
  with pytest.raises(SystemExit):
    prepare_cli.main(["--dataset", "arid_v1", "--src", str(tmp_path), "--out",
                      str(tmp_path / "out"), "--name", "x", "--seed", "2"])
  assert "--name, --seed: options of --dataset folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def own_dataset(tmp_path_factory):
  """A prepared dataset of the user's own: 3 classes x 4 clips of real videos, a drawn split with
  a validation part."""
  root = tmp_path_factory.mktemp("own")
  for c, name in enumerate(("cycle", "fall", "sit")):
    for k in range(4):
      fake_releases.write_video(str(root / "src" / name / f"{name}_{k}.mp4"), 10 * c + k)
  out = str(root / "night_clips")
  assert prepare_cli.main(["--dataset", "folder", "--src", str(root / "src"), "--out", out,
                           "--short-side", "36", "--val-fraction", "0.25", "--workers", "1",
                           "--no-progress"]) == 0
  return out


def test_a_paper_config_reads_own_dataset_under_its_name(own_dataset, monkeypatch):
  manifest = records.load_manifest(own_dataset)
  assert manifest["name"] == "night_clips"   # the base name of --out
  assert manifest["class_names"] == ["cycle", "fall", "sit"]
  assert {s: v["num_examples"] for s, v in manifest["splits"].items()} == {
      "train1": 6, "val1": 3, "test1": 3}
  lift = config_module("configs/lift_arid.py")
  config = lift.get_config(f"runlocal,data_dir={own_dataset}")
  config.input.prefetch = 0
  # under the config's own dataset name: refused, naming the arg
  with pytest.raises(prepared.DatasetMismatchError,
                     match=r"holds your dataset 'night_clips' .* give the config arg "
                           r"dataset=night_clips"):
    ClassificationData(config.input, 0).train_dataset(2)
  # the arg: $DARKJAX_DATA/<name> under its name
  monkeypatch.setenv("DARKJAX_DATA", os.path.dirname(own_dataset))
  config = lift.get_config("runlocal,dataset=night_clips")
  assert (config.input.data.name, config.input.data.dir) == ("night_clips", own_dataset)
  config.input.prefetch = 0
  data = ClassificationData(config.input, 0)
  batch = next(iter(data.train_dataset(2)))
  assert batch["video"].shape[0] == 2 and np.all(batch["label"] < 3)
  seen = sum(int(np.sum(b["mask"])) if "mask" in b else len(b["label"])
             for b in data.eval_batches(2))
  assert seen == 3
  # settings chosen on the validation part: an evaluation of val1, not test1
  config.input.data.eval_split = "val"
  data = ClassificationData(config.input, 0)
  assert [os.path.basename(f) for f, _ in data.dataset.files("val")] == [
      shard["file"] for shard in manifest["splits"]["val1"]["shards"]]
  assert sum(int(np.sum(b["mask"])) if "mask" in b else len(b["label"])
             for b in data.eval_batches(2)) == 3


def test_a_config_pointed_at_another_datasets_records_is_refused(own_dataset, tmp_path):
  other = tmp_path / "dark48"
  shutil.copytree(own_dataset, other)
  manifest = json.loads((other / records.MANIFEST).read_text())
  manifest["name"] = "dark48"
  del manifest["metadata"]["layout"]
  (other / records.MANIFEST).write_text(json.dumps(manifest))
  block = {"name": "arid_v1", "dir": str(other), "split_index": 1, "split": "train",
           "eval_split": "test"}
  with pytest.raises(prepared.DatasetMismatchError,
                     match=r"holds 'dark48' \(its manifest.json\) and the config's data block reads "
                           r"'arid_v1'.*point the block's dir .* at arid_v1's prepared directory"):
    prepared.open_dataset(block)
  # a name darkjax has no reader for, not prepared: the folder command to run
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match=r"--dataset folder --name night_clips --src "
                           r"/path/to/your/class/folders --out /nowhere/night_clips"):
    prepared.open_dataset(dict(block, name="night_clips", dir="/nowhere/night_clips"))
  # a typo: the prepared datasets beside it, the closest named
  typo = os.path.join(os.path.dirname(own_dataset), "night_clip")
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match=r"Prepared beside it: \['night_clips'\] "
                           r"\(did you mean 'night_clips'\?\)"):
    prepared.open_dataset(dict(block, name="night_clip", dir=typo))


def test_every_real_data_config_reads_own_dataset_by_its_arg(monkeypatch, tmp_path):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path))
  for path in ("configs/dtcm_arid.py", "configs/lift_hmdb51.py", "configs/twostream_infar.py"):
    config = config_module(path).get_config("runlocal,dataset=night_clips")
    assert config.input.data.name == "night_clips", path
    assert config.input.data.dir == str(tmp_path / "night_clips"), path
  # ActLumos's self-supervision reads the user's dataset too, not ARID and Dark-48
  config = config_module("configs/actlumos_arid.py").get_config("dataset=night_clips")
  assert config.input.data.name == "night_clips"
  assert tuple(config.ssl.datasets) == ("night_clips",)
  assert tuple(config.ssl.dirs) == (str(tmp_path / "night_clips"),)
  config = config_module("configs/actlumos_arid.py").get_config(
      "dataset=night_clips,ssl_datasets=night_clips+dark48")
  assert tuple(config.ssl.datasets) == ("night_clips", "dark48")
  config = config_module("configs/dinet_infar.py").get_config(
      "runlocal,source_dataset=day_clips,target_dataset=night_clips,target_dir=/t")
  assert (config.input.data.name, config.input.data.dir) == ("day_clips",
                                                              str(tmp_path / "day_clips"))
  assert (config.dinet.target.data.name, config.dinet.target.data.dir) == ("night_clips", "/t")
  for bad, message in (("dataset=synthetic", "configs/<paper>_synthetic.py"),
                       ("dataset=my clips", "a prepared dataset's name")):
    with pytest.raises(ValueError, match=message):
      config_module("configs/lift_arid.py").get_config(bad)


def test_train_and_test_folders_are_the_split_and_their_folders_the_classes(tmp_path):
  _touch(tmp_path, ["Train/walk/a.mp4", "Train/fall/b.mp4", "Train/fall/c.mp4",
                    "test/Walk/d.mp4", "test/fall/e.mp4", "validation/walk/f.mp4"])
  layout = find_layout("folder", str(tmp_path), name="mine")
  assert layout.class_names == ["fall", "walk"]
  assert list(layout.splits) == ["train1", "val1", "test1"]
  assert {(v.video_id, v.label) for v in layout.splits["test1"]} == {("test/Walk/d.mp4", 1),
                                                                    ("test/fall/e.mp4", 0)}
  assert _ids(layout, "val1") == ["validation/walk/f.mp4"]
  assert layout.metadata["split_source"]["train1"] == "Train"
  assert layout.metadata["warnings"] == [
      "val1 has no video of the class(es) ['fall']: its accuracies leave them out (more videos "
      "of them, or other split options or lists)"]
  with pytest.raises(common.PrepareError, match=r"--seed: draw splits where SRC has no split "
                                                r"lists or train / test folders"):
    find_layout("folder", str(tmp_path), name="mine", seed=1)


@pytest.mark.parametrize("files, links, lists, message", [
    (["Drink/a.mp4", "drink/b.mp4", "run/c.mp4"], {}, {},
     r"class folders 'Drink' and 'drink' differ only in case"),
    (["a/x.mp4", "b/y.mp4", "b/z.mp4"], {"a/also_b": "../b"}, {},
     r"a/also_b leads into class folder 'b'"),
    (["a/x.mp4", "a/w.mp4", "b/y.mp4"], {}, {"train.txt": "a/x.mp4\nb/y.mp4\n",
                                            "test.txt": "a/x.mp4\na/w.mp4\n"},
     r"a/x.mp4 is in both train1 and test1"),
    (["a/x.mp4", "b/y.mp4"], {}, {"train_split1.txt": "a/x.mp4\n"},
     r"split lists for \['test1'\] not found"),
    (["a/x.mp4", "b/y.mp4"], {}, {"train_split1.txt": "a/x.mp4\n", "test_split1.txt": "b/y.mp4\n",
                                  "train_split3.txt": "a/x.mp4\n", "test_split3.txt": "b/y.mp4\n"},
     r"\['test_split3.txt', 'train_split3.txt'\] are not part of a train / test pair"),
    (["a/a_1_0.mp4", "a/a_1_1.mp4", "b/b_1_0.mp4"], {}, {}, None),
], ids=["case", "link into a class", "in two parts", "lone list", "gap", "one group"])
def test_a_dataset_that_would_be_wrong_is_refused(files, links, lists, message, tmp_path):
  _touch(tmp_path, files)
  for link, target in links.items():
    os.symlink(target, tmp_path / link)
  for name, text in lists.items():
    (tmp_path / name).write_text(text)
  if message is None:   # every class one group: no test video
    with pytest.raises(common.PrepareError, match=r"test1 would hold no video: every class is one "
                                                  r"group of videos \(--group-pattern '\^\.\.'"):
      find_layout("folder", str(tmp_path), name="mine", group_pattern="^..")
    return
  with pytest.raises(common.PrepareError, match=message):
    find_layout("folder", str(tmp_path), name="mine")


def test_prepare_says_what_it_found_and_warns_of_classes_without_test_videos(tmp_path, capsys):
  src = tmp_path / "src"
  for name, count in (("cycle", 3), ("sit", 1)):
    for k in range(count):
      fake_releases.write_video(str(src / name / f"{name}_{k}.mp4"), k, frames=4)
  assert prepare_cli.main(["--dataset", "folder", "--src", str(src), "--out",
                           str(tmp_path / "few"), "--short-side", "36", "--workers", "1",
                           "--no-progress"]) == 0
  captured = capsys.readouterr()
  assert "few: 2 classes (cycle, sit); train1 3, test1 1 videos; splits from a seeded draw " \
         "(seed 0)" in captured.out
  assert "warning: test1 has no video of the class(es) ['sit']: its accuracies leave them out" \
      in captured.err


def test_reports_on_own_dataset_name_the_evaluated_part_and_no_paper_figures(monkeypatch,
                                                                               tmp_path):
  from darkjax import reports  # pylint: disable=import-outside-toplevel
  from darkjax.evaluators import twostream_video  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path))
  tables = {}
  for dataset in ("infar", "night_clips"):
    config = config_module("configs/twostream_infar.py").get_config(
        "runlocal" + (f",dataset={dataset}" if dataset != "infar" else ""))
    evaluator = next(n for n, e in config.evals.items() if e.type == "twostream_video")
    results = {f"{evaluator}/{row}/{kind}": 0.5 for row in twostream_video.ROW_TITLES
               for kind in ("accuracy", "mean_precision")}
    tables[dataset] = twostream_video.report_tables(results, config)
  assert "paper AP (InfAR)" in tables["infar"]
  assert "paper AP" not in tables["night_clips"].replace("the paper's AP, measured", "")
  assert "On `night_clips`: the paper's AP, measured on InfAR, is not beside them." in \
      tables["night_clips"]
  config = config_module("configs/lift_arid.py").get_config("runlocal,dataset=night_clips")
  config.input.data.eval_split = "val"
  assert reports._datasets_line(config) == (   # pylint: disable=protected-access
      f"- dataset: `night_clips` split 1, evaluated on val1 ({tmp_path / 'night_clips'})")


def test_a_rerun_with_other_options_names_them_and_overwrite_leaves_no_old_shards(tmp_path,
                                                                                   capsys):
  src, out = tmp_path / "src", str(tmp_path / "clips")
  for name in ("cycle", "sit"):
    for k in range(2):
      fake_releases.write_video(str(src / name / f"{name}_{k}.mp4"), k, frames=4)
  common_args = ["--dataset", "folder", "--src", str(src), "--out", out, "--workers", "1",
                 "--no-progress"]
  assert prepare_cli.main(common_args + ["--short-side", "36"]) == 0
  old = sorted(f for f in os.listdir(out) if f.endswith(".tfrecord"))
  assert old and all(f.startswith("clips-") for f in old)
  capsys.readouterr()
  assert prepare_cli.main(common_args + ["--short-side", "40", "--name", "renamed"]) == 1
  assert ("(what differs: the dataset's name (--dataset, or --name), --short-side); give the "
          "earlier ones to resume" in capsys.readouterr().err)
  assert prepare_cli.main(common_args + ["--short-side", "36", "--name", "renamed",
                                         "--overwrite"]) == 0
  shards = sorted(f for f in os.listdir(out) if f.endswith(".tfrecord"))
  assert shards and all(f.startswith("renamed-") for f in shards)
  assert records.load_manifest(out)["name"] == "renamed"
