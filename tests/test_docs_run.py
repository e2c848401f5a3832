"""Runs, at smoke size, every command of docs/ that runs on the embedded synthetic data, as the page
writes it (extracted by tests/doc_commands.py, not copied here); tests/test_docs.py parses them all.

Which commands (`classify`): a `python -m darkjax.main` or `darkjax.tools.experiment` command whose
`--config` is a synthetic config (`configs/synthetic.py`, `configs/*_synthetic.py`) runs, together
with the `mkdir` / `cp` lines of its block that chain one run into the next. Every other `python -m`
command of README.md and docs/ is skipped by the first rule of `SKIPS` that matches it, which names
why; a command no rule matches fails `test_every_command_is_run_or_skipped_for_a_named_reason`, so a
new one cannot go unnoticed. README.md's main job, Export, Prediction and ONNX commands are skipped
here because .ci/run runs them verbatim; a main command whose config an experiment command of the
same page trains as its `default` variant is skipped as covered by that run.

The smoke-size transformation (`smoke_words`), the only change made to a command:
- a synthetic config's arg string gets `runlocal` and loses its step counts, dataset and batch
  sizes (`SIZE_ARGS`: given args win over runlocal's) and gets a `data_dir=DATA` placeholder, so
  runlocal's small dataset under the shared data root is used; a `--variant`'s args lose them too;
- `--seeds 0,1,2` becomes its first seed;
- every output location the block's commands name (`--workdir`, `--out`) moves under the test's
  tmp_path, and the same path elsewhere in the block (a later command's `pretrained=...`, the `cp`
  line) moves with it; experiment's own `{out}` / `{run}` stay for it to expand;
- `--config.compilation_cache=...` names the tests' shared compilation cache.
- an experiment command first runs as it is with `--check` (every arm's config resolves and
  changes exactly the fields it declares); then it trains the `default` arm and every arm that
  changes which phases run (`phases` among its `--changes`) or a field not in `UNIT_TESTED`
  (`smoke_arms`): an arm that only sets fields whose other values a unit test exercises (loss
  weights, switches, layer forms; the test is named beside the field) is not trained again at
  smoke size. `--pair`s naming an arm not trained go with it.
Each command runs in a subprocess (`sys.executable -m ...` from the repository root) with
`$DARKJAX_DATA` at one data root shared by the module, so each runlocal dataset is generated once.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re
import subprocess
import sys

import pytest

from doc_commands import REPO, SHELL, Command

SYNTHETIC_CONFIG = re.compile(r"configs/(\w+_)?synthetic\.py")
RUN_MODULES = ("darkjax.main", "darkjax.tools.experiment")
# Args a smoke run drops so runlocal's own values apply: step counts, dataset and batch sizes.
SIZE_ARGS = ("steps", "teacher_steps", "ssl_steps", "enhancer_steps", "labelled", "unlabelled",
             "train_videos", "batch")
OUTPUT_FLAGS = ("--workdir", "--out")
FILE_OPERATIONS = ("mkdir", "cp")
# The README sections whose commands .ci/run runs as written (its main job, Export, Prediction,
# ONNX).
README_RUN_BY_CI = ("Two commands on a fresh machine", "Export", "Prediction", "ONNX")
RUN = "run"
# Fields an arm may change and still not be trained at smoke size (`smoke_arms`): the unit test
# that exercises the field's other values (`file::test`, with a word of its source that names the
# setting there).
UNIT_TESTED = {
    "actlumos.kd_weight": (
        "tests/test_actlumos.py::test_student_objective_is_ce_plus_lambda_kd_kd",
        "kd_weight = 0.0"),
    "actlumos.kd_unlabelled": (
        "tests/test_actlumos.py::test_student_with_kd_unlabelled_distils_on_both_batches_and_ce_"
        "on_the_labelled", "kd_unlabelled=True"),
    "actlumos.stream_statistics": (
        "tests/test_actlumos.py::test_teacher_trains_each_stream_on_its_own_batch_statistics",
        "joint"),
    "model.kwargs.transformer_norm": (
        "tests/test_actlumos.py::test_pre_norm_transformer_is_darklights_bert", 'norm="pre"'),
    "dinet.domain_loss": (
        "tests/test_dinet.py::test_source_only_baseline_ignores_target_clips_and_lambda",
        '"dinet.domain_loss": False'),
    "dinet.domain_loss_weight": (
        "tests/test_dinet.py::test_eq4_objective_and_eqs_5_to_7_updates",
        '"dinet.domain_loss_weight": 1.0'),
    "model.kwargs.enhancer_kwargs.full_resolution": (
        "tests/test_enhancers.py::test_dtcm_enhancer_forms_share_parameters",
        "full_resolution=False"),
    "model.kwargs.attention_scale": (
        "tests/test_liftnet.py::test_fusion_is_eq_1_and_2_with_luminous_queries",
        "attention_scale=scale"),
    "model.kwargs.fourier_norm": (
        "tests/test_fourier.py::test_matches_the_papers_fft_mlp_residual_layer_norm_inverse_fft",
        '"tokens"'),
    "model.kwargs.pvit_norm": (
        "tests/test_liftnet.py::test_pvit_without_the_final_norm_passes_block_outputs_on",
        "pvit_norm=False"),
    "lift.freeze_teacher": (
        "tests/test_liftnet.py::test_the_teacher_copy_is_frozen_unless_told_otherwise",
        "freeze_teacher = False"),
    "lift.kd_weight": (
        "tests/test_liftnet.py::test_kd_loss_is_ce_plus_l1_on_fixed_tensors", "kd_weight=0.25"),
    "lift.kd_reduction": (
        "tests/test_liftnet.py::test_kd_loss_is_ce_plus_l1_on_fixed_tensors", 'reduction="mean"'),
    "optimizer.warmup_steps": (
        "tests/test_pretrained_runs.py::test_dtcm_starts_from_another_runs_backbone",
        "warmup_steps = 0"),
    "twostream.dcl": (
        "tests/test_twostream.py::test_without_dcl_the_loss_is_cross_entropy_only", "dcl=False"),
}


def flag_values(args: list[str], flag: str) -> list[str]:
  """The values of `--flag=value` and `--flag value` in `args`."""
  values = []
  for i, arg in enumerate(args):
    if arg.startswith(flag + "="):
      values.append(arg.split("=", 1)[1])
    elif arg == flag and i + 1 < len(args):
      values.append(args[i + 1])
  return values


def _configs(args: list[str]) -> list[str]:
  return [v for v in flag_values(args, "--config") if ".py" in v]


def _synthetic(args: list[str]) -> bool:
  configs = _configs(args)
  return bool(configs) and all(SYNTHETIC_CONFIG.fullmatch(c.split(":")[0]) for c in configs)


def _covering_experiment(command: Command, module: str, args: list[str]) -> Command | None:
  """An experiment command of the same page that runs `command`'s config unchanged (its `default`
  variant), for a main command with no `--config.` overrides."""
  if module != "darkjax.main" or any(a.startswith("--config.") for a in args):
    return None
  for other in SHELL:
    other_args = other.python_module
    if (other.page == command.page and other_args and other_args[0] == "darkjax.tools.experiment"
        and _synthetic(other_args) and _configs(other_args) == _configs(args)):
      return other
  return None


def smoke_config(value: str) -> str:
  """`configs/x.py:a=1,steps=9` -> `configs/x.py:a=1,runlocal` (a synthetic config's arg string)."""
  path, _, arg = value.partition(":")
  items = [i for i in arg.split(",") if i and i.partition("=")[0] not in SIZE_ARGS
           and i != "data_dir=DATA"]
  if "runlocal" not in items:
    items.append("runlocal")
  return f"{path}:{','.join(items)}"


def smoke_variant(value: str) -> str:
  """`NAME=ARGS` with the step counts and dataset sizes (`SIZE_ARGS`) taken out of ARGS."""
  name, _, args = value.partition("=")
  return f"{name}={','.join(i for i in args.split(',') if i.partition('=')[0] not in SIZE_ARGS)}"


def _smoke_arms(args: list[str]) -> tuple[list[str], set[tuple[str, str]], str]:
  """What an experiment command trains at smoke size: its smoke configs, its (variant, changes)
  pairs with the step counts and sizes taken out, its first seed."""
  changes = dict(v.partition("=")[::2] for v in flag_values(args, "--changes"))
  arms = {(smoke_variant(v), changes.get(v.partition("=")[0], ""))
          for v in flag_values(args, "--variant")}
  seeds = flag_values(args, "--seeds")
  return [smoke_config(c) for c in _configs(args)], arms, seeds[0].split(",")[0] if seeds else ""


def _covering_smoke_run(command: Command, module: str, args: list[str]) -> Command | None:
  """An earlier experiment command of the same page that, at smoke size, trains everything this
  experiment command trains (the same configs once the step counts and sizes are out, a superset
  of its variants, the same first seed): e.g. the same table at more steps with fewer arms."""
  if module != "darkjax.tools.experiment" or not _synthetic(args):
    return None
  configs, arms, seed = _smoke_arms(args)
  for other in SHELL:
    if other == command:
      return None
    other_args = other.python_module
    if (other.page == command.page and other_args and other_args[0] == module
        and _synthetic(other_args[1:])):
      other_configs, other_arms, other_seed = _smoke_arms(other_args[1:])
      if other_configs == configs and arms <= other_arms and other_seed == seed:
        return other
  return None


def _repeated_later(command: Command, module: str, args: list[str]) -> Command | None:
  """The same `darkjax.main` command, word for word, in a later block of the same page (a block
  that chains it into the next run repeats an earlier block's command): the last one runs."""
  if module != "darkjax.main":
    return None
  for other in SHELL:
    if (other.page == command.page and other.block > command.block
        and other.words == command.words and other.env == command.env):
      return other
  return None


# (reason, predicate(command, module, args)): the first that matches skips a command.
SKIPS = (
    ("not a darkjax command (virtualenv, the test suite)",
     lambda c, m, a: not m.startswith("darkjax")),
    ("several processes (--jax_distributed): tests/test_multihost.py runs that setup",
     lambda c, m, a: "--jax_distributed" in a),
    ("compiles for a compile-only target (fit --target): needs the aot extras; tests/test_aot.py",
     lambda c, m, a: m == "darkjax.tools.fit" and bool(flag_values(a, "--target"))),
    ("compares with PyTorch (bench --vs-torch): needs the torch extra",
     lambda c, m, a: "--vs-torch" in a),
    ("converts weights the user downloads",
     lambda c, m, a: m == "darkjax.convert"),
    ("prepares a dataset from the user's download (prepare --src)",
     lambda c, m, a: m == "darkjax.data.prepare" and bool(flag_values(a, "--src"))),
    ("a real dataset's config (ARID, InfAR, XD145, Dark-48, HMDB51, UCF101; their weights)",
     lambda c, m, a: bool(_configs(a)) and not _synthetic(a)),
    ("reads a dataset the user prepared under $DARKJAX_DATA",
     lambda c, m, a: any("$DARKJAX_DATA/" in arg for arg in a)),
    ("times a paper-size model on random clips (bench --model), minutes of CPU: a benchmark, "
     "not a run on the embedded data",
     lambda c, m, a: m == "darkjax.tools.bench" and bool(flag_values(a, "--model"))),
    ("README's main job, Export, Prediction and ONNX commands: .ci/run runs them as written",
     lambda c, m, a: c.page == "README.md" and c.heading in README_RUN_BY_CI),
    ("covered: an experiment command of the same page trains this config as its default variant",
     lambda c, m, a: _covering_experiment(c, m, a) is not None),
    ("covered: an earlier experiment command of the same page trains the same arms at smoke size",
     lambda c, m, a: _covering_smoke_run(c, m, a) is not None),
    ("covered: a later block of the same page runs the same main command",
     lambda c, m, a: _repeated_later(c, m, a) is not None),
)


def classify(command: Command) -> str | None:
  """RUN, the reason a `python -m` command is skipped, or None when no rule says."""
  module, *args = command.python_module
  for reason, applies in SKIPS:
    if applies(command, module, args):
      return reason
  if module in RUN_MODULES and _synthetic(args):
    return RUN
  return None


def trained_arms(command: Command) -> int:
  """How many configurations a run command trains: an experiment's default and each `--variant`,
  or one for `darkjax.main`."""
  module, *args = command.python_module
  return 1 + len(flag_values(args, "--variant")) if module == "darkjax.tools.experiment" else 1


PYTHON = [c for c in SHELL if c.python_module is not None]
RUNS = [c for c in PYTHON if classify(c) == RUN]
BLOCKS = sorted({(c.page, c.block) for c in RUNS})
# The configurations docs/ commands train, counted over every run command (two main commands
# folded into one experiment over the same arms keep the count): docs may only add to it.
MIN_TRAINED_ARMS = 34


# ---------------------------------------------------------------- the smoke-size transformation
def smoke_arms(args: list[str]) -> list[str]:
  """The `--variant` arms an experiment command trains at smoke size: those that change which
  phases run or a field `UNIT_TESTED` does not name (the module docstring)."""
  changes = {name: fields.split(",") for name, _, fields in
             (v.partition("=") for v in flag_values(args, "--changes"))}
  names = [v.partition("=")[0] for v in flag_values(args, "--variant")]
  return [n for n in names
          if not changes.get(n) or any(f == "phases" or f not in UNIT_TESTED for f in changes[n])]


def without_arms(words: list[str], keep: list[str]) -> list[str]:
  """An experiment command's words without the `--variant`, `--changes` and `--pair` of every arm
  not in `keep` (`default` is always kept)."""
  keep = set(keep) | {"default"}

  def kept(flag: str, value: str) -> bool:
    name, _, rest = value.partition("=")
    if flag == "--pair":
      return set(rest.split("-")) <= keep
    return flag not in ("--variant", "--changes") or name in keep

  out, i = [], 0
  while i < len(words):
    flag, eq, value = words[i].partition("=")
    if eq and flag.startswith("--"):
      if kept(flag, value):
        out.append(words[i])
      i += 1
    elif words[i] in ("--variant", "--changes", "--pair") and i + 1 < len(words):
      if kept(words[i], words[i + 1]):
        out += words[i:i + 2]
      i += 2
    else:
      out.append(words[i])
      i += 1
  return out


def output_map(commands: list[Command], root: pathlib.Path) -> dict[str, str]:
  """Every output location the commands name -> the same path under `root`."""
  outputs = {v for c in commands for flag in OUTPUT_FLAGS for v in flag_values(list(c.words), flag)}
  return {v: str(root / v.lstrip("/")) for v in outputs}


def relocate(word: str, outputs: dict[str, str]) -> str:
  """`word` with every output path (at its start or after `=`, `,`, `:`) moved by `outputs`."""
  if not outputs:
    return word
  pattern = "|".join(re.escape(v) for v in sorted(outputs, key=len, reverse=True))
  return re.sub(rf"(?<![^=,:])({pattern})(?=[/,]|$)", lambda m: outputs[m.group(1)], word)


def smoke_words(words: list[str], outputs: dict[str, str], cache: str) -> list[str]:
  """A command's words as the test runs them (the module docstring lists the changes)."""
  out = []
  for previous, word in zip([""] + words[:-1], words):
    flag, _, value = word.partition("=")
    if flag == "--config" and SYNTHETIC_CONFIG.match(value):
      word = f"{flag}={smoke_config(value)}"
    elif previous == "--config" and SYNTHETIC_CONFIG.match(word):
      word = smoke_config(word)
    elif previous == "--variant":
      word = smoke_variant(word)
    elif previous == "--seeds":
      word = word.split(",")[0]
    elif flag == "--config.compilation_cache":
      word = f"{flag}={cache}"
    out.append(relocate(word, outputs))
  return out


# ---------------------------------------------------------------- classification
def test_every_command_is_run_or_skipped_for_a_named_reason():
  unclassified = [f"{c.page}: {' '.join(c.words)}" for c in PYTHON if classify(c) is None]
  assert not unclassified, ("commands no rule of tests/test_docs_run.py classifies (run them or "
                            "add a skip rule naming why):\n" + "\n".join(unclassified))
  arms = [(trained_arms(c), " ".join(c.words)) for c in RUNS]
  assert sum(n for n, _ in arms) >= MIN_TRAINED_ARMS, arms


def test_every_unit_tested_field_names_a_test_that_sets_it_and_an_arm_that_changes_it():
  """`UNIT_TESTED`: each named test exists and its source has the word naming the setting; each
  field is one some docs arm changes (no stale entry)."""
  for field, (node, word) in UNIT_TESTED.items():
    path, _, name = node.partition("::")
    text = (REPO / path).read_text(encoding="utf-8")
    functions = {f.name: f for f in ast.walk(ast.parse(text)) if isinstance(f, ast.FunctionDef)}
    assert name in functions, f"UNIT_TESTED[{field!r}]: no {name} in {path}"
    function = functions[name]   # with its decorators (a parametrize naming the setting)
    first = min([function.lineno] + [d.lineno for d in function.decorator_list])
    source = "\n".join(text.splitlines()[first - 1:function.end_lineno])
    assert word in source, (field, node, word)
  changed = {f for c in RUNS for v in flag_values(list(c.python_module), "--changes")
             for f in v.partition("=")[2].split(",")}
  assert set(UNIT_TESTED) <= changed, set(UNIT_TESTED) - changed


def test_smoke_arms_train_phase_changes_and_fields_no_unit_test_names():
  args = ["--config", "configs/lift_synthetic.py", "--variant", "kd0=lift.kd_weight=0.0",
          "--changes", "kd0=lift.kd_weight", "--variant", "alone=kd=False",
          "--changes=alone=lift.kd,phases", "--variant", "new=model.kwargs.depth=2",
          "--changes", "new=model.kwargs.depth", "--variant", "both=a=1",
          "--changes", "both=lift.kd_weight,lift.other", "--pair", "p=kd0-alone",
          "--pair=q=alone-new", "--metrics", "top1", "--out", "o"]
  assert smoke_arms(args) == ["alone", "new", "both"]
  assert without_arms(args, smoke_arms(args)) == [
      "--config", "configs/lift_synthetic.py", "--variant", "alone=kd=False",
      "--changes=alone=lift.kd,phases", "--variant", "new=model.kwargs.depth=2",
      "--changes", "new=model.kwargs.depth", "--variant", "both=a=1",
      "--changes", "both=lift.kd_weight,lift.other", "--pair=q=alone-new", "--metrics", "top1",
      "--out", "o"]


def test_every_skip_rule_skips_something():
  used = {classify(c) for c in PYTHON}
  assert [reason for reason, _ in SKIPS if reason not in used] == []


def test_smoke_transformation():
  assert smoke_config("configs/lift_synthetic.py:teacher_steps=300,steps=150,seed=0") == \
      "configs/lift_synthetic.py:seed=0,runlocal"
  assert smoke_config("configs/synthetic.py:runlocal,steps=12,data_dir=DATA") == \
      "configs/synthetic.py:runlocal"
  assert smoke_config("configs/dinet_synthetic.py") == "configs/dinet_synthetic.py:runlocal"
  assert smoke_config("configs/actlumos_synthetic.py:labelled=20,unlabelled=100,batch=16,lr=0.01"
                      ) == "configs/actlumos_synthetic.py:lr=0.01,runlocal"
  outputs = output_map([Command("p", "", 0, ("python", "-m", "darkjax.main", "--workdir=runs/a/b")),
                        Command("p", "", 0, ("python", "-m", "x", "--out", "runs/a"))],
                       pathlib.Path("/t"))
  assert smoke_words(["--config=configs/dtcm_synthetic.py:steps=100,pretrained=runs/a/b",
                      "--seeds", "0,1,2", "--variant", "v=a={out}/x,enhancer_steps=3",
                      "--out", "runs/a", "--config.compilation_cache=/tmp/cc"], outputs, "/c") == [
      "--config=configs/dtcm_synthetic.py:pretrained=/t/runs/a/b,runlocal", "--seeds", "0",
      "--variant", "v=a={out}/x", "--out", "/t/runs/a", "--config.compilation_cache=/c"]
  assert relocate("runs/ab", outputs) == "runs/ab"   # only whole path components move


def test_a_longer_run_of_fewer_arms_is_covered_by_the_earlier_table(monkeypatch):
  def experiment(config, variants, out):
    words = ["python", "-m", "darkjax.tools.experiment", "--config", config, "--seeds", "0,1,2"]
    for name, args, changes in variants:
      words += ["--variant", f"{name}={args}", "--changes", f"{name}={changes}"]
    return Command("docs/p.md", "Evidence", 0, tuple(words + ["--out", out]))

  arms = [("kd0", "kd=False", "a.kd"), ("joint", "stats=joint", "a.stats")]
  table = experiment("configs/actlumos_synthetic.py:steps=200,lr=0.01", arms, "runs/t")
  longer = experiment("configs/actlumos_synthetic.py:steps=600,lr=0.01", arms[:1], "runs/l")
  other_lr = experiment("configs/actlumos_synthetic.py:steps=600,lr=0.05", arms[:1], "runs/o")
  other_changes = experiment("configs/actlumos_synthetic.py:steps=600,lr=0.01",
                             [("kd0", "kd=False", "a.kd,phases")], "runs/c")
  monkeypatch.setattr(sys.modules[__name__], "SHELL", [table, longer, other_lr, other_changes])
  covered = [_covering_smoke_run(c, c.python_module[0], c.python_module[1:])
             for c in (table, longer, other_lr, other_changes)]
  assert covered == [None, table, None, None]


# ---------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> pathlib.Path:
  """$DARKJAX_DATA of every run: runlocal's datasets are generated once for the module."""
  return tmp_path_factory.mktemp("docs_data")


def _check_outputs(module: str, args: list[str], stdout: str) -> None:
  if module == "darkjax.main":
    workdir = pathlib.Path(flag_values(args, "--workdir")[0])
    assert (workdir / "report.md").read_text(encoding="utf-8").startswith("# darkjax run")
    rows = [line for p in workdir.rglob("metrics.jsonl")
            for line in p.read_text(encoding="utf-8").splitlines()]
    assert rows, f"no metrics.jsonl rows under {workdir}"
    assert "final:" in stdout
  else:
    out = pathlib.Path(flag_values(args, "--out")[0])
    table = json.loads((out / "table.json").read_text(encoding="utf-8"))
    variants = ["default"] + [v.partition("=")[0] for v in flag_values(args, "--variant")]
    assert list(table) == variants
    empty = [v for v in variants if not table[v]]
    assert not empty, f"--metrics {flag_values(args, '--metrics')} tabled nothing for {empty}"
    header = "| metric | " + " | ".join(variants) + " |"
    assert header in (out / "table.md").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("page, block", BLOCKS, ids=[f"{p}#{b}" for p, b in BLOCKS])
def test_block_runs_at_smoke_size(page, block, data_root, tmp_path, main_env):
  commands = [c for c in SHELL if (c.page, c.block) == (page, block)]
  to_run = [c for c in commands if c.python_module is not None and classify(c) == RUN]
  outputs = output_map(to_run, tmp_path)
  env = dict(main_env, DARKJAX_DATA=str(data_root))
  cache = main_env["JAX_COMPILATION_CACHE_DIR"]
  for command in commands:
    if command.python_module is None and command.words[0] in FILE_OPERATIONS:
      words = smoke_words(list(command.words), outputs, cache)
      paths = [w for w in words[1:] if not w.startswith("-")]
      assert all(p.startswith(str(tmp_path)) for p in paths), f"{page}: {words} leaves tmp_path"
      subprocess.run(words, check=True)
    elif command in to_run:
      module, *args = smoke_words(list(command.python_module), outputs, cache)

      def run(args: list[str]) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                                env=dict(env, **dict(command.env)), capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, (f"{page}: {' '.join(command.words)}\nran as: {module} "
                                        f"{' '.join(args)}\n{result.stderr[-4000:]}")
        return result

      if module == "darkjax.tools.experiment":
        # every arm's config resolves and changes what it declares; the arms smoke_arms names train
        checked = run(args + ["--check"]).stdout
        arms = [v.partition("=")[0] for v in flag_values(args, "--variant")]
        assert all(f"- `{arm}`: " in checked for arm in arms), checked
        args = without_arms(args, smoke_arms(args))
      result = run(args)
      _check_outputs(module, args, result.stdout)
      # An experiment's arm resumes the default arm's phases it shares (configs differing only in
      # fields the phase does not read): that is no resume with other settings.
      assert "with other settings" not in result.stderr, result.stderr[-4000:]
