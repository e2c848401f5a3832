"""What a run writes for a person to read: WORKDIR/report.md of a phase (what ran, the final
evaluation, the artifacts) and the summary of a run in phases."""

from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections as mlc

from darkjax import config as config_lib
from darkjax import paths


def parameters(count: int, frozen: int = 0) -> str:
  """"1,234 parameters", with how many of them train where `optimizer.frozen` holds some (a
  student's frozen teacher is in its state, not in what it trains)."""
  return f"{count:,} parameters" + (f" ({count - frozen:,} trained, {frozen:,} frozen)"
                                    if frozen else "")


def title(config: mlc.ConfigDict) -> str:
  """"trainer / model", or the one name where they are the same (3D-DiNet's)."""
  names = list(dict.fromkeys((str(config.trainer), str(config.model.name))))
  return " / ".join(names)


def _datasets_line(config: mlc.ConfigDict) -> str:
  """"- dataset: `arid_v1` split 2 (DIR)": each dataset the run reads, with its numbered split
  (the runs of an experiment over splits would otherwise read alike), the part evaluated where
  not `test`, and the config field of each where there are several; then the views evaluated
  where more than one."""
  blocks: dict[tuple[str, str], tuple[str, Any]] = {}   # one a dataset and part, its first field
  for field, block in config_lib.named_data_blocks(config):
    blocks.setdefault((block.dir, _part(block)), (field, block))
  several = len(blocks) > 1   # each named by its config field (3D-DiNet's source and target)
  named = [f"`{b.name}`" + (f" split {b.split_index}" if int(b.split_index) else "")
           + (f", evaluated on {_part(b)}" if b.get("eval_split", "test") not in ("test", "")
              else "")
           + (f" as {field}" if several else "") + f" ({b.dir})"
           for field, b in blocks.values()]
  line = f"- dataset{'s' if len(named) > 1 else ''}: " + "; ".join(named)
  own = _own_splits(config)
  clips, crops = int(config.input.get("eval_clips", 1)), int(config.input.get("eval_crops", 1))
  said = [f"`{name}` on {part}" for name, part in own.items()]
  if (clips, crops) != (1, 1):   # the views each evaluated video's score averages
    said.append(f"{clips} clip{'s' if clips > 1 else ''} x {crops} "
                f"crop{'s' if crops > 1 else ''} a video, averaged")
  return line + (f"\n- evaluation: {'; '.join(said)}" if said else "")


def _own_splits(config: mlc.ConfigDict) -> dict[str, str]:
  """{evaluator: the part it evaluates} of the evaluators that name a split of their own
  (`config.evals.<name>.split`, with the first dataset's split number)."""
  blocks = config_lib.data_blocks(config)
  number = int(blocks[0].split_index) if blocks else 0
  return {name: f"{block.split}{number or ''}" for name, block in config.get("evals", {}).items()
          if isinstance(block, mlc.ConfigDict) and block.get("split")}


def _part(block: mlc.ConfigDict) -> str:
  """A dataset block's evaluation part as its manifest names it (`test1`, `val`)."""
  return f"{block.get('eval_split', 'test')}{int(block.split_index) or ''}"


def evaluated_on(config: mlc.ConfigDict) -> str:
  """What a run's evaluation reads, in a few words: its datasets' evaluation part (`test1`,
  `val`; each block's, named by its field, where they differ: `dinet.target.data: train,
  input.data: test`), each evaluator's own part where it names one (`eval: train`), and where
  more than one the views each video's score averages (`test1, 10 clips x 3 crops`)."""
  named = config_lib.named_data_blocks(config)
  parts = list(dict.fromkeys(_part(block) for _, block in named))
  if len(parts) > 1:
    parts = [f"{field}: {_part(block)}" for field, block in named]
  own = _own_splits(config)
  if own and len(own) == len(config.evals):   # every evaluator reads a part of its own
    parts = []
  parts += [f"{name}: {part}" for name, part in own.items()]
  clips, crops = int(config.input.eval_clips), int(config.input.eval_crops)
  return ", ".join(parts) + (f", {clips} clips x {crops} crops" if (clips, crops) != (1, 1)
                             else "")


def write_report(workdir: str, config: mlc.ConfigDict, param_count: int, seconds: float,
                 results: Mapping[str, Any], frozen_count: int = 0) -> str:
  """WORKDIR/report.md: what ran, the final evaluation and where the artifacts are."""
  scalars = {k: v for k, v in results.items() if isinstance(v, float) and "per_class" not in k}
  # {evaluator: {class: accuracy}}: 3D-DiNet's target (`eval`) and source (`eval_source`) share
  # their class names, so each evaluator keeps its own column.
  per_class: dict[str, dict[str, float]] = {}
  for key, value in results.items():
    if "_per_class/" in key:
      evaluator, class_name = key.split("_per_class/", 1)
      per_class.setdefault(evaluator, {})[class_name] = value
  lines = [f"# darkjax run: {title(config)}", "",
           _datasets_line(config),
           f"- {parameters(param_count, frozen_count)}",
           f"- steps: {config.total_steps}, global batch "
           f"{config.input.batch_size}{config_lib.rounded_note(config)}",
           f"- wall time of this invocation: {seconds:.0f} s", ""]
  if scalars:
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(scalars.items())]
  else:   # a phase without evaluations (ActLumos's self-supervised one)
    lines += ["No evaluation in this phase: its training losses are in `metrics.jsonl` and "
              "`tensorboard/`."]
  if per_class:
    evaluators = list(per_class)
    classes = list(dict.fromkeys(c for table in per_class.values() for c in table))
    lines += ["", "| class | " + " | ".join(f"{e} accuracy" for e in evaluators) + " |",
              "|---|" + "---|" * len(evaluators)]
    lines += [f"| {c} | " + " | ".join(
        f"{per_class[e][c]:.3f}" if c in per_class[e] else "" for e in evaluators) + " |"
              for c in classes]
  pngs = sorted(p.name for p in paths.resolve(workdir).iterdir() if p.name.endswith(".png"))
  lines += ["", "Artifacts: `metrics.jsonl`, `tensorboard/`, `checkpoints/`, `config.json`"
            + "".join(f", `{p}`" for p in pngs), ""]
  path = paths.resolve(workdir) / "report.md"
  # whole or not at all: a full disk must not leave an empty report a rerun takes as written
  paths.write_bytes_atomic(path, "\n".join(lines).encode("utf-8"))
  return os.fspath(path)


def write_summary(workdir: str, config: mlc.ConfigDict, plan, results: Mapping[str, Any]) -> str:
  """WORKDIR/report.md of a run in phases: the phases, where each one's report is, and every
  phase's final metrics."""
  directories = [os.path.relpath(p.workdir(workdir, config), workdir) for p in plan]
  lines = [f"# darkjax run: {title(config)} on `{config.input.data.name}`",
           "", _datasets_line(config),
           f"- phases: {', '.join(f'{p.name} ({d}/)' for p, d in zip(plan, directories))}; "
           "each directory has its own report.md, metrics and checkpoints; the last is the "
           "deployed model", "", "| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in sorted(results.items())
            if isinstance(v, float) and "per_class" not in k]
  path = paths.resolve(workdir) / "report.md"
  paths.write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
  return os.fspath(path)
