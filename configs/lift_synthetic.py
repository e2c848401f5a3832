r"""LIFT-Net end to end on the embedded synthetic dark-action dataset, CPU-sized: a tiny ViT + tiny
R(2+1)D LIFT-Net (`liftnet_tiny_test`) on 16 x 32 x 32 clips; both phases (teacher R(2+1)D on GIC
frames, then the KD student) in a few minutes on a laptop CPU.

  python -m darkjax.main --config=configs/lift_synthetic.py --workdir=/tmp/darkjax/lift_synthetic

The dataset is generated on first use into $DARKJAX_DATA/synthetic (the generator's default 100
clips a class, shared with the other paper configs' synthetic runs; configs/synthetic.py's 200 a
class are in synthetic_train200). No pretrained weights exist at this size, so the PViT trains whole
(`vit_trainable=all`) unless told otherwise. Args
(`--config=configs/lift_synthetic.py:kd=False,steps=300`):
  steps, teacher_steps, batch, lr, kd, vit_trainable, gamma, darkness, data_dir, seed
  luminous_init  the luminous backbone's starting weights (`r2plus1d_tiny_test`), for the teacher,
             or for the student itself with kd=False: a darkjax run's workdir whose model is
             that backbone, e.g. one pretrained by `configs/synthetic.py:model=r2plus1d_tiny_test,
             stream=day,data_seed=4321` on the bright clips of another data seed (the IG65M
             weights' part at CPU size); checked against the luminous normalisation (per_clip)
  scenario   the synthetic classes (darkjax/data/synthetic.py): `motion` (default) or `what` (the
             ten motions x two kinds of thermal object); $DARKJAX_DATA/synthetic_<name>
  modality   `dark` (default: the PViT reads the dark RGB clip, the luminous path its GIC frames,
             as on ARID) or `infrared` (the PViT reads the IR clip, the luminous path its optical
             flow, stored with the generated set: the paper's InfAR setting, lift_infar.py)
  runlocal   a smoke run: tiny dataset, 3 steps per phase
Measured (2 CPU cores, defaults): see the README.
"""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common, lift_base


# modality -> (the record stream the PViT reads, the luminous input).
MODALITIES = {"dark": ("video", "gamma"), "infrared": ("ir", "flow")}


def get_config(arg=None):
  arg = common.parse_arg(arg, steps=400, teacher_steps=300, batch=32, lr=1e-3, kd=True,
                         vit_trainable="all", gamma=1.8, darkness=0.8, data_dir="", runlocal=False,
                         seed=0, scenario="motion", modality="dark", luminous_init="",
                         variants=dict(runlocal=dict(steps=3, teacher_steps=3, batch=8)))
  if arg.modality not in MODALITIES:
    raise ValueError(f"config arg modality={arg.modality!r} unknown; valid: {sorted(MODALITIES)}")
  stream, luminous_input = MODALITIES[arg.modality]
  config = lift_base.lift_config(
      f"variant=tiny_test,frames=16,crop=0,short_side=0,batch={arg.batch},steps={arg.steps},"
      f"teacher_steps={arg.teacher_steps},lr={arg.lr},kd={arg.kd},"
      f"vit_trainable={arg.vit_trainable},gamma={arg.gamma},seed={arg.seed},init=none,split=0,"
      f"luminous_input={luminous_input}",
      dataset="synthetic")
  config.input.sampling = "dense"
  config.input.flip = False          # left / right motion are different classes
  config.input.normalise = "per_clip"
  config.input.eval_batch_size = 32
  config.input.shuffle_window = 512
  config.input.stream = stream
  flow = luminous_input == "flow"
  suffix = ("" if arg.scenario == "motion" else f"_{arg.scenario}") + ("_flow" if flow else "")
  config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(),
                                                       "synthetic" + suffix)
  config.input.data.generate = mlc.ConfigDict(dict(darkness=arg.darkness, seed=1234,
                                                   scenario=arg.scenario, flow=flow))
  config.lift.luminous_normalise = "per_clip"
  config.lift.pretrained.luminous = arg.luminous_init
  # A PViT trained from scratch has no weights' GELU to match: erf, the form of the runs
  # docs/papers/liftnet.md reports.
  config.model.kwargs.pvit_gelu_approximate = False
  config.evals.attention.clips = 4
  # Classes differ only by motion (direction, path): no flips, frame shuffle or geometric warps.
  config.lift.augment = common.augment_block(colour_jitter=0.2)
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_steps = 20
  # The small BatchNorm CNN teacher trains with SGD: AdamW leaves it near chance on this data
  # (figures: docs/papers/liftnet.md, "Choices").
  config.teacher.optimizer = common.optimizer_block(
      "sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine",
      warmup_steps=30)
  config.teacher.eval_every = 0
  config.teacher.checkpoint_every = 100
  config.eval_every = 0
  config.checkpoint_every = 100
  config.log_every = 20
  if arg.runlocal:
    common.smoke_run(config)
    config.input.eval_batch_size = 8
    config.input.prefetch = 0
    config.input.data.dir = arg.data_dir or os.path.join(common.default_data_root(),
                                                          "synthetic_local" + suffix)
    config.input.data.generate.update(train_per_class=4, test_per_class=2)
    config.evals.attention.clips = 2
    config.optimizer.warmup_steps = config.teacher.optimizer.warmup_steps = 1   # of 3 steps
    config.log_every = 1
    config.checkpoint_every = config.teacher.checkpoint_every = 3
  return config
