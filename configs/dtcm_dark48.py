r"""DTCM on Dark-48 (the 48-class dark subset the DTCM authors built with the darkness metric).

  python -m darkjax.main --config=configs/dtcm_dark48.py --workdir=/tmp/darkjax/dtcm_dark48

Paper (Tu et al., TIP 2023, Table V): 46.68% top-1 on Dark-48 (frames resized as for ARID,
320 x 240, a choice: the paper states the size for ARID only). Dark-48 must be prepared once
(`python -m darkjax.data.prepare --dataset dark48 --src ... --out $DARKJAX_DATA/dark48`); the list
of dark videos it was built from comes from `python -m darkjax.tools.darkness VIDEOS... --keep-dark
FILE`. Args as configs/dtcm_arid.py (setting, k, alpha, w_stc, backbone, enhancer, frames, ...).
"""

from __future__ import annotations

from configs import dtcm_base


def get_config(arg=None):
  return dtcm_base.dtcm_config(arg, "dark48", split_index=1)
