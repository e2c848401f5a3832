r"""DTCM on UAVHuman-Fisheye (dark fisheye drone videos, 155 classes).

  python -m darkjax.main --config=configs/dtcm_uavhuman.py --workdir=/tmp/darkjax/dtcm_uavhuman

Paper (Tu et al., TIP 2023, Table IV): 27.43% top-1 on UAVHuman-Fisheye. The dataset must be
prepared once (`python -m darkjax.data.prepare --dataset uavhuman_fisheye --src ... --out
$DARKJAX_DATA/uavhuman_fisheye`). Args as configs/dtcm_arid.py (setting, k, alpha, w_stc, backbone,
enhancer, frames, ...).
"""

from __future__ import annotations

from configs import dtcm_base


def get_config(arg=None):
  return dtcm_base.dtcm_config(arg, "uavhuman_fisheye")
