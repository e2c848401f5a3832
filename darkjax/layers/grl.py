"""Gradient reversal (Ganin & Lempitsky, DANN) and its annealing schedules.

`reverse_gradient(x, lam)` is the identity in the forward pass and multiplies the incoming gradient
by `-lam` in the backward pass. `lam` is an ordinary (possibly traced) scalar argument, so a schedule
such as `dann_lambda(step / total_steps)` can change it every step without recompiling, and it
receives a zero cotangent: the reversal strength is a hyper-parameter, never learned.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def _reverse_gradient(x: jax.Array, lam: jax.Array) -> jax.Array:
  return x


def _reverse_gradient_fwd(x, lam):
  return x, lam


def _reverse_gradient_bwd(lam, g):
  # The cotangent keeps g's dtype (bf16 activations stay bf16); lam gets an exact zero.
  return (-lam * g).astype(g.dtype), jnp.zeros_like(lam)


_reverse_gradient.defvjp(_reverse_gradient_fwd, _reverse_gradient_bwd)


def reverse_gradient(x: jax.Array, lam: Any = 1.0) -> jax.Array:
  """Identity forward; gradient `-lam * g` backward; no gradient flows into `lam`.

  Args:
    x: array of any shape and dtype (returned unchanged, bit for bit).
    lam: scalar (Python number or 0-d array, may be traced) scaling the reversed gradient.
  """
  lam = jnp.asarray(lam, dtype=jnp.float32)
  if lam.ndim != 0:
    raise ValueError(f"reverse_gradient: lam must be a scalar, got shape {lam.shape}")
  return _reverse_gradient(x, lam)


def dann_lambda(progress: Any, gamma: float = 10.0) -> jax.Array:
  """DANN reversal-strength schedule `2 / (1 + exp(-gamma p)) - 1`, rising from 0 at p=0 towards 1.

  `progress` is training progress in [0, 1] (step / total steps); works on traced values.
  """
  p = jnp.asarray(progress, dtype=jnp.float32)
  return 2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0


def dann_lr_factor(progress: Any, alpha: float = 10.0, beta: float = 0.75) -> jax.Array:
  """DANN learning-rate annealing factor `1 / (1 + alpha p)^beta` (multiplies the base rate)."""
  p = jnp.asarray(progress, dtype=jnp.float32)
  return (1.0 + alpha * p) ** (-beta)


class GradientReversal(nn.Module):
  """Linen wrapper of `reverse_gradient`; `lam` given at call time overrides the attribute."""
  lam: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, lam: Any = None) -> jax.Array:
    return reverse_gradient(x, self.lam if lam is None else lam)
