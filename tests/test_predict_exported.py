"""darkjax.tools.predict --model: an exported model (ONNX through onnxruntime, StableHLO through
jax.export) with its export.json classifies video files as the checkpoint does (same views, same
top-5 to 1e-4) without the config or checkpoint, ONNX without importing jax; two-stream's exported
model gets the flow computed on the host per view; an older export.json, a missing one, another
file and a missing onnxruntime are named with what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import cv2
import jax
import numpy as np
import pytest

from configs import twostream_synthetic
from darkjax import config as config_lib
from darkjax.data import flow as flow_lib
from darkjax.data import ops, records
from darkjax.data import video as video_lib
from darkjax.tools import export, predict, predict_checkpoint, predict_exported, predict_host
from run_configs import quiet
from test_export import _onnxruntime
from test_predict import REPO, trained  # noqa: F401  (the tiny trained synthetic run)
from test_predict_papers import _checkpointed_run

FORMATS = ("stablehlo", "onnx")
# The synthetic config with several eval views: 2 clips x 3 crops of every video.
MULTIVIEW_CONFIG = """
from configs import synthetic


def get_config(arg=None):
  config = synthetic.get_config(arg)
  config.input.eval_clips, config.input.eval_crops = 2, 3
  return config
"""


def _need(fmt: str) -> None:
  if fmt == "onnx":
    _onnxruntime()   # skips without the onnx extra unless DARKJAX_REQUIRE_ONNX is set


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):  # noqa: F811
  """The trained run exported in both formats with a multi-view config, that config's spec, two
  more videos (a longer one, a larger one) beside the run's clip, and the workdir."""
  spec, workdir, _, clip, dataset = trained
  root = tmp_path_factory.mktemp("predict_exported")
  config_file = root / "multiview.py"
  config_file.write_text(MULTIVIEW_CONFIG, encoding="utf-8")
  multiview = f"{config_file}:{spec.split(':', 1)[1]}"
  path, _ = dataset.files("test")[0]
  frames = [e["video"] for _, e in zip(range(3), map(records.decode_example,
                                                   records.iter_tfrecord(path)))]
  longer, larger = str(root / "longer.avi"), str(root / "larger.mp4")
  video_lib.write_video(longer, np.ascontiguousarray(np.concatenate(frames[1:], axis=0)), fps=10)
  video_lib.write_video(larger, np.stack([cv2.resize(f, (48, 40)) for f in frames[2]]), fps=10)
  outs = {}
  for fmt in FORMATS:
    if fmt == "onnx" and not _has_onnx():
      continue
    outs[fmt] = str(root / fmt)
    assert export.main(["--workdir", workdir, "--format", fmt, "--out", outs[fmt],
                        "--config", multiview]) == 0
  return outs, multiview, workdir, [clip, longer, larger]


def _has_onnx() -> bool:
  try:
    _onnxruntime()
  except pytest.skip.Exception:
    return False
  return True


def _printed(out: str) -> dict[str, tuple[str, list[tuple[str, float]]]]:
  """predict's output per video: its header line and its ranked (class, probability)."""
  results: dict[str, tuple[str, list]] = {}
  video = None
  for line in out.splitlines():
    if not line.startswith("  "):
      video = line.rsplit(" (", 1)[0]
      results[video] = (line, [])
    elif line.strip()[:2] in {f"{i}." for i in range(1, 6)}:
      _, name, prob = line.split()
      results[video][1].append((name, float(prob)))
  return results


def _model_path(outs: dict[str, str], fmt: str) -> str:
  return os.path.join(outs[fmt], export.FILENAMES[fmt])


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_model_prints_the_checkpoints_top5(exported, fmt, capsys, tmp_path):
  _need(fmt)
  outs, multiview, workdir, videos = exported
  assert predict.main(["--config", multiview, "--checkpoint", workdir, *videos]) == 0
  want = _printed(capsys.readouterr().out)
  assert predict.main(["--model", _model_path(outs, fmt), "--png", str(tmp_path), *videos]) == 0
  got = _printed(capsys.readouterr().out)
  assert os.path.getsize(tmp_path / "larger.png") > 1000
  assert list(got) == videos and list(want) == videos
  for video in videos:
    assert got[video][0] == want[video][0] == f"{video} (6 view(s)):"   # 2 clips x 3 crops
    assert [n for n, _ in got[video][1]] == [n for n, _ in want[video][1]]
    np.testing.assert_allclose([p for _, p in got[video][1]], [p for _, p in want[video][1]],
                               rtol=0, atol=1e-4)


def _predictors(exported, fmt: str):
  """(the run's checkpoint predictor, the exported model's in `fmt`, the videos)."""
  _need(fmt)
  outs, multiview, workdir, videos = exported
  return (predict_checkpoint.Predictor(config_lib.load(multiview), workdir),
          predict_exported.ExportedPredictor(_model_path(outs, fmt)), videos)


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_views_and_probabilities_are_the_checkpoints(exported, fmt):
  checkpoint, model, videos = _predictors(exported, fmt)
  assert model.video_inputs.to_json() == checkpoint.video_inputs.to_json()   # eval fields
  assert model.class_names == checkpoint.class_names
  for video in videos:
    want, got = checkpoint.predict(video), model.predict(video)
    np.testing.assert_array_equal(got["views"], want["views"])
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exported_models_timeline_is_the_checkpoints(exported, fmt):
  checkpoint, model, videos = _predictors(exported, fmt)
  want, got = checkpoint.timeline(videos[1], 0.4), model.timeline(videos[1], 0.4)
  assert got["spans"] == want["spans"] and len(got["spans"]) > 1
  np.testing.assert_allclose(got["probs"], want["probs"], rtol=0, atol=1e-4)


def test_export_json_records_what_predict_needs(exported):
  outs, _, _, _ = exported
  with open(os.path.join(outs["stablehlo"], export.METADATA), encoding="utf-8") as f:
    meta = json.load(f)
  # configs/synthetic.py runlocal, eval views 2 x 3; the synthetic set states no short side or
  # resampled rate; its clips' rate (16 frames/s) is a timeline's
  assert meta["video_inputs"] == {
      "decode": {"short_side": 0, "fps": 0.0, "channels": 3, "dataset_fps": 16.0},
      "clip": {"frames": 16, "stride": 1, "sampling": "dense", "short_side": 36,
               "resize": [0, 0], "crop_size": 32, "eval_clips": 2, "eval_crops": 3},
      "record_streams": {}, "view_streams": {}}
  assert [i["name"] for i in meta["inputs"]] == ["video"]


def test_onnx_predict_runs_without_jax(exported, tmp_path):
  """`python -m darkjax.tools.predict --model model.onnx` in a process where jax cannot be
  imported prints what it prints in this one."""
  _need("onnx")
  outs, _, _, videos = exported
  args = ["--model", _model_path(outs, "onnx"), *videos]
  script = (
      "import runpy, sys\n"
      "for name in ('jax', 'jaxlib', 'flax'):\n"
      "  sys.modules[name] = None   # import jax raises ImportError\n"
      f"sys.argv = ['predict', *{args!r}]\n"
      "try:\n"
      "  runpy.run_module('darkjax.tools.predict', run_name='__main__')\n"
      "except SystemExit as exit:\n"
      "  assert exit.code == 0, exit.code\n"
      "loaded = [m for m, v in sys.modules.items() if v is not None\n"
      "          and m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'tensorflow')]\n"
      "assert not loaded, loaded\n")
  run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                       text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr
  exported_model = predict_exported.ExportedPredictor(_model_path(outs, "onnx"))
  want = [predict_host.format_result(exported_model.predict(v)) for v in videos]
  assert run.stdout.strip() == "\n".join(want)


# ------------------------------------------------------------- two-stream: flow from the host
@pytest.fixture(scope="module")
def twostream_run(tmp_path_factory):
  """A two-stream run (random variables at step 1, config.json) whose flow is computed on the
  host, its Predictor and a test clip."""
  root = tmp_path_factory.mktemp("twostream")
  config = quiet(twostream_synthetic.get_config(f"runlocal,data_dir={root / 'data'}"))
  workdir = str(root / "run")
  predictor, _, video = _checkpointed_run(config, workdir, root)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort())
  return predictor, workdir, video, root


@pytest.mark.parametrize("fmt", FORMATS)
def test_twostream_exported_model_gets_the_host_flow(twostream_run, fmt):
  _need(fmt)
  checkpoint, workdir, video, root = twostream_run
  out = str(root / f"export_{fmt}")
  assert export.main(["--workdir", workdir, "--format", fmt, "--out", out]) == 0
  with open(os.path.join(out, export.METADATA), encoding="utf-8") as f:
    meta = json.load(f)
  ts = checkpoint.config.twostream
  assert meta["video_inputs"]["view_streams"] == {
      "flow": {"method": ts.flow_method, "scale": float(ts.flow_scale)}}
  assert [i["name"] for i in meta["inputs"]] == ["video", "flow"]
  model = predict_exported.ExportedPredictor(os.path.join(out, export.FILENAMES[fmt]))
  streams = model.video_inputs.views(video)
  assert set(streams) == {"video", "flow"}
  np.testing.assert_array_equal(
      streams["flow"], np.stack([flow_lib.flow_clip(v, ts.flow_method, float(ts.flow_scale))
                                 for v in streams["video"]]))
  want, got = checkpoint.predict(video), model.predict(video)
  np.testing.assert_allclose(got["probs"], want["probs"], rtol=0, atol=1e-4)
  assert [n for n, _ in got["top5"]] == [n for n, _ in want["top5"]]
  # the flow input counts: zero motion (128) moves the probabilities
  # The model reads that flow: its logits are the JAX ones (the random flow tower moves the
  # probabilities less than 1e-4), and zero motion (128 everywhere) gives others.
  logits = model.logits(streams)
  jax_logits = jax.jit(checkpoint.task.predict)(checkpoint.variables, streams)
  np.testing.assert_allclose(logits, jax_logits, rtol=0, atol=2e-5)
  still = model.logits({"video": streams["video"], "flow": np.full_like(streams["flow"], 128)})
  assert np.abs(still - logits).max() > 10 * 2e-5


# ------------------------------------------------------------- settings and errors
def test_video_inputs_come_from_the_manifest_and_survive_json():
  """decode at the manifest's short side / frame rate, a flow record stream with the dataset's
  method and scale, a per-view stream with the Task's settings; to_json / from_json keep all."""
  spec = ops.ClipSpec(frames=8, stride=2, sampling="grid", short_side=64, resize=(0, 0),
                      crop_size=56, eval_clips=3, eval_crops=3)
  task = types.SimpleNamespace(data=types.SimpleNamespace(spec=spec, streams=("flow", "ir")))
  manifest = {"metadata": {"short_side": 72, "resampled_fps": 12.5,
                           "flow": {"method": "dis", "scale": 4.0}}}
  inputs = predict_checkpoint.video_inputs(task, manifest)
  assert (inputs.short_side, inputs.fps) == (72, 12.5)
  assert inputs.record_streams == {"flow": {"method": "dis", "scale": 4.0}, "ir": None}
  assert inputs.inputs == ("video", "flow", "ir")
  inputs = predict_host.VideoInputs(spec, 72, 12.5, inputs.record_streams,
                                    {"flow": {"method": "farneback", "scale": 8.0}})
  meta = json.loads(json.dumps({"video_inputs": inputs.to_json()}))
  assert predict_host.VideoInputs.from_json(meta, "export.json") == inputs
  defaults = predict_checkpoint.video_inputs(task, None)   # no manifest: prepare's defaults
  assert defaults.record_streams["flow"] == {"method": "farneback", "scale": 8.0}


@pytest.fixture(scope="module")
def stablehlo_dir(exported, tmp_path_factory):
  """A copy of the StableHLO export to break in the error tests."""
  outs, _, _, videos = exported
  copy = tmp_path_factory.mktemp("copy")
  for name in ("model.stablehlo", export.METADATA):
    (copy / name).write_bytes(open(os.path.join(outs["stablehlo"], name), "rb").read())
  return copy, videos


def test_an_older_export_json_is_refused_naming_the_key(stablehlo_dir, tmp_path):
  copy, _ = stablehlo_dir
  meta = json.loads((copy / export.METADATA).read_text(encoding="utf-8"))
  del meta["video_inputs"]["clip"]["eval_crops"]
  (tmp_path / export.METADATA).write_text(json.dumps(meta), encoding="utf-8")
  (tmp_path / "model.stablehlo").write_bytes((copy / "model.stablehlo").read_bytes())
  with pytest.raises(predict.PredictError, match=r"export.json has no key "
                     r"'video_inputs.clip.eval_crops'.*export the run again"):
    predict_exported.ExportedPredictor(str(tmp_path / "model.stablehlo"))
  del meta["video_inputs"]
  (tmp_path / export.METADATA).write_text(json.dumps(meta), encoding="utf-8")
  with pytest.raises(predict.PredictError, match=r"export.json has no key 'video_inputs':"):
    predict_exported.ExportedPredictor(str(tmp_path / "model.stablehlo"))


def test_model_file_errors_name_the_file_and_what_to_do(stablehlo_dir, tmp_path, capsys,
                                                        monkeypatch):
  copy, videos = stablehlo_dir
  other = tmp_path / "model.pt"
  other.write_bytes(b"\0")
  assert predict.main(["--model", str(other), videos[0]]) == 1
  assert f"{other}: --model takes the model.onnx or model.stablehlo" in capsys.readouterr().err
  alone = tmp_path / "model.stablehlo"
  alone.write_bytes((copy / "model.stablehlo").read_bytes())
  assert predict.main(["--model", str(alone), videos[0]]) == 1
  assert f"{tmp_path / export.METADATA} not found" in capsys.readouterr().err
  # a model file cut short (a copy that stopped): named, export again
  cut = tmp_path / "cut"
  cut.mkdir()
  (cut / export.METADATA).write_bytes((copy / export.METADATA).read_bytes())
  (cut / "model.stablehlo").write_bytes((copy / "model.stablehlo").read_bytes()[:2000])
  assert predict.main(["--model", str(cut / "model.stablehlo"), videos[0]]) == 1
  err = capsys.readouterr().err
  assert f"{cut / 'model.stablehlo'}: jax cannot read it as an exported model" in err
  assert "export the run again" in err and "Traceback" not in err
  assert predict.main(["--model", str(copy / "model.onnx"), videos[0]]) == 1
  assert f"{copy / 'model.onnx'}: file not found" in capsys.readouterr().err
  # without onnxruntime: the pip command
  (copy / "model.onnx").write_bytes(b"\0")
  monkeypatch.setitem(sys.modules, "onnxruntime", None)
  with pytest.raises(predict.PredictError, match=r"needs onnxruntime: pip install -e '.\[onnx\]'"):
    predict_exported.ExportedPredictor(str(copy / "model.onnx"))
  with pytest.raises(SystemExit):   # --model takes everything from export.json
    predict.main(["--model", str(copy / "model.stablehlo"), "--classes", "a,b", videos[0]])
  assert "drop --classes" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    predict.main(["--config", "configs/synthetic.py", videos[0]])
  assert "give --checkpoint" in capsys.readouterr().err
