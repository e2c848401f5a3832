"""The one generic trainer. Paper-specific pieces (model, loss, data, eval) come from a `Task` in
darkjax/trainers/<name>.py (the contract: darkjax/task.py); this module owns the mesh, sharded
init, checkpoints, resume, the NaN guard, logging and the loop. The step itself is
darkjax/step.py; a paper's declared `PHASES` run one Trainer each (darkjax/phases.py); what a
resumed run changes against the configs that trained its workdir is darkjax/config_history.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm import tqdm

from darkjax import aot
from darkjax import checkpoint as ckpt_lib
from darkjax import config as config_lib
from darkjax import config_history
from darkjax import evaluators as evaluators_lib
from darkjax import fit as fit_lib
from darkjax import file_state
from darkjax import metrics as metrics_lib
from darkjax import model_init
from darkjax import optim
from darkjax import paths, plots, preemption, profiling, reports, sharding
from darkjax import targets
from darkjax import task as task_lib
from darkjax.data import pipeline
from darkjax.layers import precision
from darkjax.step import TrainState, make_train_step
from darkjax.layers import conv as conv_lib

log = logging.getLogger("darkjax")

# Where a run evaluated again with other evaluation settings moves the figures of its earlier
# evaluation that the new one does not draw (a numbered directory each time); the workdir's
# figures that no evaluation draws stay. An evaluation made again draws its figures into
# STAGED_FIGURES first: a failed one leaves those of the logged evaluation in place.
FIGURES_SET_ASIDE = "earlier_figures"
STAGED_FIGURES = ".evaluating"
KEPT_FIGURES = (profiling.FIGURE,)   # a profile's, no evaluation's


def _move(source: str, target: str) -> None:
  paths.resolve(source).replace(paths.resolve(target))


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss or gradient; the message names the step."""


class CheckpointMismatchError(RuntimeError):
  """A workdir's checkpoint does not restore into the run's state (another model, optimizer or
  sharding); the message names the checkpoint and the settings that differ from its run's."""


# ================================================================ sharded state init
def compiler_options(config: Mapping[str, Any], platform: str,
                     target: str = "") -> dict[str, Any]:
  """XLA options of a run's compiled steps on `platform`: `targets.compiler_options` (on CPU, the
  options under which remat policies take effect; for a compile-only `target`, what it needs; on
  GPU, channels-last convolutions), and `config.xla_opt_level` >= 0 sets XLA's backend
  optimisation level (0: the fastest compile, `targets.fastest_compile_options`, for smoke runs
  whose time is compilation; -1: XLA's default)."""
  options = targets.compiler_options(platform, target)
  level = int(config.get("xla_opt_level", -1))
  if level == 0:
    options.update(targets.fastest_compile_options(platform))
  elif level > 0:
    options["xla_backend_optimization_level"] = level
  return options


def lowering_scope(config: Mapping[str, Any]) -> contextlib.AbstractContextManager:
  """Where a run traces its programs: `config.conv_lowering` "auto" lets each conv, pool and
  depthwise conv pick its lowering for the compile target (darkjax.layers.conv: the CPU rewrites
  on CPU, channels-last convolutions on GPU); "native" gives XLA's native 3D ops on every target
  (`conv.native_lowering()`), the program a TPU runs. Smoke runs (`runlocal`) of the (2+1)D
  networks use "native", whose CPU rewrites lengthen their compile and gain their few steps
  nothing; those of networks of full 3D kernels "auto", which compile as fast and run several
  times faster (`configs.common.smoke_run`; docs/benchmarks.md, "Compile time of smoke runs")."""
  if config_lib.conv_lowering(config) == "native":
    return conv_lib.native_lowering()
  return contextlib.nullcontext()


def _init_key(seed: int) -> jax.Array:
  """The key of a fresh state's init (`Trainer.init_state`)."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def _wait_for(thread: threading.Thread, done: threading.Event) -> bool:
  """Waits for `thread` (a compile) to set `done` and end, through Ctrl-C too: XLA cannot stop a
  compile, and a process that exits while one runs on a thread aborts. (An event, not `join`
  alone: an interrupted `join` can leave `is_alive()` false while the thread runs.) Returns whether
  Ctrl-C came meanwhile."""
  interrupted = False
  while True:
    try:
      done.wait()
      thread.join()
      return interrupted
    except KeyboardInterrupt:
      if not interrupted:
        log.warning("interrupted: stopping once the train step's compile ends (XLA cannot stop "
                    "a compile)")
      interrupted = True


# ================================================================ the trainer
@dataclasses.dataclass
class Trainer:
  """Runs `task` under `config` in `workdir`; evaluators get the attributes below."""
  config: mlc.ConfigDict
  workdir: str
  task: task_lib.Task | None = None
  devices: Any = None
  phase: str = "train"   # the phase's name in messages
  # A compile-only target ("h100:8", "tpu-v5e:2x2"; darkjax.aot): the mesh is its devices (unless
  # `devices` is given), steps compile with its options and memory is checked against its HBM.
  target: str = ""
  # The progress bar shown on a terminal only and cleared when the phase ends: for a runner that
  # prints its own line per run (darkjax.tools.experiment).
  transient_bar: bool = False
  # Fields of the config this phase's training never reads (`task.Phase.ignores`): a resume whose
  # config differs from the one that trained the checkpoint only there trains alike (an
  # experiment's arm handed the default arm's phase), so it is no changed-settings warning.
  ignores: Sequence[str] = ()
  # Set by __post_init__ (mesh) and build (step, shardings); `state` holds the live TrainState.
  mesh: Any = dataclasses.field(init=False, default=None)
  batch_sharding: Any = dataclasses.field(init=False, default=None)
  replicated: Any = dataclasses.field(init=False, default=None)
  is_lead: bool = dataclasses.field(init=False, default=True)
  tx: Any = dataclasses.field(init=False, default=None)
  state_shardings: Any = dataclasses.field(init=False, default=None)
  variables_shardings: Any = dataclasses.field(init=False, default=None)
  abstract_state: Any = dataclasses.field(init=False, default=None)
  train_step: Callable | None = dataclasses.field(init=False, default=None)
  compiled_step: Any = dataclasses.field(init=False, default=None)   # set by compile_step
  param_count: int = dataclasses.field(init=False, default=0)
  frozen_count: int = dataclasses.field(init=False, default=0)   # of them, optimizer.frozen's
  state: TrainState | None = dataclasses.field(init=False, default=None)
  writer: metrics_lib.MetricsWriter | None = dataclasses.field(init=False, default=None)
  evaluators: dict[str, Any] | None = dataclasses.field(init=False, default=None)
  compiler_options: dict[str, Any] = dataclasses.field(init=False, default_factory=dict)
  platform: str = dataclasses.field(init=False, default="")
  _checkpointer: Any = dataclasses.field(init=False, default=None)
  _sample: Any = dataclasses.field(init=False, default=None)
  _init_compiled: bool = dataclasses.field(init=False, default=False)
  _pretrained_checked: bool = dataclasses.field(init=False, default=False)
  _flops: tuple[float | None] | None = dataclasses.field(init=False, default=None)   # step_flops
  # compile_evals' outcome per eval batch: its figures, or the out-of-memory error it raised
  _evals_compiled: dict[int, Any] = dataclasses.field(init=False, default_factory=dict)
  reported: bool = dataclasses.field(init=False, default=False)   # this run wrote report.md
  # the logged evaluation of the restored step was of other settings, and this run makes none
  _stale_evaluation: bool = dataclasses.field(init=False, default=False)
  _drawn: set[str] = dataclasses.field(init=False, default_factory=set)   # this run's figures
  # the step the last `run` / `evaluate_again` evaluated (None: it evaluated none)
  evaluated_step: int | None = dataclasses.field(init=False, default=None)

  def __post_init__(self):
    self.workdir = os.fspath(paths.resolve(self.workdir))  # local: absolute; URLs as given
    config_lib.check_required_weights(self.config)
    if self.target and self.devices is None:
      self.devices = aot.compile_only_devices(self.target)
    self.mesh = sharding.make_mesh(self.config.mesh, self.devices)
    self.platform = targets.platform_of(self.mesh)   # what every program here compiles for
    # compute_dtype "auto" means the mesh's platform's dtype, not the host's (a compile-only
    # target's step is the bf16 one a run there trains)
    requested = self.config.get("compute_dtype", "auto")
    self.config = config_lib.resolve(self.config, self.platform)
    self.task = self.task or task_lib.load_task(self.config)
    task_dtype, dtype = getattr(self.task, "dtype", None), config_lib.compute_dtype(self.config)
    if task_dtype is not None and task_dtype != dtype:
      raise ValueError(f"phase {self.phase}: the task computes in {jnp.dtype(task_dtype).name} but "
                       f"this Trainer compiles for {self.platform}, where compute_dtype "
                       f"{requested!r} is {dtype.name}: build the task from "
                       f"darkjax.config.resolve(config, {self.platform!r})")
    try:   # the batches that run on this mesh (config.batch_rounding); config.json records them
      self.config, notes = config_lib.round_batches(self.config, sharding.batch_devices(self.mesh))
    except config_lib.ConfigError as error:
      raise config_lib.ConfigError(f"phase {self.phase}: {error}") from None
    for note in notes:
      log.info("phase %s: %s", self.phase, note)
    if self.config.total_epochs > 0:
      self.config.total_steps = steps_for_epochs(self.config, self.task)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.replicated = sharding.replicated(self.mesh)
    self.is_lead = jax.process_index() == 0
    self.compiler_options = compiler_options(self.config, self.platform, self.target)

  @contextlib.contextmanager
  def scope(self) -> Iterator[None]:
    """Where this Trainer's programs are traced: for its mesh's platform
    (`targets.compiling_for`: lowerings and precision read it) with the config's conv lowering
    (`lowering_scope`), and with a batch over more than one device the 16-bit layers' kernel
    gradients in float32, so that their sum across the devices is a float32 one
    (`precision.float32_weight_gradients`). A tool that traces them itself enters it too."""
    spread = sharding.batch_devices(self.mesh) > 1
    # each device's own convolution gradients summed in float32 (on a GPU), and with fsdp
    # reduce-scattered onto each kernel's split (on every platform; fsdp_auto's split: a kernel a
    # sharding rule splits otherwise has its gradient resharded where it is used)
    kernel_spec = None
    if self.mesh.shape["fsdp"] > 1:
      kernel_spec = functools.partial(sharding.fsdp_auto_spec, fsdp_size=self.mesh.shape["fsdp"],
                                      min_fsdp_size=self.config.sharding.min_fsdp_size)
    with (targets.compiling_for(self.platform), lowering_scope(self.config),
          precision.float32_weight_gradients(spread, self.mesh, sharding.BATCH_AXES,
                                             kernel_spec)):
      yield

  # ---------------------------------------------------------------- data
  def local_batch(self, global_batch: int) -> int:
    """This process's rows of a global batch. `config.input.batch_size` and `eval_batch_size`
    divide by the mesh's batch devices (`darkjax.config.round_batches` made them so), hence by the
    processes, which hold equal numbers of the mesh's devices."""
    devices, processes = sharding.batch_devices(self.mesh), jax.process_count()
    if global_batch % devices or global_batch % processes:
      raise ValueError(f"batch size {global_batch} is not divisible by the {devices} devices "
                       f"of the mesh {dict(self.mesh.shape)} on {processes} process(es)")
    return global_batch // processes

  @property
  def variables(self) -> dict[str, Any]:
    """{"params": ..., <model_state collections>} of the live state (sharded jax.Arrays)."""
    return {"params": self.state.params, **self.state.model_state}

  # ---------------------------------------------------------------- init
  def _init_fn(self, tx, sample_batch, init_variables):
    """The fresh state's init from a key: `init_variables(rng, batch)`, the Task's, then the
    optimizer's state."""
    def init(rng):
      batch = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sample_batch)
      variables = init_variables(rng, batch)
      params = variables["params"]
      model_state = {k: v for k, v in variables.items() if k != "params"}
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                        opt_state=tx.init(params))
    return init

  def build(self, sample_batch: Any = None, dataset: Any = None) -> None:
    """Builds the sharded init and the jitted train step (once; later calls do nothing).
    `sample_batch`: one example's shapes and dtypes (batch dimension 1; default: the first example
    of `dataset`, else of the task's train dataset); the step compiles for the real batch on its
    first call."""
    if self.train_step is not None:
      return
    if sample_batch is None:
      if dataset is None:
        dataset = self.task.train_dataset(self.local_batch(self.config.input.batch_size))
      peek = iter(dataset)
      try:   # closed on an error too: its file readers and prefetch threads stop before it rises
        sample_batch = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype),
            sharding.device_fields(next(peek)))
      finally:
        peek.close()
    self._sample = sample_batch
    cfg = self.config
    total = int(cfg.total_steps)
    # The state's shapes from one abstract trace of the init: the optimizer's state is shaped
    # from the parameters alone. The model's init is one jitted function for both traces: the
    # init program's trace reuses the jaxpr this one makes (a paper model's module tree is
    # seconds of Python to trace), the program the same.
    init_variables = jax.jit(self.task.init_variables)
    abstract_state = jax.eval_shape(self._init_fn(optax.identity(), sample_batch, init_variables),
                                    jax.random.key(0))
    abstract_params = abstract_state.params
    tx, schedule = optim.make_optimizer(cfg.optimizer, total, abstract_params)
    self.tx = tx
    init = self._init_fn(tx, sample_batch, init_variables)
    abstract_state = abstract_state.replace(opt_state=jax.eval_shape(tx.init, abstract_params))
    self.state_shardings = sharding.tree_shardings(
        self.mesh, abstract_state, tuple(cfg.sharding.rules), cfg.sharding.min_fsdp_size)
    self.variables_shardings = {"params": self.state_shardings.params,
                                **self.state_shardings.model_state}
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
        self.state_shardings)
    self.param_count = sum(int(np.prod(x.shape))
                           for x in jax.tree.leaves(abstract_state.params))
    self._init = targets.init_jit(init, self.platform, self.param_count,
                                  out_shardings=self.state_shardings)
    frozen = optim.frozen_mask(abstract_params, cfg.optimizer.frozen)
    self.frozen_count = 0 if frozen is None else sum(
        int(np.prod(x.shape)) for x, is_frozen in zip(jax.tree.leaves(abstract_params),
                                                      jax.tree.leaves(frozen)) if is_frozen)
    step_fn = make_train_step(self.task, tx, schedule, total, int(cfg.accum_steps), frozen)
    self.train_step = jax.jit(
        step_fn, in_shardings=(self.state_shardings, self.batch_sharding, self.replicated),
        out_shardings=(self.state_shardings, self.replicated), donate_argnums=(0,),
        compiler_options=self.compiler_options)

  def init_state(self, from_checkpoint: bool = True, data_iterator: Any = None,
                 pretrained: bool = True) -> int:
    """Sets `state` and returns its step: restored from the workdir's latest checkpoint (with
    `data_iterator`'s position, when given) if `from_checkpoint` and there is one, else a fresh
    state from `config.seed`, with `config.model_init` and the task's `init_from` merged in unless
    `pretrained=False`. Builds first if needed."""
    self.build()
    if from_checkpoint:
      checkpointer = self._checkpointer or ckpt_lib.Checkpointer(self.workdir)
      try:
        start = checkpointer.latest_step()
        if start is not None:
          try:
            self.state, _ = checkpointer.restore(start, self.abstract_state, data_iterator)
          except (ckpt_lib.ProcessCountError, ckpt_lib.StateMismatchError) as error:
            raise self._mismatch(checkpointer, start, error) from error
          except ckpt_lib.DamagedCheckpointError:   # its files, not the config
            raise
          except RuntimeError as error:
            found = str(error.__cause__ or error)
            if len(found) > 1500:   # orbax lists every leaf of both trees
              found = f"{found[:1500]} ... ({len(found)} characters in all)"
            raise CheckpointMismatchError(
                f"cannot restore checkpoint {checkpointer.directory}/{start} into this run's "
                f"state. {self.history.describe_changes()}\norbax: {found}") from error
          log.info("resumed from %s/%d", checkpointer.directory, start)
          return start
      finally:
        if checkpointer is not self._checkpointer:
          checkpointer.close()
    self.state = self._fresh_state(_init_key(self.config.seed), pretrained)
    return 0

  def _mismatch(self, checkpointer: ckpt_lib.Checkpointer, step: int,
                error: ckpt_lib.ProcessCountError | ckpt_lib.StateMismatchError
                ) -> CheckpointMismatchError:
    """The error of a checkpoint that does not restore into this run: written by another number of
    processes, or whose arrays differ from this run's state (the config changes that explain it)."""
    if isinstance(error, ckpt_lib.ProcessCountError):   # not the config's doing
      return CheckpointMismatchError(str(error))
    return CheckpointMismatchError(
        f"cannot restore checkpoint {checkpointer.directory}/{step} into this run's state. "
        f"{self.history.describe_changes()}\n"
        f"Its {ckpt_lib.describe_differences(error.differences)}")

  def check_resumable(self) -> None:
    """Raises CheckpointMismatchError where the workdir's latest checkpoint will not restore
    into this run's state (`init_state` would refuse it: arrays of other names, shapes or dtypes,
    or another process count), read from its metadata before anything compiles: a rerun with
    another model learns it before the step's compile (minutes on a TPU), not after. Nothing for
    a compile-only `target` or a workdir without a checkpoint."""
    if self.target:
      return
    with self.scope():
      self.build()
    checkpointer = self._checkpointer or ckpt_lib.Checkpointer(self.workdir)
    try:
      step = checkpointer.latest_step()
      if step is None:
        return
      checkpointer.check_restorable(step, self.abstract_state)
    except (ckpt_lib.ProcessCountError, ckpt_lib.StateMismatchError) as error:
      raise self._mismatch(checkpointer, step, error) from error
    finally:
      if checkpointer is not self._checkpointer:
        checkpointer.close()

  def _input_workers(self, resuming: bool) -> int:
    """The input worker processes of this run, recorded in `config.input.workers` (and so in
    config.json). A checkpoint holds each worker's data position, so a resumed run keeps the count
    its run started with: `-1` (`config.auto_input_workers`) takes it from WORKDIR/config.json, and
    another explicit count stops the run before anything is restored."""
    setting = config_lib.input_workers(self.config)
    path, saved_config = self.history.saved()
    saved = saved_config.get("input.workers") if resuming and saved_config else None
    if setting == config_lib.AUTO_WORKERS:
      if isinstance(saved, int) and saved >= 0:
        workers = saved
        log.info("phase %s: input.workers=-1: %d worker processes, the count the checkpoint's run "
                 "started with (%s)", self.phase, workers, path)
      else:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
        workers, note = config_lib.auto_input_workers(self.config, self.platform,
                                                      len(self.mesh.local_devices), cores)
        log.info("phase %s: %s", self.phase, note)
    else:
      workers = setting
      if isinstance(saved, int) and saved >= 0 and saved != workers:
        raise config_lib.ConfigError(
            f"config.input.workers is {workers}, but the checkpoint in {self.workdir} was "
            f"trained with {saved} input worker processes ({path}), and its data position is "
            f"each of those workers' place in the data. Rerun with --config.input.workers={saved}"
            " (or -1, which keeps the checkpoint's count), or start in a new --workdir.")
    self.config.input.workers = workers
    return workers

  @property
  def history(self) -> config_history.ConfigHistory:
    """This run's config against the configs its workdir was trained with."""
    return config_history.ConfigHistory(self.workdir, self.config, self.phase, self.ignores)

  def finished_run_refusal(self) -> config_lib.ConfigError | None:
    """What `run` would refuse in a directory whose latest checkpoint is of this config's last
    step (`ConfigHistory.finished_run_refusal`): `darkjax.phases.run_phases` asks every phase of
    a run before the first runs, so that no earlier phase evaluates with the new settings before
    a later one refuses them."""
    return self.history.finished_run_refusal()

  def host_variables(self) -> dict[str, Any]:
    """The live state's variables as host numpy arrays: what a later phase starts from."""
    return jax.device_get(self.variables)

  def _compile_cache(self) -> contextlib.AbstractContextManager:
    """Where this Trainer's ahead-of-time compiles go: for a compile-only target past JAX's
    persistent cache (`targets.without_compilation_cache`), else through it."""
    return targets.without_compilation_cache() if self.target else contextlib.nullcontext()

  def compile_step(self) -> int | None:
    """Compiles the train step ahead of time for the config's global batch (the run's first step
    reuses this compilation); returns the bytes one device needs while it runs (None: XLA gives
    no memory analysis)."""
    with self.scope(), self._compile_cache():
      args = self._abstract_step_args()   # builds the step first
      compiled = self.train_step.lower(*args).compile()
    self.compiled_step = compiled   # for its optimized HLO (darkjax.tools.fit --traffic)
    return fit_lib.step_bytes(compiled)

  def _abstract_step_args(self) -> tuple[Any, Any, Any]:
    """The train step's (state, batch, rng) as abstract values for the config's global batch
    (within `scope()`)."""
    self.build()
    batch = {k: jax.ShapeDtypeStruct((int(self.config.input.batch_size),) + s.shape[1:],
                                     s.dtype, sharding=self.batch_sharding)
             for k, s in self._sample.items()}
    # Abstract, as the state and batch: a compile-only mesh's devices take no host array. No
    # sharding of its own (the step's in_shardings replicate it): the run's key is a fresh,
    # uncommitted one, and the first step reuses this compilation only if the two look alike.
    rng = jax.eval_shape(lambda: jax.random.key(0))
    return self.abstract_state, batch, rng

  def step_flops(self) -> float | None:
    """XLA's count of one train step's floating-point operations per device (the global
    program's over the mesh's devices; `profiling.step_flops`), None where the backend gives
    none (a compile-only target). Counted once, from the step traced and lowered again with its
    scans unrolled (seconds for the largest paper steps on 2 cores; nothing is compiled)."""
    if self._flops is None:
      flops = None
      with self.scope():
        args = self._abstract_step_args()   # builds the step first
        if hasattr(self.train_step, "trace"):   # a jitted step (not a test's stand-in)
          try:
            flops = profiling.step_flops(self.train_step, *args)
          except Exception as error:  # pylint: disable=broad-except  (a metric, not the run)
            log.warning("XLA's operation count of the train step failed (%s): no "
                        "train/tflops_per_device or train/mfu", error)
      self._flops = (None if flops is None else flops / self.mesh.size,)
    return self._flops[0]

  def compile_init(self) -> None:
    """Compiles the fresh state's init program ahead of its one call (`init_state`, which then
    reuses this compilation); runs nothing on the devices. Once: later calls do nothing."""
    if self._init_compiled:
      return
    with self.scope(), self._compile_cache():
      self.build()
      self._init.lower(jax.eval_shape(_init_key, 0)).compile()
    self._init_compiled = True

  def compile_start(self, checkpoint: str | None = None, fresh: bool | None = None,
                    evals: bool = False) -> int | None:
    """Compiles what a run needs before its first step: the train step, on a thread
    (`step_compiling_aside`), and beside it the init program if the run starts `fresh` (default:
    the workdir holds no checkpoint; `checkpoint`: the latest, for an out-of-memory message), then
    with `evals` the evaluations' programs (`compile_evals`; one the device's memory refuses is
    left for the caller's `compile_evals`, which raises it again without compiling, to report).
    Returns `compile_step`'s bytes per device (None: not known). `darkjax.fit` checks these
    against the device's memory; the run's first step, init and evaluations then reuse the
    compilations."""
    if fresh is None:
      fresh = not ckpt_lib.has_steps(self.workdir)
    if fresh:
      self.check_pretrained()
    else:
      self.check_resumable()
    with self.step_compiling_aside(checkpoint):
      if fresh:
        self.compile_init()
      if evals:
        try:
          self.compile_evals()
        except jax.errors.JaxRuntimeError as error:
          if not fit_lib.out_of_memory(error):
            raise
    return None if self.compiled_step is None else fit_lib.step_bytes(self.compiled_step)

  def compile_evals(self) -> dict[str, int]:
    """Compiles the programs of every `config.evals` evaluator that compiles ahead
    (`compile(abstract_variables)`: classification, the two-stream video scores) for the config's
    eval batch; their first run reuses the compilations. Returns, per such evaluator, the bytes one
    device holds while it runs with the train state resident (the optimizer's state stays on the
    devices during an evaluation), leaving out those that tell none. Once per eval batch: a later
    call returns (or raises, for a compile the device's memory refused) what the first found,
    reading no example and compiling nothing."""
    batch = int(self.config.input.eval_batch_size)
    if batch in self._evals_compiled:
      found = self._evals_compiled[batch]
      if isinstance(found, BaseException):
        raise found
      return dict(found)
    with self.scope(), self._compile_cache():
      self.build()
      if self.evaluators is None:
        self.evaluators = evaluators_lib.build(self.config.evals, self.task, self)
      variables = {"params": self.abstract_state.params, **self.abstract_state.model_state}
      resident = fit_lib.tree_bytes(self.abstract_state) - fit_lib.tree_bytes(variables)
      needs = {}
      for name, evaluator in self.evaluators.items():
        compile_fn = getattr(evaluator, "compile", None)
        try:
          need = compile_fn(variables) if compile_fn is not None else None
        except jax.errors.JaxRuntimeError as error:
          if fit_lib.out_of_memory(error):   # XLA:TPU refuses a program over the chip's HBM
            self._evals_compiled[batch] = error
          raise
        if need is not None:
          needs[name] = need + resident
    self._evals_compiled[batch] = needs
    return dict(needs)

  @contextlib.contextmanager
  def step_compiling_aside(self, checkpoint: str | None = None) -> Iterator[None]:
    """The train step compiles on a thread of its own (`compile_step`, unless compiled already)
    while the block runs; leaving the block waits for that compile and raises what it raised (a
    compile that finds the step too large for the device as `DeviceMemoryError`, naming
    `checkpoint`, the run's latest). A cold start's other compiles overlap the step's, which on a
    GPU is mostly XLA timing candidate kernels on the device and on a TPU minutes on the host
    (docs/benchmarks.md, "Cold start: the init compiles beside the step"). The block should run
    nothing on the devices: a GPU's autotuning times kernels on them. The block's own error, or a
    Ctrl-C, is raised once the compile has ended: XLA cannot stop a compile, and a process that
    exits while one runs aborts."""
    with self.scope():
      self.build()
    if self.compiled_step is not None or not hasattr(self.train_step, "lower"):
      yield   # compiled already, or a step that is no jitted function (a test's stand-in)
      return
    failed: list[BaseException] = []
    done = threading.Event()

    def compile_step() -> None:
      try:
        self.compile_step()
      except BaseException as error:  # pylint: disable=broad-except
        failed.append(error)
      finally:
        done.set()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(compile_step,),
                              name=f"darkjax-compile-{self.phase}")
    thread.start()
    try:
      yield
    finally:
      interrupted = _wait_for(thread, done)
    if interrupted:
      raise KeyboardInterrupt
    if failed:
      error = failed[0]
      if isinstance(error, jax.errors.JaxRuntimeError) and fit_lib.out_of_memory(error):
        raise fit_lib.CompileMemoryError(fit_lib.runtime_oom_message(
            f"phase {self.phase}, compiling the train step", error, checkpoint),
            fit_lib.compile_failure(error)) from None
      raise error

  def _fresh_state(self, rng, pretrained: bool = True) -> TrainState:
    """Initialised state, then `config.model_init` and the task's `init_from` (if any)."""
    state = self._init(rng)
    cfg = self.config
    if not pretrained or (not cfg.model_init and not self.task.merges_pretrained):
      return state
    variables = self._merge_pretrained(
        jax.device_get({"params": state.params, **state.model_state}))
    params = jax.device_put(variables.pop("params"), self.state_shardings.params)
    model_state = jax.device_put(variables, self.state_shardings.model_state)
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state,
                        compiler_options=targets.init_compiler_options(self.platform))(params)
    return state.replace(params=params, model_state=model_state, opt_state=opt_state)

  def _merge_pretrained(self, variables: dict) -> dict:
    """Host `variables` with `config.model_init` and the task's `init_from` merged in."""
    cfg = self.config
    if cfg.model_init:
      variables = model_init.load_pretrained(
          variables, cfg.model_init, tuple(cfg.model_load.dont_load), cfg.model_load.prefix,
          config_lib.pretrained_normalise(cfg), cfg.model.name)
    if self.task.merges_pretrained:
      variables = self.task.init_from(variables)
    return variables

  def check_pretrained(self) -> None:
    """Merges what a fresh state starts from (`config.model_init`, the task's `init_from`: weight
    files, earlier phases' variables) into zeros of the state's shapes (no memory of their own),
    before anything compiles: weights that are missing, unreadable, unsafe to unpickle, of another
    architecture or trained on other input normalisation stop the run before the step's compile
    (minutes for a paper's step on a TPU), which cannot be interrupted, not after it. The merge
    that counts (`init_state`) reads the files again. Once per Trainer; nothing for a compile-only
    `target`, whose runs start from no weights."""
    cfg = self.config
    if (self._pretrained_checked or self.target
        or not (cfg.model_init or self.task.merges_pretrained)):
      return
    with self.scope():
      self.build()
      shapes = {"params": self.abstract_state.params, **self.abstract_state.model_state}
      self._merge_pretrained(jax.tree.map(
          lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), shapes))
    self._pretrained_checked = True

  # ---------------------------------------------------------------- evals
  def evaluate(self, step: int) -> dict[str, Any]:
    """Runs every `config.evals` evaluator on the live state; writes scalars to the metrics and
    figures to WORKDIR/<stem>.png + TensorBoard; returns scalars and arrays."""
    with self.scope():
      return self._evaluate(step)

  def _evaluate(self, step: int) -> dict[str, Any]:
    self.evaluated_step = step
    if self.evaluators is None:
      self.evaluators = evaluators_lib.build(self.config.evals, self.task, self)
    results: dict[str, Any] = {}
    for evaluator in self.evaluators.values():
      result = evaluator.run(self.variables, step)
      if result.scalars:
        self.writer.write(step, result.scalars)
      for stem, figure in result.figures.items():
        path = os.path.join(self.workdir, f"{stem}.png")
        if self.writer.holding:   # drawn aside, in place once the whole evaluation succeeded
          staged = plots.save(figure, os.path.join(self.workdir, STAGED_FIGURES, f"{stem}.png"))
          self.writer.defer(functools.partial(_move, staged, path))
        else:
          plots.save(figure, path)
        self._drawn.add(f"{stem}.png")
        self.writer.image("/".join(stem.rsplit("_", 1)), step, path)
      results.update(result.scalars)
      results.update(result.arrays)
    return results

  def evaluate_again(self) -> dict[str, Any]:
    """Evaluates the live state (trained or restored by `run`) again (a notebook's
    `Run.evaluate`): its step's logged evaluation is replaced (kept in
    metrics.EARLIER_EVALUATIONS where made with other evaluation settings, whose values the
    step's config file then records: every evaluation logged with the earlier settings moves,
    and the figures this one does not draw again move to FIGURES_SET_ASIDE) and, at the last
    step, report.md is written again. A failed evaluation changes nothing logged."""
    if self.state is None:
      raise ValueError(f"phase {self.phase}: no state to evaluate; Trainer.run() first")
    started = time.time()
    step = int(jax.device_get(self.state.step))
    history = self.history
    path, saved = history.of_step(step)
    earlier = None
    if self.is_lead and saved is not None:
      if any(config_lib.evaluation_field(key) for key in history.changes(saved, only_read=True)):
        earlier = config_history.evaluation_settings(saved)
    self.writer = metrics_lib.MetricsWriter(self.workdir, enabled=self.is_lead)
    self._drawn = set()
    try:
      with self._evaluation_held():   # a failed evaluation leaves the logged one as it was
        results = self.evaluate(step)
        if earlier is not None:
          self.writer.set_aside_evaluations(earlier)
        else:
          self.writer.redo_evaluation(step)
    finally:
      self.writer.close()
    if earlier is not None:
      history.record_evaluation_settings(path)
      self._set_aside_figures()
    self.reported = self.is_lead and step == int(self.config.total_steps)
    if self.reported:
      reports.write_report(self.workdir, self.config, self.param_count, time.time() - started,
                           results, self.frozen_count)
    return results

  # ---------------------------------------------------------------- loop
  def run(self, until: int | None = None) -> dict[str, Any]:
    """Trains from the workdir's latest checkpoint (or a fresh state) to step `until` (default
    and at most `config.total_steps`), then checkpoints and evaluates at that step. Calling it
    again continues from that checkpoint with the step already compiled (the notebook Run).
    Everything it traces is traced in `scope()`."""
    with self.scope():
      return self._run(until)

  def _run(self, until: int | None) -> dict[str, Any]:
    cfg = self.config
    run_start = time.time()
    self.evaluated_step, self.reported, self._stale_evaluation = None, False, False
    self._drawn = set()
    paths.resolve(self.workdir).mkdir(parents=True, exist_ok=True)
    total = int(cfg.total_steps)
    last = total if until is None else min(int(until), total)
    train_ds = self.task.train_dataset(self.local_batch(cfg.input.batch_size))
    self.build(dataset=train_ds)   # peeks one example of the same pipeline
    if cfg.eval_every >= 0 and self.evaluators is None:   # config.evals' errors before training
      self.evaluators = evaluators_lib.build(cfg.evals, self.task, self)
    # What the run opens is closed however it ends (an error in any line below, a Ctrl-C, the
    # end): the trace, preemption watch and progress bar, then the metrics writer, the input
    # pipeline (its worker processes and file readers) and the checkpointer (waiting for a save
    # in flight), before the report reads the metrics back.
    with contextlib.ExitStack() as resources:
      checkpointer = ckpt_lib.Checkpointer(
          self.workdir, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoints)
      resources.callback(self._release_checkpointer, checkpointer)
      workers = self._input_workers(checkpointer.latest_step() is not None)
      train_iter = iter(pipeline.with_workers(train_ds, workers, int(cfg.input.prefetch)))
      resources.callback(train_iter.close)
      self._checkpointer = checkpointer
      self.writer = metrics_lib.MetricsWriter(self.workdir, enabled=self.is_lead)
      resources.callback(self.writer.close)
      rng = jax.random.key(cfg.seed)
      latest = checkpointer.latest_step()
      if latest is None or latest < last:   # steps to train: their compile beside the init's
        self.compile_start(None if latest is None else f"{checkpointer.directory}/{latest}",
                           fresh=latest is None)
      start = self.init_state(data_iterator=train_iter)
      trains = start < last
      resumed = self._adopt_config(start, trains)
      evaluation_changes = resumed.evaluation_changes
      step_rng = jax.random.fold_in(rng, 2)
      log.info("model %s: %s; mesh %s", cfg.model.name,
               reports.parameters(self.param_count, self.frozen_count), dict(self.mesh.shape))

      results: dict[str, Any] = {}
      shown = self.is_lead and cfg.progress_bar
      bar = tqdm(total=last, initial=min(start, last), leave=not self.transient_bar,
                 disable=(not shown or start >= last   # no step to train: no bar
                          or (None if self.transient_bar else False)),   # None: a tty
                 desc=self.phase, unit="step", dynamic_ncols=True)
      resources.callback(bar.close)
      pending = None   # metrics of the previous step, read one step late to keep dispatch async
      evaluating = False   # an out-of-memory error names the evaluation, and what to lower
      t0, steps_timed = time.time(), 0
      watch = preemption.PreemptionWatch()
      resources.callback(watch.close)
      step = start
      trace = profiling.StepTrace(cfg.get("profile", {}), self.workdir, start, self._step_hlo,
                                  self.is_lead, self.step_flops)
      resources.callback(lambda: trace.close(step, self.state))   # at the last step reached
      try:
        if (0 < start < last and cfg.eval_every > 0 and start % cfg.eval_every == 0
            and self._evaluation_missing(start)):   # stopped during it: made before training on
          log.info("%s: resumed at step %d, %s; evaluating it first", self.workdir, start,
                   "whose logged evaluation was of other settings" if evaluation_changes
                   else "whose evaluation did not finish")
          evaluating = True
          self._evaluate_or_stop(start, watch, checkpointer, train_iter, "the")
          evaluating = False
          t0, steps_timed = time.time(), 0   # the steps' rates count no evaluation
          bar.unpause()
        for step in range(start + 1, last + 1):
          trace.begin(step, self.state)
          with jax.profiler.StepTraceAnnotation("train", step_num=step):
            # No name keeps the batch past its step: jax lets go of its host memory (grain's
            # shared memory with `input.workers`) by the next step, not at the end of the run.
            self.state, metrics = self.train_step(self.state, sharding.host_to_global(
                self._next_batch(train_iter, step, start, pending, checkpointer),
                self.batch_sharding), step_rng)
          trace.end(step, self.state)
          if pending is not None:
            self._check_finite(*pending, checkpointer)
          pending = (step, metrics)
          bar.update(1)
          steps_timed += 1
          if step % cfg.log_every == 0 or step == last:
            self._check_finite(step, metrics, checkpointer)
            scalars = {k: v for k, v in jax.device_get(metrics).items() if k != "nonfinite"}
            scalars["train/steps_per_sec"] = steps_timed / max(time.time() - t0, 1e-9)
            scalars.update(self._flop_rates(scalars["train/steps_per_sec"]))
            t0, steps_timed = time.time(), 0
            self.writer.write(step, scalars)
            bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
          preempted = watch.reached(step)   # every process calls it at every step
          if preempted or step % cfg.checkpoint_every == 0 or step == last:
            self._check_finite(step, metrics, checkpointer)
            checkpointer.save(step, self.state, train_iter, {"step": step})
          if preempted:
            checkpointer.wait()
            raise preemption.Preempted(step, f"{checkpointer.directory}/{step}", watch.interrupted,
                                       signal_name=watch.signal_name)
          if cfg.eval_every >= 0 and ((cfg.eval_every and step % cfg.eval_every == 0)
                                      or step == last):
            self._check_finite(step, metrics, checkpointer)   # what it evaluates, and may save
            evaluating = True
            try:
              results = self._evaluate_or_stop(step, watch, checkpointer, train_iter,
                                               "the final" if step == total else "the")
            except Exception:   # the trained steps kept: the rerun resumes from this one
              self._save_if_unsaved(step, checkpointer, train_iter)
              raise
            evaluating = False
            t0, steps_timed = time.time(), 0
            bar.unpause()   # the bar's rate and ETA too
        if pending is not None:
          self._check_finite(*pending, checkpointer)
        final_missing = start >= last == total and self._evaluation_missing(total)
        again = not trains and self._logged_with_other_settings(start, evaluation_changes)
        if final_missing or again:
          if again:
            log.warning("%s: trained to step %d already; evaluating it again with this run's "
                        "evaluation settings (its logged evaluations move to %s once it "
                        "succeeds):\n%s", self.workdir, start, metrics_lib.EARLIER_EVALUATIONS,
                        config_lib.listed(evaluation_changes))
          else:
            log.info("%s: trained to step %d by a run that stopped before its final evaluation; "
                     "evaluating now", self.workdir, last)
          evaluating = True
          with self._evaluation_held():   # a failed evaluation leaves the logged one as it was
            results = self._evaluate_or_stop(start if again else last, watch, checkpointer,
                                             train_iter, "the final")
            if evaluation_changes:
              self.writer.set_aside_evaluations(resumed.earlier_settings)
          evaluating = False
          if self.is_lead and evaluation_changes:   # what the logged evaluation measured
            self.history.record_evaluation_settings(resumed.path)
            self._set_aside_figures()
      except jax.errors.JaxRuntimeError as error:
        if not fit_lib.out_of_memory(error):
          raise
        checkpointer.wait()
        latest = checkpointer.latest_step()
        raise fit_lib.DeviceMemoryError(fit_lib.runtime_oom_message(
            f"phase {self.phase}, {'evaluation at ' if evaluating else ''}step {step}", error,
            f"{checkpointer.directory}/{latest}" if latest is not None else None,
            fit_lib.EVAL_OOM_ADVICE if evaluating else "")) from None
    if start >= last and not results and not self._stale_evaluation:
      results = self.logged_results(start)   # nothing left to train: what the run logged
    # A report.md a full disk left empty (or one deleted) is written again by a rerun.
    report = paths.resolve(self.workdir) / "report.md"
    unreported = not report.exists() or report.stat().length == 0
    self.reported = self.is_lead and (
        (last == total and (start < last or final_missing or (unreported and bool(results))))
        or (again and start == total))
    if self.reported:   # by the invocation that trains the last step (or makes its evaluation)
      reports.write_report(self.workdir, cfg, self.param_count, time.time() - run_start, results,
                           self.frozen_count)
    return results

  def _adopt_config(self, start: int, trains: bool) -> config_history.Resumed:
    """The run's config taken on at `start` (restored, or 0): process 0's
    `ConfigHistory.keep_changed` of the settings it changes (its refusal raised on every
    process), config.json written as this run's where it trains (or is missing), metrics.jsonl
    cut after `start`, and where the run trains on with other evaluation settings, the logged
    evaluations set aside. Returns what `keep_changed` found: the config file that evaluated
    `start`, the evaluation settings this run changes (read before config.json becomes this
    run's)."""
    resumed = config_history.Resumed(None, None)
    refused = None   # process 0's refusal of this run's changes, raised on every process
    if self.is_lead and start > 0:   # once restored: a run that cannot resume keeps its config
      try:
        resumed = self.history.keep_changed(start, trains)
      except config_lib.ConfigError as error:
        refused = error
    if jax.process_count() > 1 and bool(multihost_utils.broadcast_one_to_all(
        np.int32(refused is not None))) and refused is None:
      refused = config_lib.ConfigError(f"phase {self.phase}: process 0 refused this run's "
                                       "config; its log says why")
    if refused is not None:
      raise refused
    self._stale_evaluation = resumed.stale_evaluation
    if self.is_lead:
      # config.json is the config that trained the checkpoints (predict and export read their
      # normalisation from it): a call with nothing to train leaves it as it is
      if trains or not (paths.resolve(self.workdir) / "config.json").is_file():
        file_state.atomic_write_json(os.path.join(self.workdir, "config.json"),
                                     self.history.values(), sort_keys=True)
    self.writer.truncate_after(start)   # a rerun from step 0 too (stopped before a checkpoint)
    if trains and resumed.evaluation_changes:   # metrics.jsonl's evaluations: this run's kind
      moved = self.writer.set_aside_evaluations(resumed.earlier_settings)
      if moved:
        log.warning("phase %s: resumed at step %d with other evaluation settings than its logged "
                    "evaluations' (those %d rows moved to %s, with the settings they measured; "
                    "config.json records this run's):\n%s", self.phase, start, moved,
                    metrics_lib.EARLIER_EVALUATIONS,
                    config_lib.listed(resumed.evaluation_changes))
    return resumed

  def _release_checkpointer(self, checkpointer: Any) -> None:
    checkpointer.close()
    self._checkpointer = None

  def _flop_rates(self, steps_per_sec: float) -> dict[str, float]:
    """On a GPU or TPU, `train/tflops_per_device` (XLA's count of the step per device at the
    logged steps/s) and, where the device's dense bf16 peak is known (aot.peak_flops),
    `train/mfu` (its share). A CPU run logs neither: it has no peak to compare with, and the
    count would cost its (short) runs seconds; `config.profile` still counts it."""
    if self.platform == "cpu":
      return {}
    flops = self.step_flops()
    if not flops:
      return {}
    found = profiling.utilisation(flops, 1.0 / steps_per_sec,
                                  self.mesh.devices.flat[0].device_kind)
    return {"train/tflops_per_device": found["tflops"],
            **({"train/mfu": found["peak_fraction"]} if "peak_fraction" in found else {})}

  def _step_hlo(self) -> str:
    """The compiled train step's optimized HLO, for a profile's kinds of op ("" if unknown)."""
    as_text = getattr(self.compiled_step, "as_text", None)
    return as_text() if as_text else ""

  def logged_results(self, step: int) -> dict[str, Any]:
    """The evaluation metrics.jsonl holds for `step` (a finished run's final results)."""
    out = metrics_lib.logged_evaluation(self.workdir, step)
    if out:
      log.info("%s: already trained to step %d; its logged evaluation follows", self.workdir, step)
    return out

  def _next_batch(self, train_iter: Any, step: int, start: int, pending: Any,
                  checkpointer: Any) -> Any:
    """The host's batch of `step`. When the input fails (a corrupt record, a clip of the wrong
    shape), the steps trained since the last checkpoint are saved first, with the data
    position before this batch, so that once the data is fixed the rerun trains on as an
    uninterrupted run would; then the error is raised. One process only: the other processes
    of a multi-host run would not join the save."""
    if jax.process_count() > 1 or step - 1 <= start:
      return next(train_iter)
    position = train_iter.get_state()
    try:
      return next(train_iter)
    except Exception:
      if pending is not None:
        self._check_finite(*pending, checkpointer)
      self._save_if_unsaved(step - 1, checkpointer, pipeline.SavedPosition(position))
      raise

  def _save_if_unsaved(self, step: int, checkpointer: Any, train_iter: Any) -> None:
    """Saves the state of `step` (its steps all checked finite) unless it is the latest
    checkpoint already: before an error outside the steps themselves (an evaluation's) is
    raised. A save that fails too is logged; the first error is the one raised."""
    try:
      checkpointer.wait()
      if checkpointer.latest_step() != step:
        checkpointer.save(step, self.state, train_iter, {"step": step})
        checkpointer.wait()
        log.warning("saved checkpoint %s/%d before stopping: the rerun resumes from it",
                    checkpointer.directory, step)
    except Exception as error:  # pylint: disable=broad-except
      log.error("could not save step %d before stopping: %s", step, error)

  def _evaluate_or_stop(self, step: int, watch: preemption.PreemptionWatch, checkpointer: Any,
                        train_iter: Any, which: str) -> dict[str, Any]:
    """`evaluate(step)`, which SIGTERM or Ctrl-C stops at once: `step` is saved (unless it is
    already) and the run stops (`Preempted`, naming "`which` evaluation at step N")."""
    try:
      with watch.interruptible():
        return self.evaluate(step)
    except preemption.StopRequested:
      self._save_if_unsaved(step, checkpointer, train_iter)
      raise preemption.Preempted(step, f"{checkpointer.directory}/{step}", watch.interrupted,
                                 f"{which} evaluation at step {step}",
                                 watch.signal_name) from None

  def _evaluation_missing(self, step: int) -> bool:
    """Does the run lack the evaluation of `step`, a step it evaluates (stopped by a signal, an
    evaluation that failed or ran out of memory)? Process 0's answer (its metrics.jsonl), the same
    on every process: the evaluation's collectives need them all."""
    missing = (fit_lib.evaluates(self.config) and self.is_lead
               and not metrics_lib.logged_evaluation(self.workdir, step))
    if jax.process_count() > 1:
      missing = bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))
    return missing

  def _logged_with_other_settings(self, step: int, changes: Sequence[str]) -> bool:
    """Is the logged evaluation of `step` (a finished run's) one made with other evaluation
    settings (`changes`, process 0's `ConfigHistory.keep_changed` lines) than this run's? The
    same answer on every process, as `_evaluation_missing`'s."""
    again = (fit_lib.evaluates(self.config) and self.is_lead and bool(changes)
             and bool(metrics_lib.logged_evaluation(self.workdir, step)))
    if jax.process_count() > 1:
      again = bool(multihost_utils.broadcast_one_to_all(np.int32(again)))
    return again

  @contextlib.contextmanager
  def _evaluation_held(self):
    """`writer.held()` for an evaluation made again: its rows, TensorBoard events and figures
    land once it succeeds; the figures it drew aside are removed whatever happens."""
    try:
      with self.writer.held():
        yield
    finally:
      staged = paths.resolve(self.workdir) / STAGED_FIGURES
      if self.is_lead and staged.exists():
        staged.rmtree()

  def _set_aside_figures(self) -> None:
    """Moves the workdir's figures of earlier evaluations that this run's evaluation did not draw
    again (an evaluator removed, fewer clips drawn) to WORKDIR/FIGURES_SET_ASIDE/<k> (k counting
    the times): report.md lists the workdir's figures as this evaluation's."""
    root = paths.resolve(self.workdir)
    stale = [p for p in root.iterdir() if p.name.endswith(".png")
             and p.name not in self._drawn and p.name not in KEPT_FIGURES]
    if stale:
      earlier = root / FIGURES_SET_ASIDE
      taken = [int(p.name) for p in earlier.iterdir() if p.name.isdigit()] if earlier.exists() \
          else []
      target = earlier / str(max(taken, default=0) + 1)
      target.mkdir(parents=True, exist_ok=True)
      for figure in stale:
        figure.replace(target / figure.name)
      log.info("phase %s: figures of the earlier evaluation this one did not draw moved to %s: "
               "%s", self.phase, target, ", ".join(p.name for p in stale))

  def _check_finite(self, step: int, metrics, checkpointer) -> None:
    if bool(jax.device_get(metrics["nonfinite"])):
      checkpointer.wait()
      latest = checkpointer.latest_step()
      optimizer = self.config.optimizer
      clip = (f"a lower gradient clip (optimizer.grad_clip_norm={optimizer.grad_clip_norm:g})"
              if optimizer.get("grad_clip_norm") else "gradient clipping (optimizer.grad_clip_norm)")
      raise NonFiniteLossError(
          f"phase {self.phase}, step {step}: loss or gradient is not finite "
          f"(loss={float(metrics['train/loss'])}); training stopped. Last good checkpoint: "
          f"{f'{checkpointer.directory}/{latest}' if latest is not None else 'none'}. A lower "
          f"learning rate (this phase's optimizer.lr={optimizer.lr:g}) or {clip}, then the same "
          f"command again: it resumes from "
          f"{'that checkpoint' if latest is not None else 'the start'}, its state kept")


def steps_for_epochs(config: mlc.ConfigDict, task: task_lib.Task) -> int:
  """ceil(config.total_epochs x the primary data source's train-split size / the clips of it a
  step reads: the global batch, or its part of a batch of `input.batch_parts` (3D-DiNet's target
  half))."""
  data = task.data_sources[next(iter(task.data_sources))]
  examples = data.dataset.num_examples(data.cfg.data.split)
  per_step = int(config.input.batch_size) // config_lib.batch_parts(config)
  steps = math.ceil(config.total_epochs * examples / per_step)
  log.info("%g epochs of %d training clips at %d a step: %d steps", config.total_epochs,
           examples, per_step, steps)
  return steps
