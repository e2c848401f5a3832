"""Video-level evaluation of the two-stream C3D (Jiang et al., Sec. 2.3 and 3.1, Tables 2-3).

Each video of a split is cut into non-overlapping `input.frames`-frame clips from its first frame
(a video shorter than one clip loops over itself; frames after the last whole clip are dropped),
every clip resized and centre-cropped as in training (`input.resize` / `short_side`, `crop_size`).
Per video, the towers' softmax scores and discriminative codes are averaged over its clips. Then,
per split, every row of the paper's Tables 2 and 3 that the run can produce:

  <stream>/softmax   the averaged softmax ("IR net (softmax)"; without DCL: "... without DCL")
  <stream>/knn       the kNN code classifier: the training split's video codes (one pass), per
                     class the mean Euclidean distance d_i to its `k` nearest training videos,
                     similarity exp(-gamma d_i^2), L1-normalised (computed as a softmax of
                     -gamma d_i^2, the same vector without underflow for large d)
  late_fusion1       weighted mean of the streams' softmax (`softmax_weights`, flow:IR = 2:1)
  late_fusion2       weighted mean of the streams' kNN probabilities (`knn_weights`, default 2:1)
  nn1_fusion         a softmax layer on the concatenated video codes, fitted on the training split
  nn2_fusion         a `hidden`-unit layer (the paper's 1x1 convolution with 50 filters; ReLU,
                     which the paper does not state) then a softmax layer, fitted likewise
Both fusion networks are fitted by full-batch Adam (`nn_steps`, `nn_lr`, seed `config.seed`).

Metrics per row: `accuracy`, top-1 over the split's videos, the metric of the paper's "AP"
column (on InfAR's balanced test splits it is also the mean per-class recall; why it is the
paper's metric: docs/papers/twostream.md), and `mean_precision`, the mean over classes of TP /
videos predicted as the class (a class never predicted counts as 0). Scalars
`<name>/<row>/accuracy`, `<name>/<row>/mean_precision` and `<name>/top1` (the headline row: late
fusion 2, else late fusion 1, else the single stream's kNN, else its softmax); figures
`<name>_codes` (mean code per class and stream) and `<name>_confusion` (the headline row).

  config.evals.video = twostream_base.video_eval()   # capability ScoresVideos
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from darkjax import capabilities, plots, sharding
from darkjax.data import ops, pipeline, records
from darkjax.evaluators.base import EvalResult, TrainerView, compile_at_eval_batch, first
from darkjax.evaluators.classification import source_name
from darkjax.config import ConfigError

ROW_TITLES = {
    "ir/softmax": "IR net (softmax)", "ir/knn": "IR net (k-NN)",
    "flow/softmax": "Flow net (softmax)", "flow/knn": "Flow net (k-NN)",
    "late_fusion1": "Late fusion 1 (softmax, weighted)",
    "late_fusion2": "Late fusion 2 (k-NN, weighted)",
    "nn1_fusion": "Single-layer NN fusion", "nn2_fusion": "Two-layer NN fusion",
}
PAPER_AP = {"ir/softmax": 52.91, "ir/knn": 54.58, "flow/softmax": 72.91, "flow/knn": 75.42,
            "late_fusion1": 74.0, "late_fusion2": 77.5, "nn1_fusion": 71.25, "nn2_fusion": 70.42}
PAPER_AP_NO_DCL = {"ir/softmax": 48.75, "flow/softmax": 69.58}


# ---------------------------------------------------------------- clips
clip_starts = ops.clip_starts   # the non-overlapping clips of a video (training: input.sampling=grid)


def video_clips(example: Mapping[str, Any], spec: ops.ClipSpec,
                streams: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """(V, T, h, w, C) uint8 per stream: the video's non-overlapping clips, resized and centre
  cropped like `ops.eval_views` (other streams take the same frame indices and box)."""
  num_frames = example["video"].shape[0]
  out: dict[str, list[np.ndarray]] = {name: [] for name in ("video",) + tuple(streams)}
  for start in clip_starts(num_frames, spec.frames):
    idx = ops.dense_indices(num_frames, spec.frames, 1, start)
    video = ops.resize_frames(example["video"][idx], spec)
    ref_hw = video.shape[1:3]
    box = ops.crop_boxes(*ref_hw, spec.crop_size, "center")[0] if spec.crop_size else None
    for name in out:
      if name not in example:
        raise KeyError(f"video {example.get('video_id', '?')!r}: record has no stream {name!r}")
      clip = video if name == "video" else example[name][np.minimum(idx,
                                                                    len(example[name]) - 1)]
      if box is not None:
        clip = ops.crop(clip, box[0], box[1], spec.crop_size, ref_hw, name)
      elif clip.shape[1:3] != ref_hw:
        clip = ops.resize_stream(clip, ref_hw, name)
      out[name].append(clip)   # a view where cropped: np.stack copies it once
  return {name: np.stack(clips) for name, clips in out.items()}


def split_videos(data: Any, split: str, process_index: int, process_count: int
                 ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
  """(index in the split, label, clips per stream) of this host's videos of `split`."""
  files = data.dataset.files(split)
  offsets = np.cumsum([0] + [n for _, n in files])
  first_index = {path: int(offsets[i]) for i, (path, _) in enumerate(files)}
  for path, _ in pipeline.host_shards(files, process_index, process_count):
    reader = records.RecordReader(path, mapped=True)
    try:
      position = 0
      while (raw := reader.read()) is not None:
        example = dict(records.decode_example(raw, source=path))
        if data.video_stream != "video":
          if data.video_stream not in example:
            raise ValueError(f"{path}: video {example['video_id']!r} has no record stream "
                             f"{data.video_stream!r} (config.input.stream)")
          example["video"] = example.pop(data.video_stream)
        yield (first_index[path] + position, int(example["label"]),
               video_clips(example, data.spec, data.streams))
        position += 1
    finally:
      reader.close()


# ---------------------------------------------------------------- classifiers on video codes
def knn_k_error(k: int, counts: Sequence[int], class_names: Sequence[str] | None = None
                ) -> str | None:
  """What is wrong with a kNN `k` for training videos of these per-class `counts` (each class's
  k nearest are averaged, so k may not exceed the smallest class's videos); None: nothing."""
  smallest = int(np.argmin(counts))
  if 1 <= k <= counts[smallest]:
    return None
  name = class_names[smallest] if class_names is not None else str(smallest)
  return (f"k={k} but class {name!r} has only {counts[smallest]} training videos; give the "
          f"config arg k= (the evaluation's config.evals.<name>.k) a value in "
          f"1..{counts[smallest]} (the paper: 5)")


def knn_probabilities(test_codes: np.ndarray, train_codes: np.ndarray, train_labels: np.ndarray,
                      num_classes: int, k: int, gamma: float,
                      class_names: Sequence[str] | None = None) -> np.ndarray:
  """(n, m) kNN class probabilities of `test_codes` (Sec. 2.3 / "Late fusion2")."""
  error = knn_k_error(k, np.bincount(train_labels, minlength=num_classes), class_names)
  if error:
    raise ConfigError(f"kNN code classifier: {error}, then the same command again: it evaluates "
                      "the trained run")
  test = np.asarray(test_codes, np.float64)
  train = np.asarray(train_codes, np.float64)
  squared = (np.sum(test ** 2, 1)[:, None] + np.sum(train ** 2, 1)[None, :]
             - 2.0 * test @ train.T)
  distances = np.sqrt(np.maximum(squared, 0.0))
  mean_nearest = np.stack([np.mean(np.sort(distances[:, train_labels == c], axis=1)[:, :k], 1)
                           for c in range(num_classes)], axis=1)
  logits = -gamma * mean_nearest ** 2
  logits -= logits.max(axis=1, keepdims=True)
  weights = np.exp(logits)
  return weights / weights.sum(axis=1, keepdims=True)


def mean_class_precision(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Mean over classes of TP / (videos predicted as the class); 0 for a class never predicted."""
  precisions = []
  for c in range(num_classes):
    chosen = predicted == c
    precisions.append(float(np.mean(labels[chosen] == c)) if chosen.any() else 0.0)
  return float(np.mean(precisions))


def fit_fusion_net(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                   hidden: int, steps: int, lr: float, seed: int) -> np.ndarray:
  """Test probabilities of a softmax layer (`hidden` = 0) or a `hidden`-unit ReLU layer + softmax
  layer, fitted by full-batch Adam on (train_x, train_y)."""
  rng = np.random.default_rng(seed)
  dims = ([train_x.shape[1], hidden] if hidden else [train_x.shape[1]]) + [num_classes]
  params = [(rng.normal(0, 1 / math.sqrt(a), (a, b)).astype(np.float32), np.zeros(b, np.float32))
            for a, b in zip(dims[:-1], dims[1:])]

  def forward(params, x):
    for i, (w, b) in enumerate(params):
      x = x @ w + b
      if i < len(params) - 1:
        x = jax.nn.relu(x)
    return x

  def loss(params, x, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y))

  tx = optax.adam(lr)

  @jax.jit
  def fit(params, x, y):
    def step(carry, _):
      params, state = carry
      grads = jax.grad(loss)(params, x, y)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params

  fitted = fit(params, jnp.asarray(train_x, jnp.float32), jnp.asarray(train_y, jnp.int32))
  return np.asarray(jax.nn.softmax(forward(fitted, jnp.asarray(test_x, jnp.float32)), -1))


# ---------------------------------------------------------------- the evaluator
_ROW_FIELDS = ("video_index", "video_label")   # per clip row, beside its streams


class VideoEvaluator:
  """Whole-video scores of a two-stream task (capability ScoresVideos)."""

  def __init__(self, name: str, task: capabilities.ScoresVideos, trainer: TrainerView,
               data: str = "", split: str = "", train_split: str = "", k: int = 5,
               gamma: float = 0.05,
               softmax_weights: Mapping[str, float] | None = None,
               knn_weights: Mapping[str, float] | None = None, hidden: int = 50,
               nn_steps: int = 500, nn_lr: float = 0.01):
    self.name, self.task, self.trainer = name, task, trainer
    self.data = task.data_sources[source_name(task, data)]
    self.split = split or self.data.cfg.data.eval_split
    self.train_split = train_split or self.data.cfg.data.split
    for given, key in ((split, "split"), (train_split, "train_split")):   # checked now
      if given:
        self.data.dataset.check_splits(given, field=f"config.evals.{name}.{key}")
    if k < 1:
      raise ConfigError(f"config.evals.{name}.k={k}: the kNN classifier needs k >= 1 (paper: 5)")
    self.k, self.gamma = int(k), float(gamma)
    counts = self.data.dataset.class_counts(self.train_split)   # None: an older manifest
    error = None if counts is None else knn_k_error(self.k, counts, self.data.dataset.class_names)
    if error:   # before any step trains
      raise ConfigError(f"config.evals.{name}.k: {error}; the training part "
                        f"{self.train_split!r} of {self.data.dataset.directory} holds them")
    self.softmax_weights = dict(softmax_weights or {"ir": 1.0, "flow": 2.0})
    self.knn_weights = dict(knn_weights or {"ir": 1.0, "flow": 2.0})
    for what, weights in (("softmax_weights", self.softmax_weights),
                          ("knn_weights", self.knn_weights)):
      missing = [s for s in task.streams if s not in weights]
      if missing:
        raise ConfigError(f"config.evals.{name}.{what} {weights} has no weight for stream(s) "
                          f"{missing}")
    self.hidden, self.nn_steps, self.nn_lr = int(hidden), int(nn_steps), float(nn_lr)
    def step(variables, batch):
      # Each clip's video index and label come back beside its outputs, in the global array's
      # row order: on several hosts that order follows the mesh's devices, which need not be the
      # hosts' order (a TPU pod's mesh follows its topology).
      clips = {k: v for k, v in batch.items() if k not in _ROW_FIELDS}
      return task.outputs(variables, clips), {k: batch[k] for k in _ROW_FIELDS}

    self._step = jax.jit(step,
                         in_shardings=(trainer.variables_shardings, trainer.batch_sharding),
                         out_shardings=trainer.replicated,
                         compiler_options=trainer.compiler_options)

  def compile(self, variables: Mapping[str, Any]) -> int | None:
    """Compiles the per-clip step for abstract `variables` and the clip batches `extract` feeds it
    (`input.eval_batch_size` clips, shaped as the first video's), ahead of the first `run` (which
    reuses the compilation); returns the bytes one device holds while it runs (None: not known,
    or no video to shape the batch)."""
    video = first(split_videos(self.data, self.split, jax.process_index(), jax.process_count()))
    if video is None:
      return None
    clips = self.task.host_streams({s: c[:1] for s, c in video[2].items()})   # one clip
    rows = {k: np.zeros((1,), np.int32) for k in _ROW_FIELDS}
    return compile_at_eval_batch(self._step, variables, {**clips, **rows}, self.trainer)

  # ---------------------------------------------------------------- extraction
  def extract(self, variables: Mapping[str, Any], split: str) -> dict[str, Any]:
    """Per video (sorted by index): `label` and per stream the mean `probs` and `code`."""
    trainer = self.trainer
    local = trainer.local_batch(trainer.config.input.eval_batch_size)
    sums: dict[int, dict[str, np.ndarray]] = {}
    counts: dict[int, int] = {}
    labels: dict[int, int] = {}
    pending: list[tuple[int, dict[str, np.ndarray]]] = []
    template: dict[str, np.ndarray] | None = None
    videos = split_videos(self.data, split, jax.process_index(), jax.process_count())

    def clips_of_videos():
      for index, label, clips in videos:
        clips = self.task.host_streams(clips)
        for v in range(clips["video"].shape[0]):
          yield index, {**{s: c[v] for s, c in clips.items()},
                        "video_index": np.int32(index), "video_label": np.int32(label)}

    source = clips_of_videos()
    while True:
      for index, clip in source:
        template = template or clip
        pending.append((index, clip))
        if len(pending) == local:
          break
      real = len(pending)
      if jax.process_count() > 1:
        real_anywhere = int(np.max(multihost_utils.process_allgather(np.int64(real))))
      else:
        real_anywhere = real
      if not real_anywhere:
        break
      if template is None:
        raise ValueError(f"{self.data.dataset.directory}: this host has no videos of split "
                         f"{split!r} to shape its padding batches")
      while len(pending) < local:
        padding = {s: np.zeros_like(c) for s, c in template.items()}
        padding["video_index"] = np.int32(-1)
        pending.append((-1, padding))
      batch = {s: np.stack([clip[s] for _, clip in pending]) for s in template}
      outputs, rows = jax.device_get(self._step(
          variables, sharding.host_to_global(batch, trainer.batch_sharding)))
      for row, index in enumerate(np.asarray(rows["video_index"])):
        if index < 0:
          continue
        labels[int(index)] = int(rows["video_label"][row])
        per_video = sums.setdefault(int(index), {})
        for stream, values in outputs.items():
          for key, array in values.items():
            name = f"{stream}/{key}"
            per_video[name] = per_video.get(name, 0.0) + np.asarray(array[row], np.float64)
        counts[int(index)] = counts.get(int(index), 0) + 1
      pending = []
    if not sums:
      raise RuntimeError(f"video eval {self.name}: split {split!r} has no videos")
    order = sorted(sums)
    expected = self.data.dataset.num_examples(split)
    if len(order) != expected:
      raise RuntimeError(f"video eval {self.name}: saw {len(order)} videos of split {split!r}, "
                         f"the manifest lists {expected}")
    result = {"label": np.asarray([labels[i] for i in order])}
    for key in sums[order[0]]:
      result[key] = np.stack([sums[i][key] / counts[i] for i in order])
    return result

  # ---------------------------------------------------------------- rows
  def rows(self, test: Mapping[str, np.ndarray], train: Mapping[str, np.ndarray] | None
           ) -> dict[str, np.ndarray]:
    """Row name -> (n_test, m) class probabilities."""
    streams, m = self.task.streams, self.task.num_classes
    names = self.data.dataset.class_names
    rows = {f"{s}/softmax": test[f"{s}/probs"] for s in streams}
    if train is not None:
      for s in streams:
        rows[f"{s}/knn"] = knn_probabilities(test[f"{s}/code"], train[f"{s}/code"],
                                             train["label"], m, self.k, self.gamma, names)
    if len(streams) > 1:
      rows["late_fusion1"] = _weighted(rows, "softmax", self.softmax_weights, streams)
      if train is not None:
        rows["late_fusion2"] = _weighted(rows, "knn", self.knn_weights, streams)
        train_x = np.concatenate([train[f"{s}/code"] for s in streams], 1)
        test_x = np.concatenate([test[f"{s}/code"] for s in streams], 1)
        seed = int(self.trainer.config.seed)
        rows["nn1_fusion"] = fit_fusion_net(train_x, train["label"], test_x, m, 0,
                                            self.nn_steps, self.nn_lr, seed)
        rows["nn2_fusion"] = fit_fusion_net(train_x, train["label"], test_x, m, self.hidden,
                                            self.nn_steps, self.nn_lr, seed)
    return rows

  def run(self, variables: Mapping[str, Any], step: int) -> EvalResult:
    has_codes = bool(self.task.code_size)
    test = self.extract(variables, self.split)
    train = self.extract(variables, self.train_split) if has_codes else None
    rows = self.rows(test, train)
    labels, m = test["label"], self.task.num_classes
    scalars: dict[str, float] = {}
    for row, probs in rows.items():
      predicted = np.argmax(probs, axis=1)
      scalars[f"{self.name}/{row}/accuracy"] = float(np.mean(predicted == labels))
      scalars[f"{self.name}/{row}/mean_precision"] = mean_class_precision(predicted, labels, m)
    stream = self.task.streams[0]
    headline = next(r for r in ("late_fusion2", "late_fusion1", f"{stream}/knn",
                                f"{stream}/softmax") if r in rows)
    scalars[f"{self.name}/top1"] = scalars[f"{self.name}/{headline}/accuracy"]
    scalars[f"{self.name}/num_videos"] = float(len(labels))
    confusion = np.zeros((m, m), np.int64)
    np.add.at(confusion, (labels, np.argmax(rows[headline], 1)), 1)
    figures = {}
    names = self.data.dataset.class_names
    if self.trainer.is_lead:
      title = (f"{self.data.dataset.name} {self.split} @ step {step}: {ROW_TITLES[headline]}, "
               f"accuracy {scalars[f'{self.name}/top1']:.1%}")
      figures[f"{self.name}_confusion"] = plots.confusion(confusion, names, title=title)
      if has_codes:
        per_class = {s: np.stack([test[f"{s}/code"][labels == c].mean(0) if np.any(labels == c)
                                  else np.zeros(test[f"{s}/code"].shape[1]) for c in range(m)])
                     for s in self.task.streams}
        figures[f"{self.name}_codes"] = plots.code_matrix(
            per_class, names, title=f"mean discriminative code per test class @ step {step}")
    return EvalResult(scalars, figures, {f"{self.name}/confusion": confusion,
                                         f"{self.name}/headline": np.asarray(headline)})


def _weighted(rows: Mapping[str, np.ndarray], kind: str, weights: Mapping[str, float],
              streams: Sequence[str]) -> np.ndarray:
  total = sum(float(weights[s]) for s in streams)
  return sum(float(weights[s]) * rows[f"{s}/{kind}"] for s in streams) / total


def report_tables(results: Mapping[str, Any], config: Any) -> str:
  """Markdown of every video evaluator's rows beside the paper's Tables 2-3 AP (report.md): the
  top-1 accuracy is the metric of the paper's AP column, shown for a run on InfAR only (on
  another dataset the paper's figures are no comparison)."""
  lines = []
  dataset = str(config.input.data.name)
  on_infar = dataset == "infar"
  for name, entry in config.evals.items():
    if entry.get("type") != "twostream_video":
      continue
    dcl = bool(config.twostream.dcl)
    lines += [f"## {name}: video-level rows of Jiang et al. Tables 2-3", ""]
    if not on_infar:
      lines += [f"On `{dataset}`: the paper's AP, measured on InfAR, is not beside them.", ""]
    lines += ["| row | top-1 (the paper's AP) | mean class precision |"
              + (" paper AP (InfAR) |" if on_infar else ""),
              "|---|---|---|" + ("---|" if on_infar else "")]
    for row, title in ROW_TITLES.items():
      key = f"{name}/{row}/accuracy"
      if key not in results:
        continue
      paper = (PAPER_AP if dcl else PAPER_AP_NO_DCL).get(row)
      title = title if dcl else title.replace("(softmax)", "without DCL")
      lines.append(f"| {title} | {100 * results[key]:.1f} | "
                   f"{100 * results[f'{name}/{row}/mean_precision']:.1f} |"
                   + (f" {'' if paper is None else f'{paper:.2f}'} |" if on_infar else ""))
    lines.append("")
  return "\n".join(lines)
