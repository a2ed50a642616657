"""Which frames and which square of them each view decodes: plain NumPy, shared by every reader.

The tf.data pipeline (`pipeline`, through `tf.numpy_function`) and the readers without TensorFlow (`loaders`)
both call these, so for one seed they cut the same frames and the same crops. Everything here works on a clip's
length and frame size alone: nothing is decoded. Windows are [y, x, height, width], as
`tf.io.decode_and_crop_jpeg` takes them.

Training randomness is keyed by the seed, the input pipeline and each clip's position in the stream (NumPy's
SeedSequence), so runs repeat exactly and pipelines never repeat each other's numbers.
"""

from __future__ import annotations

import collections

import numpy as np

# Lengths whole clips are padded to: 16, 20, 24, 28, 32, 40, ... (four per octave, all multiples of 4), so clips
# of any length take a few shapes and are padded by less than a quarter (Kinetics' 10 s at 25 fps, 250 frames: 256).
_PADDED_LENGTHS = sorted({base << k for base in (4, 5, 6, 7) for k in range(2, 24)})


def window_span(num_frames: int, frame_stride: int) -> int:
  """Source frames a window of `num_frames` frames `frame_stride` apart covers."""
  return (num_frames - 1) * frame_stride + 1


def window_indices(num_source: int, starts, num_frames: int, stride: int) -> np.ndarray:
  """[K, num_frames] int32 frame indices `stride` apart from each start; short clips loop (index mod length)."""
  steps = np.arange(num_frames, dtype=np.int64) * stride
  return ((np.asarray(starts, np.int64)[:, None] + steps[None, :]) % num_source).astype(np.int32)


def even_starts(num_source: int, span: int, num_clips: int) -> np.ndarray:
  """[num_clips] starts spread evenly from the first to the last window that fits; one clip: the middle."""
  max_start = float(max(num_source - span, 0))
  first, last = (max_start / 2, max_start / 2) if num_clips == 1 else (0.0, max_start)
  return np.round(np.linspace(first, last, num_clips)).astype(np.int64)


def crop_side(size, image_size: int, fraction: float | None = None) -> int:
  """Side of the square to cut: `fraction` of the short side, or `image_size` pixels when None.

  Cutting `image_size` pixels keeps the stored scale (I3D: 224 out of 256); a fraction is resized to
  `image_size` afterwards. Never larger than the short side.
  """
  short = int(min(size))
  if fraction is None:
    return min(short, image_size)
  return int(np.clip(np.round(np.float32(fraction) * np.float32(short)), 1, short))


def spaced_crop_windows(size, side: int, num_crops: int) -> np.ndarray:
  """[num_crops, 4] squares centred across the short side; 1: the centre, 3: start/centre/end of the long side."""
  if num_crops not in (1, 3):
    raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
  slack = np.asarray(size, np.int64) - side
  along = np.array([0.5] if num_crops == 1 else [0.0, 0.5, 1.0], np.float32)
  spread = np.floor(along[:, None] * slack.astype(np.float32)).astype(np.int64)
  long_axis = int(size[1] >= size[0])  # 0: y, 1: x.
  corners = np.where(np.arange(2) == long_axis, spread, slack // 2)
  return np.concatenate([corners, np.full([num_crops, 2], side)], axis=1).astype(np.int32)


def clip_offset(num_frames, period: int):
  """The frame a whole clip of `num_frames` frames starts at in a batch padded to a multiple of `period`: so that it
  ends on a multiple of `period` (see `padded_frames`). Ints, arrays or a Keras backend's tensors alike."""
  return (-num_frames) % period


def padded_frames(num_frames: int, period: int) -> np.ndarray:
  """[padded length] frame indices of a whole clip of `num_frames` frames, padded to share a batch with clips of
  other lengths (`i3d.InceptionI3D(padded_clips=True)`, with `period` = `i3d.PADDING_PERIOD`).

  The clip starts at its `clip_offset`, and the length is the next of `_PADDED_LENGTHS` that is a
  multiple of `period` and holds it. The padding repeats the clip's first and last frames.
  """
  offset = clip_offset(num_frames, period)
  fits = [n for n in _PADDED_LENGTHS if n % period == 0 and n >= num_frames + offset]
  length = fits[0] if fits else num_frames + offset
  return np.clip(np.arange(length) - offset, 0, num_frames - 1).astype(np.int32)


def train_view(
  seed: int,
  position: int,
  num_source: int,
  size,
  *,
  num_frames: int,
  frame_stride: int,
  image_size: int,
  scale_jitter: tuple[float, float] | None = None,
  random_flip: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.bool_]:
  """(frame indices [num_frames] int32, window [4] int32, flip) of the clip at `position` in a training stream.

  A window of `num_frames` frames `frame_stride` apart, uniform over the windows that fit (a short clip loops);
  one square for all its frames, placed uniformly (`image_size` pixels, or with `scale_jitter` (lo, hi) a uniform
  fraction of the short side, to be resized); mirrored with probability 1/2 unless `random_flip` is False.
  `seed` may be any non-negative integer (the pipeline's own, see `pipeline_seed`).
  """
  rng = np.random.default_rng([seed, position])
  span = window_span(num_frames, frame_stride)
  start = rng.integers(0, max(num_source - span, 0), endpoint=True)
  fraction = None if scale_jitter is None else rng.uniform(*scale_jitter)
  side = crop_side(size, image_size, fraction)
  corner = np.floor(rng.random(2) * (np.asarray(size, np.int64) - side + 1)).astype(np.int64)
  flip = bool(rng.random() < 0.5) and random_flip
  window = np.array([corner[0], corner[1], side, side], np.int32)
  return window_indices(num_source, [start], num_frames, frame_stride)[0], window, np.bool_(flip)


def eval_views(
  num_source: int,
  size,
  *,
  num_frames: int,
  frame_stride: int,
  image_size: int,
  num_clips: int | None,
  num_crops: int,
  crop_fraction: float | None = None,
  pad_period: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """(frame indices [V, T] int32, windows [V, 4] int32) of a clip's V = clips x crops views, view = clip * num_crops
  + crop.

  `num_clips` K: K windows of `num_frames`, spread evenly from the first frame to the last; None: the whole clip
  (every `frame_stride`-th frame), padded by `padded_frames` when `pad_period` is given. Squares: `spaced_crop_windows`
  of `image_size` pixels, or `crop_fraction` of the short side.
  """
  if num_clips is None:
    indices = np.arange(0, num_source, frame_stride, dtype=np.int32)
    if pad_period is not None:
      indices = indices[padded_frames(len(indices), pad_period)]
    indices = indices[None]
  else:
    starts = even_starts(num_source, window_span(num_frames, frame_stride), num_clips)
    indices = window_indices(num_source, starts, num_frames, frame_stride)
  windows = spaced_crop_windows(size, crop_side(size, image_size, crop_fraction), num_crops)
  return np.repeat(indices, num_crops, axis=0), np.tile(windows, [len(indices), 1])


def aggregate(keys, predictions) -> dict[str, np.ndarray]:
  """Mean prediction per clip key over its views: `keys` [N] (bytes or str), `predictions` [N, ...].

  Concatenate the 'key' of every eval batch and the model's outputs for it (logits or
  probabilities), then call this once.
  """
  groups = collections.defaultdict(list)
  for key, prediction in zip(keys, np.asarray(predictions)):
    groups[key.decode() if isinstance(key, bytes) else str(key)].append(prediction)
  return {key: np.mean(values, axis=0) for key, values in groups.items()}


def pipeline_seed(seed: int, pipeline_id: int = 0) -> int:
  """A seed of one input pipeline's own (one per worker or process), so pipelines do not repeat each other."""
  return seed + (pipeline_id << 32)


def jpeg_size(jpeg) -> tuple[int, int]:
  """(height, width) from a JPEG's frame header (SOFn), without decoding; what `tf.image.extract_jpeg_shape` reads."""
  data = memoryview(jpeg)
  i = 2
  while i + 9 < len(data):
    if data[i] != 0xFF:
      raise ValueError("not a JPEG: no marker where one belongs")
    marker = data[i + 1]
    if marker == 0xFF:  # Fill byte.
      i += 1
      continue
    length = (data[i + 2] << 8) | data[i + 3]
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      return (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
    i += 2 + length
  raise ValueError("not a JPEG: no frame header")
