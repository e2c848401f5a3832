"""Shared helper for parity tests against PyTorch (imported by test modules; not a test file).

PyTorch is the reference, so it runs in float64: `reference(module)` and `tensor(array)` give the
float64 module and inputs, and `assert_close` compares darkjax's float32 result (the dtype users
run) with it. torch's float32 CPU convolutions (oneDNN) are not precise enough to be a reference
on every CPU: on an AVX2-only AMD EPYC (Zen 3) the float32 stem-kernel gradient of a train-mode
3D ResNet-18 is 1e-2 (of its largest element) away from torch's float64 one, darkjax's float32
one 5e-6. Where float64 is impossible, run the reference inside `onednn_disabled()` (ATen's own
kernels: 3e-6 in that case).

Parity tests carry the `torch_parity` marker; `.ci/run` runs them again under AVX2-only settings.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import pytest


def require_torch() -> Any:
  """The torch module; skips the calling test when torch is not installed."""
  return pytest.importorskip("torch")


def reference(module: Any) -> Any:
  """`module` in float64 (in place, returned). Convert its float32 state for darkjax before, so
  both sides hold the same weights (float32 -> float64 is exact)."""
  return module.double()


def tensor(array: Any) -> Any:
  """A contiguous float64 torch tensor holding a copy of `array`: an input of the reference."""
  torch = require_torch()
  return torch.from_numpy(np.array(array, dtype=np.float64, order="C"))


def numpy(value: Any) -> np.ndarray:
  """A torch tensor's values as a numpy array (detached from autograd)."""
  return value.detach().numpy()


@contextlib.contextmanager
def onednn_disabled() -> Iterator[None]:
  """For a float32 reference (an op without float64 support): ATen's own CPU kernels, not
  oneDNN's, whose float32 results are the imprecise ones."""
  torch = require_torch()
  # None leaves a flag as it is; flags()' defaults would also switch TF32 on (with a warning)
  with torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None,
                                   fp32_precision=None):
    yield


def relative_error(actual: Any, desired: Any) -> float:
  """max |actual - desired| / max |desired|, in float64."""
  actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
  if actual.shape != desired.shape:
    raise AssertionError(f"shapes differ: {actual.shape} vs reference {desired.shape}")
  scale = float(np.abs(desired).max()) if desired.size else 0.0
  error = float(np.abs(actual - desired).max()) if desired.size else 0.0
  return error / scale if scale else (0.0 if error == 0.0 else float("inf"))


def assert_close(actual: Any, desired: Any, tol: float, why: str, what: str = "") -> float:
  """Asserts max |actual - desired| <= tol * max |desired| and returns that relative error.

  The error is measured against the reference's scale, not element by element: float32 rounding
  errors follow the magnitudes summed, so elements near 0 carry the same absolute error as the
  rest. `why` is the one-line reason for `tol` (what darkjax's float32 computation accumulates);
  it is part of the failure message, with `what` naming the compared quantity.
  """
  if not why.strip():
    raise ValueError("assert_close: give the reason for the tolerance")
  error = relative_error(actual, desired)
  if not error <= tol:
    name = f"{what}: " if what else ""
    raise AssertionError(f"{name}max |actual - reference| is {error:.3g} of max |reference|, "
                         f"tolerance {tol:g} ({why})")
  return error
