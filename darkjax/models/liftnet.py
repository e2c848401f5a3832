"""LIFT-Net: dual-stream Fourier-attention transformer for light-invariant action recognition.

Susladkar et al., "LIFT-Net: Dual Stream Fourier Attention for Light Invariant Action Recognition".
Reported top-1: ARID 95.21%, HMDB51 89.92%, UCF101 98.89%, InfAR 93.87%.

  dark clip x (B, T, H, W, 3) ──> PViT (first `vit_blocks` blocks of a ViT, shared over frames,
      then the ViT's final LayerNorm unless `pvit_norm=False`)
      -> class token per frame (B, T, D_vit) -> main_projection (Dense-GELU-Dense-LN) -> H_MS (B, T, E)
  luminous clip (GIC frames or optical flow) ──> R(2+1)D-34 (or R3D-18) -> last stage map
      -> 3D adaptive average pool to `luminous_tokens` = (t, h, w) -> luminous_projection
      (Dense-LN) -> H_LS (B, S = t h w, E)
  N times:  H_MS <- LIFT(H_MS);  H_LS <- Critic(H_LS);  H_LS <- FoE(LN(MHA(q=H_LS, kv=H_MS)) + H_LS)
  features = mean over S of H_LS (B, E) -> head: Dense-GELU-BatchNorm-Dense -> logits (softmax in
  the loss).

Choices where the paper is vague (each is an attribute): learned position embeddings are added to
both token sequences (`position_embeddings`; attention and the FFT over the sequence need an order);
the fusion output becomes the next layer's H_LS; E = 512 (the R(2+1)D width), 8 heads, MLP 4E; the
luminous map is pooled to 4 x 2 x 2 = 16 tokens (`luminous_tokens`) and projected (Dense-LN); the
fusion attention divides by sqrt(head_dim) (`attention_scale="heads"`: sqrt(N_AH), Eq. (1) as
printed); the PViT keeps the ViT's final LayerNorm (`pvit_norm`). FoE follows Sec. III-E's order,
LayerNorm on the modulated spectrum before the inverse FFT (`fourier_norm`, darkjax/layers/
fourier.py). N = 4 / 6 / 8 for liftnet_small / medium / large. Checkpoints written before the FoE
LayerNorm moved into the spectrum load with `fourier_norm="tokens"`.

The N layers run as one `nn.scan` (`scan_layers=True`, the default): their parameters are stacked
on a leading axis under `layers/{lift,critic,fusion}` and XLA compiles one layer body instead of N
(LIFT-Net-large's train step: see docs/benchmarks.md). `scan_layers=False` builds them unrolled as
`lift_<i>`, `critic_<i>`, `fusion_<i>` (the layout of checkpoints written before the scan).

Knowledge distillation (darkjax/trainers/liftnet.py): the teacher is the bare luminous backbone with
a classifier (`teacher_model`), trained first; its weights become the student's `luminous` subtree
(`merge_teacher`), one copy, frozen (`luminous_frozen=True`: BatchNorm on running statistics, no
gradient into the backbone). The teacher's hidden vector h1 is then exactly `out["luminous_features"]`
(pooled backbone features) and the student's h2 is `out["hidden"]` (the pooled fused features,
through `hidden_projection` when E differs from the backbone width).

`__call__(x, train=False, luminous=None)`: x is the normalised dark clip; `luminous` the normalised
luminous clip (same batch size); None uses x for both streams. `out` holds `pvit_cls`, `main_tokens`,
`luminous_tokens` (before the first layer), `stage1`..`stageN` (fused tokens per layer), `features`,
`hidden`, `luminous_features` and `logits` (when num_classes > 0).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax import variables as variables_lib
from darkjax.layers.attention import CriticModule, FeatureFusion, LIFTModule
from darkjax.layers import remat as remat_lib
from darkjax.layers.scanned import scanned
from darkjax.layers.norm import BatchNorm
from darkjax.models import video_resnet, vit
from darkjax.layers import precision

VIT_TRAINABLE = ("first", "none", "all")


def adaptive_avg_pool(x: jax.Array, sizes: Sequence[int], axes: Sequence[int]) -> jax.Array:
  """PyTorch `AdaptiveAvgPool` semantics: output bin i of an axis of length L averages the input
  range [floor(i L / O), ceil((i + 1) L / O)), also when O > L."""
  for axis, size in zip(axes, sizes):
    length = x.shape[axis]
    bins = [jnp.mean(jax.lax.slice_in_dim(x, (i * length) // size, -(-((i + 1) * length) // size),
                                          axis=axis), axis=axis, keepdims=True)
            for i in range(size)]
    x = jnp.concatenate(bins, axis=axis)
  return x


class PositionEmbedding(nn.Module):
  """Learned (1, S, E) embedding added to tokens; S is fixed by the input at init."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pos = self.param("embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
    if pos.shape[1:] != x.shape[1:]:
      raise ValueError(f"{self.name}: built for {pos.shape[1]} tokens, got {x.shape[1]} (clips "
                       f"must keep the frame count / luminous token grid used at init)")
    return precision.add_bias(x, pos)   # its gradient summed over the batch in float32


def _fusion_layer(h_ms: jax.Array, h_ls: jax.Array, names: Sequence[str], *, num_heads: int,
                  mlp_dim: int, fourier_hidden: int, fourier: bool, fourier_norm: str,
                  attention_scale: str, dropout_rate: float, dtype: Any, remat: bool | str,
                  train: bool) -> tuple[jax.Array, jax.Array]:
  """One of the N repeats, its LIFT, Critic and Fusion modules named `names` in the calling
  module: H_MS <- LIFT(H_MS); H_LS <- Critic(H_LS); H_LS <- FoE(LN(MHA(q=H_LS, kv=H_MS)) + H_LS)."""
  def wrap(cls, static):
    return remat_lib.wrap(cls, remat, static_argnums=static)
  h_ms = wrap(LIFTModule, (2,))(num_heads, dropout_rate, dtype, name=names[0])(h_ms, train)
  h_ls = wrap(CriticModule, (2,))(num_heads, mlp_dim, dropout_rate, dtype,
                                  name=names[1])(h_ls, train)
  h_ls = wrap(FeatureFusion, (3,))(num_heads, fourier_hidden, fourier, dropout_rate, dtype,
                                   fourier_norm=fourier_norm, attention_scale=attention_scale,
                                   name=names[2])(h_ls, h_ms, train)
  return h_ms, h_ls


class FusionLayer(nn.Module):
  """The body of LIFTNet's `nn.scan` over its N layers (submodules `lift`, `critic`, `fusion`):
  carry (H_MS, H_LS) -> (carry, H_LS)."""
  num_heads: int
  mlp_dim: int
  fourier_hidden: int
  fourier: bool
  fourier_norm: str
  attention_scale: str
  dropout_rate: float
  dtype: Any
  remat: bool | str
  train: bool

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array], _) -> tuple[tuple[jax.Array, jax.Array],
                                                                      jax.Array]:
    h_ms, h_ls = _fusion_layer(*carry, ("lift", "critic", "fusion"), num_heads=self.num_heads,
                               mlp_dim=self.mlp_dim, fourier_hidden=self.fourier_hidden,
                               fourier=self.fourier, fourier_norm=self.fourier_norm,
                               attention_scale=self.attention_scale,
                               dropout_rate=self.dropout_rate,
                               dtype=self.dtype, remat=self.remat, train=self.train)
    return (h_ms, h_ls), h_ls


class LIFTNet(nn.Module):
  """LIFT-Net (see the module docstring)."""
  num_classes: int = 11
  vit: str = "vit_b16"                  # darkjax.models.vit variant of the PViT
  vit_blocks: int = 5                   # PViT = its first blocks
  pvit_norm: bool = True                # the ViT's final LayerNorm on block vit_blocks's output
  pvit_gelu_approximate: bool = False   # the PViT's GELU: tanh (True) or erf, as its weights' was
  luminous: str = "r2plus1d_34_ig65m"   # darkjax.models.video_resnet variant (r3d_18: ablation)
  embed_dim: int = 512
  num_heads: int = 8
  num_layers: int = 4                   # N repeats of LIFT + Critic + Fusion
  mlp_dim: int = 2048                   # Critic MLP
  fourier_hidden: int = 0               # FoE spectrum MLP width (0: embed_dim)
  fourier: bool = True                  # False: fusion without FoE (ablation)
  fourier_norm: str = "spectrum"        # FoE LayerNorm: spectrum (the paper's) | tokens | none
  attention_scale: str = "head_dim"     # Eq. (1)'s divisor: sqrt(head_dim) | heads: sqrt(N_AH)
  luminous_tokens: Sequence[int] = (4, 2, 2)
  position_embeddings: bool = True
  head_dim: int = 0                     # head hidden width (0: embed_dim)
  dropout_rate: float = 0.1
  luminous_frozen: bool = False         # teacher-shared backbone: eval-mode BN, no gradient
  frozen_luminous_splits: int = 1       # frozen backbone: batch parts run one after the other
  pvit_frozen: bool = False             # no gradient into the PViT (vit_trainable=none)
  attention: str = "auto"               # the PViT's: auto (cuDNN fused on GPU) | xla | cudnn
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  scan_layers: bool = True   # the N layers as one nn.scan (parameters stacked under `layers`)

  def _check(self, x: jax.Array, luminous: jax.Array) -> None:
    if self.vit not in vit.VARIANTS:
      raise ValueError(f"LIFTNet.vit {self.vit!r} unknown; known: {sorted(vit.VARIANTS)}")
    if self.luminous not in video_resnet.VARIANTS:
      raise ValueError(f"LIFTNet.luminous {self.luminous!r} unknown; known: "
                       f"{sorted(video_resnet.VARIANTS)}")
    if x.ndim != 5 or luminous.ndim != 5 or luminous.shape[0] != x.shape[0]:
      raise ValueError(f"LIFTNet expects NDHWC dark and luminous clips with one batch size; got "
                       f"{x.shape} and {luminous.shape}")
    if len(self.luminous_tokens) != 3:
      raise ValueError(f"LIFTNet.luminous_tokens must be (t, h, w); got {self.luminous_tokens}")

  def _main_stream(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    pvit = vit.VARIANTS[self.vit](num_classes=0, num_blocks=self.vit_blocks, dtype=self.dtype,
                                  final_norm=self.pvit_norm, remat=self.remat,
                                  attention=self.attention,
                                  gelu_approximate=self.pvit_gelu_approximate, name="pvit")
    _, pvit_out = pvit(x, train=train)
    cls = pvit_out["features"]  # (B, T, D_vit): class token per frame
    if self.pvit_frozen:
      cls = jax.lax.stop_gradient(cls)
    h = precision.Dense(self.embed_dim, dtype=self.dtype, name="main_projection_0")(cls)
    h = precision.Dense(self.embed_dim, dtype=self.dtype, name="main_projection_1")(
        nn.gelu(h, approximate=False))
    h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="main_projection_norm")(h)
    if self.position_embeddings:
      h = PositionEmbedding(name="main_position")(h)
    return cls, h

  def _luminous_stream(self, clip: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    backbone = video_resnet.VARIANTS[self.luminous](num_classes=0, dtype=self.dtype,
                                                    remat=self.remat, name="luminous")
    splits = self.frozen_luminous_splits
    if (self.luminous_frozen and not self.is_initializing() and splits > 1
        and clip.shape[0] % splits == 0):
      fmap, features = self._frozen_forward_in_splits(backbone, clip, splits)
    else:
      _, lum_out = backbone(clip, train=train and not self.luminous_frozen)
      fmap, features = lum_out["stage4"], lum_out["features"]
    if self.luminous_frozen:
      fmap, features = jax.lax.stop_gradient(fmap), jax.lax.stop_gradient(features)
    pooled = adaptive_avg_pool(fmap.astype(jnp.float32), self.luminous_tokens, (1, 2, 3))
    tokens = pooled.reshape(pooled.shape[0], -1, pooled.shape[-1]).astype(self.dtype)
    h = precision.Dense(self.embed_dim, dtype=self.dtype, name="luminous_projection")(tokens)
    h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="luminous_projection_norm")(h)
    if self.position_embeddings:
      h = PositionEmbedding(name="luminous_position")(h)
    return features, h

  @staticmethod
  def _frozen_forward_in_splits(backbone: nn.Module, clip: jax.Array,
                                splits: int) -> tuple[jax.Array, jax.Array]:
    """The frozen backbone (eval mode, no gradient) over the batch in `splits` parts, one after
    the other in a `lax.map`: the same outputs as one call, with one part's frame-resolution
    feature maps alive instead of the whole batch's (its layer-1 maps are the step's largest
    transient buffers). Part i holds clips i, i + splits, i + 2 splits, ...: when `splits` divides
    the per-device batch, every part keeps the batch's data-parallel sharding."""
    variables = jax.lax.stop_gradient(dict(backbone.variables))
    unbound = backbone.clone(parent=None)

    def forward(clips):
      _, out = unbound.apply(variables, clips, train=False)
      return out["stage4"], out["features"]

    batch = clip.shape[0]
    parts = jnp.swapaxes(clip.reshape((batch // splits, splits) + clip.shape[1:]), 0, 1)
    fmap, features = jax.lax.map(forward, parts)
    def merge(y):
      return jnp.swapaxes(y, 0, 1).reshape((batch,) + y.shape[2:])
    return merge(fmap), merge(features)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               luminous: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    luminous = x if luminous is None else luminous
    self._check(x, luminous)
    out: dict[str, jax.Array] = {}
    out["pvit_cls"], h_ms = self._main_stream(x.astype(self.dtype), train)
    out["luminous_features"], h_ls = self._luminous_stream(luminous.astype(self.dtype), train)
    out["main_tokens"], out["luminous_tokens"] = h_ms, h_ls
    layer = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                 fourier_hidden=self.fourier_hidden, fourier=self.fourier,
                 fourier_norm=self.fourier_norm, attention_scale=self.attention_scale,
                 dropout_rate=self.dropout_rate, dtype=self.dtype, remat=self.remat, train=train)
    if self.scan_layers:
      stack = scanned(FusionLayer, variable_axes={"params": 0, "intermediates": 0},
                      split_rngs={"params": True, "dropout": True}, length=self.num_layers)
      (h_ms, h_ls), stages = stack(name="layers", **layer)((h_ms, h_ls), None)
      for index in range(self.num_layers):
        out[f"stage{index + 1}"] = stages[index]
    else:
      for index in range(self.num_layers):
        h_ms, h_ls = _fusion_layer(h_ms, h_ls, (f"lift_{index}", f"critic_{index}",
                                                f"fusion_{index}"), **layer)
        out[f"stage{index + 1}"] = h_ls
    features = jnp.mean(h_ls.astype(jnp.float32), axis=1)
    out["features"] = features
    lum_width = out["luminous_features"].shape[-1]
    out["hidden"] = features if lum_width == self.embed_dim else precision.Dense(
        lum_width, dtype=self.dtype, name="hidden_projection")(features).astype(jnp.float32)
    if not self.num_classes:
      return features, out
    y = precision.Dense(self.head_dim or self.embed_dim, dtype=self.dtype, name="head_0")(features)
    y = nn.gelu(y, approximate=False)
    y = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name="head_bn")(y)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    logits = precision.Dense(self.num_classes, dtype=self.dtype, name="head_1")(y)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    out["logits"] = logits
    return logits, out


# ------------------------------------------------------------------ teacher, freezing, pretrained

def teacher_model(student: LIFTNet, num_classes: int) -> nn.Module:
  """The KD teacher: the student's luminous backbone with a `num_classes` head (`fc`)."""
  return video_resnet.VARIANTS[student.luminous](num_classes=num_classes, dtype=student.dtype,
                                                 remat=student.remat)


def frozen_patterns(vit_trainable: str, luminous_frozen: bool) -> tuple[str, ...]:
  """Regexes of frozen parameter paths (darkjax.optim `optimizer.frozen`).

  vit_trainable: `first` trains only PViT block 0 (patch embedding, class token, position
  embedding, blocks 1.. and the final PViT LayerNorm stay fixed), `none` freezes the whole PViT,
  `all` trains it. `luminous_frozen` freezes the luminous backbone (KD: it is the teacher's copy).
  """
  if vit_trainable not in VIT_TRAINABLE:
    raise ValueError(f"vit_trainable {vit_trainable!r} unknown; valid: {VIT_TRAINABLE}")
  patterns = {"first": (r"^pvit/(?!Transformer/encoderblock_0/)",), "none": (r"^pvit/",),
              "all": ()}[vit_trainable]
  return patterns + ((r"^luminous/",) if luminous_frozen else ())


def merge_teacher(variables: Mapping[str, Any], teacher: Mapping[str, Any]) -> dict:
  """Student variables with the teacher's backbone (params without `fc`, batch_stats) as
  `luminous`."""
  out = variables_lib.merge_subtree(variables, "params", "luminous", teacher["params"], "teacher params",
                      skip=("fc",))
  if "batch_stats" in teacher:
    out = variables_lib.merge_subtree(out, "batch_stats", "luminous", teacher["batch_stats"],
                        "teacher batch_stats")
  return out


_TINY_TEST = dict(vit="vit_tiny_test", vit_blocks=2, luminous="r2plus1d_tiny_test", embed_dim=32,
                  num_heads=4, num_layers=2, mlp_dim=64, luminous_tokens=(2, 1, 1))

VARIANTS = {
    "liftnet_small": functools.partial(LIFTNet, num_layers=4),
    "liftnet_medium": functools.partial(LIFTNet, num_layers=6),
    "liftnet_large": functools.partial(LIFTNet, num_layers=8),
    # Every feature of the full model at toy size (tests, CPU smoke runs).
    "liftnet_tiny_test": functools.partial(LIFTNet, **_TINY_TEST),
}
