"""Small synthetic Kinetics: clips whose class is the direction things move, in a real manual-folder layout.

The built-in default of the main job, the builders' dummy data, tests and benchmarks all use it:
nothing has to be downloaded, and a model can only tell the classes apart by motion (every class
shares the same textures, colours and shapes).
"""

from __future__ import annotations

import csv
import os

import cv2
import numpy as np

from kinetics_tfds import annotations

# Real-looking class names; each moves the scene in one direction (dx, dy), pixels per frame.
MOTIONS = {
  "swiping down": (0, 1),
  "swiping left": (-1, 0),
  "swiping right": (1, 0),
  "swiping up": (0, -1),
}

# OpenCV's pip wheels write MPEG-4 part 2 but not H.264.
CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".webm": "VP80", ".mov": "mp4v"}


def write_clip(
  path: str,
  *,
  motion: tuple[int, int] = (1, 0),
  seconds: float = 2.0,
  fps: float = 25.0,
  width: int = 160,
  height: int = 120,
  speed: float = 3.0,
  seed: int = 0,
) -> str:
  """Writes a clip of textured blobs all drifting along `motion`, `speed` pixels per frame."""
  rng = np.random.default_rng(seed)
  margin = int(speed * seconds * fps) + 8
  canvas_h, canvas_w = height + 2 * margin, width + 2 * margin
  # Smooth noise so motion is visible everywhere, plus a few bright blobs.
  noise = rng.integers(0, 256, (canvas_h // 8 + 1, canvas_w // 8 + 1, 3), dtype=np.uint8)
  canvas = cv2.resize(noise, (canvas_w, canvas_h), interpolation=cv2.INTER_CUBIC)
  for _ in range(6):
    center = (int(rng.integers(0, canvas_w)), int(rng.integers(0, canvas_h)))
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    cv2.circle(canvas, center, int(rng.integers(6, 16)), color, -1)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fourcc = cv2.VideoWriter_fourcc(*CODECS[os.path.splitext(path)[1].lower()])
  writer = cv2.VideoWriter(path, fourcc, fps, (width, height))
  if not writer.isOpened():
    raise OSError(f"OpenCV cannot write {path}")
  for i in range(int(round(seconds * fps))):
    # The camera window moves against the motion, so the content moves along it.
    x = int(round(margin - motion[0] * speed * i))
    y = int(round(margin - motion[1] * speed * i))
    writer.write(np.ascontiguousarray(canvas[y : y + height, x : x + width]))
  writer.release()
  return path


def make_manual_dir(
  manual_dir: str,
  *,
  archive_name: str = "kinetics400",
  clips_per_class: dict[str, int] | None = None,
  classes: dict[str, tuple[int, int]] | None = None,
  seed: int = 0,
  segment_s: int = 10,
  **clip_kwargs,
) -> dict[str, list[annotations.Clip]]:
  """A manual folder as DeepMind + CVDF users have it: `<archive_name>/{train,validate}.csv` and
  clips in `train/` and `val/`, each annotated with a segment of `segment_s` seconds (Kinetics' 10; a
  segment much longer than the clip is built with a warning). Returns the clips written, per split.
  """
  classes = classes or MOTIONS
  clips_per_class = clips_per_class or {"train": 8, "validation": 4}
  written: dict[str, list[annotations.Clip]] = {}
  counter = 0
  for split, count in clips_per_class.items():
    folder = annotations.CVDF_FOLDERS[split]
    rows = []
    for label, motion in sorted(classes.items()):
      for _ in range(count):
        counter += 1
        youtube_id = f"synth{counter:06d}"[:11]
        clip = annotations.Clip(youtube_id, counter, counter + segment_s, label, split)
        write_clip(
          os.path.join(manual_dir, folder, f"{clip.key}.mp4"),
          motion=motion,
          seed=seed * 100_003 + counter,
          **clip_kwargs,
        )
        rows.append(clip)
    written[split] = rows
    write_annotations(os.path.join(manual_dir, archive_name), split, rows)
  return written


def write_annotations(folder: str, split: str, rows: list[annotations.Clip]) -> str:
  """Writes `rows` in DeepMind's current dialect (`validate` for the validation split)."""
  name = annotations.DEEPMIND_FILE_STEMS[split]
  path = os.path.join(folder, f"{name}.csv")
  os.makedirs(folder, exist_ok=True)
  labeled = any(r.label is not None for r in rows)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow((["label"] if labeled else []) + ["youtube_id", "time_start", "time_end", "split"])
    for r in rows:
      writer.writerow(([r.label] if labeled else []) + [r.youtube_id, r.time_start, r.time_end, name])
  return path
