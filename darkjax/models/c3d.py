"""C3D (Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015).

Layout of the common PyTorch port of the Sports-1M Caffe model (module names conv1, conv2, conv3a,
conv3b, conv4a, conv4b, conv5a, conv5b, fc6, fc7, fc8): 3x3x3 convolutions with bias and padding 1,
max pools 1x2x2 after conv1 and 2x2x2 after conv2/conv3b/conv4b/conv5b, fc6/fc7 of 4096 units with
ReLU and dropout 0.5, fc8 = logits (487 Sports-1M classes).

`pooling`: "caffe" (default) pools as Tran et al.'s Caffe model did, in Caffe's ceil mode: a window
that runs past the input's end is cut short (pool5 takes 7 -> 4 with windows at 0, 2, 4, 6); the
Sports-1M weights learned on those windows. "port" pools as the PyTorch port does: floor mode with
pool5 padded by one on each side of H and W (7 -> 4 with windows at -1, 1, 3, 5: every pool5 window
one pixel left of and above Caffe's). Both give 4 x 4 at 112 x 112 (the same parameters); at an
even pool5 input they differ in size (8 -> 4 in Caffe's, 5 in the port's). Use "port" for weights
fine-tuned in the port; the CPU-sized synthetic two-stream towers keep it (darkjax.models.twostream).

fc6 ties the network to one input size, `input_size` = (T, H, W), checked on every call: the
default 16x112x112 makes pool5 yield 512 x 1 x 4 x 4 = 8192 features. Before fc6 the activations
are flattened in PyTorch's (C, T, H, W) order so that fc6's kernel is the plain transpose of the
torch weight.

`batch_norm=True` puts a BatchNorm between every convolution and its ReLU (the convolutions then
have no bias), as C3D reimplementations trained from scratch do (MMAction2's C3D `norm_cfg`);
the paper's C3D and its Sports-1M weights have none. darkjax's CPU-sized synthetic two-stream
towers use it (configs/twostream_synthetic.py says why).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from darkjax.layers import precision
from darkjax.layers import remat as remat_lib
from darkjax.layers.conv import Conv3D, max_pool3d
from darkjax.layers.norm import BatchNorm
from darkjax.models.heads import classifier_head

# Max pools (window = stride, padding) after the named convolutions.
_POOL_1x2x2 = ((1, 2, 2), ((0, 0), (0, 0), (0, 0)))
_POOL_2x2x2 = ((2, 2, 2), ((0, 0), (0, 0), (0, 0)))
_POOL_5 = ((2, 2, 2), ((0, 0), (1, 1), (1, 1)))   # the port's
POOLINGS = ("caffe", "port")
CONV_NAMES = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
_POOL_AFTER = {"conv1": _POOL_1x2x2, "conv2": _POOL_2x2x2, "conv3b": _POOL_2x2x2,
               "conv4b": _POOL_2x2x2, "conv5b": _POOL_5}
# Stage outputs reported in `out`: after pool1, pool2, pool3, pool4, pool5.
_STAGE_AFTER = {"conv1": "stem", "conv2": "stage1", "conv3b": "stage2", "conv4b": "stage3",
                "conv5b": "stage4"}


class C3D(nn.Module):
  """C3D; `num_classes=0` returns the fc7 features (the usual "C3D features")."""
  num_classes: int
  input_size: Sequence[int] = (16, 112, 112)
  widths: Sequence[int] = (64, 128, 256, 256, 512, 512, 512, 512)
  fc_width: int = 4096
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  remat: bool | str = False  # darkjax.layers.remat policy (True = "full")
  conv_lowering: str = "auto"
  batch_norm: bool = False
  pooling: str = "caffe"   # "caffe" or "port" (module docstring)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    if x.ndim != 5:
      raise ValueError(f"C3D: expected (B, T, H, W, C) clips, got shape {x.shape}")
    if self.pooling not in POOLINGS:
      raise ValueError(f"C3D: pooling {self.pooling!r} is not one of {POOLINGS}")
    if len(self.widths) != len(CONV_NAMES):
      raise ValueError(f"C3D: widths needs {len(CONV_NAMES)} entries, got {len(self.widths)}")
    if tuple(x.shape[1:4]) != tuple(self.input_size):
      raise ValueError(f"C3D: clips must be {tuple(self.input_size)} (T, H, W) because fc6 is "
                       f"sized for it; got {tuple(x.shape[1:4])} (set input_size to change it)")
    out: dict[str, jax.Array] = {}
    conv_cls = remat_lib.wrap(Conv3D, self.remat)
    for name, width in zip(CONV_NAMES, self.widths):
      x = conv_cls(width, (3, 3, 3), padding=((1, 1),) * 3, use_bias=not self.batch_norm,
                   dtype=self.dtype, lowering=self.conv_lowering, name=name)(x)
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=self.dtype, name=f"{name}_bn")(x)
      x = nn.relu(x)
      if name in _POOL_AFTER:
        window, padding = _POOL_AFTER[name]
        if any(w > s for w, s in zip(window, x.shape[1:4])):
          raise ValueError(f"C3D: input_size {tuple(self.input_size)} too small: {name} output "
                           f"{x.shape[1:4]} is smaller than the pooling window {window}")
        if self.pooling == "caffe":
          padding = ceil_mode_padding(x.shape[1:4], window)
        x = max_pool3d(x, window, window, padding,
                       lowering="native" if self.conv_lowering == "native" else "auto")
        out[_STAGE_AFTER[name]] = x
    # Flatten in torch's (C, T, H, W) order so fc6 matches the PyTorch weight directly.
    x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape((x.shape[0], -1))
    for name in ("fc6", "fc7"):
      x = nn.relu(precision.Dense(self.fc_width, dtype=self.dtype, name=name)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return classifier_head(x, out, self.num_classes, name="fc8", dtype=self.dtype)


def ceil_mode_padding(size: Sequence[int], window: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """(lo, hi) paddings that make a max pool with stride = `window` over `size` pool as Caffe's ceil
  mode does: the last window, cut short by the input's end, still gives an output (padding values
  never win in `max_pool3d`)."""
  return tuple((0, -n % w) for n, w in zip(size, window))


def _variant(**fixed: Any) -> Callable[..., C3D]:
  def build(num_classes: int, **kwargs: Any) -> C3D:
    return C3D(num_classes=num_classes, **{**fixed, **kwargs})
  return build


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "c3d": _variant(),
    # Tiny variant for tests.
    "c3d_tiny": _variant(input_size=(16, 32, 32), widths=(4, 8, 8, 8, 16, 16, 16, 16), fc_width=32),
}
