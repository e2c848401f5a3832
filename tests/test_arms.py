"""darkjax.tools.arms: the arms of a table differ from its default only in the fields they
declare, the phases a run trains included; every experiment command in README.md and docs/
declares what its arms change (checked with `--check`, nothing trained)."""

from __future__ import annotations

import pytest

from darkjax import config as config_lib
from darkjax.tools import arms, experiment
from doc_commands import ALL as DOC_COMMANDS


def _check(path: str, arm_args: dict[str, str], declared: dict[str, tuple[str, ...]]):
  default = config_lib.load(path)
  return arms.check(default, {n: experiment.arm_config(path, a) for n, a in arm_args.items()},
                    declared)


def test_a_declared_change_passes_and_is_described():
  found = _check("configs/synthetic.py", {"b16": "batch=16"}, {"b16": ("input.batch_size",)})
  assert found == {"b16": {"input.batch_size": (32, 16)}}
  assert arms.describe(found) == ["- `b16`: `input.batch_size` 32 -> 16"]


def test_an_undeclared_or_unchanged_field_stops_the_table_naming_it():
  with pytest.raises(arms.ArmsError, match=r"arm 'b16' changes undeclared fields "
                     r"\(input.batch_size: 32 -> 16\)"):
    _check("configs/synthetic.py", {"b16": "batch=16"}, {})
  with pytest.raises(arms.ArmsError, match=r"arm 'same' declares fields it does not change "
                     r"\['optimizer.lr'\]"):
    _check("configs/synthetic.py", {"same": "seed=0"}, {"same": ("optimizer.lr",)})
  with pytest.raises(arms.ArmsError, match="--changes names \\['nope'\\]"):
    _check("configs/synthetic.py", {"b16": "batch=16"}, {"nope": ("x",)})


def test_a_dropped_phase_is_a_change():
  # LIFT-Net's student alone skips the teacher phase: 300 fewer steps on its backbone
  found = _check("configs/lift_synthetic.py", {"no_kd": "kd=False"},
                 {"no_kd": ("lift.kd", "phases")})
  assert found["no_kd"]["phases"] == ("teacher:300,student:400", "student:400")
  # the controlled arm: the same phases and steps, only the distillation term off
  found = _check("configs/lift_synthetic.py", {"kd0": "lift.kd_weight=0.0"},
                 {"kd0": ("lift.kd_weight",)})
  assert found == {"kd0": {"lift.kd_weight": (1.0, 0.0)}}


def test_a_declared_parent_covers_its_fields():
  found = _check("configs/synthetic.py", {"b": "batch=16"}, {"b": ("input",)})
  assert list(found["b"]) == ["input.batch_size"]
  assert arms.parse_changes(["a=x.y,z", "b=w"]) == {"a": ("x.y", "z"), "b": ("w",)}
  with pytest.raises(ValueError, match="expected NAME=FIELD"):
    arms.parse_changes(["a="])


EXPERIMENTS = [(page, cmd) for page, cmd in DOC_COMMANDS if cmd[0] == "darkjax.tools.experiment"]


def test_the_docs_have_experiment_tables():
  assert len(EXPERIMENTS) >= 5


@pytest.mark.parametrize("page,cmd", EXPERIMENTS, ids=[f"{p}:{i}" for i, (p, _) in
                                                        enumerate(EXPERIMENTS)])
def test_every_documented_table_declares_what_its_arms_change(page, cmd, tmp_path, monkeypatch,
                                                              capsys):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path / "data"))
  argv = list(cmd[1:])
  argv[argv.index("--out") + 1] = str(tmp_path / "out")
  assert experiment.main(argv + ["--check"]) == 0, (page, capsys.readouterr().err)
  assert not (tmp_path / "out").exists()   # nothing trained


def _shared(path: str, arm_arg: str) -> tuple[str, ...]:
  return arms.shared_phases(config_lib.load(path), experiment.arm_config(path, arm_arg))


def test_an_arm_shares_the_phases_it_trains_as_the_default_does():
  lift, act = "configs/lift_synthetic.py", "configs/actlumos_synthetic.py"
  # what the teacher does not read: the student's KD weight, its sharing of the backbone
  assert _shared(lift, "lift.kd_weight=0.0") == ("teacher",)
  assert _shared(lift, "lift.freeze_teacher=False") == ("teacher",)
  # what it reads: its own steps; an arm without it shares nothing; the student never
  assert _shared(lift, "teacher_steps=100") == ()
  assert _shared(lift, "kd=False") == ()
  assert _shared(lift, "steps=100") == ("teacher",)
  # ActLumos: KD off shares teacher and SSL; SSL off shares the teacher, not the student (it
  # starts from other weights); the teacher's SupCon weight changes the teacher, not the SSL
  assert _shared(act, "actlumos.kd_weight=0.0") == ("teacher", "ssl")
  assert _shared(act, "ssl=False") == ("teacher",)
  assert _shared(act, "actlumos.supcon_weight=0.5") == ("ssl",)
  # a single-phase paper trains in the workdir itself: nothing to share
  assert _shared("configs/synthetic.py", "batch=16") == ()
  found = arms.check(config_lib.load(lift),
                     {"kd0": experiment.arm_config(lift, "lift.kd_weight=0.0")},
                     {"kd0": ("lift.kd_weight",)})
  assert arms.describe(found, {"kd0": ("teacher",)}) == [
      "- `kd0`: `lift.kd_weight` 1.0 -> 0.0; reuses the default arm's trained `teacher` phase of "
      "each seed"]


# phase -> the fields it `ignores` that documented arms change, each with another value.
# and a field it reads, whose change the test must see.
IGNORED = [
    ("configs/lift_synthetic.py:runlocal", "teacher",
     {"lift.kd_weight": 0.0, "lift.freeze_teacher": False, "lift.kd_features": "logits",
      "lift.vit_trainable": "none", "model.kwargs.attention_scale": "heads",
      "model.kwargs.fourier_norm": "tokens", "model.kwargs.pvit_norm": False},
     ("label_smoothing", 0.1)),
    ("configs/actlumos_synthetic.py:runlocal", "teacher",
     {"actlumos.kd_weight": 0.0, "actlumos.kd_temperature": 1.0, "actlumos.ssl": False,
      "ssl.temperature": 0.5, "actlumos.student_pretrained": False,
      "actlumos.kd_unlabelled": True},
     ("actlumos.supcon_weight", 0.5)),
    ("configs/actlumos_synthetic.py:runlocal", "ssl",
     {"actlumos.kd_weight": 0.0, "actlumos.kd": False, "actlumos.supcon_weight": 0.5,
      "teacher.total_steps": 7, "actlumos.stream_statistics": "joint",
      "actlumos.kd_unlabelled": True},
     ("ssl.temperature", 0.5)),
]
# What else a phase's training depends on besides its loss: compared field by field.
_TRAINING_FIELDS = ("seed", "total_steps", "optimizer", "input", "label_smoothing")


def _loss_jaxpr(config, phase_name: str) -> str:
  """The jaxpr of the phase's loss_fn on abstract variables and a 2-clip batch."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from darkjax import task as task_lib, train  # pylint: disable=import-outside-toplevel
  phase = task_lib.find_phase(config, phase_name)
  phase_config, task = task_lib.build_task(phase, config, num_classes=10)
  batch = {"video": jax.ShapeDtypeStruct((2, 8, 32, 32, 3), jnp.uint8),
           "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
  with train.lowering_scope(phase_config):
    variables = dict(jax.eval_shape(task.init_variables, jax.random.key(0), batch))
    params = variables.pop("params")
    return str(jax.make_jaxpr(task.loss_fn)(params, variables, batch, jax.random.key(1), 0.5))


def _training_fields(config, phase_name: str) -> dict:
  from darkjax import task as task_lib  # pylint: disable=import-outside-toplevel
  view = config_lib.flat(task_lib.find_phase(config, phase_name).config(config))
  return {k: v for k, v in view.items() if any(config_lib.covers(f, k) for f in _TRAINING_FIELDS)}


@pytest.mark.parametrize("config_arg,phase_name,fields,read", IGNORED,
                         ids=[f"{c.split('/')[1][:-3].split('_')[0]}-{p}" for c, p, _, _ in IGNORED])
def test_a_phase_does_not_read_what_it_ignores(config_arg, phase_name, fields, read):
  # Every field a phase `ignores` leaves its training unchanged: the jaxpr of its loss_fn (model,
  # loss and their constants) and its steps, optimizer and input are the same, so two arms that
  # differ only there train it alike. A field it reads changes the jaxpr.
  path, _, arg = config_arg.partition(":")
  from darkjax import task as task_lib  # pylint: disable=import-outside-toplevel
  config = lambda overrides: config_lib.apply_overrides(config_lib.load(path, arg), overrides)  # noqa
  declared = task_lib.find_phase(config({}), phase_name).ignores
  reference = _loss_jaxpr(config({}), phase_name)
  training = _training_fields(config({}), phase_name)
  for field, value in fields.items():
    assert any(config_lib.covers(i, field) for i in declared), (phase_name, field)
    assert _loss_jaxpr(config({field: value}), phase_name) == reference, field
    assert _training_fields(config({field: value}), phase_name) == training, field
  assert not any(config_lib.covers(i, read[0]) for i in declared)
  assert _loss_jaxpr(config(dict([read])), phase_name) != reference, read
