"""Cutting a full-length download to its annotated segment, and checking a finished clip.

OpenCV alone must do (ffmpeg may be absent): it reads any container its bundled FFmpeg
decodes and writes MPEG-4 Part 2 (`mp4v`) video without audio. With an ffmpeg binary the cut
keeps the audio and uses ffmpeg's default MP4 encoders.
"""

import pathlib
import subprocess

import cv2

TOLERANCE_S = 1.0


class BadClip(ValueError):
  """A download that cannot be decoded or does not cover its segment."""


def cut(source: pathlib.Path, dest: pathlib.Path, start: int, end: int, ffmpeg: str | None) -> None:
  """Writes [start, end) seconds of source to dest (an .mp4)."""
  if ffmpeg:
    done = subprocess.run(
      [
        ffmpeg,
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-ss",
        str(start),
        "-i",
        str(source),
        "-t",
        str(end - start),
        str(dest),
      ],
      capture_output=True,
      text=True,
      check=False,
    )
    if done.returncode:
      raise BadClip(f"ffmpeg could not cut {source.name}: {done.stderr.strip()[-300:]}")
    return
  capture = cv2.VideoCapture(str(source))
  fps = capture.get(cv2.CAP_PROP_FPS)
  if not capture.isOpened() or fps <= 0:
    raise BadClip(f"corrupt: OpenCV cannot decode {source.name}")
  first, last = round(start * fps), round(end * fps)
  capture.set(cv2.CAP_PROP_POS_FRAMES, first)
  writer = None
  try:
    for _ in range(last - first):
      ok, frame = capture.read()
      if not ok:
        break
      if writer is None:
        height, width = frame.shape[:2]
        writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
      writer.write(frame)
  finally:
    capture.release()
    if writer is not None:
      writer.release()
  if writer is None:
    raise BadClip(f"{source.name} ends before the segment starts at {start} s")


def duration_s(path: pathlib.Path) -> float:
  """Frames over frame rate, after checking that the first frame decodes."""
  capture = cv2.VideoCapture(str(path))
  try:
    frames, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    if not capture.isOpened() or frames <= 0 or fps <= 0 or not capture.read()[0]:
      raise BadClip(f"corrupt: OpenCV cannot decode {path.name}")
    return frames / fps
  finally:
    capture.release()


def check(path: pathlib.Path, start: int, end: int, source_duration_s: float | None) -> None:
  """Raises BadClip unless path decodes and lasts the segment, or what the source has of it.

  With the source's duration unknown (a site that does not say), a shorter clip may be a video
  that ends early, so only a longer one is refused.
  """
  actual = duration_s(path)
  if source_duration_s is None:
    too_far = actual - (end - start) > TOLERANCE_S
  else:
    too_far = abs(actual - (min(end, source_duration_s) - start)) > TOLERANCE_S
  if too_far:
    raise BadClip(f"corrupt: {path.name} lasts {actual:.2f} s for the segment [{start}, {end}] s")
