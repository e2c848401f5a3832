"""Optional capabilities of a paper's Task, as `typing.Protocol`s: what only some papers have and
some evaluators, predict and export use. Each evaluator type names the one it needs
(`darkjax.evaluators.REQUIRES`); `darkjax.task.load_task` checks them when a Task is built."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import jax
import numpy as np


@runtime_checkable
class Enhances(Protocol):
  """An enhancer in front of the classifier (DTCM): `enhance(variables, uint8 clips)` -> enhanced
  clips in [0, 1]; `title` heads the enhancement figures."""
  title: str

  def enhance(self, variables: Mapping[str, Any], clips: jax.Array) -> jax.Array: ...


@runtime_checkable
class ComputesStreams(Protocol):
  """Model inputs computed on the host from the clips rather than read from records (two-stream
  flow with flow_source=compute): `computed_streams` names them (possibly none for a config),
  `host_streams(streams)` adds them and `computed_stream_settings` says how, as export records it
  ({"flow": {"method", "scale"}}: optical flow is the one stream predict can compute); predict
  and export take them as inputs beside `video`."""
  computed_streams: tuple[str, ...]
  computed_stream_settings: Mapping[str, Mapping[str, Any]]

  def host_streams(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@runtime_checkable
class MapsAttention(Protocol):
  """`attention_maps(variables, streams)` -> {"logits", "luminous", "heat", "frame_weights"}
  per clip (LIFT-Net)."""

  def attention_maps(self, variables: Mapping[str, Any],
                     streams: Mapping[str, jax.Array]) -> dict[str, jax.Array]: ...


@runtime_checkable
class MapsFusion(Protocol):
  """`fusion_maps(variables, streams)` -> {"logits", "retinex", "w_ret"?} per clip (ActLumos)."""

  def fusion_maps(self, variables: Mapping[str, Any],
                  streams: Mapping[str, jax.Array]) -> dict[str, jax.Array]: ...


@runtime_checkable
class ScoresVideos(ComputesStreams, Protocol):
  """Per-stream outputs for whole-video scoring (two-stream C3D): `streams` (the towers),
  `code_size` (0: no discriminative code layer), `outputs(variables, streams)` -> per stream
  {"logits", "codes"?}, and the host streams of `ComputesStreams`."""
  streams: tuple[str, ...]
  code_size: int

  def outputs(self, variables: Mapping[str, Any],
              streams: Mapping[str, jax.Array]) -> dict[str, dict[str, jax.Array]]: ...
