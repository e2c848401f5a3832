"""Train-time video augmentations on device, on (B, T, H, W, C) uint8 stream dicts.

`augment(streams, labels, rng, cfg)` applies, per `cfg` (a mapping with every key of `SETTINGS`,
e.g. LIFT-Net's `config.lift.augment`, built by `configs.common.augment_block`; 0 turns a step off):
colour jitter and random rain (the `video` stream only); one geometric warp per clip shared by all
streams, composed of elastic distortion, optical (radial lens) distortion and a random affine map
(scale, translation, rotation, shear; an optical-flow stream's vectors go through the affine map's
linear part too, see darkjax/data/flow.py); CutMix (the partner clip is the batch neighbour) and
frame shuffle. It returns the streams, the partner labels and the label weight of the first clip,
so a loss can mix `w CE(y) + (1 - w) CE(y_partner)`. Horizontal flips happen in the host pipeline
(darkjax/data/ops.py), which also negates a flipped flow stream's x.

The distortions follow the common image-augmentation definitions (albumentations'
OpticalDistortion, ElasticTransform, RandomRain), written for clips on device:
- optical distortion: out(p) = in(c + (p - c)(1 + k r^2)), r = |p - c| / W, k uniform in
  [-optical_distortion, optical_distortion] per clip (k > 0 barrel-like, k < 0 pincushion-like);
- elastic distortion: a smooth random displacement field, uniform offsets in [-1, 1] on a 4 x 4
  grid bilinearly up-sampled to the frame and scaled by `elastic` x W pixels (a coarse-grid form of
  Simard's Gaussian-smoothed field); flow vectors move with their pixels but are not re-oriented;
- random rain (probability `rain` per clip): ~H W / 600 one-pixel streaks of length H / 10 and a
  slant in [-10, 10] degrees, falling H / 20 pixels per frame (wrapping at the bottom), drawn in
  light grey (200) over the frame darkened by 0.7; no blur.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from darkjax.data import flow

# Every key `augment` reads; configs.common.augment_block gives their defaults.
SETTINGS = ("colour_jitter", "affine", "rotation", "shear", "optical_distortion", "elastic", "rain",
            "cutmix", "frame_shuffle")
GEOMETRIC = ("affine", "rotation", "shear", "optical_distortion", "elastic")
ELASTIC_GRID = 4
RAIN_DENSITY, RAIN_LENGTH, RAIN_FALL, RAIN_SLANT = 1 / 600, 0.1, 0.05, 10.0
RAIN_COLOUR, RAIN_DARKEN = 200.0, 0.7


def affine_matrix(scale: jax.Array, rotation_deg: jax.Array, shear_deg: jax.Array) -> jax.Array:
  """(..., 2, 2) linear part acting on (x, y) pixel offsets from the centre, y pointing down:
  scale * R(rotation) @ [[1, tan(shear)], [0, 1]]. Positive rotations turn the image
  counter-clockwise on screen (as torchvision's RandomAffine); positive shear moves the rows below
  the centre to the right."""
  theta, phi = jnp.deg2rad(rotation_deg), jnp.deg2rad(shear_deg)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rotate = jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)
  one, zero = jnp.ones_like(phi), jnp.zeros_like(phi)
  shear = jnp.stack([jnp.stack([one, jnp.tan(phi)], -1), jnp.stack([zero, one], -1)], -2)
  return scale[..., None, None] * rotate @ shear


def _pixel_grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """(H, W, 2) pixel positions as (x, y), and the image centre ((W - 1) / 2, (H - 1) / 2)."""
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  return jnp.stack([xs, ys], -1), jnp.array([(width - 1) / 2.0, (height - 1) / 2.0])


def inverse_2x2(matrix: jax.Array) -> jax.Array:
  """The inverse of (..., 2, 2) matrices by the adjugate over the determinant: elementwise, where
  `jnp.linalg.inv` is an LU factorisation and triangular solves (cuSOLVER / cuBLAS calls in a GPU
  step, five custom calls in a TPU one) for the augmentations' per-clip 2 x 2 matrices."""
  a, b = matrix[..., 0, 0], matrix[..., 0, 1]
  c, d = matrix[..., 1, 0], matrix[..., 1, 1]
  adjugate = jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)], -2)
  return adjugate / (a * d - b * c)[..., None, None]


def affine_source(points: jax.Array, centre: jax.Array, matrix: jax.Array,
                  shift: jax.Array) -> jax.Array:
  """q with p - c = matrix @ (q - c) + shift, for points p (..., 2) as (x, y)."""
  return (points - centre - shift) @ inverse_2x2(matrix).T + centre


def sample(clip: jax.Array, source: jax.Array, fill: float = 0.0) -> jax.Array:
  """out(p) = clip(source(p)) for a (T, H, W, C) float clip, every frame alike, by bilinear
  sampling; `source` is (H, W, 2) as (x, y) pixel positions; outside the input: `fill`."""
  rows_cols = [source[..., 1], source[..., 0]]
  # order=1 with mode="constant" is bilinear sampling with `fill` outside the image.
  one = lambda image: jax.scipy.ndimage.map_coordinates(image, rows_cols, order=1,
                                                         mode="constant", cval=fill)
  return jax.vmap(jax.vmap(one, in_axes=-1, out_axes=-1))(clip)   # over frames and channels


def warp_affine(clip: jax.Array, matrix: jax.Array, shift: jax.Array,
                fill: float = 0.0) -> jax.Array:
  """Bilinear warp of one (T, H, W, C) float clip, every frame alike: out(p) = in(q) with
  p - c = matrix @ (q - c) + shift, c the image centre ((W - 1) / 2, (H - 1) / 2) in (x, y) pixel
  indices, shift (x, y) in pixels. Pixels from outside the input are `fill`."""
  points, centre = _pixel_grid(*clip.shape[1:3])
  return sample(clip, affine_source(points, centre, matrix, shift), fill)


def optical_source(points: jax.Array, centre: jax.Array, k: jax.Array, width: int) -> jax.Array:
  """Radial lens distortion: c + (p - c)(1 + k r^2) with r = |p - c| / width."""
  offset = points - centre
  r2 = jnp.sum(jnp.square(offset / width), -1, keepdims=True)
  return centre + offset * (1.0 + k * r2)


def elastic_displacement(rng: jax.Array, height: int, width: int, alpha: float) -> jax.Array:
  """(H, W, 2) smooth displacement in pixels: uniform [-1, 1] offsets on an ELASTIC_GRID^2 grid,
  bilinearly up-sampled to the frame, times alpha * width."""
  coarse = jax.random.uniform(rng, (ELASTIC_GRID, ELASTIC_GRID, 2), minval=-1.0, maxval=1.0)
  return jax.image.resize(coarse, (height, width, 2), "linear") * (alpha * width)


def rain_mask(rng: jax.Array, frames: int, height: int, width: int) -> jax.Array:
  """(T, H, W, 1) in {0, 1}: slanted one-pixel streaks falling RAIN_FALL * H pixels per frame,
  drawn by scattering each streak's pixels (drops x length points per frame)."""
  k_pos, k_slant = jax.random.split(rng)
  drops = max(1, round(height * width * RAIN_DENSITY))
  length = max(2, round(height * RAIN_LENGTH))
  heads = jax.random.uniform(k_pos, (drops, 2)) * jnp.array([width, height])
  slant = jnp.tan(jnp.deg2rad(jax.random.uniform(k_slant, (), minval=-RAIN_SLANT,
                                                 maxval=RAIN_SLANT)))
  steps = jnp.arange(length, dtype=jnp.float32)

  def frame(t):
    y = heads[:, 1:2] + t * RAIN_FALL * height + steps[None]               # (D, L)
    x = heads[:, 0:1] + slant * steps[None]
    rows = jnp.mod(jnp.floor(y), height).astype(jnp.int32)
    cols = jnp.floor(x).astype(jnp.int32)
    inside = (cols >= 0) & (cols < width)
    canvas = jnp.zeros((height, width), jnp.float32)
    canvas = canvas.at[rows, jnp.clip(cols, 0, width - 1)].max(inside.astype(jnp.float32))
    return canvas[..., None]
  return jax.vmap(frame)(jnp.arange(frames, dtype=jnp.float32))


def transform_flow_vectors(flow_centred: jax.Array, matrix: jax.Array) -> jax.Array:
  """A warped flow clip (..., 3) with (x, y, magnitude) - 128: the (x, y) vectors go through the
  same linear map as the image (v -> matrix @ v), the magnitude becomes |matrix @ v|."""
  vectors = flow_centred[..., :2] @ matrix.T
  magnitude = jnp.sqrt(jnp.sum(jnp.square(vectors), -1, keepdims=True))
  return jnp.concatenate([vectors, magnitude], -1)


def random_affine(rng: jax.Array, batch: int, height: int, width: int,
                  cfg: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
  """Per clip (matrix (B, 2, 2), shift (B, 2) in (x, y) pixels): scale in [1 - a, 1 + a] and shift
  in [-a, a] * (W, H) with a = cfg.affine, rotation in [-cfg.rotation, cfg.rotation] degrees,
  shear in [-cfg.shear, cfg.shear] degrees, all uniform."""
  a, rotation, shear = cfg["affine"], cfg["rotation"], cfg["shear"]
  ks, kt = jax.random.split(rng)
  scale = jax.random.uniform(ks, (batch,), minval=1 - a, maxval=1 + a)
  shift = jax.random.uniform(kt, (batch, 2), minval=-a, maxval=a) * jnp.array([width, height])
  angle = jax.random.uniform(jax.random.fold_in(rng, 2), (batch,), minval=-rotation,
                             maxval=rotation)
  skew = jax.random.uniform(jax.random.fold_in(rng, 3), (batch,), minval=-shear, maxval=shear)
  return affine_matrix(scale, angle, skew), shift


def augment(streams: dict[str, jax.Array], labels: jax.Array, rng: jax.Array,
            cfg: Mapping[str, Any]) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
  """Colour jitter (video only), random affine, CutMix, frame shuffle on (B, T, H, W, C) uint8
  streams, the same geometry for every stream. Returns (streams, partner labels, label weight).

  Random affine (`affine`: scale and translation range, `rotation` and `shear`: degrees, see
  random_affine), optical distortion and elastic distortion (see the module docstring) warp every
  stream with the same per-clip map. The `flow` stream's vectors go through the affine map's linear
  part too, and pixels from outside the frame are zero motion (128); other streams' outside
  pixels are 0."""
  missing = [k for k in SETTINGS if k not in cfg]
  if missing:
    raise KeyError(f"augment: settings {missing} missing (configs.common.augment_block lists "
                   f"every key: {SETTINGS})")
  if not any(cfg[k] for k in SETTINGS):
    return dict(streams), labels, jnp.ones((), jnp.float32)
  k_jitter, k_affine, k_cut, k_shuffle = jax.random.split(rng, 4)
  k_optical, k_elastic, k_rain = (jax.random.fold_in(rng, i) for i in (11, 12, 13))
  x = {k: v.astype(jnp.float32) for k, v in streams.items()}
  batch, frames, height, width = x["video"].shape[:4]
  if cfg["colour_jitter"]:
    s = cfg["colour_jitter"]
    kb, kc = jax.random.split(k_jitter)
    bright = jax.random.uniform(kb, (batch, 1, 1, 1, 1), minval=1 - s, maxval=1 + s)
    contrast = jax.random.uniform(kc, (batch, 1, 1, 1, 1), minval=1 - s, maxval=1 + s)
    mean = jnp.mean(x["video"], axis=(1, 2, 3, 4), keepdims=True)
    x["video"] = (x["video"] - mean) * contrast + mean * bright
  if cfg["rain"]:
    masks = jax.vmap(lambda k: rain_mask(k, frames, height, width))(jax.random.split(k_rain, batch))
    apply = jax.random.uniform(jax.random.fold_in(k_rain, 1), (batch, 1, 1, 1, 1)) < cfg["rain"]
    rainy = jnp.where(masks > 0, RAIN_COLOUR, x["video"] * RAIN_DARKEN)
    x["video"] = jnp.where(apply, rainy, x["video"])
  if any(cfg[k] for k in GEOMETRIC):
    matrix, shift = random_affine(k_affine, batch, height, width, cfg)
    points, centre = _pixel_grid(height, width)
    source = jnp.broadcast_to(points, (batch,) + points.shape)
    if cfg["elastic"]:
      source = source + jax.vmap(lambda k: elastic_displacement(k, height, width, cfg["elastic"]))(
          jax.random.split(k_elastic, batch))
    if cfg["optical_distortion"]:
      k = jax.random.uniform(k_optical, (batch, 1, 1, 1), minval=-cfg["optical_distortion"],
                             maxval=cfg["optical_distortion"])
      source = optical_source(source, centre, k, width)
    source = jax.vmap(affine_source, in_axes=(0, None, 0, 0))(source, centre, matrix, shift)
    for name, value in x.items():
      if name == flow.STREAM:
        if value.shape[-1] != 3:
          raise ValueError(f"stream {name!r} must have 3 channels (x, y, magnitude), got "
                           f"{value.shape}")
        warped = jax.vmap(sample)(value - flow.ZERO, source)
        x[name] = jax.vmap(transform_flow_vectors)(warped, matrix) + flow.ZERO
      else:
        x[name] = jax.vmap(sample)(value, source)
  mixed_labels, mix = labels, jnp.ones((), jnp.float32)
  if cfg["cutmix"]:
    k_apply, k_lam, k_y, k_x = jax.random.split(k_cut, 4)
    lam = jax.random.uniform(k_lam)
    cut_h = jnp.round(height * jnp.sqrt(1 - lam)).astype(jnp.int32)
    cut_w = jnp.round(width * jnp.sqrt(1 - lam)).astype(jnp.int32)
    top = jax.random.randint(k_y, (), 0, height - cut_h + 1)
    left = jax.random.randint(k_x, (), 0, width - cut_w + 1)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    box = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    box = box & (jax.random.uniform(k_apply) < cfg["cutmix"])
    box = box[None, None, :, :, None]
    x = {k: jnp.where(box, jnp.roll(v, 1, axis=0), v) for k, v in x.items()}
    mixed_labels = jnp.roll(labels, 1, axis=0)
    mix = 1.0 - jnp.mean(box.astype(jnp.float32))
  if cfg["frame_shuffle"]:
    kp, kq = jax.random.split(k_shuffle)
    order = jax.vmap(lambda k: jax.random.permutation(k, frames))(jax.random.split(kp, batch))
    order = jnp.where(jax.random.uniform(kq, (batch, 1)) < cfg["frame_shuffle"], order,
                      jnp.arange(frames)[None])
    x = {k: jnp.take_along_axis(v, order[:, :, None, None, None], axis=1) for k, v in x.items()}
  out = {k: jnp.clip(jnp.round(v), 0, 255).astype(jnp.uint8) for k, v in x.items()}
  return out, mixed_labels, mix


__all__ = ["SETTINGS", "affine_matrix", "affine_source", "augment", "elastic_displacement",
           "inverse_2x2", "optical_source", "rain_mask", "random_affine", "sample",
           "transform_flow_vectors", "warp_affine"]
