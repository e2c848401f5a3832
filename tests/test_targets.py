"""darkjax.targets: the platform a step is compiled for, and what the layers and options make of it.

The key check traces a tiny model's forward and backward on this CPU host compiling for GPU and
TPU (lowered, never compiled): every conv, pool and depthwise choice is XLA's native op and none
of the CPU rewrites reaches the program, while the same trace compiling for CPU takes them.
"""

from __future__ import annotations

import collections
import re
import threading
import types

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import aot, targets
from darkjax import config as config_lib
from darkjax.layers import conv, depthwise

_NATIVE_ONLY = {"conv3d:native", "conv3d_kernel_grad:xla", "max_pool3d:native",
                "depthwise:native", "attention:xla"}
_DEPTHWISE_CHANNELS = 8
# What a GPU trace may choose besides: conv.frames2d (XLA's own 2D convolutions), host-independent,
# its grouped native convs with their groups bundled, max pools as strided-slice maxima and its
# 16-bit convolutions' channels padded to multiples of 8.
_GPU_OPS = _NATIVE_ONLY | {"conv3d:frames2d", "conv3d_groups:bundled", "attention:cudnn",
                           "max_pool3d:separable", "conv_channels:aligned"}
_NHWC = {"xla_gpu_force_conv_nhwc": True}


def test_platform_of_devices_and_meshes():
  devices = jax.devices()
  assert targets.platform_of(devices[0]) == "cpu"
  assert targets.platform_of(devices) == "cpu"
  mesh = jax.sharding.Mesh(np.array(devices).reshape((-1, 1)), ("data", "model"))
  assert targets.platform_of(mesh) == "cpu"
  for name, platform in (("cuda", "gpu"), ("rocm", "gpu"), ("gpu", "gpu"), ("tpu", "tpu")):
    assert targets.platform_of(types.SimpleNamespace(platform=name)) == platform
  with pytest.raises(ValueError, match="mixed|platforms.*cpu.*tpu"):
    targets.platform_of([devices[0], types.SimpleNamespace(platform="tpu")])
  with pytest.raises(ValueError, match="'metal'.*'cpu'"):
    targets.platform_of(types.SimpleNamespace(platform="metal"))


def test_compiling_for_nests_restores_and_names_bad_values():
  host = targets.platform()
  assert host == "cpu"
  with targets.compiling_for("gpu") as outer:
    assert outer == "gpu" and targets.platform() == "gpu"
    with targets.compiling_for("tpu"):
      assert targets.platform() == "tpu"
    assert targets.platform() == "gpu"
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    with targets.compiling_for(mesh) as inner:  # forced host devices: a CPU mesh
      assert inner == "cpu" and targets.platform() == "cpu"
    with pytest.raises(RuntimeError):
      with targets.compiling_for("tpu"):
        raise RuntimeError("restored on the way out")
    assert targets.platform() == "gpu"
  assert targets.platform() == host
  with pytest.raises(ValueError, match=r"'cuda'.*\('cpu', 'gpu', 'tpu'\)"):
    with targets.compiling_for("cuda"):
      pass


def test_compiling_for_is_per_thread():
  seen = []
  with targets.compiling_for("tpu"):
    thread = threading.Thread(target=lambda: seen.append(targets.platform()))
    thread.start()
    thread.join()
  assert seen == ["cpu"]


def test_compiler_options_per_platform(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  cpu = {"xla_disable_hlo_passes": "cse_barrier_expander"}   # what remat gave on CPU
  assert targets.compiler_options("cpu") == cpu
  assert targets.compiler_options() == cpu   # this host
  # GPU: XLA's 3D convolutions channels-last, grouped ones too; a compile-only GPU target adds
  # what it needs
  nhwc = {"xla_gpu_force_conv_nhwc": True}
  expected = {"gpu": nhwc, "tpu": {}}
  for platform in ("gpu", "tpu"):
    assert targets.compiler_options(platform) == expected[platform]
    with targets.compiling_for(platform):
      assert targets.compiler_options() == expected[platform]
      assert targets.init_compiler_options() == {}
    assert targets.init_compiler_options(platform) == {}
  assert targets.compiler_options("gpu", "h100:1") == {**aot.GPU_OPTIONS, **nhwc}
  fast = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
  assert targets.init_compiler_options("cpu") == targets.init_compiler_options() == fast
  assert targets.fastest_compile_options("cpu") == fast
  assert targets.fastest_compile_options("gpu") == {"xla_backend_optimization_level": 0}
  assert targets.fastest_compile_options("tpu") == {"xla_backend_optimization_level": 0,
                                                    "exec_time_optimization_effort": -1.0}
  monkeypatch.setenv("XLA_FLAGS", "--xla_disable_hlo_passes=foo,cse_barrier_expander")
  assert targets.compiler_options("cpu") == {"xla_disable_hlo_passes": "cse_barrier_expander,foo"}
  with pytest.raises(ValueError, match="'cuda'.*'gpu'"):
    targets.compiler_options("cuda")


class _TinyModel(nn.Module):
  """One of each platform-aware op: strided RGB stem, max pool, grouped, (3, 1, 1) temporal and
  pointwise convs, a depthwise 2D conv on the frames."""

  @nn.compact
  def __call__(self, x):
    x = conv.Conv3D(8, (3, 5, 5), strides=(1, 2, 2), padding=((1, 1), (2, 2), (2, 2)))(x)
    x = conv.max_pool3d(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)))
    x = conv.Conv3D(8, (3, 3, 3), padding=((1, 1),) * 3, feature_group_count=2)(x)
    x = conv.Conv3D(8, (3, 1, 1), padding=((1, 1), (0, 0), (0, 0)))(nn.relu(x))
    x = conv.Conv3D(_DEPTHWISE_CHANNELS, (1, 1, 1))(x)
    b, t, h, w, c = x.shape
    return depthwise.DepthwiseConv2D()(x.reshape((b * t, h, w, c)))


def _primitives(jaxpr) -> set[str]:
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      names |= _primitives(sub)
  return names


def _convolutions(hlo: str) -> list[tuple[int, int, int]]:
  """(rank, feature_group_count, batch_group_count) of every convolution in StableHLO text."""
  convs = []
  for line in hlo.splitlines():
    if "stablehlo.convolution" in line:
      dims = re.search(r"dim_numbers = \[([^\]]*)\]", line).group(1)
      feature = re.search(r"feature_group_count = (\d+)", line)
      batch = re.search(r"batch_group_count = (\d+)", line)
      convs.append((len(dims.split(",")), int(feature.group(1)) if feature else 1,
                    int(batch.group(1)) if batch else 1))
  return convs


def _trace(target):
  """Lowerings chosen, primitives and lowered StableHLO of the tiny model's forward + backward
  traced inside `compiling_for(target)` (a fresh function each time: traces are cached)."""
  model = _TinyModel()
  x = jnp.zeros((1, 4, 16, 16, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)

  def loss(params, x):
    return jnp.sum(model.apply(params, x) ** 2)

  with targets.compiling_for(target), conv.record_lowerings() as chosen:
    grad = jax.grad(loss)
    primitives = _primitives(jax.make_jaxpr(grad)(params, x).jaxpr)
    hlo = jax.jit(grad).lower(params, x).as_text()
  return dict(chosen), primitives, hlo


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_accelerator_trace_on_cpu_host_has_native_ops_only(platform):
  """XLA's own ops on accelerators: native 3D convolutions on TPU; on GPU the full ungrouped
  kernel (the stem) a channels-last 2D convolution (conv.frames2d_conv3d), the others XLA's 3D
  convolutions, the grouped one's two groups of 4 channels bundled into one (conv.gpu_group_bundle)
  and every one channels-last (targets.compiler_options)."""
  chosen, primitives, hlo = _trace(platform)
  assert chosen and set(chosen) <= _GPU_OPS if platform == "gpu" else _NATIVE_ONLY, chosen
  if platform == "gpu":   # none of the CPU lowerings' own VJPs: only the bundled conv's one
    assert "custom_vjp_call" in primitives
    with conv.gpu_group_bundle(0):
      assert "custom_vjp_call" not in _trace(platform)[1]
  else:
    assert "custom_vjp_call" not in primitives
  convs = _convolutions(hlo)
  assert {rank for rank, _, _ in convs} == {4, 5}, convs
  for rank, feature_groups, batch_groups in convs:
    if platform == "tpu":   # 2D: only the depthwise conv, grouped
      assert rank == 5 or _DEPTHWISE_CHANNELS in (feature_groups, batch_groups), convs
  if platform == "gpu":
    assert chosen["conv3d:frames2d"] == 1 and chosen["conv3d:native"] == 3, chosen
    assert chosen["conv3d_groups:bundled"] == 1, chosen   # the grouped conv
    assert targets.compiler_options(platform) == _NHWC
    assert all(feature_groups == 1 for rank, feature_groups, _ in convs if rank == 5), convs
  else:
    assert "conv3d_groups:bundled" not in chosen, chosen
    assert any(feature_groups == 2 for rank, feature_groups, _ in convs if rank == 5), convs
  # TPU: nn.max_pool's gradient; GPU: its overlapping 1x3x3 pool of stride 2 too
  # (conv.choose_pool_lowering: strided-slice maxima for non-overlapping windows only)
  assert "select_and_scatter" in hlo


def test_cpu_trace_takes_the_cpu_rewrites():
  chosen, primitives, hlo = _trace("cpu")
  assert not {k for k in chosen if k.endswith(":native")}, chosen
  assert {"conv3d:s2d", "conv3d:taps2d", "conv3d:temporal2d", "conv3d:pointwise",
          "max_pool3d:separable", "depthwise:blockdiag"} <= set(chosen), chosen
  assert "custom_vjp_call" in primitives
  assert {rank for rank, _, _ in _convolutions(hlo)} == {4}   # 2D convs and matmuls only
  assert "select_and_scatter" not in hlo


def test_mesh_target_of_host_devices_is_cpu():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  chosen, _, _ = _trace(mesh)
  assert "conv3d:native" not in chosen and "max_pool3d:separable" in chosen


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_trainer_compiles_for_its_mesh_platform(platform, monkeypatch, tmp_path):
  """The Trainer takes the platform from its mesh's devices: a mesh of (forced CPU) devices that
  report `platform` gets a train step traced with native ops only and no CPU-only XLA option."""
  from configs import synthetic  # pylint: disable=import-outside-toplevel

  from darkjax import task as task_lib  # pylint: disable=import-outside-toplevel
  from darkjax import train  # pylint: disable=import-outside-toplevel
  real = targets.platform_of
  monkeypatch.setattr(targets, "platform_of",
                      lambda devices: platform if isinstance(devices, jax.sharding.Mesh)
                      else real(devices))
  config = synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}")
  config.conv_lowering = "auto"   # what a full run does: the CPU rewrites where the target is CPU
  config.xla_opt_level = -1
  task = task_lib.load_task(config_lib.resolve(config, platform), num_classes=3)   # bf16 there
  trainer = train.Trainer(config, str(tmp_path / "run"), task=task, devices=jax.devices()[:2])
  # No CPU-only XLA option for the step (its jit's compiler_options) or the init programs.
  expected = _NHWC if platform == "gpu" else {}   # GPU: XLA's 3D convolutions channels-last
  assert trainer.platform == platform and trainer.compiler_options == expected
  assert targets.init_compiler_options(trainer.platform) == {}
  frames, size = config.input.frames, config.input.crop_size
  sample = {"video": jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.uint8),
            "label": jax.ShapeDtypeStruct((1,), jnp.int32)}
  batch = {k: jax.ShapeDtypeStruct((2,) + v.shape[1:], v.dtype, sharding=trainer.batch_sharding)
           for k, v in sample.items()}
  with conv.record_lowerings() as chosen, trainer.scope():
    trainer.build(sample)
    lowered = trainer.train_step.lower(trainer.abstract_state, batch, jax.random.key(0))
  assert chosen and set(chosen) <= (_GPU_OPS if platform == "gpu" else _NATIVE_ONLY), chosen
  assert trainer.compiler_options == expected   # no grouped conv: still channels-last
  ranks = collections.Counter(rank for rank, _, _ in _convolutions(lowered.as_text()))
  # GPU: its full 3x3x3 kernels as channels-last 2D convolutions; their bf16 kernels' gradients
  # (float32 across the 2 devices, precision.float32_weight_gradients) XLA's own 3D ones
  if platform == "gpu":
    rank5 = [line for line in lowered.as_text().splitlines() if "stablehlo.convolution" in line
             and len(re.search(r"dim_numbers = \[([^\]]*)\]", line).group(1).split(",")) == 5]
    assert ranks[4] > 0 and rank5 and chosen["conv3d_kernel_grad:xla"] > 0, (ranks, chosen)
    # each a kernel's gradient: its result laid out as the kernel (spatial, in, out)
    assert all("->[0, 1, 2, b, f]" in line for line in rank5), rank5[0]
  else:
    assert set(ranks) == {5}, ranks


def test_compilation_cache_setting(tmp_path, monkeypatch):
  before = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    assert targets.use_compilation_cache(str(tmp_path / "other")) == str(tmp_path / "mine")
    jax.config.update("jax_compilation_cache_dir", None)   # nothing set by the process
    assert targets.use_compilation_cache("") is None
    assert jax.config.jax_compilation_cache_dir is None
    assert targets.use_compilation_cache(str(tmp_path / "given")) == str(tmp_path / "given")
    assert (tmp_path / "given").is_dir()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "given")
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("DARKJAX_COMPILATION_CACHE", str(tmp_path / "env"))
    assert targets.use_compilation_cache("auto") == str(tmp_path / "env")
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.delenv("DARKJAX_COMPILATION_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert targets.use_compilation_cache("auto") == str(tmp_path / "home/.cache/darkjax/xla")
    # entries a full disk left empty are removed (JAX warned of them on every run, forever)
    jax.config.update("jax_compilation_cache_dir", None)
    (tmp_path / "given" / "jit_step-ab12-cache").write_bytes(b"")
    (tmp_path / "given" / "jit_step-cd34-cache").write_bytes(b"an executable")
    assert targets.use_compilation_cache(str(tmp_path / "given")) == str(tmp_path / "given")
    assert sorted(p.name for p in (tmp_path / "given").iterdir()) == ["jit_step-cd34-cache"]
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


def test_compile_only_steps_skip_the_persistent_cache():
  # An executable compiled for a compile-only target cannot be read back on this host (JAX warns
  # "PjRtCompiler must be constructed with a Client" on every such read).
  assert jax.config.jax_enable_compilation_cache
  with targets.without_compilation_cache():
    assert not jax.config.jax_enable_compilation_cache
  assert jax.config.jax_enable_compilation_cache
