"""Every config in configs/ builds (with each documented arg variant), locks, and names a trainer
that accepts it; arg parsing rejects unknown names."""

from __future__ import annotations

import glob
import importlib
import os
import re

import jax.numpy as jnp
import pytest

from configs import common
from darkjax import config as config_lib
from darkjax import targets, train
from darkjax.layers import remat
from darkjax import task as task_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# common.py and <paper>_base.py hold shared builders; every other file is one paper x dataset.
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                      if os.path.basename(p) not in ("__init__.py", "common.py")
                      and not p.endswith("_base.py"))
REQUIRED = ("trainer", "seed", "input", "model", "optimizer", "total_steps", "mesh", "sharding",
            "log_every", "eval_every", "checkpoint_every", "keep_checkpoints")


def _module(path):
  return importlib.import_module(f"configs.{os.path.basename(path)[:-3]}")


def _documented_args(module) -> list[str]:
  """Arg strings of the docstring's example commands for this file (`--config=configs/x.py:ARGS`;
  commands naming another config file are that file's to check)."""
  name = module.__name__.rsplit(".", 1)[-1]
  found = re.findall(rf"--config=configs/{name}\.py:([\w=.,/-]+)", module.__doc__ or "")
  return [None] + found


def test_there_are_configs():
  assert any(p.endswith("synthetic.py") for p in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_builds_locks_and_names_a_trainer(path):
  module = _module(path)
  assert "python -m darkjax.main --config=configs/" in module.__doc__, "docstring has no command"
  for arg in _documented_args(module):
    config = module.get_config(arg)
    config.lock()
    for key in REQUIRED:
      assert key in config, f"{path} ({arg}): missing {key}"
    with pytest.raises(AttributeError):
      config.optimizer.lrr = 1.0  # locked: typos fail
    task_module = importlib.import_module(f"darkjax.trainers.{config.trainer}")
    assert hasattr(task_module, "Task")
    # real data: input worker processes chosen at run time for the config's pipeline (none on a
    # CPU); the embedded synthetic set's small clips: made in the training process
    synthetic = config.input.data.name.startswith("synthetic")
    assert (config.input.workers, config.input.cores_per_device) == (
        (0, 0.0) if synthetic else (-1, common.PIPELINE_CORES_PER_H100[config.trainer])), arg
    assert config_lib.input_workers(config) == config.input.workers
  for arg in _documented_args(module) + ["runlocal"]:   # every phase's warmup ends before it does
    config = module.get_config(arg)
    for phase in task_lib.phase_plan(config):
      phase_config = phase.config(config)
      assert phase_config.optimizer.warmup_steps < phase_config.total_steps, (arg, phase.name)


def test_a_warmup_as_long_as_the_run_is_named(caplog):
  from darkjax import optim  # pylint: disable=import-outside-toplevel
  cfg = common.optimizer_block("sgd", lr=0.05, schedule="cosine", warmup_steps=30)
  with caplog.at_level("WARNING", logger="darkjax"):
    schedule = optim.make_schedule(cfg, 10)
  assert "warmup_steps=30 is not below the phase's 10 steps" in caplog.text
  assert float(schedule(9)) < 0.05 / 2   # what it warns of
  caplog.clear()
  with caplog.at_level("WARNING", logger="darkjax"):
    optim.make_schedule(cfg, 31)
  assert caplog.text == ""


def test_synthetic_runlocal_config_is_accepted_by_its_trainer(tmp_path):
  module = importlib.import_module("configs.synthetic")
  config = module.get_config(f"runlocal,data_dir={tmp_path}")
  task = task_lib.load_task(config)
  assert task.data.dataset.num_classes >= 8


def test_parse_arg_types_and_unknown_names():
  arg = common.parse_arg("frames=8,runlocal,lr=0.5,name=x", frames=16, runlocal=False, lr=0.1,
                         name="")
  assert (arg.frames, arg.runlocal, arg.lr, arg.name) == (8, True, 0.5, "x")
  with pytest.raises(KeyError, match="valid args"):
    common.parse_arg("framez=8", frames=16)
  with pytest.raises(ValueError, match="integer"):
    common.parse_arg("frames=8.5", frames=16)


def test_unknown_trainer_lists_known_ones():
  module = importlib.import_module("configs.synthetic")
  config = module.get_config("runlocal")
  config.trainer = "nope"
  with pytest.raises(ValueError, match="supervised"):
    task_lib.load_task(config)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_model_takes_each_remat_policy_from_its_config(path):
  from darkjax import models  # pylint: disable=import-outside-toplevel
  config = _module(path).get_config(None)
  assert config.model.kwargs.remat == "none", "config.model.kwargs.remat: the policy, by name"
  # ActLumos's config names the family; its trainer builds the teacher and student from it.
  names = ([config.model.name.replace("actlumos", f"actlumos_{role}") for role in
            ("teacher", "student")] if config.trainer == "actlumos" else [config.model.name])
  for policy in remat.POLICIES:
    kwargs = dict(config.model.kwargs, remat=policy)
    for name in names:
      assert models.build(name, num_classes=5, **kwargs).remat == policy


def test_runlocal_compiles_at_xla_opt_level_0_and_full_runs_at_xlas_default():
  config = importlib.import_module("configs.synthetic").get_config("runlocal")
  cpu = targets.compiler_options("cpu")   # every CPU step: remat policies take effect
  # level 0 and XLA:CPU's legacy emitter (the fastest compile)
  assert train.compiler_options(config, "cpu") == {**targets.CPU_FAST_COMPILE, **cpu}
  nhwc = {"xla_gpu_force_conv_nhwc": True}   # GPU: its convolutions channels-last (targets)
  assert train.compiler_options(config, "gpu") == {"xla_backend_optimization_level": 0, **nhwc}
  assert train.compiler_options(config, "tpu") == {"xla_backend_optimization_level": 0,
                                                   "exec_time_optimization_effort": -1.0}
  full = importlib.import_module("configs.synthetic").get_config()
  assert train.compiler_options(full, "cpu") == cpu
  assert train.compiler_options(full, "gpu") == nhwc   # no CPU-only option for an accelerator


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_runlocal_of_a_2plus1d_network_traces_native_conv_ops_and_the_rest_the_cpu_rewrites(path):
  """`common.smoke_run`: XLA's native conv ops for LIFT-Net's and ActLumos's tiny networks, the
  CPU rewrites ("auto") for networks of full 3D kernels, at runlocal size; full configs "auto"."""
  from darkjax.layers import conv  # pylint: disable=import-outside-toplevel
  module = _module(path)
  assert module.get_config(None).conv_lowering == "auto"
  runlocal = module.get_config("runlocal")
  network = common.smoke_network(runlocal)
  factorised = network.startswith(common.FACTORISED_NETWORKS)
  assert factorised == (runlocal.trainer in ("liftnet", "actlumos")), network
  assert runlocal.conv_lowering == ("native" if factorised else "auto")
  with train.lowering_scope(runlocal):
    assert conv.native_lowering_forced() == factorised
  with train.lowering_scope(module.get_config(None)):
    assert not conv.native_lowering_forced()


def test_unknown_conv_lowering_is_named():
  with pytest.raises(ValueError, match=r"config.conv_lowering 'fast' unknown; valid: \('auto'"):
    train.lowering_scope({"conv_lowering": "fast"})


def test_a_choice_a_config_lacks_takes_its_default_and_a_required_one_is_a_key_error():
  # A config written before the key existed (an older run's config.json) has the default.
  assert config_lib.conv_lowering({}) == "auto"
  assert config_lib.batch_rounding({}) == "nearest"
  assert config_lib.compute_dtype({}, "gpu") == jnp.bfloat16
  assert config_lib.check_choice({"a": {"b": 2}}, "a.b", (1, 2)) == 2
  with pytest.raises(KeyError):
    config_lib.check_choice({"a": {}}, "a.b", (1, 2))
  with pytest.raises(config_lib.ConfigError, match=r"config.a.b 3 unknown; valid: \(1, 2\)"):
    config_lib.check_choice({"a": {}}, "a.b", (1, 2), default=3)


@pytest.mark.parametrize("batch, devices, accum, runs", [
    (32, 4, 1, 32),   # divisible: unchanged
    (30, 3, 1, 30),
    (30, 8, 1, 32),   # nearest multiple (24 or 32)
    (29, 4, 1, 28),   # nearest below
    (30, 4, 1, 32),   # a tie (28 or 32) goes up
    (10, 4, 1, 12),
    (3, 4, 1, 4),     # never 0
    (1, 8, 1, 8),
    (32, 4, 2, 32),   # accum_steps x devices divides: unchanged
    (36, 4, 2, 40),   # a multiple of 4 devices, not of 2 x 4 (a tie between 32 and 40)
    (32, 4, 3, 36),
])
def test_global_batch_is_the_nearest_multiple_of_accum_steps_x_devices(batch, devices, accum,
                                                                        runs):
  assert config_lib.global_batch(batch, devices, accum) == runs
  if runs == batch:
    assert config_lib.global_batch(batch, devices, accum, "error") == batch


def test_batch_rounding_error_names_the_field_the_devices_and_the_batches_that_run():
  with pytest.raises(config_lib.ConfigError, match=(
      r"^config.input.batch_size 30 is not divisible by the 4 devices of the mesh; batches that "
      r"run here: 28 or 32. Set one \(--config.input.batch_size=N\), or "
      r"config.batch_rounding='nearest' to run with 32$")):
    config_lib.global_batch(30, 4, rounding="error")
  with pytest.raises(config_lib.ConfigError, match=r"the 4 devices of the mesh x "
                     r"config.accum_steps 3 \(= 12\); batches that run here: 24 or 36\."):
    config_lib.global_batch(32, 4, 3, "error")
  with pytest.raises(config_lib.ConfigError, match=r"batches that run here: 4\. "):
    config_lib.global_batch(3, 4, rounding="error")
  config = importlib.import_module("configs.synthetic").get_config("runlocal")
  config.batch_rounding = "up"
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.batch_rounding 'up' unknown; valid: \('nearest', 'error'\)"):
    config_lib.validate(config)


def test_round_batches_records_the_requested_batches_once():
  config = config_lib.load("configs/twostream_infar.py")   # the paper's batch 30
  assert config.batch_rounding == "nearest" and config.input.batch_size_requested == 0
  same, notes = config_lib.round_batches(config, 3)   # 3 devices divide 30: the config itself
  assert same is config and notes == []
  rounded, notes = config_lib.round_batches(config, 4)
  assert (rounded.input.batch_size, rounded.input.batch_size_requested) == (32, 30)
  assert (rounded.input.eval_batch_size, rounded.input.eval_batch_size_requested) == (32, 30)
  assert config.input.batch_size == 30   # a copy
  assert notes[0] == ("global batch 30 is not divisible by the 4 devices of the mesh: training "
                      "with 32 (the nearest multiple; config.batch_rounding='error' refuses "
                      "instead); the learning rate is not rescaled")
  assert notes[1].startswith("eval batch 30 is not divisible by the 4 devices of the mesh: "
                             "evaluating with 32")
  assert config_lib.rounded_note(rounded, 4) == " (config 30, rounded for 4 devices)"
  assert config_lib.rounded_note(config, 4) == ""
  again, notes = config_lib.round_batches(rounded, 4)   # rounding again changes nothing
  assert again is rounded and notes == []
  with pytest.raises(AttributeError):
    rounded.input.batch_sizee = 1   # locked
  strict = config_lib.apply_overrides(config, {"batch_rounding": "error"})
  with pytest.raises(config_lib.ConfigError, match=r"^config.input.batch_size 30 .* 28 or 32"):
    config_lib.round_batches(strict, 4)


def test_override_values_are_literals_or_strings():
  assert [config_lib.override_value(v) for v in ("0", "0.5", "()", "True", "sgd", "a/b")] == \
      [0, 0.5, (), True, "sgd", "a/b"]


def test_a_users_own_configs_directory_loads_its_own_files(tmp_path):
  """`.../configs/x.py` outside darkjax's package is that file, not darkjax's `configs.x`."""
  own = tmp_path / "project" / "configs"
  own.mkdir(parents=True)
  for name in ("synthetic", "mine"):
    (own / f"{name}.py").write_text(
        "import ml_collections\nfrom configs import common  # darkjax's, as in its configs\n\n"
        f"def get_config(arg=None):\n  return ml_collections.ConfigDict(dict(trainer='{name}', "
        "batch=common.optimizer_block().lr))\n")
  assert config_lib.load(str(own / "synthetic.py")).trainer == "synthetic"
  assert config_lib.load(str(own / "mine.py")).trainer == "mine"
  assert config_lib.load("configs/synthetic.py").trainer == "supervised"


def test_a_batch_of_two_parts_rounds_to_what_splits_each_part():
  """3D-DiNet's batch is half source, half target, each split over the devices and micro-batches:
  12 on 4 devices (6 a half) once reached the step and stopped it; it runs 16."""
  config = config_lib.load("configs/dinet_synthetic.py:runlocal,batch=12")
  assert config_lib.batch_parts(config) == 2
  rounded, notes = config_lib.round_batches(config, 4)
  assert rounded.input.batch_size == 16
  assert "x config.input.batch_parts 2 (= 8)" in notes[0]
  assert config_lib.rounded_note(rounded, 4) == " (config 12, rounded for 4 devices x 2 batch parts)"
  from darkjax import fit as fit_lib  # pylint: disable=import-outside-toplevel
  accumulated = [c["accum_steps"] for c in fit_lib.candidates(rounded, "cpu", 4)
                 if "accum_steps" in c]
  assert accumulated and set(accumulated) == {2}   # 4 micro-batches would split a half 4 / 4 ways
  assert config_lib.global_batch(16, 4, 2, parts=2) == 16
  assert config_lib.global_batch(16, 4, 4, parts=2) == 32


def test_each_default_synthetic_directory_holds_one_set_of_clips():
  """Configs that default to the same $DARKJAX_DATA directory generate the same clips there: a
  directory holding other generator parameters is generated again (overwritten), so two such
  configs would replace each other's dataset on every run (and a run reading it while the other
  writes would fail). configs/synthetic.py's 200 clips a class once shared `synthetic` with the
  paper configs' 100."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  from darkjax.data import synthetic  # pylint: disable=import-outside-toplevel
  defaults = dataclasses.asdict(synthetic.SyntheticParams())
  held: dict[str, dict[str, str]] = {}
  runs = [(name, arg) for name in ("synthetic", "lift_synthetic", "dtcm_synthetic",
                                    "dinet_synthetic", "actlumos_synthetic", "twostream_synthetic")
          for arg in ("", ":runlocal")]
  # and the args docs' commands give (a bright-clip pretraining set, another darkness)
  runs += [("synthetic", ":darkness=1.0,data_seed=4321"), ("synthetic", ":darkness=1.0"),
           ("dtcm_synthetic", ":darkness=1.0"), ("dinet_synthetic", ":darkness=0.8")]
  for name, arg in runs:
    config = config_lib.load(f"configs/{name}.py{arg}")
    datas = [config.input.data]
    if "dinet" in config and "target" in config.dinet:
      datas.append(config.dinet.target.data)
    for data in datas:
      params = json.dumps({**defaults, **dict(data.generate)}, sort_keys=True, default=str)
      held.setdefault(data.dir, {})[f"{name}{arg}"] = params
  for directory, by_config in held.items():
    assert len(set(by_config.values())) == 1, (directory, sorted(by_config))


def test_evaluation_and_runner_fields_and_set_field():
  """What sets only an evaluation (a finished run evaluates again with it) and what changes no
  result; a config.json's field set or removed, a removed evaluator leaving no empty block."""
  assert all(map(config_lib.evaluation_field, (
      "input.data.eval_split", "dinet.target.data.eval_split", "input.eval_clips",
      "input.eval_crops", "evals", "evals.video.k")))
  assert not any(map(config_lib.evaluation_field, (
      "input.data.split", "input.normalise", "input.eval_batch_size", "evaluations.x")))
  assert config_lib.runner_field("input.workers") and config_lib.runner_field("profile.steps")
  assert not config_lib.runner_field("optimizer.lr")
  values = {"evals": {"a": {"type": "x", "clips": 2}, "b": {"type": "y"}}, "k": 1}
  config_lib.set_field(values, "evals.c.type", "z")
  for key in ("evals.a.type", "evals.a.clips", "evals.nothing.here"):
    config_lib.set_field(values, key, config_lib.ABSENT)
  assert values == {"evals": {"b": {"type": "y"}, "c": {"type": "z"}}, "k": 1}
