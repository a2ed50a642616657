"""A split's TFRecord shards, written by the worker processes: the one-machine path's writer.

TFDS writes every example through one process (its shuffler, then the shard files), which on a
big machine caps a build at what that process can copy: ~12 ms of CPU per 7 MB clip for the file
writes alone, ~9 ms more to receive it from a worker (measured on the 2-core build machine). Here
each worker writes its clip's record to a file of its own, TFRecord-framed (length and CRC32C
computed there), and the process that runs the build keeps only (key, size). At the end it orders
the keys as TFDS does (by the key's salted MD5, `hashing.Hasher(split)`), cuts the order into
shards where TFDS would (`ShardConfig.get_number_shards` and `get_shard_boundaries`, from the
count and total size) and the workers concatenate the files into the shards. The result is what
TFDS's own writer makes of the same examples: same order, same shard files, same `SplitInfo`.

These are TFDS internals (hashing, shard_utils, naming), hence the tested tensorflow-datasets range
pinned in requirements.txt.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import google_crc32c
from tensorflow_datasets.core import hashing
from tensorflow_datasets.core.utils import shard_utils

from kinetics_tfds import frame_index
from kinetics_tfds import storage

_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> bytes:
  """TFRecord's checksum: CRC32C, rotated right by 15 bits, plus a constant (tensorflow/core/lib/hash/crc32c.h)."""
  crc = google_crc32c.value(data)
  return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def write_record(path: str, record: bytes) -> None:
  """Writes one TFRecord-framed record: length, its CRC, the data, its CRC."""
  length = struct.pack("<Q", len(record))
  with open(path, "wb") as f:
    f.writelines([length, _masked_crc(length), record, _masked_crc(record)])


def read_record(path: str) -> bytes:
  """The record in a file from write_record, checked against its CRC."""
  with open(path, "rb") as f:
    framed = f.read()
  (length,) = struct.unpack("<Q", framed[:8])
  record = framed[12 : 12 + length]
  if framed[12 + length :] != _masked_crc(record):
    raise ValueError(f"{path}: record damaged (CRC mismatch); rerun the build")
  return record


@dataclasses.dataclass(frozen=True)
class Shard:
  """One shard file to make from record files, in order."""

  path: str
  records: list[str]


def plan(split: str, written: list[tuple[str, int]], records_dir: str, template, shard_config) -> list[Shard]:
  """The shards TFDS's writer would make of the (key, record size) pairs, as lists of record files.

  `template` is the split's `ShardedFileTemplate`, `shard_config` the download config's.
  """
  hasher = hashing.Hasher(salt=split)
  keys = sorted((key for key, _ in written), key=hasher.hash_key)
  total_size = sum(size for _, size in written)
  num_shards = shard_config.get_number_shards(total_size, len(keys))
  boundaries = [0] + list(shard_utils.get_shard_boundaries(len(keys), num_shards))
  return [
    Shard(
      os.fspath(template.sharded_filepath(shard_index=i, num_shards=num_shards)),
      [os.path.join(records_dir, key) for key in keys[start:end]],
    )
    for i, (start, end) in enumerate(zip(boundaries, boundaries[1:]))
  ]


def assemble(shard: Shard, index: bool = True) -> int:
  """Concatenates a shard's record files into it and, with `index`, writes its frame index (`frame_index`: the
  records must then be Kinetics examples); returns its length.

  The records are left in place: a worker that dies midway is rerun (parallel.bounded_map) and needs them all.
  The build deletes them with `remove_records` once the shard is written.
  """
  writer = frame_index.Writer()
  offset = 0
  with storage.open_for_writing(shard.path) as out:
    for path in shard.records:
      with open(path, "rb") as f:
        framed = f.read()
      out.write(framed)
      if index:
        (length,) = struct.unpack("<Q", framed[:8])
        writer.add(memoryview(framed)[12 : 12 + length], offset + 12)
      offset += len(framed)
  if index:
    writer.write(shard.path, offset)
  return len(shard.records)


def remove_records(shard: Shard) -> None:
  """Deletes a written shard's record files, so a split's records and shards are on disk together only for
  the shards in flight."""
  for path in shard.records:
    os.remove(path)
