"""Runs a config over seeds x splits (x variants) and tables mean +- std, for every paper:

    python -m darkjax.tools.experiment --config configs/X.py[:ARGS] --seeds 0,1,2,3,4 \
        [--splits all|1,3] [--variant NAME=ARGS --changes NAME=FIELD[,FIELD] ...] \
        [--metrics REGEX] [--check] --out DIR

Each run (variant, split, seed) trains in DIR/<variant>/split<k>_seed<s> (`default` is the config
as given; a `--variant no_dcl=dcl=False` appends `dcl=False` to its args), whose `result.json`
caches its final scalar metrics (beside it, experiment_config.json: the resolved config it was
trained with), so re-running the command trains only what is missing; a stored run whose config
differs from what the command now gives (other args, config file or code) stops it, naming each
changed field, rather than mix old and new runs in one table; one that differs only in what its
evaluation measures (`input.data.eval_split=test` after choosing on `val`, the views,
`config.evals`) is evaluated again, its checkpoints as they are, and result.json and table.md name
the part each run evaluated. `--splits
all` runs every split of the dataset (`train1`/`test1` ... in the prepared manifest: ARID and
HMDB51 3, InfAR and XD145 5; a dataset with one `train`/`test` split runs once), setting
`split_index` of every data block of the config. The metrics matching `--metrics` are averaged
over all seeds and splits of a variant (mean +- sample std, ddof=1, and the 95% confidence
interval of the mean, Student's t; neither for a single run: nan in the JSON) into DIR/table.md
and DIR/table.json, with each variant's difference from `default` paired over the runs of the
same seed and split (mean and 95% interval; also DIR/paired.json); `--pair NAME=ARM_A-ARM_B` tables the same for any two arms (DIR/pairs.json;
e.g. a 2 x 2 factorial's KD effect without SSL, `kd=no_ssl-alone`). `--contrast NAME=A-B` tables,
per variant, metric A minus metric B of the same run (a two-stream run's late fusion minus its
flow net, a LIFT-Net run's student minus its teacher; DIR/contrasts.json), over the runs that have
both; `A - B` with spaces where the metric names hold a '-' themselves. `--metrics` matches metric
names only (never a run's seed, split or time); a seed given twice is refused.

A variant is an arm of a controlled comparison: `--changes NAME=FIELD,...` declares the config
fields it changes, and before anything trains every arm's resolved config (and the phases it
trains, with their steps) is compared with the default's (darkjax/tools/arms.py): an undeclared
difference stops the table, and table.md states what each arm changes. `--check` does only that.
A phase that an arm trains exactly as the default does (its config differs at most in fields that
phase does not read, from the same earlier phases: darkjax.tools.arms.shared_phases, e.g. the
teacher of a LIFT-Net `lift.kd_weight=0.0` arm) is not trained again: the arm's run starts from a
copy of the default run's finished phase directory of the same seed and split (recorded in the
run's shared.json and in table.md); `--no-share` trains every phase of every arm.

A variant's args may also set config fields by their dotted path (`lift.kd_weight=0.0`, as
`--config.lift.kd_weight=0.0` would), and may name another run's directory: `{out}` is DIR and
`{run}` the run's own sub-directory name (`seed<s>` or `split<k>_seed<s>`), so a variant can
start from what an earlier variant of the same seed and split trained, e.g. ActLumos's student
without SSL distilled from the default run's teacher:
`--variant no_ssl=ssl=False,teacher_init={out}/default/{run}/teacher`.
Runs go seed by seed (split by split), each seed's arms in the order given, `default` first, so
an interrupted table already pairs the arms of every seed it finished. It first prints how many
runs there are (and how many an earlier call stored); each run ends with a line naming it, its
time (`stored`: read back from an earlier call's result.json), its place among the runs and
about how long the rest take (each at its arm's mean time so far: an arm that shares phases with
the default, or trains more steps, keeps its own pace).

Each paper's evidence command in docs/papers/ is one call of it, e.g. 3D-DiNet's source-only
baseline against DANN:

    python -m darkjax.tools.experiment --config configs/dinet_synthetic.py --seeds 0,1,2 \
        --variant source_only=domain_loss=False --changes source_only=dinet.domain_loss --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections as mlc

from darkjax import config as config_lib
from darkjax import file_state
from darkjax import reports
from darkjax.tools import arms as arms_lib
from darkjax.tools import experiment_table as table_lib

RESULT_FILE = "result.json"
CONFIG_FILE = "experiment_config.json"   # the resolved config a stored result was trained with
# Fields that change nothing a run trains (run_cached sets checkpoint_every; progress_bar is the
# display), left out where a stored result's config is compared with the command's.
_RUNNER_FIELDS = ("progress_bar", "checkpoint_every")


class StaleResultError(RuntimeError):
  """A stored result was trained with another config than the run now asks for: its `workdir`
  and the `changed` fields' lines."""

  def __init__(self, workdir: str, changed: Sequence[str]):
    self.workdir, self.changed = workdir, list(changed)
    super().__init__(
        f"{os.path.join(workdir, RESULT_FILE)} was trained with another config than this "
        "command's run gives:\n" + config_lib.listed(self.changed) + f"\nGive another --out, or "
        f"delete {workdir} to train it again (a table that mixed the two would pair old runs with "
        "new ones).")


def stale_message(errors: Sequence[StaleResultError], out: str) -> str:
  """One message for every stored run of `out` that is stale: the runs grouped by what changed."""
  if len(errors) == 1:
    return str(errors[0])
  groups: dict[tuple[str, ...], list[str]] = {}
  for error in errors:
    groups.setdefault(tuple(error.changed), []).append(os.path.relpath(error.workdir, out))
  lines = [f"{len(errors)} stored runs of {out} were trained with another config than this "
           "command's runs give:"]
  for changed, runs in groups.items():
    lines += [f"  {', '.join(runs)}:"] + ["  " + line for line in config_lib.listed(changed)
                                          .splitlines()]
  return "\n".join(lines + [
      "Give another --out, or delete those runs' directories to train them again (a table that "
      "mixed the two would pair old runs with new ones)."])


def _config_fields(config: mlc.ConfigDict | dict, out: str | None) -> dict[str, Any]:
  """The config's fields as `config_lib.flat` gives them (JSON values), the experiment's --out
  written `{out}` (a moved --out keeps its results), those run_cached sets left out."""
  values = config_lib.json_values(config) if isinstance(config, mlc.ConfigDict) else config
  fields = config_lib.flat(values)
  if out:   # the whole path only (not /x/t1 inside /x/t10)
    root = re.compile(re.escape(os.path.abspath(out)) + r"(?=/|$)")
    fields = {k: root.sub("{out}", v) if isinstance(v, str) else v for k, v in fields.items()}
  return {k: v for k, v in fields.items() if k not in _RUNNER_FIELDS}


def stored_result(workdir: str) -> dict[str, Any] | None:
  """The run's stored result (its RESULT_FILE), or None."""
  path = os.path.join(workdir, RESULT_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def evaluation_changes(workdir: str, make_config: Callable[[], mlc.ConfigDict],
                       out: str | None = None) -> list[str]:
  """The lines of the evaluation settings (`darkjax.config.evaluation_field`: the part evaluated,
  its views, `config.evals`) in which `make_config()` differs from the config the stored run
  `workdir` was trained and evaluated with (its CONFIG_FILE; [] where it has none): such a run is
  evaluated again, not trained (`run_cached`). Any other changed field raises StaleResultError,
  naming each one: the run would have trained otherwise."""
  config_path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(config_path):   # results stored before the file existed: read as they are
    return []
  with open(config_path, encoding="utf-8") as f:
    trained = _config_fields(json.load(f), out)
  changed = config_lib.differences(trained, _config_fields(make_config(), out))
  lines = {key: f"  {key}: {was!r} (stored) -> {now!r} (now)"
           for key, (was, now) in changed.items()}
  if any(not config_lib.evaluation_field(key) for key in changed):
    raise StaleResultError(workdir, list(lines.values()))
  return list(lines.values())


def run_cached(workdir: str, make_config: Callable[[], mlc.ConfigDict],
               kept_metrics: Sequence[str] | None, out: str | None = None,
               **info: Any) -> dict[str, Any]:
  """Trains `make_config()` in `workdir`, or returns its stored result (`stored_result`) where
  the config it was trained with is `make_config()` (any other changed field but the evaluation's
  raises StaleResultError, `evaluation_changes`); a stored run with other evaluation settings is
  evaluated again, its checkpoints as they are (the Trainer's rerun of a finished run). Returns
  the final `kept_metrics` (None: every scalar metric but per-class ones) plus `info`, the part
  it evaluated (`evaluated_on`) and the wall time of its training in seconds."""
  stored = stored_result(workdir)
  if stored is not None and not evaluation_changes(workdir, make_config, out):
    return stored
  trained = stored.get("seconds") if stored is not None else None   # kept when evaluated again
  from darkjax import phases  # pylint: disable=import-outside-toplevel
  config = make_config()
  config.checkpoint_every = config.total_steps   # only the final state: keeps the runs fast
  config.lock()
  start = time.time()
  # each phase's bar on a terminal, cleared when it ends: the table's progress is one line a run
  results = phases.run_phases(config, workdir, transient_bar=True)
  if kept_metrics is None:
    kept_metrics = sorted(k for k, v in results.items() if isinstance(v, (float, int))
                          and not isinstance(v, bool) and "per_class" not in k)
  missing = [k for k in kept_metrics if k not in results]
  if missing:
    raise RuntimeError(f"{workdir}: the run ended without the final evaluation ({missing} "
                       f"missing; it was probably already complete without {RESULT_FILE}). "
                       f"Delete {workdir} and re-run.")
  result = {k: float(results[k]) for k in kept_metrics}
  result.update(info, evaluated_on=reports.evaluated_on(config),
                seconds=trained if trained is not None else round(time.time() - start, 1))
  file_state.atomic_write_json(os.path.join(workdir, CONFIG_FILE), config_lib.json_values(config))
  # Last: a torn result.json would stop every later re-run, and one without its config beside it
  # would be read unchecked.
  file_state.atomic_write_json(os.path.join(workdir, RESULT_FILE), result)
  return result


SHARED_FILE = "shared.json"


def share_phases(run_dir: str, source_dir: str, config: mlc.ConfigDict,
                 phases: Sequence[str]) -> dict[str, str]:
  """Copies each of `phases` (finished in the run `source_dir`) into the run `run_dir` (a run not
  yet stored); returns {phase: the directory it came from}, also written to run_dir/shared.json.
  A copy lands under its final name only when complete, so an interrupted one is redone."""
  import shutil  # pylint: disable=import-outside-toplevel
  from darkjax import task as task_lib  # pylint: disable=import-outside-toplevel
  if not os.path.exists(os.path.join(source_dir, RESULT_FILE)):
    raise RuntimeError(f"{run_dir} shares phases {list(phases)} with {source_dir}, which has not "
                       f"finished (no {RESULT_FILE}); re-run the command, or pass --no-share")
  copied = {}
  for name in phases:
    sub = task_lib.find_phase(config, name).workdir("", config)
    target, source = os.path.join(run_dir, sub), os.path.join(source_dir, sub)
    # Copied again even where an interrupted call copied it: the default run may have been
    # trained again since (its stored result was stale).
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    copied[name] = source
  file_state.atomic_write_json(os.path.join(run_dir, SHARED_FILE), copied)
  return copied


def duration(seconds: float) -> str:
  """`45 s`, `12 min`, `3 h 05 min`."""
  seconds = round(seconds)
  if seconds < 60:
    return f"{seconds} s"
  minutes = round(seconds / 60)
  if minutes < 60:
    return f"{minutes} min"
  return "{} h {:02d} min".format(*divmod(minutes, 60))


def time_left(plan: Sequence[tuple[Any, int, str]], done: int,
              results: dict[str, list[dict[str, Any]]],
              stored: Sequence[bool] = ()) -> float | None:
  """Seconds the runs of `plan` after its first `done` should take: each one as long as the mean
  of its arm's runs so far (an arm that shares phases with the default, or trains more steps,
  takes its own time), an arm without one as the mean of all, a run an earlier call stored
  (`stored[i]`) nothing; None before any run is timed."""
  seconds = {arm: [r["seconds"] for r in rows] for arm, rows in results.items() if rows}
  every = [t for times in seconds.values() for t in times]
  if not every:
    return None
  overall = sum(every) / len(every)
  return sum(0.0 if index < len(stored) and stored[index] else
             sum(seconds[arm]) / len(seconds[arm]) if arm in seconds else overall
             for index, (_, _, arm) in enumerate(plan) if index >= done)


def progress_line(plan: Sequence[tuple[Any, int, str]], index: int, result: dict[str, Any],
                  stored: Sequence[bool], results: dict[str, list[dict[str, Any]]],
                  again: Sequence[bool] = ()) -> str:
  """What a finished run prints: arm, split (where the table has splits), seed, its time
  (`stored[index]`: read from its result.json, trained by an earlier call; `again[index]`: and
  evaluated again by this one), its place in the plan and the time the runs still to train
  should take."""
  split, seed, variant = plan[index]
  how = (" (stored, evaluated again)" if index < len(again) and again[index] else
         " (stored)" if stored[index] else "")
  took = f"{duration(result['seconds'])}{how}"
  left = time_left(plan, index + 1, results, stored)
  rest = ("done" if index + 1 == len(plan) else
          f"about {duration(left)} left" if left is not None else "")
  where = f"split {split} " if split is not None else ""
  return (f"{variant} {where}seed {seed}: {took}; run {index + 1} of {len(plan)}"
          + (f", {rest}" if rest else ""))


# ---------------------------------------------------------------- seeds x splits x variants
DEFAULT_METRICS = r"(top1|/accuracy|/mean_precision)$"


def parse_variants(items: Sequence[str]) -> dict[str, str]:
  """`NAME=ARGS` strings -> {name: args}; `default` (no extra args) comes first."""
  variants = {"default": ""}
  for item in items:
    name, sep, args = item.partition("=")
    if not sep or not re.fullmatch(r"[\w.-]+", name):
      raise ValueError(f"--variant {item!r}: expected NAME=ARGS, e.g. no_dcl=dcl=False")
    if name == "default":
      raise ValueError(f"--variant {item!r}: 'default' names the config as given; give the "
                       "variant another name")
    if name in variants:
      raise ValueError(f"--variant {name!r} given twice")
    variants[name] = args
  return variants


def split_overrides(arg: str) -> tuple[str, dict[str, Any]]:
  """A variant's `kd=True,lift.kd_weight=0.0` -> (config args "kd=True", {dotted field: value});
  values as `darkjax.config.override_value` reads them."""
  args, overrides = [], {}
  for item in (a.strip() for a in arg.split(",")):
    name, sep, raw = item.partition("=")
    if sep and "." in name:
      overrides[name.strip()] = config_lib.override_value(raw.strip())
    elif item:
      args.append(item)
  return ",".join(args), overrides


def arm_config(path: str, arg: str) -> mlc.ConfigDict:
  """The config of `path` with an arm's args and field overrides."""
  args, overrides = split_overrides(arg)
  config = config_lib.load(path, args or None)
  return config_lib.apply_overrides(config, overrides) if overrides else config


def run_name(seed: int, split: int | None) -> str:
  """A run's sub-directory of DIR/<variant>: `seed<s>`, or `split<k>_seed<s>` with a split."""
  return f"seed{seed}" if split is None else f"split{split}_seed{seed}"


def expand(args: str, out: str, run: str) -> str:
  """`{out}` -> DIR and `{run}` -> the run's sub-directory name in a variant's args."""
  return args.replace("{out}", out).replace("{run}", run)


def dataset_splits(config: mlc.ConfigDict) -> list[int]:
  """The split indices of the config's dataset (`train1`, `train2`, ... in its manifest); [0] for
  a dataset with one train / test split."""
  from darkjax.data import prepared  # pylint: disable=import-outside-toplevel
  manifest = prepared.open_dataset(config.input.data).manifest
  found = sorted(int(m.group(1)) for name in manifest["splits"]
                 if (m := re.fullmatch(r"train(\d+)", name)))
  return found or [0]


def with_run(config: mlc.ConfigDict, seed: int, split: int | None) -> mlc.ConfigDict:
  """`config` for the run of `seed` on dataset split `split` (None: the config's own): every
  dataset block reads that split, and so does ActLumos's `ssl` (the train<split> of its unlabelled
  sets, as the configs' `split=K` arg sets it: train1 of ARID holds split 2's test clips)."""
  config.seed = seed
  if split is not None:
    for block in config_lib.data_blocks(config):
      block.split_index = split
    if "ssl" in config and "split_index" in config.ssl:
      config.ssl.split_index = split
  return config


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m darkjax.tools.experiment", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="configs/X.py[:ARGS]")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
  parser.add_argument("--splits", default="",
                      help="all | comma-separated split indices (default: the config's own)")
  parser.add_argument("--variant", action="append", default=[],
                      help="NAME=ARGS appended to the config args, e.g. no_dcl=dcl=False")
  parser.add_argument("--changes", action="append", default=[],
                      help="NAME=FIELD[,FIELD...]: the config fields variant NAME changes "
                      "(checked before training; 'phases' for the phases and steps it trains)")
  parser.add_argument("--check", action="store_true",
                      help="check what each variant changes and stop, training nothing")
  parser.add_argument("--metrics", default=DEFAULT_METRICS,
                      help=f"regex of the metrics tabled (default {DEFAULT_METRICS!r})")
  parser.add_argument("--contrast", action="append", default=[],
                      help="NAME=METRIC_A-METRIC_B: tabled per variant over its runs, a minus b "
                      "of the same run (e.g. a fused prediction minus one stream's)")
  parser.add_argument("--pair", action="append", default=[],
                      help="NAME=ARM_A-ARM_B: also table arm a minus arm b, paired by seed and "
                      "split (e.g. kd=no_ssl-alone)")
  parser.add_argument("--no-share", action="store_true",
                      help="train every phase of every arm, even those an arm trains exactly as "
                      "the default does")
  parser.add_argument("--out", required=True, help="run directories, table.md and table.json")
  args = parser.parse_args(argv)
  path, _, base_arg = args.config.partition(":")
  try:
    seeds = _integers("--seeds", args.seeds)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
      raise ValueError(f"--seeds {args.seeds}: seed {', '.join(map(str, repeated))} given more "
                       "than once (a seed's run is one run: counting it twice would narrow the "
                       "intervals)")
    variants = parse_variants(args.variant)
    declared = arms_lib.parse_changes(args.changes)
    contrasts = table_lib.parse_contrasts(args.contrast)
    pairs = table_lib.parse_pairs(args.pair, list(variants))
    explicit = _integers("--splits", args.splits) if args.splits not in ("", "all") else None
    try:
      re.compile(args.metrics)
    except re.error as error:
      raise ValueError(f"--metrics {args.metrics!r} is not a regular expression: {error}") from None
  except ValueError as error:
    parser.error(str(error))
  if not seeds:
    parser.error("--seeds names no seed")
  first = run_name(seeds[0], explicit[0] if explicit else None)
  out = os.path.abspath(args.out)   # what `{out}` stands for: the same from any directory
  arm_args = {v: expand(",".join(a for a in (base_arg, extra) if a), out, first)
              for v, extra in variants.items()}
  try:   # a missing config file, or an arm's arg string it does not take, fails before any run
    config_lib.load_module(path)
    configs = {v: arm_config(path, arg) for v, arg in arm_args.items()}
  except config_lib.ConfigError as error:
    print(f"darkjax.tools.experiment: {error}", file=sys.stderr)
    return 2
  default_config = configs.pop("default")
  try:
    changes = arms_lib.check(default_config, configs, declared)
  except arms_lib.ArmsError as error:
    print(f"darkjax.tools.experiment: {error}", file=sys.stderr)
    return 2
  shared = {} if args.no_share else \
      {v: arms_lib.shared_phases(default_config, config) for v, config in configs.items()}
  described = arms_lib.describe(changes, shared)
  if args.check:
    print("\n".join(described) or "one arm: nothing to compare")
    return 0
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel
  conv.configure_cpu_flags()
  arm_splits: dict[str, list[int | None]] = {}
  for variant, extra in variants.items():
    arg = ",".join(a for a in (base_arg, extra) if a)
    splits = dataset_splits(arm_config(path, arg)) if args.splits == "all" else explicit
    if explicit:
      known = dataset_splits(arm_config(path, arg))
      if any(split not in known for split in explicit):
        print(f"darkjax.tools.experiment: --splits {args.splits}: the dataset of arm {variant!r} "
              f"has splits {known} (its manifest's train<k> / test<k>; 0: its one train / test "
              "split); give some of those, or --splits all", file=sys.stderr)
        return 2
    arm_splits[variant] = list(splits or [None])
  order = list(dict.fromkeys(split for splits in arm_splits.values() for split in splits))
  results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
  # Seed by seed, every arm of a seed before the next seed: an interrupted table pairs the arms of
  # each finished seed, and an arm's shared phases come from its seed's default run.
  plan = [(split, seed, variant) for split in order for seed in seeds for variant in variants
          if split in arm_splits[variant]]
  # Which runs an earlier call finished (their result.json): no run of this call writes another's.
  stored = [os.path.exists(os.path.join(args.out, variant, run_name(seed, split), RESULT_FILE))
            for split, seed, variant in plan]
  print(f"{len(plan)} runs ({len(variants)} arm{'s' if len(variants) > 1 else ''} x "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
        + (f" x {len(order)} splits" if len(order) > 1 else "") + ")"
        + (f", {sum(stored)} of them stored in {args.out}" if any(stored) else ""), flush=True)

  def run_of(split, seed, variant) -> tuple[str, str, Callable[[], mlc.ConfigDict]]:
    """The run's directory, config arg and config."""
    name = run_name(seed, split)
    run_arg = expand(",".join(a for a in (base_arg, variants[variant]) if a), out, name)
    return (os.path.join(args.out, variant, name), run_arg,
            lambda: with_run(arm_config(path, run_arg), seed, split))

  # Every stored run is checked before any is trained: a stale one found late would have let the
  # runs before it train, and the message names them all.
  stale, other_evaluation = [], {}   # {plan index: a stored run's evaluation changes}
  for index, item in enumerate(plan):
    if stored[index]:
      run_dir, _, make_config = run_of(*item)
      try:
        other_evaluation[index] = evaluation_changes(run_dir, make_config, args.out)
      except StaleResultError as error:
        stale.append(error)
  if stale:
    print(f"darkjax.tools.experiment: {stale_message(stale, args.out)}", file=sys.stderr)
    return 2
  again = [bool(other_evaluation.get(index)) for index in range(len(plan))]
  if any(again):   # their checkpoints evaluated with this command's settings, nothing trained
    first = again.index(True)
    print(f"{sum(again)} stored run{'s' if sum(again) > 1 else ''} evaluated again: this "
          "command evaluates them with other settings, e.g. "
          f"{os.path.relpath(run_of(*plan[first])[0], args.out)}:\n"
          + config_lib.listed(other_evaluation[first]), flush=True)
  for index, (split, seed, variant) in enumerate(plan):
    run_dir, run_arg, make_config = run_of(split, seed, variant)
    if shared.get(variant) and not stored[index]:
      share_phases(run_dir, os.path.join(args.out, "default", run_name(seed, split)),
                   make_config(), shared[variant])
    result = run_cached(run_dir, make_config, None, out=args.out, seed=seed, split=split,
                        variant=variant, config_arg=run_arg)
    results[variant].append(result)
    print(progress_line(plan, index, result, stored, results, again), flush=True)
  table = table_lib.aggregate(results, args.metrics)
  if not any(table.values()):   # nothing to table: the earlier table stays
    print(f"darkjax.tools.experiment: --metrics {args.metrics!r} matches none of the runs' "
          f"metrics: {table_lib.metric_names(results)}", file=sys.stderr)
    return 2
  paired = table_lib.paired_differences(results, table)
  between = {name: table_lib.arm_difference(results, table, a, b)
             for name, (a, b) in pairs.items()}
  try:
    within, contrasts = table_lib.contrasts_within_runs(results, contrasts)
  except ValueError as error:
    print(f"darkjax.tools.experiment: {error}", file=sys.stderr)
    return 2
  parts = sorted({str(r.get("evaluated_on", "?")) for rows in results.values() for r in rows})
  title = (f"`{args.config}`, seeds {seeds}, splits {args.splits or 'as configured'}, evaluated "
           f"on {', '.join(parts)}: mean +- sample std [95% CI of the mean] over runs, in %.")
  os.makedirs(args.out, exist_ok=True)
  file_state.atomic_write_json(os.path.join(args.out, "table.json"), table)
  for name, value, wanted in (("paired.json", paired, paired), ("contrasts.json", within, contrasts),
                              ("pairs.json", between, pairs)):
    if wanted:
      file_state.atomic_write_json(os.path.join(args.out, name), value)
    elif os.path.exists(os.path.join(args.out, name)):   # an earlier call's, not this table's
      os.remove(os.path.join(args.out, name))
  # what each arm reused, as its runs did (a run an earlier call stored may have trained all)
  described = arms_lib.describe(changes, reused_phases(args.out, plan))
  table_lib.write_table(table_lib.markdown(table, title, paired, described, within, contrasts,
                                           pairs, between), os.path.join(args.out, "table.md"))
  return 0


def _integers(flag: str, text: str) -> list[int]:
  try:
    return [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise ValueError(f"{flag} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def reused_phases(out: str, plan: Sequence[tuple[Any, int, str]]) -> dict[str, list[str]]:
  """{arm: the phases every one of its runs reused from the default arm's (their SHARED_FILE)}."""
  found: dict[str, list[list[str]]] = {}
  for split, seed, variant in plan:
    path = os.path.join(out, variant, run_name(seed, split), SHARED_FILE)
    shared: list[str] = []
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        shared = list(json.load(f))   # in the order the phases run
    found.setdefault(variant, []).append(shared)
  return {variant: [p for p in runs[0] if all(p in run for run in runs)]
          for variant, runs in found.items()}


def cli() -> int:
  """`main` as a command: a run stopped by Ctrl-C or SIGTERM (its checkpoint saved) is one line
  and exit code 130 / 0, as darkjax.main's; the rerun resumes it, the finished runs stored."""
  from darkjax.preemption import Preempted  # pylint: disable=import-outside-toplevel
  try:
    return main()
  except Preempted as stop:
    print(f"darkjax.tools.experiment: {stop}; the table's finished runs are stored",
          file=sys.stderr)
    return 130 if stop.interrupted else 0


if __name__ == "__main__":
  sys.exit(cli())
