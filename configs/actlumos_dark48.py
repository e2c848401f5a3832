r"""ActLumos on Dark-48 (split 1): teacher -> SSL (ARID + Dark-48) -> distilled student.

  python -m darkjax.main --config=configs/actlumos_dark48.py --workdir=/tmp/darkjax/actlumos_dark48

Paper (Dass et al., ActLumos, authors' README): student top-1 48.96% on Dark-48. Prepare once with
`python -m darkjax.data.prepare --dataset dark48 --src ... --out $DARKJAX_DATA/dark48` (and arid_v1
for the default SSL sources); without them the run stops at once saying so.
Args as in configs/actlumos_arid.py, e.g. `--config=configs/actlumos_dark48.py:supcon=False` or
`--config=configs/actlumos_dark48.py:runlocal,ssl_datasets=dark48`.
"""

from __future__ import annotations

from configs import actlumos_base


def get_config(arg=None):
  return actlumos_base.actlumos_config(arg, dataset="dark48", split_index=1)
