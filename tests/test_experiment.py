"""The generic seeds x splits x variants runner (`python -m darkjax.tools.experiment`): variant
parsing, split placement in every data block, the table, and a tiny config run twice (the second
time read from the cache)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from configs import dinet_infar
from darkjax import phases, train
from darkjax.tools import experiment


def test_parse_variants():
  assert experiment.parse_variants(["no_dcl=dcl=False,alpha=0.1", "ir=streams=ir"]) == {
      "default": "", "no_dcl": "dcl=False,alpha=0.1", "ir": "streams=ir"}
  with pytest.raises(ValueError, match="expected NAME=ARGS"):
    experiment.parse_variants(["nodcl"])
  with pytest.raises(ValueError, match="given twice"):
    experiment.parse_variants(["a=x=1", "a=x=2"])


def test_variant_args_name_other_runs_of_the_same_seed_and_split():
  assert experiment.run_name(2, None) == "seed2" and experiment.run_name(2, 3) == "split3_seed2"
  assert experiment.expand("ssl=False,teacher_init={out}/default/{run}/teacher", "/x/out",
                           "split3_seed2") == \
      "ssl=False,teacher_init=/x/out/default/split3_seed2/teacher"


def test_split_goes_into_every_data_block():
  config = experiment.with_run(dinet_infar.get_config(), seed=4, split=3)
  assert config.seed == 4
  assert config.input.data.split_index == 3 and config.dinet.target.data.split_index == 3


def test_runs_a_tiny_config_over_seeds_and_caches(tmp_path, monkeypatch, capsys):
  data = tmp_path / "data"
  out = tmp_path / "out"
  argv = ["--config", f"configs/synthetic.py:runlocal,steps=2,data_dir={data}", "--seeds", "0,1",
          "--splits", "all", "--out", str(out)]
  bars, real_tqdm = [], train.tqdm

  def recorded(*args, **kwargs):
    bars.append({key: kwargs.get(key) for key in ("leave", "disable")})
    return real_tqdm(*args, **kwargs)

  monkeypatch.setattr(train, "tqdm", recorded)
  assert experiment.main(argv) == 0
  # each run's bar on a terminal only (disable=None: tqdm's own test), cleared when it ends
  assert bars and all(bar == {"leave": False, "disable": None} for bar in bars), bars
  table = json.loads((out / "table.json").read_text())
  assert table["default"]["eval/top1"]["n"] == 2
  runs = [json.loads((out / "default" / f"split0_seed{s}" / "result.json").read_text())
          for s in (0, 1)]
  assert [r["seed"] for r in runs] == [0, 1] and all(r["split"] == 0 for r in runs)
  assert "eval/top1" in (out / "table.md").read_text()

  def no_training(*args, **kwargs):
    raise AssertionError("a cached run was trained again")

  real_run_phases = phases.run_phases
  monkeypatch.setattr(phases, "run_phases", no_training)
  capsys.readouterr()
  assert experiment.main(argv) == 0
  printed = capsys.readouterr().out
  assert printed.startswith(f"2 runs (1 arm x 2 seeds), 2 of them stored in {out}\n")
  lines = [line for line in printed.splitlines() if "; run " in line]
  assert [line.split(": ", 1)[0] for line in lines] == [
      "default split 0 seed 0", "default split 0 seed 1"]
  assert all("(stored); run " in line for line in lines), lines   # read back, not trained
  # a --metrics matching nothing, or a split the dataset lacks: one line, the table left as it is
  table_md = (out / "table.md").read_text()
  assert experiment.main(argv + ["--metrics", "zzz$"]) == 2
  assert "--metrics 'zzz$' matches none of the runs' metrics: ['eval/" in capsys.readouterr().err
  assert experiment.main([a if a != "all" else "3" for a in argv]) == 2
  assert "--splits 3: the dataset of arm 'default' has splits [0]" in capsys.readouterr().err
  assert (out / "table.md").read_text() == table_md
  # an earlier call's pairs.json is no part of a table without --pair
  (out / "pairs.json").write_text("{}")
  assert experiment.main(argv) == 0 and not (out / "pairs.json").exists()
  capsys.readouterr()
  # The same --out with other args: its stored runs were trained otherwise, and a table mixing
  # them with new ones would pair old runs with new ones. Stopped, naming the changed fields.
  changed = [a.replace("steps=2", "steps=3") for a in argv]
  assert experiment.main(changed) == 2
  err = capsys.readouterr().err
  # every stale run named, before any run trains: grouped by what changed
  assert f"2 stored runs of {out} were trained with another config than this command's runs " \
         "give:\n  default/split0_seed0, default/split0_seed1:\n" in err
  assert "total_steps: 2 (stored) -> 3 (now)" in err and "delete those runs'" in err
  # One stale run, planned after one to train (deleted, as the message says): refused, named with
  # its result, before the other trains (run_phases still refuses to train).
  shutil.rmtree(out / "default" / "split0_seed0")
  assert experiment.main(changed) == 2
  err = capsys.readouterr().err
  assert f"{out / 'default' / 'split0_seed1' / 'result.json'} was trained with another config " \
         "than this command's run gives" in err
  monkeypatch.setattr(phases, "run_phases", real_run_phases)
  assert experiment.main(argv) == 0   # the deleted run trained again, as before
  assert "evaluated on test:" in (out / "table.md").read_text()
  # Another evaluation part: the stored runs evaluated again with it, nothing trained, each
  # result and the table naming the part
  capsys.readouterr()
  saved = {s: (out / "default" / f"split0_seed{s}" / "checkpoints" / "2").stat().st_mtime_ns
           for s in (0, 1)}
  took = {s: json.loads((out / "default" / f"split0_seed{s}" / "result.json").read_text())[
      "seconds"] for s in (0, 1)}
  on_train = [a.replace("steps=2,", "steps=2,input.data.eval_split=train,") for a in argv]
  assert experiment.main(on_train) == 0
  printed = capsys.readouterr().out
  assert "2 stored runs evaluated again: this command evaluates them with other settings, e.g. " \
         "default/split0_seed0:\n  input.data.eval_split: 'test' (stored) -> 'train' (now)" \
         in printed, printed
  assert printed.count("(stored, evaluated again); run ") == 2, printed
  for seed in (0, 1):
    run_dir = out / "default" / f"split0_seed{seed}"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["evaluated_on"] == "train" and result["seconds"] == took[seed]   # training's
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert (run_dir / "checkpoints" / "2").stat().st_mtime_ns == saved[seed]   # trained once
    assert [r["eval/num_examples"] for r in rows if "eval/num_examples" in r] == [40.0]
  assert "evaluated on train:" in (out / "table.md").read_text()
  assert experiment.main(on_train) == 0 and "evaluated again" not in capsys.readouterr().out
  # A moved --out keeps its results (its own path is compared as `{out}`).
  moved = tmp_path / "moved"
  os.rename(out, moved)
  assert experiment.main(argv[:-1] + [str(moved)]) == 0


@pytest.mark.parametrize("config, variant, line", [
    ("configs/synthetic.py:stepz=1", "a=steps=2", "unknown config arg 'stepz'"),
    ("configs/synthetic.py:runlocal", "a=optimizer.lrr=2", "config override 'optimizer.lrr': no"),
], ids=["config_arg", "arm_override"])
def test_a_bad_arg_or_override_is_one_line_before_any_run(config, variant, line, tmp_path,
                                                          capsys):
  argv = ["--config", config, "--variant", variant, "--out", str(tmp_path / "out")]
  assert experiment.main(argv) == 2
  assert line in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, line", [
    (["--seeds", "0,0,1"], "--seeds 0,0,1: seed 0 given more than once"),
    (["--seeds", "0,a"], "--seeds '0,a': expected comma-separated integers"),
    (["--variant", "default=lr=0.1"], "'default' names the config as given"),
    (["--metrics", "(top1"], "--metrics '(top1' is not a regular expression"),
], ids=["seed_twice", "seed_text", "default_variant", "metrics_regex"])
def test_bad_flags_are_refused_before_any_run(args, line, tmp_path, capsys):
  with pytest.raises(SystemExit) as stop:
    experiment.main(["--config", "configs/synthetic.py:runlocal", "--out", str(tmp_path / "out"),
                     *args])
  assert stop.value.code == 2
  assert line in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_out_is_written_as_out_only_where_it_is_the_whole_path(tmp_path):
  fields = experiment._config_fields(   # pylint: disable=protected-access
      {"a": f"{tmp_path}/t1/x", "b": f"{tmp_path}/t10/x", "c": f"{tmp_path}/t1"},
      str(tmp_path / "t1"))
  assert fields == {"a": "{out}/x", "b": f"{tmp_path}/t10/x", "c": "{out}"}


def _losses(phase_dir):
  rows = [json.loads(line) for line in (phase_dir / "metrics.jsonl").open()]
  return [(row["step"], row["train/loss"]) for row in rows if "train/loss" in row]


def test_an_arm_reuses_the_default_phase_it_trains_alike(tmp_path, monkeypatch):
  # DTCM with a pretrained enhancer: an arm with another joint learning rate trains the enhancer
  # phase as the default does (its lr is config.dtcm.enhancer_lr), so it starts from a copy of the
  # default's finished enhancer instead of training it again.
  out = tmp_path / "out"
  config = (f"configs/dtcm_synthetic.py:runlocal,pretrain_enhancer=True,steps=2,enhancer_steps=2,"
            f"data_dir={tmp_path / 'd'}")
  argv = ["--config", config, "--seeds", "0", "--metrics", "top1$", "--out", str(out),
          "--variant", "lr=lr=0.02", "--changes", "lr=optimizer.lr"]
  starts = {}   # phase directory -> the step its training started from
  real_init_state = train.Trainer.init_state

  def init_state(self, *args, **kwargs):
    starts[self.workdir] = real_init_state(self, *args, **kwargs)
    return starts[self.workdir]

  monkeypatch.setattr(train.Trainer, "init_state", init_state)
  assert experiment.main(argv) == 0
  default, arm = out / "default" / "seed0", out / "lr" / "seed0"
  assert json.loads((arm / experiment.SHARED_FILE).read_text()) == {
      "enhancer": str(default / "enhancer")}
  assert _losses(arm / "enhancer") == _losses(default / "enhancer") != []   # the copy
  assert _losses(arm / "joint") != _losses(default / "joint")   # its own joint phase
  assert starts[str(arm / "enhancer")] == 2 and starts[str(arm / "joint")] == 0   # not retrained
  assert "reuses the default arm's trained `enhancer` phase" in (out / "table.md").read_text()
  # --no-share: the arm trains its own enhancer, step for step the one it was given
  assert experiment.main(argv[:-4] + ["--variant", "lr2=lr=0.02", "--changes", "lr2=optimizer.lr",
                                      "--no-share"]) == 0
  trained = out / "lr2" / "seed0"
  assert starts[str(trained / "enhancer")] == 0 and not (trained / experiment.SHARED_FILE).exists()
  assert _losses(trained / "enhancer") == _losses(arm / "enhancer")
  # the same table again with sharing on: its stored runs trained their own enhancer, and the
  # table says what the runs did, not what this call would have done
  assert experiment.main(argv[:-4] + ["--variant", "lr2=lr=0.02", "--changes",
                                      "lr2=optimizer.lr"]) == 0
  assert "- `lr2`: `optimizer.lr` 0.001 -> 0.02\n" in (out / "table.md").read_text()


def test_runs_go_seed_by_seed_with_every_arm_and_say_how_long_the_rest_takes(tmp_path,
                                                                             monkeypatch, capsys):
  # An interrupted table already pairs the arms of each finished seed.
  order = []
  arm_seconds = {"default": 10.0, "b16": 290.0}   # an arm that trains longer takes its own time

  def fake_run(workdir, make_config, kept, **info):
    order.append((info["variant"], info["seed"]))
    return {"eval/top1": 0.5 + 0.01 * info["seed"], **info,
            "seconds": arm_seconds[info["variant"]]}

  monkeypatch.setattr(experiment, "run_cached", fake_run)
  assert experiment.main(["--config", "configs/synthetic.py", "--seeds", "0,1", "--variant",
                          "b16=batch=16", "--changes", "b16=input.batch_size",
                          "--out", str(tmp_path)]) == 0
  assert order == [("default", 0), ("b16", 0), ("default", 1), ("b16", 1)]
  assert json.loads((tmp_path / "table.json").read_text())["b16"]["eval/top1"]["n"] == 2
  # Each run's line: its time, its place, and the rest at each arm's own mean (an arm not yet
  # run at the mean of all): 3 x 10 s, then 10 + 290 s, then 290 s.
  out = capsys.readouterr().out
  assert out.startswith("4 runs (2 arms x 2 seeds)\n")   # the plan, before the first run
  lines = [line for line in out.splitlines() if "; run " in line]
  assert lines == ["default seed 0: 10 s; run 1 of 4, about 30 s left",
                   "b16 seed 0: 5 min; run 2 of 4, about 5 min left",
                   "default seed 1: 10 s; run 3 of 4, about 5 min left",
                   "b16 seed 1: 5 min; run 4 of 4, done"]
  # runs an earlier call stored take no time in what is left
  plan = [(None, 0, "default"), (None, 0, "b16"), (None, 1, "default"), (None, 1, "b16")]
  results = {"default": [{"seconds": 10.0}], "b16": []}
  assert experiment.time_left(plan, 1, results) == 30.0
  assert experiment.time_left(plan, 1, results, [True, True, True, False]) == 10.0


def test_durations_read_as_a_person_says_them():
  assert [experiment.duration(s) for s in (4.6, 59.4, 61, 3599, 3600, 11_000)] == [
      "5 s", "59 s", "1 min", "1 h 00 min", "1 h 00 min", "3 h 03 min"]


def test_a_stopped_table_is_one_line(monkeypatch, capsys):
  from darkjax.preemption import Preempted  # pylint: disable=import-outside-toplevel

  def stopped():
    raise Preempted(3, "/o/default/seed0/checkpoints/3", interrupted=True)
  monkeypatch.setattr(experiment, "main", stopped)
  assert experiment.cli() == 130
  err = capsys.readouterr().err
  assert err.startswith("darkjax.tools.experiment: interrupted (Ctrl-C): saved checkpoint "
                        "/o/default/seed0/checkpoints/3 at step 3")
  assert "finished runs are stored" in err
