r"""LIFT-Net on InfAR (infrared video): teacher on the luminous input, then the LIFT-Net student with
knowledge distillation. As the paper does for infrared data, the luminous stream reads optical flow
(a "flow" record stream of x, y, magnitude around 128, precomputed when the dataset is prepared);
`luminous_input=gamma` uses GIC frames instead.

  python -m darkjax.main --config=configs/lift_infar.py --workdir=/tmp/darkjax/lift_infar

Paper (Susladkar et al., LIFT-Net): 93.87% top-1 on InfAR. The dataset must be prepared once
(`python -m darkjax.data.prepare --dataset infar --src ... --out $DARKJAX_DATA/infar_256
--short-side 256 --flow`, then `data_dir=$DARKJAX_DATA/infar_256`: the short side this config
reads, with optical flow; docs/datasets.md); a missing dataset or
flow stream stops the run at once saying so. Args as in configs/lift_arid.py, e.g.
`--config=configs/lift_infar.py:variant=medium,luminous_input=gamma,kd=False`.
Evaluation as configs/lift_arid.py: segment sampling, 1 clip x 1 centre crop per video, the
test half of protocol split 1 (`split=2..5` for the other seeded 30 / 20 splits), top-1 / top-5 /
mean class accuracy. Data: docs/datasets.md.
"""

from __future__ import annotations

from configs import lift_base


def get_config(arg=None):
  return lift_base.lift_config(arg, dataset="infar", luminous_input="flow")
