"""The table of `python -m darkjax.tools.experiment` (darkjax/tools/experiment_table.py): each
arm's mean, spread and 95% interval, paired differences, contrasts within runs, the Markdown."""

from __future__ import annotations

import numpy as np
import pytest

from darkjax.tools import experiment, experiment_table


def test_aggregate_and_markdown():
  results = {"default": [{"video/top1": 0.5, "video/late_fusion2/mean_precision": 0.6, "x/loss": 1.0},
                         {"video/top1": 0.7, "video/late_fusion2/mean_precision": 0.8, "x/loss": 2.0}],
             "no_dcl": [{"video/top1": 0.4}, {"video/top1": 0.6}]}
  table = experiment_table.aggregate(results, experiment.DEFAULT_METRICS)
  assert table["default"]["video/top1"]["mean"] == pytest.approx(0.6)
  assert table["default"]["video/top1"]["std"] == pytest.approx(0.1414213, rel=1e-5)
  assert "x/loss" not in table["default"]
  text = experiment_table.markdown(table, "title")
  # 95% CI of the mean with 1 degree of freedom: t = 12.706, 12.706 x 0.1414 / sqrt(2) = 1.271
  assert "| video/top1 | 60.0 +- 14.1 [-67.1, 187.1] (n=2) | 50.0 +- 14.1 [-77.1, 177.1] (n=2) |" \
      in text
  assert "| video/late_fusion2/mean_precision | 70.0 +- 14.1 [-57.1, 197.1] (n=2) |  |" in text


def test_confidence_interval_and_paired_difference():
  # t(0.975, 4) = 2.7764; values 1..5: std sqrt(2.5)
  assert experiment_table.ci95([1, 2, 3, 4, 5]) == pytest.approx(2.7764451 * np.sqrt(2.5) / np.sqrt(5))
  assert np.isnan(experiment_table.ci95([1.0]))
  # seed-to-seed spread common to both arms cancels in the paired difference
  results = {"default": [{"seed": s, "split": None, "top1": 0.5 + 0.1 * s} for s in range(4)],
             "arm": [{"seed": s, "split": None, "top1": 0.52 + 0.1 * s + 0.01 * (s % 2)}
                     for s in range(4)]}
  table = experiment_table.aggregate(results, "top1")
  paired = experiment_table.paired_differences(results, table)["arm"]["top1"]
  assert paired["mean"] == pytest.approx(0.025) and paired["n"] == 4
  assert paired["ci95"] < 0.02 < table["arm"]["top1"]["ci95"]
  text = experiment_table.markdown(table, "t", experiment_table.paired_differences(results, table),
                             ["- `arm`: `x` 1 -> 2"])
  assert "| top1 | +2.5 [" in text and "- `arm`: `x` 1 -> 2" in text


def test_pairs_between_two_arms():
  arms = ["default", "kd0", "no_ssl", "alone", "a-b", "b"]
  assert experiment_table.parse_pairs(["kd=no_ssl-alone", "x=a-b-b"], arms) == {
      "kd": ("no_ssl", "alone"), "x": ("a-b", "b")}
  with pytest.raises(ValueError, match="no_ssl-nothing.*not two arms"):
    experiment_table.parse_pairs(["kd=no_ssl-nothing"], arms)
  with pytest.raises(ValueError, match="NAME=ARM_A-ARM_B"):
    experiment_table.parse_pairs(["kd=no_ssl"], arms)
  with pytest.raises(ValueError, match="given twice"):
    experiment_table.parse_pairs(["kd=no_ssl-alone", "kd=kd0-alone"], arms)
  # paired by seed: seed 2 of `alone` has no partner and is left out
  results = {"default": [{"seed": s, "split": None, "top1": 0.5} for s in range(3)],
             "no_ssl": [{"seed": s, "split": None, "top1": 0.6 + 0.1 * s} for s in range(2)],
             "alone": [{"seed": s, "split": None, "top1": 0.5 + 0.1 * s} for s in range(3)]}
  table = experiment_table.aggregate(results, "top1")
  between = experiment_table.arm_difference(results, table, "no_ssl", "alone")["top1"]
  assert between["mean"] == pytest.approx(0.1) and between["n"] == 2
  assert between["ci95"] == pytest.approx(0.0, abs=1e-9)
  text = experiment_table.markdown(table, "t", experiment_table.paired_differences(results, table),
                             pairs={"kd": ("no_ssl", "alone")}, between={"kd": {"top1": between}})
  assert "| metric | kd: `no_ssl` - `alone` |" in text and "| top1 | +10.0 [10.0, 10.0] (n=2) |" \
      in text


def test_contrasts_within_runs():
  assert experiment_table.parse_contrasts(["gain=video/late_fusion2/accuracy-video/flow/knn/accuracy"]) \
      == {"gain": "video/late_fusion2/accuracy-video/flow/knn/accuracy"}
  with pytest.raises(ValueError, match="METRIC_A-METRIC_B"):
    experiment_table.parse_contrasts(["gain=eval/top1"])
  # split where both sides are the runs' metrics: a metric name may hold a '-'
  metrics = ["video/late_fusion2/accuracy", "video/flow/knn/accuracy", "eval/top1",
             "teacher_eval/top1", "video/a-b/acc", "video/c/acc"]
  assert experiment_table.split_contrast("g", "video/late_fusion2/accuracy-video/flow/knn/accuracy",
                                   metrics) == ("video/late_fusion2/accuracy",
                                                "video/flow/knn/accuracy")
  assert experiment_table.split_contrast("g", "video/a-b/acc-video/c/acc", metrics) == (
      "video/a-b/acc", "video/c/acc")
  assert experiment_table.split_contrast("s", "eval/top1 - teacher_eval/top1", metrics) == (
      "eval/top1", "teacher_eval/top1")
  with pytest.raises(ValueError, match="more than one way.*with spaces"):
    experiment_table.split_contrast("g", "a-b-c", ["a", "b-c", "a-b", "c"])
  with pytest.raises(ValueError, match="'eval/top1-nothing' is not two of the runs' metrics"):
    experiment_table.split_contrast("g", "eval/top1-nothing", metrics)
  results = {"default": [{"a": 0.9, "b": 0.8, "seed": 0}, {"a": 0.7, "b": 0.5, "seed": 1},
                         {"a": 0.6, "b": 0.5, "seed": 2}]}
  within, parts = experiment_table.contrasts_within_runs(results, {"g": "a-b"})
  assert parts == {"g": ("a", "b")}
  within = within["default"]["g"]
  assert within["mean"] == pytest.approx(0.4 / 3) and within["n"] == 3
  assert within["values"] == pytest.approx([0.1, 0.2, 0.1])
  text = experiment_table.markdown(experiment_table.aggregate(results, "a"), "t", None, None,
                             {"default": {"g": within}}, parts)
  assert "| g: `a` - `b` | +13.3 +- 5.8 [" in text
  # an arm without one of the metrics (no kNN head without DCL) has no entry; an arm where one run
  # lacks it is tabled over the runs that have both (n says how many); a typo fails
  partial, _ = experiment_table.contrasts_within_runs(
      {**results, "no_c": [{"a": 0.5}], "one_short": [{"a": 0.5, "b": 0.2}, {"a": 0.4}]},
      {"g": "a-b"})
  assert "g" in partial["default"] and partial["no_c"] == {}
  assert partial["one_short"]["g"]["n"] == 1 and partial["one_short"]["g"]["mean"] == \
      pytest.approx(0.3)
  with pytest.raises(ValueError, match="no run has both 'a' and 'c'"):
    experiment_table.contrasts_within_runs(results, {"g": "a - c"})


def test_metrics_are_never_the_runs_bookkeeping_and_one_run_has_no_spread():
  results = {"default": [{"eval/top1": 0.5, "seed": 0, "split": None, "variant": "default",
                          "config_arg": "a", "seconds": 12.0}]}
  assert list(experiment_table.aggregate(results, ".")["default"]) == ["eval/top1"]
  assert list(experiment_table.aggregate(results, "s$")["default"]) == []
  entry = experiment_table.aggregate(results, "top1")["default"]["eval/top1"]
  assert entry["n"] == 1 and np.isnan(entry["std"]) and np.isnan(entry["ci95"])
  assert "| eval/top1 | 50.0 (n=1) |" in experiment_table.markdown({"default": {"eval/top1": entry}}, "t")


def test_a_difference_that_rounds_to_zero_reads_zero_not_minus_zero():
  entry = {"mean": -0.0002, "std": 0.0002, "ci95": 0.0002, "n": 3}
  text = experiment_table.markdown({"default": {"eval/top1": entry}}, "t",
                             paired={"v": {"eval/top1": entry}})
  assert "-0.0" not in text
  assert "| eval/top1 | 0.0 +- 0.0 [0.0, 0.0] (n=3) |" in text
  assert "| eval/top1 | +0.0 [0.0, 0.0] (n=3) |" in text


def test_mean_std():
  assert experiment_table.mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
  mean, std = experiment_table.mean_std([5.0])
  assert mean == 5.0 and np.isnan(std)   # one value: no spread measured
