"""darkjax.task: every paper declares its phases one way, the deployed phase follows from the
declaration, and a Task that lacks a capability its config's evaluators need fails at start."""

from __future__ import annotations

import os
import re
import sys
import types

import ml_collections as mlc
import pytest

from configs import common
from configs import synthetic as synthetic_config
from darkjax import capabilities, evaluators
from darkjax import config as config_lib
from darkjax import task as task_lib
from run_configs import config_files, config_module

TRAINERS = ("supervised", "dinet", "dtcm", "liftnet", "twostream", "actlumos")


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_declares_phases(trainer):
  phases = task_lib.declared_phases(mlc.ConfigDict({"trainer": trainer}))
  names = [p.name for p in phases]
  assert phases and len(set(names)) == len(names), names
  for phase in phases:
    assert isinstance(phase, task_lib.Phase) and callable(phase.task)
    assert all(n in names[:names.index(phase.name)] for n in phase.init_from), (
        f"{trainer}.{phase.name} starts from a phase that does not come before it")


@pytest.mark.parametrize("path", config_files(), ids=os.path.basename)
def test_every_config_runs_a_plan_whose_last_phase_is_deployed(path):
  config = config_module(path).get_config(None)
  plan = task_lib.phase_plan(config)
  assert plan[-1] is task_lib.deployed_phase(config)
  directories = [p.workdir("/w", config) for p in plan]
  assert len(set(directories)) == len(directories)   # each phase resumes on its own
  assert task_lib.main_phase(config) in task_lib.declared_phases(config)


def test_plans_follow_the_config():
  from configs import actlumos_arid, dtcm_arid, lift_arid  # pylint: disable=import-outside-toplevel
  plan = lambda c: [(p.name, p.workdir("/w", c)) for p in task_lib.phase_plan(c)]  # noqa: E731
  assert plan(dtcm_arid.get_config(None)) == [("joint", "/w")]
  assert plan(dtcm_arid.get_config("pretrain_enhancer=True")) == [("enhancer", "/w/enhancer"),
                                                                  ("joint", "/w/joint")]
  assert plan(dtcm_arid.get_config("setting=two_stage")) == [("enhancer", "/w/enhancer"),
                                                             ("classifier", "/w/classifier")]
  assert [n for n, _ in plan(lift_arid.get_config("kd=False"))] == ["student"]
  assert [n for n, _ in plan(actlumos_arid.get_config(None))] == ["teacher", "ssl", "student"]
  assert task_lib.main_phase(actlumos_arid.get_config(None)).name == "teacher"


def test_a_missing_capability_fails_at_start_naming_the_eval_and_the_capability(tmp_path):
  config = synthetic_config.get_config(f"runlocal,data_dir={tmp_path}")
  config.evals.enhancement = common.enhancement_eval(clips=2)
  with pytest.raises(task_lib.MissingCapabilityError,
                     match=r"config.evals.enhancement \(type 'enhancement'\) needs the capability "
                     r"Enhances"):
    task_lib.load_task(config, num_classes=3)


def test_each_evaluator_capability_is_a_protocol_the_papers_meet(tmp_path):
  from configs import dtcm_synthetic, lift_synthetic  # pylint: disable=import-outside-toplevel
  assert set(evaluators.REQUIRES) <= set(evaluators.TYPES)
  dtcm = task_lib.load_task(dtcm_synthetic.get_config(f"runlocal,data_dir={tmp_path}"),
                            num_classes=3)
  lift = task_lib.load_task(lift_synthetic.get_config(f"runlocal,data_dir={tmp_path}"),
                            num_classes=3)
  assert isinstance(dtcm, capabilities.Enhances)
  assert not isinstance(dtcm, capabilities.MapsAttention)
  assert isinstance(lift, capabilities.MapsAttention)
  assert not isinstance(lift, capabilities.Enhances)


def test_a_trainer_module_without_phases_is_named(monkeypatch):
  module = types.ModuleType("darkjax.trainers.nophases")
  monkeypatch.setitem(sys.modules, "darkjax.trainers.nophases", module)
  with pytest.raises(TypeError, match=r"darkjax/trainers/nophases.py declares no PHASES"):
    task_lib.trainer_module(mlc.ConfigDict({"trainer": "nophases"}))
  with pytest.raises(ValueError, match=r"config.trainer 'nope' unknown; known trainers: "
                     r"\['actlumos', 'dinet'"):
    task_lib.trainer_module(mlc.ConfigDict({"trainer": "nope"}))
  with pytest.raises(ValueError, match=r"trainer 'liftnet' has phases \['teacher', 'student'\], "
                     r"not 'ssl'"):
    task_lib.find_phase(mlc.ConfigDict({"trainer": "liftnet"}), "ssl")


def test_clip_and_frame_models_give_the_main_jobs_loss_abstractly(tmp_path):
  """`--config.model.name=NAME` of configs/synthetic.py: the loss and predictions have clip
  shapes for clip models and frame models (ViT: per-frame logits averaged) alike (abstractly)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  for name in ("small3d_tiny", "vit_tiny_test"):
    config = synthetic_config.get_config(f"runlocal,data_dir={tmp_path}")
    config.model.name = name
    task = task_lib.load_task(config, num_classes=4)
    clips = jax.ShapeDtypeStruct((2, config.input.frames, 32, 32, 3), jnp.uint8)
    batch = {"video": clips, "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
    variables = jax.eval_shape(task.init_variables, jax.random.key(0), batch)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    loss, (_, metrics) = jax.eval_shape(task.loss_fn, params, state, batch, jax.random.key(1), 0.0)
    assert loss.shape == () and metrics["accuracy"].shape == (), name
    assert jax.eval_shape(task.predict, variables, {"video": clips}).shape == (2, 4), name


# A paper config's own choices, each given a value it does not have: the Task refuses it when it is
# built (ConfigError naming the key and the valid values), before data, compile or trace.
@pytest.mark.parametrize("path, key, valid", [
    ("configs/dtcm_synthetic.py", "dtcm.setting", "'one_stage_total'"),
    ("configs/dtcm_synthetic.py", "dtcm.loss_variant", "'paper', 'official'"),
    ("configs/lift_synthetic.py", "lift.luminous_input", "'gamma', 'flow'"),
    ("configs/lift_synthetic.py", "lift.kd_reduction", "'sum', 'mean'"),
    ("configs/lift_synthetic.py", "lift.vit_trainable", "'first', 'none', 'all'"),
    ("configs/lift_synthetic.py", "lift.kd_features", "'hidden', 'logits'"),
    ("configs/twostream_synthetic.py", "twostream.flow_source", "'stream', 'compute'"),
    ("configs/twostream_synthetic.py", "twostream.flow_method", "'farneback', 'dis', 'tvl1'"),
    ("configs/actlumos_synthetic.py", "actlumos.fusion", "'dff', 'sum', 'concat'"),
    ("configs/actlumos_synthetic.py", "actlumos.stream_statistics", "'separate', 'joint'"),
], ids=lambda v: v if "." in v and "/" not in v and "'" not in v else None)
def test_a_paper_choice_it_does_not_have_fails_when_the_task_is_built(path, key, valid):
  config = config_lib.apply_overrides(config_lib.load(path, "runlocal"), {key: "nope"})
  with pytest.raises(config_lib.ConfigError,
                     match=rf"^config\.{re.escape(key)} 'nope' unknown; valid: \(.*"
                           rf"{re.escape(valid)}"):
    task_lib.load_task(config, num_classes=10)
