"""The parity-test helper (tests/torch_parity.py): its error measure, its failure message, and a
float64 reference that leaves the float32 weights converted before it untouched."""

from __future__ import annotations

import numpy as np
import pytest

import torch_parity


def test_error_is_relative_to_the_reference_scale():
  desired = np.array([100.0, 0.001, -50.0])
  actual = desired + np.array([0.0, 0.01, -0.02])  # 10x off for the small element, 2e-4 of 100
  assert torch_parity.assert_close(actual, desired, 3e-4, "test") == pytest.approx(2e-4)
  with pytest.raises(AssertionError, match=r"stem: .* is 0.0002 of .*tolerance 0.0001 \(reason\)"):
    torch_parity.assert_close(actual, desired, 1e-4, "reason", "stem")
  with pytest.raises(ValueError, match="reason for the tolerance"):
    torch_parity.assert_close(actual, desired, 1e-3, " ")
  with pytest.raises(AssertionError, match=r"shapes differ: \(3,\) vs reference \(1, 3\)"):
    torch_parity.assert_close(actual, desired[None], 1e-3, "test")
  assert torch_parity.assert_close(np.zeros(2), np.zeros(2), 0.0, "exact") == 0.0
  with pytest.raises(AssertionError):
    torch_parity.assert_close(np.ones(2), np.zeros(2), 1.0, "nothing is close to 0 but 0")


def test_reference_and_inputs_are_float64():
  torch = torch_parity.require_torch()
  layer = torch.nn.Linear(3, 2)
  state = {k: v.clone() for k, v in layer.state_dict().items()}
  reference = torch_parity.reference(layer)
  x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
  inputs = torch_parity.tensor(x.T.T[:, ::-1])  # a strided view
  assert inputs.dtype == torch.float64 and inputs.is_contiguous()
  np.testing.assert_array_equal(torch_parity.numpy(inputs), x[:, ::-1])
  assert reference.weight.dtype == torch.float64 and state["weight"].dtype == torch.float32
  np.testing.assert_array_equal(reference.weight.detach().numpy(), state["weight"].numpy())
  with torch_parity.onednn_disabled():
    assert not torch.backends.mkldnn.enabled
  assert torch.backends.mkldnn.enabled
