"""Train-time video augmentations on device, on (B, T, H, W, C) uint8 stream dicts.

`augment(streams, labels, rng, cfg)` applies, per `cfg` (a mapping such as LIFT-Net's
`config.lift.augment`): colour jitter (the `video` stream only), a random affine map shared by all
streams (scale, translation, rotation, shear; an optical-flow stream's vectors go through the map's
linear part too, see darkjax/data/flow.py), CutMix (the partner clip is the batch neighbour) and
frame shuffle. It returns the streams, the partner labels and the label weight of the first clip,
so a loss can mix `w CE(y) + (1 - w) CE(y_partner)`. Horizontal flips happen in the host pipeline
(darkjax/data/ops.py), which also negates a flipped flow stream's x.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from darkjax.data import flow


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


def warp_affine(clip: jax.Array, matrix: jax.Array, shift: jax.Array,
                fill: float = 0.0) -> jax.Array:
  """Bilinear warp of one (T, H, W, C) float clip, every frame alike: out(p) = in(q) with
  p - c = matrix @ (q - c) + shift, c the image centre ((W - 1) / 2, (H - 1) / 2) in (x, y) pixel
  indices, shift (x, y) in pixels. Pixels from outside the input are `fill`."""
  height, width = clip.shape[1:3]
  centre = jnp.array([(width - 1) / 2.0, (height - 1) / 2.0])
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  offsets = jnp.stack([xs, ys], -1) - centre - shift
  source = offsets @ jnp.linalg.inv(matrix).T + centre          # (H, W, 2) as (x, y)
  rows_cols = [source[..., 1], source[..., 0]]
  # order=1 with mode="constant" is bilinear sampling with `fill` outside the image.
  sample = lambda image: jax.scipy.ndimage.map_coordinates(image, rows_cols, order=1,
                                                            mode="constant", cval=fill)
  return jax.vmap(jax.vmap(sample, in_axes=-1, out_axes=-1))(clip)   # over frames and channels


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
  a, rotation, shear = cfg["affine"], cfg.get("rotation", 0.0), cfg.get("shear", 0.0)
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

  Random affine (`affine`: scale and translation range, `rotation` and `shear`: degrees, 0 = off,
  see random_affine) warps every stream with the same per-clip map. The `flow` stream's vectors go
  through the map's linear part too, and pixels from outside the frame are zero motion (128); other
  streams' outside pixels are 0."""
  geometric = ("affine", "rotation", "shear")
  if not any(cfg.get(k, 0.0) for k in ("colour_jitter", "cutmix", "frame_shuffle") + geometric):
    return dict(streams), labels, jnp.ones((), jnp.float32)
  k_jitter, k_affine, k_cut, k_shuffle = jax.random.split(rng, 4)
  x = {k: v.astype(jnp.float32) for k, v in streams.items()}
  batch, frames, height, width = x["video"].shape[:4]
  if cfg["colour_jitter"]:
    s = cfg["colour_jitter"]
    kb, kc = jax.random.split(k_jitter)
    bright = jax.random.uniform(kb, (batch, 1, 1, 1, 1), minval=1 - s, maxval=1 + s)
    contrast = jax.random.uniform(kc, (batch, 1, 1, 1, 1), minval=1 - s, maxval=1 + s)
    mean = jnp.mean(x["video"], axis=(1, 2, 3, 4), keepdims=True)
    x["video"] = (x["video"] - mean) * contrast + mean * bright
  if any(cfg.get(k, 0.0) for k in geometric):
    matrix, shift = random_affine(k_affine, batch, height, width, cfg)
    for name, value in x.items():
      if name == flow.STREAM:
        if value.shape[-1] != 3:
          raise ValueError(f"stream {name!r} must have 3 channels (x, y, magnitude), got "
                           f"{value.shape}")
        warped = jax.vmap(warp_affine)(value - flow.ZERO, matrix, shift)
        x[name] = jax.vmap(transform_flow_vectors)(warped, matrix) + flow.ZERO
      else:
        x[name] = jax.vmap(warp_affine)(value, matrix, shift)
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


__all__ = ["affine_matrix", "augment", "random_affine", "transform_flow_vectors", "warp_affine"]
