"""DTCM: model shapes and key-frame sharing through the cascade, the loss settings of Table VI, the
two-stage phase configs, the configs, the enhancer cost ratio (Table IX), the darkness CLI on video
files and on a prepared dataset, and `python -m darkjax.main` end to end.

The curve, enhancer, Zero-DCE loss and darkness-score unit tests live in tests/test_curves.py,
test_enhancers.py, test_losses.py and test_darkness.py.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dtcm_arid, dtcm_dark48, dtcm_synthetic
from darkjax import losses, models
from darkjax import metrics as metrics_lib
from darkjax.data import darkness, prepared, records, video
from darkjax.layers.curves import apply_curves
from darkjax.tools import darkness as darkness_tool
from darkjax.tools import enhancer_cost
from darkjax.trainers import dtcm as dtcm_trainer
from run_configs import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, setting: str = "one_stage_total", **args):
  extra = "".join(f",{k}={v}" for k, v in args.items())
  return quiet(dtcm_synthetic.get_config(f"runlocal,setting={setting},data_dir={data_dir}{extra}"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("dtcm_synthetic"))
  prepared.open_dataset(tiny_config(directory).input.data)   # generated once for the module
  return directory


def tiny_clip(seed=0, shape=(2, 8, 16, 16, 3)):
  return jax.random.uniform(jax.random.key(seed), shape, minval=0.0, maxval=0.2)


# ---------------------------------------------------------------- model
def test_tiny_model_shapes_and_outputs():
  model = models.build("dtcm_tiny", num_classes=5, group_size=4)
  x = tiny_clip()
  variables = jax.jit(model.init)(jax.random.key(0), x)
  assert set(variables["params"]) == {"video_enhancer", "classifier"}
  logits, out = jax.jit(model.apply)(variables, x)
  assert logits.shape == (2, 5)
  assert out["enhanced"].shape == x.shape and out["intermediate"].shape == x.shape
  assert out["curves"].shape == (2, 2, 16, 16, 24)        # T / k = 2 groups, 8 iterations x RGB
  assert out["features"].shape == (2, 16) and "stage4" in out
  assert float(jnp.max(jnp.abs(out["enhanced"] - x))) > 0  # the enhancer does something


def test_full_size_dtcm_parameter_count():
  clip = jax.ShapeDtypeStruct((1, 16, 112, 112, 3), jnp.float32)
  count = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))  # noqa: E731
  full = jax.eval_shape(models.build("dtcm", num_classes=11).init, jax.random.key(0), clip)
  backbone = jax.eval_shape(models.build("resnext3d_101", num_classes=11).init,
                            jax.random.key(0), clip)
  assert count(full["params"]["video_enhancer"]) == 23_768      # Table IX: 23.77k
  assert count(full["params"]["classifier"]) == count(backbone["params"])


def test_keyframe_sharing_through_the_model():
  k = 4
  model = models.build("dtcm_tiny", num_classes=3, group_size=k)
  x = tiny_clip(1)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  apply = jax.jit(model.apply)
  _, out = apply(variables, x)
  curves = out["curves"]
  # Every frame of group g is enhanced with group g's curves.
  for t in range(x.shape[1]):
    np.testing.assert_allclose(out["enhanced"][:, t], apply_curves(x[:, t], curves[:, t // k]),
                               atol=1e-6)
  # Curves come from each group's middle frame (index k // 2) only.
  other = x.at[:, 0].set(0.9).at[:, 7].set(0.0)              # non-key frames of groups 0 and 1
  _, out_other = apply(variables, other)
  np.testing.assert_allclose(out_other["curves"], curves, atol=1e-6)
  key_changed = x.at[:, k // 2].set(0.5)
  _, out_key = apply(variables, key_changed)
  assert float(jnp.max(jnp.abs(out_key["curves"][:, 0] - curves[:, 0]))) > 1e-4
  np.testing.assert_allclose(out_key["curves"][:, 1], curves[:, 1], atol=1e-6)


def test_no_enhancer_is_the_plain_backbone_and_bad_settings_raise():
  x = tiny_clip(2)
  model = models.build("dtcm_tiny", num_classes=3, enhancer="")
  variables = jax.jit(model.init)(jax.random.key(0), x)   # jitted: op by op compiles every op
  assert set(variables["params"]) == {"classifier"}
  logits, out = jax.jit(model.apply)(variables, x)
  np.testing.assert_array_equal(out["enhanced"], x)
  backbone = models.build("small3d_tiny", num_classes=3)
  plain, _ = jax.jit(backbone.apply)({"params": variables["params"]["classifier"],
                                      "batch_stats": variables["batch_stats"]["classifier"]},
                                     jax.jit(dtcm_trainer_normalise)(x))
  np.testing.assert_allclose(logits, plain, atol=1e-5)
  with pytest.raises(ValueError, match="not a multiple of the key-frame group"):
    jax.eval_shape(models.build("dtcm_tiny", num_classes=3, group_size=3).init,
                   jax.random.key(0), x)
  with pytest.raises(ValueError, match="enhancer 'foo' unknown"):
    jax.eval_shape(models.build("dtcm_tiny", num_classes=3, enhancer="foo").init,
                   jax.random.key(0), x)


def test_per_clip_normalisation_of_a_constant_clip_has_finite_gradients():
  """A black (or saturated) clip stays constant through the curves; its per-clip standardisation
  inside DTCM is differentiated, and a NaN gradient there skips the whole batch's update."""
  from darkjax.models.dtcm import normalise_unit_clip  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  dark = jnp.asarray(rng.uniform(0, 0.3, (2, 4, 8, 8, 3)), jnp.float32)
  value = np.asarray(jax.jit(dtcm_trainer_normalise)(dark))
  reference = np.asarray(dark, np.float64) * 255.0
  axes = (1, 2, 3, 4)
  reference = (reference - reference.mean(axes, keepdims=True)) / np.maximum(
      reference.std(axes, keepdims=True), 1.0)
  np.testing.assert_allclose(value, reference, atol=1e-5)
  grad = jax.jit(jax.grad(lambda c: jnp.sum(normalise_unit_clip(c, "per_clip") * dark)))
  for fill in (0.0, 1.0):
    assert np.isfinite(np.asarray(grad(jnp.full(dark.shape, fill)))).all(), fill
  model = models.build("dtcm_tiny", num_classes=3)
  black = jnp.zeros((1, 8, 16, 16, 3))
  variables = jax.jit(model.init)(jax.random.key(0), black)
  params, state = variables.pop("params"), variables

  def loss(p):
    (logits, out), _ = model.apply({"params": p, **state}, black, train=True, mutable=list(state))
    return jnp.sum(logits) + jnp.sum(out["enhanced"])

  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def dtcm_trainer_normalise(x):
  from darkjax.models.dtcm import normalise_unit_clip  # pylint: disable=import-outside-toplevel
  return normalise_unit_clip(x, "per_clip")


# ---------------------------------------------------------------- losses of the settings
@pytest.fixture(scope="module")
def batch_and_variables(data_dir):
  task = dtcm_trainer.Task(tiny_config(data_dir))
  batch = next(iter(task.train_dataset(8)))
  batch = {k: jnp.asarray(v) for k, v in batch.items() if np.asarray(v).dtype.kind in "biuf"}
  variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
  params = variables.pop("params")
  return batch, params, variables


def _loss_and_grads(data_dir, batch_and_variables, setting, frozen=False):
  batch, params, state = batch_and_variables
  task = dtcm_trainer.Task(tiny_config(data_dir, setting), frozen_enhancer=frozen)
  rng = jax.random.key(3)
  grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True))
  (loss, (_, metrics)), grads = grad_fn(params, state, batch, rng, 0.0)
  apply = jax.jit(lambda p, clips: task.model.apply(
      {"params": p, **state}, clips, train=True, freeze_enhancer=frozen, rngs={"dropout": rng},
      mutable=list(state)))
  logits_out, _ = apply(params, task.clips(batch["video"]))
  return task, float(loss), metrics, grads, logits_out


def test_one_stage_ar_loss_is_plain_cross_entropy(data_dir, batch_and_variables):
  batch = batch_and_variables[0]
  _, loss, metrics, grads, (logits, _) = _loss_and_grads(data_dir, batch_and_variables,
                                                         "one_stage_ar")
  ce = losses.softmax_cross_entropy(logits, batch["label"])
  np.testing.assert_allclose(loss, float(ce), rtol=1e-6)
  assert "enhancement_loss" not in metrics
  # L_AR alone still trains the enhancer (one stage: gradients flow through the curves).
  enhancer_grad = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["video_enhancer"]))
  assert enhancer_grad > 0


def test_one_stage_total_adds_alpha_weighted_stc_and_dark_losses(data_dir, batch_and_variables):
  batch = batch_and_variables[0]
  task, loss, metrics, _, (logits, out) = _loss_and_grads(data_dir, batch_and_variables,
                                                          "one_stage_total")

  def expected(video, enhanced, curves, logits, labels):
    clip = task.clips(video)
    stc = (losses.video_spatial_consistency_loss(enhanced, clip, 8)
           + losses.temporal_consistency_loss(enhanced, clip))
    dark = (losses.exposure_control_loss(enhanced) + 0.5 * losses.colour_constancy_loss(enhanced)
            + 20.0 * losses.illumination_smoothness_loss(curves))
    return losses.softmax_cross_entropy(logits, labels) + 0.1 * (4.0 * stc + dark), 4.0 * stc + dark

  # Jitted: op by op it compiles each operation.
  want, enhancement = jax.jit(expected)(batch["video"], out["enhanced"], out["curves"], logits,
                                        batch["label"])
  np.testing.assert_allclose(loss, float(want), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["enhancement_loss"]), float(enhancement), rtol=1e-5)
  assert float(metrics["enhancement_loss"]) > 0


# The paper's Eq. (1)-(7) transcribed in numpy: L_SCF (Eq. 1) and L_TC (Eq. 3) are
# tests/test_losses.py's loops; L_Dark's terms are Zero-DCE's [28] paper forms.
def _paper_exposure(frames, level=0.6, patch=16):
  """L_exp = 1/M sum_k |Y_k - E| over the 16 x 16 regions' mean intensities; mean over frames."""
  per_frame = []
  for frame in frames:
    grey = frame.mean(-1)
    rows, cols = grey.shape[0] // patch, grey.shape[1] // patch
    y = [grey[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].mean()
         for r in range(rows) for c in range(cols)]
    per_frame.append(np.mean(np.abs(np.array(y) - level)))
  return np.mean(per_frame)


def _paper_colour(frames):
  """L_col = sum over (R,G), (R,B), (G,B) of (J^p - J^q)^2, J the channel means; mean over
  frames."""
  j = frames.mean(axis=(1, 2))
  return np.mean((j[:, 0] - j[:, 1]) ** 2 + (j[:, 0] - j[:, 2]) ** 2 + (j[:, 1] - j[:, 2]) ** 2)


def _paper_illumination(maps, iterations=8):
  """L_tvA = 1/N sum_n sum_c (|grad_x A_n^c| + |grad_y A_n^c|)^2 (mean over pixels); mean over
  the curve maps of every key frame."""
  per_map = []
  for a in maps:
    total = 0.0
    for channel in range(a.shape[-1]):
      grad_x = np.abs(a[:-1, 1:, channel] - a[:-1, :-1, channel])
      grad_y = np.abs(a[1:, :-1, channel] - a[:-1, :-1, channel])
      total += np.mean((grad_x + grad_y) ** 2)
    per_map.append(total / iterations)
  return np.mean(per_map)


def test_total_loss_is_eq_1_to_7_transcribed(data_dir, batch_and_variables):
  from test_losses import _np_lscf, _np_temporal_consistency  # pylint: disable=import-outside-toplevel
  batch = batch_and_variables[0]
  task, loss, _, _, (logits, out) = _loss_and_grads(data_dir, batch_and_variables,
                                                    "one_stage_total")
  clip = np.asarray(task.clips(batch["video"]), np.float64)          # DI
  enhanced = np.asarray(out["enhanced"], np.float64)                 # DY
  curves = np.asarray(out["curves"], np.float64)
  l_sc = np.mean([np.mean([_np_lscf(y, i) for y, i in zip(dy, di)])  # Eq. (2) over Eq. (1)
                  for dy, di in zip(enhanced, clip)])
  l_tc = _np_temporal_consistency(enhanced, clip)                    # Eq. (3)
  l_stc = l_sc + l_tc                                                # Eq. (4)
  frames = enhanced.reshape((-1,) + enhanced.shape[2:])
  l_dark = (_paper_exposure(frames) + 0.5 * _paper_colour(frames)     # Eq. (5): W_col 0.5,
            + 20.0 * _paper_illumination(curves.reshape((-1,) + curves.shape[2:])))  # W_tvA 20
  z = np.asarray(logits, np.float64)
  log_softmax = z - z.max(-1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
  l_ar = -np.mean(log_softmax[np.arange(len(z)), np.asarray(batch["label"])])   # Eq. (6)
  alpha, w_stc = 0.1, 4.0
  np.testing.assert_allclose(loss, l_ar + alpha * (w_stc * l_stc + l_dark), rtol=1e-4)  # Eq. (7)
  assert min(l_sc, l_tc, l_dark) > 0


def test_enhancement_is_eq_9_to_11_transcribed():
  """Eq. (11): R = F(I_k//2), the key frame "the middle frame of the k frames' sequence", read
  0-based (1-based, k = 1 would name I_0); Eq. (9)-(10): every frame of the group is enhanced with
  that R, 8 iterations of Zero-DCE's curve LE(x) = x + A x (1 - x) (the official checkpoints' maps
  are -A)."""
  k = 4
  model = models.build("dtcm_tiny", num_classes=3, group_size=k)
  x = tiny_clip(4)
  variables = jax.jit(model.init)(jax.random.key(0), x)   # jitted: a compile per program
  _, out = jax.jit(model.apply)(variables, x)
  enhancer = models.build("dtcm_enhancer", 0, features=8)
  enhancer_vars = {c: v["video_enhancer"]["enhancer"] for c, v in variables.items()
                   if "video_enhancer" in v}
  curves = jax.jit(functools.partial(enhancer.apply, method="estimate_curves"))
  clip = np.asarray(x, np.float64)
  for g in range(x.shape[1] // k):
    key = x[:, g * k + k // 2]
    r = np.asarray(curves(enhancer_vars, key), np.float64)
    np.testing.assert_allclose(np.asarray(out["curves"][:, g]), r, atol=1e-6)   # Eq. (11)
    for i in range(k):                                                          # Eq. (10)
      le = clip[:, g * k + i]
      for n in range(8):                                                        # Eq. (9)
        a = -r[..., 3 * n:3 * n + 3]
        le = le + a * le * (1 - le)
      np.testing.assert_allclose(np.asarray(out["enhanced"][:, g * k + i]), le, atol=1e-5)


def test_two_stage_phase2_freezes_enhancer(data_dir, batch_and_variables):
  batch = batch_and_variables[0]
  _, loss, _, grads, (logits, _) = _loss_and_grads(data_dir, batch_and_variables, "two_stage",
                                                   frozen=True)
  ce = losses.softmax_cross_entropy(logits, batch["label"])
  np.testing.assert_allclose(loss, float(ce), rtol=1e-6)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["video_enhancer"]))
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["classifier"])) > 0
  config = tiny_config(data_dir, "two_stage")
  phase1 = dtcm_trainer.phase_config(config, "enhancer")
  phase2 = dtcm_trainer.phase_config(config, "classifier")
  assert phase1.total_steps == config.dtcm.enhancer_steps
  assert phase1.optimizer.lr == config.dtcm.enhancer_lr
  assert "^video_enhancer/" in phase2.optimizer.frozen


def test_enhancer_phase_trains_only_the_enhancer(data_dir, batch_and_variables):
  batch = batch_and_variables[0]
  task = dtcm_trainer.EnhancerTask(tiny_config(data_dir, "two_stage"))
  variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
  assert set(variables["params"]) == {"video_enhancer"}
  params = variables.pop("params")
  loss, (_, metrics) = jax.jit(task.loss_fn)(params, variables, batch, jax.random.key(1), 0.0)
  want = (4.0 * (metrics["spatial_loss"] + metrics["temporal_loss"]) + metrics["exposure_loss"]
          + 0.5 * metrics["colour_loss"] + 20.0 * metrics["illumination_loss"])
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)


def test_config_checks(data_dir):
  config = tiny_config(data_dir)
  config.input.normalise = "per_clip"
  with pytest.raises(ValueError, match="input.normalise"):
    dtcm_trainer.check_config(config)
  config = tiny_config(data_dir, "no_enhancement")
  assert config.model.kwargs.enhancer == ""
  dtcm_trainer.check_config(config)
  config.model.kwargs.enhancer = "zero_dce"
  with pytest.raises(ValueError, match="no_enhancement"):
    dtcm_trainer.check_config(config)
  with pytest.raises(ValueError, match="setting"):
    dtcm_synthetic.get_config("setting=three_stage")
  with pytest.raises(ValueError, match="multiple of k"):
    dtcm_arid.get_config("k=3")


@pytest.mark.parametrize("module, dataset, paper", [
    (dtcm_arid, "arid_v1", "96.36"), (dtcm_dark48, "dark48", "46.68")])
def test_dataset_configs(module, dataset, paper, tmp_path, monkeypatch):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path))
  config = module.get_config("k=8,alpha=0.2,w_stc=2,setting=one_stage_ar,backbone=resnet3d_50")
  assert config.trainer == "dtcm" and config.model.name == "dtcm"
  assert config.model.kwargs.group_size == 8 and config.model.kwargs.backbone == "resnet3d_50"
  assert (config.dtcm.alpha, config.dtcm.w_stc, config.dtcm.setting) == (0.2, 2.0, "one_stage_ar")
  assert config.input.normalise == "none" and config.input.crop_size == 112
  assert config.optimizer.name == "adamw" and config.optimizer.lr == 1e-5
  assert config.input.batch_size == 4
  assert config.input.data.dir == os.path.join(str(tmp_path), dataset)
  # ARID and Dark-48 are prepared as train1/test1 .. train3/test3: split 1 unless overridden.
  assert config.input.data.split_index == 1
  assert paper in module.__doc__
  with pytest.raises(prepared.DatasetNotPreparedError, match=dataset):
    dtcm_trainer.Task(config)


# ---------------------------------------------------------------- Dark-48's K400* weights
def test_dark48_requires_the_filtered_kinetics_weights_and_arid_the_standard_ones():
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  dark48 = dtcm_dark48.get_config()
  entry = dark48.required_weights.backbone
  assert entry.key == "model_init" and entry.arg == "pretrained"
  assert "K400*" in entry.source and "k400star" in entry.file and "k400star" in entry.command
  with pytest.raises(config_lib.MissingWeightsError) as error:
    config_lib.check_required_weights(dark48)
  assert "K400*" in str(error.value) and "youtube_id" in str(error.value)
  assert dark48.dtcm.leaky_weights == ("resnext-101-kinetics.pth", "resnet-101-kinetics.pth")
  arid = dtcm_arid.get_config()
  assert arid.required_weights.backbone.file == "resnext-101-kinetics.pth"
  assert arid.dtcm.leaky_weights == ()


def _converted_dir(tmp_path, source_name):
  directory = tmp_path / source_name.replace(".", "_")
  directory.mkdir()
  (directory / "meta.json").write_text(json.dumps(
      {"arch": "resnext3d_101", "source": {"path": f"/weights/{source_name}"}}))
  return str(directory)


def test_dark48_warns_when_given_the_standard_kinetics_weights(tmp_path, caplog):
  standard = _converted_dir(tmp_path, "resnext-101-kinetics.pth")
  filtered = _converted_dir(tmp_path, "resnext-101-k400star.pth")
  caplog.set_level("WARNING", logger="darkjax")
  for config, warns in ((dtcm_dark48.get_config(f"pretrained={standard}"), True),
                        (dtcm_dark48.get_config(f"pretrained={filtered}"), False),
                        (dtcm_dark48.get_config(f"pretrained={tmp_path}"), False),  # no meta.json
                        (dtcm_arid.get_config(f"pretrained={standard}"), False)):
    caplog.clear()
    for phase in dtcm_trainer.PHASES:
      if phase.when(config) and phase.check is not None:
        phase.check(config, str(tmp_path / "run"))
    assert (dtcm_trainer.leaky_source(config) == "resnext-101-kinetics.pth") == warns
    assert ("may have seen dark48's test videos" in caplog.text) == warns, caplog.text
  config = dtcm_dark48.get_config(f"pretrained={standard},setting=two_stage")
  caplog.clear()
  for phase in dtcm_trainer.PHASES:
    if phase.when(config) and phase.check is not None:
      phase.check(config, str(tmp_path / "run"))
  assert "K400*" in caplog.text


# ---------------------------------------------------------------- enhancer cost (Table IX)
def test_enhancer_cost_ratio_at_64x112():
  costs = enhancer_cost.cost_table((1, 2, 4))
  for unit in ("gflops", "gmacs"):
    assert costs[4][unit] <= 0.27 * costs[1][unit]
    assert 0.49 <= costs[2][unit] / costs[1][unit] <= 0.53
  assert costs[1]["gmacs"] > 1.0                  # a 64-frame clip at 112^2 is GMACs of work
  assert 1.6 < costs[1]["gflops"] / costs[1]["gmacs"] < 2.4   # XLA: 2 FLOPs per multiply-add
  # Full resolution (the default) is the paper's cost: Table IX's 19.08 "GFLOPs" at k = 1 are
  # multiply-adds, parameters x pixels.
  assert abs(costs[1]["gmacs"] / enhancer_cost.PAPER_GFLOPS[1] - 1) < 0.06
  table = enhancer_cost.markdown_table(costs, 64, 112, "dtcm_enhancer")
  assert "19.08" in table and "| 4 |" in table
  # without k=1 the ratios (darkjax's and the paper's) are to the smallest k, and say so
  table = enhancer_cost.markdown_table({k: costs[k] for k in (2, 4)}, 64, 112, "dtcm_enhancer")
  assert "ratio to k=2" in table and "| 4.77 | 0.499 |" in table


def test_enhancer_cost_cli_strided_and_bad_numbers(capsys):
  assert enhancer_cost.main(["--k", "1", "2", "--strided"]) == 0
  out = capsys.readouterr().out
  strided = enhancer_cost.cost_table((1,), full_resolution=False)[1]["gmacs"]
  assert "full_resolution=False" in out and f"| {strided:.3f} | 1.000 | - | - |" in out
  assert strided < 0.3 * enhancer_cost.cost_table((1,))[1]["gmacs"]   # layers 5-6 at stride 2
  for flags, line in ((["--k", "0"], "--k 0: must be >= 1"),
                      (["--frames", "0"], "--frames 0: must be >= 1"),
                      (["--strided", "--enhancer", "zero_dce"], "zero_dce has none")):
    with pytest.raises(SystemExit):
      enhancer_cost.main(flags)
    assert line in capsys.readouterr().err


# ---------------------------------------------------------------- darkness CLI
def _write_video(path: str, frames: np.ndarray) -> None:
  import av  # pylint: disable=import-outside-toplevel
  with av.open(path, "w") as container:
    stream = container.add_stream("rawvideo", rate=8)   # lossless: D_v is exact
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr24"
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _frames(level: int, count: int = 12, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.clip(rng.normal(level, 3.0, (count, 16, 16, 3)), 0, 255).astype(np.uint8)


def test_darkness_cli_on_video_files(tmp_path, capsys):
  dark, bright = str(tmp_path / "videos" / "dark.avi"), str(tmp_path / "videos" / "bright.avi")
  os.makedirs(tmp_path / "videos")
  dark_frames, bright_frames = _frames(8), _frames(120, seed=1)
  _write_video(dark, dark_frames)
  _write_video(bright, bright_frames)
  np.testing.assert_array_equal(video.decode_video(dark)[0], dark_frames)
  keep, histogram = str(tmp_path / "dark.txt"), str(tmp_path / "hist.png")
  assert darkness_tool.main([str(tmp_path / "videos"), "--keep-dark", keep,
                             "--histogram", histogram]) == 0
  printed = capsys.readouterr().out
  # The paper's random frame per segment, seeded by --seed (0) and the video's name.
  score = lambda frames, name, **kw: darkness.darkness_score(  # noqa: E731
      frames, seed=darkness_tool.video_seed(name, kw.pop("seed", 0)), **kw)
  assert f"{score(dark_frames, dark):.4f}  dark" in printed
  assert f"{score(bright_frames, bright):.4f}  not dark" in printed
  assert "2 videos, 1 dark" in printed
  assert darkness_tool.main([dark, "--histogram", "", "--seed", "3"]) == 0
  assert f"{score(dark_frames, dark, seed=3):.4f}  dark" in capsys.readouterr().out
  assert darkness_tool.main([dark, "--histogram", "", "--sampling", "middle"]) == 0
  middle = darkness.darkness_score(dark_frames, sampling="middle")
  assert f"{middle:.4f}  dark" in capsys.readouterr().out
  with open(keep, encoding="utf-8") as f:
    assert f.read().splitlines() == [dark]
  assert os.path.getsize(histogram) > 1000
  # A single file works too; a missing path is named.
  results = darkness_tool.scan([bright])
  assert [r.dark for r in results] == [False] and results[0].num_frames == 12
  assert darkness_tool.main([str(tmp_path / "missing.mp4"), "--histogram", ""]) == 2
  err = capsys.readouterr().err
  assert "darkness: " in err and "missing.mp4 does not exist" in err
  assert "darkness: darkness:" not in err
  # Where the list or histogram goes is checked before any video is decoded.
  with mock.patch.object(video, "decode_video", side_effect=AssertionError("decoded")):
    assert darkness_tool.main([dark, "--keep-dark", str(tmp_path / "nodir" / "d.txt")]) == 2
    assert f"--keep-dark {tmp_path / 'nodir' / 'd.txt'}: {tmp_path / 'nodir'} does not exist" \
        in capsys.readouterr().err
    assert darkness_tool.main([str(tmp_path / "videos"), "--split", "train"]) == 2
    assert "is no prepared dataset" in capsys.readouterr().err
  # A video that cannot be decoded is named and left out; the others are scored and written.
  with open(tmp_path / "videos" / "broken.avi", "wb") as f:
    f.write(b"not a video" * 20)
  assert darkness_tool.main([str(tmp_path / "videos"), "--keep-dark", keep, "--histogram",
                             histogram]) == 1
  captured = capsys.readouterr()
  assert "2 videos, 1 dark" in captured.out
  assert "left out" in captured.err and "broken.avi" in captured.err
  with open(keep, encoding="utf-8") as f:
    assert f.read().splitlines() == [dark]


def test_darkness_cli_on_prepared_dataset(tmp_path, capsys):
  data = str(tmp_path / "ds")
  examples = {"train": [dict(video=_frames(5, seed=1), label=0, video_id="a_dark"),
                        dict(video=_frames(100, seed=2), label=1, video_id="b_bright")],
              "test": [dict(video=_frames(10, seed=3), label=1, video_id="c_dark"),
                       # one video in two splits (ARID's splits share their videos): scored once
                       dict(video=_frames(5, seed=1), label=0, video_id="a_dark")]}
  records.write_dataset(data, "toy", ["x", "y"], examples, fps=8)
  keep = str(tmp_path / "dark.txt")
  assert darkness_tool.main([data, "--keep-dark", keep, "--histogram",
                             str(tmp_path / "h.png")]) == 0
  with open(keep, encoding="utf-8") as f:   # named by the first split that holds it
    assert f.read().splitlines() == [f"{data}:test/c_dark", f"{data}:test/a_dark"]
  captured = capsys.readouterr()
  assert "3 videos, 2 dark" in captured.out
  assert "darkness: 100%" in captured.err and "4/4" in captured.err   # the bar, on stderr
  only_train = darkness_tool.scan([data], splits=["train"])
  assert [r.name.split(":")[1] for r in only_train] == ["train/a_dark", "train/b_bright"]
  with pytest.raises(ValueError, match="--split 'val'"):
    darkness_tool.scan([data], splits=["val"])
  # Every path is checked before any video is read: a mistyped last one fails at once.
  decoded = []
  real_decode = records.decode_example
  with mock.patch.object(records, "decode_example",
                         lambda *a, **k: decoded.append(1) or real_decode(*a, **k)):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
      darkness_tool.scan([data, str(tmp_path / "nowhere")])
  assert decoded == []
  assert darkness_tool.main([data, "--histogram", "", "--no-progress"]) == 0
  assert "darkness: " not in capsys.readouterr().err


# ---------------------------------------------------------------- end to end
def test_main_runlocal_end_to_end(data_dir, tmp_path, main_env):
  workdir = str(tmp_path / "run")
  result = subprocess.run(
      [sys.executable, "-m", "darkjax.main",
       f"--config=configs/dtcm_synthetic.py:runlocal,steps=3,data_dir={data_dir}",
       f"--workdir={workdir}", "--config.progress_bar=False"],
      cwd=REPO, env=main_env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "eval/top1=" in result.stdout
  rows = metrics_lib.read_metrics(workdir)
  losses_logged = [r["train/enhancement_loss"] for r in rows if "train/enhancement_loss" in r]
  assert len(losses_logged) == 3 and all(np.isfinite(losses_logged))
  for name in ("dtcm_enhancement.png", "eval_confusion.png", "report.md"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["dtcm"]["setting"] == "one_stage_total"
