r"""LIFT-Net on HMDB51 (daytime RGB video): teacher on the luminous input, then the LIFT-Net student with
knowledge distillation. As the paper does for daytime RGB data, the luminous stream reads optical flow
(a "flow" record stream of x, y, magnitude around 128, precomputed when the dataset is prepared);
`luminous_input=gamma` uses GIC frames instead.

  python -m darkjax.main --config=configs/lift_hmdb51.py --workdir=/tmp/darkjax/lift_hmdb51

Paper (Susladkar et al., LIFT-Net): 89.92% top-1 on HMDB51. The dataset must be prepared once
(`python -m darkjax.data.prepare --dataset hmdb51 ...`, with optical flow); a missing dataset or
flow stream stops the run at once saying so. Args as in configs/lift_arid.py, e.g.
`--config=configs/lift_hmdb51.py:variant=medium,luminous_input=gamma,kd=False`.
"""

from __future__ import annotations

from configs import lift_base


def get_config(arg=None):
  return lift_base.lift_config(arg, dataset="hmdb51", split_index=1, luminous_input="flow")
