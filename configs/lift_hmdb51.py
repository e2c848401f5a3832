r"""LIFT-Net on HMDB51: 51 classes, 6,766 clips from films and web video, official split 1 of 3
(`testTrainMulti_7030_splits`).

  python -m darkjax.main --config=configs/lift_hmdb51.py --workdir=/tmp/darkjax/lift_hmdb51

Paper (Susladkar et al., LIFT-Net, Table III): 89.92% top-1 on HMDB51, +2.20 points over
TimeSFormer's 87.72%, the previous best. HMDB51 is daytime video, where the paper gives the luminous
pathway optical flow instead of GIC frames: the config reads the "flow" record stream (x, y,
magnitude around 128), which `python -m darkjax.data.prepare --dataset hmdb51 --flow ...` stores; a
missing dataset or flow stream stops the run at once saying so. `luminous_input=gamma` uses GIC
frames instead. Other args as in configs/lift_arid.py, e.g.
`--config=configs/lift_hmdb51.py:variant=medium,luminous_input=gamma,kd=False`.
Evaluation as configs/lift_arid.py: segment sampling, 1 clip x 1 centre crop per video, the
test list of official split 1 (`split=2|3` for the others), top-1 / top-5 / mean class accuracy.
Data: docs/datasets.md.
"""

from __future__ import annotations

from configs import lift_base


def get_config(arg=None):
  return lift_base.lift_config(arg, dataset="hmdb51", luminous_input="flow")
