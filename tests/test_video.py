"""The OpenCV decoder on the real clips in ../shared, on a clip whose timestamps jump, and on every kind of bad
file."""

import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import SMALL_CLIP
from conftest import write_jumping_clip
from kinetics_tfds import motion_clips
from kinetics_tfds import video


def _decode(path, **kwargs):
  return video.decode(str(path), **{"fps": 25.0, "short_side": 256, "jpeg_quality": 90, **kwargs})


def _duration(path):
  """Last frame time plus one frame period: what the clip lasts, read independently of the decoder."""
  capture = cv2.VideoCapture(str(path))
  fps = capture.get(cv2.CAP_PROP_FPS)
  times = []
  while capture.read()[0]:
    times.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
  increasing = all(b > a for a, b in zip(times, times[1:]))
  return (times[-1] - times[0] if increasing else (len(times) - 1) / fps) + 1 / fps


@pytest.mark.parametrize(
  "name, shape",
  [
    ("mmaction2_tests_test.mp4", (256, 340)),
    ("mmaction2_tests_test.avi", (256, 341)),
    ("mmaction2_tests_rawvideo_part_0.mp4", (256, 340)),
    ("mmaction2_demo.mp4", (256, 340)),
    ("mmaction2_demo_v0_d93c16a.mp4", (256, 340)),
    ("decord_flipping_a_pancake.mkv", (256, 454)),
    ("decord_unordered.mov", (256, 256)),
    ("decord_video_90.mov", (454, 256)),  # Coded 568x320, shown rotated: portrait.
  ],
)
def test_real_clips_build_at_25fps_short_side_256(shared_data, name, shape):
  path = shared_data / "kinetics" / "videos" / name
  frames = _decode(path)
  assert len(frames.jpegs) == math.ceil(_duration(path) * 25 - 1e-6)
  decoded = video.decode_frames(frames.jpegs[:2])
  assert decoded.shape[1:3] == shape == (frames.height, frames.width)
  assert min(shape) == 256


def test_real_corrupt_clip_is_refused(shared_data):
  with pytest.raises(video.VideoError, match="truncated or corrupt: decoded 28 of 50"):
    _decode(shared_data / "kinetics" / "videos" / "decord_corrupted.mp4")


def test_odd_fps_resamples_by_nearest_timestamp(tmp_path):
  # 7 fps: each source frame has a distinct brightness; output k must show round(k * 7 / 25).
  path = tmp_path / "odd.avi"
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 7, (64, 48))
  for i in range(14):
    writer.write(np.full((48, 64, 3), 10 + 15 * i, np.uint8))
  writer.release()
  frames = _decode(path, short_side=None)
  assert len(frames.jpegs) == 50  # 2 s at 25 fps.
  shown = [round((int(f.mean()) - 10) / 15) for f in video.decode_frames(frames.jpegs)]
  assert shown == [min(13, math.floor(k * 7 / 25 + 0.5)) for k in range(50)]


def test_segment_of_a_full_length_video(tmp_path):
  path = motion_clips.write_clip(str(tmp_path / "long.mp4"), seconds=4.0, fps=10.0, width=64, height=48)
  frames = _decode(path, segment=(1, 3), short_side=None)
  assert len(frames.jpegs) == 50
  first = video.decode_frames(frames.jpegs[:1])[0].astype(int)
  capture = cv2.VideoCapture(path)
  source = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(12)]
  errors = [np.abs(first - s).mean() for s in source]
  assert int(np.argmin(errors)) == 10  # The frame at 1.0 s opens the segment.


def test_segment_past_the_end_is_refused(tmp_path):
  path = motion_clips.write_clip(str(tmp_path / "short.mp4"), **SMALL_CLIP)
  with pytest.raises(video.VideoError, match="segment outside the video"):
    _decode(path, segment=(5, 15))


def test_decoding_stops_at_the_segment_whatever_the_timestamps_say(tmp_path):
  path = tmp_path / "jump.mp4"
  write_jumping_clip(path)
  unbounded = video.decode(str(path), fps=25.0, short_side=32, jpeg_quality=90)
  assert len(unbounded.jpegs) > 90_000  # What the builder made of it before the bound.
  for fps, limit in ((25.0, 11.0), (10.0, 11.0), (25.0, 0.2)):
    frames = video.decode(str(path), fps=fps, short_side=32, jpeg_quality=90, max_seconds=limit)
    assert len(frames.jpegs) == round(min(limit, 0.4) * fps)  # The 10 frames before the jump, resampled.


def test_odd_size_keeps_aspect(tmp_path):
  path = motion_clips.write_clip(str(tmp_path / "odd.mp4"), seconds=0.4, fps=10.0, width=97, height=61)
  frames = _decode(path, short_side=32)
  assert (frames.height, frames.width) == (32, round(97 * 32 / 61))


@pytest.mark.parametrize(
  "make, reason",
  [
    (lambda p: None, "missing file"),
    (lambda p: open(p, "wb").close(), "zero-byte file"),
    (lambda p: open(p, "w").write("not a video, just text\n" * 50), "unreadable"),
    (lambda p: _truncate(p), "unreadable"),
  ],
  ids=["missing", "zero-byte", "text", "truncated"],
)
def test_bad_files_raise_video_error(tmp_path, make, reason):
  path = str(tmp_path / "bad.mp4")
  make(path)
  with pytest.raises(video.VideoError, match=reason):
    _decode(path)


def _truncate(path):
  motion_clips.write_clip(path, **SMALL_CLIP)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def test_ffmpeg_says_nothing_of_a_corrupt_file(shared_data):
  """FFmpeg's messages name no file; the clip's reason (here in the VideoError) does. In a fresh process: FFmpeg reads
  its log level once."""
  code = (
    "from kinetics_tfds import video\n"
    "try:\n"
    f"  video.decode({str(shared_data / 'kinetics' / 'videos' / 'decord_corrupted.mp4')!r}, fps=10, short_side=64,"
    " jpeg_quality=80)\n"
    "except video.VideoError as e:\n"
    "  print(e)\n"
  )
  env = {name: value for name, value in os.environ.items() if name != "OPENCV_FFMPEG_LOGLEVEL"}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("truncated or corrupt") and result.stderr == "", result.stdout + result.stderr
