r"""Enhancer cost against the key-frame group size k (DTCM Table IX), from XLA's cost analysis.

  python -m darkjax.tools.enhancer_cost                       # dtcm_enhancer, 64 x 112^2
  python -m darkjax.tools.enhancer_cost --enhancer=zero_dce --frames=16

The enhancer (curve estimation on T / k key frames + the curve applied to all T frames) is lowered
with `jax.jit(...).lower(...)` on abstract inputs (nothing is compiled or run) and
`cost_analysis()["flops"]` is reported in GFLOPs per clip, beside the paper's Table IX numbers. XLA
counts a multiply-add as 2 FLOPs; the paper does not say how it counts, so compare the ratios.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import jax
import jax.numpy as jnp

from darkjax import models
from darkjax.models.enhancers import VideoEnhancer

GROUP_SIZES = (1, 2, 4, 8, 16)
PAPER_GFLOPS = {1: 19.08, 2: 9.55, 4: 4.77, 8: 2.38, 16: 1.19}   # DTCM Table IX, 64 x 112^2


def enhancer_flops(group_size: int, frames: int = 64, size: int = 112,
                   enhancer: str = "dtcm_enhancer", batch: int = 1) -> float:
  """XLA-counted FLOPs of one inference pass of `enhancer` with key-frame group `group_size` over a
  (batch, frames, size, size, 3) clip."""
  if frames % group_size:
    raise ValueError(f"enhancer_cost: frames={frames} is not a multiple of k={group_size}")
  model = VideoEnhancer(models.build(enhancer, num_classes=0), group_size=group_size)
  clip = jax.ShapeDtypeStruct((batch, frames, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), clip)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  cost = apply.lower(variables, clip).cost_analysis()
  if isinstance(cost, (list, tuple)):   # older jax: one dict per computation
    cost = cost[0]
  if not cost or "flops" not in cost:
    raise RuntimeError(f"enhancer_cost: XLA returned no FLOP count for {enhancer} (got {cost!r})")
  return float(cost["flops"])


def cost_table(group_sizes: Sequence[int] = GROUP_SIZES, frames: int = 64, size: int = 112,
               enhancer: str = "dtcm_enhancer") -> dict[int, float]:
  """k -> GFLOPs per clip."""
  return {k: enhancer_flops(k, frames, size, enhancer) / 1e9 for k in group_sizes}


def markdown_table(gflops: dict[int, float], frames: int, size: int, enhancer: str) -> str:
  base = gflops[min(gflops)]
  lines = [f"Enhancer `{enhancer}` at {frames} x {size}^2 (XLA cost analysis, GFLOPs per clip)", "",
           "| k | darkjax GFLOPs | ratio to k=1 | paper Table IX GFLOPs | paper ratio |",
           "|---|---|---|---|---|"]
  for k, value in gflops.items():
    paper = (PAPER_GFLOPS.get(k) if (frames, size, enhancer) == (64, 112, "dtcm_enhancer")
             else None)
    paper_cells = (f"{paper:.2f} | {paper / PAPER_GFLOPS[1]:.3f}" if paper is not None
                   else "- | -")
    lines.append(f"| {k} | {value:.3f} | {value / base:.3f} | {paper_cells} |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--enhancer", default="dtcm_enhancer",
                      choices=("dtcm_enhancer", "zero_dce", "zero_dce_pp"))
  parser.add_argument("--frames", type=int, default=64)
  parser.add_argument("--size", type=int, default=112)
  parser.add_argument("--k", type=int, nargs="+", default=list(GROUP_SIZES))
  args = parser.parse_args(argv)
  try:
    gflops = cost_table(args.k, args.frames, args.size, args.enhancer)
  except ValueError as e:
    print(f"enhancer_cost: {e}", file=sys.stderr)
    return 2
  print(markdown_table(gflops, args.frames, args.size, args.enhancer))
  return 0


if __name__ == "__main__":
  sys.exit(main())
