"""C3D: pinned size, output contract, conversion of the PyTorch port, parity with PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import models
from darkjax.models import c3d as c3d_lib
from darkjax.convert import c3d as convert_c3d
from darkjax.convert import common
import torch_parity

TINY = dict(widths=(4, 8, 8, 8, 16, 16, 16, 16), fc_width=32)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_pinned_parameter_count():
  model = models.build("c3d", 487)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 112, 112, 3)))
  assert _count(shapes) == 79_991_015
  assert shapes["params"]["fc6"]["kernel"].shape == (8192, 4096)
  assert set(shapes) == {"params"}


def test_output_contract_and_input_size_check():
  model = models.build("c3d_tiny", 5)
  clips = jnp.ones((2, 16, 32, 32, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), clips)
  (logits, out) = jax.eval_shape(model.apply, shapes, clips)
  assert logits.shape == (2, 5)
  assert out["stem"].shape == (2, 16, 16, 16, 4)
  # Caffe's ceil-mode pool5 takes 2 x 2 to 1 x 1; the port's padded one keeps 2 x 2
  assert [out[f"stage{i}"].shape for i in range(1, 5)] == [
      (2, 8, 8, 8, 8), (2, 4, 4, 4, 8), (2, 2, 2, 2, 16), (2, 1, 1, 1, 16)]
  port = models.build("c3d_tiny", 5, pooling="port")
  assert jax.eval_shape(port.apply, jax.eval_shape(port.init, jax.random.key(0), clips),
                        clips)[1]["stage4"].shape == (2, 1, 2, 2, 16)
  with pytest.raises(ValueError, match="pooling 'ceil' is not one of"):
    jax.eval_shape(models.build("c3d_tiny", 5, pooling="ceil").init, jax.random.key(0), clips)
  assert out["features"].shape == (2, 32)
  headless = {"params": {k: v for k, v in shapes["params"].items() if k != "fc8"}}
  features, _ = jax.eval_shape(models.build("c3d_tiny", 0).apply, headless, clips)
  assert features.shape == (2, 32)
  with pytest.raises(ValueError, match=r"C3D: clips must be \(16, 32, 32\).*got \(8, 32, 32\)"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 8, 32, 32, 3)))
  with pytest.raises(ValueError, match="input_size .* too small: conv5b"):
    jax.eval_shape(models.build("c3d_tiny", 5, input_size=(8, 32, 32)).init, jax.random.key(0),
                   jnp.ones((1, 8, 32, 32, 3)))


def test_batch_norm_variant_normalises_every_convolution():
  # batch_norm=True: BatchNorm between each conv (then without bias) and its ReLU; the synthetic
  # two-stream towers (twostream_c3d_small_bn) use it, without fc dropout.
  model = models.build("c3d_tiny", 5, batch_norm=True, conv_lowering="native")
  clips = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 32, 32, 3)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), clips)
  assert set(variables) == {"params", "batch_stats"}
  assert "bias" not in variables["params"]["conv1"]
  assert sorted(variables["batch_stats"]) == sorted(f"{n}_bn" for n in c3d_lib.CONV_NAMES)
  _, updated = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": jax.random.key(1)}))(
      variables, 5.0 + clips)
  moved = updated["batch_stats"]["conv1_bn"]["mean"] - variables["batch_stats"]["conv1_bn"]["mean"]
  assert float(jnp.min(jnp.abs(moved))) > 0   # training updates the running statistics
  plain = models.build("c3d_tiny", 5, conv_lowering="native")
  assert _count(variables["params"]) == _count(
      jax.eval_shape(plain.init, jax.random.key(0), clips)["params"]) \
      - sum(TINY["widths"]) + 2 * sum(TINY["widths"])   # conv biases -> BN scale and bias
  towers = models.build("twostream_c3d_small_bn", 20)
  shapes = jax.eval_shape(towers.init, jax.random.key(0), {s: clips for s in ("ir", "flow")})
  assert sorted(shapes["batch_stats"]) == ["flow", "ir"]
  assert towers.backbone_kwargs["dropout_rate"] == 0.0


def test_dropout_only_in_training():
  model = models.build("c3d_tiny", 3, conv_lowering="native")
  clips = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 32, 32, 3)), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), clips)
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
                           shapes)

  @jax.jit
  def run(variables):
    train = [model.apply(variables, clips, train=True, rngs={"dropout": jax.random.key(i)})[0]
             for i in range(2)]
    return model.apply(variables, clips)[0], model.apply(variables, clips)[0], train

  eval_a, eval_b, (train_a, train_b) = run(variables)
  np.testing.assert_array_equal(eval_a, eval_b)
  assert not np.allclose(train_a, train_b)


@pytest.mark.torch_parity
@pytest.mark.parametrize("pooling", ["caffe", "port"])
def test_matches_torch(pooling):
  # At 112 x 112 pool5 meets 7 x 7: Caffe's ceil mode (windows at 0, 2, 4, 6, the last cut short)
  # and the port's padding (windows at -1, 1, 3, 5) both give 4 x 4 from other windows.
  torch = torch_parity.require_torch()
  from darkjax.tools import torch_refs
  torch.manual_seed(0)
  reference = torch_refs.C3DTorch(num_classes=7, fc_in=16 * 4 * 4, pooling=pooling,
                                  **TINY).eval()
  state = {f"module.{k}": v for k, v in reference.state_dict().items()}
  size = dict(input_size=(16, 112, 112), pooling=pooling)
  variables = convert_c3d.convert("c3d_tiny", state, model_kwargs=size)
  reference = torch_parity.reference(reference)
  model = models.build("c3d_tiny", 7, **size)
  clips = np.random.default_rng(0).standard_normal((1, 16, 112, 112, 3)).astype(np.float32)
  weights = np.random.default_rng(1).standard_normal((1, 7)).astype(np.float32)

  logits = reference(torch_parity.tensor(clips.transpose(0, 4, 1, 2, 3)))
  (logits * torch_parity.tensor(weights)).sum().backward()
  torch_logits = torch_parity.numpy(logits)
  torch_grad = common.conv_kernel(reference.conv1.weight.grad.numpy())

  @jax.jit
  def flax_outputs(variables):
    def loss(params):
      logits, _ = model.apply({"params": params}, clips)
      return jnp.sum(logits * weights), logits
    grads, logits = jax.grad(loss, has_aux=True)(variables["params"])
    return logits, grads["conv1"]["kernel"]

  flax_logits, flax_grad = flax_outputs(variables)
  why = "float32 rounding through 8 convolutions and 3 dense layers (seen <= 3.1e-7)"
  torch_parity.assert_close(flax_logits, torch_logits, 1e-5, why, "logits")
  torch_parity.assert_close(flax_grad, torch_grad, 1e-5, why, "conv1 kernel gradient")
  other = models.build("c3d_tiny", 7, input_size=(16, 112, 112),
                       pooling={"caffe": "port", "port": "caffe"}[pooling])
  pooled = lambda m: jax.jit(m.apply)(variables, clips)[1]["stage4"]  # noqa: E731
  assert not np.allclose(pooled(other), pooled(model), rtol=0.1, atol=0)


def test_full_size_conversion_and_head_handling():
  torch = pytest.importorskip("torch")
  from darkjax.tools import torch_refs
  with torch.device("meta"):
    reference = torch_refs.C3DTorch()
  state = {k: np.zeros(v.shape, np.float32) for k, v in reference.state_dict().items()}
  variables = convert_c3d.convert("c3d", state)
  assert _count(variables) == 79_991_015
  assert variables["params"]["fc6"]["kernel"].shape == (8192, 4096)
  headless = convert_c3d.convert("c3d", state, num_classes=101)
  assert "fc8" not in headless["params"] and "fc7" in headless["params"]
  assert "fc8" in convert_c3d.convert("c3d", state, num_classes=487)["params"]
  del state["conv3b.bias"]
  state["conv9.weight"] = np.zeros(3, np.float32)
  with pytest.raises(common.ConversionError, match=r"(?s)missing.*conv3b/bias.*unused.*conv9"):
    convert_c3d.convert("c3d", state)
  with pytest.raises(common.ConversionError, match="not a C3D variant"):
    convert_c3d.convert("resnet3d_18", state)


def test_bench_train_step_vs_torch_smoke(capsys):
  pytest.importorskip("torch")
  from darkjax.tools import bench
  result = bench.main(["--model", "c3d_tiny", "--vs-torch", "--batch", "2", "--frames", "16",
                       "--size", "32", "--steps", "1", "--rounds", "1"])
  assert result["flax_step_s"] > 0 and result["torch_step_s"] > 0 and result["ratio"] > 0
  assert result["compile_s"] > 0
  assert len(result["round_ratios"]) == 1 and result["round_ratios"][0] > 0
  # The device it ran on and what every backend-aware op chose there (C3D: 3x3x3 convs, pools).
  assert result["device"] == "cpu" and result["lowerings"]["conv3d:sum2d"] >= 1
  assert result["lowerings"]["max_pool3d:separable"] >= 1
  out = capsys.readouterr().out
  assert "flax/torch ratio" in out and "lowerings: " in out and "conv3d:sum2d x" in out
  with pytest.raises(ValueError, match=r"C3D: clips must be \(16, 32, 32\)"):
    bench.main(["--model", "c3d_tiny", "--size", "48", "--steps", "1"])
  with pytest.raises(SystemExit):  # argparse: exactly one benchmark flag
    bench.main(["--steps", "1"])


def test_bench_conv_variants_smoke(capsys, tmp_path):
  from darkjax.tools import bench, bench_step
  for spec, settings in (
      ("auto", {}),
      ("lowering=sum2d,ynn_min_core_use=0", {"lowering": "sum2d", "ynn_min_core_use": 0.0}),
      ("bn_relu=plain", {"bn_relu": "plain"}), ("max_pool=native", {"max_pool": "native"}),
      ("align_channels=off", {"align_channels": "off"}), ("pointwise=gemm", {"pointwise": "gemm"}),
      ("group_bundle=16,pointwise=gemm", {"group_bundle": 16, "pointwise": "gemm"}),
      ("donate=off", {"donate": "off"}),
      ("model.stem_lowering=native,xla_gpu_autotune_level=2",
       {"model_kwargs": {"stem_lowering": "native"},
        "compiler_options": {"xla_gpu_autotune_level": 2}})):
    assert bench_step.parse_variant(spec) == settings, spec
  for spec, message in (
      ("kernel_grad=fast", "kernel_grad='fast', expected one of"),
      ("bn_relu=off", "bn_relu='off', expected one of"),
      ("max_pool=max", "max_pool='max', expected one of"),
      ("align_channels=no", "align_channels='no', expected one of"),
      ("pointwise=dot", "pointwise='dot', expected one of"),
      ("group_bundle=wide", "group_bundle='wide', expected a channel count"),
      ("donate=no", "donate='no', expected one of"),
      ("model.=native", "model.FIELD=VALUE")):
    with pytest.raises(ValueError, match=message):
      bench_step.parse_variant(spec)
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel
  for settings, chosen_pool in (({}, "separable"), ({"max_pool": "native"}, "native")):   # CPU
    # a fresh trace
    with bench_step.conv_overrides(settings), conv.record_lowerings() as chosen:
      jax.eval_shape(lambda x: conv.max_pool3d(x, (2, 2, 2), (2, 2, 2)),
                     jax.ShapeDtypeStruct((1, 2, 4, 4, 1), jnp.float32))
    assert dict(chosen) == {f"max_pool3d:{chosen_pool}": 1}
  # a variant's own lowering wins over --lowering, for every way bench builds its model
  assert bench_step.build_model("resnext3d_tiny", "float32", "native", bench_step.parse_variant(
      "lowering=frames2d,model.stem_lowering=native")).conv_lowering == "frames2d"
  with pytest.raises(ValueError, match=r"c3d_tiny does not take \['stem_lowering'\]"):
    bench_step.flax_step("c3d_tiny", 2, 16, 32, None,
                         conv_settings=bench_step.parse_variant("model.stem_lowering=native"))
  # a pool setting the model overrides (C3D's native form makes its pools nn.max_pool) is an
  # error, not a variant that times something else
  with pytest.raises(ValueError, match=r"max_pool=separable did not apply: .*\['native'\]"):
    bench_step.flax_step("c3d_tiny", 2, 16, 32, None, conv_settings=bench_step.parse_variant(
        "lowering=native,max_pool=separable"))
  with pytest.raises(SystemExit):  # argparse reports the bad variant
    bench.main(["--model", "c3d_tiny", "--variants", "auto;threads=2"])
  with pytest.raises(SystemExit):  # a compile-only target compiles, it times nothing
    bench.main(["--model", "c3d_tiny", "--target", "h100:1", "--vs-torch"])
  # a row's levers, flax alone (launch/bench_gpu.sh with DARKJAX_BENCH_TORCH=0): a compile-only
  # pre-pass command per variant, then the timed run reading their compiles as the cold ones,
  # pipelined and profiled
  row = ["--model", "c3d_tiny", "--batch", "2", "--frames", "16", "--size", "32",
         "--variants", "auto;kernel_grad=dots,donate=off"]
  colds = [bench.main(row[:-1] + [spec, "--compile-only", "--concurrent", "2", "--json",
                                  str(tmp_path / f"cold{k}.json")])
           for k, spec in enumerate(row[-1].split(";"))]
  cold = {"variants": {spec: entry for c in colds for spec, entry in c["variants"].items()}}
  assert colds[0]["concurrent_compiles"] == 2 and "step_s" not in cold["variants"]["auto"]
  result = bench.main(row + ["--steps", "1", "--rounds", "2", "--pipelined", "--profile", "1",
                             "--cold-from", str(tmp_path / "cold0.json"),
                             "--cold-from", str(tmp_path / "cold1.json"), "--json",
                             str(tmp_path / "levers.json")])
  variants = result["variants"]
  lever = "kernel_grad=dots,donate=off"
  assert list(variants) == ["auto", lever]
  assert variants["auto"]["round_ratios"] == [1.0, 1.0]
  assert len(variants[lever]["round_ratios"]) == 2
  assert variants[lever]["step_s"] > 0 and variants["auto"]["compile_s"] > 0
  # the state donated by default (its buffers the outputs'), copied without donation
  assert variants["auto"]["alias"] > 0 and variants[lever]["alias"] == 0
  for entry in variants.values():   # back to back, each against the first; its device profile
    assert entry["pipelined_ms"] > 0 and entry["pipelined_ratio"] > 0
    assert entry["profile"]["categories_ms"]["convolution"] > 0 and entry["temp"] > 0
  assert variants["auto"]["pipelined_ratio"] == 1.0
  assert result["cold_compile"] == {"from": [str(tmp_path / "cold0.json"),
                                             str(tmp_path / "cold1.json")], "concurrent": 2,
                                    **{f"flax {spec}": entry["compile_s"]
                                       for spec, entry in cold["variants"].items()}}
  output = capsys.readouterr().out
  assert f"{lever} / auto: wall per round" in output and "auto profile: device" in output
  from darkjax.tools import bench_report  # pylint: disable=import-outside-toplevel
  table = bench_report.markdown(bench_report.load([str(tmp_path / "levers.json")]))
  assert "| model | B x T x H^2 | dtype | optimizer | variant | step ms (best round) |" in table
  lines = [line for line in table.splitlines() if line.startswith("| `c3d_tiny`")]
  assert [line.split(" | ")[4] for line in lines] == ["`auto`", f"`{lever}`"]
  assert lines[0].split(" | ")[10] == f"{cold['variants']['auto']['compile_s']:.1f}"   # cold
  assert "- [1] `python -m darkjax.tools.bench --model c3d_tiny" in table


def test_bench_memory_per_remat_policy(capsys):
  from darkjax.tools import bench  # pylint: disable=import-outside-toplevel
  result = bench.main(["--model", "resnet3d_tiny", "--memory", "--compile-only", "--batch", "2",
                       "--frames", "8", "--size", "32", "--remat", "none,full"])
  assert list(result["remat"]) == ["none", "full"]   # none first, once
  none, full = result["remat"]["none"], result["remat"]["full"]
  assert none["temp"] > 0 and full["argument"] == none["argument"]
  # Each policy's figure is relative to no remat (whether XLA:CPU's schedule keeps less at this
  # size is the benchmark's to report, docs/benchmarks.md).
  assert full["temp_reduction"] == none["temp"] / full["temp"]
  assert "temp_reduction" not in none
  assert result["device"] == "cpu"
  assert "temp memory none / full" in capsys.readouterr().out
  with pytest.raises(ValueError, match="remat='everything'"):
    bench.main(["--model", "resnet3d_tiny", "--memory", "--remat", "everything"])
