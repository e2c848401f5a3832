"""Gradient reversal: identity forward, -lam * g backward, no gradient to lam, DANN schedules."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax.layers.grl import GradientReversal, dann_lambda, dann_lr_factor, reverse_gradient


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32])
def test_forward_is_bit_exact_identity(dtype):
  x = (jax.random.normal(jax.random.key(0), (3, 5)) * 100).astype(dtype)
  y = jax.jit(reverse_gradient)(x, 0.7)
  assert y.dtype == x.dtype
  np.testing.assert_array_equal(np.asarray(y).view(np.uint8), np.asarray(x).view(np.uint8))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_backward_is_minus_lam_times_g_and_lam_gets_zero(dtype):
  x = jax.random.normal(jax.random.key(1), (4, 3)).astype(dtype)
  g = jax.random.normal(jax.random.key(2), (4, 3)).astype(dtype)
  lam = jnp.float32(0.37)
  _, vjp = jax.vjp(reverse_gradient, x, lam)
  dx, dlam = vjp(g)
  assert dx.dtype == dtype
  expected = (-0.37 * g.astype(jnp.float32)).astype(dtype)
  np.testing.assert_array_equal(np.asarray(dx, np.float32), np.asarray(expected, np.float32))
  assert float(dlam) == 0.0
  # And through jax.grad of a scalar loss that also depends on lam only via the GRL.
  grad_lam = jax.grad(lambda l: jnp.sum(reverse_gradient(x.astype(jnp.float32), l) ** 2))(lam)
  assert float(grad_lam) == 0.0


def test_traced_lam_does_not_retrace():
  traces = []

  @jax.jit
  def grad_x(x, lam):
    traces.append(1)
    return jax.grad(lambda v: jnp.sum(reverse_gradient(v, lam) * 2.0))(x)

  x = jnp.ones((2, 2))
  for lam in (0.0, 0.5, dann_lambda(0.3)):
    np.testing.assert_allclose(grad_x(x, jnp.float32(lam)), -2.0 * float(lam) * np.ones((2, 2)),
                               rtol=1e-6)
  assert len(traces) == 1


def test_linen_wrapper():
  module = GradientReversal(lam=2.0)
  x = jnp.arange(3.0)
  grad = jax.grad(lambda v: jnp.sum(module.apply({}, v)))(x)
  np.testing.assert_array_equal(grad, -2.0 * np.ones(3))
  grad = jax.grad(lambda v: jnp.sum(module.apply({}, v, 0.5)))(x)
  np.testing.assert_array_equal(grad, -0.5 * np.ones(3))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_dann_lambda_values(p):
  hand = {0.0: 0.0, 0.1: 2 / (1 + math.exp(-1)) - 1, 0.25: 2 / (1 + math.exp(-2.5)) - 1,
          0.5: 2 / (1 + math.exp(-5)) - 1, 1.0: 2 / (1 + math.exp(-10)) - 1}[p]
  np.testing.assert_allclose(float(dann_lambda(p)), hand, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(float(jax.jit(dann_lambda)(p)), hand, rtol=1e-6, atol=1e-7)


def test_dann_lambda_known_numbers_and_lr_factor():
  np.testing.assert_allclose(float(dann_lambda(0.1)), 0.46211716, rtol=1e-6)
  np.testing.assert_allclose(float(dann_lambda(1.0)), 0.99990920, rtol=1e-6)
  np.testing.assert_allclose(float(dann_lr_factor(0.0)), 1.0)
  np.testing.assert_allclose(float(dann_lr_factor(1.0)), 11.0 ** -0.75, rtol=1e-6)
  np.testing.assert_allclose(float(dann_lr_factor(0.5)), 6.0 ** -0.75, rtol=1e-6)


def test_one_dann_sgd_step_matches_hand_computation():
  rng = np.random.default_rng(0)
  n, d, h, k = 5, 4, 3, 2
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n, k)).astype(np.float32)
  dom = rng.normal(size=(n, 1)).astype(np.float32)
  params = {"w_f": rng.normal(size=(d, h)).astype(np.float32),
            "w_y": rng.normal(size=(h, k)).astype(np.float32),
            "w_d": rng.normal(size=(h, 1)).astype(np.float32)}
  lam, lr = 0.6, 0.1

  def loss(p, lam):
    f = x @ p["w_f"]
    label_loss = 0.5 * jnp.sum((f @ p["w_y"] - y) ** 2)
    domain_loss = 0.5 * jnp.sum((reverse_gradient(f, lam) @ p["w_d"] - dom) ** 2)
    return label_loss + domain_loss

  grads = jax.grad(loss)(params, jnp.float32(lam))
  new = jax.tree.map(lambda w, g: w - lr * g, params, grads)

  # By hand: squared-error gradients, the domain part negated and scaled by lam on w_f only.
  f = x @ params["w_f"]
  r_y = f @ params["w_y"] - y
  r_d = f @ params["w_d"] - dom
  g_wy = f.T @ r_y
  g_wd = f.T @ r_d
  g_wf = x.T @ (r_y @ params["w_y"].T) - lam * x.T @ (r_d @ params["w_d"].T)
  np.testing.assert_allclose(new["w_y"], params["w_y"] - lr * g_wy, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new["w_d"], params["w_d"] - lr * g_wd, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new["w_f"], params["w_f"] - lr * g_wf, rtol=1e-5, atol=1e-5)
  # Without reversal the extractor step differs (the test would catch a missing GRL).
  assert not np.allclose(g_wf, x.T @ (r_y @ params["w_y"].T) + x.T @ (r_d @ params["w_d"].T),
                         atol=1e-3)
