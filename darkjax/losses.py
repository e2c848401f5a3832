"""Losses: classification, Zero-DCE / DTCM enhancement losses, distillation and contrastive losses.

Images are channels-last (N, H, W, 3) in [0, 1]; clips are (B, T, H, W, 3). Every loss returns a
scalar. Where the Zero-DCE paper and its official code (Li-Chongyi/Zero-DCE `Myloss.py`,
`lowlight_train.py`) disagree, `variant="paper"|"official"` selects the form:

  term           paper                                   official code
  spatial        (|dY| - |dI|)^2, in-image neighbours    (dI - dY)^2, zero padding at the border
  exposure       mean |Y_k - E|                          mean (Y_k - E)^2
  colour         sum_(p,q) (J^p - J^q)^2                 sqrt(sum_(p,q) ((J^p - J^q)^2)^2)
  illumination   mean (|grad_x A| + |grad_y A|)^2        2 (mean (grad_h A)^2 + mean (grad_w A)^2)
                 summed over RGB, averaged over iterations        summed over all map channels
  weights        spa 1, exp 1, col 0.5, tvA 20           spa 1, exp 10, col 5, tvA 200

DTCM (Tu et al., TIP 2023) replaces the spatial term for clips by L_STC = L_SC + L_TC (Eq. 4):
spatial consistency with 8 neighbours averaged over frames (Eqs. 1-2) plus the same operator on the
absolute RGB differences of adjacent frames (Eq. 3).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VARIANTS = ("paper", "official")
# How l1_feature_loss reduces over the feature entries.
L1_REDUCTIONS = ("sum", "mean")
ZERO_DCE_WEIGHTS = {
    "paper": {"spatial": 1.0, "exposure": 1.0, "colour": 0.5, "illumination": 20.0,
              "temporal": 1.0},
    "official": {"spatial": 1.0, "exposure": 10.0, "colour": 5.0, "illumination": 200.0,
                 "temporal": 1.0},
}
NEIGHBOURS = {
    4: ((0, -1), (0, 1), (-1, 0), (1, 0)),
    8: ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)),
}


def _check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise ValueError(f"unknown loss variant {variant!r}; expected one of {VARIANTS}")


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.mean(values)
  mask = jnp.asarray(mask, values.dtype)
  total = jnp.sum(mask)
  # A batch made only of padding gives 0, without a 0/0 in the gradient.
  return jnp.where(total > 0, jnp.sum(values * mask) / jnp.where(total > 0, total, 1.0), 0.0)


# ----------------------------------------------------------------------------------- classification

def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0,
                          mask: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy of (N, K) logits against integer labels (N,), over rows with mask != 0.

  Label smoothing mixes the one-hot target with the uniform distribution: (1 - eps) y + eps / K.
  """
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  targets = jax.nn.one_hot(labels, num_classes, dtype=log_probs.dtype)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return _masked_mean(-jnp.sum(targets * log_probs, axis=-1), mask)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array,
                                 mask: jax.Array | None = None) -> jax.Array:
  """Mean binary cross-entropy with logits (numerically stable), labels in [0, 1]."""
  logits = logits.astype(jnp.float32)
  labels = jnp.asarray(labels, jnp.float32)
  losses = -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))
  return _masked_mean(losses, mask)


# --------------------------------------------------------------------------------------- Zero-DCE

def _as_frames(x: jax.Array, name: str) -> jax.Array:
  """(..., H, W, C) -> (N, H, W, C)."""
  if x.ndim < 3:
    raise ValueError(f"{name}: expected (..., H, W, C), got shape {x.shape}")
  return x.reshape((-1,) + x.shape[-3:])


def _region_means(x: jax.Array, region: int) -> jax.Array:
  """Channel mean, then non-overlapping region x region average pooling: (N, h, w)."""
  if x.shape[-3] < region or x.shape[-2] < region:
    raise ValueError(f"frames of {x.shape[-3]} x {x.shape[-2]} are smaller than the loss's "
                     f"{region} x {region} regions (its mean over no region is NaN): give larger "
                     f"crops")
  y = jnp.mean(x, axis=-1, keepdims=True)
  return nn.avg_pool(y, (region, region), strides=(region, region))[..., 0]


def _neighbour_differences(y: jax.Array, offset: tuple[int, int], zero_padded: bool):
  """y_i - y_(i+offset) on the positions where it is defined, and the validity mask."""
  dy, dx = offset
  padded = jnp.pad(y, ((0, 0), (1, 1), (1, 1)))
  h, w = y.shape[1:]
  shifted = padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  valid = jnp.pad(jnp.ones((h, w), bool), 1)[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  return y - shifted, (jnp.ones_like(valid) if zero_padded else valid)


def spatial_consistency_loss(enhanced: jax.Array, original: jax.Array, neighbours: int = 4,
                             region: int = 4, variant: str = "paper") -> jax.Array:
  """Zero-DCE L_spa on images (N, H, W, 3): keep the contrast between neighbouring regions.

  Y, I are the channel-averaged enhanced / original images pooled over region x region blocks
  (K blocks per image). paper: 1/K sum_i sum_(j in N(i)) (|Y_i - Y_j| - |I_i - I_j|)^2 over
  neighbours inside the image; official: the same sum with (I_i - I_j) - (Y_i - Y_j) and blocks
  outside the image counted as 0 (zero padding). Averaged over images. `neighbours` is 4
  (left/right/up/down, Zero-DCE) or 8 (adds diagonals, DTCM).
  """
  _check_variant(variant)
  if neighbours not in NEIGHBOURS:
    raise ValueError(f"spatial_consistency_loss: neighbours must be 4 or 8, got {neighbours}")
  if enhanced.shape != original.shape:
    raise ValueError(f"spatial_consistency_loss: enhanced {enhanced.shape} vs original "
                     f"{original.shape}")
  y = _region_means(_as_frames(enhanced, "spatial_consistency_loss"), region)
  i = _region_means(_as_frames(original, "spatial_consistency_loss"), region)
  total = 0.0
  for offset in NEIGHBOURS[neighbours]:
    d_y, valid = _neighbour_differences(y, offset, zero_padded=variant == "official")
    d_i, _ = _neighbour_differences(i, offset, zero_padded=variant == "official")
    term = (d_i - d_y) ** 2 if variant == "official" else (jnp.abs(d_y) - jnp.abs(d_i)) ** 2
    total = total + jnp.where(valid, term, 0.0)
  return jnp.mean(total)


def video_spatial_consistency_loss(enhanced: jax.Array, original: jax.Array, neighbours: int = 8,
                                   region: int = 4, variant: str = "paper") -> jax.Array:
  """DTCM L_SC on clips (B, T, H, W, 3): the image spatial loss averaged over all frames."""
  if enhanced.ndim != 5:
    raise ValueError(f"video_spatial_consistency_loss: expected (B, T, H, W, C), got "
                     f"{enhanced.shape}")
  return spatial_consistency_loss(enhanced, original, neighbours, region, variant)


def temporal_consistency_loss(enhanced: jax.Array, original: jax.Array, neighbours: int = 8,
                              region: int = 4, variant: str = "paper") -> jax.Array:
  """DTCM L_TC, Eq. (3), on clips (B, T, H, W, 3).

  L_TC = 1/(T-1) sum_t L_SCF(|DY_(t+1) - DY_t|, |DI_(t+1) - DI_t|): the spatial consistency
  operator of Eq. (1) (region x region blocks, `neighbours` neighbours) applied to the RGB
  differences of adjacent frames of the enhanced clip (DY) against those of the dark clip (DI),
  averaged over the T-1 frame pairs and the batch. The enhanced clip's temporal variation should
  keep the dark clip's local structure; a clip brightened uniformly over time scores 0.
  """
  if enhanced.ndim != 5 or enhanced.shape != original.shape:
    raise ValueError(f"temporal_consistency_loss: expected two equal (B, T, H, W, C) clips, got "
                     f"{enhanced.shape} and {original.shape}")
  if enhanced.shape[1] < 2:
    raise ValueError("temporal_consistency_loss: clips need at least 2 frames")
  d_y = jnp.abs(jnp.diff(enhanced, axis=1))
  d_i = jnp.abs(jnp.diff(original, axis=1))
  return spatial_consistency_loss(d_y, d_i, neighbours, region, variant)


def spatio_temporal_consistency_loss(enhanced: jax.Array, original: jax.Array,
                                     neighbours: int = 8, region: int = 4,
                                     variant: str = "paper") -> jax.Array:
  """DTCM L_STC = L_SC + L_TC, Eq. (4), on clips (B, T, H, W, 3)."""
  return (video_spatial_consistency_loss(enhanced, original, neighbours, region, variant)
          + temporal_consistency_loss(enhanced, original, neighbours, region, variant))


def exposure_control_loss(enhanced: jax.Array, patch: int = 16, level: float = 0.6,
                          variant: str = "paper") -> jax.Array:
  """Zero-DCE L_exp: distance of patch x patch mean intensities to the well-exposedness level E."""
  _check_variant(variant)
  y = _region_means(_as_frames(enhanced, "exposure_control_loss"), patch)
  d = y - level
  return jnp.mean(jnp.abs(d) if variant == "paper" else d * d)


def _safe_sqrt(x: jax.Array) -> jax.Array:
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def colour_constancy_loss(enhanced: jax.Array, variant: str = "paper") -> jax.Array:
  """Zero-DCE L_col on the per-image channel means J^R, J^G, J^B, averaged over images.

  paper: sum over (R,G), (R,B), (G,B) of (J^p - J^q)^2. official: sqrt of the sum of the squares of
  those squared differences.
  """
  _check_variant(variant)
  means = jnp.mean(_as_frames(enhanced, "colour_constancy_loss"), axis=(1, 2))
  if means.shape[-1] != 3:
    raise ValueError(f"colour_constancy_loss: expected 3 channels, got {means.shape[-1]}")
  r, g, b = means[:, 0], means[:, 1], means[:, 2]
  squared = jnp.stack([(r - g) ** 2, (r - b) ** 2, (g - b) ** 2], axis=-1)
  if variant == "paper":
    return jnp.mean(jnp.sum(squared, axis=-1))
  return jnp.mean(_safe_sqrt(jnp.sum(squared ** 2, axis=-1)))


def illumination_smoothness_loss(curve_maps: jax.Array, variant: str = "paper",
                                 channels_per_iteration: int = 3) -> jax.Array:
  """Zero-DCE L_tvA on curve maps (..., H, W, 3 n), averaged over maps (see module table)."""
  _check_variant(variant)
  a = _as_frames(curve_maps, "illumination_smoothness_loss")
  grad_h = a[:, 1:, :, :] - a[:, :-1, :, :]
  grad_w = a[:, :, 1:, :] - a[:, :, :-1, :]
  if variant == "official":
    per_map = 2.0 * (jnp.sum(jnp.mean(grad_h ** 2, axis=(1, 2)), -1)
                     + jnp.sum(jnp.mean(grad_w ** 2, axis=(1, 2)), -1))
    return jnp.mean(per_map)
  if a.shape[-1] % channels_per_iteration:
    raise ValueError(f"illumination_smoothness_loss: {a.shape[-1]} map channels is not a "
                     f"multiple of {channels_per_iteration}")
  iterations = a.shape[-1] // channels_per_iteration
  tv = (jnp.abs(grad_w[:, :-1, :, :]) + jnp.abs(grad_h[:, :, :-1, :])) ** 2
  return jnp.sum(jnp.mean(tv, axis=(0, 1, 2))) / iterations


def zero_dce_loss(enhanced: jax.Array, original: jax.Array, curve_maps: jax.Array,
                  variant: str = "paper", weights: Mapping[str, float] | None = None,
                  neighbours: int | None = None, exposure_level: float = 0.6,
                  exposure_patch: int = 16, spatial_region: int = 4):
  """Zero-DCE non-reference loss; for clips (B, T, H, W, 3) the spatial term becomes DTCM's L_STC.

  Args:
    enhanced, original: images (N, H, W, 3) or clips (B, T, H, W, 3) in [0, 1].
    curve_maps: the enhancer's curve maps (any leading dims).
    variant: "paper" or "official": loss forms and default weights (see the module table).
    weights: overrides of the variant's weights, keys among spatial/temporal/exposure/colour/
      illumination.
    neighbours: spatial neighbours, default 4 for images (Zero-DCE) and 8 for clips (DTCM).

  Returns:
    (total, {"spatial", ["temporal",] "exposure", "colour", "illumination"}: unweighted terms).
  """
  _check_variant(variant)
  table = dict(ZERO_DCE_WEIGHTS[variant])
  unknown = set(weights or {}) - set(table)
  if unknown:
    raise ValueError(f"zero_dce_loss: unknown weight keys {sorted(unknown)}; known: "
                     f"{sorted(table)}")
  table.update(weights or {})
  video = enhanced.ndim == 5
  neighbours = neighbours or (8 if video else 4)
  terms: dict[str, Any] = {}
  if video:
    terms["spatial"] = video_spatial_consistency_loss(enhanced, original, neighbours,
                                                      spatial_region, variant)
    terms["temporal"] = temporal_consistency_loss(enhanced, original, neighbours,
                                                  spatial_region, variant)
  else:
    terms["spatial"] = spatial_consistency_loss(enhanced, original, neighbours, spatial_region,
                                                variant)
  terms["exposure"] = exposure_control_loss(enhanced, exposure_patch, exposure_level, variant)
  terms["colour"] = colour_constancy_loss(enhanced, variant)
  terms["illumination"] = illumination_smoothness_loss(curve_maps, variant)
  total = sum(table[name] * value for name, value in terms.items())
  return total, terms


# ---------------------------------------------------------------------------- distillation, contrast

def l1_feature_loss(student: jax.Array, teacher: jax.Array, stop_teacher_gradient: bool = True,
                    reduction: str = "sum") -> jax.Array:
  """L1 distance between student and teacher vectors (B, D) of equal shape, batch mean.

  reduction "sum": sum_i |h1_i - h2_i| over the D entries (LIFT-Net Eq. 6 as written); "mean":
  the mean over them (D times weaker against the cross-entropy).
  """
  if student.shape != teacher.shape:
    raise ValueError(f"l1_feature_loss: student {student.shape} vs teacher {teacher.shape}")
  if reduction not in L1_REDUCTIONS:
    raise ValueError(f"l1_feature_loss: reduction {reduction!r} unknown; valid: {L1_REDUCTIONS}")
  if stop_teacher_gradient:
    teacher = jax.lax.stop_gradient(teacher)
  diff = jnp.abs(student.astype(jnp.float32) - teacher.astype(jnp.float32))
  per_example = diff.reshape(diff.shape[0], -1) if diff.ndim > 1 else diff[None]
  reduce = jnp.sum if reduction == "sum" else jnp.mean
  return jnp.mean(reduce(per_example, axis=-1))


def kd_kl_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0,
               stop_teacher_gradient: bool = True) -> jax.Array:
  """Hinton distillation: T^2 KL(softmax(t / T) || softmax(s / T)), class sum, batch mean."""
  if stop_teacher_gradient:
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
  t = temperature
  log_p_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
  log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  return t * t * jnp.mean(kl)


def _l2_normalise(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def supcon_loss(features: jax.Array, labels: jax.Array, temperature: float = 0.07,
                base_temperature: float | None = None, normalize: bool = True) -> jax.Array:
  """Supervised contrastive loss (Khosla et al. 2020, L_out).

  Args:
    features: (N, D) embeddings, or (N, V, D) with V views per sample (flattened to N V anchors).
    labels: (N,) integer labels; samples with equal labels are positives of each other.
    temperature: softmax temperature tau.
    base_temperature: the reference code scales the loss by tau / base_temperature; None = 1.
    normalize: L2-normalise the features first.

  For anchor i with positives P(i) (same label, j != i) and all others A(i):
  l_i = -1/|P(i)| sum_(p in P(i)) log(exp(z_i.z_p / tau) / sum_(a in A(i)) exp(z_i.z_a / tau)),
  averaged over the anchors that have at least one positive.
  """
  if features.ndim == 3:
    views = features.shape[1]
    labels = jnp.repeat(labels, views)
    features = features.reshape((-1, features.shape[-1]))
  if features.ndim != 2 or labels.shape != features.shape[:1]:
    raise ValueError(f"supcon_loss: features {features.shape} and labels {labels.shape} do not "
                     f"match ((N, D) with (N,) or (N, V, D) with (N,))")
  z = _l2_normalise(features) if normalize else features.astype(jnp.float32)
  n = z.shape[0]
  logits = z @ z.T / temperature
  not_self = ~jnp.eye(n, dtype=bool)
  logits = jnp.where(not_self, logits, -jnp.inf)
  log_prob = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  positives = (labels[:, None] == labels[None, :]) & not_self
  num_positives = jnp.sum(positives, axis=-1)
  mean_log_prob = (jnp.sum(jnp.where(positives, log_prob, 0.0), axis=-1)
                   / jnp.maximum(num_positives, 1))
  scale = 1.0 if base_temperature is None else temperature / base_temperature
  return -scale * _masked_mean(mean_log_prob, num_positives > 0)


def nt_xent_loss(z1: jax.Array, z2: jax.Array, temperature: float = 0.5) -> jax.Array:
  """SimCLR NT-Xent: views z1[k], z2[k] are positives; the other 2N - 2 samples are negatives.

  Cosine similarities over the 2N samples; mean over all 2N anchors of
  -log(exp(s_(i,pos) / tau) / sum_(k != i) exp(s_(i,k) / tau)).
  """
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f"nt_xent_loss: expected two (N, D) arrays, got {z1.shape} and {z2.shape}")
  n = z1.shape[0]
  z = _l2_normalise(jnp.concatenate([z1, z2], axis=0))
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_prob = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  return -jnp.mean(log_prob[jnp.arange(2 * n), positive])


# ---------------------------------------------------------------- discriminative code (two-stream C3D)
def p_hot_codes(num_classes: int, code_size: int, spare_classes=None) -> np.ndarray:
  """(m, N) float32 target codes of Jiang et al.'s discriminative code layer (eq. 7).

  With N = p m + r (0 <= r < m), class k (0-based) owns neurons [p k, p (k + 1)); the r spare
  neurons p m .. N - 1 go one each to `spare_classes[i]` (class indices, r of them; default: the
  first r classes). The paper gives spare neurons "to classes with high intra-class appearance
  variations" without naming them, so the config names them. Raises for N < m.
  """
  if code_size < num_classes:
    raise ValueError(f"discriminative code: code size N={code_size} < {num_classes} classes; every "
                     f"class needs at least one neuron: set model.kwargs.code_size >= {num_classes}")
  per_class, spare = divmod(code_size, num_classes)
  spare_classes = tuple(range(spare)) if spare_classes is None else tuple(spare_classes)
  if len(spare_classes) != spare:
    raise ValueError(f"discriminative code: N={code_size} = {per_class} x {num_classes} + {spare} "
                     f"leaves {spare} spare neurons, but spare_classes names {len(spare_classes)} "
                     f"classes {list(spare_classes)}; name exactly {spare} (or leave it empty for "
                     f"the first {spare})")
  bad = [c for c in spare_classes if not 0 <= int(c) < num_classes]
  if bad:
    raise ValueError(f"discriminative code: spare_classes {bad} outside 0..{num_classes - 1}")
  codes = np.zeros((num_classes, code_size), np.float32)
  for k in range(num_classes):
    codes[k, per_class * k:per_class * (k + 1)] = 1.0
  for i, k in enumerate(spare_classes):
    codes[int(k), per_class * num_classes + i] = 1.0
  return codes


def dcl_loss(codes: jax.Array, targets: jax.Array) -> jax.Array:
  """L_d = ||q - A x||^2 (eq. 7): squared error summed over the N code neurons, mean over the batch.
  codes: (B, N) predicted codes A x; targets: (B, N) p-hot codes q of the labels."""
  if codes.shape != targets.shape:
    raise ValueError(f"dcl_loss: codes {codes.shape} and targets {targets.shape} differ")
  diff = codes.astype(jnp.float32) - targets.astype(jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(diff), axis=-1))
