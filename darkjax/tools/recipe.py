r"""A paper's recipe table: every detail the paper gives, darkjax's value, where it lives, and
MATCH / CHOICE / MISSING.

  python -m darkjax.tools.recipe dtcm        # the Markdown table of docs/papers/dtcm.md

Each paper's base config module holds its rows as `RECIPE` (the machine-readable part). A row is a
dict: `detail`, `paper` (the paper's value: a Python value when the config holds it, else text),
`source` (section / table / equation), `quote` (the paper's words for it, verbatim), `key` (the
dotted config key of the paper's reference config) or `code` (the module / function), `status` and
`note` (the reason of a CHOICE). For rows with a `key` and status MATCH, the reference config's
default must equal `paper` (tests/test_recipes.py); the darkjax column is read from the config, so
the table in the docs (checked against this output by the same test) cannot drift from the
defaults. For the papers in QUOTED, every MATCH row carries a quote, and the test finds each quote
in the paper's text (../shared/papers beside the repository, when present).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

# paper -> (module holding RECIPE, reference config module, docs page)
PAPERS = {
    "dinet": ("configs.dinet_base", "configs.dinet_infar", "docs/papers/dinet.md"),
    "dtcm": ("configs.dtcm_base", "configs.dtcm_arid", "docs/papers/dtcm.md"),
    "liftnet": ("configs.lift_base", "configs.lift_arid", "docs/papers/liftnet.md"),
    "actlumos": ("configs.actlumos_base", "configs.actlumos_arid", "docs/papers/actlumos.md"),
    "twostream": ("configs.twostream_base", "configs.twostream_infar", "docs/papers/twostream.md"),
}
# Papers whose MATCH rows all quote the paper (paper -> its text's file name prefix).
QUOTED = {"dinet": "000_", "twostream": "003_"}
STATUSES = ("MATCH", "CHOICE", "MISSING")


def config_value(config, key: str) -> Any:
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def recipe(paper: str) -> tuple[list[dict[str, Any]], Any]:
  """(rows, the reference config with its defaults)."""
  if paper not in PAPERS:
    raise KeyError(f"no recipe for {paper!r}; papers: {sorted(PAPERS)}")
  module, reference, _ = PAPERS[paper]
  rows = list(importlib.import_module(module).RECIPE)
  config = importlib.import_module(reference).get_config()
  for row in rows:
    if row["status"] not in STATUSES:
      raise ValueError(f"{module}.RECIPE row {row['detail']!r}: status {row['status']!r} not in "
                       f"{STATUSES}")
    if not (row.get("key") or row.get("code")):
      raise ValueError(f"{module}.RECIPE row {row['detail']!r}: needs a config `key` or a `code` "
                       "location")
  return rows, config


def _cell(value: Any) -> str:
  if hasattr(value, "items"):   # a config block: its fields on one line
    return ", ".join(f"{k}={_cell(v)}" for k, v in sorted(value.items()))
  if isinstance(value, float) and value and (abs(value) < 1e-3 or abs(value) >= 1e5):
    return f"{value:g}"
  return str(value).replace("|", "\\|")


def markdown_table(paper: str) -> str:
  rows, config = recipe(paper)
  lines = ["| detail | paper | darkjax | where | status |", "|---|---|---|---|---|"]
  for row in rows:
    ours = _cell(config_value(config, row["key"])) if row.get("key") else row.get("ours", "")
    where = f"`config.{row['key']}`" if row.get("key") else f"`{row['code']}`"
    cite = ": ".join(part for part in (_cell(row.get("source", "")),
                                       f"\"{_cell(row['quote'])}\"" if row.get("quote") else "")
                     if part)
    paper_cell = _cell(row["paper"]) + (f" ({cite})" if cite else "")
    status = row["status"] + (f": {_cell(row['note'])}" if row.get("note") else "")
    lines.append(f"| {_cell(row['detail'])} | {paper_cell} | {_cell(ours)} | {where} | {status} |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("paper", choices=sorted(PAPERS))
  args = parser.parse_args(argv)
  print(markdown_table(args.paper))
  return 0


if __name__ == "__main__":
  sys.exit(main())
