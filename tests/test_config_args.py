"""What the user says wins: every arg of every config, given together with each of the config's
variants (`runlocal`), lands in the resolved config as it does without the variant, or the config
refuses the combination naming the arg. Nothing is compiled: configs are built and compared."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from configs import common
from darkjax import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (REPO / "configs").glob("*.py")
                      if p.stem not in ("__init__", "common") and not p.stem.endswith("_base"))

# Valid values to try for args, the first that differs from the config's default is taken;
# an arg not named here gets the rule in `alternative`.
ALTERNATIVES = {
    "model": ["c3d_tiny"], "backbone": ["small3d_wide"], "stream": ["day"],
    "normalise": ["imagenet", "kinetics"], "target": ["ir"],
    "data_dir": ["/tmp/darkjax_test_args_data"], "source_dir": ["/tmp/src_dir"],
    "target_dir": ["/tmp/tgt_dir"], "pretrained": ["/tmp/darkjax_test_args_weights"],
    "vit_init": ["/tmp/vit.npz"], "luminous_init": ["/tmp/lum.pth"],
    "backbone_init": ["/tmp/bb.pth"], "teacher_init": ["/tmp/teacher_run"],
    "sports1m": ["/tmp/sports1m"], "init": ["none", "pretrained"], "setting": ["no_enhancement"],
    "enhancer": ["zero_dce"], "variant": ["small"], "luminous": ["r3d"],
    "luminous_input": ["flow", "gamma"], "vit_trainable": ["none", "all"], "fusion": ["sum"],
    "streams": ["flow"], "ssl_datasets": ["arid_v1", "synthetic+arid_v1"],
    "ssl_features": ["cls"], "k": [2, 8], "frames": [32], "split": [2, 1], "epochs": [3.0],
    "data_seed": [4321], "scenario": ["what"], "modality": ["infrared"], "flow": ["stored"],
    "dataset": ["night_clips"], "source_dataset": ["day_clips"],
    "target_dataset": ["night_clips"],
}
# Fields a variant owns whatever the args say, with the reason: a `runlocal` smoke run trains
# from random initialisation, so it requires no pretrained weights.
VARIANT_OWNED = {"runlocal": ("required_weights.",)}
MISSING = "<missing>"


def alternative(name: str, default: Any) -> Any:
  if name in ALTERNATIVES:
    choices = [value for value in ALTERNATIVES[name] if value != default]
    assert choices, f"tests/test_config_args.py: add a value other than {default!r} for {name!r}"
    return choices[0]
  if isinstance(default, bool):
    return not default
  if isinstance(default, int):
    return default * 2 if default else 7
  if isinstance(default, float):
    return default / 2 if default else 0.25
  raise AssertionError(f"tests/test_config_args.py: no alternative value for string arg "
                       f"{name!r}; add one to ALTERNATIVES")


def arg_spec(path: pathlib.Path, monkeypatch) -> tuple[dict[str, Any], dict[str, dict]]:
  """The outermost `parse_arg` call's defaults and variants of a config file."""
  calls = []
  parse = common.parse_arg

  def recording(arg, variants=None, **spec):
    calls.append((dict(spec), dict(variants or {})))
    return parse(arg, variants=variants, **spec)

  monkeypatch.setattr(common, "parse_arg", recording)
  config_lib.load(str(path))
  monkeypatch.setattr(common, "parse_arg", parse)
  assert calls, f"{path.name} does not parse its arg with configs.common.parse_arg"
  return calls[0]


def build(path: pathlib.Path, args: dict[str, Any]) -> dict[str, Any] | str:
  """The flat config, or the message of the error that refused the args."""
  text = ",".join(f"{name}={value}" for name, value in args.items())
  try:
    return config_lib.flat(config_lib.load(str(path), text or None))
  except (ValueError, KeyError) as error:
    return str(error)


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
  """The fields `after` sets differently from `before` (MISSING where it drops one)."""
  return {key: after.get(key, MISSING) for key in before.keys() | after.keys()
          if before.get(key, MISSING) != after.get(key, MISSING)}


def lost_fields(footprint: dict[str, Any], variant_only: dict[str, Any],
                given: dict[str, Any], owned: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
  """The fields of an arg's `footprint` (what it changes without the variant) that the variant
  took from it: a field the variant leaves alone must take the arg's value; one the variant
  sets too must at least move away from the variant's own value."""
  lost = {}
  for key, want in footprint.items():
    got = given.get(key, MISSING)
    if got == want or key.startswith(owned):
      continue
    if key in variant_only and got != variant_only.get(key, MISSING):
      continue
    lost[key] = (want, got)
  return lost


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_given_args_win_over_every_variant(path, monkeypatch, tmp_path):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path))
  defaults, variants = arg_spec(path, monkeypatch)
  if "runlocal" in defaults:
    assert "runlocal" in variants, (
        f"{path.name}: runlocal is a variant; declare its arg defaults with "
        "parse_arg(..., variants={'runlocal': {...}})")
  base = build(path, {})
  assert isinstance(base, dict), base
  problems = []
  for name, default in defaults.items():
    if name in variants:
      continue
    value = alternative(name, default)
    alone = build(path, {name: value})
    if isinstance(alone, str):      # refused on its own: the message names the arg
      assert name in alone, f"{path.name}: {name}={value} refused without naming it: {alone}"
      continue
    footprint = changes(base, alone)
    assert footprint, f"{path.name}: {name}={value} changes nothing in the config"
    for variant in variants:
      variant_only = build(path, {variant: True})
      given = build(path, {variant: True, name: value})
      if isinstance(given, str):
        if name not in given:
          problems.append(f"{variant},{name}={value} refused without naming {name}: {given}")
        continue
      lost = lost_fields(footprint, changes(base, variant_only), given,
                         VARIANT_OWNED.get(variant, ()))
      if lost:
        problems.append(f"{variant},{name}={value}: " + "; ".join(
            f"{key} is {got!r}, not {want!r}" for key, (want, got) in sorted(lost.items())))
  assert not problems, f"{path.name}: a given arg is replaced by a variant:\n" + "\n".join(problems)


def test_parse_arg_variant_defaults_give_way_to_given_args():
  spec = dict(frames=16, batch=32, model="big", runlocal=False)
  variants = {"runlocal": dict(frames=8, batch=4, model="tiny")}
  assert common.parse_arg("runlocal,batch=16", variants=variants, **spec).to_dict() == dict(
      frames=8, batch=16, model="tiny", runlocal=True)
  assert common.parse_arg("batch=16", variants=variants, **spec).to_dict() == dict(
      frames=16, batch=16, model="big", runlocal=False)
  with pytest.raises(KeyError, match="variant 'runlocal' sets unknown args"):
    common.parse_arg("runlocal", variants={"runlocal": dict(frame=8)}, **spec)
