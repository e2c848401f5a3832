"""darkjax.aot: named compile-only targets, and the memory planner on them.

The synthetic `runlocal` step compiles on this CPU host for a TPU v5e 2x2 slice and one H100 with
XLA's native ops only, and XLA's memory analysis is read; the planner lists the default and a
candidate setting. Every paper config's main phase compiles at its `runlocal` size for both
targets (the pod path: no CPU lowering, memory figures read against the target's HBM), and one
paper fully sharded (fsdp) over a 16-chip, 4-host TPU v5e slice. The compile tests skip only when
the target's compiler (the `aot-tpu` / `aot-gpu` extra) is not installed.
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import pytest

from darkjax import aot, fit, phases, targets, train
from darkjax import config as config_lib
from darkjax import task as task_lib
from darkjax.layers import attention, conv
from darkjax.tools import bench_config, measure
from darkjax.tools import fit as fit_tool

_NATIVE_ONLY = {"conv3d:native", "conv3d_kernel_grad:xla", "max_pool3d:native",
                "depthwise:native", "attention:xla"}
# XLA's own ops on a GPU also as channels-last 2D convolutions (conv.frames2d_conv3d), grouped
# native convs with their groups bundled, max pools as strided-slice maxima and 16-bit
# convolutions with their channels padded to multiples of 8 (conv2d.aligned_conv)
_GPU_OPS = _NATIVE_ONLY | {"conv3d:frames2d", "conv3d_groups:bundled", "attention:cudnn",
                           "max_pool3d:separable", "conv_channels:aligned"}
GIB = 2 ** 30


def _needs(target: str, extra: str):
  """Skips without the target's compiler, except where DARKJAX_REQUIRE_AOT is set (.ci/run sets it
  after installing the extras), where a missing compiler is a failure."""
  missing = aot.missing_package(target)
  if missing and os.environ.get("DARKJAX_REQUIRE_AOT"):
    raise RuntimeError(f"DARKJAX_REQUIRE_AOT is set but the {extra} extra is missing: {missing}")
  return pytest.mark.skipif(bool(missing), reason=f"needs the {extra} extra ({missing})")


needs_tpu = _needs("tpu-v5e:2x2", "aot-tpu")
needs_gpu = _needs("h100:1", "aot-gpu")


@pytest.mark.parametrize("name", ["b200", "h100:3x3", "h100:12", "tpu-v5e:2x2x2", "tpu-v4:ax2",
                                  "tpu"])
def test_parse_errors_name_the_valid_targets(name):
  with pytest.raises(ValueError, match=r"valid targets: h100\[:1\], h200.*tpu-v6e\[:2x2\]"):
    aot.parse(name)


def test_names_memory_and_options():
  assert aot.parse("tpu-v4:2x2").name == "tpu-v4:2x2x1"   # v4 / v5p topologies are 3-d
  assert aot.parse("H100").name == "h100:1" and aot.parse("h100:16").device_count == 16
  assert aot.parse("tpu-v5e:4x4").device_count == 16
  assert aot.hbm_bytes("tpu-v5e:2x2") == 16 * GIB and aot.hbm_bytes("tpu-v5p") == 95 * GIB


def test_a_gpu_target_holds_what_jax_allocator_allows_there():
  assert aot.gpu_memory_fraction({}) == 0.75   # JAX's default preallocation share
  assert aot.gpu_memory_fraction({"XLA_PYTHON_CLIENT_MEM_FRACTION": ".9"}) == 0.9
  assert aot.gpu_memory_fraction({"XLA_CLIENT_MEM_FRACTION": "0.5",
                                  "XLA_PYTHON_CLIENT_MEM_FRACTION": ".9"}) == 0.5
  with pytest.raises(ValueError, match="XLA_CLIENT_MEM_FRACTION='2'"):
    aot.gpu_memory_fraction({"XLA_CLIENT_MEM_FRACTION": "2"})
  assert aot.limit_bytes("h100:8", {}) == int(0.75 * aot.hbm_bytes("h100"))
  # a TPU: what XLA:TPU makes available of the chip's HBM, whatever the GPU allocator's share
  assert aot.limit_bytes("tpu-v5e:2x2", {"XLA_CLIENT_MEM_FRACTION": "0.5"}) == int(15.75 * GIB)
  assert fit.device_limit({}, None, "tpu-v6e:2x2") == int(31.25 * GIB)
  assert fit.device_limit({"device_memory_gib": 10.0}, None, "h200") == 10 * GIB   # config wins
  gpu = targets.compiler_options("gpu", "h100:8")
  assert gpu["xla_gpu_autotune_level"] == 0 and gpu["xla_gpu_enable_triton_gemm"] is False
  assert gpu["xla_gpu_force_conv_nhwc"] is True   # channels-last
  assert targets.compiler_options("gpu") == {"xla_gpu_force_conv_nhwc": True}
  assert targets.compiler_options("tpu", "tpu-v5e") == {}
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (63.90G) exceeds available HBM (15.75G).")
  assert aot.out_of_memory_figures(message) == (int(63.90 * GIB), int(15.75 * GIB))
  assert aot.out_of_memory_figures("INVALID_ARGUMENT: 3G") is None


@needs_tpu
@pytest.mark.parametrize("chip", ["tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e"])
def test_tpu_limits_are_what_xla_tpu_makes_available(chip):
  """CHIPS' available_gib is the figure libtpu's out-of-memory compile error prints: the limit
  the planner and the evaluations' check hold a step to on that chip."""
  device = aot.compile_only_devices(chip)[0]
  replicated = jax.sharding.SingleDeviceSharding(device)
  big = jax.ShapeDtypeStruct((200 * GIB // 4,), jnp.float32, sharding=replicated)
  with pytest.raises(Exception) as error:   # noqa: PT011  (libtpu's own error type)
    jax.jit(lambda a: (jnp.sin(a), jnp.cos(a))).lower(big).compile()
  figures = aot.out_of_memory_figures(str(error.value))
  assert figures is not None, str(error.value)[:300]
  assert abs(figures[1] - aot.limit_bytes(chip)) <= 0.01 * GIB, (chip, figures[1] / GIB)


def test_a_missing_compiler_names_the_pip_command(monkeypatch):
  monkeypatch.setattr(aot, "_installed", lambda module: False)
  aot.compile_only_devices.cache_clear()
  with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[aot-tpu\]'"):
    aot.compile_only_devices("tpu-v6e:2x2")
  with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[aot-gpu\]'"):
    aot.compile_only_devices("a100:2")


def _stand_in(tmp_path):
  config = config_lib.load("configs/synthetic.py:runlocal")
  return bench_config.stand_in_config(config, str(tmp_path / "data"), batch=8)


@needs_gpu
def test_a_trainer_for_a_target_computes_in_that_platforms_dtype(tmp_path):
  """compute_dtype "auto" under Trainer(target=...) is the target's bf16, not the CPU host's
  float32 (the config resolved for the mesh's platform before its task is built)."""
  config = _stand_in(tmp_path)
  assert config.compute_dtype == "auto"
  trainer = train.Trainer(config, str(tmp_path / "run"), target="h100:1")
  assert trainer.config.compute_dtype == "bfloat16" and trainer.task.dtype == jnp.bfloat16


@needs_gpu
def test_h100_step_compiles_with_native_ops(tmp_path):
  config = config_lib.resolve(_stand_in(tmp_path), "gpu")
  phase_config, task = task_lib.build_task(task_lib.main_phase(config), config)
  trainer = train.Trainer(phase_config, str(tmp_path / "run"), task=task, target="h100:1")
  assert trainer.platform == "gpu" and trainer.mesh.devices.size == 1
  assert trainer.compiler_options["xla_gpu_deviceless_cub_mode"] == 1
  with conv.record_lowerings() as chosen:
    need = trainer.compile_step()
  assert 0 < need < GIB
  assert chosen and set(chosen) <= _GPU_OPS, chosen
  limit = fit.device_limit(phase_config, trainer.mesh.devices.flat[0], trainer.target)
  assert limit == int(aot.CHIPS["h100"].hbm_bytes * aot.gpu_memory_fraction())
  # Its parameter init draws through JAX's GPU threefry kernel (targets.init_jit): one kernel call
  # per draw, none of the hash's unrolled rounds for XLA to compile; it compiles for the target.
  key = jax.eval_shape(lambda: jax.random.key(0))
  key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=trainer.replicated)
  with trainer.scope(), targets.without_compilation_cache():
    lowered = trainer._init.lower(key)   # pylint: disable=protected-access
    kernels = lowered.as_text().count("cu_threefry2x32_ffi")
    plain = trainer._init.jitted.lower(key).as_text()   # pylint: disable=protected-access
    lowered.compile()
  assert kernels > 0 and "cu_threefry2x32" not in plain
  assert plain.count("shift_left") > 10 * lowered.as_text().count("shift_left")


@needs_gpu
def test_bench_compiles_a_models_step_for_a_target_under_each_variant(tmp_path, capsys):
  """`bench --model M --target h100:1 --variants ...`: the step compiled for the target, nothing
  run, per variant its memory, traffic and lowerings (docs/benchmarks.md's deviceless rows):
  3D-ResNeXt's GPU forms (a 2D stem, fused BatchNorms) against the old ones, and its stem pool
  as strided-slice maxima."""
  from darkjax.tools import bench  # pylint: disable=import-outside-toplevel
  specs = ["auto", "model.stem_lowering=native", "max_pool=separable", "bn_relu=plain"]
  result = bench.main(["--model", "resnext3d_tiny", "--batch", "2", "--frames", "8", "--size",
                       "32", "--dtype", "bfloat16", "--target", "h100:1", "--variants",
                       ";".join(specs), "--json", str(tmp_path / "target.json")])
  assert (result["target"], result["platform"], list(result["variants"])) == (
      "h100:1", "gpu", specs)
  auto, stem, pools, plain = (result["variants"][spec] for spec in specs)
  assert auto["lowerings"]["conv3d:frames2d"] == 1 and "conv3d:frames2d" not in stem["lowerings"]
  assert auto["lowerings"]["max_pool3d:native"] == 1   # its overlapping stem pool
  assert pools["lowerings"]["max_pool3d:separable"] == 1
  for entry in result["variants"].values():
    assert entry["compile_s"] > 0 and entry["traffic"]["convolution"]["count"] > 0
    assert entry["memory"]["total"] == (entry["memory"]["argument"] + entry["memory"]["output"]
                                        + entry["memory"]["temp"] - entry["memory"]["alias"])
    # what the GPU's cold compile would autotune: each distinct convolution once, those of the
    # scanned stages' loop bodies too (the traffic counts the entry computation's)
    tuned = entry["autotuned"]
    assert tuned["convolutions"] > entry["traffic"]["convolution"]["count"]
    assert 0 < tuned["distinct_convolutions"] <= tuned["convolutions"], tuned
  # autodiff's BatchNorms keep float32 activations, stacked by the scanned stage
  assert plain["memory"]["temp"] > auto["memory"]["temp"], (plain["memory"], auto["memory"])
  assert json.load(open(tmp_path / "target.json", encoding="utf-8"))["variants"].keys() == set(
      specs)
  output = capsys.readouterr().out
  assert "compiled for h100:1 (gpu), nothing run" in output
  assert "autotuned on a GPU: " in output and " distinct), " in output
  from darkjax.tools import bench_report  # pylint: disable=import-outside-toplevel
  table = bench_report.markdown(bench_report.load([str(tmp_path / "target.json")]))
  assert table.count("| `resnext3d_tiny` | 2 x 8 x 32^2 | bfloat16 | h100:1 |") == len(specs)


@needs_tpu
def test_planner_on_a_tpu_v5e_slice(tmp_path, capsys):
  out = tmp_path / "fit.json"
  argv = ["--config", "configs/synthetic.py:runlocal", "--target", "tpu-v5e:2x2", "--batch", "8",
          "--candidates", "1", "--cache", str(tmp_path / "cache.json"), "--json", str(out),
          "--workdir", str(tmp_path / "work")]
  with conv.record_lowerings() as chosen:
    rows = fit_tool.main(argv)
  assert chosen and set(chosen) <= _NATIVE_ONLY, chosen
  assert [r["setting"] for r in rows] == ["default", "accum_steps=2"]
  for row in rows:
    assert row["target"] == "tpu-v5e:2x2" and row["fits"] is True, row
    assert 0 < row["need_bytes"] < row["limit_bytes"] == aot.limit_bytes("tpu-v5e")
  assert json.loads(out.read_text())[0]["need_bytes"] == rows[0]["need_bytes"]
  printed = capsys.readouterr().out
  assert "phase train on tpu-v5e:2x2 (4 device(s), TPU v5 lite)" in printed
  assert "default" in printed and "accum_steps=2" in printed
  again = fit_tool.main(argv)   # read from the cache: nothing compiles
  assert [r["need_bytes"] for r in again] == [r["need_bytes"] for r in rows]
  assert "[cached]" in capsys.readouterr().out and os.path.isfile(tmp_path / "cache.json")


def test_planner_reports_an_out_of_memory_compile_as_does_not_fit(tmp_path, capsys, monkeypatch):
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (63.90G) exceeds available HBM (15.75G).")

  def compile_step(self):
    raise RuntimeError(message)   # what XLA:TPU's compile raises when the step does not fit

  monkeypatch.setattr(train.Trainer, "compile_step", compile_step)
  rows = fit_tool.main(["--config", "configs/synthetic.py:runlocal", "--default-only",
                        "--cache", "", "--workdir", str(tmp_path)])
  assert len(rows) == 1 and rows[0]["fits"] is False
  assert (rows[0]["need_bytes"], rows[0]["limit_bytes"]) == (int(63.90 * GIB), int(15.75 * GIB))
  assert "63.90 GiB per device, limit  15.75 GiB: does not fit" in capsys.readouterr().out


@needs_gpu
def test_planner_flags_a_gpu_step_within_the_workspace_margin(tmp_path, capsys, monkeypatch):
  limit = aot.limit_bytes("h100:1")
  needs = iter([int(0.9 * limit), int(0.5 * limit)])
  monkeypatch.setattr(train.Trainer, "compile_step", lambda self: next(needs))
  table = tmp_path / "plan.md"
  argv = ["--config", "configs/synthetic.py:runlocal", "--default-only", "--target", "h100:1",
          "--cache", "", "--workdir", str(tmp_path), "--markdown", str(table)]
  tight, = fit_tool.main(argv)
  assert tight["fits"] and tight["tight"]
  assert "fits  (within 15% of the limit" in capsys.readouterr().out
  assert "| yes (within 15%) |" in table.read_text()
  roomy, = fit_tool.main(argv)
  assert roomy["fits"] and "tight" not in roomy and "within" not in capsys.readouterr().out


def test_planner_stops_at_the_first_fitting_setting_and_writes_a_table(tmp_path, capsys,
                                                                        monkeypatch):
  def compile_step(self):   # 2 GiB at one micro-batch, half per doubling of accum_steps (the
    # tests' 8 CPU devices take a global batch of 32 in 1, 2 or 4 micro-batches)
    return int(2 * GIB / int(self.config.accum_steps))

  monkeypatch.setattr(train.Trainer, "compile_step", compile_step)
  table = tmp_path / "plan.md"
  rows = fit_tool.main(["--config", "configs/synthetic.py:runlocal", "--config",
                        "configs/dinet_synthetic.py:runlocal", "--batch", "32", "--until-fit",
                        "--override", "device_memory_gib=1.5", "--cache", "",
                        "--workdir", str(tmp_path), "--markdown", str(table)])
  assert [(r["config"], r["setting"], r["fits"]) for r in rows] == [
      ("configs/synthetic.py:runlocal", "default", False),
      ("configs/synthetic.py:runlocal", "accum_steps=2", True),
      ("configs/dinet_synthetic.py:runlocal", "default", False),
      ("configs/dinet_synthetic.py:runlocal", "accum_steps=2", True)]
  lines = table.read_text().splitlines()
  assert len(lines) == 2 + len(rows) and lines[0].startswith("| config | phase | target |")
  assert lines[3].startswith("| `synthetic.py:runlocal` | train | local cpu x")
  assert "| 32 | float32 | device_memory_gib=1.5, accum_steps=2 | 1.00 | 1.50 | yes |" in lines[3]
  assert "does not fit" in capsys.readouterr().out
  # The same plan from its cache only: nothing compiles, and an uncached target says so.
  cache = tmp_path / "cache.json"
  argv = ["--config", "configs/synthetic.py:runlocal", "--batch", "32", "--default-only",
          "--cache", str(cache), "--workdir", str(tmp_path)]
  fit_tool.main(argv)
  monkeypatch.setattr(train.Trainer, "compile_step", lambda self: pytest.fail("compiled"))
  again = fit_tool.main(argv + ["--cache-only", "--override", "seed=1"])   # not in the cache
  assert again[0]["fits"] is None and "not compiled yet" in again[0]["error"]
  assert fit_tool.main(argv + ["--cache-only"])[0]["need_bytes"] == 2 * GIB


def test_planner_reports_the_batch_that_runs_on_the_devices(tmp_path, capsys, monkeypatch):
  compiled_at = []

  def compile_step(self):
    compiled_at.append(int(self.config.input.batch_size))
    return 2 ** 20

  monkeypatch.setattr(train.Trainer, "compile_step", compile_step)
  argv = ["--config", "configs/synthetic.py:runlocal", "--batch", "30", "--candidates", "1",
          "--cache", "", "--workdir", str(tmp_path)]
  rows = fit_tool.main(argv + ["--markdown", str(tmp_path / "plan.md")])   # 8 CPU devices
  assert "global batch 32 (config 30, rounded for 8 devices)" in capsys.readouterr().out
  assert [r["setting"] for r in rows] == ["default", "accum_steps=2"] and compiled_at == [32, 32]
  assert "| 32 (config 30) | float32 | default |" in (tmp_path / "plan.md").read_text()
  rows = fit_tool.main(argv + ["--override", "batch_rounding=error"])
  assert rows[0]["fits"] is None and "config.input.batch_size 30 is not divisible by the 8 " \
      "devices of the mesh; batches that run here: 24 or 32" in rows[0]["error"]
  assert "batches that run here: 24 or 32" in capsys.readouterr().out and compiled_at == [32, 32]


@needs_tpu
def test_a_tpu_run_compiles_its_evaluation_beside_the_step_before_training(tmp_path, compiles):
  """On a TPU the fit check compiles the evaluation while the step compiles on its thread (both
  host work there), once: `fit_evals` and the run's evaluations reuse it."""
  config = config_lib.load("configs/synthetic.py:runlocal")
  stand_in = config_lib.resolve(
      bench_config.stand_in_config(config, str(tmp_path / "data"), evals=True), "tpu")
  stand_in.eval_every = 0   # evaluates (at the end)
  phase = task_lib.main_phase(stand_in)
  phase_config, task = task_lib.build_task(phase, stand_in)
  build = phases.phase_trainers(phase, phase_config, task, {}, str(tmp_path / "run"),
                               target=TPU_TARGET)
  trainer = fit.fit_phase(phase_config, str(tmp_path / "run"), phase.name, build)
  steps = [thread for name, thread in compiles.seen if name == "train_step"]
  evals = [thread for name, thread in compiles.seen if name == "eval_step"]
  assert len(steps) == 1 and steps[0].startswith("darkjax-compile-"), compiles.seen
  assert evals == ["MainThread"], compiles.seen
  assert set(trainer.compile_evals()) == {"eval"}
  assert [name for name, _ in compiles.seen].count("eval_step") == 1   # reused


def test_planner_reports_what_an_evaluation_holds(tmp_path, capsys):
  rows = fit_tool.main(["--config", "configs/synthetic.py:runlocal", "--default-only", "--evals",
                        "--override", "device_memory_gib=1", "--cache", "",
                        "--workdir", str(tmp_path), "--markdown", str(tmp_path / "plan.md")])
  assert [r["setting"] for r in rows] == [
      "default", "evaluation at eval batch 8, 1 view(s) per example (eval)"]
  assert rows[1]["fits"] is True and 0 < rows[1]["need_bytes"] < rows[1]["limit_bytes"] == GIB
  assert "evaluation at eval batch 8, 1 view(s) per example (eval)" in capsys.readouterr().out
  assert "| device_memory_gib=1, evaluation at eval batch 8" in (tmp_path / "plan.md").read_text()


# ------------------------------------------------------------------ paper configs on the pod path
PAPERS = ("actlumos_arid", "lift_arid", "dtcm_arid", "twostream_infar", "dinet_infar")
TPU_TARGET, GPU_TARGET = "tpu-v5e:2x2", "h100:1"
FSDP_PAPER, FSDP_TARGET = "dinet_infar", "tpu-v5e:4x4"   # 16 chips on 4 hosts


@pytest.fixture(scope="module")
def paper_step(tmp_path_factory):
  """(paper, target, overrides) -> (trainer, bytes per device, lowerings chosen): the paper's main
  phase at its `runlocal` size on the synthetic stand-in data of its clip geometry
  (`bench_config.stand_in_config`, as the planner builds it), compiled for the target once per
  module. Its conv lowering is "auto" (runlocal forces "native"), so the lowerings say which
  platform the layers were traced for."""
  root = tmp_path_factory.mktemp("papers")
  stand_ins, steps = {}, {}

  def compile_step(paper: str, target: str, **overrides):
    key = (paper, target, tuple(sorted(overrides.items())))
    if key not in steps:
      if paper not in stand_ins:
        config = config_lib.load(f"configs/{paper}.py:runlocal")
        stand_ins[paper] = bench_config.stand_in_config(config, str(root / "data"), evals=True)
      config = config_lib.apply_overrides(stand_ins[paper], {"conv_lowering": "auto", **overrides})
      config = config_lib.resolve(config, aot.parse(target).platform)
      phase_config, task = task_lib.build_task(task_lib.main_phase(config), config)
      trainer = train.Trainer(phase_config, str(root / "run" / f"{paper}_{len(steps)}"),
                              task=task, target=target)
      with conv.record_lowerings() as chosen:
        need = trainer.compile_step()
      steps[key] = trainer, need, dict(chosen)
    return steps[key]

  return compile_step


def _collective_dtypes(hlo: str) -> set[str]:
  """The element types of every all-reduce and reduce-scatter result in an optimized HLO."""
  results = re.findall(r"= (.*?) (?:all-reduce|reduce-scatter)(?:-start)?\(", hlo)
  return {dtype for result in results for dtype in re.findall(r"(\w+)\[", result)}


def _unaligned_convs(hlo: str) -> list[str]:
  """The ungrouped 16-bit cuDNN convolutions of an optimized XLA:GPU module whose kernel's input
  or output channels are not multiples of 8 (what conv2d.aligned_conv pads), as 'name kernel'."""
  from darkjax import profiling  # pylint: disable=import-outside-toplevel
  found = []
  for name, info in profiling.hlo_ops(hlo).items():
    if "__cudnn$conv" not in info.get("target", "") or "kernel" not in info or "groups" in info:
      continue
    dtype, dims = re.fullmatch(r"(\w+)\[([\d,]+)\]", info["kernel"]).groups()
    sizes = [int(d) for d in dims.split(",")]
    labels = info["dim_labels"].split("->")[0].split("_")[1]
    if dtype in ("bf16", "f16") and any(sizes[labels.index(axis)] % 8 for axis in "io"):
      found.append(f"{name} {info['kernel']}")
  return found


def _check_pod_step(trainer, need, chosen, target):
  """Compiled for the target's platform and devices with native ops only, no CPU-only XLA option,
  and a memory figure under what a run on the target may hold, the limit the fit check reads; on
  one GPU every ungrouped 16-bit convolution with channels in multiples of 8 (cuDNN's aligned
  kernels: XLA does not pad bf16 ones, conv2d.aligned_conv does).
  Data parallel over more than one device, its gradients are summed across them in float32: no
  16-bit all-reduce or reduce-scatter (darkjax.layers.precision; bf16 ones before). (With fsdp
  the partitioner may split a small layer's contraction over the devices instead, its partial
  activations reduced in bf16: not checked here; DTCM's fsdp step on eight H100s has none.)"""
  assert trainer.platform == aot.parse(target).platform
  assert trainer.mesh.devices.size == aot.parse(target).device_count
  assert "xla_disable_hlo_passes" not in trainer.compiler_options
  assert chosen and set(chosen) <= (_GPU_OPS if trainer.platform == "gpu" else _NATIVE_ONLY), chosen
  limit = fit.device_limit(trainer.config, trainer.mesh.devices.flat[0], trainer.target)
  assert limit == aot.limit_bytes(target)
  assert need is not None and 0 < need < limit
  if trainer.platform == "gpu" and trainer.mesh.devices.size == 1:
    # cuDNN's aligned kernels for every ungrouped 16-bit conv (on one device: over several, a
    # device's own kernel gradient, precision.conv_weight_gradient, may compile to a forward
    # convolution whose "kernel" is the cotangent, its input features the device's batch)
    assert not _unaligned_convs(trainer.compiled_step.as_text())
  if dict(trainer.mesh.shape).get("fsdp", 1) == 1:
    collectives = _collective_dtypes(trainer.compiled_step.as_text())
    assert not collectives & {"bf16", "f16"}, collectives
    assert ("f32" in collectives) == (trainer.mesh.devices.size > 1), collectives


class _PaperMainPhases:
  """Every paper's main phase compiled for `target`. One subclass per target: pytest-xdist's
  `--dist loadscope` runs each class on a worker of its own, so the H100 compiles go beside the
  TPU ones (each worker builds the module's `paper_step` for its target)."""
  target: str

  @pytest.mark.parametrize("paper", PAPERS)
  def test_paper_main_phase_compiles(self, paper_step, paper):
    trainer, need, chosen = paper_step(paper, self.target)
    _check_pod_step(trainer, need, chosen, self.target)

  @pytest.mark.parametrize("paper", PAPERS)
  def test_paper_evaluation_compiles(self, paper_step, paper):
    """The paper's scoring evaluation (classification, or two-stream's video scores) compiles for
    the target as the fit check compiles it before training (`Trainer.compile_evals`), and what a
    device holds while it runs includes the train state and stays under the target's limit."""
    trainer, _, _ = paper_step(paper, self.target)
    needs = trainer.compile_evals()
    assert needs and set(needs) == set(trainer.config.evals), needs   # every scoring one
    assert ("video" in needs) == (paper == "twostream_infar"), needs
    state = fit.tree_bytes(trainer.abstract_state)
    limit = fit.device_limit(trainer.config, trainer.mesh.devices.flat[0], trainer.target)
    assert all(state < need < limit for need in needs.values()), (needs, state, limit)


@needs_tpu
class TestOnATpuV5eSlice(_PaperMainPhases):
  target = TPU_TARGET

  def test_paper_compiles_fully_sharded_on_a_multi_host_tpu_slice(self, paper_step):
    # runlocal's parameters are small: min_fsdp_size is lowered so they shard as a paper size does.
    fsdp = {"input.batch_size": 16, "mesh.data": 1, "mesh.fsdp": -1, "sharding.min_fsdp_size": 1024}
    trainer, need, chosen = paper_step(FSDP_PAPER, FSDP_TARGET, **fsdp)
    _check_pod_step(trainer, need, chosen, FSDP_TARGET)
    assert dict(trainer.mesh.shape) == {"data": 1, "fsdp": 16}
    assert len({d.process_index for d in trainer.mesh.devices.flat}) == 4   # 4 hosts
    specs = [str(s.spec) for s in jax.tree.leaves(trainer.state_shardings.params)]
    assert any("fsdp" in spec for spec in specs), specs
    # Data parallel on the 2x2 slice at the same clips per device: the replicated parameters and
    # optimizer state are what fsdp divides.
    replicated, replicated_need, _ = paper_step(FSDP_PAPER, TPU_TARGET)
    assert replicated.config.input.batch_size // 4 == trainer.config.input.batch_size // 16
    assert need <= replicated_need, (need, replicated_need)


@needs_gpu
class TestOnOneH100(_PaperMainPhases):
  target = GPU_TARGET

  @pytest.mark.parametrize("paper", PAPERS)
  def test_paper_convolutions_are_channels_last(self, paper_step, paper):
    """Every cuDNN convolution of the compiled step reads and writes channels-last (NHWC / NDHWC:
    no transposes around them), the (2+1)D networks' as XLA's 3D ones
    (targets.compiler_options: `xla_gpu_force_conv_nhwc`)."""
    trainer, _, chosen = paper_step(paper, self.target)
    assert trainer.compiler_options["xla_gpu_force_conv_nhwc"] is True
    labels = re.findall(r"dim_labels=(\w+)_\w+->(\w+)", trainer.compiled_step.as_text())
    assert labels and all(a.endswith("f") and b.endswith("f") for a, b in labels), labels
    if paper in ("actlumos_arid", "lift_arid"):   # R(2+1)D: native 3D convolutions
      assert ("b012f", "b012f") in labels and chosen["conv3d:native"] > 0, labels

  @pytest.mark.parametrize("paper", ("dtcm_arid", "lift_arid"))
  def test_data_parallel_gradients_are_summed_in_float32(self, paper_step, paper):
    """On eight H100s the gradients' all-reduces are float32 ones, bf16 before
    (darkjax.layers.precision): each matmul kernel's gradient is a bf16 GEMM with float32 output
    (LIFT-Net's ViT and fusion layers; its convolutional backbone is frozen), each convolution
    kernel's each device's own cuDNN weight gradient in bf16, summed in float32 (DTCM's Conv3D
    and depthwise convolutions: a psum in a shard_map)."""
    trainer, need, chosen = paper_step(paper, "h100:8")
    _check_pod_step(trainer, need, chosen, "h100:8")
    hlo = trainer.compiled_step.as_text()
    if paper == "dtcm_arid":   # bf16 weight-gradient convolutions, as on one device
      assert re.findall(r"= \(bf16\[[^\n]*custom_call_target=\"__cudnn\$convBackwardFilter\"",
                        hlo)

  def test_fully_sharded_gradients_are_scattered_in_float32(self, paper_step):
    """On eight H100s as 2 (data) x 4 (fsdp), kernels split over fsdp: each convolution kernel's
    gradient is each device's own cuDNN weight gradient in bf16, psummed over `data` and
    psum_scattered over `fsdp` onto the kernel's split in float32 (darkjax.layers.precision;
    bf16 reduce-scatters before), the matmuls' float32 GEMM outputs: no 16-bit all-reduce or
    reduce-scatter at all in DTCM's step."""
    fsdp = {"input.batch_size": 16, "mesh.data": 2, "mesh.fsdp": -1,
            "sharding.min_fsdp_size": 1024}
    trainer, need, chosen = paper_step("dtcm_arid", "h100:8", **fsdp)
    _check_pod_step(trainer, need, chosen, "h100:8")
    assert dict(trainer.mesh.shape) == {"data": 2, "fsdp": 4}
    specs = [str(s.spec) for s in jax.tree.leaves(trainer.state_shardings.params)]
    assert any("fsdp" in spec for spec in specs), specs
    hlo = trainer.compiled_step.as_text()
    assert not _collective_dtypes(hlo) & {"bf16", "f16"}, _collective_dtypes(hlo)
    scattered = re.findall(r"= (.*?) reduce-scatter(?:-start)?\(", hlo)
    assert scattered and all("f32[" in r and "bf16[" not in r for r in scattered), scattered

  def test_vit_attention_is_cudnns_fused_attention(self, paper_step):
    """LIFT-Net's PViT (bfloat16 on a GPU) attends by cuDNN's fused attention, forward and
    backward, where this host has cuDNN (jax's CUDA plugin; CI's has it): the (heads, tokens,
    tokens) scores are never in memory. Without cuDNN the trace keeps flax's form."""
    trainer, _, chosen = paper_step("lift_arid", self.target)
    calls = set(re.findall(r'custom_call_target="(__cudnn\$fmha\w*)"',
                           trainer.compiled_step.as_text()))
    if attention.cudnn_available():
      assert chosen["attention:cudnn"] > 0 and "attention:xla" not in chosen, chosen
      assert {"__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"} <= calls, calls
    else:
      assert chosen["attention:xla"] > 0 and not calls, (chosen, calls)


TRAFFIC_HLO = """\
HloModule step

%fused_add (p0: bf16[4,8]) -> bf16[4,8] {
  %p0 = bf16[4,8]{1,0} parameter(0)
  ROOT %add = bf16[4,8]{1,0} add(%p0, %p0)
}

ENTRY %main (a: bf16[4,8], w: bf16[3,3,8,8]) -> (f32[8], bf16[4,8]) {
  %a = bf16[4,8]{1,0} parameter(0)
  %w = bf16[3,3,8,8]{3,2,1,0} parameter(1)
  %cudnn-conv.1 = (bf16[4,8]{1,0}, u8[0]{0}) custom-call(%a, %w), \
custom_call_target="__cudnn$convForward"
  %gte = bf16[4,8]{1,0} get-tuple-element(%cudnn-conv.1), index=0
  %loop_add_fusion = bf16[4,8]{1,0} fusion(%gte), kind=kLoop, calls=%fused_add
  %input_reduce_fusion = f32[8]{0} fusion(%loop_add_fusion, %gte), kind=kInput, calls=%fused_add
  %loop = (s32[], bf16[4,8]{1,0}) while(%init), condition=%cond, body=%body
  ROOT %tuple = (f32[8]{0}, bf16[4,8]{1,0}) tuple(%input_reduce_fusion, %loop_add_fusion)
}
"""


LOOP_TRAFFIC_HLO = """\
HloModule step

%fused_slice (p0: s32[], p1: bf16[22,4,8]) -> bf16[1,4,8] {
  %p0 = s32[] parameter(0)
  %p1 = bf16[22,4,8]{2,1,0} parameter(1)
  %b = bf16[22,4,8]{2,1,0} bitcast(%p1)
  %z = s32[] constant(0)
  ROOT %ds = bf16[1,4,8]{2,1,0} dynamic-slice(%b, %p0, %z, %z), dynamic_slice_sizes={1,4,8}
}

%fused_update (p0: s32[], p1: bf16[4,8], p2: bf16[22,4,8]) -> bf16[22,4,8] {
  %p0 = s32[] parameter(0)
  %p1 = bf16[4,8]{1,0} parameter(1)
  %p2 = bf16[22,4,8]{2,1,0} parameter(2)
  %b = bf16[22,4,8]{2,1,0} bitcast(%p2)
  %u = bf16[1,4,8]{2,1,0} bitcast(%p1)
  %z = s32[] constant(0)
  ROOT %dus = bf16[22,4,8]{2,1,0} dynamic-update-slice(%b, %u, %p0, %z, %z)
}

%body (t: (s32[], bf16[4,8], bf16[22,4,8])) -> (s32[], bf16[4,8], bf16[22,4,8]) {
  %i = s32[] get-tuple-element(%t), index=0
  %x = bf16[4,8]{1,0} get-tuple-element(%t), index=1
  %stack = bf16[22,4,8]{2,1,0} get-tuple-element(%t), index=2
  %w = bf16[8,8]{1,0} constant({...})
  %gemm = (bf16[4,8]{1,0}, s8[33554432]{0}) custom-call(%x, %w), custom_call_target="__cublas$gemm"
  %y = bf16[4,8]{1,0} get-tuple-element(%gemm), index=0
  %read = bf16[1,4,8]{2,1,0} fusion(%i, %stack), kind=kLoop, calls=%fused_slice
  %write = bf16[22,4,8]{2,1,0} fusion(%i, %y, %stack), kind=kLoop, calls=%fused_update
  ROOT %out = (s32[], bf16[4,8], bf16[22,4,8]) tuple(%i, %y, %write)
}

ENTRY %main (a: bf16[4,8], s: bf16[22,4,8]) -> (s32[], bf16[4,8], bf16[22,4,8]) {
  %a = bf16[4,8]{1,0} parameter(0)
  %s = bf16[22,4,8]{2,1,0} parameter(1)
  %init = (s32[], bf16[4,8], bf16[22,4,8]) tuple(%zero, %a, %s)
  ROOT %loop = (s32[], bf16[4,8], bf16[22,4,8]) while(%init), condition=%cond, body=%body, \
backend_config={"known_trip_count":{"n":"22"}}
}
"""


def test_traffic_counts_loop_bodies_every_run_and_slices_by_their_slice():
  """`measure.hlo_traffic` counts a scan's body kernels ("loop KIND") once per run of the loop
  (its known trip count), a fusion that only slices a stacked operand by the slice it reads, one
  that updates a stacked buffer in place by the update it writes (bitcasts seen through), and a
  cuBLAS call by its output, not its 32 MiB workspace."""
  traffic = measure.hlo_traffic(LOOP_TRAFFIC_HLO)
  block, stack = 4 * 8 * 2, 22 * 4 * 8 * 2
  assert traffic["loop matmul"] == {"count": 22, "read_bytes": 22 * (block + 8 * 8 * 2),
                                    "write_bytes": 22 * block}
  assert traffic["loop fusion kLoop"] == {"count": 44, "read_bytes": 22 * (4 + block + 4 + block),
                                          "write_bytes": 22 * (block + block)}
  assert traffic["while"]["count"] == 1 and "matmul" not in traffic   # the entry's own kernels
  assert traffic["while"]["write_bytes"] == 4 + block + stack


def test_traffic_counts_each_kernels_operand_and_result_bytes(tmp_path, capsys):
  """`measure.hlo_traffic`: per kind of kernel of the entry computation, its count and the bytes
  it reads (operands) and writes (results); `fit --traffic` reports it for a compiled step."""
  traffic = measure.hlo_traffic(TRAFFIC_HLO)
  assert traffic == {
      "convolution": {"count": 1, "read_bytes": 4 * 8 * 2 + 3 * 3 * 8 * 8 * 2,
                      "write_bytes": 4 * 8 * 2},
      "fusion kLoop": {"count": 1, "read_bytes": 64, "write_bytes": 64},
      "fusion kInput": {"count": 1, "read_bytes": 128, "write_bytes": 8 * 4},
      "while": {"count": 1, "read_bytes": 0, "write_bytes": 4 + 64}}   # its kernels: not counted
  assert measure.format_traffic(traffic).startswith("convolution x1 0.0 MiB read")
  rows = fit_tool.main(["--config", "configs/synthetic.py:runlocal", "--default-only", "--cache",
                        "", "--workdir", str(tmp_path), "--traffic"])
  step = rows[0]["traffic"]
  assert step["convolution"]["count"] > 0 and step["convolution"]["write_bytes"] > 0
  assert sum(e["read_bytes"] for k, e in step.items() if k.startswith("fusion")) > 0
  assert "    traffic: " in capsys.readouterr().out


def test_planner_cache_compiles_an_edited_config_file_again(tmp_path, monkeypatch):
  """The cache key holds the resolved config: a row cached before the config file was edited is
  not the edited config's."""
  compiled = []
  monkeypatch.setattr(train.Trainer, "compile_step", lambda self: compiled.append(1) or GIB)
  config_file = tmp_path / "mine.py"
  text = ("from configs import synthetic\n\n\ndef get_config(arg=None):\n"
          "  config = synthetic.get_config(arg)\n  config.optimizer.lr = {lr}\n  return config\n")
  config_file.write_text(text.format(lr=0.1))
  argv = ["--config", f"{config_file}:runlocal", "--default-only", "--cache",
          str(tmp_path / "cache.json"), "--workdir", str(tmp_path / "work")]
  fit_tool.main(argv)
  fit_tool.main(argv)
  assert len(compiled) == 1   # the second from the cache
  config_file.write_text(text.format(lr=0.2))
  assert fit_tool.main(argv)[0]["need_bytes"] == GIB and len(compiled) == 2
