"""The PyTorch side of `darkjax.tools.bench --model M --vs-torch`, and the optimizer both sides
share.

The reference network is torchvision's r3d_18 / mc3_18 / r2plus1d_18, or the in-repo reference of
`darkjax.tools.torch_refs` for R(2+1)D-34 (IG65M), the Hara 3D-ResNets / ResNeXts and C3D. Its
train step is the flax step's: softmax cross-entropy (mean over the batch) on the same batch, then
one update by the optimizer of `OPTIMIZERS` (`optax_optimizer` builds the flax side's through
`darkjax.optim.make_optimizer`, `torch_optimizer` the torch side's from the same numbers).

`torch_runs` gives the step eager and, per `torch.compile` mode, compiled (`torch.compile(step)`:
Dynamo breaks the graph at `loss.backward()`, so the forward with its AOTAutograd backward and the
optimizer update compile as separate graphs). On CUDA the step runs with
`cudnn.benchmark = True`; on every device in the `channels_last_3d` memory format (unless
`layout="contiguous"`) and, with dtype bfloat16, under bf16 autocast: the same code on CPU and GPU.
The first call of a compiled step is its compile time; `use_fresh_inductor_cache` makes it a
cold compile, as the flax side's (no persistent cache), unless TORCHINDUCTOR_CACHE_DIR is set.
Requires torch (imported when a step is built).
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Iterable

from darkjax import optim
from darkjax.layers import conv2d
from darkjax.tools import measure

NUM_CLASSES = 400
TORCHVISION_MODELS = ("r3d_18", "mc3_18", "r2plus1d_18")
LAYOUTS = ("channels_last_3d", "contiguous")

# One spec per optimizer, read by both sides. SGD: momentum 0.9, weight decay added to the
# gradient (torch.optim.SGD's and optax.add_decayed_weights' L2); AdamW: decoupled weight decay,
# eps 1e-8 (optax.adamw's and torch.optim.AdamW's default). Constant learning rate.
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4},
    "adamw": {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "weight_decay": 0.05},
}
ADAMW_EPS = 1e-8


def _spec(name: str) -> dict[str, Any]:
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer {name!r} unknown; valid: {sorted(OPTIMIZERS)}")
  return OPTIMIZERS[name]


def optax_optimizer(name: str):
  """The flax side's optimizer: `darkjax.optim.make_optimizer` (what `darkjax.train` uses) on
  `OPTIMIZERS[name]` with a constant schedule."""
  cfg = {"name": name, "schedule": "constant", "warmup_steps": 0, "grad_clip_norm": 0.0,
         "frozen": (), "momentum": 0.0, "nesterov": False, "b1": 0.9, "b2": 0.999,
         **_spec(name)}
  tx, _ = optim.make_optimizer(cfg, total_steps=1)
  return tx


def torch_optimizer(name: str, parameters: Iterable[Any]):
  """The torch side's optimizer from `OPTIMIZERS[name]`."""
  import torch  # pylint: disable=import-outside-toplevel
  spec = _spec(name)
  if name == "sgd":
    return torch.optim.SGD(parameters, lr=spec["lr"], momentum=spec["momentum"],
                           nesterov=spec["nesterov"], weight_decay=spec["weight_decay"])
  return torch.optim.AdamW(parameters, lr=spec["lr"], betas=(spec["b1"], spec["b2"]),
                           eps=ADAMW_EPS, weight_decay=spec["weight_decay"])


def torch_model(model_name: str, frames: int, size: int):
  """The PyTorch reference of a darkjax model zoo network (SystemExit naming the known ones)."""
  if model_name in TORCHVISION_MODELS:
    import torchvision.models.video as video_models  # pylint: disable=import-outside-toplevel
    return getattr(video_models, model_name)(num_classes=NUM_CLASSES)
  from darkjax.tools import torch_refs  # pylint: disable=import-outside-toplevel
  if model_name == "r2plus1d_34_ig65m":
    return torch_refs.ig65m_r2plus1d(NUM_CLASSES)
  from darkjax import models  # pylint: disable=import-outside-toplevel
  from darkjax.models import c3d, resnet3d  # pylint: disable=import-outside-toplevel
  flax_model = models.build(model_name, NUM_CLASSES)
  if isinstance(flax_model, resnet3d.ResNet3D):
    return torch_refs.HaraResNet(
        flax_model.block, flax_model.stage_sizes, flax_model.widths, flax_model.stem_width,
        flax_model.shortcut_type, flax_model.cardinality, NUM_CLASSES)
  if isinstance(flax_model, c3d.C3D):
    if (frames, size, size) != tuple(flax_model.input_size):
      raise SystemExit(f"bench: {model_name} needs --frames/--size {flax_model.input_size}")
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    features = jax.eval_shape(lambda: flax_model.init_with_output(
        jax.random.key(0), jnp.zeros((1, frames, size, size, 3)))[0][1]["stage4"]).shape
    return torch_refs.C3DTorch(NUM_CLASSES, flax_model.widths, flax_model.fc_width,
                               math.prod(features[1:]), pooling=flax_model.pooling)
  raise SystemExit(f"bench: no PyTorch reference for {model_name!r}; known: "
                   f"{list(TORCHVISION_MODELS)}, r2plus1d_34_ig65m and the resnet3d/resnext3d/c3d "
                   "variants")


def torch_device(platform: str):
  """The torch device matching JAX's platform: CUDA where JAX runs on a GPU, else the CPU."""
  import torch  # pylint: disable=import-outside-toplevel
  if platform == "gpu":
    if not torch.cuda.is_available():
      raise SystemExit("bench: jax runs on a GPU but torch sees no CUDA device (a CPU build of "
                       "torch?): the two sides would not run on the same device")
    return torch.device("cuda")
  return torch.device("cpu")


def device_name(device) -> str:
  import torch  # pylint: disable=import-outside-toplevel
  return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def check_compile_modes(modes: Iterable[str]) -> None:
  """ValueError naming the first mode torch.compile does not know."""
  from torch import _inductor  # pylint: disable=import-outside-toplevel
  known = _inductor.list_mode_options()
  for mode in modes:
    if mode not in known:
      raise ValueError(f"torch.compile mode {mode!r} unknown; valid: {sorted(known)}")


def use_fresh_inductor_cache() -> None:
  """Points inductor (and Triton) at an empty cache directory for this process, removed at exit,
  unless TORCHINDUCTOR_CACHE_DIR names one: called before torch compiles anything (inductor's
  compile workers read it when they start), so that the first compiled call is a cold compile."""
  if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
    return
  directory = tempfile.mkdtemp(prefix="bench-inductor-")
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory


def _first_call_s(run: Callable[[], None]) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def torch_runs(model_name: str, batch: int, frames: int, size: int, *, platform: str = "cpu",
               dtype: str = "float32", optimizer: str = "sgd", compile_modes: Iterable[str] = (),
               layout: str = "channels_last_3d") -> dict[str, Callable[[], None]]:
  """{"torch": eager step, "torch.compile MODE": compiled step, ...}, each called once already
  (its `first_call_s`; a compiled one's is also its `compile_s`) and blocking until the step is
  done. The steps share one model and optimizer."""
  import torch  # pylint: disable=import-outside-toplevel
  compile_modes = list(compile_modes)
  check_compile_modes(compile_modes)
  if layout not in LAYOUTS:
    raise ValueError(f"torch layout {layout!r} unknown; valid: {LAYOUTS}")
  device = torch_device(platform)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
  else:
    torch.set_num_threads(conv2d.cores())
  memory_format = (torch.channels_last_3d if layout == "channels_last_3d"
                   else torch.contiguous_format)
  model = torch_model(model_name, frames, size).train().to(device, memory_format=memory_format)
  opt = torch_optimizer(optimizer, model.parameters())
  clips = torch.randn(batch, 3, frames, size, size, device=device).contiguous(
      memory_format=memory_format)
  labels = torch.arange(batch, device=device) % NUM_CLASSES
  autocast = dtype == "bfloat16"

  def step() -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
      loss = torch.nn.functional.cross_entropy(model(clips), labels)
    loss.backward()
    opt.step()

  def sync() -> None:
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  def blocking(step_fn: Callable[[], None]) -> Callable[[], None]:
    return measure.step_runner(step_fn, sync)

  runs = {"torch": blocking(step)}
  # The eager call first: it creates the optimizer's state, which the compiled steps then find
  # (compiled before it exists, they would compile again on their second call).
  runs["torch"].first_call_s = _first_call_s(runs["torch"])
  for mode in compile_modes:
    run = blocking(torch.compile(step, mode=mode))
    run.first_call_s = run.compile_s = _first_call_s(run)
    runs[f"torch.compile {mode}"] = run
  return runs
