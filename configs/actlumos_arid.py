r"""ActLumos on ARID v1.0: the Retinex dual-stream teacher (DFF + SupCon), SSL of the student on
unlabelled ARID + Dark-48 clips, then the student distilled from the teacher, in one command.

  python -m darkjax.main --config=configs/actlumos_arid.py --workdir=/tmp/darkjax/actlumos_arid

Paper (Dass et al., ActLumos, authors' README): student top-1 96.92% on ARID v1.0 (abstract; 67 M
params in Table 1, an image); SSL-source ablation 95.75 (KD only) / 96.70 (SSL on ARID) / 96.15
(SSL on Dark-48) / 96.92 (both), from plots.png, which the README shows after the copy we follow.
ARID (split 1) and, for the default SSL sources, Dark-48 must be prepared once (`python -m
darkjax.data.prepare --dataset arid_v1 --src ... --out $DARKJAX_DATA/arid_v1_128 --short-side 128`,
then `data_dir=$DARKJAX_DATA/arid_v1_128`, the short side this config reads; Dark-48 likewise,
docs/datasets.md); without them the run stops at once saying so. The pretrained backbone is a file
you bring and the config requires: `backbone_init` (R(2+1)D-34 IG65M,
r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth from moabitcoin/ig65m-pytorch, the start of
DarkLight-R(2+1)D-34, which the README compares against; the README does not name ActLumos's),
loaded into the teacher's shared backbone and the student's; a run without it stops at start naming
it; `init=none` trains from random initialisation.
Args (`--config=configs/actlumos_arid.py:fusion=sum,supcon=False`):
  fusion         dff | sum | concat (teacher fusion; sum / concat are the ablations)
  supcon         SupCon on the teacher's per-stream features (False: CE only)
  ssl            the self-supervised phase for the student (False: KD only)
  kd             the teacher phase and distillation (False: the student alone on dark clips)
  ssl_datasets   '+'-joined prepared datasets for SSL (default arid_v1+dark48; runlocal and with
                 `dataset`: the labelled dataset alone)
  dataset        a dataset of your own (`prepare --dataset folder` under this name) read instead
                 of ARID, by this recipe, from $DARKJAX_DATA/<dataset> unless data_dir says where
                 (docs/datasets.md, "Your own dataset")
  ssl_features   backbone (default: SSL trains the R(2+1)D-34 alone, the README's Stage 1) | cls
                 (the whole student, projecting its CLS embedding)
  frames, crop, short_side, batch, steps, teacher_steps, ssl_steps, lr
  backbone_init, teacher_init (a finished teacher run: skips the teacher phase), data_dir, seed
  init           pretrained (default: backbone_init required) | none
  split          the official split k trained and tested (default 1); the SSL sets read their
                 train<k> too, so SSL never sees split k's test clips
  eval_clips, eval_crops  test views per video, averaged (default 1 clip x 1 centre crop)
  runlocal       tiny model, 8 frames at 32x32, 2 steps per phase: a smoke test
Other examples: `--config=configs/actlumos_arid.py:ssl_datasets=arid_v1`,
`--config=configs/actlumos_arid.py:runlocal,ssl=False,kd=False`,
`--config=configs/actlumos_arid.py:runlocal,ssl_features=cls`.
Evaluation (the README states no test protocol): the student's top-1, top-5 and mean class
accuracy over every test video of the split once, 1 clip x 1 centre crop of 64 dense frames
(`eval_clips=10,eval_crops=3`: the 10-clip x 3-crop protocol).
Choices and their defaults: configs/actlumos_base.py and docs/papers/actlumos.md.
"""

from __future__ import annotations

from configs import actlumos_base


def get_config(arg=None):
  return actlumos_base.actlumos_config(arg, dataset="arid_v1", split_index=1)
