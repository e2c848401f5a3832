"""`python -m darkjax.convert`: formats, containers, heads, unsafe pickles, load_variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from darkjax import file_state
from darkjax.convert import __main__ as cli
from darkjax.convert import io
from darkjax.convert import resnet3d as convert_resnet3d

torch = pytest.importorskip("torch")

TINY_LAYOUT = dict(block="basic", layers=(1, 3, 1, 1), widths=(8, 16, 16, 32), stem_width=8)


def _tiny_state(shortcut: str = "B", num_classes: int = 7) -> dict:
  from darkjax.tools import torch_refs
  torch.manual_seed(0)
  reference = torch_refs.HaraResNet(shortcut_type=shortcut, num_classes=num_classes, **TINY_LAYOUT)
  return torch_refs.randomise_(reference).state_dict()


def _flat(tree) -> dict:
  from flax import traverse_util
  return traverse_util.flatten_dict(dict(tree), sep="/")


def _assert_same(actual, expected):
  actual, expected = _flat(actual), _flat(expected)
  assert sorted(actual) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(np.asarray(actual[key]), value, err_msg=key)


def test_pth_training_checkpoint_round_trip(tmp_path):
  state = _tiny_state("B")
  src = tmp_path / "save_200.pth"
  # Hara's training checkpoints: DataParallel keys inside {"state_dict": ...} plus bookkeeping.
  torch.save({"epoch": 200, "arch": "resnet-tiny",
              "state_dict": {f"module.{k}": v for k, v in state.items()}}, src)
  args = ["--arch", "resnet3d_tiny", "--src", str(src), "--out", str(tmp_path / "out")]
  assert cli.main(args) == 0
  variables, meta = io.load_variables(str(tmp_path / "out"))
  _assert_same(variables, convert_resnet3d.convert("resnet3d_tiny", state))
  assert meta["arch"] == "resnet3d_tiny" and meta["num_classes"] == 7
  assert meta["model_kwargs"] == {"shortcut_type": "B"}
  assert meta["not_converted"] == []
  assert meta["source"]["sha256"] == file_state.sha256_file(str(src)) and len(meta["source"]["sha256"]) == 64
  # The written variables drive the model directly.
  import jax.numpy as jnp

  from darkjax import models
  model = models.build(meta["arch"], meta["num_classes"], conv_lowering="native",
                       **meta["model_kwargs"])
  logits, _ = model.apply(variables, jnp.zeros((1, 4, 16, 16, 3)))
  assert logits.shape == (1, 7)
  # Refuses to overwrite.
  assert cli.main(args) == 2


def test_safetensors_and_npz_with_new_head(tmp_path):
  from safetensors.numpy import save_file
  state = {k: v.numpy() for k, v in _tiny_state("A").items()}
  save_file(state, str(tmp_path / "ckpt.safetensors"))
  np.savez(tmp_path / "ckpt.npz", **state)
  expected = convert_resnet3d.convert("resnet3d_tiny", state, num_classes=3)
  for name in ("ckpt.safetensors", "ckpt.npz"):
    out = tmp_path / f"out_{name}"
    meta = cli.convert_file("resnet3d_tiny", str(tmp_path / name), str(out), num_classes=3)
    assert meta["num_classes"] == 3
    assert meta["model_kwargs"] == {"shortcut_type": "A"}
    assert meta["not_converted"] == ["params/fc/bias", "params/fc/kernel"]
    assert json.loads((out / "meta.json").read_text()) == meta
    variables, _ = io.load_variables(str(out))
    _assert_same(variables, expected)


class _RunsCode:
  """Unpickling this object would call os.mkdir(marker) - must never happen."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused(tmp_path, capsys):
  marker = str(tmp_path / "pwned")
  src = tmp_path / "evil.pth"
  torch.save({"state_dict": _tiny_state(), "payload": _RunsCode(marker)}, src)
  with pytest.raises(io.UnsafeCheckpointError, match="evil.pth: refused as unsafe") as error:
    io.load_state_dict(str(src))
  assert "safetensors" in str(error.value) and "weights_only=False" in str(error.value)
  assert cli.main(["--arch", "resnet3d_tiny", "--src", str(src), "--out", str(tmp_path / "o")]) == 2
  assert "refused as unsafe" in capsys.readouterr().err
  assert not os.path.exists(marker)
  assert not os.path.exists(tmp_path / "o")


def test_read_errors_name_the_file(tmp_path):
  with pytest.raises(io.CheckpointReadError, match="missing.pth: no such file"):
    io.load_state_dict(str(tmp_path / "missing.pth"))
  (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
  with pytest.raises(io.CheckpointReadError, match="weights.bin: unknown checkpoint format"):
    io.load_state_dict(str(tmp_path / "weights.bin"))
  (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
  with pytest.raises(io.CheckpointReadError, match="broken.pth") as error:
    io.load_state_dict(str(tmp_path / "broken.pth"))
  # damaged bytes are not called unsafe: no global to import, an opcode torch does not read
  (tmp_path / "damaged.pth").write_bytes(bytes(range(256)) * 8)
  with pytest.raises(io.CheckpointReadError,
                     match="damaged.pth: not a readable PyTorch checkpoint") as error:
    io.load_state_dict(str(tmp_path / "damaged.pth"))
  assert not isinstance(error.value, io.UnsafeCheckpointError)
  torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_tensors.pth")
  with pytest.raises(io.CheckpointReadError, match="no_tensors.pth: no tensors found"):
    io.load_state_dict(str(tmp_path / "no_tensors.pth"))
  with pytest.raises(FileNotFoundError, match="not a converted checkpoint"):
    io.load_variables(str(tmp_path))


def test_module_entry_point_reports_conversion_errors(tmp_path):
  state = {k: v.numpy() for k, v in _tiny_state("A").items()}
  del state["layer1.0.conv2.weight"]
  np.savez(tmp_path / "partial.npz", **state)
  result = subprocess.run(
      [sys.executable, "-m", "darkjax.convert", "--arch", "resnet3d_tiny", "--src",
       str(tmp_path / "partial.npz"), "--out", str(tmp_path / "out")],
      capture_output=True, text=True, timeout=120, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 2, result.stderr
  assert "layer1/block0/conv2/kernel" in result.stderr
  assert not os.path.exists(tmp_path / "out")
