r"""Model-zoo table: parameters, XLA-counted forward FLOPs and conv/matmul MACs per model.

  python -m darkjax.tools.zoo_table              # all real zoo models at 16 and 64 x 112^2
  python -m darkjax.tools.zoo_table --models resnext3d_101 r3d_18 --frames 16,64 --size 112 \
      --classes 400 --out zoo.md

For each model (batch 1, inference: `train=False`, `num_classes` = `--classes`):
  params    `jax.eval_shape(model.init, ...)`: the `params` collection (no BatchNorm statistics).
  GFLOPs    `cost_analysis()["flops"] / 1e9` of the jitted apply, lowered on abstract inputs and
            never compiled (`Lowered.cost_analysis` analyses the unoptimised HLO).
  GMACs     multiply-accumulates of every convolution and matmul in the jaxpr: output elements x
            contraction length (kernel volume x input channels per group), padding included.
            The conv / linear part of what thop, ptflops and fvcore count, and what papers and
            torchvision usually call "FLOPs" (torchvision's r3d_18: 40.697 "GFLOPS" = our GMACs).

How XLA counts, checked on single convs (tests/test_zoo_table.py): a multiply-add is 2 FLOPs, and
for a convolution only the taps that land inside the (unpadded) input are counted, so a padded 3x3x3
conv on a small map costs less than 2x its MACs; BatchNorm, ReLU, pooling and the residual adds are
counted too (one FLOP or a few per element). So GFLOPs ~ 2 x GMACs, a little below it where padding
dominates (7x7x7 stems, 4x4 late maps) and a little above it where elementwise work does.

Two rewrites make the FLOP count that of the mathematical network:
  - `darkjax.layers.conv.native_lowering()`: XLA's native 3D convolution and pooling instead of the
    CPU lowerings (2D convs over zero-padded temporal taps plus tap sums, all of which XLA counts:
    r3d_18 at 16 x 112^2 gives 77.88 GFLOPs with them, 71.88 without, +8%).
  - every `lax.scan` (the `nn.scan`-ned residual blocks of the Hara ResNets) is fully unrolled:
    XLA's cost analysis counts a while-loop body once, whatever its trip count (resnet3d_101 at
    16 x 112^2: 12.48 GFLOPs rolled, 21.85 unrolled).

Skipped unless named with `--models`: tiny test variants, the Zero-DCE enhancers and the composite
paper models (DiNet, DTCM, LIFT-Net: backbone + heads; LIFT-Net takes two streams). ViT encodes
frames independently and is built for 224^2 images (its position embeddings fix the token count),
so its row gives parameters at 224^2 and the cost of one 224^2 frame in the note; a T-frame clip
costs T times that.

Nothing is compiled or allocated (abstract evaluation only), so the whole table takes seconds on a
laptop (time and memory measured for the 17 default models: docs/zoo.md). Table and the
comparison with DTCM Table III and torchvision: docs/zoo.md.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from darkjax import models, paths, profiling
from darkjax.layers.conv import native_lowering
from darkjax.models import enhancers

# Published counts beside ours: params (M) and "GFLOPs" per (frames, size). DTCM Table III: only
# the values known for sure (others stay blank rather than guessed). torchvision: the `num_params`
# and `_ops` ("GFLOPS", 16 x 112^2) of its Kinetics-400 weights' metadata.
PUBLISHED = {
    "resnext3d_101": {"source": "DTCM Tab. III", "params_m": 47.54, "gflops": {(64, 112): 38.47},
                      "note": "DTCM's params are with an 11-class (ARID) head (ours with "
                              "--classes 11: 47.54 M); its 38.47 = our 38.27 GMACs + 2 ops per "
                              "BatchNorm output (0.099 G outputs), a thop-style count"},
    "r3d_18": {"source": "torchvision", "params_m": 33.371472, "gflops": {(16, 112): 40.697}},
    "mc3_18": {"source": "torchvision", "params_m": 11.69544, "gflops": {(16, 112): 43.343}},
    "r2plus1d_18": {"source": "torchvision", "params_m": 31.505325,
                    "gflops": {(16, 112): 40.519}},
}
# Families whose models the default table leaves out (enhancers, composite paper models).
_SKIPPED_FAMILIES = ("darkjax.models.enhancers", "darkjax.models.dinet", "darkjax.models.dtcm",
                     "darkjax.models.liftnet", "darkjax.models.actlumos",
                     "darkjax.models.twostream")
_VIT_FRAME_SIZE = 224


def default_models() -> list[str]:
  """The real zoo models: `models.names()` without test variants, enhancers and composites."""
  skipped = set()
  for family in _SKIPPED_FAMILIES:
    skipped.update(importlib.import_module(family).VARIANTS)
  return [name for name in models.names() if name not in skipped and "tiny" not in name]


def _build(name: str, num_classes: int, frames: int, size: int):
  """`models.build` plus the size-bound attributes some models need (C3D's fc6 input size)."""
  kwargs: dict[str, Any] = {}
  if name == "c3d" or name.startswith("c3d_"):
    kwargs["input_size"] = (frames, size, size)
  return models.build(name, num_classes, **kwargs)


def _abstract_inputs(model, shape: Sequence[int]):
  clip = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), clip)
  return variables, clip


def count_params(variables: Any) -> int:
  """Number of trainable parameters (the `params` collection) of an (abstract) variable tree."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables.get("params", {})))


def count_macs(closed: jex_core.ClosedJaxpr) -> int:
  """Multiply-accumulates of all convolutions and dot products in a jaxpr (scan bodies times their
  length; padding taps included, as thop / fvcore count)."""
  total = 0
  for eqn in closed.jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      out_elems = math.prod(eqn.outvars[0].aval.shape)
      kernel = eqn.invars[1].aval.shape
      out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += out_elems * (math.prod(kernel) // out_features)
    elif name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
    elif name == "while":
      raise ValueError("zoo_table: a while loop (unknown trip count) in the model: its MACs "
                       "cannot be counted")
    repeat = int(eqn.params["length"]) if name == "scan" else 1
    for sub in jex_core.jaxprs_in_params(eqn.params):
      total += repeat * count_macs(jex_core.ClosedJaxpr(sub, ()))
  return total


def forward_cost(model, shape: Sequence[int], native: bool = True) -> dict[str, float]:
  """{"params", "flops", "macs"} of one inference pass of `model` on a float32 `shape` input.

  `flops` is XLA's cost analysis of the lowered (not compiled) apply with scans unrolled;
  `native` traces it inside `native_lowering()` (XLA's own 3D conv, the mathematical op).
  """
  variables, clip = _abstract_inputs(model, shape)
  apply = lambda v, x: model.apply(v, x, train=False)[0]  # noqa: E731 (fresh trace every call)
  if native:
    with native_lowering():
      closed = jax.make_jaxpr(apply)(variables, clip)
  else:
    closed = jax.make_jaxpr(apply)(variables, clip)
  flops = profiling.jaxpr_flops(closed, jax.tree.leaves((variables, clip)))
  if flops is None:
    raise RuntimeError(f"zoo_table: XLA returned no FLOP count for {type(model).__name__} at "
                       f"{tuple(shape)}")
  return {"params": count_params(variables), "flops": flops, "macs": float(count_macs(closed))}


def model_row(name: str, frames: Sequence[int], size: int, num_classes: int) -> dict[str, Any]:
  """Costs of `name` at each frame count: {"params": {T: n}, "flops": {T: f}, "macs": {T: m},
  "note": str}. ViT: parameters and the cost of one 224^2 frame (see the module docstring)."""
  if name in enhancers.VARIANTS:
    raise ValueError(f"{name} is an image enhancer (no classifier, per-frame input): use "
                     f"`python -m darkjax.tools.enhancer_cost --enhancer {name}`")
  row: dict[str, Any] = {"name": name, "params": {}, "flops": {}, "macs": {}, "note": ""}
  if name.startswith("vit_"):
    cost = forward_cost(models.build(name, num_classes), (1, _VIT_FRAME_SIZE, _VIT_FRAME_SIZE, 3))
    row["params"] = {t: cost["params"] for t in frames}
    row["note"] = (f"per {_VIT_FRAME_SIZE}² frame: {cost['flops'] / 1e9:.2f} GFLOPs, "
                   f"{cost['macs'] / 1e9:.2f} GMACs (a T-frame clip: T x)")
    return row
  for t in frames:
    cost = forward_cost(_build(name, num_classes, t, size), (1, t, size, size, 3))
    row["params"][t], row["flops"][t], row["macs"][t] = cost["params"], cost["flops"], cost["macs"]
  if len(set(row["params"].values())) > 1:
    row["note"] = "params depend on the clip size (fc6 sized for it): " + ", ".join(
        f"{row['params'][t] / 1e6:.2f} M at {t} frames" for t in frames)
  return row


def _published_cell(name: str, frames: Sequence[int], size: int) -> str:
  published = PUBLISHED.get(name)
  if not published:
    return ""
  flops = [f"{value} at {t}x{s}²" for (t, s), value in published["gflops"].items()
           if s == size and t in frames]
  return (f"{published['source']}: {published['params_m']:.2f} M / " +
          (", ".join(flops) if flops else "-"))


def markdown_table(rows: Sequence[dict[str, Any]], frames: Sequence[int], size: int,
                   num_classes: int) -> str:
  clip = lambda t: f"{t}x{size}²"  # noqa: E731
  header = (["model", "params (M)"] + [f"GFLOPs {clip(t)}" for t in frames] +
            [f"GMACs {clip(t)}" for t in frames] + ["published params / GFLOPs", "note"])
  lines = [f"Batch 1, inference, {num_classes}-class head. GFLOPs: XLA cost analysis "
           f"(multiply-add = 2). GMACs: convolutions + matmuls, padding included.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    params = row["params"][frames[0]] / 1e6
    cells = [f"`{row['name']}`", f"{params:.2f}"]
    cells += [f"{row['flops'][t] / 1e9:.2f}" if t in row["flops"] else "-" for t in frames]
    cells += [f"{row['macs'][t] / 1e9:.2f}" if t in row["macs"] else "-" for t in frames]
    note = "; ".join(filter(None, [row["note"], PUBLISHED.get(row["name"], {}).get("note", "")]))
    cells += [_published_cell(row["name"], frames, size), note]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _parse_frames(text: str) -> list[int]:
  try:
    frames = [int(part) for part in text.split(",") if part.strip()]
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"--frames {text!r}: expected comma-separated integers") from e
  if not frames or min(frames) <= 0:
    raise argparse.ArgumentTypeError(f"--frames {text!r}: expected positive frame counts")
  return frames


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=None,
                      help="model names (default: all real zoo models)")
  parser.add_argument("--frames", type=_parse_frames, default=[16, 64])
  parser.add_argument("--size", type=int, default=112)
  parser.add_argument("--classes", type=int, default=400)
  parser.add_argument("--out", default=None, help="also write the markdown table to this file")
  args = parser.parse_args(argv)
  for flag, value in (("--size", args.size), ("--classes", args.classes)):
    if value < 1:
      parser.error(f"{flag} {value}: must be >= 1")
  why = args.out and paths.cannot_write(args.out, directory=False)
  if why:   # found now, not after every model is costed
    parser.error(f"--out {args.out}: {why}")
  names = args.models or default_models()
  unknown = sorted(set(names) - set(models.names()))
  if unknown:
    print(f"zoo_table: unknown --models {unknown}; known: {', '.join(models.names())}",
          file=sys.stderr)
    return 2
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  rows = []
  start = time.perf_counter()
  progress = tqdm(names, desc="zoo_table", unit="model", file=sys.stderr)
  for name in progress:
    progress.set_postfix_str(name)
    try:
      rows.append(model_row(name, args.frames, args.size, args.classes))
    except (ValueError, TypeError) as e:
      progress.close()   # the line below the bar, not on it
      print(f"zoo_table: model {name!r} at frames {args.frames}, size {args.size}: {e}",
            file=sys.stderr)
      return 2
  table = markdown_table(rows, args.frames, args.size, args.classes)
  print(table)
  print(f"\n({len(rows)} models in {time.perf_counter() - start:.0f} s)", file=sys.stderr)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(table + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
