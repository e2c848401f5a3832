"""Every shell command in README.md and docs/ (fenced `bash` blocks, extracted by
tests/doc_commands.py) names an existing module, config file, config args and config flags, and
only flags its module defines: parsed here; tests/test_docs_run.py runs those on the embedded data."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

from doc_commands import ALL, REPO


def test_the_docs_have_commands():
  assert len(ALL) >= 10
  assert any(cmd[0] == "darkjax.main" for _, cmd in ALL)


def _source_of(module: str) -> str:
  spec = importlib.util.find_spec(module)
  assert spec is not None and spec.origin, f"no module {module}"
  origin = pathlib.Path(spec.origin)
  text = origin.read_text(encoding="utf-8")
  if origin.name == "__init__.py" and (origin.parent / "__main__.py").exists():
    text += (origin.parent / "__main__.py").read_text(encoding="utf-8")
  return text


def _check_config(page: str, value: str, overrides: list[str]) -> None:
  path, _, arg = value.partition(":")
  file = REPO / path
  assert file.exists(), f"{page}: config file {path} does not exist"
  spec = importlib.util.spec_from_file_location(f"doc_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)   # unknown or mistyped args raise here
  for override in overrides:
    key = override.split("=", 1)[0][len("--config."):]
    node = config
    for part in key.split("."):
      assert part in node, f"{page}: --config.{key}: no such config field"
      node = node[part]


@pytest.mark.parametrize("page, cmd", ALL, ids=[f"{p}:{' '.join(c)[:60]}" for p, c in ALL])
def test_command_names_real_modules_configs_and_flags(page, cmd, monkeypatch, tmp_path):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path))
  module, args = cmd[0], cmd[1:]
  if module in ("pytest", "venv", "pip"):
    return
  assert module.startswith("darkjax"), f"{page}: unexpected module {module}"
  source = _source_of(module)
  overrides = [a for a in args if a.startswith("--config.")]
  for i, arg in enumerate(args):
    if not arg.startswith("--"):
      continue
    flag = arg.split("=", 1)[0]
    if flag.startswith("--config."):
      continue
    if flag == "--config":
      value = arg.split("=", 1)[1] if "=" in arg else args[i + 1]
      if value.endswith(".py") or ".py:" in value:
        _check_config(page, value, overrides)
      continue
    # absl flags are defined by name ("config", ...), argparse flags with their dashes.
    name = flag[2:]
    assert (f'"{flag}"' in source or f'"{name}"' in source or f"'{flag}'" in source
            or f'"{name.replace("-", "_")}"' in source), f"{page}: {module} has no flag {flag}"
