"""darkjax.tools.predict on every paper's model: the prediction goes through the paper's Task, so it
sees the same inputs as in training (3D-DiNet's target preprocessing, LIFT-Net's gamma-corrected
luminous clip, DTCM's enhancer). Each expected value is written out here independently of the
Task's code, from the paper's description of its inputs."""

from __future__ import annotations

import os
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dinet_synthetic, dtcm_synthetic, lift_synthetic, twostream_synthetic
from darkjax import checkpoint, plots
from darkjax.data import flow as flow_lib
from darkjax.data import normalise, records
from darkjax.tools import predict_checkpoint, predict_host
from darkjax import task as task_lib
from darkjax.data import video as video_lib
from run_configs import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _softmax_mean(logits) -> np.ndarray:
  return np.asarray(jnp.mean(jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1), axis=0))


def _apply(model, variables, x, **arrays):
  """`model.apply(variables, x, train=False, **arrays)` jitted (applied op by op, a model
  compiles each of its operations)."""
  return jax.jit(lambda v, x, a: model.apply(v, x, train=False, **a))(variables, x, arrays)


def _checkpointed_run(config, workdir: str, tmp_path
                      ) -> tuple[predict_checkpoint.Predictor, dict, str]:
  """Random-initialised variables of the config's Task saved as step 1 of a run in `workdir`
  (its inference phase directory), a test clip of its dataset written as .avi, and the
  Predictor for the run."""
  task = task_lib.load_task(config)
  path, _ = task.data.dataset.files("test")[0]
  example = records.decode_example(next(records.iter_tfrecord(path)))
  sample = {"video": jnp.asarray(example["video"][None, :config.input.frames, :32, :32])}
  for name in tuple(task.data.streams) + tuple(getattr(task, "computed_streams", ())):
    sample[name] = sample["video"]
  variables = jax.device_get(jax.jit(task.init_variables)(jax.random.key(7), sample))
  state = {"params": variables.pop("params"), "model_state": variables, "opt_state": {}}
  run_dir = task_lib.deployed_workdir(config, workdir)
  saver = checkpoint.Checkpointer(run_dir, async_save=False)
  saver.save(1, state, None, {"step": 1})
  saver.close()
  video = str(tmp_path / "clip.avi")
  video_lib.write_video(video, np.ascontiguousarray(example["video"]), fps=10)
  predictor = predict_checkpoint.Predictor(config, workdir)
  return predictor, {"params": state["params"], **variables}, video


def test_dinet_predicts_through_the_target_domain_preprocessing(tmp_path):
  config = quiet(dinet_synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}"))
  predictor, variables, video = _checkpointed_run(config, str(tmp_path / "run"), tmp_path)
  result = predictor.predict(video)
  # Target clips: per-clip standardisation, 3 channels, no GRL at inference.
  x = normalise.normalise(jnp.asarray(result["views"]), config.input.normalise)
  logits, _ = _apply(predictor.task.model, variables, x)
  np.testing.assert_allclose(result["probs"], _softmax_mean(logits), rtol=1e-5, atol=1e-6)
  assert result["enhanced"] is None


def test_lift_predicts_with_the_gamma_corrected_luminous_clip(tmp_path):
  config = quiet(lift_synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}"))
  workdir = str(tmp_path / "run")
  predictor, variables, video = _checkpointed_run(config, workdir, tmp_path)
  assert task_lib.deployed_workdir(config, workdir) == os.path.join(workdir, "student")
  result = predictor.predict(video)
  views = np.asarray(result["views"])
  # GIC: LUT[i] = floor((i / 255) ** (1 / gamma) * 255), then the luminous normalisation.
  lut = np.floor((np.arange(256) / 255.0) ** (1.0 / config.lift.gamma) * 255.0).astype(np.uint8)
  dark = normalise.normalise(jnp.asarray(views), config.input.normalise)
  bright = normalise.normalise(jnp.asarray(lut[views]), config.lift.luminous_normalise)
  logits, _ = _apply(predictor.task.model, variables, dark, luminous=bright)
  np.testing.assert_allclose(result["probs"], _softmax_mean(logits), rtol=1e-5, atol=1e-6)
  # The dark clip as the luminous input (no GIC) gives another prediction.
  wrong, _ = _apply(predictor.task.model, variables, dark,
                    luminous=normalise.normalise(jnp.asarray(views),
                                                 config.lift.luminous_normalise))
  assert not np.allclose(_softmax_mean(wrong), result["probs"], rtol=0, atol=1e-7)


def test_dtcm_predicts_through_the_enhancer_and_shows_its_output(tmp_path):
  config = quiet(dtcm_synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}"))
  predictor, variables, video = _checkpointed_run(config, str(tmp_path / "run"), tmp_path)
  result = predictor.predict(video)
  clips = jnp.asarray(result["views"], jnp.float32) / 255.0   # DTCM's enhancer takes [0, 1]
  logits, out = _apply(predictor.task.model, variables, clips)
  np.testing.assert_allclose(result["probs"], _softmax_mean(logits), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result["enhanced"], np.asarray(out["enhanced"][0]), atol=1e-5)
  png = predict_host.write_png(result, str(tmp_path / "png"))
  assert os.path.getsize(png) > 1000


@pytest.mark.parametrize("phase_args, phase_dir", [("", ""), (",pretrain_enhancer", "joint"),
                                                    (",setting=two_stage", "classifier")])
def test_dtcm_inference_workdir_is_the_last_phase(phase_args, phase_dir):
  config = dtcm_synthetic.get_config("runlocal" + phase_args)
  assert task_lib.deployed_workdir(config, "/w") == os.path.join("/w", phase_dir).rstrip("/")


def test_twostream_predicts_with_flow_computed_per_view_like_its_evaluators(tmp_path):
  # twostream_synthetic computes Farneback flow on the host (no flow record stream).
  config = quiet(twostream_synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}"))
  predictor, variables, video = _checkpointed_run(config, str(tmp_path / "run"), tmp_path)
  assert predictor.task.computed_streams == ("flow",)
  assert set(predictor.sample_inputs()) == {"video", "flow"}
  result = predictor.predict(video)
  views = np.asarray(result["views"])
  # Flow of every view's frames t -> t + 1 with the config's method and scale.
  flows = np.stack([flow_lib.flow_clip(v, config.twostream.flow_method,
                                       float(config.twostream.flow_scale)) for v in views])
  assert flows.shape == views.shape[:-1] + (3,)
  task_predict = jax.jit(predictor.task.predict)   # as the Predictor and evaluators run it
  logits = task_predict(variables, {"video": views, "flow": flows})
  np.testing.assert_allclose(result["probs"], _softmax_mean(logits), rtol=1e-5, atol=1e-6)
  still = task_predict(variables, {"video": views, "flow": np.full_like(flows, 128)})
  assert not np.allclose(_softmax_mean(still), result["probs"], rtol=0, atol=1e-7)
  # the picture shows the flow the model read beside the infrared frames
  np.testing.assert_array_equal(result["streams"]["flow"], flows[0])
  shown = []
  real_frame_rows = plots.frame_rows
  with mock.patch.object(plots, "frame_rows",
                         lambda rows, *a, **k: shown.extend(rows) or real_frame_rows(rows, *a, **k)):
    png = predict_host.write_png(result, str(tmp_path / "png"))
  assert [label for label, _ in shown] == ["input (view 1)", "flow (view 1)\nx, y, |v| as RGB"]
  np.testing.assert_array_equal(shown[1][1], flows[0])
  assert os.path.getsize(png) > 1000
