"""Named compile-only targets: devices of a GPU or TPU that is not attached, to compile for.

A target name is a chip and its count or topology: `h100:8` (eight H100s on one host), `h200`,
`a100:4`, `tpu-v5e:2x2`, `tpu-v5e:4x4` (a 16-chip slice of four hosts), `tpu-v4:2x2x1`,
`tpu-v5p:2x2x1`, `tpu-v6e:2x2`. `compile_only_devices(name)` builds that many devices with
`jax.experimental.topologies` (the AOT planning of MaxText's `train_compile.py`): a Mesh over them
lowers and compiles a step and XLA's `memory_analysis()` says what one device needs, on a host
without the chip. `darkjax.train.Trainer(..., target=name)` builds its mesh from them,
compiles with `compiler_options(name)` and checks memory against `limit_bytes(name)` (compile-only
devices report no `memory_stats`): a TPU chip's HBM; on a GPU the share of its memory JAX's
allocator takes, 75% unless XLA_CLIENT_MEM_FRACTION says otherwise, as on the real GPU.

The compilers come in optional packages, kept out of the default install:

  TPU: pip install -e '.[aot-tpu]'   (libtpu; XLA:TPU fails a compile that does not fit the
       chip's HBM, so the compile itself is the fit test)
  GPU: pip install -e '.[aot-gpu]'   (the CUDA plugin and PJRT, which pull no NVIDIA runtime
       wheels, and nvcc for ptxas). Run with JAX_PLATFORMS=cpu on a host without a GPU. The
       GPU's description is XLA's target spec shipped in darkjax/target_specs/. A deviceless
       GPU compile counts no cuDNN autotuning workspace (its figure is a lower bound) and does
       not enforce the limit.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import re
from typing import Any

GIB = 2 ** 30
SPECS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "target_specs")
TPU_PIP = "pip install -e '.[aot-tpu]'   (libtpu==0.0.42.*)"
GPU_PIP = ("pip install -e '.[aot-gpu]'   (jax-cuda12-plugin==0.10.2 jax-cuda12-pjrt==0.10.2 "
           "nvidia-cuda-nvcc-cu12)")
# JAX's GPU allocator takes this share of the device's memory unless the environment says otherwise.
MEM_FRACTION_VARS = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")
DEFAULT_GPU_MEM_FRACTION = 0.75
# XLA options of every step compiled for a compile-only GPU: without a GPU to autotune on, Triton
# GEMM fusions find no tile sizes ("Couldn't find output tile sizes" on attention dots), and
# sorts (jnp.percentile in ActLumos) need CUB's deviceless mode.
GPU_OPTIONS = {"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0,
               "xla_gpu_deviceless_cub_mode": 1}


@dataclasses.dataclass(frozen=True)
class Chip:
  platform: str          # "gpu" or "tpu" (darkjax.targets.PLATFORMS)
  hbm_bytes: int         # memory of one device
  default: str           # count or topology when the name has none
  spec: str = ""         # GPU: XLA GpuTargetConfigProto text in target_specs/
  tpu_name: str = ""     # TPU: libtpu's topology prefix
  chip_config: str = "default"   # TPU: "megacore" for v4 / v5p (two cores as one device)
  available_gib: float = 0.0   # TPU: the HBM XLA:TPU lets a program use, as its out-of-memory
                               # error prints it (libtpu keeps the rest)


# GPUs: the memory XLA's target spec gives (device_memory_size); TPUs: HBM per chip and what
# XLA:TPU makes available of it (tests/test_aot.py reads it back from libtpu's error).
CHIPS = {
    "h100": Chip("gpu", 84942979072, "1", spec="h100_sxm.txtpb"),      # H100 SXM 80 GB
    "h200": Chip("gpu", 151397597184, "1", spec="h200.txtpb"),         # H200 141 GB
    "a100": Chip("gpu", 85100068864, "1", spec="a100_sxm_80.txtpb"),   # A100 SXM 80 GB
    "tpu-v4": Chip("tpu", 32 * GIB, "2x2x1", tpu_name="v4", chip_config="megacore",
                   available_gib=30.75),
    "tpu-v5e": Chip("tpu", 16 * GIB, "2x2", tpu_name="v5e", available_gib=15.75),
    "tpu-v5p": Chip("tpu", 95 * GIB, "2x2x1", tpu_name="v5p", chip_config="megacore",
                    available_gib=95.74),
    "tpu-v6e": Chip("tpu", 32 * GIB, "2x2", tpu_name="v6e", available_gib=31.25),
}
GPUS_PER_HOST = 8
# Dense bfloat16 peak of one device in TFLOP/s (the vendors' datasheets, without sparsity; a
# multiply-add counts two), by `jax.Device.device_kind`, first match: the denominator of a step's
# model FLOP utilisation (`peak_flops`).
PEAK_BF16_TFLOPS = (
    (r"H100.*PCIe", 756.0),
    (r"H100 NVL|H200 NVL", 835.0),
    (r"H100|H200", 989.0),         # SXM ("NVIDIA H100 80GB HBM3", "NVIDIA H200")
    (r"A100", 312.0),
    (r"TPU v4", 275.0),
    (r"TPU v5 ?(lite|e)", 197.0),  # v5e
    (r"TPU v5", 459.0),            # v5p
    (r"TPU v6", 918.0),            # v6e (Trillium)
)
TPU_CHIPS_PER_HOST = (2, 2, 1)   # a host's chips (v4 / v5p / multi-host v5e and v6e slices)


@dataclasses.dataclass(frozen=True)
class Target:
  name: str              # canonical: "h100:8", "tpu-v5e:2x2"
  chip: str              # a CHIPS key
  shape: tuple[int, ...]   # GPU: (count,); TPU: the topology's dimensions

  @property
  def platform(self) -> str:
    return CHIPS[self.chip].platform

  @property
  def hbm_bytes(self) -> int:
    return CHIPS[self.chip].hbm_bytes

  @property
  def device_count(self) -> int:
    return math.prod(self.shape)


class TargetError(ValueError):
  """A compile-only target name that is not one: the message names the valid ones."""


class MissingCompilerError(ModuleNotFoundError):
  """A compile-only target whose compiler (the aot-tpu / aot-gpu extra) is not installed: the
  message gives the pip command."""


def valid_targets() -> str:
  return ", ".join(f"{chip}[:{c.default}]" for chip, c in CHIPS.items())


def parse(name: str) -> Target:
  """`name` ("h100:8", "tpu-v5e:2x2", "a100") as a Target; TargetError naming the valid ones."""
  chip, _, shape = name.strip().lower().partition(":")
  if chip not in CHIPS:
    raise TargetError(f"unknown compile-only target {name!r}; valid targets: {valid_targets()}")
  spec = CHIPS[chip]
  shape = shape or spec.default
  if not re.fullmatch(r"[1-9]\d*(x[1-9]\d*)*", shape):
    raise TargetError(f"compile-only target {name!r}: {shape!r} is not a count or topology such "
                     f"as {spec.default}; valid targets: {valid_targets()}")
  dims = tuple(int(d) for d in shape.split("x"))
  if spec.platform == "gpu":
    if len(dims) != 1 or (dims[0] > GPUS_PER_HOST and dims[0] % GPUS_PER_HOST):
      raise TargetError(f"compile-only target {name!r}: a GPU target takes a device count "
                       f"(1-{GPUS_PER_HOST}, or a multiple of {GPUS_PER_HOST}), e.g. {chip}:8; "
                       f"valid targets: {valid_targets()}")
  else:
    rank = len(spec.default.split("x"))
    if len(dims) == 2 and rank == 3:
      dims += (1,)
    if len(dims) != rank:
      raise TargetError(f"compile-only target {name!r}: {chip} takes a {rank}-d topology such "
                       f"as {spec.default}; valid targets: {valid_targets()}")
  return Target(f"{chip}:{'x'.join(map(str, dims))}", chip, dims)


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:   # a parent package (jax_plugins, nvidia) is absent
    return False


def missing_package(name: str) -> str:
  """"" when the compiler of target `name` is installed, else what to install (the pip command)."""
  if parse(name).platform == "tpu":
    modules, pip = ("libtpu",), TPU_PIP
  else:
    modules, pip = ("jax_plugins.xla_cuda12", "nvidia.cuda_nvcc"), GPU_PIP
  absent = [m for m in modules if not _installed(m)]
  return f"{', '.join(absent)} not installed: {pip}" if absent else ""


@functools.lru_cache(maxsize=None)
def compile_only_devices(name: str) -> tuple[Any, ...]:
  """The devices of target `name` (compile-only: a Mesh over them lowers and compiles, nothing
  runs). Raises MissingCompilerError naming the pip command when the target's compiler is not
  installed. The same name gives the same devices."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  target = parse(name)
  chip = CHIPS[target.chip]
  missing = missing_package(name)
  if missing:
    raise MissingCompilerError(f"compiling for {target.name} needs {missing}")
  if chip.platform == "tpu":
    # Compile-only: no chip is claimed, so several planners on one host need not exclude each other
    # through libtpu's lock file.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    per_host = tuple(min(b, d) for b, d in zip(TPU_CHIPS_PER_HOST, target.shape + (1,)))
    topology = topologies.get_topology_desc(
        platform="tpu", topology_name=f"{chip.tpu_name}:{'x'.join(map(str, target.shape))}",
        chip_config_name=chip.chip_config, chips_per_host_bounds=per_host, num_slices=1)
  else:
    count = target.shape[0]
    hosts, per_host = max(1, count // GPUS_PER_HOST), min(count, GPUS_PER_HOST)
    with open(os.path.join(SPECS, chip.spec), encoding="utf-8") as spec:
      topology = topologies.get_topology_desc(platform="cuda", topology=f"1x{hosts}x{per_host}",
                                              target_config=spec.read())
  devices = tuple(topology.devices)
  if len(devices) != target.device_count:
    raise RuntimeError(f"compile-only target {target.name}: {len(devices)} devices built, "
                       f"{target.device_count} expected")
  return devices


def compiler_options(name: str) -> dict[str, Any]:
  """XLA options a step compiled for target `name` needs beyond its platform's (GPU_OPTIONS on a
  GPU; none on a TPU)."""
  return dict(GPU_OPTIONS) if parse(name).platform == "gpu" else {}


def hbm_bytes(name: str) -> int:
  """Memory of one device of target `name` (CHIPS)."""
  return parse(name).hbm_bytes


def gpu_memory_fraction(environ: Any = None) -> float:
  """The share of a GPU's memory a JAX process may use: XLA_CLIENT_MEM_FRACTION (or its old name
  XLA_PYTHON_CLIENT_MEM_FRACTION) when set, else JAX's default of 0.75 (its allocator's
  `bytes_limit` on a real GPU is that share of the device's memory)."""
  environ = os.environ if environ is None else environ
  for var in MEM_FRACTION_VARS:
    value = environ.get(var, "").strip()
    if value:
      try:
        fraction = float(value)
      except ValueError:
        raise ValueError(f"{var}={value!r} is not a number between 0 and 1") from None
      if not 0 < fraction <= 1:
        raise ValueError(f"{var}={value!r} is not a number between 0 and 1")
      return fraction
  return DEFAULT_GPU_MEM_FRACTION


def limit_bytes(name: str, environ: Any = None) -> int:
  """What a run on target `name` may hold per device: the HBM XLA:TPU makes available on a TPU
  chip (it fails a compile that does not fit it; less than the chip's HBM but on v5p), a GPU's
  memory times `gpu_memory_fraction()` (what the run's allocator allows on the real GPU)."""
  target = parse(name)
  if target.platform == "gpu":
    return int(target.hbm_bytes * gpu_memory_fraction(environ))
  return int(CHIPS[target.chip].available_gib * GIB)


_SIZE = r"([\d.]+)\s*([KMGT])i?B?"
_UNITS = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def out_of_memory_figures(message: str) -> tuple[int, int | None] | None:
  """(bytes needed, bytes available or None) from XLA's out-of-memory compile error, e.g. XLA:TPU's
  "Ran out of memory on HBM, the total memory required for HLO temporaries (63.90G) exceeds
  available HBM (15.75G)"; None when `message` is not one."""
  if "RESOURCE_EXHAUSTED" not in message and "out of memory" not in message.lower():
    return None
  keyword = re.search(r"available|capacity|limit", message)
  split = keyword.start() if keyword else len(message)
  sizes = [(m.start(), int(float(m.group(1)) * _UNITS[m.group(2)]))
           for m in re.finditer(_SIZE, message)]
  needed = [size for at, size in sizes if at < split]
  available = [size for at, size in sizes if at >= split]
  if not needed:
    return None
  return needed[0], (available[0] if available else None)


__all__ = ["CHIPS", "GPU_OPTIONS", "Target", "compile_only_devices", "compiler_options",
           "gpu_memory_fraction", "hbm_bytes", "limit_bytes", "missing_package",
           "out_of_memory_figures", "parse", "valid_targets"]


def peak_flops(device_kind: str) -> float | None:
  """The dense bfloat16 peak of a device of kind `device_kind` in FLOP/s (PEAK_BF16_TFLOPS); None
  for a kind not in the table (a CPU)."""
  for pattern, tflops in PEAK_BF16_TFLOPS:
    if re.search(pattern, device_kind or ""):
      return tflops * 1e12
  return None
