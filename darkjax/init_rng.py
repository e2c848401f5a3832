"""Initialisation programs whose random draws share a few threefry calls: the same values, faster
to compile.

A model's `init` draws every parameter from its own key: one threefry hash per parameter, which
XLA:CPU compiles as one rolled loop and kernel per parameter shape, most of an initialisation
program's compile time (docs/benchmarks.md, "Compile time of smoke runs and initialisation").
With JAX's partitionable threefry (`jax_threefry_partitionable`, the default), the bits a key
draws for an array depend on the key and the element's flat index only, not on the array's shape
(`jax.random.bits(k, (5, 7))` is `jax.random.bits(k, (64,))[:35].reshape(5, 7)`). So
`batched_draws(fn)` traces `fn` to a jaxpr, computes the keys of all its `random_bits` draws
first, hashes all their elements in fixed-size chunks of one threefry call each (identical
kernels, compiled once) and hands each draw its slice: every output is bit for bit what `fn`
returns (tests/test_init_rng.py: a Flax model's and the Trainer's init).

Draws inside loops (`nn.scan` bodies, `lax.scan`/`while`/`cond`), of 64-bit width, of keys other
than threefry's, or whose key depends on another draw, are made as before. Without partitionable
threefry, `batched_draws(fn)` is `fn`; so it is, with a logged warning, where the jaxpr holds a
form the transform cannot evaluate (a JAX version it was not written for).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Callable

import jax
import jax.extend.core as jex
import jax.extend.random as jexr
import jax.numpy as jnp
import numpy as np

# Elements hashed by one threefry call. Chunks are padded to it, so every chunk is the same kernel;
# large enough that a chunk's loop overhead is small, small enough that the padding and the per
# element keys (6 uint32 arrays of CHUNK) stay a few tens of MB.
CHUNK = 1 << 20
# Call-like primitives whose body is inlined to reach the draws inside (`jax.random.normal` and
# friends are jitted functions: their draws sit in `pjit` bodies).
_INLINED = frozenset({"pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
                      "custom_vjp_call", "custom_vjp_call_jaxpr", "checkpoint", "remat"})
_BIT_DTYPES = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}


@dataclasses.dataclass
class _Draw:
  key_data: jax.Array    # uint32[2]
  size: int


def _threefry_key(key: Any) -> bool:
  try:
    return str(jax.random.key_impl(key)) == jexr.threefry_prng_impl.name
  except TypeError:   # not a typed key
    return False


def _batchable(eqn: Any, key: Any) -> bool:
  shape = tuple(eqn.params["shape"])
  return (eqn.params["bit_width"] in _BIT_DTYPES and np.shape(key) == ()
          and _threefry_key(key) and 0 < math.prod(shape) < 2 ** 32)


def _inlined_body(eqn: Any) -> tuple[Any, list] | None:
  """(Jaxpr, consts) a call-like eqn runs, if it is one we inline."""
  if eqn.primitive.name not in _INLINED:
    return None
  for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    inner = eqn.params.get(name)
    if inner is not None:   # a ClosedJaxpr, or an open Jaxpr (jax.checkpoint's)
      return getattr(inner, "jaxpr", inner), list(getattr(inner, "consts", ()))
  return None


def _has_draws(jaxpr: Any, memo: dict[int, bool]) -> bool:
  """Does `jaxpr` (a Jaxpr) reach a random_bits outside loops through inlined calls? `memo`:
  answers by id of the jaxprs of one trace (a jitted initialiser's body recurs per parameter)."""
  if id(jaxpr) not in memo:
    memo[id(jaxpr)] = False
    for eqn in jaxpr.eqns:
      body = _inlined_body(eqn)
      if eqn.primitive.name == "random_bits" or (body is not None and _has_draws(body[0], memo)):
        memo[id(jaxpr)] = True
        break
  return memo[id(jaxpr)]


def _evaluate(jaxpr: Any, consts: list, args: list, tainted_args: list[bool],
              draw: Callable, memo: dict[int, bool]) -> tuple[list, list[bool]]:
  """Evaluates `jaxpr`, inlining the calls that reach a random_bits; `draw(eqn, key,
  key_tainted)` gives each random_bits' bits, or None to bind it as is. Returns the outputs and
  whether each is tainted: computed from a draw's bits (a key computed so cannot be known before
  the draws are made)."""
  env: dict[Any, Any] = {}
  tainted: set[Any] = set()

  def read(v):
    return v.val if isinstance(v, jex.Literal) else env[v]

  def is_tainted(v):
    return not isinstance(v, jex.Literal) and v in tainted

  for v, x in zip(jaxpr.constvars, consts):
    env[v] = x
  for v, x, t in zip(jaxpr.invars, args, tainted_args):
    env[v] = x
    if t:
      tainted.add(v)
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    in_tainted = [is_tainted(v) for v in eqn.invars]
    body = _inlined_body(eqn)
    outvals = None
    out_tainted = [any(in_tainted)] * len(eqn.outvars)
    if eqn.primitive.name == "random_bits" and _batchable(eqn, invals[0]):
      bits = draw(eqn, invals[0], in_tainted[0])
      if bits is not None:
        outvals, out_tainted = [bits], [True]
    elif body is not None and _has_draws(body[0], memo):
      outvals, out_tainted = _evaluate(*body, invals, in_tainted, draw, memo)
    if outvals is None:
      with eqn.ctx.manager:
        outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
    for v, x, t in zip(eqn.outvars, outvals, out_tainted):
      if not isinstance(v, jex.DropVar):
        env[v] = x
        if t:
          tainted.add(v)
  return [read(v) for v in jaxpr.outvars], [is_tainted(v) for v in jaxpr.outvars]


def _hash_all(draws: list[_Draw]) -> list[jax.Array]:
  """Each draw's flat uint32 bits (`bits1 ^ bits2` of threefry2x32 on its key and the counts
  0..size-1), hashed CHUNK elements per threefry call."""
  total = sum(d.size for d in draws)
  chunk = min(CHUNK, max(1024, 1 << (total - 1).bit_length()))   # a small init: one small chunk
  pieces: list[list[jax.Array]] = [[] for _ in draws]
  segments: list[tuple[int, int, int]] = []   # (draw, first count, length) of the current chunk
  filled = 0

  def flush():
    nonlocal segments, filled
    if not segments:
      return
    pad = chunk - filled
    k1 = [jnp.broadcast_to(draws[i].key_data[0], (n,)) for i, _, n in segments]
    k2 = [jnp.broadcast_to(draws[i].key_data[1], (n,)) for i, _, n in segments]
    counts = [jax.lax.iota(jnp.uint32, n) + jnp.uint32(start) for _, start, n in segments]
    if pad:
      k1.append(jnp.zeros((pad,), jnp.uint32))
      k2.append(jnp.zeros((pad,), jnp.uint32))
      counts.append(jnp.zeros((pad,), jnp.uint32))
    counts_lo = jnp.concatenate(counts)
    bits1, bits2 = jexr.threefry2x32_p.bind(jnp.concatenate(k1), jnp.concatenate(k2),
                                            jnp.zeros_like(counts_lo), counts_lo)
    bits = bits1 ^ bits2
    offset = 0
    for i, _, n in segments:
      pieces[i].append(jax.lax.slice(bits, (offset,), (offset + n,)))
      offset += n
    segments, filled = [], 0

  for index, d in enumerate(draws):
    start = 0
    while start < d.size:
      n = min(d.size - start, chunk - filled)
      segments.append((index, start, n))
      filled += n
      start += n
      if filled == chunk:
        flush()
  flush()
  return [p[0] if len(p) == 1 else jnp.concatenate(p) for p in pieces]


def batched_draws(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` (a function of arrays, traced once per call) with its threefry draws hashed together;
  same outputs bit for bit (module docstring)."""

  @functools.wraps(fn)
  def wrapped(*args):
    if not jax.config.jax_threefry_partitionable:
      return fn(*args)
    flat_args, in_tree = jax.tree.flatten(args)
    closed, out_shape = jax.make_jaxpr(lambda *a: fn(*jax.tree.unflatten(in_tree, a)),
                                       return_shape=True)(*flat_args)
    jaxpr, consts = closed.jaxpr, list(closed.consts)
    memo: dict[int, bool] = {}
    if not _has_draws(jaxpr, memo):
      return fn(*args)
    draws: list[_Draw] = []
    batched: list[bool] = []   # per random_bits met, in order: hashed with the others?

    def record(eqn, key, key_tainted):
      batched.append(not key_tainted)
      if key_tainted:
        return None
      draws.append(_Draw(jax.random.key_data(key), math.prod(eqn.params["shape"])))
      return jnp.zeros(eqn.params["shape"], _BIT_DTYPES[eqn.params["bit_width"]])

    # First pass: every draw's key (what it computes from the stand-in bits is dead code XLA
    # removes).
    untainted = [False] * len(flat_args)
    try:
      _evaluate(jaxpr, consts, flat_args, untainted, record, memo)
    except Exception as error:  # pylint: disable=broad-except
      # `fn` itself traced (above): this is the interpreter meeting a jaxpr form it does not know
      # (another JAX version). The plain program computes the same values, compiled slower.
      logging.warning("darkjax.init_rng: the draws of %s are made one by one (%s: %s)",
                      getattr(fn, "__name__", fn), type(error).__name__, error)
      return fn(*args)
    hashed = iter(_hash_all(draws))
    decisions = iter(batched)

    def replay(eqn, key, key_tainted):
      del key, key_tainted   # same keys as the first pass's; recomputing them here is dead code
      if not next(decisions):
        return None
      bits = next(hashed).reshape(eqn.params["shape"])
      dtype = _BIT_DTYPES[eqn.params["bit_width"]]
      return bits if dtype == jnp.uint32 else jax.lax.convert_element_type(bits, dtype)

    outs, _ = _evaluate(jaxpr, consts, flat_args, untainted, replay, memo)
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped
