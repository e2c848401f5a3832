"""Predict's checkpoint path: the config's Task with a run's restored variables, through JAX.

`Predictor(config, workdir)` builds the config's Task (`darkjax.task.load_task`: the model and
on-device preprocessing of training and evaluation), restores the deployed phase's checkpoint,
derives the run's `predict_host.VideoInputs` from the Task and the dataset manifest (the same
settings export records in export.json) and scores a video's views with `task.predict`. See
`darkjax.tools.predict` for the command.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import capabilities, paths
from darkjax import config as config_lib
from darkjax import task as task_lib
from darkjax import variables as variables_lib
from darkjax.convert import io as convert_io
from darkjax.data import flow, ops, records
from darkjax.tools import predict_host
from darkjax.tools.predict_host import PredictError


# Fields in which the config given to predict may differ from the one that trained the run: the
# schedule, optimiser, batching, input workers, data location, memory and compile choices,
# logging, the number of eval views averaged (more views of a video are a prediction's own
# choice) and every dataset block's location and parts (3D-DiNet's target's too). Every other
# field (the trainer and its paper's settings, the model, the clip, stream and normalisation
# settings) must agree.
_RUN_ONLY = re.compile(
    r"^(accum_steps|async_checkpoints|batch_rounding|checkpoint_every|compilation_cache|"
    r"compute_dtype|conv_lowering|device_memory_gib|eval_every|evals|fit|fit_applied|"
    r"keep_checkpoints|label_smoothing|log_every|mesh|model_init|model_load|optimizer|profile|"
    r"progress_bar|required_weights|seed|sharding|total_epochs|total_steps|xla_opt_level)(\.|$)"
    r"|^input\.(batch_size|batch_size_requested|batch_parts|eval_batch_size|"
    r"eval_batch_size_requested|"
    r"cores_per_device|cycle_length|prefetch|shuffle_window|workers|train_crop|flip|"
    r"eval_clips|eval_crops)(\.|$)"
    r"|(^|\.)data\.(dir|generate|split|split_index|eval_split)(\.|$)"
    r"|(^|\.)remat$")


def run_config(workdir: str, spec: str | None = None) -> mlc.ConfigDict:
  """The config of the run in `workdir` (a directory or URL): `spec` (a config file[:args]) if
  given, checked against the run's own (`check_same_run`: predict and export alike), else the
  `config.json` of the run or of its deployed phase's sub-directory."""
  if not paths.resolve(workdir).is_dir():
    raise PredictError(f"{workdir} does not exist or is no directory: give the directory of a "
                       "darkjax run (the --workdir darkjax.main trained in)")
  if spec:
    config = config_lib.load(spec)
    check_same_run(config, workdir, spec)
    return config
  saved = saved_run_config(workdir)
  if saved is None:
    raise PredictError(f"{workdir} holds no config.json of a darkjax run (neither in it nor in a "
                       "phase sub-directory); pass --config configs/x.py[:args]")
  return saved


def saved_run_config(workdir: str) -> mlc.ConfigDict | None:
  """The `config.json` of the deployed phase of the run in `workdir` (None if there is none)."""
  root = paths.resolve(workdir)
  candidates = [root] + (sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else [])
  for directory in candidates:
    path = directory / "config.json"
    if not path.is_file():
      continue
    config = mlc.ConfigDict(json.loads(path.read_text(encoding="utf-8")))
    deployed = task_lib.deployed_workdir(config, workdir)
    if os.path.normpath(str(paths.resolve(deployed))) == os.path.normpath(str(directory)):
      return config
  return None


def check_same_run(config: mlc.ConfigDict, workdir: str, spec: str) -> None:
  """Raises unless `config` (from `--config spec`) predicts as the config that trained the run in
  `workdir` would: the same fields, `_RUN_ONLY` aside (a run without config.json: not checked)."""
  saved = saved_run_config(workdir)
  if saved is None:
    return
  phase_config = task_lib.deployed_phase(config).config(config)
  changed = {k: v for k, v in config_lib.differences(
      config_lib.flat(config_lib.json_values(saved)),
      config_lib.flat(config_lib.json_values(phase_config))).items() if not _RUN_ONLY.search(k)}
  if changed:
    lines = [f"  {key}: {was!r} (the run) vs {now!r} (--config)"
             for key, (was, now) in changed.items()]
    raise PredictError(f"--config {spec} is not the config that trained the run in {workdir}, "
                       f"and would predict differently:\n" + config_lib.listed(lines)
                       + "\nDrop --config to use the run's own config.json (or give the config "
                         "file and args that trained it).")


def dataset_manifest(config: mlc.ConfigDict) -> dict[str, Any] | None:
  directory = config.input.data.dir or ""
  if directory and (paths.resolve(directory) / records.MANIFEST).is_file():
    return records.load_manifest(directory)
  return None


def class_names(config: mlc.ConfigDict, manifest: dict[str, Any] | None,
                classes: str | None) -> list[str]:
  if classes:
    names = [c.strip() for c in classes.split(",") if c.strip()]
    if manifest is not None and len(names) != manifest["num_classes"]:
      raise PredictError(f"--classes gives {len(names)} names, the dataset manifest in "
                         f"{config.input.data.dir} has {manifest['num_classes']}")
    return names
  if manifest is None:
    raise PredictError(f"dataset directory {config.input.data.dir!r} of the config has no "
                       f"{records.MANIFEST}; pass the class names with --classes a,b,c")
  return list(manifest["class_names"])


def restore_variables(checkpoint_dir: str, step: int | None = None) -> tuple[dict, int]:
  """{"params": ..., <model_state collections>...} of a darkjax checkpoint, and its step."""
  if not (paths.resolve(checkpoint_dir) / "checkpoints").is_dir():
    raise PredictError(f"{paths.resolve(checkpoint_dir) / 'checkpoints'} does not exist; "
                       "give a training run's WORKDIR (predict's --checkpoint, export's --workdir)")
  try:
    variables, meta = convert_io.load_run_variables(checkpoint_dir, step)
  except (FileNotFoundError, convert_io.CheckpointReadError) as error:
    raise PredictError(str(error)) from None
  return variables, int(meta["step"])


def video_inputs(task: Any, manifest: dict[str, Any] | None) -> predict_host.VideoInputs:
  """How `task` sees a video file: its clip spec, the prepared dataset's resolution, frame rate
  and flow settings (defaults without a manifest), and the streams the Task computes per view."""
  meta = (manifest or {}).get("metadata", {})
  stored = meta.get("flow") or {}
  dataset_flow = {"method": str(stored.get("method", flow.DEFAULT_METHOD)),
                  "scale": float(stored.get("scale", flow.DEFAULT_SCALE))}
  record_streams = {name: dict(dataset_flow) if name == flow.STREAM else None
                    for name in task.data.streams}
  view_streams = (dict(task.computed_stream_settings)
                  if isinstance(task, capabilities.ComputesStreams) else {})
  return predict_host.VideoInputs(task.data.spec, int(meta.get("short_side") or 0),
                                  float(meta.get("resampled_fps") or 0.0), record_streams,
                                  view_streams, clip_channels(task, manifest),
                                  float((manifest or {}).get("fps") or 0.0))


def stream_shapes(manifest: dict[str, Any] | None) -> dict[str, list[int] | None]:
  """Per record stream (`video` too) the (H, W, C) the dataset manifest gives, as
  `prepared.Dataset.frame_shapes` does; {} without a manifest."""
  if manifest is None:
    return {}
  return {"video": manifest.get("frame_shape"), **manifest.get("streams", {})}


def clip_channels(task: Any, manifest: dict[str, Any] | None) -> int:
  """Channels of the clip the model reads: those of the record stream the config feeds it
  (`config.input.stream`: `video`, or e.g. the synthetic set's 1-channel `ir`) in the dataset
  manifest; 3 without one."""
  stream = getattr(task.data, "video_stream", "video")
  shapes = stream_shapes(manifest)
  return int((shapes.get(stream) or [0, 0, 3])[-1])


def sample_inputs(task: Any, manifest: dict[str, Any] | None = None
                  ) -> dict[str, jax.ShapeDtypeStruct]:
  """One clip (batch 1, uint8) of every stream `task`'s model reads, at the size its eval views
  have (`view_hw`); channels from the dataset `manifest` (3 without one)."""
  spec = task.data.spec
  hw = view_hw(task, manifest)
  shapes = (manifest or {}).get("streams", {})
  channels = clip_channels(task, manifest)
  sample = {"video": jax.ShapeDtypeStruct((1, spec.frames, *hw, channels), jnp.uint8)}
  for name in task.data.streams:
    depth = (shapes.get(name) or [0, 0, 3])[-1]
    sample[name] = jax.ShapeDtypeStruct((1, spec.frames, *hw, depth), jnp.uint8)
  computed = task.computed_streams if isinstance(task, capabilities.ComputesStreams) else ()
  for name in computed:   # e.g. two-stream flow computed on the host
    sample[name] = jax.ShapeDtypeStruct((1, spec.frames, *hw, 3), jnp.uint8)
  return sample


def view_hw(task: Any, manifest: dict[str, Any] | None) -> tuple[int, int]:
  """(H, W) of the eval views the run was trained and evaluated on: the config's crop, else its
  dataset's frames (the manifest's) as the clip spec resizes them; without a manifest, square at
  the spec's short side (32 without one)."""
  spec = task.data.spec
  if spec.crop_size:
    return spec.crop_size, spec.crop_size
  stream = getattr(task.data, "video_stream", "video")
  shapes = stream_shapes(manifest)
  if shapes.get(stream):
    return ops.resized_frame_hw(shapes[stream][:2], spec)
  if spec.resize[0]:
    return int(spec.resize[0]), int(spec.resize[1])
  return (spec.short_side or 32,) * 2


class Predictor:
  """The config's Task + restored variables + its eval views of video files."""

  def __init__(self, config: mlc.ConfigDict, checkpoint_dir: str, classes: str | None = None,
               step: int | None = None):
    self.config = config
    self.manifest = dataset_manifest(config)
    self.class_names = class_names(config, self.manifest, classes)
    self.task = task_lib.load_task(config, num_classes=len(self.class_names))
    self.video_inputs = video_inputs(self.task, self.manifest)
    workdir = task_lib.deployed_workdir(config, checkpoint_dir)
    self.variables, self.step = restore_variables(workdir, step)
    expected = jax.eval_shape(self.task.init_variables, jax.random.key(0), self.sample_inputs())
    try:
      variables_lib.check_fits(dict(expected), self.variables, f"checkpoint {workdir} step "
                               f"{self.step}", PredictError)
    except PredictError as error:
      if classes and self.manifest is None:   # the class count is the user's, not a manifest's
        raise PredictError(f"{error} (--classes gives {len(self.class_names)} names: the "
                           f"run's classifier may have another count)") from None
      raise
    self._predict = jax.jit(self.task.predict)
    self._enhance = (jax.jit(self.task.enhance)
                     if isinstance(self.task, capabilities.Enhances) else None)

  def sample_inputs(self) -> dict[str, jax.ShapeDtypeStruct]:
    """One clip of every stream the model reads, at the size the eval views have."""
    return sample_inputs(self.task, self.manifest)

  def predict(self, path: str) -> dict[str, Any]:
    streams = self.video_inputs.views(path)
    logits = self.logits(path, streams)
    enhanced = None
    if self._enhance is not None:
      enhanced = np.asarray(self._enhance(self.variables, streams["video"][:1])[0], np.float32)
    return predict_host.summarise(path, streams["video"], logits, self.class_names, enhanced,
                                  streams)

  def timeline(self, path: str, every_s: float, window_s: float = 0.0) -> dict[str, Any]:
    """`predict_host.timeline` of the run's model over `path`."""
    return predict_host.timeline(path, self.video_inputs, lambda s: self.logits(path, s),
                                 self.class_names, every_s, window_s)

  def logits(self, path: str, streams: dict[str, np.ndarray]) -> np.ndarray:
    """(V, classes) float32 logits of `path`'s uint8 views, checked against the run's sizes."""
    for name, sample in self.sample_inputs().items():
      if tuple(streams[name].shape[1:]) != tuple(sample.shape[1:]):
        # The model was trained on views of one size (its crop, or its dataset's frames): another
        # size would fail inside the model, or be classified at a scale it never saw.
        raise PredictError(
            f"{path}: its {name!r} views are {list(streams[name].shape[1:])}, the run was trained "
            f"on {list(sample.shape[1:])} (T, H, W, C); its config keeps the file's frame size "
            f"(input.short_side and input.crop_size 0): resize the video to the dataset's "
            f"frames, or train with a crop")
    return np.asarray(self._predict(self.variables, streams), np.float32)
