"""`python -m darkjax.tools.bench --input --config`: a config's own train pipeline over stand-in
records of its clip geometry, timed over whole shuffle windows, and the host cores one H100 needs;
at tiny size (runlocal). No timing is asserted: rates come out and the arithmetic holds."""

from __future__ import annotations

import os

import pytest

from darkjax import config as config_lib
from darkjax import task as task_lib
from darkjax.data import records
from darkjax.tools import bench, bench_input_config as input_bench


def test_config_input_bench_times_whole_windows_and_needs_cores(tmp_path, capsys):
  result = bench.main(["--input", "--config", "configs/dtcm_arid.py:runlocal", "--workers", "0",
                       "--videos", "8", "--video-frames", "16", "--step-ms", "50",
                       "--workdir", str(tmp_path)])
  config = config_lib.load("configs/dtcm_arid.py:runlocal")
  assert result["phase"] == "joint" and result["batch"] == config.input.batch_size
  # ARID's 240x320 frames stored at prepare's default short side (the config resizes below it).
  assert result["stand_ins"] == [dict(name="arid_v1", videos=8, frames=16, hw=(128, 171),
                                      record_bytes=16 * 128 * 171 * 3, listed=1024)]
  (row,) = result["rows"]
  assert row["workers"] == 0
  assert row["clips"] == config.input.shuffle_window   # one whole window of the one producer
  assert row["clips_per_s"] > 0 and row["clips_per_cpu_s"] > 0 and row["cpu_s"] > 0
  needed = config.input.batch_size / 0.05
  assert result["needed_clips_per_s"] == pytest.approx(needed)
  assert row["cores_needed"] == pytest.approx(needed / row["clips_per_cpu_s"])
  assert result["cores_needed"] == pytest.approx(row["cores_needed"])
  out = capsys.readouterr().out
  assert "clips per CPU-second" in out and "recommended:" in out
  # what the config's input.workers=-1 starts per H100: ceil(1.25 x 1.2)
  assert "input.cores_per_device 1.2: 2 worker processes per H100" in out, out


@pytest.mark.slow
def test_worker_processes_count_their_cpu_time(tmp_path):
  result = bench.main(["--input", "--config", "configs/dinet_infar.py:runlocal", "--workers", "1",
                       "--videos", "8", "--video-frames", "16", "--workdir", str(tmp_path)])
  (row,) = result["rows"]
  config = config_lib.load("configs/dinet_infar.py:runlocal")
  # 3D-DiNet: two domains, each with its own window, in one worker process.
  assert row["workers"] == 1 and row["clips"] == 2 * config.input.shuffle_window
  assert row["clips_per_cpu_s"] > 0 and "step_s" not in result   # no H100 step at this size


def test_h100_step_applies_only_at_the_measured_phase_batch_and_length():
  step = input_bench.h100_step("configs/lift_arid.py:variant=large", "student", 32, 30)
  assert step is not None and step.step_s == 0.2385
  assert input_bench.h100_step("configs/lift_arid.py", "student", 8, 30) is None
  assert input_bench.h100_step("configs/lift_arid.py", "teacher", 32, 30) is None
  for stem, step in input_bench.H100_STEPS.items():   # each matches its config's main phase
    config = config_lib.load(f"configs/{stem}.py")
    phase = task_lib.main_phase(config)
    phase_config = phase.config(config)
    assert (phase.name, phase_config.input.batch_size, phase_config.input.frames) == (
        step.phase, step.batch, step.frames), stem


def test_stand_ins_follow_what_prepare_stores_for_each_paper_config():
  short = {stem: input_bench.prepared_short_side(config_lib.load(f"configs/{stem}.py").input)
           for stem in input_bench.H100_STEPS}
  assert short == {"actlumos_arid": 128, "lift_arid": 256, "dtcm_arid": 240,
                   "twostream_infar": 128, "dinet_infar": 128}
  assert input_bench.record_streams(config_lib.load("configs/twostream_infar.py")) == ("flow",)
  assert input_bench.record_streams(config_lib.load("configs/dinet_infar.py")) == ()


def test_recommendation_keeps_the_thread_pipeline_while_it_is_cheap():
  own = input_bench.Row("own", 0, clips=100, wall_s=2.0, cpu_s=1.0)       # 100 clips / CPU-s
  worker = input_bench.Row("2 workers", 2, clips=160, wall_s=1.0, cpu_s=2.0)   # 80 clips / CPU-s
  setting, cores = input_bench.recommend([own, worker], needed=40.0, prefetch=2)
  assert setting.startswith("config's own") and cores == pytest.approx(0.4)
  setting, cores = input_bench.recommend([own, worker], needed=400.0, prefetch=2)
  assert setting == "--config.input.workers=7" and cores == pytest.approx(5.0)   # 1.25 x 5


def test_cli_takes_config_alone_or_with_input_only():
  assert bench.parse_args(["--input"]).config is None
  args = bench.parse_args(["--input", "--config", "configs/dtcm_arid.py", "--workers", "0,2"])
  assert args.input and args.config and args.batch is None and args.frames is None
  with pytest.raises(SystemExit):
    bench.parse_args(["--flow", "--config", "configs/dtcm_arid.py"])
  with pytest.raises(SystemExit):
    input_bench.parse_workers("1,-1")
  args = bench.parse_args(["--input", "--config", "configs/twostream_infar.py", "--set",
                           "twostream.flow_source=compute", "--set", "input.streams=()"])
  assert input_bench.parse_sets(args.set) == {"twostream.flow_source": "compute",
                                              "input.streams": ()}
  with pytest.raises(SystemExit):
    input_bench.parse_sets(["input.prefetch"])


def test_a_stand_in_split_lists_its_shards_as_often_as_a_real_epoch_holds_videos(tmp_path):
  config = config_lib.load("configs/dtcm_arid.py:runlocal")
  block = config.input.data
  directory, info = input_bench.write_stand_in(block, config.input, (), str(tmp_path), 8, 16)
  manifest = records.load_manifest(directory)
  split = f"train{int(block.split_index) or ''}"
  files = records.split_files(manifest, directory, split)
  assert info["listed"] == sum(n for _, n in files) == 1024 == manifest["splits"][split][
      "num_examples"]
  originals = files[:4]    # 8 videos, 2 to a shard; each copy is a link to one of them
  assert len({path for path, _ in files}) == len(files) == 4 * 128
  for i, (path, _) in enumerate(files):
    assert os.path.samefile(path, originals[i % 4][0])
  stamp = os.stat(os.path.join(directory, records.MANIFEST)).st_mtime_ns
  assert input_bench.write_stand_in(block, config.input, (), str(tmp_path), 8, 16)[0] == directory
  assert os.stat(os.path.join(directory, records.MANIFEST)).st_mtime_ns == stamp   # reused
