"""A labelled clip source: the configured dataset, its clip spec, the train / eval pipelines over it
and the on-device preprocessing of its clips.

Every Task reads its data through one or more of these (3D-DiNet: a source and a target one). The
dataset is opened on first use, so a Task can be built for inference (`darkjax.tools.predict`)
without the dataset on disk.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections as mlc

from darkjax.data import prepared, normalise, ops, pipeline

log = logging.getLogger("darkjax")


class ClassificationData:
  """`config.input`-style block -> dataset, pipelines and preprocessing."""

  def __init__(self, input_cfg: mlc.ConfigDict, seed: int):
    self.cfg = input_cfg
    self.seed = seed
    self.spec = ops.ClipSpec.from_config(input_cfg)
    normalise.check_mode(input_cfg.normalise)
    self.streams = tuple(input_cfg.streams)
    self.video_stream = input_cfg.stream   # the record stream the model sees as its clip

  @functools.cached_property
  def dataset(self) -> prepared.Dataset:
    side = int(self.cfg.short_side) or min(int(n) for n in self.cfg.resize)   # what it reads
    dataset = prepared.open_dataset(self.cfg.data, side)
    stored = dataset.manifest.get("metadata", {}).get("short_side") or 0
    if stored and side > stored:
      key = (f"config.input.short_side is {side}" if int(self.cfg.short_side) else
             f"config.input.resize is {tuple(int(n) for n in self.cfg.resize)} (short side {side})")
      log.warning("%s: frames were prepared with a short side of %d px but %s: every clip is "
                  "up-sampled. Prepare it again with `--short-side %d` to train on real detail.",
                  dataset.directory, stored, key, side)
    return dataset

  def check_streams(self) -> None:
    """Raises MissingStreamError before any record is read when the dataset does not store a
    record stream the config reads (config.input.stream, config.input.streams)."""
    stored = set(self.dataset.frame_shapes())
    for key, streams in (("stream", (self.video_stream,)), ("streams", self.streams)):
      missing = [s for s in streams if s not in stored]
      if missing:
        raise prepared.MissingStreamError(
            f"config.input.{key} reads the record stream(s) {missing}, which "
            f"{self.dataset.directory} does not store (its streams: {sorted(stored)}). Read one "
            f"of those, or prepare the dataset with the stream (`python -m darkjax.data.prepare "
            f"--help`: --flow stores optical flow).")

  def train_dataset(self, local_batch: int, split: str | None = None):
    cfg = self.cfg
    self.check_streams()
    return pipeline.train_dataset(
        self.dataset.files(split or cfg.data.split), self.spec, local_batch, seed=self.seed,
        shuffle_window=cfg.shuffle_window, cycle_length=cfg.cycle_length, prefetch=cfg.prefetch,
        streams=self.streams, video_stream=self.video_stream,
        frame_shapes=self.dataset.frame_shapes())

  def eval_batches(self, local_batch: int, split: str | None = None):
    """Batches of (B, V, T, H, W, C) eval views with `label`, `mask` (padding) and `index`."""
    self.check_streams()
    return pipeline.eval_batches(self.dataset.files(split or self.cfg.data.eval_split), self.spec,
                                 local_batch, streams=self.streams,
                                 video_stream=self.video_stream,
                                 frame_shapes=self.dataset.frame_shapes())

  def num_examples(self, split: str | None = None) -> int:
    return self.dataset.num_examples(split or self.cfg.data.eval_split)

  def preprocess(self, clip_uint8: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 clips -> the model's float input (`input.gamma`, then `input.normalise`)."""
    if self.cfg.gamma:
      clip_uint8 = normalise.gamma_correct(clip_uint8, self.cfg.gamma)
    return normalise.normalise(clip_uint8, self.cfg.normalise, dtype)

  def frame_hw(self) -> tuple[int, int]:
    """(H, W) of the frames the model sees: the crop, else the resized (or stored) frames."""
    if self.spec.crop_size:
      return self.spec.crop_size, self.spec.crop_size
    shape = self.dataset.frame_shapes().get(self.video_stream)
    if not shape:
      raise ValueError(f"dataset {self.dataset.directory}: frames of stream "
                       f"{self.video_stream!r} vary in size; set config.input.crop_size")
    if self.spec.resize[0]:
      return tuple(self.spec.resize)
    return ops.resized_hw(shape[0], shape[1], self.spec.short_side)
