"""darkjax.init_rng: initialisation programs whose threefry draws are hashed together give the
same values bit for bit, with fewer threefry loops for XLA:CPU to compile.

Each check compares `batched_draws(fn)` with `fn` under `jax.jit`; the draws cover every path
of the transform: plain, 8- and 16-bit, keys split under `vmap` (made as before), a draw inside
`lax.scan` (made as before), a key computed from another draw's bits (made as before), draws that
cross chunk boundaries, and a Flax model's `init` with `nn.scan`, BatchNorm and Dropout.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import init_rng


def _draws(key):
  bits = jax.random.bits(key, (3,))
  from_bits = jax.random.fold_in(key, bits[0])          # a key known only after a draw
  keys = jax.random.split(key, 4)

  def body(carry, k):
    return carry + jax.random.normal(k, (5,)), None

  scanned, _ = jax.lax.scan(body, jnp.zeros(5), keys)
  return {
      "normal": jax.random.normal(jax.random.fold_in(key, 1), (7, 11)),
      "truncated": jax.random.truncated_normal(keys[0], -2.0, 2.0, (3, 3, 3, 4, 6)),
      "bf16": jax.random.uniform(keys[1], (33,), dtype=jnp.bfloat16),
      "int8": jax.random.randint(keys[2], (9,), 0, 100, dtype=jnp.int8),
      "from_bits": jax.random.normal(from_bits, (4,)),
      "vmapped": jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys),
      "scanned": scanned,
      "bits": bits,
  }


def _assert_identical(a, b):
  flat_a, flat_b = jax.tree.leaves_with_path(a), jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                  err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("chunk", [None, 16])
def test_same_values_as_the_per_draw_hashes(chunk, monkeypatch):
  if chunk is not None:   # draws split over several chunks, chunks shared by several draws
    monkeypatch.setattr(init_rng, "CHUNK", chunk)
  key = jax.random.key(3)
  _assert_identical(jax.jit(_draws)(key), jax.jit(init_rng.batched_draws(_draws))(key))


class _Block(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.relu(nn.Dense(x.shape[-1])(x)), None


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(6, (3, 3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Dense(8)(x.mean(axis=(1, 2, 3)))
    x, _ = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True},
                   length=3)()(x, None)
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(5)(x)


def _whiles(compiled) -> int:
  return len(re.findall(r" while\(", compiled.as_text()))


def test_flax_init_identical_with_fewer_threefry_loops():
  model = _Net()
  clips = jnp.zeros((1, 4, 8, 8, 3))

  def init(key):
    return model.init({"params": key, "dropout": key}, clips)

  key = jax.random.key(0)
  plain = jax.jit(init).lower(key).compile()
  batched = jax.jit(init_rng.batched_draws(init)).lower(key).compile()
  _assert_identical(plain(key), batched(key))
  # XLA:CPU compiles each threefry hash as a loop: one per kernel drawn outside the scan (three)
  # before, one for all after (the key derivations and the scanned draws keep theirs).
  assert _whiles(batched) <= _whiles(plain) - 2, (_whiles(batched), _whiles(plain))


def test_cpu_init_options_give_the_values_of_xlas_fusion_emitters():
  """targets.init_compiler_options("cpu") compiles the init programs with XLA's legacy elementwise
  emitter (a faster compile): the draws and a Flax model's init are the same bit for bit as under
  XLA:CPU's MLIR fusion emitters, so every run of a config starts from the same parameters."""
  from darkjax import targets  # pylint: disable=import-outside-toplevel
  options = targets.init_compiler_options("cpu")
  assert options["xla_cpu_use_fusion_emitters"] is False
  mlir = dict(options, xla_cpu_use_fusion_emitters=True)
  model, clips = _Net(), jnp.zeros((1, 4, 8, 8, 3))

  def init(key):
    return {"draws": _draws(key), "net": model.init({"params": key, "dropout": key}, clips)}

  key = jax.random.key(5)
  for fn in (init, init_rng.batched_draws(init)):
    _assert_identical(jax.jit(fn, compiler_options=mlir)(key),
                      jax.jit(fn, compiler_options=options)(key))


def test_a_function_without_draws_is_unchanged():
  def f(x):
    return {"y": x * 2, "z": jnp.zeros(3)}

  out = jax.jit(init_rng.batched_draws(f))(jnp.arange(4.0))
  np.testing.assert_array_equal(out["y"], np.arange(4.0) * 2)
  assert out["z"].shape == (3,)


def test_the_trainer_init_on_cpu_matches_a_plain_init(tmp_path):
  """The Trainer's parameter init on this CPU host goes through batched_draws (fewer threefry
  loops in its compiled program) and starts from the same parameters as the plain init."""
  from configs import synthetic  # pylint: disable=import-outside-toplevel

  from darkjax import task as task_lib, train  # pylint: disable=import-outside-toplevel
  config = synthetic.get_config(f"runlocal,data_dir={tmp_path / 'data'}")
  task = task_lib.load_task(config, num_classes=3)
  trainer = train.Trainer(config, str(tmp_path / "run"), task=task, devices=jax.devices()[:1])
  frames, size = config.input.frames, config.input.crop_size
  sample = {"video": jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.uint8),
            "label": jax.ShapeDtypeStruct((1,), jnp.int32)}
  key = jax.random.key(int(config.seed))
  with trainer.scope():
    trainer.build(sample)
    ours = trainer._init.lower(key).compile()   # pylint: disable=protected-access
    # the Task's init as it is (the Trainer's is jitted, one trace for its two uses)
    plain = jax.jit(trainer._init_fn(trainer.tx, sample,   # pylint: disable=protected-access
                                     task.init_variables),
                    out_shardings=trainer.state_shardings).lower(key).compile()
    _assert_identical(plain(key).params, ours(key).params)
  assert _whiles(ours) < _whiles(plain), (_whiles(ours), _whiles(plain))


def test_only_small_cpu_init_programs_are_transformed():
  from darkjax import targets  # pylint: disable=import-outside-toplevel

  def init(key):
    return jax.random.normal(key, (3,))

  assert targets.init_program(init, "gpu") is init and targets.init_program(init, "tpu") is init
  assert targets.init_program(init, "cpu", params=1000) is not init
  # A paper-size model keeps its per-draw program: it compiles and runs faster there.
  assert targets.init_program(init, "cpu", targets.BATCHED_INIT_MAX_PARAMS + 1) is init


def test_a_jaxpr_the_transform_cannot_evaluate_falls_back_to_the_plain_draws(monkeypatch, caplog):
  def broken(*args, **kwargs):
    raise NotImplementedError("a jaxpr form of another JAX version")

  monkeypatch.setattr(init_rng, "_evaluate", broken)
  key = jax.random.key(3)
  with caplog.at_level("WARNING"):
    _assert_identical(jax.jit(_draws)(key), jax.jit(init_rng.batched_draws(_draws))(key))
  assert "draws of _draws are made one by one (NotImplementedError" in caplog.text


def test_gpu_init_programs_lower_with_jaxs_threefry_kernel():
  """On a GPU the init program is traced and lowered with JAX's threefry kernel
  (`targets.init_jit`; tests/test_aot.py compiles one for an H100); elsewhere it is jitted as
  is. The flag changes GPU lowerings only: on this host the values are the plain init's."""
  from jax._src import config as jax_config  # pylint: disable=import-outside-toplevel

  from darkjax import targets  # pylint: disable=import-outside-toplevel
  key = jax.random.key(7)
  want = np.asarray(jax.random.normal(key, (4, 3)))

  def program(seen):   # a fresh function per platform: each is traced once, by its own jit
    def init(key):
      seen.append(jax_config.threefry_gpu_kernel_lowering.value)
      return jax.random.normal(key, (4, 3))
    return init

  seen = []
  gpu = targets.init_jit(program(seen), "gpu", params=12)
  np.testing.assert_array_equal(np.asarray(gpu(key)), want)
  assert gpu.lower(key).compile()(key).shape == (4, 3)
  assert seen and all(seen)   # traced under the kernel flag, for the call and the lowering
  for platform in ("cpu", "tpu"):
    seen = []
    plain = targets.init_jit(program(seen), platform, params=10 ** 9)
    assert not hasattr(plain, "jitted")
    np.testing.assert_array_equal(np.asarray(plain(key)), want)
    assert seen == [False]
