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
