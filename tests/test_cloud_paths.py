"""darkjax.paths: a run whose workdir and data dir are `gs://` URLs (a fake bucket served through
fsspec, tests/fake_bucket.py) writes everything under them and resumes from there."""

from __future__ import annotations

import json
import os

import pytest

from configs import synthetic as synthetic_config
from darkjax import metrics as metrics_lib
from darkjax import paths, phases
from darkjax.convert import io as convert_io
from darkjax.data import records
from fake_bucket import fake_gcs
from run_configs import quiet

BUCKET = "gs://darkjax-test"


def _config(steps: int, evaluate: bool, **overrides):
  config = synthetic_config.get_config(f"runlocal,steps={steps},data_dir={BUCKET}/data")
  config.log_every = 1
  config.checkpoint_every = 2
  config.eval_every = 0 if evaluate else -1   # 0: at the end (confusion PNG + TensorBoard image)
  return quiet(config, **overrides)


def _train_steps(workdir: str) -> list[int]:
  return [row["step"] for row in metrics_lib.read_metrics(workdir) if "train/loss" in row]


@pytest.fixture(scope="module")
def bucket_run(tmp_path_factory):
  """Trains 2 steps, then reruns the config with 4 steps, which resumes from step 2. Runs in an
  empty current directory, so a write that bypassed the path layer would show up there."""
  root, cwd = tmp_path_factory.mktemp("bucket"), tmp_path_factory.mktemp("cwd")
  old_cwd = os.getcwd()
  os.chdir(cwd)
  try:
    with fake_gcs(str(root)):
      phases.run_phases(_config(2, evaluate=False), f"{BUCKET}/run")
      first_steps = _train_steps(f"{BUCKET}/run")
      # the rerun traces its first step (config.profile): step 3, written into the bucket
      results = phases.run_phases(
          _config(4, evaluate=True, **{"profile.steps": 1, "profile.skip": 0}), f"{BUCKET}/run")
      yield {"root": root, "cwd": cwd, "first_steps": first_steps, "results": results}
  finally:
    os.chdir(old_cwd)


def test_is_url_and_resolve():
  assert paths.is_url("gs://b/x") and not paths.is_url("/tmp/x")
  assert os.fspath(paths.resolve("gs://b/x/y")) == "gs://b/x/y"
  assert os.fspath(paths.resolve("~/x")) == os.path.join(os.path.expanduser("~"), "x")
  with pytest.raises(ValueError, match="empty path"):
    paths.resolve("")


def test_run_writes_everything_into_the_bucket_and_nothing_locally(bucket_run):
  assert os.listdir(bucket_run["cwd"]) == []
  run = bucket_run["root"] / "darkjax-test" / "run"
  assert {"metrics.jsonl", "config.json", "report.md", "checkpoints", "tensorboard",
          "eval_confusion.png", "profile.md", "profile.json"} <= set(os.listdir(run))
  assert [p for p in os.listdir(run / "tensorboard") if "tfevents" in p]
  [trace] = os.listdir(run / "tensorboard" / "plugins" / "profile" / "steps3-3")
  assert trace.endswith(".xplane.pb") and (run / "tensorboard" / "plugins" / "profile" /
                                            "steps3-3" / trace).stat().st_size > 0
  assert json.loads((run / "config.json").read_text())["total_steps"] == 4
  steps = sorted(int(s) for s in os.listdir(run / "checkpoints") if s.isdigit())
  assert steps[-1] == 4 and 2 in steps
  data = bucket_run["root"] / "darkjax-test" / "data"
  assert records.MANIFEST in os.listdir(data)
  assert any(name.endswith(".tfrecord") for name in os.listdir(data))


def test_rerun_resumed_from_the_bucket_checkpoint(bucket_run):
  assert bucket_run["first_steps"] == [1, 2]
  with fake_gcs(str(bucket_run["root"])):
    # Steps 1-2 logged once by the first run; the rerun went on at 3.
    assert _train_steps(f"{BUCKET}/run") == [1, 2, 3, 4]
    assert bucket_run["results"]["eval/num_examples"] == 20
    variables, meta = convert_io.load_variables(f"{BUCKET}/run")   # model_init from a bucket
    assert meta["step"] == 4 and meta["workdir"] == f"{BUCKET}/run"
    assert "params" in variables
    report = records.verify(f"{BUCKET}/data")
    assert report.ok, report.format()


def test_export_and_predict_from_a_bucket_run(bucket_run, tmp_path, capsys):
  """The run's config.json and checkpoint read from the bucket, the export written into it."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from darkjax.data import video as video_lib  # pylint: disable=import-outside-toplevel
  from darkjax.tools import export, predict  # pylint: disable=import-outside-toplevel
  video = str(tmp_path / "clip.avi")
  video_lib.write_video(video, np.full((16, 32, 32, 3), 40, np.uint8), fps=10)
  old_cwd = os.getcwd()
  os.chdir(bucket_run["cwd"])
  try:
    with fake_gcs(str(bucket_run["root"])):
      assert export.main(["--workdir", f"{BUCKET}/run", "--out", f"{BUCKET}/export"]) == 0
      assert predict.main(["--checkpoint", f"{BUCKET}/run", video]) == 0
  finally:
    os.chdir(old_cwd)
  assert f"{video} (1 view(s)):" in capsys.readouterr().out
  exported = bucket_run["root"] / "darkjax-test" / "export"
  assert sorted(os.listdir(exported)) == ["export.json", "model.stablehlo"]
  assert json.loads((exported / "export.json").read_text())["step"] == 4
  assert os.listdir(bucket_run["cwd"]) == []
