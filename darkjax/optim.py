"""Optax optimizers and learning-rate schedules named in configs (see configs/common.optimizer_block)."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from darkjax import config as config_lib
from darkjax import targets

log = logging.getLogger("darkjax")

SCHEDULES = ("constant", "cosine", "step", "dann")
OPTIMIZERS = ("sgd", "adamw")


def make_schedule(cfg: Mapping[str, Any], total_steps: int) -> Callable[[Any], Any]:
  """Learning rate as a function of the optimizer step."""
  name, peak, warmup = cfg["schedule"], cfg["lr"], int(cfg["warmup_steps"])
  if name not in SCHEDULES:
    raise config_lib.ConfigError(f"config.optimizer.schedule {name!r} unknown; valid: "
                                 f"{SCHEDULES}")
  if total_steps <= 0:
    raise config_lib.ConfigError(f"config.total_steps must be positive (or config.total_epochs "
                                 f"set), got {total_steps}")
  if warmup >= total_steps:
    log.warning("config.optimizer.warmup_steps=%d is not below the phase's %d steps: the "
                "learning rate never reaches optimizer.lr=%g (%s schedule never starts); lower "
                "warmup_steps", warmup, total_steps, peak, f"its {name}" if name != "constant"
                else "the constant")
  decay_steps = max(total_steps - warmup, 1)
  if name == "constant":
    main = optax.constant_schedule(peak)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg["min_lr_ratio"])
  elif name == "step":
    boundaries = {int(f * total_steps) - warmup: cfg["decay_factor"]
                  for f in cfg["decay_boundaries"]}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  else:  # DANN annealing: lr_p = lr_0 / (1 + 10 p)^0.75 with p = training progress in [0, 1].
    def main(step):
      progress = jnp.clip(step / decay_steps, 0.0, 1.0)
      return peak / (1.0 + 10.0 * progress) ** 0.75
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _frozen_labels(params: Any, patterns) -> Any:
  compiled = [re.compile(p) for p in patterns]
  flat = traverse_util.flatten_dict(params, sep="/")
  unmatched = [c.pattern for c in compiled if not any(c.search(k) for k in flat)]
  if unmatched:   # a typo would train what it means to freeze
    example = ", ".join(list(flat)[:4])
    raise config_lib.ConfigError(f"config.optimizer.frozen: {unmatched} match no parameter path "
                                 f"(paths look like {example}, ...)")
  labels = {k: ("frozen" if any(c.search(k) for c in compiled) else "trainable") for k in flat}
  return traverse_util.unflatten_dict(labels, sep="/")


def _path(keys) -> str:
  """"backbone/conv/kernel" of a tree path, as `optimizer.frozen`'s patterns see a parameter."""
  return jax.tree_util.keystr(keys, simple=True, separator="/")


def decay_mask(patterns, params: Any | None = None) -> Callable[[Any], Any] | None:
  """optax's weight-decay `mask` for `optimizer.decay_exclude`: a function of the parameter tree,
  True where weight decay applies, False at each path a regex matches (None: every parameter
  decays, PyTorch's default). Checked against `params` when given: a regex that matches no path
  is an error (a typo would decay what it means to exclude)."""
  if not patterns:
    return None
  compiled = [re.compile(p) for p in patterns]
  if params is not None:
    paths = [_path(keys) for keys, _ in jax.tree_util.tree_leaves_with_path(params)]
    unmatched = [c.pattern for c in compiled if not any(c.search(p) for p in paths)]
    if unmatched:
      raise config_lib.ConfigError(
          f"config.optimizer.decay_exclude: {unmatched} match no parameter path (paths look "
          f"like {', '.join(paths[:4])}, ...; e.g. 'bias$', 'scale$' for biases and norm scales)")
  return lambda tree: jax.tree_util.tree_map_with_path(
      lambda keys, _: not any(c.search(_path(keys)) for c in compiled), tree)


def frozen_mask(params: Any, patterns) -> Any | None:
  """The parameter tree with True at each leaf an `optimizer.frozen` regex matches (None when
  nothing is frozen): `darkjax.step.make_train_step` takes no gradient of those leaves."""
  if not patterns:
    return None
  return jax.tree.map(lambda label: label == "frozen", _frozen_labels(params, patterns))


def make_optimizer(cfg: Mapping[str, Any], total_steps: int,
                   params: Any | None = None) -> tuple[optax.GradientTransformation, Callable]:
  """(optax transformation, schedule). `params` (or an abstract tree) is needed for `frozen`."""
  name = cfg["name"]
  if name not in OPTIMIZERS:
    raise config_lib.ConfigError(f"config.optimizer.name {name!r} unknown; valid: {OPTIMIZERS}")
  schedule = make_schedule(cfg, total_steps)
  parts = []
  if cfg["grad_clip_norm"]:
    parts.append(optax.clip_by_global_norm(cfg["grad_clip_norm"]))
  exclude = tuple(cfg.get("decay_exclude", ()) or ())
  if exclude and not cfg["weight_decay"]:
    raise config_lib.ConfigError(f"config.optimizer.decay_exclude {list(exclude)} is set but "
                                 "config.optimizer.weight_decay is 0: nothing decays")
  mask = decay_mask(exclude, params)
  if name == "sgd":
    if cfg["weight_decay"]:
      parts.append(optax.add_decayed_weights(cfg["weight_decay"], mask=mask))
    parts.append(optax.sgd(schedule, momentum=cfg["momentum"] or None, nesterov=cfg["nesterov"]))
  else:
    parts.append(optax.adamw(schedule, b1=cfg["b1"], b2=cfg["b2"],
                             weight_decay=cfg["weight_decay"], mask=mask))
  tx = optax.chain(*parts)
  if cfg["frozen"]:
    if params is None:
      raise ValueError("optimizer.frozen needs the parameter tree")
    labels = _frozen_labels(params, cfg["frozen"])
    if not any(v == "trainable" for v in traverse_util.flatten_dict(labels).values()):
      raise config_lib.ConfigError(f"config.optimizer.frozen {list(cfg['frozen'])} freezes "
                                   f"every parameter")
    tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule


def global_norm(tree: Any) -> jax.Array:
  return optax.tree.norm(tree)


def _present(a: Any, b: Any) -> Any:
  """`a` with None where `b` has None (`b`'s leaves are `a`'s or None)."""
  return jax.tree.map(lambda x, y: None if y is None else x, a, b, is_leaf=lambda v: v is None)


def paired_norms(a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
  """`(global_norm(a'), global_norm(b))`, where `a'` is `a` without the leaves that are None in
  `b`: two trees of one structure, the train step's gradients and the parameters that train
  (None where frozen; a frozen leaf's gradient is zeros).

  On a GPU (`targets.platform()`) each pair of leaves is one reduction over the two stacked.
  XLA:GPU compiles a kernel per distinct reduction, and a gradient's reduction, fused into what
  produces the gradient, seldom shares one: two norms of separate reductions cost a kernel per
  leaf more than one norm of pairs (deviceless H100 compiles of the paper configs' main phases,
  docs/benchmarks.md, "What a GPU step compiles besides autotuning"). The stacked pair keeps its
  leaf's sharding: the sum runs over the leaf's own axes, never a reshape across them. Elsewhere
  the norms are two of `global_norm`: XLA:CPU copies the stacked pairs (a slower step), and
  XLA:TPU compiles no faster."""
  if targets.platform() != "gpu":
    return global_norm(_present(a, b)), global_norm(b)

  def squares(x, y):   # [sum of x^2, sum of y^2], one reduction
    pair = jnp.stack([x.astype(jnp.float32), y.astype(jnp.float32)])
    return jnp.sum(pair * pair, axis=tuple(range(1, pair.ndim)))
  sums = jax.tree.leaves(jax.tree.map(squares, _present(a, b), b))
  if not sums:
    return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)
  total = functools.reduce(jnp.add, sums)
  return jnp.sqrt(total[0]), jnp.sqrt(total[1])
