r"""Enhancer cost against the key-frame group size k (DTCM Table IX), from XLA's cost analysis.

  python -m darkjax.tools.enhancer_cost                       # dtcm_enhancer, 64 x 112^2
  python -m darkjax.tools.enhancer_cost --enhancer=zero_dce --frames=16
  python -m darkjax.tools.enhancer_cost --strided            # full_resolution=False

The enhancer (curve estimation on T / k key frames + the curve applied to all T frames) is lowered
on abstract inputs with XLA's native convolutions (`darkjax.layers.conv.native_lowering`; nothing is
compiled or run) and costed two ways per clip, as in `darkjax.tools.zoo_table`: GFLOPs from XLA's
cost analysis (a multiply-add is 2 FLOPs, elementwise work counts) and GMACs, the multiply-adds of
every convolution and matmul, the quantity papers call "FLOPs" (torchvision's published numbers are
these; see README, Model zoo). The paper's Table IX is compared with the GMACs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from darkjax import models
from darkjax.models.enhancers import VideoEnhancer

GROUP_SIZES = (1, 2, 4, 8, 16)
PAPER_GFLOPS = {1: 19.08, 2: 9.55, 4: 4.77, 8: 2.38, 16: 1.19}   # DTCM Table IX, 64 x 112^2


def enhancer_cost(group_size: int, frames: int = 64, size: int = 112,
                  enhancer: str = "dtcm_enhancer", batch: int = 1,
                  **enhancer_kwargs) -> dict[str, float]:
  """{"gflops", "gmacs"} of one inference pass of `enhancer` (built with `enhancer_kwargs`) with
  key-frame group `group_size` over a (batch, frames, size, size, 3) clip."""
  from darkjax.tools import zoo_table  # pylint: disable=import-outside-toplevel
  if frames % group_size:
    raise ValueError(f"frames={frames} is not a multiple of k={group_size}")
  model = VideoEnhancer(models.build(enhancer, num_classes=0, **enhancer_kwargs),
                        group_size=group_size)
  cost = zoo_table.forward_cost(model, (batch, frames, size, size, 3))
  return {"gflops": cost["flops"] / 1e9, "gmacs": cost["macs"] / 1e9}


def cost_table(group_sizes: Sequence[int] = GROUP_SIZES, frames: int = 64, size: int = 112,
               enhancer: str = "dtcm_enhancer", **enhancer_kwargs) -> dict[int, dict[str, float]]:
  """k -> {"gflops", "gmacs"} per clip."""
  return {k: enhancer_cost(k, frames, size, enhancer, **enhancer_kwargs) for k in group_sizes}


def markdown_table(costs: dict[int, dict[str, float]], frames: int, size: int,
                   enhancer: str, strided: bool = False) -> str:
  first = min(costs)   # the ratios' base: k=1 where it is costed
  base = costs[first]["gmacs"]
  lines = [f"Enhancer `{enhancer}`" + (" (`full_resolution=False`: layers 5-6 at stride 2)"
                                       if strided else "")
           + f" at {frames} x {size}^2, per clip (XLA GFLOPs; GMACs = multiply-adds, the "
           "papers' \"FLOPs\")", "",
           f"| k | darkjax GFLOPs (XLA) | darkjax GMACs | ratio to k={first} | paper Table IX | "
           f"paper ratio to k={first} |",
           "|---|---|---|---|---|---|"]
  for k, cost in costs.items():
    # the paper's figures are the full-resolution enhancer's at 64 x 112^2
    paper = (PAPER_GFLOPS.get(k) if (frames, size, enhancer, strided) ==
             (64, 112, "dtcm_enhancer", False) else None)
    paper_cells = (f"{paper:.2f} | {paper / PAPER_GFLOPS[first]:.3f}"
                   if paper is not None and first in PAPER_GFLOPS else "- | -")
    lines.append(f"| {k} | {cost['gflops']:.3f} | {cost['gmacs']:.3f} | "
                 f"{cost['gmacs'] / base:.3f} | {paper_cells} |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--enhancer", default="dtcm_enhancer",
                      choices=("dtcm_enhancer", "zero_dce", "zero_dce_pp"))
  parser.add_argument("--frames", type=int, default=64)
  parser.add_argument("--size", type=int, default=112)
  parser.add_argument("--k", type=int, nargs="+", default=list(GROUP_SIZES))
  parser.add_argument("--strided", action="store_true",
                      help="dtcm_enhancer with full_resolution=False (layers 5-6 at stride 2)")
  args = parser.parse_args(argv)
  for flag, values in (("--frames", [args.frames]), ("--size", [args.size]), ("--k", args.k)):
    if min(values) < 1:
      parser.error(f"{flag} {min(values)}: must be >= 1")
  if args.strided and args.enhancer != "dtcm_enhancer":
    parser.error(f"--strided is dtcm_enhancer's full_resolution=False; {args.enhancer} has none")
  kwargs = {"full_resolution": False} if args.strided else {}
  try:
    costs = cost_table(args.k, args.frames, args.size, args.enhancer, **kwargs)
  except ValueError as e:
    print(f"enhancer_cost: {e}", file=sys.stderr)
    return 2
  print(markdown_table(costs, args.frames, args.size, args.enhancer, args.strided))
  return 0


if __name__ == "__main__":
  sys.exit(main())
