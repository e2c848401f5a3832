"""3D-DiNet (Ulhaq): a zoo backbone with an action head and, behind a gradient-reversal layer, a
domain classifier, trained DANN-style so the backbone's features become domain invariant.

    clips -> backbone (any zoo model built with num_classes=0) -> features -> dropout -> action head
                                                                  features -> GRL(lam) -> domain MLP

The domain classifier is three dense layers: `domain_hidden` (two sizes) with ReLU and dropout, then
one logit (binary cross-entropy in darkjax/trainers/dinet.py). The GRL is the identity forward and
multiplies gradients by `-grl_lambda` on their way back into the backbone, so one backward pass
trains the domain head to tell the domains apart and the backbone to confuse it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax import models
from darkjax.layers import remat as remat_lib
from darkjax.layers.grl import reverse_gradient
from darkjax.layers import precision


class DomainClassifier(nn.Module):
  """Dense-ReLU-dropout per hidden size, then a single domain logit (float32)."""
  hidden: Sequence[int] = (1024, 1024)
  dropout_rate: float = 0.5
  dtype: Any = None

  @nn.compact
  def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
    x = features
    for i, width in enumerate(self.hidden):
      x = nn.relu(precision.Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logit = precision.Dense(1, dtype=self.dtype, name=f"fc{len(self.hidden) + 1}")(x)
    return logit[..., 0].astype(jnp.float32)


class DiNet(nn.Module):
  """Backbone + action head + GRL + domain classifier.

  `out` holds the backbone's intermediates (`stem`, `stage1`...), `features` (pooled backbone
  output, the domain head's input) and `domain_logits` (B,). With `num_classes=0` the first return
  value is the features instead of the action logits.
  """
  num_classes: int
  backbone: str = "resnext3d_101"
  backbone_kwargs: Mapping[str, Any] | None = None
  domain_hidden: Sequence[int] = (1024, 1024)
  domain_dropout: float = 0.5
  head_dropout: float = 0.0
  dtype: Any = None
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")

  def setup(self):
    if len(self.domain_hidden) != 2:
      raise ValueError(f"dinet: domain_hidden must hold the two hidden sizes of the three-layer "
                       f"domain classifier, got {tuple(self.domain_hidden)}")
    kwargs = dict(self.backbone_kwargs or {})
    if remat_lib.enabled(self.remat):
      kwargs["remat"] = self.remat
    if self.backbone.startswith("dinet"):
      raise ValueError(f"dinet: backbone {self.backbone!r} is itself a DiNet; pick a zoo backbone")
    self.extractor = models.build(self.backbone, num_classes=0, dtype=self.dtype, **kwargs)
    self.head_dropout_layer = nn.Dropout(self.head_dropout)
    if self.num_classes:
      self.head = precision.Dense(self.num_classes, dtype=self.dtype)
    self.domain_head = DomainClassifier(self.domain_hidden, self.domain_dropout, self.dtype)

  def features(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    features, out = self.extractor(x, train=train)
    if features.ndim != 2:
      raise ValueError(f"dinet: backbone {self.backbone!r} with num_classes=0 returned features of "
                       f"shape {features.shape}; expected (batch, channels)")
    return features, dict(out)

  def __call__(self, x: jax.Array, train: bool = False,
               grl_lambda: Any = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    features, out = self.features(x, train)
    out["features"] = features
    out["domain_logits"] = self.domain_head(reverse_gradient(features, grl_lambda), train)
    if not self.num_classes:
      return features, out
    pooled = self.head_dropout_layer(features, deterministic=not train)
    logits = self.head(pooled.astype(self.dtype or pooled.dtype))
    return logits.astype(jnp.float32), out


def _variant(**fixed: Any) -> Callable[..., DiNet]:
  def build(num_classes: int, **kwargs: Any) -> DiNet:
    return DiNet(num_classes=num_classes, **{**fixed, **kwargs})
  return build


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "dinet": _variant(),                                    # backbone from config (kwargs)
    "dinet_c3d": _variant(backbone="c3d", domain_hidden=(1024, 1024)),
    "dinet_resnet3d_101": _variant(backbone="resnet3d_101"),
    "dinet_resnext3d_101": _variant(backbone="resnext3d_101"),
    # Tiny variant for tests.
    "dinet_tiny": _variant(backbone="small3d_tiny", domain_hidden=(8, 8)),
}

__all__ = ["DiNet", "DomainClassifier", "VARIANTS"]
