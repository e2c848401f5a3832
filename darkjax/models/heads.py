"""Classifier heads shared by the zoo's clip classifiers (C3D, Hara 3D-ResNet, Small3DCNN).

Both helpers are plain functions, not modules: called from inside a model's `@nn.compact` method,
the layers they create become children of that model under the given `name`, so the parameter
tree (`fc`, `fc8`, `head`, ...) is exactly the one the converters and pinned counts expect.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from darkjax.layers import precision


def global_average_pool(x: jax.Array, dtype: Any = None) -> jax.Array:
  """Mean over T, H and W of an NDHWC activation, computed in `dtype` (None: `x`'s own)."""
  if x.ndim != 5:
    raise ValueError(f"global_average_pool: expected (B, T, H, W, C) activations, got shape "
                     f"{x.shape}")
  return jnp.mean(x if dtype is None else x.astype(dtype), axis=(1, 2, 3))


def classifier_head(features: jax.Array, out: dict[str, jax.Array], num_classes: int, *,
                    name: str, dtype: Any, train: bool = False,
                    dropout_rate: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Records `out["features"]`, then dropout and the Dense layer `name` -> float32 logits.

  Returns `(logits, out)`, or `(features, out)` when `num_classes` is 0 (feature extractor: no
  layer is created). Dropout at rate 0 (or in eval mode) is the identity and draws no rng.
  """
  out["features"] = features
  if not num_classes:
    return features, out
  features = nn.Dropout(dropout_rate, deterministic=not train)(features)
  logits = precision.Dense(num_classes, dtype=dtype, name=name)(features)
  return logits.astype(jnp.float32), out
