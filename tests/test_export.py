"""darkjax.tools.export: every zoo family and each paper's deployed model, exported as StableHLO
and as ONNX, gives the JAX logits to 1e-4 with a symbolic batch (StableHLO reloaded by jax, ONNX
through onnxruntime); what is exported does not depend on the host; the CLI exports a
checkpointed run whose file is callable in a process that never imports darkjax."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import actlumos_synthetic, dinet_synthetic, dtcm_synthetic, lift_synthetic
from configs import synthetic as synthetic_config
from configs import twostream_synthetic
from darkjax import checkpoint, targets
from darkjax.layers import conv, conv2d, depthwise
from darkjax.tools import export, predict_checkpoint
from darkjax import task as task_lib
from run_configs import quiet

CLASSES = 5
# StableHLO (in README's test run): one tiny variant per zoo family.
ZOO = ("small3d_tiny", "resnet3d_tiny", "resnext3d_tiny", "c3d_tiny", "r2plus1d_tiny_test",
       "vit_tiny_test")
PAPERS = {"dinet": dinet_synthetic, "dtcm": dtcm_synthetic, "liftnet": lift_synthetic,
          "twostream": twostream_synthetic,   # two-stream: flow (computed on the host) is an input
          "actlumos": actlumos_synthetic}
# ONNX: every zoo architecture with its depth and kinds of blocks, narrowed to test size
# (config.model.kwargs); small3d is the README main job's model as it trains.
ONNX_ZOO = {
    "small3d": {},
    "c3d_tiny": {},
    "resnet3d_18": dict(widths=(8, 8, 16, 16), stem_width=8),
    "resnet3d_50": dict(widths=(4, 4, 8, 8), stem_width=8),
    "resnext3d_101": dict(widths=(32, 32, 64, 64), stem_width=8, cardinality=4),
    "r3d_18": dict(widths=(8, 8, 16, 16)),
    "mc3_18": dict(widths=(8, 8, 16, 16)),
    "r2plus1d_18": dict(widths=(8, 8, 16, 16), stem_mid_width=6),
    "r2plus1d_34_ig65m": dict(widths=(8, 8, 16, 16), stem_mid_width=6),
    "vit_tiny_test": {},
}


def _config(case: str, data_dir: str):
  if case in PAPERS:
    return quiet(PAPERS[case].get_config(f"runlocal,data_dir={data_dir}"))
  config = quiet(synthetic_config.get_config(f"runlocal,data_dir={data_dir}"),
                 **{"model.name": case})
  with config.unlocked():
    config.model.kwargs.update(ONNX_ZOO.get(case, {}))
  return config


_MODELS: dict[str, tuple] = {}


def _random_variables(task, sample) -> dict:
  """Variables of the task's shapes (`jax.eval_shape` of its init: nothing compiled), drawn at
  random like trained ones: kernels scaled by their fan-in, BatchNorm statistics and affine
  parameters away from their initial (identity) values."""
  rng = np.random.default_rng(3)

  def draw(path, leaf):
    name, shape = str(getattr(path[-1], "key", path[-1])), leaf.shape
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return np.zeros(shape, leaf.dtype)
    if name == "var":
      value = rng.uniform(0.5, 1.5, shape)
    elif name == "scale":
      value = rng.uniform(0.8, 1.2, shape)
    elif name in ("mean", "bias") or len(shape) < 2:
      value = rng.normal(0.0, 0.1, shape)
    else:
      value = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[:-1]))
    return value.astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(
      draw, jax.eval_shape(task.init_variables, jax.random.key(3), sample))


def _model(case: str, data_dir: str):
  """(task, variables, sample inputs, uint8 test clips of batch 3, their JAX logits) of a case,
  without a dataset; built once per process and shared by the tests."""
  if case not in _MODELS:
    task = task_lib.load_task(_config(case, data_dir), num_classes=CLASSES)
    sample = predict_checkpoint.sample_inputs(task)
    variables = _random_variables(task, sample)
    rng = np.random.default_rng(0)
    # Dark clips, as the models see them: values in the low part of the range.
    clips = {k: rng.integers(0, 60, (3,) + v.shape[1:], dtype=np.uint8) for k, v in sample.items()}
    expected = np.asarray(jax.jit(task.predict)(variables, clips))
    _MODELS[case] = task, variables, sample, clips, expected
  return _MODELS[case]


def _assert_close(actual, expected):
  expected = np.asarray(expected)
  assert actual.shape == expected.shape and actual.dtype == np.float32
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("case", ZOO + tuple(PAPERS))
def test_stablehlo_reloads_with_any_batch_and_matches_jax(case, tmp_path):
  task, variables, sample, clips, expected = _model(case, str(tmp_path / "nodata"))
  fn = export.inference_function(task, variables, list(sample))
  with conv.record_lowerings() as chosen:
    blob = export.export_stablehlo(fn, sample, case)
  assert set(chosen) <= conv.PORTABLE_LOWERINGS, dict(chosen)   # nothing host-tuned
  path = tmp_path / "model.stablehlo"
  path.write_bytes(blob)
  reloaded = export.load_stablehlo(str(path))
  # Exported from a batch-1 sample with a symbolic batch; called with batch 3.
  _assert_close(np.asarray(reloaded(*clips.values())), expected)


def _run_dir(root, config, case: str) -> str:
  """A run of `config` in root/run: `case`'s random variables saved as checkpoint step 1, and
  config.json."""
  _, variables, _, _, _ = _model(case, str(root / "nodata"))
  variables = dict(variables)
  workdir = str(root / "run")
  saver = checkpoint.Checkpointer(workdir, async_save=False)
  params = variables.pop("params")
  saver.save(1, {"params": params, "model_state": variables, "opt_state": {}}, None, {"step": 1})
  saver.close()
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort())
  return workdir


CLASS_NAMES = ",".join(f"action{i}" for i in range(CLASSES))


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
  """A small3d_tiny run (random variables, checkpoint step 1, config.json) exported by the CLI."""
  root = tmp_path_factory.mktemp("export")
  workdir = _run_dir(root, _config("small3d_tiny", str(root / "nodata")), "small3d_tiny")
  out = str(root / "out")
  assert export.main(["--workdir", workdir, "--out", out, "--classes", CLASS_NAMES]) == 0
  _, _, sample, clips, expected = _model("small3d_tiny", str(root / "nodata"))
  return out, clips, expected, sample


def test_cli_writes_metadata_and_a_module_callable_without_darkjax(exported_run, tmp_path):
  out, clips, expected, sample = exported_run
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


def test_cli_names_an_out_that_is_a_file_and_leaves_it(exported_run, tmp_path, capsys):
  workdir = os.path.join(os.path.dirname(exported_run[0]), "run")
  assert os.path.isfile(os.path.join(workdir, "config.json"))
  (tmp_path / "notes.txt").write_text("keep me")
  assert export.main(["--workdir", workdir, "--out", str(tmp_path / "notes.txt"),
                      "--classes", CLASS_NAMES]) == 1
  assert f"--out {tmp_path / 'notes.txt'} cannot be made a directory" in capsys.readouterr().err
  assert (tmp_path / "notes.txt").read_text() == "keep me"
  # a step the run lacks: no empty --out left
  assert export.main(["--workdir", workdir, "--out", str(tmp_path / "o7"), "--step", "7",
                      "--classes", CLASS_NAMES]) == 1
  assert not (tmp_path / "o7").exists()
  # a --config other than the one that trained the run is refused, as predict refuses it (it
  # would export a model reading its clips otherwise)
  assert export.main(["--workdir", workdir, "--out", str(tmp_path / "o"), "--config",
                      "configs/synthetic.py:runlocal,normalise=imagenet"]) == 1
  err = capsys.readouterr().err
  assert "is not the config that trained the run" in err and "input.normalise" in err
  assert not (tmp_path / "o").exists()
  # the disk fills after the model is written, at export.json: that file is named, and no half
  # export (a model without its export.json) is left
  real = export.file_state.atomic_write_json

  def full(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path) + ".tmp")

  export.file_state.atomic_write_json = full
  try:
    assert export.main(["--workdir", workdir, "--out", str(tmp_path / "o"), "--classes",
                        CLASS_NAMES]) == 1
  finally:
    export.file_state.atomic_write_json = real
  err = capsys.readouterr().err
  assert (f"No space left on device while writing {tmp_path / 'o' / export.METADATA}; nothing of "
          "this export is kept; free space on that disk") in err, err
  assert not (tmp_path / "o").exists()


# ONNX (the `onnx` extra): every case. `DARKJAX_ONNX_CASES=a,b` runs only those.
ONNX_CASES = tuple(ONNX_ZOO) + tuple(PAPERS)
if os.environ.get("DARKJAX_ONNX_CASES", "all") != "all":
  ONNX_CASES = tuple(os.environ["DARKJAX_ONNX_CASES"].split(","))


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
def test_onnx_matches_jax_through_onnxruntime(case, tmp_path):
  ort = _onnxruntime()
  task, variables, sample, clips, expected = _model(case, str(tmp_path / "nodata"))
  fn = export.inference_function(task, variables, list(sample))
  meta = export.describe([f"a{i}" for i in range(CLASSES)], sample, case)
  with conv.record_lowerings() as chosen:
    proto = export.export_onnx(fn, sample, case, meta)
  assert set(chosen) <= conv.PORTABLE_LOWERINGS, dict(chosen)   # nothing host-tuned
  session = ort.InferenceSession(proto.SerializeToString())
  inputs = session.get_inputs()
  assert [i.name for i in inputs] == list(sample)
  assert all(i.type == "tensor(uint8)" and i.shape[0] == "batch" for i in inputs)
  # Exported from a batch-1 sample with a symbolic batch; run with batch 3.
  _assert_close(session.run(None, dict(clips))[0], expected)
  props = {p.key: json.loads(p.value) for p in proto.metadata_props}
  assert props["class_names"] == [f"a{i}" for i in range(CLASSES)]
  assert props["inputs"][0]["shape"] == ["batch", *sample["video"].shape[1:]]


def test_onnx_cli_exports_the_main_jobs_model_runnable_without_jax(tmp_path):
  """README's main job (configs/synthetic.py, small3d) through the CLI with --format onnx; the
  model runs in onnxruntime in a process without jax."""
  _onnxruntime()
  config = quiet(synthetic_config.get_config(f"data_dir={tmp_path / 'nodata'}"))
  assert config.model.name == "small3d"
  workdir = _run_dir(tmp_path, config, "small3d")   # small3d's variables, the main job's config
  out = str(tmp_path / "export")
  assert export.main(["--workdir", workdir, "--format", "onnx", "--out", out,
                      "--classes", CLASS_NAMES]) == 0
  with open(os.path.join(out, export.METADATA), encoding="utf-8") as f:
    meta = json.load(f)
  assert meta["format"] == "onnx" and meta["model"] == "small3d" and meta["step"] == 1
  _, _, _, clips, expected = _model("small3d", str(tmp_path / "nodata"))
  np.save(tmp_path / "clips.npy", clips["video"])
  script = (
      "import sys, numpy as np, onnxruntime\n"
      f"session = onnxruntime.InferenceSession({os.path.join(out, 'model.onnx')!r})\n"
      f"logits = session.run(None, {{'video': np.load({str(tmp_path / 'clips.npy')!r})}})[0]\n"
      f"np.save({str(tmp_path / 'logits.npy')!r}, logits)\n"
      "assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'darkjax', 'flax')]\n")
  subprocess.run([sys.executable, "-c", script], check=True, cwd=str(tmp_path), timeout=300)
  _assert_close(np.load(tmp_path / "logits.npy"), expected)


def test_onnx_export_names_the_model_and_an_op_it_cannot_convert():
  _onnxruntime()
  sample = {"video": jax.ShapeDtypeStruct((1, 4, 8, 8, 3), jnp.uint8)}
  fn = lambda clips: jnp.abs(jnp.fft.fft2(clips.astype(jnp.float32))).mean(axis=(1, 2, 3))  # noqa: E731
  with pytest.raises(export.ExportError,
                     match=r"model fft2: ONNX export failed at op jax.lax.fft \(jax2onnx plugin"):
    export.export_onnx(fn, sample, "fft2")


# ------------------------------------------------------------- host independence
# What the training lowerings read of the host (darkjax.layers.conv, conv2d, depthwise): the
# platform compiled for, the core count, and the module constants behind the CPU choices (the
# CPU's ISA, AVX2 or AVX-512, enters no choice: it is an XLA compile flag, and export compiles
# nothing). Each entry forces one such host; an export must not change with any of them.
def _host(platform="cpu", cores=2, lowering=None, kernel_grad=None, **constants):
  owners = {"YNN_MIN_CORE_USE": conv2d, "BLOCKDIAG_MAX_CHANNELS": depthwise}

  @contextlib.contextmanager
  def host():
    with contextlib.ExitStack() as stack:
      stack.enter_context(targets.compiling_for(platform))
      stack.enter_context(mock.patch.object(conv2d, "cores", lambda: cores))
      if lowering:   # sum2d and taps2d apply to every kernel
        stack.enter_context(mock.patch.object(
            conv, "choose_lowering", lambda *a, backend=None, **k: (
                "native" if (backend or targets.platform()) != "cpu" else lowering)))
      if kernel_grad:
        stack.enter_context(mock.patch.object(conv, "choose_kernel_grad",
                                              lambda *a, **k: kernel_grad))
      for name, value in constants.items():
        stack.enter_context(mock.patch.object(owners.get(name, conv), name, value))
      yield
  return host


HOSTS = {
    "cpu, 2 cores": _host(),
    "cpu, 1 core, sum2d, no group bundles or space-to-depth": _host(
        cores=1, lowering="sum2d", GROUP_BUNDLE_CHANNELS=0, SPACE_TO_DEPTH_MAX_CHANNELS=0),
    "cpu, 64 cores, taps2d, dots, no blockdiag depthwise": _host(
        cores=64, lowering="taps2d", kernel_grad="dots", YNN_MIN_CORE_USE=0.0,
        BLOCKDIAG_MAX_CHANNELS=0, GROUP_BUNDLE_CHANNELS=64),
    "gpu": _host("gpu"),
    "tpu": _host("tpu"),
}
# grouped and bundled convs, a max pool, an RGB stem (space-to-depth), (k, 1, 1) and (1, k, k)
# kernels, depthwise convs, the DTCM enhancer and the nn.scan stages between them
HOST_CASES = ("resnext3d_tiny", "r2plus1d_tiny_test", "dtcm")


def _trace_text(fn, sample) -> str:
  """The StableHLO of `fn` as it trains (no export context), freshly traced."""
  return jax.jit(lambda *clips: fn(*clips)).lower(*sample.values()).as_text()


@pytest.mark.parametrize("case", HOST_CASES)
def test_stablehlo_export_is_the_same_on_every_host(case, tmp_path):
  task, variables, sample, _, _ = _model(case, str(tmp_path / "nodata"))
  fn = export.inference_function(task, variables, list(sample))
  blobs, traces = {}, set()
  for name, host in HOSTS.items():
    with host():
      with conv.record_lowerings() as chosen:
        blobs[name] = export.export_stablehlo(fn, sample, case)
      if name in ("cpu, 1 core, sum2d, no group bundles or space-to-depth", "gpu"):
        traces.add(_trace_text(fn, sample))
    assert chosen and set(chosen) <= conv.PORTABLE_LOWERINGS, (name, dict(chosen))
  # the hosts change what training traces, and never what export writes
  assert len(traces) == 2
  assert len(set(blobs.values())) == 1


@pytest.mark.parametrize("case", HOST_CASES)
def test_onnx_export_is_the_same_on_every_host(case, tmp_path):
  _onnxruntime()
  task, variables, sample, _, _ = _model(case, str(tmp_path / "nodata"))
  fn = export.inference_function(task, variables, list(sample))
  graphs = {}
  for name in ("cpu, 1 core, sum2d, no group bundles or space-to-depth",
               "cpu, 64 cores, taps2d, dots, no blockdiag depthwise", "gpu"):
    with HOSTS[name](), conv.record_lowerings() as chosen:
      graphs[name] = export.export_onnx(fn, sample, case).SerializeToString()
    assert chosen and set(chosen) <= conv.PORTABLE_LOWERINGS, (name, dict(chosen))
  assert len(set(graphs.values())) == 1


def test_onnx_export_without_jax2onnx_gives_readmes_install_and_makes_nothing(tmp_path,
                                                                             monkeypatch):
  """The install command in the error is README's ONNX section's (the `onnx` extra alone lacks
  jax2onnx), said before the run is read or --out made."""
  real = export.importlib.util.find_spec
  monkeypatch.setattr(export.importlib.util, "find_spec",
                      lambda name, *a: None if name == "jax2onnx" else real(name, *a))
  out = tmp_path / "export"
  with pytest.raises(export.ExportError,
                     match=r"needs jax2onnx( and onnx)? \(not installed\)") as error:
    export.export_run(str(tmp_path / "no_run"), str(out), "onnx")
  assert export.ONNX_INSTALL in str(error.value) and not out.exists()
  readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
  assert f"\n{export.ONNX_INSTALL}\n" in readme
