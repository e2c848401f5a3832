r"""LIFT-Net on ARID, the design card's main command: an R(2+1)D-34 teacher on gamma-corrected (GIC)
frames, then the dual-stream LIFT-Net student with CE + L1 knowledge distillation.

  python -m darkjax.main --config=configs/lift_arid.py --workdir=/tmp/darkjax/lift_arid

Paper (Susladkar et al., LIFT-Net, Table II): 95.21% top-1 on ARID. ARID must be prepared once,
at the config's short side (`python -m darkjax.data.prepare --dataset arid_v1 --src ... --out
$DARKJAX_DATA/arid_v1_256 --short-side 256`, then `data_dir=$DARKJAX_DATA/arid_v1_256`: DTCM's and
ActLumos's ARID configs read other short sides, docs/datasets.md; frames stored smaller are
up-sampled, with a warning);
without it the run stops at once saying so. Pretrained weights are files you bring and the recipe
requires: `vit_init` (ViT-B/16 ImageNet-21k: ViT-B_16.npz from google-research/vision_transformer,
or a big_vision .npz / timm .pth / .safetensors, or a `python -m darkjax.convert` directory whose
recorded normalisation `input.normalise` must match, e.g. the paper's ref. [44] ImageNet-21K-P ViT
converted with `--input-normalise none`) and `luminous_init` (R(2+1)D-34 IG65M,
r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth from moabitcoin/ig65m-pytorch); a run without
them stops at start naming them; `init=none,vit_trainable=all` trains from random initialisation.
Args (`--config=configs/lift_arid.py:variant=medium,luminous=r3d,kd=False`):
  variant          large (default: N = 8, the Table II model) | medium | small (N = 6 / 4,
                   Table VI) | tiny_test
  luminous         r2plus1d (R(2+1)D-34, IG65M layout) | r3d (R3D-18, ablation)
  luminous_input   gamma (GIC frames) | flow (a precomputed "flow" record stream)
  kd               teacher phase + L1 distillation (False: the student alone, ablation)
  vit_trainable    first | none | all: PViT blocks trained (first = only block 0, the paper's)
  gamma            GIC gamma (LUT[i] = floor((i/255)^(1/gamma) 255))
  frames, crop, short_side, batch, steps, teacher_steps, lr
  vit_init, luminous_init, data_dir (default $DARKJAX_DATA/arid_v1, or /<dataset>)
  dataset          a dataset of your own (`prepare --dataset folder` under this name) read instead
                   of ARID, by this recipe (docs/datasets.md, "Your own dataset")
  init             pretrained (default: vit_init and luminous_init required) | none
  split            official split 1, 2 or 3 (`train<k>` / `test<k>` of the prepared dataset)
  eval_clips, eval_crops   test-time views per video: clips x (1 centre | 3) crops
  runlocal         tiny model, 8 frames at 32x32, 2 steps per phase: a smoke test
Evaluation (the paper does not state its test-time views; this is the single-view protocol):
segment sampling (the middle frame of each of `frames` equal segments), 1 clip x 1 centre crop
per video (with `eval_clips=n`, clip c takes the frame at (c + 0.5) / n of each segment), every
video of split 1's test list counted once (`eval`: the student, `teacher_eval`:
the teacher); top-1, top-5 and mean class accuracy. Data and weights: docs/datasets.md.
Choices where the paper is silent or ambiguous (see docs/papers/liftnet.md): the fusion attention
scaled by sqrt(head_dim) (Eq. (1) prints sqrt(N_AH): `--config.model.kwargs.attention_scale=heads`);
the luminous map pooled to 16 tokens and projected; the ViT's final LayerNorm kept after the PViT
(`--config.model.kwargs.pvit_norm=False` drops it); the fused tokens continue the luminous chain
into the next layer; the teacher's backbone frozen in the student phase
(`--config.lift.freeze_teacher=False`); a 5% linear warmup before the cosine; GIC gamma 1.8;
Eq. (6)'s h = the pooled hidden vectors (`kd_features`, config.lift) summed over the vector
(`kd_reduction`); augmentation magnitudes (config.lift.augment). The Fourier Enhancement block
follows Sec. III-E (LayerNorm on the spectrum before the inverse FFT); checkpoints written with
the LayerNorm after it load with `--config.model.kwargs.fourier_norm=tokens`.
Other examples: `--config=configs/lift_arid.py:runlocal,kd=False`,
`--config=configs/lift_arid.py:variant=small,vit_trainable=all` (N = 4, Table VI).
"""

from __future__ import annotations

from configs import lift_base


def get_config(arg=None):
  return lift_base.lift_config(arg, dataset="arid_v1")
