"""Two-stream C3D with a discriminative code layer (Jiang et al., CVPRW 2017): an infrared tower and
an optical-flow tower trained together, each with L = L_c + alpha L_d (eq. 4).

Per stream s, with the p-hot target codes q (`darkjax.losses.p_hot_codes`):

    L_s = CE(logits_s, y) + alpha * mean_batch ||q_y - code_s||^2        (eqs. 4-7)
    L   = sum_s L_s

The towers share no parameter, so training them in one model is training the paper's IR net and
flow net side by side (the gradient of L_s reaches only tower s). With `twostream.dcl = False` the
towers have no DC layer and L_s = CE (the paper's "net without DCL").

Inputs (`config.input`): the IR frames are the record stream `input.stream` (InfAR: the prepared
`video`; the synthetic set: `ir`), normalised by `input.normalise` and brought to 3 channels on
device (1-channel IR is repeated, as C3D's Sports-1M weights read three channels). The flow clip is
  `twostream.flow_source = "stream"`: the `flow` record stream of `python -m darkjax.data.prepare
      ... --flow` (listed in `input.streams`), computed by `twostream.flow_method` (checked against
      the dataset's manifest); a dataset without it fails at once naming the flag;
  `twostream.flow_source = "compute"`: computed on the host from each sampled IR clip
      (`darkjax.data.flow.flow_clip`, `twostream.flow_method`), for data without a flow stream
      (the synthetic set).
Flow frames align with IR frames index by index: flow t is IR frame t -> t + 1, so the clip of
frames [s, s + T) reads flows [s, s + T); the last stored flow of a video repeats the one before
it, and a computed clip's last flow repeats its flow T - 2 (`darkjax.data.flow`). The stored flow
image is x, y and the magnitude, each 128 + scale * value; the tower sees the magnitude minus
`twostream.flow_magnitude_shift` (128: zero motion is 0, x and y stay centred at 128, the paper's
encoding), normalised by `twostream.flow_normalise`, cropped and flipped with the IR clip (a flip
negates flow x).

Config keys read here (see configs/twostream_base.py): `twostream.streams`, `dcl`, `alpha`,
`spare_classes`, `flow_source`, `flow_method`, `flow_scale`, `flow_normalise`,
`flow_magnitude_shift`, `tower_init.<stream>`.
Pretrained towers: `twostream.tower_init.<stream>` is a `python -m darkjax.convert --arch c3d
--num-classes 0` directory (Sports-1M C3D: loads into the tower's `c3d`) or a two-stream run's
workdir (loads that run's tower of the same stream; the other stream's tower is refused). The
tower's normalisation (`input.normalise` for ir, `twostream.flow_normalise` for flow) must be the
one the weights were trained on (their meta.json, or the run's config.json), unless
`model_load.check_normalise` is off.
"""

from __future__ import annotations

from typing import Any, Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import config as config_lib
from darkjax import losses
from darkjax import task as task_lib
from darkjax import variables as variables_lib
from darkjax.data import flow as flow_lib
from darkjax.data import prepared, normalise
from darkjax.data.classification import ClassificationData
from darkjax.evaluators import twostream_video as video_eval
from darkjax.trainers.base import TaskBase
from darkjax.config import ConfigError

FLOW_SOURCES = ("stream", "compute")


class MissingFlowStreamError(ValueError):
  """The dataset has no optical-flow record stream; the message names the `prepare` flag."""


class TowerInitError(ValueError):
  """A tower checkpoint does not fit the tower it is loaded into; the message says why."""


class FlowMethodError(ValueError):
  """The dataset's flow stream was computed by another method than the config names."""


# The config key of each tower's input normalisation.
NORMALISE_KEYS = {"ir": "input.normalise", flow_lib.STREAM: "twostream.flow_normalise"}


class _ComputeFlow(grain.transforms.Map):
  """Adds `flow`, the optical flow of each clip of `video` (host, uint8), to a batch."""

  def __init__(self, method: str, scale: float):
    self._method, self._scale = method, scale

  def map(self, element):
    element = dict(element)
    element[flow_lib.STREAM] = flow_lib.flow_clips(element["video"], self._method, self._scale)
    return element


class Task(TaskBase):
  """The two towers on `config.input`'s clips; data source "input"."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    self.ts = config.twostream
    config_lib.check_choice(config, "twostream.flow_source", FLOW_SOURCES)
    config_lib.check_choice(config, "twostream.flow_method", flow_lib.METHODS)
    flow_lib.check_method(self.ts.flow_method)   # in this OpenCV build: before a pipeline thread
    self.streams = tuple(self.ts.streams)
    unknown = [s for s in self.streams if s not in ("ir", flow_lib.STREAM)]
    if unknown:
      raise ConfigError(f"config.twostream.streams {self.streams}: unknown {unknown}; valid: "
                        f"'ir', '{flow_lib.STREAM}'")
    self.data_sources = {"input": ClassificationData(config.input, config.seed)}
    if num_classes is None and self.reads_flow_stream:
      self.check_flow_stream()
    code_size = int(config.model.kwargs.get("code_size", 0)) if self.ts.dcl else 0
    self.model = self.build_model(streams=self.streams, code_size=code_size)
    self.code_size = code_size
    self.merges_pretrained = any(self.ts.tower_init[s] for s in self.streams)

  # ---------------------------------------------------------------- data
  @property
  def reads_flow_stream(self) -> bool:
    return flow_lib.STREAM in self.streams and self.ts.flow_source == "stream"

  @property
  def computed_streams(self) -> tuple[str, ...]:
    """Streams the model reads that `host_streams` computes from the clips (not records):
    predict and export take them as inputs beside `video`."""
    if flow_lib.STREAM in self.streams and self.ts.flow_source == "compute":
      return (flow_lib.STREAM,)
    return ()

  def check_flow_stream(self) -> None:
    """flow_source='stream' needs the dataset's `flow` record stream, read by the pipeline."""
    try:
      dataset = self.data.dataset
    except prepared.DatasetNotPreparedError as error:
      raise prepared.DatasetNotPreparedError(
          f"{error}\nThe flow tower reads optical flow computed with {self.ts.flow_method!r} "
          f"(config.twostream.flow_method): add --flow --flow-method {self.ts.flow_method} to that "
          f"prepare command.") from None
    have = sorted(k for k in dataset.frame_shapes() if k != "video")
    prepare = prepared.prepare_command(dataset, "--flow", "--flow-method", self.ts.flow_method)
    if flow_lib.STREAM not in have or flow_lib.STREAM not in tuple(self.config.input.streams):
      raise MissingFlowStreamError(
          f"twostream: the flow tower reads the record stream '{flow_lib.STREAM}', which "
          f"{dataset.directory} does not have (its extra streams: {have}; config.input.streams: "
          f"{list(self.config.input.streams)}). Prepare the dataset with optical flow: "
          f"{prepare}   (or set config.twostream.flow_source='compute')")
    stored = dict(dataset.manifest.get("metadata", {}).get("flow") or {}).get("method")
    if stored is not None and stored != self.ts.flow_method:
      raise FlowMethodError(
          f"twostream: {dataset.directory}'s flow stream was computed with {stored!r}, "
          f"config.twostream.flow_method is {self.ts.flow_method!r}. Prepare it again with that "
          f"method into another directory ({prepare}), or train on the stored flow with "
          f"--config.twostream.flow_method={stored}")

  def train_dataset(self, local_batch: int):
    ds = self.data.train_dataset(local_batch)
    if self.computed_streams:
      settings = self.computed_stream_settings[flow_lib.STREAM]
      ds = ds.map(_ComputeFlow(settings["method"], settings["scale"]))
    return ds

  @property
  def computed_stream_settings(self) -> dict[str, dict[str, Any]]:
    """How `host_streams` makes each computed stream from the clips: the flow's method and scale
    (export records them, so predict from an exported model computes the same flow)."""
    return {name: {"method": str(self.ts.flow_method), "scale": float(self.ts.flow_scale)}
            for name in self.computed_streams}

  def host_streams(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host uint8 streams of clips (..., T, H, W, C) with the flow the model needs added when it
    is computed rather than read (evaluators call this before `outputs`)."""
    out = dict(streams)
    for name, settings in self.computed_stream_settings.items():
      if name not in out:
        out[name] = flow_lib.flow_clips(out["video"], settings["method"], settings["scale"])
    return out

  def model_inputs(self, streams: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """uint8 streams (`video` = IR frames, `flow`) -> the towers' float clips."""
    clips = {}
    if "ir" in self.streams:
      ir = self.data.preprocess(streams["video"], self.dtype)
      clips["ir"] = jnp.repeat(ir, 3, axis=-1) if ir.shape[-1] == 1 else ir
    if flow_lib.STREAM in self.streams:
      if flow_lib.STREAM not in streams:
        raise MissingFlowStreamError(
            f"twostream: no '{flow_lib.STREAM}' clips among the streams {sorted(streams)}")
      flow = jnp.asarray(streams[flow_lib.STREAM], jnp.float32)
      shift = float(self.ts.get("flow_magnitude_shift", 0))   # a run configured before the key: 0
      if shift:
        flow = flow.at[..., 2].add(-shift)
      clips[flow_lib.STREAM] = normalise.normalise(flow, self.flow_normalise, self.dtype,
                                                   colour=False)
    return clips

  @property
  def flow_normalise(self) -> str:
    return str(self.ts.get("flow_normalise", "flow"))   # a run configured before the key: flow

  # ---------------------------------------------------------------- model + loss
  @property
  def target_codes(self) -> np.ndarray:
    """(m, N) p-hot codes; `twostream.spare_classes` names the classes given the spare neurons."""
    names = list(self.data.dataset.class_names)
    spare = []
    for name in self.ts.spare_classes:
      if name not in names:
        raise ConfigError(f"config.twostream.spare_classes: {name!r} is not a class of "
                          f"{self.data.dataset.directory}; classes: {names}")
      spare.append(names.index(name))
    return losses.p_hot_codes(self.num_classes, self.code_size, spare or None)

  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
    batch = dict(batch)
    if flow_lib.STREAM in self.streams and flow_lib.STREAM not in batch:
      batch[flow_lib.STREAM] = jnp.zeros(batch["video"].shape[:-1] + (3,), jnp.uint8)
    return dict(self.model.init({"params": rng, "dropout": rng}, self.model_inputs(batch),
                                train=False))

  def loss_fn(self, params, model_state, batch, rng, progress):
    del progress
    (logits, out), new_state = self.model.apply(
        {"params": params, **model_state}, self.model_inputs(batch), train=True,
        rngs={"dropout": rng}, mutable=list(model_state))
    labels = batch["label"]
    codes = jnp.asarray(self.target_codes)[labels] if self.code_size else None
    loss, metrics = jnp.zeros((), jnp.float32), {}
    for stream in self.streams:
      ce = losses.softmax_cross_entropy(logits[stream], labels, self.config.label_smoothing)
      metrics[f"{stream}/ce_loss"] = ce
      metrics[f"{stream}/accuracy"] = jnp.mean(jnp.argmax(logits[stream], -1) == labels)
      loss = loss + ce
      if self.code_size:
        dcl = losses.dcl_loss(out["code"][stream], codes)
        metrics[f"{stream}/dcl_loss"] = dcl
        loss = loss + float(self.ts.alpha) * dcl
    return loss, (dict(new_state), metrics)

  # ---------------------------------------------------------------- inference
  def outputs(self, variables: Mapping[str, Any], streams: Mapping[str, jax.Array]
              ) -> dict[str, dict[str, jax.Array]]:
    """Per stream `probs` (softmax) and, with DCL, `code` of uint8 clips (jit-able)."""
    logits, out = self.model.apply(variables, self.model_inputs(streams), train=False)
    result = {}
    for stream in self.streams:
      result[stream] = {"probs": jax.nn.softmax(logits[stream].astype(jnp.float32), -1)}
      if self.code_size:
        result[stream]["code"] = out["code"][stream]
    return result

  def fusion_weights(self) -> jax.Array:
    """Late fusion 1's stream weights (flow : IR = 2 : 1 in the paper), in `streams` order."""
    weights = dict(self.ts.softmax_fusion_weights)
    return jnp.asarray([float(weights[s]) for s in self.streams], jnp.float32)

  def predict(self, variables: Mapping[str, Any], streams: Mapping[str, jax.Array],
              source: str | None = None) -> jax.Array:
    """Log of the late-fusion-1 probabilities (weighted mean of the streams' softmax)."""
    del source
    outputs = self.outputs(variables, streams)
    weights = self.fusion_weights()
    probs = sum(w * outputs[s]["probs"] for w, s in zip(weights, self.streams)) / jnp.sum(weights)
    return jnp.log(jnp.maximum(probs, 1e-12))

  # ---------------------------------------------------------------- pretrained towers
  def init_from(self, variables: dict) -> dict:
    for stream in self.streams:
      path = self.ts.tower_init[stream]
      if path:
        mode = self.config.input.normalise if stream == "ir" else self.flow_normalise
        check = (NORMALISE_KEYS[stream], mode) if config_lib.check_normalise(self.config) else None
        variables = load_tower(variables, stream, path, check)
    return variables


def load_tower(variables: Mapping[str, Any], stream: str, path: str,
               normalise_check: tuple[str, str] | None = None) -> dict:
  """`variables` with tower `stream` loaded from `path`: a converted C3D (into `<stream>/c3d`) or a
  two-stream run's workdir (its tower `stream`, whole). `normalise_check` (config key, mode):
  raises unless the weights were trained on inputs normalised in that mode."""
  from darkjax.convert import io as convert_io  # pylint: disable=import-outside-toplevel
  loaded, meta = convert_io.load_variables(path)
  source = f"config.twostream.tower_init.{stream}={path}"
  if normalise_check is not None:
    key, mode = normalise_check
    # A two-stream run's flow tower read "flow"-normalised clips before the key existed.
    recorded = convert_io.recorded_normalise(
        meta, key, run_default="flow" if key == NORMALISE_KEYS[flow_lib.STREAM] else None)
    normalise.check_pretrained(recorded, mode, key, source)
  theirs = dict(loaded["params"])
  out = {k: dict(v) for k, v in variables.items()}
  tower = {"params": dict(out["params"][stream])}
  if "conv1" in theirs:   # a headless C3D conversion (Sports-1M)
    theirs.pop("fc8", None)   # a conversion with its Sports-1M head: the head is not used
    tower = variables_lib.merge_subtree(tower, "params", "c3d", theirs, source)
  else:
    towers = sorted(k for k in theirs if isinstance(theirs[k], Mapping) and "c3d" in theirs[k])
    if stream not in towers:
      raise TowerInitError(
          f"{source}: the checkpoint holds the tower(s) {towers}, not the {stream!r} tower. A "
          f"tower trained on one stream does not initialise the other (ir reads infrared frames, "
          f"flow reads optical flow): point tower_init.{stream} at a run with a {stream!r} tower "
          f"or at a Sports-1M C3D (python -m darkjax.convert --arch c3d --num-classes 0)")
    tower = variables_lib.merge_subtree(tower, "params", None, theirs[stream], source)
  out["params"][stream] = tower["params"]
  return out


def report_tables(config: mlc.ConfigDict, results: Mapping[str, Any]) -> str:
  """The paper's Tables 2-3 (whole-video scores) for report.md."""
  return video_eval.report_tables(results, config)


PHASES = task_lib.single_phase(Task, report=report_tables)
