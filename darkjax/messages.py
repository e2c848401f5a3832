"""How problems are said to a user, shared by the library and the tools that must start without
jax (darkjax.tools.slurm runs in a login shell): the standard library only, nothing of darkjax."""

from __future__ import annotations


def error_text(error: BaseException) -> str:
  """An error's message as said to a user: a KeyError's own text, not its repr in quotes."""
  return str(error.args[0] if isinstance(error, KeyError) and error.args else error)


def is_port(text: str) -> bool:
  """Whether `text` is a TCP port number a coordinator can listen on: 1 to 65535."""
  return text.isdigit() and 0 < int(text) < 65536
