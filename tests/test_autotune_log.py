"""darkjax.tools.autotune_log: XLA's GPU autotuning log (xla.AutotuningLogs as text) summarised
per instruction and kind, as `bench --autotune-log` prints it."""

from __future__ import annotations

import pytest

from darkjax.tools import autotune_log, bench

# The shape of what --xla_gpu_dump_autotune_logs_to=FILE.textproto writes (xla/autotuning.proto):
# two convolutions (one candidate failed, one rejected as a wrong result) and a Triton GEMM fusion.
LOG = r'''
logs {
  instr {
    [type.googleapis.com/xla.gpu.ConvInstructionLog] {
      instruction {
        name: "cudnn-conv.7"
        opcode: "custom-call"
        custom_call_target: "__cudnn$convBackwardFilter"
        backend_config: "{\"cudnn_conv_backend_config\":{}}"
      }
      operand_shapes { element_type: BF16 dimensions: 8 dimensions: 16 }
    }
  }
  results {
    scratch_bytes: 1024
    run_time { nanos: 2500000 }
    algorithm { algo_id: 3 math_type: TENSOR_OP_MATH }
  }
  results {
    run_time { seconds: 1 nanos: 500000000 }
    algorithm { algo_id: 5 }
  }
  results {
    failure { kind: WRONG_RESULT msg: "mismatch" reference_algorithm { algo_id: 0 } }
    run_time { nanos: 100000 }
    algorithm { algo_id: 9 }
  }
  selected_backend: "__cudnn$convBackwardFilter"
}
logs {
  instr {
    [type.googleapis.com/xla.gpu.ConvInstructionLog] {
      instruction { name: "cudnn-conv.2" opcode: "custom-call" }
    }
  }
  results { run_time { nanos: 1000000 } algorithm { algo_id: 1 } }
  results { failure { kind: DISQUALIFIED msg: "no " "workspace" } algorithm { algo_id: 2 } }
}
logs {
  fusion_name: "gemm_fusion_dot.3"
  # a comment
  results { run_time { nanos: 4000000 } triton { block_m: 64 block_n: 32 block_k: 32 } }
  results { run_time { nanos: 3000000 } triton { block_m: 128 block_n: 64 block_k: 32 } }
  fusion_count: 2
}
'''


def test_textproto_parses_nested_messages_strings_and_comments():
  parsed = autotune_log.parse_textproto(LOG)
  assert len(parsed["logs"]) == 3
  first = parsed["logs"][0]
  conv = first["instr"][0]["[type.googleapis.com/xla.gpu.ConvInstructionLog]"][0]
  assert conv["instruction"][0]["backend_config"] == ['{"cudnn_conv_backend_config":{}}']
  assert conv["operand_shapes"][0]["dimensions"] == [8, 16]
  disqualified = parsed["logs"][1]["results"][1]["failure"][0]
  assert disqualified["msg"] == ["no workspace"] and disqualified["kind"] == ["DISQUALIFIED"]
  with pytest.raises(ValueError, match="not closed"):
    autotune_log.parse_textproto("logs { results {")
  with pytest.raises(ValueError, match="unexpected '}'"):
    autotune_log.parse_textproto("a: 1 }")


def test_summary_per_instruction_and_kind():
  rows = autotune_log.summarise(autotune_log.parse_textproto(LOG))
  # the slowest to tune first: the conv whose candidates ran 1502.5 ms, failures not counted
  assert [r["instruction"] for r in rows] == [
      "cudnn-conv.7 (__cudnn$convBackwardFilter)", "gemm_fusion_dot.3", "cudnn-conv.2"]
  conv, gemm, small = rows
  assert (conv["kind"], conv["candidates"], conv["failed"]) == ("convolution", 3, 1)
  assert conv["best_ms"] == pytest.approx(2.5) and conv["total_ms"] == pytest.approx(1502.5)
  assert conv["selected"] == "__cudnn$convBackwardFilter"
  assert (gemm["kind"], gemm["candidates"], gemm["best_ms"]) == ("Triton GEMM", 2, 3.0)
  assert (small["failed"], small["total_ms"]) == (1, pytest.approx(1.0))
  totals = autotune_log.totals(rows)
  assert totals["convolution"] == {"instructions": 2, "candidates": 5, "failed": 2,
                                   "total_ms": pytest.approx(1503.5)}
  assert totals["Triton GEMM"]["total_ms"] == pytest.approx(7.0)


def test_bench_prints_the_tables_and_names_a_bad_file(tmp_path, capsys):
  path = tmp_path / "solo-config-actlumos_arid.autotune.textproto"
  path.write_text(LOG)
  bench.main(["--autotune-log", str(path)])
  out = capsys.readouterr().out
  assert f"`{path}`: 3 instructions autotuned, 7 candidates" in out
  assert "| convolution | 2 | 5 | 2 | 1503.5 |" in out
  assert "| `cudnn-conv.7 (__cudnn$convBackwardFilter)` | convolution | 3 | 1 | 2.500 | 1502.5 |" \
      in out
  bad = tmp_path / "results.json"
  bad.write_text('{"a": 1}')
  with pytest.raises(SystemExit, match="results.json"):
    bench.main(["--autotune-log", str(bad)])
  empty = tmp_path / "empty.textproto"
  empty.write_text("version: 3\n")
  with pytest.raises(SystemExit, match="no `logs` entries"):
    bench.main(["--autotune-log", str(empty)])
