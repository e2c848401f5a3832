"""How problems are said to a user, shared by the library and the tools that must start without
jax (darkjax.tools.slurm runs in a login shell): the standard library only, nothing of darkjax."""

from __future__ import annotations

import errno
import os


def error_text(error: BaseException) -> str:
  """An error's message as said to a user: a KeyError's own text, not its repr in quotes."""
  return str(error.args[0] if isinstance(error, KeyError) and error.args else error)


def is_port(text: str) -> bool:
  """Whether `text` is a TCP port number a coordinator can listen on: 1 to 65535."""
  return text.isdigit() and 0 < int(text) < 65536


# What to do about an OSError a run meets on the machine's resources, by errno.
_RESOURCE_ADVICE = {
    "ENOSPC": "free space on that disk, or give the run a directory on a larger one",
    "EDQUOT": "free space within your disk quota, or give the run a directory elsewhere",
    "EACCES": "make it writable, or give the run a directory you can write to",
    "EPERM": "make it writable, or give the run a directory you can write to",
    "EROFS": "the file system is read-only: give the run a directory you can write to",
    "EMFILE": "too many open files: raise the limit (`ulimit -n 4096`) or lower "
              "config.input.workers",
    "ENFILE": "the system's open-file table is full: close other programs or raise fs.file-max",
}


def resource_problem(error: BaseException) -> str | None:
  """One line for an OSError of the machine's resources (a full disk, a directory that is not
  writable, too many open files): the path, what happened, what to do and that the same
  command then resumes; None for any other error."""
  if not isinstance(error, OSError) or error.errno is None:
    # orbax / TensorStore / XLA report the same conditions in their own error types, by text
    text = str(error)
    found = next((code for code, words in _RESOURCE_WORDS.items() if words in text), None)
    if found is None:
      return None
    first = next((line.strip() for line in text.splitlines()
                  if _RESOURCE_WORDS[found] in line), text)
    return (f"{first[:400]}; {_RESOURCE_ADVICE[found]}, then rerun the same command: it resumes "
            "from its last checkpoint")
  advice = _RESOURCE_ADVICE.get(errno.errorcode.get(error.errno, ""))
  if advice is None:
    return None
  where = f"{error.filename}: " if error.filename else ""
  return (f"{where}{error.strerror or error}; {advice}, then rerun the same command: it resumes "
          "from its last checkpoint")


# strerror's words for those conditions, as other libraries' errors quote them.
_RESOURCE_WORDS = {code: os.strerror(getattr(errno, code))
                   for code in ("ENOSPC", "EDQUOT", "EROFS", "EMFILE", "EACCES")}


def address_space_limit() -> str | None:
  """A warning when the process runs under a virtual-memory limit (`ulimit -v`): XLA and its
  thread pools reserve far more address space than they use, so such a run can abort
  (std::bad_alloc, "cannot allocate memory for thread-local data") with memory to spare."""
  import resource  # pylint: disable=import-outside-toplevel
  soft, _ = resource.getrlimit(resource.RLIMIT_AS)
  if soft == resource.RLIM_INFINITY:
    return None
  return (f"a virtual-memory limit of {soft / 2**30:.1f} GiB is set (`ulimit -v`): XLA reserves "
          "more address space than it uses, and the run may abort (std::bad_alloc) with memory to "
          "spare; lift it (`ulimit -v unlimited`) and limit resident memory instead (a cgroup, "
          "`systemd-run -p MemoryMax=`)")
