"""`python -m darkjax.convert`: formats, containers, heads, unsafe pickles, load_variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from unittest import mock

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
  # as a config's pretrained backbone too, before any advice on its normalisation
  with pytest.raises(io.UnsafeCheckpointError, match=r"^config\.x\.backbone_init: .*refused as "
                                                      r"unsafe"):
    io.pretrained_backbone("resnet3d_tiny", str(src), "config.x.backbone_init", "per_clip",
                           "input.normalise")
  assert not os.path.exists(marker)


def test_read_errors_name_the_file(tmp_path):
  with pytest.raises(io.CheckpointReadError, match="missing.pth: no such file"):
    io.load_state_dict(str(tmp_path / "missing.pth"))
  (tmp_path / "weights.h5").write_bytes(b"\0" * 8)
  with pytest.raises(io.CheckpointReadError, match="weights.h5: unknown checkpoint format"):
    io.load_state_dict(str(tmp_path / "weights.h5"))
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
  # bytes torch's unpickler stops on with other errors, an empty file, a cut-short .npz
  (tmp_path / "text.pth").write_bytes(b"hello")
  (tmp_path / "empty.pth").write_bytes(b"")
  np.savez(tmp_path / "whole.npz", w=np.zeros((64, 64), np.float32))
  (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:200])
  for name in ("text.pth", "empty.pth"):
    with pytest.raises(io.CheckpointReadError,
                       match=rf"{name}: not a readable PyTorch checkpoint \(.+\): the file"):
      io.load_state_dict(str(tmp_path / name))
  with pytest.raises(io.CheckpointReadError, match="cut.npz: not a readable .npz"):
    io.load_state_dict(str(tmp_path / "cut.npz"))


def test_resave_hint_reads_a_whole_model_and_a_checkpoint_with_its_args(tmp_path):
  """The script the refusal prints, run as printed (trusting the file): a pickled module and a
  training checkpoint holding an argparse.Namespace become safetensors the converter reads."""
  import argparse  # pylint: disable=import-outside-toplevel
  module = torch.nn.Sequential(torch.nn.Linear(2, 3))
  files = {"module.pth": module, "withargs.pth": {"model": _tiny_state(),
                                                  "args": argparse.Namespace(lr=0.1)}}
  for name, content in files.items():
    torch.save(content, tmp_path / name)
    with pytest.raises(io.UnsafeCheckpointError) as error:
      io.load_state_dict(str(tmp_path / name))
    script = str(error.value).split("python - <<'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0]
    subprocess.run([sys.executable, "-"], input=script, text=True, check=True, cwd=tmp_path)
    resaved = io.load_state_dict(str(tmp_path / name) + ".safetensors")
    expected = module.state_dict() if name == "module.pth" else _tiny_state()
    assert sorted(resaved) == sorted(expected)
    for key, value in expected.items():
      np.testing.assert_array_equal(resaved[key], value.numpy())


def test_bad_flags_and_outputs_are_one_line_before_reading(tmp_path, capsys):
  src = tmp_path / "tiny.pth"
  torch.save(_tiny_state(), src)
  (tmp_path / "afile").write_text("x")
  with pytest.raises(SystemExit):
    cli.main(["--arch", "resnet3d_tiny", "--src", str(src), "--out", str(tmp_path / "o"),
              "--num-classes", "-1"])
  assert "--num-classes -1: must be >= 0" in capsys.readouterr().err
  for out, why in ((tmp_path / "afile", "is a file"),
                   (tmp_path / "afile" / "sub", f"{tmp_path / 'afile'} is a file")):
    with mock.patch.object(io, "load_state_dict", side_effect=AssertionError("read")):
      assert cli.main(["--arch", "resnet3d_tiny", "--src", str(src), "--out", str(out)]) == 2
    assert f"--out {out}: {why}" in capsys.readouterr().err


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
  assert "holds the weights of" not in result.stderr   # no model takes a damaged checkpoint
  assert not os.path.exists(tmp_path / "out")


def test_weights_of_another_model_name_it(tmp_path, capsys):
  """A checkpoint given with the wrong --arch (a user's r2plus1d_18 weights as r3d_18): after
  the list of mismatches, the model they convert for, and that conversion works."""
  np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in _tiny_state("B").items()})
  args = ["--src", str(tmp_path / "w.npz"), "--out", str(tmp_path / "out")]
  assert cli.main(["--arch", "resnext3d_tiny"] + args) == 2
  err = capsys.readouterr().err.strip()
  assert "missing" in err and err.splitlines()[-1] == (
      f"{tmp_path / 'w.npz'} holds the weights of resnet3d_tiny, not resnext3d_tiny: rerun with "
      "--arch resnet3d_tiny")
  assert not os.path.exists(tmp_path / "out")
  assert cli.main(["--arch", "resnet3d_tiny"] + args) == 0


def test_torch_save_files_of_other_names_and_bfloat16_weights_convert(tmp_path):
  """C3D's Sports-1M release is `c3d.pickle` (the command configs print says so), Hugging Face's
  `pytorch_model.bin`: torch.save files, read weights-only. bfloat16 weights convert (numpy has
  no bfloat16: they go through float32, exactly)."""
  state = _tiny_state("B")
  for name in ("c3d.pickle", "pytorch_model.bin"):
    torch.save(state, tmp_path / name)
    assert cli.main(["--arch", "resnet3d_tiny", "--src", str(tmp_path / name), "--out",
                     str(tmp_path / f"out_{name}")]) == 0
    variables, _ = io.load_variables(str(tmp_path / f"out_{name}"))
    _assert_same(variables, convert_resnet3d.convert("resnet3d_tiny", state))
  half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
  torch.save(half, tmp_path / "bf16.pth")
  assert cli.main(["--arch", "resnet3d_tiny", "--src", str(tmp_path / "bf16.pth"), "--out",
                   str(tmp_path / "out_bf16")]) == 0
  variables, _ = io.load_variables(str(tmp_path / "out_bf16"))
  exact = {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
  _assert_same(variables, convert_resnet3d.convert("resnet3d_tiny", exact))


def test_cli_converts_the_headless_zero_dce_enhancers(tmp_path):
  import jax
  import jax.numpy as jnp
  from flax import traverse_util

  from darkjax import models
  from darkjax.convert import zero_dce
  for arch in zero_dce.NAMES:
    shapes = jax.eval_shape(models.build(arch, 0).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    torch.manual_seed(0)
    state = {}
    for key, leaf in traverse_util.flatten_dict(shapes["params"], sep=".").items():
      module, kind = key.rsplit(".", 1)
      state[f"{module}.weight" if kind == "kernel" else f"{module}.bias"] = (
          torch.randn(*(leaf.shape[3], leaf.shape[2]) + leaf.shape[:2]) if kind == "kernel"
          else torch.randn(*leaf.shape))
    torch.save(state, tmp_path / f"{arch}.pth")
    assert cli.main(["--arch", arch, "--src", str(tmp_path / f"{arch}.pth"), "--out",
                     str(tmp_path / arch)]) == 0
    variables, meta = io.load_variables(str(tmp_path / arch))
    assert meta["num_classes"] == 0 and meta["not_converted"] == []
    assert meta["input_normalisation"]["mode"] == "none"
    _assert_same(variables, zero_dce.convert(arch, state))


def test_vit_meta_records_pre_logits_and_the_npz_gelu(tmp_path):
  """A checkpoint with a `pre_logits` layer needs `representation_size` to be rebuilt (flax would
  otherwise ignore the layer's variables); vision_transformer `.npz` weights the tanh GELU."""
  import jax.numpy as jnp

  from darkjax import models
  from darkjax.convert import vit as convert_vit
  from darkjax.tools import torch_refs
  reference = torch_refs.timm_vit(32, 3, 64, 4, 8, 32, 5)
  torch.manual_seed(1)
  pre, head = torch.nn.Linear(32, 32), torch.nn.Linear(32, 5)
  state = {k: v.clone() for k, v in reference.state_dict().items()}
  state.update({"pre_logits.fc.weight": pre.weight.detach(),
                "pre_logits.fc.bias": pre.bias.detach(),
                "head.weight": head.weight.detach(), "head.bias": head.bias.detach()})
  torch.save(state, tmp_path / "vit.pth")
  assert cli.main(["--arch", "vit_tiny_test", "--src", str(tmp_path / "vit.pth"), "--out",
                   str(tmp_path / "out")]) == 0
  variables, meta = io.load_variables(str(tmp_path / "out"))
  assert meta["model_kwargs"] == {"representation_size": 32} and meta["not_converted"] == []
  x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    _, tokens = reference(torch.from_numpy(x))
    expected = head(torch.tanh(pre(tokens[:, 0]))).numpy()
  model = models.build(meta["arch"], meta["num_classes"], **meta["model_kwargs"])
  logits = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))[0]
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5)
  # --image-size: the 32-pixel checkpoint (16 tokens + class) for 48-pixel frames (36 + 1)
  assert cli.main(["--arch", "vit_tiny_test", "--src", str(tmp_path / "vit.pth"), "--out",
                   str(tmp_path / "out48"), "--image-size", "48"]) == 0
  resized, meta48 = io.load_variables(str(tmp_path / "out48"))
  assert meta48["image_size"] == 48
  pos = resized["params"]["Transformer"]["posembed_input"]["pos_embedding"]
  assert pos.shape == (1, 37, 32)
  model.apply(resized, jnp.zeros((1, 48, 48, 3)))   # runs at the size it was converted for
  # the 32-pixel weights for a 48-pixel model (as model_init loads them): the fix is named
  from darkjax import variables as variables_lib
  with pytest.raises(ValueError, match=r"pos_embedding: checkpoint \(1, 17, 32\) vs model "
                                       r"\(1, 37, 32\).*convert the checkpoint again with "
                                       r"`python -m darkjax.convert ... --image-size N`"):
    variables_lib.check_fits(resized, variables, "the weights")
  torch.save(_tiny_state(), tmp_path / "r3d.pth")   # a 3D CNN takes any size: no --image-size
  assert cli.main(["--arch", "resnet3d_tiny", "--src", str(tmp_path / "r3d.pth"), "--out",
                   str(tmp_path / "r3d"), "--image-size", "48"]) == 2
  npz_keys = {"Transformer/encoderblock_0/LayerNorm_0/scale": np.ones(32),
              "pre_logits/kernel": np.zeros((32, 16))}
  assert convert_vit.model_kwargs("vit_tiny_test", npz_keys) == {"representation_size": 16,
                                                                 "gelu_approximate": True}


def test_weights_of_another_build_name_the_model_kwargs_to_set(tmp_path):
  import jax
  import jax.numpy as jnp

  from darkjax import model_init, models
  from darkjax.config import ConfigError
  torch.save(_tiny_state("B"), tmp_path / "b.pth")
  assert cli.main(["--arch", "resnet3d_tiny", "--src", str(tmp_path / "b.pth"), "--out",
                   str(tmp_path / "out"), "--input-normalise", "none"]) == 0
  shapes = jax.eval_shape(models.build("resnet3d_tiny", 7).init, jax.random.key(0),
                          jnp.zeros((1, 4, 16, 16, 3)))   # shortcut A: no downsample convs
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  with pytest.raises(ConfigError, match=r"downsample_conv.*built with \{'shortcut_type': 'B'\}.*"
                                        r"--config.model.kwargs.shortcut_type='B'"):
    model_init.load_pretrained(variables, str(tmp_path / "out"))
