"""Preemption: SIGTERM (what TPU maintenance events and SLURM send before a kill) makes the run
save a checkpoint at a step every process agrees on, then stop.

Under `jax.distributed` (several processes) JAX's preemption sync manager owns SIGTERM: the
process that gets the signal tells the coordination service, which picks the first step no process
has passed yet, and `multihost_utils.reached_preemption_sync_point(step)` is True at that same step
on every process, so all of them save the same checkpoint. The call must come at every step.

In a single process without `jax.distributed` JAX has no such service; `PreemptionWatch` then
installs a SIGTERM handler that only sets a flag, and the next finished step is the one saved.
Ctrl-C (SIGINT) does the same in a single process: the step in flight finishes, its checkpoint is
saved, and the run stops saying how to resume; a second Ctrl-C interrupts at once. An evaluation
(minutes at paper size) does not wait: inside `PreemptionWatch.interruptible()` either signal
stops it at once (`StopRequested`), and the trainer saves the trained steps and stops.

SIGHUP (the terminal or ssh session a run was started from went away) is a SIGTERM: the run saves
and stops instead of dying with everything since its last checkpoint. Under `jax.distributed` it
is passed on to the process as SIGTERM, for JAX's preemption sync manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """The run saved a checkpoint at `step` after SIGTERM (or Ctrl-C: `interrupted`) and stopped;
  rerunning resumes it."""

  def __init__(self, step: int, checkpoint: str, interrupted: bool = False,
               evaluation: str = "", signal_name: str = "SIGTERM"):
    self.step, self.checkpoint, self.interrupted = step, checkpoint, interrupted
    why = ("interrupted (Ctrl-C)" if interrupted else "preempted (SIGTERM)"
           if signal_name == "SIGTERM" else f"stopped ({signal_name})")
    during = f" during {evaluation}" if evaluation else ""
    super().__init__(f"{why}{during}: saved checkpoint {checkpoint} at step {step} and stopped; "
                     "rerun the same command (in Python: Run.train() again) to resume from it")


class StopRequested(BaseException):
  """SIGTERM or Ctrl-C inside `PreemptionWatch.interruptible()`. A BaseException, as
  KeyboardInterrupt is: an evaluator's `except Exception` does not swallow it."""


class PreemptionWatch:
  """`reached(step)` after every finished step: True at the step to save before stopping.

  `close()` puts back the SIGTERM handler a single process had before.
  """

  def __init__(self):
    self._signalled = threading.Event()
    self.interrupted = False   # the signal was Ctrl-C (SIGINT), not SIGTERM
    self._previous: dict[int, object] = {}
    self._urgent = False   # inside interruptible(): a signal raises StopRequested
    self.signal_name = "SIGTERM"   # the signal that stopped the run, for its message
    self._distributed = jax.distributed.is_initialized()
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGHUP,) if self._distributed else (signal.SIGTERM, signal.SIGINT,
                                                            signal.SIGHUP)
      for signum in signals:
        self._previous[signum] = signal.signal(signum, self._on_signal)

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    self._previous = {}

  def _on_signal(self, signum, frame) -> None:  # pylint: disable=unused-argument
    if signum == signal.SIGHUP:
      self.signal_name = "SIGHUP: the terminal or ssh session went away"
      if self._distributed:   # JAX's preemption notifier owns SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if signum == signal.SIGINT:
      if self.interrupted:   # the second Ctrl-C: stop now
        raise KeyboardInterrupt
      self.interrupted = True
    self._signalled.set()
    if self._urgent:
      self._urgent = False
      raise StopRequested

  @contextlib.contextmanager
  def interruptible(self) -> Iterator[None]:
    """Work that a signal stops at once instead of at the next step's end (an evaluation); a
    signal already received stops it before it starts. Single process only (under
    jax.distributed the processes agree on a step instead)."""
    if not self._previous or self._distributed:
      yield
      return
    if self._signalled.is_set():
      raise StopRequested
    self._urgent = True
    try:
      yield
    finally:
      self._urgent = False

  def reached(self, step: int) -> bool:
    if self._distributed:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # jax_enable_preemption_service is off: no sync point to reach
        return False
    return self._signalled.is_set()
