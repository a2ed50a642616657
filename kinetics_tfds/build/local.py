"""The one-machine build: a worker pool builds and writes each clip's record, then the split's shards.

TFDS would encode and write every example in the build process; here the workers write the records and the
shards (shards.py), so one machine is not bound by that one process. Formats other than TFRecord go through
TFDS's writer (ArrayRecord uncompressed, `ExampleWriter`), from the records the workers wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import itertools
import os
import shutil

from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import writer as writer_lib

from kinetics_tfds import annotations
from kinetics_tfds import storage
from kinetics_tfds import video
from kinetics_tfds.build import examples
from kinetics_tfds.build import parallel
from kinetics_tfds.build import shards
from kinetics_tfds.build import skipped as skipped_lib


@dataclasses.dataclass(frozen=True)
class Split:
  """A split's clips to build over the worker pool: what the builder's `_generate_examples` gives outside Beam."""

  name: str
  tasks: list[examples.Task]


def records_dir(data_dir: str, split: str) -> str:
  """Where workers put a split's records until they become shards: beside them, as TFDS spills its shuffle buffer,
  or in local scratch when the dataset folder is a URL."""
  if storage.is_url(data_dir):
    return os.path.join(storage.scratch_dir(), f"kinetics_tfds_records_{os.path.basename(data_dir)}_{split}")
  return os.path.join(data_dir, f".records-{split}")


def _records(split: Split, folder: str, num_workers: int, skipped: list[annotations.Rejected]) -> Iterator:
  """(key, record size) in task order; the workers write the records into `folder`, skips go to `skipped`."""
  os.makedirs(folder, exist_ok=True)
  results = parallel.bounded_map(
    examples.RecordWriter(folder), split.tasks, num_workers, on_crash=_crashed, worker_setup=video.use_one_thread
  )
  for result in parallel.logged_progress(results, len(split.tasks), split.name):
    if result.record_size is None:
      skipped.append(annotations.Rejected(result.split, result.key, result.reason))
    else:
      yield result.key, result.record_size


def _crashed(task: examples.Task) -> examples.Result:
  return examples.Result(task.clip.split, task.clip.key, reason="decoder crashed")


def write_split(
  split: Split,
  data_dir: str,
  info: tfds.core.DatasetInfo,
  template,
  download_config: tfds.download.DownloadConfig,
  num_workers: int,
  skipped: list[annotations.Rejected],
) -> tfds.core.SplitInfo | None:
  """Builds a split's clips and writes its shards into `data_dir` (the build's folder), named by `template` (the
  split's `ShardedFileTemplate`), as TFDS's writer would; None when no clip could be built."""
  folder = records_dir(data_dir, split.name)
  records = _records(split, folder, num_workers, skipped)
  if download_config.max_examples_per_split is not None:
    records = itertools.islice(records, download_config.max_examples_per_split)
  written = list(records)
  if not written:  # Every clip was skipped (and is in skipped_clips.csv); TFDS cannot shard no examples.
    logging.warning(
      "%s: none of its clips could be built (see %s); the split is left out.", split.name, skipped_lib.FILE
    )
    shutil.rmtree(folder)
    return None
  if info.file_format == tfds.core.FileFormat.TFRECORD:
    planned = shards.plan(split.name, written, folder, template, download_config.get_shard_config())
    logging.info("%s: writing %d shards.", split.name, len(planned))
    shard_lengths = []
    for shard, length in zip(planned, parallel.bounded_map(shards.assemble, planned, num_workers)):
      shards.remove_records(shard)
      shard_lengths.append(length)
  else:  # Other formats through TFDS's writer, in this process.
    shard_lengths = _write_with_tfds(info, split.name, written, folder, template, download_config)
  shutil.rmtree(folder)
  num_bytes = sum(size for _, size in written)
  return tfds.core.SplitInfo(
    name=split.name, shard_lengths=shard_lengths, num_bytes=num_bytes, filename_template=template
  )


def _write_with_tfds(info, split: str, written, folder: str, template, download_config) -> list[int]:
  writer = writer_lib.Writer(
    serializer=Serialized(info.features.get_serialized_info()),
    filename_template=template,
    hash_salt=split,
    disable_shuffling=info.disable_shuffling,
    shard_config=download_config.get_shard_config(),
    example_writer=ExampleWriter(file_format=info.file_format),
    ignore_duplicates=download_config.ignore_duplicates,
  )
  for key, _ in written:
    writer.write(key, shards.read_record(os.path.join(folder, key)))
  return writer.finalize()[0]


class ExampleWriter(writer_lib.ExampleWriter):
  """TFDS's (its documented hook for a builder's own writer), but ArrayRecord files are not compressed: JPEG frames
  do not compress (zstd saved 1.6% of the input benchmark's build), and undoing it cost a reader 23 ms of CPU per
  7 MB clip where reading took 4.5 (loaders, benchmarks/input_pipeline.py)."""

  def write(self, path, examples):
    if self.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      return super().write(path, examples)
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

    writer = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1,uncompressed")
    for _, serialized in examples:
      writer.write(serialized)
    writer.close()
    return None


class Serialized(example_serializer.Serializer):
  """The records come serialised from the workers: nothing is left to do."""

  def serialize_example(self, example: bytes) -> bytes:
    return example
