"""3D-DiNet / DANN unsupervised domain adaptation: labelled source clips, unlabelled target clips.

Each training batch is half source, half target, drawn from two grain pipelines zipped into one
checkpointable iterator (`ZipIterDataset`), so the trainer's exact resume holds for both streams.
The paper's objective (Eq. 4) sums the action loss over the source clips and the domain loss over
all clips, F = sum_{d_i = 0} L_a^i - lambda sum_i L_d^i; the loss here is

    ( sum over the source half of CE(action logits, source labels)
      + domain_loss_weight * sum over both halves of BCE(domain logits, 0 = source / 1 = target) )
    / number of source clips

that is F's relative weight of the two terms (domain_loss_weight = 1), divided by the source count
so the action term is the usual batch mean; the gradient-reversal layer turns + into - lambda for
the feature extractor (Eq. 5) and leaves the heads' gradients plain (Eqs. 6-7). With half-source
batches the domain term is twice the mean BCE (domain_loss_weight = 0.5 gives the mean). The
strength `lambda = dann_lambda(progress, grl_gamma)` (Eq. 8) is recomputed every step from the
training progress the generic trainer passes in. Target labels travel with the batch
(`target_label`) but `loss_fn` never reads them. With `config.domain_loss = False` the same trainer
is the source-only baseline: target clips are loaded but never enter the model (nor its BatchNorm
statistics).

Config keys read here, besides the generic ones (see configs/dinet_synthetic.py):
  input.batch_size          global batch, half source and half target; each half is split over
                            the mesh's batch axes (and micro-batches), so the batch is rounded to
                            a multiple of 2 x the devices (x config.accum_steps)
  input.batch_parts         2: the two halves, for that rounding (`config.global_batch`)
  input.stream              record stream the model sees for source clips ("video", "day", ...)
  dinet.target.data         the target dataset block (same fields as input.data)
  dinet.target.stream       record stream the model sees for target clips ("video", "ir", ...)
  dinet.input_channels      clips are brought to this many channels on device (1 -> C repeated)
  dinet.domain_loss         False: source-only baseline
  dinet.domain_loss_weight  weight of the domain BCE sum against the action CE sum (Eq. 4: 1)
  dinet.grl_gamma           gamma of dann_lambda(p) = 2 / (1 + exp(-gamma p)) - 1
Data sources: "target" (primary: predict and default evaluations) and "source"; the configs
evaluate both test splits (`eval`: target, `eval_source`: source).
"""

from __future__ import annotations

from typing import Any, Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from darkjax import config as config_lib
from darkjax import losses
from darkjax import task as task_lib
from darkjax.data import prepared
from darkjax.data.classification import ClassificationData
from darkjax.layers.grl import dann_lambda
from darkjax.trainers.base import TaskBase
from darkjax.config import ConfigError

SOURCE_DOMAIN, TARGET_DOMAIN = 0.0, 1.0
# Target shuffles differ from the source's even on the same records (kept small: the pipeline's
# file seed is seed * 1_000_003 and grain wants seeds below 2**32).
_TARGET_SEED_OFFSET = 1009


def domain_input_config(input_cfg: mlc.ConfigDict, data_cfg: mlc.ConfigDict,
                        stream: str) -> mlc.ConfigDict:
  """An unlocked copy of `input_cfg` reading `data_cfg` whose batches' `video` is record stream
  `stream` (`input.stream`, see darkjax.data.pipeline)."""
  cfg = mlc.ConfigDict(input_cfg.to_dict())
  cfg.data = mlc.ConfigDict(data_cfg.to_dict())
  cfg.streams = tuple(s for s in cfg.streams if s not in ("video", stream))
  cfg.stream = stream
  cfg.prefetch = 0   # one prefetch thread after the zip instead of one per domain
  return cfg


def match_channels(x: jax.Array, channels: int, what: str) -> jax.Array:
  """(…, C) -> (…, channels): repeats a single channel, averages to one, else raises."""
  have = x.shape[-1]
  if have == channels:
    return x
  if have == 1:
    return jnp.repeat(x, channels, axis=-1)
  if channels == 1:
    return jnp.mean(x, axis=-1, keepdims=True)
  raise ConfigError(f"config.dinet.input_channels={channels}: cannot feed {what} clips with {have} "
                    "channels (only 1 -> N and N -> 1 are converted)")


class _MergeDomains(grain.transforms.Map):
  """(source batch, target batch) -> one dict with `source_*` and `target_*` entries."""

  def map(self, element):
    source, target = element
    return {"source_video": source["video"], "source_label": source["label"],
            "target_video": target["video"], "target_label": target["label"]}


class Task(TaskBase):
  """DANN training of a `dinet` model (or any model whose `out` has `domain_logits`)."""

  def __init__(self, config: mlc.ConfigDict, num_classes: int | None = None):
    super().__init__(config, num_classes)
    if config_lib.batch_parts(config) != 2:
      raise ConfigError("config.input.batch_parts must be 2 for 3D-DiNet (a batch is half source, "
                        "half target, each split over the devices): set it in the config")
    dinet = config.dinet
    self.data_sources = {
        "target": ClassificationData(
            domain_input_config(config.input, dinet.target.data, dinet.target.stream),
            config.seed + _TARGET_SEED_OFFSET),
        "source": ClassificationData(
            domain_input_config(config.input, config.input.data, config.input.stream),
            config.seed)}
    self.channels = int(dinet.input_channels)
    if num_classes is None:   # training: both datasets must be at hand and agree
      self.check_classes()
    self.model = self.build_model()

  def check_classes(self) -> None:
    """Source and target must name the same classes in the same order."""
    source = self.data_sources["source"].dataset.class_names
    target = self.data_sources["target"].dataset.class_names
    if source != target:
      raise prepared.DatasetMismatchError(
          f"dinet: source {self.config.input.data.dir} and target "
          f"{self.config.dinet.target.data.dir} must share the same classes in the same order; "
          f"source only: {sorted(set(source) - set(target))}, target only: "
          f"{sorted(set(target) - set(source))}, source order {source}, target order {target}; "
          f"a dataset of your own takes the other's order from a classes.txt beside its class "
          f"folders (prepare it again with --overwrite)")

  # ---------------------------------------------------------------- data
  def train_dataset(self, local_batch: int):
    if local_batch % 2:
      raise ConfigError(f"config.input.batch_size: the per-host batch {local_batch} must be even "
                        "(half labelled source, half unlabelled target)")
    half = local_batch // 2
    zipped = grain.experimental.ZipIterDataset(
        [self.data_sources["source"].train_dataset(half),
         self.data_sources["target"].train_dataset(half)])
    merged = zipped.map(_MergeDomains())
    if self.config.input.prefetch:
      merged = grain.experimental.ThreadPrefetchIterDataset(
          merged, prefetch_buffer_size=self.config.input.prefetch)
    return merged

  def _inputs(self, source: str, clips_uint8: jax.Array) -> jax.Array:
    data = self.data_sources[source]
    return match_channels(data.preprocess(clips_uint8, self.dtype), self.channels, source)

  # ---------------------------------------------------------------- model
  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
    # A train batch carries `source_video`; an inference streams dict (predict) `video`.
    x = self._inputs("source", batch["source_video"] if "source_video" in batch else batch["video"])
    return dict(self.model.init({"params": rng, "dropout": rng}, x, train=False))

  def grl_lambda(self, progress) -> jax.Array:
    return dann_lambda(progress, float(self.config.dinet.grl_gamma))

  def loss_fn(self, params, model_state, batch, rng, progress):
    """(Sum of the source CE + weight x sum of the domain BCE over both halves) / source count
    (Eq. 4's relative weight); `batch["target_label"]` is never read."""
    source = self._inputs("source", batch["source_video"])
    labels = batch["source_label"]
    num_source = source.shape[0]
    use_domain = bool(self.config.dinet.domain_loss)
    lam = self.grl_lambda(progress) if use_domain else jnp.zeros((), jnp.float32)
    if use_domain:
      target = self._inputs("target", batch["target_video"])
      x = jnp.concatenate([source, target.astype(source.dtype)], axis=0)
    else:
      x = source
    (logits, out), new_state = self.model.apply(
        {"params": params, **model_state}, x, train=True, grl_lambda=lam,
        rngs={"dropout": rng}, mutable=list(model_state))
    source_logits = logits[:num_source]
    ce = losses.softmax_cross_entropy(source_logits, labels, self.config.label_smoothing)
    metrics = {"accuracy": jnp.mean(jnp.argmax(source_logits, -1) == labels),
               "ce_loss": ce, "grl_lambda": lam}
    loss = ce
    if use_domain:
      domain_logits = out["domain_logits"]
      domain_labels = jnp.concatenate([
          jnp.full((num_source,), SOURCE_DOMAIN, jnp.float32),
          jnp.full((domain_logits.shape[0] - num_source,), TARGET_DOMAIN, jnp.float32)])
      bce = optax.sigmoid_binary_cross_entropy(domain_logits, domain_labels)
      # Eq. (4): summed over all clips against the action loss summed over the source clips.
      loss = ce + float(self.config.dinet.domain_loss_weight) * jnp.sum(bce) / num_source
      metrics["domain_loss"] = jnp.mean(bce)
      metrics["domain_accuracy"] = jnp.mean((domain_logits > 0) == (domain_labels > 0.5))
    return loss, (dict(new_state), metrics)

  # ---------------------------------------------------------------- inference
  def predict(self, variables: Mapping[str, Any], streams: Mapping[str, jax.Array],
              source: str | None = None) -> jax.Array:
    """Logits of clips of `source`'s stream ("target" by default: the domain adapted to)."""
    logits, _ = self.model.apply(variables, self._inputs(source or "target", streams["video"]),
                                 train=False)
    return logits


PHASES = task_lib.single_phase(Task)
