"""The arms of an experiment table change only what they declare.

An ablation compares a config with arms that each change one thing. `python -m
darkjax.tools.experiment` builds every arm's resolved config before it trains anything and compares
it with the default arm's, field by field, together with the phases the run trains and their step
counts (`phases`: "teacher:300,student:400"), so an arm that drops a teacher phase or changes an
optimizer shows it. Each arm declares the fields it changes (`--changes no_kd=lift.kd`; a declared
`a.b` covers `a.b.*`): a difference it does not declare, or a declared field that does not change,
stops the table naming both lists, so a table never compares arms that differ in more than they
say. The table states each arm's changes with their values.

An arm that changes only what a phase does not read (`Phase.ignores`: the KD weight, for the
teacher phase) trains that phase exactly as the default arm does: `shared_phases` finds those
phases, and the experiment runner hands the arm the default's trained phase of the same seed
instead of training it again (a LIFT-Net `kd_weight=0` arm reuses the teacher).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import ml_collections as mlc

from darkjax import config as config_lib
from darkjax import task as task_lib

PHASES_KEY = "phases"


class ArmsError(ValueError):
  """Two arms of a table differ in more (or less) than the arm declares."""


def resolved_view(config: mlc.ConfigDict) -> dict[str, Any]:
  """The config's fields plus `phases`: the phases a run trains with their step counts."""
  view = config_lib.flat(config)
  plan = task_lib.phase_plan(config)
  view[PHASES_KEY] = ",".join(f"{p.name}:{p.config(config).total_steps}" for p in plan)
  return view


def phase_view(phase: task_lib.Phase, config: mlc.ConfigDict) -> dict[str, Any]:
  """The fields of `phase`'s config that its training reads: all but `phase.ignores`."""
  return {key: value for key, value in config_lib.flat(phase.config(config)).items()
          if not any(config_lib.covers(ignored, key) for ignored in phase.ignores)}


def shared_phases(default: mlc.ConfigDict, arm: mlc.ConfigDict) -> tuple[str, ...]:
  """The phases a run of `arm` trains exactly as a run of `default` with the same seed does: the
  default runs them too, their configs agree on every field the phase reads, every phase they
  start from (`init_from`) runs in both or in neither and is itself shared, and they keep their
  checkpoints in a sub-directory of the run (the workdir itself holds the deployed phase)."""
  default_plan = {phase.name: phase for phase in task_lib.phase_plan(default)}
  arm_plan = task_lib.phase_plan(arm)
  arm_names = {phase.name for phase in arm_plan}
  shared: list[str] = []
  for phase in arm_plan:
    theirs = default_plan.get(phase.name)
    if theirs is None or not phase.workdir("", arm) \
        or phase.workdir("", arm) != theirs.workdir("", default):
      continue
    if any((name in arm_names) != (name in default_plan)
           or (name in arm_names and name not in shared) for name in phase.init_from):
      continue
    if phase_view(phase, arm) == phase_view(theirs, default):
      shared.append(phase.name)
  return tuple(shared)


def parse_changes(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
  """`NAME=FIELD[,FIELD...]` strings -> {arm: fields}."""
  out: dict[str, tuple[str, ...]] = {}
  for item in items:
    name, sep, fields = item.partition("=")
    keys = tuple(f.strip() for f in fields.split(",") if f.strip())
    if not sep or not keys or not re.fullmatch(r"[\w.-]+", name):
      raise ValueError(f"--changes {item!r}: expected NAME=FIELD[,FIELD...], e.g. "
                       "no_dcl=twostream.dcl")
    if name in out:
      raise ValueError(f"--changes {name!r} given twice")
    out[name] = keys
  return out


def check(default: mlc.ConfigDict, arms: Mapping[str, mlc.ConfigDict],
          declared: Mapping[str, Sequence[str]]) -> dict[str, dict[str, tuple[Any, Any]]]:
  """{arm: its differences from `default`}, or ArmsError naming, per arm, the differences it does
  not declare and the declared fields that do not change."""
  unknown = sorted(set(declared) - set(arms))
  if unknown:
    raise ArmsError(f"--changes names {unknown}, which no --variant defines (arms: "
                    f"{sorted(arms)})")
  base = resolved_view(default)
  found, problems = {}, []
  for name, config in arms.items():
    diff = config_lib.differences(base, resolved_view(config))
    keys = tuple(declared.get(name, ()))
    undeclared = [f for f in diff if not any(config_lib.covers(k, f) for k in keys)]
    unchanged = [k for k in keys if not any(config_lib.covers(k, f) for f in diff)]
    if undeclared or unchanged:
      shown = "; ".join(f"{f}: {diff[f][0]!r} -> {diff[f][1]!r}" for f in undeclared)
      problems.append(
          f"arm {name!r}" + (f" changes undeclared fields ({shown})" if undeclared else "")
          + (" and" if undeclared and unchanged else "")
          + (f" declares fields it does not change {unchanged}" if unchanged else ""))
    found[name] = diff
  if problems:
    raise ArmsError("the arms of this table differ from the default in more or less than they "
                    "declare: " + "; ".join(problems) + ". Declare what an arm changes with "
                    "--changes NAME=FIELD[,FIELD...] (a run's phases and steps are the field "
                    f"{PHASES_KEY!r}), or change the arm so it differs in one thing")
  return found


def describe(changes: Mapping[str, Mapping[str, tuple[Any, Any]]],
             shared: Mapping[str, Sequence[str]] | None = None) -> list[str]:
  """Markdown lines: what each arm changes, with the default's and the arm's values, and which
  phases it shares with the default arm (`shared_phases`)."""
  lines = []
  for name, diff in changes.items():
    shown = "; ".join(f"`{f}` {a!r} -> {b!r}" for f, (a, b) in diff.items()) or "nothing"
    phases = (shared or {}).get(name)
    if phases:
      shown += ("; reuses the default arm's trained " + ", ".join(f"`{p}`" for p in phases)
                + (" phase" if len(phases) == 1 else " phases") + " of each seed")
    lines.append(f"- `{name}`: {shown}")
  return lines
