"""darkjax.tools.predict on a video file with a checkpoint from a tiny synthetic training run."""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np
import pytest

from configs import synthetic as synthetic_config
from darkjax import train
from darkjax.data import prepared, records
from darkjax.data import ops
from darkjax.tools import predict, predict_checkpoint, predict_host
from darkjax import config as config_lib
from darkjax.data import video as video_lib
from run_configs import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(REPO, "configs", "synthetic.py")


def _config(data_dir: str):
  config = synthetic_config.get_config(f"runlocal,steps=3,data_dir={data_dir}")
  config.eval_every = -1
  return quiet(config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(config arg string, workdir, trainer, a test clip written as .avi, its label)."""
  root = tmp_path_factory.mktemp("predict")
  data_dir, workdir = str(root / "data"), str(root / "work")
  config = _config(data_dir)
  trainer = train.Trainer(config, workdir, devices=jax.devices()[:1])
  trainer.run()
  dataset = prepared.open_dataset(config.input.data)
  path, _ = dataset.files("test")[0]
  example = records.decode_example(next(records.iter_tfrecord(path)))
  video = str(root / "clip.avi")
  video_lib.write_video(video, np.ascontiguousarray(example["video"]), fps=10)
  return f"{CONFIG_FILE}:runlocal,steps=3,data_dir={data_dir}", workdir, trainer, video, dataset


def test_restored_params_are_the_trained_ones(trained):
  spec, workdir, trainer, _, _ = trained
  variables, step = predict_checkpoint.restore_variables(workdir)
  assert step == 3
  expected = jax.device_get(trainer.state.params)
  for got, want in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)
  assert jax.tree.structure(variables["params"]) == jax.tree.structure(expected)
  del spec


def test_predict_matches_the_trainers_eval_on_the_same_views(trained):
  spec, workdir, trainer, video, dataset = trained
  predictor = predict_checkpoint.Predictor(config_lib.load(spec), workdir)
  result = predictor.predict(video)
  assert predictor.class_names == dataset.class_names
  assert result["views"].shape[1:] == (16, 32, 32, 3)  # input.frames, center crop_size
  logits = jax.jit(trainer.task.predict)(jax.device_get(trainer.variables),
                                        {"video": result["views"]})
  want = np.mean(jax.nn.softmax(np.asarray(logits, np.float32), -1), 0)
  np.testing.assert_allclose(result["probs"], want, rtol=1e-5, atol=1e-6)
  probs = [p for _, p in result["top5"]]
  assert len(probs) == 5 and probs == sorted(probs, reverse=True)
  assert [n for n, _ in result["top5"]][0] == dataset.class_names[int(np.argmax(want))]


def test_cli_prints_top5_and_writes_png(trained, tmp_path, capsys):
  spec, workdir, _, video, dataset = trained
  assert predict.main(["--config", spec, "--checkpoint", workdir, "--png", str(tmp_path),
                       video, video]) == 0
  out = capsys.readouterr().out
  assert out.count(f"{video} (1 view(s)):") == 2
  ranked = [line.split() for line in out.splitlines() if line.strip()[:2] in
            {f"{i}." for i in range(1, 6)}]
  assert len(ranked) == 10 and all(r[1] in dataset.class_names for r in ranked)
  assert os.path.getsize(tmp_path / "clip.png") > 1000


def test_classes_flag_when_the_dataset_dir_is_absent(trained, tmp_path, capsys):
  _, workdir, _, video, dataset = trained
  spec = f"{CONFIG_FILE}:runlocal,data_dir={tmp_path / 'nowhere'}"
  assert predict.main(["--config", spec, "--checkpoint", workdir, video]) == 1
  assert "--classes" in capsys.readouterr().err
  names = [f"c{i}" for i in range(dataset.num_classes)]
  assert predict.main(["--config", spec, "--checkpoint", workdir, "--classes", ",".join(names),
                       video]) == 0
  assert "1. c" in capsys.readouterr().out
  with pytest.raises(predict.PredictError, match=r"does not fit.*wrong shape.*params/head/kernel"
                                                r".*--classes gives 2 names"):
    predict_checkpoint.Predictor(config_lib.load(spec), workdir, classes="a,b")


def test_missing_checkpoint_and_video_are_named(trained, tmp_path):
  spec, workdir, _, _, _ = trained
  with pytest.raises(predict.PredictError, match="checkpoints does not exist"):
    predict_checkpoint.Predictor(config_lib.load(spec), str(tmp_path))
  # a run directory that is not there is named as such, not answered with "pass --config"
  for given in (None, spec):
    with pytest.raises(predict.PredictError, match=r"nowhere does not exist or is no directory"):
      predict_checkpoint.run_config(str(tmp_path / "nowhere"), given)
  predictor = predict_checkpoint.Predictor(config_lib.load(spec), workdir)
  with pytest.raises(predict.PredictError, match="missing.avi: file not found"):
    predictor.predict(str(tmp_path / "missing.avi"))
  with pytest.raises(predict.PredictError, match=r"is a directory; give the video files in it"):
    predictor.predict(str(tmp_path))
  corrupt = str(tmp_path / "corrupt.avi")
  with open(corrupt, "wb") as file:
    file.write(b"RIFF but not a video" * 20)
  with pytest.raises(predict.PredictError, match=r"corrupt.avi: (cannot decode|no video stream)"):
    predictor.predict(corrupt)


def test_cli_names_each_undecodable_video_and_classifies_the_rest(trained, tmp_path, capsys):
  spec, workdir, _, video, _ = trained
  corrupt = str(tmp_path / "corrupt.mp4")
  with open(corrupt, "wb") as file:
    file.write(b"\x00\x00\x00\x18ftypmp42 truncated")
  assert predict.main(["--config", spec, "--checkpoint", workdir, corrupt, video]) == 1
  captured = capsys.readouterr()
  assert f"{video} (1 view(s)):" in captured.out
  assert re.search(rf"error: {re.escape(corrupt)}: (cannot decode|no video stream|no decodable)",
                   captured.err), captured.err
  assert "1 of 2 video(s) could not be classified" in captured.err


def test_predict_takes_the_runs_config_and_refuses_one_that_predicts_otherwise(trained, capsys):
  """Without --config the run's own config.json; a --config whose preprocessing differs from the
  run's (here its normalisation) would print confident wrong classes: refused, naming the field."""
  spec, workdir, _, video, _ = trained
  assert predict.main(["--checkpoint", workdir, video]) == 0
  assert f"{video} (1 view(s)):" in capsys.readouterr().out
  assert predict.main(["--config", f"{spec},normalise=imagenet", "--checkpoint", workdir,
                       video]) == 1
  err = capsys.readouterr().err
  assert "input.normalise: 'per_clip' (the run) vs 'imagenet' (--config)" in err, err
  assert "Drop --config" in err


def test_a_run_on_a_one_channel_stream_predicts_and_exports(trained, tmp_path):
  """A model trained on the synthetic set's 1-channel infrared stream (`stream=ir`) reads a video
  file as the mean of its channels, from its checkpoint and from its export."""
  from darkjax.tools import export, predict_exported   # pylint: disable=import-outside-toplevel
  spec, _, _, _, dataset = trained
  ir_spec = f"{spec},stream=ir"
  config = quiet(config_lib.load(ir_spec).copy_and_resolve_references())
  config.eval_every = -1
  workdir = str(tmp_path / "ir")
  trainer = train.Trainer(config, workdir, devices=jax.devices()[:1])
  trainer.run()
  path, _ = dataset.files("test")[0]
  ir = records.decode_example(next(records.iter_tfrecord(path)))["ir"]
  assert ir.shape[-1] == 1
  video = str(tmp_path / "ir.avi")
  video_lib.write_video(video, np.ascontiguousarray(np.repeat(ir, 3, axis=-1)), fps=10)
  predictor = predict_checkpoint.Predictor(config_lib.load(ir_spec), workdir)
  result = predictor.predict(video)
  assert result["views"].shape[1:] == (16, 32, 32, 1)
  logits = jax.jit(trainer.task.predict)(jax.device_get(trainer.variables),
                                        {"video": result["views"]})
  want = np.mean(jax.nn.softmax(np.asarray(logits, np.float32), -1), 0)
  np.testing.assert_allclose(result["probs"], want, rtol=1e-5, atol=1e-6)
  out = str(tmp_path / "export")
  assert export.main(["--workdir", workdir, "--out", out]) == 0
  exported = predict_exported.ExportedPredictor(os.path.join(out, "model.stablehlo"))
  assert exported.video_inputs.channels == 1
  np.testing.assert_allclose(exported.predict(video)["probs"], result["probs"], atol=1e-4)


def test_views_of_another_size_than_the_runs_are_refused_naming_both(tmp_path):
  """A config that keeps the file's frame size (no crop, no short side: LIFT-Net's and ActLumos's
  synthetic ones) was trained on its dataset's frames; a video of another size would fail inside
  the model (a ViT's position embedding) or be classified at a scale it never saw."""
  import types  # pylint: disable=import-outside-toplevel

  from darkjax.data import ops  # pylint: disable=import-outside-toplevel
  from darkjax.tools import predict_host  # pylint: disable=import-outside-toplevel
  spec = ops.ClipSpec(frames=4)
  task = types.SimpleNamespace(data=types.SimpleNamespace(spec=spec, streams=(),
                                                          video_stream="video"))
  manifest = {"frame_shape": [32, 40, 3], "streams": {}}
  assert predict_checkpoint.view_hw(task, manifest) == (32, 40)
  cropped = types.SimpleNamespace(data=types.SimpleNamespace(
      spec=ops.ClipSpec(frames=4, short_side=36, crop_size=32), streams=()))
  assert predict_checkpoint.view_hw(cropped, manifest) == (32, 32)
  predictor = object.__new__(predict_checkpoint.Predictor)
  predictor.task, predictor.manifest = task, manifest
  predictor.video_inputs = predict_host.VideoInputs(spec)
  video = str(tmp_path / "larger.avi")
  video_lib.write_video(video, np.zeros((6, 48, 64, 3), np.uint8), fps=10)
  with pytest.raises(predict.PredictError,
                     match=r"larger.avi: its 'video' views are \[4, 48, 64, 3\], the run was "
                           r"trained on \[4, 32, 40, 3\]"):
    predictor.predict(video)


def test_png_dir_is_checked_first_and_same_named_videos_get_their_own_picture(trained, tmp_path,
                                                                              capsys):
  _, workdir, _, video, _ = trained
  other = tmp_path / "other" / os.path.basename(video)
  other.parent.mkdir()
  other.write_bytes(open(video, "rb").read())
  afile = tmp_path / "afile"
  afile.write_text("")
  assert predict.main(["--checkpoint", workdir, "--png", str(afile), video]) == 1
  captured = capsys.readouterr()
  assert f"--png {afile} is a file" in captured.err and "view(s)" not in captured.out
  assert predict.main(["--checkpoint", workdir, "--png", str(afile / "sub"), video]) == 1
  assert f"--png {afile / 'sub'} cannot hold the pictures ({afile} is a file)" in \
      capsys.readouterr().err
  out = tmp_path / "pictures"
  assert predict.main(["--checkpoint", workdir, "--png", str(out), video, str(other)]) == 0
  assert sorted(os.listdir(out)) == ["clip-1.png", "clip-2.png"]


def test_a_step_without_checkpoint_lists_the_runs_steps(trained, tmp_path):
  spec, workdir, _, _, _ = trained
  with pytest.raises(predict.PredictError, match=r"no checkpoint of step 7 .* its steps are \[3\]"):
    predict_checkpoint.Predictor(config_lib.load(spec), workdir, step=7)
  with pytest.raises(predict.PredictError, match=r"export's --workdir"):
    predict_checkpoint.Predictor(config_lib.load(spec), str(tmp_path))


def test_a_timeline_classifies_each_window_of_a_long_video(trained, tmp_path, capsys):
  """`--every`: windows from every multiple of SECONDS, each one clip of the model's, classified
  as the same frames cut from the whole decoded video are; printed, drawn and written as CSV."""
  spec, workdir, _, _, dataset = trained
  predictor = predict_checkpoint.Predictor(config_lib.load(spec), workdir)
  path, _ = dataset.files("test")[0]
  clips = [records.decode_example(data)["video"]
           for _, data in zip(range(3), records.iter_tfrecord(path))]
  # at the rate of the model's training clips: decoded frame for frame
  fps = float(records.load_manifest(dataset.directory)["fps"])
  long = str(tmp_path / "long.avi")
  video_lib.write_video(long, np.ascontiguousarray(np.concatenate(clips)), fps=fps)
  decoded = predictor.video_inputs.decode(long)["video"]
  frames = predictor.video_inputs.spec.frames   # dense, stride 1: a window is one clip's frames
  step = round(0.2 * fps)
  starts = list(range(0, len(decoded) - frames + 1, step))
  if starts[-1] + frames < len(decoded):
    starts.append(len(decoded) - frames)   # one more, ending at the last frame
  assert len(starts) > 8   # more than one batch of windows, the last one padded
  result = predictor.timeline(long, every_s=0.2)
  np.testing.assert_allclose(result["spans"], [(s / fps, (s + frames) / fps) for s in starts])
  one_view = dataclasses.replace(predictor.video_inputs.spec, eval_clips=1, eval_crops=1)
  views = np.concatenate([ops.eval_views({"video": decoded[s:s + frames], "label": 0},
                                         one_view)["video"] for s in starts])
  want = np.asarray(jax.nn.softmax(predictor.logits(long, {"video": views}), -1))
  np.testing.assert_allclose(result["probs"], want, rtol=0, atol=1e-5)
  out_dir = tmp_path / "out"
  assert predict.main(["--checkpoint", workdir, "--every", "0.2", "--png", str(out_dir),
                       long]) == 0
  out = capsys.readouterr().out
  assert (f"{long} ({len(starts)} window(s), one every {step / fps:g} s: --every 0.2 in whole "
          f"frames at {fps:g} frames/s):") in out
  windows = out.split("  segments (")[0]
  tops = [line.split()[4] for line in windows.splitlines() if re.match(r"\s+\d+\.\d+ - ", line)]
  assert tops == [dataset.class_names[i] for i in want.argmax(-1)]
  segment = out.split("  segments (consecutive windows of one top-1 class):\n")[1].splitlines()
  assert segment[0].split()[:5] == ["0.00", "-", segment[0].split()[2], "s", tops[0]]
  rows = (out_dir / "long.timeline.csv").read_text().splitlines()
  assert rows[0].split(",") == ["start_s", "end_s", *dataset.class_names]
  assert len(rows) == len(starts) + 1
  np.testing.assert_allclose([float(v) for v in rows[1].split(",")[2:]], want[0], atol=1e-5)
  assert os.path.getsize(out_dir / "long.timeline.png") > 1000


def test_timeline_segments_merge_windows_of_one_top_class():
  result = {"class_names": ["a", "b"], "spans": [(0, 2), (1, 3), (2, 4), (3, 5)],
            "probs": np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])}
  got = predict_host.segments(result)
  # each window stands for the time around its centre: split at the midpoints between centres
  assert [(name, start, end) for name, start, end, _ in got] == [("a", 0, 2.5), ("b", 2.5, 3.5),
                                                                ("a", 3.5, 5)]
  np.testing.assert_allclose([mean for *_, mean in got], [0.8, 0.8, 0.6])
  spec = dataclasses.replace(ops.ClipSpec(frames=8, stride=2), sampling="segment")
  inputs = predict_host.VideoInputs(spec)
  assert inputs.window_frames(10.0, every_s=2.0) == 20   # segment sampling: --every's frames
  assert inputs.window_frames(10.0, every_s=2.0, window_s=3.0) == 30
  assert predict_host.VideoInputs(ops.ClipSpec(frames=8, stride=2)).window_frames(10.0, 2.0) == 16


def test_window_without_every_is_refused(capsys):
  with pytest.raises(SystemExit):
    predict.main(["--checkpoint", "w", "--window", "2", "v.avi"])
  assert "--window sets the windows of a timeline: give --every too" in capsys.readouterr().err


def _variable_rate_video(path: str, clips: list[np.ndarray], rates: list[int]) -> None:
  """Clip i shown for one second at rates[i] frames/s (every 16 // rate-th frame), in one file
  whose container states a constant 16 frames/s."""
  import fractions  # pylint: disable=import-outside-toplevel
  import av  # pylint: disable=import-outside-toplevel
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=16)
    stream.height, stream.width = clips[0].shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = fractions.Fraction(1, 1000)
    millis = 0
    for clip, rate in zip(clips, rates):
      for frame in clip[::16 // rate]:
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts, picture.time_base = millis, fractions.Fraction(1, 1000)
        container.mux(stream.encode(picture))
        millis += 1000 // rate
    container.mux(stream.encode())


def test_a_timeline_keeps_a_variable_rate_videos_clock_and_covers_longer_windows(trained,
                                                                                tmp_path):
  spec, workdir, _, _, dataset = trained
  predictor = predict_checkpoint.Predictor(config_lib.load(spec), workdir)
  path, _ = dataset.files("test")[0]
  clips = [records.decode_example(data)["video"][:16]
           for _, data in zip(range(3), records.iter_tfrecord(path))]
  vfr = str(tmp_path / "vfr.mkv")
  _variable_rate_video(vfr, clips, [16, 4, 16])   # 3 s; the middle second at 4 frames/s
  result = predictor.timeline(vfr, every_s=1.0)
  # by the frames' timestamps: 3 windows of 1 s (counting frames at the stated 16 frames/s made
  # it 2.25 s, the third clip at 1.25 s)
  np.testing.assert_allclose(result["spans"], [(0, 1), (1, 2), (2, 3)])
  cfr = str(tmp_path / "cfr.avi")
  video_lib.write_video(cfr, np.ascontiguousarray(np.concatenate(clips)), fps=16)
  steady = predictor.timeline(cfr, every_s=1.0)
  for second in (0, 2):   # the same frames at the same times: the same probabilities
    np.testing.assert_allclose(result["probs"][second], steady["probs"][second], atol=0.05)
  # a window of 2 s: the 2 clips that cover it, averaged; shorter than a clip: refused
  wide = predictor.timeline(cfr, every_s=1.0, window_s=2.0)
  np.testing.assert_allclose(wide["spans"], [(0, 2), (1, 3)])
  np.testing.assert_allclose(wide["probs"][0], steady["probs"][:2].mean(axis=0), atol=1e-5)
  with pytest.raises(predict.PredictError, match=r"--window 0.5: the model reads clips of 16 "
                                                 r"frames, 1 s at 16 frames/s"):
    predictor.timeline(cfr, every_s=1.0, window_s=0.5)


def test_a_decoder_error_mid_video_keeps_the_timeline_before_it(trained, tmp_path, monkeypatch,
                                                               capsys):
  spec, workdir, _, _, dataset = trained
  path, _ = dataset.files("test")[0]
  clips = [records.decode_example(data)["video"][:16]
           for _, data in zip(range(3), records.iter_tfrecord(path))]
  long = str(tmp_path / "long.avi")
  video_lib.write_video(long, np.ascontiguousarray(np.concatenate(clips)), fps=16)
  real = video_lib.iter_frames

  def failing(*args, **kwargs):
    rate, frames = real(*args, **kwargs)

    def cut():
      for index, frame in enumerate(frames):
        if index == 40:
          raise video_lib.VideoDecodeError(f"{long}: cannot decode (damaged)")
        yield frame
    return rate, cut()

  monkeypatch.setattr(video_lib, "iter_frames", failing)
  out_dir = tmp_path / "out"
  assert predict.main(["--config", spec, "--checkpoint", workdir, "--every", "1", "--png",
                       str(out_dir), long]) == 1
  captured = capsys.readouterr()
  assert "(2 window(s), one every 1 s):" in captured.out   # the two seconds before frame 40
  assert "stopped early: " in captured.out
  assert f"error: {long}: cannot decode (damaged) (after 40 frames, 2.50 s); the timeline " \
         "above stops there" in captured.err
  assert len((out_dir / "long.timeline.csv").read_text().splitlines()) == 3


def test_timeline_windows_apart_leave_gaps_and_its_csv_quotes_any_class_name(tmp_path):
  import csv  # pylint: disable=import-outside-toplevel
  result = {"video": "v.avi", "class_names": ['say "hi", wave', "b"], "every_s": 3.0,
            "step_s": 3.0, "fps": 16.0, "error": None, "spans": [(0, 1), (3, 4), (6, 7)],
            "probs": np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], np.float32)}
  np.testing.assert_allclose(predict_host.window_edges(result["spans"]), result["spans"])
  assert [(n, s, e) for n, s, e, _ in predict_host.segments(result)] == [
      ('say "hi", wave', 0, 1), ('say "hi", wave', 3, 4), ("b", 6, 7)]
  written = predict_host.write_timeline(result, str(tmp_path), "v.png")
  with open(written[1], encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["start_s", "end_s", 'say "hi", wave', "b"] and len(rows) == 4
  assert os.path.getsize(written[0]) > 1000


@pytest.mark.parametrize("flags", [["--every", "inf"], ["--every", "1", "--window", "inf"]])
def test_an_infinite_timeline_setting_is_refused(flags, capsys):
  with pytest.raises(SystemExit):
    predict.main(["--checkpoint", "w", *flags, "v.avi"])
  assert "give seconds > 0" in capsys.readouterr().err
