"""The shell commands of README.md's and docs/'s fenced `bash` blocks, for the tests that check
them (imported by test modules; not a test file): tests/test_docs.py parses every `python -m`
command, tests/test_docs_run.py runs those that run on the embedded synthetic data.

A command is one simple shell command of a block (split at `;`, `&&`, `||`, `|`, `&` and line ends;
`\\` continues a line). `NAME=value` prefixes (`JAX_PLATFORMS=cpu python -m ...`) and the keywords
`do`, `then`, `else` are taken off its front, so a command inside a loop or with an environment is
found too. A `$NAME` the page defines is expanded: by an assignment earlier in the block
(`C="--config ..."`), else by the prose between the block and the heading or block before it
(`` `W=runs/lift_readings` `` or `` `common` = `--config=...` ``). Other variables (`$DARKJAX_DATA`,
a loop's `$i`) stay as written.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
FENCE = re.compile(r"```bash\n(.*?)```", re.S)
ANY_FENCE = re.compile(r"```.*?```", re.S)
HEADING = re.compile(r"^#{1,6} +(.*)$", re.M)
OPERATORS = set(";&|")
KEYWORDS = ("do", "then", "else")
ASSIGNMENT = re.compile(r"([A-Za-z_]\w*)=(.*)", re.S)
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# In prose: `NAME=value` or `NAME` = `value` (the value may wrap onto the next line).
PROSE_DEFINITION = re.compile(r"`([A-Za-z_]\w*)=([^`]+)`|`([A-Za-z_]\w*)`\s*=\s*`([^`]+)`")


@dataclasses.dataclass(frozen=True)
class Command:
  """One simple command of a page's bash block."""
  page: str                    # path from the repository root: "docs/papers/dtcm.md"
  heading: str                 # the nearest heading above the block ("Export")
  block: int                   # the block's index on its page, from 0
  words: tuple[str, ...]       # the command's words, defined variables expanded
  env: tuple[tuple[str, str], ...] = ()   # its `NAME=value` prefixes

  @property
  def python_module(self) -> list[str] | None:
    """`[module, *args]` of a `python -m module args` command, else None."""
    if len(self.words) >= 3 and self.words[0] in ("python", "python3") and self.words[1] == "-m":
      return list(self.words[2:])
    return None


def _split(line: str) -> list[list[str]]:
  """The word lists of a line's simple commands, comments dropped."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
  lexer.whitespace_split, lexer.commenters = True, "#"
  found, words = [], []
  for token in list(lexer) + [";"]:
    if token and set(token) <= OPERATORS:
      if words:
        found.append(words)
      words = []
    else:
      words.append(token)
  return found


def _expand(words: list[str], defined: dict[str, str]) -> list[str]:
  """`$NAME` / `${NAME}` of `defined` expanded; a word that is only the variable splits into the
  value's words, as the shell splits an unquoted one."""
  out = []
  for word in words:
    whole = VARIABLE.fullmatch(word)
    if whole and (whole.group(1) or whole.group(2)) in defined:
      out.extend(shlex.split(defined[whole.group(1) or whole.group(2)]))
      continue
    out.append(VARIABLE.sub(lambda m: defined.get(m.group(1) or m.group(2), m.group(0)), word))
  return out


def _prose_definitions(prose: str) -> dict[str, str]:
  found = {}
  for match in PROSE_DEFINITION.finditer(prose):
    name, value = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
    found[name] = " ".join(value.split())
  return found


def shell_commands(path: pathlib.Path) -> list[Command]:
  """Every simple command of the page's bash blocks, in page order."""
  text = path.read_text(encoding="utf-8")
  page = path.relative_to(REPO).as_posix()
  # Headings and prose are read with every fenced block blanked out (a `# comment` is no heading).
  prose_text = ANY_FENCE.sub(lambda m: " " * len(m.group(0)), text)
  found: list[Command] = []
  previous_end = 0
  for index, match in enumerate(FENCE.finditer(text)):
    above = prose_text[:match.start()]
    headings = list(HEADING.finditer(above))
    heading = headings[-1].group(1).strip() if headings else ""
    prose_start = max(previous_end, headings[-1].end() if headings else 0)
    prose = _prose_definitions(prose_text[prose_start:match.start()])
    previous_end = match.end()
    defined: dict[str, str] = {}
    for line in match.group(1).replace("\\\n", " ").splitlines():
      for words in _split(line):
        env = []
        while len(words) > 1 and ASSIGNMENT.fullmatch(words[0]):
          env.append(ASSIGNMENT.fullmatch(words[0]).groups())
          words = words[1:]
        if len(words) == 1 and ASSIGNMENT.fullmatch(words[0]):   # `C="..."`: a block variable
          name, value = ASSIGNMENT.fullmatch(words[0]).groups()
          defined[name] = value
          continue
        while words and words[0] in KEYWORDS:
          words = words[1:]
        if words:
          words = _expand(words, {**prose, **defined})
          found.append(Command(page, heading, index, tuple(words), tuple(env)))
  return found


def commands(path: pathlib.Path) -> list[list[str]]:
  """The `python -m ...` commands of a page's bash blocks, as `[module, *args]` lists."""
  return [c.python_module for c in shell_commands(path) if c.python_module is not None]


SHELL = [c for path in DOCS for c in shell_commands(path)]
# (page, [module, *args]) of every `python -m` command of the pages.
ALL = [(c.page, c.python_module) for c in SHELL if c.python_module is not None]
