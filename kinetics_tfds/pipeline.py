"""tf.data pipelines over the Kinetics TFRecords: sample frames first, then decode only those, cropped.

TFDS's `Video` feature decodes all ~250 frames of a clip when a step needs 64 of them, cropped.
Here the frames are read as JPEG strings (`SkipDecoding`), the window in time and the crop in
space are chosen from the strings and the JPEG header alone, and only the chosen frames are
decoded, each inside its crop (`tf.io.decode_and_crop_jpeg`).

Which frames and which crop each view takes is `sampling`'s NumPy, called in the graph, so the readers
without TensorFlow (`loaders`) cut the same views for the same seed. `train_dataset` and `eval_dataset`
differ only in how windows and crops are chosen. Decoding runs per batch, not
per clip: the frames of a whole batch are decoded into one tensor, so the pixels are copied once
(batching decoded clips would copy them again, which costs as much as a tenth of decoding them).

Clips come out as uint8: normalising on the accelerator moves 4x fewer bytes to it. Start the
training process with TF_CPU_ALLOCATOR_USE_BFC=true: each batch is a fresh tensor (77 MB for
8 x 64 x 224 x 224 x 3), and without TensorFlow's BFC allocator glibc maps and zeroes new pages
for every one, which cost a third as much as the decoding in benchmarks/input_pipeline.py.
Everything yields plain tensors, so any Keras backend can read it (`.as_numpy_iterator()` for JAX).
"""

from __future__ import annotations

import functools
import os
import random

import cv2
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kinetics_tfds import frame_index
from kinetics_tfds import sampling
from kinetics_tfds import storage

_DTYPES = ("uint8", "float32")
DCT_METHOD = "INTEGER_ACCURATE"  # libjpeg-turbo's JDCT_ISLOW.


class _FrameStrings(tfds.decode.SkipDecoding):
  """The video as its frames' JPEG strings, as parsed.

  `SkipDecoding` on a sequence feature still runs TFDS's per-frame `tf.map_fn`, an identity that
  copies every frame string: as costly as reading and parsing the record.
  """

  def decode_batch_example(self, serialized_example):
    return serialized_example


def frame_size(jpeg: tf.Tensor) -> tf.Tensor:
  """[height, width] from the JPEG header, without decoding."""
  return tf.image.extract_jpeg_shape(jpeg)[:2]


# Pixels: decoding only what was chosen.


def decode_frame(jpeg: tf.Tensor, window: tf.Tensor, image_size: int, resize: bool) -> tf.Tensor:
  """One uint8 frame decoded inside `window`, resized to `image_size` if `resize`.

  libjpeg-turbo decodes only the MCU blocks the window touches. Where a window edge falls on an MCU
  boundary its outermost column can differ from a full decode by the chroma upsampling: harmless. The
  accurate integer DCT, as OpenCV, PIL and the readers without TensorFlow decode (TensorFlow's default,
  the fast one, is off by up to 5 levels on most pixels), costs no more here.
  """
  frame = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3, dct_method=DCT_METHOD)
  if resize:
    frame = tf.saturate_cast(tf.round(tf.image.resize(frame, [image_size, image_size])), tf.uint8)
  return frame


def _mirror_in_place(clips: np.ndarray, flips: np.ndarray) -> np.ndarray:
  """`clips` [B, T, H, W, 3] with the clips where `flips` mirrored left to right, in their own buffer.

  `tf.numpy_function` hands over the tensor's own buffer, not a copy, so this is only for a tensor that
  nothing else reads: the batch `decode_clips` has just decoded. OpenCV mirrors a clip's rows in place at
  memory speed; `tf.reverse` copies pixel by pixel into new memory, about 10x the time (a tenth of decoding).
  """
  for clip, flip in zip(clips, flips):
    if flip:
      rows = clip.reshape(-1, *clip.shape[-2:])
      cv2.flip(rows, 1, dst=rows)
  return clips


def decode_clips(jpegs: tf.Tensor, windows: tf.Tensor, image_size: int, flips=None) -> tf.Tensor:
  """[B, T, image_size, image_size, 3] uint8 from [B, T] JPEG strings, one window [B, 4] and flip [B] per clip.

  Every frame of a clip shares its clip's window and flip. The batch's frames are decoded into
  one tensor, so pixels are copied once, and mirrored where they lie. Whether to resize is decided
  once per batch: a per-frame choice costs a tenth of the decoding.
  """
  shape = tf.shape(jpegs)
  per_frame = (tf.reshape(jpegs, [-1]), tf.repeat(windows, shape[1], axis=0))

  def decode(resize):
    return lambda: tf.map_fn(
      lambda args: decode_frame(*args, image_size, resize),
      per_frame,
      fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8),
    )

  frames = tf.cond(tf.reduce_all(windows[:, 2] == image_size), decode(False), decode(True))
  clips = tf.reshape(frames, [shape[0], shape[1], image_size, image_size, 3])
  if flips is None:
    return clips
  return tf.ensure_shape(tf.numpy_function(_mirror_in_place, [clips, flips], tf.uint8, stateful=False), clips.shape)


def to_dtype(clips: tf.Tensor, dtype: str) -> tf.Tensor:
  """uint8 as is, or float32 in [-1, 1] (I3D's input range)."""
  if dtype == "uint8":
    return clips
  return tf.cast(clips, tf.float32) * (2 / 255) - 1


# Pipelines.


def _as_builder(builder, data_dir) -> tfds.core.DatasetBuilder:
  if isinstance(builder, str):
    return tfds.builder(builder, data_dir=data_dir)
  return builder


def _check(dtype: str, batch_size: int) -> None:
  if dtype not in _DTYPES:
    raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")


def _finish(ds: tf.data.Dataset, decode, deterministic: bool) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = deterministic
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _pipeline_seed(seed: int, input_context) -> int:
  """A seed of this input pipeline's own, so pipelines do not repeat each other's random numbers."""
  return sampling.pipeline_seed(seed, input_context.input_pipeline_id if input_context else 0)


def _numpy(function, inputs, outputs):
  """`function` of NumPy values, in the graph; `outputs`: (dtype, static shape) of each result."""
  results = tf.numpy_function(function, inputs, [dtype for dtype, _ in outputs], stateful=False)
  return [tf.ensure_shape(result, shape) for result, (_, shape) in zip(results, outputs)]


def records(
  builder,
  split: str,
  *,
  shuffle_seed: int | None = None,
  input_context: tf.distribute.InputContext | None = None,
  data_dir: str | None = None,
) -> tf.data.Dataset:
  """A split's examples as stored, the video as its frames' JPEG strings: nothing decoded.

  In file order, or with files shuffled by `shuffle_seed`; `input_context` gives each input
  pipeline its own files. What the pipelines sample from, and what tools that look at every
  record once (the dataset report) read.
  """
  builder = _as_builder(builder, data_dir)
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, input_context=input_context, try_autocache=False)
  return builder.as_dataset(
    split=split, shuffle_files=shuffle_seed is not None, decoders={"video": _FrameStrings()}, read_config=read_config
  )


def train_views(
  builder,
  split: str = "train",
  *,
  num_frames: int = 64,
  frame_stride: int = 1,
  image_size: int = 224,
  scale_jitter: tuple[float, float] | None = None,
  random_flip: bool = True,
  seed: int = 0,
  input_context: tf.distribute.InputContext | None = None,
  repeat: bool = True,
  data_dir: str | None = None,
) -> tf.data.Dataset:
  """Per clip, in file order, what training decodes.

  {'video': [num_frames] JPEG strings, 'window': [4], 'flip', 'label'}.

  The sampling half of `train_dataset` (see there), on its own so a benchmark can time decoding
  exactly these frames. Each clip's random numbers come from `seed` and its position in the stream.
  """
  builder = _as_builder(builder, data_dir)
  seed = _pipeline_seed(seed, input_context)
  view = functools.partial(
    sampling.train_view,
    seed,
    num_frames=num_frames,
    frame_stride=frame_stride,
    image_size=image_size,
    scale_jitter=scale_jitter,
    random_flip=random_flip,
  )

  shards = _indexed_shards(builder, split, input_context)
  if shards is not None:
    return _indexed_views(shards, view, seed, input_context, num_frames, repeat)

  def sample(index, example):
    jpegs = example["video"]
    indices, window, flip = _numpy(
      lambda position, num_source, size: view(int(position), int(num_source), size),
      [index, tf.shape(jpegs)[0], frame_size(jpegs[0])],
      [(tf.int32, [num_frames]), (tf.int32, [4]), (tf.bool, [])],
    )
    return {
      "video": tf.gather(jpegs, indices),
      "window": window,
      "flip": flip,
      "label": tf.cast(example["label"], tf.int32),
    }

  ds = records(builder, split, shuffle_seed=seed, input_context=input_context)
  if repeat:
    ds = ds.repeat()
  return ds.enumerate().map(sample, num_parallel_calls=tf.data.AUTOTUNE)


def _indexed_shards(builder, split: str, input_context) -> list | None:
  """The split's file instructions (shard, skip, take) when every shard has a frame index (`frame_index`) on
  a local disk; None otherwise (a Beam or older build, an object store, `tfds.testing.mock_data`), to read whole
  records as before."""
  if not builder.info.splits or storage.is_url(os.fspath(builder.data_dir)):
    return None
  instructions = builder.info.splits[split].file_instructions
  if not instructions or not all(os.path.exists(frame_index.path_for(os.fspath(i.filename))) for i in instructions):
    return None
  if input_context and input_context.num_input_pipelines > len(instructions):
    return None  # TFDS's reader says why it cannot shard these files.
  return instructions


def _indexed_views(instructions, view, seed: int, input_context, num_frames: int, repeat: bool) -> tf.data.Dataset:
  """`train_views` reading only the sampled frames, through the shards' frame indexes.

  Examples come in the order `records` gives them (TFDS's `reader._read_files`: files sharded by
  `input_context`, shuffled by `seed`, reshuffled each epoch, interleaved 16 at a time in blocks of 16),
  so the views are the same, clip for clip, with or without an index.
  """
  paths = [os.fspath(i.filename) for i in instructions]
  ds = tf.data.Dataset.from_tensor_slices(
    (
      tf.range(len(paths), dtype=tf.int64),
      tf.constant([i.skip for i in instructions], tf.int64),
      tf.constant([i.take for i in instructions], tf.int64),
    )
  )
  if input_context:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  ds = ds.shuffle(len(paths), seed=seed).interleave(
    lambda shard, skip, take: tf.data.Dataset.range(skip, skip + take).map(lambda example: (shard, example)),
    cycle_length=16,
    block_length=16,
  )
  if repeat:
    ds = ds.repeat()

  def read(position, shard, example):
    index = frame_index.load(paths[shard])
    indices, window, flip = view(int(position), index.num_frames(example), index.sizes[example])
    return index.read(example, indices), window, flip, index.labels[example]

  def sample(position, example):
    jpegs, window, flip, label = _numpy(
      read,
      [position, *example],
      [(tf.string, [num_frames]), (tf.int32, [4]), (tf.bool, []), (tf.int32, [])],
    )
    return {"video": jpegs, "window": window, "flip": flip, "label": label}

  return ds.enumerate().map(sample, num_parallel_calls=tf.data.AUTOTUNE)


def train_dataset(
  builder,
  split: str = "train",
  *,
  batch_size: int,
  num_frames: int = 64,
  frame_stride: int = 1,
  image_size: int = 224,
  scale_jitter: tuple[float, float] | None = None,
  random_flip: bool = True,
  dtype: str = "uint8",
  seed: int | None = None,
  deterministic: bool = False,
  input_context: tf.distribute.InputContext | None = None,
  shuffle_buffer: int = 256,
  repeat: bool = True,
  data_dir: str | None = None,
) -> tf.data.Dataset:
  """(clips [batch_size, num_frames, image_size, image_size, 3], labels [batch_size] int32) for training.

  Per clip: a random window of `num_frames` frames `frame_stride` apart (short clips loop), one
  random square crop for all its frames (`image_size` pixels; with `scale_jitter` (lo, hi), a
  random fraction of the short side resized to `image_size`), a random horizontal flip unless
  `random_flip` is False (where left and right differ by class, as in the built-in sample).
  `builder`: a prepared `tfds.core.DatasetBuilder`, or a name such as 'kinetics400/i3d_25fps_256'
  with `data_dir`. Randomness is keyed by `seed` and each example's position, so with a seed and
  `deterministic=True` two runs yield the same batches; `deterministic=False` lets parallel steps
  finish out of order, which is faster. Clips are shuffled after sampling, as the JPEG strings of
  their window: `shuffle_buffer` clips of 64 frames at 256 px hold about 1.3 MB each.
  `input_context` (from `tf.distribute`) gives each input pipeline its own files; `batch_size`
  is then per replica.
  """
  _check(dtype, batch_size)
  seed = random.SystemRandom().randrange(2**31) if seed is None else seed
  views = train_views(
    builder,
    split,
    num_frames=num_frames,
    frame_stride=frame_stride,
    image_size=image_size,
    scale_jitter=scale_jitter,
    random_flip=random_flip,
    seed=seed,
    input_context=input_context,
    repeat=repeat,
    data_dir=data_dir,
  )

  def decode(batch):
    clips = decode_clips(batch["video"], batch["window"], image_size, batch["flip"])
    return to_dtype(clips, dtype), batch["label"]

  ds = views.shuffle(shuffle_buffer, seed=_pipeline_seed(seed, input_context)).batch(batch_size, drop_remainder=True)
  return _finish(ds, decode, deterministic)


def eval_dataset(
  builder,
  split: str = "validation",
  *,
  batch_size: int,
  num_frames: int = 64,
  frame_stride: int = 1,
  image_size: int = 224,
  num_clips: int | None = None,
  num_crops: int = 1,
  pad_period: int | None = None,
  dtype: str = "uint8",
  input_context: tf.distribute.InputContext | None = None,
  crop_fraction: float | None = None,
  data_dir: str | None = None,
) -> tf.data.Dataset:
  """{'video' [B, T, image_size, image_size, 3], 'label' [B] int32, 'key' [B] string, 'view' [B] int32}.

  One element per view, in file order; `view` = clip index * num_crops + crop index, and
  `aggregate` averages predictions per key. `num_clips` K: K windows of `num_frames`, spread evenly
  from the first frame to the last. `num_clips` None: the whole clip (every `frame_stride`-th
  frame, the I3D protocol). Whole clips differ in length, and padding them changes a model's
  average over time unless the model knows each clip's length: without `pad_period`, `batch_size`
  must be 1 (and an XLA-compiled model compiles once per length). With `pad_period`, each whole
  clip is padded to one of a few lengths (`sampling.padded_frames`) and elements get 'num_frames' [B]
  int32, each clip's own length, for a model that takes both, such as
  `i3d.InceptionI3D(padded_clips=True)` with `pad_period=i3d.PADDING_PERIOD`. A batch then holds
  clips of one padded length, in the order the batches fill up rather than file order.
  `num_crops` 1: the centre square; 3: squares at the start, centre and end of the long side.
  Squares are `image_size` pixels (the scale training sees without scale jitter; I3D's centre
  crop) or, with `crop_fraction`, that fraction of the short side resized to `image_size` (1.0:
  the whole short side). With `input_context`, each input pipeline reads its own files, so views
  of a key stay in one pipeline.
  """
  _check(dtype, batch_size)
  padded = num_clips is None and pad_period is not None
  if num_clips is None and not padded and batch_size != 1:
    raise ValueError("whole-clip views (num_clips=None) differ in length: batch_size must be 1, or give pad_period")
  builder = _as_builder(builder, data_dir)

  select = functools.partial(
    sampling.eval_views,
    num_frames=num_frames,
    frame_stride=frame_stride,
    image_size=image_size,
    num_clips=num_clips,
    num_crops=num_crops,
    crop_fraction=crop_fraction,
    pad_period=pad_period if padded else None,
  )

  def views(example):
    jpegs = example["video"]
    indices, windows = _numpy(
      lambda num_source, size: select(int(num_source), size),
      [tf.shape(jpegs)[0], frame_size(jpegs[0])],
      [(tf.int32, [None, None if num_clips is None else num_frames]), (tf.int32, [None, 4])],
    )
    num_views = tf.shape(indices)[0]
    elements = {
      "video": tf.gather(jpegs, indices),
      "window": windows,
      "label": tf.fill([num_views], tf.cast(example["label"], tf.int32)),
      "key": tf.fill([num_views], example["key"]),
      "view": tf.range(num_views, dtype=tf.int32),
    }
    if padded:
      elements["num_frames"] = tf.fill([num_views], tf.size(tf.range(0, tf.shape(jpegs)[0], frame_stride)))
    return tf.data.Dataset.from_tensor_slices(elements)

  def decode(batch):
    clips = decode_clips(batch["video"], batch["window"], image_size)
    return {"video": to_dtype(clips, dtype), **{k: v for k, v in batch.items() if k not in ("video", "window")}}

  ds = records(builder, split, input_context=input_context).flat_map(views)
  if padded:
    ds = ds.group_by_window(
      lambda view: tf.cast(tf.shape(view["video"])[0], tf.int64),
      lambda _, views_of_a_length: views_of_a_length.batch(batch_size),
      window_size=batch_size,
    )
  else:
    ds = ds.batch(batch_size)
  return _finish(ds, decode, deterministic=True)


def distributed_train_dataset(strategy: tf.distribute.Strategy, builder, *, batch_size: int, **kwargs):
  """`train_dataset` under `strategy`: `batch_size` is global, each replica gets batch_size // replicas.

  Each input pipeline (one per worker) reads its own share of the files.
  """
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise ValueError(f"batch_size {batch_size} is not a multiple of the {replicas} replicas")
  builder = _as_builder(builder, kwargs.pop("data_dir", None))

  def dataset_fn(input_context):
    per_replica = input_context.get_per_replica_batch_size(batch_size)
    return train_dataset(builder, batch_size=per_replica, input_context=input_context, **kwargs)

  return strategy.distribute_datasets_from_function(dataset_fn)


# Mean prediction per video over its views; where the views are cut (`sampling`), kept here too for tf.data users.
aggregate = sampling.aggregate
