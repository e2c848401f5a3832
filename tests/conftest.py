"""Test-wide JAX setup: 8 forced host devices (sharding tests), XLA's fastest-compiling backend
options and a persistent compilation cache;
the `main_env` fixture for end-to-end `python -m darkjax.main` subprocesses; the `compiles` fixture
(JAX's "Compiling jit(NAME)" records while a test runs, with their threads)."""

import logging
import os
import re

# Appended, so flags set by the caller (CI's `--xla_cpu_max_isa=AVX2`) are kept.
_xla_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _xla_flags:
  _xla_flags += " --xla_force_host_platform_device_count=8"
# The suite's time is mostly XLA compiling tiny programs that then run a few times: LLVM's
# optimisation level 0 and XLA:CPU's legacy elementwise emitter compile them faster for a slower
# run, as runlocal configs do (`config.xla_opt_level`, darkjax.targets.CPU_FAST_COMPILE): the same
# operations, rounded alike up to the last bits.
for _flag, _value in (("--xla_backend_optimization_level", "0"),
                      ("--xla_cpu_use_fusion_emitters", "false")):
  if _flag not in _xla_flags:
    _xla_flags += f" {_flag}={_value}"
os.environ["XLA_FLAGS"] = _xla_flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def worker_cores(cores: list[int], worker: str, count: int) -> list[int]:
  """The cores pytest-xdist worker `worker` ("gw3") of `count` runs on: an equal block of the
  process's `cores` each (a worker past the core count shares one)."""
  index = int(worker.removeprefix("gw"))
  if count >= len(cores):
    return [cores[index % len(cores)]]
  return cores[index * len(cores) // count:(index + 1) * len(cores) // count]


# Each xdist worker runs on cores of its own (its subprocesses too, which inherit them). XLA:CPU
# sizes its thread pools by the cores a process may use: two workers whose pools each span every
# core ran the same tests in more CPU time and more wall time than two pinned ones
# (docs/benchmarks.md, "The test suite on two workers"). DARKJAX_TEST_SHARE_CORES=1 leaves them
# unpinned.
if (os.environ.get("PYTEST_XDIST_WORKER") and hasattr(os, "sched_setaffinity")
    and os.environ.get("DARKJAX_TEST_SHARE_CORES") != "1"):
  os.sched_setaffinity(0, worker_cores(sorted(os.sched_getaffinity(0)),
                                       os.environ["PYTEST_XDIST_WORKER"],
                                       int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("DARKJAX_TEST_JAX_CACHE", "/tmp/darkjax-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class _Compiles(logging.Handler):
  """JAX's "Compiling jit(NAME)" log records (`jax_log_compiles`): (NAME, thread name)."""

  def __init__(self):
    super().__init__(logging.WARNING)
    self.seen: list[tuple[str, str]] = []

  def emit(self, record):
    match = re.match(r"Compiling jit\((\w+)\)", record.getMessage())
    if match:
      self.seen.append((match.group(1), record.threadName))


@pytest.fixture
def compiles():
  handler, logger = _Compiles(), logging.getLogger("jax._src.interpreters.pxla")
  before = jax.config.jax_log_compiles
  jax.config.update("jax_log_compiles", True)   # process-wide: the compile thread logs too
  logger.addHandler(handler)
  try:
    yield handler
  finally:
    logger.removeHandler(handler)
    jax.config.update("jax_log_compiles", before)


@pytest.fixture
def main_env() -> dict[str, str]:
  """Environment of a plain single-device CPU subprocess sharing the tests' compilation cache."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("XLA_FLAGS", None)
  return env


# DARKJAX_TEST_COMPILES=FILE: one JSON line per test to FILE (appended, every worker) with the XLA
# compiles and jaxpr traces its own process made (not its subprocesses') and their seconds, and
# the CPU seconds it used, its subprocesses' included (`cpu_s`): with every core busy, a test's
# wall time includes its share of waiting, its CPU time is what it costs the suite. A test with
# hundreds of compiles runs a model op by op (eagerly): under `jax.jit` it compiles once.
if os.environ.get("DARKJAX_TEST_COMPILES"):
  import json  # noqa: E402
  import resource  # noqa: E402
  import time  # noqa: E402

  from jax import monitoring  # noqa: E402

  _EVENTS = {"/jax/core/compile/backend_compile_duration": "compiles",
             "/jax/core/compile/jaxpr_trace_duration": "traces"}
  _counts: dict[str, float] = {}

  def _listener(event: str, duration: float, **_) -> None:
    if event in _EVENTS:
      name = _EVENTS[event]
      _counts[name] = _counts.get(name, 0) + 1
      _counts[name + "_s"] = _counts.get(name + "_s", 0.0) + duration

  monitoring.register_event_duration_secs_listener(_listener)

  def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its subprocesses that have ended."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_protocol(item, nextitem):  # pylint: disable=unused-argument
    _counts.clear()
    start, cpu = time.perf_counter(), _cpu_seconds()
    yield
    row = dict(test=item.nodeid, seconds=round(time.perf_counter() - start, 2),
               cpu_s=round(_cpu_seconds() - cpu, 2), **{k: round(v, 2) for k, v in _counts.items()})
    with open(os.environ["DARKJAX_TEST_COMPILES"], "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
