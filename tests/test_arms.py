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
