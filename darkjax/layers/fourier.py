"""Fourier Enhancement (FoE) block of LIFT-Net (Susladkar et al., "LIFT-Net: Dual Stream Fourier
Attention for Light Invariant Action Recognition").

For fused tokens FE of shape (B, S, E) (S tokens, E channels, real), Sec. III-E ("we first
execute a 2D fast Fourier transform (FFT) along the sequence S and embedding E dimensions ... we
feed Y to an MLP and then apply a residual connection and Layer Normalization (LN). Finally, we
utilize the inverse Fast Fourier Transform (FFT) to revert the learnable modulated spectrum Y"):

  Z   = rfft2(FE) over (S, E), orthonormal scaling      (B, S, E // 2 + 1) complex     Eq. (3)
  P   = [Re Z, Im Z] concatenated on the last axis       (B, S, 2 (E // 2 + 1)) real
  P'  = LN(P + MLP(P))   MLP = Dense(hidden) -> GELU -> Dense(2 (E // 2 + 1)), LN over the last
                         axis, both per sequence frequency
  out = irfft2(P'[:F] + i P'[F:], s=(S, E))              back in the real domain       Eq. (4)

How real and imaginary parts are handled: the spectrum is turned into real features by stacking the
real and imaginary parts of every embedding frequency, so the MLP mixes all embedding frequencies
(and both parts) of one sequence frequency, like a learned global filter, and the LayerNorm is
defined on those real features; the output is read back as (real, imaginary). A real input's 2D
spectrum is Hermitian, so its half (`rfft2`) holds all of it; `irfft2` makes the output real by
construction (it keeps the Hermitian part: imaginary parts of the DC / Nyquist embedding columns are
ignored), so no `.real` projection is needed and the output has exactly the input shape. The FFT's
scaling and the [Re, Im] layout are our choices (the paper states neither).

`layer_norm` places the LayerNorm: "spectrum" (the paper's order, above), "tokens" (after the
inverse transform, over E: out = LN(FE + irfft2(MLP(rfft2(FE)))), the layout of checkpoints
written before the paper's order was followed; its LayerNorm has E parameters instead of
2 (E // 2 + 1)) or "none". Reductions (tested):

  MLP == 0, layer_norm="none"     ->  out = FE exactly (up to float rounding of the FFT pair)
  MLP == 0, layer_norm="tokens"   ->  out = LN(FE)
  MLP == 0, layer_norm="spectrum" ->  out = irfft2(LN(rfft2(FE)))

The MLP's last Dense starts at zero, so at initialisation the block is the MLP == 0 case. FFTs run
in float32 whatever the compute dtype (XLA has no half-precision FFT). Inside
`darkjax.layers.conv.export_lowering()` (ONNX export) both transforms are DFTs by matrix products
with float32 cos / sin matrices (same values to float rounding; tested).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darkjax.layers import conv2d, precision


def _dft_matrices(n: int, freqs: int) -> tuple[np.ndarray, np.ndarray]:
  """cos and sin of 2 pi j k / n, (n, freqs), computed in float64."""
  angle = 2 * np.pi * np.outer(np.arange(n), np.arange(freqs)) / n
  return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def _matmul(a: jax.Array, m: np.ndarray) -> jax.Array:
  """a (..., n) @ m (n, k) at full float32 precision."""
  return jnp.matmul(a, jnp.asarray(m), precision=jax.lax.Precision.HIGHEST)


def _over_tokens(m: np.ndarray, a: jax.Array) -> jax.Array:
  """m (S, S) applied over the token axis of a (..., S, F)."""
  return jnp.swapaxes(_matmul(jnp.swapaxes(a, -1, -2), m.T), -1, -2)


def _dft_spectrum(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(Re, Im) of rfft2(x, norm="ortho") over the last two axes by DFT matrix products: the real
  DFT over E, then the complex DFT over S."""
  seq_len, width = x.shape[-2:]
  cos_e, sin_e = _dft_matrices(width, width // 2 + 1)
  cos_s, sin_s = _dft_matrices(seq_len, seq_len)
  real, imag = _matmul(x, cos_e), -_matmul(x, sin_e)
  scale = 1 / np.sqrt(seq_len * width)
  return ((_over_tokens(cos_s, real) + _over_tokens(sin_s, imag)) * scale,
          (_over_tokens(cos_s, imag) - _over_tokens(sin_s, real)) * scale)


def _inverse_dft(real: jax.Array, imag: jax.Array, width: int) -> jax.Array:
  """irfft2 of the half spectrum (Re, Im) (..., S, E // 2 + 1) with s=(S, E), norm="ortho": the
  inverse complex DFT over S, then the real inverse over E (every frequency but DC and Nyquist
  counted twice; their imaginary parts drop out, as in irfft)."""
  seq_len, freqs = real.shape[-2:]
  cos_s, sin_s = _dft_matrices(seq_len, seq_len)
  cos_e, sin_e = _dft_matrices(width, freqs)
  weights = np.full(freqs, 2.0, np.float32)
  weights[0] = 1.0
  if width % 2 == 0:
    weights[-1] = 1.0
  real, imag = (_over_tokens(cos_s, real) - _over_tokens(sin_s, imag),
                _over_tokens(cos_s, imag) + _over_tokens(sin_s, real))
  scale = 1 / np.sqrt(seq_len * width)
  return (_matmul(real, (cos_e * weights).T) - _matmul(imag, (sin_e * weights).T)) * scale

LAYER_NORMS = ("spectrum", "tokens", "none")


def spectrum_features(x: jax.Array) -> jax.Array:
  """Real (..., S, E) -> [Re, Im] of rfft2 over the last two axes: (..., S, 2 (E // 2 + 1)).
  Inside `export_lowering()` by DFT matrix products (jax2onnx converts no 2D FFT)."""
  x = x.astype(jnp.float32)
  if conv2d.export_lowering_forced():
    conv2d.note_lowering("fft2", "dft")
    return jnp.concatenate(_dft_spectrum(x), axis=-1)
  spectrum = jnp.fft.rfft2(x, axes=(-2, -1), norm="ortho")
  return jnp.concatenate([spectrum.real, spectrum.imag], axis=-1)


def from_spectrum_features(features: jax.Array, seq_len: int, width: int) -> jax.Array:
  """Inverse of `spectrum_features`: (..., S, 2 F) -> real (..., S, E) through irfft2."""
  freqs = features.shape[-1] // 2
  if freqs != width // 2 + 1:
    raise ValueError(f"from_spectrum_features: {features.shape[-1]} spectrum features do not "
                     f"match embedding width {width} (expected {2 * (width // 2 + 1)})")
  real, imag = features[..., :freqs].astype(jnp.float32), features[..., freqs:].astype(jnp.float32)
  if conv2d.export_lowering_forced():
    conv2d.note_lowering("fft2", "dft")
    return _inverse_dft(real, imag, width)
  spectrum = jax.lax.complex(real, imag)
  return jnp.fft.irfft2(spectrum, s=(seq_len, width), axes=(-2, -1), norm="ortho")


class SpectrumMLP(nn.Module):
  """Dense -> GELU -> Dense on stacked (real, imaginary) spectrum features; zero-initialised out."""
  hidden_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    width = features.shape[-1]
    y = precision.Dense(self.hidden_dim, dtype=self.dtype, name="Dense_0")(
        features.astype(self.dtype))
    y = nn.gelu(y, approximate=False)
    y = precision.Dense(width, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                        name="Dense_1")(y)
    return y.astype(jnp.float32)


class FourierEnhancement(nn.Module):
  """FoE block (see the module docstring): (B, S, E) real -> (B, S, E) real.

  Attributes:
    hidden_dim: width of the spectrum MLP's hidden layer (0: the embedding width E).
    layer_norm: where the LayerNorm is: "spectrum" (the paper's: on the modulated spectrum, before
      the inverse FFT), "tokens" (after it) or "none" (analysis and tests).
    dtype: compute dtype of the MLP; FFTs and the LayerNorm are float32.
  """
  hidden_dim: int = 0
  layer_norm: str = "spectrum"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim < 2:
      raise ValueError(f"FourierEnhancement expects (..., S, E) tokens; got shape {x.shape}")
    if self.layer_norm not in LAYER_NORMS:
      raise ValueError(f"FourierEnhancement: layer_norm={self.layer_norm!r} unknown; valid: "
                       f"{LAYER_NORMS}")
    seq_len, width = x.shape[-2:]
    norm = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name="LayerNorm_0")
    features = spectrum_features(x)
    features = features + SpectrumMLP(self.hidden_dim or width, self.dtype, name="spectrum_mlp")(
        features)
    if self.layer_norm == "spectrum":
      features = norm(features)
    y = from_spectrum_features(features, seq_len, width)
    if self.layer_norm == "tokens":
      y = norm(y)
    return y.astype(x.dtype)
