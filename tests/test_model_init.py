"""config.model_init: converted variables load into the whole model or into a sub-module (prefix),
strictly, with dont_load for new heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from darkjax import model_init
from darkjax.convert import io as convert_io
from darkjax.models import small3d


def _variables(num_classes: int, seed: int):
  model = small3d.VARIANTS["small3d_tiny"](num_classes=num_classes)
  return jax.device_get(jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 4, 8, 8, 3))))


def test_full_model_loads_except_dont_load(tmp_path):
  saved = _variables(7, seed=1)
  convert_io.save_variables(str(tmp_path / "ckpt"), saved, {"arch": "small3d_tiny"})
  ours = _variables(5, seed=2)   # other head size: must be skipped
  with pytest.raises(ValueError, match=r"wrong shape.*head"):
    model_init.load_pretrained(ours, str(tmp_path / "ckpt"))
  merged = model_init.load_pretrained(ours, str(tmp_path / "ckpt"), dont_load=("^params/head/",))
  flat, flat_saved = (traverse_util.flatten_dict(t, sep="/") for t in (merged, saved))
  flat_ours = traverse_util.flatten_dict(ours, sep="/")
  for key, value in flat.items():
    expected = flat_ours[key] if key.startswith("params/head/") else flat_saved[key]
    np.testing.assert_array_equal(value, expected)


def test_backbone_loads_under_a_prefix_and_reports_missing_keys(tmp_path):
  backbone = _variables(0, seed=3)
  convert_io.save_variables(str(tmp_path / "ckpt"), backbone, {"arch": "small3d_tiny"})
  bigger = {collection: {"extractor": tree, "head": {"kernel": np.zeros((16, 3), np.float32)}}
            for collection, tree in _variables(0, seed=4).items()}
  merged = model_init.load_pretrained(bigger, str(tmp_path / "ckpt"), prefix="extractor")
  np.testing.assert_array_equal(merged["params"]["extractor"]["stem"]["conv"]["kernel"],
                                backbone["params"]["stem"]["conv"]["kernel"])
  np.testing.assert_array_equal(merged["params"]["head"]["kernel"], 0)
  del bigger["params"]["extractor"]["stage4"]
  with pytest.raises(ValueError, match=r"unexpected.*params/extractor/stage4"):
    model_init.load_pretrained(bigger, str(tmp_path / "ckpt"), prefix="extractor")


def test_weights_of_another_architecture_or_an_unconverted_file_say_what_to_do(tmp_path):
  ours = _variables(5, seed=2)
  convert_io.save_variables(str(tmp_path / "resnet"), ours, {"arch": "resnet3d_tiny"})
  with pytest.raises(ValueError, match=r"config\.model_init .*resnet: holds 'resnet3d_tiny' "
                                       r"weights \(its meta\.json\), config\.model\.name is "
                                       r"'small3d_tiny'"):
    model_init.load_pretrained(ours, str(tmp_path / "resnet"), arch="small3d_tiny")
  pth = tmp_path / "weights.pth"
  pth.write_bytes(b"\x80")
  with pytest.raises(ValueError, match=r"^config\.model_init: .*weights\.pth.*convert it first: "
                                       r"python -m darkjax\.convert --arch small3d_tiny --src "):
    model_init.load_pretrained(ours, str(pth), arch="small3d_tiny")
  with pytest.raises(ValueError, match=r"^config\.model_init: .*nowhere: no such directory$"):
    model_init.load_pretrained(ours, str(tmp_path / "nowhere"), arch="small3d_tiny")
