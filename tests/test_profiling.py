"""darkjax.profiling: a run's steps traced on request (`config.profile`) and read back as device
time per kind of op; the run's trace cut short by its end, settings that are no count; XLA's
operation count of a step and its share of a device's peak."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import pytest

from darkjax import aot, profiling


def _loop(trace: profiling.StepTrace, steps: int):
  """A stand-in train loop: one jitted matmul step per step, traced as train.Trainer does."""
  step_fn = jax.jit(lambda x: jnp.tanh(x @ x))
  state, step = jnp.eye(64) * 0.5, 0
  try:
    for step in range(1, steps + 1):
      trace.begin(step, state)
      state = step_fn(state)
      trace.end(step, state)
  finally:
    trace.close(step, state)
  return trace.summary


def test_a_window_past_the_runs_end_is_written_for_the_steps_it_holds(tmp_path):
  trace = profiling.StepTrace({"steps": 10, "skip": 1}, str(tmp_path), 0, lambda: "", True)
  summary = _loop(trace, steps=4)   # steps 2-11 asked for, the loop ends after step 4
  assert (summary["first_step"], summary["last_step"], summary["steps"]) == (2, 4, 3)
  assert summary["device_ms_per_step"] > 0 and summary["categories_ms"]
  assert os.listdir(tmp_path / "tensorboard" / "plugins" / "profile") == ["steps2-4"]
  assert json.loads((tmp_path / "profile.json").read_text())["last_step"] == 4


def test_off_by_default_and_a_follower_writes_no_summary_files(tmp_path):
  assert _loop(profiling.StepTrace({}, str(tmp_path / "off"), 0, lambda: "", True), 3) is None
  assert not (tmp_path / "off").exists()
  follower = profiling.StepTrace({"steps": 1, "skip": 0}, str(tmp_path), 5, lambda: "", False)
  assert _loop(follower, 8)["first_step"] == 6   # after the step the invocation resumed from
  assert not (tmp_path / "profile.md").exists()   # process 0 writes the summary, each its trace
  assert os.listdir(tmp_path / "tensorboard" / "plugins" / "profile" / "steps6-6")


@pytest.mark.parametrize("profile, key", [({"steps": -1}, "steps"), ({"skip": 1.5}, "skip"),
                                          ({"steps": True}, "steps")])
def test_a_setting_that_is_no_count_names_its_key(profile, key, tmp_path):
  with pytest.raises(ValueError, match=rf"config\.profile\.{key}="):
    profiling.StepTrace(profile, str(tmp_path), 0, lambda: "", True)


@pytest.mark.parametrize("kind, tflops", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0),
                                          ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
                                          ("NVIDIA H200 NVL", 835.0),
                                          ("NVIDIA A100-SXM4-80GB", 312.0), ("TPU v5 lite", 197.0),
                                          ("TPU v5e", 197.0), ("TPU v5", 459.0),
                                          ("TPU v6 lite", 918.0), ("TPU v4", 275.0),
                                          ("cpu", None)])
def test_peak_flops_by_device_kind(kind, tflops):
  assert aot.peak_flops(kind) == (None if tflops is None else tflops * 1e12)


def test_step_flops_counts_the_models_operations_not_a_remat_policys_recomputation():
  from darkjax import models  # pylint: disable=import-outside-toplevel
  x = jax.ShapeDtypeStruct((2, 4, 16, 16, 3), jnp.float32)

  def step_of(remat):
    model = models.build("r2plus1d_tiny_test", num_classes=3, remat=remat)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), False))

    def step(variables, clips):
      loss = lambda p: model.apply({**variables, "params": p}, clips, False)[0].sum()
      return jax.grad(loss)(variables["params"])
    return jax.jit(step), variables

  plain, variables = step_of("none")
  full, _ = step_of("full")
  recomputed = profiling.lowered_flops(full.lower(variables, x))
  assert recomputed > 1.2 * profiling.lowered_flops(plain.lower(variables, x))   # what remat runs
  assert profiling.step_flops(full, variables, x) == profiling.step_flops(plain, variables, x) > 0


def test_step_flops_is_xlas_count_a_multiply_add_as_two_every_scan_step_counted():
  a, b = jax.ShapeDtypeStruct((64, 128), jnp.float32), jax.ShapeDtypeStruct((128, 128), jnp.float32)
  once = 2 * 64 * 128 * 128
  assert profiling.step_flops(jax.jit(lambda a, b: a @ b), a, b) == once

  def scanned(a, b):   # five matmuls in a scan, inside a jitted function: XLA alone counts one
    return jax.lax.scan(lambda x, _: (x @ b, None), a, None, length=5)[0]
  assert profiling.lowered_flops(jax.jit(scanned).lower(a, b)) < 2 * once
  assert profiling.step_flops(jax.jit(scanned), a, b) == 5 * once

  # the model's own operations wherever it is traced for: a GPU's 16-bit convolution on RGB
  # (channels zero-padded to 8 there, conv2d.aligned_conv) counts as on a CPU or TPU
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel
  x = jax.ShapeDtypeStruct((2, 4, 16, 16, 3), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((3, 7, 7, 3, 45), jnp.bfloat16)
  stem = jax.jit(lambda x, k: conv.conv3d(x, k, (1, 2, 2), ((1, 1), (3, 3), (3, 3))))
  counts = {}
  for platform in ("cpu", "tpu", "gpu"):
    with targets.compiling_for(platform):
      counts[platform] = profiling.step_flops(stem, x, k)
  assert counts["gpu"] == counts["tpu"] == counts["cpu"] > 0, counts
  with targets.compiling_for("gpu"):   # the program a GPU runs holds the padded channels' zeros
    padded = profiling.lowered_flops(jax.jit(lambda x, k: conv.conv3d(
        x, k, (1, 2, 2), ((1, 1), (3, 3), (3, 3)), lowering="native")).lower(x, k))
  assert padded == pytest.approx(counts["gpu"] * 8 / 3 * 48 / 45), (padded, counts)
  # and a grouped one with its own groups, bundled or not (conv.gpu_group_bundle)
  xg = jax.ShapeDtypeStruct((2, 4, 8, 8, 32), jnp.bfloat16)
  kg = jax.ShapeDtypeStruct((3, 3, 3, 4, 32), jnp.bfloat16)
  grouped = jax.jit(lambda x, k: conv.conv3d(x, k, padding=((1, 1),) * 3, feature_group_count=8))
  with targets.compiling_for("gpu"), conv.gpu_group_bundle(16):
    bundled = profiling.step_flops(grouped, xg, kg)
  with targets.compiling_for("tpu"):
    assert bundled == profiling.step_flops(grouped, xg, kg) > 0
  with targets.compiling_for("gpu"):   # the program a GPU runs: 2 groups of 16, 4x the products
    runs = profiling.lowered_flops(jax.jit(lambda x, k: conv.conv3d(
        x, k, padding=((1, 1),) * 3, feature_group_count=8)).lower(xg, kg))
  assert runs == pytest.approx(4 * bundled, rel=0.01), (runs, bundled)

  class Plugin:   # a GPU's or TPU's PJRT plugin: Lowered.cost_analysis is not implemented
    def __init__(self, lowered):
      self.lowered = lowered

    def cost_analysis(self):
      raise NotImplementedError("Lowered.cost_analysis not implemented on platform 'cuda'")

    def compiler_ir(self, dialect):
      return self.lowered.compiler_ir(dialect)
  # the same module counted by the host's CPU client
  assert profiling.lowered_flops(Plugin(jax.jit(lambda a, b: a @ b).lower(a, b))) == once

  class NoCount:   # nothing to count anywhere
    def cost_analysis(self):
      return None

    def compiler_ir(self, dialect):
      raise ValueError(dialect)
  assert profiling.lowered_flops(NoCount()) is None
  found = profiling.utilisation(2e12, 0.01, "TPU v5 lite")
  assert found == {"tflops": 200.0, "peak_tflops": 197.0, "peak_fraction": 200.0 / 197.0}
  assert profiling.format_utilisation(found) == (
      "200.00 TFLOP/s, 101.5% of the bf16 dense peak (197)")
  assert profiling.utilisation(None, 0.01, "TPU v5 lite") == {}


def test_a_profile_that_cannot_be_written_leaves_the_loop_running(tmp_path, caplog):
  blocked = tmp_path / "file"
  blocked.write_text("not a directory")   # the workdir's place holds a file
  trace = profiling.StepTrace({"steps": 2, "skip": 0}, str(blocked / "run"), 0, lambda: "", True)
  assert _loop(trace, steps=4) is None   # every step ran; the profile alone is lost
  assert "was not written" in caplog.text
  jax.profiler.start_trace(str(tmp_path / "after"))   # and the profiler was stopped
  jax.profiler.stop_trace()


def test_collectives_are_their_own_kind_of_op():
  """A multi-device step's communication is not a reduction fusion: the gradient all-reduce (and
  its async halves), fsdp's all-gather and reduce-scatter."""
  for name, info in [("all-reduce.3", {"opcode": "all-reduce"}), ("all-reduce-start.1", None),
                     ("all-gather.2", {"opcode": "all-gather"}), ("reduce-scatter.7", None)]:
    assert profiling.op_category(name, info) == "collective", name
  assert profiling.op_category("input_reduce_fusion", {"opcode": "fusion"}) == "reduction"


def test_an_empty_device_plane_leaves_the_cpu_threads_timed(monkeypatch):
  """A CPU trace read by XLA:CPU's thunk events, even where it holds a device plane with no events
  (libtpu, once loaded for a compile-only TPU target, adds "/device:CUSTOM:Megascale Trace" to
  every trace); a device plane with events is timed alone."""
  from types import SimpleNamespace as NS  # pylint: disable=import-outside-toplevel
  from jax import profiler  # pylint: disable=import-outside-toplevel
  thunk = NS(name="thunk", duration_ns=2e6, stats=[("hlo_op", "convolution.1")])
  host = NS(name="/host:CPU", lines=[NS(name="tf_XLAPjRtCpuClient/1", events=[thunk])])
  empty = NS(name="/device:CUSTOM:Megascale Trace", lines=[NS(name="x", events=[])])
  kernel = NS(name="fusion.2", duration_ns=1e6, stats=[])
  gpu = NS(name="/device:GPU:0", lines=[NS(name="XLA Ops", events=[kernel])])
  hlo = "%convolution.1 = f32[1,8]{1,0} convolution(f32[1,8]{1,0} %a, f32[1,8]{1,0} %b)"
  for planes, expected in [([host, empty], {"convolution": 2.0}),
                           ([host, empty, gpu], {"elementwise fusion": 1.0})]:
    monkeypatch.setattr(profiler.ProfileData, "from_file",
                        lambda path, planes=planes: NS(planes=planes))
    summary = profiling.summarize(["trace.xplane.pb"], 1, hlo)
    assert summary["categories_ms"] == expected, planes
    assert summary["device_planes"] == len(planes) - 2
