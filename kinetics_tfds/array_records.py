"""A prepared ArrayRecord build (`tfds build ... --file_format=array_record`), read without TensorFlow.

TFDS's own random access (`tfds.data_source`) decodes every example through the dataset's features, and the
`Video` feature needs TensorFlow, and would decode every frame. Here the files TFDS wrote are read with
array_record, and the `tf.train.Example` wire format is parsed directly: each frame stays a view into its record,
so nothing is copied or decoded until a reader decodes the frames it sampled.

A process that reads keeps the memory it frees (`_keep_freed_memory`): glibc hands each freed block over 128 KB
back to the kernel, which maps and zeroes it anew for the next, and every record (5-7 MB), decoded frame (260 KB)
and clip (10 MB) paid that: 56 ms of CPU per 64-frame clip against 29 with it (what TensorFlow's BFC allocator
does for tf.data).

Files open lazily, once per process: a source handed to DataLoader or Grain workers, forked or spawned, opens
its own readers there. Fork workers before this process reads from any ArrayRecord file (as kinetics-train does), or
start them with spawn: array_record's library keeps background threads, and a child forked while one holds a lock
hangs opening its reader (seen in about half of such forks here).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import itertools
import json
import os
import re

from kinetics_tfds import user_error


class DatasetError(user_error.UserError):
  """A dataset that is not prepared, not an ArrayRecord build, or has no such split."""


# What TFDS writes a config's examples under when a name has no config (the builder's DEFAULT_CONFIG_NAME).
DEFAULT_CONFIG = "i3d_25fps_256"


def version_dir(dataset: str, data_dir: str | None = None) -> str:
  """The folder of `dataset` ('kinetics400' or 'kinetics400/config', optionally ':1.0.0') in `data_dir` (default:
  $TFDS_DATA_DIR or ~/tensorflow_datasets): the given version, else the newest prepared one."""
  data_dir = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
  name, _, version = dataset.partition(":")
  if "/" not in name:
    name = f"{name}/{DEFAULT_CONFIG}"
  config_dir = os.path.join(data_dir, *name.split("/"))
  versions = [version] if version else os.listdir(config_dir) if os.path.isdir(config_dir) else []
  prepared = [v for v in versions if os.path.exists(os.path.join(config_dir, v, "dataset_info.json"))]
  if not prepared:
    raise DatasetError(
      f"dataset {dataset} is not prepared in {data_dir}: build it with "
      f"`tfds build --imports=kinetics_tfds {name} --file_format=array_record --data_dir={data_dir} "
      "--manual_dir=<clips>`, or pass the --data_dir it was built in"
    )
  newest = max(prepared, key=lambda v: tuple(int(p) for p in re.findall(r"\d+", v)))
  return os.path.join(config_dir, newest)


class Info:
  """What training needs to know of a prepared dataset: its class names and its splits' files and sizes."""

  def __init__(self, path: str):
    self.path = path
    with open(os.path.join(path, "dataset_info.json")) as f:
      info = json.load(f)
    self.name = info["name"]
    self.file_format = info.get("fileFormat", "tfrecord")
    self._splits = {s["name"]: s for s in info.get("splits", [])}
    with open(os.path.join(path, "label.labels.txt")) as f:
      self.class_names = [line.rstrip("\n") for line in f if line.strip()]

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self._splits)

  def num_examples(self, split: str) -> int:
    return sum(self.shard_lengths(split))

  def shard_lengths(self, split: str) -> list[int]:
    return [int(n) for n in self._split(split).get("shardLengths", [])]

  def files(self, split: str) -> list[str]:
    """The split's shard files, in shard order."""
    if self.file_format != "array_record":
      raise DatasetError(
        f"{self.path} holds {self.file_format} files: readers without TensorFlow read ArrayRecord builds "
        "(`tfds build ... --file_format=array_record`); read this one with kinetics_tfds.pipeline (tf.data)"
      )
    lengths = self.shard_lengths(split)
    return [
      os.path.join(self.path, f"{self.name}-{split}.array_record-{i:05d}-of-{len(lengths):05d}")
      for i in range(len(lengths))
    ]

  def _split(self, split: str) -> dict:
    if split not in self._splits:
      raise DatasetError(f"{self.path} has no split {split!r}; it has {sorted(self._splits)}")
    return self._splits[split]


class Source:
  """Random access to a split's examples: `source[i]` is `parse_example` of its record ('video': the frames' JPEG
  bytes, 'label', 'key': [its UTF-8 bytes], ...).

  Indices run over the split's shards in order. Picklable: what a worker receives is the paths, not open files.
  """

  def __init__(self, info: Info, split: str):
    self.info, self.split = info, split
    self.files = info.files(split)
    self._ends = list(itertools.accumulate(info.shard_lengths(split)))
    self._readers = {}  # pid -> one reader per file.

  def __len__(self) -> int:
    return self._ends[-1] if self._ends else 0

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} of a split of {len(self)}")
    shard = bisect.bisect_right(self._ends, index)
    return parse_example(self._reader(shard).read([index - (self._ends[shard - 1] if shard else 0)])[0])

  def __getstate__(self):
    return {**self.__dict__, "_readers": {}}

  def _reader(self, shard: int):
    """This process's reader of a file: without threads (array_record's shared pool would be a parent's,
    unusable in a forked child); a child leaves its parent's readers alone."""
    if os.getpid() not in self._readers:
      _keep_freed_memory()
    readers = self._readers.setdefault(os.getpid(), {})
    if shard not in readers:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

      readers[shard] = array_record_module.ArrayRecordReader(
        self.files[shard], "readahead_buffer_size:0,max_parallelism:0"
      )
    return readers[shard]


def _keep_freed_memory() -> None:
  """Raises glibc's mmap and trim thresholds, so large freed blocks are reused, not unmapped (see above)."""
  libc = ctypes.util.find_library("c")
  mallopt = getattr(ctypes.CDLL(libc), "mallopt", None) if libc else None
  if mallopt is not None:
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 512 << 20)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h.


def open_split(dataset: str, split: str, data_dir: str | None = None) -> Source:
  """A split of a prepared ArrayRecord build, by name as `tfds.load` takes it."""
  return Source(Info(version_dir(dataset, data_dir)), split)


# tf.train.Example, as protobuf writes it: Example{1: Features{1: map entry{1: key, 2: Feature}}}, Feature{1:
# BytesList{1: repeated bytes}, 2: FloatList{1: packed float}, 3: Int64List{1: packed varint}}.


def parse_example(record: bytes) -> dict:
  """The features of a serialized `tf.train.Example` by name: a bytes list as a list of memoryviews into `record`,
  an int64 or float list as its one value, or a list of them."""
  data = memoryview(record)
  features = {}
  for _, start, end in _fields(data, 0, len(data)):  # Example.features
    for _, entry_start, entry_end in _fields(data, start, end):  # Features.feature map entries
      name, value = None, None
      for number, value_start, value_end in _fields(data, entry_start, entry_end):
        if number == 1:
          name = bytes(data[value_start:value_end]).decode()
        else:
          value = _feature(data, value_start, value_end)
      features[name] = value
  return features


def bytes_spans(record: bytes, name: str) -> list[tuple[int, int]]:
  """(start, end) in `record` of each value of its bytes-list feature `name`: where a frame lies, for an index."""
  data = memoryview(record)
  for _, start, end in _fields(data, 0, len(data)):
    for _, entry_start, entry_end in _fields(data, start, end):
      fields = {number: (s, e) for number, s, e in _fields(data, entry_start, entry_end)}
      if bytes(data[slice(*fields[1])]) == name.encode():
        for kind, list_start, list_end in _fields(data, *fields[2]):
          if kind == 1:
            return [(s, e) for _, s, e in _fields(data, list_start, list_end)]
  raise ValueError(f"no bytes feature {name!r} in the record")


def _feature(data: memoryview, start: int, end: int):
  for kind, list_start, list_end in _fields(data, start, end):
    if kind == 1:
      return [data[s:e] for _, s, e in _fields(data, list_start, list_end)]
    values = []
    for _, s, e in _fields(data, list_start, list_end):
      if kind == 2:
        values.extend(memoryview(bytes(data[s:e])).cast("f").tolist())
      else:
        while s < e:
          value, s = _varint(data, s)
          values.append(value - (1 << 64) if value >= 1 << 63 else value)
    return values[0] if len(values) == 1 else values
  return []


def _fields(data: memoryview, start: int, end: int):
  """(field number, start, end) of each length-delimited field between start and end; other wire types skipped,
  except packed scalars written unpacked, which are given as their own span."""
  i = start
  while i < end:
    tag, i = _varint(data, i)
    wire = tag & 7
    if wire == 2:
      length, i = _varint(data, i)
      yield tag >> 3, i, i + length
      i += length
    elif wire == 0:
      _, j = _varint(data, i)
      yield tag >> 3, i, j
      i = j
    elif wire == 5:
      yield tag >> 3, i, i + 4
      i += 4
    elif wire == 1:
      i += 8
    else:
      raise ValueError(f"not a tf.train.Example: wire type {wire} at byte {i}")


def _varint(data: memoryview, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[i]
    i += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, i
    shift += 7
