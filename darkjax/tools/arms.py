"""The arms of an experiment table change only what they declare.

An ablation compares a config with arms that each change one thing. `python -m
darkjax.tools.experiment` builds every arm's resolved config before it trains anything and compares
it with the default arm's, field by field, together with the phases the run trains and their step
counts (`phases`: "teacher:300,student:400"), so an arm that drops a teacher phase or changes an
optimizer shows it. Each arm declares the fields it changes (`--changes no_kd=lift.kd`; a declared
`a.b` covers `a.b.*`): a difference it does not declare, or a declared field that does not change,
stops the table naming both lists, so a table never compares arms that differ in more than they
say. The table states each arm's changes with their values.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import ml_collections as mlc

from darkjax import task as task_lib

PHASES_KEY = "phases"


class ArmsError(ValueError):
  """Two arms of a table differ in more (or less) than the arm declares."""


def flat(config: mlc.ConfigDict) -> dict[str, Any]:
  """{dotted field: value} of every leaf of `config`."""
  out: dict[str, Any] = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, mlc.ConfigDict):
        walk(value, f"{prefix}{key}.")
      else:
        out[f"{prefix}{key}"] = value
  walk(config, "")
  return out


def resolved_view(config: mlc.ConfigDict) -> dict[str, Any]:
  """The config's fields plus `phases`: the phases a run trains with their step counts."""
  view = flat(config)
  plan = task_lib.phase_plan(config)
  view[PHASES_KEY] = ",".join(f"{p.name}:{p.config(config).total_steps}" for p in plan)
  return view


def differences(default: Mapping[str, Any], arm: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  """{field: (default's value, arm's value)} where they differ ("<absent>" for a missing field)."""
  absent = "<absent>"
  return {key: (default.get(key, absent), arm.get(key, absent))
          for key in sorted(default.keys() | arm.keys())
          if default.get(key, absent) != arm.get(key, absent)}


def covers(declared: str, field: str) -> bool:
  return field == declared or field.startswith(declared + ".")


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
    diff = differences(base, resolved_view(config))
    keys = tuple(declared.get(name, ()))
    undeclared = [f for f in diff if not any(covers(k, f) for k in keys)]
    unchanged = [k for k in keys if not any(covers(k, f) for f in diff)]
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


def describe(changes: Mapping[str, Mapping[str, tuple[Any, Any]]]) -> list[str]:
  """Markdown lines: what each arm changes, with the default's and the arm's values."""
  lines = []
  for name, diff in changes.items():
    shown = "; ".join(f"`{f}` {a!r} -> {b!r}" for f, (a, b) in diff.items()) or "nothing"
    lines.append(f"- `{name}`: {shown}")
  return lines
