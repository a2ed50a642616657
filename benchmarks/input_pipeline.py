"""Training input throughput: the pipeline against pure JPEG decoding of its frames, and against TFDS's full decode.

Builds a small Kinetics-like dataset with the real builder (10 s clips, 340x256 source, stored at
25 fps, short side 256, JPEG quality 90: the i3d_25fps_256 settings; cached in --work_dir), then
times, in one run, taking turns so a busy machine slows all alike:

  pipeline     `pipeline.train_dataset`: clips per second, as a training loop receives them.
  limit        a bare loop running only `tf.io.decode_and_crop_jpeg` on the frames the pipeline
               samples (the same clips, windows and crops), as parallel as the pipeline.
  full decode  `tfds` with its default decoding (every frame of every clip), then the same
               sampling, crop and flip.
  tf_free      the reader without TensorFlow (`loaders.TrainClips`, the same views) over an ArrayRecord
               build of the same clips, in one thread: per core, what a Grain or DataLoader worker does.

It also times reading, parsing and sampling alone (nothing decoded), and records CPU time per clip
for each: on a shared machine CPU time says more than wall time. Prints one JSON line:
clips_per_s, limit_clips_per_s, ratio_to_limit, full_decode_clips_per_s, speedup_vs_full_decode,
cpu_ms_per_clip, tf_free_per_core_ratio_to_pipeline (CPU per clip of tf.data over that of tf_free) and the
settings.
"""

import dataclasses
import functools
import itertools
import json
import os
import resource
import statistics
import time

# Each batch is a fresh ~77 MB tensor; glibc maps and zeroes new pages for every one, which costs
# a third as much as decoding. TensorFlow's BFC allocator keeps and reuses them. It must be chosen
# before TensorFlow starts; run with TF_CPU_ALLOCATOR_USE_BFC=false to see the difference.
_BFC = "TF_CPU_ALLOCATOR_USE_BFC"
os.environ.setdefault(_BFC, "true")

# pylint: disable=g-import-not-at-top,wrong-import-position
# ruff: noqa: E402
from absl import app
from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kinetics_tfds import KineticsConfig
from kinetics_tfds import array_records
from kinetics_tfds import command
from kinetics_tfds import loaders
from kinetics_tfds import motion_clips
from kinetics_tfds import pipeline
from kinetics_tfds import sampling

# pylint: enable=g-import-not-at-top,wrong-import-position


@dataclasses.dataclass(frozen=True)
class Settings:
  num_clips: int = command.setting(16, "Clips in the dataset built (a multiple of its 4 classes).", lower_bound=1)
  seconds: float = command.setting(10.0, "Length of each clip, seconds (Kinetics: 10).")
  num_frames: int = command.setting(64, "Frames per training clip.", lower_bound=1)
  frame_stride: int = command.setting(1, "Stride between the sampled frames.", lower_bound=1)
  image_size: int = command.setting(224, "Side of the square crop.", lower_bound=1)
  batch_size: int = command.setting(8, "Clips per batch.", lower_bound=1)
  steps: int = command.setting(16, "Batches per timed pass of the pipeline and the limit.", lower_bound=1)
  full_decode_steps: int = command.setting(3, "Batches per timed pass of the full decode.", lower_bound=1)
  warmup_steps: int = command.setting(4, "Batches run before timing (fills buffers, tunes).", lower_bound=0)
  passes: int = command.setting(3, "Timed passes per measurement.", lower_bound=1)
  rounds: int = command.setting(
    2,
    "Measurements of each, taken in turn (so a busy machine slows all alike); the median pass is reported.",
    lower_bound=1,
  )
  work_dir: str = command.setting("/tmp/kinetics_tfds_input_benchmark", "Where the built dataset is cached.")

  @property
  def view(self) -> dict:
    """What each clip takes, as the readers' keyword arguments."""
    return dict(num_frames=self.num_frames, frame_stride=self.frame_stride, image_size=self.image_size)


command.define_flags(Settings, __name__)
_SEED = 0


def build_dataset(work_dir: str, num_clips: int, seconds: float, file_format: str = "tfrecord"):
  """The kinetics400 builder over synthetic 340x256 clips at the i3d_25fps_256 settings, in `file_format`; built
  once per size and format."""
  classes = len(motion_clips.MOTIONS)
  if num_clips % classes:
    raise app.UsageError(f"--num_clips must be a multiple of {classes}")
  config = KineticsConfig(
    name=f"i3d_{num_clips}clips_{seconds:g}s", fps=25.0, short_side=256, jpeg_quality=90, num_classes=classes
  )
  data_dir = os.path.join(work_dir, "data" if file_format == "tfrecord" else f"data_{file_format}")
  builder = tfds.builder("kinetics400", config=config, data_dir=data_dir, file_format=file_format)
  if not builder.is_prepared():
    manual = os.path.join(work_dir, config.name, "manual")
    motion_clips.make_manual_dir(
      manual, clips_per_class={"train": num_clips // classes}, seconds=seconds, fps=25, width=340, height=256
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  return builder


def limit_dataset(settings: Settings, builder, num_clips: int) -> tf.data.Dataset:
  """Only `decode_and_crop_jpeg` of the frames the pipeline samples (same seed), a loop per clip.

  The first `num_clips` views are read once and held in memory, so no reading, parsing or copying
  is timed; each frame's first pixel is summed so that no decode can be skipped.
  """
  views = pipeline.train_views(builder, seed=_SEED, **settings.view)
  held = next(iter(views.map(lambda v: (v["video"], v["window"])).batch(num_clips)))

  def decode_only(jpegs, window):
    total = tf.constant(0, tf.int64)
    for i in tf.range(tf.shape(jpegs)[0]):
      jpeg = tf.io.decode_and_crop_jpeg(jpegs[i], window, channels=3, dct_method=pipeline.DCT_METHOD)
      total += tf.cast(jpeg[0, 0, 0], tf.int64)
    return total

  ds = tf.data.Dataset.from_tensor_slices(held).repeat().map(decode_only, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(settings.batch_size)
  options = tf.data.Options()
  options.deterministic = False
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def full_decode_dataset(settings: Settings, builder) -> tf.data.Dataset:
  """TFDS's default path: every frame decoded, then the same window, crop and flip cut from the pixels."""
  num_frames, image_size = settings.num_frames, settings.image_size
  view = functools.partial(sampling.train_view, _SEED, **settings.view)

  def sample_decoded(index, example):
    video = example["video"]
    indices, window, flip = pipeline._numpy(  # pylint: disable=protected-access
      lambda position, shape: view(int(position), int(shape[0]), shape[1:3]),
      [index, tf.shape(video)],
      [(tf.int32, [num_frames]), (tf.int32, [4]), (tf.bool, [])],
    )
    y, x, side, _ = tf.unstack(window)
    clip = tf.gather(video, indices)[:, y : y + side, x : x + side]
    clip = tf.cond(flip, lambda: tf.reverse(clip, [2]), lambda: clip)
    return tf.ensure_shape(clip, [num_frames, image_size, image_size, 3]), tf.cast(example["label"], tf.int32)

  read_config = tfds.ReadConfig(shuffle_seed=_SEED, try_autocache=False)
  ds = builder.as_dataset("train", shuffle_files=True, read_config=read_config).repeat().enumerate()
  ds = ds.map(sample_decoded, num_parallel_calls=tf.data.AUTOTUNE).batch(settings.batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = False
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def tf_free_batches(settings: Settings, builder):
  """The reader without TensorFlow (`loaders.TrainClips` over the ArrayRecord build of the same clips), in this
  process alone: the same views as the pipeline, batched."""
  source = array_records.Source(array_records.Info(builder.data_dir), "train")
  clips = loaders.TrainClips(source, loaders.Order(len(source), seed=_SEED), **settings.view)
  batch = settings.batch_size
  for start in itertools.count(0, batch):
    views = [clips[position] for position in range(start, start + batch)]
    yield np.stack([clip for clip, _ in views]), np.array([label for _, label in views])


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def timed_pass(iterator, steps: int, batch_size: int) -> tuple[float, float]:
  """(clips per second, CPU milliseconds per clip) over `steps` batches."""
  start, start_cpu = time.perf_counter(), cpu_seconds()
  for _ in range(steps):
    next(iterator)
  clips = steps * batch_size
  return clips / (time.perf_counter() - start), 1000 * (cpu_seconds() - start_cpu) / clips


def measure(settings: Settings, dataset, steps: int) -> list[tuple[float, float]]:
  """--passes timed passes after a warm-up, on an iterator of its own.

  The iterator is dropped before the next measurement starts: a live one keeps decoding into its
  buffers in the background, which would slow the others and flatter itself.
  """
  iterator = iter(dataset)
  timed_pass(iterator, settings.warmup_steps, settings.batch_size)
  return [timed_pass(iterator, steps, settings.batch_size) for _ in range(settings.passes)]


def main(argv):
  del argv
  settings = command.from_flags(Settings)
  builder = build_dataset(settings.work_dir, settings.num_clips, settings.seconds)
  batch, view, steps = settings.batch_size, settings.view, settings.steps
  array_record = build_dataset(settings.work_dir, settings.num_clips, settings.seconds, "array_record")
  runs = {  # name: (dataset of batches, batches per timed pass)
    "pipeline": (pipeline.train_dataset(builder, batch_size=batch, seed=_SEED, **view), steps),
    "limit": (limit_dataset(settings, builder, steps * batch), steps),
    "full_decode": (full_decode_dataset(settings, builder), settings.full_decode_steps),
    # Where the rest goes: reading, parsing and sampling alone, nothing decoded.
    "read_and_sample": (pipeline.train_views(builder, seed=_SEED, **view).batch(batch).prefetch(2), steps),
    # One process, one thread, no TensorFlow: what each Grain or DataLoader worker does.
    "tf_free": (tf_free_batches(settings, array_record), steps),
  }
  passes = {name: [] for name in runs}
  for round_ in range(settings.rounds):
    for name, (dataset, steps) in runs.items():
      passes[name] += measure(settings, dataset, steps)
      logging.info("Round %d, %s: (clips/s, CPU ms/clip) %s", round_, name, passes[name][-settings.passes :])
  rate = {name: statistics.median(r for r, _ in p) for name, p in passes.items()}
  cpu_ms = {name: round(statistics.median(c for _, c in p), 1) for name, p in passes.items()}
  print(
    json.dumps(
      {
        "clips_per_s": round(rate["pipeline"], 2),
        "limit_clips_per_s": round(rate["limit"], 2),
        "ratio_to_limit": round(rate["pipeline"] / rate["limit"], 3),
        "full_decode_clips_per_s": round(rate["full_decode"], 2),
        "speedup_vs_full_decode": round(rate["pipeline"] / rate["full_decode"], 2),
        "read_and_sample_clips_per_s": round(rate["read_and_sample"], 2),
        "cpu_ms_per_clip": cpu_ms,
        "cpu_ratio_to_limit": round(cpu_ms["limit"] / cpu_ms["pipeline"], 3),
        # Per core: clips per CPU second of the reader without TensorFlow against the tf.data pipeline's.
        "tf_free_clips_per_cpu_s": round(1000 / cpu_ms["tf_free"], 2),
        "tf_free_per_core_ratio_to_pipeline": round(cpu_ms["pipeline"] / cpu_ms["tf_free"], 3),
        **view,
        "batch_size": batch,
        "source_frames_per_clip": int(round(settings.seconds * 25)),
        "passes": settings.passes * settings.rounds,
        "tf_cpu_allocator_use_bfc": os.environ.get(_BFC),
        "cores": len(os.sched_getaffinity(0)),
      }
    )
  )


if __name__ == "__main__":
  command.run(main, __name__)
