"""The jitted train step: `(state, batch, rng) -> (state, metrics)` of a Task's loss, with gradient
accumulation, frozen parameters and a guard that keeps the old state on a non-finite step."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from darkjax import optim


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any          # non-trained collections, e.g. {"batch_stats": ...}
  opt_state: Any


def make_train_step(task: Any, tx: optax.GradientTransformation, schedule: Callable,
                    total_steps: int, accum_steps: int, frozen: Any | None = None) -> Callable:
  """(state, batch, rng) -> (state, metrics); a non-finite loss or gradient leaves the state
  unchanged, its step count included, and sets metrics["nonfinite"].

  `frozen` (`optim.frozen_mask`: True per frozen parameter leaf) puts those leaves under
  `stop_gradient`: their gradients are zeros that cost nothing, instead of weight gradients the
  optimizer then drops (a frozen backbone is traced and compiled forward only), and
  `train/grad_norm` and `train/param_norm` are the norms of what trains."""

  def trainable(params):
    """The parameters that train (frozen leaves dropped; their norm never changes, and a
    reduction per frozen leaf is compile time for nothing)."""
    if frozen is None:
      return params
    return jax.tree.map(lambda p, f: None if f else p, params, frozen)

  def loss_fn(params, *args):
    if frozen is not None:
      params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
    return task.loss_fn(params, *args)

  def grads_of(params, model_state, batch, rng, progress):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
      (loss, (model_state, aux)), grads = grad_fn(params, model_state, batch, rng, progress)
      return loss, model_state, aux, grads
    # Micro-batch i is rows i, i + accum_steps, ...: each device's rows of the batch (a block of
    # consecutive ones) hold their share of every micro-batch, which stays split over the devices
    # as the batch is. Consecutive rows per micro-batch would each sit on a few devices only, and
    # XLA would gather the batch and run every device's whole share in each micro-step.
    micro = jax.tree.map(lambda x: jnp.swapaxes(
        x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:]), 0, 1), batch)

    # Every micro-batch starts from the step's model state and their new states are averaged:
    # BatchNorm's running statistics take one update per optimizer step, from the micro-batches'
    # mean statistics, as one batch of them all would (chained, k updates a step would shorten
    # the running average's memory k times).
    def body(carry, inputs):
      state_sum, grad_sum, loss_sum, aux_sum = carry
      index, mb = inputs
      (loss, (new_state, aux)), grads = grad_fn(params, model_state, mb,
                                                jax.random.fold_in(rng, index), progress)
      state_sum = jax.tree.map(jnp.add, state_sum, new_state)
      grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
      aux_sum = jax.tree.map(jnp.add, aux_sum, aux)
      return (state_sum, grad_sum, loss_sum + loss, aux_sum), None

    first = jax.tree.map(lambda x: x[0], micro)
    aux_shape = jax.eval_shape(lambda: grad_fn(params, model_state, first, rng, progress)[0][1][1])
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    init = (zeros(model_state), zeros(params), jnp.zeros(()),
            jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape))
    (state_sum, grad_sum, loss_sum, aux_sum), _ = jax.lax.scan(
        body, init, (jnp.arange(accum_steps), micro))
    scale = 1.0 / accum_steps
    mean = lambda tree: jax.tree.map(lambda x: (x * scale).astype(x.dtype), tree)  # noqa: E731
    return loss_sum * scale, mean(state_sum), mean(aux_sum), mean(grad_sum)

  def train_step(state: TrainState, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    progress = jnp.clip(state.step.astype(jnp.float32) / total_steps, 0.0, 1.0)
    loss, model_state, aux, grads = grads_of(state.params, state.model_state, batch, step_rng,
                                             progress)
    grad_norm, param_norm = optim.paired_norms(grads, trainable(state.params))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply_update():
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      return optax.apply_updates(state.params, updates), model_state, opt_state

    # The optimizer runs inside one conditional that otherwise keeps the old state: a select per
    # leaf would compile to one more kernel per parameter and optimizer leaf and keep the new and
    # old state alive together (docs/benchmarks.md, "The train step's own share").
    params, model_state, opt_state = jax.lax.cond(
        finite, apply_update, lambda: (state.params, state.model_state, state.opt_state))
    # A skipped step leaves the step count too, so the schedule, the progress and the step's
    # random key stay those of the optimizer's own count.
    new_state = TrainState(step=state.step + finite.astype(state.step.dtype), params=params,
                           model_state=model_state, opt_state=opt_state)
    metrics = {"train/loss": loss, "train/grad_norm": grad_norm,
               "train/param_norm": param_norm,
               "train/lr": schedule(state.step), "nonfinite": ~finite}
    metrics.update({f"train/{k}": v for k, v in aux.items()})
    return new_state, metrics

  return train_step
