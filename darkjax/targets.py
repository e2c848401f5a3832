"""The platform a step is compiled for: the one place in darkjax that knows it.

Layers choose their lowering per platform (the CPU rewrites of `darkjax.layers.conv` and
`darkjax.layers.depthwise` on "cpu", XLA's own ops on "gpu" and "tpu": on "gpu" channels-last,
full 3D kernels as 2D convolutions, `conv.frames2d_conv3d`), and compiled steps carry XLA
options that only some platforms accept (`compiler_options`: on "gpu" the convolutions'
layout). Both read `platform()`, never `jax.default_backend()`: a step traced on a CPU host for
a GPU or TPU mesh must get the accelerator's ops and options. `compiling_for(mesh)` (or a
platform name, a device, devices) says what a block traces for; outside every such block it is
the host's default devices.

Like `darkjax.layers.conv.native_lowering()`, the scope acts at trace time: a function jitted
and traced outside it keeps its lowering, so trace a fresh function inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from typing import Any, Iterator

import jax
import numpy as np

from darkjax import aot, init_rng

PLATFORMS = ("cpu", "gpu", "tpu")
# jax device platform -> the platform lowerings and compiler options are chosen for
_DEVICE_PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}
# XLA passes disabled in every CPU step: XLA:CPU expands `jax.checkpoint`'s
# `optimization_barrier`s before its CSE, which then merges a recomputation with its forward and
# voids the remat policy (darkjax.layers.remat). Other platforms keep their barriers.
CPU_DISABLED_PASSES = ("cse_barrier_expander",)
# XLA:CPU options of the programs compiled for compile time rather than run time (smoke runs'
# steps, every CPU init): XLA's legacy elementwise emitter instead of its MLIR fusion emitters,
# which at backend optimisation level 0 spend most of the compile on a fixed cost per fused
# kernel (docs/benchmarks.md, "Compile time of smoke runs and initialisation"). At XLA's default
# level, on paper-size steps, the MLIR emitters compile faster and stay.
CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

_SCOPE: contextvars.ContextVar[str | None] = contextvars.ContextVar("darkjax_compiling_for",
                                                                  default=None)


def _check_platform(name: str) -> str:
  if name not in PLATFORMS:
    raise ValueError(f"unknown platform {name!r}; expected one of {PLATFORMS}, a device, "
                     "devices or a jax.sharding.Mesh")
  return name


def platform_of(devices: Any) -> str:
  """The platform ("cpu", "gpu" or "tpu") of a device, a sequence or array of devices, or a
  `jax.sharding.Mesh`. Raises ValueError when the devices are of mixed or unknown platforms."""
  if isinstance(devices, jax.sharding.Mesh):
    devices = devices.devices
  if isinstance(devices, np.ndarray):
    devices = list(devices.flat)
  elif hasattr(devices, "platform"):
    devices = [devices]
  found = set()
  for device in devices:
    name = getattr(device, "platform", None)
    if name not in _DEVICE_PLATFORMS:
      raise ValueError(f"device {device!r} has platform {name!r}; expected one of "
                       f"{sorted(_DEVICE_PLATFORMS)} (darkjax platforms {PLATFORMS})")
    found.add(_DEVICE_PLATFORMS[name])
  if len(found) != 1:
    raise ValueError(f"devices of platforms {sorted(found)}: expected one of {PLATFORMS} "
                     f"for all of them")
  return found.pop()


@contextlib.contextmanager
def compiling_for(target: Any) -> Iterator[str]:
  """Within the block, `platform()` is `target`'s platform; yields it.

  `target`: a platform name from PLATFORMS, a device, devices or a `jax.sharding.Mesh`. Blocks
  nest (the innermost wins) and are per thread and per asyncio task (a ContextVar)."""
  name = _check_platform(target) if isinstance(target, str) else platform_of(target)
  token = _SCOPE.set(name)
  try:
    yield name
  finally:
    _SCOPE.reset(token)


def platform() -> str:
  """The platform being compiled for: that of the innermost `compiling_for` block, else that of
  the host's default devices (`jax.devices()[0]`). This fallback is the only place in darkjax
  that reads the host's default devices or backend."""
  scoped = _SCOPE.get()
  return scoped if scoped is not None else platform_of(jax.devices()[0])


def _resolve(name: str | None) -> str:
  return platform() if name is None else _check_platform(name)


def compiler_options(platform: str | None = None, target: str = "") -> dict[str, Any]:
  """The XLA compile options of every step compiled for `platform` (default: `platform()`), and
  for a compile-only `target` ("h100:8", darkjax.aot) the options it needs (on a GPU target:
  `aot.GPU_OPTIONS`, no autotuning).

  On "gpu": `xla_gpu_force_conv_nhwc`, XLA's native 3D convolutions channels-last (NDHWC, cuDNN's
  channels-last kernels, no transposes around them; XLA:GPU's own choice is channels-first),
  grouped ones too. With the (2+1)D convolutions native, an R(2+1)D step runs as fast as with 2D
  ones and compiles in half the time or less: its cuDNN autotuning, most of a GPU compile, has
  fewer candidates (docs/benchmarks.md, "Where a GPU step's compile time goes"); 3D-ResNeXt's
  step, its grouped convolutions channels-last too, is faster than its channels-first one
  (docs/benchmarks.md, "3D-ResNeXt's layouts and levers on one H100").

  On "cpu": `xla_disable_hlo_passes` with CPU_DISABLED_PASSES, so the `optimization_barrier`s of
  `jax.checkpoint` reach the end of the pipeline and CSE cannot merge a recomputation with its
  forward (darkjax.layers.remat). A program without `jax.checkpoint` has no barriers and compiles
  as before. Passes a user disables through `XLA_FLAGS` are kept in the list (a compile option
  replaces the flag). On "tpu": none."""
  resolved = _resolve(platform)
  if resolved != "cpu":
    options = aot.compiler_options(target) if target else {}
    if resolved == "gpu":
      options["xla_gpu_force_conv_nhwc"] = True
    return options
  passes = list(CPU_DISABLED_PASSES)
  for flag in os.environ.get("XLA_FLAGS", "").split():
    if flag.startswith("--xla_disable_hlo_passes="):
      passes += [p for p in flag.split("=", 1)[1].split(",") if p and p not in passes]
  return {"xla_disable_hlo_passes": ",".join(passes)}


def init_compiler_options(platform: str | None = None) -> dict[str, Any]:
  """XLA options of the once-run initialisation programs (parameters, optimizer state).

  On "cpu" they compile with `CPU_FAST_COMPILE` (backend optimisation level 0, the legacy
  emitter): the per-parameter threefry and initialiser arithmetic otherwise takes several times
  longer to compile than to run (docs/benchmarks.md, "Compile time of smoke runs and
  initialisation"). The values are the same function of the seed as at XLA's default level,
  rounded once differently (e.g. FMA contraction), the same bit for bit under either emitter
  (tests/test_init_rng.py), and every run of a config gets the same ones. Other platforms
  compile as usual."""
  return dict(CPU_FAST_COMPILE) if _resolve(platform) == "cpu" else {}


# Largest model (parameters) whose CPU init hashes its draws together: above it the per-draw
# program compiles and runs faster (docs/benchmarks.md, "Compile time of smoke runs and
# initialisation": LIFT-Net's init, plain against batched).
BATCHED_INIT_MAX_PARAMS = 8_000_000


def init_program(fn: Any, platform: str | None = None, params: int = 0) -> Any:
  """`fn`, a once-run initialisation program (of `params` parameters, from a key), as it is
  compiled for `platform` (default: `platform()`): on "cpu", for up to BATCHED_INIT_MAX_PARAMS
  parameters, with its threefry draws hashed together (`darkjax.init_rng.batched_draws`: the same
  values bit for bit, about a quarter less compile time for the test and `runlocal` models);
  otherwise `fn`. XLA:GPU and XLA:TPU compile the per-parameter hashes unrolled, not as loops
  (on a GPU `init_jit` hands them to JAX's threefry kernel instead)."""
  if _resolve(platform) == "cpu" and params <= BATCHED_INIT_MAX_PARAMS:
    return init_rng.batched_draws(fn)
  return fn


class _ThreefryKernels:
  """A jitted initialisation program that traces and lowers with JAX's GPU threefry kernel
  (`jax_threefry_gpu_kernel_lowering`): each draw's hash one call of jaxlib's CUDA/ROCm threefry
  kernel instead of 20 unrolled rounds of integer ops per parameter for XLA to fuse and compile.
  The same hash of the same counters, so the same values; a paper model's init compiles in a
  fraction of the time (docs/benchmarks.md, "Initialisation programs on a GPU")."""

  def __init__(self, jitted: Any):
    self.jitted = jitted

  @staticmethod
  def _scope() -> Any:
    from jax._src import config as jax_config  # pylint: disable=import-outside-toplevel
    state = getattr(jax_config, "threefry_gpu_kernel_lowering", None)   # a JAX without it
    return state(True) if state is not None else contextlib.nullcontext()

  def __call__(self, *args: Any) -> Any:
    with self._scope():
      return self.jitted(*args)

  def lower(self, *args: Any) -> Any:
    with self._scope():
      return self.jitted.lower(*args)


def init_jit(fn: Any, platform: str | None = None, params: int = 0, **jit_kwargs: Any) -> Any:
  """`fn`, a once-run initialisation program of `params` parameters, jitted for `platform`
  (default: `platform()`) with `jit_kwargs`: `init_program(fn)` under `init_compiler_options`,
  and on "gpu" traced and lowered with JAX's GPU threefry kernel (`_ThreefryKernels`). Call it,
  or `.lower(...)` it, like the jitted function."""
  jitted = jax.jit(init_program(fn, platform, params),
                   compiler_options=init_compiler_options(platform), **jit_kwargs)
  return _ThreefryKernels(jitted) if _resolve(platform) == "gpu" else jitted


def fastest_compile_options(platform: str | None = None) -> dict[str, Any]:
  """XLA options of a step compiled as fast as XLA can (`config.xla_opt_level=0`, set by the
  `runlocal` variants: a smoke run's time is compilation) for `platform` (default: `platform()`).

  Every platform: `xla_backend_optimization_level` 0. On "cpu" also XLA's legacy elementwise
  emitter (`CPU_FAST_COMPILE`: about half the compile time of a smoke run's programs, rounded
  differently in the last bits). On "tpu" also `exec_time_optimization_effort` -1 (XLA's lowest
  effort on the program's run time): XLA:TPU compiles as long with the backend level as without,
  and this effort is what shortens its compile (docs/benchmarks.md, "Compile-only targets"). The
  program computes the same function; XLA's memory figure is that of the less optimised program,
  which may be larger."""
  options: dict[str, Any] = {"xla_backend_optimization_level": 0}
  if _resolve(platform) == "cpu":
    options.update(CPU_FAST_COMPILE)
  elif _resolve(platform) == "tpu":
    options["exec_time_optimization_effort"] = -1.0
  return options


DEFAULT_CACHE = os.path.join("~", ".cache", "darkjax", "xla")


@contextlib.contextmanager
def without_compilation_cache() -> Iterator[None]:
  """Compiles inside skip JAX's persistent compilation cache: an executable compiled for a
  compile-only target (darkjax.aot) cannot be loaded back on a host without that device (JAX warns
  on every such read), and no run here would use it."""
  from jax._src import config as jax_config  # pylint: disable=import-outside-toplevel
  with jax_config.enable_compilation_cache(False):
    yield


def use_compilation_cache(setting: str) -> str | None:
  """Turns on JAX's persistent compilation cache for this process, so a resumed or re-run job
  loads its compiled steps instead of compiling them again; returns the directory (None: off).

  `setting` (`config.compilation_cache`): "auto" is $DARKJAX_COMPILATION_CACHE, else
  ~/.cache/darkjax/xla; "" turns it off; anything else is the directory (local, or a URL such as
  gs://bucket/xla on the workdir's filesystem). A cache directory the process has set already
  (JAX's JAX_COMPILATION_CACHE_DIR, or `jax.config.update("jax_compilation_cache_dir", ...)`)
  wins over all of these. Entries are keyed by the compiled program and the XLA version, so one
  directory serves every config and machine."""
  if jax.config.jax_compilation_cache_dir:
    drop_empty_cache_entries(jax.config.jax_compilation_cache_dir)
    return jax.config.jax_compilation_cache_dir
  if not setting:
    return None
  if setting == "auto":
    setting = os.environ.get("DARKJAX_COMPILATION_CACHE") or DEFAULT_CACHE
  directory = os.path.expanduser(setting)
  if "://" not in directory:
    os.makedirs(directory, exist_ok=True)
    drop_empty_cache_entries(directory)
  jax.config.update("jax_compilation_cache_dir", directory)
  return directory


def drop_empty_cache_entries(directory: str) -> int:
  """Removes the empty entries of a local compilation cache (a disk that filled while JAX wrote
  them): JAX warns that it cannot read such an entry on every run and never writes it again.
  Returns how many it removed."""
  if "://" in directory or not os.path.isdir(directory):
    return 0
  removed = 0
  with os.scandir(directory) as entries:
    for entry in entries:
      try:
        if entry.name.endswith("-cache") and entry.is_file() and entry.stat().st_size == 0:
          os.remove(entry.path)
          removed += 1
      except OSError:   # another process removed or replaced it meanwhile
        continue
  if removed:
    logging.getLogger("darkjax").warning(
        "compilation cache %s: removed %d empty entries (written while its disk was full); "
        "their programs compile again", directory, removed)
  return removed
