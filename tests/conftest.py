"""Test-wide JAX setup: 8 forced host devices (sharding tests), XLA's fastest-compiling backend
optimisation level and a persistent compilation cache;
the `main_env` fixture for end-to-end `python -m darkjax.main` subprocesses."""

import os

# Appended, so flags set by the caller (CI's `--xla_cpu_max_isa=AVX2`) are kept.
_xla_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _xla_flags:
  _xla_flags += " --xla_force_host_platform_device_count=8"
# The suite's time is mostly XLA compiling tiny programs that then run a few times: LLVM's
# optimisation level 0 compiles them faster for a slower run, as runlocal configs do
# (`config.xla_opt_level`): the same operations, rounded alike up to the last bits.
if "--xla_backend_optimization_level" not in _xla_flags:
  _xla_flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _xla_flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("DARKJAX_TEST_JAX_CACHE", "/tmp/darkjax-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def main_env() -> dict[str, str]:
  """Environment of a plain single-device CPU subprocess sharing the tests' compilation cache."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("XLA_FLAGS", None)
  return env
