"""Training on another record stream (`input.stream`) and starting from another run's workdir
(`model_init` / dtcm `pretrained=`)."""

from __future__ import annotations

import numpy as np
import pytest
from flax import traverse_util

from configs import dtcm_synthetic, synthetic
from darkjax import phases
from darkjax.convert import io as convert_io
from darkjax.data import prepared
from darkjax.data.classification import ClassificationData
from run_configs import quiet


def day_config(data_dir: str, steps: int = 2):
  config = synthetic.get_config(f"runlocal,steps={steps},stream=day,normalise=imagenet,"
                                f"data_dir={data_dir}")
  return quiet(config)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("synthetic_streams"))
  prepared.open_dataset(day_config(directory).input.data)
  return directory


def test_input_stream_selects_the_record_stream_for_train_and_eval(data_dir):
  dark_cfg = synthetic.get_config(f"runlocal,data_dir={data_dir}").input
  day_cfg = day_config(data_dir).input
  for cfg in (dark_cfg, day_cfg):
    cfg.prefetch = 0
  dark, day = ClassificationData(dark_cfg, 0), ClassificationData(day_cfg, 0)
  dark_batch = next(iter(dark.train_dataset(4)))
  day_batch = next(iter(day.train_dataset(4)))
  np.testing.assert_array_equal(dark_batch["label"], day_batch["label"])  # same clips, same crops
  assert set(day_batch) == set(dark_batch) and "day" not in day_batch
  assert day_batch["video"].mean() > 3 * dark_batch["video"].mean()      # the bright stream
  dark_eval = next(iter(dark.eval_batches(4)))
  day_eval = next(iter(day.eval_batches(4)))
  np.testing.assert_array_equal(dark_eval["index"], day_eval["index"])
  assert day_eval["video"].mean() > 3 * dark_eval["video"].mean()

  day_cfg.stream = "thermal"   # before a record is read (the pipeline also checks each record)
  with pytest.raises(prepared.MissingStreamError,
                     match=r"config.input.stream reads the record stream\(s\) \['thermal'\], "
                           r"which .* does not store \(its streams: \['day', 'ir', 'video'\]\)"):
    ClassificationData(day_cfg, 0).train_dataset(4)


def test_dtcm_starts_from_another_runs_backbone(data_dir, tmp_path):
  pre_dir = str(tmp_path / "pre_day")
  phases.run_phases(day_config(data_dir), pre_dir)
  pretrained, meta = convert_io.load_variables(pre_dir)
  assert meta["step"] == 2 and meta["source"] == "darkjax run"
  assert set(pretrained) == {"params", "batch_stats"}

  config = dtcm_synthetic.get_config(f"runlocal,steps=1,data_dir={data_dir},"
                                     f"pretrained={pre_dir},normalise=imagenet")
  quiet(config)
  config.optimizer.lr = 0.0           # the state after one step is the loaded one
  config.optimizer.warmup_steps = 0
  run_dir = str(tmp_path / "dtcm")
  phases.run_phases(config, run_dir)
  finetuned, _ = convert_io.load_variables(run_dir)
  ours = traverse_util.flatten_dict(finetuned["params"]["classifier"], sep="/")
  theirs = traverse_util.flatten_dict(pretrained["params"], sep="/")
  assert set(ours) == set(theirs)
  for key, value in theirs.items():
    if key.startswith("head/"):        # a new head: not loaded
      assert not np.array_equal(ours[key], value), key
    else:
      np.testing.assert_array_equal(ours[key], value, err_msg=key)
  assert "video_enhancer" in finetuned["params"]


def test_missing_run_checkpoint_is_named(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
    convert_io.load_variables(str(tmp_path))


def test_dtcm_one_stage_starts_from_the_phase1_enhancer(data_dir, tmp_path):
  config = dtcm_synthetic.get_config(f"runlocal,steps=1,enhancer_steps=2,data_dir={data_dir},"
                                     "pretrain_enhancer=True")
  quiet(config)
  config.optimizer.lr = 0.0           # phase 2 keeps what it started from
  config.optimizer.warmup_steps = 0
  workdir = str(tmp_path / "dtcm")
  results = phases.run_phases(config, workdir)
  assert "eval/top1" in results
  phase1, meta1 = convert_io.load_variables(str(tmp_path / "dtcm" / "enhancer"))
  joint, meta2 = convert_io.load_variables(str(tmp_path / "dtcm" / "joint"))
  assert (meta1["step"], meta2["step"]) == (2, 1)
  assert set(phase1["params"]) == {"video_enhancer"}
  ours = traverse_util.flatten_dict(joint["params"]["video_enhancer"], sep="/")
  theirs = traverse_util.flatten_dict(phase1["params"]["video_enhancer"], sep="/")
  assert set(ours) == set(theirs)
  for key, value in theirs.items():
    np.testing.assert_array_equal(ours[key], value, err_msg=key)
  # no_enhancement ignores the switch: a single run in WORKDIR
  config = dtcm_synthetic.get_config(f"runlocal,steps=1,data_dir={data_dir},"
                                     "pretrain_enhancer=True,setting=no_enhancement")
  config.progress_bar = False
  config.input.prefetch = 0
  phases.run_phases(config, str(tmp_path / "plain"))
  assert not (tmp_path / "plain" / "enhancer").exists()
