"""Reading PyTorch / safetensors / numpy checkpoints and writing converted Flax variables.

`load_state_dict(path)` reads `.pth`/`.pt`/`.pth.tar`/`.ckpt`/`.pickle`/`.pkl`/`.bin` (torch.save
files, weights only), `.safetensors` and
`.npz` into `{key: array}`, unwrapping `{"state_dict": ...}` / `{"model": ...}` containers.
`save_variables(out_dir, variables, meta)` writes `out_dir/variables` (orbax) and
`out_dir/meta.json`; `load_variables(out_dir)` reads both back for the trainer, or takes the
latest checkpoint of a darkjax run's workdir (`config.model_init` may name either).
`backbone_variables(path, arch)` reads either of those as the weights of one zoo backbone, its
classifier head left out. `recorded_normalise(meta, key)` is the input normalisation the loaded
weights were trained on: the converter's record in meta.json (a conversion older than the record:
its family's published weights'), or the value of config key `key` in a run's config.json.

Pickled torch checkpoints are loaded with `torch.load(..., weights_only=True)` only: a file whose
unpickling would run code is refused (`UnsafeCheckpointError`) rather than executed.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from typing import Any, Mapping

import numpy as np

from darkjax import file_state, paths
from darkjax.convert.common import ConversionError

# torch.save files: `.pickle` is C3D's Sports-1M release (DavideA/c3d-pytorch's `c3d.pickle`),
# `.bin` Hugging Face's `pytorch_model.bin`; all are read with `weights_only=True`.
TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt", ".pickle", ".pkl", ".bin")
CONTAINER_KEYS = ("state_dict", "model", "model_state", "module")
META_FILE = "meta.json"
VARIABLES_DIR = "variables"


class CheckpointReadError(ValueError):
  """A checkpoint file cannot be read; the message names the file."""


class UnsafeCheckpointError(CheckpointReadError):
  """A pickled checkpoint needs code execution to load and was refused."""


class CheckpointNotFoundError(CheckpointReadError, FileNotFoundError):
  """A path given as weights is missing, or a directory that holds no checkpoint."""


def _resave_hint(path: str) -> str:
  """A script that re-saves the tensors of a trusted pickle as safetensors: unwrapped from a
  training checkpoint's containers (CONTAINER_KEYS, as `unwrap_container` does) or taken from a
  whole pickled model's state_dict()."""
  return (f"If you trust {path}, re-save its tensors as safetensors in a separate, trusted "
          "environment (one with the code its pickle names) and convert that file instead:\n"
          "python - <<'EOF'\n"
          "import torch\n"
          "from safetensors.torch import save_file\n"
          f"c = torch.load({path!r}, map_location='cpu', weights_only=False)\n"
          "for _ in range(8):   # a whole model, or the state dict inside a training checkpoint\n"
          "    if hasattr(c, 'state_dict'):\n"
          "        c = c.state_dict()\n"
          f"    inner = [k for k in {CONTAINER_KEYS!r} if isinstance(c, dict) and (\n"
          "        isinstance(c.get(k), dict) or hasattr(c.get(k), 'state_dict'))]\n"
          "    if not inner:\n"
          "        break\n"
          "    c = c[inner[0]]\n"
          "save_file({k: v.detach().clone().contiguous() for k, v in c.items()\n"
          "           if isinstance(v, torch.Tensor)}, " f"{path + '.safetensors'!r})\n"
          "EOF")


def _load_torch(path: str) -> Any:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise CheckpointReadError(f"{path}: reading PyTorch checkpoints needs torch (pip install "
                              "'darkjax[torch]'), or convert the file to .safetensors") from e
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # torch's message is generic advice plus one line naming what its weights-only reader met:
    # a global (an object to import: code) or an opcode it does not read (the bytes are damaged,
    # or a pickle not written by torch.save).
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    found = [l for l in lines if "GLOBAL" in l or "global" in l]
    if found:
      raise UnsafeCheckpointError(
          f"{path}: refused as unsafe: unpickling it would execute code or import objects other "
          f"than tensors and plain containers ({found[0]}).\n{_resave_hint(path)}") from None
    reason = next((l for l in lines if l.startswith(("Unsupported", "invalid load key"))),
                  lines[-1] if lines else type(e).__name__)
    raise CheckpointReadError(
        f"{path}: not a readable PyTorch checkpoint ({reason}): the file is damaged or cut "
        f"short (copy it again), or it is a pickle that torch.save did not write.\n"
        f"{_resave_hint(path)}") from None
  except (RuntimeError, EOFError, OSError, KeyError, ValueError, TypeError,
          AttributeError) as e:   # torch's unpickler meets bytes no torch.save wrote
    reason = str(e) or ("empty or cut short" if isinstance(e, EOFError) else type(e).__name__)
    raise CheckpointReadError(f"{path}: not a readable PyTorch checkpoint ({reason}): the file "
                              "is damaged or cut short (copy it again), or not a torch.save "
                              "file") from e


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # a core dependency: only a damaged environment lacks it
    raise CheckpointReadError(f"{path}: reading .safetensors needs the safetensors package "
                              "(a darkjax dependency: pip install -e . again)") from e
  try:
    return load_file(path)
  except Exception as e:  # safetensors raises its own SafetensorError and others
    raise CheckpointReadError(f"{path}: not a readable safetensors file: {e}") from e


def _load_npz(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:   # damaged, or cut short
    raise CheckpointReadError(f"{path}: not a readable .npz of arrays: {e}") from e


def unwrap_container(checkpoint: Any, path: str = "<checkpoint>") -> Mapping[str, Any]:
  """The state dict inside `{"state_dict": ...}`-style training checkpoints (nested ok)."""
  while isinstance(checkpoint, Mapping):
    inner = [k for k in CONTAINER_KEYS if isinstance(checkpoint.get(k), Mapping)]
    if not inner:
      break
    checkpoint = checkpoint[inner[0]]
  if not isinstance(checkpoint, Mapping):
    raise CheckpointReadError(f"{path}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(checkpoint).__name__}")
  arrays = {k: v for k, v in checkpoint.items() if hasattr(v, "shape")}
  if not arrays:
    raise CheckpointReadError(f"{path}: no tensors found; top-level keys: "
                              f"{sorted(checkpoint)[:20]}")
  return arrays


def load_state_dict(path: str) -> dict[str, Any]:
  """Tensors of a checkpoint file by name (torch tensors or numpy arrays)."""
  if not os.path.isfile(path):
    raise CheckpointNotFoundError(f"{path}: no such file")
  lower = path.lower()
  if lower.endswith(".safetensors"):
    checkpoint: Any = _load_safetensors(path)
  elif lower.endswith(".npz"):
    checkpoint = _load_npz(path)
  elif lower.endswith(TORCH_SUFFIXES):
    checkpoint = _load_torch(path)
  else:
    raise CheckpointReadError(f"{path}: unknown checkpoint format; expected one of "
                              f"{TORCH_SUFFIXES + ('.safetensors', '.npz')}")
  return dict(unwrap_container(checkpoint, path))


def save_variables(out_dir: str, variables: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
  """Writes `out_dir/variables` (orbax, waits until finished) and `out_dir/meta.json`."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  out_dir = paths.resolve(out_dir)  # a local directory or a URL (gs://...)
  target = out_dir / VARIABLES_DIR
  if target.exists():
    raise FileExistsError(f"{target} already exists; choose another --out or remove it")
  out_dir.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, dict(variables))
  checkpointer.wait_until_finished()
  checkpointer.close()
  file_state.atomic_write_json(out_dir / META_FILE, dict(meta), sort_keys=True)


def load_run_variables(workdir: str, step: int | None = None) -> tuple[dict, dict]:
  """(variables, meta) of a darkjax training run: params + model state of its latest (or `step`)
  checkpoint in WORKDIR/checkpoints, e.g. a backbone pretrained by another config."""
  from darkjax import checkpoint  # pylint: disable=import-outside-toplevel
  checkpointer = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    steps = sorted(checkpointer.all_steps())
    if step is not None and steps and step not in steps:
      raise CheckpointNotFoundError(f"{workdir}: no checkpoint of step {step} under "
                                    f"{checkpointer.directory}; its steps are {steps}")
    step = checkpointer.latest_step() if step is None else step
    if step is None or step not in steps:
      raise CheckpointNotFoundError(
          f"{workdir}: no finished checkpoint under {checkpointer.directory} (a darkjax run "
          "writes one every config.checkpoint_every steps and at the end)")
    try:
      state = checkpointer.restore_state_arrays(step)
    except checkpoint.DamagedCheckpointError as error:
      raise CheckpointReadError(str(error)) from None
  finally:
    checkpointer.close()
  if not isinstance(state, Mapping) or "params" not in state:
    raise CheckpointReadError(f"{checkpointer.directory}/{step}: not a darkjax train state (no "
                              "'params')")
  variables = {"params": state["params"], **dict(state.get("model_state") or {})}
  meta = {"source": "darkjax run", "workdir": os.fspath(paths.resolve(workdir)), "step": step}
  config_path = paths.resolve(workdir) / "config.json"
  if config_path.is_file():
    meta["config"] = json.loads(config_path.read_text())
  return variables, meta


def recorded_normalise(meta: Mapping[str, Any], key: str | None = None,
                       run_default: str | None = None) -> str | None:
  """The `darkjax.data.normalise` mode weights read back with `meta` were trained on: the
  converter's record, the family default of a conversion made before darkjax recorded it, or a
  run's config value at `key` (default: the run's own `model_load.normalise_key`, else
  `input.normalise`; `run_default` when its config lacks the key); None if unknown."""
  record = meta.get("input_normalisation")
  if isinstance(record, Mapping) and record.get("mode"):
    return str(record["mode"])
  if meta.get("arch"):
    from darkjax import convert  # pylint: disable=import-outside-toplevel
    try:
      return convert.input_normalise(str(meta["arch"]))
    except ValueError:   # an architecture without a converter: nothing recorded
      return None
  run_config = meta.get("config")
  if isinstance(run_config, Mapping):
    key = key or (run_config.get("model_load") or {}).get("normalise_key") or "input.normalise"
    value: Any = run_config
    for part in key.split("."):
      if not isinstance(value, Mapping) or part not in value:
        return run_default
      value = value[part]
    return str(value)
  return None


def load_variables(out_dir: str) -> tuple[dict, dict]:
  """(variables, meta) written by `save_variables` / `python -m darkjax.convert`, or of a darkjax
  training run's workdir (its latest checkpoint, see `load_run_variables`)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  out_dir = paths.resolve(out_dir)  # a local directory or a URL (gs://...)
  meta_path, target = out_dir / META_FILE, out_dir / VARIABLES_DIR
  if not out_dir.exists():
    raise CheckpointNotFoundError(f"{out_dir}: no such directory")
  if not meta_path.is_file() and (out_dir / "checkpoints").is_dir():
    return load_run_variables(os.fspath(out_dir))
  if not meta_path.is_file() or not target.is_dir():
    raise CheckpointNotFoundError(
        f"{out_dir}: not a converted checkpoint (needs {META_FILE} and {VARIABLES_DIR}/, written "
        f"by python -m darkjax.convert) nor a darkjax run's workdir (needs checkpoints/)")
  meta = json.loads(meta_path.read_text())
  checkpointer = ocp.StandardCheckpointer()
  variables = checkpointer.restore(target)
  checkpointer.close()
  return dict(variables), meta


def weights_architecture(meta: Mapping[str, Any]) -> tuple[str | None, str]:
  """(the model weights read back with `meta` are for, where that is recorded): a conversion's
  meta.json `arch`, else a darkjax run's config.json `model.name`; (None, "") if neither."""
  if meta.get("arch"):
    return str(meta["arch"]), "meta.json"
  run_config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
  name = (run_config.get("model") or {}).get("name")
  return (str(name), "config.json model.name") if name else (None, "")


def backbone_variables(path: str, arch: str, key: str, head: str = "fc") -> tuple[dict, dict]:
  """(variables, meta) of zoo model `arch` without its classifier (`head`), from a
  `python -m darkjax.convert` directory or a darkjax run's workdir whose model is `arch` (e.g. a
  backbone pretrained on the bright synthetic clips by configs/synthetic.py). Raises naming config
  key `key` when the directory holds another architecture."""
  variables, meta = load_variables(path)
  found, where = weights_architecture(meta)
  if found and found != arch:
    raise CheckpointReadError(f"{key} {path}: holds {found!r} weights (its {where}), the model "
                              f"needs {arch!r}; pretrain or convert that architecture")
  out = {}
  for collection, tree in variables.items():
    out[collection] = {k: v for k, v in dict(tree).items() if k != head}
  return out, meta


def pretrained_backbone(name: str, path: str, key: str, configured: str, normalise_key: str,
                        check: bool = True) -> dict:
  """Model `name`'s variables without its classifier head from `path`, the value of config key
  `key`: a PyTorch-layout state dict (a published checkpoint), or a directory (a `python -m
  darkjax.convert` output, or a darkjax run's workdir whose model is `name`). With `check`, the
  weights must have been trained on inputs normalised as `configured` (config key
  `normalise_key`): a NormalisationMismatchError names both."""
  # pylint: disable=import-outside-toplevel
  from darkjax import convert
  from darkjax.data import normalise
  source = f"{key} {path}"
  require_exists(path, key)   # before the normalisation check: a mistyped path says so
  if paths.resolve(path).is_dir():
    loaded, meta = backbone_variables(path, name, key)
    if check:
      normalise.check_pretrained(recorded_normalise(meta), configured, normalise_key, source)
    return loaded
  state = load_state_dict_of(path, key)   # first: a file it refuses (an unsafe pickle) says so
  if check:
    convert.check_normalise(name, configured, normalise_key, source)
  try:
    return convert.from_torch(name, state, num_classes=0)
  except ConversionError as error:   # the same error, naming the key and the file
    raise ConversionError(f"{source}: {error}") from None


def require_exists(path: str, key: str) -> None:
  """Raises CheckpointNotFoundError naming config key `key` when `path` (its value: a file, a
  directory or a URL) does not exist."""
  if not paths.resolve(path).exists():
    raise CheckpointNotFoundError(f"{key}: {path}: no such file or directory")


def load_state_dict_of(path: str, key: str) -> dict:
  """`load_state_dict(path)` for the value of config key `key`: errors name the key."""
  try:
    return load_state_dict(path)
  except CheckpointReadError as error:   # the same kind of error, naming the key
    raise type(error)(f"{key}: {error}") from None
