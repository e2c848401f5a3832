"""Rematerialisation policies, one name per policy, for every model's `remat` field.

A model's `remat` (config: `model.kwargs.remat`) wraps each repeated block (ResNet / R(2+1)D
blocks and their stems, ViT encoder blocks, C3D convs, LIFT-Net modules, DTCM's whole enhancement)
in `flax.linen.remat` with a `jax.checkpoint` policy saying which of the block's intermediates the
backward pass keeps:

  none           no rematerialisation: every intermediate is kept (fastest, most memory)
  full           only the block's inputs are kept, everything inside is recomputed
                 (`jax.checkpoint_policies.nothing_saveable`; what `remat=True` means)
  dots           matmul and convolution outputs are kept, BatchNorm / activations recomputed
                 (`dots_saveable`: on GPU/TPU, where convolutions are XLA's own)
  dots_no_batch  only matmuls without batch dimensions kept (`dots_with_no_batch_dims_saveable`:
                 transformer blocks)
  conv_outputs   every `Conv3D` output kept (tagged `checkpoint_name(.., "conv3d")`), the rest
                 recomputed: the CPU form of `dots`, whose lowered convolutions carry their own
                 gradients and so are not `conv_general_dilated` primitives the `dots` policy sees

`python -m darkjax.tools.bench --model M --memory --remat full,conv_outputs` compiles a train
step per policy and prints XLA's memory analysis and the step time of each.

On XLA:CPU a policy only takes effect with `darkjax.targets.compiler_options("cpu")` (every
step `darkjax.train` compiles carries them): `jax.checkpoint` fences what it recomputes with
`optimization_barrier`s, and XLA:CPU's pipeline expands those barriers ("cse_barrier_expander")
before its common subexpression elimination, which then merges each recomputed block with its
forward pass: the program keeps every intermediate, as with no remat (figures in
docs/benchmarks.md). Under `nn.scan` the recomputation sits inside the loop body, where no CSE
reaches it, so scanned blocks hold their policy either way.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name

CONV_NAME = "conv3d"
_OFF = contextvars.ContextVar("darkjax_remat_off", default=False)
POLICIES: dict[str, Callable[..., Any] | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "conv_outputs": jax.checkpoint_policies.save_only_these_names(CONV_NAME),
}


def policy_name(remat: bool | str | None) -> str:
  """The policy name of a model's `remat` field: False / None / "" -> "none", True -> "full"."""
  if remat is None or remat is False or remat == "":
    return "none"
  if remat is True:
    return "full"
  if not isinstance(remat, str) or remat not in POLICIES:
    raise ValueError(f"remat={remat!r}: expected a bool or one of {sorted(POLICIES)} "
                     "(darkjax.layers.remat)")
  return remat


def enabled(remat: bool | str | None) -> bool:
  return policy_name(remat) != "none"


def wrap(target: Any, remat: bool | str | None, static_argnums: Sequence[int] = ()) -> Any:
  """`target` under `nn.remat` with the named policy (itself when the policy is "none").

  `target` is a Module class, or a function whose first argument is a module (a method such as
  `VideoResNet._stem`, called as `wrap(...)(self, x, train)`): the function form keeps the
  parameter paths of the submodules it creates. `static_argnums` count `self` / the module as 0,
  as `nn.remat`'s do (e.g. (2,) for a `train` flag after x)."""
  name = policy_name(remat)
  if name == "none" or _OFF.get():
    return target
  return nn.remat(target, policy=POLICIES[name], static_argnums=tuple(static_argnums))


@contextlib.contextmanager
def off() -> Iterator[None]:
  """Models traced inside keep every block's intermediates whatever their `remat` (`wrap` leaves
  each block as it is; the same parameters): the program's operations are then the model's own,
  with no recomputed forward, for a model FLOP count (`profiling.step_flops`)."""
  token = _OFF.set(True)
  try:
    yield
  finally:
    _OFF.reset(token)


def tag_conv(y: jax.Array) -> jax.Array:
  """Names a convolution output for the `conv_outputs` policy (the identity otherwise)."""
  return checkpoint_name(y, CONV_NAME)
