"""launch/: dry runs print every command; SLURM variables map to process ids and a coordinator."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import time

import pytest

from darkjax.tools import slurm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("nodelist, host", [
    ("node001", "node001"), ("node001,login2", "node001"), ("gpu[003-010,012]", "gpu003"),
    ("gpu[012,003-010],x1", "gpu012"), ("a-b[7]", "a-b7")])
def test_first_host_of_slurm_node_lists(nodelist, host):
  assert slurm.first_host(nodelist) == host


def test_slurm_flags_mirror_jax_rule_and_fail_outside_slurm():
  env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_PROCID": "3",
         "SLURM_STEP_NODELIST": "gpu[007-010]"}
  assert slurm.distributed_flags(env) == [
      "--coordinator_address=gpu007:61586", "--num_processes=4", "--process_id=3"]
  assert slurm.coordinator_address({**env, "DARKJAX_COORDINATOR_PORT": "1234"}) == "gpu007:1234"
  with pytest.raises(KeyError, match="SLURM_PROCID"):
    slurm.distributed_flags({k: v for k, v in env.items() if k != "SLURM_PROCID"})
  with pytest.raises(ValueError, match="DARKJAX_COORDINATOR_PORT='abc': expected a port"):
    slurm.distributed_flags({**env, "DARKJAX_COORDINATOR_PORT": "abc"})
  with pytest.raises(ValueError, match="DARKJAX_COORDINATOR_PORT='65536': expected a port"):
    slurm.distributed_flags({**env, "DARKJAX_COORDINATOR_PORT": "65536"})


def test_slurm_tool_starts_without_jax():
  """It runs in a login shell before the job starts: of darkjax only darkjax.messages, no jax."""
  script = ("import sys; from darkjax.tools import slurm\n"
            "print(sorted(m for m in sys.modules if m.startswith(('darkjax', 'jax', 'flax'))))")
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, capture_output=True,
                       text=True, timeout=60).stdout
  assert out.strip() == str(["darkjax", "darkjax.messages", "darkjax.tools", "darkjax.tools.slurm"])


def test_slurm_dry_run_prints_one_command_per_task(tmp_path):
  submit = tmp_path / "darkjax"   # a checkout as the job is submitted from: its config, its venv
  (submit / "configs").mkdir(parents=True)
  (submit / "configs" / "lift_arid.py").write_text("")
  (submit / ".venv" / "bin").mkdir(parents=True)
  (submit / ".venv" / "bin" / "activate").write_text("")
  env = dict(os.environ, SLURM_JOB_ID="7", SLURM_NTASKS="3", SLURM_STEP_NODELIST="n[5-7]",
             SLURM_SUBMIT_DIR=str(submit), DARKJAX_DRY_RUN="1", PYTHON=sys.executable)
  script = os.path.join(REPO, "launch/slurm_gpu.sbatch")
  # started from another directory, with a flag holding a space (kept one word by the tasks'
  # shells)
  out = subprocess.run(["bash", script, "configs/lift_arid.py", "gs://b/run", "--config.seed=3",
                        "--config.name=my run"], cwd="/", env=env, check=True,
                       capture_output=True, text=True, timeout=60).stdout.splitlines()
  assert out[:2] == [f"cd {submit}", ". .venv/bin/activate"]
  # what every node would fail on is said before the job waits in the queue
  for config, venv, line in (("configs/nope.py", True, f"config file {submit}/configs/nope.py "
                              "does not exist"),
                             ("configs/lift_arid.py", False, ".venv/bin/activate does not exist")):
    if not venv:
      (submit / ".venv" / "bin" / "activate").unlink()
    failed = subprocess.run(["bash", script, config, "gs://b/run"], cwd="/", env=env,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and line in failed.stderr, failed.stderr
  assert len(out) == 5
  for task, line in enumerate(out[2:]):
    prefix, command = line.split(": ", 1)
    assert prefix == f"srun task {task}"
    assert shlex.split(command) == [
        "python", "-m", "darkjax.main", "--config=configs/lift_arid.py", "--workdir=gs://b/run",
        "--jax_distributed", "--config.seed=3", "--config.name=my run",
        "--coordinator_address=n5:61447",
        "--num_processes=3", f"--process_id={task}"]


def _tpu_dry_run(env: dict[str, str], *options: str) -> str:
  return subprocess.run(["bash", "launch/tpu_pod.sh", "--dry-run", *options, "my-tpu",
                         "us-central2-b", "configs/lift_arid.py", "gs://b/run", "--config.seed=1",
                         "--config.name=a b"], cwd=REPO, env=env, check=True,
                        capture_output=True, text=True, timeout=60).stdout


def test_tpu_dry_run_prints_the_gcloud_command(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "DARKJAX_DATA"}
  words = shlex.split(_tpu_dry_run(env, "--attach"))
  assert words[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone",
                       "us-central2-b", "--worker=all"]
  train = ["python", "-m", "darkjax.main", "--config=configs/lift_arid.py",
           "--workdir=gs://b/run", "--jax_distributed", "--config.seed=1", "--config.name=a b"]
  assert words[9] == "--command"
  assert shlex.split(words[10]) == ["cd", "~/darkjax", "&&", ".", ".venv/bin/activate", "&&",
                                    *train]
  # by default detached on each host (its own session, no terminal), output to a log there, so
  # that the run outlives the ssh session: run here, through a fake venv whose python records
  # its arguments
  remote = shlex.split(_tpu_dry_run(env))[10]
  venv = tmp_path / "darkjax" / ".venv" / "bin"
  venv.mkdir(parents=True)
  (venv / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$HOME/argv"; '
                               'cut -d" " -f6 /proc/$$/stat > "$HOME/sid"; echo trained\n')
  (venv / "python").chmod(0o755)
  (venv / "activate").write_text(f'PATH="{venv}:$PATH"\n')
  started = subprocess.run(["bash", "-c", remote], env={**env, "HOME": str(tmp_path)},
                           check=True, capture_output=True, text=True, timeout=60).stdout
  assert ": started, log ~/darkjax-logs/run-" in started
  log = tmp_path / started.strip().rsplit("~/", 1)[1]
  deadline = time.time() + 30
  while time.time() < deadline and not (tmp_path / "sid").exists():
    time.sleep(0.05)
  time.sleep(0.2)
  assert (tmp_path / "argv").read_text().splitlines() == train[1:]
  assert log.read_text().strip() == "trained"
  assert int((tmp_path / "sid").read_text()) != os.getsid(0)   # a session of its own
  usage = subprocess.run(["bash", "launch/tpu_pod.sh", "--dry-run", "my-tpu"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
  assert usage.returncode == 2 and "usage:" in usage.stderr
  # a mistyped option, or --dry-run after the positionals: refused, gcloud never run
  fake_bin = tmp_path / "bin"
  fake_bin.mkdir()
  (fake_bin / "gcloud").write_text(f'#!/bin/sh\ntouch "{tmp_path}/gcloud_ran"\n')
  (fake_bin / "gcloud").chmod(0o755)
  path_env = {**env, "PATH": f"{fake_bin}:{env.get('PATH', '')}"}
  positionals = ["my-tpu", "us-central2-b", "configs/lift_arid.py", "gs://b/run"]
  for args, line in ((["--dryrun", *positionals], "unknown option --dryrun"),
                     ([*positionals, "--dry-run"], "--dry-run goes before TPU_NAME")):
    refused = subprocess.run(["bash", "launch/tpu_pod.sh", *args], cwd=REPO, env=path_env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and line in refused.stderr, refused.stderr
  assert not (tmp_path / "gcloud_ran").exists()


@pytest.mark.parametrize("data", ["gs://b/data", "/shared/dark data"])
def test_tpu_dry_run_passes_darkjax_data_on_to_every_host(data):
  """A $DARKJAX_DATA set where the launcher runs is set in the remote command (shell-quoted), so
  every host's config reads its datasets from there."""
  words = shlex.split(_tpu_dry_run({**os.environ, "DARKJAX_DATA": data}, "--attach"))
  remote = shlex.split(words[words.index("--command") + 1])
  assert remote[:7] == ["cd", "~/darkjax", "&&", ".", ".venv/bin/activate", "&&",
                        f"DARKJAX_DATA={data}"]
  assert remote[7:10] == ["python", "-m", "darkjax.main"]
  words = shlex.split(_tpu_dry_run({**os.environ, "DARKJAX_DATA": data}))   # detached
  remote = shlex.split(words[words.index("--command") + 1])
  assert remote[11:15] == [f"DARKJAX_DATA={data}", "nohup", "setsid", "python"]


def _bench_argv(line: str) -> tuple[dict[str, str], list[str]]:
  """A dry-run line of launch/bench_gpu.sh: (the environment it sets with `env`, bench's argv)."""
  words, env = shlex.split(line), {}
  if words[0] == "env":
    words.pop(0)
    while "=" in words[0]:
      key, value = words.pop(0).split("=", 1)
      env[key] = value
  assert words[:3] == [sys.executable, "-m", "darkjax.tools.bench"], line
  return env, words[3:]


def test_gpu_bench_dry_run_prints_commands_bench_accepts(tmp_path):
  """launch/bench_gpu.sh (issue #34's GPU run): one bench command per row, config and start, each
  one that bench's parser takes, every paper backbone and paper config in it."""
  from darkjax.tools import bench  # pylint: disable=import-outside-toplevel
  from darkjax.tools.bench_step import parse_variant  # pylint: disable=import-outside-toplevel
  env = dict(os.environ, DARKJAX_DRY_RUN="1", PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu")], cwd=REPO, env=env,
                       check=True, capture_output=True, text=True, timeout=60).stdout.splitlines()
  assert len(out) == 6 + 6 + 3, out
  parsed = []
  for line in out:
    argv = shlex.split(line)
    assert argv[:3] == [sys.executable, "-m", "darkjax.tools.bench"], line
    parsed.append(bench.parse_args(argv[3:]))
  rows = [(a.model, a.batch, a.frames) for a in parsed if a.model]
  assert rows == [("resnext3d_101", 8, 64), ("r2plus1d_34_ig65m", 8, 32), ("r2plus1d_18", 16, 16),
                  ("r2plus1d_18", 64, 16), ("c3d", 30, 16), ("r3d_18", 16, 16)]
  for args in parsed[:6]:
    assert args.torch_compile and args.dtype == "bfloat16" and args.variants.startswith("auto")
    assert args.torch_compile_modes == ("default",)
    assert args.json.endswith(f"row-{args.model}-b{args.batch}-t{args.frames}-sgd.json")
  # R3D-18 beside its convolutions' channels as they are (not padded to multiples of 8);
  # 3D-ResNeXt's default (a channels-last 2D stem, every conv channels-last, its grouped convs'
  # groups bundled) beside its groups as they are, and beside that XLA's channels-first layout,
  # its 1x1x1 convs as GEMMs, its stem as XLA's 3D convolution, its stem pool as strided-slice
  # maxima and autodiff's BatchNorms; the convolutions recorded into command buffers beside the
  # R(2+1)D rows' default; C3D's pools as nn.max_pool and native convolutions beside C3D's and
  # R3D-18's 2D ones
  unbundled = {"group_bundle": 0}
  with_convolutions = {"compiler_options": {"xla_gpu_enable_command_buffer": (
      "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,DYNAMIC_SLICE_FUSION,CONVOLUTION")}}
  native_pools = {"max_pool": "native"}   # nn.max_pool, the form before the GPU default
  unaligned = {"align_channels": "off"}   # channels as they are, not padded to multiples of 8
  assert [parse_variant(v) for v in parsed[0].variants.split(";")] == [
      {}, unbundled, {**unbundled, "compiler_options": {"xla_gpu_force_conv_nhwc": False}},
      {"pointwise": "gemm"}, {"model_kwargs": {"stem_lowering": "native"}},
      {"max_pool": "separable"}, {"bn_relu": "plain"}]
  for args in parsed[1:3]:   # the R(2+1)D rows at their paper batches
    assert [parse_variant(v) for v in args.variants.split(";")] == [{}, with_convolutions]
  # R(2+1)D-18 at batch 64 beside its state copied instead of donated, and its blocks
  # rematerialised keeping their convolutions' outputs
  assert [parse_variant(v) for v in parsed[3].variants.split(";")] == [
      {}, {"donate": "off"}, {"model_kwargs": {"remat": "conv_outputs"}}]
  # C3D and R3D-18: 2D convolutions against native ones channels-last; C3D's pools as nn.max_pool
  assert [parse_variant(v) for v in parsed[4].variants.split(";")] == [
      {}, native_pools, {"lowering": "native"}]
  assert [parse_variant(v) for v in parsed[5].variants.split(";")] == [
      {}, unaligned, {"lowering": "native"}]
  # every timed row and config also times its steps dispatched back to back (--pipelined)
  assert all(args.pipelined for args in parsed[:12]) and not any(
      args.pipelined for args in parsed[12:])
  configs = [a.config for a in parsed[6:]]
  assert all(os.path.isfile(os.path.join(REPO, c)) for c in configs)
  # each config's step also fed by its own train pipeline and input workers (--with-input)
  assert all(a.with_input for a in parsed[6:12]) and not any(a.with_input for a in parsed[:6])
  assert {os.path.basename(c).split("_")[0] for c in configs} == {
      "lift", "actlumos", "dtcm", "twostream", "dinet"}
  # a config entry with overrides: LIFT-Net with flax's attention beside cuDNN's fused default,
  # in a JSON of its own
  lever = parsed[11]
  assert (lever.config, lever.set) == ("configs/lift_arid.py", ["model.kwargs.attention=xla"])
  assert lever.json.endswith("config-lift_arid-model_kwargs_attention_xla.json")
  assert not any(a.set for a in parsed[6:11])
  # part `warm`: DTCM's compile cold, warm, then with another learning rate through the same
  # cache (an ablation's new program, its autotuning cached)
  warm = parsed[12:]
  assert {a.config for a in warm} == {"configs/dtcm_arid.py"} and all(a.compile_only for a in warm)
  assert [os.path.basename(a.json) for a in warm] == [
      "start-cold.json", "start-warm.json", "start-ablation.json"]
  assert [a.set for a in warm] == [[], [], ["optimizer.lr=5e-6"]]
  assert {a.data_dir for a in warm} == {str(tmp_path / "gpu") + ".data"}   # rendered once
  # every config command renders its stand-in clips into one directory beside OUT_DIR, once per
  # clip geometry for the whole run
  assert {a.data_dir for a in parsed[6:12]} == {str(tmp_path / "gpu") + ".data"}
  # part `autotune` (not a default): the slowest-compiling configs again, each compile alone and
  # without persistent caches: at the defaults, at GPU autotuning level 2 (no result checks), with
  # Triton GEMMs off, with the in-process PTX compiler, at level 1 and without cuDNN's
  # nondeterministic algorithms; every config under one set
  # before the next set, so that a deadline cuts the last sets; a set's third part is config
  # overrides (--set)
  autotune = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "autotune"],
                            cwd=REPO, env=dict(env, XLA_FLAGS="--xla_a=1"), check=True,
                            capture_output=True, text=True, timeout=60).stdout.splitlines()
  flags = {"solo": ("--xla_a=1", {}),
           "autotune2": ("--xla_a=1 --xla_gpu_autotune_level=2", {}),
           "tritonoff": ("--xla_a=1 --xla_gpu_enable_triton_gemm=false", {}),
           "nvptx": ("--xla_a=1 --xla_gpu_enable_libnvptxcompiler=true", {}),
           "autotune1": ("--xla_a=1 --xla_gpu_autotune_level=1", {}),
           "determ": ("--xla_a=1 --xla_gpu_exclude_nondeterministic_ops=true", {})}
  configs = ["actlumos_arid", "lift_arid"]
  assert [os.path.basename(shlex.split(line)[-1]) for line in autotune] == [
      f"{name}-config-{config}.json" for name in flags for config in configs], autotune
  for line in autotune:
    words = shlex.split(line)
    assert words[:5] == ["env", "-u", "JAX_COMPILATION_CACHE_DIR", "-u",
                         "TORCHINDUCTOR_CACHE_DIR"], line
    args = bench.parse_args(words[9:])
    name, config = os.path.basename(args.json)[:-len(".json")].split("-config-")
    log = f"--xla_gpu_dump_autotune_logs_to={tmp_path / 'gpu'}/{name}-config-{config}"
    assert words[5] == f"XLA_FLAGS={flags[name][0]} {log}.autotune.textproto", line
    assert dict(s.split("=", 1) for s in args.set) == flags[name][1], line
    assert args.config == f"configs/{config}.py" and args.pipelined
  # DARKJAX_BENCH_XLA_SETS: sets of several overrides, and a set of none
  custom = subprocess.run(
      ["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "autotune"], cwd=REPO,
      env=dict(env, XLA_FLAGS="", DARKJAX_BENCH_AUTOTUNE_CONFIGS="configs/actlumos_arid.py",
               DARKJAX_BENCH_XLA_SETS="a:--xla_b=2:conv_lowering=native,seed=3;c:"),
      check=True, capture_output=True, text=True, timeout=60).stdout.splitlines()
  logs = [f"--xla_gpu_dump_autotune_logs_to={tmp_path / 'gpu'}/{name}-config-actlumos_arid"
          ".autotune.textproto" for name in "ac"]
  assert [shlex.split(line)[5] for line in custom] == [f"XLA_FLAGS=--xla_b=2 {logs[0]}",
                                                        f"XLA_FLAGS={logs[1]}"]
  assert [bench.parse_args(shlex.split(line)[9:]).set for line in custom] == [
      ["conv_lowering=native", "seed=3"], []], custom
  # part `init` (not a default): the largest paper init as darkjax runs it on a GPU against XLA's
  # lowering of it, bit for bit
  init = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "init"], cwd=REPO,
                        env=env, check=True, capture_output=True, text=True,
                        timeout=60).stdout.splitlines()
  assert len(init) == 1, init
  args = bench.parse_args(shlex.split(init[0])[3:])
  assert args.check_init and args.config == "configs/lift_arid.py"
  assert args.json == str(tmp_path / "gpu" / "init-check-lift_arid.json")
  assert args.data_dir == str(tmp_path / "gpu") + ".data"
  # part `coldstart` (not a default): each mode of the cold-start compiles in its own process,
  # no persistent cache (XLA keeps its autotuning results in the process)
  cold = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "coldstart"],
                        cwd=REPO, env=env, check=True, capture_output=True, text=True,
                        timeout=60).stdout.splitlines()
  assert len(cold) == 2, cold
  for line, mode in zip(cold, ("sequential", "aside")):
    words = shlex.split(line)
    assert words[:3] == ["env", "-u", "JAX_COMPILATION_CACHE_DIR"], words
    args = bench.parse_args(words[6:])
    assert args.cold_start and args.cold_start_mode == mode and args.rounds == 1
    assert args.json == str(tmp_path / "gpu" / f"coldstart-{mode}-lift_arid.json")
  bad = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "speed"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "unknown part 'speed'" in bad.stderr
  # part `table`: issue #34's Done-when table and nothing beside, sized for one lease: the same
  # rows at darkjax's defaults alone, the configs without override entries, no profiles, the
  # compile pre-pass 4 at a time; the levers' variants and entries are left out
  table = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "table"],
                         cwd=REPO, env=env, check=True, capture_output=True, text=True,
                         timeout=60).stdout.splitlines()
  table = [bench.parse_args(_bench_argv(line)[1]) for line in table]
  assert len(table) == 2 * 11, table
  pre, timed_table = table[:11], table[11:]
  assert all(a.compile_only and a.concurrent == 4 for a in pre)
  assert [(a.model, a.batch, a.frames) for a in timed_table[:6]] == rows
  assert [a.config for a in timed_table[6:]] == [a.config for a in parsed[6:11]]
  for args, before in zip(timed_table, parsed[:11]):
    assert args.variants in (None, "auto") and not args.set and args.profile == 0
    assert args.cold_from and args.pipelined and args.json == before.json
  for mixed in ("rows", "configs", "warm"):
    bad = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "table", mixed],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"not with '{mixed}'" in bad.stderr, bad.stderr
  # the timed rows and configs profile 3 steps each unless DARKJAX_BENCH_PROFILE says otherwise
  # (0: none)
  assert all(a.profile == 3 for a in parsed[:12])
  for value, expected in (("0", 0), ("5", 5)):
    lean = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "rows"], cwd=REPO,
                          env=dict(env, DARKJAX_BENCH_PROFILE=value), check=True,
                          capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert [bench.parse_args(shlex.split(line)[3:]).profile for line in lean] == [expected] * 6
  bad = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "rows"], cwd=REPO,
                       env=dict(env, DARKJAX_BENCH_PROFILE="x"), capture_output=True, text=True,
                       timeout=60)
  assert bad.returncode == 2 and "DARKJAX_BENCH_PROFILE=x" in bad.stderr
  # DARKJAX_BENCH_TORCH=0: each row's flax variants alone (its levers), with the pre-pass's
  # compiles as their cold ones; not for the Done-when table, which times torch.compile
  levers = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "rows"],
                          cwd=REPO, env=dict(env, DARKJAX_BENCH_TORCH="0", DARKJAX_BENCH_JOBS="2"),
                          check=True, capture_output=True, text=True, timeout=60).stdout
  lever_envs = {bench.parse_args(argv).json: env for env, argv in map(_bench_argv,
                                                                      levers.splitlines())}
  levers = [bench.parse_args(_bench_argv(line)[1]) for line in levers.splitlines()]
  assert not any(a.vs_torch or a.torch_compile for a in levers)
  pre, timed = [a for a in levers if a.compile_only], [a for a in levers if not a.compile_only]
  assert levers[-6:] == timed and [a.variants for a in timed] == [a.variants for a in parsed[:6]]
  assert all(a.pipelined and a.profile == 3 for a in timed)
  # each variant compiled by a pre-pass command of its own (the longest row's variants side by
  # side, not one after the other), all of which the timed row reads as its cold compiles
  for args in timed:
    specs = args.variants.split(";")
    mine = [a for a in pre if (a.model, a.batch, a.frames) == (args.model, args.batch, args.frames)]
    assert [a.variants for a in mine] == specs
    assert args.cold_from == [a.json for a in mine] and len(set(args.cold_from)) == len(specs)
    assert all(lever_envs[a.json] == lever_envs[args.json] for a in mine)   # the row's caches
  for value, message in (("0", "not with DARKJAX_BENCH_TORCH=0"), ("2", "is not 0 or 1")):
    bad = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu"), "table"],
                         cwd=REPO, env=dict(env, DARKJAX_BENCH_TORCH=value), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr
  # With DARKJAX_BENCH_JOBS=4: first every row's and config's compile-only command, then the
  # same timed commands reading that pre-pass's JSON as their cold compiles; no separate warm part
  jobs = subprocess.run(["bash", "launch/bench_gpu.sh", str(tmp_path / "gpu")], cwd=REPO,
                        env=dict(env, DARKJAX_BENCH_JOBS="4"), check=True, capture_output=True,
                        text=True, timeout=60).stdout.splitlines()
  assert len(jobs) == 2 * 12, jobs
  envs = [_bench_argv(line)[0] for line in jobs]
  pre = [bench.parse_args(_bench_argv(line)[1]) for line in jobs[:12]]
  timed = [bench.parse_args(_bench_argv(line)[1]) for line in jobs[12:]]
  # each row and config compiles into caches of its own (no command reuses another's XLA
  # autotuning or inductor kernels: its pre-pass compile is cold), which its timed run reads
  for env_pre, cold in zip(envs[:12], pre):
    name = os.path.basename(cold.json)[len("cold-"):-len(".json")]
    assert env_pre == {"JAX_COMPILATION_CACHE_DIR": f"{tmp_path}/gpu.cache/{name}/jax",
                       "TORCHINDUCTOR_CACHE_DIR": f"{tmp_path}/gpu.cache/{name}/inductor"}
  assert sorted(map(str, envs[:12])) == sorted(map(str, envs[12:]))
  assert len({env["JAX_COMPILATION_CACHE_DIR"] for env in envs}) == 12
  # the pre-pass takes a row and a config in turn, so the longest compiles start first
  assert [bool(a.model) for a in pre] == [True, False] * 6
  assert [a.model or a.config for a in pre[:4]] == [
      "resnext3d_101", "configs/actlumos_arid.py", "r2plus1d_34_ig65m", "configs/lift_arid.py"]
  pre = [a for a in pre if a.model] + [a for a in pre if not a.model]
  assert all(a.compile_only and a.concurrent == 4 and not a.cold_from for a in pre)
  for cold, args, before in zip(pre, timed, parsed):
    assert vars(args) == vars(before) | {"cold_from": [cold.json]}
    assert os.path.basename(cold.json) == "cold-" + os.path.basename(args.json)
    assert (cold.model, cold.config, cold.set, cold.batch, cold.frames, cold.variants) == (
        args.model, args.config, args.set, args.batch, args.frames, args.variants)


def test_explicit_distributed_flags_keep_every_gpu_of_a_slurm_task(tmp_path):
  """Under SLURM with the coordinator, count and id given (launch/slurm_gpu.sbatch), darkjax.main
  turns jax's cluster detection off: jax's SLURM detection would set jax_cuda_visible_devices to
  SLURM_LOCALID ("0": one GPU of the node's eight). One process, initialised as main does."""
  from darkjax import main  # pylint: disable=import-outside-toplevel
  assert main.distributed_detection("h:1", 2, 0) == "deactivate"
  assert main.distributed_detection(None, None, None) is None
  assert main.distributed_detection("h:1", None, 0) is None
  script = (
      "import jax; from darkjax import main\n"
      "from darkjax.tools import slurm; import os\n"
      "args = dict(f[2:].split('=', 1) for f in slurm.distributed_flags(os.environ))\n"
      "jax.distributed.initialize(args['coordinator_address'], int(args['num_processes']),\n"
      "    int(args['process_id']), cluster_detection_method=main.distributed_detection(\n"
      "    args['coordinator_address'], int(args['num_processes']), int(args['process_id'])))\n"
      "print(jax.config.read('jax_cuda_visible_devices'))\n"
      "jax.distributed.shutdown()\n")
  env = dict(os.environ, SLURM_JOB_ID="4711", SLURM_NTASKS="1", SLURM_PROCID="0",
             SLURM_LOCALID="0", SLURM_STEP_NODELIST="localhost", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  assert out.strip().splitlines()[-1] == "all", out


def test_distributed_flags_are_checked_in_one_line(tmp_path, monkeypatch):
  """The multi-process flags without --jax_distributed (N full runs into one workdir, before),
  a coordinator port that is no number, an id not below the count, no cluster to detect, and a
  gs:// workdir without gcsfs: each one line, before anything runs."""
  from darkjax import main  # pylint: disable=import-outside-toplevel
  problem = main.distributed_flags_problem
  assert problem("127.0.0.1:12355", 2, 1) is None and problem(None, None, None) is None
  assert "--coordinator_address=127.0.0.1:abc: expected HOST:PORT" in problem("127.0.0.1:abc",
                                                                              1, 0)
  assert "--process_id=2: expected 0 to --num_processes - 1 (1)" in problem("h:1", 2, 2)
  assert "--num_processes=0" in problem("h:1", 0, 0)
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "gcsfs" else real_find_spec(name, *a))
  assert "gs:// paths need gcsfs: pip install -e '.[gcs]'" in main.url_package_missing("gs://b/x")
  assert main.url_package_missing("/local/run") is None
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  env.update(JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "darkjax.main", "--config=configs/synthetic.py:runlocal",
          f"--workdir={tmp_path / 'w'}"]
  for flags, line in ((["--num_processes=2", "--process_id=1"],
                       "darkjax: --num_processes, --process_id are for a multi-process run: add "
                       "--jax_distributed"),
                      (["--jax_distributed"], "darkjax: --jax_distributed: ")):
    result = subprocess.run(base + flags, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and line in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()
