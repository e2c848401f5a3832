"""Entry point: `python -m darkjax.main --config=configs/<paper>_<dataset>.py[:args] --workdir=DIR`.

Runs the phases that `config.trainer`'s paper declares (`darkjax.phases.run_phases`); the config is
checked by `darkjax.config.validate` first. Re-running the same command resumes from the latest
checkpoint in --workdir (a local directory or a URL such as gs://bucket/run).

Several processes (docs/multihost.md): `--jax_distributed` calls `jax.distributed.initialize`,
which finds the coordinator, process count and id on Cloud TPU and under SLURM by itself; elsewhere
give them with --coordinator_address, --num_processes and --process_id. Given all three, jax's
cluster detection is off: under SLURM it would also limit the process to the GPU numbered by
SLURM_LOCALID (GPU 0 of one task a node holding 8: launch/slurm_gpu.sbatch), where darkjax's
process takes every GPU of its node ($JAX_LOCAL_DEVICE_IDS still limits it). A process that stops
answering for --heartbeat_timeout seconds makes the others stop with an error naming it.
"""

from __future__ import annotations

import logging
import os
import re
import sys

import ml_collections as mlc
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from darkjax import messages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (with :args).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False, "Call jax.distributed.initialize() (multi-host: TPU pods, SLURM).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (with --jax_distributed; default: "
    "detected on Cloud TPU / SLURM).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --jax_distributed.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --jax_distributed.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds without a heartbeat after which a process counts as dead "
    "and the others stop with an error (with --jax_distributed).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the Python traceback of a bad-input error "
                             "(otherwise one line says what is wrong and what to do).")
flags.mark_flags_as_required(["config", "workdir"])


def distributed_detection(coordinator: str | None, num_processes: int | None,
                          process_id: int | None) -> str | None:
  """`jax.distributed.initialize`'s cluster_detection_method: "deactivate" when the flags give
  the coordinator, process count and id (module docstring), else jax's detection."""
  given = (coordinator, num_processes, process_id)
  return "deactivate" if all(v is not None for v in given) else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from darkjax.layers.conv import configure_cpu_flags  # pylint: disable=import-outside-toplevel
  configure_cpu_flags()
  # absl/orbax log every checkpoint step at INFO; darkjax's own progress is the bar + its logger.
  absl_logging.set_verbosity(absl_logging.WARNING)
  handler = BarSafeHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s darkjax: %(message)s"))
  darkjax_log = logging.getLogger("darkjax")
  darkjax_log.addHandler(handler)
  darkjax_log.setLevel(logging.INFO)
  darkjax_log.propagate = False
  limited = messages.address_space_limit()
  if limited:
    darkjax_log.warning(limited)
  # Imported here so XLA flags are set before jax initialises its backends.
  import jax  # pylint: disable=import-outside-toplevel
  given = [f"--{flag.name}" for flag in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)
           if flag.value is not None]
  if given and not _DISTRIBUTED.value:   # else N full single-process runs into one workdir
    print(f"darkjax: {', '.join(given)} {'is' if len(given) == 1 else 'are'} for a multi-process "
          "run: add --jax_distributed (docs/multihost.md)", file=sys.stderr)
    sys.exit(2)
  if _DISTRIBUTED.value:
    problem = distributed_flags_problem(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
    if problem:
      print(f"darkjax: {problem}", file=sys.stderr)
      sys.exit(2)
    try:
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                 heartbeat_timeout_seconds=_HEARTBEAT.value,
                                 cluster_detection_method=distributed_detection(
                                     _COORDINATOR.value, _NUM_PROCESSES.value,
                                     _PROCESS_ID.value))
    except ValueError as error:   # jax found no cluster to read the three from
      if _VERBOSE.value:
        raise
      print(f"darkjax: --jax_distributed: {error} Outside a Cloud TPU pod or SLURM job give "
            "--coordinator_address=HOST:PORT --num_processes=N --process_id=I "
            "(docs/multihost.md)", file=sys.stderr)
      sys.exit(2)
    darkjax_log.info("process %d of %d, %d local devices of %d", jax.process_index(),
                     jax.process_count(), jax.local_device_count(), jax.device_count())
  from darkjax import phases  # pylint: disable=import-outside-toplevel
  from darkjax.preemption import Preempted  # pylint: disable=import-outside-toplevel
  made = []   # the workdir, where this call made it
  try:
    results = phases.run_phases(_config(), _workdir(made))
  except Preempted as e:  # a clean stop: the checkpoint is saved, a rerun resumes
    print(f"darkjax: {e}", file=sys.stderr)
    sys.exit(130 if e.interrupted else 0)
  except _user_errors() as e:
    for directory in made:   # bad input found before anything was written: no empty workdir left
      _remove_empty_tree(directory)
    if _VERBOSE.value:
      raise
    print(f"darkjax: {messages.error_text(e)}", file=sys.stderr)
    sys.exit(2)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      _resource_problem(e, made)
      raise
    # A collective with a dead peer fails here; JAX's coordination service then stops this
    # process too, naming the dead one ("Task N heartbeat timeout"), within --heartbeat_timeout.
    print(f"darkjax: process {jax.process_index()} of {jax.process_count()} stopped: a "
          f"collective failed ({str(e).splitlines()[0]}); another process probably died. The "
          f"coordination service names the lost process below within {_HEARTBEAT.value} s "
          f"(--heartbeat_timeout).", file=sys.stderr, flush=True)
    sys.exit(3)
  except Exception as e:  # pylint: disable=broad-except  (OSErrors; orbax's, TensorStore's types)
    _resource_problem(e, made)
    raise
  summary = {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and "/" in k
             and "per_class" not in k and not k.endswith("num_examples")}
  print("final:", ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary.items())))


def _resource_problem(error: BaseException, made: list[str]) -> None:
  """Exits with one line (status 1) where `error` is the machine's resources failing the run (a
  full disk, a directory it cannot write, too many open files: `messages.resource_problem`);
  returns otherwise, for the caller to raise it."""
  problem = messages.resource_problem(error)
  if problem is None or _VERBOSE.value:
    return
  for directory in made:
    _remove_empty_tree(directory)
  print(f"darkjax: {problem}", file=sys.stderr)
  sys.exit(1)


class BarSafeHandler(logging.StreamHandler):
  """stderr log lines written around the progress bar (tqdm.write clears the bar, writes the
  line, draws the bar again): a line logged while a bar shows no longer lands inside it."""

  def emit(self, record: logging.LogRecord) -> None:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    try:
      tqdm.write(self.format(record), file=self.stream)
      self.flush()
    except Exception:  # pylint: disable=broad-except  # logging's own contract
      self.handleError(record)


# What each required flag is, for the line that says it is missing
_REQUIRED = {"config": "the config file, e.g. --config=configs/synthetic.py (args after ':')",
             "workdir": "the directory the run writes its checkpoints, metrics and report into "
                        "(made if missing; a rerun into it resumes)"}


def _user_errors() -> tuple[type[BaseException], ...]:
  """What bad input raises (its message names the file, key, step or setting and what to do):
  printed as one line, no traceback unless --verbose."""
  # pylint: disable=import-outside-toplevel
  from darkjax import config as config_lib
  from darkjax import checkpoint, fit, task, train
  from darkjax.convert.common import ConversionError
  from darkjax.convert.io import CheckpointReadError
  from darkjax.data.flow import FlowError
  from darkjax.data.normalise import NormalisationMismatchError
  from darkjax.data.ops import ClipSpecError
  from darkjax.data.prepared import (DatasetMismatchError, DatasetNotPreparedError,
                                     DatasetSplitError, MissingStreamError)
  from darkjax.data.records import CorruptRecordError, DatasetDirError
  from darkjax.trainers.twostream import MissingFlowStreamError, TowerInitError
  return (config_lib.ConfigError, DatasetNotPreparedError, DatasetSplitError, MissingStreamError,
          DatasetMismatchError,
          DatasetDirError, ClipSpecError, CorruptRecordError, CheckpointReadError, ConversionError,
          NormalisationMismatchError, FlowError, MissingFlowStreamError, TowerInitError,
          train.NonFiniteLossError, train.CheckpointMismatchError, task.MissingCapabilityError,
          fit.DeviceMemoryError, checkpoint.DamagedCheckpointError)


def _config():
  """The --config flag's ConfigDict, validated; a file, arg or override that fails to load is a
  ConfigError naming it."""
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  try:
    config = _CONFIG.value
    config.to_dict()   # the flag loads lazily: load the file and apply the overrides here
  except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
    if _VERBOSE.value:
      raise
    text = _config_error_text(error, sys.argv)
    raise config_lib.ConfigError(f"--config: {' '.join(text.split())}") from None
  return config_lib.validate(config)


def _config_error_text(error: BaseException, argv: list[str]) -> str:
  """What a config file, arg string or override that failed to load means: a missing file, an
  override of a key the config lacks, else the error's own message."""
  text = messages.error_text(error)
  missing = re.search(r"No such file or directory: '([^']+)'", text)
  if missing:
    return f"config file {missing.group(1)} does not exist"
  if isinstance(error, (KeyError, AttributeError)):
    return _unknown_key(text, argv) or text
  return text


def _unknown_key(text: str, argv: list[str]) -> str | None:
  """What ml-collections' error for an override of a key the config lacks (`'phases'`, `'lrr'
  Did you mean "lr"`) means, naming the override; None if no `--config.` override names the key."""
  key = re.search(r"'(\w+)\\?'", text.replace("\\'", "'"))
  if key is None:
    return None
  overrides = [a for a in argv if a.startswith("--config.")]
  named = [a for a in overrides
           if key.group(1) in a.partition("=")[0].removeprefix("--config.").split(".")]
  if not named:
    return None
  path = named[0].partition("=")[0].removeprefix("--config.")
  parent = path[:path.rindex(key.group(1))].rstrip(".")
  where = f"config.{parent}" if parent else "the config"
  hint = re.search(r'Did you mean "(\w+)"', text)
  return (f"{named[0]}: {where} has no key '{key.group(1)}'"
          + (f'; did you mean "{hint.group(1)}"?' if hint else ".") + _keys(argv, parent)
          + " An override (--config.KEY=VALUE) sets a key the config file defines; a config arg "
            "goes after the file's ':'.")


def _keys(argv: list[str], parent: str) -> str:
  """' Its keys: [...].' for the config (without overrides) at `parent`, or '' if it cannot be
  loaded."""
  try:
    _, node = _file_config(argv)
    for part in filter(None, parent.split(".")):
      node = node[part]
    return f" Its keys: {sorted(node.keys())}."
  except Exception:  # pylint: disable=broad-except  # only a hint: the error is the message
    return ""


def _file_config(argv: list[str]) -> tuple[str, mlc.ConfigDict]:
  """(the `--config=` spec of `argv`, its config as the file gives it, without overrides)."""
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  spec = next(a.removeprefix("--config=") for a in argv if a.startswith("--config="))
  return spec, config_lib.load(spec)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (usage errors as absl prints them); a config file, arg string or override
  that fails while the flags are parsed is one line, as in `_config`."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as flag_error:
    missing = re.match(r"flag --(\w+)=None: Flag --\w+ must have a value", str(flag_error))
    if missing and missing.group(1) in _REQUIRED:
      print(f"darkjax: --{missing.group(1)} is required: {_REQUIRED[missing.group(1)]}",
            file=sys.stderr)
      sys.exit(2)
    cause = _config_file_error(flag_error)
    typed = _override_value_error(flag_error, argv)
    if typed and "--verbose" not in argv:
      print(f"darkjax: --config: {typed}", file=sys.stderr)
      sys.exit(2)
    if cause is None or "--verbose" in argv:   # absl's own report (app.parse_flags_with_usage)
      print(f"FATAL Flags parsing error: {flag_error}\nPass --helpshort or --helpfull to see "
            "help on flags.", file=sys.stderr)
      sys.exit(1)
  except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
    if "--verbose" in argv:
      raise
    cause = error
  print(f"darkjax: --config: {' '.join(_config_error_text(cause, argv).split())}",
        file=sys.stderr)
  sys.exit(2)


def _override_value_error(error: BaseException, argv: list[str]) -> str | None:
  """What ml-collections' error for an override whose value its key's type does not take
  (`--config.optimizer.lr=abc`: "could not convert string to float") means: the override, the
  key's type and its value in the config; None for any other flag error."""
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  found = re.match(r"flag (--config\.([\w.]+))=(.*?): (.*)", " ".join(str(error).split()))
  if found is None:
    return None
  flag, key, value, reason = found.groups()
  try:
    spec, config = _file_config(argv)
    default = config_lib.get_key(config, key)
  except Exception:  # pylint: disable=broad-except  # only a hint: absl's message stands
    return f"{flag}={value}: {reason}"
  return (f"{flag}={value}: {reason}; config.{key} is of type {type(default).__name__} "
          f"({default!r} in {spec}): give a value of that type")


def _config_file_error(error: BaseException) -> BaseException | None:
  """The error a config file's `get_config` raised, under the flag error absl makes of it
  (ml-collections re-raises a ValueError or TypeError with the traceback in its message, absl then
  its own): None for any other flag error."""
  wrapper = "Error whilst parsing config file"
  seen = error
  while seen is not None:
    if str(seen).startswith(wrapper):
      return seen.__context__
    seen = seen.__context__
  return None


def _remove_empty_tree(directory: str) -> None:
  """Removes the directories under `directory` (and it) that hold no file, as a run that stopped
  on bad input leaves them (a phase's empty checkpoints/); one with a file stays, and its parents."""
  for root, _, _ in os.walk(directory, topdown=False):
    try:
      os.rmdir(root)   # only an empty one
    except OSError:
      pass


def distributed_flags_problem(coordinator: str | None, num_processes: int | None,
                              process_id: int | None) -> str | None:
  """What is wrong with --jax_distributed's given flags (a port that is no number, an id not
  below the count), or None: said in one line before jax.distributed starts."""
  if coordinator is not None:
    host, _, port = coordinator.rpartition(":")
    if not host or not messages.is_port(port):
      return (f"--coordinator_address={coordinator}: expected HOST:PORT, the port a number "
              "from 1 to 65535 (process 0's host and a free port)")
  if num_processes is not None and num_processes < 1:
    return f"--num_processes={num_processes}: expected at least 1"
  if process_id is not None and (process_id < 0 or (num_processes is not None
                                                    and process_id >= num_processes)):
    return (f"--process_id={process_id}: expected 0 to --num_processes - 1 "
            f"({num_processes - 1 if num_processes else '?'})")
  return None


# The fsspec package each URL scheme needs, and the extra that installs it.
_URL_PACKAGES = {"gs": ("gcsfs", "gcs")}


def url_package_missing(url: str) -> str | None:
  """What a URL's filesystem needs that is not installed (gs:// without the gcs extra), or None."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  scheme = url.split("://", 1)[0]
  package, extra = _URL_PACKAGES.get(scheme, (None, None))
  if package is None or importlib.util.find_spec(package) is not None:
    return None
  return (f"{scheme}:// paths need {package}: pip install -e '.[{extra}]' (with your other "
          f"extras, e.g. '.[{extra},torch]'), on every host")


def _workdir(made: list[str] | None = None) -> str:
  """--workdir, which must be a directory (made if missing, then appended to `made`) or a URL
  whose filesystem package is installed."""
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  workdir = _WORKDIR.value
  if "://" in workdir:
    missing = url_package_missing(workdir)
    if missing:
      raise config_lib.ConfigError(f"--workdir {workdir}: {missing}")
    return workdir
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise config_lib.ConfigError(f"--workdir {workdir} is a file; give a directory (it is "
                                 "created if missing; a rerun into the same one resumes)")
  try:   # made now (the run would make it), so that one that cannot be made fails in one line
    if not os.path.isdir(workdir) and made is not None:
      made.append(workdir)
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise config_lib.ConfigError(f"--workdir {workdir} cannot be created ({error.strerror}); give "
                                 "a directory you can write to") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise config_lib.ConfigError(f"--workdir {workdir} is not writable; give a directory you can "
                                 "write to")
  return workdir


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
