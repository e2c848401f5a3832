"""Export a trained run's inference function as serialized StableHLO or ONNX.

  python -m darkjax.tools.export --workdir RUN [--format stablehlo|onnx] --out DIR \
      [--step N] [--classes a,b,c] [--config configs/x.py:args]

The function exported is the run's deployed model as `darkjax.tools.predict` uses it (the Task's
`predict`: its input normalisation and, for runs in phases, the deployed phase: LIFT-Net's student,
DTCM's classifier / joint phase, 3D-DiNet's target-domain path) with the checkpoint's variables
baked in as constants: uint8 clips (B, T, H, W, C), one input per record stream the model reads
("video", then e.g. "flow"), -> float32 logits (B, classes). The batch size B is symbolic. The run's
config is read from RUN's `config.json` (or from the deployed phase's sub-directory), unless
`--config` names the config file.

DIR receives `export.json` (class names, each input's clip shape and dtype, the eval views a video
takes, the format, and `video_inputs`: how a video file becomes those inputs, i.e. decoding,
sampling, crops and the streams computed on the host, so that `python -m darkjax.tools.predict
--model DIR/model.onnx VIDEO` needs neither the config nor the checkpoint) and
  stablehlo  `model.stablehlo`: `jax.export` serialization, reloadable without darkjax:
             `jax.export.deserialize(open(p, "rb").read()).call(clips)`. Traced inside
             `darkjax.layers.conv.native_lowering()`: XLA's native convolutions and pooling
             (native 3D convs run slower on CPU than the training lowerings, and faster on GPU /
             TPU).
  onnx       `model.onnx` via jax2onnx (`pip install -e '.[onnx]'`, jax2onnx 0.17.1), the same
             metadata in its `metadata_props`. Traced inside `conv.export_lowering()`: forms that
             jax2onnx converts and that compute the trained function (each tested equal to it):
             3D convolutions as one 2D convolution over the frames with the temporal taps on the
             channel axis ((k, 1, 1) kernels as a matmul), max pools as strided-slice maxima,
             inference BatchNorm as a multiply-add, the `nn.scan` stages of ResNet3D / ResNeXt3D
             and LIFT-Net unrolled over their stacked parameters, DTCM's average pools as a
             reshape and mean, LIFT-Net's 2D FFT as DFT matrix products. Every zoo family
             (small3d, C3D, ResNet3D-18 / 50, ResNeXt3D-101, R3D / MC3 / R(2+1)D-18, R(2+1)D-34,
             ViT) and each paper's deployed model (3D-DiNet, DTCM's enhancer + classifier,
             LIFT-Net's student, the two-stream model with flow as an input, ActLumos's student)
             converts. An op jax2onnx cannot convert fails with the model and the op named
             (ExportError).
Neither format reads the host (platform, core count, the CPU lowering choices): tracing records
only portable lowerings (`conv.PORTABLE_LOWERINGS`). tests/test_export.py checks the ONNX of every
model above (the zoo at its depth, narrowed) through onnxruntime and the StableHLO of a tiny
variant of each zoo family and of each paper's deployed model against the JAX logits to 1e-4 with
a symbolic batch, and that the bytes of both are the same on every forced host for ResNeXt3D,
R(2+1)D and DTCM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import json
import logging
import os
import re
import sys
import traceback
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from darkjax import config as config_lib
from darkjax import file_state, paths
from darkjax.layers import conv
from darkjax.tools import predict_checkpoint, predict_host
# export.json's name and the StableHLO reader are predict's, which reads what export writes.
from darkjax.tools.predict_exported import METADATA, load_stablehlo  # noqa: F401

FORMATS = ("stablehlo", "onnx")
FILENAMES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}


class ExportError(RuntimeError):
  """The model cannot be exported as asked; the message names the model, format and op."""


# ================================================================ the function
def inference_function(task: Any, variables: Any, inputs: Sequence[str]) -> Callable:
  """`(*uint8 clips) -> float32 logits`: `task.predict` with `variables` as constants; one
  positional clip per name in `inputs` ("video" first)."""
  variables = jax.tree.map(jnp.asarray, variables)

  def infer(*clips):
    logits = task.predict(variables, dict(zip(inputs, clips)))
    return logits.astype(jnp.float32)
  return infer


def describe(class_names: Sequence[str], sample: dict[str, jax.ShapeDtypeStruct],
             model_name: str, config: mlc.ConfigDict | None = None,
             video_inputs: predict_host.VideoInputs | None = None) -> dict[str, Any]:
  """What export.json (and the ONNX metadata) record: the model's inputs and output, the class
  names and, with `video_inputs`, everything else predict needs to make a video's inputs without
  the config (`predict_host.VideoInputs.to_json`: decoding, eval views, host-computed streams)."""
  meta = {"model": model_name, "class_names": list(class_names),
          "inputs": [{"name": name, "shape": ["batch", *map(int, spec.shape[1:])],
                      "dtype": str(np.dtype(spec.dtype))} for name, spec in sample.items()],
          "output": {"name": "logits", "shape": ["batch", len(class_names)], "dtype": "float32"}}
  if config is not None:
    meta["views_per_video"] = {"clips": int(config.input.eval_clips),
                               "crops": int(config.input.eval_crops),
                               "combine": "mean of the views' softmax probabilities"}
  if video_inputs is not None:
    meta["video_inputs"] = video_inputs.to_json()
  return meta


def _symbolic(sample: dict[str, jax.ShapeDtypeStruct]) -> list[jax.ShapeDtypeStruct]:
  batch = jax.export.symbolic_shape("batch")[0]
  return [jax.ShapeDtypeStruct((batch, *spec.shape[1:]), spec.dtype) for spec in sample.values()]


# ================================================================ StableHLO
def export_stablehlo(fn: Callable, sample: dict[str, jax.ShapeDtypeStruct], model_name: str
                     ) -> bytes:
  """Serialized `jax.export` of `fn` with a symbolic batch and native convolutions."""
  with conv.native_lowering():
    try:   # a fresh function, so no trace cached outside the block is reused
      exported = jax.export.export(jax.jit(lambda *clips: fn(*clips)))(*_symbolic(sample))
    except Exception as error:  # pylint: disable=broad-except
      raise ExportError(f"model {model_name}: StableHLO export failed: "
                        f"{type(error).__name__}: {error}") from error
  return bytes(exported.serialize())


# ================================================================ ONNX
def _failing_op(error: BaseException) -> str:
  """Where the ONNX conversion failed, from the traceback: the jax2onnx plugin (named after the
  JAX op it converts), else the library call in which tracing failed and the model line that
  made it (e.g. flax's nn.scan from a stacked-blocks layer)."""
  frames = [(f.filename.replace(os.sep, "/"), f.lineno, f.name)
            for f in traceback.extract_tb(error.__traceback__)]
  for path, _, name in reversed(frames):
    if "/jax2onnx/plugins/" in path:
      plugin = path.split("/jax2onnx/plugins/", 1)[1].removesuffix(".py")
      if plugin not in ("plugin_system", "_patching"):
        return f"{plugin.replace('/', '.')} (jax2onnx plugin, in {name})"
  model = [i for i, (path, _, _) in enumerate(frames) if "/darkjax/" in path]
  plugin = re.search(r"\b(\w+)Plugin\b", str(error))   # a plugin's patched call that failed
  if model:
    path, line, _ = frames[model[-1]]
    where = f"{path.split('/darkjax/', 1)[1]}:{line}"
    if plugin:
      return f"{plugin.group(1)} (jax2onnx {plugin.group(0)}) called from darkjax/{where}"
    inner = frames[model[-1] + 1:]
    if inner:
      lib_path, _, lib_name = inner[-1]
      library = lib_path.split("site-packages/", 1)[-1]
      return f"{library}:{lib_name} called from darkjax/{where}"
    return f"darkjax/{where}"
  return "unknown (see the error below)"


def _unsupported_primitives(fn: Callable, sample: dict[str, jax.ShapeDtypeStruct]) -> list[str]:
  """Primitives of `fn`'s jaxpr that jax2onnx has no plugin for."""
  from jax2onnx.plugins import plugin_system  # pylint: disable=import-outside-toplevel
  plugin_system.import_all_plugins()
  known = set(plugin_system.PLUGIN_REGISTRY)
  seen: set[str] = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      seen.add(eqn.primitive.name)
      for param in eqn.params.values():
        for sub in (param if isinstance(param, (tuple, list)) else (param,)):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)
  walk(jax.make_jaxpr(fn)(*sample.values()).jaxpr)
  structural = {"pjit", "jit", "custom_jvp_call", "custom_vjp_call", "closed_call"}
  return sorted(p for p in seen - known - structural)


@contextlib.contextmanager
def _quiet_plugin_imports():
  """Warnings of the converter that say nothing about the model, not shown: jax2onnx imports
  every plugin it ships on first use and logs a traceback for each whose package is absent (its
  equinox and dm_pix examples, which darkjax's models never need), and onnx_ir notes each untyped
  shape value of the symbolic batch's shape arithmetic it leaves out of the file (the written
  model runs in onnxruntime: tests/test_export.py)."""
  loggers = [logging.getLogger(n) for n in ("jax2onnx.plugins.plugin_system", "onnx_ir.serde")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


# What ONNX export needs installed, as README's ONNX section installs it (jax2onnx without its
# dependencies: its metadata pins an older orbax-checkpoint than darkjax's).
ONNX_INSTALL = "pip install -e '.[onnx]' && pip install --no-deps jax2onnx==0.17.1"


def require_onnx() -> None:
  """Raises ExportError with the install command unless jax2onnx and onnx can be imported."""
  missing = [name for name in ("jax2onnx", "onnx") if importlib.util.find_spec(name) is None]
  if missing:
    raise ExportError(f"ONNX export needs {' and '.join(missing)} (not installed): "
                      f"{ONNX_INSTALL}")


def export_onnx(fn: Callable, sample: dict[str, jax.ShapeDtypeStruct], model_name: str,
                metadata: dict[str, Any] | None = None):
  """ONNX ModelProto of `fn` (symbolic batch "batch"); ExportError names the model and the op."""
  require_onnx()
  import jax2onnx  # pylint: disable=import-outside-toplevel
  shapes = _symbolic(sample)   # uint8 inputs with a symbolic batch
  with conv.export_lowering(), _quiet_plugin_imports():   # the export forms: host-independent
    try:
      proto = jax2onnx.to_onnx(lambda *clips: fn(*clips), shapes, model_name=model_name,
                               input_names=list(sample), output_names=["logits"])
    except Exception as error:  # pylint: disable=broad-except
      try:
        missing = _unsupported_primitives(fn, sample)
      except Exception:  # pylint: disable=broad-except
        missing = []
      if missing:
        raise ExportError(f"model {model_name}: ONNX export: jax2onnx has no conversion for the "
                          f"op(s) {missing}; use --format stablehlo") from error
      raise ExportError(f"model {model_name}: ONNX export failed at op {_failing_op(error)}: "
                        f"{type(error).__name__}: {str(error)[:500]}; use --format stablehlo"
                        ) from error
  for key, value in (metadata or {}).items():
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, json.dumps(value)
  return proto


# ================================================================ a run's export
def export_run(workdir: str, out_dir: str, fmt: str = "stablehlo", step: int | None = None,
               classes: str | None = None, config_spec: str | None = None) -> str:
  """Writes DIR/model.<format> and DIR/export.json for the run in `workdir`; returns the model
  file's path."""
  if fmt not in FORMATS:
    raise ExportError(f"--format {fmt!r} unknown; valid: {FORMATS}")
  if fmt == "onnx":   # before anything is read or made
    require_onnx()
  config = predict_checkpoint.run_config(workdir, config_spec)
  why = paths.cannot_write(out_dir)   # before the model is read and traced: a bad --out at once
  if why:
    raise ExportError(f"--out {out_dir} cannot be made a directory ({why}); give a directory "
                      "path or URL you can write to")
  predictor = predict_checkpoint.Predictor(config, workdir, classes, step)
  sample = predictor.sample_inputs()
  model_name = str(config.model.name)
  fn = inference_function(predictor.task, predictor.variables, list(sample))
  meta = describe(predictor.class_names, sample, model_name, config, predictor.video_inputs)
  meta.update({"format": fmt, "step": predictor.step, "trainer": str(config.trainer)})
  path = os.path.join(out_dir, FILENAMES[fmt])
  if fmt == "stablehlo":
    blob = export_stablehlo(fn, sample, model_name)
  else:
    blob = export_onnx(fn, sample, model_name, meta).SerializeToString()
  made = not paths.resolve(out_dir).exists()
  writing = path
  try:   # made only now: a checkpoint or step that fails above leaves no empty --out
    paths.resolve(out_dir).mkdir(parents=True, exist_ok=True)
    paths.write_bytes_atomic(path, blob)
    writing = os.path.join(out_dir, METADATA)
    file_state.atomic_write_json(writing, meta, sort_keys=True)
  except OSError as error:
    # No half export: a model without its export.json is none predict can read.
    with contextlib.suppress(OSError):
      if writing != path:
        paths.resolve(path).unlink()
      if made:
        paths.resolve(out_dir).rmdir()
    advice = ("free space on that disk, or give an --out on another" if error.errno in (
        errno.ENOSPC, errno.EDQUOT) else "give a directory you can write to")
    raise ExportError(f"--out {out_dir}: {error.strerror or error} while writing {writing}; "
                      f"nothing of this export is kept; {advice}") from None
  return path


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="training WORKDIR of the run")
  parser.add_argument("--format", default="stablehlo", choices=FORMATS)
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--classes", default=None, help="comma-separated class names (when the "
                      "run's dataset directory is not at hand)")
  parser.add_argument("--config", default=None, help="config file[:args] (default: the run's "
                      "config.json)")
  args = parser.parse_args(argv)
  try:
    path = export_run(args.workdir, args.out, args.format, args.step, args.classes, args.config)
  except (ExportError, predict_host.PredictError, config_lib.ConfigError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"wrote {path} and {os.path.join(args.out, METADATA)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
