r"""ActLumos end to end on the embedded synthetic dark-action dataset, CPU-sized: the tiny teacher
(R(2+1)D widths 8-32, 32-wide transformer) on dark + Retinex clips, SSL of the tiny student on the
same dataset's unlabelled train clips, then the distilled student; 16 x 32 x 32 clips, all three
phases in a few minutes on a laptop CPU.

  python -m darkjax.main --config=configs/actlumos_synthetic.py --workdir=/tmp/darkjax/actlumos_synthetic

The dataset is generated on first use into $DARKJAX_DATA/synthetic (shared with
configs/synthetic.py). Args (`--config=configs/actlumos_synthetic.py:kd=False,ssl=False`):
  fusion, supcon, ssl, kd, ssl_datasets (default: synthetic), ssl_features, steps,
  teacher_steps, ssl_steps, batch, lr, teacher_init, darkness, data_dir, seed
  runlocal   a smoke run: tiny dataset, 3 steps per phase
Other examples: `--config=configs/actlumos_synthetic.py:runlocal,fusion=sum`,
`--config=configs/actlumos_synthetic.py:runlocal,ssl=False,kd=False`.
Measured: docs/papers/actlumos.md.
"""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import actlumos_base, common


def get_config(arg=None):
  arg = common.parse_arg(arg, fusion="dff", supcon=True, ssl=True, kd=True,
                         ssl_datasets="synthetic", steps=300, teacher_steps=300, ssl_steps=150,
                         batch=32, lr=0.05, teacher_init="", darkness=0.8, data_dir="",
                         ssl_features="backbone", runlocal=False, seed=0,
                         variants=dict(runlocal=dict(steps=3, teacher_steps=3, ssl_steps=3,
                                                     batch=8)))
  config = actlumos_base.actlumos_config(
      f"fusion={arg.fusion},supcon={arg.supcon},ssl={arg.ssl},kd={arg.kd},"
      f"ssl_datasets={arg.ssl_datasets},frames=16,crop=0,short_side=0,batch={arg.batch},"
      f"steps={arg.steps},teacher_steps={arg.teacher_steps},ssl_steps={arg.ssl_steps},"
      f"teacher_init={arg.teacher_init},ssl_features={arg.ssl_features},seed={arg.seed},"
      "init=none", dataset="synthetic")   # the tiny R(2+1)D has no pretrained weights
  data_dir = arg.data_dir or os.path.join(common.default_data_root(), "synthetic")
  config.model = common.model_block("actlumos_tiny_test", hidden=32, heads=4, layers=1,
                                    dropout_rate=0.1, head_dropout=0.0)
  config.actlumos.projection_dim = 16
  config.input.flip = False          # left / right motion are different classes
  config.input.normalise = "per_clip"
  config.input.eval_batch_size = 32
  config.input.shuffle_window = 512
  config.input.data.dir = data_dir
  config.input.data.generate = mlc.ConfigDict(dict(darkness=arg.darkness, seed=1234))
  config.ssl.dirs = tuple(data_dir if n == "synthetic" else d
                          for n, d in zip(config.ssl.datasets, config.ssl.dirs))
  if config.ssl.datasets == ("synthetic",):
    config.ssl.split_index = 0     # the synthetic set has one train / test split
  # Classes differ only by motion: colour jitter, no geometry that would move the objects.
  config.actlumos.augment.update(colour_jitter=0.2, affine=0.0)
  config.ssl.augment.update(colour_jitter=0.4, affine=0.1)
  # The small BatchNorm CNNs train well with SGD (as configs/synthetic.py and lift_synthetic.py).
  sgd = lambda steps: common.optimizer_block(  # noqa: E731
      "sgd", lr=arg.lr, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine",
      warmup_steps=max(steps // 10, 1))
  config.optimizer, config.teacher.optimizer = sgd(arg.steps), sgd(arg.teacher_steps)
  config.ssl.optimizer = sgd(arg.ssl_steps)
  config.ssl.temperature = 0.2
  config.teacher.eval_every = config.eval_every = 0
  config.teacher.checkpoint_every = config.checkpoint_every = config.ssl.checkpoint_every = 100
  config.evals.fusion.clips = 3
  config.log_every = 20
  if arg.runlocal:
    common.smoke_run(config)
    config.input.eval_batch_size = 8
    config.input.prefetch = 0
    config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(),
                                                          "synthetic_local")
    config.ssl.dirs = tuple(config.input.data.dir if n == "synthetic" else d
                            for n, d in zip(config.ssl.datasets, config.ssl.dirs))
    config.input.data.generate.update(train_per_class=4, test_per_class=2)
    config.evals.fusion.clips = 2
    config.log_every = 1
    config.checkpoint_every = config.teacher.checkpoint_every = config.ssl.checkpoint_every = 3
  return config
