"""Paper configs as recipes: the pretrained weights they start from (a run without them stops at start
with the file's public name and the convert command; `init=none` opts out), epochs as steps, and
each paper's recipe table (config defaults = the paper's values where they MATCH; the docs page
shows the generated table)."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

from configs import (dinet_infar, dtcm_arid, dtcm_synthetic, lift_arid, lift_hmdb51, lift_synthetic,
                     twostream_infar, twostream_synthetic)
from darkjax import config as config_lib
from darkjax import phases, train
from darkjax.tools import recipe

REPO = pathlib.Path(__file__).resolve().parents[1]


LIFT_KEYS = {"lift.pretrained.vit", "lift.pretrained.luminous"}


@pytest.mark.parametrize("module, keys, opt_out", [
    (dtcm_arid, {"model_init"}, "init=none"),
    (dinet_infar, {"model_init"}, "init=none"),
    (lift_arid, LIFT_KEYS, "init=none,vit_trainable=all"),
    (lift_hmdb51, LIFT_KEYS, "init=none,vit_trainable=all"),
    (twostream_infar, {"twostream.tower_init.ir"}, "init=none"),
])
def test_paper_configs_require_their_weights_unless_opted_out(module, keys, opt_out):
  config = module.get_config()
  assert {entry.key for entry in config.required_weights.values()} == keys
  with pytest.raises(config_lib.MissingWeightsError) as error:
    config_lib.check_required_weights(config)
  message = str(error.value)
  for entry in config.required_weights.values():
    assert entry.file in message and f"`{entry.arg}=PATH`" in message
    if entry.command:
      assert entry.command in message
  assert "init=none" in message
  assert not module.get_config(opt_out).required_weights
  assert not module.get_config("runlocal").required_weights
  with pytest.raises(ValueError, match="init='random'"):
    module.get_config("init=random")


def test_a_random_frozen_pvit_is_refused():
  with pytest.raises(ValueError, match="init=none with vit_trainable=first"):
    lift_arid.get_config("init=none")


def test_given_weights_pass_the_check():
  config = dtcm_arid.get_config("pretrained=/weights/resnext3d_101_kinetics")
  config_lib.check_required_weights(config)
  # One Sports-1M C3D fills both two-stream towers; a one-tower run requires it for that tower.
  config = twostream_infar.get_config("sports1m=/weights/c3d_sports1m")
  config_lib.check_required_weights(config)
  assert dict(config.twostream.tower_init) == {"ir": "/weights/c3d_sports1m",
                                               "flow": "/weights/c3d_sports1m"}
  config = twostream_infar.get_config("streams=flow")
  assert [e.key for e in config.required_weights.values()] == ["twostream.tower_init.flow"]
  config = lift_arid.get_config("vit_init=/w/ViT-B_16.npz")
  with pytest.raises(config_lib.MissingWeightsError, match="luminous_init") as error:
    config_lib.check_required_weights(config)
  assert "vit_init" not in str(error.value)


def test_synthetic_configs_require_nothing():
  for module in (dtcm_synthetic, lift_synthetic, twostream_synthetic):
    assert not module.get_config().required_weights


def test_the_trainer_checks_before_anything_else(tmp_path):
  config = dtcm_arid.get_config()
  with pytest.raises(config_lib.MissingWeightsError, match="resnext-101-kinetics.pth"):
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


@pytest.mark.parametrize("paper", sorted(recipe.PAPERS))
def test_recipe_tables_match_the_configs_and_the_docs(paper):
  rows, config = recipe.recipe(paper)
  assert len(rows) >= 15
  for row in rows:
    if row.get("key") and row["status"] == "MATCH":
      assert recipe.config_value(config, row["key"]) == row["paper"], row["detail"]
  page = (REPO / recipe.PAPERS[paper][2]).read_text(encoding="utf-8")
  assert recipe.markdown_table(paper) in page, (
      f"{recipe.PAPERS[paper][2]} is out of date: paste `python -m darkjax.tools.recipe {paper}`")


def _paper_text(prefix: str) -> str:
  """The paper's text: ../shared/papers/<prefix>*.txt beside the repository."""
  papers = REPO.parent / "shared" / "papers"
  found = sorted(papers.glob(f"{prefix}*.txt")) if papers.is_dir() else []
  if not found:
    if os.environ.get("DARKJAX_REQUIRE_PAPERS"):   # .ci/run: its clones have them beside
      raise AssertionError(f"no paper text {papers}/{prefix}*.txt beside the repository")
    pytest.skip(f"no paper text {papers}/{prefix}*.txt beside the repository")
  return found[0].read_text(encoding="utf-8")


@pytest.mark.parametrize("paper", sorted(recipe.QUOTED))
def test_every_match_row_quotes_the_paper(paper):
  rows, _ = recipe.recipe(paper)
  raw = _paper_text(recipe.QUOTED[paper])
  texts = recipe.paper_texts(raw)
  for row in rows:
    detail = f"{paper}: row {row['detail']!r}"
    cited = recipe.citations(row)
    if row["status"] == "MATCH":
      assert row.get("source") or row.get("image"), f"{detail} (MATCH) needs where the paper " \
          "says it (`source`, or `image` for a figure that exists only as an image)"
      assert any(words for _, words in cited), f"{detail} (MATCH) needs the paper's words " \
          "(`quote`, or `drawn` with its `image`)"
    for quote in recipe.as_tuple(row.get("quote")):
      assert recipe.quote_found(quote, texts), f"{detail} quotes {quote!r}, which the paper's " \
          "text does not contain (tools/recipe.py: normalise_text)"
    for image in recipe.as_tuple(row.get("image")):
      assert re.search(rf"[(/]{re.escape(image)}\)", raw), f"{detail} reads image {image!r}, " \
          "which the paper's text does not show"
    if row["status"] == "CHOICE":
      assert row.get("note"), f"{detail} (CHOICE) needs its reason (`note`)"


def test_quote_matching_normalises_markup_and_nothing_else():
  texts = recipe.paper_texts("we choose $\\alpha = 0.1$ for *i.e.* the $N_{AH}$ heads.\n"
                             "TABLE V: \"K400*\" DENOTES THE FIL-\nTERED VERSION, set to 4 in "
                             "<i>et al.</i>’s run, a positive ($${\\color{pink}pink}$$) edge")
  for quote in ("we choose α = 0.1", "i.e. the N_AH heads", '"K400*" denotes the filtered version',
                "FIL-TERED", "et al.'s run", "we choose ... N_AH heads", "a positive (pink) edge"):
    assert recipe.quote_found(quote, texts), quote
  for quote in ("we choose α = 0.2", "the N_AH head.", "set to 5", "we choose ... K400 ... α"):
    assert not recipe.quote_found(quote, texts), quote
  with pytest.raises(ValueError, match="2 quotes for 1 sources"):
    recipe.citations({"detail": "d", "source": "Sec. I", "quote": ("a", "b")})


def test_missing_weights_and_data_are_named_together(tmp_path, monkeypatch):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path / "data"))
  with pytest.raises(config_lib.MissingWeightsError,
                     match=r"(?s)resnext-101-kinetics\.pth.*The data is missing too: dataset "
                           r"'arid_v1' is not prepared.*python -m darkjax\.data\.prepare "
                           r"--dataset arid_v1 .*--short-side 240"):
    phases.run_phases(dtcm_arid.get_config(), str(tmp_path / "w"))
