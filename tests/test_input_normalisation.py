"""Pretrained weights read the input normalisation they were trained on: `python -m darkjax.convert`
records it (meta.json), a converted checkpoint fed a raw uint8 clip through the recorded
normalisation gives the source port's logits on the same clip through the port's own
preprocessing (written out here from each port's published recipe), loading checks the config's
normalisation against the record, and the paper configs set what their weights expect."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import (actlumos_arid, dinet_infar, dtcm_arid, lift_arid, lift_infar, twostream_infar)
from darkjax import config as config_lib
from darkjax import convert, model_init, models
from darkjax.convert import __main__ as convert_cli
from darkjax.convert import io as convert_io
from darkjax.data import normalise
from darkjax.trainers import twostream
import torch_parity

# Each port's preprocessing of 0-255 RGB frames, transcribed from its source:
# Sports-1M C3D (Caffe, c3d-keras test_model.py): OpenCV BGR frames minus the Sports-1M mean cube
# (here its per-channel mean, B, G, R), no scaling.
C3D_BGR_MEAN = np.array([90.25164677, 97.65700354, 101.40833461])
# 3D-ResNets-PyTorch's first release (main.py: ToTensor(norm_value=1), Normalize(get_mean(1),
# [1, 1, 1]); mean.py: the ActivityNet mean).
HARA_MEAN = np.array([114.7748, 107.7354, 99.4750])
# torchvision video models / IG65M: [0, 1] frames, Normalize(mean, std).
TORCHVISION_MEAN = np.array([0.43216, 0.394666, 0.37645])
TORCHVISION_STD = np.array([0.22803, 0.22145, 0.216989])


def c3d_port_input(clip: np.ndarray) -> np.ndarray:
  return clip[..., ::-1].astype(np.float64) - C3D_BGR_MEAN


def hara_port_input(clip: np.ndarray) -> np.ndarray:
  return clip.astype(np.float64) - HARA_MEAN


def torchvision_input(clip: np.ndarray) -> np.ndarray:
  return (clip.astype(np.float64) / 255.0 - TORCHVISION_MEAN) / TORCHVISION_STD


def vit_input(images: np.ndarray) -> np.ndarray:
  return (images.astype(np.float64) / 255.0 - 0.5) / 0.5


def _raw_clip(shape, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _convert(tmp_path, arch: str, state_dict, name: str) -> tuple[dict, dict]:
  """The state dict saved as a .pth, converted by the CLI, read back (variables, meta)."""
  torch = torch_parity.require_torch()
  src = tmp_path / f"{name}.pth"
  torch.save({k: v.clone() for k, v in state_dict.items()}, src)
  assert convert_cli.main(["--arch", arch, "--src", str(src), "--out", str(tmp_path / name)]) == 0
  return convert_io.load_variables(str(tmp_path / name))


def _our_logits(arch: str, meta: dict, variables: dict, clip: np.ndarray) -> np.ndarray:
  """darkjax's logits of the raw clip through the normalisation recorded with the weights."""
  model = models.build(arch, meta["num_classes"], conv_lowering="native", **meta["model_kwargs"])
  x = normalise.normalise(clip, convert_io.recorded_normalise(meta))
  logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  return np.asarray(logits)


WHY = "float32 rounding through the network, inputs of 0-255 scale (seen <= 2e-6)"


@pytest.mark.torch_parity
def test_sports1m_c3d_reads_mean_subtracted_bgr_0_255(tmp_path):
  torch = torch_parity.require_torch()
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  port = torch_refs.C3DTorch(num_classes=7, widths=(4, 8, 8, 8, 16, 16, 16, 16), fc_width=32,
                             fc_in=16, pooling="caffe").eval()
  variables, meta = _convert(tmp_path, "c3d_tiny", port.state_dict(), "c3d")
  assert meta["input_normalisation"] == {
      "mode": "c3d_sports1m", "value_range": [0, 255], "channel_order": "BGR",
      "mean": list(C3D_BGR_MEAN), "std": [1.0, 1.0, 1.0]}
  clip = _raw_clip((2, 16, 32, 32, 3))
  with torch.no_grad():
    expected = torch_parity.numpy(torch_parity.reference(port)(
        torch_parity.tensor(c3d_port_input(clip).transpose(0, 4, 1, 2, 3))))
  torch_parity.assert_close(_our_logits("c3d_tiny", meta, variables, clip), expected, 1e-5, WHY)


@pytest.mark.torch_parity
def test_hara_kinetics_resnet_reads_0_255_minus_the_activitynet_mean(tmp_path):
  torch = torch_parity.require_torch()
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  port = torch_refs.randomise_(torch_refs.HaraResNet(
      block="basic", layers=(1, 3, 1, 1), widths=(8, 16, 16, 32), stem_width=8,
      shortcut_type="A", num_classes=5)).eval()
  variables, meta = _convert(tmp_path, "resnet3d_tiny", port.state_dict(), "resnet")
  assert meta["input_normalisation"]["mode"] == "activitynet_mean"
  clip = _raw_clip((2, 8, 32, 32, 3))
  with torch.no_grad():
    expected = torch_parity.numpy(torch_parity.reference(port)(
        torch_parity.tensor(hara_port_input(clip).transpose(0, 4, 1, 2, 3))))
  torch_parity.assert_close(_our_logits("resnet3d_tiny", meta, variables, clip), expected, 1e-5,
                            WHY)


@pytest.mark.torch_parity
def test_torchvision_video_resnet_reads_its_kinetics_mean_and_std(tmp_path):
  torch = torch_parity.require_torch()
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  port = torch_refs_randomised(torchvision.models.video.r3d_18(num_classes=5)).eval()
  variables, meta = _convert(tmp_path, "r3d_18", port.state_dict(), "r3d")
  assert meta["input_normalisation"]["mode"] == "ig65m"   # IG65M reads the same statistics
  clip = _raw_clip((1, 4, 32, 32, 3))
  with torch.no_grad():
    expected = torch_parity.numpy(torch_parity.reference(port)(
        torch_parity.tensor(torchvision_input(clip).transpose(0, 4, 1, 2, 3))))
  torch_parity.assert_close(_our_logits("r3d_18", meta, variables, clip), expected, 1e-5,
                            "float32 rounding through 18 layers (seen <= 1e-6)")


def torch_refs_randomised(model):
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  return torch_refs.randomise_(model)


@pytest.mark.torch_parity
def test_vit_reads_minus_one_to_one(tmp_path):
  torch = torch_parity.require_torch()
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  port = torch_refs.timm_vit(32, 3, 64, 4, 8, image_size=16, num_classes=6)
  variables, meta = _convert(tmp_path, "vit_tiny_test", port.state_dict(), "vit")
  assert meta["input_normalisation"]["mode"] == "vit"
  images = _raw_clip((4, 16, 16, 3))
  with torch.no_grad():
    expected, _ = torch_parity.reference(port)(
        torch_parity.tensor(vit_input(images).transpose(0, 3, 1, 2)))
  model = models.build("vit_tiny_test", 6)
  logits, _ = jax.jit(model.apply)(variables, normalise.normalise(images, "vit"))
  torch_parity.assert_close(logits, torch_parity.numpy(expected), 1e-5,
                            "float32 rounding through 3 transformer blocks (seen <= 3.2e-7)")



def imagenet21k_p_input(images: np.ndarray) -> np.ndarray:
  """timm's ImageNet-21K-P ViT (`vit_base_patch16_224_miil_in21k`): mean 0, std 1 of [0, 1]."""
  return images.astype(np.float64) / 255.0


@pytest.mark.torch_parity
def test_imagenet21k_p_vit_without_qkv_biases_reads_pixels_over_255(tmp_path):
  """LIFT-Net's ref. [44] weights: a timm ViT built with qkv_bias=False, trained on pixels / 255.
  Converted with `--input-normalise none`, it gives the port's logits on the same images."""
  torch = torch_parity.require_torch()
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  port = torch_refs.timm_vit(32, 3, 64, 4, 8, image_size=16, num_classes=6, qkv_bias=False)
  assert not any(key.endswith("qkv.bias") for key in port.state_dict())
  src = tmp_path / "vit_miil_in21k.pth"
  torch.save(port.state_dict(), src)
  assert convert_cli.main(["--arch", "vit_tiny_test", "--src", str(src), "--out",
                           str(tmp_path / "miil"), "--input-normalise", "none"]) == 0
  variables, meta = convert_io.load_variables(str(tmp_path / "miil"))
  assert convert_io.recorded_normalise(meta) == "none"
  block = variables["params"]["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_1"]
  assert all(not np.any(block[name]["bias"]) for name in ("query", "key", "value"))
  images = _raw_clip((4, 16, 16, 3))
  with torch.no_grad():
    expected, _ = torch_parity.reference(port)(
        torch_parity.tensor(imagenet21k_p_input(images).transpose(0, 3, 1, 2)))
  model = models.build("vit_tiny_test", 6)
  logits, _ = jax.jit(model.apply)(variables, normalise.normalise(images, "none"))
  torch_parity.assert_close(logits, torch_parity.numpy(expected), 1e-5,
                            "float32 rounding through 3 transformer blocks (seen 1.1e-7)")


def test_the_cli_records_another_normalisation_and_refuses_an_unknown_one(tmp_path, capsys):
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  torch = torch_parity.require_torch()
  state = torch_refs.HaraResNet(block="basic", layers=(1, 3, 1, 1), widths=(8, 16, 16, 32),
                                stem_width=8, shortcut_type="A", num_classes=5).state_dict()
  src = tmp_path / "r3d50_K_200ep.pth"
  torch.save(state, src)
  args = ["--arch", "resnet3d_tiny", "--src", str(src)]
  assert convert_cli.main(args + ["--out", str(tmp_path / "a"), "--input-normalise",
                                  "kinetics_2020"]) == 0
  assert "inputs normalised as 'kinetics_2020'" in capsys.readouterr().out
  _, meta = convert_io.load_variables(str(tmp_path / "a"))
  assert convert_io.recorded_normalise(meta) == "kinetics_2020"
  np.testing.assert_allclose(meta["input_normalisation"]["std"],
                             [0.2768 * 255, 0.2713 * 255, 0.2737 * 255])
  assert convert_cli.main(args + ["--out", str(tmp_path / "b"), "--input-normalise", "bgr"]) == 2
  assert "input normalisation (--input-normalise) 'bgr' unknown" in capsys.readouterr().err


# ---------------------------------------------------------------- the check at load time
def _saved(tmp_path, meta: dict) -> tuple[str, dict]:
  model = models.build("small3d_tiny", 0)
  variables = jax.device_get(jax.jit(model.init)(jax.random.key(0),
                                                 np.zeros((1, 4, 8, 8, 3), np.float32)))
  convert_io.save_variables(str(tmp_path / "ckpt"), variables, meta)
  return str(tmp_path / "ckpt"), variables


def test_model_init_refuses_weights_trained_on_another_normalisation(tmp_path):
  path, variables = _saved(tmp_path, {"arch": "small3d_tiny",
                                      "input_normalisation": normalise.describe("activitynet_mean")})
  with pytest.raises(normalise.NormalisationMismatchError) as error:
    model_init.load_pretrained(variables, path, normalise=("input.normalise", "kinetics"))
  message = str(error.value)
  for text in ("config.model_init", "'activitynet_mean'", "RGB 0-255 minus mean (114.8, 107.7",
               "config.input.normalise is 'kinetics'", "--config.input.normalise=activitynet_mean",
               "--config.model_load.check_normalise=False"):
    assert text in message, text
  model_init.load_pretrained(variables, path, normalise=("input.normalise", "activitynet_mean"))
  model_init.load_pretrained(variables, path)   # no check asked for


def test_recorded_normalise_of_old_conversions_and_runs():
  assert convert_io.recorded_normalise({"arch": "c3d"}) == "c3d_sports1m"   # before the record
  assert convert_io.recorded_normalise({"arch": "resnext3d_101"}) == "activitynet_mean"
  assert convert_io.recorded_normalise({"arch": "small3d_tiny"}) is None    # no converter
  run = {"source": "darkjax run", "config": {"input": {"normalise": "imagenet"},
                                             "model": {"kwargs": {"normalise": "per_clip"}}}}
  assert convert_io.recorded_normalise(run) == "imagenet"
  run["config"]["model_load"] = {"normalise_key": "model.kwargs.normalise"}   # a DTCM run
  assert convert_io.recorded_normalise(run) == "per_clip"
  assert convert_io.recorded_normalise(run, "twostream.flow_normalise", run_default="flow") == "flow"


def test_config_switch_and_key():
  config = twostream_infar.get_config("sports1m=/w")
  assert config_lib.pretrained_normalise(config) == ("input.normalise", "c3d_sports1m")
  config.model_load.check_normalise = False
  assert config_lib.pretrained_normalise(config) is None
  assert not config_lib.check_normalise(config)
  dtcm = dtcm_arid.get_config("pretrained=/w")
  assert config_lib.pretrained_normalise(dtcm) == ("model.kwargs.normalise", "activitynet_mean")


def test_a_tower_checks_its_streams_normalisation(tmp_path):
  model = models.build("twostream_c3d_tiny", 3, code_size=6)
  clips = {s: np.zeros((1, 16, 32, 32, 3), np.float32) for s in ("ir", "flow")}
  variables = jax.device_get(jax.jit(model.init)(jax.random.key(0), clips))
  c3d = {"params": variables["params"]["flow"]["c3d"]}
  convert_io.save_variables(str(tmp_path / "c3d"), c3d, {"arch": "c3d_tiny"})
  with pytest.raises(normalise.NormalisationMismatchError,
                     match=r"tower_init.flow=.*'c3d_sports1m'.*twostream.flow_normalise is 'flow'"):
    twostream.load_tower(variables, "flow", str(tmp_path / "c3d"),
                         ("twostream.flow_normalise", "flow"))
  twostream.load_tower(variables, "flow", str(tmp_path / "c3d"),
                       ("twostream.flow_normalise", "c3d_sports1m"))


# ---------------------------------------------------------------- what the paper configs set
@pytest.mark.parametrize("config, checks", [
    (twostream_infar.get_config("sports1m=/w"),
     {"input.normalise": "c3d", "twostream.flow_normalise": "c3d"}),
    (dinet_infar.get_config("pretrained=/w"), {"input.normalise": "resnext3d_101"}),
    (dinet_infar.get_config("backbone=resnet3d_101,pretrained=/w"),
     {"input.normalise": "resnet3d_101"}),
    (dinet_infar.get_config("backbone=c3d,pretrained=/w"), {"input.normalise": "c3d"}),
    (dtcm_arid.get_config("pretrained=/w"), {"model.kwargs.normalise": "resnext3d_101"}),
    (lift_arid.get_config("vit_init=/v,luminous_init=/l"),
     {"input.normalise": "vit_b16", "lift.luminous_normalise": "r2plus1d_34_ig65m"}),
    (lift_infar.get_config("vit_init=/v,luminous_init=/l"),   # flow through the luminous net
     {"input.normalise": "vit_b16", "lift.luminous_normalise": "r2plus1d_34_ig65m"}),
    (actlumos_arid.get_config("backbone_init=/b"), {"input.normalise": "r2plus1d_34_ig65m"}),
], ids=["twostream", "dinet_resnext", "dinet_resnet", "dinet_c3d", "dtcm", "lift", "lift_flow",
        "actlumos"])
def test_paper_configs_normalise_as_their_weights_were_trained(config, checks):
  for key, arch in checks.items():
    assert config_lib.get_key(config, key) == convert.input_normalise(arch), key
