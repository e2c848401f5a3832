"""darkjax.tools.zoo_table: FLOP / MAC counts against hand counts, pinned parameter counts, CLI."""

from __future__ import annotations

from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.extend import core as jex_core

from darkjax import models, targets
from darkjax.layers.conv import Conv3D, conv3d, native_lowering
from darkjax.tools import zoo_table


class _ScannedDense(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.relu(nn.Dense(x.shape[-1], name="dense")(x)), None


class _TinyNet(nn.Module):
  """Two padded 3D convs (no activation: little elementwise work), a mean pool, a Dense, 3
  scanned Dense layers and a head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Conv3D(16, (3, 3, 3), strides=(1, 2, 2), padding=((1, 1),) * 3, name="conv1")(x)
    x = Conv3D(32, (1, 3, 3), padding=((0, 0), (1, 1), (1, 1)), name="conv2")(x)
    x = nn.Dense(64, name="fc")(jnp.mean(x, axis=(1, 2, 3)))
    x, _ = nn.scan(_ScannedDense, variable_axes={"params": 0}, split_rngs={"params": True},
                   length=3)(name="blocks")(x, None)
    return nn.Dense(10, name="head")(x), {"features": x}


_SHAPE = (1, 4, 8, 8, 3)  # conv1 -> (1, 4, 4, 4, 16), conv2 -> (1, 4, 4, 4, 32)
_DENSE_MACS = 32 * 64 + 3 * 64 * 64 + 64 * 10
# Every kernel tap, padding included (the convention of thop / fvcore and of `count_macs`).
_PADDED_MACS = (4 * 4 * 4 * 16) * (27 * 3) + (4 * 4 * 4 * 32) * (9 * 16) + _DENSE_MACS
# Taps inside the input, per axis summed over output positions: conv1 T: 4 outputs x 3 taps - 2
# at the borders = 10; H, W (stride 2, 8 -> 4): output 0 loses one tap = 11. conv2: T 4; H, W 10.
_VALID_MACS = 10 * 11 * 11 * 3 * 16 + 4 * 10 * 10 * 16 * 32 + _DENSE_MACS


def test_tiny_model_counts_match_hand_counts():
  cost = zoo_table.forward_cost(_TinyNet(), _SHAPE)
  assert cost["macs"] == _PADDED_MACS
  # XLA: 2 FLOPs per multiply-add over taps inside the input, plus a little elementwise work.
  assert 2 * _VALID_MACS <= cost["flops"] <= 1.01 * 2 * _VALID_MACS
  # Counting the scan body once (XLA's default for while loops) would lose 2 x 64 x 64 MACs.
  assert cost["flops"] > 2 * (_VALID_MACS - 2 * 64 * 64) * 1.01
  params = 81 * 16 + 9 * 16 * 32 + (32 * 64 + 64) + 3 * (64 * 64 + 64) + (64 * 10 + 10)
  assert cost["params"] == params


def test_xla_counts_valid_taps_of_native_conv_exactly():
  x = jax.ShapeDtypeStruct((1, 4, 8, 8, 3), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 3, 3, 16), jnp.float32)
  conv = lambda x, k: conv3d(x, k, (1, 2, 2), ((1, 1),) * 3, lowering="native")  # noqa: E731
  flops = jax.jit(conv).lower(x, kernel).cost_analysis()["flops"]
  assert flops == 2 * 10 * 11 * 11 * 3 * 16


def test_native_lowering_context_gives_3d_convs():
  x = jax.ShapeDtypeStruct((1, 4, 8, 8, 8), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 3, 8, 8), jnp.float32)
  conv = lambda x, k: conv3d(x, k, padding=((1, 1),) * 3)  # noqa: E731

  def conv_ranks(jaxpr):
    ranks = set()
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        ranks.add(len(eqn.invars[1].aval.shape))
      for sub in jex_core.jaxprs_in_params(eqn.params):  # custom_vjp / pjit bodies
        ranks |= conv_ranks(sub)
    return ranks

  if targets.platform() == "cpu":  # the CPU lowering: 2D convs
    assert conv_ranks(jax.make_jaxpr(conv)(x, kernel).jaxpr) == {4}
  with native_lowering():  # a fresh function: traces are cached per function
    assert conv_ranks(jax.make_jaxpr(lambda x, k: conv(x, k))(x, kernel).jaxpr) == {5}


@pytest.mark.parametrize("name,num_classes,expected", [
    ("r3d_18", 400, 33_371_472),          # torchvision's R3D_18_Weights num_params
    ("resnext3d_101", 11, 47_543_755),    # DTCM Table III: 47.54 M (11-class ARID head)
    ("resnext3d_101", 400, 48_340_816),
])
def test_pinned_param_counts(name, num_classes, expected):
  model = models.build(name, num_classes)
  variables, _ = zoo_table._abstract_inputs(model, (1, 16, 112, 112, 3))  # eval_shape only
  assert zoo_table.count_params(variables) == expected


def test_default_models_skip_test_enhancer_and_composite_models():
  names = zoo_table.default_models()
  assert "resnext3d_101" in names and "r2plus1d_18" in names and "vit_b16" in names
  for skipped in ("resnet3d_tiny", "dtcm_enhancer", "zero_dce", "dinet_c3d", "dtcm",
                  "liftnet_small", "twostream_c3d", "twostream_c3d_small_bn"):
    assert skipped not in names


def test_cli_writes_table(tmp_path, capsys):
  out = tmp_path / "zoo.md"
  assert zoo_table.main(["--models", "small3d_tiny", "c3d_tiny", "--frames", "16,32", "--size",
                         "32", "--classes", "5", "--out", str(out)]) == 0
  table = out.read_text()
  assert table in capsys.readouterr().out
  row = next(line for line in table.splitlines() if line.startswith("| `c3d_tiny`"))
  assert "GFLOPs 32x32²" in table and "fc6 sized for it" in row
  flops16, flops32 = (float(cell) for cell in row.split("|")[3:5])
  assert 1.5 < flops32 / flops16 < 2.5  # twice the frames, about twice the cost


def test_cli_rejects_unknown_model(capsys):
  assert zoo_table.main(["--models", "no_such_model"]) == 2
  assert "no_such_model" in capsys.readouterr().err


def test_cli_refuses_bad_numbers_and_an_unwritable_out_before_costing(tmp_path, capsys):
  for flags, line in ((["--classes", "-5"], "--classes -5: must be >= 1"),
                      (["--out", str(tmp_path / "nodir" / "zoo.md")],
                       f"--out {tmp_path / 'nodir' / 'zoo.md'}: {tmp_path / 'nodir'} does not "
                       "exist")):
    with mock.patch.object(zoo_table, "model_row", side_effect=AssertionError("costed")):
      with pytest.raises(SystemExit):
        zoo_table.main(["--models", "c3d_tiny", *flags])
    assert line in capsys.readouterr().err
