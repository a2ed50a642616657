"""Kinetics annotation files, in every form users have them, turned into clip records.

Forms read: DeepMind's archive as downloaded (`kinetics400.tar.gz`) or extracted
(`kinetics400/{train,validate,test}.{csv,json}`), the CVDF mirror's `annotations/{train,val,test}.csv`
(github cvdfoundation/kinetics-dataset), and every CSV dialect (6-column quoted 2017 K400 with
`is_cc`, 5-column, 4-column unlabeled test, split `val` or `validate`). CSVs are preferred over
JSON: the JSON is keyed by video id and cannot hold two clips of one video.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Sequence
import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import tarfile
import zlib

from kinetics_tfds import user_error

SPLITS = ("train", "validation", "test")
# Where a version's DeepMind annotation archive is fetched when no copy is at hand, `{name}` standing for its name
# (`kinetics400`); $KINETICS_TFDS_ANNOTATIONS_URL points builds and `kinetics-overlap` at a mirror.
DEEPMIND_URL = "https://storage.googleapis.com/deepmind-media/Datasets/{name}.tar.gz"
ANNOTATIONS_URL_ENV = "KINETICS_TFDS_ANNOTATIONS_URL"
# The one place the other names of the TFDS splits are written: DeepMind's annotation files and the
# CVDF mirror's folders (and its annotation files) call validation `validate` and `val`.
DEEPMIND_FILE_STEMS = {"train": "train", "validation": "validate", "test": "test"}
CVDF_FOLDERS = {"train": "train", "validation": "val", "test": "test"}
_SPLIT_NAMES = {name: split for split in SPLITS for name in (split, DEEPMIND_FILE_STEMS[split], CVDF_FOLDERS[split])}
# Basenames (without extension) that hold each split, in every dialect we know.
_SPLIT_FILE_STEMS = {
  split: tuple(dict.fromkeys((DEEPMIND_FILE_STEMS[split], CVDF_FOLDERS[split], split))) for split in SPLITS
}


# What find_sources reads, for any version: `{stem}.{csv,json}` loose, in `annotations/` or in an archive's
# folder (`kinetics700_2020_delta/`), and archives (`kinetics400.tar.gz`).
_ARCHIVE_NAME = re.compile(r"^kinetics[0-9a-z_]{0,32}$")
_SOURCE_FILE_NAMES = {
  f"{stem}.{ext}" for stems in _SPLIT_FILE_STEMS.values() for stem in stems for ext in ("csv", "json")
}


def is_source_path(parts: Sequence[str]) -> bool:
  """Whether a file below a manual folder (its folder names, then its name) is one find_sources may read."""
  *folders, name = parts
  if not folders and name.endswith(".tar.gz"):
    return bool(_ARCHIVE_NAME.match(name.removesuffix(".tar.gz")))
  if len(folders) > 1 or name not in _SOURCE_FILE_NAMES:
    return False
  return not folders or folders[0] == "annotations" or bool(_ARCHIVE_NAME.match(folders[0]))


def split_named(name: str) -> str | None:
  """The TFDS split a name in any dialect stands for (`val`, `validate` -> validation), or None."""
  return _SPLIT_NAMES.get(name)


# Kinetics segments last 10 s; a row beyond these bounds is a malformed row, not a clip to decode.
MAX_SEGMENT_S = 60
MAX_TIME_S = 86_400
_REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")
_PROBLEM = object()  # Row key of what is wrong with a row that cannot be a clip.
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FORBIDDEN_LABEL_CHARS = re.compile(r"[/\\\x00-\x1f]")


@dataclasses.dataclass(frozen=True, order=True)
class Clip:
  """One annotated clip: a segment of a YouTube video, its label and split."""

  youtube_id: str
  time_start: int
  time_end: int
  label: str | None  # None in unlabeled test lists.
  split: str
  is_cc: int = -1  # Only the 2017 K400 files say; -1 elsewhere.

  @property
  def key(self) -> str:
    return clip_key(self.youtube_id, self.time_start, self.time_end)


def clip_key(youtube_id: str, time_start: int, time_end: int) -> str:
  """The name every downloader gives a clip: `{youtube_id}_{start:06d}_{end:06d}`."""
  return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


@dataclasses.dataclass(frozen=True)
class Rejected:
  """An annotation row that cannot become a clip, with why; reported, never dropped silently."""

  split: str
  key: str
  reason: str


@dataclasses.dataclass
class Annotations:
  """Everything read from one version's annotation files."""

  clips: dict[str, list[Clip]]  # split -> clips, sorted by key
  classes: list[str]  # sorted by code point
  rejected: list[Rejected]
  duplicates: collections.Counter  # split -> duplicate rows dropped
  sources: list[str]  # where the rows came from, for the build log


class AnnotationError(user_error.UserError):
  """The annotation files are missing or do not describe the expected dataset."""


# A source maps a split to a callable returning the bytes of its annotation file.
_Source = dict[str, tuple[str, Callable[[], bytes]]]


def _directory_source(folder: str) -> _Source:
  source = {}
  for split, stems in _SPLIT_FILE_STEMS.items():
    for stem in stems:
      for ext in ("csv", "json"):
        path = os.path.join(folder, f"{stem}.{ext}")
        if os.path.isfile(path) and split not in source:
          source[split] = (path, lambda path=path: _read_bytes(path))
  return source


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _archive_source(path: str) -> _Source:
  """Reads split files straight out of a DeepMind archive: no extraction, read-only manual dirs work."""
  with _open_archive(path) as tar:
    members = {
      os.path.basename(m.name): m.name
      for m in tar.getmembers()
      if m.isfile() and not os.path.basename(m.name).startswith("._")
    }

  def reader(name: str) -> Callable[[], bytes]:
    def read() -> bytes:
      with _open_archive(path) as tar:
        return tar.extractfile(name).read()

    return read

  source = {}
  for split, stems in _SPLIT_FILE_STEMS.items():
    for stem in stems:
      for ext in ("csv", "json"):
        name = members.get(f"{stem}.{ext}")
        if name and split not in source:
          source[split] = (f"{path}:{name}", reader(name))
  return source


@contextlib.contextmanager
def _open_archive(path: str) -> Iterator[tarfile.TarFile]:
  """The archive open for reading; a damaged one is an AnnotationError naming it."""
  try:
    with tarfile.open(path) as tar:
      yield tar
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise AnnotationError(
      f"{path}: not a readable annotation archive ({type(e).__name__}: {e}); delete it so the builder "
      "downloads it again, or put the extracted folder there"
    ) from None


def find_sources(manual_dir: str, archive_names: Iterable[str]) -> list[_Source]:
  """Annotation sources in `manual_dir` for the given archive names, first found wins per name.

  For each name (e.g. `kinetics700_2020`, then `kinetics700_2020_delta`) the extracted folder,
  then the `.tar.gz`, is used; CVDF's `annotations/` folder and loose files in `manual_dir` count
  for the first name only.
  """
  sources = []
  for i, name in enumerate(archive_names):
    candidates = [os.path.join(manual_dir, name), os.path.join(manual_dir, f"{name}.tar.gz")]
    if i == 0:
      candidates += [os.path.join(manual_dir, "annotations"), manual_dir]
    for candidate in candidates:
      if os.path.isdir(candidate):
        source = _directory_source(candidate)
      elif os.path.isfile(candidate):
        source = _archive_source(candidate)
      else:
        continue
      if source:
        sources.append(source)
        break
  return sources


def _text(origin: str, data: bytes) -> str:
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise AnnotationError(
      f"{origin}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); save it as UTF-8, "
      "or use DeepMind's original file"
    ) from None
  if not text.strip():
    raise AnnotationError(f"{origin}: the file is empty; download the annotations again")
  return text


def _rows_from_bytes(origin: str, data: bytes) -> tuple[bool, Iterator[tuple[int, dict]]]:
  """Whether the file has labels, and its (line number, row) pairs; a bad file, not a bad row, raises.

  Rows are dicts of strings as CSV gives them; a JSON entry that cannot be one carries _PROBLEM.
  """
  text = _text(origin, data)
  if origin.endswith(".json"):
    try:
      entries = json.loads(text)
    except json.JSONDecodeError as e:
      raise AnnotationError(
        f"{origin}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); download it again"
      ) from None
    if not isinstance(entries, dict):
      raise AnnotationError(
        f"{origin}: expected a JSON object keyed by youtube_id (DeepMind's form), found a {type(entries).__name__}"
      )
    rows = [_json_row(youtube_id, entry) for youtube_id, entry in sorted(entries.items())]
    return any("label" in row for row in rows), iter(enumerate(rows, start=1))
  lines = _csv_lines(text)
  line_num, header = next(((n, row) for n, row in lines if isinstance(row, str) or any(map(str.strip, row))), (0, []))
  if isinstance(header, str):
    raise AnnotationError(f"{origin}: line {line_num}, its header, is {header}; download the annotations again")
  header = [field.strip().lower() for field in header]
  missing = [column for column in _REQUIRED_COLUMNS if column not in header]
  if missing:
    raise AnnotationError(
      f"{origin}: line {line_num} has columns {header}, lacking {missing}; expected a Kinetics CSV "
      "header such as label,youtube_id,time_start,time_end,split"
    )

  def rows() -> Iterator[tuple[int, dict]]:
    for number, fields in lines:
      if isinstance(fields, str):
        yield number, {_PROBLEM: fields}
        continue
      if not fields:
        continue  # Empty lines, as csv.DictReader skips them.
      row = dict(zip(header, fields))
      if len(fields) != len(header):
        row[_PROBLEM] = f"wrong number of fields ({len(fields)}, the header has {len(header)})"
      yield number, row

  return "label" in header, rows()


def _csv_lines(text: str) -> Iterator[tuple[int, list[str] | str]]:
  """(line number, its fields, or why it is not CSV) per line.

  Each line is parsed alone (no Kinetics row spans lines), so a stray opening quote or a field over csv's
  128 KiB limit spoils its own line only, not the rest of the file.
  """
  for number, line in enumerate(io.StringIO(text), 1):  # At \n only: \x1c or U+2028 may be inside a field.
    try:
      yield number, next(csv.reader([line.rstrip("\r\n")]), [])
    except csv.Error as e:
      yield number, f"not CSV ({e})"


def _json_row(youtube_id: str, entry) -> dict:
  """DeepMind's JSON entry as the CSV row it stands for."""
  row = {"youtube_id": youtube_id}
  annotation = entry.get("annotations") if isinstance(entry, dict) else None
  if not isinstance(annotation, dict):
    row[_PROBLEM] = "entry has no annotations object"
    return row
  segment = annotation.get("segment")
  if not isinstance(segment, list) or len(segment) != 2:
    row[_PROBLEM] = f"segment {segment!r} is not [start, end]"
    return row
  row["time_start"], row["time_end"] = segment
  if "label" in annotation:
    row["label"] = annotation["label"]
  return row


def _seconds(value) -> int:
  """Whole seconds of a time field; ValueError for anything else (inf, nan, 1e400, text, null)."""
  try:
    seconds = float(value.strip() if isinstance(value, str) else value)
  except (TypeError, ValueError):
    raise ValueError(f"time {value!r} is not a number") from None
  if not 0 <= seconds <= MAX_TIME_S:  # False for nan too.
    raise ValueError(f"time {value!r} is not in [0, {MAX_TIME_S}] seconds")
  return int(seconds)


def _parse_row(row: dict, split: str, labeled: bool) -> Clip:
  """A validated clip from one row; raises ValueError saying what is wrong."""
  if _PROBLEM in row:
    raise ValueError(row[_PROBLEM])
  youtube_id = row.get("youtube_id")
  if not isinstance(youtube_id, str) or not _YOUTUBE_ID.match(youtube_id.strip()):
    raise ValueError(f"invalid youtube_id {youtube_id!r}")
  time_start, time_end = _seconds(row.get("time_start")), _seconds(row.get("time_end"))
  if not time_start < time_end:
    raise ValueError(f"empty or negative segment [{time_start}, {time_end}]")
  if time_end - time_start > MAX_SEGMENT_S:
    raise ValueError(f"segment [{time_start}, {time_end}] is longer than {MAX_SEGMENT_S} s")
  label = None
  if labeled:
    label = row.get("label")
    label = label.strip() if isinstance(label, str) else ""
    if not label or label in (".", "..") or _FORBIDDEN_LABEL_CHARS.search(label):
      raise ValueError(f"invalid label {row.get('label')!r}")
  is_cc = row.get("is_cc")
  return Clip(
    youtube_id=youtube_id.strip(),
    time_start=time_start,
    time_end=time_end,
    label=label,
    split=split,
    is_cc=int(is_cc) if isinstance(is_cc, str) and is_cc.strip().isdigit() else -1,
  )


def _fallback_key(row: dict, origin: str, line: int) -> str:
  try:
    return clip_key(str(row["youtube_id"]).strip(), _seconds(row["time_start"]), _seconds(row["time_end"]))
  except (KeyError, ValueError):
    return f"{origin}:{line}"


def parse_split(origin: str, data: bytes, split: str) -> tuple[list[Clip], list[Rejected]]:
  """All rows of one annotation file: clips (labelled when the file has labels) and rejected rows."""
  clips, rejected = [], []
  labeled, rows = _rows_from_bytes(origin, data)
  for line, row in rows:
    try:
      clips.append(_parse_row(row, split, labeled))
    except ValueError as e:
      rejected.append(Rejected(split, _fallback_key(row, origin, line), f"malformed row: {e}"))
  return clips, rejected


def read_annotations(sources: list[_Source], num_classes: int | None, splits: Iterable[str] = SPLITS) -> Annotations:
  """Reads and merges sources into clips per split, with the class list taken from the labels.

  Classes are the train labels when there is a train file (else all labels), sorted by code
  point, and must number `num_classes`. A key seen twice in a split keeps its first row (sources
  in order, rows in file order) and is counted; labelled rows outside the class list are rejected.
  """
  if not sources:
    raise AnnotationError("no annotation files found")
  raw: dict[str, list[Clip]] = collections.defaultdict(list)
  rejected: list[Rejected] = []
  origins = []
  for source in sources:
    for split in splits:
      if split in source:
        origin, read = source[split]
        clips, bad = parse_split(origin, read(), split)
        raw[split].extend(clips)
        rejected.extend(bad)
        origins.append(origin)

  label_splits = ["train"] if any(c.label for c in raw.get("train", [])) else list(raw)
  classes = sorted({c.label for s in label_splits for c in raw[s] if c.label is not None})
  if num_classes is not None and len(classes) != num_classes:
    raise AnnotationError(
      f"expected {num_classes} classes, the annotation files ({', '.join(origins)}) name "
      f"{len(classes)} ({len(rejected)} rows rejected as malformed): wrong version, or an incomplete file?"
    )
  known = set(classes)
  clips: dict[str, list[Clip]] = {}
  duplicates: collections.Counter = collections.Counter()
  for split, rows in raw.items():
    kept: dict[str, Clip] = {}
    for clip in rows:
      if clip.label is not None and clip.label not in known:
        rejected.append(Rejected(split, clip.key, f"unknown label {clip.label!r}"))
      elif clip.key in kept:
        duplicates[split] += 1
      else:
        kept[clip.key] = clip
    clips[split] = sorted(kept.values(), key=lambda c: c.key)
  return Annotations(clips, classes, rejected, duplicates, origins)
