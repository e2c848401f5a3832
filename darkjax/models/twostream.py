"""Two-stream C3D with a discriminative code layer (Jiang, Rozgic, Adali, "Learning Spatiotemporal
Features for Infrared Action Recognition with 3D Convolutional Neural Networks", CVPRW 2017).

One C3D tower per stream (infrared frames, optical flow of the infrared frames), separate weights.
On each tower's fc7 sit two heads (the paper's Fig. 2 and Sec. 3.1, "FC(4096)-FC(4096)-SM(12)
(DC(4096))"):
  `softmax`  Dense(m): the class scores x_c = softmax(W x) (eq. 3)
  `code`     Dense(N): the discriminative code x_d = A x (eq. 2), linear, trained towards the
             p-hot target code of the label (`darkjax.losses.p_hot_codes`, `dcl_loss`)
With `code_size = 0` a tower has no DC layer (the paper's "net without DCL").

`TwoStreamC3D(clips)` takes a dict stream -> (B, T, H, W, C) clip and returns `(logits, out)` with
`logits[stream]` (B, m) float32, `out["code"][stream]` (B, N) float32 (absent without DCL) and
`out["fc7"][stream]` (B, fc_width). Parameters live under `params/<stream>/{c3d, softmax, code}`;
`c3d` has exactly the layout of the zoo's headless `c3d` (`num_classes=0`), so a Sports-1M
conversion (`python -m darkjax.convert --arch c3d --num-classes 0`) loads into either tower.
`pooling` ("caffe" | "port", darkjax.models.c3d; the config key `model.kwargs.pooling`) sets the
towers' max pooling; "" keeps the variant's own (the paper size: Caffe's, the weights' own).
The paper ignores biases "for simplicity" (its footnote 3); the layers here keep them, as C3D has.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.models import c3d
from darkjax.layers import precision

STREAMS = ("ir", "flow")


class StreamNet(nn.Module):
  """One tower: a headless C3D backbone (fc7 features), the softmax head and the DC layer."""
  num_classes: int
  code_size: int = 4096
  backbone: str = "c3d"
  backbone_kwargs: Mapping[str, Any] = None
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy of the C3D convs (True = "full")
  pooling: str = ""          # the C3D's max pooling, "caffe" | "port" ("": backbone_kwargs')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    if self.backbone not in c3d.VARIANTS:
      raise ValueError(f"twostream: backbone {self.backbone!r} is not a C3D variant; known: "
                       f"{sorted(c3d.VARIANTS)}")
    kwargs = {"remat": self.remat, **dict(self.backbone_kwargs or {})}
    if self.pooling:
      kwargs["pooling"] = self.pooling
    tower = c3d.VARIANTS[self.backbone](0, dtype=self.dtype, **kwargs, name="c3d")
    fc7, _ = tower(x, train=train)
    out = {"fc7": fc7}
    logits = precision.Dense(self.num_classes, dtype=self.dtype, name="softmax")(fc7).astype(
        jnp.float32)
    if self.code_size:
      out["code"] = precision.Dense(self.code_size, dtype=self.dtype, name="code")(fc7).astype(
          jnp.float32)
    return logits, out


class TwoStreamC3D(nn.Module):
  """Towers named by `streams` (default "ir", "flow"), each a `StreamNet` with its own weights."""
  num_classes: int
  streams: Sequence[str] = STREAMS
  code_size: int = 4096
  backbone: str = "c3d"
  backbone_kwargs: Mapping[str, Any] = None
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy of the C3D convs (True = "full")
  pooling: str = ""          # the towers' C3D max pooling, "caffe" | "port" ("": the variant's)

  @nn.compact
  def __call__(self, clips: Mapping[str, jax.Array], train: bool = False
               ) -> tuple[dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
    if self.code_size and self.code_size < self.num_classes:
      raise ValueError(f"twostream: code size N={self.code_size} is smaller than the "
                       f"{self.num_classes} classes; every class needs at least one code neuron: "
                       f"set model.kwargs.code_size >= {self.num_classes} (the paper: 4096), or 0 "
                       "for towers without the discriminative code layer")
    if not self.streams or len(set(self.streams)) != len(self.streams):
      raise ValueError(f"twostream: streams must be distinct names, got {tuple(self.streams)}")
    missing = [s for s in self.streams if s not in clips]
    if missing:
      raise ValueError(f"twostream: no clips for stream(s) {missing}; got {sorted(clips)}")
    logits, out = {}, {"fc7": {}, "code": {}}
    for name in self.streams:
      tower = StreamNet(self.num_classes, self.code_size, self.backbone, self.backbone_kwargs,
                        self.dtype, self.remat, self.pooling, name=name)
      logits[name], tower_out = tower(clips[name], train=train)
      out["fc7"][name] = tower_out["fc7"]
      if "code" in tower_out:
        out["code"][name] = tower_out["code"]
    if not out["code"]:
      del out["code"]
    return logits, out


def _variant(**fixed: Any) -> Callable[..., TwoStreamC3D]:
  def build(num_classes: int, **kwargs: Any) -> TwoStreamC3D:
    return TwoStreamC3D(num_classes=num_classes, **{**fixed, **kwargs})
  return build


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    # The paper's network: two C3D towers (16x112x112 clips), fc 4096, DC(4096).
    "twostream_c3d": _variant(),
    # CPU-sized towers for the synthetic set (16x32x32 clips), with the PyTorch port's pooling
    # (C3D's `pooling="port"`), which their synthetic figures were measured with: pool5 keeps a
    # 2 x 2 grid of 32 x 32 frames (Caffe's ceil mode, 1 x 1).
    "twostream_c3d_small": _variant(
        backbone="c3d", code_size=64,
        backbone_kwargs=dict(input_size=(16, 32, 32), widths=(8, 16, 32, 32, 64, 64, 64, 64),
                             fc_width=128, pooling="port")),
    # The same towers with BatchNorm after every convolution (C3D's `batch_norm`) and no dropout
    # in their 128-wide fc layers: towers that learn from scratch in a few hundred steps, the
    # synthetic config's (configs/twostream_synthetic.py says what the plain towers did).
    "twostream_c3d_small_bn": _variant(
        backbone="c3d", code_size=64,
        backbone_kwargs=dict(input_size=(16, 32, 32), widths=(8, 16, 32, 32, 64, 64, 64, 64),
                             fc_width=128, batch_norm=True, dropout_rate=0.0, pooling="port")),
    # Tiny variant for tests (16x32x32 clips).
    "twostream_c3d_tiny": _variant(backbone="c3d_tiny", code_size=24),
}
