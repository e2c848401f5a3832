"""DTCM (Tu et al., TIP 2023): a curve-estimation enhancer cascaded with any zoo 3D backbone.

    clip in [0, 1] -> VideoEnhancer (curves from the middle frame of each group of k frames, shared
    by the group) -> enhanced clip -> normalise -> backbone -> logits

The model takes clips already scaled to [0, 1] (the trainer uses `input.normalise="none"`) because
the light-enhancement curve is defined on [0, 1]; the backbone's normalisation (`normalise`, one of
darkjax.data.normalise.MODES) happens after enhancing, inside the model, so gradients of the
action-recognition loss reach the enhancer (one-stage training).

`out` holds the backbone's intermediates (`stem`, `stage1`..., `features`) plus `enhanced` (B, T, H,
W, 3) in [0, 1], `curves` (B, T / k, H, W, 3 n) and `intermediate` (the clip after 4 curve
iterations). With `enhancer=""` the model is the plain backbone on the same [0, 1] input (the
no-enhancement baseline): `enhanced` is the input and there are no curves.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax import models
from darkjax.data import normalise as normalise_lib
from darkjax.layers import remat as remat_lib
from darkjax.models.enhancers import VideoEnhancer

ENHANCERS = ("dtcm_enhancer", "zero_dce", "zero_dce_pp", "")
# The training settings of the paper's Table VI plus the plain baseline (darkjax/trainers/dtcm.py);
# no_enhancement is the backbone alone (enhancer="").
SETTINGS = ("one_stage_total", "one_stage_ar", "two_stage", "no_enhancement")


def normalise_unit_clip(clip: jax.Array, mode: str, dtype=jnp.float32) -> jax.Array:
  """Float clip in [0, 1] -> the backbone's normalisation `mode` (same maths as for uint8 input)."""
  return normalise_lib.normalise(clip.astype(jnp.float32) * 255.0, mode, dtype)


class DTCM(nn.Module):
  """Enhancer -> normalise -> backbone. See the module docstring."""
  num_classes: int
  backbone: str = "resnext3d_101"
  backbone_kwargs: Mapping[str, Any] | None = None
  enhancer: str = "dtcm_enhancer"
  enhancer_kwargs: Mapping[str, Any] | None = None
  group_size: int = 4            # k: frames sharing the curves of their group's middle frame
  normalise: str = "kinetics"    # applied to the enhanced clip before the backbone
  dtype: Any = None
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")

  def setup(self):
    if self.enhancer not in ENHANCERS:
      raise ValueError(f"dtcm: enhancer {self.enhancer!r} unknown; valid: {ENHANCERS} "
                       "('' = no enhancement)")
    if self.normalise not in normalise_lib.MODES:
      raise ValueError(f"dtcm: normalise {self.normalise!r} unknown; valid: {normalise_lib.MODES}")
    if self.backbone.startswith("dtcm") or self.backbone in ENHANCERS:
      raise ValueError(f"dtcm: backbone {self.backbone!r} is not a classifier backbone")
    if self.enhancer:
      enhancer_kwargs = dict(self.enhancer_kwargs or {})
      if remat_lib.enabled(self.remat):
        enhancer_kwargs.setdefault("remat", self.remat)
      image_enhancer = models.build(self.enhancer, num_classes=0, dtype=self.dtype,
                                    **enhancer_kwargs)
      self.video_enhancer = VideoEnhancer(image_enhancer, group_size=self.group_size,
                                          remat=self.remat)
    kwargs = dict(self.backbone_kwargs or {})
    if remat_lib.enabled(self.remat):
      kwargs["remat"] = self.remat
    self.classifier = models.build(self.backbone, num_classes=self.num_classes, dtype=self.dtype,
                                   **kwargs)

  def _check_clip(self, x: jax.Array) -> None:
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f"dtcm: expected RGB clips (B, T, H, W, 3) in [0, 1], got shape {x.shape}")
    if x.shape[1] % self.group_size:
      raise ValueError(f"dtcm: clip length {x.shape[1]} is not a multiple of the key-frame group "
                       f"size k={self.group_size}")

  def enhance(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(enhanced clip, {"enhanced", "curves", "intermediate"}); the identity without an enhancer."""
    self._check_clip(x)
    if not self.enhancer:
      return x, {"enhanced": x}
    enhanced, out = self.video_enhancer(x, train=train)
    return enhanced, dict(out)

  def classify(self, enhanced: jax.Array, train: bool = False):
    """Backbone on an enhanced [0, 1] clip (normalised here)."""
    x = normalise_unit_clip(enhanced, self.normalise, self.dtype or jnp.float32)
    return self.classifier(x, train=train)

  def __call__(self, x: jax.Array, train: bool = False, freeze_enhancer: bool = False):
    """`freeze_enhancer`: the enhancer runs in inference mode and passes no gradient (two-stage
    training, phase 2)."""
    enhanced, enhancer_out = self.enhance(x, train=train and not freeze_enhancer)
    if freeze_enhancer:
      enhanced = jax.lax.stop_gradient(enhanced)
      enhancer_out = jax.tree.map(jax.lax.stop_gradient, enhancer_out)
    logits, out = self.classify(enhanced, train=train)
    out = dict(out)
    out.update(enhancer_out)
    return logits, out


def _variant(**defaults: Any) -> Callable[..., nn.Module]:
  def build(num_classes: int, **kwargs: Any) -> nn.Module:
    return DTCM(num_classes=num_classes, **{**defaults, **kwargs})
  return build


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "dtcm": _variant(),
    # CPU-sized: the light enhancer in front of the small plain 3D CNN.
    "dtcm_small": _variant(backbone="small3d", normalise="per_clip"),
    "dtcm_tiny": _variant(backbone="small3d_tiny", normalise="per_clip",
                          enhancer_kwargs={"features": 8}),
}

__all__ = ["DTCM", "ENHANCERS", "VARIANTS", "normalise_unit_clip"]
