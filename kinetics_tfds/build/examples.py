"""The per-clip work of a build: one annotated clip and its file -> a TFDS example, or a skip.

The same function runs in the serial path, in the worker pool and in Beam, so the three give the
same examples. It imports no TensorFlow: workers start fast and stay small. Pool workers also
serialise their example and write it to a file (`RecordWriter`), so the process that runs the
build neither encodes nor copies it (see shards.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct

from absl import logging

from kinetics_tfds import annotations
from kinetics_tfds import clips
from kinetics_tfds import storage
from kinetics_tfds import video
from kinetics_tfds.build import shards

# Field numbers of tf.train.Feature's oneof (tensorflow/core/example/feature.proto).
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3
# How each feature of the builder's FeaturesDict is stored in a tf.train.Example (its
# get_serialized_info(): strings as bytes, int32/int64 as int64, float32 as float).
FIELDS = {
  "video": _BYTES_LIST,
  "label": _INT64_LIST,
  "key": _BYTES_LIST,
  "youtube_id": _BYTES_LIST,
  "time_start": _INT64_LIST,
  "time_end": _INT64_LIST,
  "source_fps": _FLOAT_LIST,
  "is_cc": _INT64_LIST,
}


# A file may run this much past (or fall short of) its annotated segment: clips are cut at key
# frames. Decoding stops there, so a file whose timestamps jump cannot become an unbounded clip.
SLACK_S = 1.0


@dataclasses.dataclass(frozen=True)
class Task:
  """Everything a worker needs to build one clip: picklable, no builder state."""

  clip: annotations.Clip
  located: clips.Located | None
  fps: float | None
  short_side: int | None
  jpeg_quality: int
  label: int = -1  # Index of clip.label in the class list; -1 when unlabelled.

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, line: str) -> Task:
    fields = json.loads(line)
    located = fields["located"]
    if located is not None:
      segment = located["segment"]
      located = clips.Located(located["path"], tuple(segment) if segment else None)
    return cls(**{**fields, "clip": annotations.Clip(**fields["clip"]), "located": located})


@dataclasses.dataclass(frozen=True)
class Result:
  """A built example (or the size of its record file), or why the clip is not in the output."""

  split: str
  key: str
  example: dict | None = None
  reason: str | None = None
  record_size: int | None = None


def build(task: Task, scratch: str | None = None) -> Result:
  """Decodes and encodes one clip; never raises for a bad file, only for a failing store (storage.StoreError).
  A remote clip is copied to `scratch`
  (default: storage.scratch_dir()) for the decoder, and deleted after."""
  clip = task.clip
  if task.located is None:
    return Result(clip.split, clip.key, reason="missing file")
  segment_s = clip.time_end - clip.time_start
  try:
    with storage.local_copy(task.located.path, scratch) as path:
      frames = video.decode(
        path,
        fps=task.fps,
        short_side=task.short_side,
        jpeg_quality=task.jpeg_quality,
        segment=task.located.segment,
        max_seconds=segment_s + SLACK_S,
      )
  except video.VideoError as e:
    return Result(clip.split, clip.key, reason=str(e))
  except FileNotFoundError:  # Listed by the scan, gone from the bucket since.
    return Result(clip.split, clip.key, reason="missing file")
  except storage.StoreError:  # The store's or the scratch disk's fault, not the clip's: the build stops.
    raise
  except Exception as e:  # pylint: disable=broad-except  # OpenCV raises cv2.error on odd files.
    return Result(clip.split, clip.key, reason=f"decoder error: {type(e).__name__}: {e}")
  seconds = len(frames.jpegs) / (task.fps or frames.source_fps)
  if seconds < segment_s - SLACK_S:
    logging.warning(
      "%s: %.1f s of video for its %d s segment (the file is short); built as it is.", clip.key, seconds, segment_s
    )
  example = {
    "video": frames.jpegs,
    "label": task.label,
    "key": clip.key,
    "youtube_id": clip.youtube_id,
    "time_start": clip.time_start,
    "time_end": clip.time_end,
    "source_fps": frames.source_fps,
    "is_cc": clip.is_cc,
  }
  return Result(clip.split, clip.key, example=example)


@dataclasses.dataclass(frozen=True)
class RecordWriter:
  """A pool worker's per-clip function: build(), then the serialised example to `folder/<key>`.

  Only the size goes back to the build process: a clip's megabytes are never sent or copied there.
  Remote clips are copied to `folder` too, which the build removes, so a worker that crashes while
  decoding leaves no copy behind.
  """

  folder: str

  def __call__(self, task: Task) -> Result:
    result = build(task, scratch=self.folder)
    if result.example is None:
      return result
    record = serialize(result.example)
    shards.write_record(os.path.join(self.folder, result.key), record)
    return Result(result.split, result.key, record_size=len(record))


def serialize(example: dict) -> bytes:
  """The tf.train.Example TFDS's own serializer makes of `example`, written directly.

  TFDS's serializer goes through NumPy and nested protobuf messages and copies a clip's frames
  several times (measured: ~100 ms for 250 frames, more than decoding); this writes the protobuf
  wire format once, with the fields in FIELDS order.
  """
  entries = []
  for name, kind in FIELDS.items():
    value = example[name]
    values = value if isinstance(value, list) else [value]
    if kind == _BYTES_LIST:
      payload = [part for v in values for part in _field(1, [v.encode() if isinstance(v, str) else v])]
    elif kind == _INT64_LIST:
      payload = _field(1, [b"".join(_varint(int(v)) for v in values)])  # Packed.
    else:
      payload = _field(1, [struct.pack(f"<{len(values)}f", *values)])  # Packed.
    entries += _field(1, _field(1, [name.encode()]) + _field(2, _field(kind, payload)))  # A map entry.
  return b"".join(_field(1, entries))  # Example.features.


def _field(number: int, parts: list[bytes]) -> list[bytes]:
  """A length-delimited field holding `parts`, as parts, so big payloads are joined once."""
  return [_varint(number << 3 | 2) + _varint(sum(map(len, parts)))] + parts


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # Negative int64s as their two's complement, as protobuf does.
  out = bytearray()
  while n > 0x7F:
    out.append(n & 0x7F | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)
