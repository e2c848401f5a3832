r"""ActLumos on ARID v1.5 (split 1): teacher -> SSL (ARID v1.5 + Dark-48) -> distilled student.

  python -m darkjax.main --config=configs/actlumos_arid_v1_5.py --workdir=/tmp/darkjax/actlumos_arid15

Paper (Dass et al., ActLumos, authors' README): student top-1 88.27% on ARID v1.5. Prepare once
with `python -m darkjax.data.prepare --dataset arid_v1_5 --src ... --out $DARKJAX_DATA/arid_v1_5`
(and dark48 for the default SSL sources); without them the run stops at once saying so.
Args as in configs/actlumos_arid.py, e.g. `--config=configs/actlumos_arid_v1_5.py:fusion=concat`
or `--config=configs/actlumos_arid_v1_5.py:runlocal,ssl_datasets=arid_v1_5`.
"""

from __future__ import annotations

from configs import actlumos_base


def get_config(arg=None):
  return actlumos_base.actlumos_config(arg, dataset="arid_v1_5", split_index=1,
                                       ssl_default="arid_v1_5+dark48")
