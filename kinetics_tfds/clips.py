"""Where each annotated clip's file is below a manual folder.

Clips are found by file name wherever users keep them: CVDF trees (`train/`, `val/`, `test/`,
`replacement/`, nested shard folders), per-label folders, any of the container extensions.
A file named `{youtube_id}.{ext}` is a full-length download, cut to the segment when built.
The manual folder may be a local path or an object-store URL (see storage.py).

When one key has several files the choice is deterministic: a copy under a `replacement`
folder wins (CVDF re-encoded the corrupt K400 originals there), then the copy inside a folder
named for the clip's label, then the extension order of `VIDEO_EXTENSIONS`, then the shortest
path, then the path by code point.
"""

from __future__ import annotations

import dataclasses
import os
import re

from kinetics_tfds import annotations
from kinetics_tfds import storage

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
_CLIP_STEM = re.compile(r"^(?P<id>[A-Za-z0-9_-]+)_(?P<start>\d{6})_(?P<end>\d{6})$")


@dataclasses.dataclass(frozen=True)
class Located:
  """The file (path or URL) that holds a clip; `segment` is set when it is a full-length video to cut."""

  path: str
  segment: tuple[int, int] | None = None


def label_folder_names(label: str) -> set[str]:
  """Folder names downloaders give a label: verbatim, or torchvision's `_` for spaces, `'()` gone."""
  return {label, re.sub(r"['()]", "", label).replace(" ", "_")}


def scan(manual_dir: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
  """Every video file below `manual_dir`: (clip key -> paths, youtube id -> full-length paths)."""
  by_key: dict[str, list[str]] = {}
  by_id: dict[str, list[str]] = {}
  for path in storage.walk(manual_dir):
    name = path.rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(name)
    if name.startswith("._") or ext.lower() not in VIDEO_EXTENSIONS:
      continue
    match = _CLIP_STEM.match(stem)
    if match:
      key = annotations.clip_key(match["id"], int(match["start"]), int(match["end"]))
      by_key.setdefault(key, []).append(path)
    else:
      by_id.setdefault(stem, []).append(path)
  return by_key, by_id


def _preference(path: str, label: str | None, root: str) -> tuple:
  folders = storage.relative_parts(path, root)[:-1]
  ext = os.path.splitext(path)[1].lower()
  in_label_folder = label is not None and bool(label_folder_names(label) & set(folders))
  return (
    "replacement" not in folders,
    not in_label_folder,
    VIDEO_EXTENSIONS.index(ext),
    len(path),
    path,
  )


def locate(
  clip: annotations.Clip,
  by_key: dict[str, list[str]],
  by_id: dict[str, list[str]],
  manual_dir: str,
) -> Located | None:
  """The file to build `clip` from, or None when no copy is below the manual folder."""
  root = storage.root(manual_dir)
  paths = by_key.get(clip.key)
  if paths:
    return Located(min(paths, key=lambda p: _preference(p, clip.label, root)))
  paths = by_id.get(clip.youtube_id)
  if paths:
    path = min(paths, key=lambda p: _preference(p, clip.label, root))
    return Located(path, (clip.time_start, clip.time_end))
  return None
