r"""LIFT-Net on UCF101 (daytime RGB video): teacher on the luminous input, then the LIFT-Net student with
knowledge distillation. As the paper does for daytime RGB data, the luminous stream reads optical flow
(a "flow" record stream of x, y, magnitude around 128, precomputed when the dataset is prepared);
`luminous_input=gamma` uses GIC frames instead.

  python -m darkjax.main --config=configs/lift_ucf101.py --workdir=/tmp/darkjax/lift_ucf101

Paper (Susladkar et al., LIFT-Net): 98.89% top-1 on UCF101. The dataset must be prepared once
(`python -m darkjax.data.prepare --dataset ucf101 ...`, with optical flow); a missing dataset or
flow stream stops the run at once saying so. Args as in configs/lift_arid.py, e.g.
`--config=configs/lift_ucf101.py:variant=medium,luminous_input=gamma,kd=False`.
"""

from __future__ import annotations

from configs import lift_base


def get_config(arg=None):
  return lift_base.lift_config(arg, dataset="ucf101", split_index=1, luminous_input="flow")
