"""Where each frame's JPEG bytes lie in a TFRecord shard, so training reads only the frames it samples.

A 64-frame training window is a quarter of a 10 s clip, yet `TFRecordDataset` reads, checksums (CRC32C) and
copies the whole ~7 MB record, and parsing copies all 250 frame strings: ~5 ms of CPU per clip, a quarter of
what decoding the 64 frames costs (benchmarks/input_pipeline.py). The one-machine build (`build/shards.assemble`)
therefore writes, beside each shard, `frame_index/<shard>.npz`: each example's label, frame size and the
offset and length in the shard of each of its frames. `pipeline.train_views` then reads just the sampled
frames, by positional reads. The shards are unchanged, so `tfds.load` reads them as before; a build without
an index (Beam builds, builds from before it) is read whole, as before, or indexed in place by
`index_folder(builder.data_dir)`. The folder is not named like a shard, so tools that
glob a split's files (`<name>-<split>.*`) do not see it.

Frames read through the index skip the record's checksum: a damaged frame fails to decode instead.
"""

from __future__ import annotations

import functools
import io
import os
import struct

import numpy as np

from kinetics_tfds import array_records
from kinetics_tfds import sampling
from kinetics_tfds import storage

FOLDER = "frame_index"
_HEADER = 12  # TFRecord framing before a record: its length (8 bytes) and the length's CRC (4).
_FOOTER = 4  # The record's CRC.


def path_for(shard: str) -> str:
  """The index of the shard file at `shard`."""
  folder, name = os.path.split(shard)
  return os.path.join(folder, FOLDER, name + ".npz")


class Writer:
  """Collects a shard's index as its records are written, in order."""

  def __init__(self):
    self._starts, self._lengths, self._counts, self._labels, self._sizes = [], [], [], [], []

  def add(self, record, offset: int) -> None:
    """Indexes one serialized example whose first byte is at `offset` in the shard."""
    spans = array_records.bytes_spans(record, "video")
    self._starts += [offset + start for start, _ in spans]
    self._lengths += [end - start for start, end in spans]
    self._counts.append(len(spans))
    self._labels.append(array_records.parse_example(record)["label"])
    self._sizes.append(sampling.jpeg_size(memoryview(record)[slice(*spans[0])]))

  def write(self, shard: str, shard_size: int) -> None:
    """Writes the index of the shard file at `shard`, `shard_size` bytes long (to tell a stale index)."""
    path = path_for(shard)
    if not storage.is_url(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()  # Whole, then written: a file on an object store cannot seek, as zip writing may.
    np.savez(
      buffer,
      starts=np.asarray(self._starts, np.int64),
      lengths=np.asarray(self._lengths, np.int32),
      first=np.cumsum([0] + self._counts, dtype=np.int64),
      labels=np.asarray(self._labels, np.int32),
      sizes=np.asarray(self._sizes, np.int32).reshape(-1, 2),
      shard_size=np.int64(shard_size),
    )
    with storage.open_for_writing(path) as f:
      f.write(buffer.getvalue())


def index_shard(shard: str) -> None:
  """Indexes an existing local TFRecord shard (a Beam build's, or one from before indexes were written)."""
  writer = Writer()
  with open(shard, "rb") as f:
    offset = 0
    while header := f.read(_HEADER):
      (length,) = struct.unpack("<Q", header[:8])
      writer.add(f.read(length), offset + _HEADER)
      f.seek(_FOOTER, os.SEEK_CUR)
      offset += _HEADER + length + _FOOTER
  writer.write(shard, offset)


class Shard:
  """A shard's index, read back: what sampling needs of each example, and its frames' bytes on demand."""

  def __init__(self, shard: str):
    self.path = shard
    with np.load(path_for(shard)) as arrays:
      self.starts, self.lengths, self.first = arrays["starts"], arrays["lengths"], arrays["first"]
      self.labels, self.sizes = arrays["labels"], arrays["sizes"]
      if os.path.getsize(shard) != arrays["shard_size"]:
        raise ValueError(f"{path_for(shard)} does not match {shard} (rewritten since?): delete it or reindex")

  def num_frames(self, example: int) -> int:
    return int(self.first[example + 1] - self.first[example])

  def read(self, example: int, indices) -> np.ndarray:
    """[len(indices)] the JPEG bytes of those frames of `example`, as an object array.

    Near frames (a window's) come in one read, scattered ones (a wide stride) one by one.
    """
    starts = self.starts[self.first[example] + np.asarray(indices)]
    ends = starts + self.lengths[self.first[example] + np.asarray(indices)]
    low, high = int(starts.min()), int(ends.max())
    fd = os.open(self.path, os.O_RDONLY)
    try:
      if high - low <= 2 * int((ends - starts).sum()):
        span = _pread(fd, high - low, low)
        frames = [span[s - low : e - low] for s, e in zip(starts.tolist(), ends.tolist())]
      else:
        frames = [_pread(fd, e - s, s) for s, e in zip(starts.tolist(), ends.tolist())]
    finally:
      os.close(fd)
    result = np.empty(len(frames), object)
    result[:] = frames
    return result


def _pread(fd: int, length: int, offset: int) -> bytes:
  data = os.pread(fd, length, offset)
  if len(data) != length:
    raise ValueError(f"shard shorter than its frame index says (wanted {length} bytes at {offset})")
  return data


def load(shard: str) -> Shard:
  """The index of a shard, read once per process (again if the shard is rewritten)."""
  return _load(shard, os.stat(shard).st_mtime_ns)


@functools.lru_cache(maxsize=64)  # Reads interleave over 16 files at a time (TFDS's default).
def _load(shard: str, mtime_ns: int) -> Shard:
  del mtime_ns  # Part of the cache key only.
  return Shard(shard)


def index_folder(folder: str) -> list[str]:
  """Indexes the TFRecord shards without an index in a prepared dataset's folder (`builder.data_dir`): a Beam
  build's, or one from before indexes were written. Returns the shards indexed."""
  shards = [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if ".tfrecord-" in name]
  missing = [shard for shard in shards if not os.path.exists(path_for(shard))]
  for shard in missing:
    index_shard(shard)
  return missing
