r"""ActLumos end to end on the embedded synthetic dark-action dataset, CPU-sized: the tiny teacher
(R(2+1)D widths 8-32, 32-wide transformer) on dark + Retinex clips, SSL of the tiny student on the
same dataset's unlabelled train clips, then the distilled student; 16 x 32 x 32 clips, all three
phases in a few minutes on a laptop CPU.

  python -m darkjax.main --config=configs/actlumos_synthetic.py --workdir=/tmp/darkjax/actlumos_synthetic

The dataset is generated on first use into $DARKJAX_DATA/synthetic (the generator's default 100
clips a class, shared with the other paper configs' synthetic runs; configs/synthetic.py's 200 a
class are in synthetic_train200). Args (`--config=configs/actlumos_synthetic.py:kd=False,ssl=False`):
  fusion, supcon, ssl, kd, ssl_datasets (default: synthetic), ssl_features, steps,
  teacher_steps, ssl_steps, batch, lr, teacher_init, data_dir, seed
  labelled    train clips per class the teacher and the student learn from (default 100, the
              whole shared set; fewer: the first N per class, in $DARKJAX_DATA/synthetic_labelledN)
  unlabelled  N > 0: the SSL phase reads a set of its own, N other clips per class (generator
              seed 4321, train split only, labels never read) beside the labelled set, in
              $DARKJAX_DATA/synthetic_unlabelledN; 0 (default): the labelled set's train clips
  pretrained  the tiny R(2+1)D's starting weights for the teacher, the SSL phase and the student
              (the SSL phase's when it runs): a darkjax run's workdir whose model is
              r2plus1d_tiny_test, e.g. one trained on the bright `day` stream of another generated
              set (below), as the paper's backbone starts from IG65M; its head is left out
  normalise   per_clip (default) | imagenet | ... (darkjax.data.normalise), both streams; checked
              against what `pretrained` was trained on
  student_pretrained  False: only the teacher starts from `pretrained`; the SSL phase and the
              student start from random initialisation (self-supervision their only pretraining)
  kd_unlabelled  True: the student's KD term also reads a batch of the SSL phase's unlabelled
              clips (`unlabelled`) beside each labelled batch (default False: labelled clips only)
  teacher_lr  the teacher phase's SGD learning rate (default 0: `lr`, every phase's), e.g. a
              fine-tuning rate for a `pretrained` teacher beside a from-scratch student's
  darkness    exposure of the generated clips (default 0.8, the shared set; another value
              generates $DARKJAX_DATA/synthetic_darkness<d>...)
  runlocal    a smoke run: tiny dataset, 3 steps per phase
The evidence setting (docs/papers/actlumos.md): a teacher from a tiny R(2+1)D trained on the bright
`day` clips of another generated set, a student from random initialisation, few labels and many
unlabelled clips:
  python -m darkjax.main --config=configs/synthetic.py:model=r2plus1d_tiny_test,stream=day,normalise=imagenet,darkness=1.0,data_seed=4321 --workdir=DAY
  `labelled=20,unlabelled=100,batch=16,teacher_steps=200,ssl_steps=150,steps=600,lr=0.01,
  normalise=imagenet,pretrained=DAY,student_pretrained=False` (and `kd_unlabelled=True`, the arm
  whose student distils on the unlabelled clips too).
Other examples: `--config=configs/actlumos_synthetic.py:runlocal,fusion=sum`,
`--config=configs/actlumos_synthetic.py:runlocal,ssl=False,kd=False`.
Measured: docs/papers/actlumos.md.
"""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import actlumos_base, common


DEFAULT_DARKNESS = 0.8   # the shared synthetic set's (configs/synthetic.py)
SHARED_CLIPS = 100   # train clips per class of the synthetic set other configs share
RUNLOCAL_CLIPS = 4   # `runlocal`'s labelled train clips per class (and 2 test clips)


def get_config(arg=None):
  arg = common.parse_arg(arg, fusion="dff", supcon=True, ssl=True, kd=True,
                         ssl_datasets="synthetic", steps=300, teacher_steps=300, ssl_steps=150,
                         batch=32, lr=0.05, teacher_lr=0.0, teacher_init="",
                         darkness=DEFAULT_DARKNESS,
                         data_dir="", ssl_features="backbone", labelled=SHARED_CLIPS, unlabelled=0,
                         pretrained="", normalise="per_clip", student_pretrained=True,
                         kd_unlabelled=False, runlocal=False, seed=0,
                         variants=dict(runlocal=dict(steps=3, teacher_steps=3, ssl_steps=3,
                                                     batch=8, labelled=RUNLOCAL_CLIPS)))
  config = actlumos_base.actlumos_config(
      f"fusion={arg.fusion},supcon={arg.supcon},ssl={arg.ssl},kd={arg.kd},"
      f"ssl_datasets={arg.ssl_datasets},frames=16,crop=0,short_side=0,batch={arg.batch},"
      f"steps={arg.steps},teacher_steps={arg.teacher_steps},ssl_steps={arg.ssl_steps},"
      f"teacher_init={arg.teacher_init},ssl_features={arg.ssl_features},seed={arg.seed},"
      f"student_pretrained={arg.student_pretrained},kd_unlabelled={arg.kd_unlabelled},"
      "init=none", dataset="synthetic")   # the tiny R(2+1)D has no pretrained weights
  if arg.labelled < 1 or arg.unlabelled < 0:
    raise ValueError(f"config args labelled={arg.labelled}, unlabelled={arg.unlabelled}: need "
                     "labelled >= 1 train clips per class, unlabelled >= 0 (0: SSL reads the "
                     "labelled clips)")
  # The labelled set: the first `labelled` train clips per class of the generator (seed 1234);
  # the default size (runlocal's own under runlocal) keeps the directory other configs share.
  base = "synthetic_local" if arg.runlocal else "synthetic"
  if arg.darkness != DEFAULT_DARKNESS:   # a set of its own: the shared one keeps its bytes
    base += f"_darkness{arg.darkness:g}"
  sized = arg.labelled != (RUNLOCAL_CLIPS if arg.runlocal else SHARED_CLIPS)
  data_dir = arg.data_dir or os.path.join(common.default_data_root(),
                                           base + (f"_labelled{arg.labelled}" if sized else ""))
  config.model = common.model_block("actlumos_tiny_test", hidden=32, heads=4, layers=1,
                                    dropout_rate=0.1, head_dropout=0.0, transformer_norm="post")
  config.actlumos.projection_dim = 16
  config.input.flip = False          # left / right motion are different classes
  config.input.normalise = arg.normalise
  if arg.pretrained:   # a backbone for teacher, SSL and student (checked against `normalise`)
    config.actlumos.backbone_init = arg.pretrained
  config.input.eval_batch_size = 32
  config.input.shuffle_window = 512
  config.input.data.dir = data_dir
  config.input.data.generate = mlc.ConfigDict(dict(darkness=arg.darkness, seed=1234))
  if arg.labelled != SHARED_CLIPS:
    config.input.data.generate.train_per_class = arg.labelled
  if arg.runlocal:
    config.input.data.generate.test_per_class = 2
  ssl_dir = data_dir
  if arg.unlabelled:   # a set of its own beside the labelled one: other clips (generator seed
    # 4321), train split only, whose labels the SSL phase never reads
    ssl_dir = os.path.join(os.path.dirname(data_dir), f"{base}_unlabelled{arg.unlabelled}")
    config.ssl.generate = mlc.ConfigDict(dict(config.input.data.generate.to_dict(), seed=4321,
                                              train_per_class=arg.unlabelled, test_per_class=0))
  config.ssl.dirs = tuple(ssl_dir if n == "synthetic" else d
                          for n, d in zip(config.ssl.datasets, config.ssl.dirs))
  if config.ssl.datasets == ("synthetic",):
    config.ssl.split_index = 0     # the synthetic set has one train / test split
  # Classes differ only by motion: colour jitter, no geometry that would move the objects.
  config.actlumos.augment.update(colour_jitter=0.2, affine=0.0)
  config.ssl.augment.update(colour_jitter=0.4, affine=0.1)
  # The small BatchNorm CNNs train well with SGD (as configs/synthetic.py and lift_synthetic.py).
  sgd = lambda steps, lr: common.optimizer_block(  # noqa: E731
      "sgd", lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine",
      warmup_steps=max(steps // 10, 1))
  config.optimizer = sgd(arg.steps, arg.lr)
  config.teacher.optimizer = sgd(arg.teacher_steps, arg.teacher_lr or arg.lr)
  config.ssl.optimizer = sgd(arg.ssl_steps, arg.lr)
  config.ssl.temperature = 0.2
  config.teacher.eval_every = config.eval_every = 0
  config.teacher.checkpoint_every = config.checkpoint_every = config.ssl.checkpoint_every = 100
  config.evals.fusion.clips = 3
  config.log_every = 20
  if arg.runlocal:
    common.smoke_run(config)
    config.input.eval_batch_size = 8
    config.input.prefetch = 0
    config.evals.fusion.clips = 2
    config.log_every = 1
    config.checkpoint_every = config.teacher.checkpoint_every = config.ssl.checkpoint_every = 3
  return config
