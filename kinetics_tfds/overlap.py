r"""Leakage across Kinetics versions: which YouTube videos and segments two (version, split) sets share.

Kinetics splits are not disjoint across versions: most of K400's validation videos are in K600's
validation set, and DeepMind warns that K600's validation and test videos are in K700's training
set (cvdfoundation/kinetics-dataset#41, #48). This counts, for every pair of sets, the shared
videos and the shared segments (same video, same start and end), prints a table, and writes the
table and the key lists as JSON, plus one text file of clip keys per direction, which
`KineticsConfig(exclude=[...])` takes as it is.

  # Versions whose DeepMind archives are in a folder (downloaded there when missing):
  python -m kinetics_tfds.overlap --versions=kinetics400,kinetics600,kinetics700 \
      --annotations_dir=~/kinetics_annotations --out=/tmp/overlap
  # Or any annotation files, each named version:split:
  python -m kinetics_tfds.overlap --annotations=kinetics400:validation=k400_val.csv \
      --annotations=kinetics600:validation=k600_val.csv --out=/tmp/overlap
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import dataclasses
import itertools
import json
import os
import pathlib

from absl import app
import tensorflow_datasets as tfds

from kinetics_tfds import annotations
from kinetics_tfds import command
from kinetics_tfds import subsets
from kinetics_tfds.download import annotation_archives

JSON_FILE = "overlap.json"


@dataclasses.dataclass(frozen=True)
class ClipSet:
  """The clips of one (version, split), by key and by YouTube video."""

  name: str  # version:split
  video_of: dict[str, str]  # clip key -> youtube_id

  @classmethod
  def of(cls, name: str, clips: Iterable[annotations.Clip]) -> ClipSet:
    return cls(name, {c.key: c.youtube_id for c in clips})

  @property
  def keys(self) -> set[str]:
    return set(self.video_of)

  @property
  def youtube_ids(self) -> set[str]:
    return set(self.video_of.values())

  def keys_on(self, youtube_ids: set[str]) -> list[str]:
    """This set's clip keys whose video is in youtube_ids, sorted."""
    return sorted(k for k, v in self.video_of.items() if v in youtube_ids)


def from_file(name: str, path: str) -> ClipSet:
  """A set from one annotation file; its rows are parsed as the builders parse them."""
  pair = subsets.parse_version_split(name)
  split = pair[1] if pair else name.rsplit(":", 1)[-1]
  clips, _ = annotations.parse_split(path, pathlib.Path(path).expanduser().read_bytes(), split)
  return ClipSet.of(name, clips)


def from_version(version: str, archive_names: Sequence[str], folder: str, url: str) -> list[ClipSet]:
  """One set per split of a version's DeepMind archives in folder; a missing archive is downloaded there."""
  found = annotations.read_annotations(annotation_archives.version_sources(folder, archive_names, url), None)
  return [ClipSet.of(f"{version}:{split}", clips) for split, clips in found.clips.items()]


def compare(sets: Sequence[ClipSet]) -> list[dict]:
  """For every pair of sets: their sizes, shared videos and segments, and the keys on shared videos."""
  rows = []
  for a, b in itertools.combinations(sets, 2):
    videos = a.youtube_ids & b.youtube_ids
    rows.append(
      {
        "a": a.name,
        "b": b.name,
        "a_clips": len(a.keys),
        "b_clips": len(b.keys),
        "shared_videos": len(videos),
        "shared_segments": len(a.keys & b.keys),
        "a_keys_on_shared_videos": a.keys_on(videos),
        "b_keys_on_shared_videos": b.keys_on(videos),
        "segment_keys": sorted(a.keys & b.keys),
      }
    )
  return rows


def table(rows: Sequence[dict]) -> str:
  """The counts as an aligned text table."""
  header = ("a", "b", "a_clips", "b_clips", "shared_videos", "shared_segments")
  cells = [header] + [tuple(str(row[h]) for h in header) for row in rows]
  widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
  return "\n".join(
    "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in cells
  )


def key_file_name(a: str, b: str) -> str:
  """`kinetics700-train_on_kinetics400-validation.txt`: a's clips on videos that b also has."""
  return f"{a.replace(':', '-')}_on_{b.replace(':', '-')}.txt"


def write(rows: Sequence[dict], out: pathlib.Path) -> None:
  """overlap.json and, per pair and direction, a file of keys that `exclude=` takes."""
  (out / "keys").mkdir(parents=True, exist_ok=True)
  for row in rows:
    for this, other in (("a", "b"), ("b", "a")):
      keys = row[f"{this}_keys_on_shared_videos"]
      (out / "keys" / key_file_name(row[this], row[other])).write_text("".join(k + "\n" for k in keys))
  (out / JSON_FILE).write_text(json.dumps(rows, indent=1))


@dataclasses.dataclass(frozen=True)
class Settings:
  versions: tuple[str, ...] = command.setting(
    (), "Versions to compare, every split of each, e.g. kinetics400,kinetics600."
  )
  annotations_dir: str | None = command.setting(
    None,
    "For --versions: where DeepMind's archives are, extracted (<name>/) or not (<name>.tar.gz); "
    "missing ones are downloaded there.",
  )
  annotations_url: str = command.setting(
    os.environ.get(annotations.ANNOTATIONS_URL_ENV) or annotations.DEEPMIND_URL,
    "Where a missing archive is downloaded from, {name} standing for its name.",
  )
  annotations: tuple[str, ...] = command.setting(
    (), "A set given as one annotation file: version:split=PATH (CSV or JSON, any dialect).", repeated=True
  )
  out: str | None = command.setting(None, "Folder for overlap.json and keys/*.txt.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = command.from_flags(Settings)
  sets = []
  for entry in settings.annotations:
    name, sep, path = entry.partition("=")
    if not sep or not os.path.isfile(os.path.expanduser(path)):
      raise app.UsageError(f"--annotations {entry!r}: give version:split=PATH of an existing file")
    if not name or "/" in name or "\0" in name:  # It names the files of keys/.
      raise app.UsageError(f"--annotations {entry!r}: the set's name, before '=', must be a file name: no '/'")
    sets.append(from_file(name, path))
  if settings.versions:
    if not settings.annotations_dir:
      raise app.UsageError("--versions needs --annotations_dir (where the archives are, or go)")
    for version in settings.versions:
      try:
        archive_names = tfds.builder_cls(version).ANNOTATION_ARCHIVES
      except Exception:  # pylint: disable=broad-except  # TFDS raises several kinds for an unknown name.
        raise app.UsageError(f"--versions: unknown {version!r}, expected kinetics400/600/700/700_2020") from None
      try:
        sets += from_version(
          version, archive_names, os.path.expanduser(settings.annotations_dir), settings.annotations_url
        )
      except (OSError, annotations.AnnotationError) as error:
        raise app.UsageError(f"--versions {version}: {error}") from None
  if len(sets) < 2:
    raise app.UsageError("give at least two sets (--versions and/or --annotations)")
  rows = compare(sets)
  print(table(rows))
  if settings.out:
    out = pathlib.Path(settings.out).expanduser()
    write(rows, out)
    print(f"Wrote {out / JSON_FILE} and the key lists in {out / 'keys'}.")


def run_main() -> None:
  """`python -m kinetics_tfds.overlap`, installed as `kinetics-overlap`."""
  command.define_flags(Settings, __name__)  # Only when it runs, so the module imports as a library.
  command.run(main, __name__)


if __name__ == "__main__":
  run_main()
