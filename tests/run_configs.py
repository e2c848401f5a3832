"""Shared helper for tests that build run configs (imported by test modules; not a test file)."""

from __future__ import annotations

from typing import Any


def quiet(config: Any, **overrides: Any) -> Any:
  """`config` for a test run: no progress bar, no prefetch thread, then `overrides` applied as
  dotted keys ({"optimizer.lr": 0.0}); returns the same (locked) config."""
  config.lock()   # as darkjax.main does: a mistyped override fails instead of adding a key
  config.progress_bar = False
  config.input.prefetch = 0
  config.update_from_flattened_dict(overrides)
  return config
