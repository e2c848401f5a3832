"""`python -m darkjax.tools.bench --config`: a paper config's own train step (its phase, optimizer
and sharding, as darkjax.main compiles it) on a synthetic stand-in of its clip geometry, with
memory per remat policy, compile and step time; at tiny size (runlocal)."""

from __future__ import annotations

import json
import os
import threading

import jax
import pytest

from darkjax.tools import bench, bench_report, bench_config
from darkjax import config as config_lib


def test_stand_in_keeps_the_clip_geometry_and_drops_data_and_weights(tmp_path):
  config = config_lib.load("configs/dtcm_arid.py")
  assert config.required_weights   # the recipe starts from Kinetics weights
  out = bench_config.stand_in_config(config, str(tmp_path), frames=32, batch=2, remat="full")
  assert out.input.frames == 32 and out.input.batch_size == 2
  assert out.model.kwargs.remat == "full"
  assert out.input.data.name == "synthetic" and out.input.data.dir.startswith(str(tmp_path))
  assert out.input.data.generate.size >= out.input.crop_size
  assert out.input.data.generate.frames >= 32 * out.input.stride
  assert not out.required_weights and not out.model_init and not out.evals
  assert config.input.data.name == "arid_v1" and config.input.frames == 64   # not modified
  # ActLumos's SSL sources follow the stand-in too.
  act = bench_config.stand_in_config(config_lib.load("configs/actlumos_arid.py"),
                                     str(tmp_path))
  assert tuple(act.ssl.datasets) == ("synthetic",) and act.ssl.dirs[0] == act.input.data.dir
  # A prepared flow stream is stored in the stand-in records (as `prepare --flow` stores it), so
  # the pipeline reads it as a run does; the two-stream Task checks the stand-in's method.
  two = bench_config.stand_in_config(config_lib.load("configs/twostream_infar.py"),
                                     str(tmp_path))
  assert two.twostream.flow_source == "stream" and "flow" in two.input.streams
  assert two.input.data.generate.flow and two.twostream.flow_method == "farneback"
  assert two.input.data.dir.endswith("_flow")
  lift = bench_config.stand_in_config(
      config_lib.load("configs/lift_arid.py:luminous_input=flow"), str(tmp_path))
  assert lift.input.data.generate.flow and "flow" in lift.input.streams
  assert not out.input.data.generate.flow and not out.input.data.dir.endswith("_flow")
  # A model reading a stream the synthetic data has no stand-in for: a clear error.
  ir = config_lib.apply_overrides(config, {"input.streams": ("thermal",)})
  with pytest.raises(SystemExit, match=r"record streams \['thermal'\]"):
    bench_config.stand_in_config(ir, str(tmp_path))


def test_config_bench_compiles_the_phase_step_with_memory_per_policy(tmp_path, capsys,
                                                                    monkeypatch):
  # launch/bench_gpu.sh's pre-pass, then the timed run records its compile as the cold one
  # (`--set` overrides a config field first and is recorded: here runlocal's own opt level);
  # both read one --data-dir, where the first renders the stand-in clips and the second finds them
  from darkjax.data import synthetic  # pylint: disable=import-outside-toplevel
  rendered = []
  render = synthetic.generate
  monkeypatch.setattr(synthetic, "generate",
                      lambda out_dir, *a, **k: rendered.append(out_dir) or render(out_dir, *a, **k))
  # (the single-phase synthetic config: the smallest step to compile; DTCM's default phase below;
  # XLA's native 3D convolutions, whose temp memory full remat visibly cuts at this size)
  sets = ["--set", "xla_opt_level=0", "--set", "input.workers=1", "--set",
          "conv_lowering=native", "--data-dir", str(tmp_path / "data")]
  cold = bench.main(["--config", "configs/synthetic.py:runlocal", "--compile-only",
                     "--concurrent", "2", "--workdir", str(tmp_path / "cold"), "--json",
                     str(tmp_path / "cold.json"), *sets])
  assert len(rendered) == 1 and rendered[0].startswith(str(tmp_path / "data"))
  assert cold["concurrent_compiles"] == 2 and "step_s" not in cold["remat"]["none"]
  assert cold["overrides"] == {"xla_opt_level": 0, "input.workers": 1, "conv_lowering": "native"}
  result = bench.main(["--config", "configs/synthetic.py:runlocal", "--memory",
                       "--remat", "full", "--steps", "1", "--rounds", "1",
                       "--workdir", str(tmp_path), "--cold-from", str(tmp_path / "cold.json"),
                       "--pipelined", "--profile", "1", "--with-input", *sets])
  assert len(rendered) == 1 and os.path.exists(rendered[0] + ".lock")   # found, not rendered
  none = result["remat"]["none"]   # what darkjax.fit.step_bytes counts: one device's bytes
  assert none["step_bytes"] == (none["argument"] + none["output"] + none["temp"] - none["alias"])
  assert result["cold_compile"] == {"from": str(tmp_path / "cold.json"), "concurrent": 2,
                                    "train_step": cold["remat"]["none"]["compile_s"]}
  # a pre-pass under other overrides compiled another program: refused
  # the steps fed by the config's own pipeline, from one input worker process
  assert result["input"]["workers"] == 1 and result["input"]["pipelined_step_s"] > 0
  assert f"{result['input']['pipelined_step_s'] * 1e3:.1f} (1) |" in bench_report.config_table(
      [result])
  with pytest.raises(ValueError, match="its overrides is {'xla_opt_level': 0, 'input.workers': 1, "
                     "'conv_lowering': 'native'}, this run's {}"):
    bench_report.read_cold_from(str(tmp_path / "cold.json"), dict(result, overrides={}))
  with pytest.raises(SystemExit, match="bench --set 'xla_opt_level': expected KEY=VALUE"):
    bench.main(["--config", "configs/dtcm_synthetic.py:runlocal", "--set", "xla_opt_level"])
  assert result["phase"] == "train" and result["device"] == "cpu"
  assert bench_config.phase_names(config_lib.load("configs/dtcm_synthetic.py:runlocal"))[0] == \
      "joint"   # a multi-phase config's default: its main network
  none, full = result["remat"]["none"], result["remat"]["full"]
  for entry in (none, full):
    assert entry["compile_s"] > 0 and entry["temp"] > 0 and entry["step_s"] > 0
    # where the compile went (the Trainer's build, trace, lowering, XLA), adding up to it
    parts = entry["compile_parts"]
    assert tuple(parts) == bench_config.COMPILE_PARTS and min(parts.values()) > 0
    assert sum(parts.values()) == pytest.approx(entry["compile_s"], rel=1e-6)
    assert entry["init_s"] > 0   # the fresh state's init, timed apart from the step
  assert none["param_count"] == full["param_count"] == result["param_count"] > 0
  assert result["frames"] == 16 and result["batch"] == 8     # synthetic runlocal's own
  assert result["clips_per_s"] == pytest.approx(8 / none["step_s"])
  # --pipelined: each policy's steps also dispatched back to back with one wait, as darkjax.train
  # runs them; the table gains those columns
  assert none["pipelined_step_s"] > 0 and full["pipelined_step_s"] > 0
  assert result["clips_per_s_pipelined"] == pytest.approx(8 / none["pipelined_step_s"])
  # XLA's count of the step per device, its rate at the pipelined step time (no peak on a CPU)
  assert result["flops_per_device_step"] == none["flops_per_device"] > 0
  assert result["pipelined_utilisation"]["tflops"] == pytest.approx(
      none["flops_per_device"] / none["pipelined_step_s"] / 1e12)
  # --profile: the phase's step traced after the timed rounds, its device time by op kind
  profile = result["profile"]
  assert profile["steps"] == 1 and profile["top_ops_ms"][0]["ms"] > 0
  assert profile["device_ms_per_step"] == pytest.approx(sum(profile["categories_ms"].values()))
  assert profile["categories_ms"]["convolution"] > 0 and sum(profile["conv_layouts"].values()) > 0
  for wrong in (["--compile-only"], ["--cold-start"], ["--check-init"]):   # nothing timed
    with pytest.raises(SystemExit):
      bench.parse_args(["--config", "configs/dtcm_synthetic.py", "--profile", "2", *wrong])
  table = bench_report.config_table([result])
  assert ("| pipelined step ms | pipelined clips/s | pipelined step ms with its input (worker "
          "processes) | TFLOP/s per device (% of bf16 peak; p: at the pipelined step time) |") in table
  # --count-flops: the same count with nothing compiled; --markdown-from gives it to a result
  # timed without one
  count = bench.main(["--config", "configs/synthetic.py:runlocal", "--count-flops", "cpu",
                      "--workdir", str(tmp_path / "count"), "--json",
                      str(tmp_path / "count.json"), *sets])
  # (the global batch's count; the timed step's is per device, over the host's devices)
  assert count["flops_per_step"] == pytest.approx(none["flops_per_device"] * result["devices"])
  assert count["traced_for"] == "cpu"
  bare = json.loads(json.dumps(result, default=str))
  del bare["remat"]["none"]["flops_per_device"], bare["flops_per_device_step"]
  bare.update(command="python -m darkjax.tools.bench --config ...", date="2026-11-27",
              versions={})
  (tmp_path / "bare.json").write_text(json.dumps(bare))
  [joined] = bench_report.load([str(tmp_path / "bare.json"), str(tmp_path / "count.json")])
  assert joined["pipelined_utilisation"] == pytest.approx(result["pipelined_utilisation"])
  assert f"Its FLOP count: `{count['command']}`" in bench_report.config_table([joined])
  assert f"Its compile: build {none['compile_parts']['build']:.1f} s, trace " in table
  assert f"Its parameter init (compile and run): {none['init_s']:.1f} s." in table
  # the step compiles config.conv_lowering's ops (here --set's), as darkjax.main would
  assert result["lowerings"]["conv3d:native"] >= 1
  assert not [k for k in result["lowerings"] if k.startswith("conv3d:") and k != "conv3d:native"]
  assert full["temp_reduction"] == none["temp"] / full["temp"] and full["time_ratio"] > 0
  # remat takes effect in the step darkjax.main compiles (darkjax.layers.remat.compiler_options;
  # 1.22x at this tiny size, 1.04x without them)
  assert full["temp"] < 0.9 * none["temp"]
  out = capsys.readouterr().out
  assert "phase train" in out and "temp memory none / full" in out and "lowerings: " in out
  assert "profile: device time" in out
  with pytest.raises(SystemExit, match="phases \\['joint', 'enhancer', 'classifier'\\]"):
    bench.main(["--config", "configs/dtcm_synthetic.py:runlocal", "--phase", "student",
                "--compile-only", "--workdir", str(tmp_path)])


def test_check_init_compares_the_runs_init_with_xlas_lowering_bit_for_bit(tmp_path, capsys,
                                                                          monkeypatch):
  # On this CPU host the Trainer's init is one program: nothing to compare but itself.
  args = ["--config", "configs/dinet_synthetic.py:runlocal", "--check-init", "--workdir",
          str(tmp_path), "--json", str(tmp_path / "check.json")]
  result = bench.main(args)
  check = result["init_check"]
  assert check["leaves"] > 10 and check["differ"] == [] and not check["kernel"]
  assert "0 differ (one program here" in capsys.readouterr().out
  # As on a GPU (targets.init_jit's threefry-kernel program; on a CPU the flag changes no
  # lowering): two programs, the same values
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  kernels = targets._ThreefryKernels   # pylint: disable=protected-access
  monkeypatch.setattr(targets, "init_jit",
                      lambda fn, platform=None, params=0, **kw: kernels(jax.jit(fn, **kw)))
  check = bench.main(args)["init_check"]
  assert check["kernel"] and check["differ"] == []
  # a leaf that differs fails the command (after its JSON is written)
  monkeypatch.setattr(bench_config, "check_init",
                      lambda *a: {"leaves": 3, "differ": ["['params']['head']"], "kernel": True})
  with pytest.raises(SystemExit) as exit_info:
    bench.main(args)
  assert exit_info.value.code == 1 and "1 differ (['params']['head'])" in capsys.readouterr().out
  assert json.load(open(tmp_path / "check.json"))["init_check"]["differ"] == ["['params']['head']"]


def test_cold_start_times_the_step_and_init_compiles_both_ways(tmp_path, capsys, monkeypatch):
  """`--cold-start`: a fresh run's compiles (train step, parameter init), one after the other and
  the step's on a thread beside the init's (`Trainer.step_compiling_aside`), each round on fresh
  caches; nothing run."""
  from darkjax import train  # pylint: disable=import-outside-toplevel
  threads, cache = [], jax.config.jax_enable_compilation_cache
  compile_step = train.Trainer.compile_step
  monkeypatch.setattr(train.Trainer, "compile_step", lambda self: threads.append(
      threading.current_thread().name) or compile_step(self))
  result = bench.main(["--config", "configs/dinet_synthetic.py:runlocal", "--cold-start",
                       "--rounds", "1", "--workdir", str(tmp_path), "--json",
                       str(tmp_path / "start.json")])
  found = result["cold_start"]
  assert [len(found[k]) for k in ("sequential_s", "aside_s", "step_s", "init_s")] == [1] * 4
  assert found["sequential_s"][0] >= found["step_s"][0] > 0 and found["init_s"][0] > 0
  assert found["ratio"] == found["aside_s"][0] / found["sequential_s"][0]
  # each round compiles anew (fresh caches): the sequential step here, the other on its thread
  assert threads[0] == threading.current_thread().name
  assert threads[1].startswith("darkjax-compile-"), threads
  assert "cold start on cpu" in capsys.readouterr().out
  assert json.load(open(tmp_path / "start.json"))["cold_start"]["ratio"] == found["ratio"]
  assert jax.config.jax_enable_compilation_cache == cache   # restored
  for wrong in (["--memory"], ["--compile-only"], ["--check-init"]):
    with pytest.raises(SystemExit):
      bench.parse_args(["--config", "configs/dinet_synthetic.py", "--cold-start", *wrong])
  with pytest.raises(SystemExit):
    bench.parse_args(["--config", "configs/dinet_synthetic.py", "--target", "h100:1"])
  with pytest.raises(SystemExit):
    bench.parse_args(["--config", "configs/dinet_synthetic.py", "--evals"])


def test_cold_start_with_the_evaluations(tmp_path, capsys, monkeypatch):
  """`--cold-start --evals`: the evaluations compile after the step and init, and beside the step
  as a TPU run's fit check compiles them (`Trainer.compile_start(evals=True)`)."""
  from darkjax import train  # pylint: disable=import-outside-toplevel
  threads, compile_evals = [], train.Trainer.compile_evals
  monkeypatch.setattr(train.Trainer, "compile_evals", lambda self: threads.append(
      threading.current_thread().name) or compile_evals(self))
  result = bench.main(["--config", "configs/synthetic.py:runlocal", "--cold-start", "--evals",
                       "--rounds", "1", "--workdir", str(tmp_path)])
  assert result["evals"] and len(result["cold_start"]["aside_s"]) == 1
  assert threads == [threading.current_thread().name] * 2   # sequential, then aside
  assert "step then init, evaluations" in capsys.readouterr().out
  # one mode alone (a GPU's process keeps its autotuning: one cold mode per process)
  threads.clear()
  alone = bench.main(["--config", "configs/synthetic.py:runlocal", "--cold-start", "--rounds",
                      "1", "--cold-start-mode", "aside", "--workdir", str(tmp_path / "aside")])
  found = alone["cold_start"]
  assert found["modes"] == ["aside"] and found["ratio"] is None and not found["sequential_s"]
  assert len(found["aside_s"]) == 1 and threads == []   # no evaluations asked for
  out = capsys.readouterr().out
  assert "step beside init" in out and "step then" not in out and "ratio" not in out
  with pytest.raises(SystemExit):
    bench.main(["--config", "configs/synthetic.py:runlocal", "--cold-start", "--cold-start-mode",
                "both", "--workdir", str(tmp_path / "bad")])
  with pytest.raises(SystemExit):
    bench.parse_args(["--config", "configs/synthetic.py", "--cold-start-mode", "aside"])
