"""ActLumos: a Retinex dual-stream teacher with Dynamic Feature Fusion, and its one-stream student.

Dass et al., "Seeing in the Dark: A Teacher-Student Framework for Dark Video Action Recognition via
Knowledge Distillation and Contrastive Learning" (the authors' README; no code released). Reported
top-1 (student): ARID v1.0 96.92%, ARID v1.5 88.27%, Dark-48 48.96%; student 67 M parameters (the
README's table images). docs/papers/actlumos.md says which detail comes from which text or image.

Teacher (`ActLumosTeacher`):
  dark clip, Retinex clip ──> ONE R(2+1)D-34 (IG65M layout, weights shared; both clips go
      through it as one batch of 2B; its BatchNorms keep statistics per stream
      (`stream_statistics="separate"`: each stream normalised by its own batch statistics in
      training and its own running ones in inference, darkjax.layers.norm `stat_groups`), or
      normalise both streams by the statistics of all 2B clips ("joint"))
      -> last-stage maps F_dark, F_ret (B, T', H', W', C)
  fusion:  dff    DynamicFeatureFusion(F_dark, F_ret) (below)
           sum    F_dark + F_ret                                 (ablation)
           concat 1x1x1 conv of [F_dark, F_ret] back to C channels (ablation)
  -> tokens -> TemporalTransformer -> CLS -> Dense -> logits
  SupCon projection (`projection_dim` > 0): a 2-layer MLP (C -> C, ReLU, -> projection_dim) on each
  stream's pooled map, before fusion; `out["projections"]` is (B, 2, projection_dim) = (dark, ret).
Student (`ActLumosStudent`): the same backbone, transformer and classifier on the dark clip only.
SSL (`ActLumosSSL`): the student's backbone (default; or the whole student's CLS embedding) plus a
2-layer MLP projection, for NT-Xent.

DFF, as the README's DFF.png draws it (1x1x1 convs are Dense layers on the channel axis; r is ours):
  X = F_dark + F_ret
  G = BN(Conv_{C/r->C}(ReLU(BN(Conv_{C->C/r}(GlobalAvgPool(X))))))   global branch, (B, 1, 1, 1, C)
  L = the same without pooling                                       local branch, (B, T, H, W, C)
  S = G + L;  weights = softmax over 2 of Conv_{C/r->2}(ReLU(BN(Conv_{C->C/r}(S))))
  output = W_dark * F_dark + W_ret * F_ret,  r = 4; `out["fusion_weights"]` (B, T', H', W', 2).

Temporal transformer (BERT as published, DarkLight's sizes): the map is average-pooled over space,
which is DarkLight's (1, 7, 7) pooling of the 7 x 7 map at 112 x 112 frames (we pool the whole
H' x W' at any frame size, so small test clips work), giving T' tokens; a Dense projection to
`hidden` when the backbone width differs; a learned CLS token is prepended, learned position
embeddings added, LayerNorm + dropout (BERT embeddings); `layers` post-LN BERT layers (MHA with
`heads` heads, GELU MLP of 4 x hidden); the CLS output feeds the classifier. Defaults: hidden 512,
8 heads, 1 layer. `transformer_norm="pre"` runs DarkLight's own form instead
(`TemporalTransformer`).

`__call__(dark, retinex, train)` / `__call__(dark, train)` return `(logits, out)`; `out` holds
`cls` (B, hidden), `tokens`, and for the teacher `maps` (F_dark, F_ret), `fused`, `features`
(per-stream pooled maps, (B, 2, C)), `fusion_weights` (DFF only), `projections`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers import precision
from darkjax.layers.norm import BatchNorm, one_pass_statistics
from darkjax.models import video_resnet

FUSIONS = ("dff", "sum", "concat")
STREAM_STATISTICS = ("separate", "joint")


def _norm(train: bool, dtype: Any, name: str) -> BatchNorm:
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   use_fast_variance=one_pass_statistics(), name=name)


class DynamicFeatureFusion(nn.Module):
  """DFF of two (B, T, H, W, C) maps (module docstring); returns (fused, weights (..., 2))."""
  reduction: int = 4
  dtype: Any = jnp.float32

  def _branch(self, x: jax.Array, train: bool, name: str) -> jax.Array:
    channels = x.shape[-1]
    hidden = max(channels // self.reduction, 1)
    x = precision.Dense(hidden, dtype=self.dtype, name=f"{name}_reduce")(x)
    x = nn.relu(_norm(train, self.dtype, f"{name}_reduce_bn")(x))
    x = precision.Dense(channels, dtype=self.dtype, name=f"{name}_expand")(x)
    return _norm(train, self.dtype, f"{name}_expand_bn")(x)

  @nn.compact
  def __call__(self, dark: jax.Array, retinex: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    if dark.shape != retinex.shape or dark.ndim != 5:
      raise ValueError(f"DynamicFeatureFusion: expected two equal (B, T, H, W, C) maps, got "
                       f"{dark.shape} and {retinex.shape}")
    x = dark + retinex
    pooled = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    s = self._branch(pooled, train, "global") + self._branch(x, train, "local")
    hidden = max(x.shape[-1] // self.reduction, 1)
    w = precision.Dense(hidden, dtype=self.dtype, name="weight_reduce")(s)
    w = nn.relu(_norm(train, self.dtype, "weight_bn")(w))
    w = precision.Dense(2, dtype=self.dtype, name="weight_logits")(w)
    weights = jax.nn.softmax(w.astype(jnp.float32), axis=-1)
    fused = (weights[..., :1] * dark.astype(jnp.float32)
             + weights[..., 1:] * retinex.astype(jnp.float32))
    return fused.astype(dark.dtype), weights


class StdLayerNorm(nn.Module):
  """The Annotated Transformer's LayerNorm, DarkLight's BERT's: scale * (x - mean) / (std + eps)
  + bias, `std` the unbiased (n - 1) standard deviation over the features, `eps` added to it."""
  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (width,))
    bias = self.param("bias", nn.initializers.zeros, (width,))
    y = x.astype(jnp.float32)
    centred = y - jnp.mean(y, axis=-1, keepdims=True)
    var = jnp.sum(centred * centred, axis=-1, keepdims=True) / (width - 1)
    # sqrt's derivative is infinite at 0: a token of equal features gets a finite gradient
    # (the forward differs from sqrt(0) only below 1e-12 of variance).
    std = jnp.sqrt(jnp.maximum(var, 1e-24))
    return (scale * centred / (std + self.eps) + bias).astype(self.dtype)


TRANSFORMER_NORMS = ("post", "pre")


class TemporalTransformer(nn.Module):
  """BERT-style encoder over time tokens (module docstring): (B, T, H, W, C) -> (CLS, tokens).

  `norm`: "post", BERT as published (embedding LayerNorm, each sub-layer's residual sum
  normalised); "pre", DarkLight's code (models/BERT, the Annotated Transformer's form): no
  embedding LayerNorm, `StdLayerNorm` before each sub-layer, dropout inside the MLP and after each
  layer, no final norm."""
  hidden: int = 512
  heads: int = 8
  layers: int = 1
  mlp_ratio: int = 4
  dropout_rate: float = 0.1
  norm: str = "post"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feature_map: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    if feature_map.ndim != 5:
      raise ValueError(f"TemporalTransformer expects a (B, T, H, W, C) map, got "
                       f"{feature_map.shape}")
    tokens = jnp.mean(feature_map.astype(jnp.float32), axis=(2, 3)).astype(self.dtype)
    if tokens.shape[-1] != self.hidden:
      tokens = precision.Dense(self.hidden, dtype=self.dtype, name="input_projection")(tokens)
    batch = tokens.shape[0]
    cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, self.hidden))
    # the token per clip, its gradient summed over the batch in float32
    x = jnp.concatenate([precision.broadcast_param(cls, (batch, 1, self.hidden), tokens.dtype),
                         tokens], axis=1)
    pos = self.param("position_embeddings", nn.initializers.normal(0.02),
                     (1,) + x.shape[1:])
    x = precision.add_bias(x, pos)
    if self.norm not in TRANSFORMER_NORMS:
      raise ValueError(f"TemporalTransformer: norm {self.norm!r} unknown; valid: "
                       f"{TRANSFORMER_NORMS}")
    if self.norm == "pre":
      return self._pre_norm_layers(x, train)
    x = nn.LayerNorm(dtype=self.dtype, name="embedding_norm")(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for index in range(self.layers):
      attention = precision.MultiHeadDotProductAttention(
          num_heads=self.heads, dtype=self.dtype, dropout_rate=self.dropout_rate,
          deterministic=not train, name=f"layer{index}_attention")(x, x)
      x = nn.LayerNorm(dtype=self.dtype, name=f"layer{index}_attention_norm")(
          x + nn.Dropout(self.dropout_rate, deterministic=not train)(attention))
      y = precision.Dense(self.hidden * self.mlp_ratio, dtype=self.dtype,
                          name=f"layer{index}_mlp_in")(x)
      y = precision.Dense(self.hidden, dtype=self.dtype, name=f"layer{index}_mlp_out")(nn.gelu(y))
      x = nn.LayerNorm(dtype=self.dtype, name=f"layer{index}_mlp_norm")(
          x + nn.Dropout(self.dropout_rate, deterministic=not train)(y))
    return x[:, 0], x[:, 1:]

  def _pre_norm_layers(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """`norm="pre"`: the embedded tokens (positions added) through DarkLight's layers."""
    dropout = lambda: nn.Dropout(self.dropout_rate, deterministic=not train)  # noqa: E731
    x = dropout()(x)
    for index in range(self.layers):
      h = StdLayerNorm(dtype=self.dtype, name=f"layer{index}_attention_norm")(x)
      attention = precision.MultiHeadDotProductAttention(
          num_heads=self.heads, dtype=self.dtype, dropout_rate=self.dropout_rate,
          deterministic=not train, name=f"layer{index}_attention")(h, h)
      x = x + dropout()(attention)
      h = StdLayerNorm(dtype=self.dtype, name=f"layer{index}_mlp_norm")(x)
      y = precision.Dense(self.hidden * self.mlp_ratio, dtype=self.dtype,
                          name=f"layer{index}_mlp_in")(h)
      y = dropout()(nn.gelu(y, approximate=True))
      y = precision.Dense(self.hidden, dtype=self.dtype, name=f"layer{index}_mlp_out")(y)
      x = dropout()(x + dropout()(y))
    return x[:, 0], x[:, 1:]


class ProjectionHead(nn.Module):
  """2-layer MLP for contrastive losses: Dense(width) -> ReLU -> Dense(features)."""
  width: int
  features: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(precision.Dense(self.width, dtype=self.dtype, name="hidden")(x))
    return precision.Dense(self.features, dtype=self.dtype, name="out")(x).astype(jnp.float32)


class _Parts(nn.Module):
  """Attributes and sub-modules shared by teacher, student and SSL model."""
  num_classes: int = 11
  backbone: str = "r2plus1d_34_ig65m"   # darkjax.models.video_resnet variant
  hidden: int = 512
  heads: int = 8
  layers: int = 1
  dropout_rate: float = 0.1             # transformer dropout
  transformer_norm: str = "post"        # TemporalTransformer.norm: post (BERT) | pre (DarkLight)
  head_dropout: float = 0.0             # before the classifier
  projection_dim: int = 128             # contrastive projection (teacher: SupCon; SSL: NT-Xent)
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")

  def make_backbone(self, bn_stat_groups: int = 1) -> nn.Module:
    return video_resnet.VARIANTS[self.backbone](num_classes=0, dtype=self.dtype, remat=self.remat,
                                                bn_stat_groups=bn_stat_groups, name="backbone")

  def make_transformer(self) -> nn.Module:
    return TemporalTransformer(self.hidden, self.heads, self.layers,
                               dropout_rate=self.dropout_rate, norm=self.transformer_norm,
                               dtype=self.dtype, name="temporal")

  def classify(self, cls: jax.Array, train: bool) -> jax.Array:
    cls = nn.Dropout(self.head_dropout, deterministic=not train)(cls)
    logits = precision.Dense(self.num_classes, dtype=self.dtype, name="fc")(cls)
    return logits.astype(jnp.float32)


class ActLumosStudent(_Parts):
  """R(2+1)D backbone -> temporal transformer -> classifier on the dark clip."""

  @nn.compact
  def __call__(self, dark: jax.Array, train: bool = False):
    _, backbone_out = self.make_backbone()(dark, train)
    cls, tokens = self.make_transformer()(backbone_out["stage4"], train)
    return self.classify(cls, train), {"cls": cls, "tokens": tokens,
                                       "map": backbone_out["stage4"]}


SSL_FEATURES = ("backbone", "cls")


class ActLumosSSL(nn.Module):
  """The student's self-supervised stage: a projection (sub-module `projection`) for NT-Xent of

    features="backbone"  the student's R(2+1)D-34 alone (sub-module `backbone`), its last map
                         pooled over time and space: the README's Stage 1 drawing (arch.png)
                         trains only the CNN feature extractor with L_SSL;
    features="cls"       the whole student (sub-module `student`: backbone, transformer,
                         classifier) and its CLS embedding.

  `student` fixes the backbone, widths and dtype either way. `__call__` returns (None, out) with
  out["projection"] (B, projection_dim) for "backbone", (logits, out) of the student for "cls".
  """
  student: ActLumosStudent
  features: str = "backbone"

  @nn.compact
  def __call__(self, dark: jax.Array, train: bool = False):
    if self.features not in SSL_FEATURES:
      raise ValueError(f"ActLumosSSL: features {self.features!r} unknown; valid: {SSL_FEATURES}")
    s = self.student
    if self.features == "cls":
      logits, out = s(dark, train)
      pooled, width = out["cls"], s.hidden
    else:
      backbone = video_resnet.VARIANTS[s.backbone](num_classes=0, dtype=s.dtype, remat=s.remat,
                                                   name="backbone")
      _, backbone_out = backbone(dark, train)
      logits, out = None, {"map": backbone_out["stage4"]}
      pooled = jnp.mean(out["map"].astype(jnp.float32), axis=(1, 2, 3)).astype(s.dtype)
      width = out["map"].shape[-1]
    head = ProjectionHead(width, s.projection_dim, dtype=s.dtype, name="projection")
    return logits, {**out, "projection": head(pooled)}


class ActLumosTeacher(_Parts):
  """Dual-stream teacher (module docstring); `fusion` in FUSIONS, DFF reduction `reduction`."""
  fusion: str = "dff"
  reduction: int = 4
  stream_statistics: str = "separate"   # in STREAM_STATISTICS (module docstring)

  @nn.compact
  def __call__(self, dark: jax.Array, retinex: jax.Array, train: bool = False):
    if self.fusion not in FUSIONS:
      raise ValueError(f"ActLumosTeacher: fusion {self.fusion!r} unknown; valid: {FUSIONS}")
    if self.stream_statistics not in STREAM_STATISTICS:
      raise ValueError(f"ActLumosTeacher: stream_statistics {self.stream_statistics!r} unknown; "
                       f"valid: {STREAM_STATISTICS}")
    if dark.shape != retinex.shape:
      raise ValueError(f"ActLumosTeacher: dark {dark.shape} and Retinex {retinex.shape} clips "
                       "differ in shape")
    batch = dark.shape[0]
    groups = 2 if self.stream_statistics == "separate" else 1
    _, backbone_out = self.make_backbone(groups)(jnp.concatenate([dark, retinex], 0), train)
    maps = backbone_out["stage4"]
    f_dark, f_ret = maps[:batch], maps[batch:]
    out: dict[str, Any] = {"maps": (f_dark, f_ret)}
    if self.fusion == "dff":
      fused, out["fusion_weights"] = DynamicFeatureFusion(self.reduction, self.dtype,
                                                          name="dff")(f_dark, f_ret, train)
    elif self.fusion == "sum":
      fused = f_dark + f_ret
    else:
      fused = precision.Dense(maps.shape[-1], dtype=self.dtype, name="concat_fusion")(
          jnp.concatenate([f_dark, f_ret], -1))
    out["fused"] = fused
    pooled = jnp.mean(maps.astype(jnp.float32), axis=(1, 2, 3))
    out["features"] = jnp.stack([pooled[:batch], pooled[batch:]], 1)
    if self.projection_dim:
      head = ProjectionHead(maps.shape[-1], self.projection_dim, dtype=self.dtype,
                            name="projection")
      out["projections"] = head(out["features"])
    cls, out["tokens"] = self.make_transformer()(fused, train)
    out["cls"] = cls
    return self.classify(cls, train), out


def _variant(cls, **fixed):
  return functools.partial(cls, **fixed)


_TINY = dict(backbone="r2plus1d_tiny_test", hidden=32, heads=4, layers=1, projection_dim=16)

VARIANTS = {
    "actlumos_teacher": _variant(ActLumosTeacher),
    "actlumos_student": _variant(ActLumosStudent),
    # Tiny R(2+1)D backbone (widths 8-32) and a 32-wide transformer: tests and the synthetic run.
    "actlumos_teacher_tiny_test": _variant(ActLumosTeacher, **_TINY),
    "actlumos_student_tiny_test": _variant(ActLumosStudent, **_TINY),
}


class ActLumosDistill(nn.Module):
  """The student phase's model: `student` trained, `teacher` (optional) evaluated frozen beside it
  (BatchNorm on running statistics, no dropout, its logits behind stop_gradient). Keeping the
  teacher in the same variable tree keeps it in the sharded, checkpointed state instead of in
  constants of the compiled step; its parameters are frozen by the trainer's optimizer."""
  student: ActLumosStudent
  teacher: ActLumosTeacher | None = None

  @nn.compact
  def __call__(self, dark: jax.Array, retinex: jax.Array | None = None, train: bool = False):
    logits, out = self.student(dark, train)
    if self.teacher is not None:
      if retinex is None:
        raise ValueError("ActLumosDistill: the teacher needs the Retinex clip")
      teacher_logits, _ = self.teacher(dark, retinex, train=False)
      out = {**out, "teacher_logits": jax.lax.stop_gradient(teacher_logits)}
    return logits, out
