"""Writes each builder's dummy_data/ (what DatasetBuilderTestCase builds from): `python scripts/make_dummy_data.py`.

Each version's folder uses another layout users have, so the builder tests cover them all:
kinetics400 DeepMind's extracted folder, kinetics600 DeepMind's archive, kinetics700 CVDF's
`annotations/` with per-label clip folders and an unlabeled test list, kinetics700_2020 the
archive folder plus its delta top-up and a full-length video cut to its segment. The class names
are invented (`dummy class 000`, ...): the official lists are not ours to copy. Rows of classes
without a clip are reported as missing by the build.
"""

import os
import shutil
import tarfile
import tempfile

from kinetics_tfds import annotations
from kinetics_tfds import motion_clips

_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kinetics_tfds")
_CLIP = dict(seconds=1.0, fps=10.0, width=64, height=48)
_MOTIONS = list(motion_clips.MOTIONS.values())


def _clip(i: int, label: str | None, split: str) -> annotations.Clip:
  return annotations.Clip(f"dummy{i:06d}", i, i + 10, label, split)


def _write_version(folder: str, num_classes: int, labeled_test: bool, layout: str) -> dict:
  """Annotation rows for every class, and clips for a few of them; returns the rows per split."""
  classes = [f"dummy class {i:03d}" for i in range(num_classes)]
  rows = {
    "train": [_clip(i, c, "train") for i, c in enumerate(classes)],
    "validation": [_clip(1000 + i, classes[i], "validation") for i in range(2)],
    "test": [_clip(2000 + i, classes[i] if labeled_test else None, "test") for i in range(2)],
  }
  with_clips = {"train": rows["train"][:3], "validation": rows["validation"], "test": rows["test"]}
  for split, split_rows in with_clips.items():
    for n, clip in enumerate(split_rows):
      if layout == "label_folders" and clip.label:
        sub = os.path.join(split, clip.label.replace(" ", "_"))
      else:
        sub = annotations.CVDF_FOLDERS[split]
      motion_clips.write_clip(os.path.join(folder, sub, f"{clip.key}.mp4"), motion=_MOTIONS[n % 4], seed=n, **_CLIP)
  return rows


def main() -> None:
  for name, num_classes, labeled_test, annotations_layout, clips_layout in (
    ("kinetics400", 400, True, "folder", "flat"),
    ("kinetics600", 600, True, "archive", "flat"),
    ("kinetics700", 700, False, "cvdf", "label_folders"),
    ("kinetics700_2020", 700, False, "folder", "flat"),
  ):
    folder = os.path.join(_ROOT, name, "dummy_data")
    shutil.rmtree(folder, ignore_errors=True)
    rows = _write_version(folder, num_classes, labeled_test, clips_layout)
    if name == "kinetics700_2020":
      # The delta top-up adds one train clip, kept as a full-length video cut to its segment.
      extra = annotations.Clip("dummy003000", 1, 3, rows["train"][0].label, "train")
      motion_clips.write_annotations(os.path.join(folder, "kinetics700_2020_delta"), "train", [extra])
      motion_clips.write_clip(os.path.join(folder, "train", f"{extra.youtube_id}.mp4"), **{**_CLIP, "seconds": 4.0})
    if annotations_layout == "cvdf":
      target = os.path.join(folder, "annotations")
      for split, split_rows in rows.items():
        path = motion_clips.write_annotations(target, split, split_rows)
        os.rename(path, os.path.join(target, f"{annotations.CVDF_FOLDERS[split]}.csv"))
    elif annotations_layout == "archive":
      with tempfile.TemporaryDirectory() as tmp:
        for split, split_rows in rows.items():
          motion_clips.write_annotations(os.path.join(tmp, name), split, split_rows)
        with tarfile.open(os.path.join(folder, f"{name}.tar.gz"), "w:gz") as tar:
          tar.add(os.path.join(tmp, name), arcname=name)
    else:
      for split, split_rows in rows.items():
        motion_clips.write_annotations(os.path.join(folder, name), split, split_rows)
    print("wrote", folder)


if __name__ == "__main__":
  main()
