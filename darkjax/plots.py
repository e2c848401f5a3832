"""Every picture darkjax draws: confusion matrices, DTCM's enhancement grid, LIFT-Net's attention
maps, a predicted video's frames and its timeline, the darkness histogram of a set of videos and the two-stream
C3D's per-class discriminative codes.

Functions return matplotlib figures (Agg backend, no display needed); `save` writes one as PNG and
closes it. Evaluators return figures and the Trainer saves them into the workdir and TensorBoard.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import warnings
from typing import Mapping, Sequence

import numpy as np

from darkjax import paths

log = logging.getLogger("darkjax")

# Installed fonts that the figures' text falls back on, glyph by glyph, for the characters their
# first font (matplotlib's DejaVu Sans) lacks: class names of a dataset of one's own in Chinese,
# Japanese, Korean or another script.
_FALLBACK_FONTS = re.compile(r"CJK|Han (Sans|Serif)|WenQuanYi|Droid Sans Fallback|Arial Unicode|"
                             r"Noto Sans (SC|TC|HK|JP|KR|Arabic|Hebrew|Thai|Devanagari)")
_GLYPH_MISSING = re.compile(r"Glyph \d+ \((.*)\) missing from font")
_missing_said: set[str] = set()   # characters a warning has named already


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


@functools.cache
def _font_family() -> tuple[str, ...]:
  """The figures' fonts: matplotlib's default sans-serif font, then the installed fallbacks."""
  from matplotlib import font_manager  # pylint: disable=import-outside-toplevel
  fallbacks = sorted({f.name for f in font_manager.fontManager.ttflist
                      if _FALLBACK_FONTS.search(f.name)})
  return ("DejaVu Sans", *fallbacks)


@contextlib.contextmanager
def _text_fonts():
  """Draws inside with the fallback fonts; a character none of them has (drawn as a box) is
  said once, in one warning naming the characters and what to install, instead of matplotlib's
  warning per glyph and call."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings(record=True) as caught, \
      matplotlib.rc_context({"font.family": list(_font_family())}):
    warnings.simplefilter("always")
    yield
  missing = []
  for warning in caught:
    found = _GLYPH_MISSING.search(str(warning.message))
    if found is None:   # any other warning as it came
      warnings.warn_explicit(warning.message, warning.category, warning.filename,
                             warning.lineno)
    elif found.group(1) not in missing:
      missing.append(found.group(1))
  new = [name for name in missing if name not in _missing_said]
  if new:
    _missing_said.update(new)
    chars = "".join(_character(name) for name in new)
    log.warning("figures: no installed font has the character(s) %r (%s); they are drawn as "
                "boxes. Install a font that has them (for Chinese, Japanese or Korean class "
                "names: Noto Sans CJK, e.g. `apt install fonts-noto-cjk`) and darkjax's figures "
                "use it", chars, ", ".join(new))


def _character(name: str) -> str:
  r"""The character matplotlib's warning names (`\N{CJK UNIFIED IDEOGRAPH-8DD1}`, `\ue000`, or
  itself)."""
  if not name.isascii():
    return name
  try:
    return name.encode("ascii").decode("unicode_escape")
  except UnicodeDecodeError:
    return name


def _with_fonts(draw):
  """`draw` (a function that makes or saves a figure) inside `_text_fonts`."""
  @functools.wraps(draw)
  def wrapped(*args, **kwargs):
    with _text_fonts():
      return draw(*args, **kwargs)
  return wrapped


@_with_fonts
def save(fig, path: str, dpi: int = 100) -> str:
  """Writes `fig` as PNG to `path` (a local file or a URL; creating its directory) and closes it."""
  target = paths.resolve(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=dpi, format="png")
  _pyplot().close(fig)
  paths.write_bytes_atomic(target, buffer.getvalue())   # no half picture on a full disk
  return os.fspath(target)


@_with_fonts
def confusion(matrix: np.ndarray, class_names: Sequence[str], title: str = "",
              support: np.ndarray | None = None):
  """Row-normalised confusion matrix with class names and (up to 30 classes) counts. `support`:
  each true class's number of examples, where the matrix leaves some out (examples scored NaN):
  the rows are shares of every example of the class, as the per-class accuracies are."""
  plt = _pyplot()
  n = len(class_names)
  rows = matrix.sum(axis=1) if support is None else np.asarray(support)
  rates = matrix / np.maximum(rows, 1)[:, None]
  size = max(4.0, 0.45 * n + 2)
  fig, ax = plt.subplots(figsize=(size + 1, size))
  image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
  ax.set_yticks(range(n), class_names, fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if n <= 30:
    for i in range(n):
      for j in range(n):
        if matrix[i, j]:
          ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                  color="white" if rates[i, j] > 0.5 else "black")
  ax.set_title(title + ("\n" if title else "") + ("numbers: clips; colour: share of the true class"
                                                   if n <= 30 else "colour: share of the true class"),
               fontsize=9)
  bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  bar.set_label("share of the true class's clips (row)", fontsize=8)
  fig.tight_layout()
  return fig


@_with_fonts
def enhancement_grid(inputs: np.ndarray, enhanced: np.ndarray, title: str = "",
                     frames_shown: int = 6):
  """Per clip, rows of input frames, enhanced frames, |I_(t+1) - I_t| and |Y_(t+1) - Y_t| (DTCM
  Figs. 1, 6). inputs, enhanced: (N, T, H, W, 3) in [0, 1]; the differences share one scale so
  that before and after compare."""
  plt = _pyplot()
  n, t = inputs.shape[:2]
  shown = np.unique(np.linspace(0, t - 2, min(frames_shown, t - 1)).round().astype(int))
  diff_in = np.abs(np.diff(inputs, axis=1))
  diff_out = np.abs(np.diff(enhanced, axis=1))
  scale = 1.0 / max(float(np.percentile(np.concatenate([diff_in, diff_out]), 99.5)), 1e-3)
  rows = [("input I", inputs), ("enhanced Y", enhanced),
          (f"|I(t+1) - I(t)|\nx{scale:.0f}", diff_in * scale),
          (f"|Y(t+1) - Y(t)|\nx{scale:.0f}", diff_out * scale)]
  fig, axes = plt.subplots(4 * n, len(shown), figsize=(1.6 + 1.4 * len(shown), 1.5 * 4 * n),
                           squeeze=False)
  for clip in range(n):
    for r, (label, images) in enumerate(rows):
      for c, frame in enumerate(shown):
        ax = axes[4 * clip + r, c]
        ax.imshow(np.clip(images[clip, frame], 0.0, 1.0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if c == 0:   # across, beside its row: readable at the figure's own size
          ax.set_ylabel(f"clip {clip}\n{label}", fontsize=8, rotation=0, ha="right",
                        va="center")
        if clip == 0 and r == 0:
          ax.set_title(f"t={frame}", fontsize=7)
  if title:
    fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  return fig


@_with_fonts
def attention_maps(dark: np.ndarray, bright: np.ndarray, heat: np.ndarray,
                   frame_weights: np.ndarray, title: str = "", max_frames: int = 8):
  """LIFT-Net Fig. 5: dark frames, luminous frames under the PViT attention, and the fusion's
  attention over all frames. dark, bright: (T, H, W, C) uint8; heat: (T, gh, gw) in [0, 1];
  frame_weights: (T,)."""
  import cv2  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  frames, height, width = dark.shape[:3]
  shown = np.unique(np.linspace(0, frames - 1, min(frames, max_frames)).round().astype(int))
  fig = plt.figure(figsize=(1.8 * len(shown), 5.2))
  grid = fig.add_gridspec(3, len(shown), height_ratios=(1, 1, 0.7))
  for col, t in enumerate(shown):
    for row, clip in enumerate((dark, bright)):
      frame = clip[t] if clip.shape[-1] == 3 else clip[t, ..., 0]
      ax = fig.add_subplot(grid[row, col])
      ax.imshow(frame, cmap="gray", vmin=0, vmax=255)
      if row == 1:   # one colour per ViT patch, as the attention is
        shown_map = ax.imshow(cv2.resize(heat[t].astype(np.float32), (width, height),
                                         interpolation=cv2.INTER_NEAREST),
                              cmap="jet", alpha=0.45, vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(f"t={t}", fontsize=7)
      if col == 0:
        ax.set_ylabel("dark input" if row == 0 else "luminous +\nPViT attention", fontsize=7)
  bar = fig.colorbar(shown_map, ax=fig.axes[1::2], fraction=0.02, pad=0.01)
  bar.set_label("attention / clip max", fontsize=7)
  ax = fig.add_subplot(grid[2, :])
  ax.bar(np.arange(frames), frame_weights, color="tab:blue")
  ax.set_xlabel("frame")
  ax.set_ylabel("fusion attention", fontsize=8)
  fig.suptitle(title, fontsize=9)
  return fig


@_with_fonts
def frame_rows(rows: Sequence[tuple[str, np.ndarray]], title: str = "", max_frames: int = 8):
  """Labelled rows of frames ((T, H, W, C) uint8 each), up to `max_frames` evenly spaced, on
  the 0-255 scale as they are (a 1-channel frame is not stretched to its own range: dark stays
  dark, as an RGB frame's does)."""
  plt = _pyplot()
  t = rows[0][1].shape[0]
  picks = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
  fig, axes = plt.subplots(len(rows), len(picks), squeeze=False,
                           figsize=(1.6 * len(picks), 1.8 * len(rows) + 0.6))
  for r, (label, frames) in enumerate(rows):
    for c, index in enumerate(picks):
      frame = frames[min(index, len(frames) - 1)]
      axes[r][c].imshow(frame if frame.shape[-1] == 3 else frame[..., 0], cmap="gray",
                        vmin=0, vmax=255)
      axes[r][c].set_xticks([])
      axes[r][c].set_yticks([])
      if r == 0:
        axes[r][c].set_title(f"t={index}", fontsize=7)
    axes[r][0].set_ylabel(label)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


@_with_fonts
def timeline(probs: np.ndarray, edges: np.ndarray, class_names: Sequence[str], title: str = ""):
  """A long video's class probabilities per window (classes x time; window i drawn over
  edges[i, 0] .. edges[i, 1] seconds, the time between windows apart left blank) with each
  window's top-1 class marked; minutes:seconds on a video longer than two minutes."""
  plt = _pyplot()
  probs = np.asarray(probs, np.float32)
  edges = np.asarray(edges, np.float64).reshape(-1, 2)
  xs, columns = [float(edges[0, 0])], []
  for (low, high), column in zip(edges, probs):
    if low > xs[-1] + 1e-9:   # a gap: no window saw it
      columns.append(np.full_like(column, np.nan))
      xs.append(float(low))
    columns.append(column)
    xs.append(float(high))
  grid = np.ma.masked_invalid(np.stack(columns).T)
  fig, ax = plt.subplots(figsize=(min(5.5 + 0.08 * len(probs), 16),
                                  1.4 + 0.28 * len(class_names)))
  mesh = ax.pcolormesh(xs, np.arange(len(class_names) + 1) - 0.5, grid, cmap="magma", vmin=0,
                       vmax=1, shading="flat")
  ax.set_facecolor("lightgray")
  centres = edges.mean(axis=1)
  ax.plot(centres, probs.argmax(axis=1), "o", color="cyan",
          markersize=3 if len(probs) <= 150 else 1)
  ax.invert_yaxis()   # the first class on top, as the class lists read
  ax.set_yticks(range(len(class_names)))
  ax.set_yticklabels(class_names, fontsize=7)
  if xs[-1] > 120:
    ax.xaxis.set_major_formatter(plt.FuncFormatter(
        lambda x, _: f"{int(x // 3600)}:{int(x % 3600 // 60):02d}:{int(x % 60):02d}"
        if xs[-1] >= 3600 else f"{int(x // 60)}:{int(x % 60):02d}"))
  ax.set_xlabel(("h:mm:ss" if xs[-1] >= 3600 else "m:ss" if xs[-1] > 120 else "seconds")
                + " (dots: each window's top-1 class)")
  fig.colorbar(mesh, ax=ax, label="probability", fraction=0.05, pad=0.02)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return fig


@_with_fonts
def darkness_histogram(scores: np.ndarray, tau: float, dark: int):
  """Histogram of videos' darkness D_v (DTCM's video darkness metric) with the threshold -tau;
  `dark` of them fall below it."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  # bins over the scores' own range (videos of one set sit close together, dark ones near -0.9),
  # with an edge at the threshold so that the bars below it are the dark videos
  low, high = min(float(np.min(scores)), -tau), max(float(np.max(scores)), -tau)
  span = max(high - low, 0.02)
  width = span / 30
  below = np.arange(-tau, low - span / 20 - width, -width)[::-1]
  above = np.arange(-tau + width, high + span / 20 + width, width)
  ax.hist(scores, bins=np.concatenate([below, above]), color="tab:blue", edgecolor="white")
  ax.axvline(-tau, color="tab:red", linestyle="--", label=f"dark if $D_v < -{tau:g}$")
  ax.set_title(f"video darkness $D_v$: {dark} of {len(scores)} videos dark")
  ax.set_xlabel("$D_v$ = mean over frames of $(S_t - 112) / 112$, $S_t$ a frame's mean "
                "brightness (0-255)", fontsize=8)
  ax.set_ylabel("videos")
  ax.legend()
  fig.tight_layout()
  return fig


@_with_fonts
def code_matrix(codes: Mapping[str, np.ndarray], class_names: Sequence[str], title: str = ""):
  """Mean discriminative code per class, one panel per stream (`codes[stream]`: (m, N)): class on
  the x axis, code neuron on the y axis; a well-trained DC layer shows the p-hot blocks on the
  diagonal (Jiang et al. Fig. 4, there per test video). Colours are centred on 0.5, halfway
  between the targets' 0 and 1 (blue below, red above), whatever the values' range."""
  from matplotlib import colors  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(codes), squeeze=False, figsize=(3.2 * len(codes) + 1, 4.5))
  for ax, (stream, matrix) in zip(axes[0], codes.items()):
    values = np.asarray(matrix, np.float32)
    finite = values[np.isfinite(values)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    image = ax.imshow(values.T, aspect="auto", cmap="coolwarm", interpolation="nearest",
                      norm=colors.TwoSlopeNorm(vcenter=0.5, vmin=low, vmax=high))
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("code neuron")
    ax.set_xlabel("class")
    ax.set_title(f"{stream} stream")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label("mean code activation",
                                                                  fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


@_with_fonts
def fusion_maps(dark: np.ndarray, retinex: np.ndarray, w_ret: np.ndarray | None, title: str = "",
                max_frames: int = 8):
  """ActLumos: dark frames, their Retinex frames, and DFF's Retinex weight W_ret over the frames.
  dark, retinex: (T, H, W, C) uint8; w_ret: (T', H', W') in [0, 1] (T' time positions of the
  backbone map, each covering T / T' frames) or None (sum / concat fusion: no weights)."""
  import cv2  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  frames, height, width = dark.shape[:3]
  shown = np.unique(np.linspace(0, frames - 1, min(frames, max_frames)).round().astype(int))
  rows = 2 if w_ret is None else 3
  fig, axes = plt.subplots(rows, len(shown), squeeze=False,
                           figsize=(1.6 * len(shown), 1.7 * rows + 0.6))
  for col, t in enumerate(shown):
    axes[0][col].imshow(dark[t], vmin=0, vmax=255)
    axes[0][col].set_title(f"t={t}", fontsize=7)
    axes[1][col].imshow(retinex[t], vmin=0, vmax=255)
    if w_ret is not None:
      weights = w_ret[min(t * w_ret.shape[0] // frames, w_ret.shape[0] - 1)].astype(np.float32)
      axes[2][col].imshow(retinex[t], vmin=0, vmax=255)
      shown_map = axes[2][col].imshow(
          cv2.resize(weights, (width, height), interpolation=cv2.INTER_NEAREST), cmap="jet",
          alpha=0.5, vmin=0, vmax=1)
  for row, label in enumerate(("dark", "Retinex (MSR)", "W_ret")[:rows]):
    axes[row][0].set_ylabel(label, fontsize=8)
    for ax in axes[row]:
      ax.set_xticks([])
      ax.set_yticks([])
  if w_ret is not None:   # beside every row, so that the rows' frames stay in their columns
    fig.colorbar(shown_map, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01).set_label(
        "W_ret", fontsize=8)
  fig.suptitle(title, fontsize=9)
  return fig


@_with_fonts
def step_time(wall_ms: float, categories_ms: Mapping[str, float], title: str = ""):
  """Where a train step's time goes (`darkjax.profiling`): one horizontal bar per kind of op (ms
  per step, device time), and the time the devices waited (wall minus busy) in grey, against
  the wall time."""
  plt = _pyplot()
  busy = float(sum(categories_ms.values()))
  items = sorted(categories_ms.items(), key=lambda item: item[1])
  names = [name for name, _ in items] + ["waiting (input, host)"]
  values = [ms for _, ms in items] + [max(wall_ms - busy, 0.0)]
  colours = ["tab:blue"] * len(items) + ["tab:grey"]
  fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(names) + 1.4))
  ax.barh(range(len(names)), values, color=colours)
  ax.set_yticks(range(len(names)), names, fontsize=8)
  for row, value in enumerate(values):
    ax.text(value, row, f" {value:.1f}", va="center", fontsize=7)
  ax.set_xlim(0, max(values + [1e-9]) * 1.15)   # room for the largest bar's number
  ax.set_xlabel(f"ms per step (wall {wall_ms:.1f}, busy {busy:.1f})")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return fig
