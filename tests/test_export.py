"""darkjax.tools.export: every zoo family (tiny) and each paper's deployed model, exported as
StableHLO, reloads with a symbolic batch and gives the JAX logits to 1e-4; the CLI exports a
checkpointed run whose file is callable in a process that never imports darkjax."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dinet_synthetic, dtcm_synthetic, lift_synthetic, twostream_synthetic
from configs import synthetic as synthetic_config
from darkjax import checkpoint
from darkjax.tools import export, predict
from darkjax import task as task_lib
from run_configs import quiet

CLASSES = 5
ZOO = ("small3d_tiny", "resnet3d_tiny", "resnext3d_tiny", "c3d_tiny", "r2plus1d_tiny_test",
       "vit_tiny_test")
PAPERS = {"dinet": dinet_synthetic, "dtcm": dtcm_synthetic, "liftnet": lift_synthetic,
          "twostream": twostream_synthetic}   # two-stream: flow (computed on the host) is an input


def _config(case: str, data_dir: str):
  if case in PAPERS:
    return quiet(PAPERS[case].get_config(f"runlocal,data_dir={data_dir}"))
  return quiet(synthetic_config.get_config(f"runlocal,data_dir={data_dir}"), **{"model.name": case})


def _model(case: str, data_dir: str):
  """(task, variables, sample inputs, uint8 test clips of batch 3) of a case, without a dataset."""
  task = task_lib.load_task(_config(case, data_dir), num_classes=CLASSES)
  sample = predict.sample_inputs(task)
  zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in sample.items()}
  variables = jax.device_get(jax.jit(task.init_variables)(jax.random.key(3), zeros))
  rng = np.random.default_rng(0)
  # Dark clips, as the models see them: values in the low part of the range.
  clips = {k: rng.integers(0, 60, (3,) + v.shape[1:], dtype=np.uint8) for k, v in sample.items()}
  return task, variables, sample, clips


def _assert_close(actual, expected):
  expected = np.asarray(expected)
  assert actual.shape == expected.shape and actual.dtype == np.float32
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("case", ZOO + tuple(PAPERS))
def test_stablehlo_reloads_with_any_batch_and_matches_jax(case, tmp_path):
  task, variables, sample, clips = _model(case, str(tmp_path / "nodata"))
  fn = export.inference_function(task, variables, list(sample))
  blob = export.export_stablehlo(fn, sample, case)
  path = tmp_path / "model.stablehlo"
  path.write_bytes(blob)
  reloaded = export.load_stablehlo(str(path))
  # Exported from a batch-1 sample with a symbolic batch; called with batch 3.
  _assert_close(np.asarray(reloaded(*clips.values())), jax.jit(task.predict)(variables, clips))


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
  """A small3d_tiny run (random variables, checkpoint step 1, config.json) exported by the CLI."""
  root = tmp_path_factory.mktemp("export")
  config = _config("small3d_tiny", str(root / "nodata"))
  task, variables, sample, clips = _model("small3d_tiny", str(root / "nodata"))
  workdir = str(root / "run")
  saver = checkpoint.Checkpointer(workdir, async_save=False)
  params = variables.pop("params")
  saver.save(1, {"params": params, "model_state": variables, "opt_state": {}}, None, {"step": 1})
  saver.close()
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort())
  names = ",".join(f"action{i}" for i in range(CLASSES))
  out = str(root / "out")
  assert export.main(["--workdir", workdir, "--out", out, "--classes", names]) == 0
  expected = np.asarray(jax.jit(task.predict)({"params": params, **variables}, clips))
  return out, clips, expected, sample, task


def test_cli_writes_metadata_and_a_module_callable_without_darkjax(exported_run, tmp_path):
  out, clips, expected, sample, _ = exported_run
  with open(os.path.join(out, export.METADATA), encoding="utf-8") as f:
    meta = json.load(f)
  assert meta["class_names"] == [f"action{i}" for i in range(CLASSES)]
  assert meta["inputs"] == [{"name": "video", "shape": ["batch", *sample["video"].shape[1:]],
                             "dtype": "uint8"}]
  assert meta["format"] == "stablehlo" and meta["step"] == 1
  np.save(tmp_path / "clips.npy", clips["video"])
  script = (
      "import sys, jax, numpy as np\n"
      f"call = jax.export.deserialize(bytearray(open({os.path.join(out, 'model.stablehlo')!r}, "
      "'rb').read())).call\n"
      f"logits = np.asarray(call(np.load({str(tmp_path / 'clips.npy')!r})))\n"
      f"np.save({str(tmp_path / 'logits.npy')!r}, logits)\n"
      "assert not [m for m in sys.modules if m.startswith('darkjax')]\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path),
                 timeout=300)
  _assert_close(np.load(tmp_path / "logits.npy"), expected)


def test_cli_names_a_workdir_without_a_run(tmp_path, capsys):
  assert export.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
  assert "no config.json" in capsys.readouterr().err


# ONNX (the `onnx` extra): jax2onnx's conversion takes up to a minute per tiny model on 2 loaded
# cores, so CI checks one family that converts (C3D's 3D convs) and one whose conversion fails (with the model and op named);
# `DARKJAX_ONNX_CASES=all python -m pytest -q tests/test_export.py -k onnx` checks every case
# against the outcomes below (measured: docs/benchmarks.md).
ONNX_FAILS = {   # case -> the op the error must name
    "resnet3d_tiny": r"flax/core/axes_scan.py:\w+ called from darkjax/models/resnet3d.py:\d+",
    "resnext3d_tiny": r"flax/core/axes_scan.py:\w+ called from darkjax/models/resnet3d.py:\d+",
    "dtcm": r"AvgPool \(jax2onnx AvgPoolPlugin\) called from darkjax/models/enhancers.py:\d+",
    "liftnet": r"jax.lax.fft \(jax2onnx plugin, in lower\)",
}
_ONNX_CASES = os.environ.get("DARKJAX_ONNX_CASES", "c3d_tiny,resnet3d_tiny")
ONNX_CASES = ZOO + tuple(PAPERS) if _ONNX_CASES == "all" else tuple(_ONNX_CASES.split(","))


def _onnxruntime():
  """onnxruntime; without the `onnx` extra the ONNX tests skip, except where DARKJAX_REQUIRE_ONNX
  is set (.ci/run sets it after installing the extra)."""
  try:
    import jax2onnx  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import onnxruntime  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    if os.environ.get("DARKJAX_REQUIRE_ONNX"):
      raise
    pytest.skip(f"the onnx extra is not installed ({error}); see the README's Export section")
  return onnxruntime


@pytest.mark.parametrize("case", ONNX_CASES)
def test_onnx_matches_jax_through_onnxruntime_or_names_the_op(case, tmp_path):
  ort = _onnxruntime()
  task, variables, sample, clips = _model(case, str(tmp_path / "nodata"))
  fn = export.inference_function(task, variables, list(sample))
  meta = export.describe([f"a{i}" for i in range(CLASSES)], sample, case)
  if case in ONNX_FAILS:
    with pytest.raises(export.ExportError,
                       match=rf"model {case}: ONNX export failed at op {ONNX_FAILS[case]}"):
      export.export_onnx(fn, sample, case, meta)
    return
  proto = export.export_onnx(fn, sample, case, meta)
  session = ort.InferenceSession(proto.SerializeToString())
  assert [i.name for i in session.get_inputs()] == list(sample)
  logits = session.run(None, {k: v for k, v in clips.items()})[0]
  _assert_close(logits, jax.jit(task.predict)(variables, clips))
  props = {p.key: json.loads(p.value) for p in proto.metadata_props}
  assert props["class_names"] == [f"a{i}" for i in range(CLASSES)]
  assert props["inputs"][0]["shape"] == ["batch", *sample["video"].shape[1:]]
