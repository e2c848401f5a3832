"""Fourier Enhancement block: real output of the input's shape, the documented reductions with a
zero spectrum MLP, and agreement with Sec. III-E / Eq. (3)-(4) transcribed in numpy (the full 2D
FFT, MLP, residual, LayerNorm, inverse FFT)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from darkjax.layers import conv, fourier
from darkjax.layers.fourier import FourierEnhancement


def _init(module, x):
  return jax.jit(module.init)(jax.random.key(0), x)   # one compile, not one per operation


def _layer_norm(x, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps)


@pytest.mark.parametrize("shape", [(2, 7, 10), (3, 6, 9), (1, 1, 4)])
def test_output_is_real_with_the_input_shape(shape):
  x = jax.random.normal(jax.random.key(1), shape)
  module = FourierEnhancement()
  variables = _init(module, x)
  # A non-zero MLP (its last layer starts at zero): the spectrum really changes.
  variables = jax.tree.map(lambda v: v + 0.1, variables)
  y = module.apply(variables, x)
  assert y.shape == x.shape
  assert y.dtype == x.dtype == jnp.float32
  assert not jnp.iscomplexobj(y)
  assert np.all(np.isfinite(np.asarray(y)))


def test_zero_mlp_without_layer_norm_is_the_identity():
  x = jax.random.normal(jax.random.key(2), (2, 5, 12))
  module = FourierEnhancement(layer_norm="none")
  variables = _init(module, x)
  # The default init already has a zero output layer; make the whole MLP zero to be explicit.
  zeroed = {"params": {"spectrum_mlp": jax.tree.map(jnp.zeros_like,
                                                    variables["params"]["spectrum_mlp"])}}
  np.testing.assert_allclose(module.apply(zeroed, x), x, atol=1e-5)
  # ... and so does the initial state (zero-initialised last Dense).
  np.testing.assert_allclose(module.apply(variables, x), x, atol=1e-5)


def test_zero_mlp_with_layer_norm_after_the_inverse_is_layer_norm_of_the_input():
  x = 3.0 * jax.random.normal(jax.random.key(3), (2, 6, 8)) + 1.0
  module = FourierEnhancement(layer_norm="tokens")
  variables = _init(module, x)
  variables["params"]["spectrum_mlp"] = jax.tree.map(jnp.zeros_like,
                                                     variables["params"]["spectrum_mlp"])
  np.testing.assert_allclose(module.apply(variables, x), _layer_norm(np.asarray(x)), atol=1e-4)


def _mlp(p, features):
  h = features @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
  return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def paper_foe(fe, p, layer_norm="spectrum"):
  """Sec. III-E: "we first execute a 2D fast Fourier transform (FFT) along the sequence S and
  embedding E dimensions" (Eq. 3: Y = F(FE)); "we feed Y to an MLP and then apply a residual
  connection and Layer Normalization (LN). Finally, we utilize the inverse Fast Fourier Transform
  (FFT) to revert the learnable modulated spectrum Y to the FE in the spatial domain" (Eq. 4:
  FE = F^-1(Y)). Y is complex; it reaches the MLP as real features, [Re, Im] of the embedding
  frequencies 0..E/2 (a real FE's spectrum is Hermitian: the other half holds the conjugates),
  and the modulated half is extended Hermitian again before the inverse transform."""
  seq, width = fe.shape[-2:]
  y = np.fft.fft2(fe, axes=(-2, -1), norm="ortho")                               # Eq. (3)
  freqs = width // 2 + 1
  features = np.concatenate([y[..., :freqs].real, y[..., :freqs].imag], -1)
  features = features + _mlp(p["spectrum_mlp"], features)                       # MLP + residual
  if layer_norm == "spectrum":                                                  # LN
    features = features - features.mean(-1, keepdims=True)
    features = features / np.sqrt((features ** 2).mean(-1, keepdims=True) + 1e-6)
    features = features * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
  half = features[..., :freqs] + 1j * features[..., freqs:]
  full = np.zeros(fe.shape, complex)
  full[..., :freqs] = half
  for e in range(freqs, width):          # Y[s, e] = conj(Y[-s, E - e])
    full[..., :, e] = np.conj(half[..., (-np.arange(seq)) % seq, width - e])
  out = np.fft.ifft2(full, axes=(-2, -1), norm="ortho").real                     # Eq. (4)
  if layer_norm == "tokens":
    out = _layer_norm(out) * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
  return out


@pytest.mark.parametrize("width", [10, 9])
@pytest.mark.parametrize("layer_norm", ["spectrum", "tokens"])
def test_matches_the_papers_fft_mlp_residual_layer_norm_inverse_fft(width, layer_norm):
  seq, hidden = 6, 7
  x = np.asarray(jax.random.normal(jax.random.key(4), (2, seq, width)))
  module = FourierEnhancement(hidden_dim=hidden, layer_norm=layer_norm)
  variables = _init(module, jnp.asarray(x))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape) * 0.3, v.dtype),
                           variables)
  p = jax.tree.map(np.asarray, variables["params"])
  np.testing.assert_allclose(module.apply(variables, jnp.asarray(x)), paper_foe(x, p, layer_norm),
                             atol=1e-4, rtol=1e-4)
  if layer_norm == "spectrum":   # the paper's order is the default; LN's size is the spectrum's
    assert FourierEnhancement().layer_norm == "spectrum"
    assert p["LayerNorm_0"]["scale"].shape == (2 * (width // 2 + 1),)
    # A zero MLP leaves the LayerNorm of the spectrum, which is not the identity.
    zeroed = jax.tree.map(np.zeros_like, p["spectrum_mlp"])
    np.testing.assert_allclose(
        module.apply({"params": {**variables["params"], "spectrum_mlp": zeroed}}, jnp.asarray(x)),
        paper_foe(x, {**p, "spectrum_mlp": zeroed}), atol=1e-4)
    assert not np.allclose(paper_foe(x, {**p, "spectrum_mlp": zeroed}), x, atol=1e-2)


def test_rejects_an_unknown_layer_norm_place():
  with pytest.raises(ValueError, match="layer_norm='after'"):
    _init(FourierEnhancement(layer_norm="after"), jnp.zeros((1, 3, 4)))


def test_gradients_reach_the_spectrum_mlp():
  x = jax.random.normal(jax.random.key(5), (2, 4, 8))
  module = FourierEnhancement()
  variables = _init(module, x)
  grads = jax.jit(jax.grad(lambda v: jnp.sum(module.apply(v, x) * jnp.arange(8.0))))(variables)
  last = grads["params"]["spectrum_mlp"]["Dense_1"]["kernel"]
  assert float(jnp.abs(last).sum()) > 0  # the zero-initialised layer learns


def test_rejects_a_vector():
  with pytest.raises(ValueError, match=r"\(\.\.\., S, E\)"):
    _init(FourierEnhancement(), jnp.zeros((5,)))


@pytest.mark.parametrize("shape", [(2, 7, 10), (3, 6, 9), (1, 1, 4), (2, 5, 32)])
def test_export_form_dft_matches_the_fft(shape):
  """Inside export_lowering() both transforms are DFT matrix products: the same spectrum, the same
  inverse of any (also non-Hermitian) half spectrum, imaginary DC / Nyquist parts dropped, and
  the same block output."""
  x = jax.random.normal(jax.random.key(4), shape)
  spectrum = jax.random.normal(jax.random.key(5), fourier.spectrum_features(x).shape)
  module = FourierEnhancement()
  variables = jax.tree.map(lambda v: v + 0.1, _init(module, x))

  def transforms(x, spectrum, variables):
    return (fourier.spectrum_features(x), fourier.from_spectrum_features(spectrum, *shape[-2:]),
            module.apply(variables, x))
  expected = jax.jit(transforms)(x, spectrum, variables)
  with conv.export_lowering(), conv.record_lowerings() as chosen:
    actual = jax.jit(lambda *args: transforms(*args))(x, spectrum, variables)  # a fresh trace
  assert set(chosen) == {"fft2:dft"}
  for a, b in zip(actual, expected):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(jnp.abs(b).max())))
