"""Reusable layers: 3D convolution with per-backend lowering, gradient reversal, curves, Fourier blocks."""
