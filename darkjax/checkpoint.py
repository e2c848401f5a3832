"""Checkpoints: orbax CheckpointManager holding the train state, the grain iterator state and a
JSON record (config, step), saved together so a restored run continues exactly.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint under a step name; a later run ignores the debris.
On an object store (`gs://...`, no rename) orbax marks a finished step with a commit file instead.

An array replicated over several devices (parameters under data parallelism) is written by its
replicas together, each a slice ("replica-parallel", orbax's default off GPU); every slice shape
costs one XLA compile on the first save of a process (a ResNeXt's few hundred parameter shapes x
8 replicas). Below `REPLICA_PARALLEL_MIN_BYTES` a replica's slice is not worth it: one replica
writes the array whole (`use_small_slices_once`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import re
from typing import Any, Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.metadata import array_metadata_store

from darkjax import paths, targets

# Replicated arrays whose per-replica slice would be smaller are written by one replica.
REPLICA_PARALLEL_MIN_BYTES = 1 << 20


# What a checkpoint writes besides its arrays' bytes, for the free-space check before a save
# (`Checkpointer._check_room`): orbax's metadata files and one small OCDBT record an array.
_CHECKPOINT_OVERHEAD_BYTES = 256 << 10
_PER_ARRAY_OVERHEAD_BYTES = 4096


# What orbax warns of on every run for what darkjax asks on purpose: replacing its jax.Array
# handler (`use_small_slices_once`), and a checkpoint directory opened read-only (another run's,
# a pretrained one).
_OVERRIDING = "Type handler registry type"
_READ_ONLY = "Given directory is read only"


@contextlib.contextmanager
def _without_orbax_warnings(*prefixes: str) -> Iterator[None]:
  """Drops orbax's absl warnings that start with one of `prefixes` while inside; others pass."""
  def keep(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(prefixes)

  logger = logging.getLogger("absl")
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def use_small_slices_once() -> None:
  """Registers orbax's jax.Array handler as orbax does by default (same array metadata store),
  with replica-parallel writes only for slices of at least REPLICA_PARALLEL_MIN_BYTES. Idempotent;
  process-wide, as orbax's handler registry is."""
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(handler, "_min_slice_bytes_for_replica_parallel", None) == REPLICA_PARALLEL_MIN_BYTES:
    return
  with _without_orbax_warnings(_OVERRIDING):
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            array_metadata_store=array_metadata_store.Store(),
            min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES), override=True)


def has_steps(workdir: str) -> bool:
  """Whether WORKDIR/checkpoints holds a step directory (complete or not): a cheap listing, no
  checkpoint manager; `Checkpointer.latest_step` is the one that counts."""
  return latest_listed(workdir) is not None


def latest_listed(workdir: str) -> str | None:
  """WORKDIR/checkpoints/<step> of the highest step directory listed (None: none), what a message
  before a run's first step names as its latest checkpoint: a cheap listing, no checkpoint
  manager; `Checkpointer.latest_step` is the one that counts."""
  directory = paths.resolve(workdir) / "checkpoints"
  if not directory.is_dir():
    return None
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
  return f"{directory}/{max(steps)}" if steps else None


# How many differing arrays a StateMismatchError lists.
MISMATCHES_SHOWN = 12


class StateMismatchError(RuntimeError):
  """A checkpoint's train state has other arrays than the run restoring it: `differences`, one
  line per array (`Checkpointer.state_differences`)."""

  def __init__(self, message: str, differences: list[str]):
    super().__init__(message)
    self.differences = differences


def describe_differences(differences: list[str]) -> str:
  """`Checkpointer.state_differences` as text: a count, then the first MISMATCHES_SHOWN."""
  shown = differences[:MISMATCHES_SHOWN]
  more = len(differences) - len(shown)
  return (f"arrays differ from this run's state ({len(differences)} in all):\n  "
          + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else ""))


def _leaves_by_path(tree: Any) -> dict[str, Any]:
  """{"params/conv1/kernel": leaf} of a state tree or its orbax metadata (dict keys, attribute
  names and sequence indices alike, so that both trees name an array the same)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: x is None)
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf for path, leaf in leaves
          if leaf is not None}


# ---------------------------------------------------------------------------- fingerprints
# Each array of a saved state gets a fingerprint in the checkpoint's meta item: the sum, modulo
# 2^32, of its bit patterns (as unsigned words of its own width) times 2i + 1 for the element's
# flat index i. Any single changed bit changes it, and so does a moved element. orbax and
# TensorStore check no content of the arrays, so a checkpoint whose bytes changed on disk would
# restore silently and train on from whatever they now hold. Computed where the arrays are (a
# sharded array is summed across its devices: no array is gathered), with numpy where that is
# this process's host memory (`host_fingerprints`: the same values).
FINGERPRINTS = "fingerprints"


def _fingerprinted(x: Any) -> bool:
  """Whether a leaf gets a fingerprint: real, integer and bool dtypes of 1, 2 or 4 bytes (PRNG
  keys through their data); others (complex, 8-byte dtypes under x64) are saved unchecked."""
  dtype = getattr(x, "dtype", None)
  if dtype is None:
    return False
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return True
  real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
  return dtype == bool or (real and np.dtype(dtype).itemsize in (1, 2, 4))


def _bit_words(x: Any, xp: Any) -> Any:
  """`x`'s elements as uint32 words of their bits (jax.numpy or numpy, by `xp`)."""
  if x.dtype == bool:
    return x.astype(xp.uint32)
  width = {1: xp.uint8, 2: xp.uint16, 4: xp.uint32}[x.dtype.itemsize]
  bits = (jax.lax.bitcast_convert_type(x, width) if xp is not np else x.view(width))
  return bits.astype(xp.uint32)


def _fold(words: Any, index: Any, xp: Any) -> Any:
  """The fingerprint of an array's bit words at their flat indices: sum of words x (2i + 1),
  modulo 2^32 (jax.numpy or numpy, by `xp`)."""
  return xp.sum(words * (index * xp.uint32(2) + xp.uint32(1)), dtype=xp.uint32)


def _device_fingerprint(x: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  words = _bit_words(x, jnp)
  index = jnp.zeros(x.shape, jnp.uint32)   # the flat index without reshaping a sharded array
  stride = 1
  for axis in reversed(range(x.ndim)):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * jnp.uint32(stride)
    stride = (stride * x.shape[axis]) % 2 ** 32
  return _fold(words, index, jnp)


_fingerprints = jax.jit(lambda tree: jax.tree.map(_device_fingerprint, tree))


def _in_host_memory(x: Any) -> bool:
  return (not isinstance(x, jax.Array)
          or (x.is_fully_addressable and targets.platform_of(list(x.devices())) == "cpu"))


def fingerprints(state: Any) -> dict[str, int]:
  """{array path: fingerprint} of a train state (see FINGERPRINTS): on its devices, or where they
  are this process's CPU, from its host memory with numpy (the same values, no program to
  compile for each state's structure)."""
  state = jax.tree.map(lambda x: x if _fingerprinted(x) else None, state)
  if all(_in_host_memory(x) for x in jax.tree.leaves(state)):
    return host_fingerprints(state)
  values = jax.device_get(_fingerprints(state))
  return {path: int(v) for path, v in _leaves_by_path(values).items()}


def host_fingerprints(tree: Any) -> dict[str, int]:
  """`fingerprints` of the leaves of `tree` in this process's host memory (numpy arrays, or jax
  arrays on its CPU); a leaf elsewhere (a GPU's, another host's shards) is left out, not copied."""
  out = {}
  for path, leaf in _leaves_by_path(tree).items():
    if not _fingerprinted(leaf) or not _in_host_memory(leaf):
      continue
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    array = np.asarray(leaf)
    words = _bit_words(array.reshape(-1), np)
    out[path] = int(_fold(words, np.arange(words.size, dtype=np.uint32), np))
  return out


def restored_fingerprints(tree: Any) -> dict[str, int]:
  """`fingerprints` of a state restored where it was saved (`restore_state_arrays`): leaves in this
  process's host memory with numpy, those on its accelerators with the device program (nothing is
  copied to the host), one program per set of devices the leaves lie on. A leaf with shards on
  other processes' devices is left out: a program over it would need every process to run it."""
  out = host_fingerprints(tree)
  groups: dict[frozenset, dict[str, jax.Array]] = {}
  for path, leaf in _leaves_by_path(tree).items():
    if (_fingerprinted(leaf) and isinstance(leaf, jax.Array) and leaf.is_fully_addressable
        and not _in_host_memory(leaf)):
      groups.setdefault(frozenset(leaf.devices()), {})[path] = leaf
  for leaves in groups.values():
    out.update({path: int(v) for path, v in jax.device_get(_fingerprints(leaves)).items()})
  return out


def changed_arrays(saved: Any, now: dict[str, int]) -> list[str]:
  """The arrays whose fingerprint differs from the one saved (none where the checkpoint has no
  fingerprints: one written before they existed)."""
  if not isinstance(saved, dict):
    return []
  return sorted(path for path, value in now.items()
                if path in saved and int(saved[path]) != value)


# grain's input position of process i of n in a checkpoint's data/ item
_PROCESS_FILE = re.compile(r"process_\d+-of-(\d+)\.json$")


class ProcessCountError(RuntimeError):
  """A checkpoint's input positions were saved by another number of processes than this run's."""

  def __init__(self, message: str, saved: int):
    super().__init__(message)
    self.saved = saved


class DamagedCheckpointError(RuntimeError):
  """A finished checkpoint whose files cannot be read (missing, cut short or changed), where its
  arrays' metadata agree with the state it is restored into: the files, not the config, are at
  fault. The message names the step and the earlier checkpoint a rerun could resume from."""


# What orbax / TensorStore / grain say when a checkpoint's file is missing or its bytes are bad,
# and the statuses of a storage that could not be reached (a network, credentials, quota): those
# say nothing about the checkpoint.
_DAMAGE = re.compile(r"NOT_FOUND|DATA_LOSS|does not exist|No such file|checksum|corrupt|"
                     r"unexpected end|truncated", re.IGNORECASE)
_UNREACHABLE = re.compile(r"UNAVAILABLE|DEADLINE_EXCEEDED|PERMISSION_DENIED|UNAUTHENTICATED|"
                          r"RESOURCE_EXHAUSTED|CANCELLED|ABORTED")


def _is_damage(error: BaseException) -> bool:
  text = str(error)
  return not _UNREACHABLE.search(text) and (isinstance(error, FileNotFoundError)
                                            or bool(_DAMAGE.search(text)))


class Checkpointer:
  """Save / restore (state, data iterator, meta) under WORKDIR/checkpoints/<step>."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    """`read_only`: for reading another (possibly running) run: creates, cleans and deletes
    nothing."""
    self.directory = paths.resolve(workdir) / "checkpoints"
    use_small_slices_once()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only,
        enable_async_checkpointing=async_save, save_interval_steps=0 if read_only else 1,
        cleanup_tmp_directories=not read_only, read_only=read_only)
    with _without_orbax_warnings(_READ_ONLY):
      self._manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={"state": ocp.StandardCheckpointHandler(),
                         "data": grain.checkpoint.CheckpointHandler(),
                         "meta": ocp.JsonCheckpointHandler()})
    # darkjax asks JAX's preemption sync point itself, once a step (darkjax.preemption); orbax
    # would ask it too, with the step it saves, and after an async save from its finalising
    # thread with that older step: the sync manager keeps the last step it was given, so a
    # SIGTERM in that window could pick a step already passed, and no process would save.
    # darkjax saves with force=True, so orbax needs the answer for nothing else.
    self._manager.reached_preemption = lambda step: False

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any, meta: dict) -> None:
    self._check_room(step, state)
    meta = {**meta, FINGERPRINTS: fingerprints(state)}
    args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**args), force=True)

  def _check_room(self, step: int, state: Any) -> None:
    """Raises OSError (ENOSPC, EACCES, ...) naming the checkpoint directory when a local one
    cannot take checkpoint `step`: too little free space for this process's share of the state's
    bytes, or no directory can be made in it. orbax, meeting either in its background thread,
    leaves the save waiting for a signal that never comes (minutes, then a timeout that hides
    the cause)."""
    if not paths.is_local(self.directory):
      return
    directory = os.fspath(self.directory)
    os.makedirs(directory, exist_ok=True)
    leaves = jax.tree.leaves(state)
    need = sum(int(getattr(x, "nbytes", 0)) for x in leaves) // jax.process_count()
    # orbax's own files beside the arrays: metadata per array, the sharding and step records,
    # file-system blocks (a small state's checkpoint is mostly these)
    need += _CHECKPOINT_OVERHEAD_BYTES + _PER_ARRAY_OVERHEAD_BYTES * len(leaves)
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    if free < need:
      raise OSError(errno.ENOSPC, f"No space left on device: checkpoint {step} needs about "
                    f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free", directory)
    paths.try_making_a_directory(directory, f"{jax.process_index()}-{os.getpid()}")

  def saved_process_count(self, step: int) -> int | None:
    """How many processes wrote checkpoint `step`'s input positions (grain keeps one file a
    process, `data/process_<i>-of-<n>.json`); None where it holds none."""
    data = self.directory / str(step) / "data"
    try:
      names = [p.name for p in data.iterdir()] if data.is_dir() else []
    except OSError:
      return None
    counts = {int(m.group(1)) for m in map(_PROCESS_FILE.match, names) if m}
    return counts.pop() if len(counts) == 1 else None

  def check_restorable(self, step: int, abstract_state: Any, with_data: bool = True) -> None:
    """Raises StateMismatchError listing the arrays in which checkpoint `step` differs from
    `abstract_state` (name, shape or dtype), then, `with_data`, ProcessCountError where its input
    positions were saved by another number of processes: both read from its metadata, before any
    array is (what `restore` checks first)."""
    differences = self.state_differences(step, abstract_state)
    if differences:
      raise StateMismatchError(f"cannot restore checkpoint {self.directory}/{step}: its "
                               f"{describe_differences(differences)}", differences)
    saved = self.saved_process_count(step) if with_data else None
    if saved is not None and saved != jax.process_count():
      raise ProcessCountError(
          f"checkpoint {self.directory}/{step} was written by {saved} process(es), each with "
          f"its own position in the input (data/process_<i>-of-{saved}.json); this run has "
          f"{jax.process_count()}. Resume it on {saved} process(es) (hosts): the input "
          "positions of one process count do not map onto another's", saved)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict]:
    """Restores into `abstract_state` (shapes + shardings) and, in place, `data_iterator`, after
    `check_restorable` (the arrays' metadata, and with `data_iterator` the process count)."""
    self.check_restorable(step, abstract_state, with_data=data_iterator is not None)
    args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # orbax raises many types; name the checkpoint in every case
      no_metadata = self._metadata_damaged(step)
      if no_metadata or _is_damage(e):
        raise self._damaged(step, e, compared=not no_metadata, resumes=True) from e
      raise RuntimeError(f"cannot restore checkpoint {self.directory}/{step}: {e}") from e
    meta = dict(restored["meta"] or {})
    changed = changed_arrays(meta.pop(FINGERPRINTS, None), fingerprints(restored["state"]))
    if changed:
      raise self._changed(step, changed, resumes=True)
    return restored["state"], meta

  def _changed(self, step: int, changed: list[str], resumes: bool) -> DamagedCheckpointError:
    changed = sorted(changed, key=lambda path: (not path.startswith("params/"), path))
    shown = ", ".join(changed[:MISMATCHES_SHOWN]) + (
        f" and {len(changed) - MISMATCHES_SHOWN} more" if len(changed) > MISMATCHES_SHOWN else "")
    return self._damaged(step, f"{len(changed)} array(s) read back differ from those saved, by "
                               f"the fingerprints saved with them: {shown}", compared=True,
                         resumes=resumes)

  def _metadata_damaged(self, step: int) -> bool:
    """Whether the arrays' metadata of checkpoint `step` is missing or unreadable (a storage that
    cannot be reached is not that)."""
    try:
      return self._manager.item_metadata(step)["state"] is None
    except Exception as error:  # pylint: disable=broad-except  # orbax raises many types
      return not _UNREACHABLE.search(str(error))

  def _damaged(self, step: int, error: BaseException | str, compared: bool = False,
               resumes: bool = False) -> DamagedCheckpointError:
    """The error for checkpoint `step`, whose files cannot be read: what orbax said (its first
    300 characters) or what darkjax found, and what to do. `compared`: its arrays' names, shapes
    and dtypes were found to be the run's (so the config is not at fault); `resumes`: a training
    run is restoring it (moved aside, the rerun resumes from the checkpoint before it)."""
    found = " ".join(str(error).split())
    if not isinstance(error, str) and len(found) > 300:
      found = f"{found[:300]} ..."
    aside = f"{self.directory}/{step}"
    dest = f"{posixpath.dirname(str(self.directory))}/damaged-{step}"
    move = (f"mv {aside} {dest}" if "://" not in aside else
            f"your storage's move, e.g. gcloud storage mv --recursive {aside} {dest}")
    text = (f"checkpoint {aside} cannot be read: a file of it is missing or damaged"
            + (", while its arrays' names, shapes and dtypes are this run's" if compared else "")
            + f" ({found}). Restore it from a copy")
    if resumes:
      earlier = [s for s in self.all_steps() if s < step]
      then = (f"a rerun then resumes from step {earlier[-1]}, the checkpoint before it"
              if earlier else "no earlier checkpoint is kept: a rerun then starts from step 0")
      text += f", or move it out of {self.directory} ({move}): {then}"
    else:
      text += f", or name another step of {posixpath.dirname(str(self.directory))}"
    return DamagedCheckpointError(text)

  def state_differences(self, step: int, abstract_state: Any) -> list[str]:
    """How the train state saved at `step` differs from `abstract_state` (arrays or
    ShapeDtypeStructs), one line per array: missing from the checkpoint, not in this run's state,
    or another shape or dtype; [] when they agree (or the checkpoint has no array metadata)."""
    try:
      stored = self._manager.item_metadata(step)["state"]
    except Exception:  # pylint: disable=broad-except  # metadata is a pre-check; restore decides
      return []
    if stored is None:
      return []
    have, want = _leaves_by_path(stored), _leaves_by_path(abstract_state)
    lines = [f"{path}: not in the checkpoint" for path in want if path not in have]
    lines += [f"{path}: in the checkpoint, not in this run's state" for path in have
              if path not in want]
    for path in want.keys() & have.keys():
      a, b = have[path], want[path]
      shape_a, shape_b = tuple(getattr(a, "shape", ())), tuple(getattr(b, "shape", ()))
      dtype_a, dtype_b = getattr(a, "dtype", None), getattr(b, "dtype", None)
      if shape_a != shape_b:
        lines.append(f"{path}: checkpoint {shape_a}, this run {shape_b}")
      elif dtype_a is not None and dtype_b is not None and jax.numpy.dtype(dtype_a) != \
          jax.numpy.dtype(dtype_b):
        lines.append(f"{path}: checkpoint {dtype_a}, this run {dtype_b}")
    return sorted(lines)

  def restore_state_arrays(self, step: int) -> Any:
    """The train state saved at `step` as plain host arrays (no target shapes or shardings):
    for taking the weights of another run."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(None), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; name the checkpoint in every case
      if _is_damage(e) or self._metadata_damaged(step):
        raise self._damaged(step, e) from e
      raise RuntimeError(f"cannot restore checkpoint {self.directory}/{step}: {e}") from e
    # checked where orbax placed them (the host, this process's GPUs); shards across hosts stay
    # unchecked here
    changed = changed_arrays((restored["meta"] or {}).get(FINGERPRINTS),
                             restored_fingerprints(restored["state"]))
    if changed:
      raise self._changed(step, changed, resumes=False)
    return restored["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
