"""bench --vs-torch --torch-compile: one optimizer spec for both sides, the torch steps (eager,
bf16 autocast, torch.compile), the JSON result and the docs table rendered from it."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from darkjax import profiling
from darkjax.tools import bench, bench_report, bench_torch, measure


@pytest.mark.parametrize("name", sorted(bench_torch.OPTIMIZERS))
def test_both_sides_take_the_same_update(name):
  torch = pytest.importorskip("torch")
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  param = rng.standard_normal((3, 4)).astype(np.float32)
  grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3)]
  tx = bench_torch.optax_optimizer(name)
  flax_param = jnp.asarray(param)
  state = tx.init(flax_param)
  torch_param = torch.nn.Parameter(torch.from_numpy(param.copy()))
  opt = bench_torch.torch_optimizer(name, [torch_param])
  for grad in grads:   # several steps: momentum and Adam's moments take part
    updates, state = tx.update(jnp.asarray(grad), state, flax_param)
    flax_param = flax_param + updates
    torch_param.grad = torch.from_numpy(grad)
    opt.step()
  np.testing.assert_allclose(np.asarray(flax_param), torch_param.detach().numpy(), rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(np.asarray(flax_param), param)
  with pytest.raises(ValueError, match="optimizer 'adam' unknown"):
    bench_torch.optax_optimizer("adam")


def test_torch_step_eager_bf16_autocast_adamw():
  pytest.importorskip("torch")
  runs = bench_torch.torch_runs("c3d_tiny", 1, 16, 32, dtype="bfloat16", optimizer="adamw")
  assert list(runs) == ["torch"] and runs["torch"].first_call_s > 0
  runs["torch"]()
  with pytest.raises(ValueError, match="torch.compile mode 'fastest' unknown"):
    bench_torch.torch_runs("c3d_tiny", 1, 16, 32, compile_modes=["fastest"])
  with pytest.raises(ValueError, match="torch layout 'nhwc' unknown"):
    bench_torch.torch_runs("c3d_tiny", 1, 16, 32, layout="nhwc")


VARIANT = "lowering=frames2d,xla_gpu_autotune_level=0"
BROKEN = "xla_gpu_enable_command_buffer=NO_SUCH_COMMAND"   # a variant XLA refuses to compile


def test_bench_torch_compile_cli_writes_json(tmp_path, monkeypatch, capsys):
  """The CLI of issue #34 on CPU, torch.compile in its default mode only (its cold compile of
  even this tiny step takes ~25-35 s on 2 cores; the inductor cache persists between test runs
  as the tests' JAX cache does)."""
  pytest.importorskip("torch")
  monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get(
      "DARKJAX_TEST_TORCH_CACHE", "/tmp/darkjax-test-torchinductor"))
  out = tmp_path / "bench" / "c3d_tiny.json"
  row = ["--model", "c3d_tiny", "--vs-torch", "--torch-compile", "--torch-compile-modes",
         "default", "--batch", "1", "--frames", "16", "--size", "32", "--variants",
         f"auto;{VARIANT};{BROKEN}"]
  # launch/bench_gpu.sh's pre-pass: every side compiled (torch.compile by its first call), no
  # rounds, the concurrency recorded; the timed run records it as its cold compile
  cold = bench.main(row + ["--compile-only", "--concurrent", "3", "--json",
                           str(tmp_path / "cold.json")])
  assert "ratios" not in cold and cold["concurrent_compiles"] == 3
  assert list(cold["sides"]) == ["flax", "torch", "torch.compile default"]
  assert cold["sides"]["flax"]["compile_s"] > 0 and "compile_s" not in cold["sides"]["torch"]
  assert cold["sides"]["torch.compile default"]["compile_s"] > 0
  result = bench.main(row + ["--steps", "1", "--rounds", "1", "--json", str(out), "--profile",
                             "1", "--cold-from", str(tmp_path / "cold.json"), "--pipelined"])
  assert result["cold_compile"] == {
      "from": str(tmp_path / "cold.json"), "concurrent": 3,
      **{name: side["compile_s"] for name, side in cold["sides"].items() if "compile_s" in side},
      f"flax {VARIANT}": cold["variants"][VARIANT]["compile_s"]}
  with pytest.raises(SystemExit, match="missing.json: no such file"):
    bench.main(row + ["--cold-from", str(tmp_path / "missing.json")])
  for other in (["--memory"], ["--compile-only"]):   # runs that would not record it
    with pytest.raises(SystemExit):
      bench.parse_args(["--model", "c3d_tiny", *other, "--cold-from", str(tmp_path / "cold.json")])
  (tmp_path / "broken.json").write_text("{")
  with pytest.raises(ValueError, match="broken.json: not a readable"):
    bench_report.read_cold_from(str(tmp_path / "broken.json"), result)
  # a pre-pass of another row is refused before anything compiles
  with pytest.raises(ValueError, match="cold.json: its frames is 16, this run's 32"):
    bench.main(row[:9] + ["32"] + row[10:] + ["--cold-from", str(tmp_path / "cold.json")])
  written = json.loads(out.read_text())
  assert written == json.loads(json.dumps(result, default=str))
  assert written["command"].startswith("python -m darkjax.tools.bench --model c3d_tiny")
  assert written["date"][:2] == "20" and written["device"] == "cpu"
  assert {"jax", "jaxlib", "torch"} <= set(written["versions"])
  assert (written["model"], written["batch"], written["frames"], written["dtype"]) == (
      "c3d_tiny", 1, 16, "float32")
  assert written["optimizer"] == {"name": "sgd", **bench_torch.OPTIMIZERS["sgd"]}
  sides = written["sides"]
  assert list(sides) == ["flax", "torch", "torch.compile default"]
  for side in sides.values():
    assert side["step_ms_min"] <= side["step_ms"] <= side["step_ms_max"]
    assert len(side["rounds_ms"]) == 1
  assert sides["flax"]["compile_s"] > 0 and sides["torch.compile default"]["compile_s"] > 0
  assert "compile_s" not in sides["torch"] and sides["torch"]["first_call_s"] > 0
  assert written["reference"] == "torch.compile default"
  ratios = written["ratios"]
  assert ratios["reference"] == ratios["torch.compile default"] == pytest.approx(
      sides["flax"]["step_ms"] / sides["torch.compile default"]["step_ms"])
  # --pipelined: every side and variant also timed dispatching back to back, one wait per round
  for entry in [*sides.values(), written["variants"][VARIANT]]:
    assert entry["pipelined_ms_min"] <= entry["pipelined_ms"] <= entry["pipelined_ms_max"]
    assert len(entry["pipelined_rounds_ms"]) == 1
  assert written["pipelined_reference"] == "torch.compile default"
  assert written["pipelined_ratios"]["reference"] == pytest.approx(
      sides["flax"]["pipelined_ms"] / sides["torch.compile default"]["pipelined_ms"])
  assert written["pipelined_ratios"]["torch"] == pytest.approx(
      sides["flax"]["pipelined_ms"] / sides["torch"]["pipelined_ms"])
  assert "pipelined ms (flax / torch eager / best torch.compile)" in bench_report.markdown(
      [written])
  # XLA's count of the step's operations, each side's rate at it (a CPU: no peak to compare)
  assert written["flops_per_step"] > 0 and written["device_kind"] == "cpu"
  for entry in [*sides.values(), written["variants"][VARIANT]]:
    assert entry["pipelined_utilisation"]["tflops"] == pytest.approx(
        written["flops_per_step"] / entry["pipelined_ms"] / 1e9)
    assert "peak_fraction" not in entry["utilisation"]
  # --count-flops: the same count from a lowering alone; --markdown-from gives a count to a row
  # timed without one (rows measured before bench counted), and says where it came from
  counted = tmp_path / "count.json"
  count = bench.main(["--model", "c3d_tiny", "--batch", "1", "--frames", "16", "--size", "32",
                      "--count-flops", "cpu", "--json", str(counted)])
  assert count["flops_per_step"] == written["flops_per_step"] and count["traced_for"] == "cpu"
  with pytest.raises(SystemExit):   # a count times nothing: no torch side to compare
    bench.parse_args(["--model", "c3d_tiny", "--count-flops", "gpu", "--vs-torch"])
  bare = tmp_path / "bare.json"
  bare.write_text(json.dumps({k: v for k, v in written.items() if k != "flops_per_step"}))
  [joined] = bench_report.load([str(bare), str(counted)])
  assert joined["flops_per_step"] == count["flops_per_step"]
  assert joined["sides"]["flax"]["utilisation"] == written["sides"]["flax"]["utilisation"]
  assert f"Its FLOP count: `{count['command']}`" in bench_report.markdown([joined])
  # a flax variant beside the sides: its own compile (an XLA option too), its ratio to flax
  assert written["flax_variant"] == "auto" and list(written["variants"]) == [VARIANT, BROKEN]
  # the variant that did not compile is recorded as such; the row's other sides ran
  assert list(written["variants"][BROKEN]) == ["error"]
  assert "NO_SUCH_COMMAND" in written["variants"][BROKEN]["error"]
  assert f"`{BROKEN}` did not compile" in bench_report.markdown_table([written])
  variant = written["variants"][VARIANT]
  assert variant["lowerings"]["conv3d:frames2d"] > 0 and "conv3d:frames2d" not in written[
      "lowerings"]
  assert variant["compile_s"] > 0 and len(variant["round_ratios"]) == 1
  assert variant["ratio"] == pytest.approx(variant["step_ms"] / sides["flax"]["step_ms"])
  # --profile: each flax side's traced step, its time by op kind and its convolutions' layouts
  assert list(written["profiles"]) == ["flax", f"flax {VARIANT}"]
  for profile in written["profiles"].values():
    assert profile["device_ms_per_step"] == pytest.approx(sum(profile["categories_ms"].values()))
    assert profile["categories_ms"]["convolution"] > 0   # XLA:CPU's own: no direction
    assert sum(profile["conv_layouts"].values()) > 0 and profile["top_ops_ms"][0]["ms"] > 0
  output = capsys.readouterr().out
  assert "<- reference (faster compiled mode)" in output and f"written: {out}" in output
  assert f"flax {VARIANT} / flax: per round" in output and "flax profile: device time" in output
  # a count traced with another jax is no count of the timed program: left out, said why
  other = tmp_path / "other_jax.json"
  other.write_text(json.dumps(dict(count, versions=dict(count["versions"], jax="0.0.1"))))
  [unjoined] = bench_report.load([str(bare), str(other)])
  assert "flops_per_step" not in unjoined
  assert "(jax 0.0.1) left out" in capsys.readouterr().err
  with pytest.raises(SystemExit):   # argparse: --torch-compile needs --vs-torch
    bench.main(["--model", "c3d_tiny", "--torch-compile"])
  with pytest.raises(ValueError, match="torch.compile mode 'fast' unknown"):
    bench.main(["--model", "c3d_tiny", "--vs-torch", "--torch-compile",
                "--torch-compile-modes", "default,fast"])


def _result(model, sides, reference=None, **fields):
  def side(ms, low, high, extra):
    return {"step_ms": ms, "step_ms_min": low, "step_ms_max": high, "rounds_ms": [ms],
            "cpu_ms": ms, **extra}
  return {"command": f"python -m darkjax.tools.bench --model {model} --vs-torch",
          "date": "2026-11-25T10:00:00+00:00", "model": model, "batch": 8, "frames": 32,
          "size": 112, "dtype": "bfloat16", "optimizer": {"name": "sgd"}, "device": "gpu",
          "device_kind": "NVIDIA H100 80GB HBM3", "torch_device": "NVIDIA H100 80GB HBM3",
          "cores": 16, "versions": {"jax": "0.10.2", "jaxlib": "0.10.2", "torch": "2.14.1",
                                    "cuda": "13.0"},
          "sides": {name: side(*values) for name, values in sides.items()},
          "reference": reference, **fields}


def test_target_table_renders_the_stored_deviceless_rows():
  """`bench --model M --target T --json` results (docs/benchmarks.md's deviceless row figures, as
  stored) render as one table row per variant."""
  folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                        "bench-gpu", "2026-11-27", "deviceless")
  text = bench_report.markdown(bench_report.load(
      [os.path.join(folder, name) for name in sorted(os.listdir(folder))]))
  assert ("| `c3d` | 30 x 16 x 112^2 | bfloat16 | h100:1 | `auto` | 3.75 | 12.92 | 6.74 | - |"
          in text)
  assert "| `max_pool=native` | 5.61 | 22.40 | 6.74 | - |" in text
  assert "| `bn_relu=plain` | 6.88 | 16.24 | 4.31 | 18.94 |" in text   # 3D-ResNeXt's scans
  assert "compiled for h100:1 (NVIDIA H100 80GB HBM3) on a CPU host, nothing run" in text
  assert text.count("| h100:1 |") == 10 and "[4]" in text


def test_markdown_table_from_json(tmp_path, capsys):
  compiled = _result(
      "r2plus1d_34_ig65m",
      {"flax": (100.0, 99.0, 101.5, {"compile_s": 40.0}),
       "torch": (120.0, 119.0, 121.0, {"first_call_s": 3.0}),
       "torch.compile default": (110.0, 109.0, 111.0, {"compile_s": 60.0}),
       "torch.compile max-autotune-no-cudagraphs": (105.0, 104.0, 106.0, {"compile_s": 300.0})},
      reference="torch.compile max-autotune-no-cudagraphs",
      ratios={"torch": 0.833, "torch.compile default": 0.909,
              "torch.compile max-autotune-no-cudagraphs": 0.952, "reference": 0.952},
      variants={"lowering=frames2d": {"step_ms": 84.0, "rounds_ms": [84.0], "compile_s": 41.0}})
  eager = _result("c3d", {"flax": (50.0, 49.0, 52.0, {"compile_s": 10.0}),
                          "torch": (40.0, 40.0, 41.0, {})}, ratios={"torch": 1.25})
  eager.update(batch=30, frames=16, dtype="float32", optimizer={"name": "adamw"})
  # compiled from a pre-pass's caches (`--cold-from`): the cell shows the pre-pass's cold compiles
  warm = _result("r3d_18", {"flax": (20.0, 20.0, 21.0, {"compile_s": 2.5}),
                            "torch": (22.0, 22.0, 22.0, {"first_call_s": 1.0}),
                            "torch.compile default": (21.0, 21.0, 21.0, {"compile_s": 9.0})},
                 reference="torch.compile default",
                 ratios={"torch": 0.91, "torch.compile default": 0.95, "reference": 0.95},
                 cold_compile={"from": "cold.json", "concurrent": 4, "flax": 31.0,
                               "torch.compile default": 70.0})
  warm.update(batch=16, frames=16)
  paths = []
  for index, result in enumerate((compiled, eager, warm)):
    paths.append(tmp_path / f"{index}.json")
    paths[-1].write_text(json.dumps(result))
  expected = """\
| model | B x T x H^2 | dtype | optimizer | flax ms (median of rounds, min-max) | torch eager ms | \
torch.compile default ms | \
torch.compile max-autotune-no-cudagraphs ms | flax / torch eager | flax / best torch.compile | \
compile s (flax / torch.compile default / torch.compile max-autotune-no-cudagraphs) | \
flax variants: ms (/ best torch.compile) | run |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| `r2plus1d_34_ig65m` | 8 x 32 x 112^2 | bfloat16 | sgd | 100.0 (99.0-101.5) | 120.0 (119.0-121.0) \
| 110.0 (109.0-111.0) | **105.0 (104.0-106.0)** | 0.833 | 0.952 | 40.0 / 60.0 / 300.0 | \
`lowering=frames2d` 84.0 (0.800) | [1] |
| `c3d` | 30 x 16 x 112^2 | float32 | adamw | 50.0 (49.0-52.0) | 40.0 (40.0-41.0) | - | - | 1.250 \
| - | 10.0 / - / - | - | [2] |
| `r3d_18` | 16 x 16 x 112^2 | bfloat16 | sgd | 20.0 (20.0-21.0) | 22.0 (22.0-22.0) | \
**21.0 (21.0-21.0)** | - | 0.910 | 0.950 | 31.0 / 70.0 / - | - | [3] |

- [1] `python -m darkjax.tools.bench --model r2plus1d_34_ig65m --vs-torch`: 2026-11-25, NVIDIA \
H100 80GB HBM3, 16 host cores, jax 0.10.2, jaxlib 0.10.2, torch 2.14.1, torch's CUDA 13.0.
- [2] `python -m darkjax.tools.bench --model c3d --vs-torch`: 2026-11-25, NVIDIA H100 80GB HBM3, \
16 host cores, jax 0.10.2, jaxlib 0.10.2, torch 2.14.1, torch's CUDA 13.0.
- [3] `python -m darkjax.tools.bench --model r3d_18 --vs-torch`: 2026-11-25, NVIDIA H100 80GB \
HBM3, 16 host cores, jax 0.10.2, jaxlib 0.10.2, torch 2.14.1, torch's CUDA 13.0. Compile s are cold, from \
its `--compile-only` pre-pass (4 commands compiling at once: upper bounds); this run compiled from \
the caches that pass filled: flax 2.5 s, torch.compile default 9.0 s.
"""
  assert bench_report.markdown_table(bench_report.load(map(str, paths))) == expected
  assert bench.main(["--markdown-from", *map(str, paths)])["markdown"] == expected
  assert capsys.readouterr().out == expected
  (tmp_path / "other.json").write_text(json.dumps({"model": "c3d", "remat": {}}))
  with pytest.raises(ValueError, match="other.json: not a `bench --model M --vs-torch"):
    bench_report.load([str(tmp_path / "other.json")])
  # `bench --config` results beside them: their own table, numbered on from the rows'
  step = {"compile_s": 4.0, "step_bytes": 4 * 2 ** 30, "step_s": 0.05}
  config = {"command": "python -m darkjax.tools.bench --config configs/dtcm_arid.py",
            "date": "2026-11-27T10:00:00+00:00", "config": "configs/dtcm_arid.py",
            "phase": "joint", "device": "gpu", "device_kind": "NVIDIA H100 80GB HBM3",
            "cores": 16, "persistent_cache": True, "frames": 64, "batch": 8,
            "param_count": 48_400_000, "remat": {"none": step}, "clips_per_s": 160.0,
            "peak_bytes_in_use": 5 * 2 ** 30, "versions": {"jax": "0.11.2", "jaxlib": "0.11.2"},
            "xla_flags": "--xla_gpu_autotune_level=0",
            "cold_compile": {"from": "cold.json", "concurrent": 4, "train_step": 32.0}}
  (tmp_path / "config.json").write_text(json.dumps(config))
  both = bench.main(["--markdown-from", *map(str, paths), str(tmp_path / "config.json")])
  # results of other versions than the rows': said before the tables
  mixed = ("**These results come from 2 machines or software versions:** NVIDIA H100 80GB HBM3 "
           "(jax 0.10.2, jaxlib 0.10.2, torch 2.14.1); NVIDIA H100 80GB HBM3 (jax 0.11.2, "
           "jaxlib 0.11.2).\n")
  assert both["markdown"] == mixed + "\n" + expected + "\n" + """\
| config | phase | B x T | params (M) | step ms (best round) | clips/s (best round) | XLA memory \
(GiB) | allocator peak (GiB) \
| cold compile s | warm start s | cold / warm | run |
|---|---|---|---|---|---|---|---|---|---|---|---|
| `configs/dtcm_arid.py` | joint | 8 x 64 | 48.40 | 50.0 | 160.0 | 4.00 | 5.00 | 32.0 | 4.0 | 8.0x \
| [4] |

- [4] `python -m darkjax.tools.bench --config configs/dtcm_arid.py`: 2026-11-27, NVIDIA H100 80GB \
HBM3, 16 host cores, jax 0.11.2, jaxlib 0.11.2, XLA_FLAGS `--xla_gpu_autotune_level=0`. Compile s \
are cold, from its `--compile-only` pre-pass (4 commands compiling at once: upper bounds); this run \
compiled from the caches that pass filled: train_step 4.0 s.
"""
  # without a pre-pass and without a persistent cache, the run's own compile is the cold one
  del config["cold_compile"], config["xla_flags"]
  config["persistent_cache"] = False
  assert "| 4.0 | - | - | [1] |" in bench_report.config_table([config])
  # a compile-only pre-pass (4 at once, persistent cache on): its compile is the cold one, and its
  # allocator peak (no step ran) is not the step's
  step = config["remat"]["none"]
  config["remat"]["none"] = {k: v for k, v in step.items() if k != "step_s"}
  config.update(persistent_cache=True, concurrent_compiles=4)
  assert "| 4.00 | - | 4.0 | - | - | [1] |" in bench_report.config_table([config])
  # beside the config's timed run, its pre-pass is left out: the timed row shows its cold compile
  timed = {**config, "remat": {"none": step}}
  del timed["concurrent_compiles"]
  assert bench_report.markdown([config, timed]).count("`configs/dtcm_arid.py`") == 1
  assert bench_report.markdown([config]).count("`configs/dtcm_arid.py`") == 1   # a cut lease's



def test_markdown_from_leaves_out_an_unreadable_file_and_a_result_given_twice(tmp_path, capsys):
  """A file a lease's end cut short is named and left out, the rest render; the same result
  given twice (a glob and its file) is one row; a ratio just above 1 reads above 1."""
  row = _result("r3d_18", {"flax": (20.1, 20.0, 21.0, {"compile_s": 2.5}),
                           "torch": (20.0, 20.0, 20.0, {})}, ratios={"torch": 1.004})
  (tmp_path / "row.json").write_text(json.dumps(row))
  (tmp_path / "cut.json").write_text('{"model": "c3d", "sid')
  paths = [str(tmp_path / name) for name in ("row.json", "cut.json", "row.json")]
  text = bench_report.markdown_table(bench_report.load(paths))
  assert text.count("`r3d_18`") == 1 and "| 1.004 |" in text
  assert "cut.json left out: not readable JSON" in capsys.readouterr().err


def test_time_pipelined_waits_once_per_round():
  """Steps dispatched back to back with one wait at the end: the time per step covers the wait
  (the last step's work), and nothing waits between the steps."""
  calls = []

  def run():
    raise AssertionError("a pipelined round does not call the waiting step")
  run.dispatch = lambda: calls.append("dispatch")
  run.sync = lambda: (calls.append("sync"), time.sleep(0.03))
  wall, _ = measure.time_pipelined(run, 3)
  assert calls == ["sync", "dispatch", "dispatch", "dispatch", "sync"]
  assert 0.01 <= wall < 0.5   # the final wait, divided over the 3 steps
  timed = measure.pipelined_rounds({"a": run, "b": run}, 2, 3)
  assert [len(v) for v in timed.values()] == [2, 2]
  summary = bench_report.pipelined_summary([(0.004, 0.001), (0.002, 0.001)])
  assert summary["pipelined_ms"] == 3.0 and summary["pipelined_ms_min"] == 2.0   # the median
  assert measure.median([4.0, 1.0, 2.0]) == 2.0


def test_compile_only_rows_get_their_own_table(tmp_path):
  """A pre-pass's `--compile-only` row that no timed run followed (a lease ran out) renders as
  compile seconds per side, after the timed rows, numbered on from them."""
  timed = _result("r3d_18", {"flax": (20.0, 20.0, 21.0, {"compile_s": 2.5}),
                             "torch": (22.0, 22.0, 22.0, {"first_call_s": 1.0})},
                  ratios={"torch": 0.91})
  untimed = _result("c3d", {})
  untimed.update(batch=30, frames=16, concurrent_compiles=4,
                 sides={"flax": {"compile_s": 34.8}, "torch": {"first_call_s": 13.2},
                        "torch.compile default": {"first_call_s": 27.8, "compile_s": 27.8}},
                 variants={"lowering=native": {"compile_s": 20.1}})
  paths = []
  for index, result in enumerate((untimed, timed)):
    paths.append(tmp_path / f"{index}.json")
    paths[-1].write_text(json.dumps(result))
  text = bench.main(["--markdown-from", *map(str, paths)])["markdown"]
  tables = text.split("\n\n| ")
  assert len(tables) == 2 and "`r3d_18`" in tables[0] and "`c3d`" not in tables[0]
  assert tables[1].splitlines()[:3] == [
      "model | B x T x H^2 | dtype | optimizer | flax compile s | flax `lowering=native` compile "
      "s | torch eager first call s | torch.compile default compile s | compiling at once | run |",
      "|---|---|---|---|---|---|---|---|---|---|",
      "| `c3d` | 30 x 16 x 112^2 | bfloat16 | sgd | 34.8 | 20.1 | 13.2 | 27.8 | 4 | [2] |"]
  assert "- [2] `python -m darkjax.tools.bench --model c3d --vs-torch`" in tables[1]
  # the pre-pass of a row that was timed is left out (its cold compile is in the timed row), so
  # a lease's pre-pass files can all be given
  pre_pass = _result("r3d_18", {})
  pre_pass.update(concurrent_compiles=4, sides={"flax": {"compile_s": 30.0},
                                                "torch": {"first_call_s": 9.0}})
  paths.append(tmp_path / "cold-r3d.json")
  paths[-1].write_text(json.dumps(pre_pass))
  text = bench.main(["--markdown-from", *map(str, paths)])["markdown"]
  assert text.count("`r3d_18`") == 1 and text.count("`c3d`") == 1

GPU_HLO = """\
ENTRY %main {
  %cudnn-conv.3 = (bf16[16,8,56,56,64]{4,3,2,1,0}, u8[0]{0}) custom-call(%a, %b), \
window={size=1x3x3}, dim_labels=b012f_o012i->b012f, custom_call_target="__cudnn$convForward"
  %cudnn-conv-bw-filter.1 = (bf16[64,1,3,3,64]{4,3,2,1,0}, u8[0]{0}) custom-call(%c, %d), \
dim_labels=bf012_oi012->bf012, custom_call_target="__cudnn$convBackwardFilter"
  %loop_transpose_fusion.2 = bf16[16,64,8,56,56]{4,3,2,1,0} fusion(%e), kind=kLoop, calls=%f
  %input_reduce_fusion = f32[64]{0} fusion(%g), kind=kInput, calls=%h
  %gemm_fusion_dot.1 = f32[16,400]{1,0} fusion(%i, %j), kind=kCustom, calls=%k
  ROOT %copy.7 = bf16[16,8,56,56,64]{4,3,2,1,0} copy(%l)
}
"""


def test_profile_categories_from_optimized_hlo():
  """What `bench --profile` reads off an XLA:GPU program: each op's kind, convolutions per
  direction with the layout XLA chose."""
  ops = profiling.hlo_ops(GPU_HLO)
  assert ops["cudnn-conv.3"] == {"opcode": "custom-call", "target": "__cudnn$convForward",
                                 "dim_labels": "b012f_o012i->b012f", "window": "size=1x3x3"}
  assert ops["loop_transpose_fusion.2"]["kind"] == "kLoop"
  kinds = {name: profiling.op_category(name, info) for name, info in ops.items()}
  assert kinds == {"cudnn-conv.3": "convolution Forward",
                   "cudnn-conv-bw-filter.1": "convolution BackwardFilter",
                   "loop_transpose_fusion.2": "transpose", "input_reduce_fusion": "reduction",
                   "gemm_fusion_dot.1": "matmul", "copy.7": "copy"}
  assert profiling.op_category("fusion.4", None) == "elementwise fusion"
  # XLA's own convolution (CPU, TPU) is forward and gradients alike: no direction claimed
  assert profiling.op_category("convolution.2", {"opcode": "convolution"}) == "convolution"
  assert profiling.op_category("command_buffer_778", None) == "command buffer"


CONV_HLO = """\
ENTRY %main {
  %x = bf16[480,112,112,9]{3,2,1,0} parameter(0)
  %k = bf16[64,3,3,9]{3,2,1,0} parameter(1)
  %dy = bf16[480,112,112,64]{3,2,1,0} parameter(2)
  %cudnn-conv.1 = (bf16[480,112,112,64]{3,2,1,0}, u8[0]{0}) custom-call(%x, %k), \
window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  %cudnn-conv-bw-filter.2 = (bf16[64,3,3,9]{3,2,1,0}, u8[0]{0}) custom-call(%x, %dy), \
dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %cudnn-conv-bw-input.3 = (bf16[480,112,112,9]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %k), \
dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  %a = f32[2,4,6,6,8]{4,3,2,1,0} parameter(3)
  %b = f32[3,3,3,2,8]{4,3,2,1,0} parameter(4)
  ROOT %convolution.4 = f32[2,4,6,6,8]{4,3,2,1,0} convolution(%a, %b), \
window={size=3x3x3 pad=1_1x1_1x1_1}, dim_labels=b012f_012io->b012f, feature_group_count=4
}
"""


LOOP_HLO = """\
%inner (p: (s32[], bf16[8,7,7,512])) -> (s32[], bf16[8,7,7,512]) {
  %x = bf16[8,7,7,512]{3,2,1,0} parameter(0)
  %k = bf16[512,1,1,512]{3,2,1,0} parameter(1)
  %cudnn-conv.9 = (bf16[8,7,7,512]{3,2,1,0}, u8[0]{0}) custom-call(%x, %k), \
window={size=1x1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
}

%body.1 (p: (s32[], bf16[8,7,7,512])) -> (s32[], bf16[8,7,7,512]) {
  %x = bf16[8,7,7,512]{3,2,1,0} parameter(0)
  %k = bf16[512,1,1,512]{3,2,1,0} parameter(1)
  %cudnn-conv.7 = (bf16[8,7,7,512]{3,2,1,0}, u8[0]{0}) custom-call(%x, %k), \
window={size=1x1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  ROOT %while.2 = (s32[], bf16[8,7,7,512]) while(%t), condition=%c2, body=%inner, \
backend_config={"known_trip_count":{"n":"3"},"known_init_step":{"init":"0","step":"1"}}
}

%body.2 (p: (s32[], bf16[8,7,7,512])) -> (s32[], bf16[8,7,7,512]) {
  %fusion.5 = bf16[8,7,7,512]{3,2,1,0} fusion(%x), kind=kLoop, calls=%f
}

ENTRY %main.3 (a: bf16[8,7,7,512]) -> bf16[8,7,7,512] {
  %x = bf16[8,7,7,512]{3,2,1,0} parameter(0)
  %k = bf16[512,1,1,512]{3,2,1,0} parameter(1)
  %cudnn-conv.8 = (bf16[8,7,7,512]{3,2,1,0}, u8[0]{0}) custom-call(%x, %k), \
window={size=1x1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  %while.1 = (s32[], bf16[8,7,7,512]) while(%t), condition=%c1, body=%body.1, \
backend_config={"known_trip_count":{"n":"22"}}
  ROOT %while.3 = (s32[], bf16[8,7,7,512]) while(%t), condition=%c3, body=%body.2
}
"""


def test_profiled_ops_in_loop_bodies_count_every_run():
  """An op in a while loop's body (an nn.scan's blocks) runs the loop's trip count times a step,
  nested loops multiplied, and a profile's time for it is all of them together: `runs`, and its
  TFLOP/s from its operations times its runs (3D-ResNeXt's layer3 body runs 22 times)."""
  ops = profiling.hlo_ops(LOOP_HLO)
  assert ops["cudnn-conv.7"]["runs"] == 22 and ops["cudnn-conv.9"]["runs"] == 66
  assert "runs" not in ops["cudnn-conv.8"] and "runs" not in ops["while.1"]
  assert "runs" not in ops["fusion.5"]   # a loop without a known trip count: not guessed
  once = 2 * 8 * 7 * 7 * 512 * 512 / 1e9
  assert ops["cudnn-conv.7"]["gflop"] == pytest.approx(once)
  entry = profiling._with_rate({"op": "cudnn-conv.7", "category": "convolution Forward",
                                "ms": 0.5, **ops["cudnn-conv.7"]})
  assert entry["tflops"] == pytest.approx(once * 22 / 0.5)
  summary = {"device_ms_per_step": 0.5, "steps": 1, "categories_ms": {}, "conv_layouts": {},
             "top_ops_ms": [entry]}
  assert "cudnn-conv.7 (x22)" in profiling.format_summary(summary)


def test_profiled_convolutions_carry_their_shapes_and_operation_counts():
  """Each convolution of an optimized HLO, in any direction, names the forward convolution it
  is part of (kernel and output shapes) and its GFLOP (a multiply-add as two; a grouped kernel
  holds in / groups input channels), so a profile's top ops give each one's TFLOP/s."""
  ops = profiling.hlo_ops(CONV_HLO)
  conv1 = 2 * 480 * 112 * 112 * 64 * (3 * 3 * 9) / 1e9   # C3D's conv1 on 3 stacked RGB taps
  for name in ("cudnn-conv.1", "cudnn-conv-bw-filter.2", "cudnn-conv-bw-input.3"):
    assert ops[name]["kernel"] == "bf16[64,3,3,9]" and ops[name]["output"] == "bf16[480,112,112,64]"
    assert ops[name]["gflop"] == pytest.approx(conv1)
  assert ops["convolution.4"]["gflop"] == pytest.approx(2 * (2 * 4 * 6 * 6 * 8) * 27 * 2 / 1e9)
  assert ops["convolution.4"]["groups"] == 4 and "groups" not in ops["cudnn-conv.1"]
  assert "gflop" not in ops["x"] and "gflop" not in profiling.hlo_ops(GPU_HLO)["cudnn-conv.3"]
  # the H100 profile of 2026-11-27: C3D's conv1 forward took 1.114 ms a step
  entry = profiling._with_rate({"op": "cudnn-conv.1", "category": "convolution Forward",
                                "ms": 1.114, **ops["cudnn-conv.1"]})
  assert entry["tflops"] == pytest.approx(56.0, abs=0.1)
  summary = {"device_ms_per_step": 1.114, "steps": 1, "categories_ms": {}, "conv_layouts": {},
             "top_ops_ms": [entry]}
  assert "bf16[64,3,3,9] -> bf16[480,112,112,64], 56 TFLOP/s" in profiling.format_summary(summary)
  # what a GPU's cold compile autotunes: each distinct cuDNN convolution (here a forward and the
  # two gradients of one, and that forward's copy) and GEMM
  copies = CONV_HLO.replace("%cudnn-conv.1 =", "%cudnn-conv.9 = (bf16[480,112,112,64]{3,2,1,0}, "
                            "u8[0]{0}) custom-call(%x, %k), window={size=3x3 pad=1_1x1_1}, "
                            "dim_labels=b01f_o01i->b01f, custom_call_target=\"__cudnn$convForward\""
                            "\n  %cudnn-conv.1 =")
  # three GEMMs of one result shape, two of them alike: their operands tell them apart
  gemms = "".join(
      f'  %{p} = bf16[16,{k}]{{1,0}} parameter({i + 5})\n'
      f'  %w{i} = bf16[{k},400]{{1,0}} parameter({i + 8})\n'
      f'  %gemm.{i} = (f32[16,400]{{1,0}}, s8[0]{{0}}) custom-call(%{p}, %w{i}), '
      'custom_call_target="__cublas$lt$matmul"\n'
      for i, (p, k) in enumerate((("p", 512), ("q", 512), ("r", 2048)))) + "}\n"
  tuned = measure.autotuned(copies[:copies.rindex("}")] + gemms)   # before ENTRY's end
  assert tuned == {"convolutions": 4, "distinct_convolutions": 3, "gemms": 3,
                   "distinct_gemms": 2}, tuned
  assert measure.format_autotuned(tuned) == ("4 cuDNN convolutions (3 distinct), 3 GEMMs "
                                             "(2 distinct)")


def test_utilisation_cells_against_the_devices_bf16_peak():
  """A GPU row's flax TFLOP/s per device and share of the H100's dense bf16 peak, pipelined
  where timed; the count divided over data-parallel devices."""
  side = {"step_ms": 26.7, "pipelined_ms": 23.8}
  result = {"flops_per_step": 3.705e12, "devices": 1, "device_kind": "NVIDIA H100 80GB HBM3",
            "sides": {"flax": dict(side)}}
  flax = bench_report.with_utilisation(result)["sides"]["flax"]
  assert flax["pipelined_utilisation"]["tflops"] == pytest.approx(155.67, abs=0.01)
  assert flax["utilisation"]["peak_fraction"] == pytest.approx(3.705e12 / 0.0267 / 989e12)
  assert bench_report._utilisation_cell(flax) == "156 (15.7%) p"   # at the pipelined step
  assert bench_report._utilisation_cell({"utilisation": flax["utilisation"]}) == "139 (14.0%)"
  two = bench_report.with_utilisation({**result, "devices": 2, "sides": {"flax": dict(side)}})
  assert two["sides"]["flax"]["utilisation"]["tflops"] == pytest.approx(
      flax["utilisation"]["tflops"] / 2)
  assert bench_report._utilisation_cell({}) == "-"
