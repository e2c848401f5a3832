"""Convert a PyTorch / safetensors / npz checkpoint into Flax variables on disk.

    python -m darkjax.convert --arch resnext3d_101 --src resnext-101-kinetics.pth --out DIR \
        [--num-classes N] [--input-normalise MODE] [--image-size N]

Writes DIR/variables (orbax StandardCheckpointer) and DIR/meta.json:
  arch, num_classes (the head size the variables are for), model_kwargs (extra
  `darkjax.models.build` arguments the variables need, e.g. the shortcut type read from the
  checkpoint), not_converted (parameters the trainer must initialise: the head when --num-classes
  differs from the checkpoint's), source (path, sha256, size), input_normalisation (the
  `darkjax.data.normalise` mode the weights were trained on, with its mean, std, value range and
  channel order: the family's published weights' unless --input-normalise names another; loading
  the weights checks the config's normalisation against it).
Read it back with `darkjax.convert.io.load_variables(DIR)`.

Exit status 2 with a message naming the file / parameters on any problem (unsafe pickle,
unknown architecture, shape mismatches).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from typing import Any

from darkjax import file_state, paths
from darkjax.convert import io


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(dict(tree), sep="/").items()}


def _expected_shapes(arch: str, num_classes: int, model_kwargs: dict) -> dict[str, tuple[int, ...]]:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from darkjax import models  # pylint: disable=import-outside-toplevel
  model = models.build(arch, num_classes, **model_kwargs)
  clip = (1,) + tuple(getattr(model, "input_size", (16, 112, 112))) + (3,)
  return _flat_shapes(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(clip)))


def _head_classes(arch: str, model_kwargs: dict, converted: dict[str, tuple[int, ...]]) -> int:
  """The checkpoint's head size: the last dim of converted leaves whose shape tracks num_classes."""
  one, two = _expected_shapes(arch, 1, model_kwargs), _expected_shapes(arch, 2, model_kwargs)
  head = [k for k in one if one[k] != two.get(k)]
  sizes = {converted[k][-1] for k in head if k in converted}
  if len(sizes) != 1:
    raise ValueError(f"cannot tell the checkpoint's number of classes from {head}; "
                     "pass --num-classes")
  return sizes.pop()


def convert_file(arch: str, src: str, out: str, num_classes: int | None = None,
                 input_normalise: str | None = None,
                 image_size: int | None = None) -> dict[str, Any]:
  """Converts `src` for model `arch`, writes `out`; returns the meta dict. `input_normalise`: the
  normalisation the weights were trained on (default: the family's published weights');
  `image_size`: a ViT's input side, its position embeddings resized to it (default: the
  checkpoint's)."""
  from darkjax import __version__, convert  # pylint: disable=import-outside-toplevel
  from darkjax.convert.common import ConversionError  # pylint: disable=import-outside-toplevel
  from darkjax.data import normalise  # pylint: disable=import-outside-toplevel
  state = io.load_state_dict(src)
  converter = convert._converter_for(arch)  # pylint: disable=protected-access
  input_normalise = input_normalise or converter.INPUT_NORMALISE
  normalisation = normalise.describe(input_normalise)
  if image_size is not None and "image_size" not in inspect.signature(converter.convert).parameters:
    raise ValueError(f"--image-size resizes a ViT's position embeddings; {arch} takes clips of "
                     "any size as they are: leave it out")
  try:
    variables = (converter.convert(arch, state, num_classes) if image_size is None
                 else converter.convert(arch, state, num_classes, image_size=image_size))
  except ConversionError as error:
    # A checkpoint of another model (r2plus1d_18 weights given as r3d_18): its long list of
    # mismatches, and the model they are for.
    fits = convert.fitting_models(state, exclude=(arch,))
    if not fits:
      raise
    raise ConversionError(f"{error}\n{src} holds the weights of {' or '.join(fits)}, not {arch}: "
                          f"rerun with --arch {fits[0]}") from None
  model_kwargs = getattr(converter, "model_kwargs", lambda name, state: {})(arch, state)
  converted = _flat_shapes(variables)
  if getattr(converter, "HEADLESS", False):
    # An image enhancer (Zero-DCE): no classifier head, and its converter's strict merge has
    # already checked every parameter against the model's.
    num_classes, not_converted = 0, []
  else:
    if num_classes is None:
      num_classes = _head_classes(arch, model_kwargs, converted)
    not_converted = sorted(set(_expected_shapes(arch, num_classes, model_kwargs))
                           - set(converted))
  meta = {
      "arch": arch,
      "num_classes": num_classes,
      "model_kwargs": model_kwargs,
      "not_converted": not_converted,
      "input_normalisation": normalisation,
      **({"image_size": image_size} if image_size is not None else {}),
      "source": {"path": os.path.abspath(src), "sha256": file_state.sha256_file(src),
                 "bytes": os.path.getsize(src)},
      "darkjax_version": __version__,
  }
  io.save_variables(out, variables, meta)
  return meta


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m darkjax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--arch", required=True, help="model name, see darkjax.models.names()")
  parser.add_argument("--src", required=True, help="a torch.save file (.pth, .pt, .pth.tar, .ckpt, "
                      ".pickle, .pkl, .bin), .safetensors or .npz")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--num-classes", type=int, default=None,
                      help="head size; if it differs from the checkpoint's, the head is left out")
  parser.add_argument("--input-normalise", default=None,
                      help="the darkjax.data.normalise mode the weights were trained on (default: "
                           "that of the family's published weights, e.g. c3d_sports1m for c3d, "
                           "activitynet_mean for 3D-ResNets-PyTorch's first Kinetics release)")
  parser.add_argument("--image-size", type=int, default=None,
                      help="ViT checkpoints: the input side the model runs at, its position "
                           "embeddings resized to it (a 384 checkpoint for 224 frames, or the "
                           "other way; default: the checkpoint's own)")
  args = parser.parse_args(argv)
  if args.image_size is not None and args.image_size < 1:
    parser.error(f"--image-size {args.image_size}: must be >= 1")
  if args.num_classes is not None and args.num_classes < 0:
    parser.error(f"--num-classes {args.num_classes}: must be >= 0 (0: no classifier head)")
  why = paths.cannot_write(args.out)   # found now, not after the conversion
  if why:
    print(f"darkjax.convert: --out {args.out}: {why}; give a new directory in a folder you can "
          "write to", file=sys.stderr)
    return 2
  try:
    meta = convert_file(args.arch, args.src, args.out, args.num_classes, args.input_normalise,
                        args.image_size)
  except (ValueError, FileExistsError) as e:  # CheckpointReadError, ConversionError are ValueErrors
    print(f"darkjax.convert: {e}", file=sys.stderr)
    return 2
  except OSError as e:   # the disk filled while writing
    print(f"darkjax.convert: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
    return 2
  print(f"wrote {paths.resolve(args.out) / io.VARIABLES_DIR} for {args.arch} "
        f"({meta['num_classes']} classes"
        + (f"; not converted: {', '.join(meta['not_converted'])}" if meta["not_converted"] else "")
        + f"; inputs normalised as {meta['input_normalisation']['mode']!r})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
