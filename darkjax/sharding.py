"""Device mesh from config and parameter shardings from regex partition rules.

The mesh has two axes: `data` (pure data parallelism) and `fsdp` (data parallelism whose
parameters and optimizer state are also sharded). Batches are split over both. Parameter
shardings are derived from `jax.eval_shape` trees: the first rule whose regex is found in a
state leaf's path gives its PartitionSpec; leaves no rule matches fall back to `fsdp_auto`
(largest dimension divisible by the fsdp size, for leaves of at least `min_fsdp_size` elements)
or are replicated. A path is the whole state's: "params/stage1/conv/kernel" for a parameter,
"opt_state/0/trace/stage1/conv/kernel" for its momentum. Write a rule without the "params/"
prefix ("stage1/conv/kernel$") so that a parameter and its optimizer state get one sharding; a
rule anchored on "^params/" leaves the optimizer state to `fsdp_auto`, which may pick another
dimension (and reshard every update).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from darkjax import config as config_lib

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh with axes (data, fsdp); one size may be -1 (all remaining devices)."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(mesh_config) - set(BATCH_AXES)
  if unknown:
    raise config_lib.ConfigError(f"config.mesh has unknown axes {sorted(unknown)}; valid axes: "
                                 f"{BATCH_AXES}")
  sizes = [int(mesh_config.get(a, 1)) for a in BATCH_AXES]
  if sizes.count(-1) > 1:
    raise config_lib.ConfigError("config.mesh: at most one axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise config_lib.ConfigError(f"config.mesh {dict(mesh_config)}: {len(devices)} devices not "
                                   f"divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise config_lib.ConfigError(f"config.mesh {dict(mesh_config)} needs {int(np.prod(sizes))} "
                                 f"devices, {len(devices)} available")
  return jax.make_mesh(tuple(sizes), BATCH_AXES, axis_types=(AxisType.Auto,) * 2,
                       devices=devices)


def batch_devices(mesh: Mesh) -> int:
  """How many ways a batch is split: the size of the mesh's batch axes (data x fsdp)."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _spec_from_rule(spec: Any) -> P:
  if isinstance(spec, P):
    return spec
  return P(*[tuple(s) if isinstance(s, list) else s for s in spec])


def fsdp_auto_spec(shape: Sequence[int], fsdp_size: int, min_fsdp_size: int) -> P:
  if fsdp_size <= 1 or int(np.prod(shape)) < min_fsdp_size:
    return P()
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(mesh: Mesh, abstract_tree: Any, rules: Sequence[tuple[str, Any]] = (),
                   min_fsdp_size: int = 2 ** 14) -> Any:
  """NamedShardings for every leaf of `abstract_tree` (e.g. a jax.eval_shape result)."""
  compiled = [(re.compile(pattern), _spec_from_rule(spec)) for pattern, spec in rules]
  fsdp_size = mesh.shape["fsdp"]

  def leaf_sharding(path, leaf):
    name = "/".join(_key_name(k) for k in path)
    shape = getattr(leaf, "shape", ())
    for pattern, spec in compiled:
      if pattern.search(name):
        if len(spec) > len(shape):
          raise ValueError(f"partition rule {pattern.pattern!r} gives {spec} for {name} of "
                           f"shape {shape}")
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, fsdp_auto_spec(shape, fsdp_size, min_fsdp_size))

  return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_tree)


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)



def device_fields(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The numeric entries of a host batch (strings such as video ids stay on the host)."""
  return {k: v for k, v in batch.items() if np.asarray(v).dtype.kind in "biuf"}


def host_to_global(batch: Mapping[str, Any], batch_sharding: NamedSharding) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global jax.Arrays split over the batch axes (each process gives
  its own rows)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
          for k, v in device_fields(batch).items()}
