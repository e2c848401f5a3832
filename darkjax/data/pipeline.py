"""grain input pipelines over pre-decoded TFRecord shards.

Training: per-host shard files -> file-order shuffle (reshuffled every epoch) -> interleave of
`cycle_length` files -> window shuffle -> parse -> random clip ops -> batch -> thread prefetch,
and with `config.input.workers` N > 0 all of that in N worker processes (`with_workers`).
Every stage is a grain `IterDataset`, so the iterator state (file positions as byte offsets, shuffle
buffers, rng counters) is checkpointable and a restored run sees exactly the batches it would have
seen.

Evaluation: per-host shard files read in order, deterministic views, padded to the same number of
batches on every host with a `mask` so every example counts exactly once.

Records are read by `RecordFileIterDataset` over `records.RecordReader`, which checks both CRCs of
every record and names the shard file and byte offset of a corrupt one (grain's own TFRecord reader
checks neither). Local shards are memory-mapped (`mapped=True`): a record's frames are views of the
page cache, and a clip copies only the frames it samples.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import signal
from typing import Any, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np

from darkjax.data import ops
from darkjax.data import records

log = logging.getLogger("darkjax")


class _RecordFileIterator(grain.DatasetIterator):
  """One TFRecord file in order; the state is the byte offset of the next record."""

  def __init__(self, path: str, verify_crc: bool):
    super().__init__()
    self._reader = records.RecordReader(path, verify_crc, mapped=True)

  def __next__(self) -> tuple[bytes | memoryview, str]:
    offset = self._reader.offset
    data = self._reader.read()
    if data is None:
      raise StopIteration
    return data, f"{self._reader.path}@{offset}"

  def get_state(self) -> dict[str, int]:
    return {"offset": self._reader.offset}

  def set_state(self, state: Mapping[str, int]):
    self._reader.seek(int(state["offset"]))

  def close(self):
    self._reader.close()


class SavedPosition(grain.DatasetIterator):
  """A data iterator's state taken earlier, checkpointed in its place (what grain's checkpoint
  handler saves is `get_state()`): the position before a batch that failed to load, so the
  rerun reads that batch again."""

  def __init__(self, state: Any):
    super().__init__()
    self._state = state

  def __next__(self):
    raise StopIteration

  def get_state(self) -> Any:
    return self._state

  def set_state(self, state: Any) -> None:
    self._state = state


class RecordFileIterDataset(grain.IterDataset):
  """`(serialized_example, "file@offset")` pairs of one TFRecord file, CRC-checked."""

  def __init__(self, path: str, verify_crc: bool = True):
    super().__init__()
    self._path = path
    self._verify_crc = verify_crc

  def __iter__(self) -> _RecordFileIterator:
    return _RecordFileIterator(self._path, self._verify_crc)


class _WindowShuffleIterator(grain.DatasetIterator):
  """Reads `window` elements, emits them in a seeded random order, repeats.

  Same semantics and checkpoint scheme as grain's WindowShuffleIterDataset (state = parent state at
  the window start + position; restoring re-reads the window), but draws each window's permutation
  with numpy: grain's per-element `index_shuffle` call is far slower per element.
  """

  def __init__(self, parent: grain.DatasetIterator, window: int, seed: int):
    super().__init__(parent)
    self._window_size, self._seed = window, seed
    self._window: list[Any] = []
    self._order: np.ndarray = np.zeros((0,), np.int64)
    self._window_index = 0
    self._pos = 0
    self._window_start = self._parent.get_state()
    self._exhausted = False

  def _fill(self) -> None:
    self._window_start = self._parent.get_state()
    self._window = []
    try:
      while len(self._window) < self._window_size:
        self._window.append(next(self._parent))
    except StopIteration:
      self._exhausted = True
    rng = np.random.default_rng([self._seed, self._window_index])
    self._order = rng.permutation(len(self._window))
    self._pos = 0

  def __next__(self):
    if self._pos >= len(self._window):
      if self._exhausted:
        raise StopIteration
      if self._window:
        self._window_index += 1
      self._fill()
      if not self._window:
        raise StopIteration
    element = self._window[self._order[self._pos]]
    self._window[self._order[self._pos]] = None  # release memory early
    self._pos += 1
    return element

  def get_state(self) -> dict[str, Any]:
    if not self._window:   # before the first window
      return {"parent": self._parent.get_state(), "window_index": self._window_index, "pos": 0,
              "in_window": False}
    return {"parent": copy.deepcopy(self._window_start), "window_index": self._window_index,
            "pos": self._pos, "in_window": True}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._window_index = int(state["window_index"])
    self._exhausted = False
    self._window, self._pos = [], 0
    if state["in_window"]:
      self._fill()
      self._pos = int(state["pos"])
      for i in self._order[:self._pos]:
        self._window[i] = None


class _WindowShuffle(grain.IterDataset):

  def __init__(self, parent: grain.IterDataset, window: int, seed: int):
    super().__init__(parent)
    self.window, self._seed = window, seed

  def __iter__(self) -> _WindowShuffleIterator:
    return _WindowShuffleIterator(self._parent.__iter__(), self.window, self._seed)


def shuffle_windows(ds: grain.IterDataset | grain.MapDataset) -> list[int]:
  """The window size of every window shuffle in the dataset graph that ends in `ds` (3D-DiNet's
  zipped domains have two). A window shuffle produces its clips in bursts of a whole window, so
  a throughput measurement spans whole windows (`darkjax/tools/bench_input_config.py`)."""
  found = [ds.window] if isinstance(ds, _WindowShuffle) else []
  for parent in ds.parents:
    found.extend(shuffle_windows(parent))
  return found


def host_shards(files: Sequence[tuple[str, int]], process_index: int,
                process_count: int) -> list[tuple[str, int]]:
  """Round-robin assignment of shard files to hosts."""
  if len(files) < process_count:
    raise ValueError(f"{len(files)} shard files cannot feed {process_count} hosts; "
                     "re-prepare the dataset with more shards")
  return list(files[process_index::process_count])


class _Decode(grain.transforms.Map):
  """Parses a record and checks its frame shapes against the manifest's; with `video_stream` set,
  that record stream (e.g. "day", "ir") becomes the example's `video`."""

  def __init__(self, frame_shapes: Mapping[str, Sequence[int] | None], video_stream: str = "video"):
    self._frame_shapes = {k: (tuple(v) if v else None) for k, v in frame_shapes.items()}
    self._video_stream = video_stream
    self._first_channels: dict[str, tuple[int, str]] = {}   # where the manifest lets shapes vary

  def map(self, element: tuple[bytes, str]) -> dict[str, Any]:
    data, source = element
    example = records.decode_example(data, source=source)
    for name, want in self._frame_shapes.items():
      if name not in example:
        continue
      got = tuple(example[name].shape[1:])
      if want is not None and got != want:
        raise ValueError(f"{source}: video {example['video_id']!r} stream {name!r} has frames of "
                         f"shape {got}, the manifest says {want}")
      if want is None:
        channels, first_id = self._first_channels.setdefault(name, (got[-1], example["video_id"]))
        if got[-1] != channels:
          raise ValueError(f"{source}: video {example['video_id']!r} stream {name!r} has "
                           f"{got[-1]} channels, video {first_id!r} had {channels}")
    if self._video_stream != "video":
      if self._video_stream not in example:
        streams = sorted(k for k in example if isinstance(example[k], np.ndarray) and
                         example[k].ndim == 4)
        raise ValueError(f"{source}: video {example['video_id']!r} has no record stream "
                         f"{self._video_stream!r} (config.input.stream); streams: {streams}")
      example["video"] = example.pop(self._video_stream)
    return example


class _TrainClip(grain.transforms.RandomMap):

  def __init__(self, spec: ops.ClipSpec, streams: Sequence[str]):
    self._spec = spec
    self._streams = tuple(streams)

  def random_map(self, element, rng: np.random.Generator):
    return ops.train_clip(element, rng, self._spec, self._streams)


def describe_shards(paths: Sequence[str], total: int, process_count: int) -> str:
  """How many shard files a process reads and where: all of them in one process; with several
  processes, this one's share by name (which host reads what)."""
  directory = os.path.dirname(paths[0]) if paths else "?"
  if process_count == 1:
    return f"all {len(paths)} shard(s) in {directory}"
  return (f"{len(paths)} of {total} shard(s) in {directory}: "
          + ",".join(os.path.basename(p) for p in paths))


def train_dataset(files: Sequence[tuple[str, int]], spec: ops.ClipSpec, local_batch: int, *,
                  seed: int, frame_shapes: Mapping[str, Sequence[int] | None] | None = None,
                  shuffle_window: int = 256, cycle_length: int = 4, prefetch: int = 2,
                  streams: Sequence[str] = (), video_stream: str = "video",
                  process_index: int | None = None,
                  process_count: int | None = None) -> grain.IterDataset:
  """Infinite, shuffled, augmented training batches for this host (dict of numpy arrays)."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  paths = [path for path, _ in host_shards(files, process_index, process_count)]
  log.info("process %d of %d: train reads the %r stream of %s", process_index, process_count,
           video_stream, describe_shards(paths, len(files), process_count))
  if process_count > 1 and process_index == 0:
    # Every host yields the same clips per step: a host of fewer examples draws each more often.
    counts = [sum(n for _, n in host_shards(files, p, process_count))
              for p in range(process_count)]
    if max(counts) > 1.1 * min(counts):
      log.warning("the train split's %d shards give the %d hosts %d to %d examples: each host "
                  "draws as many clips a step, so the examples of the hosts with fewer are seen "
                  "up to %.2fx as often. Prepare the dataset with a smaller --examples-per-shard "
                  "(a multiple of the hosts in shards evens it out).", len(files), process_count,
                  min(counts), max(counts), max(counts) / max(min(counts), 1))
  # grain takes seeds in [0, 2**32); file_seed + 2 must stay there for any config.seed.
  file_seed = (seed * 1_000_003 + process_index) % (2**32 - 2)
  ds = grain.MapDataset.source(paths).shuffle(seed=file_seed).repeat(None)
  ds = ds.map(RecordFileIterDataset)
  ds = grain.experimental.InterleaveIterDataset(ds, cycle_length=min(cycle_length, len(paths)))
  ds = ds.map(_Decode(frame_shapes or {}, video_stream))
  ds = ds.random_map(_TrainClip(spec, streams), seed=file_seed + 2)
  if shuffle_window > 1:  # after cropping: the window holds clips, not whole decoded videos
    ds = _WindowShuffle(ds, shuffle_window, seed=file_seed + 1)
  ds = ds.batch(local_batch, drop_remainder=True)
  if prefetch:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  return ds


def with_workers(ds: grain.IterDataset, workers: int, buffer: int = 2) -> grain.IterDataset:
  """`ds` made by `workers` processes (grain's `mp_prefetch`; each runs the pipeline on its slice
  of the shard files, and the batches come round-robin), or `ds` itself for 0. The iterator's
  state holds every worker's position, so a restored run with the same count sees the same
  batches; another count gives other batches (the config records it)."""
  if workers <= 0:
    return ds
  if isinstance(ds, grain.experimental.ThreadPrefetchIterDataset):
    # A worker's thread prefetch only adds a copy: grain writes a pipeline's last batch straight
    # into shared memory (its mp_prefetch copies any other last step there) and buffers each
    # worker's batches itself. Its state is its parent's, so checkpoints read either way.
    (ds,) = ds.parents
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():   # the workers read grain's absl flags; outside absl.app none are
    flags.FLAGS.mark_as_parsed()
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=max(buffer, 1)),
                        worker_init_fn=_ignore_interrupts)


def release_shared_memory() -> None:
  """Unlinks the shared memory of every worker batch already let go of before returning. grain
  deletes a batch's shared memory on a thread of its own; a process that exits right after its
  last batch (a benchmark) can leave the last deletions undone, and Python's resource tracker
  then warns of leaked shared_memory objects at shutdown. Only for processes that used
  `with_workers` and are about to end."""
  import gc  # pylint: disable=import-outside-toplevel
  from grain import multiprocessing as grain_mp  # pylint: disable=import-outside-toplevel
  gc.collect()
  deleter = getattr(grain_mp.SharedMemoryArray, "_del_thread_pool", None)  # grain's own, if any
  if deleter is not None:
    deleter.apply(lambda: None)   # one thread, first in first out: every queued deletion done


def _ignore_interrupts(worker_index: int, worker_count: int) -> None:
  """In each input worker: a Ctrl-C (SIGINT to the terminal's whole process group) is the main
  process's to handle (it saves a checkpoint, then stops the workers), not the workers'."""
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def eval_batches(files: Sequence[tuple[str, int]], spec: ops.ClipSpec, local_batch: int, *,
                 streams: Sequence[str] = (), video_stream: str = "video",
                 frame_shapes: Mapping[str, Sequence[int] | None] | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Yields this host's eval batches: every example once, then masked padding.

  Every host yields the same number of batches (the maximum over hosts), so collective eval steps
  line up. Batches hold (B, V, T, h, w, C) views, `label`, `mask` (1 real / 0 padding) and `index`
  (position of the example in the split, -1 for padding).
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  mine = host_shards(files, process_index, process_count)
  log.info("process %d of %d: eval reads the %r stream of %s", process_index, process_count,
           video_stream, describe_shards([p for p, _ in mine], len(files), process_count))
  num_batches = num_eval_batches(files, local_batch, process_count)
  decode = _Decode(frame_shapes or {}, video_stream)
  offsets = np.cumsum([0] + [n for _, n in files])
  first_index = {path: int(offsets[i]) for i, (path, _) in enumerate(files)}

  def examples():
    for path, _ in mine:
      for position, item in enumerate(RecordFileIterDataset(path)):
        example = decode.map(item)
        views = ops.eval_views(example, spec, streams)
        views["index"] = np.int64(first_index[path] + position)
        views["mask"] = np.float32(1.0)
        yield views

  template = None
  pending: list[dict[str, np.ndarray]] = []
  emitted = 0
  for example in examples():
    template = template or example
    pending.append(example)
    if len(pending) == local_batch:
      yield _stack(pending)
      pending, emitted = [], emitted + 1
  if template is None and num_batches:
    template = _empty_views(files[0][0], spec, streams, decode)
  while emitted < num_batches:
    while len(pending) < local_batch:
      pad = {k: np.zeros_like(v) for k, v in template.items()}
      pad["index"] = np.int64(-1)
      pending.append(pad)
    yield _stack(pending)
    pending, emitted = [], emitted + 1


def _empty_views(path: str, spec: ops.ClipSpec, streams: Sequence[str],
                 decode: _Decode) -> dict[str, np.ndarray]:
  """A zero example with the shapes real ones have (for hosts without any example)."""
  item = next(iter(RecordFileIterDataset(path)))
  views = ops.eval_views(decode.map(item), spec, streams)
  views = {k: np.zeros_like(v) for k, v in views.items()}
  views["index"] = np.int64(-1)
  views["mask"] = np.float32(0.0)
  return views


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def num_eval_batches(files: Sequence[tuple[str, int]], local_batch: int,
                     process_count: int | None = None) -> int:
  """The eval batches every host yields (`eval_batches`): the most any host's shards need."""
  process_count = jax.process_count() if process_count is None else process_count
  counts = [sum(n for _, n in host_shards(files, p, process_count)) for p in range(process_count)]
  return max(math.ceil(c / local_batch) for c in counts) if counts else 0
