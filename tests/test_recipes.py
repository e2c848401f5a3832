"""Paper configs as recipes: the pretrained weights they start from (a run without them stops at start
with the file's public name and the convert command; `init=none` opts out) and epochs as steps."""

from __future__ import annotations

import pytest

from configs import dinet_infar, dtcm_arid, dtcm_synthetic, lift_arid, lift_hmdb51, lift_synthetic
from darkjax import train

@pytest.mark.parametrize("module, keys", [
    (dtcm_arid, {"model_init"}),
    (dinet_infar, {"model_init"}),
    (lift_arid, {"lift.pretrained.vit", "lift.pretrained.luminous"}),
    (lift_hmdb51, {"lift.pretrained.vit", "lift.pretrained.luminous"}),
])
def test_paper_configs_require_their_weights_unless_opted_out(module, keys):
  config = module.get_config()
  assert {entry.key for entry in config.required_weights.values()} == keys
  with pytest.raises(train.MissingWeightsError) as error:
    train.check_required_weights(config)
  message = str(error.value)
  for entry in config.required_weights.values():
    assert entry.file in message and f"`{entry.arg}=PATH`" in message
    if entry.command:
      assert entry.command in message
  assert "init=none" in message
  assert not module.get_config("init=none").required_weights
  assert not module.get_config("runlocal").required_weights
  with pytest.raises(ValueError, match="init='random'"):
    module.get_config("init=random")


def test_given_weights_pass_the_check():
  config = dtcm_arid.get_config("pretrained=/weights/resnext3d_101_kinetics")
  train.check_required_weights(config)
  config = lift_arid.get_config("vit_init=/w/ViT-B_16.npz")
  with pytest.raises(train.MissingWeightsError, match="luminous_init") as error:
    train.check_required_weights(config)
  assert "vit_init" not in str(error.value)


def test_synthetic_configs_require_nothing():
  for module in (dtcm_synthetic, lift_synthetic):
    assert not module.get_config().required_weights


def test_the_trainer_checks_before_anything_else(tmp_path):
  config = dtcm_arid.get_config()
  with pytest.raises(train.MissingWeightsError, match="resnext-101-kinetics.pth"):
    train.Trainer(config, str(tmp_path / "w"), task=object())
  assert not (tmp_path / "w").exists()


def test_epochs_become_steps_from_the_train_split():
  config = dtcm_arid.get_config("pretrained=/w")
  assert config.total_epochs == 50 and config.input.frames == 64
  assert config.input.short_side == 240 and config.input.batch_size == 4

  class Dataset:
    def num_examples(self, split):
      return {"train": 2775, "test": 1009}[split]

  class Source:
    dataset = Dataset()
    cfg = config.input

  task = type("Task", (), {"data_sources": {"input": Source()}})()
  assert train.steps_for_epochs(config, task) == -(-50 * 2775 // 4)   # ceil
  assert dtcm_arid.get_config("steps=100,pretrained=/w").total_epochs == 0
  with pytest.raises(ValueError, match="epochs > 0"):
    dtcm_arid.get_config("epochs=0")
