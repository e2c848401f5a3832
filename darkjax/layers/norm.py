"""BatchNorm with an export form and per-group statistics.

`BatchNorm` is `flax.linen.BatchNorm` (same fields, variables and outputs; its running variance
averages the unbiased batch variance, as PyTorch's does: `unbiased_running_var`). Inside
`darkjax.layers.conv.export_lowering()`, in inference mode, it is one multiply and one add by
per-channel constants folded from the running statistics at trace time: jax2onnx writes flax's
BatchNorm on channels-last tensors as Transpose, BatchNormalization, Transpose, and its conversion
time grows faster than linearly with the number of nodes.

With `stat_groups` G > 1 the batch is G consecutive equal parts (e.g. two input streams run as one
batch through one weight-shared backbone): each part is normalised by its own statistics, the
batch's in training and its own running ones in inference (`mean` and `var` are (G, C)); scale
and bias stay shared. `per_group_stats` turns (C,) statistics (a backbone trained on one stream)
into that layout. The arithmetic stays on x's own shape (per-sample sums, then per part; each
sample scaled by its part's row), which XLA fuses as it does one group's: reshaping x into its
parts made autodiff's backward add the statistics' and the normalisation's cotangents in
elementwise fusions of their own, 19% of ActLumos's teacher step's fusion traffic
(docs/benchmarks.md, "BatchNorm statistics in one pass").

Statistics in training: flax's one-pass form (`use_fast_variance`, flax's default) takes the
mean of x and of x^2 over one read of the activation, which XLA computes as one multi-output
reduction, with a backward pass of the same kind; the two-pass form (`use_fast_variance=False`:
the mean, then the mean of (x - mean)^2) reads each activation once more forward and once more
backward. On a GPU, where these reductions run at memory bandwidth, that is 16% more of the
step's fusion traffic for R(2+1)D-18 (docs/benchmarks.md, "BatchNorm statistics in one pass").
The R(2+1)D networks and ActLumos ask `one_pass_statistics()`: one pass when compiling for a GPU
or TPU, two on CPU, where it costs nothing measurable and the papers' synthetic figures were
measured with it; the other models use flax's default everywhere. Both forms compute in float32
from bf16 or float32 activations and agree to float32 rounding.

`relu=True` returns relu(BatchNorm(x)). In training when compiling for a GPU or TPU, with
one-pass statistics of one group, a scale and a bias, a BatchNorm (with or without its ReLU) is
one `jax.custom_vjp`, `batch_norm_train`: flax's forward, and a closed-form backward from x in
its own dtype and the (C,) statistics, recomputing the normalised x in float32 (and the ReLU's
mask), so that it is one reduction pass and one elementwise pass over x and the incoming
gradient. Autodiff keeps float32 activations instead (x minus the mean), which `nn.scan` stacks
over a stage's blocks: 3D-ResNeXt-101's steps hold 29-45% less memory this way (deviceless H100
and TPU compiles); and autodiff of BatchNorm then ReLU writes the masked gradient out and reads
it twice more: 2.5 GiB of R(2+1)D-18's 20.7 GiB fusion traffic per step at B16 x 16
(docs/benchmarks.md, "BatchNorm statistics in one pass", "Every BatchNorm's backward from its
bf16 input"). With `stat_groups` > 1 autodiff of the grouped arithmetic moved fewer bytes than
the same closed form per part (ActLumos's teacher: 223 against 240 GiB), so those stay
autodiff's. On a CPU, and elsewhere (two-pass statistics, inference, the export form), it is
flax's BatchNorm and then `nn.relu`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darkjax import targets
from darkjax.layers import conv2d


_FUSED_RELU: contextvars.ContextVar[bool] = contextvars.ContextVar("darkjax_fused_bn_relu",
                                                                    default=True)


@contextlib.contextmanager
def fused_relu(enabled: bool) -> Iterator[None]:
  """Within the block (at trace time), whether a BatchNorm may take `batch_norm_train` where it
  applies (the default) or is always flax's BatchNorm (and then `nn.relu`): `bench --variants
  bn_relu=plain` times the two against each other."""
  token = _FUSED_RELU.set(bool(enabled))
  try:
    yield
  finally:
    _FUSED_RELU.reset(token)


def one_pass_statistics(platform: str | None = None) -> bool:
  """`use_fast_variance` for a BatchNorm of the R(2+1)D networks and ActLumos traced for
  `platform` (default: `targets.platform()`, the platform being compiled for): one-pass
  statistics on GPU and TPU, two-pass on CPU (module docstring)."""
  return (platform or targets.platform()) != "cpu"


def _per_sample(stat: jax.Array, x: jax.Array) -> jax.Array:
  """A (G, C) statistic of G consecutive batch parts broadcastable against x (B, ..., C): each
  sample gets its part's row."""
  rows = jnp.repeat(stat, x.shape[0] // stat.shape[0], axis=0)
  return rows.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (stat.shape[-1],))


def _part_sums(values: jax.Array, groups: int) -> jax.Array:
  """Per part and feature (G, C), the sum of `values` (B, ..., C): per sample, then per part."""
  per_sample = jnp.sum(values, axis=tuple(range(1, values.ndim - 1)))
  return per_sample.reshape((groups, -1, values.shape[-1])).sum(axis=1)


def batch_statistics(x: jax.Array, groups: int = 1) -> tuple[jax.Array, jax.Array]:
  """The float32 mean and biased variance per feature of x (features last) in one pass (flax's
  `use_fast_variance`), each (C,), or (G, C) over `groups` consecutive batch parts."""
  values = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  count = x.size // (x.shape[-1] * groups)
  if groups == 1:   # flax's
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(values, axis=axes)
    return mean, jnp.maximum(0.0, jnp.mean(jnp.square(values), axis=axes) - jnp.square(mean))
  mean = _part_sums(values, groups) / count
  return mean, jnp.maximum(0.0, _part_sums(jnp.square(values), groups) / count - jnp.square(mean))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     dtype: Any, relu: bool) -> jax.Array:
  """BatchNorm(x) in training with the batch's one-pass statistics, then a ReLU if `relu`, in
  `dtype`: flax's forward arithmetic, and a closed-form backward from x itself (in its own
  dtype) and the (C,) statistics, which autodiff would keep as float32 activations."""
  return _batch_norm_train_fwd(x, scale, bias, epsilon, dtype, relu)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon, dtype, relu):
  mean, var = batch_statistics(x)
  rstd = jax.lax.rsqrt(var + epsilon)
  y = ((x - mean) * (rstd * scale) + bias).astype(dtype)   # flax's _normalize
  return (jax.nn.relu(y) if relu else y), (x, mean, rstd, scale, bias)


def _batch_norm_train_bwd(epsilon, dtype, relu, residuals, dy):
  del epsilon, dtype
  x, mean, rstd, scale, bias = residuals
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  normalised = (x.astype(jnp.float32) - mean) * rstd
  g = dy.astype(jnp.float32)
  if relu:   # the ReLU's mask from x and the statistics: the gradient masked is never written out
    g = jnp.where(normalised * scale + bias > 0, g, 0.0)
  dbias = jnp.sum(g, axis=axes)
  dscale = jnp.sum(g * normalised, axis=axes)
  dx = (rstd * scale) * (g - dbias / count - normalised * (dscale / count))
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def unbiased(var: jax.Array, count: Any) -> jax.Array:
  """The unbiased (n - 1) estimate from a biased variance over `count` values per feature, as
  PyTorch's BatchNorm keeps in its running variance (one value: the biased one, 0)."""
  count = jnp.asarray(count, jnp.float32)
  return var * (count / jnp.maximum(count - 1.0, 1.0))


class BatchNorm(nn.BatchNorm):
  """`flax.linen.BatchNorm`, with the export form, `stat_groups` and `relu` described in the
  module docstring (flax's fields: `axis` must stay -1 with `stat_groups` > 1).

  `unbiased_running_var` (default): the running variance averages the batch's unbiased variance,
  n / (n - 1) times the biased one that normalises the batch (n values per feature, or per part),
  as PyTorch's BatchNorm does, which every network here reproduces and whose running statistics
  the converters copy. flax averages the biased one (False): the same over a convolution's
  B x T x H x W values, but a BatchNorm over a batch of 16 or 32 feature vectors (ActLumos's
  fusion, LIFT-Net's head) then infers with a 3% or 1.6% smaller variance than PyTorch's."""
  stat_groups: int = 1
  relu: bool = False   # relu(BatchNorm(x)), in training one custom_vjp where it applies
  unbiased_running_var: bool = True

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
               mask: jax.Array | None = None) -> jax.Array:
    running = nn.merge_param("use_running_average", self.use_running_average,
                             use_running_average)
    if (not running and self.stat_groups == 1 and self.use_fast_variance
        and self.use_scale and self.use_bias and mask is None and self.axis == -1
        and _FUSED_RELU.get() and targets.platform() != "cpu"):
      return self._grouped(x, running, mask, fused=True)
    if running or self.stat_groups > 1 or self.is_initializing():
      y = self._normalise(x, use_running_average, running, mask)
    else:   # flax's BatchNorm in training: its running variance averaged the biased variance
      old = self.get_variable("batch_stats", "var")
      y = self._normalise(x, use_running_average, running, mask)
      if self.unbiased_running_var:
        self._unbias_flax_update(x, old, mask)
    return nn.relu(y) if self.relu else y

  def _unbias_flax_update(self, x: jax.Array, old: jax.Array, mask: jax.Array | None) -> None:
    """After flax's update new = m old + (1 - m) var: m old + (1 - m) unbiased(var)."""
    new = self.get_variable("batch_stats", "var")
    features = {a % x.ndim for a in (self.axis if isinstance(self.axis, tuple) else (self.axis,))}
    reduced = tuple(i for i in range(x.ndim) if i not in features)
    count = (np.prod([x.shape[i] for i in reduced]) if mask is None   # values per feature
             else jnp.sum(jnp.broadcast_to(mask, x.shape), axis=reduced))
    batch_part = new - self.momentum * old   # (1 - m) var
    self.put_variable("batch_stats", "var",
                      self.momentum * old + unbiased(batch_part, count))

  def _normalise(self, x: jax.Array, use_running_average: bool | None, running: bool,
                 mask: jax.Array | None) -> jax.Array:
    if self.stat_groups > 1:
      return self._grouped(x, running, mask)
    if (not conv2d.export_lowering_forced() or not running or mask is not None
        or self.axis != -1 or self.is_initializing()):
      return super().__call__(x, use_running_average, mask=mask)
    conv2d.note_lowering("batch_norm", "affine")
    mean, var = (self.get_variable("batch_stats", name) for name in ("mean", "var"))
    scale = (self.get_variable("params", "scale") if self.use_scale
             else np.ones(mean.shape, mean.dtype))
    bias = (self.get_variable("params", "bias") if self.use_bias
            else np.zeros(mean.shape, mean.dtype))

    def affine(mean, var, scale, bias):
      multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
      return multiplier, bias - mean * multiplier

    multiplier, offset = conv2d.on_constants(affine, mean, var, scale, bias)
    dtype = self.dtype or jnp.result_type(x, multiplier)
    return x.astype(dtype) * multiplier.astype(dtype) + offset.astype(dtype)

  def _running(self, var: jax.Array, x: jax.Array) -> jax.Array:
    """What the running variance averages from a part's biased batch variance `var`."""
    count = x.size // (x.shape[-1] * self.stat_groups)
    return unbiased(var, count) if self.unbiased_running_var else var

  @nn.compact
  def _grouped(self, x: jax.Array, running: bool, mask: jax.Array | None,
               fused: bool = False) -> jax.Array:
    """Per-part statistics (module docstring); flax's arithmetic (biased variance, float32
    statistics, `momentum` for the running averages) within each part. `fused` (one part, in
    training): flax's BatchNorm (and its ReLU) as `batch_norm_train`, with flax's (C,)
    statistics."""
    groups = self.stat_groups
    if mask is not None or self.axis != -1 or x.shape[0] % groups:
      raise ValueError(f"BatchNorm {self.name}: stat_groups={groups} needs a batch of equal "
                       f"parts on axis 0, features last and no mask; got shape {x.shape}, axis "
                       f"{self.axis}, mask {mask is not None}")
    features = x.shape[-1]
    stat_shape = (features,) if groups == 1 else (groups, features)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            stat_shape)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32),
                           stat_shape)
    if fused:
      scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
      bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
      # the running averages' statistics: the same reductions as batch_norm_train's forward
      # (XLA computes them once), no gradient through them
      mean, var = jax.lax.stop_gradient(batch_statistics(x))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * self._running(var, x)
      dtype = self.dtype or jnp.result_type(x, scale, bias)
      return batch_norm_train(x, scale, bias, self.epsilon, dtype, self.relu)
    if running:
      mean, var = ra_mean.value, ra_var.value
    elif self.use_fast_variance:   # one pass over x, as flax's (module docstring)
      mean, var = batch_statistics(x, groups)
    else:   # two passes, over the parts
      parts = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
      per_part = (groups,) + (1,) * (parts.ndim - 2) + (features,)
      axes = tuple(range(1, parts.ndim - 1))
      values = parts.astype(jnp.promote_types(parts.dtype, jnp.float32))
      mean = jnp.mean(values, axis=axes)
      var = jnp.mean(jnp.square(values - mean.reshape(per_part)), axis=axes)
    if not running and not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * self._running(var, x)
    multiplier = jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      multiplier = multiplier * self.param("scale", self.scale_init, (features,),
                                           self.param_dtype)
    offset = -mean * multiplier
    if self.use_bias:
      offset = offset + self.param("bias", self.bias_init, (features,), self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, multiplier)
    # On x's own shape, each sample scaled by its part's row; in float32 at least, as flax's
    # _normalize, rounded to `dtype` once at the end: autodiff's backward then sums the
    # cotangents of the per-sample rows (the statistics' and scale's and bias's gradients) in
    # float32. In bf16 those sums over a part's T x H x W positions lost most of their digits
    # (tests/test_norm.py).
    compute = jnp.promote_types(dtype, jnp.float32)
    y = (x.astype(compute) * _per_sample(multiplier, x).astype(compute)
         + _per_sample(offset, x).astype(compute))
    return y.astype(dtype)


def per_group_stats(batch_stats: dict, groups: int) -> dict:
  """`batch_stats` of BatchNorms with (C,) statistics -> the (groups, C) layout of `stat_groups`
  BatchNorms, every group starting from the given statistics."""
  return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (groups,) + np.shape(a)).copy(),
                      batch_stats)
