"""Shared helper for tests that build run configs (imported by test modules; not a test file)."""

from __future__ import annotations

import glob
import importlib
import os
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet(config: Any, **overrides: Any) -> Any:
  """`config` for a test run: no progress bar, no prefetch thread, then `overrides` applied as
  dotted keys ({"optimizer.lr": 0.0}); returns the same (locked) config."""
  config.lock()   # as darkjax.main does: a mistyped override fails instead of adding a key
  config.progress_bar = False
  config.input.prefetch = 0
  config.update_from_flattened_dict(overrides)
  return config


def config_files() -> list[str]:
  """Every paper x dataset config file in configs/ (common.py and the `*_base.py` builders are
  shared pieces, not configs)."""
  return sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                if os.path.basename(p) not in ("__init__.py", "common.py")
                and not p.endswith("_base.py"))


def config_module(path: str) -> Any:
  return importlib.import_module(f"configs.{os.path.basename(path)[:-3]}")
