"""The jax.distributed flags of one SLURM task: `python -m darkjax.tools.slurm` prints
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` for the task it runs in.

The rule is the one `jax.distributed.initialize()` applies by itself under SLURM for these three,
written out so launch/slurm_gpu.sbatch passes it explicitly and its dry run can show it (jax's
detection, which would also keep each process to one GPU, is then off: darkjax.main): process id =
SLURM_PROCID, process count = SLURM_NTASKS, coordinator = the first host of SLURM_STEP_NODELIST
(SLURM_JOB_NODELIST outside a step) on port 61440 + SLURM_JOB_ID mod 4096, or
$DARKJAX_COORDINATOR_PORT. Imports nothing heavy (no jax; of darkjax only darkjax.messages), so it
runs in a login shell.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping

from darkjax import messages

_REQUIRED = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID")


def first_host(nodelist: str) -> str:
  """First host of a SLURM node list: 'gpu[003-010,012],login1' -> 'gpu003'."""
  match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
  if not match or not match.group(1):
    raise ValueError(f"cannot read a host name from SLURM node list {nodelist!r}")
  prefix, ranges = match.groups()
  if ranges is None:
    return prefix
  return prefix + re.split(r"[,-]", ranges)[0]


def coordinator_address(env: Mapping[str, str]) -> str:
  nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
  if not nodelist:
    raise KeyError("neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set")
  port = env.get("DARKJAX_COORDINATOR_PORT") or str(61440 + int(env["SLURM_JOB_ID"]) % 4096)
  if not messages.is_port(port):
    raise ValueError(f"DARKJAX_COORDINATOR_PORT={port!r}: expected a port number, 1 to 65535")
  return f"{first_host(nodelist)}:{port}"


def distributed_flags(env: Mapping[str, str]) -> list[str]:
  """darkjax.main flags for the SLURM task described by `env`."""
  missing = [name for name in _REQUIRED if name not in env]
  if missing:
    raise KeyError(f"not inside a SLURM job: {', '.join(missing)} unset")
  return [f"--coordinator_address={coordinator_address(env)}",
          f"--num_processes={int(env['SLURM_NTASKS'])}",
          f"--process_id={int(env['SLURM_PROCID'])}"]


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv:   # it takes no arguments: --help, or a mistake
    print(__doc__.strip(), file=sys.stderr if argv not in (["--help"], ["-h"]) else sys.stdout)
    return 0 if argv in (["--help"], ["-h"]) else 2
  try:
    print(" ".join(distributed_flags(os.environ)))
  except (KeyError, ValueError) as error:
    print(f"darkjax.tools.slurm: {messages.error_text(error)}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
