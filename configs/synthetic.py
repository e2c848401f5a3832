r"""Small 3D CNN on the embedded synthetic dark-action dataset (the README's main job).

  python -m darkjax.main --config=configs/synthetic.py --workdir=/tmp/darkjax/synthetic

The dataset (2,000 training clips, 200 a class) is generated on first use into
$DARKJAX_DATA/synthetic_train200 (default ~/darkjax_data): `synthetic` holds the generator's
default 100 a class, which the paper configs' synthetic runs read.
Args (`--config=configs/synthetic.py:steps=200,model=small3d_tiny`):
  model      zoo model name (small3d, small3d_wide, r3d_18, ...)
  steps      training steps (default 300; runlocal 10)
  batch      global batch size
  darkness   0 (day) .. 1 (very dark), exposure of the generated clips
  runlocal   a tiny, fast run for smoke tests (small3d_tiny, batch 8, 10 steps, small dataset);
             an arg given beside it wins over those
  data_seed  generator seed of the dataset (1234); another seed makes another set of clips, e.g.
             for pretraining apart from the clips a later run is tested on
  data_dir   dataset directory (default $DARKJAX_DATA/synthetic_train200, with _darkness<d> for
             another darkness and _seed<s> for another data_seed)
  stream     record stream to train and test on: video (dark, default), day (the same clips
             bright), ir (thermal-like, 1 channel)
  normalise  per_clip (default) or another mode of darkjax.data.normalise.MODES (imagenet,
             kinetics, none, ...)
The run's final test top-1 / top-5 are in WORKDIR/report.md; measured runs: docs/benchmarks.md.
"""

import dataclasses
import os

import ml_collections as mlc

from configs import common
from darkjax.data import synthetic


def get_config(arg=None):
  arg = common.parse_arg(arg, model="small3d", steps=0, batch=32, darkness=0.8, runlocal=False,
                         data_dir="", seed=0, stream="video", normalise="per_clip",
                         data_seed=1234,
                         variants=dict(runlocal=dict(model="small3d_tiny", batch=8, steps=10)))
  config = common.base_config("supervised", arg.steps or 300, seed=arg.seed, eval_every=100,
                              checkpoint_every=100)
  # runlocal generates its own few clips, in a directory of its own.
  # 200 clips a class: a directory of its own (one holding other generator parameters would be
  # generated again, replacing the clips another config reads)
  name = "synthetic_local" if arg.runlocal else "synthetic_train200"
  if arg.darkness != 0.8:   # other clips too (the `video` stream's exposure)
    name += f"_darkness{arg.darkness:g}"
  if arg.data_seed != 1234:
    name += f"_seed{arg.data_seed}"
  data_dir = arg.data_dir or os.path.join(common.default_data_root(), name)
  # No flips: they would swap move_left and move_right. Random 32 crops of 36-pixel frames make the
  # object positions and sizes vary more than the 2,000 training clips alone do.
  config.input = common.input_block(batch_size=arg.batch, eval_batch_size=32, frames=16,
                                    short_side=36, crop_size=32, normalise=arg.normalise,
                                    flip=False, shuffle_window=512, stream=arg.stream)
  config.input.data.name = "synthetic"
  config.input.data.dir = data_dir
  # Every generator parameter, so any can be overridden (--config.input.data.generate.size=48).
  config.input.data.generate = mlc.ConfigDict(dataclasses.asdict(
      synthetic.SyntheticParams(darkness=arg.darkness, seed=arg.data_seed, train_per_class=200)))
  config.model = common.model_block(arg.model)
  config.optimizer = common.optimizer_block("sgd", lr=0.05, momentum=0.9, nesterov=True,
                                            weight_decay=1e-4, schedule="cosine", warmup_steps=30)

  if arg.runlocal:
    common.smoke_run(config)
    config.input.eval_batch_size = 8
    config.input.data.generate.update(train_per_class=4, test_per_class=2)
    config.optimizer.warmup_steps = 2   # of its 10 steps (30 would outlast the run)
    config.log_every = 5
    config.eval_every = 0
    config.checkpoint_every = 5
  return config
