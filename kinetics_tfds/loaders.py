"""Training and evaluation clips without TensorFlow: a Grain dataset for JAX, a `torch.utils.data.Dataset` for PyTorch.

They read ArrayRecord builds (`array_records`), cut the views the tf.data pipeline cuts for the same seed
(`sampling`), and decode only those frames, with OpenCV's libjpeg-turbo. Frames are decoded whole and then cropped:
OpenCV has no cropped decode, and its decoder is as fast as TensorFlow's cropped one here (benchmarks/input_pipeline.py
--loader). Pixels equal tf.data's wherever a crop edge falls on a JPEG block boundary; elsewhere the outermost
column or row of a crop can differ by the chroma upsampling, and a resized crop (scale jitter, crop_fraction) by
OpenCV's and TensorFlow's bilinear rounding.

Both read in one order, keyed by stream position: epoch e is a permutation of the split drawn from (seed, e), and
process i of n takes every n-th example of it, so processes read disjoint shares that together are the split. A
position says which clip and which random view it gets, so a run resumes exactly from a step, in any number of
workers. Evaluation gives each process every n-th video, each with all its views.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from kinetics_tfds import array_records
from kinetics_tfds import sampling


def decode_frames(jpegs, indices, window, image_size: int, flip: bool = False, decoded=None) -> np.ndarray:
  """[len(indices), image_size, image_size, 3] uint8: frames `indices` of `jpegs` cut to `window` [y, x, h, w],
  resized to `image_size` where the window is another size, mirrored if `flip`. `decoded` (a dict) keeps frames
  already decoded, for views that share them; without it each frame is dropped once cut, so the next one decodes
  into the same warm memory (5% faster than keeping a clip's 64 frames)."""
  y, x, height, width = (int(v) for v in window)
  out = np.empty((len(indices), image_size, image_size, 3), np.uint8)
  for t, index in enumerate(indices):
    index = int(index)
    frame = None if decoded is None else decoded.get(index)
    if frame is None:
      frame = cv2.imdecode(np.frombuffer(jpegs[index], np.uint8), cv2.IMREAD_COLOR_RGB)
      if decoded is not None:
        decoded[index] = frame
    crop = frame[y : y + height, x : x + width]
    if (height, width) != (image_size, image_size):
      crop = cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    if flip:
      cv2.flip(crop, 1, dst=out[t])  # NumPy's reversed-stride copy costs as much as decoding the frame.
    else:
      out[t] = crop
  return out


@dataclasses.dataclass(frozen=True)
class Order:
  """Which example each stream position reads: per epoch a permutation drawn from (seed, epoch), or file order
  without `shuffle`; process `shard` of `num_shards` takes every num_shards-th example of it."""

  num_examples: int
  seed: int = 0
  shuffle: bool = True
  shard: int = 0
  num_shards: int = 1

  def __post_init__(self):
    if not 0 <= self.shard < self.num_shards:
      raise ValueError(f"shard {self.shard} is not one of {self.num_shards}")
    if self.num_examples < self.num_shards:
      raise ValueError(f"{self.num_examples} examples cannot give each of {self.num_shards} processes one")

  @property
  def per_epoch(self) -> int:
    """Positions per epoch in this shard (every shard has as many: the last few examples of a permutation that
    do not divide among the shards wait for the next epoch)."""
    return self.num_examples // self.num_shards

  def __call__(self, position: int) -> int:
    epoch, offset = divmod(int(position), self.per_epoch)
    permutation = _permutation(self.num_examples, self.seed, epoch) if self.shuffle else range(self.num_examples)
    return int(permutation[self.shard + offset * self.num_shards])


@functools.lru_cache(maxsize=4)
def _permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class TrainClips:
  """Position -> (clip [num_frames, image_size, image_size, 3] uint8, label int32): `pipeline.train_dataset`'s view
  of the example at that position (see there for the settings), as a map-style dataset of positions."""

  source: array_records.Source
  order: Order
  num_frames: int = 64
  frame_stride: int = 1
  image_size: int = 224
  scale_jitter: tuple[float, float] | None = None
  random_flip: bool = True

  def __getitem__(self, position: int):
    example = self.source[self.order(position)]
    jpegs = example["video"]
    indices, window, flip = sampling.train_view(
      sampling.pipeline_seed(self.order.seed, self.order.shard),
      int(position),
      len(jpegs),
      sampling.jpeg_size(jpegs[0]),
      num_frames=self.num_frames,
      frame_stride=self.frame_stride,
      image_size=self.image_size,
      scale_jitter=self.scale_jitter,
      random_flip=self.random_flip,
    )
    return decode_frames(jpegs, indices, window, self.image_size, bool(flip)), np.int32(example["label"])


@dataclasses.dataclass(frozen=True)
class EvalClips:
  """Index -> every view of this shard's index-th video, as `pipeline.eval_dataset` cuts them (see there):
  {'video' [V, T, S, S, 3] uint8, 'label' [V] int32, 'key' [V] bytes, 'view' [V] int32, and with `pad_period`
  'num_frames' [V] int32}."""

  source: array_records.Source
  num_frames: int = 64
  frame_stride: int = 1
  image_size: int = 224
  num_clips: int | None = None
  num_crops: int = 1
  crop_fraction: float | None = None
  pad_period: int | None = None
  shard: int = 0
  num_shards: int = 1

  def __len__(self) -> int:
    return len(range(self.shard, len(self.source), self.num_shards))

  def __getitem__(self, index: int) -> dict:
    example = self.source[self.shard + int(index) * self.num_shards]
    jpegs = example["video"]
    indices, windows = sampling.eval_views(
      len(jpegs),
      sampling.jpeg_size(jpegs[0]),
      num_frames=self.num_frames,
      frame_stride=self.frame_stride,
      image_size=self.image_size,
      num_clips=self.num_clips,
      num_crops=self.num_crops,
      crop_fraction=self.crop_fraction,
      pad_period=self.pad_period,
    )
    decoded, views, size = {}, len(indices), self.image_size
    elements = {
      "video": np.stack([decode_frames(jpegs, i, w, size, decoded=decoded) for i, w in zip(indices, windows)]),
      "label": np.full([views], example["label"], np.int32),
      "key": np.array([bytes(example["key"][0])] * views, dtype=object),
      "view": np.arange(views, dtype=np.int32),
    }
    if self.pad_period is not None and self.num_clips is None:
      elements["num_frames"] = np.full([views], len(range(0, len(jpegs), self.frame_stride)), np.int32)
    return elements


def batches_by_shape(videos, batch_size: int):
  """Eval batches from per-video views (`EvalClips` elements): views of one shape share a batch (whole clips
  padded to one length), each batch emitted when full and the rest at the end, as `pipeline.eval_dataset` groups
  them."""
  pending = {}
  for video in videos:
    for row in range(len(video["view"])):
      shape = video["video"].shape[1:]
      views = pending.setdefault(shape, [])
      views.append({name: np.asarray(values)[row] for name, values in video.items()})
      if len(views) == batch_size:
        yield _stack(pending.pop(shape))
  for views in pending.values():
    yield _stack(views)


def as_is(element):
  """A DataLoader's `collate_fn` for elements that are already whole (`EvalClips`' videos)."""
  return element


def _stack(views: list[dict]) -> dict:
  return {name: np.stack([view[name] for view in views]) for name in views[0]}


def grain_train(clips: TrainClips, *, batch_size: int, start: int = 0, num_workers: int = 0):
  """A Grain `IterDataset` of (clips, labels) batches from stream position `start` on (a resumed run: its step
  times `batch_size`), decoded in `num_workers` processes (0: in this one)."""
  import grain  # pylint: disable=g-import-not-at-top  (only for Grain users)

  _absl_flags_for_grain()
  positions = grain.MapDataset.range(start, start + (1 << 62))
  ds = positions.map(lambda position: clips[position]).to_iter_dataset()
  if num_workers:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return ds.batch(batch_size, drop_remainder=True)


def grain_eval(clips: EvalClips, *, num_workers: int = 0):
  """A Grain `IterDataset` of `clips`' videos in order (batch them with `batches_by_shape`)."""
  import grain  # pylint: disable=g-import-not-at-top  (only for Grain users)

  _absl_flags_for_grain()
  ds = grain.MapDataset.range(len(clips)).map(lambda index: clips[index]).to_iter_dataset()
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers)) if num_workers else ds


def _absl_flags_for_grain() -> None:
  """Grain reads absl flags in its workers: a program that does not parse any (a notebook, a plain script) gets
  their defaults, where it would get `UnparsedFlagAccessError`."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class TorchPositions:
  """`clips` (a `TrainClips`) as a `torch.utils.data.Dataset` of `length` positions from `start` (a resumed run:
  its step times the batch size): hand it to a `DataLoader` with `shuffle=False`, the order being the positions'."""

  def __init__(self, clips: TrainClips, length: int, start: int = 0):
    self.clips, self.length, self.start = clips, length, start

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int):
    return self.clips[self.start + index]
