r"""LIFT-Net on UCF101: 101 classes, 13,320 YouTube clips, official split 1 of 3
(`ucfTrainTestlist/trainlist01.txt`, `testlist01.txt`).

  python -m darkjax.main --config=configs/lift_ucf101.py --workdir=/tmp/darkjax/lift_ucf101

Paper (Susladkar et al., LIFT-Net, Table IV): 98.89% top-1 on UCF101 (also in the contributions;
the text on Table IV says 98.71%); +0.12 points over TimeSformer's 98.77%. As for HMDB51 (daytime
video), the luminous pathway reads optical flow: prepare with `python -m darkjax.data.prepare
--dataset ucf101 --flow ...`, or pass `luminous_input=gamma` for GIC frames. Args as in configs/lift_arid.py, e.g.
`--config=configs/lift_ucf101.py:variant=large,kd=False`.
Evaluation as configs/lift_arid.py: segment sampling, 1 clip x 1 centre crop per video, the
test list of official split 1 (`split=2|3` for the others), top-1 / top-5 / mean class accuracy.
Data: docs/datasets.md.
"""

from __future__ import annotations

from configs import lift_base


def get_config(arg=None):
  return lift_base.lift_config(arg, dataset="ucf101", luminous_input="flow")
