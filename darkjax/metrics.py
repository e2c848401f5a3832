"""Metric sinks: WORKDIR/metrics.jsonl (one object per `write`: a step's training scalars, and
each evaluator's at that step, apart) and TensorBoard event files.

WORKDIR may be a URL (`gs://...`). tensorboardX's own cloud writers are not used (its GCS writer
fails on current google-cloud-storage); on a URL the events are written to a local staging
directory and each flush copies the event files to WORKDIR/tensorboard through darkjax.paths.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Mapping

import numpy as np

from darkjax import paths

# Rows of the evaluations made with earlier evaluation settings, moved out of metrics.jsonl when
# the run was evaluated with others (`MetricsWriter.set_aside_evaluations`), each with the
# settings it measured as `evaluated_with`.
EARLIER_EVALUATIONS = "earlier_evaluations.jsonl"
_last_suffix = 0   # the last event file's name suffix (`MetricsWriter._open_tensorboard`)


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch. Its writer module imports torch where
  torch is installed (the `torch` extra), only to accept torch tensors, which darkjax never passes;
  that import would cost every run a second or more of start-up. A `None` entry in `sys.modules`
  makes that one `import torch` raise ImportError, which tensorboardX expects; the entry is removed
  at once, so torch imports as usual afterwards. Where torch is already imported nothing changes."""
  if "torch" in sys.modules or "tensorboardX.writer" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if "torch" in sys.modules and sys.modules["torch"] is None:
      del sys.modules["torch"]
  return SummaryWriter


class MetricsWriter:
  """Writes scalars to metrics.jsonl and TensorBoard; only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.workdir = paths.resolve(workdir)
    self.path = self.workdir / "metrics.jsonl"
    self._tb = None
    self._purge_step: int | None = None   # the restart marker the next event file opens with
    self._staging: str | None = None
    self._held: list[Callable[[], Any]] | None = None   # `held`'s calls
    if enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)
      if paths.is_url(self.workdir / "tensorboard"):
        self._staging = tempfile.mkdtemp(prefix="darkjax-tensorboard-")
      # the event file opens with the first event (`_writer`): a resumed run's restart marker
      # (`truncate_after`) is then its first event, with no empty file before it

  def _writer(self):
    """The open event file's writer, opened on first use."""
    if self._tb is None:
      self._open_tensorboard(purge_step=self._purge_step)
      self._purge_step = None
    return self._tb

  def _reopen(self, purge_step: int) -> None:
    """Closes the event file (if one is open); the next one, opened with the next scalar, starts
    with a restart marker at `purge_step` (the earlier of two not yet marked). A writer that
    logs nothing after it (a finished run's rerun) adds no event file."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    self._purge_step = (purge_step if self._purge_step is None
                        else min(purge_step, self._purge_step))

  def _open_tensorboard(self, purge_step: int | None = None) -> None:
    """A new event file. tensorboardX names it by the second and the host, and a second writer
    of the same second would truncate the first's file (a notebook's `evaluate` right after its
    `train`): the suffix, nanoseconds that only grow, keeps every file and their order."""
    SummaryWriter = _summary_writer_class()  # pylint: disable=invalid-name
    global _last_suffix  # pylint: disable=global-statement
    _last_suffix = max(time.time_ns(), _last_suffix + 1)
    self._tb = SummaryWriter(self._staging or os.fspath(self.workdir / "tensorboard"),
                             purge_step=purge_step, filename_suffix=f".{_last_suffix}")

  def _flush(self) -> None:
    if self._tb is not None:   # none open: nothing logged since the last (re)open
      self._tb.flush()
    self._upload()

  def _upload(self) -> None:
    if self._staging is not None:
      target = self.workdir / "tensorboard"
      target.mkdir(parents=True, exist_ok=True)
      for name in os.listdir(self._staging):
        with open(os.path.join(self._staging, name), "rb") as file:
          (target / name).write_bytes(file.read())

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    if self._held is not None:
      self._held.append(functools.partial(self.write, step, dict(scalars)))
      return
    row = {"step": int(step)}
    for key, value in scalars.items():
      value = float(np.asarray(value))
      row[key] = value if math.isfinite(value) else str(value)
      self._writer().add_scalar(key, value, int(step))
    paths.append_text(self.path, json.dumps(row) + "\n")
    self._flush()

  def truncate_after(self, step: int) -> None:
    """Drops what was logged after `step` (a run resumed from `step` logs those steps again):
    metrics.jsonl's rows, and in TensorBoard the earlier event files' events from `step + 1` on
    (a new event file whose first event is a restart marker at that step: tensorboardX's
    `purge_step`, which TensorBoard reads as "drop what came before from this step on"; see
    `_reopen`)."""
    if not self.enabled or not self.path.exists():   # nothing logged before
      return
    self._keep_rows(lambda row: row["step"] <= step)
    self._reopen(step + 1)

  def _keep_rows(self, keep) -> list[dict[str, Any]]:
    """Rewrites metrics.jsonl with the rows `keep` accepts (as `write` wrote them); returns
    those."""
    rows = [row for row in read_metrics(os.fspath(self.workdir)) if keep(row)]
    paths.write_bytes_atomic(self.path, "".join(json.dumps(row) + "\n" for row in rows)
                             .encode("utf-8"))
    return rows

  def redo_evaluation(self, step: int) -> None:
    """Before `step` is evaluated again with the same settings (a notebook's `Run.evaluate`):
    drops what an earlier evaluation logged at `step`, so that it is logged once. metrics.jsonl
    keeps that step's training row (its `train/` scalars) and every earlier row and loses the rest
    from `step` on; TensorBoard drops its events from `step` on (a restart marker, as
    `truncate_after`) and gets the training row's scalars again."""
    if not self.enabled or not self.path.exists():
      return
    kept = self._keep_rows(lambda row: row["step"] < step or (
        row["step"] == step and not evaluation_row(row)))
    self._rewrite_from(step, kept)

  def set_aside_evaluations(self, settings: Mapping[str, Any]) -> int:
    """Before the run is evaluated with other evaluation settings than `settings` (the split, the
    views, `config.evals`: those every evaluation metrics.jsonl holds was made with): moves every
    evaluation row to WORKDIR/EARLIER_EVALUATIONS, each with `settings` as `evaluated_with`, so
    that metrics.jsonl's evaluations are all of one kind (no curve of one split continued on
    another); TensorBoard drops its events from the first of them on and gets the training rows'
    scalars from there again. Returns how many rows moved."""
    if not self.enabled or not self.path.exists():
      return 0
    rows = read_metrics(os.fspath(self.workdir))
    earlier = [dict(row, evaluated_with=dict(settings)) for row in rows if evaluation_row(row)]
    if not earlier:
      return 0
    paths.append_text(self.workdir / EARLIER_EVALUATIONS,
                      "".join(json.dumps(row) + "\n" for row in earlier))
    kept = self._keep_rows(lambda row: not evaluation_row(row))
    self._rewrite_from(min(row["step"] for row in earlier), kept)
    return len(earlier)

  def _rewrite_from(self, step: int, kept: list[dict[str, Any]]) -> None:
    """A restart marker at `step` in TensorBoard, then the scalars of the `kept` rows from `step`
    on again."""
    self._reopen(step)
    for row in kept:
      if row["step"] >= step:
        for key, value in row.items():
          if key != "step":
            self._writer().add_scalar(key, float(value), row["step"])
    self._flush()

  @contextlib.contextmanager
  def held(self):
    """What is written inside (an evaluation's scalars and pictures) is kept back and written
    only once the block ends without an error (after what the caller does before leaving it:
    `redo_evaluation`, `set_aside_evaluations`), else dropped: a failed evaluation leaves the
    logged one in place."""
    held: list[Callable[[], Any]] = []
    self._held = held
    try:
      yield
    except BaseException:
      self._held = None
      raise
    self._held = None
    for call in held:
      call()

  @property
  def holding(self) -> bool:
    """Inside `held`: what is written now is written once the block succeeds."""
    return self._held is not None

  def defer(self, call: Callable[[], Any]) -> None:
    """`call()` now, or inside `held` once the block succeeds, in order with what it writes (an
    evaluation's figure moved into place before TensorBoard reads it)."""
    if self._held is not None:
      self._held.append(call)
    else:
      call()

  def image(self, tag: str, step: int, png_path: str) -> None:
    """Adds a PNG written elsewhere (a local file or a URL) to TensorBoard."""
    if not self.enabled:
      return
    if self._held is not None:
      self._held.append(functools.partial(self.image, tag, step, png_path))
      return
    import matplotlib.image  # pylint: disable=import-outside-toplevel
    with paths.resolve(png_path).open("rb") as file:
      image = matplotlib.image.imread(file, format="png")[..., :3]
    self._writer().add_image(tag, image, int(step), dataformats="HWC")
    self._flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
      self._upload()
    if self._staging is not None:
      shutil.rmtree(self._staging, ignore_errors=True)
      self._staging = None


def evaluation_row(row: Mapping[str, Any]) -> bool:
  """Whether a metrics.jsonl row is an evaluation's (not a step's training scalars)."""
  return not any(key.startswith("train/") for key in row)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """Rows of WORKDIR/metrics.jsonl. A last row cut short (a full disk or a kill while it was
  appended) is left out with a warning: a resumed run then rewrites the file without it. Any
  other unreadable row raises, naming the file and line."""
  path = paths.resolve(workdir) / "metrics.jsonl"
  lines = [(number, line) for number, line in
           enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), start=1)
           if line.strip()]
  rows = []
  for index, (number, line) in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as error:
      if index == len(lines) - 1:
        logging.getLogger("darkjax").warning(
            "%s: its last line (%d) was cut short while it was written (a full disk, or the "
            "process killed); left out", path, number)
        break
      raise ValueError(f"{path}: line {number} is not a JSON row ({error}); delete that line, "
                       "or the file (its metrics are also in tensorboard/)") from None
  return rows


def logged_evaluation(workdir: str, step: int) -> dict[str, Any]:
  """The evaluation WORKDIR/metrics.jsonl holds for `step` ({} where none is, or no file), as
  the evaluation returned it: metrics.jsonl holds every scalar as a float, and an evaluation's
  example count is an int (reports and the final line leave counts out)."""
  if not (paths.resolve(workdir) / "metrics.jsonl").is_file():
    return {}
  rows = [r for r in read_metrics(workdir) if r.get("step") == step]
  return {k: int(v) if k.endswith("/num_examples") else v for row in rows for k, v in row.items()
          if k != "step" and not k.startswith("train/") and isinstance(v, (int, float))}
