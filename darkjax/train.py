"""The one generic trainer. Paper-specific pieces (model, loss, data, eval) come from a `Task` in
darkjax/trainers/<name>.py; this module owns the mesh, sharded init, the jitted step, checkpoints,
resume, the NaN guard, logging and the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import time
from typing import Any, Callable, Mapping, Protocol

import flax
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from tqdm import tqdm

from darkjax import checkpoint as ckpt_lib
from darkjax import evaluators as evaluators_lib
from darkjax import files
from darkjax import metrics as metrics_lib
from darkjax import optim
from darkjax import paths, plots, preemption, sharding
from darkjax import variables as variables_lib
from darkjax.layers import conv as conv_lib
from darkjax.layers import remat as remat_lib

log = logging.getLogger("darkjax")


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss or gradient; the message names the step."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any          # non-trained collections, e.g. {"batch_stats": ...}
  opt_state: Any


class Task(Protocol):
  """What a trainer module's Task gives the Trainer (darkjax/trainers/base.py has the shared part).

  Data: `data_sources` names the task's ClassificationData (the first is primary: evaluators and
  predict default to it); `train_dataset(local_batch)` is a grain IterDataset of host batches.
  Model: `init_variables(rng, batch)` builds the variables from one batch's shapes; `init_from`
  turns a fresh (not resumed) state's variables into those training starts from (pretrained
  sub-modules, a teacher, a phase-1 enhancer), called only when `merges_pretrained`.
  Step: `loss_fn(params, model_state, batch, rng, progress) -> (loss, (model_state, metrics))`
  with `progress` in [0, 1].
  Inference: `predict(variables, streams, source=None) -> logits`, where `streams["video"]` is
  uint8 (N, T, H, W, C) clips of `source`'s model stream and other keys are its extra record
  streams; used by the classification evaluator and `darkjax.tools.predict`.
  Optional capabilities named by evaluators: `enhance(variables, clips)` (enhancement),
  `attention_maps(variables, streams)` (attention_maps).
  """
  config: mlc.ConfigDict
  model: Any
  data_sources: Mapping[str, Any]
  merges_pretrained: bool

  def train_dataset(self, local_batch: int): ...
  def init_variables(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict: ...
  def init_from(self, variables: dict) -> dict: ...
  def loss_fn(self, params, model_state, batch, rng, progress) -> tuple[jax.Array, tuple]: ...
  def predict(self, variables: Mapping[str, Any], streams: Mapping[str, jax.Array],
              source: str | None = None) -> jax.Array: ...


# ================================================================ config + task
def trainer_module(config: mlc.ConfigDict):
  """The module darkjax/trainers/<config.trainer>.py, or an error listing the known trainers."""
  name = config.trainer
  try:
    return importlib.import_module(f"darkjax.trainers.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"darkjax.trainers.{name}":
      raise
    known = sorted(f[:-3] for f in os.listdir(os.path.join(os.path.dirname(__file__), "trainers"))
                   if f.endswith(".py") and not f.startswith("_"))
    raise ValueError(f"config.trainer {name!r} unknown; known trainers: {known}") from None


def load_task(config: mlc.ConfigDict, num_classes: int | None = None) -> Task:
  """The Task of `config.trainer` (`num_classes`: without opening the dataset, for inference)."""
  return trainer_module(config).Task(config, num_classes=num_classes)


def _config_json(config: mlc.ConfigDict) -> str:
  return config.to_json_best_effort(sort_keys=True, indent=2)


# ================================================================ sharded state init
def load_pretrained(variables: dict, init_dir: str, dont_load: tuple[str, ...] = (),
                    prefix: str = "") -> dict:
  """Replaces parameters by those saved in `init_dir` (darkjax.convert output).

  `prefix` places the checkpoint under a sub-module (e.g. "extractor" for a backbone inside a
  larger model); only that sub-tree is then compared. Paths matching a `dont_load` regex keep their
  initial values. Raises listing every missing, unexpected and mis-shaped entry.
  """
  from darkjax.convert import io as convert_io  # pylint: disable=import-outside-toplevel
  loaded, _ = convert_io.load_variables(init_dir)
  skip = [re.compile(p) for p in dont_load]
  ours, theirs = variables_lib.flatten(variables), variables_lib.flatten(loaded)
  if prefix:
    theirs = {f"{k.split('/', 1)[0]}/{prefix}/{k.split('/', 1)[1]}": v for k, v in theirs.items()}
  in_scope = lambda k: not prefix or k.split("/", 1)[1].startswith(prefix + "/")  # noqa: E731
  keep = lambda k: in_scope(k) and not any(p.search(k) for p in skip)  # noqa: E731
  problems = variables_lib.mismatch(ours, theirs, keep)
  if problems:
    raise ValueError(f"config.model_init {init_dir}: {problems.describe()} (use "
                     "config.model_load.dont_load to skip keys)")
  merged = {k: (jnp.asarray(theirs[k], ours[k].dtype) if keep(k) else v) for k, v in ours.items()}
  return variables_lib.unflatten(merged)


# ================================================================ the step
def make_train_step(task: Task, tx: optax.GradientTransformation, schedule: Callable,
                    total_steps: int, accum_steps: int, frozen: Any | None = None) -> Callable:
  """(state, batch, rng) -> (state, metrics); a non-finite loss or gradient leaves state unchanged
  and sets metrics["nonfinite"].

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
    micro = jax.tree.map(
        lambda x: x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:]), batch)

    def body(carry, inputs):
      model_state, grad_sum, loss_sum, aux_sum = carry
      index, mb = inputs
      (loss, (model_state, aux)), grads = grad_fn(params, model_state, mb,
                                                  jax.random.fold_in(rng, index), progress)
      grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
      aux_sum = jax.tree.map(jnp.add, aux_sum, aux)
      return (model_state, grad_sum, loss_sum + loss, aux_sum), None

    first = jax.tree.map(lambda x: x[0], micro)
    aux_shape = jax.eval_shape(lambda: grad_fn(params, model_state, first, rng, progress)[0][1][1])
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    init = (model_state, zeros(params), jnp.zeros(()),
            jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape))
    (model_state, grad_sum, loss_sum, aux_sum), _ = jax.lax.scan(
        body, init, (jnp.arange(accum_steps), micro))
    scale = 1.0 / accum_steps
    return (loss_sum * scale, model_state, jax.tree.map(lambda a: a * scale, aux_sum),
            jax.tree.map(lambda g: g * scale, grad_sum))

  def train_step(state: TrainState, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    progress = jnp.clip(state.step.astype(jnp.float32) / total_steps, 0.0, 1.0)
    loss, model_state, aux, grads = grads_of(state.params, state.model_state, batch, step_rng,
                                             progress)
    grad_norm = optim.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply_update():
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      return optax.apply_updates(state.params, updates), model_state, opt_state

    # The optimizer runs inside one conditional that otherwise keeps the old state. A select per
    # leaf compiles to one more kernel per parameter and optimizer leaf and keeps the new and old
    # state alive together (ActLumos teacher at 64 frames: 3-4 s more compile; DTCM with remat:
    # ~100 MiB more peak memory).
    params, model_state, opt_state = jax.lax.cond(
        finite, apply_update, lambda: (state.params, state.model_state, state.opt_state))
    new_state = TrainState(step=state.step + 1, params=params, model_state=model_state,
                           opt_state=opt_state)
    metrics = {"train/loss": loss, "train/grad_norm": grad_norm,
               "train/param_norm": optim.global_norm(trainable(state.params)),
               "train/lr": schedule(state.step), "nonfinite": ~finite}
    metrics.update({f"train/{k}": v for k, v in aux.items()})
    return new_state, metrics

  return train_step


def compiler_options(config: Mapping[str, Any]) -> dict[str, Any]:
  """XLA options of a run's compiled steps: `config.xla_opt_level` >= 0 sets XLA's backend
  optimisation level (0: the fastest compile, for smoke runs whose time is compilation; -1:
  XLA's default); on CPU, the options under which remat policies take effect
  (`darkjax.layers.remat.compiler_options`)."""
  options = remat_lib.compiler_options()
  level = int(config.get("xla_opt_level", -1))
  if level >= 0:
    options["xla_backend_optimization_level"] = level
  return options


def init_compiler_options() -> dict[str, Any]:
  """XLA options of the once-run initialisation programs (parameters, optimizer state).

  On CPU they compile with backend optimisation level 0: the per-parameter threefry and
  initialiser arithmetic otherwise takes several times longer to compile than to run (the tiny
  ActLumos teacher's init: 19 s -> 8 s). The values are the same function of the seed, rounded
  once differently (e.g. FMA contraction), and every run of a config gets the same ones. Other
  backends compile as usual."""
  if jax.default_backend() == "cpu":
    return {"xla_backend_optimization_level": 0}
  return {}


CONV_LOWERINGS = ("auto", "native")


def lowering_scope(config: Mapping[str, Any]) -> contextlib.AbstractContextManager:
  """Where a run traces its programs: `config.conv_lowering` "auto" lets each conv, pool and
  depthwise conv pick its lowering per backend (darkjax.layers.conv: the CPU rewrites on CPU);
  "native" gives XLA's own ops on every backend (`conv.native_lowering()`), the program an
  accelerator runs. Smoke runs (`runlocal`) use "native": their time is compilation, which the CPU
  rewrites lengthen, and their few steps gain nothing from faster steps (docs/benchmarks.md,
  "Compile time of smoke runs")."""
  lowering = config.get("conv_lowering", "auto")
  if lowering not in CONV_LOWERINGS:
    raise ValueError(f"config.conv_lowering {lowering!r} unknown; valid: {CONV_LOWERINGS}")
  return conv_lib.native_lowering() if lowering == "native" else contextlib.nullcontext()


# ================================================================ the trainer
@dataclasses.dataclass
class Trainer:
  """Runs `task` under `config` in `workdir`; evaluators get the attributes below."""
  config: mlc.ConfigDict
  workdir: str
  task: Task | None = None
  devices: Any = None
  # Set by __post_init__ (mesh) and _build (step, shardings); `state` holds the live TrainState.
  mesh: Any = dataclasses.field(init=False, default=None)
  batch_sharding: Any = dataclasses.field(init=False, default=None)
  replicated: Any = dataclasses.field(init=False, default=None)
  is_lead: bool = dataclasses.field(init=False, default=True)
  tx: Any = dataclasses.field(init=False, default=None)
  state_shardings: Any = dataclasses.field(init=False, default=None)
  variables_shardings: Any = dataclasses.field(init=False, default=None)
  abstract_state: Any = dataclasses.field(init=False, default=None)
  train_step: Callable | None = dataclasses.field(init=False, default=None)
  param_count: int = dataclasses.field(init=False, default=0)
  state: TrainState | None = dataclasses.field(init=False, default=None)
  writer: metrics_lib.MetricsWriter | None = dataclasses.field(init=False, default=None)
  evaluators: dict[str, Any] | None = dataclasses.field(init=False, default=None)
  compiler_options: dict[str, Any] = dataclasses.field(init=False, default_factory=dict)

  def __post_init__(self):
    self.workdir = os.fspath(paths.resolve(self.workdir))  # local: absolute; URLs as given
    check_required_weights(self.config)
    self.task = self.task or load_task(self.config)
    if self.config.total_epochs > 0:
      self.config.total_steps = steps_for_epochs(self.config, self.task)
    self.mesh = sharding.make_mesh(self.config.mesh, self.devices)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.replicated = sharding.replicated(self.mesh)
    self.is_lead = jax.process_index() == 0
    self.compiler_options = compiler_options(self.config)

  # ---------------------------------------------------------------- data
  def local_batch(self, global_batch: int) -> int:
    devices = self.mesh.devices.size
    if global_batch % devices:
      raise ValueError(f"batch size {global_batch} is not divisible by the {devices} devices "
                       f"of the mesh {dict(self.mesh.shape)}")
    return global_batch // jax.process_count()

  @property
  def variables(self) -> dict[str, Any]:
    """{"params": ..., <model_state collections>} of the live state (sharded jax.Arrays)."""
    return {"params": self.state.params, **self.state.model_state}

  # ---------------------------------------------------------------- init
  def _init_fn(self, tx, sample_batch):
    def init(rng):
      batch = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sample_batch)
      variables = self.task.init_variables(rng, batch)
      params = variables["params"]
      model_state = {k: v for k, v in variables.items() if k != "params"}
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                        opt_state=tx.init(params))
    return init

  def _build(self, sample_batch):
    cfg = self.config
    total = int(cfg.total_steps)
    abstract_params = jax.eval_shape(self._init_fn(optax.identity(), sample_batch),
                                     jax.random.key(0)).params
    tx, schedule = optim.make_optimizer(cfg.optimizer, total, abstract_params)
    self.tx = tx
    init = self._init_fn(tx, sample_batch)
    abstract_state = jax.eval_shape(init, jax.random.key(0))
    self.state_shardings = sharding.tree_shardings(
        self.mesh, abstract_state, tuple(cfg.sharding.rules), cfg.sharding.min_fsdp_size)
    self.variables_shardings = {"params": self.state_shardings.params,
                                **self.state_shardings.model_state}
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
        self.state_shardings)
    self._init = jax.jit(init, out_shardings=self.state_shardings,
                         compiler_options=init_compiler_options())
    step_fn = make_train_step(self.task, tx, schedule, total, int(cfg.accum_steps),
                              optim.frozen_mask(abstract_params, cfg.optimizer.frozen))
    self.train_step = jax.jit(
        step_fn, in_shardings=(self.state_shardings, self.batch_sharding, self.replicated),
        out_shardings=(self.state_shardings, self.replicated), donate_argnums=(0,),
        compiler_options=self.compiler_options)
    self.param_count = sum(int(np.prod(x.shape))
                           for x in jax.tree.leaves(abstract_state.params))

  def _fresh_state(self, rng) -> TrainState:
    """Initialised state, then `config.model_init` and the task's `init_from` (if any)."""
    state = self._init(rng)
    cfg = self.config
    if not cfg.model_init and not self.task.merges_pretrained:
      return state
    variables = jax.device_get({"params": state.params, **state.model_state})
    if cfg.model_init:
      variables = load_pretrained(variables, cfg.model_init, tuple(cfg.model_load.dont_load),
                                  cfg.model_load.prefix)
    if self.task.merges_pretrained:
      variables = self.task.init_from(variables)
    params = jax.device_put(variables.pop("params"), self.state_shardings.params)
    model_state = jax.device_put(variables, self.state_shardings.model_state)
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state,
                        compiler_options=init_compiler_options())(params)
    return state.replace(params=params, model_state=model_state, opt_state=opt_state)

  # ---------------------------------------------------------------- evals
  def evaluate(self, step: int) -> dict[str, Any]:
    """Runs every `config.evals` evaluator on the live state; writes scalars to the metrics and
    figures to WORKDIR/<stem>.png + TensorBoard; returns scalars and arrays."""
    with lowering_scope(self.config):
      return self._evaluate(step)

  def _evaluate(self, step: int) -> dict[str, Any]:
    if self.evaluators is None:
      self.evaluators = evaluators_lib.build(self.config.evals, self.task, self)
    results: dict[str, Any] = {}
    for evaluator in self.evaluators.values():
      result = evaluator.run(self.variables, step)
      if result.scalars:
        self.writer.write(step, result.scalars)
      for stem, figure in result.figures.items():
        path = plots.save(figure, os.path.join(self.workdir, f"{stem}.png"))
        self.writer.image("/".join(stem.rsplit("_", 1)), step, path)
      results.update(result.scalars)
      results.update(result.arrays)
    return results

  # ---------------------------------------------------------------- loop
  def run(self, until: int | None = None) -> dict[str, Any]:
    """Trains from the workdir's latest checkpoint (or a fresh state) to step `until` (default
    and at most `config.total_steps`), then checkpoints and evaluates at that step. Calling it
    again continues from that checkpoint with the step already compiled (darkjax.api).
    Everything it traces follows `config.conv_lowering` (`lowering_scope`)."""
    with lowering_scope(self.config):
      return self._run(until)

  def _run(self, until: int | None) -> dict[str, Any]:
    cfg = self.config
    run_start = time.time()
    paths.resolve(self.workdir).mkdir(parents=True, exist_ok=True)
    if self.is_lead:
      files.atomic_write_json(os.path.join(self.workdir, "config.json"),
                              json.loads(_config_json(cfg)), sort_keys=True)
    total = int(cfg.total_steps)
    last = total if until is None else min(int(until), total)
    train_ds = self.task.train_dataset(self.local_batch(cfg.input.batch_size))
    if self.train_step is None:
      # One example's shapes (batch dimension 1) drive init; the step compiles for the real batch.
      peek = iter(train_ds)
      sample = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype),
                            sharding.device_fields(next(peek)))
      peek.close()
      self._build(sample)
    train_iter = iter(train_ds)
    checkpointer = ckpt_lib.Checkpointer(self.workdir, keep=cfg.keep_checkpoints,
                                         async_save=cfg.async_checkpoints)
    self.writer = metrics_lib.MetricsWriter(self.workdir, enabled=self.is_lead)
    rng = jax.random.key(cfg.seed)
    start = checkpointer.latest_step()
    if start is not None:
      self.state, meta = checkpointer.restore(start, self.abstract_state, train_iter)
      log.info("resumed from %s/%d", checkpointer.directory, start)
      self.writer.truncate_after(start)
    else:
      start = 0
      self.state = self._fresh_state(jax.random.fold_in(rng, 1))
    step_rng = jax.random.fold_in(rng, 2)
    log.info("model %s: %s parameters; mesh %s", cfg.model.name, f"{self.param_count:,}",
             dict(self.mesh.shape))

    results: dict[str, Any] = {}
    bar = tqdm(total=total, initial=start, disable=not self.is_lead or not cfg.progress_bar,
               desc="train", unit="step", dynamic_ncols=True)
    pending = None   # metrics of the previous step, read one step late to keep dispatch async
    t0, steps_timed = time.time(), 0
    watch = preemption.PreemptionWatch()
    try:
      for step in range(start + 1, last + 1):
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = sharding.host_to_global(next(train_iter), self.batch_sharding)
          self.state, metrics = self.train_step(self.state, batch, step_rng)
        if pending is not None:
          self._check_finite(*pending, checkpointer)
        pending = (step, metrics)
        bar.update(1)
        steps_timed += 1
        if step % cfg.log_every == 0 or step == last:
          self._check_finite(step, metrics, checkpointer)
          scalars = {k: v for k, v in jax.device_get(metrics).items() if k != "nonfinite"}
          scalars["train/steps_per_sec"] = steps_timed / max(time.time() - t0, 1e-9)
          t0, steps_timed = time.time(), 0
          self.writer.write(step, scalars)
          bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
        preempted = watch.reached(step)   # every process calls it at every step
        if preempted or step % cfg.checkpoint_every == 0 or step == last:
          self._check_finite(step, metrics, checkpointer)
          checkpointer.save(step, self.state, train_iter, {"step": step})
        if preempted:
          checkpointer.wait()
          raise preemption.Preempted(step, f"{checkpointer.directory}/{step}")
        if cfg.eval_every >= 0 and ((cfg.eval_every and step % cfg.eval_every == 0)
                                    or step == last):
          results = self.evaluate(step)
          t0, steps_timed = time.time(), 0
      if pending is not None:
        self._check_finite(*pending, checkpointer)
    finally:
      watch.close()
      bar.close()
      train_iter.close()
      checkpointer.close()
      self.writer.close()
    if self.is_lead and last == total and start < last:
      write_report(self.workdir, cfg, self.param_count, time.time() - run_start, results)
    return results

  def _check_finite(self, step: int, metrics, checkpointer) -> None:
    if bool(jax.device_get(metrics["nonfinite"])):
      checkpointer.wait()
      latest = checkpointer.latest_step()
      raise NonFiniteLossError(
          f"step {step}: loss or gradient is not finite (loss={float(metrics['train/loss'])}); "
          f"training stopped. Last good checkpoint: "
          f"{f'{checkpointer.directory}/{latest}' if latest is not None else 'none'}")


def write_report(workdir: str, config: mlc.ConfigDict, param_count: int, seconds: float,
                 results: Mapping[str, Any]) -> str:
  """WORKDIR/report.md: what ran, the final evaluation and where the artifacts are."""
  scalars = {k: v for k, v in results.items() if isinstance(v, float) and "per_class" not in k}
  per_class = {k.split("/", 1)[1]: v for k, v in results.items() if "per_class/" in k}
  lines = [f"# darkjax run: {config.trainer} / {config.model.name}", "",
           f"- dataset: `{config.input.data.name}` ({config.input.data.dir})",
           f"- parameters: {param_count:,}", f"- steps: {config.total_steps}, global batch "
           f"{config.input.batch_size}", f"- wall time of this invocation: {seconds:.0f} s", "",
           "| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in sorted(scalars.items())]
  if per_class:
    lines += ["", "| class | accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in per_class.items()]
  pngs = sorted(p.name for p in paths.resolve(workdir).iterdir() if p.name.endswith(".png"))
  lines += ["", "Artifacts: `metrics.jsonl`, `tensorboard/`, `checkpoints/`, `config.json`"
            + "".join(f", `{p}`" for p in pngs), ""]
  path = paths.resolve(workdir) / "report.md"
  path.write_text("\n".join(lines), encoding="utf-8")
  return os.fspath(path)


def steps_for_epochs(config: mlc.ConfigDict, task: Task) -> int:
  """ceil(config.total_epochs x the primary data source's train-split size / global batch)."""
  data = task.data_sources[next(iter(task.data_sources))]
  examples = data.dataset.num_examples(data.cfg.data.split)
  steps = math.ceil(config.total_epochs * examples / config.input.batch_size)
  log.info("%g epochs of %d training clips at batch %d: %d steps", config.total_epochs, examples,
           config.input.batch_size, steps)
  return steps


class MissingWeightsError(ValueError):
  """A paper config runs without the pretrained weights its recipe starts from."""


def _get_key(config: mlc.ConfigDict, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def check_required_weights(config: mlc.ConfigDict) -> None:
  """Raises MissingWeightsError naming every `config.required_weights` entry whose config key is
  empty: the weight file's public name, where it is published, the command that converts it and
  the config arg that takes it, and `init=none` as the explicit opt-out."""
  missing = []
  for name, entry in config.required_weights.items():
    if _get_key(config, entry.key):
      continue
    lines = [f"- {name}: config arg `{entry.arg}` (config.{entry.key}) is empty; the recipe starts "
             f"from {entry.file} ({entry.source})."]
    if entry.command:
      lines.append(f"  Convert it once: {entry.command}")
    lines.append(f"  Then pass `{entry.arg}=PATH` in the config arg string.")
    missing.append("\n".join(lines))
  if missing:
    raise MissingWeightsError(
        "this config is a paper's recipe, which starts from pretrained weights that were not "
        "given:\n" + "\n".join(missing) + "\nTo train from random initialisation instead, add "
        "`init=none` to the config arg string.")


def run(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains as `config.trainer` says. A trainer module with several phases (e.g. teacher, then
  student) defines its own `run(config, workdir)` that runs one `Trainer` per phase, each in its
  own sub-directory so every phase resumes on its own."""
  module = trainer_module(config)
  if hasattr(module, "run"):
    return module.run(config, workdir)
  return Trainer(config, workdir, task=module.Task(config)).run()
