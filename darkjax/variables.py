"""Variable trees: does one fit another (missing / unexpected / wrong-shape entries), and strict
merges of a loaded tree into a model's.

The one place that compares a checkpoint's entries with a model's: converters
(`darkjax.convert.common.merge_strict`), `config.model_init` (`darkjax.model_init.load_pretrained`),
pretrained sub-modules (`merge_subtree`, e.g. LIFT-Net's ViT or teacher backbone) and restored
checkpoints (`darkjax.tools.predict`) all report through `Mismatch`, so every such error lists
every problem with its path.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from flax import traverse_util


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """{"a/b/c": leaf} of a nested dict of arrays (or ShapeDtypeStructs)."""
  return traverse_util.flatten_dict(dict(tree), sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict:
  return traverse_util.unflatten_dict(dict(flat), sep="/")


@dataclasses.dataclass(frozen=True)
class Mismatch:
  """Paths of `got` that do not fit `expected`: absent, extra, or of another shape."""
  missing: tuple[str, ...] = ()
  unexpected: tuple[str, ...] = ()
  wrong_shape: tuple[str, ...] = ()   # "path: checkpoint (shape) vs model (shape)"

  def __bool__(self) -> bool:
    return bool(self.missing or self.unexpected or self.wrong_shape)

  def describe(self) -> str:
    """One line per kind of problem, each with its count and paths."""
    parts = [(f"missing ({len(self.missing)})", self.missing),
             (f"unexpected ({len(self.unexpected)})", self.unexpected),
             (f"wrong shape ({len(self.wrong_shape)})", self.wrong_shape)]
    text = "; ".join(f"{label}: {list(paths)}" for label, paths in parts if paths)
    if any(p.split(":")[0].endswith("pos_embedding") for p in self.wrong_shape):
      text += ("; a ViT's position embeddings are for another image size: convert the "
               "checkpoint again with `python -m darkjax.convert ... --image-size N`, N the "
               "frames' side")
    return text


def mismatch(expected: Mapping[str, Any], got: Mapping[str, Any],
             keep: Callable[[str], bool] = lambda path: True) -> Mismatch:
  """Compares two flat {path: array-like} dicts on the paths `keep` accepts."""
  shape = lambda v: tuple(np.shape(v)) if not hasattr(v, "shape") else tuple(v.shape)  # noqa: E731
  want = {k: v for k, v in expected.items() if keep(k)}
  have = {k: v for k, v in got.items() if keep(k)}
  return Mismatch(
      missing=tuple(sorted(set(want) - set(have))),
      unexpected=tuple(sorted(set(have) - set(want))),
      wrong_shape=tuple(sorted(f"{k}: checkpoint {shape(have[k])} vs model {shape(want[k])}"
                               for k in set(want) & set(have) if shape(have[k]) != shape(want[k]))))


def check_fits(expected: Mapping[str, Any], got: Mapping[str, Any], what: str,
               error: type[Exception] = ValueError) -> None:
  """Raises `error` naming `what` and every mismatch of nested trees `got` against `expected`."""
  problems = mismatch(flatten(expected), flatten(got))
  if problems:
    raise error(f"{what} does not fit the model: {problems.describe()}")


def merge_subtree(variables: Mapping[str, Any], collection: str, prefix: str | None,
                  subtree: Mapping[str, Any], source: str, skip: Sequence[str] = ()) -> dict:
  """`variables[collection][prefix]` (the whole collection when `prefix` is None) replaced by
  `subtree`, cast to the model's dtypes. Top-level keys in `skip` are ignored on both sides (ours
  are kept). Raises ValueError naming `source` and every missing, unexpected or mis-shaped path."""
  target = variables[collection] if prefix is None else variables[collection][prefix]
  kept = lambda tree: {k: v for k, v in dict(tree).items() if k not in skip}  # noqa: E731
  ours, theirs = flatten(kept(target)), flatten(kept(subtree))
  problems = mismatch(ours, theirs)
  if problems:
    where = f"{collection}/{prefix}" if prefix else collection
    raise ValueError(f"{source} does not fit {where}: {problems.describe()}")
  merged = unflatten({k: np.asarray(theirs[k], dtype=np.asarray(ours[k]).dtype) for k in ours})
  merged.update({k: v for k, v in dict(target).items() if k in skip})
  out = {k: dict(v) for k, v in variables.items()}
  if prefix is None:
    out[collection] = merged
  else:
    out[collection][prefix] = merged
  return out
