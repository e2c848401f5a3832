r"""DTCM on Dark-48 (the 48-class dark subset the DTCM authors built with the darkness metric).

  python -m darkjax.main --config=configs/dtcm_dark48.py --workdir=/tmp/darkjax/dtcm_dark48

Paper (Tu et al., TIP 2023, Table V): 46.68% top-1 on Dark-48 (frames resized as for ARID,
320 x 240, a choice: the paper states the size for ARID only), starting from "K400*", a
3D-ResNeXt-101 pretrained on Kinetics-400 without Dark-48's test videos (Dark-48 was drawn from
Kinetics-700 and Moments in Time). That checkpoint is not published: `pretrained=DIR` is required
and the error of a run without it says how to make it (docs/papers/dtcm.md, "Dark-48's K400*").
The standard Kinetics-400 weights (resnext-101-kinetics.pth) load too, with a warning at start:
they may have seen Dark-48's test videos. Dark-48 must be prepared once
(`python -m darkjax.data.prepare --dataset dark48 --src ... --out $DARKJAX_DATA/dark48
--short-side 240`, the short side this config reads); the list
of dark videos it was built from comes from `python -m darkjax.tools.darkness VIDEOS... --keep-dark
FILE`. Args as configs/dtcm_arid.py (setting, k, alpha, w_stc, backbone, enhancer, frames,
split, ...). Evaluation as the paper: 1 dense clip x 1 centre 112 crop per video, split 1 of the 3
(`split=2|3` for the others), top-1 / top-5 and mean class accuracy. Data: docs/datasets.md.
"""

from __future__ import annotations

from configs import dtcm_base


def get_config(arg=None):
  return dtcm_base.dtcm_config(arg, "dark48")
