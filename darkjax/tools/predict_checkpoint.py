"""Predict's checkpoint path: the config's Task with a run's restored variables, through JAX.

`Predictor(config, workdir)` builds the config's Task (`darkjax.task.load_task`: the model and
on-device preprocessing of training and evaluation), restores the deployed phase's checkpoint,
derives the run's `predict_host.VideoInputs` from the Task and the dataset manifest (the same
settings export records in export.json) and scores a video's views with `task.predict`. See
`darkjax.tools.predict` for the command.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import capabilities, paths
from darkjax import task as task_lib
from darkjax import variables as variables_lib
from darkjax.convert import io as convert_io
from darkjax.data import flow, records
from darkjax.tools import predict_host
from darkjax.tools.predict_host import PredictError


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
                       "--checkpoint must be a training WORKDIR")
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
                                  view_streams)


def sample_inputs(task: Any, manifest: dict[str, Any] | None = None
                  ) -> dict[str, jax.ShapeDtypeStruct]:
  """One clip (batch 1, uint8) of every stream `task`'s model reads, at the size its eval views
  have; channels from the dataset `manifest` (3 without one)."""
  spec = task.data.spec
  size = spec.crop_size or spec.short_side or 32
  shapes = (manifest or {}).get("streams", {})
  channels = ((manifest or {}).get("frame_shape") or [0, 0, 3])[-1]
  sample = {"video": jax.ShapeDtypeStruct((1, spec.frames, size, size, channels), jnp.uint8)}
  for name in task.data.streams:
    depth = (shapes.get(name) or [0, 0, 3])[-1]
    sample[name] = jax.ShapeDtypeStruct((1, spec.frames, size, size, depth), jnp.uint8)
  computed = task.computed_streams if isinstance(task, capabilities.ComputesStreams) else ()
  for name in computed:   # e.g. two-stream flow computed on the host
    sample[name] = jax.ShapeDtypeStruct((1, spec.frames, size, size, 3), jnp.uint8)
  return sample


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
    variables_lib.check_fits(dict(expected), self.variables, f"checkpoint {workdir} step "
                             f"{self.step}", PredictError)
    self._predict = jax.jit(self.task.predict)
    self._enhance = (jax.jit(self.task.enhance)
                     if isinstance(self.task, capabilities.Enhances) else None)

  def sample_inputs(self) -> dict[str, jax.ShapeDtypeStruct]:
    """One clip of every stream the model reads, at the size the eval views have."""
    return sample_inputs(self.task, self.manifest)

  def predict(self, path: str) -> dict[str, Any]:
    streams = self.video_inputs.views(path)
    logits = np.asarray(self._predict(self.variables, streams), np.float32)
    enhanced = None
    if self._enhance is not None:
      enhanced = np.asarray(self._enhance(self.variables, streams["video"][:1])[0], np.float32)
    return predict_host.summarise(path, streams["video"], logits, self.class_names, enhanced)
