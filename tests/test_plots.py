"""darkjax.plots: what a picture states can be read off it."""

from __future__ import annotations

import numpy as np
import pytest

from darkjax import plots
from darkjax.evaluators import classification


@pytest.mark.parametrize("scores", [np.linspace(-0.91, -0.81, 60), np.array([0.3, 0.5]),
                                    np.array([-0.99, -0.95])])
def test_the_darkness_histograms_bars_below_the_threshold_are_the_dark_videos(scores):
  tau = 0.877
  dark = int((scores < -tau).sum())
  fig = plots.darkness_histogram(scores, tau, dark)
  bars = fig.axes[0].patches
  assert 0 < len(bars) <= 40
  below = sum(bar.get_height() for bar in bars if bar.get_x() + bar.get_width() <= -tau + 1e-9)
  assert below == dark and sum(bar.get_height() for bar in bars) == len(scores)
  assert f"{dark} of {len(scores)} videos dark" in fig.axes[0].get_title()


def test_a_confusion_matrix_says_what_its_numbers_and_colours_are():
  fig = plots.confusion(np.array([[2, 1], [0, 3]]), ["a", "b"], title="t")
  assert "numbers: clips; colour: share of the true class" in fig.axes[0].get_title()
  assert fig.axes[1].get_ylabel() == "share of the true class's clips (row)"


def test_an_evaluations_title_names_its_stream():
  assert classification.stream_note({"stream": "day"}) == " (day frames)"
  assert classification.stream_note({}) == ""


def test_a_character_no_font_has_is_one_warning_naming_it(tmp_path, caplog):
  """Class names in a script the installed fonts lack (a dataset of one's own): one darkjax
  warning naming the characters and the font to install, not matplotlib's warning per glyph and
  figure; a later figure with them says nothing more."""
  import warnings  # pylint: disable=import-outside-toplevel
  names = ["\ue000\ue001", "walk"]   # private-use characters: in no font
  with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING", "darkjax"):
    warnings.simplefilter("always")
    for _ in range(2):
      plots.save(plots.confusion(np.eye(2, dtype=int), names), str(tmp_path / "c.png"))
      plots.save(plots.timeline(np.full((3, 2), 0.5), [[0, 1], [1, 2], [2, 3]], names),
                 str(tmp_path / "t.png"))
  said = [r.getMessage() for r in caplog.records if "no installed font" in r.getMessage()]
  assert len(said) == 1 and repr(names[0]) in said[0] and "Noto Sans CJK" in said[0], said
  assert not [w for w in caught if "missing from font" in str(w.message)]
  assert (tmp_path / "c.png").stat().st_size > 0
