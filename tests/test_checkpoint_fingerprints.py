"""Checkpoint fingerprints: the same value on the devices (a sharded array summed where it lies)
and on the host (numpy, for a state restored without shardings), and changed by one flipped bit
or two swapped elements."""

from __future__ import annotations

import errno
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from darkjax import checkpoint


def _tree():
  rng = np.random.default_rng(0)
  return {"params": {"kernel": rng.normal(size=(8, 6, 4)).astype(np.float32),
                     "scale": rng.normal(size=(5,)).astype(jnp.bfloat16)},
          "step": np.int32(7), "mask": rng.random(9) > 0.5, "bytes": rng.integers(0, 255, 11,
                                                                                   np.uint8)}


def test_device_and_host_fingerprints_agree_sharded_or_not():
  tree = _tree()
  mesh = jax.make_mesh((8,), ("data",))
  placed = dict(tree, params=dict(tree["params"], kernel=jax.device_put(
      tree["params"]["kernel"], NamedSharding(mesh, P("data")))))
  host = checkpoint.host_fingerprints(tree)
  assert checkpoint.fingerprints(placed) == host == checkpoint.fingerprints(
      jax.device_put(tree))
  assert set(host) == {"params/kernel", "params/scale", "step", "mask", "bytes"}
  keyed = {"key": jax.random.key(3)}   # typed keys: their data's bits
  assert checkpoint.fingerprints(keyed) == checkpoint.host_fingerprints(
      {"key": np.asarray(jax.random.key_data(keyed["key"]))})


def test_a_flipped_bit_or_swapped_elements_change_the_fingerprint():
  tree = _tree()
  before = checkpoint.host_fingerprints(tree)
  flipped = tree["params"]["kernel"].copy()
  flipped.view(np.uint32)[3, 2, 1] ^= 1 << 31
  swapped = tree["params"]["kernel"].copy()
  swapped[0, 0, [0, 1]] = swapped[0, 0, [1, 0]]
  for kernel in (flipped, swapped):
    after = checkpoint.host_fingerprints(dict(tree, params=dict(tree["params"], kernel=kernel)))
    assert checkpoint.changed_arrays(before, after) == ["params/kernel"]
  assert checkpoint.changed_arrays(None, before) == []   # a checkpoint saved without them


def test_the_device_program_gives_the_host_values():
  """On CPU devices `fingerprints` reads host memory; the program a GPU or TPU runs (each array
  summed where its shards lie) agrees."""
  tree = _tree()
  mesh = jax.make_mesh((8,), ("data",))
  placed = jax.device_put(dict(tree, params=dict(tree["params"], kernel=jax.device_put(
      tree["params"]["kernel"], NamedSharding(mesh, P("data"))))))
  on_device = {path: int(v) for path, v in checkpoint._leaves_by_path(   # pylint: disable=protected-access
      jax.device_get(checkpoint._fingerprints(placed))).items()}   # pylint: disable=protected-access
  assert on_device == checkpoint.fingerprints(placed) == checkpoint.host_fingerprints(_tree())


def test_leaves_of_other_dtypes_are_saved_unchecked():
  tree = {"w": np.ones((3,), np.float32), "z": np.ones((2,), np.complex64)}
  assert set(checkpoint.fingerprints(jax.device_put(tree))) == {"w"}
  assert set(checkpoint.host_fingerprints(tree)) == {"w"}


def test_only_missing_or_bad_bytes_read_as_damage():
  """A storage that cannot be reached (network, credentials, quota) says nothing about the
  checkpoint: it is not reported as damaged (which would advise moving a healthy one aside)."""
  damage = ['NOT_FOUND: Error opening "zarr" driver: Metadata at "step/.zarray" does not exist',
            "DATA_LOSS: Error reading ...: CRC-32C checksum verification failed"]
  for text in damage:
    assert checkpoint._is_damage(ValueError(text))   # pylint: disable=protected-access
  assert checkpoint._is_damage(FileNotFoundError("x"))   # pylint: disable=protected-access
  for text in ['UNAVAILABLE: Error reading "step/.zarray": connection reset',
               "PERMISSION_DENIED: Error reading gs://b/run/checkpoints/4: does not exist or no "
               "access", "shapes do not match"]:
    assert not checkpoint._is_damage(ValueError(text))   # pylint: disable=protected-access


def test_a_state_restored_on_accelerators_is_fingerprinted_there(monkeypatch):
  """`restore_state_arrays` (predict, export, weights from another run) gets the arrays where
  orbax placed them: on a GPU their fingerprints come from the device program, not a copy to the
  host, and give the saved values. Here the CPU devices stand in for a GPU's memory."""
  tree = _tree()
  placed = jax.device_put(tree)
  calls = []
  program = checkpoint._fingerprints   # pylint: disable=protected-access
  monkeypatch.setattr(checkpoint, "_fingerprints", lambda t: calls.append(sorted(t)) or program(t))
  assert checkpoint.restored_fingerprints(placed) == checkpoint.host_fingerprints(tree)
  assert calls == []   # CPU memory: numpy
  monkeypatch.setattr(checkpoint, "_in_host_memory", lambda x: not isinstance(x, jax.Array))
  mixed = dict(placed, step=np.int32(7))   # a numpy leaf beside the device ones
  assert checkpoint.restored_fingerprints(mixed) == checkpoint.host_fingerprints(tree)
  assert calls == [["bytes", "mask", "params/kernel", "params/scale"]]
  kernel = tree["params"]["kernel"].copy()
  kernel[1, 2, 3] += 1.0
  changed = dict(placed, params=dict(placed["params"], kernel=jax.device_put(kernel)))
  assert checkpoint.changed_arrays(checkpoint.host_fingerprints(tree),
                                   checkpoint.restored_fingerprints(changed)) == ["params/kernel"]


def test_the_room_a_save_needs_counts_orbaxs_files_beside_the_arrays(tmp_path, monkeypatch):
  """A disk with room for the arrays' bytes but not for orbax's metadata beside them is refused
  before the save, with the one-line OSError: orbax, failing mid-write in its threads, printed
  their tracebacks."""
  state = {"w": np.zeros((64, 64), np.float32), "b": np.zeros((64,), np.float32)}
  saver = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  arrays = sum(x.nbytes for x in state.values())
  real = os.statvfs(tmp_path)
  for free, fits in ((arrays + 4096, False), (arrays + (1 << 20), True)):
    monkeypatch.setattr(os, "statvfs", lambda _, f=free: types.SimpleNamespace(
        f_bavail=f // real.f_frsize, f_frsize=real.f_frsize))
    if fits:
      saver._check_room(1, state)   # pylint: disable=protected-access
      continue
    with pytest.raises(OSError, match=r"checkpoint 1 needs about 0.3 MiB") as raised:
      saver._check_room(1, state)   # pylint: disable=protected-access
    assert raised.value.errno == errno.ENOSPC
