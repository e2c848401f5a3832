"""Where a GPU compile's autotuning goes: a summary of XLA's autotuning log.

XLA:GPU autotunes each distinct cuDNN convolution and GEMM fusion of a program on the device
while compiling it (every candidate algorithm or tiling run on the full-size problem), most of a
paper step's cold compile on an H100 (docs/benchmarks.md, "Where a GPU step's compile time
goes"). `XLA_FLAGS=--xla_gpu_dump_autotune_logs_to=FILE.textproto` writes what it tried
(`xla.AutotuningLogs`, xla/autotuning.proto: per instruction its candidates, each with its run
time or why it failed); `launch/bench_gpu.sh ... autotune` writes one per compile.

    python -m darkjax.tools.bench --autotune-log FILE.textproto [MORE ...]

prints per file the instructions by the time their candidates ran (summed), with the candidates
tried, failed and the best time, and the totals per kind (convolution, Triton GEMM, cuBLAS GEMM,
other). The sum of candidates' run times is a lower bound of what autotuning an instruction took
(each candidate is also initialised, run more than once and checked against a reference, per
`--xla_gpu_autotune_level`); the counts say where the compile's time goes.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

# textproto tokens: strings (with escapes), [extension/Any type names], identifiers and numbers,
# punctuation; comments dropped
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\[[^\]]*\]|[A-Za-z0-9_.+-]+|[{}<>:;,]'
                    r'|#[^\n]*|\S')


def _tokens(text: str) -> Iterator[str]:
  for match in _TOKEN.finditer(text):
    token = match.group(0)
    if not token.startswith("#"):
      yield token


def _scalar(token: str) -> Any:
  if token[:1] in "\"'":
    return bytes(token[1:-1], "utf-8").decode("unicode_escape", errors="replace")
  for kind in (int, float):
    try:
      return kind(token)
    except ValueError:
      pass
  return token   # an enum value or identifier


def parse_textproto(text: str) -> dict[str, list[Any]]:
  """A text-format protobuf message as {field: [values]} (messages nested as such dicts, scalars
  as int, float or str), without its schema. Raises ValueError naming the token where the text
  stops being one."""
  tokens = list(_tokens(text))
  position = 0

  def message(closing: str | None) -> dict[str, list[Any]]:
    nonlocal position
    fields: dict[str, list[Any]] = {}
    while position < len(tokens):
      token = tokens[position]
      if token in ("}", ">"):
        if closing is None or token != closing:
          raise ValueError(f"textproto: unexpected {token!r} at token {position}")
        position += 1
        return fields
      if token in (";", ","):
        position += 1
        continue
      name = token
      position += 1
      if position < len(tokens) and tokens[position] == ":":
        position += 1
      if position >= len(tokens):
        raise ValueError(f"textproto: field {name!r} has no value")
      value = tokens[position]
      if value in ("{", "<"):
        position += 1
        fields.setdefault(name, []).append(message("}" if value == "{" else ">"))
      elif value == "[":   # a repeated scalar list: [a, b]
        raise ValueError(f"textproto: list values are not supported (field {name!r})")
      else:
        position += 1
        parts = [_scalar(value)]
        # adjacent strings concatenate
        while (isinstance(parts[0], str) and value[:1] in "\"'" and position < len(tokens)
               and tokens[position][:1] in "\"'"):
          parts[0] += _scalar(tokens[position])
          position += 1
        fields.setdefault(name, []).append(parts[0])
    if closing is not None:
      raise ValueError(f"textproto: a message is not closed ({closing!r} missing)")
    return fields

  return message(None)


def _first(fields: dict[str, list[Any]], name: str, default: Any = None) -> Any:
  values = fields.get(name)
  return values[0] if values else default


def _duration_ms(duration: dict[str, list[Any]] | None) -> float | None:
  if not duration:
    return None
  return (float(_first(duration, "seconds", 0)) * 1e3 + float(_first(duration, "nanos", 0)) / 1e6)


# AutotuneResult's `key` oneof -> the kind of instruction it tunes
_KINDS = {"algorithm": "convolution", "conv": "convolution", "cuda_conv_plan": "convolution",
          "triton": "Triton GEMM", "gemm": "cuBLAS GEMM", "custom_kernel_fusion": "other",
          "other": "other"}


def _instruction(log: dict[str, list[Any]]) -> str:
  """The tuned instruction's name: the fusion's, else that of the HloInstructionProto in the
  `instr` Any (a convolution's ConvInstructionLog), with its custom-call target, else the first
  `%name = ...` of HLO text in it."""
  name = _first(log, "fusion_name")
  if name:
    return str(name)
  texts: list[str] = []

  def find(value: Any) -> str | None:
    if isinstance(value, str):
      texts.append(value)
    elif isinstance(value, dict):
      if "name" in value and "opcode" in value:
        target = _first(value, "custom_call_target")
        return str(_first(value, "name")) + (f" ({target})" if target else "")
      for values in value.values():
        for item in values:
          found = find(item)
          if found:
            return found
    return None

  found = find(_first(log, "instr", {}))
  if found:
    return found
  for text in texts:
    match = re.search(r"%?([\w.-]+)\s*=", text)
    if match:
      return match.group(1)
  return texts[0][:60] if texts else "?"


def summarise(logs: dict[str, list[Any]]) -> list[dict[str, Any]]:
  """Per AutotuningLog of an `xla.AutotuningLogs` (parse_textproto): its instruction, kind,
  candidates, failed candidates, the best and the summed run time (ms) and the backend chosen;
  the slowest to tune (summed run time) first."""
  rows = []
  for log in logs.get("logs", []):
    results = log.get("results", [])
    kinds = {_KINDS[key] for result in results for key in result if key in _KINDS}
    times = [_duration_ms(_first(result, "run_time")) for result in results
             if "failure" not in result]
    times = [t for t in times if t is not None]
    rows.append({
        "instruction": _instruction(log),
        "kind": kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "other"),
        "candidates": len(results),
        "failed": sum("failure" in result for result in results),
        "best_ms": min(times) if times else None,
        "total_ms": sum(times),
        "selected": _first(log, "selected_backend", ""),
    })
  rows.sort(key=lambda row: -row["total_ms"])
  return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Per kind: instructions, candidates, failed candidates and summed run time (ms)."""
  out: dict[str, dict[str, float]] = {}
  for row in rows:
    entry = out.setdefault(row["kind"], {"instructions": 0, "candidates": 0, "failed": 0,
                                         "total_ms": 0.0})
    entry["instructions"] += 1
    entry["candidates"] += row["candidates"]
    entry["failed"] += row["failed"]
    entry["total_ms"] += row["total_ms"]
  return out


def markdown(path: str, rows: list[dict[str, Any]], top: int = 15) -> str:
  """A file's totals per kind and its `top` instructions as markdown tables."""
  lines = [f"`{path}`: {len(rows)} instructions autotuned, "
           f"{sum(r['candidates'] for r in rows)} candidates", "",
           "| kind | instructions | candidates | failed | candidates' run time ms (sum) |",
           "|---|---|---|---|---|"]
  for kind, entry in sorted(totals(rows).items(), key=lambda item: -item[1]["total_ms"]):
    lines.append(f"| {kind} | {entry['instructions']:.0f} | {entry['candidates']:.0f} | "
                 f"{entry['failed']:.0f} | {entry['total_ms']:.1f} |")
  lines += ["", "| instruction | kind | candidates | failed | best ms | sum ms | chosen |",
            "|---|---|---|---|---|---|---|"]
  for row in rows[:top]:
    best = "-" if row["best_ms"] is None else f"{row['best_ms']:.3f}"
    lines.append(f"| `{row['instruction']}` | {row['kind']} | {row['candidates']} | "
                 f"{row['failed']} | {best} | {row['total_ms']:.1f} | {row['selected'] or '-'} |")
  return "\n".join(lines) + "\n"


def report(paths: list[str], top: int = 15) -> tuple[str, dict[str, Any]]:
  """The markdown of each file (`markdown`) and {path: rows}. A file that is not an
  AutotuningLogs textproto fails naming it."""
  texts, results = [], {}
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        logs = parse_textproto(f.read())
    except (OSError, ValueError) as error:
      raise SystemExit(f"bench --autotune-log: {path}: {error} (expected the text file "
                       "XLA_FLAGS=--xla_gpu_dump_autotune_logs_to=FILE.textproto writes)") from None
    if "logs" not in logs:
      raise SystemExit(f"bench --autotune-log: {path} has no `logs` entries: not an "
                       "xla.AutotuningLogs text file (--xla_gpu_dump_autotune_logs_to, ending "
                       ".textproto or .txt)")
    results[path] = summarise(logs)
    texts.append(markdown(path, results[path], top))
  return "\n".join(texts), results
