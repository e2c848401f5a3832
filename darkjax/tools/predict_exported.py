"""Predict's exported-model path: the `model.onnx` (onnxruntime) or `model.stablehlo`
(`jax.export.deserialize`) that `python -m darkjax.tools.export` writes, with the export.json
beside it; neither the config nor the checkpoint is read, and an ONNX model runs without jax.

export.json gives the class names, the model's inputs (name, clip shape, uint8) and
`video_inputs` (`predict_host.VideoInputs`: decoding, eval views, streams computed on the host),
so a video takes the same views as with the checkpoint; the model holds its input normalisation
and takes the uint8 views as they are.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from darkjax.tools import predict_host
from darkjax.tools.predict_host import PredictError

METADATA = "export.json"
FORMATS = {".onnx": "onnx", ".stablehlo": "stablehlo"}   # the model file's suffix -> its format
Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def model_format(path: str) -> str:
  """"onnx" or "stablehlo" from the model file's suffix; PredictError for any other file."""
  fmt = FORMATS.get(os.path.splitext(path)[1])
  if fmt is None:
    raise PredictError(f"{path}: --model takes the model.onnx or model.stablehlo that `python -m "
                       "darkjax.tools.export` writes (a file ending in .onnx or .stablehlo)")
  if not os.path.isfile(path):
    raise PredictError(f"{path}: file not found")
  return fmt


def load_metadata(model_path: str) -> tuple[dict[str, Any], str]:
  """The export.json beside `model_path`, and its path."""
  path = os.path.join(os.path.dirname(model_path), METADATA)
  if not os.path.isfile(path):
    raise PredictError(f"{path} not found: predict reads the class names and how to make a "
                       f"video's views from the {METADATA} that `python -m darkjax.tools.export` "
                       f"writes beside {os.path.basename(model_path)}; keep the two together")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f), path
  except json.JSONDecodeError as error:
    raise PredictError(f"{path}: not JSON ({error})") from None


def onnx_runner(path: str, input_names: list[str]) -> Runner:
  """Runs `path` in onnxruntime (no jax)."""
  try:
    import onnxruntime  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PredictError(f"{path}: running an ONNX model needs onnxruntime: "
                       "pip install -e '.[onnx]'") from None
  try:
    session = onnxruntime.InferenceSession(path,
                                           providers=onnxruntime.get_available_providers())
  except Exception as error:  # pylint: disable=broad-except   (onnxruntime's own error types)
    raise PredictError(f"{path}: onnxruntime cannot load it ({type(error).__name__}: "
                       f"{str(error)[:300]})") from None
  names = [i.name for i in session.get_inputs()]
  if sorted(names) != sorted(input_names):
    raise PredictError(f"{path} takes the inputs {names}, its {METADATA} names {input_names}: "
                       "export the run again")
  return lambda streams: session.run(None, {name: streams[name] for name in names})[0]


def load_stablehlo(path: str) -> Callable:
  """The exported function of a `model.stablehlo` (needs only jax)."""
  import jax  # pylint: disable=import-outside-toplevel   (only this format needs it)
  with open(path, "rb") as f:
    data = f.read()
  try:
    return jax.export.deserialize(bytearray(data)).call
  except Exception as error:  # pylint: disable=broad-except   (flatbuffers' and jax's own types)
    raise PredictError(f"{path}: jax cannot read it as an exported model ({type(error).__name__}: "
                       f"{str(error)[:300]}); it is damaged or cut short: export the run again"
                       ) from None


def stablehlo_runner(path: str, input_names: list[str]) -> Runner:
  """Calls `path`'s exported function with the inputs in export.json's order."""
  call = load_stablehlo(path)
  return lambda streams: np.asarray(call(*[streams[name] for name in input_names]))


class ExportedPredictor:
  """An exported model + its export.json: the same views and top-5 as `predict_checkpoint`."""

  def __init__(self, model_path: str):
    fmt = model_format(model_path)
    meta, source = load_metadata(model_path)
    self.model_path = model_path
    self.class_names = [str(c) for c in predict_host.json_key(meta, "class_names", source)]
    self.inputs = {spec["name"]: spec for spec in predict_host.json_key(meta, "inputs", source)}
    self.video_inputs = predict_host.VideoInputs.from_json(meta, source)
    if set(self.inputs) != set(self.video_inputs.inputs):
      raise PredictError(f"{source}: the model's inputs {list(self.inputs)} are not the streams "
                         f"video_inputs makes {list(self.video_inputs.inputs)}")
    runner = onnx_runner if fmt == "onnx" else stablehlo_runner
    self._run = runner(model_path, list(self.inputs))

  def _check_shapes(self, path: str, streams: Mapping[str, np.ndarray]) -> None:
    for name, spec in self.inputs.items():
      if list(streams[name].shape[1:]) != list(spec["shape"][1:]):
        raise PredictError(f"{path}: its {name!r} views are {list(streams[name].shape[1:])}, "
                           f"{self.model_path} takes {list(spec['shape'][1:])} (export.json)")

  def logits(self, streams: Mapping[str, np.ndarray]) -> np.ndarray:
    """(V, classes) float32 logits of uint8 views (`video_inputs.views`)."""
    return np.asarray(self._run(streams), np.float32)

  def predict(self, path: str) -> dict[str, Any]:
    streams = self.video_inputs.views(path)
    self._check_shapes(path, streams)
    return predict_host.summarise(path, streams["video"], self.logits(streams), self.class_names,
                                  streams=streams)

  def timeline(self, path: str, every_s: float, window_s: float = 0.0) -> dict[str, Any]:
    """`predict_host.timeline` of the exported model over `path`."""

    def logits(streams: Mapping[str, np.ndarray]) -> np.ndarray:
      self._check_shapes(path, streams)
      return self.logits(streams)

    return predict_host.timeline(path, self.video_inputs, logits, self.class_names, every_s,
                                 window_s)
