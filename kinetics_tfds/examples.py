"""The per-clip work of a build: one annotated clip and its file -> a TFDS example, or a skip.

The same function runs in the serial path, in the worker pool and in Beam, so the three give the
same examples byte for byte. It imports no TensorFlow: workers start fast and stay small.
"""

from __future__ import annotations

import dataclasses

from absl import logging

from kinetics_tfds import annotations
from kinetics_tfds import clips
from kinetics_tfds import video


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


@dataclasses.dataclass(frozen=True)
class Result:
  """A built example, or the reason the clip is not in the output."""

  split: str
  key: str
  example: dict | None = None
  reason: str | None = None


def build(task: Task) -> Result:
  """Decodes and encodes one clip; never raises for a bad file."""
  clip = task.clip
  if task.located is None:
    return Result(clip.split, clip.key, reason="missing file")
  try:
    frames = video.decode(
        task.located.path,
        fps=task.fps,
        short_side=task.short_side,
        jpeg_quality=task.jpeg_quality,
        segment=task.located.segment,
        max_seconds=clip.time_end - clip.time_start + SLACK_S,
    )
  except video.VideoError as e:
    return Result(clip.split, clip.key, reason=str(e))
  except Exception as e:  # pylint: disable=broad-except  # OpenCV raises cv2.error on odd files.
    return Result(clip.split, clip.key, reason=f"decoder error: {type(e).__name__}: {e}")
  seconds = len(frames.jpegs) / (task.fps or frames.source_fps)
  if seconds < clip.time_end - clip.time_start - SLACK_S:
    logging.warning("%s: %.1f s of video for its %d s segment (the file is short); built as it is.",
                    clip.key, seconds, clip.time_end - clip.time_start)
  example = {
      "video": frames.jpegs,
      "label": clip.label if clip.label is not None else -1,
      "key": clip.key,
      "youtube_id": clip.youtube_id,
      "time_start": clip.time_start,
      "time_end": clip.time_end,
      "source_fps": frames.source_fps,
      "is_cc": clip.is_cc,
  }
  return Result(clip.split, clip.key, example=example)
