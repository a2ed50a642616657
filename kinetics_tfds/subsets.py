"""Which annotated clips a build keeps: exclusions (leakage across versions) and subsets for quick work.

One pure function of the annotations and the selection, so the builder and the downloader choose
the same clips without looking at any file. The cap per class takes the clips whose keys hash
lowest (SHA-256), not the first rows of a file: the choice is the same whatever order the rows
come in, and growing N only adds clips. Every clip left out is returned with its reason, for
`skipped_clips.csv`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
import dataclasses
import hashlib
import os
import re

from kinetics_tfds import annotations
from kinetics_tfds import user_error

_KEY = re.compile(r"^[A-Za-z0-9_-]+_\d{6}_\d{6}$")
_VERSION_SPLIT = re.compile(r"^(?P<version>kinetics[0-9_]+):(?P<split>[a-z_]+)$")


class SelectionError(user_error.UserError):
  """A subset or exclusion that names what is not there: one line saying which, never a traceback."""


@dataclasses.dataclass(frozen=True)
class Exclusion:
  """Clips to leave out: every clip of a video in `youtube_ids`, and the exact `keys`."""

  name: str  # What the clips overlap, named in each skip reason.
  keys: frozenset[str] = frozenset()
  youtube_ids: frozenset[str] = frozenset()

  def reason(self, clip: annotations.Clip) -> str | None:
    if clip.youtube_id in self.youtube_ids:
      return f"excluded: same YouTube video as {self.name}"
    if clip.key in self.keys:
      return f"excluded: listed in {self.name}"
    return None


@dataclasses.dataclass
class Selection:
  """The clips kept per split (sorted by key), their classes (renumbered from 0) and those left out."""

  clips: dict[str, list[annotations.Clip]]
  classes: list[str]
  skipped: list[annotations.Rejected]


def read_names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
  """Names given as a list, or as a path to a file of one name a line (blank and `#` lines ignored)."""
  if value is None:
    return None
  if isinstance(value, str):
    if not os.path.isfile(os.path.expanduser(value)):
      raise SelectionError(f"classes: {value} is not a file of class names (give a list of names, or a file)")
    try:
      with open(os.path.expanduser(value), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    except UnicodeDecodeError as e:
      raise SelectionError(
        f"{value}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8"
      ) from None
    return tuple(line for line in lines if line and not line.startswith("#"))
  return tuple(value)


def parse_version_split(text: str) -> tuple[str, str] | None:
  """('kinetics400', 'validation') from 'kinetics400:validation' (or :val, :validate); None otherwise."""
  match = _VERSION_SPLIT.match(text)
  if not match or annotations.split_named(match["split"]) is None:
    return None
  return match["version"], annotations.split_named(match["split"])


def exclusions(entries: Iterable[str], load: Callable[[str, str], list[annotations.Clip]]) -> list[Exclusion]:
  """Resolves `KineticsConfig.exclude` entries: clip keys, files of keys, or `version:split` pairs.

  A pair leaves out every clip of the pair's YouTube videos (`load(version, split)` gives its
  clips), not only the same segments: another segment of a validation video is still leakage.
  """
  loose, found = [], []
  for entry in entries:
    pair = parse_version_split(entry)
    if pair:
      found.append(Exclusion(f"{pair[0]}:{pair[1]}", youtube_ids=frozenset(c.youtube_id for c in load(*pair))))
    elif _KEY.match(entry):
      loose.append(entry)
    elif os.path.isfile(os.path.expanduser(entry)):
      keys = read_names(entry)
      bad = [k for k in keys if not _KEY.match(k)]
      if bad:
        raise SelectionError(f"exclude: {entry} line {bad[0]!r} is not a clip key (youtube_id_SSSSSS_EEEEEE)")
      found.append(Exclusion(os.path.basename(entry), keys=frozenset(keys)))
    else:
      raise SelectionError(
        f"exclude: {entry!r} is neither a clip key (youtube_id_SSSSSS_EEEEEE), a version:split such as "
        "kinetics400:validation, nor a file of keys"
      )
  if loose:
    found.append(Exclusion("the exclude list", keys=frozenset(loose)))
  return found


def rank(key: str) -> bytes:
  """The order the cap per class takes clips in: a hash of the key, independent of file order."""
  return hashlib.sha256(key.encode("utf-8")).digest()


def select(
  clips: dict[str, list[annotations.Clip]],
  classes: Sequence[str],
  *,
  keep_classes: Sequence[str] | None = None,
  max_per_class: int | None = None,
  excluded: Sequence[Exclusion] = (),
) -> Selection:
  """Applies exclusions, then the class subset, then at most `max_per_class` clips per class and split.

  Unlabeled clips (test lists without labels) count as one class of their own under the cap and
  are left out when `keep_classes` is given: nothing says they belong to it.
  """
  if keep_classes is not None:
    unknown = sorted(set(keep_classes) - set(classes))
    if unknown:
      raise SelectionError(f"classes: {len(unknown)} not in this version's class list, e.g. {unknown[0]!r}")
    if not keep_classes:
      raise SelectionError("classes: the subset names no class")
  if max_per_class is not None and max_per_class < 1:
    raise SelectionError(f"max_per_class must be at least 1, got {max_per_class}")
  wanted = set(classes if keep_classes is None else keep_classes)
  kept: dict[str, list[annotations.Clip]] = {}
  skipped: list[annotations.Rejected] = []
  for split, split_clips in clips.items():
    by_label = collections.defaultdict(list)
    for clip in split_clips:
      reason = next(filter(None, (e.reason(clip) for e in excluded)), None)
      if reason is None and keep_classes is not None and clip.label not in wanted:
        reason = "outside subset: class not selected" if clip.label else "outside subset: unlabeled"
      if reason:
        skipped.append(annotations.Rejected(split, clip.key, reason))
      else:
        by_label[clip.label].append(clip)
    kept[split] = []
    for label_clips in by_label.values():
      label_clips.sort(key=lambda c: rank(c.key))
      cap = len(label_clips) if max_per_class is None else max_per_class
      kept[split] += label_clips[:cap]
      skipped += [annotations.Rejected(split, c.key, "outside subset: over max_per_class") for c in label_clips[cap:]]
    kept[split].sort(key=lambda c: c.key)
  return Selection(kept, sorted(wanted), skipped)
