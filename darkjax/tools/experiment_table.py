"""The table of a `darkjax.tools.experiment` command: each arm's metrics over its runs (mean,
sample std, the 95% confidence interval of the mean by Student's t), each arm minus `default` and
the `--pair` differences paired by seed and split, the `--contrast`s within runs, and table.md's
Markdown of them."""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (nan for one value: no spread is measured)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def ci95(values: Sequence[float]) -> float:
  """Half-width of the 95% confidence interval of the mean (Student's t, n - 1 degrees of
  freedom); nan for fewer than 2 values."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  n = len(values)
  if n < 2:
    return float("nan")
  return float(stats.t.ppf(0.975, n - 1) * mean_std(values)[1] / n ** 0.5)


def write_table(table: str, out: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(table)
  print(table)
  print(f"table written to {out}")
  return out


# What a stored result holds beside its metrics (`run_cached`'s info and its wall time): never
# tabled, whatever `--metrics` matches.
RUN_FIELDS = ("seed", "split", "variant", "config_arg", "evaluated_on", "seconds")


def run_metrics(run: dict[str, Any]) -> list[str]:
  """The metric names of a stored result (its fields but `RUN_FIELDS`)."""
  return [k for k in run if k not in RUN_FIELDS]


def metric_names(results: dict[str, list[dict[str, Any]]]) -> list[str]:
  """Every metric name of the runs of every variant, sorted (what an error lists)."""
  return sorted({k for runs in results.values() for run in runs for k in run_metrics(run)})


def aggregate(results: dict[str, list[dict[str, Any]]], pattern: str) -> dict[str, Any]:
  """{variant: {metric: {mean, std, n, values}}} over the metrics matching `pattern`."""
  matcher = re.compile(pattern)
  table: dict[str, Any] = {}
  for variant, runs in results.items():
    metrics = sorted({k for run in runs for k in run_metrics(run) if matcher.search(k)})
    table[variant] = {}
    for metric in metrics:
      values = [float(run[metric]) for run in runs if metric in run]
      mean, std = mean_std(values)
      table[variant][metric] = {"mean": mean, "std": std, "ci95": ci95(values), "n": len(values),
                                "values": values}
  return table


def arm_difference(results: dict[str, list[dict[str, Any]]], table: dict[str, Any], arm: str,
                   base: str) -> dict[str, Any]:
  """{metric: {mean, ci95, n}}: `arm`'s metric minus `base`'s, over runs of the same seed and
  split (a paired comparison: seed-to-seed spread common to both cancels)."""
  by_run = {(r.get("seed"), r.get("split")): r for r in results.get(base, [])}
  out: dict[str, Any] = {}
  for metric in table.get(arm, {}):
    diffs = [float(r[metric]) - float(by_run[key][metric]) for r in results.get(arm, [])
             if (key := (r.get("seed"), r.get("split"))) in by_run and metric in r
             and metric in by_run[key]]
    if diffs:
      out[metric] = {"mean": mean_std(diffs)[0], "ci95": ci95(diffs), "n": len(diffs)}
  return out


def paired_differences(results: dict[str, list[dict[str, Any]]],
                       table: dict[str, Any]) -> dict[str, Any]:
  """{variant: {metric: {mean, ci95, n}}}: each variant minus `default` (`arm_difference`)."""
  return {variant: arm_difference(results, table, variant, "default")
          for variant in results if variant != "default"}


def parse_pairs(items: Sequence[str], arms: Sequence[str]) -> dict[str, tuple[str, str]]:
  """`NAME=ARM_A-ARM_B` strings -> {name: (arm a, arm b)}, both arms among `arms` (`default` and
  the variants): the table's differences between two arms other than `default`, e.g. a 2 x 2
  factorial's second factor at the first's other level."""
  out: dict[str, tuple[str, str]] = {}
  for item in items:
    name, sep, expression = item.partition("=")
    if not sep or "-" not in expression or not re.fullmatch(r"[\w.]+", name):
      raise ValueError(f"--pair {item!r}: expected NAME=ARM_A-ARM_B, e.g. kd=no_ssl-alone")
    # An arm's name may hold a '-': split where both sides name arms.
    splits = [(expression[:i], expression[i + 1:]) for i, c in enumerate(expression)
              if c == "-" and expression[:i] in arms and expression[i + 1:] in arms]
    if len(splits) != 1:
      raise ValueError(f"--pair {item!r}: {expression!r} is not two arms joined by '-'; the arms "
                       f"are {list(arms)}")
    if name in out:
      raise ValueError(f"--pair {name!r} given twice")
    out[name] = splits[0]
  return out


def parse_contrasts(items: Sequence[str]) -> dict[str, str]:
  """`NAME=METRIC_A-METRIC_B` strings -> {name: expression}; a metric is a full metric name
  (`eval/top1`, `video/flow/knn/accuracy`). The expression is split into its two metrics when the
  runs' metric names are known (`split_contrast`)."""
  out: dict[str, str] = {}
  for item in items:
    name, sep, expression = item.partition("=")
    if not sep or "-" not in expression.strip("- ") or not re.fullmatch(r"[\w.-]+", name):
      raise ValueError(f"--contrast {item!r}: expected NAME=METRIC_A-METRIC_B, e.g. "
                       "fusion_gain=video/late_fusion2/accuracy-video/flow/knn/accuracy")
    if name in out:
      raise ValueError(f"--contrast {name!r} given twice")
    out[name] = expression
  return out


def split_contrast(name: str, expression: str, metrics: Sequence[str]) -> tuple[str, str]:
  """(metric a, metric b) of a `--contrast` expression: split at its one ` - `, or, without
  spaces, at the `-` that leaves two of `metrics` (names that hold a `-` themselves)."""
  if " - " in expression:
    parts = [p.strip() for p in expression.split(" - ")]
    if len(parts) == 2 and all(parts):
      return parts[0], parts[1]
  else:
    splits = [(expression[:i], expression[i + 1:]) for i, c in enumerate(expression)
              if c == "-" and expression[:i] in metrics and expression[i + 1:] in metrics]
    if len(splits) == 1:
      return splits[0]
    if len(splits) > 1:
      raise ValueError(f"--contrast {name}: {expression!r} splits into two metrics more than one "
                       "way; write it with spaces around the minus, 'METRIC_A - METRIC_B'")
  raise ValueError(f"--contrast {name}: {expression!r} is not two of the runs' metrics joined by "
                   f"'-'; their metrics: {sorted(metrics)}")


def contrasts_within_runs(results: dict[str, list[dict[str, Any]]],
                          contrasts: dict[str, str]) -> tuple[dict[str, Any],
                                                              dict[str, tuple[str, str]]]:
  """({variant: {contrast: {mean, std, ci95, n, values}}}, {contrast: (metric a, metric b)}):
  metric a minus metric b of the same run (e.g. a fused prediction minus one stream's, both from
  one trained model), over the variant's runs that have both (n counts them, as `aggregate`'s
  does); a variant none of whose runs has both (an arm without that head) has no entry. A
  contrast that no run has, or that names no two metrics, raises naming the runs' metrics."""
  known = metric_names(results)
  out: dict[str, Any] = {variant: {} for variant in results}
  parts: dict[str, tuple[str, str]] = {}
  for name, expression in contrasts.items():
    a, b = parts[name] = split_contrast(name, expression, known)
    for variant, runs in results.items():
      values = [float(run[a]) - float(run[b]) for run in runs if a in run and b in run]
      if values:
        mean, std = mean_std(values)
        out[variant][name] = {"mean": mean, "std": std, "ci95": ci95(values), "n": len(values),
                              "values": values}
    if not any(name in entries for entries in out.values()):
      raise ValueError(f"--contrast {name}: no run has both {a!r} and {b!r}; their metrics: "
                       f"{known}")
  return out, parts


def _points(fraction: float, signed: bool = False) -> str:
  """A fraction in points (%), one decimal; a value that rounds to zero reads 0.0, never -0.0."""
  return f"{round(100 * fraction, 1) + 0.0:{'+' if signed else ''}.1f}"


def _interval(entry: dict[str, Any]) -> str:
  low, high = entry["mean"] - entry["ci95"], entry["mean"] + entry["ci95"]
  return "" if entry["ci95"] != entry["ci95"] else f" [{_points(low)}, {_points(high)}]"


def markdown(table: dict[str, Any], title: str, paired: dict[str, Any] | None = None,
             changes: list[str] | None = None, within: dict[str, Any] | None = None,
             contrasts: dict[str, tuple[str, str]] | None = None,
             pairs: dict[str, tuple[str, str]] | None = None,
             between: dict[str, Any] | None = None) -> str:
  """Metrics as rows, variants as columns, cells "mean +- std [95% CI]" in % (n runs each); then
  each variant minus default, paired; the `--pair` differences (`between`: {pair name: {metric:
  entry}}); the within-run contrasts; and what each variant changes."""
  variants = list(table)
  metrics = sorted({m for v in variants for m in table[v]})

  def row(label: str, columns: Sequence[str], entry: Callable[[str], Any],
          signed: bool = False, spread: bool = True) -> str:
    cells = []
    for column in columns:
      e = entry(column)
      cells.append("" if e is None else _points(e["mean"], signed)
                   + (f" +- {_points(e['std'])}" if spread and e["std"] == e["std"] else "")
                   + f"{_interval(e)} (n={e['n']})")
    return f"| {label} | " + " | ".join(cells) + " |"

  def differences(heading: str, entries: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """A table of paired differences: one column per key of `entries` ({metric: entry})."""
    return (["", f"{heading}, paired by seed and split: mean [95% CI], in points.", "",
             "| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
            + [row(m, list(entries), lambda k, m=m: entries[k].get(m), signed=True, spread=False)
               for m in metrics])

  lines = [title, "", "| metric | " + " | ".join(variants) + " |",
           "|---|" + "---|" * len(variants)]
  lines += [row(m, variants, lambda v, m=m: table[v].get(m)) for m in metrics]
  if paired:
    lines += differences("Each variant minus `default`", paired, list(paired))
  if pairs:
    lines += differences("Between two arms, a minus b", between,
                         [f"{n}: `{a}` - `{b}`" for n, (a, b) in pairs.items()])
  if within and contrasts:
    variants_with = [v for v in variants if within.get(v)]
    lines += ["", "Within each run, metric a minus metric b (one trained model), in points: "
              "mean +- std [95% CI].", "", "| contrast | " + " | ".join(variants_with) + " |",
              "|---|" + "---|" * len(variants_with)]
    lines += [row(f"{name}: `{a}` - `{b}`", variants_with,
                  lambda v, name=name: within[v].get(name), signed=True)
              for name, (a, b) in contrasts.items()]
  if changes:
    lines += ["", "What each variant changes (resolved config and trained phases):", "", *changes]
  return "\n".join(lines) + "\n"
