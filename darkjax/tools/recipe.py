r"""A paper's recipe table: every detail the paper gives, darkjax's value, where it lives, and
MATCH / CHOICE / MISSING.

  python -m darkjax.tools.recipe dtcm        # the Markdown table of docs/papers/dtcm.md

Each paper's base config module holds its rows as `RECIPE` (the machine-readable part). A row is a
dict: `detail`, `paper` (the paper's value: a Python value when the config holds it, else text),
`source` (section / table / equation), `quote` (the paper's words for it, verbatim), `key` (the
dotted config key of the paper's reference config) or `code` (the module / function), `status` and
`note` (the reason of a CHOICE). A row citing several places gives `source` and `quote` as tuples
of the same length (each quote's place). A detail read from a figure that exists only as an image
(ActLumos's README) names the image in `image` and transcribes its words in `drawn` (tuples of the
same length for several images): the words cannot be checked against a text, the image's name can.

For rows with a `key` and status MATCH, the reference config's default must equal `paper`
(tests/test_recipes.py); the darkjax column is read from the config, so the table in the docs
(checked against this output by the same test) cannot drift from the defaults. Every MATCH row
carries a quote or an image, and the test finds each quote in the paper's text (`quote_found`,
../shared/papers beside the repository, when present) and each image's name in it.

`quote_found` compares quote and text after the same normalisation of both (`normalise_text`):
the papers' text is Markdown with LaTeX, so LaTeX symbol commands become their characters
(`\alpha` -> α, `\times` -> ×, `\log` -> log; other commands such as `\left`, and the argument of
`\color`, are dropped), `$`, `{`, `}`, `*` and HTML tags are dropped (`$\alpha = 0.1$` reads
`α = 0.1`, `$N_{AH}$` `N_AH`, `*i.e.*` `i.e.`), curly quotes and dashes become ASCII, case is
folded (table captions are capitals) and all whitespace is dropped (line breaks and the spacing
around LaTeX differ). A hyphen that ends a line is tried both kept and joined. In a quote, " ... "
marks words left out: its parts must appear in that order, each starting at most `ELISION_GAP`
normalised characters after the previous one ends.
"""

from __future__ import annotations

import argparse
import importlib
import re
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
QUOTED = {"dinet": "000_", "dtcm": "001_", "liftnet": "002_", "twostream": "003_",
          "actlumos": "004_"}
STATUSES = ("MATCH", "CHOICE", "MISSING")


# LaTeX commands the papers write for characters a quote writes as they print.
LATEX_SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "lambda": "λ", "tau": "τ", "sigma": "σ",
                 "Omega": "Ω", "omega": "ω", "Delta": "Δ", "times": "×", "cdot": "·", "sum": "∑",
                 "leq": "≤", "geq": "≥", "to": "→", "rightarrow": "→",
                 **{name: name for name in ("log", "exp", "max", "min", "sin", "cos")}}
ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                       "\u2014": "-", "\u2212": "-"})
ELISION = " ... "
ELISION_GAP = 300


def normalise_text(text: str) -> str:
  """`text` as `quote_found` compares it (module docstring): LaTeX symbols as characters, other
  LaTeX commands, `$ { } *` and HTML tags dropped, ASCII quotes and dashes, case folded, no
  whitespace."""
  text = re.sub(r"\\color\{[^{}]*\}", "", text)   # a colour name is not printed
  text = re.sub(r"\\([A-Za-z]+)", lambda m: LATEX_SYMBOLS.get(m.group(1), ""), text)
  text = re.sub(r"<[^<>\n]*>", "", text).translate(ASCII)
  return re.sub(r"[\s${}*]", "", text).casefold()


def paper_texts(raw: str) -> tuple[str, str]:
  """A paper's text normalised twice: a hyphen that ends a line kept, and joined."""
  return tuple(normalise_text(re.sub(r"-[ \t]*\n\s*", joint, raw)) for joint in ("-", ""))


def quote_found(quote: str, texts: Sequence[str]) -> bool:
  """Whether `quote` (its " ... " parts in order) is in one of the normalised `texts`."""
  parts = [normalise_text(part) for part in quote.split(ELISION)]
  for text in texts:
    start = text.find(parts[0])
    while start >= 0:
      end, found = start + len(parts[0]), True
      for part in parts[1:]:
        at = text.find(part, end, end + ELISION_GAP + len(part))
        if at < 0:
          found = False
          break
        end = at + len(part)
      if found:
        return True
      start = text.find(parts[0], start + 1)
  return False


def as_tuple(value: Any) -> tuple:
  """A row field that may hold one value or a tuple of them, as a tuple (empty when unset)."""
  if value in (None, ""):
    return ()
  return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def citations(row: dict[str, Any]) -> list[tuple[str, str | None]]:
  """The row's (place, words) pairs: each source with its quote (None without one), then each
  image (`image NAME`) with its drawn words."""
  sources, quotes = as_tuple(row.get("source")), as_tuple(row.get("quote"))
  images, drawn = as_tuple(row.get("image")), as_tuple(row.get("drawn"))
  if quotes and len(quotes) != len(sources):
    raise ValueError(f"RECIPE row {row['detail']!r}: {len(quotes)} quotes for {len(sources)} "
                     "sources (give one source per quote)")
  if len(drawn) != len(images):
    raise ValueError(f"RECIPE row {row['detail']!r}: `drawn` needs the words of each of its "
                     f"{len(images)} images, has {len(drawn)}")
  pairs = list(zip(sources, quotes or (None,) * len(sources)))
  return pairs + [(f"image {name}", words) for name, words in zip(images, drawn)]


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
    cite = "; ".join(_cell(place) + (f": \"{_cell(words)}\"" if words else "")
                     for place, words in citations(row))
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
