"""One video file -> frames resampled by timestamp, resized, JPEG-encoded, with OpenCV.

Streaming: a frame is resized and encoded as soon as it is known to be the nearest source frame
of an output time, so memory holds one decoded frame, whatever the clip's length. Imports only
OpenCV and NumPy, so build workers start fast and hold no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os

import cv2
import numpy as np

# Below this share of the frames its container declares, a file is truncated or corrupt.
_MIN_DECODED_SHARE = 0.8


def use_one_thread() -> None:
  """Makes this process one core's worth of OpenCV: a build's pool workers each run it (parallel.bounded_map's
  worker_setup). OpenCV decodes with about one FFmpeg thread per core and resizes in parallel: in N workers on
  N cores that is N-fold oversubscription, which costs CPU time (measured: ~10-20% per clip)."""
  os.environ["OPENCV_FFMPEG_THREADS"] = "1"  # Read by every VideoCapture open.
  cv2.setNumThreads(1)


class VideoError(Exception):
  """A file that cannot give a clip; the message is the reason reported for skipping it."""


@dataclasses.dataclass(frozen=True)
class Frames:
  """JPEG-encoded frames of one clip and what the source was."""

  jpegs: list[bytes]
  height: int
  width: int
  source_fps: float


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
  """(height, width) with the short side scaled to `short_side`, aspect kept."""
  if not short_side or min(height, width) == short_side:
    return height, width
  scale = short_side / min(height, width)
  return max(1, round(height * scale)), max(1, round(width * scale))


def _open(path: str) -> cv2.VideoCapture:
  if not os.path.exists(path):
    raise VideoError("missing file")
  if os.path.getsize(path) == 0:
    raise VideoError("zero-byte file")
  # FFmpeg's messages (`[h264 @ 0x55…] Invalid NAL unit size`) name no file, and a clip that does not decode whole is
  # skipped with its reason in skipped_clips.csv: quiet, unless set otherwise. Read when OpenCV first uses FFmpeg.
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  if not capture.isOpened():
    raise VideoError("unreadable: not a video, or its index (moov atom) is missing")
  return capture


def _timestamps(capture: cv2.VideoCapture, source_fps: float):
  """Yields (seconds since the first frame, frame) with times forced to increase.

  Containers report bogus times (AVI's last frame at 0, out-of-order MOV timestamps); a time that
  does not increase is replaced by the previous one plus one source frame period.
  """
  period = 1.0 / source_fps
  first = None
  previous = -math.inf
  while True:
    ok, frame = capture.read()
    if not ok:
      return
    position = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    if first is None:
      first = position
    t = position - first
    if not t > previous:
      t = previous + period if previous > -math.inf else 0.0
    previous = t
    yield t, frame


def decode(
  path: str,
  *,
  fps: float | None,
  short_side: int | None,
  jpeg_quality: int,
  segment: tuple[float, float] | None = None,
  max_seconds: float = math.inf,
) -> Frames:
  """Decodes `path` into JPEG frames at `fps` (None: every source frame), short side `short_side`.

  Output frame k shows the source frame whose timestamp is nearest k / fps. With `segment`
  (start, end) in seconds, only that part of a full-length video is kept. At most `max_seconds`
  of video are decoded, so a file whose timestamps jump (or that is longer than its name says)
  cannot become an unbounded clip. Rotation metadata is applied by OpenCV. Raises VideoError for
  anything that cannot give a clip.
  """
  capture = _open(path)
  try:
    source_fps = capture.get(cv2.CAP_PROP_FPS)
    if not 1 <= source_fps < 1000:  # What containers with jumping timestamps declare is no frame rate.
      source_fps = 30.0
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    start, end = segment if segment else (0.0, math.inf)
    end = min(end, start + max_seconds)
    cut_short = False  # Stopped at `end` before the file's last frame.
    out_fps = fps or source_fps
    jpegs: list[bytes] = []
    size = None
    encoded = None  # JPEG of `held`, encoded once however often it repeats.
    held = None  # (time relative to start, frame): the latest source frame not yet passed.
    decoded = 0
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]

    def emit_until(boundary: float) -> None:
      nonlocal encoded, size
      while held is not None and len(jpegs) < boundary * out_fps - 1e-6:
        if encoded is None:
          frame = held[1]
          if size is None:
            size = output_size(frame.shape[0], frame.shape[1], short_side)
          if frame.shape[:2] != size:
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
          ok, buffer = cv2.imencode(".jpg", frame, params)
          if not ok:
            raise VideoError("JPEG encoding failed")
          encoded = buffer.tobytes()
        jpegs.append(encoded)

    for t, frame in _timestamps(capture, source_fps):
      decoded += 1
      if t < start - 0.5 / source_fps:
        continue
      t -= start
      if t >= end - start:
        cut_short = True
        break
      if held is not None:
        # Output times before the midpoint are nearer the held frame than this one.
        emit_until((held[0] + t) / 2)
      held, encoded = (t, frame), None
    if held is None:
      raise VideoError("no frames decoded" if not segment else "segment outside the video")
    if not segment and not cut_short and declared > 0 and decoded < _MIN_DECODED_SHARE * declared:
      raise VideoError(f"truncated or corrupt: decoded {decoded} of {declared} frames")
    duration = min(held[0] + 1.0 / source_fps, end - start)
    emit_until(duration)
    return Frames(jpegs, size[0], size[1], float(source_fps))
  finally:
    capture.release()


def decode_frames(jpegs: list[bytes]) -> np.ndarray:
  """RGB uint8 frames (T, H, W, 3) from JPEG bytes; for tests and tools, not the input pipeline."""
  frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
  return np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])
