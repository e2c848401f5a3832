r"""Small 3D CNN on the embedded synthetic dark-action dataset (the README's main job).

  python -m darkjax.main --config=configs/synthetic.py --workdir=/tmp/darkjax/synthetic

The dataset is generated on first use into $DARKJAX_DATA/synthetic (default ~/darkjax_data).
Args (`--config=configs/synthetic.py:steps=200,model=small3d_tiny`):
  model      zoo model name (small3d, small3d_wide, r3d_18, ...)
  steps      training steps
  batch      global batch size
  darkness   0 (day) .. 1 (very dark), exposure of the generated clips
  runlocal   a tiny, fast run for smoke tests (tiny model, few steps, small dataset)
  data_dir   dataset directory (default $DARKJAX_DATA/synthetic)
Measured result (README): >= 90% top-1 on the synthetic test split.
"""

import os

import ml_collections as mlc

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, model="small3d", steps=600, batch=32, darkness=0.8, runlocal=False,
                         data_dir="", seed=0)
  config = mlc.ConfigDict()
  config.trainer = "supervised"
  config.seed = arg.seed
  data_dir = arg.data_dir or os.path.join(common.default_data_root(), "synthetic")
  config.input = common.input_block(batch_size=arg.batch, eval_batch_size=32, frames=16,
                                    normalise="per_clip", flip=False, shuffle_window=512)
  config.input.data.name = "synthetic"
  config.input.data.dir = data_dir
  config.input.data.generate = mlc.ConfigDict(dict(darkness=arg.darkness, seed=1234))
  config.model = mlc.ConfigDict(dict(name=arg.model, kwargs=mlc.ConfigDict()))
  config.model_init = ""
  config.model_load = mlc.ConfigDict(dict(dont_load=()))
  config.optimizer = common.optimizer_block("sgd", lr=0.05, momentum=0.9, nesterov=True,
                                            weight_decay=1e-4, schedule="cosine", warmup_steps=30)
  config.total_steps = arg.steps
  config.accum_steps = 1
  config.label_smoothing = 0.0
  config.compute_dtype = "float32"
  config.mesh = mlc.ConfigDict(dict(data=-1, fsdp=1))
  config.sharding = mlc.ConfigDict(dict(rules=(), min_fsdp_size=2 ** 14))
  config.log_every = 20
  config.eval_every = 200
  config.checkpoint_every = 100
  config.keep_checkpoints = 2
  config.async_checkpoints = True
  config.progress_bar = True

  if arg.runlocal:
    config.model.name = "small3d_tiny"
    config.input.batch_size = 8
    config.input.eval_batch_size = 8
    config.input.shuffle_window = 16
    config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(),
                                                          "synthetic_local")
    config.input.data.generate.update(train_per_class=4, test_per_class=2)
    config.total_steps = arg.steps if arg.steps != 600 else 10
    config.log_every = 5
    config.eval_every = 0
    config.checkpoint_every = 5
  return config
