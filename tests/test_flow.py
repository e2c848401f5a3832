"""Optical flow (darkjax.data.flow): known translations, zero motion, the uint8 encoding, flips of a
flow stream, `prepare --flow` feeding LIFT-Net's flow input, and rotation / shear in LIFT-Net's
on-device affine augmentation (flow vectors transformed with the image)."""

from __future__ import annotations

import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lift_infar
from configs.common import augment_block
from darkjax.data import augment as video_augment
from darkjax.data import flow, ops, records
from darkjax.data.prepare import __main__ as prepare_cli
from darkjax.data.prepare import common, prepare
from darkjax.trainers import liftnet as lift_trainer
from darkjax.data import video as video_lib

SHIFT = 2  # pixels per frame, +x (content moves right)


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
  """Smooth random grey texture (uint8): Farneback needs gradients at every scale it looks at."""
  noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
  smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
  return ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)


def _moving_frames(frames: int, height: int, width: int, dx: int, seed: int = 0) -> np.ndarray:
  """(T, H, W, 3) RGB crops of a large texture, moving by `dx` pixels per frame in x."""
  margin = abs(dx) * frames + 8
  big = _texture(height + 16, width + 2 * margin, seed)
  crops = [big[8:8 + height, margin - dx * t:margin - dx * t + width] for t in range(frames)]
  return np.repeat(np.stack(crops)[..., None], 3, axis=-1)


def _interior(decoded: np.ndarray, border: int = 8) -> np.ndarray:
  return decoded[:, border:-border, border:-border]


# ------------------------------------------------------------------------------ flow and encoding

def test_known_translation_decodes_to_its_shift_in_x():
  frames = _moving_frames(3, 64, 80, SHIFT)
  encoded = flow.flow_clip(frames)
  assert encoded.shape == (3, 64, 80, 3) and encoded.dtype == np.uint8
  decoded = _interior(flow.decode_flow(encoded))
  mean_x, mean_y, mean_magnitude = decoded.reshape(-1, 3).mean(0)
  assert mean_x == pytest.approx(SHIFT, abs=0.2)
  assert mean_y == pytest.approx(0.0, abs=0.2)
  assert mean_magnitude == pytest.approx(SHIFT, abs=0.25)
  np.testing.assert_array_equal(encoded[2], encoded[1])  # T frames -> T flows, the last repeated
  # Grey (T, H, W, 1) input is the same clip as RGB with equal channels.
  np.testing.assert_array_equal(flow.flow_clip(frames[..., :1]), encoded)
  # Motion to the left decodes as negative x.
  left = _interior(flow.decode_flow(flow.flow_clip(_moving_frames(2, 64, 80, -SHIFT))))
  assert left[..., 0].mean() == pytest.approx(-SHIFT, abs=0.2)


def test_zero_motion_is_128_everywhere():
  still = np.repeat(_moving_frames(1, 40, 48, 0), 4, axis=0)
  np.testing.assert_array_equal(flow.flow_clip(still), 128)
  np.testing.assert_array_equal(flow.flow_clip(still[:1]), 128)  # one frame: zero flow


def test_encoding_scale_rounding_and_saturation():
  values = np.array([[0.0, 0.0], [1.0, -1.0], [3.0, 4.0], [20.0, -20.0], [0.06, -0.06]])
  np.testing.assert_array_equal(flow.encode_flow(values, scale=8.0),
                                [[128, 128, 128], [136, 120, 139], [152, 160, 168],
                                 [255, 0, 255], [128, 128, 129]])
  np.testing.assert_array_equal(flow.encode_flow(values[:3], scale=2.0),
                                [[128, 128, 128], [130, 126, 131], [134, 136, 138]])
  np.testing.assert_allclose(flow.decode_flow(np.array([136, 120, 168], np.uint8), 8.0),
                             [1.0, -1.0, 5.0])
  with pytest.raises(flow.FlowError, match="--flow-scale"):
    flow.flow_clip(np.zeros((2, 8, 8, 3), np.uint8), scale=0.0)
  with pytest.raises(flow.FlowError, match=r"\(T, H, W, 3 or 1\)"):
    flow.flow_clip(np.zeros((2, 8, 8), np.uint8))


@pytest.mark.parametrize("method", flow.METHODS)
def test_every_method_recovers_a_known_translation(method):
  decoded = _interior(flow.decode_flow(flow.flow_clip(_moving_frames(3, 48, 64, SHIFT), method)))
  assert decoded[..., 0].mean() == pytest.approx(SHIFT, abs=0.3)
  assert decoded[..., 1].mean() == pytest.approx(0.0, abs=0.3)
  left = _interior(flow.decode_flow(flow.flow_clip(_moving_frames(2, 48, 64, -SHIFT), method)))
  assert left[..., 0].mean() == pytest.approx(-SHIFT, abs=0.3)


def test_unknown_method_and_opencv_without_contrib_name_the_option(monkeypatch):
  with pytest.raises(flow.FlowError, match="'lk'.*farneback, dis, tvl1"):
    flow.check_method("lk")
  monkeypatch.delattr(cv2, "optflow", raising=False)  # what a second OpenCV wheel leaves behind
  with pytest.raises(flow.FlowError, match=r"--flow-method tvl1.*cv2\.optflow.*pip uninstall"):
    flow.flow_clip(np.zeros((2, 8, 8, 3), np.uint8), method="tvl1")
  with pytest.raises(common.PrepareError, match="--flow-method tvl1"):
    common.FlowSettings("tvl1").check()
  common.FlowSettings("dis").check()


def test_flow_benchmark_ground_truth_and_rows():
  from darkjax.tools import bench_flow
  clip, truth = bench_flow.known_flow_clip("rotate+zoom", frames=3, height=40, width=56)
  assert clip.shape == (3, 40, 56) and truth.shape == (2, 40, 56, 2)
  # Frame t at x is frame t + 1 at x + flow(x): sample frame t + 1 there and compare.
  ys, xs = np.mgrid[0:40, 0:56].astype(np.float32)
  for t in range(2):
    moved = cv2.remap(clip[t + 1].astype(np.float32), xs + truth[t, ..., 0], ys + truth[t, ..., 1],
                      cv2.INTER_LINEAR)
    assert np.abs(moved - clip[t])[8:-8, 8:-8].mean() < 0.01
  rows = bench_flow.run(frames=3, height=40, width=56)
  assert {(r["motion"], r["lighting"]) for r in rows} == {
      (m, lighting) for m in bench_flow.MOTIONS for lighting in bench_flow.LIGHTING}
  assert {r["method"] for r in rows} == set(flow.METHODS)
  assert all(r["ms_per_pair"] > 0 and r["epe"] < 1.0 for r in rows)
  assert "EPE" in bench_flow.report(rows)


# ------------------------------------------------------------------------------------------ flips

def test_hflip_of_a_flow_stream_mirrors_and_negates_x():
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
  flipped = ops.hflip(clip, stream="flow")
  mirrored = clip[:, :, ::-1]
  np.testing.assert_array_equal(flipped[..., 1:], mirrored[..., 1:])  # y, magnitude: mirrored
  x, x_mirrored = flipped[..., 0].astype(int), mirrored[..., 0].astype(int)
  np.testing.assert_array_equal(x, np.where(x_mirrored == 0, 255, 256 - x_mirrored))
  inner = x_mirrored > 0  # decoded x negated exactly (0, i.e. -128/scale, saturates to +127/scale)
  np.testing.assert_array_equal(flow.decode_flow(flipped)[..., 0][inner],
                                -flow.decode_flow(mirrored)[..., 0][inner])
  assert flow.FLIP_X_LUT[128] == 128 and flow.FLIP_X_LUT[0] == 255 and flow.FLIP_X_LUT[255] == 1
  twice = ops.hflip(flipped, "flow")
  np.testing.assert_array_equal(twice[clip[..., 0] > 0], clip[clip[..., 0] > 0])
  np.testing.assert_array_equal(ops.hflip(clip, stream="ir"), mirrored)  # other streams: mirror
  np.testing.assert_array_equal(ops.hflip(clip), mirrored)
  # A real flow clip of rightward motion, flipped, is leftward motion.
  right = flow.flow_clip(_moving_frames(2, 48, 64, SHIFT))
  assert _interior(flow.decode_flow(ops.hflip(right, "flow")))[..., 0].mean() == pytest.approx(
      -SHIFT, abs=0.2)


def test_train_clip_flips_the_flow_stream_with_the_video():
  rng = np.random.default_rng(1)
  example = {"video": rng.integers(0, 256, (4, 6, 8, 3), dtype=np.uint8),
             "flow": rng.integers(1, 256, (4, 6, 8, 3), dtype=np.uint8),
             "label": np.int32(2), "video_id": "v"}
  spec = ops.ClipSpec(frames=4, stride=1, sampling="dense", flip=True)
  flips = set()
  for seed in range(12):
    out = ops.train_clip(example, np.random.default_rng(seed), spec, streams=("flow",))
    flipped = not np.array_equal(out["video"], example["video"])
    flips.add(flipped)
    if flipped:
      np.testing.assert_array_equal(out["video"], example["video"][:, :, ::-1])
      np.testing.assert_array_equal(out["flow"], ops.hflip(example["flow"], "flow"))
      assert not np.array_equal(out["flow"], example["flow"][:, :, ::-1])
    else:
      np.testing.assert_array_equal(out["flow"], example["flow"])
  assert flips == {True, False}


# --------------------------------------------------------------------------- prepare -> LIFT-Net

def _moving_layout(src: str, frames: int = 6) -> common.Layout:
  """infar-named layout with the InfAR split names: class 0 moves right, class 1 moves left."""
  splits = {"train1": [], "test1": []}
  for label, dx in enumerate((SHIFT, -SHIFT)):
    for n in range(3):
      rel = f"c{label}/c{label}_{n}.avi"
      os.makedirs(os.path.join(src, f"c{label}"), exist_ok=True)
      video_lib.write_video(os.path.join(src, rel),
                            _moving_frames(frames, 48, 64, dx, seed=label * 3 + n), fps=10)
      splits["train1" if n < 2 else "test1"].append(common.VideoItem(os.path.join(src, rel),
                                                                     label, rel))
  return common.Layout("infar", ["right", "left"], splits)


@pytest.fixture(scope="module")
def flow_dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("flow_data")
  layout = _moving_layout(str(root / "src"))
  out = str(root / "infar")
  manifest = prepare(layout, out, short_side=36, examples_per_shard=2, progress=False,
                     flow_settings=common.FlowSettings())
  return layout, out, manifest


def test_prepare_with_flow_writes_a_flow_stream_listed_in_the_manifest(flow_dataset, monkeypatch):
  layout, out, manifest = flow_dataset
  assert manifest["frame_shape"] == [36, 48, 3]
  assert manifest["streams"] == {"flow": [36, 48, 3]}
  assert manifest["metadata"]["flow"]["method"] == "farneback"
  assert manifest["metadata"]["flow"]["scale"] == flow.DEFAULT_SCALE
  assert records.verify(out).ok
  for path, _ in records.split_files(records.load_manifest(out), out, "train1"):
    for data in records.iter_tfrecord(path):
      example = records.decode_example(data)
      assert example["flow"].shape == example["video"].shape == (6, 36, 48, 3)
      mean_x = _interior(flow.decode_flow(example["flow"]), 6)[..., 0].mean()
      # 2 px at 64 wide, resized to 48: 1.5 px per frame (MPEG-4 compressed)
      assert mean_x == pytest.approx(1.5 if example["label"] == 0 else -1.5, abs=0.35)
  # Resumable: the same options skip every verified shard; other flow options are refused.
  calls = []
  monkeypatch.setattr(common, "decode_video", lambda *a, **k: calls.append(a) or 1 / 0)
  again = prepare(layout, out, short_side=36, examples_per_shard=2, progress=False,
                  flow_settings=common.FlowSettings())
  assert calls == [] and again["streams"] == manifest["streams"]
  with pytest.raises(common.PrepareError, match="what differs: --flow / --flow-method"):
    prepare(layout, out, short_side=36, examples_per_shard=2, progress=False)
  with pytest.raises(common.PrepareError, match="what differs: --flow / --flow-method"):
    prepare(layout, out, short_side=36, examples_per_shard=2, progress=False,
            flow_settings=common.FlowSettings(scale=4.0))
  with open(os.path.join(out, common.STATE_FILE)) as file:
    assert all(e["stream_shapes"] == {"flow": [[36, 48, 3]]}
               for e in json.load(file)["shards"].values())


def test_prepare_cli_flow_options():
  base = ["--dataset", "infar", "--src", "s", "--out", "o"]
  assert prepare_cli.flow_settings(prepare_cli.parse_args(base)) is None
  settings = prepare_cli.flow_settings(prepare_cli.parse_args(base + ["--flow"]))
  assert settings == common.FlowSettings("farneback", flow.DEFAULT_SCALE)
  settings = prepare_cli.flow_settings(prepare_cli.parse_args(
      base + ["--flow", "--flow-method", "tvl1", "--flow-scale", "4"]))
  assert settings == common.FlowSettings("tvl1", 4.0)
  settings = prepare_cli.flow_settings(prepare_cli.parse_args(base + ["--flow", "--flow-method",
                                                                      "dis"]))
  assert settings == common.FlowSettings("dis", flow.DEFAULT_SCALE)
  with pytest.raises(SystemExit):
    prepare_cli.parse_args(base + ["--flow-scale", "4"])  # without --flow


def test_lift_infar_config_with_flow_input_consumes_a_prepared_batch(flow_dataset):
  _, out, _ = flow_dataset
  config = lift_infar.get_config(f"runlocal,data_dir={out}")
  assert config.lift.luminous_input == "flow" and tuple(config.input.streams) == ("flow",)
  task = lift_trainer.Task(config)
  batch = next(iter(task.data.train_dataset(2)))
  assert batch["flow"].shape == batch["video"].shape == (2, 8, 32, 32, 3)
  assert batch["flow"].dtype == np.uint8
  # Jitted, as the train step runs it (op by op it compiles each augmentation operation).
  dark, bright, _, _ = jax.jit(task.inputs.train_inputs)(batch, jax.random.key(0))
  assert dark.shape == bright.shape == (2, 8, 32, 32, 3)
  assert np.isfinite(np.asarray(bright)).all() and np.abs(np.asarray(bright)).max() <= 1.0
  variables = jax.eval_shape(task.init_variables, jax.random.key(0), batch)
  assert "luminous" in variables["params"] and "pvit" in variables["params"]


# -------------------------------------------------------------------- LIFT-Net affine augmentation

def test_rotation_by_90_degrees_maps_a_known_pixel():
  image = np.zeros((1, 8, 8, 1), np.float32)
  image[0, 1, 6, 0] = 200.0  # row 1, column 6: up and to the right of the centre (3.5, 3.5)
  matrix = video_augment.affine_matrix(jnp.array(1.0), jnp.array(90.0), jnp.array(0.0))
  out = np.rint(np.asarray(video_augment.warp_affine(jnp.asarray(image), matrix, jnp.zeros(2))))
  assert np.argwhere(out[0, ..., 0] > 0).tolist() == [[1, 1]]  # counter-clockwise: up and left
  assert out.max() == 200.0
  textured = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
  rotated = video_augment.warp_affine(jnp.asarray(textured), matrix, jnp.zeros(2))
  np.testing.assert_array_equal(np.rint(rotated), np.rot90(textured, 1, axes=(1, 2)))
  # Shear: a row d pixels below the centre moves tan(shear) * d to the right; shift adds on.
  sheared = video_augment.affine_matrix(jnp.array(1.0), jnp.array(0.0), jnp.array(45.0))
  dot = np.zeros((1, 9, 9, 1), np.float32)
  dot[0, 6, 4, 0] = 100.0  # 2 rows below the centre (4, 4)
  out = np.rint(np.asarray(video_augment.warp_affine(jnp.asarray(dot), sheared,
                                                    jnp.array([1.0, -1.0]))))
  assert np.argwhere(out[0, ..., 0] > 0).tolist() == [[5, 7]]


def test_rotation_turns_flow_vectors_and_fills_the_border_with_zero_motion():
  # +2 px/frame to the right (x = 128 + 16), after a 90 degree counter-clockwise turn: upwards.
  right = jnp.asarray(flow.encode_flow(np.tile([2.0, 0.0], (1, 2, 6, 6, 1))), jnp.float32)
  matrix = video_augment.affine_matrix(jnp.array(1.0), jnp.array(90.0), jnp.array(0.0))
  warped = video_augment.warp_affine(right[0] - 128, matrix, jnp.zeros(2))
  turned = np.asarray(video_augment.transform_flow_vectors(warped, matrix)) + 128
  np.testing.assert_allclose(turned, np.broadcast_to([128.0, 112.0, 144.0], turned.shape),
                             atol=1e-3)
  shifted = video_augment.warp_affine(right[0] - 128, jnp.eye(2), jnp.array([3.0, 0.0])) + 128
  np.testing.assert_allclose(shifted[:, :, :3], 128.0)  # uncovered pixels: zero motion
  np.testing.assert_allclose(shifted[:, :, 3:], right[0, :, :, 3:])


def test_augment_rotation_and_shear_keep_streams_aligned_and_flow_consistent():
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.integers(0, 256, (3, 2, 16, 16, 3)), jnp.uint8)
  moving = jnp.asarray(flow.encode_flow(np.tile([2.0, 0.0], (3, 2, 16, 16, 1))))
  labels = jnp.arange(3)
  cfg = augment_block(rotation=30.0).to_dict()
  out, _, _ = video_augment.augment({"video": video, "ir": video, "flow": moving}, labels,
                                   jax.random.key(1), cfg)
  np.testing.assert_array_equal(out["video"], out["ir"])
  assert not np.array_equal(out["video"], video)
  centre = flow.decode_flow(np.asarray(out["flow"])[:, :, 6:10, 6:10])
  # A pure rotation keeps the motion's length (2 px) and turns it away from +x by the same angle
  # as the image (up to 30 degrees); the magnitude channel matches the vector.
  np.testing.assert_allclose(np.hypot(centre[..., 0], centre[..., 1]), 2.0, atol=0.15)
  np.testing.assert_allclose(centre[..., 2], 2.0, atol=0.15)
  angles = np.degrees(np.arctan2(-centre[..., 1], centre[..., 0])).mean(axis=(1, 2, 3))
  assert np.all(np.abs(angles) <= 31) and np.abs(angles).max() > 2
  sheared, _, _ = video_augment.augment({"video": video, "flow": moving}, labels,
                                       jax.random.key(1), dict(cfg, rotation=0.0, shear=20.0))
  # Shear along x leaves horizontal motion horizontal and its length unchanged.
  centre = flow.decode_flow(np.asarray(sheared["flow"])[:, :, 6:10, 6:10])
  np.testing.assert_allclose(centre[..., :3], np.broadcast_to([2.0, 0.0, 2.0], centre.shape),
                             atol=0.15)
  assert not np.array_equal(sheared["video"], video)


def test_a_flow_stream_resized_with_the_video_resizes_its_vectors():
  """A flow stream stored at the prepared frame size and resized with the video (a config reading
  another short side, a fixed resize) scales x and y by the width's and height's factors: a
  translation of 2 pixels per frame is 4 on a grid twice as wide."""
  shift = np.zeros((2, 4, 6, 2), np.float32)
  shift[..., 0], shift[..., 1] = 2.0, -1.0
  stored = flow.encode_flow(shift)
  resized = ops.resize_stream(stored, (12, 12), flow.STREAM)   # height x 3, width x 2
  vectors = flow.decode_flow(resized)
  np.testing.assert_allclose(vectors[..., 0], 4.0, atol=0.1)
  np.testing.assert_allclose(vectors[..., 1], -3.0, atol=0.1)
  np.testing.assert_allclose(vectors[..., 2], np.hypot(4.0, 3.0), atol=0.1)
  video = np.full((2, 4, 6, 3), 77, np.uint8)   # another stream keeps its values
  np.testing.assert_array_equal(ops.resize_stream(video, (12, 12), "video"), 77)
  # In a training clip: the video resized to (8, 12), the stored flow with it.
  spec = ops.ClipSpec(frames=2, resize=(8, 12), flip=False)
  example = {"video": np.zeros((2, 4, 6, 3), np.uint8), "flow": stored, "label": 0}
  clip = ops.train_clip(example, np.random.default_rng(0), spec, (flow.STREAM,))
  decoded = flow.decode_flow(clip["flow"])
  assert decoded.shape == (2, 8, 12, 3)
  np.testing.assert_allclose(decoded[..., 0], 4.0, atol=0.1)
  np.testing.assert_allclose(decoded[..., 1], -2.0, atol=0.1)
